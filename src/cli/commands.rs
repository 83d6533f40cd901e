//! `orchestra agents`, `send`, `delegate` and `tasks`: each one or two API calls, shown as a
//! table or (with `--json`) as the API's JSON.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::output::{cell, colours, fields, print_json, status, table};
use super::{
    Api, Failure, exit, next_message, poll_message, segment, send_message, websocket, ws_failure,
};

/// `orchestra agents ...`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum AgentsCommand {
    /// List sessions (the default).
    Ls {
        /// Only sessions with this status (running, idle, error, exited, terminated).
        #[arg(long)]
        status: Option<String>,
        /// Only sessions of this agent type.
        #[arg(long = "type", value_name = "TYPE")]
        agent_type: Option<String>,
        /// In a cluster: only the sessions of this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// Show one session's details.
    Show {
        /// Session id (sess-...).
        session: String,
    },
    /// Start an agent; prints its session id.
    Spawn {
        /// Agent type (shell, claude, codex, ... as configured).
        agent_type: String,
        /// Name the session `sess-<type>-<name>` (409 if one is live).
        #[arg(long)]
        name: Option<String>,
        /// Working directory (default: the current one).
        #[arg(long, value_name = "DIR")]
        working_dir: Option<PathBuf>,
        /// Environment variable for the agent, `KEY=VALUE` (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// In a cluster: the host to start it on, or `any` for the least loaded one. The
        /// working directory is then the host's default unless --working-dir names one.
        #[arg(long)]
        host: Option<String>,
    },
    /// Stop a session (its process tree, then the pane).
    Kill {
        /// Session id.
        session: String,
    },
}

/// `orchestra tasks ...`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum TasksCommand {
    /// List tickets, newest first (the default).
    Ls {
        /// Only tickets with this status (proposed, pending, running, completed, failed,
        /// timeout, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one ticket with its result.
    Show {
        /// Task id or ticket id.
        task: String,
    },
    /// Cancel a pending or running task.
    Cancel {
        /// Task id or ticket id.
        task: String,
    },
    /// Wait until a task ends; the exit code tells how it ended.
    Wait {
        /// Task id or ticket id.
        task: String,
    },
}

/// `orchestra delegate` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct DelegateArgs {
    /// Agent type to run the task (its headless command).
    pub agent_type: String,
    /// What to do.
    pub task: String,
    /// A file the agent should look at (repeatable); listed in the prompt.
    #[arg(long = "context-file", value_name = "FILE")]
    pub context_files: Vec<String>,
    /// Working directory (default: the current one).
    #[arg(long, value_name = "DIR")]
    pub working_dir: Option<PathBuf>,
    /// Run in a fresh git worktree on its own branch.
    #[arg(long)]
    pub worktree: bool,
    /// Test command run when the agent is done, as one argument split into words like a
    /// shell would (quotes group, nothing is expanded or run by a shell), e.g.
    /// `--test-command "cargo test --all"`. The task then requires its tests to pass.
    #[arg(long, value_name = "COMMAND", allow_hyphen_values = true)]
    pub test_command: Option<String>,
    /// Task timeout, e.g. `30m` (default: the daemon's).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Wait for the task to end, with a progress line; the exit code tells how it ended.
    #[arg(long)]
    pub wait: bool,
    /// In a cluster: the host to run it on (default: the cluster's queue, where any host with
    /// the agent type and room takes it).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// In a cluster's queue: how many times to run it again if the host running it is lost.
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
}

/// Runs `orchestra agents`.
pub fn agents(api: &Api, command: Option<AgentsCommand>) -> Result<(), Failure> {
    match command.unwrap_or(AgentsCommand::Ls {
        status: None,
        agent_type: None,
        host: None,
    }) {
        AgentsCommand::Ls {
            status: wanted,
            agent_type,
            host,
        } => list_agents(api, wanted, agent_type, host),
        AgentsCommand::Show { session } => {
            let details = api.get(&format!("/api/agents/{}", segment(&session)))?;
            show(api, &details);
            Ok(())
        }
        AgentsCommand::Spawn {
            agent_type,
            name,
            working_dir,
            env,
            host,
        } => spawn_agent(api, agent_type, name, working_dir, env, host),
        AgentsCommand::Kill { session } => {
            let killed = api.call(
                "DELETE",
                &format!("/api/agents/{}", segment(&session)),
                None,
            )?;
            if api.json {
                print_json(&killed);
            } else {
                println!(
                    "{} {}",
                    cell(&killed["session_id"]),
                    cell(&killed["status"])
                );
            }
            Ok(())
        }
    }
}

