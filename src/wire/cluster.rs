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
    /// The ticket ids of the tasks it holds.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// A random id of the daemon process that wrote it: two daemons that were given the
    /// same `cluster.host` tell each other apart by it.
    #[serde(default)]
    pub instance: String,
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

/// A WebSocket message a viewer on host `origin` sent about a session of another host,
/// carried to that host (`None` text: the viewer's connection closed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TunnelIn {
    /// The viewer's host.
    pub origin: String,
    /// The viewer's connection there (slot and serial).
    pub conn: (usize, u64),
    /// A token the origin minted for the viewer's principal.
    pub token: String,
    /// The message as the viewer sent it; `None` when its connection closed.
    pub text: Option<String>,
}

/// Bytes of frames that reached the viewers' host, per viewer connection there (credit for
/// more).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TunnelAck {
    /// The viewers' host.
    pub origin: String,
    /// For each viewer connection there, how many bytes of frames arrived for it.
    pub credits: Vec<((usize, u64), usize)>,
}

/// A viewer's connection on its host: slot and serial.
pub type ViewerConn = (usize, u64);

/// A frame and the viewer connections it is for, as [`encode_tunnel_batch`] takes them.
pub type BatchEntry<'a> = (&'a [u8], &'a [ViewerConn]);

/// A frame and the viewer connections it is for, as [`decode_tunnel_batch`] gives them.
pub type DecodedEntry = (Vec<u8>, Vec<ViewerConn>);

/// Most viewer connections one frame of a [`TunnelBatch`] may name.
pub const MAX_BATCH_TARGETS: usize = u16::MAX as usize;

/// Frames for viewers on another host, from the host that owns their sessions: the owner's
/// name, then entries, each a frame and the viewer connections it is for. A frame many
/// viewers of that host watch crosses once, and their host hands it to each of them (fan-out
/// at the edge). Binary, so that terminal output is not escaped a second time: the owner's
/// name (one length byte), then per entry a 2-byte target count, each target's slot and
/// serial (8 bytes each), and the frame with a 4-byte length, all big-endian.
pub fn encode_tunnel_batch(owner: &str, entries: &[BatchEntry<'_>]) -> Vec<u8> {
    let total: usize = entries
        .iter()
        .map(|(frame, targets)| 6 + 16 * targets.len() + frame.len())
        .sum();
    let mut out = Vec::with_capacity(1 + owner.len() + total);
    out.push(u8::try_from(owner.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&owner.as_bytes()[..owner.len().min(255)]);
    for (frame, targets) in entries {
        let targets = &targets[..targets.len().min(MAX_BATCH_TARGETS)];
        out.extend_from_slice(&(targets.len() as u16).to_be_bytes());
        for (key, serial) in targets {
            out.extend_from_slice(&(*key as u64).to_be_bytes());
            out.extend_from_slice(&serial.to_be_bytes());
        }
        out.extend_from_slice(&u32::try_from(frame.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(frame);
    }
    out
}

/// Frames for viewers, as [`decode_tunnel_batch`] reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelBatch {
    /// The host that owns the sessions.
    pub owner: String,
    /// WebSocket frames in order, each with the viewer connections (slot, serial) it is for.
    pub entries: Vec<DecodedEntry>,
}

/// A batch decoded from [`encode_tunnel_batch`]'s bytes; `None` when it is cut short or
/// malformed.
pub fn decode_tunnel_batch(bytes: &[u8]) -> Option<TunnelBatch> {
    let (&len, rest) = bytes.split_first()?;
    let owner = std::str::from_utf8(rest.get(..usize::from(len))?)
        .ok()?
        .to_string();
    let mut rest = &rest[usize::from(len)..];
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let count = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
        rest = &rest[2..];
        let mut targets = Vec::with_capacity(count);
        for _ in 0..count {
            let key = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
            let serial = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
            targets.push((usize::try_from(key).ok()?, serial));
            rest = &rest[16..];
        }
        let size = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let frame = rest.get(4..4 + size)?.to_vec();
        rest = &rest[4 + size..];
        entries.push((frame, targets));
    }
    Some(TunnelBatch { owner, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_batches_round_trip_and_refuse_cut_input() {
        let big = [0u8; 300];
        let entries: [BatchEntry<'_>; 3] = [
            (b"\x81\x02hi", &[(7, 42), (9, 1)]),
            (b"", &[]),
            (&big, &[(7, 42)]),
        ];
        let bytes = encode_tunnel_batch("beta", &entries);
        let decoded = decode_tunnel_batch(&bytes).unwrap();
        assert_eq!(decoded.owner, "beta");
        let expected: Vec<DecodedEntry> = entries
            .iter()
            .map(|(frame, targets)| (frame.to_vec(), targets.to_vec()))
            .collect();
        assert_eq!(decoded.entries, expected);
        for cut in 0..bytes.len() {
            let decoded = decode_tunnel_batch(&bytes[..cut]);
            // A cut at an entry boundary is a shorter, valid batch; anything else is refused.
            assert!(decoded.is_none_or(|d| d.entries.len() < 3), "cut at {cut}");
        }
    }
}

/// Where a ticket of the cluster's queue is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QueueState {
    /// Waiting for a host with the agent type and room to claim it.
    Queued,
    /// A host claimed it and runs it (or is about to).
    Claimed,
    /// Final: its host recorded the result, it was cancelled, or its host was lost.
    Done,
}

/// A delegated task in the cluster's ticket queue: the value of its key (the ticket id) in
/// the JetStream bucket `<name>-tickets`. Every write is conditional on the revision the
/// writer read, so exactly one host claims a ticket and a host that lost it (paused, cut
/// off) cannot write it again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueuedTicket {
    /// `ticket-<uuid>`, also its key.
    pub ticket_id: String,
    /// The session it runs in (chosen when it was submitted, kept on every attempt).
    pub session_id: String,
    /// Agent type.
    pub agent_type: String,
    /// The task text.
    pub task: String,
    /// The request's context.
    #[serde(default)]
    pub context: super::task::TaskContext,
    /// Timeout in milliseconds (`None`: the running host's default).
    pub timeout_ms: Option<u64>,
    /// Working directory, an absolute path that must exist on the host that runs it
    /// (`None`: that host's `tasks.default_workspace`).
    pub working_dir: Option<String>,
    /// Isolation mode.
    #[serde(default)]
    pub isolation: super::task::Isolation,
    /// Test command.
    pub test_command: Option<Vec<String>>,
    /// Who delegated it (the token's `sub`).
    pub requested_by: Option<String>,
    /// How many more times it may run again when a host running it is lost.
    #[serde(default)]
    pub retries: u32,
    /// The host that took the request.
    pub submitted_on: String,
    /// When it was submitted, ms since the epoch.
    pub created_ms: u64,
    /// Where it is in its life.
    pub state: QueueState,
    /// The host that claimed it (and, once done, the host it last ran on).
    pub host: Option<String>,
    /// How many times a host claimed it.
    #[serde(default)]
    pub attempts: u32,
    /// The host that wrote this value (so a host sees when another one took its ticket).
    pub by: String,
    /// Hosts that claimed it and could not run it, with why; they do not claim it again.
    #[serde(default)]
    pub declined: std::collections::BTreeMap<String, String>,
    /// The task as `GET /api/tasks/{id}` shows it, as its host last wrote it.
    #[serde(default)]
    pub view: Option<serde_json::Value>,
}
