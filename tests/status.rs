//! `mpchat status`: the report a running server gives through its admin
//! socket, as JSON and as text.

mod common;

use std::process::Command;

use common::{DEADLINE, Server, binary, run_command, send_signal, wait_until};
use serde_json::Value;

/// Runs `mpchat status --port PORT` with `extra` options; returns the exit
/// code, stdout and stderr.
fn run_status(port: u16, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut command = Command::new(binary());
    command
        .args(["status", "--port", &port.to_string()])
        .args(extra);
    let ran = run_command(command, DEADLINE).expect("run mpchat status");
    (ran.status.code(), ran.stdout, ran.stderr)
}

fn report(server: &Server) -> Value {
    let (code, stdout, stderr) = run_status(server.port(), &["--json"]);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn u64_at(value: &Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {value}"))
}

/// The pid of the process whose title is `title`, among the server's.
fn pid_titled(server: &Server, title: &str) -> u64 {
    let mut found = None;
    wait_until(&format!("a process titled {title:?}"), || {
        found = server.processes().into_iter().find(|p| {
            let raw = std::fs::read(format!("/proc/{}/cmdline", p.pid)).unwrap_or_default();
            String::from_utf8_lossy(&raw).trim_end_matches('\0') == title
        });
        found.is_some()
    });
    found.expect("found").pid as u64
}

#[test]
fn status_lists_users_totals_and_the_memory_of_every_process() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    let at_prompt = server.connect();
    for text in ["one", "two", "three"] {
        alice.send_line(text);
        alice.expect_stamped(&format!("alice: {text}"));
        bob.expect_stamped(&format!("alice: {text}"));
    }
    let alice_addr = alice.stream().local_addr().unwrap().to_string();
    let bob_addr = bob.stream().local_addr().unwrap().to_string();
    let login_addr = at_prompt.stream().local_addr().unwrap().to_string();
    let alice_pid = pid_titled(&server, &format!("mpchat: alice {alice_addr}"));
    let login_pid = pid_titled(&server, &format!("mpchat: login {login_addr}"));

    // alice typed her nickname and three lines, and was sent the welcome,
    // her greeting, two joins and her three lines. Her child counts a line
    // out just after writing it, so she may have read it a moment before.
    let mut r = Value::Null;
    wait_until("alice's seven lines out counted", || {
        r = report(&server);
        r.pointer("/users/0/lines_out").and_then(Value::as_u64) == Some(7)
    });
    assert_eq!(r["address"], server.addr.to_string());
    assert_eq!(u64_at(&r, "/server_pid"), server.pid() as u64);
    assert!(u64_at(&r, "/uptime_secs") < 60);
    let users = r["users"].as_array().unwrap();
    let nicks: Vec<&str> = users.iter().map(|u| u["nick"].as_str().unwrap()).collect();
    assert_eq!(nicks, ["alice", "bob"]);
    assert_eq!(users[0]["address"], alice_addr.as_str());
    assert_eq!(users[1]["address"], bob_addr.as_str());
    assert_eq!(u64_at(&users[0], "/pid"), alice_pid);
    assert_eq!(u64_at(&users[0], "/lines_in"), 4);
    assert_eq!(u64_at(&users[0], "/lines_out"), 7);
    assert_eq!(u64_at(&users[0], "/backlog"), 0);
    assert!(u64_at(&users[0], "/connected_ms") >= u64_at(&r, "/started_ms"));

    assert_eq!(u64_at(&r, "/totals/connections"), 3);
    assert_eq!(u64_at(&r, "/totals/messages"), 3);
    assert_eq!(u64_at(&r, "/totals/hub_restarts"), 0);

    let processes = r["processes"].as_array().unwrap();
    let roles: Vec<(&str, u64)> = processes
        .iter()
        .map(|p| (p["role"].as_str().unwrap(), u64_at(p, "/pid")))
        .collect();
    let hub = server
        .processes()
        .into_iter()
        .find(|p| p.comm == "mpchat-hub")
        .unwrap()
        .pid as u64;
    assert_eq!(roles[..2], [("parent", server.pid() as u64), ("hub", hub)]);
    assert!(roles.contains(&("alice", alice_pid)), "{roles:?}");
    assert!(roles.contains(&("login", login_pid)), "{roles:?}");
    assert_eq!(roles.len(), 5, "{roles:?}");
    for p in processes {
        assert!(
            u64_at(p, "/rss_kib") > 0 && u64_at(p, "/pss_kib") > 0,
            "{p}"
        );
        assert!(u64_at(p, "/pss_kib") <= u64_at(p, "/rss_kib"), "{p}");
    }

    // The same as text, for a person.
    let (code, text, _) = run_status(server.port(), &[]);
    assert_eq!(code, Some(0));
    assert!(text.starts_with(&format!("mpchat on {}, pid {}", server.addr, server.pid())));
    assert!(text.contains("users: 2"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().next() == Some("alice")
                && l.contains(&alice_addr)
                && l.contains(&alice_pid.to_string())),
        "{text}"
    );
    assert!(
        text.contains("totals: connections 3, messages 3, hub restarts 0"),
        "{text}"
    );
    assert!(text.contains("memory:"), "{text}");
}

