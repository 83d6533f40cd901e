//! The hook socket under hostile input: only a live session's own credential is heard, and
//! it speaks only for that session; garbage, oversized messages, floods and silent
//! connections are dropped while the daemon carries on. The hook client is the real
//! `orchestra hook`, run with an agent's environment as the agent's CLI would run it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::common::{DaemonProcess, id_of, is_activity};

/// A daemon whose `hooked` agent type is the echo stand-in launched like a CLI with hooks.
fn daemon() -> DaemonProcess {
    DaemonProcess::start_with(&format!(
        "[hooks]\nmax_message_bytes = 4096\nreceive_timeout = \"500ms\"\n\
         [agents.hooked]\ncommand = [\"{}\"]\nhooks = \"claude\"\n",
        crate::common::agent_script("echo.sh")
    ))
}

/// The hook variables in the environment of `session`'s agent process, as its CLI has them.
pub fn hook_env(daemon: &DaemonProcess, token: &str, session: &str) -> Vec<(String, String)> {
    let detail = daemon.get(&format!("/api/agents/{session}"), token).json();
    let pid = detail["pid"].as_u64().unwrap();
    // The pane's first program is `orchestra agent-exec`, which execs the agent with its
    // environment a moment after the spawn is answered; /proc offers no event for that.
    crate::common::wait_until("the agent to be exec'd with its environment", || {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let vars: Vec<(String, String)> = environ
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                let (k, v) = kv.split_once('=')?;
                k.starts_with("ORCHESTRA_HOOK_")
                    .then(|| (k.to_string(), v.to_string()))
            })
            .collect();
        // Socket, credential and the two timeouts.
        (vars.len() == 4).then_some(vars)
    })
}

/// Runs the real hook client for `event` with `env` and `payload` on its standard input.
pub fn run_hook(env: &[(String, String)], event: &str, payload: &Value) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(["hook", event])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The client may exit without reading its input (no daemon, no session variables); a
    // broken pipe here is its choice, not a failure.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(payload.to_string().as_bytes());
    child.wait_with_output().unwrap()
}

/// Sends raw bytes on the hook socket and returns what the daemon answered.
fn raw(daemon: &DaemonProcess, bytes: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(daemon.state.join("hook.sock")).unwrap();
    stream
        .set_read_timeout(Some(crate::common::PATIENCE))
        .unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

#[test]
fn a_hook_speaks_only_for_its_own_session_and_bad_input_is_dropped() {
    let daemon = daemon();
    let token = daemon.control();
    let first = id_of(&daemon.spawn(&token, "hooked"));
    let second = id_of(&daemon.spawn(&token, "hooked"));
    let first_env = hook_env(&daemon, &token, &first);
    let second_env = hook_env(&daemon, &token, &second);
    assert_ne!(first_env, second_env, "each session has its own credential");
    let mut ws = daemon.ws(&daemon.token("observe"));

    // Hostile input first: none of it may reach a session.
    let forged = encode(
        "not-a-live-credential",
        "Stop",
        &json!({"last_assistant_message": "forged"}),
    );
    for bytes in [
        forged,
        b"garbage that is not json".to_vec(),
        br#"{"token": "x", "event": "Stop", "payload": {}, "session_id": "sess-x"}"#.to_vec(),
        vec![b'x'; 10_000], // longer than hooks.max_message_bytes
        Vec::new(),
    ] {
        let answer = raw(&daemon, &bytes);
        assert!(answer.len() <= 3, "{answer:?}");
    }
    // A connection that never finishes its message is dropped after receive_timeout.
    let mut silent = UnixStream::connect(daemon.state.join("hook.sock")).unwrap();
    silent.write_all(b"{\"token\":").unwrap();
    silent
        .set_read_timeout(Some(crate::common::PATIENCE))
        .unwrap();
    let mut rest = Vec::new();
    assert_eq!(
        silent.read_to_end(&mut rest).unwrap(),
        0,
        "closed without an answer"
    );
    // A flood of connections (past hooks.max_connections) leaves the daemon serving.
    let flood: Vec<UnixStream> = (0..100)
        .filter_map(|_| UnixStream::connect(daemon.state.join("hook.sock")).ok())
        .collect();
    assert_eq!(daemon.get("/api/health", &token).status, 200);
    drop(flood);

    // The second session's real hook speaks for the second session only.
    let out = run_hook(
        &second_env,
        "Stop",
        &json!({"last_assistant_message": "from the second", "stop_hook_active": false}),
    );
    assert!(out.status.success());
    let reply = ws.recv_until("the reply", |m| m["type"] == "claude_response");
    assert_eq!(reply["session_id"], second.as_str());
    assert_eq!(reply["content"], "from the second");
    assert_eq!(daemon.get("/api/health", &token).status, 200);
    let detail = daemon.get(&format!("/api/agents/{first}"), &token).json();
    assert_ne!(detail["evidence"]["source"], "hook", "{detail}");
}

#[test]
fn the_hook_client_exits_at_once_and_quietly_when_the_daemon_is_gone() {
    let mut daemon = daemon();
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "hooked"));
    let env = hook_env(&daemon, &token, &session);
    daemon.stop();
    let out = run_hook(&env, "UserPromptSubmit", &json!({"prompt": "hi"}));
    assert!(out.status.success());
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    // Without the session's variables it does nothing either.
    let out = run_hook(&[], "Stop", &json!({}));
    assert!(out.status.success() && out.stdout.is_empty());
}

