//! Checks on what a spawn request asks for: environment variables and working directories.
//!
//! Environment checks are pure. The working-directory check resolves symlinks, so it touches
//! the filesystem and runs on a worker thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Variables that make a program load or run other code (dynamic loader, shells and their
/// start-up files, interpreters, git's configuration, editors and pagers), plus `PATH`, which
/// decides what program an agent type runs. Refused in spawn requests unless listed in
/// `sessions.allowed_env`.
pub const DANGEROUS_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "XDG_CONFIG_HOME",
    "ZDOTDIR",
    "INPUTRC",
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "IFS",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PYTHONSTARTUP",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONINSPECT",
    "PERL5OPT",
    "PERL5LIB",
    "PERLLIB",
    "PERL5DB",
    "RUBYOPT",
    "RUBYLIB",
    "GCONV_PATH",
    "LOCPATH",
    "HOSTALIASES",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_ASKPASS",
    "GIT_EXEC_PATH",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG",
    "GIT_CONFIG_COUNT",
    "GIT_CONFIG_PARAMETERS",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_EXTERNAL_DIFF",
    "GIT_EDITOR",
    "GIT_SEQUENCE_EDITOR",
    "GIT_PAGER",
    "GIT_PROXY_COMMAND",
    "GIT_TEMPLATE_DIR",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "MANPAGER",
    "LESSOPEN",
    "LESSCLOSE",
    "BROWSER",
    "SSH_ASKPASS",
    "SUDO_ASKPASS",
    "PYTHONWARNINGS",
    "PYTHONBREAKPOINT",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "TMUX",
    "TMUX_PANE",
];

/// Prefixes of dangerous variables (`LD_PRELOAD`, `LD_AUDIT`, `DYLD_*`, exported bash
/// functions, git configuration given in the environment, npm configuration such as
/// `script-shell`) and the daemon's own reserved namespace.
pub const DANGEROUS_ENV_PREFIXES: &[&str] = &[
    "LD_",
    "DYLD_",
    "BASH_FUNC_",
    "GIT_CONFIG_KEY_",
    "GIT_CONFIG_VALUE_",
    "npm_config_",
    "NPM_CONFIG_",
    "ORCHESTRA_",
];

pub use crate::environment::is_env_name;

/// Whether `name` is on the dangerous list.
pub fn is_dangerous_env(name: &str) -> bool {
    DANGEROUS_ENV.contains(&name) || DANGEROUS_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Limits applied to a request's `env`.
#[derive(Debug, Clone)]
pub struct EnvPolicy<'a> {
    /// Dangerous names the operator allowed anyway.
    pub allowed: &'a [String],
    /// Most variables.
    pub max_vars: usize,
    /// Most bytes in one value.
    pub max_value_bytes: usize,
}

/// Checks a request's environment; the error says which variable and why.
pub fn validate_env(env: &BTreeMap<String, String>, policy: &EnvPolicy<'_>) -> Result<(), String> {
    if env.len() > policy.max_vars {
        return Err(format!(
            "env has {} variables; at most {} are allowed",
            env.len(),
            policy.max_vars
        ));
    }
    for (key, value) in env {
        if !is_env_name(key) {
            return Err(format!(
                "env key {} is not a valid variable name (letters, digits and _, not \
                 starting with a digit)",
                crate::shown(key)
            ));
        }
        if is_dangerous_env(key) && !policy.allowed.iter().any(|a| a == key) {
            return Err(format!(
                "env key {} is refused: it can make the agent load or run other code \
                 (allow it with sessions.allowed_env)",
                crate::shown(key)
            ));
        }
        if value.contains('\0') {
            return Err(format!(
                "env value of {} contains a NUL byte",
                crate::shown(key)
            ));
        }
        if value.len() > policy.max_value_bytes {
            return Err(format!(
                "env value of {} is {} bytes; at most {} are allowed",
                crate::shown(key),
                value.len(),
                policy.max_value_bytes
            ));
        }
    }
    Ok(())
}

/// The daemon's own places that no agent may work in: its state directory (token secret,
/// tmux and attach sockets, spawn specs) and the secret file wherever it is configured. The
/// worktrees the daemon makes for tasks may lie inside the state directory and are allowed.
#[derive(Debug, Clone, Default)]
pub struct PrivateDirs {
    /// The state directory.
    pub state_dir: PathBuf,
    /// The HS256 secret file.
    pub secret_file: PathBuf,
    /// Where the daemon makes task worktrees (allowed even inside the state directory).
    pub worktrees: PathBuf,
}

impl PrivateDirs {
    /// The private places of `config`.
    pub fn of(config: &crate::config::Config) -> PrivateDirs {
        PrivateDirs {
            state_dir: config.state_dir.clone(),
            secret_file: config.secret_file(),
            worktrees: config.worktree_dir(),
        }
    }

    /// Why an agent may not work in `dir` (canonical), if it may not.
    fn refuse(&self, dir: &Path) -> Option<String> {
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let state = canonical(&self.state_dir);
        let secret = canonical(&self.secret_file);
        if state.starts_with(dir) || secret.starts_with(dir) {
            return Some(format!(
                "it contains the daemon's state directory {} or its token secret, which an \
                 agent working there could read; use a project directory that does not",
                state.display()
            ));
        }
        if dir.starts_with(&state) && !dir.starts_with(canonical(&self.worktrees)) {
            return Some(format!(
                "it is inside the daemon's state directory {}",
                state.display()
            ));
        }
        None
    }
}

