//! Authentication and scopes on every endpoint.

use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::common::{DaemonProcess, now, sign};

#[test]
fn every_endpoint_requires_a_valid_bearer_token() {
    let daemon = DaemonProcess::start();
    for (method, path) in [
        ("GET", "/api/health"),
        ("GET", "/api/agents"),
        ("GET", "/api/agents/sess-echo-00000000"),
        ("DELETE", "/api/agents/sess-echo-00000000"),
        ("POST", "/api/agents/spawn"),
    ] {
        let resp = daemon.request(method, path, None, None);
        resp.assert_error(401, "INVALID_TOKEN");
        assert!(
            resp.header("www-authenticate")
                .unwrap()
                .starts_with("Bearer"),
            "{method} {path}"
        );
    }
}

#[test]
fn bad_tokens_are_401_invalid_token() {
    let daemon = DaemonProcess::start();
    let secret = daemon.secret();
    let exp = now() + 600;
    let cases = [
        ("malformed", "not.a.jwt".to_string()),
        ("garbage", "garbage".to_string()),
        (
            "bad signature",
            sign(
                &json!({"scope": "control", "exp": exp}),
                b"some other secret",
                Algorithm::HS256,
            ),
        ),
        (
            "expired",
            sign(
                &json!({"scope": "control", "exp": now() - 3600}),
                &secret,
                Algorithm::HS256,
            ),
        ),
        (
            "no exp",
            sign(&json!({"scope": "control"}), &secret, Algorithm::HS256),
        ),
        (
            "not yet valid",
            sign(
                &json!({"scope": "control", "exp": exp, "nbf": now() + 3000}),
                &secret,
                Algorithm::HS256,
            ),
        ),
        (
            "issued in the future",
            sign(
                &json!({"scope": "control", "exp": exp + 7200, "iat": now() + 3600}),
                &secret,
                Algorithm::HS256,
            ),
        ),
        (
            "other algorithm",
            sign(
                &json!({"scope": "control", "exp": exp}),
                &secret,
                Algorithm::HS512,
            ),
        ),
    ];
    for (what, token) in cases {
        let resp = daemon.get("/api/health", &token);
        assert_eq!(resp.status, 401, "{what}: {}", resp.text());
        resp.assert_error(401, "INVALID_TOKEN");
    }
    // alg: none, no signature at all.
    use base64_like::encode;
    let unsigned = format!(
        "{}.{}.",
        encode(br#"{"alg":"none","typ":"JWT"}"#),
        encode(format!(r#"{{"scope":"control","exp":{exp}}}"#).as_bytes())
    );
    daemon
        .get("/api/health", &unsigned)
        .assert_error(401, "INVALID_TOKEN");
    let resp = daemon.request("GET", "/api/health", None, None);
    resp.assert_error(401, "INVALID_TOKEN");
    // A Basic header is not a bearer token.
    let raw = daemon.raw(
        b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic dTpw\r\nConnection: close\r\n\r\n",
    );
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 401"));
}

#[test]
fn scopes_limit_what_a_token_may_do() {
    let daemon = DaemonProcess::start();
    let observe = daemon.token("observe");
    assert_eq!(daemon.get("/api/health", &observe).status, 200);
    assert_eq!(daemon.get("/api/agents", &observe).status, 200);
    let body = json!({"agent_type": "echo", "working_dir": daemon.work});
    daemon
        .post("/api/agents/spawn", &observe, &body)
        .assert_error(403, "FORBIDDEN");
    let spawned = daemon.spawn(&daemon.control(), "echo");
    let id = spawned["session_id"].as_str().unwrap();
    daemon
        .delete(&format!("/api/agents/{id}"), &observe)
        .assert_error(403, "FORBIDDEN");
    // A valid token with no scope may do nothing.
    let none = sign(
        &json!({"sub": "x", "exp": now() + 600}),
        &daemon.secret(),
        Algorithm::HS256,
    );
    daemon
        .get("/api/health", &none)
        .assert_error(403, "FORBIDDEN");
    // Scopes may also come as an array claim.
    let list = sign(
        &json!({"scopes": ["control"], "exp": now() + 600}),
        &daemon.secret(),
        Algorithm::HS256,
    );
    assert_eq!(daemon.get(&format!("/api/agents/{id}"), &list).status, 200);
}

#[test]
fn tokens_never_reach_the_log() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    daemon.get("/api/health", &token);
    daemon.get("/api/agents?token=query-secret-value", &token);
    daemon.get("/api/health", "invalid-token-value");
    daemon.get("/api/nowhere?token=another-secret", &token);
    daemon.wait_for_log("GET /api/nowhere 404");
    let log = daemon.log.lock().unwrap().clone();
    assert!(
        log.contains("GET /api/health 200"),
        "request lines are logged:\n{log}"
    );
    for secret in [
        token.as_str(),
        "query-secret-value",
        "invalid-token-value",
        "another-secret",
    ] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
    }
    let secret = String::from_utf8(daemon.secret()).unwrap();
    assert!(!log.contains(&secret));
}

#[test]
fn token_command_respects_the_environment_secret() {
    let daemon = DaemonProcess::start();
    // A token minted with a different secret (from the environment) is not accepted by a
    // daemon that uses its generated secret.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(["token", "--scope", "observe"])
        .arg("--state-dir")
        .arg(&daemon.state)
        .arg("--config")
        .arg(&daemon.config)
        .env(
            "ORCHESTRA_JWT_SECRET",
            "a-completely-different-secret-value",
        )
        .output()
        .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3, "prints only the JWT");
    daemon
        .get("/api/health", token.trim())
        .assert_error(401, "INVALID_TOKEN");
    // The generated secret file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(daemon.state.join("jwt_secret"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(daemon.secret().len(), 64, "256 bits, hex");
}

