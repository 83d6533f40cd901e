//! Every JSON body the REST API reads or writes.
//!
//! Request bodies reject unknown fields, so a misspelt field is an error instead of being
//! silently ignored. Timestamps are RFC 3339 UTC strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /api/agents/spawn` body.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    /// Agent type name.
    pub agent_type: String,
    /// Directory to start in; default: the first allowed root.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A name for the session (1 to 32 lowercase letters or digits): its id becomes
    /// `sess-<type>-<name>`, e.g. `sess-claude-primary`. Unique among live sessions.
    #[serde(default)]
    pub name: Option<String>,
    /// In a cluster: the host to start it on, or `"any"` for the least loaded host that
    /// has the type and room; default: the daemon that received the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// `POST /api/agents/spawn` answer.
#[derive(Debug, Clone, Serialize)]
pub struct SpawnResponse {
    /// Session id.
    pub session_id: String,
    /// Agent type.
    pub agent_type: String,
    /// Status right after creation (`running`).
    pub status: &'static str,
    /// tmux session name.
    pub tmux_session: String,
    /// Creation time.
    pub created_at: String,
}

/// One entry of `GET /api/agents`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentSummary {
    /// Session id.
    pub session_id: String,
    /// Agent type.
    pub agent_type: String,
    /// Current status.
    pub status: &'static str,
    /// Creation time.
    pub created_at: String,
    /// Time of the last output.
    pub last_activity: String,
    /// What the agent is doing, since when, and the evidence.
    #[serde(flatten)]
    pub activity: ActivityView,
}

/// An agent's activity as REST answers show it.
#[derive(Debug, Clone, Serialize)]
pub struct ActivityView {
    /// `starting`, `working`, `waiting_input`, `needs_approval`, `idle` or `stuck`.
    pub activity: &'static str,
    /// When that activity began.
    pub activity_since: String,
    /// Why the daemon thinks so.
    pub evidence: EvidenceView,
}

/// The evidence for an activity.
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceView {
    /// `hook`, `screen` or `timer`.
    pub source: &'static str,
    /// What was seen.
    pub detail: String,
}

/// `GET /api/agents` answer.
#[derive(Debug, Clone, Serialize)]
pub struct AgentList {
    /// Matching sessions, oldest first.
    pub agents: Vec<AgentSummary>,
    /// Number of entries in `agents`.
    pub total: usize,
}

/// `GET /api/agents/{session_id}` answer.
#[derive(Debug, Clone, Serialize)]
pub struct AgentDetail {
    /// Session id.
    pub session_id: String,
    /// Agent type.
    pub agent_type: String,
    /// Current status.
    pub status: &'static str,
    /// Canonical working directory.
    pub working_dir: String,
    /// tmux session name (for a `pty` session: the same name, with no tmux session behind it).
    pub tmux_session: String,
    /// tmux pane id, e.g. `%3` (empty for a `pty` session).
    pub tmux_pane: String,
    /// Where the session runs: `tmux` or `pty`.
    pub backend: &'static str,
    /// Creation time.
    pub created_at: String,
    /// Resident memory of the agent's process tree, MiB.
    pub memory_mb: u64,
    /// CPU use of the tree since the previous sample, percent of one core.
    pub cpu_percent: f64,
    /// Time of the last output.
    pub last_activity: String,
    /// What the agent is doing, since when, and the evidence.
    #[serde(flatten)]
    pub activity: ActivityView,
    /// Pid of the agent's process.
    pub pid: u32,
    /// Output capture health: `attaching`, `attached` or `detached`.
    pub capture: &'static str,
    /// Bytes of output captured since the daemon attached.
    pub output_bytes: u64,
    /// How many times the daemon re-armed output capture on this pane.
    pub capture_rearms: u32,
    /// Whether the agent's replies arrive as `claude_response` messages (its CLI reports
    /// the end of its turns through hooks); without, only its screen shows them.
    pub reports_replies: bool,
    /// Exit status once the process has exited (absent while it runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal number if the process was killed by a signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<i32>,
}

/// `POST /api/plans/approve` and `POST /api/plans/reject` body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanDecision {
    /// The plan's proposed tasks (from its `approve_plan` action).
    pub task_ids: Vec<u64>,
}

/// `GET /api/agents/{session_id}/messages` answer.
#[derive(Debug, Clone, Serialize)]
pub struct MessageList<'a> {
    /// Session id.
    pub session_id: &'a str,
    /// The kept messages and replies, oldest first.
    pub messages: Vec<MessageView<'a>>,
    /// Number of entries in `messages`.
    pub total: usize,
    /// `before` of the page of older messages; `None` when no older ones are kept.
    pub next_before: Option<u64>,
}

