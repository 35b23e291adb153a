//! The client child: one process per client, running that client's session.
//!
//! The child owns the client's TCP socket. It turns the client's bytes into
//! lines ([`crate::protocol`]), answers what it can by itself (`/help`,
//! usage lines, nickname syntax), sends the rest to the hub, and writes the
//! hub's lines back to the client. Everything towards the client goes
//! through a backlog, so a client that stops reading can only ever slow
//! down its own child. The child never blocks on the hub either: requests
//! the hub's socket does not take yet wait in an outbox, and meanwhile the
//! child stops reading its client (TCP holds the client back) but goes on
//! taking the hub's lines, so a hub that waits for this child to catch up
//! is never waiting on a child that waits for it.
//!
//! A client is cut off for falling behind by progress, not by a burst: when
//! its socket has taken no byte for the stall timeout while lines wait, or
//! when more than the hard bound in bytes waits, because it reads more
//! slowly than the room talks. A reader that is merely busy for a moment
//! keeps everything.
//!
//! The session ends when the client leaves (`/quit`, `END`, EOF, error), is
//! kicked, floods, falls too far behind, takes too long to log in or sits
//! idle too long, or when the parent goes away. Each ending has its
//! farewell line; then the child flushes, closes and exits, and the hub,
//! seeing the child's socket close, tells the room. If the hub goes away,
//! the child reaches the new one the parent starts and puts its user back
//! in the room: the client notices nothing but a pause.
//!
//! May use: `protocol` and `os`; never `hub` or `parent`: it reaches the hub
//! only through the messages of `protocol::ipc`. Checked by
//! `scripts/check_layout.py`.

mod backlog;
pub(crate) mod echo;
pub(crate) mod flood;
mod hub_link;
mod programs;
mod sniff;
mod web;

pub use backlog::BacklogLimits;

/// What programs (JSON clients) are allowed: see `PROTOCOL.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramOptions {
    /// Silence after which the server pings (zero: never).
    pub ping_interval: Duration,
    /// Events one resume replays at most.
    pub resume_max: usize,
    /// The bots file (`--bots`).
    pub bots: Option<std::path::PathBuf>,
    /// Origins besides the server's own whose pages may open the
    /// WebSocket (`--allowed-origin`).
    pub allowed_origins: Vec<String>,
}

impl Default for ProgramOptions {
    fn default() -> Self {
        ProgramOptions {
            ping_interval: Duration::from_secs(30),
            resume_max: 1000,
            bots: None,
            allowed_origins: Vec::new(),
        }
    }
}

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::os::logging::fd_number;
use crate::os::scoreboard::{self, Slot, Totals};
use crate::os::spawn::{LoggingIn, Stop};
use crate::os::waitset::{Ready, WaitSet};
use crate::os::{clock, title};
use crate::protocol::CRLF;
use crate::protocol::command::{self, Command, Request};
use crate::protocol::framing::{Line, LineReader};
use crate::protocol::ipc::{
    self, Event, Format, Memberships, Received, Registration, ToChild, ToHub, Whisper,
};
use crate::protocol::json::{self, JsonReader};
use crate::protocol::render;
use crate::protocol::reply::{Code, Reply};
use crate::protocol::sanitize::sanitize;
use crate::protocol::sniff::Wire;
use crate::protocol::websocket::{self, WsReader};
use crate::session::backlog::{Backlog, LineEnds};
use crate::session::flood::{Flood, FloodLimits, Verdict};
use crate::session::hub_link::HubLink;

/// An unfinished line counts as complete once it has sat this long: the
/// class-lab C client never sends a line end.
pub(crate) const FRAGMENT_TIMEOUT: Duration = Duration::from_millis(200);
/// Failed nickname attempts before the child gives up on a client.
pub(crate) const MAX_LOGIN_FAILURES: u32 = 5;
/// How long the backlog must have been empty before the buffers are given
/// back: freeing them after every batch would cost more than it saves.
const RELEASE_AFTER: Duration = Duration::from_secs(1);
/// The client socket's send buffer. Left alone, the kernel grows it to
/// several MiB for a client that does not read, which would hide that
/// client from its backlog limit; fixed, what can wait for one client is
/// bounded by about their sum (the kernel doubles this figure).
const SEND_BUFFER: usize = 64 * 1024;
/// TCP keepalive on the client's socket: the first probe after this long
/// without traffic, then one every [`KEEPALIVE_INTERVAL`] seconds, and
/// the connection is given up after [`KEEPALIVE_PROBES`] unanswered ones,
/// so a client whose host vanished (no FIN, no reset) is gone in about
/// three minutes and its nickname free.
const KEEPALIVE_IDLE: u32 = 120;
const KEEPALIVE_INTERVAL: u32 = 20;
const KEEPALIVE_PROBES: u32 = 3;
/// The same bound for data the client never acknowledges (TCP_USER_TIMEOUT,
/// in milliseconds), which keepalive alone does not cover: a peer that
/// vanished while lines were on their way would otherwise be retried for
/// a quarter of an hour.
const USER_TIMEOUT_MS: u32 = (KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES) * 1000;
/// How long a child tries to reach a new hub after the old one is gone
/// (the parent starts one at once; connecting waits in its socket's
/// backlog meanwhile).
const REJOIN_TIME: Duration = Duration::from_secs(5);
/// Pause between two attempts to reach the hub.
const REJOIN_RETRY: Duration = Duration::from_millis(50);
/// How long a farewell may take to reach the client. The whole shutdown
/// must fit in two seconds.
const FAREWELL_TIME: Duration = Duration::from_millis(1000);
/// The same for the line that tells a client it was cut off for falling
/// behind: it queues behind what the kernel holds for the client (a few
/// hundred KiB), and the socket has room for it only once a slow reader
/// has read a good part of that (a reader of 80 KB/s: about a second). A
/// client that reads nothing keeps its child this long; a shutdown
/// meanwhile ends the wait at once.
const FELL_BEHIND_FAREWELL_TIME: Duration = Duration::from_secs(3);
/// How long the session of a page that went away without quitting waits
/// to be taken over: a reload takes a second or two, a phone that
/// changes networks longer.
const TAKEOVER_WAIT: Duration = Duration::from_secs(30);
/// How long to wait for the client's own close after ours, so that its
/// unread input does not make our close a reset that loses the farewell.
const LINGER_TIME: Duration = Duration::from_millis(200);

