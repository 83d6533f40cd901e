//! The test command run after a task.
//!
//! `run_tests` blocks (call it from a worker thread). Never runs a shell: the test command
//! is an argv.

use super::process;
use crate::panes::text::strip_ansi;
use std::path::Path;

use std::time::Duration;

/// How a test command went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    /// Whether it exited with code 0 within its timeout.
    pub passed: bool,
    /// Exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Whether it overstayed its timeout and was ended.
    pub timed_out: bool,
    /// The end of its output (stdout and stderr interleaved) as plain text, or why it could
    /// not start.
    pub output_tail: String,
}

/// Runs the test command `argv` in `dir` for at most `timeout`, keeping the last
/// `tail_bytes` of its output.
pub fn run_tests(argv: &[String], dir: &Path, timeout: Duration, tail_bytes: usize) -> TestOutcome {
    let failed = |why: String| TestOutcome {
        passed: false,
        exit_code: None,
        signal: None,
        timed_out: false,
        output_tail: why,
    };
    let Some((program, args)) = argv.split_first() else {
        return failed("the test command is empty".into());
    };
    let mut command = crate::environment::command(program);
    command.args(args).current_dir(dir);
    match process::run(&mut command, timeout, tail_bytes) {
        Err(why) => failed(why),
        Ok(out) => {
            // The tail may start inside a multi-byte character; skip its continuation bytes.
            let start = out
                .output
                .iter()
                .take(3)
                .take_while(|&&b| b & 0xC0 == 0x80)
                .count();
            let mut output_tail = strip_ansi(&String::from_utf8_lossy(&out.output[start..]));
            if out.timed_out {
                output_tail.push_str(&format!("\n[test command ended after {timeout:?}]"));
            }
            TestOutcome {
                passed: out.success(),
                exit_code: out.exit_code,
                signal: out.signal,
                timed_out: out.timed_out,
                output_tail,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn passing_and_failing_commands() {
        let dir = tempfile::tempdir().unwrap();
        let t = Duration::from_secs(60);
        let ok = run_tests(
            &argv(&["sh", "-c", "pwd; printf '\\033[32mok\\033[0m\\n'"]),
            dir.path(),
            t,
            4096,
        );
        assert!(
            ok.passed && ok.exit_code == Some(0) && !ok.timed_out,
            "{ok:?}"
        );
        let pwd = dir.path().canonicalize().unwrap();
        assert_eq!(ok.output_tail, format!("{}\nok\n", pwd.display()));
        let bad = run_tests(
            &argv(&["sh", "-c", "echo broken >&2; exit 2"]),
            dir.path(),
            t,
            4096,
        );
        assert!(!bad.passed);
        assert_eq!(bad.exit_code, Some(2));
        assert_eq!(bad.output_tail, "broken\n");
    }

    #[test]
    fn tail_is_bounded_and_valid_text() {
        let dir = tempfile::tempdir().unwrap();
        let script = "i=0; while [ $i -lt 500 ]; do echo ééé$i; i=$((i+1)); done";
        let out = run_tests(
            &argv(&["sh", "-c", script]),
            dir.path(),
            Duration::from_secs(60),
            24,
        );
        assert!(out.passed);
        assert!(out.output_tail.len() <= 24);
        assert!(
            out.output_tail.ends_with("ééé499\n"),
            "{:?}",
            out.output_tail
        );
        assert!(
            !out.output_tail.contains('\u{fffd}'),
            "{:?}",
            out.output_tail
        );
    }

    #[test]
    fn timeouts_and_unstartable_commands_fail() {
        let dir = tempfile::tempdir().unwrap();
        let slow = run_tests(
            &argv(&["sleep", "100"]),
            dir.path(),
            Duration::from_millis(200),
            100,
        );
        assert!(
            !slow.passed && slow.timed_out && slow.signal.is_some(),
            "{slow:?}"
        );
        let missing = run_tests(
            &argv(&["no-such-test-runner"]),
            dir.path(),
            Duration::from_secs(5),
            100,
        );
        assert!(!missing.passed && missing.output_tail.contains("no-such-test-runner"));
        let empty = run_tests(&[], dir.path(), Duration::from_secs(5), 100);
        assert!(!empty.passed && empty.output_tail.contains("empty"));
    }
}
