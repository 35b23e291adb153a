//! The JSON-lines protocol for programs (see `PROTOCOL.md`): framing,
//! what a client's line asks for, and every line the server sends such a
//! client.
//!
//! A client's line becomes an [`Action`] or a [`Refusal`] (code and
//! message), never a panic: a line that is not an object, names no known
//! `type` or lacks a field is a value the session answers with one error,
//! like an unknown command on the line protocol.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::command::{self, DEFAULT_HISTORY, MAX_HISTORY, MAX_SCHEDULE_SECONDS, Request, When};
use super::framing::{Line, MAX_LINE};
use super::reply::{Code, Reply};
use super::sanitize::sanitize;

/// Longest line a JSON client may send, line end included.
pub const MAX_JSON_LINE: usize = 8192;

/// Splits a JSON client's bytes into lines at LF (a CR before it is
/// dropped). A line longer than [`MAX_JSON_LINE`] is dropped whole and
/// stands as one [`Line`] with `truncated` set and no bytes.
#[derive(Debug, Default)]
pub struct JsonReader {
    line: Vec<u8>,
    /// The current line is too long: drop until its end.
    overflow: bool,
}

impl JsonReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; complete lines are appended to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<Line>) {
        for piece in input.split_inclusive(|&b| b == b'\n') {
            let (body, ended) = match piece.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (piece, false),
            };
            if !self.overflow {
                if self.line.len() + body.len() + usize::from(ended) > MAX_JSON_LINE {
                    self.overflow = true;
                    self.line = Vec::new();
                    out.push(Line {
                        bytes: Vec::new(),
                        truncated: true,
                    });
                } else {
                    self.line.extend_from_slice(body);
                }
            }
            if ended {
                if !self.overflow {
                    let mut bytes = std::mem::take(&mut self.line);
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                    out.push(Line {
                        bytes,
                        truncated: false,
                    });
                }
                self.overflow = false;
            }
        }
    }

    /// The unfinished line, at the client's EOF.
    pub fn take_partial(&mut self) -> Option<Line> {
        let bytes = std::mem::take(&mut self.line);
        (!bytes.is_empty() && !self.overflow).then_some(Line {
            bytes,
            truncated: false,
        })
    }
}

/// A `hello`: a program's login, a resume, a takeover, or a bot's first
/// step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub who: Who,
    /// Resume: replay the public events after this one.
    pub after: Option<u64>,
    /// Rooms to be in at once, besides the lobby (a resume covers them).
    pub rooms: Vec<String>,
}

/// Who says hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// A program under a nickname.
    Nick(String),
    /// The session with this token, taken over (a nickname given with it
    /// is not looked at: the token decides).
    Session { token: String, nick: Option<String> },
    /// A bot of the bots file, on one of its devices; a challenge follows.
    Bot { bot: String, device: String },
}

/// Longest device name of a bot, in bytes.
pub const MAX_DEVICE: usize = 64;

/// What a well-formed line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Hello(Hello),
    /// A bot's answer to its challenge: the MAC, in hex.
    Auth(String),
    Request(Request),
    Ping,
    Pong,
    Quit,
}

/// Why a line asks for nothing: the error to answer it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: Code,
    pub message: String,
}

fn refusal(code: Code, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// A client's line as its fields: serde checks names and types.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Message {
    Hello {
        nick: Option<String>,
        bot: Option<String>,
        device: Option<String>,
        after: Option<u64>,
        session: Option<String>,
        rooms: Option<Vec<String>>,
    },
    Auth {
        mac: String,
    },
    Say {
        text: String,
        room: Option<String>,
    },
    Me {
        text: String,
        room: Option<String>,
    },
    Whisper {
        to: String,
        text: String,
    },
    Join {
        room: String,
    },
    Part {
        room: Option<String>,
    },
    Rooms {},
    Users {
        room: Option<String>,
    },
    Topic {
        text: Option<String>,
    },
    Rename {
        nick: String,
    },
    Kick {
        nick: String,
    },
    Schedule {
        at: Option<String>,
        in_s: Option<u32>,
        text: String,
    },
    ScheduleList {},
    ScheduleCancel {
        number: usize,
    },
    History {
        count: Option<usize>,
        room: Option<String>,
    },
    Ping {},
    Pong {},
    Quit {},
}

