//! Codex (`hooks = "codex"`): its hooks, passed on its command line.
//!
//! Codex reads Claude-style hooks (`SessionStart`, `UserPromptSubmit`, `PreToolUse`,
//! `PermissionRequest`, `PostToolUse`, `Stop`, `SessionEnd`, with Claude's payloads and
//! Claude's answer to a permission request) from any config layer, including `-c` overrides.
//! It runs a hook only once the hook is trusted: a new one stops the TUI on a "Hooks need
//! review" screen. The trust record may come from the same layer, so the daemon passes each
//! hook with its trust: `hooks.state."/<session-flags>/config.toml:<event>:0:0".trusted_hash`,
//! the SHA-256 of the hook's identity in canonical JSON (verified against Codex 0.171; a
//! wrong hash shows the review screen, which the real-CLI test would see). The user's own
//! hooks and the project's keep their own trust, unlike `--dangerously-bypass-hook-trust`,
//! which would run a cloned repository's hooks unreviewed.
//!
//! Quirk: Codex reports `SessionStart` lazily, with the first prompt, so a Codex session
//! counts as started when its screen shows the empty prompt (its type's screen rule).

use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

use crate::proto::hook::HookEvent;

/// The events Codex reports, with its names for them in trust keys.
const EVENTS: [(HookEvent, &str); 7] = [
    (HookEvent::SessionStart, "session_start"),
    (HookEvent::UserPromptSubmit, "user_prompt_submit"),
    (HookEvent::PreToolUse, "pre_tool_use"),
    (HookEvent::PermissionRequest, "permission_request"),
    (HookEvent::PostToolUse, "post_tool_use"),
    (HookEvent::Stop, "stop"),
    (HookEvent::SessionEnd, "session_end"),
];

/// Codex clamps a `SessionEnd` hook's timeout to this many seconds (and warns at start).
const SESSION_END_MAX_SECS: u64 = 3;

/// The source path Codex gives hooks that come from `-c` overrides, part of their trust key.
const SESSION_FLAGS_SOURCE: &str = "/<session-flags>/config.toml";

/// `argv` with `-c hooks={...}` after the program: every event Codex reports runs
/// `orchestra hook EVENT`, each with its trust record; and `-c mcp_servers.orchestra={...}`:
/// the daemon's MCP server, which gets the hook socket and credential from the session's
/// environment by name (never on the command line), and whose tools run without Codex
/// asking (those that need a person ask through the daemon: one question, not two).
pub fn with_hooks(
    argv: &[String],
    exe: &Path,
    client_timeout: Duration,
    approval_timeout: Duration,
) -> Vec<String> {
    let program = crate::tmux::shell_quote(&exe.to_string_lossy());
    let mut handlers = Vec::new();
    let mut trust = Vec::new();
    for (event, key) in EVENTS {
        let waits = match event {
            HookEvent::PermissionRequest => approval_timeout + client_timeout,
            _ => client_timeout,
        };
        let mut timeout = waits.as_secs() + 2;
        if event == HookEvent::SessionEnd {
            timeout = timeout.min(SESSION_END_MAX_SECS);
        }
        let command = format!("{program} hook {}", event.as_str());
        handlers.push(format!(
            "{}=[{{hooks=[{{type=\"command\",command={},timeout={timeout}}}]}}]",
            event.as_str(),
            toml_string(&command)
        ));
        trust.push(format!(
            "{}={{trusted_hash={}}}",
            toml_string(&format!("{SESSION_FLAGS_SOURCE}:{key}:0:0")),
            toml_string(&trust_hash(key, &command, timeout))
        ));
    }
    let hooks = format!(
        "hooks={{{},state={{{}}}}}",
        handlers.join(","),
        trust.join(",")
    );
    let mcp = format!(
        "mcp_servers.orchestra={{command={},args=[\"mcp\"],env_vars=[{},{}],default_tools_approval_mode=\"approve\"}}",
        toml_string(&exe.to_string_lossy()),
        toml_string(crate::agents::hook_client::SOCKET_ENV),
        toml_string(crate::agents::hook_client::TOKEN_ENV),
    );
    let mut out = Vec::with_capacity(argv.len() + 4);
    out.extend(argv.first().cloned());
    out.push("-c".into());
    out.push(hooks);
    out.push("-c".into());
    out.push(mcp);
    out.extend(argv.iter().skip(1).cloned());
    out
}

/// Codex's `trusted_hash` of one command hook: SHA-256 of its identity as compact JSON with
/// its keys in sorted order (Codex's canonical form), written out here so that no map's
/// key order can change it.
fn trust_hash(event_key: &str, command: &str, timeout: u64) -> String {
    let json = |text: &str| serde_json::Value::String(text.to_string()).to_string();
    let canonical = format!(
        r#"{{"event_name":{},"hooks":[{{"async":false,"command":{},"timeout":{timeout},"type":"command"}}]}}"#,
        json(event_key),
        json(command)
    );
    let digest = Sha256::digest(canonical.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hooks_and_their_trust_go_right_after_the_program() {
        let out = with_hooks(
            &argv(&["codex", "resume", "abc", "--no-daemon"]),
            Path::new("/opt/orchestra dir/orchestra"),
            Duration::from_secs(2),
            Duration::from_secs(600),
        );
        assert_eq!(out[0], "codex");
        assert_eq!(out[1], "-c");
        assert_eq!(out[3], "-c");
        assert_eq!(
            out[4],
            "mcp_servers.orchestra={command=\"/opt/orchestra dir/orchestra\",args=[\"mcp\"],\
             env_vars=[\"ORCHESTRA_HOOK_SOCKET\",\"ORCHESTRA_HOOK_TOKEN\"],\
             default_tools_approval_mode=\"approve\"}"
        );
        assert_eq!(out[5..], argv(&["resume", "abc", "--no-daemon"]));
        let hooks = &out[2];
        assert!(hooks.starts_with("hooks={SessionStart=[{hooks=[{type=\"command\",command=\"'/opt/orchestra dir/orchestra' hook SessionStart\",timeout=4}]}],"));
        assert!(hooks.contains("PermissionRequest=[{hooks=[{type=\"command\",command=\"'/opt/orchestra dir/orchestra' hook PermissionRequest\",timeout=604}]}]"));
        assert!(hooks.contains("SessionEnd=[{hooks=[{type=\"command\",command=\"'/opt/orchestra dir/orchestra' hook SessionEnd\",timeout=3}]}]"));
        for (_, key) in EVENTS {
            assert!(
                hooks.contains(&format!(
                    "\"/<session-flags>/config.toml:{key}:0:0\"={{trusted_hash=\"sha256:"
                )),
                "{key}"
            );
        }
        assert!(hooks.ends_with("\"}}}"));
    }

    #[test]
    fn the_trust_hash_is_over_the_canonical_identity() {
        // The identity Codex hashes, written out by hand.
        let canonical = r#"{"event_name":"stop","hooks":[{"async":false,"command":"x hook Stop","timeout":4,"type":"command"}]}"#;
        let digest = Sha256::digest(canonical.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            trust_hash("stop", "x hook Stop", 4),
            format!("sha256:{hex}")
        );
    }

    #[test]
    fn toml_strings_escape_what_toml_needs() {
        assert_eq!(toml_string(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(toml_string("x\ny\u{1}"), r#""x\ny\u0001""#);
        assert_eq!(toml_string("é"), "\"é\"");
    }
}
