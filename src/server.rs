//! The event loop: one thread, one `mio::Poll`, owning every socket.
//!
//! It accepts connections, drives each connection's state machine, hands decoded requests
//! to the API, runs continuations that workers send back (waking the loop through the
//! `Waker`), delivers deferred replies, fires deadlines, and handles SIGINT/SIGTERM by
//! draining in-flight requests before exiting. It never blocks: all waiting happens in
//! workers.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use mio::net::{TcpListener, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Waker};
use slab::Slab;

use crate::agents::manager;
use crate::api::{self, Handled, error::ApiError};
use crate::config::Config;
use crate::daemon::{
    ATTACH_LISTENER, Daemon, LISTENER, SIGNALS, TokenKind, WAKER, conn_token, token_kind,
};
use crate::jobs::{Continuation, JobPool, Notifier};
use crate::net::conn::{Expiry, LogLine};
use crate::net::{ConnId, Connection, Phase};
use crate::proto::http::Response;
use crate::timers::{Timers, until};

/// A running server: sockets bound, sessions adopted, ready to [`Server::run`].
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    signals: UnixStream,
    conns: Slab<Connection>,
    /// When each connection's pending timer entry fires (to avoid piling up entries).
    conn_timer_at: Slab<Option<Instant>>,
    next_serial: u64,
    conn_timers: Timers<ConnId>,
    daemon: Daemon,
    continuations: Receiver<Continuation<Daemon>>,
    /// A reserved descriptor, released to accept-and-refuse when the process runs out.
    spare_fd: Option<std::fs::File>,
    shutdown_deadline: Option<Instant>,
    _lock: std::fs::File,
}

