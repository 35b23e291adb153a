//! The messages between children and the hub (`mpchat::protocol::ipc`): a datagram
//! of arbitrary bytes split with `events`, and arbitrary bytes decoded as
//! `ToHub` and as `ToChild`. Nothing may panic, and whatever decodes must
//! survive encoding: decoded again it is the same value, and on the wire
//! it is exactly one message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mpchat::protocol::ipc::{self, Event, ToChild, ToHub};

fuzz_target!(|data: &[u8]| {
    // A datagram from the hub, as a child splits it. Every piece is a
    // message or an error; keep what parsed, to send it again below.
    let mut received = Vec::new();
    let mut pieces = 0;
    for event in ipc::events(data) {
        pieces += 1;
        match event {
            Ok(Event::ClientLine(bytes)) => {
                assert!(bytes.ends_with(b"\r\n"), "client line without CR LF");
                assert_eq!(
                    bytes.iter().filter(|&&b| b == b'\n').count(),
                    1,
                    "client line holding another line end: {bytes:?}"
                );
                if let Ok(text) = std::str::from_utf8(&bytes[..bytes.len() - 2]) {
                    received.push(ToChild::Line(text.to_string()));
                }
            }
            Ok(Event::Other(msg)) => received.push(msg),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidData),
        }
    }
    assert_eq!(
        pieces,
        data.split_inclusive(|&b| b == b'\n').count(),
        "events did not give one item per LF-ended piece"
    );
    for msg in &received {
        check_to_child(msg);
    }
    // The hub sends many messages in one datagram: they come back out
    // one by one, in order.
    let batch: Vec<u8> = received.iter().flat_map(ToChild::encode).collect();
    let events: Vec<_> = ipc::events(&batch)
        .map(|e| e.expect("an encoded message decodes"))
        .collect();
    let want: Vec<Vec<u8>> = received.iter().map(wire_form).collect();
    assert_eq!(
        events.len(),
        received.len(),
        "batch split into the wrong count"
    );
    for ((event, msg), form) in events.iter().zip(&received).zip(&want) {
        expect_event(event, msg, form);
    }

    if let Ok(msg) = ipc::decode::<ToHub>(data) {
        check_to_hub(&msg);
    }
    if let Ok(msg) = ipc::decode::<ToChild>(data) {
        check_to_child(&msg);
    }
});

fn check_to_hub(msg: &ToHub) {
    let bytes = ipc::encode(msg);
    check_json_line(&bytes);
    let back: ToHub = ipc::decode(&bytes).expect("an encoded ToHub decodes");
    assert_eq!(&back, msg, "ToHub changed through encode and decode");
}

fn check_to_child(msg: &ToChild) {
    // As JSON, like every other message.
    let bytes = ipc::encode(msg);
    check_json_line(&bytes);
    let back: ToChild = ipc::decode(&bytes).expect("an encoded ToChild decodes");
    assert_eq!(&back, msg, "ToChild changed through encode and decode");

    // In its wire form: exactly one message.
    let wire = msg.encode();
    let events: Vec<_> = ipc::events(&wire).collect();
    assert_eq!(
        events.len(),
        1,
        "{msg:?} encoded as {wire:?}: not one message"
    );
    let event = events[0].as_ref().expect("an encoded ToChild decodes");
    expect_event(event, msg, &wire_form(msg));
}

/// One JSON value, ended by its only line end.
fn check_json_line(bytes: &[u8]) {
    assert_eq!(bytes.last(), Some(&b'\n'));
    assert_eq!(
        bytes.iter().filter(|&&b| b == b'\n' || b == b'\r').count(),
        1,
        "line end inside an encoded message: {bytes:?}"
    );
}

/// What a child should get for `msg`: for a line, the text with any line
/// end made a space, then CR LF; for anything else, the message itself.
fn wire_form(msg: &ToChild) -> Vec<u8> {
    match msg {
        ToChild::Line(text) => {
            let mut bytes = text.replace(['\r', '\n'], " ").into_bytes();
            bytes.extend_from_slice(b"\r\n");
            bytes
        }
        _ => Vec::new(),
    }
}

fn expect_event(event: &Event, msg: &ToChild, form: &[u8]) {
    match (msg, event) {
        (ToChild::Line(_), Event::ClientLine(bytes)) => {
            assert_eq!(*bytes, form, "a line reached the child changed");
        }
        (_, Event::Other(got)) if !matches!(msg, ToChild::Line(_)) => {
            assert_eq!(got, msg, "a message reached the child changed");
        }
        _ => panic!("{msg:?} arrived as {event:?}"),
    }
}
