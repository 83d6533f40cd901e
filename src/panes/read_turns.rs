//! Fair reading of pane pipes across loop turns (pure).
//!
//! A pane whose read stopped at its budget (it had more) is a flood: it is read again on
//! the next loop turn, not again in this one, and holds at most one place in the queue for
//! the next turn however it comes up (its readiness event, a stall that ended, a viewer
//! that caught up). A pane that is not flooding is read whenever it is ready, with the whole
//! budget. The panes that flooded in the last turn share one budget (`panes.read_budget`),
//! so a loop turn reads about that much however many agents flood; the loop reads them last
//! and handles what became ready between two of their reads, so a keystroke to a quiet
//! agent and its echo wait for one flood's read, not for a whole turn.

/// The least a flooding pane is read per turn, however many flood: one read of a
/// pseudo-terminal.
pub const MIN_READ: usize = crate::config::MIN_READ_BUDGET;

/// Which pane pipes flooded, which were queued, and what each may read.
#[derive(Debug, Default)]
pub struct ReadTurns {
    /// Pipe slots whose read stopped at the budget this turn.
    flooded: Vec<usize>,
    /// Pipe slots that flooded in the last turn: they share the budget this turn.
    floods: Vec<usize>,
    /// Pipe slots to read again soon, each once, in the order they came up.
    later: Vec<usize>,
}

impl ReadTurns {
    /// A new loop turn: the panes that flooded in the last one share its budget, and every
    /// pane may be read again.
    pub fn begin_turn(&mut self) {
        self.floods = std::mem::take(&mut self.flooded);
    }

    /// Whether pipe `key` may be read now: not if it already flooded this turn (it is then
    /// queued for the next turn instead).
    pub fn may_read(&mut self, key: usize) -> bool {
        if self.flooded.contains(&key) {
            self.read_later(key);
            return false;
        }
        true
    }

    /// Pipe `key`'s read stopped at its budget with more to read: it is a flood, read again
    /// on the next turn.
    pub fn hit_budget(&mut self, key: usize) {
        if !self.flooded.contains(&key) {
            self.flooded.push(key);
        }
        self.read_later(key);
    }

    /// What pipe `key` may read now: `shared` (the turn's budget) split between the panes
    /// that flooded in the last turn if it is one of them (at least [`MIN_READ`]), else all
    /// of it.
    pub fn budget(&self, key: usize, shared: usize) -> usize {
        if self.floods.contains(&key) {
            (shared / self.floods.len()).max(MIN_READ)
        } else {
            shared
        }
    }

    /// Queues pipe `key` to be read again soon (once, however often this is called).
    pub fn read_later(&mut self, key: usize) {
        if !self.later.contains(&key) {
            self.later.push(key);
        }
    }

    /// Whether pipe `key` is queued to be read again (after this turn's events): its
    /// readiness event need not read it, so keystrokes and quiet panes go first.
    pub fn is_queued(&self, key: usize) -> bool {
        self.later.contains(&key)
    }

    /// Whether pipes are queued to be read again.
    pub fn has_later(&self) -> bool {
        !self.later.is_empty()
    }

    /// The queued pipes, oldest first (the queue is emptied).
    pub fn take_later(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.later)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_read_once_per_turn_and_queued_once() {
        let mut turns = ReadTurns::default();
        // Turn 1: pipes 3 and 5 are ready; both stop at their budget.
        turns.begin_turn();
        assert!(turns.may_read(3));
        turns.hit_budget(3);
        assert!(turns.may_read(5));
        turns.hit_budget(5);
        assert!(turns.is_queued(3) && turns.is_queued(5) && !turns.is_queued(4));
        // A second look in the same turn finds both flooded: they wait for turn 2, queued
        // once each.
        let again = turns.take_later();
        assert_eq!(again, vec![3, 5]);
        for key in again {
            assert!(!turns.may_read(key));
        }
        assert_eq!(turns.take_later(), vec![3, 5]);
        // Turn 2: both may be read again; 3 floods again and comes up twice more.
        turns.begin_turn();
        assert!(turns.may_read(3));
        turns.hit_budget(3);
        assert!(!turns.may_read(3));
        turns.read_later(3);
        assert!(turns.may_read(5));
        assert_eq!(turns.take_later(), vec![3]);
        assert!(!turns.has_later());
    }

    #[test]
    fn a_quiet_pane_is_read_whenever_it_is_ready_with_the_whole_budget() {
        let mut turns = ReadTurns::default();
        for key in 0..4 {
            turns.hit_budget(key);
        }
        turns.begin_turn();
        // Pane 9 (an echo) read on its keystroke's event, then again when its echo comes.
        assert!(turns.may_read(9));
        assert!(turns.may_read(9));
        assert_eq!(turns.budget(9, 65536), 65536);
        assert!(!turns.is_queued(9));
    }

    #[test]
    fn the_panes_that_flooded_share_the_turns_budget() {
        let mut turns = ReadTurns::default();
        turns.begin_turn();
        assert_eq!(turns.budget(0, 65536), 65536, "nothing flooded: all of it");
        for key in 0..4 {
            turns.hit_budget(key);
        }
        // A stall that ended queues a pipe without making it a flood.
        turns.read_later(7);
        turns.begin_turn();
        assert_eq!(turns.budget(2, 65536), 16384);
        assert_eq!(turns.budget(7, 65536), 65536);
        for key in 0..100 {
            turns.hit_budget(key);
        }
        turns.begin_turn();
        assert_eq!(
            turns.budget(50, 65536),
            MIN_READ,
            "never less than one read"
        );
        turns.begin_turn();
        assert_eq!(turns.budget(50, 65536), 65536, "no longer a flood");
    }

    #[test]
    fn queued_pipes_stay_queued_until_taken_and_come_back_in_order() {
        let mut turns = ReadTurns::default();
        for key in [7, 2, 7, 9, 2] {
            turns.read_later(key);
        }
        turns.begin_turn();
        assert_eq!(turns.take_later(), vec![7, 2, 9]);
        assert!(turns.take_later().is_empty());
    }
}
