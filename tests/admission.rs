//! The parent's admission limits, against the real binary: per-address
//! connections at once and per minute, and connections still logging in.
//! A refused client gets one line and a close, and no process is forked
//! for it.

mod common;

use std::net::Ipv4Addr;

use common::{Client, Server, wait_until};

const WELCOME: &str = "Welcome to mpchat! Enter your nickname:";
const TOO_MANY: &str = "Too many connections from your address.";
const BUSY: &str = "Server is busy, try again later.";

const HOME: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn connect_from(server: &Server, source: Ipv4Addr) -> Client {
    Client::connect_from(server.addr, source)
}

/// Connects and asserts the one-line refusal and the close.
fn assert_refused(server: &Server, source: Ipv4Addr, line: &str) {
    let mut c = connect_from(server, source);
    c.expect(line);
    c.expect_closed();
}

/// Connects from `source` until the server takes the connection (it
/// learns of a closed or logged-in connection a moment later), and returns
/// that client.
fn connect_once_admitted(server: &Server, source: Ipv4Addr) -> Client {
    let mut admitted = None;
    wait_until("a new connection to be admitted", || {
        let mut c = connect_from(server, source);
        if c.read_line() == WELCOME {
            admitted = Some(c);
            true
        } else {
            false
        }
    });
    admitted.expect("admitted")
}

/// How many clients the parent forked a child for, from its log.
fn forked(server: &Server) -> usize {
    server.log_text().matches(" connected (child ").count()
}

#[test]
fn connections_at_once_from_one_address_are_capped() {
    let server = Server::start_with(&["--max-per-ip", "3"]);
    let mut open: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = connect_from(&server, HOME);
            c.expect(WELCOME);
            c
        })
        .collect();
    let children = server.processes().len();
    assert_refused(&server, HOME, TOO_MANY);
    assert_eq!(
        server.processes().len(),
        children,
        "a refusal forks nothing"
    );
    server.wait_for_log("refused 127.0.0.1:");
    assert!(
        server
            .log_text()
            .contains("too many connections from that address"),
        "{}",
        server.log_text()
    );
    // Another address is not affected.
    let mut other = connect_from(&server, ELSEWHERE);
    other.expect(WELCOME);
    // Once one of the three has gone, the address may connect again.
    drop(open.pop());
    let mut again = connect_once_admitted(&server, HOME);
    again.send_line("alice");
    again.expect("Hello, alice! Type /help for commands.");
}

#[test]
fn new_connections_per_minute_from_one_address_are_capped_after_a_burst() {
    let server = Server::start_with(&["--max-conn-rate", "1", "--conn-burst", "3"]);
    for _ in 0..3 {
        let mut c = connect_from(&server, HOME);
        c.expect(WELCOME);
    }
    // All three are closed again: it is the rate that refuses, not the
    // number open.
    assert_refused(&server, HOME, TOO_MANY);
    let mut other = connect_from(&server, ELSEWHERE);
    other.expect(WELCOME);
    // The last fork's log line is in: every earlier one is too.
    let last = other.stream().local_addr().unwrap();
    server.wait_for_log(&format!("{last} connected (child "));
    assert_eq!(forked(&server), 4, "{}", server.log_text());
}

#[test]
fn connections_still_logging_in_are_capped() {
    let server = Server::start_with(&["--max-unregistered", "2"]);
    let mut first = connect_from(&server, HOME);
    first.expect(WELCOME);
    let mut second = connect_from(&server, ELSEWHERE);
    second.expect(WELCOME);
    assert_refused(&server, Ipv4Addr::new(127, 0, 0, 3), BUSY);
    server.wait_for_log("too many connections logging in");

    // A client that logs in no longer counts against the limit.
    first.send_line("alice");
    first.expect("Hello, alice! Type /help for commands.");
    first.expect_stamped("* alice has joined the chat.");
    let mut third = connect_once_admitted(&server, Ipv4Addr::new(127, 0, 0, 3));
    assert_refused(&server, Ipv4Addr::new(127, 0, 0, 4), BUSY);

    // Nor does one that leaves before logging in.
    drop(second);
    let _fourth = connect_once_admitted(&server, Ipv4Addr::new(127, 0, 0, 4));

    // Logged-in users chat on, untouched by all of this.
    third.send_line("bob");
    third.expect("Hello, bob! Type /help for commands.");
    first.expect_stamped("* bob has joined the chat.");
}
