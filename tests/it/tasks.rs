//! Task delegation: `POST /api/delegate`, `GET`/`DELETE /api/tasks/{id}`, `GET /api/tasks`,
//! `task_update` events, the queue and its limits, tests, worktree isolation, and tickets
//! surviving a `kill -9` of the daemon.
//!
//! The agent is `tests/agents/task_agent.sh`, which acts on keyword lines of its prompt
//! (`WRITE`, `APPEND`, `WAITFOR`, `FAIL`, `HANG`, ...). `WAITFOR <file>` holds a task running
//! until the test creates the file; those files (and logs shared between tasks) live outside
//! the work dir so they never count as files the task modified.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::common::{
    DaemonProcess, Transcript, Ws, agent_script, git, git_repo, is_rfc3339_utc, process_alive,
    touch, wait_until,
};

/// `ticket-` and a lowercase UUID v4.
fn is_ticket_id(value: &Value) -> bool {
    let Some(uuid) = value.as_str().and_then(|t| t.strip_prefix("ticket-")) else {
        return false;
    };
    let groups: Vec<&str> = uuid.split('-').collect();
    groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && groups.iter().all(|g| {
            g.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        && groups[2].starts_with('4')
        && matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b')
}

fn text(value: &Value, key: &str) -> String {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string: {value}"))
        .to_string()
}

/// The agent's prompt from keyword lines.
fn script(lines: &[&str]) -> String {
    lines.join("\n")
}

/// A path in the daemon's temp dir but outside its work dir (the allowed root).
fn outside(daemon: &DaemonProcess, name: &str) -> PathBuf {
    daemon.dir.path().join(name)
}

/// A fresh directory under the work dir.
fn work_dir(daemon: &DaemonProcess, name: &str) -> PathBuf {
    let dir = daemon.work.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn files_modified(ticket: &Value) -> Vec<String> {
    ticket["result"]["files_modified"]
        .as_array()
        .unwrap_or_else(|| panic!("no files_modified: {ticket}"))
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Waits until the fake agent has written its pid to `path`.
fn wait_pid(path: &Path) -> u32 {
    wait_until(&format!("a pid in {}", path.display()), || {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    })
}

/// Waits until `path` exists and holds `needle`.
fn wait_file_contains(path: &Path, needle: &str) {
    wait_until(&format!("{needle:?} in {}", path.display()), || {
        std::fs::read_to_string(path)
            .ok()?
            .contains(needle)
            .then_some(())
    });
}

/// An observer that is certainly registered (a ping answered) before the test goes on.
fn observer(daemon: &DaemonProcess, token: &str) -> Ws {
    let mut ws = daemon.ws(token);
    ws.send(json!({"type": "ping", "id": "ready"}));
    ws.recv_until("pong", |m| m["type"] == "pong");
    ws
}

/// `task_id`s of a `GET /api/tasks` answer, in order.
fn listed_ids(list: &Value) -> Vec<u64> {
    list["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks array: {list}"))
        .iter()
        .map(|t| t["task_id"].as_u64().unwrap())
        .collect()
}

/// A headless task type with extra settings, to redefine one in a test's config.
fn task_type(name: &str, extra: &str) -> String {
    let script = agent_script("task_agent.sh");
    format!(
        "[agents.{name}]\ncommand = [\"{script}\"]\nheadless = [\"{script}\", \"{{prompt}}\"]\n{extra}\n"
    )
}

fn session_listed(daemon: &DaemonProcess, token: &str, session: &str) -> bool {
    daemon.get("/api/agents", token).json()["agents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["session_id"] == session)
}

#[test]
fn a_task_that_edits_files_completes_with_the_files_and_the_final_answer() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let release = outside(&daemon, "release");
    let task = script(&[
        "Edit two files, then report.",
        "SAY working on it",
        &format!("WAITFOR {}", release.display()),
        "WRITE a.txt first",
        "WRITE sub/b.txt second",
        "ANSWER edited two files",
    ]);
    let resp = daemon.post(
        "/api/delegate",
        &token,
        &json!({"agent_type": "task", "task": task, "working_dir": daemon.work}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let answer = resp.json();
    let ticket = text(&answer, "ticket_id");
    assert!(is_ticket_id(&answer["ticket_id"]), "{answer}");
    let task_id = answer["task_id"].as_u64().expect("numeric task_id");
    let session = text(&answer, "session_id");
    let hex = session
        .strip_prefix("sess-task-")
        .expect("sess-<type>-<hex>");
    assert!(hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(answer["status"], "pending");
    assert!(is_rfc3339_utc(&answer["created_at"]), "{answer}");
    assert_eq!(
        resp.header("location"),
        Some(format!("/api/tasks/{ticket}").as_str())
    );

    let running = daemon.wait_task_status(&token, &ticket, "running");
    assert_eq!(running["ticket_id"], ticket.as_str());
    assert_eq!(running["task_id"], task_id);
    assert_eq!(running["agent"], "task");
    assert_eq!(running["session_id"], session.as_str());
    assert_eq!(running["task"], task.as_str());
    assert_eq!(running["working_dir"], daemon.work.to_str().unwrap());
    assert_eq!(running["isolation"], "none");
    assert!(running["branch"].is_null(), "{running}");
    assert_eq!(running["timeout_ms"], 30 * 60 * 1000, "the default timeout");
    assert_eq!(running["created_at"], answer["created_at"]);
    assert!(is_rfc3339_utc(&running["started_at"]), "{running}");
    assert!(running["completed_at"].is_null() && running["duration_ms"].is_null());
    assert!(running["result"].is_null(), "{running}");

    // While it runs, the task's session is an agent like any other: listed and observable.
    wait_until("the task's session to be listed", || {
        session_listed(&daemon, &token, &session).then_some(())
    });
    let agent = daemon.get(&format!("/api/agents/{session}"), &token);
    assert_eq!(agent.status, 200, "{}", agent.text());
    assert_eq!(agent.json()["agent_type"], "task");
    assert_eq!(agent.json()["working_dir"], daemon.work.to_str().unwrap());
    let mut ws = daemon.ws(&token);
    let ack = ws.subscribe(&session);
    assert_eq!(ack["type"], "subscribed", "{ack}");
    let mut transcript = Transcript::default();
    while !(transcript
        .screens
        .iter()
        .any(|s| s.contains("working on it"))
        || transcript.text.contains("working on it"))
    {
        let message = ws.recv();
        transcript.add(&session, &message);
    }

    touch(&release);
    let done = daemon.wait_task_status(&token, &ticket, "completed");
    let result = &done["result"];
    assert_eq!(files_modified(&done), ["a.txt", "sub/b.txt"], "{done}");
    assert!(
        text(result, "message").contains("final answer: done edited two files"),
        "{done}"
    );
    assert_eq!(result["exit_code"], 0, "{done}");
    assert!(result["error_code"].is_null(), "{done}");
    assert!(is_rfc3339_utc(&done["started_at"]) && is_rfc3339_utc(&done["completed_at"]));
    assert!(text(&done, "completed_at") >= text(&done, "started_at"));
    assert!(done["duration_ms"].is_u64(), "{done}");
    assert_eq!(read(&daemon.work.join("a.txt")), "first\n");
    assert_eq!(read(&daemon.work.join("sub/b.txt")), "second\n");

    // The numeric id names the same ticket.
    assert_eq!(daemon.task(&token, &task_id.to_string()), done);
    // An observe token may read it.
    assert_eq!(
        daemon
            .get(&format!("/api/tasks/{ticket}"), &daemon.token("observe"))
            .status,
        200
    );
}

#[test]
fn a_finished_task_session_goes_away_unless_keep_sessions_is_set() {
    let daemon = DaemonProcess::start_tmux();
    let token = daemon.control();
    let answer = daemon.delegate_in(&token, "task", &daemon.work, "WRITE gone.txt x");
    daemon.wait_task_status(&token, &text(&answer, "ticket_id"), "completed");
    let session = text(&answer, "session_id");
    wait_until("the finished session to be removed", || {
        (daemon.get(&format!("/api/agents/{session}"), &token).status == 404).then_some(())
    });
    assert_eq!(daemon.get("/api/agents", &token).json()["total"], 0);

    let daemon = DaemonProcess::start_tmux_with("[tasks]\nkeep_sessions = true");
    let token = daemon.control();
    let answer = daemon.delegate_in(&token, "task", &daemon.work, "SAY last words here");
    daemon.wait_task_status(&token, &text(&answer, "ticket_id"), "completed");
    let session = text(&answer, "session_id");
    let agent = daemon.get(&format!("/api/agents/{session}"), &token);
    assert_eq!(agent.status, 200, "kept: {}", agent.text());
    assert!(session_listed(&daemon, &token, &session));
    let name = text(&agent.json(), "tmux_session");
    // The pane's history (screen and scrollback) still holds the agent's output.
    let out = daemon.tmux(&["capture-pane", "-p", "-S", "-", "-t", &format!("={name}:")]);
    let history = String::from_utf8_lossy(&out.stdout);
    assert!(
        history.contains("last words here") && history.contains("final answer"),
        "its last screen is kept: {history:?}"
    );
    assert_eq!(
        daemon
            .delete(&format!("/api/agents/{session}"), &token)
            .status,
        200
    );
    assert!(!session_listed(&daemon, &token, &session));
}

#[test]
fn an_agent_exiting_non_zero_fails_the_task_with_its_exit_code_and_output_tail() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let answer = daemon.delegate_in(
        &token,
        "task",
        &daemon.work,
        &script(&["SAY about to fail on purpose", "FAIL"]),
    );
    let done = daemon.wait_task_status(&token, &text(&answer, "ticket_id"), "failed");
    let result = &done["result"];
    assert_eq!(result["exit_code"], 3, "{done}");
    assert!(result["error_code"].is_null(), "{done}");
    assert!(
        text(result, "output_tail").contains("about to fail on purpose"),
        "{done}"
    );
    assert_eq!(files_modified(&done), Vec::<String>::new());
    assert!(is_rfc3339_utc(&done["completed_at"]), "{done}");
}

#[test]
fn an_agent_killed_by_a_signal_fails_the_task_as_crashed() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let answer = daemon.delegate_in(
        &token,
        "task",
        &daemon.work,
        &script(&["WRITE before-crash.txt x", "CRASH"]),
    );
    let done = daemon.wait_task_status(&token, &text(&answer, "ticket_id"), "failed");
    let result = &done["result"];
    assert_eq!(result["error_code"], "AGENT_CRASHED", "{done}");
    assert_eq!(result["exit_signal"], 9, "{done}");
    assert!(!text(result, "error").is_empty(), "{done}");
    assert_eq!(files_modified(&done), ["before-crash.txt"]);
}

#[test]
fn killing_the_task_session_fails_the_task_as_crashed() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let pid_file = outside(&daemon, "pid");
    let answer = daemon.delegate_in(
        &token,
        "task",
        &daemon.work,
        &script(&[
            &format!("PIDFILE {}", pid_file.display()),
            &format!("WAITFOR {}", outside(&daemon, "never").display()),
        ]),
    );
    let ticket = text(&answer, "ticket_id");
    let session = text(&answer, "session_id");
    daemon.wait_task_status(&token, &ticket, "running");
    let pid = wait_pid(&pid_file);
    daemon.wait_agent(&token, &session, "the task's session", |_| true);
    let resp = daemon.delete(&format!("/api/agents/{session}"), &token);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let done = daemon.wait_task_status(&token, &ticket, "failed");
    assert_eq!(done["result"]["error_code"], "AGENT_CRASHED", "{done}");
    wait_until("the agent to be gone", || {
        (!process_alive(pid)).then_some(())
    });
}

#[test]
fn a_task_past_its_timeout_is_ended_with_task_timeout() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let mut ws = observer(&daemon, &token);
    let pid_file = outside(&daemon, "pid");
    let answer = daemon.delegate(
        &token,
        &json!({
            "agent_type": "task",
            "working_dir": daemon.work,
            "timeout_ms": 1500,
            "task": script(&[&format!("PIDFILE {}", pid_file.display()), "HANG"]),
        }),
    );
    let ticket = text(&answer, "ticket_id");
    let pid = wait_pid(&pid_file);
    let done = daemon.wait_task_status(&token, &ticket, "timeout");
    assert_eq!(done["timeout_ms"], 1500);
    assert_eq!(done["result"]["error_code"], "TASK_TIMEOUT", "{done}");
    assert!(is_rfc3339_utc(&done["completed_at"]), "{done}");
    let error = ws.recv_until("the timeout error", |m| {
        m["type"] == "error" && m["ticket_id"] == ticket.as_str()
    });
    assert_eq!(error["error_code"], "TASK_TIMEOUT", "{error}");
    assert_eq!(error["task_id"], answer["task_id"], "{error}");
    assert_eq!(error["session_id"], answer["session_id"], "{error}");
    assert!(!text(&error, "message").is_empty());
    wait_until("the hung agent to be ended", || {
        (!process_alive(pid)).then_some(())
    });
}

#[test]
fn observers_see_pending_running_completed_task_updates_in_order() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let mut ws = observer(&daemon, &daemon.token("observe"));
    let answer = daemon.delegate_in(&token, "task", &daemon.work, "WRITE x.txt hi");
    let ticket = text(&answer, "ticket_id");
    let mut statuses: Vec<String> = Vec::new();
    let last = loop {
        let update = ws.recv_until("a task_update", |m| {
            m["type"] == "task_update" && m["ticket_id"] == ticket.as_str()
        });
        assert_eq!(update["task_id"], answer["task_id"], "{update}");
        assert_eq!(update["session_id"], answer["session_id"], "{update}");
        assert_eq!(update["agent"], "task", "{update}");
        assert!(update["elapsed_ms"].is_u64(), "{update}");
        let status = text(&update, "status");
        if statuses.last() != Some(&status) {
            statuses.push(status.clone());
        }
        if crate::common::is_final_task_status(&status) {
            break update;
        }
        assert!(update.get("result").is_none_or(Value::is_null), "{update}");
    };
    assert_eq!(statuses, ["pending", "running", "completed"]);
    assert_eq!(
        files_modified(&last),
        ["x.txt"],
        "the final update has the result"
    );
    assert_eq!(
        last["result"],
        daemon.task(&token, &ticket)["result"],
        "the event's result is the ticket's"
    );
}

#[test]
fn delegate_requests_are_validated_and_refused_ones_leave_nothing_behind() {
    let daemon = DaemonProcess::start_with("[tasks]\nmax_timeout = \"1h\"");
    let token = daemon.control();
    let work = daemon.work.clone();
    let outside_dir = tempfile::tempdir().unwrap();
    std::fs::write(work.join("a-file"), b"").unwrap();
    let ok = json!({"agent_type": "task", "task": "WRITE x.txt x", "working_dir": work});
    let with = |key: &str, value: Value| {
        let mut body = ok.clone();
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = ok.clone();
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let post = |body: &Value| daemon.post("/api/delegate", &token, body);

    let resp = post(&with("agent_type", json!("nope")));
    resp.assert_error(400, "INVALID_AGENT_TYPE");
    let resp = post(&with("agent_type", json!("nohead")));
    resp.assert_error(400, "INVALID_AGENT_TYPE");
    assert!(
        text(&resp.json(), "message").contains("headless"),
        "{}",
        resp.text()
    );
    for (what, body) in [
        ("no agent_type", without("agent_type")),
        ("no task", without("task")),
        ("empty task", with("task", json!(""))),
        ("task too long", with("task", json!("x".repeat(65537)))),
        ("task not a string", with("task", json!(["WRITE x.txt x"]))),
        ("unknown field", with("priority", json!("high"))),
        (
            "unknown context field",
            with("context", json!({"urgency": 1})),
        ),
        (
            "files not a list",
            with("context", json!({"files": "src/a.rs"})),
        ),
        ("timeout_ms zero", with("timeout_ms", json!(0))),
        ("timeout_ms negative", with("timeout_ms", json!(-5))),
        ("timeout_ms above max", with("timeout_ms", json!(3_600_001))),
        ("timeout_ms a string", with("timeout_ms", json!("1500"))),
        ("unknown isolation", with("isolation", json!("sideways"))),
        ("worktree without git", with("isolation", json!("worktree"))),
        (
            "shell-string test_command",
            with("test_command", json!("make test")),
        ),
    ] {
        let resp = post(&body);
        assert_eq!(resp.status, 400, "{what} accepted: {}", resp.text());
        resp.assert_error(400, "INVALID_REQUEST");
    }
    for bad in [
        outside_dir.path().display().to_string(),
        format!("{}/does-not-exist", work.display()),
        format!("{}/a-file", work.display()),
        format!("{}/../", work.display()),
        "relative/dir".to_string(),
        "/etc".to_string(),
    ] {
        let resp = post(&with("working_dir", json!(bad)));
        assert_eq!(resp.status, 400, "{bad:?} accepted: {}", resp.text());
        resp.assert_error(400, "INVALID_WORKING_DIR");
    }
    post(&with("session_id", json!("sess-echo-00000000"))).assert_error(404, "SESSION_NOT_FOUND");
    let resp = daemon.request("POST", "/api/delegate", Some(&token), None);
    assert_eq!(resp.status, 400, "an empty body: {}", resp.text());

    // Scopes and tokens.
    let observe = daemon.token("observe");
    daemon
        .post("/api/delegate", &observe, &ok)
        .assert_error(403, "FORBIDDEN");
    daemon
        .delete("/api/tasks/1", &observe)
        .assert_error(403, "FORBIDDEN");
    for (method, path) in [
        ("POST", "/api/delegate"),
        ("GET", "/api/tasks"),
        ("GET", "/api/tasks/1"),
        ("DELETE", "/api/tasks/1"),
    ] {
        let body = (method == "POST").then_some(&ok);
        daemon
            .request(method, path, None, body)
            .assert_error(401, "INVALID_TOKEN");
    }

    // Unknown tickets.
    for id in [
        "ticket-00000000-0000-4000-8000-000000000000",
        "999",
        "nonsense",
    ] {
        daemon
            .get(&format!("/api/tasks/{id}"), &observe)
            .assert_error(404, "TASK_NOT_FOUND");
        daemon
            .delete(&format!("/api/tasks/{id}"), &token)
            .assert_error(404, "TASK_NOT_FOUND");
    }

    // Nothing was queued, stored or started.
    let list = daemon.get("/api/tasks", &observe);
    assert_eq!(list.status, 200, "{}", list.text());
    assert_eq!(list.json()["total"], 0, "{}", list.text());
    assert_eq!(daemon.get("/api/agents", &token).json()["total"], 0);
    assert!(!work.join("x.txt").exists());

    // The limit itself is allowed.
    let answer = daemon.delegate(&token, &with("timeout_ms", json!(3_600_000)));
    assert_eq!(answer["task_id"], 1, "refused requests used no task id");
    let done = daemon.wait_task_status(&token, &text(&answer, "ticket_id"), "completed");
    assert_eq!(done["timeout_ms"], 3_600_000);
}

#[test]
fn working_dir_defaults_to_the_delegating_session_then_the_first_allowed_root() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let project = work_dir(&daemon, "project");
    let resp = daemon.post(
        "/api/agents/spawn",
        &token,
        &json!({"agent_type": "echo", "working_dir": project}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let primary = text(&resp.json(), "session_id");

    let answer = daemon.delegate(
        &token,
        &json!({"agent_type": "task", "task": "WRITE from-session.txt x", "session_id": primary}),
    );
    let done = daemon.wait_task_status(&token, &text(&answer, "ticket_id"), "completed");
    assert_eq!(done["working_dir"], project.to_str().unwrap());
    assert!(project.join("from-session.txt").exists());

    let answer = daemon.delegate(
        &token,
        &json!({"agent_type": "task", "task": "WRITE from-default.txt x"}),
    );
    let done = daemon.wait_task_status(&token, &text(&answer, "ticket_id"), "completed");
    assert_eq!(done["working_dir"], daemon.work.to_str().unwrap());
    assert!(daemon.work.join("from-default.txt").exists());
}

#[test]
fn more_pending_tickets_than_max_queued_is_503_overloaded() {
    let daemon = DaemonProcess::start_with("[tasks]\nmax_running = 1\nmax_queued = 1");
    let token = daemon.control();
    let release = outside(&daemon, "release");
    let first = daemon.delegate_in(
        &token,
        "task",
        &daemon.work,
        &format!("WAITFOR {}", release.display()),
    );
    daemon.wait_task_status(&token, &text(&first, "ticket_id"), "running");
    let second = daemon.delegate_in(&token, "task", &daemon.work, "WRITE second.txt x");
    let resp = daemon.post(
        "/api/delegate",
        &token,
        &json!({"agent_type": "task", "task": "WRITE third.txt x", "working_dir": daemon.work}),
    );
    resp.assert_error(503, "OVERLOADED");
    assert!(resp.json().get("ticket_id").is_none(), "{}", resp.text());
    assert_eq!(daemon.get("/api/tasks", &token).json()["total"], 2);
    touch(&release);
    daemon.wait_task_status(&token, &text(&second, "ticket_id"), "completed");
    assert!(!daemon.work.join("third.txt").exists());
}

#[test]
fn with_max_running_one_a_second_task_waits_until_the_first_ends() {
    let daemon = DaemonProcess::start_with("[tasks]\nmax_running = 1");
    let token = daemon.control();
    let log = outside(&daemon, "log");
    let release = outside(&daemon, "release");
    let first = daemon.delegate_in(
        &token,
        "task",
        &work_dir(&daemon, "one"),
        &script(&[
            &format!("APPEND {} first-start", log.display()),
            &format!("WAITFOR {}", release.display()),
            &format!("APPEND {} first-end", log.display()),
        ]),
    );
    let first_id = text(&first, "ticket_id");
    daemon.wait_task_status(&token, &first_id, "running");
    wait_file_contains(&log, "first-start");
    let second = daemon.delegate_in(
        &token,
        "task",
        &work_dir(&daemon, "two"),
        &format!("APPEND {} second", log.display()),
    );
    let second_id = text(&second, "ticket_id");

    let waiting = daemon.task(&token, &second_id);
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert!(waiting["started_at"].is_null(), "{waiting}");
    assert!(!session_listed(
        &daemon,
        &token,
        &text(&second, "session_id")
    ));
    let count = |status: &str| {
        daemon
            .get(&format!("/api/tasks?status={status}"), &token)
            .json()["total"]
            .clone()
    };
    assert_eq!(count("running"), 1);
    assert_eq!(count("pending"), 1);

    touch(&release);
    let first_done = daemon.wait_task_status(&token, &first_id, "completed");
    let second_done = daemon.wait_task_status(&token, &second_id, "completed");
    assert_eq!(
        read(&log),
        "first-start\nfirst-end\nsecond\n",
        "the second task ran only after the first ended"
    );
    assert!(text(&second_done, "started_at") >= text(&first_done, "completed_at"));
}

#[test]
fn the_queue_is_first_in_first_out() {
    let daemon = DaemonProcess::start_with("[tasks]\nmax_running = 1");
    let token = daemon.control();
    let log = outside(&daemon, "log");
    let release = outside(&daemon, "release");
    let blocker = daemon.delegate_in(
        &token,
        "task",
        &daemon.work,
        &script(&[
            &format!("APPEND {} a", log.display()),
            &format!("WAITFOR {}", release.display()),
        ]),
    );
    daemon.wait_task_status(&token, &text(&blocker, "ticket_id"), "running");
    let queued: Vec<Value> = ["b", "c", "d"]
        .iter()
        .map(|name| {
            daemon.delegate_in(
                &token,
                "task",
                &daemon.work,
                &format!("APPEND {} {name}", log.display()),
            )
        })
        .collect();
    let ids: Vec<u64> = queued
        .iter()
        .map(|a| a["task_id"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    for answer in &queued {
        assert_eq!(
            daemon.task(&token, &text(answer, "ticket_id"))["status"],
            "pending"
        );
    }
    touch(&release);
    let done: Vec<Value> = queued
        .iter()
        .map(|a| daemon.wait_task_status(&token, &text(a, "ticket_id"), "completed"))
        .collect();
    assert_eq!(
        read(&log),
        "a\nb\nc\nd\n",
        "they ran in the order they were queued"
    );
    let started: Vec<String> = done.iter().map(|t| text(t, "started_at")).collect();
    assert!(started.windows(2).all(|w| w[0] <= w[1]), "{started:?}");
}

#[test]
fn a_type_at_its_max_tasks_does_not_block_tasks_of_other_types() {
    let daemon = DaemonProcess::start_with(&format!(
        "[tasks]\nmax_running = 4\n{}",
        task_type("task2", "max_tasks = 1")
    ));
    let token = daemon.control();
    let log = outside(&daemon, "log");
    let release = outside(&daemon, "release");
    let limited_first = daemon.delegate_in(
        &token,
        "task2",
        &daemon.work,
        &script(&[
            &format!("APPEND {} limited-1", log.display()),
            &format!("WAITFOR {}", release.display()),
        ]),
    );
    daemon.wait_task_status(&token, &text(&limited_first, "ticket_id"), "running");
    wait_file_contains(&log, "limited-1");
    let limited_second = daemon.delegate_in(
        &token,
        "task2",
        &daemon.work,
        &format!("APPEND {} limited-2", log.display()),
    );
    let other = daemon.delegate_in(
        &token,
        "task",
        &daemon.work,
        &format!("APPEND {} other", log.display()),
    );
    // Queued behind the limited ticket, the other type's ticket still runs to the end.
    daemon.wait_task_status(&token, &text(&other, "ticket_id"), "completed");
    let waiting = daemon.task(&token, &text(&limited_second, "ticket_id"));
    assert_eq!(waiting["status"], "pending", "{waiting}");
    touch(&release);
    daemon.wait_task_status(&token, &text(&limited_second, "ticket_id"), "completed");
    daemon.wait_task_status(&token, &text(&limited_first, "ticket_id"), "completed");
    assert_eq!(read(&log), "limited-1\nother\nlimited-2\n");
}

#[test]
fn cancelling_a_pending_ticket_means_it_never_runs() {
    let daemon = DaemonProcess::start_with("[tasks]\nmax_running = 1");
    let token = daemon.control();
    let release = outside(&daemon, "release");
    let blocker = daemon.delegate_in(
        &token,
        "task",
        &daemon.work,
        &format!("WAITFOR {}", release.display()),
    );
    daemon.wait_task_status(&token, &text(&blocker, "ticket_id"), "running");
    let doomed_dir = work_dir(&daemon, "doomed");
    let doomed = daemon.delegate_in(&token, "task", &doomed_dir, "WRITE never.txt x");
    let doomed_id = text(&doomed, "ticket_id");
    let resp = daemon.delete(&format!("/api/tasks/{doomed_id}"), &token);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let cancelled = resp.json();
    assert_eq!(cancelled["ticket_id"], doomed_id.as_str());
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(
        cancelled["result"]["error_code"], "TASK_CANCELLED",
        "{cancelled}"
    );
    assert_eq!(daemon.task(&token, &doomed_id)["status"], "cancelled");
    daemon
        .delete(&format!("/api/tasks/{doomed_id}"), &token)
        .assert_error(409, "TASK_FINISHED");

    touch(&release);
    daemon.wait_task_status(&token, &text(&blocker, "ticket_id"), "completed");
    // A ticket queued after it runs, so the cancelled one had its chance and was skipped.
    let later = daemon.delegate_in(
        &token,
        "task",
        &work_dir(&daemon, "later"),
        "WRITE later.txt x",
    );
    daemon.wait_task_status(&token, &text(&later, "ticket_id"), "completed");
    let after = daemon.task(&token, &doomed_id);
    assert_eq!(after["status"], "cancelled", "{after}");
    assert!(after["started_at"].is_null(), "{after}");
    assert!(
        !doomed_dir.join("never.txt").exists(),
        "the cancelled task ran"
    );
    assert_eq!(
        daemon
            .get(
                &format!("/api/agents/{}", text(&doomed, "session_id")),
                &token
            )
            .status,
        404
    );
}

#[test]
fn cancelling_a_running_ticket_ends_its_agent() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let mut ws = observer(&daemon, &token);
    let pid_file = outside(&daemon, "pid");
    let answer = daemon.delegate_in(
        &token,
        "task",
        &daemon.work,
        &script(&[&format!("PIDFILE {}", pid_file.display()), "HANG"]),
    );
    let ticket = text(&answer, "ticket_id");
    daemon.wait_task_status(&token, &ticket, "running");
    let pid = wait_pid(&pid_file);
    let resp = daemon.delete(&format!("/api/tasks/{ticket}"), &token);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let cancelled = resp.json();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(
        cancelled["result"]["error_code"], "TASK_CANCELLED",
        "{cancelled}"
    );
    wait_until("the cancelled agent to be ended", || {
        (!process_alive(pid)).then_some(())
    });
    let update = ws.recv_until("the cancelled update", |m| {
        m["type"] == "task_update"
            && m["ticket_id"] == ticket.as_str()
            && m["status"] == "cancelled"
    });
    assert_eq!(update["task_id"], answer["task_id"]);
    // The end of the process does not turn the cancellation into a crash.
    let session = text(&answer, "session_id");
    wait_until("the cancelled session to be removed", || {
        (daemon.get(&format!("/api/agents/{session}"), &token).status == 404).then_some(())
    });
    let after = daemon.task(&token, &ticket);
    assert_eq!(after["status"], "cancelled", "{after}");
    assert_eq!(after["result"]["error_code"], "TASK_CANCELLED", "{after}");
}

#[test]
fn cancelling_a_finished_ticket_is_409_and_changes_nothing() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let answer = daemon.delegate_in(&token, "task", &daemon.work, "WRITE done.txt x");
    let ticket = text(&answer, "ticket_id");
    let done = daemon.wait_task_status(&token, &ticket, "completed");
    daemon
        .delete(&format!("/api/tasks/{ticket}"), &token)
        .assert_error(409, "TASK_FINISHED");
    daemon
        .delete(&format!("/api/tasks/{}", answer["task_id"]), &token)
        .assert_error(409, "TASK_FINISHED");
    assert_eq!(daemon.task(&token, &ticket), done);
}

#[test]
fn the_task_list_filters_paginates_and_is_newest_first() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let one = daemon.delegate_in(&token, "task", &work_dir(&daemon, "one"), "WRITE one.txt 1");
    let two = daemon.delegate_in(&token, "task", &work_dir(&daemon, "two"), "FAIL");
    let three = daemon.delegate_in(
        &token,
        "task2",
        &work_dir(&daemon, "three"),
        "WRITE three.txt 3",
    );
    let ids: Vec<u64> = [&one, &two, &three]
        .iter()
        .map(|a| a["task_id"].as_u64().unwrap())
        .collect();
    let finals: Vec<Value> = [&one, &two, &three]
        .iter()
        .map(|a| daemon.wait_task_final(&token, &text(a, "ticket_id")))
        .collect();
    assert_eq!(finals[0]["status"], "completed");
    assert_eq!(finals[1]["status"], "failed");
    assert_eq!(finals[2]["status"], "completed");
    let (t1, t2, t3) = (ids[0], ids[1], ids[2]);

    let observe = daemon.token("observe");
    let list = |query: &str| {
        let resp = daemon.get(&format!("/api/tasks{query}"), &observe);
        assert_eq!(resp.status, 200, "{query}: {}", resp.text());
        resp.json()
    };
    let all = list("");
    assert_eq!(listed_ids(&all), [t3, t2, t1]);
    assert_eq!(all["total"], 3);
    assert_eq!(all["limit"], 50);
    assert_eq!(all["offset"], 0);
    for (entry, ticket) in all["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .zip(finals.iter().rev())
    {
        assert_eq!(entry, ticket, "list entries are whole tickets");
    }

    assert_eq!(listed_ids(&list("?status=failed")), [t2]);
    assert_eq!(list("?status=failed")["total"], 1);
    assert_eq!(listed_ids(&list("?status=completed")), [t3, t1]);
    assert_eq!(listed_ids(&list("?status=running")), Vec::<u64>::new());
    assert_eq!(list("?status=running")["total"], 0);
    assert_eq!(listed_ids(&list("?agent_type=task2")), [t3]);
    assert_eq!(listed_ids(&list("?agent_type=task")), [t2, t1]);
    assert_eq!(listed_ids(&list("?status=completed&agent_type=task")), [t1]);

    let page = list("?limit=2");
    assert_eq!(listed_ids(&page), [t3, t2]);
    assert_eq!(
        (page["total"].clone(), page["limit"].clone()),
        (json!(3), json!(2))
    );
    let page = list("?limit=2&offset=2");
    assert_eq!(listed_ids(&page), [t1]);
    assert_eq!(
        (page["total"].clone(), page["offset"].clone()),
        (json!(3), json!(2))
    );
    let page = list("?offset=5");
    assert_eq!(listed_ids(&page), Vec::<u64>::new());
    assert_eq!(page["total"], 3);
    let page = list("?status=completed&limit=1&offset=1");
    assert_eq!(listed_ids(&page), [t1]);
    assert_eq!(page["total"], 2, "total counts every match, not the page");

    for bad in ["?status=sleeping", "?limit=abc", "?limit=501", "?offset=-1"] {
        daemon
            .get(&format!("/api/tasks{bad}"), &observe)
            .assert_error(400, "INVALID_REQUEST");
    }
}

#[test]
fn a_passing_test_command_records_tests_passed() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let answer = daemon.delegate(
        &token,
        &json!({
            "agent_type": "task",
            "working_dir": daemon.work,
            "task": "WRITE ok.txt yes",
            "context": {"tests_required": true},
            "test_command": ["sh", "-c", "test -f ok.txt && echo suite green"],
        }),
    );
    let done = daemon.wait_task_status(&token, &text(&answer, "ticket_id"), "completed");
    let result = &done["result"];
    assert_eq!(result["tests_passed"], true, "{done}");
    assert!(result["tests_skipped"].is_null(), "{done}");
    if let Some(output) = result["tests_output"].as_str() {
        assert!(output.contains("suite green"), "{done}");
    }
    assert_eq!(
        files_modified(&done),
        ["ok.txt"],
        "the test run adds nothing"
    );
}

#[test]
fn a_failing_test_command_completes_the_task_with_tests_passed_false() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let answer = daemon.delegate(
        &token,
        &json!({
            "agent_type": "task",
            "working_dir": daemon.work,
            "task": "WRITE wrong.txt oops",
            "context": {"tests_required": true},
            "test_command": ["sh", "-c", "echo 'suite red: ok.txt missing'; test -f ok.txt"],
        }),
    );
    let done = daemon.wait_task_status(&token, &text(&answer, "ticket_id"), "completed");
    let result = &done["result"];
    assert_eq!(result["tests_passed"], false, "{done}");
    assert!(
        text(result, "tests_output").contains("suite red: ok.txt missing"),
        "{done}"
    );
    assert!(result["error_code"].is_null(), "{done}");
}

#[test]
fn without_tests_required_or_a_test_command_tests_are_skipped_with_a_reason() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let marker = outside(&daemon, "tests-ran");
    let not_required = daemon.delegate(
        &token,
        &json!({
            "agent_type": "task",
            "working_dir": daemon.work,
            "task": "WRITE a.txt a",
            "test_command": ["sh", "-c", format!("touch {}", marker.display())],
        }),
    );
    let no_command = daemon.delegate(
        &token,
        &json!({
            "agent_type": "task",
            "working_dir": work_dir(&daemon, "elsewhere"),
            "task": "WRITE b.txt b",
            "context": {"tests_required": true},
        }),
    );
    for answer in [&not_required, &no_command] {
        let done = daemon.wait_task_status(&token, &text(answer, "ticket_id"), "completed");
        let result = &done["result"];
        assert!(result["tests_passed"].is_null(), "{done}");
        assert!(!text(result, "tests_skipped").is_empty(), "{done}");
    }
    assert!(!marker.exists(), "tests run only when required");
}