/// What the child needs, handed over by the parent after the fork.
#[derive(Debug)]
pub(crate) struct Setup {
    pub client: TcpStream,
    pub peer: SocketAddr,
    pub stop: Stop,
    pub login_timeout: Duration,
    /// Dropped on login; the parent counts the children still holding one.
    pub logging_in: Option<LoggingIn>,
    pub flood: FloodLimits,
    pub backlog: BacklogLimits,
    /// A user who sends nothing for this long is disconnected.
    pub idle_timeout: Option<Duration>,
    /// This child's figures, and the server's totals, for `mpchat status`.
    pub slot: &'static Slot,
    pub totals: &'static Totals,
    /// JSON clients: how long a silence before the server pings, and how
    /// many events a resume replays at most (the hub's rule, told in the
    /// welcome).
    pub programs: ProgramOptions,
}

enum Phase {
    Login {
        failures: u32,
    },
    /// Registered; `id` is the user's id from the hub, kept across hub
    /// restarts (see [`ToChild::Registered`]), and so are the rooms the
    /// hub last said the user is in (none said: the lobby alone).
    Chat {
        nick: String,
        id: u64,
        rooms: Option<Memberships>,
    },
}

/// How a session ends: with a last line for the client, or without one.
enum End {
    /// The client asked to leave; the line says goodbye to a person, a
    /// program's `bye` carries the `id` of its `quit`.
    Quit {
        line: String,
        id: Option<serde_json::Value>,
    },
    /// The server ends the session, for the reason the code names and
    /// the line tells a person.
    Farewell(Code, String),
    /// Cut off for not keeping up: the last line says so, and may take
    /// longer to arrive, behind everything the kernel still holds.
    FellBehind,
    Silently,
    /// A browser's page went away without quitting: the session is kept,
    /// with nobody told, for [`TAKEOVER_WAIT`], for the page to take it
    /// over when it comes back (a reload, a new network).
    AwaitTakeover,
}

/// Ends the session for `code`'s reason, with `line` as a person's last
/// line.
fn farewell(code: Code, line: impl Into<String>) -> Option<End> {
    Some(End::Farewell(code, line.into()))
}

/// What became of one received line.
enum Step {
    /// It must wait for the hub's answers to earlier ones.
    Wait(Line),
    /// Carried out; `Some` ends the session.
    Done(Option<End>),
}

/// Splits the client's bytes into lines, as its protocol frames them.
enum Reader {
    Text(LineReader),
    Json(JsonReader),
    /// A browser's page: each WebSocket text message is a JSON line.
    Ws(Box<WsReader>),
}

impl Reader {
    fn push(&mut self, input: &[u8], out: &mut Vec<Line>) {
        match self {
            Reader::Text(reader) => reader.push(input, out),
            Reader::Json(reader) => reader.push(input, out),
            Reader::Ws(reader) => reader.push(input, out),
        }
    }

    /// An unfinished line waits (only people's clients send those for
    /// good: the class-lab C client never ends its lines).
    fn has_partial(&self) -> bool {
        match self {
            Reader::Text(reader) => reader.has_partial(),
            Reader::Json(_) | Reader::Ws(_) => false,
        }
    }

    fn take_partial(&mut self) -> Option<Line> {
        match self {
            Reader::Text(reader) => reader.take_partial(),
            Reader::Json(reader) => reader.take_partial(),
            Reader::Ws(_) => None,
        }
    }
}

struct Session {
    client: TcpStream,
    peer: SocketAddr,
    /// The connection to the hub, its outbox and the replies held for it.
    hub: HubLink,
    /// The login asked for and not yet answered, to ask a new hub again
    /// if the old one went away meanwhile.
    pending_login: Option<Box<ToHub>>,
    stop: Stop,
    /// What the client reads and writes: lines for people or JSON.
    format: Format,
    reader: Reader,
    /// A JSON client's requests waiting for answers, its heartbeat.
    json: Box<programs::JsonState>,
    /// Lines received but not yet carried out.
    inbox: VecDeque<Line>,
    /// What waits for the client.
    backlog: Backlog,
    phase: Phase,
    logging_in: Option<LoggingIn>,
    flood: Flood,
    /// The session is over, but its last line waits until the hub has
    /// answered every earlier request; the client is no longer read.
    ending: Option<End>,
    login_deadline: Instant,
    idle_timeout: Option<Duration>,
    last_input: Instant,
    client_eof: bool,
    /// What the conversation waits on, made at its first wait.
    waitset: Option<WaitSet>,
    /// Receives datagrams from the hub; see [`Link::try_recv_into`].
    buf: Vec<u8>,
    slot: &'static Slot,
    totals: &'static Totals,
}

