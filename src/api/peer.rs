//! The API across a cluster's hosts: what this daemon does with the cluster link's events
//! (other hosts' records, requests they forward here, answers to requests forwarded from
//! here), and when a request is forwarded instead of handled here.
//!
//! A request is forwarded when it names an agent another host's record lists
//! (`GET`/`DELETE /api/agents/{id}`, `GET /api/agents/{id}/messages`) or asks for a session
//! on another host (`POST /api/agents/spawn` with `"host"`). The forwarded request carries a
//! token this daemon mints for its caller's subject and scopes, valid for
//! `cluster.request_timeout`; the owner verifies it like any token, and its answer is
//! returned unchanged.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use super::error::{ApiError, ErrorCode};
use super::{Caller, Handled, Parts, json};
use crate::cluster::{ForwardError, KnownHost, LinkEvent};
use crate::net::{Chunk, ConnId};
use crate::principal::Principal;
use crate::proto::http::{Header, Request, Response};
use crate::time::rfc3339;
use crate::wire::cluster::{
    ClusterStatus, ForwardedRequest, ForwardedResponse, HostRecord, HostView, TunnelAck, TunnelIn,
    decode_tunnel_batch, encode_tunnel_batch,
};

/// Handles one of the cluster link's events.
pub fn on_link_event(parts: &mut Parts<'_>, event: LinkEvent) {
    if parts.cluster.on_link_state(&event) {
        publish(parts);
        // Credit lost with the connection must not stall a viewer for good.
        let stand_ins = parts.cluster.reset_credit();
        pump(parts, &stand_ins);
    }
    match event {
        LinkEvent::Host { host, record, age } => {
            let record = record.and_then(|bytes| match serde_json::from_slice(&bytes) {
                Ok(record) if is_sound(&record, &host) => Some(record),
                Ok(_) => {
                    log::warn!(
                        "cluster: host {}'s record is not sound; ignored",
                        crate::shown(&host)
                    );
                    None
                }
                Err(e) => {
                    log::warn!(
                        "cluster: host {}'s record is unreadable: {e}",
                        crate::shown(&host)
                    );
                    None
                }
            });
            if parts.cluster.on_host(host.clone(), record, age) {
                drop_stand_ins_of(parts, &host);
            }
        }
        LinkEvent::Request { reply, payload } => serve(parts, reply, &payload),
        LinkEvent::Ticket {
            key,
            value,
            revision,
        } => super::queue::on_entry(parts, key, value, revision),
        LinkEvent::TicketWritten { id, result } => super::queue::on_written(parts, id, result),
        LinkEvent::Forwarded { id, result } => {
            if let Some((conn, fallback)) = parts.cluster.take_forward(id) {
                let response = match (result, fallback) {
                    (Err(why), Some(body)) => {
                        log::info!(
                            "cluster: the owner could not be asked ({why}); answered from the queue"
                        );
                        Response::json(200, body)
                    }
                    (result, _) => response_of(result),
                };
                parts.ctx.reply(conn, response);
            }
        }
        LinkEvent::Events(frame) => {
            // Written to every observer's socket as is: it must be one well-formed message.
            if is_server_message(&frame) {
                parts.ctx.ws.relayed.push(frame.into());
            } else {
                log::warn!(
                    "cluster: a malformed event from another host ({} bytes); dropped",
                    frame.len()
                );
            }
        }
        LinkEvent::TunnelIn(bytes) => on_tunnel_in(parts, &bytes),
        LinkEvent::TunnelOut(bytes) => on_tunnel_out(parts, &bytes),
        LinkEvent::TunnelAck(bytes) => on_tunnel_ack(parts, &bytes),
        LinkEvent::Connected
        | LinkEvent::Disconnected
        | LinkEvent::Lost(_)
        | LinkEvent::Watching => {}
    }
}

/// Whether a record read from the bucket under key `host` can be used: it names that host,
/// and each agent is an object with a session id and a type.
fn is_sound(record: &HostRecord, host: &str) -> bool {
    record.host == host
        && crate::cluster::is_host_name(host)
        && record
            .agents
            .iter()
            .all(|agent| agent["session_id"].is_string() && agent["agent_type"].is_string())
}