fn encode(token: &str, event: &str, payload: &Value) -> Vec<u8> {
    json!({"token": token, "event": event, "payload": payload})
        .to_string()
        .into_bytes()
}

/// Calls one of the daemon's agent tools with `session`'s credential, as `orchestra mcp` does.
pub fn call(env: &[(String, String)], tool: &str, arguments: Value) -> Value {
    let var = |name: &str| env.iter().find(|(k, _)| k == name).unwrap().1.clone();
    let mut stream = UnixStream::connect(var("ORCHESTRA_HOOK_SOCKET")).unwrap();
    stream
        .set_read_timeout(Some(crate::common::PATIENCE))
        .unwrap();
    let message =
        json!({"token": var("ORCHESTRA_HOOK_TOKEN"), "call": tool, "arguments": arguments});
    stream.write_all(message.to_string().as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap()
}

#[test]
fn plans_are_approved_or_rejected_over_rest_and_tool_calls_are_checked() {
    let daemon = daemon();
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "hooked"));
    let env = hook_env(&daemon, &token, &session);
    let propose = || {
        let answer = call(
            &env,
            "propose_plan",
            json!({"summary": "check", "tasks": [{"agent_type": "shell", "task": "true"}]}),
        );
        assert_eq!(answer["ok"], true, "{answer}");
        answer["result"]["tasks"][0]["task_id"].as_u64().unwrap()
    };
    let rejected = propose();
    assert_eq!(
        daemon.task(&token, &rejected.to_string())["status"],
        "proposed"
    );
    let answer = daemon.post(
        "/api/plans/reject",
        &token,
        &json!({"task_ids": [rejected]}),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["tasks"][0]["status"], "cancelled");

    let approved = propose();
    daemon
        .post(
            "/api/plans/approve",
            &daemon.token("observe"),
            &json!({"task_ids": [approved]}),
        )
        .assert_error(403, "FORBIDDEN");
    let answer = daemon.post(
        "/api/plans/approve",
        &token,
        &json!({"task_ids": [approved]}),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let done = daemon.wait_task_final(&token, &approved.to_string());
    assert_eq!(done["status"], "completed", "{done}");
    // Deciding twice, or on a task that was never proposed, changes nothing.
    daemon
        .post(
            "/api/plans/approve",
            &token,
            &json!({"task_ids": [approved]}),
        )
        .assert_error(400, "INVALID_REQUEST");
    daemon
        .post("/api/plans/approve", &token, &json!({"task_ids": [99999]}))
        .assert_error(404, "TASK_NOT_FOUND");

    // Tool calls: the agent sees the daemon's agents and tasks; bad calls are refused.
    let listed = call(&env, "list_agents", json!({}));
    assert_eq!(
        listed["result"]["agents"][0]["session_id"],
        session.as_str()
    );
    let task = call(&env, "get_task", json!({"task_id": approved}));
    assert_eq!(task["result"]["status"], "completed");
    for (tool, arguments) in [
        ("no_such_tool", json!({})),
        ("delegate_task", json!({"task": "missing its agent type"})),
        ("propose_plan", json!({"tasks": []})),
        (
            "send_message",
            json!({"session_id": session, "content": "to myself"}),
        ),
        ("get_task", json!({"task_id": 424242})),
    ] {
        let answer = call(&env, tool, arguments);
        assert_eq!(answer["ok"], false, "{tool}: {answer}");
    }
    assert_eq!(daemon.get("/api/health", &token).status, 200);
}

