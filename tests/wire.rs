//! The wire protocol as a client meets it: line ends, telnet negotiation,
//! sanitizing, invalid UTF-8, the line length cap, the 200 ms fragment rule
//! and pastes. Every test talks to the real binary over real sockets.
//!
//! What must NOT arrive is proven by ordering: a later chat line is asserted
//! to be the very next line.

mod common;
use common::*;

use std::thread;
use std::time::Duration;

/// A pause the server must tolerate between two halves of something; no
/// assertion depends on it being long or short.
const PAUSE: Duration = Duration::from_millis(50);

const TOO_LONG: &str = "Line too long (max 512 bytes); truncated.";

/// Logs in `alice`, then `bob`; both have read everything up to bob's join.
/// Alice's socket has TCP_NODELAY, so each write leaves as its own segment.
fn alice_and_bob(server: &Server) -> (Client, Client) {
    let mut alice = server.login("alice");
    alice.stream().set_nodelay(true).unwrap();
    let bob = server.login("bob");
    alice.expect_stamped("* bob has joined the chat.");
    (alice, bob)
}

/// Both alice (her own echo) and bob see `alice: <text>` as their next line.
fn both_see(alice: &mut Client, bob: &mut Client, text: &str) {
    let expected = format!("alice: {text}");
    alice.expect_stamped(&expected);
    bob.expect_stamped(&expected);
}

/// Sends `marker` as a normal line and asserts it is the very next line both
/// see: proves nothing else was delivered before it.
fn next_is(alice: &mut Client, bob: &mut Client, marker: &str) {
    alice.send_line(marker);
    both_see(alice, bob, marker);
}

// 1. Line ends -------------------------------------------------------------

#[test]
fn lf_crlf_cr_nul_and_bare_cr_each_end_one_line() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    alice.send_bytes(b"one\ntwo\r\nthree\r\0four\rfive\n");
    for text in ["one", "two", "three", "four", "five"] {
        both_see(&mut alice, &mut bob, text);
    }
    next_is(&mut alice, &mut bob, "six");
}

#[test]
fn line_end_at_the_end_of_a_write_ends_the_line() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    // Each kind of line end as the last bytes of a write.
    alice.send_bytes(b"lf\n");
    both_see(&mut alice, &mut bob, "lf");
    alice.send_bytes(b"crlf\r\n");
    both_see(&mut alice, &mut bob, "crlf");
    alice.send_bytes(b"crnul\r\0");
    both_see(&mut alice, &mut bob, "crnul");
    alice.send_bytes(b"bare cr\r");
    both_see(&mut alice, &mut bob, "bare cr");
    next_is(&mut alice, &mut bob, "after");
}

#[test]
fn crlf_and_cr_nul_split_across_writes_are_one_line_end() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    // The CR arrives alone and ends the line; its LF (or NUL) comes in a
    // later write, after the server has already acted on the line, and
    // must not count as a second line end.
    alice.send_bytes(b"first\r");
    both_see(&mut alice, &mut bob, "first");
    alice.send_bytes(b"\nsecond\r");
    both_see(&mut alice, &mut bob, "second");
    alice.send_bytes(b"\0third\r");
    both_see(&mut alice, &mut bob, "third");
    // With a short pause between the halves as well.
    alice.send_bytes(b"\n");
    thread::sleep(PAUSE);
    alice.send_bytes(b"fourth\r");
    thread::sleep(PAUSE);
    alice.send_bytes(b"\nfifth\r\n");
    both_see(&mut alice, &mut bob, "fourth");
    both_see(&mut alice, &mut bob, "fifth");
    next_is(&mut alice, &mut bob, "sixth");
}

// 2. Telnet ----------------------------------------------------------------

const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const GA: u8 = 249;
const AYT: u8 = 246;
const NOP: u8 = 241;
const SE: u8 = 240;
const ECHO: u8 = 1;
const SGA: u8 = 3;
const TTYPE: u8 = 24;
const NAWS: u8 = 31;

