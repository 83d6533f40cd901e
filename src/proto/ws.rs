//! WebSocket wire code: validating an upgrade request, the `101` answer, encoding
//! server frames, and decoding client frames. Pure: bytes in, messages out.
//!
//! Client frames are decoded by tungstenite's `WebSocketContext` over an in-memory stream
//! ([`FrameDecoder`]), which enforces masking, fragmentation, UTF-8 and size rules and answers
//! pings and closes. Server frames are encoded here ([`encode_frame`]) so one encoded frame
//! can be shared by every subscriber.

use std::io::{self, Read, Write};

use tungstenite::Message;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

use super::http::{Request, Response};

/// Close codes the daemon sends.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The daemon is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The peer sent binary data; only text messages are accepted.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A text message was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Authentication failed or expired, or another policy was broken.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message exceeded `websocket.max_message_bytes`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Unexpected daemon error.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The peer stopped answering pings.
    pub const PING_TIMEOUT: u16 = 4000;
    /// The peer read too slowly and had to be resynced too often.
    pub const SLOW_CONSUMER: u16 = 4001;
    /// The peer sent messages faster than its rate limit, repeatedly.
    pub const RATE_LIMITED: u16 = 4002;
}

/// Why an upgrade request was refused (answered with a plain HTTP error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeError {
    /// Status to answer with.
    pub status: u16,
    /// Explanation.
    pub message: &'static str,
}

/// A validated upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The client's `Sec-WebSocket-Key`.
    pub key: String,
    /// The `Origin` header, if the client sent one (browsers do).
    pub origin: Option<String>,
}

/// Checks that `request` is a well-formed WebSocket upgrade (RFC 6455 section 4.2.1).
pub fn validate_upgrade(request: &Request) -> Result<Upgrade, UpgradeError> {
    let fail = |status, message| Err(UpgradeError { status, message });
    if request.method != "GET" {
        return fail(405, "a WebSocket upgrade must use GET");
    }
    if request.minor_version < 1 {
        return fail(400, "a WebSocket upgrade needs HTTP/1.1");
    }
    if !request.header_has_token("upgrade", "websocket") {
        return fail(
            426,
            "this endpoint needs a WebSocket upgrade (Upgrade: websocket)",
        );
    }
    if !request.header_has_token("connection", "upgrade") {
        return fail(400, "a WebSocket upgrade needs Connection: Upgrade");
    }
    if request.header_str("sec-websocket-version").map(str::trim) != Some("13") {
        return fail(426, "only WebSocket version 13 is supported");
    }
    let Some(key) = request.header_str("sec-websocket-key").map(str::trim) else {
        return fail(400, "missing Sec-WebSocket-Key");
    };
    // The key is 16 random bytes, base64-encoded: 24 characters ending in "==".
    let valid_key = key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !valid_key {
        return fail(400, "malformed Sec-WebSocket-Key");
    }
    if !request.body.is_empty() {
        return fail(400, "a WebSocket upgrade has no body");
    }
    Ok(Upgrade {
        key: key.to_string(),
        origin: request.header_str("origin").map(str::to_string),
    })
}

/// The `101 Switching Protocols` answer for a validated upgrade.
pub fn accept_response(upgrade: &Upgrade) -> Vec<u8> {
    let accept = tungstenite::handshake::derive_accept_key(upgrade.key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// An HTTP error answer for a refused upgrade (the connection closes after it).
pub fn refusal(error: &UpgradeError, body: Vec<u8>) -> Response {
    let mut response = Response::json(error.status, body);
    if error.status == 426 {
        response
            .headers
            .push(("Upgrade".into(), "websocket".into()));
        response
            .headers
            .push(("Sec-WebSocket-Version".into(), "13".into()));
    }
    response
}

/// Appends one unmasked, final server frame carrying `payload` to `out`.
pub fn encode_frame(opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    out.reserve(header.len(payload.len() as u64) + payload.len());
    header
        .format(payload.len() as u64, out)
        .expect("writing to a Vec cannot fail");
    out.extend_from_slice(payload);
}

/// One text frame.
pub fn text_frame(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(OpCode::Data(Data::Text), text.as_bytes(), &mut out);
    out
}

/// The payload of `bytes` if they are exactly one complete, unmasked, final text frame
/// with UTF-8 payload, as this daemon sends (what a frame from another host must be before
/// it is written to a viewer's socket); `None` for anything else.
pub fn text_frame_payload(bytes: &[u8]) -> Option<&str> {
    let (&first, rest) = bytes.split_first()?;
    let (&second, rest) = rest.split_first()?;
    // FIN, no extensions, opcode 1 (text); unmasked.
    if first != 0x81 || second & 0x80 != 0 {
        return None;
    }
    let (len, payload) = match second & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
            &rest[2..],
        ),
        127 => (
            usize::try_from(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?)).ok()?,
            &rest[8..],
        ),
        short => (usize::from(short), rest),
    };
    if payload.len() != len {
        return None;
    }
    std::str::from_utf8(payload).ok()
}

