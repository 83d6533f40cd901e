//! One client connection: receive buffer, request decoder, outbound queue and the phase
//! that decides what it is waiting for and which timeout applies.
//!
//! Requests on a connection are answered strictly in order: the next pipelined request is
//! decoded only after the current one has its response queued.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::outbound::{Chunk, OutQueue};
use super::stream::ClientStream;
use crate::config::{Config, Limits};
use crate::principal::Principal;
use crate::proto::http::{DecodeLimits, Decoded, HttpError, Request, RequestDecoder, Response};
use crate::proto::ws::FrameDecoder;

/// Identifies a connection across slot reuse: the slot key plus a serial number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// Slot in the server's connection table.
    pub key: usize,
    /// Unique per accepted connection.
    pub serial: u64,
}

/// A request that has been dispatched and awaits its response.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// Method, for the log line.
    pub method: String,
    /// Path without query string, for the log line (the query may carry secrets).
    pub path: String,
    /// When the request was complete.
    pub started: Instant,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
}

/// What the connection is doing.
#[derive(Debug, Clone)]
pub enum ConnPhase {
    /// Between requests; `since` starts the idle timeout.
    Idle {
        /// When the connection became idle.
        since: Instant,
    },
    /// Part of a request has arrived; `since` starts the head or body timeout.
    Receiving {
        /// When the head's first byte (or, once the head is complete, its last) arrived.
        since: Instant,
        /// Whether the head is complete and the body is arriving.
        body: bool,
    },
    /// A request has been dispatched and its response is pending.
    Awaiting(InFlight),
    /// No more requests will be read; close once the output is written.
    Closing,
    /// Upgraded: frames are handled through [`Connection::ws`].
    WebSocket,
    /// Upgraded, and a close frame has been sent or received: nothing more is read or
    /// delivered; the connection closes once its output is written.
    WebSocketClosing,
}

/// State of an upgraded (WebSocket) connection.
#[derive(Debug)]
pub struct WsState {
    /// Decodes client frames.
    pub decoder: FrameDecoder,
    /// Who the connection serves; `None` while closing after refused credentials.
    pub principal: Option<Principal>,
    /// When the client last sent anything.
    pub last_seen: Instant,
    /// When the daemon sent a ping that has not been answered yet.
    pub ping_sent: Option<Instant>,
}

/// A line for the request log.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Client address.
    pub peer: SocketAddr,
    /// Method.
    pub method: String,
    /// Path without query string.
    pub path: String,
    /// Status sent.
    pub status: u16,
    /// Time from request to response.
    pub latency: Duration,
}

/// Why a connection hit a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Idle keep-alive connection: close silently.
    Idle,
    /// Request head or body too slow: answer `408`.
    SlowRequest,
    /// Client does not read its responses: drop.
    SlowReader,
    /// WebSocket client has been quiet: ping it.
    PingDue,
    /// WebSocket client did not answer the ping: close with 4000.
    PingTimeout,
}

/// One client connection.
#[derive(Debug)]
pub struct Connection {
    /// Identity.
    pub id: ConnId,
    /// The socket.
    pub stream: ClientStream,
    /// Client address.
    pub peer: SocketAddr,
    /// Current phase.
    pub phase: ConnPhase,
    /// Bytes waiting to be written.
    pub out: OutQueue,
    inbuf: Vec<u8>,
    decoder: RequestDecoder,
    read_closed: bool,
    /// Most bytes buffered from the client before reading pauses.
    max_inbuf: usize,
    /// When output was last written (or queued onto an empty queue).
    last_write_progress: Instant,
    /// Set once the connection has been upgraded to WebSocket.
    pub ws: Option<Box<WsState>>,
    /// Whether a response has been queued: until then an idle connection is a silent one,
    /// held only for `limits.head_timeout`.
    answered: bool,
}

/// Output beyond which the connection stops decoding pipelined requests until it drains.
const OUTPUT_HIGH_WATER: usize = 1 << 20;

