//! Typing into panes for `user_message` and `terminal_input`: per-pane ordering, the Enter
//! pressed a moment after a typed message, and acknowledgements to the sender.
//!
//! A `user_message` is typed as one paste (bracketed when the program enabled bracketed-paste
//! mode, which the daemon's emulator tracks), then, after the agent type's `submit_delay`,
//! Enter is pressed separately. Later input to the same pane waits until that Enter has been
//! queued, so messages never interleave.
//!
//! A CLI that reports through hooks reports its SessionStart before its screen is drawn,
//! and input it gets before its prompt exists is lost (a resumed Claude Code drops it while
//! it loads its conversation). So input to a new session of such a CLI is held: until its
//! screen was drawn after SessionStart and then stayed quiet for `hooks.prompt_settle`, or
//! at most `hooks.prompt_wait`.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use super::Panes;
use super::input::{paste_bytes, plain_line};
use super::pane::{CaptureState, PaneEvent};
use crate::ctx::{Ctx, Source, Timer};
use crate::error_code::ErrorCode;
use crate::net::ConnId;
use crate::wire::ws::ServerMessage;

/// Which message an acknowledgement answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// A `user_message`.
    UserMessage,
    /// A `terminal_input`.
    TerminalInput,
}

/// Who to tell once input has been typed.
#[derive(Debug, Clone, PartialEq)]
pub struct InputAck {
    /// The sender's connection.
    pub conn: ConnId,
    /// The message kind.
    pub kind: AckKind,
    /// The sender's `id` for the message, echoed back.
    pub id: Option<serde_json::Value>,
    /// A message its CLI will confirm as a prompt (not a `/command` or `!shell` line).
    pub prompt: bool,
}

/// Whether `text`, typed as a message, is a prompt its CLI confirms (CLIs take a line that
/// starts with `/` as a command and with `!` as a shell line, with no prompt hook).
pub fn is_prompt(text: &str) -> bool {
    !text.trim_start().starts_with(['/', '!'])
}

/// Something to type.
#[derive(Debug, Clone, PartialEq)]
pub enum Typing {
    /// Text typed as one paste, then Enter.
    Message(String),
    /// Raw bytes typed as they are.
    Raw(Vec<u8>),
    /// What the daemon itself tells an agent (a task's report): plain text on one line (line
    /// breaks become spaces, every other control character is dropped), typed as one
    /// bracketed paste whatever mode the pane is in, then Enter. So it can neither press
    /// Enter nor send keys of its own.
    Report(String),
}

/// Typing state of one pane.
#[derive(Debug, Default)]
pub struct Typist {
    serial: u64,
    /// A typed message waiting for its Enter (timer serial, acknowledgement).
    enter_pending: Option<(u64, Option<InputAck>)>,
    /// Input that arrived while an Enter was pending, or while input is held, in order.
    deferred: VecDeque<(Typing, Option<InputAck>)>,
    /// Input is held until the CLI's prompt is ready.
    gate: Option<InputGate>,
}

/// Input held until the CLI can take it: a new hooked session's (until its prompt is
/// drawn), or a session showing a confirmation dialog that a key will answer (until the
/// answer is typed, or the dialog is gone).
#[derive(Debug, Clone)]
struct InputGate {
    /// Which gate this is (timers of an earlier one are ignored).
    serial: u64,
    /// When holding began.
    since: SystemTime,
    /// When the CLI reported SessionStart (or put its dialog up).
    started: Option<SystemTime>,
    /// Quiet time after the drawing that counts as ready.
    settle: Duration,
    /// Longest hold: from `since`, or from `started` once that is known.
    wait: Duration,
    /// A dialog: only its answer flows, once drawn; everything else waits until it is gone.
    dialog: bool,
    /// The dialog's answer, typed once the dialog is drawn and still.
    answer: Option<Vec<u8>>,
    /// Held until the CLI's prompt shows, however long that takes (its own screen waits for
    /// a person first).
    until_ready: bool,
}