#[test]
fn telnet_negotiation_is_removed_from_chat_lines() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    let mut line = Vec::new();
    line.extend_from_slice(&[IAC, DO, ECHO]);
    line.extend_from_slice(b"hi");
    line.extend_from_slice(&[IAC, WILL, SGA]);
    line.extend_from_slice(b" there");
    line.extend_from_slice(&[IAC, WONT, ECHO]);
    line.extend_from_slice(b",");
    line.extend_from_slice(&[IAC, DONT, SGA]);
    line.extend_from_slice(b" you");
    line.extend_from_slice(&[IAC, SB, TTYPE, 0]);
    line.extend_from_slice(b"xterm-256color");
    line.extend_from_slice(&[IAC, SE]);
    line.extend_from_slice(b"!");
    line.extend_from_slice(&[IAC, NOP, IAC, GA, IAC, AYT]);
    line.extend_from_slice(&[IAC, SB, NAWS, 0, 80, 0, 24, IAC, SE]);
    line.extend_from_slice(b"\r\n");
    alice.send_bytes(&line);
    both_see(&mut alice, &mut bob, "hi there, you!");
    // A line that is nothing but negotiation is no line at all.
    let mut only = vec![IAC, WILL, TTYPE, IAC, DO, SGA, IAC, NOP];
    only.extend_from_slice(&[IAC, SB, TTYPE, 1, IAC, SE, b'\r', b'\n']);
    alice.send_bytes(&only);
    next_is(&mut alice, &mut bob, "after");
}

#[test]
fn telnet_subnegotiation_may_hold_escaped_iac_and_line_ends() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    // Inside SB ... SE everything is the option's data, even IAC IAC,
    // CR and LF; none of it reaches the chat or ends a line.
    let mut line = b"a".to_vec();
    line.extend_from_slice(&[
        IAC, SB, TTYPE, 0, b'x', IAC, IAC, b'\r', b'\n', b'y', IAC, SE,
    ]);
    line.extend_from_slice(b"b\n");
    alice.send_bytes(&line);
    both_see(&mut alice, &mut bob, "ab");
    next_is(&mut alice, &mut bob, "after");
}

#[test]
fn escaped_iac_is_a_data_byte() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    // IAC IAC is one 0xFF data byte, which is not UTF-8.
    alice.send_bytes(b"a\xff\xffb\n");
    both_see(&mut alice, &mut bob, "a\u{fffd}b");
}

#[test]
fn telnet_sequences_split_across_writes_are_removed() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    // Each sequence is split between two writes with a pause between them.
    // The split sits where the line is empty or where its text is complete,
    // so the result is the same whether or not the pause outlasts the
    // 200 ms fragment rule.
    let cases: &[(&[u8], &[u8], &str)] = &[
        (&[IAC], &[DO, ECHO, b'o', b'n', b'e', b'\n'], "one"),
        (&[IAC, WILL], &[SGA, b't', b'w', b'o', b'\n'], "two"),
        (
            &[IAC, SB, TTYPE, 0, b'x', b't'],
            b"erm\xff\xf0three\n",
            "three",
        ),
        (&[IAC, SB, TTYPE, 0, b'x', IAC], b"\xf0four\n", "four"),
        (&[IAC], &[NOP, b'f', b'i', b'v', b'e', b'\n'], "five"),
        (b"six\xff", &[DONT, ECHO, b'\n'], "six"),
        (
            b"seven\xff\xfa",
            &[NAWS, 0, 80, 0, 24, IAC, SE, b'\r', b'\n'],
            "seven",
        ),
        (&[IAC], b"\xffeight\n", "\u{fffd}eight"),
    ];
    for (first, second, text) in cases {
        alice.send_bytes(first);
        thread::sleep(PAUSE);
        alice.send_bytes(second);
        both_see(&mut alice, &mut bob, text);
    }
    next_is(&mut alice, &mut bob, "after");
}

#[test]
fn telnet_negotiation_is_removed_from_the_nickname_line() {
    let server = Server::start();
    let mut alice = server.connect();
    alice.stream().set_nodelay(true).unwrap();
    alice.expect("Welcome to mpchat! Enter your nickname:");
    let mut line = vec![
        IAC, DO, ECHO, IAC, WILL, SGA, IAC, WONT, ECHO, IAC, DONT, SGA,
    ];
    line.extend_from_slice(&[IAC, SB, TTYPE, 0]);
    line.extend_from_slice(b"xterm");
    line.extend_from_slice(&[IAC, SE]);
    line.extend_from_slice(b"ali");
    line.extend_from_slice(&[IAC, NOP]);
    line.extend_from_slice(b"ce\r\0");
    alice.send_bytes(&line);
    alice.expect("Hello, alice! Type /help for commands.");
    alice.expect_stamped("* alice has joined the chat.");

    // Split across two writes, with a pause.
    let mut bob = server.connect();
    bob.stream().set_nodelay(true).unwrap();
    bob.expect("Welcome to mpchat! Enter your nickname:");
    bob.send_bytes(&[IAC, SB, TTYPE]);
    thread::sleep(PAUSE);
    bob.send_bytes(b"\x00xterm\xff\xf0bob\r\n");
    bob.expect("Hello, bob! Type /help for commands.");
    bob.expect_stamped("* bob has joined the chat.");
    alice.expect_stamped("* bob has joined the chat.");
    next_is(&mut alice, &mut bob, "welcome bob");
}

