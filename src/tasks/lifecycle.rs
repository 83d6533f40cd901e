//! The life of a ticket, on the event loop: accept and store it, queue it, prepare its
//! workspace and start its session, notice when the agent ends (or time it out, or cancel
//! it), verify the result off the loop, and pick everything up again after a restart.
//!
//! Every blocking step (git, the test command, capture of the pane history, process-tree
//! kills) runs on a worker or a thread of its own and comes back as a continuation. Every
//! state change is written to the store; a delegation is answered only once its ticket is
//! durable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::TaskError;
use super::prompt;
use super::workspace::{self, ScanLimits};
use super::{Ending, Isolation, NewTask, Outcome, Phase, TaskContext, TaskResult, Ticket, now_ms};
use crate::agents::error::SpawnError;
use crate::agents::history::Role;
use crate::agents::manager::{self, SpawnParams};
use crate::agents::validate::{PrivateDirs, resolve_working_dir};
use crate::agents::{ExitInfo, new_session_ids, procfs};
use crate::ctx::{Done, Timer, then};
use crate::error_code::ErrorCode;
use crate::panes::pane_text::PaneText;
use crate::panes::typing::Typing;
use crate::tasks::Parts;
use crate::tasks::Tasks;
use crate::tmux::SessionName;
use crate::wire::ws::ServerMessage;

/// Lines of pane history read back when an agent has ended.
const HISTORY_LINES: u32 = 2000;

/// The daemon's own tail of a task's output, used when tmux's history is empty.
const OUTPUT_FALLBACK_BYTES: usize = 256 * 1024;

/// What a delegation asks for, already parsed from the request.
#[derive(Debug, Clone)]
pub struct DelegateParams {
    /// Agent type.
    pub agent_type: String,
    /// Task text.
    pub task: String,
    /// Files, requirements, tests.
    pub context: TaskContext,
    /// Timeout in milliseconds (default from config).
    pub timeout_ms: Option<u64>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// The delegating session, whose directory is the default.
    pub from_session: Option<String>,
    /// Isolation mode.
    pub isolation: Isolation,
    /// Test command.
    pub test_command: Option<Vec<String>>,
    /// The token's subject.
    pub requested_by: Option<String>,
    /// Part of a plan: stored as `proposed`, and queued only once approved.
    pub proposed: bool,
    /// The ticket id and session id chosen by the host that took the request (a ticket
    /// claimed from the cluster's queue); `None`: new ones.
    pub ids: Option<(String, String)>,
}

fn scan_limits(parts: &Parts<'_>) -> ScanLimits {
    ScanLimits {
        max_files: parts.ctx.config.tasks.max_snapshot_files,
        command_timeout: parts
            .ctx
            .config
            .tmux
            .command_timeout
            .max(Duration::from_secs(60)),
    }
}

/// Accepts a delegation: validates it, stores the ticket durably and queues it. `done`
/// gets the task id once the ticket is on disk, or the error to answer with.
pub fn delegate(parts: &mut Parts<'_>, params: DelegateParams, done: Done<Result<u64, TaskError>>) {
    match check(parts, &params) {
        Ok(dir) => {
            let roots = parts.ctx.config.sessions.allowed_roots.clone();
            let private = PrivateDirs::of(&parts.ctx.config);
            let git_timeout = scan_limits(parts).command_timeout;
            // Resolving a directory is quick; asking git about it may not be.
            let pool = match params.isolation {
                Isolation::Worktree => &parts.ctx.slow_jobs,
                Isolation::None => &parts.ctx.jobs,
            };
            if !pool.has_room() {
                let pool = pool.name();
                return parts.ctx.finish(done, Err(TaskError::WorkersBusy { pool }));
            }
            pool.run(move || {
                let checked = resolve_working_dir(&dir, &roots, &private)
                    .map_err(TaskError::InvalidWorkingDir)
                    .and_then(|dir| {
                        if params.isolation == Isolation::Worktree
                            && workspace::git_toplevel(&dir, git_timeout).is_none()
                        {
                            return Err(TaskError::Invalid(format!(
                                "isolation \"worktree\" needs a git repository; {} is not in one",
                                dir.display()
                            )));
                        }
                        Ok(dir)
                    });
                then::<Tasks>(move |mut parts: Parts<'_>| match checked {
                    Ok(dir) => create(&mut parts, params, dir, done),
                    Err(error) => parts.ctx.finish(done, Err(error)),
                })
            });
        }
        Err(error) => parts.ctx.finish(done, Err(error)),
    }
}

/// The checks that need no file system; returns the directory to validate.
fn check(parts: &Parts<'_>, params: &DelegateParams) -> Result<String, TaskError> {
    let config = &parts.ctx.config;
    let Some(agent_type) = config.agents.get(&params.agent_type) else {
        return Err(TaskError::UnknownType {
            name: params.agent_type.clone(),
            known: config.agents.keys().cloned().collect(),
        });
    };
    if agent_type.headless.is_none() {
        return Err(not_delegable(config, &params.agent_type));
    }
    check_request(config, params)?;
    if parts.ctx.shutting_down {
        return Err(TaskError::ShuttingDown);
    }
    check_queue(parts)?;
    let primary = match &params.from_session {
        Some(id) => Some(
            parts
                .agents
                .get(id)
                .ok_or_else(|| TaskError::SessionNotFound(id.clone()))?,
        ),
        None => None,
    };
    if let Some(dir) = &params.working_dir {
        return Ok(dir.clone());
    }
    if let Some(agent) = primary {
        return Ok(agent.working_dir.display().to_string());
    }
    config
        .tasks
        .default_workspace
        .as_ref()
        .or(config.sessions.allowed_roots.first())
        .map(|d| d.display().to_string())
        .ok_or_else(|| TaskError::Invalid("no working_dir given and no default workspace".into()))
}

/// The error for delegating to `agent_type`, which has no headless command, naming the
/// types that have one.
pub fn not_delegable(config: &crate::config::Config, agent_type: &str) -> TaskError {
    let able = config
        .agents
        .iter()
        .filter(|(_, t)| t.headless.is_some())
        .map(|(name, _)| name.clone())
        .collect();
    TaskError::NotDelegable {
        name: agent_type.to_string(),
        able,
    }
}

