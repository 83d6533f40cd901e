//! `/ws/observe`: live terminals, resume, input, status events, auth and origin checks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Closed, DaemonProcess, Transcript, Ws, id_of, now, sign, wait_until};

/// Subscribes and reads up to the screen, returning the transcript positioned after it.
pub(crate) fn subscribe_with_screen(ws: &mut Ws, session: &str) -> Transcript {
    let ack = ws.subscribe(session);
    assert_eq!(ack["type"], "subscribed", "{ack}");
    assert_eq!(ack["resumed"], false);
    let mut transcript = Transcript::default();
    while transcript.screens.is_empty() {
        let message = ws.recv();
        transcript.add(session, &message);
    }
    transcript
}

/// What the flood agent prints between its markers, as the pane's output stream carries it
/// (the terminal turns each newline into CR LF).
pub(crate) fn flood_expected(lines: usize) -> String {
    let mut out = String::new();
    for i in 1..=lines {
        out.push_str(&format!("{i} héllo wörld ✓ 😀 the quick brown fox\r\n"));
    }
    out
}

pub(crate) fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} missing"))
        + start.len();
    let to = text[from..]
        .find(end)
        .unwrap_or_else(|| panic!("{end:?} missing"))
        + from;
    &text[from..to]
}

#[test]
fn subscribers_get_the_screen_then_every_byte_of_a_large_stream() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "flood"));
    let mut viewers: Vec<(Ws, Transcript)> = (0..4)
        .map(|_| {
            let mut ws = daemon.ws(&token);
            let transcript = subscribe_with_screen(&mut ws, &session);
            (ws, transcript)
        })
        .collect();
    // Start the flood by typing a line.
    viewers[0]
        .0
        .send(json!({"type": "terminal_input", "session_id": session, "data": "go\r", "id": 1}));
    let expected = flood_expected(60_000);
    std::thread::scope(|scope| {
        for (ws, transcript) in viewers.iter_mut() {
            let session = session.clone();
            let expected = &expected;
            scope.spawn(move || {
                transcript.read_until(ws, &session, "\r\nEND\r\n");
                let body = between(&transcript.text, "START\r\n", "END\r\n");
                assert_eq!(body.len(), expected.len());
                assert!(
                    body == expected.as_str(),
                    "stream differs from what the agent printed"
                );
                assert!(
                    !transcript.text.contains('\u{FFFD}'),
                    "no character was split"
                );
            });
        }
    });
}

#[test]
fn a_character_split_across_two_writes_arrives_whole() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "split"));
    let mut ws = daemon.ws(&token);
    let mut transcript = subscribe_with_screen(&mut ws, &session);
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "x\r"}));
    transcript.read_until(&mut ws, &session, "after");
    assert!(
        transcript.text.contains("before é after"),
        "{:?}",
        transcript.text
    );
}

#[test]
fn resume_with_since_gets_exactly_the_missed_output_or_a_gap() {
    let daemon = DaemonProcess::start_with("[panes]\nbacklog_bytes = 65536");
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "echo"));
    let mut ws = daemon.ws(&token);
    let mut transcript = subscribe_with_screen(&mut ws, &session);
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "first\r"}));
    transcript.read_until_count(&mut ws, &session, "first\r\n", 2);
    let (since, stream) = (transcript.next.unwrap(), transcript.stream.clone().unwrap());
    drop(ws);

    // Output produced while nobody watches.
    let mut other = daemon.ws(&token);
    let mut seen = subscribe_with_screen(&mut other, &session);
    other.send(json!({"type": "terminal_input", "session_id": session, "data": "second\r"}));
    seen.read_until_count(&mut other, &session, "second\r\n", 2);

    // Hit: exactly the missing bytes, no screen.
    let mut ws = daemon.ws(&token);
    ws.send(json!({"type": "subscribe_terminal", "session_id": session, "since": since, "stream": stream}));
    let ack = ws.recv_until("subscribed", |m| m["type"] == "subscribed");
    assert_eq!(ack["resumed"], true);
    let mut resumed = Transcript {
        next: Some(since),
        ..Transcript::default()
    };
    resumed.read_until_count(&mut ws, &session, "second\r\n", 2);
    assert_eq!(resumed.text, "second\r\nsecond\r\n");
    assert!(resumed.screens.is_empty() && resumed.gaps.is_empty());

    // Miss: more output than the 64 KiB backlog holds, then resume from the old offset.
    let flood = id_of(&{
        let resp = daemon.post(
            "/api/agents/spawn",
            &token,
            &json!({"agent_type": "flood", "working_dir": daemon.work, "env": {"FLOOD_LINES": "3000"}}),
        );
        assert_eq!(resp.status, 201, "{}", resp.text());
        resp.json()
    });
    let mut early = daemon.ws(&token);
    let before = subscribe_with_screen(&mut early, &flood);
    let (since, stream) = (before.next.unwrap(), before.stream.clone().unwrap());
    drop(early);
    let mut watcher = daemon.ws(&token);
    let mut seen = subscribe_with_screen(&mut watcher, &flood);
    watcher.send(json!({"type": "terminal_input", "session_id": flood, "data": "go\r"}));
    seen.read_until(&mut watcher, &flood, "\r\nEND\r\n");
    let mut late = daemon.ws(&token);
    late.send(json!({"type": "subscribe_terminal", "session_id": flood, "since": since, "stream": stream}));
    let ack = late.recv_until("subscribed", |m| m["type"] == "subscribed");
    assert_eq!(ack["resumed"], false);
    let gap = late.recv_until("gap", |m| m["type"] == "terminal_gap");
    assert_eq!(gap["since"], since);
    assert!(gap["offset"].as_u64().unwrap() > since + 65536);
    let mut resumed = Transcript::default();
    while !(resumed.screens.iter().any(|s| s.contains("END")) || resumed.text.contains("END")) {
        let message = late.recv();
        resumed.add(&flood, &message);
    }
    let session = flood;
    // An offset from another stream (say, before a daemon restart) is a miss too.
    let mut foreign = daemon.ws(&token);
    foreign.send(json!({"type": "subscribe_terminal", "session_id": session, "since": 0, "stream": "not-this-one"}));
    assert_eq!(
        foreign.recv_until("subscribed", |m| m["type"] == "subscribed")["resumed"],
        false
    );
    assert_eq!(
        foreign.recv_until("gap", |m| m["type"] == "terminal_gap")["reason"],
        "stream restarted"
    );
}

