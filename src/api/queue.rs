//! The cluster's ticket queue, as the API uses it ([`crate::cluster::queue`] keeps its
//! state).
//!
//! In a cluster, `POST /api/delegate` without `"host"` (or with `"any"`) stores the ticket
//! in the JetStream bucket `<name>-tickets` and answers. Every host watches the bucket;
//! a host that has the agent type and room (`tasks.max_running`, the type's `max_tasks`,
//! `sessions.max_sessions`) claims the oldest queued ticket with a conditional write, and
//! runs it as its own task under the same ticket id and session id. It writes the task's
//! view back as it changes, so every host can answer for the ticket.
//!
//! A host that stops reporting for `cluster.unreachable_after` loses its tickets: one that
//! had not started is queued again, one that was running ends `failed` with
//! `error_code: "HOST_LOST"` (or is queued again while it has `retries` left). A host that
//! comes back from a pause finds its writes refused and stops its own run.

use serde_json::{Value, json};

use super::auth::Principal;
use super::error::{ApiError, ErrorCode};
use super::{ApiState, Handled, Parts};
use crate::cluster::queue::{Entry, Write};
use crate::cluster::{TicketWriteError, is_host_name};
use crate::net::ConnId;
use crate::tasks::error::TaskError;
use crate::tasks::lifecycle::{self, DelegateParams};
use crate::tasks::{Phase, ms_rfc3339, now_ms};
use crate::wire::cluster::{QueueState, QueuedTicket};
use crate::wire::rest::{DelegateRequest, DelegateResponse};

/// Whether a delegation asking for `host` goes to the cluster's queue: in a connected
/// cluster, with no `"host"` or `"any"`. While NATS is away a delegation runs on the host
/// that took it, so that no ticket waits on NATS.
pub fn takes(parts: &Parts<'_>, host: Option<&str>) -> bool {
    parts.cluster.enabled() && parts.cluster.connected() && host.is_none_or(|h| h == "any")
}

/// `POST /api/delegate` into the cluster's queue: answered `201` once JetStream stored it.
pub fn submit(
    parts: &mut Parts<'_>,
    conn: ConnId,
    body: DelegateRequest,
    principal: &Principal,
    headers: Vec<(String, String)>,
) -> Handled {
    let ticket = match queued_ticket(parts, body, principal) {
        Ok(ticket) => ticket,
        Err(error) => return Handled::Now(error.to_response().with_headers(headers)),
    };
    let why = Write::Submit { conn, headers };
    match parts.cluster.write_ticket(&ticket, None, why) {
        Ok(()) => Handled::Later,
        Err(_) => Handled::Now(
            not_stored(&ticket.ticket_id, "the link to NATS is away or busy").to_response(),
        ),
    }
}

/// The ticket a delegation becomes, checked as far as this host can check it.
fn queued_ticket(
    parts: &Parts<'_>,
    body: DelegateRequest,
    principal: &Principal,
) -> Result<QueuedTicket, ApiError> {
    let config = &parts.ctx.config;
    let here = config.agents.get(&body.agent_type);
    let elsewhere = parts.cluster.hosts().any(|host| {
        parts.cluster.reachable(host) && host.record.agent_types.contains(&body.agent_type)
    });
    if here.is_none() && !elsewhere {
        let mut known: Vec<String> = config.agents.keys().cloned().collect();
        for host in parts.cluster.hosts() {
            known.extend(host.record.agent_types.iter().cloned());
        }
        known.sort();
        known.dedup();
        return Err(ApiError::from_task(TaskError::UnknownType {
            name: body.agent_type,
            known,
        }));
    }
    if here.is_some_and(|t| t.headless.is_none()) && !elsewhere {
        return Err(ApiError::from_task(lifecycle::not_delegable(
            config,
            &body.agent_type,
        )));
    }
    if parts.ctx.shutting_down {
        return Err(ApiError::from_task(TaskError::ShuttingDown));
    }
    let max_retries = parts.cluster.settings().max_retries;
    let retries = body.retries.unwrap_or(0);
    if retries > max_retries {
        return Err(ApiError::bad_request(format!(
            "retries must be at most {max_retries} (cluster.max_retries)"
        )));
    }
    let max = config.tasks.max_queued;
    if parts.cluster.queue().queued() >= max {
        return Err(ApiError::from_task(TaskError::QueueFull { max }));
    }
    // A primary session's directory is the default, as on one host.
    let working_dir = match (&body.working_dir, &body.session_id) {
        (Some(dir), _) => Some(dir.clone()),
        (None, Some(id)) => match parts.agents.get(id) {
            Some(agent) => Some(agent.working_dir.display().to_string()),
            None => return Err(ApiError::from_task(TaskError::SessionNotFound(id.clone()))),
        },
        (None, None) => None,
    };
    if let Some(dir) = &working_dir
        && !std::path::Path::new(dir).is_absolute()
    {
        return Err(ApiError::from_task(TaskError::InvalidWorkingDir(format!(
            "working_dir {} must be an absolute path in a cluster: the task runs on whichever \
             host claims it, in that directory there",
            crate::shown(dir)
        ))));
    }
    let params = params_of(&body.agent_type, &body.task, &body.context, body.timeout_ms);
    let params = DelegateParams {
        test_command: body.test_command.clone(),
        ..params
    };
    lifecycle::check_request(config, &params).map_err(ApiError::from_task)?;
    let me = parts.cluster.me().to_string();
    let (session_id, _) = crate::agents::new_session_ids(&body.agent_type);
    Ok(QueuedTicket {
        ticket_id: format!("ticket-{}", uuid::Uuid::new_v4()),
        session_id,
        agent_type: body.agent_type,
        task: body.task,
        context: body.context,
        timeout_ms: body.timeout_ms,
        working_dir,
        isolation: body.isolation,
        test_command: body.test_command,
        requested_by: Some(principal.subject.clone()),
        retries,
        submitted_on: me.clone(),
        created_ms: now_ms(),
        state: QueueState::Queued,
        host: None,
        attempts: 0,
        by: me,
        declined: Default::default(),
        view: None,
    })
}

