//! The real Gemini CLI (pinned by `tests/tools/install-gemini.sh`), offline against a
//! scripted Gemini API server: its hooks give activity with evidence, delivery and the
//! turn's reply; after its machine goes down it is resumed and takes its conversation back.

use std::path::Path;

use serde_json::json;

use crate::common::{DaemonProcess, id_of, wait_until};
use crate::gemini_model::{
    GeminiModel, Reply, function_responses, gemini_cli, gemini_home, user_text,
};

/// A daemon whose `gemini` type runs the pinned CLI against `model`, with a home whose
/// settings choose API-key auth and trust the work dir. The CLI is given a model (`-m`),
/// so it asks no router first.
fn daemon_with_gemini(model: &GeminiModel) -> DaemonProcess {
    let cli = gemini_cli();
    let env = model.env();
    DaemonProcess::start_with_work(move |work: &Path| {
        let home = work.parent().unwrap().join("gemini-home");
        gemini_home(&home, &[work]);
        let quoted = |text: &str| toml::Value::String(text.to_string()).to_string();
        let mut vars = vec![format!("HOME = {}", quoted(&home.display().to_string()))];
        vars.extend(env.iter().map(|(k, v)| format!("{k} = {}", quoted(v))));
        // The built-in one-shot form, with the installed CLI as its program.
        let headless = crate::model::toml_argv(
            &cli,
            orchestra::config::builtin_agents()["gemini"]
                .headless
                .as_ref()
                .unwrap(),
            &["-m", "gemini-2.5-flash"],
        );
        format!(
            "[agents.gemini]\ncommand = [{}, \"-m\", \"gemini-2.5-flash\"]\nheadless = {headless}\nenv = {{ {} }}\n",
            quoted(&cli),
            vars.join(", ")
        )
    })
}

#[test]
fn the_real_gemini_cli_reports_through_its_hooks_and_resumes_its_conversation_after_a_reboot() {
    let model = GeminiModel::start(vec![
        Reply::text("Hello from the scripted Gemini."),
        Reply::text("I said hello."),
    ]);
    let mut daemon = daemon_with_gemini(&model);
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    let session = id_of(&daemon.spawn(&token, "gemini"));
    let ready = ws.recv_until("the prompt", |m| {
        m["type"] == "agent_status"
            && m["session_id"] == session
            && m["activity"] == "waiting_input"
    });
    assert_eq!(ready["evidence"]["source"], "hook", "{ready}");
    ws.send(
        json!({"type": "user_message", "session_id": session, "content": "say hello", "id": 1}),
    );
    let delivered = ws.recv_until("delivery", |m| m["type"] == "user_message_delivered");
    assert_eq!(delivered["id"], 1);
    let working = ws.recv_until("working", |m| {
        m["type"] == "agent_status" && m["activity"] == "working"
    });
    assert_eq!(working["evidence"]["source"], "hook", "{working}");
    let reply = ws.recv_until("the reply", |m| m["type"] == "claude_response");
    assert_eq!(reply["content"], "Hello from the scripted Gemini.");
    assert_eq!(reply["in_reply_to"], 1);
    drop(ws);
    // The CLI keeps its conversations in the user's ~/.gemini (the session's own home
    // links there); the machine goes down once the turn is on disk, and comes back.
    let chats = daemon.dir.path().join("gemini-home/.gemini/tmp");
    let (token, mut ws) =
        daemon.reboot_and_resume(&session, &chats, "Hello from the scripted Gemini.");
    ws.send(json!({"type": "user_message", "session_id": session, "content": "what did you say?", "id": 2}));
    let reply = ws.recv_until("the reply after the resume", |m| {
        m["type"] == "claude_response"
    });
    assert_eq!(reply["content"], "I said hello.");
    assert_eq!(reply["in_reply_to"], 2);
    // The request for the new turn carries the turn from before the machine went down.
    let turn = model
        .requests()
        .into_iter()
        .rev()
        .find(|r| user_text(r).contains("what did you say?"))
        .expect("the new turn reached the model");
    let text = turn["contents"].to_string();
    assert!(
        text.contains("say hello") && text.contains("Hello from the scripted Gemini."),
        "the request after the resume lacks the earlier conversation: {text}"
    );
    let history = daemon
        .get(&format!("/api/agents/{session}/messages"), &token)
        .json();
    assert_eq!(history["total"], 4, "{history}");
}

