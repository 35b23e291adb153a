//! Command parsing: a sanitized line becomes a [`Command`], and the rules for
//! nicknames.
//!
//! An unknown command, or a command missing its arguments, is a value of
//! [`Command`] and not an error: the child answers it with one line and the
//! session goes on.

use serde::{Deserialize, Serialize};

use super::render;

/// Longest nickname, in characters.
pub const MAX_NICK_CHARS: usize = 16;
/// `/schedule +N`: N seconds from now, at most one day.
pub const MAX_SCHEDULE_SECONDS: u32 = 86_400;

/// What a line from a registered user asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Something only the hub can do; the child passes it on as it is.
    Request(Request),
    Help,
    Quit,
    /// A known command used wrongly: answer with this usage line.
    Usage(&'static str),
    /// `/word` that is no command; holds the word as typed.
    Unknown(String),
}

/// A command for the room, carried to the hub (see [`crate::protocol::ipc::ToHub`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Any line that is not a command: a public chat message.
    Say(String),
    Me(String),
    /// A chat message (or with `me`, an action) in a room of the user's
    /// that need not be the current one (JSON clients name it).
    SayIn {
        room: String,
        text: String,
        me: bool,
    },
    Whisper {
        to: String,
        text: String,
    },
    /// The users of the current room, or of the room named.
    Users(Option<String>),
    Rename(String),
    Kick(String),
    Schedule {
        when: When,
        text: String,
    },
    ScheduleList,
    ScheduleCancel(usize),
    /// The last `count` public lines of `room` (one of the user's), or of
    /// the current room.
    History {
        count: usize,
        room: Option<String>,
    },
    /// Join a room (creating it) and make it the current one.
    Join(String),
    /// Leave a room; the current one if none is named.
    Part(Option<String>),
    Rooms,
    /// Show the current room's topic, or set it.
    Topic(Option<String>),
}

/// Lines `/history` shows without a number.
pub const DEFAULT_HISTORY: usize = 50;
/// Lines a user can ask for with `/history N`, at most; also what the hub
/// keeps in memory and reads back from the files when it starts.
pub const MAX_HISTORY: usize = 200;

/// When a scheduled message is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum When {
    /// The next time the local clock shows HH:MM (today or tomorrow).
    Clock { hour: u8, minute: u8 },
    /// This many seconds from now.
    In { seconds: u32 },
}

/// True for the lines that end a session at any point, including the
/// class-lab client's `END`.
pub fn is_quit(line: &str) -> bool {
    parse(line) == Command::Quit
}

/// Parses one sanitized, non-empty line.
pub fn parse(line: &str) -> Command {
    if line == "END" {
        return Command::Quit;
    }
    let Some(body) = line.strip_prefix('/') else {
        return Command::Request(Request::Say(line.to_string()));
    };
    let (word, rest) = split_word(body);
    match word.to_ascii_lowercase().as_str() {
        "w" | "whisper" => match split_word(rest) {
            (to, text) if !to.is_empty() && !text.is_empty() => {
                Command::Request(Request::Whisper {
                    to: to.to_string(),
                    text: text.to_string(),
                })
            }
            _ => Command::Usage(render::USAGE_WHISPER),
        },
        "user" | "users" => Command::Request(Request::Users(optional(rest))),
        "join" => match split_word(rest) {
            (room, "") if !room.is_empty() => Command::Request(Request::Join(room.to_string())),
            _ => Command::Usage(render::USAGE_JOIN),
        },
        "part" => match split_word(rest) {
            (room, "") => Command::Request(Request::Part(optional(room))),
            _ => Command::Usage(render::USAGE_PART),
        },
        "rooms" => Command::Request(Request::Rooms),
        "topic" => Command::Request(Request::Topic(optional(rest))),
        "nick" | "rename" => with_arg(rest, Request::Rename, render::USAGE_RENAME),
        "kick" => with_arg(rest, Request::Kick, render::USAGE_KICK),
        "me" => with_arg(rest, Request::Me, render::USAGE_ME),
        "schedule" => parse_schedule(rest),
        "history" => parse_history(rest),
        "help" => Command::Help,
        "quit" => Command::Quit,
        _ => Command::Unknown(format!("/{word}")),
    }
}

fn optional(rest: &str) -> Option<String> {
    (!rest.is_empty()).then(|| rest.to_string())
}

fn with_arg(rest: &str, make: fn(String) -> Request, usage: &'static str) -> Command {
    if rest.is_empty() {
        Command::Usage(usage)
    } else {
        Command::Request(make(rest.to_string()))
    }
}

fn parse_history(args: &str) -> Command {
    if args.is_empty() {
        return Command::Request(Request::History {
            count: DEFAULT_HISTORY,
            room: None,
        });
    }
    match args.parse::<usize>() {
        Ok(n) if (1..=MAX_HISTORY).contains(&n) => Command::Request(Request::History {
            count: n,
            room: None,
        }),
        _ => Command::Usage(render::USAGE_HISTORY),
    }
}

