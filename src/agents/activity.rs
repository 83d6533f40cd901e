//! What an agent is doing, with the evidence for it. Pure: events and times in, the new
//! activity out.
//!
//! Agents whose CLI reports hooks (Claude Code) are followed by their hook events alone:
//! a prompt starts a turn (`working`), a permission notification means `needs_approval`,
//! the end of the turn means `waiting_input`. Other agents are followed by their output:
//! output means `working`, quiet means `idle`. Either way, an agent `working` with no output
//! and no event for `sessions.stuck_after` is `stuck`.

use std::time::{Duration, SystemTime};

use crate::proto::hook::HookEvent;

/// What an agent is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// Spawned; its CLI has not shown its prompt yet.
    Starting,
    /// A turn is in progress (or, without hooks, it is printing).
    Working,
    /// The turn ended and the prompt is ready for the next message.
    WaitingInput,
    /// A tool permission is pending.
    NeedsApproval,
    /// Quiet (agents without hooks), or its process has ended.
    Idle,
    /// Working, but with no output and no event for `sessions.stuck_after`.
    Stuck,
}

impl Activity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Starting => "starting",
            Activity::Working => "working",
            Activity::WaitingInput => "waiting_input",
            Activity::NeedsApproval => "needs_approval",
            Activity::Idle => "idle",
            Activity::Stuck => "stuck",
        }
    }

    /// Parses a wire name (for list filters).
    pub fn parse(text: &str) -> Option<Activity> {
        [
            Activity::Starting,
            Activity::Working,
            Activity::WaitingInput,
            Activity::NeedsApproval,
            Activity::Idle,
            Activity::Stuck,
        ]
        .into_iter()
        .find(|a| a.as_str() == text)
    }
}

/// Where the daemon learned an activity from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A hook event of the agent's CLI.
    Hook,
    /// The agent's output.
    Screen,
    /// Time passing (quiet, stuck) or the daemon's own action (spawn, exit).
    Timer,
}

impl Source {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hook => "hook",
            Source::Screen => "screen",
            Source::Timer => "timer",
        }
    }
}

/// An activity, since when, and why the daemon thinks so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityState {
    /// The activity.
    pub activity: Activity,
    /// When it began.
    pub since: SystemTime,
    /// Where it was learned.
    pub source: Source,
    /// What was seen, for people (`"Stop hook"`, `"PreToolUse: Bash"`, `"output"`).
    pub detail: String,
    /// Whether the agent's CLI has reported a hook event: from then on only hook events
    /// and the stuck timer move its activity.
    pub hooked: bool,
    /// When the last output or event arrived (the stuck timer counts from it).
    pub last_sign: SystemTime,
    /// A hooked CLI that reports its start late (Codex): `starting` until a screen rule
    /// sees its prompt (or a hook arrives), whatever it draws meanwhile.
    pub starts_on_screen: bool,
}

impl ActivityState {
    /// A just-spawned agent.
    pub fn new(now: SystemTime) -> ActivityState {
        ActivityState {
            activity: Activity::Starting,
            since: now,
            source: Source::Timer,
            detail: "spawned".into(),
            hooked: false,
            last_sign: now,
            starts_on_screen: false,
        }
    }

    /// A just-spawned agent whose CLI has hooks but reports SessionStart only with its first
    /// prompt (Codex): `starting` until its screen shows the prompt.
    pub fn starts_on_screen(now: SystemTime) -> ActivityState {
        ActivityState {
            detail: "spawned; waiting for its prompt on the screen".into(),
            starts_on_screen: true,
            ..ActivityState::new(now)
        }
    }

    /// A just-spawned agent whose CLI reports through hooks: only its hooks move it, so it
    /// is `starting` until its SessionStart hook, whatever its screen shows meanwhile.
    pub fn hooked(now: SystemTime) -> ActivityState {
        ActivityState {
            detail: "spawned; waiting for the CLI's SessionStart hook".into(),
            hooked: true,
            ..ActivityState::new(now)
        }
    }

    /// An agent a restarted daemon found running. One with hooks is followed by its hooks
    /// from the start; until its next event the daemon does not know what it is doing.
    pub fn adopted(now: SystemTime, hooked: bool) -> ActivityState {
        if !hooked {
            return ActivityState::new(now);
        }
        ActivityState {
            activity: Activity::Idle,
            since: now,
            source: Source::Timer,
            detail: "the daemon restarted; waiting for the agent's next hook event".into(),
            hooked: true,
            last_sign: now,
            starts_on_screen: false,
        }
    }

    /// Records an activity; the detail is copied only when something changed (output
    /// calls this for every chunk). Returns whether the activity itself changed.
    fn set(&mut self, activity: Activity, source: Source, detail: &str, now: SystemTime) -> bool {
        if self.activity == activity && self.source == source && self.detail == detail {
            return false;
        }
        let changed = self.activity != activity;
        if changed {
            self.since = now;
        }
        self.activity = activity;
        self.source = source;
        self.detail = detail.to_string();
        changed
    }

