//! `mpchat status`: the admin socket, the report it carries, and the
//! command that prints it.
//!
//! The parent binds the admin socket at start (and keeps it across hub
//! restarts, like the hub's own socket); the hub answers on it, since it
//! knows the users, and reads everything else from the [`Scoreboard`]. A
//! connection gets one JSON report and is closed; `mpchat status` adds
//! each process's memory from `/proc`.
//!
//! The socket is found from the port alone: it is `PORT.sock` in the
//! directory `mpchat-admin-UID` (mode 0700, like tmux's) of the first of
//! `$XDG_RUNTIME_DIR`, `/run/mpchat` (the service's runtime directory) and
//! the temporary directory that the server may use. `mpchat status` looks
//! in each; run as root it also looks in every user's directory, so it
//! finds a server that gave up root with `--user`. The hub answers only
//! its own user and root.

use std::fmt::Write as _;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::os::clock;
use crate::os::dirs::{IfExists, private_dir, runtime_bases};
use crate::os::scoreboard::{self, Scoreboard, Slot, now_ms};
use crate::room::RoomInfo;

/// What the hub needs to answer the admin socket.
#[derive(Debug)]
pub(crate) struct Admin {
    pub listener: UnixListener,
    pub scoreboard: Scoreboard,
    /// The address the server listens on.
    pub address: SocketAddr,
}

impl Admin {
    /// Where the admin socket is.
    pub(crate) fn path(&self) -> Option<PathBuf> {
        let address = self.listener.local_addr().ok()?;
        address.as_pathname().map(Path::to_path_buf)
    }
}

/// The report, as `mpchat status --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub address: String,
    pub server_pid: u32,
    /// Milliseconds since the Unix epoch.
    pub started_ms: u64,
    pub uptime_secs: u64,
    /// In join order.
    pub users: Vec<User>,
    /// By name.
    #[serde(default)]
    pub rooms: Vec<RoomReport>,
    pub totals: Totals,
    /// The parent, the hub, then each client's process.
    pub processes: Vec<Process>,
    /// With `--cluster`: this server's name and its link to the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterReport {
    pub server: String,
    /// Both connections to Redis are up: lines go through the cluster.
    pub linked: bool,
    /// The other servers heard from within a lease (30 s), by name.
    #[serde(default)]
    pub others: Vec<ServerReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerReport {
    pub name: String,
    pub users: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomReport {
    pub name: String,
    pub users: usize,
    pub owner: Option<String>,
    pub topic: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub nick: String,
    pub address: String,
    /// When the client connected, in milliseconds since the Unix epoch.
    pub connected_ms: u64,
    pub pid: u32,
    pub lines_in: u64,
    pub lines_out: u64,
    /// Lines waiting for the client to read them.
    pub backlog: u64,
    /// `line` (a person), `json` (a program) or `bot`.
    #[serde(default = "line")]
    pub protocol: String,
}

fn line() -> String {
    "line".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub connections: u64,
    pub messages: u64,
    pub refused: Refused,
    pub flood_disconnects: u64,
    pub slow_disconnects: u64,
    pub hub_restarts: u64,
    #[serde(default)]
    pub programs: Programs,
}

/// What programs did, over the server's life.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Programs {
    /// Logins that resumed after an event.
    pub resumes: u64,
    /// Sessions taken over by a new connection.
    pub takeovers: u64,
    /// Bots that failed to prove who they are.
    pub auth_failures: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// --max-clients reached.
    pub full: u64,
    /// Per-address limits.
    pub address: u64,
    /// Too many logging in, or no process could be forked.
    pub busy: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// `parent`, `hub`, a user's nickname, or `login` for a client that
    /// has none yet.
    pub role: String,
    pub pid: u32,
    /// Resident and proportional set sizes, from /proc/PID/smaps_rollup;
    /// `None` if the process could not be read (it just exited, or the
    /// asking user may not read it).
    pub rss_kib: Option<u64>,
    pub pss_kib: Option<u64>,
}

/// A user as the hub knows them.
pub(crate) struct Member<'a> {
    pub nick: &'a str,
    pub address: &'a str,
    pub pid: u32,
    /// `line`, `json` or `bot`.
    pub protocol: &'static str,
}

