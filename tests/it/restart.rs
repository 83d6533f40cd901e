//! Restart safety: agents outlive the daemon, and a restarted daemon manages them again.

use serde_json::Value;

use crate::common::DaemonProcess;

fn stable_fields(agent: &Value) -> Value {
    let mut agent = agent.clone();
    let object = agent.as_object_mut().unwrap();
    // Figures that legitimately change between two samples.
    for volatile in [
        "status",
        "memory_mb",
        "cpu_percent",
        "last_activity",
        "capture",
        "output_bytes",
        "capture_rearms",
        // Derived again after a restart, from the agent's next output or hook event.
        "activity",
        "activity_since",
        "evidence",
    ] {
        object.remove(volatile);
    }
    agent
}

#[test]
fn a_restarted_daemon_finds_its_sessions_with_identical_fields() {
    let mut daemon = DaemonProcess::start();
    let token = daemon.control();
    let running = daemon.spawn(&token, "echo")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let failed = daemon.spawn(&token, "exit3")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    daemon.wait_agent(&token, &failed, "exit3 to fail", |a| a["status"] == "error");
    daemon.wait_agent(&token, &running, "capture to attach", |a| {
        a["capture"] == "attached"
    });
    // A session the daemon did not create, on its own tmux server.
    assert!(
        daemon
            .tmux(&["new-session", "-d", "-s", "foreign", "sleep", "600"])
            .status
            .success()
    );
    assert!(
        daemon
            .tmux(&[
                "new-session",
                "-d",
                "-s",
                "agent-echo-12345678",
                "sleep",
                "600"
            ])
            .status
            .success()
    );

    let before: Vec<Value> = [&running, &failed]
        .iter()
        .map(|id| daemon.get(&format!("/api/agents/{id}"), &token).json())
        .collect();
    let list_before = daemon.get("/api/agents", &token).json();

    daemon.restart();
    assert!(daemon.log_contains("re-adopted 2 agent sessions"));

    let list_after = daemon.get("/api/agents", &token).json();
    assert_eq!(
        list_after["total"], 2,
        "foreign sessions are never listed: {list_after}"
    );
    for (a, b) in list_before["agents"]
        .as_array()
        .unwrap()
        .iter()
        .zip(list_after["agents"].as_array().unwrap())
    {
        assert_eq!(a["session_id"], b["session_id"]);
        assert_eq!(a["created_at"], b["created_at"]);
        assert_eq!(a["agent_type"], b["agent_type"]);
    }
    for old in &before {
        let id = old["session_id"].as_str().unwrap();
        let new = daemon.get(&format!("/api/agents/{id}"), &token).json();
        assert_eq!(stable_fields(old), stable_fields(&new));
    }
    let failed_now = daemon.get(&format!("/api/agents/{failed}"), &token).json();
    assert_eq!(failed_now["status"], "error");
    assert_eq!(failed_now["exit_code"], 3);
    // Capture is re-armed on the live session.
    daemon.wait_agent(&token, &running, "capture to re-attach", |a| {
        a["capture"] == "attached"
    });

    // Sessions are still manageable, and foreign ones are untouched.
    assert_eq!(
        daemon
            .delete(&format!("/api/agents/{running}"), &token)
            .status,
        200
    );
    assert_eq!(
        daemon
            .delete(&format!("/api/agents/{failed}"), &token)
            .status,
        200
    );
    assert!(
        daemon
            .tmux(&["has-session", "-t", "=foreign"])
            .status
            .success()
    );
    assert!(
        daemon
            .tmux(&["has-session", "-t", "=agent-echo-12345678"])
            .status
            .success()
    );
    daemon
        .delete("/api/agents/sess-echo-12345678", &token)
        .assert_error(404, "SESSION_NOT_FOUND");
}

#[test]
fn a_second_daemon_cannot_share_the_state_dir() {
    let daemon = DaemonProcess::start();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .arg("serve")
        .arg("--config")
        .arg(&daemon.config)
        .arg("--state-dir")
        .arg(&daemon.state)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("another orchestra daemon"));
}
