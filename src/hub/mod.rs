//! The hub process: owns the room and fans lines out to the children.
//!
//! The hub listens on a Unix-domain socket inside a private directory (see
//! [`SocketDir`]); each client's child connects to it after the fork. The
//! hub never blocks on one child: every socket is non-blocking, and what a
//! child has not taken yet waits in that child's queue. A line for many
//! receivers is rendered and encoded once, and the same bytes are queued
//! for each of them.
//!
//! A child takes its lines as fast as it is scheduled, but for a moment
//! while its own client catches up (see [`crate::session`]), so a queue
//! grows only while a child is busy, or its client is. The queues are
//! bounded without losing a line: while one is at [`QUEUE_LIMIT`], the hub
//! reads nobody's requests, so the senders wait (their children stop
//! reading their clients, and TCP holds the clients back) until that child
//! has caught up. A child that takes nothing at all for the stall timeout
//! has stopped, not fallen behind: it is dropped, and the room goes on.
//!
//! A child that dies, however it dies, closes its socket; the hub sees the
//! end of the connection and removes the user at once.
//!
//! The hub is also the only writer of the chat history (each turn's public
//! lines go to the file before anyone is sent them; see
//! [`crate::hub::history`]), reopens it on SIGHUP, and answers `mpchat status`
//! on the admin socket (see [`crate::hub::status`]).
//!
//! May use: `room`, `protocol` and `os`; never `session` or `parent`.
//! Checked by `scripts/check_layout.py`.

pub(crate) mod bots;
pub(crate) mod cluster;
pub(crate) mod history;
pub(crate) mod schedule_file;
pub(crate) mod status;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::os::dirs::{self, IfExists};
use crate::os::logging::{self, fd_number};
use crate::os::scoreboard;
use crate::os::signals::SelfPipe;
use crate::os::spawn::Stop;
use crate::os::{clock, title};
use crate::protocol::command::{Request, check_nick, nick_key};
use crate::protocol::ipc::{self, Link, Listener, Received, ToChild, ToHub};
use crate::protocol::render;
use crate::protocol::reply::{self, Code};
use crate::room::{self, Chat, ConnId, Delivery, Kind, RoomLimits, Target};
use bots::Bots;
use cluster::{Cluster, FromCluster};
use history::Writer;
use schedule_file::ScheduleFile;
use status::Admin;

/// Messages taken from one child per turn, so one busy child cannot starve
/// the others.
const MAX_READS_PER_TURN: usize = 64;
/// What may wait for one child beyond its socket's buffer before the hub
/// stops reading requests until it catches up: a few batches, enough that
/// a child that is merely not scheduled yet rarely holds anyone up. Each
/// message counts its length and its place in the queue, though the bytes
/// themselves are shared by every child they go to.
const QUEUE_LIMIT: usize = 256 * 1024;
const PLACE_IN_QUEUE: usize = std::mem::size_of::<Rc<[u8]>>();
/// Stalled children are looked for at most this often.
const STALL_CHECK: Duration = Duration::from_secs(1);
/// Places an empty queue keeps between bursts; a longer one is given back.
const QUEUE_KEPT: usize = 64;
/// How long after a burst's queues are given back the hub returns its free
/// heap to the kernel (at most this often, as trimming costs a walk of
/// the heap).
const TRIM_AFTER: Duration = Duration::from_secs(1);

/// The private directory that holds the hub's socket.
///
/// Created mode 0700, so only the server's own user can reach the socket
/// (which is itself mode 0600); the hub also checks each peer's uid.
#[derive(Debug, Clone)]
pub(crate) struct SocketDir {
    dir: PathBuf,
}

impl SocketDir {
    /// Creates a fresh directory in the first of [`runtime_bases`] that
    /// lets us (`$XDG_RUNTIME_DIR` is root's after `--user`, say).
    pub(crate) fn create() -> io::Result<SocketDir> {
        let mut last_error = io::Error::other("no runtime or temporary directory");
        for base in dirs::runtime_bases() {
            match SocketDir::create_in(&base) {
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => last_error = e,
                other => return other,
            }
        }
        Err(last_error)
    }

