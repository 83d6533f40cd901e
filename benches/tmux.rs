//! What one tmux command costs the daemon: a tmux process per command (what the daemon does,
//! on a worker thread) against a persistent control-mode client (`tmux -C`), for the
//! commands the daemon sends after an agent event: `display-message` (exit status),
//! `capture-pane` (a crash's last lines) and `list-panes -a` (the periodic pipe health
//! check) with 50 sessions on the server.
//!
//! Runs against its own tmux server on a private socket in a temporary directory, and
//! prints a Markdown table. `cargo bench --bench tmux [-- --calls N]`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orchestra::tmux::{self, CommandList, PaneId, Tmux};

/// Sessions on the server while measuring (the health check lists every pane).
const SESSIONS: usize = 50;

fn tmux_cmd(socket: &Path) -> Command {
    let mut command = Command::new("tmux");
    command
        .arg("-S")
        .arg(socket)
        .arg("-f")
        .arg("/dev/null")
        .env_remove("TMUX");
    command
}

/// Median and 99th percentile of `samples`, in microseconds.
fn summary(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

/// A `tmux -C` client: one command per line in, one `%begin … %end` block per command out.
struct ControlClient {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: BufReader<std::process::ChildStdout>,
}

impl ControlClient {
    fn attach(socket: &Path, session: &str) -> ControlClient {
        let mut child = tmux_cmd(socket)
            .args(["-C", "attach-session", "-t", session])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a control-mode client");
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        let mut client = ControlClient {
            child,
            input,
            output,
        };
        // The attach itself answers with an (empty) block; wait for it.
        client.read_block();
        client
    }

    /// Sends one command line and reads its block; returns the lines inside it.
    fn run(&mut self, line: &str) -> Vec<String> {
        self.input.write_all(line.as_bytes()).unwrap();
        self.input.write_all(b"\n").unwrap();
        self.input.flush().unwrap();
        self.read_block()
    }

    fn read_block(&mut self) -> Vec<String> {
        let mut inside = false;
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                self.output.read_line(&mut line).unwrap() > 0,
                "control client ended"
            );
            let line = line.trim_end_matches('\n');
            if line.starts_with("%begin") {
                inside = true;
            } else if line.starts_with("%end") || line.starts_with("%error") {
                assert!(!line.starts_with("%error"), "tmux error: {lines:?}");
                return lines;
            } else if inside {
                lines.push(line.to_string());
            }
            // Notifications (%session-changed, %output …) outside a block are skipped.
        }
    }
}

impl Drop for ControlClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Quotes `arg` for tmux's command parser (single quotes; no `'` in what we send).
fn quoted(arg: &str) -> String {
    assert!(!arg.contains('\''));
    format!("'{arg}'")
}

fn main() {
    let mut calls = 300usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--calls" {
            calls = args.next().and_then(|v| v.parse().ok()).expect("--calls N");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tmux.sock");
    for i in 0..SESSIONS {
        let status = tmux_cmd(&socket)
            .args([
                "new-session",
                "-d",
                "-s",
                &format!("bench-{i}"),
                "-x",
                "120",
                "-y",
                "40",
            ])
            .args(["sh", "-c", "seq 1 200; exec sleep 100000"])
            .status()
            .unwrap();
        assert!(status.success(), "tmux new-session");
    }
    let pane_out = tmux_cmd(&socket)
        .args(["display-message", "-p", "-t", "=bench-0:", "#{pane_id}"])
        .output()
        .unwrap();
    let pane = PaneId::parse(String::from_utf8_lossy(&pane_out.stdout).trim()).unwrap();
    let handle = Tmux::new(Path::new("tmux"), &socket, None, Duration::from_secs(10));
    let commands: Vec<(&str, CommandList, String)> = vec![
        (
            "display-message (exit status)",
            tmux::describe_pane(&pane).unwrap(),
            format!(
                "display-message -p -t {} {}",
                pane.as_str(),
                quoted(tmux::parse::PANE_FORMAT)
            ),
        ),
        (
            "capture-pane -S -20 (crash lines)",
            tmux::capture_tail(&pane, 20).unwrap(),
            format!("capture-pane -p -J -S -20 -t {}", pane.as_str()),
        ),
        (
            "list-panes -a, 50 sessions (health check)",
            tmux::list_panes().unwrap(),
            format!("list-panes -a -F {}", quoted(tmux::parse::PANE_FORMAT)),
        ),
    ];
    let mut control = ControlClient::attach(&socket, "bench-0");
    println!("`cargo bench --bench tmux` ({calls} calls each, {SESSIONS} sessions on the server)");
    println!();
    println!("| tmux command | process per command, p50 / p99 | control-mode client, p50 / p99 |");
    println!("|---|---|---|");
    let mut process_p50 = Vec::new();
    for (what, list, line) in &commands {
        // Both paths must give the same answer.
        let by_process = handle.run(list).expect("tmux command");
        let by_control = control.run(line).join("\n");
        assert_eq!(by_process.trim_end(), by_control.trim_end(), "{what}");
        let process: Vec<Duration> = (0..calls)
            .map(|_| {
                let start = Instant::now();
                handle.run(list).unwrap();
                start.elapsed()
            })
            .collect();
        let controlled: Vec<Duration> = (0..calls)
            .map(|_| {
                let start = Instant::now();
                control.run(line);
                start.elapsed()
            })
            .collect();
        let (p50, p99) = summary(process);
        let (c50, c99) = summary(controlled);
        process_p50.push(p50);
        println!("| {what} | {p50:.0} us / {p99:.0} us | {c50:.0} us / {c99:.0} us |");
    }
    let health = process_p50[2];
    println!();
    println!(
        "Worker time spent on tmux processes: the health check every 15 s (the default \
         `panes.health_interval`) {:.4}% of one worker; 100 agent exits a minute \
         (display-message + capture-pane each) {:.3}% of one worker.",
        health / 15e6 * 100.0,
        (process_p50[0] + process_p50[1]) * 100.0 / 60e6 * 100.0
    );
    drop(control);
    let _ = tmux_cmd(&socket).arg("kill-server").status();
}
