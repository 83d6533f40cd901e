//! What the API offers works the same on both backends: each test here runs once with every
//! agent type on `tmux` and once on `pty` (`orchestra pty-hold`).

use serde_json::{Value, json};

use crate::common::{DaemonProcess, Transcript, agent_script, id_of, process_alive, wait_until};

/// Runs `$body(backend)` as two tests, `tmux` and `pty`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn tmux() {
                super::$name("tmux")
            }

            #[test]
            fn pty() {
                super::$name("pty")
            }
        }
    )*};
}

on_both_backends!(
    spawn_list_get_and_kill,
    typing_streaming_snapshots_and_resume,
    resize_reaches_the_program,
    exit_statuses_are_exact,
    a_restarted_daemon_adopts_its_sessions_with_their_screens,
    delegated_tasks_run_and_finish,
);

fn extra_types() -> String {
    format!(
        "[agents.sh]\ncommand = [\"/bin/sh\"]\n[agents.signal]\ncommand = [\"{}\"]\n",
        agent_script("on_signal.py")
    )
}

fn start(backend: &str) -> DaemonProcess {
    DaemonProcess::start_on(backend, &extra_types())
}

fn spawn_list_get_and_kill(backend: &str) {
    let daemon = start(backend);
    let token = daemon.control();
    let spawned = daemon.spawn(&token, "echo");
    let id = id_of(&spawned);
    assert_eq!(spawned["status"], "running");
    let list = daemon.get("/api/agents", &token).json();
    assert_eq!(list["total"], 1);
    assert_eq!(list["agents"][0]["session_id"], id.as_str());
    let detail = daemon.get(&format!("/api/agents/{id}"), &token).json();
    assert_eq!(detail["backend"], backend, "{detail}");
    assert_eq!(detail["tmux_session"], spawned["tmux_session"]);
    let pane = detail["tmux_pane"].as_str().unwrap();
    match backend {
        "pty" => assert_eq!(pane, "", "a pty session has no tmux pane"),
        _ => assert!(pane.starts_with('%'), "{detail}"),
    }
    let pid = detail["pid"].as_u64().unwrap() as u32;
    assert!(process_alive(pid));
    let killed = daemon.delete(&format!("/api/agents/{id}"), &token);
    assert_eq!(killed.status, 200, "{}", killed.text());
    assert_eq!(killed.json()["status"], "terminated");
    daemon
        .get(&format!("/api/agents/{id}"), &token)
        .assert_error(404, "SESSION_NOT_FOUND");
    wait_until("the agent's process to end", || {
        (!process_alive(pid)).then_some(())
    });
    if backend == "pty" {
        let socket = daemon.state.join("pty").join(format!("{id}.sock"));
        wait_until("the holder to remove its socket", || {
            (!socket.exists()).then_some(())
        });
        assert!(
            crate::common::processes_mentioning(&socket).is_empty(),
            "the holder exits with its session"
        );
    }
}

fn typing_streaming_snapshots_and_resume(backend: &str) {
    let daemon = start(backend);
    let token = daemon.control();
    let id = id_of(&daemon.spawn(&token, "echo"));
    let mut ws = daemon.ws(&token);
    assert_eq!(ws.subscribe(&id)["type"], "subscribed");
    let mut seen = Transcript::default();
    seen.read_until_after_screen(&mut ws, &id, "echo agent ready");
    ws.send(json!({"type": "user_message", "session_id": id, "content": "first line", "id": 1}));
    ws.recv_until("user_message_ack", |m| {
        seen.add(&id, m);
        m["type"] == "user_message_ack"
    });
    ws.send(json!({"type": "terminal_input", "session_id": id, "data": "second\r", "id": 2}));
    // The terminal echoes what is typed and `cat` prints it again.
    seen.read_until_count(&mut ws, &id, "second", 2);
    assert!(seen.text.contains("first line"), "{:?}", seen.text);

    // A late viewer gets the screen (as far as the emulator has got, under load) and the
    // output after it: everything, nothing twice.
    let mut late = daemon.ws(&token);
    late.subscribe(&id);
    let mut caught_up = Transcript::default();
    let all = |t: &Transcript| format!("{}{}", t.screens.join(""), t.text);
    while caught_up.screens.is_empty() || all(&caught_up).matches("second").count() < 2 {
        let message = late.recv();
        caught_up.add(&id, &message);
    }
    let text = all(&caught_up);
    assert!(text.contains("first line"), "{text:?}");
    assert_eq!(text.matches("second").count(), 2, "{text:?}");

    // Resuming from offset 0 replays the output exactly.
    let stream = seen.stream.clone().unwrap();
    let mut resumed = daemon.ws(&token);
    resumed.send(
        json!({"type": "subscribe_terminal", "session_id": id, "since": 0, "stream": stream}),
    );
    let mut replay = Transcript {
        next: Some(0),
        ..Transcript::default()
    };
    replay.read_until_count(&mut resumed, &id, "second", 2);
    assert!(
        replay.text.starts_with("echo agent ready"),
        "{:?} {:?}",
        replay.text,
        replay.gaps
    );
}

