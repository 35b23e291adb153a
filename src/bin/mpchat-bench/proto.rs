//! What the clients say and how they read what comes back, for each
//! protocol: the steps from connect to "registered", the chat line a sender
//! writes, and finding a message's (sender, seq, send time) in any line.
//!
//! Every message carries `B <sender> <seq> <send_ns>` followed by padding,
//! and a receiver looks for that header wherever it appears in a line, so
//! the count does not depend on how the server decorates the line.
//!
//! With `--rooms N`, client `i` talks in room `#r{i % N}`: on the line
//! protocol it joins with `/join` once registered (a step of its own, see
//! [`Proto::start_join`]); on IRC that channel is the one it joins while
//! registering.
//!
//! `--proto ws` is `--proto json` over WebSocket: the same messages, each
//! in a text frame instead of on a line (see [`Proto::json`]), after the
//! upgrade.

use std::io::Write;
use std::net::SocketAddr;

use crate::cli::{Plan, ProtoKind};
use crate::rooms::Rooms;
use crate::targets::Spread;
use crate::ws;

/// Where one client is on its way to being registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    /// TCP connect not finished yet.
    Connecting,
    /// WebSocket: the upgrade request sent, waiting for `101`.
    Upgrading,
    /// Line protocol: this many prompt lines still to read before the nick.
    Prompt(u32),
    /// Line protocol, nick sent at once: this many prompt lines still to
    /// read before the reply to it.
    SkipPrompt(u32),
    /// Line protocol: nick sent, the next line means registered.
    AwaitReply,
    /// IRC: NICK/USER sent, waiting for 001.
    AwaitWelcome,
    /// IRC: JOIN sent, waiting for the server to echo it.
    AwaitJoin,
    /// Line protocol with rooms: registered, `/join` sent, waiting for the
    /// client's own "has joined" line in its room.
    Joining,
    /// Echo: the line went out, waiting for it to come back.
    AwaitEcho,
    Registered,
}

impl Reg {
    /// Registered with the server, whether or not in its room yet.
    pub fn logged_in(self) -> bool {
        matches!(self, Reg::Registered | Reg::Joining)
    }
}

/// What a received line meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Nothing,
    Registered,
    /// Line protocol with rooms: the client is in its room.
    Joined,
    /// The server refused or broke the protocol; the text says how.
    Failed(String),
    /// A benchmark message: sender, seq, send time.
    Message(u32, u32, u64),
}

/// The per-run protocol settings.
#[derive(Debug, Clone)]
pub struct Proto {
    pub kind: ProtoKind,
    prompt_lines: u32,
    speak_first: bool,
    nick_prefix: String,
    /// The IRC channel when there is one room.
    channel: String,
    /// Rooms the clients are spread over (1: no /join, IRC `channel`).
    rooms: usize,
    size: usize,
    /// WebSocket: the `Host` (and `Origin`) of the upgrade request, one
    /// per target; client `id` uses its target's.
    hosts: Vec<String>,
    spread: Spread,
}

impl Proto {
    /// `targets`: the servers' addresses, in the order the clients are
    /// spread over them.
    pub fn new(plan: &Plan, targets: &[SocketAddr]) -> Proto {
        Proto {
            hosts: targets.iter().map(|t| t.to_string()).collect(),
            spread: Spread::new(targets.len()),
            kind: plan.proto,
            prompt_lines: plan.nick_prompt_lines,
            speak_first: plan.speak_first,
            nick_prefix: plan.nick_prefix.clone(),
            channel: plan.channel.clone(),
            rooms: plan.rooms.max(1),
            size: plan.size,
        }
    }

    fn nick(&self, id: u32) -> String {
        format!("{}{id}", self.nick_prefix)
    }

    /// The room (IRC: channel) client `id` talks in.
    fn room(&self, id: u32) -> String {
        if self.rooms > 1 {
            Rooms::name(id as usize % self.rooms)
        } else {
            self.channel.clone()
        }
    }

