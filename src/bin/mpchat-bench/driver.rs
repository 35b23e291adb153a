//! The event loop: one thread, one epoll set, every client socket
//! non-blocking and edge-triggered. It owns the connections and runs the
//! phases of a test on them: connecting and registering N clients, with
//! `--rooms` on the line protocol each joining its room, waiting for the
//! rooms to go quiet, the fan-out traffic, and connect cycles.
//!
//! Every loop here ends by count or by time: each phase takes a deadline,
//! and the stop flag (SIGINT/SIGTERM) is checked on every turn.
//!
//! A sender queues its messages a batch at a time, and the next batch only
//! once the last one is all written, so what waits for a full socket is at
//! most one batch: the socket's send buffer holds the backlog, not the
//! generator. With a window (`--window W`) a sender has at most W messages
//! on their way. Without one (`--window 0`) it writes whenever epoll says
//! its socket takes more, until every message is written, as a paste or a
//! bot would: the server's buffers and limits then get the whole load.
//!
//! With several servers, client `i` connects to the one `targets::Spread`
//! gives it; from then on the loop does not care which server a socket
//! goes to.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{getsockopt, sockopt};

use crate::cli::ProtoKind;
use crate::clock::Clock;
use crate::net::{self, Sources};
use crate::progress::{Progress, View};
use crate::proto::{self, Proto, Reg, Seen};
use crate::tally::{Histogram, Tally};
use crate::targets::Spread;
use crate::ws;

/// Reads of 64 KiB one readiness event may do before the socket goes to
/// the back of the line, so one busy socket cannot starve the others.
const MAX_READS: usize = 16;
const READ_SIZE: usize = 64 * 1024;
/// A line this long without a line end is not the protocol we speak.
const MAX_LINE: usize = 64 * 1024;
/// A sender queues messages until a batch holds this many bytes (or its
/// messages run out), and queues no more until the batch is all written.
const BATCH_BYTES: usize = 16 * 1024;
/// Longest kept "last line" of a connection, to explain why it ended.
const INFO_MAX: usize = 160;
/// With messages outstanding and nothing sent or delivered for this long
/// (or three send intervals at a slow --rate), the run is stuck: report
/// rather than wait for the timeout.
const STALL_NS: u64 = 10_000_000_000;
/// Once the server has disconnected a client that had not got everything
/// (or a sender that had not sent everything), the run cannot complete:
/// when no sender has more to send, it ends once nothing has been delivered
/// for this long, rather than waiting for the stall.
const CUT_QUIET_NS: u64 = 2_000_000_000;

/// The failure reason of a client whose `/join` the server refused.
pub const REFUSED_JOIN: &str = "server refused the /join";

/// Why a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    Done,
    TimedOut,
    Interrupted,
    Stalled,
    /// The server disconnected clients before they got (or sent) all their
    /// messages, and the rest had stopped arriving.
    Disconnected,
}

impl Ended {
    pub fn word(self) -> &'static str {
        match self {
            Ended::Done => "done",
            Ended::TimedOut => "timed out",
            Ended::Interrupted => "interrupted",
            Ended::Stalled => "stalled",
            Ended::Disconnected => "ended early (clients disconnected)",
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum CloseWhy {
    /// Connect cycle finished (first reply seen).
    Done,
    Eof,
    Io(&'static str, io::Error),
    Connect(String),
    Refused(String),
    Protocol(String),
}

/// One kind of failure, how often, and a line the server sent near it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    pub reason: String,
    pub count: u64,
    pub last_line: Option<String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub opened: u64,
    pub connected: u64,
    pub registered: u64,
    /// Failed before registering.
    pub failed: u64,
    /// Closed after registering (not counting finished connect cycles).
    pub dropped: u64,
    /// Line protocol with rooms: in their room after their `/join`.
    pub joined: u64,
    /// Connect cycles finished.
    pub completed: u64,
}

struct Conn {
    sock: TcpStream,
    id: u32,
    reg: Reg,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// When the step being timed began: the connect, then (with rooms on
    /// the line protocol) the `/join`.
    started_ns: u64,
    /// The last line that was not a benchmark message.
    info: Vec<u8>,
}

/// How many of its messages a sender may have queued by a given time: the
/// pacing decision of the fan-out, without I/O.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub senders: usize,
    pub messages: u32,
    /// Messages per second over all senders; 0 is full speed.
    pub rate: u64,
    /// Messages a sender may have on their way; 0 is no window.
    pub window: u32,
    pub start_ns: u64,
}

impl Pacing {
    /// Time between two messages of one sender at the rate (0: full speed).
    pub fn interval_ns(&self) -> f64 {
        if self.rate > 0 {
            self.senders as f64 * 1e9 / self.rate as f64
        } else {
            0.0
        }
    }

