//! Every WebSocket message of `/ws/observe`, in both directions.
//!
//! Client messages ignore unknown fields; an unknown `type` is an `INVALID_REQUEST` error.
//! Server messages are [`ServerMessage`] variants, built by the features that send them and
//! encoded once.

use serde::{Deserialize, Serialize};

use super::task::TaskResult;
use crate::error_code::ErrorCode;

/// Messages a WebSocket client sends. Unknown fields are ignored; an unknown `type` is an
/// `INVALID_REQUEST` error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Start receiving a pane's output: first its screen (or, with `since`, the output
    /// missed since that offset), then live output.
    SubscribeTerminal {
        /// Session.
        session_id: String,
        /// Resume after this stream offset (a `next_offset` the client received).
        #[serde(default)]
        since: Option<u64>,
        /// The stream id the offset belongs to (from `terminal_output.stream`).
        #[serde(default)]
        stream: Option<String>,
    },
    /// Stop receiving a pane's output.
    UnsubscribeTerminal {
        /// Session.
        session_id: String,
    },
    /// Type a message into the agent and press Enter (needs the `control` scope).
    UserMessage {
        /// Session.
        session_id: String,
        /// The text.
        content: String,
        /// Echoed in the acknowledgement or error.
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    /// Type raw keys into the pane, control characters included (needs `control`).
    TerminalInput {
        /// Session.
        session_id: String,
        /// The keys, e.g. `"\u0003"` for Ctrl-C.
        data: String,
        /// Echoed in the acknowledgement or error.
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    /// Answers a tool permission an agent asked for (`approve_tool` action; needs
    /// `control`).
    ApproveTool {
        /// Session.
        session_id: String,
        /// The request, from the action.
        request_id: String,
        /// `allow` or `deny`.
        decision: String,
        /// Why, told to the agent when denying.
        #[serde(default)]
        message: Option<String>,
    },
    /// Approves the proposed tasks of a plan (`approve_plan` action; needs `control`): they
    /// become `pending` and run as usual.
    ApprovePlan {
        /// The plan's tasks, from the action.
        task_ids: Vec<u64>,
        /// The session whose `claude_response` proposed it: in a cluster, the decision goes
        /// to that session's host (task ids are numbered per host).
        #[serde(default)]
        session_id: Option<String>,
    },
    /// Rejects the proposed tasks of a plan (needs `control`): they end `cancelled`.
    RejectPlan {
        /// The plan's tasks.
        task_ids: Vec<u64>,
        /// The session that proposed it (see `approve_plan`).
        #[serde(default)]
        session_id: Option<String>,
    },
    /// Resizes a session's pane (needs `control`): the program in it sees the new size.
    ResizeTerminal {
        /// Session.
        session_id: String,
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Heartbeat; answered with `pong`.
    Ping {
        /// Echoed in the `pong`.
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
}

impl ClientMessage {
    /// The wire name of the message's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::SubscribeTerminal { .. } => "subscribe_terminal",
            ClientMessage::UnsubscribeTerminal { .. } => "unsubscribe_terminal",
            ClientMessage::UserMessage { .. } => "user_message",
            ClientMessage::TerminalInput { .. } => "terminal_input",
            ClientMessage::ApproveTool { .. } => "approve_tool",
            ClientMessage::ApprovePlan { .. } => "approve_plan",
            ClientMessage::RejectPlan { .. } => "reject_plan",
            ClientMessage::ResizeTerminal { .. } => "resize_terminal",
            ClientMessage::Ping { .. } => "ping",
        }
    }

    /// The session the message is about, if it is about one.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            ClientMessage::SubscribeTerminal { session_id, .. }
            | ClientMessage::UnsubscribeTerminal { session_id }
            | ClientMessage::UserMessage { session_id, .. }
            | ClientMessage::TerminalInput { session_id, .. }
            | ClientMessage::ApproveTool { session_id, .. }
            | ClientMessage::ResizeTerminal { session_id, .. } => Some(session_id),
            ClientMessage::ApprovePlan { session_id, .. }
            | ClientMessage::RejectPlan { session_id, .. } => session_id.as_deref(),
            ClientMessage::Ping { .. } => None,
        }
    }
}