/// Runs one client's session to its end.
pub(crate) fn run(setup: Setup, hub_socket: &Path) -> io::Result<()> {
    prepare_socket(&setup.client)?;
    let format = match sniff::wire(&setup.client, &setup.stop) {
        Wire::Line => Format::Text,
        Wire::Json => Format::Json,
        Wire::Http => {
            let allowed = &setup.programs.allowed_origins;
            match web::serve(&setup.client, &setup.stop, setup.peer, allowed) {
                web::Served::Done => return Ok(()),
                web::Served::WebSocket(first) => return run_websocket(setup, hub_socket, first),
            }
        }
    };
    let hub = match HubLink::connect(hub_socket) {
        Ok(hub) => hub,
        Err(e) => {
            log::error!("{}: cannot reach the hub: {e}", setup.peer);
            tell_busy(&setup.client, format);
            return Err(e);
        }
    };
    let mut session = Session::new(setup, hub, format, LineEnds::for_format(format));
    if format == Format::Text {
        session.tell(render::WELCOME);
    }
    session.live();
    Ok(())
}

/// Runs the session of a browser's page over its WebSocket, which has
/// sent `first` already.
fn run_websocket(setup: Setup, hub_socket: &Path, first: Vec<u8>) -> io::Result<()> {
    let hub = match HubLink::connect(hub_socket) {
        Ok(hub) => hub,
        Err(e) => {
            log::error!("{}: cannot reach the hub: {e}", setup.peer);
            let _ = (&setup.client).write_all(&websocket::close_frame(websocket::GOING_AWAY));
            return Err(e);
        }
    };
    let mut session = Session::new(setup, hub, Format::Json, LineEnds::WebSocket);
    if !first.is_empty() {
        session.take_input(&first);
    }
    session.live();
    Ok(())
}

/// What a wait for the client's input came to.
pub(super) enum Waited {
    Ready,
    TimedOut,
    /// The server is stopping, or the wait failed.
    Stopped,
}

/// Waits until `client` has input, `deadline` passes or a stop comes.
pub(super) fn wait_for_input(client: &TcpStream, stop: &Stop, deadline: Instant) -> Waited {
    loop {
        let Some(timeout) = clock::poll_timeout_until(deadline) else {
            return Waited::TimedOut;
        };
        let [lifeline, terminate] = stop.poll_fds();
        let mut fds = [
            PollFd::new(client.as_fd(), PollFlags::POLLIN),
            lifeline,
            terminate,
        ];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) if Stop::requested(&fds[1..]) => return Waited::Stopped,
            Ok(_) => return Waited::Ready,
            Err(_) => return Waited::Stopped,
        }
    }
}

/// Tells the client the server cannot serve it now. Out of line: the
/// session's first frame stays small, and so does every child's stack.
#[cold]
#[inline(never)]
fn tell_busy(client: &TcpStream, format: Format) {
    let busy = match format {
        Format::Text => format!("{}{CRLF}", render::SERVER_BUSY),
        Format::Json => format!(
            "{}\n",
            json::error(Code::ServerBusy, render::SERVER_BUSY, None)
        ),
    };
    let _ = (&*client).write_all(busy.as_bytes());
}

/// The client's socket as the session uses it: never blocking, lines sent
/// at once (they are small and someone waits for each), a fixed send
/// buffer (see [`SEND_BUFFER`]) and a peer that vanished noticed.
fn prepare_socket(client: &TcpStream) -> io::Result<()> {
    client.set_nonblocking(true)?;
    client.set_nodelay(true)?;
    nix::sys::socket::setsockopt(client, nix::sys::socket::sockopt::SndBuf, &SEND_BUFFER)?;
    detect_dead_peer(client)?;
    Ok(())
}

impl Session {
    fn new(setup: Setup, hub: HubLink, format: Format, ends: LineEnds) -> Session {
        let now = Instant::now();
        let mut backlog = Backlog::new(setup.backlog, now);
        backlog.delimit_lines(ends);
        let reader = match (format, ends) {
            (_, LineEnds::WebSocket) => Reader::Ws(Box::default()),
            (Format::Text, _) => Reader::Text(LineReader::new()),
            (Format::Json, _) => Reader::Json(JsonReader::new()),
        };
        Session {
            client: setup.client,
            peer: setup.peer,
            hub,
            pending_login: None,
            stop: setup.stop,
            format,
            reader,
            // Boxed, as the pending login: a child's stack holds its
            // session more than once (it is built, then moved to its end).
            json: Box::new(programs::JsonState::new(&setup.programs)),
            inbox: VecDeque::new(),
            backlog,
            phase: Phase::Login { failures: 0 },
            logging_in: setup.logging_in,
            flood: Flood::new(setup.flood, now),
            ending: None,
            login_deadline: now + setup.login_timeout,
            idle_timeout: setup.idle_timeout,
            last_input: now,
            client_eof: false,
            waitset: None,
            buf: Vec::new(),
            slot: setup.slot,
            totals: setup.totals,
        }
    }
}

impl Session {
    /// Converses until the session ends, then says goodbye and closes.
    fn live(mut self) {
        let end = match self.converse() {
            Ok(end) => end,
            Err(e) => {
                log::debug!("{}: {e}", self.peer);
                End::Silently
            }
        };
        self.close(end);
    }

