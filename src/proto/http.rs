//! HTTP/1.1 request decoding and response encoding: bytes in, requests out.
//!
//! Pure code: no sockets, no clock, no JSON. The connection feeds its receive buffer to a
//! [`RequestDecoder`], which reports either "need more bytes", a complete [`Request`] and how
//! many bytes it used, or an [`HttpError`] that maps to a status code. Every size cap comes
//! from [`DecodeLimits`] and is enforced before the buffer can grow past it.

use std::fmt;

/// Size caps applied while decoding a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Bytes in the request head (request line, headers and the blank line).
    pub max_head_bytes: usize,
    /// Bytes in the request target.
    pub max_uri_bytes: usize,
    /// Number of header lines.
    pub max_headers: usize,
    /// Bytes in the body.
    pub max_body_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_head_bytes: 16 * 1024,
            max_uri_bytes: 8 * 1024,
            max_headers: 64,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// One header line. Names keep their original spelling; compare them case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name as sent.
    pub name: String,
    /// Raw header value (not necessarily UTF-8).
    pub value: Vec<u8>,
}

/// A complete request: head and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method token, e.g. `GET`.
    pub method: String,
    /// Path part of the request target (before `?`), still percent-encoded.
    pub path: String,
    /// Query string after `?`, if any, still percent-encoded.
    pub query: Option<String>,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    /// Header lines in order.
    pub headers: Vec<Header>,
    /// Body bytes (exactly `Content-Length` of them).
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// The first header called `name`, as text, if it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Whether a comma-separated header (like `Connection`) contains `token`.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(&h.value).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the connection may carry another request after this one.
    pub fn keep_alive(&self) -> bool {
        if self.header_has_token("connection", "close") {
            return false;
        }
        self.minor_version >= 1 || self.header_has_token("connection", "keep-alive")
    }

    /// The value of query parameter `key`, percent-decoded; `Err` if it is not valid UTF-8.
    pub fn query_param(&self, key: &str) -> Option<Result<String, InvalidEncoding>> {
        let query = self.query.as_deref()?;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k).ok()? == key).then(|| percent_decode(v))
        })
    }
}

/// Why a request could not be decoded. Each maps to one status code; the connection is
/// closed after the error response because the framing can no longer be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The head exceeds `max_head_bytes`.
    HeadTooLarge,
    /// More than `max_headers` header lines.
    TooManyHeaders,
    /// The request target exceeds `max_uri_bytes`.
    UriTooLong,
    /// `Content-Length` exceeds `max_body_bytes`.
    BodyTooLarge,
    /// Not a well-formed HTTP/1.x request; the text says what was wrong.
    Malformed(&'static str),
    /// An HTTP version other than 1.0 and 1.1.
    UnsupportedVersion,
    /// A `Transfer-Encoding` the daemon does not implement (it only takes `Content-Length`).
    UnsupportedTransferEncoding,
}

impl HttpError {
    /// The status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::UriTooLong => 414,
            HttpError::BodyTooLarge => 413,
            HttpError::Malformed(_) => 400,
            HttpError::UnsupportedVersion => 505,
            HttpError::UnsupportedTransferEncoding => 501,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::HeadTooLarge => f.write_str("request head too large"),
            HttpError::TooManyHeaders => f.write_str("too many header lines"),
            HttpError::UriTooLong => f.write_str("request target too long"),
            HttpError::BodyTooLarge => f.write_str("request body too large"),
            HttpError::Malformed(what) => write!(f, "malformed request: {what}"),
            HttpError::UnsupportedVersion => {
                f.write_str("only HTTP/1.0 and HTTP/1.1 are supported")
            }
            HttpError::UnsupportedTransferEncoding => {
                f.write_str("Transfer-Encoding is not supported; send the body with Content-Length")
            }
        }
    }
}

