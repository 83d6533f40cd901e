//! The cluster's ticket queue as this daemon sees it: every ticket of the JetStream bucket
//! `<name>-tickets` (watched, so reading it is local), the tickets this host holds, and the
//! writes it waits for.
//!
//! Every write names the revision its writer read, and JetStream refuses it when the
//! ticket changed since. That gives the queue its rules:
//! - **one claim:** of the hosts that try to claim a queued ticket, exactly one succeeds;
//! - **fencing:** a host that was paused or cut off while another host took its ticket over
//!   finds out when its next write is refused, or when its watch shows the ticket written by
//!   another host, and stops its own run without writing anything.
//!
//! The decisions here are pure (what to claim, what a lost host's ticket becomes); the
//! API's [`crate::api::queue`] acts on them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use crate::net::ConnId;
use crate::wire::cluster::{QueueState, QueuedTicket};

/// The error code in the result of a ticket whose host was lost while it ran.
pub const HOST_LOST: &str = "HOST_LOST";

/// A ticket as the bucket holds it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its value.
    pub ticket: QueuedTicket,
    /// Its revision, which a conditional write names.
    pub revision: u64,
}

/// A ticket this host claimed and runs.
#[derive(Debug, Clone, Default)]
pub struct Held {
    /// The revision of this host's last write of it.
    pub revision: u64,
    /// The view it last wrote.
    pub written: Option<serde_json::Value>,
    /// A write of it is in flight.
    pub writing: bool,
}

/// Why a write of a ticket was made: what to do with its outcome.
#[derive(Debug)]
pub enum Write {
    /// A delegation taken by this host; the caller on `conn` waits for the answer.
    Submit {
        /// The caller.
        conn: ConnId,
        /// Headers for the answer (rate limits).
        headers: Vec<(String, String)>,
    },
    /// This host claims the ticket.
    Claim,
    /// This host gives back a ticket it could not run.
    Release,
    /// This host records its run's progress or result.
    Sync,
    /// This host requeues or fails the ticket of a lost host.
    TakeOver,
    /// A caller on `conn` cancels a queued ticket.
    Cancel {
        /// The caller.
        conn: ConnId,
    },
}

/// The queue's state in this daemon.
#[derive(Debug, Default)]
pub struct TicketQueue {
    /// Every ticket of the bucket, by ticket id.
    entries: BTreeMap<String, Entry>,
    /// Writes waiting for their outcome, by write id: the value written, and why.
    writes: HashMap<u64, (QueuedTicket, Write)>,
    /// Write ids.
    next_write: u64,
    /// The tickets this host holds, by ticket id.
    held: HashMap<String, Held>,
    /// Tickets another host took from this one: this host's copy is stale.
    fenced: HashSet<String>,
    /// The ticket this host is claiming (one at a time, so it never claims more than it
    /// has room for).
    claiming: Option<String>,
    /// Since when the link is connected: a host takes nothing over before it has heard
    /// every host for `cluster.unreachable_after`.
    connected_since: Option<Instant>,
    /// When the queue's periodic work last ran.
    last_tick: Option<Instant>,
}

impl TicketQueue {
    /// A ticket changed in the bucket (`None`: removed). Stale revisions are ignored.
    pub fn on_entry(&mut self, key: String, ticket: Option<QueuedTicket>, revision: u64) {
        match ticket {
            Some(ticket) => {
                if self
                    .entries
                    .get(&key)
                    .is_none_or(|known| known.revision <= revision)
                {
                    self.entries.insert(key, Entry { ticket, revision });
                }
            }
            None => {
                self.entries.remove(&key);
            }
        }
    }