    /// The session's main loop; returns how it ended.
    fn converse(&mut self) -> io::Result<End> {
        loop {
            if let Some(end) = self.work_through_inbox()? {
                return Ok(end);
            }
            if !self.hub_busy()
                && let Some(end) = self.ending.take()
            {
                return Ok(end);
            }
            if self.client_eof && self.inbox.is_empty() && !self.hub_busy() {
                log::info!("{} closed the connection", self.peer);
                // A page that closed without quitting is being reloaded,
                // or its network changed: its session waits for it.
                if matches!(&self.reader, Reader::Ws(ws) if !ws.broken)
                    && matches!(self.phase, Phase::Chat { .. })
                {
                    return Ok(End::AwaitTakeover);
                }
                return Ok(End::Silently);
            }
            if let Some(why) = self.backlog.falling_behind(Instant::now()) {
                log::info!("{} is not reading: {why}; disconnecting", self.peer);
                scoreboard::bump(&self.totals.slow_disconnects);
                self.backlog.drop_unsent();
                return Ok(End::FellBehind);
            }
            if let Some(end) = self.wait_and_handle()? {
                return Ok(end);
            }
        }
    }

    /// True while the hub has not finished every request sent to it.
    fn hub_busy(&self) -> bool {
        self.hub.busy()
    }

    /// Carries out received lines, in order, until none are left or the
    /// next one must wait for the hub: a nickname attempt needs the answer
    /// to the one before, a quit must come after every earlier reply, and
    /// nothing more is asked of a hub that has a datagram's worth of
    /// requests from us not yet taken.
    fn work_through_inbox(&mut self) -> io::Result<Option<End>> {
        while !self.hub.outbox_full()
            && let Some(line) = self.inbox.pop_front()
        {
            let step = match self.format {
                Format::Text => self.text_line(line),
                Format::Json => self.json_line(line),
            };
            match step {
                Step::Wait(line) => {
                    self.inbox.push_front(line);
                    break;
                }
                Step::Done(None) => {}
                Step::Done(end) => return Ok(end),
            }
        }
        Ok(None)
    }

    /// A line from a person.
    fn text_line(&mut self, line: Line) -> Step {
        let text = sanitize(&line.bytes);
        let must_wait = match self.phase {
            Phase::Login { .. } => self.hub_busy(),
            Phase::Chat { .. } => self.hub_busy() && command::is_quit(&text),
        };
        if must_wait {
            return Step::Wait(line);
        }
        if line.truncated {
            self.reply(render::line_too_long());
        }
        if text.is_empty() {
            return Step::Done(None);
        }
        Step::Done(match self.phase {
            Phase::Login { .. } => self.login_line(text),
            Phase::Chat { .. } => self.chat_line(text),
        })
    }

    /// A line typed at the nickname prompt.
    fn login_line(&mut self, text: String) -> Option<End> {
        if command::is_quit(&text) {
            return Some(End::Quit {
                line: "Bye.".to_string(),
                id: None,
            });
        }
        if let Err(reason) = command::check_nick(&text) {
            return self.refuse_nick(Code::BadNick, reason, None);
        }
        self.log_in(ToHub::person(text, self.peer.to_string()));
        None
    }

    /// Asks the hub for a login (a `ToHub::Login`).
    fn log_in(&mut self, login: ToHub) {
        self.pending_login = Some(Box::new(login.clone()));
        self.request(login);
    }

    /// A nickname was refused, by the child or by the hub; a program's
    /// error answers the `hello` with `id`.
    fn refuse_nick(
        &mut self,
        code: Code,
        reason: String,
        id: Option<&serde_json::Value>,
    ) -> Option<End> {
        let Phase::Login { failures } = &mut self.phase else {
            return None;
        };
        *failures += 1;
        let last = *failures >= MAX_LOGIN_FAILURES;
        match self.format {
            Format::Text if last => self.tell(&reason),
            Format::Text => self.tell(&format!("{reason} {}", render::ENTER_NICK)),
            Format::Json => self.tell(&json::error(code, &reason, id)),
        }
        if last {
            log::info!("{}: too many invalid nicknames", self.peer);
            return farewell(Code::TooManyTries, render::TOO_MANY_TRIES);
        }
        None
    }

    /// A line from a registered user.
    fn chat_line(&mut self, text: String) -> Option<End> {
        // Leaving is never too fast.
        if !command::is_quit(&text) && !self.flood_allows() {
            return None;
        }
        match command::parse(&text) {
            Command::Request(Request::Rename(nick)) => match command::check_nick(&nick) {
                Ok(()) => self.request(ToHub::Request(Request::Rename(nick))),
                Err(reason) => self.reply(reason),
            },
            // Only programs name the room of a line.
            Command::Request(Request::SayIn { .. }) => {}
            Command::Request(request) => self.request(ToHub::Request(request)),
            Command::Help => {
                for line in render::HELP {
                    self.reply(line.to_string());
                }
            }
            Command::Usage(usage) => self.reply(usage.to_string()),
            Command::Unknown(word) => self.reply(render::unknown_command(&word)),
            Command::Quit => {
                let Phase::Chat { nick, .. } = &self.phase else {
                    return Some(End::Silently);
                };
                log::info!("{} ({nick}) quit", self.peer);
                return Some(End::Quit {
                    line: render::bye(nick),
                    id: None,
                });
            }
        }
        None
    }

