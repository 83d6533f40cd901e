//! Skimming terminal output: keeping its control sequences and dropping its text.
//!
//! During an output flood most of what an agent prints scrolls away before anyone looks
//! at the screen, and drawing it cell by cell is what a terminal emulator spends its time
//! on. The emulator parses the newest output exactly and only skims older output: the
//! sequences kept here (modes, colours, the alternate screen, scroll regions, charsets,
//! cursor moves, erases) keep its state exact, and the newest output redraws the text.
//! Skimming costs a scan for `ESC` per byte, a small fraction of parsing.
//!
//! Pure: bytes in, the kept sequences out, with any sequence cut by a read carried over.

/// Longest control sequence (`CSI`, or `ESC` with intermediates) that is kept; longer ones
/// are dropped whole (no program sends them, a hostile one may).
pub const MAX_SEQUENCE: usize = 256;
/// Longest string sequence (`OSC`, `DCS`, `APC`, `PM`, `SOS`: titles, hyperlinks) that is
/// kept; longer ones are dropped whole.
pub const MAX_STRING: usize = 4096;

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;
const CAN: u8 = 0x18;
const SUB: u8 = 0x1a;
/// Shift Out and Shift In select a character set; they are kept like sequences.
const SO: u8 = 0x0e;
const SI: u8 = 0x0f;

/// Where the skimmer is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Text (dropped) between sequences.
    #[default]
    Text,
    /// Just after `ESC`.
    Escape,
    /// After `ESC` and intermediate bytes (`ESC ( B`).
    Intermediate,
    /// Inside `CSI` (`ESC [`), until its final byte.
    Csi,
    /// Inside a string sequence, until `BEL` or `ESC \`.
    String,
    /// Inside a string sequence, just after an `ESC` (which `\` ends it).
    StringEscape,
}

/// Keeps the control sequences of a byte stream, chunk by chunk.
#[derive(Debug, Default, Clone)]
pub struct Skimmer {
    state: State,
    /// The sequence begun and not finished yet (starting with its `ESC`).
    partial: Vec<u8>,
    /// The sequence being read is too long: it is dropped once it ends (`partial` keeps
    /// only its introducer).
    dropping: bool,
    /// Bytes of the stream the unfinished sequence spans (with C0 controls inside it).
    raw: usize,
    /// Where in the output the current run of colour changes (SGR, with no other sequence
    /// in between) starts: a reset drops the run before it, which it would undo anyway.
    colours_from: usize,
}

impl Skimmer {
    /// A skimmer at the start of text.
    pub fn new() -> Skimmer {
        Skimmer::default()
    }

    /// Appends to `out` every control sequence that `input` completes; a sequence cut at
    /// the end of `input` is held until the next call (or [`Skimmer::finish`]).
    pub fn skim(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.colours_from = out.len();
        let mut at = 0;
        while at < input.len() {
            if self.state == State::Text {
                match memchr::memchr3(ESC, SO, SI, &input[at..]) {
                    Some(found) if input[at + found] == ESC => {
                        self.begin();
                        at += found + 1;
                    }
                    Some(found) => {
                        out.push(input[at + found]);
                        self.colours_from = out.len();
                        at += found + 1;
                    }
                    None => return,
                }
                continue;
            }
            let byte = input[at];
            at += 1;
            self.raw += 1;
            self.step(byte, out);
        }
    }

    /// Bytes of the stream that the sequence cut by the last chunk spans so far (0 when the
    /// last chunk ended in text).
    pub fn partial_len(&self) -> usize {
        self.raw
    }

    /// Ends skimming: returns the bytes of a sequence cut by the last chunk (to be parsed
    /// before what follows, which continues it; of one too long to keep, its introducer, so
    /// that its rest is not taken for text), and starts again in text.
    pub fn finish(&mut self) -> Vec<u8> {
        self.state = State::Text;
        self.dropping = false;
        self.raw = 0;
        std::mem::take(&mut self.partial)
    }

