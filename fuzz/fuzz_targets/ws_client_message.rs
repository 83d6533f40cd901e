#![no_main]
//! WebSocket client frames and messages: decoding does not depend on how bytes are split.
libfuzzer_sys::fuzz_target!(|data: &[u8]| orchestra::fuzzing::ws_client_message(data));
