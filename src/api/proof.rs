//! `POST /api/server-proof`: the daemon shows that it holds the keys behind a credential
//! before a client sends that credential.
//!
//! While the daemon is down or restarting, any local user can listen on its port. A client
//! that sent its token or page key to whatever answers there would hand it to that process.
//! So clients first send a fresh nonce and the part of their credential that grants nothing
//! (a token's `header.payload`, a browser session's id) and check the answer, which only a
//! server holding the signing secret or the web key can compute (see
//! [`crate::proto::proof::proof_of`]). The command line client does this on the same connection as
//! the request that carries the token, so the port cannot change hands in between; the
//! dashboard does it whenever its WebSocket to the daemon is not open.

use serde::{Deserialize, Serialize};

use super::Parts;
use super::error::{ApiError, ErrorCode};
use super::{json, parse_body};
use crate::proto::http::{Request, Response};
use crate::proto::proof::{proof_of, valid_nonce};

/// Longest signing input accepted (tokens are at most 8 KiB).
const MAX_SIGNING_INPUT: usize = 8192;

/// The challenge.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofRequest {
    /// A fresh random value from the client.
    nonce: String,
    /// For a token: its `header.payload` (without the signature).
    #[serde(default)]
    token: Option<String>,
    /// For a browser session: its id (the page key is derived from it).
    #[serde(default)]
    session: Option<String>,
}

/// The answer.
#[derive(Debug, Serialize)]
struct ProofResponse {
    proof: String,
}

/// Answers a server-proof challenge (no credentials needed: it reveals nothing that
/// grants access).
pub fn answer(parts: &Parts<'_>, request: &Request) -> Result<Response, ApiError> {
    let body: ProofRequest = parse_body(request)?;
    if !valid_nonce(&body.nonce) {
        return Err(ApiError::bad_request(
            "nonce must be 16 to 128 characters of A-Z, a-z, 0-9, '-' and '_'",
        ));
    }
    let proof = match (body.token, body.session) {
        (Some(input), None) => {
            if input.len() > MAX_SIGNING_INPUT || input.split('.').count() != 2 {
                return Err(ApiError::bad_request(
                    "token must be a token's header.payload, without its signature",
                ));
            }
            parts
                .api
                .auth
                .server_proof(&input, &body.nonce)
                .ok_or_else(|| {
                    ApiError::new(
                        501,
                        ErrorCode::NotImplemented,
                        "this daemon verifies tokens with a public key and cannot prove it \
                         holds their signing key",
                    )
                })?
        }
        (None, Some(session)) => {
            if session.is_empty() || session.len() > 128 {
                return Err(ApiError::bad_request("session must be a session id"));
            }
            proof_of(parts.api.web.page_key(&session).as_bytes(), &body.nonce)
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of token (header.payload) and session",
            ));
        }
    };
    Ok(json(200, &ProofResponse { proof }).with_header("Cache-Control", "no-store"))
}
