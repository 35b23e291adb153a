//! Flood control: how many lines a user may send, decided in that user's
//! child before a line reaches the room.
//!
//! A token bucket: `burst` lines at once, refilled at `rate` lines a
//! second. A line with no token left is dropped, and the user told so (at
//! most once a second, so the notices cannot flood the flooder); after
//! [`MAX_DROPPED_IN_A_ROW`] dropped lines in a row the user is
//! disconnected. Pure: the caller passes the time.

use std::time::{Duration, Instant};

/// Dropped lines in a row after which the user is disconnected.
pub(crate) const MAX_DROPPED_IN_A_ROW: u32 = 30;
/// Shortest time between two "sending too fast" notices.
const NOTICE_EVERY: Duration = Duration::from_secs(1);

/// The limits; a `rate` of 0 turns flood control off.
#[derive(Debug, Clone, Copy)]
pub struct FloodLimits {
    pub burst: u32,
    /// Lines per second.
    pub rate: f64,
}

/// What to do with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    /// Drop it, and tell the user.
    DropAndNotify,
    /// Drop it silently: the user was told less than a second ago.
    Drop,
    /// Drop it and disconnect the user.
    Disconnect,
}

/// One user's bucket.
#[derive(Debug)]
pub(crate) struct Flood {
    limits: FloodLimits,
    tokens: f64,
    counted: Instant,
    dropped_in_a_row: u32,
    last_notice: Option<Instant>,
}

impl Flood {
    pub(crate) fn new(limits: FloodLimits, now: Instant) -> Flood {
        Flood {
            limits,
            tokens: f64::from(limits.burst),
            counted: now,
            dropped_in_a_row: 0,
            last_notice: None,
        }
    }

    /// A rate of its own for this user (a bot's, from the bots file).
    pub(crate) fn set_rate(&mut self, rate: f64) {
        self.limits.rate = rate;
    }

    /// Decides about one line arriving at `now`.
    pub(crate) fn line(&mut self, now: Instant) -> Verdict {
        if self.limits.rate <= 0.0 {
            return Verdict::Pass;
        }
        let elapsed = now.saturating_duration_since(self.counted).as_secs_f64();
        self.counted = now;
        self.tokens = (self.tokens + elapsed * self.limits.rate).min(f64::from(self.limits.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.dropped_in_a_row = 0;
            return Verdict::Pass;
        }
        self.dropped_in_a_row += 1;
        if self.dropped_in_a_row >= MAX_DROPPED_IN_A_ROW {
            return Verdict::Disconnect;
        }
        if self
            .last_notice
            .is_some_and(|last| now.saturating_duration_since(last) < NOTICE_EVERY)
        {
            return Verdict::Drop;
        }
        self.last_notice = Some(now);
        Verdict::DropAndNotify
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FloodLimits = FloodLimits {
        burst: 10,
        rate: 2.0,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_passes_then_lines_are_dropped_with_one_notice_a_second() {
        let t0 = Instant::now();
        let mut f = Flood::new(LIMITS, t0);
        for _ in 0..10 {
            assert_eq!(f.line(t0), Verdict::Pass);
        }
        assert_eq!(f.line(t0), Verdict::DropAndNotify);
        assert_eq!(f.line(t0 + ms(100)), Verdict::Drop);
        // 2 a second: by 600 ms one token is back.
        assert_eq!(f.line(t0 + ms(600)), Verdict::Pass);
        assert_eq!(f.line(t0 + ms(600)), Verdict::Drop);
    }

    #[test]
    fn the_notice_comes_again_after_a_second() {
        let t0 = Instant::now();
        let slow = FloodLimits {
            burst: 1,
            rate: 0.5,
        };
        let mut f = Flood::new(slow, t0);
        assert_eq!(f.line(t0), Verdict::Pass);
        assert_eq!(f.line(t0), Verdict::DropAndNotify);
        assert_eq!(f.line(t0 + ms(999)), Verdict::Drop);
        assert_eq!(f.line(t0 + ms(1000)), Verdict::DropAndNotify);
    }

    #[test]
    fn thirty_dropped_lines_in_a_row_disconnect() {
        let t0 = Instant::now();
        let mut f = Flood::new(LIMITS, t0);
        for _ in 0..10 {
            f.line(t0);
        }
        for i in 1..MAX_DROPPED_IN_A_ROW {
            assert_ne!(f.line(t0), Verdict::Disconnect, "line {i}");
        }
        assert_eq!(f.line(t0), Verdict::Disconnect);
    }

    #[test]
    fn a_line_that_passes_ends_the_row() {
        let t0 = Instant::now();
        let mut f = Flood::new(LIMITS, t0);
        for _ in 0..10 {
            f.line(t0);
        }
        for _ in 1..MAX_DROPPED_IN_A_ROW {
            f.line(t0);
        }
        assert_eq!(f.line(t0 + ms(500)), Verdict::Pass);
        let t1 = t0 + ms(500);
        for _ in 1..MAX_DROPPED_IN_A_ROW {
            assert_ne!(f.line(t1), Verdict::Disconnect);
        }
    }

    #[test]
    fn a_patient_user_never_runs_out() {
        let t0 = Instant::now();
        let mut f = Flood::new(LIMITS, t0);
        for i in 0..1000 {
            assert_eq!(f.line(t0 + ms(500 * i)), Verdict::Pass);
        }
    }

    #[test]
    fn rate_zero_turns_it_off() {
        let t0 = Instant::now();
        let mut f = Flood::new(
            FloodLimits {
                burst: 1,
                rate: 0.0,
            },
            t0,
        );
        for _ in 0..1000 {
            assert_eq!(f.line(t0), Verdict::Pass);
        }
    }
}
