//! The real Claude Code CLI (pinned, installed under `target/`) under the daemon, offline,
//! talking to a scripted model server.

use std::path::Path;

use serde_json::json;

use crate::common::{DaemonProcess, id_of, is_activity};
use crate::model::{Reply, ScriptedModel, claude_cli, claude_home};

/// A daemon whose `claude` agent type runs the real CLI against `model`, with its own
/// `$HOME` (under the daemon's directory) set up to start at the prompt in the work dir.
pub fn daemon_with_claude(model: &ScriptedModel, extra: &str) -> DaemonProcess {
    daemon_with_claude_args(model, &[], extra)
}

/// Like [`daemon_with_claude`], with extra arguments for the CLI.
/// The built-in `claude` type's arguments after its program.
fn builtin_claude_args() -> Vec<&'static str> {
    let command = &orchestra::config::builtin_agents()["claude"].command;
    command[1..]
        .iter()
        .map(|arg| &*Box::leak(arg.clone().into_boxed_str()))
        .collect()
}

pub fn daemon_with_claude_args(model: &ScriptedModel, args: &[&str], extra: &str) -> DaemonProcess {
    let cli = claude_cli();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env = model.env();
    let extra = extra.to_string();
    DaemonProcess::start_with_work(move |work: &Path| {
        let home = work.parent().unwrap().join("claude-home");
        claude_home(&home, &[work]);
        let quoted = |text: &str| toml::Value::String(text.to_string()).to_string();
        let mut vars = vec![format!("HOME = {}", quoted(&home.display().to_string()))];
        vars.extend(env.iter().map(|(k, v)| format!("{k} = {}", quoted(v))));
        let command: Vec<String> = std::iter::once(cli.as_str())
            .chain(args.iter().map(String::as_str))
            .map(quoted)
            .collect();
        // The built-in one-shot form, with the installed CLI as its program.
        let builtin = orchestra::config::builtin_agents()["claude"]
            .headless
            .clone()
            .unwrap();
        let headless: Vec<String> = std::iter::once(cli.as_str())
            .chain(builtin.iter().skip(1).map(String::as_str))
            .map(quoted)
            .collect();
        // `{env}` in the extra config stands for the same environment (for more types).
        let env_table = format!("{{ {} }}", vars.join(", "));
        format!(
            "[agents.claude]\ncommand = [{}]\nheadless = [{}]\nhooks = \"claude\"\nenv = {env_table}\n{}",
            command.join(", "),
            headless.join(", "),
            extra.replace("{env}", &env_table)
        )
    })
}

/// A viewer's idea of a pane's screen: its snapshot and live output fed into a terminal
/// emulator, for TUIs that draw words apart with cursor moves.
pub struct ScreenViewer {
    parser: vt100::Parser,
    session: String,
    /// Every message read that was not terminal output, in order.
    pub events: Vec<serde_json::Value>,
}

impl ScreenViewer {
    /// Subscribes `ws` to `session` (a pane of the daemon's default 200x50 size).
    pub fn subscribe(ws: &mut crate::common::Ws, session: &str) -> ScreenViewer {
        assert_eq!(ws.subscribe(session)["type"], "subscribed");
        ScreenViewer {
            parser: vt100::Parser::new(50.try_into().unwrap(), 200.try_into().unwrap(), 0),
            session: session.to_string(),
            events: Vec::new(),
        }
    }

    /// The screen's text now.
    pub fn text(&self) -> String {
        self.parser.screen().contents()
    }

    /// Reads from `ws` until the screen shows `needle`.
    pub fn read_until(&mut self, ws: &mut crate::common::Ws, needle: &str) {
        while !self.text().contains(needle) {
            let message = ws.recv();
            if message["type"] == "terminal_output" && message["session_id"] == self.session {
                self.parser
                    .process(message["data"].as_str().unwrap().as_bytes());
            } else {
                self.events.push(message);
            }
        }
    }
}

