//! What `orchestra attach` lets through from an agent's output to the user's terminal, in
//! the manner of `tmux attach`: an agent's program draws on the screen, but does not reach
//! beyond it (the clipboard, the window title, the keyboard protocol, the scrollback, the
//! terminal's own settings), and every mode it turns on is turned off again on detach.
//!
//! Pure: bytes in, bytes out, with the parser's state kept across chunks, so an escape
//! sequence split between two messages is handled as if it came whole. What it does:
//! - OSC (`ESC ]`): all dropped: titles (0, 1, 2), hyperlinks (8: the text stays, the link
//!   goes), colour changes and queries, notifications, the working directory. OSC 52
//!   (clipboard) passes only with `--allow-clipboard`, as tmux's `set-clipboard on`.
//! - DCS, SOS, PM and APC strings (`ESC P`, `ESC X`, `ESC ^`, `ESC _`): dropped (tmux
//!   passthrough, sixel and kitty graphics, terminal queries whose answers would be typed
//!   into the agent).
//! - CSI: drawing (cursor, erase, scroll, colours, insert and delete) passes. DEC private
//!   modes pass only from a known list and are tracked ([`DEC_MODES`]); the alternate screen
//!   belongs to the attach, so the agent's switches (47, 1047, 1049) are dropped. Sequences
//!   with a `>`, `<` or `=` prefix are dropped: the kitty keyboard protocol (`CSI > 1 u`),
//!   xterm's modifyOtherKeys (`CSI > 4 ; 2 m`), secondary device attributes and version
//!   queries; they would change what the keys send, detach key included. Window operations
//!   and reports (`CSI … t`), erasing the scrollback (`CSI 3 J`), printing (`CSI … i`) and
//!   anything unknown are dropped.
//! - ESC sequences: cursor save and restore, index, keypad modes (tracked), character set
//!   designations (tracked) and line attributes pass; a full reset (`ESC c`), 8-bit control
//!   and UTF-8 mode switches and locking shifts are dropped.
//! - C0 controls pass (SO and SI are tracked), except ENQ (the answerback); C1 controls
//!   (U+0080 to U+009F) are dropped.
//!
//! [`OutputFilter::restore`] gives what turns off everything that was let through.

use std::collections::BTreeSet;

/// DEC private modes (`CSI ? n h`/`l`) an agent may set, each with the value it is put back
/// to on detach (true: set): cursor keys (1), reverse video (5), origin (6), autowrap (7),
/// cursor visible (25), application keypad (66), mouse reporting (9, 1000, 1002, 1003) and
/// its encodings (1005, 1006, 1015, 1016), focus reporting (1004), bracketed paste (2004)
/// and synchronized output (2026). Saving and restoring the cursor (1048) passes untracked.
pub const DEC_MODES: &[(u16, bool)] = &[
    (2026, false),
    (1, false),
    (5, false),
    (6, false),
    (7, true),
    (25, true),
    (66, false),
    (9, false),
    (1000, false),
    (1002, false),
    (1003, false),
    (1004, false),
    (1005, false),
    (1006, false),
    (1015, false),
    (1016, false),
    (2004, false),
];

/// ANSI modes (`CSI n h`/`l`) an agent may set: insert (4) and automatic newline (20), both
/// put back to off. Keyboard lock (2) and local echo (12) are dropped.
const ANSI_MODES: &[u16] = &[4, 20];

/// Final bytes of plain CSI sequences (no prefix, no intermediate) that pass: cursor
/// movement, erasing, inserting and deleting, scrolling, tabs, colours and attributes,
/// cursor save and restore, the scroll region, and the status and attribute queries
/// (`n`, `c`) full-screen programs wait on. `h`, `l` and `J` are checked further.
const CSI_FINALS: &[u8] = b"@ABCDEFGHIJKLMPSTXZ`abcdefghlmnrsu";

/// Longest CSI sequence kept; a longer one is dropped whole.
const MAX_CSI: usize = 64;
/// Longest OSC number read to decide whether a string may pass.
const MAX_OSC_NUMBER: usize = 8;

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;
const CAN: u8 = 0x18;
const SUB: u8 = 0x1a;
const SO: u8 = 0x0e;
const SI: u8 = 0x0f;
const ENQ: u8 = 0x05;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Osc {
    /// Reading the number: the string's bytes so far.
    Number(Vec<u8>),
    /// Passing through (already written: `ESC ]` and what came since).
    Pass,
    /// Dropping until its end.
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Ground,
    /// A 0xC2 byte: the start of a C1 control (dropped) or of a printable character.
    Lead,
    Esc,
    /// `ESC` and intermediate bytes (in `seq`).
    EscIntermediate,
    /// `ESC [` and the bytes since (in `seq`).
    Csi,
    /// A CSI sequence that is dropped, up to its final byte.
    CsiDrop,
    Osc(Osc),
    /// An ESC inside an OSC string: the string terminator (`ESC \`) or the end of it.
    OscEsc(Osc),
    /// A DCS, SOS, PM or APC string, dropped.
    Str,
    /// An ESC inside such a string.
    StrEsc,
}

