//! mpchat: a chat server in the classic Unix style.
//!
//! A parent process accepts TCP connections and forks one child per client.
//! The children share the room through one hub process, reached over a
//! Unix-domain `SOCK_SEQPACKET` socket.
//!
//! # Layout
//!
//! Each kind of process has its own module, so "what happens when a client
//! connects" can be read top-down: [`parent::Server::serve`] accepts and
//! forks, [`child::run`] runs the session, [`hub::run`] shares the room.
//!
//! * [`parent`]: the parent's accept / fork / reap loop and shutdown.
//! * [`admission`]: who gets in: per-address limits and the cap on
//!   connections still logging in, decided before any fork.
//! * [`privileges`]: giving up root after binding the port (`--user`).
//! * [`spawn`]: `fork()` itself, the lifeline pipe children watch, and what
//!   a freshly forked process resets.
//! * [`signals`]: signals turned into events on a self-pipe.
//! * [`hub`]: the hub process: its socket, its connections, fan-out, timers.
//! * [`history`]: the chat history on disk: segments, rotation, crash
//!   recovery, and the lock on the data directory.
//! * [`state`]: the hub's state file, which lets a restarted hub keep the
//!   scheduled messages.
//! * [`scoreboard`]: counters in shared memory that every process adds
//!   to, for `mpchat status`.
//! * [`status`]: the admin socket and `mpchat status`.
//! * [`room`]: the room's state and rules (nicknames, owner, commands,
//!   scheduled messages), free of I/O so it can be tested on its own.
//! * [`child`]: the client child: one TCP client's session.
//! * [`flood`]: the per-user line rate limit, applied in the child.
//! * [`echo`]: the class-lab echo child (`mpchat --echo`).
//! * [`protocol`]: the wire protocol: framing, sanitizing, command parsing
//!   and every line the server renders.
//! * [`ipc`]: the messages between children and hub, and the socket that
//!   carries them.
//! * [`clock`]: local wall-clock time for `[HH:MM]` stamps and schedules.
//! * [`title`]: process titles for `ps -ef`, written over the argv and
//!   environment strings.
//! * [`logging`]: log lines tagged with the process role and pid.

pub mod admission;
pub mod child;
pub mod clock;
pub mod echo;
pub mod flood;
pub mod history;
pub mod hub;
pub mod ipc;
pub mod logging;
pub mod parent;
pub mod privileges;
pub mod protocol;
pub mod room;
pub mod scoreboard;
pub mod signals;
pub mod spawn;
pub mod state;
pub mod status;
pub mod title;

use std::net::IpAddr;
use std::time::Duration;

/// Everything the command line decides, shared by every process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (IPv4 or IPv6).
    pub bind: IpAddr,
    /// TCP port; 0 lets the kernel pick a free one.
    pub port: u16,
    /// Connected clients at most; one more is refused without a fork.
    pub max_clients: usize,
    /// Time a new connection has to choose a nickname, counted from connect.
    pub login_timeout: Duration,
    /// A registered user who sends nothing for this long is disconnected.
    pub idle_timeout: Option<Duration>,
    /// Per-address and logging-in limits, applied before forking.
    pub limits: admission::Limits,
    /// Lines per user, applied in each child.
    pub flood: flood::FloodLimits,
    /// When a client that does not keep up is cut off: it takes nothing
    /// for a while, or too much waits for it. The hub applies the same
    /// stall rule to a child.
    pub backlog: child::BacklogLimits,
    /// Run the class-lab echo server instead of the chat.
    pub echo: bool,
    /// The user to serve as, when started as root.
    pub user: Option<String>,
    /// Where and how the chat history is kept.
    pub history: history::Options,
}
