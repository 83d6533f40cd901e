//! What the daemon gives Gemini CLI agents (`hooks = "gemini"`): hooks that report every
//! turn, prompt and tool call to the daemon (`orchestra hook EVENT`), and the daemon's MCP
//! server.
//!
//! Gemini CLI has no flag for an extra settings file, and a system settings file must be
//! owned by root. So each session gets a home of its own for the CLI (`GEMINI_CLI_HOME`,
//! `<state_dir>/hooks/<session>.gemini/`): its `.gemini/settings.json` is the user's own
//! settings with the daemon's hooks and MCP server added, and every other entry of the
//! user's `~/.gemini` (credentials, trusted folders, the conversations under `tmp/`) is a
//! symbolic link to the user's, so the CLI sees the user's login and writes its
//! conversations where the user's own `gemini --resume` finds them.
//!
//! Gemini's events map onto the daemon's (Claude's) names: `BeforeAgent` is a submitted
//! prompt (`UserPromptSubmit`), `AfterAgent` the end of a turn with its reply
//! (`prompt_response`, as `Stop`), `BeforeTool`/`AfterTool` are `PreToolUse`/`PostToolUse`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::hook_client::{SOCKET_ENV, TOKEN_ENV};

/// Gemini's hook events and the daemon's names for them.
pub const EVENTS: [(&str, &str); 7] = [
    ("SessionStart", "SessionStart"),
    ("BeforeAgent", "UserPromptSubmit"),
    ("BeforeTool", "PreToolUse"),
    ("AfterTool", "PostToolUse"),
    ("Notification", "Notification"),
    ("AfterAgent", "Stop"),
    ("SessionEnd", "SessionEnd"),
];

/// The variable that points Gemini CLI at a home of its own.
pub const HOME_ENV: &str = "GEMINI_CLI_HOME";

/// The hooks and MCP server the daemon adds to the user's settings: each event runs
/// `exe hook NAME` (the program shell-quoted: the CLI runs hook commands through a shell)
/// with a timeout, in milliseconds, a little past the hook client's own.
pub fn daemon_settings(exe: &Path, client_timeout: Duration) -> Value {
    let program = crate::tmux::shell_quote(&exe.to_string_lossy());
    let timeout_ms = (client_timeout + Duration::from_secs(2)).as_millis() as u64;
    let mut hooks = Map::new();
    for (gemini, ours) in EVENTS {
        let entry = json!({
            "matcher": "",
            "hooks": [{
                "type": "command",
                "name": "orchestra",
                "command": format!("{program} hook {ours}"),
                "timeout": timeout_ms,
            }],
        });
        hooks.insert(gemini.to_string(), json!([entry]));
    }
    // Gemini drops variables named like credentials from an MCP server's environment;
    // the ones named here are taken (expanded) from the CLI's own.
    let env = json!({
        SOCKET_ENV: format!("${SOCKET_ENV}"),
        TOKEN_ENV: format!("${TOKEN_ENV}"),
    });
    json!({
        "hooks": hooks,
        // The daemon's own tools ask through the daemon (a plan) when they need a person.
        "mcpServers": {"orchestra": {"command": exe, "args": ["mcp"], "env": env, "trust": true}},
    })
}

