mod common;
use common::*;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The whole shutdown (signal to last process gone) must fit in this.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(2);

const WELCOME: &str = "Welcome to mpchat! Enter your nickname:";
const SHUTTING_DOWN: &str = "Server is shutting down.";
const SERVER_FULL: &str = "Server is full, try again later.";

// ---------------------------------------------------------------------------
// Helpers local to this file.
// ---------------------------------------------------------------------------

/// The one socket directory of a running server, from its log line
/// `hub socket at <dir>/hub.sock`.
fn the_socket_dir(server: &Server) -> PathBuf {
    let socket = server.logged_path("hub socket");
    assert_eq!(socket.file_name().unwrap(), "hub.sock");
    socket.parent().unwrap().to_path_buf()
}

fn count(procs: &[Proc], comm: &str) -> usize {
    procs.iter().filter(|p| p.comm == comm).count()
}

fn zombies(procs: &[Proc]) -> Vec<Proc> {
    procs.iter().filter(|p| p.state == 'Z').cloned().collect()
}

/// The state and (for a dead process) the wait status of `pid`, from
/// `/proc/<pid>/stat`; `None` once it is gone.
fn proc_state(pid: i32) -> Option<(char, i32)> {
    let stat = mpchat::procfs::read(pid).ok()?;
    Some((stat.state, stat.exit_code))
}

/// True while `pid` runs (exists and is not a zombie).
fn alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some((state, _)) if state != 'Z')
}

/// The pid of the child that holds the server's end of `client`'s
/// connection: the socket's inode from /proc/net/tcp, then the
/// mpchat-client process with that socket among its fds. (Not from the
/// log: a later connection may reuse an earlier one's port.)
fn child_pid_of(server: &Server, client: &Client) -> i32 {
    let port = client.stream().local_addr().expect("local address").port();
    let mut pid = None;
    wait_until("the child holding this client's socket", || {
        pid = socket_inode(server.port(), port).and_then(|inode| {
            server
                .pids_named("mpchat-client")
                .into_iter()
                .find(|&p| holds_socket(p, inode))
        });
        pid.is_some()
    });
    pid.expect("found")
}

/// The inode of the established TCP socket from `local` to `remote` port.
fn socket_inode(local: u16, remote: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let established = f.get(3) == Some(&"01");
        (established && port(f[1]) == Some(local) && port(f[2]) == Some(remote))
            .then(|| f.get(9)?.parse().ok())
            .flatten()
    })
}

fn holds_socket(pid: i32, inode: u64) -> bool {
    let target = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_str() == Some(&target)))
        })
        .unwrap_or(false)
}

/// The hub's pid, once it has taken its name (a moment after the fork).
fn the_hub(server: &Server) -> i32 {
    let mut hub = None;
    wait_until("the hub", || {
        hub = server.pids_named("mpchat-hub").first().copied();
        hub.is_some()
    });
    hub.unwrap()
}

/// Asserts the server's tree is exactly the parent, the hub and `clients`
/// client children, each a child of the parent, and nothing is a zombie.
fn assert_chat_tree(server: &Server, clients: usize) {
    let procs = server.processes();
    let parent = server.pid();
    assert_eq!(
        procs.len(),
        2 + clients,
        "process group {parent}: {procs:?}"
    );
    assert_eq!(procs[0].pid, parent, "{procs:?}");
    assert_eq!(procs[0].comm, "mpchat", "{procs:?}");
    assert_eq!(count(&procs, "mpchat"), 1, "{procs:?}");
    assert_eq!(count(&procs, "mpchat-hub"), 1, "{procs:?}");
    assert_eq!(count(&procs, "mpchat-client"), clients, "{procs:?}");
    for p in &procs[1..] {
        assert_eq!(p.ppid, parent, "not a child of the parent: {p:?}");
    }
    assert!(zombies(&procs).is_empty(), "zombies: {procs:?}");
}

/// Waits until the tree holds exactly `clients` client children, none of
/// the group is a zombie, and then checks the whole tree.
fn wait_for_clients(server: &Server, clients: usize) {
    wait_until(
        &format!("{clients} mpchat-client processes and no zombie"),
        || {
            let procs = server.processes();
            count(&procs, "mpchat-client") == clients && zombies(&procs).is_empty()
        },
    );
    assert_chat_tree(server, clients);
}

/// Waits until `clients` client children are left with no zombie, and
/// checks that `gone` (a child that ended) was reaped: no longer in /proc.
fn wait_reaped(server: &Server, clients: usize, gone: i32) {
    wait_for_clients(server, clients);
    assert!(
        proc_state(gone).is_none(),
        "the ended child {gone} still exists: {:?}",
        proc_state(gone)
    );
}

/// Connects and reads the welcome, so the client's child surely runs.
fn connect_at_prompt(server: &Server) -> Client {
    let mut client = server.connect();
    client.expect(WELCOME);
    client
}

fn expect_shutting_down(client: &mut Client, who: &str) {
    match client.try_read_line() {
        Some(line) => assert_eq!(line, SHUTTING_DOWN, "{who}"),
        None => panic!("{who}: connection closed without {SHUTTING_DOWN:?}"),
    }
    if let Some(line) = client.try_read_line() {
        panic!("{who}: expected EOF after the farewell, got {line:?}");
    }
}