impl InputGate {
    /// Whether the screen is ready at `now` given the pane's last output; otherwise when to
    /// look again.
    fn check(&self, now: SystemTime, last_output: SystemTime) -> Result<(), SystemTime> {
        if self.until_ready {
            return Err(now + self.wait);
        }
        let from = self.started.unwrap_or(self.since);
        if now.duration_since(from).unwrap_or_default() >= self.wait {
            return Ok(());
        }
        let Some(started) = self.started else {
            return Err(self.since + self.wait);
        };
        if last_output > started {
            let quiet = now.duration_since(last_output).unwrap_or_default();
            if quiet >= self.settle {
                return Ok(());
            }
            return Err(last_output + self.settle);
        }
        Err(now + self.settle)
    }
}

impl Typist {
    /// Drops acknowledgements and queued input of a connection that went away (a message
    /// already typed still gets its Enter).
    pub fn forget(&mut self, conn: ConnId) {
        if let Some((_, ack)) = &mut self.enter_pending
            && ack.as_ref().is_some_and(|a| a.conn == conn)
        {
            *ack = None;
        }
        self.deferred
            .retain(|(_, ack)| ack.as_ref().is_none_or(|a| a.conn != conn));
    }
}

impl Panes {
    /// Types `typing` into a session's pane; `ack` is told once it has been typed.
    /// Fails at once when the session cannot take input.
    pub fn type_input(
        &mut self,
        ctx: &mut Ctx,
        session_id: &str,
        typing: Typing,
        ack: Option<InputAck>,
    ) -> Result<(), (ErrorCode, String)> {
        let Some(pane) = self.by_session.get(session_id) else {
            return Err((
                ErrorCode::SessionNotFound,
                format!("no agent session {session_id:?}"),
            ));
        };
        if pane.exited {
            return Err((
                ErrorCode::SessionNotFound,
                format!("the agent of {session_id} has exited"),
            ));
        }
        // While the pipe is being attached (just spawned, or re-armed) input waits for it.
        if pane.pipe.is_none()
            && pane.capture == CaptureState::Detached
            && !pane.rearm.in_progress()
        {
            return Err((
                ErrorCode::InternalError,
                format!("{session_id} has no input pipe (capture detached)"),
            ));
        }
        let captured = pane.pipe.is_some();
        let typist = self.typists.entry(session_id.to_string()).or_default();
        // Keystrokes of a person at the terminal pass a dialog's hold (and that of a screen
        // the CLI shows before its prompt for a person): they answer it there.
        let keys_at_dialog = matches!(typing, Typing::Raw(_))
            && typist
                .gate
                .as_ref()
                .is_some_and(|g| g.dialog || g.until_ready)
            && typist.enter_pending.is_none();
        if keys_at_dialog && captured {
            self.start_typing(ctx, session_id, typing, ack);
            return Ok(());
        }
        if typist.enter_pending.is_some() || !captured || typist.gate.is_some() {
            typist.deferred.push_back((typing, ack));
            return Ok(());
        }
        self.start_typing(ctx, session_id, typing, ack);
        Ok(())
    }

    fn start_typing(
        &mut self,
        ctx: &mut Ctx,
        session_id: &str,
        typing: Typing,
        ack: Option<InputAck>,
    ) {
        let bytes = match typing {
            Typing::Raw(bytes) => {
                self.queue_input(ctx, session_id, &bytes, ack);
                return;
            }
            Typing::Message(text) => paste_bytes(&text, self.hub.bracketed_paste(session_id)),
            Typing::Report(text) => paste_bytes(&plain_line(&text), true),
        };
        if !self.queue_input(ctx, session_id, &bytes, None) {
            if let Some(ack) = ack {
                self.input_failed(ctx, session_id, ack, "the pane's input queue is full");
            }
            return;
        }
        let delay = self
            .get(session_id)
            .map(|p| p.submit_delay)
            .unwrap_or_default();
        if delay.is_zero() {
            self.queue_input(ctx, session_id, b"\r", ack);
            return;
        }
        let typist = self.typists.entry(session_id.to_string()).or_default();
        typist.serial += 1;
        typist.enter_pending = Some((typist.serial, ack));
        let serial = typist.serial;
        ctx.timers
            .schedule_in(delay, Timer::SubmitEnter(session_id.to_string(), serial));
    }

