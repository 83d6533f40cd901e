//! Test harness: the shared daemon harness (`tests/support/daemon.rs`: the real `orchestra`
//! binary on a free loopback port with its own temporary state directory and private tmux
//! server, HTTP and WebSocket clients, cleanup on drop also when the test fails) with the
//! tests' config, backends and helpers on top.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[path = "../support/daemon.rs"]
mod support;
pub use support::*;

/// Tests that each run a heavy program of their own (a real agent CLI, a NATS cluster) take
/// turns: two of them at once on a two-core machine starve each other's programs (a CLI
/// that starts too slowly to read its first prompt). Each may still run beside a light test.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A heavy test's turn, held for as long as it lives (see [`heavy_turn`]).
pub struct HeavyTurn(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

/// Waits for this heavy test's turn (another heavy test that failed does not block it).
pub fn heavy_turn() -> HeavyTurn {
    HeavyTurn(
        HEAVY
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
}

/// Tests that run a real agent CLI run alone. Under the full suite's load a CLI that has
/// just reported its start could miss its first prompt (CI saw two such tests time out
/// waiting for the reply to their first message; each passes alone). Every other test's
/// daemons hold a share of this lock for as long as they live; a real-CLI test takes it
/// whole (see [`alone_turn`]).
static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

thread_local! {
    /// Whether this thread's test holds [`ALONE`] whole.
    static HOLDS_ALONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// How many of this thread's daemons hold a share (only the first takes the lock: a
    /// second read while a writer waits would never be granted).
    static SHARES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A real-CLI test's whole turn of the machine, held for as long as it lives.
pub struct AloneTurn(#[allow(dead_code)] std::sync::RwLockWriteGuard<'static, ()>);

impl Drop for AloneTurn {
    fn drop(&mut self) {
        HOLDS_ALONE.set(false);
    }
}

/// Waits until no other test's daemon runs, and keeps others from starting one.
pub fn alone_turn() -> AloneTurn {
    let guard = ALONE
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    HOLDS_ALONE.set(true);
    AloneTurn(guard)
}

/// One daemon's share of the machine (see [`ALONE`]).
struct SharedTurn(#[allow(dead_code)] Option<std::sync::RwLockReadGuard<'static, ()>>);

impl Drop for SharedTurn {
    fn drop(&mut self) {
        SHARES.set(SHARES.get().saturating_sub(1));
    }
}

/// A share for a daemon about to start on this thread (none inside a real-CLI test).
fn shared_turn() -> Option<Box<dyn std::any::Any + Sync>> {
    if HOLDS_ALONE.get() {
        return None;
    }
    let guard = (SHARES.get() == 0).then(|| {
        ALONE
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    });
    SHARES.set(SHARES.get() + 1);
    Some(Box::new(SharedTurn(guard)))
}

/// Path of a fake agent script under `tests/agents`.
pub fn agent_script(name: &str) -> String {
    format!("{}/tests/agents/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The config every test daemon gets, before test-specific additions.
fn base_config(work: &Path) -> String {
    let mut config = format!(
        r#"
workers = 4
# Tests spawn and fail auth far faster than people do; the rate-limit tests lower these.
[rate_limits]
spawn = {{ requests = 10000, window = "1m" }}
delegate = {{ requests = 10000, window = "1m" }}
auth_failures = {{ requests = 10000, window = "1m" }}
[sessions]
allowed_roots = ["{work}"]
[agents.echo]
command = ["{echo}"]
[agents.exit0]
command = ["{exit0}"]
[agents.exit3]
command = ["{exit3}"]
[agents.crash]
command = ["{crash}"]
[agents.stubborn]
command = ["{stubborn}"]
[agents.printenv]
command = ["{printenv}"]
env = {{ TYPE_VAR = "from-config" }}
[agents.missing]
command = ["definitely-not-installed-agent-cli"]
[agents.flood]
command = ["{flood}"]
[agents.split]
command = ["{split}"]
[agents.crash_input]
command = ["{crash_input}"]
[agents.paste_probe]
command = ["{paste_probe}"]
[agents.task]
command = ["{task}"]
headless = ["{task}"]
[agents.task2]
command = ["{task}"]
headless = ["{task}"]
[agents.nohead]
command = ["{task}"]
[agents.styled]
command = ["{styled}"]
"#,
        work = work.display(),
        echo = agent_script("echo.sh"),
        exit0 = agent_script("exit0.sh"),
        exit3 = agent_script("exit3.sh"),
        crash = agent_script("crash.sh"),
        stubborn = agent_script("stubborn.sh"),
        printenv = agent_script("printenv.sh"),
        flood = agent_script("flood.sh"),
        split = agent_script("split_utf8.sh"),
        crash_input = agent_script("crash_on_input.sh"),
        paste_probe = agent_script("paste_probe.py"),
        task = agent_script("task_agent.sh"),
        styled = agent_script("styled.sh"),
    );
    config.push('\n');
    config
}

impl DaemonProcess {
    /// Starts a daemon with the base config.
    pub fn start() -> DaemonProcess {
        DaemonProcess::start_with("")
    }

    /// Starts a daemon with `extra` TOML appended to the base config. Sections named in
    /// `extra` must not repeat the base config's (`[sessions]`, agent types).
    pub fn start_with(extra: &str) -> DaemonProcess {
        DaemonProcess::start_with_work(|_| extra.to_string())
    }

    /// Like [`DaemonProcess::start_with`], with the extra TOML made from the (already created,
    /// canonical) work dir, for config keyed by paths under it.
    pub fn start_with_work(extra: impl FnOnce(&Path) -> String) -> DaemonProcess {
        DaemonProcess::start_with_env(extra, &[])
    }

    /// Like [`DaemonProcess::start_with`], with every agent type (the base config's and
    /// `extra`'s) running on `backend` (`tmux` or `pty`).
    pub fn start_on(backend: &str, extra: &str) -> DaemonProcess {
        let backend = backend.to_string();
        DaemonProcess::start_with_options(|_| extra.to_string(), &[], Some(&backend))
    }

    /// [`DaemonProcess::start`] with agents on tmux whatever the suite's backend: for tests
    /// whose subject is tmux itself (its panes, pipes, server).
    pub fn start_tmux() -> DaemonProcess {
        DaemonProcess::start_on("tmux", "")
    }

    /// [`DaemonProcess::start_with`] on tmux whatever the suite's backend.
    pub fn start_tmux_with(extra: &str) -> DaemonProcess {
        DaemonProcess::start_on("tmux", extra)
    }

    /// [`DaemonProcess::start_with_env`] on tmux whatever the suite's backend.
    pub fn start_tmux_with_env(
        extra: impl FnOnce(&Path) -> String,
        env: &[(&str, &str)],
    ) -> DaemonProcess {
        DaemonProcess::start_with_options(extra, env, Some("tmux"))
    }

    /// Like [`DaemonProcess::start_with_work`], with extra environment variables for the daemon.
    pub fn start_with_env(
        extra: impl FnOnce(&Path) -> String,
        env: &[(&str, &str)],
    ) -> DaemonProcess {
        DaemonProcess::start_with_options(extra, env, None)
    }
    fn start_with_options(
        extra: impl FnOnce(&Path) -> String,
        env: &[(&str, &str)],
        backend: Option<&str>,
    ) -> DaemonProcess {
        let setup = Setup {
            prefix: "orch",
            log_level: Some(std::env::var("ORCHESTRA_TEST_LOG").unwrap_or_else(|_| "debug".into())),
            echo: |_| std::env::var_os("ORCHESTRA_TEST_ECHO").is_some(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let hold = shared_turn();
        let mut daemon = DaemonProcess::start_in(setup, |_, work| {
            let mut text = merge_config(&base_config(work), &extra(work));
            // The suite's backend (the `pty` test binary), or ORCHESTRA_TEST_BACKEND, applies
            // to every test that does not choose one.
            let forced = std::env::var("ORCHESTRA_TEST_BACKEND").ok();
            if let Some(backend) = backend.or(crate::SUITE_BACKEND).or(forced.as_deref()) {
                text = with_backend(&text, backend);
            }
            text
        });
        daemon.hold = hold;
        daemon
    }

    /// The daemon's HS256 secret.
    pub fn secret(&self) -> Vec<u8> {
        std::fs::read_to_string(self.state.join("jwt_secret"))
            .unwrap()
            .trim()
            .as_bytes()
            .to_vec()
    }

    /// Spawns an agent of `agent_type` in the work dir and returns the response body.
    pub fn spawn(&self, token: &str, agent_type: &str) -> Value {
        let resp = self.post(
            "/api/agents/spawn",
            token,
            &serde_json::json!({"agent_type": agent_type, "working_dir": self.work}),
        );
        assert_eq!(resp.status, 201, "spawn {agent_type}: {}", resp.text());
        resp.json()
    }
    /// session (no tmux), the screen a new viewer gets from the daemon.
    pub fn screen(&self, tmux_session: &str) -> String {
        let session_id = tmux_session.replacen("agent-", "sess-", 1);
        if self
            .state
            .join("pty")
            .join(format!("{session_id}.meta"))
            .exists()
        {
            let mut ws = self.ws(&self.control());
            ws.subscribe(&session_id);
            let screen = ws.recv_until("the screen", |m| m["snapshot"] == true);
            let size = |key: &str| screen[key].as_u64().unwrap() as u16;
            let mut terminal = vt100::Parser::new(
                size("rows").try_into().unwrap(),
                size("cols").try_into().unwrap(),
                0,
            );
            terminal.process(screen["data"].as_str().unwrap().as_bytes());
            return terminal.screen().contents();
        }
        let out = self.tmux(&["capture-pane", "-p", "-t", &format!("={tmux_session}:")]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `GET /api/agents/{id}` until `check` accepts the body.
    pub fn wait_agent(
        &self,
        token: &str,
        id: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_json(&format!("/api/agents/{id}"), token, what, check)
    }

    /// Polls `GET path` until it answers `200` with a body `check` accepts.
    fn wait_json(
        &self,
        path: &str,
        token: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_until(what, || {
            let resp = self.get(path, token);
            (resp.status == 200 && check(&resp.json())).then(|| resp.json())
        })
    }
    /// `POST /api/delegate` with `body`; asserts `201` and returns the answer.
    pub fn delegate(&self, token: &str, body: &Value) -> Value {
        let resp = self.post("/api/delegate", token, body);
        assert_eq!(resp.status, 201, "delegate {body}: {}", resp.text());
        resp.json()
    }

    /// `POST /api/delegate` with `body`, then waits until its ticket is final and asserts
    /// that it `completed`; returns the final ticket.
    pub fn delegate_to_completion(&self, token: &str, body: &Value) -> Value {
        let ticket = self.delegate(token, body)["ticket_id"]
            .as_str()
            .unwrap()
            .to_string();
        let done = self.wait_task_final(token, &ticket);
        assert_eq!(done["status"], "completed", "{done}");
        done
    }

    /// Delegates `task` (the fake agent's keyword lines) to an agent of `agent_type` in
    /// `working_dir`, returning the answer.
    pub fn delegate_in(
        &self,
        token: &str,
        agent_type: &str,
        working_dir: &Path,
        task: &str,
    ) -> Value {
        self.delegate(
            token,
            &serde_json::json!({"agent_type": agent_type, "task": task, "working_dir": working_dir}),
        )
    }

    /// `GET /api/tasks/{id}`, asserting `200`.
    pub fn task(&self, token: &str, id: &str) -> Value {
        let resp = self.get(&format!("/api/tasks/{id}"), token);
        assert_eq!(resp.status, 200, "task {id}: {}", resp.text());
        resp.json()
    }

    /// Polls `GET /api/tasks/{id}` until `check` accepts the ticket.
    pub fn wait_task(
        &self,
        token: &str,
        id: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_json(&format!("/api/tasks/{id}"), token, what, check)
    }

    /// Polls `GET /api/tasks/{id}` until the ticket is in `status`. Fails at once if it
    /// reaches a different final state instead.
    pub fn wait_task_status(&self, token: &str, id: &str, status: &str) -> Value {
        wait_until(&format!("task {id} to be {status}"), || {
            let ticket = self.task(token, id);
            let now = ticket["status"].as_str().unwrap_or("").to_string();
            if now == status {
                return Some(ticket);
            }
            assert!(
                !is_final_task_status(&now),
                "task {id} ended {now} instead of {status}: {ticket}"
            );
            None
        })
    }

    /// Polls `GET /api/tasks/{id}` until the ticket is in a final state.
    pub fn wait_task_final(&self, token: &str, id: &str) -> Value {
        self.wait_task(token, id, &format!("task {id} to finish"), |t| {
            is_final_task_status(t["status"].as_str().unwrap_or(""))
        })
    }

    /// The machine goes down once a turn is on disk, and comes back: waits until a file
    /// under `cli_files` (the CLI's own transcripts; it writes them a moment after its turn)
    /// and the daemon's history of `session` (its writer thread is a moment behind too) hold
    /// `said`; kills everything (the daemon, the tmux server or pty holders, the agents);
    /// starts the daemon again; checks that `session` is `lost`; resumes it and waits for the
    /// resumed CLI's prompt. Returns a control token and the WebSocket that saw it.
    pub fn reboot_and_resume(
        &mut self,
        session: &str,
        cli_files: &Path,
        said: &str,
    ) -> (String, Ws) {
        wait_until("the CLI's transcript holds the reply", || {
            files_under(cli_files)
                .iter()
                .filter_map(|file| std::fs::read_to_string(file).ok())
                .any(|text| text.contains(said))
                .then_some(())
        });
        let history = self.state.join("history").join(format!("{session}.jsonl"));
        wait_until("the daemon's history file holds the reply", || {
            std::fs::read_to_string(&history)
                .is_ok_and(|text| text.contains(said))
                .then_some(())
        });
        self.kill_everything();
        self.relaunch();
        let token = self.control();
        let agent = self.get(&format!("/api/agents/{session}"), &token).json();
        assert_eq!(agent["status"], "lost", "{agent}");
        let ws = self.ws(&token);
        let resumed = self.post(
            &format!("/api/agents/{session}/resume"),
            &token,
            &serde_json::json!({}),
        );
        assert_eq!(resumed.status, 200, "{}", resumed.text());
        let mut ws = ws;
        ws.recv_until("the resumed CLI's prompt", |m| {
            m["type"] == "agent_status"
                && m["session_id"] == session
                && m["activity"] == "waiting_input"
        });
        (token, ws)
    }
}

/// Every file under `dir`, at any depth.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Whether a ticket status is final (no further change).
pub fn is_final_task_status(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "timeout" | "cancelled")
}

/// Runs git with `args` in `dir` (never the user's config: a fixed identity, no hooks or
/// signing), asserts success and returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Orchestra Tests",
            "-c",
            "user.email=tests@orchestra.invalid",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Makes `dir` (created if missing) a git repository with `files` committed on `main`, and
/// the identity configured in the repository itself so the daemon's git commands work too.
pub fn git_repo(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q"]);
    git(dir, &["config", "user.name", "Orchestra Tests"]);
    git(dir, &["config", "user.email", "tests@orchestra.invalid"]);
    git(dir, &["config", "commit.gpgsign", "false"]);
    for (name, text) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, text).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", "initial"]);
}

/// Creates an empty file (releases a fake agent blocked in `WAITFOR`).
pub fn touch(path: &Path) {
    std::fs::write(path, b"").unwrap();
}

/// Appends `extra` to `base`, merging top-level tables that both define.
fn merge_config(base: &str, extra: &str) -> String {
    let mut base: toml::Table = toml::from_str(base).unwrap();
    let extra: toml::Table = toml::from_str(extra).expect("valid extra config");
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(more)) => {
                for (k, v) in more {
                    existing.insert(k, v);
                }
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
    toml::to_string(&base).unwrap()
}

/// `config` with `backend = "<backend>"` in every agent type that does not name its own.
fn with_backend(config: &str, backend: &str) -> String {
    let mut table: toml::Table = toml::from_str(config).unwrap();
    if let Some(toml::Value::Table(agents)) = table.get_mut("agents") {
        for (_, agent) in agents.iter_mut() {
            if let toml::Value::Table(agent) = agent {
                agent
                    .entry("backend")
                    .or_insert_with(|| toml::Value::String(backend.into()));
            }
        }
    }
    toml::to_string(&table).unwrap()
}

/// Signs arbitrary claims with `secret` (HS256) or another algorithm.
pub fn sign(claims: &Value, secret: &[u8], alg: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Output of one session as a viewer reconstructs it: raw text from an offset on, checking
/// that offsets are contiguous.
#[derive(Debug, Default)]
pub struct Transcript {
    /// Concatenated `data` of live output (screens excluded).
    pub text: String,
    /// The next offset expected.
    pub next: Option<u64>,
    /// The stream id.
    pub stream: Option<String>,
    /// Screens received.
    pub screens: Vec<String>,
    /// Gap notices received.
    pub gaps: Vec<Value>,
}

impl Transcript {
    /// Folds one message in (ignoring other sessions and other types).
    pub fn add(&mut self, session: &str, message: &Value) {
        if message["session_id"] != session {
            return;
        }
        match message["type"].as_str() {
            Some("terminal_gap") => self.gaps.push(message.clone()),
            Some("terminal_output") => {
                let offset = message["offset"].as_u64().unwrap();
                if message["snapshot"] == true {
                    self.screens
                        .push(message["data"].as_str().unwrap().to_string());
                    self.next = Some(offset);
                    self.stream = message["stream"].as_str().map(str::to_string);
                    return;
                }
                if let Some(next) = self.next {
                    assert_eq!(
                        offset, next,
                        "output must continue exactly where it left off"
                    );
                }
                self.next = Some(message["next_offset"].as_u64().unwrap());
                self.stream = message["stream"].as_str().map(str::to_string);
                self.text.push_str(message["data"].as_str().unwrap());
            }
            _ => {}
        }
    }

    /// Reads from `ws` until the transcript text contains `needle`.
    pub fn read_until(&mut self, ws: &mut Ws, session: &str, needle: &str) {
        self.read_until_count(ws, session, needle, 1);
    }

    /// Reads from `ws` until the screens received or the text after them contain `needle`.
    pub fn read_until_after_screen(&mut self, ws: &mut Ws, session: &str, needle: &str) {
        while !self.screens.iter().any(|s| s.contains(needle)) && !self.text.contains(needle) {
            let message = ws.recv();
            self.add(session, &message);
        }
    }

    /// Reads from `ws` until the transcript text contains `needle` `count` times.
    pub fn read_until_count(&mut self, ws: &mut Ws, session: &str, needle: &str, count: usize) {
        while self.text.matches(needle).count() < count {
            let message = ws.recv();
            if std::env::var_os("ORCHESTRA_TEST_ECHO").is_some() {
                let text: String = message.to_string().chars().take(200).collect();
                eprintln!("[ws] transcript <- {text}");
            }
            self.add(session, &message);
        }
    }
}

/// Whether `value` is an RFC 3339 UTC timestamp with second precision, as the API writes.
pub fn is_rfc3339_utc(value: &Value) -> bool {
    let text = value.as_str().unwrap_or("");
    text.len() == 20
        && text.ends_with('Z')
        && text.as_bytes()[10] == b'T'
        && humantime::parse_rfc3339(text).is_ok()
}

/// Runs `prlimit --pid PID LIMIT` (util-linux, on every Debian system), asserting success:
/// a test that needs it fails without it rather than passing untested.
pub fn prlimit(pid: u32, limit: &str) {
    let out = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(limit)
        .output()
        .unwrap_or_else(|e| panic!("cannot run prlimit (util-linux): {e}"));
    assert!(
        out.status.success(),
        "prlimit {limit}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `session_id` of a spawn answer.
pub fn id_of(spawned: &Value) -> String {
    spawned["session_id"].as_str().unwrap().to_string()
}

/// Whether `message` is an `agent_status` of `session` with this `activity`.
pub fn is_activity(message: &Value, session: &str, activity: &str) -> bool {
    message["type"] == "agent_status"
        && message["session_id"] == session
        && message["activity"] == activity
}