/// Puts the report together (in the hub).
pub(crate) fn report<'a>(
    admin: &Admin,
    members: impl Iterator<Item = Member<'a>>,
    rooms: Vec<RoomInfo>,
    cluster: Option<ClusterReport>,
) -> Report {
    let board = &admin.scoreboard;
    let parent = nix::unistd::getppid().as_raw() as u32;
    let hub = std::process::id();
    let mut processes = vec![process("parent", parent), process("hub", hub)];
    let mut clients = board.in_use();
    let mut users = Vec::new();
    for member in members {
        let slot = clients.remove(&member.pid);
        users.push(user(&member, slot));
        processes.push(process(member.nick, member.pid));
    }
    // What is left: clients without a nickname yet.
    let mut logging_in: Vec<u32> = clients.into_keys().collect();
    logging_in.sort_unstable();
    processes.extend(logging_in.into_iter().map(|pid| process("login", pid)));
    Report {
        address: admin.address.to_string(),
        server_pid: parent,
        started_ms: board.started_ms(),
        uptime_secs: now_ms().saturating_sub(board.started_ms()) / 1000,
        users,
        rooms: rooms
            .into_iter()
            .map(|r| RoomReport {
                name: r.name.to_string(),
                users: r.users,
                owner: r.owner.map(str::to_string),
                topic: r.topic.map(str::to_string),
            })
            .collect(),
        totals: totals(board.totals),
        processes,
        cluster,
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// A user of the report, with its child's figures from its scoreboard
/// slot (zero if it has none).
fn user(member: &Member, slot: Option<&Slot>) -> User {
    let field = |f: fn(&Slot) -> &AtomicU64| slot.map_or(0, |s| load(f(s)));
    User {
        nick: member.nick.to_string(),
        address: member.address.to_string(),
        connected_ms: field(|s| &s.since_ms),
        pid: member.pid,
        lines_in: field(|s| &s.lines_in),
        lines_out: field(|s| &s.lines_out),
        backlog: field(|s| &s.backlog),
        protocol: member.protocol.to_string(),
    }
}

fn totals(totals: &scoreboard::Totals) -> Totals {
    Totals {
        connections: load(&totals.connections),
        messages: load(&totals.messages),
        refused: Refused {
            full: load(&totals.refused_full),
            address: load(&totals.refused_address),
            busy: load(&totals.refused_busy),
        },
        flood_disconnects: load(&totals.flood_disconnects),
        slow_disconnects: load(&totals.slow_disconnects),
        hub_restarts: load(&totals.hub_restarts),
        programs: Programs {
            resumes: load(&totals.resumes),
            takeovers: load(&totals.takeovers),
            auth_failures: load(&totals.auth_failures),
        },
    }
}

/// A process of the report; its memory is filled in by [`query`].
fn process(role: &str, pid: u32) -> Process {
    Process {
        role: role.to_string(),
        pid,
        rss_kib: None,
        pss_kib: None,
    }
}

/// A process's memory, in KiB, from `/proc/PID/smaps_rollup`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Every page mapped and present.
    pub rss_kib: u64,
    /// Each shared page divided among the processes sharing it.
    pub pss_kib: u64,
    /// Pages no other process maps: what the process alone costs.
    pub uss_kib: u64,
}

impl Memory {
    /// The memory of `pid`; `None` if it cannot be read (gone, or not
    /// ours to read).
    pub fn of(pid: u32) -> Option<Memory> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        Some(Memory::parse(&text))
    }

    pub fn parse(rollup: &str) -> Memory {
        let mut m = Memory::default();
        for line in rollup.lines() {
            let mut words = line.split_whitespace();
            let (Some(key), Some(Ok(kib))) = (words.next(), words.next().map(str::parse::<u64>))
            else {
                continue;
            };
            match key {
                "Rss:" => m.rss_kib += kib,
                "Pss:" => m.pss_kib += kib,
                "Private_Clean:" | "Private_Dirty:" => m.uss_kib += kib,
                _ => {}
            }
        }
        m
    }
}

fn socket_name(port: u16) -> String {
    format!("{port}.sock")
}