/// Whether `frame` is one complete text frame holding a server message (whose encoding
/// always starts with its `type`), as a daemon sends. Checked per frame on a remote
/// viewer's output path, so without parsing the JSON: the seal already vouches for the
/// sender.
fn is_server_message(frame: &[u8]) -> bool {
    crate::proto::ws::text_frame_payload(frame).is_some_and(|text| text.starts_with("{\"type\":\""))
}

/// This host's record as the cluster should see it now.
fn record(parts: &Parts<'_>) -> HostRecord {
    let me = parts.cluster.me().to_string();
    let agents = super::agents::summaries(parts)
        .into_iter()
        .map(|summary| with_host(serde_json::to_value(summary).expect("serializable"), &me))
        .collect();
    HostRecord {
        host: me,
        started_at: rfc3339(SystemTime::now() - parts.ctx.started.elapsed()),
        reported_at: rfc3339(SystemTime::now()),
        sessions: parts.agents.live_and_spawning(),
        max_sessions: parts.ctx.config.sessions.max_sessions,
        agent_types: parts.ctx.config.agents.keys().cloned().collect(),
        agents,
        tasks: parts
            .tasks
            .tickets()
            .filter(|t| !parts.cluster.queue().is_fenced(&t.ticket_id))
            .map(|t| t.ticket_id.clone())
            .collect(),
        instance: parts.cluster.instance().to_string(),
    }
}

/// `value` (an agent as the list shows it) with `"host"` set.
pub fn with_host(mut value: serde_json::Value, host: &str) -> serde_json::Value {
    if let Some(object) = value.as_object_mut() {
        object.insert("host".into(), host.into());
    }
    value
}

/// Writes this host's record (a heartbeat, or its agents changed).
pub fn publish(parts: &mut Parts<'_>) {
    if parts.cluster.enabled() {
        let record = record(parts);
        parts.cluster.publish(&record);
        super::queue::tick(parts);
    }
}

/// A request another host forwarded: handled like one from a client, with the token it
/// carries; the answer goes back through the link, now or when it is ready.
fn serve(parts: &mut Parts<'_>, reply: String, payload: &[u8]) {
    let conn = parts.cluster.begin_serving(reply);
    let forwarded: ForwardedRequest = match serde_json::from_slice(payload) {
        Ok(request) => request,
        Err(e) => {
            let error = ApiError::bad_request(format!("unreadable forwarded request: {e}"));
            return answer(parts, conn, error.to_response());
        }
    };
    let request = Request {
        method: forwarded.method,
        path: forwarded.path,
        query: forwarded.query,
        minor_version: 1,
        headers: vec![
            Header {
                name: "Authorization".into(),
                value: format!("Bearer {}", forwarded.token).into_bytes(),
            },
            Header {
                name: "Content-Type".into(),
                value: b"application/json".to_vec(),
            },
        ],
        body: forwarded.body.into_bytes(),
    };
    match super::handle(parts, conn, Caller::Peer, &request) {
        Handled::Now(response) | Handled::Refuse(response) => answer(parts, conn, response),
        Handled::Later => {}
        Handled::Upgrade { .. } => {
            let error = ApiError::bad_request("a forwarded request cannot open a WebSocket");
            answer(parts, conn, error.to_response());
        }
    }
}

/// Sends the answer to a forwarded request (stand-in connection `conn`).
pub fn answer(parts: &mut Parts<'_>, conn: ConnId, response: Response) {
    let body = String::from_utf8(response.body)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    let answer = ForwardedResponse {
        status: response.status,
        headers: response.headers,
        body,
    };
    let payload = serde_json::to_vec(&answer).expect("serializable");
    parts.cluster.answer(conn, payload);
}

/// The headers of an owner's answer that are passed on to the caller.
const PASSED_HEADERS: &[&str] = &[
    "Content-Type",
    "Retry-After",
    "WWW-Authenticate",
    "Allow",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
];