/// One ping frame.
pub fn ping_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(OpCode::Control(Control::Ping), payload, &mut out);
    out
}

/// One close frame with `code` and a reason (truncated to fit a control frame).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    let mut reason_len = reason.len().min(123);
    while !reason.is_char_boundary(reason_len) {
        reason_len -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..reason_len]);
    let mut out = Vec::new();
    encode_frame(OpCode::Control(Control::Close), &payload, &mut out);
    out
}

/// What a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A complete text message.
    Text(String),
    /// A complete binary message (refused by the daemon with close 1003).
    Binary(usize),
    /// A pong (or an answered ping): proof of life.
    Alive,
    /// The client started the closing handshake (our answer is already queued).
    Close(Option<u16>),
}

/// Why the client's byte stream can no longer be decoded; maps to a close code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// Close code to send.
    pub code: u16,
    /// Explanation for the close reason.
    pub reason: String,
}

/// In-memory stream for tungstenite: reads come from `input`, writes go to `output`.
#[derive(Debug, Default)]
struct Pipe {
    input: Vec<u8>,
    read_pos: usize,
    output: Vec<u8>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = &self.input[self.read_pos..];
        if available.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.read_pos += n;
        if self.read_pos == self.input.len() {
            self.input.clear();
            self.read_pos = 0;
        }
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Decodes a client's frames. Feed it bytes; take messages out; send whatever
/// [`FrameDecoder::take_output`] returns (pongs, close answers).
pub struct FrameDecoder {
    context: WebSocketContext,
    pipe: Pipe,
    max_message_bytes: usize,
}

impl std::fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("buffered", &self.pipe.input.len())
            .finish()
    }
}

impl FrameDecoder {
    /// A decoder accepting messages up to `max_message_bytes`; `leftover` are bytes that
    /// arrived right after the upgrade request.
    pub fn new(max_message_bytes: usize, leftover: Vec<u8>) -> FrameDecoder {
        let config = WebSocketConfig::default()
            .max_message_size(Some(max_message_bytes))
            .max_frame_size(Some(max_message_bytes))
            .read_buffer_size(4096)
            .write_buffer_size(0);
        FrameDecoder {
            context: WebSocketContext::new(Role::Server, Some(config)),
            pipe: Pipe {
                input: leftover,
                ..Pipe::default()
            },
            max_message_bytes,
        }
    }

