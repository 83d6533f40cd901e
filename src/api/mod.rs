//! What the API means: routing, authentication and scopes, and the handlers.
//!
//! [`handle`] takes a decoded request and either answers at once or arranges for the answer
//! to be queued with [`crate::ctx::Ctx::reply`] later (when it needs a worker). It never touches
//! sockets.

pub mod agents;
pub mod auth;
pub mod error;
pub mod metrics;
pub mod observe;
pub mod peer;
pub mod proof;
pub mod queue;
pub mod ratelimit;
pub mod tasks;
pub mod web;
pub mod web_login;

/// What the API may reach: every part, and the context. Handlers get this, never the daemon.
pub struct Parts<'a> {
    /// The loop's shared context.
    pub ctx: &'a mut crate::ctx::Ctx,
    /// Pane output and input.
    pub panes: &'a mut crate::panes::Panes,
    /// Agent sessions.
    pub agents: &'a mut crate::agents::Agents,
    /// Delegated tasks.
    pub tasks: &'a mut crate::tasks::Tasks,
    /// The API's own state.
    pub api: &'a mut ApiState,
    /// The other hosts of the cluster.
    pub cluster: &'a mut crate::cluster::Cluster,
}

impl Parts<'_> {
    /// What agents code may reach, borrowed from these parts.
    pub fn for_agents(&mut self) -> crate::agents::Parts<'_> {
        crate::agents::Parts {
            ctx: self.ctx,
            panes: self.panes,
            agents: self.agents,
        }
    }

    /// What tasks code may reach, borrowed from these parts.
    pub fn for_tasks(&mut self) -> crate::tasks::Parts<'_> {
        crate::tasks::Parts {
            ctx: self.ctx,
            panes: self.panes,
            agents: self.agents,
            tasks: self.tasks,
        }
    }
}

/// A one-time WebSocket connect ticket (not to be confused with a task's ticket).
#[derive(Debug, Clone)]
pub struct WsTicket {
    /// Who the ticket stands for.
    pub principal: Principal,
    /// When it stops being valid.
    pub expires: Instant,
}

/// The API's state: token verification, rate limits, browser logins and their WebSockets,
/// WebSocket tickets, and the count of observers.
pub struct ApiState {
    /// Token verification.
    auth: auth::Authenticator,
    /// Unused WebSocket tickets.
    ws_tickets: std::collections::HashMap<String, WsTicket>,
    /// Rate limits per caller and per connection.
    rate: ratelimit::RateLimits,
    /// Browser logins: login codes waiting to be used, the cookie key, logged-out sessions.
    web: web_login::WebLogins,
    /// The static bearer token of `metrics.token_file`, which may read `/metrics` only.
    metrics_token: Option<String>,
    /// WebSockets opened in a browser session's name (by its id), closed when it logs out.
    web_sockets: std::collections::HashMap<String, Vec<ConnId>>,
    /// Open WebSocket connections (for health).
    observers: usize,
}

impl ApiState {
    /// The API's state at start: the browser key and logouts loaded, the metrics token read.
    pub fn new(
        config: &crate::config::Config,
        auth: auth::Authenticator,
    ) -> Result<ApiState, String> {
        let web_key = auth::load_or_create_key_file(&config.web_key_file())?;
        let web = web_login::WebLogins::new(
            &web_key,
            web_login::load_logouts(&config.web_logouts_file(), auth::now_secs()),
            web_login::CodeLimits::of(&config.web),
        );
        let metrics_token = match &config.metrics.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("metrics.token_file {}: {e}", path.display()))?;
                let token = text.trim().to_string();
                if token.len() < 16 {
                    return Err(format!(
                        "metrics.token_file {}: the token must be at least 16 characters",
                        path.display()
                    ));
                }
                Some(token)
            }
            None => None,
        };
        Ok(ApiState {
            auth,
            ws_tickets: Default::default(),
            rate: ratelimit::RateLimits::new(&config.rate_limits),
            web,
            metrics_token,
            web_sockets: Default::default(),
            observers: 0,
        })
    }

    /// Forgets WebSocket tickets that expired before `now`.
    pub fn sweep_tickets(&mut self, now: Instant) {
        self.ws_tickets.retain(|_, t| t.expires > now);
    }

    /// A WebSocket connection went away: forget its limits and stop counting it.
    pub fn ws_closed(&mut self, conn: ConnId) {
        self.rate.forget_ws(conn);
        self.observers = self.observers.saturating_sub(1);
    }

    /// Forgets the message rate of a connection that was never an observer here (another
    /// host's viewer's stand-in).
    pub fn forget_rate(&mut self, conn: ConnId) {
        self.rate.forget_ws(conn);
    }

    /// Records a WebSocket opened in browser session `sid`'s name, so that logging out
    /// closes it. Bounded: at most 64 sockets per session and 10,000 sessions.
    pub fn remember_web_socket(&mut self, sid: &str, conn: ConnId) {
        let sockets = &mut self.web_sockets;
        if sockets.len() >= 10_000 && !sockets.contains_key(sid) {
            sockets.clear();
        }
        let list = sockets.entry(sid.to_string()).or_default();
        if list.len() >= 64 {
            list.remove(0);
        }
        list.push(conn);
    }
}

