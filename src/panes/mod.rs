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

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// The panes' state: output streams and their viewers, the emulator thread, typing, and pane
/// pipes on their way in.
pub struct Panes {
    /// Pane output streams and their viewers.
    pub hub: hub::Hub,
    /// The terminal-emulator thread.
    pub emulators: emulator::Emulators,
    /// Typing state per session.
    pub typists: HashMap<String, typing::Typist>,
    /// Listener on which pipe helpers hand over pane pipes.
    pub attach_listener: mio::net::UnixListener,
    /// Attach tokens handed to tmux, by token: the session each one belongs to.
    pub attach_tokens: HashMap<String, String>,
    /// Pipes that arrived before their session finished registering, by session id.
    pub early_captures: HashMap<String, OwnedFd>,
    /// Pane pipes that still had data when their read budget ran out (read again soon).
    pub revisit: Vec<usize>,
    /// The buffer pane output is read into (one for all panes: reads never overlap).
    pub read_buffer: Vec<u8>,
    /// Output read this loop turn, for the emulator once viewers have theirs.
    pub for_emulator: Vec<(String, u64, Arc<[u8]>)>,
    /// Holder connections with forwarded output queued this loop turn.
    pub holders_to_flush: Vec<usize>,
}

impl Panes {
    /// No panes yet; `emulators` is the started emulator thread.
    pub fn new(
        config: &crate::config::Config,
        emulators: emulator::Emulators,
        attach_listener: mio::net::UnixListener,
    ) -> Panes {
        Panes {
            hub: hub::Hub::new(hub::HubLimits::from_config(config)),
            emulators,
            typists: HashMap::new(),
            attach_listener,
            attach_tokens: HashMap::new(),
            early_captures: HashMap::new(),
            revisit: Vec::new(),
            read_buffer: vec![0; capture::READ_CHUNK],
            for_emulator: Vec::new(),
            holders_to_flush: Vec::new(),
        }
    }
}
pub mod utf8;
