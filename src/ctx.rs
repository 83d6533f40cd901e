//! The loop's shared context, below every feature: configuration, the poller's registry and
//! the daemon's event sources, deadlines, worker pools, the tmux handle, what must be written
//! to clients, metrics and shutdown. Nothing here decides anything: features own their state
//! ([`crate::panes::Panes`], [`crate::agents::Agents`], [`crate::tasks::Tasks`],
//! [`crate::api::ApiState`]) and get `&mut Ctx` to act on the world.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use mio::{Interest, Token};
use slab::Slab;

use crate::config::Config;
use crate::jobs::{JobPool, Notifier};
use crate::net::ConnId;
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
/// Token of the hook listener.
pub const HOOK_LISTENER: Token = Token(4);
/// Token of the local API socket's listener (`<state_dir>/api.sock`).
pub const LOCAL_API_LISTENER: Token = Token(5);
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
    /// A pane's pipe: its output to read, and input to write.
    PanePipe {
        /// Session the pane belongs to.
        session_id: String,
        /// tmux's pipe-pane socket, or the pseudo-terminal master of a `pty` session (its
        /// input queue is the pane's, in [`crate::panes::Panes`]).
        stream: crate::net::pane_io::PaneIo,
    },
    /// A pidfd that becomes readable when the pane's program exits.
    PaneExit {
        /// Session the pane belongs to.
        session_id: String,
        /// The pidfd.
        fd: OwnedFd,
    },
    /// The connection to a `pty` session's holder: exit statuses arrive on it; checkpoints
    /// and the release go out on it.
    PtyHolder {
        /// Session the holder holds.
        session_id: String,
        /// The connection.
        stream: mio::net::UnixStream,
        /// Frames arriving from the holder.
        decoder: crate::proto::pty::FrameDecoder,
        /// Frames for the holder not yet written (forwarded output, checkpoints).
        outbound: Vec<u8>,
        /// The stream offset and size of the last checkpoint sent.
        checkpointed: Option<(u64, u16, u16)>,
    },
    /// A hook's connection whose message is arriving.
    Hook {
        /// The hook's connection.
        stream: mio::net::UnixStream,
        /// What it sent so far.
        received: Vec<u8>,
        /// Distinguishes this connection from a later one in the same slot.
        serial: u64,
        /// The session whose credential its message starts with, once that has arrived.
        session: Option<String>,
        /// When it was accepted (`hooks.receive_timeout`).
        opened: Instant,
        /// When it last sent something (`hooks.idle_timeout`).
        active: Instant,
    },
    /// An answer on a private socket (a hook's, a tool call's) that the socket did not take
    /// whole; written as the socket takes it, then closed.
    Answer {
        /// The connection.
        stream: mio::net::UnixStream,
        /// What is left to write.
        pending: Vec<u8>,
        /// Distinguishes this answer from a later one in the same slot.
        serial: u64,
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
    /// Drop an answer (slot, serial) whose reader did not take it in time.
    AnswerTimeout(usize, u64),
    /// Drop a hook connection (slot, serial) that did not finish its message in time.
    HookTimeout(usize, u64),
    /// Give up waiting for a person's answer to a permission request (request id).
    ApprovalTimeout(String),
    /// Check a quiet pane's screen against its type's screen rules.
    ScreenCheck(String),
    /// See whether a session has gone quiet long enough to be `idle`.
    IdleCheck(String),
    /// Press Enter after a typed `user_message` (session, typing serial).
    SubmitEnter(String, u64),
    /// See whether a hooked CLI took the `typed`-th message typed into it (session, typed,
    /// attempts so far); press Enter again if not.
    SubmitCheck(String, u64, u32),
    /// See whether input held for a hooked CLI may be typed (session, gate serial).
    InputGate(String, u64),
    /// Check every live pane's output pipe against tmux's own activity.
    CaptureHealth,
    /// A pane's reading has waited `panes.max_stall` for a viewer (session, stall serial).
    StallEnd(String, u64),
    /// Re-seed a lost emulator once its pane is quiet.
    ReseedCheck(String),
    /// Leave a screen checkpoint with a `pty` session's holder.
    Checkpoint(String),
    /// Announce a `pty` session's exit even though its terminal has not reached its end.
    PtyExit(String),
    /// Record a pane's bracketed-paste mode in tmux once it has been stable.
    PersistPasteMode(String),
    /// Forget expired WebSocket tickets.
    TicketSweep,
    /// A task's timeout (task id).
    TaskTimeout(u64),
    /// Send progress updates for running tasks.
    TaskProgress,
    /// Rewrite this host's record in the cluster (a heartbeat, every third of
    /// `cluster.unreachable_after`).
    ClusterBeat,
    /// Rewrite this host's record soon because its agents changed.
    ClusterPublish,
    /// Answer a request forwarded to another host (forward id) that got no answer.
    ForwardTimeout(u64),
}