/// Two logged-in users and a client still at the nickname prompt: each
/// kind of session a shutdown must say goodbye to.
struct Audience {
    clients: [(Client, &'static str); 3],
}

impl Audience {
    /// Connects them and waits until their three children run.
    fn gather(server: &Server) -> Audience {
        let [alice, bob] = server.login_all(["alice", "bob"]);
        let at_prompt = connect_at_prompt(server);
        wait_for_clients(server, 3);
        Audience {
            clients: [
                (alice, "alice"),
                (bob, "bob"),
                (at_prompt, "the client at the nickname prompt"),
            ],
        }
    }

    /// Each gets `Server is shutting down.` and then EOF; then each
    /// connection is closed.
    fn expect_goodbye(self) {
        for (mut client, who) in self.clients {
            expect_shutting_down(&mut client, who);
        }
    }
}

// ---------------------------------------------------------------------------
// 1. The `ps` view.
// ---------------------------------------------------------------------------

#[test]
fn ps_shows_parent_hub_and_one_child_per_client_and_reaps_a_leaver() {
    let server = Server::start();
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]);

    assert_chat_tree(&server, 3);
    let carol_pid = child_pid_of(&server, &carol);
    assert!(
        server.pids_named("mpchat-client").contains(&carol_pid),
        "carol's child {carol_pid} is not among {:?}",
        server.processes()
    );

    carol.send_line("/quit");
    carol.expect("Bye, carol.");
    carol.expect_closed();
    alice.expect_stamped("* carol has left the chat.");
    bob.expect_stamped("* carol has left the chat.");

    // Reaped: gone from /proc, not left as a zombie.
    wait_reaped(&server, 2, carol_pid);
}

/// What `ps -ef` shows for `pid`: its command line, NULs as spaces.
fn title_of(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw).replace('\0', " ");
    text.trim_end().to_string()
}

fn wait_for_title(pid: i32, expected: &str) {
    wait_until(&format!("process {pid} titled {expected:?}"), || {
        title_of(pid) == expected
    });
}

#[test]
fn ps_ef_says_what_each_process_is() {
    let server = Server::start();
    wait_for_title(
        server.pid(),
        &format!("mpchat: listening on {}", server.addr),
    );
    let hub = the_hub(&server);
    wait_for_title(hub, "mpchat: hub, 0 users");

    let mut alice = server.login("alice");
    let alice_child = child_pid_of(&server, &alice);
    let alice_addr = alice.stream().local_addr().unwrap();
    wait_for_title(alice_child, &format!("mpchat: alice {alice_addr}"));
    wait_for_title(hub, "mpchat: hub, 1 user");

    let at_prompt = connect_at_prompt(&server);
    let prompt_child = child_pid_of(&server, &at_prompt);
    let prompt_addr = at_prompt.stream().local_addr().unwrap();
    wait_for_title(prompt_child, &format!("mpchat: login {prompt_addr}"));

    alice.send_line("/nick alicia");
    alice.expect_stamped("* User \"alice\" has changed their nickname to \"alicia\".");
    wait_for_title(alice_child, &format!("mpchat: alicia {alice_addr}"));
    let _bob = server.login("bob");
    wait_for_title(hub, "mpchat: hub, 2 users");
    // The short names for `ps -o comm` and `top` stay as they were.
    let comms: Vec<String> = server.processes().into_iter().map(|p| p.comm).collect();
    assert_eq!(
        comms.iter().filter(|c| *c == "mpchat-client").count(),
        3,
        "{comms:?}"
    );
}

// ---------------------------------------------------------------------------
// 2. kill -9 of one client's child.
// ---------------------------------------------------------------------------

#[test]
fn killing_a_client_child_announces_the_leave_and_frees_the_nick() {
    let server = Server::start();
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]);

    let bob_pid = child_pid_of(&server, &bob);
    let started = Instant::now();
    send_signal(bob_pid, libc::SIGKILL);

    alice.expect_stamped("* bob has left the chat.");
    carol.expect_stamped("* bob has left the chat.");
    let announced = started.elapsed();
    assert!(
        announced < SHUTDOWN_BOUND,
        "the leave took {announced:?} to be announced"
    );
    // bob's connection died with his child.
    bob.expect_closed();

    // Nobody else was disconnected: the next line each sees is this one.
    alice.send_line("still here");
    alice.expect_stamped("alice: still here");
    carol.expect_stamped("alice: still here");
    carol.send_line("me too");
    carol.expect_stamped("carol: me too");
    alice.expect_stamped("carol: me too");

    // The nickname is free again.
    let mut bob2 = server.login("bob");
    alice.expect_stamped("* bob has joined the chat.");
    carol.expect_stamped("* bob has joined the chat.");
    bob2.send_line("back");
    bob2.expect_stamped("bob: back");
    alice.expect_stamped("bob: back");
    carol.expect_stamped("bob: back");

    // The killed child was reaped; no zombie anywhere in the tree.
    wait_reaped(&server, 3, bob_pid);
}

// ---------------------------------------------------------------------------
// 3. SIGTERM / SIGINT to the parent.
// ---------------------------------------------------------------------------

fn orderly_shutdown_on(signal: i32) {
    let mut server = Server::start();
    let pid = server.pid();
    let audience = Audience::gather(&server);
    let dir = the_socket_dir(&server);
    assert!(dir.join("hub.sock").exists(), "no hub.sock in {dir:?}");

    let started = Instant::now();
    server.signal(signal);

    audience.expect_goodbye();

    let status = server.wait_exit();
    let took = started.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}; log:\n{}",
        server.log_text()
    );
    let left = processes_in_group(pid);
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(
        took < SHUTDOWN_BOUND,
        "the tree took {took:?} to go after the signal; log:\n{}",
        server.log_text()
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
    eprintln!("signal {signal}: the tree was gone after {took:?}");
}