fn params_of(
    agent_type: &str,
    task: &str,
    context: &crate::wire::task::TaskContext,
    timeout_ms: Option<u64>,
) -> DelegateParams {
    DelegateParams {
        agent_type: agent_type.to_string(),
        task: task.to_string(),
        context: context.clone(),
        timeout_ms,
        working_dir: None,
        from_session: None,
        isolation: Default::default(),
        test_command: None,
        requested_by: None,
        proposed: false,
        ids: None,
    }
}

fn not_stored(ticket_id: &str, why: &str) -> ApiError {
    ApiError::new(
        503,
        ErrorCode::HostUnreachable,
        format!(
            "the cluster's ticket queue did not confirm {ticket_id}: {why}. It may still have \
             been stored: GET /api/tasks/{ticket_id} tells"
        ),
    )
}

/// A ticket of the queue changed (`value`: its sealed-and-opened encoding; `None`: removed).
pub fn on_entry(parts: &mut Parts<'_>, key: String, value: Option<Vec<u8>>, revision: u64) {
    let ticket = match value {
        None => None,
        Some(bytes) => match serde_json::from_slice::<QueuedTicket>(&bytes) {
            Ok(ticket) if is_sound(&ticket, &key) => Some(ticket),
            Ok(_) => {
                return log::warn!(
                    "cluster: ticket {} is not sound; ignored",
                    crate::shown(&key)
                );
            }
            Err(e) => {
                return log::warn!("cluster: ticket {} is unreadable: {e}", crate::shown(&key));
            }
        },
    };
    parts
        .cluster
        .queue_mut()
        .on_entry(key.clone(), ticket, revision);
    let Some(entry) = parts.cluster.queue().entry(&key).cloned() else {
        return;
    };
    let me = parts.cluster.me().to_string();
    let here = parts.tasks.find(&key).is_some();
    let held = parts.cluster.queue().held().get(&key).map(|h| h.revision);
    if entry.ticket.by != me {
        // Another host wrote a ticket this host runs: it took it over.
        let taken = match held {
            Some(mine) => entry.revision > mine,
            None => here && !parts.cluster.queue().is_fenced(&key),
        };
        if taken {
            fence(parts, &key, &entry.ticket.by);
        }
    } else if let Some(held) = parts.cluster.queue_mut().held_mut(&key)
        && entry.revision > held.revision
    {
        // This host's own write, which it was told failed, landed after all.
        held.revision = entry.revision;
        held.written = entry.ticket.view.clone();
    }
    adopt_orphans(parts);
    try_claim(parts);
}