/// Resolves `requested` (symlinks included) and checks that it is an existing directory under
/// one of `roots`, and none of the daemon's [`PrivateDirs`]. Returns the canonical path.
pub fn resolve_working_dir(
    requested: &str,
    roots: &[PathBuf],
    private: &PrivateDirs,
) -> Result<PathBuf, String> {
    let shown = crate::shown(requested);
    if requested.is_empty() {
        return Err("working_dir is empty".into());
    }
    if requested.chars().any(char::is_control) {
        return Err("working_dir contains control characters".into());
    }
    let path = Path::new(requested);
    if !path.is_absolute() {
        return Err(format!("working_dir {shown} must be an absolute path"));
    }
    let canonical = std::fs::canonicalize(path)
        .map_err(|e| format!("working_dir {shown} cannot be used: {}", describe_io(&e)))?;
    if !canonical.is_dir() {
        return Err(format!("working_dir {shown} is not a directory"));
    }
    let inside = roots.iter().any(|root| match std::fs::canonicalize(root) {
        Ok(root) => canonical.starts_with(root),
        Err(_) => false,
    });
    if !inside {
        let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Err(format!(
            "working_dir {shown} resolves to {}, which is outside the allowed roots ({}); \
             add its directory to sessions.allowed_roots in the config to allow it",
            canonical.display(),
            roots.join(", ")
        ));
    }
    if let Some(why) = private.refuse(&canonical) {
        return Err(format!("working_dir {shown} is refused: {why}"));
    }
    if canonical.to_str().is_none() {
        return Err(format!(
            "working_dir {shown} is not valid UTF-8 once resolved"
        ));
    }
    Ok(canonical)
}

fn describe_io(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "it does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> EnvPolicy<'static> {
        EnvPolicy {
            allowed: &[],
            max_vars: 4,
            max_value_bytes: 16,
        }
    }

    #[test]
    fn env_names() {
        for good in ["A", "_x", "PROJECT_NAME", "a1"] {
            assert!(is_env_name(good), "{good}");
        }
        for bad in ["", "1A", "A-B", "A=B", "A B", "É", "A\0"] {
            assert!(!is_env_name(bad), "{bad}");
        }
    }

    #[test]
    fn env_policy() {
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(validate_env(&env(&[("PROJECT", "x;$(y)#{z}")]), &policy()).is_ok());
        for bad in [
            env(&[("LD_PRELOAD", "/x.so")]),
            env(&[("LD_AUDIT", "/x.so")]),
            env(&[("ZDOTDIR", "/tmp/x")]),
            env(&[("GIT_CONFIG_COUNT", "1")]),
            env(&[("GIT_CONFIG_KEY_0", "core.fsmonitor")]),
            env(&[("GIT_DIR", "/tmp/x")]),
            env(&[("EDITOR", "/tmp/x")]),
            env(&[("npm_config_script_shell", "/tmp/x")]),
            env(&[("BASH_ENV", "/x")]),
            env(&[("NODE_OPTIONS", "--require /x")]),
            env(&[("PATH", "/tmp")]),
            env(&[("BASH_FUNC_x%%", "() { :; }")]),
            env(&[("ORCHESTRA_SESSION_ID", "x")]),
            env(&[("A", "a\0b")]),
            env(&[("A", &"x".repeat(17))]),
            env(&[("A", ""), ("B", ""), ("C", ""), ("D", ""), ("E", "")]),
        ] {
            assert!(validate_env(&bad, &policy()).is_err(), "{bad:?}");
        }
        let allowed = ["NODE_OPTIONS".to_string()];
        let policy = EnvPolicy {
            allowed: &allowed,
            ..policy()
        };
        assert!(validate_env(&env(&[("NODE_OPTIONS", "--x")]), &policy).is_ok());
    }

    #[test]
    fn working_dirs_must_resolve_inside_a_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let inside = root.path().join("project");
        std::fs::create_dir(&inside).unwrap();
        std::fs::write(root.path().join("file"), b"").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        let roots = [root.path().to_path_buf()];
        let elsewhere = tempfile::tempdir().unwrap();
        let private = PrivateDirs {
            state_dir: elsewhere.path().join("state"),
            secret_file: elsewhere.path().join("state/jwt_secret"),
            worktrees: elsewhere.path().join("state/worktrees"),
        };
        let ok = resolve_working_dir(inside.to_str().unwrap(), &roots, &private).unwrap();
        assert_eq!(ok, std::fs::canonicalize(&inside).unwrap());
        let dotdot = format!("{}/project/../../", root.path().display());
        for bad in [
            "relative/path".to_string(),
            String::new(),
            format!("{}/missing", root.path().display()),
            format!("{}/file", root.path().display()),
            format!("{}/escape", root.path().display()),
            dotdot,
            format!("{}/pro\nject", root.path().display()),
        ] {
            assert!(
                resolve_working_dir(&bad, &roots, &private).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn working_dirs_that_hold_or_sit_in_the_state_dir_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let home = std::fs::canonicalize(root.path()).unwrap();
        let state = home.join(".local/state/orchestra");
        let worktree = state.join("worktrees/task-1");
        let project = home.join("project");
        let secret_dir = home.join("keys");
        for dir in [&worktree, &project, &secret_dir] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let private = PrivateDirs {
            state_dir: state.clone(),
            secret_file: secret_dir.join("jwt_secret"),
            worktrees: state.join("worktrees"),
        };
        let roots = [home.clone()];
        let check = |dir: &Path| resolve_working_dir(dir.to_str().unwrap(), &roots, &private);
        assert_eq!(check(&project).unwrap(), project);
        assert_eq!(
            check(&worktree).unwrap(),
            worktree,
            "the daemon's worktrees"
        );
        for refused in [
            &home,
            &home.join(".local"),
            &state,
            &state.join("worktrees/.."),
        ] {
            let error = check(refused).unwrap_err();
            assert!(error.contains("state directory"), "{refused:?}: {error}");
        }
        let error = check(&secret_dir).unwrap_err();
        assert!(error.contains("token secret"), "{error}");
    }
}