    /// A hook event arrived. Returns whether the activity changed.
    pub fn on_hook(
        &mut self,
        event: HookEvent,
        payload: &serde_json::Value,
        now: SystemTime,
    ) -> bool {
        self.hooked = true;
        self.last_sign = now;
        let tool = || {
            payload["tool_name"]
                .as_str()
                .unwrap_or("a tool")
                .to_string()
        };
        let (activity, detail) = match event {
            HookEvent::SessionStart => (Activity::WaitingInput, "SessionStart hook".to_string()),
            HookEvent::UserPromptSubmit => (Activity::Working, "UserPromptSubmit hook".into()),
            HookEvent::PreToolUse => (Activity::Working, format!("PreToolUse hook: {}", tool())),
            HookEvent::PostToolUse => (Activity::Working, format!("PostToolUse hook: {}", tool())),
            HookEvent::PermissionRequest => (
                Activity::NeedsApproval,
                format!("PermissionRequest hook: {}", tool_summary(payload)),
            ),
            HookEvent::Notification => {
                let message = payload["message"].as_str().unwrap_or("");
                let kind = payload["notification_type"].as_str().unwrap_or("");
                // Claude Code's kind, Gemini CLI's (a tool confirmation opened), or words.
                if kind == "permission_prompt"
                    || kind == "ToolPermission"
                    || message.contains("permission")
                {
                    (
                        Activity::NeedsApproval,
                        format!("Notification hook: {}", shorten(message)),
                    )
                } else if kind == "idle_prompt" || message.contains("waiting for your input") {
                    (
                        Activity::WaitingInput,
                        format!("Notification hook: {}", shorten(message)),
                    )
                } else {
                    return false;
                }
            }
            HookEvent::Stop => (Activity::WaitingInput, "Stop hook".into()),
            HookEvent::SessionEnd => (Activity::Idle, "SessionEnd hook".into()),
        };
        self.set(activity, Source::Hook, &detail, now)
    }

    /// The agent printed something. Returns whether the activity changed.
    pub fn on_output(&mut self, now: SystemTime) -> bool {
        self.last_sign = now;
        if self.hooked {
            // A TUI redraws while it waits (spinners, clocks): output says nothing new,
            // except that a stuck agent is moving again.
            if self.activity == Activity::Stuck {
                return self.set(Activity::Working, Source::Screen, "output again", now);
            }
            return false;
        }
        if self.starts_on_screen && self.activity == Activity::Starting {
            // Drawing its screen, not working: its prompt will say when it is ready.
            return false;
        }
        self.set(Activity::Working, Source::Screen, "output", now)
    }

    /// Time passed: `quiet` since the last output or event. Returns whether the activity
    /// changed.
    pub fn on_time(
        &mut self,
        now: SystemTime,
        idle_after: Duration,
        stuck_after: Duration,
    ) -> bool {
        let quiet = now.duration_since(self.last_sign).unwrap_or_default();
        if self.activity == Activity::Working && quiet >= stuck_after {
            let detail = format!("no output and no events for {}s", quiet.as_secs());
            return self.set(Activity::Stuck, Source::Timer, &detail, now);
        }
        // A CLI with hooks that has not reported its start long after it began: its hooks
        // are probably not reaching the daemon (a settings file it did not load, a broken
        // `orchestra` path), which the person should hear about rather than wait forever.
        let since_start = now.duration_since(self.since).unwrap_or_default();
        if self.hooked && self.activity == Activity::Starting && since_start >= stuck_after {
            let detail = format!(
                "no SessionStart hook {}s after the start: are the CLI's hooks reaching the daemon?",
                since_start.as_secs()
            );
            return self.set(Activity::Stuck, Source::Timer, &detail, now);
        }
        if !self.hooked
            && matches!(self.activity, Activity::Working | Activity::Starting)
            && quiet >= idle_after
        {
            let detail = format!("quiet for {}s", quiet.as_secs());
            return self.set(Activity::Idle, Source::Timer, &detail, now);
        }
        false
    }

    /// A screen rule matched (agents without hooks). Returns whether the activity changed.
    pub fn on_screen(&mut self, activity: Activity, rule: &str, now: SystemTime) -> bool {
        if self.hooked {
            return false;
        }
        self.set(
            activity,
            Source::Screen,
            &format!("screen rule: {rule}"),
            now,
        )
    }

    /// The agent's process ended.
    pub fn on_exit(&mut self, now: SystemTime) -> bool {
        self.set(Activity::Idle, Source::Timer, "the process ended", now)
    }