impl Connection {
    /// A freshly accepted connection.
    pub fn new(id: ConnId, stream: ClientStream, peer: SocketAddr, limits: &Limits) -> Connection {
        let decode = DecodeLimits {
            max_head_bytes: limits.max_head_bytes,
            max_uri_bytes: limits.max_uri_bytes,
            max_headers: limits.max_headers,
            max_body_bytes: limits.max_body_bytes,
        };
        let now = Instant::now();
        Connection {
            id,
            stream,
            peer,
            phase: ConnPhase::Idle { since: now },
            out: OutQueue::default(),
            inbuf: Vec::new(),
            decoder: RequestDecoder::new(decode),
            read_closed: false,
            max_inbuf: limits.max_head_bytes + limits.max_body_bytes + 1,
            last_write_progress: now,
            ws: None,
            answered: false,
        }
    }

    /// Switches to WebSocket after queuing the `101` answer; bytes that arrived after the
    /// upgrade request become the decoder's first input.
    pub fn upgrade(
        &mut self,
        accept: Vec<u8>,
        principal: Option<Principal>,
        max_message_bytes: usize,
    ) {
        self.queue(Chunk::Owned(accept));
        let leftover = std::mem::take(&mut self.inbuf);
        let now = Instant::now();
        self.ws = Some(Box::new(WsState {
            decoder: FrameDecoder::new(max_message_bytes, leftover),
            principal,
            last_seen: now,
            ping_sent: None,
        }));
        self.phase = ConnPhase::WebSocket;
    }

    /// Whether this WebSocket is closing (a close frame went out or came in).
    pub fn is_ws_closing(&self) -> bool {
        matches!(self.phase, ConnPhase::WebSocketClosing)
    }

    /// Whether this is an open WebSocket of an authenticated observer, which gets broadcasts
    /// and pane output.
    pub fn is_live_observer(&self) -> bool {
        matches!(self.phase, ConnPhase::WebSocket)
            && self.ws.as_ref().is_some_and(|ws| ws.principal.is_some())
    }

