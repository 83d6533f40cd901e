//! `orchestra agent-exec SPEC`: the first program in every agent pane.
//!
//! tmux parses its arguments (a trailing `;` starts a new tmux command) and expands formats
//! in start directories, so the daemon never hands it the agent's argv, environment or
//! working directory. Instead it writes them to a private spec file and starts the pane with
//! this wrapper, which reads and deletes the file, changes directory, sets the environment
//! and replaces itself (`exec`) with the agent. The pane's pid is therefore the agent's.
//!
//! The directory in the spec is the canonical path the daemon checked (inside an allowed
//! root, outside its state directory). Between that check and this wrapper, a path component
//! could have been swapped for a symbolic link to somewhere else: the wrapper enters the
//! directory without following any link ([`enter_checked_dir`]) and refuses to start the
//! agent if one appeared.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything the wrapper needs to start an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnSpec {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Variables to set on top of the inherited environment.
    pub env: BTreeMap<String, String>,
    /// Variables to remove from the inherited environment.
    pub unset: Vec<String>,
    /// Directory to start in: the canonical path (no symbolic links) the daemon checked.
    pub cwd: PathBuf,
    /// A file to open as the agent's standard input instead of its terminal (a task's
    /// prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<PathBuf>,
}

/// Writes `spec` to `path` with mode 0600, failing if the file exists.
pub fn write_spec(path: &Path, spec: &SpawnSpec) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(spec).map_err(std::io::Error::other)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&bytes)?;
    file.sync_all()
}

/// The name a spec is renamed to when its agent claims it.
fn claimed_path(spec_path: &Path) -> PathBuf {
    let mut name = spec_path.as_os_str().to_owned();
    name.push(".claimed");
    PathBuf::from(name)
}

/// Withdraws a spec no agent has claimed yet, so that none ever starts from it. `Ok(true)`:
/// withdrawn; `Ok(false)`: there was none to withdraw (its agent claimed it, or it was
/// never written).
pub fn withdraw_spec(spec_path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(spec_path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs in the pane: claims the spec, reads and removes it, and execs the agent. Returns only on
/// failure, with the exit code to use (127, like a shell for a missing command).
pub fn run(spec_path: &Path) -> i32 {
    // Claim the spec first, atomically: a restarted daemon that finds a task's session
    // missing withdraws its spec the same way (`withdraw_spec`), and exactly one of the two
    // wins, so a task never runs both here and in the session that replaces this one.
    let claimed = claimed_path(spec_path);
    if let Err(e) = std::fs::rename(spec_path, &claimed) {
        eprintln!(
            "orchestra: cannot read spawn spec {}: {e}{}",
            spec_path.display(),
            if e.kind() == std::io::ErrorKind::NotFound {
                " (withdrawn: the daemon restarted before this session started, and runs it \
                 elsewhere)"
            } else {
                ""
            }
        );
        return 127;
    }
    let spec: SpawnSpec = match std::fs::read(&claimed)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            let _ = std::fs::remove_file(&claimed);
            eprintln!(
                "orchestra: cannot read spawn spec {}: {e}",
                spec_path.display()
            );
            return 127;
        }
    };
    let _ = std::fs::remove_file(&claimed);
    let Some((program, args)) = spec.argv.split_first() else {
        eprintln!("orchestra: empty command");
        return 127;
    };
    if let Err(e) = enter_checked_dir(&spec.cwd) {
        eprintln!("orchestra: refusing to start the agent: {e}");
        return 126;
    }
    let mut command = std::process::Command::new(program);
    command.args(args);
    if let Some(path) = &spec.stdin {
        match std::fs::File::open(path) {
            Ok(file) => {
                command.stdin(file);
            }
            Err(e) => {
                eprintln!("orchestra: cannot open {}: {e}", path.display());
                return 127;
            }
        }
    }
    for key in &spec.unset {
        command.env_remove(key);
    }
    // A tmux server started by an older daemon may still carry the daemon's variables;
    // the agent gets only the ones its spec sets.
    for key in crate::environment::private_names() {
        command.env_remove(key);
    }
    command.envs(&spec.env);
    let error = command.exec();
    eprintln!("orchestra: cannot run {program:?}: {error}");
    127
}

/// Makes `dir`, the canonical path the daemon checked, this process's working directory,
/// following no symbolic link on the way, and checks that the directory entered is at that
/// path. An error (a link appeared in the path since the check, or the path now leads to
/// another directory) says what happened.
pub fn enter_checked_dir(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    match crate::sys::open_dir_no_symlinks(dir) {
        Ok(fd) => crate::sys::change_dir_to(&fd)
            .map_err(|e| format!("cannot enter the working directory {shown}: {e}"))?,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(format!(
                "the working directory {shown} contains a symbolic link that was not there                  when the daemon checked it"
            ));
        }
        // Kernels before 5.6: the check after entering it below still holds.
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => std::env::set_current_dir(dir)
            .map_err(|e| format!("cannot enter the working directory {shown}: {e}"))?,
        Err(e) => return Err(format!("cannot enter the working directory {shown}: {e}")),
    }
    // What the kernel says this process is in now.
    let entered = std::env::current_dir()
        .map_err(|e| format!("cannot tell which directory was entered for {shown}: {e}"))?;
    if entered != dir {
        return Err(format!(
            "the working directory {shown} led to {} instead, which the daemon did not check",
            entered.display()
        ));
    }
    Ok(())
}

/// Finds `program` the way `execvp` would with `path_var` as `PATH`. Returns the path of an
/// executable file, or `None`.
pub fn find_program(program: &str, path_var: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return is_executable(&path).then_some(path);
    }
    let path_var = path_var.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path_var
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| is_executable(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trip_and_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.json");
        let spec = SpawnSpec {
            argv: vec!["prog".into(), "arg;".into(), "#(x)".into()],
            env: [("A".to_string(), "b c".to_string())].into(),
            unset: vec!["TMUX".into()],
            cwd: dir.path().to_path_buf(),
            stdin: None,
        };
        write_spec(&path, &spec).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let read: SpawnSpec = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(read, spec);
        assert!(
            write_spec(&path, &spec).is_err(),
            "an existing spec is never overwritten"
        );
    }

    #[test]
    fn finds_programs_like_execvp() {
        assert!(find_program("sh", Some("/nonexistent:/bin:/usr/bin")).is_some());
        assert!(find_program("definitely-not-a-program-xyz", None).is_none());
        assert!(find_program("/bin/sh", None).is_some());
        assert!(find_program("/etc/passwd", None).is_none());
    }
}
