//! The daemon harness the integration tests (`tests/it/common.rs`, which adds the test
//! config and the tests' own helpers) and the end-to-end bench (`benches/e2e.rs`) share:
//! starts the real `orchestra` binary on a free loopback port with its own temporary
//! directory, state directory and private tmux server, talks HTTP and WebSocket to it, and
//! on drop ends everything it started (also when a test fails; the cleanup never panics).
//!
//! Included by path (`#[path = ".../tests/support/daemon.rs"] mod support;`), so each
//! includer uses only part of it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde_json::Value;

/// Longest a test waits for anything (a bound, not a synchronisation delay).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How a daemon is started, besides its config.
pub struct Setup {
    /// The start of its temporary directory's name.
    pub prefix: &'static str,
    /// `ORCHESTRA_LOG` for the daemon (`None`: this process's own).
    pub log_level: Option<String>,
    /// Which of its stderr lines are copied to this process's stderr, as `[daemon] LINE`.
    pub echo: fn(&str) -> bool,
    /// Extra environment variables the daemon (and `token`) are started with.
    pub env: Vec<(String, String)>,
}

/// A running daemon under test.
pub struct DaemonProcess {
    /// Root of everything this daemon uses.
    pub dir: tempfile::TempDir,
    /// `--state-dir`.
    pub state: PathBuf,
    /// The allowed root for working directories.
    pub work: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Option<Child>,
    /// Extra environment variables the daemon (and `token`) are started with.
    pub env: Vec<(String, String)>,
    /// Everything it wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
    lines: Receiver<String>,
    /// `--listen` of the next launch (`127.0.0.1:0` until [`DaemonProcess::restart_on_same_port`]).
    listen: String,
    /// The umask the next launch starts the daemon with (`None`: the test's own).
    pub umask: Option<u32>,
    /// `ORCHESTRA_LOG` of every launch (`None`: this process's own).
    log_level: Option<String>,
    /// Which stderr lines are echoed.
    echo: fn(&str) -> bool,
    /// Whatever the suite holds for as long as this daemon lives (a share of the machine;
    /// dropped after the daemon is gone).
    pub hold: Option<Box<dyn std::any::Any + Sync>>,
}

