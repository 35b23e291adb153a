//! The live progress line on stderr: rewritten in place about four times a
//! second on a terminal, one plain line a second otherwise, nothing with
//! `--quiet`.

use std::io::{IsTerminal, Write};

/// What the line shows; zero totals leave their part out.
#[derive(Debug, Clone, Copy, Default)]
pub struct View {
    pub phase: &'static str,
    pub clients: u64,
    pub connected: u64,
    pub registered: u64,
    /// With rooms: clients in their room.
    pub joined: u64,
    pub to_send: u64,
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub cycles: u64,
    pub cycles_done: u64,
    /// The counter the rate is computed from.
    pub rate_of: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Quiet,
    Tty,
    Lines,
}

#[derive(Debug)]
pub struct Progress {
    mode: Mode,
    interval_ns: u64,
    start_ns: u64,
    next_ns: u64,
    last: Option<(u64, u64, &'static str)>,
    dirty: bool,
}

impl Progress {
    pub fn new(quiet: bool, start_ns: u64) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Tty
        } else {
            Mode::Lines
        };
        let interval_ns = if mode == Mode::Tty {
            250_000_000
        } else {
            1_000_000_000
        };
        Progress {
            mode,
            interval_ns,
            start_ns,
            next_ns: start_ns + interval_ns,
            last: None,
            dirty: false,
        }
    }

    /// Prints when the interval has passed; cheap otherwise.
    pub fn tick(&mut self, now_ns: u64, view: &View) {
        if self.mode == Mode::Quiet || now_ns < self.next_ns {
            return;
        }
        self.next_ns = now_ns + self.interval_ns;
        let rate = match self.last {
            Some((t, n, phase)) if phase == view.phase && now_ns > t => {
                Some(view.rate_of.saturating_sub(n) as f64 * 1e9 / (now_ns - t) as f64)
            }
            _ => None,
        };
        self.last = Some((now_ns, view.rate_of, view.phase));
        let mut line = format!(
            "{:<8} {:>6.1}s",
            view.phase,
            now_ns.saturating_sub(self.start_ns) as f64 / 1e9
        );
        if view.clients > 0 {
            line += &format!(
                "  conn {}/{}  reg {}/{}",
                view.connected, view.clients, view.registered, view.clients
            );
        }
        if view.joined > 0 {
            line += &format!("  joined {}/{}", view.joined, view.clients);
        }
        if view.cycles > 0 {
            line += &format!("  cycles {}/{}", view.cycles_done, view.cycles);
        }
        if view.to_send > 0 {
            line += &format!("  sent {}/{}", view.sent, view.to_send);
        }
        if view.expected > 0 {
            line += &format!("  delivered {}/{}", view.delivered, view.expected);
        }
        if let Some(rate) = rate {
            line += &format!("  {rate:.0}/s");
        }
        let mut err = std::io::stderr().lock();
        let _ = match self.mode {
            Mode::Tty => {
                self.dirty = true;
                write!(err, "\r{line:<100}")
            }
            _ => writeln!(err, "{line}"),
        };
        let _ = err.flush();
    }

    /// Ends an in-place line so later output starts on a fresh line.
    pub fn finish(&mut self) {
        if self.dirty {
            self.dirty = false;
            let _ = writeln!(std::io::stderr());
        }
    }
}
