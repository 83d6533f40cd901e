//! End-to-end load tool: starts the real (release) daemon with a private tmux server on
//! loopback and measures, each against a baseline taken in the same run:
//!
//! - `throughput`: MB/s one viewer receives, versus a bare FIFO reader on `pipe-pane`;
//! - `viewers`: N viewers (default 100) on one pane, every byte hash-checked;
//! - `latency`: keystroke-to-echo p50/p99 through the daemon, versus tmux's own pipe path;
//! - `idle`: memory per idle observer connection and connect time (default 10,000);
//! - `python`: one viewer written with Python's asyncio `websockets` (what most scripts
//!   use), on each backend: MB/s, every byte checked, daemon CPU per MB (not in the default
//!   set: it needs a Python with `websockets`, made under `target/` on first use), against
//!   a bare Python reader of a pseudo-terminal; the daemon's CPU per byte and its emulator's
//!   share;
//! - `typing`: keystroke-to-echo p50/p99 on one agent while 4 others flood, against the
//!   same echo alone (not in the default set);
//! - `agents`: the daemon's CPU and memory with N idle agents (`--agents`, default 200) on
//!   each backend (not in the default set);
//! - `cluster`: two daemons over one `nats-server` (also not in the default set).
//!
//! `cargo bench --bench e2e` runs them all; `cargo bench --bench e2e -- latency idle` runs
//! some; `--mb N`, `--viewers N`, `--idle N`, `--samples N` change the sizes. Every loop is
//! bounded in count and time; everything it starts is cleaned up on exit.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::Message;

#[path = "../tests/support/daemon.rs"]
mod support;

use support::{DaemonProcess, Setup, Ws};

const LIMIT: Duration = Duration::from_secs(300);
const LINE: &str =
    "orchestra e2e benchmark line: the quick brown fox jumps over the lazy dog 0123456789";

struct Options {
    scenarios: Vec<String>,
    mb: usize,
    viewers: usize,
    idle: usize,
    samples: usize,
    agents: usize,
}

fn options() -> Options {
    let mut options = Options {
        scenarios: Vec::new(),
        mb: 100,
        viewers: 100,
        idle: 10_000,
        samples: 1000,
        agents: 200,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--mb" => options.mb = number("--mb"),
            "--viewers" => options.viewers = number("--viewers"),
            "--idle" => options.idle = number("--idle"),
            "--samples" => options.samples = number("--samples"),
            "--agents" => options.agents = number("--agents"),
            "--bench" => {}
            other if other.starts_with("--") => {}
            other => options.scenarios.push(other.to_string()),
        }
    }
    if options.scenarios.is_empty() {
        options.scenarios = [
            "throughput",
            "multi",
            "viewers",
            "latency",
            "hooks",
            "idle",
            "dashboard",
        ]
        .map(String::from)
        .to_vec();
    }
    options
}

/// The daemon under test, started by the tests' harness (temp dir, private tmux server,
/// everything it started ended on drop), with the bench's config and a control token.
struct Daemon {
    process: DaemonProcess,
    token: String,
}

impl Daemon {
    fn start(idle: usize) -> Daemon {
        Daemon::start_with(idle, "", Vec::new())
    }

    /// [`Daemon::start`] with `extra` TOML after the bench's config and `env` for the daemon.
    fn start_with(idle: usize, extra: &str, env: Vec<(String, String)>) -> Daemon {
        let setup = Setup {
            prefix: "orch-e2e",
            log_level: None,
            echo: |line| line.contains("WARN") || line.contains("ERROR"),
            env,
        };
        let process = DaemonProcess::start_in(setup, |dir, work| {
            let gen_script = write_script(
                dir,
                "gen.sh",
                &format!(
                    "#!/bin/sh\nwhile read -r _; do echo START; yes '{LINE}' | head -c \"$BYTES\"; echo; echo END; done\n"
                ),
            );
            let banner_script = write_script(
                dir,
                "banner.sh",
                &format!(
                    "#!/bin/sh\necho ready\nwhile read -r _; do yes '{LINE}' | head -c \"$BYTES\"; echo; echo END; done\n"
                ),
            );
            let echo_script =
                write_script(dir, "rawecho.sh", "#!/bin/sh\nstty raw -echo\nexec cat\n");
            format!(
                "workers = 4\n[limits]\nmax_connections = {}\n[sessions]\nallowed_roots = [\"{}\"]\nmax_sessions = 256\n\
                 [websocket]\nmax_subscriptions = 8\n\
                 [rate_limits]\nws_messages = {{ requests = 0, window = \"1m\" }}\nspawn = {{ requests = 0, window = \"1m\" }}\n\
                 [panes]\nbacklog_bytes = 33554432\nlive_frame_bytes = 33554432\n\
                 [agents.gen]\ncommand = [\"{}\"]\n[agents.banner]\ncommand = [\"{}\"]\n\
                 [agents.rawecho]\ncommand = [\"{}\"]\n\
                 [agents.gen_pty]\ncommand = [\"{}\"]\nbackend = \"pty\"\n\
                 [agents.rawecho_pty]\ncommand = [\"{}\"]\nbackend = \"pty\"\n\
                 [agents.hooked]\ncommand = [\"{}\"]\nhooks = \"claude\"\n{extra}\n",
                idle + 1000,
                work.display(),
                gen_script.display(),
                banner_script.display(),
                echo_script.display(),
                gen_script.display(),
                echo_script.display(),
                echo_script.display()
            )
        });
        let token = process.control();
        Daemon { process, token }
    }

    fn spawn(&self, agent_type: &str, env: Value) -> String {
        let body = json!({"agent_type": agent_type, "working_dir": self.process.work, "env": env});
        let value = self
            .process
            .post("/api/agents/spawn", &self.token, &body)
            .json();
        value["session_id"]
            .as_str()
            .unwrap_or_else(|| panic!("spawn failed: {value}"))
            .to_string()
    }

    fn ws(&self) -> Ws {
        let ws = self.process.ws(&self.token);
        let stream = &ws.socket.get_ref().0;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        ws
    }

    /// `GET path` with the bench's token, as JSON.
    fn get(&self, path: &str) -> Value {
        self.process.get(path, &self.token).json()
    }

    /// The daemon's temporary directory (its scripts, baselines' sockets and FIFOs).
    fn dir(&self) -> &Path {
        self.process.dir.path()
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn rss_kb(&self) -> u64 {
        rss_kb(self.pid())
    }
}

fn write_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map(|v| v.trim().trim_end_matches(" kB").parse().unwrap())
        .unwrap()
}

/// Subscribes and waits for the screen.
fn subscribe(ws: &mut Ws, session: &str) {
    ws.send(json!({"type": "subscribe_terminal", "session_id": session}));
    ws.recv_until("the screen", |message| {
        message["type"] == "terminal_output" && message["snapshot"] == true
    });
}