/// One message of a conversation.
#[derive(Debug, Clone, Serialize)]
pub struct MessageView<'a> {
    /// Position in the conversation, from 1 (gaps: older ones were forgotten).
    pub seq: u64,
    /// `user` (a `user_message`) or `agent` (the agent's reply at the end of a turn).
    pub role: &'static str,
    /// What was said.
    pub content: &'a str,
    /// The `user_message` id, or for a reply the id it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a serde_json::Value>,
    /// When (RFC 3339).
    pub timestamp: String,
}

/// `DELETE /api/agents/{session_id}` answer.
#[derive(Debug, Clone, Serialize)]
pub struct KillResponse {
    /// Session id.
    pub session_id: String,
    /// Always `terminated`.
    pub status: &'static str,
    /// When the session was gone.
    pub terminated_at: String,
}

/// Every error's body: the reference's `{"error_code": "...", "message": "..."}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody<'a> {
    /// The error code (`SESSION_NOT_FOUND`, ...).
    pub error_code: &'a str,
    /// What went wrong, in words.
    pub message: &'a str,
}

/// `POST /api/logout`.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedOut {
    /// Always `true`: the session is over.
    pub logged_out: bool,
}

/// `GET /api/health` answer.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Always `healthy` while the daemon answers.
    pub status: &'static str,
    /// Daemon version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Agent sessions currently managed.
    pub sessions: usize,
    /// Open WebSocket observer connections.
    pub observers: usize,
    /// Delegated tasks waiting for a slot.
    pub tasks_pending: usize,
    /// Delegated tasks holding a slot.
    pub tasks_running: usize,
}

/// `POST /api/ws-ticket` answer.
#[derive(Debug, Clone, Serialize)]
pub struct TicketResponse {
    /// The one-time ticket, for `/ws/observe?ticket=...`.
    pub ticket: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// `POST /api/delegate` body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegateRequest {
    /// Agent type that does the work (it needs a `headless` command).
    pub agent_type: String,
    /// What to do.
    pub task: String,
    /// Files, requirements, and whether tests must pass.
    #[serde(default)]
    pub context: super::task::TaskContext,
    /// Timeout in milliseconds (default `tasks.default_timeout`).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Directory to work in.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The delegating (primary) session; its directory is the default.
    #[serde(default)]
    pub session_id: Option<String>,
    /// `none` (default) or `worktree`.
    #[serde(default)]
    pub isolation: super::task::Isolation,
    /// Test command argv (default: the configured one for the directory).
    #[serde(default)]
    pub test_command: Option<Vec<String>>,
    /// In a cluster: the host to run it on; without it (or with `"any"`) the ticket goes to
    /// the cluster's queue and a host that has the type and room claims it.
    #[serde(default)]
    pub host: Option<String>,
    /// In a cluster's queue: how many times the ticket runs again when the host running it
    /// is lost (default 0: it ends `failed` with `HOST_LOST`).
    #[serde(default)]
    pub retries: Option<u32>,
}

/// `POST /api/delegate` answer.
#[derive(Debug, Clone, Serialize)]
pub struct DelegateResponse {
    /// The ticket to follow.
    pub ticket_id: String,
    /// Its short sequence number on the host that runs it; absent for a ticket in a
    /// cluster's queue, which gets one when a host claims it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<u64>,
    /// The session the task runs in (listed once it starts).
    pub session_id: String,
    /// `pending`.
    pub status: &'static str,
    /// Creation time.
    pub created_at: String,
}

/// A ticket as `GET /api/tasks/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView<'a> {
    /// Ticket id.
    pub ticket_id: &'a str,
    /// Sequence number.
    pub task_id: u64,
    /// Status.
    pub status: &'static str,
    /// Agent type.
    pub agent: &'a str,
    /// Session the task runs in.
    pub session_id: &'a str,
    /// The task text.
    pub task: &'a str,
    /// The request's context.
    pub context: &'a super::task::TaskContext,
    /// Directory the agent works in.
    pub working_dir: String,
    /// Isolation mode.
    pub isolation: super::task::Isolation,
    /// The test command given in the request (`null`: the configured one, if any, applies).
    pub test_command: Option<&'a [String]>,
    /// Branch of the task's worktree.
    pub branch: Option<&'a str>,
    /// Creation time.
    pub created_at: String,
    /// Start time.
    pub started_at: Option<String>,
    /// End time.
    pub completed_at: Option<String>,
    /// Run time from start to end, once final.
    pub duration_ms: Option<u64>,
    /// The timeout.
    pub timeout_ms: u64,
    /// The verified result, once final.
    pub result: Option<&'a super::task::TaskResult>,
}

/// `GET /api/tasks` answer.
#[derive(Debug, Clone, Serialize)]
pub struct TaskList<'a> {
    /// The page of tickets, newest first.
    pub tasks: Vec<TaskView<'a>>,
    /// Number of tickets matching the filters.
    pub total: usize,
    /// Page size.
    pub limit: usize,
    /// Tickets skipped before this page.
    pub offset: usize,
}
