//! Checks on what a spawn request asks for: environment variables and working directories.
//!
//! Environment checks are pure. The working-directory check resolves symlinks, so it touches
//! the filesystem and runs on a worker thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Variables that make a program load or run other code (dynamic loader, shells,
/// interpreters, git hooks), plus `PATH`, which decides what program an agent type runs.
/// Refused in spawn requests unless listed in `sessions.allowed_env`.
pub const DANGEROUS_ENV: &[&str] = &[
    "PATH",
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
    "TMUX",
    "TMUX_PANE",
];

/// Prefixes of dangerous variables (`LD_PRELOAD`, `LD_AUDIT`, `DYLD_*`, exported bash
/// functions) and the daemon's own reserved namespace.
pub const DANGEROUS_ENV_PREFIXES: &[&str] = &["LD_", "DYLD_", "BASH_FUNC_", "ORCHESTRA_"];

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

/// Resolves `requested` (symlinks included) and checks that it is an existing directory under
/// one of `roots`. Returns the canonical path.
pub fn resolve_working_dir(requested: &str, roots: &[PathBuf]) -> Result<PathBuf, String> {
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
            "working_dir {shown} resolves to {}, which is outside the allowed roots ({})",
            canonical.display(),
            roots.join(", ")
        ));
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
        let ok = resolve_working_dir(inside.to_str().unwrap(), &roots).unwrap();
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
            assert!(resolve_working_dir(&bad, &roots).is_err(), "{bad}");
        }
    }
}
