//! Agent sessions: what the daemon knows about each one and how their status is derived.
//!
//! [`AgentRegistry`] is plain state owned by the event loop (no locks). The operations that
//! need tmux or /proc (spawn, kill, adopt, exit checks) live in [`manager`] and run their
//! blocking parts on worker threads.

pub mod activity;
pub mod claude;
pub mod codex;
pub mod error;
pub mod events;
pub mod exec;
pub mod gemini;
pub mod history;
pub mod hook_client;
pub mod hooks;
pub mod manager;
pub mod mcp;
pub mod meta;
pub mod procfs;
pub mod pty_session;
pub mod record;
pub mod resume;
pub mod screen;
pub mod validate;

/// What agents code may reach: the agents, the panes below them, and the context. Agents'
/// functions and continuations ([`crate::ctx::then`]) get this, never the whole daemon.
pub struct Parts<'a> {
    /// The loop's shared context.
    pub ctx: &'a mut crate::ctx::Ctx,
    /// Pane output and input.
    pub panes: &'a mut crate::panes::Panes,
    /// The agents' own state.
    pub agents: &'a mut Agents,
}

/// The agents' state: the registry, their hooks' connections and credentials, permission
/// requests waiting for a person, tool calls, and conversations.
pub struct Agents {
    /// Agent sessions.
    registry: AgentRegistry,
    /// Listener on which agents' hooks report.
    hook_listener: mio::net::UnixListener,
    /// Hook connections open now.
    hook_connections: usize,
    /// Hook connections open now whose session is known, by session id.
    hook_sessions: HashMap<String, usize>,
    /// Tool calls of agents waiting for the loop to handle them.
    calls: Vec<hooks::PendingCall>,
    /// Writes each session's conversation to disk.
    history: history::HistoryWriter,
    /// Writes each session's record (what resuming it takes) to disk.
    records: record::RecordWriter,
    /// Requests waiting for a person, by request id, with what deciding acts on.
    approvals: HashMap<String, (hooks::Approval, hooks::Approved)>,
    /// Hook credentials of sessions with hooks, by credential: the session it stands for.
    hook_tokens: HashMap<String, String>,
}

impl Agents {
    /// No agents yet; starts the history writer thread.
    pub fn new(
        config: &crate::config::Config,
        hook_listener: mio::net::UnixListener,
    ) -> Result<Agents, String> {
        Ok(Agents {
            registry: AgentRegistry::default(),
            hook_listener,
            hook_connections: 0,
            hook_sessions: HashMap::new(),
            calls: Vec::new(),
            history: history::HistoryWriter::start(config.state_dir.join("history"))
                .map_err(|e| format!("cannot start the history writer thread: {e}"))?,
            records: record::RecordWriter::start(config.agents_dir())
                .map_err(|e| format!("cannot start the agent record writer thread: {e}"))?,
            approvals: HashMap::new(),
            hook_tokens: HashMap::new(),
        })
    }

    /// The session `id`.
    pub fn get(&self, id: &str) -> Option<&Agent> {
        self.registry.get(id)
    }

    /// The session `id`, to update its record.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Agent> {
        self.registry.get_mut(id)
    }

    /// Every session, oldest first.
    pub fn sorted(&self) -> Vec<&Agent> {
        self.registry.sorted()
    }

    /// How many sessions there are.
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.registry.is_empty()
    }

    /// Sessions live or being spawned now (what `sessions.max_sessions` counts; lost
    /// sessions have no terminal and do not count).
    pub fn live_and_spawning(&self) -> usize {
        self.registry.live() + self.registry.pending_spawns
    }

    /// The events announced since the last call.
    pub fn take_events(&mut self) -> Vec<AgentEvent> {
        self.registry.take_events()
    }

    /// The agents' tool calls waiting for the loop.
    pub fn take_calls(&mut self) -> Vec<hooks::PendingCall> {
        std::mem::take(&mut self.calls)
    }

    /// How many permission requests wait for a person.
    pub fn approvals_waiting(&self) -> usize {
        self.approvals.len()
    }
}

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::tmux::{PaneId, PaneState, SessionName};