#[test]
fn sigterm_says_goodbye_to_everyone_and_cleans_up() {
    orderly_shutdown_on(libc::SIGTERM);
}

#[test]
fn sigint_says_goodbye_to_everyone_and_cleans_up() {
    orderly_shutdown_on(libc::SIGINT);
}

// ---------------------------------------------------------------------------
// 4. kill -9 of the parent.
// ---------------------------------------------------------------------------

#[test]
fn killing_the_parent_stops_the_hub_and_children_and_frees_the_port() {
    let mut server = Server::start();
    let pid = server.pid();
    let port = server.port();
    let audience = Audience::gather(&server);
    let dir = the_socket_dir(&server);
    let admin = server.logged_path("admin socket");
    let others: Vec<Proc> = server.processes().into_iter().skip(1).collect();

    let started = Instant::now();
    send_signal(pid, libc::SIGKILL);

    // The orphans are re-parented; whoever adopts them may never reap them
    // (this machine's init does not), so "exited" means dead: gone or a
    // zombie.
    wait_until("the hub and every child to exit", || {
        others.iter().all(|p| !alive(p.pid))
    });
    let took = started.elapsed();
    assert!(
        took < SHUTDOWN_BOUND,
        "the hub and children took {took:?} to exit after the parent died"
    );
    let status = server.wait_exit();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    eprintln!("parent killed: the hub and children exited after {took:?}");
    // Each exited by itself, cleanly, not by a signal.
    for p in &others {
        if let Some((_, exit_code)) = proc_state(p.pid) {
            assert_eq!(
                exit_code, 0,
                "{} {} ended with wait status {exit_code:#x}",
                p.comm, p.pid
            );
        }
    }
    let running: Vec<Proc> = processes_in_group(pid)
        .into_iter()
        .filter(|p| p.state != 'Z')
        .collect();
    assert!(running.is_empty(), "still running: {running:?}");

    audience.expect_goodbye();
    // With the parent gone, the hub cleans up its own directory, and the
    // admin socket.
    assert!(!dir.exists(), "{} was not removed", dir.display());
    assert!(!admin.exists(), "{} was not removed", admin.display());

    // A new server takes the same port at once and works.
    let port_arg = port.to_string();
    let again = Server::spawn(&["--bind", "127.0.0.1", "--history-lines", "0", &port_arg]);
    assert_eq!(again.port(), port);
    let mut carol = again.login("carol");
    carol.send_line("hello again");
    carol.expect_stamped("carol: hello again");
}

// ---------------------------------------------------------------------------
// 5. Restart on the same port after a clean SIGTERM.
// ---------------------------------------------------------------------------

#[test]
fn restart_on_the_same_port_after_sigterm_works_at_once() {
    let mut server = Server::start();
    let port = server.port();
    let mut alice = server.login("alice");
    alice.send_line("before");
    alice.expect_stamped("alice: before");

    server.signal(libc::SIGTERM);
    expect_shutting_down(&mut alice, "alice");
    drop(alice);
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}");
    drop(server);

    let port_arg = port.to_string();
    let again = Server::spawn(&["--bind", "127.0.0.1", "--history-lines", "0", &port_arg]);
    assert_eq!(again.port(), port);
    let [mut alice, mut bob] = again.login_all(["alice", "bob"]);
    bob.send_line("after");
    bob.expect_stamped("bob: after");
    alice.expect_stamped("bob: after");
}

// ---------------------------------------------------------------------------
// 6. --max-clients.
// ---------------------------------------------------------------------------

#[test]
fn max_clients_refuses_without_forking_and_frees_a_slot_on_leave() {
    let server = Server::start_with(&["--max-clients", "2"]);
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    wait_for_clients(&server, 2);

    let mut third = server.connect();
    third.expect(SERVER_FULL);
    third.expect_closed();
    server.wait_for_log("server is full");
    // No process was forked for it.
    assert_chat_tree(&server, 2);

    // The room is untouched.
    alice.send_line("still two");
    alice.expect_stamped("alice: still two");
    bob.expect_stamped("alice: still two");

    bob.send_line("/quit");
    bob.expect("Bye, bob.");
    bob.expect_closed();
    alice.expect_stamped("* bob has left the chat.");
    // The slot is free once the parent has reaped bob's child.
    wait_for_clients(&server, 1);

    let mut carol = server.login("carol");
    alice.expect_stamped("* carol has joined the chat.");
    carol.send_line("got in");
    carol.expect_stamped("carol: got in");
    alice.expect_stamped("carol: got in");
    assert_chat_tree(&server, 2);

    // Exactly three forks for clients: alice, bob, carol; none for the
    // refused one.
    let log = server.log_text();
    let forks = log
        .lines()
        .filter(|l| l.contains(" connected (child "))
        .count();
    assert_eq!(forks, 3, "log:\n{log}");
}

// ---------------------------------------------------------------------------
// 7. A 100-client broadcast.
// ---------------------------------------------------------------------------

