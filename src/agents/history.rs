//! Each session's conversation: the messages people typed (`user_message`) and the agent's
//! replies, with timestamps, bounded (`sessions.max_history`), and kept on disk so that a
//! restarted daemon still has them (`<state_dir>/history/<session>.jsonl`).
//!
//! The loop keeps each session's recent entries in memory; one writer thread appends every
//! new entry to the session's file, in order, and rewrites the file from the recent
//! entries now and then so it stays bounded. Nothing on the loop touches the disk.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// A session's recent conversation in memory.
#[derive(Debug, Default)]
pub struct History {
    /// The newest entries, oldest first.
    pub entries: VecDeque<Entry>,
    /// The number of the last entry.
    pub last_seq: u64,
}

impl History {
    /// Adds a message, forgetting the oldest past `max`. Returns the new entry.
    pub fn push(
        &mut self,
        role: Role,
        content: String,
        id: Option<serde_json::Value>,
        at_ms: u64,
        max: usize,
    ) -> Entry {
        self.last_seq += 1;
        let entry = Entry {
            seq: self.last_seq,
            role,
            content,
            id,
            at_ms,
        };
        self.entries.push_back(entry.clone());
        while self.entries.len() > max {
            self.entries.pop_front();
        }
        entry
    }

    /// A history from the lines of a history file: malformed lines are skipped, entries are
    /// put in order and only the newest `max` kept.
    pub fn parse(text: &str, max: usize) -> History {
        let mut entries: Vec<Entry> = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        entries.sort_by_key(|e| e.seq);
        entries.dedup_by_key(|e| e.seq);
        let last_seq = entries.last().map_or(0, |e| e.seq);
        let skip = entries.len().saturating_sub(max);
        History {
            entries: entries.into_iter().skip(skip).collect(),
            last_seq,
        }
    }
}

/// What the writer thread does.
enum Write_ {
    /// Adds one entry at the end of a file.
    Append { path: PathBuf, entry: Entry },
    /// Replaces a file with these entries.
    Rewrite { path: PathBuf, entries: Vec<Entry> },
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

    /// Records `entry` of `session_id`; every `max` entries the file is rewritten from
    /// `recent`, so it never holds much more than `max` lines.
    pub fn record(&self, session_id: &str, entry: Entry, recent: &History, max: usize) {
        let path = self.path(session_id);
        let compact = max > 0 && entry.seq.is_multiple_of(max as u64);
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
    pub fn load(&self, session_id: &str, max: usize) -> History {
        match std::fs::read_to_string(self.path(session_id)) {
            Ok(text) => History::parse(&text, max),
            Err(_) => History::default(),
        }
    }
}

impl crate::daemon::Daemon {
    /// Adds a message to a session's conversation, in memory and on disk.
    pub fn remember(
        &mut self,
        session_id: &str,
        role: Role,
        content: String,
        id: Option<serde_json::Value>,
    ) {
        let max = self.config.sessions.max_history;
        let Some(agent) = self.agents.get_mut(session_id) else {
            return;
        };
        let at_ms = crate::time::unix_millis(std::time::SystemTime::now());
        let entry = agent.history.push(role, content, id, at_ms, max);
        self.history.record(session_id, entry, &agent.history, max);
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

fn rewrite(path: &Path, entries: &[Entry]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let temp = path.with_extension("jsonl.tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    for entry in entries {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        file.write_all(&line)?;
    }
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded_ordered_and_survives_a_bad_line() {
        let mut history = History::default();
        for i in 0..5 {
            history.push(Role::User, format!("m{i}"), None, i, 3);
        }
        assert_eq!(history.entries.len(), 3);
        assert_eq!(history.entries[0].content, "m2");
        assert_eq!(history.last_seq, 5);
        let lines: Vec<String> = history
            .entries
            .iter()
            .rev()
            .map(|e| serde_json::to_string(e).unwrap())
            .chain(["not json".to_string()])
            .collect();
        let parsed = History::parse(&lines.join("\n"), 2);
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
            let entry = history.push(Role::Agent, format!("r{i}"), None, i, 3);
            writer.record("sess-x-1", entry, &history, 3);
        }
        let path = writer.path("sess-x-1");
        drop(writer); // waits until the queue is written
        let text = std::fs::read_to_string(&path).unwrap();
        let loaded = History::parse(&text, 3);
        let contents: Vec<&str> = loaded.entries.iter().map(|e| e.content.as_str()).collect();
        assert_eq!(contents, ["r4", "r5", "r6"]);
        assert!(text.lines().count() <= 4, "compacted: {text}");
    }
}
