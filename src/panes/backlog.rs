//! A pane's recent output, addressed by absolute stream offsets.
//!
//! Offset 0 is the first byte the daemon captured from the pane. The backlog keeps the chunks
//! read from the pane (shared `Arc`s, so the emulator thread is fed the very same
//! allocations) and drops the oldest whole chunks once it holds more than its capacity.
//! Only the event loop touches it: there is no lock.

use std::collections::VecDeque;
use std::sync::Arc;

/// Recent output of one pane.
#[derive(Debug)]
pub struct Backlog {
    /// Chunks in order with the offset of their first byte.
    chunks: VecDeque<(u64, Arc<[u8]>)>,
    bytes: usize,
    capacity: usize,
    /// Offset just past the newest byte.
    end: u64,
}

/// Why bytes at an offset cannot be returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The offset is older than anything the backlog still holds.
    Evicted,
    /// The offset lies beyond the newest byte.
    Future,
}

impl Backlog {
    /// An empty backlog keeping about `capacity` bytes, whose stream continues at `start`.
    pub fn new(capacity: usize, start: u64) -> Backlog {
        Backlog {
            chunks: VecDeque::new(),
            bytes: 0,
            capacity: capacity.max(1),
            end: start,
        }
    }

    /// Offset of the oldest byte held.
    pub fn start(&self) -> u64 {
        self.end - self.bytes as u64
    }

    /// Offset just past the newest byte (the stream's head).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Appends a chunk, then drops the oldest chunks while more than `capacity` bytes are held
    /// (the newest chunk always stays).
    pub fn push(&mut self, chunk: Arc<[u8]>) {
        if chunk.is_empty() {
            return;
        }
        self.bytes += chunk.len();
        self.chunks.push_back((self.end, chunk));
        self.end += self.chunks.back().map_or(0, |(_, c)| c.len() as u64);
        while self.bytes > self.capacity && self.chunks.len() > 1 {
            let (_, old) = self.chunks.pop_front().expect("non-empty");
            self.bytes -= old.len();
        }
    }

    /// Copies up to `max` bytes starting at `from` into `out` (appending). Returns how many.
    pub fn read(&self, from: u64, max: usize, out: &mut Vec<u8>) -> Result<usize, Unavailable> {
        if from < self.start() {
            return Err(Unavailable::Evicted);
        }
        if from > self.end {
            return Err(Unavailable::Future);
        }
        // The chunk containing `from`: the last one starting at or before it.
        let mut i = self
            .chunks
            .partition_point(|(offset, _)| *offset <= from)
            .saturating_sub(1);
        let mut at = from;
        let mut copied = 0;
        while copied < max && i < self.chunks.len() {
            let (offset, chunk) = &self.chunks[i];
            let skip = (at - offset) as usize;
            let take = (chunk.len() - skip).min(max - copied);
            out.extend_from_slice(&chunk[skip..skip + take]);
            copied += take;
            at += take as u64;
            i += 1;
        }
        Ok(copied)
    }

    /// The newest whole chunks holding at least `bytes` bytes (or all of them), oldest first,
    /// with their offsets.
    pub fn tail(&self, bytes: usize) -> Vec<(u64, Arc<[u8]>)> {
        let mut held = 0;
        let mut first = self.chunks.len();
        while first > 0 && held < bytes {
            first -= 1;
            held += self.chunks[first].1.len();
        }
        self.chunks.range(first..).cloned().collect()
    }

    /// Whether bytes from `from` onwards are all still held.
    pub fn holds(&self, from: u64) -> bool {
        from >= self.start() && from <= self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(bytes: &[u8]) -> Arc<[u8]> {
        Arc::from(bytes)
    }

    #[test]
    fn the_tail_is_whole_chunks_covering_the_newest_bytes() {
        let mut backlog = Backlog::new(100, 0);
        for part in [&b"abc"[..], b"de", b"fghi"] {
            backlog.push(chunk(part));
        }
        let offsets = |tail: Vec<(u64, Arc<[u8]>)>| tail.iter().map(|c| c.0).collect::<Vec<_>>();
        assert_eq!(offsets(backlog.tail(4)), [5]);
        assert_eq!(offsets(backlog.tail(5)), [3, 5]);
        assert_eq!(offsets(backlog.tail(100)), [0, 3, 5]);
        assert!(backlog.tail(0).is_empty());
    }

    #[test]
    fn keeps_the_newest_chunks_with_absolute_offsets() {
        let mut backlog = Backlog::new(8, 0);
        backlog.push(chunk(b"hello"));
        assert_eq!((backlog.start(), backlog.end()), (0, 5));
        backlog.push(chunk(b" world"));
        // 11 bytes > 8: the oldest whole chunk goes.
        assert_eq!((backlog.start(), backlog.end()), (5, 11));
        let mut out = Vec::new();
        assert_eq!(backlog.read(5, 100, &mut out), Ok(6));
        assert_eq!(out, b" world");
        out.clear();
        assert_eq!(backlog.read(7, 3, &mut out), Ok(3));
        assert_eq!(out, b"orl");
        assert_eq!(backlog.read(4, 1, &mut out), Err(Unavailable::Evicted));
        assert_eq!(backlog.read(12, 1, &mut out), Err(Unavailable::Future));
        assert_eq!(backlog.read(11, 5, &mut out), Ok(0));
        // A chunk larger than the capacity is kept whole, alone.
        backlog.push(chunk(b"0123456789abc"));
        assert_eq!((backlog.start(), backlog.end()), (11, 24));
    }

    #[test]
    fn reads_across_chunk_boundaries() {
        let mut backlog = Backlog::new(100, 100);
        for piece in [&b"abcd"[..], b"efgh", b"ij"] {
            backlog.push(chunk(piece));
        }
        let mut out = Vec::new();
        backlog.read(102, 7, &mut out).unwrap();
        assert_eq!(out, b"cdefghi");
        assert!(backlog.holds(100) && backlog.holds(110) && !backlog.holds(99));
    }
}
