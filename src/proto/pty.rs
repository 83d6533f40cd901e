//! Frames between the daemon and a PTY holder (`orchestra pty-hold`).
//!
//! Each frame is one kind byte, a big-endian `u32` payload length and the payload. The
//! holder opens every connection with a [`Kind::Challenge`], which the client must answer
//! ([`Kind::Auth`]) before anything else; or it refuses the connection ([`Kind::Refused`]).
//! The holder's first frame after that ([`Kind::Hello`]) travels with the pseudo-terminal's master
//! descriptor attached (`SCM_RIGHTS`); its JSON says how many gap bytes follow in one
//! [`Kind::Gap`] frame. Pure: bytes in, frames out.

/// Largest payload a frame may carry (a holder's replay plus headroom).
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;
/// Bytes before the payload: kind and length.
pub const HEADER: usize = 5;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Holder → client, first on every connection: random bytes to answer.
    Challenge,
    /// Client → holder, the answer to the challenge: proof that it holds the holder key.
    Auth,
    /// Holder → client: the connection is refused (UTF-8 text saying why), and closed.
    Refused,
    /// Holder → daemon, with the master descriptor: JSON describing the session.
    Hello,
    /// Holder → daemon: output the holder read while no daemon was attached.
    Gap,
    /// Holder → daemon: the agent's process ended (JSON exit status).
    Exit,
    /// Daemon → holder: a screen to keep for the next daemon (JSON, with its stream offset).
    Checkpoint,
    /// Daemon → holder: output the daemon read from the terminal, at a stream offset (8 bytes
    /// big-endian, then the bytes), for the holder's replay.
    Output,
    /// Daemon → holder: the replay handed over starts at this offset of the new daemon's
    /// stream (8 bytes big-endian).
    Rebase,
    /// Daemon → holder: the session is deleted; kill what is left of the agent and exit.
    Release,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Challenge => b'N',
            Kind::Auth => b'A',
            Kind::Refused => b'E',
            Kind::Hello => b'H',
            Kind::Gap => b'G',
            Kind::Exit => b'X',
            Kind::Checkpoint => b'C',
            Kind::Output => b'O',
            Kind::Rebase => b'B',
            Kind::Release => b'R',
        }
    }

    fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            b'N' => Kind::Challenge,
            b'A' => Kind::Auth,
            b'E' => Kind::Refused,
            b'H' => Kind::Hello,
            b'G' => Kind::Gap,
            b'X' => Kind::Exit,
            b'C' => Kind::Checkpoint,
            b'O' => Kind::Output,
            b'B' => Kind::Rebase,
            b'R' => Kind::Release,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its kind.
    pub kind: Kind,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Why a byte stream is not a valid sequence of frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The kind byte is unknown.
    UnknownKind(u8),
    /// The announced payload is larger than allowed.
    TooLarge(usize),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::UnknownKind(b) => write!(f, "unknown frame kind {b:#04x}"),
            FrameError::TooLarge(n) => {
                write!(f, "frame of {n} bytes exceeds the limit of {MAX_PAYLOAD}")
            }
        }
    }
}

/// Encodes an [`Kind::Output`] frame: `data` read at stream offset `offset`.
pub fn encode_output(offset: u64, data: &[u8], out: &mut Vec<u8>) {
    out.push(b'O');
    out.extend_from_slice(&((data.len() + 8) as u32).to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(data);
}

/// Encodes a frame.
pub fn encode(kind: Kind, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= MAX_PAYLOAD, "frame payload too large");
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(kind.byte());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a byte stream into frames, however it was cut into reads.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a whole frame.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole frame, if one has arrived. An error means the stream is corrupt.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let kind =
            Kind::from_byte(self.buffer[0]).ok_or(FrameError::UnknownKind(self.buffer[0]))?;
        if self.buffer.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.buffer[1..HEADER].try_into().expect("4 bytes")) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        if self.buffer.len() < HEADER + len {
            return Ok(None);
        }
        let payload = self.buffer[HEADER..HEADER + len].to_vec();
        self.buffer.drain(..HEADER + len);
        Ok(Some(Frame { kind, payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_split() {
        let mut stream = encode(Kind::Challenge, &[9; 32]);
        stream.extend(encode(Kind::Auth, &[8; 32]));
        stream.extend(encode(Kind::Refused, b"busy"));
        stream.extend(encode(Kind::Hello, br#"{"pid":1}"#));
        stream.extend(encode(Kind::Gap, &[0, 1, 2, 255]));
        stream.extend(encode(Kind::Release, b""));
        for cut in 0..stream.len() {
            let mut decoder = FrameDecoder::new();
            let mut frames = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                decoder.push(part);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    frames.push(frame);
                }
            }
            let kinds: Vec<Kind> = frames.iter().map(|f| f.kind).collect();
            assert_eq!(
                kinds,
                [
                    Kind::Challenge,
                    Kind::Auth,
                    Kind::Refused,
                    Kind::Hello,
                    Kind::Gap,
                    Kind::Release
                ],
                "cut at {cut}"
            );
            assert_eq!(frames[4].payload, [0, 1, 2, 255]);
            assert_eq!(decoder.pending(), 0);
        }
    }

    #[test]
    fn corrupt_streams_are_refused() {
        let mut decoder = FrameDecoder::new();
        decoder.push(b"Z");
        assert_eq!(decoder.next_frame(), Err(FrameError::UnknownKind(b'Z')));
        let mut decoder = FrameDecoder::new();
        decoder.push(&[b'G', 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(decoder.next_frame(), Err(FrameError::TooLarge(_))));
        let mut decoder = FrameDecoder::new();
        decoder.push(&[b'G', 0, 0]);
        assert_eq!(decoder.next_frame(), Ok(None), "a partial header waits");
    }
}