/// What continuations run on: the daemon, which this module does not name, so that it sits
/// below every part. A part reaches its own state in it through [`Part::reach`].
pub type World = dyn std::any::Any;

/// Work for the loop, run on the [`World`] (a finished job's result, a deferred callback).
pub type Continuation = crate::jobs::Continuation<World>;

/// A callback run on the loop when an asynchronous operation finishes. Parts make one with
/// [`done`]; code that finishes the operation hands it to [`Ctx::finish`].
pub type Done<T> = Box<dyn FnOnce(&mut World, T) + Send>;

/// WebSocket output produced by the daemon, delivered by the server.
#[derive(Debug, Default)]
pub struct WsOutbox {
    /// Frames for every authenticated observer (encoded once).
    pub broadcast: Vec<Arc<[u8]>>,
    /// Frames for one connection.
    pub direct: Vec<(ConnId, Vec<u8>)>,
    /// One frame for several connections of this daemon, shared rather than copied.
    pub shared: Vec<(ConnId, Arc<[u8]>)>,
    /// Connections to close with a code and reason.
    pub close: Vec<(ConnId, u16, String)>,
    /// Frames for every observer that other hosts of the cluster broadcast (delivered like
    /// `broadcast`, never sent on to the cluster again).
    pub relayed: Vec<Arc<[u8]>>,
}

impl WsOutbox {
    /// Queues a JSON message for every observer, encoded once, counting it in `metrics`. The
    /// same as [`Ctx::broadcast`], for callers that borrow other fields of the context.
    pub fn send_to_all(
        &mut self,
        metrics: &mut crate::metrics::Metrics,
        message: &crate::wire::ws::ServerMessage<'_>,
    ) {
        let text = serde_json::to_string(message).expect("serializable");
        metrics.sent(&text);
        self.broadcast
            .push(crate::proto::ws::text_frame(&text).into());
    }
}

/// The loop's shared context.
pub struct Ctx {
    /// Configuration (immutable after start).
    pub config: Arc<Config>,
    /// Handle on the private tmux server.
    pub tmux: Tmux,
    /// Worker pool for quick blocking work: tmux commands, /proc reads, small files.
    pub jobs: JobPool<World>,
    /// Worker pool for process-tree kills and exit-status polling (bounded waits).
    pub kill_jobs: JobPool<World>,
    /// Worker pool for slow work: git and directory scans for task workspaces.
    pub slow_jobs: JobPool<World>,
    /// Daemon-owned event sources by slot.
    pub sources: Slab<Source>,
    /// Registry to (de)register sources with the loop's poller.
    pub registry: mio::Registry,
    /// Deadlines.
    pub timers: Timers<Timer>,
    /// Replies to deferred HTTP requests, delivered by the server after each dispatch.
    pub outbox: Vec<(ConnId, Response)>,
    /// WebSocket output, delivered by the server after each dispatch.
    pub ws: WsOutbox,
    /// When the daemon started.
    pub started: Instant,
    /// Path of this program, used for the agent wrapper and the pipe helper.
    pub exe: PathBuf,
    /// Set once shutdown has begun.
    pub shutting_down: bool,
    /// The loop's counters for `GET /metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Counter that tells a source apart from a later one in the same slot.
    pub attach_serial: u64,
    /// Answers being written as their sockets take them ([`Ctx::answer`]); at most
    /// `hooks.max_connections`.
    answers_pending: usize,
    /// Callbacks to run once the current event has been handled ([`Ctx::finish`]).
    later: Vec<Continuation>,
}

