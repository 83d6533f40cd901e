//! A small blocking HTTP/1.1 client for the `orchestra` commands that talk to a running
//! daemon: through the local daemon's socket with no token, or over plain HTTP with a token
//! that is sent only after the server proved it can verify it ([`Endpoint`]). One request
//! per connection, JSON in and out; it never logs the token it sends.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Largest answer read (the daemon's answers to these commands are small).
const MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// A daemon's base address, `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonUrl {
    /// `host:port` as written (sent as the `Host` header).
    pub authority: String,
}

impl DaemonUrl {
    /// Parses `http://host:port` (a trailing slash is fine). HTTPS is not spoken here: put a
    /// TLS proxy's plain-HTTP side, or an SSH tunnel, in `--url`.
    pub fn parse(url: &str) -> Result<DaemonUrl, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: the daemon URL must start with http://"))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            return Err(format!("{url:?}: expected http://host:port"));
        }
        Ok(DaemonUrl {
            authority: authority.to_string(),
        })
    }

    /// The local daemon listening on `listen` (an unspecified address means loopback).
    pub fn local(mut listen: SocketAddr) -> DaemonUrl {
        if listen.ip().is_unspecified() {
            listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        DaemonUrl {
            authority: listen.to_string(),
        }
    }
}

/// Where a command reaches the daemon, and what it authenticates with.
///
/// The rule: no credential the daemon would accept ever reaches a process that is not the
/// daemon. On the daemon's host the commands use its socket in the 0700 state dir, which
/// only the daemon's user can open and the daemon checks with `SO_PEERCRED`, and send no
/// token at all. Over TCP a token is sent only on a connection whose server has first
/// proved it holds the token's signing key (`POST /api/server-proof`, see
/// [`crate::api::proof`]); a process squatting on the port while the daemon is down gets
/// nothing it could replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The local daemon's API socket (`<state_dir>/api.sock`): no token.
    Local {
        /// The socket's path.
        socket: PathBuf,
    },
    /// A daemon over TCP, with a token.
    Remote {
        /// Where it listens.
        url: DaemonUrl,
        /// The bearer token.
        token: String,
        /// Skip the server proof (for daemons that verify tokens with a public key and so
        /// cannot give one): `--trust-url`.
        trust_url: bool,
    },
}

/// A connection to the daemon: TCP or the local socket.
#[derive(Debug)]
pub enum ApiStream {
    /// TCP.
    Tcp(TcpStream),
    /// The local API socket.
    Unix(UnixStream),
}

impl ApiStream {
    /// Sets the read timeout (`None`: block).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            ApiStream::Tcp(s) => s.set_read_timeout(timeout),
            ApiStream::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    /// Sets the write timeout (`None`: block).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            ApiStream::Tcp(s) => s.set_write_timeout(timeout),
            ApiStream::Unix(s) => s.set_write_timeout(timeout),
        }
    }

    /// Switches non-blocking mode.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            ApiStream::Tcp(s) => s.set_nonblocking(nonblocking),
            ApiStream::Unix(s) => s.set_nonblocking(nonblocking),
        }
    }
}

impl Read for ApiStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ApiStream::Tcp(s) => s.read(buf),
            ApiStream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for ApiStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ApiStream::Tcp(s) => s.write(buf),
            ApiStream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ApiStream::Tcp(s) => s.flush(),
            ApiStream::Unix(s) => s.flush(),
        }
    }
}