#[test]
fn hundred_clients_all_see_every_message_in_one_order() {
    const CLIENTS: usize = 100;
    const SENDERS: [usize; 5] = [0, 19, 42, 73, 99];
    const PER_SENDER: usize = 20;
    let started = Instant::now();
    let server = Server::start();

    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| server.connect()).collect();
    for c in &mut clients {
        c.expect(WELCOME);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_line(&format!("u{i}"));
        c.expect(&format!("Hello, u{i}! Type /help for commands."));
        c.expect_stamped(&format!("* u{i} has joined the chat."));
    }
    for (j, c) in clients.iter_mut().enumerate() {
        for i in j + 1..CLIENTS {
            c.expect_stamped(&format!("* u{i} has joined the chat."));
        }
    }
    wait_for_clients(&server, CLIENTS);
    let logged_in = started.elapsed();

    // Five senders at once, each line in its own write.
    let writers: Vec<_> = SENDERS
        .iter()
        .map(|&s| {
            let mut stream: TcpStream = clients[s].stream().try_clone().expect("clone");
            thread::spawn(move || {
                for k in 0..PER_SENDER {
                    stream
                        .write_all(format!("msg {s} {k}\n").as_bytes())
                        .expect("send");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer thread");
    }

    let mut reference: Option<Vec<String>> = None;
    for (j, c) in clients.iter_mut().enumerate() {
        let lines: Vec<String> = (0..SENDERS.len() * PER_SENDER)
            .map(|_| c.read_line())
            .collect();
        let mut next = [0usize; CLIENTS];
        for line in &lines {
            let text = unstamp(line).unwrap_or_else(|| panic!("u{j}: unstamped {line:?}"));
            let (nick, msg) = text
                .split_once(": ")
                .unwrap_or_else(|| panic!("u{j}: not a chat line {line:?}"));
            let s: usize = nick[1..].parse().expect("sender index");
            assert!(SENDERS.contains(&s), "u{j}: from a non-sender {line:?}");
            assert_eq!(
                msg,
                format!("msg {s} {}", next[s]),
                "u{j}: u{s}'s messages out of order"
            );
            next[s] += 1;
        }
        for &s in &SENDERS {
            assert_eq!(next[s], PER_SENDER, "u{j}: messages of u{s}");
        }
        match &reference {
            None => reference = Some(lines),
            Some(first) => assert_eq!(&lines, first, "u{j} saw another order than u0"),
        }
    }
    // Nothing more for anyone: a last line is the very next one for all.
    clients[50].send_line("the end");
    for c in &mut clients {
        c.expect_stamped("u50: the end");
    }
    eprintln!(
        "100 clients: logged in after {logged_in:?}, done after {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// 8. The hub socket's permissions.
// ---------------------------------------------------------------------------

#[test]
fn hub_socket_directory_is_private() {
    let server = Server::start();
    let mut alice = server.login("alice");
    alice.send_line("hi");
    alice.expect_stamped("alice: hi");

    let dir = the_socket_dir(&server);
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let suffix = &name[format!("mpchat-{}-", server.pid()).len()..];
    assert!(
        suffix.parse::<u32>().is_ok(),
        "directory name {name:?} is not mpchat-<pid>-N"
    );
    let meta = std::fs::symlink_metadata(&dir).expect("stat the directory");
    assert!(meta.is_dir(), "{dir:?} is not a directory");
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o700,
        "mode of {}",
        dir.display()
    );
    let socket = dir.join("hub.sock");
    let meta = std::fs::symlink_metadata(&socket).expect("stat the socket");
    assert!(meta.file_type().is_socket(), "{socket:?} is not a socket");
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o600,
        "mode of {}",
        socket.display()
    );
    // Nothing else lives in the directory.
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("hub.sock")]);
}

/// As another user (nobody, uid 65534), tries to connect to the hub's
/// socket; returns 0 if it connected, 2 if it was refused for permission,
/// other codes for anything else. Runs in a forked test process.
fn connect_as_nobody(addr: &nix::sys::socket::UnixAddr) -> i32 {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, connect, socket};
    use std::os::fd::AsRawFd;
    if nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).is_err() {
        return 10;
    }
    let Ok(fd) = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return 11;
    };
    match connect(fd.as_raw_fd(), addr) {
        Ok(()) => 0,
        Err(nix::errno::Errno::EACCES) => 2,
        Err(_) => 3,
    }
}

#[test]
fn another_user_cannot_reach_the_hub() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: only root can try the socket as another user");
        return;
    }
    let server = Server::start();
    let socket = the_socket_dir(&server).join("hub.sock");
    let addr = nix::sys::socket::UnixAddr::new(&socket).expect("socket address");
    // SAFETY: the forked process only makes system calls (setuid, socket,
    // connect) and leaves with _exit: it allocates nothing and takes no
    // lock that another thread of the test harness might have held.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => {
            let code = connect_as_nobody(&addr);
            // SAFETY: _exit ends the forked process at once.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
            assert_eq!(
                status,
                nix::sys::wait::WaitStatus::Exited(child, 2),
                "another user's connect was not refused for permission (0: it connected)"
            );
        }
    }
    // The server's own user still gets in.
    let mut alice = server.login("alice");
    alice.send_line("hi");
    alice.expect_stamped("alice: hi");
}

// ---------------------------------------------------------------------------
// 9. kill -9 of the hub.
// ---------------------------------------------------------------------------

