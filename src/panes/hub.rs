//! Fanout of pane output to WebSocket viewers.
//!
//! Each pane has a [`PaneStream`]: its backlog of raw bytes, a UTF-8 chunker, and the
//! `terminal_output` frames of its most recent chunks, each encoded **once** and shared
//! (`Arc`) by every viewer. Each viewer's subscription is a cursor into the stream. Viewers
//! are not pushed to: when a connection has room in its outbound queue, the server asks
//! [`Hub::pull`] for the next frames. A viewer at the head gets the shared frames; one that
//! is behind the shared frames but within the backlog gets frames encoded from the raw
//! backlog; one that fell out of the backlog (or asked to resume from an offset it no longer
//! holds) gets a gap notice and a fresh screen from the emulator, then continues from the
//! screen's offset. A live viewer more than [`HubLimits::stall_lag`] behind holds the pane's
//! reading back ([`Hub::holds_back`]) for at most `panes.max_stall` per stall, so that a
//! viewer that pauses loses nothing; one still behind after that is let loose
//! ([`Hub::cut_loose`]). Memory per pane and per viewer stays bounded whatever viewers do.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backlog::Backlog;
use super::emulator::{PaneShared, Snapshot};
use super::utf8::Utf8Chunker;
use crate::net::{Chunk, ConnId};
use crate::proto::output_frame::{OutputFields, OutputFrameEncoder};
use crate::proto::ws::text_frame;
use crate::wire::ws::ServerMessage;

/// Sizes and counts the hub enforces.
#[derive(Debug, Clone)]
pub struct HubLimits {
    /// Raw bytes of recent output kept per pane (for resume and catch-up).
    pub backlog_bytes: usize,
    /// Encoded bytes of recent shared frames kept per pane.
    pub live_frame_bytes: usize,
    /// Most raw bytes put in one catch-up frame.
    pub catch_up_chunk: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Resyncs a viewer may need within `resync_window` before it is disconnected.
    pub max_resyncs: usize,
    /// See `max_resyncs`.
    pub resync_window: Duration,
    /// A live viewer further than this behind a pane's output holds the reading of that
    /// pane back (for at most `panes.max_stall`), so that it does not fall out of the
    /// backlog: half the backlog, or half the shared frames if fewer (a viewer that is
    /// waited for is served the frames all viewers share, never frames encoded for it
    /// alone). `u64::MAX`: never (`panes.max_stall = "0s"`).
    pub stall_lag: u64,
}

/// Most raw bytes put in one catch-up frame: large enough to catch up fast, small enough
/// that one frame never dominates a viewer's send window.
pub const CATCH_UP_CHUNK_BYTES: usize = 64 << 10;

/// The gap reason when a flood outran the terminal emulator by more than the backlog: the
/// screen a viewer gets is older than the output replayed after it.
pub const EMULATOR_OUTRUN: &str =
    "the screen is older than the output that follows: a flood outran the terminal emulator";

impl HubLimits {
    /// The limits the configuration sets (`[panes]` and `[websocket]`), the one place their
    /// values come from.
    pub fn from_config(config: &crate::config::Config) -> HubLimits {
        HubLimits {
            backlog_bytes: config.panes.backlog_bytes,
            live_frame_bytes: config.panes.live_frame_bytes,
            catch_up_chunk: CATCH_UP_CHUNK_BYTES,
            max_subscriptions: config.websocket.max_subscriptions,
            max_resyncs: config.websocket.max_resyncs_per_minute,
            resync_window: Duration::from_secs(60),
            stall_lag: if config.panes.max_stall.is_zero() {
                u64::MAX
            } else {
                (config.panes.backlog_bytes / 2).min(config.panes.live_frame_bytes / 2) as u64
            },
        }
    }
}

/// One encoded chunk of live output.
#[derive(Debug, Clone)]
struct LiveFrame {
    offset: u64,
    next_offset: u64,
    frame: Arc<[u8]>,
}

/// A pane's output stream.
#[derive(Debug)]
pub struct PaneStream {
    /// Mode flags and lag shared with the emulator thread.
    pub shared: Arc<PaneShared>,
    /// Recent raw output.
    pub backlog: Backlog,
    /// Random id of this capture epoch; offsets from another epoch mean nothing here.
    pub stream_id: String,
    chunker: Utf8Chunker,
    frames: VecDeque<LiveFrame>,
    frame_bytes: usize,
    /// End of the last emitted chunk: every viewer cursor is at or before it.
    emitted: u64,
    /// Offsets below this cannot be replayed (capture was re-armed there).
    valid_from: u64,
    /// Connections subscribed to this pane.
    subscribers: Vec<ConnId>,
}

impl PaneStream {
    /// Offset just past the last byte turned into a frame.
    pub fn head(&self) -> u64 {
        self.emitted
    }
}

/// What a subscription is waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SubState {
    /// Receiving output from `cursor`.
    Live,
    /// Waiting for snapshot `request`; `gap` is the notice to send first, if any.
    AwaitingSnapshot {
        request: u64,
        gap: Option<(u64, &'static str)>,
    },
}

