//! Counters and histograms for `GET /metrics`, and their Prometheus text exposition.
//!
//! The loop's own counters are plain integers in [`Metrics`] (the loop is one thread: no
//! lock, no atomic). Threads that time work off the loop (tmux commands on workers, store
//! writes) share a [`SharedHistogram`] of atomics. Nothing here allocates per byte or per
//! frame: label values are `&'static str`, maps are keyed by them and only grow when a new
//! label first appears.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (seconds) of the task duration histogram's buckets.
pub const TASK_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
];

/// A histogram of durations over fixed buckets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    sum_nanos: u128,
    count: u64,
}

impl Histogram {
    /// Records one duration against `bounds`.
    pub fn observe(&mut self, bounds: &[f64], value: Duration) {
        if self.counts.len() != bounds.len() {
            self.counts = vec![0; bounds.len()];
        }
        let seconds = value.as_secs_f64();
        if let Some(i) = bounds.iter().position(|b| seconds <= *b) {
            self.counts[i] += 1;
        }
        self.sum_nanos += value.as_nanos();
        self.count += 1;
    }
}

/// A histogram that threads other than the loop record into.
#[derive(Debug)]
pub struct SharedHistogram {
    counts: [AtomicU64; LATENCY_BUCKETS.len()],
    sum_nanos: AtomicU64,
    count: AtomicU64,
    /// Failures counted beside the timings (a tmux command that failed or timed out).
    pub failures: AtomicU64,
}

