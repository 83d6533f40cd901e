//! Runs one command to completion with a deadline and bounded output capture, and ends the
//! command's whole process tree when it overstays or leaves background processes behind.
//!
//! Blocks the calling (worker) thread. Never runs a shell or interprets arguments: callers
//! hand in a prepared [`Command`] built from an argv.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

/// Most bytes of standard output kept in [`CommandOutcome::stdout`].
pub const STDOUT_CAP: usize = 64 << 20;
/// Time the remaining processes get between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long output is still read after the command ended and its leftovers were signalled
/// (a process that left the process group may keep the pipe open forever).
const DRAIN: Duration = Duration::from_secs(2);
/// How often the exit status is checked when no pidfd is available.
const POLL: Duration = Duration::from_millis(50);

/// How a command ended and what it printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutcome {
    /// Exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Whether it overstayed its timeout and was ended.
    pub timed_out: bool,
    /// Standard output and error interleaved as they arrived; only the last `keep_bytes`.
    pub output: Vec<u8>,
    /// Standard output alone, from the start, up to [`STDOUT_CAP`] bytes.
    pub stdout: Vec<u8>,
    /// Whether `stdout` was cut at [`STDOUT_CAP`].
    pub stdout_truncated: bool,
}

impl CommandOutcome {
    /// Whether the command exited with code 0 within its timeout.
    pub fn success(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }
}

enum Event {
    Output { stdout: bool, bytes: Vec<u8> },
    Closed,
    Exited,
}

/// Runs `command` (stdin null, stdout and stderr captured, in a new process group) for at
/// most `timeout`. When the command ends, processes it left running in its group are ended
/// too; on timeout the whole tree is ended and `timed_out` is set. `Err` only when it cannot
/// be started.
pub fn run(
    command: &mut Command,
    timeout: Duration,
    keep_bytes: usize,
) -> Result<CommandOutcome, String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = spawn_in_own_group(command, &program)?;
    let pid = child.id();
    let deadline = Instant::now().checked_add(timeout);
    let (tx, rx) = crossbeam_channel::bounded::<Event>(64);
    let watched = start_readers(&mut child, &tx).map(|open| (open, start_exit_waiter(pid, &tx)));
    let (open, poll) = match watched {
        Ok(watched) => watched,
        Err(e) => {
            end_tree(pid, Duration::ZERO);
            let _ = child.wait();
            return Err(format!("cannot start a thread for {program}: {e}"));
        }
    };
    let watch = Watch {
        child,
        pid,
        rx,
        open,
        poll,
        deadline,
    };
    Ok(watch.collect(keep_bytes))
}

/// Starts `command` with stdin null, stdout and stderr piped, in a process group of its own;
/// the error names `program` and says why (a missing directory, a missing program).
fn spawn_in_own_group(command: &mut Command, program: &str) -> Result<Child, String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let missing_dir = command
        .get_current_dir()
        .filter(|d| !d.is_dir())
        .map(Path::to_owned);
    command.spawn().map_err(|e| match (e.kind(), missing_dir) {
        (_, Some(dir)) => format!("cannot start {program}: no directory {}", dir.display()),
        (std::io::ErrorKind::NotFound, _) => format!("cannot start {program}: program not found"),
        _ => format!("cannot start {program}: {e}"),
    })
}

/// Starts a thread per captured stream of `child` that sends what it reads, then `Closed`;
/// returns how many started, or the error that stopped the first one that did not.
fn start_readers(child: &mut Child, tx: &Sender<Event>) -> std::io::Result<usize> {
    let streams: [(bool, Option<Box<dyn Read + Send>>); 2] = [
        (true, child.stdout.take().map(|s| Box::new(s) as _)),
        (false, child.stderr.take().map(|s| Box::new(s) as _)),
    ];
    let mut open = 0;
    for (stdout, stream) in streams {
        let Some(mut stream) = stream else {
            continue;
        };
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("task-output".into())
            .spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let bytes = buf[..n].to_vec();
                            if tx.send(Event::Output { stdout, bytes }).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = tx.send(Event::Closed);
            })?;
        open += 1;
    }
    Ok(open)
}