/// The checks of a delegation that need neither the agent type nor the file system: the
/// task's text and size, the timeout and the test command.
pub fn check_request(
    config: &crate::config::Config,
    params: &DelegateParams,
) -> Result<(), TaskError> {
    if params.task.trim().is_empty() {
        return Err(TaskError::Invalid("task must not be empty".into()));
    }
    // The prompt (task and context) travels as one argv element, which Linux caps at
    // 128 KiB, and can hold no NUL.
    let prompt_len = params.task.len()
        + params
            .context
            .files
            .iter()
            .chain(&params.context.requirements)
            .map(|s| s.len() + 3)
            .sum::<usize>();
    if prompt_len > config.tasks.max_task_bytes {
        return Err(TaskError::Invalid(format!(
            "task and context are {prompt_len} bytes; at most {} are allowed \
             (tasks.max_task_bytes)",
            config.tasks.max_task_bytes
        )));
    }
    let has_nul = std::iter::once(&params.task)
        .chain(&params.context.files)
        .chain(&params.context.requirements)
        .any(|s| s.contains('\0'));
    if has_nul {
        return Err(TaskError::Invalid(
            "task and context must not contain NUL characters".into(),
        ));
    }
    let max_ms = config.tasks.max_timeout.as_millis() as u64;
    if let Some(ms) = params.timeout_ms
        && (ms == 0 || ms > max_ms)
    {
        return Err(TaskError::Invalid(format!(
            "timeout_ms must be between 1 and {max_ms} (tasks.max_timeout)"
        )));
    }
    if let Some(argv) = &params.test_command
        && (argv.is_empty() || argv[0].is_empty() || argv.iter().any(|a| a.contains('\0')))
    {
        return Err(TaskError::Invalid(
            "test_command must be a non-empty argv array, e.g. [\"cargo\", \"test\"]".into(),
        ));
    }
    Ok(())
}

fn check_queue(parts: &Parts<'_>) -> Result<(), TaskError> {
    let max = parts.ctx.config.tasks.max_queued;
    if parts.tasks.book.queued() + parts.tasks.book.creating >= max {
        return Err(TaskError::QueueFull { max });
    }
    Ok(())
}

/// Creates the ticket and stores it; it joins the book and the queue once durable.
fn create(
    parts: &mut Parts<'_>,
    params: DelegateParams,
    dir: PathBuf,
    done: Done<Result<u64, TaskError>>,
) {
    if let Err(error) = check_queue(parts) {
        return parts.ctx.finish(done, Err(error));
    }
    if let Some((ticket_id, _)) = &params.ids
        && parts.tasks.book.find(ticket_id).is_some()
    {
        let error = TaskError::Invalid(format!("this host already holds {ticket_id}"));
        return parts.ctx.finish(done, Err(error));
    }
    let task_id = parts.tasks.book.next_task_id;
    parts.tasks.book.next_task_id += 1;
    let (session_id, name) = match &params.ids {
        Some((_, session_id)) => match session_name_of(session_id) {
            Some(name) => (session_id.clone(), name),
            None => {
                let error = TaskError::Invalid(format!("{session_id} is not a session id"));
                return parts.ctx.finish(done, Err(error));
            }
        },
        None => new_session_ids(&params.agent_type),
    };
    let timeout_ms = params
        .timeout_ms
        .unwrap_or(parts.ctx.config.tasks.default_timeout.as_millis() as u64);
    let proposed = params.proposed;
    let mut ticket = Ticket::new(
        task_id,
        session_id,
        name.to_string(),
        NewTask {
            agent_type: params.agent_type,
            task: params.task,
            context: params.context,
            timeout_ms,
            dir,
            isolation: params.isolation,
            test_command: params.test_command,
            requested_by: params.requested_by,
        },
    );
    if proposed {
        ticket.phase = Phase::Proposed;
    }
    if let Some((ticket_id, _)) = params.ids {
        ticket.ticket_id = ticket_id;
    }
    parts.tasks.book.creating += 1;
    let stored = ticket.clone();
    parts.tasks.store.create(
        &stored,
        crate::ctx::done::<Tasks, Result<(), super::store::StoreError>>(
            move |mut reach, result| {
                let parts = &mut reach;
                parts.tasks.book.creating -= 1;
                match result {
                    Ok(()) => {
                        log::info!(
                            "task {} ({}) accepted for a {} agent in {}",
                            ticket.task_id,
                            ticket.ticket_id,
                            ticket.agent_type,
                            ticket.requested_dir.display()
                        );
                        parts.tasks.book.insert(ticket);
                        announce(parts, task_id);
                        parts.ctx.finish(done, Ok(task_id));
                        schedule(parts);
                    }
                    Err(e) => parts
                        .ctx
                        .finish(done, Err(TaskError::StoreUnavailable(e.to_string()))),
                }
            },
        ),
    );
}

/// The tmux session name that goes with session id `sess-<type>-<hex>`.
fn session_name_of(session_id: &str) -> Option<crate::tmux::SessionName> {
    let rest = session_id.strip_prefix("sess-")?;
    crate::tmux::SessionName::parse(&format!("agent-{rest}"))
}

/// Starts queued tickets while slots are free: FIFO, skipping tickets whose agent type is
/// at its `max_tasks`, and never past `sessions.max_sessions`.
pub fn schedule(parts: &mut Parts<'_>) {
    if parts.ctx.shutting_down {
        return;
    }
    let mut active: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    for ticket in parts.tasks.book.active() {
        *active.entry(ticket.agent_type.clone()).or_default() += 1;
        total += 1;
    }
    let mut start = Vec::new();
    for &task_id in &parts.tasks.book.queue {
        let sessions = parts.agents.live_and_spawning() + start.len();
        if total >= parts.ctx.config.tasks.max_running
            || sessions >= parts.ctx.config.sessions.max_sessions
        {
            break;
        }
        let ticket = &parts.tasks.book.tickets[&task_id];
        let limit = parts
            .ctx
            .config
            .agents
            .get(&ticket.agent_type)
            .and_then(|t| t.max_tasks)
            .unwrap_or(usize::MAX);
        let running = active.entry(ticket.agent_type.clone()).or_default();
        if *running >= limit {
            continue;
        }
        *running += 1;
        total += 1;
        start.push(task_id);
    }
    for task_id in start {
        prepare(parts, task_id);
    }
}