/// `orchestra agents ls`: the sessions (of one status or type, if asked) as a table.
fn list_agents(
    api: &Api,
    wanted: Option<String>,
    agent_type: Option<String>,
    host: Option<String>,
) -> Result<(), Failure> {
    let mut query = Vec::new();
    if let Some(h) = host {
        query.push(format!("host={}", segment(&h)));
    }
    if let Some(s) = wanted {
        query.push(format!("status={}", segment(&s)));
    }
    if let Some(t) = agent_type {
        query.push(format!("agent_type={}", segment(&t)));
    }
    let path = if query.is_empty() {
        "/api/agents".to_string()
    } else {
        format!("/api/agents?{}", query.join("&"))
    };
    let list = api.get(&path)?;
    if api.json {
        print_json(&list);
        return Ok(());
    }
    let colour = colours();
    let agents = list["agents"].as_array().cloned().unwrap_or_default();
    // A cluster's list says where each agent runs.
    let clustered = agents.iter().any(|a| a.get("host").is_some());
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let mut row = vec![cell(&a["session_id"])];
            if clustered {
                row.push(cell(&a["host"]));
            }
            row.extend([
                cell(&a["agent_type"]),
                status(&cell(&a["status"]), colour),
                status(&cell(&a["activity"]), colour),
                cell(&a["created_at"]),
                cell(&a["evidence"]["detail"]),
            ]);
            row
        })
        .collect();
    let mut header = vec!["SESSION"];
    if clustered {
        header.push("HOST");
    }
    header.extend(["TYPE", "STATUS", "ACTIVITY", "CREATED", "EVIDENCE"]);
    print!("{}", table(&header, &rows));
    Ok(())
}

/// `orchestra agents spawn`: starts a session and prints its id.
fn spawn_agent(
    api: &Api,
    agent_type: String,
    name: Option<String>,
    working_dir: Option<PathBuf>,
    env: Vec<String>,
    host: Option<String>,
) -> Result<(), Failure> {
    let mut body = json!({ "agent_type": agent_type });
    // Another host has its own directories: the current one is sent only for this host.
    if host.is_none() || working_dir.is_some() {
        body["working_dir"] = directory(working_dir)?.into();
    }
    if let Some(host) = host {
        body["host"] = host.into();
    }
    if let Some(name) = name {
        body["name"] = name.into();
    }
    if !env.is_empty() {
        let mut vars = serde_json::Map::new();
        for pair in env {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                Failure::new(exit::USAGE, format!("--env {pair:?}: expected KEY=VALUE"))
            })?;
            vars.insert(key.to_string(), value.into());
        }
        body["env"] = vars.into();
    }
    let spawned = api.call("POST", "/api/agents/spawn", Some(&body))?;
    if api.json {
        print_json(&spawned);
    } else {
        println!("{}", cell(&spawned["session_id"]));
    }
    Ok(())
}

fn show(api: &Api, value: &Value) {
    if api.json {
        print_json(value);
    } else {
        print!("{}", fields(value));
    }
}

/// The directory to send: the one given (made absolute) or the current one.
fn directory(dir: Option<PathBuf>) -> Result<String, Failure> {
    let current = std::env::current_dir()
        .map_err(|e| Failure::new(exit::FAILED, format!("no current directory: {e}")))?;
    let dir = match dir {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => current.join(dir),
        None => current,
    };
    dir.into_os_string()
        .into_string()
        .map_err(|_| Failure::new(exit::USAGE, "the working directory is not valid UTF-8"))
}

