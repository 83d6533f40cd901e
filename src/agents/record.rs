//! Each agent's record on disk (`<state_dir>/agents/<session>.json`): what the daemon needs
//! to start an agent again after its terminal is gone, as after a reboot or when the tmux
//! server or a pty holder was killed: its type, working directory, the environment its
//! spawn asked for, its creation time and the CLI's own session id (reported by its hooks),
//! which the type's `resume_args` hand back to the CLI.
//!
//! Records are written for sessions spawned through the API (a delegated task's session is
//! the ticket's, which knows what to do after a restart). One writer thread writes them in
//! order (a removal never overtakes the write before it), so nothing on the loop touches the
//! disk; reading them happens once at start, before the loop runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

/// What the daemon keeps of one agent so that it can start it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Format version of this record.
    pub v: u32,
    /// The API's session id.
    pub id: String,
    /// Agent type name.
    pub agent_type: String,
    /// Canonical working directory.
    pub working_dir: String,
    /// Creation time, milliseconds since the Unix epoch (kept across resumes).
    pub created_ms: u64,
    /// The environment the spawn request asked for (already validated then).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The CLI's own session id, once its hooks reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli_session: Option<String>,
    /// Which backend ran it (`tmux` or `pty`).
    pub backend: String,
}

impl AgentRecord {
    /// The current format version.
    pub const VERSION: u32 = 1;
}

/// The placeholder in an agent type's `resume_args` that stands for the CLI's session id.
pub const CLI_SESSION_PLACEHOLDER: &str = "{cli_session}";

/// Longest CLI session id the daemon keeps.
const MAX_CLI_SESSION_BYTES: usize = 128;

/// Whether `text` may be a CLI's session id: 1 to 128 letters, digits, `-`, `_`, `.` or `:`,
/// not starting with `-` (it becomes one argument of the CLI's command line, never an
/// option of its own).
pub fn is_cli_session_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_CLI_SESSION_BYTES
        && !text.starts_with('-')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// How an agent is started again: its type's `command` with `resume_args` after the
/// program, `{cli_session}` replaced by the CLI's session id. `None` when the type has no
/// resume arguments or they need an id the daemon never learnt: the agent then starts
/// fresh in its old directory.
pub fn resume_argv(
    command: &[String],
    resume_args: &[String],
    cli_session: Option<&str>,
) -> Option<Vec<String>> {
    let (program, rest) = command.split_first()?;
    if resume_args.is_empty() {
        return None;
    }
    let needs_id = resume_args
        .iter()
        .any(|a| a.contains(CLI_SESSION_PLACEHOLDER));
    let id = match cli_session {
        Some(id) if is_cli_session_id(id) => id,
        _ if needs_id => return None,
        _ => "",
    };
    let mut argv = vec![program.clone()];
    argv.extend(
        resume_args
            .iter()
            .map(|a| a.replace(CLI_SESSION_PLACEHOLDER, id)),
    );
    argv.extend(rest.iter().cloned());
    Some(argv)
}

/// Reads every record in `dir`, oldest first; files that are not records are left alone
/// with a warning.
pub fn load_all(dir: &Path) -> Vec<AgentRecord> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut records = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let parsed = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<AgentRecord>(&bytes).ok())
            .filter(|r| r.v == AgentRecord::VERSION && path == record_path(dir, &r.id));
        match parsed {
            Some(record) => records.push(record),
            None => log::warn!("{}: not an agent record; ignored", path.display()),
        }
    }
    records.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    records
}

/// Where session `id`'s record lives in `dir`.
pub fn record_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

enum Write {
    Save(AgentRecord),
    Remove(String),
}

