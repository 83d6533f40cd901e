//! Agent lifecycle: spawn, list, get, kill, statuses, and input validation.

use serde_json::json;

use crate::common::{DaemonProcess, is_rfc3339_utc, process_alive, wait_until};

#[test]
fn spawn_get_list_kill_round_trip() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let spawned = daemon.spawn(&token, "echo");
    let id = spawned["session_id"].as_str().unwrap().to_string();
    let hex = id.strip_prefix("sess-echo-").expect("sess-<type>-<hex>");
    assert!(hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(spawned["agent_type"], "echo");
    assert_eq!(spawned["status"], "running");
    assert_eq!(spawned["tmux_session"], format!("agent-echo-{hex}"));
    assert!(is_rfc3339_utc(&spawned["created_at"]), "{spawned}");

    // The agent really runs in tmux, in the requested directory.
    let name = spawned["tmux_session"].as_str().unwrap();
    wait_until("the agent's greeting", || {
        daemon
            .screen(name)
            .contains("echo agent ready")
            .then_some(())
    });
    assert!(daemon.screen(name).contains(daemon.work.to_str().unwrap()));

    let detail = daemon.get(&format!("/api/agents/{id}"), &token).json();
    for field in [
        "session_id",
        "agent_type",
        "status",
        "working_dir",
        "tmux_session",
        "tmux_pane",
        "created_at",
        "memory_mb",
        "cpu_percent",
    ] {
        assert!(!detail[field].is_null(), "{field} missing: {detail}");
    }
    assert_eq!(detail["working_dir"], daemon.work.to_str().unwrap());
    assert!(
        detail["memory_mb"].is_u64() && detail["cpu_percent"].is_f64(),
        "{detail}"
    );
    // tmux_pane is the real pane id.
    let out = daemon.tmux(&[
        "display-message",
        "-p",
        "-t",
        &format!("={name}:"),
        "#{pane_id}",
    ]);
    assert_eq!(
        detail["tmux_pane"],
        String::from_utf8_lossy(&out.stdout).trim()
    );
    assert_eq!(detail["created_at"], spawned["created_at"]);

    let list = daemon.get("/api/agents", &token).json();
    assert_eq!(list["total"], 1);
    let entry = &list["agents"][0];
    assert_eq!(entry["session_id"], id.as_str());
    assert!(is_rfc3339_utc(&entry["last_activity"]));
    let mut keys: Vec<&String> = entry.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "activity",
            "activity_since",
            "agent_type",
            "created_at",
            "evidence",
            "last_activity",
            "session_id",
            "status"
        ]
    );

    let killed = daemon.delete(&format!("/api/agents/{id}"), &token);
    assert_eq!(killed.status, 200, "{}", killed.text());
    let killed = killed.json();
    assert_eq!(killed["session_id"], id.as_str());
    assert_eq!(killed["status"], "terminated");
    assert!(is_rfc3339_utc(&killed["terminated_at"]));
    assert!(
        !daemon
            .tmux(&["has-session", "-t", &format!("={name}")])
            .status
            .success()
    );
    daemon
        .delete(&format!("/api/agents/{id}"), &token)
        .assert_error(404, "SESSION_NOT_FOUND");
    daemon
        .get(&format!("/api/agents/{id}"), &token)
        .assert_error(404, "SESSION_NOT_FOUND");
    assert_eq!(daemon.get("/api/agents", &token).json()["total"], 0);
}

#[test]
fn memory_is_a_real_figure_of_the_process_tree() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let spawned = daemon.spawn(&token, "echo");
    let id = spawned["session_id"].as_str().unwrap().to_string();
    // Wait until the agent has become `cat` (the wrapper execs the script, which execs cat).
    let name = spawned["tmux_session"].as_str().unwrap();
    wait_until("the agent to be ready", || {
        daemon
            .screen(name)
            .contains("echo agent ready")
            .then_some(())
    });
    let pid = daemon.get(&format!("/api/agents/{id}"), &token).json()["pid"]
        .as_u64()
        .unwrap() as u32;
    wait_until("the agent to be cat", || {
        (std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim()
            == "cat")
            .then_some(())
    });
    let detail = daemon.get(&format!("/api/agents/{id}"), &token).json();
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map(|v| v.trim().trim_end_matches(" kB").parse().unwrap())
        .unwrap();
    let reported = detail["memory_mb"].as_u64().unwrap();
    // `cat` is small: the reported figure is its resident size, rounded to MiB.
    assert!(
        reported <= rss_kb / 1024 + 2,
        "{reported} MiB vs {rss_kb} kB"
    );
}

