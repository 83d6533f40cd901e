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

/// `orchestra serve` on `dir` with `config`, its log on a channel of lines.
fn serve_on(
    dir: &std::path::Path,
    config: &str,
) -> (std::process::Child, crossbeam_channel::Receiver<String>) {
    use std::io::BufRead;
    let config_file = dir.join("config.toml");
    std::fs::write(&config_file, config).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config_file)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("ORCHESTRA_LOG", "info")
        .env_remove("TMUX")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// The first line of `log` containing `needle` (within the tests' patience).
fn line_with(log: &crossbeam_channel::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + crate::common::PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match log.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no log line containing {needle:?}"),
        }
    }
}

#[test]
fn a_starting_daemon_waits_for_a_state_lock_held_a_moment_longer() {
    // A daemon that was just killed can leave a child holding the state directory's lock
    // for a moment (forked, not yet running its program); the next daemon waits for it.
    let dir = tempfile::Builder::new().prefix("orch").tempdir().unwrap();
    let state = dir.path().join("state");
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&state)
        .unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state.join("daemon.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let (mut daemon, log) = serve_on(dir.path(), "state_lock_wait = \"1m\"\n");
    line_with(&log, "waiting up to 1m for the state directory's lock");
    drop(lock);
    line_with(&log, "listening on http://127.0.0.1:");
    crate::common::signal(daemon.id(), "TERM");
    assert!(daemon.wait().unwrap().success());

    // A lock that stays held is another daemon: said once the wait is over.
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(state.join("daemon.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let (mut refused, log) = serve_on(dir.path(), "state_lock_wait = \"100ms\"\n");
    line_with(
        &log,
        "another orchestra daemon is using the state directory",
    );
    assert!(!refused.wait().unwrap().success());
}

/// What `GET /api/agents` says of session `id`.
fn listed(daemon: &DaemonProcess, token: &str, id: &str) -> Value {
    let list = daemon.get("/api/agents", token).json();
    list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["session_id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} is not listed: {list}"))
}