fn parse_schedule(args: &str) -> Command {
    let (first, text) = split_word(args);
    match first {
        "list" if text.is_empty() => return Command::Request(Request::ScheduleList),
        "cancel" => {
            return match text.parse::<usize>() {
                Ok(n) if n >= 1 => Command::Request(Request::ScheduleCancel(n)),
                _ => Command::Usage(render::USAGE_SCHEDULE_CANCEL),
            };
        }
        _ => {}
    }
    match (parse_when(first), text.is_empty()) {
        (Some(when), false) => Command::Request(Request::Schedule {
            when,
            text: text.to_string(),
        }),
        _ => Command::Usage(render::USAGE_SCHEDULE),
    }
}

/// `HH:MM` (or `H:MM`) or `+SECONDS`.
/// `HH:MM` or `+SECONDS`, as `/schedule` takes it.
pub fn parse_when(word: &str) -> Option<When> {
    if let Some(seconds) = word.strip_prefix('+') {
        if !seconds.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let seconds: u32 = seconds.parse().ok()?;
        return (1..=MAX_SCHEDULE_SECONDS)
            .contains(&seconds)
            .then_some(When::In { seconds });
    }
    let (hour, minute) = word.split_once(':')?;
    let digits = |s: &str, len: std::ops::RangeInclusive<usize>| {
        len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(hour, 1..=2) || !digits(minute, 2..=2) {
        return None;
    }
    let (hour, minute): (u8, u8) = (hour.parse().ok()?, minute.parse().ok()?);
    (hour < 24 && minute < 60).then_some(When::Clock { hour, minute })
}

/// Splits off the first whitespace-separated word; the rest is trimmed.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim();
    match s.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (s, ""),
    }
}

/// Checks a nickname against the rules; the error is the line to show.
///
/// 1 to 16 characters, each a letter (any script), a digit, `_`, `-` or
/// `.`. That leaves out `/`, `*` and `[`, so no nickname can look like a
/// command or like the server's own `* ...` and `[...]` lines.
pub fn check_nick(nick: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    if nick.is_empty() || !nick.chars().all(allowed) {
        return Err(format!(
            "Nickname \"{nick}\" is not allowed: use letters, digits, '_', '-' or '.'."
        ));
    }
    if nick.chars().count() > MAX_NICK_CHARS {
        return Err(format!(
            "Nickname \"{nick}\" is too long (at most {MAX_NICK_CHARS} characters)."
        ));
    }
    Ok(())
}

/// Longest room name, after the `#`.
pub const MAX_ROOM_CHARS: usize = 32;

/// Checks a room name: `#` and 1 to [`MAX_ROOM_CHARS`] letters (of any
/// script), digits, `_`, `-` or `.`.
pub fn check_room(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    match name.strip_prefix('#') {
        Some(rest)
            if (1..=MAX_ROOM_CHARS).contains(&rest.chars().count())
                && rest.chars().all(allowed) =>
        {
            Ok(())
        }
        _ => Err(render::BAD_ROOM_NAME.to_string()),
    }
}

/// The form of a room name used to compare names, folded as nicknames
/// are: `#Lab2` and `#lab2` are the same room.
pub fn room_key(name: &str) -> String {
    nick_key(name)
}