// 3. Escapes and control characters ----------------------------------------

#[test]
fn ansi_escapes_and_control_characters_are_removed() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    let cases: &[(&[u8], &str)] = &[
        (b"\x1b[2J\x1b[Hclear", "clear"),
        (b"\x1b[31mred\x1b[0m alert", "red alert"),
        (b"\x1b[1;32;40mbold green\x1b[m!", "bold green!"),
        (b"\x1b]0;title\x07after osc", "after osc"),
        (
            b"\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\ text",
            "link text",
        ),
        (b"tab\there\tand\tthere", "tab here and there"),
        (
            b"bell\x07 back\x08space del\x7f nul\x00 vt\x0b ff\x0c esc\x1b",
            "bell backspace del nul vt ff esc",
        ),
    ];
    for (line, text) in cases {
        let mut bytes = line.to_vec();
        bytes.push(b'\n');
        alice.send_bytes(&bytes);
        both_see(&mut alice, &mut bob, text);
    }
    // A line that is nothing but escapes and controls is ignored.
    alice.send_bytes(b"\x1b[2J\x1b[H\x07\x08\t\n");
    next_is(&mut alice, &mut bob, "after");
}

#[test]
fn c1_controls_and_bidi_overrides_are_removed() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    let cases: &[(&str, &str)] = &[
        ("a\u{80}b\u{85}c\u{8d}d\u{9f}e", "abcde"),
        ("invoice\u{202e}fdp.exe", "invoicefdp.exe"),
        ("a\u{202a}b\u{202b}c\u{202c}d\u{202d}e\u{202e}f", "abcdef"),
        ("g\u{2066}h\u{2067}i\u{2068}j\u{2069}k", "ghijk"),
        // Ordinary non-ASCII text is left alone.
        ("é ü 漢字 🙂 ← ok", "é ü 漢字 🙂 ← ok"),
    ];
    for (line, text) in cases {
        alice.send_line(line);
        both_see(&mut alice, &mut bob, text);
    }
    alice.send_line("\u{202e}\u{85}\u{2066}");
    next_is(&mut alice, &mut bob, "after");
}

/// U+009B, the one-character CSI, is removed and the text after it kept,
/// wherever a line goes: chat, whisper, scheduled message, nickname.
#[test]
fn the_one_character_csi_costs_no_text_after_it() {
    let server = Server::start();
    let mut carol = server.login("carol");
    let mut dave = server.connect();
    dave.expect("Welcome to mpchat! Enter your nickname:");
    dave.send_line("da\u{9b}ve");
    dave.expect("Hello, dave! Type /help for commands.");
    dave.expect_stamped("* dave has joined the chat.");
    carol.expect_stamped("* dave has joined the chat.");

    carol.send_line("s08A\u{9b}s08Z and \u{9b}2J after");
    for client in [&mut carol, &mut dave] {
        client.expect_stamped("carol: s08As08Z and 2J after");
    }
    carol.send_line("/whisper dave w1\u{9b}s w2");
    carol.expect_stamped("[Whisper to dave] w1s w2");
    dave.expect_stamped("[Whisper from carol] w1s w2");
    carol.send_line("/schedule +1 later\u{9b}m on");
    let confirmation = carol.read_line();
    assert!(
        confirmation.starts_with("Message scheduled for "),
        "{confirmation:?}"
    );
    for client in [&mut carol, &mut dave] {
        client.expect_stamped("[Scheduled by carol] laterm on");
    }
}

// 4. Invalid UTF-8 ---------------------------------------------------------

