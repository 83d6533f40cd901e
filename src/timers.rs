//! Deadlines for the event loop: a min-heap of `(instant, key)` entries.
//!
//! Timers only bound waiting (timeouts, retries, idle transitions); output never waits on
//! them. Entries are not cancelled: the owner checks, when one fires, whether it still
//! matters (a stale entry is simply ignored), which keeps scheduling O(log n) and allocation
//! free of per-timer handles.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// A heap of deadlines carrying keys of type `K`.
#[derive(Debug)]
pub struct Timers<K> {
    heap: BinaryHeap<Reverse<(Instant, u64, K)>>,
    sequence: u64,
}

impl<K: Ord> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            sequence: 0,
        }
    }
}

impl<K: Ord> Timers<K> {
    /// Fires `key` at `at`.
    pub fn schedule(&mut self, at: Instant, key: K) {
        // The sequence number keeps equal deadlines in scheduling order.
        self.sequence += 1;
        self.heap.push(Reverse((at, self.sequence, key)));
    }

    /// Fires `key` after `delay`.
    pub fn schedule_in(&mut self, delay: Duration, key: K) {
        self.schedule(Instant::now() + delay, key);
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns every key due at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Vec<K> {
        let mut due = Vec::new();
        while self
            .heap
            .peek()
            .is_some_and(|Reverse((at, _, _))| *at <= now)
        {
            if let Some(Reverse((_, _, key))) = self.heap.pop() {
                due.push(key);
            }
        }
        due
    }

    /// Number of pending entries (stale ones included).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Time from `now` until `deadline`, or zero when it has passed; `None` stays `None`.
pub fn until(deadline: Option<Instant>, now: Instant) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order() {
        let start = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(start + Duration::from_secs(3), "c");
        timers.schedule(start + Duration::from_secs(1), "a");
        timers.schedule(start + Duration::from_secs(2), "b");
        timers.schedule(start + Duration::from_secs(1), "a2");
        assert_eq!(timers.next_deadline(), Some(start + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(start), Vec::<&str>::new());
        assert_eq!(
            timers.pop_due(start + Duration::from_secs(2)),
            ["a", "a2", "b"]
        );
        assert_eq!(timers.len(), 1);
        assert_eq!(
            until(timers.next_deadline(), start + Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
    }
}