    /// Holds input to a new session of a hooked CLI until its prompt is ready (see the
    /// module docs): at most `wait` from now, or from its SessionStart once it comes.
    pub fn hold_input(
        &mut self,
        ctx: &mut Ctx,
        session_id: &str,
        settle: Duration,
        wait: Duration,
    ) {
        let now = SystemTime::now();
        self.set_gate(ctx, session_id, now, None, settle, wait, false);
    }

    /// The CLI put up a confirmation dialog that a key will answer: input (other than
    /// [`Panes::answer_dialog`]'s) is held until the dialog is answered or
    /// [`Panes::release_input`] says it is gone.
    pub fn hold_input_for_dialog(
        &mut self,
        ctx: &mut Ctx,
        session_id: &str,
        settle: Duration,
        wait: Duration,
    ) {
        let now = SystemTime::now();
        self.set_gate(ctx, session_id, now, Some(now), settle, wait, true);
    }

    #[allow(clippy::too_many_arguments)]
    fn set_gate(
        &mut self,
        ctx: &mut Ctx,
        session_id: &str,
        since: SystemTime,
        started: Option<SystemTime>,
        settle: Duration,
        wait: Duration,
        dialog: bool,
    ) {
        let typist = self.typists.entry(session_id.to_string()).or_default();
        typist.serial += 1;
        let serial = typist.serial;
        typist.gate = Some(InputGate {
            serial,
            since,
            started,
            settle,
            wait,
            dialog,
            answer: None,
            until_ready: false,
        });
        let first = if dialog { settle } else { wait };
        ctx.timers
            .schedule_in(first, Timer::InputGate(session_id.to_string(), serial));
    }

    /// The answer to a dialog held by [`Panes::hold_input_for_dialog`]: typed once the dialog
    /// is drawn and still; then held input flows. Fails when no dialog is held.
    pub fn answer_dialog(
        &mut self,
        ctx: &mut Ctx,
        session_id: &str,
        key: &[u8],
    ) -> Result<(), String> {
        let Some(gate) = self
            .typists
            .get_mut(session_id)
            .and_then(|t| t.gate.as_mut())
            .filter(|g| g.dialog)
        else {
            return Err("the dialog is no longer on the screen".into());
        };
        gate.answer = Some(key.to_vec());
        let serial = gate.serial;
        self.on_input_gate(ctx, session_id, serial);
        Ok(())
    }

    /// Input is no longer held for the session (its dialog is gone): what waited flows.
    pub fn release_input(&mut self, ctx: &mut Ctx, session_id: &str) {
        let Some(typist) = self.typists.get_mut(session_id) else {
            return;
        };
        if typist.gate.take().is_some() {
            self.type_deferred(ctx, session_id);
        }
    }

    /// The session's CLI reported SessionStart: held input flows once its screen settles.
    pub fn cli_started(&mut self, ctx: &mut Ctx, session_id: &str) {
        let Some(gate) = self.start_gate(session_id) else {
            return;
        };
        gate.started = Some(SystemTime::now());
        let (settle, serial) = (gate.settle, gate.serial);
        ctx.timers
            .schedule_in(settle, Timer::InputGate(session_id.to_string(), serial));
    }

    /// A screen rule saw the session's CLI waiting at its prompt, on a screen that has been
    /// quiet a while (the check runs only then): input held for its start flows now. For a
    /// CLI that reports SessionStart only with the first prompt (Codex).
    pub fn cli_ready(&mut self, ctx: &mut Ctx, session_id: &str) {
        if self.start_gate(session_id).is_some() {
            log::debug!("{session_id}: its prompt is on the screen; held input flows");
            if let Some(typist) = self.typists.get_mut(session_id) {
                typist.gate = None;
            }
            self.type_deferred(ctx, session_id);
        }
    }

    /// The hold on `session_id`'s input that waits for its CLI to start, if there is one
    /// (not a dialog's, and the CLI not yet started).
    fn start_gate(&mut self, session_id: &str) -> Option<&mut InputGate> {
        self.typists
            .get_mut(session_id)
            .and_then(|t| t.gate.as_mut())
            .filter(|g| g.started.is_none() && !g.dialog)
    }