    /// The ticket `key`.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Every ticket, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        let mut all: Vec<&Entry> = self.entries.values().collect();
        all.sort_by_key(|e| (e.ticket.created_ms, e.ticket.ticket_id.as_str()));
        all.into_iter()
    }

    /// How many tickets wait for a host.
    pub fn queued(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.ticket.state == QueueState::Queued)
            .count()
    }

    /// Records a write of `ticket` in flight; returns its id.
    pub fn begin_write(&mut self, ticket: QueuedTicket, why: Write) -> u64 {
        self.next_write += 1;
        self.writes.insert(self.next_write, (ticket, why));
        self.next_write
    }

    /// The write `id` (the value written, and why), now that its outcome is known. When it
    /// was made, `revision` is the value's: this host reads its own writes at once, without
    /// waiting for its watch.
    pub fn end_write(&mut self, id: u64, revision: Option<u64>) -> Option<(QueuedTicket, Write)> {
        let (ticket, why) = self.writes.remove(&id)?;
        if let Some(revision) = revision {
            self.on_entry(ticket.ticket_id.clone(), Some(ticket.clone()), revision);
        }
        Some((ticket, why))
    }

    /// The tickets this host holds.
    pub fn held(&self) -> &HashMap<String, Held> {
        &self.held
    }

    /// The ticket `key` this host holds.
    pub fn held_mut(&mut self, key: &str) -> Option<&mut Held> {
        self.held.get_mut(key)
    }

    /// Starts holding `key`, claimed (or last written by this host) at `revision`.
    pub fn hold(&mut self, key: &str, revision: u64) {
        self.held.insert(
            key.to_string(),
            Held {
                revision,
                ..Held::default()
            },
        );
    }

    /// Stops holding `key` (its run is recorded as final, or it was given back).
    pub fn let_go(&mut self, key: &str) {
        self.held.remove(key);
    }

    /// Another host took `key` from this one: stop holding it; this host's copy is stale.
    pub fn fence(&mut self, key: &str) {
        self.held.remove(key);
        self.fenced.insert(key.to_string());
    }

    /// Whether another host took `key` from this one.
    pub fn is_fenced(&self, key: &str) -> bool {
        self.fenced.contains(key)
    }

    /// The ticket being claimed.
    pub fn claiming(&self) -> Option<&str> {
        self.claiming.as_deref()
    }

    /// Marks `key` as being claimed (`None`: the claim is over).
    pub fn set_claiming(&mut self, key: Option<String>) {
        self.claiming = key;
    }

    /// The link connected (`true`) or lost NATS (`false`). Settling starts only once the
    /// hosts bucket is watched again ([`TicketQueue::resettle`]): before that, nothing this
    /// host hears of the others is fresh.
    pub fn set_connected(&mut self, connected: bool) {
        if !connected {
            self.connected_since = None;
        }
    }

    /// The queue's periodic work runs now; it should run at least every `beat`. A longer gap
    /// means this daemon itself was stalled (paused, swapped out): what it heard of other
    /// hosts is stale, so it waits to settle again before it takes anything over.
    pub fn note_tick(&mut self, beat: std::time::Duration) {
        let now = Instant::now();
        if self.last_tick.is_some_and(|last| now - last > beat * 3 / 2)
            && self.connected_since.is_some()
        {
            log::info!(
                "cluster: this daemon was stalled; it takes no ticket over until it has heard every host again"
            );
            self.connected_since = Some(now);
        }
        self.last_tick = Some(now);
    }

    /// Starts settling from now: the hosts bucket is watched (again), and the other hosts
    /// get `unreachable_after` to write their records (after an outage they may not have
    /// been able to yet).
    pub fn resettle(&mut self) {
        self.connected_since = Some(Instant::now());
    }

    /// Whether the link has been connected for at least `settle`.
    pub fn settled(&self, settle: std::time::Duration) -> bool {
        self.connected_since.is_some_and(|t| t.elapsed() >= settle)
    }

    /// The oldest queued ticket that `me` has not declined and `can_take` accepts.
    pub fn next_claim(&self, me: &str, can_take: impl Fn(&QueuedTicket) -> bool) -> Option<&Entry> {
        self.entries
            .values()
            .filter(|e| {
                e.ticket.state == QueueState::Queued
                    && !e.ticket.declined.contains_key(me)
                    && can_take(&e.ticket)
            })
            .min_by_key(|e| (e.ticket.created_ms, e.ticket.ticket_id.as_str()))
    }

    /// Tickets claimed by `me` that this host neither holds nor is claiming: a claim whose
    /// outcome was lost (the write landed but was reported failed), or one made just before
    /// this daemon restarted.
    pub fn orphans(&self, me: &str) -> Vec<Entry> {
        self.entries
            .values()
            .filter(|e| {
                e.ticket.state == QueueState::Claimed
                    && e.ticket.host.as_deref() == Some(me)
                    && e.ticket.by == me
                    && !self.held.contains_key(&e.ticket.ticket_id)
                    && self.claiming.as_deref() != Some(e.ticket.ticket_id.as_str())
            })
            .cloned()
            .collect()
    }

    /// The tickets claimed by hosts that `is_lost` says are lost, each with what it becomes
    /// (written by `me` at `now_ms`) and the revision the write must name.
    pub fn taken_over(
        &self,
        me: &str,
        now_ms: u64,
        is_lost: impl Fn(&str) -> bool,
    ) -> Vec<(QueuedTicket, u64)> {
        self.entries
            .values()
            .filter(|e| e.ticket.state == QueueState::Claimed)
            .filter(|e| {
                e.ticket
                    .host
                    .as_deref()
                    .is_some_and(|host| host != me && is_lost(host))
            })
            .map(|e| (after_host_lost(&e.ticket, me, now_ms), e.revision))
            .collect()
    }
}

