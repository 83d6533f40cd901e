//! Every WebSocket message of `/ws/observe`, in both directions.
//!
//! Client messages ignore unknown fields; an unknown `type` is an `INVALID_REQUEST` error.
//! Server messages are built by the features that send them and encoded once.

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
    },
    /// Rejects the proposed tasks of a plan (needs `control`): they end `cancelled`.
    RejectPlan {
        /// The plan's tasks.
        task_ids: Vec<u64>,
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
}

/// `error` message sent on a WebSocket.
#[derive(Debug, Clone, Serialize)]
pub struct WsError<'a> {
    /// Always `error`.
    pub r#type: &'static str,
    /// Application error code.
    pub error_code: ErrorCode,
    /// Explanation.
    pub message: &'a str,
    /// The session concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<&'a str>,
    /// The client's message id, if it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a serde_json::Value>,
}

/// `subscribed` acknowledgement.
#[derive(Debug, Clone, Serialize)]
pub struct Subscribed<'a> {
    /// Always `subscribed`.
    pub r#type: &'static str,
    /// Session.
    pub session_id: &'a str,
    /// The stream id that offsets refer to.
    pub stream: &'a str,
    /// True when resuming from `since`; false when a screen comes first.
    pub resumed: bool,
}

/// `unsubscribed` acknowledgement.
#[derive(Debug, Clone, Serialize)]
pub struct Unsubscribed<'a> {
    /// Always `unsubscribed`.
    pub r#type: &'static str,
    /// Session.
    pub session_id: &'a str,
}

/// `pong` answer to `ping`.
#[derive(Debug, Clone, Serialize)]
pub struct Pong<'a> {
    /// Always `pong`.
    pub r#type: &'static str,
    /// The ping's id, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a serde_json::Value>,
}

/// The `terminal_output` message: the reference's fields plus `offset`, `next_offset`,
/// `stream` and, for screens, `snapshot`, `rows`, `cols`.
#[derive(Debug, Clone, Serialize)]
pub struct TerminalOutput<'a> {
    /// Always `terminal_output`.
    pub r#type: &'static str,
    /// Session.
    pub session_id: &'a str,
    /// The output (or, for a snapshot, the screen redrawn as escape sequences).
    pub data: &'a str,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Stream offset of the first byte of `data`.
    pub offset: u64,
    /// Stream offset just past `data`; the `since` to resume from.
    pub next_offset: u64,
    /// The stream id that offsets refer to.
    pub stream: &'a str,
    /// True for a screen snapshot rather than output.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub snapshot: bool,
    /// Screen height of a snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
    /// Screen width of a snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
}

/// The `terminal_gap` message: output between `since` and `offset` cannot be delivered.
#[derive(Debug, Clone, Serialize)]
pub struct TerminalGap<'a> {
    /// Always `terminal_gap`.
    pub r#type: &'static str,
    /// Session.
    pub session_id: &'a str,
    /// Where the client asked to resume.
    pub since: u64,
    /// Where delivery resumes (a snapshot follows).
    pub offset: u64,
    /// The stream id that offsets refer to.
    pub stream: &'a str,
    /// Why the output is missing.
    pub reason: &'a str,
}

/// The `agent_status` message: the reference's fields plus `agent_type` and exit details.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatusMessage<'a> {
    /// Always `agent_status`.
    pub r#type: &'static str,
    /// Session.
    pub session_id: &'a str,
    /// The agent's type.
    pub agent_type: &'a str,
    /// `running`, `idle`, `error`, `exited` or `terminated`.
    pub status: &'static str,
    /// When the agent last printed (RFC 3339).
    pub last_activity: String,
    /// What the agent is doing: `starting`, `working`, `waiting_input`, `needs_approval`,
    /// `idle` or `stuck`.
    pub activity: &'static str,
    /// When that activity began (RFC 3339).
    pub activity_since: String,
    /// Why the daemon thinks so.
    pub evidence: Evidence<'a>,
    /// Exit status, once the process has exited normally.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the process, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<i32>,
}

/// The evidence for an agent's activity.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence<'a> {
    /// `hook` (the CLI reported it), `screen` (its output) or `timer` (time passed).
    pub source: &'static str,
    /// What was seen, e.g. `Stop hook` or `PreToolUse hook: Bash`.
    pub detail: &'a str,
}

