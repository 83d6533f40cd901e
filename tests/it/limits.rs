//! Rate limits: token buckets per caller with `X-RateLimit-*` headers, `429` with
//! `Retry-After`, credential failures per address, and WebSocket message floods.

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::common::{Closed, DaemonProcess, Resp, now, sign};

fn header_u64(resp: &Resp, name: &str) -> u64 {
    resp.header(name)
        .unwrap_or_else(|| panic!("{name} missing: {:?}", resp.headers))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number: {:?}", resp.headers))
}

fn token_for(daemon: &DaemonProcess, sub: &str) -> String {
    sign(
        &json!({"scope": "control", "sub": sub, "exp": now() + 3600}),
        &daemon.secret(),
        Algorithm::HS256,
    )
}

#[test]
fn spawns_past_the_limit_get_429_with_retry_after_and_every_answer_carries_the_headers() {
    let daemon =
        DaemonProcess::start_with("[rate_limits]\nspawn = { requests = 2, window = \"1h\" }");
    let alice = token_for(&daemon, "alice");
    let body = json!({"agent_type": "echo", "working_dir": daemon.work});

    let first = daemon.post("/api/agents/spawn", &alice, &body);
    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(header_u64(&first, "X-RateLimit-Limit"), 2);
    assert_eq!(header_u64(&first, "X-RateLimit-Remaining"), 1);
    let reset = header_u64(&first, "X-RateLimit-Reset");
    assert!(
        reset > now() && reset <= now() + 3600,
        "reset {reset} is epoch seconds"
    );

    // A refused request counts too, and carries the headers as well.
    let bad = daemon.post("/api/agents/spawn", &alice, &json!({"agent_type": "nope"}));
    bad.assert_error(400, "INVALID_AGENT_TYPE");
    assert_eq!(header_u64(&bad, "X-RateLimit-Remaining"), 0);

    let refused = daemon.post("/api/agents/spawn", &alice, &body);
    refused.assert_error(429, "RATE_LIMIT_EXCEEDED");
    assert_eq!(header_u64(&refused, "X-RateLimit-Remaining"), 0);
    let retry = header_u64(&refused, "Retry-After");
    assert!((1..=3600).contains(&retry), "Retry-After {retry}");
    // Nothing was spawned for the refused request.
    assert_eq!(daemon.get("/api/agents", &alice).json()["total"], 1);

    // Another caller has a bucket of its own; reads are not limited.
    let bob = token_for(&daemon, "bob");
    let other = daemon.post("/api/agents/spawn", &bob, &body);
    assert_eq!(other.status, 201, "{}", other.text());
    assert_eq!(header_u64(&other, "X-RateLimit-Remaining"), 1);
    let list = daemon.get("/api/agents", &alice);
    assert_eq!(list.status, 200);
    assert!(list.header("X-RateLimit-Limit").is_none());
}

#[test]
fn delegations_past_the_limit_get_429() {
    let daemon =
        DaemonProcess::start_with("[rate_limits]\ndelegate = { requests = 1, window = \"1h\" }");
    let token = daemon.control();
    let body = json!({"agent_type": "task", "task": "ANSWER fine", "working_dir": daemon.work});
    let first = daemon.post("/api/delegate", &token, &body);
    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(header_u64(&first, "X-RateLimit-Limit"), 1);
    assert_eq!(header_u64(&first, "X-RateLimit-Remaining"), 0);
    let refused = daemon.post("/api/delegate", &token, &body);
    refused.assert_error(429, "RATE_LIMIT_EXCEEDED");
    assert!(header_u64(&refused, "Retry-After") >= 1);
    // Only the accepted ticket exists.
    assert_eq!(daemon.get("/api/tasks", &token).json()["total"], 1);
}

#[test]
fn credential_failures_are_limited_per_address_and_valid_tokens_still_work() {
    let daemon = DaemonProcess::start_with(
        "[rate_limits]\nauth_failures = { requests = 2, window = \"1h\" }",
    );
    for left in [1, 0] {
        let resp = daemon.get("/api/agents", "not-a-token");
        resp.assert_error(401, "INVALID_TOKEN");
        assert_eq!(header_u64(&resp, "X-RateLimit-Remaining"), left);
    }
    let refused = daemon.get("/api/agents", "still-not-a-token");
    refused.assert_error(429, "RATE_LIMIT_EXCEEDED");
    assert!(header_u64(&refused, "Retry-After") >= 1);
    // A WebSocket with bad credentials from the same address is refused before upgrading.
    assert_eq!(daemon.ws_with("token=bad", &[]).err(), Some(429));
    // The limit is on failures: a valid token is served.
    let token = daemon.control();
    assert_eq!(daemon.get("/api/agents", &token).status, 200);
    // The message never echoes the token.
    assert!(!refused.text().contains("still-not-a-token"));
}

#[test]
fn websocket_messages_past_the_limit_are_dropped_then_a_flood_is_closed_4002() {
    let daemon = DaemonProcess::start_with(
        "[rate_limits]\nws_messages = { requests = 3, window = \"1h\" }\nws_flood_close_after = 2",
    );
    let token = daemon.token("observe");
    let mut ws = daemon.ws(&token);
    for i in 0..3 {
        ws.send(json!({"type": "ping", "id": i}));
        let pong = ws.recv_until("a pong", |m| m["type"] == "pong");
        assert_eq!(pong["id"], i);
    }
    // Over the limit: each message is dropped with an error, the connection stays open...
    for i in 3..5 {
        ws.send(json!({"type": "ping", "id": i}));
        let error: Value = ws.recv_until("a rate-limit error", |m| m["type"] == "error");
        assert_eq!(error["error_code"], "RATE_LIMIT_EXCEEDED", "{error}");
    }
    // ...until the client has kept flooding past ws_flood_close_after.
    ws.send(json!({"type": "ping", "id": 5}));
    let (messages, closed) = ws.wait_closed();
    assert!(
        messages.iter().all(|m| m["type"] != "pong"),
        "no dropped ping was answered: {messages:?}"
    );
    assert_eq!(closed, Closed::Code(4002));
    // Other connections have buckets of their own.
    let mut other = daemon.ws(&token);
    other.send(json!({"type": "ping", "id": "x"}));
    assert_eq!(
        other.recv_until("a pong", |m| m["type"] == "pong")["id"],
        "x"
    );
}
