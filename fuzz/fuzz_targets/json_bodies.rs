#![no_main]
//! JSON request bodies and client messages: refused without a panic, accepted the same way in canonical form.
libfuzzer_sys::fuzz_target!(|data: &[u8]| orchestra::fuzzing::json_bodies(data));