#[test]
fn a_user_message_reaches_the_real_claude_tui_and_its_scripted_answer_streams_back() {
    let model = ScriptedModel::start(vec![Reply::text("Hello from the scripted model.")]);
    let daemon = daemon_with_claude(&model, "");
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "claude"));
    let mut ws = daemon.ws(&token);
    let mut screen = ScreenViewer::subscribe(&mut ws, &session);
    // The TUI is ready once it shows its prompt's footer.
    screen.read_until(&mut ws, "for agents");

    ws.send(
        json!({"type": "user_message", "session_id": session, "content": "hello there", "id": 1}),
    );
    screen.read_until(&mut ws, "Hello from the scripted model.");
    let asked = model.requests();
    let last = asked.last().expect("the CLI asked the model");
    assert!(
        last["messages"].to_string().contains("hello there"),
        "the typed message reached the model: {}",
        last["messages"]
    );
}

#[test]
fn hooks_give_delivery_the_reply_and_activity_with_evidence() {
    let model = ScriptedModel::start(vec![Reply::text("Forty-two, as scripted.")]);
    let daemon = daemon_with_claude(&model, "");
    // The user's own Claude settings, with a hook of their own: the daemon's settings are
    // added to them, and both run.
    let home = daemon.work.parent().unwrap().join("claude-home");
    let marker = daemon.dir.path().join("user-hook-ran");
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    std::fs::write(
        home.join(".claude/settings.json"),
        json!({"hooks": {"UserPromptSubmit": [{"hooks": [{"type": "command", "command": format!("touch {}", marker.display())}]}]}})
            .to_string(),
    )
    .unwrap();
    let token = daemon.control();
    let mut ws = daemon.ws(&daemon.token("observe"));
    // The reference's primary session, by name.
    let spawned = daemon.post(
        "/api/agents/spawn",
        &token,
        &json!({"agent_type": "claude", "working_dir": daemon.work, "name": "primary"}),
    );
    assert_eq!(spawned.status, 201, "{}", spawned.text());
    let session = spawned.json()["session_id"].as_str().unwrap().to_string();
    assert_eq!(session, "sess-claude-primary");
    let is_status = |m: &serde_json::Value, activity: &str| is_activity(m, &session, activity);
    // The CLI's SessionStart hook says its prompt is ready.
    let ready = ws.recv_until("waiting_input", |m| is_status(m, "waiting_input"));
    assert_eq!(ready["evidence"]["source"], "hook", "{ready}");
    assert_eq!(ready["evidence"]["detail"], "SessionStart hook", "{ready}");

    let mut typist = daemon.ws(&token);
    typist.send(json!({"type": "user_message", "session_id": session, "content": "What is the answer?", "id": "q-1"}));
    let delivered = ws.recv_until("delivery", |m| m["type"] == "user_message_delivered");
    assert_eq!(delivered["session_id"], session.as_str());
    assert_eq!(delivered["id"], "q-1");
    let working = ws.recv_until("working", |m| is_status(m, "working"));
    assert_eq!(
        working["evidence"]["detail"], "UserPromptSubmit hook",
        "{working}"
    );
    let reply = ws.recv_until("the reply", |m| m["type"] == "claude_response");
    assert_eq!(reply["session_id"], session.as_str());
    assert_eq!(reply["content"], "Forty-two, as scripted.");
    assert_eq!(reply["in_reply_to"], "q-1");
    assert_eq!(reply["actions"], json!([]));
    let done = ws.recv_until("waiting again", |m| is_status(m, "waiting_input"));
    assert_eq!(done["evidence"]["detail"], "Stop hook", "{done}");
    assert!(marker.exists(), "the user's own hook ran too");

    let detail = daemon.get(&format!("/api/agents/{session}"), &token).json();
    assert_eq!(detail["activity"], "waiting_input", "{detail}");
    assert_eq!(detail["evidence"]["source"], "hook", "{detail}");
    let waiting = daemon
        .get("/api/agents?activity=waiting_input", &token)
        .json();
    assert_eq!(waiting["total"], 1, "{waiting}");
    let working = daemon.get("/api/agents?activity=working", &token).json();
    assert_eq!(working["total"], 0, "{working}");
    daemon
        .get("/api/agents?activity=busy", &token)
        .assert_error(400, "INVALID_REQUEST");
}