/// Runs `orchestra send`: types `text` as a `user_message`; with `wait`, prints the reply
/// the agent's turn ends with, giving up after `wait` has passed (agents without hooks
/// report no replies, which is said at once).
pub fn send(api: &Api, session: &str, text: &str, wait: Option<Duration>) -> Result<(), Failure> {
    if wait.is_some() {
        let agent = api.get(&format!("/api/agents/{}", segment(session)))?;
        if agent["reports_replies"] == false {
            return Err(Failure::new(
                exit::FAILED,
                format!(
                    "{session} ({}) reports no replies (its CLI has no hooks), so --wait would \
                     wait forever; send without --wait and watch it with `orchestra attach \
                     {session}`",
                    cell(&agent["agent_type"])
                ),
            ));
        }
    }
    let deadline = wait.map(|wait| std::time::Instant::now() + wait);
    let mut socket = websocket(api, wait.map(|_| Duration::from_secs(1)))?;
    let id = format!("cli-{}", std::process::id());
    send_message(
        &mut socket,
        &json!({"type": "user_message", "session_id": session, "content": text, "id": id}),
    )?;
    loop {
        if deadline.is_some_and(|deadline| std::time::Instant::now() >= deadline) {
            return Err(Failure::new(
                exit::FAILED,
                format!(
                    "no reply from {session} within {} (--wait); the message was delivered",
                    humantime::format_duration(wait.unwrap_or_default())
                ),
            ));
        }
        let Some(message) = poll_message(&mut socket)? else {
            continue;
        };
        let about_us = message["session_id"] == session;
        match message["type"].as_str() {
            Some("error") if about_us || message["id"] == id.as_str() => {
                return Err(ws_failure(&message));
            }
            Some("user_message_ack") if about_us && wait.is_none() => {
                if api.json {
                    print_json(&message);
                }
                return Ok(());
            }
            Some("claude_response") if about_us && message["in_reply_to"] == id.as_str() => {
                if api.json {
                    print_json(&message);
                } else {
                    println!("{}", cell(&message["content"]));
                }
                return Ok(());
            }
            _ => {}
        }
    }
}

/// Runs `orchestra delegate`.
pub fn delegate(api: &Api, args: DelegateArgs) -> Result<u8, Failure> {
    let mut body = json!({
        "agent_type": args.agent_type,
        "task": args.task,
        "working_dir": directory(args.working_dir)?,
    });
    if !args.context_files.is_empty() {
        body["context"] = json!({ "files": args.context_files });
    }
    if args.worktree {
        body["isolation"] = "worktree".into();
    }
    if let Some(command) = &args.test_command {
        let argv = split_words(command)
            .map_err(|e| Failure::new(exit::USAGE, format!("--test-command {command:?}: {e}")))?;
        body["test_command"] = argv.into();
        // A test command given is a test command to run.
        body["context"]["tests_required"] = true.into();
    }
    if let Some(timeout) = args.timeout {
        body["timeout_ms"] = (timeout.as_millis() as u64).into();
    }
    if let Some(host) = &args.host {
        body["host"] = host.clone().into();
    }
    if let Some(retries) = args.retries {
        body["retries"] = retries.into();
    }
    let ticket = api.call("POST", "/api/delegate", Some(&body))?;
    // A ticket in a cluster's queue has no task id until a host takes it: its ticket id
    // names it everywhere.
    let id = match ticket["task_id"].as_u64() {
        Some(task_id) => task_id.to_string(),
        None => cell(&ticket["ticket_id"]),
    };
    if !args.wait {
        if api.json {
            print_json(&ticket);
        } else {
            println!("{id}");
        }
        return Ok(exit::OK);
    }
    if !api.json {
        eprintln!("task {id} ({})", cell(&ticket["ticket_id"]));
    }
    wait_task(api, &id)
}