#[test]
fn refusals_and_disconnects_are_counted_by_reason() {
    let server = Server::start_with(&[
        "--max-clients",
        "2",
        "--max-per-ip",
        "1",
        "--flood-rate",
        "1",
        "--flood-burst",
        "1",
    ]);
    let mut alice = server.login("alice");
    // A second connection from 127.0.0.1: over the per-address limit.
    let mut refused = server.connect();
    refused.expect("Too many connections from your address.");
    // From another loopback address: the second of two slots is free.
    let mut bob = common::Client::connect_from(server.addr, "127.0.0.2".parse().unwrap());
    bob.expect("Welcome to mpchat! Enter your nickname:");
    // A third address, but the server is full.
    let mut full = common::Client::connect_from(server.addr, "127.0.0.3".parse().unwrap());
    full.expect("Server is full, try again later.");
    // Flooding until disconnected.
    let burst: String = (0..200).map(|i| format!("flood {i}\n")).collect();
    alice.send_bytes(burst.as_bytes());
    alice.read_until(|l| l == "Disconnected: excess flood.");
    wait_until("the flood disconnect counted", || {
        u64_at(&report(&server), "/totals/flood_disconnects") == 1
    });
    let r = report(&server);
    assert_eq!(u64_at(&r, "/totals/refused/address"), 1, "{r}");
    assert_eq!(u64_at(&r, "/totals/refused/full"), 1, "{r}");
    assert_eq!(u64_at(&r, "/totals/refused/busy"), 0, "{r}");
    assert_eq!(u64_at(&r, "/totals/connections"), 2, "{r}");
}

#[test]
fn a_hub_restart_is_counted_and_the_users_are_still_listed() {
    let server = Server::start();
    let [_alice, _bob] = server.login_all(["alice", "bob"]);
    let hub = server
        .processes()
        .into_iter()
        .find(|p| p.comm == "mpchat-hub")
        .unwrap()
        .pid;
    send_signal(hub, libc::SIGKILL);
    wait_until("a new hub that knows both users again", || {
        let (code, stdout, _) = run_status(server.port(), &["--json"]);
        code == Some(0)
            && serde_json::from_str::<Value>(&stdout).is_ok_and(|r| {
                r["users"].as_array().is_some_and(|u| u.len() == 2)
                    && r["totals"]["hub_restarts"] == 1
            })
    });
}

#[test]
fn status_without_a_server_is_one_line_and_exit_status_1() {
    // A port nobody listens on: bind one, note it, let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, stdout, stderr) = run_status(port, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!("mpchat: no mpchat of this user is running on port {port}\n")
    );
}

#[test]
fn the_admin_socket_is_private_and_removed_at_shutdown() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut server = Server::start();
    let name = format!("{}.sock", server.port());
    let socket = server.logged_path("admin socket");
    assert!(socket.ends_with(&name), "{}", socket.display());
    let dir = socket.parent().unwrap();
    let dir_meta = std::fs::metadata(dir).unwrap();
    assert_eq!(dir_meta.permissions().mode() & 0o777, 0o700);
    assert_eq!(dir_meta.uid(), nix::unistd::getuid().as_raw());
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    server.signal(libc::SIGTERM);
    server.wait_exit();
    assert!(!socket.exists(), "{} left behind", socket.display());
}

#[test]
fn status_lists_the_rooms_and_the_hub_counts_them_in_its_title() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    alice.send_line("/join #Lab2");
    alice.expect_stamped("* alice has joined #Lab2.");
    alice.send_line("/topic soldering");
    alice.expect_stamped("* alice set the topic of #Lab2: soldering");
    bob.send_line("/join #lab2");
    bob.read_until(|l| l.ends_with("* bob has joined #Lab2."));
    let rooms = report(&server)["rooms"].clone();
    assert_eq!(
        rooms,
        serde_json::json!([
            {"name": "#Lab2", "users": 2, "owner": "alice", "topic": "soldering"},
            {"name": "#lobby", "users": 2, "owner": "alice", "topic": null},
        ]),
    );
    let (code, text, _) = run_status(server.port(), &[]);
    assert_eq!(code, Some(0));
    assert!(text.contains("\nrooms: 2\n"), "{text}");
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("#Lab2"))
        .unwrap_or_else(|| panic!("no #Lab2 row in {text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells, ["#Lab2", "2", "alice", "soldering"]);
    pid_titled(&server, "mpchat: hub, 2 users in 2 rooms");
}
