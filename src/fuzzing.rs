//! Fuzz harness bodies, kept inside the crate so they can use its internals; each target in
//! `fuzz/` is a one-line call to a function here. Each checks an invariant, not just "no
//! panic".

use crate::proto::http::{DecodeLimits, Decoded, HttpError, Request, RequestDecoder};

/// Decodes `input` fed in pieces of the given sizes (cycled), returning every request and
/// the first error.
fn decode_in_pieces(input: &[u8], pieces: &[usize]) -> (Vec<Request>, Option<HttpError>) {
    let limits = DecodeLimits {
        max_head_bytes: 4096,
        max_uri_bytes: 1024,
        max_headers: 32,
        max_body_bytes: 8192,
    };
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = Vec::new();
    let mut requests = Vec::new();
    let mut offset = 0;
    let mut piece = 0;
    while offset < input.len() {
        let size = pieces
            .get(piece % pieces.len().max(1))
            .copied()
            .unwrap_or(input.len())
            .max(1);
        piece += 1;
        let end = (offset + size).min(input.len());
        buf.extend_from_slice(&input[offset..end]);
        offset = end;
        loop {
            match decoder.decode(&buf) {
                Ok(Decoded::Complete { request, consumed }) => {
                    assert!(consumed <= buf.len());
                    buf.drain(..consumed);
                    requests.push(request);
                }
                Ok(Decoded::Incomplete { .. }) => break,
                Err(error) => return (requests, Some(error)),
            }
        }
    }
    (requests, None)
}

/// HTTP request decoder: whatever the bytes and however they are split into reads, the
/// decoder yields the same requests and the same error, and every body has the announced
/// length.
pub fn http_request(data: &[u8]) {
    let Some((&split_seed, input)) = data.split_first() else {
        return;
    };
    let whole = decode_in_pieces(input, &[input.len().max(1)]);
    let pieces = [
        split_seed as usize % 17 + 1,
        split_seed as usize % 5 + 1,
        64,
    ];
    let split = decode_in_pieces(input, &pieces);
    assert_eq!(whole, split, "split at {pieces:?} changed the result");
    for request in &whole.0 {
        if let Some(len) = request.header_str("content-length") {
            assert_eq!(len.trim().parse::<usize>().ok(), Some(request.body.len()));
        }
        assert!(request.path.starts_with('/'));
    }
}

/// UTF-8 chunker: for any bytes split into any reads, the concatenated text equals lossy
/// decoding of the whole stream and the covered byte counts add up to its length.
pub fn utf8_chunker(data: &[u8]) {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let mut chunker = crate::panes::utf8::Utf8Chunker::new();
    let mut text = String::new();
    let mut covered = 0;
    let mut rest = input;
    let mut step = seed as usize % 7 + 1;
    while !rest.is_empty() {
        let take = step.min(rest.len());
        let (t, n) = chunker.push(&rest[..take]);
        text.push_str(&t);
        covered += n;
        rest = &rest[take..];
        step = step * 5 % 11 + 1;
    }
    let (t, n) = chunker.finish();
    text.push_str(&t);
    covered += n;
    assert_eq!(text, String::from_utf8_lossy(input));
    assert_eq!(covered, input.len());
}

/// `terminal_output` frames: for any text (decoded from any bytes), the hand-written encoder
/// writes exactly the frame that serde and the generic frame encoder write.
pub fn output_frame(data: &[u8]) {
    use crate::proto::output_frame::{OutputFields, OutputFrameEncoder};
    let text = String::from_utf8_lossy(data);
    let fields = OutputFields {
        session_id: "fuzz-session",
        stream: "0123456789ab",
        data: &text,
        offset: data.len() as u64,
        next_offset: u64::MAX,
        timestamp: 1,
    };
    let expected = crate::proto::ws::text_frame(
        &crate::wire::ws::ServerMessage::TerminalOutput {
            session_id: fields.session_id,
            data: fields.data,
            timestamp: fields.timestamp,
            offset: fields.offset,
            next_offset: fields.next_offset,
            stream: fields.stream,
            snapshot: false,
            rows: None,
            cols: None,
        }
        .to_json(),
    );
    assert_eq!(
        &OutputFrameEncoder::new().encode(&fields)[..],
        &expected[..]
    );
}

/// Decodes a client byte stream that arrives in two reads split at `cut`, returning every
/// message (or the close code of the violation that ended it).
fn decode_client_stream(input: &[u8], cut: usize) -> Vec<Result<crate::proto::ws::Incoming, u16>> {
    use crate::proto::ws::FrameDecoder;
    fn drain(
        decoder: &mut FrameDecoder,
        out: &mut Vec<Result<crate::proto::ws::Incoming, u16>>,
    ) -> bool {
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => out.push(Ok(message)),
                Ok(None) => return true,
                Err(error) => {
                    out.push(Err(error.code));
                    return false;
                }
            }
        }
    }
    let mut decoder = FrameDecoder::new(4096, input[..cut].to_vec());
    let mut out = Vec::new();
    if drain(&mut decoder, &mut out) {
        let _ = decoder.take_output();
        decoder.feed(&input[cut..]);
        drain(&mut decoder, &mut out);
    }
    out
}

/// WebSocket client-message path: the frames decoded (and the close code of a violation) do
/// not depend on where the byte stream was split, and every text message either parses as a
/// client message or is rejected without a panic.
pub fn ws_client_message(data: &[u8]) {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let whole = decode_client_stream(input, input.len());
    let cut = if input.is_empty() {
        0
    } else {
        seed as usize % (input.len() + 1)
    };
    let split = decode_client_stream(input, cut);
    assert_eq!(
        whole, split,
        "splitting at {cut} changed the decoded messages"
    );
    for message in whole.into_iter().flatten() {
        if let crate::proto::ws::Incoming::Text(text) = message {
            let _ = serde_json::from_str::<crate::wire::ws::ClientMessage>(&text);
        }
    }
}