/// Takes a slot: prepares the workspace (worktree, baseline, prompt file) on a worker.
fn prepare(parts: &mut Parts<'_>, task_id: u64) {
    parts.tasks.book.queue.remove(&task_id);
    let config = parts.ctx.config.clone();
    let limits = scan_limits(parts);
    let Some(ticket) = parts.tasks.book.tickets.get_mut(&task_id) else {
        return;
    };
    ticket.phase = Phase::Preparing;
    parts
        .tasks
        .book
        .by_session
        .insert(ticket.session_id.clone(), task_id);
    let Some(template) = config
        .agents
        .get(&ticket.agent_type)
        .and_then(|t| t.headless.clone())
    else {
        // The type was removed or lost its headless command while the ticket waited (a
        // restart with a changed config).
        let reason = format!(
            "agent type {:?} is no longer configured with a headless command",
            ticket.agent_type
        );
        return finish_without_agent(parts, task_id, Ending::SpawnFailed { reason });
    };
    let test_command = test_command_of(&config, ticket);
    // A script (the shell type) runs exactly as written; prose gets its context in words.
    let script = config
        .agents
        .get(&ticket.agent_type)
        .is_some_and(|t| t.prompt == crate::config::PromptStyle::Script);
    let prompt_text = if script {
        ticket.task.clone()
    } else {
        prompt::build(&ticket.task, &ticket.context, test_command.as_deref())
    };
    // The prompt goes to the agent in a private file, named on its command line or opened
    // as its standard input; only a template with `{prompt}` shows it to every local user.
    let prompt_file = (prompt::wants_file(&template) || prompt::wants_stdin(&template))
        .then(|| prompt_path(&config.state_dir, &ticket.ticket_id));
    if prompt::shows_prompt(&template) {
        log::warn!(
            "task {task_id}: agent type {:?} gets its prompt on its command line ({{prompt}} \
             in its headless command), where every local user can read it; use \
             {{prompt_file}} or no placeholder (standard input)",
            ticket.agent_type
        );
    }
    let (requested, isolation, ticket_id) = (
        ticket.requested_dir.clone(),
        ticket.isolation,
        ticket.ticket_id.clone(),
    );
    let worktree_dest = config.worktree_dir().join(&ticket_id);
    parts.ctx.slow_jobs.run(move || {
        let prepared = (|| -> Result<Prepared, String> {
            let (dir, branch, worktree) = match isolation {
                Isolation::None => (requested.clone(), None, None),
                Isolation::Worktree => {
                    let branch = format!("orchestra/{ticket_id}");
                    crate::create_private_dir(worktree_dest.parent().unwrap_or(Path::new("/")))?;
                    let dir = workspace::create_worktree(
                        &requested,
                        &worktree_dest,
                        &branch,
                        limits.command_timeout,
                    )?;
                    (dir, Some(branch), Some(worktree_dest))
                }
            };
            let baseline = workspace::capture(&dir, &limits)?;
            if let Some(path) = &prompt_file {
                write_private(path, prompt_text.as_bytes())
                    .map_err(|e| format!("cannot write the prompt file: {e}"))?;
            }
            let argv = prompt::headless_argv(
                &template,
                &prompt_text,
                prompt_file.as_deref().and_then(Path::to_str),
            );
            let stdin = prompt_file.filter(|_| prompt::wants_stdin(&template));
            Ok(Prepared {
                dir,
                branch,
                worktree,
                baseline,
                argv,
                stdin,
            })
        })();
        then::<Tasks>(move |mut parts: Parts<'_>| launch(&mut parts, task_id, prepared))
    });
}

/// A prepared workspace.
struct Prepared {
    dir: PathBuf,
    branch: Option<String>,
    worktree: Option<PathBuf>,
    baseline: workspace::Baseline,
    argv: Vec<String>,
    /// The prompt file the agent reads as its standard input.
    stdin: Option<PathBuf>,
}

fn prompt_path(state_dir: &Path, ticket_id: &str) -> PathBuf {
    state_dir.join("prompts").join(format!("{ticket_id}.txt"))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        crate::create_private_dir(dir).map_err(std::io::Error::other)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The workspace is ready: record the baseline durably, then create the session.
fn launch(parts: &mut Parts<'_>, task_id: u64, prepared: Result<Prepared, String>) {
    let Some(ticket) = parts.tasks.book.tickets.get_mut(&task_id) else {
        return;
    };
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(reason) => {
            log::warn!("task {task_id}: cannot prepare its workspace: {reason}");
            let reason = format!("cannot prepare the working directory: {reason}");
            return finish_without_agent(parts, task_id, Ending::SpawnFailed { reason });
        }
    };
    ticket.branch = prepared.branch;
    ticket.worktree = prepared.worktree.clone();
    if ticket.stopping == Some(Ending::Cancelled) {
        return finish_without_agent(parts, task_id, Ending::Cancelled);
    }
    ticket.working_dir = prepared.dir.clone();
    ticket.baseline = Some(prepared.baseline);
    ticket.phase = Phase::Launched;
    let params = SpawnParams {
        agent_type: ticket.agent_type.clone(),
        working_dir: Some(prepared.dir.display().to_string()),
        env: BTreeMap::new(),
        command: Some(prepared.argv),
        ids: SessionName::parse(&ticket.tmux_session).map(|n| (ticket.session_id.clone(), n)),
        daemon_env: BTreeMap::from([("ORCHESTRA_TICKET_ID".to_string(), ticket.ticket_id.clone())]),
        extra_root: prepared.worktree,
        internal: true,
        name: None,
        stdin: prepared.stdin,
        resume: None,
    };
    let snapshot = ticket.clone();
    // The session is created only once the baseline is durable, so that a restart can always
    // compute what the task changed.
    parts.tasks.store.put(
        &snapshot,
        Some(crate::ctx::done::<
            Tasks,
            Result<(), super::store::StoreError>,
        >(move |mut reach, stored| {
            let parts = &mut reach;
            if let Err(e) = stored {
                // Without a durable baseline a restart could neither compute the result nor
                // tell that the task already ran; so it does not start.
                log::warn!("task {task_id}: its starting state could not be stored: {e}");
                let reason = format!("cannot store the task's starting state: {e}");
                return finish_without_agent(parts, task_id, Ending::SpawnFailed { reason });
            }
            manager::spawn(
                &mut parts.for_agents(),
                params,
                crate::ctx::done::<Tasks, Result<manager::Spawned, SpawnError>>(
                    move |mut reach, spawned| {
                        let parts = &mut reach;
                        match spawned {
                            Ok(_) => started(parts, task_id),
                            // Past sessions.max_sessions (a spawn raced the scheduler) or shutting
                            // down: wait in the queue for the next free session.
                            Err(error) if error.is_transient() => {
                                requeue(parts, task_id, &error.to_string())
                            }
                            Err(error) => {
                                log::warn!(
                                    "task {task_id}: its session could not be created: {error}"
                                );
                                finish_without_agent(
                                    parts,
                                    task_id,
                                    Ending::SpawnFailed {
                                        reason: error.to_string(),
                                    },
                                )
                            }
                        }
                    },
                ),
            );
        })),
    );
}

/// Puts a ticket whose session could not be created yet back at its place in the queue.
fn requeue(parts: &mut Parts<'_>, task_id: u64, why: &str) {
    let Some(ticket) = parts.tasks.book.tickets.get_mut(&task_id) else {
        return;
    };
    if ticket.stopping == Some(Ending::Cancelled) {
        return finish_without_agent(parts, task_id, Ending::Cancelled);
    }
    log::info!("task {task_id}: queued again ({why})");
    ticket.phase = Phase::Queued;
    parts.tasks.book.by_session.remove(&ticket.session_id);
    parts.tasks.book.queue.insert(task_id);
    parts.tasks.store.put(&ticket.clone(), None);
}

/// The session exists: the ticket is `running`.
fn started(parts: &mut Parts<'_>, task_id: u64) {
    let Some(ticket) = parts.tasks.book.tickets.get_mut(&task_id) else {
        return;
    };
    if ticket.phase != Phase::Launched {
        return;
    }
    ticket.phase = Phase::Running;
    ticket.started_ms = Some(now_ms());
    log::info!("task {task_id}: running in {}", ticket.session_id);
    let timeout = Duration::from_millis(ticket.timeout_ms);
    let stop = ticket.stopping.is_some();
    parts.tasks.store.put(&ticket.clone(), None);
    parts
        .ctx
        .timers
        .schedule_in(timeout, Timer::TaskTimeout(task_id));
    announce(parts, task_id);
    schedule_progress(parts);
    if stop {
        stop_agent(parts, task_id);
    }
}

/// Ends the agent's process tree; its exit then finishes the ticket as `stopping` says.
fn stop_agent(parts: &mut Parts<'_>, task_id: u64) {
    let Some(ticket) = parts.tasks.book.tickets.get(&task_id) else {
        return;
    };
    let Some(agent) = parts.agents.get(&ticket.session_id) else {
        return;
    };
    if agent.exit.is_some() {
        return;
    }
    let (pid, grace) = (agent.pid, parts.ctx.config.sessions.kill_grace);
    parts.ctx.kill_jobs.run(move || {
        procfs::terminate_tree(pid, grace);
        Box::new(|_: &mut crate::ctx::World| {})
    });
}

/// A timeout fell due.
pub fn on_timeout(parts: &mut Parts<'_>, task_id: u64) {
    let Some(ticket) = parts.tasks.book.tickets.get_mut(&task_id) else {
        return;
    };
    if ticket.phase != Phase::Running || ticket.stopping.is_some() {
        return;
    }
    ticket.stopping = Some(Ending::TimedOut);
    log::warn!(
        "task {task_id}: timed out after {} ms; stopping its agent",
        ticket.timeout_ms
    );
    parts.tasks.store.put(&ticket.clone(), None);
    let ticket = &parts.tasks.book.tickets[&task_id];
    let message = ServerMessage::TaskTimeout {
        error_code: ErrorCode::TaskTimeout,
        message: format!("Task exceeded its timeout of {} ms", ticket.timeout_ms),
        session_id: &ticket.session_id,
        ticket_id: &ticket.ticket_id,
        task_id,
    };
    parts.ctx.ws.send_to_all(&mut parts.ctx.metrics, &message);
    stop_agent(parts, task_id);
}

/// A person approved or rejected proposed tasks (a plan): approved ones are queued and run
/// as usual, rejected ones end `cancelled`. Changes nothing and fails when one of them is not
/// waiting for approval.
pub fn decide_plan(
    parts: &mut Parts<'_>,
    task_ids: &[u64],
    approve: bool,
) -> Result<(), TaskError> {
    for task_id in task_ids {
        let ticket = parts
            .tasks
            .book
            .tickets
            .get(task_id)
            .ok_or_else(|| TaskError::NotFound(task_id.to_string()))?;
        if ticket.phase != Phase::Proposed {
            return Err(TaskError::NotProposed {
                task_id: *task_id,
                status: ticket.status().as_str(),
            });
        }
    }
    for &task_id in task_ids {
        if approve {
            let ticket = parts.tasks.book.tickets.get_mut(&task_id).expect("checked");
            ticket.phase = Phase::Queued;
            parts.tasks.book.queue.insert(task_id);
            parts.tasks.store.put(&ticket.clone(), None);
            log::info!("task {task_id}: approved");
            announce(parts, task_id);
        } else {
            log::info!("task {task_id}: rejected");
            finish_without_agent(parts, task_id, Ending::Cancelled);
        }
    }
    if approve {
        schedule(parts);
    }
    Ok(())
}

/// Cancels a ticket. `done` gets the task id once the ticket is final, or the error.
pub fn cancel(parts: &mut Parts<'_>, id: &str, done: Done<Result<u64, TaskError>>) {
    let Some(task_id) = parts.tasks.book.find(id) else {
        return parts
            .ctx
            .finish(done, Err(TaskError::NotFound(id.to_string())));
    };
    let ticket = parts.tasks.book.tickets.get_mut(&task_id).expect("found");
    match ticket.phase {
        Phase::Done(_) | Phase::Finishing => {
            let state = if ticket.phase.is_done() {
                ticket.status().as_str()
            } else {
                "its result is being recorded"
            };
            let error = TaskError::Finished {
                task_id,
                state: state.to_string(),
            };
            parts.ctx.finish(done, Err(error))
        }
        Phase::Proposed | Phase::Queued => {
            parts.tasks.book.queue.remove(&task_id);
            log::info!("task {task_id}: cancelled while pending");
            finish_without_agent(parts, task_id, Ending::Cancelled);
            parts.ctx.finish(done, Ok(task_id))
        }
        Phase::Preparing | Phase::Launched | Phase::Running => {
            if ticket.stopping.is_none() {
                ticket.stopping = Some(Ending::Cancelled);
            }
            log::info!("task {task_id}: cancelling");
            parts
                .tasks
                .book
                .waiters
                .entry(task_id)
                .or_default()
                .push(done);
            if parts.tasks.book.tickets[&task_id].phase == Phase::Running {
                parts
                    .tasks
                    .store
                    .put(&parts.tasks.book.tickets[&task_id].clone(), None);
                stop_agent(parts, task_id);
            }
        }
    }
}

/// Hook: a session's process has ended and its exit status is known.
pub fn on_agent_exit(parts: &mut Parts<'_>, session_id: &str, exit: ExitInfo) {
    let Some(&task_id) = parts.tasks.book.by_session.get(session_id) else {
        return;
    };
    let Some(ticket) = parts.tasks.book.tickets.get_mut(&task_id) else {
        return;
    };
    if !matches!(ticket.phase, Phase::Running | Phase::Launched) {
        return;
    }
    let ending = ticket.stopping.take().unwrap_or(match exit {
        ExitInfo::Code(code) => Ending::Exited {
            exit_code: Some(code),
            exit_signal: None,
        },
        ExitInfo::Signal(signal) => Ending::Exited {
            exit_code: None,
            exit_signal: Some(signal),
        },
        ExitInfo::Unknown => Ending::Exited {
            exit_code: None,
            exit_signal: None,
        },
    });
    begin_finish(parts, task_id, ending);
}

/// Hook: a session was killed through the API or vanished from tmux.
pub fn on_session_gone(parts: &mut Parts<'_>, session_id: &str, reason: &str) {
    let Some(&task_id) = parts.tasks.book.by_session.get(session_id) else {
        return;
    };
    let Some(ticket) = parts.tasks.book.tickets.get_mut(&task_id) else {
        return;
    };
    if !matches!(ticket.phase, Phase::Running | Phase::Launched) {
        return;
    }
    let ending = ticket.stopping.take().unwrap_or(Ending::Lost {
        reason: reason.to_string(),
    });
    begin_finish(parts, task_id, ending);
}

/// The agent has ended: store why, then compute the result on a thread of its own (reading
/// the pane history, diffing the working tree, running the tests).
fn begin_finish(parts: &mut Parts<'_>, task_id: u64, ending: Ending) {
    let config = parts.ctx.config.clone();
    let limits = scan_limits(parts);
    let Some(ticket) = parts.tasks.book.tickets.get_mut(&task_id) else {
        return;
    };
    ticket.phase = Phase::Finishing;
    ticket.ending = Some(ending.clone());
    let snapshot = ticket.clone();
    parts.tasks.store.put(&snapshot, None);
    // tmux's history of the pane, and the daemon's own copy of the output for when that
    // comes back empty (tmux 3.3a sometimes loses what a short-lived program printed).
    let text = parts
        .panes
        .text(parts.ctx, &snapshot.session_id, OUTPUT_FALLBACK_BYTES);
    let test_command = test_command_of(&config, &snapshot);
    let notifier = parts.ctx.jobs.notifier();
    let spawned = std::thread::Builder::new()
        .name(format!("task-{task_id}-verify"))
        .spawn(move || {
            let result = verify(&snapshot, &ending, &text, test_command, &config, &limits);
            notifier.send(then::<Tasks>(move |mut reach: Parts<'_>| {
                let parts = &mut reach;
                complete(parts, task_id, ending, result)
            }));
        });
    if let Err(e) = spawned {
        log::error!("task {task_id}: cannot start its verification thread: {e}");
        let result = TaskResult {
            error: Some(format!("the result could not be computed: {e}")),
            ..TaskResult::default()
        };
        let ending = parts.tasks.book.tickets[&task_id]
            .ending
            .clone()
            .unwrap_or(Ending::Lost {
                reason: "unknown".into(),
            });
        complete(parts, task_id, ending, result);
    }
}

