//! The commands that talk to a running daemon over its API (`orchestra agents`, `send`,
//! `attach`, `delegate`, `tasks`, `open`): where the daemon is, who we are, the calls, how
//! answers are shown, and the exit codes. Nothing here runs inside the daemon.

pub mod attach;
pub mod commands;
pub mod output;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::client::{Answer, ApiStream, ConnectError, DaemonUrl, Endpoint, error_line, request};
use crate::config::{Config, Overrides, default_config_file};

/// Exit codes of the client commands (documented in docs/cli.md and `--help`).
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// The daemon refused the request (bad input, conflict, overload) or it failed.
    pub const FAILED: u8 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: u8 = 2;
    /// No such session or task.
    pub const NOT_FOUND: u8 = 3;
    /// The token was refused or lacks the scope.
    pub const AUTH: u8 = 4;
    /// The daemon cannot be reached.
    pub const UNREACHABLE: u8 = 5;
    /// `tasks wait` / `delegate --wait`: the task failed.
    pub const TASK_FAILED: u8 = 6;
    /// `tasks wait` / `delegate --wait`: the task timed out.
    pub const TASK_TIMEOUT: u8 = 7;
    /// `tasks wait` / `delegate --wait`: the task was cancelled.
    pub const TASK_CANCELLED: u8 = 8;
}

/// A command's failure: what to print and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Exit code (see [`exit`]).
    pub code: u8,
    /// One line for stderr.
    pub message: String,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// Where the daemon is and who the command acts as.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Target {
    /// The daemon's URL, for a daemon reached over TCP with --token (default: the local
    /// daemon through its socket in the state dir, with no token).
    #[arg(long, value_name = "URL", env = "ORCHESTRA_URL", global = true)]
    pub url: Option<String>,
    /// API token, sent only after the daemon at --url proved it can verify it (default: no
    /// token; the local daemon's socket needs none).
    #[arg(
        long,
        value_name = "JWT",
        env = "ORCHESTRA_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// Config file (default: ~/.config/orchestra/config.toml if it exists).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// State directory of the local daemon (where its socket is).
    #[arg(long, value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,
    /// Send --token to --url without first asking the server to prove it holds the
    /// token's key (only for daemons that verify tokens with a public key, which cannot).
    #[arg(long, global = true)]
    pub trust_url: bool,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A resolved daemon: where it is and how the command authenticates.
#[derive(Debug, Clone)]
pub struct Api {
    /// Where the daemon is.
    pub endpoint: Endpoint,
    /// Print JSON.
    pub json: bool,
}

/// How long one API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Target {
    /// Resolves where the daemon is: with a token (flag or environment), over TCP to --url
    /// or the config's listen address; without one, the local daemon's socket in the state
    /// dir (the config's, or --state-dir).
    pub fn resolve(&self) -> Result<Api, Failure> {
        let parse = |url: &str| DaemonUrl::parse(url).map_err(|e| Failure::new(exit::USAGE, e));
        let token = self
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let endpoint = match (&self.url, token) {
            (Some(url), Some(token)) => Endpoint::Remote {
                url: parse(url)?,
                token: token.to_string(),
                trust_url: self.trust_url,
            },
            (url, token) => {
                let config = self.config()?;
                match (url, token) {
                    (_, Some(token)) => Endpoint::Remote {
                        url: DaemonUrl::local(config.listen),
                        token: token.to_string(),
                        trust_url: self.trust_url,
                    },
                    (Some(url), None) => {
                        return Err(Failure::new(
                            exit::USAGE,
                            format!(
                                "--url {url} needs --token (or ORCHESTRA_TOKEN) for that \
                                 daemon; on the daemon's own host leave out --url, and the \
                                 command uses its socket {} with no token",
                                config.api_socket().display()
                            ),
                        ));
                    }
                    (None, None) => Endpoint::Local {
                        socket: config.api_socket(),
                    },
                }
            }
        };
        Ok(Api {
            endpoint,
            json: self.json,
        })
    }

    /// The local config (file and --state-dir).
    fn config(&self) -> Result<Config, Failure> {
        let path = self.config.clone().or_else(default_config_file);
        let overrides = Overrides {
            listen: None,
            state_dir: self.state_dir.clone(),
        };
        Config::load(path.as_deref(), &overrides)
            .map_err(|e| Failure::new(exit::USAGE, e.to_string()))
    }
}

/// The failure a connection error means: unreachable (5), or a server that did not prove
/// it can verify the token (4).
pub fn connect_failure(error: ConnectError) -> Failure {
    match error {
        ConnectError::Unreachable(message) => Failure::new(exit::UNREACHABLE, message),
        ConnectError::Unproven(message) => Failure::new(exit::AUTH, message),
    }
}

impl Api {
    /// One API call; a JSON answer on success, else a failure with the API's error code and
    /// message and the matching exit code.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let body = body.map(|b| b.to_string());
        let answer = request(
            &self.endpoint,
            method,
            path,
            body.as_deref().map(str::as_bytes),
            CALL_TIMEOUT,
        )
        .map_err(connect_failure)?;
        if (200..300).contains(&answer.status) {
            return serde_json::from_slice(&answer.body).map_err(|e| {
                Failure::new(
                    exit::FAILED,
                    format!("the daemon's answer is not JSON: {e}"),
                )
            });
        }
        Err(failure_of(&answer))
    }

    /// `GET`.
    pub fn get(&self, path: &str) -> Result<Value, Failure> {
        self.call("GET", path, None)
    }
}

