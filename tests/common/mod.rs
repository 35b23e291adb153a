//! Test harness: starts the real `mpchat` binary and talks to it over real
//! sockets, as a user's `nc` would.
//!
//! Every wait has a deadline ([`DEADLINE`]) and fails the test with a clear
//! message when it passes. A [`Server`] runs in a process group of its own
//! and kills the whole group when dropped, so no process of its tree
//! outlives the test, even a failed one.

#![allow(dead_code)]

pub mod bot;
pub mod json;
pub mod redis;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long any single wait may take before the test fails. Generous, so a
/// busy 2-core machine does not make the suite flaky; a passing test never
/// waits this long.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The path of the `mpchat` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_mpchat")
}

/// Options that turn the admission and flood limits and the history
/// replay off; see [`Server::start_with`].
const QUIET_DEFAULTS: &[&str] = &[
    "--history-lines",
    "0",
    "--max-per-ip",
    "0",
    "--max-conn-rate",
    "0",
    "--max-unregistered",
    "0",
    "--flood-rate",
    "0",
];

/// What a finished command did.
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to its end with no input, failing the test if it takes
/// longer than `deadline`; `None` if the program is not installed or may
/// not be run (by the user it is to run as).
pub fn run_command(mut command: Command, deadline: Duration) -> Option<Ran> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied) => {
            return None;
        }
        Err(e) => panic!("cannot start {command:?}: {e}"),
    };
    // Read both pipes while waiting, so a chatty command never blocks on
    // a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {deadline:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Some(Ran {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    })
}

/// A directory of its own for a server to run in, removed on drop.
///
/// The server's default data directory (`./mpchat-data`) lands inside it.
/// Mode 0777, so a server that gives up root (`--user nobody`) can still
/// create its data directory there.
pub struct Workdir {
    path: PathBuf,
}

