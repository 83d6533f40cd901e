//! JWT authentication: the secret, token verification with a pinned algorithm, scopes, and
//! minting tokens for `orchestra token`.
//!
//! Tokens and secrets never appear in error messages or logs.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{Config, SECRET_ENV, TokenAlgorithm};

pub use crate::principal::{Principal, Scope, Scopes};

/// The scope claim: a space-separated string (`"observe control"`) or an array.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
enum ScopeClaim {
    Text(String),
    List(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: u64,
    iat: Option<u64>,
    scope: Option<ScopeClaim>,
    scopes: Option<ScopeClaim>,
}

/// Why a token was refused (becomes `401 INVALID_TOKEN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(pub &'static str);

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Verifies bearer tokens.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    leeway: u64,
    /// The HS256 secret as a signing key, for [`Authenticator::server_proof`]; `None` with
    /// public-key algorithms (the daemon holds no private key).
    signer: Option<EncodingKey>,
}

impl Authenticator {
    /// Builds the verifier from the config; `secret` is the HS256 secret (unused for
    /// public-key algorithms).
    pub fn new(config: &Config, secret: &[u8]) -> Result<Authenticator, String> {
        let auth = &config.auth;
        let (algorithm, key) = match auth.algorithm {
            TokenAlgorithm::HS256 => (Algorithm::HS256, DecodingKey::from_secret(secret)),
            other => {
                let path = auth
                    .public_key_file
                    .as_ref()
                    .ok_or("public_key_file is required")?;
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                match other {
                    TokenAlgorithm::EdDSA => (
                        Algorithm::EdDSA,
                        DecodingKey::from_ed_pem(&pem).map_err(|e| {
                            format!("{}: not an Ed25519 public key: {e}", path.display())
                        })?,
                    ),
                    _ => (
                        Algorithm::RS256,
                        DecodingKey::from_rsa_pem(&pem).map_err(|e| {
                            format!("{}: not an RSA public key: {e}", path.display())
                        })?,
                    ),
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = auth.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &auth.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &auth.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let signer = (algorithm == Algorithm::HS256).then(|| EncodingKey::from_secret(secret));
        Ok(Authenticator {
            key,
            validation,
            leeway: auth.leeway.as_secs(),
            signer,
        })
    }

    /// This daemon's answer to a server-proof challenge for a token whose signing input
    /// (`header.payload`) is `signing_input`: [`crate::proto::proof::proof_of`] keyed with the signature this
    /// daemon gives that input. A client holding the whole token computes the same from the
    /// token's own signature, so a right answer shows the server holds the key that signs
    /// its tokens, and the client has sent nothing it could use (see `client::Endpoint`).
    /// `None` when tokens are verified with a public key (the daemon cannot sign).
    pub fn server_proof(&self, signing_input: &str, nonce: &str) -> Option<String> {
        let signer = self.signer.as_ref()?;
        let signature =
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), signer, Algorithm::HS256).ok()?;
        Some(crate::proto::proof::proof_of(signature.as_bytes(), nonce))
    }

    /// A token for `principal`'s subject and scopes, valid for `ttl`: what a daemon of a
    /// cluster forwards a request with, so that the owner verifies it like any other.
    /// `None` when tokens are verified with a public key (the daemon cannot sign).
    pub fn mint_for(
        &self,
        config: &Config,
        principal: &Principal,
        ttl: Duration,
    ) -> Option<String> {
        let signer = self.signer.as_ref()?;
        let scope = if principal.scopes.control {
            "control"
        } else if principal.scopes.observe {
            "observe"
        } else {
            ""
        };
        let now = now_secs();
        let claims = MintClaims {
            sub: &principal.subject,
            scope,
            iat: now,
            // Never longer than the caller's own credential.
            exp: (now + ttl.as_secs().max(1)).min(principal.expires_at),
            iss: config.auth.issuer.as_deref(),
            aud: config.auth.audience.as_deref(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, signer).ok()
    }

    /// Verifies a token and returns who it is for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        if token.is_empty() {
            return Err(AuthError("empty bearer token"));
        }
        if token.len() > 8192 {
            return Err(AuthError("token too long"));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError("token expired"),
                ErrorKind::ImmatureSignature => AuthError("token not valid yet (nbf)"),
                ErrorKind::InvalidSignature => AuthError("bad token signature"),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError("token algorithm not accepted")
                }
                ErrorKind::InvalidIssuer => AuthError("wrong token issuer"),
                ErrorKind::InvalidAudience => AuthError("wrong token audience"),
                ErrorKind::MissingRequiredClaim(_) => AuthError("token lacks a required claim"),
                _ => AuthError("malformed token"),
            },
        )?;
        let claims = data.claims;
        let now = now_secs();
        if claims.iat.is_some_and(|iat| iat > now + self.leeway) {
            return Err(AuthError("token issued in the future (iat)"));
        }
        let mut scopes = Scopes::default();
        for claim in [claims.scope, claims.scopes].into_iter().flatten() {
            let names: Vec<String> = match claim {
                ScopeClaim::Text(text) => text.split_whitespace().map(str::to_string).collect(),
                ScopeClaim::List(list) => list,
            };
            for name in names {
                match name.as_str() {
                    "observe" => scopes.observe = true,
                    "control" => scopes.control = true,
                    _ => {}
                }
            }
        }
        Ok(Principal {
            subject: claims
                .sub
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "anonymous".into()),
            scopes,
            expires_at: claims.exp,
            session: None,
        })
    }
}

