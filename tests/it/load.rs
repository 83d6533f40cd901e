//! A bounded load test: hundreds of observers and dozens of HTTP clients at once on
//! loopback. Every observer receives every byte, every request is answered, and the
//! daemon's memory stays bounded.

use serde_json::json;

use crate::common::{DaemonProcess, Transcript, Ws};
use crate::observe::{between, flood_expected, rss_kb, subscribe_with_screen};

/// Observers connected at once.
const OBSERVERS: usize = 500;
/// HTTP clients at once, and the requests each sends.
const HTTP_CLIENTS: usize = 50;
const REQUESTS_EACH: usize = 20;
/// Lines the flood agent prints (about 50 KB), received by every observer.
const FLOOD_LINES: usize = 1000;
/// The daemon's resident memory may grow by at most this much under the load (it holds a
/// bounded backlog per pane and a bounded queue per connection; 500 connections need a few
/// MiB).
const MAX_GROWTH_KB: u64 = 128 * 1024;

#[test]
fn five_hundred_observers_and_fifty_http_clients_lose_nothing_and_memory_stays_bounded() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let resp = daemon.post(
        "/api/agents/spawn",
        &token,
        &json!({"agent_type": "flood", "working_dir": daemon.work,
                "env": {"FLOOD_LINES": FLOOD_LINES.to_string()}}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let session = resp.json()["session_id"].as_str().unwrap().to_string();
    let before = rss_kb(daemon.pid());

    let mut viewers: Vec<(Ws, Transcript)> = (0..OBSERVERS)
        .map(|_| {
            let mut ws = daemon.ws(&token);
            let transcript = subscribe_with_screen(&mut ws, &session);
            (ws, transcript)
        })
        .collect();
    viewers[0]
        .0
        .send(json!({"type": "terminal_input", "session_id": session, "data": "go\r"}));
    let expected = flood_expected(FLOOD_LINES);
    std::thread::scope(|scope| {
        for _ in 0..HTTP_CLIENTS {
            scope.spawn(|| {
                for i in 0..REQUESTS_EACH {
                    let path = if i % 2 == 0 {
                        "/api/agents"
                    } else {
                        "/api/health"
                    };
                    let resp = daemon.get(path, &token);
                    assert_eq!(resp.status, 200, "{path}: {}", resp.text());
                }
            });
        }
        for (ws, transcript) in viewers.iter_mut() {
            let (session, expected) = (&session, &expected);
            scope.spawn(move || {
                transcript.read_until(ws, session, "\r\nEND\r\n");
                let body = between(&transcript.text, "START\r\n", "END\r\n");
                assert!(
                    body == expected.as_str(),
                    "an observer lost or changed output"
                );
            });
        }
    });
    let after = rss_kb(daemon.pid());
    assert!(
        after.saturating_sub(before) < MAX_GROWTH_KB,
        "daemon memory grew from {before} KiB to {after} KiB"
    );
    // Everyone is still connected and served.
    let health = daemon.get("/api/health", &token).json();
    assert_eq!(health["observers"], OBSERVERS);
}