#[test]
fn a_tool_permission_is_answered_from_afar_allow_runs_it_and_deny_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed.txt");
    let denied = dir.path().join("denied.txt");
    let touch = |path: &Path| {
        Reply::tool(
            "Bash",
            json!({"command": format!("touch {}", path.display()), "description": "make a file"}),
        )
    };
    let model = ScriptedModel::start(vec![
        touch(&allowed),
        Reply::text("Made it."),
        touch(&denied),
        Reply::text("Understood, not made."),
    ]);
    // The built-in type's arguments (its permission mode, in which the CLI asks before
    // running Bash).
    let daemon = daemon_with_claude_args(&model, &builtin_claude_args(), "");
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    let session = id_of(&daemon.spawn(&token, "claude"));
    let activity_is = |m: &serde_json::Value, activity: &str| is_activity(m, &session, activity);
    ws.recv_until("the prompt", |m| activity_is(m, "waiting_input"));

    for (path, decision, reply) in [
        (&allowed, "allow", "Made it."),
        (&denied, "deny", "Understood, not made."),
    ] {
        ws.send(json!({"type": "user_message", "session_id": session, "content": format!("please {decision}")}));
        let asking = ws.recv_until("needs_approval", |m| activity_is(m, "needs_approval"));
        assert_eq!(asking["evidence"]["source"], "hook", "{asking}");
        assert!(
            asking["evidence"]["detail"]
                .as_str()
                .unwrap()
                .contains("Bash: touch"),
            "{asking}"
        );
        let question = ws.recv_until("approve_tool", |m| {
            m["type"] == "claude_response" && m["actions"][0]["type"] == "approve_tool"
        });
        let action = &question["actions"][0];
        assert_eq!(action["tool"], "Bash");
        assert!(
            action["summary"]
                .as_str()
                .unwrap()
                .contains(&path.display().to_string())
        );
        let request_id = action["request_id"].as_str().unwrap().to_string();
        assert!(!path.exists(), "nothing runs before the answer");
        // An observe-only viewer cannot answer.
        let mut viewer = daemon.ws(&daemon.token("observe"));
        viewer.send(json!({"type": "approve_tool", "session_id": session, "request_id": request_id, "decision": "allow"}));
        let refused = viewer.recv_until("refusal", |m| m["type"] == "error");
        assert_eq!(refused["error_code"], "FORBIDDEN");

        ws.send(json!({"type": "approve_tool", "session_id": session, "request_id": request_id, "decision": decision, "message": "not now"}));
        let decided = ws.recv_until("tool_decision", |m| m["type"] == "tool_decision");
        assert_eq!(decided["decision"], decision);
        assert_eq!(decided["request_id"], request_id.as_str());
        let answer = ws.recv_until("the reply", |m| {
            m["type"] == "claude_response" && m["actions"] == json!([])
        });
        assert_eq!(answer["content"], reply);
        assert_eq!(path.exists(), decision == "allow", "{}", path.display());
        // The request is answered: a second answer is an error.
        ws.send(json!({"type": "approve_tool", "session_id": session, "request_id": request_id, "decision": "allow"}));
        let twice = ws.recv_until("second answer", |m| m["type"] == "error");
        assert_eq!(twice["error_code"], "INVALID_REQUEST");
    }
}

