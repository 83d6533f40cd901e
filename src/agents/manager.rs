//! Agent lifecycle operations: spawn, kill, describe, exit detection and re-adoption after a
//! restart. Each runs its blocking part (tmux, /proc, signals) on a worker and finishes on
//! the loop through a continuation.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mio::Interest;

use super::Agents;
use super::Parts;
use super::error::{KillError, SpawnError};
use super::exec::{SpawnSpec, find_program, write_spec};
use super::hook_client;
use super::meta::SessionMeta;
use super::procfs;
use super::validate::{EnvPolicy, PrivateDirs, resolve_working_dir, validate_env};
use super::{Agent, AgentEvent, AgentStatus, ExitInfo, SessionBackend, new_session_ids};
use crate::config::{AgentType, Backend, Config, HookStyle};
use crate::ctx::{Done, Source, then};
use crate::error_code::ErrorCode;
use crate::panes::attach;
use crate::panes::pane::{CaptureState, PaneSpec, RearmReason};
use crate::tmux::{self, PaneId, PaneState, SessionName, Tmux, TmuxError};

/// What a spawn request asks for.
#[derive(Debug, Clone)]
pub struct SpawnParams {
    /// Agent type name.
    pub agent_type: String,
    /// Requested working directory (default: the first allowed root).
    pub working_dir: Option<String>,
    /// Extra environment from the request (validated here).
    pub env: BTreeMap<String, String>,
    /// Runs this argv instead of the type's interactive command (delegated tasks).
    pub command: Option<Vec<String>>,
    /// Session id and tmux name chosen beforehand (a task's are assigned with its ticket).
    pub ids: Option<(String, SessionName)>,
    /// Environment set by the daemon itself (not subject to the request policy).
    pub daemon_env: BTreeMap<String, String>,
    /// A directory the daemon made (a task's worktree) that `working_dir` may also lie in.
    pub extra_root: Option<PathBuf>,
    /// Started by the daemon itself (a task, bounded by `tasks.max_running`) rather than by
    /// a request: queued even when the workers' queue is full, never refused for it.
    pub internal: bool,
    /// A name for the session: its id becomes `sess-<type>-<name>`.
    pub name: Option<String>,
    /// A private file the agent reads as its standard input (a task's prompt), so that the
    /// text never appears on a command line.
    pub stdin: Option<PathBuf>,
    /// Starts a lost session again (its ids are in `ids`).
    pub resume: Option<ResumeFrom>,
}

/// What a lost session is started again with.
#[derive(Debug, Clone)]
pub struct ResumeFrom {
    /// The type's command with its resume arguments; `None`: the type's own command.
    pub argv: Option<Vec<String>>,
    /// The session's record (its environment, creation time and CLI session).
    pub record: super::record::AgentRecord,
}

impl SpawnParams {
    /// A plain spawn request: the type's own command in `working_dir`.
    pub fn new(
        agent_type: String,
        working_dir: Option<String>,
        env: BTreeMap<String, String>,
    ) -> Self {
        SpawnParams {
            agent_type,
            working_dir,
            env,
            command: None,
            ids: None,
            daemon_env: BTreeMap::new(),
            extra_root: None,
            internal: false,
            name: None,
            stdin: None,
            resume: None,
        }
    }
}

/// What a finished spawn produced, for the response.
#[derive(Debug, Clone)]
pub struct Spawned {
    /// Session id.
    pub session_id: String,
}

/// Everything the spawn job needs, moved to the worker.
struct SpawnJob {
    tmux: Tmux,
    session_id: String,
    name: SessionName,
    agent_type: String,
    command: Vec<String>,
    type_env: BTreeMap<String, String>,
    request_env: BTreeMap<String, String>,
    working_dir: Option<String>,
    roots: Vec<PathBuf>,
    private: PrivateDirs,
    spec_path: PathBuf,
    exe: PathBuf,
    pipe_command: String,
    /// The pipe's attach token and the private file the pipe helper reads it from.
    pipe_token: String,
    pipe_token_file: PathBuf,
    width: u16,
    height: u16,
    hooks: Option<HookSetup>,
    backend: Backend,
    pty: super::pty_session::PtySetup,
    stdin: Option<PathBuf>,
    /// The session's record to keep on disk (sessions spawned through the API, and resumed
    /// ones); its directory and time are filled in once the session exists.
    record: Option<super::record::AgentRecord>,
    /// Whether this starts a lost session again.
    resuming: bool,
    /// Where records are written.
    records_dir: PathBuf,
    /// An interactive session (the type's own command, in a terminal), not a one-shot run.
    interactive: bool,
}

/// How a session of an agent type with hooks reports to the daemon.
struct HookSetup {
    /// The session's credential.
    token: String,
    /// The hook socket.
    socket: PathBuf,
    /// The settings file passed with `--settings`.
    settings: PathBuf,
    /// How long a hook waits for the daemon.
    client_timeout: Duration,
    /// How long a permission request waits for a person.
    approval_timeout: Duration,
    /// The CLI's hook protocol.
    style: HookStyle,
}

/// Result of the spawn job.
struct SpawnOutcome {
    placed: Placed,
    working_dir: PathBuf,
    created_at: SystemTime,
    /// The session's record as written to disk before its terminal was made.
    record: Option<super::record::AgentRecord>,
}

/// Where a new session runs.
enum Placed {
    /// A new tmux session's pane.
    Tmux {
        pane: PaneId,
        pid: u32,
        server_pid: u32,
    },
    /// A new pty holder's hand-over.
    Pty(crate::pty::link::Attached),
}