#[test]
fn the_screen_shows_what_is_on_the_pane() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let spawned = daemon.spawn(&token, "echo");
    let session = id_of(&spawned);
    let name = spawned["tmux_session"].as_str().unwrap();
    wait_until("the greeting", || {
        daemon
            .screen(name)
            .contains("echo agent ready")
            .then_some(())
    });
    let mut ws = daemon.ws(&token);
    let mut transcript = subscribe_with_screen(&mut ws, &session);
    let screen = transcript.screens[0].clone();
    assert!(
        screen.starts_with("\u{1b}c"),
        "a screen starts with a terminal reset"
    );
    // The screen is the emulator's state at its offset; anything it had not processed yet
    // follows as output from that offset.
    while !(screen.contains("echo agent ready") || transcript.text.contains("echo agent ready")) {
        let message = ws.recv();
        transcript.add(&session, &message);
    }
}

#[test]
fn a_slow_viewer_does_not_slow_a_fast_one_and_memory_stays_bounded() {
    // The stalled viewer must outlive the floods: under a loaded suite they can take longer
    // than the default `write_timeout` (30 s), after which the daemon rightly drops a
    // connection that reads nothing (a CI run saw exactly that).
    let daemon = DaemonProcess::start_with("[limits]\nwrite_timeout = \"10m\"");
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "flood"));
    // The slow viewer subscribes and then never reads; a small receive buffer keeps the
    // kernel from absorbing megabytes on its behalf.
    let mut slow = ws_with_small_receive_buffer(&daemon, &token);
    slow.subscribe(&session);
    let rss_before = rss_kb(daemon.pid());
    let mut fast = daemon.ws(&token);
    let mut transcript = subscribe_with_screen(&mut fast, &session);
    // Floods of 3.2 MB each: together far more than the 4 MiB backlog plus what the
    // stalled viewer's socket buffers hold, each within the backlog, so a reader keeping up
    // never misses a byte while the stalled one falls out.
    let expected = flood_expected(60_000);
    for round in 1..=3 {
        fast.send(json!({"type": "terminal_input", "session_id": session, "data": "go\r"}));
        let end = "\r\nEND\r\n";
        while transcript.text.matches(end).count() < round {
            let message = fast.recv();
            transcript.add(&session, &message);
        }
        let last = transcript.text.rfind("START\r\n").unwrap();
        let body = between(&transcript.text[last..], "START\r\n", "END\r\n");
        assert!(
            body == expected,
            "the fast viewer got every byte of flood {round}"
        );
    }
    assert!(
        transcript.gaps.is_empty(),
        "the fast viewer never needed a resync"
    );
    // 9.6 MB went past the stalled viewer; the daemon did not keep it around for it.
    let grown = rss_kb(daemon.pid()).saturating_sub(rss_before);
    assert!(
        grown < 48 * 1024,
        "daemon grew by {grown} KiB while a viewer stalled"
    );
    // The stalled viewer, once it reads, learns that it missed output.
    // (If the daemon's own terminal state also fell behind under load, the gap may come from
    // its re-seed instead; either way the viewer is told.)
    let gap = slow.recv_until("gap", |m| m["type"] == "terminal_gap");
    assert!(
        gap["offset"].as_u64().unwrap() > gap["since"].as_u64().unwrap(),
        "{gap}"
    );
}

/// A WebSocket whose TCP receive buffer was made small before connecting, so a client that
/// stops reading cannot have the kernel absorb megabytes on its behalf (loopback autotuning
/// would allow tens of MB).
pub(crate) fn ws_with_small_receive_buffer(daemon: &DaemonProcess, token: &str) -> Ws {
    use std::os::fd::FromRawFd;
    #[allow(unsafe_code)]
    // SAFETY: plain socket calls on a descriptor this function creates and then hands to
    // `TcpStream`, which owns it from there on; the address struct outlives the call.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 8192;
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0);
        let std::net::SocketAddr::V4(addr) = daemon.addr else {
            panic!("IPv4 loopback")
        };
        let sockaddr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &sockaddr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0);
        std::net::TcpStream::from_raw_fd(fd)
    };
    stream
        .set_read_timeout(Some(crate::common::PATIENCE))
        .unwrap();
    let url = format!("ws://{}/ws/observe?token={token}", daemon.addr);
    let (socket, _) = tungstenite::client(url, crate::common::Retrying(stream)).expect("upgrade");
    Ws { socket }
}

pub(crate) fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map(|v| v.trim().trim_end_matches(" kB").parse().unwrap())
        .unwrap()
}

#[test]
fn user_message_needs_control_and_the_pane_stays_untouched() {
    let daemon = DaemonProcess::start();
    let spawned = daemon.spawn(&daemon.control(), "echo");
    let session = id_of(&spawned);
    let mut ws = daemon.ws(&daemon.token("observe"));
    ws.subscribe(&session);
    ws.send(json!({"type": "user_message", "session_id": session, "content": "rm -rf --no-preserve-root /", "id": "m1"}));
    let error = ws.recv_until("error", |m| m["type"] == "error");
    assert_eq!(error["error_code"], "FORBIDDEN");
    assert_eq!(error["id"], "m1");
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "x\r"}));
    assert_eq!(
        ws.recv_until("error", |m| m["type"] == "error")["error_code"],
        "FORBIDDEN"
    );
    // The connection stays usable.
    ws.send(json!({"type": "ping", "id": 7}));
    assert_eq!(ws.recv_until("pong", |m| m["type"] == "pong")["id"], 7);
    let screen = daemon.screen(spawned["tmux_session"].as_str().unwrap());
    assert!(!screen.contains("rm -rf"), "{screen}");
}