/// The filter between an agent's output and the user's terminal (see the module docs).
#[derive(Debug, Clone)]
pub struct OutputFilter {
    allow_clipboard: bool,
    state: State,
    seq: Vec<u8>,
    /// DEC private modes and ANSI modes the agent touched.
    dec_modes: BTreeSet<u16>,
    ansi_modes: BTreeSet<u16>,
    keypad: bool,
    charsets: bool,
    cursor_style: bool,
    scroll_region: bool,
}

impl OutputFilter {
    /// A filter in its initial state; `allow_clipboard` lets OSC 52 through.
    pub fn new(allow_clipboard: bool) -> OutputFilter {
        OutputFilter {
            allow_clipboard,
            state: State::Ground,
            seq: Vec::new(),
            dec_modes: BTreeSet::new(),
            ansi_modes: BTreeSet::new(),
            keypad: false,
            charsets: false,
            cursor_style: false,
            scroll_region: false,
        }
    }

    /// What of `input` reaches the terminal. Sequences split across calls are held back
    /// until they are complete.
    pub fn filter(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        for &byte in input {
            self.byte(byte, &mut out);
        }
        out
    }

    /// What puts back every mode the agent changed through this filter (and ends an OSC 52
    /// string left open).
    pub fn restore(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if matches!(self.state, State::Osc(Osc::Pass) | State::OscEsc(Osc::Pass)) {
            out.extend_from_slice(b"\x1b\\");
        }
        for &(mode, set) in DEC_MODES {
            if self.dec_modes.contains(&mode) {
                let end = if set { 'h' } else { 'l' };
                out.extend_from_slice(format!("\x1b[?{mode}{end}").as_bytes());
            }
        }
        for mode in &self.ansi_modes {
            out.extend_from_slice(format!("\x1b[{mode}l").as_bytes());
        }
        if self.keypad {
            out.extend_from_slice(b"\x1b>");
        }
        if self.charsets {
            out.extend_from_slice(b"\x0f\x1b(B\x1b)B\x1b*B\x1b+B");
        }
        if self.cursor_style {
            out.extend_from_slice(b"\x1b[0 q");
        }
        if self.scroll_region {
            out.extend_from_slice(b"\x1b[r");
        }
        out.extend_from_slice(b"\x1b[0m");
        out
    }

    fn byte(&mut self, byte: u8, out: &mut Vec<u8>) {
        match std::mem::replace(&mut self.state, State::Ground) {
            State::Ground => self.ground(byte, out),
            State::Lead => {
                if (0x80..=0x9f).contains(&byte) {
                    // A C1 control: dropped.
                } else {
                    out.push(0xc2);
                    self.ground(byte, out);
                }
            }
            State::Esc => self.escape(byte, out),
            State::EscIntermediate => self.escape_intermediate(byte, out),
            State::Csi => self.csi(byte, out),
            State::CsiDrop => {
                if !(0x40..=0x7e).contains(&byte) {
                    self.state = State::CsiDrop;
                }
            }
            State::Osc(osc) => self.osc(osc, byte, out),
            State::OscEsc(osc) => {
                if byte == b'\\' {
                    if osc == Osc::Pass {
                        out.extend_from_slice(b"\x1b\\");
                    }
                } else {
                    // The ESC ends the string (a terminal does the same) and starts a new
                    // sequence.
                    if osc == Osc::Pass {
                        out.extend_from_slice(b"\x1b\\");
                    }
                    self.escape(byte, out);
                }
            }
            State::Str => match byte {
                ESC => self.state = State::StrEsc,
                CAN | SUB => {}
                _ => self.state = State::Str,
            },
            State::StrEsc => {
                if byte != b'\\' {
                    self.escape(byte, out);
                }
            }
        }
    }

