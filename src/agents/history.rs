//! Each session's conversation: the messages people typed (`user_message`) and the agent's
//! replies, with timestamps, bounded in number (`sessions.max_history`) and in bytes (each
//! message `sessions.max_history_message_bytes`, cut with a marker past it; each session
//! `sessions.max_history_bytes`; all sessions `sessions.max_history_total_bytes`), and kept on
//! disk so that a restarted daemon still has them (`<state_dir>/history/<session>.jsonl`).
//!
//! The loop keeps each session's recent entries in memory; one writer thread appends every
//! new entry to the session's file, in order, and rewrites the file from the recent
//! entries now and then so it stays bounded. Nothing on the loop touches the disk.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

/// Who said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A person (or another agent) through `user_message`.
    User,
    /// The agent, at the end of its turn.
    Agent,
}

/// One message of a conversation (also the line format of the history file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the session's conversation, from 1.
    pub seq: u64,
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
    /// The `user_message` id (for a user's message) or the id it answers (for a reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<serde_json::Value>,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Bytes an entry is counted for besides its content (seq, role, time, bookkeeping).
const ENTRY_OVERHEAD: usize = 128;

impl Entry {
    /// The bytes this entry is counted for against the history bounds.
    pub fn weight(&self) -> usize {
        let id = match &self.id {
            None => 0,
            Some(serde_json::Value::String(s)) => s.len(),
            Some(other) => other.to_string().len(),
        };
        self.content.len() + id + ENTRY_OVERHEAD
    }
}

/// How much of a session's conversation is kept (from `[sessions]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most entries (`max_history`).
    pub max_entries: usize,
    /// Longest content of one entry (`max_history_message_bytes`); longer is cut.
    pub max_message_bytes: usize,
    /// Most bytes of entries (`max_history_bytes`).
    pub max_bytes: usize,
}

impl Bounds {
    /// The bounds a configuration sets.
    pub fn of(sessions: &crate::config::SessionPolicy) -> Bounds {
        Bounds {
            max_entries: sessions.max_history,
            max_message_bytes: sessions.max_history_message_bytes,
            max_bytes: sessions.max_history_bytes,
        }
    }
}

/// `content` at most `max` bytes long: a longer one keeps its beginning (cut at a character
/// boundary) and ends with a marker that says how long it was.
pub fn cut(content: String, max: usize) -> String {
    if content.len() <= max {
        return content;
    }
    let marker = format!(
        "\n[orchestra: message cut; it had {} bytes, sessions.max_history_message_bytes is {max}]",
        content.len()
    );
    let mut keep = max.saturating_sub(marker.len());
    while !content.is_char_boundary(keep) {
        keep -= 1;
    }
    // A new string: truncating would keep the long one's memory.
    let mut kept = String::with_capacity(keep + marker.len());
    kept.push_str(&content[..keep]);
    kept.push_str(&marker);
    kept
}

/// A session's recent conversation in memory.
#[derive(Debug, Default)]
pub struct History {
    /// The newest entries, oldest first (shared with the writer thread, never copied).
    pub entries: VecDeque<Arc<Entry>>,
    /// The number of the last entry.
    pub last_seq: u64,
    /// The bytes the entries are counted for ([`Entry::weight`]).
    pub bytes: usize,
    /// Bytes appended to the file since it was last rewritten.
    unsaved: usize,
}

impl History {
    /// Adds a message (cut to the bounds' longest), forgetting the oldest past the bounds.
    /// Returns the new entry.
    pub fn push(
        &mut self,
        role: Role,
        content: String,
        id: Option<serde_json::Value>,
        at_ms: u64,
        bounds: Bounds,
    ) -> Arc<Entry> {
        self.last_seq += 1;
        let entry = Arc::new(Entry {
            seq: self.last_seq,
            role,
            content: cut(content, bounds.max_message_bytes),
            id,
            at_ms,
        });
        self.bytes += entry.weight();
        self.unsaved += entry.weight();
        self.entries.push_back(Arc::clone(&entry));
        self.trim(bounds);
        entry
    }

    /// Forgets the oldest entries past the bounds (the newest one always stays).
    fn trim(&mut self, bounds: Bounds) {
        while self.entries.len() > bounds.max_entries.max(1)
            || (self.bytes > bounds.max_bytes && self.entries.len() > 1)
        {
            self.forget_oldest();
        }
    }

    /// Forgets the oldest entry; false if there is none.
    pub fn forget_oldest(&mut self) -> bool {
        match self.entries.pop_front() {
            Some(entry) => {
                self.bytes -= entry.weight();
                true
            }
            None => false,
        }
    }

    /// A history from the lines of a history file: malformed lines are skipped, entries are
    /// put in order, cut, and only the newest within `bounds` kept.
    pub fn parse(text: &str, bounds: Bounds) -> History {
        let mut entries: Vec<Entry> = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        entries.sort_by_key(|e| e.seq);
        entries.dedup_by_key(|e| e.seq);
        let last_seq = entries.last().map_or(0, |e| e.seq);
        let mut history = History {
            last_seq,
            ..History::default()
        };
        for mut entry in entries {
            entry.content = cut(entry.content, bounds.max_message_bytes);
            history.bytes += entry.weight();
            history.entries.push_back(Arc::new(entry));
            history.trim(bounds);
        }
        history
    }

