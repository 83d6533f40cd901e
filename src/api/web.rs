//! The browser dashboard: its page and assets (embedded in the binary), the login link
//! (`GET /login?code=`), and the session endpoints (`/api/login`, `/api/logout`,
//! `/api/session`, `/api/login-codes`). What a cookie grants and how it is checked is in
//! [`super::web_login`].

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Parts;
use super::auth::{Principal, Scope, Scopes, now_secs};
use super::error::{ApiError, ErrorCode};
use super::web_login::{LoginError, clear_cookie, set_cookie};
use super::{Handled, json, parse_body};
use crate::proto::http::{Request, Response};

/// The policy of the dashboard's pages: scripts, styles and connections only from the
/// daemon itself, no inline script, never framed. Inline *styles* are allowed because
/// xterm.js 6 sizes and colours the terminal with `<style>` elements it creates; no text
/// from an agent is ever inserted as markup, so they cannot carry an attacker's CSS.
pub const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file of the dashboard.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The dashboard's files. xterm.js and its fit addon are pinned, unmodified copies of the
/// npm releases (`src/web/vendor`, checked by `tests/tools/vendor-xterm.sh`).
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../web/index.html"),
    },
    Asset {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/app.js"),
    },
    Asset {
        path: "/assets/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/app.css"),
    },
    Asset {
        path: "/assets/login.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/login.js"),
    },
    Asset {
        path: "/assets/icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../web/icon.svg"),
    },
    Asset {
        path: "/assets/xterm.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/vendor/xterm.js"),
    },
    Asset {
        path: "/assets/xterm.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/vendor/xterm.css"),
    },
    Asset {
        path: "/assets/addon-fit.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/vendor/addon-fit.js"),
    },
    Asset {
        path: "/assets/LICENSE.xterm",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../web/vendor/LICENSE.xterm"),
    },
    Asset {
        path: "/assets/LICENSE.addon-fit",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../web/vendor/LICENSE.addon-fit"),
    },
];

/// Whether `path` belongs to the dashboard rather than the API.
pub fn is_page_path(path: &str) -> bool {
    path == "/" || path == "/index.html" || path == "/login" || path.starts_with("/assets/")
}

/// Serves `GET`/`HEAD` of the page, its assets and the login link.
pub fn page(parts: &mut Parts<'_>, request: &Request) -> Response {
    if request.path == "/login" {
        return match request.method.as_str() {
            "GET" | "HEAD" => login_page(request),
            "POST" => login_link(parts, request),
            _ => ApiError::new(
                405,
                ErrorCode::MethodNotAllowed,
                format!(
                    "{} is not allowed on /login; use GET or POST",
                    request.method
                ),
            )
            .with_header("Allow", "GET, HEAD, POST")
            .to_response(),
        };
    }
    if !matches!(request.method.as_str(), "GET" | "HEAD") {
        return ApiError::new(
            405,
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed here; use GET", request.method),
        )
        .with_header("Allow", "GET, HEAD")
        .to_response();
    }
    let path = if request.path == "/index.html" {
        "/"
    } else {
        request.path.as_str()
    };
    let found = ASSETS
        .iter()
        .enumerate()
        .find(|(_, asset)| asset.path == path);
    let Some((index, asset)) = found.filter(|_| parts.ctx.config.web.dashboard) else {
        return ApiError::new(404, ErrorCode::NotFound, "no such page").to_response();
    };
    let etag = &etags()[index];
    let not_modified = request
        .header_str("if-none-match")
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    Response {
        status: if not_modified { 304 } else { 200 },
        headers: vec![
            ("Content-Type".into(), asset.content_type.into()),
            ("Cache-Control".into(), "no-cache".into()),
            ("ETag".into(), etag.clone()),
            ("Content-Security-Policy".into(), PAGE_POLICY.into()),
            ("Cross-Origin-Opener-Policy".into(), "same-origin".into()),
        ],
        body: if not_modified || request.method == "HEAD" {
            Vec::new()
        } else {
            asset.body.to_vec()
        },
    }
}