    fn create_in(base: &std::path::Path) -> io::Result<SocketDir> {
        let pid = std::process::id();
        let mut last_error = None;
        for attempt in 0..100 {
            let dir = base.join(format!("mpchat-{pid}-{attempt}"));
            match dirs::private_dir(&dir, IfExists::Fail) {
                Ok(()) => return Ok(SocketDir { dir }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("no free directory name")))
    }

    pub(crate) fn socket_path(&self) -> PathBuf {
        self.dir.join("hub.sock")
    }

    /// Removes the socket and the directory; what is already gone is fine.
    pub(crate) fn remove(&self) {
        for result in [
            std::fs::remove_file(self.socket_path()),
            std::fs::remove_dir(&self.dir),
        ] {
            if let Err(e) = result
                && e.kind() != io::ErrorKind::NotFound
            {
                log::warn!("cannot clean up {}: {e}", self.dir.display());
            }
        }
    }
}

/// One child's connection.
struct Conn {
    link: Link,
    /// The child's pid, for `mpchat status`.
    pid: u32,
    /// Encoded messages not yet taken by the child, oldest first, and
    /// what they count against [`QUEUE_LIMIT`].
    queue: VecDeque<Rc<[u8]>>,
    queued: usize,
    /// The socket was full; epoll also reports when it is writable again.
    waiting_to_write: bool,
    /// Since when the socket has taken nothing while messages wait.
    stalled: clock::Stall,
    /// Its requests are left unread until no queue is full; epoll does
    /// not report them meanwhile.
    deferred: bool,
}

impl Conn {
    fn is_full(&self) -> bool {
        self.queued >= QUEUE_LIMIT
    }
}

/// A report on its way to `mpchat status`.
struct Reply {
    stream: UnixStream,
    bytes: Vec<u8>,
    sent: usize,
}

/// epoll tokens for the hub's own fds; connection ids start above them.
const LIFELINE: u64 = 0;
const TERMINATE: u64 = 1;
const LISTENER: u64 = 2;
const HANGUP: u64 = 3;
const ADMIN: u64 = 4;
const CLUSTER: u64 = 5;
/// Replies on the admin socket have ids from here on, far above any
/// connection's.
const FIRST_REPLY: u64 = 1 << 48;
const FIRST_CONN: ConnId = 16;

struct Hub {
    epoll: Epoll,
    listener: Listener,
    /// Held open for the epoll set, which watches both of its fds.
    _stop: Stop,
    /// SIGHUP: reopen the history's segment.
    hangup: SelfPipe,
    /// The admin socket and what its reports are made of.
    admin: Option<Admin>,
    /// Reports being written to `mpchat status` clients, by id.
    replies: HashMap<u64, Reply>,
    next_reply: u64,
    history: Writer,
    /// The number of users the process title shows.
    users_shown: (usize, usize),
    uid: u32,
    conns: HashMap<ConnId, Conn>,
    next_id: ConnId,
    /// Connections given new messages since the last flush.
    dirty: Vec<ConnId>,
    /// Connections whose queue is full: while there are any, no requests
    /// are read.
    full: usize,
    /// Connections whose requests wait for that.
    deferred: Vec<ConnId>,
    /// A child that takes nothing for this long is dropped.
    stall: Option<Duration>,
    /// When to look for stalled children next.
    stall_check: Option<Instant>,
    /// When to give the memory of the last burst back to the kernel.
    trim_at: Option<Instant>,
    chat: Chat,
    buf: Vec<u8>,
    /// Where the scheduled messages are saved.
    schedule: ScheduleFile,
    bots: Bots,
    /// The link to the other servers, with `--cluster`, and this server's
    /// name there.
    cluster: Option<Cluster>,
    server_name: Option<String>,
    /// Logins and renames waiting for their nickname's lease, by
    /// connection, each with the messages its child sent after it: held
    /// too, so that they are carried out in the order they were sent.
    awaiting_lease: HashMap<ConnId, Pending>,
    /// When to renew this server's users' leases next, and to say this
    /// server is there.
    renew_at: Instant,
    present_at: Instant,
    /// The other servers of the cluster, with their users, as last heard.
    others: Vec<(String, usize)>,
    link: LinkState,
    /// What this turn has sent so far.
    sent: Sent,
}

/// What the hub sent the children in one turn, for the debug log.
#[derive(Debug, Default)]
struct Sent {
    datagrams: usize,
    bytes: usize,
}

/// A login or rename waiting for its nickname's lease.
struct Pending {
    req: ToHub,
    /// A bot's flood rate, its proof checked.
    rate: Option<f64>,
    /// What the same child sent after it.
    held: VecDeque<ToHub>,
}

/// Whether the cluster's two connections are up, and whether the link
/// has been up since the hub started (so that its users are told when it
/// goes down, and when it is back).
#[derive(Debug, Default)]
struct LinkState {
    reader: bool,
    writer: bool,
    was_up: bool,
}

/// What the hub enforces, from the command line.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// The bots file, read at every start and on SIGHUP.
    pub bots: Option<PathBuf>,
    /// A child that takes nothing for this long while messages wait for
    /// it is dropped (`None`: never).
    pub stall: Option<Duration>,
    pub rooms: RoomLimits,
    /// Events one resume replays at most.
    pub resume_max: usize,
    /// `--cluster`: the Redis to share the rooms through.
    pub cluster: Option<cluster::Options>,
}