    /// Messages of sender `s` due by `now_ns`: all at full speed; at a rate,
    /// one per interval, the senders' turns spread evenly over it.
    fn due(&self, s: usize, now_ns: u64) -> u32 {
        if self.rate == 0 {
            return self.messages;
        }
        let interval = self.interval_ns();
        let offset = interval * s as f64 / self.senders as f64;
        let elapsed = now_ns.saturating_sub(self.start_ns) as f64 - offset;
        if elapsed < 0.0 {
            0
        } else {
            ((elapsed / interval) as u64 + 1).min(u64::from(self.messages)) as u32
        }
    }

    /// One past the last seq sender `s` may have queued by `now_ns`, with
    /// `acked` of its messages back.
    pub fn limit(&self, s: usize, now_ns: u64, acked: u32) -> u32 {
        let windowed = if self.window == 0 {
            self.messages
        } else {
            acked.saturating_add(self.window)
        };
        self.messages.min(windowed).min(self.due(s, now_ns))
    }
}

/// The fan-out's senders while it runs.
struct Sending {
    pacing: Pacing,
    /// Per sender: the slot of its connection.
    slots: Vec<Option<usize>>,
    /// Per sender: the next seq to queue.
    next: Vec<u32>,
    sent: u64,
    first_send_ns: Option<u64>,
    last_send_ns: Option<u64>,
}

/// One server the clients connect to, with the source addresses its
/// connections are spread over.
#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub sources: Sources,
}

/// Results of a fan-out run beyond what the tally holds.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    pub ended: Ended,
    pub sent: u64,
    pub first_send_ns: Option<u64>,
    pub last_send_ns: Option<u64>,
}

pub struct Driver {
    clock: Clock,
    proto: Proto,
    /// The servers, in the order the clients are spread over them.
    targets: Vec<Target>,
    spread: Spread,
    epoll: Epoll,
    events: Vec<EpollEvent>,
    scratch: Vec<u8>,
    conns: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free: Vec<usize>,
    /// Sockets with more to read, and the flags they were reported with.
    again: Vec<(u64, EpollFlags)>,
    close_on_register: bool,
    pub counts: Counts,
    failures: BTreeMap<String, Failure>,
    pub connect_lat: Histogram,
    pub register_lat: Histogram,
    /// `/join` sent to own "has joined" line.
    pub join_lat: Histogram,
    pub tally: Option<Tally>,
    sending: Option<Sending>,
    /// Clients (by id) closed after registering while a tally ran.
    pub gone: Vec<u32>,
    /// Benchmark messages seen when no tally was running.
    pub stray: u64,
    last_rx_ns: u64,
    progress: Progress,
    stop: &'static AtomicBool,
}