/// The caller's answer from the owner's, or the error that says why there is none.
fn response_of(result: Result<Vec<u8>, ForwardError>) -> Response {
    let error = match result {
        Ok(bytes) => match serde_json::from_slice::<ForwardedResponse>(&bytes) {
            Ok(answer) if (200..=599).contains(&answer.status) => {
                // Only the headers the API's answers carry pass; the encoder adds the rest.
                let headers = answer
                    .headers
                    .into_iter()
                    .filter(|(name, value)| {
                        PASSED_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
                            && !value.contains(['\r', '\n'])
                    })
                    .collect();
                return Response {
                    status: answer.status,
                    headers,
                    body: answer.body.into_bytes(),
                };
            }
            Ok(answer) => ApiError::internal(format!(
                "the owner answered with status {}, which is not passed on",
                answer.status
            )),
            Err(e) => ApiError::internal(format!("the owner's answer is unreadable: {e}")),
        },
        Err(why) => ApiError::new(
            503,
            ErrorCode::HostUnreachable,
            format!("the host that owns this could not be asked: {why}"),
        ),
    };
    error.to_response()
}

/// Forwards `request` to `host` for `principal`; the answer is queued for `conn` later.
/// `fallback` (JSON) is answered `200` if the owner cannot be asked.
pub fn forward(
    parts: &mut Parts<'_>,
    conn: ConnId,
    host: &str,
    principal: &Principal,
    request: &Request,
    body: Vec<u8>,
    fallback: Option<Vec<u8>>,
) -> Handled {
    let ttl = parts.cluster.settings().request_timeout + std::time::Duration::from_secs(5);
    let Some(token) = parts.api.auth.mint_for(&parts.ctx.config, principal, ttl) else {
        return Handled::Now(
            ApiError::internal("this daemon cannot sign tokens (auth.algorithm is not HS256)")
                .to_response(),
        );
    };
    let Ok(body) = String::from_utf8(body) else {
        return Handled::Now(ApiError::bad_request("the body is not UTF-8").to_response());
    };
    let forwarded = ForwardedRequest {
        method: request.method.clone(),
        path: request.path.clone(),
        query: request.query.clone(),
        token,
        body,
    };
    let payload = serde_json::to_vec(&forwarded).expect("serializable");
    match parts.cluster.forward(conn, host, payload, fallback) {
        Some(id) => {
            // The caller gets an answer even when the link is stuck (NATS away).
            let deadline = parts.cluster.settings().request_timeout + FORWARD_GRACE;
            parts
                .ctx
                .timers
                .schedule_in(deadline, crate::ctx::Timer::ForwardTimeout(id));
            Handled::Later
        }
        None => Handled::Now(
            ApiError::new(
                503,
                ErrorCode::HostUnreachable,
                "the cluster link cannot take the request now (NATS away, cluster.max_queued waiting)",
            )
            .to_response(),
        ),
    }
}

/// How much longer than `cluster.request_timeout` the loop waits for a forwarded request's
/// answer before it answers `503` itself.
const FORWARD_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A forwarded request's time is up: if it is still unanswered, its caller gets `503`.
pub fn on_forward_timeout(parts: &mut Parts<'_>, id: u64) {
    if let Some((conn, fallback)) = parts.cluster.take_forward(id) {
        if let Some(body) = fallback {
            return parts.ctx.reply(conn, Response::json(200, body));
        }
        parts
            .ctx
            .reply(conn, response_of(Err(ForwardError::TimedOut)));
    }
}

/// The other host that owns agent `session_id`, when this daemon has no such agent.
pub fn remote_owner(parts: &Parts<'_>, session_id: &str) -> Option<String> {
    if !parts.cluster.enabled() || parts.agents.get(session_id).is_some() {
        return None;
    }
    parts
        .cluster
        .owner_of(session_id)
        .map(|host| host.record.host.clone())
}

/// The other host that holds task `id` (a ticket id), when this daemon has no such task.
pub fn task_owner(parts: &Parts<'_>, id: &str) -> Option<String> {
    let mine = parts.tasks.find(id).is_some() && !parts.cluster.queue().is_fenced(id);
    if !parts.cluster.enabled() || mine {
        return None;
    }
    // A ticket of the queue goes to the host that runs it; one that waits or is done is
    // answered from the queue.
    if let Some(entry) = parts.cluster.queue().entry(id) {
        let host = entry.ticket.host.as_deref()?;
        let running = entry.ticket.state == crate::wire::cluster::QueueState::Claimed
            && parts
                .cluster
                .host(host)
                .is_some_and(|known| parts.cluster.reachable(known));
        return running.then(|| host.to_string());
    }
    parts
        .cluster
        .hosts()
        .find(|host| host.record.tasks.iter().any(|t| t == id))
        .map(|host| host.record.host.clone())
}