/// The form of a nickname used to compare names: `Alice` and `alice` are
/// the same name.
pub fn nick_key(nick: &str) -> String {
    nick.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn say(text: &str) -> Command {
        Command::Request(Request::Say(text.into()))
    }

    #[test]
    fn room_commands() {
        let req = |r| Command::Request(r);
        assert_eq!(parse("/join #lab2"), req(Request::Join("#lab2".into())));
        assert_eq!(parse("/join"), Command::Usage(render::USAGE_JOIN));
        assert_eq!(parse("/join #a #b"), Command::Usage(render::USAGE_JOIN));
        assert_eq!(parse("/part"), req(Request::Part(None)));
        assert_eq!(parse("/part #x"), req(Request::Part(Some("#x".into()))));
        assert_eq!(parse("/part #x y"), Command::Usage(render::USAGE_PART));
        assert_eq!(parse("/rooms"), req(Request::Rooms));
        assert_eq!(parse("/topic"), req(Request::Topic(None)));
        assert_eq!(
            parse("/topic a  b"),
            req(Request::Topic(Some("a  b".into())))
        );
        assert_eq!(parse("/user #x"), req(Request::Users(Some("#x".into()))));
    }

    #[test]
    fn room_names() {
        for good in ["#lab2", "#Ä_b-c.d", "#x", &format!("#{}", "a".repeat(32))] {
            assert_eq!(check_room(good), Ok(()), "{good}");
        }
        for bad in [
            "lab2",
            "#",
            "#a*b",
            "#a b",
            "##",
            &format!("#{}", "a".repeat(33)),
        ] {
            assert!(check_room(bad).is_err(), "{bad}");
        }
        assert_eq!(room_key("#LaB"), room_key("#lab"));
    }

    #[test]
    fn plain_text_is_a_chat_message() {
        assert_eq!(parse("hello /there"), say("hello /there"));
    }

    #[test]
    fn whisper_and_alias() {
        let expected = Command::Request(Request::Whisper {
            to: "bob".into(),
            text: "hi  there".into(),
        });
        assert_eq!(parse("/whisper bob hi  there"), expected);
        assert_eq!(parse("/w bob hi  there"), expected);
        assert_eq!(parse("/w bob"), Command::Usage(render::USAGE_WHISPER));
        assert_eq!(parse("/w"), Command::Usage(render::USAGE_WHISPER));
    }

    #[test]
    fn simple_commands_and_aliases() {
        assert_eq!(parse("/user"), Command::Request(Request::Users(None)));
        assert_eq!(parse("/users"), Command::Request(Request::Users(None)));
        assert_eq!(parse("/help"), Command::Help);
        assert_eq!(
            parse("/history"),
            Command::Request(Request::History {
                count: DEFAULT_HISTORY,
                room: None,
            })
        );
        assert_eq!(
            parse("/history 200"),
            Command::Request(Request::History {
                count: 200,
                room: None
            })
        );
        for bad in [
            "/history 0",
            "/history 201",
            "/history x",
            "/history -1",
            "/history 5 6",
        ] {
            assert_eq!(parse(bad), Command::Usage(render::USAGE_HISTORY), "{bad}");
        }
        assert_eq!(parse("/HELP"), Command::Help);
        assert_eq!(parse("/quit"), Command::Quit);
        assert_eq!(parse("END"), Command::Quit);
        assert_eq!(parse("END now"), say("END now"));
        assert_eq!(
            parse("/rename al"),
            Command::Request(Request::Rename("al".into()))
        );
        assert_eq!(
            parse("/nick al"),
            Command::Request(Request::Rename("al".into()))
        );
        assert_eq!(parse("/nick"), Command::Usage(render::USAGE_RENAME));
        assert_eq!(
            parse("/kick bob"),
            Command::Request(Request::Kick("bob".into()))
        );
        assert_eq!(parse("/kick"), Command::Usage(render::USAGE_KICK));
        assert_eq!(
            parse("/me waves"),
            Command::Request(Request::Me("waves".into()))
        );
        assert_eq!(parse("/me"), Command::Usage(render::USAGE_ME));
    }

    #[test]
    fn unknown_command_keeps_the_word() {
        assert_eq!(parse("/dance now"), Command::Unknown("/dance".into()));
        assert_eq!(parse("/"), Command::Unknown("/".into()));
    }

    #[test]
    fn schedule_forms() {
        assert_eq!(
            parse("/schedule 9:05 coffee"),
            Command::Request(Request::Schedule {
                when: When::Clock { hour: 9, minute: 5 },
                text: "coffee".into()
            })
        );
        assert_eq!(
            parse("/schedule +30 soon"),
            Command::Request(Request::Schedule {
                when: When::In { seconds: 30 },
                text: "soon".into()
            })
        );
        assert_eq!(
            parse("/schedule list"),
            Command::Request(Request::ScheduleList)
        );
        assert_eq!(
            parse("/schedule cancel 2"),
            Command::Request(Request::ScheduleCancel(2))
        );
        assert_eq!(
            parse("/schedule cancel x"),
            Command::Usage(render::USAGE_SCHEDULE_CANCEL)
        );
        for bad in [
            "/schedule",
            "/schedule 12:00",
            "/schedule 24:00 x",
            "/schedule 12:60 x",
            "/schedule 12:5 x",
            "/schedule +0 x",
            "/schedule +86401 x",
            "/schedule +-5 x",
            "/schedule noon x",
        ] {
            assert_eq!(parse(bad), Command::Usage(render::USAGE_SCHEDULE), "{bad}");
        }
    }

    #[test]
    fn nickname_rules() {
        for good in [
            "alice",
            "Bob_2",
            "a.b-c",
            "José",
            "Ωmega",
            "x",
            "sixteen_chars_ok",
        ] {
            assert_eq!(check_nick(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/alice",
            "*bob",
            "[x]",
            "a b",
            "al!ce",
            "seventeen_chars_x",
        ] {
            assert!(check_nick(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nickname_keys_ignore_case() {
        assert_eq!(nick_key("Alice"), nick_key("aLICE"));
        assert_eq!(nick_key("ÉLODIE"), nick_key("élodie"));
    }
}
