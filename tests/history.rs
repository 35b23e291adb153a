//! The chat history: replay on joining, `/history`, segments on disk,
//! restarts of the hub and of the whole server, torn lines, SIGHUP.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    Client, Server, entries, expect_replay, field, login_with_replay, segments, send_signal,
    unstamp, wait_until,
};

/// Starts a server with the replay on (the harness turns it off), at its
/// default of 20 lines unless `options` say otherwise.
fn start(options: &[&str]) -> Server {
    let mut args: Vec<&str> = vec!["--history-lines", "20"];
    args.extend_from_slice(options);
    Server::start_with(&args)
}

#[test]
fn a_user_who_joins_first_sees_the_last_lines_marked_as_history() {
    let server = start(&["--history-lines", "3"]);
    let mut alice = server.login("alice");
    for text in ["one", "two", "three", "four"] {
        alice.send_line(text);
        alice.expect_stamped(&format!("alice: {text}"));
    }
    alice.send_line("/me waves");
    alice.expect_stamped("* alice waves");
    let mut bob = login_with_replay(
        &server,
        "bob",
        &["alice: three", "alice: four", "* alice waves"],
    );
    alice.expect_stamped("* bob has joined the chat.");
    bob.send_line("hi");
    for c in [&mut alice, &mut bob] {
        c.expect_stamped("bob: hi");
    }
}

#[test]
fn the_first_user_of_a_new_server_sees_no_history_markers() {
    let server = start(&[]);
    let _alice = login_with_replay(&server, "alice", &[]);
}

#[test]
fn history_lines_zero_turns_the_replay_off() {
    let server = Server::start_with(&["--history-lines", "0"]);
    let mut alice = server.login("alice");
    alice.send_line("hello");
    alice.expect_stamped("alice: hello");
    // Server::login asserts the welcome comes first.
    let _bob = server.login("bob");
}

#[test]
fn history_command_shows_more_and_explains_bad_input() {
    let server = start(&["--history-lines", "2"]);
    let mut alice = server.login("alice");
    let mut bob = login_with_replay(&server, "bob", &["* alice has joined the chat."]);
    alice.expect_stamped("* bob has joined the chat.");
    for i in 0..5 {
        alice.send_line(&format!("line {i}"));
        alice.expect_stamped(&format!("alice: line {i}"));
        bob.expect_stamped(&format!("alice: line {i}"));
    }
    // Whispers are private: never in the history.
    alice.send_line("/whisper bob secret");
    alice.expect_stamped("[Whisper to bob] secret");
    bob.expect_stamped("[Whisper from alice] secret");
    bob.send_line("/history 4");
    expect_replay(
        &mut bob,
        &[
            "alice: line 1",
            "alice: line 2",
            "alice: line 3",
            "alice: line 4",
        ],
    );
    // More than there is: all of it.
    bob.send_line("/history 200");
    let mut all = vec!["* alice has joined the chat.", "* bob has joined the chat."];
    let lines: Vec<String> = (0..5).map(|i| format!("alice: line {i}")).collect();
    all.extend(lines.iter().map(String::as_str));
    expect_replay(&mut bob, &all);
    bob.send_line("/history");
    expect_replay(&mut bob, &all);
    for bad in ["/history 0", "/history 201", "/history lots"] {
        bob.send_line(bad);
        bob.expect("Usage: /history [N] (N from 1 to 200)");
    }
    // Only bob saw any of that.
    alice.send_line("still here");
    alice.expect_stamped("alice: still here");
}