/// Where a spawn request that names `host` should go: `Ok(None)` here, `Ok(Some(name))`
/// another host, or the error to answer with.
pub fn spawn_target(
    parts: &Parts<'_>,
    host: &str,
    agent_type: &str,
) -> Result<Option<String>, ApiError> {
    let me = parts.cluster.me();
    if host == me || (!parts.cluster.enabled() && host.is_empty()) {
        return Ok(None);
    }
    if !parts.cluster.enabled() {
        return Err(ApiError::new(
            400,
            ErrorCode::UnknownHost,
            format!(
                "\"host\" is {}, but this daemon is not part of a cluster ([cluster] in its config)",
                crate::shown(host)
            ),
        ));
    }
    if host == "any" {
        return least_loaded(parts, agent_type);
    }
    let Some(known) = parts.cluster.host(host) else {
        return Err(ApiError::new(
            400,
            ErrorCode::UnknownHost,
            format!(
                "no host {} in cluster {}; hosts: {}",
                crate::shown(host),
                parts.cluster.name(),
                host_names(parts).join(", ")
            ),
        ));
    };
    if !parts.cluster.reachable(known) {
        return Err(unreachable(parts, known));
    }
    Ok(Some(host.to_string()))
}

/// The reachable host with the lowest load (live sessions per allowed session) that has
/// `agent_type` and room; this host wins ties.
fn least_loaded(parts: &Parts<'_>, agent_type: &str) -> Result<Option<String>, ApiError> {
    // This host's load, without building its whole record.
    let (sessions, max) = (
        parts.agents.live_and_spawning(),
        parts.ctx.config.sessions.max_sessions,
    );
    let here = sessions < max && parts.ctx.config.agents.contains_key(agent_type);
    let load = if max == 0 {
        1.0
    } else {
        sessions as f64 / max as f64
    };
    let mut best: Option<(f64, Option<String>)> = here.then_some((load, None));
    for host in parts.cluster.hosts() {
        if parts.cluster.reachable(host) && host.record.can_run(agent_type) {
            let load = host.record.load();
            if best.as_ref().is_none_or(|(lowest, _)| load < *lowest) {
                best = Some((load, Some(host.record.host.clone())));
            }
        }
    }
    best.map(|(_, host)| host).ok_or_else(|| {
        ApiError::new(
            503,
            ErrorCode::Overloaded,
            format!("no reachable host has the agent type {agent_type:?} and room for a session"),
        )
    })
}

fn unreachable(parts: &Parts<'_>, host: &KnownHost) -> ApiError {
    ApiError::new(
        503,
        ErrorCode::HostUnreachable,
        format!(
            "host {} has not reported for {}s (cluster.unreachable_after is {}s)",
            host.record.host,
            host.heard.elapsed().as_secs(),
            parts.cluster.settings().unreachable_after.as_secs()
        ),
    )
}

fn host_names(parts: &Parts<'_>) -> Vec<String> {
    std::iter::once(parts.cluster.me().to_string())
        .chain(parts.cluster.hosts().map(|h| h.record.host.clone()))
        .collect()
}

/// Every other host's agents, as the list shows them (each with `"host"`); those of a host
/// that has not reported within `cluster.unreachable_after` with status `unreachable`.
pub fn remote_agents(parts: &Parts<'_>) -> Vec<serde_json::Value> {
    let mut agents = Vec::new();
    for host in parts.cluster.hosts() {
        let reachable = parts.cluster.reachable(host);
        for agent in &host.record.agents {
            let mut agent = agent.clone();
            if let (false, Some(fields)) = (reachable, agent.as_object_mut()) {
                fields.insert("status".into(), super::agents::UNREACHABLE.into());
            }
            agents.push(agent);
        }
    }
    agents
}

