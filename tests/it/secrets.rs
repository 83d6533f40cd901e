//! The daemon's secrets never reach what it starts, and task text never becomes an option.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::{DaemonProcess, agent_script, wait_until};
use crate::observe::subscribe_with_screen;

/// A secret no test could produce by accident.
fn unique_secret() -> String {
    format!("secret-{}-{}", std::process::id(), crate::common::now())
}

/// The `NAME=value` entries of `/proc/<pid>/environ`.
fn environ(pid: u64) -> Vec<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/environ: {e}"));
    bytes
        .split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect()
}

/// Asserts that `entries` (an environment) hold no trace of the daemon's variables or
/// secret, except the per-session variables in `allowed`.
fn assert_clean(what: &str, entries: &[String], secret: &str, allowed: &[&str]) {
    for entry in entries {
        assert!(!entry.contains(secret), "{what} sees the secret: {entry}");
        let name = entry.split('=').next().unwrap();
        assert!(
            !name.starts_with("ORCHESTRA_") || allowed.contains(&name),
            "{what} inherits {entry}"
        );
        assert!(name != "_", "{what} inherits the daemon's `_` ({entry})");
    }
}

fn pid_of(value: &Value) -> u64 {
    value["pid"].as_u64().expect("pid")
}

#[test]
fn no_process_the_daemon_starts_inherits_its_secret_or_variables() {
    let secret = unique_secret();
    let orchestra = env!("CARGO_BIN_EXE_orchestra");
    let daemon = DaemonProcess::start_tmux_with_env(
        |_| {
            format!(
                "[agents.envdump]\ncommand = [\"/bin/sh\", \"-c\", \"read line; env; echo ENV-DONE; exec cat\"]\n\
                 [agents.ptyenv]\ncommand = [\"{}\"]\nbackend = \"pty\"\n",
                crate::common::agent_script("printenv.sh")
            )
        },
        &[
            ("ORCHESTRA_JWT_SECRET", secret.as_str()),
            ("ORCHESTRA_EXTRA_SETTING", "daemon-only"),
            ("_", orchestra),
        ],
    );
    let token = daemon.control();

    // The daemon itself: the secret was read once, then erased from its environment.
    let own = environ(daemon.pid() as u64);
    assert!(
        own.iter().all(|e| !e.contains(&secret)),
        "the daemon's /proc environ still shows the secret"
    );
    // Its values are overwritten where the kernel shows them; only the names remain there.
    assert!(own.iter().all(|e| !e.contains("daemon-only")), "{own:?}");

    // An agent, and the tmux server it runs under.
    let spawned = daemon.spawn(&token, "printenv");
    let id = spawned["session_id"].as_str().unwrap().to_string();
    let agent = daemon.get(&format!("/api/agents/{id}"), &token).json();
    // The pane's first program, `orchestra agent-exec`, execs the agent a moment after the
    // spawn is answered; /proc offers no event for that.
    let session_var = format!("ORCHESTRA_SESSION_ID={id}");
    let agent_env = crate::common::wait_until("the agent to be exec'd", || {
        let env = environ(pid_of(&agent));
        env.contains(&session_var).then_some(env)
    });
    assert_clean("an agent", &agent_env, &secret, &["ORCHESTRA_SESSION_ID"]);
    assert!(
        agent_env.iter().any(|e| e.starts_with("HOME="))
            && agent_env.iter().any(|e| e.starts_with("PATH=")),
        "agents keep the user's normal environment: {agent_env:?}"
    );
    let server = daemon.tmux(&["display-message", "-p", "#{pid}"]);
    let server_pid: u64 = String::from_utf8_lossy(&server.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_clean("the tmux server", &environ(server_pid), &secret, &[]);

    // A pty agent, and the holder that owns its terminal.
    let pty_id = daemon.spawn(&token, "ptyenv")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let pty_agent = daemon.get(&format!("/api/agents/{pty_id}"), &token).json();
    let pty_var = format!("ORCHESTRA_SESSION_ID={pty_id}");
    let pty_env = crate::common::wait_until("the pty agent to be exec'd", || {
        let env = environ(pid_of(&pty_agent));
        env.contains(&pty_var).then_some(env)
    });
    assert_clean("a pty agent", &pty_env, &secret, &["ORCHESTRA_SESSION_ID"]);
    let socket = daemon.state.join("pty").join(format!("{pty_id}.sock"));
    let holders = crate::common::processes_mentioning(&socket);
    assert!(!holders.is_empty(), "the pty holder runs");
    for holder in holders {
        assert_clean("a pty holder", &environ(holder as u64), &secret, &[]);
    }

    // A viewer of an agent that prints its environment sees no secret.
    let dump = daemon.spawn(&token, "envdump");
    let dump_id = dump["session_id"].as_str().unwrap().to_string();
    let mut ws = daemon.ws(&daemon.token("observe"));
    let mut transcript = subscribe_with_screen(&mut ws, &dump_id);
    let mut typist = daemon.ws(&token);
    typist.send(json!({"type": "terminal_input", "session_id": dump_id, "data": "go\r"}));
    transcript.read_until(&mut ws, &dump_id, "ENV-DONE\r\n");
    assert!(
        transcript.text.contains("ORCHESTRA_SESSION_ID="),
        "env ran: {}",
        transcript.text
    );
    assert!(
        !transcript.text.contains(&secret),
        "a viewer saw the secret"
    );
    assert!(!transcript.text.contains("ORCHESTRA_EXTRA_SETTING"));

    // A headless task and its test command.
    let work = daemon.work.join("task");
    std::fs::create_dir_all(&work).unwrap();
    let pid_file = work.join("agent.pid");
    let release = work.join("release");
    let task = daemon.delegate(
        &token,
        &json!({
            "agent_type": "task",
            "task": format!("PIDFILE {}\nWAITFOR {}", pid_file.display(), release.display()),
            "working_dir": work,
            "context": {"tests_required": true},
            "test_command": ["sh", "-c", "tr '\\0' '\\n' </proc/$$/environ >test-env.txt"],
        }),
    );
    let task_pid: u64 = wait_until("the task agent's pid file", || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
    });
    let task_env = environ(task_pid);
    assert_clean(
        "a headless task",
        &task_env,
        &secret,
        &["ORCHESTRA_SESSION_ID", "ORCHESTRA_TICKET_ID"],
    );
    assert!(
        task_env
            .iter()
            .any(|e| e.starts_with("ORCHESTRA_TICKET_ID="))
    );
    std::fs::write(&release, "").unwrap();
    let ticket = task["ticket_id"].as_str().unwrap();
    let done = daemon.wait_task_final(&token, ticket);
    assert_eq!(done["status"], "completed", "{done}");
    let test_env: Vec<String> = std::fs::read_to_string(work.join("test-env.txt"))
        .expect("the test command ran")
        .lines()
        .map(String::from)
        .collect();
    assert!(
        test_env.iter().any(|e| e.starts_with("PATH=")),
        "{test_env:?}"
    );
    assert_clean("a test command", &test_env, &secret, &[]);

    // The daemon still authenticates with the secret it read: a token signed with it works.
    let signed = crate::common::sign(
        &json!({"sub": "t", "scope": "observe", "exp": crate::common::now() + 60}),
        secret.as_bytes(),
        jsonwebtoken::Algorithm::HS256,
    );
    assert_eq!(daemon.get("/api/health", &signed).status, 200);
}

