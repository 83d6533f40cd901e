//! Every JSON shape the REST API reads or writes, in one place.
//!
//! Request bodies reject unknown fields, so a misspelt field is an error instead of being
//! silently ignored. Timestamps are RFC 3339 UTC strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /api/agents/spawn` body.
#[derive(Debug, Clone, Deserialize)]
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
    /// tmux session name.
    pub tmux_session: String,
    /// tmux pane id, e.g. `%3`.
    pub tmux_pane: String,
    /// Creation time.
    pub created_at: String,
    /// Resident memory of the agent's process tree, MiB.
    pub memory_mb: u64,
    /// CPU use of the tree since the previous sample, percent of one core.
    pub cpu_percent: f64,
    /// Time of the last output.
    pub last_activity: String,
    /// Pid of the agent's process.
    pub pid: u32,
    /// Output capture health: `attaching`, `attached` or `detached`.
    pub capture: &'static str,
    /// Bytes of output captured since the daemon attached.
    pub output_bytes: u64,
    /// Exit status once the process has exited (absent while it runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal number if the process was killed by a signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<i32>,
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
}
