//! Handlers for task delegation: delegate, get, list, cancel.

use super::auth::Principal;
use super::error::ApiError;
use super::{ApiState, Parts};
use super::{Handled, json, parse_body};
use crate::net::ConnId;
use crate::proto::http::Request;
use crate::tasks::error::TaskError;
use crate::tasks::lifecycle::{self, DelegateParams};
use crate::tasks::{TaskStatus, Ticket, ms_rfc3339};
use crate::wire::rest::{DelegateRequest, DelegateResponse, PlanDecision, TaskList, TaskView};

/// Largest page of `GET /api/tasks`.
pub const MAX_PAGE: usize = 500;
/// Default page of `GET /api/tasks`.
pub const DEFAULT_PAGE: usize = 50;

/// `POST /api/delegate`.
pub fn delegate(
    parts: &mut Parts<'_>,
    conn: ConnId,
    request: &Request,
    principal: Principal,
    extra_headers: Vec<(String, String)>,
) -> Handled {
    let body: DelegateRequest = match parse_body(request) {
        Ok(body) => body,
        Err(error) => return Handled::Now(error.to_response()),
    };
    if super::queue::takes(parts, body.host.as_deref()) {
        return super::queue::submit(parts, conn, body, &principal, extra_headers);
    }
    if body.retries.is_some_and(|n| n > 0) {
        let error = ApiError::bad_request(
            "retries applies to a cluster's queue: it needs [cluster], NATS reachable and no \"host\"",
        );
        return Handled::Now(error.to_response().with_headers(extra_headers));
    }
    let params = DelegateParams {
        agent_type: body.agent_type,
        task: body.task,
        context: body.context,
        timeout_ms: body.timeout_ms,
        working_dir: body.working_dir,
        from_session: body.session_id,
        isolation: body.isolation,
        test_command: body.test_command,
        requested_by: Some(principal.subject),
        proposed: false,
        ids: None,
    };
    lifecycle::delegate(
        &mut parts.for_tasks(),
        params,
        crate::ctx::done::<ApiState, Result<u64, TaskError>>(move |mut reach, result| {
            let parts = &mut reach;
            let response = match result.map_err(ApiError::from_task).and_then(|task_id| {
                parts
                    .tasks
                    .ticket(task_id)
                    .ok_or_else(|| ApiError::internal("the ticket was forgotten at once"))
            }) {
                Ok(ticket) => {
                    let task_id = ticket.task_id;
                    json(
                        201,
                        &DelegateResponse {
                            ticket_id: ticket.ticket_id.clone(),
                            task_id: Some(task_id),
                            session_id: ticket.session_id.clone(),
                            status: TaskStatus::Pending.as_str(),
                            created_at: ms_rfc3339(ticket.created_ms),
                        },
                    )
                    .with_header("Location", format!("/api/tasks/{}", ticket.ticket_id))
                }
                Err(error) => error.to_response(),
            };
            parts.ctx.reply(conn, response.with_headers(extra_headers));
        }),
    );
    Handled::Later
}

/// The public view of a ticket.
pub fn view(ticket: &Ticket) -> TaskView<'_> {
    let status = ticket.status();
    TaskView {
        ticket_id: &ticket.ticket_id,
        task_id: ticket.task_id,
        status: status.as_str(),
        agent: &ticket.agent_type,
        session_id: &ticket.session_id,
        task: &ticket.task,
        context: &ticket.context,
        working_dir: ticket.working_dir.display().to_string(),
        isolation: ticket.isolation,
        test_command: ticket.test_command.as_deref(),
        branch: ticket.branch.as_deref(),
        created_at: ms_rfc3339(ticket.created_ms),
        started_at: ticket.started_ms.map(ms_rfc3339),
        completed_at: ticket.completed_ms.map(ms_rfc3339),
        duration_ms: ticket
            .completed_ms
            .map(|end| end.saturating_sub(ticket.started_ms.unwrap_or(end))),
        timeout_ms: ticket.timeout_ms,
        result: ticket.result.as_ref(),
    }
}

/// The view of this host's ticket with `"host"` (in a cluster).
pub fn with_host(parts: &Parts<'_>, ticket: &Ticket) -> serde_json::Value {
    let mut view = serde_json::to_value(view(ticket)).expect("serializable");
    view["host"] = parts.cluster.me().into();
    view
}

/// `GET /api/tasks/{id}` (ticket id or task id).
pub fn get(parts: &Parts<'_>, id: &str) -> Handled {
    if let Some(view) = super::queue::view_of(parts, id) {
        return Handled::Now(json(200, &view));
    }
    Handled::Now(match parts.tasks.find(id) {
        Some(ticket) if parts.cluster.enabled() => json(200, &with_host(parts, ticket)),
        Some(ticket) => json(200, &view(ticket)),
        None => ApiError::from_task(TaskError::NotFound(id.to_string())).to_response(),
    })
}