impl DaemonProcess {
    /// Creates a temporary directory with `work/` (the allowed root) in it, writes the config
    /// `config` makes from (the directory, the canonical work dir) and starts the daemon.
    pub fn start_in(setup: Setup, config: impl FnOnce(&Path, &Path) -> String) -> DaemonProcess {
        let dir = tempfile::Builder::new()
            .prefix(setup.prefix)
            .tempdir()
            .expect("temp dir");
        let state = dir.path().join("state");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let work = std::fs::canonicalize(&work).unwrap();
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config(dir.path(), &work)).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut daemon = DaemonProcess {
            dir,
            state,
            work,
            config: config_path,
            addr: "127.0.0.1:0".parse().unwrap(),
            child: None,
            env: setup.env,
            log: Arc::new(Mutex::new(String::new())),
            lines: rx,
            listen: "127.0.0.1:0".into(),
            umask: None,
            log_level: setup.log_level,
            echo: setup.echo,
            hold: None,
        };
        daemon.launch(tx);
        daemon
    }

    fn launch(&mut self, tx: Sender<String>) {
        let mut command = match self.umask {
            None => Command::new(env!("CARGO_BIN_EXE_orchestra")),
            Some(mask) => {
                // The shell sets the umask and replaces itself with the daemon (same pid).
                let mut shell = Command::new("/bin/sh");
                shell
                    .arg("-c")
                    .arg(format!("umask {mask:03o} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_orchestra"));
                shell
            }
        };
        if let Some(level) = &self.log_level {
            command.env("ORCHESTRA_LOG", level);
        }
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--listen")
            .arg(&self.listen)
            .env_remove("ORCHESTRA_JWT_SECRET")
            .env_remove("TMUX")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start orchestra");
        let stderr = child.stderr.take().unwrap();
        let (log, echo) = (self.log.clone(), self.echo);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo(&line) {
                    eprintln!("[daemon] {line}");
                }
                log.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        let line = self.wait_for_log("listening on http://");
        let addr = line.rsplit("http://").next().unwrap().trim();
        self.addr = addr.parse().expect("address in the startup line");
    }

    /// Waits for a log line containing `needle` (lines seen earlier are consumed).
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no log line containing {needle:?} within {PATIENCE:?}; log:\n{}",
                    self.log.lock().unwrap()
                ),
            }
        }
    }

    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        signal(child.id(), "TERM");
        wait_with_deadline(&mut child).expect("daemon exits after SIGTERM")
    }

    /// Stops and starts the daemon again with the same state directory and config.
    pub fn restart(&mut self) {
        self.stop();
        let (tx, rx) = crossbeam_channel::unbounded();
        self.lines = rx;
        self.launch(tx);
    }

    /// Kills the daemon with SIGKILL and starts it again listening on the same port (so a
    /// browser's page keeps its origin).
    pub fn kill9_and_restart_on_same_port(&mut self) {
        self.listen = self.addr.to_string();
        self.kill9();
        self.relaunch();
    }

    /// Kills the daemon with SIGKILL; the next [`DaemonProcess::relaunch`] listens on the
    /// same port.
    pub fn kill9_keeping_port(&mut self) {
        self.listen = self.addr.to_string();
        self.kill9();
    }

    /// Pid of the daemon process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// A token signed with this daemon's secret.
    pub fn token(&self, scope: &str) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_orchestra"))
            .args(["token", "--scope", scope, "--ttl", "1h", "--sub", "tester"])
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state)
            .env_remove("ORCHESTRA_JWT_SECRET")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "token: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    /// A one-time dashboard login link from `orchestra open --scope SCOPE`.
    /// A one-time dashboard login link from `orchestra open --scope SCOPE`.
    pub fn login_link(&self, scope: &str) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_orchestra"))
            .args(["open", "--scope", scope])
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state)
            .env_remove("ORCHESTRA_URL")
            .env_remove("ORCHESTRA_TOKEN")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "open: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    /// A control-scope token.
    pub fn control(&self) -> String {
        self.token("control")
    }

    /// Sends one request (with `Connection: close`) and reads the whole response.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        self.request_with(
            method,
            path,
            &headers,
            body.map(|b| b.to_string()).as_deref(),
        )
    }

    /// Sends one request with exactly these extra headers (besides `Host`, `Connection` and,
    /// with a body or for POST, the content headers) and reads the whole response.
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        let body = body.unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        let raw = self.raw(&bytes);
        let mut responses = parse_responses(&raw);
        assert_eq!(
            responses.len(),
            1,
            "one response expected, got {:?}",
            String::from_utf8_lossy(&raw)
        );
        responses.remove(0)
    }

    /// `GET` with a token.
    pub fn get(&self, path: &str, token: &str) -> Resp {
        self.request("GET", path, Some(token), None)
    }

    /// `POST` JSON with a token.
    pub fn post(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.request("POST", path, Some(token), Some(body))
    }

    /// `DELETE` with a token.
    pub fn delete(&self, path: &str, token: &str) -> Resp {
        self.request("DELETE", path, Some(token), None)
    }

    /// Writes raw bytes on a fresh connection and reads until the daemon closes it.
    pub fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        let mut stream = self.connect();
        stream.write_all(bytes).unwrap();
        read_to_close(&mut stream)
    }

    /// A fresh connection with a read timeout (so a hung daemon fails the test instead of
    /// hanging it).
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream
    }

    /// Runs tmux against this daemon's private server.
    pub fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-S")
            .arg(self.state.join("tmux.sock"))
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap()
    }

    /// The text currently on a session's pane: tmux's capture for a tmux session; for a pty
    /// Whether the log so far contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().contains(needle)
    }

    /// Kills the daemon with SIGKILL (no chance to clean up or flush anything; tmux and the
    /// agents keep running) and starts it again on the same state directory and config.
    pub fn kill9_and_restart(&mut self) {
        self.kill9();
        self.relaunch();
    }

    /// Stops the daemon with SIGSTOP (its agents keep running), as a machine that hangs.
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// Lets a daemon stopped by [`DaemonProcess::pause`] go on (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// Kills the daemon with SIGKILL and waits until it is gone (tmux and the agents keep
    /// running). Start it again with [`DaemonProcess::relaunch`].
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        signal(child.id(), "KILL");
        wait_with_deadline(&mut child).expect("daemon dies after SIGKILL");
    }

    /// Starts the daemon again on the same state directory and config after
    /// [`DaemonProcess::kill9`] or [`DaemonProcess::stop`].
    pub fn relaunch(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        let (tx, rx) = crossbeam_channel::unbounded();
        self.lines = rx;
        self.launch(tx);
    }

    /// Connects to `/ws/observe?{query}` with extra headers; the handshake's HTTP error is
    /// returned as the status code.
    pub fn ws_with(&self, query: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
        use tungstenite::client::IntoClientRequest;
        let stream = self.connect();
        let url = format!("ws://{}/ws/observe?{query}", self.addr);
        let mut request = url.into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        match tungstenite::client(request, Retrying(stream)) {
            Ok((socket, _)) => Ok(Ws { socket }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("handshake failed: {e}"),
        }
    }

    /// Connects with a token in the query string, as the reference's clients do.
    pub fn ws(&self, token: &str) -> Ws {
        self.ws_with(&format!("token={token}"), &[])
            .expect("upgrade accepted")
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.kill_everything();
    }
}