/// `GET /api/cluster`: the hosts, their load and their agents.
pub fn status(parts: &Parts<'_>) -> Handled {
    if !parts.cluster.enabled() {
        return Handled::Now(
            ApiError::new(
                404,
                ErrorCode::NotFound,
                "this daemon is not part of a cluster ([cluster] in its config)",
            )
            .to_response(),
        );
    }
    let mine = record(parts);
    let view = |record: &HostRecord, reachable: bool, this_host: bool| HostView {
        host: record.host.clone(),
        reachable,
        this_host,
        sessions: record.sessions,
        max_sessions: record.max_sessions,
        load: record.load(),
        agent_types: record.agent_types.clone(),
        agents: record
            .agents
            .iter()
            .filter_map(|a| a["session_id"].as_str().map(str::to_string))
            .collect(),
        started_at: record.started_at.clone(),
        reported_at: record.reported_at.clone(),
    };
    let mut hosts = vec![view(&mine, parts.cluster.connected(), true)];
    hosts.extend(
        parts
            .cluster
            .hosts()
            .map(|host| view(&host.record, parts.cluster.reachable(host), false)),
    );
    Handled::Now(json(
        200,
        &ClusterStatus {
            cluster: parts.cluster.name().to_string(),
            host: parts.cluster.me().to_string(),
            connected: parts.cluster.connected(),
            hosts,
        },
    ))
}

/// A viewer's message about another host's session (`host`): sent to that host through the
/// viewer tunnel, with a token for the viewer's principal. Its answers come back as frames.
pub fn tunnel(parts: &mut Parts<'_>, conn: ConnId, principal: &Principal, host: &str, text: &str) {
    let ttl = parts.cluster.settings().request_timeout + std::time::Duration::from_secs(5);
    let Some(token) = parts.api.auth.mint_for(&parts.ctx.config, principal, ttl) else {
        let message = "this daemon cannot sign tokens for other hosts (auth.algorithm)";
        let code = ErrorCode::InternalError;
        return super::observe::send_error(parts, conn, code, message, None, None);
    };
    let message = TunnelIn {
        origin: parts.cluster.me().to_string(),
        conn: (conn.key, conn.serial),
        token,
        text: Some(text.to_string()),
    };
    let subject = parts.cluster.tunnel_subject("in", host);
    parts
        .cluster
        .send(subject, serde_json::to_vec(&message).expect("serializable"));
    parts.cluster.tunneled(conn, host);
}

/// Forgets the stand-ins of `origin`'s viewers (it restarted, went away or went silent).
pub fn drop_stand_ins_of(parts: &mut Parts<'_>, origin: &str) {
    for stand_in in parts.cluster.drop_stand_ins_of(origin) {
        parts.panes.viewer_closed(stand_in);
        parts.api.forget_rate(stand_in);
    }
}

/// This host's viewer `conn` closed: the hosts it talked to drop their stand-ins.
pub fn viewer_closed(parts: &mut Parts<'_>, conn: ConnId) {
    if !parts.cluster.enabled() {
        return;
    }
    let hosts = parts.cluster.take_tunnels(conn);
    if hosts.is_empty() {
        return;
    }
    // The close carries a token like any message: observe only, in this host's name.
    let closer = Principal {
        subject: format!("host {}", parts.cluster.me()),
        scopes: crate::principal::Scopes {
            observe: true,
            control: false,
        },
        expires_at: u64::MAX,
        session: None,
    };
    let ttl = parts.cluster.settings().request_timeout;
    let token = parts
        .api
        .auth
        .mint_for(&parts.ctx.config, &closer, ttl)
        .unwrap_or_default();
    for host in hosts {
        let message = TunnelIn {
            origin: parts.cluster.me().to_string(),
            conn: (conn.key, conn.serial),
            token: token.clone(),
            text: None,
        };
        let subject = parts.cluster.tunnel_subject("in", &host);
        parts
            .cluster
            .send(subject, serde_json::to_vec(&message).expect("serializable"));
    }
}

/// A viewer of another host talks to a session of this one: handled like a message on a
/// WebSocket of this host, through the viewer's stand-in connection.
fn on_tunnel_in(parts: &mut Parts<'_>, bytes: &[u8]) {
    let Ok(message) = serde_json::from_slice::<TunnelIn>(bytes) else {
        return log::warn!("cluster: an unreadable viewer message; ignored");
    };
    if !crate::cluster::is_host_name(&message.origin) {
        return log::warn!("cluster: a viewer message from an unnamed host; ignored");
    }
    // A message without a valid token (a close too) gets no stand-in and no answer.
    let principal = match parts.api.auth.verify(&message.token) {
        Ok(principal) => principal,
        Err(e) => {
            return log::warn!(
                "cluster: a viewer message from {} with a bad token ({e}); dropped",
                crate::shown(&message.origin)
            );
        }
    };
    let Some(text) = message.text else {
        if let Some(stand_in) = parts
            .cluster
            .existing_stand_in(&message.origin, message.conn)
        {
            parts.panes.viewer_closed(stand_in);
            parts.api.forget_rate(stand_in);
            parts.cluster.drop_stand_in(stand_in);
        }
        return;
    };
    let stand_in = parts.cluster.stand_in(&message.origin, message.conn);
    super::observe::on_text(parts, stand_in, &principal, &text);
}