#[test]
fn a_working_agent_with_no_output_and_no_events_is_stuck_until_it_moves() {
    let daemon = DaemonProcess::start_with(&format!(
        "[sessions]\nstuck_after = \"1s\"\nidle_after = \"1s\"\n[agents.hooked]\ncommand = [\"{}\"]\nhooks = \"claude\"\n",
        crate::common::agent_script("echo.sh")
    ));
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "hooked"));
    let env = hook_env(&daemon, &token, &session);
    let mut ws = daemon.ws(&token);
    let activity_is = |m: &Value, activity: &str| is_activity(m, &session, activity);
    assert!(
        run_hook(&env, "UserPromptSubmit", &json!({"prompt": "go"}))
            .status
            .success()
    );
    let stuck = ws.recv_until("stuck", |m| activity_is(m, "stuck"));
    assert_eq!(stuck["evidence"]["source"], "timer", "{stuck}");
    assert!(
        stuck["evidence"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("no output and no events"),
        "{stuck}"
    );
    // Output moves it again.
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "again\r"}));
    let moving = ws.recv_until("working again", |m| activity_is(m, "working"));
    assert_eq!(moving["evidence"]["detail"], "output again", "{moving}");
}

/// A table for the built-in `claude` type with only a `command` (the stand-in) keeps the
/// type's hooks: the agent gets its hook credential. And a hooked agent is `starting` until
/// its CLI's SessionStart hook, whatever its screen shows meanwhile.
#[test]
fn an_overridden_built_in_type_keeps_its_hooks_and_starts_until_its_session_starts() {
    let daemon = DaemonProcess::start_with(&format!(
        "[agents.claude]\ncommand = [\"{}\"]\n",
        crate::common::agent_script("echo.sh")
    ));
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "claude"));
    let env = hook_env(&daemon, &token, &session);
    let mut ws = daemon.ws(&token);
    let mut transcript = crate::observe::subscribe_with_screen(&mut ws, &session);
    // The greeting is output: it has reached the daemon's activity tracking by the time a
    // viewer holds it, and the next request is answered after it.
    transcript.read_until_after_screen(&mut ws, &session, "echo agent ready");
    let detail = daemon.get(&format!("/api/agents/{session}"), &token).json();
    assert_eq!(detail["activity"], "starting", "{detail}");
    assert!(
        run_hook(&env, "SessionStart", &json!({"source": "startup"}))
            .status
            .success()
    );
    let started = ws.recv_until("waiting_input", |m| {
        is_activity(m, &session, "waiting_input")
    });
    assert_eq!(started["evidence"]["source"], "hook", "{started}");
}

/// A hooked agent whose CLI never reports its start (its hooks do not reach the daemon) is
/// not left `starting` forever: after `stuck_after` it is `stuck`, saying why.
#[test]
fn a_hooked_agent_that_never_reports_its_start_becomes_stuck_with_a_reason() {
    let daemon = DaemonProcess::start_with(&format!(
        "[sessions]\nstuck_after = \"1s\"\n[agents.hooked]\ncommand = [\"{}\"]\nhooks = \"claude\"\n",
        crate::common::agent_script("echo.sh")
    ));
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    let session = id_of(&daemon.spawn(&token, "hooked"));
    let stuck = ws.recv_until("stuck", |m| is_activity(m, &session, "stuck"));
    assert_eq!(stuck["evidence"]["source"], "timer", "{stuck}");
    assert!(
        stuck["evidence"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("no SessionStart hook"),
        "{stuck}"
    );
}