impl DaemonProcess {
    /// Kills the daemon and everything it started (its agents, its tmux server, its pty
    /// holders) with SIGKILL, as when its machine dies.
    pub fn kill_everything(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "KILL");
            let _ = child.wait();
        }
        // The agents' process groups, so that none outlives the test and writes into its
        // directory after it is removed (an agent CLI saving its state on SIGHUP would
        // leave the directory behind).
        let pane_pids: Vec<u32> = Command::new("tmux")
            .arg("-S")
            .arg(self.state.join("tmux.sock"))
            .args(["list-panes", "-a", "-F", "#{pane_pid}"])
            .stderr(Stdio::null())
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|line| line.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        for pid in &pane_pids {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        // Never panics (a panic while a test fails would abort the whole test binary and
        // leave its daemons running), also when tmux is not installed.
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(self.state.join("tmux.sock"))
            .arg("kill-server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        release_pty_holders(&self.state.join("pty"));
        // A tmux client the daemon started just before it was killed can still bring the
        // server up after `kill-server`; anything that names this daemon's socket goes.
        kill_processes_mentioning(&self.state.join("tmux.sock"));
        // Whatever an agent started in a session of its own still points into this
        // directory: through its environment (a CLI's HOME) or its arguments.
        let strays = processes_living_in(self.dir.path());
        for pid in &strays {
            signal(*pid, "KILL");
        }
        // Bounded: a process SIGKILLed is gone within moments.
        let deadline = Instant::now() + PATIENCE;
        while pane_pids
            .iter()
            .chain(&strays)
            .any(|pid| process_alive(*pid))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// SIGKILLs every process whose command line contains `path` (tmux keeps its first
/// client's arguments, `-S <socket>`, as the server's command line).
fn kill_processes_mentioning(path: &Path) {
    for pid in processes_mentioning(path) {
        signal(pid, "KILL");
    }
}

/// Pids of the processes whose command line contains `path`.
pub fn processes_mentioning(path: &Path) -> Vec<u32> {
    let needle = path.as_os_str().as_encoded_bytes();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            found.push(pid);
        }
    }
    found
}

/// Pids of the processes (other than this one) whose command line or environment
/// contains `path`.
fn processes_living_in(path: &Path) -> Vec<u32> {
    let needle = path.as_os_str().as_encoded_bytes();
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let mentions = |file: &str| {
                std::fs::read(entry.path().join(file))
                    .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            };
            (pid != own && (mentions("cmdline") || mentions("environ"))).then_some(pid)
        })
        .collect()
}

/// Releases every pty holder whose socket is in `dir` (each kills its agent's process group
/// and exits), as the daemon does, then SIGKILLs any holder that did not answer.
fn release_pty_holders(dir: &Path) {
    use orchestra::pty::{auth, link};
    let key = auth::Key::read(&auth::key_path(dir));
    if let (Ok(entries), Ok(key)) = (std::fs::read_dir(dir), key) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("sock") {
                continue;
            }
            if let Ok(attached) = link::connect(&path, &key, Duration::from_secs(5)) {
                link::release(attached.control, Duration::from_secs(5));
            }
        }
    }
    kill_processes_mentioning(dir);
}