    /// Starts a sequence at an `ESC`.
    fn begin(&mut self) {
        self.partial.clear();
        self.partial.push(ESC);
        self.dropping = false;
        self.raw = 1;
        self.state = State::Escape;
    }

    /// Ends the current sequence: kept unless it grew too long.
    fn complete(&mut self, out: &mut Vec<u8>) {
        if !self.dropping {
            let sequence = &self.partial[..];
            let colours = sequence.len() >= 3
                && sequence[1] == b'['
                && sequence.ends_with(b"m")
                && sequence[2..sequence.len() - 1]
                    .iter()
                    .all(|b| b.is_ascii_digit() || *b == b';' || *b == b':');
            if colours && (sequence == b"\x1b[m" || sequence == b"\x1b[0m") {
                out.truncate(self.colours_from);
            }
            out.extend_from_slice(sequence);
            if !colours {
                self.colours_from = out.len();
            }
        }
        self.partial.clear();
        self.dropping = false;
        self.raw = 0;
        self.state = State::Text;
    }

    /// Adds a byte to the current sequence, dropping it once it exceeds `limit`.
    fn push(&mut self, byte: u8, limit: usize) {
        if self.dropping {
            return;
        }
        if self.partial.len() >= limit {
            self.dropping = true;
            self.partial.truncate(2);
        } else {
            self.partial.push(byte);
        }
    }

