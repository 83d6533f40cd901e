//! The API reference's own example clients, run unmodified against the daemon.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::common::{DaemonProcess, PATIENCE};

/// A Python interpreter that can `import websockets`: the system one if it can, else a
/// virtualenv under the target directory (created once, with `pip install websockets`).
fn python_with_websockets() -> PathBuf {
    let system = PathBuf::from("python3");
    let ok = |python: &PathBuf| {
        Command::new(python)
            .args(["-c", "import websockets"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok(&system) {
        return system;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pyenv");
    let python = dir.join("bin/python3");
    // Tests run in parallel (and nextest runs them in separate processes): one creates it.
    let lock = std::fs::File::create(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pyenv.lock"))
        .unwrap();
    lock.lock().unwrap();
    if !ok(&python) {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "python3 -m venv failed");
        let status = Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "websockets"])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "pip install websockets failed (is the PyPI registry reachable?)"
        );
    }
    python
}

/// Reads `child`'s stdout lines until one contains `needle`; kills the child either way.
/// Returns everything it printed up to and including that line.
fn wait_for_line(mut child: Child, needle: &str) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut seen = String::new();
    let found = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(line) if line.contains(needle) => break Some(format!("{seen}{line}")),
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    found.unwrap_or_else(|| panic!("the client never printed {needle:?}; it printed:\n{seen}"))
}

/// Fills in the reference example's placeholder values.
fn fill_in(source: &str, daemon: &DaemonProcess, token: &str, session: &str) -> String {
    source
        .replace(
            "localhost:8080",
            &format!("localhost:{}", daemon.addr.port()),
        )
        .replace("your_jwt_token_here", token)
        .replace("sess-claude-primary", session)
}

/// Types `marker` into the session (with a control token) once `client_ready` holds.
fn type_marker(daemon: &DaemonProcess, session: &str, marker: &str) {
    let mut ws = daemon.ws(&daemon.control());
    ws.send(json!({"type": "user_message", "session_id": session, "content": marker}));
    let ack = ws.recv_until("ack", |m| {
        m["type"] == "user_message_ack" || m["type"] == "error"
    });
    assert_eq!(ack["type"], "user_message_ack", "{ack}");
}

#[test]
fn the_reference_python_client_prints_terminal_output() {
    let daemon = DaemonProcess::start();
    let token = daemon.token("observe");
    let session = daemon.spawn(&daemon.control(), "echo")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/reference_client.py"
    ))
    .unwrap();
    let script = daemon.dir.path().join("client.py");
    std::fs::write(&script, fill_in(&source, &daemon, &token, &session)).unwrap();
    let child = Command::new(python_with_websockets())
        .arg("-u")
        .arg(&script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the client is subscribed, its screen arrives; then live output follows.
    daemon.wait_for_log("GET /ws/observe 101");
    type_marker(&daemon, &session, "hello-from-python-test");
    let printed = wait_for_line(child, "hello-from-python-test");
    // The client prints each terminal_output as "[session] data" (the first one is the
    // screen, whose escape sequences it prints as they are).
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with(&format!("[{session}] "))),
        "{printed}"
    );
}

#[test]
fn the_reference_typescript_client_prints_terminal_output() {
    let daemon = DaemonProcess::start();
    let token = daemon.token("observe");
    let session = daemon.spawn(&daemon.control(), "echo")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let child = typescript_client(&daemon, &token, &session);
    daemon.wait_for_log("GET /ws/observe 101");
    type_marker(&daemon, &session, "hello-from-typescript-test");
    let printed = wait_for_line(child, "hello-from-typescript-test");
    // The client prints each terminal_output as "[session] data" (the first one is the
    // screen, whose escape sequences it prints as they are).
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with(&format!("[{session}] "))),
        "{printed}"
    );
}

/// Starts the reference's TypeScript client (its values filled in, its types erased) under
/// Node, with its output piped.
fn typescript_client(daemon: &DaemonProcess, token: &str, session: &str) -> Child {
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/reference_client.ts"
    ))
    .unwrap();
    let script = daemon.dir.path().join("client.mjs");
    std::fs::write(
        &script,
        erase_types(&fill_in(&source, daemon, token, session)),
    )
    .unwrap();
    Command::new("node")
        .arg("--experimental-websocket")
        .arg("--no-warnings")
        .arg(&script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Erases the TypeScript annotations the example uses (what `tsc` would drop): field
/// declarations, parameter types and the `private` modifier.
fn erase_types(source: &str) -> String {
    source
        .lines()
        .filter(|line| !line.trim_start().starts_with("private ws:"))
        .map(|line| {
            line.replace("private ", "")
                .replace("(token: string)", "(token)")
                .replace("(data: object)", "(data)")
                .replace("(data: any)", "(data)")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_reference_typescript_client_prints_the_real_claudes_reply() {
    // The reference's own session id, and the real Claude Code CLI against a scripted model.
    let model = crate::model::ScriptedModel::start(vec![crate::model::Reply::text(
        "Hello from the primary agent.",
    )]);
    let daemon = crate::claude::daemon_with_claude(&model, "");
    let control = daemon.control();
    let spawned = daemon.post(
        "/api/agents/spawn",
        &control,
        &json!({"agent_type": "claude", "working_dir": daemon.work, "name": "primary"}),
    );
    assert_eq!(spawned.json()["session_id"], "sess-claude-primary");
    let mut ws = daemon.ws(&control);
    ws.recv_until("the prompt", |m| {
        m["type"] == "agent_status" && m["activity"] == "waiting_input"
    });
    // This test's own connection has been upgraded; the client's upgrade is the next one.
    daemon.wait_for_log("GET /ws/observe 101");
    let child = typescript_client(&daemon, &daemon.token("observe"), "sess-claude-primary");
    daemon.wait_for_log("GET /ws/observe 101");
    ws.send(json!({"type": "user_message", "session_id": "sess-claude-primary", "content": "hi"}));
    let printed = wait_for_line(child, "Claude: ");
    assert!(
        printed
            .lines()
            .any(|l| l == "Claude: Hello from the primary agent."),
        "{printed}"
    );
}
