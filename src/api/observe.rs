//! `/ws/observe`: deciding an upgrade (handshake, origin, credentials) and what client
//! messages mean. Scopes and token expiry are checked on every message. The server owns the
//! connection; this module only reads and changes daemon state and queues replies.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::auth::{Principal, Scope, bearer_token};
use super::error::{ApiError, ErrorCode};
use super::ratelimit::WsVerdict;
use super::{ApiState, Parts};
use super::{Handled, json};
use crate::agents::history::Role;
use crate::api::WsTicket;
use crate::ctx::Timer;
use crate::net::ConnId;
use crate::panes::hub::{SubscribeError, SubscribeStart};
use crate::panes::typing::{AckKind, InputAck, Typing};
use crate::proto::http::Request;
use crate::proto::ws::{self, close};
use crate::wire::rest::TicketResponse;
use crate::wire::ws::{ClientMessage, ServerMessage};

/// What to do after a client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// Keep the connection.
    Continue,
    /// Close it with this code and reason (after queued messages).
    Close(u16, String),
}

/// Decides an upgrade request on `/ws/observe`.
pub fn upgrade(parts: &mut Parts<'_>, caller: super::Caller, request: &Request) -> Handled {
    let upgrade = match ws::validate_upgrade(request) {
        Ok(upgrade) => upgrade,
        Err(error) => {
            let code = if error.status == 405 {
                ErrorCode::MethodNotAllowed
            } else {
                ErrorCode::InvalidRequest
            };
            let body = ApiError::new(error.status, code, error.message)
                .to_response()
                .body;
            let mut response = ws::refusal(&error, body);
            if error.status == 405 {
                response.headers.push(("Allow".into(), "GET".into()));
            }
            return Handled::Refuse(response);
        }
    };
    let origins = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("origin"))
        .count();
    if origins > 1
        || upgrade
            .origin
            .as_ref()
            .is_some_and(|origin| !origin_allowed(parts, origin, request.header_str("host")))
    {
        let error = ApiError::new(
            403,
            ErrorCode::Forbidden,
            "this Origin may not open a WebSocket here",
        );
        return Handled::Refuse(error.to_response());
    }
    let local = caller == super::Caller::Local
        && request.header("authorization").is_none()
        && request.query_param("token").is_none()
        && request.query_param("ticket").is_none();
    let principal = if local {
        Ok(super::local_principal(parts))
    } else {
        credentials(parts, request)
    }
    .and_then(|p| {
        if p.scopes.allows(Scope::Observe) {
            Ok(p)
        } else {
            Err("the token lacks the observe scope".to_string())
        }
    });
    if principal.is_ok() {
        parts.api.observers += 1;
    }
    Handled::Upgrade {
        accept: ws::accept_response(&upgrade),
        principal,
    }
}

/// The daemon's own origin (the page it serves), or one `websocket.allowed_origins` lists.
pub fn origin_allowed(parts: &Parts<'_>, origin: &str, host: Option<&str>) -> bool {
    is_own_origin(origin, host)
        || parts
            .ctx
            .config
            .websocket
            .allowed_origins
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Whether `origin` is the daemon's own: `http://` or `https://` and the `Host` the request
/// was sent to.
pub fn is_own_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    ["http://", "https://"]
        .iter()
        .any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}{host}")))
}

/// The principal from `?ticket=`, `?token=` or `Authorization: Bearer`.
fn credentials(parts: &mut Parts<'_>, request: &Request) -> Result<Principal, String> {
    if let Some(ticket) = request.query_param("ticket") {
        let ticket = ticket.map_err(|_| "malformed ticket".to_string())?;
        return match parts.api.ws_tickets.remove(&ticket) {
            Some(t) if t.expires > Instant::now() => Ok(t.principal),
            _ => Err("unknown, used or expired ticket".into()),
        };
    }
    let token = match request.query_param("token") {
        Some(token) => token.map_err(|_| "malformed token".to_string())?,
        None => bearer_token(request.header("authorization"))
            .map_err(|e| e.0.to_string())?
            .to_string(),
    };
    parts.api.auth.verify(&token).map_err(|e| e.0.to_string())
}

