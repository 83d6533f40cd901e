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
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::{TcpListener, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Waker};
use slab::Slab;

use crate::agents::manager;
use crate::api::observe::After;
use crate::api::{self, Handled, error::ApiError};
use crate::config::Config;
use crate::daemon::{
    ATTACH_LISTENER, Daemon, HOOK_LISTENER, LISTENER, LOCAL_API_LISTENER, SIGNALS, Timer,
    TokenKind, WAKER, conn_token, token_kind,
};
use crate::dispatch;
use crate::jobs::{Continuation, Notifier};
use crate::net::conn::{Expiry, LogLine};
use crate::net::{Chunk, ClientStream, ConnId, ConnPhase, Connection};
use crate::proto::http::Response;
use crate::proto::ws::{self, Incoming, close};
use crate::timers::{Timers, until};

/// A running server: sockets bound, sessions adopted, ready to [`Server::run`].
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    /// The local API socket (`<state_dir>/api.sock`): the commands on this host connect
    /// here and need no token.
    local_listener: Option<UnixListener>,
    local_addr: SocketAddr,
    signals: UnixStream,
    conns: Slab<Connection>,
    /// When each connection's pending timer entry fires (to avoid piling up entries).
    conn_timer_at: Slab<Option<Instant>>,
    next_serial: u64,
    conn_timers: Timers<ConnId>,
    /// Configuration (the daemon's, shared).
    config: Arc<Config>,
    daemon: Daemon,
    continuations: Receiver<Continuation<crate::ctx::World>>,
    /// A reserved descriptor, released to accept-and-refuse when the process runs out.
    spare_fd: Option<std::fs::File>,
    shutdown_deadline: Option<Instant>,
    /// Connections with newly queued output, flushed once per loop turn.
    touched: Vec<usize>,
    /// Viewers with more output to send after their fair share of a turn.
    conn_revisit: Vec<usize>,
    _lock: std::fs::File,
}

/// Creates the state directory (private), takes its lock, checks that the sockets' paths
/// fit, and clears spawn specs left by an earlier daemon. Returns the lock, held for the
/// daemon's life.
fn prepare_state_dir(config: &Config) -> Result<std::fs::File, String> {
    crate::create_private_dir(&config.state_dir)?;
    make_private(&config.state_dir, &config.task_store())?;
    let lock = lock_state_dir(&config.state_dir, config.state_lock_wait)?;
    check_socket_path(&config.tmux_socket())?;
    check_socket_path(&config.attach_socket())?;
    check_socket_path(&config.hook_socket())?;
    check_socket_path(&config.api_socket())?;
    clean_spawn_dir(&config.spawn_dir());
    Ok(lock)
}

/// Binds the HTTP listener on `addr` and registers it; the error hints at the usual cause
/// when the address is taken.
fn listen_tcp(poll: &Poll, addr: SocketAddr) -> Result<TcpListener, String> {
    let mut listener = TcpListener::bind(addr).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::AddrInUse {
            " (another program, or another orchestra daemon, listens there: stop it, or \
                 choose another port with --listen 127.0.0.1:PORT or `listen` in the config)"
        } else {
            ""
        };
        format!("cannot listen on {addr}: {e}{hint}")
    })?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    Ok(listener)
}

/// Turns SIGINT and SIGTERM into bytes on a registered socket the loop reads (a graceful
/// shutdown), and makes SIGXFSZ harmless.
fn watch_signals(poll: &Poll) -> Result<UnixStream, String> {
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
    // A file-size limit (RLIMIT_FSIZE) must turn into write errors (EFBIG) that the
    // store reports, not kill the daemon. A handler, unlike SIG_IGN, is reset to the
    // default in the children the daemon execs.
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )
    .map_err(|e| format!("cannot handle SIGXFSZ: {e}"))?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    Ok(signals)
}