    /// Bytes read but not yet handed to a decoder (WebSocket mode feeds them on).
    pub fn take_input(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.inbuf)
    }

    /// Since when the connection has been silent, if it has never sent a byte nor been
    /// answered (the first to close when the connection table is full).
    pub fn silent_since(&self) -> Option<Instant> {
        match self.phase {
            ConnPhase::Idle { since } if !self.answered && self.out.is_empty() => Some(since),
            _ => None,
        }
    }

    /// Whether the peer closed its sending side.
    pub fn read_closed(&self) -> bool {
        self.read_closed
    }

    /// Reads what the socket has, until it would block, the peer closed, or the buffer is
    /// full (the rest stays in the kernel until the buffer drains).
    pub fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        while !self.read_closed && self.inbuf.len() < self.max_inbuf {
            let room = (self.max_inbuf - self.inbuf.len()).min(chunk.len());
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => self.read_closed = true,
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    if matches!(self.phase, ConnPhase::Idle { .. }) {
                        self.phase = ConnPhase::Receiving {
                            since: Instant::now(),
                            body: false,
                        };
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Decodes the next request if the connection is ready for one.
    pub fn next_request(&mut self) -> Option<Result<Request, HttpError>> {
        if matches!(
            self.phase,
            ConnPhase::Awaiting(_)
                | ConnPhase::Closing
                | ConnPhase::WebSocket
                | ConnPhase::WebSocketClosing
        ) || self.out.pending() > OUTPUT_HIGH_WATER
            || self.inbuf.is_empty()
        {
            return None;
        }
        match self.decoder.decode(&self.inbuf) {
            Ok(Decoded::Complete { request, consumed }) => {
                self.inbuf.drain(..consumed);
                Some(Ok(request))
            }
            Ok(Decoded::Incomplete { head_complete }) => {
                let now = Instant::now();
                match &mut self.phase {
                    ConnPhase::Receiving { since, body } if head_complete && !*body => {
                        *since = now;
                        *body = true;
                    }
                    ConnPhase::Receiving { .. } => {}
                    _ => {
                        self.phase = ConnPhase::Receiving {
                            since: now,
                            body: head_complete,
                        }
                    }
                }
                None
            }
            Err(error) => Some(Err(error)),
        }
    }

    /// Marks `request` as dispatched.
    pub fn begin(&mut self, request: &Request) {
        self.phase = ConnPhase::Awaiting(InFlight {
            method: request.method.clone(),
            path: request.path.clone(),
            started: Instant::now(),
            keep_alive: request.keep_alive() && !self.read_closed,
        });
    }

    /// Queues the response to the dispatched request and returns its log line. A connection
    /// that is not awaiting a response (it timed out meanwhile) ignores it.
    pub fn respond(&mut self, response: &Response) -> Option<LogLine> {
        let ConnPhase::Awaiting(flight) = &self.phase else {
            return None;
        };
        let keep_alive = flight.keep_alive && !self.read_closed;
        let line = LogLine {
            peer: self.peer,
            method: flight.method.clone(),
            path: flight.path.clone(),
            status: response.status,
            latency: flight.started.elapsed(),
        };
        self.queue_response(response, keep_alive);
        self.phase = if keep_alive {
            ConnPhase::Idle {
                since: Instant::now(),
            }
        } else {
            ConnPhase::Closing
        };
        Some(line)
    }

    /// Answers a request that could not be decoded (or timed out) and stops reading: the
    /// framing can no longer be trusted, so pipelined bytes are discarded.
    pub fn fail(&mut self, response: &Response) {
        self.queue_response(response, false);
        self.inbuf.clear();
        self.phase = ConnPhase::Closing;
    }

    fn queue_response(&mut self, response: &Response, keep_alive: bool) {
        self.answered = true;
        let mut bytes = Vec::with_capacity(128 + response.body.len());
        response.encode(keep_alive, &mut bytes);
        self.queue(Chunk::Owned(bytes));
    }

    /// Queues raw bytes.
    pub fn queue(&mut self, chunk: Chunk) {
        if self.out.is_empty() {
            self.last_write_progress = Instant::now();
        }
        self.out.push(chunk);
    }

    /// Writes queued output until the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.out.write_to(&mut self.stream)? > 0 {
            self.last_write_progress = Instant::now();
        }
        Ok(())
    }

    /// Whether the connection has nothing more to do and should be closed.
    pub fn is_finished(&self) -> bool {
        match self.phase {
            ConnPhase::Closing => self.out.is_empty(),
            // The server decodes buffered requests before asking, so once the peer has closed
            // its side nothing more can arrive.
            ConnPhase::Idle { .. } | ConnPhase::Receiving { .. } => {
                self.read_closed && self.out.is_empty()
            }
            ConnPhase::Awaiting(_) => false,
            ConnPhase::WebSocket => self.read_closed,
            ConnPhase::WebSocketClosing => self.read_closed || self.out.is_empty(),
        }
    }

    /// When the current phase's timeout expires, and what it means.
    pub fn deadline(&self, config: &Config) -> Option<(Instant, Expiry)> {
        let limits = &config.limits;
        if !self.out.is_empty() {
            return Some((
                self.last_write_progress + limits.write_timeout,
                Expiry::SlowReader,
            ));
        }
        if let Some(ws) = &self.ws {
            let ws_config = &config.websocket;
            return match ws.ping_sent {
                _ if self.is_ws_closing() => None,
                Some(sent) => Some((sent + ws_config.pong_timeout, Expiry::PingTimeout)),
                None => Some((ws.last_seen + ws_config.ping_interval, Expiry::PingDue)),
            };
        }
        match &self.phase {
            // A connection that has never sent a request gets no more time than a slow
            // head: silent connections cannot hold the connection table for idle_timeout.
            ConnPhase::Idle { since } if !self.answered => {
                Some((*since + limits.head_timeout, Expiry::Idle))
            }
            ConnPhase::Idle { since } => Some((*since + limits.idle_timeout, Expiry::Idle)),
            ConnPhase::Receiving { since, body: false } => {
                Some((*since + limits.head_timeout, Expiry::SlowRequest))
            }
            ConnPhase::Receiving { since, body: true } => {
                Some((*since + limits.body_timeout, Expiry::SlowRequest))
            }
            ConnPhase::Awaiting(_)
            | ConnPhase::Closing
            | ConnPhase::WebSocket
            | ConnPhase::WebSocketClosing => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::{Principal, Scopes};

    /// A connection on a real loopback socket, and the client's end of it.
    fn connection() -> (Connection, std::net::TcpStream, Config) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let config = Config::default();
        let id = ConnId { key: 0, serial: 1 };
        let stream = ClientStream::Tcp(mio::net::TcpStream::from_std(server));
        let conn = Connection::new(id, stream, peer, &config.limits);
        (conn, client, config)
    }

    fn observer() -> Principal {
        Principal {
            session: None,
            subject: "test".into(),
            scopes: Scopes {
                observe: true,
                control: false,
            },
            expires_at: u64::MAX,
        }
    }

    /// Reads, waiting for readiness as the event loop does, until `want` holds (bounded).
    fn fill_until(conn: &mut Connection, want: impl Fn(&Connection) -> bool) {
        let mut poll = mio::Poll::new().unwrap();
        poll.registry()
            .register(&mut conn.stream, mio::Token(0), mio::Interest::READABLE)
            .unwrap();
        let mut events = mio::Events::with_capacity(4);
        for _ in 0..100 {
            conn.fill().unwrap();
            if want(conn) {
                poll.registry().deregister(&mut conn.stream).unwrap();
                return;
            }
            poll.poll(&mut events, Some(std::time::Duration::from_secs(5)))
                .unwrap();
        }
        panic!("the bytes never arrived");
    }

    #[test]
    fn a_request_moves_idle_receiving_awaiting_and_back_to_idle() {
        let (mut conn, mut client, config) = connection();
        assert!(matches!(conn.phase, ConnPhase::Idle { .. }));
        assert_eq!(conn.deadline(&config).map(|d| d.1), Some(Expiry::Idle));
        std::io::Write::write_all(&mut client, b"GET /api/health HTTP/1.1\r\nHost: x\r\n").unwrap();
        fill_until(&mut conn, |c| {
            matches!(c.phase, ConnPhase::Receiving { .. })
        });
        assert!(conn.next_request().is_none(), "the head is not complete");
        assert_eq!(
            conn.deadline(&config).map(|d| d.1),
            Some(Expiry::SlowRequest)
        );
        std::io::Write::write_all(&mut client, b"\r\n").unwrap();
        let mut request = None;
        fill_until(&mut conn, |c| {
            !c.inbuf.is_empty() && c.inbuf.ends_with(b"\r\n\r\n")
        });
        if let Some(decoded) = conn.next_request() {
            request = Some(decoded.unwrap());
        }
        let request = request.expect("a complete request");
        conn.begin(&request);
        assert!(matches!(conn.phase, ConnPhase::Awaiting(_)));
        assert_eq!(
            conn.deadline(&config),
            None,
            "nothing to time out while we work"
        );
        assert!(!conn.is_finished());
        let line = conn
            .respond(&Response::json(200, b"{}".to_vec()))
            .expect("awaited");
        assert_eq!((line.method.as_str(), line.status), ("GET", 200));
        assert!(matches!(conn.phase, ConnPhase::Idle { .. }), "keep-alive");
        assert!(
            conn.respond(&Response::json(200, b"{}".to_vec())).is_none(),
            "one answer per request"
        );
    }

    #[test]
    fn a_websocket_is_live_until_it_closes_then_finishes_once_written() {
        let (mut conn, _client, config) = connection();
        conn.upgrade(b"HTTP/1.1 101\r\n\r\n".to_vec(), Some(observer()), 1024);
        assert!(matches!(conn.phase, ConnPhase::WebSocket));
        assert!(conn.is_live_observer() && !conn.is_ws_closing());
        assert!(conn.next_request().is_none(), "no HTTP after the upgrade");
        // Output is queued: a reader that stops reading is what times out first.
        assert_eq!(
            conn.deadline(&config).map(|d| d.1),
            Some(Expiry::SlowReader)
        );
        conn.flush().unwrap();
        assert_eq!(conn.deadline(&config).map(|d| d.1), Some(Expiry::PingDue));
        conn.ws.as_mut().unwrap().ping_sent = Some(Instant::now());
        assert_eq!(
            conn.deadline(&config).map(|d| d.1),
            Some(Expiry::PingTimeout)
        );

        conn.phase = ConnPhase::WebSocketClosing;
        assert!(!conn.is_live_observer() && conn.is_ws_closing());
        assert_eq!(conn.deadline(&config), None, "closing waits for no ping");
        assert!(conn.is_finished(), "nothing left to write");
        conn.queue(Chunk::Owned(vec![0x88, 0]));
        assert!(!conn.is_finished(), "the close frame is still queued");
    }

    #[test]
    fn refused_credentials_never_make_a_live_observer() {
        let (mut conn, _client, _) = connection();
        conn.upgrade(Vec::new(), None, 1024);
        assert!(!conn.is_live_observer());
    }
}