impl Driver {
    pub fn new(
        clock: Clock,
        proto: Proto,
        targets: Vec<Target>,
        progress: Progress,
        stop: &'static AtomicBool,
    ) -> Result<Driver, String> {
        if targets.is_empty() {
            return Err("internal: no server to connect to".into());
        }
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| format!("epoll_create1: {e}"))?;
        Ok(Driver {
            clock,
            proto,
            spread: Spread::new(targets.len()),
            targets,
            epoll,
            events: vec![EpollEvent::empty(); 1024],
            scratch: vec![0; READ_SIZE],
            conns: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            again: Vec::new(),
            close_on_register: false,
            counts: Counts::default(),
            failures: BTreeMap::new(),
            connect_lat: Histogram::new(),
            register_lat: Histogram::new(),
            join_lat: Histogram::new(),
            tally: None,
            sending: None,
            gone: Vec::new(),
            stray: 0,
            last_rx_ns: 0,
            progress,
            stop,
        })
    }

    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    pub fn failures(&self) -> Vec<Failure> {
        self.failures.values().cloned().collect()
    }

    pub fn finish_progress(&mut self) {
        self.progress.finish();
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn fail(&mut self, reason: String, line: Option<String>) {
        let entry = self.failures.entry(reason.clone()).or_insert(Failure {
            reason,
            count: 0,
            last_line: None,
        });
        entry.count += 1;
        if line.is_some() {
            entry.last_line = line;
        }
    }

    /// Starts one connection for client `id`.
    fn open(&mut self, id: u32) {
        self.counts.opened += 1;
        let now = self.now_ns();
        let target = &mut self.targets[self.spread.target_of(id as usize)];
        let sock = match net::start_connect(target.addr, &mut target.sources) {
            Ok(s) => s,
            Err(e) => {
                self.counts.failed += 1;
                self.fail(e, None);
                return;
            }
        };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.conns.push(None);
                self.gens.push(0);
                self.conns.len() - 1
            }
        };
        let token = (u64::from(self.gens[slot]) << 32) | slot as u64;
        let flags = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLOUT
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLET;
        if let Err(e) = self.epoll.add(&sock, EpollEvent::new(flags, token)) {
            self.free.push(slot);
            self.counts.failed += 1;
            self.fail(format!("epoll_ctl: {}", e.desc()), None);
            return;
        }
        self.conns[slot] = Some(Conn {
            sock,
            id,
            reg: Reg::Connecting,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            started_ns: now,
            info: Vec::new(),
        });
    }

    fn close(&mut self, slot: usize, why: CloseWhy) {
        let Some(conn) = self.conns[slot].take() else {
            return;
        };
        self.gens[slot] = self.gens[slot].wrapping_add(1);
        self.free.push(slot);
        let registered = conn.reg.logged_in();
        let joining = conn.reg == Reg::Joining;
        let line = (!conn.info.is_empty()).then(|| proto::text(&conn.info));
        // Dropping the socket closes it, which also takes it out of the
        // epoll set.
        drop(conn.sock);
        let (reason, sample) = match why {
            CloseWhy::Done => {
                self.counts.completed += 1;
                return;
            }
            CloseWhy::Eof if conn.reg == Reg::Connecting => {
                ("connection closed during connect".to_string(), line)
            }
            CloseWhy::Eof if registered => {
                ("server closed a registered connection".to_string(), line)
            }
            CloseWhy::Eof => (
                "server closed the connection before registration".to_string(),
                line,
            ),
            CloseWhy::Io(op, e) => (format!("{op}: {e}"), line),
            CloseWhy::Connect(e) => (format!("connect: {e}"), None),
            CloseWhy::Refused(text) if joining => (REFUSED_JOIN.to_string(), Some(text)),
            CloseWhy::Refused(text) => ("server refused".to_string(), Some(text)),
            CloseWhy::Protocol(e) => (e, line),
        };
        if registered {
            self.counts.dropped += 1;
            if self.tally.is_some() {
                self.gone.push(conn.id);
            }
        } else {
            self.counts.failed += 1;
        }
        self.fail(reason, sample);
    }

    /// Waits up to `timeout_ms` for events and handles them.
    fn turn(&mut self, timeout_ms: u16) -> Result<(), String> {
        let timeout = if self.again.is_empty() { timeout_ms } else { 0 };
        let n = match self.epoll.wait(&mut self.events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(format!("epoll_wait: {e}")),
        };
        for i in 0..n {
            let ev = self.events[i];
            self.dispatch(ev.data(), ev.events());
        }
        for (token, flags) in std::mem::take(&mut self.again) {
            self.dispatch(token, flags);
        }
        Ok(())
    }

    fn dispatch(&mut self, token: u64, flags: EpollFlags) {
        let slot = (token & 0xffff_ffff) as usize;
        if self.gens.get(slot) != Some(&((token >> 32) as u32)) {
            return;
        }
        let now = self.now_ns();
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        if conn.reg == Reg::Connecting {
            if !flags.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP)
            {
                return;
            }
            match getsockopt(&conn.sock, sockopt::SocketError) {
                Ok(0) => {}
                Ok(err) => {
                    let e = Errno::from_raw(err);
                    return self.close(slot, CloseWhy::Connect(e.desc().to_string()));
                }
                Err(e) => return self.close(slot, CloseWhy::Connect(e.desc().to_string())),
            }
            self.counts.connected += 1;
            self.connect_lat.record(now.saturating_sub(conn.started_ns));
            conn.reg = self.proto.on_connect(conn.id, &mut conn.out);
        }
        if flags.intersects(
            EpollFlags::EPOLLIN
                | EpollFlags::EPOLLRDHUP
                | EpollFlags::EPOLLHUP
                | EpollFlags::EPOLLERR,
        ) && let Some(why) = self.read_ready(slot, token, flags)
        {
            return self.close(slot, why);
        }
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        if let Err(why) = flush(conn) {
            return self.close(slot, why);
        }
        // Without a window, a sender writes whenever its socket takes more.
        let id = conn.id as usize;
        if flags.contains(EpollFlags::EPOLLOUT)
            && let Some(sending) = &self.sending
            && sending.pacing.window == 0
            && sending.slots.get(id) == Some(&Some(slot))
        {
            self.refill(id);
        }
    }

    /// Reads what the socket holds and handles every complete line.
    fn read_ready(&mut self, slot: usize, token: u64, flags: EpollFlags) -> Option<CloseWhy> {
        // The peer closed or reset the connection: what it sent before and
        // then the end must be read now, for no new edge will come.
        let ending =
            flags.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR);
        let conn = self.conns[slot].as_mut()?;
        let mut ctx = LineCtx {
            proto: &self.proto,
            tally: &mut self.tally,
            counts: &mut self.counts,
            register_lat: &mut self.register_lat,
            join_lat: &mut self.join_lat,
            stray: &mut self.stray,
            close_on_register: self.close_on_register,
            now: 0,
        };
        for _ in 0..MAX_READS {
            match (&conn.sock).read(&mut self.scratch) {
                Ok(0) => return Some(CloseWhy::Eof),
                Ok(n) => {
                    ctx.now = self.clock.now_ns();
                    self.last_rx_ns = ctx.now;
                    if let Err(why) = feed(conn, &self.scratch[..n], &mut ctx) {
                        return Some(why);
                    }
                    // A short read emptied the socket; new data brings a
                    // new edge (but an end already reported does not).
                    if n < self.scratch.len() && !ending {
                        return None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(CloseWhy::Io("read", e)),
            }
        }
        self.again.push((token, flags));
        None
    }

    /// Queues and writes sender `s`'s due messages: a batch at a time, the
    /// next only once the last is all written, until the socket is full or
    /// nothing more is due.
    fn refill(&mut self, s: usize) {
        let Some(sending) = self.sending.as_mut() else {
            return;
        };
        let Some(slot) = sending.slots.get(s).copied().flatten() else {
            return;
        };
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let acked = self.tally.as_ref().map_or(0, |t| t.acked[s]);
        let result = loop {
            if let Err(why) = flush(conn) {
                break Err(why);
            }
            if !conn.out.is_empty() {
                // The socket is full; its next edge brings us back.
                break Ok(());
            }
            let now = self.clock.now_ns();
            let limit = sending.pacing.limit(s, now, acked);
            let first = sending.next[s];
            if first >= limit {
                break Ok(());
            }
            let mut q = first;
            while q < limit && conn.out.len() < BATCH_BYTES {
                self.proto.write_message(&mut conn.out, s as u32, q, now);
                q += 1;
            }
            sending.next[s] = q;
            sending.sent += u64::from(q - first);
            sending.first_send_ns.get_or_insert(now);
            sending.last_send_ns = Some(now);
        };
        if let Err(why) = result {
            self.close(slot, why);
        }
    }

    /// True when the run can no longer complete and nothing more will be
    /// sent: a client the server disconnected during the fan-out had not
    /// got all it should, or (a sender) not queued all its messages, and
    /// every sender has queued all its messages or is gone.
    fn cut_off(&self) -> bool {
        let (Some(tally), Some(sending)) = (&self.tally, &self.sending) else {
            return false;
        };
        let sending_over = sending
            .slots
            .iter()
            .zip(&sending.next)
            .all(|(slot, &next)| {
                next >= sending.pacing.messages
                    || slot.is_none_or(|slot| self.conns[slot].is_none())
            });
        sending_over
            && self.gone.iter().any(|&id| {
                let id = id as usize;
                tally.missing(id) > 0
                    || sending
                        .next
                        .get(id)
                        .is_some_and(|&n| n < sending.pacing.messages)
            })
    }

    fn view(&self, phase: &'static str) -> View {
        View {
            phase,
            connected: self.counts.connected,
            registered: self.counts.registered,
            ..View::default()
        }
    }

    /// Connects and registers clients 0..n, at most `in_flight` of them
    /// between connect and registration at once.
    pub fn connect_clients(
        &mut self,
        n: usize,
        in_flight: usize,
        deadline_ns: u64,
    ) -> Result<Ended, String> {
        self.close_on_register = false;
        let n = n as u64;
        let base = self.counts;
        loop {
            let now = self.now_ns();
            let registered = self.counts.registered - base.registered;
            let failed = self.counts.failed - base.failed;
            if registered + failed >= n {
                return Ok(Ended::Done);
            }
            if self.stopped() {
                return Ok(Ended::Interrupted);
            }
            if now >= deadline_ns {
                return Ok(Ended::TimedOut);
            }
            let mut opened = self.counts.opened - base.opened;
            while opened < n && opened.saturating_sub(registered + failed) < in_flight as u64 {
                self.open(opened as u32);
                opened += 1;
            }
            self.turn(50)?;
            let view = View {
                clients: n,
                rate_of: self.counts.registered,
                ..self.view("connect")
            };
            self.progress.tick(self.now_ns(), &view);
        }
    }

    /// With rooms on the line protocol: every registered client sends its
    /// `/join` at once, and the phase ends when each is in its room (its
    /// own "has joined" line came) or gone, so traffic starts with every
    /// room complete. Returns how it ended and how many were asked to join;
    /// with nothing to join (one room, IRC) it asks none and is done.
    pub fn join_rooms(&mut self, deadline_ns: u64) -> Result<(Ended, u64), String> {
        self.close_on_register = false;
        let base = self.counts;
        let now = self.now_ns();
        let mut asked = 0u64;
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            if conn.reg != Reg::Registered {
                continue;
            }
            let Some(next) = self.proto.start_join(conn.id, &mut conn.out) else {
                return Ok((Ended::Done, 0));
            };
            conn.reg = next;
            conn.started_ns = now;
            asked += 1;
            // What the socket does not take now goes with its next
            // writable edge (dispatch flushes).
            if let Err(why) = flush(conn) {
                self.close(slot, why);
            }
        }
        let mut last_joined = 0;
        let mut last_progress = now;
        loop {
            let now = self.now_ns();
            let joined = self.counts.joined - base.joined;
            let gone = self.counts.dropped - base.dropped;
            if joined + gone >= asked {
                return Ok((Ended::Done, asked));
            }
            if self.stopped() {
                return Ok((Ended::Interrupted, asked));
            }
            if now >= deadline_ns {
                return Ok((Ended::TimedOut, asked));
            }
            if joined != last_joined {
                last_joined = joined;
                last_progress = now;
            } else if now - last_progress >= STALL_NS {
                return Ok((Ended::Stalled, asked));
            }
            self.turn(50)?;
            let view = View {
                clients: asked,
                joined: self.counts.joined - base.joined,
                rate_of: self.counts.joined,
                ..self.view("join")
            };
            self.progress.tick(self.now_ns(), &view);
        }
    }

    /// Keeps reading until nothing has arrived for `quiet_ns`, at most
    /// `max_ns`. Returns how long it took and whether it went quiet.
    pub fn settle(
        &mut self,
        quiet_ns: u64,
        max_ns: u64,
        deadline_ns: u64,
    ) -> Result<(u64, bool), String> {
        let start = self.now_ns();
        self.last_rx_ns = self.last_rx_ns.max(start);
        loop {
            let now = self.now_ns();
            if now.saturating_sub(self.last_rx_ns) >= quiet_ns {
                return Ok((now - start, true));
            }
            if now - start >= max_ns || now >= deadline_ns || self.stopped() {
                return Ok((now - start, false));
            }
            self.turn(20)?;
            let view = self.view("settle");
            self.progress.tick(self.now_ns(), &view);
        }
    }

    /// Keeps the clients connected (answering pings, counting late
    /// deliveries) for `dur_ns`.
    pub fn hold(&mut self, phase: &'static str, dur_ns: u64) -> Result<(), String> {
        let end = self.now_ns() + dur_ns;
        while self.now_ns() < end && !self.stopped() {
            self.turn(20)?;
            let view = View {
                clients: self.counts.opened,
                ..self.view(phase)
            };
            self.progress.tick(self.now_ns(), &view);
        }
        Ok(())
    }

    /// The fan-out: clients 0..senders each send `messages` messages, all
    /// at once or at `rate` messages per second in total, never more than
    /// `window` ahead of what has come back (0: no window). Deliveries go
    /// to `tally`.
    pub fn fanout(
        &mut self,
        tally: Tally,
        senders: usize,
        messages: u32,
        rate: u64,
        window: u32,
        deadline_ns: u64,
    ) -> Result<Traffic, String> {
        self.close_on_register = false;
        let expected = tally.expected();
        self.tally = Some(tally);
        self.gone.clear();
        let mut slots = vec![None; senders];
        for (slot, conn) in self.conns.iter().enumerate() {
            if let Some(c) = conn
                && (c.id as usize) < senders
            {
                slots[c.id as usize] = Some(slot);
            }
        }
        let start = self.now_ns();
        let pacing = Pacing {
            senders,
            messages,
            rate,
            window,
            start_ns: start,
        };
        self.sending = Some(Sending {
            pacing,
            slots,
            next: vec![0; senders],
            sent: 0,
            first_send_ns: None,
            last_send_ns: None,
        });
        let mut ended = Ended::Done;
        let to_send = senders as u64 * u64::from(messages);
        // A slow --rate leaves long gaps between sends that are no stall.
        let stall_ns = STALL_NS.max((3.0 * pacing.interval_ns()) as u64);
        let mut last_progress = start;
        let mut last_count = (0u64, 0u64);
        loop {
            let now = self.now_ns();
            if self.stopped() {
                ended = Ended::Interrupted;
                break;
            }
            if now >= deadline_ns {
                ended = Ended::TimedOut;
                break;
            }
            let sent = self.sending.as_ref().map_or(0, |s| s.sent);
            let received = self.tally.as_ref().map_or(0, |t| t.received);
            if (sent, received) != last_count {
                last_count = (sent, received);
                last_progress = now;
            } else if now - last_progress >= stall_ns {
                ended = Ended::Stalled;
                break;
            } else if now - last_progress >= CUT_QUIET_NS && self.cut_off() {
                ended = Ended::Disconnected;
                break;
            }
            if sent == to_send && received >= expected {
                break;
            }
            for s in 0..senders {
                self.refill(s);
            }
            self.turn(if rate > 0 { 1 } else { 20 })?;
            let view = View {
                to_send,
                sent: self.sending.as_ref().map_or(0, |s| s.sent),
                expected,
                delivered: self.tally.as_ref().map_or(0, |t| t.received),
                rate_of: self.tally.as_ref().map_or(0, |t| t.received),
                ..self.view("fanout")
            };
            self.progress.tick(self.now_ns(), &view);
        }
        let sending = self
            .sending
            .take()
            .ok_or("internal: the fanout senders went missing")?;
        Ok(Traffic {
            ended,
            sent: sending.sent,
            first_send_ns: sending.first_send_ns,
            last_send_ns: sending.last_send_ns,
        })
    }

    /// Connect cycles: `cycles` times connect, register, wait for the first
    /// reply, close; `in_flight` at once. Each cycle's time goes to
    /// `register_lat`.
    pub fn cycles(
        &mut self,
        cycles: u64,
        in_flight: usize,
        deadline_ns: u64,
    ) -> Result<Ended, String> {
        self.close_on_register = true;
        let base = self.counts;
        loop {
            let done = self.counts.completed - base.completed;
            let failed = self.counts.failed + self.counts.dropped - base.failed - base.dropped;
            if done + failed >= cycles {
                return Ok(Ended::Done);
            }
            if self.stopped() {
                return Ok(Ended::Interrupted);
            }
            if self.now_ns() >= deadline_ns {
                return Ok(Ended::TimedOut);
            }
            let mut started = self.counts.opened - base.opened;
            while started < cycles && started.saturating_sub(done + failed) < in_flight as u64 {
                self.open(started as u32);
                started += 1;
            }
            self.turn(50)?;
            let view = View {
                phase: "connect",
                cycles,
                cycles_done: self.counts.completed - base.completed,
                rate_of: self.counts.completed,
                ..View::default()
            };
            self.progress.tick(self.now_ns(), &view);
        }
    }

    /// Closes every connection.
    pub fn close_all(&mut self) {
        for slot in 0..self.conns.len() {
            if let Some(conn) = self.conns[slot].take() {
                self.gens[slot] = self.gens[slot].wrapping_add(1);
                self.free.push(slot);
                drop(conn);
            }
        }
    }
}

