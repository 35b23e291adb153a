//! What waits for the client: the bytes its socket has not taken yet, and
//! the rules for a client that does not keep up (behind, stalled, cut off).
//!
//! The session puts lines in and flushes before it waits; the backlog
//! writes without ever blocking and keeps the clocks that decide when the
//! client is behind (the room waits for it) and when it must be cut off.
//!
//! May use: `protocol` and `os`.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::os::clock;
use crate::os::logging::{self, fd_number};
use crate::os::scoreboard::Slot;
use crate::protocol::ipc::Format;
use crate::protocol::{CRLF, websocket};

/// A client with more than this waiting is behind: for a while the child
/// stops taking lines from the hub, so the hub, once this child's queue
/// there is full, holds the room's senders back until the client has
/// caught up (to a quarter of this). A reader that is only busy for a
/// moment thus slows the senders down instead of losing anything. (Less
/// than half of `--max-backlog-bytes`, when that is smaller.)
const BEHIND_AT: usize = 256 * 1024;
/// How long the room waits for a client that is behind. One that has not
/// caught up by then reads more slowly than the room talks: the child
/// takes the hub's lines again, and the client is cut off if what waits
/// for it passes the hard bound.
const CATCH_UP_TIME: Duration = Duration::from_secs(1);
/// Written bytes at the front of the backlog are dropped once there are
/// this many, so a client that reads slowly but steadily, never catching
/// up, does not make the buffer grow without end.
const COMPACT_AT: usize = 512 * 1024;
/// Capacity kept between bursts.
const KEPT: usize = 4 * 1024;

/// When a client that does not keep up is cut off.
#[derive(Debug, Clone, Copy)]
pub struct BacklogLimits {
    /// Bytes that may wait in the child beyond what the kernel buffers
    /// (0: no limit): the memory one client may cost.
    pub bytes: usize,
    /// How long the client's socket may take nothing while lines wait
    /// (`None`: forever).
    pub stall: Option<Duration>,
}

/// Bytes for the client not yet written, and how the client keeps up.
pub(super) struct Backlog {
    bytes: Vec<u8>,
    /// How many of `bytes` are written.
    sent: usize,
    /// Lines not yet written in full, for `mpchat status`.
    unsent_lines: usize,
    limits: BacklogLimits,
    /// Since when the socket has taken nothing while bytes wait.
    stalled: clock::Stall,
    /// Since when the client has been behind (see [`BEHIND_AT`]).
    behind_since: Option<Instant>,
    /// When the socket last took something.
    last_output: Instant,
    /// How the client's lines are told apart.
    ends: LineEnds,
}

/// How the lines for a client are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineEnds {
    /// CR LF, for people's terminals.
    CrLf,
    /// LF alone, for programs.
    Lf,
    /// Each line a WebSocket text frame, for the browser's page.
    WebSocket,
}

impl LineEnds {
    /// How a client that speaks `format` over its own TCP stream reads.
    pub(super) fn for_format(format: Format) -> LineEnds {
        match format {
            Format::Text => LineEnds::CrLf,
            Format::Json => LineEnds::Lf,
        }
    }
}

impl Backlog {
    pub(super) fn new(limits: BacklogLimits, now: Instant) -> Backlog {
        Backlog {
            bytes: Vec::new(),
            sent: 0,
            unsent_lines: 0,
            limits,
            stalled: clock::Stall::default(),
            behind_since: None,
            last_output: now,
            ends: LineEnds::CrLf,
        }
    }

    /// From now on lines are delimited so.
    pub(super) fn delimit_lines(&mut self, ends: LineEnds) {
        self.ends = ends;
    }

    /// Queues one line, adding the line end.
    pub(super) fn push_line(&mut self, line: &str) {
        self.push_body(line.as_bytes());
    }

    /// Queues one line the hub rendered, its CR LF included.
    pub(super) fn push_rendered(&mut self, line: &[u8]) {
        match (self.ends, line.strip_suffix(CRLF.as_bytes())) {
            (LineEnds::Lf | LineEnds::WebSocket, Some(body)) => self.push_body(body),
            _ => {
                self.bytes.extend_from_slice(line);
                self.unsent_lines += 1;
            }
        }
    }

    fn push_body(&mut self, body: &[u8]) {
        match self.ends {
            LineEnds::CrLf => {
                self.bytes.extend_from_slice(body);
                self.bytes.extend_from_slice(CRLF.as_bytes());
            }
            LineEnds::Lf => {
                self.bytes.extend_from_slice(body);
                self.bytes.push(b'\n');
            }
            LineEnds::WebSocket => {
                websocket::text_header(body.len(), &mut self.bytes);
                self.bytes.extend_from_slice(body);
            }
        }
        self.unsent_lines += 1;
    }

