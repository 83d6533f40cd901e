//! Fair reading of pane pipes across loop turns (pure).
//!
//! A pane that floods has more output than one read takes, so it is read again on the next
//! loop turn. Every pane pipe is read at most once per turn, however it comes up (its
//! readiness event, a read left over from the last turn, a stall that ended), and holds at
//! most one place in the queue for the next turn. The panes that flooded in the last turn
//! share one budget (`panes.read_budget`), so a loop turn reads about that much however many
//! agents flood, and a keystroke to a quiet agent waits about one such turn to be typed and
//! one to be echoed.

/// The least a pane is read per turn, however many flood: one read of a pseudo-terminal.
pub const MIN_READ: usize = 4096;

/// Which pane pipes were read this loop turn and which are read again on the next.
#[derive(Debug, Default)]
pub struct ReadTurns {
    /// Pipe slots read this turn.
    read: Vec<usize>,
    /// Pipe slots to read again on the next turn, each once, in the order they came up.
    later: Vec<usize>,
    /// Pipes that were queued when this turn began: the panes flooding now.
    flooding: usize,
}

impl ReadTurns {
    /// A new loop turn: every pipe may be read once more.
    pub fn begin_turn(&mut self) {
        self.read.clear();
        self.flooding = self.later.len();
    }

    /// What one pane may read this turn: `shared` (the turn's budget) split between the
    /// panes that flooded last turn, at least [`MIN_READ`].
    pub fn budget(&self, shared: usize) -> usize {
        (shared / self.flooding.max(1)).max(MIN_READ)
    }

    /// Whether pipe `key` may be read now: true the first time in a turn. Later asks in the
    /// same turn queue it for the next turn instead.
    pub fn may_read(&mut self, key: usize) -> bool {
        if self.read.contains(&key) {
            self.read_later(key);
            return false;
        }
        self.read.push(key);
        true
    }

    /// Queues pipe `key` to be read on the next turn (once, however often this is called).
    pub fn read_later(&mut self, key: usize) {
        if !self.later.contains(&key) {
            self.later.push(key);
        }
    }

    /// Whether pipe `key` is queued to be read after this turn's events (it flooded): its
    /// readiness event need not read it, so keystrokes and quiet panes go first.
    pub fn is_queued(&self, key: usize) -> bool {
        self.later.contains(&key)
    }

    /// Whether pipes wait to be read on the next turn.
    pub fn has_later(&self) -> bool {
        !self.later.is_empty()
    }

    /// The pipes queued for this turn's second look, oldest first (the queue is emptied).
    pub fn take_later(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.later)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_pipe_gets_one_budget_per_turn_and_one_place_in_the_queue() {
        let mut turns = ReadTurns::default();
        // Turn 1: pipes 3 and 5 are ready; both have more than a budget.
        turns.begin_turn();
        assert!(turns.may_read(3));
        turns.read_later(3);
        assert!(turns.may_read(5));
        turns.read_later(5);
        // The second look of the same turn finds both already read: they wait for turn 2.
        assert!(turns.is_queued(3) && turns.is_queued(5) && !turns.is_queued(4));
        let again = turns.take_later();
        assert_eq!(again, vec![3, 5]);
        for key in again {
            assert!(!turns.may_read(key));
        }
        assert!(turns.has_later());
        // Turn 2: pipe 3 is ready again (a new edge) and also left over from turn 1. It is
        // read once, and queued once however often it comes up.
        turns.begin_turn();
        assert!(turns.may_read(3));
        turns.read_later(3);
        turns.read_later(3);
        let again = turns.take_later();
        assert_eq!(again, vec![3, 5]);
        assert!(!turns.may_read(3));
        assert!(turns.may_read(5));
        assert_eq!(turns.take_later(), vec![3]);
        assert!(!turns.has_later());
    }

    #[test]
    fn the_panes_that_flood_share_the_turns_budget() {
        let mut turns = ReadTurns::default();
        turns.begin_turn();
        assert_eq!(
            turns.budget(65536),
            65536,
            "nothing flooded: one pane may take it all"
        );
        for key in 0..4 {
            turns.read_later(key);
        }
        turns.begin_turn();
        assert_eq!(turns.budget(65536), 16384);
        for key in 0..100 {
            turns.read_later(key);
        }
        turns.begin_turn();
        assert_eq!(turns.budget(65536), MIN_READ, "never less than one read");
        assert_eq!(turns.take_later().len(), 100);
        turns.begin_turn();
        assert_eq!(turns.budget(65536), 65536);
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
