//! Browser logins: one-time login codes exchanged for a signed session cookie, logout, and
//! the cross-site (CSRF) checks every cookie-authenticated request passes.
//!
//! A login code is 256 random bits the daemon keeps in memory for `web.login_code_ttl`; it
//! works once. The session cookie is a JWT signed with the daemon's own web key
//! (`<state_dir>/web_key`, separate from the token secret, so it works whatever
//! algorithm tokens use), carrying the scopes of whoever issued the code and a session id;
//! logout records the id until the cookie would have expired anyway, in memory and in
//! `<state_dir>/web_logouts`, so a restarted daemon still refuses it. A restart keeps
//! sessions working. Nothing here does I/O except [`load_logouts`], which runs at start.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::auth::{AuthError, Principal, Scopes};

/// Name of the session cookie over plain HTTP.
pub const COOKIE_NAME: &str = "orchestra_session";

/// Name of the session cookie when it is `Secure`: browsers accept a `__Host-` cookie only
/// from a secure origin, for `Path=/` and without a `Domain`, so no page on another port or
/// subdomain can set one that shadows it.
pub const SECURE_COOKIE_NAME: &str = "__Host-orchestra_session";

/// Most session cookies of one request that are tried (see [`cookie_values`]).
pub const MAX_SESSION_COOKIES: usize = 8;

/// The name the session cookie has: [`SECURE_COOKIE_NAME`] when it is `Secure`.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_COOKIE_NAME
    } else {
        COOKIE_NAME
    }
}

/// The audience claim of session cookies, so a cookie can never pass as an API token even
/// if the keys were the same.
const AUDIENCE: &str = "orchestra-web";

/// How many login codes may wait at once (`[web]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLimits {
    /// All codes (`web.max_login_codes`).
    pub total: usize,
    /// One subject's codes (`web.max_login_codes_per_subject`).
    pub per_subject: usize,
    /// Codes asked for by callers without the control scope
    /// (`web.max_observe_login_codes`); the rest is kept for control callers.
    pub observe: usize,
}

impl CodeLimits {
    /// The configured limits.
    pub fn of(web: &crate::config::WebConfig) -> CodeLimits {
        CodeLimits {
            total: web.max_login_codes,
            per_subject: web.max_login_codes_per_subject,
            observe: web.max_observe_login_codes,
        }
    }
}

/// A login code waiting to be used.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingLogin {
    subject: String,
    /// Whether whoever asked for it had the control scope (see [`CodeLimits::observe`]).
    by_control: bool,
    scopes: Scopes,
    /// When the session it starts must end at the latest (the issuing token's expiry).
    session_ends: u64,
    expires: Instant,
}

/// Why a login code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    /// Never issued, or already used (codes are forgotten when used).
    Unknown,
    /// Issued, but older than `web.login_code_ttl`.
    Expired,
    /// Too many codes wait to be used (`web.max_login_codes`).
    TooMany,
    /// The system gave no random bytes.
    NoRandomness,
}

impl LoginError {
    /// What to tell the person holding the link.
    pub fn message(self) -> &'static str {
        match self {
            LoginError::Unknown => "this login link is not valid or was already used",
            LoginError::Expired => "this login link has expired",
            LoginError::TooMany => "too many login links wait to be used; try again later",
            LoginError::NoRandomness => "no randomness available for a login link",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SessionClaims {
    sub: String,
    scope: String,
    sid: String,
    iat: u64,
    exp: u64,
    aud: String,
}

/// A signed session cookie value and what it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedSession {
    /// The cookie value (a JWT).
    pub cookie: String,
    /// Who it is for and what it allows.
    pub principal: Principal,
    /// Its page key (see [`WebLogins::page_key`]).
    pub key: String,
}

/// Login codes in memory, the cookie key, and sessions ended by logout.
pub struct WebLogins {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    codes: HashMap<String, PendingLogin>,
    logged_out: HashMap<String, u64>,
    limits: CodeLimits,
}

impl WebLogins {
    /// Logins signed with `key`; `logged_out` are the session ids ended earlier (with their
    /// expiry, seconds since the epoch).
    pub fn new(key: &[u8], logged_out: HashMap<String, u64>, limits: CodeLimits) -> WebLogins {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        // Expiry is checked against the caller's clock in verify_session (exactly at exp).
        validation.validate_exp = false;
        validation.leeway = 0;
        WebLogins {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            codes: HashMap::new(),
            logged_out,
            limits,
        }
    }