impl Ctx {
    /// The context at start: the worker pools started, everything else empty. `notifier` is
    /// how workers report back.
    pub fn new(
        config: Arc<Config>,
        registry: mio::Registry,
        notifier: &Notifier<World>,
    ) -> Result<Ctx, String> {
        let pool = |name, workers| {
            JobPool::new(name, workers, config.max_queued_jobs, notifier.clone())
                .map_err(|e| format!("cannot start the {name} workers: {e}"))
        };
        let jobs = pool("worker", config.workers)?;
        let kill_jobs = pool("kill", config.kill_workers)?;
        let slow_jobs = pool("slow", config.slow_workers)?;
        let tmux = crate::tmux::Tmux::new(
            &config.tmux.binary,
            &config.tmux_socket(),
            config.tmux.config_file.as_deref(),
            config.tmux.command_timeout,
        );
        let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
        Ok(Ctx {
            config,
            tmux,
            jobs,
            kill_jobs,
            slow_jobs,
            sources: Slab::new(),
            registry,
            timers: Timers::default(),
            outbox: Vec::new(),
            ws: WsOutbox::default(),
            started: Instant::now(),
            exe,
            shutting_down: false,
            metrics: Default::default(),
            attach_serial: 0,
            answers_pending: 0,
            later: Vec::new(),
        })
    }

