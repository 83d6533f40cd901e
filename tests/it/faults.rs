//! Faults around the daemon: a full disk under the ticket store, a dead or hanging tmux,
//! shutdown with work in flight. The daemon keeps serving and loses nothing it accepted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::common::{DaemonProcess, Transcript, wait_until};

/// A small tmpfs mounted on a fresh directory (needs root, as CI has), unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("orch-full")
            .tempdir()
            .ok()?;
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A disk that runs full under the ticket store, and gets space back.
///
/// As root (CI), a real 4 MiB tmpfs that a filler file fills up. Where mounting is not
/// allowed, or `ORCHESTRA_TEST_FULL_DISK=fsize` asks for it, the daemon's file-size limit
/// (`RLIMIT_FSIZE`, set with `prlimit`) is lowered to the store's current size, so the
/// store's next growth fails with `EFBIG` just as it would with `ENOSPC`.
enum FullDisk {
    Tmpfs {
        disk: Tmpfs,
        filler: Option<PathBuf>,
    },
    FileSizeLimit {
        dir: tempfile::TempDir,
    },
}

impl FullDisk {
    fn new() -> FullDisk {
        let forced = std::env::var("ORCHESTRA_TEST_FULL_DISK").ok();
        if forced.as_deref() != Some("fsize")
            && let Some(disk) = Tmpfs::mount("4m")
        {
            return FullDisk::Tmpfs { disk, filler: None };
        }
        eprintln!("full disk: simulated with RLIMIT_FSIZE (no tmpfs)");
        FullDisk::FileSizeLimit {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The directory the store lives in.
    fn path(&self) -> &Path {
        match self {
            FullDisk::Tmpfs { disk, .. } => disk.path(),
            FullDisk::FileSizeLimit { dir } => dir.path(),
        }
    }

    /// Leaves the store no room to grow.
    fn fill(&mut self, daemon_pid: u32, store: &Path) {
        match self {
            FullDisk::Tmpfs { disk, filler } => *filler = Some(fill(disk.path())),
            FullDisk::FileSizeLimit { .. } => {
                let size = std::fs::metadata(store).unwrap().len();
                crate::common::prlimit(daemon_pid, &format!("--fsize={size}:"));
            }
        }
    }

    /// Gives the space back.
    fn free(&mut self, daemon_pid: u32) {
        match self {
            FullDisk::Tmpfs { filler, .. } => {
                std::fs::remove_file(filler.take().expect("filled")).unwrap()
            }
            FullDisk::FileSizeLimit { .. } => {
                crate::common::prlimit(daemon_pid, "--fsize=unlimited:")
            }
        }
    }
}

/// Fills the file system holding `dir` with one file, until it reports no space.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        match file.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Also use up the last partial block.
    while file.write_all(&[0u8; 512]).is_ok() {}
    let _ = file.sync_all();
    path
}

#[test]
fn a_full_disk_refuses_delegations_with_503_while_reads_and_streams_go_on_and_nothing_is_lost() {
    let mut disk = FullDisk::new();
    let store = disk.path().join("tasks.redb");
    let mut daemon = DaemonProcess::start_with(&format!(
        "[tasks]\nstore_file = \"{}\"\nmax_running = 1",
        store.display()
    ));
    let token = daemon.control();
    let echo = daemon.spawn(&token, "echo")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    // One task runs (and waits) so that the others stay pending.
    let hold = daemon.dir.path().join("release");
    let task = |n: usize| json!({"agent_type": "task", "task": format!("ANSWER number {n}"), "working_dir": daemon.work});
    let first = daemon.delegate(
        &token,
        &json!({"agent_type": "task", "task": format!("WAITFOR {}", hold.display()), "working_dir": daemon.work}),
    );
    let mut accepted = vec![first["ticket_id"].as_str().unwrap().to_string()];

    disk.fill(daemon.pid(), &store);
    // The store may still have free pages; delegate until it runs out (bounded).
    let mut refused = None;
    for n in 0..3000 {
        let resp = daemon.post("/api/delegate", &token, &task(n));
        match resp.status {
            201 => accepted.push(resp.json()["ticket_id"].as_str().unwrap().to_string()),
            _ => {
                refused = Some(resp);
                break;
            }
        }
    }
    let refused = refused.expect("the full disk refused a delegation");
    refused.assert_error(503, "STORE_UNAVAILABLE");
    assert!(refused.json().get("ticket_id").is_none());
    assert!(refused.header("Retry-After").is_some());

    // Reads and streams keep working on the full disk.
    let list = daemon.get("/api/tasks?limit=1", &token);
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["total"], accepted.len());
    assert_eq!(daemon.get("/api/health", &token).status, 200);
    let mut ws = daemon.ws(&token);
    let mut transcript = Transcript::default();
    transcript.add(&echo, &ws.subscribe(&echo));
    ws.send(json!({"type": "terminal_input", "session_id": echo, "data": "still streaming\r"}));
    transcript.read_until_count(&mut ws, &echo, "still streaming", 2);

    // Space returns: delegations are accepted again and everything accepted is there, also
    // after a restart.
    disk.free(daemon.pid());
    let after = wait_until("a delegation accepted again", || {
        let resp = daemon.post("/api/delegate", &token, &task(9999));
        (resp.status == 201).then(|| resp.json())
    });
    accepted.push(after["ticket_id"].as_str().unwrap().to_string());
    daemon.restart();
    let token = daemon.control();
    let mut stored: Vec<String> = Vec::new();
    loop {
        let page = daemon
            .get(
                &format!("/api/tasks?limit=500&offset={}", stored.len()),
                &token,
            )
            .json();
        assert_eq!(page["total"], accepted.len());
        let tasks = page["tasks"].as_array().unwrap();
        if tasks.is_empty() {
            break;
        }
        stored.extend(
            tasks
                .iter()
                .map(|t: &Value| t["ticket_id"].as_str().unwrap().to_string()),
        );
    }
    stored.sort();
    accepted.sort();
    assert_eq!(stored, accepted, "exactly the accepted tickets survived");
}
