//! The one clock every timestamp comes from: CLOCK_MONOTONIC in
//! nanoseconds, so a send time written into a message by one client and a
//! receive time taken by another compare directly.

use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_ns: u64,
}

impl Clock {
    /// Reads CLOCK_MONOTONIC once. Later readings go through `Instant`
    /// (the same clock on Linux) so they cannot fail.
    pub fn new() -> Result<Clock, String> {
        let ts = clock_gettime(ClockId::CLOCK_MONOTONIC)
            .map_err(|e| format!("cannot read CLOCK_MONOTONIC: {e}"))?;
        let base = Instant::now();
        let base_ns = u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(ts.tv_nsec()).unwrap_or(0);
        Ok(Clock { base, base_ns })
    }

    /// CLOCK_MONOTONIC now, in nanoseconds.
    pub fn now_ns(&self) -> u64 {
        self.base_ns + self.base.elapsed().as_nanos() as u64
    }
}

pub fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

pub fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}
