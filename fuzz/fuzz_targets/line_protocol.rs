//! The client input path: bytes read from a client, in chunks, through
//! framing, sanitizing and command parsing, as `child.rs` does it.
//!
//! Input layout:
//!
//! * byte 0: its low 4 bits are `k`, the number of split bytes that follow;
//! * the next `k` bytes: chunk sizes, used in turn: a chunk is
//!   `(s & 0x7f) + 1` bytes long, and if `s & 0x80` is set the client
//!   pauses after it (the 200 ms fragment rule fires);
//! * the rest: the byte stream from the client. With `k == 0` it arrives
//!   as one read.
//!
//! Two readers see the stream: one gets the chunks and never waits (so it
//! must frame exactly like a single read of the whole stream), one also
//! gets the pauses. Both end with EOF (`take_partial`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mpchat::protocol::ipc::{self, ToHub};
use mpchat::protocol::command::{
    self, Command, MAX_NICK_CHARS, MAX_SCHEDULE_SECONDS, Request, When,
};
use mpchat::protocol::framing::{Line, LineReader, MAX_LINE};
use mpchat::protocol::sanitize::{is_forbidden, sanitize};

fuzz_target!(|data: &[u8]| {
    let Some((&header, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(header & 0x0f).min(rest.len());
    let (sizes, stream) = rest.split_at(k);
    let chunks = split(stream, sizes);

    // One read of everything, then EOF.
    let whole = read_all(&[(stream, false)]);
    // The same bytes in chunks, with no time passing between them.
    let unpaused: Vec<(&[u8], bool)> = chunks.iter().map(|&(c, _)| (c, false)).collect();
    let split_lines = read_all(&unpaused);
    assert_eq!(
        split_lines, whole,
        "splitting the reads changed the lines (stream {stream:?}, sizes {sizes:?})"
    );
    // The same chunks, where the flagged pauses end a fragment.
    let paused_lines = read_all(&chunks);

    for line in whole.iter().chain(&paused_lines) {
        check_line(line);
    }
    if !stream.contains(&0xff) {
        check_against_model(stream, &whole);
    }
    for line in whole.iter().chain(&paused_lines) {
        let text = sanitize(&line.bytes);
        check_sanitized(&line.bytes, &text);
        if !text.is_empty() {
            check_login(&text);
            check_command(&text);
        }
    }
});

/// Cuts the stream into chunks by the split sizes; each chunk says whether
/// the client pauses after it.
fn split<'a>(stream: &'a [u8], sizes: &[u8]) -> Vec<(&'a [u8], bool)> {
    if sizes.is_empty() {
        return vec![(stream, false)];
    }
    let mut chunks = Vec::new();
    let mut rest = stream;
    for &s in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let len = (usize::from(s & 0x7f) + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        chunks.push((chunk, s & 0x80 != 0));
        rest = tail;
    }
    chunks
}

/// Feeds the chunks to a fresh reader as `child.rs` does: a pause after a
/// chunk takes the pending fragment, and so does EOF at the end.
fn read_all(chunks: &[(&[u8], bool)]) -> Vec<Line> {
    let mut reader = LineReader::new();
    let mut out = Vec::new();
    for &(chunk, pause) in chunks {
        reader.push(chunk, &mut out);
        if pause {
            out.extend(reader.take_partial());
        }
    }
    out.extend(reader.take_partial());
    assert!(!reader.has_partial(), "a fragment is left after EOF");
    out
}

/// What framing promises for every line, whatever the timing.
fn check_line(line: &Line) {
    assert!(!line.bytes.is_empty(), "blank line handed out: {line:?}");
    assert!(
        line.bytes.len() <= MAX_LINE,
        "line of {} bytes, over the {MAX_LINE}-byte cap",
        line.bytes.len()
    );
    assert!(
        !line.bytes.iter().any(|&b| b == b'\r' || b == b'\n'),
        "line end inside a line: {line:?}"
    );
    if line.truncated {
        // Cut at MAX_LINE, stepping back at most to the start of a
        // character (4 bytes at most).
        assert!(
            line.bytes.len() > MAX_LINE - 4,
            "truncated line cut short at {} bytes",
            line.bytes.len()
        );
    }
}

/// For a stream without 0xFF (so without telnet commands), framing is
/// fully specified by README's "Protocol details": a line ends at LF,
/// CR LF, CR NUL or a bare CR, blank lines are ignored, a line over
/// MAX_LINE bytes is cut at MAX_LINE on a character boundary and the rest
/// of it is dropped, and a fragment pending at EOF is a line.
fn check_against_model(stream: &[u8], got: &[Line]) {
    let mut want: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < stream.len() {
        match stream[i] {
            b'\r' => {
                want.push(&stream[start..i]);
                if matches!(stream.get(i + 1), Some(b'\n' | 0)) {
                    i += 1;
                }
                start = i + 1;
            }
            b'\n' => {
                want.push(&stream[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    want.push(&stream[start.min(stream.len())..]);
    want.retain(|l| !l.is_empty());

    assert_eq!(
        got.len(),
        want.len(),
        "line count differs from the model: got {got:?}, want {want:?}"
    );
    for (line, &full) in got.iter().zip(&want) {
        if full.len() <= MAX_LINE {
            assert_eq!(line.bytes, full, "line differs from the model");
            assert!(!line.truncated, "a line within the cap marked truncated");
            continue;
        }
        assert!(line.truncated, "a line over the cap not marked truncated");
        assert!(
            full.starts_with(&line.bytes),
            "a cut line is not a prefix of what was sent"
        );
        if let Ok(text) = std::str::from_utf8(full) {
            let mut cut = MAX_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            assert_eq!(
                line.bytes.len(),
                cut,
                "a UTF-8 line was not cut at the last character boundary up to {MAX_LINE}"
            );
        }
    }
}

/// What sanitizing promises (see the module doc of `sanitize`).
fn check_sanitized(bytes: &[u8], text: &str) {
    assert!(
        !text.chars().any(|c| is_forbidden(c) || c == '\t'),
        "forbidden character survived: {text:?} from {bytes:?}"
    );
    assert_eq!(text, text.trim(), "surrounding whitespace kept");
    assert_eq!(
        sanitize(text.as_bytes()),
        text,
        "sanitizing twice changed the text (from {bytes:?})"
    );
    // Text with nothing to remove is only trimmed.
    if let Ok(plain) = std::str::from_utf8(bytes)
        && !plain.chars().any(|c| is_forbidden(c) || c == '\t')
    {
        assert_eq!(text, plain.trim(), "plain text was changed");
    }
}

/// A line at the nickname prompt.
fn check_login(text: &str) {
    let _ = command::is_quit(text);
    check_nick(text);
    let login = ToHub::Login {
        nick: text.to_string(),
        addr: "192.0.2.1:4000".to_string(),
    };
    check_wire(&login);
}

/// What a nickname that passes `check_nick` is promised to be.
fn check_nick(nick: &str) {
    match command::check_nick(nick) {
        Ok(()) => {
            let count = nick.chars().count();
            assert!(
                (1..=MAX_NICK_CHARS).contains(&count),
                "nickname of {count} characters accepted: {nick:?}"
            );
            assert!(
                nick.chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.')),
                "nickname with a disallowed character accepted: {nick:?}"
            );
            assert!(
                !nick.starts_with('/') && !nick.contains(['*', '[']),
                "nickname that can pass for a command or a server line: {nick:?}"
            );
        }
        Err(reason) => {
            if !nick.chars().any(is_forbidden) {
                assert!(
                    !reason.chars().any(is_forbidden),
                    "refusal line holds a control character: {reason:?}"
                );
            }
        }
    }
}

/// A line from a registered user.
fn check_command(text: &str) {
    let parsed = command::parse(text);
    assert_eq!(command::is_quit(text), parsed == Command::Quit);
    match &parsed {
        Command::Request(request) => {
            check_request(text, request);
            check_wire(&ToHub::Request(request.clone()));
        }
        Command::Unknown(word) => {
            assert!(
                word.starts_with('/'),
                "unknown command {word:?} from {text:?}"
            );
        }
        Command::Help | Command::Quit | Command::Usage(_) => {}
    }
    if !text.starts_with('/') && text != "END" {
        assert_eq!(
            parsed,
            Command::Request(Request::Say(text.to_string())),
            "a plain line is not a chat message"
        );
    }
}

fn check_request(text: &str, request: &Request) {
    match request {
        Request::Say(said) => assert_eq!(said, text),
        Request::Whisper { to, text: said } => {
            assert!(!to.is_empty() && !said.is_empty(), "{request:?}");
            assert!(!to.contains(char::is_whitespace), "{request:?}");
        }
        Request::Me(arg) | Request::Kick(arg) => assert!(!arg.is_empty(), "{request:?}"),
        Request::Rename(nick) => {
            assert!(!nick.is_empty(), "{request:?}");
            // The child checks the new name before asking the hub.
            check_nick(nick);
        }
        Request::Schedule { when, text: said } => {
            assert!(!said.is_empty(), "{request:?}");
            match *when {
                When::Clock { hour, minute } => assert!(hour < 24 && minute < 60, "{when:?}"),
                When::In { seconds } => {
                    assert!((1..=MAX_SCHEDULE_SECONDS).contains(&seconds), "{when:?}")
                }
            }
        }
        Request::ScheduleCancel(n) => assert!(*n >= 1),
        Request::History(n) => assert!((1..=mpchat::protocol::command::MAX_HISTORY).contains(n)),
        Request::Users | Request::ScheduleList => {}
    }
}

/// Client text carried to the hub cannot split or forge a message: one
/// LF, at the end, and it decodes to what was sent.
fn check_wire(msg: &ToHub) {
    let bytes = ipc::encode(msg);
    assert_eq!(bytes.last(), Some(&b'\n'));
    assert_eq!(
        bytes.iter().filter(|&&b| b == b'\n' || b == b'\r').count(),
        1,
        "client text put a line end in the message: {bytes:?}"
    );
    let back: ToHub = ipc::decode(&bytes).expect("an encoded message decodes");
    assert_eq!(&back, msg);
}
