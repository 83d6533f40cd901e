//! The only code that runs git: every git call of the daemon's is built by [`command`], so
//! that nothing a repository says can make git run a program in the daemon's name.
//!
//! A repository's configuration (`.git/config`, `config.worktree`, and every file they
//! include, conditionally or not) can name programs for git to run, and anyone who can write
//! there (an agent working in the checkout) chooses them. Git offers no switch that ignores
//! the repository's configuration, so each call is hardened in three ways:
//!
//! - Fixed settings given as command-line configuration ([`FIXED`]), which outranks every
//!   file and every include: no hooks (`core.hooksPath=/dev/null`), no file-system monitor,
//!   no pager, no transport at all (`protocol.allow=never`), no submodule recursion, no
//!   automatic gc or maintenance, no credential helpers. Plus variables: no lazy fetches from
//!   a promisor remote (`GIT_NO_LAZY_FETCH`), no prompts, no replace refs, no optional locks,
//!   and none of the caller's variables that select another repository or inject
//!   configuration ([`ENV_REMOVED`]).
//! - Programs configured under a name the repository picks (`filter.<name>.clean`, `smudge`
//!   and `process`, selected by a `filter=<name>` attribute) cannot be switched off without
//!   the name, so the configuration that applies in the call's directory is read first
//!   (`git config --list --show-scope`, which runs nothing, follows includes and evaluates
//!   `includeIf` there) and every such program set by the repository's own scopes is
//!   overridden with an empty one ([`overrides`]). Per-name `protocol.<name>.allow` and
//!   configured hooks (`hook.<name>.*`, git 2.54+) are switched off whatever their scope.
//!   Programs configured in the system and global files (the user's own, e.g. git-lfs) still
//!   run. The overrides travel in `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_<n>`/`GIT_CONFIG_VALUE_<n>`
//!   (git 2.31+), which carry any subsection name exactly (a `-c` argument cannot carry one
//!   containing `=`), and which git hands on to the git processes it starts. The listing call
//!   carries them too and must show them back, so an older git that ignores the variables
//!   fails every call instead of running unprotected.
//! - Each subcommand is asked for the narrowest behaviour (`--no-ext-diff --no-textconv` on
//!   diffs, `--ignore-submodules=dirty` so git never starts a status inside a submodule with
//!   configuration of its own, `--no-filters` on hashing, `--no-checkout` on worktree
//!   creation followed by a checkout with the configuration read in the new worktree).
//!   `diff.external`, `diff.<driver>.command` and `diff.<driver>.textconv` are left to the
//!   flags: only `git diff` reads them, and an empty override makes git fail ("cannot run")
//!   rather than skip the program.
//!
//! Residual: the configuration is read a few milliseconds before the call that uses it; a
//! process already running in the repository that rewrites the configuration in exactly
//! that window is not covered.

