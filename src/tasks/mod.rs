//! Delegated tasks: durable tickets, their queue, and results the daemon verifies itself.
//!
//! A ticket ([`Ticket`]) is created by `POST /api/delegate`, stored durably ([`store`])
//! before the request is answered, queued, and run in an ordinary agent session started
//! with the agent type's `headless` command ([`lifecycle`]). When the agent ends, the
//! daemon computes the files it changed ([`workspace`]), runs the tests ([`verify`]) and
//! records the result. [`TaskBook`] is plain loop-owned state; everything that waits (git,
//! test runs, disk syncs) runs on other threads.

pub mod error;
pub mod lifecycle;
pub mod process;
pub mod prompt;
pub mod store;
pub mod verify;
pub mod workspace;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use workspace::Baseline;

/// A ticket's status, exactly the reference's values plus `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Queued, waiting for a free slot (or for its session to be created).
    Pending,
    /// The agent is working on it.
    Running,
    /// The agent exited with status 0.
    Completed,
    /// The agent failed, crashed, or its session was killed.
    Failed,
    /// The task ran past its `timeout_ms`.
    Timeout,
    /// Cancelled through `DELETE /api/tasks/{id}`.
    Cancelled,
}

impl TaskStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Timeout => "timeout",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name (for list filters).
    pub fn parse(text: &str) -> Option<TaskStatus> {
        [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Timeout,
            TaskStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether the ticket has reached its final state.
    pub fn is_final(self) -> bool {
        !matches!(self, TaskStatus::Pending | TaskStatus::Running)
    }
}

/// Where a ticket is in its life: finer than its status, and stored, so that a restarted
/// daemon knows how to carry on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting in the queue (`pending`).
    Queued,
    /// Holding a slot: the workspace is being prepared (`pending`; never stored).
    Preparing,
    /// The baseline is stored and the session is being created (`pending`). A restart
    /// that finds the session carries on; one that does not queues the ticket again.
    Launched,
    /// The session exists and the agent works (`running`).
    Running,
    /// The agent has ended and the result is being computed (`running`).
    Finishing,
    /// Final.
    Done,
}

/// Why a task's agent stopped, recorded before the result is computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ending {
    /// The agent's process ended by itself.
    Exited {
        /// Exit status, when it exited.
        exit_code: Option<i32>,
        /// Signal, when a signal killed it.
        exit_signal: Option<i32>,
    },
    /// The daemon stopped it at its timeout.
    TimedOut,
    /// It was cancelled through the API.
    Cancelled,
    /// Its session was killed or vanished.
    Lost {
        /// What happened.
        reason: String,
    },
    /// Its session could not be created.
    SpawnFailed {
        /// Why.
        reason: String,
    },
}

/// `context` of a delegation request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskContext {
    /// Files the agent should focus on.
    pub files: Vec<String>,
    /// Requirements the result must meet.
    pub requirements: Vec<String>,
    /// Whether the daemon runs the test command after the agent finishes.
    pub tests_required: bool,
}

/// How a task's working directory is isolated from others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// The task works in the directory itself.
    #[default]
    None,
    /// The task works in a fresh git worktree on its own branch.
    Worktree,
}

/// What the daemon found when a task ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    /// Files created, changed or deleted under the working directory, relative to it.
    pub files_modified: Vec<String>,
    /// Whether the test command passed; `None` when no tests ran (see `tests_skipped`).
    pub tests_passed: Option<bool>,
    /// The tail of the test command's output.
    pub tests_output: Option<String>,
    /// Why no tests ran.
    pub tests_skipped: Option<String>,
    /// The agent's final answer.
    pub message: String,
    /// The last lines of the agent's output.
    pub output_tail: String,
    /// The agent's exit status.
    pub exit_code: Option<i32>,
    /// The signal that killed the agent.
    pub exit_signal: Option<i32>,
    /// Error code when the task did not complete (`AGENT_CRASHED`, `TASK_TIMEOUT`, ...).
    pub error_code: Option<String>,
    /// What went wrong, for people.
    pub error: Option<String>,
    /// The task's branch (`isolation: "worktree"`).
    pub branch: Option<String>,
    /// The task's worktree (`isolation: "worktree"`).
    pub worktree: Option<PathBuf>,
}

/// One delegated task, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// `ticket-<uuid>`.
    pub ticket_id: String,
    /// Short per-daemon sequence number (the reference's numeric `task_id`).
    pub task_id: u64,
    /// Agent type.
    pub agent_type: String,
    /// The session the task runs in (assigned at creation).
    pub session_id: String,
    /// tmux name of that session.
    pub tmux_session: String,
    /// The task text.
    pub task: String,
    /// The request's context.
    pub context: TaskContext,
    /// Timeout in milliseconds, counted from the start.
    pub timeout_ms: u64,
    /// Canonical directory the task was delegated for.
    pub requested_dir: PathBuf,
    /// Directory the agent runs in (the worktree's counterpart under worktree isolation).
    pub working_dir: PathBuf,
    /// Isolation mode.
    pub isolation: Isolation,
    /// Branch of the worktree.
    pub branch: Option<String>,
    /// Root of the worktree.
    pub worktree: Option<PathBuf>,
    /// Test command given in the request (else the configured one applies).
    pub test_command: Option<Vec<String>>,
    /// Who delegated it (the token's `sub`).
    pub requested_by: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Start time (session created), ms since the epoch.
    pub started_ms: Option<u64>,
    /// End time, ms since the epoch.
    pub completed_ms: Option<u64>,
    /// Public status.
    pub status: TaskStatus,
    /// Internal phase.
    pub phase: Phase,
    /// State of the working directory when the task started.
    pub baseline: Option<Baseline>,
    /// Why the daemon is stopping the agent (timeout, cancel), applied when it has ended.
    #[serde(default)]
    pub stopping: Option<Ending>,
    /// Why the agent stopped.
    pub ending: Option<Ending>,
    /// The verified result.
    pub result: Option<TaskResult>,
}