/// Creates a session. `done` gets the new session's id or the error to answer with.
pub fn spawn(parts: &mut Parts<'_>, params: SpawnParams, done: Done<Result<Spawned, SpawnError>>) {
    let config = parts.ctx.config.clone();
    let daemon_state = DaemonLoad {
        shutting_down: parts.ctx.shutting_down,
        quick_pool: parts.ctx.jobs.name(),
        quick_pool_has_room: parts.ctx.jobs.has_room(),
        live_sessions: parts.agents.live_and_spawning(),
    };
    let agent_type = match admit(&config, &params, &daemon_state) {
        Ok(agent_type) => agent_type,
        Err(error) => return parts.ctx.finish(done, Err(error)),
    };
    let (session_id, name) = match free_session_ids(parts, &params) {
        Ok(ids) => ids,
        Err(error) => return parts.ctx.finish(done, Err(error)),
    };
    let mut roots = config.sessions.allowed_roots.clone();
    roots.extend(params.extra_root.clone());
    // Sessions spawned through the API are remembered so that they can be started again.
    let resuming = params.resume.is_some();
    let record = match &params.resume {
        Some(from) => Some(from.record.clone()),
        None if params.command.is_none() && !params.internal => Some(super::resume::new_record(
            &session_id,
            &params.agent_type,
            &params.env,
            agent_type.backend,
        )),
        None => None,
    };
    let resume_argv = params.resume.and_then(|from| from.argv);
    let interactive = params.command.is_none();
    let mut request_env = params.env;
    let token = attach::new_token();
    let token_file = attach::token_file(&config.spawn_dir());
    parts.panes.expect_attach(token.clone(), session_id.clone());
    // Hooks report the interactive CLI's turns; a delegated task's one-shot run has none.
    let hooks = agent_type
        .hooks
        .filter(|_| params.command.is_none())
        .map(|style| hook_setup(parts, &config, &session_id, style));
    parts.agents.registry.pending_spawns += 1;
    let job = SpawnJob {
        tmux: parts.ctx.tmux.clone(),
        session_id: session_id.clone(),
        name,
        agent_type: params.agent_type.clone(),
        command: params
            .command
            .or(resume_argv)
            .unwrap_or_else(|| agent_type.command.clone()),
        type_env: agent_type.env.clone(),
        request_env: {
            request_env.extend(params.daemon_env);
            request_env
        },
        working_dir: params.working_dir,
        roots,
        private: PrivateDirs::of(&config),
        spec_path: spec_path(&config, &session_id),
        exe: parts.ctx.exe.clone(),
        pipe_command: attach::pipe_command(&parts.ctx.exe, &config.attach_socket(), &token_file),
        pipe_token: token,
        pipe_token_file: token_file,
        width: config.tmux.width,
        height: config.tmux.height,
        hooks,
        backend: agent_type.backend,
        pty: super::pty_session::PtySetup::of(&config),
        stdin: params.stdin,
        record,
        resuming,
        records_dir: config.agents_dir(),
        interactive,
    };
    parts.ctx.jobs.run(move || {
        let result = run_spawn(&job);
        then::<Agents>(move |mut reach: Parts<'_>| {
            let parts = &mut reach;
            parts.agents.registry.pending_spawns -= 1;
            match result {
                Ok(outcome) => {
                    let session_id = job.session_id.clone();
                    register_spawned(parts, job, outcome);
                    parts.ctx.finish(done, Ok(Spawned { session_id }));
                }
                Err(error) => {
                    parts.panes.forget_attach(&job.session_id);
                    parts.agents.hook_tokens.retain(|_, s| s != &job.session_id);
                    log::warn!("spawn of a {} agent failed: {error}", job.agent_type);
                    parts.ctx.finish(done, Err(error));
                }
            }
        })
    });
}

/// The ids of a new session: the ones asked for, its name's, or fresh ones; refused when a
/// session has them or is being created with them.
fn free_session_ids(
    parts: &Parts<'_>,
    params: &SpawnParams,
) -> Result<(String, SessionName), SpawnError> {
    let (session_id, name) = match (&params.ids, &params.name) {
        (Some(ids), _) => ids.clone(),
        (None, Some(name)) => named_session_ids(&params.agent_type, name)
            .ok_or_else(|| SpawnError::InvalidName(name.clone()))?,
        (None, None) => new_session_ids(&params.agent_type),
    };
    // A session being created holds its attach token already.
    let pending = parts.panes.is_attaching(&session_id);
    if params.resume.is_some() {
        // Only a lost session comes back, and only once at a time.
        let lost = parts
            .agents
            .registry
            .get(&session_id)
            .is_some_and(|a| !a.backend.has_terminal());
        return if lost && !pending {
            Ok((session_id, name))
        } else {
            Err(SpawnError::NotLost(session_id))
        };
    }
    if parts.agents.registry.get(&session_id).is_some() || pending {
        return Err(if params.name.is_some() {
            SpawnError::NameTaken(session_id)
        } else {
            SpawnError::IdTaken(session_id)
        });
    }
    Ok((session_id, name))
}

/// A new hook credential for session `session_id`, and where its hooks report.
fn hook_setup(
    parts: &mut Parts<'_>,
    config: &Config,
    session_id: &str,
    style: HookStyle,
) -> HookSetup {
    let token = attach::new_token();
    parts
        .agents
        .hook_tokens
        .insert(token.clone(), session_id.to_string());
    HookSetup {
        token,
        socket: config.hook_socket(),
        settings: config.hooks_dir().join(format!("{session_id}.json")),
        client_timeout: config.hooks.client_timeout,
        approval_timeout: config.hooks.approval_timeout,
        style,
    }
}

