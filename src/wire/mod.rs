//! Every JSON shape on the wire, in one place: REST bodies ([`rest`]), WebSocket messages in
//! both directions ([`ws`]), and the task shapes that REST answers, `task_update` messages and
//! the ticket store share ([`task`]), and the answers of the tools agents call ([`tools`]).
//!
//! Plain data with serde derives: this module imports nothing of ours but the error codes,
//! so every feature may use it without depending on another.

pub mod cluster;
pub mod rest;
pub mod task;
pub mod tools;
pub mod ws;
