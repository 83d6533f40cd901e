//! Building tmux command lists: pure argv construction, no processes.
//!
//! tmux is an interpreter, so nothing here accepts text from API users. Measured with tmux
//! 3.3a: an argument ending in `;` ends the command and the following arguments run as a new
//! one; session names, start directories and `pipe-pane` commands go through format
//! expansion (`#(cmd)` runs `cmd`); `-t name` matches by prefix. Hence:
//! - session names are built by the daemon ([`SessionName`]) from a checked type name and
//!   random hex, and targets are exact (`=name:` or a pane id like `%3`);
//! - argv elements of the agent command are never format-expanded by tmux, but the daemon
//!   still passes only its own wrapper and a file path there (see `agents::exec`);
//! - every argument is checked by [`CommandList::arg`] not to end in `;`;
//! - strings that tmux expands (the `pipe-pane` command) are escaped with [`escape_format`].

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

/// A tmux session name the daemon created: `agent-<type>-<8 hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionName(String);

impl SessionName {
    /// Validates a name read back from tmux or built by the daemon.
    pub fn parse(name: &str) -> Option<SessionName> {
        let rest = name.strip_prefix("agent-")?;
        let (agent_type, suffix) = rest.rsplit_once('-')?;
        (crate::config::is_agent_type_name(agent_type) && is_session_suffix(suffix))
            .then(|| SessionName(name.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The exact-match target for this session (`=name:`), immune to prefix matching.
    pub fn target(&self) -> String {
        format!("={}:", self.0)
    }
}

impl fmt::Display for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `suffix` may end a session name: 1 to 32 lowercase ASCII letters or digits (the
/// daemon's 8 hex digits, or a name given at spawn such as `primary`).
pub fn is_session_suffix(suffix: &str) -> bool {
    (1..=32).contains(&suffix.len())
        && suffix
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// A tmux pane id such as `%3`; always an exact target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PaneId(String);

impl PaneId {
    /// Validates a pane id printed by tmux.
    pub fn parse(id: &str) -> Option<PaneId> {
        let digits = id.strip_prefix('%')?;
        (!digits.is_empty() && digits.len() <= 10 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| PaneId(id.to_string()))
    }

    /// The id as text, e.g. `%3`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PaneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An argument would have been parsed by tmux as something other than itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsafeArgument(pub String);

impl fmt::Display for UnsafeArgument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "argument {:?} would be interpreted by tmux", self.0)
    }
}

/// One or more tmux commands run by a single tmux invocation, in order, atomically with
/// respect to pane output (tmux runs a command list without processing panes in between).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandList {
    args: Vec<OsString>,
    commands: usize,
}

impl CommandList {
    /// An empty list.
    pub fn new() -> CommandList {
        CommandList::default()
    }

    /// Starts a new command named `name` (e.g. `new-session`).
    pub fn command(mut self, name: &str) -> CommandList {
        if self.commands > 0 {
            self.args.push(OsString::from(";"));
        }
        self.commands += 1;
        self.args.push(OsString::from(name));
        self
    }

    /// Appends an argument to the current command. Refuses arguments that tmux would treat
    /// as a command separator.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Result<CommandList, UnsafeArgument> {
        let arg = arg.as_ref();
        if arg.as_bytes().ends_with(b";") {
            return Err(UnsafeArgument(arg.to_string_lossy().into_owned()));
        }
        self.args.push(arg.to_os_string());
        Ok(self)
    }

    /// Appends every command of `other` to this list.
    pub fn then(mut self, other: CommandList) -> CommandList {
        if other.commands == 0 {
            return self;
        }
        if self.commands > 0 {
            self.args.push(OsString::from(";"));
        }
        self.commands += other.commands;
        self.args.extend(other.args);
        self
    }

    /// The argv after `tmux -S socket -f config`.
    pub fn args(&self) -> &[OsString] {
        &self.args
    }

    /// Number of commands in the list.
    pub fn len(&self) -> usize {
        self.commands
    }

    /// Whether the list holds no command.
    pub fn is_empty(&self) -> bool {
        self.commands == 0
    }
}

/// Escapes `#` so that a string survives tmux format expansion unchanged.
pub fn escape_format(text: &str) -> String {
    text.replace('#', "##")
}

/// Quotes `text` as one word for `/bin/sh` (single quotes; embedded quotes closed and
/// re-opened).
pub fn shell_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_are_strict() {
        assert!(SessionName::parse("agent-claude-0123abcd").is_some());
        assert!(SessionName::parse("agent-my_type-0123abcd").is_some());
        // Names given at spawn.
        assert!(SessionName::parse("agent-claude-primary").is_some());
        assert!(SessionName::parse("agent-claude-reviewer2").is_some());
        let long = format!("agent-claude-{}", "a".repeat(33));
        for bad in [
            "agent-claude-0123ABCD",
            "agent-claude-",
            "agent-claude-pri.mary",
            "agent-claude-pri mary",
            &long,
            "agent--0123abcd",
            "sess-claude-0123abcd",
            "agent-cl#aude-0123abcd",
            "agent-claude-0123abcd;",
            "agent-cla:ude-0123abcd",
        ] {
            assert!(SessionName::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            SessionName::parse("agent-x-00000000").unwrap().target(),
            "=agent-x-00000000:"
        );
    }

    #[test]
    fn pane_ids_are_strict() {
        assert!(PaneId::parse("%0").is_some());
        assert!(PaneId::parse("%123").is_some());
        for bad in ["%", "3", "%3;", "%-1", "%3a", "%99999999999"] {
            assert!(PaneId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn command_lists_separate_commands_and_refuse_semicolons() {
        let list = CommandList::new()
            .command("set-option")
            .arg("-g")
            .unwrap()
            .command("new-session")
            .arg("-d")
            .unwrap();
        let args: Vec<_> = list.args().iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(args, ["set-option", "-g", ";", "new-session", "-d"]);
        assert_eq!(list.len(), 2);
        let joined = CommandList::new()
            .command("a")
            .then(CommandList::new().command("b"));
        let args: Vec<_> = joined.args().iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(args, ["a", ";", "b"]);
        assert!(CommandList::new().command("x").arg("value;").is_err());
        assert!(CommandList::new().command("x").arg("value\\;").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(escape_format("/a#(b)/#{c}"), "/a##(b)/##{c}");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("/p a/t"), "'/p a/t'");
    }
}