    fn ground(&mut self, byte: u8, out: &mut Vec<u8>) {
        match byte {
            ESC => self.state = State::Esc,
            0xc2 => self.state = State::Lead,
            ENQ => {}
            SO | SI => {
                self.charsets = true;
                out.push(byte);
            }
            _ => out.push(byte),
        }
    }

    /// The byte after an ESC.
    fn escape(&mut self, byte: u8, out: &mut Vec<u8>) {
        self.seq.clear();
        match byte {
            b'[' => self.state = State::Csi,
            b']' => self.state = State::Osc(Osc::Number(Vec::new())),
            b'P' | b'X' | b'^' | b'_' => self.state = State::Str,
            0x20..=0x2f => {
                self.seq.push(byte);
                self.state = State::EscIntermediate;
            }
            b'7' | b'8' | b'D' | b'E' | b'H' | b'M' | b'N' | b'O' => out.extend([ESC, byte]),
            b'=' | b'>' => {
                self.keypad = true;
                out.extend([ESC, byte]);
            }
            ESC => self.state = State::Esc,
            CAN | SUB => {}
            // A control inside an escape sequence is carried out, as a terminal does.
            0x00..=0x1f if byte != ENQ => {
                out.push(byte);
                self.state = State::Esc;
            }
            // A full reset, answerback and identification requests, 8-bit and locking
            // shifts, and whatever else: dropped.
            _ => {}
        }
    }

    fn escape_intermediate(&mut self, byte: u8, out: &mut Vec<u8>) {
        match byte {
            0x20..=0x2f if self.seq.len() < 4 => {
                self.seq.push(byte);
                self.state = State::EscIntermediate;
            }
            0x30..=0x7e => {
                let pass = match self.seq.as_slice() {
                    // Character sets G0 to G3.
                    [b'(' | b')' | b'*' | b'+' | b'-' | b'.' | b'/'] => {
                        self.charsets = true;
                        true
                    }
                    // Double-height and double-width lines, the alignment test.
                    [b'#'] => (b'3'..=b'8').contains(&byte),
                    _ => false,
                };
                if pass {
                    out.push(ESC);
                    out.extend_from_slice(&self.seq);
                    out.push(byte);
                }
            }
            ESC => self.state = State::Esc,
            CAN | SUB => {}
            0x00..=0x1f if byte != ENQ => {
                out.push(byte);
                self.state = State::EscIntermediate;
            }
            _ => {}
        }
    }

    fn csi(&mut self, byte: u8, out: &mut Vec<u8>) {
        match byte {
            0x20..=0x3f => {
                if self.seq.len() < MAX_CSI {
                    self.seq.push(byte);
                    self.state = State::Csi;
                } else {
                    self.state = State::CsiDrop;
                }
            }
            0x40..=0x7e => self.csi_final(byte, out),
            ESC => self.state = State::Esc,
            CAN | SUB => {}
            0x00..=0x1f if byte != ENQ => {
                out.push(byte);
                self.state = State::Csi;
            }
            // Not part of a CSI sequence: it ends (dropped) and the byte is ordinary.
            _ => self.ground(byte, out),
        }
    }

    fn csi_final(&mut self, byte: u8, out: &mut Vec<u8>) {
        let seq = std::mem::take(&mut self.seq);
        let (prefix, rest) = match seq.first() {
            Some(&p @ (b'<' | b'=' | b'>' | b'?')) => (Some(p), &seq[1..]),
            _ => (None, &seq[..]),
        };
        let split = rest
            .iter()
            .position(|b| (0x20..=0x2f).contains(b))
            .unwrap_or(rest.len());
        let (params, intermediates) = rest.split_at(split);
        if !params
            .iter()
            .all(|b| b.is_ascii_digit() || *b == b';' || *b == b':')
            || !intermediates.iter().all(|b| (0x20..=0x2f).contains(b))
        {
            return;
        }
        let numbers = || {
            params.split(|b| *b == b';').map(|p| {
                std::str::from_utf8(p)
                    .ok()
                    .and_then(|p| p.parse::<u16>().ok())
            })
        };
        match (prefix, intermediates, byte) {
            (Some(b'?'), [], b'h' | b'l') => {
                let mut kept = Vec::new();
                for mode in numbers().flatten() {
                    if mode == 1048 {
                        kept.push(mode);
                    } else if DEC_MODES.iter().any(|(m, _)| *m == mode) {
                        self.dec_modes.insert(mode);
                        kept.push(mode);
                    }
                }
                write_modes(out, "?", &kept, byte);
            }
            (None, [], b'h' | b'l') => {
                let kept: Vec<u16> = numbers()
                    .flatten()
                    .filter(|mode| ANSI_MODES.contains(mode))
                    .collect();
                self.ansi_modes.extend(&kept);
                write_modes(out, "", &kept, byte);
            }
            // Erasing the scrollback reaches beyond the screen.
            (None, [], b'J') if numbers().next() == Some(Some(3)) => {}
            (None, [], b'r') => {
                self.scroll_region = true;
                write_csi(out, &seq, byte);
            }
            (None, [], final_byte) if CSI_FINALS.contains(&final_byte) => {
                write_csi(out, &seq, byte);
            }
            // The cursor's shape.
            (None, [b' '], b'q') => {
                self.cursor_style = true;
                write_csi(out, &seq, byte);
            }
            // Soft reset.
            (None, [b'!'], b'p') => write_csi(out, &seq, byte),
            _ => {}
        }
    }