/// The frames sent before closing a connection whose credentials were refused.
pub fn refused_credentials(reason: &str) -> Vec<u8> {
    let message = ServerMessage::Error {
        error_code: ErrorCode::InvalidToken,
        message: reason,
        session_id: None,
        id: None,
    };
    let mut frames = ws::text_frame(&message.to_json());
    frames.extend(ws::close_frame(close::POLICY_VIOLATION, "invalid token"));
    frames
}

/// `POST /api/ws-ticket`: a one-time ticket standing for the caller's token.
pub fn issue_ticket(parts: &mut Parts<'_>, principal: Principal) -> Handled {
    let ticket = crate::panes::attach::new_token();
    let ttl = parts.ctx.config.websocket.ticket_ttl;
    if parts.api.ws_tickets.len() >= 10_000 {
        let now = Instant::now();
        parts.api.ws_tickets.retain(|_, t| t.expires > now);
    }
    parts.api.ws_tickets.insert(
        ticket.clone(),
        WsTicket {
            principal,
            expires: Instant::now() + ttl,
        },
    );
    parts
        .ctx
        .timers
        .schedule_in(ttl + Duration::from_secs(1), Timer::TicketSweep);
    Handled::Now(json(
        201,
        &TicketResponse {
            ticket,
            expires_in: ttl.as_secs(),
        },
    ))
}

/// Sends an `error` answer to one connection.
pub(super) fn send_error(
    parts: &mut Parts<'_>,
    conn: ConnId,
    code: ErrorCode,
    message: &str,
    session: Option<&str>,
    id: Option<&serde_json::Value>,
) {
    parts.ctx.send_ws(
        conn,
        &ServerMessage::Error {
            error_code: code,
            message,
            session_id: session,
            id,
        },
    );
}

/// Handles one text message from an authenticated observer: its credentials must still hold
/// and the connection must be within its message rate; then the message is parsed and
/// answered.
pub fn on_text(parts: &mut Parts<'_>, conn: ConnId, principal: &Principal, text: &str) -> After {
    log::trace!("ws {conn:?} <- {} bytes", text.len());
    if let Some(after) = expired(parts, conn, principal) {
        return after;
    }
    if let Some(after) = over_rate(parts, conn) {
        return after;
    }
    if let Some(message) = parse(parts, conn, text) {
        // Another host's session: its daemon answers, through the viewer tunnel.
        let from_another_host = conn.key == crate::cluster::PEER_CONN_KEY;
        if let Some(host) = message
            .session_id()
            .filter(|_| !from_another_host)
            .and_then(|session| super::peer::remote_owner(parts, session))
        {
            super::peer::tunnel(parts, conn, principal, &host, text);
            return After::Continue;
        }
        answer(parts, conn, principal, message);
    }
    After::Continue
}

/// Closes the connection (after an `INVALID_TOKEN` error) once its token has expired or its
/// browser session was logged out.
fn expired(parts: &mut Parts<'_>, conn: ConnId, principal: &Principal) -> Option<After> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let logged_out = principal
        .session
        .as_deref()
        .is_some_and(|sid| parts.api.web.is_logged_out(sid));
    if !logged_out && principal.expires_at + parts.ctx.config.auth.leeway.as_secs() >= now {
        return None;
    }
    let code = ErrorCode::InvalidToken;
    send_error(parts, conn, code, "token expired", None, None);
    Some(After::Close(
        close::POLICY_VIOLATION,
        "token expired".into(),
    ))
}