use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use auth::{Principal, Scope};
use error::{ApiError, ErrorCode};

use crate::net::ConnId;
use crate::proto::http::{Request, Response};
use crate::wire::rest::Health;

/// The outcome of dispatching a request.
#[derive(Debug)]
pub enum Handled {
    /// The response is ready.
    Now(Response),
    /// The response will be queued with [`crate::ctx::Ctx::reply`].
    Later,
    /// Answer and close the connection without reading anything after this request (a
    /// refused WebSocket upgrade).
    Refuse(Response),
    /// Switch the connection to WebSocket: send `accept` (the `101` answer), then either
    /// serve `principal` or, when credentials were refused, send the `INVALID_TOKEN` error
    /// and close with 1008.
    Upgrade {
        /// The `101 Switching Protocols` bytes.
        accept: Vec<u8>,
        /// Who the connection serves, or why its credentials were refused.
        principal: Result<Principal, String>,
    },
}

/// The OpenAPI 3.1 document of the REST API, with the WebSocket messages in its components
/// (served at `GET /api/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Path of the WebSocket endpoint.
pub const OBSERVE_PATH: &str = "/ws/observe";

/// An endpoint of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /api/health`
    Health,
    /// `POST /api/agents/spawn`
    Spawn,
    /// `GET /api/agents`
    ListAgents,
    /// `GET /api/agents/{id}`
    GetAgent(String),
    /// `DELETE /api/agents/{id}`
    KillAgent(String),
    /// `GET /api/agents/{id}/messages`
    AgentMessages(String),
    /// `POST /api/agents/{id}/resume`
    ResumeAgent(String),
    /// `POST /api/ws-ticket`
    WsTicket,
    /// `POST /api/delegate`
    Delegate,
    /// `GET /api/tasks`
    ListTasks,
    /// `GET /api/tasks/{id}`
    GetTask(String),
    /// `DELETE /api/tasks/{id}`
    CancelTask(String),
    /// `POST /api/plans/approve` (true) or `POST /api/plans/reject` (false)
    DecidePlan(bool),
    /// `GET /api/session`: who the caller is.
    Session,
    /// `POST /api/login`: a pasted token becomes a browser session cookie.
    Login,
    /// `POST /api/logout`: ends the browser session.
    Logout,
    /// `POST /api/login-codes`: a one-time login link for a browser.
    LoginCodes,
    /// `GET /api/openapi.json`: the API's OpenAPI document (no credentials needed).
    OpenApi,
    /// `POST /api/server-proof`: the daemon proves it holds a credential's key before the
    /// client sends the credential (no credentials needed).
    ServerProof,
    /// `GET /api/cluster`: the cluster's hosts, their load and their agents.
    Cluster,
}

impl Route {
    /// The scope the endpoint needs.
    pub fn scope(&self) -> Scope {
        match self {
            Route::Health
            | Route::ListAgents
            | Route::GetAgent(_)
            | Route::AgentMessages(_)
            | Route::WsTicket
            | Route::ListTasks
            | Route::GetTask(_)
            | Route::Session
            | Route::LoginCodes
            | Route::Login
            | Route::Logout
            | Route::OpenApi
            | Route::Cluster
            | Route::ServerProof => Scope::Observe,
            Route::Spawn
            | Route::KillAgent(_)
            | Route::ResumeAgent(_)
            | Route::Delegate
            | Route::CancelTask(_)
            | Route::DecidePlan(_) => Scope::Control,
        }
    }
}

/// Every endpoint under `/api`, as (method, path template). A `{name}` segment matches one
/// non-empty path segment; templates are tried in order, so literal paths come before the
/// templates they would also match. `src/api/openapi.json` documents exactly these (a unit
/// test compares them).
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/api/health"),
    ("GET", "/api/openapi.json"),
    ("POST", "/api/ws-ticket"),
    ("GET", "/api/agents"),
    ("POST", "/api/agents/spawn"),
    ("GET", "/api/agents/{session_id}"),
    ("DELETE", "/api/agents/{session_id}"),
    ("GET", "/api/agents/{session_id}/messages"),
    ("POST", "/api/agents/{session_id}/resume"),
    ("POST", "/api/delegate"),
    ("GET", "/api/tasks"),
    ("GET", "/api/tasks/{task_id}"),
    ("DELETE", "/api/tasks/{task_id}"),
    ("POST", "/api/plans/approve"),
    ("POST", "/api/plans/reject"),
    ("GET", "/api/session"),
    ("POST", "/api/login"),
    ("POST", "/api/logout"),
    ("POST", "/api/login-codes"),
    ("POST", "/api/server-proof"),
    ("GET", "/api/cluster"),
];

