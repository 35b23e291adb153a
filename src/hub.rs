//! The hub process: owns the room and fans lines out to the children.
//!
//! The hub listens on a Unix-domain socket inside a private directory (see
//! [`SocketDir`]); each client's child connects to it after the fork. The
//! hub never blocks on one child: every socket is non-blocking, and what a
//! child has not taken yet waits in that child's bounded queue. A line for
//! many receivers is rendered and encoded once, and the same bytes are
//! queued for each of them.
//!
//! A child that dies, however it dies, closes its socket; the hub sees the
//! end of the connection and removes the user at once.
//!
//! The hub is also the only writer of the chat history (each turn's public
//! lines go to the file before anyone is sent them; see
//! [`crate::history`]), reopens it on SIGHUP, and answers `mpchat status`
//! on the admin socket (see [`crate::status`]).

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::history::{self, Writer};
use crate::ipc::{self, Link, Listener, Received, ToChild, ToHub};
use crate::room::{ConnId, Delivery, Room, Target};
use crate::signals::Hangup;
use crate::spawn::Stop;
use crate::status::{self, Admin};
use crate::{state, title};

/// Messages taken from one child per turn, so one busy child cannot starve
/// the others.
const MAX_READS_PER_TURN: usize = 64;

/// Where the server's private runtime directories (the hub's socket, the
/// admin socket) may go, in the order they are tried: `$XDG_RUNTIME_DIR`,
/// `/run/mpchat` (the systemd unit's runtime directory), then the
/// temporary directory. Only those that exist.
pub fn runtime_bases() -> Vec<PathBuf> {
    let mut bases: Vec<PathBuf> = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    bases.push(PathBuf::from("/run/mpchat"));
    bases.push(std::env::temp_dir());
    bases.retain(|b| b.is_dir());
    bases.dedup();
    bases
}

/// The private directory that holds the hub's socket.
///
/// Created mode 0700, so only the server's own user can reach the socket
/// (which is itself mode 0600); the hub also checks each peer's uid.
#[derive(Debug, Clone)]
pub struct SocketDir {
    dir: PathBuf,
}

impl SocketDir {
    /// Creates a fresh directory in the first of [`runtime_bases`] that
    /// lets us (`$XDG_RUNTIME_DIR` is root's after `--user`, say).
    pub fn create() -> io::Result<SocketDir> {
        let mut last_error = io::Error::other("no runtime or temporary directory");
        for base in runtime_bases() {
            match SocketDir::create_in(&base) {
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => last_error = e,
                other => return other,
            }
        }
        Err(last_error)
    }

