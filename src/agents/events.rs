//! When an agent's status changes or it crashes, announce it ([`AgentEvent::StatusChanged`],
//! [`AgentEvent::Crashed`] with the last lines of its screen); `dispatch` turns these into
//! `agent_status` and `AGENT_CRASHED` messages for observers.

use std::time::{Duration, SystemTime};

use super::Agents;
use super::Parts;
use super::{AgentEvent, AgentStatus};
use crate::ctx::{Timer, then};

/// Lines of the final screen sent with `AGENT_CRASHED`.
const CRASH_LINES: u32 = 20;

/// The daemon's own tail of the output, used when tmux's screen is empty.
const CRASH_BYTES: usize = 16 * 1024;

impl Parts<'_> {
    /// The session's pane produced output: activity, the `running` transition, and the
    /// checks that follow output. (After the agent's exit only the time is recorded.)
    pub fn on_pane_output(&mut self, session_id: &str) {
        let Some(agent) = self.agents.get_mut(session_id) else {
            return;
        };
        let now = SystemTime::now();
        agent.last_activity = now;
        if agent.exit.is_some() {
            return;
        }
        agent.activity.on_output(now);
        self.refresh_status(session_id);
        self.schedule_idle_check(session_id);
        self.schedule_screen_check(session_id);
    }

    /// A message was typed into the agent (its Enter written): it waits for its CLI's
    /// confirmation, which a hooked CLI gives (checked after `hooks.submit_check`).
    pub fn on_message_typed(
        &mut self,
        session_id: &str,
        id: Option<serde_json::Value>,
        prompt: bool,
    ) {
        let Some(agent) = self.agents.registry.get_mut(session_id) else {
            return;
        };
        agent.conversation.typed(id);
        // A `/command` or `!shell` line gets no prompt hook: pressing Enter again could pick
        // something in whatever it opened.
        if prompt && agent.hook_token.is_some() && self.ctx.config.hooks.submit_retries > 0 {
            let typed = agent.conversation.typed_total;
            let after = self.ctx.config.hooks.submit_check;
            self.ctx
                .timers
                .schedule_in(after, Timer::SubmitCheck(session_id.into(), typed, 0));
        }
    }

    /// Whether the `typed`-th message reached the CLI; if the CLI waits at its prompt
    /// without having confirmed it, Enter is pressed again (up to `hooks.submit_retries`).
    pub fn on_submit_check(&mut self, session_id: &str, typed: u64, attempt: u32) {
        let hooks = &self.ctx.config.hooks;
        let (retries, first) = (hooks.submit_retries, hooks.submit_check);
        let Some(agent) = self.agents.registry.get(session_id) else {
            return;
        };
        if agent.conversation.delivered_total >= typed || attempt >= retries {
            return;
        }
        // A CLI in a turn takes the message when the turn ends: nothing to press yet.
        if agent.activity.activity == super::activity::Activity::WaitingInput {
            log::info!(
                "{session_id}: its CLI has not taken the typed message; pressing Enter again"
            );
            let enter = crate::panes::typing::Typing::Raw(b"\r".to_vec());
            let _ = self.panes.type_input(self.ctx, session_id, enter, None);
        }
        let after = first * 2u32.saturating_pow(attempt + 1);
        self.ctx.timers.schedule_in(
            after,
            Timer::SubmitCheck(session_id.into(), typed, attempt + 1),
        );
    }

    /// Announces the session's status and activity if either changed since the last
    /// announcement.
    pub fn refresh_status(&mut self, session_id: &str) {
        let idle_after = self.ctx.config.sessions.idle_after;
        let Some(agent) = self.agents.registry.get_mut(session_id) else {
            return;
        };
        let status = agent.status(SystemTime::now(), idle_after);
        if status == agent.reported && agent.activity.activity == agent.reported_activity {
            return;
        }
        agent.reported = status;
        agent.reported_activity = agent.activity.activity;
        let event = AgentEvent::StatusChanged {
            session_id: session_id.to_string(),
            agent_type: agent.agent_type.clone(),
            status,
            activity: agent.activity.clone(),
            last_activity: agent.last_activity,
            exit: agent.exit,
        };
        self.agents.registry.announce(event);
    }

    /// Makes sure a check is scheduled for when the session would go quiet (status `idle`)
    /// or its activity could change with time (quiet, stuck).
    pub fn schedule_idle_check(&mut self, session_id: &str) {
        let (idle_after, stuck_after) = (
            self.ctx.config.sessions.idle_after,
            self.ctx.config.sessions.stuck_after,
        );
        let Some(agent) = self.agents.registry.get_mut(session_id) else {
            return;
        };
        if agent.idle_check_pending || agent.exit.is_some() {
            return;
        }
        let now = SystemTime::now();
        let quiet = now.duration_since(agent.last_activity).unwrap_or_default();
        let status_due = (quiet < idle_after).then(|| agent.last_activity + idle_after);
        let activity_due = agent.activity.next_check(idle_after, stuck_after);
        let Some(due) = status_due.into_iter().chain(activity_due).min() else {
            return;
        };
        agent.idle_check_pending = true;
        // A millisecond late rather than early: the check compares wall-clock times, and
        // the timer runs on the monotonic clock.
        self.ctx.timers.schedule_in(
            due.duration_since(now).unwrap_or_default() + Duration::from_millis(1),
            Timer::IdleCheck(session_id.into()),
        );
    }

    /// A check fell due: announce `idle` or a new activity, and check again later if
    /// something could still change with time.
    pub fn on_idle_check(&mut self, session_id: &str) {
        let (idle_after, stuck_after) = (
            self.ctx.config.sessions.idle_after,
            self.ctx.config.sessions.stuck_after,
        );
        let Some(agent) = self.agents.registry.get_mut(session_id) else {
            return;
        };
        agent.idle_check_pending = false;
        agent
            .activity
            .on_time(SystemTime::now(), idle_after, stuck_after);
        // `refresh_status` makes the same comparison as `Agent::status`, so a check that
        // finds the agent quiet always announces `idle` (a tolerance here once made it skip
        // the announcement and the next check, leaving the agent `running`).
        self.refresh_status(session_id);
        self.schedule_idle_check(session_id);
    }

    /// Makes sure the screen of an agent with screen rules is checked once its output has
    /// been quiet for `panes.screen_check_after`.
    pub fn schedule_screen_check(&mut self, session_id: &str) {
        let quiet_for = self.ctx.config.panes.screen_check_after;
        let Some(agent) = self.agents.registry.get_mut(session_id) else {
            return;
        };
        // A hooked agent's hooks tell what it does; its screen is read only until they speak.
        if agent.screen_rules.is_none()
            || agent.activity.hooked
            || agent.screen_check_pending
            || agent.exit.is_some()
        {
            return;
        }
        agent.screen_check_pending = true;
        let quiet = SystemTime::now()
            .duration_since(agent.last_activity)
            .unwrap_or_default();
        self.ctx.timers.schedule_in(
            quiet_for.saturating_sub(quiet) + Duration::from_millis(1),
            Timer::ScreenCheck(session_id.into()),
        );
    }

    /// A screen check fell due: ask the emulator for the screen once the pane is quiet.
    pub fn on_screen_check(&mut self, session_id: &str) {
        let quiet_for = self.ctx.config.panes.screen_check_after;
        let Some(agent) = self.agents.registry.get_mut(session_id) else {
            return;
        };
        agent.screen_check_pending = false;
        let quiet = SystemTime::now()
            .duration_since(agent.last_activity)
            .unwrap_or_default();
        if quiet < quiet_for {
            self.schedule_screen_check(session_id);
        } else {
            self.panes.request_screen_text(session_id);
        }
    }

    /// The screen of an agent with screen rules, once quiet: the first matching rule says
    /// what it is doing; when a turn ends at the prompt, what it added to the screen is its
    /// reply to the oldest message typed into it.
    pub fn on_screen_text(&mut self, session_id: &str, text: &str) {
        let Some(agent) = self.agents.registry.get_mut(session_id) else {
            return;
        };
        let Some(rules) = agent.screen_rules.clone() else {
            return;
        };
        let Some((activity, rule)) = rules.classify(text) else {
            return;
        };
        if agent.activity.hooked {
            // Its hooks tell what it does and what it replied.
            return;
        }
        let was = agent.activity.activity;
        agent.activity.on_screen(activity, rule, SystemTime::now());
        if agent.activity.starts_on_screen {
            // A hooked CLI that reports its start late (Codex), before its first hook: its
            // screen says only whether it is ready; its hooks will tell the rest (a reply
            // read off the screen here would take the message its hooks deliver).
            match activity {
                super::activity::Activity::WaitingInput => {
                    self.panes.cli_ready(self.ctx, session_id);
                }
                super::activity::Activity::NeedsApproval => {
                    // A screen of its own that a person must answer (hooks to review):
                    // nothing is typed into it, however long it stays.
                    self.panes.hold_until_ready(self.ctx, session_id);
                }
                _ => {}
            }
            self.refresh_status(session_id);
            return;
        }
        if activity != super::activity::Activity::WaitingInput {
            self.refresh_status(session_id);
            return;
        }
        let before = agent.prompt_screen.replace(text.to_string());
        let turn_ended = was == super::activity::Activity::Working;
        let answered = if turn_ended {
            agent.conversation.undelivered.pop_front()
        } else {
            None
        };
        if let Some(in_reply_to) = answered {
            let content = super::screen::added_lines(before.as_deref().unwrap_or(""), text);
            self.agents.registry.announce(AgentEvent::Replied {
                session_id: session_id.to_string(),
                content: content.clone(),
                in_reply_to: in_reply_to.clone(),
            });
            self.remember(
                session_id,
                super::history::Role::Agent,
                content,
                in_reply_to,
            );
        }
        self.refresh_status(session_id);
    }

    /// The agent's process ended: announce the new status, and a crash with its last lines.
    pub fn announce_exit(&mut self, session_id: &str) {
        self.refresh_status(session_id);
        self.panes.drop_typist(self.ctx, session_id);
        let Some(agent) = self.agents.registry.get(session_id) else {
            return;
        };
        let Some(exit) = agent.exit.filter(|e| !e.is_success()) else {
            return;
        };
        let session_id = session_id.to_string();
        // tmux's screen, and the daemon's own copy of the last output for when that comes
        // back empty (tmux 3.3a sometimes drops what a program printed just before it died)
        // and for a pty session, which has no tmux screen.
        let text = self.panes.text(self.ctx, &session_id, CRASH_BYTES);
        self.ctx.jobs.run(move || {
            let mut lines = last_lines(&text.history(CRASH_LINES), CRASH_LINES as usize);
            if lines.is_empty() {
                let captured = crate::panes::text::strip_ansi(&text.captured);
                lines = last_lines(&captured, CRASH_LINES as usize);
            }
            then::<Agents>(move |mut reach: Parts<'_>| {
                let parts = &mut reach;
                parts.agents.registry.announce(AgentEvent::Crashed {
                    message: format!(
                        "Agent session terminated unexpectedly ({})",
                        exit.describe()
                    ),
                    session_id,
                    exit: Some(exit),
                    last_lines: lines,
                });
            })
        });
    }

    /// The session is gone (killed through the API, or vanished from tmux): tell observers.
    pub fn announce_gone(&mut self, agent: &super::Agent, status: AgentStatus, why: Option<&str>) {
        self.agents.registry.announce(AgentEvent::StatusChanged {
            session_id: agent.id.clone(),
            agent_type: agent.agent_type.clone(),
            status,
            activity: agent.activity.clone(),
            last_activity: agent.last_activity,
            exit: agent.exit,
        });
        if let Some(why) = why {
            self.agents.registry.announce(AgentEvent::Crashed {
                session_id: agent.id.clone(),
                message: format!("Agent session disappeared: {why}"),
                exit: agent.exit,
                last_lines: Vec::new(),
            });
        }
    }
}

/// The last `count` non-blank lines of a capture, without tmux's own "Pane is dead" notice.
fn last_lines(text: &str, count: usize) -> Vec<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with("Pane is dead ("))
        .collect();
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_skip_trailing_blanks() {
        assert_eq!(
            last_lines("a\nb\n\nc  \n\n\nPane is dead (status 3, now)\n", 2),
            ["b", "c"]
        );
        assert_eq!(last_lines("a\nb\nc\n", 5), ["a", "b", "c"]);
        assert!(last_lines("\n\n", 3).is_empty());
    }
}