/// Something that happened to an agent, announced on [`AgentRegistry::announce`] for the
/// features that follow agents (observers, tasks) to react to.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// The agent's process ended; its exit status is recorded on the agent.
    Exited {
        /// The session whose process ended.
        session_id: String,
        /// How it ended.
        exit: ExitInfo,
    },
    /// The session is gone: killed through the API, or its pane or tmux server vanished.
    /// The agent is no longer in the registry.
    Gone {
        /// The session that is gone.
        session_id: String,
        /// Why, in words for a task result ("it was killed through the API").
        reason: String,
    },
    /// The status or activity observers see changed (`agent_status`). Carries what the
    /// message needs, since a gone agent is no longer in the registry.
    StatusChanged {
        /// The session.
        session_id: String,
        /// Its agent type.
        agent_type: String,
        /// The new status.
        status: AgentStatus,
        /// What it is doing, with the evidence.
        activity: activity::ActivityState,
        /// When it last printed.
        last_activity: SystemTime,
        /// How its process ended, once it has.
        exit: Option<ExitInfo>,
    },
    /// The agent's CLI confirmed that it received a prompt (`user_message_delivered`).
    PromptDelivered {
        /// The session.
        session_id: String,
        /// The `user_message` id, if the client gave one.
        id: Option<serde_json::Value>,
    },
    /// The agent's CLI asks permission for a tool; observers may answer (`claude_response`
    /// with an `approve_tool` action).
    ApprovalRequested {
        /// The session.
        session_id: String,
        /// The request's id for the answer.
        request_id: String,
        /// The tool.
        tool: String,
        /// The call in full: the tool and its main argument, never cut.
        summary: String,
        /// Every argument of the call.
        tool_input: serde_json::Value,
    },
    /// A permission request was answered, or expired (`tool_decision`).
    ToolDecided {
        /// The session.
        session_id: String,
        /// The request.
        request_id: String,
        /// `allow`, `deny` or `expired`.
        decision: &'static str,
    },
    /// The agent's turn ended with a reply (`claude_response`).
    Replied {
        /// The session.
        session_id: String,
        /// The reply's text.
        content: String,
        /// The `user_message` id it answers, if known.
        in_reply_to: Option<serde_json::Value>,
    },
    /// The agent's process failed or its session disappeared (`AGENT_CRASHED`).
    Crashed {
        /// The session.
        session_id: String,
        /// What happened, for people.
        message: String,
        /// How its process ended, if known.
        exit: Option<ExitInfo>,
        /// The last lines of its screen.
        last_lines: Vec<String>,
    },
}

/// The `exit_code` and `exit_signal` fields of an exit.
pub fn exit_fields(exit: Option<ExitInfo>) -> (Option<i32>, Option<i32>) {
    match exit {
        Some(ExitInfo::Code(code)) => (Some(code), None),
        Some(ExitInfo::Signal(signal)) => (None, Some(signal)),
        _ => (None, None),
    }
}

/// Which `user_message` a turn of the agent answers.
#[derive(Debug, Default)]
pub struct Conversation {
    /// Ids of messages typed but not yet confirmed as received (`None`: sent without an
    /// id), oldest first; bounded by [`Conversation::MAX_PENDING`].
    pub undelivered: std::collections::VecDeque<Option<serde_json::Value>>,
    /// The message the current turn answers, once confirmed.
    pub answering: Option<Option<serde_json::Value>>,
    /// Messages typed so far (each with its Enter).
    pub typed_total: u64,
    /// Prompts the CLI confirmed so far.
    pub delivered_total: u64,
}

impl Conversation {
    /// Most unconfirmed messages remembered; older ones are forgotten.
    pub const MAX_PENDING: usize = 64;

    /// A message was typed into the agent.
    pub fn typed(&mut self, id: Option<serde_json::Value>) {
        if self.undelivered.len() >= Self::MAX_PENDING {
            self.undelivered.pop_front();
        }
        self.undelivered.push_back(id);
        self.typed_total += 1;
    }