/// A spawn's session exists: it becomes an agent with a pane.
fn register_spawned(parts: &mut Parts<'_>, job: SpawnJob, outcome: SpawnOutcome) {
    let (backend, pid, attached) = match outcome.placed {
        Placed::Tmux {
            pane,
            pid,
            server_pid,
        } => (SessionBackend::Tmux { pane, server_pid }, pid, None),
        Placed::Pty(attached) => (
            SessionBackend::Pty {
                holder_pid: attached.hello.holder_pid,
            },
            attached.hello.pid,
            Some(attached),
        ),
    };
    let mut agent = Agent::new(
        job.session_id.clone(),
        job.agent_type.clone(),
        job.name.clone(),
        backend,
        pid,
        outcome.working_dir,
        outcome.created_at,
    );
    if let Some(record) = outcome.record {
        if job.resuming {
            // The same agent as before: its creation time and conversation stay.
            agent.created_at = UNIX_EPOCH + Duration::from_millis(record.created_ms);
            let lost = parts.agents.registry.remove(&agent.id);
            super::resume::take_over_lost(lost, &mut agent);
        }
        agent.record = Some(record);
    }
    let pane = pane_spec(&parts.ctx.config, &agent, job.height, job.width);
    agent.hook_token = job.hooks.as_ref().map(|h| h.token.clone());
    // Codex reports SessionStart only with the first prompt: its screen says when it starts.
    let lazy_start = parts
        .ctx
        .config
        .agents
        .get(&agent.agent_type)
        .is_some_and(|t| t.hooks == Some(HookStyle::Codex));
    if agent.hook_token.is_some() {
        agent.activity = if lazy_start {
            super::activity::ActivityState::starts_on_screen(SystemTime::now())
        } else {
            // Followed by its hooks alone from the start: `starting` until SessionStart.
            super::activity::ActivityState::hooked(SystemTime::now())
        };
    }
    let place = match agent.backend.pane() {
        Some(pane) => format!("pane {pane}"),
        None => "a pty".to_string(),
    };
    log::info!(
        "spawned {} ({}) in {} as {place} pid {}",
        agent.id,
        agent.agent_type,
        agent.working_dir.display(),
        agent.pid
    );
    let session_id = agent.id.clone();
    let hooked = agent.hook_token.is_some();
    match attached {
        None => register(parts, agent, pane, None),
        Some(attached) => super::pty_session::register(parts, agent, pane, attached, false),
    }
    if hooked {
        let hooks = &parts.ctx.config.hooks;
        let (settle, wait) = (hooks.prompt_settle, hooks.prompt_wait);
        parts.panes.hold_input(parts.ctx, &session_id, settle, wait);
    }
    if job.resuming {
        parts.refresh_status(&session_id);
    }
}

/// The private file that keeps a tmux session's hook credential across daemon restarts
/// (beside its hook settings, `<state_dir>/hooks/<session>.token`): never on a command line.
fn hook_token_file(settings: &std::path::Path) -> PathBuf {
    settings.with_extension("token")
}

/// Writes `bytes` to a new file at `path` that only this user can read (replacing an old one).
pub(super) fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut file, bytes)
}

/// The ids of a session named `name` (`sess-<type>-<name>`, tmux `agent-<type>-<name>`), if
/// the name is valid.
fn named_session_ids(agent_type: &str, name: &str) -> Option<(String, SessionName)> {
    if !tmux::command::is_session_suffix(name) {
        return None;
    }
    let tmux_name = SessionName::parse(&format!("agent-{agent_type}-{name}"))?;
    Some((format!("sess-{agent_type}-{name}"), tmux_name))
}

/// What a spawn's admission depends on besides the request and the configuration.
#[derive(Debug, Clone)]
struct DaemonLoad {
    shutting_down: bool,
    quick_pool: &'static str,
    quick_pool_has_room: bool,
    /// Sessions that exist or are being created.
    live_sessions: usize,
}

/// The checks a spawn passes before any work starts, in the order a caller should fix
/// them: the type, the environment, then whether the daemon can take it now. Pure.
fn admit<'c>(
    config: &'c Config,
    params: &SpawnParams,
    load: &DaemonLoad,
) -> Result<&'c AgentType, SpawnError> {
    let Some(agent_type) = config.agents.get(&params.agent_type) else {
        return Err(SpawnError::UnknownType {
            name: params.agent_type.clone(),
            known: config.agents.keys().cloned().collect(),
        });
    };
    let policy = EnvPolicy {
        allowed: &config.sessions.allowed_env,
        max_vars: config.sessions.max_env_vars,
        max_value_bytes: config.sessions.max_env_value_bytes,
    };
    validate_env(&params.env, &policy).map_err(SpawnError::InvalidEnv)?;
    if load.shutting_down {
        return Err(SpawnError::ShuttingDown);
    }
    // The daemon's own spawns (tasks) are bounded by tasks.max_running instead.
    if !params.internal && !load.quick_pool_has_room {
        return Err(SpawnError::WorkersBusy {
            pool: load.quick_pool,
        });
    }
    if load.live_sessions >= config.sessions.max_sessions {
        return Err(SpawnError::SessionLimit {
            live: load.live_sessions,
        });
    }
    Ok(agent_type)
}

/// The blocking part of a spawn: filesystem checks, spec file, tmux.
fn run_spawn(job: &SpawnJob) -> Result<SpawnOutcome, SpawnError> {
    let requested = match &job.working_dir {
        Some(dir) => dir.clone(),
        None => job
            .roots
            .first()
            .map(|r| r.display().to_string())
            .ok_or(SpawnError::NoWorkingDir)?,
    };
    let working_dir = resolve_working_dir(&requested, &job.roots, &job.private)
        .map_err(SpawnError::InvalidWorkingDir)?;
    let path_var = job
        .request_env
        .get("PATH")
        .or_else(|| job.type_env.get("PATH"))
        .cloned()
        .or_else(|| std::env::var("PATH").ok());
    let program = &job.command[0];
    if find_program(program, path_var.as_deref()).is_none() {
        return Err(SpawnError::Failed(format!(
            "agent type {:?} runs {program:?}, which is not installed (not found in PATH)",
            job.agent_type
        )));
    }
    let mut env = job.type_env.clone();
    env.extend(job.request_env.clone());
    env.insert("ORCHESTRA_SESSION_ID".into(), job.session_id.clone());
    if job.backend == Backend::Pty {
        // tmux sets TERM in its panes; a bare pseudo-terminal gets what xterm.js and most
        // terminals speak, unless the type or the request chose.
        env.entry("TERM".into())
            .or_insert_with(|| "xterm-256color".into());
    }
    let mut argv = job.command.clone();
    if let Some(hooks) = &job.hooks {
        argv = write_hook_files(job, hooks, &argv, &mut env)?;
    }
    let mut unset = vec!["TMUX".to_string()];
    if job.interactive {
        // Names that are not UTF-8 are no CI marker (and must not panic the worker).
        let inherited = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
        unset.extend(ci_markers(inherited, &env));
    }
    let spec = SpawnSpec {
        argv,
        env,
        unset,
        cwd: working_dir.clone(),
        stdin: job.stdin.clone(),
    };
    if let Some(dir) = job.spec_path.parent() {
        crate::create_private_dir(dir).map_err(SpawnError::Failed)?;
    }
    write_spec(&job.spec_path, &spec)
        .map_err(|e| SpawnError::Failed(format!("cannot write the spawn spec: {e}")))?;
    let created_at = SystemTime::now();
    // The record is on disk before the session exists, so a crash right after the answer
    // still finds the session (lost, if its terminal went with the crash).
    let record = match job.record.clone() {
        Some(mut record) => {
            record.working_dir = working_dir.to_string_lossy().into_owned();
            record.backend = job.backend.as_str().to_string();
            if !job.resuming {
                record.created_ms = crate::time::unix_millis(created_at);
            }
            super::record::write_now(&job.records_dir, &record)
                .map_err(|e| SpawnError::Failed(format!("cannot write the agent record: {e}")))?;
            Some(record)
        }
        None => None,
    };
    let meta = SessionMeta {
        v: SessionMeta::VERSION,
        id: job.session_id.clone(),
        agent_type: job.agent_type.clone(),
        working_dir: working_dir.to_string_lossy().into_owned(),
        created_ms: created_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        hook_token: job.hooks.as_ref().map(|h| h.token.clone()),
    };
    let placed = if job.backend == Backend::Pty {
        super::pty_session::start(
            &job.pty,
            &job.session_id,
            &meta,
            &job.exe,
            &job.spec_path,
            job.height,
            job.width,
        )
        .map(Placed::Pty)
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&job.spec_path);
        })
    } else {
        create_tmux_session(job, meta)
    };
    let placed = placed.inspect_err(|_| {
        // A new session that never started leaves no record (a lost one keeps its own).
        if record.is_some() && !job.resuming {
            let path = super::record::record_path(&job.records_dir, &job.session_id);
            let _ = std::fs::remove_file(path);
        }
    })?;
    Ok(SpawnOutcome {
        placed,
        working_dir,
        created_at,
        record,
    })
}