#[test]
fn a_restart_mid_conversation_keeps_the_history_and_the_hooks() {
    let model = ScriptedModel::start(vec![
        Reply::text("First answer."),
        Reply::text("Second answer, after the restart."),
    ]);
    let mut daemon = daemon_with_claude(&model, "");
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    let session = id_of(&daemon.spawn(&token, "claude"));
    ws.recv_until("the prompt", |m| {
        m["type"] == "agent_status" && m["activity"] == "waiting_input"
    });
    ws.send(json!({"type": "user_message", "session_id": session, "content": "first question", "id": 1}));
    ws.recv_until("the first reply", |m| m["type"] == "claude_response");

    daemon.restart();
    let token = daemon.control();
    let history = daemon
        .get(&format!("/api/agents/{session}/messages"), &token)
        .json();
    assert_eq!(history["total"], 2, "{history}");
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(
        (
            messages[0]["role"].as_str(),
            messages[0]["content"].as_str(),
            &messages[0]["id"]
        ),
        (Some("user"), Some("first question"), &json!(1))
    );
    assert_eq!(
        (
            messages[1]["role"].as_str(),
            messages[1]["content"].as_str(),
            &messages[1]["id"]
        ),
        (Some("agent"), Some("First answer."), &json!(1))
    );
    assert!(crate::common::is_rfc3339_utc(&messages[1]["timestamp"]));

    // The agent's hooks reach the new daemon: the conversation goes on, with activity
    // derived from its hooks again. (Typing waits until the new daemon has the pane's
    // pipe again; on a loaded machine that can take a moment after the restart.)
    crate::common::wait_until("the pane's capture re-attached", || {
        let detail = daemon.get(&format!("/api/agents/{session}"), &token).json();
        (detail["capture"] == "attached").then_some(())
    });
    let mut ws = daemon.ws(&token);
    ws.send(json!({"type": "user_message", "session_id": session, "content": "second question", "id": 2}));
    let working = ws.recv_until("working", |m| {
        m["type"] == "agent_status" && m["activity"] == "working"
    });
    assert_eq!(working["evidence"]["source"], "hook", "{working}");
    let reply = ws.recv_until("the second reply", |m| m["type"] == "claude_response");
    assert_eq!(reply["content"], "Second answer, after the restart.");
    assert_eq!(reply["in_reply_to"], 2);
    let history = daemon
        .get(&format!("/api/agents/{session}/messages"), &token)
        .json();
    assert_eq!(history["total"], 4, "{history}");
    assert_eq!(history["messages"][3]["seq"], 4);
}

#[test]
fn a_claude_agent_whose_machine_went_down_resumes_its_conversation() {
    let model = ScriptedModel::start(vec![
        Reply::text("Noted: the word is pelican."),
        Reply::text("The word was pelican."),
    ]);
    let mut daemon = daemon_with_claude(&model, "");
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    let session = id_of(&daemon.spawn(&token, "claude"));
    ws.recv_until("the prompt", |m| {
        m["type"] == "agent_status" && m["activity"] == "waiting_input"
    });
    ws.send(json!({"type": "user_message", "session_id": session, "content": "remember the word pelican", "id": 1}));
    ws.recv_until("the first reply", |m| m["type"] == "claude_response");
    drop(ws);
    // The machine goes down with everything on it once the turn is on disk; the daemon
    // comes back without them, and the session is resumed.
    let projects = daemon.dir.path().join("claude-home/.claude/projects");
    let (token, mut ws) =
        daemon.reboot_and_resume(&session, &projects, "Noted: the word is pelican.");
    ws.send(json!({"type": "user_message", "session_id": session, "content": "what was the word?", "id": 2}));
    let reply = ws.recv_until("the reply after the resume", |m| {
        m["type"] == "claude_response"
    });
    assert_eq!(reply["content"], "The word was pelican.");
    assert_eq!(reply["in_reply_to"], 2);
    // The CLI took its conversation back: the model's request for the new turn carries the
    // turn from before the machine went down.
    let turn = model
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.to_string().contains("what was the word?"))
        .expect("the new turn reached the model");
    let text = turn["messages"].to_string();
    assert!(
        text.contains("remember the word pelican") && text.contains("Noted: the word is pelican."),
        "the request after the resume lacks the earlier conversation: {text}"
    );
    let history = daemon
        .get(&format!("/api/agents/{session}/messages"), &token)
        .json();
    assert_eq!(history["total"], 4, "{history}");
}

