//! The parent: binds the port, starts the hub (and a new one if it dies),
//! decides who gets in, forks a child for each client, reaps children, and
//! shuts everything down.
//!
//! The parent stays small and away from the room's state: it never reads a
//! byte from a client. Its main loop waits on the listening socket, the
//! signal self-pipe and one login pipe per client still at the nickname
//! prompt, and every forked process leaves the loop for good in one place
//! ([`Server::serve`], through `run_job`).
//!
//! May use: `hub` and `session`, only for what it hands them across a fork
//! (their entry points, and the sockets and files it opens for them),
//! `protocol` and `os`. Checked by `scripts/check_layout.py`.

pub(crate) mod admission;
pub(crate) mod privileges;

use std::collections::HashMap;
use std::ffi::CStr;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::MsgFlags;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::hub::SocketDir;
use crate::hub::history::DataDir;
use crate::hub::status;
use crate::os::logging::{self, Role, Throttle, fd_number};
use crate::os::scoreboard::{self, Place, Scoreboard};
use crate::os::signals::{self, Signals};
use crate::os::spawn::{self, Forked, Lifeline, LifelineWriter, LoggingIn, LoginWatch};
use crate::os::{clock, title};
use crate::parent::admission::{Admission, Refusal};
use crate::protocol::ipc;
use crate::protocol::reply::Code;
use crate::protocol::sniff::{self, Wire};
use crate::protocol::{CRLF, json, render};
use crate::session::echo;
use crate::{Config, hub, session};

/// How long the other processes get to say goodbye at shutdown before the
/// parent kills what is left; the whole shutdown must fit in two seconds.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);
/// Pause after an `accept()` or `fork()` failure caused by a shortage of
/// fds, memory or processes, so the parent does not spin on it.
const BACKOFF: Duration = Duration::from_millis(100);
/// A hub that stops this many times within [`HUB_CRASH_WINDOW`] is not
/// restarted again: something is wrong that restarting will not fix.
const HUB_MAX_CRASHES: usize = 5;
const HUB_CRASH_WINDOW: Duration = Duration::from_secs(60);

/// What the server is for: the chat, or the class-lab echo server, which
/// needs none of the chat's directories and sockets.
enum Mode {
    Chat(Chat),
    Echo,
}

/// What the parent holds for the chat.
struct Chat {
    /// Where the hub's socket lives.
    socket_dir: SocketDir,
    /// The history's directory, held for its lock while the server runs.
    data_dir: DataDir,
    /// The hub's listening socket. The parent holds it across hub
    /// restarts (and never accepts on it), so a child that connects while
    /// a new hub is starting waits in its backlog instead of failing.
    hub_listener: ipc::Listener,
    /// The admin socket (`mpchat status`), which the hub answers; kept
    /// across hub restarts like the hub's socket. None if it could not be
    /// made: the chat works without it.
    admin: Option<(UnixListener, PathBuf)>,
}

/// Work for a freshly forked process.
enum Job {
    Hub(HubJob),
    Client(ClientJob),
    Echo(TcpStream),
}

impl Job {
    /// What the process becomes: its role in the log, its name in `ps`.
    fn role(&self) -> (Role, &'static CStr) {
        match self {
            Job::Hub(_) => (Role::Hub, c"mpchat-hub"),
            Job::Client(_) => (Role::Child, c"mpchat-client"),
            Job::Echo(_) => (Role::Echo, c"mpchat-echo"),
        }
    }

    /// The fds the job is handed, by role, for the debug log.
    fn kept_fds(&self) -> Vec<(&'static str, RawFd)> {
        match self {
            Job::Hub(job) => job.kept_fds(),
            Job::Client(job) => {
                let mut fds = vec![("client socket", fd_number(&job.client))];
                fds.extend(
                    (job.logging_in.iter())
                        .map(|held| ("login pipe's write end", fd_number(&held))),
                );
                fds
            }
            Job::Echo(client) => vec![("client socket", fd_number(&client))],
        }
    }
}

/// The hub's own copies of the sockets the parent keeps for every hub.
struct HubJob {
    listener: ipc::Listener,
    admin: Option<UnixListener>,
    socket_dir: SocketDir,
}