/// Frames queued for stand-in connections (screens, answers): sent to their viewers' hosts.
pub fn tunnel_frames(parts: &mut Parts<'_>, frames: Vec<(ConnId, Vec<u8>)>) {
    let mut outgoing = Outgoing::default();
    for (id, frame) in frames {
        outgoing.add(parts, id, Chunk::Owned(frame));
    }
    outgoing.send(parts);
}

/// The most bytes of frames one tunnel message carries (NATS refuses messages over its
/// `max_payload`, 1 MiB by default).
const MAX_BATCH_BYTES: usize = 512 * 1024;

/// Frames bound for other hosts' viewers, gathered over one pass of the loop. A frame that
/// many stand-ins of one host get (the same shared chunk of a session's output) crosses to
/// that host once, naming them all; their host hands it to each (fan-out at the edge).
#[derive(Default)]
struct Outgoing {
    /// By viewers' host: frames in order, each with the stand-ins it is for.
    by_host: BTreeMap<String, Vec<(Chunk, Vec<ConnId>)>>,
    /// Where each shared chunk already is: (host, chunk address) → index in its host's list.
    shared_at: HashMap<(String, usize), usize>,
    /// The index of the last frame each stand-in got, so that sharing keeps its order.
    last_of: HashMap<ConnId, usize>,
}

impl Outgoing {
    /// Adds `chunk` for stand-in `id`.
    fn add(&mut self, parts: &mut Parts<'_>, id: ConnId, chunk: Chunk) {
        let Some(stand_in) = parts.cluster.stand_in_for(id) else {
            return;
        };
        let origin = stand_in.origin.clone();
        let list = self.by_host.entry(origin.clone()).or_default();
        let last = self.last_of.get(&id).copied();
        if let Chunk::Shared(shared) = &chunk {
            let address = (origin.clone(), shared.as_ptr() as usize);
            if let Some(&index) = self.shared_at.get(&address)
                && last.is_none_or(|last| index > last)
                && list[index].1.len() < crate::wire::cluster::MAX_BATCH_TARGETS
            {
                list[index].1.push(id);
                self.last_of.insert(id, index);
                return;
            }
            self.shared_at.insert(address, list.len());
        }
        self.last_of.insert(id, list.len());
        list.push((chunk, vec![id]));
    }

    /// Sends the frames, at most [`MAX_BATCH_BYTES`] per message, and counts what each
    /// stand-in has in flight once the link took it.
    fn send(self, parts: &mut Parts<'_>) {
        let me = parts.cluster.me().to_string();
        for (host, frames) in self.by_host {
            let subject = parts.cluster.tunnel_subject("out", &host);
            let mut start = 0;
            while start < frames.len() {
                let mut end = start;
                let mut size = 0;
                while end < frames.len()
                    && (end == start || size + frames[end].0.as_bytes().len() <= MAX_BATCH_BYTES)
                {
                    size += frames[end].0.as_bytes().len();
                    end += 1;
                }
                let batch = &frames[start..end];
                let targets: Vec<Vec<(usize, u64)>> = batch
                    .iter()
                    .map(|(_, ids)| {
                        ids.iter()
                            .filter_map(|id| parts.cluster.stand_in_for(*id).map(|s| s.conn))
                            .collect()
                    })
                    .collect();
                let entries: Vec<crate::wire::cluster::BatchEntry<'_>> = batch
                    .iter()
                    .zip(&targets)
                    .map(|((chunk, _), targets)| (chunk.as_bytes(), targets.as_slice()))
                    .collect();
                // Counted only once the link took them: a dropped batch is never acknowledged.
                if parts
                    .cluster
                    .send(subject.clone(), encode_tunnel_batch(&me, &entries))
                {
                    for (chunk, ids) in batch {
                        for id in ids {
                            if let Some(stand_in) = parts.cluster.stand_in_for(*id) {
                                stand_in.in_flight += chunk.as_bytes().len();
                            }
                        }
                    }
                }
                start = end;
            }
        }
    }
}

