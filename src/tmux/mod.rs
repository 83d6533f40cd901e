//! The only code that runs tmux.
//!
//! [`Tmux`] runs a [`CommandList`] against the daemon's private server (its own socket under
//! the state directory, never the user's default server) with a timeout, from a worker
//! thread — never from the event loop. The functions below build the few command lists the
//! daemon needs and parse their output; they are pure and unit-tested. Every command here is a
//! self-contained argv so that it could equally travel over one persistent control-mode
//! client later.

pub mod command;
pub mod parse;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub use command::{CommandList, PaneId, SessionName, UnsafeArgument, escape_format, shell_quote};
pub use parse::{PaneInfo, PaneState};

/// Why a tmux invocation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TmuxError {
    /// The tmux program could not be started.
    NotInstalled {
        /// The binary the daemon tried to run.
        binary: String,
        /// The operating system's reason.
        reason: String,
    },
    /// No tmux server is running on the daemon's socket (no sessions exist).
    NoServer,
    /// tmux did not finish within the configured timeout and was killed.
    Timeout(Duration),
    /// The pane, window or session named in the command does not exist (any more): the
    /// agent's session was killed or its program ended and tmux closed the pane. Callers
    /// treat the agent as gone.
    PaneNotFound(String),
    /// tmux ran and reported another error; callers report it and may retry later.
    Failed(String),
    /// The daemon tried to build an argument tmux would misinterpret (a bug, refused).
    Unsafe(UnsafeArgument),
    /// tmux printed something the daemon could not understand.
    BadOutput(String),
}

impl fmt::Display for TmuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TmuxError::NotInstalled { binary, reason } => {
                write!(
                    f,
                    "tmux is not available (cannot run {binary:?}: {reason}); install tmux"
                )
            }
            TmuxError::NoServer => f.write_str("no tmux server is running"),
            TmuxError::Timeout(after) => write!(f, "tmux did not answer within {after:?}"),
            TmuxError::PaneNotFound(message) => write!(f, "tmux: {message}"),
            TmuxError::Failed(message) => write!(f, "tmux failed: {message}"),
            TmuxError::Unsafe(arg) => write!(f, "refused to run tmux: {arg}"),
            TmuxError::BadOutput(what) => write!(f, "unexpected tmux output: {what}"),
        }
    }
}

impl std::error::Error for TmuxError {}

impl From<UnsafeArgument> for TmuxError {
    fn from(arg: UnsafeArgument) -> Self {
        TmuxError::Unsafe(arg)
    }
}

/// A handle on the daemon's private tmux server. Cheap to clone; safe to use from any thread.
#[derive(Debug, Clone)]
pub struct Tmux {
    binary: PathBuf,
    socket: PathBuf,
    config_file: PathBuf,
    timeout: Duration,
    timing: std::sync::Arc<crate::metrics::SharedHistogram>,
}

impl Tmux {
    /// A handle running `binary` against the server at `socket`.
    pub fn new(
        binary: &Path,
        socket: &Path,
        config_file: Option<&Path>,
        timeout: Duration,
    ) -> Tmux {
        Tmux {
            binary: binary.to_path_buf(),
            socket: socket.to_path_buf(),
            config_file: config_file
                .map(Path::to_path_buf)
                .unwrap_or_else(|| "/dev/null".into()),
            timeout,
            timing: Default::default(),
        }
    }

    /// How long commands took, and how many failed (for `GET /metrics`).
    pub fn timing(&self) -> &crate::metrics::SharedHistogram {
        &self.timing
    }

    /// The server's socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Takes group access away from the server's socket: tmux creates it with mode 0660
    /// whatever the umask. Blocking (a stat); called after each command that may have started
    /// the server.
    pub fn make_socket_private(&self) {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        if let Ok(meta) = std::fs::symlink_metadata(&self.socket) {
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_socket() && mode & 0o077 != 0 {
                let private = std::fs::Permissions::from_mode(mode & 0o700);
                let _ = std::fs::set_permissions(&self.socket, private);
            }
        }
    }

    /// Runs one command list and returns its standard output. Blocks up to the timeout, so
    /// call it only from a worker thread.
    pub fn run(&self, list: &CommandList) -> Result<String, TmuxError> {
        let started = std::time::Instant::now();
        let result = self.run_once(list);
        self.timing.observe(started.elapsed());
        if result.is_err() {
            self.timing.fail();
        }
        result
    }