    /// One byte inside a sequence.
    fn step(&mut self, byte: u8, out: &mut Vec<u8>) {
        match self.state {
            State::Text => unreachable!("text is scanned in bulk"),
            State::String => match byte {
                BEL => {
                    self.push(byte, MAX_STRING + 1);
                    self.complete(out);
                }
                ESC => {
                    // Held with the string, so that a string cut right after it is handed
                    // back whole.
                    self.push(ESC, MAX_STRING + 1);
                    self.state = State::StringEscape;
                }
                _ => self.push(byte, MAX_STRING),
            },
            State::StringEscape => {
                if byte == b'\\' {
                    self.push(byte, MAX_STRING + 2);
                    self.complete(out);
                } else {
                    // Any other sequence ends the string (terminals end it the same way)
                    // and starts anew with that `ESC`.
                    if !self.dropping && self.partial.last() == Some(&ESC) {
                        self.partial.pop();
                    }
                    self.complete(out);
                    self.begin();
                    self.raw += 1;
                    self.step(byte, out);
                }
            }
            _ if byte == ESC => self.begin(),
            _ if byte == CAN || byte == SUB => {
                // Cancels the sequence.
                self.partial.clear();
                self.dropping = false;
                self.raw = 0;
                self.state = State::Text;
            }
            _ if byte < 0x20 => {
                // Other C0 controls inside a sequence act on their own and leave it going;
                // none of them matters to the modes.
            }
            State::Escape => {
                self.push(byte, MAX_SEQUENCE);
                match byte {
                    b'[' => self.state = State::Csi,
                    b']' | b'P' | b'_' | b'^' | b'X' => self.state = State::String,
                    0x20..=0x2f => self.state = State::Intermediate,
                    _ => self.complete(out),
                }
            }
            State::Intermediate => {
                self.push(byte, MAX_SEQUENCE);
                if !(0x20..=0x2f).contains(&byte) {
                    self.complete(out);
                }
            }
            State::Csi => {
                self.push(byte, MAX_SEQUENCE);
                if (0x40..=0x7e).contains(&byte) {
                    self.complete(out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skim_all(parts: &[&[u8]]) -> Vec<u8> {
        let mut skimmer = Skimmer::new();
        let mut out = Vec::new();
        for part in parts {
            skimmer.skim(part, &mut out);
        }
        out
    }

    #[test]
    fn text_goes_and_sequences_stay() {
        let input = b"hello \x1b[1;31mred\x1b[0m\r\n\x1b[?1049h\x1b]0;title\x07\x1b(0q\x1b(B\x0e\x0fdone\x1bc";
        assert_eq!(
            skim_all(&[input]),
            b"\x1b[0m\x1b[?1049h\x1b]0;title\x07\x1b(0\x1b(B\x0e\x0f\x1bc"
        );
    }

    #[test]
    fn a_sequence_cut_by_a_read_is_kept_whole_and_held_until_finished() {
        let input: &[u8] = b"ab\x1b[?2004hcd\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\";
        let whole = skim_all(&[input]);
        for cut in 0..input.len() {
            assert_eq!(
                skim_all(&[&input[..cut], &input[cut..]]),
                whole,
                "cut {cut}"
            );
        }
        let mut skimmer = Skimmer::new();
        let mut out = Vec::new();
        skimmer.skim(b"x\x1b[?2\r0", &mut out);
        assert!(out.is_empty());
        assert_eq!(
            skimmer.partial_len(),
            6,
            "the raw bytes, the CR inside it too"
        );
        assert_eq!(skimmer.finish(), b"\x1b[?20");
        // A string cut between its ESC and its backslash comes back whole.
        skimmer.skim(b"\x1b]8;;http://x\x1b", &mut out);
        assert_eq!(skimmer.finish(), b"\x1b]8;;http://x\x1b");
        // One too long to keep comes back as its introducer, so its rest is no text.
        skimmer.skim(&[&b"\x1b]52;c;"[..], &[b'A'; 5000]].concat(), &mut out);
        assert_eq!(skimmer.finish(), b"\x1b]");
        assert!(out.is_empty());
        skimmer.skim(b"04h", &mut out);
        assert!(out.is_empty(), "finish starts again in text");
    }

    #[test]
    fn colour_changes_that_a_reset_undoes_are_dropped() {
        assert_eq!(
            skim_all(&[b"\x1b[1;31mred\x1b[0m \x1b[34mblue\x1b[m \x1b[1m"]),
            b"\x1b[m\x1b[1m"
        );
        // Not across other sequences (a cursor save keeps the colours of its moment).
        assert_eq!(
            skim_all(&[b"\x1b[31m\x1b7\x1b[0m"]),
            b"\x1b[31m\x1b7\x1b[0m"
        );
        // Private sequences ending in `m` are not colours.
        assert_eq!(skim_all(&[b"\x1b[>4;1m\x1b[0m"]), b"\x1b[>4;1m\x1b[0m");
    }

    #[test]
    fn cancelled_and_overlong_sequences_are_dropped() {
        assert_eq!(skim_all(&[b"\x1b[12\x18\x1b[m"]), b"\x1b[m");
        let long = [&b"\x1b["[..], &[b'1'; 1000], b"m\x1b[0m"].concat();
        assert_eq!(skim_all(&[&long]), b"\x1b[0m");
        let title = [&b"\x1b]0;"[..], &[b'x'; 10_000], b"\x07\x1b[?25l"].concat();
        assert_eq!(skim_all(&[&title]), b"\x1b[?25l");
        // An escape inside a sequence starts a new one.
        assert_eq!(skim_all(&[b"\x1b[1\x1b[2J"]), b"\x1b[2J");
    }

    #[test]
    fn skimmed_output_leaves_the_emulator_in_the_same_modes() {
        let input = b"\x1b[?1049h\x1b[?1h\x1b=text\x1b[?2004h\x1b[5;20r\x1b[?25l\x1b[1;33mmore";
        let mut parsed = vt100::Parser::new(
            std::num::NonZeroU16::new(24).unwrap(),
            std::num::NonZeroU16::new(80).unwrap(),
            0,
        );
        parsed.process(input);
        let mut skimmed = vt100::Parser::new(
            std::num::NonZeroU16::new(24).unwrap(),
            std::num::NonZeroU16::new(80).unwrap(),
            0,
        );
        skimmed.process(&skim_all(&[input]));
        let (a, b) = (parsed.screen(), skimmed.screen());
        assert!(b.alternate_screen() && b.application_cursor() && b.application_keypad());
        assert_eq!(a.bracketed_paste(), b.bracketed_paste());
        assert_eq!(a.hide_cursor(), b.hide_cursor());
        assert_eq!(a.attributes_formatted(), b.attributes_formatted());
    }
}