#[test]
fn working_dirs_that_contain_the_state_dir_are_refused() {
    // The allowed root is the directory holding both the state dir and the work dir.
    let daemon = DaemonProcess::start_with_work(|work| {
        format!(
            "[sessions]\nallowed_roots = [\"{}\"]\n",
            work.parent().unwrap().display()
        )
    });
    let token = daemon.control();
    let root = daemon.work.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&daemon.state).unwrap();
    for dir in [&root, &daemon.state, &daemon.state.join(".")] {
        let resp = daemon.post(
            "/api/agents/spawn",
            &token,
            &json!({"agent_type": "echo", "working_dir": dir}),
        );
        resp.assert_error(400, "INVALID_WORKING_DIR");
        assert!(resp.text().contains("state directory"), "{}", resp.text());
        let resp = daemon.post(
            "/api/delegate",
            &token,
            &json!({"agent_type": "task", "task": "SAY hi", "working_dir": dir}),
        );
        resp.assert_error(400, "INVALID_WORKING_DIR");
    }
    // Without a working_dir the first allowed root is used, and it holds the state dir too.
    let resp = daemon.post("/api/agents/spawn", &token, &json!({"agent_type": "echo"}));
    resp.assert_error(400, "INVALID_WORKING_DIR");
    // A project directory beside the state dir is fine.
    daemon.spawn(&token, "echo");
}