impl HubJob {
    fn kept_fds(&self) -> Vec<(&'static str, RawFd)> {
        let mut fds = vec![("hub socket", fd_number(&self.listener))];
        fds.extend((self.admin.iter()).map(|admin| ("admin socket", fd_number(admin))));
        fds
    }
}

/// A client admitted to the chat.
struct ClientJob {
    client: TcpStream,
    peer: SocketAddr,
    /// Dropped once the client has a nickname; none when logins are not
    /// counted.
    logging_in: Option<LoggingIn>,
    slot: Place,
    hub_socket: PathBuf,
}

/// The processes the parent has forked and not yet reaped.
#[derive(Debug, Default)]
struct Children {
    hub: Option<Pid>,
    /// Each client child's client address and scoreboard slot.
    clients: HashMap<Pid, (SocketAddr, Place)>,
}

/// What reaping found.
#[derive(Debug, Default)]
struct Reaped {
    /// The hub exited, with this status.
    hub: Option<WaitStatus>,
    /// Where the clients whose children exited came from, and their
    /// scoreboard slots.
    clients: Vec<(SocketAddr, Place)>,
}

impl Children {
    fn is_empty(&self) -> bool {
        self.hub.is_none() && self.clients.is_empty()
    }

    /// Reaps every child that has exited, without blocking.
    fn reap(&mut self) -> Reaped {
        let mut reaped = Reaped::default();
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return reaped,
                Ok(status) => status,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("waitpid: {e}");
                    return reaped;
                }
            };
            let Some(pid) = status.pid() else { continue };
            if self.hub == Some(pid) {
                log::debug!("waitpid(): reaped the hub {pid}: {status:?}");
                self.hub = None;
                reaped.hub = Some(status);
            } else if let Some((peer, slot)) = self.clients.remove(&pid) {
                match status {
                    WaitStatus::Exited(_, 0) => {
                        log::debug!("waitpid(): reaped child {pid} ({peer}), exit status 0");
                    }
                    _ => log::warn!("child {pid} for {peer} ended: {status:?}"),
                }
                reaped.clients.push((peer, slot));
            }
        }
    }

    fn kill_all(&self) {
        for pid in self.hub.iter().chain(self.clients.keys()) {
            let _ = kill(*pid, Signal::SIGKILL);
        }
    }
}

/// The parent process.
pub struct Server {
    config: Config,
    listener: TcpListener,
    signals: Signals,
    /// Held, never written: closing it (by exiting) tells everyone else.
    lifeline_writer: LifelineWriter,
    /// Inherited by every forked process.
    lifeline: Lifeline,
    mode: Mode,
    /// Counters shared with every process, and the slots not in use.
    scoreboard: Scoreboard,
    free_slots: Vec<Place>,
    /// When the hub stopped, within the last [`HUB_CRASH_WINDOW`].
    hub_crashes: Vec<Instant>,
    children: Children,
    admission: Admission,
    /// One per client child still logging in (only while that is
    /// limited), with the child's pid.
    logging_in: Vec<(Pid, LoginWatch)>,
    /// Refusals and failures to accept or fork, logged once a second.
    error_log: Throttle,
}

impl Server {
    /// Binds the listening socket and prepares everything the other
    /// processes inherit. Nothing is forked yet.
    pub fn bind(config: Config) -> io::Result<Server> {
        let listener = TcpListener::bind((config.bind, config.port))
            .map_err(|e| describe_bind_error(e, config.port))?;
        // The loop polls before accepting, and a connection that is reset
        // in between must not block it.
        listener.set_nonblocking(true)?;
        // The port is bound: root is needed no longer. Everything from here
        // on, the hub's socket included, belongs to the user who serves.
        if let Some(name) = &config.user {
            privileges::become_user(name)?;
        }
        let mode = if config.echo {
            Mode::Echo
        } else {
            Mode::Chat(Chat::open(&config, listener.local_addr()?.port())?)
        };
        let scoreboard = Scoreboard::create(config.max_clients)?;
        let free_slots = scoreboard.places();
        let (lifeline_writer, lifeline) = spawn::lifeline()?;
        let admission = Admission::new(config.limits);
        // Only once nothing can fail any more: a start that fails says
        // one line, and only that.
        if config.user.is_none() {
            privileges::warn_if_root();
        }
        Ok(Server {
            config,
            listener,
            signals: Signals::install()?,
            lifeline_writer,
            lifeline,
            mode,
            scoreboard,
            free_slots,
            hub_crashes: Vec::new(),
            admission,
            logging_in: Vec::new(),
            children: Children::default(),
            error_log: Throttle::new(Duration::from_secs(1)),
        })
    }

