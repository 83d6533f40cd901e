//! The only code that touches client sockets: per-connection state machines and their
//! outbound queues. It decodes HTTP framing (through `proto`) but never decodes JSON or
//! decides what a request means.

pub mod conn;
pub mod outbound;
pub mod pane_io;
pub mod stream;
pub mod unix;

pub use conn::{ConnId, ConnPhase, Connection, WsState};
pub use outbound::{Chunk, OutQueue};
pub use stream::ClientStream;