/// The variables of `inherited` that tell a program it runs under continuous integration
/// (`CI`, `CONTINUOUS_INTEGRATION`, `CI_*`), unless the session's own environment sets them.
/// An interactive session runs in a terminal, and TUIs that see them stop taking input
/// (Gemini CLI does), so they are not passed on to it; one-shot runs keep them.
fn ci_markers(
    inherited: impl Iterator<Item = String>,
    env: &BTreeMap<String, String>,
) -> Vec<String> {
    inherited
        .filter(|name| name == "CI" || name == "CONTINUOUS_INTEGRATION" || name.starts_with("CI_"))
        .filter(|name| !env.contains_key(name))
        .collect()
}

/// Writes a hooked session's hook settings and MCP configuration, and gives the agent the
/// variables its hooks report with. Returns the argv that loads them.
fn write_hook_files(
    job: &SpawnJob,
    hooks: &HookSetup,
    argv: &[String],
    env: &mut BTreeMap<String, String>,
) -> Result<Vec<String>, SpawnError> {
    hook_env(hooks, env);
    if let Some(dir) = hooks.settings.parent() {
        // The hook credential is kept there for tmux sessions, whatever the style.
        crate::create_private_dir(dir).map_err(SpawnError::Failed)?;
    }
    if hooks.style == HookStyle::Codex {
        return Ok(super::codex::with_hooks(
            argv,
            &job.exe,
            hooks.client_timeout,
            hooks.approval_timeout,
        ));
    }
    if hooks.style == HookStyle::Gemini {
        let ours = super::gemini::daemon_settings(&job.exe, hooks.client_timeout);
        let user_root = super::gemini::user_root(env).ok_or_else(|| {
            SpawnError::Failed("no home directory for Gemini CLI's settings (set HOME)".into())
        })?;
        let own = super::gemini::session_root(&hooks.settings);
        super::gemini::prepare_home(&user_root, &own, &ours)
            .map_err(|e| SpawnError::Failed(format!("cannot prepare Gemini CLI's home: {e}")))?;
        env.insert(super::gemini::HOME_ENV.into(), own.display().to_string());
        return Ok(argv.to_vec());
    }
    let settings =
        super::claude::hook_settings(&job.exe, hooks.client_timeout, hooks.approval_timeout);
    write_private(&hooks.settings, settings.to_string().as_bytes())
        .map_err(|e| SpawnError::Failed(format!("cannot write the hook settings: {e}")))?;
    let mcp = hooks.settings.with_extension("mcp.json");
    write_private(
        &mcp,
        super::mcp::mcp_config(&job.exe).to_string().as_bytes(),
    )
    .map_err(|e| SpawnError::Failed(format!("cannot write the MCP config: {e}")))?;
    Ok(super::claude::with_settings(argv, &hooks.settings, &mcp))
}

/// Gives a hooked agent the variables its hooks (and MCP server) report with.
fn hook_env(hooks: &HookSetup, env: &mut BTreeMap<String, String>) {
    env.insert(
        hook_client::SOCKET_ENV.into(),
        hooks.socket.display().to_string(),
    );
    env.insert(hook_client::TOKEN_ENV.into(), hooks.token.clone());
    env.insert(
        hook_client::TIMEOUT_ENV.into(),
        hooks.client_timeout.as_millis().to_string(),
    );
    env.insert(
        hook_client::APPROVAL_TIMEOUT_ENV.into(),
        (hooks.approval_timeout + hooks.client_timeout)
            .as_millis()
            .to_string(),
    );
}