#[test]
fn every_public_line_is_stored_with_time_kind_and_nickname() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    alice.send_line("hello");
    alice.send_line("/me waves");
    alice.send_line("/whisper bob psst");
    alice.send_line("/schedule +1 later");
    alice.send_line("/nick alicia");
    alice.send_line("/kick bob");
    bob.read_until(|l| l == "You have been kicked from the chat.");
    alice.read_until(|l| l.ends_with("[Scheduled by alice] later"));
    drop(alice);
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    wait_until("the leave in the history", || {
        entries(&server.data_dir())
            .iter()
            .any(|e| field(e, "kind") == "leave")
    });
    let stored: Vec<(String, String, String)> = entries(&server.data_dir())
        .iter()
        .map(|e| {
            assert!(
                e["time_ms"]
                    .as_u64()
                    .is_some_and(|t| t <= before + 60_000 && t > before - 60_000)
            );
            (
                field(e, "kind").to_string(),
                field(e, "nick").to_string(),
                field(e, "text").to_string(),
            )
        })
        .collect();
    let expected = [
        ("join", "alice", ""),
        ("join", "bob", ""),
        ("chat", "alice", "hello"),
        ("me", "alice", "waves"),
        ("rename", "alice", "alicia"),
        ("kick", "bob", "alicia"),
        ("scheduled", "alice", "later"),
        ("leave", "alicia", ""),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(k, n, t)| (k.to_string(), n.to_string(), t.to_string()))
        .collect();
    assert_eq!(stored, expected);
    assert!(
        !std::fs::read_to_string(&segments(&server.data_dir())[0])
            .unwrap()
            .contains("psst")
    );
}

