//! The daemon's own terminal state for each pane, kept by a `vt100` emulator on its own
//! thread, off the output hot path.
//!
//! The event loop appends pane output to the pane's [`SharedBacklog`] and nudges this thread;
//! the thread feeds the emulator from the backlog at its own pace (it may lag during output
//! floods). A snapshot is the emulator's screen at the offset it has reached, `E`; the caller
//! follows it with the raw backlog bytes from `E`, so the client ends up exactly at the live
//! stream. If the emulator falls further behind than the backlog holds it reports
//! [`EmulatorEvent::Lost`] and waits to be re-seeded.

use std::collections::HashMap;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::backlog::{Backlog, SharedBacklog, Unavailable};

/// State shared between the event loop and the emulator thread for one pane.
#[derive(Debug)]
pub struct PaneShared {
    /// Recent raw output.
    pub backlog: SharedBacklog,
    /// Whether the program has enabled bracketed paste, as of the emulator's offset.
    pub bracketed_paste: AtomicBool,
    /// Set when the loop has nudged the thread and the thread has not yet looked.
    nudged: AtomicBool,
}

impl PaneShared {
    /// Shared state with an empty backlog of `capacity` bytes starting at `start`.
    pub fn new(capacity: usize, start: u64) -> Arc<PaneShared> {
        Arc::new(PaneShared {
            backlog: Arc::new(parking_lot::Mutex::new(Backlog::new(capacity, start))),
            bracketed_paste: AtomicBool::new(false),
            nudged: AtomicBool::new(false),
        })
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
    /// Answer to [`Emulators::snapshot`]; `None` when the emulator has lost track.
    Snapshot {
        /// Session.
        session: String,
        /// The request's id.
        request: u64,
        /// The screen, unless the emulator is lost.
        snapshot: Option<Snapshot>,
    },
    /// The emulator fell behind what the backlog holds; it needs a re-seed.
    Lost {
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

enum Command {
    Open {
        session: String,
        shared: Arc<PaneShared>,
        rows: u16,
        cols: u16,
        offset: u64,
        seed: Vec<u8>,
    },
    Advance {
        session: String,
    },
    Snapshot {
        session: String,
        request: u64,
    },
    Close {
        session: String,
    },
}

/// Handle on the emulator thread.
pub struct Emulators {
    tx: Sender<Command>,
}

/// Bytes fed to an emulator between checks for new commands.
const BLOCK: usize = 64 * 1024;

impl Emulators {
    /// Starts the thread; it reports through `sink`.
    pub fn start(sink: impl Fn(EmulatorEvent) + Send + 'static) -> std::io::Result<Emulators> {
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("terminal-emulator".into())
            .spawn(move || run(rx, sink))?;
        Ok(Emulators { tx })
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
        let _ = self.tx.send(Command::Open {
            session: session.into(),
            shared,
            rows,
            cols,
            offset,
            seed,
        });
    }

    /// Tells the thread that new bytes are in the pane's backlog. Cheap when called often:
    /// only the first call before the thread looks sends anything.
    pub fn advance(&self, session: &str, shared: &PaneShared) {
        if !shared.nudged.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(Command::Advance {
                session: session.into(),
            });
        }
    }

    /// Asks for the pane's screen; the answer comes back as [`EmulatorEvent::Snapshot`].
    pub fn snapshot(&self, session: &str, request: u64) {
        let _ = self.tx.send(Command::Snapshot {
            session: session.into(),
            request,
        });
    }

    /// Stops emulating a pane.
    pub fn close(&self, session: &str) {
        let _ = self.tx.send(Command::Close {
            session: session.into(),
        });
    }
}

struct PaneEmulator {
    shared: Arc<PaneShared>,
    parser: vt100::Parser,
    /// Stream offset the parser has consumed up to.
    offset: u64,
    lost: bool,
    rows: u16,
    cols: u16,
}

impl PaneEmulator {
    /// Feeds at most one block from the backlog. Returns whether there may be more.
    fn step(&mut self, session: &str, buf: &mut Vec<u8>, sink: &impl Fn(EmulatorEvent)) -> bool {
        if self.lost {
            return false;
        }
        buf.clear();
        let read = self.shared.backlog.lock().read(self.offset, BLOCK, buf);
        match read {
            Ok(0) => false,
            Ok(n) => {
                let before = self.parser.screen().bracketed_paste();
                self.parser.process(buf);
                self.offset += n as u64;
                let after = self.parser.screen().bracketed_paste();
                if before != after {
                    self.shared.bracketed_paste.store(after, Ordering::Release);
                    sink(EmulatorEvent::PasteMode {
                        session: session.into(),
                        on: after,
                    });
                }
                true
            }
            Err(Unavailable::Evicted) => {
                self.lost = true;
                sink(EmulatorEvent::Lost {
                    session: session.into(),
                });
                false
            }
            Err(Unavailable::Future) => false,
        }
    }

    fn snapshot(&self) -> Option<Snapshot> {
        if self.lost {
            return None;
        }
        Some(Snapshot {
            offset: self.offset,
            screen: screen_state(self.parser.screen()),
            rows: self.rows,
            cols: self.cols,
        })
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

fn run(rx: Receiver<Command>, sink: impl Fn(EmulatorEvent)) {
    let mut panes: HashMap<String, PaneEmulator> = HashMap::new();
    let mut buf = Vec::with_capacity(BLOCK);
    let handle = |command: Command, panes: &mut HashMap<String, PaneEmulator>| match command {
        Command::Open {
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
            panes.insert(
                session,
                PaneEmulator {
                    shared,
                    parser,
                    offset,
                    lost: false,
                    rows,
                    cols,
                },
            );
        }
        Command::Advance { session } => {
            if let Some(pane) = panes.get(&session) {
                pane.shared.nudged.store(false, Ordering::Release);
            }
        }
        Command::Snapshot { session, request } => {
            let snapshot = panes.get(&session).and_then(PaneEmulator::snapshot);
            sink(EmulatorEvent::Snapshot {
                session,
                request,
                snapshot,
            });
        }
        Command::Close { session } => {
            panes.remove(&session);
        }
    };
    loop {
        // Sleep until there is something to do.
        let Ok(command) = rx.recv() else { return };
        handle(command, &mut panes);
        // Work through the backlogs in blocks, serving commands (snapshots) in between so a
        // flood on one pane never delays another pane's snapshot by more than one block.
        loop {
            match rx.try_recv() {
                Ok(command) => {
                    handle(command, &mut panes);
                    continue;
                }
                Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => {}
            }
            let mut more = false;
            for (session, pane) in panes.iter_mut() {
                more |= pane.step(session, &mut buf, &sink);
            }
            if !more {
                break;
            }
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

    #[test]
    fn thread_follows_the_backlog_and_answers_snapshots() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let emulators = Emulators::start(move |e| tx.send(e).unwrap()).unwrap();
        let shared = PaneShared::new(1024, 0);
        emulators.open("s", shared.clone(), 5, 20, 0, b"seeded\r\n".to_vec());
        shared.backlog.lock().push(b"hello\x1b[?2004h");
        emulators.advance("s", &shared);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            EmulatorEvent::PasteMode {
                session: "s".into(),
                on: true
            }
        );
        assert!(shared.bracketed_paste.load(Ordering::Acquire));
        emulators.snapshot("s", 7);
        match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
            EmulatorEvent::Snapshot {
                request: 7,
                snapshot: Some(snapshot),
                ..
            } => {
                assert_eq!(snapshot.offset, 13);
                let copy = replay(snapshot.screen.as_bytes());
                assert!(copy.screen().contents().starts_with("seeded\nhello"));
            }
            other => panic!("{other:?}"),
        }
        // Overrun the backlog while the emulator is not looking: it reports itself lost.
        emulators.close("s");
        let small = PaneShared::new(8, 0);
        emulators.open("t", small.clone(), 5, 20, 0, Vec::new());
        small.backlog.lock().push(b"0123456789abcdef");
        emulators.advance("t", &small);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            EmulatorEvent::Lost {
                session: "t".into()
            }
        );
        emulators.snapshot("t", 8);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            EmulatorEvent::Snapshot {
                session: "t".into(),
                request: 8,
                snapshot: None
            }
        );
    }
}
