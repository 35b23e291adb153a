//! The JSON-lines protocol for programs (PROTOCOL.md), against the real
//! server: choosing the protocol by the first bytes, every request and its
//! reply, error codes, events, framing, the heartbeat, resuming, a killed
//! hub and a full server.

mod common;
use common::json::JsonClient;
use common::*;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Helpers local to this file.
// ---------------------------------------------------------------------------

const WELCOME: &str = "Welcome to mpchat! Enter your nickname:";

fn seq_of(line: &Value) -> u64 {
    line["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric seq in {line}"))
}

/// Asserts that `line` is a public event of `kind` about `from` in `room`.
fn assert_event(line: &Value, kind: &str, from: &str, room: &str) {
    assert_eq!(
        (&line["type"], &line["kind"], &line["from"], &line["room"]),
        (&json!("event"), &json!(kind), &json!(from), &json!(room)),
        "expected a {kind} event of {from} in {room}, got {line}"
    );
    assert!(
        line.get("id").is_none(),
        "an event answers no request: {line}"
    );
}

/// The next line, which must be a public event of `kind` about `from` in
/// `room`.
fn expect_event(client: &mut JsonClient, kind: &str, from: &str, room: &str) -> Value {
    let line = client.next();
    assert_event(&line, kind, from, room);
    line
}

/// The next line, which must be of type `kind` and carry `id`.
fn expect_reply(client: &mut JsonClient, kind: &str, id: &Value) -> Value {
    let line = client.next();
    assert_eq!(
        (&line["type"], &line["id"]),
        (&json!(kind), id),
        "expected {kind} with id {id}, got {line}"
    );
    line
}

// ---------------------------------------------------------------------------
// 1. The first bytes choose the protocol.
// ---------------------------------------------------------------------------

#[test]
fn a_brace_gets_json_and_a_nickname_telnet_or_silence_get_the_prompt() {
    let server = Server::start();

    let mut bot = JsonClient::connect(&server);
    bot.send(&json!({"type": "hello", "nick": "bot", "id": "h1"}));
    let welcome = expect_reply(&mut bot, "welcome", &json!("h1"));
    assert_eq!(welcome["nick"], "bot");
    let session = welcome["session"].as_str().expect("a session token");
    assert!(
        session.len() == 32 && session.bytes().all(|b| b.is_ascii_hexdigit()),
        "session token {session:?}"
    );
    assert_eq!(welcome["rooms"], json!(["#lobby"]));
    assert_eq!(welcome["room"], "#lobby");
    assert_eq!(welcome["ping_interval_s"], 30);
    assert_eq!(welcome["max_line"], 8192);
    assert_eq!(welcome["resume_max"], 1000);
    let join = expect_event(&mut bot, "join", "bot", "#lobby");
    assert!(seq_of(&join) > seq_of(&welcome), "{welcome} then {join}");

    // As from `printf 'alice\n' | nc`.
    let mut alice = server.connect();
    alice.send_line("alice");
    alice.expect(WELCOME);
    alice.expect("Hello, alice! Type /help for commands.");
    alice.expect_stamped("* alice has joined the chat.");

    // A telnet client opens with IAC DO SUPPRESS-GO-AHEAD.
    let mut carol = server.connect();
    carol.send_bytes(&[255, 253, 3]);
    carol.send_bytes(b"carol\r\n");
    carol.expect(WELCOME);
    carol.expect("Hello, carol! Type /help for commands.");
    carol.expect_stamped("* carol has joined the chat.");

    // A client that waits for the prompt gets it once the server has
    // waited for a program's first bytes in vain.
    let connected = Instant::now();
    let mut dave = server.connect();
    dave.expect(WELCOME);
    let waited = connected.elapsed();
    assert!(
        waited >= Duration::from_millis(80),
        "the prompt came after {waited:?}, before the wait for a program's first bytes"
    );
    dave.send_line("dave");
    dave.expect("Hello, dave! Type /help for commands.");
    dave.expect_stamped("* dave has joined the chat.");

    // Everyone got the protocol they spoke: the program sees the others
    // as events, the people as lines.
    for nick in ["alice", "carol", "dave"] {
        expect_event(&mut bot, "join", nick, "#lobby");
    }
    alice.expect_stamped("* carol has joined the chat.");
    alice.expect_stamped("* dave has joined the chat.");
    alice.send_line("hi");
    alice.expect_stamped("alice: hi");
    carol.expect_stamped("* dave has joined the chat.");
    carol.expect_stamped("alice: hi");
    let hi = expect_event(&mut bot, "chat", "alice", "#lobby");
    assert_eq!(hi["text"], "hi");
}

/// Sends `parts` as separate writes, a moment apart, and returns all the
/// server sent before it closed.
fn http_exchange(server: &Server, parts: &[&[u8]]) -> String {
    let mut client = JsonClient::connect(server);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // Only to split the request between two segments; nothing is
            // waited for.
            thread::sleep(Duration::from_millis(20));
        }
        client.send_raw(part);
    }
    String::from_utf8(client.read_to_end()).expect("an HTTP answer in UTF-8")
}

#[test]
fn http_requests_get_a_400_and_the_connection_closes() {
    let server = Server::start();
    let requests: [&[&[u8]]; 3] = [
        &[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"],
        &[b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"],
        &[b"GE", b"T / HTTP/1.0\r\n\r\n"],
    ];
    for request in requests {
        let answer = http_exchange(&server, request);
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "answer to {request:?}: {answer:?}"
        );
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of the head in {answer:?}"));
        assert!(
            head.lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("Content-Length: {}", body.len()))),
            "Content-Length does not match the body: {answer:?}"
        );
    }
    // None of them became a user.
    let (mut bot, _) = JsonClient::hello(&server, "bot");
    bot.send(&json!({"type": "users", "id": 1}));
    let users = expect_reply(&mut bot, "users", &json!(1));
    assert_eq!(users["nicks"], json!(["bot"]));
}