/// The label a request is counted under in `GET /metrics`: its endpoint's template (so ids
/// never become labels), the dashboard, or `other`.
pub fn route_label(path: &str) -> &'static str {
    if let Some((template, _)) = match_template(path) {
        return template;
    }
    match path {
        OBSERVE_PATH => OBSERVE_PATH,
        metrics::METRICS_PATH => metrics::METRICS_PATH,
        "/login" => "/login",
        _ if web::is_page_path(path) => "dashboard",
        _ => "other",
    }
}

/// The first template in [`ENDPOINTS`] that `path` matches, with its parameter segment.
fn match_template(path: &str) -> Option<(&'static str, Option<&str>)> {
    let segments: Vec<&str> = path.split('/').collect();
    ENDPOINTS.iter().find_map(|(_, template)| {
        let pattern: Vec<&str> = template.split('/').collect();
        if pattern.len() != segments.len() {
            return None;
        }
        let mut parameter = None;
        for (want, got) in pattern.iter().zip(&segments) {
            if want.starts_with('{') {
                if got.is_empty() {
                    return None;
                }
                parameter = Some(*got);
            } else if want != got {
                return None;
            }
        }
        Some((*template, parameter))
    })
}

/// Maps method and path to a route: `404` for unknown paths, `405` with `Allow` for a
/// known path with the wrong method.
pub fn route(method: &str, path: &str) -> Result<Route, ApiError> {
    let Some((template, parameter)) = match_template(path) else {
        return Err(not_found(path));
    };
    let id = || decode_segment(parameter.unwrap_or_default());
    let route = match (method, template) {
        ("GET", "/api/health") => Route::Health,
        ("GET", "/api/openapi.json") => Route::OpenApi,
        ("POST", "/api/ws-ticket") => Route::WsTicket,
        ("GET", "/api/agents") => Route::ListAgents,
        ("POST", "/api/agents/spawn") => Route::Spawn,
        ("GET", "/api/agents/{session_id}") => Route::GetAgent(id()?),
        ("DELETE", "/api/agents/{session_id}") => Route::KillAgent(id()?),
        ("GET", "/api/agents/{session_id}/messages") => Route::AgentMessages(id()?),
        ("POST", "/api/agents/{session_id}/resume") => Route::ResumeAgent(id()?),
        ("POST", "/api/delegate") => Route::Delegate,
        ("GET", "/api/tasks") => Route::ListTasks,
        ("GET", "/api/tasks/{task_id}") => Route::GetTask(id()?),
        ("DELETE", "/api/tasks/{task_id}") => Route::CancelTask(id()?),
        ("POST", "/api/plans/approve") => Route::DecidePlan(true),
        ("POST", "/api/plans/reject") => Route::DecidePlan(false),
        ("GET", "/api/session") => Route::Session,
        ("POST", "/api/login") => Route::Login,
        ("POST", "/api/logout") => Route::Logout,
        ("POST", "/api/login-codes") => Route::LoginCodes,
        ("POST", "/api/server-proof") => Route::ServerProof,
        ("GET", "/api/cluster") => Route::Cluster,
        _ => {
            let allowed: Vec<&str> = ENDPOINTS
                .iter()
                .filter(|(_, t)| *t == template)
                .map(|(m, _)| *m)
                .collect();
            return Err(ApiError::new(
                405,
                ErrorCode::MethodNotAllowed,
                format!(
                    "{method} is not allowed on {path}; use {}",
                    allowed.join(" or ")
                ),
            )
            .with_header("Allow", allowed.join(", ")));
        }
    };
    Ok(route)
}

fn not_found(path: &str) -> ApiError {
    let shown: String = path.chars().take(200).collect();
    ApiError::new(404, ErrorCode::NotFound, format!("no endpoint at {shown}"))
}

fn decode_segment(segment: &str) -> Result<String, ApiError> {
    crate::proto::http::percent_decode(segment)
        .map_err(|_| ApiError::bad_request("path segment is not valid percent-encoded UTF-8"))
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An `Authorization: Bearer` token.
    Bearer,
    /// The browser session cookie, with its session id.
    Cookie(String),
    /// None: a process of the daemon's own user on the local API socket.
    Local,
}

impl Credential {
    /// `bearer`, `cookie` or `local`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Credential::Bearer => "bearer",
            Credential::Cookie(_) => "cookie",
            Credential::Local => "local",
        }
    }
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A TCP client at this address: it proves who it is with a token or a browser session.
    Network(IpAddr),
    /// A process of the daemon's own user on the local API socket (`<state_dir>/api.sock`,
    /// checked with `SO_PEERCRED`): it needs no token and may do everything.
    Local,
    /// A process of another user on the local API socket: refused whatever it sends.
    Foreign,
    /// Another daemon of the cluster, forwarding a request with a token it minted for its
    /// own caller ([`peer`]); the token is verified like any other.
    Peer,
}

