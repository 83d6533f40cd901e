//! The output and input path of agent panes.
//!
//! A `pty` session skips tmux: its pseudo-terminal master is read and written directly
//! ([`crate::net::pane_io`]). Otherwise: pane → tmux `pipe-pane -I -O` socketpair → [`attach`] (descriptor passing) → [`capture`]
//! (read on the event loop) → [`hub`] (backlog + frames encoded once, per-viewer cursors) →
//! each connection's queue → socket. The [`emulator`] thread keeps each pane's screen from the
//! backlog for snapshots; [`seed`] re-seeds it from tmux when capture is re-armed. Input goes
//! the other way through the same socket ([`typing`], [`input`]). [`utf8`], [`backlog`] and
//! [`text`] (output as plain text) are the pure pieces.

pub mod attach;
pub mod backlog;
pub mod capture;
pub mod emulator;
pub mod holder_link;
pub mod hub;
pub mod input;
pub mod pane;
pub mod pane_text;
pub mod read_turns;
pub mod seed;
pub mod skim;
pub mod text;
pub mod typing;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::ctx;

/// The panes' state: output streams and their viewers, the emulator thread, typing, and pane
/// pipes on their way in.
pub struct Panes {
    /// Pane output streams and their viewers.
    hub: hub::Hub,
    /// The terminal-emulator thread.
    emulators: emulator::Emulators,
    /// Typing state per session.
    typists: HashMap<String, typing::Typist>,
    /// Listener on which pipe helpers hand over pane pipes.
    attach_listener: mio::net::UnixListener,
    /// Attach tokens handed to tmux, by token: the session each one belongs to.
    attach_tokens: HashMap<String, String>,
    /// Pipes that arrived before their session finished registering, by session id.
    early_captures: HashMap<String, OwnedFd>,
    /// Which pane pipes flood, which are queued to be read again, and what each may read.
    read_turns: read_turns::ReadTurns,
    /// Panes whose reading waits for a viewer that fell behind: session → (pipe slot, stall
    /// serial). Read again once it catches up, or after `panes.max_stall`.
    stalled: HashMap<String, (usize, u64)>,
    /// Stall serials (a stall's deadline ends only that stall).
    next_stall: u64,
    /// The buffer pane output is read into (one for all panes: reads never overlap).
    read_buffer: Vec<u8>,
    /// Output read this loop turn, for the emulator once viewers have theirs.
    for_emulator: Vec<(String, u64, Arc<[u8]>)>,
    /// Holder connections with forwarded output queued this loop turn.
    holders_to_flush: Vec<usize>,
    /// Each registered session's pane.
    by_session: HashMap<String, pane::Pane>,
    /// What happened since the loop last looked, oldest first.
    events: Vec<pane::PaneEvent>,
}

impl Panes {
    /// No panes yet; `emulators` is the started emulator thread.
    pub fn new(
        config: &crate::config::Config,
        emulators: emulator::Emulators,
        attach_listener: mio::net::UnixListener,
    ) -> Panes {
        Panes {
            hub: hub::Hub::new(hub::HubLimits::from_config(config)),
            emulators,
            typists: HashMap::new(),
            attach_listener,
            attach_tokens: HashMap::new(),
            early_captures: HashMap::new(),
            read_turns: read_turns::ReadTurns::default(),
            stalled: HashMap::new(),
            next_stall: 0,
            read_buffer: vec![0; capture::READ_CHUNK],
            for_emulator: Vec::new(),
            holders_to_flush: Vec::new(),
            by_session: HashMap::new(),
            events: Vec::new(),
        }
    }

    /// Registers session `session_id`'s pane. Its stream is opened by the caller
    /// ([`Panes::open_new_stream`], [`Panes::reseed`] or [`Panes::open_stream`]).
    pub fn register(&mut self, session_id: &str, spec: pane::PaneSpec) {
        self.by_session
            .insert(session_id.to_string(), pane::Pane::new(spec));
    }