/// Writes what is queued until done or the socket is full.
fn flush(conn: &mut Conn) -> Result<(), CloseWhy> {
    while conn.out_pos < conn.out.len() {
        match (&conn.sock).write(&conn.out[conn.out_pos..]) {
            Ok(0) => {
                return Err(CloseWhy::Protocol(
                    "write: connection accepts no more data".into(),
                ));
            }
            Ok(n) => conn.out_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CloseWhy::Io("write", e)),
        }
    }
    conn.out.clear();
    conn.out_pos = 0;
    Ok(())
}

/// The parts of the driver a line can change, borrowed apart from the
/// connection being read.
struct LineCtx<'a> {
    proto: &'a Proto,
    tally: &'a mut Option<Tally>,
    counts: &'a mut Counts,
    register_lat: &'a mut Histogram,
    join_lat: &'a mut Histogram,
    stray: &'a mut u64,
    close_on_register: bool,
    now: u64,
}

/// Splits new bytes into lines (keeping a partial line for next time) and
/// handles each.
fn feed(conn: &mut Conn, data: &[u8], ctx: &mut LineCtx) -> Result<(), CloseWhy> {
    if ctx.proto.kind == ProtoKind::Ws {
        return feed_ws(conn, data, ctx);
    }
    let mut buf = std::mem::take(&mut conn.inbuf);
    let joined = !buf.is_empty();
    if joined {
        buf.extend_from_slice(data);
    }
    let src: &[u8] = if joined { &buf } else { data };
    let mut start = 0;
    let mut result = Ok(());
    while let Some(off) = src[start..].iter().position(|&b| b == b'\n') {
        let mut line = &src[start..start + off];
        start += off + 1;
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if let Err(why) = handle_line(conn, line, ctx) {
            result = Err(why);
            break;
        }
    }
    let rest_len = src.len() - start;
    if result.is_ok() && rest_len > MAX_LINE {
        result = Err(CloseWhy::Protocol(format!(
            "server sent over {MAX_LINE} bytes without a line end"
        )));
    }
    if joined {
        buf.drain(..start);
    } else {
        buf.extend_from_slice(&data[start..]);
    }
    conn.inbuf = buf;
    result
}