#[test]
fn multi_line_user_message_arrives_as_one_paste_then_enter() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "paste_probe"));
    let mut ws = daemon.ws(&token);
    let mut transcript = subscribe_with_screen(&mut ws, &session);
    while !(transcript.screens[0].contains("probe ready")
        || transcript.text.contains("probe ready"))
    {
        let message = ws.recv();
        transcript.add(&session, &message);
    }
    ws.send(json!({"type": "user_message", "session_id": session, "content": "line one\nline two; #(x)", "id": 42}));
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let paste = hex(b"\x1b[200~line one\rline two; #(x)\x1b[201~");
    let expected = format!("{paste}0d");
    let mut ack = None;
    while ack.is_none() || !transcript.text.contains(&format!("GOT {expected}")) {
        let message = ws.recv();
        match message["type"].as_str() {
            Some("user_message_ack") | Some("error") => ack = Some(message),
            _ => transcript.add(&session, &message),
        }
    }
    let ack = ack.unwrap();
    assert_eq!(ack["type"], "user_message_ack", "{ack}");
    assert_eq!(ack["id"], 42);
    assert_eq!(ack["session_id"], session.as_str());
    // Every report is a prefix of paste-then-Enter: the text arrived as one bracketed paste
    // with the Enter after its end marker, never inside it.
    for line in transcript.text.lines().filter(|l| l.starts_with("GOT ")) {
        let got = line.trim_start_matches("GOT ").trim();
        assert!(expected.starts_with(got), "unexpected bytes {got}");
    }
}

#[test]
fn input_to_unknown_or_dead_sessions_is_an_error() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    ws.send(json!({"type": "user_message", "session_id": "sess-echo-00000000", "content": "hi"}));
    assert_eq!(
        ws.recv_until("error", |m| m["type"] == "error")["error_code"],
        "SESSION_NOT_FOUND"
    );
    ws.send(json!({"type": "subscribe_terminal", "session_id": "sess-echo-00000000"}));
    assert_eq!(
        ws.recv_until("error", |m| m["type"] == "error")["error_code"],
        "SESSION_NOT_FOUND"
    );
    for bad in [
        json!({"type": "dance"}),
        json!({"no_type": 1}),
        json!([1, 2]),
    ] {
        ws.send(bad);
        assert_eq!(
            ws.recv_until("error", |m| m["type"] == "error")["error_code"],
            "INVALID_REQUEST"
        );
    }
    ws.socket
        .send(tungstenite::Message::text("{not json"))
        .unwrap();
    assert_eq!(
        ws.recv_until("error", |m| m["type"] == "error")["error_code"],
        "INVALID_REQUEST"
    );
}

#[test]
fn a_crashing_agent_is_announced_with_its_exit_status_and_last_lines() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    let session = id_of(&daemon.spawn(&token, "crash_input"));
    ws.subscribe(&session);
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "boom\r"}));
    let crash = ws.recv_until("AGENT_CRASHED", |m| m["error_code"] == "AGENT_CRASHED");
    assert_eq!(crash["type"], "error");
    assert_eq!(crash["session_id"], session.as_str());
    assert_eq!(crash["exit_code"], 3);
    let lines: Vec<&str> = crash["last_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(lines.iter().any(|l| l.contains("dying now")), "{lines:?}");
    let status = daemon.get(&format!("/api/agents/{session}"), &token).json();
    assert_eq!(status["status"], "error");
}

#[test]
fn status_changes_are_announced_to_every_observer() {
    let daemon = DaemonProcess::start_with("[sessions]\nidle_after = \"300ms\"");
    let token = daemon.control();
    let mut watcher = daemon.ws(&daemon.token("observe"));
    let spawned = daemon.spawn(&token, "echo");
    let session = id_of(&spawned);
    // Every change of status or activity is announced; these wait for the status ones.
    let status_is = |m: &Value, status: &str| {
        m["type"] == "agent_status" && m["session_id"] == session.as_str() && m["status"] == status
    };
    let idle = watcher.recv_until("idle", |m| status_is(m, "idle"));
    assert!(idle["last_activity"].as_str().unwrap().ends_with('Z'));
    assert_eq!(idle["activity"], "idle", "{idle}");
    assert_eq!(idle["evidence"]["source"], "timer", "{idle}");
    let mut typist = daemon.ws(&token);
    typist.send(json!({"type": "terminal_input", "session_id": session, "data": "wake\r"}));
    let running = watcher.recv_until("running", |m| status_is(m, "running"));
    assert_eq!(running["activity"], "working", "{running}");
    assert_eq!(running["evidence"]["source"], "screen", "{running}");
    watcher.recv_until("idle", |m| status_is(m, "idle"));
    assert_eq!(
        daemon
            .delete(&format!("/api/agents/{session}"), &token)
            .status,
        200
    );
    let terminated = watcher.recv_until("terminated", |m| m["type"] == "agent_status");
    assert_eq!(terminated["status"], "terminated");
    let exited = id_of(&daemon.spawn(&token, "exit0"));
    let status = watcher.recv_until("exited", |m| {
        m["type"] == "agent_status"
            && m["session_id"] == exited.as_str()
            && !matches!(m["status"].as_str(), Some("idle" | "running"))
    });
    assert_eq!(status["status"], "exited");
    assert_eq!(status["exit_code"], 0);
}

