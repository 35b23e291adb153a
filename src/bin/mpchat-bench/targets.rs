//! Which server each client talks to when the run has several targets
//! (`--spawn` or `--addr` given more than once, as for the servers of one
//! cluster): client `i` connects to target `i % T`. The senders are
//! clients `0..S` as with one target, so they are spread the same way:
//! target `t` gets `ceil((S - t) / T)` of them, the first `S % T` targets
//! one more than the others when T does not divide S.
//!
//! Nothing else changes with several targets: every client must still get
//! every line of its room, whichever server its sender is on, and the
//! latency is still the sender's timestamp against the receiver's clock,
//! one clock, since every client is in this one process.
//!
//! With rooms too, client `i` is in room `i % R` and on target `i % T`, so
//! when R and T share a factor a room's members are not on every target
//! (R = T puts each room on one server). Pick them coprime (or one room)
//! to have every room span every server.

/// The spread of one run's clients over its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    /// Targets, at least 1.
    count: usize,
}

impl Spread {
    /// `count` targets (0 is taken as 1, so no division by 0 can follow
    /// from a bad value; the command line refuses it earlier).
    pub fn new(count: usize) -> Spread {
        Spread {
            count: count.max(1),
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// The target client `client` connects to.
    pub fn target_of(&self, client: usize) -> usize {
        if self.count == 1 {
            0
        } else {
            client % self.count
        }
    }

    /// How many of clients `0..n` connect to target `target` (with `n` the
    /// sender count: how many senders it has).
    pub fn on(&self, target: usize, n: usize) -> usize {
        if target >= self.count {
            return 0;
        }
        n.saturating_sub(target).div_ceil(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_go_round_the_targets() {
        let s = Spread::new(3);
        let t: Vec<usize> = (0..7).map(|c| s.target_of(c)).collect();
        assert_eq!(t, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(Spread::new(1).target_of(12345), 0);
        // Zero targets cannot divide by zero.
        assert_eq!(Spread::new(0).count(), 1);
        assert_eq!(Spread::new(0).target_of(5), 0);
    }

    #[test]
    fn nine_hundred_clients_and_ten_senders_over_three_servers() {
        let s = Spread::new(3);
        assert_eq!((0..3).map(|t| s.on(t, 900)).collect::<Vec<_>>(), [300; 3]);
        // Senders 0..10: targets 0, 1, 2, 0, 1, 2, 0, 1, 2, 0.
        assert_eq!((0..3).map(|t| s.on(t, 10)).collect::<Vec<_>>(), [4, 3, 3]);
        assert_eq!(s.on(3, 900), 0);
    }

    #[test]
    fn counts_match_the_round_robin() {
        for (targets, n) in [(1, 10), (2, 5), (3, 1), (4, 2), (5, 17), (3, 0)] {
            let s = Spread::new(targets);
            for t in 0..targets {
                let by_hand = (0..n).filter(|&c| s.target_of(c) == t).count();
                assert_eq!(s.on(t, n), by_hand, "{targets} targets, {n} clients");
            }
            assert_eq!((0..targets).map(|t| s.on(t, n)).sum::<usize>(), n);
        }
    }
}
