//! Turning a pane's raw bytes into valid UTF-8 text, chunk by chunk.
//!
//! A multi-byte character split across two reads is never broken: its first bytes are
//! carried over to the next chunk. Invalid bytes become U+FFFD exactly as
//! `String::from_utf8_lossy` would replace them in the whole stream, so the text does not
//! depend on how the bytes were split into reads.

use std::borrow::Cow;

/// Converts a byte stream to text incrementally.
#[derive(Debug, Default, Clone)]
pub struct Utf8Chunker {
    /// The start of a character whose remaining bytes have not arrived yet (at most 3 bytes).
    carry: Vec<u8>,
}

impl Utf8Chunker {
    /// A chunker with nothing carried over.
    pub fn new() -> Utf8Chunker {
        Utf8Chunker::default()
    }

    /// Bytes carried over from the previous call.
    pub fn carried(&self) -> usize {
        self.carry.len()
    }

    /// Converts `input` (preceded by any carried bytes) to text. Returns the text and how
    /// many bytes of the stream it covers, counting from the first carried byte; bytes of an
    /// incomplete final character are kept for the next call. Valid input with nothing
    /// carried is borrowed, not copied.
    pub fn push<'a>(&mut self, input: &'a [u8]) -> (Cow<'a, str>, usize) {
        if self.carry.is_empty() {
            let keep = incomplete_tail(input);
            let complete = &input[..input.len() - keep];
            self.carry.extend_from_slice(&input[input.len() - keep..]);
            return (decode(complete), complete.len());
        }
        let mut joined = std::mem::take(&mut self.carry);
        joined.extend_from_slice(input);
        let keep = incomplete_tail(&joined);
        let complete_len = joined.len() - keep;
        self.carry = joined[complete_len..].to_vec();
        (
            Cow::Owned(decode(&joined[..complete_len]).into_owned()),
            complete_len,
        )
    }

    /// Ends the stream: any carried bytes become U+FFFD. Returns the text and byte count.
    pub fn finish(&mut self) -> (String, usize) {
        let carry = std::mem::take(&mut self.carry);
        (String::from_utf8_lossy(&carry).into_owned(), carry.len())
    }
}

/// `bytes` as text, invalid sequences replaced as `String::from_utf8_lossy` replaces them.
/// Valid text (nearly all terminal output) takes the standard library's word-at-a-time
/// check; only text with invalid bytes walks the slower lossy decoder.
fn decode(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Length of a trailing incomplete-but-so-far-valid UTF-8 sequence (0 to 3 bytes).
pub fn incomplete_tail(bytes: &[u8]) -> usize {
    // Look back at most 3 bytes for the lead byte of the last character.
    for back in 1..=bytes.len().min(3) {
        let i = bytes.len() - back;
        let b = bytes[i];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: keep looking for its lead
        }
        if b < 0xC0 {
            return 0; // ASCII: nothing incomplete
        }
        // A lead byte: the tail is incomplete if it is a valid prefix of a longer sequence.
        return match std::str::from_utf8(&bytes[i..]) {
            Err(e) if e.valid_up_to() == 0 && e.error_len().is_none() => back,
            _ => 0,
        };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(input: &[u8], cuts: &[usize]) -> (String, usize) {
        let mut chunker = Utf8Chunker::new();
        let mut text = String::new();
        let mut covered = 0;
        let mut last = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            let (t, n) = chunker.push(&input[last..cut]);
            text.push_str(&t);
            covered += n;
            last = cut;
        }
        let (t, n) = chunker.finish();
        text.push_str(&t);
        (text, covered + n)
    }

    #[test]
    fn split_characters_are_carried() {
        let input = "a€b😀c".as_bytes();
        let mut chunker = Utf8Chunker::new();
        let (t1, n1) = chunker.push(&input[..2]); // "a" + first byte of €
        assert_eq!((&*t1, n1), ("a", 1));
        assert_eq!(chunker.carried(), 1);
        let (t2, n2) = chunker.push(&input[2..6]); // rest of €, "b", first byte of 😀
        assert_eq!((&*t2, n2), ("€b", 4));
        let (t3, n3) = chunker.push(&input[6..]);
        assert_eq!((&*t3, n3), ("😀c", 5));
    }

    #[test]
    fn any_split_matches_lossy_decoding_of_the_whole() {
        let samples: [&[u8]; 5] = [
            "héllo wörld ✓ 😀 日本語".as_bytes(),
            b"\xff\xfeabc\xe2\x82",
            b"\xe2\x82\xac\xe2\x82x\xf0\x9f\x98\x80\xc3",
            b"\xed\xa0\x80\xc0\xaf\xf4\x90\x80\x80ok",
            b"\x1b[31mred\x1b[0m\r\n",
        ];
        for sample in samples {
            let expected = String::from_utf8_lossy(sample).into_owned();
            for a in 0..=sample.len() {
                for b in a..=sample.len() {
                    let (text, covered) = chunked(sample, &[a, b]);
                    assert_eq!(text, expected, "{sample:?} cut at {a},{b}");
                    assert_eq!(covered, sample.len());
                }
            }
        }
    }

    #[test]
    fn invalid_lead_bytes_are_not_carried() {
        let mut chunker = Utf8Chunker::new();
        let (text, n) = chunker.push(b"ok\xff");
        assert_eq!((&*text, n), ("ok\u{FFFD}", 3));
        let (text, n) = chunker.push(b"\xe0\x80"); // E0 80 can never become valid
        assert_eq!((&*text, n), ("\u{FFFD}\u{FFFD}", 2));
    }
}
