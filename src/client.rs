//! A small blocking HTTP/1.1 client for the `orchestra` commands that talk to a running
//! daemon (`orchestra open`). One request per connection, JSON in and out, loopback or
//! plain HTTP only; it never logs the token it sends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
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

    /// Whether the URL names this host (loopback), the only place a token signed with the
    /// local secret may be sent.
    pub fn is_this_host(&self) -> bool {
        let authority = self.authority.to_ascii_lowercase();
        let host = if authority.starts_with('[') {
            authority
                .find(']')
                .map_or(authority.as_str(), |end| &authority[..=end])
        } else {
            authority
                .rsplit_once(':')
                .map_or(authority.as_str(), |(host, _)| host)
        };
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
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
    url: &DaemonUrl,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Answer, String> {
    let unreachable = |e: std::io::Error| {
        format!(
            "cannot reach the daemon at http://{}: {e} (is it running? start it with \
             `orchestra serve`)",
            url.authority
        )
    };
    let address = url
        .authority
        .to_socket_addrs()
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| format!("{}: no address", url.authority))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
        url.authority
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method != "GET" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    parse_answer(&raw)
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
