//! The browser's WebSocket at `/ws`: the handshake and its Origin rule,
//! the JSON protocol of programs carried one message a text frame, and
//! every limit a client can hit. The client is tungstenite's own, over a
//! real socket, as a browser's would be.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{DEADLINE, Server};
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<TcpStream>;

/// Opens the WebSocket, with `origin` if given.
fn open(server: &Server, origin: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut request = format!("ws://{}/ws", server.addr)
        .into_client_request()
        .unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    tungstenite::client(request, stream)
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => panic!("handshake interrupted"),
        })
}

fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).expect("send");
}

/// The next JSON message (answering nothing else on the way).
fn next(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("a message") {
            Message::Text(text) => {
                return serde_json::from_str(&text).expect("one JSON object a message");
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

fn next_of_type(ws: &mut Ws, kind: &str) -> Value {
    for _ in 0..100 {
        let message = next(ws);
        if message["type"] == kind {
            return message;
        }
    }
    panic!("no {kind} in 100 messages");
}

/// Reads until the server's close frame; its code.
fn close_code(ws: &mut Ws) -> CloseCode {
    for _ in 0..100 {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => return frame.code,
            Ok(Message::Close(None)) => panic!("a close frame without a code"),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
    panic!("no close frame in 100 messages");
}

fn hello(ws: &mut Ws, nick: &str) -> Value {
    send(ws, json!({"type": "hello", "nick": nick, "id": 1}));
    let welcome = next(ws);
    assert_eq!(
        (&welcome["type"], &welcome["id"]),
        (&json!("welcome"), &json!(1)),
        "{welcome}"
    );
    welcome
}

#[test]
fn a_browser_chats_with_a_person_on_nc_over_json_messages() {
    let server = Server::start();
    let mut bob = server.login("bob");
    let origin = format!("http://{}", server.addr);
    let mut ws = open(&server, Some(&origin)).expect("the handshake");
    let welcome = hello(&mut ws, "ann");
    assert_eq!(welcome["nick"], "ann");
    bob.expect_stamped("* ann has joined the chat.");

    send(
        &mut ws,
        json!({"type": "say", "text": "hi <img src=x onerror=alert(1)>", "id": 2}),
    );
    let own = next_of_type(&mut ws, "event");
    assert_eq!(
        (&own["kind"], &own["from"]),
        (&json!("join"), &json!("ann"))
    );
    let said = next_of_type(&mut ws, "event");
    assert_eq!(said["text"], "hi <img src=x onerror=alert(1)>");
    assert_eq!(next(&mut ws), json!({"type": "ok", "id": 2}));
    bob.expect_stamped("ann: hi <img src=x onerror=alert(1)>");
    bob.send_line("hello browser");
    bob.expect_stamped("bob: hello browser");
    let heard = next_of_type(&mut ws, "event");
    assert_eq!(
        (&heard["from"], &heard["text"]),
        (&json!("bob"), &json!("hello browser"))
    );

    // A WebSocket ping is answered with a pong of its own.
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    loop {
        match ws.read().expect("the pong") {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"are you there");
                break;
            }
            Message::Text(_) => {}
            other => panic!("{other:?}"),
        }
    }

    // mpchat status tells a browser from a program and a person.
    let mut status = std::process::Command::new(common::binary());
    status.args(["status", "--json", "--port", &server.port().to_string()]);
    let ran = common::run_command(status, DEADLINE).expect("mpchat status");
    let report: Value = serde_json::from_str(&ran.stdout).expect("a JSON report");
    let protocols: Vec<(&str, &str)> = report["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["nick"].as_str().unwrap(), u["protocol"].as_str().unwrap()))
        .collect();
    assert_eq!(protocols, [("bob", "line"), ("ann", "web")]);

    send(&mut ws, json!({"type": "quit", "id": 3}));
    assert_eq!(next(&mut ws), json!({"type": "bye", "id": 3}));
    assert_eq!(close_code(&mut ws), CloseCode::Normal);
    bob.expect_stamped("* ann has left the chat.");
}

#[test]
fn another_site_s_page_is_refused_unless_allowed() {
    let server = Server::start_with(&["--allowed-origin", "https://chat.example.org"]);
    match open(&server, Some("https://evil.example")) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        Err(e) => panic!("expected 403, got {e}"),
        Ok(_) => panic!("another site's page opened the chat"),
    }
    let mut allowed = open(&server, Some("https://chat.example.org")).expect("an allowed origin");
    hello(&mut allowed, "ann");
    // No Origin: not a browser, so no other site's page.
    let mut program = open(&server, None).expect("no Origin");
    hello(&mut program, "prog");
}

#[test]
fn a_message_over_8_kib_is_closed_with_1009() {
    let server = Server::start();
    let mut ws = open(&server, None).unwrap();
    hello(&mut ws, "ann");
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(9000));
    ws.send(Message::text(big)).unwrap();
    assert_eq!(close_code(&mut ws), CloseCode::Size);
}

/// A raw socket after the handshake, for frames no well-behaved client
/// would send.
fn raw_after_handshake(server: &Server) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the handshake's answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    stream
}

