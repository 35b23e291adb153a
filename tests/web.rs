//! A web browser on the chat's port: the page and its files, embedded in
//! the binary, and every error a request can get. (The requests here
//! are what a browser or `curl` sends, over a plain socket.)

mod common;

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use common::json::JsonClient;
use common::{DEADLINE, Server};
use serde_json::json;

/// Sends `parts` as separate writes, a moment apart, and returns the
/// response's head and body, having read until the server closed.
fn exchange(server: &Server, parts: &[&[u8]]) -> (String, Vec<u8>) {
    let mut client = JsonClient::connect(server);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // Only to split the request between two segments; nothing is
            // waited for.
            thread::sleep(Duration::from_millis(20));
        }
        client.send_raw(part);
    }
    let all = client.read_to_end();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of the head in {:?}", String::from_utf8_lossy(&all)));
    let head = String::from_utf8(all[..end].to_vec()).expect("a head in ASCII");
    let body = all[end + 4..].to_vec();
    (head, body)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn content_length(head: &str) -> usize {
    header(head, "Content-Length")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head}"))
}

#[test]
fn the_page_and_its_style_are_served_with_their_headers() {
    let server = Server::start();
    for request in [
        &[&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]][..],
        &[b"GE", b"T / HTTP/1.0\r\n\r\n"],
    ] {
        let (head, body) = exchange(&server, request);
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert_eq!(
            header(&head, "Content-Type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(content_length(&head), body.len());
        assert!(String::from_utf8_lossy(&body).contains("<title>mpchat</title>"));
        let policy = header(&head, "Content-Security-Policy").expect("a CSP");
        for rule in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(policy.contains(rule), "{rule} missing from {policy}");
        }
        assert_eq!(header(&head, "X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(header(&head, "Referrer-Policy"), Some("no-referrer"));
        assert_eq!(header(&head, "Connection"), Some("close"));
    }
    let (head, body) = exchange(&server, &[b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"]);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(body.is_empty(), "HEAD has no body");
    assert!(content_length(&head) > 0);
    for (path, content_type) in [
        ("/style.css?v=1", "text/css; charset=utf-8"),
        ("/chat.js", "text/javascript; charset=utf-8"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (head, body) = exchange(&server, &[request.as_bytes()]);
        assert_eq!(header(&head, "Content-Type"), Some(content_type), "{path}");
        assert_eq!(content_length(&head), body.len());
    }

    // None of them became a user.
    let (mut program, _) = JsonClient::hello(&server, "prog");
    program.send(&json!({"type": "users", "id": 1}));
    assert_eq!(program.next_of_type("users")["nicks"], json!(["prog"]));
}

#[test]
fn every_other_request_gets_its_status_and_the_connection_closes() {
    let server = Server::start();
    let long_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let cases: [(&[u8], &str); 5] = [
        (b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
        (b"GET /../etc/passwd HTTP/1.1\r\n\r\n", "404"),
        (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "405"),
        (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", "400"),
        (long_header.as_bytes(), "431"),
    ];
    for (request, status) in cases {
        let (head, body) = exchange(&server, &[request]);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{status} expected for {:?}: {head}",
            String::from_utf8_lossy(&request[..request.len().min(60)])
        );
        assert_eq!(content_length(&head), body.len(), "{head}");
        assert_eq!(header(&head, "Connection"), Some("close"));
        if status == "405" {
            assert_eq!(header(&head, "Allow"), Some("GET, HEAD"));
        }
    }
}

#[test]
fn a_head_that_does_not_arrive_within_ten_seconds_gets_408() {
    let server = Server::start();
    let started = Instant::now();
    let mut client = std::net::TcpStream::connect(server.addr).expect("connect");
    client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    // The answer takes ten seconds: the usual deadline starts after them.
    client
        .set_read_timeout(Some(Duration::from_secs(10) + DEADLINE))
        .unwrap();
    let mut answer = Vec::new();
    client
        .read_to_end(&mut answer)
        .expect("the answer, then the end");
    let waited = started.elapsed();
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 408 "), "{head}");
    assert!(
        waited >= Duration::from_millis(9_500) && waited < Duration::from_secs(10) + DEADLINE,
        "answered after {waited:?}"
    );
}