#[test]
fn bad_tokens_get_an_error_then_close_1008() {
    let daemon = DaemonProcess::start();
    for query in ["token=garbage", "", "ticket=unknown"] {
        let mut ws = daemon.ws_with(query, &[]).expect("the upgrade completes");
        let (messages, closed) = ws.wait_closed();
        assert_eq!(messages[0]["type"], "error", "{query}");
        assert_eq!(messages[0]["error_code"], "INVALID_TOKEN");
        assert_eq!(closed, Closed::Code(1008), "{query}");
    }
    // An Authorization header works for non-browser clients.
    let token = daemon.token("observe");
    let mut ws = daemon
        .ws_with("", &[("Authorization", &format!("Bearer {token}"))])
        .unwrap();
    ws.send(json!({"type": "ping"}));
    assert_eq!(ws.recv()["type"], "pong");
    let log = daemon.log.lock().unwrap().clone();
    assert!(
        !log.contains(&token) && !log.contains("garbage"),
        "secrets stay out of the log"
    );
}

#[test]
fn one_time_tickets_connect_once() {
    let daemon = DaemonProcess::start();
    let resp = daemon.request(
        "POST",
        "/api/ws-ticket",
        Some(&daemon.token("observe")),
        None,
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let ticket = resp.json()["ticket"].as_str().unwrap().to_string();
    let mut ws = daemon.ws_with(&format!("ticket={ticket}"), &[]).unwrap();
    ws.send(json!({"type": "ping"}));
    assert_eq!(ws.recv()["type"], "pong");
    let mut again = daemon.ws_with(&format!("ticket={ticket}"), &[]).unwrap();
    assert_eq!(again.wait_closed().1, Closed::Code(1008));
    daemon
        .request("POST", "/api/ws-ticket", None, None)
        .assert_error(401, "INVALID_TOKEN");
}

#[test]
fn foreign_origins_are_refused_before_upgrading() {
    let daemon = DaemonProcess::start();
    let token = daemon.token("observe");
    let query = format!("token={token}");
    assert_eq!(
        daemon
            .ws_with(&query, &[("Origin", "http://evil.example")])
            .err(),
        Some(403)
    );
    let own = format!("http://{}", daemon.addr);
    assert!(
        daemon.ws_with(&query, &[("Origin", &own)]).is_ok(),
        "same origin is accepted"
    );
    let allowed =
        DaemonProcess::start_with("[websocket]\nallowed_origins = [\"https://app.example\"]");
    let query = format!("token={}", allowed.token("observe"));
    assert!(
        allowed
            .ws_with(&query, &[("Origin", "https://app.example")])
            .is_ok()
    );
    assert_eq!(
        allowed
            .ws_with(&query, &[("Origin", "http://evil.example")])
            .err(),
        Some(403)
    );
    // A plain GET on the endpoint is not an upgrade.
    let resp = daemon.request("GET", "/ws/observe", Some(&token), None);
    assert_eq!(resp.status, 426);
}

#[test]
fn a_restarted_daemon_resumes_streaming_without_duplicates() {
    let mut daemon = DaemonProcess::start();
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "echo"));
    let mut ws = daemon.ws(&token);
    let mut transcript = subscribe_with_screen(&mut ws, &session);
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "before-restart\r"}));
    transcript.read_until_count(&mut ws, &session, "before-restart\r\n", 2);
    drop(ws);
    daemon.restart();
    daemon.wait_agent(&token, &session, "capture to re-attach", |a| {
        a["capture"] == "attached"
    });
    let mut ws = daemon.ws(&token);
    let mut transcript = subscribe_with_screen(&mut ws, &session);
    assert!(
        transcript.screens[0].contains("before-restart"),
        "the screen survived the restart"
    );
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "after-restart\r"}));
    transcript.read_until_count(&mut ws, &session, "after-restart\r\n", 2);
    // Typed once: the terminal echoes it and `cat` prints it; a second pipe would double both.
    ws.send(json!({"type": "ping"}));
    loop {
        let message = ws.recv();
        if message["type"] == "pong" {
            break;
        }
        transcript.add(&session, &message);
    }
    assert_eq!(
        transcript.text.matches("after-restart").count(),
        2,
        "{:?}",
        transcript.text
    );
}

#[test]
fn a_viewer_that_fell_behind_catches_up_without_waiting_for_new_output() {
    // No ping would come to the rescue: only the viewer's own reading may drive it.
    let daemon = DaemonProcess::start_with("[websocket]\nping_interval = \"1h\"");
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "flood"));
    let mut behind = daemon.ws(&token);
    let mut late = subscribe_with_screen(&mut behind, &session);
    // Another client starts a 3.2 MB flood and reads all of it while `behind` reads nothing.
    let mut driver = daemon.ws(&token);
    let mut seen = subscribe_with_screen(&mut driver, &session);
    driver.send(json!({"type": "terminal_input", "session_id": session, "data": "go\r"}));
    seen.read_until(&mut driver, &session, "\r\nEND\r\n");
    // The pane is quiet now. The late viewer reads and must get to the end on its own.
    late.read_until(&mut behind, &session, "\r\nEND\r\n");
    assert!(between(&late.text, "START\r\n", "END\r\n") == flood_expected(60_000));
}

#[test]
fn a_pipe_closed_under_a_live_pane_is_re_armed() {
    let daemon = DaemonProcess::start_tmux();
    let token = daemon.control();
    let spawned = daemon.spawn(&token, "echo");
    let session = id_of(&spawned);
    let mut ws = daemon.ws(&token);
    let mut transcript = subscribe_with_screen(&mut ws, &session);
    let pane = daemon.get(&format!("/api/agents/{session}"), &token).json()["tmux_pane"]
        .as_str()
        .unwrap()
        .to_string();
    // Someone closes the pane's pipe behind the daemon's back.
    assert!(daemon.tmux(&["pipe-pane", "-t", &pane]).status.success());
    let gap = ws.recv_until("gap", |m| m["type"] == "terminal_gap");
    assert_eq!(gap["reason"], "output pipe closed");
    let detail = daemon.wait_agent(&token, &session, "capture re-armed", |a| {
        a["capture"] == "attached" && a["capture_rearms"] == 1
    });
    assert_eq!(detail["status"], "running");
    // Output and input flow again through the new pipe.
    transcript.next = None;
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "still-here\r"}));
    transcript.read_until_count(&mut ws, &session, "still-here\r\n", 2);
    daemon.wait_for_log("re-arming output capture (output pipe closed)");
}

