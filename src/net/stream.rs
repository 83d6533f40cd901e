//! A client's socket: TCP from the network, or the local API socket (`<state_dir>/api.sock`)
//! through which commands on the daemon's host talk to it without any token.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token, event::Source};

/// A connected client socket.
#[derive(Debug)]
pub enum ClientStream {
    /// A TCP connection to the listen address.
    Tcp(TcpStream),
    /// A connection to the local API socket, from a process of the daemon's own user
    /// (checked with `SO_PEERCRED` when accepted).
    Local(UnixStream),
    /// A connection to the local API socket from another user: every request is refused.
    Foreign(UnixStream),
}

impl ClientStream {
    /// Whether this is the local API socket, from the daemon's own user.
    pub fn is_local(&self) -> bool {
        matches!(self, ClientStream::Local(_))
    }

    /// Whether this is the local API socket, from another user.
    pub fn is_foreign(&self) -> bool {
        matches!(self, ClientStream::Foreign(_))
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Tcp(s) => s.read(buf),
            ClientStream::Local(s) | ClientStream::Foreign(s) => s.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Tcp(s) => s.write(buf),
            ClientStream::Local(s) | ClientStream::Foreign(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            ClientStream::Tcp(s) => s.write_vectored(bufs),
            ClientStream::Local(s) | ClientStream::Foreign(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for ClientStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            ClientStream::Tcp(s) => s.as_raw_fd(),
            ClientStream::Local(s) | ClientStream::Foreign(s) => s.as_raw_fd(),
        }
    }
}

impl Source for ClientStream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            ClientStream::Tcp(s) => s.register(registry, token, interests),
            ClientStream::Local(s) | ClientStream::Foreign(s) => {
                s.register(registry, token, interests)
            }
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            ClientStream::Tcp(s) => s.reregister(registry, token, interests),
            ClientStream::Local(s) | ClientStream::Foreign(s) => {
                s.reregister(registry, token, interests)
            }
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            ClientStream::Tcp(s) => s.deregister(registry),
            ClientStream::Local(s) | ClientStream::Foreign(s) => s.deregister(registry),
        }
    }
}