    /// Adds bytes received from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.pipe.input.extend_from_slice(bytes);
    }

    /// Bytes buffered but not decoded yet.
    pub fn buffered(&self) -> usize {
        self.pipe.input.len() - self.pipe.read_pos
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Incoming>, FrameError> {
        use tungstenite::error::{CapacityError, Error};
        loop {
            match self.context.read(&mut self.pipe) {
                Ok(Message::Text(text)) => {
                    return Ok(Some(Incoming::Text(text.as_str().to_string())));
                }
                Ok(Message::Binary(data)) => return Ok(Some(Incoming::Binary(data.len()))),
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => return Ok(Some(Incoming::Alive)),
                Ok(Message::Close(frame)) => {
                    return Ok(Some(Incoming::Close(frame.map(|f| u16::from(f.code)))));
                }
                Ok(Message::Frame(_)) => continue,
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(Error::ConnectionClosed) | Err(Error::AlreadyClosed) => return Ok(None),
                Err(Error::Capacity(CapacityError::MessageTooLong { .. })) => {
                    return Err(FrameError {
                        code: close::MESSAGE_TOO_BIG,
                        reason: format!("message larger than {} bytes", self.max_message_bytes),
                    });
                }
                Err(Error::Utf8(_)) => {
                    return Err(FrameError {
                        code: close::INVALID_PAYLOAD,
                        reason: "text message is not valid UTF-8".into(),
                    });
                }
                Err(e) => {
                    return Err(FrameError {
                        code: close::PROTOCOL_ERROR,
                        reason: e.to_string(),
                    });
                }
            }
        }
    }

    /// Bytes tungstenite wants sent (pongs, the answer to a close).
    pub fn take_output(&mut self) -> Vec<u8> {
        let _ = self.context.flush(&mut self.pipe);
        std::mem::take(&mut self.pipe.output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::{DecodeLimits, Decoded, RequestDecoder};

    fn request(text: &str) -> Request {
        match RequestDecoder::new(DecodeLimits::default())
            .decode(text.as_bytes())
            .unwrap()
        {
            Decoded::Complete { request, .. } => request,
            other => panic!("{other:?}"),
        }
    }

    const UPGRADE: &str = "GET /ws/observe?token=x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn accepts_a_valid_upgrade_with_the_rfc_accept_key() {
        let upgrade = validate_upgrade(&request(UPGRADE)).unwrap();
        let response = String::from_utf8(accept_response(&upgrade)).unwrap();
        // The example from RFC 6455 section 1.3.
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert!(response.starts_with("HTTP/1.1 101 "));
    }

    #[test]
    fn refuses_malformed_upgrades() {
        let cases = [
            (UPGRADE.replace("Upgrade: websocket\r\n", ""), 426),
            (UPGRADE.replace("keep-alive, Upgrade", "keep-alive"), 400),
            (UPGRADE.replace("Version: 13", "Version: 8"), 426),
            (UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), 400),
            (UPGRADE.replace("GET", "POST"), 405),
        ];
        for (text, status) in cases {
            assert_eq!(
                validate_upgrade(&request(&text)).unwrap_err().status,
                status,
                "{text}"
            );
        }
    }

    /// A masked client frame.
    fn client_frame(opcode: u8, payload: &[u8], fin: bool) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn decodes_messages_split_anywhere() {
        let mut stream = client_frame(0x1, b"{\"type\":\"ping\"}", true);
        stream.extend(client_frame(0x1, b"frag", false));
        stream.extend(client_frame(0x0, b"mented", true));
        stream.extend(client_frame(0x9, b"hi", true));
        for cut in 0..stream.len() {
            let mut decoder = FrameDecoder::new(1024, stream[..cut].to_vec());
            let mut got = Vec::new();
            while let Some(m) = decoder.next_message().unwrap() {
                got.push(m);
            }
            decoder.feed(&stream[cut..]);
            while let Some(m) = decoder.next_message().unwrap() {
                got.push(m);
            }
            assert_eq!(
                got,
                [
                    Incoming::Text("{\"type\":\"ping\"}".into()),
                    Incoming::Text("fragmented".into()),
                    Incoming::Alive
                ],
                "cut at {cut}"
            );
            // The ping is answered with a pong carrying the same payload.
            assert_eq!(decoder.take_output(), [0x8A, 2, b'h', b'i']);
        }
    }

    #[test]
    fn protocol_violations_map_to_close_codes() {
        let cases: [(Vec<u8>, u16); 4] = [
            (
                client_frame(0x1, &[0xff, 0xfe], true),
                close::INVALID_PAYLOAD,
            ),
            (
                client_frame(0x1, &[b'a'; 200], true),
                close::MESSAGE_TOO_BIG,
            ),
            (vec![0x81, 0x02, b'h', b'i'], close::PROTOCOL_ERROR), // unmasked
            (client_frame(0x0, b"x", true), close::PROTOCOL_ERROR), // continuation first
        ];
        for (bytes, code) in cases {
            let mut decoder = FrameDecoder::new(100, bytes);
            assert_eq!(decoder.next_message().unwrap_err().code, code);
        }
        // An announced 1 GB frame is refused from its header alone.
        let mut huge = vec![0x81, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 30).to_be_bytes());
        huge.extend_from_slice(&[0, 0, 0, 0]);
        let mut decoder = FrameDecoder::new(100, huge);
        assert_eq!(
            decoder.next_message().unwrap_err().code,
            close::MESSAGE_TOO_BIG
        );
    }

    #[test]
    fn close_handshake_is_answered() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let mut decoder = FrameDecoder::new(100, client_frame(0x8, &payload, true));
        assert_eq!(
            decoder.next_message().unwrap(),
            Some(Incoming::Close(Some(1000)))
        );
        let answer = decoder.take_output();
        assert_eq!(&answer[..4], &[0x88, 5, 0x03, 0xE8]);
    }

    #[test]
    fn server_frames_use_the_shortest_length_encoding() {
        assert_eq!(text_frame("hi"), [0x81, 2, b'h', b'i']);
        let medium = text_frame(&"x".repeat(300));
        assert_eq!(&medium[..4], &[0x81, 126, 1, 44]);
        let long = text_frame(&"x".repeat(70_000));
        assert_eq!(&long[..2], &[0x81, 127]);
        assert_eq!(long.len(), 10 + 70_000);
        assert_eq!(close_frame(1008, "bad token")[..4], [0x88, 11, 0x03, 0xF0]);
    }

    #[test]
    fn only_whole_unmasked_text_frames_pass_as_text_frames() {
        for text in ["", "{}", &"x".repeat(200), &"é".repeat(40_000)] {
            let frame = text_frame(text);
            assert_eq!(text_frame_payload(&frame), Some(text));
            for cut in 0..frame.len() {
                assert_eq!(text_frame_payload(&frame[..cut]), None, "cut at {cut}");
            }
            let mut longer = frame.clone();
            longer.push(b'x');
            assert_eq!(text_frame_payload(&longer), None);
        }
        assert_eq!(text_frame_payload(&ping_frame(b"hi")), None);
        assert_eq!(text_frame_payload(&close_frame(1000, "bye")), None);
        assert_eq!(text_frame_payload(b"\x81\x02\xff\xfe"), None, "not UTF-8");
        assert_eq!(text_frame_payload(b"\x81\x82abcdxy"), None, "masked");
        assert_eq!(text_frame_payload(b"\x01\x02hi"), None, "not final");
    }
}