#[test]
fn a_token_that_expires_while_connected_gets_invalid_token_then_close_1008() {
    let daemon = DaemonProcess::start_with("[auth]\nleeway = \"0s\"");
    let token = sign(
        &json!({"sub": "short-lived", "scope": "observe", "exp": now() + 3}),
        &daemon.secret(),
        jsonwebtoken::Algorithm::HS256,
    );
    let mut ws = daemon.ws(&token);
    ws.send(json!({"type": "ping", "id": 0}));
    let first = ws.recv();
    assert_eq!(first["type"], "pong", "the token is good at first: {first}");
    // The expiry is checked on every message: keep asking until it has passed.
    let mut n = 1;
    let refusal = loop {
        std::thread::sleep(Duration::from_millis(200));
        ws.send(json!({"type": "ping", "id": n}));
        let answer = ws.recv();
        if answer["type"] != "pong" {
            break answer;
        }
        assert_eq!(answer["id"], n);
        n += 1;
    };
    assert_eq!(refusal["type"], "error", "{refusal}");
    assert_eq!(refusal["error_code"], "INVALID_TOKEN", "{refusal}");
    let (after, closed) = ws.wait_closed();
    assert!(after.is_empty(), "nothing after the refusal: {after:?}");
    assert_eq!(closed, Closed::Code(1008));
}

/// Opens a raw TCP connection and writes the upgrade request for `/ws/observe?token=`
/// followed by `extra` in one write.
fn raw_upgrade(daemon: &DaemonProcess, token: &str, extra: &[u8]) -> TcpStream {
    let mut stream = daemon.connect();
    let mut bytes = format!(
        "GET /ws/observe?token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        daemon.addr
    )
    .into_bytes();
    bytes.extend_from_slice(extra);
    stream.write_all(&bytes).unwrap();
    stream
}

/// A masked client text frame.
fn masked_text_frame(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    assert!(payload.len() < 126);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads the response head and then server frames from a raw connection until `stop` accepts
/// a frame or the connection ends. Returns the head, the frames read (the accepted one last)
/// and whether `stop` accepted one.
fn read_frames(
    stream: &mut TcpStream,
    mut stop: impl FnMut(u8, &[u8]) -> bool,
) -> (String, Vec<(u8, Vec<u8>)>, bool) {
    let mut buf = Vec::new();
    let mut head: Option<String> = None;
    let mut frames = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if head.is_none()
            && let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
        {
            head = Some(String::from_utf8_lossy(&buf[..end]).into_owned());
            buf.drain(..end + 4);
        }
        if let Some(head) = &head {
            while let Some((opcode, payload, used)) = parse_server_frame(&buf) {
                buf.drain(..used);
                let done = stop(opcode, &payload);
                frames.push((opcode, payload));
                if done {
                    return (head.clone(), frames, true);
                }
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return (head.unwrap_or_default(), frames, false),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (head.unwrap_or_default(), frames, false);
            }
            // A signal to this process interrupted the read: read again.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed: {e}; frames so far {frames:?}"),
        }
    }
}

/// One unmasked server frame at the start of `buf`: opcode, payload, bytes used.
fn parse_server_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    assert_eq!(buf[1] & 0x80, 0, "server frames are not masked");
    let (len, start) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < start + len {
        return None;
    }
    Some((opcode, buf[start..start + len].to_vec(), start + len))
}

#[test]
fn a_client_that_never_answers_pings_is_closed_with_4000() {
    let daemon = DaemonProcess::start_with(
        "[websocket]\nping_interval = \"300ms\"\npong_timeout = \"300ms\"",
    );
    let mut stream = raw_upgrade(&daemon, &daemon.token("observe"), b"");
    // Read everything, answer nothing.
    let (head, frames, closed) = read_frames(&mut stream, |opcode, _| opcode == 0x8);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let opcodes: Vec<u8> = frames.iter().map(|(op, _)| *op).collect();
    assert!(
        closed,
        "a close frame before the connection ended: {opcodes:?}"
    );
    let ping = opcodes.iter().position(|&op| op == 0x9);
    assert!(ping.is_some(), "pinged first: {opcodes:?}");
    let (_, close) = frames.last().unwrap();
    assert!(close.len() >= 2, "the close frame carries a code");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 4000, "{close:?}");
}

#[test]
fn bytes_sent_with_the_upgrade_request_are_not_lost() {
    let daemon = DaemonProcess::start();
    let frame = masked_text_frame(r#"{"type":"ping","id":"early"}"#);
    let mut stream = raw_upgrade(&daemon, &daemon.token("observe"), &frame);
    let (head, frames, found) = read_frames(&mut stream, |opcode, _| opcode == 0x1);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(found, "no text frame came back: {frames:?}");
    let text = String::from_utf8(frames.last().unwrap().1.clone()).unwrap();
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["type"], "pong", "{text}");
    assert_eq!(answer["id"], "early", "{text}");
}