/// The configured or requested test command of a ticket.
pub fn test_command_of(config: &crate::config::Config, ticket: &Ticket) -> Option<Vec<String>> {
    ticket.test_command.clone().or_else(|| {
        config
            .tasks
            .test_command_for(&ticket.requested_dir)
            .cloned()
    })
}

/// Computes a result (blocking): the agent's answer, the files it changed, the tests.
fn verify(
    ticket: &Ticket,
    ending: &Ending,
    text: &PaneText,
    test_command: Option<Vec<String>>,
    config: &crate::config::Config,
    limits: &ScanLimits,
) -> TaskResult {
    let keep = config.tasks.test_output_bytes;
    let history = text.history(HISTORY_LINES);
    let (mut message, mut output_tail) = prompt::final_answer(&history, keep);
    if output_tail.trim().is_empty() {
        (message, output_tail) = prompt::final_answer(&text.captured, keep);
    }
    let mut result = TaskResult {
        message,
        output_tail,
        branch: ticket.branch.clone(),
        worktree: ticket.worktree.clone(),
        ..TaskResult::default()
    };
    match &ticket.baseline {
        Some(baseline) => match workspace::changed_files(&ticket.working_dir, baseline, limits) {
            Ok(files) => result.files_modified = files,
            Err(e) => result.error = Some(format!("cannot tell which files changed: {e}")),
        },
        None => {
            result.error = Some("the working directory's starting state was not recorded".into())
        }
    }
    let clean = matches!(
        ending,
        Ending::Exited {
            exit_code: Some(0),
            ..
        }
    );
    if !ticket.context.tests_required {
        result.tests_skipped = Some("no tests were required (context.tests_required)".into());
    } else if !clean {
        result.tests_skipped = Some("the agent did not finish successfully".into());
    } else if let Some(argv) = test_command {
        let outcome =
            super::verify::run_tests(&argv, &ticket.working_dir, config.tasks.test_timeout, keep);
        result.tests_passed = Some(outcome.passed);
        result.tests_output = Some(outcome.output_tail);
        if outcome.timed_out {
            result.tests_skipped = None;
            result.error = Some(format!(
                "the test command ran past tasks.test_timeout ({:?})",
                config.tasks.test_timeout
            ));
        }
    } else {
        result.tests_skipped = Some(format!(
            "no test command: give test_command in the request or configure \
             [tasks.test_commands] for {}",
            ticket.requested_dir.display()
        ));
    }
    result
}

