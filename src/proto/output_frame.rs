//! The `terminal_output` frame, written by hand: the bytes the daemon makes most of.
//!
//! Every chunk an agent writes becomes one WebSocket text frame that all its viewers share.
//! Through serde that cost a growing `Vec` per chunk, a byte-at-a-time escaper, and two more
//! copies (into the frame, then into the shared buffer). [`OutputFrameEncoder`] writes the
//! same bytes (the tests compare them with serde's) into one reused buffer, skips runs of
//! text that need no escaping eight bytes at a time, and copies the result once into the
//! shared frame.

use std::io::Write;
use std::sync::Arc;

/// Bytes kept free in front of the JSON for the longest WebSocket header (2 + 8).
const HEADER_ROOM: usize = 10;

/// A scratch buffer larger than this is given back after use (a rare huge chunk should not
/// pin its memory for the daemon's lifetime).
const SCRATCH_KEEP: usize = 1 << 20;

/// The fields of one `terminal_output` message (not a snapshot).
#[derive(Debug, Clone, Copy)]
pub struct OutputFields<'a> {
    /// Session.
    pub session_id: &'a str,
    /// The stream id the offsets refer to.
    pub stream: &'a str,
    /// The output, as text.
    pub data: &'a str,
    /// Stream offset of the first byte of `data`.
    pub offset: u64,
    /// Stream offset just past `data`.
    pub next_offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
}

/// Encodes `terminal_output` frames, reusing one scratch buffer.
#[derive(Debug, Default)]
pub struct OutputFrameEncoder {
    scratch: Vec<u8>,
}

impl OutputFrameEncoder {
    /// An encoder with an empty scratch buffer.
    pub fn new() -> OutputFrameEncoder {
        OutputFrameEncoder::default()
    }

    /// One complete, unmasked, final WebSocket text frame holding the message's JSON, with
    /// the same bytes as serializing `ServerMessage::TerminalOutput` with serde.
    pub fn encode(&mut self, fields: &OutputFields) -> Arc<[u8]> {
        let start = self.write(fields);
        let frame = Arc::from(&self.scratch[start..]);
        self.trim();
        frame
    }

    /// [`OutputFrameEncoder::encode`] into a buffer of its own (for one viewer).
    pub fn encode_owned(&mut self, fields: &OutputFields) -> Vec<u8> {
        let start = self.write(fields);
        let frame = self.scratch[start..].to_vec();
        self.trim();
        frame
    }