/// WebSocket: the upgrade's response, then frames; each text frame is
/// one message, handled as a line is.
fn feed_ws(conn: &mut Conn, data: &[u8], ctx: &mut LineCtx) -> Result<(), CloseWhy> {
    let mut buf = std::mem::take(&mut conn.inbuf);
    buf.extend_from_slice(data);
    let mut start = 0;
    let result = (|| {
        if conn.reg == Reg::Upgrading {
            match ws::response_head(&buf) {
                None if buf.len() > MAX_LINE => {
                    return Err(CloseWhy::Protocol(format!(
                        "server sent over {MAX_LINE} bytes of response head"
                    )));
                }
                None => return Ok(()),
                Some(Err(status)) => return Err(CloseWhy::Refused(status)),
                Some(Ok(end)) => {
                    start = end;
                    conn.reg = ctx.proto.on_upgraded(conn.id, &mut conn.out);
                }
            }
        }
        while let Some((frame, used)) = ws::next_frame(&buf[start..]).map_err(CloseWhy::Protocol)? {
            start += used;
            match frame.opcode {
                _ if !frame.fin => {
                    return Err(CloseWhy::Protocol(
                        "server sent a fragmented message".into(),
                    ));
                }
                ws::TEXT => handle_line(conn, frame.payload, ctx)?,
                ws::PING => {
                    let at = conn.out.len();
                    conn.out.extend_from_slice(frame.payload);
                    ws::seal(&mut conn.out, at, ws::PONG);
                }
                ws::PONG => {}
                ws::CLOSE => {
                    conn.info.clear();
                    let code = ws::close_code(frame.payload).unwrap_or(1005);
                    let _ = write!(conn.info, "close frame {code}");
                    return Err(CloseWhy::Eof);
                }
                other => {
                    return Err(CloseWhy::Protocol(format!(
                        "server sent a frame of opcode {other}"
                    )));
                }
            }
        }
        Ok(())
    })();
    buf.drain(..start);
    conn.inbuf = buf;
    result
}