/// What [`RequestDecoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// More bytes are needed. `head_complete` tells whether the head has already arrived
    /// (the connection switches from the head timeout to the body timeout).
    Incomplete {
        /// The head has been parsed and the body is still arriving.
        head_complete: bool,
    },
    /// A complete request that used the first `consumed` bytes of the buffer.
    Complete {
        /// The request.
        request: Request,
        /// Bytes to drop from the front of the buffer.
        consumed: usize,
    },
}

/// A parsed head waiting for its body.
#[derive(Debug)]
struct PendingHead {
    request: Request,
    head_len: usize,
    body_len: usize,
}

/// Incremental request decoder for one connection. Feed it the whole unconsumed receive
/// buffer each time bytes arrive; it remembers how far it already looked.
#[derive(Debug)]
pub struct RequestDecoder {
    limits: DecodeLimits,
    /// Bytes already searched for the end of the head without finding it.
    scanned: usize,
    pending: Option<PendingHead>,
}

impl RequestDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: DecodeLimits) -> Self {
        RequestDecoder {
            limits,
            scanned: 0,
            pending: None,
        }
    }

    /// Whether a head has been parsed and its body is still arriving.
    pub fn head_complete(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether the decoder holds no partial state (between requests).
    pub fn is_idle(&self) -> bool {
        self.pending.is_none() && self.scanned == 0
    }

    /// Tries to decode one request from the start of `buf`.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Decoded, HttpError> {
        if self.pending.is_none() {
            let Some(head_len) = self.find_head_end(buf)? else {
                return Ok(Decoded::Incomplete {
                    head_complete: false,
                });
            };
            let (request, body_len) = parse_head(&buf[..head_len], &self.limits)?;
            self.pending = Some(PendingHead {
                request,
                head_len,
                body_len,
            });
        }
        let pending = self.pending.as_ref().expect("head parsed above");
        let total = pending.head_len + pending.body_len;
        if buf.len() < total {
            return Ok(Decoded::Incomplete {
                head_complete: true,
            });
        }
        let PendingHead {
            mut request,
            head_len,
            ..
        } = self.pending.take().expect("checked");
        request.body = buf[head_len..total].to_vec();
        self.scanned = 0;
        Ok(Decoded::Complete {
            request,
            consumed: total,
        })
    }

    /// Finds the end of the head (after the blank line), searching only new bytes, and
    /// enforces the head and request-line caps while the head is incomplete.
    fn find_head_end(&mut self, buf: &[u8]) -> Result<Option<usize>, HttpError> {
        // Leading empty lines before a request line are allowed (RFC 9112 2.2).
        let start = self.scanned.saturating_sub(3);
        let mut found = None;
        let mut i = start;
        while let Some(pos) = memchr(b'\n', &buf[i..]) {
            let nl = i + pos;
            // A head ends at "\n\n" or "\n\r\n" (httparse accepts both line endings).
            if buf.get(nl + 1) == Some(&b'\n') {
                found = Some(nl + 2);
                break;
            }
            if buf.get(nl + 1) == Some(&b'\r') && buf.get(nl + 2) == Some(&b'\n') {
                found = Some(nl + 3);
                break;
            }
            i = nl + 1;
        }
        // The same checks, in the same order, whether or not the head is complete, so that
        // the verdict does not depend on how the bytes were split into reads. (The request
        // line cap is below the head cap, see `Limits`, so it always fires first.)
        let line_end = memchr(b'\n', buf).unwrap_or(buf.len());
        let head_len = found.unwrap_or(buf.len());
        let max_line = self.limits.max_uri_bytes + URI_SLACK;
        // Bytes that can never start a request (a TLS handshake, binary garbage) are refused
        // at once instead of at the head timeout. Whichever violation comes first in the
        // byte stream wins, so the verdict is the same however the bytes were split.
        if !request_line_plausible(&buf[..line_end.min(max_line + 1)]) {
            return Err(HttpError::Malformed("not an HTTP request line"));
        }
        if line_end > max_line {
            return Err(HttpError::UriTooLong);
        }
        if head_len > self.limits.max_head_bytes {
            return Err(HttpError::HeadTooLarge);
        }
        if found.is_none() {
            self.scanned = buf.len();
        }
        Ok(found)
    }
}

