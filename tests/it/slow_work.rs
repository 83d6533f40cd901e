//! Slow or hung work never stalls unrelated requests: tmux calls, kills and git each run on
//! their own bounded pool of workers, and a request whose pool is saturated is answered
//! `503 OVERLOADED` at once instead of waiting.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::common::{DaemonProcess, Resp, agent_script, wait_until};
use crate::observe::subscribe_with_screen;

/// Where `program` is installed (the real one the stand-in runs).
fn real(program: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .unwrap();
    let path = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(!path.is_empty(), "{program} is not installed");
    path
}

/// How many processes run the hold stand-in under `name` right now.
fn held(stand_in: &Path) -> usize {
    let needle = stand_in.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let pid = entry.ok()?.file_name().to_str()?.parse::<u32>().ok()?;
            std::fs::read(format!("/proc/{pid}/cmdline")).ok()
        })
        .filter(|cmdline| String::from_utf8_lossy(cmdline).contains(&needle))
        .count()
}

/// Sends `count` spawn requests of the `echo` type at once; returns their responses in the
/// order they arrive.
fn spawn_concurrently(
    daemon: &DaemonProcess,
    token: &str,
    count: usize,
) -> crossbeam_channel::Receiver<Resp> {
    let (tx, rx) = crossbeam_channel::unbounded();
    for _ in 0..count {
        let (tx, addr, token, work) = (
            tx.clone(),
            daemon.addr,
            token.to_string(),
            daemon.work.clone(),
        );
        std::thread::spawn(move || {
            let body = json!({"agent_type": "echo", "working_dir": work}).to_string();
            let request = format!(
                "POST /api/agents/spawn HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
                 Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(120)))
                .unwrap();
            std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
            let raw = crate::common::read_to_close(&mut stream);
            let _ = tx.send(crate::common::parse_responses(&raw).remove(0));
        });
    }
    rx
}

#[test]
fn a_hung_tmux_stalls_neither_streams_nor_health_nor_listing_and_spawns_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join("hold");
    let stand_in = dir.path().join("tmux");
    std::os::unix::fs::symlink(agent_script("hold.sh"), &stand_in).unwrap();
    let real_tmux = real("tmux");
    let daemon = DaemonProcess::start_tmux_with_env(
        |_| {
            format!(
                "workers = 2\nmax_queued_jobs = 2\n[tmux]\nbinary = \"{}\"\ncommand_timeout = \"120s\"\n",
                stand_in.display()
            )
        },
        &[
            ("STANDIN_HOLD", hold.to_str().unwrap()),
            ("STANDIN_REAL", real_tmux.as_str()),
        ],
    );
    let token = daemon.control();
    let session = daemon.spawn(&token, "echo")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut viewer = daemon.ws(&daemon.token("observe"));
    let mut transcript = subscribe_with_screen(&mut viewer, &session);
    let mut typist = daemon.ws(&token);

    // tmux stops answering. Two spawns take both workers, which hang in tmux.
    std::fs::write(&hold, "").unwrap();
    let stuck = spawn_concurrently(&daemon, &token, 2);
    wait_until("both workers to be stuck in tmux", || {
        (held(&stand_in) >= 2).then_some(())
    });
    // No job leaves the queue while both workers hang, so once a spawn is refused the queue
    // stays full: of six more spawns, two wait in the queue and four are refused at once.
    let answers = spawn_concurrently(&daemon, &token, 6);
    for _ in 0..4 {
        let refused = answers
            .recv_timeout(crate::common::PATIENCE)
            .expect("a spawn answered");
        refused.assert_error(503, "OVERLOADED");
        assert_eq!(refused.header("retry-after"), Some("1"));
        assert!(
            refused.text().contains("max_queued_jobs"),
            "{}",
            refused.text()
        );
    }

    // Health and listing answer; details, which need a worker, are refused at once.
    assert_eq!(daemon.get("/api/health", &token).status, 200);
    let listed = daemon.get("/api/agents", &token);
    assert_eq!(listed.status, 200);
    assert!(listed.json()["total"].as_u64().unwrap() >= 1);
    daemon
        .get(&format!("/api/agents/{session}"), &token)
        .assert_error(503, "OVERLOADED");

    // The existing viewer keeps streaming: typing reaches the agent and its echo comes back.
    typist.send(json!({"type": "terminal_input", "session_id": session, "data": "typed-while-tmux-hangs\r"}));
    transcript.read_until(&mut viewer, &session, "typed-while-tmux-hangs");

    // tmux answers again: every admitted spawn completes, none is lost.
    std::fs::remove_file(&hold).unwrap();
    for admitted in [&stuck, &stuck, &answers, &answers] {
        let answer = admitted
            .recv_timeout(crate::common::PATIENCE)
            .expect("every admitted spawn answered");
        assert_eq!(answer.status, 201, "{}", answer.text());
    }
    assert_eq!(
        daemon.get("/api/agents", &token).json()["total"].as_u64(),
        Some(5),
        "the first agent and the four admitted spawns"
    );
}

#[test]
fn sixteen_tasks_in_a_slow_repository_do_not_delay_spawns_reads_or_kills() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let stand_in = bin.join("git");
    std::os::unix::fs::symlink(agent_script("hold.sh"), &stand_in).unwrap();
    let hold = dir.path().join("hold");
    let real_git = real("git");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let daemon = DaemonProcess::start_with_env(
        |_| "[tasks]\nmax_running = 16\n".to_string(),
        &[
            ("PATH", path.as_str()),
            ("STANDIN_HOLD", hold.to_str().unwrap()),
            ("STANDIN_REAL", real_git.as_str()),
        ],
    );
    let token = daemon.control();
    let repo: PathBuf = daemon.work.join("repo");
    crate::common::git_repo(&repo, &[("README", "hello\n")]);

    // Every git call of the daemon's now waits, as in a huge or slow repository.
    std::fs::write(&hold, "").unwrap();
    let tickets: Vec<String> = (0..16)
        .map(|i| {
            let answer =
                daemon.delegate_in(&token, "task", &repo, &format!("WRITE out-{i}.txt {i}"));
            answer["ticket_id"].as_str().unwrap().to_string()
        })
        .collect();
    // All the slow workers (8 by default) are stuck in git.
    wait_until("the slow workers to be stuck in git", || {
        (held(&stand_in) >= 8).then_some(())
    });

    // Another type's spawn, its details and its kill need none of them: they are answered
    // while every git call is still held.
    let spawned = daemon.spawn(&token, "echo");
    let session = spawned["session_id"].as_str().unwrap();
    assert_eq!(
        daemon.get(&format!("/api/agents/{session}"), &token).status,
        200
    );
    assert_eq!(
        daemon
            .delete(&format!("/api/agents/{session}"), &token)
            .status,
        200
    );
    assert_eq!(daemon.get("/api/health", &token).status, 200);
    assert!(
        hold.exists() && held(&stand_in) >= 8,
        "git was still held throughout"
    );
    for ticket in &tickets {
        assert_eq!(daemon.task(&token, ticket)["status"], "pending");
    }

    // git answers again: all sixteen tasks run and complete.
    std::fs::remove_file(&hold).unwrap();
    for ticket in &tickets {
        let done = daemon.wait_task_final(&token, ticket);
        assert_eq!(done["status"], "completed", "{done}");
    }
}