    /// The agent confirmed a prompt: the oldest typed message, if any, is the one. Returns
    /// it (`Some(None)` for a message sent without an id; `None` if nothing was typed).
    pub fn delivered(&mut self) -> Option<Option<serde_json::Value>> {
        let id = self.undelivered.pop_front();
        self.delivered_total += 1;
        self.answering = id.clone();
        id
    }

    /// The turn ended: the message it answered, if it was one.
    pub fn answered(&mut self) -> Option<serde_json::Value> {
        self.answering.take().flatten()
    }
}

/// Status of a session as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentStatus {
    /// The agent produced output within the idle threshold.
    Running,
    /// The agent has been quiet for at least the idle threshold.
    Idle,
    /// The agent's process ended by itself with a failure (non-zero status or a signal).
    Error,
    /// The agent's process ended by itself with status 0.
    Exited,
    /// The session was killed through the API (only ever reported as an event or answer).
    Terminated,
    /// Its terminal was gone when the daemon started (a reboot, or its tmux server or pty
    /// holder was killed): kept with its history until it is resumed or deleted.
    Lost,
}

impl AgentStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Running => "running",
            AgentStatus::Idle => "idle",
            AgentStatus::Error => "error",
            AgentStatus::Exited => "exited",
            AgentStatus::Terminated => "terminated",
            AgentStatus::Lost => "lost",
        }
    }

    /// Parses a wire name (for list filters).
    pub fn parse(text: &str) -> Option<AgentStatus> {
        [
            AgentStatus::Running,
            AgentStatus::Idle,
            AgentStatus::Error,
            AgentStatus::Exited,
            AgentStatus::Terminated,
            AgentStatus::Lost,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// How the agent's process ended, once tmux has told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitInfo {
    /// Exited with this status code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Dead, but tmux could not tell how (reported as `error`).
    Unknown,
}

impl ExitInfo {
    /// From tmux's view of a dead pane.
    pub fn from_pane_state(state: PaneState) -> Option<ExitInfo> {
        match state {
            PaneState::Alive => None,
            PaneState::Exited(code) => Some(ExitInfo::Code(code)),
            PaneState::Signaled(signal) => Some(ExitInfo::Signal(signal)),
            PaneState::DeadUnknown => Some(ExitInfo::Unknown),
        }
    }

    /// Whether this counts as a clean exit.
    pub fn is_success(self) -> bool {
        self == ExitInfo::Code(0)
    }

    /// Human-readable description, e.g. "exit status 3" or "signal 9".
    pub fn describe(self) -> String {
        match self {
            ExitInfo::Code(code) => format!("exit status {code}"),
            ExitInfo::Signal(signal) => format!("killed by signal {signal}"),
            ExitInfo::Unknown => "exit status unknown".into(),
        }
    }
}

/// Where a session runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionBackend {
    /// A pane of the daemon's private tmux server.
    Tmux {
        /// The session's pane.
        pane: PaneId,
        /// Pid of the tmux server that owns the pane.
        server_pid: u32,
    },
    /// A pseudo-terminal held by `orchestra pty-hold`.
    Pty {
        /// The holder's pid.
        holder_pid: u32,
    },
    /// None any more: the terminal (of this backend) was gone when the daemon started.
    Lost(crate::config::Backend),
}

impl SessionBackend {
    /// The session's tmux pane (`tmux` backend only).
    pub fn pane(&self) -> Option<&PaneId> {
        match self {
            SessionBackend::Tmux { pane, .. } => Some(pane),
            SessionBackend::Pty { .. } | SessionBackend::Lost(_) => None,
        }
    }

    /// The configuration name of the backend.
    pub fn kind(&self) -> crate::config::Backend {
        match self {
            SessionBackend::Tmux { .. } => crate::config::Backend::Tmux,
            SessionBackend::Pty { .. } => crate::config::Backend::Pty,
            SessionBackend::Lost(backend) => *backend,
        }
    }

