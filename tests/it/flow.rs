//! Flow control of pane output: a viewer more than half a backlog behind holds the pane's
//! reading back (the agent's output waits in its pipe) for at most `panes.max_stall` per
//! stall, so that a viewer that pauses briefly loses nothing, and one that stops does not
//! hold the agent back for longer.

use serde_json::json;

use crate::common::{DaemonProcess, id_of, wait_until};
use crate::observe::{
    between, flood_expected, subscribe_with_screen, ws_with_small_receive_buffer,
};

/// Lines of the flood: about 16 MB, far more than the backlog and a socket's buffers.
const LINES: usize = 300_000;

/// How often the daemon has held a pane's reading back so far (`GET /metrics`).
fn stalls(daemon: &DaemonProcess, token: &str) -> u64 {
    let text = daemon.get("/metrics", token).text();
    text.lines()
        .find_map(|line| line.strip_prefix("orchestra_output_stalls_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn flood_agent(daemon: &DaemonProcess, token: &str) -> String {
    let resp = daemon.post(
        "/api/agents/spawn",
        token,
        &json!({"agent_type": "flood", "working_dir": daemon.work,
                "env": {"FLOOD_LINES": LINES.to_string()}}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    id_of(&resp.json())
}

#[test]
fn a_viewer_that_pauses_mid_flood_gets_every_byte() {
    // A small backlog, and a stall long enough that the test decides when it ends.
    let daemon = DaemonProcess::start_with(
        "[panes]\nbacklog_bytes = 262144\nlive_frame_bytes = 131072\nmax_stall = \"120s\"",
    );
    let token = daemon.control();
    let session = flood_agent(&daemon, &token);
    let mut ws = ws_with_small_receive_buffer(&daemon, &token);
    let mut transcript = subscribe_with_screen(&mut ws, &session);
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "go\r"}));
    // The viewer reads nothing until the daemon has held the agent's output back for it.
    wait_until("the pane's reading held back for the viewer", || {
        (stalls(&daemon, &token) > 0).then_some(())
    });
    transcript.read_until(&mut ws, &session, "\r\nEND\r\n");
    assert!(transcript.gaps.is_empty(), "{:?}", transcript.gaps);
    let body = between(&transcript.text, "START\r\n", "END\r\n");
    let expected = flood_expected(LINES);
    assert_eq!(body.len(), expected.len());
    assert!(
        body == expected.as_str(),
        "the stream differs from what the agent printed"
    );
}

#[test]
fn a_stopped_viewer_holds_the_agent_back_only_briefly_and_then_gets_a_gap() {
    let daemon = DaemonProcess::start_with(
        "[panes]\nbacklog_bytes = 262144\nlive_frame_bytes = 131072\nmax_stall = \"200ms\"",
    );
    let token = daemon.control();
    let session = flood_agent(&daemon, &token);
    let mut stopped = ws_with_small_receive_buffer(&daemon, &token);
    assert_eq!(stopped.subscribe(&session)["type"], "subscribed");
    // Another viewer reads all along: it gets every byte, and sees the flood end although
    // the first one reads nothing.
    let mut reader = daemon.ws(&token);
    let mut transcript = subscribe_with_screen(&mut reader, &session);
    reader.send(json!({"type": "terminal_input", "session_id": session, "data": "go\r"}));
    transcript.read_until(&mut reader, &session, "\r\nEND\r\n");
    let body = between(&transcript.text, "START\r\n", "END\r\n");
    let expected = flood_expected(LINES);
    assert_eq!(body.len(), expected.len());
    assert!(
        body == expected.as_str(),
        "the stream differs from what the agent printed"
    );
    assert!(
        stalls(&daemon, &token) > 0,
        "the stopped viewer never held the pane back"
    );
    // The stopped viewer was let go: reading again, it is told what it missed.
    let gap = stopped.recv_until("the stopped viewer's gap", |m| m["type"] == "terminal_gap");
    assert_eq!(gap["reason"], "viewer fell behind the backlog", "{gap}");
}
