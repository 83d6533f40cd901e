//! The HTTP server itself: framing, keep-alive, pipelining, limits and their statuses.

use std::io::{Read, Write};

use serde_json::json;

use crate::common::{DaemonProcess, parse_responses, read_to_close};

#[test]
fn unknown_paths_and_wrong_methods() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    daemon
        .get("/api/nope", &token)
        .assert_error(404, "NOT_FOUND");
    daemon.get("/nope", &token).assert_error(404, "NOT_FOUND");
    daemon.get("/api", &token).assert_error(404, "NOT_FOUND");
    let resp = daemon.request("PUT", "/api/agents", Some(&token), None);
    resp.assert_error(405, "METHOD_NOT_ALLOWED");
    assert_eq!(resp.header("allow"), Some("GET"));
    let resp = daemon.get("/api/agents/spawn", &token);
    resp.assert_error(405, "METHOD_NOT_ALLOWED");
    assert_eq!(resp.header("allow"), Some("POST"));
    let resp = daemon.request("POST", "/api/agents/sess-x-00000000", Some(&token), None);
    assert_eq!(resp.header("allow"), Some("GET, DELETE"));
    assert_eq!(resp.header("content-type"), Some("application/json"));
}

#[test]
fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let spawn_body = json!({"agent_type": "echo", "working_dir": daemon.work}).to_string();
    // Health (immediate), spawn (answered by a worker later), an error, list, then close.
    let requests = format!(
        "GET /api/health HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n\
         POST /api/agents/spawn HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\n\r\n{spawn_body}\
         GET /api/missing HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n\
         GET /api/agents HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
        spawn_body.len()
    );
    let raw = daemon.raw(requests.as_bytes());
    let responses = parse_responses(&raw);
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 201, 404, 200]);
    assert_eq!(responses[0].header("connection"), Some("keep-alive"));
    assert_eq!(responses[3].header("connection"), Some("close"));
    let spawned = responses[1].json();
    let listed = responses[3].json();
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["agents"][0]["session_id"], spawned["session_id"]);
}

#[test]
fn size_limits_have_their_statuses() {
    let daemon = DaemonProcess::start_with(
        "[limits]\nmax_body_bytes = 1000\nmax_head_bytes = 2000\nmax_uri_bytes = 500\nmax_headers = 20",
    );
    let token = daemon.control();
    let big = json!({"agent_type": "echo", "working_dir": "x".repeat(2000)});
    daemon
        .post("/api/agents/spawn", &token, &big)
        .assert_error(413, "PAYLOAD_TOO_LARGE");
    let long_header = format!(
        "GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(3000)
    );
    let resp = &parse_responses(&daemon.raw(long_header.as_bytes()))[0];
    resp.assert_error(431, "HEADERS_TOO_LARGE");
    let many = format!(
        "GET /api/health HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
        "X-A: b\r\n".repeat(30)
    );
    parse_responses(&daemon.raw(many.as_bytes()))[0].assert_error(431, "HEADERS_TOO_LARGE");
    let long_uri = format!(
        "GET /api/{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(900)
    );
    parse_responses(&daemon.raw(long_uri.as_bytes()))[0].assert_error(414, "URI_TOO_LONG");
}

#[test]
fn malformed_requests_get_400_and_the_connection_closes() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    // The pipelined request after the broken one must never be processed.
    let raw = daemon.raw(
        format!(
            "GET /api/health HTTP/1.1\r\nContent-Length: x\r\nHost: localhost\r\n\r\n\
             POST /api/agents/spawn HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 2\r\n\r\n{{}}"
        )
        .as_bytes(),
    );
    let responses = parse_responses(&raw);
    assert_eq!(responses.len(), 1);
    responses[0].assert_error(400, "INVALID_REQUEST");
    assert_eq!(responses[0].header("connection"), Some("close"));
    for bad in [
        &b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"[..],
        b"GET /api/health HTTP/1.1\r\n\r\n",
        b"GET /api/health HTTP/3.0\r\nHost: localhost\r\n\r\n",
        b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let responses = parse_responses(&daemon.raw(bad));
        assert_eq!(responses.len(), 1, "{:?}", String::from_utf8_lossy(bad));
        assert!(
            [400, 501, 505].contains(&responses[0].status),
            "{:?}",
            responses[0]
        );
    }
}

