//! What one session can make the daemon hold: its conversation history is bounded in bytes
//! (and read in pages), and its hook connections and waiting permission requests have quotas
//! of their own, so another session's hooks are still heard.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::common::{DaemonProcess, PATIENCE, id_of};
use crate::hooks::{hook_env, run_hook};

/// A daemon whose `hooked` agent type is the echo stand-in launched like a CLI with hooks,
/// with `extra` TOML (sections other than `[agents.hooked]`).
fn daemon(extra: &str) -> DaemonProcess {
    DaemonProcess::start_with(&format!(
        "{extra}\n[agents.hooked]\ncommand = [\"{}\"]\nhooks = \"claude\"\n",
        crate::common::agent_script("echo.sh")
    ))
}

fn var(env: &[(String, String)], name: &str) -> String {
    env.iter().find(|(k, _)| k == name).unwrap().1.clone()
}

/// A hooked session's hook socket and credential.
fn hook_of(daemon: &DaemonProcess, token: &str, session: &str) -> (PathBuf, String) {
    let env = hook_env(daemon, token, session);
    (
        PathBuf::from(var(&env, "ORCHESTRA_HOOK_SOCKET")),
        var(&env, "ORCHESTRA_HOOK_TOKEN"),
    )
}

/// A message as `orchestra hook` sends it: the credential first.
fn message(credential: &str, event: &str, payload: &Value) -> Vec<u8> {
    let mut bytes =
        format!(r#"{{"token":"{credential}","event":"{event}","payload":"#).into_bytes();
    bytes.extend_from_slice(payload.to_string().as_bytes());
    bytes.push(b'}');
    bytes
}

/// Sends a complete message on a fresh connection (the answer is read later, or never).
fn send(socket: &PathBuf, bytes: &[u8]) -> UnixStream {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(bytes).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    stream
}

/// Everything the daemon answers before it closes.
fn answer(stream: &mut UnixStream) -> String {
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("the daemon answers and closes");
    answer
}

/// The daemon's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

const MIB: u64 = 1 << 20;
const MARKER: &str = "[orchestra: message cut;";

#[test]
fn a_session_of_huge_replies_keeps_a_bounded_history_read_in_bounded_pages() {
    // The defaults: 256 KiB per message, 16 MiB per session, pages of at most 4 MiB.
    let daemon = daemon("");
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "hooked"));
    let (socket, credential) = hook_of(&daemon, &token, &session);
    let before = rss(daemon.pid());

    // 150 turns that each end with a reply of 1 MB (JSON written by hand: serde_json takes
    // half a second for each in a debug build).
    let xs = "x".repeat(1_000_000);
    for i in 0..150 {
        let bytes = format!(
            r#"{{"token":"{credential}","event":"Stop","payload":{{"last_assistant_message":"reply {i:03} {xs}","stop_hook_active":false}}}}"#
        );
        let answer = answer(&mut send(&socket, bytes.as_bytes()));
        assert_eq!(answer.trim(), "{}", "turn {i}");
    }
    let grown = rss(daemon.pid()).saturating_sub(before);
    assert!(grown <= 64 * MIB, "the daemon grew by {} MiB", grown / MIB);

    // Walk every page, newest first, with and without a limit.
    let walk = |limit: Option<u64>| -> Vec<Value> {
        let mut kept: Vec<Value> = Vec::new();
        let mut before: Option<u64> = None;
        for _ in 0..1000 {
            let mut query = Vec::new();
            if let Some(limit) = limit {
                query.push(format!("limit={limit}"));
            }
            if let Some(before) = before {
                query.push(format!("before={before}"));
            }
            let path = format!("/api/agents/{session}/messages?{}", query.join("&"));
            let page = daemon.get(&path, &token);
            assert_eq!(page.status, 200, "{}", page.text());
            assert!(
                page.body.len() as u64 <= 4 * MIB,
                "a page of {} bytes",
                page.body.len()
            );
            let page = page.json();
            let messages = page["messages"].as_array().unwrap();
            assert_eq!(page["total"], messages.len());
            assert!(!messages.is_empty(), "{page}");
            if let Some(limit) = limit {
                assert!(messages.len() as u64 <= limit);
            }
            let mut older = messages.clone();
            older.extend(kept);
            kept = older;
            match page["next_before"].as_u64() {
                Some(next) => {
                    assert_eq!(next, messages[0]["seq"].as_u64().unwrap());
                    before = Some(next);
                }
                None => {
                    assert!(page["next_before"].is_null(), "{page}");
                    return kept;
                }
            }
        }
        panic!("paging never ended");
    };
    let kept = walk(None);
    let seqs: Vec<u64> = kept.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(*seqs.last().unwrap(), 150, "the newest is kept");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous, oldest first: {seqs:?}"
    );
    assert!(seqs.len() > 1 && seqs.len() < 150, "{}", seqs.len());
    let mut bytes = 0;
    for m in &kept {
        let content = m["content"].as_str().unwrap();
        assert!(content.len() <= 256 * 1024, "{}", content.len());
        assert!(content.contains(MARKER), "cut with a marker");
        assert!(
            content
                .ends_with("it had 1000010 bytes, sessions.max_history_message_bytes is 262144]")
        );
        let seq = m["seq"].as_u64().unwrap();
        assert!(content.starts_with(&format!("reply {:03} xxx", seq - 1)));
        bytes += content.len() as u64;
    }
    assert!(bytes <= 16 * MIB, "{bytes} bytes kept");
    let limited = walk(Some(7));
    assert_eq!(limited, kept, "pages of 7 walk the same messages");
    let grown = rss(daemon.pid()).saturating_sub(before);
    assert!(grown <= 64 * MIB, "the daemon grew by {} MiB", grown / MIB);

    // Bad paging parameters are refused.
    for query in ["limit=0", "before=x", "limit=-1"] {
        daemon
            .get(&format!("/api/agents/{session}/messages?{query}"), &token)
            .assert_error(400, "INVALID_REQUEST");
    }
}