#[test]
fn unknown_agent_type_lists_the_known_ones() {
    let daemon = DaemonProcess::start();
    let resp = daemon.post(
        "/api/agents/spawn",
        &daemon.control(),
        &json!({"agent_type": "nope", "working_dir": daemon.work}),
    );
    resp.assert_error(400, "INVALID_AGENT_TYPE");
    let message = resp.json()["message"].as_str().unwrap().to_string();
    for known in ["claude", "droid", "cursor", "aider", "shell", "echo"] {
        assert!(message.contains(known), "{message}");
    }
}

#[test]
fn missing_program_and_missing_tmux_fail_the_spawn_with_500() {
    let daemon = DaemonProcess::start_tmux();
    let resp = daemon.post(
        "/api/agents/spawn",
        &daemon.control(),
        &json!({"agent_type": "missing", "working_dir": daemon.work}),
    );
    resp.assert_error(500, "AGENT_SPAWN_FAILED");
    assert!(
        resp.json()["message"]
            .as_str()
            .unwrap()
            .contains("definitely-not-installed-agent-cli")
    );

    let daemon = DaemonProcess::start_tmux_with("[tmux]\nbinary = \"/nonexistent/tmux\"");
    let resp = daemon.post(
        "/api/agents/spawn",
        &daemon.control(),
        &json!({"agent_type": "echo", "working_dir": daemon.work}),
    );
    resp.assert_error(500, "AGENT_SPAWN_FAILED");
    assert!(
        resp.json()["message"].as_str().unwrap().contains("tmux"),
        "{}",
        resp.text()
    );
}