/// Strong validators for the assets, computed once (FNV-1a of the contents).
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let hash = asset.body.iter().fold(0xcbf29ce484222325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
                });
                format!("\"{hash:016x}\"")
            })
            .collect()
    })
}

/// Whether `code` looks like a login code (64 hex digits), so it can be put in a page.
fn is_code(code: &str) -> bool {
    code.len() == 64 && code.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `GET /login?code=...`: a page that posts the code back (its script does it at once; a
/// button does it without script). Fetching the link does not spend the code, so a chat
/// app's link preview or a mail scanner cannot use it up or log itself in.
fn login_page(request: &Request) -> Response {
    let code = request
        .query_param("code")
        .and_then(Result::ok)
        .unwrap_or_default();
    let head = request.method == "HEAD";
    if !is_code(&code) {
        return login_failed(LoginError::Unknown, head);
    }
    let body = login_flow_page(
        "Orchestra: log in",
        "<script src=/assets/login.js defer></script>",
        &format!(
            "<form id=login-link class=\"card narrow\" method=post action=/login>\
             <input type=hidden name=code value={code}>\
             <p>Logging in to Orchestra…</p><button type=submit>Log in</button></form>"
        ),
    );
    html_page(200, head, body)
}

/// A page of the login flow in the dashboard's look: its stylesheet and icon, the bar with
/// the name, then `body` (markup); `head` goes into the head (a script).
fn login_flow_page(title: &str, head: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=en><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <meta name=color-scheme content=dark><title>{title}</title>\
         <link rel=icon href=/assets/icon.svg type=image/svg+xml>\
         <link rel=stylesheet href=/assets/app.css>{head}\
         <header class=bar><strong class=brand>Orchestra</strong></header>{body}\n"
    )
}

/// A page made for one request (login pages): never cached, under the page policy; no body
/// for a `HEAD` request.
fn html_page(status: u16, head: bool, body: String) -> Response {
    Response {
        status,
        headers: vec![
            ("Content-Type".into(), "text/html; charset=utf-8".into()),
            ("Cache-Control".into(), "no-store".into()),
            ("Content-Security-Policy".into(), PAGE_POLICY.into()),
        ],
        body: if head { Vec::new() } else { body.into_bytes() },
    }
}

/// The page for a refused login code, styled like the login page: what happened and how
/// to log in instead. `401` with the API's challenge (the code did not authenticate), or
/// `429` when too many codes wait.
fn login_failed(error: LoginError, head: bool) -> Response {
    log::info!("refused a login link: {}", error.message());
    let message = error.message();
    let mut first = message.chars();
    let message: String = first
        .next()
        .map(|c| c.to_ascii_uppercase())
        .into_iter()
        .chain(first)
        .collect();
    let body = login_flow_page(
        "Orchestra: login link refused",
        "",
        &format!(
            "<section id=login-refused class=\"card narrow\"><h1>Login link refused</h1>\
             <p class=error>{message}.</p>\
             <p>Run <code>orchestra open</code> on the daemon's host and open the new link \
             it prints, or <a href=\"/\">paste a token</a> from <code>orchestra token</code>.\
             </p></section>"
        ),
    );
    if error == LoginError::TooMany {
        html_page(429, head, body)
    } else {
        let mut page = html_page(401, head, body);
        page.headers.push((
            "WWW-Authenticate".into(),
            "Bearer realm=\"orchestra\"".into(),
        ));
        page
    }
}

/// `POST /login` (form field `code`, from the daemon's own login page): exchanges a one-time
/// code for the session cookie and sends the browser to the dashboard, with the page key in
/// the fragment; a used, expired or unknown code gets a page that says so.
fn login_link(parts: &mut Parts<'_>, request: &Request) -> Response {
    // A form posted from a page with `Referrer-Policy: no-referrer` says `Origin: null`;
    // the browser's `Sec-Fetch-Site` still tells that it came from the daemon's own page.
    let from_own_page = request.header_str("origin") == Some("null")
        && request
            .header_str("sec-fetch-site")
            .is_some_and(|site| site.eq_ignore_ascii_case("same-origin"));
    if !from_own_page && let Err(error) = super::check_same_origin(request) {
        return error.to_response();
    }
    let form = String::from_utf8_lossy(&request.body);
    let code = form
        .split('&')
        .find_map(|pair| pair.strip_prefix("code="))
        .unwrap_or_default()
        .trim();
    match parts.api.web.redeem_code(code, Instant::now()) {
        Ok((subject, scopes, ends)) => {
            match start_session(parts, request, &subject, scopes, ends) {
                // The page key travels in the fragment, which browsers never send to a server.
                // The session id goes with it: the page asks the daemon to prove it derives the
                // key from it (POST /api/server-proof) before sending the key anywhere.
                Ok((cookie, key, sid)) => Response {
                    status: 303,
                    headers: vec![
                        ("Location".into(), format!("/#key={key}&session={sid}")),
                        ("Set-Cookie".into(), cookie),
                        ("Cache-Control".into(), "no-store".into()),
                    ],
                    body: Vec::new(),
                },
                Err(error) => error.to_response(),
            }
        }
        Err(error) => login_failed(error, false),
    }
}

/// Signs a session for `subject`, ending after `web.session_ttl` or at `ends` (the expiry
/// of the token that asked for the login link), whichever is first; returns its
/// `Set-Cookie` value, page key and session id.
fn start_session(
    parts: &mut Parts<'_>,
    request: &Request,
    subject: &str,
    scopes: Scopes,
    ends: u64,
) -> Result<(String, String, String), ApiError> {
    let now = now_secs();
    let ends = ends.min(now.saturating_add(parts.ctx.config.web.session_ttl.as_secs().max(1)));
    if ends <= now {
        return Err(ApiError::unauthorized(
            "the token behind this login link has expired",
        ));
    }
    let issued = parts
        .api
        .web
        .issue_session(subject, scopes, now, ends)
        .map_err(ApiError::internal)?;
    log::info!("browser session started for {subject:?}");
    let sid = issued.principal.session.clone().unwrap_or_default();
    Ok((
        set_cookie(&issued.cookie, ends - now, secure(parts, request)),
        issued.key,
        sid,
    ))
}

/// Whether the cookie must be `Secure`: configured so, or the page came through a TLS proxy.
fn secure(parts: &Parts<'_>, request: &Request) -> bool {
    parts.ctx.config.web.secure_cookie
        || request
            .header_str("x-forwarded-proto")
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// What `GET /api/session` and a login answer.
#[derive(Debug, Serialize)]
pub struct SessionInfo {
    /// Who is logged in.
    pub subject: String,
    /// Granted scopes (`observe`, `control`).
    pub scopes: Vec<&'static str>,
    /// When the session or token ends, seconds since the epoch.
    pub expires_at: u64,
    /// `cookie` (a browser session) or `bearer` (a token).
    pub via: &'static str,
    /// After a login: the page key the page must send as `X-Orchestra-Key` with its cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// After a login: the session's id, for `POST /api/server-proof`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl SessionInfo {
    /// Describes `principal`, authenticated `via` a cookie or a bearer token.
    pub fn new(principal: &Principal, via: &'static str) -> SessionInfo {
        let mut scopes = Vec::new();
        if principal.scopes.allows(Scope::Observe) {
            scopes.push("observe");
        }
        if principal.scopes.allows(Scope::Control) {
            scopes.push("control");
        }
        SessionInfo {
            subject: principal.subject.clone(),
            scopes,
            expires_at: principal.expires_at,
            via,
            key: None,
            session: None,
        }
    }
}

/// `POST /api/login` body: a token pasted into the page.
#[derive(Debug, Deserialize)]
struct LoginRequest {
    token: String,
}

/// `POST /api/login`: a pasted token becomes a session cookie with the token's scopes,
/// ending when the token does (or after `web.session_ttl`, whichever is first). Refused
/// from other origins (login CSRF).
pub fn login(parts: &mut Parts<'_>, request: &Request) -> Result<Response, ApiError> {
    super::check_same_origin(request)?;
    let body: LoginRequest = parse_body(request)?;
    let principal = parts
        .api
        .auth
        .verify(body.token.trim())
        .map_err(|e| ApiError::unauthorized(e.0))?;
    let now = now_secs();
    let ends = principal
        .expires_at
        .min(now + parts.ctx.config.web.session_ttl.as_secs().max(1));
    if ends <= now {
        return Err(ApiError::unauthorized("token expired"));
    }
    let issued = parts
        .api
        .web
        .issue_session(&principal.subject, principal.scopes, now, ends)
        .map_err(ApiError::internal)?;
    log::info!("browser session started for {:?}", principal.subject);
    let mut info = SessionInfo::new(&issued.principal, "cookie");
    info.key = Some(issued.key.clone());
    info.session = issued.principal.session.clone();
    Ok(json(200, &info).with_header(
        "Set-Cookie",
        set_cookie(&issued.cookie, ends - now, secure(parts, request)),
    ))
}

/// `POST /api/logout`: ends the browser session (recorded, so the cookie stays refused even
/// if it was copied, and after a restart) and clears the cookie.
pub fn logout(
    parts: &mut Parts<'_>,
    request: &Request,
    session: Option<(Principal, String)>,
) -> Response {
    if let Some((principal, sid)) = session {
        let line = parts
            .api
            .web
            .log_out(&sid, principal.expires_at, now_secs());
        let path = parts.ctx.config.web_logouts_file();
        // The append is disk I/O: it runs on a worker, never on the loop.
        parts.ctx.jobs.run(move || {
            use std::io::Write;
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut file| file.write_all(line.as_bytes()));
            Box::new(move |_: &mut crate::ctx::World| {
                if let Err(e) = written {
                    log::warn!("cannot record a logout in {}: {e}", path.display());
                }
            })
        });
        log::info!("browser session of {:?} logged out", principal.subject);
        // What the session opened ends with it: its WebSockets and unused tickets.
        for conn in parts.api.web_sockets.remove(&sid).unwrap_or_default() {
            parts.ctx.ws.close.push((
                conn,
                crate::proto::ws::close::POLICY_VIOLATION,
                "logged out".into(),
            ));
        }
        parts
            .api
            .ws_tickets
            .retain(|_, ticket| ticket.principal.session.as_deref() != Some(sid.as_str()));
    }
    let secure = secure(parts, request);
    let response = json(200, &crate::wire::rest::LoggedOut { logged_out: true })
        .with_header("Set-Cookie", clear_cookie(secure));
    if secure {
        // A plain-named cookie from before the `__Host-` name goes too.
        response.with_header("Set-Cookie", clear_cookie(false))
    } else {
        response
    }
}

/// `POST /api/login-codes` body.
#[derive(Debug, Default, Deserialize)]
struct LoginCodeRequest {
    scope: Option<String>,
}

/// What `POST /api/login-codes` answers.
#[derive(Debug, Serialize)]
struct LoginCodeResponse {
    code: String,
    url: String,
    scope: &'static str,
    expires_in: u64,
}

/// `POST /api/login-codes`: a one-time login link for a browser, with at most the caller's
/// own scope (`{"scope": "observe"}` for a read-only one).
pub fn issue_login_code(
    parts: &mut Parts<'_>,
    request: &Request,
    principal: &Principal,
    credential: &super::Credential,
) -> Result<Response, ApiError> {
    if matches!(credential, super::Credential::Cookie(_)) {
        // A browser session must not mint more sessions (that would outlive its logout).
        return Err(ApiError::new(
            403,
            ErrorCode::Forbidden,
            "login links are made with a token, not from a browser session",
        ));
    }
    let body: LoginCodeRequest = if request.body.is_empty() {
        LoginCodeRequest::default()
    } else {
        parse_body(request)?
    };
    let scope = match body.scope.as_deref() {
        None if principal.scopes.control => Scope::Control,
        None => Scope::Observe,
        Some("observe") => Scope::Observe,
        Some("control") => Scope::Control,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown scope {:?}; use observe or control",
                crate::bounded(other)
            )));
        }
    };
    if !principal.scopes.allows(scope) {
        return Err(ApiError::new(
            403,
            ErrorCode::Forbidden,
            "a login link cannot grant more than the caller's own scope",
        ));
    }
    let scopes = Scopes {
        observe: true,
        control: scope == Scope::Control,
    };
    let ttl = parts.ctx.config.web.login_code_ttl;
    let code = parts
        .api
        .web
        .issue_code(
            &principal.subject,
            principal.scopes.control,
            scopes,
            principal.expires_at,
            ttl,
            Instant::now(),
        )
        .map_err(|e| match e {
            LoginError::TooMany => ApiError::new(429, ErrorCode::RateLimitExceeded, e.message())
                .with_header("Retry-After", ttl.as_secs().max(1).to_string()),
            _ => ApiError::internal(e.message()),
        })?;
    // Over the local socket the link points at the address the daemon listens on.
    let own_address;
    let host = if matches!(credential, super::Credential::Local) {
        own_address = link_host(parts.ctx.config.listen);
        own_address.as_str()
    } else {
        request.header_str("host").unwrap_or("localhost")
    };
    let scheme = if secure(parts, request) {
        "https"
    } else {
        "http"
    };
    Ok(json(
        201,
        &LoginCodeResponse {
            url: format!("{scheme}://{host}/login?code={code}"),
            code,
            scope: scope.as_str(),
            expires_in: ttl.as_secs(),
        },
    ))
}