/// The connection's message rate: past it, the message is dropped with a
/// `RATE_LIMIT_EXCEEDED` error; far past it, the connection is closed.
fn over_rate(parts: &mut Parts<'_>, conn: ConnId) -> Option<After> {
    let verdict = parts
        .api
        .rate
        .ws_message(conn, std::time::Instant::now(), SystemTime::now());
    if matches!(verdict, WsVerdict::Allow) {
        return None;
    }
    *parts
        .ctx
        .metrics
        .rate_limited
        .entry("ws_messages")
        .or_default() += 1;
    let code = ErrorCode::RateLimitExceeded;
    match verdict {
        WsVerdict::Allow => None,
        WsVerdict::Drop(decision) => {
            let detail = format!(
                "rate limit exceeded ({} messages per window); message dropped, retry in {} s",
                decision.limit, decision.retry_after
            );
            send_error(parts, conn, code, &detail, None, None);
            Some(After::Continue)
        }
        WsVerdict::Close(_) => {
            let detail = "rate limit exceeded again and again; closing";
            send_error(parts, conn, code, detail, None, None);
            Some(After::Close(
                close::RATE_LIMITED,
                "rate limit exceeded".into(),
            ))
        }
    }
}

/// The client message in `text`, counted by type; `None` (after an `INVALID_REQUEST` error)
/// when it is not one.
fn parse(parts: &mut Parts<'_>, conn: ConnId, text: &str) -> Option<ClientMessage> {
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(message) => {
            *parts
                .ctx
                .metrics
                .ws_in
                .entry(message.type_name())
                .or_default() += 1;
            Some(message)
        }
        Err(e) => {
            *parts.ctx.metrics.ws_in.entry("invalid").or_default() += 1;
            let detail = format!("invalid message: {}", crate::bounded(&e.to_string()));
            send_error(parts, conn, ErrorCode::InvalidRequest, &detail, None, None);
            None
        }
    }
}

/// Answers a client message: one function per kind.
fn answer(parts: &mut Parts<'_>, conn: ConnId, principal: &Principal, message: ClientMessage) {
    match message {
        ClientMessage::Ping { id } => {
            parts
                .ctx
                .send_ws(conn, &ServerMessage::Pong { id: id.as_ref() });
        }
        ClientMessage::SubscribeTerminal {
            session_id,
            since,
            stream,
        } => subscribe(parts, conn, &session_id, since, stream.as_deref()),
        ClientMessage::UnsubscribeTerminal { session_id } => {
            parts.panes.unsubscribe(conn, &session_id);
            let session_id = &session_id;
            parts
                .ctx
                .send_ws(conn, &ServerMessage::Unsubscribed { session_id });
        }
        ClientMessage::UserMessage {
            session_id,
            content,
            id,
        } => {
            let typing = Typing::Message(content.clone());
            let kind = AckKind::UserMessage;
            if type_into(
                parts,
                conn,
                principal,
                &session_id,
                typing,
                kind,
                id.clone(),
            ) {
                parts
                    .for_agents()
                    .remember(&session_id, Role::User, content, id);
            }
        }
        ClientMessage::TerminalInput {
            session_id,
            data,
            id,
        } => {
            let typing = Typing::Raw(data.into_bytes());
            let kind = AckKind::TerminalInput;
            if type_into(parts, conn, principal, &session_id, typing, kind, id) {
                // Keys typed at a dialog answer it there: it is no longer asked remotely.
                parts.for_agents().forget_keyed_approvals(&session_id);
            }
        }
        ClientMessage::ApproveTool {
            session_id,
            request_id,
            decision,
            message,
        } => {
            let (request_id, decision) = (request_id.as_str(), decision.as_str());
            approve_tool(
                parts,
                conn,
                principal,
                &session_id,
                request_id,
                decision,
                message,
            );
        }
        ClientMessage::ResizeTerminal {
            session_id,
            rows,
            cols,
        } => resize(parts, conn, principal, session_id, rows, cols),
        ClientMessage::ApprovePlan { task_ids, .. } => {
            decide_plan(parts, conn, principal, &task_ids, true)
        }
        ClientMessage::RejectPlan { task_ids, .. } => {
            decide_plan(parts, conn, principal, &task_ids, false)
        }
    }
}