/// Whether the bytes of a (possibly partial) first line could belong to an HTTP request
/// line: visible ASCII, spaces, bytes of UTF-8 text, and CR (leading empty lines allowed).
fn request_line_plausible(line: &[u8]) -> bool {
    line.iter()
        .all(|&b| matches!(b, b'\r' | b'\n' | b' ' | 0x21..=0x7e | 0x80..=0xff))
}

/// Room on the request line for the method and version around the target.
pub const URI_SLACK: usize = 32;

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// Parses a complete head and works out the body length.
fn parse_head(head: &[u8], limits: &DecodeLimits) -> Result<(Request, usize), HttpError> {
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut parsed = httparse::Request::new(&mut storage);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HttpError::Malformed("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HttpError::UnsupportedVersion),
        Err(httparse::Error::Token) => return Err(HttpError::Malformed("invalid token")),
        Err(httparse::Error::HeaderName) => {
            return Err(HttpError::Malformed("invalid header name"));
        }
        Err(httparse::Error::HeaderValue) => {
            return Err(HttpError::Malformed("invalid header value"));
        }
        Err(httparse::Error::NewLine) | Err(httparse::Error::Status) => {
            return Err(HttpError::Malformed("invalid line ending"));
        }
    }
    let method = parsed
        .method
        .ok_or(HttpError::Malformed("missing method"))?;
    let target = parsed
        .path
        .ok_or(HttpError::Malformed("missing request target"))?;
    let minor_version = parsed.version.ok_or(HttpError::UnsupportedVersion)?;
    if target.len() > limits.max_uri_bytes {
        return Err(HttpError::UriTooLong);
    }
    if !target.starts_with('/') {
        return Err(HttpError::Malformed(
            "request target must be an absolute path",
        ));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let headers: Vec<Header> = parsed
        .headers
        .iter()
        .map(|h| Header {
            name: h.name.to_string(),
            value: h.value.to_vec(),
        })
        .collect();
    let request = Request {
        method: method.to_string(),
        path,
        query,
        minor_version,
        headers,
        body: Vec::new(),
    };
    let body_len = body_length(&request, limits)?;
    let hosts: Vec<&Header> = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .collect();
    match hosts.as_slice() {
        [] if minor_version == 1 => return Err(HttpError::Malformed("missing Host header")),
        // An http URI always has an authority (RFC 9112 3.2), so an empty Host is refused.
        [host] if minor_version == 1 && host.value.iter().all(u8::is_ascii_whitespace) => {
            return Err(HttpError::Malformed("empty Host header"));
        }
        [] | [_] => {}
        _ => return Err(HttpError::Malformed("duplicate Host header")),
    }
    Ok((request, body_len))
}

/// The body length from `Content-Length`; `Transfer-Encoding` is refused.
fn body_length(request: &Request, limits: &DecodeLimits) -> Result<usize, HttpError> {
    let mut lengths = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    let has_te = request
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    let Some(first) = lengths.next() else {
        return if has_te {
            Err(HttpError::UnsupportedTransferEncoding)
        } else {
            Ok(0)
        };
    };
    if has_te {
        return Err(HttpError::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if lengths.next().is_some() {
        return Err(HttpError::Malformed("more than one Content-Length"));
    }
    let value = &first.value;
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::Malformed(
            "Content-Length is not a decimal number",
        ));
    }
    let len: u64 = std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(HttpError::Malformed(
            "Content-Length is not a decimal number",
        ))?;
    if len > limits.max_body_bytes as u64 {
        return Err(HttpError::BodyTooLarge);
    }
    Ok(len as usize)
}

/// A percent-encoded string that is malformed or not UTF-8 once decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidEncoding;

impl fmt::Display for InvalidEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid percent-encoding or UTF-8")
    }
}