/// A login link for the person who started `orchestra serve` in a terminal: control scope,
/// valid for `web.login_code_ttl`.
pub fn startup_link(parts: &mut Parts<'_>, address: std::net::SocketAddr) -> Option<String> {
    let scopes = Scopes {
        observe: true,
        control: true,
    };
    let ttl: Duration = parts.ctx.config.web.login_code_ttl;
    let ends = now_secs().saturating_add(parts.ctx.config.web.session_ttl.as_secs());
    let code = parts
        .api
        .web
        .issue_code("local", true, scopes, ends, ttl, Instant::now())
        .ok()?;
    Some(format!("http://{}/login?code={code}", link_host(address)))
}

/// The `host:port` of a login link to a daemon listening on `address` (loopback for an
/// unspecified address).
fn link_host(address: std::net::SocketAddr) -> String {
    if address.ip().is_unspecified() {
        format!("127.0.0.1:{}", address.port())
    } else {
        address.to_string()
    }
}

/// Handled form of a result.
pub fn now(result: Result<Response, ApiError>) -> Handled {
    Handled::Now(result.unwrap_or_else(|error| error.to_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_type_and_a_distinct_validator() {
        let tags = etags();
        assert_eq!(tags.len(), ASSETS.len());
        for (asset, tag) in ASSETS.iter().zip(tags) {
            assert!(!asset.body.is_empty(), "{}", asset.path);
            assert!(is_page_path(asset.path), "{}", asset.path);
            assert!(tag.starts_with('"') && tag.len() == 18);
        }
        assert!(!is_page_path("/api/health"));
        assert!(!is_page_path("/ws/observe"));
    }

    #[test]
    fn a_refused_login_link_gets_a_styled_page_with_its_status() {
        for (error, status) in [
            (LoginError::Unknown, 401),
            (LoginError::Expired, 401),
            (LoginError::TooMany, 429),
            (LoginError::NoRandomness, 401),
        ] {
            let page = login_failed(error, false);
            assert_eq!(page.status, status, "{error:?}");
            let html = String::from_utf8(page.body).unwrap();
            assert!(
                html.contains("<link rel=stylesheet href=/assets/app.css>"),
                "{html}"
            );
            assert!(html.contains("orchestra open"), "{html}");
            assert!(html.contains(&error.message()[1..]), "{html}");
            let challenged = page.headers.iter().any(|(k, _)| k == "WWW-Authenticate");
            assert_eq!(challenged, status == 401, "{error:?}");
            assert!(login_failed(error, true).body.is_empty(), "HEAD");
        }
    }

    #[test]
    fn the_page_policy_allows_no_inline_script_and_no_framing() {
        let script = PAGE_POLICY
            .split(';')
            .find(|d| d.trim().starts_with("script-src"))
            .unwrap();
        assert_eq!(script.trim(), "script-src 'self'");
        assert!(!PAGE_POLICY.contains("unsafe-eval"));
        assert!(PAGE_POLICY.contains("frame-ancestors 'none'"));
    }
}