    /// A new one-time code that logs a browser in as `subject` with `scopes` (for a session
    /// that ends by `session_ends`, seconds since the epoch), valid until `now + ttl`.
    /// `by_control`: the caller has the control scope. Refused when the subject has its
    /// share of codes waiting, when observe callers' codes fill their share, or when all
    /// codes are taken: observe callers can never take the codes kept for control ones.
    pub fn issue_code(
        &mut self,
        subject: &str,
        by_control: bool,
        scopes: Scopes,
        session_ends: u64,
        ttl: Duration,
        now: Instant,
    ) -> Result<String, LoginError> {
        self.codes.retain(|_, pending| pending.expires > now);
        let of_subject = self.codes.values().filter(|p| p.subject == subject).count();
        let of_observe = self.codes.values().filter(|p| !p.by_control).count();
        if self.codes.len() >= self.limits.total
            || of_subject >= self.limits.per_subject
            || (!by_control && of_observe >= self.limits.observe)
        {
            return Err(LoginError::TooMany);
        }
        let code = random_hex()?;
        self.codes.insert(
            code.clone(),
            PendingLogin {
                subject: subject.to_string(),
                by_control,
                scopes,
                session_ends,
                expires: now
                    .checked_add(ttl)
                    .unwrap_or(now + Duration::from_secs(86400 * 365)),
            },
        );
        Ok(code)
    }

    /// Uses a code: it is forgotten whatever the outcome, so it never works twice. Returns
    /// the subject, scopes and latest end of the session it starts.
    pub fn redeem_code(
        &mut self,
        code: &str,
        now: Instant,
    ) -> Result<(String, Scopes, u64), LoginError> {
        let pending = self.codes.remove(code).ok_or(LoginError::Unknown)?;
        if pending.expires <= now {
            return Err(LoginError::Expired);
        }
        Ok((pending.subject, pending.scopes, pending.session_ends))
    }

    /// Signs a session cookie for `subject` with `scopes`, expiring at `expires_at`
    /// (seconds since the epoch).
    pub fn issue_session(
        &self,
        subject: &str,
        scopes: Scopes,
        now_secs: u64,
        expires_at: u64,
    ) -> Result<IssuedSession, String> {
        let mut scope = Vec::new();
        if scopes.observe || scopes.control {
            scope.push("observe");
        }
        if scopes.control {
            scope.push("control");
        }
        let claims = SessionClaims {
            sub: subject.to_string(),
            scope: scope.join(" "),
            sid: random_hex().map_err(|_| "no randomness available".to_string())?,
            iat: now_secs,
            exp: expires_at,
            aud: AUDIENCE.into(),
        };
        let cookie = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| format!("cannot sign the session cookie: {e}"))?;
        Ok(IssuedSession {
            key: self.page_key(&claims.sid),
            cookie,
            principal: Principal {
                subject: claims.sub,
                scopes,
                expires_at,
                session: Some(claims.sid),
            },
        })
    }

    /// Verifies a session cookie; returns who it is for and its session id.
    pub fn verify_session(
        &self,
        cookie: &str,
        now_secs: u64,
    ) -> Result<(Principal, String), AuthError> {
        if cookie.len() > 4096 {
            return Err(AuthError("session cookie too long"));
        }
        let claims =
            jsonwebtoken::decode::<SessionClaims>(cookie, &self.decoding, &self.validation)
                .map_err(|e| match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        AuthError("browser session expired; log in again")
                    }
                    _ => AuthError("invalid browser session; log in again"),
                })?
                .claims;
        // jsonwebtoken allows a token in its last second; a session ends exactly at exp.
        if claims.exp <= now_secs {
            return Err(AuthError("browser session expired; log in again"));
        }
        if self.logged_out.contains_key(&claims.sid) {
            return Err(AuthError(
                "this browser session was logged out; log in again",
            ));
        }
        let mut scopes = Scopes::default();
        for name in claims.scope.split_whitespace() {
            match name {
                "observe" => scopes.observe = true,
                "control" => scopes.control = true,
                _ => {}
            }
        }
        Ok((
            Principal {
                subject: claims.sub,
                scopes,
                expires_at: claims.exp,
                session: Some(claims.sid.clone()),
            },
            claims.sid,
        ))
    }

    /// Ends a session before its expiry. Returns the line to append to the logouts file.
    pub fn log_out(&mut self, sid: &str, expires_at: u64, now_secs: u64) -> String {
        self.logged_out.retain(|_, exp| *exp > now_secs);
        self.logged_out.insert(sid.to_string(), expires_at);
        format!("{sid} {expires_at}\n")
    }

    /// The page key of session `sid`: a value derived from the session id with the web key,
    /// never stored in the cookie. The daemon hands it to its own page (in the login
    /// redirect's fragment, or the login answer), which keeps it in its origin's storage
    /// and sends it as `X-Orchestra-Key`. Browsers send a host's cookies to every port of
    /// that host, so a server on another port receives the cookie; without the key, which
    /// only this origin's page holds, the cookie alone is refused.
    pub fn page_key(&self, sid: &str) -> String {
        jsonwebtoken::crypto::sign(
            format!("orchestra-page-key:{sid}").as_bytes(),
            &self.encoding,
            Algorithm::HS256,
        )
        .unwrap_or_default()
    }

    /// Whether `given` is the page key of session `sid` (compared in constant time).
    pub fn page_key_matches(&self, sid: &str, given: &str) -> bool {
        let expected = self.page_key(sid);
        !expected.is_empty() && super::auth::constant_time_eq(expected.as_bytes(), given.as_bytes())
    }

    /// Whether session `sid` was logged out.
    pub fn is_logged_out(&self, sid: &str) -> bool {
        self.logged_out.contains_key(sid)
    }

    /// Login codes waiting to be used.
    pub fn pending_codes(&self) -> usize {
        self.codes.len()
    }
}

