//! One pane as the output path sees it: how its capture stands, its size, its re-arms, its
//! emulator and paste mode, its pty holder link; and the events panes announce for the
//! features above them ([`PaneEvent`]).

use std::time::{Duration, Instant, SystemTime};

use crate::tmux::{PaneId, SessionName};

/// Health of a session's output capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureState {
    /// Waiting for the pipe helper to hand over the pane's pipe.
    Attaching,
    /// Output is flowing into the daemon.
    Attached,
    /// tmux closed the pipe (pane gone, server gone, or the pipe was replaced).
    Detached,
}

impl CaptureState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureState::Attaching => "attaching",
            CaptureState::Attached => "attached",
            CaptureState::Detached => "detached",
        }
    }
}

/// Why a pane's output capture is re-armed (a new pipe plus a capture of the screen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RearmReason {
    /// The daemon restarted and adopts a running pane.
    DaemonRestarted,
    /// tmux closed the pane's pipe while the pane lives.
    PipeClosed,
    /// The pipe stopped delivering while tmux saw the pane active (or it is missing).
    PipeStalled,
    /// The terminal emulator fell behind a flood and is re-seeded once the pane is quiet.
    EmulatorBehind,
}

impl RearmReason {
    /// Words for logs and the viewers' `terminal_gap` notice.
    pub fn describe(self) -> &'static str {
        match self {
            RearmReason::DaemonRestarted => "daemon restarted",
            RearmReason::PipeClosed => "output pipe closed",
            RearmReason::PipeStalled => "output pipe stopped delivering",
            RearmReason::EmulatorBehind => "terminal state re-seeded after an output flood",
        }
    }

    /// Whether the output stream goes on without a gap for viewers. Only a re-seed after a
    /// flood is: it happens once the pane has been quiet, when tmux has nothing in flight
    /// for the old pipe.
    pub fn is_seamless(self) -> bool {
        self == RearmReason::EmulatorBehind
    }
}

/// Where a re-arm of a pane's capture stands.
#[derive(Debug, Default)]
pub enum Rearm {
    /// None in progress.
    #[default]
    Idle,
    /// tmux was asked for a new pipe and the screen; the re-arm completes once both have
    /// arrived and the old pipe has drained.
    InProgress {
        /// Why.
        reason: RearmReason,
        /// The screen captured with the new pipe, once tmux answered.
        seed: Option<crate::panes::seed::Seed>,
        /// The new pipe, once its helper handed it over.
        pipe: Option<std::os::fd::OwnedFd>,
    },
}

impl Rearm {
    /// Whether a re-arm is in progress.
    pub fn in_progress(&self) -> bool {
        matches!(self, Rearm::InProgress { .. })
    }
}

/// What a pane is, given when its session registers.
#[derive(Debug, Clone)]
pub struct PaneSpec {
    /// The tmux pane (`tmux` backend), or `None` for a pseudo-terminal of the `pty` backend.
    pub tmux_pane: Option<PaneId>,
    /// The tmux session (its name also names a pty session's files).
    pub tmux_session: SessionName,
    /// Terminal size.
    pub rows: u16,
    /// Terminal size.
    pub cols: u16,
    /// When the pane last produced output (its creation, or tmux's activity after a restart).
    pub last_output: SystemTime,
    /// How capture starts: `Attaching`, or `Detached` for a dead pane found after a restart.
    pub capture: CaptureState,
    /// How long after a typed message Enter is pressed (the agent type's `submit_delay`).
    pub submit_delay: Duration,
}