#[test]
fn one_session_cannot_take_every_hook_connection() {
    // Generous timeouts: nothing here waits for them.
    let daemon = daemon("[hooks]\nidle_timeout = \"1h\"\nreceive_timeout = \"1h\"\n");
    let token = daemon.control();
    let first = id_of(&daemon.spawn(&token, "hooked"));
    let second = id_of(&daemon.spawn(&token, "hooked"));
    let (socket, attacker) = hook_of(&daemon, &token, &first);
    let second_env = hook_env(&daemon, &token, &second);

    // 70 connections that send nothing (no credential: any local process of the user could
    // open them), then 70 with the first session's credential that never finish a message.
    let silent: Vec<UnixStream> = (0..70)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    let start = message(&attacker, "Stop", &json!({}));
    let unfinished: Vec<UnixStream> = (0..70)
        .map(|_| {
            let mut stream = UnixStream::connect(&socket).unwrap();
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            // All but its end: the credential has arrived.
            stream.write_all(&start[..start.len() - 3]).unwrap();
            stream
        })
        .collect();

    // The second session's tool call and its real hook are still served.
    let call = format!(
        r#"{{"token":"{}","call":"list_agents","arguments":{{}}}}"#,
        var(&second_env, "ORCHESTRA_HOOK_TOKEN")
    );
    let listed = answer(&mut send(&socket, call.as_bytes()));
    let listed: Value = serde_json::from_str(&listed).unwrap_or_else(|_| panic!("{listed:?}"));
    assert_eq!(listed["ok"], true, "{listed}");
    let mut ws = daemon.ws(&daemon.token("observe"));
    let out = run_hook(
        &second_env,
        "Stop",
        &json!({"last_assistant_message": "heard", "stop_hook_active": false}),
    );
    assert!(out.status.success());
    let reply = ws.recv_until("the reply", |m| m["type"] == "claude_response");
    assert_eq!(reply["session_id"], second.as_str());
    assert_eq!(reply["content"], "heard");

    // The first session got its quota (8); each of its connections past it was refused
    // with an answer that says so. The kept ones end when their message does.
    let (mut refused, mut kept) = (0, 0);
    for mut stream in unfinished {
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let answer = answer(&mut stream);
        if answer.contains("hooks.max_connections_per_session") {
            let answer: Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(answer["ok"], false, "{answer}");
            refused += 1;
        } else {
            assert_eq!(answer.trim(), "{}", "{answer:?}");
            kept += 1;
        }
    }
    assert_eq!((kept, refused), (8, 62));
    drop(silent);
    assert_eq!(daemon.get("/api/health", &token).status, 200);
}