impl Caller {
    /// The address credential failures are counted against (loopback for the local socket).
    pub fn ip(self) -> IpAddr {
        match self {
            Caller::Network(ip) => ip,
            Caller::Local | Caller::Foreign => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            Caller::Peer => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// The principal of a request on the local API socket that carries no token: subject
/// `local`, both scopes; a browser session started with its login link lasts
/// `web.session_ttl`.
pub fn local_principal(parts: &Parts<'_>) -> Principal {
    Principal {
        subject: "local".into(),
        scopes: auth::Scopes {
            observe: true,
            control: true,
        },
        expires_at: auth::now_secs().saturating_add(parts.ctx.config.web.session_ttl.as_secs()),
        session: None,
    }
}

/// Who sent a request: the bearer token when there is one, else the browser session cookie
/// (which is refused on requests from other origins, see [`web_login::cross_site_refusal`]).
pub fn authenticate(
    parts: &Parts<'_>,
    request: &Request,
) -> Result<(Principal, Credential), ApiError> {
    if request.header("authorization").is_none()
        && let Some(session) = cookie_session(parts, request)
    {
        let (principal, sid) = session?;
        return Ok((principal, Credential::Cookie(sid)));
    }
    let token = auth::bearer_token(request.header("authorization"))
        .map_err(|e| ApiError::unauthorized(e.0))?;
    let principal = parts
        .api
        .auth
        .verify(token)
        .map_err(|e| ApiError::unauthorized(e.0))?;
    Ok((principal, Credential::Bearer))
}

/// The session cookies' values the request carries (both names, at most
/// [`web_login::MAX_SESSION_COOKIES`]).
fn session_cookies(request: &Request) -> Vec<&str> {
    const NAMES: &[&str] = &[web_login::SECURE_COOKIE_NAME, web_login::COOKIE_NAME];
    request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .filter_map(|h| std::str::from_utf8(&h.value).ok())
        .flat_map(|header| web_login::cookie_values(header, NAMES))
        .take(web_login::MAX_SESSION_COOKIES)
        .collect()
}

/// The browser session of a request's cookies, `None` when it carries no session cookie.
/// Every session cookie is tried (another port of this host can add one of the same name,
/// which the browser may send first): the session is the one that verifies and whose page
/// key the request carries. `401` when none verifies; `403` when the request is cross-site
/// or lacks the page key of every one that does.
fn cookie_session(
    parts: &Parts<'_>,
    request: &Request,
) -> Option<Result<(Principal, String), ApiError>> {
    let cookies = session_cookies(request);
    if cookies.is_empty() {
        return None;
    }
    let mut refusal = None;
    let mut verified = Vec::new();
    for cookie in cookies {
        match parts.api.web.verify_session(cookie, auth::now_secs()) {
            Ok(session) => verified.push(session),
            Err(e) => {
                refusal.get_or_insert(e);
            }
        }
    }
    if verified.is_empty() {
        let refusal = refusal.expect("a cookie was refused");
        return Some(Err(ApiError::unauthorized(refusal.0)));
    }
    if let Err(error) = check_same_origin(request) {
        return Some(Err(error));
    }
    let mut wrong_key = None;
    for (principal, sid) in verified {
        match check_page_key(parts, request, &sid) {
            Ok(()) => return Some(Ok((principal, sid))),
            Err(error) => {
                wrong_key.get_or_insert(error);
            }
        }
    }
    wrong_key.map(Err)
}

/// Header in which the daemon's page sends its page key with the cookie.
pub const PAGE_KEY_HEADER: &str = "x-orchestra-key";

/// `403 FORBIDDEN` unless the request carries the page key of session `sid` (see
/// [`web_login::WebLogins::page_key`]): a cookie replayed by a server on another port of
/// this host, which browsers send it to, is refused.
fn check_page_key(parts: &Parts<'_>, request: &Request, sid: &str) -> Result<(), ApiError> {
    let given = request.header_str(PAGE_KEY_HEADER).unwrap_or_default();
    if parts.api.web.page_key_matches(sid, given.trim()) {
        Ok(())
    } else {
        Err(ApiError::new(
            403,
            ErrorCode::Forbidden,
            "the session cookie works only with the page key of the daemon's own page",
        ))
    }
}

/// `403 FORBIDDEN` unless the request came from the daemon's own page (its `Origin` and
/// `Sec-Fetch-Site`), for requests a browser's cookie could authenticate.
pub fn check_same_origin(request: &Request) -> Result<(), ApiError> {
    let site = web_login::RequestSite {
        method: &request.method,
        origin: request.header_str("origin"),
        fetch_site: request.header_str("sec-fetch-site"),
    };
    let host = request.header_str("host");
    // Only the daemon's own page may use the cookie (not the origins that may open a
    // WebSocket with a token or ticket).
    match web_login::cross_site_refusal(site, |origin| observe::is_own_origin(origin, host)) {
        None => Ok(()),
        Some(why) => Err(ApiError::new(403, ErrorCode::Forbidden, why)),
    }
}

/// Checks the credentials and the scope a route needs. A request on the local API socket
/// without a token is the daemon's own user.
pub fn authorize(
    parts: &Parts<'_>,
    caller: Caller,
    request: &Request,
    scope: Scope,
) -> Result<(Principal, Credential), ApiError> {
    let (principal, credential) =
        if caller == Caller::Local && request.header("authorization").is_none() {
            (local_principal(parts), Credential::Local)
        } else {
            authenticate(parts, request)?
        };
    if !principal.scopes.allows(scope) {
        return Err(ApiError::new(
            403,
            ErrorCode::Forbidden,
            format!(
                "this needs the {:?} scope, which the {} lacks",
                scope.as_str(),
                match credential {
                    Credential::Bearer => "token",
                    Credential::Cookie(_) => "browser session",
                    Credential::Local => "local socket",
                }
            ),
        ));
    }
    Ok((principal, credential))
}

/// The host name of a `Host` header value, without its port, lowercased (`[::1]:80` ->
/// `[::1]`, `Example.org:8080` -> `example.org`).
pub fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.to_ascii_lowercase()
}

/// Whether a request's `Host` names this daemon (DNS-rebinding protection): one of
/// `allowed_hosts` (`"*"` allows any), the listen address itself, and, when listening on
/// loopback, `localhost` and the loopback addresses. A daemon listening on a non-loopback
/// address with no `allowed_hosts` accepts any `Host`. Requests without `Host` (HTTP/1.0)
/// pass.
pub fn host_allowed(allowed: &[String], listen: std::net::SocketAddr, host: Option<&str>) -> bool {
    let Some(host) = host else { return true };
    let name = host_name(host);
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(&name))
    {
        return true;
    }
    let own = match listen.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    if name == own {
        return true;
    }
    if listen.ip().is_loopback() {
        return matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]")
            || name.ends_with(".localhost");
    }
    allowed.is_empty()
}