#[test]
fn killing_the_hub_loses_no_client() {
    let server = Server::start();
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]);
    bob.send_line("/rename robert");
    for c in [&mut alice, &mut bob, &mut carol] {
        c.expect_stamped("* User \"bob\" has changed their nickname to \"robert\".");
    }
    let mut at_prompt = server.connect();
    at_prompt.expect("Welcome to mpchat! Enter your nickname:");

    let took = server.kill_hub_and_wait_for_new();
    server.wait_for_log("starting a new one");
    eprintln!("a new hub was running {took:?} after the kill");
    // Each child puts its user back as soon as it is scheduled after the
    // old hub's death; a line sent before the last of them is back would
    // miss that user.
    for nick in ["alice", "robert", "carol"] {
        server.wait_for_log(&format!("{nick} rejoined from"));
    }

    // Nobody was disconnected, nobody was told anything, and the room is
    // the same: same names, same order, same owner.
    carol.send_line("still here?");
    for c in [&mut alice, &mut bob, &mut carol] {
        c.expect_stamped("carol: still here?");
    }
    alice.send_line("/users");
    alice.expect("Users in chat: alice, robert, carol");
    bob.send_line("/kick carol");
    bob.expect("Only the room owner can kick.");
    // The old names are still taken; the client at the prompt logs in.
    at_prompt.send_line("Robert");
    at_prompt.expect("Nickname \"Robert\" is already in use. Enter your nickname:");
    at_prompt.send_line("dave");
    at_prompt.expect("Hello, dave! Type /help for commands.");
    for c in [&mut alice, &mut bob, &mut carol, &mut at_prompt] {
        c.expect_stamped("* dave has joined the chat.");
    }
    assert_chat_tree(&server, 4);
}

/// Schedules `text` in `seconds` and reads the confirmation.
fn schedule(client: &mut Client, seconds: u64, text: &str) {
    client.send_line(&format!("/schedule +{seconds} {text}"));
    let line = client.read_line();
    assert!(line.starts_with("Message scheduled for "), "{line:?}");
}

#[test]
fn scheduled_messages_survive_a_hub_restart() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    schedule(&mut alice, 3600, "much later");
    schedule(&mut alice, 2, "soon");
    server.kill_hub_and_wait_for_new();
    // The new hub delivers what the old one had scheduled, under the
    // author's name...
    for c in [&mut alice, &mut bob] {
        c.expect_stamped("[Scheduled by alice] soon");
    }
    // ...and the author still finds the rest among their own.
    alice.send_line("/schedule list");
    alice.expect("Your scheduled messages (1):");
    let item = alice.read_line();
    assert!(
        item.starts_with("1. ") && item.ends_with(" much later"),
        "{item:?}"
    );
}

#[test]
fn a_state_file_that_cannot_be_written_does_not_stop_the_chat() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    // The temporary file's name is taken by a directory: every save fails.
    let blocker = server.data_dir().join("schedule.tmp");
    std::fs::create_dir(&blocker).expect("mkdir");
    schedule(&mut alice, 1, "on time anyway");
    server.wait_for_log("cannot save the scheduled messages");
    bob.send_line("chat goes on");
    for c in [&mut alice, &mut bob] {
        c.expect_stamped("bob: chat goes on");
    }
    for c in [&mut alice, &mut bob] {
        c.expect_stamped("[Scheduled by alice] on time anyway");
    }
    // So that the server can remove its directory at the end.
    std::fs::remove_dir(&blocker).expect("rmdir");
}