/// `user` (the user's settings, any JSON) with `ours` added: our hook entries after the
/// user's for each event, our MCP server beside the user's.
pub fn merged_settings(user: Value, ours: &Value) -> Value {
    let mut settings = match user {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let hooks = settings
        .entry("hooks")
        .or_insert_with(|| Value::Object(Map::new()));
    if !hooks.is_object() {
        *hooks = Value::Object(Map::new());
    }
    for (event, entries) in ours["hooks"].as_object().into_iter().flatten() {
        let list = hooks
            .as_object_mut()
            .expect("made an object above")
            .entry(event.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        if !list.is_array() {
            *list = Value::Array(Vec::new());
        }
        let list = list.as_array_mut().expect("made an array above");
        list.extend(entries.as_array().into_iter().flatten().cloned());
    }
    let servers = settings
        .entry("mcpServers")
        .or_insert_with(|| Value::Object(Map::new()));
    if !servers.is_object() {
        *servers = Value::Object(Map::new());
    }
    servers
        .as_object_mut()
        .expect("made an object above")
        .insert("orchestra".into(), ours["mcpServers"]["orchestra"].clone());
    Value::Object(settings)
}

/// The user's Gemini home (the directory that holds `.gemini`): `GEMINI_CLI_HOME` or
/// `HOME` of the agent's environment, else the daemon's home.
pub fn user_root(env: &std::collections::BTreeMap<String, String>) -> Option<PathBuf> {
    env.get(HOME_ENV)
        .or_else(|| env.get("HOME"))
        .map(PathBuf::from)
        .or_else(crate::config::home_dir)
}

/// Makes `session_root` a Gemini home for one session: `.gemini/settings.json` (private)
/// from the user's settings and `ours`, and a link to each other entry of the user's
/// `.gemini` (whose `tmp` and `history` are created when missing, so that conversations
/// land in the user's). Run again (a resume), it writes the settings anew and keeps links.
pub fn prepare_home(user_root: &Path, session_root: &Path, ours: &Value) -> std::io::Result<()> {
    let user = user_root.join(".gemini");
    let own = session_root.join(".gemini");
    crate::create_private_dir(&own).map_err(std::io::Error::other)?;
    let user_settings = match std::fs::read_to_string(user.join("settings.json")) {
        Err(_) => Value::Null,
        // Gemini CLI reads its settings with comments allowed.
        Ok(text) => serde_json::from_str(&without_comments(&text)).unwrap_or_else(|e| {
            log::warn!(
                "{}: not JSON ({e}); the session runs without your Gemini settings",
                user.join("settings.json").display()
            );
            Value::Null
        }),
    };
    let settings = merged_settings(user_settings, ours);
    let path = own.join("settings.json");
    super::manager::write_private(&path, settings.to_string().as_bytes())?;
    if std::fs::create_dir_all(&user).is_ok() {
        for shared in ["tmp", "history"] {
            let _ = std::fs::create_dir_all(user.join(shared));
        }
    }
    for entry in std::fs::read_dir(&user).into_iter().flatten().flatten() {
        let name = entry.file_name();
        if name == "settings.json" {
            continue;
        }
        let link = own.join(&name);
        if std::fs::symlink_metadata(&link).is_ok() {
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), &link)?;
    }
    Ok(())
}

/// `text` without its `//` and `/* */` comments (outside strings), as Gemini CLI allows
/// them in its settings.
pub fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let (mut in_string, mut escaped) = (false, false);
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for next in chars.by_ref() {
                    if next == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for next in chars.by_ref() {
                    if last == '*' && next == '/' {
                        break;
                    }
                    last = next;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

/// The session's own Gemini home, beside its other hook files.
pub fn session_root(settings: &Path) -> PathBuf {
    settings.with_extension("gemini")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemini_events_run_the_hook_command_under_the_daemons_names() {
        let ours = daemon_settings(Path::new("/opt/my tools/orchestra"), Duration::from_secs(2));
        assert_eq!(
            ours["hooks"]["AfterAgent"][0]["hooks"][0]["command"],
            "'/opt/my tools/orchestra' hook Stop"
        );
        assert_eq!(ours["hooks"]["BeforeAgent"][0]["hooks"][0]["timeout"], 4000);
        assert_eq!(
            ours["mcpServers"]["orchestra"]["env"][TOKEN_ENV],
            format!("${TOKEN_ENV}")
        );
        for (_, name) in EVENTS {
            assert!(
                crate::proto::hook::HookEvent::parse(name).is_some(),
                "{name}"
            );
        }
    }

    #[test]
    fn the_users_settings_keep_everything_and_get_our_hooks_and_server_added() {
        let ours = daemon_settings(Path::new("/o"), Duration::from_secs(2));
        let user = json!({
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "hooks": {"AfterAgent": [{"matcher": "", "hooks": [{"type": "command", "command": "mine"}]}]},
            "mcpServers": {"theirs": {"command": "x"}},
        });
        let merged = merged_settings(user, &ours);
        assert_eq!(merged["security"]["auth"]["selectedType"], "gemini-api-key");
        let after = merged["hooks"]["AfterAgent"].as_array().unwrap();
        assert_eq!(after.len(), 2);
        assert_eq!(after[0]["hooks"][0]["command"], "mine");
        assert_eq!(merged["mcpServers"]["theirs"]["command"], "x");
        assert_eq!(merged["mcpServers"]["orchestra"]["trust"], true);
        // Settings that are not an object, or odd shapes inside, do not stop the hooks.
        let odd = merged_settings(json!({"hooks": 3, "mcpServers": []}), &ours);
        assert!(odd["hooks"]["SessionStart"].is_array());
        assert!(merged_settings(json!("x"), &ours)["hooks"]["SessionEnd"].is_array());
    }

    #[test]
    fn comments_go_and_strings_stay() {
        let text = "{\n  // auth\n  \"a\": \"x // not a comment\", /* b */ \"b\": \"\\\"/*\"\n}";
        let value: Value = serde_json::from_str(&without_comments(text)).unwrap();
        assert_eq!(value["a"], "x // not a comment");
        assert_eq!(value["b"], "\"/*");
    }

    #[test]
    fn a_session_home_links_the_users_state_and_has_its_own_settings() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user");
        std::fs::create_dir_all(user.join(".gemini")).unwrap();
        std::fs::write(
            user.join(".gemini/settings.json"),
            "{\n  // mine\n  \"theme\": \"x\"\n}",
        )
        .unwrap();
        std::fs::write(user.join(".gemini/oauth_creds.json"), "{}").unwrap();
        let session = dir.path().join("state/hooks/sess-gemini-1.gemini");
        let ours = daemon_settings(Path::new("/o"), Duration::from_secs(2));
        prepare_home(&user, &session, &ours).unwrap();
        // Again, as a resume does.
        prepare_home(&user, &session, &ours).unwrap();
        let own = session.join(".gemini");
        let settings: Value =
            serde_json::from_slice(&std::fs::read(own.join("settings.json")).unwrap()).unwrap();
        assert_eq!(settings["theme"], "x");
        assert!(settings["hooks"]["SessionStart"].is_array());
        for linked in ["oauth_creds.json", "tmp", "history"] {
            let target = std::fs::read_link(own.join(linked)).unwrap();
            assert_eq!(target, user.join(".gemini").join(linked));
        }
    }
}