/// The `type`s [`Message`] knows, to tell an unknown one from a bad field.
const TYPES: &[&str] = &[
    "hello",
    "auth",
    "say",
    "me",
    "whisper",
    "join",
    "part",
    "rooms",
    "users",
    "topic",
    "rename",
    "kick",
    "schedule",
    "schedule_list",
    "schedule_cancel",
    "history",
    "ping",
    "pong",
    "quit",
];

/// Parses one line: the request's `id` (to echo), and what it asks for.
pub fn parse(line: &[u8]) -> (Option<Value>, Result<Action, Refusal>) {
    let value: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(e) => return (None, Err(refusal(Code::BadJson, format!("not JSON: {e}")))),
    };
    let Value::Object(fields) = value else {
        return (None, Err(refusal(Code::BadJson, "not a JSON object")));
    };
    let id = fields.get("id").cloned();
    let kind = match fields.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => {
            return (
                id,
                Err(refusal(Code::BadRequest, "\"type\" must be a string")),
            );
        }
        None => return (id, Err(refusal(Code::BadRequest, "missing field `type`"))),
    };
    if !TYPES.contains(&kind.as_str()) {
        let message = format!("unknown type \"{}\"", kind.escape_debug());
        return (id, Err(refusal(Code::UnknownType, message)));
    }
    let action = serde_json::from_value::<Message>(Value::Object(fields))
        .map_err(|e| refusal(Code::BadRequest, e.to_string()))
        .and_then(action);
    (id, action)
}

fn action(message: Message) -> Result<Action, Refusal> {
    let request = match message {
        Message::Hello {
            nick,
            bot,
            device,
            after,
            session,
            rooms,
        } => {
            let rooms = rooms
                .unwrap_or_default()
                .into_iter()
                .map(|r| word(r, "rooms"))
                .collect::<Result<Vec<String>, Refusal>>()?;
            let who = match (nick, bot, device, session) {
                (nick, None, None, Some(token)) => Who::Session { token, nick },
                (Some(nick), None, None, None) => Who::Nick(nick),
                (None, Some(bot), Some(device), _) => Who::Bot {
                    bot,
                    device: device_name(device)?,
                },
                _ => {
                    let message = "give \"nick\", or \"session\", or \"bot\" and \"device\"";
                    return Err(refusal(Code::BadRequest, message));
                }
            };
            return Ok(Action::Hello(Hello { who, after, rooms }));
        }
        Message::Auth { mac } => return Ok(Action::Auth(mac)),
        Message::Ping {} => return Ok(Action::Ping),
        Message::Pong {} => return Ok(Action::Pong),
        Message::Quit {} => return Ok(Action::Quit),
        Message::Say { text, room: None } => Request::Say(text_of(&text)?),
        Message::Me { text, room: None } => Request::Me(text_of(&text)?),
        Message::Say {
            text,
            room: Some(room),
        } => Request::SayIn {
            room,
            text: text_of(&text)?,
            me: false,
        },
        Message::Me {
            text,
            room: Some(room),
        } => Request::SayIn {
            room,
            text: text_of(&text)?,
            me: true,
        },
        Message::Whisper { to, text } => Request::Whisper {
            to: word(to, "to")?,
            text: text_of(&text)?,
        },
        Message::Join { room } => Request::Join(word(room, "room")?),
        Message::Part { room } => Request::Part(room.map(|r| word(r, "room")).transpose()?),
        Message::Rooms {} => Request::Rooms,
        Message::Users { room } => Request::Users(room.map(|r| word(r, "room")).transpose()?),
        Message::Topic { text } => Request::Topic(text.map(|t| text_of(&t)).transpose()?),
        Message::Rename { nick } => Request::Rename(word(nick, "nick")?),
        Message::Kick { nick } => Request::Kick(word(nick, "nick")?),
        Message::Schedule { at, in_s, text } => Request::Schedule {
            when: when(at, in_s)?,
            text: text_of(&text)?,
        },
        Message::ScheduleList {} => Request::ScheduleList,
        Message::ScheduleCancel { number } if number >= 1 => Request::ScheduleCancel(number),
        Message::ScheduleCancel { .. } => {
            return Err(refusal(Code::BadRequest, "\"number\" counts from 1"));
        }
        Message::History { count, room } => match count.unwrap_or(DEFAULT_HISTORY) {
            n @ 1..=MAX_HISTORY => Request::History {
                count: n,
                room: room.map(|r| word(r, "room")).transpose()?,
            },
            _ => {
                let message = format!("\"count\" must be 1 to {MAX_HISTORY}");
                return Err(refusal(Code::BadRequest, message));
            }
        },
    };
    Ok(Action::Request(request))
}