/// One pane's state.
#[derive(Debug)]
pub struct Pane {
    pub(super) tmux_pane: Option<PaneId>,
    pub(super) tmux_session: SessionName,
    /// The agent's process ended (typing is refused, capture is not re-armed).
    pub(super) exited: bool,
    pub(super) capture: CaptureState,
    /// Bytes of output received since capture began.
    pub(super) output_bytes: u64,
    pub(super) last_output: SystemTime,
    /// Source slot of the pane pipe (or pty master) while output is captured.
    pub(super) pipe: Option<usize>,
    /// Input waiting to be written into that pipe (a new queue with each pipe).
    pub(super) input: Option<super::input::InputQueue<super::typing::InputAck>>,
    pub(super) rows: u16,
    pub(super) cols: u16,
    pub(super) rearm: Rearm,
    pub(super) rearms: u32,
    /// The emulator fell behind a flood: it is not fed until it catches up.
    pub(super) emulator_lost: bool,
    /// A tmux pane whose emulator caught up waits for its exact re-seed from tmux.
    pub(super) reseed_wanted: bool,
    /// The program's bracketed-paste mode as the emulator last reported it.
    pub(super) paste_mode: Option<bool>,
    /// The paste mode last written to tmux (`@orchestra_paste`).
    pub(super) paste_persisted: Option<bool>,
    /// A timer will write the paste mode to tmux.
    pub(super) paste_persist_pending: bool,
    /// Source slot of the connection to the pty holder (`pty` backend, while connected).
    pub(super) holder: Option<usize>,
    /// Whether a checkpoint for the pty holder is scheduled.
    pub(super) checkpoint_pending: bool,
    /// When the last checkpoint was asked for.
    pub(super) last_checkpoint: Option<Instant>,
    pub(super) submit_delay: Duration,
    /// When the pane registered (its tmux session existed by then).
    pub(super) registered: Instant,
}

impl Pane {
    /// A registering pane.
    pub(super) fn new(spec: PaneSpec) -> Pane {
        Pane {
            tmux_pane: spec.tmux_pane,
            tmux_session: spec.tmux_session,
            exited: false,
            capture: spec.capture,
            output_bytes: 0,
            last_output: spec.last_output,
            pipe: None,
            input: None,
            rows: spec.rows,
            cols: spec.cols,
            rearm: Rearm::Idle,
            rearms: 0,
            emulator_lost: false,
            reseed_wanted: false,
            paste_mode: None,
            paste_persisted: None,
            paste_persist_pending: false,
            holder: None,
            checkpoint_pending: false,
            last_checkpoint: None,
            submit_delay: spec.submit_delay,
            registered: Instant::now(),
        }
    }

    /// Output capture health.
    pub fn capture(&self) -> CaptureState {
        self.capture
    }

    /// Bytes of output received since capture began.
    pub fn output_bytes(&self) -> u64 {
        self.output_bytes
    }

    /// How many times capture was re-armed.
    pub fn rearms(&self) -> u32 {
        self.rearms
    }

    /// Terminal size as (rows, cols).
    pub fn size(&self) -> (u16, u16) {
        (self.rows, self.cols)
    }
}

/// What happened on a pane that the features above panes follow. Announced on
/// [`super::Panes`] and routed by [`crate::dispatch`].
#[derive(Debug, Clone, PartialEq)]
pub enum PaneEvent {
    /// The pane produced output (one event per read, however many bytes).
    Output {
        /// The session.
        session_id: String,
    },
    /// A `user_message` was typed into the pane (its CLI has yet to confirm it).
    MessageTyped {
        /// The session.
        session_id: String,
        /// The message's id.
        id: Option<serde_json::Value>,
        /// Whether its CLI will confirm it as a prompt (not a `/command` or `!shell` line).
        prompt: bool,
    },
    /// A pty session's terminal reached its end (no writer left).
    TerminalEnded {
        /// The session.
        session_id: String,
    },
    /// The pane is gone from tmux (its server died, or it was killed behind our back).
    Vanished {
        /// The session.
        session_id: String,
        /// Why, in words.
        reason: &'static str,
    },
    /// The emulator's text of a quiet pane's screen, asked for by screen rules.
    ScreenText {
        /// The session.
        session_id: String,
        /// The screen.
        text: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_reseed_after_a_flood_is_seamless_for_viewers() {
        let all = [
            RearmReason::DaemonRestarted,
            RearmReason::PipeClosed,
            RearmReason::PipeStalled,
            RearmReason::EmulatorBehind,
        ];
        let seamless: Vec<_> = all.iter().filter(|r| r.is_seamless()).collect();
        assert_eq!(seamless, [&RearmReason::EmulatorBehind]);
        let words: std::collections::HashSet<_> = all.iter().map(|r| r.describe()).collect();
        assert_eq!(words.len(), all.len(), "each reason reads differently");
        assert!(!Rearm::Idle.in_progress());
    }
}