fn resize_reaches_the_program(backend: &str) {
    let daemon = start(backend);
    let token = daemon.control();
    let id = id_of(&daemon.spawn(&token, "sh"));
    let mut ws = daemon.ws(&token);
    ws.subscribe(&id);
    ws.send(json!({"type": "resize_terminal", "session_id": id, "rows": 33, "cols": 101}));
    let ack = ws.recv_until("resize ack", |m| {
        m["type"] == "resize_terminal_ack" || m["type"] == "error"
    });
    assert_eq!(ack["type"], "resize_terminal_ack", "{ack}");
    ws.send(json!({"type": "terminal_input", "session_id": id, "data": "stty size\r"}));
    let mut seen = Transcript::default();
    seen.read_until(&mut ws, &id, "33 101");
    let detail = daemon.get(&format!("/api/agents/{id}"), &token).json();
    assert_eq!(detail["status"], "running", "{detail}");
}

fn exit_statuses_are_exact(backend: &str) {
    let daemon = start(backend);
    let token = daemon.control();
    let cases: [(&str, &str, &str, i64); 3] = [
        ("exit0", "exited", "exit_code", 0),
        ("exit3", "error", "exit_code", 3),
        ("crash", "error", "exit_signal", 9),
    ];
    for (agent_type, status, field, value) in cases {
        let id = id_of(&daemon.spawn(&token, agent_type));
        let detail = daemon.wait_agent(&token, &id, status, |a| a["status"] == status);
        assert_eq!(detail[field], value, "{agent_type}: {detail}");
    }
    // The crash's last words reach observers.
    let mut ws = daemon.ws(&token);
    let id = id_of(&daemon.spawn(&token, "crash"));
    let crash = ws.recv_until("the crash", |m| {
        m["type"] == "error" && m["session_id"] == id.as_str()
    });
    assert_eq!(crash["error_code"], "AGENT_CRASHED", "{crash}");
    let lines = crash["last_lines"].to_string();
    assert!(lines.contains("about to crash"), "{crash}");
}