/// Runs the hub until the parent is gone or it is told to stop.
pub(crate) fn run(
    listener: Listener,
    stop: Stop,
    socket_dir: SocketDir,
    rules: Rules,
    history: &history::Options,
    admin: Option<Admin>,
) -> io::Result<()> {
    let hangup = SelfPipe::on(signal_hook::consts::SIGHUP)?;
    let epoll = watch_own_fds(&listener, &stop, &hangup, admin.as_ref())?;
    let (writer, mut chat, schedule) = open_chat(history, rules.rooms)?;
    chat.set_resume_max(rules.resume_max);
    // The parent checked the file before serving; if it went bad since,
    // this hub serves without bots rather than not at all.
    let bots = Bots::load(rules.bots.as_deref()).unwrap_or_else(|e| {
        log::error!("{e}; no bots until the file is fixed and the server gets SIGHUP");
        Bots::default()
    });
    chat.set_bots(bots.names());
    // Opened here, after the hub's fork: no other process holds it.
    let cluster =
        rules
            .cluster
            .as_ref()
            .and_then(|opts| match Cluster::start(opts, chat.cluster_number()) {
                Ok(cluster) => {
                    log::info!("cluster: this server is {}", opts.server);
                    Some(cluster)
                }
                Err(e) => {
                    log::error!("cluster: {e}; serving this server's users alone");
                    None
                }
            });
    if let (Some(cluster), Some(opts)) = (&cluster, &rules.cluster) {
        epoll.add(cluster.fd(), EpollEvent::new(EpollFlags::EPOLLIN, CLUSTER))?;
        chat.set_leases(true);
        // The run part of the roster's versions: a later hub's are newer.
        chat.set_server(&opts.server, clock::unix_ms(SystemTime::now()));
    }
    let mut hub = Hub {
        epoll,
        listener,
        _stop: stop,
        hangup,
        admin,
        replies: HashMap::new(),
        next_reply: FIRST_REPLY,
        history: writer,
        users_shown: (0, 1),
        uid: nix::unistd::getuid().as_raw(),
        conns: HashMap::new(),
        next_id: FIRST_CONN,
        dirty: Vec::new(),
        full: 0,
        deferred: Vec::new(),
        stall: rules.stall,
        stall_check: None,
        trim_at: None,
        chat,
        buf: Vec::new(),
        schedule,
        bots,
        cluster,
        server_name: rules.cluster.as_ref().map(|c| c.server.clone()),
        awaiting_lease: HashMap::new(),
        renew_at: Instant::now(),
        present_at: Instant::now(),
        others: Vec::new(),
        link: LinkState::default(),
        sent: Sent::default(),
    };
    let parent_gone = hub.serve()?;
    hub.history.close();
    // The parent cleans up, and restarts a hub that stopped while it
    // lives, so the directory and the admin socket stay; but if the parent
    // died, nobody else will remove them.
    if parent_gone {
        socket_dir.remove();
        if let Some(path) = hub.admin.as_ref().and_then(status::Admin::path) {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

/// An epoll set with the hub's own fds in it, each under its token.
fn watch_own_fds(
    listener: &Listener,
    stop: &Stop,
    hangup: &SelfPipe,
    admin: Option<&Admin>,
) -> io::Result<Epoll> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let mut fds = vec![
        ("lifeline's read end", stop.lifeline.as_fd(), LIFELINE),
        ("SIGTERM pipe", stop.terminate.as_fd(), TERMINATE),
        ("hub socket", listener.as_fd(), LISTENER),
        ("SIGHUP pipe", hangup.as_fd(), HANGUP),
    ];
    fds.extend(admin.map(|admin| ("admin socket", admin.listener.as_fd(), ADMIN)));
    for (_, fd, token) in &fds {
        epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, *token))?;
    }
    log::debug!(
        "epoll {} watches {}",
        fd_number(&epoll.0),
        logging::fds(fds.iter().map(|(role, fd, _)| (*role, fd_number(fd))))
    );
    Ok(epoll)
}

/// The room as the last hub left it: its recent lines from the history,
/// which this hub goes on writing, and its schedule from the schedule file
/// (in the data directory, so it outlives the whole server).
fn open_chat(
    history: &history::Options,
    rooms: RoomLimits,
) -> io::Result<(Writer, Chat, ScheduleFile)> {
    let (writer, recent) = Writer::open(history).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open the history in {}: {e}", history.dir.display()),
        )
    })?;
    let path = history.dir.join("schedule.json");
    let mut chat = Chat::new(rooms);
    chat.restore(schedule_file::load(&path));
    chat.restore_history(recent, history.replay_lines);
    let schedule = ScheduleFile::new(path, chat.saved_changes());
    Ok((writer, chat, schedule))
}

/// Whether `event` ends the hub: `Some(true)` if the parent is gone,
/// `Some(false)` if it was told to stop.
fn stops(event: &EpollEvent) -> Option<bool> {
    match event.data() {
        LIFELINE => {
            log::info!("the parent is gone; hub exiting");
            Some(true)
        }
        TERMINATE => {
            log::info!("hub exiting");
            Some(false)
        }
        _ => None,
    }
}