/// Polls `probe` every 20 ms until it returns `Some`, for at most [`PATIENCE`]. Used only
/// where the daemon offers no event to wait on.
pub fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a signal by name with `kill`.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// Waits for a child to exit, at most [`PATIENCE`].
pub fn wait_with_deadline(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a process exists (zombies count as gone).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .unwrap()
            .1
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// A test's TCP stream that reads and writes again when a signal interrupts it (a loaded
/// CI run saw a WebSocket handshake fail with `EINTR`, which tungstenite cannot resume).
#[derive(Debug)]
pub struct Retrying(pub TcpStream);

impl Read for Retrying {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl Write for Retrying {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Reads until EOF (the daemon closed the connection).
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("read failed after {} bytes: {e}", out.len()),
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }

    /// Asserts an error response with this status and `error_code`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        let body = self.json();
        assert_eq!(body["error_code"], code, "body: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "body: {body}"
        );
    }
}

/// Splits a byte stream into the responses it contains (bodies by `Content-Length`).
pub fn parse_responses(mut raw: &[u8]) -> Vec<Resp> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        let head_len = match parsed.parse(raw) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("bad response {other:?}: {:?}", String::from_utf8_lossy(raw)),
        };
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let status = parsed.code.unwrap();
        out.push(Resp {
            status,
            headers,
            body: raw[head_len..head_len + len].to_vec(),
        });
        raw = &raw[head_len + len..];
    }
    out
}

/// A WebSocket client connected to `/ws/observe`.
pub struct Ws {
    /// The socket (blocking, with a read timeout).
    pub socket: tungstenite::WebSocket<Retrying>,
}

/// How a WebSocket session ended, as seen by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code.
    Code(u16),
    /// The TCP connection ended without a close frame.
    Dropped,
}

impl Ws {
    /// Sends a JSON message.
    pub fn send(&mut self, message: Value) {
        self.socket
            .send(tungstenite::Message::text(message.to_string()))
            .unwrap();
    }

    /// The next JSON message; panics on close or timeout.
    pub fn recv(&mut self) -> Value {
        // The daemon's pings arrive more often than the socket's read timeout, so the wait
        // is bounded here as well.
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(Instant::now() < deadline, "no message within {PATIENCE:?}");
            match self.socket.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    return serde_json::from_str(&text).unwrap();
                }
                Ok(tungstenite::Message::Ping(_)) | Ok(tungstenite::Message::Pong(_)) => {}
                Ok(other) => panic!("unexpected message {other:?}"),
                // A signal (or a stop and continue) interrupted the read: read again.
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("receive failed: {e}"),
            }
        }
    }

    /// Skips messages until one satisfies `accept`, which it returns.
    pub fn recv_until(&mut self, what: &str, mut accept: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let message = self.recv();
            if accept(&message) {
                return message;
            }
            if std::env::var_os("ORCHESTRA_TEST_ECHO").is_some() {
                let text: String = message.to_string().chars().take(200).collect();
                eprintln!("[ws] skipped while waiting for {what}: {text}");
            }
        }
    }

    /// Reads until the connection closes; returns how.
    pub fn wait_closed(&mut self) -> (Vec<Value>, Closed) {
        let mut seen = Vec::new();
        loop {
            match self.socket.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    seen.push(serde_json::from_str(&text).unwrap())
                }
                Ok(tungstenite::Message::Close(frame)) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                    return (seen, Closed::Code(code));
                }
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed)
                | Err(tungstenite::Error::AlreadyClosed)
                | Err(tungstenite::Error::Protocol(_)) => return (seen, Closed::Dropped),
                Err(tungstenite::Error::Io(e)) if e.kind() != std::io::ErrorKind::WouldBlock => {
                    return (seen, Closed::Dropped);
                }
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Subscribes to a session and returns the `subscribed` acknowledgement.
    pub fn subscribe(&mut self, session: &str) -> Value {
        self.send(serde_json::json!({"type": "subscribe_terminal", "session_id": session}));
        self.recv_until("subscribed", |m| {
            m["type"] == "subscribed" || m["type"] == "error"
        })
    }
}