/// Writes records on its own thread, in the order they were asked for.
pub struct RecordWriter {
    dir: PathBuf,
    tx: Option<Sender<Write>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RecordWriter {
    /// Starts the writer thread for records in `dir` (created private when first needed).
    pub fn start(dir: PathBuf) -> std::io::Result<RecordWriter> {
        let (tx, rx) = crossbeam_channel::unbounded::<Write>();
        let thread_dir = dir.clone();
        let thread = std::thread::Builder::new()
            .name("agent-records".into())
            .spawn(move || {
                for write in rx {
                    let result = match &write {
                        Write::Save(record) => write_now(&thread_dir, record),
                        Write::Remove(id) => {
                            match std::fs::remove_file(record_path(&thread_dir, id)) {
                                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                                _ => Ok(()),
                            }
                        }
                    };
                    if let Err(e) = result {
                        let id = match &write {
                            Write::Save(record) => &record.id,
                            Write::Remove(id) => id,
                        };
                        log::warn!("{id}: cannot write its agent record: {e}");
                    }
                }
            })?;
        Ok(RecordWriter {
            dir,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// The directory the records are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes (or replaces) `record`.
    pub fn save(&self, record: AgentRecord) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Write::Save(record));
        }
    }

    /// Removes session `id`'s record.
    pub fn remove(&self, id: &str) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Write::Remove(id.to_string()));
        }
    }

    /// Writes what is queued and stops the thread.
    pub fn close(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RecordWriter {
    /// A daemon that stops writes the records it was asked to first.
    fn drop(&mut self) {
        self.finish();
    }
}

/// Writes `record` whole or not at all, now (blocking: a worker's or the writer thread's
/// job): a private temporary file renamed over the old one.
pub fn write_now(dir: &Path, record: &AgentRecord) -> std::io::Result<()> {
    crate::create_private_dir(dir).map_err(std::io::Error::other)?;
    let path = record_path(dir, &record.id);
    let temporary = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    super::manager::write_private(&temporary, &bytes)?;
    std::fs::rename(&temporary, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cli_session_ids_are_plain_words_that_cannot_be_options() {
        for good in ["0f9c2d4e-1b2a-4c3d-9e8f-001122334455", "a", "x_y.z:1"] {
            assert!(is_cli_session_id(good), "{good}");
        }
        let long = "a".repeat(129);
        for bad in [
            "",
            "-rf",
            "--resume",
            "a b",
            "a;b",
            "a/b",
            "ä",
            long.as_str(),
        ] {
            assert!(!is_cli_session_id(bad), "{bad}");
        }
    }

    #[test]
    fn resume_arguments_follow_the_program_with_the_id_in_place() {
        let claude = argv(&["claude", "--permission-mode", "default"]);
        let resume = argv(&["--resume", CLI_SESSION_PLACEHOLDER]);
        assert_eq!(
            resume_argv(&claude, &resume, Some("abc-1")),
            Some(argv(&[
                "claude",
                "--resume",
                "abc-1",
                "--permission-mode",
                "default"
            ]))
        );
        // Without the id (or with one that is not an id) there is nothing to resume.
        assert_eq!(resume_argv(&claude, &resume, None), None);
        assert_eq!(resume_argv(&claude, &resume, Some("--evil")), None);
        // Arguments that need no id work without one; no arguments: nothing to resume.
        let last = argv(&["resume", "--last"]);
        assert_eq!(
            resume_argv(&argv(&["codex"]), &last, None),
            Some(argv(&["codex", "resume", "--last"]))
        );
        assert_eq!(resume_argv(&claude, &[], Some("abc")), None);
    }

    #[test]
    fn records_are_written_in_order_and_read_back_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let records = dir.path().join("agents");
        let writer = RecordWriter::start(records.clone()).unwrap();
        let record = |id: &str, created_ms| AgentRecord {
            v: AgentRecord::VERSION,
            id: id.into(),
            agent_type: "claude".into(),
            working_dir: "/w".into(),
            created_ms,
            env: BTreeMap::from([("K".into(), "v".into())]),
            cli_session: Some("s-1".into()),
            backend: "tmux".into(),
        };
        writer.save(record("sess-claude-b", 2));
        writer.save(record("sess-claude-a", 1));
        writer.save(record("sess-claude-gone", 3));
        writer.remove("sess-claude-gone");
        std::fs::create_dir_all(&records).unwrap();
        std::fs::write(records.join("junk.json"), "{").unwrap();
        writer.close();
        let ids: Vec<String> = load_all(&records).into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["sess-claude-a", "sess-claude-b"]);
        assert_eq!(load_all(&records)[0], record("sess-claude-a", 1));
    }
}
