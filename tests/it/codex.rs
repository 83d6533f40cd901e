//! The real OpenAI Codex CLI (pinned by `tests/tools/install-codex.sh`), offline against the
//! scripted Responses API server: the hooks the daemon passes on its command line, trusted
//! without its review screen, give delivery, activity with evidence and the turn's reply
//! (without the screen around it); its command confirmations are answered from afar; after
//! its machine goes down it is resumed with `codex resume` and takes its conversation back.

use std::path::Path;

use serde_json::json;

use crate::common::{DaemonProcess, id_of};
use crate::model::{Reply, ScriptedModel, codex_cli, codex_home, toml_argv};

/// A daemon whose built-in `codex` type runs the pinned CLI (with the type's own arguments)
/// against `model`, in a home whose config points at the model and trusts the work dir.
fn daemon_with_codex(model: &ScriptedModel) -> DaemonProcess {
    daemon_with_codex_and(model, "")
}

/// [`daemon_with_codex`] with `extra` TOML after the type's table.
fn daemon_with_codex_and(model: &ScriptedModel, extra: &str) -> DaemonProcess {
    let cli = codex_cli();
    let extra = extra.to_string();
    let url = model.url.clone();
    DaemonProcess::start_with_work(move |work: &Path| {
        let home = work.parent().unwrap().join("codex-home");
        codex_home(&home, &url, &[work]);
        let quoted = |text: &str| toml::Value::String(text.to_string()).to_string();
        // The built-in type's arguments and one-shot form, with the installed CLI as their
        // program.
        let codex = &orchestra::config::builtin_agents()["codex"];
        let command = toml_argv(&cli, &codex.command, &[]);
        let headless = toml_argv(&cli, codex.headless.as_ref().unwrap(), &[]);
        format!(
            "[agents.codex]\ncommand = {command}\nheadless = {headless}\nenv = {{ HOME = {}, OPENAI_API_KEY = \"sk-scripted\" }}\n{extra}",
            quoted(&home.display().to_string())
        )
    })
}

fn is_activity(m: &serde_json::Value, session: &str, activity: &str) -> bool {
    m["type"] == "agent_status" && m["session_id"] == session && m["activity"] == activity
}

#[test]
fn the_real_codex_cli_reports_through_its_hooks_and_resumes_its_conversation_after_a_reboot() {
    let model = ScriptedModel::start(vec![
        Reply::text("Hello from the scripted Codex."),
        Reply::text("I said hello."),
    ]);
    let mut daemon = daemon_with_codex(&model);
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    let session = id_of(&daemon.spawn(&token, "codex"));
    // Codex reports SessionStart only with the first prompt: its screen says it is ready.
    let ready = ws.recv_until("the prompt", |m| is_activity(m, &session, "waiting_input"));
    assert_eq!(ready["evidence"]["source"], "screen", "{ready}");
    ws.send(
        json!({"type": "user_message", "session_id": session, "content": "say hello", "id": 1}),
    );
    let delivered = ws.recv_until("delivery", |m| m["type"] == "user_message_delivered");
    assert_eq!(delivered["id"], 1);
    let working = ws.recv_until("working", |m| is_activity(m, &session, "working"));
    assert_eq!(working["evidence"]["source"], "hook", "{working}");
    let reply = ws.recv_until("the reply", |m| m["type"] == "claude_response");
    // The reply is the model's words alone, without the prompt or status lines around it.
    assert_eq!(reply["content"], "Hello from the scripted Codex.");
    assert_eq!(reply["in_reply_to"], 1);
    let waiting = ws.recv_until("the turn's end", |m| {
        is_activity(m, &session, "waiting_input")
    });
    assert_eq!(waiting["evidence"]["detail"], "Stop hook", "{waiting}");
    drop(ws);

    // The machine goes down once the turn is on disk (in the CLI's rollout file), and
    // comes back.
    let sessions = daemon.dir.path().join("codex-home/.codex/sessions");
    let (_, mut ws) =
        daemon.reboot_and_resume(&session, &sessions, "Hello from the scripted Codex.");
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
        .find(|r| r["input"].to_string().contains("what did you say?"))
        .expect("the new turn reached the model");
    let input = turn["input"].to_string();
    assert!(
        input.contains("say hello") && input.contains("Hello from the scripted Codex."),
        "the request after the resume lacks the earlier conversation: {input}"
    );
}