#[test]
fn an_agent_whose_terminal_was_lost_is_listed_as_lost_and_resumes_with_its_id_dir_env_and_history()
{
    use serde_json::json;
    let mut daemon = DaemonProcess::start();
    let token = daemon.control();
    let dir = daemon.work.join("project");
    std::fs::create_dir_all(&dir).unwrap();
    let spawned = daemon.post(
        "/api/agents/spawn",
        &token,
        &json!({"agent_type": "printenv", "working_dir": dir, "env": {"PROJECT_NAME": "kept-app"}}),
    );
    assert_eq!(spawned.status, 201, "{}", spawned.text());
    let spawned = spawned.json();
    let id = spawned["session_id"].as_str().unwrap().to_string();
    let tmux_name = spawned["tmux_session"].as_str().unwrap().to_string();
    crate::common::wait_until("the agent's report", || {
        daemon
            .screen(&tmux_name)
            .contains("TYPE_VAR=")
            .then_some(())
    });
    let mut ws = daemon.ws(&token);
    ws.send(json!({"type": "user_message", "session_id": id, "content": "note this", "id": "m1"}));
    ws.recv_until("the message typed", |m| m["type"] == "user_message_ack");
    // A second agent that is deleted while it is lost.
    let doomed = crate::common::id_of(&daemon.spawn(&token, "echo"));
    drop(ws);

    // The machine goes down: the daemon, the tmux server or pty holders, the agents.
    daemon.kill_everything();
    daemon.relaunch();
    let token = daemon.control();
    let lost = listed(&daemon, &token, &id);
    assert_eq!(lost["status"], "lost", "{lost}");
    assert_eq!(lost["created_at"], spawned["created_at"], "{lost}");
    assert!(
        lost["evidence"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("/resume")),
        "the listing says what to do: {lost}"
    );
    let history = daemon
        .get(&format!("/api/agents/{id}/messages"), &token)
        .json();
    assert_eq!(history["messages"][0]["content"], "note this", "{history}");
    // Nothing to watch or type into until it is resumed, and the error says so.
    let mut ws = daemon.ws(&token);
    ws.send(json!({"type": "subscribe_terminal", "session_id": id}));
    let refused = ws.recv_until("the refusal", |m| m["type"] == "error");
    assert!(
        refused["message"]
            .as_str()
            .or(refused["detail"].as_str())
            .is_some_and(|d| d.contains("/resume")),
        "{refused}"
    );
    let filtered = daemon.get("/api/agents?status=lost", &token).json();
    assert_eq!(filtered["total"], 2, "{filtered}");

    // A lost session that nobody wants is deleted like any other.
    assert_eq!(
        daemon
            .delete(&format!("/api/agents/{doomed}"), &token)
            .status,
        200
    );
    let observe = daemon.token("observe");
    let resumed = daemon.post(&format!("/api/agents/{id}/resume"), &observe, &json!({}));
    assert_eq!(resumed.status, 403, "resuming needs the control scope");
    let resumed = daemon.post(&format!("/api/agents/{id}/resume"), &token, &json!({}));
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    let resumed = resumed.json();
    assert_eq!(resumed["session_id"], id.as_str());
    assert_eq!(resumed["tmux_session"], tmux_name.as_str());
    assert_eq!(resumed["created_at"], spawned["created_at"]);
    // The same directory and environment as before.
    let screen = crate::common::wait_until("the resumed agent's report", || {
        let screen = daemon.screen(&tmux_name);
        screen.contains("TYPE_VAR=").then_some(screen)
    });
    assert!(
        screen.contains(&format!("cwd={}", dir.display())),
        "{screen}"
    );
    assert!(screen.contains("PROJECT_NAME=kept-app"), "{screen}");
    assert!(screen.contains(&format!("SESSION={id}")), "{screen}");
    let now = listed(&daemon, &token, &id);
    assert_ne!(now["status"], "lost", "{now}");
    let history = daemon
        .get(&format!("/api/agents/{id}/messages"), &token)
        .json();
    assert_eq!(history["messages"][0]["content"], "note this", "{history}");
    // Resuming again, or a session that has its terminal, is refused; unknown ones are 404.
    let again = daemon.post(&format!("/api/agents/{id}/resume"), &token, &json!({}));
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(again.json()["error_code"], "SESSION_NOT_LOST");
    let unknown = daemon.post("/api/agents/sess-echo-00000000/resume", &token, &json!({}));
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error_code"], "SESSION_NOT_FOUND");
    assert_eq!(
        daemon.get("/api/agents", &token).json()["total"],
        1,
        "the deleted lost session stays deleted"
    );
    daemon.restart();
    let token = daemon.control();
    assert_eq!(daemon.get("/api/agents", &token).json()["total"], 1);
    // Adopted again, the resumed session keeps its own creation time.
    let again = listed(&daemon, &token, &id);
    assert_eq!(again["created_at"], spawned["created_at"], "{again}");
}

#[test]
fn agents_of_a_type_with_resume_auto_start_again_with_the_daemon() {
    let mut daemon = DaemonProcess::start_with(&format!(
        "[agents.again]\ncommand = [\"{}\"]\nresume = \"auto\"",
        crate::common::agent_script("echo.sh")
    ));
    let token = daemon.control();
    let spawned = daemon.spawn(&token, "again");
    let id = crate::common::id_of(&spawned);
    let tmux_name = spawned["tmux_session"].as_str().unwrap().to_string();
    daemon.kill_everything();
    daemon.relaunch();
    let token = daemon.control();
    // Started again on its own: listed with a terminal, and its program runs.
    crate::common::wait_until("the agent started again", || {
        (listed(&daemon, &token, &id)["status"] != "lost").then_some(())
    });
    crate::common::wait_until("the agent's greeting", || {
        daemon
            .screen(&tmux_name)
            .contains("echo agent ready")
            .then_some(())
    });
    assert!(daemon.log_contains("resumed at start"));
}