fn a_restarted_daemon_adopts_its_sessions_with_their_screens(backend: &str) {
    let mut daemon = start(backend);
    let token = daemon.control();
    let id = id_of(&daemon.spawn(&token, "signal"));
    let mut ws = daemon.ws(&token);
    ws.subscribe(&id);
    let mut seen = Transcript::default();
    seen.read_until_after_screen(&mut ws, &id, "ready for signals");
    // No waiting for a checkpoint: a pty holder keeps what the daemon read since the last
    // one, so the daemon can die right after the output.
    let done = id_of(&daemon.spawn(&token, "exit3"));
    daemon.wait_agent(&token, &done, "exit3 to end", |a| a["status"] == "error");
    let before = daemon.get(&format!("/api/agents/{id}"), &token).json();
    drop(ws);
    daemon.kill9();
    // While no daemon runs, the agent prints (a pty holder keeps it in its ring).
    let pid = before["pid"].as_u64().unwrap() as u32;
    crate::common::signal(pid, "USR1");
    let mark = daemon.work.join("usr1.mark");
    wait_until("the agent to handle the signal", || {
        mark.exists().then_some(())
    });
    daemon.relaunch();

    let after = daemon.get(&format!("/api/agents/{id}"), &token).json();
    assert_eq!(after["pid"], before["pid"], "{after}");
    assert_eq!(after["backend"], backend);
    assert_eq!(after["status"], "running", "{after}");
    let dead = daemon.get(&format!("/api/agents/{done}"), &token).json();
    assert_eq!(dead["status"], "error", "{dead}");
    assert_eq!(dead["exit_code"], 3, "{dead}");

    let mut ws = daemon.ws(&token);
    ws.subscribe(&id);
    let mut seen = Transcript::default();
    seen.read_until_after_screen(&mut ws, &id, "got usr1");
    let all = format!("{}{}", seen.screens.join(""), seen.text);
    assert_eq!(
        all.matches("ready for signals").count(),
        1,
        "the screen from before the restart, once: {all:?}"
    );
    assert_eq!(all.matches("got usr1").count(), 1, "{all:?}");
    ws.send(json!({"type": "user_message", "session_id": id, "content": "after restart"}));
    seen.read_until(&mut ws, &id, "said after restart");
}

fn delegated_tasks_run_and_finish(backend: &str) {
    let daemon = start(backend);
    let token = daemon.control();
    let answer = daemon.delegate_in(
        &token,
        "task",
        &daemon.work,
        "SAY starting\nWRITE made.txt content\nANSWER made one file",
    );
    let ticket = answer["ticket_id"].as_str().unwrap().to_string();
    let done = daemon.wait_task_status(&token, &ticket, "completed");
    let result: &Value = &done["result"];
    assert!(
        result["message"].to_string().contains("made one file"),
        "{done}"
    );
    assert!(
        result["files_modified"].to_string().contains("made.txt"),
        "{done}"
    );
    assert_eq!(
        std::fs::read_to_string(daemon.work.join("made.txt")).unwrap(),
        "content\n"
    );
}

on_both_backends!(a_viewer_joining_during_a_flood_gets_a_screen_at_once);

/// The emulator cannot keep up with an endless flood into a small backlog: it skips ahead
/// instead of waiting for the flood to end, so a late viewer still gets a screen (this test
/// would wait forever for one otherwise: the flood never ends by itself).
fn a_viewer_joining_during_a_flood_gets_a_screen_at_once(backend: &str) {
    let daemon = DaemonProcess::start_on(
        backend,
        &format!(
            "{}[agents.endless]\ncommand = [\"/bin/sh\", \"-c\", \"yes 'endless flood line 0123456789'\"]\n\
             [panes]\nbacklog_bytes = 65536\nlive_frame_bytes = 65536\n",
            extra_types()
        ),
    );
    let token = daemon.control();
    let id = id_of(&daemon.spawn(&token, "endless"));
    let mut first = daemon.ws(&token);
    first.subscribe(&id);
    let mut seen = Transcript::default();
    seen.read_until_count(&mut first, &id, "endless flood line", 2000);
    let mut late = daemon.ws(&token);
    assert_eq!(late.subscribe(&id)["type"], "subscribed");
    let screen = late.recv_until("a screen during the flood", |m| {
        m["type"] == "terminal_output" && m["snapshot"] == true
    });
    assert!(
        screen["data"]
            .as_str()
            .unwrap()
            .contains("endless flood line"),
        "{screen}"
    );
    assert_eq!(
        daemon.delete(&format!("/api/agents/{id}"), &token).status,
        200
    );
}

on_both_backends!(
    kill_ends_the_whole_tree_even_when_it_ignores_sigterm,
    twenty_concurrent_spawns,
    a_graceful_stop_leaves_agents_running_for_the_next_daemon,
);