impl AsRawFd for ApiStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            ApiStream::Tcp(s) => s.as_raw_fd(),
            ApiStream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Endpoint {
    /// The `Host` header and WebSocket URL authority to use.
    pub fn authority(&self) -> &str {
        match self {
            Endpoint::Local { .. } => "localhost",
            Endpoint::Remote { url, .. } => &url.authority,
        }
    }

    /// Where the daemon is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Local { socket } => format!("the local daemon's socket {}", socket.display()),
            Endpoint::Remote { url, .. } => format!("http://{}", url.authority),
        }
    }

    /// The `Authorization` header value to send once [`Endpoint::connect`] succeeded.
    pub fn authorization(&self) -> Option<String> {
        match self {
            Endpoint::Local { .. } => None,
            Endpoint::Remote { token, .. } => Some(format!("Bearer {token}")),
        }
    }

    /// Opens a connection on which the credential may be sent: the local socket, or a TCP
    /// connection whose server has proved it holds the token's key.
    pub fn connect(&self, timeout: Duration) -> Result<ApiStream, ConnectError> {
        match self {
            Endpoint::Local { socket } => {
                let stream = UnixStream::connect(socket).map_err(|e| {
                    ConnectError::Unreachable(format!(
                        "cannot reach the daemon through its socket {}: {e} (is it running? \
                         start it with `orchestra serve`, or `cargo run --release -- serve` in \
                         a checkout; a daemon with another state \
                         directory needs --state-dir)",
                        socket.display()
                    ))
                })?;
                let stream = ApiStream::Unix(stream);
                set_timeouts(&stream, timeout)?;
                Ok(stream)
            }
            Endpoint::Remote {
                url,
                token,
                trust_url,
            } => {
                let unreachable = |e: io::Error| {
                    ConnectError::Unreachable(format!(
                        "cannot reach the daemon at http://{}: {e} (is it running? start it \
                         with `orchestra serve`, or `cargo run --release -- serve` in a \
                         checkout)",
                        url.authority
                    ))
                };
                let address = url
                    .authority
                    .to_socket_addrs()
                    .map_err(unreachable)?
                    .next()
                    .ok_or_else(|| {
                        ConnectError::Unreachable(format!("{}: no address", url.authority))
                    })?;
                let tcp = TcpStream::connect_timeout(&address, timeout).map_err(unreachable)?;
                let _ = tcp.set_nodelay(true);
                let mut stream = ApiStream::Tcp(tcp);
                set_timeouts(&stream, timeout)?;
                if !trust_url {
                    verify_server(&mut stream, url, token)?;
                }
                Ok(stream)
            }
        }
    }
}

/// Why no connection could be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// Nothing answers there.
    Unreachable(String),
    /// Something answers, but it did not prove it can verify the token, which was not
    /// sent.
    Unproven(String),
}

impl ConnectError {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            ConnectError::Unreachable(m) | ConnectError::Unproven(m) => m,
        }
    }
}

fn set_timeouts(stream: &ApiStream, timeout: Duration) -> Result<(), ConnectError> {
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| ConnectError::Unreachable(e.to_string()))
}

/// Asks the server on `stream` to prove it holds the key of `token` (keep-alive, so the
/// token then goes over the same connection, to the same process).
fn verify_server(stream: &mut ApiStream, url: &DaemonUrl, token: &str) -> Result<(), ConnectError> {
    let unproven = |why: String| {
        ConnectError::Unproven(format!(
            "the server at http://{} {why}; the token was not sent",
            url.authority
        ))
    };
    let mut parts = token.rsplitn(2, '.');
    let (Some(signature), Some(signing_input)) = (parts.next(), parts.next()) else {
        return Err(unproven(
            "cannot be asked to prove anything for a token that is not a JWT \
             (header.payload.signature)"
                .into(),
        ));
    };
    let mut nonce_bytes = [0u8; 24];
    getrandom::fill(&mut nonce_bytes)
        .map_err(|_| ConnectError::Unreachable("no randomness available".into()))?;
    let nonce: String = nonce_bytes.iter().map(|b| format!("{b:02x}")).collect();
    let body = serde_json::json!({ "nonce": nonce, "token": signing_input }).to_string();
    let head = format!(
        "POST /api/server-proof HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        url.authority,
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .map_err(|e| ConnectError::Unreachable(format!("cannot send the request: {e}")))?;
    let answer = read_one_answer(stream).map_err(|e| {
        unproven(format!(
            "gave no answer to the server-proof challenge ({e})"
        ))
    })?;
    if answer.status == 501 {
        return Err(unproven(
            "verifies tokens with a public key and cannot prove it holds their signing key \
             (if you trust the network path to it, pass --trust-url)"
                .into(),
        ));
    }
    let proof = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("proof")?.as_str().map(str::to_string));
    let expected = crate::proto::proof::proof_of(signature.as_bytes(), &nonce);
    match proof {
        Some(proof) if answer.status == 200 && !expected.is_empty() && proof == expected => Ok(()),
        _ => Err(unproven(
            "could not prove it holds this token's signing key: the token is for another \
             daemon, or another program listens on that port"
                .into(),
        )),
    }
}