    fn run_once(&self, list: &CommandList) -> Result<String, TmuxError> {
        let mut command = crate::environment::command(&self.binary);
        command
            .arg("-S")
            .arg(&self.socket)
            .arg("-f")
            .arg(&self.config_file)
            .args(list.args())
            .env_remove("TMUX")
            .env_remove("TMUX_PANE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = command.spawn().map_err(|e| TmuxError::NotInstalled {
            binary: self.binary.display().to_string(),
            reason: e.to_string(),
        })?;
        let pid = child.id();
        let (tx, rx) = crossbeam_channel::bounded(1);
        // The waiting thread drains both pipes while we wait with a deadline; on timeout we
        // kill the child, which lets that thread finish too.
        std::thread::Builder::new()
            .name("tmux-wait".into())
            .spawn(move || {
                let _ = tx.send(child.wait_with_output());
            })
            .map_err(|e| TmuxError::Failed(format!("cannot start a thread: {e}")))?;
        let output = match rx.recv_timeout(self.timeout) {
            Ok(result) => result.map_err(|e| TmuxError::Failed(e.to_string()))?,
            Err(_) => {
                let _ = crate::sys::kill(pid, libc::SIGKILL);
                return Err(TmuxError::Timeout(self.timeout));
            }
        };
        if output.status.success() {
            return String::from_utf8(output.stdout)
                .map_err(|_| TmuxError::BadOutput("output is not UTF-8".into()));
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(classify_failure(stderr.trim(), &output.status.to_string()))
    }
}

/// What a failed tmux command's standard error means. `status` describes the exit, for
/// when tmux printed nothing.
pub fn classify_failure(stderr: &str, status: &str) -> TmuxError {
    // "server exited unexpectedly": the server died (or exited with its last session)
    // while this command ran; either way there is no server now.
    // Only a missing or refusing socket means no server; other connect errors (out of
    // descriptors, permissions) must not make every session look gone.
    let unreachable = stderr.starts_with("error connecting to")
        && (stderr.contains("No such file or directory") || stderr.contains("Connection refused"));
    if stderr.starts_with("no server running")
        || unreachable
        || stderr.starts_with("server exited unexpectedly")
    {
        return TmuxError::NoServer;
    }
    // tmux says "can't find pane: %3", "can't find session: agent-x", "can't find window".
    if stderr.contains("can't find ") {
        return TmuxError::PaneNotFound(stderr.to_string());
    }
    TmuxError::Failed(if stderr.is_empty() {
        format!("exited with {status}")
    } else {
        stderr.to_string()
    })
}

/// Format of the line `new-session -P` prints for a created session.
const NEW_SESSION_FORMAT: &str = "#{pane_id}\t#{pane_pid}\t#{pid}";

/// What a new session looks like to tmux.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// Session name.
    pub name: &'a SessionName,
    /// Pane width in columns.
    pub width: u16,
    /// Pane height in rows.
    pub height: u16,
    /// The pane's program and arguments (daemon-built: the agent wrapper and its spec file).
    pub program: &'a [OsString],
    /// Session metadata to store as the `@orchestra` user option (hex, see `agents::meta`).
    pub metadata: &'a str,
    /// Shell command for `pipe-pane -I -O`, already shell-quoted; format-escaped here.
    pub pipe_command: &'a str,
}

/// The user option that marks a session as the daemon's and holds its metadata.
pub const METADATA_OPTION: &str = "@orchestra";

/// Builds the atomic command list that creates a session: keep dead panes, create the
/// session, tag it with its metadata and attach the output pipe before the program's first
/// output can be lost.
pub fn new_session(spec: &NewSession<'_>) -> Result<CommandList, UnsafeArgument> {
    let target = spec.name.target();
    let mut list = CommandList::new()
        .command("set-option")
        .arg("-g")?
        .arg("-w")?
        .arg("remain-on-exit")?
        .arg("on")?
        .command("new-session")
        .arg("-d")?
        .arg("-s")?
        .arg(spec.name.as_str())?
        .arg("-x")?
        .arg(spec.width.to_string())?
        .arg("-y")?
        .arg(spec.height.to_string())?
        .arg("-P")?
        .arg("-F")?
        .arg(NEW_SESSION_FORMAT)?
        .arg("--")?;
    for arg in spec.program {
        list = list.arg(arg)?;
    }
    list.command("set-option")
        .arg("-t")?
        .arg(&target)?
        .arg(METADATA_OPTION)?
        .arg(spec.metadata)?
        .command("pipe-pane")
        .arg("-I")?
        .arg("-O")?
        .arg("-t")?
        .arg(&target)?
        .arg(escape_format(spec.pipe_command))
}

/// Parses what [`new_session`] printed: the pane id, its pid and the tmux server's pid.
pub fn parse_new_session(output: &str) -> Result<(PaneId, u32, u32), TmuxError> {
    let line = output.lines().next().unwrap_or("");
    let mut fields = line.split('\t');
    let pane = fields.next().and_then(PaneId::parse);
    let pid = fields.next().and_then(|f| f.parse().ok());
    let server = fields.next().and_then(|f| f.parse().ok());
    match (pane, pid, server) {
        (Some(pane), Some(pid), Some(server)) => Ok((pane, pid, server)),
        _ => Err(TmuxError::BadOutput(format!(
            "new-session printed {line:?}"
        ))),
    }
}

/// Lists every pane of the server with the fields [`PaneInfo`] needs.
pub fn list_panes() -> Result<CommandList, UnsafeArgument> {
    CommandList::new()
        .command("list-panes")
        .arg("-a")?
        .arg("-F")?
        .arg(parse::PANE_FORMAT)
}

