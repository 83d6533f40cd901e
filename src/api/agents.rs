//! Handlers for the agent lifecycle endpoints: spawn, list, get, kill.

use std::time::SystemTime;

use super::error::{ApiError, ErrorCode};
use super::{ApiState, Parts};
use super::{Handled, json, parse_body};
use crate::agents::activity::{Activity, ActivityState};
use crate::agents::history::Role;
use crate::agents::manager::{self, SpawnParams};
use crate::agents::{Agent, AgentStatus, ExitInfo};
use crate::net::ConnId;
use crate::proto::http::Request;
use crate::time::rfc3339;
use crate::wire::rest::{
    ActivityView, AgentDetail, AgentList, AgentSummary, EvidenceView, KillResponse, MessageList,
    MessageView, SpawnRequest, SpawnResponse,
};

/// `POST /api/agents/spawn`.
pub fn spawn(
    parts: &mut Parts<'_>,
    conn: ConnId,
    request: &Request,
    extra_headers: Vec<(String, String)>,
) -> Handled {
    let body: SpawnRequest = match parse_body(request) {
        Ok(body) => body,
        Err(error) => return Handled::Now(error.to_response()),
    };
    let mut params = SpawnParams::new(body.agent_type, body.working_dir, body.env);
    params.name = body.name;
    manager::spawn(
        &mut parts.for_agents(),
        params,
        crate::ctx::done::<ApiState, Result<manager::Spawned, crate::agents::error::SpawnError>>(
            move |mut reach, result| {
                let parts = &mut reach;
                let response = spawned_answer(parts, 201, result);
                parts.ctx.reply(conn, response.with_headers(extra_headers));
            },
        ),
    );
    Handled::Later
}

/// `GET /api/agents?status=&agent_type=&activity=`.
pub fn list(parts: &mut Parts<'_>, request: &Request) -> Handled {
    let status = match request.query_param("status") {
        None => None,
        // In a cluster, the agents of a host that stopped reporting are `unreachable`.
        Some(Ok(text)) if text == UNREACHABLE && parts.cluster.enabled() => Some(UNREACHABLE),
        Some(Ok(text)) => match AgentStatus::parse(&text) {
            Some(status) if status != AgentStatus::Terminated => Some(status.as_str()),
            _ => {
                return Handled::Now(
                    ApiError::bad_request(format!(
                        "unknown status filter {}; use running, idle, error, exited or lost",
                        crate::shown(&text)
                    ))
                    .to_response(),
                );
            }
        },
        Some(Err(_)) => {
            return Handled::Now(ApiError::bad_request("status is not valid UTF-8").to_response());
        }
    };
    let agent_type = match request.query_param("agent_type") {
        None => None,
        Some(Ok(text)) => {
            if !parts.ctx.config.agents.contains_key(&text) {
                return Handled::Now(
                    ApiError::unknown_agent_type(&text, &parts.ctx.config).to_response(),
                );
            }
            Some(text)
        }
        Some(Err(_)) => {
            return Handled::Now(
                ApiError::bad_request("agent_type is not valid UTF-8").to_response(),
            );
        }
    };
    let activity = match request.query_param("activity") {
        None => None,
        Some(Ok(text)) => match Activity::parse(&text) {
            Some(activity) => Some(activity),
            None => {
                return Handled::Now(
                    ApiError::bad_request(format!(
                        "unknown activity filter {}; use starting, working, waiting_input, \
                         needs_approval, idle or stuck",
                        crate::shown(&text)
                    ))
                    .to_response(),
                );
            }
        },
        Some(Err(_)) => {
            return Handled::Now(
                ApiError::bad_request("activity is not valid UTF-8").to_response(),
            );
        }
    };
    let host = match request.query_param("host") {
        None => None,
        Some(Ok(text)) => Some(text),
        Some(Err(_)) => {
            return Handled::Now(ApiError::bad_request("host is not valid UTF-8").to_response());
        }
    };
    let agents: Vec<AgentSummary> = summaries(parts)
        .into_iter()
        .filter(|a| agent_type.as_ref().is_none_or(|t| &a.agent_type == t))
        .filter(|a| activity.is_none_or(|wanted| a.activity.activity == wanted.as_str()))
        .filter(|a| status.is_none_or(|wanted| a.status == wanted))
        .collect();
    if !parts.cluster.enabled() {
        if host.is_some() {
            return Handled::Now(
                ApiError::new(
                    400,
                    ErrorCode::UnknownHost,
                    "host filters need a cluster ([cluster] in the daemon's config)",
                )
                .to_response(),
            );
        }
        return Handled::Now(json(
            200,
            &AgentList {
                total: agents.len(),
                agents,
            },
        ));
    }
    // In a cluster: this host's agents, then every reachable host's, each with its host.
    let me = parts.cluster.me().to_string();
    let field = |agent: &serde_json::Value, name: &str| agent[name].as_str().map(str::to_string);
    let listed: Vec<serde_json::Value> = agents
        .into_iter()
        .map(|a| super::peer::with_host(serde_json::to_value(a).expect("serializable"), &me))
        .chain(
            super::peer::remote_agents(parts)
                .into_iter()
                .filter(|a| agent_type.is_none() || field(a, "agent_type") == agent_type)
                .filter(|a| {
                    activity.is_none_or(|w| field(a, "activity").as_deref() == Some(w.as_str()))
                })
                .filter(|a| status.is_none_or(|w| field(a, "status").as_deref() == Some(w))),
        )
        .filter(|a| host.is_none() || field(a, "host") == host)
        .collect();
    Handled::Now(json(
        200,
        &serde_json::json!({ "agents": listed, "total": listed.len() }),
    ))
}

