//! The durable ticket store: one `redb` file under the state directory, written by one
//! thread of its own so that disk syncs never block the event loop.
//!
//! Every write is a transaction committed with `redb`'s immediate durability (fsync).
//! Writes queued while a commit is in progress are committed together (group commit), in
//! the order they were queued. Tickets are serialized here, not on the loop. When the disk
//! is full or failing, new tickets are refused (their callback gets the error) while updates
//! of existing ones are kept and retried, so the store catches up once space returns. A write's callback runs on the loop once it is durable, or
//! with the error when it could not be stored. This module knows nothing of the ticket
//! lifecycle: it stores and loads [`Ticket`]s by task id.

use std::sync::Arc;

use crate::metrics::SharedHistogram;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::Ticket;
use crate::ctx::{Done, World};
use crate::jobs::Notifier;

/// Tickets by task id, as JSON.
const TICKETS: TableDefinition<u64, &[u8]> = TableDefinition::new("tickets");

/// Writes committed in one transaction at most.
const MAX_BATCH: usize = 256;

/// How often updates that could not be stored are tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Why a ticket write did not reach the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The write failed (disk full, I/O error; the reason says which) and changed nothing.
    /// A new ticket is refused; an update is retried by the store until it succeeds.
    WriteFailed(String),
    /// The store thread has stopped (the daemon is shutting down): nothing more is stored.
    Stopped,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::WriteFailed(reason) => f.write_str(reason),
            StoreError::Stopped => f.write_str("the task store thread has stopped"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A queued write and who to tell when it is durable.
struct Write {
    task_id: u64,
    /// The ticket (serialized on the store thread); `None` removes it.
    ticket: Option<Box<Ticket>>,
    /// A new ticket: if it cannot be stored it was refused, so it is never retried.
    fresh: bool,
    done: Option<Done<Result<(), StoreError>>>,
}

/// Handle on the store thread.
pub struct Store {
    /// `None` once dropped (the thread then finishes its queue and stops).
    tx: Option<Sender<Write>>,
    notifier: Notifier<World>,
    /// Disconnects when the store thread has stopped.
    stopped: Receiver<()>,
}

/// How long a stopping daemon waits for queued ticket writes to reach the disk.
const FLUSH_ON_DROP: Duration = Duration::from_secs(5);

impl Drop for Store {
    fn drop(&mut self) {
        self.tx.take();
        if let Err(RecvTimeoutError::Timeout) = self.stopped.recv_timeout(FLUSH_ON_DROP) {
            log::warn!("task store: queued ticket writes did not finish in time");
        }
    }
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
    pub fn start(
        path: &Path,
        db: Database,
        notifier: Notifier<World>,
        timing: Arc<SharedHistogram>,
    ) -> std::io::Result<Store> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (stop_tx, stopped) = crossbeam_channel::bounded::<()>(0);
        let path = path.to_path_buf();
        let thread_notifier = notifier.clone();
        std::thread::Builder::new()
            .name("task-store".into())
            .spawn(move || {
                run(path, db, rx, thread_notifier, &timing);
                drop(stop_tx);
            })?;
        Ok(Store {
            tx: Some(tx),
            notifier,
            stopped,
        })
    }

    /// Queues the first write of a new ticket; `done` runs on the loop once it is on disk,
    /// or with the error (then the ticket was not accepted and is never written later).
    pub fn create(&self, ticket: &Ticket, done: Done<Result<(), StoreError>>) {
        self.send(Write {
            task_id: ticket.task_id,
            ticket: Some(Box::new(ticket.clone())),
            fresh: true,
            done: Some(done),
        });
    }

    /// Queues a durable update of `ticket`; `done` (if any) runs on the loop once it is on
    /// disk, or with the error. Updates that fail are retried until they are stored.
    pub fn put(&self, ticket: &Ticket, done: Option<Done<Result<(), StoreError>>>) {
        self.send(Write {
            task_id: ticket.task_id,
            ticket: Some(Box::new(ticket.clone())),
            fresh: false,
            done,
        });
    }

    /// Queues the removal of a ticket (pruned after `tasks.keep_finished`).
    pub fn remove(&self, task_id: u64) {
        self.send(Write {
            task_id,
            ticket: None,
            fresh: false,
            done: None,
        });
    }

    fn send(&self, write: Write) {
        let sent = match &self.tx {
            Some(tx) => tx.send(write).map_err(|e| e.0),
            None => Err(write),
        };
        if let Err(write) = sent {
            log::error!(
                "task store: the store thread is gone; ticket {} not stored",
                write.task_id
            );
            if let Some(done) = write.done {
                self.notifier.send(Box::new(move |world: &mut World| {
                    done(world, Err(StoreError::Stopped))
                }));
            }
        }
    }
}

fn run(
    path: PathBuf,
    db: Database,
    rx: Receiver<Write>,
    notifier: Notifier<World>,
    timing: &SharedHistogram,
) {
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
        for write in &mut batch {
            let value = write
                .ticket
                .take()
                .map(|t| serde_json::to_vec(&t).expect("tickets serialize"));
            values.insert(write.task_id, value);
        }
        let started = std::time::Instant::now();
        let result = commit_or_reopen(&path, &mut db, &values).map_err(StoreError::WriteFailed);
        timing.observe(started.elapsed());
        if result.is_err() {
            timing.fail();
        }
        match &result {
            Ok(()) => {}
            Err(e) => {
                log::error!(
                    "task store: cannot store {} ticket(s): {e}; updates are retried",
                    values.len()
                );
                for write in batch.iter().filter(|w| w.fresh) {
                    values.remove(&write.task_id);
                }
                unsaved = values;
            }
        }
        for write in batch {
            if let Some(done) = write.done {
                let result = result.clone();
                notifier.send(Box::new(move |world: &mut World| done(world, result)));
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