    /// Whether the file should be rewritten from the entries now (every `max_entries`
    /// entries, or once more than `max_bytes` were appended since the last rewrite), so it
    /// never holds much more than the bounds.
    fn compaction_due(&mut self, seq: u64, bounds: Bounds) -> bool {
        let due = (bounds.max_entries > 0 && seq.is_multiple_of(bounds.max_entries as u64))
            || self.unsaved > bounds.max_bytes;
        if due {
            self.unsaved = 0;
        }
        due
    }
}

/// What the writer thread does.
enum Write_ {
    /// Adds one entry at the end of a file.
    Append { path: PathBuf, entry: Arc<Entry> },
    /// Replaces a file with these entries.
    Rewrite {
        path: PathBuf,
        entries: Vec<Arc<Entry>>,
    },
    /// Deletes a file.
    Remove { path: PathBuf },
}

/// Handle on the history writer thread; when dropped, the thread finishes its queue and
/// the drop waits for it.
pub struct HistoryWriter {
    dir: PathBuf,
    tx: Option<Sender<Write_>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HistoryWriter {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl HistoryWriter {
    /// Starts the writer for files under `dir`.
    pub fn start(dir: PathBuf) -> std::io::Result<HistoryWriter> {
        let (tx, rx) = crossbeam_channel::unbounded::<Write_>();
        let base = dir.clone();
        let thread = std::thread::Builder::new()
            .name("history".into())
            .spawn(move || {
                if let Err(e) = crate::create_private_dir(&base) {
                    log::warn!("conversation history is not kept: {e}");
                }
                for write in rx.iter() {
                    let result = match &write {
                        Write_::Append { path, entry } => append(path, entry),
                        Write_::Rewrite { path, entries } => rewrite(path, entries),
                        Write_::Remove { path } => match std::fs::remove_file(path) {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                            _ => Ok(()),
                        },
                    };
                    if let Err(e) = result {
                        log::warn!("conversation history: {e}");
                    }
                }
            })?;
        Ok(HistoryWriter {
            dir,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn send(&self, write: Write_) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(write);
        }
    }

    /// The file of `session_id`.
    pub fn path(&self, session_id: &str) -> PathBuf {
        self.dir.join(format!("{session_id}.jsonl"))
    }

    /// Records `entry` of `session_id`; now and then the file is rewritten from `recent`, so
    /// it never holds much more than `bounds` allow.
    pub fn record(
        &self,
        session_id: &str,
        entry: Arc<Entry>,
        recent: &mut History,
        bounds: Bounds,
    ) {
        let path = self.path(session_id);
        let compact = recent.compaction_due(entry.seq, bounds);
        self.send(Write_::Append {
            path: path.clone(),
            entry,
        });
        if compact {
            let entries = recent.entries.iter().cloned().collect();
            self.send(Write_::Rewrite { path, entries });
        }
    }

    /// Forgets a session's history (it was killed).
    pub fn remove(&self, session_id: &str) {
        self.send(Write_::Remove {
            path: self.path(session_id),
        });
    }

    /// Reads a session's history (at start, before the loop runs).
    pub fn load(&self, session_id: &str, bounds: Bounds) -> History {
        match std::fs::read_to_string(self.path(session_id)) {
            Ok(text) => History::parse(&text, bounds),
            Err(_) => History::default(),
        }
    }
}

impl super::Parts<'_> {
    /// Adds a message to a session's conversation, in memory and on disk.
    pub fn remember(
        &mut self,
        session_id: &str,
        role: Role,
        content: String,
        id: Option<serde_json::Value>,
    ) {
        let bounds = Bounds::of(&self.ctx.config.sessions);
        let Some(agent) = self.agents.registry.get_mut(session_id) else {
            return;
        };
        let at_ms = crate::time::unix_millis(std::time::SystemTime::now());
        let entry = agent.history.push(role, content, id, at_ms, bounds);
        self.agents
            .history
            .record(session_id, entry, &mut agent.history, bounds);
        self.trim_histories();
    }

    /// Bytes of history all sessions keep together.
    pub fn history_bytes(&self) -> usize {
        self.agents
            .registry
            .sorted()
            .iter()
            .map(|a| a.history.bytes)
            .sum()
    }

    /// Keeps all sessions' histories within `sessions.max_history_total_bytes`: forgets the
    /// oldest messages of the session that keeps the most.
    fn trim_histories(&mut self) {
        let max = self.ctx.config.sessions.max_history_total_bytes;
        let mut total = self.history_bytes();
        while total > max {
            let Some(biggest) = self
                .agents
                .registry
                .sorted()
                .into_iter()
                .max_by_key(|a| a.history.bytes)
                .map(|a| a.id.clone())
            else {
                return;
            };
            let Some(agent) = self.agents.registry.get_mut(&biggest) else {
                return;
            };
            let before = agent.history.bytes;
            if !agent.history.forget_oldest() {
                return;
            }
            total -= before - agent.history.bytes;
        }
    }
}

fn append(path: &Path, entry: &Entry) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?
        .write_all(&line)
}

fn rewrite(path: &Path, entries: &[Arc<Entry>]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let temp = path.with_extension("jsonl.tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    for entry in entries {
        let mut line = serde_json::to_vec(entry.as_ref()).map_err(std::io::Error::other)?;
        line.push(b'\n');
        file.write_all(&line)?;
    }
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(max_entries: usize) -> Bounds {
        Bounds {
            max_entries,
            max_message_bytes: 1 << 20,
            max_bytes: 1 << 30,
        }
    }

    #[test]
    fn history_is_bounded_ordered_and_survives_a_bad_line() {
        let mut history = History::default();
        for i in 0..5 {
            history.push(Role::User, format!("m{i}"), None, i, bounds(3));
        }
        assert_eq!(history.entries.len(), 3);
        assert_eq!(history.entries[0].content, "m2");
        assert_eq!(history.last_seq, 5);
        let lines: Vec<String> = history
            .entries
            .iter()
            .rev()
            .map(|e| serde_json::to_string(e.as_ref()).unwrap())
            .chain(["not json".to_string()])
            .collect();
        let parsed = History::parse(&lines.join("\n"), bounds(2));
        assert_eq!(parsed.last_seq, 5);
        let contents: Vec<&str> = parsed.entries.iter().map(|e| e.content.as_str()).collect();
        assert_eq!(contents, ["m3", "m4"]);
    }

    #[test]
    fn the_writer_appends_compacts_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let writer = HistoryWriter::start(dir.path().join("history")).unwrap();
        let mut history = History::default();
        for i in 0..7 {
            let entry = history.push(Role::Agent, format!("r{i}"), None, i, bounds(3));
            writer.record("sess-x-1", entry, &mut history, bounds(3));
        }
        let path = writer.path("sess-x-1");
        drop(writer); // waits until the queue is written
        let text = std::fs::read_to_string(&path).unwrap();
        let loaded = History::parse(&text, bounds(3));
        let contents: Vec<&str> = loaded.entries.iter().map(|e| e.content.as_str()).collect();
        assert_eq!(contents, ["r4", "r5", "r6"]);
        assert!(text.lines().count() <= 4, "compacted: {text}");
    }

