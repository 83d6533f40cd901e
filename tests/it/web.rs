//! The dashboard's server side: the embedded page and its security headers, login links,
//! session cookies, CSRF refusals and logout, over real HTTP. (The page itself is tested in
//! Chromium by `browser.rs`.)

use serde_json::json;

use crate::common::{DaemonProcess, Resp};

/// `orchestra open` against this daemon: the login link it prints.
fn open_link(daemon: &DaemonProcess, scope: &str) -> String {
    let link = daemon.login_link(scope);
    let prefix = format!("http://{}/login?code=", daemon.addr);
    assert!(link.starts_with(&prefix), "{link}");
    link
}

/// The path and query of a link on this daemon.
fn path_of(daemon: &DaemonProcess, link: &str) -> String {
    link.strip_prefix(&format!("http://{}", daemon.addr))
        .unwrap()
        .to_string()
}

/// What a browser does with a login link: fetch its page, which posts the code back from
/// the daemon's own origin (with `extra` headers). Returns the answer to the post.
fn use_link(daemon: &DaemonProcess, link: &str, extra: &[(&str, &str)]) -> Resp {
    let page = daemon.request_with("GET", &path_of(daemon, link), &[], None);
    if page.status != 200 {
        return page;
    }
    assert!(
        page.header("set-cookie").is_none(),
        "fetching the link logs nobody in"
    );
    let html = page.text();
    let code = html
        .split("name=code value=")
        .nth(1)
        .and_then(|rest| rest.split('>').next())
        .expect("the code in the page's form")
        .to_string();
    let origin = own_origin(daemon);
    let mut headers = vec![("Origin", origin.as_str())];
    headers.extend_from_slice(extra);
    daemon.request_with("POST", "/login", &headers, Some(&format!("code={code}")))
}

/// Follows a login link; returns the response and the headers the daemon's page sends with
/// its session: the cookie pair (`name=value`) and the page key from the redirect.
fn log_in(daemon: &DaemonProcess, link: &str) -> (Resp, Session) {
    let resp = use_link(daemon, link, &[]);
    assert_eq!(resp.status, 303, "{}", resp.text());
    let cookie = resp.header("set-cookie").expect("a cookie").to_string();
    let pair = cookie.split(';').next().unwrap().to_string();
    let key = resp
        .header("location")
        .unwrap()
        .strip_prefix("/#key=")
        .and_then(|fragment| fragment.split('&').next())
        .expect("the page key in the fragment")
        .to_string();
    (resp, Session { cookie: pair, key })
}

/// A browser session as the daemon's page holds it.
struct Session {
    cookie: String,
    key: String,
}

impl Session {
    /// The cookie and page key, as the page sends them.
    fn headers(&self) -> Vec<(&str, &str)> {
        vec![("Cookie", &self.cookie), ("X-Orchestra-Key", &self.key)]
    }

    /// Those plus `extra`.
    fn with<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut all = self.headers();
        all.extend_from_slice(extra);
        all
    }
}

fn own_origin(daemon: &DaemonProcess) -> String {
    format!("http://{}", daemon.addr)
}