impl Hub {
    /// Serves until told to stop; true if it stops because the parent
    /// is gone.
    fn serve(&mut self) -> io::Result<bool> {
        log::info!("hub started");
        let mut events = vec![EpollEvent::empty(); 256];
        loop {
            let ready = match self.epoll.wait(&mut events, self.timeout()) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            };
            // The end comes before whatever else the same wait brought: at
            // a shutdown the children see the lifeline end when the hub
            // does and exit at once, and their connections closing must
            // not be taken for their users leaving (the history would say
            // they left).
            if let Some(parent_gone) = events[..ready].iter().find_map(stops) {
                return Ok(parent_gone);
            }
            for event in &events[..ready] {
                self.handle(event);
            }
            self.end_turn();
        }
    }

    /// Does what one event asks.
    fn handle(&mut self, event: &EpollEvent) {
        match event.data() {
            LIFELINE | TERMINATE => {}
            LISTENER => self.accept_all(),
            ADMIN => self.answer_admin(),
            CLUSTER => self.hear_cluster(),
            id if id >= FIRST_REPLY => self.write_reply(id),
            HANGUP => {
                self.hangup.drain();
                self.history.reopen();
                self.bots.reload();
                self.chat.set_bots(self.bots.names());
            }
            id => {
                let flags = event.events();
                // A child that is gone is heard to its end even while
                // queues are full: epoll would report it again at once,
                // and it waits for no one.
                let hung_up = flags.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR);
                if hung_up || flags.contains(EpollFlags::EPOLLIN) {
                    self.read_from(id, hung_up);
                }
                if flags.contains(EpollFlags::EPOLLOUT) {
                    self.dirty.push(id);
                }
            }
        }
    }

    /// What follows the events of one wait: what is due, the disk, then
    /// the children's sockets, in that order.
    fn end_turn(&mut self) {
        let due = self.chat.due(SystemTime::now());
        self.deliver(due);
        self.publish();
        // Written before anyone is sent it, like the schedule below: a
        // line someone has read is in the history, even if the hub dies
        // the next moment.
        let lines = self.chat.take_unwritten();
        if let Some(admin) = &self.admin {
            let messages = lines.iter().filter(|e| e.is_message()).count();
            scoreboard::add(&admin.scoreboard.totals.messages, messages as u64);
        }
        self.history.append(lines);
        let now = Instant::now();
        self.history.write(now);
        // Saved before anyone hears of it: a confirmed scheduled message
        // is on disk, even if the hub dies the next moment.
        let chat = &self.chat;
        self.schedule
            .save_if_changed(chat.saved_changes(), || chat.saved(), now);
        self.drop_stalled(now);
        self.flush_dirty();
        let sent = std::mem::take(&mut self.sent);
        if sent.datagrams > 0 {
            log::debug!(
                "end of turn: sent {}, {} bytes",
                logging::count(sent.datagrams, "datagram"),
                sent.bytes
            );
        }
        self.trim_if_due(now);
        if self.full == 0 && !self.deferred.is_empty() {
            self.resume();
        }
        // A count off by one would stop the room for good; the tests run
        // debug builds, which check it every turn.
        debug_assert_eq!(
            self.full,
            self.conns.values().filter(|c| c.is_full()).count(),
            "full queues miscounted"
        );
        self.show_users();
    }

    /// In a linked cluster, a login, and a rename, take the nickname's
    /// lease first, so that two servers never give out the same one, nor
    /// hold one bot's session twice. (A takeover keeps the name it has.)
    fn lease_needed(&self, conn: ConnId, req: &ToHub) -> Option<String> {
        if !self.chat.cluster() {
            return None;
        }
        match req {
            ToHub::Login {
                nick,
                takeover: None,
                ..
            } => Some(nick_key(nick)),
            // Only for a name the rules would give (else refused as
            // ever), and not for a change of case of one's own.
            ToHub::Request(Request::Rename(new)) => {
                let (old, _, _) = self.chat.user(conn)?;
                let key = nick_key(new);
                (check_nick(new).is_ok() && key != nick_key(old)).then_some(key)
            }
            _ => None,
        }
    }

    /// Carries out a message from a child, unless it waits for a lease
    /// (or behind one that does).
    fn take_request(&mut self, id: ConnId, req: ToHub) {
        if let Some(pending) = self.awaiting_lease.get_mut(&id) {
            pending.held.push_back(req);
            return;
        }
        let rate = match self.authenticate(&req) {
            Ok(rate) => rate,
            Err(refusal) => {
                return self.deliver(vec![room::to(id, refusal), room::to(id, ToChild::Done)]);
            }
        };
        if let Some(key) = self.lease_needed(id, &req)
            && self.cluster.as_ref().is_some_and(|c| c.lease(id, key))
        {
            // Carried out when the lease is answered.
            let held = VecDeque::new();
            self.awaiting_lease.insert(id, Pending { req, rate, held });
            return;
        }
        let out = self.carry_out(id, req, rate, SystemTime::now());
        self.deliver(out);
    }

    /// What the chat makes of a message; a bot's login that went through
    /// comes with its flood rate (`rate`).
    fn carry_out(
        &mut self,
        id: ConnId,
        req: ToHub,
        rate: Option<f64>,
        now: SystemTime,
    ) -> Vec<Delivery> {
        let mut out = self.chat.handle(id, req, now);
        let registered = out.iter().find_map(|d| match &d.msg {
            ToChild::Registered(r) if d.to == Target::One(id) => Some(&r.nick),
            _ => None,
        });
        if let (Some(nick), Some(conn)) = (registered, self.conns.get(&id)) {
            log::debug!(
                "connection {id} (child {}, fd {}) is {nick}",
                conn.pid,
                fd_number(&conn.link)
            );
        }
        let registered = registered.is_some();
        if let Some(rate) = rate.filter(|_| registered) {
            let millilines_per_s = (rate * 1000.0) as u64;
            out.push(room::to(id, ToChild::FloodRate { millilines_per_s }));
        }
        out.push(room::to(id, ToChild::Done));
        out
    }

    /// A lease answered: the login or rename goes on, or is refused as a
    /// nickname in use (on another server); then what its child sent
    /// after it.
    fn leased(&mut self, conn: ConnId, granted: bool, now: SystemTime) {
        let Some(Pending { req, rate, held }) = self.awaiting_lease.remove(&conn) else {
            return;
        };
        let taken = |nick: &str| (Code::NickTaken, render::nick_in_use(nick));
        let mut out = match (&req, granted) {
            (ToHub::Request(Request::Rename(new)), true) => {
                let key = nick_key(new);
                let out = self.chat.handle(conn, req, now);
                // Refused after all (by this server's rules): the lease
                // goes back, unless a user here holds the name.
                if !self.chat.holds_nick(&key)
                    && let Some(cluster) = &self.cluster
                {
                    cluster.release(vec![key]);
                }
                out
            }
            (_, true) => {
                let out = self.carry_out(conn, req, rate, now);
                self.deliver(out);
                return self.take_held(conn, held);
            }
            // A bot whose session is on another server: that server ends
            // it if it is this device's, and the bot's next try gets in.
            (
                ToHub::Login {
                    nick,
                    bot: Some(proof),
                    ..
                },
                false,
            ) => {
                if let (Some(visitor), Some(cluster)) = (self.chat.visitor(nick), &self.cluster) {
                    let relay = room::Relay::TakeOver {
                        nick: visitor.nick.clone(),
                        device: proof.device.clone(),
                    };
                    cluster.relay(visitor.server.clone(), relay);
                }
                let (code, reason) = (Code::AlreadyConnected, render::connected_elsewhere(nick));
                vec![room::to(conn, ToChild::NickRefused { code, reason })]
            }
            (ToHub::Login { nick, .. }, false) => {
                let (code, reason) = taken(nick);
                vec![room::to(conn, ToChild::NickRefused { code, reason })]
            }
            (ToHub::Request(Request::Rename(new)), false) => {
                let (code, message) = taken(new);
                vec![room::to(
                    conn,
                    ToChild::Reply(Box::new(reply::error(code, message))),
                )]
            }
            (_, false) => Vec::new(),
        };
        out.push(room::to(conn, ToChild::Done));
        self.deliver(out);
        self.take_held(conn, held);
    }

    fn take_held(&mut self, conn: ConnId, held: VecDeque<ToHub>) {
        for req in held {
            self.take_request(conn, req);
        }
    }

    /// Hands this turn's public lines to the cluster (any it cannot take
    /// are told here), gives back the leases of nicknames freed, and
    /// renews the others' now and then.
    fn publish(&mut self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let freed = self.chat.take_freed_nicks();
        if !freed.is_empty() {
            cluster.release(freed);
        }
        let now = Instant::now();
        if self.chat.cluster() && now >= self.renew_at {
            self.renew_at = now + cluster::NICK_LEASE / 3;
            cluster.renew(self.chat.nick_keys());
        }
        let mut undelivered = Vec::new();
        for line in self.chat.take_outgoing() {
            if let Some(line) = cluster.publish(line) {
                undelivered.extend(self.chat.cluster_line(SystemTime::now(), &line));
            }
        }
        for (server, relay) in self.chat.take_relays() {
            cluster.relay(server, relay);
        }
        // This server's presence and roster, and news of the others;
        // after this turn's lines: a roster is newer than the lines
        // handed out before it (see `room::cluster`).
        if self.chat.cluster() && now >= self.present_at {
            self.present_at = now + cluster::PRESENCE_EVERY;
            let roster = self.chat.roster_if_changed();
            cluster.present(self.chat.members().len(), roster);
        }
        self.deliver(undelivered);
    }

    /// What the cluster's threads said: lines in the cluster's order,
    /// lines the writer could not add, the link going down or up.
    fn hear_cluster(&mut self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let now = SystemTime::now();
        let mut out = Vec::new();
        for news in cluster.take() {
            match news {
                FromCluster::Servers(others) => {
                    let (counts, servers): (Vec<_>, Vec<_>) = (others.into_iter())
                        .map(|o| ((o.name.clone(), o.users), (o.name, o.roster)))
                        .unzip();
                    out.extend(self.chat.other_servers(now, &servers));
                    self.others = counts;
                }
                FromCluster::Relayed(relay) => out.extend(self.chat.relayed(now, relay)),
                FromCluster::Lease { conn, granted } => self.leased(conn, granted, now),
                FromCluster::Line(line) | FromCluster::Undelivered(line) => {
                    out.extend(self.chat.cluster_line(now, &line));
                }
                FromCluster::Link { reader, up } => out.extend(self.link_changed(reader, up)),
            }
        }
        self.deliver(out);
    }

    /// One of the cluster's connections went up or down: the link is up
    /// while both are. Users are told when it goes down, and when it is
    /// back (not when it first comes up).
    fn link_changed(&mut self, reader: bool, up: bool) -> Vec<Delivery> {
        if reader {
            self.link.reader = up;
        } else {
            self.link.writer = up;
        }
        let up = self.link.reader && self.link.writer;
        if up == self.chat.cluster() {
            return Vec::new();
        }
        self.chat.set_cluster(up);
        if !up {
            log::warn!("cluster: the link to the other servers is down");
            return self.chat.notice_all(render::CLUSTER_DOWN);
        }
        log::info!("cluster: the link to the other servers is up");
        // What was published while it was down may not have arrived.
        self.chat.roster_again();
        let was_up = std::mem::replace(&mut self.link.was_up, true);
        match was_up {
            true => self.chat.notice_all(render::CLUSTER_BACK),
            false => Vec::new(),
        }
    }

    /// Answers everyone waiting on the admin socket with a report. Only
    /// the server's own user and root are answered.
    fn answer_admin(&mut self) {
        loop {
            let Some(admin) = &self.admin else { return };
            let stream = match admin.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::error!("accept on the admin socket: {e}");
                    return;
                }
            };
            if self.may_ask(&stream) {
                let bytes = self.report();
                self.send_reply(stream, bytes);
            }
        }
    }

    /// True if the one asking for a report is the server's own user or
    /// root.
    fn may_ask(&self, stream: &UnixStream) -> bool {
        match nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials) {
            Ok(c) if c.uid() == self.uid || c.uid() == 0 => true,
            Ok(c) => {
                log::warn!("refused a status request from uid {}", c.uid());
                false
            }
            Err(e) => {
                log::warn!("refused a status request: {e}");
                false
            }
        }
    }

    /// The report for `mpchat status`, encoded.
    fn report(&self) -> Vec<u8> {
        let Some(admin) = &self.admin else {
            return Vec::new();
        };
        let users = self.chat.members();
        let members = users.iter().filter_map(|conn| {
            let (nick, address, protocol) = self.chat.user(*conn)?;
            Some(status::Member {
                nick,
                address,
                pid: self.conns.get(conn)?.pid,
                protocol,
            })
        });
        let cluster = self
            .server_name
            .as_ref()
            .map(|server| status::ClusterReport {
                server: server.clone(),
                linked: self.chat.cluster(),
                others: (self.others.iter())
                    .map(|(name, users)| status::ServerReport {
                        name: name.clone(),
                        users: *users,
                    })
                    .collect(),
            });
        status::encode(&status::report(admin, members, self.chat.rooms(), cluster))
    }

    /// Starts writing a report, as the socket takes it, so a slow reader
    /// never holds up the room.
    fn send_reply(&mut self, stream: UnixStream, bytes: Vec<u8>) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let id = self.next_reply;
        self.next_reply += 1;
        let reply = Reply {
            stream,
            bytes,
            sent: 0,
        };
        if self
            .epoll
            .add(&reply.stream, EpollEvent::new(EpollFlags::EPOLLOUT, id))
            .is_ok()
        {
            self.replies.insert(id, reply);
        }
    }

    /// Writes more of a report; done (or failed), the connection closes.
    fn write_reply(&mut self, id: u64) {
        let Some(reply) = self.replies.get_mut(&id) else {
            return;
        };
        loop {
            match (&reply.stream).write(&reply.bytes[reply.sent..]) {
                Ok(n) => {
                    reply.sent += n;
                    if reply.sent < reply.bytes.len() {
                        continue;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {}
            }
            break;
        }
        if let Some(reply) = self.replies.remove(&id) {
            let _ = self.epoll.delete(&reply.stream);
        }
    }

    /// Keeps the process title (`mpchat: hub, 3 users`, and `in 7 rooms`
    /// once there is more than the lobby) up to date.
    fn show_users(&mut self) {
        let shown = (self.chat.user_count(), self.chat.room_count());
        if shown != self.users_shown {
            self.users_shown = shown;
            let (users, rooms) = shown;
            let plural = if users == 1 { "" } else { "s" };
            let title = match rooms {
                1 => format!("mpchat: hub, {users} user{plural}"),
                n => format!("mpchat: hub, {users} user{plural} in {n} rooms"),
            };
            title::set(&title);
        }
    }

    /// Until the next scheduled message is due, the history must be
    /// flushed to disk or a child may have stalled, or forever.
    fn timeout(&self) -> PollTimeout {
        let due = self
            .chat
            .next_due()
            .map(|due| due.duration_since(SystemTime::now()).unwrap_or_default());
        let now = Instant::now();
        // In a linked cluster, the leases are renewed even when nothing
        // happens. (Not while the link is down: they are not renewed then,
        // and a time gone by would make the loop spin.)
        let linked = self.cluster.is_some() && self.chat.cluster();
        let renew = linked.then(|| self.renew_at.min(self.present_at));
        let flush = (self.history.wake_by().into_iter())
            .chain(self.stall_check)
            .chain(self.trim_at)
            .chain(renew);
        let flush = flush.map(|at| at.saturating_duration_since(now));
        let Some(wait) = due.into_iter().chain(flush).min() else {
            return PollTimeout::NONE;
        };
        clock::poll_timeout(wait)
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok(Some(link)) => self.admit(link),
                Ok(None) => return,
                Err(e) => {
                    log::error!("accept on hub socket: {e}");
                    return;
                }
            }
        }
    }

    fn admit(&mut self, link: Link) {
        let pid = match link.peer() {
            Ok((uid, pid)) if uid == self.uid => pid,
            Ok((uid, _)) => {
                log::warn!("refused hub connection from uid {uid}");
                return;
            }
            Err(e) => {
                log::warn!("refused hub connection: cannot read its credentials: {e}");
                return;
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        if let Err(e) = self
            .epoll
            .add(&link, EpollEvent::new(EpollFlags::EPOLLIN, id))
        {
            log::error!("cannot watch a hub connection: {e}");
            return;
        }
        log::debug!(
            "accept() on the hub socket {}: fd {} from child {pid}, uid {} (the hub's own): connection {id}",
            fd_number(&self.listener),
            fd_number(&link),
            self.uid
        );
        self.conns.insert(
            id,
            Conn {
                link,
                pid,
                queue: VecDeque::new(),
                queued: 0,
                waiting_to_write: false,
                stalled: clock::Stall::default(),
                deferred: false,
            },
        );
    }

    /// Takes and carries out the requests waiting on one connection; while
    /// a queue is full, only those of a connection that has `hung_up`.
    fn read_from(&mut self, id: ConnId, hung_up: bool) {
        for _ in 0..MAX_READS_PER_TURN {
            if self.full > 0 && !hung_up {
                return self.defer(id);
            }
            let Some(conn) = self.conns.get(&id) else {
                return;
            };
            match conn.link.try_recv::<ToHub>(&mut self.buf) {
                Ok(Received::Data(requests)) => {
                    if log::log_enabled!(log::Level::Trace) {
                        log_datagram("from", conn, requests.len(), "request", self.buf.len());
                    }
                    for req in requests {
                        self.take_request(id, req);
                    }
                }
                Ok(Received::Empty) => return,
                Ok(Received::Closed) => {
                    log::debug!("connection {id} (child {}): end of file", conn.pid);
                    return self.close(id);
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    log::warn!("malformed message from connection {id} ignored: {e}");
                }
                Err(e) => {
                    log::warn!("connection {id}: {e}");
                    return self.close(id);
                }
            }
        }
    }

    /// A bot's login is let through only with the proof that it knows
    /// its secret (and then with its own flood rate, if it has one);
    /// every failure gets the same refusal, and is logged with how many
    /// came from that address lately.
    fn authenticate(&mut self, req: &ToHub) -> Result<Option<f64>, ToChild> {
        let ToHub::Login {
            nick,
            addr,
            bot: Some(proof),
            ..
        } = req
        else {
            return Ok(None);
        };
        let ip = addr
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip())
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        let checked = self.bots.verify(
            ip,
            nick,
            &proof.device,
            &proof.nonce,
            &proof.mac,
            Instant::now(),
        );
        match checked {
            Ok(bot) => Ok(bot.rate),
            Err(why) => {
                log::warn!(
                    "bot {nick} (device {}) from {addr} failed to authenticate ({why:?}; {} failures from {ip} in the last minute)",
                    proof.device,
                    self.bots.recent_failures(ip)
                );
                if let Some(admin) = &self.admin {
                    scoreboard::bump(&admin.scoreboard.totals.auth_failures);
                }
                Err(ToChild::NickRefused {
                    code: Code::AuthFailed,
                    reason: render::AUTH_FAILED.to_string(),
                })
            }
        }
    }

    /// Leaves a connection's requests unread until no queue is full.
    fn defer(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if !conn.deferred {
            conn.deferred = true;
            self.deferred.push(id);
            self.watch(id);
        }
    }

    /// No queue is full any more: the deferred requests are read again
    /// (epoll reports them at the next wait).
    fn resume(&mut self) {
        log::debug!(
            "queues caught up; reading {} connections again",
            self.deferred.len()
        );
        for id in std::mem::take(&mut self.deferred) {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.deferred = false;
                self.watch(id);
            }
        }
    }

    /// Tells epoll what to report for a connection: its requests unless
    /// they are deferred, and room in its socket while messages wait.
    fn watch(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let mut flags = EpollFlags::empty();
        if !conn.deferred {
            flags |= EpollFlags::EPOLLIN;
        }
        if conn.waiting_to_write {
            flags |= EpollFlags::EPOLLOUT;
        }
        if let Err(e) = self
            .epoll
            .modify(&conn.link, &mut EpollEvent::new(flags, id))
        {
            log::error!("cannot watch connection {id}: {e}");
            self.close(id);
        }
    }

    fn close(&mut self, id: ConnId) {
        self.awaiting_lease.remove(&id);
        if let Some(conn) = self.conns.remove(&id) {
            if conn.is_full() {
                self.full -= 1;
            }
            let (fd, pid) = (fd_number(&conn.link), conn.pid);
            drop(conn);
            log::debug!("closed fd {fd} (connection {id}, child {pid}); its user leaves");
        }
        let out = self.chat.leave(id, SystemTime::now());
        self.deliver(out);
    }

    /// Queues each delivery for its receivers, encoding it once (a room's
    /// line up to three times: as it is, with the room's name for the
    /// members whose current room is another, and as JSON for programs).
    fn deliver(&mut self, deliveries: Vec<Delivery>) {
        for delivery in deliveries {
            let frame: Rc<[u8]> = delivery.msg.encode().into();
            let (conns, dirty, full) = (&mut self.conns, &mut self.dirty, &mut self.full);
            match delivery.to {
                Target::One(id) => enqueue(conns, dirty, full, id, &frame),
                Target::Many(ids) => {
                    for id in ids {
                        enqueue(conns, dirty, full, id, &frame);
                    }
                }
                Target::Room(key) => {
                    let elsewhere: Rc<[u8]> = match &delivery.elsewhere {
                        Some(msg) => msg.encode().into(),
                        None => Rc::clone(&frame),
                    };
                    let json: Option<Rc<[u8]>> = delivery.json.map(|msg| msg.encode().into());
                    let mut queued = 0;
                    for member in self.chat.room_members(&key) {
                        let frame = match (&json, member.json, member.here) {
                            (Some(json), true, _) => json,
                            (None, true, _) => continue,
                            (_, false, true) => &frame,
                            (_, false, false) => &elsewhere,
                        };
                        enqueue(conns, dirty, full, member.conn, frame);
                        queued += 1;
                    }
                    if let Some(about) = &delivery.about
                        && log::log_enabled!(log::Level::Debug)
                    {
                        log_queued(about, &key, queued);
                    }
                }
                Target::JsonMembers(key) => {
                    for member in self.chat.room_members(&key).iter().filter(|m| m.json) {
                        enqueue(conns, dirty, full, member.conn, &frame);
                    }
                }
            }
        }
    }

    /// Drops the children that have taken nothing for the stall timeout
    /// while messages waited for them: they have stopped. Their children,
    /// if they ever run again, are turned away (see [`Chat::too_slow`]).
    fn drop_stalled(&mut self, now: Instant) {
        let Some(stall) = self.stall else { return };
        if self.stall_check.is_none_or(|at| now < at) {
            return;
        }
        let mut stalled = Vec::new();
        let mut next = None::<Instant>;
        for (&id, conn) in &self.conns {
            let Some(over) = conn.stalled.deadline(stall) else {
                continue;
            };
            if now >= over {
                stalled.push((id, conn.pid));
            } else {
                next = Some(next.map_or(over, |at| at.min(over)));
            }
        }
        self.stall_check = next.map(|at| at.max(now + STALL_CHECK));
        for (id, pid) in stalled {
            log::warn!(
                "connection {id} (pid {pid}) stopped reading: nothing taken for {} s; dropping it",
                stall.as_secs()
            );
            self.chat.too_slow(id);
            self.close(id);
        }
    }

    /// Gives the heap a burst left free back to the kernel, rather than
    /// keep it dirty for the rest of the hub's life.
    fn trim_if_due(&mut self, now: Instant) {
        if self.trim_at.is_some_and(|at| now >= at) {
            self.trim_at = None;
            // SAFETY: malloc_trim only returns free heap pages to the
            // kernel; it has no preconditions and takes glibc's own locks
            // against the history's flushing thread.
            unsafe { libc::malloc_trim(0) };
        }
    }

    /// Sends what the connections given new messages have queued, as far
    /// as each socket takes it; a full socket is watched until writable.
    /// A connection found dead here is closed, and the room told: that
    /// news is sent in the next round, not left for the next event.
    fn flush_dirty(&mut self) {
        while !self.dirty.is_empty() {
            self.flush_dirty_once();
        }
    }

    fn flush_dirty_once(&mut self) {
        let mut dead = Vec::new();
        // Read only if a queue is left waiting, which is rare.
        let mut now = None;
        for id in std::mem::take(&mut self.dirty) {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            let was_full = conn.is_full();
            let before = self.sent.datagrams;
            let flushed = flush(conn, &mut self.sent);
            // Counted before anything else: a send can fail after others
            // have emptied the queue.
            if was_full && !conn.is_full() {
                self.full -= 1;
            }
            if let Err(e) = flushed {
                log::debug!("connection {id}: {e}");
                dead.push(id);
                continue;
            }
            let took = self.sent.datagrams > before;
            let waiting = !conn.queue.is_empty();
            let started = conn
                .stalled
                .note(waiting, took, || *now.get_or_insert_with(Instant::now));
            if let (Some(start), Some(stall)) = (started, self.stall) {
                self.stall_check.get_or_insert(start + stall);
            }
            if !waiting && conn.queue.capacity() > QUEUE_KEPT {
                // A burst's queue is given back, not kept for every idle
                // child.
                conn.queue = VecDeque::new();
                let now = *now.get_or_insert_with(Instant::now);
                self.trim_at.get_or_insert(now + TRIM_AFTER);
            }
            if waiting != conn.waiting_to_write {
                conn.waiting_to_write = waiting;
                self.watch(id);
            }
        }
        for id in dead {
            self.close(id);
        }
    }
}