/// Extracts the token from an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header: Option<&[u8]>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError("missing Authorization: Bearer token"))?;
    let value =
        std::str::from_utf8(value).map_err(|_| AuthError("malformed Authorization header"))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError("malformed Authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError("Authorization scheme must be Bearer"));
    }
    Ok(token.trim())
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    scope: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Signs an HS256 token for `sub` with `scope`, valid for `ttl`.
pub fn mint_token(
    config: &Config,
    secret: &[u8],
    sub: &str,
    scope: Scope,
    ttl: Duration,
) -> Result<String, String> {
    if config.auth.algorithm != TokenAlgorithm::HS256 {
        return Err(format!(
            "the daemon verifies {:?} tokens with a public key; mint them with the matching \
             private key",
            config.auth.algorithm
        ));
    }
    let now = now_secs();
    let claims = MintClaims {
        sub,
        scope: scope.as_str(),
        iat: now,
        exp: now + ttl.as_secs().max(1),
        iss: config.auth.issuer.as_deref(),
        aud: config.auth.audience.as_deref(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| format!("cannot sign token: {e}"))
}

/// The HS256 secret: `ORCHESTRA_JWT_SECRET`, else `auth.jwt_secret`, else the secret file
/// (generated with 256 random bits, mode 0600, on first use).
pub fn load_or_create_secret(config: &Config) -> Result<Vec<u8>, String> {
    if let Some(secret) = std::env::var_os(SECRET_ENV).filter(|s| !s.is_empty()) {
        return Ok(secret.into_encoded_bytes());
    }
    if let Some(secret) = config.auth.jwt_secret.as_ref().filter(|s| !s.is_empty()) {
        return Ok(secret.clone().into_bytes());
    }
    load_or_create_key_file(&config.secret_file())
}

/// A key kept in a private file: read it if it exists (warning when other users could read
/// it), else generate 256 random bits into it. Used for the token secret and the key that
/// signs browser session cookies.
pub fn load_or_create_key_file(path: &Path) -> Result<Vec<u8>, String> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                log::warn!(
                    "secret file {} is readable by other users (mode {:o}); run chmod 600",
                    path.display(),
                    mode & 0o777
                );
            }
            read_secret_file(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_secret(path),
        Err(e) => Err(format!("cannot read secret file {}: {e}", path.display())),
    }
}

/// Creates the secret file without a window in which another process could see it empty or
/// half-written: the secret goes to a private temporary file in the same directory, is
/// synced, and is then hard-linked into place, which fails if the file exists. The loser of
/// a race (a second daemon or `orchestra token` starting at the same moment) reads the
/// winner's complete file.
fn create_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| format!("no randomness available: {e}"))?;
    let secret: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::create_private_dir(dir)?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| format!("no randomness available: {e}"))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.unwrap_or_else(|| "secret".into()),
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(secret.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        });
    let linked = written.and_then(|()| std::fs::hard_link(&temp, path));
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            // Make the new name durable too.
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
            Ok(secret.into_bytes())
        }
        // Another process created it first: its file is complete; use it.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_secret_file(path),
        Err(e) => Err(format!("cannot write secret file {}: {e}", path.display())),
    }
}

/// Reads an existing secret file; an empty one is an error, never an empty key.
fn read_secret_file(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    let secret = String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec();
    if secret.is_empty() {
        return Err(format!(
            "secret file {} is empty; delete it to generate a new secret (every token \
             signed with the old one stops working)",
            path.display()
        ));
    }
    Ok(secret)
}