#[test]
fn the_configured_test_command_of_the_longest_matching_dir_prefix_is_used_and_named_in_the_prompt()
{
    let daemon = DaemonProcess::start_with_work(|work| {
        let project = work.join("project");
        std::fs::create_dir_all(&project).unwrap();
        format!(
            "[tasks.test_commands]\n\"{}\" = [\"sh\", \"-c\", \"echo wrong-command; exit 1\"]\n\"{}\" = [\"sh\", \"-c\", \"echo from-config; test -f cfg.txt\"]\n",
            work.display(),
            project.display(),
        )
    });
    let token = daemon.control();
    let project = daemon.work.join("project");
    let prompt = outside(&daemon, "prompt");
    let answer = daemon.delegate(
        &token,
        &json!({
            "agent_type": "task",
            "working_dir": project,
            "task": script(&[&format!("PROMPT {}", prompt.display()), "WRITE cfg.txt x"]),
            "context": {"tests_required": true},
        }),
    );
    let done = daemon.wait_task_status(&token, &text(&answer, "ticket_id"), "completed");
    let result = &done["result"];
    assert_eq!(result["tests_passed"], true, "{done}");
    assert!(
        text(result, "tests_output").contains("from-config"),
        "{done}"
    );
    let prompt = read(&prompt);
    assert!(prompt.contains("make sure the tests pass"), "{prompt}");
    assert!(
        prompt.contains("test -f cfg.txt"),
        "the prompt names the test command: {prompt}"
    );
}

