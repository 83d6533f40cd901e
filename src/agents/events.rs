//! Status events for observers: `agent_status` on every status change, and an `error`
//! `AGENT_CRASHED` (with the exit status and the last lines of the screen) when an agent's
//! process fails.

use std::time::{Duration, SystemTime};

use super::{AgentStatus, ExitInfo};
use crate::daemon::{Daemon, Timer};
use crate::error_code::ErrorCode;
use crate::time::rfc3339;
use crate::tmux::{self, TmuxError};
use crate::wire::ws::{AgentStatusMessage, CrashMessage};

/// Lines of the final screen sent with `AGENT_CRASHED`.
const CRASH_LINES: u32 = 20;

/// The daemon's own tail of the output, used when tmux's screen is empty.
const CRASH_BYTES: usize = 16 * 1024;

fn exit_fields(exit: Option<ExitInfo>) -> (Option<i32>, Option<i32>) {
    match exit {
        Some(ExitInfo::Code(code)) => (Some(code), None),
        Some(ExitInfo::Signal(signal)) => (None, Some(signal)),
        _ => (None, None),
    }
}

impl Daemon {
    /// Announces the session's status if it changed since the last announcement.
    pub fn refresh_status(&mut self, session_id: &str) {
        let idle_after = self.config.sessions.idle_after;
        let Some(agent) = self.agents.get_mut(session_id) else {
            return;
        };
        let status = agent.status(SystemTime::now(), idle_after);
        if status == agent.reported {
            return;
        }
        agent.reported = status;
        let (exit_code, exit_signal) = exit_fields(agent.exit);
        let agent_type = agent.agent_type.clone();
        let message = AgentStatusMessage {
            r#type: "agent_status",
            session_id,
            agent_type: &agent_type,
            status: status.as_str(),
            last_activity: rfc3339(agent.last_activity),
            exit_code,
            exit_signal,
        };
        self.broadcast(&message);
    }

    /// Makes sure an idle check is scheduled for when the session would go quiet.
    pub fn schedule_idle_check(&mut self, session_id: &str) {
        let idle_after = self.config.sessions.idle_after;
        let Some(agent) = self.agents.get_mut(session_id) else {
            return;
        };
        if agent.idle_check_pending || agent.exit.is_some() {
            return;
        }
        agent.idle_check_pending = true;
        let quiet = SystemTime::now()
            .duration_since(agent.last_activity)
            .unwrap_or_default();
        // A millisecond late rather than early: the check compares wall-clock times, and
        // the timer runs on the monotonic clock.
        self.timers.schedule_in(
            idle_after.saturating_sub(quiet) + Duration::from_millis(1),
            Timer::IdleCheck(session_id.into()),
        );
    }

    /// An idle check fell due: announce `idle`, or check again later if output came since.
    pub fn on_idle_check(&mut self, session_id: &str) {
        let Some(agent) = self.agents.get_mut(session_id) else {
            return;
        };
        agent.idle_check_pending = false;
        let quiet = SystemTime::now()
            .duration_since(agent.last_activity)
            .unwrap_or_default();
        // The same comparison as `Agent::status`, so a check that finds the agent quiet
        // always announces `idle` (a tolerance here once made it skip the announcement and
        // the next check, leaving the agent `running` until it printed again).
        if quiet >= self.config.sessions.idle_after {
            self.refresh_status(session_id);
        } else {
            self.schedule_idle_check(session_id);
        }
    }

    /// The agent's process ended: announce the new status, and a crash with its last lines.
    pub fn announce_exit(&mut self, session_id: &str) {
        self.refresh_status(session_id);
        self.drop_typist(session_id);
        let Some(agent) = self.agents.get(session_id) else {
            return;
        };
        let Some(exit) = agent.exit.filter(|e| !e.is_success()) else {
            return;
        };
        let (tmux, pane, session_id) = (
            self.tmux.clone(),
            agent.pane.clone(),
            session_id.to_string(),
        );
        // The daemon's own copy of the last output, for when tmux's screen comes back empty
        // (tmux 3.3a sometimes drops what a program printed just before it died).
        let captured =
            crate::panes::text::strip_ansi(&self.hub.tail_text(&session_id, CRASH_BYTES));
        self.jobs.run(move || {
            let mut lines = tmux::capture_tail(&pane, CRASH_LINES)
                .map_err(TmuxError::from)
                .and_then(|l| tmux.run(&l))
                .map(|text| last_lines(&text, CRASH_LINES as usize))
                .unwrap_or_default();
            if lines.is_empty() {
                lines = last_lines(&captured, CRASH_LINES as usize);
            }
            Box::new(move |daemon: &mut Daemon| {
                let (exit_code, exit_signal) = exit_fields(Some(exit));
                let message = CrashMessage {
                    r#type: "error",
                    error_code: ErrorCode::AgentCrashed,
                    message: format!(
                        "Agent session terminated unexpectedly ({})",
                        exit.describe()
                    ),
                    session_id: &session_id,
                    exit_code,
                    exit_signal,
                    last_lines: lines,
                };
                daemon.broadcast(&message);
            })
        });
    }

    /// The session is gone (killed through the API, or vanished from tmux): tell observers.
    pub fn announce_gone(&mut self, agent: &super::Agent, status: AgentStatus, why: Option<&str>) {
        let (exit_code, exit_signal) = exit_fields(agent.exit);
        let message = AgentStatusMessage {
            r#type: "agent_status",
            session_id: &agent.id,
            agent_type: &agent.agent_type,
            status: status.as_str(),
            last_activity: rfc3339(agent.last_activity),
            exit_code,
            exit_signal,
        };
        self.broadcast(&message);
        if let Some(why) = why {
            let message = CrashMessage {
                r#type: "error",
                error_code: ErrorCode::AgentCrashed,
                message: format!("Agent session disappeared: {why}"),
                session_id: &agent.id,
                exit_code,
                exit_signal,
                last_lines: Vec::new(),
            };
            self.broadcast(&message);
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