#[test]
fn a_codex_command_confirmation_is_answered_from_afar_allow_runs_it_and_deny_does_not() {
    // Commands run in the session's dir, the daemon's work dir.
    let model = ScriptedModel::start(vec![
        Reply::codex_command("touch allowed.txt", Some("May I create allowed.txt?")),
        Reply::text("Created allowed.txt."),
        Reply::codex_command("touch denied.txt", Some("May I create denied.txt?")),
        Reply::text("I did not create denied.txt."),
    ]);
    let daemon = daemon_with_codex(&model);
    let allowed = daemon.work.join("allowed.txt");
    let denied = daemon.work.join("denied.txt");
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    let session = id_of(&daemon.spawn(&token, "codex"));
    ws.recv_until("the prompt", |m| is_activity(m, &session, "waiting_input"));

    // Codex's PermissionRequest hook reaches viewers as an approve_tool action that shows
    // the whole command; allowing it runs the command, with no dialog left on the screen.
    ws.send(json!({"type": "user_message", "session_id": session, "content": "create the first file", "id": 1}));
    let asked = ws.recv_until("the first question", |m| {
        m["type"] == "claude_response" && m["actions"][0]["type"] == "approve_tool"
    });
    let action = &asked["actions"][0];
    assert!(
        action["summary"]
            .as_str()
            .is_some_and(|s| s.contains("allowed.txt")),
        "{asked}"
    );
    // (Its agent_status may come before or after the question.)
    let agent = daemon.get(&format!("/api/agents/{session}"), &token).json();
    assert_eq!(agent["activity"], "needs_approval", "{agent}");
    assert_eq!(agent["evidence"]["source"], "hook", "{agent}");
    ws.send(json!({"type": "approve_tool", "session_id": session, "request_id": action["request_id"], "decision": "allow"}));
    let decided = ws.recv_until("the decision", |m| m["type"] == "tool_decision");
    assert_eq!(decided["decision"], "allow");
    let reply = ws.recv_until("the first reply", |m| {
        m["type"] == "claude_response" && m["actions"].as_array().is_none_or(|a| a.is_empty())
    });
    assert_eq!(reply["content"], "Created allowed.txt.");
    assert!(allowed.exists());

    // Denied: the command does not run, and Codex goes on with its turn.
    ws.send(json!({"type": "user_message", "session_id": session, "content": "create the second file", "id": 2}));
    let asked = ws.recv_until("the second question", |m| {
        m["type"] == "claude_response" && m["actions"][0]["type"] == "approve_tool"
    });
    let action = &asked["actions"][0];
    ws.send(json!({"type": "approve_tool", "session_id": session, "request_id": action["request_id"], "decision": "deny"}));
    let decided = ws.recv_until("the decision", |m| m["type"] == "tool_decision");
    assert_eq!(decided["decision"], "deny");
    let reply = ws.recv_until("the second reply", |m| {
        m["type"] == "claude_response" && m["actions"].as_array().is_none_or(|a| a.is_empty())
    });
    assert_eq!(reply["content"], "I did not create denied.txt.");
    assert!(!denied.exists(), "a denied command ran");
    let last = model.requests().last().cloned().unwrap();
    assert!(
        last["input"].to_string().contains("denied"),
        "the model heard of the denial: {last}"
    );
}