    /// Writes the frame into the scratch buffer; returns where it starts there.
    fn write(&mut self, fields: &OutputFields) -> usize {
        let buf = &mut self.scratch;
        buf.clear();
        buf.resize(HEADER_ROOM, 0);
        buf.extend_from_slice(br#"{"type":"terminal_output","session_id":""#);
        escape_json_into(buf, fields.session_id);
        buf.extend_from_slice(br#"","data":""#);
        escape_json_into(buf, fields.data);
        write!(
            buf,
            r#"","timestamp":{},"offset":{},"next_offset":{},"stream":""#,
            fields.timestamp, fields.offset, fields.next_offset
        )
        .expect("writing to a Vec cannot fail");
        escape_json_into(buf, fields.stream);
        buf.extend_from_slice(br#""}"#);
        text_header_into(buf, HEADER_ROOM)
    }

    /// Gives back a scratch buffer grown past [`SCRATCH_KEEP`].
    fn trim(&mut self) {
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = Vec::new();
        }
    }
}

/// Writes the header of a final, unmasked text frame whose payload is `buf[room..]` into the
/// end of `buf[..room]`, and returns where the frame starts.
fn text_header_into(buf: &mut [u8], room: usize) -> usize {
    let len = buf.len() - room;
    let mut header = [0u8; HEADER_ROOM];
    header[0] = 0x81; // FIN, opcode 1 (text)
    let header_len = if len < 126 {
        header[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    let start = room - header_len;
    buf[start..room].copy_from_slice(&header[..header_len]);
    start
}

/// What a byte becomes in a JSON string: 0 for itself, `u` for `\u00XX`, or the letter after
/// the backslash (as serde_json writes them).
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Repeats a byte in every lane of a word.
const fn lanes(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

/// Whether any byte of `word` may need escaping (a control byte, `"` or `\`). Never misses
/// one; the byte loop decides.
#[inline]
fn may_need_escape(word: u64) -> bool {
    const HIGH: u64 = lanes(0x80);
    let below_space = word.wrapping_sub(lanes(0x20)) & !word & HIGH;
    let quote = word ^ lanes(b'"');
    let quote = quote.wrapping_sub(lanes(1)) & !quote & HIGH;
    let backslash = word ^ lanes(b'\\');
    let backslash = backslash.wrapping_sub(lanes(1)) & !backslash & HIGH;
    below_space | quote | backslash != 0
}

/// Appends `text` escaped as the inside of a JSON string, exactly as serde_json escapes it.
pub fn escape_json_into(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.reserve(bytes.len());
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        while let Some(word) = bytes.get(i..i + 8) {
            let word = u64::from_ne_bytes(word.try_into().expect("eight bytes"));
            if may_need_escape(word) {
                break;
            }
            i += 8;
        }
        let Some(&byte) = bytes.get(i) else {
            break;
        };
        let escape = ESCAPE[usize::from(byte)];
        i += 1;
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[run_start..i - 1]);
        run_start = i;
        if escape == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', escape]);
        }
    }
    out.extend_from_slice(&bytes[run_start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(data: &str) -> OutputFields<'_> {
        OutputFields {
            session_id: "s",
            stream: "t",
            data,
            offset: 1,
            next_offset: 2,
            timestamp: 3,
        }
    }

    /// The frame's payload, read back as JSON.
    fn payload(frame: &[u8]) -> serde_json::Value {
        let text = crate::proto::ws::text_frame_payload(frame).expect("one text frame");
        serde_json::from_str(text).expect("JSON")
    }

    #[test]
    fn the_message_reads_back_with_every_field() {
        let data = "\x1b[32m✓\x1b[0m \"q\" \\ \r\n\t\x7f\u{fffd}";
        let mut encoder = OutputFrameEncoder::new();
        let message = payload(&encoder.encode(&short(data)));
        assert_eq!(
            message,
            serde_json::json!({"type": "terminal_output", "session_id": "s", "data": data,
                "timestamp": 3, "offset": 1, "next_offset": 2, "stream": "t"})
        );
        assert_eq!(
            encoder.encode_owned(&short(data)),
            &encoder.encode(&short(data))[..]
        );
    }

    #[test]
    fn every_header_length_is_right_at_its_edges() {
        let mut encoder = OutputFrameEncoder::new();
        let overhead = encoder.encode(&short("")).len() - 2;
        for payload_len in [overhead, 125, 126, 127, 65_535, 65_536, 70_000] {
            let data = "q".repeat(payload_len - overhead);
            let frame = encoder.encode(&short(&data));
            let text = crate::proto::ws::text_frame_payload(&frame).expect("one text frame");
            assert_eq!(text.len(), payload_len);
            let header = frame.len() - payload_len;
            let expected = match payload_len {
                0..=125 => 2,
                126..=65_535 => 4,
                _ => 10,
            };
            assert_eq!(header, expected, "payload {payload_len}");
        }
    }

    #[test]
    fn each_escaped_byte_at_each_position_of_a_word() {
        for special in ['"', '\\', '\n', '\x00', '\x1b', '\x1f', ' ', '\x7f', 'é'] {
            for at in 0..17 {
                let mut data = "abcdefghijklmnopq".to_string();
                data.replace_range(at..at + 1, &special.to_string());
                let mut ours = Vec::new();
                escape_json_into(&mut ours, &data);
                let theirs = serde_json::to_string(&data).unwrap();
                assert_eq!(ours, theirs.as_bytes()[1..theirs.len() - 1], "{data:?}");
            }
        }
    }

    #[test]
    fn a_huge_chunk_does_not_pin_the_scratch_buffer() {
        let mut encoder = OutputFrameEncoder::new();
        let data = "\x01".repeat(SCRATCH_KEEP);
        let frame = encoder.encode(&short(&data));
        assert!(frame.len() > SCRATCH_KEEP * 6);
        assert_eq!(encoder.scratch.capacity(), 0);
    }
}