/// Messages the daemon sends on `/ws/observe`, told apart by `type` (always the first field
/// of the encoded JSON, which `GET /metrics` counts by). Every server message is built as one
/// of these variants; no other code names a `type`. Four variants share the `error` type: they
/// differ in the fields that come with the error code.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// Pane output (or, with `snapshot`, the screen): the reference's fields plus `offset`,
    /// `next_offset`, `stream` and, for screens, `snapshot`, `rows`, `cols`.
    TerminalOutput {
        /// Session.
        session_id: &'a str,
        /// The output (or, for a snapshot, the screen redrawn as escape sequences).
        data: &'a str,
        /// Milliseconds since the Unix epoch.
        timestamp: u64,
        /// Stream offset of the first byte of `data`.
        offset: u64,
        /// Stream offset just past `data`; the `since` to resume from.
        next_offset: u64,
        /// The stream id that offsets refer to.
        stream: &'a str,
        /// True for a screen snapshot rather than output.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        snapshot: bool,
        /// Screen height of a snapshot.
        #[serde(skip_serializing_if = "Option::is_none")]
        rows: Option<u16>,
        /// Screen width of a snapshot.
        #[serde(skip_serializing_if = "Option::is_none")]
        cols: Option<u16>,
    },
    /// Output between `since` and `offset` cannot be delivered.
    TerminalGap {
        /// Session.
        session_id: &'a str,
        /// Where the client asked to resume.
        since: u64,
        /// Where delivery resumes (a snapshot follows).
        offset: u64,
        /// The stream id that offsets refer to.
        stream: &'a str,
        /// Why the output is missing.
        reason: &'a str,
    },
    /// Acknowledges `subscribe_terminal`.
    Subscribed {
        /// Session.
        session_id: &'a str,
        /// The stream id that offsets refer to.
        stream: &'a str,
        /// True when resuming from `since`; false when a screen comes first.
        resumed: bool,
    },
    /// Acknowledges `unsubscribe_terminal`.
    Unsubscribed {
        /// Session.
        session_id: &'a str,
    },
    /// The `user_message` has been typed into the pane.
    UserMessageAck {
        /// Session.
        session_id: &'a str,
        /// The client's message id (`null` when it sent none).
        id: &'a Option<serde_json::Value>,
    },
    /// The `terminal_input` has been typed into the pane.
    TerminalInputAck {
        /// Session.
        session_id: &'a str,
        /// The client's message id (`null` when it sent none).
        id: &'a Option<serde_json::Value>,
    },
    /// The pane now has this size.
    ResizeTerminalAck {
        /// Session.
        session_id: &'a str,
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// The agent's CLI has received the message.
    UserMessageDelivered {
        /// Session.
        session_id: &'a str,
        /// The message's `id` (`null` when it had none).
        id: &'a Option<serde_json::Value>,
    },
    /// The agent's turn ended with this reply, or it asks for something (`actions`).
    ClaudeResponse {
        /// Session.
        session_id: &'a str,
        /// The reply's text.
        content: &'a str,
        /// What the user can do about it (approve a plan, a tool); empty for a plain reply.
        actions: Vec<Action<'a>>,
        /// The `id` of the `user_message` it answers, when the client gave one.
        #[serde(skip_serializing_if = "Option::is_none")]
        in_reply_to: Option<&'a serde_json::Value>,
        /// When the turn ended (RFC 3339).
        timestamp: String,
    },
    /// A permission request was answered (`allow`, `deny`) or nobody answered in time
    /// (`expired`: the agent asks in its terminal).
    ToolDecision {
        /// Session.
        session_id: &'a str,
        /// The request.
        request_id: &'a str,
        /// `allow`, `deny` or `expired`.
        decision: &'static str,
    },
    /// An agent's status or activity changed: the reference's fields plus `agent_type` and
    /// exit details.
    AgentStatus {
        /// Session.
        session_id: &'a str,
        /// The agent's type.
        agent_type: &'a str,
        /// `running`, `idle`, `error`, `exited` or `terminated`.
        status: &'static str,
        /// When the agent last printed (RFC 3339).
        last_activity: String,
        /// What the agent is doing: `starting`, `working`, `waiting_input`,
        /// `needs_approval`, `idle` or `stuck`.
        activity: &'static str,
        /// When that activity began (RFC 3339).
        activity_since: String,
        /// Why the daemon thinks so.
        evidence: Evidence<'a>,
        /// Exit status, once the process has exited normally.
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// The signal that ended the process, if one did.
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_signal: Option<i32>,
    },
    /// A task's ticket changed.
    TaskUpdate {
        /// The task.
        task_id: u64,
        /// Its ticket.
        ticket_id: &'a str,
        /// The session working on it.
        session_id: &'a str,
        /// The agent type.
        agent: &'a str,
        /// The ticket's status.
        status: &'static str,
        /// Milliseconds since it started (0 while pending).
        elapsed_ms: u64,
        /// The result, once final.
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<&'a TaskResult>,
    },
    /// Answers `ping`.
    Pong {
        /// The ping's id, if it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::Value>,
    },
    /// `error`: a client message failed, or credentials were refused.
    Error {
        /// Application error code.
        error_code: ErrorCode,
        /// Explanation.
        message: &'a str,
        /// The session concerned, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<&'a str>,
        /// The client's message id, if it sent one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::Value>,
    },
    /// `error` for input that was accepted but could not be typed (its `id` is always
    /// present, `null` when the input had none).
    #[serde(rename = "error")]
    InputError {
        /// `SESSION_NOT_FOUND` or `INTERNAL_ERROR`.
        error_code: ErrorCode,
        /// Why.
        message: &'a str,
        /// Session.
        session_id: &'a str,
        /// The client's message id (`null` when it sent none).
        id: &'a Option<serde_json::Value>,
    },
    /// `error` announcing a crashed or vanished agent to every observer.
    #[serde(rename = "error")]
    AgentCrashed {
        /// Always `AGENT_CRASHED`.
        error_code: ErrorCode,
        /// What happened, for people.
        message: String,
        /// Session.
        session_id: &'a str,
        /// Exit status, if the process exited normally.
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// The signal that ended the process, if one did.
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_signal: Option<i32>,
        /// The last lines of the agent's screen.
        last_lines: Vec<String>,
    },
    /// `error` announcing a task's timeout to every observer.
    #[serde(rename = "error")]
    TaskTimeout {
        /// Always `TASK_TIMEOUT`.
        error_code: ErrorCode,
        /// What happened, for people.
        message: String,
        /// The session working on it.
        session_id: &'a str,
        /// Its ticket.
        ticket_id: &'a str,
        /// The task.
        task_id: u64,
    },
}

