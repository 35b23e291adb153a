//! Who is cut off when the room talks faster than someone reads: the
//! client that stopped, or the one that cannot keep up at all, and never
//! a client that is busy for a moment. Every test runs the real binary
//! with the admission and flood limits off, as a class demo or a load
//! test does, and sends as fast as the sockets take the lines.

mod common;
use common::*;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const CUT_OFF: &str = "Disconnected: you are not reading fast enough.";

/// The length of every burst line: about what a pasted paragraph is.
const LEN: usize = 500;

/// Line `k` of a burst, numbered so order can be checked.
fn line_of(k: usize) -> String {
    let head = format!("{k:05} ");
    format!("{head}{}", "x".repeat(LEN - head.len()))
}

/// A second handle on `client`'s socket for a thread that sends, whose
/// writes fail the test rather than wait forever for a server that
/// stopped reading.
fn sending_side(client: &Client) -> std::net::TcpStream {
    let out = client.stream().try_clone().expect("clone the socket");
    out.set_write_timeout(Some(DEADLINE))
        .expect("set a write timeout");
    out
}

/// What one reader saw of a burst from `sender`.
struct Seen {
    /// The number of the next burst line expected: each came in order
    /// and whole, or the test failed.
    lines: usize,
    /// When each of the other users' leave lines arrived, and the number
    /// of burst lines before it.
    left: Vec<(String, Instant, usize)>,
}

/// Reads `client`'s lines until it has seen the burst's lines up to
/// `end`, from line `first` on, checking that they come in order and
/// whole; any line that is neither a burst line nor someone's leave fails
/// the test (a reader cut off would see `CUT_OFF`).
fn read_burst(client: &mut Client, who: &str, sender: &str, first: usize, end: usize) -> Seen {
    let mut seen = Seen {
        lines: first,
        left: Vec::new(),
    };
    while seen.lines < end {
        let line = client.read_line();
        let text = unstamp(&line).unwrap_or_else(|| panic!("{who}: unexpected line {line:?}"));
        if let Some(burst) = text.strip_prefix(&format!("{sender}: ")) {
            assert_eq!(burst, line_of(seen.lines), "{who}: line {}", seen.lines);
            seen.lines += 1;
        } else if let Some(nick) = text
            .strip_prefix("* ")
            .and_then(|t| t.strip_suffix(" has left the chat."))
        {
            seen.left
                .push((nick.to_string(), Instant::now(), seen.lines));
        } else {
            panic!("{who}: unexpected line {line:?} after {} lines", seen.lines);
        }
    }
    seen
}

/// Reads what a client that was cut off gets when it reads again: a
/// prefix of the burst in order, then `CUT_OFF`, then the end. Returns how
/// many burst lines it got.
fn read_cut_off(client: &mut Client, sender: &str) -> usize {
    let mut k = 0;
    loop {
        let line = client.read_line();
        if line == CUT_OFF {
            break;
        }
        let expected = format!("{sender}: {}", line_of(k));
        assert_eq!(unstamp(&line), Some(expected.as_str()), "line {k}");
        k += 1;
    }
    client.expect_closed();
    k
}

/// The issue this file is for: alice pastes 16,000 lines of 500 bytes (8
/// MB) as fast as her socket takes them while she and bob read everything;
/// carol has stopped reading. Carol is cut off; alice and bob get every
/// line, in order, and nobody else is disconnected.
#[test]
fn a_burst_reaches_every_reader_and_cuts_off_only_the_one_that_stopped() {
    const LINES: usize = 16_000;
    const STALL: u64 = 5;
    let server = Server::start_with(&["--stall-timeout", &STALL.to_string()]);
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]);
    let carol_peer = carol.stream().local_addr().unwrap();
    let mut out = sending_side(&alice);
    let started = Instant::now();
    let (alice_saw, bob_saw, carol_got) = thread::scope(|s| {
        s.spawn(move || {
            let burst: String = (0..LINES).map(|k| line_of(k) + "\n").collect();
            out.write_all(burst.as_bytes()).expect("send the burst");
        });
        let a = s.spawn(|| read_burst(&mut alice, "alice", "alice", 0, LINES));
        let b = s.spawn(|| read_burst(&mut bob, "bob", "alice", 0, LINES));
        // Carol reads nothing until she has been cut off, and then reads
        // what she is still sent.
        let c = s.spawn(|| {
            server.wait_for_log(&format!("{carol_peer} is not reading"));
            read_cut_off(&mut carol, "alice")
        });
        (
            a.join().expect("alice's reader"),
            b.join().expect("bob's reader"),
            c.join().expect("carol's reader"),
        )
    });
    eprintln!(
        "16,000 lines reached alice and bob in {:?}",
        started.elapsed()
    );

    // Carol's leave reached both, once, within the stall timeout and a
    // second of the burst's start (the burst fills her backlog's hard
    // bound well before that).
    for (who, saw) in [("alice", &alice_saw), ("bob", &bob_saw)] {
        assert_eq!(saw.lines, LINES);
        let names: Vec<&str> = saw.left.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["carol"], "{who} saw these leave");
        let after = saw.left[0].1 - started;
        assert!(
            after <= Duration::from_secs(STALL + 1),
            "{who} saw carol leave only after {after:?}"
        );
    }
    eprintln!("carol got {carol_got} lines before the cut");
    assert!(carol_got < LINES);

    // Alice and bob chat on.
    bob.send_line("still here");
    for client in [&mut alice, &mut bob] {
        client.expect_stamped("bob: still here");
    }
    assert!(
        !server.log_text().contains("stopped reading"),
        "the hub dropped a child:\n{}",
        server.log_text()
    );
}

