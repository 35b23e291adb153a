//! A client for the JSON-lines protocol of programs (PROTOCOL.md), on a
//! real socket like the harness's [`Client`](super::Client).
//!
//! Every read has a deadline and fails the test with what it had so far.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{DEADLINE, LineRead, Server, read_line_within};

pub struct JsonClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl JsonClient {
    pub fn connect(server: &Server) -> JsonClient {
        let stream = TcpStream::connect(server.addr).expect("connect to mpchat");
        // Each write goes out as its own segment, so a test that splits
        // its bytes really splits them.
        stream.set_nodelay(true).expect("TCP_NODELAY");
        JsonClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and logs in as `nick` at once (programs speak first);
    /// returns the `welcome`, having read this client's own `join` too.
    pub fn hello(server: &Server, nick: &str) -> (JsonClient, Value) {
        let mut client = JsonClient::connect(server);
        client.send(&json!({"type": "hello", "nick": nick}));
        let welcome = client.next();
        assert_eq!(welcome["type"], "welcome", "answer to hello: {welcome}");
        assert_eq!(welcome["nick"], nick, "welcome: {welcome}");
        let join = client.next();
        assert_eq!(
            (&join["type"], &join["kind"], &join["from"], &join["room"]),
            (
                &json!("event"),
                &json!("join"),
                &json!(nick),
                &json!("#lobby")
            ),
            "the line after the welcome: {join}"
        );
        (client, welcome)
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends `value` as one line.
    pub fn send(&mut self, value: &Value) {
        let mut line = serde_json::to_vec(value).expect("serialize a request");
        line.push(b'\n');
        self.send_raw(&line);
    }

    /// Sends bytes exactly as given.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to mpchat");
    }

    fn read_within(&mut self, wait: Duration) -> LineRead {
        read_line_within(&self.stream, &mut self.buf, wait)
    }

    /// The next line exactly as sent, without its LF; `None` at EOF.
    pub fn line(&mut self) -> Option<String> {
        match self.read_within(DEADLINE) {
            LineRead::Line(line) => Some(line),
            LineRead::Closed => None,
            LineRead::Quiet => panic!(
                "no complete line within {DEADLINE:?}; have {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    fn parse(line: &str) -> Value {
        assert!(!line.ends_with('\r'), "a JSON line ends in CRLF: {line:?}");
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line: {line:?}: {e}"));
        assert!(value.is_object(), "not a JSON object: {line:?}");
        value
    }

    /// The next line, which must be a JSON object.
    pub fn next(&mut self) -> Value {
        let line = self
            .line()
            .expect("connection closed, expected a JSON line");
        JsonClient::parse(&line)
    }

    /// The next line if one comes within `wait`; fails the test at EOF.
    pub fn next_within(&mut self, wait: Duration) -> Option<Value> {
        match self.read_within(wait) {
            LineRead::Line(line) => Some(JsonClient::parse(&line)),
            LineRead::Closed => panic!("connection closed, expected a JSON line or silence"),
            LineRead::Quiet => None,
        }
    }

    /// The next line of type `kind`, skipping lines of other types.
    pub fn next_of_type(&mut self, kind: &str) -> Value {
        let start = Instant::now();
        let mut skipped = 0;
        loop {
            assert!(
                start.elapsed() < DEADLINE && skipped < 100_000,
                "no {kind:?} line within {DEADLINE:?} ({skipped} others skipped)"
            );
            let value = self.next();
            if value["type"] == kind {
                return value;
            }
            skipped += 1;
        }
    }

    /// Asserts the next line is an error with `code`, and returns it.
    pub fn expect_error(&mut self, code: &str) -> Value {
        let line = self.next();
        assert_eq!(
            (&line["type"], &line["code"]),
            (&json!("error"), &json!(code)),
            "expected error {code}, got {line}"
        );
        assert!(line["message"].is_string(), "no message: {line}");
        line
    }

    /// Asserts the connection closes with no further line.
    pub fn expect_closed(&mut self) {
        if let Some(line) = self.line() {
            panic!("expected the connection to close, got line {line:?}");
        }
    }

    /// Everything the server sends until it closes the connection.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let start = Instant::now();
        let mut all = std::mem::take(&mut self.buf);
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            assert!(
                !left.is_zero(),
                "not closed within {DEADLINE:?}; have {:?}",
                String::from_utf8_lossy(&all)
            );
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return all,
                Err(e) => panic!("read from mpchat: {e}"),
            }
        }
    }
}
