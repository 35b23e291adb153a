//! Flood control per user, against the real binary: a burst passes, then
//! lines are dropped with a notice at most once a second, and a user who
//! keeps flooding is disconnected. Nobody else's lines are affected.
//!
//! The refill rate in these tests is 0.01 lines a second, so no token can
//! come back while a test runs, however slow the machine.

mod common;

use common::Server;

const DROPPED: &str = "You are sending too fast; message dropped.";

#[test]
fn lines_over_the_burst_are_dropped_with_one_notice() {
    let server = Server::start_with(&["--flood-burst", "3", "--flood-rate", "0.01"]);
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]);
    // Five lines in one write, as a paste would send them.
    alice.send_bytes(b"a1\r\na2\r\na3\r\na4\r\na5\r\n");
    for text in ["a1", "a2", "a3"] {
        alice.expect_stamped(&format!("alice: {text}"));
        bob.expect_stamped(&format!("alice: {text}"));
    }
    // a4 and a5 are dropped, with one notice for both.
    alice.expect(DROPPED);
    // Carol has a bucket of her own; her line is the next one anybody sees.
    carol.send_line("still here");
    for client in [&mut alice, &mut bob] {
        client.expect_stamped("carol: still here");
    }
}

#[test]
fn a_user_who_keeps_flooding_is_disconnected() {
    let server = Server::start_with(&["--flood-burst", "1", "--flood-rate", "0.01"]);
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    let mut paste = String::new();
    for i in 0..31 {
        paste.push_str(&format!("line {i}\r\n"));
    }
    alice.send_bytes(paste.as_bytes());
    alice.expect_stamped("alice: line 0");
    alice.expect(DROPPED);
    alice.expect("Disconnected: excess flood.");
    alice.expect_closed();
    bob.expect_stamped("alice: line 0");
    bob.expect_stamped("* alice has left the chat.");
    server.wait_for_log("disconnected for excess flood");
}

#[test]
fn quitting_is_never_too_fast() {
    let server = Server::start_with(&["--flood-burst", "1", "--flood-rate", "0.01"]);
    let [mut alice] = server.login_all(["alice"]);
    alice.send_bytes(b"one\r\ntwo\r\n/quit\r\n");
    alice.expect_stamped("alice: one");
    alice.expect(DROPPED);
    alice.expect("Bye, alice.");
    alice.expect_closed();
}