impl ServerMessage<'_> {
    /// The wire name of the message's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerMessage::TerminalOutput { .. } => "terminal_output",
            ServerMessage::TerminalGap { .. } => "terminal_gap",
            ServerMessage::Subscribed { .. } => "subscribed",
            ServerMessage::Unsubscribed { .. } => "unsubscribed",
            ServerMessage::UserMessageAck { .. } => "user_message_ack",
            ServerMessage::TerminalInputAck { .. } => "terminal_input_ack",
            ServerMessage::ResizeTerminalAck { .. } => "resize_terminal_ack",
            ServerMessage::UserMessageDelivered { .. } => "user_message_delivered",
            ServerMessage::ClaudeResponse { .. } => "claude_response",
            ServerMessage::ToolDecision { .. } => "tool_decision",
            ServerMessage::AgentStatus { .. } => "agent_status",
            ServerMessage::TaskUpdate { .. } => "task_update",
            ServerMessage::Pong { .. } => "pong",
            ServerMessage::Error { .. }
            | ServerMessage::InputError { .. }
            | ServerMessage::AgentCrashed { .. }
            | ServerMessage::TaskTimeout { .. } => "error",
        }
    }

    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

/// What a user can do about a `claude_response`, told apart by `type`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action<'a> {
    /// The agent asks permission for a tool; answer with `approve_tool` and `request_id`.
    ApproveTool {
        /// The request.
        request_id: &'a str,
        /// The tool.
        tool: &'a str,
        /// The call in full, never cut.
        summary: &'a str,
        /// Every argument of the call.
        tool_input: &'a serde_json::Value,
    },
    /// The agent proposed a plan; approve with `approve_plan` or reject.
    ApprovePlan {
        /// Always `Approve`.
        button_text: &'static str,
        /// The plan's proposed tasks.
        task_ids: &'a [u64],
        /// The agent's own summary of the plan (may be empty).
        summary: &'a str,
        /// Each proposed task exactly as stored and as it would run.
        tasks: Vec<serde_json::Value>,
    },
}

