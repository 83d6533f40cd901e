//! Session metadata stored in tmux itself, so a restarted daemon finds its sessions again.
//!
//! The metadata is JSON, hex-encoded into the session's `@orchestra` user option: hex has no
//! character tmux would interpret (`;`, `#`, quotes), whatever the working directory's name.

use serde::{Deserialize, Serialize};

/// What the daemon must remember about a session across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMeta {
    /// Format version of this record.
    pub v: u32,
    /// The API's session id (`sess-<type>-<8 hex>`).
    pub id: String,
    /// Agent type name.
    pub agent_type: String,
    /// Canonical working directory.
    pub working_dir: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The session's hook credential (agent types with hooks), so that a restarted daemon
    /// still accepts the agent's hook events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_token: Option<String>,
}

impl SessionMeta {
    /// The current format version.
    pub const VERSION: u32 = 1;

    /// Hex-encoded JSON for the tmux option.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("metadata serializes");
        let mut out = String::with_capacity(json.len() * 2);
        for byte in json {
            out.push(char::from_digit((byte >> 4) as u32, 16).expect("nibble"));
            out.push(char::from_digit((byte & 0xf) as u32, 16).expect("nibble"));
        }
        out
    }

    /// Decodes an option value; `None` for anything the daemon did not write.
    pub fn decode(text: &str) -> Option<SessionMeta> {
        let text = text.trim();
        if text.is_empty() || !text.len().is_multiple_of(2) || text.len() > 64 * 1024 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
            .collect();
        let meta: SessionMeta = serde_json::from_slice(&bytes?).ok()?;
        (meta.v == Self::VERSION).then_some(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_values() {
        let meta = SessionMeta {
            v: 1,
            id: "sess-shell-0123abcd".into(),
            agent_type: "shell".into(),
            working_dir: "/tmp/#(touch x);".into(),
            created_ms: 1_700_000_000_000,
            hook_token: Some("0123".into()),
        };
        let encoded = meta.encode();
        assert!(encoded.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(SessionMeta::decode(&encoded), Some(meta));
        for foreign in ["", "zz", "7b7d", "abc", "7b2276223a327d"] {
            assert_eq!(SessionMeta::decode(foreign), None, "{foreign}");
        }
    }
}
