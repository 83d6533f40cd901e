//! What another local user could read: the modes of the state directory and everything in it,
//! and the command lines of every process the daemon starts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::{DaemonProcess, wait_until};

/// Every entry under `dir` (not following symlinks, not into task worktrees, which hold the
/// user's project files) with its permission bits.
fn modes_under(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = vec![(
        dir.to_path_buf(),
        std::fs::symlink_metadata(dir).unwrap().permissions().mode() & 0o7777,
    )];
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                continue;
            }
            found.push((path.clone(), meta.permissions().mode() & 0o7777));
            if meta.is_dir() && path.file_name().is_none_or(|n| n != "worktrees") {
                pending.push(path);
            }
        }
    }
    found
}

/// Asserts that nothing under `dir` gives its group or other users any access.
fn assert_all_private(what: &str, dir: &Path) {
    let open: Vec<String> = modes_under(dir)
        .into_iter()
        .filter(|(_, mode)| mode & 0o077 != 0)
        .map(|(path, mode)| format!("{} {mode:o}", path.display()))
        .collect();
    assert!(
        open.is_empty(),
        "{what}: open to other users:\n{}",
        open.join("\n")
    );
}

/// Spawns an agent on each backend and runs a task to its end, so that every kind of file
/// the daemon keeps exists (store, lock, sockets, tmux socket, pty holder files, spawn and
/// prompt files, history).
fn use_every_file(daemon: &DaemonProcess) {
    let token = daemon.control();
    for agent_type in ["echo", "echopty", "hooked"] {
        let body = daemon.spawn(&token, agent_type);
        assert!(body["session_id"].is_string(), "{body}");
    }
    let _ = std::fs::remove_file(daemon.work.join("umask-probe"));
    let ticket = daemon.delegate_in(&token, "task", &daemon.work, "WRITE umask-probe x");
    let id = ticket["task_id"].as_u64().unwrap().to_string();
    let done = daemon.wait_task_final(&token, &id);
    assert_eq!(done["status"], "completed", "{done}");
    for name in [
        "tasks.redb",
        "daemon.lock",
        "hook.sock",
        "attach.sock",
        "tmux.sock",
        "hooks",
        "history",
        "pty",
    ] {
        assert!(daemon.state.join(name).exists(), "{name} exists");
    }
}

#[test]
fn state_files_are_private_whatever_the_umask_and_the_dirs_old_mode() {
    let mut daemon = DaemonProcess::start_tmux_with(
        r#"
[agents.echopty]
command = ["/bin/cat"]
backend = "pty"
[agents.hooked]
command = ["/bin/cat"]
hooks = "claude"
"#,
    );
    daemon.stop();
    // A state directory made by someone else's tooling (mode 0755), a daemon started with a
    // group-writable umask.
    std::fs::remove_dir_all(&daemon.state).unwrap();
    std::fs::create_dir(&daemon.state).unwrap();
    std::fs::set_permissions(&daemon.state, std::fs::Permissions::from_mode(0o755)).unwrap();
    daemon.umask = Some(0o002);
    daemon.relaunch();
    use_every_file(&daemon);
    assert_all_private("started with umask 002 in a 0755 dir", &daemon.state);
    // What agents create in the user's directories follows the user's umask, not the
    // daemon's.
    let probe = std::fs::metadata(daemon.work.join("umask-probe")).unwrap();
    assert_eq!(probe.permissions().mode() & 0o777, 0o664);

    // Files left open by an older daemon are closed at start.
    daemon.stop();
    for (path, _) in modes_under(&daemon.state) {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = if meta.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    daemon.relaunch();
    assert_all_private("restarted over open files", &daemon.state);
    use_every_file(&daemon);
    assert_all_private("restarted and used", &daemon.state);
    assert!(
        daemon
            .log
            .lock()
            .unwrap()
            .contains("was open to other users")
    );
}

/// Runs of at least 32 hex digits in `text` that could be a credential: anything but the
/// hex-encoded session metadata, and that only while it holds no hook credential.
fn secret_like_runs(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|run| run.len() >= 32)
        .filter(|run| {
            let bytes: Option<Vec<u8>> = (0..run.len() / 2)
                .map(|i| u8::from_str_radix(&run[2 * i..2 * i + 2], 16).ok())
                .collect();
            let json = bytes
                .filter(|_| run.len() % 2 == 0)
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|text| text.starts_with('{'));
            match json {
                Some(json) => json.contains("hook_token"),
                None => true,
            }
        })
        .map(str::to_string)
        .collect()
}

/// Every process's command line that can be read, with its pid.
fn command_lines() -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            found.push((pid, String::from_utf8_lossy(&bytes).replace('\0', " ")));
        }
    }
    found
}

