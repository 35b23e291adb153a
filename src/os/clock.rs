//! Local wall-clock time: the `[HH:MM]` stamps on public lines and the due
//! time of `/schedule HH:MM`.
//!
//! The local time zone is the one `TZ` names, or else `/etc/localtime`, with
//! its rules from the system's zoneinfo files, as the C library reads them;
//! jiff reads and applies them, so no `unsafe` call into libc is needed and
//! the daylight-saving rules can be tested with a zone of the test's choosing.
//!
//! And how long a `poll()` waits for a deadline ([`poll_timeout`]).

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
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

/// The local time zone, looked up once per process.
///
/// Once, as the C library's `localtime_r` did: every stamp a process makes
/// uses the same rules, and none pays for the look at the zone files that
/// jiff's own cache repeats every few minutes. A child forked after the
/// lookup inherits it; no fork catches it half done, since
/// [`spawn::fork`](super::spawn::fork) refuses a process with threads.
fn system_zone() -> &'static TimeZone {
    static ZONE: OnceLock<TimeZone> = OnceLock::new();
    // Falls back to UTC when no zone can be found, as the C library does.
    ZONE.get_or_init(TimeZone::system)
}

fn timestamp(t: SystemTime) -> Timestamp {
    // jiff's times end at the years -9999 and 9999; a time beyond them (a
    // damaged stored time) shows as the nearer end rather than failing.
    Timestamp::try_from(t).unwrap_or(if t > UNIX_EPOCH {
        Timestamp::MAX
    } else {
        Timestamp::MIN
    })
}

fn local(zone: &TimeZone, t: SystemTime) -> DateTime {
    zone.to_datetime(timestamp(t))
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
    hhmm_in(system_zone(), t)
}

fn hhmm_in(zone: &TimeZone, t: SystemTime) -> String {
    let dt = local(zone, t);
    format!("{:02}:{:02}", dt.hour(), dt.minute())
}

/// `YYYY-MM-DD HH:MM` in local time, for lines of an earlier day.
pub(crate) fn date_hhmm(t: SystemTime) -> String {
    date_hhmm_in(system_zone(), t)
}

fn date_hhmm_in(zone: &TimeZone, t: SystemTime) -> String {
    let dt = local(zone, t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute()
    )
}

/// `HH:MM:SS` in local time.
pub(crate) fn hhmmss(t: SystemTime) -> String {
    hhmmss_in(system_zone(), t)
}

fn hhmmss_in(zone: &TimeZone, t: SystemTime) -> String {
    let dt = local(zone, t);
    format!("{:02}:{:02}:{:02}", dt.hour(), dt.minute(), dt.second())
}

/// True when both times fall on the same local calendar day.
pub(crate) fn same_day(a: SystemTime, b: SystemTime) -> bool {
    same_day_in(system_zone(), a, b)
}

fn same_day_in(zone: &TimeZone, a: SystemTime, b: SystemTime) -> bool {
    local(zone, a).date() == local(zone, b).date()
}

/// The next moment after `now` at which the local clock shows
/// `hour:minute:00`: today, or tomorrow if that time has passed. A time
/// the clock skips when it goes forward is that long after the skip.
pub(crate) fn next_clock_time(now: SystemTime, hour: u8, minute: u8) -> SystemTime {
    next_clock_time_in(system_zone(), now, hour, minute)
}

fn next_clock_time_in(zone: &TimeZone, now: SystemTime, hour: u8, minute: u8) -> SystemTime {
    let after = timestamp(now);
    let today = local(zone, now).date();
    let due = first_shown_after(zone, today, hour, minute, after).or_else(|| {
        let tomorrow = today.tomorrow().ok()?;
        first_shown_after(zone, tomorrow, hour, minute, after)
    });
    due.and_then(|t| SystemTime::try_from(t).ok())
        // Only for an hour or a minute out of range, or the end of time.
        .unwrap_or_else(|| now.checked_add(Duration::from_secs(86_400)).unwrap_or(now))
}

