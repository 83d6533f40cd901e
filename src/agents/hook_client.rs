//! `orchestra hook EVENT`: the command an agent CLI runs for each of its hooks (Claude Code's
//! `--settings` hooks, installed by the daemon). It forwards the hook's standard input to the
//! daemon over the private hook socket and prints the daemon's answer.
//!
//! It never holds the agent up for long and never fails it: without the session's variables,
//! when the daemon is down, or when it does not answer within the timeout, it exits 0 at
//! once with no output, and the CLI goes on as if there were no hook.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::proto::hook::{HookEvent, encode};

/// The hook socket's path, set in the agent's environment.
pub const SOCKET_ENV: &str = "ORCHESTRA_HOOK_SOCKET";
/// The session's hook credential, set in the agent's environment.
pub const TOKEN_ENV: &str = "ORCHESTRA_HOOK_TOKEN";
/// How long the hook may wait for the daemon, in milliseconds (`hooks.client_timeout`).
pub const TIMEOUT_ENV: &str = "ORCHESTRA_HOOK_TIMEOUT_MS";
/// How long a `PermissionRequest` hook may wait for a user's decision, in milliseconds
/// (`hooks.approval_timeout`, plus the client timeout).
pub const APPROVAL_TIMEOUT_ENV: &str = "ORCHESTRA_HOOK_APPROVAL_TIMEOUT_MS";
/// Used when the timeout variable is missing or unreadable.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes of standard input forwarded; the daemon refuses longer messages anyway.
const MAX_INPUT_BYTES: u64 = 4 << 20;

/// Sends one message on the hook socket at `socket` (then closes the sending side, which
/// ends the message) and returns the daemon's answer, at most `max` bytes. Writing may take
/// `write_timeout`, the answer `answer_timeout`.
pub fn exchange(
    socket: &std::ffi::OsStr,
    message: &[u8],
    write_timeout: Duration,
    answer_timeout: Duration,
    max: u64,
) -> std::io::Result<Vec<u8>> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_write_timeout(Some(write_timeout))?;
    stream.set_read_timeout(Some(answer_timeout))?;
    stream.write_all(message)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = Vec::new();
    stream.take(max).read_to_end(&mut answer)?;
    Ok(answer)
}

/// Runs the hook for `event` (the CLI's event name). Always returns exit code 0.
pub fn run(event: &str) -> i32 {
    let _ = forward(event);
    0
}

fn forward(event: &str) -> Option<()> {
    let event = HookEvent::parse(event)?;
    let socket = std::env::var_os(SOCKET_ENV)?;
    let token = std::env::var(TOKEN_ENV).ok()?;
    let millis = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(Duration::from_millis)
    };
    let timeout = millis(TIMEOUT_ENV).unwrap_or(DEFAULT_TIMEOUT);
    // A permission request waits for a person; everything else only for the daemon.
    let answer_timeout = match event {
        HookEvent::PermissionRequest => millis(APPROVAL_TIMEOUT_ENV).unwrap_or(timeout),
        _ => timeout,
    };
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_INPUT_BYTES)
        .read_to_end(&mut input)
        .ok()?;
    let payload = serde_json::from_slice(&input).unwrap_or(serde_json::Value::Null);
    let message = encode(&token, event, &payload);
    let answer = exchange(&socket, &message, timeout, answer_timeout, 64 * 1024).ok()?;
    // An answer other than `{}` is the hook's output for the CLI (a decision, later).
    let answer = String::from_utf8(answer).ok()?;
    let answer = answer.trim();
    // A refusal (a quota of the session's is full) is no output for the CLI: it goes on as
    // if there were no hook (and asks for a permission in its own terminal).
    if let Ok(serde_json::Value::Object(refused)) = serde_json::from_str(answer)
        && refused.get("ok") == Some(&serde_json::Value::Bool(false))
    {
        let why = refused.get("error").and_then(|e| e.as_str()).unwrap_or("");
        eprintln!("orchestra hook: refused by the daemon: {why}");
        return Some(());
    }
    if !answer.is_empty() && answer != "{}" {
        println!("{answer}");
    }
    Some(())
}