/// The generator's output between its markers as the pane's stream carries it.
fn expected_stream(bytes: usize) -> Vec<u8> {
    let line = format!("{LINE}\n");
    let body: Vec<u8> = line.bytes().cycle().take(bytes).collect();
    let mut out = Vec::with_capacity(bytes + bytes / 40);
    for b in body {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// FNV-1a, enough to compare streams without keeping them.
fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(hash, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}
const FNV_START: u64 = 0xcbf29ce484222325;

/// The number after `key` in a message, without parsing the JSON.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The `data` string of a `terminal_output` message, unescaped by a minimal scanner (the
/// daemon's encoder escapes only what JSON requires), so a viewer thread costs little CPU.
fn data_field(text: &str) -> String {
    let start = text.find("\"data\":\"").expect("data field") + 8;
    let mut out = String::with_capacity(text.len() - start);
    let mut chars = text[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(
                        char::from_u32(u32::from_str_radix(&hex, 16).unwrap())
                            .unwrap_or('\u{FFFD}'),
                    );
                }
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}

/// Reads every viewer's stream until END, one thread each: [`read_flood`]'s results.
fn read_floods(sockets: &mut [Ws], started: Instant) -> Vec<(u64, u64, Duration)> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = sockets
            .iter_mut()
            .map(|ws| scope.spawn(move || read_flood(ws, started)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Reads one viewer's stream until END; returns (hash of the body, raw bytes, elapsed).
fn read_flood(ws: &mut Ws, started: Instant) -> (u64, u64, Duration) {
    let mut text = String::new();
    let mut hash = FNV_START;
    let mut started_body = false;
    let mut raw = 0u64;
    loop {
        assert!(started.elapsed() < LIMIT, "flood did not finish");
        let Message::Text(message) = ws.socket.read().unwrap() else {
            continue;
        };
        if !message.starts_with("{\"type\":\"terminal_output\"")
            || message.contains("\"snapshot\":true")
        {
            continue;
        }
        raw += number_after(&message, "\"next_offset\":").unwrap()
            - number_after(&message, "\"offset\":").unwrap();
        text.push_str(&data_field(&message));
        if !started_body {
            if let Some(i) = text.find("START\r\n") {
                text.drain(..i + 7);
                started_body = true;
            } else {
                continue;
            }
        }
        if let Some(end) = text.find("\r\nEND\r\n") {
            hash = fnv(hash, &text.as_bytes()[..end]);
            return (hash, raw, started.elapsed());
        }
        // Keep a short tail in case a marker is split across chunks.
        let keep = text.len().saturating_sub(16);
        let keep = (0..=keep)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        hash = fnv(hash, &text.as_bytes()[..keep]);
        text.drain(..keep);
    }
}

/// Reads a flood as cheaply as a client can (no JSON parsing: offsets are picked out of the
/// text), so that the client is not what limits the measurement. Returns the raw bytes the
/// stream covered until END, and the time.
fn count_flood(ws: &mut Ws, started: Instant, bytes: usize) -> (u64, Duration) {
    let mut first = None;
    let mut last = 0;
    loop {
        assert!(started.elapsed() < LIMIT, "flood did not finish");
        let Message::Text(text) = ws.socket.read().unwrap() else {
            continue;
        };
        if !text.starts_with("{\"type\":\"terminal_output\"") || text.contains("\"snapshot\":true")
        {
            continue;
        }
        let offset = number_after(&text, "\"offset\":").unwrap();
        let next = number_after(&text, "\"next_offset\":").unwrap();
        assert!(
            first.is_none() || offset == last,
            "offsets must be contiguous"
        );
        first.get_or_insert(offset);
        last = next;
        if text.contains("END\\r\\n") && last - first.unwrap() >= bytes as u64 {
            return (last - first.unwrap(), started.elapsed());
        }
    }
}

/// Baseline without tmux: the same payload written into a pseudo-terminal and read straight
/// from its master (what a direct-PTY backend could reach at best). Returns MB/s.
fn pty_baseline(bytes: usize) -> f64 {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 50,
            cols: 200,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("a pseudo-terminal");
    let mut command = CommandBuilder::new("sh");
    command.args([
        "-c",
        &format!("yes '{LINE}' | head -c {bytes}; echo; echo END"),
    ]);
    let mut reader = pty.master.try_clone_reader().unwrap();
    let started = Instant::now();
    let mut child = pty.slave.spawn_command(command).unwrap();
    drop(pty.slave);
    let (total, _) = read_until_end(&mut reader, b"END\r\n");
    let elapsed = started.elapsed();
    let _ = child.wait();
    total as f64 / elapsed.as_secs_f64() / 1e6
}

/// Reads `reader` until `marker` (at most 8 bytes) has gone by, or the end. Returns the
/// bytes read and when the first of them arrived.
fn read_until_end(reader: &mut impl Read, marker: &[u8]) -> (usize, Option<Instant>) {
    let mut buf = vec![0u8; 1 << 16];
    let mut tail = Vec::new();
    let mut total = 0usize;
    let mut first = None;
    loop {
        // A pseudo-terminal's master reports the end as an error (EIO).
        let n = reader.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        total += n;
        tail.extend_from_slice(&buf[..n]);
        if tail.windows(marker.len()).any(|w| w == marker) {
            break;
        }
        let cut = tail.len().saturating_sub(8);
        tail.drain(..cut);
    }
    (total, first)
}

/// Baseline: the same generator in a plain tmux session whose pipe-pane writes to a FIFO
/// the bench reads directly. Returns MB/s.
fn fifo_baseline(dir: &Path, bytes: usize) -> f64 {
    let socket = dir.join("baseline.sock");
    let fifo = dir.join("baseline.fifo");
    let _ = std::fs::remove_file(&fifo);
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let gen_script = dir.join("gen.sh");
    let status = Command::new("tmux")
        .arg("-S")
        .arg(&socket)
        .args([
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "base",
            "-x",
            "200",
            "-y",
            "50",
            "-e",
        ])
        .arg(format!("BYTES={bytes}"))
        .arg(&gen_script)
        .args([";", "pipe-pane", "-O", "-t", "base"])
        .arg(format!("exec cat > {}", fifo.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let reader = std::thread::spawn(move || {
        let mut file = std::fs::File::open(&fifo).unwrap();
        let (total, started) = read_until_end(&mut file, b"\r\nEND\r\n");
        (total, started.expect("output arrived").elapsed())
    });
    // Trigger the generator.
    std::thread::sleep(Duration::from_millis(300));
    Command::new("tmux")
        .arg("-S")
        .arg(&socket)
        .args(["send-keys", "-t", "base", "Enter"])
        .status()
        .unwrap();
    let (total, elapsed) = reader.join().unwrap();
    Command::new("tmux")
        .arg("-S")
        .arg(&socket)
        .arg("kill-server")
        .status()
        .unwrap();
    total as f64 / elapsed.as_secs_f64() / 1e6
}

/// CPU seconds (user + system) a process has used, with its threads.
fn cpu_seconds(pid: u32) -> f64 {
    cpu_seconds_of(&format!("/proc/{pid}/stat"))
}

/// CPU seconds (user + system) in a `stat` file of `/proc`.
fn cpu_seconds_of(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds one named thread of a process has used (`comm`, cut to 15 bytes by Linux).
fn thread_cpu_seconds(pid: u32, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let name = &name[..name.len().min(15)];
    tasks
        .filter_map(|task| task.ok())
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .map(|task| {
            let tid: u32 = task.file_name().to_string_lossy().parse().unwrap_or(0);
            cpu_seconds_of(&format!("/proc/{pid}/task/{tid}/stat"))
        })
        .sum()
}

/// Pid of the daemon's tmux server.
fn tmux_server_pid(daemon: &Daemon) -> u32 {
    let output = daemon.process.tmux(&["display-message", "-p", "#{pid}"]);
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// One row of the Performance table (docs/performance.md): what was measured, and the figure.
type Row = (String, String);

/// Pid of the pty holder of `session` (its command line names the session's socket).
fn holder_pid(daemon: &Daemon, session: &str) -> u32 {
    let socket = daemon.process.state.join(format!("pty/{session}.sock"));
    support::processes_mentioning(&socket)
        .into_iter()
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains("--serve")
        })
        .expect("the session's pty holder")
}

/// One flood through the daemon to one viewer: (raw bytes, wall time, daemon CPU-s, CPU-s of
/// the process between the agent and the daemon: tmux's server, or the pty holder).
fn flood_once(daemon: &Daemon, agent_type: &str, bytes: usize) -> (u64, Duration, f64, f64) {
    let session = daemon.spawn(agent_type, json!({"BYTES": bytes.to_string()}));
    let mut ws = daemon.ws();
    subscribe(&mut ws, &session);
    let helper = if agent_type.ends_with("_pty") {
        holder_pid(daemon, &session)
    } else {
        tmux_server_pid(daemon)
    };
    let (daemon_cpu, helper_cpu) = (cpu_seconds(daemon.pid()), cpu_seconds(helper));
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "\r"}));
    let started = Instant::now();
    let (raw, elapsed) = count_flood(&mut ws, started, bytes);
    let daemon_used = cpu_seconds(daemon.pid()) - daemon_cpu;
    let helper_used = cpu_seconds(helper) - helper_cpu;
    (raw, elapsed, daemon_used, helper_used)
}

fn throughput(daemon: &Daemon, mb: usize) -> Vec<Row> {
    let bytes = mb * 1_000_000;
    let pty = pty_baseline(bytes);
    let baseline = fifo_baseline(daemon.dir(), bytes);
    let (raw, elapsed, daemon_used, tmux_used) = flood_once(daemon, "gen", bytes);
    let through = raw as f64 / elapsed.as_secs_f64() / 1e6;
    let (pty_raw, pty_elapsed, pty_daemon, holder_used) = flood_once(daemon, "gen_pty", bytes);
    let pty_through = pty_raw as f64 / pty_elapsed.as_secs_f64() / 1e6;
    let per_mb = |cpu: f64, raw: u64| cpu * 1e3 / (raw as f64 / 1e6);
    let (tmux_total, pty_total) = (
        per_mb(daemon_used + tmux_used, raw),
        per_mb(pty_daemon + holder_used, pty_raw),
    );
    println!(
        "throughput: {mb} MB of plain text, one viewer. Bare pseudo-terminal reader {pty:.1} MB/s; \
         bare FIFO on tmux pipe-pane {baseline:.1} MB/s; tmux backend {through:.1} MB/s (daemon \
         {daemon_used:.2} CPU-s, tmux {tmux_used:.2}); pty backend {pty_through:.1} MB/s (daemon \
         {pty_daemon:.2} CPU-s, holder {holder_used:.2}); offsets contiguous, every byte accounted for"
    );
    vec![
        (
            format!("one viewer, {mb} MB of plain text, `pty` backend"),
            format!(
                "{pty_through:.1} MB/s = {:.2}x a bare reader of a pseudo-terminal in the same run \
                 ({pty:.1} MB/s) and {:.2}x the tmux backend; every byte accounted for",
                pty_through / pty,
                pty_through / through
            ),
        ),
        (
            format!("one viewer, {mb} MB of plain text, `tmux` backend"),
            format!(
                "{through:.1} MB/s, {:.0}% of a bare FIFO reader on `pipe-pane` in the same run \
                 ({baseline:.1} MB/s); every byte accounted for",
                through / baseline * 100.0
            ),
        ),
        (
            "total CPU per MB streamed (daemon + tmux or holder)".to_string(),
            format!(
                "`pty` {pty_total:.1} ms (daemon {:.1}, holder {:.2}) = {:.2}x `tmux` {tmux_total:.1} ms \
                 (daemon {:.1}, tmux server {:.1}); the daemon's figure includes its terminal emulator",
                per_mb(pty_daemon, pty_raw),
                per_mb(holder_used, pty_raw),
                pty_total / tmux_total,
                per_mb(daemon_used, raw),
                per_mb(tmux_used, raw),
            ),
        ),
    ]
}

/// `agents` generators flooding at once in bare tmux (no daemon), their sessions spread over
/// `servers` tmux servers, each pane's `pipe-pane` into a FIFO read here. Returns the
/// aggregate MB/s.
fn sharded_tmux(dir: &Path, servers: usize, agents: usize, bytes: usize) -> f64 {
    let gen_script = dir.join("gen.sh");
    let socket = |k: usize| dir.join(format!("shard{servers}-{k}.sock"));
    let mut readers = Vec::new();
    for i in 0..agents {
        let fifo = dir.join(format!("shard{servers}-{i}.fifo"));
        let _ = std::fs::remove_file(&fifo);
        assert!(
            Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let status = Command::new("tmux")
            .arg("-S")
            .arg(socket(i % servers))
            .args(["-f", "/dev/null", "new-session", "-d", "-s"])
            .arg(format!("g{i}"))
            .args(["-x", "200", "-y", "50", "-e"])
            .arg(format!("BYTES={bytes}"))
            .arg(&gen_script)
            .args([";", "pipe-pane", "-O", "-t"])
            .arg(format!("g{i}"))
            .arg(format!("exec cat > {}", fifo.display()))
            .status()
            .unwrap();
        assert!(status.success());
        readers.push(std::thread::spawn(move || {
            let mut file = std::fs::File::open(&fifo).unwrap();
            let (total, _) = read_until_end(&mut file, b"\r\nEND\r\n");
            (total, Instant::now())
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    for i in 0..agents {
        Command::new("tmux")
            .arg("-S")
            .arg(socket(i % servers))
            .args(["send-keys", "-t"])
            .arg(format!("g{i}"))
            .arg("Enter")
            .status()
            .unwrap();
    }
    let results: Vec<(usize, Instant)> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    for k in 0..servers {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(socket(k))
            .arg("kill-server")
            .status();
    }
    let total: usize = results.iter().map(|r| r.0).sum();
    let last = results.iter().map(|r| r.1).max().unwrap();
    total as f64 / (last - started).as_secs_f64() / 1e6
}

/// `agents` sessions of `agent_type` that flood `bytes` when told, each with a subscribed
/// viewer of its own.
fn flooders(
    daemon: &Daemon,
    agent_type: &str,
    agents: usize,
    bytes: usize,
) -> (Vec<String>, Vec<Ws>) {
    let sessions: Vec<String> = (0..agents)
        .map(|_| daemon.spawn(agent_type, json!({"BYTES": bytes.to_string()})))
        .collect();
    let sockets = sessions
        .iter()
        .map(|session| {
            let mut ws = daemon.ws();
            subscribe(&mut ws, session);
            ws
        })
        .collect();
    (sessions, sockets)
}

/// Tells each of [`flooders`]' sessions to flood.
fn start_floods(sockets: &mut [Ws], sessions: &[String]) {
    for (ws, session) in sockets.iter_mut().zip(sessions) {
        ws.send(json!({"type": "terminal_input", "session_id": session, "data": "\r"}));
    }
}

/// `agents` sessions of `agent_type` flooding at once through the daemon, one viewer each.
/// Returns the aggregate MB/s and the daemon's CPU-s.
fn daemon_floods(daemon: &Daemon, agent_type: &str, agents: usize, bytes: usize) -> (f64, f64) {
    let (sessions, mut sockets) = flooders(daemon, agent_type, agents, bytes);
    let cpu = cpu_seconds(daemon.pid());
    let started = Instant::now();
    start_floods(&mut sockets, &sessions);
    let raws: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = sockets
            .iter_mut()
            .map(|ws| scope.spawn(move || count_flood(ws, started, bytes).0))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    let used = cpu_seconds(daemon.pid()) - cpu;
    (
        raws.iter().sum::<u64>() as f64 / elapsed.as_secs_f64() / 1e6,
        used,
    )
}

fn multi(daemon: &Daemon, mb: usize) -> Vec<Row> {
    const AGENTS: usize = 8;
    let bytes = mb * 1_000_000 / AGENTS;
    let dir = daemon.dir();
    let shards: Vec<(usize, f64)> = [1, 2, 4]
        .into_iter()
        .map(|servers| (servers, sharded_tmux(dir, servers, AGENTS, bytes)))
        .collect();
    let (through_tmux, cpu_tmux) = daemon_floods(daemon, "gen", AGENTS, bytes);
    let (through_pty, cpu_pty) = daemon_floods(daemon, "gen_pty", AGENTS, bytes);
    let shard_text: Vec<String> = shards
        .iter()
        .map(|(servers, rate)| {
            format!(
                "{servers} server{}: {rate:.1} MB/s",
                if *servers == 1 { "" } else { "s" }
            )
        })
        .collect();
    println!(
        "multi: {AGENTS} agents x {} MB flooding at once. Bare tmux (FIFO readers): {}. Through \
         the daemon, one viewer each: tmux backend {through_tmux:.1} MB/s (daemon {cpu_tmux:.2} \
         CPU-s), pty backend {through_pty:.1} MB/s (daemon {cpu_pty:.2} CPU-s)",
        bytes / 1_000_000,
        shard_text.join(", ")
    );
    vec![(
        format!(
            "{AGENTS} agents flooding at once, {} MB each",
            bytes / 1_000_000
        ),
        format!(
            "aggregate through the daemon: `pty` {through_pty:.1} MB/s, `tmux` {through_tmux:.1} \
             MB/s; bare tmux with FIFO readers and no daemon, sessions spread over {}",
            shard_text.join(", ")
        ),
    )]
}

fn viewers(daemon: &Daemon, count: usize, mb: usize) -> Vec<Row> {
    let bytes = mb * 1_000_000;
    let session = daemon.spawn("gen", json!({"BYTES": bytes.to_string()}));
    let mut sockets: Vec<Ws> = (0..count).map(|_| daemon.ws()).collect();
    for ws in &mut sockets {
        subscribe(ws, &session);
    }
    let rss_before = daemon.rss_kb();
    let (daemon_cpu, client_cpu) = (cpu_seconds(daemon.pid()), cpu_seconds(std::process::id()));
    let mut trigger = daemon.ws();
    let started = Instant::now();
    trigger.send(json!({"type": "terminal_input", "session_id": session, "data": "\r"}));
    let results = read_floods(&mut sockets, started);
    let expected = fnv(FNV_START, &expected_stream(bytes));
    let exact = results.iter().filter(|(h, _, _)| *h == expected).count();
    assert_eq!(exact, count, "every viewer must receive every byte");
    let slowest = results.iter().map(|r| r.2).max().unwrap();
    let raw = results[0].1;
    let daemon_used = cpu_seconds(daemon.pid()) - daemon_cpu;
    let clients_used = cpu_seconds(std::process::id()) - client_cpu;
    let aggregate = raw as f64 * count as f64 / slowest.as_secs_f64() / 1e6;
    println!(
        "viewers: {count} viewers x {mb} MB, all {exact} byte-exact (hash-checked); last viewer done \
         after {:.2}s = {:.1} MB/s per viewer, {:.1} MB/s aggregate; daemon RSS {} -> {} MiB; CPU: \
         daemon {:.2}s, the {count} client threads {:.2}s",
        slowest.as_secs_f64(),
        raw as f64 / slowest.as_secs_f64() / 1e6,
        aggregate,
        rss_before / 1024,
        daemon.rss_kb() / 1024,
        daemon_used,
        clients_used,
    );
    vec![(
        format!("{count} viewers on one pane, {mb} MB each"),
        format!(
            "all {exact} streams byte-exact (hash-checked), {aggregate:.0} MB/s aggregate; the \
             daemon used {daemon_used:.2} CPU-s against the clients' {clients_used:.1} s, \
             {:.2} ns per delivered byte",
            daemon_used * 1e9 / (raw as f64 * count as f64)
        ),
    )]
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn latency(daemon: &Daemon, samples: usize) -> Vec<Row> {
    // Baseline: tmux's own path, a raw-echo pane with pipe-pane -I -O wired to two FIFOs.
    let dir = daemon.dir();
    let socket = dir.join("latency.sock");
    let (fifo_in, fifo_out) = (dir.join("in.fifo"), dir.join("out.fifo"));
    for fifo in [&fifo_in, &fifo_out] {
        let _ = std::fs::remove_file(fifo);
        assert!(Command::new("mkfifo").arg(fifo).status().unwrap().success());
    }
    let status = Command::new("tmux")
        .arg("-S")
        .arg(&socket)
        .args([
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "lat",
            "-x",
            "200",
            "-y",
            "50",
        ])
        .arg(dir.join("rawecho.sh"))
        .args([";", "pipe-pane", "-I", "-O", "-t", "lat"])
        // A background job's stdin is /dev/null, so hand it the pane's output on fd 3.
        .arg(format!(
            "exec 3<&0; cat <&3 > {} & exec cat < {}",
            fifo_out.display(),
            fifo_in.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let mut input = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo_in)
        .unwrap();
    let mut output = std::fs::File::open(&fifo_out).unwrap();
    std::thread::sleep(Duration::from_millis(300)); // let stty raw take effect
    let mut baseline = echo_round_trips(&mut input, &mut output, samples, || true);
    Command::new("tmux")
        .arg("-S")
        .arg(&socket)
        .arg("kill-server")
        .status()
        .unwrap();

    let (mut through, _) = keystrokes(daemon, "rawecho", samples);
    let (mut through_pty, pty_cpu) = keystrokes(daemon, "rawecho_pty", samples);
    let mut bare_pty = bare_pty_echo(daemon.dir(), samples);
    let mut transport = pings(daemon, samples);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    if std::env::var_os("E2E_WINDOWS").is_some() {
        for (i, window) in through.chunks(100).enumerate() {
            let mut window = window.to_vec();
            eprintln!("window {i}: p50 {:.0} us", us(percentile(&mut window, 0.5)));
        }
    }
    let (b50, b99) = (
        us(percentile(&mut baseline, 0.5)),
        us(percentile(&mut baseline, 0.99)),
    );
    let (t50, t99) = (
        us(percentile(&mut through, 0.5)),
        us(percentile(&mut through, 0.99)),
    );
    let (p50, p99) = (
        us(percentile(&mut through_pty, 0.5)),
        us(percentile(&mut through_pty, 0.99)),
    );
    let (e50, e99) = (
        us(percentile(&mut bare_pty, 0.5)),
        us(percentile(&mut bare_pty, 0.99)),
    );
    let w50 = us(percentile(&mut transport, 0.5));
    println!(
        "latency: keystroke to echo over {samples} samples; tmux pipe path p50 {b50:.0} us p99 \
         {b99:.0} us; through the daemon, tmux backend p50 {t50:.0} us p99 {t99:.0} us; bare \
         pseudo-terminal echo p50 {e50:.0} us p99 {e99:.0} us; through the daemon, pty backend p50 \
         {p50:.0} us p99 {p99:.0} us; a JSON ping on the same kind of connection p50 {w50:.0} us",
    );
    vec![
        (
            format!("keystroke to echo, `pty` backend, {samples} samples"),
            format!(
                "p50 {p50:.0} us, p99 {p99:.0} us (WebSocket in, master, WebSocket out) = {:.2}x \
                 a bare pseudo-terminal echo in the same run (p50 {e50:.0} us, p99 {e99:.0} us); \
                 without the WebSocket round trip itself (a JSON ping, p50 {w50:.0} us) the \
                 terminal's part is {:.0} us = {:.2}x the bare echo; against the restated \
                 baseline (that ping plus the bare echo, {:.0} us) the p50 is {:.2}x; the \
                 daemon's CPU per keystroke {:.0} us (the rest is waiting for wake-ups)",
                p50 / e50,
                p50 - w50,
                (p50 - w50) / e50,
                w50 + e50,
                p50 / (w50 + e50),
                pty_cpu * 1e6
            ),
        ),
        (
            format!("keystroke to echo, `tmux` backend, {samples} samples"),
            format!(
                "p50 {t50:.0} us, p99 {t99:.0} us through the daemon (WebSocket in, pane pipe, \
                 WebSocket out); tmux's own pipe path in the same run p50 {b50:.0} us, p99 {b99:.0} us"
            ),
        ),
    ]
}

/// A raw-mode echo program on a bare pseudo-terminal: a key written to the master until its
/// echo is read back (what the `pty` backend could reach at best).
fn bare_pty_echo(dir: &Path, samples: usize) -> Vec<Duration> {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 50,
            cols: 200,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("a pseudo-terminal");
    let mut child = pty
        .slave
        .spawn_command(CommandBuilder::new(dir.join("rawecho.sh")))
        .unwrap();
    drop(pty.slave);
    let mut reader = pty.master.try_clone_reader().unwrap();
    let mut writer = pty.master.take_writer().unwrap();
    std::thread::sleep(Duration::from_millis(300)); // let stty raw take effect
    let times = echo_round_trips(&mut writer, &mut reader, samples, || true);
    let _ = child.kill();
    let _ = child.wait();
    times
}

/// Typing with no daemon while `floods` bare pseudo-terminals run the flood generator
/// (`bytes` each), every one read by its own thread as fast as it can: keys to a raw echo on
/// another bare pseudo-terminal, timed for as long as every flood runs (at most `samples`).
/// What the kernel's terminal layer alone allows on this machine under that load.
fn bare_typing(dir: &Path, floods: usize, bytes: usize, samples: usize) -> Vec<Duration> {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let size = PtySize {
        rows: 50,
        cols: 200,
        pixel_width: 0,
        pixel_height: 0,
    };
    let open = |program: &str, env: Option<(&str, String)>| {
        let pty = native_pty_system()
            .openpty(size)
            .expect("a pseudo-terminal");
        let mut command = CommandBuilder::new(dir.join(program));
        if let Some((key, value)) = env {
            command.env(key, value);
        }
        let child = pty.slave.spawn_command(command).unwrap();
        drop(pty.slave);
        (pty.master, child)
    };
    let (echo, mut echo_child) = open("rawecho.sh", None);
    let mut generators: Vec<_> = (0..floods)
        .map(|_| open("gen.sh", Some(("BYTES", bytes.to_string()))))
        .collect();
    std::thread::sleep(Duration::from_millis(300)); // let stty raw take effect
    let finished = AtomicUsize::new(0);
    let times = std::thread::scope(|scope| {
        for (master, _) in &generators {
            let mut reader = master.try_clone_reader().unwrap();
            master.take_writer().unwrap().write_all(b"\r").unwrap();
            let finished = &finished;
            scope.spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                let (mut buf, mut total) = (vec![0u8; 65536], 0);
                // Bounded: the flood's bytes, its END line, or two minutes.
                while total < bytes && Instant::now() < deadline {
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n,
                    }
                }
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }
        std::thread::sleep(Duration::from_millis(200)); // let the floods get going first
        let mut reader = echo.try_clone_reader().unwrap();
        let mut writer = echo.take_writer().unwrap();
        let times = echo_round_trips(&mut writer, &mut reader, samples, || {
            finished.load(Ordering::SeqCst) == 0
        });
        // Ending the generators (their terminal hangs up) ends the reader threads, which the
        // scope joins.
        for (_, child) in generators.iter_mut() {
            let _ = child.kill();
        }
        times
    });
    for (_, child) in generators.iter_mut() {
        let _ = child.wait();
    }
    let _ = echo_child.kill();
    let _ = echo_child.wait();
    times
}

/// Up to `samples` keys written to `input`, for as long as `keep_going` says, each timed
/// until its echo is read from `output`.
fn echo_round_trips(
    input: &mut impl Write,
    output: &mut impl Read,
    samples: usize,
    keep_going: impl Fn() -> bool,
) -> Vec<Duration> {
    let mut buf = [0u8; 256];
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        if !keep_going() {
            break;
        }
        let key = [b'a' + (i % 26) as u8];
        let start = Instant::now();
        input.write_all(&key).unwrap();
        loop {
            let n = output.read(&mut buf).unwrap();
            assert!(n > 0, "the echo's output closed");
            if buf[..n].contains(&key[0]) {
                break;
            }
        }
        times.push(start.elapsed());
    }
    times
}

/// Keystrokes through the daemon: `terminal_input` in, the echo's `terminal_output` out.
/// Returns the round trips and the daemon's CPU time per keystroke.
fn keystrokes(daemon: &Daemon, agent_type: &str, samples: usize) -> (Vec<Duration>, f64) {
    let session = daemon.spawn(agent_type, json!({}));
    let cpu = cpu_seconds(daemon.pid());
    let through = keystrokes_through(daemon, &session, samples);
    let cpu_per_key = (cpu_seconds(daemon.pid()) - cpu) / samples as f64;
    (through, cpu_per_key)
}

/// Round trips of `samples` keystrokes typed into `session` through `viewer`'s WebSocket
/// (the session may run on another host of a cluster).
fn keystrokes_through(viewer: &Daemon, session: &str, samples: usize) -> Vec<Duration> {
    let mut ws = viewer.ws();
    subscribe(&mut ws, session);
    std::thread::sleep(Duration::from_millis(300));
    keystroke_samples(&mut ws, session, samples, || true)
}

/// Up to `samples` keystroke round trips on `ws` (subscribed to `session`), for as long as
/// `keep_going` says.
fn keystroke_samples(
    ws: &mut Ws,
    session: &str,
    samples: usize,
    keep_going: impl Fn() -> bool,
) -> Vec<Duration> {
    let mut through = Vec::with_capacity(samples);
    for i in 0..samples {
        if !keep_going() {
            break;
        }
        let key = ((b'a' + (i % 26) as u8) as char).to_string();
        let start = Instant::now();
        ws.send(json!({"type": "terminal_input", "session_id": session, "data": key}));
        loop {
            let message = ws.recv();
            assert_ne!(
                message["type"], "error",
                "the daemon refused a keystroke: {message}"
            );
            if message["type"] == "terminal_output"
                && message["data"].as_str().unwrap().contains(&key)
            {
                break;
            }
        }
        through.push(start.elapsed());
    }
    through
}

/// Typing while others flood: keystroke-to-echo on one agent while 4 other agents of the
/// same backend flood output to their own viewers (Rust clients), against the same echo
/// with nothing else running, in the same run. Only keystrokes taken while every flood
/// still ran count.
fn typing(daemon: &Daemon, mb: usize, samples: usize) -> Vec<Row> {
    const FLOODS: usize = 4;
    let bytes = mb * 1_000_000 / FLOODS;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut rows = Vec::new();
    for (flooder, echo, backend) in [
        ("gen_pty", "rawecho_pty", "pty"),
        ("gen", "rawecho", "tmux"),
    ] {
        let (mut quiet, _) = keystrokes(daemon, echo, samples);
        let mut bare = if backend == "pty" {
            bare_typing(daemon.dir(), FLOODS, bytes, samples)
        } else {
            Vec::new()
        };
        let echo_session = daemon.spawn(echo, json!({}));
        let mut typist = daemon.ws();
        subscribe(&mut typist, &echo_session);
        let (sessions, mut sockets) = flooders(daemon, flooder, FLOODS, bytes);
        std::thread::sleep(Duration::from_millis(300)); // let stty raw take effect
        let started = Instant::now();
        start_floods(&mut sockets, &sessions);
        let finished = std::sync::atomic::AtomicUsize::new(0);
        let mut busy = std::thread::scope(|scope| {
            for ws in sockets.iter_mut() {
                let finished = &finished;
                scope.spawn(move || {
                    count_flood(ws, started, bytes);
                    finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
            // Let the floods get going first.
            std::thread::sleep(Duration::from_millis(200));
            keystroke_samples(&mut typist, &echo_session, samples, || {
                finished.load(std::sync::atomic::Ordering::SeqCst) == 0
            })
        });
        let flood_seconds = started.elapsed().as_secs_f64();
        let taken = busy.len();
        assert!(
            taken > 0,
            "the floods ended before any keystroke: raise --mb"
        );
        let (q50, q99) = (
            us(percentile(&mut quiet, 0.5)),
            us(percentile(&mut quiet, 0.99)),
        );
        let (b50, b99) = (
            us(percentile(&mut busy, 0.5)),
            us(percentile(&mut busy, 0.99)),
        );
        // No daemon: the same floods on bare pseudo-terminals read by threads of this process.
        let bare_text = if bare.is_empty() {
            String::new()
        } else {
            let (n50, n99) = (
                us(percentile(&mut bare, 0.5)),
                us(percentile(&mut bare, 0.99)),
            );
            format!(
                "; with no daemon ({FLOODS} bare pseudo-terminals flooding the same bytes, read \
                 by threads of the bench, keys to a raw echo on a fifth): p50 {n50:.0} us, p99 \
                 {n99:.0} us over {} keystrokes",
                bare.len()
            )
        };
        println!(
            "typing {backend}: {taken} keystrokes during {FLOODS} floods of {bytes} bytes \
             ({flood_seconds:.1} s): p50 {b50:.0} us p99 {b99:.0} us; alone p50 {q50:.0} us p99 \
             {q99:.0} us{bare_text}"
        );
        rows.push((
            format!("keystroke to echo while {FLOODS} other agents flood, `{backend}` backend"),
            format!(
                "p50 {b50:.0} us, p99 {b99:.0} us over {taken} keystrokes taken while all {FLOODS} \
                 floods ran ({} MB each, Rust viewers); the same echo with nothing else running: \
                 p50 {q50:.0} us, p99 {q99:.0} us{bare_text}",
                bytes / 1_000_000
            ),
        ));
    }
    rows
}

/// The transport alone: a JSON `ping` answered with `pong` on a connection like the one
/// keystrokes take (client encode, loopback, the daemon's WebSocket and JSON, back).
fn pings(daemon: &Daemon, samples: usize) -> Vec<Duration> {
    let mut ws = daemon.ws();
    (0..samples)
        .map(|_| {
            let start = Instant::now();
            ws.send(json!({"type": "ping"}));
            while ws.recv()["type"] != "pong" {}
            start.elapsed()
        })
        .collect()
}

/// Hook round trip: an agent's hook fires (`orchestra hook EVENT`, the program Claude Code
/// runs, started here as the CLI would start it) until the `agent_status` it causes reaches
/// a WebSocket client; and the same from the moment the message is on the hook socket.
fn hooks(daemon: &Daemon, samples: usize) -> Vec<Row> {
    let session = daemon.spawn("hooked", json!({}));
    let mut ws = daemon.ws();
    // The agent's own hook variables, as its CLI has them.
    let detail: Value = daemon.get(&format!("/api/agents/{session}"));
    let pid = detail["pid"].as_u64().unwrap();
    // The pane's first program execs the agent a moment after the spawn is answered.
    let env: Vec<(String, String)> = (0..500)
        .find_map(|_| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let env: Vec<(String, String)> = environ
                .split(|b| *b == 0)
                .filter_map(|kv| {
                    let kv = String::from_utf8_lossy(kv);
                    let (k, v) = kv.split_once('=')?;
                    k.starts_with("ORCHESTRA_HOOK_")
                        .then(|| (k.to_string(), v.to_string()))
                })
                .collect();
            if env.len() >= 2 {
                Some(env)
            } else {
                std::thread::sleep(Duration::from_millis(10));
                None
            }
        })
        .expect("the agent's hook variables");
    let var = |name: &str| env.iter().find(|(k, _)| k == name).unwrap().1.clone();
    let (socket, credential) = (var("ORCHESTRA_HOOK_SOCKET"), var("ORCHESTRA_HOOK_TOKEN"));
    let wait_for = |ws: &mut Ws, activity: &str| loop {
        let message = ws.recv();
        if message["type"] == "agent_status"
            && message["session_id"] == session.as_str()
            && message["activity"] == activity
        {
            return;
        }
    };
    let event = |i: usize| {
        if i.is_multiple_of(2) {
            ("UserPromptSubmit", "working")
        } else {
            ("Stop", "waiting_input")
        }
    };
    let mut through_process = Vec::with_capacity(samples);
    for i in 0..samples {
        let (name, activity) = event(i);
        let start = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_orchestra"))
            .args(["hook", name])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(br#"{"last_assistant_message": "done"}"#)
            .unwrap();
        wait_for(&mut ws, activity);
        through_process.push(start.elapsed());
        child.wait().unwrap();
    }
    let mut through_socket = Vec::with_capacity(samples);
    for i in 0..samples {
        let (name, activity) = event(i);
        let message = json!({"token": credential, "event": name, "payload": {"last_assistant_message": "done"}});
        let start = Instant::now();
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream.write_all(message.to_string().as_bytes()).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        wait_for(&mut ws, activity);
        through_socket.push(start.elapsed());
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (p50, p99) = (
        us(percentile(&mut through_process, 0.5)),
        us(percentile(&mut through_process, 0.99)),
    );
    let (s50, s99) = (
        us(percentile(&mut through_socket, 0.5)),
        us(percentile(&mut through_socket, 0.99)),
    );
    println!(
        "hooks: {samples} events each; hook process started -> agent_status at a client p50 \
         {p50:.0} us p99 {p99:.0} us; message on the hook socket -> agent_status p50 {s50:.0} us \
         p99 {s99:.0} us"
    );
    vec![(
        format!("hook event to agent_status, {samples} samples"),
        format!(
            "p50 {p50:.0} us, p99 {p99:.0} us from starting `orchestra hook` (as the agent's CLI \
             does) to the client; p50 {s50:.0} us, p99 {s99:.0} us from the message on the hook \
             socket"
        ),
    )]
}

fn idle(daemon: &Daemon, count: usize) -> Vec<Row> {
    let before = daemon.rss_kb();
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(count);
    for i in 0..count {
        assert!(
            started.elapsed() < LIMIT,
            "connecting {count} observers took too long"
        );
        let mut ws = daemon.ws();
        if i == 0 {
            ws.send(json!({"type": "ping"}));
            assert_eq!(ws.recv()["type"], "pong");
        }
        sockets.push(ws);
    }
    let connect = started.elapsed();
    // Everything is connected and idle; the daemon still answers promptly.
    let mut probe = daemon.ws();
    let probe_start = Instant::now();
    probe.send(json!({"type": "ping"}));
    assert_eq!(probe.recv()["type"], "pong");
    let ping = probe_start.elapsed();
    let after = daemon.rss_kb();
    let per_connection = (after.saturating_sub(before)) as f64 / count as f64;
    let connect_us = connect.as_secs_f64() * 1e6 / count as f64;
    let ping_us = ping.as_secs_f64() * 1e6;
    println!(
        "idle: {count} observers connected in {:.2}s ({:.0} us each, handshake + upgrade + auth); daemon \
         RSS {} -> {} MiB = {:.1} KiB per connection; a ping with all of them connected: {:.0} us",
        connect.as_secs_f64(),
        connect.as_secs_f64() * 1e6 / count as f64,
        before / 1024,
        after / 1024,
        (after.saturating_sub(before)) as f64 / count as f64,
        ping.as_secs_f64() * 1e6
    );
    drop(sockets);
    vec![(
        format!("{count} idle observers"),
        format!(
            "{per_connection:.1} KiB of daemon memory each, {connect_us:.0} us per connect \
             (handshake, upgrade, auth); a ping answered in {ping_us:.0} us with all of them \
             connected"
        ),
    )]
}

/// How long the `agents` scenario watches the daemon's CPU while its agents sit idle.
const IDLE_WATCH: Duration = Duration::from_secs(10);

/// `count` idle agents (each a `cat` waiting for input) on one host, on each backend: the
/// daemon's CPU while they sit idle, and its memory per agent.
fn agents(daemon: &Daemon, count: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for (agent_type, backend) in [("rawecho", "tmux"), ("rawecho_pty", "pty")] {
        let before = daemon.rss_kb();
        let started = Instant::now();
        let sessions: Vec<String> = (0..count)
            .map(|_| {
                assert!(
                    started.elapsed() < LIMIT,
                    "spawning {count} agents took too long"
                );
                daemon.spawn(agent_type, json!({}))
            })
            .collect();
        let spawn_ms = started.elapsed().as_secs_f64() * 1e3 / count as f64;
        // Let the spawns' own work (attaching, first screens, activity timers) settle.
        std::thread::sleep(Duration::from_secs(3));
        let after = daemon.rss_kb();
        let cpu = cpu_seconds(daemon.pid());
        std::thread::sleep(IDLE_WATCH);
        let idle_cpu = (cpu_seconds(daemon.pid()) - cpu) / IDLE_WATCH.as_secs_f64() * 100.0;
        let per_agent = after.saturating_sub(before) as f64 / count as f64;
        println!(
            "agents {backend}: {count} spawned ({spawn_ms:.0} ms each); daemon RSS {} -> {} MiB \
             = {per_agent:.0} KiB per agent; idle CPU {idle_cpu:.2}% of a core over {}s",
            before / 1024,
            after / 1024,
            IDLE_WATCH.as_secs()
        );
        rows.push((
            format!("{count} idle agents, `{backend}` backend"),
            format!(
                "daemon CPU {idle_cpu:.2}% of a core while they sat idle ({} s); {per_agent:.0} KiB \
                 of daemon memory per agent; {spawn_ms:.0} ms per spawn, one after another",
                IDLE_WATCH.as_secs()
            ),
        ));
        for session in &sessions {
            let path = format!("/api/agents/{session}");
            daemon.process.delete(&path, &daemon.token);
        }
    }
    rows
}

fn main() {
    let options = options();
    let mut rows = Vec::new();
    for scenario in &options.scenarios {
        // A fresh daemon per scenario, so one's memory and sessions do not colour the next.
        let daemon = Daemon::start(options.idle);
        rows.extend(match scenario.as_str() {
            "throughput" => throughput(&daemon, options.mb),
            "multi" => multi(&daemon, options.mb),
            "viewers" => viewers(&daemon, options.viewers, (options.mb / 5).clamp(1, 20)),
            "latency" => latency(&daemon, options.samples),
            "hooks" => hooks(&daemon, options.samples.min(300)),
            "idle" => idle(&daemon, options.idle),
            "dashboard" => dashboard(&daemon, (options.mb / 2).max(1)),
            "cluster" => cluster(options.mb, options.samples),
            "python" => python(&daemon, options.mb),
            "typing" => typing(&daemon, options.mb, options.samples),
            "agents" => agents(&daemon, options.agents),
            other => {
                eprintln!("unknown scenario {other}");
                Vec::new()
            }
        });
    }
    // The Performance table of docs/performance.md, from this run alone.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let command = if args.is_empty() {
        "cargo bench --bench e2e".to_string()
    } else {
        format!("cargo bench --bench e2e -- {}", args.join(" "))
    };
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    println!();
    println!("Measured by `{command}` on {date}, {} cores:", cores());
    println!();
    println!("| what | figure |");
    println!("|---|---|");
    for (what, figure) in rows {
        println!("| {what} | {figure} |");
    }
}

/// The dashboard in Debian's Chromium (benches/dashboard.mjs, driven by playwright-core as
/// the browser tests install it): page weight, click to first terminal frame, and a tab with
/// 8 live terminals while one of them floods `mb` MB.
fn dashboard(daemon: &Daemon, mb: usize) -> Vec<Row> {
    let root = env!("CARGO_MANIFEST_DIR");
    let install = Command::new(format!("{root}/tests/tools/install-playwright.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/tools/install-playwright.sh");
    assert!(
        install.status.success(),
        "playwright-core or chromium missing"
    );
    let modules = String::from_utf8(install.stdout).unwrap();
    let modules = modules.lines().last().unwrap().trim().to_string();
    let bytes = mb * 1_000_000;
    let flood = daemon.spawn("banner", json!({"BYTES": bytes.to_string()}));
    let mut sessions = vec![flood.clone()];
    for _ in 0..7 {
        sessions.push(daemon.spawn("banner", json!({"BYTES": "1000"})));
    }
    // A login link from the daemon's local socket, as `orchestra open` makes on its host.
    let link = daemon.process.login_link("control");
    let shots = std::path::PathBuf::from(root).join("target/tmp/browser-shots");
    std::fs::create_dir_all(&shots).unwrap();
    let daemon_cpu = cpu_seconds(daemon.pid());
    let output = Command::new("node")
        .arg(format!("{root}/benches/dashboard.mjs"))
        .env("PLAYWRIGHT_MODULES", &modules)
        .env("LOGIN_LINK", &link)
        .env("SESSIONS", sessions.join(","))
        .env("FLOOD_SESSION", &flood)
        .env("SHOTS", &shots)
        .stderr(Stdio::inherit())
        .output()
        .expect("run node benches/dashboard.mjs");
    assert!(output.status.success(), "benches/dashboard.mjs failed");
    let daemon_used = cpu_seconds(daemon.pid()) - daemon_cpu;
    let text = String::from_utf8(output.stdout).unwrap();
    let figures: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    println!("dashboard: {figures}");
    let weight = &figures["weight"];
    let click = &figures["click_ms"];
    let flood = &figures["flood"];
    let rss = &flood["renderer_rss_kb"];
    vec![
        (
            "dashboard: first load".to_string(),
            format!(
                "{:.0} KB transferred in {} requests (uncompressed; xterm.js is 477 KB of it)",
                weight["transferred_kb"].as_f64().unwrap(),
                weight["requests"]
            ),
        ),
        (
            "dashboard: click on an agent to its first terminal frame".to_string(),
            format!(
                "median {:.0} ms, max {:.0} ms over 8 agents (ticketed WebSocket already open; subscribe, screen, first paint)",
                click["median"].as_f64().unwrap(),
                click["max"].as_f64().unwrap()
            ),
        ),
        (
            format!("dashboard: a tab with 8 live terminals while one floods {mb} MB"),
            format!(
                "{:.1} MB/s to the flood's end on screen; renderer RSS {:.0} MB before, {:.0} MB peak, {:.0} MB after; JS heap {:.0} → {:.0} MB; longest frame {:.0} ms over {:.1} s ({} frames){}; daemon CPU {:.1} s",
                mb as f64 / flood["seconds"].as_f64().unwrap(),
                rss["before"].as_f64().unwrap() / 1024.0,
                rss["peak"].as_f64().unwrap() / 1024.0,
                rss["after"].as_f64().unwrap() / 1024.0,
                flood["js_heap_mb"]["before"].as_f64().unwrap(),
                flood["js_heap_mb"]["after"].as_f64().unwrap(),
                flood["longest_frame_ms"].as_f64().unwrap(),
                flood["seconds"].as_f64().unwrap(),
                flood["frames"],
                if flood["skipped_ahead"].as_bool().unwrap_or(false) {
                    "; the page skipped ahead with a notice"
                } else {
                    ""
                },
                daemon_used
            ),
        ),
    ]
}

/// Number of CPUs this process may run on.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A Python interpreter that can `import websockets`: a virtualenv under the target
/// directory, made on first use (the integration tests use the same one).
fn python_with_websockets() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pyenv");
    let python = dir.join("bin/python3");
    let ok = Command::new(&python)
        .args(["-c", "import websockets"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status();
        assert!(made.is_ok_and(|s| s.success()), "python3 -m venv failed");
        let installed = Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "websockets"])
            .status();
        assert!(
            installed.is_ok_and(|s| s.success()),
            "pip install websockets failed"
        );
    }
    python
}

/// The daemon's count of flow-control stalls (`GET /metrics`).
fn output_stalls(daemon: &Daemon) -> u64 {
    counter(daemon, "orchestra_output_stalls_total")
}

/// A counter of the daemon's `/metrics`.
fn counter(daemon: &Daemon, name: &str) -> u64 {
    daemon
        .process
        .get("/metrics", &daemon.token)
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// One viewer written in Python (asyncio `websockets`, `json.loads` on every message) of a
/// flood of `mb` MB on each backend: its MB/s, whether it got every byte without a gap, the
/// daemon's CPU per MB, and how often flow control waited for it.
/// A bare Python reader of a pseudo-terminal on the same flood (`benches/clients/
/// python_pty_reader.py`): the `pty` backend's baseline for a Python viewer, in MB/s.
fn python_pty_baseline(python: &Path, bytes: usize) -> f64 {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/clients/python_pty_reader.py");
    let out = Command::new(python)
        .arg(&script)
        .args([&bytes.to_string(), LINE])
        .output()
        .expect("run the bare Python pty reader");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("the bare Python pty reader failed: {stdout}"));
    result["bytes"].as_f64().unwrap() / result["seconds"].as_f64().unwrap() / 1e6
}

fn python(daemon: &Daemon, mb: usize) -> Vec<Row> {
    let python = python_with_websockets();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/clients/python_viewer.py");
    let bytes = mb * 1_000_000;
    let url = format!(
        "ws://{}/ws/observe?token={}",
        daemon.process.addr, daemon.token
    );
    let bare_pty = python_pty_baseline(&python, bytes);
    let bare_fifo = fifo_baseline(daemon.dir(), bytes);
    println!(
        "python baselines: a bare Python pty reader {bare_pty:.1} MB/s, a bare FIFO reader on \
         pipe-pane {bare_fifo:.1} MB/s"
    );
    let mut rows = Vec::new();
    for (agent_type, backend) in [("gen", "tmux"), ("gen_pty", "pty")] {
        let session = daemon.spawn(agent_type, json!({"BYTES": bytes.to_string()}));
        let (cpu, stalls) = (cpu_seconds(daemon.pid()), output_stalls(daemon));
        let emulator = thread_cpu_seconds(daemon.pid(), "terminal-emulator");
        let parsed = counter(daemon, "orchestra_screen_parsed_bytes_total");
        // The URL holds the token: in the environment, not on a command line.
        let out = Command::new(&python)
            .arg(&script)
            .env("ORCHESTRA_WS_URL", &url)
            .args([&session, &bytes.to_string(), LINE])
            .output()
            .expect("run the Python viewer");
        let used = cpu_seconds(daemon.pid()) - cpu;
        let emulator = thread_cpu_seconds(daemon.pid(), "terminal-emulator") - emulator;
        let parsed = counter(daemon, "orchestra_screen_parsed_bytes_total") - parsed;
        let stalls = output_stalls(daemon) - stalls;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let result: Value = stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| {
                panic!(
                    "the Python viewer failed: {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let seconds = result["seconds"].as_f64().unwrap();
        let got = result["bytes"].as_u64().unwrap();
        let mb_s = got as f64 / seconds / 1e6;
        let (baseline, what) = if backend == "pty" {
            (bare_pty, "a bare Python reader of a pseudo-terminal")
        } else {
            (bare_fifo, "a bare FIFO reader on `pipe-pane`")
        };
        println!(
            "python {backend}: {result} daemon {used:.2} CPU-s (emulator {emulator:.2}), \
             {stalls} stalls"
        );
        rows.push((
            format!("one Python asyncio viewer, {mb} MB, `{backend}` backend"),
            format!(
                "{mb_s:.1} MB/s = {:.2}x {what} in the same run ({baseline:.1} MB/s); {} ({} of \
                 {} bytes, {} gaps); daemon {:.1} ns per byte of agent output, of which the \
                 terminal emulator {:.0}% (it parsed {:.0}% of the bytes, skimmed the rest); flow control waited for the viewer {stalls} times; \
                 the client used {:.1} CPU-s",
                mb_s / baseline,
                if result["ok"] == true {
                    "every byte, checked"
                } else {
                    "NOT every byte"
                },
                got,
                expected_stream(bytes).len(),
                result["gaps"],
                used * 1e9 / got as f64,
                emulator / used.max(1e-9) * 100.0,
                parsed as f64 / got as f64 * 100.0,
                result["cpu_seconds"].as_f64().unwrap_or(0.0)
            ),
        ));
    }
    rows.extend(python_crowd(
        daemon,
        &python,
        &script,
        &url,
        (mb / 5).max(1),
    ));
    rows
}

/// Python viewers of one flood in the `python` scenario.
const PYTHON_CROWD: usize = 20;

/// [`PYTHON_CROWD`] Python viewers of one flood of `mb` MB on each backend: the daemon's CPU
/// per delivered byte, and whether every viewer got every byte.
fn python_crowd(daemon: &Daemon, python: &Path, script: &Path, url: &str, mb: usize) -> Vec<Row> {
    use std::io::BufRead;
    let bytes = mb * 1_000_000;
    let mut rows = Vec::new();
    for (agent_type, backend) in [("gen", "tmux"), ("gen_pty", "pty")] {
        let session = daemon.spawn(agent_type, json!({"BYTES": bytes.to_string()}));
        let mut viewers: Vec<(
            std::process::Child,
            std::io::BufReader<std::process::ChildStdout>,
        )> = (0..PYTHON_CROWD)
            .map(|_| {
                let mut child = Command::new(python)
                    .arg(script)
                    .env("ORCHESTRA_WS_URL", url)
                    .env("ORCHESTRA_TRIGGER", "0")
                    .args([&session, &bytes.to_string(), LINE])
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("run a Python viewer");
                let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
                (child, stdout)
            })
            .collect();
        for (_, stdout) in &mut viewers {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "ready", "a Python viewer did not subscribe");
        }
        let cpu = cpu_seconds(daemon.pid());
        let mut trigger = daemon.ws();
        trigger.send(json!({"type": "terminal_input", "session_id": session, "data": "\r"}));
        let results: Vec<Value> = viewers
            .into_iter()
            .map(|(mut child, mut stdout)| {
                let mut rest = String::new();
                stdout.read_to_string(&mut rest).unwrap();
                child.wait().unwrap();
                rest.lines()
                    .last()
                    .and_then(|l| serde_json::from_str(l).ok())
                    .unwrap_or_else(|| panic!("a Python viewer failed: {rest}"))
            })
            .collect();
        let used = cpu_seconds(daemon.pid()) - cpu;
        let delivered: u64 = results.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
        let whole = results.iter().filter(|r| r["ok"] == true).count();
        let client_cpu: f64 = results
            .iter()
            .map(|r| r["cpu_seconds"].as_f64().unwrap_or(0.0))
            .sum();
        println!(
            "python crowd {backend}: {whole} of {PYTHON_CROWD} got every byte; {delivered} bytes \
             delivered; daemon {used:.2} CPU-s; clients {client_cpu:.1} CPU-s"
        );
        rows.push((
            format!(
                "{PYTHON_CROWD} Python asyncio viewers of one {mb} MB flood, `{backend}` backend"
            ),
            format!(
                "daemon {:.2} ns per delivered byte ({used:.2} CPU-s for {delivered} bytes); \
                 {whole} of {PYTHON_CROWD} viewers got every byte, checked; the viewers used \
                 {client_cpu:.1} CPU-s",
                used * 1e9 / delivered.max(1) as f64
            ),
        ));
    }
    rows
}

/// One `nats-server` with JetStream on loopback for the `cluster` scenario (the pinned one
/// the tests install under `target/`), killed on drop.
struct NatsServer {
    child: std::process::Child,
    url: String,
    /// Its monitoring port (`/varz`).
    monitor: u16,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    fn start() -> NatsServer {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let installed = Command::new(root.join("tests/tools/install-nats.sh"))
            .output()
            .expect("run tests/tools/install-nats.sh");
        assert!(
            installed.status.success(),
            "nats-server could not be installed"
        );
        let binary = String::from_utf8(installed.stdout)
            .unwrap()
            .trim()
            .to_string();
        let dir = tempfile::tempdir().unwrap();
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, monitor) = (free_port(), free_port());
        let mut child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .args(["-m", &monitor.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nats-server");
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("Server is ready") {
            line.clear();
            let read = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
            assert!(read > 0, "nats-server ended before it was ready");
        }
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            monitor,
            _dir: dir,
        }
    }

    /// The bytes clients have published into the server so far (its `/varz` `in_bytes`):
    /// in the cluster scenario, everything that went from one host to another.
    fn bytes_in(&self) -> u64 {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.monitor)).unwrap();
        stream
            .write_all(b"GET /varz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        let varz: Value = serde_json::from_str(body).expect("nats /varz is JSON");
        varz["in_bytes"].as_u64().expect("in_bytes")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two daemons of one cluster over one NATS server: a viewer on host `alpha` watching and
/// typing into an agent of host `beta`, against a viewer on `beta` itself, in the same run.
/// One flood of `mb` MB each way, and `samples` keystrokes each way.
fn cluster(mb: usize, samples: usize) -> Vec<Row> {
    let nats = NatsServer::start();
    let secret = (
        "ORCHESTRA_JWT_SECRET".to_string(),
        "e2e-cluster-secret-0123456789".to_string(),
    );
    let member = |host: &str| {
        let config = format!(
            "[cluster]\nnats = [\"{}\"]\nhost = \"{host}\"\nname = \"bench\"\nunreachable_after = \"3s\"\n",
            nats.url
        );
        Daemon::start_with(0, &config, vec![secret.clone()])
    };
    let alpha = member("alpha");
    let beta = member("beta");
    let started = Instant::now();
    let lists = |daemon: &Daemon, session: &str| {
        daemon.get("/api/agents")["agents"]
            .as_array()
            .is_some_and(|agents| agents.iter().any(|a| a["session_id"] == session))
    };
    let bytes = mb * 1024 * 1024;

    // Local: beta's agent, watched on beta.
    let (local_raw, local_time, _, _) = flood_once(&beta, "gen", bytes);
    // Remote: beta's agent, watched on alpha.
    let session = beta.spawn("gen", json!({"BYTES": bytes.to_string()}));
    while !lists(&alpha, &session) {
        assert!(started.elapsed() < LIMIT, "alpha never listed beta's agent");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut ws = alpha.ws();
    subscribe(&mut ws, &session);
    let (alpha_cpu, beta_cpu) = (cpu_seconds(alpha.pid()), cpu_seconds(beta.pid()));
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": "\r"}));
    let flood_started = Instant::now();
    let (remote_raw, remote_time) = count_flood(&mut ws, flood_started, bytes);
    let (alpha_used, beta_used) = (
        cpu_seconds(alpha.pid()) - alpha_cpu,
        cpu_seconds(beta.pid()) - beta_cpu,
    );
    let mb_s = |raw: u64, time: Duration| raw as f64 / 1e6 / time.as_secs_f64();
    let (local, remote) = (mb_s(local_raw, local_time), mb_s(remote_raw, remote_time));

    // Keystrokes into a raw echo on beta: typed on beta, and typed on alpha.
    let echo = beta.spawn("rawecho", json!({}));
    while !lists(&alpha, &echo) {
        assert!(started.elapsed() < LIMIT, "alpha never listed beta's echo");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut near = keystrokes_through(&beta, &echo, samples);
    let mut far = keystrokes_through(&alpha, &echo, samples);
    let us = |samples: &mut [Duration], p: f64| percentile(samples, p).as_micros();
    let spread = cluster_spread(&nats, &alpha, &beta, 100, 2);
    let spawns = cluster_spawns(&alpha, &beta, 20);
    let listing = cluster_listing(&nats, &member, alpha, beta, 200, 200);
    let mut rows = vec![
        (
            format!(
                "cluster: one viewer of a {mb} MB flood, on the agent's host / on another host (one NATS server, Rust client)"
            ),
            format!("{local:.1} / {remote:.1} MB/s ({:.2}x)", remote / local),
        ),
        (
            "cluster: daemon CPU for that remote flood, viewer's host + agent's host".into(),
            format!(
                "{:.1} + {:.1} ms per MB",
                alpha_used * 1000.0 / (remote_raw as f64 / 1e6),
                beta_used * 1000.0 / (remote_raw as f64 / 1e6)
            ),
        ),
        (
            "cluster: keystroke echo p50/p99, on the agent's host / on another host".into(),
            format!(
                "{}/{} us / {}/{} us",
                us(&mut near, 0.5),
                us(&mut near, 0.99),
                us(&mut far, 0.5),
                us(&mut far, 0.99)
            ),
        ),
    ];
    rows.extend([spread, spawns, listing]);
    rows
}

/// `count` viewers of one session on `beta`, every other one on `alpha`, during a flood of
/// `mb` MB: whether each got every byte, and how many bytes went between the hosts (NATS's
/// own count of what its clients published).
fn cluster_spread(
    nats: &NatsServer,
    alpha: &Daemon,
    beta: &Daemon,
    count: usize,
    mb: usize,
) -> Row {
    let bytes = mb * 1_000_000;
    let session = beta.spawn("gen", json!({"BYTES": bytes.to_string()}));
    let started = Instant::now();
    while !alpha.get("/api/agents")["agents"]
        .as_array()
        .is_some_and(|agents| agents.iter().any(|a| a["session_id"] == session.as_str()))
    {
        assert!(started.elapsed() < LIMIT, "alpha never listed beta's agent");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut sockets: Vec<Ws> = (0..count)
        .map(|i| if i % 2 == 0 { alpha.ws() } else { beta.ws() })
        .collect();
    for ws in &mut sockets {
        subscribe(ws, &session);
    }
    let before = nats.bytes_in();
    let mut trigger = beta.ws();
    let started = Instant::now();
    trigger.send(json!({"type": "terminal_input", "session_id": session, "data": "\r"}));
    let results = read_floods(&mut sockets, started);
    let crossed = nats.bytes_in() - before;
    let expected = fnv(FNV_START, &expected_stream(bytes));
    let exact = results.iter().filter(|(h, _, _)| *h == expected).count();
    let raw = results[0].1;
    let remote = count.div_ceil(2);
    println!(
        "cluster spread: {count} viewers ({remote} on another host) of a {mb} MB flood, {exact} \
         byte-exact; NATS carried {:.1} MB",
        crossed as f64 / 1e6
    );
    (
        format!("cluster: {count} viewers of one {mb} MB flood, {remote} of them on another host"),
        format!(
            "{exact} of {count} byte-exact; {:.1} MB went between the hosts = {:.1} streams' \
             worth (a frame many viewers of one host get crosses once)",
            crossed as f64 / 1e6,
            crossed as f64 / raw.max(1) as f64
        ),
    )
}

/// `count` spawns of an agent on `beta`, asked of `beta` itself and of `alpha` with
/// `"host": "beta"`, taken in turns: the p50 of each.
fn cluster_spawns(alpha: &Daemon, beta: &Daemon, count: usize) -> Row {
    let spawn = |daemon: &Daemon, host: Option<&str>| {
        let mut body = json!({"agent_type": "rawecho", "working_dir": beta.process.work});
        if let Some(host) = host {
            body["host"] = host.into();
        }
        let started = Instant::now();
        let answer = daemon
            .process
            .post("/api/agents/spawn", &daemon.token, &body)
            .json();
        let took = started.elapsed();
        let session = answer["session_id"]
            .as_str()
            .unwrap_or_else(|| panic!("spawn failed: {answer}"))
            .to_string();
        (took, session)
    };
    let (mut local, mut remote, mut sessions) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..count {
        let (took, session) = spawn(beta, None);
        local.push(took);
        sessions.push(session);
        let (took, session) = spawn(alpha, Some("beta"));
        remote.push(took);
        sessions.push(session);
    }
    for session in sessions {
        beta.process
            .delete(&format!("/api/agents/{session}"), &beta.token);
    }
    let (local, remote) = (percentile(&mut local, 0.5), percentile(&mut remote, 0.5));
    (
        format!("cluster: spawn p50, asked of the agent's host / of another host ({count} each)"),
        format!(
            "{:.1} / {:.1} ms (+{:.1} ms to go through NATS)",
            local.as_secs_f64() * 1e3,
            remote.as_secs_f64() * 1e3,
            (remote.as_secs_f64() - local.as_secs_f64()) * 1e3
        ),
    )
}

/// Three hosts with `per_host` idle agents each (a third daemon joins): `GET /api/agents`
/// asked of `alpha` `requests` times, p50/p99, and the size of its answer.
fn cluster_listing(
    nats: &NatsServer,
    member: &dyn Fn(&str) -> Daemon,
    alpha: Daemon,
    beta: Daemon,
    per_host: usize,
    requests: usize,
) -> Row {
    let _ = nats;
    let gamma = member("gamma");
    let hosts = [&alpha, &beta, &gamma];
    std::thread::scope(|scope| {
        for daemon in hosts {
            scope.spawn(move || {
                let have = |daemon: &Daemon| {
                    daemon.get("/api/agents")["agents"]
                        .as_array()
                        .map_or(0, |a| {
                            a.iter()
                                .filter(|a| a["host"] == daemon_host(daemon))
                                .count()
                        })
                };
                for _ in have(daemon)..per_host {
                    daemon.spawn("rawecho", json!({}));
                }
            });
        }
    });
    let total = per_host * hosts.len();
    let started = Instant::now();
    loop {
        let listed = alpha.get("/api/agents")["agents"]
            .as_array()
            .map_or(0, Vec::len);
        if listed >= total {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "alpha lists {listed} of {total} agents"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut times = Vec::with_capacity(requests);
    let mut size = 0;
    for _ in 0..requests {
        let started = Instant::now();
        let resp = alpha.process.get("/api/agents", &alpha.token);
        times.push(started.elapsed());
        assert_eq!(resp.status, 200);
        size = resp.body.len();
    }
    let p50 = percentile(&mut times, 0.5).as_secs_f64() * 1e3;
    let p99 = percentile(&mut times, 0.99).as_secs_f64() * 1e3;
    println!("cluster listing: {total} agents, p50 {p50:.1} ms, p99 {p99:.1} ms, {size} bytes");
    (
        format!(
            "cluster: GET /api/agents across 3 hosts x {per_host} agents ({requests} requests, a connection each)"
        ),
        format!(
            "p50 {p50:.1} ms, p99 {p99:.1} ms; {:.0} KB per answer",
            size as f64 / 1e3
        ),
    )
}

/// The cluster host name a bench daemon was given (from its `GET /api/cluster`).
fn daemon_host(daemon: &Daemon) -> String {
    let status = daemon.get("/api/cluster");
    status["hosts"]
        .as_array()
        .and_then(|hosts| hosts.iter().find(|h| h["this_host"] == true))
        .and_then(|h| h["host"].as_str())
        .unwrap_or_default()
        .to_string()
}
