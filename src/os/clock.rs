//! Local wall-clock time: the `[HH:MM]` stamps on public lines and the due
//! time of `/schedule HH:MM`.
//!
//! The C library owns the time-zone rules (`TZ`, `/etc/localtime`), so this
//! module asks it through `localtime_r` and `mktime`, which nix does not wrap.
//!
//! And how long a `poll()` waits for a deadline ([`poll_timeout`]).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::PollTimeout;

/// The `poll()` or `epoll_wait()` timeout for `wait`: rounded up to the
/// next millisecond, so that a wait never ends a moment early and spins,
/// and capped at the longest one poll takes.
pub(crate) fn poll_timeout(wait: Duration) -> PollTimeout {
    PollTimeout::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX)
}

/// Since when a peer has taken nothing while something waits for it: what
/// a stall timeout is measured from (a client's socket in its session, a
/// child's socket in the hub).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stall {
    since: Option<Instant>,
}

impl Stall {
    /// Notes what a try to send found: nothing left `waiting` (the clock
    /// stops), or the peer `took` some (it starts again), or it took
    /// nothing (it runs on, or starts). `now` is read only when the clock
    /// starts; returns when it did.
    pub(crate) fn note(
        &mut self,
        waiting: bool,
        took: bool,
        now: impl FnOnce() -> Instant,
    ) -> Option<Instant> {
        if !waiting {
            self.since = None;
        } else if took || self.since.is_none() {
            let start = now();
            self.since = Some(start);
            return Some(start);
        }
        None
    }

    /// When a stall of `timeout` is over, if the clock runs.
    pub(crate) fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.since.map(|since| since + timeout)
    }
}

/// The same until `deadline`; `None` once it has passed.
pub(crate) fn poll_timeout_until(deadline: Instant) -> Option<PollTimeout> {
    let wait = deadline.saturating_duration_since(Instant::now());
    (!wait.is_zero()).then(|| poll_timeout(wait))
}

fn to_time_t(t: SystemTime) -> libc::time_t {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    secs as libc::time_t
}

fn from_time_t(t: libc::time_t) -> SystemTime {
    if t >= 0 {
        UNIX_EPOCH + Duration::from_secs(t as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.unsigned_abs())
    }
}

fn local(t: SystemTime) -> libc::tm {
    let secs = to_time_t(t);
    // SAFETY: an all-zero `tm` is a valid value of that plain C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the
    // reentrant form and writes only into `tm`. On failure `tm` stays zeroed,
    // which renders as midnight rather than failing.
    unsafe { libc::localtime_r(&secs, &mut tm) };
    tm
}

/// Milliseconds since the Unix epoch, as the state file, the history and
/// the scoreboard store times (0 for a time before it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The time [`unix_ms`] stored.
pub(crate) fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// `HH:MM` in local time.
pub(crate) fn hhmm(t: SystemTime) -> String {
    let tm = local(t);
    format!("{:02}:{:02}", tm.tm_hour, tm.tm_min)
}

/// `YYYY-MM-DD HH:MM` in local time, for lines of an earlier day.
pub(crate) fn date_hhmm(t: SystemTime) -> String {
    let tm = local(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}

/// `HH:MM:SS` in local time.
pub(crate) fn hhmmss(t: SystemTime) -> String {
    let tm = local(t);
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// True when both times fall on the same local calendar day.
pub(crate) fn same_day(a: SystemTime, b: SystemTime) -> bool {
    let (a, b) = (local(a), local(b));
    (a.tm_year, a.tm_yday) == (b.tm_year, b.tm_yday)
}

/// The next moment after `now` at which the local clock shows
/// `hour:minute:00`: today, or tomorrow if that time has passed.
pub(crate) fn next_clock_time(now: SystemTime, hour: u8, minute: u8) -> SystemTime {
    let mut tm = local(now);
    tm.tm_hour = hour.into();
    tm.tm_min = minute.into();
    tm.tm_sec = 0;
    // Let mktime work out daylight saving time for the target day.
    tm.tm_isdst = -1;
    let mut due = make_time(&mut tm).unwrap_or(now);
    if due <= now {
        tm.tm_mday += 1;
        tm.tm_isdst = -1;
        due = make_time(&mut tm).unwrap_or(now + Duration::from_secs(86_400));
    }
    due
}

fn make_time(tm: &mut libc::tm) -> Option<SystemTime> {
    // SAFETY: `tm` is a valid, exclusively borrowed struct; mktime normalizes
    // it in place (a day of month past the end rolls into the next month).
    let t = unsafe { libc::mktime(tm) };
    (t != -1).then(|| from_time_t(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_clock_runs_only_while_nothing_is_taken() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let timeout = Duration::from_secs(30);
        let mut stall = Stall::default();
        assert_eq!(stall.note(true, false, || at(1)), Some(at(1)));
        // Still nothing taken: the clock runs on from where it started.
        assert_eq!(stall.note(true, false, || at(5)), None);
        assert_eq!(stall.deadline(timeout), Some(at(31)));
        // The peer took some: it starts again.
        assert_eq!(stall.note(true, true, || at(9)), Some(at(9)));
        assert_eq!(stall.deadline(timeout), Some(at(39)));
        // Nothing left waiting: it stops.
        assert_eq!(stall.note(false, true, || at(10)), None);
        assert_eq!(stall.deadline(timeout), None);
    }

    #[test]
    fn stamps_have_fixed_width() {
        let now = SystemTime::now();
        assert_eq!(hhmm(now).len(), 5);
        assert_eq!(hhmmss(now).len(), 8);
        assert!(hhmmss(now).starts_with(&hhmm(now)));
        assert_eq!(date_hhmm(now).len(), 16);
        assert!(date_hhmm(now).ends_with(&hhmm(now)));
    }

    #[test]
    fn next_clock_time_is_within_a_day_and_shows_that_time() {
        let now = SystemTime::now();
        for (h, m) in [(0, 0), (12, 30), (23, 59)] {
            let due = next_clock_time(now, h, m);
            assert!(due > now);
            // A day plus an hour of slack for a daylight saving change.
            assert!(due <= now + Duration::from_secs(25 * 3600));
            assert_eq!(hhmmss(due), format!("{h:02}:{m:02}:00"));
        }
    }
}