/// The status of the agents of a host that has not reported within
/// `cluster.unreachable_after` (a cluster's list only).
pub const UNREACHABLE: &str = "unreachable";

/// Every session of this daemon as the list shows it, oldest first.
pub fn summaries(parts: &Parts<'_>) -> Vec<AgentSummary> {
    let now = SystemTime::now();
    let idle_after = parts.ctx.config.sessions.idle_after;
    parts
        .agents
        .sorted()
        .into_iter()
        .map(|a| AgentSummary {
            session_id: a.id.clone(),
            agent_type: a.agent_type.clone(),
            status: a.status(now, idle_after).as_str(),
            created_at: rfc3339(a.created_at),
            last_activity: rfc3339(a.last_activity),
            activity: activity_view(&a.activity),
        })
        .collect()
}

/// `GET /api/agents/{id}`: details with a fresh sample of the process tree.
pub fn get(parts: &mut Parts<'_>, conn: ConnId, id: &str) -> Handled {
    if parts.agents.get(id).is_none() {
        return Handled::Now(ApiError::session_not_found(id).to_response());
    }
    if !parts.ctx.jobs.has_room() {
        return Handled::Now(ApiError::workers_busy(parts.ctx.jobs.name()).to_response());
    }
    let id_owned = id.to_string();
    manager::sample(
        &mut parts.for_agents(),
        id,
        crate::ctx::done::<ApiState, _>(move |mut reach: Parts<'_>, metrics| {
            let parts = &mut reach;
            let response = match (metrics, parts.agents.get(&id_owned)) {
                (Some(metrics), Some(agent)) => json(200, &detail(parts, agent, metrics)),
                _ => ApiError::session_not_found(&id_owned).to_response(),
            };
            parts.ctx.reply(conn, response);
        }),
    );
    Handled::Later
}

fn activity_view(state: &ActivityState) -> ActivityView {
    ActivityView {
        activity: state.activity.as_str(),
        activity_since: rfc3339(state.since),
        evidence: EvidenceView {
            source: state.source.as_str(),
            detail: state.detail.clone(),
        },
    }
}

fn detail(parts: &Parts<'_>, agent: &Agent, metrics: manager::Metrics) -> AgentDetail {
    let status = agent.status(SystemTime::now(), parts.ctx.config.sessions.idle_after);
    let pane = parts.panes.get(&agent.id);
    AgentDetail {
        session_id: agent.id.clone(),
        agent_type: agent.agent_type.clone(),
        status: status.as_str(),
        working_dir: agent.working_dir.display().to_string(),
        tmux_session: agent.tmux_session.to_string(),
        tmux_pane: agent
            .backend
            .pane()
            .map(ToString::to_string)
            .unwrap_or_default(),
        backend: agent.backend.kind().as_str(),
        created_at: rfc3339(agent.created_at),
        memory_mb: metrics.memory_mb,
        cpu_percent: metrics.cpu_percent,
        last_activity: rfc3339(agent.last_activity),
        activity: activity_view(&agent.activity),
        pid: agent.pid,
        capture: pane.map_or("detached", |p| p.capture().as_str()),
        output_bytes: pane.map_or(0, |p| p.output_bytes()),
        capture_rearms: pane.map_or(0, |p| p.rearms()),
        reports_replies: agent.hook_token.is_some(),
        exit_code: match agent.exit {
            Some(ExitInfo::Code(code)) => Some(code),
            _ => None,
        },
        exit_signal: match agent.exit {
            Some(ExitInfo::Signal(signal)) => Some(signal),
            _ => None,
        },
    }
}

/// Room kept in a page of messages for everything around them (session id, counts).
const PAGE_ENVELOPE_BYTES: usize = 1024;