#[test]
fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let server = start(&[]);
    let _alice = server.login("alice");
    let mode = std::fs::metadata(server.data_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    for file in segments(&server.data_dir()) {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
}

#[test]
fn a_restart_of_the_whole_server_shows_the_last_conversation() {
    let first = Server::start();
    let workdir = first.workdir();
    let [mut alice, mut bob] = first.login_all(["alice", "bob"]);
    alice.send_line("see you tomorrow");
    bob.expect_stamped("alice: see you tomorrow");
    bob.send_line("/schedule +3600 an hour on");
    let confirmation = bob.read_line();
    assert!(
        confirmation.starts_with("Message scheduled for "),
        "{confirmation}"
    );
    drop(alice);
    bob.expect_stamped("* alice has left the chat.");
    bob.expect_stamped("* bob is now the room owner.");
    // Bob is still here when the server stops.
    drop(first);
    drop(bob);

    let again = Server::start_in(workdir, &["--history-lines", "20"]);
    let mut carol = login_with_replay(
        &again,
        "carol",
        &[
            "* alice has joined the chat.",
            "* bob has joined the chat.",
            "alice: see you tomorrow",
            "* alice has left the chat.",
            "* bob is now the room owner.",
        ],
    );
    // The schedule is in the data directory too: bob's message is still
    // waiting (under bob's name, for whoever is here when it is due).
    carol.send_line("/history 1");
    expect_replay(&mut carol, &["* carol has joined the chat."]);
    assert!(
        std::fs::read_to_string(again.data_dir().join("schedule.json"))
            .unwrap()
            .contains("an hour on")
    );
}

#[test]
fn lines_from_an_earlier_day_show_their_date() {
    let workdir = common::Workdir::new();
    let data = workdir.path().join("mpchat-data");
    std::fs::create_dir(&data).unwrap();
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
    let ms = two_days_ago.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    std::fs::write(
        data.join("history-000001.jsonl"),
        format!("{{\"time_ms\":{ms},\"kind\":\"chat\",\"nick\":\"bob\",\"text\":\"see you\"}}\n"),
    )
    .unwrap();
    // The same local time, as date(1) prints it, in the server's zone.
    let output = std::process::Command::new("date")
        .arg("-d")
        .arg(format!("@{}", ms / 1000))
        .arg("+%Y-%m-%d %H:%M")
        .output()
        .expect("run date");
    let when = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let server = Server::start_in(workdir, &["--history-lines", "5"]);
    let mut alice = server.connect();
    alice.expect("Welcome to mpchat! Enter your nickname:");
    alice.send_line("alice");
    alice.expect("--- last message ---");
    alice.expect(&format!("[{when}] bob: see you"));
    alice.expect("--- end of history ---");
    alice.expect("Hello, alice! Type /help for commands.");
}

#[test]
fn segments_rotate_at_their_size_and_only_the_newest_are_kept() {
    let server = start(&["--history-segment-bytes", "400", "--history-keep", "3"]);
    let mut alice = server.login("alice");
    for i in 0..40 {
        alice.send_line(&format!("message number {i:02}"));
        alice.expect_stamped(&format!("alice: message number {i:02}"));
    }
    let files = segments(&server.data_dir());
    assert_eq!(files.len(), 3, "{files:?}");
    for file in &files[..2] {
        let size = std::fs::metadata(file).unwrap().len();
        assert!(
            size <= 400 && size > 300,
            "{}: {size} bytes",
            file.display()
        );
    }
    // The newest lines are all there, in order, and nothing is damaged.
    let texts: Vec<String> = entries(&server.data_dir())
        .iter()
        .map(|e| field(e, "text").to_string())
        .collect();
    assert_eq!(texts.last().map(String::as_str), Some("message number 39"));
    let numbers: Vec<&str> = texts.iter().map(|t| &t[t.len() - 2..]).collect();
    let mut sorted = numbers.clone();
    sorted.sort();
    assert_eq!(numbers, sorted);
    server.wait_for_log("history: deleted");
}

#[test]
fn a_torn_last_line_is_cut_off_at_the_next_start_and_nothing_else_is_lost() {
    let first = start(&["--fsync", "always"]);
    let workdir = first.workdir();
    let mut alice = first.login("alice");
    alice.send_line("before the crash");
    alice.expect_stamped("alice: before the crash");
    // A power cut in the middle of a write: every process dies at once,
    // and half a line is left at the end of the segment.
    send_signal(-first.pid(), libc::SIGKILL);
    drop(alice);
    let data = first.data_dir();
    drop_without_cleanup(first);
    let segment = segments(&data).pop().expect("a segment");
    let whole = std::fs::read_to_string(&segment).unwrap();
    let mut torn = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    let half = br#"{"time_ms":17,"kind":"chat","nick":"al"#;
    std::io::Write::write_all(&mut torn, half).unwrap();
    drop(torn);

    let again = Server::start_in(workdir, &["--history-lines", "20"]);
    again.wait_for_log(&format!("cut off a torn last line ({} bytes)", half.len()));
    let mut bob = login_with_replay(
        &again,
        "bob",
        &["* alice has joined the chat.", "alice: before the crash"],
    );
    bob.send_line("after");
    bob.expect_stamped("bob: after");
    let now = std::fs::read_to_string(&segment).unwrap();
    assert!(now.starts_with(&whole), "earlier lines changed");
    assert!(
        entries(&again.data_dir())
            .iter()
            .any(|e| field(e, "text") == "after")
    );
}

/// Drops a server whose processes are already dead (the group was
/// killed), leaving its working directory for the next one. What the dead
/// server could not clean up itself is removed here.
fn drop_without_cleanup(server: Server) {
    wait_until("every process of the killed server gone", || {
        server.processes().iter().all(|p| p.state == 'Z')
    });
    let hub_socket = server.logged_path("hub socket");
    let _ = std::fs::remove_file(&hub_socket);
    let _ = std::fs::remove_dir(hub_socket.parent().unwrap());
    let _ = std::fs::remove_file(server.logged_path("admin socket"));
    drop(server);
}

#[test]
fn sighup_reopens_the_segment_after_it_was_moved_away() {
    let server = start(&[]);
    let mut alice = server.login("alice");
    alice.send_line("into the old file");
    alice.expect_stamped("alice: into the old file");
    let segment = segments(&server.data_dir()).pop().unwrap();
    let moved = segment.with_extension("jsonl.1");
    std::fs::rename(&segment, &moved).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_for_log("history: reopened");
    alice.send_line("into the new file");
    alice.expect_stamped("alice: into the new file");
    wait_until("the new segment", || segment.exists());
    assert!(
        std::fs::read_to_string(&moved)
            .unwrap()
            .contains("into the old file")
    );
    let new = std::fs::read_to_string(&segment).unwrap();
    assert!(
        new.contains("into the new file") && !new.contains("old file"),
        "{new}"
    );
    // SIGHUP stopped nobody.
    assert_eq!(server.processes().len(), 3, "{:?}", server.processes());
}

/// Heavy traffic from several users while the hub is killed: every line
/// anyone received is in the history, every stored line is whole, each
/// user's lines are stored in the order sent, and the new hub carries on
/// writing.
#[test]
fn killing_the_hub_under_heavy_traffic_damages_no_line() {
    const SENDERS: usize = 4;
    const MAX_LINES: usize = 200_000;
    let server = start(&["--history-lines", "0", "--max-backlog-bytes", "0"]);
    let mut watcher = server.login("watcher");
    let stop = Arc::new(AtomicBool::new(false));
    // Each sender's thread gives back its client and how many lines it
    // sent.
    // Everyone logs in before the traffic starts: a login behind traffic
    // that nobody reads may wait for the hub's queues.
    let clients: Vec<Client> = (0..SENDERS)
        .map(|s| server.login(&format!("s{s}")))
        .collect();
    let senders: Vec<std::thread::JoinHandle<(Client, usize)>> = clients
        .into_iter()
        .map(|mut client| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                // Bursts of 50 lines, 5 ms apart, until told to stop:
                // traffic that goes on through the hub's death. (Paced, so
                // that MAX_LINES lasts at least 20 s on a busy machine,
                // where a new hub may take seconds to read the history
                // the traffic wrote.)
                let mut sent = 0;
                while sent < MAX_LINES && !stop.load(Ordering::Relaxed) {
                    let burst: String = (sent..sent + 50).map(|i| format!("line {i}\n")).collect();
                    client.send_bytes(burst.as_bytes());
                    sent += 50;
                    std::thread::sleep(Duration::from_millis(5));
                }
                (client, sent)
            })
        })
        .collect();
    // Once the traffic is flowing, kill the hub in the middle of it.
    let mut seen = Vec::new();
    while seen.len() < 500 {
        seen.push(watcher.read_line());
    }
    let hub = server
        .processes()
        .into_iter()
        .find(|p| p.comm == "mpchat-hub")
        .expect("a hub");
    send_signal(hub.pid, libc::SIGKILL);
    wait_until("a new hub", || {
        server
            .processes()
            .iter()
            .any(|p| p.comm == "mpchat-hub" && p.pid != hub.pid)
    });
    stop.store(true, Ordering::Relaxed);
    let senders: Vec<(Client, usize)> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    // The traffic was still flowing when the new hub was up.
    assert!(
        senders.iter().all(|(_, sent)| *sent < MAX_LINES),
        "a sender ran out of lines before the hub was killed"
    );
    let mut late = server.login("late");
    late.send_line("after the restart");
    late.read_until(|l| l.ends_with("late: after the restart"));
    seen.extend(watcher.read_until(|l| l.ends_with("late: after the restart")));

    let stored = entries(&server.data_dir());
    let texts: HashSet<String> = stored
        .iter()
        .map(|e| format!("{}: {}", field(e, "nick"), field(e, "text")))
        .collect();
    let delivered: Vec<&str> = seen
        .iter()
        .filter_map(|l| unstamp(l))
        .filter(|rest| !rest.starts_with('*'))
        .collect();
    assert!(delivered.len() > 500, "{} lines delivered", delivered.len());
    for rest in delivered {
        assert!(
            texts.contains(rest),
            "{rest:?} was delivered but not stored"
        );
    }
    for s in 0..SENDERS {
        let numbers: Vec<usize> = stored
            .iter()
            .filter(|e| field(e, "nick") == format!("s{s}") && field(e, "kind") == "chat")
            .map(|e| field(e, "text")["line ".len()..].parse().unwrap())
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "s{s}'s lines stored out of order"
        );
    }
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// `None` where mounting is not allowed (not root, or in a container
    /// without the privilege).
    fn mount(path: PathBuf, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir(&path).ok()?;
        let mut mount = std::process::Command::new("mount");
        mount.args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ]);
        mount.arg(&path);
        let ran = common::run_command(mount, common::DEADLINE)?;
        ran.status.success().then_some(SmallDisk { path })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a process of a failed test may still hold a file open.
        let mut umount = std::process::Command::new("umount");
        umount.arg("-l").arg(&self.path);
        let _ = common::run_command(umount, common::DEADLINE);
    }
}

