//! The daemon's state, owned by the event-loop thread: configuration, agents, pane capture
//! sources, timers, and replies waiting to be written.
//!
//! Request handlers and job continuations get `&mut Daemon`. It never touches client
//! sockets: replies go to [`Daemon::outbox`] and the server delivers them.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use mio::{Interest, Token};
use slab::Slab;

use crate::agents::{AgentRegistry, CaptureState, manager};
use crate::api::auth::Authenticator;
use crate::config::Config;
use crate::jobs::JobPool;
use crate::net::ConnId;
use crate::panes::attach;
use crate::proto::http::Response;
use crate::timers::Timers;
use crate::tmux::Tmux;

/// Token of the HTTP listener.
pub const LISTENER: Token = Token(0);
/// Token of the cross-thread waker.
pub const WAKER: Token = Token(1);
/// Token of the signal self-pipe.
pub const SIGNALS: Token = Token(2);
/// Token of the pane attach listener.
pub const ATTACH_LISTENER: Token = Token(3);
/// First token handed out dynamically; connections get even, daemon sources odd offsets.
const FIRST_DYNAMIC: usize = 16;

/// The token of connection slot `key`.
pub fn conn_token(key: usize) -> Token {
    Token(FIRST_DYNAMIC + 2 * key)
}

/// The token of daemon source slot `key`.
pub fn source_token(key: usize) -> Token {
    Token(FIRST_DYNAMIC + 2 * key + 1)
}

/// What a dynamic token refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A client connection (slot key).
    Conn(usize),
    /// A daemon source (slot key).
    Source(usize),
}

/// Classifies a dynamic token.
pub fn token_kind(token: Token) -> Option<TokenKind> {
    let offset = token.0.checked_sub(FIRST_DYNAMIC)?;
    Some(if offset % 2 == 0 {
        TokenKind::Conn(offset / 2)
    } else {
        TokenKind::Source(offset / 2)
    })
}

/// An event source the daemon (not the HTTP server) owns.
#[derive(Debug)]
pub enum Source {
    /// A pane's pipe: output to read, input to write.
    PaneOutput {
        /// Session the pane belongs to.
        session_id: String,
        /// The daemon's end of tmux's pipe-pane socketpair.
        stream: mio::net::UnixStream,
    },
    /// A pidfd that becomes readable when the pane's program exits.
    PaneExit {
        /// Session the pane belongs to.
        session_id: String,
        /// The pidfd.
        fd: OwnedFd,
    },
    /// A pipe helper's connection whose message has not arrived yet.
    Attach {
        /// The helper's connection.
        stream: mio::net::UnixStream,
        /// Distinguishes this connection from a later one in the same slot.
        serial: u64,
    },
}

/// Work the loop does at a deadline.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// Drop a pipe helper (slot, serial) that connected but never sent its message.
    AttachTimeout(usize, u64),
}

/// A callback run on the loop when an asynchronous operation finishes.
pub type Done<T> = Box<dyn FnOnce(&mut Daemon, T) + Send>;

/// The daemon's state.
pub struct Daemon {
    /// Configuration (immutable after start).
    pub config: Arc<Config>,
    /// Token verification.
    pub auth: Authenticator,
    /// Handle on the private tmux server.
    pub tmux: Tmux,
    /// Worker pool for blocking work.
    pub jobs: JobPool<Daemon>,
    /// Agent sessions.
    pub agents: AgentRegistry,
    /// Daemon-owned event sources by slot.
    pub sources: Slab<Source>,
    /// Registry to (de)register sources with the loop's poller.
    pub registry: mio::Registry,
    /// Deadlines.
    pub timers: Timers<Timer>,
    /// Replies to deferred requests, delivered by the server after each dispatch.
    pub outbox: Vec<(ConnId, Response)>,
    /// When the daemon started.
    pub started: Instant,
    /// Path of this program, used for the agent wrapper and the pipe helper.
    pub exe: PathBuf,
    /// Listener on which pipe helpers hand over pane pipes.
    pub attach_listener: mio::net::UnixListener,
    /// Attach tokens handed to tmux, by token: the session each one belongs to.
    pub attach_tokens: HashMap<String, String>,
    /// Pipes that arrived before their session finished registering, by session id.
    pub early_captures: HashMap<String, OwnedFd>,
    /// Set once shutdown has begun.
    pub shutting_down: bool,
    /// Counter for pending pipe-helper connections.
    pub attach_serial: u64,
}

