//! Pure wire code: bytes in, values out. No sockets, no clock, no JSON semantics.

pub mod hook;
pub mod http;
pub mod output_frame;
pub mod proof;
pub mod pty;
pub mod ws;