#[test]
fn input_reaches_a_pane_that_is_in_copy_mode() {
    let daemon = DaemonProcess::start_tmux();
    let token = daemon.control();
    let spawned = daemon.spawn(&token, "echo");
    let session = id_of(&spawned);
    let name = spawned["tmux_session"].as_str().unwrap().to_string();
    wait_until("the greeting", || {
        daemon
            .screen(&name)
            .contains("echo agent ready")
            .then_some(())
    });
    let pane = daemon.get(&format!("/api/agents/{session}"), &token).json()["tmux_pane"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ws = daemon.ws(&token);
    let mut transcript = subscribe_with_screen(&mut ws, &session);
    let copy = daemon.tmux(&["copy-mode", "-t", &pane]);
    assert!(copy.status.success(), "{copy:?}");
    let in_mode = daemon.tmux(&["display-message", "-p", "-t", &pane, "#{pane_in_mode}"]);
    assert_eq!(String::from_utf8_lossy(&in_mode.stdout).trim(), "1");
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "typed in copy mode\r", "id": 1}));
    // Output that arrives before the acknowledgement (the greeting, on a loaded machine)
    // belongs to the transcript, which checks that offsets are contiguous.
    let ack = loop {
        let message = ws.recv();
        if message["type"] == "terminal_input_ack" || message["type"] == "error" {
            break message;
        }
        transcript.add(&session, &message);
    };
    assert_eq!(ack["type"], "terminal_input_ack", "{ack}");
    assert_eq!(ack["id"], 1);
    // Copy mode did not swallow the text: the terminal echoed it and `cat` printed it.
    let cancel = daemon.tmux(&["send-keys", "-X", "-t", &pane, "cancel"]);
    assert!(cancel.status.success(), "{cancel:?}");
    transcript.read_until_count(&mut ws, &session, "typed in copy mode\r\n", 2);
    wait_until("the text on the pane twice", || {
        (daemon.screen(&name).matches("typed in copy mode").count() == 2).then_some(())
    });
}

#[test]
fn an_agent_killed_by_a_signal_is_announced_with_its_signal() {
    let daemon = DaemonProcess::start();
    let mut watcher = daemon.ws(&daemon.token("observe"));
    // `crash` prints a line, then SIGKILLs itself.
    let session = id_of(&daemon.spawn(&daemon.control(), "crash"));
    let (mut status, mut crash) = (None, None);
    while status.is_none() || crash.is_none() {
        let message = watcher.recv();
        if message["session_id"] != session.as_str() {
            continue;
        }
        if message["type"] == "agent_status" && message["status"] == "error" {
            status = Some(message);
        } else if message["type"] == "error" {
            crash = Some(message);
        }
    }
    let (status, crash) = (status.unwrap(), crash.unwrap());
    assert_eq!(status["exit_signal"], 9, "{status}");
    assert!(status["exit_code"].is_null(), "{status}");
    assert_eq!(crash["error_code"], "AGENT_CRASHED", "{crash}");
    assert_eq!(crash["exit_signal"], 9, "{crash}");
    assert!(crash["exit_code"].is_null(), "{crash}");
    let lines = crash["last_lines"].as_array().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.as_str().unwrap().contains("about to crash")),
        "{crash}"
    );
}

#[test]
fn tmux_and_shell_syntax_in_typed_text_reaches_the_pane_as_inert_text() {
    let daemon = DaemonProcess::start_tmux();
    let token = daemon.control();
    let spawned = daemon.spawn(&token, "echo");
    let session = id_of(&spawned);
    let marker = daemon.dir.path().join("pwned");
    let mut ws = daemon.ws(&token);
    let mut transcript = subscribe_with_screen(&mut ws, &session);
    // Type only once the agent reads its input (text typed earlier is echoed by the terminal
    // before the greeting, and the comparison below would not find it).
    while !(transcript.screens[0].contains("echo agent ready")
        || transcript.text.contains("echo agent ready"))
    {
        let message = ws.recv();
        transcript.add(&session, &message);
    }
    // Each piece would do something if tmux or a shell interpreted it: end the tmux command
    // and start another, run a command through format expansion, expand a format, end a
    // bracketed paste early, interrupt the program.
    let content = format!(
        "a ; kill-server ; #(touch {}) #{{pane_id}} \u{1b}[201~ \u{3} end-of-text",
        marker.display()
    );
    ws.send(json!({"type": "user_message", "session_id": session, "content": content, "id": "m"}));
    // The echo agent (cat) prints the line back: the text arrived literally, minus the
    // control characters (ESC and ^C are dropped, so the paste cannot be ended early).
    let literal = format!(
        "a ; kill-server ; #(touch {}) #{{pane_id}} [201~  end-of-text\r\n",
        marker.display()
    );
    let mut ack = None;
    let deadline = std::time::Instant::now() + crate::common::PATIENCE;
    while ack.is_none() || transcript.text.matches(&literal).count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the text did not come back twice; ack {ack:?}, output {:?}",
            transcript.text
        );
        let message = ws.recv();
        if message["type"] == "user_message_ack" || message["type"] == "error" {
            ack = Some(message.clone());
        }
        transcript.add(&session, &message);
    }
    let ack = ack.unwrap();
    assert_eq!(ack["type"], "user_message_ack", "{ack}");
    assert!(!marker.exists(), "a shell command ran");
    // The tmux server and the agent are alive and still served.
    let detail = daemon.get(&format!("/api/agents/{session}"), &token).json();
    assert_eq!(detail["status"], "running", "{detail}");
    let out = daemon.tmux(&[
        "has-session",
        "-t",
        &format!("={}", spawned["tmux_session"].as_str().unwrap()),
    ]);
    assert!(out.status.success(), "the tmux session is gone");
}

/// Clears `transcript`'s text, starts one flood of `lines` lines by typing a line on `ws` and
/// reads it to its END marker, asserting every byte arrived as the agent printed it.
fn flood_once(ws: &mut Ws, transcript: &mut Transcript, session: &str, lines: usize) {
    transcript.text.clear();
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "go\r"}));
    transcript.read_until(ws, session, "\r\nEND\r\n");
    let body = between(&transcript.text, "START\r\n", "END\r\n");
    assert_eq!(body.len(), flood_expected(lines).len());
    assert!(
        body == flood_expected(lines),
        "the reading viewer got every byte of the flood"
    );
}

