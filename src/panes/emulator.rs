//! The daemon's own terminal state for each pane, kept by a `vt100` emulator on its own
//! thread, off the output hot path.
//!
//! The event loop hands every chunk it reads from a pane to this thread (the same `Arc` the
//! backlog keeps, so nothing is copied) and never waits for it: the thread runs at a low
//! priority and may lag during output floods. A snapshot is the emulator's screen at the offset
//! it has reached, `E`; the caller follows it with the raw backlog bytes from `E`, so the client
//! ends up exactly at the live stream.
//!
//! **Screen state costs what is asked of it.** Drawing text cell by cell is what an emulator
//! spends its time on, and during a flood nearly all of it scrolls away unseen. So the
//! thread keeps a pane's newest output, up to [`EmulatorLimits::window`] bytes, unparsed,
//! and parses it exactly only when a screen is needed (a snapshot, a checkpoint, the
//! screen's text) or the output pauses for [`QUIET_PARSE`]. Older output that leaves the
//! window is parsed too, as long as the pane writes less than
//! [`EmulatorLimits::parse_rate`] bytes per second on average (an interactive agent: every
//! byte); beyond that it is skimmed ([`super::skim`]): its control sequences keep the
//! modes, colours, alternate screen and scroll region exact, and its text, which the
//! window's newest output draws over in a flood, is dropped.
//!
//! If the emulator falls further behind than the backlog holds (its thread starved of CPU),
//! it stops being fed, and once it has drained what it has it skips ahead to the newest
//! output ([`Emulators::catch_up`]). (tmux panes are then also re-seeded exactly once quiet.)

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU16;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::skim::Skimmer;

/// A pane whose output paused this long has its unparsed output parsed, so that its
/// screen is ready (and its bracketed-paste mode known) before anyone asks.
pub const QUIET_PARSE: Duration = Duration::from_millis(50);

/// While output flows, the thread takes it in batches this far apart (commands, such as a
/// snapshot for a new viewer, still wake it at once).
pub const BATCH: Duration = Duration::from_millis(10);

/// How much of a pane's output the emulator parses exactly (`[panes]` `screen_window` and
/// `screen_parse_rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmulatorLimits {
    /// Newest output kept unparsed, and parsed exactly whenever a screen is needed.
    pub window: usize,
    /// Output older than the window parsed per second (and the largest burst); beyond this
    /// rate it is skimmed.
    pub parse_rate: u64,
}

impl EmulatorLimits {
    /// The limits `[panes]` sets.
    pub fn of(config: &crate::config::PaneConfig) -> EmulatorLimits {
        EmulatorLimits {
            window: config.screen_window.min(config.backlog_bytes),
            parse_rate: config.screen_parse_rate,
        }
    }
}

impl Default for EmulatorLimits {
    fn default() -> Self {
        EmulatorLimits::of(&crate::config::PaneConfig::default())
    }
}

/// State shared between the event loop and the emulator thread for one pane.
#[derive(Debug, Default)]
pub struct PaneShared {
    /// Whether the program has enabled bracketed paste, as of the emulator's offset.
    pub bracketed_paste: AtomicBool,
    /// Bytes handed to the emulator and not taken off its queue yet.
    queued: AtomicU64,
    /// Stream offset the emulator has processed up to.
    processed: AtomicU64,
}

impl PaneShared {
    /// Fresh shared state.
    pub fn new() -> Arc<PaneShared> {
        Arc::new(PaneShared::default())
    }

    /// Bytes handed to the emulator that it has not taken off its queue yet.
    pub fn lag(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// Stream offset up to which [`PaneShared::bracketed_paste`] is known (output in the
    /// emulator's window is not parsed yet).
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Acquire)
    }
}

/// A pane's screen at a stream offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Stream offset the screen corresponds to.
    pub offset: u64,
    /// Escape sequences that reproduce the screen, cursor and input modes on a fresh
    /// terminal (starting with a full reset).
    pub screen: String,
    /// Rows of the pane.
    pub rows: u16,
    /// Columns of the pane.
    pub cols: u16,
}

/// What the emulator thread reports to the event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmulatorEvent {
    /// Answer to [`Emulators::snapshot`]; `None` when the pane is not emulated (not opened
    /// yet, or waiting for its re-seed).
    Snapshot {
        /// Session.
        session: String,
        /// The request's id.
        request: u64,
        /// The screen.
        snapshot: Option<Snapshot>,
    },
    /// Answer to [`Emulators::text`]: the screen as plain text (`None` if not emulated).
    ScreenText {
        /// Session.
        session: String,
        /// The visible rows, trailing blanks trimmed, one per line.
        text: Option<String>,
    },
    /// Answer to [`Emulators::checkpoint`]: the screen after every byte handed over so far
    /// (`None` if the pane is not emulated).
    Checkpoint {
        /// Session.
        session: String,
        /// The screen.
        snapshot: Option<Snapshot>,
    },
    /// Output faster than the parse rate was skimmed: the screen may lack text drawn
    /// before the window that nothing drew over since (rows outside a scroll region).
    Skimmed {
        /// Session.
        session: String,
    },
    /// The program switched bracketed paste on or off.
    PasteMode {
        /// Session.
        session: String,
        /// New state.
        on: bool,
    },
}

