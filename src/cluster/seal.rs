//! Seals on what daemons of one cluster send each other: an HMAC-SHA256 over each message,
//! keyed with a key derived from the cluster's shared JWT secret. A NATS client that has
//! the cluster's NATS credentials but not the secret can then neither forge a message
//! (a host's record, an event, a viewer's message or frames, an answer) nor alter one; it
//! can still read them (use TLS) and drop them. Pure code: bytes in, bytes out.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of a seal in front of each message.
pub const SEAL_BYTES: usize = 32;

/// The key that seals one cluster's messages.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// The key of cluster `cluster` from the JWT secret every host shares (a different
    /// cluster name gives a different key).
    pub fn derive(secret: &[u8], cluster: &str) -> SealKey {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
        mac.update(b"orchestra cluster seal v1\0");
        mac.update(cluster.as_bytes());
        SealKey(mac.finalize().into_bytes().into())
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length")
    }

    /// `message` with its seal in front.
    pub fn seal(&self, message: &[u8]) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(message);
        let mut out = Vec::with_capacity(SEAL_BYTES + message.len());
        out.extend_from_slice(&mac.finalize().into_bytes());
        out.extend_from_slice(message);
        out
    }

    /// The message inside `sealed` if its seal is right (checked in constant time); `None`
    /// for anything else.
    pub fn open<'a>(&self, sealed: &'a [u8]) -> Option<&'a [u8]> {
        let (seal, message) = sealed.split_at_checked(SEAL_BYTES)?;
        let mut mac = self.mac();
        mac.update(message);
        mac.verify_slice(seal).ok()?;
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_messages_sealed_with_the_same_secret_and_cluster_open() {
        let key = SealKey::derive(b"secret", "one");
        let sealed = key.seal(b"{\"type\":\"agent_status\"}");
        assert_eq!(key.open(&sealed), Some(&b"{\"type\":\"agent_status\"}"[..]));
        assert_eq!(key.open(&key.seal(b"")), Some(&b""[..]));
        // Another secret, another cluster, a changed byte, a cut: refused.
        assert_eq!(SealKey::derive(b"other", "one").open(&sealed), None);
        assert_eq!(SealKey::derive(b"secret", "two").open(&sealed), None);
        for i in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[i] ^= 1;
            assert_eq!(key.open(&altered), None, "byte {i}");
        }
        for cut in 0..sealed.len() {
            assert_eq!(key.open(&sealed[..cut]), None, "cut at {cut}");
        }
        assert!(
            !format!("{key:?}").contains('['),
            "the key is never printed"
        );
    }
}
