//! Orchestra: a daemon that runs AI coding agents in tmux sessions and lets people and other
//! agents drive and watch them over an authenticated HTTP + WebSocket API.
//!
//! # Code map
//!
//! | module | owns | never does |
//! |---|---|---|
//! | [`config`] | the TOML format, defaults and every named limit | start anything |
//! | [`server`] | the `mio` event loop: accepting, driving HTTP and WebSocket connections, delivering output, timers, signals | block, decode JSON |
//! | [`net`] | client connections: buffers, phases, outbound queues of owned and shared chunks | pick status codes or decode JSON |
//! | [`proto`] | pure wire code: HTTP decoder and encoder, WebSocket upgrade check and frames | I/O, clocks |
//! | [`api`] | routing, JWT auth and scopes, handlers, JSON wire types, error codes, WebSocket message semantics | touch sockets |
//! | [`daemon`] | loop-owned state: agents, pane sources, the hub, deadlines, replies waiting to be written | touch client sockets |
//! | [`agents`] | sessions: registry, status and its events, spawn/kill/adopt, /proc metrics, input validation | run tmux directly |
//! | [`panes`] | the output and input path: pipe hand-over, capture, backlog, UTF-8, fanout hub, emulator thread, typing | parse HTTP |
//! | [`tmux`] | the only code that runs tmux: argv building, output parsing, timeouts | accept user text as an argument |
//! | [`tasks`] | delegated tasks: tickets, queue, lifecycle and restart rules, the redb store (its own thread), prompts, workspace diffs and test runs (off the loop) | touch sockets, run tmux directly |
//! | [`environment`] | what children inherit: the daemon's own `ORCHESTRA_*` variables are erased at start and never passed on | decide what an agent's request may set |
//! | [`jobs`] | bounded pools of worker threads (quick tmux and /proc work, kills, git) and the continuation channel back to the loop | touch loop state |
//! | [`sys`] | the only `unsafe`: pidfd, signals, `SCM_RIGHTS`, socket and scheduling options, rlimits | know about agents |
//!
//! # How a request flows
//!
//! socket → [`net::Connection::fill`] → [`proto::http::RequestDecoder`] → [`api::handle`]
//! (auth, route) → handler → [`agents::manager`] → a job on a worker ([`jobs::JobPool`]) runs
//! tmux ([`tmux::Tmux::run`]) → the job's continuation comes back through a channel and the
//! `mio::Waker` → [`daemon::Daemon::reply`] → the server writes the response in request
//! order.
//!
//! # How a pane's bytes flow
//!
//! The agent writes to its pty → tmux → `pipe-pane -I -O` socketpair, set up in the same
//! tmux command list as `new-session` so no output is lost → `orchestra pipe-attach` hands
//! the socket to the daemon over `SCM_RIGHTS` ([`panes::attach`]) → the socket is registered
//! in the event loop and read whenever output arrives ([`panes::capture`]) → [`panes::hub`]
//! appends the chunk to the pane's backlog and encodes its `terminal_output` frame once →
//! each viewer with room in its send window pulls the frames after its cursor
//! ([`server`]) → socket. The same chunk is handed to the emulator thread
//! ([`panes::emulator`]), which keeps the screen for snapshots without ever holding up the
//! loop. Typing goes back through the same socket ([`panes::typing`]).
//!
//! # How a delegated task flows
//!
//! `POST /api/delegate` → [`tasks::lifecycle::delegate`] validates it (directory checks on
//! a worker) → the ticket goes to the store thread ([`tasks::store`]), and the request is
//! answered once it is durable → [`tasks::lifecycle::schedule`] starts queued tickets as
//! slots free up: the workspace (worktree, baseline) is prepared on a worker, the baseline
//! stored, and the agent's `headless` command spawned as an ordinary session → the session's
//! exit (or a timeout, cancel or kill) → a verification thread reads the pane history,
//! diffs the working tree ([`tasks::workspace`]) and runs the tests ([`tasks::verify`]) →
//! the result is stored and announced as `task_update`.
//!
//! # Architecture invariants
//!
//! - The event loop never blocks: tmux, /proc and signal waits run on workers (slow git and
//!   kills on pools of their own, so they never delay quick work), every
//!   cross-thread result wakes the loop in the same call that queues it, and the loop shares
//!   no lock with any thread.
//! - Only [`tmux`] spawns tmux, and no text from an API request is ever a tmux argument:
//!   session names are built by the daemon, targets are exact (`=name:`, `%N`), the agent's
//!   argv, environment and directory travel in a private spec file read by
//!   `orchestra agent-exec`, and typed text goes through the pane's pipe.
//! - The reader never waits for a viewer; each chunk is encoded once; memory per pane and per
//!   viewer is bounded by configured limits.
//! - Responses on a connection go out in request order.
//! - Secrets and tokens are never logged; request log lines carry the path without its query.

pub mod agents;
pub mod api;
pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod environment;
pub mod error_code;
#[doc(hidden)]
pub mod fuzzing;
pub mod jobs;
pub mod logging;
pub mod net;
pub mod panes;
pub mod proto;
pub mod server;
pub mod sys;
pub mod tasks;
pub mod time;
pub mod timers;
pub mod tmux;
pub mod wire;

/// Creates `dir` (and parents) if needed, with mode 0700 for what it creates.
pub fn create_private_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))
}

/// `text` quoted for an error message or log line, cut to its first 100 characters so that
/// huge request values are never echoed or logged whole.
pub fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 100;
    match text.char_indices().nth(MAX_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

/// `text` cut to its first 300 characters (for messages that quote request data, such as
/// a JSON parser's error).
pub fn bounded(text: &str) -> String {
    const MAX_CHARS: usize = 300;
    match text.char_indices().nth(MAX_CHARS) {
        None => text.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shown_text_is_quoted_and_bounded() {
        assert_eq!(super::bounded("short"), "short");
        assert!(super::bounded(&"x".repeat(5000)).len() < 400);
        assert_eq!(super::shown("a\"b"), "\"a\\\"b\"");
        let long = "é".repeat(1000);
        let out = super::shown(&long);
        assert!(out.len() < 300 && out.ends_with("(2000 bytes)"), "{out}");
    }
}