#[test]
fn a_viewer_that_keeps_falling_out_of_the_backlog_is_closed_with_4001() {
    // Small queues, so a viewer that stops reading holds only a few KiB, and a 1 MiB backlog
    // (with no more shared frames, which also serve viewers behind) and floods of about
    // 750 KB: a viewer that keeps up never leaves the backlog, one that stalls through two
    // floods does. One resync a minute is tolerated, the second is not. (`write_timeout`: the
    // stalled viewer must outlive four floods on a loaded machine.)
    let daemon = DaemonProcess::start_with(
        "[websocket]\nmax_resyncs_per_minute = 1\nsend_window_bytes = 4096\n\
         socket_send_buffer = 4096\n[panes]\nbacklog_bytes = 1048576\n\
         live_frame_bytes = 262144\n[limits]\nwrite_timeout = \"10m\"",
    );
    let token = daemon.control();
    let lines = 15_000;
    let resp = daemon.post(
        "/api/agents/spawn",
        &token,
        &json!({"agent_type": "flood", "working_dir": daemon.work, "env": {"FLOOD_LINES": lines.to_string()}}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let session = id_of(&resp.json());
    let mut stalled = ws_with_small_receive_buffer(&daemon, &token);
    assert_eq!(stalled.subscribe(&session)["type"], "subscribed");
    let mut fast = daemon.ws(&token);
    let mut transcript = subscribe_with_screen(&mut fast, &session);

    // First stall: the viewer falls out of the backlog once, and when it reads again it is
    // told so and resynced with a fresh screen, still connected.
    flood_once(&mut fast, &mut transcript, &session, lines);
    flood_once(&mut fast, &mut transcript, &session, lines);
    let gap = stalled.recv_until("the first resync", |m| m["type"] == "terminal_gap");
    assert_eq!(gap["reason"], "viewer fell behind the backlog", "{gap}");
    // Delivery resumes at a screen inside the backlog, past what the viewer had: how far
    // past depends on where the emulator's screen was when it was asked (it may lag a flood).
    assert!(
        gap["offset"].as_u64().unwrap() > gap["since"].as_u64().unwrap(),
        "{gap}"
    );
    stalled.recv_until("the fresh screen", |m| {
        m["type"] == "terminal_output" && m["snapshot"] == true
    });
    stalled.send(json!({"type": "ping", "id": "still-open"}));
    stalled.recv_until("pong", |m| m["type"] == "pong" && m["id"] == "still-open");

    // Second stall within the minute: reading again gets the viewer closed as too slow
    // (after whatever was already queued for it).
    flood_once(&mut fast, &mut transcript, &session, lines);
    flood_once(&mut fast, &mut transcript, &session, lines);
    let (_, closed) = stalled.wait_closed();
    assert_eq!(
        closed,
        Closed::Code(4001),
        "{:?}",
        daemon
            .log
            .lock()
            .unwrap()
            .lines()
            .filter(|l| l.contains("4001") || l.contains("closing") || l.contains("WebSocket"))
            .collect::<Vec<_>>()
    );
    daemon.wait_for_log("could not keep up; closing with 4001");

    // The reader was never resynced, and the agent and the daemon carry on.
    assert!(transcript.gaps.is_empty(), "{:?}", transcript.gaps);
    flood_once(&mut fast, &mut transcript, &session, lines);
    assert!(transcript.gaps.is_empty(), "{:?}", transcript.gaps);
}

#[test]
fn a_pipe_that_goes_silent_under_a_live_pane_is_re_armed_by_the_health_check() {
    // The tmux stand-in gives the next pane a pipe that stays open but delivers nothing, as
    // a wedged pipe would; only the health check, comparing tmux's activity with what the
    // pipe delivered, can notice.
    let daemon = DaemonProcess::start_tmux_with(&format!(
        "[panes]\nhealth_interval = \"500ms\"\n[tmux]\nbinary = \"{}\"",
        crate::common::agent_script("tmux-silence-pipe.sh")
    ));
    let token = daemon.control();
    let flag = daemon.state.join("silence-next-pipe");
    std::fs::write(&flag, b"").unwrap();
    let spawned = daemon.spawn(&token, "echo");
    let session = id_of(&spawned);
    let name = spawned["tmux_session"].as_str().unwrap().to_string();
    assert!(!flag.exists(), "the new pane got the silent pipe");
    let detail = daemon.wait_agent(&token, &session, "capture attached", |a| {
        a["capture"] == "attached"
    });
    assert_eq!(detail["capture_rearms"], 0, "{detail}");
    let pane = detail["tmux_pane"].as_str().unwrap().to_string();
    wait_until("the greeting on the pane", || {
        daemon
            .screen(&name)
            .contains("echo agent ready")
            .then_some(())
    });
    // The daemon saw none of it.
    let mut early = daemon.ws(&token);
    let before = subscribe_with_screen(&mut early, &session);
    assert!(
        !before.screens[0].contains("echo agent ready"),
        "{:?}",
        before.screens[0]
    );

    // Keep the pane busy behind the daemon's back until the health check notices (tmux
    // counts activity in whole seconds, so this takes a few of them).
    let mut typed: Option<std::time::Instant> = None;
    let detail = wait_until("the health check to re-arm the pipe", || {
        if typed.is_none_or(|t| t.elapsed() >= Duration::from_millis(250)) {
            let out = daemon.tmux(&["send-keys", "-t", &pane, "after", "Enter"]);
            assert!(out.status.success(), "{out:?}");
            typed = Some(std::time::Instant::now());
        }
        let detail = daemon.get(&format!("/api/agents/{session}"), &token).json();
        (detail["capture_rearms"].as_u64().unwrap_or(0) >= 1).then_some(detail)
    });
    assert_eq!(detail["status"], "running", "{detail}");
    daemon.wait_for_log("output pipe stopped delivering while the pane is alive");
    // The viewer that watched the silence is told about the discontinuity and gets a screen
    // that shows what it missed.
    let gap = early.recv_until("gap", |m| m["type"] == "terminal_gap");
    assert_eq!(gap["reason"], "output pipe stopped delivering", "{gap}");
    let screen = early.recv_until("the fresh screen", |m| {
        m["type"] == "terminal_output" && m["snapshot"] == true
    });
    assert!(
        screen["data"].as_str().unwrap().contains("after"),
        "{screen}"
    );
    let detail = daemon.wait_agent(&token, &session, "capture attached again", |a| {
        a["capture"] == "attached"
    });
    assert_eq!(detail["capture_rearms"], 1, "{detail}");
    // A viewer subscribing now gets that screen, and input and output flow through the new
    // pipe.
    let mut ws = daemon.ws(&token);
    let mut transcript = subscribe_with_screen(&mut ws, &session);
    assert!(
        transcript.screens[0].contains("after"),
        "{:?}",
        transcript.screens[0]
    );
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "flowing\r"}));
    transcript.read_until_count(&mut ws, &session, "flowing\r\n", 2);
}

