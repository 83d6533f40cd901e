#![no_main]
//! HTTP request decoder: same result however the input is split (see `orchestra::fuzzing`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| orchestra::fuzzing::http_request(data));