/// Creates the session's tmux session, its pipe attached in the same command list, running
/// `orchestra agent-exec` on the spec already written. Files written for it are removed
/// again when it cannot be created.
fn create_tmux_session(job: &SpawnJob, meta: SessionMeta) -> Result<Placed, SpawnError> {
    let spawn_failed = SpawnError::Failed;
    log::debug!("{}: creating tmux session {}", job.session_id, job.name);
    let program: Vec<OsString> = vec![
        job.exe.clone().into(),
        "agent-exec".into(),
        job.spec_path.clone().into(),
    ];
    // The metadata travels on tmux's command line (and stays in its server's), so the hook
    // credential is kept in a private file beside the hook settings instead.
    if let Some(hooks) = &job.hooks {
        write_private(&hook_token_file(&hooks.settings), hooks.token.as_bytes()).map_err(|e| {
            let _ = std::fs::remove_file(&job.spec_path);
            spawn_failed(format!("cannot write the hook credential: {e}"))
        })?;
    }
    let public_meta = SessionMeta {
        hook_token: None,
        ..meta
    };
    let encoded = public_meta.encode();
    if let Err(e) = crate::panes::attach::write_token_file(&job.pipe_token_file, &job.pipe_token) {
        let _ = std::fs::remove_file(&job.spec_path);
        return Err(spawn_failed(format!(
            "cannot write the pipe's attach token: {e}"
        )));
    }
    let list = tmux::new_session(&tmux::NewSession {
        name: &job.name,
        width: job.width,
        height: job.height,
        program: &program,
        metadata: &encoded,
        pipe_command: &job.pipe_command,
    })
    .map_err(TmuxError::from);
    let create = || {
        list.clone()
            .and_then(|list| job.tmux.run(&list))
            .and_then(|output| tmux::parse_new_session(&output))
    };
    // The private server exits when its last session ends; a spawn that reaches it just
    // then fails with "server exited unexpectedly". The next try starts a fresh server.
    let result = match create() {
        Err(TmuxError::NoServer) => create(),
        other => other,
    };
    job.tmux.make_socket_private();
    match result {
        Ok((pane, pid, server_pid)) => Ok(Placed::Tmux {
            pane,
            pid,
            server_pid,
        }),
        Err(error) => {
            let _ = std::fs::remove_file(&job.spec_path);
            let _ = std::fs::remove_file(&job.pipe_token_file);
            if let Some(hooks) = &job.hooks {
                let _ = std::fs::remove_file(hook_token_file(&hooks.settings));
            }
            Err(spawn_failed(format!(
                "cannot create the tmux session: {error}"
            )))
        }
    }
}

/// Adds an agent to the registry and starts watching its process and output. `adopted` is
/// tmux's view of a pane found after a restart (which may already be dead); `None` for a
/// pane the daemon just created (its pipe was attached with it, so its stream starts blank).
fn register(parts: &mut Parts<'_>, mut agent: Agent, pane: PaneSpec, adopted: Option<PaneState>) {
    attach_screen_rules(parts, &mut agent);
    let session_id = agent.id.clone();
    parts.agents.registry.insert(agent);
    parts.panes.register(&session_id, pane);
    match adopted {
        None => parts.panes.open_new_stream(parts.ctx, &session_id),
        Some(_) => {
            parts.panes.open_stream(&session_id, 0);
        }
    }
    parts.schedule_idle_check(&session_id);
    match adopted.and_then(ExitInfo::from_pane_state) {
        Some(ExitInfo::Unknown) => on_process_exit(parts, &session_id),
        Some(exit) => {
            if let Some(agent) = parts.agents.registry.get_mut(&session_id) {
                agent.exit = Some(exit);
                agent.activity.on_exit(SystemTime::now());
                agent.reported =
                    agent.status(SystemTime::now(), parts.ctx.config.sessions.idle_after);
                agent.reported_activity = agent.activity.activity;
            }
            parts.panes.mark_exited(&session_id);
            parts.panes.seed_dead_pane(parts.ctx, &session_id);
        }
        None => {
            if adopted.is_some() {
                parts
                    .panes
                    .rearm(parts.ctx, &session_id, RearmReason::DaemonRestarted);
            }
            if !watch_exit(parts, &session_id) {
                // Already gone: find out how it ended.
                on_process_exit(parts, &session_id);
            }
        }
    }
}

/// Watches the agent's process for its exit (a pidfd in the loop). False when the process
/// is already gone.
pub(super) fn watch_exit(parts: &mut Parts<'_>, session_id: &str) -> bool {
    let Some(pid) = parts.agents.registry.get(session_id).map(|a| a.pid) else {
        return true;
    };
    let Ok(fd) = crate::sys::pidfd_open(pid) else {
        return false;
    };
    let source = Source::PaneExit {
        session_id: session_id.to_string(),
        fd,
    };
    match parts.ctx.add_source(source, Interest::READABLE) {
        Ok(key) => {
            if let Some(agent) = parts.agents.registry.get_mut(session_id) {
                agent.exit_watch = Some(key);
            }
        }
        Err(e) => log::warn!("{session_id}: cannot watch pid {pid}: {e}"),
    }
    true
}

/// What a session found after a restart gets back, on either backend: its hook credential
/// (from its stored metadata), the activity a restarted daemon starts from, its status and
/// its conversation history (read once at start, before the loop runs).
pub(super) fn restore_adopted(
    parts: &mut Parts<'_>,
    agent: &mut Agent,
    hook_token: Option<&String>,
) {
    agent.reported = agent.status(SystemTime::now(), parts.ctx.config.sessions.idle_after);
    if let Some(token) = hook_token {
        parts
            .agents
            .hook_tokens
            .insert(token.clone(), agent.id.clone());
        agent.hook_token = Some(token.clone());
    }
    agent.activity =
        super::activity::ActivityState::adopted(SystemTime::now(), agent.hook_token.is_some());
    agent.reported_activity = agent.activity.activity;
    // Sessions restored earlier keep theirs first, within the total bound.
    let mut bounds = super::history::Bounds::of(&parts.ctx.config.sessions);
    let left = parts
        .ctx
        .config
        .sessions
        .max_history_total_bytes
        .saturating_sub(parts.history_bytes());
    bounds.max_bytes = bounds.max_bytes.min(left);
    agent.history = parts.agents.history.load(&agent.id, bounds);
}

/// What the pane of `agent` is, `rows` x `cols`, for [`crate::panes::Panes::register`].
pub(super) fn pane_spec(
    config: &crate::config::Config,
    agent: &Agent,
    rows: u16,
    cols: u16,
) -> PaneSpec {
    PaneSpec {
        tmux_pane: agent.backend.pane().cloned(),
        tmux_session: agent.tmux_session.clone(),
        rows,
        cols,
        last_output: agent.last_activity,
        capture: CaptureState::Attaching,
        submit_delay: config
            .agents
            .get(&agent.agent_type)
            .map(|t| t.submit_delay)
            .unwrap_or_default(),
    }
}

/// Gives an agent its type's screen rules (types without hooks that have some, and Codex,
/// whose screen says when it starts).
pub(super) fn attach_screen_rules(parts: &Parts<'_>, agent: &mut Agent) {
    if let Some(agent_type) = parts.ctx.config.agents.get(&agent.agent_type)
        && matches!(agent_type.hooks, None | Some(HookStyle::Codex))
        && !agent_type.screen_rules.is_empty()
    {
        // Validated when the configuration was loaded.
        agent.screen_rules = super::screen::ScreenRules::compile(&agent_type.screen_rules)
            .ok()
            .map(std::sync::Arc::new);
    }
}