/// How a ticket ends, from why its agent stopped: the outcome, the error code of the
/// result, and what went wrong in words. Pure.
fn outcome_of(ending: &Ending, timeout_ms: u64) -> (Outcome, Option<ErrorCode>, Option<String>) {
    match ending {
        Ending::Exited {
            exit_code: Some(0), ..
        } => (Outcome::Completed, None, None),
        Ending::Exited {
            exit_code: Some(code),
            ..
        } => (
            Outcome::Failed,
            None,
            Some(format!("the agent exited with status {code}")),
        ),
        Ending::Exited {
            exit_signal: Some(signal),
            ..
        } => (
            Outcome::Failed,
            Some(ErrorCode::AgentCrashed),
            Some(format!("the agent was killed by signal {signal}")),
        ),
        Ending::Exited { .. } => (
            Outcome::Failed,
            Some(ErrorCode::AgentCrashed),
            Some("the agent ended; tmux could not tell its exit status".into()),
        ),
        Ending::TimedOut => (
            Outcome::Timeout,
            Some(ErrorCode::TaskTimeout),
            Some(format!(
                "the task exceeded its timeout of {} ms",
                timeout_ms
            )),
        ),
        Ending::Cancelled => (
            Outcome::Cancelled,
            Some(ErrorCode::TaskCancelled),
            Some("the task was cancelled".into()),
        ),
        Ending::Lost { reason } => (
            Outcome::Failed,
            Some(ErrorCode::AgentCrashed),
            Some(format!("the agent's session ended: {reason}")),
        ),
        Ending::SpawnFailed { reason } => (
            Outcome::Failed,
            Some(ErrorCode::AgentSpawnFailed),
            Some(reason.clone()),
        ),
    }
}

