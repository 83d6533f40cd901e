//! The answers of the daemon's tools for agents (`orchestra mcp` → the hook socket): one JSON
//! line per call, `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`, and the shape
//! of each tool's result.

use std::path::Path;

use serde::Serialize;

use super::task::{Isolation, TaskContext, TaskResult};

/// A tool call's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ToolAnswer<R> {
    /// The call worked.
    Done {
        /// Always `true`.
        ok: bool,
        /// What the tool returns.
        result: R,
    },
    /// The call failed.
    Failed {
        /// Always `false`.
        ok: bool,
        /// Why, in words.
        error: String,
    },
}

impl<R: Serialize> ToolAnswer<R> {
    /// The answer to a call that returned `outcome`.
    pub fn of(outcome: Result<R, String>) -> ToolAnswer<R> {
        match outcome {
            Ok(result) => ToolAnswer::Done { ok: true, result },
            Err(error) => ToolAnswer::Failed { ok: false, error },
        }
    }

    /// The answer as the line written to the caller.
    pub fn line(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).expect("serializable");
        bytes.push(b'\n');
        bytes
    }
}

/// `list_agents`: every session.
#[derive(Debug, Clone, Serialize)]
pub struct AgentList<'a> {
    /// The sessions, oldest first.
    pub agents: Vec<AgentEntry<'a>>,
    /// In a cluster: the other hosts' agents, as `GET /api/agents` lists them (each with
    /// its `host`); absent on a single host.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub other_hosts: &'a [serde_json::Value],
}

/// One session in `list_agents`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentEntry<'a> {
    /// Session id.
    pub session_id: &'a str,
    /// Agent type.
    pub agent_type: &'a str,
    /// `running`, `idle`, `exited` or `error`.
    pub status: &'static str,
    /// What it is doing.
    pub activity: &'static str,
    /// Its working directory.
    pub working_dir: &'a Path,
}

/// `get_task`: one task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskDetail<'a> {
    /// Task id.
    pub task_id: u64,
    /// Ticket id.
    pub ticket_id: &'a str,
    /// Agent type.
    pub agent: &'a str,
    /// Status.
    pub status: &'static str,
    /// The task's text.
    pub task: &'a str,
    /// The verified result, once finished.
    pub result: &'a Option<TaskResult>,
}

/// `send_message`: typed at once, or held for a person.
#[derive(Debug, Clone, Serialize)]
pub struct MessageSent<'a> {
    /// Whether the message was typed.
    pub sent: bool,
    /// The permission request a person answers (`approve_tool`), when held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
    /// What happens next, when held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

/// The input of a held `send_message`, as the permission request shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MessageInput<'a> {
    /// The session the message is for.
    pub session_id: &'a str,
    /// The message.
    pub content: &'a str,
}

/// `delegate_task` and `propose_plan`: the tasks created.
#[derive(Debug, Clone, Serialize)]
pub struct TasksCreated<'a> {
    /// The tasks.
    pub tasks: Vec<TaskRef<'a>>,
    /// What happens next, for proposed tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

/// A task just created.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRef<'a> {
    /// Task id.
    pub task_id: u64,
    /// Ticket id.
    pub ticket_id: &'a str,
    /// Status (`pending`, or `proposed` in a plan).
    pub status: &'static str,
}

/// One task of a proposed plan, exactly as stored and as it would run (the `approve_plan`
/// action's `tasks`).
#[derive(Debug, Clone, Serialize)]
pub struct PlannedTask<'a> {
    /// Task id.
    pub task_id: u64,
    /// Agent type.
    pub agent_type: &'a str,
    /// The task's whole text.
    pub task: &'a str,
    /// The working directory as requested.
    pub working_dir: &'a Path,
    /// Worktree or none.
    pub isolation: Isolation,
    /// Files, requirements and whether tests are required.
    pub context: &'a TaskContext,
    /// Time limit.
    pub timeout_ms: u64,
    /// The test command, if any.
    pub test_command: Option<Vec<String>>,
    /// Whether the test command runs after the agent.
    pub tests_run: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn value(line: &[u8]) -> Value {
        assert_eq!(line.last(), Some(&b'\n'), "one line");
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn answers_keep_the_shapes_the_tools_always_had() {
        let failed = ToolAnswer::<Value>::of(Err("no tool \"x\"".into())).line();
        assert_eq!(
            value(&failed),
            json!({"ok": false, "error": "no tool \"x\""})
        );
        let sent = MessageSent {
            sent: true,
            request_id: None,
            note: None,
        };
        assert_eq!(
            value(&ToolAnswer::of(Ok(sent)).line()),
            json!({"ok": true, "result": {"sent": true}})
        );
        let held = MessageSent {
            sent: false,
            request_id: Some("msg-1"),
            note: Some("held"),
        };
        assert_eq!(
            serde_json::to_value(held).unwrap(),
            json!({"sent": false, "request_id": "msg-1", "note": "held"})
        );
        let agents = AgentList {
            agents: vec![AgentEntry {
                session_id: "sess-a",
                agent_type: "shell",
                status: "running",
                activity: "working",
                working_dir: Path::new("/w"),
            }],
            other_hosts: &[],
        };
        assert_eq!(
            serde_json::to_value(&agents).unwrap(),
            json!({"agents": [{"session_id": "sess-a", "agent_type": "shell",
                "status": "running", "activity": "working", "working_dir": "/w"}]})
        );
        let remote = [json!({"session_id": "sess-b", "host": "beta"})];
        let clustered = AgentList {
            other_hosts: &remote,
            ..agents
        };
        assert_eq!(
            serde_json::to_value(clustered).unwrap()["other_hosts"],
            json!([{"session_id": "sess-b", "host": "beta"}])
        );
        let created = TasksCreated {
            tasks: vec![TaskRef {
                task_id: 1,
                ticket_id: "ticket-1",
                status: "pending",
            }],
            note: None,
        };
        assert_eq!(
            serde_json::to_value(created).unwrap(),
            json!({"tasks": [{"task_id": 1, "ticket_id": "ticket-1", "status": "pending"}]})
        );
        let detail = TaskDetail {
            task_id: 1,
            ticket_id: "ticket-1",
            agent: "shell",
            status: "pending",
            task: "t",
            result: &None,
        };
        assert_eq!(
            serde_json::to_value(detail).unwrap(),
            json!({"task_id": 1, "ticket_id": "ticket-1", "agent": "shell",
                "status": "pending", "task": "t", "result": null})
        );
    }
}