#[test]
fn a_full_disk_stops_no_chat_and_loses_no_line() {
    let workdir = common::Workdir::new();
    let Some(disk) = SmallDisk::mount(workdir.path().join("small"), "256k") else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    let data = disk.path.join("data");
    let server = start(&["--data-dir", data.to_str().unwrap()]);
    let mut alice = server.login("alice");
    alice.send_line("before");
    alice.expect_stamped("alice: before");
    // Fill the disk to the last byte.
    let filler = disk.path.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![b'x'; 4096];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    drop(file);
    // More than the rest of the segment's last page (tmpfs allocates by
    // the page) can hold.
    let padding = "x".repeat(100);
    for i in 0..100 {
        alice.send_line(&format!("while full {i} {padding}"));
        alice.expect_stamped(&format!("alice: while full {i} {padding}"));
    }
    server.wait_for_log("history: cannot write");
    // Room again: what waited is written, whole, in order.
    std::fs::remove_file(&filler).unwrap();
    alice.send_line("after");
    alice.expect_stamped("alice: after");
    wait_until("the last line in the history", || {
        entries(&data).iter().any(|e| field(e, "text") == "after")
    });
    let texts: Vec<String> = entries(&data)
        .iter()
        .filter(|e| field(e, "kind") == "chat")
        .map(|e| field(e, "text").to_string())
        .collect();
    let mut expected = vec!["before".to_string()];
    expected.extend((0..100).map(|i| format!("while full {i} {padding}")));
    expected.push("after".to_string());
    assert_eq!(texts, expected);
    drop(alice);
    drop(server);
}

