//! Hostile clients and faults: request smuggling, malformed heads, DNS rebinding, slowloris,
//! huge and deeply nested bodies, descriptor exhaustion, malformed WebSocket frames, and the
//! private tmux server dying. Every refusal is an answer (never a hang), the connection closes
//! after it, nothing smuggled behind it runs, and the daemon keeps serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::common::{
    Closed, DaemonProcess, Resp, id_of, parse_responses, process_alive, read_to_close, wait_until,
};

/// Writes `bytes` on a fresh connection and returns every response until the daemon closes it.
fn answers(daemon: &DaemonProcess, bytes: &[u8]) -> Vec<Resp> {
    parse_responses(&daemon.raw(bytes))
}

/// Writes `bytes` on a fresh connection and reads until the daemon closes it; an error (the
/// read timeout: the daemon never answered) is returned with what had arrived.
fn exchange(daemon: &DaemonProcess, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut stream = daemon.connect();
    stream.write_all(bytes).map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(out),
            Err(e) => {
                return Err(format!(
                    "no answer and no close ({e}) after {:?}",
                    String::from_utf8_lossy(&out)
                ));
            }
        }
    }
}

/// Writes `bytes` and asserts that exactly one response, the error `status`/`code`, comes back
/// before the daemon closes the connection.
fn assert_refused(daemon: &DaemonProcess, bytes: &[u8], status: u16, code: &str) -> Resp {
    let raw = exchange(daemon, bytes)
        .unwrap_or_else(|e| panic!("{e}, for {:?}", String::from_utf8_lossy(bytes)));
    let responses = parse_responses(&raw);
    assert_eq!(
        responses.len(),
        1,
        "exactly one answer to {:?}: {responses:?}",
        String::from_utf8_lossy(bytes)
    );
    let resp = responses.into_iter().next().unwrap();
    assert_eq!(
        resp.status,
        status,
        "answer to {:?}: {}",
        String::from_utf8_lossy(bytes),
        resp.text()
    );
    resp.assert_error(status, code);
    resp
}

/// `total` of `GET /api/agents`.
fn list_total(daemon: &DaemonProcess, token: &str) -> u64 {
    let resp = daemon.get("/api/agents", token);
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["total"].as_u64().unwrap()
}

/// Asserts the session is still listed (nothing smuggled deleted it).
fn assert_still_listed(daemon: &DaemonProcess, token: &str, id: &str) {
    let resp = daemon.get(&format!("/api/agents/{id}"), token);
    assert_eq!(resp.status, 200, "{id} still exists: {}", resp.text());
    assert_ne!(resp.json()["status"], "terminated");
    let list = daemon.get("/api/agents", token).json();
    assert!(
        list["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["session_id"] == id),
        "{id} still listed: {list}"
    );
}

/// `GET /api/health` with this exact `Host` line (`None`: no Host header at all).
fn health_with_host(daemon: &DaemonProcess, token: &str, host: Option<&str>) -> Vec<Resp> {
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    answers(
        daemon,
        format!(
            "GET /api/health HTTP/1.1\r\n{host}Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

/// Pseudo-random bytes with no CR or LF among them.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x as u8 {
                b'\r' | b'\n' => 0xfe,
                b => b,
            }
        })
        .collect()
}

#[test]
fn content_length_with_transfer_encoding_is_refused_and_nothing_behind_it_runs() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let id = id_of(&daemon.spawn(&token, "echo"));
    let delete = format!(
        "DELETE /api/agents/{id} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
        daemon.addr
    );
    // Whichever framing a confused parser picks, the body is `0\r\n\r\n` and the DELETE is
    // the next request.
    for framing in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ] {
        let request = format!(
            "POST /api/ws-ticket HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             {framing}\r\n0\r\n\r\n{delete}",
            daemon.addr
        );
        assert_refused(&daemon, request.as_bytes(), 400, "INVALID_REQUEST");
        assert_still_listed(&daemon, &token, &id);
    }
}

#[test]
fn conflicting_content_lengths_are_refused() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    for lengths in [
        "Content-Length: 2\r\nContent-Length: 3\r\n",
        "Content-Length: 2, 3\r\n",
    ] {
        let request = format!(
            "POST /api/ws-ticket HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             {lengths}\r\n{{}} ",
            daemon.addr
        );
        assert_refused(&daemon, request.as_bytes(), 400, "INVALID_REQUEST");
    }
}