    fn create_in(base: &std::path::Path) -> io::Result<SocketDir> {
        use std::os::unix::fs::DirBuilderExt;
        let pid = std::process::id();
        let mut last_error = None;
        for attempt in 0..100 {
            let dir = base.join(format!("mpchat-{pid}-{attempt}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(SocketDir { dir }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("no free directory name")))
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("hub.sock")
    }

    /// Removes the socket and the directory; what is already gone is fine.
    pub fn remove(&self) {
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
    /// Encoded messages not yet taken by the child, oldest first.
    queue: VecDeque<Rc<[u8]>>,
    /// The socket was full; epoll also reports when it is writable again.
    waiting_to_write: bool,
    /// The queue reached the hub's bound: the child has stopped reading,
    /// and is dropped at the next flush.
    overflowed: bool,
}

/// A report on its way to `mpchat status`.
struct Reply {
    stream: std::os::unix::net::UnixStream,
    bytes: Vec<u8>,
    sent: usize,
}

/// epoll tokens for the hub's own fds; connection ids start above them.
const LIFELINE: u64 = 0;
const TERMINATE: u64 = 1;
const LISTENER: u64 = 2;
const HANGUP: u64 = 3;
const ADMIN: u64 = 4;
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
    hangup: Hangup,
    /// The admin socket and what its reports are made of.
    admin: Option<Admin>,
    /// Reports being written to `mpchat status` clients, by id.
    replies: HashMap<u64, Reply>,
    next_reply: u64,
    history: Writer,
    /// The number of users the process title shows.
    users_shown: usize,
    uid: u32,
    conns: HashMap<ConnId, Conn>,
    next_id: ConnId,
    /// Connections given new messages since the last flush.
    dirty: Vec<ConnId>,
    room: Room,
    buf: Vec<u8>,
    /// Where the scheduled messages are saved, and which change of them
    /// was saved last.
    state_path: PathBuf,
    saved_changes: u64,
    /// When a save last failed (the next try waits a second, so a full
    /// disk does not slow the room) and when that was last logged (once a
    /// minute, so it does not fill the log either).
    save_failed: Option<std::time::Instant>,
    save_error_logged: Option<std::time::Instant>,
    /// Messages queued for one child (beyond what its socket holds) before
    /// the hub gives up on it: `--max-backlog`. A child reads its socket
    /// even while its own client is slow, so only a stopped or starved
    /// child gets here.
    max_queued: usize,
}

/// Runs the hub until the parent is gone or it is told to stop.
///
/// `max_queued` bounds the messages waiting for one child; 0 is no bound.
pub fn run(
    listener: Listener,
    stop: Stop,
    socket_dir: SocketDir,
    max_queued: usize,
    history: &history::Options,
    admin: Option<Admin>,
) -> io::Result<()> {
    let hangup = Hangup::install()?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(
        &stop.lifeline,
        EpollEvent::new(EpollFlags::EPOLLIN, LIFELINE),
    )?;
    epoll.add(
        &stop.terminate,
        EpollEvent::new(EpollFlags::EPOLLIN, TERMINATE),
    )?;
    epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
    epoll.add(&hangup, EpollEvent::new(EpollFlags::EPOLLIN, HANGUP))?;
    if let Some(admin) = &admin {
        epoll.add(&admin.listener, EpollEvent::new(EpollFlags::EPOLLIN, ADMIN))?;
    }
    let (writer, recent) = Writer::open(history).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open the history in {}: {e}", history.dir.display()),
        )
    })?;
    // In the data directory, so the schedule outlives the whole server.
    let state_path = history.dir.join("schedule.json");
    let mut room = Room::new();
    room.restore(state::load(&state_path));
    room.restore_history(recent, history.replay_lines);
    let saved_changes = room.schedule_changes();
    let mut hub = Hub {
        epoll,
        listener,
        _stop: stop,
        hangup,
        admin,
        replies: HashMap::new(),
        next_reply: FIRST_REPLY,
        history: writer,
        users_shown: 0,
        uid: nix::unistd::getuid().as_raw(),
        conns: HashMap::new(),
        next_id: FIRST_CONN,
        dirty: Vec::new(),
        room,
        buf: Vec::new(),
        state_path,
        saved_changes,
        save_failed: None,
        save_error_logged: None,
        max_queued: if max_queued == 0 {
            usize::MAX
        } else {
            max_queued
        },
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
            for event in &events[..ready] {
                match event.data() {
                    LIFELINE => {
                        log::info!("the parent is gone; hub exiting");
                        return Ok(true);
                    }
                    TERMINATE => {
                        log::info!("hub exiting");
                        return Ok(false);
                    }
                    LISTENER => self.accept_all(),
                    ADMIN => self.answer_admin(),
                    id if id >= FIRST_REPLY => self.write_reply(id),
                    HANGUP => {
                        self.hangup.take();
                        self.history.reopen();
                    }
                    id => {
                        let flags = event.events();
                        if flags.intersects(
                            EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR,
                        ) {
                            self.read_from(id);
                        }
                        if flags.contains(EpollFlags::EPOLLOUT) {
                            self.dirty.push(id);
                        }
                    }
                }
            }
            let due = self.room.due(SystemTime::now());
            self.deliver(due);
            // Written before anyone is sent it, like the schedule below: a
            // line someone has read is in the history, even if the hub
            // dies the next moment.
            let lines = self.room.take_unwritten();
            if let Some(admin) = &self.admin {
                let messages = lines.iter().filter(|e| e.is_message()).count();
                admin
                    .scoreboard
                    .totals
                    .messages
                    .fetch_add(messages as u64, std::sync::atomic::Ordering::Relaxed);
            }
            self.history.append(lines);
            self.history.write(Instant::now());
            // Saved before anyone hears of it: a confirmed scheduled
            // message is on disk, even if the hub dies the next moment.
            self.save_if_changed();
            self.flush_dirty();
            self.show_users();
        }
    }

    /// Answers everyone waiting on the admin socket with a report. Only
    /// the server's own user and root are answered.
    fn answer_admin(&mut self) {
        let Some(admin) = &self.admin else { return };
        loop {
            let stream = match admin.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::error!("accept on the admin socket: {e}");
                    return;
                }
            };
            match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
            {
                Ok(c) if c.uid() == self.uid || c.uid() == 0 => {}
                Ok(c) => {
                    log::warn!("refused a status request from uid {}", c.uid());
                    continue;
                }
                Err(e) => {
                    log::warn!("refused a status request: {e}");
                    continue;
                }
            }
            let members = self.room.members().iter().filter_map(|conn| {
                let (nick, address) = self.room.user(*conn)?;
                Some(status::Member {
                    nick,
                    address,
                    pid: self.conns.get(conn)?.pid,
                })
            });
            let bytes = status::encode(&status::report(admin, members));
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let id = self.next_reply;
            self.next_reply += 1;
            let reply = Reply {
                stream,
                bytes,
                sent: 0,
            };
            // Written as the socket takes it, so a slow reader never holds
            // up the room.
            if self
                .epoll
                .add(&reply.stream, EpollEvent::new(EpollFlags::EPOLLOUT, id))
                .is_ok()
            {
                self.replies.insert(id, reply);
            }
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

    /// Keeps the process title (`mpchat: hub, 3 users`) up to date.
    fn show_users(&mut self) {
        let users = self.room.members().len();
        if users != self.users_shown {
            self.users_shown = users;
            let plural = if users == 1 { "" } else { "s" };
            title::set(&format!("mpchat: hub, {users} user{plural}"));
        }
    }

    /// Saves the scheduled messages if they changed. A failure (disk full,
    /// read-only directory) is logged at most once a minute and chat goes
    /// on; the last good file stays as it was.
    fn save_if_changed(&mut self) {
        let changes = self.room.schedule_changes();
        let now = std::time::Instant::now();
        if changes == self.saved_changes
            || self
                .save_failed
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        match state::save(&self.state_path, &self.room.saved()) {
            Ok(()) => {
                self.saved_changes = changes;
                self.save_failed = None;
            }
            Err(e) => {
                self.save_failed = Some(now);
                if self
                    .save_error_logged
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
                {
                    log::error!(
                        "cannot save the scheduled messages to {}: {e}",
                        self.state_path.display()
                    );
                    self.save_error_logged = Some(now);
                }
            }
        }
    }

    /// Until the next scheduled message is due or the history must be
    /// flushed to disk, or forever.
    fn timeout(&self) -> PollTimeout {
        let due = self
            .room
            .next_due()
            .map(|due| due.duration_since(SystemTime::now()).unwrap_or_default());
        let flush = self
            .history
            .wake_by()
            .map(|at| at.saturating_duration_since(Instant::now()));
        let Some(wait) = due.into_iter().chain(flush).min() else {
            return PollTimeout::NONE;
        };
        // Round up, so we do not wake a moment early and spin.
        let ms = wait.as_micros().div_ceil(1000);
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
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
        self.conns.insert(
            id,
            Conn {
                link,
                pid,
                queue: VecDeque::new(),
                waiting_to_write: false,
                overflowed: false,
            },
        );
    }

    /// Takes and carries out the requests waiting on one connection.
    fn read_from(&mut self, id: ConnId) {
        for _ in 0..MAX_READS_PER_TURN {
            let Some(conn) = self.conns.get(&id) else {
                return;
            };
            match conn.link.try_recv::<ToHub>(&mut self.buf) {
                Ok(Received::Data(requests)) => {
                    for req in requests {
                        let mut out = self.room.handle(id, req, SystemTime::now());
                        out.push(Delivery {
                            to: Target::One(id),
                            msg: ToChild::Done,
                        });
                        self.deliver(out);
                    }
                }
                Ok(Received::Empty) => return,
                Ok(Received::Closed) => return self.close(id),
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

    fn close(&mut self, id: ConnId) {
        self.conns.remove(&id);
        let out = self.room.leave(id, SystemTime::now());
        self.deliver(out);
    }

    /// Queues each delivery for its receivers, encoding it once.
    fn deliver(&mut self, deliveries: Vec<Delivery>) {
        for delivery in deliveries {
            let frame: Rc<[u8]> = delivery.msg.encode().into();
            let (conns, dirty, max) = (&mut self.conns, &mut self.dirty, self.max_queued);
            match delivery.to {
                Target::One(id) => enqueue(conns, dirty, max, id, &frame),
                Target::All => {
                    for &id in self.room.members() {
                        enqueue(conns, dirty, max, id, &frame);
                    }
                }
            }
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
        for id in std::mem::take(&mut self.dirty) {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if conn.overflowed {
                log::warn!("connection {id} stopped reading; dropping it");
                // Its child will find the socket closed and try to rejoin:
                // the room must know to turn it away.
                self.room.too_slow(id);
                dead.push(id);
                continue;
            }
            match flush(conn) {
                Ok(()) => {}
                Err(e) => {
                    log::debug!("connection {id}: {e}");
                    dead.push(id);
                    continue;
                }
            }
            let want = !conn.queue.is_empty();
            if want != conn.waiting_to_write {
                conn.waiting_to_write = want;
                let flags = if want {
                    EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT
                } else {
                    EpollFlags::EPOLLIN
                };
                if let Err(e) = self
                    .epoll
                    .modify(&conn.link, &mut EpollEvent::new(flags, id))
                {
                    log::error!("cannot watch connection {id}: {e}");
                    dead.push(id);
                }
            }
        }
        for id in dead {
            self.close(id);
        }
    }
}

/// Queues one message for a connection, noting that it has news; a
/// connection whose queue is full is marked to be dropped instead.
fn enqueue(
    conns: &mut HashMap<ConnId, Conn>,
    dirty: &mut Vec<ConnId>,
    max_queued: usize,
    id: ConnId,
    frame: &Rc<[u8]>,
) {
    let Some(conn) = conns.get_mut(&id) else {
        return;
    };
    if conn.overflowed {
        return;
    }
    if conn.queue.len() >= max_queued {
        conn.overflowed = true;
        dirty.push(id);
        return;
    }
    if conn.queue.is_empty() {
        dirty.push(id);
    }
    conn.queue.push_back(Rc::clone(frame));
}

/// Sends a connection's queue until it is empty or the socket is full.
fn flush(conn: &mut Conn) -> io::Result<()> {
    while !conn.queue.is_empty() {
        let batch = next_batch(&conn.queue);
        if !conn.link.try_send_batch(&batch)? {
            break;
        }
        let sent = batch.len();
        conn.queue.drain(..sent);
    }
    Ok(())
}

/// The messages at the front of a queue that fit in one datagram.
fn next_batch(queue: &VecDeque<Rc<[u8]>>) -> Vec<IoSlice<'_>> {
    let mut bytes = 0;
    queue
        .iter()
        .take(ipc::MAX_BATCH)
        .take_while(|frame| {
            bytes += frame.len();
            // Always at least one, however long.
            bytes == frame.len() || bytes <= ipc::MAX_DATAGRAM
        })
        .map(|frame| IoSlice::new(frame))
        .collect()
}
