//! The debug log tells the story of the process model (README, "Watch it
//! work"): each step of a connection's life is logged by the process
//! that takes it, with the fds named by role and number.
//!
//! These tests read the log beside `/proc`, as a student would read it
//! beside `ls -l /proc/PID/fd`: the pids in it are the server's
//! processes, the fd numbers are the fds those processes hold (the same
//! socket or pipe, by inode), and the steps come in their order.

mod common;

use std::collections::HashMap;

use common::{Client, DEADLINE, Server, unstamp};

/// One line of the server's log.
#[derive(Debug, Clone)]
struct Line {
    /// Its place in the log, for order.
    at: usize,
    role: String,
    pid: i32,
    text: String,
}

/// The server's log, read as it grows: each line asked for is waited for
/// (another process may not have written it yet), up to [`DEADLINE`].
struct Log<'a> {
    server: &'a Server,
}

impl Log<'_> {
    fn lines(&self) -> Vec<Line> {
        (self.server.log_text().lines().enumerate())
            .filter_map(|(at, line)| parse(at, line))
            .collect()
    }

    /// The first line that `pick` accepts, once it is written.
    fn wait_for(&self, what: &str, pick: impl Fn(&Line) -> bool) -> Line {
        let start = std::time::Instant::now();
        loop {
            if let Some(line) = self.lines().into_iter().find(&pick) {
                return line;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no {what} in the log:\n{}",
                self.server.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The first line of `role[pid]` that starts with `start`.
    fn find(&self, role: &str, pid: i32, start: &str) -> Line {
        self.wait_for(&format!("line of {role}[{pid}] starting {start:?}"), |l| {
            l.role == role && l.pid == pid && l.text.starts_with(start)
        })
    }

    /// The first line of `role[pid]` after line `after` that starts with
    /// `start`.
    fn find_after(&self, after: &Line, role: &str, pid: i32, start: &str) -> Line {
        let what = format!(
            "line of {role}[{pid}] starting {start:?} after line {}",
            after.at
        );
        self.wait_for(&what, |l| {
            l.at > after.at && l.role == role && l.pid == pid && l.text.starts_with(start)
        })
    }

    /// Asserts that the lines came in this order.
    fn in_order(&self, lines: &[&Line]) {
        for pair in lines.windows(2) {
            assert!(
                pair[0].at < pair[1].at,
                "{:?} should come before {:?}; log:\n{}",
                pair[0].text,
                pair[1].text,
                self.server.log_text()
            );
        }
    }
}

/// `2026-12-03T08:00:00Z DEBUG child[4242] text` as a [`Line`].
fn parse(at: usize, line: &str) -> Option<Line> {
    let mut words = line.splitn(4, ' ').filter(|w| !w.is_empty());
    let _stamp = words.next()?;
    let _level = words.next()?;
    let rest = line.split_once(']')?;
    let who = rest.0.rsplit(' ').next()?;
    let (role, pid) = who.split_once('[')?;
    Some(Line {
        at,
        role: role.to_string(),
        pid: pid.parse().ok()?,
        text: rest.1.trim_start().to_string(),
    })
}

/// The number that follows `marker` in `text`.
fn number_after(text: &str, marker: &str) -> i32 {
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in {text:?}"))
        + marker.len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {marker:?} in {text:?}"))
}

/// What fd `fd` of process `pid` is (`socket:[123]`), if it is open.
fn fd_link(pid: i32, fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The inode in a link such as `socket:[123]` or `pipe:[123]`.
fn inode_in(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")
        .or_else(|| link.strip_prefix("pipe:["))?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The inode of fd `fd` of process `pid`, which must be a socket or a
/// pipe: two fds with one inode are the same socket, or the same pipe.
fn inode(pid: i32, fd: i32) -> u64 {
    let link = fd_link(pid, fd).unwrap_or_else(|| panic!("process {pid} has no fd {fd}"));
    inode_in(&link).unwrap_or_else(|| panic!("fd {fd} of {pid} is {link}, not a socket or pipe"))
}

/// Every open fd of process `pid`, with its inode if it is a socket or
/// pipe (0 otherwise). An fd closed while they are read is left out.
fn fds_of(pid: i32) -> HashMap<i32, u64> {
    let mut fds = HashMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some(link) = fd_link(pid, fd) {
            fds.insert(fd, inode_in(&link).unwrap_or(0));
        }
    }
    fds
}

/// The access mode of fd `fd` of `pid`: `O_RDONLY` (0) or `O_WRONLY` (1).
fn access_mode(pid: i32, fd: i32) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .expect("fdinfo has flags");
    u32::from_str_radix(flags.trim(), 8).unwrap() & libc::O_ACCMODE as u32
}

/// The inode of the loopback TCP socket from `local` to `remote` port
/// (remote 0: the listening socket), from `/proc/net/tcp`.
fn tcp_inode(local: u16, remote: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap(), 16).unwrap();
    table
        .lines()
        .skip(1)
        .map(|row| row.split_whitespace().collect::<Vec<_>>())
        .find(|cols| port(cols[1]) == local && port(cols[2]) == remote)
        .map(|cols| cols[9].parse().unwrap())
        .unwrap_or_else(|| panic!("no TCP socket {local} -> {remote} in:\n{table}"))
}

/// The path of the Unix socket with `inode`, from `/proc/net/unix`: an
/// accepted connection bears its listening socket's path, a connecting
/// one none.
fn unix_path(inode: u64) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    table
        .lines()
        .skip(1)
        .map(|row| row.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols[6].parse::<u64>().ok() == Some(inode))
        .unwrap_or_else(|| panic!("no Unix socket {inode} in:\n{table}"))
        .get(7)
        .map(|path| path.to_string())
}

