//! Running mpchat as a service: giving up root with `--user`, and one
//! clear line and exit status 1 for the common mistakes (no such user,
//! port in use, low port without root). Against the real binary.

mod common;
use common::*;

use std::process::Command;

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

/// Runs `mpchat` with `args` (as user `uid` if given) until it exits, and
/// returns its exit code and what it wrote to stderr; `None` if it could
/// not be started at all.
fn try_run_to_exit(args: &[&str], uid: Option<u32>) -> Option<(Option<i32>, String)> {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(binary());
    command.args(args);
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    run_command(command, DEADLINE).map(|ran| (ran.status.code(), ran.stderr))
}

fn run_to_exit(args: &[&str], uid: Option<u32>) -> (Option<i32>, String) {
    try_run_to_exit(args, uid).expect("start mpchat")
}

#[test]
fn an_unknown_user_is_one_line_and_exit_status_1() {
    let (code, stderr) = run_to_exit(
        &["--bind", "127.0.0.1", "--user", "no-such-user-xyz", "0"],
        None,
    );
    assert_eq!(code, Some(1));
    assert_eq!(stderr, "mpchat: no user named 'no-such-user-xyz'\n");
}

#[test]
fn a_port_in_use_is_one_line_and_exit_status_1() {
    let server = Server::start();
    let port = server.port().to_string();
    let (code, stderr) = run_to_exit(&["--bind", "127.0.0.1", &port], None);
    assert_eq!(code, Some(1));
    assert_eq!(stderr, format!("mpchat: port {port} is already in use\n"));
}

/// The build directory may be closed to other users (a private clone).
fn nobody_can_run_the_binary() -> bool {
    matches!(
        try_run_to_exit(&["--version"], Some(65534)),
        Some((Some(0), _))
    )
}

#[test]
fn a_low_port_without_root_is_one_line_and_exit_status_1() {
    let unprivileged_from: u32 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1024);
    if !running_as_root() || unprivileged_from <= 80 || !nobody_can_run_the_binary() {
        eprintln!(
            "skipped: needs root to run the binary as another user, and port 80 to be privileged"
        );
        return;
    }
    let (code, stderr) = run_to_exit(&["--bind", "127.0.0.1", "80"], Some(65534));
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        "mpchat: no permission to use port 80 (ports below 1024 need root)\n"
    );
}

#[test]
fn a_data_directory_in_use_by_another_server_is_one_line_and_exit_status_1() {
    let server = Server::start();
    let data = server.data_dir();
    let data_arg = data.to_str().expect("a UTF-8 path");
    let (code, stderr) = run_to_exit(&["--bind", "127.0.0.1", "--data-dir", data_arg, "0"], None);
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        format!(
            "mpchat: data directory {data_arg} is in use by another mpchat (pid {})\n",
            server.pid()
        )
    );
}

#[test]
fn a_data_directory_that_cannot_be_written_is_one_line_and_exit_status_1() {
    if !running_as_root() || !nobody_can_run_the_binary() {
        eprintln!("skipped: needs root to run the binary as another user");
        return;
    }
    // Root's private directory, which nobody may not enter.
    let workdir = common::Workdir::new();
    let closed = workdir.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let data = closed.join("mpchat-data");
    let data_arg = data.to_str().expect("a UTF-8 path");
    let (code, stderr) = run_to_exit(
        &["--bind", "127.0.0.1", "--data-dir", data_arg, "0"],
        Some(65534),
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        format!("mpchat: cannot use data directory {data_arg}: Permission denied (os error 13)\n")
    );
}

/// The options the systemd unit starts the server with are ones it takes.
#[test]
fn the_systemd_units_command_line_starts_the_server() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/mpchat.service"
    ))
    .expect("read the unit");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let workdir = common::Workdir::new();
    let data = workdir.path().join("data");
    let data = data.to_str().unwrap();
    // The unit's defaults: no extra options; port 0 stands for its 9999.
    let args: Vec<&str> = exec
        .split_whitespace()
        .skip(1)
        .filter(|w| *w != "$MPCHAT_OPTIONS")
        .map(|w| match w {
            "${MPCHAT_PORT}" => "0",
            "/var/lib/mpchat" => data,
            other => other,
        })
        .collect();
    assert_eq!(args.last(), Some(&"0"), "{exec}");
    let mut all = vec!["--bind", "127.0.0.1"];
    all.extend(args);
    let server = Server::spawn(&all);
    let _alice = server.login("alice");
    assert!(
        std::path::Path::new(data)
            .join("history-000001.jsonl")
            .exists()
    );
}
