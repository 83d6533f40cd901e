//! The API against its own OpenAPI document (`GET /api/openapi.json`): schemathesis (pinned,
//! installed under `target/tmp` by `tests/tools/install-schemathesis.sh`) generates requests
//! from it against a live daemon and fails on any 500, any undocumented status, header or
//! content type, and any answer that does not match its schema; and real WebSocket messages
//! are validated against the document's message schemas.

use std::process::Command;

use serde_json::{Value, json};

use crate::common::DaemonProcess;

fn schemathesis_bin() -> String {
    crate::model::install_cli("schemathesis", "install-schemathesis.sh")
}

#[test]
fn the_live_api_conforms_to_its_openapi_document() {
    let bin = schemathesis_bin();
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    // The document is served without credentials, and is what the daemon embeds.
    let document = daemon.request_with("GET", "/api/openapi.json", &[], None);
    assert_eq!(document.status, 200);
    assert_eq!(document.json()["openapi"], "3.1.0");
    let report = daemon.dir.path().join("schemathesis");
    let output = Command::new(format!("{bin}/st"))
        .arg("run")
        .arg(format!("http://{}/api/openapi.json", daemon.addr))
        .args(["--url", &format!("http://{}", daemon.addr)])
        .args(["--checks", "all"])
        // Schema-valid input can still be refused for reasons no schema states (an agent type
        // that is not configured, a directory outside the allowed roots); everything else
        // is checked.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--max-examples",
            "30",
            "--seed",
            "20261204",
            // One worker: with two threads, hypothesis's cache of lambda sources can race
            // ("AST constructor recursion depth mismatch", a crash of the tool, not a finding).
            "--workers",
            "1",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--request-timeout", "10", "--no-color"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");
    // The daemon is still healthy after the run.
    assert_eq!(daemon.get("/api/health", &token).status, 200);
}

#[test]
fn real_websocket_messages_match_the_documented_schemas() {
    let bin = schemathesis_bin();
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let mut seen: Vec<Value> = Vec::new();
    let mut ws = daemon.ws(&token);
    let mut record = |ws: &mut crate::common::Ws, what: &str, accept: &dyn Fn(&Value) -> bool| {
        loop {
            let message = ws.recv();
            let done = accept(&message);
            seen.push(message);
            if done {
                break;
            }
            assert!(seen.len() < 10_000, "no {what}");
        }
    };
    ws.send(json!({"type": "ping", "id": 1}));
    record(&mut ws, "pong", &|m| m["type"] == "pong");
    let session = daemon.spawn(&token, "echo")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    ws.send(json!({"type": "subscribe_terminal", "session_id": session}));
    record(&mut ws, "a screen", &|m| m["snapshot"] == true);
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "typed\r", "id": "t"}));
    record(&mut ws, "the input's ack", &|m| {
        m["type"] == "terminal_input_ack"
    });
    ws.send(json!({"type": "user_message", "session_id": session, "content": "hello", "id": "u"}));
    record(&mut ws, "the message's ack", &|m| {
        m["type"] == "user_message_ack"
    });
    ws.send(json!({"type": "resize_terminal", "session_id": session, "rows": 30, "cols": 90}));
    record(&mut ws, "the resize ack", &|m| {
        m["type"] == "resize_terminal_ack"
    });
    ws.send(json!({"type": "subscribe_terminal", "session_id": "sess-nope-0"}));
    record(&mut ws, "an error", &|m| m["type"] == "error");
    ws.send(json!({"type": "unsubscribe_terminal", "session_id": session}));
    record(&mut ws, "unsubscribed", &|m| m["type"] == "unsubscribed");
    let task = daemon.delegate(
        &token,
        &json!({"agent_type": "task", "task": "WRITE x.txt 1", "working_dir": daemon.work}),
    );
    let task_id = task["task_id"].clone();
    record(&mut ws, "the task's end", &|m| {
        m["type"] == "task_update" && m["task_id"] == task_id && m["status"] == "completed"
    });
    let crash = daemon.spawn(&token, "exit3")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    record(&mut ws, "the crash", &|m| {
        m["type"] == "error"
            && m["error_code"] == "AGENT_CRASHED"
            && m["session_id"] == crash.as_str()
    });
    ws.send(json!({"type": "no_such_type"}));
    record(&mut ws, "an error for an unknown type", &|m| {
        m["type"] == "error" && m["error_code"] == "INVALID_REQUEST"
    });
    let types: std::collections::BTreeSet<&str> =
        seen.iter().filter_map(|m| m["type"].as_str()).collect();
    for expected in [
        "pong",
        "subscribed",
        "terminal_output",
        "terminal_input_ack",
        "user_message_ack",
        "resize_terminal_ack",
        "unsubscribed",
        "error",
        "agent_status",
        "task_update",
    ] {
        assert!(
            types.contains(expected),
            "no {expected} captured: {types:?}"
        );
    }
    let captured = daemon.dir.path().join("ws-messages.json");
    std::fs::write(&captured, serde_json::to_vec(&seen).unwrap()).unwrap();
    let document = daemon.dir.path().join("openapi.json");
    std::fs::write(&document, orchestra::api::OPENAPI).unwrap();
    let output = Command::new(format!("{bin}/python"))
        .arg(format!(
            "{}/tests/tools/validate-ws-messages.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(&document)
        .arg(&captured)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "captured messages do not match the document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