#[test]
fn transfer_encodings_are_not_implemented() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    for coding in ["chunked", "gzip, chunked", "chunked, chunked"] {
        let request = format!(
            "POST /api/ws-ticket HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Transfer-Encoding: {coding}\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n",
            daemon.addr
        );
        assert_refused(&daemon, request.as_bytes(), 501, "NOT_IMPLEMENTED");
    }
}

#[test]
fn control_bytes_in_header_names_and_values_are_refused() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    for header in [&b"X-Note: a\rb"[..], b"X-Note: a\0b", b"X-No\0te: b"] {
        let mut request = format!(
            "GET /api/health HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n",
            daemon.addr
        )
        .into_bytes();
        request.extend_from_slice(header);
        request.extend_from_slice(b"\r\n\r\n");
        assert_refused(&daemon, &request, 400, "INVALID_REQUEST");
    }
}

#[test]
fn missing_empty_or_repeated_host_is_refused() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let own = daemon.addr.to_string();
    for (what, host) in [
        ("duplicate", Some(format!("{own}\r\nHost: {own}"))),
        ("empty", Some(String::new())),
        ("missing", None),
    ] {
        let responses = health_with_host(&daemon, &token, host.as_deref());
        assert_eq!(responses.len(), 1, "{what} Host: {responses:?}");
        assert_eq!(
            responses[0].status,
            400,
            "{what} Host: {}",
            responses[0].text()
        );
        responses[0].assert_error(400, "INVALID_REQUEST");
    }
    // The same request with one proper Host is fine.
    assert_eq!(health_with_host(&daemon, &token, Some(&own))[0].status, 200);
}

#[test]
fn binary_garbage_and_tls_hellos_are_answered_400_at_once() {
    // The head timeout is far away: only recognising the bytes as not-HTTP answers in time
    // (the harness's read timeout fails a hang).
    let daemon = DaemonProcess::start_with("[limits]\nhead_timeout = \"1h\"");
    let garbage: Vec<u8> = (0..300)
        .map(|i| [0x00u8, 0x01, 0xff, 0x7f, 0x80, 0x1b][i % 6])
        .collect();
    let mut hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec();
    hello.extend(noise(32));
    for bytes in [garbage, hello] {
        assert!(!bytes.contains(&b'\n') && !bytes.contains(&b'\r'));
        assert_refused(&daemon, &bytes, 400, "INVALID_REQUEST");
    }
    let token = daemon.token("observe");
    assert_eq!(daemon.get("/api/health", &token).status, 200);
}

#[test]
fn bytes_after_a_refused_upgrade_are_never_parsed_as_a_request() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let id = id_of(&daemon.spawn(&token, "echo"));
    let request = format!(
        "GET /ws/observe?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nOrigin: http://evil.example\r\n\r\n\
         DELETE /api/agents/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n",
        addr = daemon.addr
    );
    let responses = answers(&daemon, request.as_bytes());
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [403], "{responses:?}");
    assert_still_listed(&daemon, &token, &id);
}