    /// Bytes of pane output the terminal emulator parsed and skimmed so far.
    pub fn emulator_counts(&self) -> (u64, u64) {
        let counts = self.emulators.counts();
        (
            counts.parsed.load(std::sync::atomic::Ordering::Relaxed),
            counts.skimmed.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Session `session_id`'s pane.
    pub fn get(&self, session_id: &str) -> Option<&pane::Pane> {
        self.by_session.get(session_id)
    }

    /// The agent's process ended: nothing more is typed, and capture is not re-armed.
    pub fn mark_exited(&mut self, session_id: &str) {
        if let Some(pane) = self.by_session.get_mut(session_id) {
            pane.exited = true;
        }
    }

    /// The events announced since the last call.
    pub fn take_events(&mut self) -> Vec<pane::PaneEvent> {
        std::mem::take(&mut self.events)
    }

    /// Announces `event` to the features above panes.
    fn announce(&mut self, event: pane::PaneEvent) {
        self.events.push(event);
    }

    /// Whether a session being created holds an attach token already.
    pub fn is_attaching(&self, session_id: &str) -> bool {
        self.attach_tokens.values().any(|s| s == session_id)
    }

    /// Expects session `session_id`'s pane pipe, handed over with `token`.
    pub fn expect_attach(&mut self, token: String, session_id: String) {
        self.attach_tokens.insert(token, session_id);
    }

    /// Stops expecting session `session_id`'s pipe (its spawn failed or it is gone), and drops
    /// a pipe that arrived early.
    pub fn forget_attach(&mut self, session_id: &str) {
        self.attach_tokens.retain(|_, s| s != session_id);
        self.early_captures.remove(session_id);
    }

    /// Session `session_id` is gone: its pane, pipe (failing input not yet typed), holder
    /// link, stream (viewers are told by the hub), screen, typing, and any pipe on its way in.
    pub fn close(&mut self, ctx: &mut ctx::Ctx, session_id: &str) {
        if let Some(pane) = self.by_session.remove(session_id) {
            if let Some(key) = pane.holder {
                ctx.remove_source(key);
            }
            if let Some(key) = pane.pipe {
                ctx.remove_source(key);
            }
            if let Some(mut input) = pane.input {
                for ack in input.abandon() {
                    self.input_failed(
                        ctx,
                        session_id,
                        ack,
                        "the session ended before the input was typed",
                    );
                }
            }
            // Dropping the pane drops a pipe that arrived for a re-arm.
        }
        self.forget_attach(session_id);
        self.hub.close(session_id);
        self.emulators.close(session_id);
        self.drop_typist(ctx, session_id);
    }

    /// Opens session `session_id`'s output stream at offset `start` (continuing it when it
    /// exists).
    pub fn open_stream(&mut self, session_id: &str, start: u64) -> Arc<emulator::PaneShared> {
        self.hub.open(session_id, start)
    }

    /// The stream offset after the last byte of session `session_id`'s output.
    pub fn stream_end(&self, session_id: &str) -> Option<u64> {
        self.hub.stream(session_id).map(|s| s.backlog.end())
    }

    /// The id of session `session_id`'s stream (new when the stream restarts from 0).
    pub fn stream_id(&self, session_id: &str) -> Option<String> {
        self.hub.stream(session_id).map(|s| s.stream_id.clone())
    }

    /// At most `max` bytes of the end of session `session_id`'s output, as text.
    pub fn tail_text(&self, session_id: &str, max: usize) -> String {
        self.hub.tail_text(session_id, max)
    }

    /// Asks the emulator for session `session_id`'s screen as text (answered as an
    /// emulator event).
    pub fn request_screen_text(&self, session_id: &str) {
        self.emulators.text(session_id);
    }

    /// Asks the emulator for a snapshot of session `session_id`'s screen for `request`.
    pub fn request_snapshot(&self, session_id: &str, request: u64) {
        self.emulators.snapshot(session_id, request);
    }

    /// Session `session_id`'s terminal is now `cols` x `rows` (tmux resized it).
    pub fn resized(&mut self, session_id: &str, rows: u16, cols: u16) {
        if let Some(pane) = self.by_session.get_mut(session_id) {
            pane.rows = rows;
            pane.cols = cols;
        }
        self.emulators.resize(session_id, rows, cols);
    }

    /// Sets a pty session's terminal size (an ioctl on the master; the agent gets
    /// `SIGWINCH`).
    pub fn resize_pty(
        &mut self,
        ctx: &mut ctx::Ctx,
        session_id: &str,
        rows: u16,
        cols: u16,
    ) -> Result<(), (crate::error_code::ErrorCode, String)> {
        use crate::error_code::ErrorCode;
        let key = self.get(session_id).and_then(|p| p.pipe);
        let Some(ctx::Source::PanePipe { stream, .. }) = key.and_then(|k| ctx.sources.get(k))
        else {
            let why = format!("the terminal of {session_id} is closed");
            return Err((ErrorCode::SessionNotFound, why));
        };
        let Some(master) = stream.master() else {
            return Err((ErrorCode::InternalError, "not a pty session".into()));
        };
        master
            .resize(rows, cols)
            .map_err(|e| (ErrorCode::InternalError, format!("cannot resize: {e}")))?;
        self.resized(session_id, rows, cols);
        self.schedule_checkpoint(ctx, session_id);
        Ok(())
    }

    /// Subscribes viewer `conn` to session `session_id`'s output (see [`hub::Hub::subscribe`]);
    /// a start that needs a screen has its snapshot requested here.
    pub fn subscribe(
        &mut self,
        conn: crate::net::ConnId,
        session_id: &str,
        since: Option<u64>,
        stream_id: Option<&str>,
    ) -> Result<hub::SubscribeStart, hub::SubscribeError> {
        self.hub.subscribe(conn, session_id, since, stream_id)
    }

    /// Unsubscribes viewer `conn` from session `session_id`; whether it was subscribed.
    pub fn unsubscribe(&mut self, conn: crate::net::ConnId, session_id: &str) -> bool {
        self.hub.unsubscribe(conn, session_id)
    }

    /// Viewer `conn` went away: its subscriptions and pending input acks.
    pub fn viewer_closed(&mut self, conn: crate::net::ConnId) {
        self.hub.remove_viewer(conn);
        for typist in self.typists.values_mut() {
            typist.forget(conn);
        }
    }

    /// Output counters for `GET /metrics`.
    pub fn output_counts(&self) -> &crate::metrics::OutputCounts {
        &self.hub.counts
    }

    /// Whether pane pipes wait to be read again right after this poll.
    pub fn must_revisit(&self) -> bool {
        self.read_turns.has_later() || self.stalled.keys().any(|s| !self.hub.holds_back(s))
    }

    /// A new loop turn: the panes that flooded in the last one share its read budget, and
    /// may be read again ([`read_turns`]).
    pub fn begin_turn(&mut self) {
        self.read_turns.begin_turn();
    }

    /// Pane pipes that still had data when their read budget ran out, or whose viewers
    /// caught up: read again after this turn's events (those that flooded this turn wait
    /// for the next one).
    pub fn take_revisit(&mut self) -> Vec<usize> {
        self.resume_caught_up();
        self.read_turns.take_later()
    }

    /// Viewers with new frames since the last call.
    pub fn take_dirty(&mut self) -> Vec<crate::net::ConnId> {
        self.hub.take_dirty()
    }

    /// Viewers that fell too far behind since the last call.
    pub fn take_overwhelmed(&mut self) -> Vec<crate::net::ConnId> {
        self.hub.take_overwhelmed()
    }

    /// Frames for viewer `conn`, up to `budget` bytes; resyncs whose snapshots it needs are
    /// requested here (see [`hub::Hub::pull`]).
    pub fn pull(
        &mut self,
        conn: crate::net::ConnId,
        budget: usize,
        timestamp: u64,
    ) -> Vec<crate::net::Chunk> {
        let (chunks, resyncs) = self.hub.pull(conn, budget, timestamp);
        for (request, session) in resyncs {
            log::debug!("{session}: viewer {conn:?} resyncs (snapshot request {request})");
            self.emulators.snapshot(&session, request);
        }
        chunks
    }
}
pub mod utf8;