/// The agent's process has exited (its pidfd fired): ask tmux how, nudging tmux 3.3a with
/// SIGCHLD when it has lost the status.
pub fn on_process_exit(parts: &mut Parts<'_>, session_id: &str) {
    let Some(agent) = parts.agents.registry.get_mut(session_id) else {
        return;
    };
    agent.exit_watch = None;
    let SessionBackend::Tmux { pane, server_pid } = agent.backend.clone() else {
        // A pty session whose holder is gone: nobody can tell how its agent ended.
        super::pty_session::record_exit(parts, session_id, ExitInfo::Unknown);
        return;
    };
    let tmux = parts.ctx.tmux.clone();
    let session_id = session_id.to_string();
    parts.ctx.kill_jobs.run(move || {
        let outcome = resolve_exit(&tmux, &pane, server_pid);
        then::<Agents>(move |mut reach: Parts<'_>| match outcome {
            Ok(exit) => exited(&mut reach, &session_id, exit),
            Err(TmuxError::PaneNotFound(_)) => {
                session_vanished(&mut reach, &session_id, "its tmux pane no longer exists");
            }
            Err(TmuxError::NoServer) => {
                session_vanished(&mut reach, &session_id, "the tmux server is gone");
            }
            Err(error) => {
                log::warn!("{session_id}: cannot read the exit status: {error}");
                let parts = &mut reach;
                parts.panes.mark_exited(&session_id);
                if let Some(agent) = parts.agents.registry.get_mut(&session_id) {
                    agent.exit = Some(ExitInfo::Unknown);
                    agent.activity.on_exit(SystemTime::now());
                    parts.announce_exit(&session_id);
                    parts.agents.registry.announce(AgentEvent::Exited {
                        session_id: session_id.clone(),
                        exit: ExitInfo::Unknown,
                    });
                }
            }
        })
    });
}

/// Records how an agent's process ended and announces it.
pub(super) fn exited(parts: &mut Parts<'_>, session_id: &str, exit: ExitInfo) {
    parts.panes.mark_exited(session_id);
    if let Some(agent) = parts.agents.registry.get_mut(session_id) {
        agent.exit = Some(exit);
        agent.activity.on_exit(SystemTime::now());
        log::info!("{session_id}: agent process ended ({})", exit.describe());
        parts.announce_exit(session_id);
        parts.agents.registry.announce(AgentEvent::Exited {
            session_id: session_id.to_string(),
            exit,
        });
    }
}

/// Polls tmux (on a worker) until it has marked the pane dead with a status. tmux notices a
/// child's exit asynchronously and 3.3a often loses the status until its server receives
/// SIGCHLD, so the loop nudges it; it gives up after about two seconds.
fn resolve_exit(tmux: &Tmux, pane: &PaneId, server_pid: u32) -> Result<ExitInfo, TmuxError> {
    let list = tmux::describe_pane(pane)?;
    for attempt in 0..100u32 {
        let output = tmux.run(&list)?;
        let info = tmux::parse::parse_pane_line(output.trim_end())
            .ok_or_else(|| TmuxError::BadOutput(output.clone()))?;
        match info.state {
            PaneState::Exited(code) => return Ok(ExitInfo::Code(code)),
            PaneState::Signaled(signal) => return Ok(ExitInfo::Signal(signal)),
            PaneState::DeadUnknown => {
                let _ = crate::sys::kill(server_pid, libc::SIGCHLD);
            }
            PaneState::Alive => {}
        }
        std::thread::sleep(Duration::from_millis(if attempt < 10 { 5 } else { 20 }));
    }
    Ok(ExitInfo::Unknown)
}

/// A session disappeared from tmux without the API killing it: forget it and tell observers.
pub fn session_vanished(parts: &mut Parts<'_>, session_id: &str, why: &str) {
    if let Some(agent) = parts.agents.registry.remove(session_id) {
        log::warn!("{session_id}: session is gone ({why}); no longer listed");
        release_sources(parts, &agent);
        parts.announce_gone(&agent, AgentStatus::Error, Some(why));
        parts.agents.registry.announce(AgentEvent::Gone {
            session_id: session_id.to_string(),
            reason: why.to_string(),
        });
    }
}

/// Releases everything the daemon holds for a session: process watch, hooks, history, and
/// its pane (pipe, holder link, stream, emulator and typing state).
fn release_sources(parts: &mut Parts<'_>, agent: &Agent) {
    if let Some(key) = agent.exit_watch {
        parts.ctx.remove_source(key);
    }
    // Waiting permission requests of the session end; their hooks see the socket close.
    parts
        .agents
        .approvals
        .retain(|_, (a, _)| a.session_id != agent.id);
    if let Some(token) = &agent.hook_token {
        parts.agents.hook_tokens.remove(token);
        remove_hook_files(parts, &agent.id);
    }
    parts.agents.history.remove(&agent.id);
    if agent.record.is_some() {
        parts.agents.records.remove(&agent.id);
    }
    parts.panes.close(parts.ctx, &agent.id);
}

/// Removes a session's hook files (settings, MCP config, credential, a Gemini session's own
/// home) on a worker.
fn remove_hook_files(parts: &mut Parts<'_>, session_id: &str) {
    let settings = parts
        .ctx
        .config
        .hooks_dir()
        .join(format!("{session_id}.json"));
    parts.ctx.jobs.run(move || {
        let _ = std::fs::remove_file(settings.with_extension("mcp.json"));
        // A Gemini session's own home: its settings and links (never followed).
        let _ = std::fs::remove_dir_all(super::gemini::session_root(&settings));
        let _ = std::fs::remove_file(hook_token_file(&settings));
        let _ = std::fs::remove_file(settings);
        Box::new(|_: &mut crate::ctx::World| {})
    });
}