fn kill_ends_the_whole_tree_even_when_it_ignores_sigterm(backend: &str) {
    let daemon = DaemonProcess::start_on(backend, "[sessions]\nkill_grace = \"300ms\"");
    let token = daemon.control();
    let id = id_of(&daemon.spawn(&token, "stubborn"));
    let mut ws = daemon.ws(&token);
    ws.subscribe(&id);
    let mut seen = Transcript::default();
    seen.read_until_after_screen(&mut ws, &id, "child ");
    let all = format!("{}{}", seen.screens.join(""), seen.text);
    let child: u32 = all
        .split("child ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .unwrap_or_else(|| panic!("no child pid in {all:?}"));
    let pid = daemon.get(&format!("/api/agents/{id}"), &token).json()["pid"]
        .as_u64()
        .unwrap() as u32;
    assert!(process_alive(pid) && process_alive(child));
    assert_eq!(
        daemon.delete(&format!("/api/agents/{id}"), &token).status,
        200
    );
    wait_until("the tree to be gone", || {
        (!process_alive(pid) && !process_alive(child)).then_some(())
    });
    daemon.wait_for_log("needed SIGKILL");
}

fn twenty_concurrent_spawns(backend: &str) {
    let daemon = start(backend);
    let token = daemon.control();
    let ids: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| scope.spawn(|| id_of(&daemon.spawn(&token, "echo"))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 20);
    let list = daemon.get("/api/agents", &token).json();
    assert_eq!(list["total"], 20);
    let pids: Vec<u64> = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let id = a["session_id"].as_str().unwrap();
            daemon.get(&format!("/api/agents/{id}"), &token).json()["pid"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(pids.iter().all(|pid| process_alive(*pid as u32)));
}

fn a_graceful_stop_leaves_agents_running_for_the_next_daemon(backend: &str) {
    let mut daemon = start(backend);
    let token = daemon.control();
    let id = id_of(&daemon.spawn(&token, "echo"));
    let pid = daemon.get(&format!("/api/agents/{id}"), &token).json()["pid"]
        .as_u64()
        .unwrap() as u32;
    let status = daemon.stop();
    assert!(status.success(), "exit status {status:?}");
    assert!(process_alive(pid), "the agent survives the daemon");
    daemon.relaunch();
    let after = daemon.get(&format!("/api/agents/{id}"), &token).json();
    assert_eq!(after["pid"], pid, "{after}");
    let mut ws = daemon.ws(&token);
    ws.subscribe(&id);
    ws.send(json!({"type": "user_message", "session_id": id, "content": "still here"}));
    let mut seen = Transcript::default();
    seen.read_until_count(&mut ws, &id, "still here", 2);
}

/// What any process of the daemon's user gets from a pty holder's socket without the
/// daemon's holder key: `(whether a descriptor came, the bytes that came)` until the holder
/// closes the connection.
fn foreign_client(socket: &std::path::Path, send: &[u8]) -> (bool, Vec<u8>) {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    let _ = stream.write_all(send);
    let (mut got_fd, mut bytes) = (false, Vec::new());
    let mut buf = [0u8; 64 * 1024];
    loop {
        let ready =
            orchestra::sys::wait_readable(stream.as_raw_fd(), crate::common::PATIENCE).unwrap();
        assert!(
            ready,
            "the holder neither answered nor closed the connection"
        );
        match orchestra::sys::recv_fd(stream.as_raw_fd(), &mut buf) {
            Ok((0, _)) | Err(_) => return (got_fd, bytes),
            Ok((n, fd)) => {
                got_fd |= fd.is_some();
                bytes.extend_from_slice(&buf[..n]);
            }
        }
    }
}

/// The socket of a pty session's holder.
fn holder_socket(daemon: &DaemonProcess, id: &str) -> std::path::PathBuf {
    daemon.state.join("pty").join(format!("{id}.sock"))
}

#[test]
fn a_foreign_client_of_a_pty_holder_gets_no_terminal_and_stops_nothing() {
    let mut daemon = DaemonProcess::start_on("pty", "");
    let token = daemon.control();
    let id = id_of(&daemon.spawn(&token, "echo"));
    let pid = daemon.get(&format!("/api/agents/{id}"), &token).json()["pid"]
        .as_u64()
        .unwrap() as u32;
    let mut ws = daemon.ws(&token);
    ws.subscribe(&id);
    let mut seen = Transcript::default();
    seen.read_until_after_screen(&mut ws, &id, "echo agent ready");
    let socket = holder_socket(&daemon, &id);
    let mut wrong_answer = vec![b'A', 0, 0, 0, 32];
    wrong_answer.extend([0u8; 32]);
    // A release (which used to kill the agent), a wrong answer to the challenge, a frame of
    // no known kind.
    for attempt in [&b"R\0\0\0\0"[..], &wrong_answer, b"Zgarbage"] {
        let (got_fd, bytes) = foreign_client(&socket, attempt);
        assert!(!got_fd, "a foreign client got the terminal for {attempt:?}");
        assert!(
            !bytes.contains(&b'{'),
            "a foreign client got the hello: {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    assert!(process_alive(pid), "the agent still runs");
    // The daemon is still attached: what is typed reaches the agent and comes back.
    ws.send(json!({"type": "terminal_input", "session_id": id, "data": "still attached\r"}));
    seen.read_until_count(&mut ws, &id, "still attached", 2);
    assert!(
        !daemon.log_contains("pty holder is gone"),
        "the daemon lost its holder"
    );
    let detail = daemon.get(&format!("/api/agents/{id}"), &token).json();
    assert_eq!(detail["status"], "running", "{detail}");

    // Silent clients that never answer the challenge (more of them than the holder keeps
    // waiting) do not keep a restarted daemon out, and the key outlives the daemon.
    daemon.kill9();
    let silent: Vec<_> = (0..12)
        .map(|_| {
            use std::io::Read;
            let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            stream
                .set_read_timeout(Some(crate::common::PATIENCE))
                .unwrap();
            let mut challenge = [0u8; 37];
            stream.read_exact(&mut challenge).unwrap();
            assert_eq!(challenge[0], b'N', "a challenge, not a refusal");
            stream
        })
        .collect();
    daemon.relaunch();
    let after = daemon.get(&format!("/api/agents/{id}"), &token).json();
    assert_eq!(after["status"], "running", "{after}");
    assert_eq!(after["pid"], pid, "{after}");
    let mut ws = daemon.ws(&token);
    ws.subscribe(&id);
    ws.send(json!({"type": "terminal_input", "session_id": id, "data": "after restart\r"}));
    let mut seen = Transcript::default();
    seen.read_until_count(&mut ws, &id, "after restart", 2);
    drop(silent);
}

#[test]
fn a_pty_holder_serves_one_daemon_at_a_time() {
    use orchestra::pty::{auth, link};
    let daemon = DaemonProcess::start_on("pty", "");
    let token = daemon.control();
    let id = id_of(&daemon.spawn(&token, "echo"));
    let socket = holder_socket(&daemon, &id);
    // Even a client with the key is refused while the daemon is attached.
    let key = auth::Key::read(&auth::key_path(&daemon.state.join("pty"))).unwrap();
    let error = link::connect(&socket, &key, crate::common::PATIENCE).unwrap_err();
    assert!(error.contains("another daemon is attached"), "{error}");
    let mut ws = daemon.ws(&token);
    ws.subscribe(&id);
    ws.send(json!({"type": "terminal_input", "session_id": id, "data": "still mine\r"}));
    let mut seen = Transcript::default();
    seen.read_until_count(&mut ws, &id, "still mine", 2);
    assert!(!daemon.log_contains("pty holder is gone"));
}

#[test]
fn a_pty_holder_ends_when_its_socket_is_gone() {
    let daemon = DaemonProcess::start_on("pty", "");
    let token = daemon.control();
    let id = id_of(&daemon.spawn(&token, "echo"));
    let pid = daemon.get(&format!("/api/agents/{id}"), &token).json()["pid"]
        .as_u64()
        .unwrap() as u32;
    let socket = holder_socket(&daemon, &id);
    let holders = crate::common::processes_mentioning(&socket);
    assert!(!holders.is_empty(), "the holder runs");
    std::fs::remove_file(&socket).unwrap();
    wait_until("the holder and its agent to end", || {
        (holders.iter().all(|p| !process_alive(*p)) && !process_alive(pid)).then_some(())
    });
    daemon.wait_agent(&token, &id, "the agent's end", |a| a["status"] != "running");
}