/// What a ticket claimed by a lost host becomes: queued again when that host had not yet
/// stored it (it wrote no view: nothing can have started), or when it may be retried;
/// otherwise done, `failed` with [`HOST_LOST`].
pub fn after_host_lost(ticket: &QueuedTicket, me: &str, now_ms: u64) -> QueuedTicket {
    let lost = ticket.host.clone().unwrap_or_default();
    let started = ticket.view.is_some();
    let mut next = ticket.clone();
    next.by = me.to_string();
    if !started || ticket.retries > 0 {
        if started {
            next.retries -= 1;
        }
        next.state = QueueState::Queued;
        next.host = None;
        next.view = None;
        log::info!(
            "cluster: host {lost} was lost holding {}; queued again",
            ticket.ticket_id
        );
        return next;
    }
    let message =
        format!("host {lost} stopped reporting while the task ran there; its outcome is unknown");
    failed(ticket, me, now_ms, HOST_LOST, message)
}

/// `ticket` done, `failed` with `code` and `message` in its result, written by `me`.
pub fn failed(
    ticket: &QueuedTicket,
    me: &str,
    now_ms: u64,
    code: &str,
    message: String,
) -> QueuedTicket {
    let mut next = ticket.clone();
    next.by = me.to_string();
    let mut view = match &ticket.view {
        Some(view) if view.is_object() => view.clone(),
        _ => serde_json::json!({}),
    };
    view["status"] = "failed".into();
    view["completed_at"] =
        crate::time::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(now_ms))
            .into();
    let mut result = view["result"].take();
    if !result.is_object() {
        result = serde_json::json!({
            "files_modified": [], "tests_passed": null, "tests_output": null,
            "tests_skipped": null, "message": "", "output_tail": "", "exit_code": null,
            "exit_signal": null, "branch": null, "worktree": null,
        });
    }
    result["error_code"] = code.into();
    result["error"] = message.into();
    view["result"] = result;
    next.state = QueueState::Done;
    next.view = Some(view);
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ticket(id: &str, created_ms: u64) -> QueuedTicket {
        QueuedTicket {
            ticket_id: id.into(),
            session_id: "sess-task-00000000".into(),
            agent_type: "task".into(),
            task: "SAY hi".into(),
            context: Default::default(),
            timeout_ms: None,
            working_dir: None,
            isolation: Default::default(),
            test_command: None,
            requested_by: None,
            retries: 0,
            submitted_on: "alpha".into(),
            created_ms,
            state: QueueState::Queued,
            host: None,
            attempts: 0,
            by: "alpha".into(),
            declined: BTreeMap::new(),
            view: None,
        }
    }

    fn claimed(id: &str, host: &str, status: &str, retries: u32) -> QueuedTicket {
        let mut t = ticket(id, 1);
        t.state = QueueState::Claimed;
        t.host = Some(host.into());
        t.retries = retries;
        t.view = (status != "unstored")
            .then(|| json!({"ticket_id": id, "status": status, "result": null}));
        t
    }

    #[test]
    fn the_oldest_queued_ticket_not_declined_is_claimed_first() {
        let mut queue = TicketQueue::default();
        let mut declined = ticket("ticket-a", 1);
        declined
            .declined
            .insert("beta".into(), "no such dir".into());
        queue.on_entry("ticket-a".into(), Some(declined), 1);
        queue.on_entry("ticket-c".into(), Some(ticket("ticket-c", 3)), 2);
        queue.on_entry("ticket-b".into(), Some(ticket("ticket-b", 2)), 3);
        let mut taken = claimed("ticket-0", "alpha", "running", 0);
        taken.created_ms = 0;
        queue.on_entry("ticket-0".into(), Some(taken), 4);
        let next = queue.next_claim("beta", |_| true).unwrap();
        assert_eq!(next.ticket.ticket_id, "ticket-b");
        assert_eq!(next.revision, 3);
        assert_eq!(
            queue
                .next_claim("alpha", |_| true)
                .unwrap()
                .ticket
                .ticket_id,
            "ticket-a"
        );
        assert!(
            queue
                .next_claim("beta", |t| t.agent_type == "other")
                .is_none()
        );
        assert_eq!(queue.queued(), 3);
    }

    #[test]
    fn a_stale_revision_never_replaces_a_newer_one() {
        let mut queue = TicketQueue::default();
        queue.on_entry(
            "ticket-a".into(),
            Some(claimed("ticket-a", "beta", "running", 0)),
            5,
        );
        queue.on_entry("ticket-a".into(), Some(ticket("ticket-a", 1)), 4);
        assert_eq!(queue.entry("ticket-a").unwrap().revision, 5);
        queue.on_entry("ticket-a".into(), None, 6);
        assert!(queue.entry("ticket-a").is_none());
    }

    #[test]
    fn a_lost_hosts_running_ticket_fails_with_host_lost_unless_it_may_retry() {
        let mut queue = TicketQueue::default();
        queue.on_entry(
            "ticket-r".into(),
            Some(claimed("ticket-r", "beta", "running", 0)),
            7,
        );
        queue.on_entry(
            "ticket-p".into(),
            Some(claimed("ticket-p", "beta", "unstored", 0)),
            8,
        );
        queue.on_entry(
            "ticket-y".into(),
            Some(claimed("ticket-y", "beta", "running", 2)),
            9,
        );
        queue.on_entry(
            "ticket-m".into(),
            Some(claimed("ticket-m", "alpha", "running", 0)),
            10,
        );
        queue.on_entry(
            "ticket-g".into(),
            Some(claimed("ticket-g", "gamma", "running", 0)),
            11,
        );
        let mut after: Vec<(QueuedTicket, u64)> =
            queue.taken_over("alpha", 1_000, |host| host == "beta");
        after.sort_by_key(|(_, revision)| *revision);
        assert_eq!(after.len(), 3, "{after:?}");
        let (failed, revision) = &after[0];
        assert_eq!(*revision, 7);
        assert_eq!(failed.state, QueueState::Done);
        assert_eq!(failed.by, "alpha");
        assert_eq!(failed.host.as_deref(), Some("beta"));
        let view = failed.view.as_ref().unwrap();
        assert_eq!(view["status"], "failed");
        assert_eq!(view["result"]["error_code"], HOST_LOST);
        let (requeued, _) = &after[1];
        assert_eq!(requeued.state, QueueState::Queued);
        assert_eq!(requeued.host, None);
        let (retried, _) = &after[2];
        assert_eq!(retried.state, QueueState::Queued);
        assert_eq!(retried.retries, 1);
        assert!(retried.view.is_none());
    }

    #[test]
    fn nothing_is_taken_over_before_the_link_has_settled() {
        let mut queue = TicketQueue::default();
        assert!(!queue.settled(std::time::Duration::ZERO));
        queue.set_connected(true);
        assert!(
            !queue.settled(std::time::Duration::ZERO),
            "connected, but the hosts bucket is not watched yet"
        );
        queue.resettle();
        assert!(queue.settled(std::time::Duration::ZERO));
        assert!(!queue.settled(std::time::Duration::from_secs(3600)));
        queue.set_connected(false);
        assert!(!queue.settled(std::time::Duration::ZERO));
    }

    #[test]
    fn a_stalled_daemon_settles_again_before_taking_anything_over() {
        let mut queue = TicketQueue {
            connected_since: Some(Instant::now() - std::time::Duration::from_secs(60)),
            ..TicketQueue::default()
        };
        queue.note_tick(std::time::Duration::from_secs(1));
        assert!(queue.settled(std::time::Duration::from_secs(30)));
        // The last tick was long ago: this daemon was stalled.
        queue.last_tick = Some(Instant::now() - std::time::Duration::from_secs(10));
        queue.note_tick(std::time::Duration::from_secs(1));
        assert!(!queue.settled(std::time::Duration::from_secs(30)));
    }

    #[test]
    fn a_fenced_ticket_is_no_longer_held() {
        let mut queue = TicketQueue::default();
        queue.hold("ticket-a", 3);
        assert_eq!(queue.held()["ticket-a"].revision, 3);
        queue.fence("ticket-a");
        assert!(queue.held().is_empty());
        assert!(queue.is_fenced("ticket-a"));
    }
}