/// `403` for a `Host` that is not this daemon's.
fn foreign_host(host: &str) -> ApiError {
    let shown: String = host.chars().take(100).collect();
    ApiError::new(
        403,
        ErrorCode::Forbidden,
        format!("Host {shown:?} does not name this daemon (add it to allowed_hosts)"),
    )
}

/// Dispatches one request from `caller`: callers and `Host`s that may not use the daemon are
/// refused; then the WebSocket endpoint, `/metrics`, the dashboard's pages, and the API's
/// endpoints (authorized and rate-limited, then served).
pub fn handle(parts: &mut Parts<'_>, conn: ConnId, caller: Caller, request: &Request) -> Handled {
    if let Some(refusal) = refuse_caller(parts, caller, request) {
        return refusal;
    }
    let peer = caller.ip();
    if request.path == OBSERVE_PATH {
        let handled = observe::upgrade(parts, caller, request);
        if let Handled::Upgrade {
            principal: Err(_), ..
        } = handled
            && let Err(limited) = count_auth_failure(parts, peer)
        {
            return Handled::Refuse(limited);
        }
        return handled;
    }
    if request.path == metrics::METRICS_PATH {
        let result = metrics::scrape(parts, caller, request);
        return counting_auth_failures(parts, peer, result);
    }
    if web::is_page_path(&request.path) {
        return Handled::Now(web::page(parts, request));
    }
    let route = match route(&request.method, &request.path) {
        Ok(route) => route,
        Err(error) => return Handled::Now(error.to_response()),
    };
    if let Some(handled) = without_authorization(parts, peer, &route, request) {
        return handled;
    }
    let (principal, credential) = match authorize(parts, caller, request, route.scope()) {
        Ok(found) => found,
        Err(error) if error.status == 401 => {
            return Handled::Now(match count_auth_failure(parts, peer) {
                Ok(limit_headers) => {
                    let mut response = error.to_response();
                    response.headers.extend(limit_headers);
                    response
                }
                Err(limited) => limited,
            });
        }
        Err(error) => return Handled::Now(error.to_response()),
    };
    let limit_headers = match rate_limit(parts, peer, &route, &principal) {
        Ok(headers) => headers,
        Err(limited) => return Handled::Now(limited),
    };
    let handled = serve(
        parts,
        conn,
        request,
        route,
        principal,
        credential,
        limit_headers.clone(),
    );
    match handled {
        Handled::Now(mut response) => {
            response.headers.extend(limit_headers);
            Handled::Now(response)
        }
        other => other,
    }
}

