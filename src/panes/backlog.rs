//! A pane's recent output: a byte ring addressed by absolute stream offsets.
//!
//! Offset 0 is the first byte the daemon captured from the pane; the ring keeps the last
//! `capacity` bytes. Readers ask for bytes from an offset and learn whether it is still held.
//! The event loop appends; the terminal-emulator thread reads, so the ring sits behind a
//! short-held lock (see [`SharedBacklog`]).

use std::collections::VecDeque;

/// Recent output of one pane.
#[derive(Debug)]
pub struct Backlog {
    bytes: VecDeque<u8>,
    capacity: usize,
    /// Offset of `bytes[0]`.
    start: u64,
}

/// Why bytes at an offset cannot be returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The offset is older than anything the ring still holds.
    Evicted,
    /// The offset lies beyond the newest byte.
    Future,
}

impl Backlog {
    /// An empty ring holding at most `capacity` bytes, starting at offset `start`.
    pub fn new(capacity: usize, start: u64) -> Backlog {
        Backlog {
            bytes: VecDeque::with_capacity(capacity.min(1 << 20)),
            capacity: capacity.max(1),
            start,
        }
    }

    /// Offset of the oldest byte held.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Offset just past the newest byte (the stream's head).
    pub fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// Appends bytes, evicting the oldest ones beyond capacity.
    pub fn push(&mut self, data: &[u8]) {
        let data = if data.len() > self.capacity {
            // Only the tail fits; the rest is evicted at once.
            let skip = data.len() - self.capacity;
            self.start += (self.bytes.len() + skip) as u64;
            self.bytes.clear();
            &data[skip..]
        } else {
            data
        };
        let overflow = (self.bytes.len() + data.len()).saturating_sub(self.capacity);
        if overflow > 0 {
            self.bytes.drain(..overflow);
            self.start += overflow as u64;
        }
        self.bytes.extend(data);
    }

    /// Copies up to `max` bytes starting at `from` into `out` (appending). Returns how many.
    pub fn read(&self, from: u64, max: usize, out: &mut Vec<u8>) -> Result<usize, Unavailable> {
        if from < self.start {
            return Err(Unavailable::Evicted);
        }
        if from > self.end() {
            return Err(Unavailable::Future);
        }
        let skip = (from - self.start) as usize;
        let take = (self.bytes.len() - skip).min(max);
        let (a, b) = self.bytes.as_slices();
        if skip < a.len() {
            let first = &a[skip..(skip + take).min(a.len())];
            out.extend_from_slice(first);
            out.extend_from_slice(&b[..take - first.len()]);
        } else {
            let s = skip - a.len();
            out.extend_from_slice(&b[s..s + take]);
        }
        Ok(take)
    }

    /// Whether bytes from `from` onwards are all still held.
    pub fn holds(&self, from: u64) -> bool {
        from >= self.start && from <= self.end()
    }
}

/// A backlog shared between the event loop (writer) and the emulator thread (reader).
pub type SharedBacklog = std::sync::Arc<parking_lot::Mutex<Backlog>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes_with_absolute_offsets() {
        let mut ring = Backlog::new(8, 0);
        ring.push(b"hello");
        assert_eq!((ring.start(), ring.end()), (0, 5));
        ring.push(b" world");
        assert_eq!((ring.start(), ring.end()), (3, 11));
        let mut out = Vec::new();
        assert_eq!(ring.read(3, 100, &mut out), Ok(8));
        assert_eq!(out, b"lo world");
        out.clear();
        assert_eq!(ring.read(6, 3, &mut out), Ok(3));
        assert_eq!(out, b"wor");
        assert_eq!(ring.read(2, 1, &mut out), Err(Unavailable::Evicted));
        assert_eq!(ring.read(12, 1, &mut out), Err(Unavailable::Future));
        assert_eq!(ring.read(11, 5, &mut out), Ok(0));
        ring.push(b"0123456789abc");
        assert_eq!((ring.start(), ring.end()), (16, 24));
        out.clear();
        ring.read(16, 100, &mut out).unwrap();
        assert_eq!(out, b"56789abc");
    }

    #[test]
    fn reads_across_the_wrap_point() {
        let mut ring = Backlog::new(6, 100);
        for chunk in [&b"abcd"[..], b"efgh", b"ij"] {
            ring.push(chunk);
        }
        let mut out = Vec::new();
        ring.read(104, 6, &mut out).unwrap();
        assert_eq!(out, b"efghij");
        assert!(ring.holds(104) && !ring.holds(103));
    }
}