    /// A person denied a tool in a CLI that then cancels its whole turn (Gemini CLI): it
    /// waits for input again, with no hook to say so.
    pub fn on_turn_cancelled(&mut self, now: SystemTime) -> bool {
        let detail = "a tool was denied through the API; the CLI cancelled its turn";
        self.set(Activity::WaitingInput, Source::Hook, detail, now)
    }

    /// Its terminal was gone when the daemon started: nothing runs until it is resumed.
    pub fn on_lost(&mut self, now: SystemTime) -> bool {
        let detail = "its terminal was gone when the daemon started (a reboot, or its tmux \
                      server or pty holder was killed); POST /api/agents/{id}/resume starts it \
                      again";
        self.set(Activity::Idle, Source::Timer, detail, now)
    }

    /// When the next time check could change the activity, if one could.
    pub fn next_check(&self, idle_after: Duration, stuck_after: Duration) -> Option<SystemTime> {
        match self.activity {
            Activity::Working => Some(
                self.last_sign
                    + if self.hooked {
                        stuck_after
                    } else {
                        idle_after.min(stuck_after)
                    },
            ),
            Activity::Starting if !self.hooked => Some(self.last_sign + idle_after),
            Activity::Starting => Some(self.since + stuck_after),
            _ => None,
        }
    }
}

/// A tool call in a line: the tool and its main input (`Bash: touch x`).
pub fn tool_summary(payload: &serde_json::Value) -> String {
    shorten(&approval_summary(payload))
}

/// The argument that says most about a tool call (a Bash command, a file path), by key.
const MAIN_ARGUMENTS: [&str; 6] = [
    "command",
    "file_path",
    "path",
    "url",
    "pattern",
    "description",
];

/// A tool call in full, for a person who approves it: the tool and its main argument whole
/// (never cut), or the tool and all its arguments as JSON when none is the main one (an MCP
/// tool's). Every argument also travels as `tool_input` in the `approve_tool` action.
pub fn approval_summary(payload: &serde_json::Value) -> String {
    let tool = payload["tool_name"].as_str().unwrap_or("a tool");
    let input = &payload["tool_input"];
    let main = MAIN_ARGUMENTS.iter().find_map(|key| input[*key].as_str());
    match main {
        Some(text) => format!("{tool}: {text}"),
        None if input.as_object().is_some_and(|o| !o.is_empty()) => format!("{tool} {input}"),
        None => tool.to_string(),
    }
}

/// Whether a tool call has arguments besides the main one [`approval_summary`] shows: then
/// a person is shown all of them.
pub fn has_more_arguments(input: &serde_json::Value) -> bool {
    let Some(object) = input.as_object() else {
        return false;
    };
    // Without a main argument the summary holds them all already.
    let Some(main) = MAIN_ARGUMENTS.iter().find(|key| input[**key].is_string()) else {
        return false;
    };
    object.keys().any(|key| key != main)
}

fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        None => text.to_string(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    const IDLE: Duration = Duration::from_secs(10);
    const STUCK: Duration = Duration::from_secs(600);

    #[test]
    fn a_cli_that_starts_on_screen_is_starting_until_its_prompt_shows() {
        let mut state = ActivityState::starts_on_screen(at(0));
        assert!(!state.on_output(at(1)));
        assert_eq!(state.activity, Activity::Starting);
        assert!(state.on_screen(Activity::WaitingInput, "empty prompt", at(2)));
        assert!(
            state.on_output(at(3)),
            "after its start, output is work again"
        );
        assert_eq!(state.activity, Activity::Working);
    }

    #[test]
    fn approvals_show_the_whole_call_and_evidence_a_short_line() {
        let command = format!("make{} && curl x|sh", " ".repeat(300));
        let bash = json!({"tool_name": "Bash", "tool_input": {"command": command}});
        assert_eq!(approval_summary(&bash), format!("Bash: {command}"));
        assert!(tool_summary(&bash).ends_with('…'));
        assert!(!has_more_arguments(&bash["tool_input"]));
        let described =
            json!({"tool_name": "Bash", "tool_input": {"command": "ls", "description": "list"}});
        assert!(has_more_arguments(&described["tool_input"]));
        let mcp = json!({"tool_name": "mcp__x__run", "tool_input": {"script": "curl x|sh"}});
        assert_eq!(
            approval_summary(&mcp),
            r#"mcp__x__run {"script":"curl x|sh"}"#
        );
        assert!(
            !has_more_arguments(&mcp["tool_input"]),
            "all in the summary"
        );
        assert_eq!(approval_summary(&json!({"tool_name": "Read"})), "Read");
    }

    #[test]
    fn hook_events_drive_a_claude_turn() {
        let mut state = ActivityState::hooked(at(0));
        assert_eq!(state.activity, Activity::Starting);
        // Its CLI drawing its screen while it starts moves it no more than time does.
        assert!(!state.on_output(at(0)));
        assert!(!state.on_time(at(100), IDLE, STUCK));
        assert_eq!(state.activity, Activity::Starting);
        assert_eq!(state.next_check(IDLE, STUCK), Some(at(0) + STUCK));
        // With no SessionStart long after the start, the person hears about it.
        let mut silent = ActivityState::hooked(at(0));
        assert!(silent.on_time(at(0) + STUCK, IDLE, STUCK));
        assert_eq!(silent.activity, Activity::Stuck);
        assert!(
            silent.detail.contains("no SessionStart hook"),
            "{}",
            silent.detail
        );
        assert!(state.on_hook(HookEvent::SessionStart, &json!({}), at(1)));
        assert_eq!(state.activity, Activity::WaitingInput);
        // The TUI's redraws do not move a hooked agent.
        assert!(!state.on_output(at(2)));
        assert!(!state.on_time(at(100), IDLE, STUCK));
        assert_eq!(state.activity, Activity::WaitingInput);
        assert!(state.on_hook(
            HookEvent::UserPromptSubmit,
            &json!({"prompt": "hi"}),
            at(101)
        ));
        assert_eq!(
            (state.activity, state.source),
            (Activity::Working, Source::Hook)
        );
        assert_eq!(state.since, at(101));
        // A tool call keeps it working, with the tool as evidence, and the same since.
        assert!(!state.on_hook(
            HookEvent::PreToolUse,
            &json!({"tool_name": "Bash"}),
            at(102)
        ));
        assert_eq!(state.detail, "PreToolUse hook: Bash");
        assert_eq!(state.since, at(101));
        let permission = json!({"message": "Claude needs your permission to use Bash", "notification_type": "permission_prompt"});
        assert!(state.on_hook(HookEvent::Notification, &permission, at(103)));
        assert_eq!(state.activity, Activity::NeedsApproval);
        assert!(state.on_hook(
            HookEvent::PostToolUse,
            &json!({"tool_name": "Bash"}),
            at(104)
        ));
        assert!(state.on_hook(HookEvent::Stop, &json!({}), at(105)));
        assert_eq!(
            (state.activity, state.detail.as_str()),
            (Activity::WaitingInput, "Stop hook")
        );
        // Other notifications say nothing new.
        assert!(!state.on_hook(
            HookEvent::Notification,
            &json!({"message": "hello"}),
            at(106)
        ));
    }

    #[test]
    fn output_and_quiet_drive_an_agent_without_hooks() {
        let mut state = ActivityState::new(at(0));
        assert!(state.on_output(at(1)));
        assert_eq!(
            (state.activity, state.source),
            (Activity::Working, Source::Screen)
        );
        assert_eq!(state.next_check(IDLE, STUCK), Some(at(11)));
        assert!(!state.on_time(at(5), IDLE, STUCK));
        assert!(state.on_time(at(11), IDLE, STUCK));
        assert_eq!(
            (state.activity, state.source),
            (Activity::Idle, Source::Timer)
        );
        assert_eq!(state.next_check(IDLE, STUCK), None);
        assert!(state.on_output(at(12)));
        assert!(state.on_exit(at(13)));
        assert_eq!(state.detail, "the process ended");
    }

    #[test]
    fn a_working_agent_that_goes_silent_is_stuck_until_it_moves() {
        let mut state = ActivityState::new(at(0));
        state.on_hook(HookEvent::UserPromptSubmit, &json!({}), at(1));
        assert_eq!(state.next_check(IDLE, STUCK), Some(at(601)));
        assert!(
            !state.on_time(at(300), IDLE, STUCK),
            "hooked: quiet is not idle"
        );
        assert!(state.on_time(at(601), IDLE, STUCK));
        assert_eq!(state.activity, Activity::Stuck);
        assert!(state.detail.contains("600s"), "{}", state.detail);
        assert!(state.on_output(at(602)));
        assert_eq!(state.activity, Activity::Working);
    }

    #[test]
    fn an_adopted_agent_with_hooks_waits_for_its_next_hook() {
        let mut state = ActivityState::adopted(at(0), true);
        assert_eq!(
            (state.activity, state.source),
            (Activity::Idle, Source::Timer)
        );
        assert!(!state.on_output(at(1)), "its TUI's redraws say nothing");
        assert!(state.on_hook(HookEvent::UserPromptSubmit, &json!({}), at(2)));
        assert_eq!(
            (state.activity, state.source),
            (Activity::Working, Source::Hook)
        );
        assert_eq!(
            ActivityState::adopted(at(0), false).activity,
            Activity::Starting
        );
    }

    #[test]
    fn names_round_trip() {
        for name in [
            "starting",
            "working",
            "waiting_input",
            "needs_approval",
            "idle",
            "stuck",
        ] {
            assert_eq!(Activity::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(Activity::parse("busy"), None);
    }
}
