//! Fair reading of pane pipes across loop turns (pure).
//!
//! A pane that floods has more output than one read budget (`panes.read_budget`) takes, so
//! it is read again on the next loop turn. Every pane pipe gets at most one budget per turn,
//! however it comes up (its readiness event, a read left over from the last turn, a stall
//! that ended), and holds at most one place in the queue for the next turn. A loop turn
//! therefore lasts about one budget per flooding pane, and a keystroke waits at most that
//! long to be read and typed.

/// Which pane pipes were read this loop turn and which are read again on the next.
#[derive(Debug, Default)]
pub struct ReadTurns {
    /// Pipe slots read this turn.
    read: Vec<usize>,
    /// Pipe slots to read again on the next turn, each once, in the order they came up.
    later: Vec<usize>,
}

impl ReadTurns {
    /// A new loop turn: every pipe may be read once more.
    pub fn begin_turn(&mut self) {
        self.read.clear();
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
