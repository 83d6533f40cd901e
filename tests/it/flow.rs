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
    assert_whole_flood(&transcript.text);
}

/// Asserts that `text` holds the whole flood between its markers, byte for byte.
fn assert_whole_flood(text: &str) {
    let body = between(text, "START\r\n", "END\r\n");
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
        // (`write_timeout`: the viewer that reads nothing must outlive a slow, loaded flood.)
        "[panes]\nbacklog_bytes = 262144\nlive_frame_bytes = 131072\nmax_stall = \"200ms\"\n\
         [limits]\nwrite_timeout = \"10m\"",
    );
    let token = daemon.control();
    // The task agent, run interactively: it reads its lines until Ctrl-D, floods about
    // 13 MB, marks the end in a file and then waits (so its session stays).
    let session = id_of(&daemon.spawn(&token, "task"));
    let mut stopped = ws_with_small_receive_buffer(&daemon, &token);
    assert_eq!(stopped.subscribe(&session)["type"], "subscribed");
    let done = daemon.work.join("flood-done");
    let never = daemon.work.join("never");
    let script = format!(
        "FLOOD {LINES}\rTOUCH {}\rWAITFOR {}\r\u{4}",
        done.display(),
        never.display()
    );
    let mut typist = daemon.ws(&token);
    typist.send(json!({"type": "terminal_input", "session_id": session, "data": script}));
    // The viewer reads nothing, yet the agent gets to the end of its flood: it was held
    // back only while the viewer was waited for.
    wait_until("the agent finished its flood", || {
        done.exists().then_some(())
    });
    assert!(
        stalls(&daemon, &token) > 0,
        "the stopped viewer never held the pane back"
    );
    // The stopped viewer was let go: reading again, it is told what it missed.
    let gap = stopped.recv_until("the stopped viewer's gap", |m| m["type"] == "terminal_gap");
    assert_eq!(gap["reason"], "viewer fell behind the backlog", "{gap}");
}
