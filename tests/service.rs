//! Running mpchat as a service: giving up root with `--user`, and one
//! clear line for a user that does not exist. Against the real binary.

mod common;
use common::*;

use std::process::{Command, Stdio};
use std::time::Instant;

/// The real and effective uid of `pid` (the first two of its Uid line).
fn uids(pid: i32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid line");
    let ids: Vec<u32> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    (ids[0], ids[1])
}

fn running_as_root() -> bool {
    uids(std::process::id() as i32).1 == 0
}

#[test]
fn started_as_root_with_user_every_process_serves_as_that_user() {
    if !running_as_root() {
        eprintln!("skipped: only root can switch users");
        return;
    }
    let server = Server::start_with(&["--user", "nobody"]);
    server.wait_for_log("running as user nobody (uid 65534, gid 65534)");
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    alice.send_line("hi");
    alice.expect_stamped("alice: hi");
    bob.expect_stamped("alice: hi");
    let procs = server.processes();
    assert_eq!(procs.len(), 4, "parent, hub and two children: {procs:?}");
    for p in &procs {
        assert_eq!(uids(p.pid), (65534, 65534), "{} ({})", p.comm, p.pid);
    }
    assert!(!server.log_text().contains("running as root"));
}

#[test]
fn started_as_root_without_user_it_warns() {
    if !running_as_root() {
        eprintln!("skipped: the warning is for root only");
        return;
    }
    let server = Server::start();
    server.wait_for_log("running as root: every client is served by a root process");
}

#[test]
fn an_unknown_user_is_one_line_and_exit_status_1() {
    let mut child = Command::new(binary())
        .args(["--bind", "127.0.0.1", "--user", "no-such-user-xyz", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mpchat");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("mpchat did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr, "mpchat: no user named 'no-such-user-xyz'\n");
}