/// How long a pipe helper may take to send its message after connecting.
const ATTACH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Daemon {
    /// Queues `response` for the deferred request on `conn`.
    pub fn reply(&mut self, conn: ConnId, response: Response) {
        self.outbox.push((conn, response));
    }

    /// Adds a source and registers it with the poller for `interest`.
    pub fn add_source(&mut self, source: Source, interest: Interest) -> std::io::Result<usize> {
        let key = self.sources.insert(source);
        let token = source_token(key);
        let registry = &self.registry;
        let result = match &mut self.sources[key] {
            Source::PaneOutput { stream, .. } | Source::Attach { stream, .. } => {
                registry.register(stream, token, interest)
            }
            Source::PaneExit { fd, .. } => {
                registry.register(&mut mio::unix::SourceFd(&fd.as_raw_fd()), token, interest)
            }
        };
        if let Err(e) = result {
            self.sources.remove(key);
            return Err(e);
        }
        Ok(key)
    }

    /// Deregisters and drops a source (closing its descriptor).
    pub fn remove_source(&mut self, key: usize) -> Option<Source> {
        let mut source = self.sources.try_remove(key)?;
        let _ = match &mut source {
            Source::PaneOutput { stream, .. } | Source::Attach { stream, .. } => {
                self.registry.deregister(stream)
            }
            Source::PaneExit { fd, .. } => self
                .registry
                .deregister(&mut mio::unix::SourceFd(&fd.as_raw_fd())),
        };
        Some(source)
    }

    /// Handles readiness of a daemon source.
    pub fn on_source_event(&mut self, key: usize, event: &mio::event::Event) {
        match self.sources.get(key) {
            Some(Source::PaneOutput { .. }) => self.read_pane_output(key),
            Some(Source::PaneExit { session_id, .. }) => {
                let session_id = session_id.clone();
                self.remove_source(key);
                manager::on_process_exit(self, &session_id);
            }
            Some(Source::Attach { .. }) if event.is_readable() || event.is_read_closed() => {
                self.finish_attach(key)
            }
            _ => {}
        }
    }

    /// Accepts pipe helpers' connections.
    pub fn on_attach_listener(&mut self) {
        loop {
            match self.attach_listener.accept() {
                Ok((stream, _)) => match attach::receive(&stream) {
                    Ok(Some((token, fd))) => self.on_pipe_received(&token, fd),
                    Ok(None) => {
                        self.attach_serial += 1;
                        let serial = self.attach_serial;
                        match self.add_source(Source::Attach { stream, serial }, Interest::READABLE)
                        {
                            Ok(key) => self
                                .timers
                                .schedule_in(ATTACH_TIMEOUT, Timer::AttachTimeout(key, serial)),
                            Err(e) => log::warn!("cannot watch a pipe helper: {e}"),
                        }
                    }
                    Err(e) => log::warn!("pipe helper sent a bad message: {e}"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("attach socket accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn finish_attach(&mut self, key: usize) {
        let Some(Source::Attach { stream, .. }) = self.sources.get(key) else {
            return;
        };
        match attach::receive(stream) {
            Ok(None) => {}
            Ok(Some((token, fd))) => {
                self.remove_source(key);
                self.on_pipe_received(&token, fd);
            }
            Err(e) => {
                log::warn!("pipe helper sent a bad message: {e}");
                self.remove_source(key);
            }
        }
    }

    /// A pane's pipe arrived from a helper.
    fn on_pipe_received(&mut self, token: &str, fd: OwnedFd) {
        let Some(session_id) = self.attach_tokens.remove(token) else {
            // Normal when the session was killed before its pipe arrived.
            log::debug!("a pane pipe arrived for no current session; closed");
            return;
        };
        if self.agents.get(&session_id).is_some() {
            self.install_capture(&session_id, fd);
        } else {
            self.early_captures.insert(session_id, fd);
        }
    }

    /// Starts reading a session's pane through `fd`, replacing any earlier pipe.
    pub fn install_capture(&mut self, session_id: &str, fd: OwnedFd) {
        let stream = std::os::unix::net::UnixStream::from(fd);
        if let Err(e) = stream.set_nonblocking(true) {
            log::warn!("{session_id}: cannot use the pane pipe: {e}");
            return;
        }
        let stream = mio::net::UnixStream::from_std(stream);
        let Some(agent) = self.agents.get_mut(session_id) else {
            return;
        };
        if let Some(old) = agent.pipe.take() {
            self.remove_source(old);
        }
        let source = Source::PaneOutput {
            session_id: session_id.to_string(),
            stream,
        };
        match self.add_source(source, Interest::READABLE) {
            Ok(key) => {
                if let Some(agent) = self.agents.get_mut(session_id) {
                    agent.capture = CaptureState::Attached;
                    agent.pipe = Some(key);
                }
                log::debug!("{session_id}: output capture attached");
                // Output may already be waiting; read it now rather than rely on an edge.
                self.read_pane_output(key);
            }
            Err(e) => log::warn!("{session_id}: cannot register the pane pipe: {e}"),
        }
    }

    /// Reads everything a pane pipe has, until it would block.
    fn read_pane_output(&mut self, key: usize) {
        use std::io::Read;
        let mut buf = [0u8; 64 * 1024];
        let mut received = 0u64;
        let mut closed = false;
        let session_id = match self.sources.get_mut(key) {
            Some(Source::PaneOutput { session_id, stream }) => {
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => {
                            closed = true;
                            break;
                        }
                        Ok(n) => received += n as u64,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => {
                            closed = true;
                            break;
                        }
                    }
                }
                session_id.clone()
            }
            _ => return,
        };
        if let Some(agent) = self.agents.get_mut(&session_id) {
            if received > 0 {
                agent.output_bytes += received;
                agent.last_activity = SystemTime::now();
            }
            if closed {
                agent.capture = CaptureState::Detached;
                agent.pipe = None;
            }
        }
        if closed {
            self.remove_source(key);
            manager::on_capture_closed(self, &session_id);
        }
    }

    /// Runs the work due at a deadline.
    pub fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::AttachTimeout(key, serial) => {
                if matches!(self.sources.get(key), Some(Source::Attach { serial: s, .. }) if *s == serial)
                {
                    log::warn!("pipe helper connected but sent nothing; dropped");
                    self.remove_source(key);
                }
            }
        }
    }
}