/// Sessions of this host have output for stand-ins `ids`: each pulls while its viewer's host
/// has credit for it (`websocket.send_window_bytes` in flight at most), and what they pulled
/// goes to their hosts together.
pub fn pump(parts: &mut Parts<'_>, ids: &[ConnId]) {
    let window = parts.ctx.config.websocket.send_window_bytes;
    let timestamp = crate::panes::capture::now_millis();
    let mut outgoing = Outgoing::default();
    for &id in ids {
        let Some(in_flight) = parts.cluster.stand_in_for(id).map(|s| s.in_flight) else {
            continue;
        };
        let mut budget = window.saturating_sub(in_flight);
        while budget > 0 {
            let chunks = parts.panes.pull(id, budget, timestamp);
            if chunks.is_empty() {
                break;
            }
            let size: usize = chunks.iter().map(|c| c.as_bytes().len()).sum();
            budget = budget.saturating_sub(size);
            for chunk in chunks {
                outgoing.add(parts, id, chunk);
            }
        }
    }
    outgoing.send(parts);
}

/// Frames from another host for viewers of this one: handed to each viewer they name, and
/// credited back.
fn on_tunnel_out(parts: &mut Parts<'_>, bytes: &[u8]) {
    let Some(crate::wire::cluster::TunnelBatch { owner, entries }) = decode_tunnel_batch(bytes)
    else {
        return log::warn!("cluster: unreadable frames for viewers; ignored");
    };
    // Credit goes back for every batch, delivered or not, so a sender never stalls on one.
    let mut credits: HashMap<(usize, u64), usize> = HashMap::new();
    for (frame, targets) in &entries {
        for target in targets {
            *credits.entry(*target).or_default() += frame.len();
        }
    }
    if crate::cluster::is_host_name(&owner) && !credits.is_empty() {
        let ack = TunnelAck {
            origin: parts.cluster.me().to_string(),
            credits: credits.into_iter().collect(),
        };
        let subject = parts.cluster.tunnel_subject("ack", &owner);
        parts
            .cluster
            .send(subject, serde_json::to_vec(&ack).expect("serializable"));
    }
    // Only whole messages, and only for viewers that talked to that host, reach a socket.
    if !entries.iter().all(|(frame, _)| is_server_message(frame)) {
        return log::warn!(
            "cluster: malformed frames from {} for viewers; dropped",
            crate::shown(&owner)
        );
    }
    for (frame, targets) in entries {
        let mut asked: Vec<ConnId> = targets
            .into_iter()
            .map(|(key, serial)| ConnId { key, serial })
            .filter(|conn| parts.cluster.has_tunnel(*conn, &owner))
            .collect();
        let Some(last) = asked.pop() else {
            log::debug!(
                "cluster: a frame from {} for viewers that did not ask; dropped",
                crate::shown(&owner)
            );
            continue;
        };
        if asked.is_empty() {
            parts.ctx.ws.direct.push((last, frame));
        } else {
            // Several viewers here watch the same session there: one copy for all.
            let frame: std::sync::Arc<[u8]> = frame.into();
            for conn in asked {
                parts.ctx.ws.shared.push((conn, frame.clone()));
            }
            parts.ctx.ws.shared.push((last, frame));
        }
    }
}

/// A viewer's host took frames: credit for more.
fn on_tunnel_ack(parts: &mut Parts<'_>, bytes: &[u8]) {
    let Ok(ack) = serde_json::from_slice::<TunnelAck>(bytes) else {
        return;
    };
    let mut credited = Vec::with_capacity(ack.credits.len());
    for (conn, bytes) in ack.credits {
        let Some(id) = parts.cluster.existing_stand_in(&ack.origin, conn) else {
            continue;
        };
        if let Some(stand_in) = parts.cluster.stand_in_for(id) {
            stand_in.in_flight = stand_in.in_flight.saturating_sub(bytes);
            credited.push(id);
        }
    }
    pump(parts, &credited);
}
