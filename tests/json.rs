//! The JSON-lines protocol for programs (PROTOCOL.md), against the real
//! server: choosing the protocol by the first bytes, every request and its
//! reply, error codes, events, framing, the heartbeat, resuming, a killed
//! hub and a full server.

mod common;
use common::json::JsonClient;
use common::*;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Helpers local to this file.
// ---------------------------------------------------------------------------

const WELCOME: &str = "Welcome to mpchat! Enter your nickname:";
const SERVER_FULL: &str = "Server is full, try again later.";

/// The server stamps events with the same system clock the test reads, but
/// in whole milliseconds and a moment apart from our readings.
const CLOCK_SLACK_MS: u64 = 20;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}

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

/// The next line, which must be the error `code` answering the request with
/// `id` (none for a line that could not be read).
fn expect_error_for(client: &mut JsonClient, code: &str, id: Option<&Value>) -> Value {
    let line = client.expect_error(code);
    assert_eq!(line.get("id"), id, "the id of {line}");
    line
}

/// Sends `request` with `id` and asserts it is answered with error `code`
/// carrying that id, then that the session still carries out requests: the
/// very next line after the error answers the hub request sent after it.
fn refused(client: &mut JsonClient, mut request: Value, id: Value, code: &str) {
    request["id"] = id.clone();
    client.send(&request);
    expect_error_for(client, code, Some(&id));
    still_works(client, code);
}

/// A request the hub must answer, answered, with nothing before it.
fn still_works(client: &mut JsonClient, after: &str) {
    let id = json!(format!("after {after}"));
    client.send(&json!({"type": "users", "id": id}));
    let users = expect_reply(client, "users", &id);
    assert!(users["nicks"].is_array(), "users: {users}");
}

/// Reads a person's next line, which must be `[HH:MM] ` and `rest`, and
/// never JSON.
fn person_sees(person: &mut Client, rest: &str) {
    let line = person.read_line();
    assert!(
        serde_json::from_str::<Value>(&line).is_err() && !line.starts_with('{'),
        "a person was sent JSON: {line:?}"
    );
    assert_eq!(unstamp(&line), Some(rest), "line {line:?}");
}

/// Checks the public events one client receives: each has every field an
/// event must have, a number above all before it, and a time within the
/// action that caused it.
struct Witness {
    last_seq: u64,
}

impl Witness {
    /// The next line, which must be an event caused by something done no
    /// earlier than `since_ms`.
    fn event(&mut self, client: &mut JsonClient, since_ms: u64) -> Value {
        let line = client.next();
        let until_ms = now_ms();
        assert_eq!(line["type"], "event", "not an event: {line}");
        for field in ["room", "kind", "from"] {
            assert!(line[field].is_string(), "no {field} in {line}");
        }
        let seq = seq_of(&line);
        assert!(
            seq > self.last_seq,
            "seq {seq} after {}: {line}",
            self.last_seq
        );
        self.last_seq = seq;
        let ts = line["ts"]
            .as_u64()
            .unwrap_or_else(|| panic!("no numeric ts in {line}"));
        assert!(
            since_ms.saturating_sub(CLOCK_SLACK_MS) <= ts && ts <= until_ms + CLOCK_SLACK_MS,
            "ts {ts} not within {since_ms}..={until_ms}: {line}"
        );
        line
    }
}

/// The chat texts of `from` among `events`.
fn texts_of<'a>(events: &'a [Value], from: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e["kind"] == "chat" && e["from"] == from)
        .map(|e| e["text"].as_str().expect("a chat event has text"))
        .collect()
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

// ---------------------------------------------------------------------------
// 2. Requests and their replies.
// ---------------------------------------------------------------------------

#[test]
fn say_me_and_whisper_answer_with_events_then_ok_with_the_id() {
    let server = Server::start();
    let (mut ann, _) = JsonClient::hello(&server, "ann");
    let (mut bob, _) = JsonClient::hello(&server, "bob");
    expect_event(&mut ann, "join", "bob", "#lobby");

    ann.send(&json!({"type": "say", "text": "hi", "id": "s1"}));
    let own = expect_event(&mut ann, "chat", "ann", "#lobby");
    assert_eq!(own["text"], "hi");
    expect_reply(&mut ann, "ok", &json!("s1"));
    let heard = expect_event(&mut bob, "chat", "ann", "#lobby");
    assert_eq!(heard["text"], "hi");
    assert_eq!(heard["seq"], own["seq"], "one number for everyone");
    assert_eq!(heard["ts"], own["ts"]);

    // Without an id nothing but the event answers: the pong is next.
    bob.send(&json!({"type": "me", "text": "waves"}));
    bob.send(&json!({"type": "ping", "id": 1}));
    let waves = expect_event(&mut bob, "me", "bob", "#lobby");
    assert_eq!(waves["text"], "waves");
    expect_reply(&mut bob, "pong", &json!(1));
    assert_eq!(
        expect_event(&mut ann, "me", "bob", "#lobby")["text"],
        "waves"
    );
    bob.send(&json!({"type": "me", "text": "nods", "id": 7}));
    expect_event(&mut bob, "me", "bob", "#lobby");
    expect_reply(&mut bob, "ok", &json!(7));
    expect_event(&mut ann, "me", "bob", "#lobby");

    let before = now_ms();
    ann.send(&json!({"type": "whisper", "to": "BOB", "text": "psst", "id": 42}));
    let sent = ann.next();
    expect_reply(&mut ann, "ok", &json!(42));
    let got = bob.next();
    let after = now_ms();
    for whisper in [&sent, &got] {
        assert_eq!(
            (
                &whisper["type"],
                &whisper["from"],
                &whisper["to"],
                &whisper["text"]
            ),
            (
                &json!("whisper"),
                &json!("ann"),
                &json!("bob"),
                &json!("psst")
            ),
            "whisper: {whisper}"
        );
        assert!(whisper.get("seq").is_none(), "a whisper is not public");
        assert!(whisper.get("id").is_none(), "a whisper is no reply");
        let ts = whisper["ts"].as_u64().expect("a whisper's ts");
        assert!(
            before - CLOCK_SLACK_MS <= ts && ts <= after + CLOCK_SLACK_MS,
            "ts of {whisper} not within {before}..={after}"
        );
    }
    // The whisper reached bob alone: ann's next line is her own ping's.
    ann.send(&json!({"type": "ping", "id": "p"}));
    expect_reply(&mut ann, "pong", &json!("p"));
}

