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

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::ipc::{self, Link, Listener, Received, ToChild, ToHub};
use crate::room::{ConnId, Delivery, Room, Target};
use crate::spawn::Stop;

/// Messages queued for one child before the hub gives up on it. A child
/// reads its socket even while its own client is slow, so only a stopped
/// child gets here.
const MAX_QUEUED: usize = 10_000;
/// Messages taken from one child per turn, so one busy child cannot starve
/// the others.
const MAX_READS_PER_TURN: usize = 64;

/// The private directory that holds the hub's socket.
///
/// Created mode 0700, so only the server's own user can reach the socket
/// (which is itself mode 0600); the hub also checks each peer's uid.
#[derive(Debug, Clone)]
pub struct SocketDir {
    dir: PathBuf,
}

impl SocketDir {
    /// Creates a fresh directory under `$XDG_RUNTIME_DIR`, or the system's
    /// temporary directory.
    pub fn create() -> io::Result<SocketDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
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

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// One child's connection.
struct Conn {
    link: Link,
    /// Encoded messages not yet taken by the child, oldest first.
    queue: VecDeque<Rc<[u8]>>,
}

struct Hub {
    listener: Listener,
    stop: Stop,
    uid: u32,
    conns: HashMap<ConnId, Conn>,
    next_id: ConnId,
    room: Room,
    buf: Vec<u8>,
}

/// Runs the hub until the parent is gone or it is told to stop.
pub fn run(listener: Listener, stop: Stop, socket_dir: SocketDir) -> io::Result<()> {
    let mut hub = Hub {
        listener,
        stop,
        uid: nix::unistd::getuid().as_raw(),
        conns: HashMap::new(),
        next_id: 1,
        room: Room::new(),
        buf: vec![0; ipc::MAX_DATAGRAM],
    };
    let result = hub.serve();
    // The parent normally cleans up; if it died, nobody else will.
    socket_dir.remove();
    result
}

impl Hub {
    fn serve(&mut self) -> io::Result<()> {
        log::info!("hub started");
        loop {
            let ids: Vec<ConnId> = self.conns.keys().copied().collect();
            let mut fds = Vec::with_capacity(ids.len() + 3);
            fds.extend(self.stop.poll_fds());
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            for id in &ids {
                let conn = &self.conns[id];
                let mut events = PollFlags::POLLIN;
                if !conn.queue.is_empty() {
                    events |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(conn.link.as_fd(), events));
            }
            match poll(&mut fds, self.timeout()) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            if Stop::requested(&fds[..2]) {
                log::info!("hub exiting");
                return Ok(());
            }
            let ready: Vec<PollFlags> = fds
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            drop(fds);
            if !ready[2].is_empty() {
                self.accept_all();
            }
            for (id, events) in ids.into_iter().zip(&ready[3..]) {
                if events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                    self.read_from(id);
                }
            }
            let due = self.room.due(SystemTime::now());
            self.deliver(due);
            self.flush_all();
        }
    }

    /// Until the next scheduled message is due, or forever.
    fn timeout(&self) -> PollTimeout {
        let Some(due) = self.room.next_due() else {
            return PollTimeout::NONE;
        };
        let wait = due
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
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
        match link.peer_uid() {
            Ok(uid) if uid == self.uid => {}
            Ok(uid) => {
                log::warn!("refused hub connection from uid {uid}");
                return;
            }
            Err(e) => {
                log::warn!("refused hub connection: cannot read its credentials: {e}");
                return;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(
            id,
            Conn {
                link,
                queue: VecDeque::new(),
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
                Ok(Received::Messages(requests)) => {
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
            let frame: Rc<[u8]> = ipc::encode(&delivery.msg).into();
            match delivery.to {
                Target::One(id) => enqueue(&mut self.conns, id, &frame),
                Target::All => {
                    for &id in self.room.members() {
                        enqueue(&mut self.conns, id, &frame);
                    }
                }
            }
        }
    }

    /// Sends what each connection has queued, as far as its socket takes it.
    fn flush_all(&mut self) {
        let mut dead = Vec::new();
        for (&id, conn) in &mut self.conns {
            if conn.queue.len() > MAX_QUEUED {
                log::warn!("connection {id} stopped reading; dropping it");
                dead.push(id);
                continue;
            }
            while !conn.queue.is_empty() {
                let batch = next_batch(&conn.queue);
                match conn.link.try_send_batch(&batch) {
                    Ok(true) => {
                        let sent = batch.len();
                        conn.queue.drain(..sent);
                    }
                    Ok(false) => break,
                    Err(e) => {
                        log::debug!("connection {id}: {e}");
                        dead.push(id);
                        break;
                    }
                }
            }
        }
        for id in dead {
            self.close(id);
        }
    }
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

fn enqueue(conns: &mut HashMap<ConnId, Conn>, id: ConnId, frame: &Rc<[u8]>) {
    if let Some(conn) = conns.get_mut(&id) {
        conn.queue.push_back(Rc::clone(frame));
    }
}