/// Unpadded base64url, enough to hand-craft an unsigned token.
mod base64_like {
    pub fn encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
}

#[test]
fn eddsa_tokens_are_verified_with_the_configured_public_key() {
    let keys = format!("{}/tests/keys", env!("CARGO_MANIFEST_DIR"));
    let daemon = DaemonProcess::start_with(&format!(
        "[auth]\nalgorithm = \"EdDSA\"\npublic_key_file = \"{keys}/ed25519-public.pem\"\n\
         issuer = \"test-issuer\"\naudience = \"orchestra\""
    ));
    let private = std::fs::read(format!("{keys}/ed25519-private.pem")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&private).unwrap();
    let sign_ed = |claims: serde_json::Value| {
        jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::EdDSA), &claims, &key).unwrap()
    };
    let exp = now() + 600;
    let good = sign_ed(
        json!({"sub": "ci", "scope": "observe", "exp": exp, "iss": "test-issuer", "aud": "orchestra"}),
    );
    assert_eq!(daemon.get("/api/health", &good).status, 200);
    for (what, token) in [
        (
            "no audience",
            sign_ed(json!({"scope": "observe", "exp": exp, "iss": "test-issuer"})),
        ),
        (
            "wrong audience",
            sign_ed(json!({"scope": "observe", "exp": exp, "iss": "test-issuer", "aud": "other"})),
        ),
        (
            "wrong issuer",
            sign_ed(json!({"scope": "observe", "exp": exp, "iss": "evil", "aud": "orchestra"})),
        ),
        (
            "HS256 with the state secret",
            sign(
                &json!({"scope": "observe", "exp": exp, "iss": "test-issuer", "aud": "orchestra"}),
                b"anything",
                Algorithm::HS256,
            ),
        ),
    ] {
        let resp = daemon.get("/api/health", &token);
        assert_eq!(resp.status, 401, "{what} accepted");
    }
    // `orchestra token` cannot mint EdDSA tokens and says so.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .arg("token")
        .arg("--config")
        .arg(&daemon.config)
        .arg("--state-dir")
        .arg(&daemon.state)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("private key"));
}