#[test]
fn the_prompt_carries_files_requirements_and_the_test_instruction_and_the_env_names_the_ticket() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let prompt = outside(&daemon, "prompt");
    let env = outside(&daemon, "env");
    let task = script(&[
        "Add password hashing to the login flow.",
        &format!("PROMPT {}", prompt.display()),
        &format!("ENV {}", env.display()),
    ]);
    let answer = daemon.delegate(
        &token,
        &json!({
            "agent_type": "task",
            "working_dir": daemon.work,
            "task": task,
            "context": {
                "files": ["src/auth.py", "src/db.py"],
                "requirements": ["Use bcrypt", "Keep the public API stable"],
                "tests_required": true,
            },
            "test_command": ["sh", "-c", "echo unit-suite-marker"],
        }),
    );
    let done = daemon.wait_task_status(&token, &text(&answer, "ticket_id"), "completed");
    assert_eq!(done["result"]["tests_passed"], true, "{done}");
    let prompt = read(&prompt);
    let position = |needle: &str| {
        prompt
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing from the prompt: {prompt}"))
    };
    let order = [
        position("Add password hashing to the login flow."),
        position("Files:"),
        position("Requirements:"),
        position("make sure the tests pass"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{prompt}");
    for needle in [
        "src/auth.py",
        "src/db.py",
        "Use bcrypt",
        "Keep the public API stable",
        "unit-suite-marker",
    ] {
        position(needle);
    }
    let env = read(&env);
    assert!(
        env.contains(&format!(
            "ORCHESTRA_TICKET_ID={}\n",
            text(&answer, "ticket_id")
        )),
        "{env}"
    );
    assert!(
        env.contains(&format!(
            "ORCHESTRA_SESSION_ID={}\n",
            text(&answer, "session_id")
        )),
        "{env}"
    );
}

#[test]
fn parallel_worktree_tasks_on_one_repo_each_get_their_own_branch_and_files() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let repo = daemon.work.join("repo");
    git_repo(&repo, &[("README.md", "original\n")]);
    let release = outside(&daemon, "release");
    let hold = format!("WAITFOR {}", release.display());
    let delegate = |task: String| {
        daemon.delegate(
            &token,
            &json!({
                "agent_type": "task",
                "working_dir": repo,
                "isolation": "worktree",
                "task": task,
                "context": {"tests_required": true},
                "test_command": ["sh", "-c", "test -f same.txt"],
            }),
        )
    };
    let a = delegate(script(&[
        &hold,
        "WRITE same.txt from-a",
        "WRITE README.md changed-by-a",
    ]));
    let b = delegate(script(&[&hold, "WRITE same.txt from-b"]));
    let (a_id, b_id) = (text(&a, "ticket_id"), text(&b, "ticket_id"));
    // Both run at the same time on the same repository.
    let a_running = daemon.wait_task_status(&token, &a_id, "running");
    let b_running = daemon.wait_task_status(&token, &b_id, "running");
    for (ticket, id) in [(&a_running, &a_id), (&b_running, &b_id)] {
        assert_eq!(ticket["isolation"], "worktree", "{ticket}");
        assert_eq!(ticket["branch"], format!("orchestra/{id}"), "{ticket}");
    }
    touch(&release);
    let a_done = daemon.wait_task_status(&token, &a_id, "completed");
    let b_done = daemon.wait_task_status(&token, &b_id, "completed");

    let mut worktrees = Vec::new();
    for (done, id, content) in [(&a_done, &a_id, "from-a\n"), (&b_done, &b_id, "from-b\n")] {
        let result = &done["result"];
        let branch = format!("orchestra/{id}");
        assert_eq!(result["branch"], branch.as_str(), "{done}");
        assert_eq!(done["branch"], branch.as_str(), "{done}");
        let worktree = PathBuf::from(text(result, "worktree"));
        assert_ne!(worktree, repo);
        assert!(!worktree.starts_with(&repo), "{}", worktree.display());
        assert_eq!(read(&worktree.join("same.txt")), content);
        assert_eq!(
            git(&worktree, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
            branch,
            "the worktree is on the task's branch"
        );
        git(
            &repo,
            &["rev-parse", "--verify", &format!("refs/heads/{branch}")],
        );
        assert_eq!(
            result["tests_passed"], true,
            "tests ran in the worktree: {done}"
        );
        worktrees.push(worktree);
    }
    assert_ne!(worktrees[0], worktrees[1]);
    assert_eq!(
        files_modified(&a_done),
        ["README.md", "same.txt"],
        "{a_done}"
    );
    assert_eq!(files_modified(&b_done), ["same.txt"], "{b_done}");
    assert_eq!(read(&worktrees[0].join("README.md")), "changed-by-a\n");
    assert_eq!(read(&worktrees[1].join("README.md")), "original\n");

    // The main checkout is untouched.
    assert!(!repo.join("same.txt").exists());
    assert_eq!(read(&repo.join("README.md")), "original\n");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    assert_eq!(
        git(&repo, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
        "main"
    );
}

#[test]
fn a_task_in_a_git_checkout_lists_the_files_it_changed() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let repo = daemon.work.join("repo");
    git_repo(
        &repo,
        &[("src/a.rs", "fn a() {}\n"), ("src/b.rs", "fn b() {}\n")],
    );
    let answer = daemon.delegate_in(
        &token,
        "task",
        &repo,
        &script(&[
            "WRITE src/a.rs fn a() { changed() }",
            "WRITE docs/new.md hello",
        ]),
    );
    let done = daemon.wait_task_status(&token, &text(&answer, "ticket_id"), "completed");
    assert_eq!(files_modified(&done), ["docs/new.md", "src/a.rs"], "{done}");
    assert!(done["result"]["branch"].is_null() && done["result"]["worktree"].is_null());
}

#[test]
fn in_a_plain_directory_files_modified_comes_from_the_snapshot() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let dir = work_dir(&daemon, "plain");
    std::fs::create_dir_all(dir.join("deep")).unwrap();
    for (name, content) in [
        ("keep.txt", "untouched"),
        ("edit.txt", "old"),
        ("gone.txt", "bye"),
        ("deep/stay.txt", "still here"),
    ] {
        std::fs::write(dir.join(name), content).unwrap();
    }
    let answer = daemon.delegate_in(
        &token,
        "task",
        &dir,
        &script(&[
            "WRITE edit.txt a longer new content",
            "RM gone.txt",
            "WRITE deep/er/new.txt fresh",
        ]),
    );
    let done = daemon.wait_task_status(&token, &text(&answer, "ticket_id"), "completed");
    assert_eq!(
        files_modified(&done),
        ["deep/er/new.txt", "edit.txt", "gone.txt"],
        "created, edited and deleted files, nothing else: {done}"
    );
}