/// Takes up the tickets this host claimed and does not hold: after a restart it holds the
/// ones it stored again; a claim it never stored (its outcome was lost, or the daemon
/// restarted first) runs now if there is room, and goes back to the queue otherwise. One
/// whose local record is gone (pruned while NATS was away) ends `failed` with
/// `RESULT_LOST`: it ran here, and running it again could repeat its effects.
fn adopt_orphans(parts: &mut Parts<'_>) {
    let me = parts.cluster.me().to_string();
    for Entry { ticket, revision } in parts.cluster.queue().orphans(&me) {
        let key = ticket.ticket_id.clone();
        if parts.tasks.find(&key).is_some() {
            log::info!("cluster: this host runs {key} again after a restart");
            parts.cluster.queue_mut().hold(&key, revision);
        } else if ticket.view.is_some() {
            let message = format!(
                "host {me} ran the task, but its record was removed before the cluster heard                  its result"
            );
            let lost =
                crate::cluster::queue::failed(&ticket, &me, now_ms(), "RESULT_LOST", message);
            let _ = parts
                .cluster
                .write_ticket(&lost, Some(revision), Write::TakeOver);
        } else if parts.cluster.queue().claiming().is_none() && can_take(parts, &ticket) {
            parts.cluster.queue_mut().set_claiming(Some(key));
            run_claimed(parts, ticket, revision);
        } else if parts.cluster.queue().claiming().is_none() {
            release(parts, ticket, revision, None);
        }
    }
}

/// The latest time a ticket may carry (the end of year 9999), so that it can be shown.
const LATEST_MS: u64 = 253_402_300_799_999;

/// Whether a ticket read from the bucket under `key` can be used: it names that key, its
/// writer and host are host names, its view (if any) is a JSON object, and its time can be
/// shown. What another host wrote is checked before use, never trusted to be well-formed.
fn is_sound(ticket: &QueuedTicket, key: &str) -> bool {
    ticket.ticket_id == key
        && is_host_name(&ticket.by)
        && ticket.host.as_deref().is_none_or(is_host_name)
        && ticket.view.as_ref().is_none_or(Value::is_object)
        && ticket.created_ms <= LATEST_MS
}

/// Another host (`by`) took ticket `key` from this one: stop this host's run without
/// writing anything more about it.
fn fence(parts: &mut Parts<'_>, key: &str, by: &str) {
    log::warn!(
        "cluster: host {by} took {key} over while this host was away (paused or cut off); \
         stopping its run here"
    );
    parts.cluster.queue_mut().fence(key);
    if parts.tasks.find(key).is_some_and(|t| !t.phase.is_done()) {
        lifecycle::cancel(
            &mut parts.for_tasks(),
            key,
            crate::ctx::done::<ApiState, Result<u64, TaskError>>(|_, _| {}),
        );
    }
}

/// Gives back a ticket this host claimed and does not run: queued again; with `why` (it
/// cannot run here at all) this host never claims it again.
fn release(parts: &mut Parts<'_>, mut ticket: QueuedTicket, revision: u64, why: Option<String>) {
    let me = parts.cluster.me().to_string();
    log::warn!(
        "cluster: this host does not run {} ({}); it goes back to the queue",
        ticket.ticket_id,
        why.as_deref().unwrap_or("no room now")
    );
    ticket.state = QueueState::Queued;
    ticket.host = None;
    ticket.view = None;
    if let Some(why) = why {
        ticket.declined.insert(me.clone(), why);
    }
    ticket.by = me;
    let _ = parts
        .cluster
        .write_ticket(&ticket, Some(revision), Write::Release);
}

/// Whether this host can run `ticket` now: it has the agent type (with a headless form)
/// and room, and holds no copy of it.
fn can_take(parts: &Parts<'_>, ticket: &QueuedTicket) -> bool {
    let config = &parts.ctx.config;
    let Some(agent_type) = config.agents.get(&ticket.agent_type) else {
        return false;
    };
    if agent_type.headless.is_none() || parts.tasks.find(&ticket.ticket_id).is_some() {
        return false;
    }
    let of_type = parts
        .tasks
        .tickets()
        .filter(|t| t.agent_type == ticket.agent_type)
        .filter(|t| !t.phase.is_done() && t.phase != Phase::Proposed)
        .count();
    parts.tasks.running() + parts.tasks.queued() < config.tasks.max_running
        && of_type < agent_type.max_tasks.unwrap_or(usize::MAX)
        && parts.agents.live_and_spawning() < config.sessions.max_sessions
}

