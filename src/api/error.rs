//! API errors: an application error code, an HTTP status and a message, rendered as
//! `{"error_code": "...", "message": "..."}`.

use std::fmt;

use crate::agents::error::{KillError, SpawnError};
pub use crate::error_code::ErrorCode;
use crate::proto::http::{HttpError, Response};
use crate::tasks::error::TaskError;

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

    /// The answer to a failed spawn: `400` for a bad request, `503 OVERLOADED` while the
    /// daemon is busy, full or stopping, `500` when the session could not be created.
    pub fn from_spawn(error: SpawnError) -> ApiError {
        let message = error.to_string();
        match error {
            SpawnError::UnknownType { .. } => {
                ApiError::new(400, ErrorCode::InvalidAgentType, message)
            }
            SpawnError::InvalidEnv(_) => ApiError::new(400, ErrorCode::InvalidEnv, message),
            SpawnError::NoWorkingDir => ApiError::bad_request(message),
            SpawnError::InvalidWorkingDir(_) => {
                ApiError::new(400, ErrorCode::InvalidWorkingDir, message)
            }
            SpawnError::ShuttingDown => {
                ApiError::new(503, ErrorCode::Overloaded, message).with_header("Retry-After", "5")
            }
            SpawnError::WorkersBusy { pool } => ApiError::workers_busy(pool),
            SpawnError::SessionLimit { .. } => {
                ApiError::new(503, ErrorCode::Overloaded, message).with_header("Retry-After", "5")
            }
            SpawnError::IdTaken(_) => ApiError::internal(message),
            SpawnError::NameTaken(_) => ApiError::new(409, ErrorCode::SessionExists, message),
            SpawnError::InvalidName(_) => ApiError::bad_request(message),
            SpawnError::Failed(_) => ApiError::new(500, ErrorCode::AgentSpawnFailed, message),
            SpawnError::NotFound(id) => ApiError::session_not_found(&id),
            SpawnError::NotLost(_) => ApiError::new(409, ErrorCode::SessionNotLost, message),
        }
    }

    /// The answer to a failed kill: `404 SESSION_NOT_FOUND`.
    pub fn from_kill(error: KillError) -> ApiError {
        match error {
            KillError::NotFound(id) => ApiError::session_not_found(&id),
            KillError::Resuming(_) => {
                let message = error.to_string();
                ApiError::new(503, ErrorCode::Overloaded, message).with_header("Retry-After", "1")
            }
        }
    }

    /// The answer to a refused delegation or cancel: `400` for a bad request, `404` for an
    /// unknown session or task, `409` for a finished task, `503` (with `Retry-After`) while
    /// the daemon is busy, full, stopping or cannot store the ticket.
    pub fn from_task(error: TaskError) -> ApiError {
        let message = error.to_string();
        match error {
            TaskError::Invalid(_) => ApiError::bad_request(message),
            TaskError::UnknownType { .. } | TaskError::NotDelegable { .. } => {
                ApiError::new(400, ErrorCode::InvalidAgentType, message)
            }
            TaskError::InvalidWorkingDir(_) => {
                ApiError::new(400, ErrorCode::InvalidWorkingDir, message)
            }
            TaskError::SessionNotFound(id) => ApiError::session_not_found(&id),
            TaskError::WorkersBusy { pool } => ApiError::workers_busy(pool),
            TaskError::ShuttingDown | TaskError::QueueFull { .. } => {
                ApiError::new(503, ErrorCode::Overloaded, message).with_header("Retry-After", "5")
            }
            TaskError::StoreUnavailable(_) => {
                ApiError::new(503, ErrorCode::StoreUnavailable, message)
                    .with_header("Retry-After", "5")
            }
            TaskError::NotFound(_) => ApiError::new(404, ErrorCode::TaskNotFound, message),
            TaskError::Finished { .. } => ApiError::new(409, ErrorCode::TaskFinished, message),
            TaskError::NotProposed { .. } => ApiError::bad_request(message),
        }
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
        let body = crate::wire::rest::ErrorBody {
            error_code: self.code.as_str(),
            message: &self.message,
        };
        let body = serde_json::to_vec(&body).expect("serializable");
        let mut response = Response::json(self.status, body);
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

    #[test]
    fn layer_errors_map_to_the_reference_statuses_and_codes() {
        let retry = |e: &ApiError| {
            e.headers
                .iter()
                .find(|(k, _)| k == "Retry-After")
                .map(|(_, v)| v.clone())
        };
        let spawns = [
            (
                SpawnError::InvalidEnv("x".into()),
                400,
                ErrorCode::InvalidEnv,
                None,
            ),
            (
                SpawnError::NoWorkingDir,
                400,
                ErrorCode::InvalidRequest,
                None,
            ),
            (
                SpawnError::ShuttingDown,
                503,
                ErrorCode::Overloaded,
                Some("5"),
            ),
            (
                SpawnError::WorkersBusy { pool: "quick" },
                503,
                ErrorCode::Overloaded,
                Some("1"),
            ),
            (
                SpawnError::SessionLimit { live: 2 },
                503,
                ErrorCode::Overloaded,
                Some("5"),
            ),
            (
                SpawnError::IdTaken("s".into()),
                500,
                ErrorCode::InternalError,
                None,
            ),
            (
                SpawnError::Failed("x".into()),
                500,
                ErrorCode::AgentSpawnFailed,
                None,
            ),
        ];
        for (error, status, code, after) in spawns {
            let api = ApiError::from_spawn(error.clone());
            assert_eq!((api.status, api.code), (status, code), "{error:?}");
            assert_eq!(retry(&api).as_deref(), after, "{error:?}");
            assert_eq!(api.message, error.to_string());
        }
        let tasks = [
            (
                TaskError::Invalid("x".into()),
                400,
                ErrorCode::InvalidRequest,
                None,
            ),
            (
                TaskError::InvalidWorkingDir("x".into()),
                400,
                ErrorCode::InvalidWorkingDir,
                None,
            ),
            (
                TaskError::SessionNotFound("s".into()),
                404,
                ErrorCode::SessionNotFound,
                None,
            ),
            (
                TaskError::QueueFull { max: 3 },
                503,
                ErrorCode::Overloaded,
                Some("5"),
            ),
            (
                TaskError::ShuttingDown,
                503,
                ErrorCode::Overloaded,
                Some("5"),
            ),
            (
                TaskError::StoreUnavailable("full".into()),
                503,
                ErrorCode::StoreUnavailable,
                Some("5"),
            ),
            (
                TaskError::NotFound("7".into()),
                404,
                ErrorCode::TaskNotFound,
                None,
            ),
            (
                TaskError::Finished {
                    task_id: 7,
                    state: "completed".into(),
                },
                409,
                ErrorCode::TaskFinished,
                None,
            ),
        ];
        for (error, status, code, after) in tasks {
            let api = ApiError::from_task(error.clone());
            assert_eq!((api.status, api.code), (status, code), "{error:?}");
            assert_eq!(retry(&api).as_deref(), after, "{error:?}");
        }
        let gone = ApiError::from_kill(KillError::NotFound("sess-x".into()));
        assert_eq!((gone.status, gone.code), (404, ErrorCode::SessionNotFound));
    }
}