/// Binds the admin socket for `port` (in the parent); returns it and its
/// path, which the parent removes at shutdown.
pub(crate) fn bind(port: u16) -> io::Result<(UnixListener, PathBuf)> {
    let uid = nix::unistd::getuid().as_raw();
    let mut last_error = io::Error::other("no runtime or temporary directory");
    for base in runtime_bases() {
        let dir = base.join(format!("mpchat-admin-{uid}"));
        match private_dir(&dir, IfExists::MustBePrivate) {
            Ok(()) => {}
            Err(e) => {
                last_error = e;
                continue;
            }
        }
        let path = dir.join(socket_name(port));
        // This server holds the port, so a socket of that name is left
        // over from one that was killed.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        return Ok((listener, path));
    }
    Err(last_error)
}

/// The admin sockets that may belong to a server on `port`: this user's,
/// and for root everyone's.
fn candidates(port: u16) -> Vec<PathBuf> {
    let uid = nix::unistd::getuid().as_raw();
    let mut found = Vec::new();
    for base in runtime_bases() {
        found.push(
            base.join(format!("mpchat-admin-{uid}"))
                .join(socket_name(port)),
        );
        if uid == 0
            && let Ok(entries) = std::fs::read_dir(&base)
        {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.to_string_lossy().starts_with("mpchat-admin-") {
                    found.push(entry.path().join(socket_name(port)));
                }
            }
        }
    }
    found.retain(|p| p.exists());
    found.dedup();
    found
}

/// Asks the server on `port` for its report (`mpchat status`), and adds
/// the memory of each of its processes.
///
/// The memory is read here, not in the hub: reading `/proc` for a
/// thousand processes takes about a tenth of a second, which the room
/// should not wait for. It also lets root see the memory of a server that
/// gave up root with `--user`, whose processes no longer let even their
/// own user read their `/proc` files.
pub fn query(port: u16) -> io::Result<Report> {
    let mut last_error = None;
    for path in candidates(port) {
        match fetch(&path) {
            Ok(mut report) => {
                for process in &mut report.processes {
                    let memory = Memory::of(process.pid);
                    process.rss_kib = memory.map(|m| m.rss_kib);
                    process.pss_kib = memory.map(|m| m.pss_kib);
                }
                return Ok(report);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no mpchat of this user is running on port {port}"),
        )
    }))
}

fn fetch(path: &Path) -> io::Result<Report> {
    let mut stream = UnixStream::connect(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected answer from {}: {e}", path.display()),
        )
    })
}

/// The report as `mpchat status` prints it.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let started = clock::date_hhmm(clock::from_unix_ms(report.started_ms));
    let _ = writeln!(
        out,
        "mpchat on {}, pid {}, started {started}, up {}",
        report.address,
        report.server_pid,
        duration(report.uptime_secs)
    );
    render_users(&mut out, &report.users);
    render_rooms(&mut out, &report.rooms);
    render_totals(&mut out, &report.totals);
    render_programs(&mut out, &report.users, &report.totals.programs);
    if let Some(c) = &report.cluster {
        let link = if c.linked {
            "up"
        } else {
            "down: serving this server's users alone"
        };
        let _ = writeln!(
            out,
            "cluster: this server is {}; link to the others {link}",
            c.server
        );
        if !c.others.is_empty() {
            let others: Vec<String> = (c.others.iter())
                .map(|s| {
                    format!(
                        "{} ({} user{})",
                        s.name,
                        s.users,
                        if s.users == 1 { "" } else { "s" }
                    )
                })
                .collect();
            let _ = writeln!(out, "other servers: {}", others.join(", "));
        }
    }
    render_memory(&mut out, &report.processes);
    out
}

fn render_users(out: &mut String, users: &[User]) {
    let _ = writeln!(out, "\nusers: {}", users.len());
    // One format per table, for its header and its rows alike.
    let mut row = |cells: [&str; 8]| {
        let [
            nick,
            proto,
            address,
            since,
            pid,
            lines_in,
            lines_out,
            backlog,
        ] = cells;
        let _ = writeln!(
            out,
            "  {nick:<16} {proto:<5} {address:<40} {since:<16} {pid:>7} {lines_in:>9} {lines_out:>9} {backlog:>8}"
        );
    };
    if !users.is_empty() {
        row([
            "NICK",
            "PROTO",
            "ADDRESS",
            "CONNECTED",
            "PID",
            "LINES IN",
            "LINES OUT",
            "BACKLOG",
        ]);
    }
    for u in users {
        row([
            &u.nick,
            &u.protocol,
            &u.address,
            &clock::date_hhmm(clock::from_unix_ms(u.connected_ms)),
            &u.pid.to_string(),
            &u.lines_in.to_string(),
            &u.lines_out.to_string(),
            &u.backlog.to_string(),
        ]);
    }
}