/// A message's text, made safe to show like a typed line's.
fn text_of(text: &str) -> Result<String, Refusal> {
    if text.len() > MAX_LINE {
        let message = format!("\"text\" is longer than {MAX_LINE} bytes");
        return Err(refusal(Code::TextTooLong, message));
    }
    let clean = sanitize(text.as_bytes());
    if clean.is_empty() {
        return Err(refusal(Code::BadRequest, "\"text\" is empty"));
    }
    Ok(clean)
}

/// A bot's device: what the bot calls the machine it runs on.
fn device_name(device: String) -> Result<String, Refusal> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
    if device.is_empty() || device.len() > MAX_DEVICE || !device.chars().all(allowed) {
        let message =
            format!("\"device\" is 1 to {MAX_DEVICE} ASCII letters, digits, '_', '-', '.' or ':'");
        return Err(refusal(Code::BadRequest, message));
    }
    Ok(device)
}

/// A nickname or room name: one word, checked by the rules it names.
fn word(value: String, field: &str) -> Result<String, Refusal> {
    let clean = sanitize(value.as_bytes());
    if clean.is_empty() || clean.contains(' ') || clean.len() > MAX_LINE {
        return Err(refusal(
            Code::BadRequest,
            format!("\"{field}\" must be one word"),
        ));
    }
    Ok(clean)
}

fn when(at: Option<String>, in_s: Option<u32>) -> Result<When, Refusal> {
    match (at, in_s) {
        (Some(at), None) if !at.starts_with('+') => command::parse_when(&at)
            .ok_or_else(|| refusal(Code::BadRequest, "\"at\" must be HH:MM (00:00 to 23:59)")),
        (None, Some(seconds)) if (1..=MAX_SCHEDULE_SECONDS).contains(&seconds) => {
            Ok(When::In { seconds })
        }
        (None, Some(_)) => Err(refusal(
            Code::BadRequest,
            format!("\"in_s\" must be 1 to {MAX_SCHEDULE_SECONDS}"),
        )),
        _ => Err(refusal(
            Code::BadRequest,
            "give either \"at\" (HH:MM) or \"in_s\" (seconds)",
        )),
    }
}

/// One JSON object as a line, without its line end.
fn line(value: &impl Serialize) -> String {
    // Serializing maps of strings and numbers cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// Adds `"id"` to an object, if the request had one.
fn with_id(mut value: Value, id: Option<&Value>) -> String {
    if let (Some(id), Value::Object(fields)) = (id, &mut value) {
        fields.insert("id".to_string(), id.clone());
    }
    line(&value)
}

pub fn error(code: Code, message: &str, id: Option<&Value>) -> String {
    let value = serde_json::json!({"type": "error", "code": code.as_str(), "message": message});
    with_id(value, id)
}

/// A line with only a `type` (and the `id` it answers): `ok`, `pong`,
/// `ping`, `bye`.
pub fn bare(kind: &str, id: Option<&Value>) -> String {
    with_id(serde_json::json!({ "type": kind }), id)
}

/// What the `welcome` tells a client.
#[derive(Debug, Serialize)]
pub struct Welcome<'a> {
    pub nick: &'a str,
    pub session: &'a str,
    pub seq: u64,
    pub bot: bool,
    pub rooms: Vec<&'a str>,
    pub room: &'a str,
    pub ping_interval_s: u64,
    pub max_line: usize,
    pub resume_max: usize,
}

pub fn welcome(welcome: &Welcome, id: Option<&Value>) -> String {
    let mut fields = serde_json::Map::new();
    fields.insert("type".into(), "welcome".into());
    if let Ok(Value::Object(rest)) = serde_json::to_value(welcome) {
        fields.extend(rest);
    }
    with_id(Value::Object(fields), id)
}