/// The code of the close frame the server sends next.
fn raw_close_code(stream: &mut TcpStream) -> u16 {
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    let at = all
        .iter()
        .position(|&b| b == 0x88)
        .unwrap_or_else(|| panic!("no close frame in {all:?}"));
    u16::from_be_bytes([all[at + 2], all[at + 3]])
}

#[test]
fn unmasked_and_invalid_frames_are_closed_with_their_codes() {
    let server = Server::start();
    // A client's frame must be masked.
    let mut stream = raw_after_handshake(&server);
    stream.write_all(&[0x81, 2, b'{', b'}']).unwrap();
    assert_eq!(raw_close_code(&mut stream), 1002);
    // A text frame must be UTF-8.
    let mut stream = raw_after_handshake(&server);
    let mask = [7u8, 7, 7, 7];
    let payload: Vec<u8> = [0xffu8, 0xfe]
        .iter()
        .zip(mask.iter().cycle())
        .map(|(b, m)| b ^ m)
        .collect();
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend_from_slice(&payload);
    stream.write_all(&frame).unwrap();
    assert_eq!(raw_close_code(&mut stream), 1007);
}

#[test]
fn a_browser_resumes_and_takes_its_session_over() {
    let server = Server::start();
    let mut bob = server.login("bob");
    let mut first = open(&server, None).unwrap();
    let welcome = hello(&mut first, "ann");
    let token = welcome["session"].as_str().unwrap().to_string();
    let joined = next_of_type(&mut first, "event");
    bob.expect_stamped("* ann has joined the chat.");
    // A reload: the old page is still connected; the new one presents its
    // token and the last event it saw.
    bob.send_line("while you reload");
    bob.expect_stamped("bob: while you reload");
    let mut second = open(&server, None).unwrap();
    send(
        &mut second,
        json!({"type": "hello", "session": token, "after": joined["seq"]}),
    );
    assert_eq!(next(&mut second)["type"], "welcome");
    let missed = next(&mut second);
    assert_eq!(
        (&missed["from"], &missed["text"]),
        (&json!("bob"), &json!("while you reload"))
    );
    let error = next_of_type(&mut first, "error");
    assert_eq!(error["code"], "taken_over");
    assert_eq!(close_code(&mut first), CloseCode::Away);
    // Nobody saw ann leave or come: bob's next line is her message.
    send(&mut second, json!({"type": "say", "text": "back"}));
    bob.expect_stamped("ann: back");
    let back = next_of_type(&mut second, "event");
    assert_eq!(
        (&back["from"], &back["text"]),
        (&json!("ann"), &json!("back"))
    );
}

#[test]
fn a_page_that_goes_away_without_quitting_keeps_its_session_for_its_return() {
    let server = Server::start();
    let mut bob = server.login("bob");
    let mut page = open(&server, None).unwrap();
    let welcome = hello(&mut page, "ann");
    let token = welcome["session"].as_str().unwrap().to_string();
    let joined = next_of_type(&mut page, "event");
    bob.expect_stamped("* ann has joined the chat.");
    // A reload: the page closes its WebSocket, without quitting.
    page.close(None).unwrap();
    drop(page);
    bob.send_line("while the page loads");
    bob.expect_stamped("bob: while the page loads");
    let mut again = open(&server, None).unwrap();
    send(
        &mut again,
        json!({"type": "hello", "session": token, "after": joined["seq"]}),
    );
    assert_eq!(next(&mut again)["type"], "welcome");
    let missed = next(&mut again);
    assert_eq!(missed["text"], "while the page loads", "{missed}");
    send(&mut again, json!({"type": "say", "text": "reloaded"}));
    // bob saw ann neither leave nor come back.
    bob.expect_stamped("ann: reloaded");
}

#[test]
fn a_page_that_does_not_come_back_leaves_after_thirty_seconds() {
    let server = Server::start();
    let mut cid = open(&server, None).unwrap();
    hello(&mut cid, "cid");
    next_of_type(&mut cid, "event");
    let mut page = open(&server, None).unwrap();
    hello(&mut page, "ann");
    let joined = next_of_type(&mut cid, "event");
    assert_eq!(
        (&joined["kind"], &joined["from"]),
        (&json!("join"), &json!("ann"))
    );
    page.close(None).unwrap();
    drop(page);
    let closed = std::time::Instant::now();
    // The session is held for its page's return; then it ends as any
    // other, and that is the next thing the room hears.
    cid.get_mut()
        .set_read_timeout(Some(std::time::Duration::from_secs(30) + DEADLINE))
        .unwrap();
    let left = next_of_type(&mut cid, "event");
    let held = closed.elapsed();
    assert_eq!(
        (&left["kind"], &left["from"]),
        (&json!("leave"), &json!("ann")),
        "{left}"
    );
    assert!(
        held >= std::time::Duration::from_millis(29_500),
        "ann left {held:?} after her page closed"
    );
}