/// Claims the oldest ticket this host can run, if any (one claim at a time).
fn try_claim(parts: &mut Parts<'_>) {
    if !parts.cluster.connected()
        || parts.cluster.queue().claiming().is_some()
        || parts.ctx.shutting_down
    {
        return;
    }
    let me = parts.cluster.me().to_string();
    let view: &Parts<'_> = parts;
    let Some(Entry { ticket, revision }) = view
        .cluster
        .queue()
        .next_claim(&me, |t| can_take(view, t))
        .cloned()
    else {
        return;
    };
    let mut claimed = ticket;
    claimed.state = QueueState::Claimed;
    claimed.host = Some(me.clone());
    claimed.by = me;
    claimed.attempts += 1;
    claimed.view = None;
    let key = claimed.ticket_id.clone();
    parts.cluster.queue_mut().set_claiming(Some(key));
    if parts
        .cluster
        .write_ticket(&claimed, Some(revision), Write::Claim)
        .is_err()
    {
        parts.cluster.queue_mut().set_claiming(None);
    }
}

/// Runs a ticket this host just claimed (at `revision`) as its own task.
fn run_claimed(parts: &mut Parts<'_>, ticket: QueuedTicket, revision: u64) {
    let key = ticket.ticket_id.clone();
    // A claim whose outcome arrives after another host took the ticket (this daemon was
    // stalled) is not run.
    if let Some(entry) = parts.cluster.queue().entry(&key)
        && entry.revision > revision
        && entry.ticket.by != ticket.by
    {
        parts.cluster.queue_mut().set_claiming(None);
        return parts.cluster.queue_mut().fence(&key);
    }
    parts.cluster.queue_mut().hold(&key, revision);
    log::info!(
        "cluster: this host claimed {key} (attempt {}, submitted on {})",
        ticket.attempts,
        ticket.submitted_on
    );
    let params = DelegateParams {
        working_dir: ticket.working_dir.clone(),
        isolation: ticket.isolation,
        test_command: ticket.test_command.clone(),
        requested_by: ticket.requested_by.clone(),
        ids: Some((ticket.ticket_id.clone(), ticket.session_id.clone())),
        ..params_of(
            &ticket.agent_type,
            &ticket.task,
            &ticket.context,
            ticket.timeout_ms,
        )
    };
    lifecycle::delegate(
        &mut parts.for_tasks(),
        params,
        crate::ctx::done::<ApiState, Result<u64, TaskError>>(move |mut reach, result| {
            let parts = &mut reach;
            parts.cluster.queue_mut().set_claiming(None);
            match result {
                Ok(_) => sync(parts),
                Err(error) => {
                    parts.cluster.queue_mut().let_go(&key);
                    // Only what would fail again here declines the ticket for good; a
                    // passing shortage (workers, queue, store) just gives it back.
                    let why = declines(&error).then(|| error.to_string());
                    release(parts, ticket, revision, why);
                }
            }
            try_claim(parts);
        }),
    );
}

/// Whether `error` from running a claimed ticket here would come again on every try.
fn declines(error: &TaskError) -> bool {
    matches!(
        error,
        TaskError::InvalidWorkingDir(_)
            | TaskError::Invalid(_)
            | TaskError::UnknownType { .. }
            | TaskError::NotDelegable { .. }
    )
}

/// Writes the progress of the tickets this host holds, where it changed.
fn sync(parts: &mut Parts<'_>) {
    let me = parts.cluster.me().to_string();
    let keys: Vec<String> = parts.cluster.queue().held().keys().cloned().collect();
    for key in keys {
        let held = parts.cluster.queue().held()[&key].clone();
        // A ticket being claimed joins the book once it is stored: not gone, not yet there.
        if held.writing || parts.cluster.queue().claiming() == Some(key.as_str()) {
            continue;
        }
        let Some(local) = parts.tasks.find(&key) else {
            parts.cluster.queue_mut().let_go(&key);
            continue;
        };
        let done = local.phase.is_done();
        let view = super::tasks::with_host(parts, local);
        if held.written.as_ref() == Some(&view) {
            continue;
        }
        let Some(entry) = parts.cluster.queue().entry(&key) else {
            continue;
        };
        let mut next = entry.ticket.clone();
        next.state = if done {
            QueueState::Done
        } else {
            QueueState::Claimed
        };
        next.host = Some(me.clone());
        next.by = me.clone();
        next.view = Some(view);
        if parts
            .cluster
            .write_ticket(&next, Some(held.revision), Write::Sync)
            .is_ok()
            && let Some(held) = parts.cluster.queue_mut().held_mut(&key)
        {
            held.writing = true;
        }
    }
}