impl Default for SharedHistogram {
    fn default() -> Self {
        SharedHistogram {
            counts: Default::default(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

impl SharedHistogram {
    /// Records one duration (latency buckets).
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(
            value.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failure.
    pub fn fail(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy to render.
    pub fn snapshot(&self) -> Histogram {
        Histogram {
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum_nanos: u128::from(self.sum_nanos.load(Ordering::Relaxed)),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// The loop's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// HTTP requests by route template and status.
    pub http_requests: BTreeMap<(&'static str, u16), u64>,
    /// HTTP latency by route template.
    pub http_latency: BTreeMap<&'static str, Histogram>,
    /// WebSocket messages received, by type.
    pub ws_in: BTreeMap<&'static str, u64>,
    /// WebSocket messages sent, by type (live terminal output frames are in
    /// [`OutputCounts`]).
    pub ws_out: BTreeMap<&'static str, u64>,
    /// Viewers closed for being too slow (4001).
    pub slow_viewer_closes: u64,
    /// Times a pane's reading waited for a viewer half a backlog behind (`panes.max_stall`).
    pub output_stalls: u64,
    /// Screen checkpoints handed to pty holders.
    pub pty_checkpoints: u64,
    /// Connections that never sent a request, closed to make room for a new one when
    /// `limits.max_connections` were open.
    pub silent_connections_evicted: u64,
    /// Answers on the private sockets (hook replies, tool results) closed unfinished because
    /// their reader had not taken them whole within `hooks.answer_timeout` (or too many
    /// waited: `hooks.max_connections`).
    pub answers_abandoned: u64,
    /// Requests refused by a rate limit, by limit.
    pub rate_limited: BTreeMap<&'static str, u64>,
    /// Durations of finished tasks, by final status.
    pub task_durations: BTreeMap<&'static str, Histogram>,
    /// Hook events received, by event.
    pub hook_events: BTreeMap<&'static str, u64>,
}

impl Metrics {
    /// Counts one answered HTTP request.
    pub fn http(&mut self, route: &'static str, status: u16, latency: Duration) {
        *self.http_requests.entry((route, status)).or_default() += 1;
        self.http_latency
            .entry(route)
            .or_default()
            .observe(&LATENCY_BUCKETS, latency);
    }

    /// Counts one message sent on a WebSocket, by the type named at the start of its JSON.
    pub fn sent(&mut self, json: &str) {
        *self.ws_out.entry(message_type(json)).or_default() += 1;
    }
}

/// What the output fanout counted (kept by the hub, which sees every chunk and frame).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputCounts {
    /// Bytes of pane output appended.
    pub bytes_in: u64,
    /// Bytes of output frames handed to viewers.
    pub bytes_out: u64,
    /// Output frames handed to viewers.
    pub frames_out: u64,
    /// Viewers switched to a fresh screen.
    pub resyncs: u64,
    /// `terminal_gap` notices sent.
    pub gaps: u64,
}

/// The known WebSocket message types, so labels are static and bounded.
const MESSAGE_TYPES: &[&str] = &[
    "terminal_output",
    "terminal_gap",
    "subscribed",
    "unsubscribed",
    "user_message_ack",
    "terminal_input_ack",
    "resize_terminal_ack",
    "user_message_delivered",
    "claude_response",
    "tool_decision",
    "agent_status",
    "task_update",
    "error",
    "pong",
    "subscribe_terminal",
    "unsubscribe_terminal",
    "user_message",
    "terminal_input",
    "approve_tool",
    "resize_terminal",
    "approve_plan",
    "reject_plan",
    "ping",
];

/// The label for a message type (`other` for anything unknown).
pub fn type_label(name: &str) -> &'static str {
    MESSAGE_TYPES
        .iter()
        .find(|t| **t == name)
        .copied()
        .unwrap_or("other")
}

/// The `type` of a JSON message whose first field it is (as every message the daemon
/// encodes), without parsing the rest.
pub fn message_type(json: &str) -> &'static str {
    json.strip_prefix("{\"type\":\"")
        .and_then(|rest| rest.split_once('"'))
        .map_or("other", |(name, _)| type_label(name))
}

/// Gauges computed when scraped.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Sessions by (status, activity).
    pub sessions: BTreeMap<(&'static str, &'static str), u64>,
    /// Tickets by status.
    pub tickets: BTreeMap<&'static str, u64>,
    /// Open WebSocket observers.
    pub viewers: u64,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    /// Pane output the terminal emulator parsed exactly, in bytes (a counter).
    pub screen_parsed_bytes: u64,
    /// Pane output the terminal emulator skimmed for its control sequences (a counter).
    pub screen_skimmed_bytes: u64,
}

/// Renders everything in the Prometheus text exposition format (version 0.0.4).
pub fn render(
    metrics: &Metrics,
    output: &OutputCounts,
    gauges: &Gauges,
    tmux: &SharedHistogram,
    store: &SharedHistogram,
) -> String {
    let mut out = String::with_capacity(8192);
    render_gauges(&mut out, gauges);
    render_output_counters(&mut out, output, metrics);
    render_messages_and_requests(&mut out, metrics, output);
    render_limits_tasks_and_hooks(&mut out, metrics);
    render_worker_timings(&mut out, tmux, store);
    out
}

/// Writes a family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes a family that has one sample without labels.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Uptime, sessions, viewers and tickets: the gauges computed when scraped.
fn render_gauges(out: &mut String, gauges: &Gauges) {
    single(
        out,
        "orchestra_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        gauges.uptime_seconds,
    );
    family(
        out,
        "orchestra_sessions",
        "gauge",
        "Agent sessions by status and activity.",
    );
    for ((status, activity), n) in &gauges.sessions {
        let _ = writeln!(
            out,
            "orchestra_sessions{{status=\"{status}\",activity=\"{activity}\"}} {n}"
        );
    }
    single(
        out,
        "orchestra_viewers",
        "gauge",
        "Open WebSocket observers.",
        gauges.viewers,
    );
    single(
        out,
        "orchestra_screen_parsed_bytes_total",
        "counter",
        "Pane output the terminal emulator parsed exactly.",
        gauges.screen_parsed_bytes,
    );
    single(
        out,
        "orchestra_screen_skimmed_bytes_total",
        "counter",
        "Pane output the terminal emulator skimmed for its control sequences (a flood beyond panes.screen_parse_rate).",
        gauges.screen_skimmed_bytes,
    );
    family(out, "orchestra_tickets", "gauge", "Task tickets by status.");
    for (status, n) in &gauges.tickets {
        let _ = writeln!(out, "orchestra_tickets{{status=\"{status}\"}} {n}");
    }
}

/// The output path's counters: bytes read and delivered, resyncs, gaps, slow viewers,
/// pty checkpoints and evicted silent connections.
fn render_output_counters(out: &mut String, output: &OutputCounts, metrics: &Metrics) {
    let counters: [(&str, &str, u64); 9] = [
        (
            "orchestra_output_read_bytes_total",
            "Bytes of terminal output read from panes.",
            output.bytes_in,
        ),
        (
            "orchestra_output_delivered_bytes_total",
            "Bytes of terminal output frames written to viewers.",
            output.bytes_out,
        ),
        (
            "orchestra_viewer_resyncs_total",
            "Viewers that fell behind and were given a fresh screen.",
            output.resyncs,
        ),
        (
            "orchestra_terminal_gaps_total",
            "terminal_gap notices sent.",
            output.gaps,
        ),
        (
            "orchestra_slow_viewer_closes_total",
            "Viewers closed with 4001 for being too slow.",
            metrics.slow_viewer_closes,
        ),
        (
            "orchestra_output_stalls_total",
            "Times a pane's reading waited for a viewer half a backlog behind (at most panes.max_stall each).",
            metrics.output_stalls,
        ),
        (
            "orchestra_pty_checkpoints_total",
            "Screen checkpoints handed to the holders of pty sessions (what a restarted daemon shows).",
            metrics.pty_checkpoints,
        ),
        (
            "orchestra_silent_connections_evicted_total",
            "Connections that never sent a request, closed to admit a new one at limits.max_connections.",
            metrics.silent_connections_evicted,
        ),
        (
            "orchestra_answers_abandoned_total",
            "Hook replies and tool results closed unfinished: not taken whole within hooks.answer_timeout, or past hooks.max_connections waiting.",
            metrics.answers_abandoned,
        ),
    ];
    for (name, help, value) in counters {
        single(out, name, "counter", help, value);
    }
}

/// WebSocket messages by direction and type (live output frames included), HTTP requests by
/// route and status, and HTTP latency by route.
fn render_messages_and_requests(out: &mut String, metrics: &Metrics, output: &OutputCounts) {
    family(
        out,
        "orchestra_websocket_messages_total",
        "counter",
        "WebSocket messages by direction and type.",
    );
    let mut sent = metrics.ws_out.clone();
    *sent.entry("terminal_output").or_default() += output.frames_out;
    for (direction, map) in [("in", &metrics.ws_in), ("out", &sent)] {
        for (kind, n) in map {
            let _ = writeln!(
                out,
                "orchestra_websocket_messages_total{{direction=\"{direction}\",type=\"{kind}\"}} {n}"
            );
        }
    }
    family(
        out,
        "orchestra_http_requests_total",
        "counter",
        "HTTP requests by route and status.",
    );
    for ((route, status), n) in &metrics.http_requests {
        let _ = writeln!(
            out,
            "orchestra_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
    family(
        out,
        "orchestra_http_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to its answer, by route.",
    );
    for (route, histogram) in &metrics.http_latency {
        histogram_lines(
            out,
            "orchestra_http_request_duration_seconds",
            &format!("route=\"{route}\""),
            &LATENCY_BUCKETS,
            histogram,
        );
    }
}

/// Rate-limit refusals, task durations and hook events.
fn render_limits_tasks_and_hooks(out: &mut String, metrics: &Metrics) {
    family(
        out,
        "orchestra_rate_limited_total",
        "counter",
        "Requests refused by a rate limit, by limit.",
    );
    for (limit, n) in &metrics.rate_limited {
        let _ = writeln!(out, "orchestra_rate_limited_total{{limit=\"{limit}\"}} {n}");
    }
    family(
        out,
        "orchestra_task_duration_seconds",
        "histogram",
        "Durations of finished tasks, by final status.",
    );
    for (status, histogram) in &metrics.task_durations {
        histogram_lines(
            out,
            "orchestra_task_duration_seconds",
            &format!("status=\"{status}\""),
            &TASK_BUCKETS,
            histogram,
        );
    }
    family(
        out,
        "orchestra_hook_events_total",
        "counter",
        "Agent CLI hook events received, by event.",
    );
    for (event, n) in &metrics.hook_events {
        let _ = writeln!(out, "orchestra_hook_events_total{{event=\"{event}\"}} {n}");
    }
}

/// Timings and failures of the work threads do off the loop: tmux commands and store writes.
fn render_worker_timings(out: &mut String, tmux: &SharedHistogram, store: &SharedHistogram) {
    for (name, help, shared) in [
        (
            "orchestra_tmux_command_duration_seconds",
            "Time a tmux command took, on a worker thread.",
            tmux,
        ),
        (
            "orchestra_store_write_duration_seconds",
            "Time a task store write took (commit with fsync).",
            store,
        ),
    ] {
        family(out, name, "histogram", help);
        histogram_lines(out, name, "", &LATENCY_BUCKETS, &shared.snapshot());
    }
    single(
        out,
        "orchestra_tmux_command_failures_total",
        "counter",
        "tmux commands that failed or timed out.",
        tmux.failures.load(Ordering::Relaxed),
    );
    single(
        out,
        "orchestra_store_write_failures_total",
        "counter",
        "Task store writes that failed.",
        store.failures.load(Ordering::Relaxed),
    );
}

/// Writes one histogram's cumulative buckets, sum and count.
fn histogram_lines(out: &mut String, name: &str, labels: &str, bounds: &[f64], h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (i, bound) in bounds.iter().enumerate() {
        cumulative += h.counts.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", h.sum_nanos as f64 / 1e9);
    let _ = writeln!(out, "{name}_count{braces} {}", h.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let mut h = Histogram::default();
        h.observe(&LATENCY_BUCKETS, Duration::from_micros(300));
        h.observe(&LATENCY_BUCKETS, Duration::from_millis(3));
        h.observe(&LATENCY_BUCKETS, Duration::from_secs(60));
        let mut out = String::new();
        histogram_lines(&mut out, "x", "route=\"r\"", &LATENCY_BUCKETS, &h);
        assert!(
            out.contains("x_bucket{route=\"r\",le=\"0.0005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{route=\"r\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("x_bucket{route=\"r\",le=\"10\"} 2\n"), "{out}");
        assert!(
            out.contains("x_bucket{route=\"r\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_sum{route=\"r\"} 60.0033\n"), "{out}");
        assert!(out.contains("x_count{route=\"r\"} 3\n"), "{out}");
    }

    #[test]
    fn message_types_come_from_the_first_field() {
        assert_eq!(message_type(r#"{"type":"pong","id":1}"#), "pong");
        assert_eq!(message_type(r#"{"type":"made_up"}"#), "other");
        assert_eq!(message_type(r#"{"id":1,"type":"pong"}"#), "other");
        assert_eq!(type_label("terminal_output"), "terminal_output");
    }

    #[test]
    fn the_exposition_has_every_family_once() {
        let mut metrics = Metrics::default();
        metrics.http("/api/health", 200, Duration::from_millis(1));
        metrics.sent(r#"{"type":"pong"}"#);
        let shared = SharedHistogram::default();
        shared.observe(Duration::from_millis(4));
        shared.fail();
        let text = render(
            &metrics,
            &OutputCounts::default(),
            &Gauges::default(),
            &shared,
            &SharedHistogram::default(),
        );
        for family in [
            "orchestra_http_requests_total",
            "orchestra_tmux_command_duration_seconds",
            "orchestra_sessions",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {family} ")).count(),
                1,
                "{family}"
            );
        }
        assert!(
            text.contains("orchestra_http_requests_total{route=\"/api/health\",status=\"200\"} 1")
        );
        assert!(text.contains("orchestra_tmux_command_failures_total 1"));
        assert!(
            text.contains("orchestra_websocket_messages_total{direction=\"out\",type=\"pong\"} 1")
        );
    }
}