#[test]
fn the_primary_proposes_a_plan_through_mcp_the_user_approves_and_the_primary_learns_the_result() {
    let model = ScriptedModel::start(vec![
        // The primary's turn: it proposes a plan through the daemon's MCP tool...
        Reply::tool(
            "mcp__orchestra__propose_plan",
            json!({"summary": "Write the release notes", "tasks": [{"agent_type": "claude", "task": "write the release notes"}]}),
        ),
        Reply::text("I proposed a plan."),
        // ...the approved task runs headless against the same model...
        Reply::text("The release notes are written."),
        // ...and the primary's next turn begins with the task's result.
        Reply::text("Task 1 is done, the notes are written."),
    ]);
    // The built-in type's arguments (its permission mode, in which the CLI asks before
    // acting): the daemon's own tools are allowed by its hook settings, so the plan is
    // asked about once.
    let daemon = daemon_with_claude_args(&model, &builtin_claude_args(), "");
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    let spawned = daemon.post(
        "/api/agents/spawn",
        &token,
        &json!({"agent_type": "claude", "working_dir": daemon.work, "name": "primary"}),
    );
    assert_eq!(spawned.status, 201, "{}", spawned.text());
    let primary = "sess-claude-primary";
    ws.recv_until("the prompt", |m| {
        m["type"] == "agent_status" && m["activity"] == "waiting_input"
    });
    ws.send(json!({"type": "user_message", "session_id": primary, "content": "Plan the release notes", "id": "go"}));

    // Every observer is asked to approve, with real task ids, in the reference's shape.
    let plan = ws.recv_until("approve_plan", |m| {
        m["type"] == "claude_response" && m["actions"][0]["type"] == "approve_plan"
    });
    // The agent's summary is quoted; the tasks are shown as they would run.
    assert!(
        plan["content"]
            .as_str()
            .unwrap()
            .contains("\"Write the release notes\""),
        "{plan}"
    );
    let action = &plan["actions"][0];
    assert_eq!(action["tasks"][0]["task"], "write the release notes");
    assert_eq!(action["button_text"], "Approve");
    let task_ids: Vec<u64> = action["task_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(task_ids.len(), 1);
    let task_id = task_ids[0];
    let reply = ws.recv_until("the primary's reply", |m| {
        m["type"] == "claude_response" && m["actions"] == json!([])
    });
    assert_eq!(reply["content"], "I proposed a plan.");
    // Proposed tasks never run unapproved.
    let task = daemon.task(&token, &task_id.to_string());
    assert_eq!(task["status"], "proposed", "{task}");
    assert_eq!(model.served(), 2, "nothing ran the task");
    // An observe-only viewer cannot approve.
    let mut viewer = daemon.ws(&daemon.token("observe"));
    viewer.send(json!({"type": "approve_plan", "task_ids": task_ids}));
    assert_eq!(
        viewer.recv_until("refusal", |m| m["type"] == "error")["error_code"],
        "FORBIDDEN"
    );

    ws.send(json!({"type": "approve_plan", "task_ids": task_ids}));
    let done = daemon.wait_task_final(&token, &task_id.to_string());
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["message"], "The release notes are written.");
    // The primary is told and goes on by itself.
    let next = ws.recv_until("the primary's next reply", |m| {
        m["type"] == "claude_response"
            && m["session_id"] == primary
            && m["content"] == "Task 1 is done, the notes are written."
    });
    assert_eq!(next["actions"], json!([]));
    let asked = model.requests();
    assert!(
        asked.last().unwrap()["messages"]
            .to_string()
            .contains(&format!("[orchestra] task {task_id} (claude) completed")),
        "the primary's turn began with the result"
    );
    // A second approval of the same tasks is refused.
    ws.send(json!({"type": "approve_plan", "task_ids": task_ids}));
    assert_eq!(
        ws.recv_until("second approval", |m| m["type"] == "error")["error_code"],
        "INVALID_REQUEST"
    );
}

/// Screen rules for the Claude Code TUI, read off its real screens (the prompt box, the
/// permission dialog, the spinner while a turn runs), for use without its hooks.
const CLAUDE_SCREEN_RULES: &str = r#"
[[agents.claudescreen.screen_rules]]
name = "permission dialog"
pattern = 'Do you want to proceed\?'
activity = "needs_approval"
[[agents.claudescreen.screen_rules]]
name = "spinner"
pattern = 'esc to interrupt'
activity = "working"
[[agents.claudescreen.screen_rules]]
name = "empty prompt"
pattern = '(?m)^❯\s*$'
activity = "waiting_input"
"#;

