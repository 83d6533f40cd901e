//! Typing into a pane: text preparation (pure) and the per-pane input queue.
//!
//! Input is written into the pane's `pipe-pane -I` socket, which tmux feeds straight to the
//! pane's terminal: no tmux command parses it, key bindings and copy mode cannot swallow it,
//! and any byte is allowed. Acknowledgements are released once the bytes they follow have been
//! written into that socket.

use std::collections::VecDeque;
use std::io::{self, Write};

/// Start of a bracketed paste.
pub const PASTE_START: &[u8] = b"\x1b[200~";
/// End of a bracketed paste.
pub const PASTE_END: &[u8] = b"\x1b[201~";

/// Turns message text into the bytes to type. Line breaks become carriage returns (what a
/// terminal sends for Enter and for pasted line breaks); tabs stay; every other control
/// character, including ESC, is dropped, so the text cannot carry escape sequences (such as a
/// premature paste end) or control keys. With `bracketed`, the text is wrapped as one paste,
/// which programs that enabled bracketed-paste mode treat as a single insertion.
pub fn paste_bytes(text: &str, bracketed: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 12);
    if bracketed {
        out.extend_from_slice(PASTE_START);
    }
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push(b'\r');
            }
            '\n' => out.push(b'\r'),
            '\t' => out.push(b'\t'),
            c if c.is_control() => {}
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    if bracketed {
        out.extend_from_slice(PASTE_END);
    }
    out
}

/// Text as one line of plain text: every control character (line breaks and tabs
/// included) becomes a space, so typed as a paste it cannot press Enter or send a key.
pub fn plain_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Bytes waiting to be written into a pane, with acknowledgements released as they pass.
#[derive(Debug)]
pub struct InputQueue<A> {
    bytes: VecDeque<u8>,
    /// Total bytes ever written.
    written: u64,
    /// Acknowledgements due once `written` reaches their position.
    acks: VecDeque<(u64, A)>,
    max_bytes: usize,
}

/// The queue is full; the input was not accepted (its acknowledgement is handed back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull<A>(pub Option<A>);

impl<A> InputQueue<A> {
    /// A queue holding at most `max_bytes` unwritten bytes.
    pub fn new(max_bytes: usize) -> InputQueue<A> {
        InputQueue {
            bytes: VecDeque::new(),
            written: 0,
            acks: VecDeque::new(),
            max_bytes,
        }
    }

    /// Queues `data`; `ack` is released once all of it has been written.
    pub fn push(&mut self, data: &[u8], ack: Option<A>) -> Result<(), QueueFull<A>> {
        if self.bytes.len() + data.len() > self.max_bytes {
            return Err(QueueFull(ack));
        }
        self.bytes.extend(data);
        if let Some(ack) = ack {
            self.acks
                .push_back((self.written + self.bytes.len() as u64, ack));
        }
        Ok(())
    }

    /// Whether there is nothing left to write.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Writes as much as `out` takes; returns the acknowledgements now due. `WouldBlock` is
    /// not an error.
    pub fn write_to(&mut self, out: &mut impl Write) -> io::Result<Vec<A>> {
        while !self.bytes.is_empty() {
            let (front, _) = self.bytes.as_slices();
            match out.write(front) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.bytes.drain(..n);
                    self.written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let mut due = Vec::new();
        while self.acks.front().is_some_and(|(at, _)| *at <= self.written) {
            due.push(self.acks.pop_front().expect("checked").1);
        }
        Ok(due)
    }

    /// Takes the acknowledgements that can no longer be delivered (the pane is gone).
    pub fn abandon(&mut self) -> Vec<A> {
        self.bytes.clear();
        self.acks.drain(..).map(|(_, a)| a).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_is_one_paste_without_a_key_in_it() {
        let text = "failed: a\r\necho INJECTED > f\n\x1b[201~\rrm x\t\u{9b}2J\u{7f}";
        let line = plain_line(text);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        let typed = paste_bytes(&line, true);
        assert!(typed.starts_with(PASTE_START) && typed.ends_with(PASTE_END));
        let inside = &typed[PASTE_START.len()..typed.len() - PASTE_END.len()];
        assert!(
            !inside.iter().any(|b| *b < 0x20 || *b == 0x7f),
            "{inside:?}"
        );
    }

    #[test]
    fn text_is_typed_inert() {
        assert_eq!(paste_bytes("ls -la", false), b"ls -la");
        assert_eq!(paste_bytes("a\nb\r\nc\rd\te", false), b"a\rb\rc\rd\te");
        assert_eq!(
            paste_bytes("x\x1b[201~; tmux kill-server\x03\x7f\u{9b}y", true),
            b"\x1b[200~x[201~; tmux kill-servery\x1b[201~"
        );
        assert_eq!(
            paste_bytes("#(touch /tmp/x) #{pane_id};", true),
            b"\x1b[200~#(touch /tmp/x) #{pane_id};\x1b[201~"
        );
        assert_eq!(paste_bytes("日本 😀", false), "日本 😀".as_bytes());
    }

    /// A writer taking `budget` bytes, then blocking.
    struct Limited(Vec<u8>, usize);
    impl Write for Limited {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.1 == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.1);
            self.0.extend_from_slice(&buf[..n]);
            self.1 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn acks_follow_their_bytes() {
        let mut queue = InputQueue::new(16);
        queue.push(b"hello", None).unwrap();
        queue.push(b"\r", Some("first")).unwrap();
        queue.push(b"x\r", Some("second")).unwrap();
        assert_eq!(
            queue.push(&[b'z'; 10], Some("full")),
            Err(QueueFull(Some("full")))
        );
        let mut out = Limited(Vec::new(), 6);
        assert_eq!(queue.write_to(&mut out).unwrap(), ["first"]);
        out.1 = 100;
        assert_eq!(queue.write_to(&mut out).unwrap(), ["second"]);
        assert_eq!(out.0, b"hello\rx\r");
        assert!(queue.is_empty());
        queue.push(b"lost", Some("third")).unwrap();
        assert_eq!(queue.abandon(), ["third"]);
    }
}