/// Resizes a session's pane to `cols` x `rows` (tmux on a worker); `done` gets the outcome.
pub fn resize(
    parts: &mut Parts<'_>,
    session_id: &str,
    rows: u16,
    cols: u16,
    done: Done<Result<(), (ErrorCode, String)>>,
) {
    let Some(agent) = parts.agents.registry.get(session_id) else {
        let why = format!("no agent session {}", crate::shown(session_id));
        return parts
            .ctx
            .finish(done, Err((ErrorCode::SessionNotFound, why)));
    };
    if agent.exit.is_some() {
        let why = format!("the agent of {session_id} has exited");
        return parts
            .ctx
            .finish(done, Err((ErrorCode::SessionNotFound, why)));
    }
    if agent.backend.pane().is_none() {
        // A pty session: one ioctl on the master, no process to wait for.
        let result = parts.panes.resize_pty(parts.ctx, session_id, rows, cols);
        return parts.ctx.finish(done, result);
    }
    if !parts.ctx.jobs.has_room() {
        let why = "the daemon's workers are all busy; retry shortly".to_string();
        return parts.ctx.finish(done, Err((ErrorCode::Overloaded, why)));
    }
    let (tmux, name, session_id) = (
        parts.ctx.tmux.clone(),
        agent.tmux_session.clone(),
        session_id.to_string(),
    );
    parts.ctx.jobs.run(move || {
        let result = tmux::resize_window(&name, cols, rows)
            .map_err(TmuxError::from)
            .and_then(|list| tmux.run(&list));
        then::<Agents>(move |reach: Parts<'_>| match result {
            Ok(_) => {
                reach.panes.resized(&session_id, rows, cols);
                reach.ctx.finish(done, Ok(()))
            }
            Err(error) => reach.ctx.finish(
                done,
                Err((ErrorCode::InternalError, format!("cannot resize: {error}"))),
            ),
        })
    });
}

/// Kills a session: its whole process tree (politely, then by force after the grace
/// period), then the tmux session. The session disappears from the registry at once, so a
/// second kill is `404`. `done` gets the termination time.
pub fn kill(parts: &mut Parts<'_>, session_id: &str, done: Done<Result<SystemTime, KillError>>) {
    let Some(agent) = parts.agents.registry.remove(session_id) else {
        return parts
            .ctx
            .finish(done, Err(KillError::NotFound(session_id.to_string())));
    };
    if !agent.backend.has_terminal() {
        if parts.panes.is_attaching(session_id) {
            // Its resume is under way: deleting now would leave the new CLI untracked.
            parts.agents.registry.insert(agent);
            return parts
                .ctx
                .finish(done, Err(KillError::Resuming(session_id.to_string())));
        }
        // A lost session has no process or terminal left: only its record, history and
        // hook files go.
        remove_hook_files(parts, session_id);
        release_sources(parts, &agent);
        log::info!("{session_id}: a lost session deleted");
        parts.announce_gone(&agent, AgentStatus::Terminated, None);
        parts.agents.registry.announce(AgentEvent::Gone {
            session_id: session_id.to_string(),
            reason: "it was deleted through the API".to_string(),
        });
        return parts.ctx.finish(done, Ok(SystemTime::now()));
    }
    // A pty session's holder is told to finish once the agent's tree is gone.
    let holder =
        parts
            .panes
            .take_holder(session_id)
            .and_then(|key| match parts.ctx.remove_source(key) {
                Some(Source::PtyHolder { stream, .. }) => Some(stream),
                _ => None,
            });
    release_sources(parts, &agent);
    let tmux = parts.ctx.tmux.clone();
    let grace = parts.ctx.config.sessions.kill_grace;
    let alive = agent.exit.is_none();
    let (id, pid, name) = (agent.id.clone(), agent.pid, agent.tmux_session.clone());
    let is_pty = agent.backend.pane().is_none();
    let pty_files = super::pty_session::PtyFiles::of(&parts.ctx.config, &id);
    let handover_timeout = parts.ctx.config.pty.handover_timeout;
    parts.ctx.kill_jobs.run(move || {
        log::info!("{id}: terminating (pid {pid}, grace {grace:?})");
        let forced = if alive {
            procfs::terminate_tree(pid, grace)
        } else {
            0
        };
        let result = if is_pty {
            if let Some(holder) = holder {
                let fd: std::os::fd::OwnedFd = holder.into();
                crate::pty::link::release(fd.into(), handover_timeout);
            }
            pty_files.remove();
            Ok(String::new())
        } else {
            tmux::kill_session(&name)
                .map_err(TmuxError::from)
                .and_then(|list| tmux.run(&list))
        };
        let terminated_at = SystemTime::now();
        then::<Agents>(move |mut reach: Parts<'_>| {
            let parts = &mut reach;
            match result {
                Ok(_) | Err(TmuxError::NoServer) => {}
                Err(TmuxError::PaneNotFound(_)) => {}
                Err(error) => log::warn!("{id}: kill-session failed: {error}"),
            }
            let note = if forced > 0 {
                format!(" ({forced} processes needed SIGKILL)")
            } else {
                String::new()
            };
            log::info!("terminated {id}{note}");
            parts.announce_gone(&agent, AgentStatus::Terminated, None);
            parts.agents.registry.announce(AgentEvent::Gone {
                session_id: id.clone(),
                reason: "it was killed through the API".to_string(),
            });
            parts.ctx.finish(done, Ok(terminated_at));
        })
    });
}

/// Resource use of a session's process tree, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// Resident memory in MiB (rounded).
    pub memory_mb: u64,
    /// CPU use in percent of one core since the previous sample (or the process lifetime).
    pub cpu_percent: f64,
}

/// Samples a session's process tree on a worker. `done` gets `None` when the session
/// disappeared meanwhile.
pub fn sample(parts: &mut Parts<'_>, session_id: &str, done: Done<Option<Metrics>>) {
    let Some(agent) = parts.agents.registry.get(session_id) else {
        return parts.ctx.finish(done, None);
    };
    let pid = agent.pid;
    let alive = agent.exit.is_none() && agent.backend.has_terminal();
    let session_id = session_id.to_string();
    parts.ctx.jobs.run(move || {
        let usage = alive.then(|| procfs::usage(pid));
        then::<Agents>(move |mut reach: Parts<'_>| {
            let parts = &mut reach;
            let Some(agent) = parts.agents.registry.get_mut(&session_id) else {
                return parts.ctx.finish(done, None);
            };
            let metrics = match usage {
                Some(usage) => {
                    let cpu_percent = match &agent.last_usage {
                        Some(earlier) => procfs::cpu_percent(earlier, &usage),
                        None => usage.lifetime_cpu_percent,
                    };
                    agent.last_usage = Some(usage);
                    Metrics {
                        memory_mb: (usage.rss_bytes + (1 << 19)) >> 20,
                        cpu_percent: (cpu_percent * 10.0).round() / 10.0,
                    }
                }
                None => Metrics {
                    memory_mb: 0,
                    cpu_percent: 0.0,
                },
            };
            parts.ctx.finish(done, Some(metrics))
        })
    });
}