    fn osc(&mut self, osc: Osc, byte: u8, out: &mut Vec<u8>) {
        let ended = byte == BEL || byte == CAN || byte == SUB;
        match osc {
            Osc::Number(mut number) => {
                if byte == ESC {
                    self.state = State::OscEsc(Osc::Drop);
                } else if ended {
                    // A string with only a number: nothing that may pass.
                } else if byte == b';' && number == b"52" && self.allow_clipboard {
                    out.extend_from_slice(b"\x1b]52;");
                    self.state = State::Osc(Osc::Pass);
                } else if byte.is_ascii_digit() && number.len() < MAX_OSC_NUMBER {
                    number.push(byte);
                    self.state = State::Osc(Osc::Number(number));
                } else {
                    self.state = State::Osc(Osc::Drop);
                }
            }
            Osc::Pass => {
                if byte == ESC {
                    self.state = State::OscEsc(Osc::Pass);
                } else if ended {
                    out.push(byte);
                } else {
                    out.push(byte);
                    self.state = State::Osc(Osc::Pass);
                }
            }
            Osc::Drop => {
                if byte == ESC {
                    self.state = State::OscEsc(Osc::Drop);
                } else if !ended {
                    self.state = State::Osc(Osc::Drop);
                }
            }
        }
    }
}

fn write_modes(out: &mut Vec<u8>, prefix: &str, modes: &[u16], end: u8) {
    if modes.is_empty() {
        return;
    }
    let list: Vec<String> = modes.iter().map(u16::to_string).collect();
    out.extend_from_slice(format!("\x1b[{prefix}{}", list.join(";")).as_bytes());
    out.push(end);
}