/// The parent pid and name of process `pid`.
fn ppid_and_comm(pid: i32) -> (i32, String) {
    let stat = mpchat::procfs::read(pid).unwrap();
    (stat.ppid, stat.comm)
}

/// The pid of the child the parent forked for the client at local port
/// `port`, from the parent's `fork()` line.
fn child_of(log: &Log, parent: i32, port: u16) -> (Line, i32) {
    let serves = format!(" serves 127.0.0.1:{port}");
    let fork = log.wait_for(&format!("fork() for port {port}"), |l| {
        l.pid == parent && l.text.starts_with("fork(): child") && l.text.ends_with(&serves)
    });
    let child = number_after(&fork.text, "fork(): child ");
    (fork, child)
}

#[test]
fn the_debug_log_follows_a_connection_and_a_line_through_the_processes() {
    // Logins are counted, so the login pipe is in the story too.
    let server = Server::start_logging("debug", &["--max-unregistered", "10"]);
    let parent = server.pid();
    let hub_path = server.logged_path("hub socket").display().to_string();
    server.wait_for_log("hub started as pid");

    // The parent's fds, as it says it holds them.
    let log = Log { server: &server };
    let holds = log.find("parent", parent, "holds ");
    let listening = number_after(&holds.text, "listening socket ");
    let lifeline_write = number_after(&holds.text, "lifeline's write end ");
    let lifeline_read = number_after(&holds.text, "lifeline's read end ");
    assert_eq!(inode(parent, listening), tcp_inode(server.port(), 0));
    let lifeline = inode(parent, lifeline_write);
    assert_eq!(inode(parent, lifeline_read), lifeline, "one pipe, two ends");
    assert_eq!(access_mode(parent, lifeline_write), libc::O_WRONLY as u32);
    assert_eq!(access_mode(parent, lifeline_read), libc::O_RDONLY as u32);

    // The hub: forked by the parent, holding the lifeline's read end only.
    let started = log.find("parent", parent, "hub started as pid ");
    let hub = number_after(&started.text, "pid ");
    let hub_keeps = log.find("hub", hub, "keeps hub socket ");
    let hub_socket = number_after(&hub_keeps.text, "keeps hub socket ");
    // Its name is set before it logs a line.
    assert_eq!(ppid_and_comm(hub), (parent, "mpchat-hub".to_string()));
    assert_eq!(unix_path(inode(hub, hub_socket)), Some(hub_path.clone()));
    let hub_lifeline: Vec<i32> = (fds_of(hub).into_iter())
        .filter(|&(_, inode)| inode == lifeline)
        .map(|(fd, _)| fd)
        .collect();
    assert_eq!(
        hub_lifeline,
        [lifeline_read],
        "the hub closed the write end"
    );

    // One connection, from accept() to registration.
    let alice = server.login("alice");
    let alice_port = alice.stream().local_addr().unwrap().port();
    let (fork, child) = child_of(&log, parent, alice_port);
    let accept = log.find(
        "parent",
        parent,
        &format!("accept() on listening socket {listening}: 127.0.0.1:{alice_port} on fd "),
    );
    let client_fd = number_after(&accept.text, " on fd ");
    let parent_closed = log.find(
        "parent",
        parent,
        &format!("closed child {child}'s fds: client socket {client_fd}, login pipe's write end "),
    );
    let watches = log.find(
        "parent",
        parent,
        &format!("watches child {child}'s login pipe: read end "),
    );
    let login_watch = number_after(&watches.text, "read end ");
    let child_closed = log.find("child", child, "closed the parent's fds: ");
    for closed in [
        format!("listening socket {listening}"),
        format!("lifeline's write end {lifeline_write}"),
    ] {
        assert!(
            child_closed.text.contains(&closed),
            "{:?}",
            child_closed.text
        );
    }
    let keeps = log.find(
        "child",
        child,
        &format!("keeps client socket {client_fd}, login pipe's write end "),
    );
    assert!(
        keeps.text.contains(&format!(
            "lifeline's read end {lifeline_read}; opened SIGTERM pipe "
        )),
        "{:?}",
        keeps.text
    );
    let login_write = number_after(&keeps.text, "login pipe's write end ");
    let front_end = log.find(
        "child",
        child,
        "front end: the line protocol (its first bytes are \"alice\")",
    );
    let connect = log.find(
        "child",
        child,
        &format!("connect() to the hub's socket {hub_path}: fd "),
    );
    let hub_link = number_after(&connect.text, ": fd ");
    let hub_accept = log.find(
        "hub",
        hub,
        &format!("accept() on the hub socket {hub_socket}: fd "),
    );
    assert!(
        hub_accept
            .text
            .contains(&format!(" from child {child}, uid ")),
        "{:?}",
        hub_accept.text
    );
    let conn_fd = number_after(&hub_accept.text, ": fd ");
    let conn = number_after(&hub_accept.text, "connection ");
    let hub_registered = log.find(
        "hub",
        hub,
        &format!("connection {conn} (child {child}, fd {conn_fd}) is alice"),
    );
    let registered = log.find("child", child, "registered as alice");
    let login_closed = log.find(
        "child",
        child,
        &format!("closed the login pipe's write end {login_write}"),
    );
    log.in_order(&[&accept, &fork, &watches, &parent_closed]);
    log.in_order(&[&accept, &child_closed]);
    log.in_order(&[
        &child_closed,
        &keeps,
        &front_end,
        &connect,
        &registered,
        &login_closed,
    ]);
    log.in_order(&[&hub_accept, &hub_registered, &registered]);

    // /proc agrees with what the log says, while alice is connected.
    assert_eq!(ppid_and_comm(child), (parent, "mpchat-client".to_string()));
    let tcp = tcp_inode(server.port(), alice_port);
    assert_eq!(
        inode(child, client_fd),
        tcp,
        "the child holds alice's socket"
    );
    let parents = fds_of(parent);
    assert!(!parents.values().any(|&i| i == tcp), "the parent closed it");
    let childs = fds_of(child);
    assert!(!childs.values().any(|&i| i == inode(parent, listening)));
    let child_lifeline: Vec<i32> = (childs.iter())
        .filter(|&(_, &inode)| inode == lifeline)
        .map(|(&fd, _)| fd)
        .collect();
    assert_eq!(
        child_lifeline,
        [lifeline_read],
        "only the lifeline's read end"
    );
    assert_eq!(access_mode(child, lifeline_read), libc::O_RDONLY as u32);
    assert_eq!(
        unix_path(inode(child, hub_link)),
        None,
        "a connecting socket"
    );
    assert_eq!(
        unix_path(inode(hub, conn_fd)),
        Some(hub_path.clone()),
        "accepted on the hub socket"
    );
    // The login pipe: the child closed its end at registration, and the
    // parent its own once it saw that.
    let ended = format!("child {child}'s login pipe ended");
    let pipe_ended = log.find("parent", parent, &ended);
    assert_eq!(
        fd_link(child, login_write),
        None,
        "the child closed its end"
    );
    assert!(
        pipe_ended
            .text
            .ends_with(&format!("closing its read end {login_watch}"))
    );

    // One line, from the hub to both children's clients.
    let mut alice = alice;
    let mut bob = server.login("bob");
    alice.expect_stamped("* bob has joined the chat.");
    let (_, bob_child) = child_of(&log, parent, bob.stream().local_addr().unwrap().port());
    alice.send_line("hello");
    let said = alice.read_line();
    assert_eq!(unstamp(&said), Some("alice: hello"));
    bob.expect_stamped("alice: hello");
    let bytes = said.len() + 2;
    let wrote = format!("wrote {bytes} bytes (1 line) to the client socket ");
    let queued = log.find(
        "hub",
        hub,
        "alice's chat line in #lobby: queued for 2 members",
    );
    let turn = log.find_after(&queued, "hub", hub, "end of turn: sent ");
    assert!(
        turn.text.starts_with("end of turn: sent 2 datagrams, "),
        "{:?}",
        turn.text
    );
    let alice_wrote = log.find_after(&queued, "child", child, &wrote);
    assert!(alice_wrote.text.ends_with(&format!("socket {client_fd}")));
    let bob_wrote = log.find_after(&queued, "child", bob_child, &wrote);
    // The children may write before the hub has logged its whole turn.
    log.in_order(&[&queued, &turn]);
    log.in_order(&[&queued, &alice_wrote]);
    log.in_order(&[&queued, &bob_wrote]);

    // Leaving: who closes what, the hub's removal, the parent's reap.
    alice.send_line("/quit");
    let deadline = std::time::Instant::now() + DEADLINE;
    while alice.try_read_line().is_some() {
        assert!(std::time::Instant::now() < deadline);
    }
    let reaped = format!("waitpid(): reaped child {child} (127.0.0.1:{alice_port}), exit status 0");
    let hub_shut = log.find(
        "child",
        child,
        &format!("shutdown() of the hub connection {hub_link}"),
    );
    let client_shut = log.find(
        "child",
        child,
        &format!("shutdown() of the client socket {client_fd} for writing"),
    );
    let exit = log.find("child", child, "exit status 0");
    let end_of_file = log.find(
        "hub",
        hub,
        &format!("connection {conn} (child {child}): end of file"),
    );
    let removed = log.find(
        "hub",
        hub,
        &format!("closed fd {conn_fd} (connection {conn}, child {child}); its user leaves"),
    );
    let reap = log.find("parent", parent, &reaped);
    assert!(mpchat::procfs::read(child).is_err(), "the child is gone");
    log.in_order(&[&login_closed, &hub_shut, &client_shut, &exit, &reap]);
    log.in_order(&[&hub_shut, &end_of_file, &removed]);
    drop(bob);
}

