//! A newcomer's walk: the README's five-minute tour, run as written. The commands come from
//! the README itself (every fenced block right after a `<!-- walk -->` line), so the guide
//! and this test cannot drift apart: a command changed there is run changed here, and a
//! command this walk does not know how to check fails it. The login link `serve` prints in a
//! terminal is followed to the login page, and the configuration reference is checked
//! against the defaults.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};

use crate::cli::{Terminal, target};
use crate::common::{DaemonProcess, PATIENCE, wait_until};

/// The line that marks a fenced block of the README as part of the walk.
const MARKER: &str = "<!-- walk -->";

/// The commands of the README's walk blocks, in order, each split into words as a shell
/// would (a comment starts at ` # `). Setup lines (`mkdir`, `cd`) are left out: the walk
/// runs in its daemon's working directory.
fn tour() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("the README");
    let mut commands = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() != MARKER {
            continue;
        }
        let fence = lines.next().unwrap_or_default();
        assert!(
            fence.starts_with("```"),
            "{MARKER} must be followed by a fenced block, not {fence:?}"
        );
        for line in lines.by_ref() {
            if line.starts_with("```") {
                break;
            }
            let command = line.split(" # ").next().unwrap().trim();
            if command.is_empty() || command.starts_with('#') {
                continue;
            }
            if command.starts_with("mkdir ") || command.starts_with("cd ") {
                continue;
            }
            let words = orchestra::cli::commands::split_words(command)
                .unwrap_or_else(|e| panic!("the README's {command:?}: {e}"));
            assert_eq!(
                words[0], "orchestra",
                "the walk runs only orchestra commands: {command:?}"
            );
            commands.push(words[1..].to_vec());
        }
    }
    assert!(!commands.is_empty(), "no {MARKER} block in the README");
    commands
}

