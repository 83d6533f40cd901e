//! The direct-PTY backend's process boundary: the holder (`orchestra pty-hold`) that owns an
//! agent's pseudo-terminal and process so that the agent outlives the daemon, and the
//! daemon's side of the hand-over ([`link`]).
//!
//! The holder opens the pseudo-terminal, starts the agent on it and listens on a private
//! Unix socket. A daemon that connects and proves it holds the holder key ([`auth`]; one
//! daemon at a time) receives the master descriptor (`SCM_RIGHTS`) and
//! from then on reads and writes it directly in its event loop: the holder stays out of the
//! byte path. It keeps the last screen checkpoint the daemon left with it and everything
//! printed since ([`holder::Replay`]): forwarded by the daemon as it reads, or read by the
//! holder itself while no daemon is attached (so the agent never blocks). The next daemon
//! replays that on top of the checkpoint and is exactly where the agent is. It reaps the
//! agent, so exit statuses are exact, and it ends when the daemon releases the session or
//! its socket is gone.
//!
//! Frames are in [`crate::proto::pty`]; the JSON shapes are here.

pub mod auth;
pub mod holder;
pub mod link;

use serde::{Deserialize, Serialize};

/// Reads what a non-blocking `stream` has into `decoder`. Returns true when the stream
/// is closed (end of file or an error other than "would block").
pub fn read_into(
    stream: &mut impl std::io::Read,
    decoder: &mut crate::proto::pty::FrameDecoder,
) -> bool {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => decoder.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// How the agent's process ended, as the holder saw it with `waitpid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// It exited with this status.
    Code(i32),
    /// This signal killed it.
    Signal(i32),
}

impl From<crate::sys::ChildExit> for ExitStatus {
    fn from(exit: crate::sys::ChildExit) -> ExitStatus {
        match exit {
            crate::sys::ChildExit::Code(code) => ExitStatus::Code(code),
            crate::sys::ChildExit::Signal(signal) => ExitStatus::Signal(signal),
        }
    }
}

/// The holder's first frame: who it holds and what happened while no daemon was attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The agent's pid (the holder's child).
    pub pid: u32,
    /// The holder's own pid.
    pub holder_pid: u32,
    /// Rows of the pseudo-terminal now.
    pub rows: u16,
    /// Columns of the pseudo-terminal now.
    pub cols: u16,
    /// How the agent ended, if it has.
    pub exit: Option<ExitStatus>,
    /// Bytes of output since the checkpoint (forwarded by the previous daemon, or read by the
    /// holder while no daemon was attached): they follow in one gap frame.
    pub gap: usize,
    /// Bytes of output between the checkpoint and the gap that are missing (the replay is
    /// bounded and keeps the newest).
    pub dropped: u64,
    /// The last checkpoint a daemon left, if any (its JSON, as that daemon wrote it).
    pub checkpoint: Option<String>,
}

/// A screen the daemon leaves with the holder for the next daemon: the emulator's state at
/// the moment the daemon had read everything the agent printed so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The stream offset the screen corresponds to (the daemon's numbering).
    pub offset: u64,
    /// Rows of the screen.
    pub rows: u16,
    /// Columns of the screen.
    pub cols: u16,
    /// Escape sequences recreating the screen, cursor and modes on a blank terminal.
    pub screen: String,
}