#[test]
fn working_dir_must_be_an_existing_directory_inside_an_allowed_root() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(daemon.work.join("a-file"), b"").unwrap();
    std::os::unix::fs::symlink(outside.path(), daemon.work.join("escape")).unwrap();
    std::fs::create_dir(daemon.work.join("inner")).unwrap();
    let work = daemon.work.display().to_string();
    for bad in [
        outside.path().display().to_string(),
        format!("{work}/escape"),
        format!("{work}/escape/"),
        format!("{work}/inner/../../"),
        format!("{work}/../"),
        format!("{work}/does-not-exist"),
        format!("{work}/a-file"),
        "relative/dir".to_string(),
        "/etc".to_string(),
        String::new(),
    ] {
        let resp = daemon.post(
            "/api/agents/spawn",
            &token,
            &json!({"agent_type": "echo", "working_dir": bad}),
        );
        assert_eq!(resp.status, 400, "{bad:?} was accepted: {}", resp.text());
        resp.assert_error(400, "INVALID_WORKING_DIR");
    }
    let resp = daemon.post(
        "/api/agents/spawn",
        &token,
        &json!({"agent_type": "echo", "working_dir": format!("{work}/inner/../inner")}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(
        daemon.get("/api/agents", &token).json()["total"],
        1,
        "refused spawns left nothing behind"
    );
}

#[test]
fn tmux_metacharacters_in_paths_and_env_are_inert() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let marker = daemon.dir.path().join("pwned");
    let evil_dir = daemon.work.join(format!("#(touch {})", marker.display()));
    std::fs::create_dir_all(&evil_dir).unwrap();
    let tricky = format!(
        "x; run-shell 'touch {m}' ; #(touch {m}) #{{pane_id}} \\;",
        m = marker.display()
    );
    let resp = daemon.post(
        "/api/agents/spawn",
        &token,
        &json!({"agent_type": "printenv", "working_dir": evil_dir, "env": {"PROJECT_NAME": "my-app;", "ODD": tricky}}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let spawned = resp.json();
    let name = spawned["tmux_session"].as_str().unwrap();
    let screen = wait_until("the agent's report", || {
        let screen = daemon.screen(name);
        screen.contains("TYPE_VAR=").then_some(screen)
    });
    assert!(
        screen.contains(&format!("cwd={}", evil_dir.display())),
        "{screen}"
    );
    assert!(screen.contains("PROJECT_NAME=my-app;"), "{screen}");
    assert!(
        screen.contains("#{pane_id}"),
        "format text arrived literally: {screen}"
    );
    assert!(screen.contains(&format!(
        "SESSION={}",
        spawned["session_id"].as_str().unwrap()
    )));
    assert!(
        screen.contains("TMUX=unset"),
        "the private server is not exposed: {screen}"
    );
    assert!(screen.contains("TYPE_VAR=from-config"), "{screen}");
    let detail = daemon
        .get(
            &format!("/api/agents/{}", spawned["session_id"].as_str().unwrap()),
            &token,
        )
        .json();
    assert_eq!(detail["working_dir"], evil_dir.to_str().unwrap());
    assert!(!marker.exists(), "a tmux or shell command ran");
}

#[test]
fn env_keys_are_validated() {
    let daemon = DaemonProcess::start_with("[sessions]\nallowed_env = [\"NODE_OPTIONS\"]");
    let token = daemon.control();
    for (key, value) in [
        ("LD_PRELOAD", "/tmp/x.so"),
        ("LD_LIBRARY_PATH", "/tmp"),
        ("BASH_ENV", "/tmp/x"),
        ("PATH", "/tmp"),
        ("1BAD", "x"),
        ("A-B", "x"),
        ("A=B", "x"),
        ("", "x"),
        ("A", "nul\u{0}byte"),
    ] {
        let resp = daemon.post(
            "/api/agents/spawn",
            &token,
            &json!({"agent_type": "echo", "working_dir": daemon.work, "env": {key: value}}),
        );
        assert_eq!(resp.status, 400, "{key:?} accepted");
        resp.assert_error(400, "INVALID_ENV");
    }
    // An operator may allow a dangerous key explicitly.
    let resp = daemon.post("/api/agents/spawn", &token, &json!({"agent_type": "echo", "working_dir": daemon.work, "env": {"NODE_OPTIONS": "--max-old-space-size=100"}}));
    assert_eq!(resp.status, 201, "{}", resp.text());
}

#[test]
fn statuses_follow_the_process() {
    let daemon = DaemonProcess::start_tmux_with("[sessions]\nidle_after = \"300ms\"");
    let token = daemon.control();
    let ok = daemon.spawn(&token, "exit0")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let failed = daemon.spawn(&token, "exit3")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let crashed = daemon.spawn(&token, "crash")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let quiet = daemon.spawn(&token, "echo")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let exited = daemon.wait_agent(&token, &ok, "exit0 to be exited", |a| {
        a["status"] == "exited"
    });
    assert_eq!(exited["exit_code"], 0);
    let error = daemon.wait_agent(&token, &failed, "exit3 to be error", |a| {
        a["status"] == "error"
    });
    assert_eq!(error["exit_code"], 3);
    let error = daemon.wait_agent(&token, &crashed, "crash to be error", |a| {
        a["status"] == "error"
    });
    assert_eq!(error["exit_signal"], 9);
    daemon.wait_agent(&token, &quiet, "echo to go idle", |a| a["status"] == "idle");

    // The dead panes are kept so their last screen stays inspectable.
    let name = format!("agent-exit3-{}", &failed["sess-exit3-".len()..]);
    assert!(
        daemon
            .tmux(&["has-session", "-t", &format!("={name}")])
            .status
            .success()
    );

    // Filters.
    let list = |query: &str| -> Vec<String> {
        let body = daemon.get(&format!("/api/agents{query}"), &token).json();
        assert_eq!(
            body["total"].as_u64().unwrap() as usize,
            body["agents"].as_array().unwrap().len()
        );
        body["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["session_id"].as_str().unwrap().to_string())
            .collect()
    };
    let mut errors = list("?status=error");
    errors.sort();
    let mut expected = vec![failed.clone(), crashed.clone()];
    expected.sort();
    assert_eq!(errors, expected);
    assert_eq!(list("?status=exited"), [ok.as_str()]);
    assert_eq!(list("?status=idle"), [quiet.as_str()]);
    assert_eq!(list("?status=running"), Vec::<String>::new());
    assert_eq!(list("?agent_type=exit3"), [failed.as_str()]);
    assert_eq!(
        list("?agent_type=exit3&status=exited"),
        Vec::<String>::new()
    );
    assert_eq!(list("").len(), 4);
    daemon
        .get("/api/agents?status=sleeping", &token)
        .assert_error(400, "INVALID_REQUEST");
    daemon
        .get("/api/agents?agent_type=nope", &token)
        .assert_error(400, "INVALID_AGENT_TYPE");

    // Killing an exited session works too.
    assert_eq!(
        daemon.delete(&format!("/api/agents/{ok}"), &token).status,
        200
    );
}

#[test]
fn kill_ends_the_whole_process_tree_even_when_it_ignores_sigterm() {
    let daemon = DaemonProcess::start_with("[sessions]\nkill_grace = \"300ms\"");
    let token = daemon.control();
    let spawned = daemon.spawn(&token, "stubborn");
    let id = spawned["session_id"].as_str().unwrap();
    let name = spawned["tmux_session"].as_str().unwrap();
    let child: u32 = wait_until("the child's pid", || {
        daemon
            .screen(name)
            .lines()
            .find_map(|l| l.strip_prefix("child "))
            .and_then(|p| p.trim().parse().ok())
    });
    let pid = daemon.get(&format!("/api/agents/{id}"), &token).json()["pid"]
        .as_u64()
        .unwrap() as u32;
    assert!(process_alive(pid) && process_alive(child));
    let resp = daemon.delete(&format!("/api/agents/{id}"), &token);
    assert_eq!(resp.status, 200, "{}", resp.text());
    wait_until("the tree to be gone", || {
        (!process_alive(pid) && !process_alive(child)).then_some(())
    });
    daemon.wait_for_log("needed SIGKILL");
}

#[test]
fn twenty_concurrent_spawns() {
    let daemon = DaemonProcess::start_tmux();
    let token = daemon.control();
    let ids: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                scope.spawn(|| {
                    daemon.spawn(&token, "echo")["session_id"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 20);
    let list = daemon.get("/api/agents", &token).json();
    assert_eq!(list["total"], 20);
    let out = daemon.tmux(&["list-sessions", "-F", "#{session_name}"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 20);
}

#[test]
fn session_limit_is_503() {
    let daemon = DaemonProcess::start_with("[sessions]\nmax_sessions = 2");
    let token = daemon.control();
    daemon.spawn(&token, "echo");
    daemon.spawn(&token, "echo");
    let resp = daemon.post(
        "/api/agents/spawn",
        &token,
        &json!({"agent_type": "echo", "working_dir": daemon.work}),
    );
    resp.assert_error(503, "OVERLOADED");
    assert!(resp.header("retry-after").is_some());
}

#[test]
fn a_hung_tmux_fails_the_spawn_after_its_timeout_without_stalling_the_daemon() {
    let daemon = DaemonProcess::start_tmux_with(&format!(
        "[tmux]\nbinary = \"{}\"\ncommand_timeout = \"2s\"",
        crate::common::agent_script("tmux-hang.sh")
    ));
    let token = daemon.control();
    std::thread::scope(|scope| {
        let spawn = scope.spawn(|| {
            daemon.post(
                "/api/agents/spawn",
                &token,
                &json!({"agent_type": "echo", "working_dir": daemon.work}),
            )
        });
        daemon.wait_for_log("creating tmux session");
        // While tmux hangs, the daemon keeps answering.
        assert_eq!(daemon.get("/api/health", &token).status, 200);
        assert_eq!(daemon.get("/api/agents", &token).json()["total"], 0);
        let resp = spawn.join().unwrap();
        resp.assert_error(500, "AGENT_SPAWN_FAILED");
        assert!(
            resp.json()["message"]
                .as_str()
                .unwrap()
                .contains("did not answer"),
            "{}",
            resp.text()
        );
    });
}

#[test]
fn a_named_session_has_the_name_in_its_id_is_unique_and_survives_a_restart() {
    let mut daemon = DaemonProcess::start();
    let token = daemon.control();
    let spawn = |daemon: &DaemonProcess, name: &str| {
        daemon.post(
            "/api/agents/spawn",
            &token,
            &json!({"agent_type": "echo", "working_dir": daemon.work, "name": name}),
        )
    };
    let first = spawn(&daemon, "primary");
    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(first.json()["session_id"], "sess-echo-primary");
    assert_eq!(first.json()["tmux_session"], "agent-echo-primary");
    spawn(&daemon, "primary").assert_error(409, "SESSION_EXISTS");
    for bad in ["Primary", "pri-mary", "", "a.b", &"x".repeat(33)] {
        spawn(&daemon, bad).assert_error(400, "INVALID_REQUEST");
    }
    let detail = daemon.get("/api/agents/sess-echo-primary", &token);
    assert_eq!(detail.status, 200);

    daemon.restart();
    let token = daemon.control();
    let again = daemon.get("/api/agents/sess-echo-primary", &token);
    assert_eq!(
        again.status, 200,
        "the named session is found after a restart"
    );
    assert_eq!(
        daemon
            .delete("/api/agents/sess-echo-primary", &token)
            .status,
        200
    );
    let reborn = daemon.post(
        "/api/agents/spawn",
        &token,
        &json!({"agent_type": "echo", "working_dir": daemon.work, "name": "primary"}),
    );
    assert_eq!(
        reborn.status,
        201,
        "the name is free again: {}",
        reborn.text()
    );
}

/// The `working_dir` check raced its use (a symlink swapped every 2 ms let one spawn in five
/// start inside the state directory). Here the window between the daemon's check and
/// `orchestra agent-exec` is made deterministic: the daemon's own check accepts a directory,
/// then a component of it becomes a link into the state directory, then the wrapper runs.
#[test]
fn agent_exec_refuses_a_working_dir_swapped_after_the_check() {
    use orchestra::agents::exec::{SpawnSpec, write_spec};
    use orchestra::agents::validate::{PrivateDirs, resolve_working_dir};
    let temp = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(temp.path()).unwrap();
    let (root, state) = (base.join("work"), base.join("state"));
    std::fs::create_dir_all(root.join("project/sub")).unwrap();
    std::fs::create_dir_all(state.join("sub")).unwrap();
    let private = PrivateDirs {
        state_dir: state.clone(),
        secret_file: state.join("jwt_secret"),
        worktrees: state.join("worktrees"),
    };
    let requested = root.join("project/sub");
    let requested = requested.to_str().unwrap();
    let checked = resolve_working_dir(requested, std::slice::from_ref(&root), &private).unwrap();
    let mark = base.join("started-in");
    let run = |name: &str| {
        let spec = SpawnSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), "pwd -P > \"$MARK\"".into()],
            env: [("MARK".to_string(), mark.display().to_string())].into(),
            unset: vec![],
            cwd: checked.clone(),
            stdin: None,
        };
        let path = base.join(name);
        write_spec(&path, &spec).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_orchestra"))
            .arg("agent-exec")
            .arg(&path)
            .output()
            .unwrap()
    };

    // The swap: `project` is now a link to the state directory.
    std::fs::rename(root.join("project"), root.join("project.old")).unwrap();
    std::os::unix::fs::symlink(&state, root.join("project")).unwrap();
    assert!(
        resolve_working_dir(requested, std::slice::from_ref(&root), &private).is_err(),
        "checked now, it would be refused"
    );
    let swapped = run("swapped.json");
    let stderr = String::from_utf8_lossy(&swapped.stderr);
    assert!(!swapped.status.success(), "the agent started: {stderr}");
    assert!(
        !mark.exists(),
        "the agent ran in {:?}",
        std::fs::read_to_string(&mark)
    );
    assert!(stderr.contains("symbolic link"), "{stderr}");

    // Put back, the same spec starts the agent where it was checked.
    std::fs::remove_file(root.join("project")).unwrap();
    std::fs::rename(root.join("project.old"), root.join("project")).unwrap();
    let restored = run("restored.json");
    assert!(restored.status.success(), "{restored:?}");
    assert_eq!(
        std::fs::read_to_string(&mark).unwrap().trim_end(),
        checked.to_str().unwrap()
    );
}
