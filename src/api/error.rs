//! API errors: an application error code, an HTTP status and a message, rendered as
//! `{"error_code": "...", "message": "..."}`.

use std::fmt;

use crate::proto::http::{HttpError, Response};

/// Application error codes. The first six are the reference's; the rest are ours and are
/// documented in the README's error table.
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
        }
    }
}

/// An error answer: status, code, message and any extra headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Application code.
    pub code: ErrorCode,
    /// Human-readable explanation (never contains a token).
    pub message: String,
    /// Extra headers such as `Allow` or `WWW-Authenticate`.
    pub headers: Vec<(String, String)>,
}

impl ApiError {
    /// An error with no extra headers.
    pub fn new(status: u16, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// `400 INVALID_REQUEST`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, ErrorCode::InvalidRequest, message)
    }

    /// `401 INVALID_TOKEN` with the challenge header.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        let mut error = ApiError::new(401, ErrorCode::InvalidToken, message);
        error.headers.push((
            "WWW-Authenticate".into(),
            "Bearer realm=\"orchestra\"".into(),
        ));
        error
    }

    /// `503 OVERLOADED` with `Retry-After: 1`: the worker pool `pool` that this request
    /// needs has `max_queued_jobs` jobs waiting already.
    pub fn workers_busy(pool: &str) -> ApiError {
        ApiError::new(
            503,
            ErrorCode::Overloaded,
            format!(
                "the daemon's {pool} workers are all busy and their queue is full \
                 (max_queued_jobs); retry shortly"
            ),
        )
        .with_header("Retry-After", "1")
    }

    /// `404 SESSION_NOT_FOUND`.
    pub fn session_not_found(id: &str) -> ApiError {
        ApiError::new(
            404,
            ErrorCode::SessionNotFound,
            format!("no agent session {}", crate::shown(id)),
        )
    }

    /// `400 INVALID_AGENT_TYPE` for `name`, listing the configured types.
    pub fn unknown_agent_type(name: &str, config: &crate::config::Config) -> ApiError {
        let known: Vec<&str> = config.agents.keys().map(String::as_str).collect();
        ApiError::new(
            400,
            ErrorCode::InvalidAgentType,
            format!(
                "unknown agent_type {}; known types: {}",
                crate::shown(name),
                known.join(", ")
            ),
        )
    }

    /// `500 INTERNAL_ERROR`.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, ErrorCode::InternalError, message)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> ApiError {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The HTTP response carrying this error.
    pub fn to_response(&self) -> Response {
        let body = serde_json::json!({ "error_code": self.code.as_str(), "message": self.message });
        let mut response = Response::json(self.status, body.to_string().into_bytes());
        response.headers.extend(self.headers.iter().cloned());
        response
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status,
            self.code.as_str(),
            self.message
        )
    }
}

impl From<&HttpError> for ApiError {
    fn from(error: &HttpError) -> ApiError {
        let code = match error.status() {
            413 => ErrorCode::PayloadTooLarge,
            414 => ErrorCode::UriTooLong,
            431 => ErrorCode::HeadersTooLarge,
            501 => ErrorCode::NotImplemented,
            _ => ErrorCode::InvalidRequest,
        };
        ApiError::new(error.status(), code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_reference_error_body() {
        let response = ApiError::unauthorized("token expired").to_response();
        assert_eq!(response.status, 401);
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["error_code"], "INVALID_TOKEN");
        assert_eq!(body["message"], "token expired");
        assert!(
            response
                .headers
                .iter()
                .any(|(k, _)| k == "WWW-Authenticate")
        );
    }

    #[test]
    fn decode_errors_keep_their_status() {
        let error = ApiError::from(&HttpError::BodyTooLarge);
        assert_eq!(
            (error.status, error.code),
            (413, ErrorCode::PayloadTooLarge)
        );
    }
}