impl Server {
    /// Prepares the state directory, binds the sockets and adopts existing sessions.
    pub fn start(config: Config) -> Result<Server, String> {
        let config = Arc::new(config);
        crate::create_private_dir(&config.state_dir)?;
        let lock = lock_state_dir(&config.state_dir)?;
        check_socket_path(&config.tmux_socket())?;
        check_socket_path(&config.attach_socket())?;
        clean_spawn_dir(&config.spawn_dir());
        let secret = crate::api::auth::load_or_create_secret(&config)?;
        let auth = crate::api::auth::Authenticator::new(&config, &secret)?;

        let poll = Poll::new().map_err(|e| format!("cannot create the poller: {e}"))?;
        let mut listener = TcpListener::bind(config.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| e.to_string())?;

        let attach_path = config.attach_socket();
        let _ = std::fs::remove_file(&attach_path);
        let mut attach_listener = UnixListener::bind(&attach_path)
            .map_err(|e| format!("cannot bind {}: {e}", attach_path.display()))?;
        poll.registry()
            .register(&mut attach_listener, ATTACH_LISTENER, Interest::READABLE)
            .map_err(|e| e.to_string())?;

        let (signal_reader, signal_writer) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| format!("cannot create the signal pipe: {e}"))?;
        signal_reader
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let mut signals = UnixStream::from_std(signal_reader);
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let writer = signal_writer.try_clone().map_err(|e| e.to_string())?;
            signal_hook::low_level::pipe::register(signal, writer)
                .map_err(|e| format!("cannot handle signal {signal}: {e}"))?;
        }
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| e.to_string())?;

        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| e.to_string())?);
        let (notifier, continuations) = Notifier::new(waker);
        let jobs = JobPool::new(config.workers, notifier).map_err(|e| e.to_string())?;
        let registry = poll.registry().try_clone().map_err(|e| e.to_string())?;
        let tmux = crate::tmux::Tmux::new(
            &config.tmux.binary,
            &config.tmux_socket(),
            config.tmux.config_file.as_deref(),
            config.tmux.command_timeout,
        );
        let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
        let mut daemon = Daemon {
            config: config.clone(),
            auth,
            tmux,
            jobs,
            agents: Default::default(),
            sources: Slab::new(),
            registry,
            timers: Timers::default(),
            outbox: Vec::new(),
            started: Instant::now(),
            exe,
            attach_listener,
            attach_tokens: Default::default(),
            early_captures: Default::default(),
            shutting_down: false,
            attach_serial: 0,
        };
        match manager::adopt(&mut daemon) {
            Ok(0) => {}
            Ok(n) => log::info!("re-adopted {n} agent sessions from the tmux server"),
            Err(e) => log::warn!("could not look for existing sessions: {e}"),
        }
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            signals,
            conns: Slab::new(),
            conn_timer_at: Slab::new(),
            next_serial: 0,
            conn_timers: Timers::default(),
            daemon,
            continuations,
            spare_fd: std::fs::File::open("/dev/null").ok(),
            shutdown_deadline: None,
            _lock: lock,
        })
    }

    /// The address the HTTP listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs until SIGINT/SIGTERM and the drain that follows.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            let next = [
                self.conn_timers.next_deadline(),
                self.daemon.timers.next_deadline(),
                self.shutdown_deadline,
            ]
            .into_iter()
            .flatten()
            .min();
            match self.poll.poll(&mut events, until(next, now)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    SIGNALS => self.on_signal(),
                    ATTACH_LISTENER => self.daemon.on_attach_listener(),
                    token => match token_kind(token) {
                        Some(TokenKind::Conn(key)) => self.drive(key),
                        Some(TokenKind::Source(key)) => self.daemon.on_source_event(key, event),
                        None => {}
                    },
                }
            }
            self.settle();
            self.fire_timers();
            self.settle();
            if let Some(deadline) = self.shutdown_deadline
                && (self.conns.is_empty() || Instant::now() >= deadline)
            {
                log::info!(
                    "shutdown complete ({} connections cut off); agents keep running",
                    self.conns.len()
                );
                return Ok(());
            }
        }
    }

    /// Runs continuations from workers and delivers replies until neither produces more.
    fn settle(&mut self) {
        loop {
            let mut progressed = false;
            while let Ok(continuation) = self.continuations.try_recv() {
                continuation(&mut self.daemon);
                progressed = true;
            }
            let outbox = std::mem::take(&mut self.daemon.outbox);
            for (id, response) in outbox {
                progressed = true;
                let Some(conn) = self.conns.get_mut(id.key).filter(|c| c.id == id) else {
                    continue;
                };
                if let Some(line) = conn.respond(&response) {
                    log_request(&line);
                }
                self.drive(id.key);
            }
            if !progressed {
                return;
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                    // Out of descriptors: release the spare one to accept and refuse a single
                    // connection, so the listener does not stay readable forever.
                    log::warn!("out of file descriptors; refusing a connection");
                    self.spare_fd.take();
                    if let Ok((stream, _)) = listener.accept() {
                        refuse(stream, "out of file descriptors");
                    }
                    self.spare_fd = std::fs::File::open("/dev/null").ok();
                    return;
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: mio::net::TcpStream, peer: SocketAddr) {
        let limits = &self.daemon.config.limits;
        if self.conns.len() >= limits.max_connections {
            log::warn!(
                "{peer}: refused, {} connections open (limits.max_connections)",
                self.conns.len()
            );
            refuse(stream, "too many connections (limits.max_connections)");
            return;
        }
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            conn_token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("{peer}: cannot register connection: {e}");
            return;
        }
        self.next_serial += 1;
        let id = ConnId {
            key,
            serial: self.next_serial,
        };
        entry.insert(Connection::new(id, stream, peer, limits));
        if self.conn_timer_at.contains(key) {
            self.conn_timer_at[key] = None;
        } else {
            let timer_key = self.conn_timer_at.insert(None);
            debug_assert_eq!(timer_key, key);
        }
        self.drive(key);
    }

    /// Reads, decodes and dispatches requests, writes responses, closes when finished.
    fn drive(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut broken = conn.fill().is_err();
        while let Some(next) = if broken { None } else { conn.next_request() } {
            match next {
                Err(error) => {
                    let response = ApiError::from(&error).to_response();
                    log::info!("{} - - {} ({error})", conn.peer, response.status);
                    conn.fail(&response);
                    break;
                }
                Ok(request) => {
                    conn.begin(&request);
                    let handled = if self.daemon.shutting_down {
                        Handled::Now(shutting_down_response())
                    } else {
                        api::handle(&mut self.daemon, conn.id, &request)
                    };
                    match handled {
                        Handled::Now(response) => {
                            if let Some(line) = conn.respond(&response) {
                                log_request(&line);
                            }
                        }
                        Handled::Later => break,
                    }
                }
            }
        }
        if !broken && conn.flush().is_err() {
            broken = true;
        }
        if broken || conn.is_finished() {
            self.close(key);
            return;
        }
        if self.daemon.shutting_down && matches!(conn.phase, Phase::Idle { .. }) {
            conn.phase = Phase::Closing;
            if conn.out.is_empty() {
                self.close(key);
                return;
            }
        }
        self.schedule_conn_timer(key);
    }

    fn schedule_conn_timer(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let Some((at, _)) = conn.deadline(&self.daemon.config.limits) else {
            return;
        };
        let slot = &mut self.conn_timer_at[key];
        if slot.is_none_or(|scheduled| at < scheduled) {
            *slot = Some(at);
            self.conn_timers.schedule(at, conn.id);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            if let Phase::Awaiting(flight) = &conn.phase {
                log::info!(
                    "{} {} {} - (client went away)",
                    conn.peer,
                    flight.method,
                    flight.path
                );
            }
        }
        if self.conn_timer_at.contains(key) {
            self.conn_timer_at[key] = None;
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        for timer in self.daemon.timers.pop_due(now) {
            self.daemon.on_timer(timer);
        }
        for id in self.conn_timers.pop_due(now) {
            let Some(conn) = self.conns.get_mut(id.key).filter(|c| c.id == id) else {
                continue;
            };
            self.conn_timer_at[id.key] = None;
            match conn.deadline(&self.daemon.config.limits) {
                Some((at, expiry)) if at <= now => match expiry {
                    Expiry::Idle | Expiry::SlowReader => self.close(id.key),
                    Expiry::SlowRequest => {
                        let response = ApiError::new(
                            408,
                            crate::api::error::ErrorCode::RequestTimeout,
                            "the request did not arrive in time",
                        )
                        .to_response();
                        log::info!("{} - - 408 (request too slow)", conn.peer);
                        conn.fail(&response);
                        self.drive(id.key);
                    }
                },
                Some(_) => self.schedule_conn_timer(id.key),
                None => {}
            }
        }
    }

    fn on_signal(&mut self) {
        let mut buf = [0u8; 64];
        while matches!(self.signals.read(&mut buf), Ok(n) if n > 0) {}
        if self.shutdown_deadline.is_some() {
            log::warn!("second signal: exiting now");
            std::process::exit(0);
        }
        log::info!("signal received: no longer accepting; finishing in-flight requests");
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.daemon.shutting_down = true;
        self.shutdown_deadline = Some(Instant::now() + self.daemon.config.limits.shutdown_grace);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.drive(key);
        }
    }
}