/// Commands that must be served promptly (they jump ahead of queued output).
enum Control {
    Open {
        session: String,
        shared: Arc<PaneShared>,
        rows: u16,
        cols: u16,
        offset: u64,
        seed: Vec<u8>,
    },
    Snapshot {
        session: String,
        request: u64,
    },
    Text {
        session: String,
    },
    Resize {
        session: String,
        rows: u16,
        cols: u16,
    },
    CatchUp {
        session: String,
        offset: u64,
        chunks: Vec<(u64, Arc<[u8]>)>,
    },
    Close {
        session: String,
    },
}

/// The offset of a [`Data`] item that is a checkpoint request rather than output.
const CHECKPOINT_MARK: u64 = u64::MAX;

/// Pane output, in stream order.
struct Data {
    session: String,
    offset: u64,
    bytes: Arc<[u8]>,
}

/// What the emulator did with the output it was handed, over all panes.
#[derive(Debug, Default)]
pub struct EmulatorCounts {
    /// Bytes parsed exactly.
    pub parsed: AtomicU64,
    /// Bytes skimmed for their control sequences.
    pub skimmed: AtomicU64,
}

/// Handle on the emulator thread.
pub struct Emulators {
    control: Sender<Control>,
    data: Sender<Data>,
    counts: Arc<EmulatorCounts>,
}

impl Emulators {
    /// Starts the thread; it reports through `sink`.
    pub fn start(
        limits: EmulatorLimits,
        sink: impl Fn(EmulatorEvent) + Send + 'static,
    ) -> std::io::Result<Emulators> {
        let (control, control_rx) = crossbeam_channel::unbounded();
        let (data, data_rx) = crossbeam_channel::unbounded();
        let counts = Arc::new(EmulatorCounts::default());
        let thread_counts = counts.clone();
        std::thread::Builder::new()
            .name("terminal-emulator".into())
            .spawn(move || {
                // The emulator may lag during output floods (snapshots then carry more raw
                // bytes); it must never take CPU from tmux, the event loop or viewers. Nothing
                // waits for it: it shares no lock with the loop.
                let _ = crate::sys::lower_thread_priority(15);
                run(limits, thread_counts, control_rx, data_rx, sink)
            })?;
        Ok(Emulators {
            control,
            data,
            counts,
        })
    }

    /// Bytes parsed and skimmed so far, over all panes.
    pub fn counts(&self) -> &EmulatorCounts {
        &self.counts
    }

    /// Starts (or restarts) emulating a pane whose stream continues at `offset`, from a blank
    /// screen fed with `seed` (escape sequences describing the current screen, or nothing).
    pub fn open(
        &self,
        session: &str,
        shared: Arc<PaneShared>,
        rows: u16,
        cols: u16,
        offset: u64,
        seed: Vec<u8>,
    ) {
        shared.queued.store(0, Ordering::Release);
        let _ = self.control.send(Control::Open {
            session: session.into(),
            shared,
            rows,
            cols,
            offset,
            seed,
        });
    }

    /// Hands the emulator a chunk of output at `offset`. Returns false, without sending,
    /// when the emulator already lags `limit` bytes behind: it must then be re-seeded.
    pub fn feed(
        &self,
        session: &str,
        shared: &PaneShared,
        offset: u64,
        bytes: Arc<[u8]>,
        limit: u64,
    ) -> bool {
        if shared.queued.load(Ordering::Acquire) + bytes.len() as u64 > limit {
            return false;
        }
        self.send_data(session, shared, offset, bytes);
        true
    }

    /// Queues output for the thread, counting it as lag until processed.
    fn send_data(&self, session: &str, shared: &PaneShared, offset: u64, bytes: Arc<[u8]>) {
        shared
            .queued
            .fetch_add(bytes.len() as u64, Ordering::AcqRel);
        let _ = self.data.send(Data {
            session: session.into(),
            offset,
            bytes,
        });
    }

    /// Asks for the pane's screen; the answer comes back as [`EmulatorEvent::Snapshot`].
    pub fn snapshot(&self, session: &str, request: u64) {
        let _ = self.control.send(Control::Snapshot {
            session: session.into(),
            request,
        });
    }

    /// Asks for the pane's screen as plain text; the answer comes back as
    /// [`EmulatorEvent::ScreenText`]. Output still queued for the emulator is not in it, so
    /// ask once the pane has been quiet.
    pub fn text(&self, session: &str) {
        let _ = self.control.send(Control::Text {
            session: session.into(),
        });
    }

