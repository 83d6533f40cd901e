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

#[cfg(test)]
mod tests {
    #[test]
    fn harness_accepts_seed_inputs() {
        super::http_request(b"\x07GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
        super::http_request(b"\x03garbage\r\n\r\n");
        super::http_request(b"");
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