/// `orchestra ARGS` against `daemon`, from `dir` as a person's current directory.
fn run(daemon: &DaemonProcess, dir: &Path, args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(args)
        .args(target(daemon))
        .current_dir(dir)
        .env_remove("ORCHESTRA_URL")
        .env_remove("ORCHESTRA_TOKEN")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// Standard output of a command that must have succeeded.
fn ok(args: &[String], output: &Output) -> String {
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "`orchestra {}` exited with {:?}: {out}{}",
        args.join(" "),
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

#[test]
fn the_readme_tour_works_as_documented() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let tour = tour();
    let mut session: Option<String> = None;
    let mut sent: Option<String> = None;
    let mut seen = Vec::new();
    for args in &tour {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["agents", "spawn", ..] => {
                let out = ok(args, &run(&daemon, &daemon.work, args));
                let id = out.trim().to_string();
                let details = daemon.get(&format!("/api/agents/{id}"), &token);
                assert_eq!(details.status, 200, "spawn printed {out:?}");
                // It started where the person stood.
                assert_eq!(
                    details.json()["working_dir"],
                    daemon.work.display().to_string()
                );
                session = Some(id);
                seen.push("spawn");
            }
            ["agents"] | ["agents", "ls"] => {
                let out = ok(args, &run(&daemon, &daemon.work, args));
                let id = session
                    .as_deref()
                    .expect("an agent spawned before it is listed");
                let row = out
                    .lines()
                    .find(|line| line.starts_with(id))
                    .unwrap_or_else(|| panic!("{id} is not listed:\n{out}"));
                assert!(row.contains("running"), "{out}");
                seen.push("list");
            }
            ["send", id, text] => {
                assert_eq!(Some(*id), session.as_deref(), "send to the spawned agent");
                ok(args, &run(&daemon, &daemon.work, args));
                sent = Some(text.to_string());
                seen.push("send");
            }
            ["attach", id] => {
                assert_eq!(Some(*id), session.as_deref(), "attach to the spawned agent");
                let sent = sent.as_deref().expect("a message sent before the attach");
                assert_eq!(
                    sent, "echo $((6 * 7))",
                    "the README's message changed: say here what its output is"
                );
                let mut command = args.clone();
                command.extend(target(&daemon));
                let mut term = Terminal::start(env!("CARGO_BIN_EXE_orchestra"), &command, 24, 80);
                // The agent's screen, with what the message made it print.
                wait_until("the sent command's output in the attached terminal", || {
                    term.screen(24, 80)
                        .lines()
                        .any(|line| line.trim_end() == "42")
                        .then_some(())
                });
                // Ctrl-] detaches and leaves the agent running.
                term.type_keys(b"\x1d");
                let text = term.wait_for("[orchestra: detached]");
                assert_eq!(term.exit_code(), 0, "{text}");
                assert_eq!(
                    daemon.get(&format!("/api/agents/{id}"), &token).json()["status"],
                    "running"
                );
                seen.push("attach");
            }
            ["delegate", "shell", script, rest @ ..] => {
                assert!(
                    rest.contains(&"--wait") && rest.contains(&"--test-command"),
                    "the tour delegates with a test command and waits: {args:?}"
                );
                let out = ok(args, &run(&daemon, &daemon.work, args));
                assert!(out.contains("completed"), "{out}");
                assert!(out.contains("tests: passed"), "{out}");
                // The test command really ran (it was required), after the script.
                let tasks = daemon.get("/api/tasks", &token).json();
                let ticket = tasks["tasks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["task"] == *script)
                    .unwrap_or_else(|| panic!("the delegated task in {tasks}"))
                    .clone();
                assert_eq!(ticket["status"], "completed", "{ticket}");
                assert_eq!(ticket["context"]["tests_required"], true, "{ticket}");
                assert_eq!(ticket["result"]["tests_passed"], true, "{ticket}");
                assert!(ticket["result"]["tests_skipped"].is_null(), "{ticket}");
                seen.push("delegate");
            }
            ["tasks"] | ["tasks", "ls"] => {
                let out = ok(args, &run(&daemon, &daemon.work, args));
                let row = out
                    .lines()
                    .find(|line| line.contains("completed"))
                    .unwrap_or_else(|| panic!("no completed task listed:\n{out}"));
                assert!(row.contains("shell"), "{out}");
                seen.push("tasks");
            }
            ["agents", "kill", id] => {
                assert_eq!(Some(*id), session.as_deref(), "kill the spawned agent");
                let out = ok(args, &run(&daemon, &daemon.work, args));
                assert!(out.contains("terminated"), "{out}");
                daemon
                    .get(&format!("/api/agents/{id}"), &token)
                    .assert_error(404, "SESSION_NOT_FOUND");
                seen.push("kill");
            }
            _ => panic!(
                "the README's tour runs `orchestra {}`, which tests/it/walk.rs does not know \
                 how to check: add it there",
                args.join(" ")
            ),
        }
    }
    assert_eq!(
        seen,
        [
            "spawn", "list", "send", "attach", "delegate", "tasks", "kill"
        ],
        "the tour's steps"
    );
}

/// `cargo run --release -- serve` in a terminal prints a login link; opening it shows the
/// login page (which posts the code back; `web.rs` follows it further).
#[test]
fn serve_in_a_terminal_prints_a_login_link_to_the_login_page() {
    let dir = tempfile::Builder::new().prefix("orch").tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--config".into(),
        config.display().to_string(),
        "--state-dir".into(),
        dir.path().join("state").display().to_string(),
    ];
    let mut term = Terminal::start(env!("CARGO_BIN_EXE_orchestra"), &args, 24, 200);
    let text = term.wait_for("/login?code=");
    let line = text
        .lines()
        .find(|line| line.contains("/login?code="))
        .unwrap();
    let link = line[line.find("http://").expect("a URL")..].trim();
    assert!(line.contains("dashboard login"), "{line}");
    let rest = link.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("<form"), "the login page: {answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("set-cookie"),
        "{answer}"
    );
    // SIGTERM ends it cleanly, and nothing it started stays behind.
    let pid = term.child.process_id().expect("the daemon's pid");
    crate::common::signal(pid, "TERM");
    assert_eq!(term.exit_code(), 0);
    wait_until("nothing of the daemon left running", || {
        crate::common::processes_mentioning(dir.path())
            .is_empty()
            .then_some(())
    });
}

/// The configuration reference shows every key with its default: its TOML block, read by
/// the daemon's own parser, is the built-in configuration (plus the example agent type it
/// adds), so a default changed in the code and not in the docs fails here.
#[test]
fn the_documented_configuration_is_the_default() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let block = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the TOML block of docs/configuration.md");
    let mut documented = orchestra::config::Config::from_toml(block)
        .unwrap_or_else(|e| panic!("docs/configuration.md: {e}"));
    assert!(
        documented.agents.remove("mytui").is_some(),
        "the example agent type"
    );
    let default = orchestra::config::Config::from_toml("").unwrap();
    // The documented state_dir is the default without $XDG_STATE_HOME.
    if std::env::var_os("XDG_STATE_HOME").is_some_and(|v| !v.is_empty()) {
        documented.state_dir = default.state_dir.clone();
    }
    assert_eq!(format!("{documented:#?}"), format!("{default:#?}"));
}