#[test]
fn a_gemini_tool_confirmation_is_answered_from_afar_allow_runs_it_and_deny_does_not() {
    let model = GeminiModel::start(vec![
        Reply::tool(
            "run_shell_command",
            json!({"command": "echo yes > allowed.txt", "description": "write a file"}),
        ),
        Reply::text("Wrote allowed.txt."),
        Reply::tool(
            "run_shell_command",
            json!({"command": "echo no > denied.txt", "description": "write another file"}),
        ),
        Reply::text("This turn was not cancelled."),
    ]);
    let daemon = daemon_with_gemini(&model);
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    let session = id_of(&daemon.spawn(&token, "gemini"));
    ws.recv_until("the prompt", |m| {
        m["type"] == "agent_status"
            && m["session_id"] == session
            && m["activity"] == "waiting_input"
    });

    // The CLI's confirmation dialog reaches viewers as an approve_tool action that shows
    // the whole command; allowing it runs the command.
    ws.send(json!({"type": "user_message", "session_id": session, "content": "write the first file", "id": 1}));
    let asked = ws.recv_until("the first question", |m| {
        m["type"] == "claude_response" && m["actions"][0]["type"] == "approve_tool"
    });
    let action = &asked["actions"][0];
    assert_eq!(action["tool"], "run_shell_command", "{asked}");
    assert!(
        action["summary"]
            .as_str()
            .is_some_and(|s| s.contains("echo yes > allowed.txt")),
        "{asked}"
    );
    let needs = ws.recv_until("needs_approval", |m| {
        m["type"] == "agent_status" && m["activity"] == "needs_approval"
    });
    assert_eq!(needs["evidence"]["source"], "hook", "{needs}");
    ws.send(json!({"type": "approve_tool", "session_id": session, "request_id": action["request_id"], "decision": "allow"}));
    let decided = ws.recv_until("the decision", |m| m["type"] == "tool_decision");
    assert_eq!(decided["decision"], "allow");
    let reply = ws.recv_until("the first reply", |m| {
        m["type"] == "claude_response" && m["actions"].as_array().is_none_or(|a| a.is_empty())
    });
    assert_eq!(reply["content"], "Wrote allowed.txt.");
    assert!(daemon.work.join("allowed.txt").exists());

    // Denying it cancels the call (and, in Gemini CLI, the turn): nothing is written.
    ws.send(json!({"type": "user_message", "session_id": session, "content": "write the second file", "id": 2}));
    let asked = ws.recv_until("the second question", |m| {
        m["type"] == "claude_response" && m["actions"][0]["type"] == "approve_tool"
    });
    let request_id = asked["actions"][0]["request_id"].clone();
    ws.send(json!({"type": "approve_tool", "session_id": session, "request_id": request_id, "decision": "deny"}));
    let decided = ws.recv_until("the decision", |m| m["type"] == "tool_decision");
    assert_eq!(decided["decision"], "deny");
    let waiting = ws.recv_until("waiting again", |m| {
        m["type"] == "agent_status" && m["activity"] == "waiting_input"
    });
    assert!(
        waiting["evidence"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("denied")),
        "{waiting}"
    );
    // The CLI took the prompt back: the box is empty and the call is marked cancelled.
    wait_until("the cancelled call on the screen", || {
        let screen = daemon.screen(&format!("agent-{}", &session["sess-".len()..]));
        screen.contains("cancelled").then_some(())
    });
    assert!(!daemon.work.join("denied.txt").exists());
    assert_eq!(
        model.requests().len(),
        3,
        "the denied call was not sent back as a result"
    );
}

#[test]
fn gemini_uses_the_daemons_mcp_tools_and_runs_a_delegated_task_headless() {
    let model = GeminiModel::start(vec![
        // The interactive agent calls the daemon's MCP tool...
        Reply::tool("mcp_orchestra_list_agents", json!({})),
        Reply::text("I listed the agents."),
        // ...and a delegated task runs the one-shot form against the same model.
        Reply::text("The one-shot task is done."),
    ]);
    let daemon = daemon_with_gemini(&model);
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    let session = id_of(&daemon.spawn(&token, "gemini"));
    ws.recv_until("the prompt", |m| {
        m["type"] == "agent_status"
            && m["session_id"] == session
            && m["activity"] == "waiting_input"
    });
    ws.send(json!({"type": "user_message", "session_id": session, "content": "list the agents", "id": 1}));
    let reply = ws.recv_until("the reply", |m| m["type"] == "claude_response");
    assert_eq!(reply["content"], "I listed the agents.");
    // The tool's result, as the CLI sent it back to the model, lists this very session:
    // the call went through the daemon with the session's credential.
    let results: Vec<serde_json::Value> = model
        .requests()
        .iter()
        .flat_map(function_responses)
        .collect();
    assert!(
        results.iter().any(|r| r.to_string().contains(&session)),
        "no tool result names {session}: {results:?}"
    );

    let done = daemon.delegate_to_completion(
        &token,
        &json!({"agent_type": "gemini", "task": "finish the task", "working_dir": daemon.work, "context": {"tests_required": false}}),
    );
    assert!(
        done["result"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("The one-shot task is done.")),
        "{done}"
    );
    let prompt = model
        .requests()
        .into_iter()
        .find(|r| user_text(r).contains("finish the task"))
        .expect("the task's prompt reached the model on the one-shot run's standard input");
    assert!(user_text(&prompt).contains("finish the task"));
}
