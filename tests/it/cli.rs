//! The `orchestra` CLI against a real daemon: agents, send, delegate, tasks, exit codes,
//! and `attach` inside a real pseudo-terminal (portable-pty).

use std::io::{Read, Write};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use serde_json::Value;

use crate::common::{DaemonProcess, PATIENCE, wait_until};

/// A daemon with a bash agent (`term`) whose prompt is `ready$ `.
/// A daemon whose agents run on tmux whatever the suite's backend (for what tests tmux).
fn tmux_daemon() -> DaemonProcess {
    DaemonProcess::start_on(
        "tmux",
        "[agents.term]\ncommand = [\"bash\", \"--noprofile\", \"--norc\", \"-i\"]\n\
         env = { PS1 = \"ready$ \" }\n",
    )
}

fn daemon() -> DaemonProcess {
    DaemonProcess::start_with(
        "[agents.term]\ncommand = [\"bash\", \"--noprofile\", \"--norc\", \"-i\"]\n\
         env = { PS1 = \"ready$ \" }\n",
    )
}

/// `orchestra ARGS` against `daemon` (through its socket in its state dir, no token).
fn cli(daemon: &DaemonProcess, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(args)
        .args(target(daemon))
        .env_remove("ORCHESTRA_URL")
        .env_remove("ORCHESTRA_TOKEN")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// The arguments that point a command at `daemon` (its config and state dir).
pub(crate) fn target(daemon: &DaemonProcess) -> Vec<String> {
    vec![
        "--config".into(),
        daemon.config.display().to_string(),
        "--state-dir".into(),
        daemon.state.display().to_string(),
    ]
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}{}",
        output.status.code(),
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

#[test]
fn agents_from_the_command_line() {
    let daemon = daemon();
    let work = daemon.work.display().to_string();
    let session = ok(&cli(
        &daemon,
        &[
            "agents",
            "spawn",
            "echo",
            "--working-dir",
            &work,
            "--name",
            "cli",
        ],
    ))
    .trim()
    .to_string();
    assert_eq!(session, "sess-echo-cli");
    let table = ok(&cli(&daemon, &["agents"]));
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("SESSION"), "{table}");
    assert!(
        table.contains("sess-echo-cli") && table.contains("running"),
        "{table}"
    );
    let json: Value =
        serde_json::from_str(&ok(&cli(&daemon, &["agents", "ls", "--json"]))).unwrap();
    assert_eq!(json["total"], 1);
    let shown = ok(&cli(&daemon, &["agents", "show", &session]));
    assert!(shown.contains(&format!("working_dir: {work}")), "{shown}");
    // Errors read like the API's, with documented exit codes.
    let missing = cli(&daemon, &["agents", "show", "sess-echo-nope"]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(
        stderr(&missing).contains("SESSION_NOT_FOUND"),
        "{}",
        stderr(&missing)
    );
    let taken = cli(
        &daemon,
        &[
            "agents",
            "spawn",
            "echo",
            "--working-dir",
            &work,
            "--name",
            "cli",
        ],
    );
    assert_eq!(taken.status.code(), Some(1));
    assert!(stderr(&taken).contains("SESSION_EXISTS"));
    // Over TCP a token goes only to a server that proves it can verify it: an expired one
    // of this daemon's is sent (and refused there), one of another daemon's never leaves.
    let expired = crate::common::sign(
        &serde_json::json!({"scope": "control", "exp": crate::common::now() - 3600}),
        &daemon.secret(),
        jsonwebtoken::Algorithm::HS256,
    );
    let refused = Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args([
            "agents",
            "--url",
            &format!("http://{}", daemon.addr),
            "--token",
            &expired,
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(4));
    assert!(
        stderr(&refused).contains("INVALID_TOKEN"),
        "{}",
        stderr(&refused)
    );
    assert!(stderr(&refused).contains("expired"), "{}", stderr(&refused));
    let not_a_jwt = Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args([
            "agents",
            "--url",
            &format!("http://{}", daemon.addr),
            "--token",
            "nope",
        ])
        .output()
        .unwrap();
    assert_eq!(not_a_jwt.status.code(), Some(4));
    assert!(
        stderr(&not_a_jwt).contains("the token was not sent"),
        "{}",
        stderr(&not_a_jwt)
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let unreachable = Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args([
            "agents",
            "--url",
            &format!("http://{closed}"),
            "--token",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(5));
    assert!(stderr(&unreachable).contains("orchestra serve"), "a hint");
    // Without a token a command talks to the local daemon's socket; --url alone is refused.
    let remote = Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args([
            "agents",
            "--url",
            "http://devbox.invalid:8080",
            "--state-dir",
        ])
        .arg(&daemon.state)
        .arg("--config")
        .arg(&daemon.config)
        .env_remove("ORCHESTRA_TOKEN")
        .output()
        .unwrap();
    assert_eq!(remote.status.code(), Some(2));
    assert!(
        stderr(&remote).contains("needs --token"),
        "{}",
        stderr(&remote)
    );
    let usage = cli(&daemon, &["agents", "spawn"]);
    assert_eq!(usage.status.code(), Some(2));
    // Waiting for a reply from an agent whose CLI reports none is refused at once.
    let no_replies = cli(&daemon, &["send", &session, "hello", "--wait"]);
    assert_eq!(no_replies.status.code(), Some(1));
    assert!(
        stderr(&no_replies).contains("reports no replies"),
        "{}",
        stderr(&no_replies)
    );
    // Send types into the agent.
    ok(&cli(&daemon, &["send", &session, "hello from the cli"]));
    let screen = wait_until("the message in the pane", || {
        let screen = daemon.screen("agent-echo-cli");
        (screen.matches("hello from the cli").count() >= 2).then_some(screen)
    });
    assert!(screen.contains("echo agent ready"), "{screen}");
    let killed = ok(&cli(&daemon, &["agents", "kill", &session]));
    assert_eq!(killed.trim(), "sess-echo-cli terminated");
    let completion = ok(&Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(["completions", "bash"])
        .output()
        .unwrap());
    assert!(
        completion.contains("complete -F"),
        "a bash completion script"
    );
    let version = ok(&Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .arg("--version")
        .output()
        .unwrap());
    assert!(version.starts_with("orchestra 0."), "{version}");
}

#[test]
fn tasks_are_delegated_and_awaited_with_their_outcome_as_exit_code() {
    let daemon = daemon();
    let work = daemon.work.display().to_string();
    let done = cli(
        &daemon,
        &[
            "delegate",
            "task",
            "WRITE out.txt 7",
            "--working-dir",
            &work,
            "--wait",
        ],
    );
    let text = ok(&done);
    assert!(text.contains("completed"), "{text}");
    assert!(text.contains("files: out.txt"), "{text}");
    let failed = cli(
        &daemon,
        &["delegate", "task", "FAIL", "--working-dir", &work, "--wait"],
    );
    assert_eq!(failed.status.code(), Some(6), "{}", stdout(&failed));
    let id = ok(&cli(
        &daemon,
        &[
            "delegate",
            "task",
            "WAITFOR never.txt",
            "--working-dir",
            &work,
        ],
    ))
    .trim()
    .to_string();
    assert!(id.parse::<u64>().is_ok(), "{id}");
    let list = ok(&cli(&daemon, &["tasks"]));
    assert!(list.lines().next().unwrap().starts_with("TASK"), "{list}");
    assert_eq!(list.lines().count(), 4, "{list}");
    let shown = ok(&cli(&daemon, &["tasks", "show", &id]));
    assert!(shown.contains("task: WAITFOR never.txt"), "{shown}");
    // Waiting on it in the background while it is cancelled.
    let mut waiter = Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(["tasks", "wait", &id])
        .args(target(&daemon))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the task to run", || {
        (daemon.task(&daemon.control(), &id)["status"] == "running").then_some(())
    });
    let cancelled = ok(&cli(&daemon, &["tasks", "cancel", &id]));
    assert!(cancelled.contains("cancelled"), "{cancelled}");
    let status = crate::common::wait_with_deadline(&mut waiter).expect("wait returns");
    assert_eq!(status.code(), Some(8));
    let missing = cli(&daemon, &["tasks", "wait", "999"]);
    assert_eq!(missing.status.code(), Some(3));
}

/// A CLI running in a pseudo-terminal, its output collected by a thread.
pub(crate) struct Terminal {
    pub(crate) child: Box<dyn portable_pty::Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    master: Box<dyn portable_pty::MasterPty + Send>,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    pub(crate) fn start(program: &str, args: &[String], rows: u16, cols: u16) -> Terminal {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut command = CommandBuilder::new(program);
        command.args(args);
        command.env("TERM", "xterm-256color");
        command.env_remove("ORCHESTRA_URL");
        command.env_remove("ORCHESTRA_TOKEN");
        let child = pty.slave.spawn_command(command).unwrap();
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let writer = pty.master.take_writer().unwrap();
        Terminal {
            child,
            writer,
            master: pty.master,
            output,
        }
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    pub(crate) fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?} in the terminal; it shows {text:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn type_keys(&mut self, keys: &[u8]) {
        self.writer.write_all(keys).unwrap();
        self.writer.flush().unwrap();
    }

    /// Waits for the program to exit; its exit code.
    pub(crate) fn exit_code(&mut self) -> u32 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.exit_code();
            }
            assert!(Instant::now() < deadline, "the CLI did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The screen as a terminal would show it (rows of text).
    pub(crate) fn screen(&self, rows: u16, cols: u16) -> String {
        let size = |n: u16| std::num::NonZeroU16::new(n).unwrap();
        let mut parser = vt100::Parser::new(size(rows), size(cols), 0);
        parser.process(&self.output.lock().unwrap());
        parser.screen().contents()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn pane_width(daemon: &DaemonProcess, tmux_session: &str) -> String {
    let out = daemon.tmux(&[
        "display",
        "-p",
        "-t",
        &format!("={tmux_session}:"),
        "#{pane_width}",
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn attach_is_raw_resizes_reconnects_detaches_and_restores_the_terminal() {
    let mut daemon = tmux_daemon();
    let token = daemon.control();
    let spawned = daemon.spawn(&token, "term");
    let session = spawned["session_id"].as_str().unwrap().to_string();
    let tmux_session = spawned["tmux_session"].as_str().unwrap().to_string();
    // `stty -a` after the attach shows the terminal mode it left behind.
    let attach = format!(
        "'{}' attach {session} --config '{}' --state-dir '{}'; echo \"exit=$?\"; stty -a",
        env!("CARGO_BIN_EXE_orchestra"),
        daemon.config.display(),
        daemon.state.display()
    );
    let mut term = Terminal::start("sh", &["-c".into(), attach], 30, 100);
    term.wait_for("ready$");
    // The pane takes the terminal's size.
    wait_until("the pane at 100 columns", || {
        (pane_width(&daemon, &tmux_session) == "100").then_some(())
    });
    // Raw mode: keys reach the agent without Enter, and Ctrl-C is a key, not a signal.
    term.type_keys(b"echo one-$((20+22))");
    wait_until("the keys in the pane before Enter", || {
        daemon
            .screen(&tmux_session)
            .contains("echo one-$((20+22))")
            .then_some(())
    });
    term.type_keys(b"\x03");
    // Bash drops keys typed while it handles the interrupt: wait for its new prompt.
    wait_until("a new prompt after Ctrl-C", || {
        let screen = daemon.screen(&tmux_session);
        (screen.contains("^C") && screen.trim_end().ends_with("ready$")).then_some(())
    });
    term.type_keys(b"echo one-$((20+22))\r");
    term.wait_for("one-42");
    // Resizing the terminal resizes the pane.
    term.master
        .resize(PtySize {
            rows: 33,
            cols: 111,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    wait_until("the pane at 111 columns", || {
        (pane_width(&daemon, &tmux_session) == "111").then_some(())
    });
    // The daemon is killed and restarted under the attach: it reconnects and goes on.
    daemon.kill9_and_restart_on_same_port();
    term.wait_for("reconnected");
    term.type_keys(b"echo two-$((20+22))\r");
    wait_until("the second command's output on the screen", || {
        let screen = term.screen(33, 111);
        screen.contains("\ntwo-42").then_some(())
    });
    let screen = term.screen(33, 111);
    assert_eq!(
        screen.lines().filter(|l| l.trim_end() == "one-42").count(),
        1,
        "no line twice after the reconnect:\n{screen}"
    );
    // Detach: the attach ends with 0 and the terminal is back in its normal mode.
    term.type_keys(b"\x1d");
    let text = term.wait_for("exit=0");
    assert!(text.contains("[orchestra: detached]"), "{text}");
    let after = term.wait_for("speed");
    let modes = &after[after.rfind("speed").unwrap()..];
    assert!(
        modes.contains(" icanon") && modes.contains(" echo "),
        "{modes}"
    );
    assert!(!modes.contains("-icanon"), "{modes}");
    assert_eq!(term.exit_code(), 0);
    // The agent is untouched by the detach.
    assert_eq!(
        daemon.get(&format!("/api/agents/{session}"), &token).json()["status"],
        "running"
    );
}

/// `orchestra attach` is the terminal way into a `pty` session (there is no tmux session):
/// raw keys, the terminal's size, a daemon restart under it, detach.
#[test]
fn attach_works_on_a_pty_session() {
    let mut daemon = DaemonProcess::start_on(
        "pty",
        "[agents.term]\ncommand = [\"bash\", \"--noprofile\", \"--norc\", \"-i\"]\n\
         env = { PS1 = \"ready$ \" }\n",
    );
    let token = daemon.control();
    let session = daemon.spawn(&token, "term")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut args = vec!["attach".to_string(), session.clone()];
    args.extend(target(&daemon));
    let mut term = Terminal::start(env!("CARGO_BIN_EXE_orchestra"), &args, 30, 100);
    term.wait_for("ready$");
    // The agent's terminal takes the size of the one attached.
    term.type_keys(b"stty size\r");
    term.wait_for("30 100");
    term.master
        .resize(PtySize {
            rows: 33,
            cols: 111,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    term.type_keys(b"echo one-$((20+22)); stty size\r");
    term.wait_for("one-42");
    // The new size travels from the attach client (on SIGWINCH) through the daemon, racing
    // the keys: ask again, after each answer, until the agent sees it.
    wait_until("the agent's terminal resized", || {
        let text = term.text();
        if text.contains("33 111") {
            return Some(());
        }
        let answers = text.matches("30 100").count();
        term.type_keys(b"stty size\r");
        wait_until("an answer to stty size", || {
            let text = term.text();
            (text.contains("33 111") || text.matches("30 100").count() > answers).then_some(())
        });
        None
    });
    daemon.kill9_and_restart_on_same_port();
    term.wait_for("reconnected");
    term.type_keys(b"echo two-$((20+22))\r");
    wait_until("the second command's output on the screen", || {
        term.screen(33, 111).contains("\ntwo-42").then_some(())
    });
    let screen = term.screen(33, 111);
    assert_eq!(
        screen.lines().filter(|l| l.trim_end() == "one-42").count(),
        1,
        "no line twice after the reconnect:\n{screen}"
    );
    term.type_keys(b"\x1d");
    assert_eq!(term.exit_code(), 0);
    assert_eq!(
        daemon.get(&format!("/api/agents/{session}"), &token).json()["status"],
        "running"
    );
}

#[test]
fn a_read_only_attach_types_nothing_and_ends_with_the_agent() {
    let daemon = daemon();
    let token = daemon.control();
    let spawned = daemon.spawn(&token, "term");
    let session = spawned["session_id"].as_str().unwrap().to_string();
    let tmux_session = spawned["tmux_session"].as_str().unwrap().to_string();
    let mut args = vec!["attach".to_string(), session.clone(), "--read-only".into()];
    args.extend(target(&daemon));
    let mut term = Terminal::start(env!("CARGO_BIN_EXE_orchestra"), &args, 24, 80);
    term.wait_for("ready$");
    term.type_keys(b"echo nope\r");
    // A control client types after the observer did; once its output shows, the observer's
    // keys would have too.
    let mut ws = daemon.ws(&token);
    ws.send(serde_json::json!({"type": "terminal_input", "session_id": session, "data": "echo marker\r"}));
    term.wait_for("marker");
    assert!(!daemon.screen(&tmux_session).contains("nope"));
    // The agent ends: so does the attach, saying why.
    ws.send(
        serde_json::json!({"type": "terminal_input", "session_id": session, "data": "exit 3\r"}),
    );
    let text = term.wait_for("[orchestra:");
    assert_eq!(term.exit_code(), 0, "{text}");
    let text = term.wait_for("status 3]");
    assert!(text.contains("exited with status 3"), "{text}");
}

/// An agent's output reaches beyond its screen (clipboard, title, keyboard protocol) and
/// leaves modes on; `orchestra attach` drops the first and turns the rest off on detach.
#[test]
fn attach_keeps_the_agent_on_its_screen_and_puts_its_modes_back() {
    let daemon = DaemonProcess::start_with(&format!(
        "[agents.modes]\ncommand = [\"{}\"]\n",
        crate::common::agent_script("terminal_modes.sh")
    ));
    let token = daemon.control();
    let session = daemon.spawn(&token, "modes")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut args = vec!["attach".to_string(), session];
    args.extend(target(&daemon));
    let mut term = Terminal::start(env!("CARGO_BIN_EXE_orchestra"), &args, 24, 80);
    term.wait_for("modes agent ready");
    term.type_keys(b"go\r");
    term.wait_for("modes set");
    term.type_keys(b"\x1d");
    // Written after the terminal is restored.
    term.wait_for("[orchestra: detached]");
    assert_eq!(term.exit_code(), 0);
    let out = term.output.lock().unwrap().clone();
    let find_last = |needle: &[u8]| out.windows(needle.len()).rposition(|w| w == needle);
    for dropped in [&b"\x1b]52;"[..], b"\x1b]2;", b"agent-title", b"\x1b[>1u"] {
        assert_eq!(
            find_last(dropped),
            None,
            "{:?} reached the terminal",
            String::from_utf8_lossy(dropped)
        );
    }
    for (set, reset) in [
        (&b"\x1b[?1004h"[..], &b"\x1b[?1004l"[..]),
        (b"\x1b[?2004h", b"\x1b[?2004l"),
        (b"\x1b[?1000;1006h", b"\x1b[?1000l"),
        (b"\x1b[?1000;1006h", b"\x1b[?1006l"),
        (b"\x1b[?1h", b"\x1b[?1l"),
        (b"\x1b=", b"\x1b>"),
        (b"\x1b[?25l", b"\x1b[?25h"),
        (b"\x1b)0\x0e", b"\x0f\x1b(B\x1b)B"),
    ] {
        let shown = String::from_utf8_lossy(set);
        let set_at = find_last(set).unwrap_or_else(|| panic!("{shown:?} did not pass"));
        let reset_at = find_last(reset).unwrap_or(0);
        assert!(reset_at > set_at, "{shown:?} was not undone");
    }
}

#[test]
fn a_delegated_shell_script_runs_as_written_and_its_test_command_runs() {
    let daemon = DaemonProcess::start();
    let work = daemon.work.display().to_string();
    // `--wait` after the test command is a flag of `delegate`, not part of the command.
    let waited = cli(
        &daemon,
        &[
            "delegate",
            "shell",
            "echo made > made.txt",
            "--working-dir",
            &work,
            "--test-command",
            "sh -c 'grep -q made made.txt'",
            "--wait",
            "--json",
        ],
    );
    assert_eq!(waited.status.code(), Some(0), "{}", stderr(&waited));
    let ticket: Value = serde_json::from_str(&stdout(&waited)).expect("the ticket as JSON");
    assert_eq!(ticket["status"], "completed", "{ticket}");
    assert_eq!(
        ticket["test_command"],
        serde_json::json!(["sh", "-c", "grep -q made made.txt"])
    );
    // The script ran exactly as written (nothing appended to it) and the tests ran.
    assert_eq!(ticket["result"]["exit_code"], 0, "{ticket}");
    assert_eq!(ticket["result"]["tests_passed"], true, "{ticket}");
    let unbalanced = cli(
        &daemon,
        &["delegate", "shell", "true", "--test-command", "sh -c 'oops"],
    );
    assert_eq!(unbalanced.status.code(), Some(2));
    assert!(
        stderr(&unbalanced).contains("not closed"),
        "{}",
        stderr(&unbalanced)
    );
}

#[test]
fn send_wait_gives_up_after_its_timeout() {
    let daemon = DaemonProcess::start_with(&format!(
        "[agents.hooked]\ncommand = [\"{}\"]\nhooks = \"claude\"\n",
        crate::common::agent_script("echo.sh")
    ));
    let token = daemon.control();
    let session = crate::common::id_of(&daemon.spawn(&token, "hooked"));
    // The stand-in agent has hooks but never ends a turn: no reply comes.
    let waited = cli(&daemon, &["send", &session, "hello", "--wait=1s"]);
    assert_eq!(waited.status.code(), Some(1), "{}", stderr(&waited));
    assert!(
        stderr(&waited).contains("no reply from"),
        "{}",
        stderr(&waited)
    );
}

#[test]
fn a_busy_port_says_how_to_choose_another() {
    let dir = tempfile::Builder::new().prefix("orch").tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .arg("serve")
        .arg("--listen")
        .arg(busy.local_addr().unwrap().to_string())
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env_remove("ORCHESTRA_JWT_SECRET")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = stderr(&output);
    assert!(said.contains("--listen 127.0.0.1:PORT"), "{said}");
}