    /// Whether the session has a terminal (it is not [`SessionBackend::Lost`]).
    pub fn has_terminal(&self) -> bool {
        !matches!(self, SessionBackend::Lost(_))
    }
}

/// One agent session.
#[derive(Debug)]
pub struct Agent {
    /// API id, `sess-<type>-<8 hex>`.
    pub id: String,
    /// Agent type name.
    pub agent_type: String,
    /// tmux session, `agent-<type>-<8 hex>`.
    pub tmux_session: SessionName,
    /// Where it runs: a tmux pane, or a pseudo-terminal held by `orchestra pty-hold`.
    pub backend: SessionBackend,
    /// Pid of the pane's program (the agent).
    pub pid: u32,
    /// How the agent ended, reported by its pty holder while its last output may still be
    /// on the way (announced once the terminal reaches its end, or after a short wait).
    pub pending_exit: Option<ExitInfo>,
    /// Canonical working directory.
    pub working_dir: PathBuf,
    /// When the session was created.
    pub created_at: SystemTime,
    /// When the pane last produced output.
    pub last_activity: SystemTime,
    /// Set once the agent's process has ended and tmux reported how.
    pub exit: Option<ExitInfo>,
    /// Source slot of the process-exit watch (pidfd) while the agent runs.
    pub exit_watch: Option<usize>,
    /// Last CPU sample, for `cpu_percent` between two requests.
    pub last_usage: Option<procfs::Usage>,
    /// The last status announced to observers.
    pub reported: AgentStatus,
    /// What the agent is doing, with the evidence.
    pub activity: activity::ActivityState,
    /// The last activity announced to observers.
    pub reported_activity: activity::Activity,
    /// The session's hook credential (agent types with hooks), also in its tmux metadata.
    pub hook_token: Option<String>,
    /// `user_message` ids typed into the agent and not yet confirmed by its CLI, oldest
    /// first, and the one whose turn is in progress.
    pub conversation: Conversation,
    /// The recent messages and replies (`GET /api/agents/{id}/messages`).
    pub history: history::History,
    /// Its type's screen rules (types without hooks that have some).
    pub screen_rules: Option<std::sync::Arc<screen::ScreenRules>>,
    /// Whether a screen check is scheduled.
    pub screen_check_pending: bool,
    /// The screen when a rule last showed it waiting for input (a turn's reply is what it
    /// added since).
    pub prompt_screen: Option<String>,
    /// Whether an idle check is scheduled.
    pub idle_check_pending: bool,
    /// What it takes to start it again (sessions spawned through the API), also on disk.
    pub record: Option<record::AgentRecord>,
    /// The tool call a CLI whose dialogs are answered by keys reported last, for the
    /// confirmation that may follow.
    pub last_tool: Option<serde_json::Value>,
}

impl Agent {
    /// A session in its initial state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        agent_type: String,
        tmux_session: SessionName,
        backend: SessionBackend,
        pid: u32,
        working_dir: PathBuf,
        created_at: SystemTime,
    ) -> Agent {
        Agent {
            id,
            agent_type,
            tmux_session,
            backend,
            pid,
            pending_exit: None,
            working_dir,
            created_at,
            last_activity: created_at,
            exit: None,
            exit_watch: None,
            last_usage: None,
            reported: AgentStatus::Running,
            activity: activity::ActivityState::new(SystemTime::now()),
            reported_activity: activity::Activity::Starting,
            hook_token: None,
            conversation: Conversation::default(),
            history: history::History::default(),
            screen_rules: None,
            screen_check_pending: false,
            prompt_screen: None,
            idle_check_pending: false,
            record: None,
            last_tool: None,
        }
    }
}

impl Agent {
    /// The status at `now`, given the idle threshold.
    pub fn status(&self, now: SystemTime, idle_after: Duration) -> AgentStatus {
        if !self.backend.has_terminal() {
            return AgentStatus::Lost;
        }
        match self.exit {
            Some(exit) if exit.is_success() => AgentStatus::Exited,
            Some(_) => AgentStatus::Error,
            None => {
                let quiet = now.duration_since(self.last_activity).unwrap_or_default();
                if quiet >= idle_after {
                    AgentStatus::Idle
                } else {
                    AgentStatus::Running
                }
            }
        }
    }
}