    /// With rooms on the line protocol, sends a registered client's
    /// `/join` for its room and returns its next state; `None` when there
    /// is nothing to join (one room, or IRC, which joins while it
    /// registers).
    pub fn start_join(&self, id: u32, out: &mut Vec<u8>) -> Option<Reg> {
        if self.rooms <= 1 {
            return None;
        }
        match self.kind {
            ProtoKind::Line => {
                let _ = writeln!(out, "/join {}", self.room(id));
            }
            ProtoKind::Json | ProtoKind::Ws => self.json(out, |o| {
                let _ = write!(o, r#"{{"type":"join","room":"{}"}}"#, self.room(id));
            }),
            ProtoKind::Irc | ProtoKind::Echo => return None,
        }
        Some(Reg::Joining)
    }

    /// The TCP connection is up: queue the first bytes, say what comes next.
    pub fn on_connect(&self, id: u32, out: &mut Vec<u8>) -> Reg {
        match self.kind {
            ProtoKind::Line if self.prompt_lines == 0 => {
                self.send_nick(id, out);
                Reg::AwaitReply
            }
            ProtoKind::Line if self.speak_first => {
                self.send_nick(id, out);
                Reg::SkipPrompt(self.prompt_lines)
            }
            ProtoKind::Line => Reg::Prompt(self.prompt_lines),
            ProtoKind::Irc => {
                let nick = self.nick(id);
                let _ = write!(out, "NICK {nick}\r\nUSER {nick} 0 * :mpchat-bench\r\n");
                Reg::AwaitWelcome
            }
            ProtoKind::Echo => {
                self.echo_line(id, out);
                out.push(b'\n');
                Reg::AwaitEcho
            }
            // A program speaks first, so the server knows it at once.
            ProtoKind::Json => self.on_upgraded(id, out),
            ProtoKind::Ws => {
                let host = self
                    .hosts
                    .get(self.spread.target_of(id as usize))
                    .map_or("", |h| h.as_str());
                ws::upgrade_request(out, host, id);
                Reg::Upgrading
            }
        }
    }

    /// A JSON client's start once its transport is ready: the hello.
    pub fn on_upgraded(&self, id: u32, out: &mut Vec<u8>) -> Reg {
        self.json(out, |o| {
            let _ = write!(o, r#"{{"type":"hello","nick":"{}"}}"#, self.nick(id));
        });
        Reg::AwaitReply
    }

    fn speaks_json(&self) -> bool {
        matches!(self.kind, ProtoKind::Json | ProtoKind::Ws)
    }

    /// Appends one JSON message that `write` puts down: a line, or over
    /// WebSocket a text frame.
    fn json(&self, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
        let start = out.len();
        write(out);
        if self.kind == ProtoKind::Ws {
            ws::seal(out, start, ws::TEXT);
        } else {
            out.push(b'\n');
        }
    }

    fn send_nick(&self, id: u32, out: &mut Vec<u8>) {
        let _ = writeln!(out, "{}", self.nick(id));
    }

    /// The echo client's line, without its line end.
    fn echo_line(&self, id: u32, out: &mut Vec<u8>) {
        let start = out.len();
        let _ = write!(out, "E {id}");
        pad(out, start, self.size);
    }

    /// Handles one line (without its line end). `out` collects any reply.
    pub fn on_line(&self, reg: &mut Reg, id: u32, line: &[u8], out: &mut Vec<u8>) -> Seen {
        if self.kind == ProtoKind::Irc {
            if let Some(token) = line.strip_prefix(b"PING ") {
                out.extend_from_slice(b"PONG ");
                out.extend_from_slice(token);
                out.extend_from_slice(b"\r\n");
                return Seen::Nothing;
            }
            if line.starts_with(b"ERROR") {
                return Seen::Failed(text(line));
            }
        }
        if self.speaks_json() {
            if line == br#"{"type":"ping"}"# {
                self.json(out, |o| o.extend_from_slice(br#"{"type":"pong"}"#));
                return Seen::Nothing;
            }
            if line.starts_with(br#"{"type":"error""#) {
                return Seen::Failed(text(line));
            }
        }
        match *reg {
            Reg::Registered => match find_message(line) {
                Some((s, q, t)) => Seen::Message(s, q, t),
                None => Seen::Nothing,
            },
            Reg::Connecting => Seen::Failed("data before the connect finished".into()),
            Reg::Upgrading => Seen::Failed("a message before the upgrade".into()),
            Reg::SkipPrompt(left) => {
                *reg = if left <= 1 {
                    Reg::AwaitReply
                } else {
                    Reg::SkipPrompt(left - 1)
                };
                Seen::Nothing
            }
            Reg::Prompt(left) => {
                if left <= 1 {
                    self.send_nick(id, out);
                    *reg = Reg::AwaitReply;
                } else {
                    *reg = Reg::Prompt(left - 1);
                }
                Seen::Nothing
            }
            // The first line after the nick means registered, unless it
            // asks again (ends like a prompt, with ':'): mpchat answers a
            // taken or invalid nick with the reason and a new prompt.
            Reg::AwaitReply if self.speaks_json() => {
                if line.starts_with(br#"{"type":"welcome""#) {
                    *reg = Reg::Registered;
                    Seen::Registered
                } else {
                    Seen::Nothing
                }
            }
            Reg::AwaitReply if line.trim_ascii_end().ends_with(b":") => Seen::Failed(text(line)),
            Reg::AwaitReply => {
                *reg = Reg::Registered;
                Seen::Registered
            }
            Reg::AwaitWelcome => match irc_numeric(line) {
                Some(1) => {
                    let _ = write!(out, "JOIN {}\r\n", self.room(id));
                    *reg = Reg::AwaitJoin;
                    Seen::Nothing
                }
                Some(n) if n >= 400 => Seen::Failed(text(line)),
                _ => Seen::Nothing,
            },
            Reg::AwaitJoin => {
                if self.is_own_join(id, line) {
                    *reg = Reg::Registered;
                    Seen::Registered
                } else if irc_numeric(line).is_some_and(|n| n >= 400) {
                    Seen::Failed(text(line))
                } else {
                    Seen::Nothing
                }
            }
            Reg::Joining => {
                let joined = match self.kind {
                    ProtoKind::Json | ProtoKind::Ws => {
                        is_own_json_join(line, &self.nick(id), &self.room(id))
                    }
                    _ => is_own_room_join(line, &self.nick(id), &self.room(id)),
                };
                if joined {
                    *reg = Reg::Registered;
                    Seen::Joined
                } else if is_join_refusal(line) {
                    Seen::Failed(text(line))
                } else {
                    Seen::Nothing
                }
            }
            Reg::AwaitEcho => {
                let mut want = Vec::with_capacity(self.size + 16);
                self.echo_line(id, &mut want);
                if line == want.as_slice() {
                    *reg = Reg::Registered;
                    Seen::Registered
                } else {
                    Seen::Failed(format!("echo came back different: {}", text(line)))
                }
            }
        }
    }

    /// `:nick!user@host JOIN #chan` (or `JOIN :#chan`) for this client.
    fn is_own_join(&self, id: u32, line: &[u8]) -> bool {
        let Some(rest) = line.strip_prefix(b":") else {
            return false;
        };
        let nick = self.nick(id);
        let channel = self.room(id);
        let Some(rest) = rest.strip_prefix(nick.as_bytes()) else {
            return false;
        };
        if !rest.starts_with(b"!") && !rest.starts_with(b" ") {
            return false;
        }
        let mut words = rest.split(|&b| b == b' ').filter(|w| !w.is_empty());
        words.next();
        words.next() == Some(b"JOIN")
            && words
                .next()
                .is_some_and(|c| c.strip_prefix(b":").unwrap_or(c) == channel.as_bytes())
    }

    /// Appends one benchmark message, with its line end, to `out`.
    pub fn write_message(&self, out: &mut Vec<u8>, sender: u32, seq: u32, send_ns: u64) {
        if self.kind == ProtoKind::Irc {
            // One room writes the channel it always did, without building
            // a name per message.
            let _ = if self.rooms > 1 {
                let room = Rooms::name(sender as usize % self.rooms);
                write!(out, "PRIVMSG {room} :")
            } else {
                write!(out, "PRIVMSG {} :", self.channel)
            };
        }
        if self.speaks_json() {
            return self.json(out, |o| {
                o.extend_from_slice(br#"{"type":"say","text":""#);
                let start = o.len();
                let _ = write!(o, "B {sender} {seq} {send_ns}");
                pad(o, start, self.size);
                o.extend_from_slice(b"\"}");
            });
        }
        let start = out.len();
        let _ = write!(out, "B {sender} {seq} {send_ns}");
        pad(out, start, self.size);
        out.extend_from_slice(if self.kind == ProtoKind::Irc {
            b"\r\n"
        } else {
            b"\n"
        });
    }
}

/// Pads the text that starts at `start` to `size` bytes: a space, then
/// letters, so the server sees one ordinary word.
fn pad(out: &mut Vec<u8>, start: usize, size: usize) {
    let have = out.len() - start;
    if have + 1 < size {
        out.push(b' ');
        out.resize(start + size, b'x');
    }
}

/// Lossy text of a line for a report, cut to a readable length.
pub fn text(line: &[u8]) -> String {
    let cut = &line[..line.len().min(160)];
    String::from_utf8_lossy(cut).into_owned()
}

/// mpchat's `[HH:MM] * NICK has joined ROOM.` for this nick and room, as
/// the room's members get it: the room's name after the stamp when it is
/// not the receiver's current room (`[HH:MM] ROOM * NICK has joined
/// ROOM.`). The whole line must be the announcement, so a chat line that
/// quotes one does not count.
fn is_own_room_join(line: &[u8], nick: &str, room: &str) -> bool {
    let Some(stamped) = line.strip_prefix(b"[") else {
        return false;
    };
    let Some(end) = stamped.windows(2).position(|w| w == b"] ") else {
        return false;
    };
    let rest = &stamped[end + 2..];
    let rest = rest
        .strip_prefix(room.as_bytes())
        .and_then(|r| r.strip_prefix(b" "))
        .unwrap_or(rest);
    let want = format!("* {nick} has joined {room}.");
    rest == want.as_bytes()
}

/// mpchat's JSON event for this nick joining this room (fields in the
/// order the server writes them).
fn is_own_json_join(line: &[u8], nick: &str, room: &str) -> bool {
    let room_field = format!(r#""room":"{room}","kind":"join","from":"{nick}""#);
    line.starts_with(br#"{"type":"event""#)
        && line
            .windows(room_field.len())
            .any(|w| w == room_field.as_bytes())
}

/// mpchat's answers to a `/join` it will not carry out: a server without
/// rooms, a name it refuses, the per-user and the server's room limits.
/// These are the asker's own replies, unstamped.
fn is_join_refusal(line: &[u8]) -> bool {
    [
        &b"Unknown command: /join"[..],
        b"Usage: /join",
        b"Room names are ",
        b"The server has too many rooms",
    ]
    .iter()
    .any(|p| line.starts_with(p))
        || (line.starts_with(b"You are in ") && line.ends_with(b"/part one first."))
}

/// The three-digit numeric of an IRC reply `:server NNN ...`.
fn irc_numeric(line: &[u8]) -> Option<u16> {
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let first = words.next()?;
    let word = if first.starts_with(b":") {
        words.next()?
    } else {
        first
    };
    if word.len() != 3 || !word.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(word).ok()?.parse().ok()
}

/// Finds `B <sender> <seq> <send_ns>` anywhere in the line: a `B` that
/// starts a word (line start, or after a non-alphanumeric byte such as the
/// space after `nick:` or IRC's `:`), then three decimal numbers.
pub fn find_message(line: &[u8]) -> Option<(u32, u32, u64)> {
    let mut from = 0;
    while let Some(off) = line[from..].iter().position(|&b| b == b'B') {
        let at = from + off;
        from = at + 1;
        if at > 0 && line[at - 1].is_ascii_alphanumeric() {
            continue;
        }
        if line.get(at + 1) != Some(&b' ') {
            continue;
        }
        if let Some(found) = parse_header(&line[at + 2..]) {
            return Some(found);
        }
    }
    None
}

fn parse_header(rest: &[u8]) -> Option<(u32, u32, u64)> {
    let (sender, rest) = number(rest)?;
    let rest = rest.strip_prefix(b" ")?;
    let (seq, rest) = number(rest)?;
    let rest = rest.strip_prefix(b" ")?;
    let (sent, rest) = number(rest)?;
    // A JSON event's text ends at its closing quote.
    if !(rest.is_empty() || rest.starts_with(b" ") || rest.starts_with(b"\"")) {
        return None;
    }
    Some((u32::try_from(sender).ok()?, u32::try_from(seq).ok()?, sent))
}

fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in &s[..digits] {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((v, &s[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_header_in_decorated_lines() {
        assert_eq!(
            find_message(b"[12:00] b3: B 3 17 123456789 xxxx"),
            Some((3, 17, 123456789))
        );
        assert_eq!(
            find_message(b":b1!~b1@localhost PRIVMSG #bench :B 1 2 3"),
            Some((1, 2, 3))
        );
        assert_eq!(find_message(b"[12:00] BOB: B 1 2"), None);
        assert_eq!(find_message(b"[12:00] B: hello B 4 5 6 x"), Some((4, 5, 6)));
        assert_eq!(find_message(b"xB 1 2 3"), None);
    }

    #[test]
    fn pads_to_size() {
        let mut out = Vec::new();
        pad_test(&mut out);
        assert_eq!(out.len(), 64 + 1);
    }

    fn pad_test(out: &mut Vec<u8>) {
        let plan_size = 64;
        let start = out.len();
        out.extend_from_slice(b"B 1 2 3");
        pad(out, start, plan_size);
        out.push(b'\n');
    }

    #[test]
    fn line_registration_and_refusal() {
        let plan_proto = Proto {
            kind: ProtoKind::Line,
            prompt_lines: 1,
            speak_first: false,
            nick_prefix: "b".into(),
            channel: String::new(),
            rooms: 1,
            size: 64,
            hosts: Vec::new(),
            spread: Spread::new(1),
        };
        let mut out = Vec::new();
        let mut reg = plan_proto.on_connect(7, &mut out);
        assert_eq!(reg, Reg::Prompt(1));
        let seen = plan_proto.on_line(
            &mut reg,
            7,
            b"Welcome to mpchat! Enter your nickname:",
            &mut out,
        );
        assert_eq!((seen, out.as_slice()), (Seen::Nothing, &b"b7\n"[..]));
        let mut refused = reg;
        let taken = b"Nickname \"b7\" is already in use. Enter your nickname:";
        assert!(matches!(
            plan_proto.on_line(&mut refused, 7, taken, &mut out),
            Seen::Failed(_)
        ));
        let hello = b"Hello, b7! Type /help for commands.";
        assert_eq!(
            plan_proto.on_line(&mut reg, 7, hello, &mut out),
            Seen::Registered
        );
        assert_eq!(reg, Reg::Registered);
    }

    #[test]
    fn irc_numerics() {
        assert_eq!(irc_numeric(b":irc.example 001 b1 :Welcome"), Some(1));
        assert_eq!(irc_numeric(b":irc.example 433 * b1 :in use"), Some(433));
        assert_eq!(irc_numeric(b":b1!u@h JOIN #x"), None);
    }

    fn proto(kind: ProtoKind, rooms: usize) -> Proto {
        Proto {
            kind,
            prompt_lines: 1,
            speak_first: false,
            nick_prefix: "b".into(),
            channel: "#bench".into(),
            rooms,
            size: 64,
            hosts: Vec::new(),
            spread: Spread::new(1),
        }
    }

    #[test]
    fn own_room_join_in_both_forms_and_no_other() {
        let yes = |l: &str| is_own_room_join(l.as_bytes(), "b1", "#r1");
        assert!(yes("[12:00] * b1 has joined #r1."));
        assert!(yes("[12:00] #r1 * b1 has joined #r1."));
        assert!(!yes("[12:00] * b11 has joined #r1."));
        assert!(!yes("[12:00] * b1 has joined #r11."));
        assert!(!yes("[12:00] * b1 has joined the chat."));
        assert!(!yes("[12:00] b2: * b1 has joined #r1."));
        assert!(!yes("* b1 has joined #r1."));
        assert!(!yes("[12:00] #r2 * b1 has joined #r1."));
    }

    #[test]
    fn a_json_client_says_hello_first_and_finds_its_messages_in_events() {
        let p = proto(ProtoKind::Json, 3);
        let mut out = Vec::new();
        let mut reg = p.on_connect(4, &mut out);
        assert_eq!(out, b"{\"type\":\"hello\",\"nick\":\"b4\"}\n");
        out.clear();
        let welcome = br#"{"type":"welcome","nick":"b4","session":"ab","seq":0}"#;
        assert_eq!(p.on_line(&mut reg, 4, welcome, &mut out), Seen::Registered);
        assert_eq!(p.start_join(4, &mut out), Some(Reg::Joining));
        assert_eq!(out, b"{\"type\":\"join\",\"room\":\"#r1\"}\n");
        let mut reg = Reg::Joining;
        let other = br##"{"type":"event","seq":3,"ts":1,"room":"#r1","kind":"join","from":"b41"}"##;
        assert_eq!(p.on_line(&mut reg, 4, other, &mut out), Seen::Nothing);
        let own = br##"{"type":"event","seq":4,"ts":1,"room":"#r1","kind":"join","from":"b4"}"##;
        assert_eq!(p.on_line(&mut reg, 4, own, &mut out), Seen::Joined);
        out.clear();
        assert_eq!(
            p.on_line(&mut reg, 4, br#"{"type":"ping"}"#, &mut out),
            Seen::Nothing
        );
        assert_eq!(out, b"{\"type\":\"pong\"}\n");
        let mut line = Vec::new();
        p.write_message(&mut line, 2, 9, 77);
        assert!(
            line.starts_with(br#"{"type":"say","text":"B 2 9 77"#),
            "{line:?}"
        );
        let event = br##"{"type":"event","seq":5,"ts":1,"room":"#r2","kind":"chat","from":"b2","text":"B 2 9 77"}"##;
        assert_eq!(find_message(event), Some((2, 9, 77)));
    }

    #[test]
    fn a_line_client_that_speaks_first_skips_the_prompt() {
        let mut p = proto(ProtoKind::Line, 1);
        p.speak_first = true;
        let mut out = Vec::new();
        let mut reg = p.on_connect(1, &mut out);
        assert_eq!(out, b"b1\n");
        let prompt = b"Welcome to mpchat! Enter your nickname:";
        assert_eq!(p.on_line(&mut reg, 1, prompt, &mut out), Seen::Nothing);
        let hello = b"Hello, b1! Type /help for commands.";
        assert_eq!(p.on_line(&mut reg, 1, hello, &mut out), Seen::Registered);
    }

    #[test]
    fn a_server_without_rooms_or_at_its_limits_refuses_the_join() {
        for line in [
            "Unknown command: /join. Type /help for commands.",
            "Usage: /join #room",
            "Room names are # and 1 to 32 letters, digits, _, - or . (like #lab2).",
            "You are in 10 rooms already; /part one first.",
            "The server has too many rooms; join an existing one.",
        ] {
            assert!(is_join_refusal(line.as_bytes()), "{line}");
        }
        assert!(!is_join_refusal(b"Now talking in #r1."));
        assert!(!is_join_refusal(b"[12:00] b2: Unknown command: /join"));
    }

    #[test]
    fn line_clients_join_their_room_after_login() {
        let p = proto(ProtoKind::Line, 3);
        let mut out = Vec::new();
        assert_eq!(p.start_join(7, &mut out), Some(Reg::Joining));
        assert_eq!(out, b"/join #r1\n");
        let mut reg = Reg::Joining;
        out.clear();
        let other = b"[12:00] * b4 has joined #r1.";
        assert_eq!(p.on_line(&mut reg, 7, other, &mut out), Seen::Nothing);
        let own = b"[12:00] * b7 has joined #r1.";
        assert_eq!(p.on_line(&mut reg, 7, own, &mut out), Seen::Joined);
        assert_eq!(reg, Reg::Registered);
        let mut reg = Reg::Joining;
        let no = b"Unknown command: /join. Type /help for commands.";
        assert!(matches!(
            p.on_line(&mut reg, 7, no, &mut out),
            Seen::Failed(_)
        ));
        // One room, or IRC: nothing to join after login.
        assert_eq!(proto(ProtoKind::Line, 1).start_join(7, &mut out), None);
        assert_eq!(proto(ProtoKind::Irc, 3).start_join(7, &mut out), None);
        assert!(out.is_empty());
    }

    #[test]
    fn irc_clients_join_and_talk_in_their_room() {
        let p = proto(ProtoKind::Irc, 3);
        let mut out = Vec::new();
        let mut reg = Reg::AwaitWelcome;
        p.on_line(&mut reg, 5, b":irc 001 b5 :Welcome", &mut out);
        assert_eq!(out, b"JOIN #r2\r\n");
        assert!(!p.is_own_join(5, b":b5!u@h JOIN #bench"));
        assert!(p.is_own_join(5, b":b5!u@h JOIN :#r2"));
        out.clear();
        p.write_message(&mut out, 5, 0, 9);
        assert!(out.starts_with(b"PRIVMSG #r2 :B 5 0 9 "));
        // One room: the --channel, as before there were rooms.
        let one = proto(ProtoKind::Irc, 1);
        out.clear();
        one.write_message(&mut out, 5, 0, 9);
        assert!(out.starts_with(b"PRIVMSG #bench :B 5 0 9 "));
        assert!(one.is_own_join(5, b":b5!u@h JOIN #bench"));
    }
}