    /// True if the flood limit lets one more line through. A user who
    /// floods on is cut off, after the replies to the lines that did pass.
    fn flood_allows(&mut self) -> bool {
        match (self.flood.line(Instant::now()), self.format) {
            (Verdict::Pass, _) => return true,
            // A person is told once a second; a program of every request
            // dropped, so it knows which to send again.
            (Verdict::Drop, Format::Text) => {}
            (Verdict::DropAndNotify, Format::Text) => {
                self.reply(render::FLOOD_DROPPED.to_string());
            }
            (Verdict::Drop | Verdict::DropAndNotify, Format::Json) => {
                self.json_refusal(Code::Flood, render::FLOOD_DROPPED);
            }
            (Verdict::Disconnect, _) => {
                log::info!("{}: disconnected for excess flood", self.peer);
                scoreboard::bump(&self.totals.flood_disconnects);
                self.inbox.clear();
                self.ending = farewell(Code::Flood, render::EXCESS_FLOOD);
            }
        }
        false
    }

    /// Queues a request for the hub; it is sent before the child next
    /// waits, with the others queued by then, in one datagram.
    fn request(&mut self, request: ToHub) {
        self.hub.request(&request);
    }

    /// A reply the child makes itself, kept in order with the hub's.
    fn reply(&mut self, line: String) {
        if let Some(line) = self.hub.in_order(line) {
            self.tell(&line);
        }
    }