    /// Asks for the pane's screen once the emulator has processed everything handed to it
    /// before this call; the answer comes back as [`EmulatorEvent::Checkpoint`].
    pub fn checkpoint(&self, session: &str) {
        // Through the data channel, so that it comes after the output queued so far.
        let _ = self.data.send(Data {
            session: session.into(),
            offset: CHECKPOINT_MARK,
            bytes: Arc::from(&[][..]),
        });
    }

    /// The pane was resized: the screen takes the new size (output already queued for the
    /// emulator is applied at the new size; the program redraws after its SIGWINCH anyway).
    pub fn resize(&self, session: &str, rows: u16, cols: u16) {
        let _ = self.control.send(Control::Resize {
            session: session.into(),
            rows,
            cols,
        });
    }

    /// The emulator fell too far behind: it skips to `offset`, keeping the screen and modes
    /// it has, and goes on from there with `chunks` (the newest output, from `offset` on).
    /// Output it still has queued is dropped unparsed. The screen then lacks only what the
    /// skipped bytes drew and the newest output did not draw over: in a flood of lines,
    /// nothing, once the chunks hold a screenful.
    /// The skip and the parsing of `chunks` are one step of the emulator thread, so no
    /// snapshot is ever taken in between (its screen would be behind its offset).
    pub fn catch_up(&self, session: &str, offset: u64, chunks: Vec<(u64, Arc<[u8]>)>) {
        let _ = self.control.send(Control::CatchUp {
            session: session.into(),
            offset,
            chunks,
        });
    }

    /// Stops emulating a pane.
    pub fn close(&self, session: &str) {
        let _ = self.control.send(Control::Close {
            session: session.into(),
        });
    }
}

struct PaneEmulator {
    shared: Arc<PaneShared>,
    parser: vt100::Parser,
    /// Stream offset the parser has consumed (parsed or skimmed) up to.
    offset: u64,
    /// The last bytes consumed (at most 3), to tell whether the stream ends inside a
    /// character.
    tail: Vec<u8>,
    rows: u16,
    cols: u16,
    /// The newest output, from `offset` on, not parsed yet.
    window: VecDeque<Arc<[u8]>>,
    /// Bytes in `window`.
    window_bytes: usize,
    /// When output last arrived.
    last_output: Instant,
    /// Output older than the window that may still be parsed rather than skimmed, in bytes.
    credit: f64,
    /// When `credit` was last topped up.
    credit_at: Instant,
    /// Skims output that leaves the window faster than the parse rate.
    skimmer: Skimmer,
    /// Whether the last output consumed was skimmed (its last sequence or character may be
    /// cut).
    skimmed: bool,
    /// Scratch space for skimmed sequences.
    kept: Vec<u8>,
    /// The parsed output from its last `ESC` on (at most a string sequence's length): a
    /// sequence it leaves unfinished is handed to the skimmer when skimming takes over.
    parsed_tail: Vec<u8>,
    /// The thread's byte counts.
    counts: Arc<EmulatorCounts>,
}

impl PaneEmulator {
    fn new(
        shared: Arc<PaneShared>,
        parser: vt100::Parser,
        offset: u64,
        (rows, cols): (u16, u16),
        limits: &EmulatorLimits,
        counts: Arc<EmulatorCounts>,
    ) -> PaneEmulator {
        let now = Instant::now();
        PaneEmulator {
            shared,
            parser,
            offset,
            tail: Vec::new(),
            rows,
            cols,
            window: VecDeque::new(),
            window_bytes: 0,
            last_output: now,
            credit: limits.parse_rate as f64,
            credit_at: now,
            skimmer: Skimmer::new(),
            skimmed: false,
            kept: Vec::new(),
            parsed_tail: Vec::new(),
            counts,
        }
    }

    /// The stream offset the next chunk must start at.
    fn end(&self) -> u64 {
        self.offset + self.window_bytes as u64
    }

    /// Takes a chunk into the window if it continues the stream exactly (stale chunks, from
    /// before a re-seed, are skipped); output that leaves the window is parsed or skimmed.
    fn take(
        &mut self,
        session: &str,
        offset: u64,
        bytes: Arc<[u8]>,
        limits: &EmulatorLimits,
        sink: &impl Fn(EmulatorEvent),
    ) {
        if offset != self.end() || bytes.is_empty() {
            return;
        }
        self.last_output = Instant::now();
        self.window_bytes += bytes.len();
        self.window.push_back(bytes);
        while let Some(oldest) = self.window.front()
            && self.window_bytes - oldest.len() >= limits.window
        {
            let oldest = self.window.pop_front().expect("checked");
            self.window_bytes -= oldest.len();
            if self.may_parse(oldest.len(), limits) {
                self.parse(session, &oldest, sink);
            } else {
                self.skim(session, &oldest, sink);
            }
        }
    }

