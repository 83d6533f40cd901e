//! What daemons of one cluster tell each other through NATS.

use serde::{Deserialize, Serialize};

/// A host's report about itself: the value of its key in the hosts bucket, rewritten every
/// third of `cluster.unreachable_after` and whenever its agents change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostRecord {
    /// The host's name (`cluster.host`).
    pub host: String,
    /// When the daemon started (RFC 3339).
    pub started_at: String,
    /// When this record was written, by the host's clock (RFC 3339); shown, not relied on.
    pub reported_at: String,
    /// Sessions live or being created.
    pub sessions: usize,
    /// `sessions.max_sessions`.
    pub max_sessions: usize,
    /// The agent types it has configured.
    pub agent_types: Vec<String>,
    /// Its agents, as `GET /api/agents` lists them (each with `host`).
    pub agents: Vec<serde_json::Value>,
}

impl HostRecord {
    /// How loaded the host is: live sessions per allowed session (0 = idle, 1 = full).
    pub fn load(&self) -> f64 {
        if self.max_sessions == 0 {
            return 1.0;
        }
        self.sessions as f64 / self.max_sessions as f64
    }

    /// Whether the host can take another session of `agent_type`.
    pub fn can_run(&self, agent_type: &str) -> bool {
        self.sessions < self.max_sessions && self.agent_types.iter().any(|t| t == agent_type)
    }
}

/// An API request forwarded to the host that owns what it names. It carries a token the
/// forwarding daemon minted for its caller (valid for seconds), which the owner verifies
/// like any other: a NATS client without the cluster's JWT secret can forward nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ForwardedRequest {
    /// HTTP method.
    pub method: String,
    /// Path, still percent-encoded.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// The caller's short-lived token.
    pub token: String,
    /// The request body (JSON text).
    pub body: String,
}

/// The owner's answer to a [`ForwardedRequest`], returned to the caller as is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ForwardedResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers besides the ones the encoder adds.
    pub headers: Vec<(String, String)>,
    /// The body (JSON text).
    pub body: String,
}

/// A host as `GET /api/cluster` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    /// The host's name.
    pub host: String,
    /// Whether it reported within `cluster.unreachable_after`.
    pub reachable: bool,
    /// Whether it is the daemon that answered.
    pub this_host: bool,
    /// Live sessions.
    pub sessions: usize,
    /// Allowed sessions.
    pub max_sessions: usize,
    /// `sessions / max_sessions`.
    pub load: f64,
    /// Configured agent types.
    pub agent_types: Vec<String>,
    /// Its agents' session ids.
    pub agents: Vec<String>,
    /// When its daemon started.
    pub started_at: String,
    /// When it last reported (its clock).
    pub reported_at: String,
}

/// `GET /api/cluster` answer.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// The cluster's name.
    pub cluster: String,
    /// The daemon that answered.
    pub host: String,
    /// Whether it is connected to NATS now.
    pub connected: bool,
    /// Every host known, this one first.
    pub hosts: Vec<HostView>,
}