fn write_csi(out: &mut Vec<u8>, seq: &[u8], end: u8) {
    out.extend_from_slice(b"\x1b[");
    out.extend_from_slice(seq);
    out.push(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `input` through a fresh filter, whole; checked to give the same output cut at every
    /// point into two chunks, and byte by byte.
    fn through(allow_clipboard: bool, input: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut whole = OutputFilter::new(allow_clipboard);
        let out = whole.filter(input);
        let restore = whole.restore();
        for cut in 0..=input.len() {
            let mut filter = OutputFilter::new(allow_clipboard);
            let mut split = filter.filter(&input[..cut]);
            split.extend(filter.filter(&input[cut..]));
            assert_eq!(
                String::from_utf8_lossy(&split),
                String::from_utf8_lossy(&out),
                "cut at {cut} of {input:?}"
            );
            assert_eq!(filter.restore(), restore, "cut at {cut} of {input:?}");
        }
        let mut filter = OutputFilter::new(allow_clipboard);
        let bytewise: Vec<u8> = input.iter().flat_map(|b| filter.filter(&[*b])).collect();
        assert_eq!(bytewise, out, "byte by byte: {input:?}");
        (out, restore)
    }

    fn shown(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn drawing_passes_unchanged() {
        let drawing = "plain text é 漢字\r\n\x1b[1;31mred\x1b[0m \x1b[2J\x1b[H\x1b[10;5H\x1b[K\
                       \x1b[38:2::10:20:30m\x1b7\x1b8\x1bM\x1b[6n\x1b[c\x07\ttab\x08";
        let (out, restore) = through(false, drawing.as_bytes());
        assert_eq!(shown(&out), drawing);
        assert_eq!(shown(&restore), "\x1b[0m", "nothing to put back");
    }

    #[test]
    fn the_clipboard_title_links_and_other_strings_are_dropped() {
        let input = "a\x1b]52;c;aGVsbG8=\x07b\x1b]0;title\x07c\x1b]2;title\x1b\\d\
                     \x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\e\x1b]11;?\x07f\
                     \x1bP+q544e\x1b\\g\x1b_Gf=100;AAAA\x1b\\h\x1b^pm\x1b\\i\x1bXsos\x1b\\j";
        let (out, _) = through(false, input.as_bytes());
        assert_eq!(shown(&out), "abcdlinkefghij");
    }

    #[test]
    fn the_clipboard_passes_when_allowed() {
        let input = "a\x1b]52;c;aGVsbG8=\x07b\x1b]52;c;aGk=\x1b\\c\x1b]2;title\x07d";
        let (out, _) = through(true, input.as_bytes());
        assert_eq!(
            shown(&out),
            "a\x1b]52;c;aGVsbG8=\x07b\x1b]52;c;aGk=\x1b\\cd"
        );
        // Cut off in the middle: the detach ends the string.
        let mut filter = OutputFilter::new(true);
        assert_eq!(shown(&filter.filter(b"\x1b]52;c;aGV")), "\x1b]52;c;aGV");
        assert!(shown(&filter.restore()).starts_with("\x1b\\"));
    }

    #[test]
    fn keyboard_protocols_are_dropped() {
        let input = "a\x1b[>1ub\x1b[>4;2mc\x1b[<ud\x1b[=1;1ue\x1b[?uf\x1b[>cg\x1b[>qh";
        let (out, restore) = through(false, input.as_bytes());
        assert_eq!(shown(&out), "abcdefgh");
        assert_eq!(shown(&restore), "\x1b[0m");
    }

    #[test]
    fn modes_let_through_are_put_back() {
        let input = "\x1b[?1004h\x1b[?1000;1006h\x1b[?2004h\x1b[?1h\x1b[?25l\x1b=\x1b)0\x0e\
                     x\x1b[4h\x1b[5 q\x1b[2;20r\x1b[?7l\x1b[?2026h";
        let (out, restore) = through(false, input.as_bytes());
        assert_eq!(shown(&out), input, "all of them pass");
        assert_eq!(
            shown(&restore),
            "\x1b[?2026l\x1b[?1l\x1b[?7h\x1b[?25h\x1b[?1000l\x1b[?1004l\x1b[?1006l\
             \x1b[?2004l\x1b[4l\x1b>\x0f\x1b(B\x1b)B\x1b*B\x1b+B\x1b[0 q\x1b[r\x1b[0m"
        );
    }

    #[test]
    fn unknown_and_screen_owning_modes_are_dropped() {
        // The alternate screen is the attach's; 1001 can hang a terminal; 2 locks the
        // keyboard; unknown modes go.
        let input = "a\x1b[?1049hb\x1b[?47;1000;9999lc\x1b[?1001hd\x1b[2he\x1b[?1048hf";
        let (out, restore) = through(false, input.as_bytes());
        assert_eq!(
            shown(&out),
            "ab\x1b[?1000lcde\x1b[?1048hf",
            "only the known modes of a list stay"
        );
        assert_eq!(shown(&restore), "\x1b[?1000l\x1b[0m");
    }

    #[test]
    fn what_reaches_beyond_the_screen_is_dropped() {
        // Window operations and reports, scrollback erase, printing, a full reset, the
        // answerback, UTF-8 and 8-bit control switches, C1 controls, queries of modes.
        let input = "a\x1b[21tb\x1b[8;50;100tc\x1b[3Jd\x1b[5ie\x1bcf\x05g\x1b%@h\x1b G\
                     i\u{9b}31mj\u{9d}0;x\u{7}k\x1b[?1$pl\x1b[?2Jm\x1bZn\x1b#8o";
        let (out, _) = through(false, input.as_bytes());
        assert_eq!(shown(&out), "abcdefghi31mj0;x\u{7}klmn\x1b#8o");
    }

    #[test]
    fn broken_sequences_end_like_a_terminal_ends_them() {
        // CAN aborts; an ESC inside a sequence starts a new one; controls inside a CSI
        // are carried out; an overlong CSI is dropped whole.
        let long = format!("\x1b[{}m", "1;".repeat(100));
        let input = format!(
            "a\x1b[1\x18b\x1b]0;t\x1b[1mc\x1b[1\r2Hd{long}e\x1bP\x1b\\f\x1b(\x1b(Bg\u{e9}\u{a0}"
        );
        let (out, _) = through(false, input.as_bytes());
        assert_eq!(shown(&out), "ab\x1b[1mc\r\x1b[12Hdef\x1b(Bg\u{e9}\u{a0}");
    }
}