/// The first moment after `after` at which the clock shows `hour:minute:00`
/// on `day`, if there is one.
fn first_shown_after(
    zone: &TimeZone,
    day: Date,
    hour: u8,
    minute: u8,
    after: Timestamp,
) -> Option<Timestamp> {
    let time = Time::new(hour.try_into().ok()?, minute.try_into().ok()?, 0, 0).ok()?;
    let shown = zone.to_ambiguous_timestamp(day.to_datetime(time));
    let ahead = |t: Result<Timestamp, jiff::Error>| t.ok().filter(|&t| t > after);
    if let AmbiguousOffset::Fold { .. } = shown.offset() {
        // When the clock goes back it shows the time twice, in summer time
        // and again an hour later; the next time it shows it is the first of
        // the two still ahead. (No single jiff rule says that. `mktime`
        // picked the one with the offset of its previous answer in the
        // process: the first when asked the day before, as jiff's
        // "compatible" and "earlier" do, but either when asked that day.)
        return ahead(shown.earlier()).or_else(|| ahead(shown.later()));
    }
    // When the clock goes forward it never shows a time in the gap; such a
    // time is taken to mean as long after the change as it is after the
    // gap's start (02:30 on the day the clock goes from 02:00 to 03:00 is
    // 03:30 summer time), as `mktime` had it: jiff's "compatible" rule.
    ahead(shown.compatible())
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

    /// Central European time, from a POSIX rule so that the tests do not
    /// depend on the machine's zone files: the clock goes from 02:00 to
    /// 03:00 on 2026-03-29 and from 03:00 back to 02:00 on 2026-10-25.
    fn berlin() -> TimeZone {
        TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap()
    }

    fn utc(s: &str) -> SystemTime {
        SystemTime::try_from(s.parse::<Timestamp>().unwrap()).unwrap()
    }

    #[test]
    fn stamps_follow_the_zone_across_its_changes() {
        let zone = berlin();
        assert_eq!(hhmm_in(&zone, utc("2026-03-29T00:59:00Z")), "01:59");
        assert_eq!(hhmmss_in(&zone, utc("2026-03-29T01:00:00Z")), "03:00:00");
        // The hour the clock goes back is shown twice.
        assert_eq!(hhmm_in(&zone, utc("2026-10-25T00:30:00Z")), "02:30");
        assert_eq!(hhmm_in(&zone, utc("2026-10-25T01:30:00Z")), "02:30");
        assert_eq!(
            date_hhmm_in(&zone, utc("2026-07-01T22:30:00Z")),
            "2026-07-02 00:30"
        );
    }

    #[test]
    fn same_day_is_a_local_calendar_day() {
        let zone = berlin();
        let after_midnight = utc("2026-07-01T22:30:00Z");
        assert!(same_day_in(
            &zone,
            after_midnight,
            utc("2026-07-02T10:00:00Z")
        ));
        assert!(!same_day_in(
            &zone,
            after_midnight,
            utc("2026-07-01T21:00:00Z")
        ));
    }

    #[test]
    fn a_clock_time_is_today_while_it_is_ahead_and_tomorrow_once_it_is_not() {
        let zone = berlin();
        let due = |now, h, m| next_clock_time_in(&zone, utc(now), h, m);
        // 12:00 summer time.
        assert_eq!(
            due("2026-07-01T10:00:00Z", 12, 30),
            utc("2026-07-01T10:30:00Z")
        );
        assert_eq!(
            due("2026-07-01T10:00:00Z", 0, 0),
            utc("2026-07-01T22:00:00Z")
        );
        // Exactly 12:30 is no longer ahead.
        assert_eq!(
            due("2026-07-01T10:30:00Z", 12, 30),
            utc("2026-07-02T10:30:00Z")
        );
    }

    #[test]
    fn a_clock_time_in_the_gap_is_as_long_after_the_change() {
        let zone = berlin();
        let due = |now| next_clock_time_in(&zone, utc(now), 2, 30);
        // 02:30 on 2026-03-29 is never shown; it means 03:30 summer time,
        // asked the evening before (23:00), an hour before the change
        // (01:00) or just after it (03:10).
        for now in [
            "2026-03-28T22:00:00Z",
            "2026-03-29T00:00:00Z",
            "2026-03-29T01:10:00Z",
        ] {
            assert_eq!(due(now), utc("2026-03-29T01:30:00Z"), "asked at {now}");
        }
        // Once that has passed (04:10), the next day's 02:30, which the
        // clock does show (not 03:30 again).
        assert_eq!(due("2026-03-29T02:10:00Z"), utc("2026-03-30T00:30:00Z"));
    }

    #[test]
    fn a_clock_time_in_the_fold_is_the_next_of_its_two() {
        let zone = berlin();
        let due = |now| next_clock_time_in(&zone, utc(now), 2, 30);
        let summer = utc("2026-10-25T00:30:00Z");
        let winter = utc("2026-10-25T01:30:00Z");
        // Asked the evening before (23:00) or that night (00:00 summer
        // time): the first 02:30.
        assert_eq!(due("2026-10-24T21:00:00Z"), summer);
        assert_eq!(due("2026-10-24T22:00:00Z"), summer);
        // At the first 02:30 or between the two (02:50 summer time): the
        // second, an hour after the first.
        assert_eq!(due("2026-10-25T00:30:00Z"), winter);
        assert_eq!(due("2026-10-25T00:50:00Z"), winter);
        // After both (02:50 winter time): the next day's.
        assert_eq!(due("2026-10-25T01:50:00Z"), utc("2026-10-26T01:30:00Z"));
        assert_eq!(hhmmss_in(&zone, summer), "02:30:00");
        assert_eq!(hhmmss_in(&zone, winter), "02:30:00");
    }
}