/// Writes a raw upgrade request with these extra header lines and returns the status line.
fn upgrade_status(daemon: &DaemonProcess, host: &str, extra_headers: &str) -> String {
    let token = daemon.token("observe");
    let request = format!(
        "GET /ws/observe?token={token} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    );
    let mut stream = daemon.connect();
    stream.write_all(request.as_bytes()).unwrap();
    let head = read_head(&mut stream);
    head.lines().next().unwrap_or_default().to_string()
}

#[test]
fn foreign_host_names_are_refused_against_dns_rebinding() {
    let daemon = DaemonProcess::start();
    let token = daemon.token("observe");
    let port = daemon.addr.port();
    let responses = health_with_host(&daemon, &token, Some("evil.example"));
    assert_eq!(responses.len(), 1);
    responses[0].assert_error(403, "FORBIDDEN");
    let responses = health_with_host(&daemon, &token, Some(&format!("evil.example:{port}")));
    responses[0].assert_error(403, "FORBIDDEN");
    for host in [
        "localhost".to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
    ] {
        let responses = health_with_host(&daemon, &token, Some(&host));
        assert_eq!(responses.len(), 1);
        assert_eq!(
            responses[0].status,
            200,
            "Host: {host}: {}",
            responses[0].text()
        );
    }
    // A rebound page's upgrade is same-origin by its own Host; it is still refused.
    let status = upgrade_status(
        &daemon,
        &format!("evil.example:{port}"),
        &format!("Origin: http://evil.example:{port}\r\n"),
    );
    assert!(status.starts_with("HTTP/1.1 403"), "{status}");
}

#[test]
fn allowed_hosts_adds_names_and_others_stay_refused() {
    let daemon = DaemonProcess::start_with("allowed_hosts = [\"orchestra.test\"]");
    let token = daemon.token("observe");
    let port = daemon.addr.port();
    let responses = health_with_host(&daemon, &token, Some(&format!("orchestra.test:{port}")));
    assert_eq!(responses[0].status, 200, "{}", responses[0].text());
    let responses = health_with_host(&daemon, &token, Some("evil.example"));
    responses[0].assert_error(403, "FORBIDDEN");
}

#[test]
fn two_origin_headers_on_an_upgrade_are_refused() {
    let daemon = DaemonProcess::start();
    let own = format!("http://{}", daemon.addr);
    let host = daemon.addr.to_string();
    for origins in [
        format!("Origin: {own}\r\nOrigin: http://evil.example\r\n"),
        format!("Origin: http://evil.example\r\nOrigin: {own}\r\n"),
    ] {
        let status = upgrade_status(&daemon, &host, &origins);
        assert!(status.starts_with("HTTP/1.1 403"), "{origins:?}: {status}");
    }
    // One own Origin is accepted (the refusals above are about the duplicate).
    let status = upgrade_status(&daemon, &host, &format!("Origin: {own}\r\n"));
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
}

#[test]
fn a_slowloris_body_gets_408_while_others_are_served() {
    let daemon = DaemonProcess::start_with("[limits]\nbody_timeout = \"1s\"");
    let token = daemon.control();
    let mut slow = daemon.connect();
    slow.write_all(
        format!(
            "POST /api/agents/spawn HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 100\r\n\r\n",
            daemon.addr
        )
        .as_bytes(),
    )
    .unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut stream = slow.try_clone().unwrap();
        let (sent, stop) = (sent.clone(), stop.clone());
        // Never completes the body: at most 99 of the 100 bytes, one every 200 ms (the
        // pauses are the attack, not synchronisation).
        std::thread::spawn(move || {
            for _ in 0..99 {
                if stop.load(Ordering::SeqCst) || stream.write_all(b" ").is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    wait_until("the slow client to be trickling", || {
        (sent.load(Ordering::SeqCst) >= 2).then_some(())
    });
    // Meanwhile another client is served.
    assert_eq!(daemon.get("/api/health", &token).status, 200);
    let raw = read_to_close(&mut slow);
    // The body deadline counts from the head, not from the last byte: the answer comes while
    // the client is still trickling.
    let trickled = sent.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let responses = parse_responses(&raw);
    assert_eq!(responses.len(), 1, "{responses:?}");
    responses[0].assert_error(408, "REQUEST_TIMEOUT");
    assert!(
        trickled < 99,
        "answered only after the whole trickle ({trickled} bytes)"
    );
    assert_eq!(daemon.get("/api/health", &token).status, 200);
}

/// Waits until the daemon has logged a request for `marker` (so every line logged before it
/// has been read), then asserts no log line is longer than 4096 bytes.
fn assert_log_lines_short(daemon: &DaemonProcess, token: &str, marker: &str) {
    assert_eq!(daemon.get(&format!("/api/{marker}"), token).status, 404);
    wait_until("the marker request in the log", || {
        daemon.log_contains(marker).then_some(())
    });
    let log = daemon.log.lock().unwrap().clone();
    for line in log.lines() {
        assert!(
            line.len() <= 4096,
            "a {}-byte log line: {}…",
            line.len(),
            String::from_utf8_lossy(&line.as_bytes()[..300])
        );
    }
}

#[test]
fn huge_strings_are_neither_echoed_nor_logged_whole() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let bodies = [
        json!({"agent_type": "echo", "working_dir": format!("/{}", "a".repeat(900_000))}),
        json!({"agent_type": "a".repeat(900_000), "working_dir": daemon.work}),
        json!({"agent_type": "echo", "working_dir": daemon.work,
               "env": {"A".repeat(900_000): "x"}}),
    ];
    for body in &bodies {
        assert!(body.to_string().len() < 1024 * 1024);
        let resp = daemon.post("/api/agents/spawn", &token, body);
        assert_eq!(
            resp.status,
            400,
            "{}",
            &resp.text()[..resp.text().len().min(300)]
        );
        assert!(
            resp.body.len() < 4096,
            "a {}-byte error body",
            resp.body.len()
        );
        assert!(resp.json()["error_code"].is_string());
    }
    assert_log_lines_short(&daemon, &token, "hostile-log-marker");
    assert_eq!(list_total(&daemon, &token), 0);
}

#[test]
fn deeply_nested_and_invalid_utf8_bodies_are_refused() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let mut deep = "[".repeat(100_000).into_bytes();
    deep.extend(std::iter::repeat_n(b']', 100_000));
    for body in [deep, b"{\"agent_type\":\"ech\xff\"}".to_vec()] {
        let mut request = format!(
            "POST /api/agents/spawn HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\nContent-Length: {}\r\n\r\n",
            daemon.addr,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        assert_refused(&daemon, &request, 400, "INVALID_REQUEST");
        assert_eq!(daemon.get("/api/health", &token).status, 200);
    }
    assert!(process_alive(daemon.pid()));
}

#[test]
fn out_of_file_descriptors_every_client_still_gets_an_answer() {
    let daemon = DaemonProcess::start();
    let token = daemon.token("observe");
    let pid = daemon.pid();
    crate::common::prlimit(pid, "--nofile=64:64");
    let held: Vec<TcpStream> = (0..100).map(|_| daemon.connect()).collect();
    let request = format!(
        "GET /api/health HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
        daemon.addr
    );
    for i in 0..20 {
        let raw = exchange(&daemon, request.as_bytes())
            .unwrap_or_else(|e| panic!("client {i} of 20: {e}"));
        let responses = parse_responses(&raw);
        assert_eq!(responses.len(), 1, "client {i}: {responses:?}");
        match responses[0].status {
            200 => {}
            503 => responses[0].assert_error(503, "OVERLOADED"),
            other => panic!("client {i}: {other} {}", responses[0].text()),
        }
    }
    assert!(process_alive(pid), "the daemon survives running out of fds");
    drop(held);
    wait_until("health once the held connections are gone", || {
        (daemon.get("/api/health", &token).status == 200).then_some(())
    });
    assert!(process_alive(pid));
}

// ---- WebSocket frames, written by hand ----

/// Reads a response head byte by byte (so no frame after it is consumed).
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => head.push(byte[0]),
            Err(e) => panic!(
                "reading the head: {e}; so far {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// An upgraded raw connection to `/ws/observe`, past the 101 head.
fn raw_ws(daemon: &DaemonProcess) -> TcpStream {
    let mut stream = daemon.connect();
    stream
        .write_all(
            format!(
                "GET /ws/observe?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n",
                daemon.token("observe"),
                daemon.addr
            )
            .as_bytes(),
        )
        .unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// A client frame: `first` is the FIN/RSV/opcode byte; masked unless `masked` is false.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut out = vec![first, payload.len() as u8 | if masked { 0x80 } else { 0 }];
    if masked {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Reads server frames until a close frame and returns its code; panics if the connection
/// ends without one.
fn close_code(stream: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while buf.len() >= 2 {
            let opcode = buf[0] & 0x0f;
            let (len, start) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => (
                    u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if buf.len() < start + len {
                break;
            }
            if opcode == 0x8 {
                assert!(len >= 2, "a close frame with a code");
                return u16::from_be_bytes([buf[start], buf[start + 1]]);
            }
            buf.drain(..start + len);
        }
        match stream.read(&mut chunk) {
            Ok(0) => panic!("connection ended without a close frame"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                panic!("connection reset without a close frame")
            }
            Err(e) => panic!("read failed waiting for a close frame: {e}"),
        }
    }
}

/// Sends `bytes` on a fresh upgraded connection and returns the close code it earns.
fn close_code_after(daemon: &DaemonProcess, bytes: &[u8]) -> u16 {
    let mut stream = raw_ws(daemon);
    stream.write_all(bytes).unwrap();
    close_code(&mut stream)
}

#[test]
fn invalid_utf8_text_closes_1007() {
    let daemon = DaemonProcess::start();
    let bytes = frame(0x81, b"{\"type\":\"ping\",\"id\":\"\xff\xfe\"}", true);
    assert_eq!(close_code_after(&daemon, &bytes), 1007);
}

#[test]
fn protocol_violations_close_1002() {
    let daemon = DaemonProcess::start();
    let ping = br#"{"type":"ping"}"#;
    for (what, bytes) in [
        ("unmasked text", frame(0x81, ping, false)),
        ("RSV1 set", frame(0xc1, ping, true)),
        ("fragmented ping", frame(0x09, b"x", true)),
        ("continuation first", frame(0x80, ping, true)),
    ] {
        assert_eq!(close_code_after(&daemon, &bytes), 1002, "{what}");
    }
}

#[test]
fn binary_frames_close_1003() {
    let daemon = DaemonProcess::start();
    let bytes = frame(0x82, b"\x00\x01\x02", true);
    assert_eq!(close_code_after(&daemon, &bytes), 1003);
}

#[test]
fn a_4_gib_frame_header_closes_1009_without_allocating() {
    let daemon = DaemonProcess::start();
    let mut bytes = vec![0x81, 0x80 | 127];
    bytes.extend_from_slice(&(4u64 << 30).to_be_bytes());
    bytes.extend_from_slice(&[0x37, 0xfa, 0x21, 0x3d]);
    bytes.extend_from_slice(&[0x4c; 64]);
    assert_eq!(close_code_after(&daemon, &bytes), 1009);
    let rss = crate::observe::rss_kb(daemon.pid());
    assert!(rss < 200 * 1024, "daemon RSS {rss} kB");
    assert_eq!(
        daemon.get("/api/health", &daemon.token("observe")).status,
        200
    );
}

#[test]
fn subscriptions_past_the_limit_are_an_error_and_the_connection_stays() {
    let daemon = DaemonProcess::start_with("[websocket]\nmax_subscriptions = 2");
    let token = daemon.control();
    let ids: Vec<String> = (0..3)
        .map(|_| id_of(&daemon.spawn(&token, "echo")))
        .collect();
    let mut ws = daemon.ws(&daemon.token("observe"));
    for id in &ids[..2] {
        let ack = ws.subscribe(id);
        assert_eq!(ack["type"], "subscribed", "{ack}");
    }
    let refused = ws.subscribe(&ids[2]);
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["error_code"], "INVALID_REQUEST", "{refused}");
    ws.send(json!({"type": "ping", "id": "still-there"}));
    let pong = ws.recv_until("pong", |m| m["type"] == "pong");
    assert_eq!(pong["id"], "still-there");
}

// ---- Faults ----

#[test]
fn sigterm_closes_open_websockets_with_1001() {
    let daemon = DaemonProcess::start();
    let mut ws = daemon.ws(&daemon.token("observe"));
    ws.send(json!({"type": "ping", "id": 1}));
    ws.recv_until("pong", |m| m["type"] == "pong");
    crate::common::signal(daemon.pid(), "TERM");
    let (_, closed) = ws.wait_closed();
    assert_eq!(closed, Closed::Code(1001));
}

#[test]
fn the_private_tmux_server_dying_ends_every_session_and_spawning_still_works() {
    let daemon = DaemonProcess::start_tmux();
    let token = daemon.control();
    let ids: Vec<String> = (0..4)
        .map(|_| id_of(&daemon.spawn(&token, "echo")))
        .collect();
    let mut ws = daemon.ws(&daemon.token("observe"));
    ws.send(json!({"type": "ping", "id": "ready"}));
    ws.recv_until("pong", |m| m["type"] == "pong");
    let out = daemon.tmux(&["kill-server"]);
    assert!(
        out.status.success(),
        "kill-server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pending: std::collections::HashSet<String> = ids.iter().cloned().collect();
    while !pending.is_empty() {
        let status = ws.recv_until("an error status for each session", |m| {
            m["type"] == "agent_status" && m["status"] == "error"
        });
        pending.remove(status["session_id"].as_str().unwrap());
    }
    // Polled like `wait_until`, keeping the last list for the failure message.
    let deadline = std::time::Instant::now() + crate::common::PATIENCE;
    loop {
        let list = daemon.get("/api/agents", &token).json();
        if list["total"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sessions of the dead tmux server are still listed: {list}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(daemon.get("/api/health", &token).status, 200);
    let fresh = id_of(&daemon.spawn(&token, "echo"));
    let list = daemon.get("/api/agents", &token).json();
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["agents"][0]["session_id"], fresh.as_str());
}