/// `subscribe_terminal`: `subscribed`, then (unless resuming) a request for the screen that
/// comes next.
fn subscribe(
    parts: &mut Parts<'_>,
    conn: ConnId,
    session_id: &str,
    since: Option<u64>,
    stream: Option<&str>,
) {
    match parts.panes.subscribe(conn, session_id, since, stream) {
        Ok(start) => {
            let stream_id = parts.panes.stream_id(session_id).unwrap_or_default();
            parts.ctx.send_ws(
                conn,
                &ServerMessage::Subscribed {
                    session_id,
                    stream: &stream_id,
                    resumed: start == SubscribeStart::Resumed,
                },
            );
            if let SubscribeStart::NeedsSnapshot(request) = start {
                parts.panes.request_snapshot(session_id, request);
            }
        }
        Err(SubscribeError::UnknownSession) => {
            let detail = lost_detail(parts, session_id)
                .unwrap_or_else(|| format!("no agent session {}", crate::shown(session_id)));
            let code = ErrorCode::SessionNotFound;
            send_error(parts, conn, code, &detail, Some(session_id), None);
        }
        Err(SubscribeError::TooMany(max)) => {
            let detail = format!("at most {max} subscriptions per connection");
            let code = ErrorCode::InvalidRequest;
            send_error(parts, conn, code, &detail, Some(session_id), None);
        }
    }
}

/// `approve_tool` from a `control` client: answers a permission an agent asked for
/// (`decision` `allow` or `deny`, with `message` told to the agent).
fn approve_tool(
    parts: &mut Parts<'_>,
    conn: ConnId,
    principal: &Principal,
    session_id: &str,
    request_id: &str,
    decision: &str,
    message: Option<String>,
) {
    let refuse = |parts: &mut Parts<'_>, code, detail: &str| {
        send_error(parts, conn, code, detail, Some(session_id), None);
    };
    if !principal.scopes.allows(Scope::Control) {
        let detail = "answering a permission needs the control scope";
        return refuse(parts, ErrorCode::Forbidden, detail);
    }
    let allow = match decision {
        "allow" => true,
        "deny" => false,
        _ => {
            let detail = "decision must be \"allow\" or \"deny\"";
            return refuse(parts, ErrorCode::InvalidRequest, detail);
        }
    };
    if let Err(why) =
        parts
            .for_agents()
            .decide_tool(session_id, request_id, allow, message.as_deref())
    {
        refuse(parts, ErrorCode::InvalidRequest, &why);
    }
}

/// Resizes a session's pane for a `control` client, within `panes.max_cols`/`max_rows`.
fn resize(
    parts: &mut Parts<'_>,
    conn: ConnId,
    principal: &Principal,
    session_id: String,
    rows: u16,
    cols: u16,
) {
    let (max_cols, max_rows) = (
        parts.ctx.config.panes.max_cols,
        parts.ctx.config.panes.max_rows,
    );
    if !principal.scopes.allows(Scope::Control) {
        let detail = "resizing a pane needs the control scope";
        return send_error(
            parts,
            conn,
            ErrorCode::Forbidden,
            detail,
            Some(&session_id),
            None,
        );
    }
    if !(2..=max_cols).contains(&cols) || !(2..=max_rows).contains(&rows) {
        let detail = format!(
            "a pane is 2 to {max_cols} columns (panes.max_cols) and 2 to {max_rows} rows \
             (panes.max_rows)"
        );
        return send_error(
            parts,
            conn,
            ErrorCode::InvalidRequest,
            &detail,
            Some(&session_id),
            None,
        );
    }
    let id = session_id.clone();
    crate::agents::manager::resize(
        &mut parts.for_agents(),
        &id,
        rows,
        cols,
        crate::ctx::done::<ApiState, Result<(), (ErrorCode, String)>>(move |mut parts, result| {
            match result {
                Ok(()) => parts.ctx.send_ws(
                    conn,
                    &ServerMessage::ResizeTerminalAck {
                        session_id: &session_id,
                        rows,
                        cols,
                    },
                ),
                Err((code, why)) => {
                    send_error(&mut parts, conn, code, &why, Some(&session_id), None)
                }
            }
        }),
    );
}

