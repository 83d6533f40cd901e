//! What the daemon gives Claude Code agents: a settings file whose hooks report every turn,
//! prompt and tool call to the daemon (`orchestra hook EVENT`), passed with `--settings`.
//! Claude Code merges it with the user's own settings files; it replaces none of them.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::proto::hook::HookEvent;

/// The settings: for each hook event, one command hook that runs `exe hook EVENT` (the
/// program path shell-quoted, since the CLI runs hook commands through a shell), with a
/// timeout a little past the hook client's own (for `PermissionRequest`, the time a person
/// has to answer).
pub fn hook_settings(exe: &Path, client_timeout: Duration, approval_timeout: Duration) -> Value {
    let program = crate::tmux::shell_quote(&exe.to_string_lossy());
    let mut hooks = serde_json::Map::new();
    for event in HookEvent::ALL {
        let waits = match event {
            HookEvent::PermissionRequest => approval_timeout + client_timeout,
            _ => client_timeout,
        };
        let timeout_secs = waits.as_secs() + 2;
        let hook = json!({
            "type": "command",
            "command": format!("{program} hook {}", event.as_str()),
            "timeout": timeout_secs,
        });
        let mut entry = json!({"hooks": [hook]});
        if event.is_tool_event() {
            entry["matcher"] = json!("*");
        }
        hooks.insert(event.as_str().to_string(), json!([entry]));
    }
    // The daemon's own MCP tools (`mcp__orchestra__*`) run without the CLI asking first:
    // those that need a person (a plan) ask through the daemon, so one question, not two.
    json!({ "hooks": hooks, "permissions": { "allow": [OWN_MCP_TOOLS] } })
}

/// The permission rule that allows every tool of the daemon's MCP server (named
/// `orchestra` in the MCP config it passes).
pub const OWN_MCP_TOOLS: &str = "mcp__orchestra";

/// `argv` with `--settings SETTINGS --mcp-config MCP` after the program, so that they come
/// before any argument the configured command has (and before a `--`).
pub fn with_settings(argv: &[String], settings: &Path, mcp: &Path) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len() + 4);
    out.extend(argv.first().cloned());
    out.push("--settings".into());
    out.push(settings.display().to_string());
    out.push("--mcp-config".into());
    out.push(mcp.display().to_string());
    out.extend(argv.iter().skip(1).cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_runs_the_hook_command_with_a_quoted_program() {
        let settings = hook_settings(
            Path::new("/opt/my tools/orchestra"),
            Duration::from_secs(2),
            Duration::from_secs(60),
        );
        for event in HookEvent::ALL {
            let entry = &settings["hooks"][event.as_str()][0];
            assert_eq!(
                entry["hooks"][0]["command"],
                format!("'/opt/my tools/orchestra' hook {}", event.as_str())
            );
            let timeout = if event == HookEvent::PermissionRequest {
                64
            } else {
                4
            };
            assert_eq!(entry["hooks"][0]["timeout"], timeout);
            assert_eq!(entry.get("matcher").is_some(), event.is_tool_event());
        }
        assert_eq!(settings["permissions"]["allow"], json!(["mcp__orchestra"]));
    }

    #[test]
    fn settings_come_right_after_the_program() {
        let argv: Vec<String> = ["claude", "--model", "x"].map(String::from).into();
        assert_eq!(
            with_settings(&argv, Path::new("/s/h.json"), Path::new("/s/m.json")),
            [
                "claude",
                "--settings",
                "/s/h.json",
                "--mcp-config",
                "/s/m.json",
                "--model",
                "x"
            ]
        );
    }
}
