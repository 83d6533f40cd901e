//! Delegated tasks: durable tickets, their queue, and results the daemon verifies itself.
//!
//! A ticket ([`Ticket`]) is created by `POST /api/delegate`, stored durably ([`store`])
//! before the request is answered, queued, and run in an ordinary agent session started
//! with the agent type's `headless` command ([`lifecycle`]). When the agent ends, the
//! daemon computes the files it changed ([`workspace`]), runs the tests ([`verify`]) and
//! records the result. [`TaskBook`] is plain loop-owned state; everything that waits (git,
//! test runs, disk syncs) runs on other threads.

pub mod error;
pub mod git;
pub mod lifecycle;
pub mod process;
pub mod prompt;
pub mod store;
pub mod verify;
pub mod workspace;

/// What tasks code may reach: the tasks, the agents and panes below them, and the context.
pub struct Parts<'a> {
    /// The loop's shared context.
    pub ctx: &'a mut crate::ctx::Ctx,
    /// Pane output and input (read for a crashed agent's last screen).
    pub panes: &'a mut crate::panes::Panes,
    /// Agent sessions, in which tasks run.
    pub agents: &'a mut crate::agents::Agents,
    /// The tasks' own state.
    pub tasks: &'a mut Tasks,
}

impl Parts<'_> {
    /// What agents code may reach, borrowed from these parts.
    pub fn for_agents(&mut self) -> crate::agents::Parts<'_> {
        crate::agents::Parts {
            ctx: self.ctx,
            panes: self.panes,
            agents: self.agents,
        }
    }
}

/// The tasks' state: the ticket book and the durable store.
pub struct Tasks {
    /// Delegated task tickets.
    book: TaskBook,
    /// The durable ticket store.
    store: store::Store,
    /// Timings of task store writes (recorded by the store thread).
    store_timing: std::sync::Arc<crate::metrics::SharedHistogram>,
}

impl Tasks {
    /// Opens the ticket store, loads its tickets and starts its thread.
    pub fn open(
        config: &crate::config::Config,
        notifier: crate::jobs::Notifier<crate::ctx::World>,
    ) -> Result<Tasks, String> {
        let store_path = config.task_store();
        let (store_db, tickets) = store::open(&store_path)?;
        let store_timing = std::sync::Arc::new(crate::metrics::SharedHistogram::default());
        let store = store::Store::start(&store_path, store_db, notifier, store_timing.clone())
            .map_err(|e| format!("cannot start the task store thread: {e}"))?;
        Ok(Tasks {
            book: TaskBook::load(tickets),
            store,
            store_timing,
        })
    }

    /// The ticket of task `task_id`.
    pub fn ticket(&self, task_id: u64) -> Option<&Ticket> {
        self.book.tickets.get(&task_id)
    }

    /// The ticket a ticket id or task id names.
    pub fn find(&self, id: &str) -> Option<&Ticket> {
        self.book.find(id).and_then(|task_id| self.ticket(task_id))
    }

    /// Every ticket, oldest first.
    pub fn tickets(&self) -> impl DoubleEndedIterator<Item = &Ticket> {
        self.book.tickets.values()
    }

    /// How many tickets wait for a slot.
    pub fn queued(&self) -> usize {
        self.book.queued()
    }

    /// How many tasks run now.
    pub fn running(&self) -> usize {
        self.book.active().count()
    }

    /// Timings of task store writes.
    pub fn store_timing(&self) -> &crate::metrics::SharedHistogram {
        &self.store_timing
    }
}

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::wire::task::{Isolation, TaskContext, TaskResult, TaskStatus};
use workspace::Baseline;

/// Where a ticket is in its life, and how a finished one ended: the one place a ticket's
/// state is held. Its public status ([`Phase::status`]) is derived from it. Stored as the
/// two fields `phase` and `status`, as earlier versions did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Proposed in a plan; waits for approval and is not queued (`proposed`).
    Proposed,
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
    /// Final, with how it ended.
    Done(Outcome),
}

/// How a finished ticket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The agent exited with status 0 (and the tests, if required, passed).
    Completed,
    /// The agent failed, crashed, could not start, or its session was killed.
    Failed,
    /// The task ran past its `timeout_ms`.
    Timeout,
    /// Cancelled through the API.
    Cancelled,
}