#[test]
fn invalid_utf8_becomes_replacement_character() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    let cases: &[(&[u8], &str)] = &[
        (b"lone \x80 continuation", "lone \u{fffd} continuation"),
        (b"cut \xc3 short", "cut \u{fffd} short"),
        (b"cut \xe6\xbc at end", "cut \u{fffd} at end"),
        (b"bad \xfe byte", "bad \u{fffd} byte"),
        (b"over\xc0\xaflong", "over\u{fffd}\u{fffd}long"),
        (b"mixed \xc3\xa9\xc3 e", "mixed \u{e9}\u{fffd} e"),
    ];
    for (line, text) in cases {
        let mut bytes = line.to_vec();
        bytes.push(b'\n');
        alice.send_bytes(&bytes);
        both_see(&mut alice, &mut bob, text);
    }
    next_is(&mut alice, &mut bob, "after");
}

#[test]
fn invalid_utf8_ff_byte_becomes_replacement_character() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    // A raw 0xFF from a non-telnet client (nc, the lab client), followed by
    // a byte that is no telnet command.
    alice.send_bytes(b"bad \xff byte\n");
    both_see(&mut alice, &mut bob, "bad \u{fffd} byte");
    next_is(&mut alice, &mut bob, "after");
}

// 5. Long lines ------------------------------------------------------------

#[test]
fn long_line_is_cut_at_512_bytes_and_its_rest_dropped() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    let mut bytes = vec![b'x'; 600];
    bytes.extend_from_slice(b" tail that is dropped\nnext\n");
    alice.send_bytes(&bytes);
    alice.expect(TOO_LONG);
    both_see(&mut alice, &mut bob, &"x".repeat(512));
    // The rest of the long line is gone; the next line is normal.
    both_see(&mut alice, &mut bob, "next");
    next_is(&mut alice, &mut bob, "after");
}

#[test]
fn line_of_exactly_512_bytes_is_not_truncated() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    let text = "y".repeat(512);
    alice.send_line(&text);
    // No notice before the echo.
    both_see(&mut alice, &mut bob, &text);
    let text = format!("{}é", "z".repeat(510));
    assert_eq!(text.len(), 512);
    alice.send_bytes(format!("{text}\r\n").as_bytes());
    both_see(&mut alice, &mut bob, &text);
    next_is(&mut alice, &mut bob, "after");
}

#[test]
fn long_line_is_cut_on_a_character_boundary() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    // (prefix length, character): the character straddles byte 512 or
    // ends exactly there; what is kept is at most 512 bytes of whole
    // characters.
    let cases: &[(usize, &str, &str)] = &[
        (511, "é", ""),    // bytes 511..513: dropped
        (511, "漢", ""),   // bytes 511..514: dropped
        (510, "漢", ""),   // bytes 510..513: dropped
        (509, "🙂", ""),   // bytes 509..513: dropped
        (508, "🙂", "🙂"), // bytes 508..512: kept whole
        (510, "é", "é"),   // bytes 510..512: kept whole
    ];
    // All in one write: every line gets its notice and its message, in
    // order.
    let mut bytes = Vec::new();
    for (prefix, ch, _) in cases {
        bytes.extend_from_slice("x".repeat(*prefix).as_bytes());
        bytes.extend_from_slice(ch.as_bytes());
        bytes.extend_from_slice("ñ and more".as_bytes());
        bytes.push(b'\n');
    }
    alice.send_bytes(&bytes);
    for (prefix, _, kept) in cases {
        let text = format!("{}{kept}", "x".repeat(*prefix));
        assert!(text.len() <= 512);
        alice.expect(TOO_LONG);
        both_see(&mut alice, &mut bob, &text);
    }
    next_is(&mut alice, &mut bob, "after");
}

// 6. The 200 ms fragment rule -----------------------------------------------

#[test]
fn unfinished_fragment_counts_as_a_line() {
    let server = Server::start();
    let mut bob = server.login("bob");
    let mut alice = server.connect();
    alice.expect("Welcome to mpchat! Enter your nickname:");
    // The class-lab client sends no line end at all.
    alice.send_bytes(b"alice");
    alice.expect("Hello, alice! Type /help for commands.");
    alice.expect_stamped("* alice has joined the chat.");
    bob.expect_stamped("* alice has joined the chat.");
    alice.send_bytes(b"hi");
    both_see(&mut alice, &mut bob, "hi");
    alice.send_bytes(b"two words");
    both_see(&mut alice, &mut bob, "two words");
    next_is(&mut alice, &mut bob, "after");
}