#[test]
fn no_secret_is_ever_on_a_command_line_of_tmux_or_a_helper() {
    // tmux stands in a wrapper that records every command line the daemon gives it (the
    // pipe helpers' command lines are part of them) before it runs the real tmux.
    let mut daemon = DaemonProcess::start_tmux_with_env(
        |work| {
            let root = work.parent().unwrap();
            let spy = root.join("tmux-spy.sh");
            std::fs::write(
                &spy,
                format!(
                    "#!/bin/sh\nprintf '%s\\037' \"$@\" >>'{log}'\nprintf '\\n' >>'{log}'\nexec tmux \"$@\"\n",
                    log = root.join("tmux-argv.log").display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&spy, std::fs::Permissions::from_mode(0o755)).unwrap();
            format!(
                "[tmux]\nbinary = \"{}\"\n[agents.hooked]\ncommand = [\"{}\"]\nhooks = \"claude\"\n",
                spy.display(),
                crate::common::agent_script("echo.sh")
            )
        },
        &[],
    );
    let log = daemon.dir.path().join("tmux-argv.log");
    let token = daemon.control();
    // The first spawn starts the tmux server, whose command line is its first client's.
    let hooked = crate::common::id_of(&daemon.spawn(&token, "hooked"));
    let _plain = crate::common::id_of(&daemon.spawn(&token, "echo"));
    let env = crate::hooks::hook_env(&daemon, &token, &hooked);
    let hook_token = env
        .iter()
        .find(|(k, _)| k == "ORCHESTRA_HOOK_TOKEN")
        .map(|(_, v)| v.clone())
        .unwrap();
    // A restart re-arms both panes' pipes (pipe-pane with fresh attach tokens).
    daemon.restart();
    wait_until("both pipes re-armed", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.matches("pipe-attach").count() >= 4).then_some(())
    });
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        let line = line.replace('\u{1f}', " ");
        assert!(
            !line.contains(&hook_token),
            "hook token on tmux's command line: {line}"
        );
        let runs = secret_like_runs(&line);
        assert!(runs.is_empty(), "{runs:?} on tmux's command line: {line}");
    }
    // Nothing that runs now shows one either: the tmux server, the agents, the daemon.
    let state = daemon.state.display().to_string();
    for (pid, line) in command_lines() {
        assert!(!line.contains(&hook_token), "pid {pid}: {line}");
        if line.contains(&state) {
            let runs = secret_like_runs(&line);
            assert!(runs.is_empty(), "pid {pid} shows {runs:?}: {line}");
        }
    }
    // The hook credential still works after the restart (kept in a private file).
    let mut ws = daemon.ws(&token);
    let out = crate::hooks::run_hook(
        &env,
        "Stop",
        &serde_json::json!({"last_assistant_message": "after the restart", "stop_hook_active": false}),
    );
    assert!(out.status.success(), "{out:?}");
    let reply = ws.recv_until("the reply", |m| m["type"] == "claude_response");
    assert_eq!(reply["session_id"], hooked.as_str());
}

/// The pids whose command line contains `text`.
fn showing(text: &str) -> Vec<(u32, String)> {
    command_lines()
        .into_iter()
        .filter(|(_, line)| line.contains(text))
        .collect()
}

#[test]
fn task_prompts_never_reach_a_command_line() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    let unique = format!("prompt-{}-{}", std::process::id(), crate::common::now());
    // The test config's task type reads its prompt on standard input (no placeholder).
    let task = daemon.delegate_in(
        &token,
        "task",
        &daemon.work,
        &format!("PIDFILE agent.pid\nSAY {unique}\nWAITFOR release"),
    );
    let id = task["task_id"].as_u64().unwrap().to_string();
    wait_until("the agent to run", || {
        std::fs::metadata(daemon.work.join("agent.pid")).ok()
    });
    assert_eq!(showing(&unique), vec![], "the prompt on a command line");
    std::fs::write(daemon.work.join("release"), "").unwrap();
    let done = daemon.wait_task_final(&token, &id);
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        done.to_string().contains(&unique),
        "the agent got it: {done}"
    );

    // The built-in shell type (the task text is the script) runs it from a private file.
    let script = format!(
        "echo {unique}-shell >shell-out.txt\nwhile [ ! -e release-shell ]; do sleep 0.05; done"
    );
    let task = daemon.delegate_in(&token, "shell", &daemon.work, &script);
    let id = task["task_id"].as_u64().unwrap().to_string();
    wait_until("the script to run", || {
        std::fs::metadata(daemon.work.join("shell-out.txt")).ok()
    });
    assert_eq!(showing(&format!("{unique}-shell")), vec![]);
    std::fs::write(daemon.work.join("release-shell"), "").unwrap();
    let done = daemon.wait_task_final(&token, &id);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        std::fs::read_to_string(daemon.work.join("shell-out.txt")).unwrap(),
        format!("{unique}-shell\n")
    );
}