#[test]
fn the_page_and_its_assets_are_served_with_a_strict_policy() {
    let daemon = DaemonProcess::start();
    let page = daemon.request_with("GET", "/", &[], None);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("script-src 'self';"), "{policy}");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(!policy.contains("unsafe-eval"), "{policy}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    let html = page.text();
    assert!(!html.contains("<script>"), "no inline script");
    // Every file the page names is served, from the daemon itself.
    let mut named = 0;
    for part in html.split(['"', '\'']) {
        if part.starts_with("/assets/") {
            let asset = daemon.request_with("GET", part, &[], None);
            assert_eq!(asset.status, 200, "{part}");
            assert!(!asset.body.is_empty(), "{part}");
            let etag = asset.header("etag").unwrap().to_string();
            let again = daemon.request_with("GET", part, &[("If-None-Match", &etag)], None);
            assert_eq!(again.status, 304, "{part}");
            assert!(again.body.is_empty());
            named += 1;
        }
    }
    assert!(
        named >= 5,
        "the page names its scripts and styles ({named})"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
    // API answers carry a policy that loads and frames nothing.
    let health = daemon.get("/api/health", &daemon.control());
    assert_eq!(
        health.header("content-security-policy"),
        Some("default-src 'none'; frame-ancestors 'none'")
    );
    assert_eq!(health.header("x-frame-options"), Some("DENY"));
    // The vendored xterm.js is served with its license.
    let license = daemon.request_with("GET", "/assets/LICENSE.xterm", &[], None);
    assert!(license.text().contains("MIT"), "{}", license.text());
    let missing = daemon.request_with("GET", "/assets/nope.js", &[], None);
    missing.assert_error(404, "NOT_FOUND");
    let post = daemon.request_with("POST", "/", &[], Some(""));
    post.assert_error(405, "METHOD_NOT_ALLOWED");
}

#[test]
fn a_login_link_works_once_and_gives_a_strict_cookie() {
    let daemon = DaemonProcess::start();
    let link = open_link(&daemon, "control");
    let (resp, session) = log_in(&daemon, &link);
    assert!(resp.header("location").unwrap().starts_with("/#key="));
    let set = resp.header("set-cookie").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let answer = daemon.request_with("GET", "/api/session", &session.headers(), None);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let info = answer.json();
    assert_eq!(info["via"], "cookie");
    assert_eq!(info["subject"], "local");
    assert_eq!(info["scopes"], json!(["observe", "control"]));
    // The code is spent.
    let reused = use_link(&daemon, &link, &[]);
    assert_eq!(reused.status, 401);
    assert!(reused.header("set-cookie").is_none());
    assert!(reused.text().contains("already used"), "{}", reused.text());
    let bogus = daemon.request_with("GET", "/login?code=0000", &[], None);
    assert_eq!(bogus.status, 401);
    let page = daemon.request_with("GET", "/login?code=%3Cscript%3E", &[], None);
    assert_eq!(
        page.status, 401,
        "only a well-formed code is put in the page"
    );
    // The code is posted only from the daemon's own page.
    let other = open_link(&daemon, "control");
    let code = other.rsplit('=').next().unwrap();
    let foreign = daemon.request_with(
        "POST",
        "/login",
        &[("Origin", "http://evil.example")],
        Some(&format!("code={code}")),
    );
    foreign.assert_error(403, "FORBIDDEN");
    let null_cross = daemon.request_with(
        "POST",
        "/login",
        &[("Origin", "null"), ("Sec-Fetch-Site", "cross-site")],
        Some(&format!("code={code}")),
    );
    null_cross.assert_error(403, "FORBIDDEN");
    // What Chromium sends for the page's own form (its referrer policy hides the origin).
    let own_form = daemon.request_with(
        "POST",
        "/login",
        &[("Origin", "null"), ("Sec-Fetch-Site", "same-origin")],
        Some(&format!("code={code}")),
    );
    assert_eq!(own_form.status, 303, "{}", own_form.text());
    // The code never reaches the log.
    let code = link.rsplit('=').next().unwrap();
    assert!(!daemon.log_contains(code));
    // Behind a TLS proxy the cookie is Secure.
    let link = open_link(&daemon, "observe");
    let proxied = use_link(&daemon, &link, &[("X-Forwarded-Proto", "https")]);
    assert!(
        proxied.header("set-cookie").unwrap().ends_with("; Secure"),
        "{:?}",
        proxied.header("set-cookie")
    );
}

#[test]
fn an_observe_login_can_read_but_not_act() {
    let daemon = DaemonProcess::start();
    let (_, session) = log_in(&daemon, &open_link(&daemon, "observe"));
    let origin = own_origin(&daemon);
    let headers = session.with(&[("Origin", origin.as_str())]);
    let agents = daemon.request_with("GET", "/api/agents", &headers, None);
    assert_eq!(agents.status, 200);
    let spawn = daemon.request_with(
        "POST",
        "/api/agents/spawn",
        &headers,
        Some(&json!({"agent_type": "echo", "working_dir": daemon.work}).to_string()),
    );
    spawn.assert_error(403, "FORBIDDEN");
    assert!(spawn.text().contains("browser session"), "{}", spawn.text());
    // Its WebSocket ticket carries the observe scope: it can watch but not type.
    let ticket = daemon.request_with("POST", "/api/ws-ticket", &headers, Some(""));
    assert_eq!(ticket.status, 201, "{}", ticket.text());
    let ticket = ticket.json()["ticket"].as_str().unwrap().to_string();
    let mut ws = daemon
        .ws_with(&format!("ticket={ticket}"), &[("Origin", &origin)])
        .expect("upgrade");
    ws.send(json!({"type": "terminal_input", "session_id": "sess-x", "data": "hi"}));
    let error = ws.recv_until("an error", |m| m["type"] == "error");
    assert_eq!(error["error_code"], "FORBIDDEN");
    // A login link cannot grant more than its issuer has.
    let observe = daemon.token("observe");
    let more = daemon.post("/api/login-codes", &observe, &json!({"scope": "control"}));
    more.assert_error(403, "FORBIDDEN");
    let same = daemon.post("/api/login-codes", &observe, &json!({}));
    assert_eq!(same.status, 201);
    assert_eq!(same.json()["scope"], "observe");
}

#[test]
fn a_stolen_cookie_is_refused_from_another_origin() {
    let daemon = DaemonProcess::start();
    let (_, session) = log_in(&daemon, &open_link(&daemon, "control"));
    let body = json!({"agent_type": "echo", "working_dir": daemon.work}).to_string();
    let attempts: [&[(&str, &str)]; 5] = [
        &[
            ("Origin", "http://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        &[("Origin", "http://evil.example")],
        // Another port on the same host is the same site, but not the same origin.
        &[
            ("Origin", "http://127.0.0.1:1"),
            ("Sec-Fetch-Site", "same-site"),
        ],
        // No sign of where it came from.
        &[],
        &[("Origin", "null")],
    ];
    for headers in attempts {
        let all = session.with(headers);
        let resp = daemon.request_with("POST", "/api/agents/spawn", &all, Some(&body));
        resp.assert_error(403, "FORBIDDEN");
        let ticket = daemon.request_with("POST", "/api/ws-ticket", &all, Some(""));
        ticket.assert_error(403, "FORBIDDEN");
    }
    // Reading from a cross-site context is refused too.
    let read = daemon.request_with(
        "GET",
        "/api/agents",
        &session.with(&[("Sec-Fetch-Site", "cross-site")]),
        None,
    );
    read.assert_error(403, "FORBIDDEN");
    assert_eq!(
        daemon.get("/api/agents", &daemon.control()).json()["total"],
        0,
        "nothing was spawned"
    );
    // From the daemon's own page it works.
    let origin = own_origin(&daemon);
    let own = [
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    let resp = daemon.request_with(
        "POST",
        "/api/agents/spawn",
        &session.with(&own),
        Some(&body),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    // A server on another port of this host gets the cookie from the browser, and can forge
    // Origin and Sec-Fetch-Site; it does not have the page key, which only the daemon's own
    // page holds.
    let replayed = [("Cookie", session.cookie.as_str()), own[0], own[1]];
    daemon
        .request_with("POST", "/api/agents/spawn", &replayed, Some(&body))
        .assert_error(403, "FORBIDDEN");
    let wrong_key = [replayed[0], ("X-Orchestra-Key", "AAAA"), own[0]];
    daemon
        .request_with("POST", "/api/ws-ticket", &wrong_key, Some(""))
        .assert_error(403, "FORBIDDEN");
    // A browser session cannot mint more sessions (they would outlive its logout).
    daemon
        .request_with("POST", "/api/login-codes", &session.with(&own), Some("{}"))
        .assert_error(403, "FORBIDDEN");
    // A forged cookie is no session.
    let forged = format!("{}x", session.cookie);
    let resp = daemon.request_with("GET", "/api/session", &[("Cookie", &forged)], None);
    resp.assert_error(401, "INVALID_TOKEN");
}

#[test]
fn a_pasted_token_logs_in_only_from_the_daemons_own_page() {
    let daemon = DaemonProcess::start();
    let token = daemon.token("observe");
    let origin = own_origin(&daemon);
    let body = json!({ "token": token }).to_string();
    let foreign = daemon.request_with(
        "POST",
        "/api/login",
        &[("Origin", "http://evil.example")],
        Some(&body),
    );
    foreign.assert_error(403, "FORBIDDEN");
    let bad = daemon.request_with(
        "POST",
        "/api/login",
        &[("Origin", &origin)],
        Some(&json!({"token": "nope"}).to_string()),
    );
    bad.assert_error(401, "INVALID_TOKEN");
    let ok = daemon.request_with("POST", "/api/login", &[("Origin", &origin)], Some(&body));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["scopes"], json!(["observe"]));
    assert!(
        ok.json()["key"].as_str().is_some_and(|k| !k.is_empty()),
        "the page key"
    );
    let cookie = ok.header("set-cookie").unwrap();
    // The session ends no later than the token.
    let max_age: u64 = cookie
        .split("Max-Age=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(max_age <= 3600, "{cookie}");
}

#[test]
fn logout_ends_the_session_for_good_and_a_restart_keeps_the_others() {
    let mut daemon = DaemonProcess::start();
    let (_, kept) = log_in(&daemon, &open_link(&daemon, "control"));
    let (_, ended) = log_in(&daemon, &open_link(&daemon, "control"));
    let origin = own_origin(&daemon);
    // A WebSocket the session opened ends with it.
    let ticket = daemon.request_with(
        "POST",
        "/api/ws-ticket",
        &ended.with(&[("Origin", &origin)]),
        Some(""),
    );
    assert_eq!(ticket.status, 201, "{}", ticket.text());
    let ticket = ticket.json()["ticket"].as_str().unwrap().to_string();
    let mut ws = daemon
        .ws_with(&format!("ticket={ticket}"), &[("Origin", &origin)])
        .expect("upgrade");
    ws.send(json!({"type": "ping", "id": 1}));
    ws.recv_until("pong", |m| m["type"] == "pong");
    let logout = daemon.request_with(
        "POST",
        "/api/logout",
        &ended.with(&[("Origin", &origin)]),
        Some(""),
    );
    assert_eq!(logout.status, 200, "{}", logout.text());
    assert_eq!(ws.wait_closed().1, crate::common::Closed::Code(1008));
    assert!(
        logout.header("set-cookie").unwrap().contains("Max-Age=0"),
        "the cookie is cleared"
    );
    let session = |daemon: &DaemonProcess, session: &Session| {
        daemon
            .request_with("GET", "/api/session", &session.headers(), None)
            .status
    };
    assert_eq!(
        session(&daemon, &ended),
        401,
        "a copied cookie stays refused"
    );
    assert_eq!(session(&daemon, &kept), 200);
    // The logout is recorded off the loop; wait for the file before restarting.
    crate::common::wait_until("the logout recorded", || {
        std::fs::read_to_string(daemon.state.join("web_logouts"))
            .ok()
            .filter(|text| !text.is_empty())
    });
    let unused = open_link(&daemon, "control");
    daemon.restart();
    assert_eq!(session(&daemon, &kept), 200, "sessions survive a restart");
    assert_eq!(session(&daemon, &ended), 401, "logouts survive a restart");
    // Login links do not: they lived in the old daemon's memory.
    let path = unused
        .split_once("/login")
        .map(|(_, rest)| format!("/login{rest}"))
        .unwrap();
    assert_eq!(
        use_link(&daemon, &format!("http://{}{path}", daemon.addr), &[]).status,
        401
    );
}

#[test]
fn an_expired_login_link_is_refused() {
    // With a lifetime of zero every link has expired by the time it is used.
    let daemon = DaemonProcess::start_with("[web]\nlogin_code_ttl = \"0s\"\n");
    let link = open_link(&daemon, "control");
    let resp = use_link(&daemon, &link, &[]);
    assert_eq!(resp.status, 401);
    assert!(resp.text().contains("expired"), "{}", resp.text());
    assert!(resp.text().contains("orchestra open"), "{}", resp.text());
    assert!(stylesheet_of(&resp.text()).is_some(), "{}", resp.text());
    assert!(resp.header("set-cookie").is_none());
    assert!(
        resp.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
}

/// The stylesheet a page names (`<link rel=stylesheet href=...>`), if any.
fn stylesheet_of(html: &str) -> Option<String> {
    let link = html.split("<link ").skip(1).find(|tag| {
        let tag = tag.split('>').next().unwrap_or_default();
        tag.contains("rel=stylesheet") || tag.contains("rel=\"stylesheet\"")
    })?;
    let href = link.split("href=").nth(1)?;
    let href = href.trim_start_matches('"');
    Some(
        href.split(['"', ' ', '>'])
            .next()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Issue 20: a reused, expired or mangled login link got a bare page without the
/// dashboard's stylesheet. It gets the login page's look, says what to do, and keeps its
/// status (401; the browser test checks that the style is applied).
#[test]
fn a_refused_login_link_gets_a_styled_page_that_says_what_to_do() {
    let daemon = DaemonProcess::start();
    let link = open_link(&daemon, "control");
    let (_, _session) = log_in(&daemon, &link);
    let login_page = daemon.request_with("GET", &path_of(&daemon, &link), &[], None);
    let login_style = stylesheet_of(&login_page.text()).expect("the login page is styled");
    let reused = use_link(&daemon, &link, &[]);
    let bogus = daemon.request_with("GET", "/login?code=0000", &[], None);
    for (what, page) in [("reused", &reused), ("bogus", &bogus)] {
        assert_eq!(page.status, 401, "{what}");
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{what}"
        );
        assert!(page.header("set-cookie").is_none(), "{what}");
        assert_eq!(
            page.header("www-authenticate"),
            Some("Bearer realm=\"orchestra\""),
            "{what}: a 401 names its challenge"
        );
        let html = page.text();
        let style = stylesheet_of(&html)
            .unwrap_or_else(|| panic!("the {what} link's page names no stylesheet:\n{html}"));
        assert_eq!(style, login_style, "{what}: styled like the login page");
        // The page's policy lets it load its stylesheet, which is served.
        let policy = page.header("content-security-policy").unwrap();
        assert!(policy.contains("style-src 'self'"), "{what}: {policy}");
        let css = daemon.request_with("GET", &style, &[], None);
        assert_eq!(css.status, 200, "{what}: {style}");
        assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
        // It says what happened and what to do.
        assert!(html.contains("orchestra open"), "{what}: {html}");
        assert!(
            html.contains("href=\"/\""),
            "{what}: a way to paste a token: {html}"
        );
        assert!(html.contains("class=\"card narrow\""), "{what}: {html}");
    }
    assert!(reused.text().contains("already used"), "{}", reused.text());
}

/// Issue 20: the dashboard as served said "offline" in its connection badge before its
/// script had asked the daemon anything (and the login page kept saying it).
#[test]
fn the_page_does_not_claim_to_be_offline_before_it_has_asked() {
    let daemon = DaemonProcess::start();
    let html = daemon.request_with("GET", "/", &[], None).text();
    let badge = html
        .split("id=\"link-state\"")
        .nth(1)
        .and_then(|rest| rest.split("</span>").next())
        .expect("the connection badge");
    assert!(!badge.contains("offline"), "{badge}");
}

#[test]
fn the_dashboard_can_be_switched_off() {
    let daemon = DaemonProcess::start_with("[web]\ndashboard = false\n");
    daemon
        .request_with("GET", "/", &[], None)
        .assert_error(404, "NOT_FOUND");
    daemon
        .request_with("GET", "/assets/app.js", &[], None)
        .assert_error(404, "NOT_FOUND");
    // Logins still work (for another front end served elsewhere through a proxy).
    let (_, session) = log_in(&daemon, &open_link(&daemon, "observe"));
    let answer = daemon.request_with("GET", "/api/session", &session.headers(), None);
    assert_eq!(answer.status, 200);
}

#[test]
fn a_shadowing_session_cookie_locks_nobody_out() {
    let daemon = DaemonProcess::start();
    let (_, session) = log_in(&daemon, &open_link(&daemon, "control"));
    let (_, other) = log_in(&daemon, &open_link(&daemon, "observe"));
    let status = |headers: &[(&str, &str)]| {
        let answer = daemon.request_with("GET", "/api/session", headers, None);
        (answer.status, answer.text())
    };
    // A page on another port of this host set `orchestra_session=...; Path=/api`: the
    // browser sends it first. Nor does another valid session's cookie in front take over.
    let value = session.cookie.split_once('=').unwrap().1;
    let other_value = other.cookie.split_once('=').unwrap().1;
    for shadow in [
        format!("orchestra_session=forged; orchestra_session={value}"),
        format!("orchestra_session={other_value}; orchestra_session={value}"),
        format!("orchestra_session=x; __Host-orchestra_session=y; orchestra_session={value}"),
    ] {
        let (code, text) = status(&[("Cookie", &shadow), ("X-Orchestra-Key", &session.key)]);
        assert_eq!(code, 200, "{shadow}: {text}");
        let info: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(info["scopes"], json!(["observe", "control"]), "{shadow}");
    }
    let forged_only = [
        ("Cookie", "orchestra_session=forged"),
        ("X-Orchestra-Key", "k"),
    ];
    assert_eq!(status(&forged_only).0, 401);
}

#[test]
fn logout_takes_the_page_key() {
    let daemon = DaemonProcess::start();
    let origin = own_origin(&daemon);
    let (_, session) = log_in(&daemon, &open_link(&daemon, "control"));
    let (_, other) = log_in(&daemon, &open_link(&daemon, "observe"));
    let status = |headers: &[(&str, &str)]| {
        daemon
            .request_with("GET", "/api/session", headers, None)
            .status
    };
    // Whoever holds the cookie without the page key (a server on another port receives the
    // cookie) cannot end the session.
    let replayed = daemon.request_with(
        "POST",
        "/api/logout",
        &[("Cookie", &session.cookie), ("Origin", &origin)],
        Some(""),
    );
    replayed.assert_error(403, "FORBIDDEN");
    assert_eq!(status(&session.headers()), 200, "still logged in");
    let logout = daemon.request_with(
        "POST",
        "/api/logout",
        &session.with(&[("Origin", &origin)]),
        Some(""),
    );
    assert_eq!(logout.status, 200, "{}", logout.text());
    assert_eq!(status(&session.headers()), 401, "logged out");
    assert_eq!(status(&other.headers()), 200, "the other session lives");
}

#[test]
fn a_secure_session_cookie_has_the_host_prefix() {
    let daemon = DaemonProcess::start();
    let link = open_link(&daemon, "control");
    let resp = use_link(&daemon, &link, &[("X-Forwarded-Proto", "https")]);
    assert_eq!(resp.status, 303, "{}", resp.text());
    let set = resp.header("set-cookie").unwrap().to_string();
    assert!(set.starts_with("__Host-orchestra_session="), "{set}");
    for attribute in ["; Path=/;", "; Secure", "HttpOnly"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Domain"), "{set}");
    let pair = set.split(';').next().unwrap();
    let key = resp
        .header("location")
        .unwrap()
        .strip_prefix("/#key=")
        .and_then(|fragment| fragment.split('&').next())
        .unwrap()
        .to_string();
    let headers = [
        ("Cookie", pair),
        ("X-Orchestra-Key", key.as_str()),
        ("X-Forwarded-Proto", "https"),
    ];
    let answer = daemon.request_with("GET", "/api/session", &headers, None);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let origin = own_origin(&daemon);
    let mut with_origin = headers.to_vec();
    with_origin.push(("Origin", origin.as_str()));
    let logout = daemon.request_with("POST", "/api/logout", &with_origin, Some(""));
    assert_eq!(logout.status, 200, "{}", logout.text());
    let cleared: Vec<_> = logout
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, value)| value.clone())
        .collect();
    assert!(
        cleared
            .iter()
            .any(|v| v.starts_with("__Host-orchestra_session=;") && v.contains("Max-Age=0")),
        "{cleared:?}"
    );
}

/// A token for `sub` with `scope`, signed with this daemon's secret.
fn token_for(daemon: &DaemonProcess, scope: &str, sub: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(["token", "--scope", scope, "--ttl", "1h", "--sub", sub])
        .arg("--config")
        .arg(&daemon.config)
        .arg("--state-dir")
        .arg(&daemon.state)
        .env_remove("ORCHESTRA_JWT_SECRET")
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Asks for login links with `token` until refused (at most `bound`); returns how many it got.
fn codes_until_refused(daemon: &DaemonProcess, token: &str, bound: usize) -> usize {
    for got in 0..bound {
        let resp = daemon.post("/api/login-codes", token, &json!({}));
        if resp.status == 429 {
            return got;
        }
        assert_eq!(resp.status, 201, "{}", resp.text());
    }
    bound
}

#[test]
fn observe_tokens_cannot_use_up_the_login_links_of_others() {
    let daemon = DaemonProcess::start();
    // One observe token asks for as many links as it can: it gets its own share.
    let mallory = token_for(&daemon, "observe", "mallory");
    let got = codes_until_refused(&daemon, &mallory, 200);
    assert_eq!(got, 10, "web.max_login_codes_per_subject");
    // Observe tokens together get theirs (web.max_observe_login_codes)...
    let mut observe_total = got;
    for n in 0..10 {
        let token = token_for(&daemon, "observe", &format!("observer{n}"));
        observe_total += codes_until_refused(&daemon, &token, 200);
    }
    assert_eq!(observe_total, 50, "web.max_observe_login_codes");
    // ...and a person with a control token still gets a link.
    let alice = token_for(&daemon, "control", "alice");
    let resp = daemon.post("/api/login-codes", &alice, &json!({"scope": "control"}));
    assert_eq!(resp.status, 201, "{}", resp.text());
}