#[derive(Debug)]
struct Subscription {
    cursor: u64,
    state: SubState,
    /// It held its pane's reading back for `panes.max_stall` and is no longer waited for,
    /// until it catches up (or is resynced).
    loose: bool,
}

#[derive(Debug, Default)]
struct Viewer {
    subs: BTreeMap<String, Subscription>,
    /// Frames for this viewer only (gap notices, screens), sent before any pulled output.
    pending: VecDeque<Chunk>,
    resyncs: VecDeque<Instant>,
    dirty: bool,
}

/// Why a subscribe was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeError {
    /// No stream for that session.
    UnknownSession,
    /// The connection already holds `max_subscriptions`.
    TooMany(usize),
}

/// How a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeStart {
    /// Resuming from the requested offset; no screen is needed.
    Resumed,
    /// A screen was requested from the emulator (request id).
    NeedsSnapshot(u64),
}

/// All pane streams and all viewers.
#[derive(Debug)]
pub struct Hub {
    limits: HubLimits,
    streams: HashMap<String, PaneStream>,
    viewers: HashMap<ConnId, Viewer>,
    /// Snapshot requests in flight: request id -> (viewer, session).
    requests: HashMap<u64, (ConnId, String)>,
    next_request: u64,
    dirty: Vec<ConnId>,
    /// Viewers to disconnect (too many resyncs).
    overwhelmed: Vec<ConnId>,
    /// Running totals for `GET /metrics`.
    pub counts: crate::metrics::OutputCounts,
    /// Writes every `terminal_output` frame (one scratch buffer for all panes).
    encoder: OutputFrameEncoder,
}

