//! The descriptor a pane's output is read from and its input written to: tmux's
//! `pipe-pane` socket, or the pseudo-terminal master of a `pty` session.

use std::io::{Read, Write};

use crate::pty::link::Master;

/// A pane's byte stream, registered in the event loop.
#[derive(Debug)]
pub enum PaneIo {
    /// The daemon's end of tmux's `pipe-pane -I -O` socketpair.
    Pipe(mio::net::UnixStream),
    /// The master of a `pty` session's pseudo-terminal.
    Pty(Master),
}

impl PaneIo {
    /// The pseudo-terminal master, for a `pty` session.
    pub fn master(&self) -> Option<&Master> {
        match self {
            PaneIo::Pipe(_) => None,
            PaneIo::Pty(master) => Some(master),
        }
    }
}

impl Read for PaneIo {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            PaneIo::Pipe(stream) => stream.read(buf),
            PaneIo::Pty(master) => master.read(buf),
        }
    }
}

impl Write for PaneIo {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            PaneIo::Pipe(stream) => stream.write(buf),
            PaneIo::Pty(master) => master.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl mio::event::Source for PaneIo {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        match self {
            PaneIo::Pipe(stream) => stream.register(registry, token, interests),
            PaneIo::Pty(master) => master.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        match self {
            PaneIo::Pipe(stream) => stream.reregister(registry, token, interests),
            PaneIo::Pty(master) => master.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
        match self {
            PaneIo::Pipe(stream) => stream.deregister(registry),
            PaneIo::Pty(master) => master.deregister(registry),
        }
    }
}