/// Starts a thread that sends `Exited` when `pid` exits, woken by a pidfd. Returns the
/// interval at which the exit status must be polled instead, when that is not possible.
fn start_exit_waiter(pid: u32, tx: &Sender<Event>) -> Option<Duration> {
    let Ok(fd) = crate::sys::pidfd_open(pid) else {
        return Some(POLL);
    };
    let tx = tx.clone();
    let waiter = std::thread::Builder::new()
        .name("task-wait".into())
        .spawn(move || {
            while let Ok(false) = crate::sys::wait_readable(fd.as_raw_fd(), KILL_GRACE) {}
            let _ = tx.send(Event::Exited);
        });
    waiter.is_err().then_some(POLL)
}

/// A started command and what tells us about it: its readers' and waiter's events.
struct Watch {
    child: Child,
    pid: u32,
    rx: Receiver<Event>,
    /// Readers that have not yet sent `Closed`.
    open: usize,
    /// How often to check the exit status when no event would tell us.
    poll: Option<Duration>,
    /// When the command overstays; `None` when the timeout cannot be represented.
    deadline: Option<Instant>,
}

impl Watch {
    /// Reads output until the command has exited and its streams are closed (or the drain
    /// time after its exit is up), ending its tree on exit and on timeout; keeps the last
    /// `keep_bytes` of the interleaved output.
    fn collect(mut self, keep_bytes: usize) -> CommandOutcome {
        let mut out = CommandOutcome::default();
        let mut status: Option<ExitStatus> = None;
        let mut drain_until: Option<Instant> = None;
        loop {
            if status.is_none()
                && let Ok(Some(exited)) = self.child.try_wait()
            {
                status = Some(exited);
                end_tree(self.pid, KILL_GRACE);
                drain_until = Some(Instant::now() + DRAIN);
            }
            if status.is_some() && self.open == 0 {
                break;
            }
            let now = Instant::now();
            let limit = drain_until.or(self.deadline);
            if limit.is_some_and(|limit| now >= limit) {
                if status.is_some() {
                    break; // Only escaped processes still hold the pipe; stop reading.
                }
                out.timed_out = true;
                end_tree(self.pid, KILL_GRACE);
                status = self.child.wait().ok();
                drain_until = Some(Instant::now() + DRAIN);
                continue;
            }
            let wait = limit.map_or(Duration::from_secs(3600), |limit| limit - now);
            match self
                .rx
                .recv_timeout(self.poll.map_or(wait, |poll| poll.min(wait)))
            {
                Ok(Event::Output { stdout, bytes }) => out.record(stdout, &bytes, keep_bytes),
                Ok(Event::Closed) => self.open -= 1,
                Ok(Event::Exited) | Err(_) => {}
            }
        }
        if out.output.len() > keep_bytes {
            out.output.drain(..out.output.len() - keep_bytes);
        }
        out.exit_code = status.and_then(|s| s.code());
        out.signal = status.and_then(|s| s.signal());
        out
    }
}

impl CommandOutcome {
    /// Appends a chunk read from stdout (`stdout`) or stderr: to `stdout` up to its cap, and
    /// to the interleaved `output`, trimmed now and then to about `keep_bytes`.
    fn record(&mut self, stdout: bool, bytes: &[u8], keep_bytes: usize) {
        if stdout {
            let room = STDOUT_CAP - self.stdout.len();
            self.stdout_truncated |= bytes.len() > room;
            self.stdout
                .extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        self.output.extend_from_slice(bytes);
        if self.output.len() > keep_bytes.saturating_mul(2).max(1 << 16) {
            self.output.drain(..self.output.len() - keep_bytes);
        }
    }
}

/// One process as /proc shows it.
struct Proc {
    pid: u32,
    ppid: u32,
    pgrp: u32,
    zombie: bool,
}

fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            let text = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // Fields after the command name: state, ppid, pgrp, ...
            let mut fields = text.rsplit_once(')')?.1.split_whitespace();
            let zombie = fields.next()? == "Z";
            let ppid = fields.next()?.parse().ok()?;
            let pgrp = fields.next()?.parse().ok()?;
            Some(Proc {
                pid,
                ppid,
                pgrp,
                zombie,
            })
        })
        .collect()
}

/// Living members of the tree of `root`: its process group (orphaned background jobs
/// included) and every descendant of a member (children that moved to another group).
fn living_members(root: u32) -> Vec<u32> {
    let all = processes();
    let mut members: Vec<u32> = all
        .iter()
        .filter(|p| p.pgrp == root)
        .map(|p| p.pid)
        .collect();
    let mut next = 0;
    while next < members.len() {
        let parent = members[next];
        next += 1;
        for p in all.iter().filter(|p| p.ppid == parent) {
            if !members.contains(&p.pid) {
                members.push(p.pid);
            }
        }
    }
    let living = |pid: &u32| all.iter().any(|p| p.pid == *pid && !p.zombie);
    members.into_iter().filter(living).collect()
}

