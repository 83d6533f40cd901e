//! A connection's outbound byte queue: owned buffers and shared, reference-counted frames.
//!
//! Shared chunks let one encoded frame be queued to many connections without copying. The
//! queue tracks its byte total so callers can bound it.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

/// One queued piece of output.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Bytes only this connection sends (HTTP responses, control frames).
    Owned(Vec<u8>),
    /// Bytes shared with other connections (an encoded broadcast frame).
    Shared(Arc<[u8]>),
}

impl Chunk {
    /// The chunk's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(s) => s,
        }
    }
}

/// Most slices handed to one `writev` call.
const MAX_IOVECS: usize = 64;

/// Bytes waiting to be written to a socket, in order.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    front_written: usize,
    /// Unwritten bytes across all chunks.
    pending: usize,
}

impl OutQueue {
    /// Queues a chunk (empty chunks are ignored).
    pub fn push(&mut self, chunk: Chunk) {
        let len = chunk.as_bytes().len();
        if len > 0 {
            self.pending += len;
            self.chunks.push_back(chunk);
        }
    }

    /// Unwritten bytes.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Whether everything has been written.
    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Drops everything not yet written. The front chunk, if partly written, is kept so that
    /// the byte stream stays well-formed; returns the bytes dropped.
    pub fn truncate_unstarted(&mut self) -> usize {
        let keep = usize::from(self.front_written > 0);
        let dropped: usize = self
            .chunks
            .iter()
            .skip(keep)
            .map(|c| c.as_bytes().len())
            .sum();
        self.chunks.truncate(keep);
        self.pending -= dropped;
        dropped
    }

    /// Writes as much as `out` accepts. Returns the bytes written; `WouldBlock` ends the
    /// attempt without error.
    pub fn write_to<W: Write>(&mut self, out: &mut W) -> io::Result<usize> {
        let mut total = 0;
        while !self.chunks.is_empty() {
            let mut slices: Vec<IoSlice<'_>> =
                Vec::with_capacity(self.chunks.len().min(MAX_IOVECS));
            for (i, chunk) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
                let bytes = chunk.as_bytes();
                slices.push(IoSlice::new(if i == 0 {
                    &bytes[self.front_written..]
                } else {
                    bytes
                }));
            }
            let written = match out.write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            total += written;
            self.consume(written);
        }
        Ok(total)
    }

    fn consume(&mut self, mut n: usize) {
        self.pending -= n;
        while n > 0 {
            let front_left = self.chunks[0].as_bytes().len() - self.front_written;
            if n >= front_left {
                n -= front_left;
                self.chunks.pop_front();
                self.front_written = 0;
            } else {
                self.front_written += n;
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most `limit` bytes per call and `budget` bytes in total.
    struct Trickle {
        out: Vec<u8>,
        limit: usize,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.limit).min(self.budget);
            self.out.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_in_order_across_partial_writes() {
        let mut queue = OutQueue::default();
        let shared: Arc<[u8]> = Arc::from(&b"shared-"[..]);
        queue.push(Chunk::Owned(b"hello ".to_vec()));
        queue.push(Chunk::Shared(shared.clone()));
        queue.push(Chunk::Owned(Vec::new()));
        queue.push(Chunk::Shared(shared));
        assert_eq!(queue.pending(), 20);
        let mut sink = Trickle {
            out: Vec::new(),
            limit: 3,
            budget: 8,
        };
        assert_eq!(queue.write_to(&mut sink).unwrap(), 8);
        assert_eq!(queue.pending(), 12);
        sink.budget = 100;
        queue.write_to(&mut sink).unwrap();
        assert!(queue.is_empty());
        assert_eq!(sink.out, b"hello shared-shared-");
    }

    #[test]
    fn truncation_keeps_a_partly_written_chunk() {
        let mut queue = OutQueue::default();
        queue.push(Chunk::Owned(b"abcdef".to_vec()));
        queue.push(Chunk::Owned(b"ghi".to_vec()));
        let mut sink = Trickle {
            out: Vec::new(),
            limit: 2,
            budget: 2,
        };
        queue.write_to(&mut sink).unwrap();
        assert_eq!(queue.truncate_unstarted(), 3);
        sink.budget = 100;
        queue.write_to(&mut sink).unwrap();
        assert_eq!(sink.out, b"abcdef");
    }
}