fn handle_line(conn: &mut Conn, line: &[u8], ctx: &mut LineCtx) -> Result<(), CloseWhy> {
    match ctx
        .proto
        .on_line(&mut conn.reg, conn.id, line, &mut conn.out)
    {
        Seen::Message(s, q, t) => match ctx.tally.as_mut() {
            Some(tally) => {
                tally.record(conn.id as usize, s, q, t, ctx.now);
            }
            None => *ctx.stray += 1,
        },
        Seen::Nothing => {
            conn.info.clear();
            conn.info
                .extend_from_slice(&line[..line.len().min(INFO_MAX)]);
        }
        Seen::Registered => {
            ctx.counts.registered += 1;
            ctx.register_lat
                .record(ctx.now.saturating_sub(conn.started_ns));
            if ctx.close_on_register {
                return Err(CloseWhy::Done);
            }
        }
        Seen::Joined => {
            ctx.counts.joined += 1;
            ctx.join_lat.record(ctx.now.saturating_sub(conn.started_ns));
        }
        Seen::Failed(text) => return Err(CloseWhy::Refused(text)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing(rate: u64, window: u32) -> Pacing {
        Pacing {
            senders: 2,
            messages: 1000,
            rate,
            window,
            start_ns: 5_000,
        }
    }

    #[test]
    fn a_window_keeps_a_sender_w_ahead_of_what_came_back() {
        let p = pacing(0, 64);
        assert_eq!(p.limit(0, 5_000, 0), 64);
        assert_eq!(p.limit(1, 5_000, 100), 164);
        assert_eq!(p.limit(0, 5_000, 990), 1000);
        assert_eq!(p.limit(0, 5_000, u32::MAX), 1000);
    }

    #[test]
    fn no_window_lets_a_sender_send_everything_at_once() {
        let p = pacing(0, 0);
        assert_eq!(p.limit(0, 5_000, 0), 1000);
        assert_eq!(p.limit(1, 0, 0), 1000);
    }

    #[test]
    fn a_rate_spreads_the_senders_over_each_interval() {
        // 2 senders at 1000/s in total: one message per sender every 2 ms,
        // sender 1 a millisecond after sender 0.
        let p = pacing(1000, 0);
        assert_eq!(p.interval_ns(), 2_000_000.0);
        assert_eq!(p.limit(0, 5_000, 0), 1);
        assert_eq!(p.limit(1, 5_000, 0), 0);
        assert_eq!(p.limit(1, 5_000 + 1_000_000, 0), 1);
        assert_eq!(p.limit(0, 5_000 + 4_000_000, 0), 3);
        assert_eq!(p.limit(0, 5_000 + 10_000_000_000, 0), 1000);
        // With a window too, the lower of the two holds.
        assert_eq!(pacing(1000, 2).limit(0, 5_000 + 10_000_000, 0), 2);
    }
}