    /// Whether `len` bytes leaving the window can still be parsed within the parse rate
    /// (and if so, spends the credit).
    fn may_parse(&mut self, len: usize, limits: &EmulatorLimits) -> bool {
        let now = Instant::now();
        let rate = limits.parse_rate as f64;
        let earned = now.duration_since(self.credit_at).as_secs_f64() * rate;
        self.credit = (self.credit + earned).min(rate);
        self.credit_at = now;
        if self.credit >= len as f64 {
            self.credit -= len as f64;
            true
        } else {
            false
        }
    }

    /// Parses everything in the window: the screen is then exact at the stream's end.
    fn settle(&mut self, session: &str, sink: &impl Fn(EmulatorEvent)) {
        while let Some(chunk) = self.window.pop_front() {
            self.window_bytes -= chunk.len();
            self.parse(session, &chunk, sink);
        }
    }

    /// When the window should be parsed because output paused.
    fn quiet_at(&self) -> Option<Instant> {
        (!self.window.is_empty()).then(|| self.last_output + QUIET_PARSE)
    }

    /// Parses the next output exactly.
    fn parse(&mut self, session: &str, bytes: &[u8], sink: &impl Fn(EmulatorEvent)) {
        let before = self.parser.screen().bracketed_paste();
        let mut text = bytes;
        if std::mem::take(&mut self.skimmed) {
            // Back from skimming: a sequence it cut goes first (these bytes continue it);
            // otherwise the rest of a character whose start was dropped is skipped.
            let partial = self.skimmer.finish();
            if partial.is_empty() {
                let cut = text
                    .iter()
                    .take(3)
                    .take_while(|&&b| (0x80..0xc0).contains(&b))
                    .count();
                text = &text[cut..];
            } else {
                self.parser.process(&partial);
            }
        }
        self.parser.process(text);
        self.remember_tail(text);
        self.counts
            .parsed
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.consumed(session, bytes, before, sink);
    }

    /// Keeps the parsed output from its last `ESC` on, while that is short enough to be a
    /// sequence the skimmer would keep.
    fn remember_tail(&mut self, parsed: &[u8]) {
        const LONGEST: usize = super::skim::MAX_STRING + 2;
        match memchr::memrchr(0x1b, parsed) {
            Some(at) if parsed.len() - at <= LONGEST => {
                self.parsed_tail.clear();
                self.parsed_tail.extend_from_slice(&parsed[at..]);
            }
            Some(_) => self.parsed_tail.clear(),
            None if !self.parsed_tail.is_empty()
                && self.parsed_tail.len() + parsed.len() <= LONGEST =>
            {
                self.parsed_tail.extend_from_slice(parsed);
            }
            None => self.parsed_tail.clear(),
        }
    }

    /// Skims the next output: its control sequences are parsed, its text dropped.
    fn skim(&mut self, session: &str, bytes: &[u8], sink: &impl Fn(EmulatorEvent)) {
        let before = self.parser.screen().bracketed_paste();
        if !std::mem::replace(&mut self.skimmed, true) {
            // Taking over from parsing: a sequence the parsed output left unfinished is
            // skimmed whole once it ends (its new `ESC` restarts the parser cleanly).
            let mut already_parsed = Vec::new();
            self.skimmer.skim(&self.parsed_tail, &mut already_parsed);
            self.parsed_tail.clear();
            sink(EmulatorEvent::Skimmed {
                session: session.into(),
            });
        }
        self.kept.clear();
        self.skimmer.skim(bytes, &mut self.kept);
        self.parser.process(&self.kept);
        self.counts
            .skimmed
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.consumed(session, bytes, before, sink);
    }

    /// Moves the offset past consumed output and reports a change of bracketed paste.
    fn consumed(
        &mut self,
        session: &str,
        bytes: &[u8],
        paste_before: bool,
        sink: &impl Fn(EmulatorEvent),
    ) {
        self.offset += bytes.len() as u64;
        self.tail
            .extend_from_slice(&bytes[bytes.len().saturating_sub(3)..]);
        let excess = self.tail.len().saturating_sub(3);
        self.tail.drain(..excess);
        let after = self.parser.screen().bracketed_paste();
        if paste_before != after {
            self.shared.bracketed_paste.store(after, Ordering::Release);
            sink(EmulatorEvent::PasteMode {
                session: session.into(),
                on: after,
            });
        }
        self.shared.processed.store(self.offset, Ordering::Release);
    }