/// Refuses a process of another user on the local socket, and (except on the local socket,
/// which no browser reaches) a request whose `Host` does not name this daemon, against DNS
/// rebinding.
fn refuse_caller(parts: &Parts<'_>, caller: Caller, request: &Request) -> Option<Handled> {
    if caller == Caller::Foreign {
        return Some(Handled::Refuse(
            ApiError::new(
                403,
                ErrorCode::Forbidden,
                "only the daemon's own user may use its local socket",
            )
            .to_response(),
        ));
    }
    let host = request.header_str("host");
    let config = &parts.ctx.config;
    // A forwarded request did not come from a browser: there is no Host to check.
    let trusted_transport = matches!(caller, Caller::Local | Caller::Peer);
    if trusted_transport || host_allowed(&config.allowed_hosts, config.listen, host) {
        return None;
    }
    let error = foreign_host(host.unwrap_or_default());
    log::info!("{}: refused a request for a foreign Host", caller.ip());
    Some(if request.path == OBSERVE_PATH {
        Handled::Refuse(error.to_response())
    } else {
        Handled::Now(error.to_response())
    })
}

/// The endpoints answered before (or without) authorization: the OpenAPI document, the
/// server's proof, and logging in and out, which check their own credentials.
fn without_authorization(
    parts: &mut Parts<'_>,
    peer: IpAddr,
    route: &Route,
    request: &Request,
) -> Option<Handled> {
    Some(match route {
        Route::OpenApi => Handled::Now(
            Response::json(200, OPENAPI.as_bytes().to_vec())
                .with_header("Cache-Control", "no-cache"),
        ),
        Route::ServerProof => web::now(proof::answer(parts, request)),
        Route::Login => {
            let result = web::login(parts, request);
            counting_auth_failures(parts, peer, result)
        }
        Route::Logout => logout(parts, request),
        _ => return None,
    })
}

/// `POST /api/logout`. Ending a session takes what using it takes: the cookie and its page
/// key (a server on another port of this host receives the cookie, never the key).
fn logout(parts: &mut Parts<'_>, request: &Request) -> Handled {
    if let Err(error) = check_same_origin(request) {
        return Handled::Now(error.to_response());
    }
    let session = match cookie_session(parts, request) {
        None => None,
        Some(Ok(session)) => Some(session),
        Some(Err(error)) if error.status == 403 => {
            return Handled::Now(error.to_response());
        }
        // Nothing valid to end: the cookies are cleared all the same.
        Some(Err(_)) => None,
    };
    Handled::Now(web::logout(parts, request, session))
}

/// The spawn and delegate rate limits of `principal`: `Ok` with the limit's headers, or the
/// `429` to answer.
fn rate_limit(
    parts: &mut Parts<'_>,
    peer: IpAddr,
    route: &Route,
    principal: &Principal,
) -> Result<Vec<(String, String)>, Response> {
    let (limiter, name) = match route {
        Route::Spawn => (&mut parts.api.rate.spawn, "spawn"),
        Route::Delegate => (&mut parts.api.rate.delegate, "delegate"),
        _ => return Ok(Vec::new()),
    };
    if limiter.disabled() {
        return Ok(Vec::new());
    }
    let decision = limiter.check(&principal.subject, Instant::now(), SystemTime::now());
    if decision.allowed {
        return Ok(decision.headers());
    }
    *parts.ctx.metrics.rate_limited.entry(name).or_default() += 1;
    log::info!("{peer}: rate limit of {:?} exceeded", principal.subject);
    Err(rate_limited(decision).to_response())
}

/// Forwards a request that names another host's agent, or asks for a session on another
/// host, to that host ([`peer`]). `None`: it is this daemon's to answer.
fn forward_to_owner(
    parts: &mut Parts<'_>,
    conn: ConnId,
    request: &Request,
    route: &Route,
    principal: &Principal,
) -> Option<Handled> {
    match route {
        Route::GetAgent(_)
        | Route::KillAgent(_)
        | Route::AgentMessages(_)
        | Route::ResumeAgent(_)
        | Route::GetTask(_)
        | Route::CancelTask(_) => {
            let host = match route {
                Route::GetTask(id) | Route::CancelTask(id) => peer::task_owner(parts, id),
                Route::GetAgent(id)
                | Route::KillAgent(id)
                | Route::AgentMessages(id)
                | Route::ResumeAgent(id) => peer::remote_owner(parts, id),
                _ => None,
            }?;
            let body = request.body.clone();
            // A ticket of the queue has a last known view, for when its host cannot answer.
            let fallback = match route {
                Route::GetTask(id) => parts
                    .cluster
                    .queue()
                    .entry(id)
                    .map(|entry| queue::entry_view(&entry.ticket).to_string().into_bytes()),
                _ => None,
            };
            Some(peer::forward(
                parts, conn, &host, principal, request, body, fallback,
            ))
        }
        Route::Delegate => {
            let body: crate::wire::rest::DelegateRequest = parse_body(request).ok()?;
            if queue::takes(parts, body.host.as_deref()) {
                return None;
            }
            let wanted = body.host?;
            match peer::spawn_target(parts, &wanted, &body.agent_type) {
                Err(error) => Some(Handled::Now(error.to_response())),
                Ok(None) => None,
                Ok(Some(host)) => {
                    // The owner sees its own name: it runs the task itself.
                    let mut value: serde_json::Value =
                        serde_json::from_slice(&request.body).ok()?;
                    value["host"] = host.clone().into();
                    let bytes = serde_json::to_vec(&value).expect("serializable");
                    Some(peer::forward(
                        parts, conn, &host, principal, request, bytes, None,
                    ))
                }
            }
        }
        Route::Spawn => {
            let mut body: crate::wire::rest::SpawnRequest = parse_body(request).ok()?;
            let wanted = body.host.clone()?;
            match peer::spawn_target(parts, &wanted, &body.agent_type) {
                Err(error) => Some(Handled::Now(error.to_response())),
                Ok(None) => None,
                Ok(Some(host)) => {
                    // The owner sees its own name: it runs the session itself.
                    body.host = Some(host.clone());
                    let bytes = serde_json::to_vec(&body).expect("serializable");
                    Some(peer::forward(
                        parts, conn, &host, principal, request, bytes, None,
                    ))
                }
            }
        }
        _ => None,
    }
}