impl Workdir {
    pub fn new() -> Arc<Workdir> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("mpchat-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("create a working directory");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
            .expect("chmod the working directory");
        Arc::new(Workdir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running server and its process group.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    /// Dropped after the process group is killed (fields drop in order).
    workdir: Arc<Workdir>,
}

impl Server {
    /// Starts the chat server on a free loopback port.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts the server with extra options (before the port argument).
    ///
    /// The per-address, logging-in and flood limits are off unless
    /// `options` turn them on (the last occurrence of an option wins):
    /// these tests connect many clients from 127.0.0.1 at once and send
    /// bursts of lines, and the limits have tests of their own
    /// (tests/admission.rs, tests/flood.rs). So is the history shown on
    /// joining, which would come before the welcome every test expects
    /// (tests/history.rs turns it on).
    pub fn start_with(options: &[&str]) -> Server {
        Server::start_in(Workdir::new(), options)
    }

    /// Starts the server like [`Server::start_with`] in `workdir`, which
    /// may be an earlier server's: a restart of the whole server.
    pub fn start_in(workdir: Arc<Workdir>, options: &[&str]) -> Server {
        let mut args: Vec<&str> = vec!["--bind", "127.0.0.1"];
        args.extend_from_slice(QUIET_DEFAULTS);
        args.extend_from_slice(options);
        args.push("0");
        Server::launch_in(workdir, binary(), &args, "info")
    }

    /// Starts the server like [`Server::start_with`], logging at `level`
    /// (`RUST_LOG`).
    pub fn start_logging(level: &str, options: &[&str]) -> Server {
        let mut args: Vec<&str> = vec!["--bind", "127.0.0.1"];
        args.extend_from_slice(QUIET_DEFAULTS);
        args.extend_from_slice(options);
        args.push("0");
        Server::launch_in(Workdir::new(), binary(), &args, level)
    }

    /// Starts the server like [`Server::start_with`], allowed only
    /// `limit` open fds (through the shell's `ulimit -n`).
    pub fn start_with_fd_limit(limit: u32, options: &[&str]) -> Server {
        let limit = limit.to_string();
        let mut args = vec!["-c", "ulimit -n \"$0\" && exec \"$@\"", &limit, binary()];
        args.extend_from_slice(&["--bind", "127.0.0.1"]);
        args.extend_from_slice(QUIET_DEFAULTS);
        args.extend_from_slice(options);
        args.push("0");
        Server::launch_in(Workdir::new(), "/bin/sh", &args, "info")
    }

    /// Starts `mpchat` with exactly these arguments; they must make it
    /// listen (the port is read from its `listening on` line).
    pub fn spawn(args: &[&str]) -> Server {
        Server::launch_in(Workdir::new(), binary(), args, "info")
    }

    fn launch_in(workdir: Arc<Workdir>, program: &str, args: &[&str], log_level: &str) -> Server {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(workdir.path())
            .env("RUST_LOG", log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start mpchat");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        // Keep draining stderr for the server's whole life, so logging can
        // never block it.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("mpchat: listening on ") {
                    let _ = tx.send(addr.to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let mut server = Server {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            log,
            workdir,
        };
        match rx.recv_timeout(DEADLINE) {
            Ok(addr) => server.addr = addr.parse().expect("listening address"),
            Err(_) => panic!(
                "mpchat did not print its listening line; log:\n{}",
                server.log_text()
            ),
        }
        server
    }

    /// The directory the server runs in; pass it to [`Server::start_in`]
    /// to restart the server on the same data.
    pub fn workdir(&self) -> Arc<Workdir> {
        Arc::clone(&self.workdir)
    }

    /// The server's data directory, unless `--data-dir` said otherwise.
    pub fn data_dir(&self) -> PathBuf {
        self.workdir.path().join("mpchat-data")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Everything the server has logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        wait_until(&format!("a log line containing {needle:?}"), || {
            self.log.lock().unwrap().iter().any(|l| l.contains(needle))
        });
    }

    /// The path the server logged as `<what> at <path>` (`hub socket`,
    /// `admin socket`), waiting for the line.
    pub fn logged_path(&self, what: &str) -> PathBuf {
        let prefix = format!("{what} at ");
        self.wait_for_log(&prefix);
        let log = self.log_text();
        let line = log.lines().find(|l| l.contains(&prefix)).unwrap();
        PathBuf::from(&line[line.find(&prefix).unwrap() + prefix.len()..])
    }

    /// Opens a raw connection.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Connects and logs in as `nick`, reading everything up to and
    /// including this user's own join line.
    ///
    /// The nickname goes out at once, before the prompt, as from
    /// `printf 'alice\n' | nc`: a client that waits for the prompt gets it
    /// only after the server's wait for a first line (tests/wire.rs
    /// covers those), which would add up over the suite's thousands of
    /// logins.
    pub fn login(&self, nick: &str) -> Client {
        let mut client = self.connect();
        client.send_line(nick);
        client.expect("Welcome to mpchat! Enter your nickname:");
        client.expect(&format!("Hello, {nick}! Type /help for commands."));
        client.expect_stamped(&format!("* {nick} has joined the chat."));
        client
    }

    /// Logs in each of `nicks` with [`Server::login`], in order, and on
    /// every earlier client asserts ([`Client::expect_stamped`]) the join
    /// line of each later user, in join order. Afterwards every client has
    /// read everything up to and including the last user's join, so its
    /// next line is whatever comes next:
    ///
    /// ```ignore
    /// let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    /// ```
    pub fn login_all<const N: usize>(&self, nicks: [&str; N]) -> [Client; N] {
        let mut clients: Vec<Client> = Vec::with_capacity(N);
        for nick in nicks {
            let client = self.login(nick);
            for earlier in clients.iter_mut() {
                earlier.expect_stamped(&format!("* {nick} has joined the chat."));
            }
            clients.push(client);
        }
        let Ok(clients) = clients.try_into() else {
            unreachable!("one client per nickname");
        };
        clients
    }

    /// The live processes of the server's tree (its process group), the
    /// parent first, as (pid, comm, state).
    pub fn processes(&self) -> Vec<Proc> {
        processes_in_group(self.pid())
    }

    /// The pids of the server's processes named `comm`.
    pub fn pids_named(&self, comm: &str) -> Vec<i32> {
        self.processes()
            .into_iter()
            .filter(|p| p.comm == comm)
            .map(|p| p.pid)
            .collect()
    }

    /// Kills the running hub (once there is exactly one, with its name:
    /// a new hub takes it a moment after the fork) and waits for the
    /// parent to start another; returns how long that took from the kill.
    pub fn kill_hub_and_wait_for_new(&self) -> Duration {
        let mut old = Vec::new();
        wait_until("the hub", || {
            old = self.pids_named("mpchat-hub");
            old.len() == 1
        });
        let started = Instant::now();
        send_signal(old[0], libc::SIGKILL);
        wait_until("a new hub", || {
            let now = self.pids_named("mpchat-hub");
            now.len() == 1 && now[0] != old[0]
        });
        started.elapsed()
    }

    /// Sends `signal` to the parent process.
    pub fn signal(&self, signal: i32) {
        send_signal(self.pid(), signal);
    }

    /// Waits for the parent to exit and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "mpchat did not exit; log:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // An orderly stop first, so the parent reaps its own children;
        // then, whatever happened, the whole group: parent, hub, children.
        if let Ok(None) = self.child.try_wait() {
            send_signal(self.pid(), libc::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3)
                && matches!(self.child.try_wait(), Ok(None))
            {
                thread::sleep(Duration::from_millis(5));
            }
        }
        send_signal(-self.pid(), libc::SIGKILL);
        let _ = self.child.wait();
        // A failed test shows what the server said, the end of it.
        if thread::panicking() {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            let tail = &log[log.len().saturating_sub(40)..];
            eprintln!("--- the server's last log lines ---\n{}", tail.join("\n"));
        }
    }
}

/// One process of a server's tree.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
    pub state: char,
}

/// Live (non-zombie) and zombie processes whose process group is `pgid`.
pub fn processes_in_group(pgid: i32) -> Vec<Proc> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = mpchat::procfs::read(pid) else {
            continue;
        };
        if stat.pgrp == pgid {
            found.push(Proc {
                pid,
                ppid: stat.ppid,
                comm: stat.comm,
                state: stat.state,
            });
        }
    }
    found.sort_by_key(|p| (p.pid != pgid, p.pid));
    found
}

