//! Why a delegation or a cancel was refused, in terms a caller can act on. `api` alone turns
//! these into HTTP statuses and the reference's error codes.

use std::fmt;

/// Why a task could not be accepted, found or cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskError {
    /// A field of the delegation is invalid; the message says which and what is allowed.
    Invalid(String),
    /// No agent type of this name is configured. Caller: use one of `known`.
    UnknownType {
        /// The requested name.
        name: String,
        /// The configured type names, sorted.
        known: Vec<String>,
    },
    /// The agent type has no headless command, so it cannot take tasks. Caller: use one of
    /// `able`, or configure `agents.<name>.headless`.
    NotDelegable {
        /// The requested type.
        name: String,
        /// The types that can take tasks.
        able: Vec<String>,
    },
    /// The working directory does not exist, lies outside the allowed roots, or holds the
    /// daemon's private files; the message says which.
    InvalidWorkingDir(String),
    /// `from_session` names no live session.
    SessionNotFound(String),
    /// The daemon is shutting down. Caller: try again once it is back.
    ShuttingDown,
    /// The worker pool that checks the directory has its queue full. Caller: retry in a
    /// second.
    WorkersBusy {
        /// The pool's name, for the message.
        pool: &'static str,
    },
    /// `tasks.max_queued` tasks wait already. Caller: retry once some have started.
    QueueFull {
        /// The configured maximum.
        max: usize,
    },
    /// The ticket store cannot record the ticket (disk full, I/O error), so it was not
    /// accepted. Caller: retry later; nothing was lost.
    StoreUnavailable(String),
    /// No ticket with this task or ticket id.
    NotFound(String),
    /// The task is not a proposed one waiting for approval.
    NotProposed {
        /// The task.
        task_id: u64,
        /// Its status now.
        status: &'static str,
    },
    /// The ticket has finished (or is recording its result), so it cannot be cancelled.
    Finished {
        /// The task.
        task_id: u64,
        /// Its final status, or what it is doing.
        state: String,
    },
}

impl TaskError {
    /// Whether the same request may succeed later unchanged.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TaskError::ShuttingDown
                | TaskError::WorkersBusy { .. }
                | TaskError::QueueFull { .. }
                | TaskError::StoreUnavailable(_)
        )
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Invalid(message) | TaskError::InvalidWorkingDir(message) => {
                f.write_str(message)
            }
            TaskError::UnknownType { name, known } => write!(
                f,
                "unknown agent_type {}; known types: {}",
                crate::shown(name),
                known.join(", ")
            ),
            TaskError::NotDelegable { name, able } => write!(
                f,
                "agent type {name:?} has no headless command, so it cannot take delegated tasks \
                 (set agents.{name}.headless); types that can: {}",
                able.join(", ")
            ),
            TaskError::SessionNotFound(id) => write!(f, "no agent session {}", crate::shown(id)),
            TaskError::ShuttingDown => f.write_str("daemon is shutting down"),
            TaskError::WorkersBusy { pool } => write!(
                f,
                "the daemon's {pool} workers are all busy and their queue is full \
                 (max_queued_jobs); retry shortly"
            ),
            TaskError::QueueFull { max } => {
                write!(f, "{max} tasks are already waiting (tasks.max_queued)")
            }
            TaskError::StoreUnavailable(reason) => write!(
                f,
                "the ticket could not be stored, so it was not accepted: {reason}"
            ),
            TaskError::NotFound(id) => {
                let shown: String = id.chars().take(100).collect();
                write!(f, "no task {shown:?}")
            }
            TaskError::NotProposed { task_id, status } => write!(
                f,
                "task {task_id} is not waiting for approval (it is {status})"
            ),
            TaskError::Finished { task_id, state } => write!(
                f,
                "task {task_id} has already finished ({state}); it cannot be cancelled"
            ),
        }
    }
}

impl std::error::Error for TaskError {}