use super::process;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Configuration every git call gets, ahead of the per-repository [`overrides`].
pub const FIXED: &[(&str, &str)] = &[
    // Unquoted paths in output the daemon parses; colours never.
    ("core.quotepath", "off"),
    ("color.ui", "false"),
    // Hooks (`post-checkout`, `reference-transaction`, `post-index-change`...).
    ("core.hookspath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("core.pager", "cat"),
    // No transport of any kind (a promisor remote's lazy fetch would start `ssh`, an `ext::`
    // command or a configured `uploadpack`); per-protocol settings are in `overrides`.
    ("protocol.allow", "never"),
    ("core.sshcommand", "false"),
    ("credential.helper", ""),
    ("submodule.recurse", "false"),
    ("status.submodulesummary", "false"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
];

/// A key [`FIXED`] sets only so that the listing proves git honours `GIT_CONFIG_COUNT`.
const PROBE: (&str, &str) = ("orchestra.hardened", "true");

/// Most per-repository overrides one call accepts; a configuration naming more programs
/// than this is refused rather than passed in an environment of unbounded size.
pub const MAX_OVERRIDES: usize = 1000;

/// Variables that would make the daemon's git calls look at another repository, inject
/// configuration, or run a program (editor, pager, external diff, ssh) in the daemon's name.
pub const ENV_REMOVED: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_PREFIX",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_EXTERNAL_DIFF",
    "GIT_DIFF_OPTS",
    "GIT_EDITOR",
    "GIT_SEQUENCE_EDITOR",
    "GIT_PAGER",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_ASKPASS",
    "GIT_PROXY_COMMAND",
    "GIT_EXEC_PATH",
    "GIT_TEMPLATE_DIR",
    "GIT_TRACE",
    "GIT_ATTR_SOURCE",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "SSH_ASKPASS",
];

/// A git command run in `dir`, hardened as the module describes. Reads the configuration
/// that applies in `dir` first (one `git config` call bounded by `timeout`); fails when that
/// read fails, so no call ever runs without its overrides.
pub fn command(dir: &Path, timeout: Duration) -> Result<Command, String> {
    let mut list = base(dir, FIXED.iter().chain([&PROBE]).copied());
    list.args(["config", "--list", "--show-scope", "--includes", "-z"]);
    let listing = run(list, timeout)?;
    let extra = overrides(&listing)?;
    let all = FIXED
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .chain(extra);
    Ok(base_owned(dir, all))
}

/// Runs a git command and returns its standard output, or why it failed.
pub fn run(mut command: Command, timeout: Duration) -> Result<Vec<u8>, String> {
    let what = format!("git {}", subcommand(&command).unwrap_or_default());
    let out = process::run(&mut command, timeout, 4096)?;
    if out.timed_out {
        return Err(format!("{what} did not finish within {timeout:?}"));
    }
    if !out.success() {
        let text = String::from_utf8_lossy(&out.output);
        return Err(format!("{what} failed: {}", text.trim()));
    }
    if out.stdout_truncated {
        return Err(format!(
            "{what} printed more than {} bytes",
            process::STDOUT_CAP
        ));
    }
    Ok(out.stdout)
}

/// The subcommand of a command built here: the argument after `-C <dir>`.
fn subcommand(command: &Command) -> Option<String> {
    let args: Vec<_> = command.get_args().collect();
    let at = args.iter().position(|a| *a == "-C")?;
    args.get(at + 2).map(|a| a.to_string_lossy().into_owned())
}

/// The overrides that switch off the programs named in `listing`, the output of
/// `git config --list --show-scope -z` (`<scope> NUL <key> LF <value> NUL`, repeated): an
/// empty `clean`, `smudge` and `process` and `required=false` for every filter driver the
/// repository's own scopes (`local`, `worktree`, and anything not `system`, `global` or
/// `command`) configure, `never` for every `protocol.<name>.allow`, and `enabled=false` for
/// every configured hook. Fails when the listing does not show the probe of [`command`]
/// (a git that ignores `GIT_CONFIG_COUNT`) or asks for more than [`MAX_OVERRIDES`].
pub fn overrides(listing: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |key: String, value: &str| {
        if !out.iter().any(|(k, _)| *k == key) {
            out.push((key, value.to_owned()));
        }
    };
    let mut probed = false;
    let mut fields = listing.split(|&b| b == 0);
    while let Some(scope) = fields.next() {
        let Some(entry) = fields.next() else { break };
        let key = entry.split(|&b| b == b'\n').next().unwrap_or_default();
        let Ok(key) = std::str::from_utf8(key) else {
            // Names are ASCII except subsections; git cannot be told about one it printed
            // in another encoding, so such a configuration is refused.
            if key.starts_with(b"filter.") || key.starts_with(b"protocol.") {
                return Err("the git configuration names a program in a non-UTF-8 section".into());
            }
            continue;
        };
        let trusted = matches!(scope, b"system" | b"global" | b"command");
        if scope == b"command" && entry == format!("{}\n{}", PROBE.0, PROBE.1).as_bytes() {
            probed = true;
        }
        let Some((section, rest)) = key.split_once('.') else {
            continue;
        };
        let Some((name, variable)) = rest.rsplit_once('.') else {
            continue;
        };
        match (section, variable) {
            ("filter", "clean" | "smudge" | "process" | "required") if !trusted => {
                for program in ["clean", "smudge", "process"] {
                    add(format!("filter.{name}.{program}"), "");
                }
                add(format!("filter.{name}.required"), "false");
            }
            ("protocol", "allow") => add(format!("protocol.{name}.allow"), "never"),
            ("hook", _) => add(format!("hook.{name}.enabled"), "false"),
            _ => {}
        }
    }
    if !probed {
        return Err(
            "git ignored GIT_CONFIG_COUNT (git 2.31 or newer is needed); not running git".into(),
        );
    }
    if out.len() > MAX_OVERRIDES {
        return Err(format!(
            "the git configuration names more than {MAX_OVERRIDES} programs; not running git"
        ));
    }
    Ok(out)
}

fn base<'a>(dir: &Path, config: impl Iterator<Item = (&'a str, &'a str)>) -> Command {
    base_owned(dir, config.map(|(k, v)| (k.to_owned(), v.to_owned())))
}