/// A client that takes nothing at all while lines wait for it is cut off
/// after the stall timeout, even when what waits is far below the hard
/// bound (turned off here), and not before.
#[test]
fn a_client_that_takes_nothing_is_cut_off_after_the_stall_timeout() {
    // 2 MB: more than the kernel buffers for a client that never reads.
    const LINES: usize = 4_000;
    const STALL: Duration = Duration::from_secs(2);
    let server = Server::start_with(&["--stall-timeout", "2", "--max-backlog-bytes", "0"]);
    let [mut alice, mut carol] = server.login_all(["alice", "carol"]);
    let carol_peer = carol.stream().local_addr().unwrap();
    let started = Instant::now();
    let mut out = sending_side(&alice);
    let saw = thread::scope(|s| {
        s.spawn(move || {
            let burst: String = (0..LINES).map(|k| line_of(k) + "\n").collect();
            out.write_all(burst.as_bytes()).expect("send the burst");
        });
        s.spawn(|| read_burst(&mut alice, "alice", "alice", 0, LINES))
            .join()
            .expect("alice's reader")
    });
    // Every line is back: whatever waits for carol waits from now at the
    // latest, so she must be gone within the timeout and a second.
    let burst_done = Instant::now();
    let left_at = match saw.left.first() {
        Some((nick, at, _)) => {
            assert_eq!(nick, "carol");
            *at
        }
        None => {
            alice.expect_stamped("* carol has left the chat.");
            Instant::now()
        }
    };
    assert!(
        left_at - started >= STALL,
        "carol was cut off after {:?}, before the stall timeout",
        left_at - started
    );
    assert!(
        left_at.saturating_duration_since(burst_done) <= STALL + Duration::from_secs(1),
        "carol was cut off {:?} after the burst",
        left_at.saturating_duration_since(burst_done)
    );
    server.wait_for_log(&format!(
        "{carol_peer} is not reading: nothing taken for 2 s"
    ));
    let got = read_cut_off(&mut carol, "alice");
    assert!(got < LINES, "carol got all {got} lines");
}

/// A reader slower than the room (4 KiB every 50 ms during a long burst)
/// keeps reading until more than the hard bound waits for it, and is then
/// told why; the others get everything.
#[test]
fn a_reader_slower_than_the_room_is_cut_off_at_the_hard_bound_and_told_why() {
    const MAX_LINES: usize = 40_000;
    const BOUND: usize = 1 << 20;
    let server = Server::start();
    let [mut alice, mut slow] = server.login_all(["alice", "slow"]);
    let slow_peer = slow.stream().local_addr().unwrap();
    let slow_gone = AtomicBool::new(false);
    let mut out = sending_side(&alice);
    let (sent, alice_saw, slow_got) = thread::scope(|s| {
        // Lines at full speed, in chunks, until the slow reader is gone.
        let sender = s.spawn(|| {
            let mut k = 0;
            while k < MAX_LINES && !slow_gone.load(Ordering::SeqCst) {
                let chunk: String = (k..k + 100).map(|k| line_of(k) + "\n").collect();
                out.write_all(chunk.as_bytes()).expect("send");
                k += 100;
            }
            k
        });
        let slow_reader = s.spawn(|| {
            let mut k = 0;
            let mut taken = 0;
            loop {
                let line = slow.read_line();
                if line == CUT_OFF {
                    break;
                }
                let expected = format!("alice: {}", line_of(k));
                assert_eq!(unstamp(&line), Some(expected.as_str()), "slow: line {k}");
                k += 1;
                taken += line.len() + 2;
                if taken >= 4096 {
                    taken = 0;
                    thread::sleep(Duration::from_millis(50));
                }
            }
            slow.expect_closed();
            k
        });
        // Alice reads everything, up to slow's leave.
        let mut lines = 0;
        let lines_before_leave = loop {
            let line = alice.read_line();
            let text = unstamp(&line).unwrap_or_else(|| panic!("alice: line {line:?}"));
            if text == "* slow has left the chat." {
                slow_gone.store(true, Ordering::SeqCst);
                break lines;
            }
            assert_eq!(text, format!("alice: {}", line_of(lines)));
            lines += 1;
        };
        let sent = sender.join().expect("sender");
        let rest = read_burst(&mut alice, "alice", "alice", lines, sent);
        assert!(rest.left.is_empty());
        (sent, lines_before_leave, slow_reader.join().expect("slow"))
    });
    eprintln!("slow read {slow_got} lines; {alice_saw} were in the room before it left");
    // It was cut off with more than the bound waiting, which the lines
    // the room had before its leave and the lines it read bear out.
    let log = server.log_text();
    let waiting: usize = log
        .lines()
        .find_map(|l| {
            l.split(&format!("{slow_peer} is not reading: "))
                .nth(1)?
                .strip_suffix(" bytes waiting; disconnecting")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no hard-bound cut-off for {slow_peer} in the log:\n{log}"));
    assert!(waiting > BOUND, "cut off with {waiting} bytes waiting");
    assert!(
        (alice_saw - slow_got) * (LEN + "[HH:MM] alice: \r\n".len()) > BOUND,
        "slow was {} lines behind",
        alice_saw - slow_got
    );
    assert!(sent >= alice_saw);
    // Alice is still in.
    alice.send_line("/users");
    alice.expect("Users in chat: alice");
}

/// The retired `--max-backlog` still starts a server, which says it is
/// ignored and why.
#[test]
fn the_retired_max_backlog_option_starts_with_a_warning() {
    let server = Server::start_with(&["--max-backlog", "100"]);
    server.wait_for_log("--max-backlog is no longer used and is ignored");
    let mut alice = server.login("alice");
    alice.send_line("still chatting");
    alice.expect_stamped("alice: still chatting");
}
