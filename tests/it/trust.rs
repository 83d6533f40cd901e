//! The trust boundary of credentials: nothing the daemon would accept ever reaches a
//! process that is not the daemon. Commands on the daemon's host use its socket and no
//! token; over TCP a token is sent only after the server proved it holds the token's key;
//! a process that takes the daemon's port while it is down receives nothing it could
//! replay.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{DaemonProcess, wait_until};

/// A process squatting on a port: it records everything every connection sends and answers
/// each request (a server-proof challenge included) with a made-up `200`.
pub struct Squatter {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    accepted: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
    stopped: Arc<AtomicBool>,
    listening: Option<std::thread::JoinHandle<()>>,
}

impl Squatter {
    /// Binds `addr` (which the daemon has released) and starts answering.
    pub fn bind(addr: SocketAddr) -> Squatter {
        let listener = wait_until("the daemon's port to be free", || {
            TcpListener::bind(addr).ok()
        });
        let mut squatter = Squatter {
            addr,
            received: Arc::default(),
            accepted: Arc::default(),
            finished: Arc::default(),
            stopped: Arc::default(),
            listening: None,
        };
        let (received, accepted, finished, stopped) = (
            squatter.received.clone(),
            squatter.accepted.clone(),
            squatter.finished.clone(),
            squatter.stopped.clone(),
        );
        squatter.listening = Some(std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (received, finished, stopped) =
                    (received.clone(), finished.clone(), stopped.clone());
                std::thread::spawn(move || {
                    // Short read timeouts only to notice `stop`; every byte is recorded
                    // as it arrives.
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
                    let mut request = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let mut total = 0usize;
                    // Bounded: at most 1 MiB per connection is read.
                    while total < 1 << 20 {
                        match stream.read(&mut chunk) {
                            Ok(0) => break,
                            Ok(n) => {
                                total += n;
                                received.lock().unwrap().extend_from_slice(&chunk[..n]);
                                request.extend_from_slice(&chunk[..n]);
                                if request.windows(4).any(|w| w == b"\r\n\r\n") {
                                    request.clear();
                                    let body = br#"{"proof":"forged"}"#;
                                    let head = format!(
                                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                                         Content-Length: {}\r\n\r\n",
                                        body.len()
                                    );
                                    let _ = stream.write_all(head.as_bytes());
                                    let _ = stream.write_all(body);
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) =>
                            {
                                if stopped.load(Ordering::SeqCst) {
                                    break;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                    received.lock().unwrap().push(b'\n');
                    finished.fetch_add(1, Ordering::SeqCst);
                });
            }
        }));
        squatter
    }

    /// Waits until what it received contains `needle` at least `count` times.
    pub fn wait_for(&self, needle: &str, count: usize) {
        wait_until(&format!("{count} times {needle:?} at the squatter"), || {
            let seen = String::from_utf8_lossy(&self.received.lock().unwrap())
                .matches(needle)
                .count();
            (seen >= count).then_some(())
        });
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops listening, ends every connection (after reading what it sent), and returns
    /// everything received.
    pub fn stop(mut self) -> String {
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag and closes the listener.
        let _ = TcpStream::connect(self.addr);
        if let Some(listening) = self.listening.take() {
            listening.join().unwrap();
        }
        wait_until("the squatter's connections to end", || {
            (self.accepted.load(Ordering::SeqCst) == self.finished.load(Ordering::SeqCst))
                .then_some(())
        });
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

/// `orchestra ARGS` with the daemon's config and state dir and nothing from the environment.
fn orchestra(daemon: &DaemonProcess, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(args)
        .arg("--config")
        .arg(&daemon.config)
        .arg("--state-dir")
        .arg(&daemon.state)
        .env_remove("ORCHESTRA_URL")
        .env_remove("ORCHESTRA_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// `orchestra ARGS` (like [`orchestra`]) in a terminal of its own, for `attach`: its exit
/// code and everything it wrote.
fn orchestra_in_terminal(daemon: &DaemonProcess, args: &[&str]) -> (Option<i32>, String) {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 80,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_orchestra"));
    command.args(args);
    command.arg("--config");
    command.arg(&daemon.config);
    command.arg("--state-dir");
    command.arg(&daemon.state);
    command.env_remove("ORCHESTRA_URL");
    command.env_remove("ORCHESTRA_TOKEN");
    let mut child = pty.slave.spawn_command(command).unwrap();
    drop(pty.slave);
    let mut reader = pty.master.try_clone_reader().unwrap();
    let reading = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    let status = child.wait().unwrap();
    drop(pty.master);
    let output = reading.join().unwrap();
    (
        Some(status.exit_code() as i32),
        String::from_utf8_lossy(&output).into_owned(),
    )
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn no_command_sends_a_credential_to_a_process_on_the_daemons_port() {
    let mut daemon = DaemonProcess::start();
    let token = daemon.control();
    let url = format!("http://{}", daemon.addr);
    // With the daemon up: the local commands work through its socket, and a token goes
    // over TCP once the daemon has proved it holds the token's key.
    let listed = orchestra(&daemon, &["agents", "--json"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let remote = orchestra(
        &daemon,
        &["agents", "--json", "--url", &url, "--token", &token],
    );
    assert!(remote.status.success(), "{}", stderr(&remote));
    let link = orchestra(&daemon, &["open"]);
    assert!(link.status.success(), "{}", stderr(&link));
    assert!(
        String::from_utf8_lossy(&link.stdout).contains(&format!("{url}/login?code=")),
        "the link points at the daemon's address: {}",
        String::from_utf8_lossy(&link.stdout)
    );

    // The daemon stops; another process takes its port.
    daemon.stop();
    let squatter = Squatter::bind(daemon.addr);
    let (code, output) = orchestra_in_terminal(&daemon, &["attach", "sess-echo-1"]);
    assert_eq!(code, Some(5), "attach: {output}");
    for args in [
        &["agents"][..],
        &["open"],
        &["send", "sess-echo-1", "hello"],
        &["tasks"],
    ] {
        let output = orchestra(&daemon, args);
        assert_eq!(
            output.status.code(),
            Some(5),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("orchestra serve"),
            "{args:?} says how to start the daemon: {}",
            stderr(&output)
        );
    }
    assert_eq!(
        squatter.connections(),
        0,
        "commands without a token never use TCP"
    );
    let (code, output) = orchestra_in_terminal(
        &daemon,
        &["attach", "sess-echo-1", "--url", &url, "--token", &token],
    );
    assert_eq!(code, Some(4), "attach: {output}");
    assert!(output.contains("the token was not sent"), "{output}");
    for args in [
        &["agents", "--url", &url, "--token", &token][..],
        &["open", "--url", &url, "--token", &token],
        &["delegate", "echo", "hi", "--url", &url, "--token", &token],
    ] {
        let output = orchestra(&daemon, args);
        assert_eq!(
            output.status.code(),
            Some(4),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("the token was not sent"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert!(squatter.connections() >= 4, "the challenges reached it");
    let received = squatter.stop();
    let signature = token.rsplit('.').next().unwrap();
    assert!(!received.contains(signature), "{received}");
    assert!(
        !received.to_ascii_lowercase().contains("authorization"),
        "{received}"
    );
    assert!(received.contains("/api/server-proof"), "{received}");
}

#[test]
fn the_local_socket_is_the_daemons_users_alone() {
    let daemon = DaemonProcess::start();
    let socket = daemon.state.join("api.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "api.sock mode");
    // Even with the file modes opened up, the daemon checks who connects (SO_PEERCRED).
    assert_eq!(
        orchestra::sys::effective_uid(),
        0,
        "this test switches to another user with setpriv and must run as root"
    );
    for dir in [daemon.dir.path(), daemon.state.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let script = "import socket,sys\n\
        s=socket.socket(socket.AF_UNIX)\n\
        s.connect(sys.argv[1])\n\
        try: s.sendall(b'GET /api/agents HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n')\n\
        except OSError: pass\n\
        data=b''\n\
        while True:\n\
        \x20   d=s.recv(65536)\n\
        \x20   if not d: break\n\
        \x20   data+=d\n\
        sys.stdout.write(data.decode('utf-8','replace'))\n";
    let other = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .arg(&socket)
        .output()
        .expect("setpriv (util-linux) and python3");
    let answer = String::from_utf8_lossy(&other.stdout);
    assert!(
        answer.starts_with("HTTP/1.1 403"),
        "another user is refused: {answer} {}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert!(answer.contains("only the daemon's own user"), "{answer}");
    assert!(!answer.contains("session_id"), "{answer}");
    // The daemon's own user gets the API with no token.
    let own = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(&socket)
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&own.stdout);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