fn shutting_down_response() -> Response {
    ApiError::new(
        503,
        crate::api::error::ErrorCode::Overloaded,
        "daemon is shutting down",
    )
    .with_header("Retry-After", "5")
    .to_response()
}

/// Best-effort `503` on a connection the daemon will not serve, then close it.
fn refuse(mut stream: mio::net::TcpStream, why: &str) {
    let response = ApiError::new(503, crate::api::error::ErrorCode::Overloaded, why)
        .with_header("Retry-After", "1")
        .to_response();
    let mut bytes = Vec::new();
    response.encode(false, &mut bytes);
    let _ = stream.write(&bytes);
}

fn log_request(line: &LogLine) {
    log::info!(
        "{} {} {} {} {:.1}ms",
        line.peer,
        line.method,
        line.path,
        line.status,
        line.latency.as_secs_f64() * 1000.0
    );
}

/// Takes an exclusive lock on the state directory so two daemons never share one.
fn lock_state_dir(dir: &Path) -> Result<std::fs::File, String> {
    let path = dir.join("daemon.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another orchestra daemon is using the state directory {}",
            dir.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// Unix socket paths are limited to about 107 bytes.
fn check_socket_path(path: &Path) -> Result<(), String> {
    if path.as_os_str().len() > 100 {
        return Err(format!(
            "socket path {} is too long for a Unix socket; choose a shorter --state-dir",
            path.display()
        ));
    }
    Ok(())
}

/// Spawn specs are consumed within milliseconds; leftovers are from a crash.
fn clean_spawn_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
