//! What another local user could read: the modes of the state directory and everything in it,
//! and the command lines of every process the daemon starts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::DaemonProcess;

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
    for agent_type in ["echo", "echopty"] {
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