    #[test]
    fn long_messages_are_cut_with_a_marker_and_the_session_is_bounded_in_bytes() {
        let bounds = Bounds {
            max_entries: 1000,
            max_message_bytes: 2048,
            max_bytes: 10 * 1024,
        };
        // Multi-byte characters: the cut falls on a character boundary.
        let long = "é".repeat(5000);
        let kept = cut(long.clone(), 2048);
        assert!(kept.len() <= 2048, "{}", kept.len());
        assert!(kept.starts_with("éé"));
        assert!(kept.ends_with("it had 10000 bytes, sessions.max_history_message_bytes is 2048]"));
        assert_eq!(cut("short".into(), 2048), "short");

        let mut history = History::default();
        for i in 0..20 {
            history.push(Role::Agent, long.clone(), Some(i.into()), i, bounds);
            assert!(history.bytes <= bounds.max_bytes, "{}", history.bytes);
        }
        let sum: usize = history.entries.iter().map(|e| e.weight()).sum();
        assert_eq!(history.bytes, sum);
        assert_eq!(history.last_seq, 20);
        assert_eq!(history.entries.back().unwrap().seq, 20);
        assert!(history.entries.len() >= 4, "{}", history.entries.len());
        // The same bounds hold for a history read back from a file of longer lines.
        let text: Vec<String> = (1..=20u64)
            .map(|seq| {
                serde_json::to_string(&Entry {
                    seq,
                    role: Role::User,
                    content: long.clone(),
                    id: None,
                    at_ms: seq,
                })
                .unwrap()
            })
            .collect();
        let parsed = History::parse(&text.join("\n"), bounds);
        assert!(parsed.bytes <= bounds.max_bytes);
        assert!(parsed.entries.iter().all(|e| e.content.len() <= 2048));
        assert_eq!(parsed.entries.back().unwrap().seq, 20);
    }

    #[test]
    fn the_file_is_compacted_by_bytes_too() {
        let dir = tempfile::tempdir().unwrap();
        let writer = HistoryWriter::start(dir.path().join("history")).unwrap();
        let bounds = Bounds {
            max_entries: 1000,
            max_message_bytes: 4096,
            max_bytes: 16 * 1024,
        };
        let mut history = History::default();
        for i in 0..100 {
            let entry = history.push(Role::Agent, "x".repeat(4000), None, i, bounds);
            writer.record("sess-x-2", entry, &mut history, bounds);
        }
        let path = writer.path("sess-x-2");
        drop(writer);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 3 * 16 * 1024, "{size}");
    }
}