/// Compares secrets without stopping at the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    fn config() -> Config {
        Config::default()
    }

    fn sign(claims: serde_json::Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn minted_tokens_verify_with_their_scope() {
        let auth = Authenticator::new(&config(), b"secret").unwrap();
        let token = mint_token(
            &config(),
            b"secret",
            "alice",
            Scope::Control,
            Duration::from_secs(60),
        )
        .unwrap();
        let who = auth.verify(&token).unwrap();
        assert_eq!(who.subject, "alice");
        assert!(who.scopes.allows(Scope::Control) && who.scopes.allows(Scope::Observe));
        let token = mint_token(
            &config(),
            b"secret",
            "bob",
            Scope::Observe,
            Duration::from_secs(60),
        )
        .unwrap();
        let who = auth.verify(&token).unwrap();
        assert!(who.scopes.allows(Scope::Observe) && !who.scopes.allows(Scope::Control));
    }

    #[test]
    fn rejects_bad_tokens() {
        let auth = Authenticator::new(&config(), b"secret").unwrap();
        let now = now_secs();
        let cases = [
            sign(
                serde_json::json!({"scope": "control", "exp": now - 3600}),
                b"secret",
            ),
            sign(
                serde_json::json!({"scope": "control", "exp": now + 60}),
                b"other",
            ),
            sign(serde_json::json!({"scope": "control"}), b"secret"),
            sign(
                serde_json::json!({"scope": "control", "exp": now + 60, "nbf": now + 3600}),
                b"secret",
            ),
            sign(
                serde_json::json!({"scope": "control", "exp": now + 7200, "iat": now + 3600}),
                b"secret",
            ),
            // alg: none, unsigned.
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzY29wZSI6ImNvbnRyb2wiLCJleHAiOjQxMDI0NDQ4MDB9."
                .to_string(),
            "not-a-token".to_string(),
            String::new(),
        ];
        for token in &cases {
            assert!(auth.verify(token).is_err(), "{token}");
        }
        // HS384 with the right secret is still refused: the algorithm is pinned.
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &serde_json::json!({"scope": "control", "exp": now + 60}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(
            auth.verify(&hs384).unwrap_err().0,
            "token algorithm not accepted"
        );
    }

    #[test]
    fn scope_claim_forms() {
        let auth = Authenticator::new(&config(), b"s").unwrap();
        let exp = now_secs() + 60;
        let list = sign(serde_json::json!({"scopes": ["observe"], "exp": exp}), b"s");
        assert!(auth.verify(&list).unwrap().scopes.observe);
        let none = sign(serde_json::json!({"exp": exp}), b"s");
        assert_eq!(auth.verify(&none).unwrap().scopes, Scopes::default());
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token(Some(b"Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(Some(b"bearer  abc ")).unwrap(), "abc");
        assert!(bearer_token(None).is_err());
        assert!(bearer_token(Some(b"Basic abc")).is_err());
        assert!(bearer_token(Some(b"Bearer")).is_err());
    }

    #[test]
    fn generates_a_private_secret_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config();
        config.state_dir = dir.path().join("state");
        // The environment variable would take precedence; tests never set it.
        if std::env::var_os(SECRET_ENV).is_some() {
            return;
        }
        let first = load_or_create_secret(&config).unwrap();
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(config.secret_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_secret(&config).unwrap(), first);
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_complete_secret() {
        if std::env::var_os(SECRET_ENV).is_some() {
            panic!("unset {SECRET_ENV} to run the unit tests");
        }
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let mut config = config();
            config.state_dir = dir.path().join("state");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let (config, barrier) = (config.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        load_or_create_secret(&config).unwrap()
                    })
                })
                .collect();
            let secrets: Vec<Vec<u8>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            assert_eq!(secrets[0].len(), 64);
            assert!(
                secrets.iter().all(|s| s == &secrets[0]),
                "one secret for all"
            );
            let left: Vec<_> = std::fs::read_dir(&config.state_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                left,
                vec![std::ffi::OsString::from("jwt_secret")],
                "no temp files"
            );
        }
    }

    #[test]
    fn an_empty_secret_file_is_an_error_not_an_empty_key() {
        if std::env::var_os(SECRET_ENV).is_some() {
            panic!("unset {SECRET_ENV} to run the unit tests");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut config = config();
        config.state_dir = dir.path().to_path_buf();
        std::fs::write(config.secret_file(), "\n").unwrap();
        let error = load_or_create_secret(&config).unwrap_err();
        assert!(error.contains("is empty"), "{error}");
    }
}