    /// Queues bytes as they are: frames of the WebSocket's own.
    pub(super) fn push_raw(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Bytes wait for the socket.
    pub(super) fn waiting(&self) -> bool {
        self.sent < self.bytes.len()
    }

    /// When the socket last took something.
    pub(super) fn last_output(&self) -> Instant {
        self.last_output
    }

    /// Writes as much as `client` takes without waiting, and notes since
    /// when it has taken nothing. An error means the client is gone:
    /// nothing more can reach it, and the backlog is dropped.
    pub(super) fn flush(&mut self, client: &TcpStream, slot: &Slot) -> io::Result<()> {
        let (taken, unsent) = (self.sent, self.unsent_lines);
        let result = self.write(client, slot);
        if self.sent > taken && result.is_ok() && log::log_enabled!(log::Level::Debug) {
            log_written(
                client,
                self.sent - taken,
                unsent.saturating_sub(self.unsent_lines),
            );
        }
        self.note_if_behind();
        let (waiting, took) = (self.waiting(), self.sent > taken);
        let last_output = self.last_output;
        self.stalled.note(waiting, took, || {
            if took { last_output } else { Instant::now() }
        });
        slot.backlog
            .store(self.unsent_lines as u64, Ordering::Relaxed);
        if !self.waiting() {
            self.sent = 0;
            self.bytes.clear();
        } else if self.sent >= COMPACT_AT {
            self.bytes.drain(..self.sent);
            self.sent = 0;
        }
        result
    }

    fn write(&mut self, client: &TcpStream, slot: &Slot) -> io::Result<()> {
        while self.waiting() {
            match (&*client).write(&self.bytes[self.sent..]) {
                Ok(n) => {
                    let written = &self.bytes[self.sent..self.sent + n];
                    let lines = written.iter().filter(|&&b| b == b'\n').count();
                    if log::log_enabled!(log::Level::Trace) {
                        log_write(n, lines);
                    }
                    self.unsent_lines = self.unsent_lines.saturating_sub(lines);
                    slot.lines_out.fetch_add(lines as u64, Ordering::Relaxed);
                    self.sent += n;
                    self.last_output = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.sent = self.bytes.len();
                    self.unsent_lines = 0;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Notes when the client falls behind, and when it has caught up.
    fn note_if_behind(&mut self) {
        let waiting = self.bytes.len() - self.sent;
        let behind_at = match self.limits.bytes {
            0 => BEHIND_AT,
            bound => BEHIND_AT.min(bound / 2),
        };
        if waiting <= behind_at / 4 {
            self.behind_since = None;
        } else if waiting > behind_at && self.behind_since.is_none() {
            self.behind_since = Some(Instant::now());
        }
    }

    /// The client is behind, and the room still waits for it to catch up:
    /// the hub's lines are left in the socket meanwhile.
    pub(super) fn waiting_for_catch_up(&self) -> bool {
        self.behind_since
            .is_some_and(|since| since.elapsed() < CATCH_UP_TIME)
    }

    /// When the backlog's clocks need a look: the end of a stall or of the
    /// wait for the client to catch up.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let stall = self
            .limits
            .stall
            .and_then(|stall| self.stalled.deadline(stall));
        let catch_up = self
            .waiting_for_catch_up()
            .then(|| self.behind_since.map(|since| since + CATCH_UP_TIME))
            .flatten();
        stall.into_iter().chain(catch_up).min()
    }

    /// Why the client must be cut off for not keeping up, if it must:
    /// its socket has taken nothing for the stall timeout, or more waits
    /// for it than the hard bound.
    pub(super) fn falling_behind(&self, now: Instant) -> Option<String> {
        let BacklogLimits { bytes, stall } = self.limits;
        let waiting = self.bytes.len() - self.sent;
        if bytes > 0 && waiting > bytes {
            return Some(format!("{waiting} bytes waiting"));
        }
        let stall = stall?;
        let over = self.stalled.deadline(stall)?;
        (now >= over).then(|| format!("nothing taken for {} s", stall.as_secs()))
    }

    /// Forgets the lines a client that is being cut off for not reading
    /// would never read, so that the one line saying why comes next (after
    /// the rest of a line already half written).
    pub(super) fn drop_unsent(&mut self) {
        let unsent = &self.bytes[self.sent..];
        let keep = unsent.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.bytes.truncate(self.sent + keep);
        self.bytes.shrink_to_fit();
        self.unsent_lines = usize::from(keep > 0);
    }

    /// Nothing waits and nothing is written.
    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Holds more memory than it keeps between bursts.
    pub(super) fn holds_memory(&self) -> bool {
        self.bytes.capacity() > KEPT
    }

    /// Gives that memory back.
    pub(super) fn release(&mut self) {
        self.bytes = Vec::new();
    }
}

/// The debug log's line for one flush. Out of line, as the other log
/// lines on the way of every chat line: when the level is off, the hot
/// path keeps only the level check.
#[cold]
#[inline(never)]
fn log_written(client: &TcpStream, bytes: usize, lines: usize) {
    log::debug!(
        "wrote {bytes} bytes ({}) to the client socket {}",
        logging::count(lines, "line"),
        fd_number(client)
    );
}

/// The trace's line for one `write()`.
#[cold]
#[inline(never)]
fn log_write(bytes: usize, lines: usize) {
    log::trace!("write(): {bytes} bytes, {}", logging::count(lines, "line"));
}