/// Parses `text` as `T`, then checks that the same document written canonically (parsed as
/// a JSON value and printed again) gives an equal `T`: acceptance depends on the document,
/// never on its spelling (whitespace, escapes, number forms).
fn json_round_trip<T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(text: &[u8]) {
    let Ok(typed) = serde_json::from_slice::<T>(text) else {
        return;
    };
    let value: serde_json::Value =
        serde_json::from_slice(text).expect("a document T accepts is valid JSON");
    let again: T = serde_json::from_str(&value.to_string())
        .unwrap_or_else(|e| panic!("canonical form of an accepted body refused: {e}"));
    assert_eq!(typed, again);
}

/// JSON request bodies (spawn, delegate) and WebSocket client messages: malformed, deep,
/// huge or invalid-UTF-8 input is refused without a panic, and what is accepted is accepted
/// the same way in canonical form.
pub fn json_bodies(data: &[u8]) {
    json_round_trip::<crate::wire::rest::SpawnRequest>(data);
    json_round_trip::<crate::wire::rest::DelegateRequest>(data);
    json_round_trip::<crate::wire::ws::ClientMessage>(data);
}

/// The frames between the daemon and a pty holder: however the stream is cut, the decoder
/// yields the same frames or the same error; re-encoding what it yields gives back the
/// bytes it consumed. The first byte picks the cut size. The frames' payloads also drive a
/// holder's replay, which never holds more than its capacity.
pub fn pty_frames(data: &[u8]) {
    use crate::proto::pty::{FrameDecoder, Kind, encode};
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let decode = |piece: usize| {
        let mut decoder = FrameDecoder::new();
        let mut frames = Vec::new();
        for part in stream.chunks(piece.max(1)) {
            decoder.push(part);
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(e) => return (frames, Some(e)),
                }
            }
        }
        (frames, None)
    };
    let whole = decode(stream.len());
    let pieces = decode(cut as usize);
    assert_eq!(whole, pieces, "the cut changed the frames");
    let encoded: Vec<u8> = whole
        .0
        .iter()
        .flat_map(|f| encode(f.kind, &f.payload))
        .collect();
    assert_eq!(&stream[..encoded.len()], &encoded[..]);
    let mut replay = crate::pty::holder::Replay::new(64);
    for frame in &whole.0 {
        match frame.kind {
            Kind::Output if frame.payload.len() >= 8 => {
                let (offset, bytes) = frame.payload.split_at(8);
                let offset = u64::from_be_bytes(offset.try_into().expect("8 bytes")) >> 40;
                replay.push_at(offset, bytes);
            }
            Kind::Checkpoint => replay.checkpoint(frame.payload.len() as u64),
            Kind::Rebase => replay.rebase(frame.payload.len() as u64),
            _ => replay.push(&frame.payload),
        }
        assert!(replay.contents().0.len() <= 64);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_harness_accepts_seed_inputs() {
        super::json_bodies(br#"{"agent_type":"droid","task":"x \u00e9","context":{"tests_required":true},"timeout_ms":1e3}"#);
        super::json_bodies(br#"{"agent_type":"shell","env":{"A":"1"}}"#);
        super::json_bodies(br#"{"type":"subscribe_terminal","session_id":"s","since":12}"#);
        super::json_bodies(&[b'['; 100_000]);
        super::json_bodies(b"\xff\xfe{}");
    }

    #[test]
    fn harness_accepts_seed_inputs() {
        super::http_request(b"\x07GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
        super::http_request(b"\x03garbage\r\n\r\n");
        super::http_request(b"");
    }

    #[test]
    fn utf8_and_ws_harnesses_accept_seed_inputs() {
        super::utf8_chunker(b"\x03h\xc3\xa9llo \xf0\x9f\x98\x80 \xff\xe2\x82");
        super::ws_client_message(b"\x05\x81\x84\x01\x02\x03\x04\x7a\x20\x78\x7f");
        super::ws_client_message(b"");
        super::pty_frames(b"\x03O\0\0\0\x0a\0\0\0\0\0\0\0\0hiC\0\0\0\0R\0\0\0\0");
        super::pty_frames(b"\x01Z");
    }

    /// Found by `cargo fuzz`: a long request line split across reads was reported as 414 or
    /// 431 depending on the split.
    #[test]
    fn regression_uri_vs_head_limit() {
        super::http_request(include_bytes!(
            "../fuzz/regressions/http_request-uri-vs-head-limit.bin"
        ));
    }
}

#[cfg(test)]
mod output_frame_tests {
    #[test]
    fn terminal_output_frames_are_byte_for_byte_what_serde_writes() {
        let every_ascii: Vec<u8> = (0u8..0x80).collect();
        let samples: [&[u8]; 5] = [
            b"",
            &every_ascii,
            "\x1b[32m✓\x1b[0m héllo \"wörld\" \\ 😀\r\n\t\x7f".as_bytes(),
            b"\xff\xfe bytes that are not UTF-8 \xc3",
            &[b'"'; 70_000],
        ];
        for sample in samples {
            super::output_frame(sample);
        }
    }

    #[test]
    fn random_bytes_encode_as_serde_encodes_them() {
        // Bytes weighted towards what needs escaping, from a fixed xorshift sequence.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let pick = b"\x00\x1b\r\n\"\\\x7fAz \xc3\xa9\xe2\x9c\x93\xff";
        for len in 0..600 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    if state.is_multiple_of(3) {
                        pick[(state >> 8) as usize % pick.len()]
                    } else {
                        (state >> 16) as u8
                    }
                })
                .collect();
            super::output_frame(&bytes);
        }
    }
}