/// Where the spawn spec of session `session_id` is written for `orchestra agent-exec`.
pub fn spec_path(config: &crate::config::Config, session_id: &str) -> PathBuf {
    config.spawn_dir().join(format!("{session_id}.json"))
}

/// Finds the daemon's sessions in its tmux server after a (re)start and registers them with
/// their stored metadata; output capture is re-armed (with a screen capture) by jobs that
/// finish once the loop runs. Sessions without valid metadata are never touched. Sessions
/// already registered are left as they are, so it can run again.
pub fn adopt(parts: &mut Parts<'_>) -> Result<usize, TmuxError> {
    let output = match parts.ctx.tmux.run(&tmux::list_panes()?) {
        Ok(output) => output,
        Err(TmuxError::NoServer) => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut found: BTreeMap<String, (SessionMeta, tmux::PaneInfo)> = BTreeMap::new();
    for pane in tmux::parse::parse_panes(&output) {
        let Some(name) = &pane.session else { continue };
        let Some(meta) = SessionMeta::decode(&pane.metadata) else {
            continue;
        };
        // The metadata must belong to this very session (ids share their hex suffix).
        if meta.id.strip_prefix("sess-") != name.as_str().strip_prefix("agent-") {
            continue;
        }
        if !parts.ctx.config.agents.contains_key(&meta.agent_type) {
            log::warn!(
                "{}: agent type {:?} is no longer configured; adopting the session anyway",
                meta.id,
                meta.agent_type
            );
        }
        // One pane per session: the first one listed (window 0, pane 0 unless changed).
        found.entry(meta.id.clone()).or_insert((meta, pane));
    }
    let mut count = 0;
    for (id, (meta, pane)) in found {
        if parts.agents.registry.get(&id).is_some() {
            continue;
        }
        let created_at = UNIX_EPOCH + Duration::from_millis(meta.created_ms);
        let mut agent = Agent::new(
            id,
            meta.agent_type.clone(),
            pane.session.clone().expect("filtered above"),
            SessionBackend::Tmux {
                pane: pane.pane.clone(),
                server_pid: pane.server_pid,
            },
            pane.pid,
            PathBuf::from(&meta.working_dir),
            created_at,
        );
        agent.last_activity = (UNIX_EPOCH + Duration::from_secs(pane.activity)).max(created_at);
        let mut spec = pane_spec(&parts.ctx.config, &agent, pane.height, pane.width);
        // A dead pane has no output left to capture (and tmux refuses to pipe it).
        if pane.state != PaneState::Alive {
            spec.capture = CaptureState::Detached;
        }
        // Sessions of older daemons carry their credential in the metadata.
        let hook_token = meta.hook_token.clone().or_else(|| {
            let settings = parts
                .ctx
                .config
                .hooks_dir()
                .join(format!("{}.json", agent.id));
            std::fs::read_to_string(hook_token_file(&settings))
                .ok()
                .map(|token| token.trim().to_string())
                .filter(|token| !token.is_empty())
        });
        restore_adopted(parts, &mut agent, hook_token.as_ref());
        register(parts, agent, spec, Some(pane.state));
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load() -> DaemonLoad {
        DaemonLoad {
            shutting_down: false,
            quick_pool: "worker",
            quick_pool_has_room: true,
            live_sessions: 0,
        }
    }

    fn params(agent_type: &str, env: &[(&str, &str)]) -> SpawnParams {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SpawnParams::new(agent_type.into(), None, env)
    }

    #[test]
    fn interactive_sessions_do_not_inherit_ci_markers_unless_asked_for() {
        let inherited = [
            "CI",
            "CI_JOB_ID",
            "CONTINUOUS_INTEGRATION",
            "PATH",
            "CIRCLE",
            "HOME",
        ]
        .map(String::from);
        let asked = BTreeMap::from([("CI_JOB_ID".to_string(), "7".to_string())]);
        assert_eq!(
            ci_markers(inherited.into_iter(), &asked),
            ["CI", "CONTINUOUS_INTEGRATION"]
        );
    }

    #[test]
    fn a_spawn_is_admitted_or_refused_with_what_to_fix_first() {
        let config = Config::default();
        let max = config.sessions.max_sessions;
        let busy = DaemonLoad {
            quick_pool_has_room: false,
            ..load()
        };
        let full = DaemonLoad {
            live_sessions: max,
            ..load()
        };
        let stopping = DaemonLoad {
            shutting_down: true,
            ..busy.clone()
        };
        let table: Vec<(SpawnParams, DaemonLoad, Result<(), &str>)> = vec![
            (params("shell", &[]), load(), Ok(())),
            (params("nope", &[]), load(), Err("UnknownType")),
            // The request's own faults come before the daemon's state.
            (params("nope", &[]), stopping.clone(), Err("UnknownType")),
            (
                params("shell", &[("LD_PRELOAD", "x")]),
                busy.clone(),
                Err("InvalidEnv"),
            ),
            (params("shell", &[]), stopping, Err("ShuttingDown")),
            (params("shell", &[]), busy.clone(), Err("WorkersBusy")),
            (
                SpawnParams {
                    internal: true,
                    ..params("shell", &[])
                },
                busy,
                Ok(()),
            ),
            (params("shell", &[]), full, Err("SessionLimit")),
        ];
        for (request, load, expected) in table {
            let got = admit(&config, &request, &load).map(|_| ()).map_err(|e| {
                let name = format!("{e:?}");
                name[..name.find([' ', '(', '{']).unwrap_or(name.len())].to_string()
            });
            assert_eq!(
                got.as_ref().map(|_| ()).map_err(String::as_str),
                expected,
                "{} with {load:?}",
                request.agent_type
            );
        }
    }
}