    /// Runs `done` with `value` as soon as the current event has been handled. A part calls
    /// this to finish an operation another part asked for, whose callback it cannot run
    /// itself (it only sees its own state); the server runs it before delivering anything.
    pub fn finish<T: Send + 'static>(&mut self, done: Done<T>, value: T) {
        self.later
            .push(Box::new(move |world: &mut World| done(world, value)));
    }

    /// Takes the callbacks queued by [`Ctx::finish`], oldest first.
    pub fn take_later(&mut self) -> Vec<Continuation> {
        std::mem::take(&mut self.later)
    }

    /// Whether callbacks queued by [`Ctx::finish`] wait to run.
    pub fn has_later(&self) -> bool {
        !self.later.is_empty()
    }

    /// Queues `response` for the deferred request on `conn`.
    pub fn reply(&mut self, conn: ConnId, response: Response) {
        self.outbox.push((conn, response));
    }

    /// Queues a JSON message for one WebSocket connection.
    pub fn send_ws(&mut self, conn: ConnId, message: &crate::wire::ws::ServerMessage<'_>) {
        let text = serde_json::to_string(message).expect("serializable");
        self.metrics.sent(&text);
        self.ws
            .direct
            .push((conn, crate::proto::ws::text_frame(&text)));
    }

    /// Queues a JSON message for every observer, encoded once.
    pub fn broadcast(&mut self, message: &crate::wire::ws::ServerMessage<'_>) {
        self.ws.send_to_all(&mut self.metrics, message);
    }

    /// Writes `answer` on `stream` and closes it: at once if the socket takes it whole,
    /// otherwise as the socket takes it, for at most `hooks.answer_timeout`. Never blocks the
    /// loop, and never cuts short an answer its reader takes within that time.
    pub fn answer(&mut self, mut stream: mio::net::UnixStream, mut answer: Vec<u8>) {
        match crate::net::unix::write_some(&mut stream, &mut answer) {
            Ok(true) => {}
            Err(e) => log::debug!("an answer's reader is gone: {e}"),
            Ok(false) if self.answers_pending >= self.config.hooks.max_connections => {
                log::warn!(
                    "too many answers waiting for their readers (hooks.max_connections); one closed"
                );
                self.metrics.answers_abandoned += 1;
            }
            Ok(false) => {
                self.attach_serial += 1;
                let serial = self.attach_serial;
                let source = Source::Answer {
                    stream,
                    pending: answer,
                    serial,
                };
                match self.add_source(source, Interest::WRITABLE) {
                    Ok(key) => {
                        self.answers_pending += 1;
                        self.timers.schedule_in(
                            self.config.hooks.answer_timeout,
                            Timer::AnswerTimeout(key, serial),
                        )
                    }
                    Err(e) => log::warn!("cannot watch an answer's socket: {e}"),
                }
            }
        }
    }

    /// An answer's socket (slot `key`) turned writable: write more, close once done.
    pub fn continue_answer(&mut self, key: usize) {
        let Some(Source::Answer {
            stream, pending, ..
        }) = self.sources.get_mut(key)
        else {
            return;
        };
        if !matches!(crate::net::unix::write_some(stream, pending), Ok(false)) {
            self.remove_source(key);
            self.answers_pending -= 1;
        }
    }

    /// An answer's time is up: if it is still being written, close it.
    pub fn on_answer_timeout(&mut self, key: usize, serial: u64) {
        if matches!(self.sources.get(key), Some(Source::Answer { serial: s, .. }) if *s == serial) {
            log::warn!("an answer was not taken whole within hooks.answer_timeout; closed");
            self.metrics.answers_abandoned += 1;
            self.remove_source(key);
            self.answers_pending -= 1;
        }
    }

    /// Adds a source and registers it with the poller for `interest`.
    pub fn add_source(&mut self, source: Source, interest: Interest) -> std::io::Result<usize> {
        let key = self.sources.insert(source);
        let token = source_token(key);
        let registry = &self.registry;
        let result = match &mut self.sources[key] {
            Source::PanePipe { stream, .. } => registry.register(stream, token, interest),
            Source::PtyHolder { stream, .. }
            | Source::Attach { stream, .. }
            | Source::Answer { stream, .. }
            | Source::Hook { stream, .. } => registry.register(stream, token, interest),
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
            Source::PanePipe { stream, .. } => self.registry.deregister(stream),
            Source::PtyHolder { stream, .. }
            | Source::Attach { stream, .. }
            | Source::Answer { stream, .. }
            | Source::Hook { stream, .. } => self.registry.deregister(stream),
            Source::PaneExit { fd, .. } => self
                .registry
                .deregister(&mut mio::unix::SourceFd(&fd.as_raw_fd())),
        };
        Some(source)
    }
}

/// A part of the daemon that owns its state. Work a part sends off the loop comes back as a
/// continuation made with [`then`] or [`done`], which sees what the part may reach (its own
/// state, the parts below it and the context) and nothing else.
pub trait Part: Sized + 'static {
    /// What the part may reach, borrowed from the world.
    type Reach<'a>;
    /// Borrows what the part may reach from `world` (the daemon).
    fn reach(world: &mut World) -> Self::Reach<'_>;
}

/// A continuation for the loop that runs `f` on what part `P` may reach.
pub fn then<P: Part>(f: impl for<'a> FnOnce(P::Reach<'a>) + Send + 'static) -> Continuation {
    Box::new(move |world: &mut World| f(P::reach(world)))
}

/// A callback for an asynchronous operation whose result `f` handles on what part `P` may
/// reach.
pub fn done<P: Part, T>(f: impl for<'a> FnOnce(P::Reach<'a>, T) + Send + 'static) -> Done<T> {
    Box::new(move |world: &mut World, value| f(P::reach(world), value))
}
