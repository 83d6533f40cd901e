#![no_main]
//! Daemon <-> pty holder frames: the same frames however the stream is cut; a holder's
//! replay stays within its capacity.
libfuzzer_sys::fuzz_target!(|data: &[u8]| orchestra::fuzzing::pty_frames(data));
