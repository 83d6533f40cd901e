//! Orchestra: a daemon that runs AI coding agents in tmux sessions (or pseudo-terminals of its
//! own) and lets people and other agents drive and watch them over an authenticated HTTP +
//! WebSocket API.
//!
//! # Code map
//!
//! One thread runs the `mio` event loop ([`server`]) and owns a [`daemon::Daemon`]: the shared
//! context ([`ctx::Ctx`]) and four parts, each owning its state behind methods:
//! [`panes::Panes`] < [`agents::Agents`] < [`tasks::Tasks`] < [`api::ApiState`]. A part's code
//! gets a view of what it may reach, never the daemon: its own state, the parts below it and
//! the context ([`agents::Parts`], [`tasks::Parts`], [`api::Parts`]; panes get
//! `(&mut Panes, &mut Ctx)`). News travels up as events ([`panes::pane::PaneEvent`],
//! [`agents::AgentEvent`]) that [`dispatch`] routes, and a callback a higher part passed
//! down ([`ctx::Done`]) is handed back with [`ctx::Ctx::finish`].
//!
//! | module | owns | never does |
//! |---|---|---|
//! | [`server`] | the `mio` event loop: accepting, driving HTTP and WebSocket connections, delivering output, signals | block, decode JSON |
//! | [`dispatch`] | who reacts to a ready source, a due timer, a closed connection, a pane's or an agent's event | hold state |
//! | [`daemon`] | the composition: the context and the four parts (private), the views of them, and how a continuation finds its part | decide, touch client sockets |
//! | [`ctx`] | what every part shares: configuration, the poller's registry and the daemon's event sources, deadlines, worker pools, the tmux handle, outboxes for replies and WebSocket frames, metrics, shutdown; [`ctx::then`] and [`ctx::done`] make a continuation or a callback that runs on one part's view of an opaque [`ctx::World`] | decide anything, name a part or the daemon |
//! | [`panes`] | [`panes::Panes`]: every pane's capture (pipe hand-over, reading, re-arming), backlog, UTF-8, fanout hub, emulator thread, typing, the `pty` holder link; announces [`panes::pane::PaneEvent`]s | see the daemon or another part, parse HTTP |
//! | [`agents`] | [`agents::Agents`]: sessions, status and activity with evidence, CLI hooks (Claude Code's settings, Gemini CLI's per-session home, Codex's `-c` overrides with their trust, the hook socket, held permission requests and key-answered dialogs), tool calls waiting, conversations, spawn/kill/adopt (tmux session commands through [`tmux::Tmux`] on workers), records of API-spawned sessions and resuming the ones lost with their terminal ([`agents::resume`]), /proc metrics, input validation; announces [`agents::AgentEvent`]s | call into tasks or the API |
//! | [`tasks`] | [`tasks::Tasks`]: delegated tasks: tickets, queue, lifecycle and restart rules, the redb store (its own thread), prompts, workspace diffs and test runs (off the loop); reads panes through [`panes::pane_text::PaneText`]; `tasks::git` builds every git call the daemon makes, so that no repository configuration runs a program | touch sockets, run tmux |
//! | [`api`] | [`api::ApiState`]: routing, JWT auth and scopes, rate limits, browser logins (session cookies, CSRF checks) and the embedded dashboard (`src/web/`), handlers, mapping every layer's errors to HTTP, WebSocket message semantics | touch sockets |
//! | [`cluster`] | [`cluster::Cluster`]: the other hosts of a cluster as their records say, forwards and viewer stand-ins waiting, the ticket queue as this host sees it ([`cluster::queue`]: pure claim and takeover rules), and the NATS link on its own thread ([`cluster::link`], sealed messages: [`cluster::seal`]); what its events mean is [`api::peer`]'s and, for tickets, [`api::queue`]'s | know another part, block the loop |
//! | [`calls`] | the daemon's tools for agents (`orchestra mcp`): list agents and tasks, delegate, message, propose plans, in the calling session's name | touch sockets other than through [`ctx::Ctx::answer`] |
//! | [`net`] | client connections (TCP, and the local API socket `<state_dir>/api.sock`): buffers, phases, outbound queues of owned and shared chunks; the private Unix sockets' accept and non-blocking writes ([`net::unix`]) | pick status codes or decode JSON |
//! | [`proto`] | pure wire code: HTTP decoder and encoder, WebSocket upgrade check and frames, the hand-written `terminal_output` frame, hook socket messages, pty holder frames, server proofs | I/O, clocks |
//! | [`wire`] | every JSON shape: REST bodies, WebSocket messages both ways, task shapes shared with the store | logic |
//! | [`principal`] | who a request speaks for: subject and scopes | verify anything |
//! | [`error_code`] | the reference's error codes and ours | pick HTTP statuses |
//! | [`config`] | the TOML format, defaults and every named limit | start anything, know a feature |
//! | [`client`] | the blocking HTTP client of the commands that talk to a running daemon: the local socket without a token, or TCP with a token sent only after the server's proof | run inside the daemon |
//! | [`cli`] | the commands that talk to a running daemon (`agents`, `send`, `attach`, `delegate`, `tasks`): resolving where the daemon is, tables, exit codes | run inside the daemon |
//! | [`tmux`] | the only code that runs tmux: argv building, output parsing, timeouts, typed errors | accept user text as an argument |
//! | [`pty`] | the `pty` backend's process boundary: the holder (`orchestra pty-hold`) that owns an agent's pseudo-terminal and process, and the daemon's side of its hand-over | read output while a daemon is attached |
//! | [`environment`] | what children inherit: the daemon's own `ORCHESTRA_*` variables are erased at start and never passed on | decide what an agent's request may set |
//! | [`metrics`] | counters and histograms for `GET /metrics` and their Prometheus text; the loop's are plain integers, threads' are atomics | lock or allocate per byte |
//! | [`jobs`] | bounded pools of worker threads (quick tmux and /proc work, kills, git) and the continuation channel back to the loop | touch loop state |
//! | [`timers`], [`time`] | deadlines on the loop's monotonic clock; RFC 3339 times | know what a deadline means |
//! | [`sys`] | the only `unsafe`: pidfd, signals, `SCM_RIGHTS`, socket and scheduling options, rlimits | know about agents |
//!
//! # Who may import whom
//!
//! Checked by the unit tests `modules_import_only_what_the_code_map_allows` and
//! `parts_reach_only_the_parts_below_them` below:
//! - [`proto`] and [`principal`] import nothing of ours; [`wire`] only [`error_code`];
//!   [`client`] only [`proto`] (the server proof both sides compute).
//! - The tools ([`tmux`], [`pty`], [`jobs`], [`timers`], [`sys`], [`time`], [`environment`],
//!   [`metrics`]) import no feature; [`config`] and [`net`] import no feature either.
//! - No part names the daemon: [`ctx`], [`panes`], [`agents`], [`tasks`], [`calls`] and
//!   [`api`] never import [`daemon`]. Their continuations run on their own view
//!   ([`ctx::then`]); [`panes`] never names another part. [`agents`] never touches tasks or the
//!   API, and [`tasks`] never the API: agents announce events, tasks follow.
//! - Nothing below [`api`] imports it: each layer has its own error enum
//!   ([`tmux::TmuxError`], [`agents::error::SpawnError`], [`tasks::error::TaskError`]) and
//!   `api` maps them to HTTP.
//! - Only [`server`] imports [`dispatch`], and only they use [`daemon::Daemon`].
//! - No import circle between modules (`the_module_graph_has_no_circle`).
//!
//! # How a request flows
//!
//! socket → [`net::Connection::fill`] → [`proto::http::RequestDecoder`] → [`api::handle`]
//! (auth, route) → handler → [`agents::manager`] → a job on a worker ([`jobs::JobPool`]) runs
//! tmux ([`tmux::Tmux::run`]) → the job's continuation comes back through a channel and the
//! `mio::Waker` → [`ctx::Ctx::reply`] → the server writes the response in request order.
//!
//! # How a pane's bytes flow
//!
//! The agent writes to its pty → tmux → `pipe-pane -I -O` socketpair, set up in the same
//! tmux command list as `new-session` so no output is lost → `orchestra pipe-attach` hands
//! the socket to the daemon over `SCM_RIGHTS` ([`panes::attach`]) → the socket is a
//! [`ctx::Source::PanePipe`] in the event loop; when it is readable, [`dispatch`] calls
//! [`panes::Panes::on_pipe_ready`], which reads it ([`panes::capture`]) → [`panes::hub`]
//! appends the chunk to the pane's backlog and encodes its `terminal_output` frame once →
//! each viewer with room in its send window pulls the frames after its cursor
//! ([`panes::Panes::pull`], called by [`server`]) → socket. After the frames are written the
//! same chunk goes to the emulator thread ([`panes::emulator`], [`panes::Panes::after_delivery`]),
//! which keeps the screen for snapshots without ever holding up the loop. The read announces
//! [`panes::pane::PaneEvent::Output`]; [`dispatch`] hands it to agents (activity, status).
//! Typing goes back through the same socket ([`panes::typing`]). A pane that has more than
//! a read takes is a flood: each loop turn reads floods last, from one shared budget, and
//! between two floods' reads handles whatever else became ready ([`panes::read_turns`]), so
//! a keystroke and its echo never wait behind a turn of flood reads.
//!
//! A session of the `pty` backend skips tmux: its holder ([`pty::holder`]) hands the
//! pseudo-terminal's master to the daemon over `SCM_RIGHTS` ([`pty::link`]), and the master is
//! read and written in the event loop exactly like the pipe above
//! ([`net::pane_io::PaneIo`]); what is read is also forwarded to the holder's replay, and
//! screen checkpoints let it drop the replay ([`panes::holder_link`]). The holder's
//! connection carries exits ([`agents::pty_session`]).
//!
//! # How an agent's exit reaches a task
//!
//! The exit pidfd fires → [`dispatch::source_event`] → [`agents::manager`] reads the exit
//! status on a worker → its continuation records it and announces
//! [`agents::AgentEvent::StatusChanged`] and [`agents::AgentEvent::Exited`] → right after
//! that continuation the loop runs [`dispatch::agent_events`], which broadcasts
//! `agent_status` to observers and hands the exit to [`tasks::lifecycle::on_agent_exit`],
//! which finishes the task. Kills and vanished panes announce
//! [`agents::AgentEvent::Gone`] the same way; crashes announce
//! [`agents::AgentEvent::Crashed`].
//!
//! # How a delegated task flows
//!
//! `POST /api/delegate` → [`tasks::lifecycle::delegate`] validates it (directory checks on
//! a worker) → the ticket goes to the store thread ([`tasks::store`]), and the request is
//! answered once it is durable → [`tasks::lifecycle::schedule`] starts queued tickets as
//! slots free up: the workspace (worktree, baseline) is prepared on a worker, the baseline
//! stored, and the agent's `headless` command spawned as an ordinary session → the session's
//! exit (or a timeout, cancel or kill) → a verification thread reads the pane's text
//! ([`panes::pane_text::PaneText`]), diffs the working tree ([`tasks::workspace`]) and runs
//! the tests ([`tasks::verify`]) → the result is stored and announced as `task_update`.
//!
//! # Architecture invariants
//!
//! - The event loop never blocks: tmux, /proc and signal waits run on workers (slow git and
//!   kills on pools of their own, so they never delay quick work), every
//!   cross-thread result wakes the loop in the same call that queues it, and the loop shares
//!   no lock with any thread.
//! - No socket write is cut short or waits: client connections queue what the socket does
//!   not take; answers on the private sockets wait as [`ctx::Source::Answer`]s.
//! - Only [`tmux`] spawns tmux, and no text from an API request is ever a tmux argument:
//!   session names are built by the daemon, targets are exact (`=name:`, `%N`), the agent's
//!   argv, environment and directory travel in a private spec file read by
//!   `orchestra agent-exec`, and typed text goes through the pane's pipe.
//! - The reader never waits for a viewer; each chunk is encoded once; memory per pane and per
//!   viewer is bounded by configured limits.
//! - Responses on a connection go out in request order.
//! - Secrets and tokens are never logged; request log lines carry the path without its query.
//! - No credential the daemon accepts is sent to a process that is not the daemon: local
//!   commands use `<state_dir>/api.sock` without a token, remote ones send a token only after
//!   `POST /api/server-proof` ([`proto::proof`]); no secret or task prompt is ever on a
//!   command line.