    /// The screen after everything handed over so far, at the offset where the last
    /// complete character ends: the lead bytes of a character cut by a read draw nothing
    /// yet, so the screen there is the same, and output sent after it starts with the whole
    /// character instead of its middle. (Likewise a sequence cut while skimming.)
    fn snapshot(&mut self, session: &str, sink: &impl Fn(EmulatorEvent)) -> Snapshot {
        self.settle(session, sink);
        let cut = if self.skimmed && self.skimmer.partial_len() > 0 {
            self.skimmer.partial_len()
        } else {
            super::utf8::incomplete_tail(&self.tail)
        };
        Snapshot {
            offset: self.offset - cut as u64,
            screen: screen_state(self.parser.screen()),
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// Skips to `offset` (ahead of everything it has): the window is skimmed for its modes.
    fn skip_to(&mut self, session: &str, offset: u64, sink: &impl Fn(EmulatorEvent)) {
        while let Some(chunk) = self.window.pop_front() {
            self.window_bytes -= chunk.len();
            self.skim(session, &chunk, sink);
        }
        self.offset = offset;
        self.tail.clear();
        // A sequence cut before the skip does not continue after it.
        self.skimmer.finish();
        self.skimmed = true;
        self.shared.processed.store(self.offset, Ordering::Release);
    }
}

/// Escape sequences reproducing `screen` on a fresh terminal: full reset, alternate screen
/// if active, contents with colours and attributes, cursor position and visibility, and input
/// modes (keypad, cursor keys, bracketed paste, mouse).
pub fn screen_state(screen: &vt100::Screen) -> String {
    let mut out = String::from("\x1bc");
    if screen.alternate_screen() {
        out.push_str("\x1b[?1049h");
    }
    out.push_str(&screen.state_formatted());
    out
}

fn new_parser(rows: u16, cols: u16) -> vt100::Parser {
    let rows = NonZeroU16::new(rows.max(1)).expect("non-zero");
    let cols = NonZeroU16::new(cols.max(1)).expect("non-zero");
    vt100::Parser::new(rows, cols, 0)
}

/// The emulator thread's panes.
struct Thread<S> {
    limits: EmulatorLimits,
    counts: Arc<EmulatorCounts>,
    panes: HashMap<String, PaneEmulator>,
    sink: S,
}

impl<S: Fn(EmulatorEvent)> Thread<S> {
    /// Takes output into its pane's window, or answers a checkpoint request queued behind
    /// it.
    fn take_data(&mut self, chunk: Data, control: &Receiver<Control>) {
        // Commands sent before this item are in their channel by now, and are handled
        // first: the two channels alone do not keep their order (a re-seed's `Open`, a
        // catch-up, must come before the output and checkpoints sent after it), and a
        // command never waits behind queued output.
        while let Ok(command) = control.try_recv() {
            self.handle(command);
        }
        if chunk.offset == CHECKPOINT_MARK {
            let snapshot = self
                .panes
                .get_mut(&chunk.session)
                .map(|pane| pane.snapshot(&chunk.session, &self.sink));
            (self.sink)(EmulatorEvent::Checkpoint {
                session: chunk.session,
                snapshot,
            });
            return;
        }
        if let Some(pane) = self.panes.get(&chunk.session) {
            // Saturating: a re-seed zeroes the count while older chunks are still queued.
            let len = chunk.bytes.len() as u64;
            let _ =
                pane.shared
                    .queued
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                        Some(queued.saturating_sub(len))
                    });
        }
        if let Some(pane) = self.panes.get_mut(&chunk.session) {
            pane.take(
                &chunk.session,
                chunk.offset,
                chunk.bytes,
                &self.limits,
                &self.sink,
            );
        }
    }