/// Every public line is numbered in the files, and the numbers only grow,
/// also across a killed hub and a restart of the whole server.
#[test]
fn public_lines_are_numbered_on_across_a_new_hub_and_a_restart() {
    let first = start(&[]);
    let workdir = first.workdir();
    let mut alice = first.login("alice");
    alice.send_line("one");
    alice.expect_stamped("alice: one");
    first.kill_hub_and_wait_for_new();
    wait_until("alice back with a new hub", || {
        first.log_text().matches("rejoined").count() >= 1
    });
    alice.send_line("two");
    alice.expect_stamped("alice: two");
    drop(alice);
    drop(first);

    let again = Server::start_in(workdir, &["--history-lines", "0"]);
    let mut bob = again.login("bob");
    bob.send_line("three");
    bob.expect_stamped("bob: three");
    drop(bob);
    wait_until("bob's leaving written", || {
        entries(&again.data_dir())
            .iter()
            .any(|e| field(e, "kind") == "leave" && field(e, "nick") == "bob")
    });
    let stored = entries(&again.data_dir());
    let seqs: Vec<u64> = stored
        .iter()
        .map(|e| e["seq"].as_u64().unwrap_or(0))
        .collect();
    let texts: Vec<&str> = stored.iter().map(|e| field(e, "text")).collect();
    for text in ["one", "two", "three"] {
        assert!(texts.contains(&text), "{text} not stored: {texts:?}");
    }
    assert!(seqs[0] >= 1, "{seqs:?}");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "numbers not growing: {seqs:?}"
    );
}