/// A ticket that ends without its agent having run (cancelled while pending, workspace or
/// spawn failure).
fn finish_without_agent(parts: &mut Parts<'_>, task_id: u64, ending: Ending) {
    let Some(ticket) = parts.tasks.book.tickets.get(&task_id) else {
        return;
    };
    let result = TaskResult {
        tests_skipped: Some("the agent never ran".into()),
        branch: ticket.branch.clone(),
        worktree: ticket.worktree.clone(),
        ..TaskResult::default()
    };
    complete(parts, task_id, ending, result);
}

/// Records the final state: status from the ending, the result, the store, observers; then
/// removes the session (unless `tasks.keep_sessions`) and starts what the slot allows.
fn complete(parts: &mut Parts<'_>, task_id: u64, ending: Ending, mut result: TaskResult) {
    let Some(ticket) = parts.tasks.book.tickets.get_mut(&task_id) else {
        return;
    };
    let (outcome, code, error) = outcome_of(&ending, ticket.timeout_ms);
    if let Ending::Exited {
        exit_code,
        exit_signal,
    } = &ending
    {
        result.exit_code = *exit_code;
        result.exit_signal = *exit_signal;
    }
    result.error_code = code.map(|c| c.as_str().to_string());
    if let Some(error) = error {
        result.error = Some(match result.error.take() {
            Some(more) => format!("{error}; {more}"),
            None => error,
        });
    }
    ticket.phase = Phase::Done(outcome);
    if let Some(started) = ticket.started_ms {
        parts
            .ctx
            .metrics
            .task_durations
            .entry(outcome.status().as_str())
            .or_default()
            .observe(
                &crate::metrics::TASK_BUCKETS,
                std::time::Duration::from_millis(now_ms().saturating_sub(started)),
            );
    }
    ticket.ending = Some(ending);
    ticket.stopping = None;
    ticket.completed_ms = Some(now_ms());
    ticket.result = Some(result);
    // Only needed to compute the result; a snapshot of a big directory is large.
    ticket.baseline = None;
    log::info!("task {task_id}: {}", outcome.status().as_str());
    let session_id = ticket.session_id.clone();
    let ticket_id = ticket.ticket_id.clone();
    parts.tasks.book.by_session.remove(&session_id);
    // The session (and its pane history) goes only once the result is durable; until then a
    // restart can still compute it.
    let remove_session = !parts.ctx.config.tasks.keep_sessions;
    let stored = parts.tasks.book.tickets[&task_id].clone();
    parts.tasks.store.put(
        &stored,
        Some(crate::ctx::done::<
            Tasks,
            Result<(), super::store::StoreError>,
        >(move |mut reach, result| {
            let parts = &mut reach;
            if result.is_ok() && remove_session && parts.agents.get(&session_id).is_some() {
                manager::kill(&mut parts.for_agents(), &session_id, Box::new(|_, _| {}));
            }
        })),
    );
    let prompt_file = prompt_path(&parts.ctx.config.state_dir, &ticket_id);
    parts.ctx.jobs.run(move || {
        let _ = std::fs::remove_file(prompt_file);
        Box::new(|_: &mut crate::ctx::World| {})
    });
    announce(parts, task_id);
    tell_requester(parts, task_id);
    for waiter in parts
        .tasks
        .book
        .waiters
        .remove(&task_id)
        .unwrap_or_default()
    {
        parts.ctx.finish(waiter, Ok(task_id));
    }
    prune(parts, task_id);
    schedule(parts);
}

/// How `requested_by` names a task delegated by an agent session (through the daemon's MCP
/// tools) rather than by a token's subject.
pub const SESSION_REQUESTER: &str = "session:";