/// Decodes `%XX` escapes and `+` (as space, the form encoding browsers use in queries).
pub fn percent_decode(input: &str) -> Result<String, InvalidEncoding> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(InvalidEncoding)?;
                let hi = (hex[0] as char).to_digit(16).ok_or(InvalidEncoding)?;
                let lo = (hex[1] as char).to_digit(16).ok_or(InvalidEncoding)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| InvalidEncoding)
}

/// An HTTP response ready to be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers (`Content-Length`, `Connection` and `Date` are added by the encoder).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a JSON body.
    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body,
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Adds several headers.
    pub fn with_headers(mut self, headers: Vec<(String, String)>) -> Response {
        self.headers.extend(headers);
        self
    }

    /// Encodes status line, headers and body into `out`. `keep_alive` decides the
    /// `Connection` header.
    pub fn encode(&self, keep_alive: bool, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        let mut own_policy = false;
        for (name, value) in &self.headers {
            own_policy |= name.eq_ignore_ascii_case("content-security-policy");
            // Header values are produced by the daemon; strip line breaks defensively so a
            // value can never start a new header.
            let value: String = value.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.extend_from_slice(SECURITY_HEADERS.as_bytes());
        if !own_policy {
            out.extend_from_slice(DEFAULT_POLICY.as_bytes());
        }
        let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        out.extend_from_slice(if keep_alive {
            b"Connection: keep-alive\r\n\r\n"
        } else {
            b"Connection: close\r\n\r\n"
        });
        out.extend_from_slice(&self.body);
    }
}

/// Headers on every response: browsers must not guess content types, leak the URL (which
/// may carry a login code) to other sites, or show any response inside another site's frame.
pub const SECURITY_HEADERS: &str =
    "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n";

/// The content security policy of responses that set none (API answers and errors): they
/// may load nothing and be framed by no one. Pages set their own.
pub const DEFAULT_POLICY: &str =
    "Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\n";