impl Hub {
    /// An empty hub.
    pub fn new(limits: HubLimits) -> Hub {
        Hub {
            limits,
            streams: HashMap::new(),
            viewers: HashMap::new(),
            requests: HashMap::new(),
            next_request: 0,
            dirty: Vec::new(),
            overwhelmed: Vec::new(),
            counts: Default::default(),
            encoder: OutputFrameEncoder::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &HubLimits {
        &self.limits
    }

    /// Creates the stream of a pane whose captured output starts at offset `start`.
    pub fn open(&mut self, session: &str, start: u64) -> Arc<PaneShared> {
        let shared = PaneShared::new();
        let stream = PaneStream {
            shared: shared.clone(),
            backlog: Backlog::new(self.limits.backlog_bytes, start),
            stream_id: crate::panes::attach::new_token()[..12].to_string(),
            chunker: Utf8Chunker::new(),
            frames: VecDeque::new(),
            frame_bytes: 0,
            emitted: start,
            valid_from: start,
            subscribers: Vec::new(),
        };
        self.streams.insert(session.to_string(), stream);
        shared
    }

    /// The last `max` bytes of a pane's output that the backlog still holds, as text (for
    /// when tmux's own screen comes back empty).
    pub fn tail_text(&self, session: &str, max: usize) -> String {
        let Some(stream) = self.streams.get(session) else {
            return String::new();
        };
        let backlog = &stream.backlog;
        let from = backlog
            .start()
            .max(backlog.end().saturating_sub(max as u64));
        let mut bytes = Vec::new();
        let _ = backlog.read(from, max, &mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The stream of a session.
    pub fn stream(&self, session: &str) -> Option<&PaneStream> {
        self.streams.get(session)
    }

    /// Whether the pane's program has bracketed-paste mode on right now: the emulator's view,
    /// corrected by any mode switch in the output it has not processed yet (it may lag).
    pub fn bracketed_paste(&self, session: &str) -> bool {
        let Some(stream) = self.streams.get(session) else {
            return false;
        };
        let known = stream
            .shared
            .bracketed_paste
            .load(std::sync::atomic::Ordering::Acquire);
        let from = stream.shared.processed().max(stream.backlog.start());
        if from >= stream.backlog.end() {
            return known;
        }
        let mut tail = Vec::new();
        if stream.backlog.read(from, usize::MAX, &mut tail).is_err() {
            return known;
        }
        // The emulator leaves up to its window unparsed, so this tail can be long.
        let last = |needle: &[u8]| memchr::memmem::rfind(&tail, needle);
        match (last(b"\x1b[?2004h"), last(b"\x1b[?2004l")) {
            (Some(on), Some(off)) => on > off,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => known,
        }
    }

    /// Removes a session's stream; its viewers lose the subscription. Returns them.
    pub fn close(&mut self, session: &str) -> Vec<ConnId> {
        let Some(stream) = self.streams.remove(session) else {
            return Vec::new();
        };
        for conn in &stream.subscribers {
            if let Some(viewer) = self.viewers.get_mut(conn) {
                viewer.subs.remove(session);
            }
        }
        self.requests.retain(|_, (_, s)| s != session);
        stream.subscribers
    }

    /// Appends pane output: into the backlog, and as one shared frame for viewers. Returns the
    /// stream offset of the chunk and the chunk itself (shared, for the emulator).
    pub fn push(
        &mut self,
        session: &str,
        bytes: &[u8],
        timestamp: u64,
    ) -> Option<(u64, Arc<[u8]>)> {
        let stream = self.streams.get_mut(session)?;
        self.counts.bytes_in += bytes.len() as u64;
        let chunk: Arc<[u8]> = Arc::from(bytes);
        let offset = stream.backlog.end();
        stream.backlog.push(chunk.clone());
        let (text, covered) = stream.chunker.push(bytes);
        if covered > 0 {
            let offset = stream.emitted;
            let next_offset = offset + covered as u64;
            let frame = self.encoder.encode(&OutputFields {
                session_id: session,
                stream: &stream.stream_id,
                data: &text,
                offset,
                next_offset,
                timestamp,
            });
            stream.frame_bytes += frame.len();
            stream.frames.push_back(LiveFrame {
                offset,
                next_offset,
                frame,
            });
            stream.emitted = next_offset;
            while stream.frame_bytes > self.limits.live_frame_bytes && stream.frames.len() > 1 {
                let old = stream.frames.pop_front().expect("non-empty");
                stream.frame_bytes -= old.frame.len();
            }
            for conn in &stream.subscribers {
                if let Some(viewer) = self.viewers.get_mut(conn)
                    && !viewer.dirty
                {
                    viewer.dirty = true;
                    self.dirty.push(*conn);
                }
            }
        }
        Some((offset, chunk))
    }

    /// Marks a discontinuity (capture re-armed): earlier offsets can no longer be replayed,
    /// and every viewer is resynced with a fresh screen. Call before pushing the new pipe's
    /// first bytes; returns the offset where the new segment starts.
    pub fn discontinuity(&mut self, session: &str, reason: &'static str) -> Option<u64> {
        let stream = self.streams.get_mut(session)?;
        // Bytes of a character cut off by the old pipe can never complete.
        let (text, covered) = stream.chunker.finish();
        if covered > 0 {
            let offset = stream.emitted;
            stream.emitted += covered as u64;
            let frame = self.encoder.encode(&OutputFields {
                session_id: session,
                stream: &stream.stream_id,
                data: &text,
                offset,
                next_offset: stream.emitted,
                timestamp: 0,
            });
            stream.frame_bytes += frame.len();
            stream.frames.push_back(LiveFrame {
                offset,
                next_offset: stream.emitted,
                frame,
            });
        }
        let start = stream.emitted;
        stream.valid_from = start;
        stream.frames.clear();
        stream.frame_bytes = 0;
        let subscribers = stream.subscribers.clone();
        for conn in subscribers {
            self.resync(conn, session, reason);
        }
        Some(start)
    }

    /// Subscribes a viewer. With `since` inside the backlog (and `stream`, if given, matching
    /// this epoch) it resumes there; otherwise it gets a screen first (and a gap notice when
    /// `since` could not be honoured).
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        session: &str,
        since: Option<u64>,
        stream_id: Option<&str>,
    ) -> Result<SubscribeStart, SubscribeError> {
        let stream = self
            .streams
            .get_mut(session)
            .ok_or(SubscribeError::UnknownSession)?;
        let viewer = self.viewers.entry(conn).or_default();
        if !viewer.subs.contains_key(session) && viewer.subs.len() >= self.limits.max_subscriptions
        {
            return Err(SubscribeError::TooMany(self.limits.max_subscriptions));
        }
        if !stream.subscribers.contains(&conn) {
            stream.subscribers.push(conn);
        }
        let same_epoch = stream_id.is_none_or(|id| id == stream.stream_id);
        let resumable = since.filter(|&since| {
            same_epoch
                && since >= stream.valid_from
                && since <= stream.emitted
                && stream.backlog.holds(since)
        });
        let start = if let Some(since) = resumable {
            viewer.subs.insert(
                session.to_string(),
                Subscription {
                    cursor: since,
                    state: SubState::Live,
                    loose: false,
                },
            );
            SubscribeStart::Resumed
        } else {
            self.next_request += 1;
            let request = self.next_request;
            let gap = since.map(|since| {
                (
                    since,
                    if same_epoch {
                        "output no longer in the backlog"
                    } else {
                        "stream restarted"
                    },
                )
            });
            viewer.subs.insert(
                session.to_string(),
                Subscription {
                    cursor: stream.emitted,
                    state: SubState::AwaitingSnapshot { request, gap },
                    loose: false,
                },
            );
            self.requests.insert(request, (conn, session.to_string()));
            SubscribeStart::NeedsSnapshot(request)
        };
        self.mark_dirty(conn);
        Ok(start)
    }

    /// Ends one subscription. Returns whether it existed.
    pub fn unsubscribe(&mut self, conn: ConnId, session: &str) -> bool {
        if let Some(stream) = self.streams.get_mut(session) {
            stream.subscribers.retain(|c| *c != conn);
        }
        self.viewers
            .get_mut(&conn)
            .is_some_and(|v| v.subs.remove(session).is_some())
    }

    /// Forgets a connection entirely.
    pub fn remove_viewer(&mut self, conn: ConnId) {
        if let Some(viewer) = self.viewers.remove(&conn) {
            for session in viewer.subs.keys() {
                if let Some(stream) = self.streams.get_mut(session) {
                    stream.subscribers.retain(|c| *c != conn);
                }
            }
        }
        self.requests.retain(|_, (c, _)| *c != conn);
    }

    /// Switches a viewer's subscription to "needs a fresh screen", counting the resync.
    /// Returns the snapshot request id to ask the emulator for.
    fn resync(&mut self, conn: ConnId, session: &str, reason: &'static str) -> Option<u64> {
        let stream = self.streams.get(session)?;
        let viewer = self.viewers.get_mut(&conn)?;
        let sub = viewer.subs.get_mut(session)?;
        if matches!(sub.state, SubState::AwaitingSnapshot { .. }) {
            return None;
        }
        self.next_request += 1;
        let request = self.next_request;
        sub.state = SubState::AwaitingSnapshot {
            request,
            gap: Some((sub.cursor, reason)),
        };
        sub.cursor = stream.emitted;
        self.requests.insert(request, (conn, session.to_string()));
        self.counts.resyncs += 1;
        let now = Instant::now();
        viewer.resyncs.push_back(now);
        while viewer
            .resyncs
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.limits.resync_window)
        {
            viewer.resyncs.pop_front();
        }
        if viewer.resyncs.len() > self.limits.max_resyncs {
            self.overwhelmed.push(conn);
        }
        Some(request)
    }

    /// Snapshot requests created by resyncs since the last call, for the emulator.
    pub fn outstanding_requests(&self) -> impl Iterator<Item = (u64, &str)> {
        self.requests
            .iter()
            .map(|(id, (_, session))| (*id, session.as_str()))
    }

    /// Delivers an emulator snapshot. `None` means the emulator is lost: the viewer keeps
    /// waiting (the caller re-seeds the emulator and asks again with [`Hub::rerequest`]).
    pub fn on_snapshot(
        &mut self,
        request: u64,
        snapshot: Option<&Snapshot>,
        timestamp: u64,
    ) -> bool {
        let Some(snapshot) = snapshot else {
            return false;
        };
        let Some((conn, session)) = self.requests.remove(&request) else {
            return true;
        };
        let Some(stream) = self.streams.get(&session) else {
            return true;
        };
        let Some(viewer) = self.viewers.get_mut(&conn) else {
            return true;
        };
        let Some(sub) = viewer.subs.get_mut(&session) else {
            return true;
        };
        let SubState::AwaitingSnapshot {
            request: expected,
            gap,
        } = sub.state.clone()
        else {
            return true;
        };
        if expected != request {
            return true;
        }
        // The screen must lie within what can still be replayed after it.
        let replayable = snapshot.offset >= stream.valid_from
            && snapshot.offset <= stream.emitted
            && stream.backlog.holds(snapshot.offset);
        // A flood outran the emulator by more than the backlog: rather than keep the viewer
        // waiting, it gets the screen followed by the oldest output still held, with a gap
        // notice for the bytes in between (their rows scroll away within a screenful).
        let outrun = !replayable
            && snapshot.offset >= stream.valid_from
            && snapshot.offset < stream.backlog.start()
            && stream.backlog.start() <= stream.emitted;
        if !replayable && !outrun {
            self.requests.insert(request, (conn, session));
            return false;
        }
        let (offset, gap) = if outrun {
            // A gap the viewer is owed anyway keeps its reason; it now ends later.
            let gap = gap.unwrap_or((snapshot.offset, EMULATOR_OUTRUN));
            (
                char_start(&stream.backlog, stream.backlog.start()),
                Some(gap),
            )
        } else {
            (snapshot.offset, gap)
        };
        if let Some((since, reason)) = gap {
            self.counts.gaps += 1;
            let notice = ServerMessage::TerminalGap {
                session_id: &session,
                since,
                offset,
                stream: &stream.stream_id,
                reason,
            };
            viewer
                .pending
                .push_back(Chunk::Owned(text_frame(&notice.to_json())));
        }
        let message = ServerMessage::TerminalOutput {
            session_id: &session,
            data: &snapshot.screen,
            timestamp,
            offset,
            next_offset: offset,
            stream: &stream.stream_id,
            snapshot: true,
            rows: Some(snapshot.rows),
            cols: Some(snapshot.cols),
        };
        viewer
            .pending
            .push_back(Chunk::Owned(text_frame(&message.to_json())));
        sub.cursor = offset;
        sub.state = SubState::Live;
        sub.loose = false;
        self.mark_dirty(conn);
        true
    }

    /// Requests in flight for `session`, to ask the emulator again after a re-seed or a skip.
    pub fn rerequest(&self, session: &str) -> Vec<u64> {
        self.requests
            .iter()
            .filter(|(_, (_, s))| s == session)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Connections that have something new to pull; clears the list.
    pub fn take_dirty(&mut self) -> Vec<ConnId> {
        for conn in &self.dirty {
            if let Some(viewer) = self.viewers.get_mut(conn) {
                viewer.dirty = false;
            }
        }
        std::mem::take(&mut self.dirty)
    }

    /// Connections that needed too many resyncs; clears the list.
    pub fn take_overwhelmed(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.overwhelmed)
    }

    fn mark_dirty(&mut self, conn: ConnId) {
        if let Some(viewer) = self.viewers.get_mut(&conn)
            && !viewer.dirty
        {
            viewer.dirty = true;
            self.dirty.push(conn);
        }
    }

    /// Up to about `budget` bytes of frames for `conn`, in order per session. A viewer whose
    /// cursor fell out of the backlog is switched to a resync; the returned request ids must
    /// be sent to the emulator.
    pub fn pull(
        &mut self,
        conn: ConnId,
        budget: usize,
        timestamp: u64,
    ) -> (Vec<Chunk>, Vec<(u64, String)>) {
        let mut out = Vec::new();
        let mut resyncs = Vec::new();
        let mut used = 0;
        let Some(viewer) = self.viewers.get_mut(&conn) else {
            return (out, resyncs);
        };
        while used < budget {
            let Some(chunk) = viewer.pending.pop_front() else {
                break;
            };
            used += chunk_len(&chunk);
            out.push(chunk);
        }
        let mut lost = Vec::new();
        for (session, sub) in viewer.subs.iter_mut() {
            if used >= budget {
                break;
            }
            if sub.state != SubState::Live {
                continue;
            }
            let Some(stream) = self.streams.get(session) else {
                continue;
            };
            while used < budget && sub.cursor < stream.emitted {
                match next_frame(
                    &mut self.encoder,
                    stream,
                    session,
                    sub.cursor,
                    self.limits.catch_up_chunk,
                    timestamp,
                ) {
                    Some((chunk, next)) => {
                        let len = chunk_len(&chunk);
                        used += len;
                        self.counts.bytes_out += len as u64;
                        self.counts.frames_out += 1;
                        out.push(chunk);
                        sub.cursor = next;
                        if sub.loose && stream.emitted - next <= self.limits.stall_lag / 2 {
                            sub.loose = false;
                        }
                    }
                    None => {
                        lost.push(session.clone());
                        break;
                    }
                }
            }
        }
        for session in lost {
            if let Some(request) = self.resync(conn, &session, "viewer fell behind the backlog") {
                resyncs.push((request, session));
            }
        }
        (out, resyncs)
    }
}

impl Hub {
    /// Whether a live viewer of `session` that is still waited for is more than
    /// [`HubLimits::stall_lag`] behind its output: reading the pane should wait for it.
    pub fn holds_back(&self, session: &str) -> bool {
        let Some(stream) = self.streams.get(session) else {
            return false;
        };
        stream.subscribers.iter().any(|conn| {
            self.viewers
                .get(conn)
                .and_then(|viewer| viewer.subs.get(session))
                .is_some_and(|sub| {
                    sub.state == SubState::Live
                        && !sub.loose
                        && stream.emitted.saturating_sub(sub.cursor) > self.limits.stall_lag
                })
        })
    }

    /// Stops waiting for the viewers of `session` that are more than
    /// [`HubLimits::stall_lag`] behind (a stall ran out): they fall out of the backlog, with a
    /// gap, if they stay behind. Returns how many.
    pub fn cut_loose(&mut self, session: &str) -> usize {
        let Some(stream) = self.streams.get(session) else {
            return 0;
        };
        let mut count = 0;
        for conn in &stream.subscribers {
            if let Some(sub) = self
                .viewers
                .get_mut(conn)
                .and_then(|viewer| viewer.subs.get_mut(session))
                && sub.state == SubState::Live
                && stream.emitted.saturating_sub(sub.cursor) > self.limits.stall_lag
            {
                sub.loose = true;
                count += 1;
            }
        }
        count
    }
}

fn chunk_len(chunk: &Chunk) -> usize {
    match chunk {
        Chunk::Owned(v) => v.len(),
        Chunk::Shared(s) => s.len(),
    }
}

/// The frame that continues a viewer at `cursor`, and the cursor after it; `None` when the
/// bytes at `cursor` are gone.
fn next_frame(
    encoder: &mut OutputFrameEncoder,
    stream: &PaneStream,
    session: &str,
    cursor: u64,
    max_raw: usize,
    timestamp: u64,
) -> Option<(Chunk, u64)> {
    if cursor < stream.valid_from {
        return None;
    }
    if let Some(front) = stream.frames.front()
        && cursor >= front.offset
    {
        // Frames are contiguous: find the one starting at the cursor.
        if let Ok(i) = stream.frames.binary_search_by_key(&cursor, |f| f.offset) {
            let frame = &stream.frames[i];
            return Some((Chunk::Shared(frame.frame.clone()), frame.next_offset));
        }
    }
    // Behind the shared frames (or resuming mid-frame): encode from the raw backlog, up to
    // the next shared frame so the viewer joins the shared path as soon as it can.
    let limit = stream
        .frames
        .iter()
        .find(|f| f.offset > cursor)
        .map_or(stream.emitted, |f| f.offset);
    let want = ((limit - cursor) as usize).min(max_raw);
    let mut raw = Vec::with_capacity(want);
    stream.backlog.read(cursor, want, &mut raw).ok()?;
    let mut chunker = Utf8Chunker::new();
    let (mut text, mut covered) = chunker.push(&raw);
    if covered == 0 || (cursor + raw.len() as u64 == limit && chunker.carried() > 0) {
        // At a frame boundary the carried bytes are a cut character; emit them as U+FFFD.
        let (tail, n) = chunker.finish();
        text.to_mut().push_str(&tail);
        covered += n;
    }
    let next = cursor + covered as u64;
    let frame = encoder.encode_owned(&OutputFields {
        session_id: session,
        stream: &stream.stream_id,
        data: &text,
        offset: cursor,
        next_offset: next,
        timestamp,
    });
    Some((Chunk::Owned(frame), next))
}

/// The first offset at or after `offset` where a character starts: the oldest byte held
/// may be the middle of one (reads cut characters), which output sent from there would
/// begin with as replacement characters. The bytes skipped are within the gap announced.
fn char_start(backlog: &Backlog, offset: u64) -> u64 {
    let mut head = Vec::with_capacity(4);
    if backlog.read(offset, 4, &mut head).is_err() {
        return offset;
    }
    let continuation = head
        .iter()
        .take(3)
        .take_while(|b| *b & 0xC0 == 0x80)
        .count();
    offset + continuation as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(key: usize) -> ConnId {
        ConnId {
            key,
            serial: key as u64,
        }
    }

    fn limits() -> HubLimits {
        HubLimits {
            backlog_bytes: 64,
            live_frame_bytes: 400,
            catch_up_chunk: 16,
            ..HubLimits::from_config(&crate::config::Config::default())
        }
    }

    /// Decodes the terminal_output frames in `chunks`: (offset, next_offset, data, snapshot).
    fn decode(chunks: &[Chunk]) -> Vec<serde_json::Value> {
        chunks
            .iter()
            .map(|c| {
                let bytes = match c {
                    Chunk::Owned(v) => &v[..],
                    Chunk::Shared(s) => &s[..],
                };
                // Skip the 2- or 4-byte frame header of these small frames.
                let start = if bytes[1] & 0x7f == 126 { 4 } else { 2 };
                serde_json::from_slice(&bytes[start..]).unwrap()
            })
            .collect()
    }

    fn data_of(messages: &[serde_json::Value]) -> String {
        messages
            .iter()
            .filter(|m| m["type"] == "terminal_output")
            .map(|m| m["data"].as_str().unwrap())
            .collect()
    }

    fn snapshot(offset: u64) -> Snapshot {
        Snapshot {
            offset,
            screen: "\x1bcSCREEN".into(),
            rows: 5,
            cols: 20,
        }
    }

    #[test]
    fn live_viewers_share_one_encoding_and_see_every_byte() {
        let mut hub = Hub::new(limits());
        hub.open("s", 0);
        assert_eq!(
            hub.subscribe(conn(1), "s", Some(0), None),
            Ok(SubscribeStart::Resumed)
        );
        assert_eq!(
            hub.subscribe(conn(2), "s", Some(0), None),
            Ok(SubscribeStart::Resumed)
        );
        hub.push("s", b"hello ", 1);
        hub.push("s", "w\u{f6}".as_bytes(), 2);
        assert_eq!(hub.take_dirty(), [conn(1), conn(2)]);
        let (a, _) = hub.pull(conn(1), 1 << 20, 3);
        let (b, _) = hub.pull(conn(2), 1 << 20, 3);
        match (&a[0], &b[0]) {
            (Chunk::Shared(x), Chunk::Shared(y)) => assert!(Arc::ptr_eq(x, y), "encoded once"),
            other => panic!("{other:?}"),
        }
        let messages = decode(&a);
        assert_eq!(data_of(&messages), "hello w\u{f6}");
        assert_eq!(messages[1]["offset"], 6);
        assert_eq!(messages[1]["next_offset"], 9);
        assert!(hub.pull(conn(1), 1 << 20, 3).0.is_empty(), "nothing new");
    }

    #[test]
    fn a_viewer_half_a_backlog_behind_holds_reading_back_until_caught_up_or_let_loose() {
        // Backlog 64 bytes: a live viewer more than 32 behind holds the pane back.
        let mut hub = Hub::new(HubLimits {
            stall_lag: 32,
            ..limits()
        });
        hub.open("s", 0);
        hub.subscribe(conn(1), "s", Some(0), None).unwrap();
        hub.subscribe(conn(2), "s", Some(0), None).unwrap();
        hub.push("s", &[b'a'; 30], 1);
        assert!(!hub.holds_back("s"), "30 behind is within the line");
        hub.push("s", &[b'b'; 10], 2);
        assert!(hub.holds_back("s"), "40 behind");
        // One viewer catches up; the other still holds the pane back.
        hub.pull(conn(1), 1 << 20, 3);
        assert!(hub.holds_back("s"));
        hub.pull(conn(2), 1 << 20, 3);
        assert!(!hub.holds_back("s"), "both caught up");
        // A viewer that stays behind through a stall is let loose and no longer waited for...
        hub.push("s", &[b'c'; 40], 4);
        hub.pull(conn(1), 1 << 20, 5);
        assert!(hub.holds_back("s"));
        assert_eq!(hub.cut_loose("s"), 1);
        assert!(!hub.holds_back("s"));
        // ...until it has caught up to within half the line again.
        hub.push("s", &[b'd'; 10], 6);
        hub.pull(conn(1), 1 << 20, 7);
        hub.pull(conn(2), 1 << 20, 7);
        hub.push("s", &[b'e'; 40], 8);
        hub.pull(conn(1), 1 << 20, 9);
        assert!(hub.holds_back("s"), "waited for again after catching up");
    }

    #[test]
    fn new_viewers_get_a_screen_then_output_from_its_offset() {
        let mut hub = Hub::new(limits());
        hub.open("s", 0);
        hub.push("s", b"0123456789", 1);
        let SubscribeStart::NeedsSnapshot(request) =
            hub.subscribe(conn(1), "s", None, None).unwrap()
        else {
            panic!("a screen is needed")
        };
        // The emulator had only reached offset 4.
        assert!(hub.on_snapshot(request, Some(&snapshot(4)), 5));
        let (chunks, _) = hub.pull(conn(1), 1 << 20, 6);
        let messages = decode(&chunks);
        assert_eq!(messages[0]["snapshot"], true);
        assert_eq!(messages[0]["offset"], 4);
        assert_eq!(data_of(&messages[1..]), "456789");
        assert_eq!(messages.last().unwrap()["next_offset"], 10);
    }

    #[test]
    fn resume_hits_and_misses() {
        let mut hub = Hub::new(limits());
        hub.open("s", 0);
        for i in 0..10u8 {
            hub.push("s", &[b'a' + i; 10], 1); // 100 bytes, backlog keeps the last 64
        }
        // Hit: exactly the missing bytes.
        assert_eq!(
            hub.subscribe(conn(1), "s", Some(90), None),
            Ok(SubscribeStart::Resumed)
        );
        let (chunks, _) = hub.pull(conn(1), 1 << 20, 1);
        assert_eq!(data_of(&decode(&chunks)), "jjjjjjjjjj");
        // Hit in the middle of a frame, behind the shared frames: encoded from the backlog.
        assert_eq!(
            hub.subscribe(conn(2), "s", Some(45), None),
            Ok(SubscribeStart::Resumed)
        );
        let (chunks, _) = hub.pull(conn(2), 1 << 20, 1);
        assert_eq!(
            data_of(&decode(&chunks)),
            "eeeeeffffffffffgggggggggghhhhhhhhhhiiiiiiiiiijjjjjjjjjj"
        );
        // Miss: evicted offset, or another stream epoch: gap notice, then screen.
        let SubscribeStart::NeedsSnapshot(r3) =
            hub.subscribe(conn(3), "s", Some(10), None).unwrap()
        else {
            panic!()
        };
        let SubscribeStart::NeedsSnapshot(r4) = hub
            .subscribe(conn(4), "s", Some(90), Some("other"))
            .unwrap()
        else {
            panic!()
        };
        for (c, r) in [(conn(3), r3), (conn(4), r4)] {
            assert!(hub.on_snapshot(r, Some(&snapshot(100)), 2));
            let messages = decode(&hub.pull(c, 1 << 20, 3).0);
            assert_eq!(messages[0]["type"], "terminal_gap");
            assert_eq!(messages[0]["offset"], 100);
            assert_eq!(messages[1]["snapshot"], true);
        }
        // A snapshot older than the backlog (a flood outran the emulator) is delivered at
        // once, at the oldest offset still held, after a gap notice for what lies between.
        let SubscribeStart::NeedsSnapshot(r5) = hub.subscribe(conn(5), "s", None, None).unwrap()
        else {
            panic!()
        };
        let start = hub.stream("s").unwrap().backlog.start();
        assert!(start > 3, "the test needs an evicted prefix");
        assert!(hub.on_snapshot(r5, Some(&snapshot(3)), 2));
        let messages = decode(&hub.pull(conn(5), 1 << 20, 3).0);
        assert_eq!(messages[0]["type"], "terminal_gap");
        assert_eq!(messages[0]["since"], 3);
        assert_eq!(messages[0]["offset"], start);
        assert_eq!(messages[0]["reason"], EMULATOR_OUTRUN);
        assert_eq!(messages[1]["snapshot"], true);
        assert_eq!(messages[1]["offset"], start);
        assert!(hub.rerequest("s").is_empty());
        // One from another segment (before a discontinuity) is still refused.
        hub.discontinuity("s", "test");
        let SubscribeStart::NeedsSnapshot(r6) = hub.subscribe(conn(6), "s", None, None).unwrap()
        else {
            panic!()
        };
        assert!(!hub.on_snapshot(r6, Some(&snapshot(3)), 2));
        assert!(hub.rerequest("s").contains(&r6));
    }

    #[test]
    fn a_slow_viewer_falls_out_and_is_resynced_without_slowing_others() {
        let mut hub = Hub::new(limits());
        hub.open("s", 0);
        hub.subscribe(conn(1), "s", Some(0), None).unwrap();
        hub.subscribe(conn(2), "s", Some(0), None).unwrap();
        let mut fast = String::new();
        for i in 0..20u8 {
            hub.push("s", &[b'A' + i; 8], 1);
            fast.push_str(&data_of(&decode(&hub.pull(conn(1), 1 << 20, 1).0)));
        }
        assert_eq!(fast.len(), 160, "the fast viewer got every byte");
        // The slow one never pulled; its cursor (0) is out of the 64-byte backlog.
        let (chunks, resyncs) = hub.pull(conn(2), 1 << 20, 1);
        assert!(chunks.is_empty());
        assert_eq!(resyncs.len(), 1);
        assert!(hub.on_snapshot(resyncs[0].0, Some(&snapshot(160)), 1));
        let messages = decode(&hub.pull(conn(2), 1 << 20, 1).0);
        assert_eq!(messages[0]["type"], "terminal_gap");
        assert_eq!(messages[0]["since"], 0);
        assert_eq!(messages[1]["snapshot"], true);
    }

    #[test]
    fn too_many_resyncs_disconnect_the_viewer() {
        let mut hub = Hub::new(HubLimits {
            max_resyncs: 1,
            ..limits()
        });
        hub.open("s", 0);
        hub.subscribe(conn(1), "s", Some(0), None).unwrap();
        for _ in 0..2 {
            // Enough output to push the viewer's cursor out of both the shared frames and
            // the backlog.
            for _ in 0..5 {
                hub.push("s", &[b'x'; 100], 1);
            }
            let (_, resyncs) = hub.pull(conn(1), 1 << 20, 1);
            assert_eq!(resyncs.len(), 1);
            let head = hub.stream("s").unwrap().head();
            assert!(hub.on_snapshot(resyncs[0].0, Some(&snapshot(head)), 1));
        }
        assert_eq!(hub.take_overwhelmed(), [conn(1)]);
    }

    #[test]
    fn discontinuity_flushes_cut_characters_and_resyncs() {
        let mut hub = Hub::new(limits());
        hub.open("s", 0);
        hub.subscribe(conn(1), "s", Some(0), None).unwrap();
        hub.push("s", b"ab\xe2\x82", 1); // a cut euro sign
        hub.pull(conn(1), 1 << 20, 1);
        let start = hub.discontinuity("s", "capture re-armed").unwrap();
        assert_eq!(start, 4);
        assert!(matches!(
            hub.subscribe(conn(2), "s", Some(2), None),
            Ok(SubscribeStart::NeedsSnapshot(_))
        ));
        let request = hub.rerequest("s").into_iter().min().unwrap();
        assert!(hub.on_snapshot(request, Some(&snapshot(4)), 1));
        let messages = decode(&hub.pull(conn(1), 1 << 20, 1).0);
        assert_eq!(messages[0]["type"], "terminal_gap");
        assert_eq!(messages[0]["reason"], "capture re-armed");
    }

    #[test]
    fn bracketed_paste_looks_past_a_lagging_emulator() {
        let mut hub = Hub::new(limits());
        hub.open("s", 0);
        assert!(!hub.bracketed_paste("s"));
        hub.push("s", b"prompt \x1b[?2004h", 1);
        assert!(
            hub.bracketed_paste("s"),
            "the switch is in output the emulator has not seen"
        );
        hub.push("s", b"\x1b[?2004l done", 1);
        assert!(!hub.bracketed_paste("s"));
        assert!(!hub.bracketed_paste("unknown"));
    }

    #[test]
    fn limits_and_unknown_sessions() {
        let mut hub = Hub::new(HubLimits {
            max_subscriptions: 1,
            ..limits()
        });
        hub.open("a", 0);
        hub.open("b", 0);
        assert_eq!(
            hub.subscribe(conn(1), "zzz", None, None),
            Err(SubscribeError::UnknownSession)
        );
        hub.subscribe(conn(1), "a", None, None).unwrap();
        assert_eq!(
            hub.subscribe(conn(1), "b", None, None),
            Err(SubscribeError::TooMany(1))
        );
        assert!(hub.unsubscribe(conn(1), "a"));
        assert!(!hub.unsubscribe(conn(1), "a"));
        hub.subscribe(conn(1), "b", None, None).unwrap();
        assert_eq!(hub.close("b"), [conn(1)]);
        hub.remove_viewer(conn(1));
        assert!(hub.viewers.is_empty());
    }
}