/// All sessions the daemon manages, by API id.
#[derive(Debug, Default)]
pub struct AgentRegistry {
    agents: HashMap<String, Agent>,
    /// What happened to agents since the loop last looked, oldest first.
    events: Vec<AgentEvent>,
    /// Spawns accepted but not finished yet (they count against `max_sessions`).
    pub pending_spawns: usize,
}

impl AgentRegistry {
    /// Announces what happened to an agent. The loop hands it to whoever reacts to agents
    /// (tasks, today) once the current step is done; agents never call into them.
    pub fn announce(&mut self, event: AgentEvent) {
        self.events.push(event);
    }

    /// Takes the announced events, oldest first.
    pub fn take_events(&mut self) -> Vec<AgentEvent> {
        std::mem::take(&mut self.events)
    }

    /// Adds or replaces a session.
    pub fn insert(&mut self, agent: Agent) {
        self.agents.insert(agent.id.clone(), agent);
    }

    /// Looks a session up by exact id.
    pub fn get(&self, id: &str) -> Option<&Agent> {
        self.agents.get(id)
    }

    /// Looks a session up by exact id, mutably.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Agent> {
        self.agents.get_mut(id)
    }

    /// Removes a session.
    pub fn remove(&mut self, id: &str) -> Option<Agent> {
        self.agents.remove(id)
    }

    /// All sessions, oldest first (ties broken by id, so the order is stable).
    pub fn sorted(&self) -> Vec<&Agent> {
        let mut all: Vec<&Agent> = self.agents.values().collect();
        all.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        all
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// How many sessions have a terminal (are not lost).
    pub fn live(&self) -> usize {
        self.agents
            .values()
            .filter(|a| a.backend.has_terminal())
            .count()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Whether a session with this tmux name exists.
    pub fn has_tmux_session(&self, name: &SessionName) -> bool {
        self.agents.values().any(|a| &a.tmux_session == name)
    }
}

/// A new random `(session id, tmux session name)` pair for `agent_type`, sharing 8 hex
/// digits as the reference shows (`sess-droid-a1b2c3d4` / `agent-droid-a1b2c3d4`).
pub fn new_session_ids(agent_type: &str) -> (String, SessionName) {
    let bytes = uuid::Uuid::new_v4();
    let hex: String = bytes.as_bytes()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = SessionName::parse(&format!("agent-{agent_type}-{hex}"))
        .expect("agent type names are validated at config load");
    (format!("sess-{agent_type}-{hex}"), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_reference_shape() {
        let (id, name) = new_session_ids("droid");
        assert!(id.starts_with("sess-droid-") && id.len() == "sess-droid-".len() + 8);
        assert_eq!(&id[5..], &name.as_str()[6..]);
    }

    #[test]
    fn status_is_derived_from_exit_and_activity() {
        let now = SystemTime::now();
        let mut agent = Agent::new(
            "sess-x-00000000".into(),
            "x".into(),
            SessionName::parse("agent-x-00000000").unwrap(),
            SessionBackend::Tmux {
                pane: PaneId::parse("%1").unwrap(),
                server_pid: 1,
            },
            1,
            "/".into(),
            now,
        );
        let idle = Duration::from_secs(5);
        assert_eq!(agent.status(now, idle), AgentStatus::Running);
        assert_eq!(agent.status(now + idle, idle), AgentStatus::Idle);
        agent.exit = Some(ExitInfo::Code(0));
        assert_eq!(agent.status(now, idle), AgentStatus::Exited);
        agent.exit = Some(ExitInfo::Code(2));
        assert_eq!(agent.status(now, idle), AgentStatus::Error);
        agent.exit = Some(ExitInfo::Signal(9));
        assert_eq!(agent.status(now, idle), AgentStatus::Error);
        assert_eq!(AgentStatus::parse("idle"), Some(AgentStatus::Idle));
        assert_eq!(AgentStatus::parse("bogus"), None);
    }
}