    /// Waits for the client, the hub, a stop or a deadline, and takes
    /// in what arrived.
    fn wait_and_handle(&mut self) -> io::Result<Option<End>> {
        // One write for everything queued since the last wait, each way.
        if let Err(e) = self.flush() {
            log::debug!("{}: {e}", self.peer);
        }
        self.hub.send()?;
        let (client_events, hub_events) = self.events_wanted();
        let timeout = self.timeout();
        let waitset = match &mut self.waitset {
            Some(set) => set,
            None => self.waitset.insert(WaitSet::new(self.stop.fds())?),
        };
        let Ready { client, hub, stop } = waitset.wait(
            (self.client.as_fd(), client_events),
            (self.hub.as_fd(), hub_events),
            timeout,
        )?;
        if stop {
            return Ok(farewell(Code::ShuttingDown, render::SHUTTING_DOWN));
        }
        if hub.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            && let Some(end) = self.take_from_hub()?
        {
            return Ok(Some(end));
        }
        if client.contains(PollFlags::POLLOUT)
            && let Err(e) = self.flush()
        {
            log::debug!("{}: {e}", self.peer);
        }
        if client.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            self.read_client()?;
        }
        self.check_timers()
    }

    /// What to wait for on the client's socket and on the hub's: input
    /// while it is taken, room to write while something waits.
    fn events_wanted(&self) -> (PollFlags, PollFlags) {
        let mut client = PollFlags::empty();
        if self.reading_client() {
            client |= PollFlags::POLLIN;
        }
        if self.backlog.waiting() {
            client |= PollFlags::POLLOUT;
        }
        let mut hub = PollFlags::empty();
        if !self.backlog.waiting_for_catch_up() {
            hub |= PollFlags::POLLIN;
        }
        if self.hub.sending() {
            hub |= PollFlags::POLLOUT;
        }
        (client, hub)
    }

    /// The child reads more from its client only once the lines already
    /// read are carried out and the hub has taken their requests, so a
    /// client that sends faster than the room takes it is held back by TCP
    /// instead of filling this process's memory.
    fn reading_client(&self) -> bool {
        !self.client_eof && self.inbox.is_empty() && !self.hub.sending() && self.ending.is_none()
    }

    /// An unfinished line is waiting for its end. While the client is not
    /// being read, the rest of it may be unread: the fragment clock only
    /// runs while the child is reading.
    fn fragment_pending(&self) -> bool {
        self.reading_client() && self.reader.has_partial()
    }

    /// The nearest deadline: the fragment rule, the login, idle and stall
    /// timeouts, giving buffers back, or the end of the wait for a client
    /// to catch up.
    fn timeout(&self) -> PollTimeout {
        let now = Instant::now();
        let deadlines = [
            self.fragment_pending()
                .then(|| self.last_input + FRAGMENT_TIMEOUT),
            matches!(self.phase, Phase::Login { .. }).then_some(self.login_deadline),
            self.idle_deadline(),
            self.buffers_to_release()
                .then(|| self.backlog.last_output() + RELEASE_AFTER),
            self.backlog.deadline(),
            self.heartbeat_deadline(),
        ];
        let Some(deadline) = deadlines.into_iter().flatten().min() else {
            return PollTimeout::NONE;
        };
        clock::poll_timeout(deadline.saturating_duration_since(now))
    }

    fn check_timers(&mut self) -> io::Result<Option<End>> {
        let now = Instant::now();
        if matches!(self.phase, Phase::Login { .. }) && now >= self.login_deadline {
            log::info!("{}: login timed out", self.peer);
            return Ok(farewell(Code::LoginTimeout, render::LOGIN_TIMED_OUT));
        }
        if self.idle_deadline().is_some_and(|deadline| now >= deadline) {
            log::info!("{}: idle for too long", self.peer);
            return Ok(farewell(Code::IdleTimeout, render::IDLE_TIMEOUT));
        }
        if let Some(end) = self.heartbeat(now) {
            return Ok(Some(end));
        }
        if self.fragment_pending() && now >= self.last_input + FRAGMENT_TIMEOUT {
            self.inbox.extend(self.reader.take_partial());
        }
        if self.buffers_to_release() && now >= self.backlog.last_output() + RELEASE_AFTER {
            self.release_buffers();
        }
        Ok(None)
    }

    /// When a registered user who sends nothing more is disconnected, if
    /// `--idle-timeout` is set.
    fn idle_deadline(&self) -> Option<Instant> {
        let idle = self.idle_timeout?;
        matches!(self.phase, Phase::Chat { .. }).then(|| self.last_input + idle)
    }

    /// The backlog is empty, but it or the receive buffer still holds
    /// memory from traffic.
    fn buffers_to_release(&self) -> bool {
        self.backlog.is_empty() && (self.backlog.holds_memory() || self.buf.capacity() > 0)
    }

    /// Gives the memory of the last burst back rather than keep it dirty in
    /// every idle child for the rest of its session.
    fn release_buffers(&mut self) {
        self.backlog.release();
        self.buf = Vec::new();
        // SAFETY: malloc_trim only returns free heap pages to the kernel;
        // it has no preconditions and this process is single-threaded.
        unsafe { libc::malloc_trim(0) };
    }

    /// The client is a browser's page, over its WebSocket.
    fn is_web(&self) -> bool {
        matches!(self.reader, Reader::Ws(_))
    }

    /// Turns bytes from the client into lines for the inbox. A WebSocket
    /// may answer by itself (a pong, a close), or be over.
    fn take_input(&mut self, bytes: &[u8]) {
        self.last_input = Instant::now();
        let mut lines = Vec::new();
        self.reader.push(bytes, &mut lines);
        self.slot
            .lines_in
            .fetch_add(lines.len() as u64, Ordering::Relaxed);
        self.inbox.extend(lines);
        if let Reader::Ws(ws) = &mut self.reader {
            self.backlog.push_raw(&ws.take_output());
            if ws.ended {
                self.client_eof = true;
            }
        }
    }

    /// Reads one chunk from the client. Out of line: its buffer is then
    /// on the stack only while it reads, not under every hub message too.
    #[inline(never)]
    fn read_client(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        match (&self.client).read(&mut chunk) {
            Ok(0) => {
                self.client_eof = true;
                // A fragment pending at EOF is still a line.
                self.inbox.extend(self.reader.take_partial());
            }
            Ok(n) => self.take_input(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                log::info!("{}: {e}", self.peer);
                self.client_eof = true;
            }
        }
        Ok(())
    }

    /// Takes one datagram from the hub. One per wake-up: in a quiet room
    /// that saves a receive that would find nothing, and in a busy one the
    /// next poll returns at once anyway.
    fn take_from_hub(&mut self) -> io::Result<Option<End>> {
        let mut buf = std::mem::take(&mut self.buf);
        let end = self.take_datagram(&mut buf);
        self.buf = buf;
        end
    }

    fn take_datagram(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<End>> {
        match self.hub.try_recv_into(buf)? {
            Received::Data(()) if log::log_enabled!(log::Level::Trace) => {
                log_datagram(&self.hub, buf.len());
            }
            Received::Data(()) => {}
            Received::Empty => return Ok(None),
            Received::Closed => return self.rejoin(),
        }
        for event in ipc::events(buf) {
            match event? {
                // Nearly all the traffic: bytes ready for the client.
                Event::ClientLine(bytes) => self.backlog.push_rendered(bytes),
                Event::Other(event) => {
                    if let Some(end) = self.hub_event(event) {
                        return Ok(Some(end));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The hub is gone. The parent starts a new one at once: reach it and
    /// put the user back in the room, so the client notices nothing but a
    /// pause. Requests the old hub had not answered are lost with it;
    /// a nickname attempt is asked again.
    fn rejoin(&mut self) -> io::Result<Option<End>> {
        log::warn!("{}: the hub is gone; reaching a new one", self.peer);
        let deadline = Instant::now() + REJOIN_TIME;
        let held = loop {
            match self.hub.reconnect() {
                Ok(held) => break held,
                Err(e) if Instant::now() >= deadline => {
                    log::error!("{}: no hub to rejoin: {e}", self.peer);
                    return Ok(farewell(Code::ShuttingDown, render::SHUTTING_DOWN));
                }
                Err(_) => {
                    if self.stop_within(REJOIN_RETRY) {
                        return Ok(farewell(Code::ShuttingDown, render::SHUTTING_DOWN));
                    }
                }
            }
        };
        if let Some(set) = &mut self.waitset {
            set.hub_replaced();
        }
        self.requests_lost();
        for line in held {
            self.tell(&line);
        }
        let addr = self.peer.to_string();
        let format = self.format;
        let again = match (&self.phase, &self.pending_login) {
            (Phase::Chat { nick, id, rooms }, _) => Some(ToHub::Rejoin {
                nick: nick.clone(),
                addr,
                id: *id,
                rooms: rooms.clone(),
                format,
                token: self.json.token(),
                device: self.json.device(),
                web: self.is_web(),
            }),
            (Phase::Login { .. }, login) => login.as_deref().cloned(),
        };
        if let Some(request) = again {
            self.request(request);
        }
        Ok(None)
    }

    /// Waits up to `wait` for a stop; true if one came.
    fn stop_within(&self, wait: Duration) -> bool {
        let mut fds = self.stop.poll_fds();
        matches!(poll(&mut fds, clock::poll_timeout(wait)), Ok(n) if n > 0)
    }

    /// Carries out one event from the hub; `Some` ends the session.
    fn hub_event(&mut self, event: ToChild) -> Option<End> {
        match event {
            ToChild::Line(line) => self.tell(&line),
            ToChild::Registered(registration) => self.registered(*registration),
            ToChild::FloodRate { millilines_per_s } => {
                self.flood.set_rate(millilines_per_s as f64 / 1000.0);
            }
            ToChild::TakenOver => {
                log::info!("{}: the session was taken over", self.peer);
                return farewell(Code::TakenOver, render::TAKEN_OVER);
            }
            ToChild::Reply(reply) => self.show_reply(*reply, true),
            ToChild::Notice(reply) => self.show_reply(*reply, false),
            ToChild::Whisper(whisper) => self.show_whisper(&whisper),
            ToChild::Removed(r) => match self.format {
                Format::Text => self.tell(&render::removed_from(&r.room, &r.by)),
                Format::Json => self.tell(&json::removed(&r.room, &r.by)),
            },
            ToChild::Gap { after, next } => self.tell(&json::gap(after, next)),
            ToChild::Rejoined => log::info!("{}: back in the room of a new hub", self.peer),
            ToChild::TooSlow => {
                log::info!("{}: dropped by the hub for falling behind", self.peer);
                scoreboard::bump(&self.totals.slow_disconnects);
                return Some(End::FellBehind);
            }
            // After a hub restart, someone new took the nickname first.
            ToChild::NickRefused { .. } if matches!(self.phase, Phase::Chat { .. }) => {
                return farewell(Code::NickLost, render::NICK_LOST);
            }
            ToChild::NickRefused { code, reason } => {
                self.pending_login = None;
                return self.nick_refused(code, reason);
            }
            ToChild::Renamed { nick: new } => {
                title::set(&format!("mpchat: {new} {}", self.peer));
                if let Phase::Chat { nick, .. } = &mut self.phase {
                    *nick = new;
                }
            }
            ToChild::Kicked => {
                log::info!("{} was kicked", self.peer);
                return farewell(Code::Kicked, render::KICKED);
            }
            ToChild::Memberships(now) => {
                if let Phase::Chat { rooms, .. } = &mut self.phase {
                    *rooms = Some(now);
                }
            }
            ToChild::Done => self.request_done(),
        }
        None
    }

    /// The hub took the nickname (or gave this connection a session it
    /// took over, with its `rooms`): the session is in the room.
    #[inline(never)]
    fn registered(&mut self, registration: Registration) {
        let Registration {
            nick,
            id,
            seq,
            rooms,
            took_over,
        } = registration;
        match self.format {
            Format::Text => self.tell(&render::hello(&nick)),
            Format::Json => self.welcome(&nick, seq, rooms.as_ref()),
        }
        if took_over {
            scoreboard::bump(&self.totals.takeovers);
        }
        if let Some(ToHub::Login { after: Some(_), .. }) = self.pending_login.as_deref() {
            scoreboard::bump(&self.totals.resumes);
        }
        title::set(&format!("mpchat: {nick} {}", self.peer));
        log::debug!("registered as {nick}");
        self.phase = Phase::Chat { nick, id, rooms };
        self.pending_login = None;
        // Tells the parent this connection no longer counts against
        // --max-unregistered.
        if let Some(held) = self.logging_in.take() {
            let fd = fd_number(&held);
            drop(held);
            log::debug!("closed the login pipe's write end {fd}");
        }
    }

    /// The hub finished a request: the replies held for it go out.
    fn request_done(&mut self) {
        if self.format == Format::Json {
            self.json_request_done();
        }
        for line in self.hub.done() {
            self.tell(&line);
        }
    }

    /// A reply of the hub's, to this user's request (`answering`) or
    /// caused by someone else's. Out of line, as the other rare events:
    /// the frame that takes every line from the hub stays small.
    #[inline(never)]
    fn show_reply(&mut self, reply: Reply, answering: bool) {
        match self.format {
            Format::Text => {
                for line in render::reply(&reply) {
                    self.tell(&line);
                }
            }
            Format::Json => self.json_reply(&reply, answering),
        }
    }

    #[inline(never)]
    fn show_whisper(&mut self, w: &Whisper) {
        let line = match self.format {
            Format::Json => json::whisper(w.time_ms, &w.from, &w.to, &w.text),
            Format::Text => {
                let stamp = clock::hhmm(clock::from_unix_ms(w.time_ms));
                match w.sent {
                    true => render::whisper_to(&stamp, &w.to, &w.text),
                    false => render::whisper_from(&stamp, &w.from, &w.text),
                }
            }
        };
        self.tell(&line);
    }

    /// Queues one line for the client; it is written before the child next
    /// waits, together with whatever else is queued by then.
    fn tell(&mut self, line: &str) {
        self.backlog.push_line(line);
    }

    /// Writes as much of the backlog as the client's socket takes without
    /// waiting.
    fn flush(&mut self) -> io::Result<()> {
        let result = self.backlog.flush(&self.client, self.slot);
        if result.is_err() {
            // The client is gone; nothing more can reach it.
            self.client_eof = true;
        }
        result
    }

    /// Says the farewell, gives the client a moment to take it, and closes.
    fn close(mut self, end: End) {
        if matches!(end, End::AwaitTakeover) {
            let _ = self.client.shutdown(Shutdown::Both);
            self.await_takeover();
            return;
        }
        // Let the room know right away, not after the goodbye below.
        self.hub.shutdown();
        // Only a farewell of the child's own is cut short by a shutdown;
        // the shutdown's farewell is the one to say then.
        let quit = matches!(end, End::Quit { .. });
        let (patience, stop_ends_it) = match end {
            End::Quit { line, id } => {
                match self.format {
                    Format::Text => self.tell(&line),
                    Format::Json => self.tell(&json::bare("bye", id.as_ref())),
                }
                (FAREWELL_TIME, false)
            }
            End::Farewell(code, line) => {
                self.say_last(code, &line);
                (FAREWELL_TIME, false)
            }
            End::FellBehind => {
                self.say_last(Code::TooSlow, render::NOT_READING);
                (FELL_BEHIND_FAREWELL_TIME, true)
            }
            End::Silently | End::AwaitTakeover => (FAREWELL_TIME, false),
        };
        // A WebSocket ends with its close frame, unless the client's own
        // close (or a broken frame) already had its answer.
        if let Reader::Ws(ws) = &self.reader
            && !ws.ended
        {
            let code = if quit {
                websocket::NORMAL
            } else {
                websocket::GOING_AWAY
            };
            self.backlog.push_raw(&websocket::close_frame(code));
        }
        let deadline = Instant::now() + patience;
        while self.backlog.waiting()
            && self.wait_for_client(PollFlags::POLLOUT, deadline, stop_ends_it)
        {
            if self.flush().is_err() {
                break;
            }
        }
        // Closing with unread input would send a reset, which can make the
        // client drop our last lines; so close our side and let it close its.
        log::debug!(
            "shutdown() of the client socket {} for writing; waits up to {} ms for the client's close",
            fd_number(&self.client),
            LINGER_TIME.as_millis()
        );
        let _ = self.client.shutdown(Shutdown::Write);
        let linger = Instant::now() + LINGER_TIME;
        while self.wait_for_client(PollFlags::POLLIN, linger, false) {
            match (&self.client).read(&mut [0u8; 512]) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Holds the session of a page that went away until it is taken over,
    /// the wait is over, the hub is gone or the server stops; what the
    /// hub sends meanwhile is dropped (the page resumes from its `seq`).
    fn await_takeover(&mut self) {
        let deadline = Instant::now() + TAKEOVER_WAIT;
        let mut buf = Vec::new();
        while let Some(timeout) = clock::poll_timeout_until(deadline) {
            let [lifeline, terminate] = self.stop.poll_fds();
            let mut fds = [
                PollFd::new(self.hub.as_fd(), PollFlags::POLLIN),
                lifeline,
                terminate,
            ];
            match poll(&mut fds, timeout) {
                Ok(_) if Stop::requested(&fds[1..]) => return,
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
            match self.hub.try_recv_into(&mut buf) {
                Ok(Received::Data(())) => {
                    let taken = ipc::events(&buf)
                        .any(|e| matches!(e, Ok(Event::Other(ToChild::TakenOver))));
                    if taken {
                        log::info!("{}: the session was taken over", self.peer);
                        return;
                    }
                }
                Ok(Received::Empty) => {}
                Ok(Received::Closed) | Err(_) => return,
            }
        }
        log::info!("{}: not taken over in time; the session ends", self.peer);
    }

    /// The last line of a session the server ends: to a person `line`,
    /// to a program the error `code`.
    fn say_last(&mut self, code: Code, line: &str) {
        match self.format {
            Format::Text => self.tell(line),
            Format::Json => self.tell(&json::error(code, line, None)),
        }
    }

    /// Waits until the client's socket is ready for `events`; false once
    /// `deadline` passes, or, if `stop_ends_it`, at a stop.
    fn wait_for_client(&self, events: PollFlags, deadline: Instant, stop_ends_it: bool) -> bool {
        let Some(timeout) = clock::poll_timeout_until(deadline) else {
            return false;
        };
        let [lifeline, terminate] = self.stop.poll_fds();
        let mut fds = [
            PollFd::new(self.client.as_fd(), events),
            lifeline,
            terminate,
        ];
        // After a stop its fds stay ready: they are polled only if a stop
        // is news.
        let watched = if stop_ends_it { 3 } else { 1 };
        let ready = matches!(poll(&mut fds[..watched], timeout), Ok(n) if n > 0);
        ready && !(stop_ends_it && Stop::requested(&fds[1..]))
    }
}

/// The trace's line for a datagram from the hub; out of line, so that
/// the path of every line keeps only the level check.
#[cold]
#[inline(never)]
fn log_datagram(hub: &HubLink, bytes: usize) {
    log::trace!(
        "datagram from the hub on fd {}: {bytes} bytes",
        fd_number(hub)
    );
}

/// Turns on TCP keepalive and the user timeout on the client's socket.
fn detect_dead_peer(client: &TcpStream) -> nix::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(client, sockopt::KeepAlive, &true)?;
    setsockopt(client, sockopt::TcpKeepIdle, &KEEPALIVE_IDLE)?;
    setsockopt(client, sockopt::TcpKeepInterval, &KEEPALIVE_INTERVAL)?;
    setsockopt(client, sockopt::TcpKeepCount, &KEEPALIVE_PROBES)?;
    setsockopt(client, sockopt::TcpUserTimeout, &USER_TIMEOUT_MS)
}