pub fn send_signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// What one bounded read of a line found.
pub enum LineRead {
    /// A line, without its LF.
    Line(String),
    Closed,
    /// Nothing complete within the wait.
    Quiet,
}

/// Reads the next LF-ended line from `stream`, waiting at most `wait`;
/// `buf` keeps what came after it. A connection that ends in the middle
/// of a line fails the test; a reset counts as the end.
pub fn read_line_within(stream: &TcpStream, buf: &mut Vec<u8>, wait: Duration) -> LineRead {
    let start = Instant::now();
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = buf.drain(..=end).collect();
            line.pop();
            return LineRead::Line(String::from_utf8(line).expect("server sends UTF-8"));
        }
        let left = wait.saturating_sub(start.elapsed());
        if left.is_zero() {
            return LineRead::Quiet;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 16 * 1024];
        match (&*stream).read(&mut chunk) {
            Ok(0) => {
                assert!(
                    buf.is_empty(),
                    "connection closed in the middle of a line: {:?}",
                    String::from_utf8_lossy(buf)
                );
                return LineRead::Closed;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            // The server closed with our bytes unread: an end like EOF.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return LineRead::Closed,
            Err(e) => panic!("read from mpchat: {e}"),
        }
    }
}

/// Polls `condition` until it holds, failing the test after [`DEADLINE`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A client connection, reading lines that end in `\r\n`.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to mpchat");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects from `source`, one of this machine's many loopback
    /// addresses (all of 127.0.0.0/8), as a client on another host would.
    pub fn connect_from(addr: SocketAddr, source: std::net::Ipv4Addr) -> Client {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket,
        };
        use std::os::fd::AsRawFd;
        let SocketAddr::V4(server) = addr else {
            panic!("tests listen on IPv4 loopback");
        };
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        let from = SockaddrIn::from(std::net::SocketAddrV4::new(source, 0));
        bind(fd.as_raw_fd(), &from).expect("bind the source address");
        connect(fd.as_raw_fd(), &SockaddrIn::from(server)).expect("connect to mpchat");
        Client {
            stream: TcpStream::from(fd),
            buf: Vec::new(),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends raw bytes, exactly as given.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to mpchat");
    }

    /// Sends a line ending in LF, as `nc` does.
    pub fn send_line(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    /// Closes the sending side, as `nc` does at the end of its input.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// The next line, without its `\r\n`; `None` at EOF. Fails the test if
    /// no line comes within [`DEADLINE`] or a line does not end in `\r\n`.
    pub fn try_read_line(&mut self) -> Option<String> {
        let mut line = match read_line_within(&self.stream, &mut self.buf, DEADLINE) {
            LineRead::Line(line) => line,
            LineRead::Closed => return None,
            LineRead::Quiet => panic!(
                "no complete line within {DEADLINE:?}; have {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        };
        assert_eq!(
            line.pop(),
            Some('\r'),
            "line does not end in CRLF: {line:?}"
        );
        Some(line)
    }

    /// The next line; fails the test at EOF.
    pub fn read_line(&mut self) -> String {
        self.try_read_line()
            .expect("connection closed, expected a line")
    }

    /// Asserts the next line is exactly `expected`.
    pub fn expect(&mut self, expected: &str) {
        assert_eq!(self.read_line(), expected);
    }

    /// Asserts the next line is `[HH:MM] ` followed by exactly `rest`.
    pub fn expect_stamped(&mut self, rest: &str) {
        let line = self.read_line();
        assert_eq!(unstamp(&line), Some(rest), "line {line:?}");
    }

    /// Asserts the connection closes (EOF) with no further lines.
    pub fn expect_closed(&mut self) {
        if let Some(line) = self.try_read_line() {
            panic!("expected the connection to close, got line {line:?}");
        }
    }

    /// Reads lines until one satisfies `pred`; returns all read, that one
    /// last. Fails the test at EOF or after [`DEADLINE`].
    pub fn read_until(&mut self, mut pred: impl FnMut(&str) -> bool) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line();
            let done = pred(&line);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
}

/// Strips a leading `[HH:MM] ` stamp, checking its form.
pub fn unstamp(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    let ok = b.len() >= 8
        && b[0] == b'['
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && b[3] == b':'
        && b[4].is_ascii_digit()
        && b[5].is_ascii_digit()
        && b[6] == b']'
        && b[7] == b' ';
    ok.then(|| &line[8..])
}

// ---------------------------------------------------------------------------
// History: the replay a client is shown, and the files in a data directory.
// ---------------------------------------------------------------------------

/// The replay block: its header, `replayed` (unstamped), its end marker;
/// nothing at all when `replayed` is empty.
pub fn expect_replay(client: &mut Client, replayed: &[&str]) {
    if replayed.is_empty() {
        return;
    }
    let header = match replayed.len() {
        1 => "--- last message ---".to_string(),
        n => format!("--- last {n} messages ---"),
    };
    client.expect(&header);
    for line in replayed {
        client.expect_stamped(line);
    }
    client.expect("--- end of history ---");
}

/// Logs in `nick`, expecting a replay of exactly `replayed` (unstamped)
/// lines before the welcome.
pub fn login_with_replay(server: &Server, nick: &str, replayed: &[&str]) -> Client {
    let mut client = server.connect();
    client.send_line(nick);
    client.expect("Welcome to mpchat! Enter your nickname:");
    expect_replay(&mut client, replayed);
    client.expect(&format!("Hello, {nick}! Type /help for commands."));
    client.expect_stamped(&format!("* {nick} has joined the chat."));
    client
}

/// The history segment files of a data directory, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the data directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("history-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    files
}

/// Every entry in the data directory, oldest first; fails the test on a
/// line that is not a whole JSON object.
pub fn entries(dir: &Path) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for file in segments(dir) {
        let text = std::fs::read_to_string(&file).expect("read a segment");
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("damaged line {line:?} in {}: {e}", file.display()));
            all.push(value);
        }
    }
    all
}

/// A string field of a history entry ("" if it has none).
pub fn field<'a>(entry: &'a serde_json::Value, name: &str) -> &'a str {
    entry[name].as_str().unwrap_or("")
}
