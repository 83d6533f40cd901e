//! Why an operation on agents failed, in terms a caller can act on. `api` alone turns these
//! into HTTP statuses and the reference's error codes; tasks decide from them whether to
//! wait and try again.

use std::fmt;

/// Why a session could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnError {
    /// No agent type of this name is configured. Caller: use one of `known`.
    UnknownType {
        /// The requested name.
        name: String,
        /// The configured type names, sorted.
        known: Vec<String>,
    },
    /// The request's environment was refused; the message names the variable and why.
    InvalidEnv(String),
    /// No working directory was given and no allowed root is configured to default to.
    NoWorkingDir,
    /// The working directory does not exist, lies outside the allowed roots, or holds the
    /// daemon's private files; the message says which.
    InvalidWorkingDir(String),
    /// The daemon is shutting down. Caller: try again once it is back.
    ShuttingDown,
    /// The worker pool a spawn needs has its queue full. Caller: retry in a second.
    WorkersBusy {
        /// The pool's name, for the message.
        pool: &'static str,
    },
    /// `sessions.max_sessions` sessions exist or are being created. Caller: retry once one
    /// has ended.
    SessionLimit {
        /// Sessions live or being created.
        live: usize,
    },
    /// The id chosen for the session is taken (a bug in the caller).
    IdTaken(String),
    /// A session with the requested name exists (or is being created). Caller: pick
    /// another name, or kill that session first.
    NameTaken(String),
    /// The requested name is not 1 to 32 lowercase letters or digits.
    InvalidName(String),
    /// The session could not be created: the program is not installed, tmux failed, or the
    /// spec file could not be written. Retrying unchanged will not help.
    Failed(String),
    /// No session with this id (resuming).
    NotFound(String),
    /// The session to resume has a terminal, or is being resumed already.
    NotLost(String),
}

impl SpawnError {
    /// Whether the same spawn may succeed later unchanged, because the daemon was only busy,
    /// full or stopping (a queued task waits for its turn again).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SpawnError::ShuttingDown
                | SpawnError::WorkersBusy { .. }
                | SpawnError::SessionLimit { .. }
        )
    }
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::UnknownType { name, known } => write!(
                f,
                "unknown agent_type {}; known types: {}",
                crate::shown(name),
                known.join(", ")
            ),
            SpawnError::InvalidEnv(message)
            | SpawnError::InvalidWorkingDir(message)
            | SpawnError::Failed(message) => f.write_str(message),
            SpawnError::NoWorkingDir => f.write_str("no working_dir given and no allowed root"),
            SpawnError::NotFound(id) => write!(f, "no agent session {}", crate::shown(id)),
            SpawnError::NotLost(id) => write!(
                f,
                "session {id} is not lost: it has a terminal, or it is being resumed already \
                 (only a session listed with status \"lost\" can be resumed)"
            ),
            SpawnError::ShuttingDown => f.write_str("daemon is shutting down"),
            SpawnError::WorkersBusy { pool } => write!(
                f,
                "the daemon's {pool} workers are all busy and their queue is full \
                 (max_queued_jobs); retry shortly"
            ),
            SpawnError::SessionLimit { live } => write!(
                f,
                "session limit reached ({live} sessions; sessions.max_sessions)"
            ),
            SpawnError::IdTaken(id) => write!(f, "session {id} exists already"),
            SpawnError::NameTaken(id) => write!(
                f,
                "a session named {id} exists already; choose another name or kill it first"
            ),
            SpawnError::InvalidName(name) => write!(
                f,
                "name {} must be 1 to 32 lowercase letters or digits",
                crate::shown(name)
            ),
        }
    }
}

impl std::error::Error for SpawnError {}

/// Why a session could not be killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillError {
    /// The session is lost and its resume is under way. Caller: retry once it runs.
    Resuming(String),
    /// No session has this id (it never existed, or is already gone).
    NotFound(String),
}

impl fmt::Display for KillError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KillError::NotFound(id) => write!(f, "no agent session {}", crate::shown(id)),
            KillError::Resuming(id) => write!(
                f,
                "session {id} is being resumed; delete it once it runs (retry in a moment)"
            ),
        }
    }
}

impl std::error::Error for KillError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_busy_full_or_stopping_daemon_is_worth_waiting_for() {
        let transient = [
            SpawnError::ShuttingDown,
            SpawnError::WorkersBusy { pool: "quick" },
            SpawnError::SessionLimit { live: 3 },
        ];
        assert!(transient.iter().all(SpawnError::is_transient));
        let permanent = [
            SpawnError::UnknownType {
                name: "x".into(),
                known: vec![],
            },
            SpawnError::InvalidEnv("bad".into()),
            SpawnError::NoWorkingDir,
            SpawnError::InvalidWorkingDir("outside".into()),
            SpawnError::IdTaken("sess-x".into()),
            SpawnError::NameTaken("sess-x-primary".into()),
            SpawnError::InvalidName("X".into()),
            SpawnError::Failed("tmux".into()),
        ];
        assert!(!permanent.iter().any(SpawnError::is_transient));
    }
}