#[test]
fn one_session_cannot_take_every_approval_slot_and_idle_hooks_are_closed() {
    let daemon = daemon(
        "[hooks]\nidle_timeout = \"200ms\"\nreceive_timeout = \"1h\"\napproval_timeout = \"1h\"\n",
    );
    let token = daemon.control();
    let first = id_of(&daemon.spawn(&token, "hooked"));
    let second = id_of(&daemon.spawn(&token, "hooked"));
    let (socket, attacker) = hook_of(&daemon, &token, &first);
    let first_env = hook_env(&daemon, &token, &first);
    let (_, legitimate) = hook_of(&daemon, &token, &second);
    let mut ws = daemon.ws(&token);
    let permission = json!({"tool_name": "Bash", "tool_input": {"command": "true"}});
    let asked_by = |ws: &mut crate::common::Ws, session: &str| -> String {
        let asked = ws.recv_until("approve_tool", |m| {
            m["type"] == "claude_response"
                && m["session_id"] == session
                && m["actions"][0]["type"] == "approve_tool"
        });
        asked["actions"][0]["request_id"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // The first session holds 16 permission requests (its quota); the rest of 64 (all
    // slots) are refused at once.
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(send(
            &socket,
            &message(&attacker, "PermissionRequest", &permission),
        ));
        asked_by(&mut ws, &first);
    }
    for i in 16..64 {
        let mut stream = send(
            &socket,
            &message(&attacker, "PermissionRequest", &permission),
        );
        let answer = answer(&mut stream);
        let answer: Value = serde_json::from_str(&answer).unwrap_or_else(|_| panic!("{answer:?}"));
        assert_eq!(answer["ok"], false, "request {i}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("hooks.max_pending_approvals_per_session"),
            "{answer}"
        );
    }
    // The real hook client passes a refusal on as no decision (the CLI asks in its terminal).
    let out = run_hook(&first_env, "PermissionRequest", &permission);
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{out:?}"
    );

    // The second session's request is held and answered.
    let mut asking = send(
        &socket,
        &message(&legitimate, "PermissionRequest", &permission),
    );
    let request_id = asked_by(&mut ws, &second);
    ws.send(json!({"type": "approve_tool", "session_id": second, "request_id": request_id, "decision": "allow"}));
    let decision: Value = serde_json::from_str(&answer(&mut asking)).unwrap();
    assert_eq!(
        decision["hookSpecificOutput"]["decision"]["behavior"],
        "allow"
    );

    // A connection that goes silent before its message is complete is closed after
    // hooks.idle_timeout (receive_timeout is an hour), with or without a credential.
    let unfinished = message(&attacker, "Stop", &json!({}));
    for start in [
        &b""[..],
        &unfinished[..20],
        &unfinished[..unfinished.len() - 3],
    ] {
        let mut silent = UnixStream::connect(&socket).unwrap();
        silent.set_read_timeout(Some(PATIENCE)).unwrap();
        silent.write_all(start).unwrap();
        let mut rest = Vec::new();
        assert_eq!(
            silent.read_to_end(&mut rest).expect("closed by the daemon"),
            0
        );
    }
    drop(held);
}

/// A daemon (with `hooks`, a `[hooks]` section's lines) whose hooked session has asked, by a
/// tool call sent whole, for a task of 900 KB: far more than a Unix socket's buffer (about
/// 200 KiB). Returns the daemon, its control token, the call's connection (nothing read yet)
/// and the task's text.
fn big_answer_waiting(hooks: &str) -> (DaemonProcess, String, UnixStream, String) {
    let daemon = daemon(&format!(
        "[limits]\nmax_body_bytes = 4194304\n[tasks]\nmax_task_bytes = 2097152\n\
         [hooks]\n{hooks}\n"
    ));
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "hooked"));
    let (socket, credential) = hook_of(&daemon, &token, &session);
    let task = format!(": {}", "a".repeat(900_000));
    let resp = daemon.post(
        "/api/delegate",
        &token,
        &json!({"agent_type": "shell", "task": task, "working_dir": daemon.work}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let task_id = resp.json()["task_id"].as_u64().unwrap();
    let call = json!({"token": credential, "call": "get_task", "arguments": {"task_id": task_id}});
    let stream = send(&socket, call.to_string().as_bytes());
    (daemon, token, stream, task)
}

#[test]
fn a_tool_answer_larger_than_the_socket_buffer_arrives_whole() {
    // The answer is written as its reader takes it (it used to be cut where the socket's
    // buffer ended). Nothing is read until the daemon has answered a request sent after the
    // call (calls are answered in the loop step that reads them), so the daemon's first
    // write fills the socket and the rest must wait for the reader.
    let (daemon, token, mut stream, task) = big_answer_waiting("");
    assert_eq!(daemon.get("/api/health", &token).status, 200);
    let answer = answer(&mut stream);
    let answer: Value = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("a whole JSON answer of {} bytes: {e}", answer.len()));
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["result"]["task"], task.as_str());
}

#[test]
fn an_answer_its_reader_does_not_take_is_closed_after_the_answer_timeout() {
    // Nothing is read until the daemon has given up on the answer.
    let (daemon, token, mut stream, task) = big_answer_waiting("answer_timeout = \"300ms\"");
    let abandoned = |daemon: &DaemonProcess| {
        let metrics = daemon.get("/metrics", &token).text();
        metrics.contains("\norchestra_answers_abandoned_total 1\n")
    };
    crate::common::wait_until("the answer is abandoned", || {
        abandoned(&daemon).then_some(())
    });
    let mut cut = Vec::new();
    stream
        .read_to_end(&mut cut)
        .expect("the daemon closed the answer");
    assert!(
        !cut.is_empty() && cut.len() < task.len(),
        "a partial answer, then the end: {} bytes",
        cut.len()
    );
    // The daemon goes on serving hooks and the API.
    assert_eq!(daemon.get("/api/health", &token).status, 200);
}