    /// The address actually bound (port 0 becomes a real port).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs the server until SIGINT or SIGTERM.
    ///
    /// `fork()` returns twice: in the parent this loop goes on; a new
    /// process gets a [`Job`] and leaves through [`Server::run_job`], never
    /// to come back.
    pub fn serve(mut self) -> io::Result<()> {
        let addr = self.local_addr()?;
        log::info!("listening on {addr}");
        if log::log_enabled!(log::Level::Debug) {
            let mut fds = self.inherited_fds();
            fds.push(("lifeline's read end", fd_number(&self.lifeline)));
            log::debug!("holds {}", logging::fds(fds));
        }
        title::set(&format!("mpchat: listening on {addr}"));
        if let Some(job) = self.start_hub()? {
            self.run_job(job);
        }
        loop {
            let listener_ready = self.wait()?;
            let pending = self.signals.take();
            // Termination first: when the whole service is stopped, the hub
            // may exit at the same moment, and that is no failure.
            if pending.terminate {
                log::info!("shutting down");
                self.shutdown();
                return Ok(());
            }
            if pending.hangup {
                self.forward_hangup();
            }
            if pending.child_exited {
                match self.reap() {
                    Ok(Some(job)) => self.run_job(job),
                    Ok(None) => {}
                    Err(e) => {
                        self.shutdown();
                        return Err(e);
                    }
                }
            }
            if listener_ready && let Some(job) = self.accept_client() {
                self.run_job(job);
            }
        }
    }

    /// Reaps the children that exited: their clients' places are free, and
    /// a hub that stopped is started again (`Some` in the new hub), unless
    /// it keeps stopping.
    fn reap(&mut self) -> io::Result<Option<Job>> {
        let reaped = self.children.reap();
        for &(peer, slot) in &reaped.clients {
            self.admission.closed(peer.ip());
            self.scoreboard.release(slot);
            self.free_slots.push(slot);
        }
        let Some(status) = reaped.hub else {
            return Ok(None);
        };
        if !self.hub_may_restart(status) {
            return Err(io::Error::other("the hub keeps stopping"));
        }
        self.start_hub().inspect_err(|e| {
            log::error!("cannot start a new hub: {e}; shutting down");
        })
    }

    /// Waits for a connection, a signal or a login; true if a connection
    /// waits.
    fn wait(&mut self) -> io::Result<bool> {
        let mut fds = vec![
            PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
        ];
        fds.extend(
            self.logging_in
                .iter()
                .map(|(_, watch)| PollFd::new(watch.as_fd(), PollFlags::POLLIN)),
        );
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        // A login pipe that ended: that client logged in, or its child is
        // gone. Either way it no longer counts as logging in.
        let mut logins = ready[2..].iter();
        self.logging_in.retain(|(pid, watch)| {
            let ended = logins.next().copied().unwrap_or(false);
            if ended {
                log::debug!(
                    "child {pid}'s login pipe ended (its client has a nickname, or it is gone): \
                     closing its read end {}",
                    fd_number(&watch)
                );
            }
            !ended
        });
        Ok(ready[0])
    }