impl Ticket {
    /// Milliseconds between start and end (or now, while running).
    pub fn elapsed_ms(&self, now_ms: u64) -> u64 {
        match self.started_ms {
            Some(start) => self.completed_ms.unwrap_or(now_ms).saturating_sub(start),
            None => 0,
        }
    }
}

/// Callbacks waiting for a ticket to become final (cancellations in progress).
pub type Waiters = HashMap<u64, Vec<crate::daemon::Done<Result<u64, error::TaskError>>>>;

/// All tickets, owned by the event loop.
#[derive(Default)]
pub struct TaskBook {
    /// Every ticket by task id.
    pub tickets: BTreeMap<u64, Ticket>,
    /// Task id by ticket id.
    pub by_ticket: HashMap<String, u64>,
    /// Task id by session id, for tickets that hold a slot.
    pub by_session: HashMap<String, u64>,
    /// Queued tickets, in order.
    pub queue: BTreeSet<u64>,
    /// The next task id to hand out.
    pub next_task_id: u64,
    /// Whether the progress timer is scheduled.
    pub progress_scheduled: bool,
    /// Delegations waiting for their ticket to be stored (they count against the queue).
    pub creating: usize,
    /// Cancellations waiting for their ticket to become final.
    pub waiters: Waiters,
}

impl std::fmt::Debug for TaskBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskBook")
            .field("tickets", &self.tickets.len())
            .field("queued", &self.queue.len())
            .finish()
    }
}

impl TaskBook {
    /// A book holding `tickets` loaded from the store.
    pub fn load(tickets: Vec<Ticket>) -> TaskBook {
        let mut book = TaskBook {
            next_task_id: 1,
            ..TaskBook::default()
        };
        for ticket in tickets {
            book.next_task_id = book.next_task_id.max(ticket.task_id + 1);
            book.insert(ticket);
        }
        book
    }

    /// Adds (or replaces) a ticket and indexes it.
    pub fn insert(&mut self, ticket: Ticket) {
        self.by_ticket
            .insert(ticket.ticket_id.clone(), ticket.task_id);
        if ticket.phase == Phase::Queued {
            self.queue.insert(ticket.task_id);
        }
        self.tickets.insert(ticket.task_id, ticket);
    }

    /// Finds a ticket by ticket id or numeric task id.
    pub fn find(&self, id: &str) -> Option<u64> {
        match self.by_ticket.get(id) {
            Some(task_id) => Some(*task_id),
            None => id
                .parse::<u64>()
                .ok()
                .filter(|n| self.tickets.contains_key(n)),
        }
    }

    /// Tickets holding a slot (preparing, launched, running or finishing).
    pub fn active(&self) -> impl Iterator<Item = &Ticket> {
        self.tickets.values().filter(|t| {
            matches!(
                t.phase,
                Phase::Preparing | Phase::Launched | Phase::Running | Phase::Finishing
            )
        })
    }

    /// Number of queued tickets.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    crate::time::unix_millis(std::time::SystemTime::now())
}

/// RFC 3339 text of a millisecond timestamp.
pub fn ms_rfc3339(ms: u64) -> String {
    crate::time::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_final_states() {
        for s in [
            "pending",
            "running",
            "completed",
            "failed",
            "timeout",
            "cancelled",
        ] {
            assert_eq!(TaskStatus::parse(s).unwrap().as_str(), s);
        }
        assert!(TaskStatus::parse("done").is_none());
        assert!(!TaskStatus::Running.is_final() && TaskStatus::Timeout.is_final());
    }

    #[test]
    fn tickets_are_found_by_ticket_id_or_task_id() {
        let mut book = TaskBook::load(Vec::new());
        assert_eq!(book.next_task_id, 1);
        let ticket = Ticket {
            ticket_id: "ticket-a".into(),
            task_id: 7,
            agent_type: "x".into(),
            session_id: "sess-x-00000000".into(),
            tmux_session: "agent-x-00000000".into(),
            task: "t".into(),
            context: TaskContext::default(),
            timeout_ms: 1,
            requested_dir: "/".into(),
            working_dir: "/".into(),
            isolation: Isolation::None,
            branch: None,
            worktree: None,
            test_command: None,
            requested_by: None,
            created_ms: 0,
            started_ms: None,
            completed_ms: None,
            status: TaskStatus::Pending,
            phase: Phase::Queued,
            baseline: None,
            stopping: None,
            ending: None,
            result: None,
        };
        let book2 = TaskBook::load(vec![ticket.clone()]);
        assert_eq!(book2.next_task_id, 8);
        book.insert(ticket);
        assert_eq!(book.find("ticket-a"), Some(7));
        assert_eq!(book.find("7"), Some(7));
        assert_eq!(book.find("8"), None);
        assert_eq!(book.queued(), 1);
    }
}
