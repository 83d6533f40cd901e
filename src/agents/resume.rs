//! Agents whose terminal is gone, and starting them again.
//!
//! At start, after the tmux sessions and pty holders of the previous daemon are adopted,
//! every agent record (see [`super::record`]) without a session is an agent whose terminal
//! was lost: after a reboot, or when its tmux server or pty holder was killed. It is listed
//! with status `lost`, its history kept, until `POST /api/agents/{id}/resume` (or, for types
//! with `resume = "auto"`, the daemon itself) starts its CLI again in the same working
//! directory, with the same id, environment and history, and with the type's `resume_args`
//! (the CLI's own session id in place of `{cli_session}`), so that the CLI takes up its
//! earlier conversation.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Parts;
use super::error::SpawnError;
use super::manager::{self, SpawnParams, Spawned};
use super::record::{self, AgentRecord};
use super::{Agent, AgentStatus, SessionBackend};
use crate::config::{Backend, ResumePolicy};
use crate::ctx::Done;
use crate::tmux::SessionName;

/// Gives the adopted sessions their records and lists every recorded agent without a
/// session as lost; starts those of `resume = "auto"` types again. Runs once at start,
/// after adoption (reads the records directory, before the loop runs). `tmux_known`: the
/// tmux server could be asked for its sessions; when it could not, tmux sessions are not
/// taken for lost (they may well run) and stay unlisted until a restart finds them.
pub fn find_lost(parts: &mut Parts<'_>, tmux_known: bool) -> usize {
    let records = record::load_all(parts.agents.records.dir());
    let mut lost = 0;
    let mut auto = Vec::new();
    for record in records {
        if let Some(agent) = parts.agents.registry.get_mut(&record.id) {
            // A resumed session's tmux metadata or holder has the time of its resume; the
            // record has the session's own.
            agent.created_at = UNIX_EPOCH + Duration::from_millis(record.created_ms);
            agent.record = Some(record);
            continue;
        }
        let Some(name) = tmux_name(&record.id) else {
            log::warn!("{}: not a session id; its record is ignored", record.id);
            continue;
        };
        let backend = match record.backend.as_str() {
            "pty" => Backend::Pty,
            _ => Backend::Tmux,
        };
        if backend == Backend::Tmux && !tmux_known {
            log::warn!(
                "{}: tmux could not be asked for its sessions; not taken for lost",
                record.id
            );
            continue;
        }
        let created_at = UNIX_EPOCH + Duration::from_millis(record.created_ms);
        let mut agent = Agent::new(
            record.id.clone(),
            record.agent_type.clone(),
            name,
            SessionBackend::Lost(backend),
            0,
            PathBuf::from(&record.working_dir),
            created_at,
        );
        manager::restore_adopted(parts, &mut agent, None);
        agent.activity.on_lost(SystemTime::now());
        agent.reported = agent.status(SystemTime::now(), parts.ctx.config.sessions.idle_after);
        agent.reported_activity = agent.activity.activity;
        let policy = parts
            .ctx
            .config
            .agents
            .get(&record.agent_type)
            .map(|t| t.resume);
        log::warn!(
            "{}: its terminal is gone (host rebooted, or its tmux server or pty holder was \
             killed); listed as lost{}",
            record.id,
            match policy {
                Some(ResumePolicy::Auto) => ", starting it again (resume = \"auto\")",
                _ => " until POST /api/agents/{id}/resume",
            }
        );
        if policy == Some(ResumePolicy::Auto) {
            auto.push(record.id.clone());
        }
        agent.record = Some(record);
        parts.agents.registry.insert(agent);
        lost += 1;
    }
    for id in auto {
        let shown = id.clone();
        let done = crate::ctx::done::<super::Agents, Result<Spawned, SpawnError>>(
            move |_reach, result| match result {
                Ok(spawned) => log::info!("{}: resumed at start", spawned.session_id),
                Err(error) => log::warn!("{shown}: could not be resumed at start: {error}"),
            },
        );
        resume(parts, &id, true, done);
    }
    lost
}