/// The evidence for an agent's activity.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence<'a> {
    /// `hook` (the CLI reported it), `screen` (its output) or `timer` (time passed).
    pub source: &'static str,
    /// What was seen, e.g. `Stop hook` or `PreToolUse hook: Bash`.
    pub detail: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// One of every server message, with the JSON the daemon sent for it before the messages
    /// were variants of one enum (and the reference documents).
    fn examples<'a>(
        id: &'a Option<Value>,
        none: &'a Option<Value>,
        input: &'a Value,
        result: &'a TaskResult,
    ) -> Vec<(ServerMessage<'a>, Value)> {
        vec![
            (
                ServerMessage::TerminalOutput {
                    session_id: "s",
                    data: "hi",
                    timestamp: 7,
                    offset: 1,
                    next_offset: 3,
                    stream: "ab",
                    snapshot: false,
                    rows: None,
                    cols: None,
                },
                json!({"type": "terminal_output", "session_id": "s", "data": "hi",
                       "timestamp": 7, "offset": 1, "next_offset": 3, "stream": "ab"}),
            ),
            (
                ServerMessage::TerminalOutput {
                    session_id: "s",
                    data: "screen",
                    timestamp: 7,
                    offset: 3,
                    next_offset: 3,
                    stream: "ab",
                    snapshot: true,
                    rows: Some(24),
                    cols: Some(80),
                },
                json!({"type": "terminal_output", "session_id": "s", "data": "screen",
                       "timestamp": 7, "offset": 3, "next_offset": 3, "stream": "ab",
                       "snapshot": true, "rows": 24, "cols": 80}),
            ),
            (
                ServerMessage::TerminalGap {
                    session_id: "s",
                    since: 1,
                    offset: 9,
                    stream: "ab",
                    reason: "backlog",
                },
                json!({"type": "terminal_gap", "session_id": "s", "since": 1, "offset": 9,
                       "stream": "ab", "reason": "backlog"}),
            ),
            (
                ServerMessage::Subscribed {
                    session_id: "s",
                    stream: "ab",
                    resumed: false,
                },
                json!({"type": "subscribed", "session_id": "s", "stream": "ab",
                       "resumed": false}),
            ),
            (
                ServerMessage::Unsubscribed { session_id: "s" },
                json!({"type": "unsubscribed", "session_id": "s"}),
            ),
            (
                ServerMessage::UserMessageAck {
                    session_id: "s",
                    id,
                },
                json!({"type": "user_message_ack", "session_id": "s", "id": "m1"}),
            ),
            (
                ServerMessage::TerminalInputAck {
                    session_id: "s",
                    id: none,
                },
                json!({"type": "terminal_input_ack", "session_id": "s", "id": null}),
            ),
            (
                ServerMessage::ResizeTerminalAck {
                    session_id: "s",
                    rows: 30,
                    cols: 90,
                },
                json!({"type": "resize_terminal_ack", "session_id": "s", "rows": 30,
                       "cols": 90}),
            ),
            (
                ServerMessage::UserMessageDelivered {
                    session_id: "s",
                    id,
                },
                json!({"type": "user_message_delivered", "session_id": "s", "id": "m1"}),
            ),
            (
                ServerMessage::ClaudeResponse {
                    session_id: "s",
                    content: "done",
                    actions: Vec::new(),
                    in_reply_to: id.as_ref(),
                    timestamp: "2026-01-01T00:00:00Z".into(),
                },
                json!({"type": "claude_response", "session_id": "s", "content": "done",
                       "actions": [], "in_reply_to": "m1",
                       "timestamp": "2026-01-01T00:00:00Z"}),
            ),
            (
                ServerMessage::ClaudeResponse {
                    session_id: "s",
                    content: "may I?",
                    actions: vec![Action::ApproveTool {
                        request_id: "r1",
                        tool: "Bash",
                        summary: "Bash: ls",
                        tool_input: input,
                    }],
                    in_reply_to: None,
                    timestamp: "2026-01-01T00:00:00Z".into(),
                },
                json!({"type": "claude_response", "session_id": "s", "content": "may I?",
                       "actions": [{"type": "approve_tool", "request_id": "r1", "tool": "Bash",
                                    "summary": "Bash: ls", "tool_input": {"command": "ls"}}],
                       "timestamp": "2026-01-01T00:00:00Z"}),
            ),
            (
                ServerMessage::ClaudeResponse {
                    session_id: "s",
                    content: "plan",
                    actions: vec![Action::ApprovePlan {
                        button_text: "Approve",
                        task_ids: &[4, 5],
                        summary: "two steps",
                        tasks: vec![json!({"task_id": 4}), json!({"task_id": 5})],
                    }],
                    in_reply_to: None,
                    timestamp: "2026-01-01T00:00:00Z".into(),
                },
                json!({"type": "claude_response", "session_id": "s", "content": "plan",
                       "actions": [{"type": "approve_plan", "button_text": "Approve",
                                    "task_ids": [4, 5], "summary": "two steps",
                                    "tasks": [{"task_id": 4}, {"task_id": 5}]}],
                       "timestamp": "2026-01-01T00:00:00Z"}),
            ),
            (
                ServerMessage::ToolDecision {
                    session_id: "s",
                    request_id: "r1",
                    decision: "allow",
                },
                json!({"type": "tool_decision", "session_id": "s", "request_id": "r1",
                       "decision": "allow"}),
            ),
            (
                ServerMessage::AgentStatus {
                    session_id: "s",
                    agent_type: "claude",
                    status: "exited",
                    last_activity: "2026-01-01T00:00:00Z".into(),
                    activity: "idle",
                    activity_since: "2026-01-01T00:00:01Z".into(),
                    evidence: Evidence {
                        source: "hook",
                        detail: "Stop hook",
                    },
                    exit_code: Some(3),
                    exit_signal: None,
                },
                json!({"type": "agent_status", "session_id": "s", "agent_type": "claude",
                       "status": "exited", "last_activity": "2026-01-01T00:00:00Z",
                       "activity": "idle", "activity_since": "2026-01-01T00:00:01Z",
                       "evidence": {"source": "hook", "detail": "Stop hook"}, "exit_code": 3}),
            ),
            (
                ServerMessage::TaskUpdate {
                    task_id: 4,
                    ticket_id: "t4",
                    session_id: "s",
                    agent: "claude",
                    status: "completed",
                    elapsed_ms: 12,
                    result: Some(result),
                },
                json!({"type": "task_update", "task_id": 4, "ticket_id": "t4",
                       "session_id": "s", "agent": "claude", "status": "completed",
                       "elapsed_ms": 12, "result": serde_json::to_value(result).unwrap()}),
            ),
            (ServerMessage::Pong { id: None }, json!({"type": "pong"})),
            (
                ServerMessage::Error {
                    error_code: ErrorCode::SessionNotFound,
                    message: "no agent session s",
                    session_id: Some("s"),
                    id: None,
                },
                json!({"type": "error", "error_code": "SESSION_NOT_FOUND",
                       "message": "no agent session s", "session_id": "s"}),
            ),
            (
                ServerMessage::InputError {
                    error_code: ErrorCode::InternalError,
                    message: "writing to the pane failed",
                    session_id: "s",
                    id: none,
                },
                json!({"type": "error", "error_code": "INTERNAL_ERROR",
                       "message": "writing to the pane failed", "session_id": "s",
                       "id": null}),
            ),
            (
                ServerMessage::AgentCrashed {
                    error_code: ErrorCode::AgentCrashed,
                    message: "exited with status 3".into(),
                    session_id: "s",
                    exit_code: Some(3),
                    exit_signal: None,
                    last_lines: vec!["bye".into()],
                },
                json!({"type": "error", "error_code": "AGENT_CRASHED",
                       "message": "exited with status 3", "session_id": "s", "exit_code": 3,
                       "last_lines": ["bye"]}),
            ),
            (
                ServerMessage::TaskTimeout {
                    error_code: ErrorCode::TaskTimeout,
                    message: "Task exceeded its timeout of 5 ms".into(),
                    session_id: "s",
                    ticket_id: "t4",
                    task_id: 4,
                },
                json!({"type": "error", "error_code": "TASK_TIMEOUT",
                       "message": "Task exceeded its timeout of 5 ms", "session_id": "s",
                       "ticket_id": "t4", "task_id": 4}),
            ),
        ]
    }

    #[test]
    fn server_messages_encode_as_documented_with_type_first() {
        let result = TaskResult {
            message: "done".into(),
            ..TaskResult::default()
        };
        let (id, input) = (Some(json!("m1")), json!({"command": "ls"}));
        let examples = examples(&id, &None, &input, &result);
        let mut types = std::collections::BTreeSet::new();
        for (message, expected) in &examples {
            let text = message.to_json();
            let name = message.type_name();
            types.insert(name);
            assert_eq!(
                serde_json::from_str::<Value>(&text).unwrap(),
                *expected,
                "{text}"
            );
            // `GET /metrics` counts sent messages by the `type` at the start of the text.
            assert!(
                text.starts_with(&format!("{{\"type\":\"{name}\"")),
                "{text}"
            );
        }
        assert_eq!(types.len(), 14, "every type has an example: {types:?}");
    }

    #[test]
    fn the_server_types_are_exactly_the_documented_ones() {
        let document: Value =
            serde_json::from_str(include_str!("../api/openapi.json")).expect("valid JSON");
        let mapping =
            &document["components"]["schemas"]["WsServerMessage"]["discriminator"]["mapping"];
        let documented: std::collections::BTreeSet<&str> = mapping
            .as_object()
            .expect("a discriminator mapping")
            .keys()
            .map(String::as_str)
            .collect();
        let result = TaskResult::default();
        let sent: std::collections::BTreeSet<&str> = examples(&None, &None, &Value::Null, &result)
            .iter()
            .map(|(message, _)| message.type_name())
            .collect();
        assert_eq!(sent, documented);
    }
}