pub mod agents;
pub mod api;
pub mod calls;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod ctx;
pub mod daemon;
pub mod dispatch;
pub mod environment;
pub mod error_code;
#[doc(hidden)]
pub mod fuzzing;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod panes;
pub mod principal;
pub mod proto;
pub mod pty;
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
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The top-level modules a source text refers to as `crate::name`, also inside
    /// `use crate::{a, b::c}` groups; comments are skipped.
    fn crate_references(source: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for line in source.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let mut depth = 0;
                    let mut item = String::new();
                    let mut take = true;
                    for c in group.chars() {
                        match c {
                            '{' => depth += 1,
                            '}' if depth == 0 => break,
                            '}' => depth -= 1,
                            ',' if depth == 0 => {
                                found.insert(std::mem::take(&mut item));
                                take = true;
                                continue;
                            }
                            ':' => take = false,
                            c if take && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                                item.push(c)
                            }
                            _ => {}
                        }
                    }
                    found.insert(item);
                } else {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    found.insert(name);
                }
            }
        }
        found.retain(|name| !name.is_empty());
        found
    }

    /// Every `.rs` file under `dir` (or `dir.rs` itself), with its text.
    fn sources(module: &str) -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        let single = root.join(format!("{module}.rs"));
        if single.exists() {
            files.push(single);
        }
        let mut dirs = vec![root.join(module)];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        assert!(!files.is_empty(), "no sources for module {module}");
        files
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).unwrap();
                (path.display().to_string(), text)
            })
            .collect()
    }

    /// The code of `text` without comments and with no whitespace around `.`, so that a
    /// chain split over lines reads `daemon.tasks.book`.
    fn joined_code(text: &str) -> String {
        let code: Vec<&str> = text
            .lines()
            .map(|line| line.split("//").next().unwrap_or(""))
            .collect();
        let mut joined = code.join(" ");
        while joined.contains(" .") || joined.contains(". ") {
            joined = joined.replace(" .", ".").replace(". ", ".");
        }
        joined
    }

    #[test]
    fn parts_reach_only_the_parts_below_them() {
        // Each part's state is private to its module, and no part sees the daemon: its code
        // gets a view (`agents::Parts`, `tasks::Parts`, `api::Parts`) with its own part, the
        // parts below it (panes < agents < tasks < api) and the context. Continuations name
        // the part they run on (`ctx::then`, `ctx::done`), never the daemon.
        let parts: &[&str] = &["Daemon", "daemon."];
        let rules: [(&str, &[&str]); 6] = [
            ("ctx", parts),
            ("panes", parts),
            ("agents", parts),
            ("tasks", parts),
            ("calls", parts),
            ("api", parts),
        ];
        let mut broken = Vec::new();
        for (module, forbidden) in rules {
            for (file, text) in sources(module) {
                let code = joined_code(&text);
                for word in forbidden {
                    let ident = |c: char| c.is_alphanumeric() || c == '_';
                    let found = code.match_indices(word).any(|(at, _)| {
                        let before = code[..at].chars().next_back().is_none_or(|c| !ident(c));
                        let after = code[at + word.len()..].chars().next();
                        before && (word.ends_with('.') || after.is_none_or(|c| !ident(c)))
                    });
                    if found {
                        broken.push(format!("{file} uses {word}"));
                    }
                }
            }
        }
        assert!(broken.is_empty(), "{}", broken.join("\n"));
        assert_eq!(joined_code("a\n  .b // c.d\n . e"), "a.b.e");
    }

    #[test]
    fn crate_references_are_found_in_paths_and_use_groups() {
        let text = "use crate::agents::{AgentEvent, manager};\n\
                    use crate::{daemon::Daemon, net};\n\
                    // crate::api in a comment does not count\n\
                    let x = crate::tasks::lifecycle::schedule(d); crate::sys::kill(1, 2);";
        let found: Vec<String> = crate_references(text).into_iter().collect();
        assert_eq!(found, ["agents", "daemon", "net", "sys", "tasks"]);
    }

    /// The layering the code map states: each rule names modules and what they must not
    /// import. A new import that breaks one fails here, with the file that has it.
    #[test]
    fn modules_import_only_what_the_code_map_allows() {
        let everything_ours = [
            "agents",
            "api",
            "calls",
            "cli",
            "client",
            "cluster",
            "config",
            "ctx",
            "daemon",
            "dispatch",
            "environment",
            "error_code",
            "jobs",
            "logging",
            "metrics",
            "net",
            "panes",
            "proto",
            "server",
            "sys",
            "tasks",
            "time",
            "timers",
            "tmux",
            "pty",
            "principal",
            "wire",
            "fuzzing",
        ];
        let except = |allowed: &[&str]| -> Vec<&str> {
            everything_ours
                .iter()
                .copied()
                .filter(|m| !allowed.contains(m))
                .collect()
        };
        let features = [
            "agents", "panes", "tasks", "api", "calls", "daemon", "dispatch", "server",
        ];
        let rules: Vec<(&[&str], Vec<&str>, &str)> = vec![
            (&["proto"], except(&["proto"]), "proto is pure wire code"),
            (
                &["principal"],
                except(&[]),
                "who a request speaks for is plain data",
            ),
            (
                &["config"],
                [features.as_slice(), &["ctx", "net"]].concat(),
                "the configuration knows no feature: features read it",
            ),
            (
                &["net"],
                [features.as_slice(), &["ctx"]].concat(),
                "connections carry a principal without knowing how it was verified",
            ),
            (
                &["panes"],
                vec![
                    "daemon", "agents", "tasks", "api", "calls", "dispatch", "server",
                ],
                "panes see their own part and the context; what they do for others is a PaneEvent",
            ),
            (
                &["client"],
                except(&["proto"]),
                "the CLI's client stands alone, outside the daemon (it shares pure wire code)",
            ),
            (
                &["error_code", "wire"],
                except(&["error_code", "wire"]),
                "wire shapes are plain data",
            ),
            (
                &[
                    "tmux",
                    "pty",
                    "jobs",
                    "timers",
                    "sys",
                    "time",
                    "environment",
                    "metrics",
                ],
                features.to_vec(),
                "the tools below the features know no feature",
            ),
            (
                &["agents", "panes"],
                vec!["tasks", "calls"],
                "agents announce events; tasks and tools follow them",
            ),
            (
                &["agents", "panes", "tasks", "tmux", "proto", "wire", "jobs"],
                vec!["api"],
                "only api maps errors to HTTP",
            ),
            (
                &["agents", "panes", "tasks", "api", "daemon", "net"],
                vec!["dispatch", "server"],
                "only the loop decides who reacts",
            ),
            (
                &["ctx", "panes", "agents", "tasks", "calls", "api"],
                vec!["daemon", "dispatch", "server"],
                "parts get views of what they may reach, never the daemon",
            ),
            (
                &["ctx"],
                vec!["panes", "agents", "tasks", "calls", "api", "cluster"],
                "the context sits below every part",
            ),
            (
                &["cluster"],
                [features.as_slice(), &["ctx"]].concat(),
                "the cluster part is state and a link; the API decides what its events mean",
            ),
        ];
        let mut broken = Vec::new();
        for (modules, forbidden, why) in &rules {
            for module in *modules {
                for (file, text) in sources(module) {
                    for name in crate_references(&text) {
                        if forbidden.contains(&name.as_str()) {
                            broken.push(format!("{file} imports crate::{name} ({why})"));
                        }
                    }
                }
            }
        }
        assert!(broken.is_empty(), "{}", broken.join("\n"));
    }

    /// No import circle between the crate's modules: each module's imports, followed
    /// transitively, never lead back to it.
    #[test]
    fn the_module_graph_has_no_circle() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut modules: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().to_string();
                let module = name.strip_suffix(".rs").unwrap_or(&name).to_string();
                let skip = ["lib", "main", "bin"].contains(&module.as_str());
                let code = name.ends_with(".rs") || entry.path().join("mod.rs").exists();
                (!skip && code).then_some(module)
            })
            .collect();
        modules.sort();
        modules.dedup();
        let imports: std::collections::BTreeMap<String, BTreeSet<String>> = modules
            .iter()
            .map(|module| {
                let mut used = BTreeSet::new();
                for (_, text) in sources(module) {
                    used.extend(crate_references(&text));
                }
                used.retain(|name| name != module && modules.contains(name));
                (module.clone(), used)
            })
            .collect();
        for start in &modules {
            // A depth-first walk from `start` that finds its way back names the circle.
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            let mut seen = BTreeSet::new();
            while let Some((module, path)) = stack.pop() {
                for next in &imports[&module] {
                    assert!(
                        next != start,
                        "import circle: {} -> {start}",
                        path.join(" -> ")
                    );
                    if seen.insert(next.clone()) {
                        let mut longer = path.clone();
                        longer.push(next.clone());
                        stack.push((next.clone(), longer));
                    }
                }
            }
        }
    }

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