/// The routing table: what each authorized endpoint does. `limit_headers` are the rate
/// limit's, for the answers that are queued later.
fn serve(
    parts: &mut Parts<'_>,
    conn: ConnId,
    request: &Request,
    route: Route,
    principal: Principal,
    credential: Credential,
    limit_headers: Vec<(String, String)>,
) -> Handled {
    // A request another host forwarded is this host's to answer: never forwarded again.
    let forwarded_here = conn.key == crate::cluster::PEER_CONN_KEY;
    if !forwarded_here
        && let Some(forwarded) = forward_to_owner(parts, conn, request, &route, &principal)
    {
        return forwarded;
    }
    match route {
        Route::Cluster => peer::status(parts),
        Route::WsTicket => observe::issue_ticket(parts, principal),
        Route::Health => Handled::Now(json(200, &health(parts))),
        Route::Spawn => agents::spawn(parts, conn, request, limit_headers),
        Route::ListAgents => agents::list(parts, request),
        Route::GetAgent(id) => agents::get(parts, conn, &id),
        Route::KillAgent(id) => agents::kill(parts, conn, &id),
        Route::AgentMessages(id) => agents::messages(parts, request, &id),
        Route::ResumeAgent(id) => agents::resume(parts, conn, &id),
        Route::Delegate => tasks::delegate(parts, conn, request, principal, limit_headers),
        Route::ListTasks => tasks::list(parts, request),
        Route::GetTask(id) => tasks::get(parts, &id),
        Route::CancelTask(id) => tasks::cancel(parts, conn, &id),
        Route::DecidePlan(approve) => tasks::decide_plan(parts, request, approve),
        Route::Session => Handled::Now(json(
            200,
            &web::SessionInfo::new(&principal, credential.as_str()),
        )),
        Route::LoginCodes => web::now(web::issue_login_code(
            parts,
            request,
            &principal,
            &credential,
        )),
        Route::Login | Route::Logout | Route::OpenApi | Route::ServerProof => Handled::Now(
            ApiError::internal("this endpoint is answered before authorization").to_response(),
        ),
    }
}

/// Answers `result`, counting a `401` as a credential failure of `peer` (see
/// [`count_auth_failure`]).
fn counting_auth_failures(
    parts: &mut Parts<'_>,
    peer: IpAddr,
    result: Result<Response, ApiError>,
) -> Handled {
    if result.as_ref().is_err_and(|e| e.status == 401)
        && let Err(limited) = count_auth_failure(parts, peer)
    {
        return Handled::Now(limited);
    }
    web::now(result)
}

/// Counts a credential failure from `peer`. Failures are limited per address, so tokens
/// cannot be guessed fast: within the limit, `Ok` with the limit's headers; past it, the
/// `429` to answer instead.
fn count_auth_failure(
    parts: &mut Parts<'_>,
    peer: IpAddr,
) -> Result<Vec<(String, String)>, Response> {
    let decision = parts
        .api
        .rate
        .auth_failures
        .check(&peer, Instant::now(), SystemTime::now());
    if decision.allowed {
        return Ok(decision.headers());
    }
    *parts
        .ctx
        .metrics
        .rate_limited
        .entry("auth_failures")
        .or_default() += 1;
    Err(rate_limited(decision).to_response())
}

/// `429 RATE_LIMIT_EXCEEDED` with `Retry-After` and the limit's headers.
pub fn rate_limited(decision: ratelimit::Decision) -> ApiError {
    let mut error = ApiError::new(
        429,
        ErrorCode::RateLimitExceeded,
        format!(
            "rate limit exceeded ({} requests per window); retry in {} s",
            decision.limit, decision.retry_after
        ),
    );
    error.headers.extend(decision.headers());
    error
}