#[test]
fn json_bodies_are_validated() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let post_raw = |body: &str| {
        let req = format!(
            "POST /api/agents/spawn HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        parse_responses(&daemon.raw(req.as_bytes())).remove(0)
    };
    for body in [
        "",
        "{",
        "[]",
        "{\"agent_type\": 5}",
        "{\"working_dir\": \"/\"}",
        "{\"agent_type\":\"echo\",\"wrkdir\":\"/\"}",
        "{\"agent_type\":\"echo\",\"env\":{\"A\":1}}",
    ] {
        let resp = post_raw(body);
        assert_eq!(resp.status, 400, "{body}: {}", resp.text());
        resp.assert_error(400, "INVALID_REQUEST");
    }
}

#[test]
fn slow_request_heads_time_out_with_408_while_others_are_served() {
    let daemon = DaemonProcess::start_with("[limits]\nhead_timeout = \"300ms\"");
    let token = daemon.control();
    let mut slow = daemon.connect();
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    // Meanwhile a normal client is served.
    assert_eq!(daemon.get("/api/health", &token).status, 200);
    let raw = read_to_close(&mut slow);
    parse_responses(&raw)[0].assert_error(408, "REQUEST_TIMEOUT");
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let daemon = DaemonProcess::start_with("[limits]\nidle_timeout = \"200ms\"");
    let token = daemon.control();
    let mut conn = daemon.connect();
    conn.write_all(
        format!(
            "GET /api/health HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    // The response arrives, then the daemon closes the idle connection (EOF, no error).
    let raw = read_to_close(&mut conn);
    let responses = parse_responses(&raw);
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].status, 200);
}

#[test]
fn connections_past_the_limit_get_503() {
    let daemon = DaemonProcess::start_with("[limits]\nmax_connections = 2");
    let token = daemon.control();
    let mut held: Vec<std::net::TcpStream> = Vec::new();
    for _ in 0..2 {
        let mut conn = daemon.connect();
        // Prove each connection is admitted before opening the next.
        conn.write_all(
            format!("GET /api/health HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut buf = [0u8; 12];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(conn);
    }
    let raw = daemon.raw(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n\r\n");
    parse_responses(&raw)[0].assert_error(503, "OVERLOADED");
    drop(held);
    // Once they are gone, new connections are served again.
    let resp = crate::common::wait_until("a free connection slot", || {
        let resp = daemon.get("/api/health", &token);
        (resp.status == 200).then_some(resp)
    });
    assert_eq!(resp.json()["status"], "healthy");
}

#[test]
fn health_reports_version_and_uptime() {
    let daemon = DaemonProcess::start();
    let resp = daemon.get("/api/health", &daemon.token("observe"));
    assert_eq!(resp.status, 200);
    let body = resp.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_seconds"].is_u64());
}

#[test]
fn sigterm_exits_zero_and_leaves_agents_running() {
    let mut daemon = DaemonProcess::start();
    let token = daemon.control();
    let spawned = daemon.spawn(&token, "echo");
    let status = daemon.stop();
    assert!(status.success(), "exit status {status:?}");
    let name = spawned["tmux_session"].as_str().unwrap();
    let out = daemon.tmux(&["has-session", "-t", &format!("={name}")]);
    assert!(
        out.status.success(),
        "the agent's session survives the daemon"
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_first() {
    let mut daemon = DaemonProcess::start_with("[sessions]\nkill_grace = \"1s\"");
    let token = daemon.control();
    let id = daemon.spawn(&token, "stubborn")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::scope(|scope| {
        let delete = scope.spawn(|| daemon.delete(&format!("/api/agents/{id}"), &token));
        // The kill job is running (the agent ignores SIGTERM, so it waits for the grace).
        daemon.wait_for_log("terminating");
        crate::common::signal(daemon.pid(), "TERM");
        let resp = delete.join().unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json()["status"], "terminated");
    });
    assert!(daemon.stop().success());
}