/// 256 random bits as 64 hex digits (login codes, session ids).
fn random_hex() -> Result<String, LoginError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| LoginError::NoRandomness)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the logouts file (`<sid> <exp>` lines), keeping those not yet expired. A missing
/// file is an empty list; unreadable lines are skipped.
pub fn load_logouts(path: &Path, now_secs: u64) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (sid, exp) = line.split_once(' ')?;
            let exp: u64 = exp.trim().parse().ok()?;
            (exp > now_secs && !sid.is_empty()).then(|| (sid.to_string(), exp))
        })
        .collect()
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`): the first one.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value.trim())
    })
}

/// Every non-empty value of the cookies named in `names` in a `Cookie` header, in order. A
/// browser sends several cookies of one name when pages set them for different paths or
/// hosts (a page on another port of the same host can add its own `orchestra_session` with
/// `Path=/api`, which comes first), so the session cookie is the one among them that
/// verifies, not the first.
pub fn cookie_values<'a>(
    header: &'a str,
    names: &'static [&'static str],
) -> impl Iterator<Item = &'a str> {
    header.split(';').filter_map(move |pair| {
        let (key, value) = pair.trim().split_once('=')?;
        let value = value.trim();
        (names.contains(&key) && !value.is_empty()).then_some(value)
    })
}

/// The `Set-Cookie` value that stores `value` for `max_age`; `secure` when the page is
/// served over HTTPS, and then named with the `__Host-` prefix ([`cookie_name`]).
/// `HttpOnly` (no script can read it) and `SameSite=Strict` (no other site's page can make
/// the browser send it).
pub fn set_cookie(value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        cookie_name(secure),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    set_cookie("", 0, secure)
}

/// What a cookie-authenticated request says about where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestSite<'a> {
    /// The method (`GET`, `POST`, ...).
    pub method: &'a str,
    /// The `Origin` header, if any.
    pub origin: Option<&'a str>,
    /// The `Sec-Fetch-Site` header, if any (`same-origin`, `same-site`, `cross-site`,
    /// `none`).
    pub fetch_site: Option<&'a str>,
}

/// Why a cookie-authenticated request is refused as cross-site, or `None` when it came from
/// the daemon's own pages. `own_origin` says whether an `Origin` is the daemon's own (or one
/// listed in `websocket.allowed_origins`).
///
/// The cookie is `SameSite=Strict`, but another port on the same host is the same *site*,
/// so the origin is checked too: state-changing requests must carry an `Origin` that is the
/// daemon's own (or, from browsers that omit it, `Sec-Fetch-Site: same-origin`); any request
/// that names a foreign origin or says it is cross-site or same-site is refused.
pub fn cross_site_refusal(
    site: RequestSite<'_>,
    own_origin: impl Fn(&str) -> bool,
) -> Option<&'static str> {
    if site.origin.is_some_and(|origin| !own_origin(origin)) {
        return Some("a page from another origin may not use the browser session");
    }
    match site.fetch_site {
        Some(value) if value.eq_ignore_ascii_case("same-origin") => {}
        Some(value) if value.eq_ignore_ascii_case("none") && is_safe(site.method) => {}
        Some(_) => return Some("a cross-site request may not use the browser session"),
        None => {}
    }
    if !is_safe(site.method) && site.origin.is_none() && site.fetch_site.is_none() {
        return Some("a request that changes state needs an Origin header from this daemon's page");
    }
    None
}

fn is_safe(method: &str) -> bool {
    matches!(method, "GET" | "HEAD")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROL: Scopes = Scopes {
        observe: true,
        control: true,
    };
    const OBSERVE: Scopes = Scopes {
        observe: true,
        control: false,
    };

    fn logins() -> WebLogins {
        let limits = CodeLimits {
            total: 3,
            per_subject: 3,
            observe: 2,
        };
        WebLogins::new(b"0123456789abcdef0123456789abcdef", HashMap::new(), limits)
    }

    #[test]
    fn a_code_works_once_and_only_before_it_expires() {
        let mut logins = logins();
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        let code = logins
            .issue_code("alice", true, OBSERVE, 9, ttl, now)
            .unwrap();
        assert_eq!(code.len(), 64);
        assert_eq!(
            logins.redeem_code(&code, now + Duration::from_secs(59)),
            Ok(("alice".to_string(), OBSERVE, 9))
        );
        // Reused: refused.
        assert_eq!(logins.redeem_code(&code, now), Err(LoginError::Unknown));
        // Expired: refused, and forgotten.
        let late = logins
            .issue_code("bob", true, CONTROL, 9, ttl, now)
            .unwrap();
        assert_eq!(
            logins.redeem_code(&late, now + ttl),
            Err(LoginError::Expired)
        );
        assert_eq!(logins.redeem_code(&late, now), Err(LoginError::Unknown));
        assert_eq!(logins.redeem_code("", now), Err(LoginError::Unknown));
        assert_eq!(logins.pending_codes(), 0);
    }

    #[test]
    fn codes_are_bounded_per_subject_and_observe_callers_never_take_controls_share() {
        let mut logins = WebLogins::new(
            b"0123456789abcdef0123456789abcdef",
            HashMap::new(),
            CodeLimits {
                total: 6,
                per_subject: 2,
                observe: 3,
            },
        );
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut issue = |subject: &str, by_control: bool| {
            logins
                .issue_code(subject, by_control, OBSERVE, 9, ttl, now)
                .map(|_| ())
        };
        // One observe token (one subject) gets its share only.
        assert_eq!(issue("mallory", false), Ok(()));
        assert_eq!(issue("mallory", false), Ok(()));
        assert_eq!(issue("mallory", false), Err(LoginError::TooMany));
        // Observe callers together get their share only...
        assert_eq!(issue("eve", false), Ok(()));
        assert_eq!(issue("eve", false), Err(LoginError::TooMany));
        assert_eq!(issue("trudy", false), Err(LoginError::TooMany));
        // ...and control callers still get theirs.
        assert_eq!(issue("alice", true), Ok(()));
        assert_eq!(issue("bob", true), Ok(()));
        assert_eq!(issue("carol", true), Ok(()));
        assert_eq!(issue("dave", true), Err(LoginError::TooMany), "total");
    }

    #[test]
    fn codes_waiting_are_bounded_and_expired_ones_make_room() {
        let mut logins = logins();
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        for _ in 0..3 {
            logins.issue_code("a", true, OBSERVE, 9, ttl, now).unwrap();
        }
        assert_eq!(
            logins.issue_code("a", true, OBSERVE, 9, ttl, now),
            Err(LoginError::TooMany)
        );
        assert!(
            logins
                .issue_code("a", true, OBSERVE, 9, ttl, now + ttl)
                .is_ok()
        );
        assert_eq!(logins.pending_codes(), 1);
    }

    #[test]
    fn sessions_carry_scopes_and_end_at_expiry_or_logout() {
        let mut logins = logins();
        let issued = logins.issue_session("alice", OBSERVE, 1000, 2000).unwrap();
        let (principal, sid) = logins.verify_session(&issued.cookie, 1500).unwrap();
        assert_eq!(principal, issued.principal);
        assert_eq!(principal.scopes, OBSERVE);
        assert!(logins.verify_session(&issued.cookie, 2000).is_err());
        let control = logins.issue_session("bob", CONTROL, 1000, 2000).unwrap();
        assert_eq!(
            logins
                .verify_session(&control.cookie, 1500)
                .unwrap()
                .0
                .scopes,
            CONTROL
        );
        let key = logins.page_key(&sid);
        assert!(logins.page_key_matches(&sid, &key));
        assert!(!logins.page_key_matches(&sid, ""));
        assert!(!logins.page_key_matches("another", &key));
        let line = logins.log_out(&sid, 2000, 1500);
        assert_eq!(line, format!("{sid} 2000\n"));
        assert!(logins.verify_session(&issued.cookie, 1500).is_err());
        // Other sessions are unaffected.
        assert!(logins.verify_session(&control.cookie, 1500).is_ok());
    }

    #[test]
    fn forged_tampered_and_foreign_cookies_are_refused() {
        let logins = logins();
        let issued = logins.issue_session("alice", OBSERVE, 1000, 2000).unwrap();
        let other = WebLogins::new(
            b"another key another key another!",
            HashMap::new(),
            CodeLimits {
                total: 3,
                per_subject: 3,
                observe: 2,
            },
        );
        assert!(other.verify_session(&issued.cookie, 1500).is_err());
        let mut tampered = issued.cookie.clone();
        tampered.pop();
        assert!(logins.verify_session(&tampered, 1500).is_err());
        assert!(logins.verify_session("", 1500).is_err());
        assert!(logins.verify_session(&"a".repeat(5000), 1500).is_err());
        // An API token signed with the same key but without the web audience is no cookie.
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "x", "scope": "control", "exp": 2000, "sid": "s"}),
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(logins.verify_session(&token, 1500).is_err());
    }

    #[test]
    fn logouts_survive_in_their_file() {
        let dir = std::env::temp_dir().join(format!("orchestra-logouts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web_logouts");
        std::fs::write(&path, "live 3000\nold 1000\ngarbage\n 5\nx y\n").unwrap();
        let loaded = load_logouts(&path, 2000);
        assert_eq!(loaded, HashMap::from([("live".to_string(), 3000)]));
        assert!(load_logouts(&dir.join("missing"), 0).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cookies_are_parsed_and_set_strictly() {
        assert_eq!(
            cookie_value("a=1; orchestra_session=abc.def; b=2", COOKIE_NAME),
            Some("abc.def")
        );
        assert_eq!(cookie_value("xorchestra_session=1", COOKIE_NAME), None);
        const BOTH: &[&str] = &[COOKIE_NAME, SECURE_COOKIE_NAME];
        let all: Vec<_> = cookie_values(
            "orchestra_session=bad; a=1; orchestra_session=; __Host-orchestra_session=good",
            BOTH,
        )
        .collect();
        assert_eq!(all, ["bad", "good"]);
        let secure = set_cookie("v", 60, true);
        assert!(
            secure.starts_with("__Host-orchestra_session=v; Path=/;"),
            "{secure}"
        );
        assert_eq!(cookie_value("", COOKIE_NAME), None);
        let set = set_cookie("v", 60, false);
        assert_eq!(
            set,
            "orchestra_session=v; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"
        );
        assert!(set_cookie("v", 60, true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }

    #[test]
    fn cross_site_requests_cannot_use_the_cookie() {
        let own = |origin: &str| origin == "http://127.0.0.1:8080";
        let site = |method, origin, fetch_site| RequestSite {
            method,
            origin,
            fetch_site,
        };
        let allowed = [
            site("GET", None, None),
            site("GET", None, Some("none")),
            site("GET", Some("http://127.0.0.1:8080"), Some("same-origin")),
            site("POST", Some("http://127.0.0.1:8080"), Some("same-origin")),
            site("POST", Some("http://127.0.0.1:8080"), None),
            site("DELETE", None, Some("same-origin")),
        ];
        for case in allowed {
            assert_eq!(cross_site_refusal(case, own), None, "{case:?}");
        }
        let refused = [
            // A stolen cookie used from another origin.
            site("POST", Some("http://evil.example"), Some("cross-site")),
            site("POST", Some("http://evil.example"), None),
            site("GET", Some("http://evil.example"), None),
            // Another port on the same host is the same site, not the same origin.
            site("POST", Some("http://127.0.0.1:3000"), Some("same-site")),
            site("GET", None, Some("same-site")),
            site("GET", None, Some("cross-site")),
            // A state change with no sign of where it came from.
            site("POST", None, None),
            site("DELETE", None, Some("none")),
            site("POST", Some("null"), None),
        ];
        for case in refused {
            assert!(cross_site_refusal(case, own).is_some(), "{case:?}");
        }
    }
}