/// `claude_response`: the agent's turn ended with this reply.
#[derive(Debug, Clone, Serialize)]
pub struct ClaudeResponse<'a> {
    /// Always `claude_response`.
    pub r#type: &'static str,
    /// Session.
    pub session_id: &'a str,
    /// The reply's text.
    pub content: &'a str,
    /// What the user can do about it (approve a plan, a tool); empty for a plain reply.
    pub actions: Vec<serde_json::Value>,
    /// The `id` of the `user_message` it answers, when the client gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<&'a serde_json::Value>,
    /// When the turn ended (RFC 3339).
    pub timestamp: String,
}

/// `resize_terminal_ack`: the pane now has this size.
#[derive(Debug, Clone, Serialize)]
pub struct ResizeAck<'a> {
    /// Always `resize_terminal_ack`.
    pub r#type: &'static str,
    /// Session.
    pub session_id: &'a str,
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// `tool_decision`: a permission request was answered (`allow`, `deny`) or nobody answered in
/// time (`expired`: the agent asks in its terminal).
#[derive(Debug, Clone, Serialize)]
pub struct ToolDecision<'a> {
    /// Always `tool_decision`.
    pub r#type: &'static str,
    /// Session.
    pub session_id: &'a str,
    /// The request.
    pub request_id: &'a str,
    /// `allow`, `deny` or `expired`.
    pub decision: &'static str,
}

/// `user_message_delivered`: the agent's CLI has received the message.
#[derive(Debug, Clone, Serialize)]
pub struct UserMessageDelivered<'a> {
    /// Always `user_message_delivered`.
    pub r#type: &'static str,
    /// Session.
    pub session_id: &'a str,
    /// The message's `id` (`null` when it had none).
    pub id: &'a Option<serde_json::Value>,
}

/// The `error` message announcing a crashed or vanished agent (`AGENT_CRASHED`).
#[derive(Debug, Clone, Serialize)]
pub struct CrashMessage<'a> {
    /// Always `error`.
    pub r#type: &'static str,
    /// Always `AGENT_CRASHED`.
    pub error_code: ErrorCode,
    /// What happened, for people.
    pub message: String,
    /// Session.
    pub session_id: &'a str,
    /// Exit status, if the process exited normally.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the process, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<i32>,
    /// The last lines of the agent's screen.
    pub last_lines: Vec<String>,
}

/// `user_message_ack` or `terminal_input_ack`: the input has been typed into the pane.
#[derive(Debug, Clone, Serialize)]
pub struct InputAckMessage<'a> {
    /// `user_message_ack` or `terminal_input_ack`.
    pub r#type: &'static str,
    /// Session.
    pub session_id: &'a str,
    /// The client's message id (`null` when it sent none).
    pub id: &'a Option<serde_json::Value>,
}

/// The `error` message for input that could not be typed.
#[derive(Debug, Clone, Serialize)]
pub struct InputErrorMessage<'a> {
    /// Always `error`.
    pub r#type: &'static str,
    /// `SESSION_NOT_FOUND` or `INTERNAL_ERROR`.
    pub error_code: ErrorCode,
    /// Why.
    pub message: &'a str,
    /// Session.
    pub session_id: &'a str,
    /// The client's message id (`null` when it sent none).
    pub id: &'a Option<serde_json::Value>,
}

/// The `task_update` message.
#[derive(Debug, Clone, Serialize)]
pub struct TaskUpdate<'a> {
    /// Always `task_update`.
    pub r#type: &'static str,
    /// The task.
    pub task_id: u64,
    /// Its ticket.
    pub ticket_id: &'a str,
    /// The session working on it.
    pub session_id: &'a str,
    /// The agent type.
    pub agent: &'a str,
    /// The ticket's status.
    pub status: &'static str,
    /// Milliseconds since it started (0 while pending).
    pub elapsed_ms: u64,
    /// The result, once final.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'a TaskResult>,
}

/// The `error` message announcing a task's timeout (`TASK_TIMEOUT`).
#[derive(Debug, Clone, Serialize)]
pub struct TaskTimeoutMessage<'a> {
    /// Always `error`.
    pub r#type: &'static str,
    /// Always `TASK_TIMEOUT`.
    pub error_code: ErrorCode,
    /// What happened, for people.
    pub message: String,
    /// The session working on it.
    pub session_id: &'a str,
    /// Its ticket.
    pub ticket_id: &'a str,
    /// The task.
    pub task_id: u64,
}