/// Asks for one pane's fields (liveness and exit status) by exact pane id.
pub fn describe_pane(pane: &PaneId) -> Result<CommandList, UnsafeArgument> {
    CommandList::new()
        .command("display-message")
        .arg("-p")?
        .arg("-t")?
        .arg(pane.as_str())?
        .arg(parse::PANE_FORMAT)
}

/// (Re)attaches a pane's output pipe; tmux closes any previous pipe of the pane first.
pub fn pipe_pane(pane: &PaneId, pipe_command: &str) -> Result<CommandList, UnsafeArgument> {
    CommandList::new()
        .command("pipe-pane")
        .arg("-I")?
        .arg("-O")?
        .arg("-t")?
        .arg(pane.as_str())?
        .arg(escape_format(pipe_command))
}

/// Prints a pane's visible screen with colours and attributes (`capture-pane -p -e`).
pub fn capture_pane(pane: &PaneId) -> Result<CommandList, UnsafeArgument> {
    CommandList::new()
        .command("capture-pane")
        .arg("-p")?
        .arg("-e")?
        .arg("-t")?
        .arg(pane.as_str())
}

/// Prints the last `lines` lines of a pane (history included) as plain text.
pub fn capture_tail(pane: &PaneId, lines: u32) -> Result<CommandList, UnsafeArgument> {
    CommandList::new()
        .command("capture-pane")
        .arg("-p")?
        .arg("-J")?
        .arg("-S")?
        .arg(format!("-{lines}"))?
        .arg("-t")?
        .arg(pane.as_str())
}

/// Resizes a session's window (and so its only pane) to `cols` x `rows`; the program in it
/// gets SIGWINCH.
pub fn resize_window(
    name: &SessionName,
    cols: u16,
    rows: u16,
) -> Result<CommandList, UnsafeArgument> {
    CommandList::new()
        .command("resize-window")
        .arg("-t")?
        .arg(name.target())?
        .arg("-x")?
        .arg(cols.to_string())?
        .arg("-y")?
        .arg(rows.to_string())
}

/// Removes a session (its panes receive SIGHUP).
pub fn kill_session(name: &SessionName) -> Result<CommandList, UnsafeArgument> {
    CommandList::new()
        .command("kill-session")
        .arg("-t")?
        .arg(name.target())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_what_they_mean_to_the_caller() {
        let table = [
            ("no server running on /tmp/x/tmux.sock", "NoServer"),
            (
                "error connecting to /tmp/x (No such file or directory)",
                "NoServer",
            ),
            (
                "error connecting to /tmp/x (Connection refused)",
                "NoServer",
            ),
            ("error connecting to /tmp/x (Too many open files)", "Failed"),
            ("server exited unexpectedly", "NoServer"),
            ("can't find pane: %3", "PaneNotFound"),
            ("can't find session: agent-shell-0123abcd", "PaneNotFound"),
            ("unknown option -- z", "Failed"),
            ("", "Failed"),
        ];
        for (stderr, expected) in table {
            let got = match classify_failure(stderr, "exit status: 1") {
                TmuxError::NoServer => "NoServer",
                TmuxError::PaneNotFound(_) => "PaneNotFound",
                TmuxError::Failed(_) => "Failed",
                other => panic!("{stderr:?} gave {other:?}"),
            };
            assert_eq!(got, expected, "{stderr:?}");
        }
        assert_eq!(
            classify_failure("", "exit status: 1").to_string(),
            "tmux failed: exited with exit status: 1"
        );
    }

    #[test]
    fn new_session_is_one_atomic_list() {
        let name = SessionName::parse("agent-shell-0123abcd").unwrap();
        let program = [
            OsString::from("/bin/orchestra"),
            OsString::from("agent-exec"),
        ];
        let list = new_session(&NewSession {
            name: &name,
            width: 80,
            height: 24,
            program: &program,
            metadata: "7b7d",
            pipe_command: "exec '/a#b' pipe-attach",
        })
        .unwrap();
        assert_eq!(list.len(), 4);
        let args: Vec<_> = list.args().iter().map(|a| a.to_str().unwrap()).collect();
        assert!(args.contains(&"=agent-shell-0123abcd:"));
        assert_eq!(args.last().copied(), Some("exec '/a##b' pipe-attach"));
        let dash = args.iter().position(|a| *a == "--").unwrap();
        assert_eq!(&args[dash + 1..dash + 3], ["/bin/orchestra", "agent-exec"]);
    }

    #[test]
    fn parses_new_session_output() {
        let (pane, pid, server) = parse_new_session("%12\t4242\t17\n").unwrap();
        assert_eq!(pane.as_str(), "%12");
        assert_eq!((pid, server), (4242, 17));
        assert!(parse_new_session("garbage").is_err());
    }

    #[test]
    fn missing_binary_is_reported() {
        let tmux = Tmux::new(
            Path::new("/nonexistent/tmux"),
            Path::new("/tmp/none.sock"),
            None,
            Duration::from_secs(1),
        );
        let err = tmux.run(&list_panes().unwrap()).unwrap_err();
        assert!(matches!(err, TmuxError::NotInstalled { .. }), "{err:?}");
    }
}
