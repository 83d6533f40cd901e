//! Server proofs: how a client tells the daemon from another program on its port before it
//! sends a credential (see `api::proof` for the endpoint and `client::Endpoint` for the
//! command line side). Pure: bytes in, a string out.

use jsonwebtoken::{Algorithm, EncodingKey};

/// The answer to a server-proof challenge: HMAC-SHA256 keyed with `key` over
/// `orchestra-server-proof:<nonce>`, base64url without padding. Both sides compute it: the
/// client from what it holds (a token's signature, a browser's page key), the daemon from
/// its keys; only a server holding those keys can answer a fresh nonce.
pub fn proof_of(key: &[u8], nonce: &str) -> String {
    let message = format!("orchestra-server-proof:{nonce}");
    jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(key),
        Algorithm::HS256,
    )
    .unwrap_or_default()
}

/// Whether `nonce` is acceptable for a server-proof challenge: 16 to 128 base64url or hex
/// characters.
pub fn valid_nonce(nonce: &str) -> bool {
    (16..=128).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_are_hmac_sha256_in_base64url() {
        let proof = proof_of(b"key", "0123456789abcdef");
        assert_eq!(proof, proof_of(b"key", "0123456789abcdef"));
        assert_ne!(proof, proof_of(b"kez", "0123456789abcdef"));
        assert_ne!(proof, proof_of(b"key", "0123456789abcdeg"));
        assert_eq!(proof.len(), 43);
        assert!(
            proof
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        // The value node's crypto (and the dashboard's own HMAC) computes for a UTF-8 key.
        assert_eq!(
            proof_of("ü€".as_bytes(), "abc"),
            "iaV8sYpYYFWmQuOzlOiRYn81jAT-K0LVvEoDYkEski8"
        );
    }

    #[test]
    fn nonces_are_bounded_and_plain() {
        assert!(valid_nonce(&"a".repeat(16)));
        assert!(valid_nonce(&"A-_9".repeat(32)));
        assert!(!valid_nonce(&"a".repeat(15)));
        assert!(!valid_nonce(&"a".repeat(129)));
        assert!(!valid_nonce("0123456789abcdef\n"));
        assert!(!valid_nonce("0123456789abcdef/"));
    }
}