#[test]
fn a_hub_that_keeps_dying_shuts_the_server_down() {
    let mut server = Server::start();
    let pid = server.pid();
    let audience = Audience::gather(&server);
    let dir = the_socket_dir(&server);
    for _ in 1..5 {
        server.kill_hub_and_wait_for_new();
    }
    // The fifth death within a minute is the last.
    let hub = server.pids_named("mpchat-hub");
    send_signal(hub[0], libc::SIGKILL);
    audience.expect_goodbye();
    let status = server.wait_exit();
    assert_eq!(
        status.code(),
        Some(1),
        "{status:?}; log:\n{}",
        server.log_text()
    );
    server.wait_for_log("not restarting it again; shutting down");
    let left = processes_in_group(pid);
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

// ---------------------------------------------------------------------------
// 10. --echo mode.
// ---------------------------------------------------------------------------

#[test]
fn echo_mode_forks_one_echo_child_per_client_and_no_hub() {
    let server = Server::start_with(&["--echo"]);
    let mut clients: Vec<Client> = (0..3).map(|_| server.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let line = format!("echo {i}");
        c.send_bytes(format!("{line}\r\n").as_bytes());
        c.expect(&line);
    }
    let parent = server.pid();
    let procs = server.processes();
    assert_eq!(procs.len(), 4, "{procs:?}");
    assert_eq!(procs[0].pid, parent, "{procs:?}");
    assert_eq!(procs[0].comm, "mpchat", "{procs:?}");
    assert_eq!(count(&procs, "mpchat-echo"), 3, "{procs:?}");
    assert_eq!(count(&procs, "mpchat-hub"), 0, "{procs:?}");
    assert_eq!(count(&procs, "mpchat-client"), 0, "{procs:?}");
    for p in &procs[1..] {
        assert_eq!(p.ppid, parent, "not a child of the parent: {p:?}");
    }
    assert!(zombies(&procs).is_empty(), "{procs:?}");
    assert!(
        !server.log_text().contains("hub socket at"),
        "echo mode made a hub socket; log:\n{}",
        server.log_text()
    );

    // One leaves; its echo child is reaped.
    let gone = clients.pop().unwrap();
    gone.shutdown_write();
    drop(gone);
    wait_until("two echo children and no zombie", || {
        let procs = server.processes();
        count(&procs, "mpchat-echo") == 2 && zombies(&procs).is_empty()
    });
    let mut first = clients.remove(0);
    first.send_bytes(b"still echoing\r\n");
    first.expect("still echoing");
}

// ---------------------------------------------------------------------------
// 11. A client that stops reading.
// ---------------------------------------------------------------------------

#[test]
fn a_client_that_stops_reading_is_cut_off_and_slows_nobody() {
    // At least this many 400-byte lines, and on until the non-reader is
    // cut off: the kernel buffers part of what it does not read (on Linux
    // the send buffer grows up to tcp_wmem's maximum, 4 MiB by default)
    // before its child's own backlog starts to grow.
    const MIN_LINES: usize = 3000;
    const MAX_LINES: usize = 40_000;
    const MARKER: &str = "flood over";
    // The sender stays at most this many lines ahead of the slower reader,
    // so the readers' own backlogs stay far below the limit however busy
    // the machine is.
    const WINDOW: usize = 1000;
    let server = Server::start();
    let [mut talker, mut watcher, slow] = server.login_all(["talker", "watcher", "slow"]);
    let slow_peer = slow.stream().local_addr().unwrap();
    let slow_pid = child_pid_of(&server, &slow);
    // `slow` is never read from again.

    let payload = "x".repeat(394);
    let line_of = |k: usize| format!("{k:05} {payload}");
    assert_eq!(line_of(0).len(), 400);
    let left_line = "* slow has left the chat.";
    let slow_gone = AtomicBool::new(false);
    let progress = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let started = Instant::now();

    // Each reader takes the talker's lines in order, each within the
    // deadline, up to the marker; it notes the other lines (the leave)
    // and the longest wait for a line.
    let read = |client: &mut Client, who: &'static str, progress: &AtomicUsize| {
        let mut others = Vec::new();
        let mut worst = Duration::ZERO;
        let mut k = 0;
        loop {
            let t = Instant::now();
            let line = client.read_line();
            worst = worst.max(t.elapsed());
            match unstamp(&line).and_then(|t| t.strip_prefix("talker: ")) {
                Some(MARKER) => return (k, others, worst),
                Some(text) => {
                    assert_eq!(text, line_of(k), "{who}: line {k}");
                    k += 1;
                    progress.store(k, Ordering::SeqCst);
                }
                None => {
                    if unstamp(&line) == Some(left_line) {
                        slow_gone.store(true, Ordering::SeqCst);
                    }
                    others.push(line);
                }
            }
        }
    };
    let mut out = talker.stream().try_clone().expect("clone");
    let (sent, talker_seen, watcher_seen) = thread::scope(|s| {
        let sender = s.spawn(|| {
            let mut k = 0;
            while k < MIN_LINES || (k < MAX_LINES && !slow_gone.load(Ordering::SeqCst)) {
                let waiting = Instant::now();
                while k
                    >= WINDOW
                        + progress
                            .iter()
                            .map(|p| p.load(Ordering::SeqCst))
                            .min()
                            .unwrap()
                {
                    assert!(
                        waiting.elapsed() < DEADLINE,
                        "the readers took no line for {DEADLINE:?}"
                    );
                    thread::sleep(Duration::from_millis(1));
                }
                out.write_all(format!("{}\n", line_of(k)).as_bytes())
                    .expect("send");
                k += 1;
            }
            out.write_all(format!("{MARKER}\n").as_bytes())
                .expect("send");
            k
        });
        let t = s.spawn(|| read(&mut talker, "talker", &progress[0]));
        let w = s.spawn(|| read(&mut watcher, "watcher", &progress[1]));
        (
            sender.join().expect("sender thread"),
            t.join().expect("talker's reader"),
            w.join().expect("watcher's reader"),
        )
    });
    let flood_time = started.elapsed();

    server.wait_for_log(&format!("{slow_peer} is not reading"));
    for (client, (k, others, worst), who) in [
        (&mut talker, &talker_seen, "talker"),
        (&mut watcher, &watcher_seen, "watcher"),
    ] {
        assert_eq!(*k, sent, "{who} got {k} of {sent} lines");
        let left = others
            .iter()
            .filter(|l| unstamp(l) == Some(left_line))
            .count();
        assert!(
            others.len() == left && left <= 1,
            "{who}: unexpected lines {others:?}"
        );
        if left == 0 {
            client.expect_stamped(left_line);
        }
        eprintln!("{who}: longest wait for a line {worst:?}");
    }
    eprintln!("non-reader cut off after {sent} lines sent, in {flood_time:?}");

    // The rest chat on.
    watcher.send_line("still here");
    watcher.expect_stamped("watcher: still here");
    talker.expect_stamped("watcher: still here");
    talker.send_line("me too");
    talker.expect_stamped("talker: me too");
    watcher.expect_stamped("talker: me too");

    wait_reaped(&server, 2, slow_pid);
    drop(slow);
}