/// The tmux name that goes with session id `id` (`sess-X` is `agent-X`).
fn tmux_name(id: &str) -> Option<SessionName> {
    SessionName::parse(&format!("agent-{}", id.strip_prefix("sess-")?))
}

/// Starts lost session `id` again (see the module docs). `internal`: asked by the daemon
/// itself, so never refused because the workers' queue is full. `done` gets the outcome:
/// `SessionNotFound`-like errors come back as [`SpawnError::NotLost`] or
/// [`SpawnError::Failed`] with what to do.
pub fn resume(
    parts: &mut Parts<'_>,
    id: &str,
    internal: bool,
    done: Done<Result<Spawned, SpawnError>>,
) {
    let Some(agent) = parts.agents.registry.get(id) else {
        return parts
            .ctx
            .finish(done, Err(SpawnError::NotFound(id.to_string())));
    };
    let Some(record) = agent
        .record
        .clone()
        .filter(|_| !agent.backend.has_terminal())
    else {
        return parts
            .ctx
            .finish(done, Err(SpawnError::NotLost(id.to_string())));
    };
    let Some(agent_type) = parts.ctx.config.agents.get(&record.agent_type) else {
        return parts.ctx.finish(
            done,
            Err(SpawnError::UnknownType {
                name: record.agent_type.clone(),
                known: parts.ctx.config.agents.keys().cloned().collect(),
            }),
        );
    };
    let argv = record::resume_argv(
        &agent_type.command,
        &agent_type.resume_args,
        record.cli_session.as_deref(),
    );
    match &argv {
        Some(_) => log::info!(
            "{id}: resuming its CLI's conversation {}",
            record.cli_session.as_deref().unwrap_or("(the last one)")
        ),
        None => log::info!(
            "{id}: starting its CLI again with a fresh conversation (the type has no \
             resume_args, or the CLI never reported its session id)"
        ),
    }
    let mut params = SpawnParams::new(
        record.agent_type.clone(),
        Some(record.working_dir.clone()),
        record.env.clone(),
    );
    params.ids = Some((id.to_string(), agent.tmux_session.clone()));
    params.internal = internal;
    params.resume = Some(manager::ResumeFrom { argv, record });
    manager::spawn(parts, params, done);
}

/// The CLI of session `session_id` reported its own session id `cli_session` (in a hook's
/// payload): kept in the session's record when it is new, so a resume finds it.
pub fn saw_cli_session(parts: &mut Parts<'_>, session_id: &str, cli_session: &str) {
    if !record::is_cli_session_id(cli_session) {
        return;
    }
    let Some(agent) = parts.agents.registry.get_mut(session_id) else {
        return;
    };
    let Some(record) = agent.record.as_mut() else {
        return;
    };
    if record.cli_session.as_deref() == Some(cli_session) {
        return;
    }
    log::info!("{session_id}: its CLI's session is {cli_session}");
    record.cli_session = Some(cli_session.to_string());
    parts.agents.records.save(record.clone());
}

/// A resumed session replaces its lost entry: it takes over the history (its creation
/// time comes from its record), and counts as reported `lost` so that the next status
/// refresh tells observers it runs again.
pub(super) fn take_over_lost(lost: Option<Agent>, agent: &mut Agent) {
    if let Some(lost) = lost {
        agent.history = lost.history;
    }
    agent.reported = AgentStatus::Lost;
}

/// A new record for a session spawned through the API (written once it exists).
pub(super) fn new_record(
    id: &str,
    agent_type: &str,
    env: &std::collections::BTreeMap<String, String>,
    backend: Backend,
) -> AgentRecord {
    AgentRecord {
        v: AgentRecord::VERSION,
        id: id.to_string(),
        agent_type: agent_type.to_string(),
        working_dir: String::new(),
        created_ms: 0,
        env: env.clone(),
        cli_session: None,
        backend: backend.as_str().to_string(),
    }
}