/// Ends the tree of `root` (our child, so its pid stays reserved until we reap it): SIGTERM
/// and SIGCONT, then SIGKILL to whatever is still alive after `grace`.
fn end_tree(root: u32, grace: Duration) {
    let mut members = living_members(root);
    for &pid in &members {
        for signal in [libc::SIGTERM, libc::SIGCONT] {
            let _ = crate::sys::kill(pid, signal);
        }
    }
    let deadline = Instant::now() + grace;
    // A short sleep between checks is fine on a worker thread: other processes' exits give
    // us nothing to wait on.
    while !members.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        members = living_members(root);
    }
    for pid in living_members(root) {
        let _ = crate::sys::kill(pid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        command
    }

    /// Waits (event-driven, through a pidfd) until `pid` has exited; true when it did.
    fn exits(pid: u32) -> bool {
        match crate::sys::pidfd_open(pid) {
            Err(_) => true,
            Ok(fd) => crate::sys::wait_readable(fd.as_raw_fd(), Duration::from_secs(30)).unwrap(),
        }
    }

    fn first_pid(out: &CommandOutcome) -> u32 {
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().next().unwrap().trim().parse().unwrap()
    }

    #[test]
    fn reports_exit_code_and_both_streams() {
        let out = run(
            &mut sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(30),
            1024,
        )
        .unwrap();
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.signal, None);
        assert!(!out.timed_out && !out.success());
        assert_eq!(out.stdout, b"out\n");
        let text = String::from_utf8_lossy(&out.output);
        assert!(text.contains("out\n") && text.contains("err\n"), "{text}");
        assert!(
            run(&mut sh("true"), Duration::from_secs(30), 0)
                .unwrap()
                .success()
        );
    }

    #[test]
    fn timeout_ends_the_whole_tree() {
        let mut command = sh("sleep 100 & echo $!; sleep 100");
        let out = run(&mut command, Duration::from_millis(300), 1024).unwrap();
        assert!(out.timed_out && !out.success());
        assert_eq!(out.exit_code, None);
        assert!(out.signal.is_some());
        assert!(exits(first_pid(&out)), "the background sleep survived");
    }

    #[test]
    fn background_child_holding_the_pipe_does_not_block() {
        let mut command = sh("sleep 100 & echo $!");
        let out = run(&mut command, Duration::from_secs(600), 1024).unwrap();
        assert!(out.success(), "{out:?}");
        assert!(exits(first_pid(&out)), "the background sleep survived");
    }

    #[test]
    fn output_tail_is_bounded_and_stdout_complete() {
        let script = "i=0; while [ $i -lt 3000 ]; do echo line$i; echo e$i >&2; i=$((i+1)); done";
        let out = run(&mut sh(script), Duration::from_secs(60), 100).unwrap();
        assert!(out.success());
        assert!(out.output.len() <= 100);
        assert!(String::from_utf8_lossy(&out.output).ends_with("e2999\n"));
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(stdout.lines().count(), 3000);
        assert!(stdout.starts_with("line0\n") && stdout.ends_with("line2999\n"));
    }

    #[test]
    fn large_output_on_both_streams_does_not_deadlock() {
        let script = "head -c 1000000 /dev/zero >&2; head -c 1000000 /dev/zero";
        let out = run(&mut sh(script), Duration::from_secs(60), 10).unwrap();
        assert!(out.success());
        assert_eq!(out.stdout.len(), 1_000_000);
        assert_eq!(out.output.len(), 10);
    }

    #[test]
    fn missing_program_is_named() {
        let err = run(
            &mut Command::new("no-such-program-xyz"),
            Duration::from_secs(5),
            10,
        )
        .unwrap_err();
        assert!(
            err.contains("no-such-program-xyz") && err.contains("not found"),
            "{err}"
        );
        let mut command = Command::new("true");
        command.current_dir("/no/such/dir");
        let err = run(&mut command, Duration::from_secs(5), 10).unwrap_err();
        assert!(err.contains("no directory /no/such/dir"), "{err}");
    }
}
