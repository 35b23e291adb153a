//! Logging: every line says which process wrote it.
//!
//! All processes share one stderr, so each log line carries the process's
//! role and pid: `2026-11-25T12:00:00Z INFO  child[4242] alice registered`.
//! The pid is read at each line (a forked process has a new one); the role
//! is set once by each process right after it is forked.
//!
//! At `debug` the processes tell the process model's story, one line per
//! step (README, "Watch it work"), naming each fd by role and number
//! ([`fds`]); at `trace` every datagram and every write to a client. Both
//! are off by default, and a `log::debug!` that is off costs one load of
//! the level: whatever a line needs that costs more is made only under
//! `log::log_enabled!`.

use std::fmt;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU8, Ordering};

/// What a process is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    Parent = 0,
    Hub = 1,
    Child = 2,
    Echo = 3,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Parent => "parent",
            Role::Hub => "hub",
            Role::Child => "child",
            Role::Echo => "echo",
        }
    }
}

static ROLE: AtomicU8 = AtomicU8::new(Role::Parent as u8);

/// Records this process's role for its log lines.
pub fn set_role(role: Role) {
    ROLE.store(role as u8, Ordering::Relaxed);
}

fn role() -> Role {
    match ROLE.load(Ordering::Relaxed) {
        1 => Role::Hub,
        2 => Role::Child,
        3 => Role::Echo,
        _ => Role::Parent,
    }
}

/// Sets up env_logger: `RUST_LOG` decides, `info` by default.
pub fn init() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            writeln!(
                buf,
                "{} {:<5} {}[{}] {}",
                buf.timestamp_seconds(),
                record.level(),
                role().name(),
                std::process::id(),
                escape_controls(&record.args().to_string())
            )
        })
        .init();
}

/// Characters that must never reach a terminal: controls (C0, DEL, C1)
/// and the bidirectional overrides and isolates that make text read
/// differently from what it is. Clients' lines lose them (see
/// `protocol::sanitize`); log lines escape them.
pub fn is_forbidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A log line shows what a client sent (an address, a nickname, an error
/// about its bytes), and must not become a terminal control sequence on
/// the operator's screen, nor two log lines: control characters and
/// bidirectional overrides are written as `\u{..}` escapes.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_forbidden(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Names fds for a debug line, by role and number: `listening socket 3,
/// lifeline's write end 8`. The debug log tells which process holds,
/// opens and closes which fd, so that it can be read beside
/// `ls -l /proc/PID/fd` (README, "Watch it work").
///
/// Fds of one role in a row make one item: `its write ends 12, 13`.
pub fn fds<'a>(named: impl IntoIterator<Item = (&'a str, RawFd)>) -> String {
    let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
    for (role, fd) in named {
        match groups.last_mut() {
            Some((last, numbers)) if *last == role => numbers.push(fd.to_string()),
            _ => groups.push((role, vec![fd.to_string()])),
        }
    }
    let items: Vec<String> = groups
        .into_iter()
        .map(|(role, numbers)| {
            let plural = if numbers.len() > 1 { "s" } else { "" };
            format!("{role}{plural} {}", numbers.join(", "))
        })
        .collect();
    items.join(", ")
}

/// `1 line`, `2 lines`: a count for a log line.
pub fn count(n: usize, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

/// The number of an fd, for such a line.
pub fn fd_number(fd: &impl AsFd) -> RawFd {
    fd.as_fd().as_raw_fd()
}

/// A log line that may repeat without end (a refused connection in a
/// flood, a full disk): it is written at most once per `every`, and the
/// next one written says how many were held back meanwhile, so the log
/// stays short and loses no count.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    pub const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// Logs `message` as an error, unless one was logged less than `every`
    /// ago.
    pub fn error(&mut self, now: Instant, message: fmt::Arguments) {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            self.held_back += 1;
            return;
        }
        match std::mem::take(&mut self.held_back) {
            0 => log::error!("{message}"),
            n => log::error!("{message} (and {n} more like it)"),
        }
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::{Duration, Instant, Throttle, escape_controls, fds};

    #[test]
    fn a_throttle_lets_one_line_through_per_period_and_counts_the_rest() {
        let start = Instant::now();
        let mut throttle = Throttle::new(Duration::from_secs(60));
        throttle.error(start, format_args!("first"));
        assert_eq!((throttle.held_back, throttle.last), (0, Some(start)));
        for s in 1..=41 {
            throttle.error(start + Duration::from_secs(s), format_args!("held"));
        }
        assert_eq!((throttle.held_back, throttle.last), (41, Some(start)));
        let next = start + Duration::from_secs(60);
        throttle.error(next, format_args!("next"));
        assert_eq!((throttle.held_back, throttle.last), (0, Some(next)));
    }

    #[test]
    fn fds_are_named_by_role_and_one_role_in_a_row_is_one_item() {
        let named = [
            ("listening socket", 3),
            ("its write end", 12),
            ("its write end", 13),
        ];
        assert_eq!(fds(named), "listening socket 3, its write ends 12, 13");
        assert_eq!(fds([]), "");
    }

    #[test]
    fn control_characters_are_escaped_and_text_is_kept() {
        assert_eq!(escape_controls("alice joined"), "alice joined");
        assert_eq!(escape_controls("é ünïcödé 漢字"), "é ünïcödé 漢字");
        assert_eq!(
            escape_controls("a\x1b[2Jb\nc\u{9b}d\u{202e}e"),
            "a\\u{1b}[2Jb\\u{a}c\\u{9b}d\\u{202e}e"
        );
    }
}