/// Approves or rejects a plan's proposed tasks for a `control` client.
fn decide_plan(
    parts: &mut Parts<'_>,
    conn: ConnId,
    principal: &Principal,
    task_ids: &[u64],
    approve: bool,
) {
    if !principal.scopes.allows(Scope::Control) {
        let detail = "deciding on a plan needs the control scope";
        send_error(parts, conn, ErrorCode::Forbidden, detail, None, None);
    } else if let Err(error) =
        crate::tasks::lifecycle::decide_plan(&mut parts.for_tasks(), task_ids, approve)
    {
        let api = ApiError::from_task(error);
        send_error(parts, conn, api.code, &api.message, None, None);
    }
}

/// Types into a session's pane for a `control` client. Returns whether it was accepted.
fn type_into(
    parts: &mut Parts<'_>,
    conn: ConnId,
    principal: &Principal,
    session_id: &str,
    typing: Typing,
    kind: AckKind,
    id: Option<serde_json::Value>,
) -> bool {
    if !principal.scopes.allows(Scope::Control) {
        let detail = "typing into a pane needs the control scope";
        send_error(
            parts,
            conn,
            ErrorCode::Forbidden,
            detail,
            Some(session_id),
            id.as_ref(),
        );
        return false;
    }
    let ack = InputAck {
        conn,
        kind,
        id: id.clone(),
        prompt: matches!(&typing, Typing::Message(text) if crate::panes::typing::is_prompt(text)),
    };
    match parts
        .panes
        .type_input(parts.ctx, session_id, typing, Some(ack))
    {
        Ok(()) => true,
        Err((code, message)) => {
            let message = lost_detail(parts, session_id).unwrap_or(message);
            send_error(parts, conn, code, &message, Some(session_id), id.as_ref());
            false
        }
    }
}

/// For a session that is listed but lost (its terminal gone), what to do about it.
fn lost_detail(parts: &Parts<'_>, session_id: &str) -> Option<String> {
    let agent = parts.agents.get(session_id)?;
    (!agent.backend.has_terminal()).then(|| {
        format!(
            "session {session_id} lost its terminal while the daemon was down; \
             POST /api/agents/{session_id}/resume starts it again"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse() {
        let parse = |s: &str| serde_json::from_str::<ClientMessage>(s);
        assert_eq!(
            parse(r#"{"type":"subscribe_terminal","session_id":"s","extra":1}"#).unwrap(),
            ClientMessage::SubscribeTerminal {
                session_id: "s".into(),
                since: None,
                stream: None
            }
        );
        assert_eq!(
            parse(r#"{"type":"user_message","content":"hi","session_id":"s"}"#).unwrap(),
            ClientMessage::UserMessage {
                session_id: "s".into(),
                content: "hi".into(),
                id: None
            }
        );
        assert_eq!(
            parse(r#"{"type":"ping"}"#).unwrap(),
            ClientMessage::Ping { id: None }
        );
        for bad in [
            r#"{"type":"nope"}"#,
            r#"{"session_id":"s"}"#,
            r#"{"type":"user_message"}"#,
            "[]",
            "{",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refused_credentials_send_an_error_then_close_1008() {
        let frames = refused_credentials("token expired");
        assert_eq!(frames[0], 0x81);
        let text_len = frames[1] as usize;
        let message: serde_json::Value = serde_json::from_slice(&frames[2..2 + text_len]).unwrap();
        assert_eq!(message["error_code"], "INVALID_TOKEN");
        let close = &frames[2 + text_len..];
        assert_eq!(&close[..2], &[0x88, 15]);
        assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1008);
    }
}
