//! An agent's process tree from /proc: membership, memory, CPU time, and termination.
//!
//! Reading /proc and waiting for processes block, so these run on worker threads. Parsing is
//! pure and unit-tested.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// The fields of `/proc/<pid>/stat` the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Session id (a pane's program is a session leader, so its children share its pid here).
    pub sid: u32,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let (head, rest) = text.rsplit_once(')')?;
    let pid = head.split_once('(')?.0.trim().parse().ok()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 of proc(5) (state).
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(ProcStat {
        pid,
        ppid: field(4)? as u32,
        sid: field(6)? as u32,
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
        rss_pages: field(24)?,
    })
}

/// Every process currently visible in /proc.
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|text| parse_stat(&text))
        .collect()
}

/// The tree of `root`: itself, every process in its session, and all their descendants
/// (which catches children that started their own session).
pub fn tree(root: u32, processes: &[ProcStat]) -> Vec<ProcStat> {
    // Pid 0 (the kernel: its threads have session 0) and init are never an agent's root.
    if root <= 1 {
        return Vec::new();
    }
    let mut members: HashSet<u32> = processes
        .iter()
        .filter(|p| p.pid == root || p.sid == root)
        .map(|p| p.pid)
        .collect();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in processes {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut stack: Vec<u32> = members.iter().copied().collect();
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            if members.insert(child) {
                stack.push(child);
            }
        }
    }
    processes
        .iter()
        .filter(|p| members.contains(&p.pid))
        .copied()
        .collect()
}

/// Resource use of a process tree at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Resident memory of the whole tree, in bytes.
    pub rss_bytes: u64,
    /// CPU time of the living members, in clock ticks.
    pub cpu_ticks: u64,
    /// When the sample was taken.
    pub at: Instant,
    /// Average CPU use of the root since it started, in percent of one core (used when there
    /// is no earlier sample to compare with).
    pub lifetime_cpu_percent: f64,
}

/// Samples the tree of `root`.
pub fn usage(root: u32) -> Usage {
    let processes = all_processes();
    let members = tree(root, &processes);
    let page = crate::sys::page_size();
    let ticks_per_second = crate::sys::clock_ticks_per_second() as f64;
    let rss_bytes = members.iter().map(|p| p.rss_pages * page).sum();
    let cpu_ticks = members.iter().map(|p| p.cpu_ticks).sum();
    let lifetime_cpu_percent = members
        .iter()
        .find(|p| p.pid == root)
        .and_then(|p| {
            let uptime: f64 = std::fs::read_to_string("/proc/uptime")
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            let alive = uptime - p.start_ticks as f64 / ticks_per_second;
            (alive > 0.0).then(|| cpu_ticks as f64 / ticks_per_second / alive * 100.0)
        })
        .unwrap_or(0.0);
    Usage {
        rss_bytes,
        cpu_ticks,
        at: Instant::now(),
        lifetime_cpu_percent,
    }
}

/// CPU use between two samples of the same tree, in percent of one core.
pub fn cpu_percent(earlier: &Usage, later: &Usage) -> f64 {
    let seconds = later.at.saturating_duration_since(earlier.at).as_secs_f64();
    if seconds <= 0.0 {
        return later.lifetime_cpu_percent;
    }
    let ticks = later.cpu_ticks.saturating_sub(earlier.cpu_ticks) as f64;
    ticks / crate::sys::clock_ticks_per_second() as f64 / seconds * 100.0
}

/// Ends the tree of `root`: SIGHUP and SIGTERM (and SIGCONT, so stopped members can act on
/// them) to every member, then SIGKILL to whatever is left after `grace`. Blocks up to
/// `grace` plus a short reaping wait. Returns how many processes needed SIGKILL.
pub fn terminate_tree(root: u32, grace: Duration) -> usize {
    // No agent is pid 0 (the children of 0 are init and the kernel's threads) or init.
    if root <= 1 {
        return 0;
    }
    let mut members: Vec<u32> = tree(root, &all_processes()).iter().map(|p| p.pid).collect();
    if members.is_empty() {
        return 0;
    }
    // The root first: if its children went first, it could see them die and exit 0 (or
    // start new ones) before its own signal arrived.
    members.sort_by_key(|&pid| pid != root);
    for &pid in &members {
        for signal in [libc::SIGHUP, libc::SIGTERM, libc::SIGCONT] {
            let _ = crate::sys::kill(pid, signal);
        }
    }
    let deadline = Instant::now() + grace;
    let alive = |pids: &[u32]| {
        pids.iter()
            .copied()
            .filter(|&p| is_running(p))
            .collect::<Vec<_>>()
    };
    let mut remaining = alive(&members);
    // A short sleep between checks is fine here: this is a worker thread, and processes of
    // other users' trees give us no event to wait on.
    while !remaining.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        remaining = alive(&remaining);
    }
    // Anything still alive, plus children spawned meanwhile, is killed outright.
    let mut stubborn: HashSet<u32> = remaining.into_iter().collect();
    if !stubborn.is_empty() {
        stubborn.extend(tree(root, &all_processes()).iter().map(|p| p.pid));
    }
    let mut stubborn: Vec<u32> = stubborn.into_iter().collect();
    stubborn.sort_by_key(|&pid| pid != root);
    for &pid in &stubborn {
        let _ = crate::sys::kill(pid, libc::SIGKILL);
    }
    stubborn.len()
}

/// Whether `pid` exists and is not a zombie.
fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => text
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        let text = "4242 (my (weird) prog) S 1 4242 4242 34816 4242 4194560 100 0 0 0 \
                    7 3 0 0 20 0 1 0 123456 1000000 250 18446744073709551615";
        let stat = parse_stat(text).unwrap();
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.sid, 4242);
        assert_eq!(stat.cpu_ticks, 10);
        assert_eq!(stat.start_ticks, 123456);
        assert_eq!(stat.rss_pages, 250);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn tree_follows_session_and_parents() {
        let p = |pid, ppid, sid| ProcStat {
            pid,
            ppid,
            sid,
            cpu_ticks: 1,
            start_ticks: 0,
            rss_pages: 1,
        };
        let processes = [
            p(10, 1, 10),  // root, session leader
            p(11, 10, 10), // child in the session
            p(12, 11, 12), // grandchild that called setsid
            p(13, 12, 12), // its child
            p(20, 1, 20),  // unrelated
            p(21, 1, 10),  // reparented to init but still in the session
        ];
        let mut pids: Vec<u32> = tree(10, &processes).iter().map(|p| p.pid).collect();
        pids.sort();
        assert_eq!(pids, [10, 11, 12, 13, 21]);
    }

    #[test]
    fn samples_and_terminates_a_real_tree() {
        use std::io::BufRead;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("trap '' TERM HUP; sleep 30 & echo ready; sleep 30; wait")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the traps are set and the background child exists.
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        let pid = child.id();
        let usage = usage(pid);
        assert!(usage.rss_bytes > 0);
        // The shell ignores SIGTERM and SIGHUP, so the grace period runs out and SIGKILL ends it.
        let killed = terminate_tree(pid, Duration::from_millis(200));
        assert!(killed >= 1);
        let status = child.wait().unwrap();
        assert!(!status.success());
    }
}