#[test]
fn without_hooks_screen_rules_read_the_real_tui_and_its_reply_is_what_the_turn_added() {
    let model = ScriptedModel::start(vec![Reply::text("Screens can tell.")]);
    let cli = claude_cli();
    let quoted = |text: &str| toml::Value::String(text.to_string()).to_string();
    let daemon = daemon_with_claude(
        &model,
        &format!(
            "[agents.claudescreen]\ncommand = [{}, \"--permission-mode\", \"manual\"]\nenv = {{env}}\n{CLAUDE_SCREEN_RULES}",
            quoted(&cli)
        ),
    );
    // The same CLI and environment as the `claude` type, but no hooks.
    let config = std::fs::read_to_string(&daemon.config).unwrap();
    assert!(config.contains("[agents.claudescreen]"));
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    let spawned = daemon.post(
        "/api/agents/spawn",
        &token,
        &json!({"agent_type": "claudescreen", "working_dir": daemon.work}),
    );
    assert_eq!(spawned.status, 201, "{}", spawned.text());
    let session = spawned.json()["session_id"].as_str().unwrap().to_string();
    let activity_is = |m: &serde_json::Value, activity: &str| is_activity(m, &session, activity);
    let ready = ws.recv_until("the prompt on screen", |m| activity_is(m, "waiting_input"));
    assert_eq!(ready["evidence"]["source"], "screen", "{ready}");
    assert_eq!(
        ready["evidence"]["detail"], "screen rule: empty prompt",
        "{ready}"
    );

    ws.send(json!({"type": "user_message", "session_id": session, "content": "Can screens tell?", "id": 9}));
    let reply = ws.recv_until("the reply", |m| m["type"] == "claude_response");
    assert_eq!(reply["in_reply_to"], 9);
    let content = reply["content"].as_str().unwrap();
    assert!(content.contains("Screens can tell."), "{content}");
    assert!(
        content.contains("Can screens tell?"),
        "the turn's screen: {content}"
    );
}

#[test]
fn the_real_codex_tui_with_its_hooks_off_is_followed_by_screen_rules_and_its_turn_becomes_a_reply()
{
    let model = ScriptedModel::start(vec![Reply::text("Codex answers from the script.")]);
    let cli = crate::model::codex_cli();
    let url = model.url.clone();
    let daemon = DaemonProcess::start_with_work(move |work: &Path| {
        let home = work.parent().unwrap().join("codex-home");
        crate::model::codex_home(&home, &url, &[work]);
        let quoted = |text: &str| toml::Value::String(text.to_string()).to_string();
        // The built-in codex type's screen rules, read off the real TUI: its empty prompt
        // shows a placeholder, and a running turn "esc to interrupt".
        let rules: String = orchestra::config::builtin_agents()["codex"]
            .screen_rules
            .iter()
            .map(|rule| {
                format!(
                    "[[agents.codex.screen_rules]]\nname = {}\npattern = {}\nactivity = {}\n",
                    quoted(&rule.name),
                    quoted(&rule.pattern),
                    quoted(&rule.activity)
                )
            })
            .collect();
        // The built-in type's arguments after the installed program.
        let command = crate::model::toml_argv(
            &cli,
            &orchestra::config::builtin_agents()["codex"].command,
            &[],
        );
        // Its hooks off: the screen rules alone follow it (tests/it/codex.rs has the hooks).
        format!(
            "[agents.codex]\ncommand = {command}\nhooks = \"none\"\nenv = {{ HOME = {}, OPENAI_API_KEY = \"sk-scripted\" }}\n{rules}",
            quoted(&home.display().to_string())
        )
    });
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    let session = id_of(&daemon.spawn(&token, "codex"));
    let activity_is = |m: &serde_json::Value, activity: &str| is_activity(m, &session, activity);
    let ready = ws.recv_until("the prompt on screen", |m| activity_is(m, "waiting_input"));
    assert_eq!(
        ready["evidence"]["detail"], "screen rule: empty prompt",
        "{ready}"
    );
    ws.send(json!({"type": "user_message", "session_id": session, "content": "hello codex", "id": "c1"}));
    let reply = ws.recv_until("the reply", |m| m["type"] == "claude_response");
    assert_eq!(reply["in_reply_to"], "c1");
    let content = reply["content"].as_str().unwrap();
    assert!(
        content.contains("Codex answers from the script."),
        "{content}"
    );
    let asked = model.requests();
    assert!(
        asked
            .iter()
            .any(|r| r["input"].to_string().contains("hello codex")),
        "the typed message reached the model"
    );
}