/// The reason phrase for the status codes the daemon uses.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        303 => "See Other",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], limits: DecodeLimits) -> Result<Vec<Request>, HttpError> {
        let mut decoder = RequestDecoder::new(limits);
        let mut buf = input.to_vec();
        let mut out = Vec::new();
        loop {
            match decoder.decode(&buf)? {
                Decoded::Complete { request, consumed } => {
                    out.push(request);
                    buf.drain(..consumed);
                }
                Decoded::Incomplete { .. } => return Ok(out),
            }
        }
    }

    /// Feeds the input in pieces split at `cut`, the way a socket might deliver it.
    fn decode_split(input: &[u8], cut: usize) -> Result<Vec<Request>, HttpError> {
        let mut decoder = RequestDecoder::new(DecodeLimits::default());
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in [&input[..cut], &input[cut..]] {
            buf.extend_from_slice(piece);
            while let Decoded::Complete { request, consumed } = decoder.decode(&buf)? {
                out.push(request);
                buf.drain(..consumed);
            }
        }
        Ok(out)
    }

    const PIPELINED: &[u8] = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /api/agents/spawn?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
        GET /b HTTP/1.0\r\n\r\n";

    #[test]
    fn decodes_pipelined_requests_in_order() {
        let requests = decode_all(PIPELINED, DecodeLimits::default()).unwrap();
        assert_eq!(requests.len(), 3);
        assert_eq!(requests[0].path, "/api/health");
        assert!(requests[0].keep_alive());
        assert_eq!(requests[1].method, "POST");
        assert_eq!(requests[1].query.as_deref(), Some("x=1"));
        assert_eq!(requests[1].body, b"hello");
        assert_eq!(requests[2].minor_version, 0);
        assert!(!requests[2].keep_alive());
    }

    #[test]
    fn tls_handshakes_and_binary_garbage_are_refused_before_a_line_ends() {
        let hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcdefgh";
        let mut decoder = RequestDecoder::new(DecodeLimits::default());
        assert_eq!(
            decoder.decode(hello),
            Err(HttpError::Malformed("not an HTTP request line"))
        );
        let mut decoder = RequestDecoder::new(DecodeLimits::default());
        assert!(decoder.decode(b"\x00\x01\xff").is_err());
        // A request line still arriving is fine, UTF-8 in the target included.
        let mut decoder = RequestDecoder::new(DecodeLimits::default());
        assert!(matches!(
            decoder.decode("GET /api/agents/é HTTP/1.1\r".as_bytes()),
            Ok(Decoded::Incomplete { .. })
        ));
    }

    #[test]
    fn any_split_gives_the_same_requests() {
        let whole = decode_all(PIPELINED, DecodeLimits::default()).unwrap();
        for cut in 0..=PIPELINED.len() {
            assert_eq!(decode_split(PIPELINED, cut).unwrap(), whole, "cut at {cut}");
        }
    }

    #[test]
    fn errors_map_to_statuses() {
        let limits = DecodeLimits {
            max_head_bytes: 200,
            max_uri_bytes: 50,
            ..Default::default()
        };
        let cases: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
                400,
            ),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", 400),
            (b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n", 400),
        ];
        for (input, status) in cases {
            let err = decode_all(input, limits).unwrap_err();
            assert_eq!(
                err.status(),
                *status,
                "{:?}: {err}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn oversized_heads_fail_before_completing() {
        let limits = DecodeLimits {
            max_head_bytes: 100,
            max_uri_bytes: 40,
            ..Default::default()
        };
        let long_uri = format!("GET /{} HTTP/1.1", "a".repeat(100));
        assert_eq!(
            decode_all(long_uri.as_bytes(), limits).unwrap_err(),
            HttpError::UriTooLong
        );
        let long_head = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(200));
        assert_eq!(
            decode_all(long_head.as_bytes(), limits).unwrap_err(),
            HttpError::HeadTooLarge
        );
        let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "A: b\r\n".repeat(70));
        let limits = DecodeLimits {
            max_head_bytes: 10_000,
            ..Default::default()
        };
        assert_eq!(
            decode_all(many.as_bytes(), limits).unwrap_err(),
            HttpError::TooManyHeaders
        );
    }

    #[test]
    fn query_params_are_percent_decoded() {
        let requests = decode_all(
            b"GET /x?status=idle&agent_type=my%5Fagent&e=%zz HTTP/1.1\r\nHost: h\r\n\r\n",
            DecodeLimits::default(),
        )
        .unwrap();
        let r = &requests[0];
        assert_eq!(r.query_param("status"), Some(Ok("idle".into())));
        assert_eq!(r.query_param("agent_type"), Some(Ok("my_agent".into())));
        assert_eq!(r.query_param("e"), Some(Err(InvalidEncoding)));
        assert_eq!(r.query_param("missing"), None);
    }

    #[test]
    fn response_encoding() {
        let mut out = Vec::new();
        Response::json(404, b"{}".to_vec())
            .with_header("X-A", "b\r\nEvil: 1")
            .encode(true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("X-A: bEvil: 1\r\n"));
        assert!(text.contains("Content-Length: 2\r\nConnection: keep-alive\r\n\r\n{}"));
        assert!(text.contains("X-Content-Type-Options: nosniff\r\n"));
        assert!(
            text.contains(
                "Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\n"
            )
        );
        let mut page = Vec::new();
        Response::json(200, Vec::new())
            .with_header("Content-Security-Policy", "default-src 'self'")
            .encode(false, &mut page);
        let page = String::from_utf8(page).unwrap();
        assert_eq!(page.matches("Content-Security-Policy").count(), 1);
        assert!(page.contains("X-Frame-Options: DENY\r\n"));
    }
}
