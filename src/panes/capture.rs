//! Pane output capture on the event loop: receiving pipes from helpers, reading output into
//! the hub, re-arming pipes (atomically with a screen capture) after a restart, a lost
//! emulator or a dead pipe, and the periodic pipe health check.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mio::Interest;

use super::Panes;
use super::attach;
use super::emulator::EmulatorEvent;
use super::input::InputQueue;
use super::pane::{CaptureState, PaneEvent, Rearm, RearmReason};
use super::seed::{self, Seed};
use crate::ctx::{Ctx, Source, Timer, then};
use crate::net::pane_io::PaneIo;
use crate::tmux::{self, TmuxError};

/// Size of one read (and so the largest live chunk).
pub const READ_CHUNK: usize = 64 * 1024;
/// Quiet time after which a tmux pane whose emulator caught up after a flood is re-seeded
/// exactly from tmux.
const RESEED_QUIET: Duration = Duration::from_millis(250);
/// How often an emulator that fell behind is checked for having drained its queue.
const CATCH_UP_CHECK: Duration = Duration::from_millis(20);
/// Recent output an emulator that fell behind parses again to catch up: several screenfuls.
pub const EMULATOR_CATCH_UP_BYTES: usize = 256 * 1024;

/// How long a pane's bracketed-paste mode must stay unchanged before it is recorded in tmux.
pub const PASTE_PERSIST_DELAY: Duration = Duration::from_secs(1);