/// A reply of the hub's to the request with `id`.
pub fn reply(reply: &Reply, id: Option<&Value>) -> Option<String> {
    use serde_json::json;
    let value = match reply {
        Reply::Error { code, message } => return Some(error(*code, message, id)),
        Reply::Users { room, nicks, bots } => {
            json!({"type": "users", "room": room, "nicks": nicks, "bots": bots})
        }
        Reply::Rooms(rooms) => {
            let rooms: Vec<Value> = rooms
                .iter()
                .map(|r| {
                    json!({"room": r.room, "users": r.users, "topic": r.topic,
                           "member": r.member, "current": r.current})
                })
                .collect();
            json!({"type": "rooms", "rooms": rooms})
        }
        Reply::Topic { room, topic } => json!({"type": "topic", "room": room, "topic": topic}),
        Reply::Current { room } => json!({"type": "current", "room": room}),
        Reply::Scheduled { due_ms, due } => {
            json!({"type": "scheduled", "due_ts": due_ms, "due": due})
        }
        Reply::ScheduleList(pending) => {
            let scheduled: Vec<Value> = pending
                .iter()
                .map(|p| {
                    json!({"number": p.number, "due_ts": p.due_ms, "due": p.due, "text": p.text})
                })
                .collect();
            json!({"type": "schedule_list", "scheduled": scheduled})
        }
        Reply::Cancelled { number } => json!({"type": "cancelled", "number": number}),
        Reply::History { room, count } => json!({"type": "history", "room": room, "count": count}),
        // The count said how many events came.
        Reply::HistoryEnd => return None,
    };
    Some(with_id(value, id))
}

/// One public event, as every JSON client receives it.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    #[serde(rename = "type")]
    pub kind_of_line: &'static str,
    pub seq: u64,
    pub ts: u64,
    pub room: &'a str,
    pub kind: &'a str,
    pub from: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
    /// A rename's new nickname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<&'a str>,
    /// Who kicked or removed `from`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<&'a str>,
    /// `from` is a bot.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bot: bool,
}

pub fn event(event: &Event) -> String {
    line(event)
}

pub fn whisper(ts_ms: u64, from: &str, to: &str, text: &str) -> String {
    let value =
        serde_json::json!({"type": "whisper", "ts": ts_ms, "from": from, "to": to, "text": text});
    line(&value)
}

/// A bot's challenge: the nonce its MAC must cover.
/// A word from the server to everyone (the link to the other servers of
/// a cluster went down, or came back).
pub fn notice(text: &str) -> String {
    line(&serde_json::json!({"type": "notice", "text": text}))
}

pub fn challenge(nonce: &str, id: Option<&Value>) -> String {
    with_id(serde_json::json!({"type": "challenge", "nonce": nonce}), id)
}

/// Events after `after` may be missing; `next` is the first that follows.
pub fn gap(after: u64, next: u64) -> String {
    line(&serde_json::json!({"type": "gap", "after": after, "next": next}))
}