/// `GET /api/tasks?status=&agent_type=&limit=&offset=`, newest first.
pub fn list(parts: &Parts<'_>, request: &Request) -> Handled {
    match list_page(parts, request) {
        Ok(handled) => handled,
        Err(error) => Handled::Now(error.to_response()),
    }
}

fn list_page(parts: &Parts<'_>, request: &Request) -> Result<Handled, ApiError> {
    let param = |name: &str| -> Result<Option<String>, ApiError> {
        request
            .query_param(name)
            .transpose()
            .map_err(|_| ApiError::bad_request(format!("{name} is not valid UTF-8")))
    };
    let status = match param("status")? {
        None => None,
        Some(text) => Some(TaskStatus::parse(&text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown status filter {}; use proposed, pending, running, completed, failed, \
                 timeout or cancelled",
                crate::shown(&text)
            ))
        })?),
    };
    let agent_type = param("agent_type")?;
    let number = |name: &str, default: usize| -> Result<usize, ApiError> {
        match param(name)? {
            None => Ok(default),
            Some(text) => text.parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!("{name} must be a non-negative integer"))
            }),
        }
    };
    let limit = number("limit", DEFAULT_PAGE)?;
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let offset = number("offset", 0)?;
    if parts.cluster.enabled() {
        return Ok(cluster_page(parts, status, agent_type, limit, offset));
    }
    let matching: Vec<TaskView> = parts
        .tasks
        .tickets()
        .rev()
        .map(view)
        .filter(|v| status.is_none_or(|s| v.status == s.as_str()))
        .filter(|v| agent_type.as_ref().is_none_or(|t| v.agent == t))
        .collect();
    let total = matching.len();
    let tasks = matching.into_iter().skip(offset).take(limit).collect();
    Ok(Handled::Now(json(
        200,
        &TaskList {
            tasks,
            total,
            limit,
            offset,
        },
    )))
}

/// A page of the cluster's tickets: this host's, and those of the cluster's queue it has no
/// live copy of, newest first.
fn cluster_page(
    parts: &Parts<'_>,
    status: Option<TaskStatus>,
    agent_type: Option<String>,
    limit: usize,
    offset: usize,
) -> Handled {
    let queue = parts.cluster.queue();
    let mut all: Vec<serde_json::Value> = parts
        .tasks
        .tickets()
        .filter(|t| !queue.is_fenced(&t.ticket_id))
        .map(|t| with_host(parts, t))
        .chain(super::queue::other_views(parts))
        .filter(|v| status.is_none_or(|s| v["status"] == s.as_str()))
        .filter(|v| agent_type.as_ref().is_none_or(|t| v["agent"] == t.as_str()))
        .collect();
    // RFC 3339 times of one format sort as text.
    all.sort_by(|a, b| b["created_at"].as_str().cmp(&a["created_at"].as_str()));
    let total = all.len();
    let tasks: Vec<_> = all.into_iter().skip(offset).take(limit).collect();
    Handled::Now(json(
        200,
        &serde_json::json!({"tasks": tasks, "total": total, "limit": limit, "offset": offset}),
    ))
}

/// `POST /api/plans/approve` or `/reject`: the plan's proposed tasks become `pending` (and
/// run) or end `cancelled`; answers with the tickets.
pub fn decide_plan(parts: &mut Parts<'_>, request: &Request, approve: bool) -> Handled {
    let body: PlanDecision = match parse_body(request) {
        Ok(body) => body,
        Err(error) => return Handled::Now(error.to_response()),
    };
    if let Err(error) = lifecycle::decide_plan(&mut parts.for_tasks(), &body.task_ids, approve) {
        return Handled::Now(ApiError::from_task(error).to_response());
    }
    let tasks: Vec<TaskView> = body
        .task_ids
        .iter()
        .filter_map(|id| parts.tasks.ticket(*id))
        .map(view)
        .collect();
    Handled::Now(json(
        200,
        &TaskList {
            total: tasks.len(),
            limit: tasks.len(),
            offset: 0,
            tasks,
        },
    ))
}

/// `DELETE /api/tasks/{id}`: answers once the ticket is `cancelled`.
pub fn cancel(parts: &mut Parts<'_>, conn: ConnId, id: &str) -> Handled {
    if let Some(handled) = super::queue::cancel(parts, conn, id) {
        return handled;
    }
    lifecycle::cancel(
        &mut parts.for_tasks(),
        id,
        crate::ctx::done::<ApiState, _>(move |mut reach: Parts<'_>, result| {
            let parts = &mut reach;
            let response = match result {
                Ok(task_id) => match parts.tasks.ticket(task_id) {
                    Some(ticket) => json(200, &view(ticket)),
                    None => {
                        ApiError::from_task(TaskError::NotFound(task_id.to_string())).to_response()
                    }
                },
                Err(error) => ApiError::from_task(error).to_response(),
            };
            parts.ctx.reply(conn, response);
        }),
    );
    Handled::Later
}
