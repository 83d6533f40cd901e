//! Pane output capture on the event loop: receiving pipes from helpers, reading output into
//! the hub, re-arming pipes (atomically with a screen capture) after a restart, a lost
//! emulator or a dead pipe, and the periodic pipe health check.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mio::Interest;

use super::attach;
use super::emulator::EmulatorEvent;
use super::input::InputQueue;
use super::pane_io::PaneIo;
use super::seed::{self, Seed};
use crate::agents::{CaptureState, Rearm, RearmReason, manager};
use crate::daemon::{Daemon, Source, Timer};
use crate::tmux::{self, TmuxError};

/// Bytes read from a pane per readiness event before other sources get a turn.
const READ_BUDGET: usize = 1 << 20;
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

impl Daemon {
    /// Accepts pipe helpers' connections.
    pub fn on_attach_listener(&mut self) {
        loop {
            match self.panes.attach_listener.accept() {
                Ok((stream, _)) => match attach::receive(&stream) {
                    Ok(Some((token, fd))) => self.on_pipe_received(&token, fd),
                    Ok(None) => {
                        self.ctx.attach_serial += 1;
                        let serial = self.ctx.attach_serial;
                        match self
                            .ctx
                            .add_source(Source::Attach { stream, serial }, Interest::READABLE)
                        {
                            Ok(key) => self.ctx.timers.schedule_in(
                                Duration::from_secs(5),
                                Timer::AttachTimeout(key, serial),
                            ),
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

    /// A helper whose message arrived after it connected.
    pub fn finish_attach(&mut self, key: usize) {
        let Some(Source::Attach { stream, .. }) = self.ctx.sources.get(key) else {
            return;
        };
        match attach::receive(stream) {
            Ok(None) => {}
            Ok(Some((token, fd))) => {
                self.ctx.remove_source(key);
                self.on_pipe_received(&token, fd);
            }
            Err(e) => {
                log::warn!("pipe helper sent a bad message: {e}");
                self.ctx.remove_source(key);
            }
        }
    }

    /// A pane's pipe arrived from a helper.
    fn on_pipe_received(&mut self, token: &str, fd: OwnedFd) {
        let Some(session_id) = self.panes.attach_tokens.remove(token) else {
            // Normal when the session was killed before its pipe arrived.
            log::debug!("a pane pipe arrived for no current session; closed");
            return;
        };
        let Some(agent) = self.agents.get_mut(&session_id) else {
            // The spawn has not been registered yet; it picks the pipe up.
            self.panes.early_captures.insert(session_id, fd);
            return;
        };
        if let Rearm::InProgress { pipe, .. } = &mut agent.rearm {
            *pipe = Some(fd);
            self.try_complete_rearm(&session_id);
        } else {
            self.install_pipe(&session_id, fd);
        }
    }

    /// Opens the output stream of a freshly spawned pane (blank screen at offset 0).
    pub fn open_new_stream(&mut self, session_id: &str, rows: u16, cols: u16) {
        let shared = self.panes.hub.open(session_id, 0);
        self.panes
            .emulators
            .open(session_id, shared, rows, cols, 0, Vec::new());
    }

    /// Starts reading a session's pane through `fd`.
    pub fn install_pipe(&mut self, session_id: &str, fd: OwnedFd) {
        let stream = std::os::unix::net::UnixStream::from(fd);
        if let Err(e) = stream.set_nonblocking(true) {
            log::warn!("{session_id}: cannot use the pane pipe: {e}");
            return;
        }
        let stream = PaneIo::Pipe(mio::net::UnixStream::from_std(stream));
        self.install_stream(session_id, stream);
    }

    /// Starts reading (and typing into) a session's pane through `stream`.
    pub fn install_stream(&mut self, session_id: &str, stream: PaneIo) {
        let Some(agent) = self.agents.get_mut(session_id) else {
            return;
        };
        let old = agent.pipe.take();
        if let Some(old) = old {
            self.ctx.remove_source(old);
        }
        let source = Source::PanePipe {
            session_id: session_id.to_string(),
            stream,
            input: InputQueue::new(self.ctx.config.panes.max_input_bytes),
        };
        match self
            .ctx
            .add_source(source, Interest::READABLE | Interest::WRITABLE)
        {
            Ok(key) => {
                if let Some(agent) = self.agents.get_mut(session_id) {
                    agent.capture = CaptureState::Attached;
                    agent.pipe = Some(key);
                }
                log::debug!("{session_id}: output capture attached");
                // Output may already be waiting; read it now rather than rely on an edge.
                self.read_pane_output(key);
                self.type_deferred(session_id);
            }
            Err(e) => log::warn!("{session_id}: cannot register the pane pipe: {e}"),
        }
    }

    /// Reads what a pane pipe has (up to a budget; the rest on the next turn).
    pub fn read_pane_output(&mut self, key: usize) {
        self.read_pane_output_up_to(key, READ_BUDGET);
    }

    /// Reads everything a pane has written so far, however much (an exit is announced
    /// only after the agent's last output).
    pub fn drain_pane_output(&mut self, key: usize) {
        self.read_pane_output_up_to(key, usize::MAX);
    }

    fn read_pane_output_up_to(&mut self, key: usize, budget: usize) {
        let Some(Source::PanePipe { session_id, .. }) = self.ctx.sources.get(key) else {
            return;
        };
        let session_id = session_id.clone();
        let mut total = 0;
        let mut closed = false;
        let timestamp = now_millis();
        let mut more = false;
        while let Some(Source::PanePipe { stream, .. }) = self.ctx.sources.get_mut(key) {
            let n = match stream.read(&mut self.panes.read_buffer[..]) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            };
            let chunk = std::mem::take(&mut self.panes.read_buffer);
            self.push_output(&session_id, &chunk[..n], timestamp);
            self.panes.read_buffer = chunk;
            self.on_output(&session_id, n);
            total += n;
            if total >= budget {
                more = true;
                break;
            }
        }
        if more {
            // Edge-triggered: data may remain, so come back after other sources.
            self.panes.revisit.push(key);
        } else if closed {
            self.pipe_closed(key);
        }
    }

    /// Sends output to viewers (through the hub); the emulator and a pty session's holder
    /// get it once the viewers' frames are written ([`Daemon::after_delivery`]).
    fn push_output(&mut self, session_id: &str, bytes: &[u8], timestamp: u64) {
        let Some((offset, chunk)) = self.panes.hub.push(session_id, bytes, timestamp) else {
            return;
        };
        crate::agents::pty_session::forward_output(self, session_id, offset, bytes);
        self.panes
            .for_emulator
            .push((session_id.to_string(), offset, chunk));
    }

    /// What waits until the viewers' frames of this loop turn are written, so that waking
    /// other threads and processes never delays them: output for the emulator (fed as long
    /// as it keeps within a backlog's worth of lag) and for pty holders.
    pub fn after_delivery(&mut self) {
        let limit = self.ctx.config.panes.backlog_bytes as u64;
        for (session_id, offset, chunk) in std::mem::take(&mut self.panes.for_emulator) {
            if self.agents.get(&session_id).is_none_or(|a| a.emulator_lost) {
                continue;
            }
            let Some(shared) = self.panes.hub.stream(&session_id).map(|s| s.shared.clone()) else {
                continue;
            };
            if !self
                .panes
                .emulators
                .feed(&session_id, &shared, offset, chunk, limit)
            {
                self.emulator_lost(&session_id);
            }
        }
        for key in std::mem::take(&mut self.panes.holders_to_flush) {
            crate::agents::pty_session::flush_holder(self, key);
        }
    }

    /// Output that did not come through the pane's descriptor (a pty holder's gap): to
    /// viewers, the emulator and the activity tracking, like any other.
    pub fn accept_output(&mut self, session_id: &str, bytes: &[u8]) {
        for chunk in bytes.chunks(READ_CHUNK) {
            self.push_output(session_id, chunk, now_millis());
            self.on_output(session_id, chunk.len());
        }
    }

    /// Output arrived: activity, counters and the `running` transition.
    fn on_output(&mut self, session_id: &str, bytes: usize) {
        if let Some(agent) = self.agents.get_mut(session_id) {
            let now = SystemTime::now();
            agent.output_bytes += bytes as u64;
            agent.last_activity = now;
            agent.activity.on_output(now);
        }
        self.refresh_status(session_id);
        self.schedule_idle_check(session_id);
        self.schedule_screen_check(session_id);
        crate::agents::pty_session::schedule_checkpoint(self, session_id);
    }

    /// tmux closed a pane's pipe.
    fn pipe_closed(&mut self, key: usize) {
        let Some(Source::PanePipe {
            session_id,
            mut input,
            ..
        }) = self.ctx.remove_source(key)
        else {
            return;
        };
        for ack in input.abandon() {
            self.input_failed(&session_id, ack, "the pane's input pipe closed");
        }
        let Some(agent) = self.agents.get_mut(&session_id) else {
            return;
        };
        if agent.pipe == Some(key) {
            agent.pipe = None;
        }
        if agent.backend.pane().is_none() {
            // A pty session's terminal has no writer left: an exit waiting for the last
            // output can be announced now.
            agent.capture = CaptureState::Detached;
            crate::agents::pty_session::output_ended(self, &session_id);
            return;
        }
        if agent.rearm.in_progress() {
            // Expected: re-arming replaced the pipe; the new one takes over.
            self.try_complete_rearm(&session_id);
        } else {
            agent.capture = CaptureState::Detached;
            manager::on_capture_closed(self, &session_id);
        }
    }

    /// Re-arms a pane's pipe atomically with a capture of its screen; the new pipe takes over
    /// once the old one has drained. Used after a restart, when the emulator lost track, and
    /// when a pipe died while the pane lives.
    pub fn rearm(&mut self, session_id: &str, reason: RearmReason) {
        let Some(agent) = self.agents.get_mut(session_id) else {
            return;
        };
        // A pty session's master never needs re-arming: the daemon holds it until the end.
        if agent.rearm.in_progress() || agent.exit.is_some() || agent.backend.pane().is_none() {
            return;
        }
        log::info!(
            "{session_id}: re-arming output capture ({})",
            reason.describe()
        );
        agent.rearm = Rearm::InProgress {
            reason,
            seed: None,
            pipe: None,
        };
        agent.rearms += 1;
        if agent.pipe.is_none() {
            agent.capture = CaptureState::Attaching;
        }
        let token = attach::new_token();
        self.panes
            .attach_tokens
            .insert(token.clone(), session_id.to_string());
        let token_file = attach::token_file(&self.ctx.config.spawn_dir());
        let command =
            attach::pipe_command(&self.ctx.exe, &self.ctx.config.attach_socket(), &token_file);
        let Some(pane) = agent.backend.pane().cloned() else {
            unreachable!("only tmux panes are re-armed");
        };
        let tmux = self.ctx.tmux.clone();
        let session_id = session_id.to_string();
        let secret = token.clone();
        self.ctx.jobs.run(move || {
            let result = attach::write_token_file(&token_file, &secret)
                .map_err(|e| TmuxError::Failed(format!("cannot write the attach token: {e}")))
                .and_then(|()| seed::seed_command(&pane, Some(&command)).map_err(TmuxError::from))
                .and_then(|list| tmux.run(&list))
                .and_then(|out| {
                    seed::parse_seed(&out).ok_or_else(|| TmuxError::BadOutput("seed".into()))
                });
            if result.is_err() {
                let _ = std::fs::remove_file(&token_file);
            }
            Box::new(move |daemon: &mut Daemon| match result {
                Ok(seed) => {
                    if let Some(agent) = daemon.agents.get_mut(&session_id)
                        && let Rearm::InProgress { seed: slot, .. } = &mut agent.rearm
                    {
                        *slot = Some(seed);
                    }
                    daemon.try_complete_rearm(&session_id);
                }
                Err(error) => {
                    log::warn!("{session_id}: re-arming capture failed: {error}");
                    daemon.panes.attach_tokens.retain(|t, _| t != &token);
                    if let Some(agent) = daemon.agents.get_mut(&session_id) {
                        agent.rearm = Rearm::Idle;
                        if agent.pipe.is_none() {
                            agent.capture = CaptureState::Detached;
                        }
                    }
                }
            })
        });
    }

    /// Finishes a re-arm once the seed is known, the new pipe has arrived and the old pipe
    /// has drained: marks the discontinuity, re-seeds the emulator and resyncs viewers.
    fn try_complete_rearm(&mut self, session_id: &str) {
        let Some(agent) = self.agents.get_mut(session_id) else {
            return;
        };
        let ready = matches!(
            &agent.rearm,
            Rearm::InProgress {
                seed: Some(_),
                pipe: Some(_),
                ..
            }
        );
        if !ready || agent.pipe.is_some() {
            return;
        }
        let Rearm::InProgress {
            reason,
            seed: Some(seed),
            pipe: Some(fd),
        } = std::mem::take(&mut agent.rearm)
        else {
            unreachable!("checked above");
        };
        agent.rows = seed.rows;
        agent.cols = seed.cols;
        self.reseed(session_id, seed, reason.describe(), reason.is_seamless());
        self.install_pipe(session_id, fd);
    }

    /// Re-seeds the emulator from `seed` at the stream's head. Unless `seamless`, that head
    /// starts a new stream segment: viewers get a gap notice and a fresh screen.
    pub fn reseed(&mut self, session_id: &str, seed: Seed, reason: &'static str, seamless: bool) {
        let start = match self.panes.hub.stream(session_id) {
            Some(stream) if seamless => stream.backlog.end(),
            Some(_) => self
                .panes
                .hub
                .discontinuity(session_id, reason)
                .expect("the stream exists"),
            None => {
                self.panes.hub.open(session_id, 0);
                0
            }
        };
        let Some(shared) = self.panes.hub.stream(session_id).map(|s| s.shared.clone()) else {
            return;
        };
        self.panes
            .emulators
            .open(session_id, shared, seed.rows, seed.cols, start, seed.bytes);
        for request in self.panes.hub.rerequest(session_id) {
            self.panes.emulators.snapshot(session_id, request);
        }
        if let Some(agent) = self.agents.get_mut(session_id) {
            agent.emulator_lost = false;
            agent.reseed_wanted = false;
        }
    }

    /// Seeds the emulator of a dead pane (after a restart) so viewers see its last screen.
    pub fn seed_dead_pane(&mut self, session_id: &str) {
        let Some(agent) = self.agents.get(session_id) else {
            return;
        };
        let Some(pane) = agent.backend.pane().cloned() else {
            return;
        };
        let (tmux, session_id) = (self.ctx.tmux.clone(), session_id.to_string());
        self.ctx.jobs.run(move || {
            let result = seed::seed_command(&pane, None)
                .map_err(TmuxError::from)
                .and_then(|l| tmux.run(&l));
            Box::new(move |daemon: &mut Daemon| {
                if let Some(seed) = result.ok().as_deref().and_then(seed::parse_seed) {
                    daemon.reseed(&session_id, seed, "daemon restarted", true);
                }
            })
        });
    }

    /// Handles a report from the emulator thread.
    pub fn on_emulator_event(&mut self, event: EmulatorEvent) {
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
                    .panes
                    .hub
                    .on_snapshot(request, snapshot.as_ref(), now_millis())
                {
                    self.emulator_lost(&session);
                }
            }
            EmulatorEvent::Checkpoint { session, snapshot } => {
                crate::agents::pty_session::on_checkpoint(self, &session, snapshot)
            }
            EmulatorEvent::PasteMode { session, on } => self.persist_paste_mode(&session, on),
            EmulatorEvent::ScreenText { session, text } => {
                if let Some(text) = text {
                    self.on_screen_text(&session, &text);
                }
            }
        }
    }

    /// The emulator fell behind the backlog (or its screen is no longer replayable): it is
    /// no longer fed, and catches up with the newest output as soon as it has drained what
    /// it has ([`Daemon::on_reseed_check`]). Snapshots meanwhile are answered from the screen
    /// it has, followed by the backlog.
    fn emulator_lost(&mut self, session_id: &str) {
        let Some(agent) = self.agents.get_mut(session_id) else {
            return;
        };
        if agent.emulator_lost {
            return;
        }
        agent.emulator_lost = true;
        log::info!("{session_id}: terminal state fell behind the output; catching up");
        self.ctx
            .timers
            .schedule_in(CATCH_UP_CHECK, Timer::ReseedCheck(session_id.to_string()));
    }

    /// Skips the emulator ahead to the newest [`EMULATOR_CATCH_UP_BYTES`] of the backlog and
    /// asks it again for the screens viewers wait for.
    fn emulator_catch_up(&mut self, session_id: &str) {
        let Some(stream) = self.panes.hub.stream(session_id) else {
            return;
        };
        let chunks = stream.backlog.tail(EMULATOR_CATCH_UP_BYTES);
        let from = chunks
            .first()
            .map_or(stream.backlog.end(), |(offset, _)| *offset);
        self.panes.emulators.catch_up(session_id, from, chunks);
        for request in self.panes.hub.rerequest(session_id) {
            self.panes.emulators.snapshot(session_id, request);
        }
        if let Some(agent) = self.agents.get_mut(session_id) {
            agent.emulator_lost = false;
            // A tmux pane's screen is then made exact from tmux once output is quiet.
            if agent.backend.pane().is_some() && !agent.reseed_wanted {
                agent.reseed_wanted = true;
                self.ctx
                    .timers
                    .schedule_in(RESEED_QUIET, Timer::ReseedCheck(session_id.to_string()));
            }
        }
    }

    /// Re-seeds a lost emulator once the pane has been quiet for a moment.
    pub fn on_reseed_check(&mut self, session_id: &str) {
        let Some(agent) = self.agents.get(session_id) else {
            return;
        };
        if agent.emulator_lost {
            // Catch up once the emulator has worked through most of what it was handed.
            let lag = self
                .panes
                .hub
                .stream(session_id)
                .map_or(0, |s| s.shared.lag());
            if lag > (self.ctx.config.panes.backlog_bytes / 2) as u64 {
                self.ctx
                    .timers
                    .schedule_in(CATCH_UP_CHECK, Timer::ReseedCheck(session_id.to_string()));
            } else {
                self.emulator_catch_up(session_id);
            }
            return;
        }
        if !agent.reseed_wanted {
            return;
        }
        let quiet = SystemTime::now()
            .duration_since(agent.last_activity)
            .unwrap_or_default();
        if agent.exit.is_some() {
            self.seed_dead_pane(session_id);
        } else if quiet >= RESEED_QUIET {
            self.rearm(session_id, RearmReason::EmulatorBehind);
        } else {
            self.ctx.timers.schedule_in(
                RESEED_QUIET - quiet,
                Timer::ReseedCheck(session_id.to_string()),
            );
        }
    }

    /// The pane's bracketed-paste mode changed: record it in tmux (so a restarted daemon
    /// knows it) once it has been stable for [`PASTE_PERSIST_DELAY`]. Shells switch the mode
    /// around every prompt, and this keeps that from costing a tmux process each time.
    fn persist_paste_mode(&mut self, session_id: &str, on: bool) {
        let Some(agent) = self.agents.get_mut(session_id) else {
            return;
        };
        agent.paste_mode = Some(on);
        if !agent.paste_persist_pending {
            agent.paste_persist_pending = true;
            self.ctx.timers.schedule_in(
                PASTE_PERSIST_DELAY,
                Timer::PersistPasteMode(session_id.to_string()),
            );
        }
    }

    /// The paste-mode timer fell due: write the mode to tmux if it differs from what is there.
    pub fn on_persist_paste_mode(&mut self, session_id: &str) {
        let Some(agent) = self.agents.get_mut(session_id) else {
            return;
        };
        agent.paste_persist_pending = false;
        if agent.backend.pane().is_none() {
            // A pty session keeps its modes in the checkpoints it leaves with its holder.
            return;
        }
        let Some(on) = agent
            .paste_mode
            .filter(|on| agent.paste_persisted != Some(*on))
        else {
            return;
        };
        agent.paste_persisted = Some(on);
        let (tmux, name) = (self.ctx.tmux.clone(), agent.tmux_session.clone());
        self.ctx.jobs.run(move || {
            let result = tmux::CommandList::new()
                .command("set-option")
                .arg("-t")
                .and_then(|l| l.arg(name.target()))
                .and_then(|l| l.arg(seed::PASTE_OPTION))
                .and_then(|l| l.arg(if on { "1" } else { "0" }))
                .map_err(TmuxError::from)
                .and_then(|l| tmux.run(&l));
            Box::new(move |_: &mut Daemon| {
                if let Err(e) = result {
                    log::debug!("{name}: cannot record the paste mode: {e}");
                }
            })
        });
    }

    /// Compares every live pane's activity in tmux with what its pipe delivered, and
    /// re-arms pipes that stopped delivering or are missing.
    pub fn check_capture_health(&mut self) {
        self.ctx
            .timers
            .schedule_in(self.ctx.config.panes.health_interval, Timer::CaptureHealth);
        if self.agents.is_empty() {
            return;
        }
        let tmux = self.ctx.tmux.clone();
        let listed_at = std::time::Instant::now();
        self.ctx.jobs.run(move || {
            let panes = tmux::list_panes()
                .map_err(TmuxError::from)
                .and_then(|l| tmux.run(&l));
            Box::new(move |daemon: &mut Daemon| {
                let output = match panes {
                    Ok(output) => output,
                    Err(TmuxError::NoServer) => String::new(),
                    Err(_) => return,
                };
                let listed = tmux::parse::parse_panes(&output);
                // Sessions registered before the listing began must be in it; the others
                // are gone (the tmux server died, or someone killed them behind our back).
                let gone: Vec<String> = daemon
                    .agents
                    .sorted()
                    .into_iter()
                    .filter(|a| a.registered < listed_at)
                    .filter(|a| {
                        // By pane and session: a new server reuses pane ids. Sessions of
                        // the pty backend are not tmux's to list.
                        a.backend.pane().is_some_and(|pane| {
                            !listed.iter().any(|p| {
                                &p.pane == pane && p.session.as_ref() == Some(&a.tmux_session)
                            })
                        })
                    })
                    .map(|a| a.id.clone())
                    .collect();
                for session_id in gone {
                    crate::agents::manager::session_vanished(
                        daemon,
                        &session_id,
                        "tmux no longer has it",
                    );
                }
                let by_pane: std::collections::HashMap<_, _> = daemon
                    .agents
                    .sorted()
                    .into_iter()
                    .filter_map(|a| Some((a.backend.pane()?.clone(), a)))
                    .collect();
                let mut stalled = Vec::new();
                for pane in listed {
                    let Some(agent) = by_pane.get(&pane.pane) else {
                        continue;
                    };
                    if agent.exit.is_some()
                        || agent.rearm.in_progress()
                        || pane.state != tmux::PaneState::Alive
                    {
                        continue;
                    }
                    let ours = agent
                        .last_activity
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let missing = agent.capture == CaptureState::Detached;
                    let silent =
                        agent.capture == CaptureState::Attached && pane.activity > ours + 2;
                    if missing || silent {
                        stalled.push((agent.id.clone(), missing));
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
                    daemon.rearm(&session_id, RearmReason::PipeStalled);
                }
            })
        });
    }
}
