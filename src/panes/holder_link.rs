//! A `pty` session's link to its holder, on the output side: what the daemon reads from the
//! terminal is forwarded to the holder's replay, and screen checkpoints (from the emulator)
//! let the holder drop its replay up to there. The holder's connection itself (a
//! [`Source::PtyHolder`]) is opened, read for exits and closed by
//! [`crate::agents::pty_session`].

use std::time::{Duration, Instant, SystemTime};

use super::Panes;
use super::emulator::Snapshot;
use crate::ctx::{Ctx, Source, Timer};
use crate::proto::pty::{Kind, encode};
use crate::pty::Checkpoint;

/// While a pane's output flows, the pty holder gets a checkpoint at most this often.
pub const FLOOD_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

impl Panes {
    /// Session `session_id`'s holder is connected on source slot `key`.
    pub fn link_holder(&mut self, session_id: &str, key: usize) {
        if let Some(pane) = self.by_session.get_mut(session_id) {
            pane.holder = Some(key);
        }
    }

    /// Session `session_id`'s holder connection (slot `key`) closed; whether it was the
    /// linked one.
    pub fn unlink_holder(&mut self, session_id: &str, key: usize) -> bool {
        match self.by_session.get_mut(session_id) {
            Some(pane) if pane.holder == Some(key) => {
                pane.holder = None;
                true
            }
            _ => false,
        }
    }

    /// Forgets session `session_id`'s holder link and returns its slot.
    pub fn take_holder(&mut self, session_id: &str) -> Option<usize> {
        self.by_session.get_mut(session_id)?.holder.take()
    }

    /// Forwards output the daemon read from a pty session's terminal to its holder's replay.
    /// If the holder does not keep up (more than `pty.ring_bytes` waiting), the output is
    /// not forwarded: the holder sees the hole, and the next checkpoint closes it.
    pub(super) fn forward_to_holder(
        &mut self,
        ctx: &mut Ctx,
        session_id: &str,
        offset: u64,
        bytes: &[u8],
    ) {
        let limit = ctx.config.pty.ring_bytes;
        let Some(key) = self.get(session_id).and_then(|p| p.holder) else {
            return;
        };
        if let Some(Source::PtyHolder { outbound, .. }) = ctx.sources.get_mut(key)
            && outbound.len() + bytes.len() <= limit
        {
            if outbound.is_empty() {
                self.holders_to_flush.push(key);
            }
            crate::proto::pty::encode_output(offset, bytes, outbound);
        }
    }

    /// Output arrived (or the screen changed): leave a checkpoint with the holder within
    /// `pty.checkpoint_after`, so that the replay it keeps stays short.
    pub fn schedule_checkpoint(&mut self, ctx: &mut Ctx, session_id: &str) {
        let after = ctx.config.pty.checkpoint_after;
        let Some(pane) = self.by_session.get_mut(session_id) else {
            return;
        };
        if pane.holder.is_none() || pane.checkpoint_pending {
            return;
        }
        pane.checkpoint_pending = true;
        ctx.timers
            .schedule_in(after, Timer::Checkpoint(session_id.to_string()));
    }

    /// The checkpoint timer fell due: ask the emulator for the screen (behind the output it
    /// has been handed so far). While output still flows, at most one checkpoint per
    /// [`FLOOD_CHECKPOINT_EVERY`] (each makes the emulator parse its window, and in a flood
    /// the holder's ring overflows between any two anyway); the one after it stops is
    /// always taken.
    pub fn on_checkpoint_due(&mut self, ctx: &mut Ctx, session_id: &str) {
        let after = ctx.config.pty.checkpoint_after;
        let Some(pane) = self.by_session.get_mut(session_id) else {
            return;
        };
        let flowing = SystemTime::now()
            .duration_since(pane.last_output)
            .is_ok_and(|quiet| quiet < after);
        let recent = pane
            .last_checkpoint
            .is_some_and(|at| at.elapsed() < FLOOD_CHECKPOINT_EVERY);
        if flowing && recent {
            ctx.timers
                .schedule_in(after, Timer::Checkpoint(session_id.to_string()));
            return;
        }
        pane.checkpoint_pending = false;
        pane.last_checkpoint = Some(Instant::now());
        self.emulators.checkpoint(session_id);
    }

    /// The emulator answered a checkpoint request: hand the screen, with the stream offset
    /// it stands for, to the holder, which then drops its replay up to there.
    pub(super) fn on_checkpoint(
        &mut self,
        ctx: &mut Ctx,
        session_id: &str,
        snapshot: Option<Snapshot>,
    ) {
        let Some(snapshot) = snapshot else {
            return;
        };
        let Some(key) = self.get(session_id).and_then(|p| p.holder) else {
            return;
        };
        let Some(Source::PtyHolder { checkpointed, .. }) = ctx.sources.get(key) else {
            return;
        };
        // Nothing new since the last one (a resize alone changes the size).
        let key_of = (snapshot.offset, snapshot.rows, snapshot.cols);
        if *checkpointed == Some(key_of) {
            return;
        }
        let checkpoint = Checkpoint {
            offset: snapshot.offset,
            rows: snapshot.rows,
            cols: snapshot.cols,
            screen: snapshot.screen,
        };
        let payload = serde_json::to_vec(&checkpoint).expect("serializable");
        if payload.len() > crate::pty::holder::MAX_CHECKPOINT_BYTES {
            return;
        }
        if let Some(Source::PtyHolder {
            outbound,
            checkpointed,
            ..
        }) = ctx.sources.get_mut(key)
        {
            outbound.extend_from_slice(&encode(Kind::Checkpoint, &payload));
            *checkpointed = Some(key_of);
            ctx.metrics.pty_checkpoints += 1;
            flush_holder(ctx, key);
        }
    }
}

/// Writes what is queued for a holder, as far as its socket takes it.
pub fn flush_holder(ctx: &mut Ctx, key: usize) {
    let Some(Source::PtyHolder {
        stream, outbound, ..
    }) = ctx.sources.get_mut(key)
    else {
        return;
    };
    // The rest goes when the socket is writable again (or the holder is gone, which the
    // read side notices).
    let _ = crate::net::unix::write_some(stream, outbound);
}