    /// Forks the hub; `Some` in the hub.
    fn start_hub(&mut self) -> io::Result<Option<Job>> {
        let Mode::Chat(chat) = &self.mode else {
            return Ok(None);
        };
        log::info!("hub socket at {}", chat.socket_dir.socket_path().display());
        let job = chat.hub_job()?;
        match spawn::fork()? {
            Forked::Child => Ok(Some(Job::Hub(job))),
            Forked::Parent(pid) => {
                log::debug!(
                    "fork(): hub {pid}; closed the hub's copies: {}",
                    logging::fds(job.kept_fds())
                );
                // The hub's copies are the hub's.
                drop(job);
                log::info!("hub started as pid {pid}");
                self.children.hub = Some(pid);
                Ok(None)
            }
        }
    }

    /// SIGHUP is the hub's (it reopens the history), but service managers
    /// send it to the main process.
    fn forward_hangup(&self) {
        match self.children.hub {
            Some(hub) => {
                log::info!("SIGHUP: asking the hub to reopen the history");
                if let Err(e) = kill(hub, Signal::SIGHUP) {
                    log::warn!("cannot signal the hub: {e}");
                }
            }
            None => log::info!("SIGHUP ignored: no hub is running"),
        }
    }

    /// The hub stopped while the server runs: may a new one start? Not if
    /// it keeps stopping.
    fn hub_may_restart(&mut self, status: WaitStatus) -> bool {
        let now = Instant::now();
        self.hub_crashes
            .retain(|&t| now.duration_since(t) < HUB_CRASH_WINDOW);
        self.hub_crashes.push(now);
        if self.hub_crashes.len() >= HUB_MAX_CRASHES {
            log::error!(
                "the hub stopped {HUB_MAX_CRASHES} times within {} s (last: {status:?}); \
                 not restarting it again; shutting down",
                HUB_CRASH_WINDOW.as_secs()
            );
            return false;
        }
        log::error!("the hub stopped ({status:?}); starting a new one");
        scoreboard::bump(&self.scoreboard.totals.hub_restarts);
        true
    }