#[test]
fn tickets_survive_a_kill_9_of_the_daemon_and_run_to_the_end() {
    let mut daemon = DaemonProcess::start_with("[tasks]\nmax_running = 1");
    let token = daemon.control();
    let release = outside(&daemon, "release");
    let pid_file = outside(&daemon, "pid");
    let running_dir = work_dir(&daemon, "running");
    let pending_dir = work_dir(&daemon, "pending");
    let running = daemon.delegate_in(
        &token,
        "task",
        &running_dir,
        &script(&[
            &format!("PIDFILE {}", pid_file.display()),
            &format!("WAITFOR {}", release.display()),
            "WRITE r.txt from the running task",
            "ANSWER survived the restart",
        ]),
    );
    let running_id = text(&running, "ticket_id");
    daemon.wait_task_status(&token, &running_id, "running");
    let pid = wait_pid(&pid_file);
    let pending = daemon.delegate_in(
        &token,
        "task",
        &pending_dir,
        "WRITE p.txt from the pending task",
    );
    let pending_id = text(&pending, "ticket_id");
    let before = daemon.get("/api/tasks", &token).json();
    assert_eq!(before["total"], 2);

    daemon.kill9_and_restart();
    assert!(process_alive(pid), "the agent outlives the daemon");
    let token = daemon.control();
    let after = daemon.get("/api/tasks", &token).json();
    assert_eq!(after["total"], 2, "no ticket lost: {after}");
    assert_eq!(listed_ids(&after), listed_ids(&before));
    let still_running = daemon.task(&token, &running_id);
    assert_eq!(still_running["status"], "running", "{still_running}");
    assert_eq!(still_running["session_id"], running["session_id"]);
    assert_eq!(daemon.task(&token, &pending_id)["status"], "pending");

    touch(&release);
    let done = daemon.wait_task_status(&token, &running_id, "completed");
    assert_eq!(files_modified(&done), ["r.txt"], "{done}");
    assert!(
        text(&done["result"], "message").contains("final answer: done survived the restart"),
        "{done}"
    );
    let done = daemon.wait_task_status(&token, &pending_id, "completed");
    assert_eq!(files_modified(&done), ["p.txt"], "{done}");
    assert!(pending_dir.join("p.txt").exists());

    let last = daemon.get("/api/tasks", &token).json();
    assert_eq!(last["total"], 2, "{last}");
    // Task ids are not reused after the restart.
    let next = daemon.delegate_in(&token, "task", &daemon.work, "SAY next");
    assert_eq!(next["task_id"], 3, "{next}");
}