fn render_rooms(out: &mut String, rooms: &[RoomReport]) {
    let _ = writeln!(out, "\nrooms: {}", rooms.len());
    let mut row = |cells: [&str; 4]| {
        let [name, users, owner, topic] = cells;
        let _ = writeln!(out, "  {name:<34} {users:>6} {owner:<16} {topic}");
    };
    if !rooms.is_empty() {
        row(["ROOM", "USERS", "OWNER", "TOPIC"]);
    }
    for r in rooms {
        let owner = r.owner.as_deref().unwrap_or("-");
        row([
            &r.name,
            &r.users.to_string(),
            owner,
            r.topic.as_deref().unwrap_or(""),
        ]);
    }
}

fn render_totals(out: &mut String, t: &Totals) {
    let _ = writeln!(
        out,
        "\ntotals: connections {}, messages {}, hub restarts {}\n\
         refused: server full {}, per-address limits {}, busy {}\n\
         disconnected: for flooding {}, for not reading {}",
        t.connections,
        t.messages,
        t.hub_restarts,
        t.refused.full,
        t.refused.address,
        t.refused.busy,
        t.flood_disconnects,
        t.slow_disconnects
    );
}

fn render_programs(out: &mut String, users: &[User], p: &Programs) {
    let count = |protocol: &str| users.iter().filter(|u| u.protocol == protocol).count();
    let _ = writeln!(
        out,
        "programs: {} on JSON, {} bots; resumes {}, takeovers {}, failed authentications {}",
        count("json"),
        count("bot"),
        p.resumes,
        p.takeovers,
        p.auth_failures
    );
}

fn render_memory(out: &mut String, processes: &[Process]) {
    let _ = writeln!(out, "\nmemory:");
    let mut row = |cells: [&str; 4]| {
        let [role, pid, rss, pss] = cells;
        let _ = writeln!(out, "  {role:<16} {pid:>7} {rss:>10} {pss:>10}");
    };
    let kib = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    row(["PROCESS", "PID", "RSS KiB", "PSS KiB"]);
    for p in processes {
        row([
            &p.role,
            &p.pid.to_string(),
            &kib(p.rss_kib),
            &kib(p.pss_kib),
        ]);
    }
    let known: Vec<u64> = processes.iter().filter_map(|p| p.pss_kib).collect();
    let pss = (!known.is_empty()).then(|| known.iter().sum());
    row(["total", "", "", &kib(pss)]);
}

/// `3d 04:05:06`, or `04:05:06` under a day.
fn duration(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let hms = format!(
        "{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    if days > 0 {
        format!("{days}d {hms}")
    } else {
        hms
    }
}

/// Writes `report` as one JSON document (for the hub's reply).
pub fn encode(report: &Report) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(report).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_uptime() {
        assert_eq!(duration(0), "00:00:00");
        assert_eq!(duration(3_725), "01:02:05");
        assert_eq!(duration(2 * 86_400 + 61), "2d 00:01:01");
    }

    #[test]
    fn memory_of_this_process_is_read() {
        let m = Memory::of(std::process::id()).unwrap();
        assert!(m.rss_kib > 0 && m.pss_kib > 0 && m.uss_kib > 0);
        assert_eq!(Memory::of(u32::MAX), None);
    }

    #[test]
    fn rollup_sums_private() {
        let text = "00400000-7fff [rollup]\nRss: 100 kB\nPss: 60 kB\nPss_Anon: 10 kB\nPrivate_Clean: 5 kB\nPrivate_Dirty: 20 kB\n";
        let m = Memory::parse(text);
        assert_eq!((m.rss_kib, m.pss_kib, m.uss_kib), (100, 60, 25));
    }
}