    /// The session's CLI shows a screen of its own that a person must answer before its
    /// prompt (Codex's hooks to review): input (other than a person's keys) is held until
    /// [`Panes::cli_ready`], however long that takes, even if the hold for its start had
    /// already run out.
    pub fn hold_until_ready(&mut self, ctx: &mut Ctx, session_id: &str) {
        let typist = self.typists.entry(session_id.to_string()).or_default();
        if typist.gate.as_ref().is_some_and(|g| g.dialog) {
            return;
        }
        if typist.gate.is_none() {
            let (settle, wait) = (ctx.config.hooks.prompt_settle, ctx.config.hooks.prompt_wait);
            self.set_gate(
                ctx,
                session_id,
                SystemTime::now(),
                None,
                settle,
                wait,
                false,
            );
        }
        if let Some(gate) = self
            .typists
            .get_mut(session_id)
            .and_then(|t| t.gate.as_mut())
        {
            if !gate.until_ready {
                log::info!(
                    "{session_id}: its CLI waits for a person on its own screen; messages wait \
                     for its prompt"
                );
            }
            gate.started = None;
            gate.until_ready = true;
        }
    }

    /// Looks whether held input may flow now (gate `serial`); types it, or looks again later.
    pub fn on_input_gate(&mut self, ctx: &mut Ctx, session_id: &str, serial: u64) {
        let last_output = self
            .get(session_id)
            .map_or(SystemTime::UNIX_EPOCH, |p| p.last_output);
        let Some(typist) = self.typists.get_mut(session_id) else {
            return;
        };
        let Some(gate) = typist.gate.as_ref().filter(|g| g.serial == serial) else {
            return;
        };
        let now = SystemTime::now();
        match gate.check(now, last_output) {
            Ok(()) if gate.dialog => {
                // A dialog stays held until answered (or gone); once drawn, its answer goes.
                let Some(answer) = gate.answer.clone() else {
                    return;
                };
                typist.gate = None;
                self.queue_input(ctx, session_id, &answer, None);
                self.type_deferred(ctx, session_id);
            }
            Ok(()) => {
                match gate.started {
                    None => log::debug!("{session_id}: no SessionStart yet; held input flows"),
                    Some(_) => log::debug!("{session_id}: its screen settled; held input flows"),
                }
                typist.gate = None;
                self.type_deferred(ctx, session_id);
            }
            Err(next) => {
                let after = next.duration_since(now).unwrap_or_default();
                ctx.timers
                    .schedule_in(after, Timer::InputGate(session_id.to_string(), serial));
            }
        }
    }

    /// Presses Enter for a typed message, then types whatever was waiting behind it.
    pub fn press_enter(&mut self, ctx: &mut Ctx, session_id: &str, serial: u64) {
        let Some(typist) = self.typists.get_mut(session_id) else {
            return;
        };
        let Some((pending, ack)) = typist.enter_pending.take() else {
            return;
        };
        if pending != serial {
            typist.enter_pending = Some((pending, ack));
            return;
        }
        self.queue_input(ctx, session_id, b"\r", ack);
        self.type_deferred(ctx, session_id);
    }

    /// Types queued input until another Enter must wait.
    pub fn type_deferred(&mut self, ctx: &mut Ctx, session_id: &str) {
        loop {
            let Some(typist) = self.typists.get_mut(session_id) else {
                return;
            };
            if typist.enter_pending.is_some() || typist.gate.is_some() {
                return;
            }
            let Some((typing, ack)) = typist.deferred.pop_front() else {
                return;
            };
            self.start_typing(ctx, session_id, typing, ack);
        }
    }

    /// Queues bytes on the session's pipe and writes what the pipe takes. Returns false (and
    /// fails `ack`) when the session has no pipe or its queue is full.
    fn queue_input(
        &mut self,
        ctx: &mut Ctx,
        session_id: &str,
        bytes: &[u8],
        ack: Option<InputAck>,
    ) -> bool {
        let pane = self.by_session.get_mut(session_id);
        let Some((key, input)) = pane.and_then(|p| Some((p.pipe?, p.input.as_mut()?))) else {
            if let Some(ack) = ack {
                self.input_failed(ctx, session_id, ack, "the pane has no input pipe");
            }
            return false;
        };
        if let Err(rejected) = input.push(bytes, ack) {
            if let Some(ack) = rejected.0 {
                self.input_failed(ctx, session_id, ack, "the pane's input queue is full");
            }
            return false;
        }
        self.write_input(ctx, key);
        true
    }