/// Milliseconds since the epoch, for `timestamp` fields.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Panes {
    /// Accepts pipe helpers' connections.
    pub fn on_attach_listener(&mut self, ctx: &mut Ctx) {
        while let Some(stream) = crate::net::unix::accept_one(&self.attach_listener, "attach") {
            match attach::receive(&stream) {
                Ok(Some((token, fd))) => self.on_pipe_received(ctx, &token, fd),
                Ok(None) => {
                    ctx.attach_serial += 1;
                    let serial = ctx.attach_serial;
                    match ctx.add_source(Source::Attach { stream, serial }, Interest::READABLE) {
                        Ok(key) => ctx
                            .timers
                            .schedule_in(Duration::from_secs(5), Timer::AttachTimeout(key, serial)),
                        Err(e) => log::warn!("cannot watch a pipe helper: {e}"),
                    }
                }
                Err(e) => log::warn!("pipe helper sent a bad message: {e}"),
            }
        }
    }

    /// A helper whose message arrived after it connected.
    pub fn finish_attach(&mut self, ctx: &mut Ctx, key: usize) {
        let Some(Source::Attach { stream, .. }) = ctx.sources.get(key) else {
            return;
        };
        match attach::receive(stream) {
            Ok(None) => {}
            Ok(Some((token, fd))) => {
                ctx.remove_source(key);
                self.on_pipe_received(ctx, &token, fd);
            }
            Err(e) => {
                log::warn!("pipe helper sent a bad message: {e}");
                ctx.remove_source(key);
            }
        }
    }

    /// A helper that connected never sent its message: drop it.
    pub fn on_attach_timeout(&mut self, ctx: &mut Ctx, key: usize, serial: u64) {
        if matches!(ctx.sources.get(key), Some(Source::Attach { serial: s, .. }) if *s == serial) {
            log::warn!("pipe helper connected but sent nothing; dropped");
            ctx.remove_source(key);
        }
    }

    /// A pane's pipe arrived from a helper.
    fn on_pipe_received(&mut self, ctx: &mut Ctx, token: &str, fd: OwnedFd) {
        let Some(session_id) = self.attach_tokens.remove(token) else {
            // Normal when the session was killed before its pipe arrived.
            log::debug!("a pane pipe arrived for no current session; closed");
            return;
        };
        let Some(pane) = self.by_session.get_mut(&session_id) else {
            // The spawn has not been registered yet; it picks the pipe up.
            self.early_captures.insert(session_id, fd);
            return;
        };
        if let Rearm::InProgress { pipe, .. } = &mut pane.rearm {
            *pipe = Some(fd);
            self.try_complete_rearm(ctx, &session_id);
        } else {
            self.install_pipe(ctx, &session_id, fd);
        }
    }

    /// Opens the output stream of a freshly spawned pane (blank screen at offset 0), and
    /// starts reading a pipe that arrived before the pane registered.
    pub fn open_new_stream(&mut self, ctx: &mut Ctx, session_id: &str) {
        let (rows, cols) = self.get(session_id).map_or((0, 0), |p| p.size());
        let shared = self.hub.open(session_id, 0);
        self.emulators
            .open(session_id, shared, rows, cols, 0, Vec::new());
        if let Some(fd) = self.early_captures.remove(session_id) {
            self.install_pipe(ctx, session_id, fd);
        }
    }

    /// Starts reading a session's pane through `fd`.
    pub fn install_pipe(&mut self, ctx: &mut Ctx, session_id: &str, fd: OwnedFd) {
        let stream = std::os::unix::net::UnixStream::from(fd);
        if let Err(e) = stream.set_nonblocking(true) {
            log::warn!("{session_id}: cannot use the pane pipe: {e}");
            return;
        }
        let stream = PaneIo::Pipe(mio::net::UnixStream::from_std(stream));
        self.install_stream(ctx, session_id, stream);
    }

    /// Starts reading (and typing into) a session's pane through `stream`.
    pub fn install_stream(&mut self, ctx: &mut Ctx, session_id: &str, stream: PaneIo) {
        let Some(pane) = self.by_session.get_mut(session_id) else {
            return;
        };
        if let Some(old) = pane.pipe.take() {
            ctx.remove_source(old);
        }
        let source = Source::PanePipe {
            session_id: session_id.to_string(),
            stream,
        };
        match ctx.add_source(source, Interest::READABLE | Interest::WRITABLE) {
            Ok(key) => {
                if let Some(pane) = self.by_session.get_mut(session_id) {
                    pane.capture = CaptureState::Attached;
                    pane.pipe = Some(key);
                    // A new pipe starts unstalled (a stall named the old one's slot).
                    self.stalled.remove(session_id);
                    pane.input = Some(InputQueue::new(ctx.config.panes.max_input_bytes));
                }
                log::debug!("{session_id}: output capture attached");
                // Output may already be waiting; read it now rather than rely on an edge.
                self.read_output(ctx, key);
                self.type_deferred(ctx, session_id);
            }
            Err(e) => log::warn!("{session_id}: cannot register the pane pipe: {e}"),
        }
    }

    /// A pane pipe (slot `key`) turned ready: write queued input, read output. A pane queued
    /// to be read again (a flood) is read after this turn's other events
    /// ([`Panes::take_revisit`]), so keystrokes and quiet panes never wait behind its read.
    pub fn on_pipe_ready(&mut self, ctx: &mut Ctx, key: usize, writable: bool) {
        if writable {
            self.write_input(ctx, key);
        }
        if !self.read_turns.is_queued(key) {
            self.read_output(ctx, key);
        }
    }

    /// Reads what a pane pipe has, up to its budget ([`super::read_turns`]); a pane that
    /// stops at its budget is read again on the next turn. Returns whether it read anything.
    pub fn read_output(&mut self, ctx: &mut Ctx, key: usize) -> bool {
        let budget = self.read_turns.budget(key, ctx.config.panes.read_budget);
        self.read_output_up_to(ctx, key, budget, true)
    }

    /// Reads everything session `session_id`'s pane has written so far, however much (an
    /// exit is announced only after the agent's last output). Returns whether the pane is
    /// still captured afterwards (its terminal has not reached its end).
    pub fn drain(&mut self, ctx: &mut Ctx, session_id: &str) -> bool {
        if let Some(key) = self.get(session_id).and_then(|p| p.pipe) {
            self.read_output_up_to(ctx, key, usize::MAX, false);
        }
        self.get(session_id).is_some_and(|p| p.pipe.is_some())
    }

    /// Reads up to `budget` bytes of a pane pipe; returns whether it read anything. With
    /// `flow_control`, reading stops (and waits) while a viewer is more than half a backlog
    /// behind ([`Panes::stall`]), and a pipe that flooded this turn is not read again in it
    /// ([`super::read_turns`]).
    fn read_output_up_to(
        &mut self,
        ctx: &mut Ctx,
        key: usize,
        budget: usize,
        flow_control: bool,
    ) -> bool {
        let Some(Source::PanePipe { session_id, .. }) = ctx.sources.get(key) else {
            return false;
        };
        let session_id = session_id.clone();
        if flow_control
            && (self.stalled.contains_key(&session_id) || !self.read_turns.may_read(key))
        {
            return false;
        }
        let mut total = 0;
        let mut closed = false;
        let timestamp = now_millis();
        let mut more = false;
        // Reads are gathered into one chunk (one frame for viewers) until the buffer is full
        // or nothing more is there: a pseudo-terminal gives at most 4 KiB per read, and a
        // frame per read cost every viewer a message per 4 KiB of a flood. Interactive output
        // (one read, then nothing) goes out as soon as it came.
        let mut filled = 0;
        while let Some(Source::PanePipe { stream, .. }) = ctx.sources.get_mut(key) {
            // Never past the budget: a socket (tmux's pipe) gives as much as is asked for.
            let room = (budget - total).min(self.read_buffer.len() - filled);
            // Whether the pipe has nothing more for now (or has ended).
            let drained = match stream.read(&mut self.read_buffer[filled..filled + room]) {
                Ok(0) => {
                    closed = true;
                    true
                }
                Ok(n) => {
                    filled += n;
                    total += n;
                    false
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    true
                }
            };
            if !drained && filled < self.read_buffer.len() && total < budget {
                continue;
            }
            if filled > 0 {
                self.push_read(ctx, &session_id, filled, timestamp);
                filled = 0;
                // Flow control first: a read that fills the budget may also be the one that
                // leaves a viewer too far behind.
                if flow_control && self.hub.holds_back(&session_id) {
                    self.stall(ctx, &session_id, key);
                    break;
                }
            }
            if drained {
                break;
            }
            if total >= budget {
                more = true;
                break;
            }
        }
        if total > 0 {
            self.on_output(ctx, &session_id, total);
        }
        if more {
            // Edge-triggered: data may remain, so come back after other sources.
            self.read_turns.hit_budget(key);
        } else if closed {
            self.pipe_closed(ctx, key);
        }
        total > 0
    }

    /// Pushes the first `filled` bytes of the read buffer as one chunk of output.
    fn push_read(&mut self, ctx: &mut Ctx, session_id: &str, filled: usize, timestamp: u64) {
        let chunk = std::mem::take(&mut self.read_buffer);
        self.push_output(ctx, session_id, &chunk[..filled], timestamp);
        self.read_buffer = chunk;
    }

    /// Stops reading `session_id`'s pane (pipe slot `key`) until its viewers catch up, or for
    /// `panes.max_stall` at most. The agent's output waits in the pipe meanwhile (a pty's
    /// agent is paused by its kernel, as a slow terminal pauses it; tmux buffers it).
    fn stall(&mut self, ctx: &mut Ctx, session_id: &str, key: usize) {
        self.next_stall += 1;
        let serial = self.next_stall;
        self.stalled.insert(session_id.to_string(), (key, serial));
        ctx.metrics.output_stalls += 1;
        log::debug!("{session_id}: a viewer is half a backlog behind; reading waits for it");
        ctx.timers.schedule_in(
            ctx.config.panes.max_stall,
            crate::ctx::Timer::StallEnd(session_id.to_string(), serial),
        );
    }

    /// A stall's time is up: viewers still behind are no longer waited for, and reading goes
    /// on.
    pub fn on_stall_end(&mut self, session_id: &str, serial: u64) {
        if self
            .stalled
            .get(session_id)
            .is_none_or(|(_, s)| *s != serial)
        {
            return;
        }
        let (key, _) = self.stalled.remove(session_id).expect("just seen");
        let cut = self.hub.cut_loose(session_id);
        log::info!(
            "{session_id}: {cut} viewer(s) stayed behind for panes.max_stall; output goes on \
             without waiting for them"
        );
        self.read_turns.read_later(key);
    }

    /// Reads again the panes whose viewers caught up.
    pub(super) fn resume_caught_up(&mut self) {
        if self.stalled.is_empty() {
            return;
        }
        let hub = &self.hub;
        let caught_up: Vec<String> = self
            .stalled
            .keys()
            .filter(|session| !hub.holds_back(session))
            .cloned()
            .collect();
        for session in caught_up {
            if let Some((key, _)) = self.stalled.remove(&session) {
                self.read_turns.read_later(key);
            }
        }
    }

    /// Sends output to viewers (through the hub); the emulator and a pty session's holder
    /// get it once the viewers' frames are written ([`Panes::after_delivery`]).
    fn push_output(&mut self, ctx: &mut Ctx, session_id: &str, bytes: &[u8], timestamp: u64) {
        let Some((offset, chunk)) = self.hub.push(session_id, bytes, timestamp) else {
            return;
        };
        self.forward_to_holder(ctx, session_id, offset, bytes);
        self.for_emulator
            .push((session_id.to_string(), offset, chunk));
    }

    /// What waits until the viewers' frames of this loop turn are written, so that waking
    /// other threads and processes never delays them: output for the emulator (fed as long
    /// as it keeps within a backlog's worth of lag) and for pty holders.
    pub fn after_delivery(&mut self, ctx: &mut Ctx) {
        let limit = ctx.config.panes.backlog_bytes as u64;
        for (session_id, offset, chunk) in std::mem::take(&mut self.for_emulator) {
            if self.get(&session_id).is_none_or(|p| p.emulator_lost) {
                continue;
            }
            let Some(shared) = self.hub.stream(&session_id).map(|s| s.shared.clone()) else {
                continue;
            };
            if !self
                .emulators
                .feed(&session_id, &shared, offset, chunk, limit)
            {
                self.emulator_lost(ctx, &session_id);
            }
        }
        for key in std::mem::take(&mut self.holders_to_flush) {
            super::holder_link::flush_holder(ctx, key);
        }
    }

    /// Output that did not come through the pane's descriptor (a pty holder's gap): to
    /// viewers, the emulator and the activity tracking, like any other.
    pub fn accept_output(&mut self, ctx: &mut Ctx, session_id: &str, bytes: &[u8]) {
        for chunk in bytes.chunks(READ_CHUNK) {
            self.push_output(ctx, session_id, chunk, now_millis());
        }
        if !bytes.is_empty() {
            self.on_output(ctx, session_id, bytes.len());
        }
    }

    /// Output arrived: counters, a pty checkpoint, and the event agents follow.
    fn on_output(&mut self, ctx: &mut Ctx, session_id: &str, bytes: usize) {
        if let Some(pane) = self.by_session.get_mut(session_id) {
            pane.output_bytes += bytes as u64;
            pane.last_output = SystemTime::now();
        }
        self.schedule_checkpoint(ctx, session_id);
        self.announce(PaneEvent::Output {
            session_id: session_id.to_string(),
        });
    }

    /// tmux closed a pane's pipe (or a pty master reached its end).
    fn pipe_closed(&mut self, ctx: &mut Ctx, key: usize) {
        let Some(Source::PanePipe { session_id, .. }) = ctx.remove_source(key) else {
            return;
        };
        self.stalled.remove(&session_id);
        let input = self
            .by_session
            .get_mut(&session_id)
            .filter(|pane| pane.pipe == Some(key))
            .and_then(|pane| {
                pane.pipe = None;
                pane.input.take()
            });
        for ack in input.map(|mut input| input.abandon()).unwrap_or_default() {
            self.input_failed(ctx, &session_id, ack, "the pane's input pipe closed");
        }
        let Some(pane) = self.by_session.get_mut(&session_id) else {
            return;
        };
        let Some(tmux_pane) = pane.tmux_pane.clone() else {
            // A pty session's terminal has no writer left: an exit waiting for the last
            // output can be announced now.
            pane.capture = CaptureState::Detached;
            log::debug!("{session_id}: the pseudo-terminal reached its end");
            self.announce(PaneEvent::TerminalEnded { session_id });
            return;
        };
        if pane.rearm.in_progress() {
            // Expected: re-arming replaced the pipe; the new one takes over.
            self.try_complete_rearm(ctx, &session_id);
            return;
        }
        pane.capture = CaptureState::Detached;
        // Is the pane still there? Re-arm it if so; otherwise it is gone.
        log::info!("{session_id}: output pipe closed by tmux");
        let tmux = ctx.tmux.clone();
        ctx.jobs.run(move || {
            let result = tmux::describe_pane(&tmux_pane)
                .map_err(TmuxError::from)
                .and_then(|l| tmux.run(&l));
            then::<Panes>(move |(panes, ctx)| match result {
                Err(TmuxError::NoServer) => panes.announce(PaneEvent::Vanished {
                    session_id,
                    reason: "the tmux server is gone",
                }),
                Err(TmuxError::PaneNotFound(_)) => panes.announce(PaneEvent::Vanished {
                    session_id,
                    reason: "its tmux pane no longer exists",
                }),
                Ok(output) => {
                    let alive = tmux::parse::parse_pane_line(output.trim_end())
                        .is_some_and(|p| p.state == tmux::PaneState::Alive);
                    if alive {
                        panes.rearm(ctx, &session_id, RearmReason::PipeClosed);
                    }
                }
                Err(error) => log::warn!("{session_id}: cannot check the pane: {error}"),
            })
        });
    }

    /// Re-arms a pane's pipe atomically with a capture of its screen; the new pipe takes over
    /// once the old one has drained. Used after a restart, when the emulator lost track, and
    /// when a pipe died while the pane lives.
    pub fn rearm(&mut self, ctx: &mut Ctx, session_id: &str, reason: RearmReason) {
        let Some(pane) = self.by_session.get_mut(session_id) else {
            return;
        };
        // A pty session's master never needs re-arming: the daemon holds it until the end.
        let Some(tmux_pane) = pane.tmux_pane.clone() else {
            return;
        };
        if pane.rearm.in_progress() || pane.exited {
            return;
        }
        log::info!(
            "{session_id}: re-arming output capture ({})",
            reason.describe()
        );
        pane.rearm = Rearm::InProgress {
            reason,
            seed: None,
            pipe: None,
        };
        pane.rearms += 1;
        if pane.pipe.is_none() {
            pane.capture = CaptureState::Attaching;
        }
        let token = attach::new_token();
        self.attach_tokens
            .insert(token.clone(), session_id.to_string());
        let token_file = attach::token_file(&ctx.config.spawn_dir());
        let command = attach::pipe_command(&ctx.exe, &ctx.config.attach_socket(), &token_file);
        let tmux = ctx.tmux.clone();
        let session_id = session_id.to_string();
        let secret = token.clone();
        ctx.jobs.run(move || {
            let result = attach::write_token_file(&token_file, &secret)
                .map_err(|e| TmuxError::Failed(format!("cannot write the attach token: {e}")))
                .and_then(|()| {
                    seed::seed_command(&tmux_pane, Some(&command)).map_err(TmuxError::from)
                })
                .and_then(|list| tmux.run(&list))
                .and_then(|out| {
                    seed::parse_seed(&out).ok_or_else(|| TmuxError::BadOutput("seed".into()))
                });
            if result.is_err() {
                let _ = std::fs::remove_file(&token_file);
            }
            then::<Panes>(move |(panes, ctx)| match result {
                Ok(seed) => {
                    if let Some(pane) = panes.by_session.get_mut(&session_id)
                        && let Rearm::InProgress { seed: slot, .. } = &mut pane.rearm
                    {
                        *slot = Some(seed);
                    }
                    panes.try_complete_rearm(ctx, &session_id);
                }
                Err(error) => {
                    log::warn!("{session_id}: re-arming capture failed: {error}");
                    panes.attach_tokens.retain(|t, _| t != &token);
                    if let Some(pane) = panes.by_session.get_mut(&session_id) {
                        pane.rearm = Rearm::Idle;
                        if pane.pipe.is_none() {
                            pane.capture = CaptureState::Detached;
                        }
                    }
                }
            })
        });
    }

    /// Finishes a re-arm once the seed is known, the new pipe has arrived and the old pipe
    /// has drained: marks the discontinuity, re-seeds the emulator and resyncs viewers.
    fn try_complete_rearm(&mut self, ctx: &mut Ctx, session_id: &str) {
        let Some(pane) = self.by_session.get_mut(session_id) else {
            return;
        };
        let ready = matches!(
            &pane.rearm,
            Rearm::InProgress {
                seed: Some(_),
                pipe: Some(_),
                ..
            }
        );
        if !ready || pane.pipe.is_some() {
            return;
        }
        let Rearm::InProgress {
            reason,
            seed: Some(seed),
            pipe: Some(fd),
        } = std::mem::take(&mut pane.rearm)
        else {
            unreachable!("checked above");
        };
        pane.rows = seed.rows;
        pane.cols = seed.cols;
        self.reseed(session_id, seed, reason.describe(), reason.is_seamless());
        self.install_pipe(ctx, session_id, fd);
    }

    /// Re-seeds the emulator from `seed` at the stream's head. Unless `seamless`, that head
    /// starts a new stream segment: viewers get a gap notice and a fresh screen.
    pub fn reseed(&mut self, session_id: &str, seed: Seed, reason: &'static str, seamless: bool) {
        let start = match self.hub.stream(session_id) {
            Some(stream) if seamless => stream.backlog.end(),
            Some(_) => self
                .hub
                .discontinuity(session_id, reason)
                .expect("the stream exists"),
            None => {
                self.hub.open(session_id, 0);
                0
            }
        };
        let Some(shared) = self.hub.stream(session_id).map(|s| s.shared.clone()) else {
            return;
        };
        self.emulators
            .open(session_id, shared, seed.rows, seed.cols, start, seed.bytes);
        for request in self.hub.rerequest(session_id) {
            self.emulators.snapshot(session_id, request);
        }
        if let Some(pane) = self.by_session.get_mut(session_id) {
            pane.emulator_lost = false;
            pane.reseed_wanted = false;
        }
    }

    /// Seeds the emulator of a dead pane (after a restart) so viewers see its last screen.
    pub fn seed_dead_pane(&mut self, ctx: &mut Ctx, session_id: &str) {
        let Some(tmux_pane) = self.get(session_id).and_then(|p| p.tmux_pane.clone()) else {
            return;
        };
        let (tmux, session_id) = (ctx.tmux.clone(), session_id.to_string());
        ctx.jobs.run(move || {
            let result = seed::seed_command(&tmux_pane, None)
                .map_err(TmuxError::from)
                .and_then(|l| tmux.run(&l));
            then::<Panes>(move |(panes, _)| {
                if let Some(seed) = result.ok().as_deref().and_then(seed::parse_seed) {
                    panes.reseed(&session_id, seed, "daemon restarted", true);
                }
            })
        });
    }

    /// Handles a report from the emulator thread.
    pub fn on_emulator_event(&mut self, ctx: &mut Ctx, event: EmulatorEvent) {
        match event {
            EmulatorEvent::Snapshot {
                session,
                request,
                snapshot,
            } => {
                log::debug!(
                    "{session}: snapshot {request} at {:?}",
                    snapshot.as_ref().map(|s| s.offset)
                );
                if !self
                    .hub
                    .on_snapshot(request, snapshot.as_ref(), now_millis())
                {
                    self.emulator_lost(ctx, &session);
                }
            }
            EmulatorEvent::Checkpoint { session, snapshot } => {
                self.on_checkpoint(ctx, &session, snapshot)
            }
            EmulatorEvent::PasteMode { session, on } => self.persist_paste_mode(ctx, &session, on),
            EmulatorEvent::Skimmed { session } => self.want_reseed(ctx, &session),
            EmulatorEvent::ScreenText { session, text } => {
                if let Some(text) = text {
                    self.announce(PaneEvent::ScreenText {
                        session_id: session,
                        text,
                    });
                }
            }
        }
    }

    /// The emulator fell behind the backlog (or its screen is no longer replayable): it is
    /// no longer fed, and catches up with the newest output as soon as it has drained what
    /// it has ([`Panes::on_reseed_check`]). Snapshots meanwhile are answered from the screen
    /// it has, followed by the backlog.
    fn emulator_lost(&mut self, ctx: &mut Ctx, session_id: &str) {
        let Some(pane) = self.by_session.get_mut(session_id) else {
            return;
        };
        if pane.emulator_lost {
            return;
        }
        pane.emulator_lost = true;
        log::info!("{session_id}: terminal state fell behind the output; catching up");
        ctx.timers
            .schedule_in(CATCH_UP_CHECK, Timer::ReseedCheck(session_id.to_string()));
    }

    /// Skips the emulator ahead to the newest [`EMULATOR_CATCH_UP_BYTES`] of the backlog and
    /// asks it again for the screens viewers wait for.
    fn emulator_catch_up(&mut self, ctx: &mut Ctx, session_id: &str) {
        let Some(stream) = self.hub.stream(session_id) else {
            return;
        };
        let chunks = stream.backlog.tail(EMULATOR_CATCH_UP_BYTES);
        let from = chunks
            .first()
            .map_or(stream.backlog.end(), |(offset, _)| *offset);
        self.emulators.catch_up(session_id, from, chunks);
        for request in self.hub.rerequest(session_id) {
            self.emulators.snapshot(session_id, request);
        }
        if let Some(pane) = self.by_session.get_mut(session_id) {
            pane.emulator_lost = false;
        }
        self.want_reseed(ctx, session_id);
    }

    /// The emulator's screen may be inexact (it caught up, or skimmed a flood): a tmux
    /// pane's screen is made exact from tmux once output is quiet.
    fn want_reseed(&mut self, ctx: &mut Ctx, session_id: &str) {
        if let Some(pane) = self.by_session.get_mut(session_id)
            && pane.tmux_pane.is_some()
            && !pane.reseed_wanted
        {
            pane.reseed_wanted = true;
            ctx.timers
                .schedule_in(RESEED_QUIET, Timer::ReseedCheck(session_id.to_string()));
        }
    }

    /// Re-seeds a lost emulator once the pane has been quiet for a moment.
    pub fn on_reseed_check(&mut self, ctx: &mut Ctx, session_id: &str) {
        let Some(pane) = self.by_session.get(session_id) else {
            return;
        };
        if pane.emulator_lost {
            // Catch up once the emulator has worked through most of what it was handed.
            let lag = self.hub.stream(session_id).map_or(0, |s| s.shared.lag());
            if lag > (ctx.config.panes.backlog_bytes / 2) as u64 {
                ctx.timers
                    .schedule_in(CATCH_UP_CHECK, Timer::ReseedCheck(session_id.to_string()));
            } else {
                self.emulator_catch_up(ctx, session_id);
            }
            return;
        }
        if !pane.reseed_wanted {
            return;
        }
        let quiet = SystemTime::now()
            .duration_since(pane.last_output)
            .unwrap_or_default();
        // A pane whose reading waits for a viewer is not quiet: its output waits in the
        // pipe (and a re-arm would hand its reading to a new pipe that waits for no one).
        let stalled = self.stalled.contains_key(session_id);
        if pane.exited {
            self.seed_dead_pane(ctx, session_id);
        } else if quiet >= RESEED_QUIET && !stalled {
            self.rearm(ctx, session_id, RearmReason::EmulatorBehind);
        } else if stalled {
            ctx.timers
                .schedule_in(RESEED_QUIET, Timer::ReseedCheck(session_id.to_string()));
        } else {
            ctx.timers.schedule_in(
                RESEED_QUIET - quiet,
                Timer::ReseedCheck(session_id.to_string()),
            );
        }
    }

    /// The pane's bracketed-paste mode changed: record it in tmux (so a restarted daemon
    /// knows it) once it has been stable for [`PASTE_PERSIST_DELAY`]. Shells switch the mode
    /// around every prompt, and this keeps that from costing a tmux process each time.
    fn persist_paste_mode(&mut self, ctx: &mut Ctx, session_id: &str, on: bool) {
        let Some(pane) = self.by_session.get_mut(session_id) else {
            return;
        };
        pane.paste_mode = Some(on);
        if !pane.paste_persist_pending {
            pane.paste_persist_pending = true;
            ctx.timers.schedule_in(
                PASTE_PERSIST_DELAY,
                Timer::PersistPasteMode(session_id.to_string()),
            );
        }
    }

    /// The paste-mode timer fell due: write the mode to tmux if it differs from what is there.
    pub fn on_persist_paste_mode(&mut self, ctx: &mut Ctx, session_id: &str) {
        let Some(pane) = self.by_session.get_mut(session_id) else {
            return;
        };
        pane.paste_persist_pending = false;
        if pane.tmux_pane.is_none() {
            // A pty session keeps its modes in the checkpoints it leaves with its holder.
            return;
        }
        let Some(on) = pane
            .paste_mode
            .filter(|on| pane.paste_persisted != Some(*on))
        else {
            return;
        };
        pane.paste_persisted = Some(on);
        let (tmux, name) = (ctx.tmux.clone(), pane.tmux_session.clone());
        ctx.jobs.run(move || {
            let result = tmux::CommandList::new()
                .command("set-option")
                .arg("-t")
                .and_then(|l| l.arg(name.target()))
                .and_then(|l| l.arg(seed::PASTE_OPTION))
                .and_then(|l| l.arg(if on { "1" } else { "0" }))
                .map_err(TmuxError::from)
                .and_then(|l| tmux.run(&l));
            then::<Panes>(move |(_, _)| {
                if let Err(e) = result {
                    log::debug!("{name}: cannot record the paste mode: {e}");
                }
            })
        });
    }

    /// Compares every live pane's activity in tmux with what its pipe delivered, and
    /// re-arms pipes that stopped delivering or are missing. Panes tmux no longer has are
    /// announced as [`PaneEvent::Vanished`].
    pub fn check_capture_health(&mut self, ctx: &mut Ctx) {
        ctx.timers
            .schedule_in(ctx.config.panes.health_interval, Timer::CaptureHealth);
        if self.by_session.is_empty() {
            return;
        }
        let tmux = ctx.tmux.clone();
        let listed_at = std::time::Instant::now();
        ctx.jobs.run(move || {
            let panes = tmux::list_panes()
                .map_err(TmuxError::from)
                .and_then(|l| tmux.run(&l));
            then::<Panes>(move |(panes_part, ctx)| {
                let output = match panes {
                    Ok(output) => output,
                    Err(TmuxError::NoServer) => String::new(),
                    Err(_) => return,
                };
                panes_part.compare_with_tmux(ctx, &tmux::parse::parse_panes(&output), listed_at);
            })
        });
    }

    /// The health check's verdict on tmux's list of panes, taken at `listed_at`.
    fn compare_with_tmux(
        &mut self,
        ctx: &mut Ctx,
        listed: &[tmux::parse::PaneInfo],
        listed_at: std::time::Instant,
    ) {
        // Panes registered before the listing began must be in it; the others are gone
        // (the tmux server died, or someone killed them behind our back). By pane and
        // session: a new server reuses pane ids. Panes of the pty backend are not tmux's.
        let in_tmux: std::collections::HashSet<_> = listed
            .iter()
            .filter_map(|l| Some((&l.pane, l.session.as_ref()?)))
            .collect();
        let mut gone: Vec<String> = self
            .by_session
            .iter()
            .filter(|(_, p)| p.registered < listed_at)
            .filter(|(_, p)| {
                p.tmux_pane
                    .as_ref()
                    .is_some_and(|pane| !in_tmux.contains(&(pane, &p.tmux_session)))
            })
            .map(|(id, _)| id.clone())
            .collect();
        gone.sort();
        let by_pane: std::collections::HashMap<_, _> = self
            .by_session
            .iter()
            .filter_map(|(id, p)| Some(((p.tmux_pane.as_ref()?, &p.tmux_session), (id, p))))
            .collect();
        let mut stalled = Vec::new();
        for listed in listed {
            let Some(&(session_id, pane)) = listed
                .session
                .as_ref()
                .and_then(|session| by_pane.get(&(&listed.pane, session)))
            else {
                continue;
            };
            if pane.exited || pane.rearm.in_progress() || listed.state != tmux::PaneState::Alive {
                continue;
            }
            let ours = pane
                .last_output
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let missing = pane.capture == CaptureState::Detached;
            // A pane whose reading waits for a viewer (flow control) is silent on purpose.
            let silent = pane.capture == CaptureState::Attached
                && listed.activity > ours + 2
                && !self.stalled.contains_key(session_id.as_str());
            if missing || silent {
                stalled.push((session_id.clone(), missing));
            }
        }
        for (session_id, missing) in stalled {
            log::warn!(
                "{session_id}: output pipe {} while the pane is alive",
                if missing {
                    "is missing"
                } else {
                    "stopped delivering"
                }
            );
            self.rearm(ctx, &session_id, RearmReason::PipeStalled);
        }
        for session_id in gone {
            self.announce(PaneEvent::Vanished {
                session_id,
                reason: "tmux no longer has it",
            });
        }
    }
}