    fn handle(&mut self, command: Control) {
        let sink = &self.sink;
        match command {
            Control::Open {
                session,
                shared,
                rows,
                cols,
                offset,
                seed,
            } => {
                let mut parser = new_parser(rows, cols);
                parser.process(&seed);
                shared
                    .bracketed_paste
                    .store(parser.screen().bracketed_paste(), Ordering::Release);
                shared.processed.store(offset, Ordering::Release);
                let pane = PaneEmulator::new(
                    shared,
                    parser,
                    offset,
                    (rows, cols),
                    &self.limits,
                    self.counts.clone(),
                );
                self.panes.insert(session, pane);
            }
            Control::Snapshot { session, request } => {
                let snapshot = self
                    .panes
                    .get_mut(&session)
                    .map(|pane| pane.snapshot(&session, sink));
                sink(EmulatorEvent::Snapshot {
                    session,
                    request,
                    snapshot,
                });
            }
            Control::Text { session } => {
                let text = self.panes.get_mut(&session).map(|pane| {
                    pane.settle(&session, sink);
                    let screen = pane.parser.screen();
                    let (_, cols) = screen.size();
                    screen
                        .rows(0, cols.get())
                        .map(|row| row.trim_end().to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                });
                sink(EmulatorEvent::ScreenText { session, text });
            }
            Control::Resize {
                session,
                rows,
                cols,
            } => {
                if let Some(pane) = self.panes.get_mut(&session)
                    && let (Some(r), Some(c)) = (NonZeroU16::new(rows), NonZeroU16::new(cols))
                {
                    // The output so far was drawn at the old size.
                    pane.settle(&session, sink);
                    pane.parser.set_size(r, c);
                    pane.rows = rows;
                    pane.cols = cols;
                }
            }
            Control::CatchUp {
                session,
                offset,
                chunks,
            } => {
                // Only forwards. A pane already past `offset` (it took more of its queue
                // than the catch-up assumed) keeps its place: moved back, its screen would
                // be ahead of its offset, and the bytes in between parsed twice. The chunks
                // then continue it from its own end (they are cut where the backlog's are).
                if let Some(pane) = self.panes.get_mut(&session) {
                    if offset > pane.end() {
                        pane.skip_to(&session, offset, sink);
                    }
                    for (offset, bytes) in chunks {
                        pane.take(&session, offset, bytes, &self.limits, sink);
                    }
                }
            }
            Control::Close { session } => {
                self.panes.remove(&session);
            }
        }
    }

    /// Parses the window of every pane whose output has paused; returns when the next one
    /// falls due.
    fn settle_quiet(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for (session, pane) in &mut self.panes {
            match pane.quiet_at() {
                Some(due) if due <= now => pane.settle(session, &self.sink),
                Some(due) => next = Some(next.map_or(due, |n| n.min(due))),
                None => {}
            }
        }
        next
    }
}

fn run(
    limits: EmulatorLimits,
    counts: Arc<EmulatorCounts>,
    control: Receiver<Control>,
    data: Receiver<Data>,
    sink: impl Fn(EmulatorEvent),
) {
    let mut thread = Thread {
        limits,
        counts,
        panes: HashMap::new(),
        sink,
    };
    // When the next pane's output will have been quiet for long enough (or sooner): every
    // pane with unparsed output is due no later than this.
    let mut quiet_due: Option<Instant> = None;
    loop {
        // Commands first, so a snapshot never waits behind a flood of queued output.
        let mut took = false;
        loop {
            match control.try_recv() {
                Ok(command) => {
                    thread.handle(command);
                    took = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if quiet_due.is_some_and(|due| due <= Instant::now()) {
            quiet_due = thread.settle_quiet();
        }
        // Then all the output there is (taking it is cheap: the window defers the parsing).
        let mut flowing = false;
        loop {
            match data.try_recv() {
                Ok(chunk) => {
                    thread.take_data(chunk, &control);
                    flowing = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if (took || flowing) && quiet_due.is_none() {
            quiet_due = Some(Instant::now() + QUIET_PARSE);
        }
        let until_quiet = quiet_due.map_or(Duration::from_secs(3600), |due| {
            due.saturating_duration_since(Instant::now())
        });
        // Wait without taking anything: the next turn takes commands before output, so a
        // command sent before a checkpoint is always handled before it.
        let mut ready = crossbeam_channel::Select::new();
        ready.recv(&control);
        if flowing {
            // Output is flowing: gather it for a moment, woken early only by a command,
            // rather than by every chunk (a flood of small reads would cost the machine a
            // thread switch each).
            let _ = ready.ready_timeout(BATCH.min(until_quiet));
        } else {
            // Nothing to do: sleep until either channel has something, or a pane's output
            // has been quiet long enough to parse its window.
            ready.recv(&data);
            let _ = ready.ready_timeout(until_quiet);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn replay(bytes: &[u8]) -> vt100::Parser {
        let mut parser = new_parser(24, 80);
        parser.process(bytes);
        parser
    }

    #[test]
    fn screen_state_reproduces_contents_cursor_and_modes() {
        let original = replay(
            b"plain line\r\n\x1b[1;31mbold red\x1b[0m and \x1b[44mblue bg\x1b[0m\r\n\
              \xe2\x9c\x93 wide: \xe6\x97\xa5\xe6\x9c\xac\x1b[5;10H\x1b[?2004h\x1b[?1h",
        );
        let copy = replay(screen_state(original.screen()).as_bytes());
        assert_eq!(copy.screen().contents(), original.screen().contents());
        assert_eq!(copy.screen().cursor_position(), (4, 9));
        assert!(copy.screen().bracketed_paste());
        assert!(copy.screen().application_cursor());
        assert_eq!(
            copy.screen().cell(1, 0).unwrap().fgcolor(),
            vt100::Color::Idx(1)
        );
        assert!(copy.screen().cell(1, 0).unwrap().bold());
        assert_eq!(
            copy.screen().cell(1, 18).unwrap().bgcolor(),
            vt100::Color::Idx(4)
        );
        // Over a screen that already shows something else, the reset wipes it first.
        let mut dirty = replay(b"garbage everywhere\x1b[?1049h more");
        dirty.process(screen_state(original.screen()).as_bytes());
        assert_eq!(dirty.screen().contents(), original.screen().contents());
        assert!(!dirty.screen().alternate_screen());
    }

    /// Real programs' pane output, recorded from tmux with `tests/fixtures/record-pane.sh`,
    /// next to the screen tmux itself showed after it.
    #[test]
    fn recorded_panes_end_on_the_screen_tmux_showed_and_snapshots_reproduce_them() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/panes");
        let mut names: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        assert!(
            names.len() >= 5,
            "fixtures missing under {}",
            root.display()
        );
        for dir in names {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let meta: Vec<u16> = std::fs::read_to_string(dir.join("meta"))
                .unwrap()
                .split_whitespace()
                .map(|n| n.parse().unwrap())
                .collect();
            let [rows, cols, cursor_x, cursor_y, alternate] = meta[..] else {
                panic!("{name}: meta must hold 5 numbers");
            };
            let output = std::fs::read(dir.join("output.bin")).unwrap();
            let mut parser = new_parser(rows, cols);
            parser.process(&output);
            let screen = parser.screen();
            let ours: Vec<String> = screen
                .rows(0, cols)
                .map(|r| r.trim_end().to_string())
                .collect();
            let tmux_screen = std::fs::read_to_string(dir.join("screen.txt")).unwrap();
            let theirs: Vec<&str> = tmux_screen.lines().map(str::trim_end).collect();
            assert_eq!(ours, theirs, "{name}: the screen differs from tmux's");
            assert_eq!(
                screen.cursor_position(),
                (cursor_y, cursor_x),
                "{name}: cursor (row, col)"
            );
            assert_eq!(screen.alternate_screen(), alternate == 1, "{name}");

            // A snapshot brings a fresh terminal to the same screen, attributes included.
            let mut copy = new_parser(rows, cols);
            copy.process(screen_state(screen).as_bytes());
            let copied = copy.screen();
            assert_eq!(
                copied.contents_formatted(),
                screen.contents_formatted(),
                "{name}"
            );
            assert_eq!(copied.cursor_position(), screen.cursor_position(), "{name}");
            assert_eq!(
                copied.alternate_screen(),
                screen.alternate_screen(),
                "{name}"
            );
            assert_eq!(copied.bracketed_paste(), screen.bracketed_paste(), "{name}");
            assert_eq!(
                copied.application_cursor(),
                screen.application_cursor(),
                "{name}"
            );
            assert_eq!(copied.hide_cursor(), screen.hide_cursor(), "{name}");
        }
    }

    /// A flood bigger than the window, with the parse rate at zero: everything but the
    /// window is skimmed, and the screen a snapshot gives is still the one a full parse
    /// gives, modes included, after every recorded program.
    #[test]
    fn a_flood_skimmed_beyond_the_window_leaves_the_screen_exact() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/panes");
        let mut dirs: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        dirs.sort();
        assert!(!dirs.is_empty());
        let limits = EmulatorLimits {
            window: 4096,
            parse_rate: 0,
        };
        for dir in dirs {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let mut input = std::fs::read(dir.join("output.bin")).unwrap();
            for i in 0..3000 {
                input.extend_from_slice(
                    format!("\x1b[3{}mline {i} \u{2713}\x1b[0m tail\r\n", i % 8).as_bytes(),
                );
                match i {
                    500 => input.extend_from_slice(b"\x1b[?2004h\x1b[?1h"),
                    1000 => input.extend_from_slice(b"\x1b[?1049h\x1b[2J\x1b[H"),
                    1500 => input.extend_from_slice(b"\x1b[4;20r\x1b[1;44m"),
                    // (Rows outside a scroll region keep what was drawn there: only a
                    // region that a later window redraws is exact, hence the reset.)
                    1600 => input.extend_from_slice(b"\x1b[r"),
                    2000 => input.extend_from_slice(b"\x1b]0;a title\x07\x1b[?25l"),
                    _ => {}
                }
            }
            let (tx, rx) = crossbeam_channel::unbounded();
            let emulators = Emulators::start(limits, move |e| tx.send(e).unwrap()).unwrap();
            let shared = PaneShared::new();
            emulators.open("s", shared.clone(), 24, 80, 0, Vec::new());
            // Reads cut characters and sequences anywhere.
            let mut offset = 0;
            for chunk in input.chunks(997) {
                assert!(emulators.feed("s", &shared, offset, Arc::from(chunk), 1 << 30));
                offset += chunk.len() as u64;
            }
            emulators.checkpoint("s");
            let snapshot = loop {
                match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
                    EmulatorEvent::Checkpoint { snapshot, .. } => break snapshot.unwrap(),
                    _ => continue,
                }
            };
            assert_eq!(snapshot.offset, input.len() as u64, "{name}");
            let whole = replay(&input);
            let copy = replay(snapshot.screen.as_bytes());
            let (a, b) = (whole.screen(), copy.screen());
            assert_eq!(b.contents_formatted(), a.contents_formatted(), "{name}");
            assert_eq!(b.cursor_position(), a.cursor_position(), "{name}");
            assert!(b.alternate_screen() && b.bracketed_paste(), "{name}");
            assert!(b.application_cursor() && b.hide_cursor(), "{name}");
        }
    }

    /// A sequence cut where skimming takes over from parsing (the parse rate ran out in
    /// its middle) still takes effect, and the screen a checkpoint gives is at the end.
    #[test]
    fn a_sequence_cut_where_skimming_takes_over_still_counts() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let limits = EmulatorLimits {
            window: 0,
            parse_rate: 10,
        };
        let emulators = Emulators::start(limits, move |e| tx.send(e).unwrap()).unwrap();
        let shared = PaneShared::new();
        emulators.open("s", shared.clone(), 5, 20, 0, Vec::new());
        // Parsed (7 bytes of credit), then skimmed (the credit is spent).
        for (offset, chunk) in [(0, &b"ab\x1b[?20"[..]), (7, &b"04h and more text"[..])] {
            assert!(emulators.feed("s", &shared, offset, Arc::from(chunk), 1 << 20));
        }
        emulators.checkpoint("s");
        let mut skimmed = false;
        let snapshot = loop {
            match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
                EmulatorEvent::Checkpoint { snapshot, .. } => break snapshot.unwrap(),
                EmulatorEvent::Skimmed { .. } => skimmed = true,
                _ => {}
            }
        };
        assert!(skimmed, "the second chunk was skimmed");
        assert_eq!(snapshot.offset, 24);
        assert!(
            replay(snapshot.screen.as_bytes())
                .screen()
                .bracketed_paste()
        );
        assert!(shared.bracketed_paste.load(Ordering::Acquire));
    }

    #[test]
    fn thread_follows_fed_output_and_answers_snapshots() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let emulators =
            Emulators::start(EmulatorLimits::default(), move |e| tx.send(e).unwrap()).unwrap();
        let shared = PaneShared::new();
        emulators.open("s", shared.clone(), 5, 20, 100, b"seeded\r\n".to_vec());
        assert!(emulators.feed(
            "s",
            &shared,
            100,
            Arc::from(&b"hello\x1b[?2004h"[..]),
            1 << 20
        ));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            EmulatorEvent::PasteMode {
                session: "s".into(),
                on: true
            }
        );
        assert!(shared.bracketed_paste.load(Ordering::Acquire));
        // A chunk that does not continue the stream (stale, from before a re-seed) is skipped.
        assert!(emulators.feed("s", &shared, 5, Arc::from(&b"IGNORED"[..]), 1 << 20));
        emulators.snapshot("s", 7);
        match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
            EmulatorEvent::Snapshot {
                request: 7,
                snapshot: Some(snapshot),
                ..
            } => {
                assert_eq!(snapshot.offset, 113);
                let copy = replay(snapshot.screen.as_bytes());
                assert!(copy.screen().contents().starts_with("seeded\nhello"));
                assert!(!copy.screen().contents().contains("IGNORED"));
            }
            other => panic!("{other:?}"),
        }
        // Feeding refuses once the emulator lags more than the limit.
        assert!(!emulators.feed("s", &shared, 113, Arc::from(&[b'x'; 64][..]), 10));
        emulators.close("s");
        emulators.snapshot("s", 8);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            EmulatorEvent::Snapshot {
                session: "s".into(),
                request: 8,
                snapshot: None
            }
        );
    }

