//! The durable ticket store: one `redb` file under the state directory, written by one
//! thread of its own so that disk syncs never block the event loop.
//!
//! Every write is a transaction committed with `redb`'s immediate durability (fsync).
//! Writes queued while a commit is in progress are committed together (group commit), in
//! the order they were queued. When the disk is full or failing, new tickets are refused
//! (their callback gets the error) while updates of existing ones are kept and retried, so
//! the store catches up once space returns. A write's callback runs on the loop once it is durable, or
//! with the error when it could not be stored. This module knows nothing of the ticket
//! lifecycle: it stores and loads [`Ticket`]s by task id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::Ticket;
use crate::daemon::{Daemon, Done};
use crate::jobs::Notifier;

/// Tickets by task id, as JSON.
const TICKETS: TableDefinition<u64, &[u8]> = TableDefinition::new("tickets");

/// Writes committed in one transaction at most.
const MAX_BATCH: usize = 256;

/// How often updates that could not be stored are tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// A queued write and who to tell when it is durable.
struct Write {
    task_id: u64,
    /// The ticket as JSON; `None` removes it.
    value: Option<Vec<u8>>,
    done: Option<Done<Result<(), String>>>,
}

/// Handle on the store thread.
pub struct Store {
    tx: Sender<Write>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// Opens the store and loads every ticket.
pub fn open(path: &Path) -> Result<(Database, Vec<Ticket>), String> {
    let db = Database::create(path)
        .map_err(|e| format!("cannot open the task store {}: {e}", path.display()))?;
    let tickets = load(&db).map_err(|e| format!("cannot read the task store: {e}"))?;
    Ok((db, tickets))
}

fn load(db: &Database) -> Result<Vec<Ticket>, redb::Error> {
    // Make sure the table exists, so that a fresh store reads as empty.
    let txn = db.begin_write()?;
    txn.open_table(TICKETS)?;
    txn.commit()?;
    let txn = db.begin_read()?;
    let table = txn.open_table(TICKETS)?;
    let mut tickets = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        match serde_json::from_slice::<Ticket>(value.value()) {
            Ok(ticket) => tickets.push(ticket),
            Err(e) => log::error!(
                "task store: ticket {} is unreadable ({e}); skipped",
                key.value()
            ),
        }
    }
    Ok(tickets)
}

impl Store {
    /// Starts the store thread on `db`; callbacks come back through `notifier`.
    pub fn start(path: &Path, db: Database, notifier: Notifier<Daemon>) -> std::io::Result<Store> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("task-store".into())
            .spawn(move || run(path, db, rx, notifier))?;
        Ok(Store { tx })
    }

    /// Queues a durable write of `ticket`; `done` (if any) runs on the loop once it is on
    /// disk, or with the error.
    pub fn put(&self, ticket: &Ticket, done: Option<Done<Result<(), String>>>) {
        let value = serde_json::to_vec(ticket).expect("tickets serialize");
        let write = Write {
            task_id: ticket.task_id,
            value: Some(value),
            done,
        };
        if let Err(crossbeam_channel::SendError(write)) = self.tx.send(write) {
            log::error!(
                "task store: the store thread is gone; ticket {} not stored",
                write.task_id
            );
        }
    }

    /// Queues the removal of a ticket (pruned after `tasks.keep_finished`).
    pub fn remove(&self, task_id: u64) {
        let _ = self.tx.send(Write {
            task_id,
            value: None,
            done: None,
        });
    }
}

fn run(path: PathBuf, db: Database, rx: Receiver<Write>, notifier: Notifier<Daemon>) {
    let mut db = Some(db);
    // Updates that could not be stored (disk full, I/O error), latest value per ticket; they
    // are retried with the next commit or every RETRY_EVERY. New tickets are never retried:
    // their delegation was refused, so they must not appear later.
    let mut unsaved: BTreeMap<u64, Option<Vec<u8>>> = BTreeMap::new();
    loop {
        let first = if unsaved.is_empty() {
            match rx.recv() {
                Ok(write) => Some(write),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(RETRY_EVERY) {
                Ok(write) => Some(write),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        let mut batch: Vec<Write> = first.into_iter().collect();
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let mut values = std::mem::take(&mut unsaved);
        for write in &batch {
            values.insert(write.task_id, write.value.clone());
        }
        let result = commit_or_reopen(&path, &mut db, &values);
        match &result {
            Ok(()) => {}
            Err(e) => {
                log::error!(
                    "task store: cannot store {} ticket(s): {e}; updates are retried",
                    values.len()
                );
                for write in batch.iter().filter(|w| w.done.is_some()) {
                    values.remove(&write.task_id);
                }
                unsaved = values;
            }
        }
        for write in batch {
            if let Some(done) = write.done {
                let result = result.clone();
                notifier.send(Box::new(move |daemon: &mut Daemon| done(daemon, result)));
            }
        }
    }
}

/// Commits `values`; after a failure the database is reopened on the next try, since redb
/// refuses every transaction after an I/O error until it is reopened.
fn commit_or_reopen(
    path: &Path,
    db: &mut Option<Database>,
    values: &BTreeMap<u64, Option<Vec<u8>>>,
) -> Result<(), String> {
    if db.is_none() {
        *db = Some(Database::create(path).map_err(|e| format!("cannot reopen the store: {e}"))?);
    }
    let result = commit(db.as_ref().expect("opened above"), values).map_err(|e| e.to_string());
    if result.is_err() {
        *db = None;
    }
    result
}

fn commit(db: &Database, values: &BTreeMap<u64, Option<Vec<u8>>>) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(TICKETS)?;
        for (task_id, value) in values {
            match value {
                Some(value) => {
                    table.insert(*task_id, value.as_slice())?;
                }
                None => {
                    table.remove(*task_id)?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}