/// Splits a command line into words the way a POSIX shell groups them, without expanding or
/// running anything: whitespace separates words; `'...'` is literal; `"..."` is literal but
/// for `\"` and `\\`; a backslash outside quotes takes the next character as it is.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(done) = word.take() {
                    words.push(done);
                }
            }
            '\'' => {
                let word = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("a single quote is not closed".into()),
                    }
                }
            }
            '"' => {
                let word = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("a double quote is not closed".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("a double quote is not closed".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("it ends with a backslash".into()),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    if words.is_empty() {
        return Err("no command".into());
    }
    Ok(words)
}

/// Runs `orchestra tasks`; returns the exit code (`wait` returns the task's outcome).
pub fn tasks(api: &Api, command: Option<TasksCommand>) -> Result<u8, Failure> {
    match command.unwrap_or(TasksCommand::Ls {
        status: None,
        limit: 50,
    }) {
        TasksCommand::Ls {
            status: wanted,
            limit,
        } => {
            let mut path = format!("/api/tasks?limit={limit}");
            if let Some(s) = wanted {
                path.push_str(&format!("&status={}", segment(&s)));
            }
            let list = api.get(&path)?;
            if api.json {
                print_json(&list);
                return Ok(exit::OK);
            }
            let colour = colours();
            let rows: Vec<Vec<String>> = list["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    vec![
                        cell(&t["task_id"]),
                        status(&cell(&t["status"]), colour),
                        cell(&t["agent"]),
                        t["duration_ms"]
                            .as_u64()
                            .map_or("-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
                        cell(&t["session_id"]),
                        one_line(&cell(&t["task"]), 60),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["TASK", "STATUS", "AGENT", "TIME", "SESSION", "WHAT"],
                    &rows
                )
            );
            Ok(exit::OK)
        }
        TasksCommand::Show { task } => {
            let ticket = api.get(&format!("/api/tasks/{}", segment(&task)))?;
            show(api, &ticket);
            Ok(exit::OK)
        }
        TasksCommand::Cancel { task } => {
            let ticket = api.call("DELETE", &format!("/api/tasks/{}", segment(&task)), None)?;
            if api.json {
                print_json(&ticket);
            } else {
                println!("{} {}", cell(&ticket["task_id"]), cell(&ticket["status"]));
            }
            Ok(exit::OK)
        }
        TasksCommand::Wait { task } => wait_task(api, &task),
    }
}

fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > max || text.lines().nth(1).is_some() {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_string()
    }
}

/// The exit code for a final task status, or `None` while it is not final.
pub fn outcome(status: &str) -> Option<u8> {
    match status {
        "completed" => Some(exit::OK),
        "failed" => Some(exit::TASK_FAILED),
        "timeout" => Some(exit::TASK_TIMEOUT),
        "cancelled" => Some(exit::TASK_CANCELLED),
        _ => None,
    }
}

/// Waits for a task to end, following its `task_update`s (no polling), with a progress line
/// on a terminal; prints the result and returns the outcome's exit code.
fn wait_task(api: &Api, task: &str) -> Result<u8, Failure> {
    let mut socket = websocket(api, None)?;
    // The socket is open first, so no update can slip between this read and the stream.
    let mut ticket = api.get(&format!("/api/tasks/{}", segment(task)))?;
    // Updates are matched by ticket id: a ticket of a cluster's queue has no task id until a
    // host takes it, and task ids are numbered per host.
    let ticket_id = ticket["ticket_id"].clone();
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal() && !api.json;
    loop {
        let state = cell(&ticket["status"]);
        if let Some(code) = outcome(&state) {
            if progress {
                eprint!("\r\x1b[2K");
            }
            if api.json {
                print_json(&ticket);
            } else {
                print_result(&ticket);
            }
            return Ok(code);
        }
        if progress {
            let elapsed = ticket["elapsed_ms"]
                .as_u64()
                .map_or(started.elapsed().as_secs_f64(), |ms| ms as f64 / 1000.0);
            eprint!(
                "\r\x1b[2Ktask {} {} {elapsed:.1}s",
                cell(&ticket["task_id"]),
                status(&state, colours())
            );
            let _ = std::io::stderr().flush();
        }
        let message = next_message(&mut socket)?;
        if message["type"] == "task_update" && message["ticket_id"] == ticket_id {
            // The update carries the status and result; the full ticket has the rest.
            if outcome(message["status"].as_str().unwrap_or_default()).is_some() {
                ticket = api.get(&format!("/api/tasks/{}", segment(task)))?;
            } else {
                ticket["status"] = message["status"].clone();
                ticket["elapsed_ms"] = message["elapsed_ms"].clone();
            }
        }
    }
}

fn print_result(ticket: &Value) {
    println!(
        "task {} {}",
        cell(&ticket["task_id"]),
        status(&cell(&ticket["status"]), colours())
    );
    let result = &ticket["result"];
    if let Some(message) = result["message"].as_str().filter(|m| !m.is_empty()) {
        println!("{message}");
    }
    if let Some(files) = result["files_modified"]
        .as_array()
        .filter(|f| !f.is_empty())
    {
        let names: Vec<String> = files.iter().map(cell).collect();
        println!("files: {}", names.join(", "));
    }
    if let Some(passed) = result["tests_passed"].as_bool() {
        println!("tests: {}", if passed { "passed" } else { "failed" });
    }
    if let Some(branch) = result["branch"].as_str() {
        println!("branch: {branch}");
    }
    if let Some(error) = result["error"].as_str() {
        println!("error: {error}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_commands_split_into_words_without_a_shell() {
        assert_eq!(
            split_words("cargo test --all").unwrap(),
            ["cargo", "test", "--all"]
        );
        assert_eq!(
            split_words(r#"  pytest -k 'a b' "c \"d\"" e\ f $HOME ; x "#).unwrap(),
            ["pytest", "-k", "a b", "c \"d\"", "e f", "$HOME", ";", "x"]
        );
        assert_eq!(split_words("''").unwrap(), [""]);
        for bad in ["", "   ", "'open", "\"open", "trailing\\"] {
            assert!(split_words(bad).is_err(), "{bad:?}");
        }
    }

    use super::*;

    #[test]
    fn final_statuses_have_exit_codes() {
        assert_eq!(outcome("completed"), Some(exit::OK));
        assert_eq!(outcome("failed"), Some(exit::TASK_FAILED));
        assert_eq!(outcome("timeout"), Some(exit::TASK_TIMEOUT));
        assert_eq!(outcome("cancelled"), Some(exit::TASK_CANCELLED));
        for open in ["proposed", "pending", "running", ""] {
            assert_eq!(outcome(open), None);
        }
        assert_eq!(one_line("a\nb", 10), "a…");
        assert_eq!(one_line("abc", 2), "ab…");
        assert_eq!(one_line("abc", 3), "abc");
    }
}

/// `orchestra cluster ...`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ClusterCommand {
    /// The hosts, whether they are reachable, their load and their agents (the default).
    Status,
}

/// Runs `orchestra cluster`.
pub fn cluster(api: &Api, command: Option<ClusterCommand>) -> Result<(), Failure> {
    match command.unwrap_or(ClusterCommand::Status) {
        ClusterCommand::Status => {
            let status = api.get("/api/cluster")?;
            if api.json {
                print_json(&status);
                return Ok(());
            }
            println!(
                "cluster {} (asked {}, {})",
                cell(&status["cluster"]),
                cell(&status["host"]),
                if status["connected"] == true {
                    "connected"
                } else {
                    "NOT connected to NATS"
                }
            );
            let rows: Vec<Vec<String>> = status["hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| {
                    let agents: Vec<String> = h["agents"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(cell)
                        .collect();
                    let types: Vec<String> = h["agent_types"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(cell)
                        .collect();
                    vec![
                        cell(&h["host"]),
                        if h["reachable"] == true { "yes" } else { "NO" }.to_string(),
                        format!("{}/{}", cell(&h["sessions"]), cell(&h["max_sessions"])),
                        cell(&h["reported_at"]),
                        types.join(","),
                        agents.join(" "),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "HOST",
                        "REACHABLE",
                        "SESSIONS",
                        "REPORTED",
                        "TYPES",
                        "AGENTS"
                    ],
                    &rows
                )
            );
            Ok(())
        }
    }
}