/// The debug log's line for a room's public line. This and
/// [`log_datagram`] are out of line: on the way of every line, a log line
/// that is off costs only the level check.
#[cold]
#[inline(never)]
fn log_queued((kind, nick): &(Kind, String), room: &str, members: usize) {
    log::debug!(
        "{nick}'s {} line in {room}: queued for {}",
        kind.name(),
        logging::count(members, "member")
    );
}

/// The trace's line for a datagram `to` or `from` a child.
#[cold]
#[inline(never)]
fn log_datagram(way: &str, conn: &Conn, count: usize, what: &str, bytes: usize) {
    log::trace!(
        "datagram {way} child {} on fd {}: {}, {bytes} bytes",
        conn.pid,
        fd_number(&conn.link),
        logging::count(count, what)
    );
}

/// Queues one message for a connection, noting that it has news and
/// whether its queue is now full.
fn enqueue(
    conns: &mut HashMap<ConnId, Conn>,
    dirty: &mut Vec<ConnId>,
    full: &mut usize,
    id: ConnId,
    frame: &Rc<[u8]>,
) {
    let Some(conn) = conns.get_mut(&id) else {
        return;
    };
    if conn.queue.is_empty() {
        dirty.push(id);
    }
    let was_full = conn.is_full();
    conn.queue.push_back(Rc::clone(frame));
    conn.queued += frame.len() + PLACE_IN_QUEUE;
    if !was_full && conn.is_full() {
        *full += 1;
    }
}

/// Sends a connection's queue until it is empty or the socket is full;
/// adds what the socket took to `sent`.
fn flush(conn: &mut Conn, sent: &mut Sent) -> io::Result<()> {
    while !conn.queue.is_empty() {
        let batch = ipc::next_batch(&conn.queue);
        if !conn.link.try_send_batch(&batch.pieces)? {
            break;
        }
        let (count, bytes) = (batch.pieces.len(), batch.bytes);
        if log::log_enabled!(log::Level::Trace) {
            log_datagram("to", conn, count, "message", bytes);
        }
        conn.queued -= bytes + count * PLACE_IN_QUEUE;
        conn.queue.drain(..count);
        sent.datagrams += 1;
        sent.bytes += bytes;
    }
    Ok(())
}