/// Requeues or fails the tickets of hosts that stopped reporting, once this host has been
/// connected long enough to have heard every live host.
fn take_over(parts: &mut Parts<'_>) {
    let settle = parts.cluster.settings().unreachable_after;
    if !parts.cluster.queue().settled(settle) {
        return;
    }
    let me = parts.cluster.me().to_string();
    let cluster = &*parts.cluster;
    let lost = cluster.queue().taken_over(&me, now_ms(), |host| {
        cluster
            .host(host)
            .is_none_or(|known| !cluster.reachable(known))
    });
    for (ticket, revision) in lost {
        let _ = parts
            .cluster
            .write_ticket(&ticket, Some(revision), Write::TakeOver);
    }
}

/// The queue's periodic work, on every record this host writes: progress, lost hosts,
/// claims.
pub fn tick(parts: &mut Parts<'_>) {
    if !parts.cluster.enabled() || !parts.cluster.connected() {
        return;
    }
    let beat = parts.cluster.settings().unreachable_after / 3;
    parts.cluster.queue_mut().note_tick(beat);
    sync(parts);
    take_over(parts);
    adopt_orphans(parts);
    try_claim(parts);
}

/// A write of a ticket has its outcome.
pub fn on_written(parts: &mut Parts<'_>, id: u64, result: Result<u64, TicketWriteError>) {
    let Some((ticket, write)) = parts.cluster.queue_mut().end_write(id, result.clone().ok()) else {
        return;
    };
    match write {
        Write::Submit { conn, headers } => {
            let response = match result {
                Ok(_) => {
                    log::info!(
                        "cluster: {} queued for a {} agent",
                        ticket.ticket_id,
                        ticket.agent_type
                    );
                    super::json(
                        201,
                        &DelegateResponse {
                            ticket_id: ticket.ticket_id.clone(),
                            task_id: None,
                            session_id: ticket.session_id.clone(),
                            status: crate::tasks::TaskStatus::Pending.as_str(),
                            created_at: ms_rfc3339(ticket.created_ms),
                        },
                    )
                    .with_header("Location", format!("/api/tasks/{}", ticket.ticket_id))
                }
                Err(e) => not_stored(&ticket.ticket_id, &e.to_string()).to_response(),
            };
            parts.ctx.reply(conn, response.with_headers(headers));
        }
        Write::Claim => match result {
            Ok(revision) => run_claimed(parts, ticket, revision),
            Err(e) => {
                log::debug!("cluster: claim of {} not made: {e}", ticket.ticket_id);
                parts.cluster.queue_mut().set_claiming(None);
                if e == TicketWriteError::Conflict {
                    try_claim(parts);
                }
            }
        },
        Write::Release | Write::TakeOver => {
            if let Err(e) = result {
                log::debug!("cluster: a ticket's write was not made: {e}");
            }
        }
        Write::Sync => match result {
            Ok(revision) => {
                let key = ticket.ticket_id;
                let view = ticket.view.unwrap_or_default();
                let done = view["status"]
                    .as_str()
                    .and_then(crate::tasks::TaskStatus::parse)
                    .is_some_and(|s| s.is_final());
                if let Some(held) = parts.cluster.queue_mut().held_mut(&key) {
                    held.revision = revision;
                    held.written = Some(view);
                    held.writing = false;
                }
                if done {
                    parts.cluster.queue_mut().let_go(&key);
                }
                // It may have changed again meanwhile.
                sync(parts);
            }
            Err(TicketWriteError::Conflict) => {
                let key = ticket.ticket_id;
                let by = parts
                    .cluster
                    .queue()
                    .entry(&key)
                    .map(|e| e.ticket.by.clone());
                if by.as_deref().is_some_and(|by| by != parts.cluster.me()) {
                    fence(parts, &key, by.as_deref().unwrap_or("another host"));
                } else if let Some(held) = parts.cluster.queue_mut().held_mut(&key) {
                    // Not seen yet who wrote it: the watch tells, and the next beat tries
                    // again with what it shows.
                    held.writing = false;
                }
            }
            Err(e) => {
                let key = ticket.ticket_id;
                log::warn!("cluster: cannot record {key}'s progress: {e}; tried again");
                if let Some(held) = parts.cluster.queue_mut().held_mut(&key) {
                    held.writing = false;
                }
            }
        },
        Write::Cancel { conn } => {
            let response = match result {
                Ok(_) => super::json(200, &entry_view(&ticket)),
                Err(TicketWriteError::Conflict) => ApiError::new(
                    409,
                    ErrorCode::InvalidRequest,
                    format!(
                        "{} was claimed by a host while it was being cancelled; send the DELETE \
                         again to cancel it there",
                        ticket.ticket_id
                    ),
                )
                .to_response(),
                Err(e) => not_stored(&ticket.ticket_id, &e.to_string()).to_response(),
            };
            parts.ctx.reply(conn, response);
        }
    }
}

