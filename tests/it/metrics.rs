//! `GET /metrics` scraped from a daemon that did some work, and read by a real Prometheus
//! text parser (Python `prometheus_client`, pinned, installed under `target/tmp`).

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::common::{DaemonProcess, wait_until};

/// Parses exposition text with prometheus_client; returns {family: {type, samples: [...]}}.
fn parse(text: &str) -> Value {
    let bin = crate::model::install_cli("schemathesis", "install-schemathesis.sh");
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    out[family.name] = {"type": family.type, "samples": [
        {"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples]}
print(json.dumps(out))
"#;
    let mut child = Command::new(format!("{bin}/python"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client could not parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(families: &Value, family: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families[family]["samples"]
        .as_array()?
        .iter()
        .find(|s| {
            s["name"] == name
                && labels
                    .iter()
                    .all(|(k, v)| s["labels"][*k].as_str() == Some(*v))
        })
        .and_then(|s| s["value"].as_f64())
}

#[test]
fn metrics_are_scraped_and_parse_as_prometheus_text() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let session = daemon.spawn(&token, "echo")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ws = daemon.ws(&token);
    ws.subscribe(&session);
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "counted\r"}));
    ws.recv_until("the echo", |m| {
        m["type"] == "terminal_output" && m["data"].as_str().unwrap_or("").contains("counted")
    });
    daemon.get("/api/agents/sess-nope-1", &token);
    let task = daemon.delegate(
        &token,
        &json!({"agent_type": "task", "task": "WRITE m.txt 1", "working_dir": daemon.work}),
    );
    daemon.wait_task_final(&token, task["ticket_id"].as_str().unwrap());
    // Unauthenticated scrapes are refused; an observe token reads it.
    daemon
        .request_with("GET", "/metrics", &[], None)
        .assert_error(401, "INVALID_TOKEN");
    let observe = daemon.token("observe");
    let families = wait_until("the task's duration in the metrics", || {
        let resp = daemon.get("/metrics", &observe);
        assert_eq!(resp.status, 200);
        assert!(
            resp.header("content-type")
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        let families = parse(&resp.text());
        sample(
            &families,
            "orchestra_task_duration_seconds",
            "orchestra_task_duration_seconds_count",
            &[("status", "completed")],
        )
        .is_some_and(|n| n >= 1.0)
        .then_some(families)
    });
    let get = |family: &str, name: &str, labels: &[(&str, &str)]| {
        sample(&families, family, name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in {}", families[family]))
    };
    assert!(
        get(
            "orchestra_sessions",
            "orchestra_sessions",
            &[("status", "running")]
        ) >= 1.0
    );
    assert_eq!(get("orchestra_viewers", "orchestra_viewers", &[]), 1.0);
    assert!(
        get(
            "orchestra_output_read_bytes",
            "orchestra_output_read_bytes_total",
            &[]
        ) > 0.0
    );
    assert!(
        get(
            "orchestra_output_delivered_bytes",
            "orchestra_output_delivered_bytes_total",
            &[]
        ) > 0.0
    );
    assert_eq!(
        get(
            "orchestra_http_requests",
            "orchestra_http_requests_total",
            &[("route", "/api/agents/{session_id}"), ("status", "404")]
        ),
        1.0,
        "ids never become labels"
    );
    assert!(
        get(
            "orchestra_http_request_duration_seconds",
            "orchestra_http_request_duration_seconds_count",
            &[("route", "/api/agents/spawn")]
        ) >= 1.0
    );
    assert!(
        get(
            "orchestra_websocket_messages",
            "orchestra_websocket_messages_total",
            &[("direction", "in"), ("type", "terminal_input")]
        ) >= 1.0
    );
    assert!(
        get(
            "orchestra_websocket_messages",
            "orchestra_websocket_messages_total",
            &[("direction", "out"), ("type", "terminal_output")]
        ) >= 1.0
    );
    assert!(
        get(
            "orchestra_tickets",
            "orchestra_tickets",
            &[("status", "completed")]
        ) >= 1.0
    );
    assert!(
        get(
            "orchestra_tmux_command_duration_seconds",
            "orchestra_tmux_command_duration_seconds_count",
            &[]
        ) >= 1.0
    );
    assert!(
        get(
            "orchestra_store_write_duration_seconds",
            "orchestra_store_write_duration_seconds_count",
            &[]
        ) >= 1.0
    );
}

#[test]
fn a_scraper_token_reads_metrics_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scrape-token");
    std::fs::write(&file, "prometheus-scraper-secret-0123\n").unwrap();
    let daemon =
        DaemonProcess::start_with(&format!("[metrics]\ntoken_file = \"{}\"\n", file.display()));
    let resp = daemon.get("/metrics", "prometheus-scraper-secret-0123");
    assert_eq!(resp.status, 200, "{}", resp.text());
    daemon
        .get("/api/agents", "prometheus-scraper-secret-0123")
        .assert_error(401, "INVALID_TOKEN");
    daemon
        .get("/metrics", "prometheus-scraper-secret-0124")
        .assert_error(401, "INVALID_TOKEN");
    let off = DaemonProcess::start_with("[metrics]\nenabled = false\n");
    off.get("/metrics", &off.control())
        .assert_error(404, "NOT_FOUND");
}