#[test]
fn a_fresh_subscriber_gets_colours_cursor_and_modes_on_its_screen() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let spawned = daemon.spawn(&token, "styled");
    let session = id_of(&spawned);
    let name = spawned["tmux_session"].as_str().unwrap().to_string();
    wait_until("ready on the pane", || {
        daemon.screen(&name).contains("ready").then_some(())
    });
    // A screen is the daemon's terminal state at the offset it had processed, which may
    // trail what tmux shows by a moment: subscribe until a screen includes everything.
    let screen = wait_until("a screen showing ready", || {
        let mut ws = daemon.ws(&token);
        ws.subscribe(&session);
        let screen = ws.recv_until("the screen", |m| {
            m["type"] == "terminal_output" && m["snapshot"] == true
        });
        screen["data"]
            .as_str()
            .unwrap()
            .contains("ready")
            .then_some(screen)
    });
    let data = screen["data"].as_str().unwrap();
    assert!(data.starts_with("\u{1b}c"), "{data:?}");
    // What vt100 emits: the colour as its own SGR before the text, the cursor move that
    // placed `ready` (the cursor stayed right after it), and the input modes.
    assert!(data.contains("\u{1b}[31mRED"), "red: {data:?}");
    let placed = data
        .split_once("\u{1b}[5;10H")
        .unwrap_or_else(|| panic!("position: {data:?}"))
        .1;
    assert!(
        placed.trim_start_matches("\u{1b}[m").starts_with("ready"),
        "ready right after the move: {data:?}"
    );
    assert!(data.contains("\u{1b}[?2004h"), "bracketed paste: {data:?}");
    assert!(data.contains("\u{1b}[?1000h"), "mouse reporting: {data:?}");
    // And replayed on a fresh terminal of the pane's size, it is the agent's screen.
    let size = |key: &str| {
        std::num::NonZeroU16::new(screen[key].as_u64().unwrap() as u16).expect("non-zero size")
    };
    let mut terminal = vt100::Parser::new(size("rows"), size("cols"), 0);
    terminal.process(data.as_bytes());
    let replayed = terminal.screen();
    assert_eq!(replayed.cell(0, 0).unwrap().fgcolor(), vt100::Color::Idx(1));
    assert_eq!(replayed.cell(0, 0).unwrap().contents(), "R");
    assert_eq!(replayed.cell(4, 9).unwrap().contents(), "r");
    assert_eq!(
        replayed.cell(4, 9).unwrap().fgcolor(),
        vt100::Color::Default
    );
    assert_eq!(replayed.cursor_position(), (4, 14));
    assert!(replayed.bracketed_paste());
    assert_eq!(
        replayed.mouse_protocol_mode(),
        vt100::MouseProtocolMode::PressRelease
    );
}

#[test]
fn resize_terminal_reaches_the_pane_and_the_screens_that_follow() {
    let daemon = DaemonProcess::start_tmux();
    let token = daemon.control();
    let spawned = daemon.spawn(&token, "echo");
    let session = id_of(&spawned);
    let name = spawned["tmux_session"].as_str().unwrap().to_string();
    let mut ws = daemon.ws(&token);
    ws.send(json!({"type": "resize_terminal", "session_id": session, "rows": 30, "cols": 100}));
    let ack = ws.recv_until("ack", |m| {
        m["type"] == "resize_terminal_ack" || m["type"] == "error"
    });
    assert_eq!(ack["type"], "resize_terminal_ack", "{ack}");
    assert_eq!(
        (ack["rows"].as_u64(), ack["cols"].as_u64()),
        (Some(30), Some(100))
    );
    let size = daemon.tmux(&[
        "display-message",
        "-p",
        "-t",
        &format!("={name}:"),
        "#{pane_width}x#{pane_height}",
    ]);
    assert_eq!(String::from_utf8_lossy(&size.stdout).trim(), "100x30");
    // A new viewer's screen has the new size.
    let mut viewer = daemon.ws(&daemon.token("observe"));
    assert_eq!(viewer.subscribe(&session)["type"], "subscribed");
    let screen = viewer.recv_until("screen", |m| m["snapshot"] == true);
    assert_eq!(
        (screen["rows"].as_u64(), screen["cols"].as_u64()),
        (Some(30), Some(100))
    );
    // Observers cannot resize; sizes past the limits and unknown sessions are refused.
    viewer.send(json!({"type": "resize_terminal", "session_id": session, "rows": 40, "cols": 120}));
    assert_eq!(
        viewer.recv_until("error", |m| m["type"] == "error")["error_code"],
        "FORBIDDEN"
    );
    for (rows, cols) in [(1, 80), (24, 5000)] {
        ws.send(
            json!({"type": "resize_terminal", "session_id": session, "rows": rows, "cols": cols}),
        );
        let error = ws.recv_until("error", |m| m["type"] == "error");
        assert_eq!(error["error_code"], "INVALID_REQUEST", "{error}");
    }
    ws.send(json!({"type": "resize_terminal", "session_id": "sess-echo-00000000", "rows": 24, "cols": 80}));
    let error = ws.recv_until("error", |m| m["type"] == "error");
    assert_eq!(error["error_code"], "SESSION_NOT_FOUND", "{error}");
}