/// A ticket of the queue as `GET /api/tasks/{id}` shows it: as its host last wrote it, or,
/// while it waits for a host, from the request.
pub fn entry_view(ticket: &QueuedTicket) -> Value {
    let mut view = match &ticket.view {
        Some(view) => view.clone(),
        None => json!({
            "ticket_id": ticket.ticket_id,
            "task_id": null,
            "status": match ticket.state {
                QueueState::Done => "cancelled",
                _ => "pending",
            },
            "agent": ticket.agent_type,
            "session_id": ticket.session_id,
            "task": ticket.task,
            "context": ticket.context,
            "working_dir": ticket.working_dir,
            "isolation": ticket.isolation,
            "test_command": ticket.test_command,
            "branch": null,
            "created_at": ms_rfc3339(ticket.created_ms),
            "started_at": null,
            "completed_at": null,
            "duration_ms": null,
            "timeout_ms": ticket.timeout_ms,
            "result": null,
        }),
    };
    if let Some(fields) = view.as_object_mut() {
        fields.insert("host".into(), ticket.host.clone().into());
        fields.insert("attempts".into(), ticket.attempts.into());
        if !ticket.declined.is_empty() {
            fields.insert("declined".into(), json!(ticket.declined));
        }
    }
    view
}

/// The view of ticket `id` from the queue, when this host has no live copy of it (it is
/// queued, runs on another host, or was taken from this one).
pub fn view_of(parts: &Parts<'_>, id: &str) -> Option<Value> {
    let entry = parts.cluster.queue().entry(id)?;
    let mine = parts.tasks.find(id).is_some() && !parts.cluster.queue().is_fenced(id);
    (!mine).then(|| entry_view(&entry.ticket))
}

/// `DELETE /api/tasks/{id}` of a ticket in the queue that this host does not run:
/// a queued ticket is cancelled in the bucket. `None`: not the queue's to answer.
pub fn cancel(parts: &mut Parts<'_>, conn: ConnId, id: &str) -> Option<Handled> {
    let entry = parts.cluster.queue().entry(id)?.clone();
    if parts.tasks.find(id).is_some() && !parts.cluster.queue().is_fenced(id) {
        return None;
    }
    let ticket = entry.ticket;
    match ticket.state {
        QueueState::Done => Some(Handled::Now(
            ApiError::from_task(TaskError::Finished {
                task_id: 0,
                state: entry_view(&ticket)["status"]
                    .as_str()
                    .unwrap_or("done")
                    .to_string(),
            })
            .to_response(),
        )),
        QueueState::Claimed => Some(Handled::Now(
            ApiError::new(
                503,
                ErrorCode::HostUnreachable,
                format!(
                    "{id} runs on host {}, which does not answer; try again later",
                    ticket.host.as_deref().unwrap_or("?")
                ),
            )
            .to_response(),
        )),
        QueueState::Queued => {
            let me = parts.cluster.me().to_string();
            let mut cancelled = ticket;
            cancelled.state = QueueState::Done;
            cancelled.by = me;
            let mut view = entry_view(&cancelled);
            view["completed_at"] = ms_rfc3339(now_ms()).into();
            cancelled.view = Some(view);
            let why = Write::Cancel { conn };
            Some(
                match parts
                    .cluster
                    .write_ticket(&cancelled, Some(entry.revision), why)
                {
                    Ok(()) => Handled::Later,
                    Err(_) => Handled::Now(
                        not_stored(id, "the link to NATS is away or busy").to_response(),
                    ),
                },
            )
        }
    }
}

/// The queue's tickets that this host has no live copy of, as views (for `GET /api/tasks`).
pub fn other_views(parts: &Parts<'_>) -> Vec<Value> {
    parts
        .cluster
        .queue()
        .entries()
        .filter(|e| {
            parts.tasks.find(&e.ticket.ticket_id).is_none()
                || parts.cluster.queue().is_fenced(&e.ticket.ticket_id)
        })
        .map(|e| entry_view(&e.ticket))
        .collect()
}
