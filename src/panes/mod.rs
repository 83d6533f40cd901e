//! The output and input path of agent panes.
//!
//! A `pty` session skips tmux: its pseudo-terminal master is read and written directly
//! ([`pane_io`]). Otherwise: pane → tmux `pipe-pane -I -O` socketpair → [`attach`] (descriptor passing) → [`capture`]
//! (read on the event loop) → [`hub`] (backlog + frames encoded once, per-viewer cursors) →
//! each connection's queue → socket. The [`emulator`] thread keeps each pane's screen from the
//! backlog for snapshots; [`seed`] re-seeds it from tmux when capture is re-armed. Input goes
//! the other way through the same socket ([`typing`], [`input`]). [`utf8`], [`backlog`] and
//! [`text`] (output as plain text) are the pure pieces.

pub mod attach;
pub mod backlog;
pub mod capture;
pub mod emulator;
pub mod hub;
pub mod input;
pub mod pane_io;
pub mod seed;
pub mod text;
pub mod typing;
pub mod utf8;