/// A git command in `dir` with `config` as command-line configuration and the variables of
/// the module's description.
fn base_owned(dir: &Path, config: impl Iterator<Item = (String, String)>) -> Command {
    let mut command = crate::environment::command("git");
    command
        .args(["--literal-pathspecs", "--no-pager", "-C"])
        .arg(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_NO_LAZY_FETCH", "1")
        .env("GIT_NO_REPLACE_OBJECTS", "1");
    for var in ENV_REMOVED {
        command.env_remove(var);
    }
    for (name, _) in std::env::vars_os() {
        let bytes = name.as_encoded_bytes();
        if bytes.starts_with(b"GIT_CONFIG_KEY_") || bytes.starts_with(b"GIT_CONFIG_VALUE_") {
            command.env_remove(name);
        }
    }
    let mut count = 0;
    for (key, value) in config {
        command
            .env(format!("GIT_CONFIG_KEY_{count}"), key)
            .env(format!("GIT_CONFIG_VALUE_{count}"), value);
        count += 1;
    }
    command.env("GIT_CONFIG_COUNT", count.to_string());
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(entries: &[(&str, &str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (scope, key, value) in entries.iter().chain(&[("command", PROBE.0, PROBE.1)]) {
            out.extend_from_slice(format!("{scope}\0{key}\n{value}\0").as_bytes());
        }
        out
    }

    fn keys(overrides: &[(String, String)]) -> Vec<String> {
        overrides.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    #[test]
    fn repository_filters_protocols_and_hooks_are_switched_off() {
        let got = overrides(&listing(&[
            ("local", "filter.evil.clean", "touch x; cat"),
            ("worktree", "filter.a=b.c.process", "x"),
            ("local", "filter.lfs.smudge", "evil"),
            ("global", "filter.lfs.process", "git-lfs filter-process"),
            ("system", "filter.sys.clean", "trusted"),
            ("local", "protocol.ssh.allow", "always"),
            ("global", "protocol.ext.allow", "always"),
            ("local", "hook.linter.command", "x"),
            ("local", "hook.linter.event", "post-checkout"),
            ("local", "diff.tool.textconv", "x"),
            ("local", "user.name", "x"),
        ]))
        .unwrap();
        assert_eq!(
            keys(&got),
            [
                "filter.evil.clean=",
                "filter.evil.smudge=",
                "filter.evil.process=",
                "filter.evil.required=false",
                "filter.a=b.c.clean=",
                "filter.a=b.c.smudge=",
                "filter.a=b.c.process=",
                "filter.a=b.c.required=false",
                "filter.lfs.clean=",
                "filter.lfs.smudge=",
                "filter.lfs.process=",
                "filter.lfs.required=false",
                "protocol.ssh.allow=never",
                "protocol.ext.allow=never",
                "hook.linter.enabled=false",
            ]
        );
    }

    #[test]
    fn a_git_without_config_variables_or_a_huge_configuration_is_refused() {
        let err = overrides(b"local\0user.name\nx\0").unwrap_err();
        assert!(err.contains("2.31"), "{err}");
        let many: Vec<(String, String)> = (0..MAX_OVERRIDES)
            .map(|i| (format!("protocol.p{i}.allow"), "always".to_owned()))
            .collect();
        let entries: Vec<(&str, &str, &str)> = many
            .iter()
            .map(|(k, v)| ("local", k.as_str(), v.as_str()))
            .collect();
        assert_eq!(overrides(&listing(&entries)).unwrap().len(), MAX_OVERRIDES);
        let mut entries = entries;
        entries.push(("local", "protocol.one-more.allow", "always"));
        let err = overrides(&listing(&entries)).unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }

    #[test]
    fn every_call_carries_the_fixed_settings_and_no_inherited_selection() {
        let command = base_owned(
            Path::new("/repo"),
            [("filter.x.clean".to_owned(), String::new())].into_iter(),
        );
        let env: std::collections::HashMap<_, _> = command
            .get_envs()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.map(|v| v.to_owned())))
            .collect();
        assert_eq!(env["GIT_CONFIG_COUNT"], Some("1".into()));
        assert_eq!(env["GIT_CONFIG_KEY_0"], Some("filter.x.clean".into()));
        assert_eq!(env["GIT_CONFIG_VALUE_0"], Some("".into()));
        assert_eq!(env["GIT_NO_LAZY_FETCH"], Some("1".into()));
        for var in ENV_REMOVED.iter().filter(|v| **v != "GIT_CONFIG_COUNT") {
            assert_eq!(env[*var], None, "{var} is removed");
        }
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(args, ["--literal-pathspecs", "--no-pager", "-C", "/repo"]);
    }

    #[test]
    fn the_installed_git_honours_the_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = command(dir.path(), Duration::from_secs(60)).unwrap();
        command.args(["config", "--get", "core.hookspath"]);
        let out = run(command, Duration::from_secs(60)).unwrap();
        assert_eq!(out, b"/dev/null\n");
    }
}