    #[test]
    fn catching_up_never_moves_a_screen_behind_what_it_shows() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let emulators =
            Emulators::start(EmulatorLimits::default(), move |e| tx.send(e).unwrap()).unwrap();
        let shared = PaneShared::new();
        emulators.open("s", shared.clone(), 10, 20, 0, Vec::new());
        let chunks: Vec<(u64, Arc<[u8]>)> = (0..4u64)
            .map(|i| (i * 8, Arc::from(format!("line-{i}\r\n").as_bytes())))
            .collect();
        let checkpoint = |emulators: &Emulators| {
            emulators.checkpoint("s");
            loop {
                match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
                    EmulatorEvent::Checkpoint {
                        snapshot: Some(snapshot),
                        ..
                    } => return snapshot,
                    EmulatorEvent::Checkpoint { snapshot: None, .. } => panic!("no pane"),
                    _ => {}
                }
            }
        };
        for (offset, bytes) in &chunks[..3] {
            assert!(emulators.feed("s", &shared, *offset, bytes.clone(), 1 << 20));
        }
        assert_eq!(checkpoint(&emulators).offset, 24);
        // A catch-up that starts before where the emulator already is (it drained its queue
        // faster than the loop assumed): the screen goes on from its own offset.
        emulators.catch_up("s", 8, chunks[1..].to_vec());
        let snapshot = checkpoint(&emulators);
        assert_eq!(snapshot.offset, 32);
        let screen = replay(snapshot.screen.as_bytes());
        let lines: Vec<String> = screen
            .screen()
            .contents()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        assert_eq!(lines, ["line-0", "line-1", "line-2", "line-3"]);
        // A catch-up ahead of it skips there, as before.
        emulators.catch_up("s", 40, vec![(40, Arc::from(&b"line-5\r\n"[..]))]);
        assert_eq!(checkpoint(&emulators).offset, 48);
    }
}