impl Outcome {
    /// The public status of a ticket that ended this way.
    pub fn status(self) -> TaskStatus {
        match self {
            Outcome::Completed => TaskStatus::Completed,
            Outcome::Failed => TaskStatus::Failed,
            Outcome::Timeout => TaskStatus::Timeout,
            Outcome::Cancelled => TaskStatus::Cancelled,
        }
    }
}

impl Phase {
    /// The public status: `pending` until the session exists, `running` until the result is
    /// recorded, then the outcome.
    pub fn status(self) -> TaskStatus {
        match self {
            Phase::Proposed => TaskStatus::Proposed,
            Phase::Queued | Phase::Preparing | Phase::Launched => TaskStatus::Pending,
            Phase::Running | Phase::Finishing => TaskStatus::Running,
            Phase::Done(outcome) => outcome.status(),
        }
    }

    /// Whether the ticket is final.
    pub fn is_done(self) -> bool {
        matches!(self, Phase::Done(_))
    }
}

/// The stored form of a [`Phase`]: the phase's name and the public status beside it.
#[derive(Serialize, Deserialize)]
struct StoredPhase {
    phase: PhaseName,
    status: TaskStatus,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PhaseName {
    Proposed,
    Queued,
    Preparing,
    Launched,
    Running,
    Finishing,
    Done,
}

impl Serialize for Phase {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let phase = match self {
            Phase::Proposed => PhaseName::Proposed,
            Phase::Queued => PhaseName::Queued,
            Phase::Preparing => PhaseName::Preparing,
            Phase::Launched => PhaseName::Launched,
            Phase::Running => PhaseName::Running,
            Phase::Finishing => PhaseName::Finishing,
            Phase::Done(_) => PhaseName::Done,
        };
        StoredPhase {
            phase,
            status: self.status(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Phase {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Phase, D::Error> {
        let stored = StoredPhase::deserialize(deserializer)?;
        Ok(match stored.phase {
            PhaseName::Proposed => Phase::Proposed,
            PhaseName::Queued => Phase::Queued,
            PhaseName::Preparing => Phase::Preparing,
            PhaseName::Launched => Phase::Launched,
            PhaseName::Running => Phase::Running,
            PhaseName::Finishing => Phase::Finishing,
            PhaseName::Done => Phase::Done(match stored.status {
                TaskStatus::Completed => Outcome::Completed,
                TaskStatus::Timeout => Outcome::Timeout,
                TaskStatus::Cancelled => Outcome::Cancelled,
                // A final ticket stored with a non-final status cannot happen; failed is the
                // honest reading of it.
                TaskStatus::Failed
                | TaskStatus::Proposed
                | TaskStatus::Pending
                | TaskStatus::Running => Outcome::Failed,
            }),
        })
    }
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

/// What a delegation asks for, once validated.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Agent type.
    pub agent_type: String,
    /// The task text.
    pub task: String,
    /// The request's context.
    pub context: TaskContext,
    /// Timeout in milliseconds.
    pub timeout_ms: u64,
    /// Canonical directory the task was delegated for.
    pub dir: PathBuf,
    /// Isolation mode.
    pub isolation: Isolation,
    /// Test command given in the request.
    pub test_command: Option<Vec<String>>,
    /// Who delegated it.
    pub requested_by: Option<String>,
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
    /// Where the ticket is in its life (stored as `phase` and `status`).
    #[serde(flatten)]
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
    /// Sessions it was to run in whose spawn spec a restart withdrew before any agent
    /// claimed it; one the previous daemon's tmux call created late is removed when found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdrawn_sessions: Vec<String>,
}

impl Ticket {
    /// A new, queued ticket (with a fresh `ticket-<uuid>`) for `task`, to run in the session
    /// `session_id` (tmux name `tmux_session`); nothing started or recorded yet.
    pub fn new(task_id: u64, session_id: String, tmux_session: String, task: NewTask) -> Ticket {
        Ticket {
            ticket_id: format!("ticket-{}", uuid::Uuid::new_v4()),
            task_id,
            agent_type: task.agent_type,
            session_id,
            tmux_session,
            task: task.task,
            context: task.context,
            timeout_ms: task.timeout_ms,
            requested_dir: task.dir.clone(),
            working_dir: task.dir,
            isolation: task.isolation,
            branch: None,
            worktree: None,
            test_command: task.test_command,
            requested_by: task.requested_by,
            created_ms: now_ms(),
            started_ms: None,
            completed_ms: None,
            phase: Phase::Queued,
            baseline: None,
            stopping: None,
            ending: None,
            result: None,
            withdrawn_sessions: Vec::new(),
        }
    }

    /// The public status, derived from the phase.
    pub fn status(&self) -> TaskStatus {
        self.phase.status()
    }

    /// Milliseconds between start and end (or now, while running).
    pub fn elapsed_ms(&self, now_ms: u64) -> u64 {
        match self.started_ms {
            Some(start) => self.completed_ms.unwrap_or(now_ms).saturating_sub(start),
            None => 0,
        }
    }
}

/// Callbacks waiting for a ticket to become final (cancellations in progress).
pub type Waiters = HashMap<u64, Vec<crate::ctx::Done<Result<u64, error::TaskError>>>>;

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
        let mut ticket = Ticket::new(
            7,
            "sess-x-00000000".into(),
            "agent-x-00000000".into(),
            NewTask {
                agent_type: "x".into(),
                task: "t".into(),
                context: TaskContext::default(),
                timeout_ms: 1,
                dir: "/".into(),
                isolation: Isolation::None,
                test_command: None,
                requested_by: None,
            },
        );
        ticket.ticket_id = "ticket-a".into();
        let book2 = TaskBook::load(vec![ticket.clone()]);
        assert_eq!(book2.next_task_id, 8);
        book.insert(ticket);
        assert_eq!(book.find("ticket-a"), Some(7));
        assert_eq!(book.find("7"), Some(7));
        assert_eq!(book.find("8"), None);
        assert_eq!(book.queued(), 1);
    }

    #[test]
    fn the_status_follows_the_phase() {
        let table = [
            (Phase::Proposed, TaskStatus::Proposed),
            (Phase::Queued, TaskStatus::Pending),
            (Phase::Preparing, TaskStatus::Pending),
            (Phase::Launched, TaskStatus::Pending),
            (Phase::Running, TaskStatus::Running),
            (Phase::Finishing, TaskStatus::Running),
            (Phase::Done(Outcome::Completed), TaskStatus::Completed),
            (Phase::Done(Outcome::Failed), TaskStatus::Failed),
            (Phase::Done(Outcome::Timeout), TaskStatus::Timeout),
            (Phase::Done(Outcome::Cancelled), TaskStatus::Cancelled),
        ];
        for (phase, status) in table {
            assert_eq!(phase.status(), status, "{phase:?}");
            assert_eq!(phase.is_done(), status.is_final(), "{phase:?}");
        }
    }

    #[test]
    fn the_phase_is_stored_as_earlier_versions_stored_phase_and_status() {
        #[derive(Serialize, Deserialize)]
        struct Holder {
            #[serde(flatten)]
            phase: Phase,
        }
        let stored = serde_json::to_value(Holder {
            phase: Phase::Done(Outcome::Timeout),
        })
        .unwrap();
        assert_eq!(
            stored,
            serde_json::json!({"phase": "done", "status": "timeout"})
        );
        let old = r#"{"phase": "finishing", "status": "running"}"#;
        assert_eq!(
            serde_json::from_str::<Holder>(old).unwrap().phase,
            Phase::Finishing
        );
        let old_done = r#"{"phase": "done", "status": "cancelled"}"#;
        assert_eq!(
            serde_json::from_str::<Holder>(old_done).unwrap().phase,
            Phase::Done(Outcome::Cancelled)
        );
        for phase in [
            Phase::Queued,
            Phase::Launched,
            Phase::Done(Outcome::Completed),
        ] {
            let text = serde_json::to_string(&Holder { phase }).unwrap();
            assert_eq!(serde_json::from_str::<Holder>(&text).unwrap().phase, phase);
        }
    }
}