#[test]
fn a_ticket_whose_agent_finished_while_the_daemon_was_down_gets_its_result() {
    let mut daemon = DaemonProcess::start();
    let token = daemon.control();
    let release = outside(&daemon, "release");
    let pid_file = outside(&daemon, "pid");
    let answer = daemon.delegate_in(
        &token,
        "task",
        &daemon.work,
        &script(&[
            &format!("PIDFILE {}", pid_file.display()),
            &format!("WAITFOR {}", release.display()),
            "WRITE finished-alone.txt x",
            "ANSWER finished while nobody watched",
        ]),
    );
    let ticket = text(&answer, "ticket_id");
    daemon.wait_task_status(&token, &ticket, "running");
    let pid = wait_pid(&pid_file);
    daemon.kill9();
    touch(&release);
    wait_until("the agent to finish while the daemon is down", || {
        (!process_alive(pid)).then_some(())
    });
    daemon.relaunch();
    let token = daemon.control();
    let done = daemon.wait_task_status(&token, &ticket, "completed");
    assert_eq!(files_modified(&done), ["finished-alone.txt"], "{done}");
    assert!(
        text(&done["result"], "message").contains("finished while nobody watched"),
        "{done}"
    );
    assert_eq!(done["result"]["exit_code"], 0, "{done}");
}