fn health(parts: &Parts<'_>) -> Health {
    Health {
        status: "healthy",
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: parts.ctx.started.elapsed().as_secs(),
        sessions: parts.agents.len(),
        observers: parts.api.observers,
        tasks_pending: parts.tasks.queued(),
        tasks_running: parts.tasks.running(),
    }
}

/// A JSON response from any serializable value.
pub fn json<T: serde::Serialize>(status: u16, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => Response::json(status, body),
        Err(e) => ApiError::internal(format!("cannot encode the response: {e}")).to_response(),
    }
}

/// Parses a JSON request body into `T`, with a `400` that says what is wrong.
pub fn parse_body<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, ApiError> {
    if request.body.is_empty() {
        return Err(ApiError::bad_request("the request needs a JSON body"));
    }
    // serde would also read a struct from a JSON array of its fields; the API takes objects.
    if request.body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_slice(&request.body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid JSON body: {}",
            crate::bounded(&e.to_string())
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_this_daemon_or_are_refused() {
        let loopback: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let none: Vec<String> = Vec::new();
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "LOCALHOST",
            "app.localhost:3000",
        ] {
            assert!(host_allowed(&none, loopback, Some(ok)), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.2",
            "localhost.evil.example",
            "",
        ] {
            assert!(!host_allowed(&none, loopback, Some(bad)), "{bad}");
        }
        assert!(host_allowed(&none, loopback, None));
        let listed = vec!["orchestra.test".to_string()];
        assert!(host_allowed(&listed, loopback, Some("Orchestra.test:8080")));
        assert!(!host_allowed(&listed, loopback, Some("evil.example")));
        let public: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(host_allowed(&none, public, Some("parts.twingate")));
        assert!(!host_allowed(&listed, public, Some("parts.twingate")));
        assert!(host_allowed(&["*".to_string()], loopback, Some("anything")));
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("Example.org"), "example.org");
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        assert_eq!(document["openapi"], "3.1.0");
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
                if item.get(method).is_some() {
                    documented.insert((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
        let routed: std::collections::BTreeSet<(String, String)> = ENDPOINTS
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from openapi.json: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "documented but not routed: {unrouted:?}"
        );
        // Every endpoint resolves, and every other method on its path is a 405.
        for (method, template) in ENDPOINTS {
            let path = template
                .replace("{session_id}", "sess-x-1")
                .replace("{task_id}", "7");
            assert!(route(method, &path).is_ok(), "{method} {path}");
            for other in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
                if !documented.contains(&(other.to_string(), template.to_string())) {
                    assert_eq!(
                        route(other, &path).unwrap_err().status,
                        405,
                        "{other} {path}"
                    );
                }
            }
        }
    }

    #[test]
    fn routes_and_method_errors() {
        assert_eq!(route("GET", "/api/health").unwrap(), Route::Health);
        assert_eq!(route("POST", "/api/agents/spawn").unwrap(), Route::Spawn);
        assert_eq!(route("GET", "/api/agents").unwrap(), Route::ListAgents);
        assert_eq!(
            route("GET", "/api/agents/sess-x-1").unwrap(),
            Route::GetAgent("sess-x-1".into())
        );
        assert_eq!(
            route("GET", "/api/agents/sess-claude-primary/messages").unwrap(),
            Route::AgentMessages("sess-claude-primary".into())
        );
        assert_eq!(route("POST", "/api/delegate").unwrap(), Route::Delegate);
        assert_eq!(
            route("POST", "/api/plans/approve").unwrap(),
            Route::DecidePlan(true)
        );
        assert_eq!(route("GET", "/api/plans/reject").unwrap_err().status, 405);
        assert_eq!(route("GET", "/api/tasks").unwrap(), Route::ListTasks);
        assert_eq!(
            route("GET", "/api/tasks/12").unwrap(),
            Route::GetTask("12".into())
        );
        assert_eq!(
            route("DELETE", "/api/tasks/ticket-1").unwrap(),
            Route::CancelTask("ticket-1".into())
        );
        assert_eq!(route("GET", "/api/delegate").unwrap_err().status, 405);
        assert_eq!(
            route("DELETE", "/api/agents/a%20b").unwrap(),
            Route::KillAgent("a b".into())
        );
        let error = route("GET", "/api/agents/spawn").unwrap_err();
        assert_eq!(error.status, 405);
        assert!(error.headers.contains(&("Allow".into(), "POST".into())));
        let error = route("PUT", "/api/agents/x").unwrap_err();
        assert!(
            error
                .headers
                .contains(&("Allow".into(), "GET, DELETE".into()))
        );
        for path in [
            "/",
            "/api",
            "/api/",
            "/api/agents/",
            "/api/agents/x/y",
            "/api/agents//messages",
            "/nope",
        ] {
            assert_eq!(route("GET", path).unwrap_err().status, 404, "{path}");
        }
    }
}
