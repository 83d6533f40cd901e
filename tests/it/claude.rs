//! The real Claude Code CLI (pinned, installed under `target/`) under the daemon, offline,
//! talking to a scripted model server.

use std::path::Path;

use serde_json::json;

use crate::common::DaemonProcess;
use crate::model::{Reply, ScriptedModel, claude_cli, claude_home};

/// A daemon whose `claude` agent type runs the real CLI against `model`, with its own
/// `$HOME` (under the daemon's directory) set up to start at the prompt in the work dir.
pub fn daemon_with_claude(model: &ScriptedModel, extra: &str) -> DaemonProcess {
    let cli = claude_cli();
    let env = model.env();
    let extra = extra.to_string();
    DaemonProcess::start_with_work(move |work: &Path| {
        let home = work.parent().unwrap().join("claude-home");
        claude_home(&home, &[work]);
        let quoted = |text: &str| toml::Value::String(text.to_string()).to_string();
        let mut vars = vec![format!("HOME = {}", quoted(&home.display().to_string()))];
        vars.extend(env.iter().map(|(k, v)| format!("{k} = {}", quoted(v))));
        format!(
            "[agents.claude]\ncommand = [{}]\nhooks = \"claude\"\nenv = {{ {} }}\n{extra}",
            quoted(&cli),
            vars.join(", ")
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
    let session = daemon.spawn(&token, "claude")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
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
    let is_status = |m: &serde_json::Value, activity: &str| {
        m["type"] == "agent_status"
            && m["session_id"] == session.as_str()
            && m["activity"] == activity
    };
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
