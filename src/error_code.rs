//! The application error codes of the API reference and ours: one vocabulary for HTTP error
//! bodies, WebSocket `error` messages and task results. Which HTTP status goes with which
//! code is `api`'s business.

use serde::{Serialize, Serializer};

/// Application error codes. The first six are the reference's; the rest are ours and are
/// documented in the error table of docs/api.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// JWT missing, malformed, badly signed or expired.
    InvalidToken,
    /// No session with that id.
    SessionNotFound,
    /// The session could not be created.
    AgentSpawnFailed,
    /// An agent's process ended unexpectedly.
    AgentCrashed,
    /// A task ran out of time.
    TaskTimeout,
    /// Too many requests.
    RateLimitExceeded,
    /// The request is malformed or a field is invalid.
    InvalidRequest,
    /// `agent_type` names no configured type.
    InvalidAgentType,
    /// `working_dir` is missing, not a directory, or outside the allowed roots.
    InvalidWorkingDir,
    /// An `env` key or value is refused.
    InvalidEnv,
    /// The token is valid but lacks the scope this needs.
    Forbidden,
    /// No such endpoint.
    NotFound,
    /// The endpoint exists but not with this method.
    MethodNotAllowed,
    /// The request body is too large.
    PayloadTooLarge,
    /// The request head is too large.
    HeadersTooLarge,
    /// The request target is too long.
    UriTooLong,
    /// The client was too slow to send its request.
    RequestTimeout,
    /// A request feature the daemon does not implement.
    NotImplemented,
    /// Past a configured maximum (connections, sessions); try again later.
    Overloaded,
    /// An unexpected failure inside the daemon.
    InternalError,
    /// No task ticket with that id.
    TaskNotFound,
    /// The ticket has already finished (it cannot be cancelled).
    TaskFinished,
    /// The ticket was cancelled through the API.
    TaskCancelled,
    /// The ticket store cannot record anything right now (disk full, store error).
    StoreUnavailable,
    /// A session with the requested name exists already.
    SessionExists,
    /// A cluster request names a host the cluster does not know.
    UnknownHost,
    /// The host a cluster request needs has not reported within
    /// `cluster.unreachable_after`, or did not answer in time.
    HostUnreachable,
    /// Only a lost session (its terminal gone) can be resumed.
    SessionNotLost,
}

impl ErrorCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidToken => "INVALID_TOKEN",
            ErrorCode::SessionNotFound => "SESSION_NOT_FOUND",
            ErrorCode::AgentSpawnFailed => "AGENT_SPAWN_FAILED",
            ErrorCode::AgentCrashed => "AGENT_CRASHED",
            ErrorCode::TaskTimeout => "TASK_TIMEOUT",
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::InvalidAgentType => "INVALID_AGENT_TYPE",
            ErrorCode::InvalidWorkingDir => "INVALID_WORKING_DIR",
            ErrorCode::InvalidEnv => "INVALID_ENV",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::HeadersTooLarge => "HEADERS_TOO_LARGE",
            ErrorCode::UriTooLong => "URI_TOO_LONG",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::NotImplemented => "NOT_IMPLEMENTED",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::TaskNotFound => "TASK_NOT_FOUND",
            ErrorCode::TaskFinished => "TASK_FINISHED",
            ErrorCode::TaskCancelled => "TASK_CANCELLED",
            ErrorCode::StoreUnavailable => "STORE_UNAVAILABLE",
            ErrorCode::SessionExists => "SESSION_EXISTS",
            ErrorCode::UnknownHost => "UNKNOWN_HOST",
            ErrorCode::HostUnreachable => "HOST_UNREACHABLE",
            ErrorCode::SessionNotLost => "SESSION_NOT_LOST",
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}
