#![no_main]
//! `terminal_output` frames: the hand-written encoder writes what serde writes, for any text.
libfuzzer_sys::fuzz_target!(|data: &[u8]| orchestra::fuzzing::output_frame(data));