    /// Accepts one client and forks its child; `Some` in the child.
    fn accept_client(&mut self) -> Option<Job> {
        let (stream, peer) = match self.listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                self.accept_failed(e);
                return None;
            }
        };
        log::debug!(
            "accept() on listening socket {}: {peer} on fd {}",
            fd_number(&self.listener),
            fd_number(&stream)
        );
        let totals = self.scoreboard.totals;
        let Some(slot) = self.free_slots.pop() else {
            // One slot per --max-clients: all taken means full.
            scoreboard::bump(&totals.refused_full);
            self.log_throttled(format_args!("refused {peer}: server is full"));
            refuse(stream, render::SERVER_FULL, Code::ServerFull);
            return None;
        };
        let unregistered = self.logging_in.len();
        if let Err(refusal) = self
            .admission
            .check(peer.ip(), unregistered, Instant::now())
        {
            self.free_slots.push(slot);
            scoreboard::bump(match refusal {
                Refusal::Address => &totals.refused_address,
                Refusal::Busy => &totals.refused_busy,
            });
            self.log_throttled(format_args!("refused {peer}: {}", refusal.reason()));
            let (line, code) = refusal.line();
            refuse(stream, line, code);
            return None;
        }
        match self.fork_client(stream, peer, slot) {
            Ok(job) => job,
            Err((stream, e)) => {
                self.free_slots.push(slot);
                scoreboard::bump(&totals.refused_busy);
                self.admission.closed(peer.ip());
                self.log_throttled(format_args!("cannot fork for {peer}: {e}"));
                refuse(stream, render::SERVER_BUSY, Code::ServerBusy);
                std::thread::sleep(BACKOFF);
                None
            }
        }
    }

    /// Forks the child for an admitted client; `Some` in the child. On
    /// failure the stream comes back, to be told why.
    fn fork_client(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        slot: Place,
    ) -> Result<Option<Job>, (TcpStream, io::Error)> {
        let hub_socket = match &self.mode {
            Mode::Chat(chat) => Some(chat.socket_dir.socket_path()),
            Mode::Echo => None,
        };
        let login = if self.admission.counts_unregistered() && hub_socket.is_some() {
            match spawn::login_pipe() {
                Ok(pipe) => Some(pipe),
                Err(e) => return Err((stream, e)),
            }
        } else {
            None
        };
        match spawn::fork() {
            Ok(Forked::Child) => {
                // The login pipe's read end is the parent's.
                let logging_in = login.map(|(watch, logging_in)| {
                    drop(watch);
                    logging_in
                });
                Ok(Some(match hub_socket {
                    Some(hub_socket) => Job::Client(ClientJob {
                        client: stream,
                        peer,
                        logging_in,
                        slot,
                        hub_socket,
                    }),
                    None => Job::Echo(stream),
                }))
            }
            Ok(Forked::Parent(pid)) => {
                log::debug!("fork(): child {pid} serves {peer}");
                // The client's socket and the login pipe's write end are
                // the child's now.
                let client = ("client socket", fd_number(&stream));
                drop(stream);
                let mut login_end = None;
                if let Some((watch, logging_in)) = login {
                    login_end = Some(("login pipe's write end", fd_number(&logging_in)));
                    drop(logging_in);
                    log::debug!(
                        "watches child {pid}'s login pipe: read end {}",
                        fd_number(&watch)
                    );
                    self.logging_in.push((pid, watch));
                }
                log::debug!(
                    "closed child {pid}'s fds: {}",
                    logging::fds(std::iter::once(client).chain(login_end))
                );
                log::info!("{peer} connected (child {pid})");
                self.children.clients.insert(pid, (peer, slot));
                self.scoreboard.claim(slot, pid.as_raw() as u32);
                scoreboard::bump(&self.scoreboard.totals.connections);
                Ok(None)
            }
            Err(e) => Err((stream, e)),
        }
    }

    fn accept_failed(&mut self, e: io::Error) {
        match e.raw_os_error().map(Errno::from_raw) {
            Some(Errno::EAGAIN | Errno::EINTR | Errno::ECONNABORTED) => {}
            Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM) => {
                self.log_throttled(format_args!("accept: {e}; pausing"));
                std::thread::sleep(BACKOFF);
            }
            _ => self.log_throttled(format_args!("accept: {e}")),
        }
    }

    /// Logs an error at most once a second, so a flood cannot fill the log.
    fn log_throttled(&mut self, message: std::fmt::Arguments) {
        self.error_log.error(Instant::now(), message);
    }

    /// The fds of the parent's that every forked process inherits and
    /// closes at once, by role.
    fn inherited_fds(&self) -> Vec<(&'static str, RawFd)> {
        let (signals, signal_writers) = self.signals.fd_numbers();
        let mut fds = vec![
            ("listening socket", fd_number(&self.listener)),
            ("signal pipe", signals),
        ];
        fds.extend(signal_writers.iter().map(|&fd| ("its write end", fd)));
        fds.push(("lifeline's write end", fd_number(&self.lifeline_writer)));
        fds.extend(
            (self.logging_in.iter()).map(|(_, watch)| ("login pipe read end", fd_number(&watch))),
        );
        if let Mode::Chat(chat) = &self.mode {
            fds.push(("data-dir lock", fd_number(&chat.data_dir)));
            fds.push(("hub socket", fd_number(&chat.hub_listener)));
            fds.extend((chat.admin.iter()).map(|(admin, _)| ("admin socket", fd_number(&admin))));
        }
        fds
    }

    /// Turns this freshly forked process into what `job` says, and exits.
    fn run_job(self, job: Job) -> ! {
        let (role, comm) = job.role();
        spawn::become_role(role, comm);
        let inherited = log::log_enabled!(log::Level::Debug).then(|| self.inherited_fds());
        let Server {
            config,
            listener,
            signals,
            lifeline_writer,
            lifeline,
            mode,
            logging_in,
            scoreboard,
            ..
        } = self;
        let address = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(config.bind, config.port));
        // Close what belongs to the parent: the listening socket (only the
        // parent accepts), the lifeline's write end (or the parent's death
        // would go unnoticed), the other children's login pipes, and the
        // chat's sockets, whose copies a hub has in its job.
        drop(listener);
        drop(lifeline_writer);
        drop(logging_in);
        // With them the data directory's lock file: its POSIX lock is the
        // parent's alone (a fork does not pass it on, and closing this
        // copy of the fd does not release it), so the copy is just one
        // more fd to close.
        drop(mode);
        let stop = forked_stop(signals, lifeline, &job);
        if let Some(inherited) = inherited {
            log::debug!("closed the parent's fds: {}", logging::fds(inherited));
            let (terminate, writers) = stop.terminate.fd_numbers();
            let mut kept = job.kept_fds();
            kept.push(("lifeline's read end", fd_number(&stop.lifeline)));
            let mut opened = vec![("SIGTERM pipe", terminate)];
            opened.extend(writers.iter().map(|&fd| ("its write end", fd)));
            log::debug!(
                "keeps {}; opened {}",
                logging::fds(kept),
                logging::fds(opened)
            );
        }
        // A panic must end this process through `_exit` like any other
        // ending, not unwind out of the parent's loop and `main`, whose
        // exit handlers and buffers are the parent's: it is caught here,
        // where every job runs. (`panic = "abort"` would do it only in the
        // release profile, not in the builds the tests run.) The panic
        // hook has already logged where it happened.
        let run = std::panic::AssertUnwindSafe(move || match job {
            Job::Hub(job) => run_hub(job, stop, &config, scoreboard, address),
            Job::Client(job) => run_client(job, stop, &config, scoreboard),
            Job::Echo(client) => run_echo(client, stop),
        });
        let code = match std::panic::catch_unwind(run) {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                log::error!("{e}");
                1
            }
            Err(_) => 101,
        };
        log::debug!("exit status {code}: the kernel closes every fd left");
        exit_forked(code)
    }

    /// Stops accepting, lets every other process say goodbye, and waits
    /// for them all.
    fn shutdown(self) {
        let Server {
            listener,
            signals,
            lifeline_writer,
            mode,
            mut children,
            ..
        } = self;
        drop(listener);
        // Every other process sees the lifeline end, tells its client that
        // the server is shutting down, and exits.
        drop(lifeline_writer);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        loop {
            children.reap();
            if children.is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!("killing the processes that did not exit in time");
                children.kill_all();
                while !children.is_empty() {
                    std::thread::sleep(Duration::from_millis(10));
                    children.reap();
                }
                break;
            }
            let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, clock::poll_timeout(left));
            signals.take();
        }
        if let Mode::Chat(chat) = mode {
            chat.remove();
        }
        log::info!("stopped");
    }
}