#[test]
fn a_client_cut_off_for_not_reading_is_told_why() {
    const MAX_LINES: usize = 20_000;
    let server = Server::start_with(&["--max-backlog-bytes", "40000"]);
    let [mut talker, mut slow] = server.login_all(["talker", "slow"]);
    // `slow` reads nothing until it is gone from the room. The talker waits
    // for each of its lines to come back, so only the non-reader falls
    // behind.
    let payload = "y".repeat(394);
    let line_of = |k: usize| format!("{k:05} {payload}");
    let mut sent = 0;
    loop {
        assert!(sent < MAX_LINES, "slow was not cut off after {sent} lines");
        talker.send_line(&line_of(sent));
        let expected = format!("talker: {}", line_of(sent));
        sent += 1;
        let line = talker.read_line();
        if unstamp(&line) == Some("* slow has left the chat.") {
            break;
        }
        assert_eq!(unstamp(&line), Some(expected.as_str()));
    }
    // What reaches `slow` now: the lines that fit in the kernel's buffers,
    // in order, then one line saying why it was cut off, and the close.
    let mut k = 0;
    loop {
        let line = slow.read_line();
        if line == "Disconnected: you are not reading fast enough." {
            break;
        }
        assert_eq!(
            unstamp(&line),
            Some(format!("talker: {}", line_of(k)).as_str())
        );
        k += 1;
    }
    slow.expect_closed();
    assert!(k < sent, "{k} of {sent} lines reached slow");
    eprintln!("slow got {k} of {sent} lines before the cut");
}

#[test]
fn a_stopped_child_is_dropped_by_the_hub_and_does_not_come_back() {
    const MAX_LINES: usize = 50_000;
    let server = Server::start_with(&["--stall-timeout", "2"]);
    let [mut talker, mut slow] = server.login_all(["talker", "slow"]);
    let slow_pid = child_pid_of(&server, &slow);
    // A stopped child reads nothing from the hub, so once the socket
    // between them is full it takes nothing for the stall timeout (while
    // its queue fills up, the hub stops reading the talker's lines).
    send_signal(slow_pid, libc::SIGSTOP);
    let payload = "z".repeat(100);
    let mut sent = 0;
    loop {
        assert!(
            sent < MAX_LINES,
            "the stopped child was not dropped after {sent} lines"
        );
        talker.send_line(&payload);
        sent += 1;
        let line = talker.read_line();
        if unstamp(&line) == Some("* slow has left the chat.") {
            // It came in place of the echo of the last line, still due.
            talker.expect_stamped(&format!("talker: {payload}"));
            break;
        }
        assert_eq!(unstamp(&line), Some(format!("talker: {payload}").as_str()));
    }
    send_signal(slow_pid, libc::SIGCONT);
    // Woken, the child passes on what it had and then learns it was
    // dropped: it tells its client why and does not rejoin.
    let mut rest = slow.read_until(|l| l == "Disconnected: you are not reading fast enough.");
    rest.pop();
    assert!(
        rest.iter()
            .all(|l| unstamp(l) == Some(format!("talker: {payload}").as_str())),
        "{:?}",
        rest.iter()
            .filter(|l| !l.contains(&payload))
            .collect::<Vec<_>>()
    );
    slow.expect_closed();
    talker.send_line("/users");
    talker.expect("Users in chat: talker");
    wait_reaped(&server, 1, slow_pid);
}

// ---------------------------------------------------------------------------
// 12. No leaks.
// ---------------------------------------------------------------------------

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the fd table")
        .count()
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Connects, logs in as `nick`, says one line, sees it, and quits.
fn visit(server: &Server, nick: &str) {
    let mut c = server.login(nick);
    c.send_line("hello");
    c.expect_stamped(&format!("{nick}: hello"));
    c.send_line("/quit");
    c.expect(&format!("Bye, {nick}."));
    c.expect_closed();
}

#[test]
fn two_thousand_visits_leak_no_memory_fd_or_process() {
    // scripts/soak.sh runs the same with 10,000 visits, through
    // MPCHAT_SOAK_VISITS (hundreds).
    const WARM_UP: usize = 100;
    let visits_wanted = std::env::var("MPCHAT_SOAK_VISITS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(2000);
    let total = visits_wanted.max(2 * WARM_UP) / 100 * 100;
    let server = Server::start();
    // Someone is always there, so the room's join and leave lines flow;
    // the host reads them after each hundred visits, so it never falls
    // behind.
    let mut host = server.login("host");
    let mut visits = |range: std::ops::Range<usize>| {
        for i in range.clone() {
            visit(&server, &format!("v{i}"));
        }
        for i in range {
            host.expect_stamped(&format!("* v{i} has joined the chat."));
            host.expect_stamped(&format!("v{i}: hello"));
            host.expect_stamped(&format!("* v{i} has left the chat."));
        }
    };
    let hub = the_hub(&server);
    visits(0..WARM_UP);
    wait_for_clients(&server, 1);
    let (parent_fds, hub_fds, hub_rss) = (open_fds(server.pid()), open_fds(hub), rss_kib(hub));
    for start in (WARM_UP..total).step_by(100) {
        visits(start..start + 100);
    }
    // Every visitor's child is gone and reaped, and the fd tables are as
    // they were.
    wait_for_clients(&server, 1);
    wait_until(
        "the parent's and the hub's fds back where they were",
        || open_fds(server.pid()) == parent_fds && open_fds(hub) == hub_fds,
    );
    let grown = rss_kib(hub).saturating_sub(hub_rss);
    assert!(
        grown <= 1024,
        "the hub grew by {grown} KiB over {total} visits"
    );
    eprintln!("hub RSS {hub_rss} KiB after {WARM_UP} visits, +{grown} KiB after {total}");
    host.send_line("/users");
    host.expect("Users in chat: host");
}

// ---------------------------------------------------------------------------
// 13. Children killed while the others chat.
// ---------------------------------------------------------------------------

/// The text of `client`'s next lines up to `n` of them, without stamps.
fn next_texts(client: &mut Client, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let line = client.read_line();
            unstamp(&line).unwrap_or(&line).to_string()
        })
        .collect()
}