#[test]
fn a_ticket_whose_session_vanished_while_the_daemon_was_down_fails_as_crashed() {
    let mut daemon = DaemonProcess::start_tmux();
    let token = daemon.control();
    let answer = daemon.delegate_in(
        &token,
        "task",
        &daemon.work,
        &format!("WAITFOR {}", outside(&daemon, "never").display()),
    );
    let ticket = text(&answer, "ticket_id");
    let session = text(&answer, "session_id");
    daemon.wait_task_status(&token, &ticket, "running");
    let agent = daemon.wait_agent(&token, &session, "the task's session", |_| true);
    let tmux_session = text(&agent, "tmux_session");
    daemon.kill9();
    let killed = daemon.tmux(&["kill-session", "-t", &format!("={tmux_session}")]);
    assert!(killed.status.success(), "{killed:?}");
    daemon.relaunch();
    let token = daemon.control();
    let done = daemon.wait_task_status(&token, &ticket, "failed");
    assert_eq!(done["result"]["error_code"], "AGENT_CRASHED", "{done}");
    assert!(
        text(&done["result"], "error").contains("vanished"),
        "the error says the session vanished while the daemon was down: {done}"
    );
}

#[test]
fn a_flood_of_output_leaves_a_bounded_message_and_tail_with_the_final_answer() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let answer = daemon.delegate_in(
        &token,
        "task",
        &daemon.work,
        &script(&["FLOOD 50000", "ANSWER after the flood"]),
    );
    let done = daemon.wait_task_status(&token, &text(&answer, "ticket_id"), "completed");
    let result = &done["result"];
    for field in ["message", "output_tail"] {
        let value = text(result, field);
        assert!(
            value.len() < 64 * 1024,
            "{field} is {} bytes (the agent printed about 2.4 MB)",
            value.len()
        );
        assert!(
            value.contains("final answer: done after the flood"),
            "{field}: {value}"
        );
        assert!(!value.contains('\u{1b}'), "{field} has escape sequences");
    }
}