/// A task an agent delegated has finished: the agent is told how, as one line of plain text
/// typed into it as one bracketed paste (then Enter), so it can go on without a person
/// relaying the result.
fn tell_requester(parts: &mut Parts<'_>, task_id: u64) {
    let Some(ticket) = parts.tasks.book.tickets.get(&task_id) else {
        return;
    };
    let Some(session) = ticket
        .requested_by
        .as_deref()
        .and_then(|r| r.strip_prefix(SESSION_REQUESTER))
        .filter(|s| parts.agents.get(s).is_some_and(|a| a.exit.is_none()))
        .map(str::to_string)
    else {
        return;
    };
    let result = ticket.result.clone().unwrap_or_default();
    let mut text = format!(
        "[orchestra] task {task_id} ({}) {}",
        ticket.agent_type,
        ticket.status().as_str()
    );
    if !result.message.is_empty() {
        text.push_str(&format!(": {}", crate::bounded(&result.message)));
    }
    if !result.files_modified.is_empty() {
        text.push_str(&format!(" (files: {})", result.files_modified.join(", ")));
    }
    if let Some(passed) = result.tests_passed {
        text.push_str(if passed {
            " (tests passed)"
        } else {
            " (tests failed)"
        });
    }
    // One bracketed paste of plain text: the result's words (an agent's output, file
    // names) cannot press Enter or send keys into the delegating agent.
    let text = crate::panes::input::plain_line(&text);
    if let Err((_, why)) =
        parts
            .panes
            .type_input(parts.ctx, &session, Typing::Report(text.clone()), None)
    {
        log::warn!("{session}: cannot tell it how task {task_id} ended: {why}");
        return;
    }
    parts
        .for_agents()
        .remember(&session, Role::User, text, None);
}

/// Forgets the tickets that finished longest ago beyond `tasks.keep_finished`, never
/// `keep` (the one that just finished).
pub fn prune(parts: &mut Parts<'_>, keep: u64) {
    let limit = parts.ctx.config.tasks.keep_finished;
    let mut finished: Vec<(u64, u64)> = parts
        .tasks
        .book
        .tickets
        .values()
        .filter(|t| t.phase.is_done() && t.task_id != keep)
        .map(|t| (t.completed_ms.unwrap_or(0), t.task_id))
        .collect();
    // `keep` counts against the limit too.
    let kept = usize::from(parts.tasks.book.tickets.contains_key(&keep));
    let excess = (finished.len() + kept).saturating_sub(limit);
    if excess == 0 {
        return;
    }
    finished.sort_unstable();
    for (_, task_id) in finished.into_iter().take(excess) {
        if let Some(ticket) = parts.tasks.book.tickets.remove(&task_id) {
            parts.tasks.book.by_ticket.remove(&ticket.ticket_id);
            parts.tasks.store.remove(task_id);
        }
    }
}

/// Sends a `task_update` for a ticket to every observer.
fn announce(parts: &mut Parts<'_>, task_id: u64) {
    let Some(ticket) = parts.tasks.book.tickets.get(&task_id) else {
        return;
    };
    let message = ServerMessage::TaskUpdate {
        task_id,
        ticket_id: &ticket.ticket_id,
        session_id: &ticket.session_id,
        agent: &ticket.agent_type,
        status: ticket.status().as_str(),
        elapsed_ms: ticket.elapsed_ms(now_ms()),
        result: ticket.result.as_ref(),
    };
    parts.ctx.ws.send_to_all(&mut parts.ctx.metrics, &message);
}

fn schedule_progress(parts: &mut Parts<'_>) {
    if !parts.tasks.book.progress_scheduled {
        parts.tasks.book.progress_scheduled = true;
        let every = parts.ctx.config.tasks.progress_interval;
        parts.ctx.timers.schedule_in(every, Timer::TaskProgress);
    }
}

/// The progress timer: a `task_update` with `elapsed_ms` for every running ticket.
pub fn on_progress(parts: &mut Parts<'_>) {
    parts.tasks.book.progress_scheduled = false;
    let running: Vec<u64> = parts
        .tasks
        .book
        .tickets
        .values()
        .filter(|t| t.phase == Phase::Running)
        .map(|t| t.task_id)
        .collect();
    for task_id in &running {
        announce(parts, *task_id);
    }
    if parts.tasks.book.active().next().is_some() {
        schedule_progress(parts);
    }
}

/// After a restart (sessions already adopted): carries every unfinished ticket on by the
/// rules in docs/api.md ("Nothing lost"), then starts what the slots allow.
pub fn recover(parts: &mut Parts<'_>) {
    let unfinished: Vec<u64> = parts
        .tasks
        .book
        .tickets
        .values()
        .filter(|t| !t.phase.is_done())
        .map(|t| t.task_id)
        .collect();
    // Tasks whose session was being created as the previous daemon stopped, and whose spawn
    // spec is gone: its agent claimed it (so its session exists, created after the listing
    // at start), or it was never written. Decided once the sessions are listed again.
    let mut claimed_or_unwritten = Vec::new();
    for task_id in unfinished {
        let ticket = &parts.tasks.book.tickets[&task_id];
        if ticket.phase == Phase::Launched && parts.agents.get(&ticket.session_id).is_none() {
            let spec = manager::spec_path(&parts.ctx.config, &ticket.session_id);
            match crate::agents::exec::withdraw_spec(&spec) {
                Ok(true) => withdrawn(parts, task_id),
                Ok(false) => claimed_or_unwritten.push(task_id),
                Err(e) => {
                    // Its agent could still claim the spec: the task must not run twice.
                    log::warn!("task {task_id}: cannot withdraw {}: {e}", spec.display());
                    let reason = format!(
                        "the daemon restarted while its session was being created, and its \
                         spawn spec could not be withdrawn ({e}), so it was not started again"
                    );
                    finish_without_agent(parts, task_id, Ending::SpawnFailed { reason });
                }
            }
            continue;
        }
        recover_one(parts, task_id);
    }
    if !claimed_or_unwritten.is_empty() {
        if let Err(e) = manager::adopt(&mut parts.for_agents()) {
            log::warn!("could not look for sessions again: {e}");
        }
        crate::agents::pty_session::adopt(&mut parts.for_agents());
        for task_id in claimed_or_unwritten {
            let session_id = parts.tasks.book.tickets[&task_id].session_id.clone();
            // With no session either, the previous daemon stopped before writing the spec,
            // so it never asked for the session: queued again under the same name.
            if parts.agents.get(&session_id).is_some() {
                log::info!("task {task_id}: its session started as the daemon restarted");
            }
            recover_one(parts, task_id);
        }
    }
    remove_leftover_sessions(parts);
    prune(parts, u64::MAX);
    schedule(parts);
}