/// Takes over what an earlier daemon left running: tmux sessions, pty holders, and the
/// tasks of its ticket store.
fn take_over_earlier_work(daemon: &mut Daemon) {
    let tmux_known = match manager::adopt(&mut daemon.for_agents()) {
        Ok(0) => true,
        Ok(n) => {
            log::info!("re-adopted {n} agent sessions from the tmux server");
            true
        }
        Err(e) => {
            log::warn!("could not look for existing sessions: {e}");
            false
        }
    };
    match crate::agents::pty_session::adopt(&mut daemon.for_agents()) {
        0 => {}
        n => log::info!("re-adopted {n} agent sessions from their pty holders"),
    }
    match crate::agents::resume::find_lost(&mut daemon.for_agents(), tmux_known) {
        0 => {}
        n => log::warn!("{n} agent sessions lost their terminal while the daemon was down"),
    }
    crate::tasks::lifecycle::recover(&mut daemon.for_tasks());
}

/// Binds the Unix socket at `path` (replacing a stale one) and registers it as `token`.
fn listen_unix(
    poll: &Poll,
    path: &std::path::Path,
    token: mio::Token,
) -> Result<UnixListener, String> {
    let _ = std::fs::remove_file(path);
    let mut listener =
        UnixListener::bind(path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    poll.registry()
        .register(&mut listener, token, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    Ok(listener)
}

impl Server {
    /// Prepares the state directory, binds the sockets and adopts existing sessions.
    pub fn start(config: Config) -> Result<Server, String> {
        let mut config = config;
        if let Some(limit) = crate::sys::raise_open_files_limit()
            && (limit as usize) < config.limits.max_connections + 64
        {
            log::warn!(
                "only {limit} file descriptors available for limits.max_connections = {}",
                config.limits.max_connections
            );
        }
        let lock = prepare_state_dir(&config)?;
        let secret = crate::api::auth::load_or_create_secret(&config)?;
        let auth = crate::api::auth::Authenticator::new(&config, &secret)?;

        let poll = Poll::new().map_err(|e| format!("cannot create the poller: {e}"))?;
        let listener = listen_tcp(&poll, config.listen)?;
        let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
        // From here on the config names the address really bound (a port of 0 is chosen
        // by the system), which the local socket's login links point at.
        config.listen = local_addr;
        let config = Arc::new(config);

        let attach_listener = listen_unix(&poll, &config.attach_socket(), ATTACH_LISTENER)?;
        let local_listener = listen_unix(&poll, &config.api_socket(), LOCAL_API_LISTENER)?;
        {
            // Only the daemon's user may connect (the state dir is 0700 too, and every
            // connection's peer is checked when accepted).
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(config.api_socket(), std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("cannot restrict {}: {e}", config.api_socket().display()))?;
        }

        let signals = watch_signals(&poll)?;

        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| e.to_string())?);
        let (notifier, continuations) = Notifier::new(waker);
        let registry = poll.registry().try_clone().map_err(|e| e.to_string())?;
        let hook_listener = listen_unix(&poll, &config.hook_socket(), HOOK_LISTENER)?;
        let mut daemon = Daemon::new(
            config.clone(),
            auth,
            registry,
            attach_listener,
            hook_listener,
            notifier,
            &secret,
        )?;
        take_over_earlier_work(&mut daemon);
        daemon
            .ctx()
            .timers
            .schedule_in(config.panes.health_interval, Timer::CaptureHealth);
        if config.cluster.enabled() {
            // The first record goes out when the link connects; then a heartbeat.
            daemon
                .ctx()
                .timers
                .schedule_in(config.cluster.unreachable_after / 3, Timer::ClusterBeat);
        }
        Ok(Server {
            poll,
            listener: Some(listener),
            local_listener: Some(local_listener),
            local_addr,
            signals,
            conns: Slab::new(),
            conn_timer_at: Slab::new(),
            next_serial: 0,
            conn_timers: Timers::default(),
            config,
            daemon,
            continuations,
            spare_fd: std::fs::File::open("/dev/null").ok(),
            shutdown_deadline: None,
            touched: Vec::new(),
            conn_revisit: Vec::new(),
            _lock: lock,
        })
    }

    /// The address the HTTP listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A one-time login link to the dashboard (control scope), for the person who started
    /// the daemon in a terminal.
    pub fn login_link(&mut self) -> Option<String> {
        crate::api::web::startup_link(&mut self.daemon.for_api(), self.local_addr)
    }

    /// Runs until SIGINT/SIGTERM and the drain that follows.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            let next = [
                self.conn_timers.next_deadline(),
                self.daemon.ctx().timers.next_deadline(),
                self.shutdown_deadline,
            ]
            .into_iter()
            .flatten()
            .min();
            // Pane pipes left with unread data are read again right after this poll.
            let timeout =
                if !self.daemon.for_panes().0.must_revisit() && self.conn_revisit.is_empty() {
                    until(next, now)
                } else {
                    Some(Duration::ZERO)
                };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.daemon.for_panes().0.begin_turn();
            self.handle_events(&events);
            let (panes, _) = self.daemon.for_panes();
            if panes.must_revisit() {
                // Panes that flood are read last in a turn. What this turn's events produced
                // (a keystroke's ack, a quiet agent's echo) goes out before their reads.
                self.settle();
            }
            let floods = self.daemon.for_panes().0.take_revisit();
            for key in floods {
                let (panes, ctx) = self.daemon.for_panes();
                if !panes.read_output(ctx, key) {
                    continue;
                }
                // After each flood's read, whatever became ready meanwhile (a keystroke, a
                // quiet agent's echo) is handled and delivered, so it waits for one flood's
                // read rather than for the whole turn.
                match self.poll.poll(&mut events, Some(Duration::ZERO)) {
                    Ok(()) if !events.is_empty() => {
                        self.handle_events(&events);
                        self.settle();
                    }
                    _ => {}
                }
            }
            for key in std::mem::take(&mut self.conn_revisit) {
                self.touched.push(key);
            }
            self.settle();
            self.fire_timers();
            self.settle();
            let (panes, ctx) = self.daemon.for_panes();
            panes.after_delivery(ctx);
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

    /// Handles what one poll reported ready.
    fn handle_events(&mut self, events: &Events) {
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accept(),
                LOCAL_API_LISTENER => self.accept_local(),
                WAKER => {}
                SIGNALS => self.on_signal(),
                ATTACH_LISTENER => {
                    let (panes, ctx) = self.daemon.for_panes();
                    panes.on_attach_listener(ctx)
                }
                HOOK_LISTENER => self.daemon.for_agents().on_hook_listener(),
                token => match token_kind(token) {
                    Some(TokenKind::Conn(key)) => self.drive(key),
                    Some(TokenKind::Source(key)) => {
                        dispatch::source_event(&mut self.daemon, key, event)
                    }
                    None => {}
                },
            }
        }
    }

    /// Runs continuations from workers and delivers everything the daemon produced (HTTP
    /// replies, WebSocket messages, pane output for viewers) until nothing more comes.
    fn settle(&mut self) {
        loop {
            let mut progressed = false;
            // What agents announced from a request or a timer, then after each
            // continuation, so every reaction sees the state its event came from.
            progressed |= dispatch::agent_events(&mut self.daemon);
            while let Ok(continuation) = self.continuations.try_recv() {
                continuation(&mut self.daemon);
                dispatch::agent_events(&mut self.daemon);
                progressed = true;
            }
            for (id, response) in std::mem::take(&mut self.daemon.ctx().outbox) {
                progressed = true;
                if id.key == crate::cluster::PEER_CONN_KEY {
                    dispatch::peer_answer(&mut self.daemon, id, response);
                    continue;
                }
                let Some(conn) = self.conns.get_mut(id.key).filter(|c| c.id == id) else {
                    continue;
                };
                if let Some(line) = conn.respond(&response) {
                    log_request(&mut self.daemon.ctx().metrics, &line);
                }
                self.drive(id.key);
            }
            progressed |= self.deliver_ws();
            if !progressed {
                break;
            }
        }
        self.flush_touched();
    }

    /// Flushes every connection that got output since the last flush, once each.
    fn flush_touched(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for key in touched {
            self.flush(key);
        }
    }

    /// Delivers the daemon's WebSocket output. Returns whether there was any.
    fn deliver_ws(&mut self) -> bool {
        let (panes, ctx) = self.daemon.for_panes();
        let outbox = std::mem::take(&mut ctx.ws);
        let dirty = panes.take_dirty();
        let overwhelmed = panes.take_overwhelmed();
        // What this host tells its observers goes to the other hosts' observers too.
        dispatch::relay_events(&mut self.daemon, &outbox.broadcast);
        let any = !(outbox.direct.is_empty()
            && outbox.shared.is_empty()
            && outbox.broadcast.is_empty()
            && outbox.relayed.is_empty()
            && outbox.close.is_empty()
            && dirty.is_empty()
            && overwhelmed.is_empty());
        let mut tunneled = Vec::new();
        for (id, frame) in outbox.direct {
            if id.key == crate::cluster::PEER_CONN_KEY {
                tunneled.push((id, frame));
            } else if let Some(conn) = self.ws_conn(id) {
                conn.queue(Chunk::Owned(frame));
                self.touched.push(id.key);
            }
        }
        for (id, frame) in outbox.shared {
            if let Some(conn) = self.ws_conn(id) {
                conn.queue(Chunk::Shared(frame));
                self.touched.push(id.key);
            }
        }
        if !outbox.broadcast.is_empty() || !outbox.relayed.is_empty() {
            for (key, conn) in self.conns.iter_mut() {
                if !conn.is_live_observer() {
                    continue;
                }
                for frame in outbox.broadcast.iter().chain(&outbox.relayed) {
                    conn.queue(Chunk::Shared(frame.clone()));
                }
                self.touched.push(key);
            }
        }
        // Frames for stand-ins of other hosts' viewers go back to those hosts.
        if !tunneled.is_empty() {
            dispatch::tunnel_frames(&mut self.daemon, tunneled);
        }
        for (id, code, reason) in outbox.close {
            self.close_ws(id, code, &reason);
        }
        for id in overwhelmed {
            log::warn!(
                "observer {id:?} could not keep up; closing with {}",
                close::SLOW_CONSUMER
            );
            self.daemon.ctx().metrics.slow_viewer_closes += 1;
            self.close_ws(id, close::SLOW_CONSUMER, "too slow: resynced too often");
        }
        let mut stand_ins = Vec::new();
        for id in dirty {
            if id.key == crate::cluster::PEER_CONN_KEY {
                stand_ins.push(id);
            } else if self.ws_conn(id).is_some() {
                self.pump(id.key);
                self.touched.push(id.key);
            }
        }
        // Together, so that a frame many of them get crosses to their host once.
        if !stand_ins.is_empty() {
            dispatch::pump_tunnels(&mut self.daemon, &stand_ins);
        }
        any
    }

    /// The open, authenticated WebSocket connection `id`, if it still exists.
    fn ws_conn(&mut self, id: ConnId) -> Option<&mut Connection> {
        self.conns
            .get_mut(id.key)
            .filter(|c| c.id == id && c.is_live_observer())
    }

    /// Queues pane output for a viewer while its outbound queue has room. Returns whether
    /// anything was queued.
    fn pump(&mut self, key: usize) -> bool {
        let window = self.config.websocket.send_window_bytes;
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if !conn.is_live_observer() {
            return false;
        }
        let timestamp = crate::panes::capture::now_millis();
        let mut queued = false;
        while conn.out.pending() < window {
            let chunks =
                self.daemon
                    .for_panes()
                    .0
                    .pull(conn.id, window - conn.out.pending(), timestamp);
            if chunks.is_empty() {
                break;
            }
            queued = true;
            for chunk in chunks {
                conn.queue(chunk);
            }
        }
        queued
    }

    /// Writes what a connection has queued; closes it when it is finished or broken, and
    /// closes a viewer whose queue grew past the hard cap.
    fn flush(&mut self, key: usize) {
        let max_outbound = self.config.websocket.max_outbound_bytes;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.flush().is_err() {
            self.close(key);
            return;
        }
        let was_empty = conn.out.is_empty();
        if conn.ws.is_some() && conn.out.pending() > max_outbound {
            let id = conn.id;
            log::warn!(
                "{}: observer's queue passed {max_outbound} bytes; closing",
                conn.peer
            );
            conn.out.truncate_unstarted();
            self.daemon.ctx().metrics.slow_viewer_closes += 1;
            self.close_ws(id, close::SLOW_CONSUMER, "too slow: outbound queue full");
            return;
        }
        if conn.is_finished() {
            self.close(key);
            return;
        }
        if was_empty && conn.ws.is_some() {
            // Room again: a viewer may have output waiting in the hub.
            self.pump_after_flush(key);
        }
        self.schedule_conn_timer(key);
    }

    /// After a viewer's queue drained, keeps pulling and writing until the socket is full
    /// (its writable edge will bring us back) or the viewer has caught up. Bounded per turn
    /// for fairness: a viewer with more to send is revisited right after this loop turn.
    fn pump_after_flush(&mut self, key: usize) {
        for _ in 0..PUMP_ROUNDS {
            if !self.pump(key) {
                return;
            }
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.flush().is_err() {
                self.close(key);
                return;
            }
            if !conn.out.is_empty() {
                return;
            }
        }
        self.conn_revisit.push(key);
    }

    /// Queues a close frame and stops reading; the connection closes once it is written.
    fn close_ws(&mut self, id: ConnId, code: u16, reason: &str) {
        let Some(conn) = self.conns.get_mut(id.key).filter(|c| c.id == id) else {
            return;
        };
        if !matches!(conn.phase, ConnPhase::WebSocket) {
            return;
        }
        conn.phase = ConnPhase::WebSocketClosing;
        conn.queue(Chunk::Owned(ws::close_frame(code, reason)));
        self.touched.push(id.key);
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(ClientStream::Tcp(stream), peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                    // Out of descriptors: release the spare one to accept and refuse each
                    // waiting connection in turn, until the backlog is empty. The listener is
                    // edge-triggered, so stopping earlier would leave clients hanging
                    // unanswered until some other connection arrived.
                    // (Linux reports EMFILE before looking at the backlog, so an empty
                    // backlog only shows once the spare is released.)
                    let mut refused = 0;
                    let room = loop {
                        self.spare_fd.take();
                        let got_one = match listener.accept() {
                            Ok((stream, _)) => {
                                refuse(ClientStream::Tcp(stream), "out of file descriptors");
                                refused += 1;
                                true
                            }
                            Err(ref e) if e.kind() == io::ErrorKind::Interrupted => true,
                            Err(_) => false,
                        };
                        self.spare_fd = std::fs::File::open("/dev/null").ok();
                        if !got_one || self.spare_fd.is_none() {
                            break false;
                        }
                        // Room again? Then serve the rest normally.
                        match listener.accept() {
                            Ok((stream, peer)) => {
                                self.admit(ClientStream::Tcp(stream), peer);
                                break true;
                            }
                            Err(e)
                                if matches!(
                                    e.raw_os_error(),
                                    Some(libc::EMFILE) | Some(libc::ENFILE)
                                ) => {}
                            Err(_) => break false,
                        }
                    };
                    if refused > 0 {
                        log::warn!("out of file descriptors; refused {refused} connection(s)");
                    }
                    if !room {
                        return;
                    }
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Accepts connections to the local API socket: only from processes of the daemon's
    /// own user.
    fn accept_local(&mut self) {
        loop {
            let Some(listener) = &self.local_listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => {
                    use std::os::fd::AsRawFd;
                    match crate::sys::peer_uid(stream.as_raw_fd()) {
                        Ok(uid) if uid == crate::sys::effective_uid() => {
                            self.admit(ClientStream::Local(stream), LOCAL_PEER)
                        }
                        Ok(uid) => {
                            // Served only to answer each request with 403, so the client
                            // reads why (a bare close could lose the answer).
                            log::warn!("refused a local API connection from user id {uid}");
                            self.admit(ClientStream::Foreign(stream), LOCAL_PEER)
                        }
                        Err(e) => log::warn!("cannot check a local API connection: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("local API accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Closes the connection that has been silent longest (accepted, never sent a
    /// request), to make room for a new one. Returns whether there was one.
    fn evict_silent(&mut self) -> bool {
        let oldest = self
            .conns
            .iter()
            .filter_map(|(key, conn)| conn.silent_since().map(|since| (since, key)))
            .min();
        match oldest {
            Some((_, key)) => {
                self.daemon.ctx().metrics.silent_connections_evicted += 1;
                self.close(key);
                true
            }
            None => false,
        }
    }

    fn admit(&mut self, mut stream: ClientStream, peer: SocketAddr) {
        let max_connections = self.config.limits.max_connections;
        if self.conns.len() >= max_connections && !self.evict_silent() {
            log::warn!(
                "{peer}: refused, {} connections open (limits.max_connections)",
                self.conns.len()
            );
            refuse(stream, "too many connections (limits.max_connections)");
            return;
        }
        if let ClientStream::Tcp(tcp) = &stream {
            let _ = tcp.set_nodelay(true);
        }
        let limits = &self.config.limits;
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
        if conn.ws.is_some() {
            self.drive_ws(key);
            return;
        }
        let broken = conn.fill().is_err();
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
                    let handled = if self.daemon.ctx().shutting_down {
                        Handled::Now(shutting_down_response())
                    } else {
                        let caller = if conn.stream.is_local() {
                            api::Caller::Local
                        } else if conn.stream.is_foreign() {
                            api::Caller::Foreign
                        } else {
                            api::Caller::Network(conn.peer.ip())
                        };
                        api::handle(&mut self.daemon.for_api(), conn.id, caller, &request)
                    };
                    match handled {
                        Handled::Now(response) => {
                            if let Some(line) = conn.respond(&response) {
                                log_request(&mut self.daemon.ctx().metrics, &line);
                            }
                        }
                        Handled::Later => break,
                        Handled::Refuse(response) => {
                            log::info!(
                                "{} {} {} {}",
                                conn.peer,
                                request.method,
                                request.path,
                                response.status
                            );
                            conn.fail(&response);
                            break;
                        }
                        Handled::Upgrade { accept, principal } => {
                            let max = self.config.websocket.max_message_bytes;
                            let status = if principal.is_ok() {
                                "101"
                            } else {
                                "101 (refused credentials)"
                            };
                            log::info!(
                                "{} {} {} {status}",
                                conn.peer,
                                request.method,
                                request.path
                            );
                            let send_buffer = self.config.websocket.socket_send_buffer;
                            if send_buffer > 0 {
                                use std::os::fd::AsRawFd;
                                let _ = crate::sys::set_send_buffer(
                                    conn.stream.as_raw_fd(),
                                    send_buffer,
                                );
                            }
                            match principal {
                                Ok(principal) => {
                                    if let Some(sid) = &principal.session {
                                        self.daemon.for_api().api.remember_web_socket(sid, conn.id);
                                    }
                                    conn.upgrade(accept, Some(principal), max)
                                }
                                Err(reason) => {
                                    conn.upgrade(accept, None, max);
                                    conn.queue(Chunk::Owned(
                                        crate::api::observe::refused_credentials(&reason),
                                    ));
                                    conn.phase = ConnPhase::WebSocketClosing;
                                }
                            }
                            self.drive_ws(key);
                            return;
                        }
                    }
                }
            }
        }
        self.after_requests(key, broken);
    }

    /// After a connection's requests were handled: writes what is queued, closes it when it
    /// broke or is finished (or is idle while the daemon shuts down), else sets its timer.
    fn after_requests(&mut self, key: usize, mut broken: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !broken && conn.flush().is_err() {
            broken = true;
        }
        if broken || conn.is_finished() {
            self.close(key);
            return;
        }
        if self.daemon.ctx().shutting_down && matches!(conn.phase, ConnPhase::Idle { .. }) {
            conn.phase = ConnPhase::Closing;
            if conn.out.is_empty() {
                self.close(key);
                return;
            }
        }
        self.schedule_conn_timer(key);
    }

    /// Reads and handles WebSocket frames, then writes what is queued.
    fn drive_ws(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let broken = conn.fill().is_err();
        let input = conn.take_input();
        let id = conn.id;
        let ws = conn.ws.as_mut().expect("upgraded");
        if !matches!(conn.phase, ConnPhase::WebSocketClosing) {
            if !input.is_empty() {
                ws.decoder.feed(&input);
            }
            loop {
                let message = match ws.decoder.next_message() {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(error) => {
                        log::info!(
                            "{}: closing WebSocket ({} {})",
                            conn.peer,
                            error.code,
                            error.reason
                        );
                        let frame = ws::close_frame(error.code, &error.reason);
                        conn.phase = ConnPhase::WebSocketClosing;
                        conn.queue(Chunk::Owned(frame));
                        break;
                    }
                };
                ws.last_seen = Instant::now();
                ws.ping_sent = None;
                match message {
                    Incoming::Text(text) => {
                        let Some(principal) = ws.principal.clone() else {
                            break;
                        };
                        if let After::Close(code, reason) = crate::api::observe::on_text(
                            &mut self.daemon.for_api(),
                            id,
                            &principal,
                            &text,
                        ) {
                            // Queued replies (the error) go out before the close frame,
                            // which `close_ws` queues (and marks the connection closing).
                            self.daemon.ctx().ws.close.push((id, code, reason));
                            break;
                        }
                    }
                    Incoming::Binary(_) => {
                        conn.phase = ConnPhase::WebSocketClosing;
                        conn.queue(Chunk::Owned(ws::close_frame(
                            close::UNSUPPORTED_DATA,
                            "binary messages are not supported; send JSON text",
                        )));
                        break;
                    }
                    Incoming::Alive => {}
                    Incoming::Close(_) => {
                        // tungstenite queued the answering close frame.
                        conn.phase = ConnPhase::WebSocketClosing;
                        break;
                    }
                }
            }
            let reply = conn.ws.as_mut().expect("upgraded").decoder.take_output();
            if !reply.is_empty() {
                conn.queue(Chunk::Owned(reply));
            }
        }
        if broken {
            self.close(key);
            return;
        }
        // Replies to this client's messages (acks, errors) go out before any output they
        // made available, so a `subscribed` always precedes the subscription's first frame.
        self.deliver_ws();
        self.pump(key);
        self.touched.push(key);
        self.flush_touched();
    }

    fn schedule_conn_timer(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let Some((at, _)) = conn.deadline(&self.config) else {
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
            if let ConnPhase::Awaiting(flight) = &conn.phase {
                log::info!(
                    "{} {} {} - (client went away)",
                    conn.peer,
                    flight.method,
                    flight.path
                );
            }
            if let Some(ws) = &conn.ws
                && ws.principal.is_some()
            {
                dispatch::ws_closed(&mut self.daemon, conn.id);
            }
        }
        if self.conn_timer_at.contains(key) {
            self.conn_timer_at[key] = None;
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        for timer in self.daemon.ctx().timers.pop_due(now) {
            dispatch::timer(&mut self.daemon, timer);
        }
        for id in self.conn_timers.pop_due(now) {
            let Some(conn) = self.conns.get_mut(id.key).filter(|c| c.id == id) else {
                continue;
            };
            self.conn_timer_at[id.key] = None;
            match conn.deadline(&self.config) {
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
                    Expiry::PingDue => {
                        if let Some(ws) = conn.ws.as_mut() {
                            ws.ping_sent = Some(now);
                        }
                        conn.queue(Chunk::Owned(ws::ping_frame(b"orchestra")));
                        self.touched.push(id.key);
                    }
                    Expiry::PingTimeout => {
                        log::info!("{}: no answer to ping; closing", conn.peer);
                        self.close_ws(id, close::PING_TIMEOUT, "no answer to ping");
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
        if let Some(mut listener) = self.local_listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
            // Commands started from now on say the daemon is not running.
            let _ = std::fs::remove_file(self.config.api_socket());
        }
        self.daemon.ctx().shutting_down = true;
        self.shutdown_deadline = Some(Instant::now() + self.config.limits.shutdown_grace);
        let conns: Vec<(usize, ConnId, bool)> = self
            .conns
            .iter()
            .map(|(k, c)| (k, c.id, c.ws.is_some()))
            .collect();
        for (key, id, is_ws) in conns {
            if is_ws {
                self.close_ws(id, close::GOING_AWAY, "daemon shutting down");
            } else {
                self.drive(key);
            }
        }
        self.flush_touched();
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

/// Pull-and-write rounds one viewer gets per loop turn (each up to the send window).
const PUMP_ROUNDS: usize = 16;

/// The address logged for connections to the local API socket.
const LOCAL_PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    0,
));

/// Best-effort `503` on a connection the daemon will not serve, then close it.
fn refuse(mut stream: ClientStream, why: &str) {
    let response = ApiError::new(503, crate::api::error::ErrorCode::Overloaded, why)
        .with_header("Retry-After", "1")
        .to_response();
    let mut bytes = Vec::new();
    response.encode(false, &mut bytes);
    let _ = stream.write(&bytes);
}

/// Logs an answered request and counts it for `GET /metrics`.
fn log_request(metrics: &mut crate::metrics::Metrics, line: &LogLine) {
    metrics.http(api::route_label(&line.path), line.status, line.latency);
    log::info!(
        "{} {} {} {} {:.1}ms",
        line.peer,
        line.method,
        line.path,
        line.status,
        line.latency.as_secs_f64() * 1000.0
    );
}

/// Takes away every access of other users (group and others) from the state directory and
/// everything in it (an existing directory keeps the mode it was made with, and files made
/// under an earlier daemon's umask may be group-readable), and from the task store if it
/// lives elsewhere. The contents of task worktrees are the user's project files and keep
/// their modes; their directory is closed. Refuses to start when something cannot be
/// closed (another user's file), naming the `chmod` to run.
fn make_private(dir: &Path, task_store: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let uid = crate::sys::current_uid();
    // The directory itself may be a symlink the user made; what is in it is not followed.
    let meta = std::fs::metadata(dir)
        .map_err(|e| format!("cannot read the state directory {}: {e}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid {
        return Err(format!(
            "the state directory {} must be a directory owned by this user (uid {uid})",
            dir.display()
        ));
    }
    let refuse = |path: &Path, e: std::io::Error| {
        format!(
            "{} is open to other users and cannot be made private ({e}); run: chmod -R go= {}",
            path.display(),
            dir.display()
        )
    };
    let close = |path: &Path, meta: &std::fs::Metadata| -> Result<(), String> {
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            return Ok(());
        }
        log::warn!(
            "{} was open to other users (mode {:o}); made it private",
            path.display(),
            mode
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))
            .map_err(|e| refuse(path, e))
    };
    close(dir, &meta)?;
    let worktrees = dir.join("worktrees");
    // Bounded: the state directory is the daemon's own, a few levels deep.
    let mut pending = vec![dir.to_path_buf()];
    let mut visited = 0usize;
    while let Some(current) = pending.pop() {
        visited += 1;
        if visited > 10_000 {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                continue;
            }
            close(&path, &meta)?;
            if meta.is_dir() && path != worktrees {
                pending.push(path);
            }
        }
    }
    match std::fs::symlink_metadata(task_store) {
        Ok(meta) if meta.is_file() => close(task_store, &meta),
        _ => Ok(()),
    }
}

/// Takes an exclusive lock on the state directory so two daemons never share one, waiting
/// up to `wait` for it: a daemon that was just
/// killed can leave a child holding it for a moment (one forked but not yet running its
/// program). Blocking is fine here: the loop has not started.
fn lock_state_dir(dir: &Path, wait: std::time::Duration) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("daemon.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let deadline = std::time::Instant::now() + wait;
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                if !said {
                    log::info!(
                        "waiting up to {} for the state directory's lock (state_lock_wait)",
                        humantime::format_duration(wait)
                    );
                    said = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "another orchestra daemon is using the state directory {}",
                    dir.display()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", path.display()));
            }
        }
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

/// Age past which a file in the spawn directory is a leftover. Specs and attach tokens are
/// used within milliseconds of being written; a younger one may belong to a session the
/// previous daemon was creating as it stopped, whose agent has yet to read it (task
/// recovery withdraws or adopts those).
const SPAWN_LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes leftovers from the spawn directory: files older than [`SPAWN_LEFTOVER_AGE`].
fn clean_spawn_dir(dir: &Path) {
    let now = std::time::SystemTime::now();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .is_none_or(|age| age >= SPAWN_LEFTOVER_AGE);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
