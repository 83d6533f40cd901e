//! The daemon's private Unix sockets (pipe helpers, hooks and tool calls): accepting every
//! waiting connection, and writing without ever blocking the loop. A short answer goes out
//! at once; what the socket does not take waits as a [`crate::ctx::Source::Answer`] until
//! the socket is writable again ([`crate::ctx::Ctx::answer`]).

use std::io::Write;

/// Writes as much of `pending` as `stream` takes now, removing what was written. Returns
/// whether everything was written; an error means the peer is gone.
pub fn write_some(stream: &mut impl Write, pending: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut written = 0;
    let result = loop {
        if written == pending.len() {
            break Ok(true);
        }
        match stream.write(&pending[written..]) {
            Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    pending.drain(..written);
    result
}

/// The next connection waiting on `listener`, if any. Its readiness is edge-triggered, so
/// callers accept until this returns `None`; a failure other than "none left" is logged,
/// naming `what`.
pub fn accept_one(listener: &mio::net::UnixListener, what: &str) -> Option<mio::net::UnixStream> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => return Some(stream),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("{what} socket accept failed: {e}");
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes `room` bytes, then would block.
    struct Tight {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Tight {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room).min(3);
            self.taken.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn what_the_socket_does_not_take_stays_pending_in_order() {
        let mut pending = b"0123456789".to_vec();
        let mut tight = Tight {
            taken: Vec::new(),
            room: 7,
        };
        assert!(!write_some(&mut tight, &mut pending).unwrap());
        assert_eq!(tight.taken, b"0123456");
        assert_eq!(pending, b"789");
        tight.room = 100;
        assert!(write_some(&mut tight, &mut pending).unwrap());
        assert_eq!(tight.taken, b"0123456789");
        assert!(pending.is_empty());
    }
}