pub fn removed(room: &str, by: &str) -> String {
    line(&serde_json::json!({"type": "removed", "room": room, "by": by}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(reader: &mut JsonReader, input: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        reader.push(input, &mut out);
        out
    }

    #[test]
    fn lines_end_at_lf_with_or_without_cr_and_across_reads() {
        let mut r = JsonReader::new();
        let got = lines(&mut r, b"{\"a\":1}\r\n{\"b\"");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].bytes, b"{\"a\":1}");
        let got = lines(&mut r, b":2}\n");
        assert_eq!(got[0].bytes, b"{\"b\":2}");
    }

    #[test]
    fn a_line_over_the_limit_is_dropped_whole_and_the_next_one_is_kept() {
        let mut r = JsonReader::new();
        let mut input = vec![b'x'; MAX_JSON_LINE];
        input.extend_from_slice(b"\n{}\n");
        let got = lines(&mut r, &input);
        assert_eq!(got.len(), 2);
        assert!(got[0].truncated && got[0].bytes.is_empty());
        assert_eq!(got[1].bytes, b"{}");
        // Exactly at the limit, line end included, is fine.
        let mut input = vec![b'y'; MAX_JSON_LINE - 1];
        input.push(b'\n');
        let got = lines(&mut r, &input);
        assert!(!got[0].truncated && got[0].bytes.len() == MAX_JSON_LINE - 1);
    }

    fn code(line: &str) -> Code {
        parse(line.as_bytes()).1.unwrap_err().code
    }

    #[test]
    fn every_bad_line_has_its_code() {
        assert_eq!(code("hello"), Code::BadJson);
        assert_eq!(code("[1]"), Code::BadJson);
        assert_eq!(code("{\"text\":\"x\"}"), Code::BadRequest);
        assert_eq!(code("{\"type\":5}"), Code::BadRequest);
        assert_eq!(code("{\"type\":\"fly\"}"), Code::UnknownType);
        assert_eq!(code("{\"type\":\"say\"}"), Code::BadRequest);
        assert_eq!(code("{\"type\":\"say\",\"text\":7}"), Code::BadRequest);
        assert_eq!(
            code("{\"type\":\"say\",\"text\":\"\\u001b\"}"),
            Code::BadRequest
        );
        let long = format!("{{\"type\":\"say\",\"text\":\"{}\"}}", "a".repeat(513));
        assert_eq!(code(&long), Code::TextTooLong);
        assert_eq!(code("{\"type\":\"history\",\"count\":0}"), Code::BadRequest);
        assert_eq!(
            code("{\"type\":\"schedule\",\"text\":\"x\"}"),
            Code::BadRequest
        );
        assert_eq!(
            code("{\"type\":\"schedule\",\"at\":\"25:00\",\"text\":\"x\"}"),
            Code::BadRequest
        );
        assert_eq!(
            code("{\"type\":\"join\",\"room\":\"#a b\"}"),
            Code::BadRequest
        );
    }

    #[test]
    fn requests_keep_their_id_and_become_the_line_protocol_s_requests() {
        let (id, action) = parse(br#"{"type":"say","text":" hi\tthere ","id":"a1","x":1}"#);
        assert_eq!(id, Some(Value::from("a1")));
        assert_eq!(action, Ok(Action::Request(Request::Say("hi there".into()))));
        let (id, action) = parse(br##"{"type":"me","text":"waves","room":"#lab2","id":7}"##);
        assert_eq!(id, Some(Value::from(7)));
        assert_eq!(
            action,
            Ok(Action::Request(Request::SayIn {
                room: "#lab2".into(),
                text: "waves".into(),
                me: true
            }))
        );
        let (_, action) = parse(br#"{"type":"schedule","in_s":90,"text":"later"}"#);
        assert_eq!(
            action,
            Ok(Action::Request(Request::Schedule {
                when: When::In { seconds: 90 },
                text: "later".into()
            }))
        );
        let (_, action) = parse(br#"{"type":"hello","nick":"bot1","after":41}"#);
        assert_eq!(
            action,
            Ok(Action::Hello(Hello {
                who: Who::Nick("bot1".into()),
                after: Some(41),
                rooms: Vec::new(),
            }))
        );
        let (_, action) = parse(br#"{"type":"hello","bot":"w","device":"pi-1"}"#);
        assert_eq!(
            action,
            Ok(Action::Hello(Hello {
                who: Who::Bot {
                    bot: "w".into(),
                    device: "pi-1".into()
                },
                after: None,
                rooms: Vec::new(),
            }))
        );
        assert_eq!(code(r#"{"type":"hello","bot":"w"}"#), Code::BadRequest);
        assert_eq!(
            code(r#"{"type":"hello","bot":"w","device":"a b"}"#),
            Code::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"hello","nick":"a","bot":"w","device":"d"}"#),
            Code::BadRequest
        );
    }

    #[test]
    fn replies_carry_the_id_they_answer() {
        let id = Value::from(3);
        let users = Reply::Users {
            room: "#lobby".into(),
            nicks: vec!["a".into()],
            bots: Vec::new(),
        };
        let text = reply(&users, Some(&id)).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["type"], "users");
        assert_eq!(value["id"], 3);
        assert_eq!(value["nicks"][0], "a");
        let text = error(Code::NotInRoom, "You are not in #x.", None);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["code"], "not_in_room");
        assert!(value.get("id").is_none());
    }
}