/// Picks up one unfinished ticket after a restart, by its phase and whether its session
/// lives (see "Nothing lost" in docs/api.md).
fn recover_one(parts: &mut Parts<'_>, task_id: u64) {
    let now = now_ms();
    let ticket = parts.tasks.book.tickets.get_mut(&task_id).expect("listed");
    let agent = parts.agents.get(&ticket.session_id);
    match (ticket.phase, agent) {
        (Phase::Done(_) | Phase::Proposed, _) => {}
        (Phase::Queued | Phase::Preparing, None) => {
            ticket.phase = Phase::Queued;
            parts.tasks.book.queue.insert(task_id);
        }
        (Phase::Launched, None) => {
            log::info!("task {task_id}: its session was never asked for; queued again");
            ticket.phase = Phase::Queued;
            parts.tasks.book.queue.insert(task_id);
        }
        (Phase::Finishing, _) => {
            parts
                .tasks
                .book
                .by_session
                .insert(ticket.session_id.clone(), task_id);
            let ending = ticket.ending.clone().unwrap_or(Ending::Lost {
                reason: "the daemon restarted while the result was computed".into(),
            });
            log::info!("task {task_id}: computing its result again after a restart");
            begin_finish(parts, task_id, ending);
        }
        (Phase::Running, None) => {
            parts
                .tasks
                .book
                .by_session
                .insert(ticket.session_id.clone(), task_id);
            log::warn!("task {task_id}: its session vanished while the daemon was down");
            begin_finish(
                parts,
                task_id,
                Ending::Lost {
                    reason: "it vanished while the daemon was down".into(),
                },
            );
        }
        (_, Some(agent)) => {
            let exited = agent.exit;
            let created = crate::time::unix_millis(agent.created_at);
            ticket.phase = Phase::Running;
            let started = *ticket.started_ms.get_or_insert(created);
            parts
                .tasks
                .book
                .by_session
                .insert(ticket.session_id.clone(), task_id);
            let left = (started + ticket.timeout_ms).saturating_sub(now);
            parts.tasks.store.put(&ticket.clone(), None);
            if let Some(exit) = exited {
                log::info!("task {task_id}: its agent ended while the daemon was down");
                let session_id = parts.tasks.book.tickets[&task_id].session_id.clone();
                on_agent_exit(parts, &session_id, exit);
            } else {
                log::info!("task {task_id}: still running; tracking it again");
                parts
                    .ctx
                    .timers
                    .schedule_in(Duration::from_millis(left), Timer::TaskTimeout(task_id));
                schedule_progress(parts);
                // A timeout or cancel that was under way when the daemon went down.
                if parts.tasks.book.tickets[&task_id].stopping.is_some() {
                    stop_agent(parts, task_id);
                }
            }
        }
    }
}

/// A task whose spawn spec was withdrawn before any agent claimed it: no agent will ever
/// start from it (a session the previous daemon's tmux call still creates ends at once,
/// finding nothing), so it is queued again, under a new session name so that such a late
/// session cannot collide with it.
fn withdrawn(parts: &mut Parts<'_>, task_id: u64) {
    let ticket = parts.tasks.book.tickets.get_mut(&task_id).expect("listed");
    let (session_id, name) = new_session_ids(&ticket.agent_type);
    log::info!(
        "task {task_id}: its session {} never started; withdrew its spawn spec and queued it \
         again as {session_id}",
        ticket.session_id
    );
    let old = std::mem::replace(&mut ticket.session_id, session_id);
    ticket.withdrawn_sessions.push(old);
    ticket.tmux_session = name.as_str().to_string();
    ticket.phase = Phase::Queued;
    let stored = ticket.clone();
    parts.tasks.store.put(&stored, None);
    parts.tasks.book.queue.insert(task_id);
}

/// Removes what a restart found left of tasks: the sessions of finished tasks (the
/// previous daemon stopped between storing the result and removing the session, unless
/// `tasks.keep_sessions`), and sessions created late for a spawn spec a restart withdrew
/// (their agent never started).
fn remove_leftover_sessions(parts: &mut Parts<'_>) {
    let keep = parts.ctx.config.tasks.keep_sessions;
    let leftovers: Vec<(u64, String)> = parts
        .tasks
        .book
        .tickets
        .values()
        .flat_map(|t| {
            let finished = (!keep && t.phase.is_done()).then(|| t.session_id.clone());
            t.withdrawn_sessions
                .iter()
                .cloned()
                .chain(finished)
                .map(|session| (t.task_id, session))
                .collect::<Vec<_>>()
        })
        .filter(|(_, session)| parts.agents.get(session).is_some())
        .collect();
    for (task_id, session_id) in leftovers {
        log::info!(
            "task {task_id}: removing its session {session_id}, left from before the restart"
        );
        manager::kill(&mut parts.for_agents(), &session_id, Box::new(|_, _| {}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ending_has_its_outcome_code_and_words() {
        let exited = |exit_code, exit_signal| Ending::Exited {
            exit_code,
            exit_signal,
        };
        let table = [
            (exited(Some(0), None), Outcome::Completed, None, None),
            (
                exited(Some(3), None),
                Outcome::Failed,
                None,
                Some("the agent exited with status 3"),
            ),
            (
                exited(None, Some(9)),
                Outcome::Failed,
                Some(ErrorCode::AgentCrashed),
                Some("the agent was killed by signal 9"),
            ),
            (
                exited(None, None),
                Outcome::Failed,
                Some(ErrorCode::AgentCrashed),
                Some("the agent ended; tmux could not tell its exit status"),
            ),
            (
                Ending::TimedOut,
                Outcome::Timeout,
                Some(ErrorCode::TaskTimeout),
                Some("the task exceeded its timeout of 500 ms"),
            ),
            (
                Ending::Cancelled,
                Outcome::Cancelled,
                Some(ErrorCode::TaskCancelled),
                Some("the task was cancelled"),
            ),
            (
                Ending::Lost {
                    reason: "it was killed through the API".into(),
                },
                Outcome::Failed,
                Some(ErrorCode::AgentCrashed),
                Some("the agent's session ended: it was killed through the API"),
            ),
            (
                Ending::SpawnFailed {
                    reason: "no such program".into(),
                },
                Outcome::Failed,
                Some(ErrorCode::AgentSpawnFailed),
                Some("no such program"),
            ),
        ];
        for (ending, outcome, code, words) in table {
            let got = outcome_of(&ending, 500);
            assert_eq!(
                (got.0, got.1, got.2.as_deref()),
                (outcome, code, words),
                "{ending:?}"
            );
        }
    }
}