    /// Writes queued input into a pane pipe and acknowledges what has been typed.
    pub fn write_input(&mut self, ctx: &mut Ctx, key: usize) {
        let Some(Source::PanePipe { session_id, stream }) = ctx.sources.get_mut(key) else {
            return;
        };
        let Some(input) = self
            .by_session
            .get_mut(session_id.as_str())
            .filter(|pane| pane.pipe == Some(key))
            .and_then(|pane| pane.input.as_mut())
        else {
            return;
        };
        if input.is_empty() {
            return;
        }
        let session_id = session_id.clone();
        match input.write_to(stream) {
            Ok(acks) => {
                for ack in acks {
                    let (session_id, id) = (session_id.as_str(), &ack.id);
                    let message = match ack.kind {
                        AckKind::UserMessage => {
                            // The agent's CLI confirms it (or not) when it takes the prompt.
                            self.announce(PaneEvent::MessageTyped {
                                session_id: session_id.to_string(),
                                id: ack.id.clone(),
                                prompt: ack.prompt,
                            });
                            ServerMessage::UserMessageAck { session_id, id }
                        }
                        AckKind::TerminalInput => {
                            ServerMessage::TerminalInputAck { session_id, id }
                        }
                    };
                    ctx.send_ws(ack.conn, &message);
                }
            }
            Err(e) => {
                log::warn!("{session_id}: writing to the pane failed: {e}");
                let acks = input.abandon();
                for ack in acks {
                    self.input_failed(ctx, &session_id, ack, "writing to the pane failed");
                }
            }
        }
    }

    /// Tells the sender that its input could not be typed.
    pub fn input_failed(&mut self, ctx: &mut Ctx, session_id: &str, ack: InputAck, why: &str) {
        let code = if self.by_session.contains_key(session_id) {
            ErrorCode::InternalError
        } else {
            ErrorCode::SessionNotFound
        };
        ctx.send_ws(
            ack.conn,
            &ServerMessage::InputError {
                error_code: code,
                message: why,
                session_id,
                id: &ack.id,
            },
        );
    }

    /// The session is gone: every sender still waiting is told.
    pub fn drop_typist(&mut self, ctx: &mut Ctx, session_id: &str) {
        let Some(mut typist) = self.typists.remove(session_id) else {
            return;
        };
        let mut acks: Vec<InputAck> = typist
            .enter_pending
            .take()
            .and_then(|(_, a)| a)
            .into_iter()
            .collect();
        acks.extend(typist.deferred.drain(..).filter_map(|(_, a)| a));
        for ack in acks {
            self.input_failed(
                ctx,
                session_id,
                ack,
                "the session ended before the input was typed",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_input_flows_once_the_screen_settles_after_session_start_or_after_the_wait() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut gate = InputGate {
            serial: 1,
            since: t0,
            started: None,
            settle: Duration::from_millis(300),
            wait: Duration::from_secs(15),
            dialog: false,
            answer: None,
            until_ready: false,
        };
        // Before SessionStart: held until the wait is over, whatever the screen does.
        assert_eq!(gate.check(ms(5_000), ms(4_000)), Err(ms(15_000)));
        assert_eq!(gate.check(ms(15_000), ms(4_000)), Ok(()));
        gate.started = Some(ms(1_000));
        // Nothing drawn since SessionStart: look again a settle later.
        assert_eq!(gate.check(ms(1_100), ms(900)), Err(ms(1_400)));
        // Drawn, still moving: ready a settle after the last output.
        assert_eq!(gate.check(ms(1_500), ms(1_400)), Err(ms(1_700)));
        assert_eq!(gate.check(ms(1_700), ms(1_400)), Ok(()));
        // A screen that never settles is typed into after the wait from SessionStart, not
        // from the spawn: a late SessionStart gets its full wait.
        assert_eq!(gate.check(ms(15_500), ms(15_499)), Err(ms(15_799)));
        assert_eq!(gate.check(ms(16_000), ms(15_999)), Ok(()));
        // A CLI waiting for a person on its own screen is never typed into by time.
        gate.until_ready = true;
        assert_eq!(gate.check(ms(60_000), ms(1_000)), Err(ms(75_000)));
    }
}
