#![no_main]
//! UTF-8 chunker: same text as lossy decoding of the whole, however the bytes are split.
libfuzzer_sys::fuzz_target!(|data: &[u8]| orchestra::fuzzing::utf8_chunker(data));
