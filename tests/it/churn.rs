//! Restarts while tasks start: a daemon killed (SIGKILL) at any instant of a task's start
//! loses no accepted ticket and runs none twice, and leaves no finished task's session
//! behind.

use std::time::Duration;

use serde_json::json;

use crate::common::{DaemonProcess, wait_until};

/// Tasks delegated per backend, each followed by a SIGKILL a little later than the last.
const ROUNDS: u64 = 12;

#[test]
fn a_restart_at_any_moment_of_a_tasks_start_runs_it_exactly_once() {
    for backend in ["tmux", "pty"] {
        restarts_while_tasks_start(backend);
    }
}

fn restarts_while_tasks_start(backend: &str) {
    let mut daemon = DaemonProcess::start_on(backend, "");
    let token = daemon.control();
    let runs = daemon.work.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let mut tasks = Vec::new();
    for round in 0..ROUNDS {
        let marker = runs.join(format!("task-{round}"));
        // The built-in shell type runs the task text as a script: one line per run.
        let answer = daemon.delegate(
            &token,
            &json!({
                "agent_type": "shell",
                "task": format!("echo ran >> '{}'", marker.display()),
                "working_dir": daemon.work,
            }),
        );
        let id = answer["ticket_id"].as_str().unwrap().to_string();
        tasks.push((id, marker));
        // Where the kill lands in the task's start: 0, 3, 6, ... ms after its ticket was
        // accepted (queued, preparing, launched, spec written, session created, running).
        // The delay places the fault; nothing waits on it.
        std::thread::sleep(Duration::from_millis(round * 3));
        daemon.kill9_and_restart();
    }
    let mut sessions = Vec::new();
    for (id, marker) in &tasks {
        let task = daemon.wait_task_final(&token, id);
        assert_eq!(task["status"], "completed", "{backend}: {task}");
        let ran = std::fs::read_to_string(marker).unwrap_or_default();
        assert_eq!(
            ran.lines().count(),
            1,
            "{backend}: task {id} ran {} times",
            ran.lines().count()
        );
        sessions.push(task["session_id"].as_str().unwrap().to_string());
    }
    // One more restart finds what the others left: sessions of finished tasks, and sessions
    // created late for a withdrawn spawn spec; it removes them all.
    daemon.kill9_and_restart();
    wait_until(
        &format!("{backend}: every task session to be removed"),
        || {
            let listed = daemon.get("/api/agents", &token).json();
            let left: Vec<String> = listed["agents"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|a| a["session_id"].as_str())
                .filter(|id| id.starts_with("sess-shell-"))
                .map(str::to_string)
                .collect();
            left.is_empty().then_some(())
        },
    );
    assert_eq!(sessions.len() as u64, ROUNDS);
}
