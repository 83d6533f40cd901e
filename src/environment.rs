//! What the daemon's children inherit from its environment, and what they never do.
//!
//! The daemon reads its own settings from `ORCHESTRA_*` variables (the token secret in
//! `ORCHESTRA_JWT_SECRET`, the log level in `ORCHESTRA_LOG`). Agents read untrusted text,
//! so none of those may reach them: `orchestra serve` reads what it needs once, then erases
//! every `ORCHESTRA_*` variable (and `_`, the shell's path of the last command) from its own
//! environment before it starts a thread or a child ([`scrub_own`]). Every child the daemon
//! starts is built with [`command`], which removes them again in case the scrub could not
//! run (a library caller, a test). `orchestra agent-exec` drops them as well, because a
//! tmux server started by an older daemon keeps the environment it was started with.
//!
//! Variables the daemon adds are listed in [`ADDED`]; nothing else of the daemon's own
//! reaches a child.

use std::ffi::{OsStr, OsString};
use std::process::Command;

/// The prefix of the daemon's own variables.
pub const PRIVATE_PREFIX: &str = "ORCHESTRA_";

/// Variables the daemon sets for its children: the agent's session id (every agent), the
/// ticket id (agents running a delegated task), and for agent types with hooks the hook
/// socket, the session's own hook credential and the hook timeout.
pub const ADDED: &[&str] = &[
    "ORCHESTRA_SESSION_ID",
    "ORCHESTRA_TICKET_ID",
    "ORCHESTRA_HOOK_SOCKET",
    "ORCHESTRA_HOOK_TOKEN",
    "ORCHESTRA_HOOK_TIMEOUT_MS",
    "ORCHESTRA_HOOK_APPROVAL_TIMEOUT_MS",
];

/// Whether `name` is one of the daemon's own variables that no child may inherit: every
/// `ORCHESTRA_*` variable, and `_` (set by shells to the path of the program they started,
/// i.e. the orchestra binary).
pub fn is_private(name: &OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    bytes.starts_with(PRIVATE_PREFIX.as_bytes()) || bytes == b"_"
}

/// The names of the private variables in this process's environment now.
pub fn private_names() -> Vec<OsString> {
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| is_private(name))
        .collect()
}

/// Erases the daemon's private variables from its own environment: their values are
/// overwritten in place (so `/proc/<pid>/environ` no longer shows them) and then removed.
/// Must run while the process has one thread; fails otherwise and changes nothing.
/// Returns the names it removed.
pub fn scrub_own() -> Result<Vec<OsString>, String> {
    let names = private_names();
    crate::sys::erase_env_vars(&names)
        .map_err(|e| format!("cannot remove the daemon's variables from its environment: {e}"))?;
    Ok(names)
}

/// A command for `program` that inherits the daemon's environment minus its private
/// variables, and the umask the daemon was started with (the daemon's own is 0o077). Every
/// process the daemon starts is built here.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for name in private_names() {
        command.env_remove(name);
    }
    crate::sys::with_original_umask(&mut command);
    command
}

/// Whether `name` is a portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most
/// 128 characters.
pub fn is_env_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_names_are_the_daemons_namespace_and_underscore() {
        assert!(is_private(OsStr::new("ORCHESTRA_JWT_SECRET")));
        assert!(is_private(OsStr::new("ORCHESTRA_LOG")));
        assert!(is_private(OsStr::new("_")));
        assert!(!is_private(OsStr::new("__")));
        assert!(!is_private(OsStr::new("HOME")));
        assert!(!is_private(OsStr::new("MY_ORCHESTRA_X")));
        assert!(ADDED.iter().all(|name| is_private(OsStr::new(name))));
    }
}
