//! How a pty holder knows its daemon: a challenge over a key only the daemon's user can read.
//!
//! The key is 32 random bytes in `<state>/pty/holder.key` (mode 0600, in the 0700 state
//! directory), made by the first daemon that needs it and kept across restarts, so that a
//! restarted daemon can take its holders' hand-over again. A holder reads it once at start.
//! On every connection the holder sends a fresh random challenge ([`Kind::Challenge`]); the
//! client must answer with `HMAC-SHA256(key, CONTEXT || challenge)` ([`Kind::Auth`]) before
//! the holder hands anything over or accepts any other frame. The key itself never crosses
//! the socket.
//!
//! [`Kind::Challenge`]: crate::proto::pty::Kind::Challenge
//! [`Kind::Auth`]: crate::proto::pty::Kind::Auth

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes in a key, a challenge and an answer.
pub const LEN: usize = 32;
/// What the MAC is computed over before the challenge, so that the key answers nothing but
/// a holder's challenge.
const CONTEXT: &[u8] = b"orchestra pty-hold challenge v1\0";

/// A holder key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// The key file in the pty directory `dir`.
pub fn key_path(dir: &Path) -> PathBuf {
    dir.join("holder.key")
}

impl Key {
    /// Reads the key at `path` (blocking).
    pub fn read(path: &Path) -> Result<Key, String> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(LEN as u64 + 1).read_to_end(&mut bytes))
            .map_err(|e| format!("cannot read the holder key {}: {e}", path.display()))?;
        let bytes: [u8; LEN] = bytes
            .try_into()
            .map_err(|_| format!("the holder key {} is not {LEN} bytes", path.display()))?;
        Ok(Key(bytes))
    }

    /// Reads the key in the pty directory `dir`, making it first if there is none (blocking).
    /// Concurrent callers all end up with the same key: a new one is written to a private
    /// temporary file and linked into place only if no key is there yet.
    pub fn load_or_create(dir: &Path) -> Result<Key, String> {
        let path = key_path(dir);
        match Key::read(&path) {
            Ok(key) => return Ok(key),
            Err(_) if path.exists() => return Key::read(&path),
            Err(_) => {}
        }
        let mut bytes = [0u8; LEN];
        getrandom::fill(&mut bytes).map_err(|e| format!("no randomness available: {e}"))?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| format!("no randomness available: {e}"))?;
        let temp = dir.join(format!(
            "holder.key.{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ));
        let written = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)
                .and_then(|mut file| file.write_all(&bytes).and_then(|_| file.sync_all()))
        };
        let linked = written.and_then(|_| std::fs::hard_link(&temp, &path));
        let _ = std::fs::remove_file(&temp);
        match linked {
            Ok(()) => Ok(Key(bytes)),
            // Another spawn made it first.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Key::read(&path),
            Err(e) => Err(format!(
                "cannot write the holder key {}: {e}",
                path.display()
            )),
        }
    }

    /// The answer to `challenge`.
    pub fn answer(&self, challenge: &[u8]) -> [u8; LEN] {
        self.mac(challenge).finalize().into_bytes().into()
    }

    /// Whether `answer` answers `challenge` (in constant time).
    pub fn verify(&self, challenge: &[u8], answer: &[u8]) -> bool {
        self.mac(challenge).verify_slice(answer).is_ok()
    }

    fn mac(&self, challenge: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(CONTEXT);
        mac.update(challenge);
        mac
    }
}

/// A fresh random challenge.
pub fn challenge() -> Result<[u8; LEN], String> {
    let mut bytes = [0u8; LEN];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness available: {e}"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_key_answers_a_challenge() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::load_or_create(dir.path()).unwrap();
        assert_eq!(Key::load_or_create(dir.path()).unwrap(), key, "kept");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let challenge = challenge().unwrap();
        let answer = key.answer(&challenge);
        assert!(key.verify(&challenge, &answer));
        assert!(!key.verify(&challenge, &answer[..31]));
        assert!(!key.verify(&super::challenge().unwrap(), &answer));
        let other = Key([7; LEN]);
        assert!(!other.verify(&challenge, &answer));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file is left"
        );
    }
}