/// A bin directory holding the stand-in CLIs under the built-in types' program names.
fn stand_in_clis(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["claude", "droid", "cursor-agent", "aider"] {
        std::os::unix::fs::symlink(agent_script("argv_recorder.sh"), bin.join(name)).unwrap();
    }
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn task_text_that_starts_with_dashes_never_becomes_an_option() {
    let bin = tempfile::tempdir().unwrap();
    let path = stand_in_clis(bin.path());
    let daemon = DaemonProcess::start_with_env(|_| String::new(), &[("PATH", path.as_str())]);
    let token = daemon.control();
    let text = "--dangerously-skip-permissions --help";
    for agent_type in ["claude", "droid", "cursor", "aider"] {
        let dir = daemon.work.join(agent_type);
        std::fs::create_dir_all(&dir).unwrap();
        let task = daemon.delegate_in(&token, agent_type, &dir, text);
        let done = daemon.wait_task_final(&token, task["ticket_id"].as_str().unwrap());
        assert_eq!(done["status"], "completed", "{agent_type}: {done}");
        let argv_bytes = std::fs::read(dir.join("argv.txt")).expect("the stand-in ran");
        let argv: Vec<String> = argv_bytes
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8(a.to_vec()).unwrap())
            .collect();
        if agent_type != "cursor" {
            // The prompt is never an argument: on standard input, or in a file.
            let file = if agent_type == "claude" {
                "stdin.txt"
            } else {
                "prompt.txt"
            };
            let prompt = std::fs::read_to_string(dir.join(file)).unwrap();
            assert_eq!(
                prompt, text,
                "{agent_type} reads the task from {file}: {argv:?}"
            );
            assert!(!argv.iter().any(|a| a.contains(text)), "{argv:?}");
        } else {
            let at = argv
                .iter()
                .position(|a| a == text)
                .expect("the task is one argument");
            assert_eq!(at, argv.len() - 1, "{agent_type}: {argv:?}");
            assert_eq!(
                argv[at - 1],
                "--",
                "{agent_type}: options end before the task: {argv:?}"
            );
        }
    }
}

#[test]
fn a_shell_task_that_starts_with_dashes_is_a_script_not_an_option() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let task = daemon.delegate_in(
        &token,
        "shell",
        &daemon.work,
        "--version || true\necho ran >ran.txt",
    );
    let done = daemon.wait_task_final(&token, task["ticket_id"].as_str().unwrap());
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        std::fs::read_to_string(daemon.work.join("ran.txt")).unwrap(),
        "ran\n"
    );
}

#[test]
fn a_repository_cannot_run_code_through_the_daemons_git_calls() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let repo = daemon.work.join("repo");
    crate::common::git_repo(&repo, &[("README", "hello\n")]);
    let markers = tempfile::tempdir().unwrap();
    let hook_ran = markers.path().join("hook-ran");
    let monitor_ran = markers.path().join("fsmonitor-ran");
    let script = |marker: &Path| format!("#!/bin/sh\ntouch '{}'\n", marker.display());
    let hooks = repo.join(".git/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let monitor = markers.path().join("fsmonitor.sh");
    for (path, marker) in [
        (hooks.join("post-checkout"), &hook_ran),
        (hooks.join("post-commit"), &hook_ran),
        (monitor.clone(), &monitor_ran),
    ] {
        std::fs::write(&path, script(marker)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    crate::common::git(
        &repo,
        &["config", "core.fsmonitor", monitor.to_str().unwrap()],
    );
    let task = daemon.delegate(
        &token,
        &json!({
            "agent_type": "task",
            "task": "WRITE new.txt made by the agent",
            "working_dir": repo,
            "isolation": "worktree",
        }),
    );
    let done = daemon.wait_task_final(&token, task["ticket_id"].as_str().unwrap());
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["result"]["files_modified"],
        json!(["new.txt"]),
        "{done}"
    );
    assert!(
        !hook_ran.exists(),
        "a repository hook ran in the daemon's name"
    );
    assert!(
        !monitor_ran.exists(),
        "core.fsmonitor ran in the daemon's name"
    );
}
