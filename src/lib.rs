//! mpchat: a chat server in the classic Unix style.
//!
//! A parent process accepts TCP connections and forks one child per client.
//! The children share the room through one hub process, reached over a
//! Unix-domain `SOCK_SEQPACKET` socket.
//!
//! # Layout
//!
//! One folder per process role, and two that every role shares, so "what
//! happens when a client connects" reads top-down: [`parent::Server::serve`]
//! accepts and forks, [`session::run`] runs the client's session in the
//! child, [`hub::run`] shares the room. In the order it happens:
//!
//! 1. parent: `Server::serve` polls; `accept_client` asks `admission`
//!    whether the address may come in, `fork_client` forks (the fds each
//!    side closes are listed there), and the child leaves the loop through
//!    `run_job` and `run_client`;
//! 2. child: `session::run` sets up the socket, waits up to 100 ms for
//!    the client's first bytes (`sniff`: a person, a program speaking
//!    JSON, or HTTP), connects to the hub (`hub_link`) and says welcome;
//!    `Session::converse` loops, and the nickname goes to the hub from
//!    `login_line` (a program's `hello` from `programs`);
//! 3. hub: `Hub::admit` takes the child's connection, `read_from` its
//!    requests, and `Chat::handle` decides (`join`); what it returns is
//!    queued for each receiver and written by `flush_dirty`.
//!
//! ```text
//! main.rs     command line -> Config -> parent::Server
//! parent/     the parent: accept / fork / reap, hub restarts, shutdown;
//!             admission (who gets in, before any fork), privileges (--user)
//! hub/        the hub process: its socket and connections, fan-out and
//!             bounded queues, timers; history (the files, the data
//!             directory's lock), schedule_file, status (the admin socket
//!             and `mpchat status`), bots (the bots file, their proofs),
//!             cluster (the rooms shared with other servers through Redis)
//! room/       the chat's rules without I/O: nicknames, rooms, owners,
//!             commands, schedules, replay; entry (one public line of a
//!             room), saved (the schedule and topics as kept on disk),
//!             cluster (the users of other servers, and what is relayed
//!             to them)
//! session/    the client's child: the session loop; sniff (which protocol),
//!             programs (a JSON client's session), web (a browser's
//!             request), backlog (what waits
//!             for the client, and when it is behind or cut off), hub_link
//!             (the outbox to the hub, replies kept in order), flood (the
//!             line rate limit), echo (the class-lab echo child)
//! protocol/   the wire protocols: framing, sanitize, command, render for
//!             people; sniff, json for programs, http for browsers; reply (the hub's answers
//!             as values); ipc for the child-hub messages and their socket
//! os/         what every process takes from the system: spawn (fork, the
//!             lifeline, a new process's first steps), signals (self-pipes),
//!             title (ps), procfs (/proc parsing), scoreboard (shared
//!             memory), clock (stamps, poll timeouts, the stall clock),
//!             logging (and its throttle), dirs (private directories),
//!             waitset (a client child's epoll set)
//! ```
//!
//! Which folder may use which is written at the top of each folder's
//! module and checked by `scripts/check_layout.py` in CI: `os` uses
//! nothing else, `protocol` only `os`, `room` only `protocol` and `os`,
//! `session` and `hub` never each other nor `parent`, and `parent` uses the
//! other two only for what it hands them across a fork. The folders are
//! private; what the binaries and the tests need is re-exported below, and
//! `protocol` is public for the fuzz targets.

// Private by default: an item is `pub(crate)` unless a binary or the fuzz
// targets reach it through the re-exports below (the lint keeps it so).
#![warn(unreachable_pub)]

mod hub;
mod os;
mod parent;
pub mod protocol;
mod room;
mod session;

// What the binaries and the tests use; everything else stays inside the
// crate.
pub use hub::cluster::Options as ClusterOptions;
pub use hub::history::{Fsync, Options as HistoryOptions};
pub use os::{logging, procfs, title};
pub use parent::Server;
pub use parent::admission::Limits;
pub use room::RoomLimits;
pub use session::flood::FloodLimits;
pub use session::{BacklogLimits, ProgramOptions};

/// `mpchat status`: asks a running server for its report, and the memory
/// figures, which the load generator reads the same way.
pub mod status {
    pub use crate::hub::status::{Memory, encode, query, render};
}

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
    pub limits: parent::admission::Limits,
    /// Lines per user, applied in each child.
    pub flood: session::flood::FloodLimits,
    /// When a client that does not keep up is cut off: it takes nothing
    /// for a while, or too much waits for it. The hub applies the same
    /// stall rule to a child.
    pub backlog: session::BacklogLimits,
    /// How many rooms there may be, and how many one user may be in.
    pub rooms: room::RoomLimits,
    /// Programs on the JSON protocol: heartbeat and resume.
    pub programs: session::ProgramOptions,
    /// Run the class-lab echo server instead of the chat.
    pub echo: bool,
    /// The user to serve as, when started as root.
    pub user: Option<String>,
    /// Where and how the chat history is kept.
    pub history: hub::history::Options,
    /// The Redis that links this server to others, and its name there.
    pub cluster: Option<ClusterOptions>,
}
