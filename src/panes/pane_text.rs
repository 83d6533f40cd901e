//! What a pane showed, taken for reading off the loop: tmux's history of the pane (a `tmux`
//! session) and the daemon's own copy of the end of its output. Tasks and crash reports read
//! a pane through this rather than running tmux themselves.

use crate::tmux::{self, PaneId, Tmux, TmuxError};

/// A pane's text, to be read on a worker ([`PaneText::history`] runs tmux).
#[derive(Debug, Clone)]
pub struct PaneText {
    pane: Option<PaneId>,
    tmux: Tmux,
    /// The end of the output as the daemon received it (at most the bytes asked for), kept
    /// for when tmux's history comes back empty (tmux 3.3a sometimes loses what a program
    /// printed just before it died) and as the whole story of a `pty` session.
    pub captured: String,
}

impl super::Panes {
    /// Session `session_id`'s pane text, with at most `captured_bytes` of the daemon's copy.
    pub fn text(&self, ctx: &crate::ctx::Ctx, session_id: &str, captured_bytes: usize) -> PaneText {
        PaneText {
            pane: self.get(session_id).and_then(|p| p.tmux_pane.clone()),
            tmux: ctx.tmux.clone(),
            captured: self.hub.tail_text(session_id, captured_bytes),
        }
    }
}

impl PaneText {
    /// The last `lines` lines of tmux's history of the pane (blocking: runs tmux), or ""
    /// for a `pty` session or when tmux cannot tell.
    pub fn history(&self, lines: u32) -> String {
        let Some(pane) = &self.pane else {
            return String::new();
        };
        tmux::capture_tail(pane, lines)
            .map_err(TmuxError::from)
            .and_then(|list| self.tmux.run(&list))
            .unwrap_or_default()
    }
}