/// `GET /api/agents/{id}/messages?limit=&before=`: the session's conversation, oldest first,
/// one page at a time. A page holds the newest kept messages before `before` (a `seq`; all
/// of them without it), at most `limit` of them and at most `sessions.max_messages_page_bytes`
/// of JSON; `next_before` is the `before` of the page of older ones (`null`: there are none).
pub fn messages(parts: &Parts<'_>, request: &Request, id: &str) -> Handled {
    let Some(agent) = parts.agents.get(id) else {
        return Handled::Now(ApiError::session_not_found(id).to_response());
    };
    let number = |name: &str| -> Result<Option<u64>, ApiError> {
        match request.query_param(name) {
            None => Ok(None),
            Some(Ok(text)) => match text.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(ApiError::bad_request(format!(
                    "{name} must be a positive integer"
                ))),
            },
            Some(Err(_)) => Err(ApiError::bad_request(format!("{name} is not valid UTF-8"))),
        }
    };
    let (limit, before) = match (number("limit"), number("before")) {
        (Ok(limit), Ok(before)) => (limit.unwrap_or(u64::MAX), before.unwrap_or(u64::MAX)),
        (Err(error), _) | (_, Err(error)) => return Handled::Now(error.to_response()),
    };
    let room = parts
        .ctx
        .config
        .sessions
        .max_messages_page_bytes
        .saturating_sub(PAGE_ENVELOPE_BYTES + agent.id.len());
    let mut used = 0;
    let mut newest_first = Vec::new();
    let mut older = agent
        .history
        .entries
        .iter()
        .rev()
        .filter(|entry| entry.seq < before)
        .peekable();
    while let Some(&entry) = older.peek() {
        let message = message_view(entry);
        // Its JSON plus the comma before it.
        let size = serde_json::to_vec(&message).map_or(0, |v| v.len()) + 1;
        let full = newest_first.len() as u64 >= limit || used + size > room;
        if full && !newest_first.is_empty() {
            break;
        }
        used += size;
        newest_first.push(message);
        older.next();
    }
    let next_before = older.peek().and(newest_first.last().map(|m| m.seq));
    newest_first.reverse();
    Handled::Now(json(
        200,
        &MessageList {
            session_id: &agent.id,
            total: newest_first.len(),
            messages: newest_first,
            next_before,
        },
    ))
}

fn message_view(entry: &crate::agents::history::Entry) -> MessageView<'_> {
    MessageView {
        seq: entry.seq,
        role: match entry.role {
            Role::User => "user",
            Role::Agent => "agent",
        },
        content: &entry.content,
        id: entry.id.as_ref(),
        timestamp: crate::tasks::ms_rfc3339(entry.at_ms),
    }
}

/// `POST /api/agents/{id}/resume`: starts a lost session's CLI again (see
/// [`crate::agents::resume`]); answers like a spawn once it runs.
pub fn resume(parts: &mut Parts<'_>, conn: ConnId, id: &str) -> Handled {
    if parts.agents.get(id).is_some() && !parts.ctx.jobs.has_room() {
        return Handled::Now(ApiError::workers_busy(parts.ctx.jobs.name()).to_response());
    }
    crate::agents::resume::resume(
        &mut parts.for_agents(),
        id,
        false,
        crate::ctx::done::<ApiState, Result<manager::Spawned, crate::agents::error::SpawnError>>(
            move |mut reach, result| {
                let parts = &mut reach;
                let response = spawned_answer(parts, 200, result);
                parts.ctx.reply(conn, response);
            },
        ),
    );
    Handled::Later
}

/// The answer to a finished spawn or resume: `status` with the session, or the error.
fn spawned_answer(
    parts: &Parts<'_>,
    status: u16,
    result: Result<manager::Spawned, crate::agents::error::SpawnError>,
) -> crate::proto::http::Response {
    match result {
        Ok(spawned) => match parts.agents.get(&spawned.session_id) {
            Some(agent) => json(status, &spawn_response(agent)),
            None => ApiError::new(
                500,
                ErrorCode::AgentSpawnFailed,
                "the session ended before it could be reported",
            )
            .to_response(),
        },
        Err(error) => ApiError::from_spawn(error).to_response(),
    }
}

/// What a spawn (or a resume) answers with.
fn spawn_response(agent: &Agent) -> SpawnResponse {
    SpawnResponse {
        session_id: agent.id.clone(),
        agent_type: agent.agent_type.clone(),
        status: AgentStatus::Running.as_str(),
        tmux_session: agent.tmux_session.to_string(),
        created_at: rfc3339(agent.created_at),
    }
}

/// `DELETE /api/agents/{id}`.
pub fn kill(parts: &mut Parts<'_>, conn: ConnId, id: &str) -> Handled {
    if parts.agents.get(id).is_some() && !parts.ctx.kill_jobs.has_room() {
        return Handled::Now(ApiError::workers_busy(parts.ctx.kill_jobs.name()).to_response());
    }
    let id_owned = id.to_string();
    manager::kill(
        &mut parts.for_agents(),
        id,
        crate::ctx::done::<ApiState, _>(move |mut reach: Parts<'_>, result| {
            let parts = &mut reach;
            let response = match result {
                Ok(at) => json(
                    200,
                    &KillResponse {
                        session_id: id_owned,
                        status: AgentStatus::Terminated.as_str(),
                        terminated_at: rfc3339(at),
                    },
                ),
                Err(error) => ApiError::from_kill(error).to_response(),
            };
            parts.ctx.reply(conn, response);
        }),
    );
    Handled::Later
}