#[test]
fn join_part_rooms_users_and_topic_answer_in_order_with_the_id() {
    let server = Server::start();
    let (mut ann, _) = JsonClient::hello(&server, "ann");
    let (mut bob, _) = JsonClient::hello(&server, "bob");
    expect_event(&mut ann, "join", "bob", "#lobby");

    ann.send(&json!({"type": "topic", "id": 1}));
    let topic = expect_reply(&mut ann, "topic", &json!(1));
    assert_eq!(
        (&topic["room"], &topic["topic"]),
        (&json!("#lobby"), &Value::Null)
    );

    // A room without a topic: the join event, then the new current room.
    ann.send(&json!({"type": "join", "room": "#Lab2", "id": "j1"}));
    expect_event(&mut ann, "join", "ann", "#Lab2");
    let current = expect_reply(&mut ann, "current", &json!("j1"));
    assert_eq!(current["room"], "#Lab2");

    ann.send(&json!({"type": "topic", "text": "exam on Friday", "id": 2}));
    let set = expect_event(&mut ann, "topic", "ann", "#Lab2");
    assert_eq!(set["text"], "exam on Friday");
    expect_reply(&mut ann, "ok", &json!(2));
    ann.send(&json!({"type": "topic", "id": 3}));
    let topic = expect_reply(&mut ann, "topic", &json!(3));
    assert_eq!(
        (&topic["room"], &topic["topic"]),
        (&json!("#Lab2"), &json!("exam on Friday"))
    );

    // A room with a topic: the topic first; the name as its creator wrote it.
    bob.send(&json!({"type": "join", "room": "#lab2", "id": "j2"}));
    let topic = expect_reply(&mut bob, "topic", &json!("j2"));
    assert_eq!(
        (&topic["room"], &topic["topic"]),
        (&json!("#Lab2"), &json!("exam on Friday"))
    );
    expect_event(&mut bob, "join", "bob", "#Lab2");
    assert_eq!(
        expect_reply(&mut bob, "current", &json!("j2"))["room"],
        "#Lab2"
    );
    expect_event(&mut ann, "join", "bob", "#Lab2");

    // Only the owner sets the topic.
    refused(
        &mut bob,
        json!({"type": "topic", "text": "mine"}),
        json!(4),
        "not_owner",
    );

    ann.send(&json!({"type": "users", "id": 5}));
    let users = expect_reply(&mut ann, "users", &json!(5));
    assert_eq!(
        (&users["room"], &users["nicks"]),
        (&json!("#Lab2"), &json!(["ann", "bob"]))
    );
    ann.send(&json!({"type": "users", "room": "#LOBBY", "id": 6}));
    let users = expect_reply(&mut ann, "users", &json!(6));
    assert_eq!(
        (&users["room"], &users["nicks"]),
        (&json!("#lobby"), &json!(["ann", "bob"]))
    );

    ann.send(&json!({"type": "rooms", "id": "r"}));
    let rooms = expect_reply(&mut ann, "rooms", &json!("r"));
    let rooms = rooms["rooms"].as_array().expect("a list of rooms");
    assert_eq!(rooms.len(), 2, "{rooms:?}");
    let find = |name: &str| {
        rooms
            .iter()
            .find(|r| r["room"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {rooms:?}"))
    };
    assert_eq!(
        find("#lobby"),
        &json!({"room": "#lobby", "users": 2, "topic": null, "member": true, "current": false})
    );
    assert_eq!(
        find("#Lab2"),
        &json!({"room": "#Lab2", "users": 2, "topic": "exam on Friday", "member": true, "current": true})
    );

    // Joining a room one is in only makes it current.
    ann.send(&json!({"type": "join", "room": "#lobby", "id": 8}));
    assert_eq!(
        expect_reply(&mut ann, "current", &json!(8))["room"],
        "#lobby"
    );
    // A say or me may name any room of one's own.
    ann.send(&json!({"type": "say", "room": "#lab2", "text": "there", "id": 9}));
    assert_eq!(
        expect_event(&mut ann, "chat", "ann", "#Lab2")["text"],
        "there"
    );
    expect_reply(&mut ann, "ok", &json!(9));
    ann.send(&json!({"type": "me", "room": "#lab2", "text": "points", "id": 10}));
    expect_event(&mut ann, "me", "ann", "#Lab2");
    expect_reply(&mut ann, "ok", &json!(10));
    assert_eq!(
        expect_event(&mut bob, "chat", "ann", "#Lab2")["text"],
        "there"
    );
    expect_event(&mut bob, "me", "ann", "#Lab2");

    // Leaving the current room makes another current.
    bob.send(&json!({"type": "part", "id": 11}));
    expect_event(&mut bob, "part", "bob", "#Lab2");
    assert_eq!(
        expect_reply(&mut bob, "current", &json!(11))["room"],
        "#lobby"
    );
    expect_event(&mut ann, "part", "bob", "#Lab2");

    // Leaving another room changes nothing else: ok.
    ann.send(&json!({"type": "part", "room": "#lab2", "id": 12}));
    expect_event(&mut ann, "part", "ann", "#Lab2");
    expect_reply(&mut ann, "ok", &json!(12));
    ann.send(&json!({"type": "rooms", "id": 13}));
    let rooms = expect_reply(&mut ann, "rooms", &json!(13));
    assert_eq!(
        rooms["rooms"],
        json!([{"room": "#lobby", "users": 2, "topic": null, "member": true, "current": true}]),
        "#Lab2, empty, is gone"
    );
}

#[test]
fn a_rename_is_an_event_and_a_kicked_program_is_told_and_closed() {
    let server = Server::start();
    let (mut ann, _) = JsonClient::hello(&server, "ann");
    let (mut bob, _) = JsonClient::hello(&server, "bob");
    let (mut cid, _) = JsonClient::hello(&server, "cid");
    expect_event(&mut ann, "join", "bob", "#lobby");
    expect_event(&mut ann, "join", "cid", "#lobby");
    expect_event(&mut bob, "join", "cid", "#lobby");

    ann.send(&json!({"type": "rename", "nick": "anna", "id": "r"}));
    for client in [&mut ann, &mut bob, &mut cid] {
        let renamed = expect_event(client, "rename", "ann", "#lobby");
        assert_eq!(renamed["to"], "anna", "{renamed}");
    }
    expect_reply(&mut ann, "ok", &json!("r"));
    ann.send(&json!({"type": "say", "text": "new name"}));
    expect_event(&mut ann, "chat", "anna", "#lobby");
    expect_event(&mut bob, "chat", "anna", "#lobby");
    expect_event(&mut cid, "chat", "anna", "#lobby");

    // The lobby's owner, its longest present member, kicks.
    ann.send(&json!({"type": "kick", "nick": "bob", "id": 5}));
    bob.expect_error("kicked");
    bob.expect_closed();
    for client in [&mut ann, &mut cid] {
        let kicked = expect_event(client, "kick", "bob", "#lobby");
        assert_eq!(kicked["by"], "anna", "{kicked}");
    }
    expect_reply(&mut ann, "ok", &json!(5));
    ann.send(&json!({"type": "users", "id": 6}));
    let users = expect_reply(&mut ann, "users", &json!(6));
    assert_eq!(users["nicks"], json!(["anna", "cid"]));
}

#[test]
fn schedule_history_ping_and_quit_have_their_replies() {
    let server = Server::start();
    let (mut ann, _) = JsonClient::hello(&server, "ann");

    let before = now_ms();
    ann.send(&json!({"type": "schedule", "in_s": 3600, "text": "later", "id": "s"}));
    let scheduled = expect_reply(&mut ann, "scheduled", &json!("s"));
    let after = now_ms();
    let due_ts = scheduled["due_ts"].as_u64().expect("due_ts");
    assert!(
        before + 3_600_000 <= due_ts + CLOCK_SLACK_MS && due_ts <= after + 3_600_000,
        "due_ts {due_ts} not an hour after {before}..={after}"
    );
    let due = scheduled["due"].as_str().expect("due");
    let time = due.strip_prefix("tomorrow ").unwrap_or(due);
    assert!(
        time.len() == 8 && time.as_bytes()[2] == b':' && time.as_bytes()[5] == b':',
        "due {due:?}"
    );
    ann.send(&json!({"type": "schedule_list", "id": 2}));
    let list = expect_reply(&mut ann, "schedule_list", &json!(2));
    assert_eq!(
        list["scheduled"],
        json!([{"number": 1, "due_ts": due_ts, "due": due, "text": "later"}])
    );
    ann.send(&json!({"type": "schedule_cancel", "number": 1, "id": 3}));
    assert_eq!(expect_reply(&mut ann, "cancelled", &json!(3))["number"], 1);
    ann.send(&json!({"type": "schedule_list", "id": 4}));
    assert_eq!(
        expect_reply(&mut ann, "schedule_list", &json!(4))["scheduled"],
        json!([])
    );

    // A scheduled message is an event of its own kind when it falls due.
    let asked = Instant::now();
    ann.send(&json!({"type": "schedule", "in_s": 1, "text": "soon"}));
    assert_eq!(ann.next()["type"], "scheduled");
    let fired = expect_event(&mut ann, "scheduled", "ann", "#lobby");
    assert_eq!(fired["text"], "soon");
    assert!(
        asked.elapsed() >= Duration::from_millis(800),
        "a message due in 1 s came after {:?}",
        asked.elapsed()
    );

    let mut seqs = Vec::new();
    for text in ["a", "b", "c"] {
        ann.send(&json!({"type": "say", "text": text}));
        seqs.push(seq_of(&expect_event(&mut ann, "chat", "ann", "#lobby")));
    }
    // Sent together, so that anything between the count's events and the
    // pong would show.
    ann.send_raw(
        b"{\"type\":\"history\",\"count\":3,\"id\":\"h\"}\n{\"type\":\"ping\",\"id\":\"p\"}\n",
    );
    let history = expect_reply(&mut ann, "history", &json!("h"));
    assert_eq!(
        (&history["room"], &history["count"]),
        (&json!("#lobby"), &json!(3))
    );
    let replayed: Vec<u64> = (0..3)
        .map(|_| seq_of(&expect_event(&mut ann, "chat", "ann", "#lobby")))
        .collect();
    assert_eq!(replayed, seqs);
    expect_reply(&mut ann, "pong", &json!("p"));
    // Fewer events than asked: as many as there are (ann's join, the
    // scheduled message, a, b, c).
    ann.send(&json!({"type": "history", "id": 6}));
    assert_eq!(expect_reply(&mut ann, "history", &json!(6))["count"], 5);
    expect_event(&mut ann, "join", "ann", "#lobby");
    expect_event(&mut ann, "scheduled", "ann", "#lobby");
    for _ in 0..3 {
        expect_event(&mut ann, "chat", "ann", "#lobby");
    }

    // Another of ann's rooms by name, while #lab2 is her current room;
    // a room she is not in is refused.
    ann.send(&json!({"type": "join", "room": "#lab2"}));
    expect_event(&mut ann, "join", "ann", "#lab2");
    expect_reply(&mut ann, "current", &Value::Null);
    ann.send(&json!({"type": "say", "text": "in the lab"}));
    let lab = seq_of(&expect_event(&mut ann, "chat", "ann", "#lab2"));
    ann.send(&json!({"type": "history", "room": "#lobby", "count": 1, "id": 7}));
    let history = expect_reply(&mut ann, "history", &json!(7));
    assert_eq!(
        (&history["room"], &history["count"]),
        (&json!("#lobby"), &json!(1))
    );
    assert_eq!(
        seq_of(&expect_event(&mut ann, "chat", "ann", "#lobby")),
        seqs[2]
    );
    ann.send(&json!({"type": "history", "count": 1, "id": 8}));
    expect_reply(&mut ann, "history", &json!(8));
    assert_eq!(seq_of(&expect_event(&mut ann, "chat", "ann", "#lab2")), lab);
    ann.send(&json!({"type": "history", "room": "#elsewhere", "id": 9}));
    assert_eq!(
        expect_reply(&mut ann, "error", &json!(9))["code"],
        "not_in_room"
    );

    ann.send(&json!({"type": "ping", "id": 99}));
    let pong = expect_reply(&mut ann, "pong", &json!(99));
    assert_eq!(pong.as_object().map(|o| o.len()), Some(2), "{pong}");

    ann.send(&json!({"type": "quit"}));
    assert_eq!(ann.next(), json!({"type": "bye"}));
    ann.expect_closed();
}

#[test]
fn a_quit_with_an_id_is_answered_with_that_id() {
    let server = Server::start();
    let (mut ann, _) = JsonClient::hello(&server, "ann");
    ann.send(&json!({"type": "quit", "id": "q"}));
    // The bye is quit's own answer: it carries the id, and no ok comes.
    assert_eq!(ann.next(), json!({"type": "bye", "id": "q"}));
    ann.expect_closed();
}

// ---------------------------------------------------------------------------
// 3. Error codes.
// ---------------------------------------------------------------------------

#[test]
fn bad_lines_get_their_codes_and_change_nothing() {
    let server = Server::start();
    let (mut ann, _) = JsonClient::hello(&server, "ann");

    for (line, code) in [
        (&b"not json\n"[..], "bad_json"),
        (b"[1]\n", "bad_json"),
        (b"{\"type\":\"say\",\"text\":\"cut\"\n", "bad_json"),
    ] {
        ann.send_raw(line);
        expect_error_for(&mut ann, code, None);
        still_works(&mut ann, code);
    }
    refused(&mut ann, json!({"type": "fly"}), json!("u"), "unknown_type");
    let missing = json!({"type": "say", "id": 2});
    ann.send(&missing);
    let error = expect_error_for(&mut ann, "bad_request", Some(&json!(2)));
    assert!(
        error["message"].as_str().unwrap().contains("text"),
        "the message names the missing field: {error}"
    );
    still_works(&mut ann, "missing field");
    refused(
        &mut ann,
        json!({"type": "say", "text": 7}),
        json!("t"),
        "bad_request",
    );
    refused(
        &mut ann,
        json!({"type": "history", "count": 0}),
        json!(4),
        "bad_request",
    );
    refused(
        &mut ann,
        json!({"type": "say", "text": "a".repeat(513)}),
        json!(5),
        "text_too_long",
    );
    // 512 bytes is the most a text may have.
    let longest = "é".repeat(256);
    ann.send(&json!({"type": "say", "text": longest, "id": 6}));
    assert_eq!(
        expect_event(&mut ann, "chat", "ann", "#lobby")["text"],
        json!(longest)
    );
    expect_reply(&mut ann, "ok", &json!(6));
}

#[test]
fn login_errors_leave_the_connection_open_for_another_try() {
    let server = Server::start();
    let (mut ann, _) = JsonClient::hello(&server, "ann");

    let mut bot = JsonClient::connect(&server);
    bot.send(&json!({"type": "say", "text": "too early", "id": "e"}));
    expect_error_for(&mut bot, "not_logged_in", Some(&json!("e")));
    bot.send(&json!({"type": "users", "id": 1}));
    expect_error_for(&mut bot, "not_logged_in", Some(&json!(1)));
    // A ping is fine before the welcome.
    bot.send(&json!({"type": "ping", "id": 2}));
    expect_reply(&mut bot, "pong", &json!(2));
    bot.send(&json!({"type": "hello", "nick": "no good!", "id": 3}));
    expect_error_for(&mut bot, "bad_nick", Some(&json!(3)));
    bot.send(&json!({"type": "hello", "nick": "ANN", "id": 4}));
    expect_error_for(&mut bot, "nick_taken", Some(&json!(4)));
    bot.send(&json!({"type": "hello", "nick": "bot", "id": 5}));
    expect_reply(&mut bot, "welcome", &json!(5));
    expect_event(&mut bot, "join", "bot", "#lobby");
    refused(
        &mut bot,
        json!({"type": "hello", "nick": "bot2"}),
        json!(6),
        "already_logged_in",
    );
    // Still bot, and the refused tries left nothing behind.
    ann.send(&json!({"type": "users", "id": 7}));
    expect_event(&mut ann, "join", "bot", "#lobby");
    let users = expect_reply(&mut ann, "users", &json!(7));
    assert_eq!(users["nicks"], json!(["ann", "bot"]));
}

#[test]
fn refused_requests_get_their_codes_and_the_session_goes_on() {
    let server = Server::start();
    let (mut ann, _) = JsonClient::hello(&server, "ann");
    let (mut bob, _) = JsonClient::hello(&server, "bob");
    expect_event(&mut ann, "join", "bob", "#lobby");

    let cases = [
        (json!({"type": "join", "room": "lab2"}), "bad_room"),
        (
            json!({"type": "join", "room": format!("#{}", "a".repeat(33))}),
            "bad_room",
        ),
        (
            json!({"type": "say", "room": "#lab2", "text": "x"}),
            "not_in_room",
        ),
        (json!({"type": "part", "room": "#lab2"}), "not_in_room"),
        (json!({"type": "users", "room": "#nowhere"}), "no_such_room"),
        (json!({"type": "part"}), "last_room"),
        (
            json!({"type": "whisper", "to": "nobody", "text": "x"}),
            "no_such_user",
        ),
        (json!({"type": "kick", "nick": "ann"}), "cannot_kick_self"),
        (json!({"type": "kick", "nick": "nobody"}), "no_such_user"),
        (
            json!({"type": "schedule_cancel", "number": 1}),
            "no_such_scheduled",
        ),
        (json!({"type": "rename", "nick": "ann"}), "nick_unchanged"),
        (json!({"type": "rename", "nick": "BOB"}), "nick_taken"),
        (json!({"type": "rename", "nick": "no!good"}), "bad_nick"),
    ];
    for (i, (request, code)) in cases.into_iter().enumerate() {
        // String and numeric ids alike.
        let id = if i % 2 == 0 {
            json!(i)
        } else {
            json!(format!("req-{i}"))
        };
        refused(&mut ann, request, id, code);
    }
    refused(
        &mut bob,
        json!({"type": "kick", "nick": "ann"}),
        json!("k"),
        "not_owner",
    );
    // Nothing happened meanwhile: bob's next line is ann's say.
    ann.send(&json!({"type": "say", "text": "still here"}));
    expect_event(&mut ann, "chat", "ann", "#lobby");
    assert_eq!(
        expect_event(&mut bob, "chat", "ann", "#lobby")["text"],
        "still here"
    );
}

// ---------------------------------------------------------------------------
// 4. Events.
// ---------------------------------------------------------------------------

#[test]
fn events_are_numbered_and_stamped_and_a_person_sees_only_text() {
    let server = Server::start();
    let (mut ann, welcome) = JsonClient::hello(&server, "ann");
    let mut events = Witness {
        last_seq: seq_of(&welcome),
    };

    let since = now_ms();
    let mut tom = server.login("tom");
    let e = events.event(&mut ann, since);
    assert_event(&e, "join", "tom", "#lobby");

    let since = now_ms();
    tom.send_line("hi");
    person_sees(&mut tom, "tom: hi");
    let e = events.event(&mut ann, since);
    assert_event(&e, "chat", "tom", "#lobby");
    assert_eq!(e["text"], "hi");

    let since = now_ms();
    ann.send(&json!({"type": "say", "text": "hello"}));
    let e = events.event(&mut ann, since);
    assert_event(&e, "chat", "ann", "#lobby");
    person_sees(&mut tom, "ann: hello");

    let since = now_ms();
    ann.send(&json!({"type": "me", "text": "waves"}));
    let e = events.event(&mut ann, since);
    assert_event(&e, "me", "ann", "#lobby");
    assert_eq!(e["text"], "waves");
    person_sees(&mut tom, "* ann waves");

    let since = now_ms();
    ann.send(&json!({"type": "join", "room": "#lab2"}));
    let e = events.event(&mut ann, since);
    assert_event(&e, "join", "ann", "#lab2");
    assert_eq!(ann.next()["type"], "current");

    let since = now_ms();
    tom.send_line("/join #lab2");
    person_sees(&mut tom, "* tom has joined #lab2.");
    let e = events.event(&mut ann, since);
    assert_event(&e, "join", "tom", "#lab2");

    let since = now_ms();
    ann.send(&json!({"type": "topic", "text": "exam"}));
    let e = events.event(&mut ann, since);
    assert_event(&e, "topic", "ann", "#lab2");
    assert_eq!(e["text"], "exam");
    person_sees(&mut tom, "* ann set the topic of #lab2: exam");

    // One rename, in two rooms: an event, with its own number, for each.
    let since = now_ms();
    ann.send(&json!({"type": "rename", "nick": "ann2"}));
    let first = events.event(&mut ann, since);
    let second = events.event(&mut ann, since);
    let mut rooms = Vec::new();
    for e in [&first, &second] {
        assert_eq!(
            (&e["kind"], &e["from"], &e["to"]),
            (&json!("rename"), &json!("ann"), &json!("ann2")),
            "{e}"
        );
        rooms.push(e["room"].as_str().unwrap());
    }
    rooms.sort();
    assert_eq!(rooms, ["#lab2", "#lobby"]);
    // A person reads it once: the next line is already tom's own.
    person_sees(
        &mut tom,
        "* User \"ann\" has changed their nickname to \"ann2\".",
    );
    let since = now_ms();
    tom.send_line("done");
    person_sees(&mut tom, "tom: done");
    let e = events.event(&mut ann, since);
    assert_event(&e, "chat", "tom", "#lab2");

    let since = now_ms();
    tom.send_line("/quit");
    tom.expect("Bye, tom.");
    tom.expect_closed();
    let mut rooms = Vec::new();
    for _ in 0..2 {
        let e = events.event(&mut ann, since);
        assert_eq!(
            (&e["kind"], &e["from"]),
            (&json!("leave"), &json!("tom")),
            "{e}"
        );
        rooms.push(e["room"].as_str().unwrap().to_string());
    }
    rooms.sort();
    assert_eq!(rooms, ["#lab2", "#lobby"]);
}

// ---------------------------------------------------------------------------
// 5. Framing.
// ---------------------------------------------------------------------------

/// A ping line of exactly `len` bytes, its LF included, padded in a field
/// the server ignores.
fn ping_of_length(len: usize, id: &str) -> Vec<u8> {
    let bare = format!("{{\"type\":\"ping\",\"id\":\"{id}\",\"pad\":\"\"}}\n");
    let pad = "x".repeat(len - bare.len());
    let line = format!("{{\"type\":\"ping\",\"id\":\"{id}\",\"pad\":\"{pad}\"}}\n");
    assert_eq!(line.len(), len);
    line.into_bytes()
}

#[test]
fn a_line_over_8192_bytes_is_dropped_whole_and_one_of_8192_is_read() {
    let server = Server::start();
    let (mut ann, _) = JsonClient::hello(&server, "ann");

    ann.send_raw(&ping_of_length(8192, "exact"));
    expect_reply(&mut ann, "pong", &json!("exact"));

    ann.send_raw(&ping_of_length(8193, "over"));
    expect_error_for(&mut ann, "line_too_long", None);
    still_works(&mut ann, "8193 bytes");

    // A long say is dropped whole: no part of it is said, and it is one
    // error however long it is.
    let say = format!("{{\"type\":\"say\",\"text\":\"{}\"}}\n", "y".repeat(30_000));
    ann.send_raw(say.as_bytes());
    expect_error_for(&mut ann, "line_too_long", None);
    still_works(&mut ann, "30000 bytes");

    // CRLF ends a line too; empty lines are nothing.
    ann.send_raw(b"\r\n\n{\"type\":\"say\",\"text\":\"crlf\",\"id\":1}\r\n");
    assert_eq!(
        expect_event(&mut ann, "chat", "ann", "#lobby")["text"],
        "crlf"
    );
    expect_reply(&mut ann, "ok", &json!(1));

    let mut bot = JsonClient::connect(&server);
    bot.send_raw(b"{\"type\":\"hello\",\"nick\":\"bot\"}\r\n");
    assert_eq!(bot.next()["type"], "welcome");
    expect_event(&mut bot, "join", "bot", "#lobby");
    bot.send_raw(b"{\"type\":\"ping\",\"id\":2}\r\n");
    expect_reply(&mut bot, "pong", &json!(2));
}

#[test]
fn ten_bad_lines_in_a_row_end_the_session_but_a_good_line_resets_the_count() {
    let server = Server::start();

    let (mut ann, _) = JsonClient::hello(&server, "ann");
    let nine = b"junk\n".repeat(9);
    ann.send_raw(&nine);
    ann.send_raw(b"{\"type\":\"ping\",\"id\":\"good\"}\n");
    ann.send_raw(&nine);
    for _ in 0..9 {
        expect_error_for(&mut ann, "bad_json", None);
    }
    expect_reply(&mut ann, "pong", &json!("good"));
    for _ in 0..9 {
        expect_error_for(&mut ann, "bad_json", None);
    }
    still_works(&mut ann, "nine bad lines");

    let (mut bob, _) = JsonClient::hello(&server, "bob");
    expect_event(&mut ann, "join", "bob", "#lobby");
    bob.send_raw(&b"junk\n".repeat(10));
    for _ in 0..10 {
        expect_error_for(&mut bob, "bad_json", None);
    }
    bob.expect_error("too_many_errors");
    bob.expect_closed();
    expect_event(&mut ann, "leave", "bob", "#lobby");
}

// ---------------------------------------------------------------------------
// 6. Heartbeat.
// ---------------------------------------------------------------------------

#[test]
fn a_silent_program_is_pinged_then_dropped_and_one_that_answers_stays() {
    let interval = Duration::from_secs(1);
    // Each on a server of its own, so that neither sees the other's
    // events, and at the same time, so that the test waits once.
    thread::scope(|s| {
        let answering = s.spawn(|| {
            let server = Server::start_with(&["--ping-interval", "1"]);
            let said = Instant::now();
            let (mut ann, welcome) = JsonClient::hello(&server, "ann");
            assert_eq!(welcome["ping_interval_s"], 1);
            let mut pings = 0;
            let mut answered = said;
            loop {
                assert_eq!(ann.next(), json!({"type": "ping"}));
                let waited = answered.elapsed();
                assert!(
                    waited >= interval.mul_f64(0.8),
                    "pinged {waited:?} after the last line"
                );
                pings += 1;
                if said.elapsed() > interval * 3 || pings == 20 {
                    break;
                }
                // A pong, or a request of its own: any line is a sign of
                // life.
                answered = Instant::now();
                if pings % 2 == 1 {
                    ann.send(&json!({"type": "pong"}));
                } else {
                    ann.send(&json!({"type": "rooms", "id": pings}));
                    expect_reply(&mut ann, "rooms", &json!(pings));
                }
            }
            assert!(pings >= 3, "only {pings} pings in {:?}", said.elapsed());
            ann.send(&json!({"type": "ping", "id": "alive"}));
            expect_reply(&mut ann, "pong", &json!("alive"));
        });
        let silent = s.spawn(|| {
            let server = Server::start_with(&["--ping-interval", "1"]);
            let said = Instant::now();
            let (mut bot, _) = JsonClient::hello(&server, "bot");
            assert_eq!(bot.next(), json!({"type": "ping"}));
            assert!(
                said.elapsed() >= interval.mul_f64(0.8),
                "pinged after {:?}",
                said.elapsed()
            );
            bot.expect_error("ping_timeout");
            assert!(
                said.elapsed() >= interval.mul_f64(2.3),
                "dropped after {:?} of silence",
                said.elapsed()
            );
            bot.expect_closed();
        });
        for handle in [answering, silent] {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
}

// ---------------------------------------------------------------------------
// 7. Resume, and taking a session over.
// ---------------------------------------------------------------------------

#[test]
fn a_resume_while_the_room_talks_has_no_gap_and_no_duplicate() {
    const N: usize = 200;
    let server = Server::start();
    let (mut ann, _) = JsonClient::hello(&server, "ann");
    let mut bob = server.login("bob");
    expect_event(&mut ann, "join", "bob", "#lobby");

    let sent = Arc::new(AtomicUsize::new(0));
    let (ann_gone, wait_ann_gone) = mpsc::channel::<()>();
    let (ann_back, wait_ann_back) = mpsc::channel::<()>();
    let talker = {
        let sent = Arc::clone(&sent);
        thread::spawn(move || {
            for i in 1..=N {
                // Bob goes on talking after ann is gone, and again once
                // she is coming back, so that both moments fall amid his
                // lines.
                if i == 61 {
                    wait_ann_gone.recv_timeout(DEADLINE).expect("ann to go");
                }
                if i == 151 {
                    wait_ann_back
                        .recv_timeout(DEADLINE)
                        .expect("ann to come back");
                }
                let text = format!("m{i:03}");
                bob.send_line(&text);
                // Pace: one line at a time, as the server takes them; the
                // leave and join lines of ann may come in between.
                bob.read_until(|l| unstamp(l) == Some(&format!("bob: {text}")));
                sent.store(i, Ordering::SeqCst);
            }
            bob
        })
    };

    let mut heard = Vec::new();
    let mut last_seq = 0;
    for _ in 0..=N {
        let e = ann.next();
        assert_event(&e, "chat", "bob", "#lobby");
        assert!(seq_of(&e) > last_seq, "{e} after seq {last_seq}");
        last_seq = seq_of(&e);
        heard.push(e);
        if heard.len() == 30 {
            break;
        }
    }
    // Gone with the lines on their way to it unread.
    drop(ann);
    ann_gone.send(()).unwrap();
    wait_until("bob to talk on while ann is away", || {
        sent.load(Ordering::SeqCst) >= 90
    });

    let mut again = JsonClient::connect(&server);
    again.send(&json!({"type": "hello", "nick": "ann2", "after": last_seq}));
    let welcome = again.next();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert!(
        seq_of(&welcome) >= last_seq,
        "{welcome} after seq {last_seq}"
    );
    // Logged in: bob's last lines are live ones for ann2.
    ann_back.send(()).unwrap();
    let mut saw_leave = false;
    let mut saw_join = false;
    for _ in 0..N * 2 {
        if saw_join && texts_of(&heard, "bob").len() == N {
            break;
        }
        let e = again.next();
        assert_eq!(e["type"], "event", "only events after the welcome: {e}");
        assert!(seq_of(&e) > last_seq, "{e} after seq {last_seq}");
        last_seq = seq_of(&e);
        match (e["kind"].as_str(), e["from"].as_str()) {
            (Some("leave"), Some("ann")) => saw_leave = true,
            // The lobby's owner left: bob is the longest present now.
            (Some("owner"), Some("bob")) => {}
            (Some("join"), Some("ann2")) => saw_join = true,
            (Some("chat"), Some("bob")) => heard.push(e),
            _ => panic!("an event nobody caused: {e}"),
        }
    }
    let expected: Vec<String> = (1..=N).map(|i| format!("m{i:03}")).collect();
    assert_eq!(texts_of(&heard, "bob"), expected);
    assert!(saw_leave, "ann's own leave was not replayed");
    assert!(saw_join, "ann2's join did not come");
    let mut bob = talker.join().expect("bob's thread");
    // Nothing more is owed: the next line is a new one.
    bob.send_line("end");
    bob.read_until(|l| unstamp(l) == Some("bob: end"));
    assert_eq!(
        expect_event(&mut again, "chat", "bob", "#lobby")["text"],
        "end"
    );
}

#[test]
fn a_resume_past_resume_max_starts_with_a_gap_then_the_newest_events() {
    let server = Server::start_with(&["--resume-max", "5"]);
    let mut bob = server.login("bob");
    let (mut ann, welcome) = JsonClient::hello(&server, "ann");
    assert_eq!(welcome["resume_max"], 5);
    bob.expect_stamped("* ann has joined the chat.");
    ann.send(&json!({"type": "say", "text": "mark"}));
    let after = seq_of(&expect_event(&mut ann, "chat", "ann", "#lobby"));
    bob.expect_stamped("ann: mark");
    drop(ann);
    bob.expect_stamped("* ann has left the chat.");
    for i in 1..=20 {
        bob.send_line(&format!("m{i:02}"));
        bob.expect_stamped(&format!("bob: m{i:02}"));
    }

    // The nickname is free again: ann's leave has been told.
    let mut ann = JsonClient::connect(&server);
    ann.send(&json!({"type": "hello", "nick": "ann", "after": after}));
    assert_eq!(ann.next()["type"], "welcome");
    let gap = ann.next();
    assert_eq!(gap["type"], "gap", "{gap}");
    assert_eq!(gap["after"], after, "{gap}");
    let mut replayed = Vec::new();
    for _ in 0..5 {
        replayed.push(expect_event(&mut ann, "chat", "bob", "#lobby"));
    }
    assert_eq!(gap["next"], replayed[0]["seq"], "{gap}");
    assert_eq!(
        texts_of(&replayed, "bob"),
        ["m16", "m17", "m18", "m19", "m20"]
    );
    let seqs: Vec<u64> = replayed.iter().map(seq_of).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(seqs[0] > after + 1, "the gap hides nothing: {seqs:?}");

    // Then live events.
    let join = expect_event(&mut ann, "join", "ann", "#lobby");
    assert!(seq_of(&join) > seqs[4]);
    bob.expect_stamped("* ann has joined the chat.");
    bob.send_line("live");
    bob.expect_stamped("bob: live");
    let live = expect_event(&mut ann, "chat", "bob", "#lobby");
    assert_eq!(live["text"], "live");
    assert!(seq_of(&live) > seq_of(&join));
}

#[test]
fn a_hello_may_name_rooms_and_a_resume_then_replays_them_too() {
    let server = Server::start();
    let mut bob = server.login("bob");
    bob.send_line("/join #lab2");
    bob.read_until(|l| l.ends_with("* bob has joined #lab2."));
    let mut ann = JsonClient::connect(&server);
    ann.send(&json!({"type": "hello", "nick": "ann", "rooms": ["#Lab2", "#bad*room"], "id": 1}));
    let welcome = expect_reply(&mut ann, "welcome", &json!(1));
    assert_eq!(
        (&welcome["rooms"], &welcome["room"]),
        (&json!(["#lobby", "#lab2"]), &json!("#lab2")),
        "{welcome}"
    );
    // A name that is no room is refused on its own; the login goes on.
    expect_error_for(&mut ann, "bad_room", Some(&json!(1)));
    expect_event(&mut ann, "join", "ann", "#lobby");
    let joined = expect_event(&mut ann, "join", "ann", "#lab2");
    // bob talks in #lab2, so the lobby's line names its room.
    bob.expect_stamped("#lobby * ann has joined the chat.");
    bob.expect_stamped("* ann has joined #lab2.");
    let after = seq_of(&joined);

    // ann's connection drops; the room talks on; ann comes back in the
    // same rooms and is given what she missed in both.
    drop(ann);
    bob.expect_stamped("* ann has left the chat.");
    bob.send_line("in the lab");
    bob.expect_stamped("bob: in the lab");
    bob.send_line("/join #lobby");
    bob.expect("Now talking in #lobby.");
    bob.send_line("in the lobby");
    bob.expect_stamped("bob: in the lobby");
    let mut ann = JsonClient::connect(&server);
    ann.send(&json!({"type": "hello", "nick": "ann", "rooms": ["#lab2"], "after": after}));
    assert_eq!(ann.next()["type"], "welcome");
    let left = expect_event(&mut ann, "leave", "ann", "#lobby");
    expect_event(&mut ann, "leave", "ann", "#lab2");
    let lab = expect_event(&mut ann, "chat", "bob", "#lab2");
    let lobby = expect_event(&mut ann, "chat", "bob", "#lobby");
    assert_eq!(
        (&lab["text"], &lobby["text"]),
        (&json!("in the lab"), &json!("in the lobby"))
    );
    assert!(seq_of(&left) == after + 1, "nothing skipped: {left}");
    // Then the live joins, and nothing else.
    expect_event(&mut ann, "join", "ann", "#lobby");
    expect_event(&mut ann, "join", "ann", "#lab2");
    assert_eq!(ann.next_within(Duration::from_millis(200)), None);
}

#[test]
fn a_hello_with_a_session_token_takes_that_session_over() {
    let server = Server::start();
    let (mut old, welcome) = JsonClient::hello(&server, "ann");
    let token = welcome["session"].as_str().expect("a session token");
    let (mut bob, _) = JsonClient::hello(&server, "bob");
    expect_event(&mut old, "join", "bob", "#lobby");

    let mut stranger = JsonClient::connect(&server);
    stranger.send(&json!({"type": "hello", "nick": "cid", "session": "0".repeat(32), "id": 1}));
    expect_error_for(&mut stranger, "unknown_session", Some(&json!(1)));

    let mut new = JsonClient::connect(&server);
    new.send(&json!({"type": "hello", "nick": "ann", "session": token, "id": 2}));
    assert_eq!(expect_reply(&mut new, "welcome", &json!(2))["nick"], "ann");
    old.expect_error("taken_over");
    old.expect_closed();
    // The room saw no leave and no join: the next line of each is ann's.
    new.send(&json!({"type": "say", "text": "still me"}));
    expect_event(&mut new, "chat", "ann", "#lobby");
    expect_event(&mut bob, "chat", "ann", "#lobby");
}

// ---------------------------------------------------------------------------
// 8. A new hub.
// ---------------------------------------------------------------------------

#[test]
fn a_program_stays_connected_across_a_killed_hub_and_numbers_go_on() {
    let server = Server::start();
    let (mut ann, welcome) = JsonClient::hello(&server, "ann");
    let mut bob = server.login("bob");
    let mut newest = seq_of(&welcome);
    newest = newest.max(seq_of(&expect_event(&mut ann, "join", "bob", "#lobby")));
    bob.send_line("before");
    bob.expect_stamped("bob: before");
    newest = newest.max(seq_of(&expect_event(&mut ann, "chat", "bob", "#lobby")));

    server.kill_hub_and_wait_for_new();
    // A request sent before the child reached the new hub could be lost
    // with the old one (and answered server_busy).
    for nick in ["ann", "bob"] {
        server.wait_for_log(&format!("{nick} rejoined from"));
    }
    assert_eq!(
        ann.next_within(Duration::from_millis(200)),
        None,
        "a program is told nothing of a new hub"
    );

    ann.send(&json!({"type": "say", "text": "after", "id": "a"}));
    let after = expect_event(&mut ann, "chat", "ann", "#lobby");
    assert!(
        seq_of(&after) > newest,
        "seq {} after the new hub, {newest} before",
        seq_of(&after)
    );
    expect_reply(&mut ann, "ok", &json!("a"));
    bob.expect_stamped("ann: after");
    ann.send(&json!({"type": "users", "id": 2}));
    let users = expect_reply(&mut ann, "users", &json!(2));
    assert_eq!(users["nicks"], json!(["ann", "bob"]));
}

// ---------------------------------------------------------------------------
// 9. A full server.
// ---------------------------------------------------------------------------

/// Bytes the kernel holds unread on the server's side of the connection
/// from local port `client_port` (from /proc/net/tcp), if it is listed.
fn unread_at_server(server_port: u16, client_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|row| {
        let fields: Vec<&str> = row.split_whitespace().collect();
        if fields.len() < 5
            || port(fields[1]) != Some(server_port)
            || port(fields[2]) != Some(client_port)
        {
            return None;
        }
        let (_, rx) = fields[4].split_once(':')?;
        u64::from_str_radix(rx, 16).ok()
    })
}

#[test]
fn a_full_server_refuses_a_program_with_server_full() {
    let server = Server::start_with(&["--max-clients", "1"]);
    let _alice = server.login("alice");
    let hello = json!({"type": "hello", "nick": "bot"});

    // The parent does not wait for the hello: as it races the refusal, the
    // documented plain-text fallback may come instead.
    let mut bot = JsonClient::connect(&server);
    bot.send(&hello);
    let first = bot.line().expect("a refusal line");
    if first.starts_with('{') {
        let refusal: Value = serde_json::from_str(&first).expect("a JSON refusal");
        assert_eq!(
            (&refusal["type"], &refusal["code"]),
            (&json!("error"), &json!("server_full")),
            "{first}"
        );
    } else {
        assert_eq!(first, format!("{SERVER_FULL}\r"));
    }
    bot.expect_closed();

    // With the parent stopped, the hello is surely there when it accepts.
    server.signal(libc::SIGSTOP);
    let mut bot = JsonClient::connect(&server);
    bot.send(&hello);
    let local = bot.stream().local_addr().unwrap().port();
    let arrived = {
        let start = Instant::now();
        loop {
            if unread_at_server(server.port(), local).is_some_and(|n| n > 0) {
                break true;
            }
            if start.elapsed() > DEADLINE {
                break false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    };
    server.signal(libc::SIGCONT);
    assert!(arrived, "the hello never reached the server's socket");
    let refusal = bot.expect_error("server_full");
    assert_eq!(refusal["message"], SERVER_FULL);
    assert!(refusal.get("id").is_none());
    bot.expect_closed();
}
