//! The task shapes that REST answers, `task_update` messages and the ticket store share.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A ticket's status, exactly the reference's values plus `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Part of a plan an agent proposed: it waits for a person to approve it and never runs
    /// before (`approve_plan`).
    Proposed,
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
            TaskStatus::Proposed => "proposed",
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
            TaskStatus::Proposed,
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
        !matches!(
            self,
            TaskStatus::Proposed | TaskStatus::Pending | TaskStatus::Running
        )
    }
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