#[test]
fn the_echo_server_logs_the_class_lab_steps() {
    let server = Server::start_logging("debug", &["--echo"]);
    let parent = server.pid();
    let mut client = Client::connect(server.addr);
    let port = client.stream().local_addr().unwrap().port();
    client.send_bytes(b"hello\n");
    let mut echoed = [0u8; 6];
    std::io::Read::read_exact(&mut client.stream(), &mut echoed).unwrap();
    assert_eq!(&echoed, b"hello\n");
    client.shutdown_write();
    client.expect_closed();
    let log = Log { server: &server };
    let holds = log.find("parent", parent, "holds ");
    let listening = number_after(&holds.text, "listening socket ");
    let accept = log.find(
        "parent",
        parent,
        &format!("accept() on listening socket {listening}: 127.0.0.1:{port} on fd "),
    );
    let client_fd = number_after(&accept.text, " on fd ");
    let (fork, child) = child_of(&log, parent, port);
    let parent_closed = log.find(
        "parent",
        parent,
        &format!("closed child {child}'s fds: client socket {client_fd}"),
    );
    let child_closed = log.find(
        "echo",
        child,
        &format!("closed the parent's fds: listening socket {listening}"),
    );
    let keeps = log.find(
        "echo",
        child,
        &format!("keeps client socket {client_fd}, lifeline's read end "),
    );
    let echo = log.find(
        "echo",
        child,
        &format!("echoed 6 bytes on the client socket {client_fd}"),
    );
    let eof = log.find(
        "echo",
        child,
        &format!("end of file on the client socket {client_fd}"),
    );
    let exit = log.find("echo", child, "exit status 0");
    let reap = log.find(
        "parent",
        parent,
        &format!("waitpid(): reaped child {child} (127.0.0.1:{port}), exit status 0"),
    );
    log.in_order(&[&accept, &fork, &parent_closed]);
    log.in_order(&[&accept, &child_closed, &keeps, &echo, &eof, &exit, &reap]);
}

#[test]
fn at_the_default_level_the_log_stays_quiet() {
    let server = Server::start_logging("info", &["--max-unregistered", "10"]);
    let mut alice = server.login("alice");
    alice.send_line("hello");
    alice.expect_stamped("alice: hello");
    alice.send_line("/quit");
    server.wait_for_log("alice (127.0.0.1:");
    let log = server.log_text();
    assert!(
        !log.contains(" DEBUG ") && !log.contains(" TRACE "),
        "{log}"
    );
}