/// The failure an error answer means, with a hint where one helps.
pub fn failure_of(answer: &Answer) -> Failure {
    let line = error_line(answer);
    let code = match answer.status {
        404 => exit::NOT_FOUND,
        401 | 403 => exit::AUTH,
        _ => exit::FAILED,
    };
    let hint = match answer.status {
        401 => " (has the token expired? `orchestra token` on the daemon's host prints a new one)",
        403 if line.contains("scope") => " (this needs a control token)",
        _ => "",
    };
    Failure::new(code, format!("{line}{hint}"))
}

/// Percent-encodes a path segment (session and task ids are plain, but be safe).
pub fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A WebSocket to `/ws/observe` (with the token, over TCP, once the server proved it can
/// verify it), with `timeout` on reads (none: block).
pub fn websocket(
    api: &Api,
    timeout: Option<Duration>,
) -> Result<tungstenite::WebSocket<ApiStream>, Failure> {
    use tungstenite::client::IntoClientRequest;
    let unreachable = |e: String| {
        Failure::new(
            exit::UNREACHABLE,
            format!(
                "cannot open a WebSocket to {}: {e} (is the daemon running? start it with \
                 `orchestra serve`, or `cargo run --release -- serve` in a checkout)",
                api.endpoint.describe()
            ),
        )
    };
    let stream = api
        .endpoint
        .connect(CALL_TIMEOUT)
        .map_err(connect_failure)?;
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(None))
        .map_err(|e| unreachable(e.to_string()))?;
    let mut request = format!("ws://{}/ws/observe", api.endpoint.authority())
        .into_client_request()
        .map_err(|e| unreachable(e.to_string()))?;
    if let Some(authorization) = api.endpoint.authorization() {
        let value = authorization
            .parse()
            .map_err(|_| Failure::new(exit::AUTH, "the token is not a valid header value"))?;
        request.headers_mut().insert("Authorization", value);
    }
    match tungstenite::client(request, stream) {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            let body = response.body().clone().unwrap_or_default();
            Err(failure_of(&Answer { status, body }))
        }
        Err(e) => Err(unreachable(e.to_string())),
    }
}

/// The next JSON text message, or why there is none (on a socket without a read timeout).
pub fn next_message(socket: &mut tungstenite::WebSocket<ApiStream>) -> Result<Value, Failure> {
    loop {
        if let Some(message) = poll_message(socket)? {
            return Ok(message);
        }
    }
}

/// Like [`next_message`], but `None` once the socket's read timeout passes with nothing
/// read (the socket stays usable).
pub fn poll_message(
    socket: &mut tungstenite::WebSocket<ApiStream>,
) -> Result<Option<Value>, Failure> {
    loop {
        match socket.read() {
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Ok(tungstenite::Message::Text(text)) => {
                if let Ok(value) = serde_json::from_str::<Value>(text.as_str()) {
                    return Ok(Some(value));
                }
            }
            Ok(tungstenite::Message::Close(frame)) => {
                let why = frame
                    .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                    .unwrap_or_default();
                return Err(Failure::new(
                    exit::UNREACHABLE,
                    format!("the daemon closed the connection {why}"),
                ));
            }
            Ok(_) => {}
            Err(e) => {
                return Err(Failure::new(
                    exit::UNREACHABLE,
                    format!("lost the connection to the daemon: {e}"),
                ));
            }
        }
    }
}

/// Sends one JSON message.
pub fn send_message(
    socket: &mut tungstenite::WebSocket<ApiStream>,
    message: &Value,
) -> Result<(), Failure> {
    socket
        .send(tungstenite::Message::text(message.to_string()))
        .map_err(|e| Failure::new(exit::UNREACHABLE, format!("cannot send to the daemon: {e}")))
}

/// An `error` message as a failure (codes mapped like HTTP errors).
pub fn ws_failure(message: &Value) -> Failure {
    let code = message["error_code"].as_str().unwrap_or("ERROR");
    let text = message["message"].as_str().unwrap_or("");
    let exit_code = match code {
        "SESSION_NOT_FOUND" | "TASK_NOT_FOUND" => exit::NOT_FOUND,
        "INVALID_TOKEN" | "FORBIDDEN" => exit::AUTH,
        _ => exit::FAILED,
    };
    Failure::new(exit_code, format!("{code}: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_exit_codes_with_hints() {
        let answer = |status, code: &str| Answer {
            status,
            body: format!(r#"{{"error_code":"{code}","message":"m"}}"#).into_bytes(),
        };
        assert_eq!(
            failure_of(&answer(404, "SESSION_NOT_FOUND")).code,
            exit::NOT_FOUND
        );
        let auth = failure_of(&answer(401, "INVALID_TOKEN"));
        assert_eq!(auth.code, exit::AUTH);
        assert!(auth.message.starts_with("INVALID_TOKEN: m (has the token"));
        assert_eq!(failure_of(&answer(403, "FORBIDDEN")).code, exit::AUTH);
        assert_eq!(
            failure_of(&answer(409, "SESSION_EXISTS")).code,
            exit::FAILED
        );
        assert_eq!(failure_of(&answer(503, "OVERLOADED")).code, exit::FAILED);
        assert_eq!(
            ws_failure(&serde_json::json!({"error_code": "SESSION_NOT_FOUND", "message": "x"})),
            Failure::new(exit::NOT_FOUND, "SESSION_NOT_FOUND: x")
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("sess-a_b.1"), "sess-a_b.1");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