/// Reads one answer with a `Content-Length` body from a kept-alive connection, leaving
/// the connection at the start of the next answer.
fn read_one_answer(stream: &mut ApiStream) -> Result<Answer, String> {
    const MAX_PROOF_ANSWER: usize = 64 << 10;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&raw[..end]).map_err(|_| "a head that is not text")?;
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .ok_or("no Content-Length")?;
            if length > MAX_PROOF_ANSWER {
                return Err("an answer too large".into());
            }
            if raw.len() >= end + 4 + length {
                let mut answer = parse_answer(&raw[..end + 4 + length])?;
                answer.body.truncate(length);
                return Ok(answer);
            }
        }
        if raw.len() > MAX_PROOF_ANSWER {
            return Err("an answer too large".into());
        }
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the connection closed".into());
        }
        raw.extend_from_slice(&chunk[..n]);
    }
}

/// An answer: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Sends one request and reads the whole answer, within `timeout` per step.
pub fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Answer, ConnectError> {
    let mut stream = endpoint.connect(timeout)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
        endpoint.authority()
    );
    if let Some(authorization) = endpoint.authorization() {
        head.push_str(&format!("Authorization: {authorization}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method != "GET" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let failed = |e: String| ConnectError::Unreachable(e);
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| failed(format!("cannot send the request: {e}")))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut raw)
        .map_err(|e| failed(format!("cannot read the answer: {e}")))?;
    parse_answer(&raw).map_err(failed)
}

/// Splits a `Connection: close` answer into status and body.
fn parse_answer(raw: &[u8]) -> Result<Answer, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the daemon's answer has no complete head")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the answer's head is not text")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or("the answer has no status code")?;
    Ok(Answer {
        status,
        body: raw[end + 4..].to_vec(),
    })
}

/// The API's error as one line (`CODE: message`), or the status when the body is not one.
pub fn error_line(answer: &Answer) -> String {
    serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| {
            Some(format!(
                "{}: {}",
                v.get("error_code")?.as_str()?,
                v.get("message")?.as_str()?
            ))
        })
        .unwrap_or_else(|| format!("the daemon answered HTTP {}", answer.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http_authorities() {
        assert_eq!(
            DaemonUrl::parse("http://127.0.0.1:8080/")
                .unwrap()
                .authority,
            "127.0.0.1:8080"
        );
        for bad in [
            "https://x:1",
            "127.0.0.1:8080",
            "http://",
            "http://a/b",
            "http://u@h:1",
        ] {
            assert!(DaemonUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_split_into_status_and_body() {
        let answer = parse_answer(b"HTTP/1.1 201 Created\r\nA: b\r\n\r\n{\"x\":1}").unwrap();
        assert_eq!(answer.status, 201);
        assert_eq!(answer.body, b"{\"x\":1}");
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err());
        let error = Answer {
            status: 403,
            body: br#"{"error_code":"FORBIDDEN","message":"no"}"#.to_vec(),
        };
        assert_eq!(error_line(&error), "FORBIDDEN: no");
        assert_eq!(
            error_line(&Answer {
                status: 502,
                body: b"x".to_vec()
            }),
            "the daemon answered HTTP 502"
        );
    }
}
