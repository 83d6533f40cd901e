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

pub use crate::wire::task::{Isolation, TaskContext, TaskResult, TaskStatus};
use workspace::Baseline;

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