#[test]
fn codex_uses_the_daemons_mcp_tools_without_asking_twice() {
    let model = ScriptedModel::start(vec![
        Reply::tool("mcp__orchestra__list_agents", json!({})),
        Reply::text("I listed the agents."),
    ]);
    let daemon = daemon_with_codex(&model);
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    let session = id_of(&daemon.spawn(&token, "codex"));
    ws.recv_until("the prompt", |m| is_activity(m, &session, "waiting_input"));
    ws.send(json!({"type": "user_message", "session_id": session, "content": "list the agents", "id": 1}));
    // No dialog of Codex's own holds the call: the reply comes.
    let reply = ws.recv_until("the reply", |m| m["type"] == "claude_response");
    assert_eq!(reply["content"], "I listed the agents.");
    // The tool's result, as the CLI sent it back to the model, lists this very session:
    // the call went through the daemon with the session's credential.
    let requests = model.requests();
    let outputs: Vec<String> = requests
        .iter()
        .flat_map(|r| r["input"].as_array().cloned().unwrap_or_default())
        .filter(|item| {
            item["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("_call_output"))
        })
        .map(|item| item["output"].to_string())
        .collect();
    assert!(
        outputs.iter().any(|o| o.contains(&session)),
        "no tool result names {session}: {outputs:?}"
    );
}

#[test]
fn a_task_delegated_to_codex_runs_its_one_shot_form_and_reports_its_answer() {
    let model = ScriptedModel::start(vec![Reply::text("The one-shot Codex task is done.")]);
    let daemon = daemon_with_codex(&model);
    let token = daemon.control();
    let done = daemon.delegate_to_completion(
        &token,
        &json!({"agent_type": "codex", "task": "finish the task", "working_dir": daemon.work, "context": {"tests_required": false}}),
    );
    assert!(
        done["result"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("The one-shot Codex task is done.")),
        "{done}"
    );
    // The prompt reached the model through `codex exec`.
    assert!(
        model
            .requests()
            .iter()
            .any(|r| r["input"].to_string().contains("finish the task")),
        "the task's prompt did not reach the model"
    );
}

#[test]
fn a_project_whose_hooks_need_review_stops_codex_for_a_person_and_nothing_is_typed_into_it() {
    let model = ScriptedModel::start(vec![Reply::text("Ready after the review.")]);
    let daemon = daemon_with_codex_and(&model, "[hooks]\nprompt_wait = \"1s\"\n");
    // A cloned project brings hooks of its own: Codex asks a person to review them before
    // its prompt. Nothing the daemon types may answer that (a typed digit picks a choice).
    let marker = daemon.work.join("project-hook-ran");
    std::fs::create_dir_all(daemon.work.join(".codex")).unwrap();
    let hook =
        json!({"type": "command", "command": format!("touch {}", marker.display()), "timeout": 5});
    std::fs::write(
        daemon.work.join(".codex/hooks.json"),
        json!({"hooks": {"UserPromptSubmit": [{"hooks": [hook]}]}}).to_string(),
    )
    .unwrap();
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    let session = id_of(&daemon.spawn(&token, "codex"));
    let review = ws.recv_until("the review screen", |m| {
        is_activity(m, &session, "needs_approval")
    });
    assert_eq!(
        review["evidence"]["detail"], "screen rule: hooks need review",
        "{review}"
    );
    // A message waits for the prompt, past `hooks.prompt_wait` (1 s here)...
    ws.send(json!({"type": "user_message", "session_id": session, "content": "hello after the review 2", "id": 1}));
    // ...while a person's keys answer the screen: "Continue without trusting".
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "3"}));
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "\r"}));
    let reply = ws.recv_until("the reply", |m| m["type"] == "claude_response");
    assert_eq!(reply["content"], "Ready after the review.");
    assert_eq!(reply["in_reply_to"], 1);
    assert!(!marker.exists(), "the project's unreviewed hook ran");
    let config =
        std::fs::read_to_string(daemon.dir.path().join("codex-home/.codex/config.toml")).unwrap();
    assert!(
        !config.contains("trusted_hash"),
        "the project's hooks were trusted: {config}"
    );
}