#[test]
fn killing_children_drops_nobody_else_and_frees_their_names() {
    // Twenty users; each round 10% of their children are killed with
    // SIGKILL, the rest must see them leave, their names are taken again at
    // once, and the room chats on. scripts/soak.sh runs 60 rounds, one a
    // second (MPCHAT_KILL_ROUNDS, MPCHAT_KILL_PACE_MS).
    const USERS: usize = 20;
    const VICTIMS: usize = 2;
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = env("MPCHAT_KILL_ROUNDS", 5);
    let pace = Duration::from_millis(env("MPCHAT_KILL_PACE_MS", 0));
    let server = Server::start();
    let mut users: Vec<(String, Client)> = Vec::new();
    let join = |users: &mut Vec<(String, Client)>, nick: String| {
        let client = server.login(&nick);
        let joined = format!("* {nick} has joined the chat.");
        for (_, other) in users.iter_mut() {
            other.expect_stamped(&joined);
        }
        users.push((nick, client));
    };
    for i in 0..USERS {
        join(&mut users, format!("u{i}"));
    }
    let mut slowest = Duration::ZERO;
    for round in 0..rounds {
        let round_start = Instant::now();
        // Never the owner, so that what everyone hears is just the leaves
        // (the hand-over has its own tests).
        let victims: Vec<(String, Client)> = users.drain(1..=VICTIMS).collect();
        let pids: Vec<i32> = victims
            .iter()
            .map(|(_, c)| child_pid_of(&server, c))
            .collect();
        let killed = Instant::now();
        for &pid in &pids {
            send_signal(pid, libc::SIGKILL);
        }
        // Every survivor hears each victim leave.
        for (nick, client) in users.iter_mut() {
            let mut heard = next_texts(client, VICTIMS);
            heard.sort();
            let mut expected: Vec<String> = victims
                .iter()
                .map(|(v, _)| format!("* {v} has left the chat."))
                .collect();
            expected.sort();
            assert_eq!(heard, expected, "{nick} in round {round}");
        }
        slowest = slowest.max(killed.elapsed());
        // Their names are free again.
        for (nick, _) in &victims {
            join(&mut users, nick.clone());
        }
        // And the room chats on, everyone still in it.
        let text = format!("round {round} done");
        users[0].1.send_line(&text);
        let line = format!("{}: {text}", users[0].0);
        for (_, client) in users.iter_mut() {
            client.expect_stamped(&line);
        }
        if let Some(rest) = pace.checked_sub(round_start.elapsed()) {
            thread::sleep(rest);
        }
    }
    wait_for_clients(&server, USERS);
    eprintln!("{rounds} rounds; every leave was heard within {slowest:?} of the kill");
}

// ---------------------------------------------------------------------------
// 14. Out of file descriptors.
// ---------------------------------------------------------------------------

/// CPU time (user + system) of `pid` so far, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = mpchat::procfs::read(pid).expect("stat");
    stat.utime + stat.stime
}

#[test]
fn out_of_fds_the_parent_backs_off_and_keeps_serving() {
    // Every client at the nickname prompt holds one of the parent's fds
    // (its login pipe), so with few fds allowed the parent soon has none
    // left to accept with or to make a pipe.
    const MAX_TRIES: usize = 64;
    let server = Server::start_with_fd_limit(24, &["--max-unregistered", "1000"]);
    let mut at_prompt = Vec::new();
    let stuck = loop {
        assert!(
            at_prompt.len() < MAX_TRIES,
            "the parent never ran out of fds"
        );
        let mut c = server.connect();
        c.stream().set_nonblocking(true).unwrap();
        let mut first = [0u8; 1];
        let mut has_bytes = false;
        wait_until("a first line, or the parent out of fds", || {
            has_bytes = matches!(c.stream().peek(&mut first), Ok(n) if n > 0);
            has_bytes || server.log_text().contains("Too many open files")
        });
        c.stream().set_nonblocking(false).unwrap();
        if !has_bytes {
            // Left waiting in the listen queue.
            break c;
        }
        let line = c.read_line();
        if line != WELCOME {
            assert_eq!(line, "Server is busy, try again later.");
            break c;
        }
        at_prompt.push(c);
    };
    server.wait_for_log("Too many open files");
    // Waiting for fds, the parent does not spin.
    let before = cpu_ticks(server.pid());
    thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(server.pid()) - before;
    assert!(
        spent < 30,
        "the parent used {spent} ticks of CPU in a second"
    );
    drop(stuck);
    // Clients that log in give their login pipe back, and the server
    // takes newcomers again; it never stopped serving the others.
    for (i, c) in at_prompt.iter_mut().take(4).enumerate() {
        c.send_line(&format!("user{i}"));
        c.expect(&format!("Hello, user{i}! Type /help for commands."));
    }
    let mut late = None;
    wait_until("a new connection to be served again", || {
        let c = server.connect();
        c.stream()
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut first = [0u8; 7];
        let served = matches!(c.stream().peek(&mut first), Ok(7) if &first == b"Welcome");
        if served {
            late = Some(c);
        }
        served
    });
    let mut late = late.expect("served");
    late.expect(WELCOME);
    late.send_line("late");
    late.expect("Hello, late! Type /help for commands.");
    assert!(alive(server.pid()), "the parent exited");
}