#[test]
fn fragment_pending_at_eof_is_processed_before_leaving() {
    let server = Server::start();
    let [mut bob, mut alice] = server.login_all(["bob", "alice"]);
    alice.send_bytes(b"bye msg");
    alice.shutdown_write();
    alice.expect_stamped("alice: bye msg");
    alice.expect_closed();
    bob.expect_stamped("alice: bye msg");
    bob.expect_stamped("* alice has left the chat.");
    bob.send_line("alone now");
    bob.expect_stamped("bob: alone now");
}

// 7. Blank lines -----------------------------------------------------------

#[test]
fn blank_and_whitespace_only_lines_are_ignored() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    alice.send_bytes(b"\n\r\n\r\0\r   \n\t\t\r\n \t \n");
    alice.send_bytes(b"\n\n\n");
    next_is(&mut alice, &mut bob, "after");
    // Also at the nickname prompt: no complaint about an empty nickname.
    let mut carol = server.connect();
    carol.expect("Welcome to mpchat! Enter your nickname:");
    carol.send_bytes(b"\n\r\n  \r\n\t\ncarol\n");
    carol.expect("Hello, carol! Type /help for commands.");
    carol.expect_stamped("* carol has joined the chat.");
}

// 8. Several lines in one write ---------------------------------------------

#[test]
fn several_lines_in_one_write_are_processed_in_order() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    let texts: Vec<String> = (1..=30).map(|i| format!("line {i}")).collect();
    let mut bytes = Vec::new();
    for text in &texts {
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"/me waves\nlast one\n");
    alice.send_bytes(&bytes);
    for text in &texts {
        both_see(&mut alice, &mut bob, text);
    }
    alice.expect_stamped("* alice waves");
    bob.expect_stamped("* alice waves");
    both_see(&mut alice, &mut bob, "last one");
    next_is(&mut alice, &mut bob, "after");
}

// 9. A huge paste ------------------------------------------------------------

#[test]
fn one_megabyte_paste_without_line_ends_is_one_truncated_message() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    let paste: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    alice.send_bytes(&paste);
    alice.expect(TOO_LONG);
    let cut = std::str::from_utf8(&paste[..512]).unwrap();
    both_see(&mut alice, &mut bob, cut);
    // End the pasted line (if the fragment rule has not ended it already,
    // this line end does; otherwise it is a blank line), then go on.
    alice.send_bytes(b"\n");
    next_is(&mut alice, &mut bob, "after");
    // The server is still fine for everybody.
    let mut carol = server.login("carol");
    alice.expect_stamped("* carol has joined the chat.");
    bob.expect_stamped("* carol has joined the chat.");
    carol.send_line("hi all");
    carol.expect_stamped("carol: hi all");
    alice.expect_stamped("carol: hi all");
    bob.expect_stamped("carol: hi all");
}

// Forging child–hub messages ---------------------------------------------

/// Client text that looks like the child–hub protocol (JSON messages one
/// per line, a kick, a login) travels as one chat line, whatever it holds:
/// LF and CR end the client's line, NUL is removed, and the rest is text.
#[test]
fn text_shaped_like_hub_messages_is_one_chat_line_and_forges_nothing() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    let carol = server.login("carol");
    for c in [&mut alice, &mut bob] {
        c.expect_stamped("* carol has joined the chat.");
    }
    let forgeries: [&[u8]; 5] = [
        b"\"\n{\"Request\":{\"Kick\":\"carol\"}}\r\n",
        b"{\"Request\":{\"Kick\":\"carol\"}}\r\n",
        b"x\x00{\"Login\":{\"nick\":\"mallory\",\"addr\":\"1.2.3.4:5\"}}\r\n",
        b"\"Kicked\"\r\n",
        b"[12:00] * carol has left the chat.\r\n",
    ];
    let expected = [
        vec!["\"", "{\"Request\":{\"Kick\":\"carol\"}}"],
        vec!["{\"Request\":{\"Kick\":\"carol\"}}"],
        vec!["x{\"Login\":{\"nick\":\"mallory\",\"addr\":\"1.2.3.4:5\"}}"],
        vec!["\"Kicked\""],
        vec!["[12:00] * carol has left the chat."],
    ];
    for (bytes, lines) in forgeries.iter().zip(expected) {
        alice.send_bytes(bytes);
        for text in lines {
            both_see(&mut alice, &mut bob, text);
        }
    }
    next_is(&mut alice, &mut bob, "marker");
    // Carol is still here, and nobody called mallory ever joined.
    alice.send_line("/users");
    alice.expect("Users in chat: alice, bob, carol");
    drop(carol);
}