impl Chat {
    /// Locks the data directory and makes the hub's and the admin socket.
    fn open(config: &Config, port: u16) -> io::Result<Chat> {
        // A bad bots file stops the start here, with one line, rather
        // than leave the bots out of a server that seems to run.
        if let Some(path) = &config.programs.bots {
            let count = hub::bots::check(path)?;
            log::info!("{}: {count} bots", path.display());
        }
        let data_dir = DataDir::open(&config.history.dir)?;
        let socket_dir = SocketDir::create().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create a private directory for the hub's socket: {e}"),
            )
        })?;
        let hub_listener = ipc::Listener::bind(&socket_dir.socket_path())?;
        let admin = match status::bind(port) {
            Ok((listener, path)) => {
                log::info!("admin socket at {}", path.display());
                Some((listener, path))
            }
            Err(e) => {
                log::warn!("no admin socket, so no `mpchat status`: {e}");
                None
            }
        };
        Ok(Chat {
            socket_dir,
            data_dir,
            hub_listener,
            admin,
        })
    }

    /// Copies of the sockets for a new hub, made before the fork so that
    /// a failure is the parent's to handle; the parent closes its copies
    /// once the hub is forked, and keeps the originals for the next hub.
    fn hub_job(&self) -> io::Result<HubJob> {
        let admin = match &self.admin {
            Some((listener, _)) => Some(listener.try_clone()?),
            None => None,
        };
        Ok(HubJob {
            listener: self.hub_listener.try_clone()?,
            admin,
            socket_dir: self.socket_dir.clone(),
        })
    }

    /// Removes the hub's and the admin socket at shutdown.
    fn remove(self) {
        self.socket_dir.remove();
        if let Some((_, path)) = self.admin {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A forked process's [`spawn::Stop`]: the parent's signal handlers go,
/// SIGTERM comes back as an event, and SIGHUP is ignored except in the
/// hub. Exits if that cannot be done.
fn forked_stop(signals: Signals, lifeline: Lifeline, job: &Job) -> spawn::Stop {
    let terminate = signals.forget_in_child();
    let ignored = match job {
        Job::Hub(_) => Ok(()),
        Job::Client(_) | Job::Echo(_) => signals::ignore_hangup(),
    };
    match terminate.and_then(|terminate| ignored.map(|()| terminate)) {
        Ok(terminate) => spawn::Stop {
            lifeline,
            terminate,
        },
        Err(e) => {
            log::error!("cannot set up signals: {e}");
            exit_forked(1);
        }
    }
}

fn run_hub(
    job: HubJob,
    stop: spawn::Stop,
    config: &Config,
    scoreboard: Scoreboard,
    address: SocketAddr,
) -> io::Result<()> {
    title::set("mpchat: hub, 0 users");
    let admin = job.admin.map(|listener| status::Admin {
        listener,
        scoreboard,
        address,
    });
    let rules = hub::Rules {
        bots: config.programs.bots.clone(),
        stall: config.backlog.stall,
        rooms: config.rooms,
        resume_max: config.programs.resume_max,
        cluster: config.cluster.clone(),
    };
    hub::run(
        job.listener,
        stop,
        job.socket_dir,
        rules,
        &config.history,
        admin,
    )
}

fn run_client(
    job: ClientJob,
    stop: spawn::Stop,
    config: &Config,
    scoreboard: Scoreboard,
) -> io::Result<()> {
    title::set(&format!("mpchat: login {}", job.peer));
    let setup = session::Setup {
        client: job.client,
        peer: job.peer,
        stop,
        login_timeout: config.login_timeout,
        logging_in: job.logging_in,
        flood: config.flood,
        backlog: config.backlog,
        idle_timeout: config.idle_timeout,
        slot: scoreboard.slot(job.slot),
        totals: scoreboard.totals,
        programs: config.programs.clone(),
    };
    session::run(setup, &job.hub_socket)
}

fn run_echo(client: TcpStream, stop: spawn::Stop) -> io::Result<()> {
    if let Ok(peer) = client.peer_addr() {
        title::set(&format!("mpchat: echo {peer}"));
    }
    echo::run(client, stop)
}

/// Ends a forked process with `_exit`, as a forked child should: `exit`
/// would run the exit handlers and flush the stdio buffers it inherited
/// from the parent, which are the parent's business (and would cost every
/// connection that time). The log writes each line at once, so nothing of
/// this process's own is lost.
fn exit_forked(code: i32) -> ! {
    // SAFETY: _exit(2) ends the process at once; it has no preconditions
    // and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// Turns a bind error into one line a person can act on.
fn describe_bind_error(e: io::Error, port: u16) -> io::Error {
    let message = match e.kind() {
        io::ErrorKind::AddrInUse => format!("port {port} is already in use"),
        io::ErrorKind::PermissionDenied => {
            format!("no permission to use port {port} (ports below 1024 need root)")
        }
        io::ErrorKind::AddrNotAvailable => "that address is not one of this machine's".to_string(),
        _ => format!("cannot listen on port {port}: {e}"),
    };
    io::Error::new(e.kind(), message)
}

/// Tells a client it cannot be served, without forking and without ever
/// blocking the parent: in one line, as JSON to a program whose `hello`
/// has already arrived (the parent does not wait for one).
fn refuse(stream: TcpStream, line: &str, code: Code) {
    let _ = stream.set_nonblocking(true);
    let mut first = [0u8; 1];
    let program = matches!(
        nix::sys::socket::recv(stream.as_raw_fd(), &mut first, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
        Ok(1) if sniff::classify(&first) == Some(Wire::Json)
    );
    let text = if program {
        format!("{}\n", json::error(code, line, None))
    } else {
        format!("{line}{CRLF}")
    };
    let _ = (&stream).write_all(text.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
}