#[test]
fn json_output_makes_its_result_field_the_message() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let answer = daemon.delegate_in(
        &token,
        "task",
        &daemon.work,
        "JSON refactored the parser and added two tests",
    );
    let done = daemon.wait_task_status(&token, &text(&answer, "ticket_id"), "completed");
    assert_eq!(
        done["result"]["message"], "refactored the parser and added two tests",
        "{done}"
    );
}

#[test]
fn only_the_newest_finished_tickets_are_kept_and_task_ids_are_never_reused() {
    let mut daemon = DaemonProcess::start_with("[tasks]\nkeep_finished = 2");
    let token = daemon.control();
    let mut ids = Vec::new();
    for n in 0..3 {
        let answer = daemon.delegate_in(&token, "task", &daemon.work, &format!("ANSWER {n}"));
        daemon.wait_task_status(&token, &text(&answer, "ticket_id"), "completed");
        ids.push(text(&answer, "ticket_id"));
    }
    let list = daemon.get("/api/tasks", &token).json();
    assert_eq!(list["total"], 2, "{list}");
    daemon
        .get(&format!("/api/tasks/{}", ids[0]), &token)
        .assert_error(404, "TASK_NOT_FOUND");
    assert_eq!(daemon.task(&token, &ids[2])["status"], "completed");
    daemon.restart();
    let token = daemon.control();
    assert_eq!(daemon.get("/api/tasks", &token).json()["total"], 2);
    let next = daemon.delegate_in(&token, "task", &daemon.work, "ANSWER later");
    assert_eq!(next["task_id"], 4, "{next}");
}