#[test]
fn nbf_and_iat_slightly_in_the_future_are_accepted_within_the_leeway() {
    // Default leeway is 10 s: a client whose clock runs a few seconds ahead still gets in.
    let daemon = DaemonProcess::start();
    let secret = daemon.secret();
    let soon = now() + 4;
    for (what, claims) in [
        (
            "nbf",
            json!({"scope": "observe", "exp": now() + 600, "nbf": soon}),
        ),
        (
            "iat",
            json!({"scope": "observe", "exp": now() + 600, "iat": soon}),
        ),
        (
            "nbf and iat",
            json!({"scope": "observe", "exp": now() + 600, "nbf": soon, "iat": soon}),
        ),
    ] {
        let resp = daemon.get("/api/agents", &sign(&claims, &secret, Algorithm::HS256));
        assert_eq!(
            resp.status,
            200,
            "{what} inside the leeway: {}",
            resp.text()
        );
    }
}

#[test]
fn configured_issuer_and_audience_are_required_on_hs256_tokens() {
    let daemon = DaemonProcess::start_with(
        "[auth]\nissuer = \"https://issuer.test\"\naudience = \"orchestra\"",
    );
    // The CLI mints tokens with the configured iss and aud.
    let minted = daemon.control();
    assert_eq!(daemon.get("/api/agents", &minted).status, 200);
    let secret = daemon.secret();
    let exp = now() + 600;
    let good = sign(
        &json!({"scope": "observe", "exp": exp, "iss": "https://issuer.test", "aud": "orchestra"}),
        &secret,
        Algorithm::HS256,
    );
    assert_eq!(daemon.get("/api/agents", &good).status, 200);
    for (what, claims) in [
        (
            "neither iss nor aud",
            json!({"scope": "observe", "exp": exp}),
        ),
        (
            "no iss",
            json!({"scope": "observe", "exp": exp, "aud": "orchestra"}),
        ),
        (
            "no aud",
            json!({"scope": "observe", "exp": exp, "iss": "https://issuer.test"}),
        ),
        (
            "wrong iss",
            json!({"scope": "observe", "exp": exp, "iss": "https://evil.test", "aud": "orchestra"}),
        ),
        (
            "wrong aud",
            json!({"scope": "observe", "exp": exp, "iss": "https://issuer.test", "aud": "someone-else"}),
        ),
    ] {
        let resp = daemon.get("/api/agents", &sign(&claims, &secret, Algorithm::HS256));
        assert_eq!(resp.status, 401, "{what} accepted: {}", resp.text());
        resp.assert_error(401, "INVALID_TOKEN");
    }
}

#[test]
fn rs256_tokens_are_verified_with_the_configured_public_key() {
    let keys = format!("{}/tests/keys", env!("CARGO_MANIFEST_DIR"));
    let public = format!("{keys}/rsa-public.pem");
    let daemon = DaemonProcess::start_with(&format!(
        "[auth]\nalgorithm = \"RS256\"\npublic_key_file = \"{public}\""
    ));
    let sign_rsa = |file: &str, claims: &serde_json::Value| {
        let pem = std::fs::read(format!("{keys}/{file}")).unwrap();
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
        jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::RS256), claims, &key).unwrap()
    };
    let claims = json!({"sub": "ci", "scope": "observe", "exp": now() + 600});
    let good = sign_rsa("rsa-private.pem", &claims);
    let resp = daemon.get("/api/agents", &good);
    assert_eq!(resp.status, 200, "{}", resp.text());
    // The same claims with the signature of another token (a valid signature, wrong payload).
    let other_claims = sign_rsa(
        "rsa-private.pem",
        &json!({"sub": "ci", "scope": "control", "exp": now() + 600}),
    );
    let (head_payload, _) = good.rsplit_once('.').unwrap();
    let (_, other_signature) = other_claims.rsplit_once('.').unwrap();
    let tampered = format!("{head_payload}.{other_signature}");
    for (what, token) in [
        (
            "HS256 with the daemon's secret",
            sign(&claims, &daemon.secret(), Algorithm::HS256),
        ),
        (
            "HS256 keyed with the public key (algorithm confusion)",
            sign(&claims, &std::fs::read(&public).unwrap(), Algorithm::HS256),
        ),
        (
            "RS256 by another key",
            sign_rsa("rsa-other-private.pem", &claims),
        ),
        ("RS256 with a signature of other claims", tampered),
    ] {
        let resp = daemon.get("/api/agents", &token);
        assert_eq!(resp.status, 401, "{what} accepted: {}", resp.text());
        resp.assert_error(401, "INVALID_TOKEN");
    }
}
