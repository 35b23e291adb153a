//! Rendering: every line the server sends to a client, in one place.
//!
//! Lines are returned without their `\r\n`; the child adds it when writing.
//! Public lines carry an `[HH:MM]` stamp of the server's local time, which
//! the caller passes in already formatted (see [`crate::os::clock`]).

use super::framing::MAX_LINE;
use super::reply::Reply;

pub const WELCOME: &str = "Welcome to mpchat! Enter your nickname:";
pub const ENTER_NICK: &str = "Enter your nickname:";
pub const TOO_MANY_TRIES: &str = "Too many invalid nicknames; goodbye.";
pub const LOGIN_TIMED_OUT: &str = "Login timed out.";
pub const SERVER_FULL: &str = "Server is full, try again later.";
pub const SERVER_BUSY: &str = "Server is busy, try again later.";
pub const TOO_MANY_FROM_ADDRESS: &str = "Too many connections from your address.";
pub const SHUTTING_DOWN: &str = "Server is shutting down.";
pub const KICKED: &str = "You have been kicked from the chat.";
pub const NOT_READING: &str = "Disconnected: you are not reading fast enough.";
pub const FLOOD_DROPPED: &str = "You are sending too fast; message dropped.";
pub const EXCESS_FLOOD: &str = "Disconnected: excess flood.";
pub const IDLE_TIMEOUT: &str = "Disconnected: idle for too long.";
pub const NICK_LOST: &str = "Disconnected: your nickname was taken while the server restarted.";
pub const ONLY_OWNER_KICKS: &str = "Only the room owner can kick.";
pub const CANNOT_KICK_SELF: &str = "You cannot kick yourself.";
pub const TOO_MANY_SCHEDULED: &str = "You already have 10 scheduled messages.";
pub const UNKNOWN_SESSION: &str = "No such session: it has ended; log in again.";
pub const AUTH_FAILED: &str = "Authentication failed.";
pub const TAKEN_OVER: &str = "Your session was taken over by another connection.";
pub const NO_SCHEDULED: &str = "You have no scheduled messages.";

pub const USAGE_WHISPER: &str = "Usage: /whisper <nick> <message>";
pub const USAGE_RENAME: &str = "Usage: /rename <newnick>";
pub const USAGE_KICK: &str = "Usage: /kick <nick>";
pub const USAGE_ME: &str = "Usage: /me <action>";
pub const USAGE_SCHEDULE: &str = "Usage: /schedule HH:MM <message> or /schedule +SECONDS <message>";
pub const USAGE_SCHEDULE_CANCEL: &str = "Usage: /schedule cancel N";
pub const USAGE_JOIN: &str = "Usage: /join #room";
pub const USAGE_PART: &str = "Usage: /part [#room]";
pub const BAD_ROOM_NAME: &str =
    "Room names are # and 1 to 32 letters, digits, _, - or . (like #lab2).";
pub const TOO_MANY_ROOMS: &str = "The server has too many rooms; join an existing one.";
pub const LAST_ROOM: &str = "You cannot leave your last room; /quit leaves the chat.";
pub const USAGE_HISTORY: &str = "Usage: /history [N] (N from 1 to 200)";

pub const HISTORY_END: &str = "--- end of history ---";
pub const NO_HISTORY: &str = "--- no messages yet ---";

/// `/help`: one line per command.
pub const HELP: &[&str] = &[
    "Commands:",
    "/whisper <nick> <message> (or /w) - private message to one user",
    "/user [#room] (or /users) - list the users in the chat or in a room",
    "/rename <newnick> (or /nick) - change your nickname",
    "/kick <nick> - disconnect a user, or remove them from a room (room owner only)",
    "/join #room - join a room (creating it) and talk there",
    "/part [#room] - leave a room",
    "/rooms - list the rooms",
    "/topic [text] - show or set the room's topic (owner)",
    "/schedule HH:MM <message> or /schedule +SECONDS <message> - send later",
    "/schedule list, /schedule cancel N - your pending scheduled messages",
    "/me <action> - describe what you do",
    "/history [N] - the last N public lines (default 50, at most 200)",
    "/help - this list",
    "/quit (or END) - leave the chat",
];

/// Before replayed history; `count` lines follow, then [`HISTORY_END`].
pub fn history_header(count: usize) -> String {
    match count {
        1 => "--- last message ---".to_string(),
        n => format!("--- last {n} messages ---"),
    }
}

pub fn line_too_long() -> String {
    format!("Line too long (max {MAX_LINE} bytes); truncated.")
}

pub fn hello(nick: &str) -> String {
    format!("Hello, {nick}! Type /help for commands.")
}

pub const CLUSTER_DOWN: &str =
    "The link to the other servers is down; you are talking to this server's users only.";
pub const CLUSTER_BACK: &str = "The link to the other servers is back.";

/// A word from the server to everyone, as a person sees it.
pub fn server_notice(text: &str) -> String {
    format!("* {text}")
}

pub fn bye(nick: &str) -> String {
    format!("Bye, {nick}.")
}

pub fn unknown_command(word: &str) -> String {
    format!("Unknown command: {word}. Type /help for commands.")
}

pub fn nick_in_use(nick: &str) -> String {
    format!("Nickname \"{nick}\" is already in use.")
}

pub fn already_connected(bot: &str) -> String {
    format!("{bot} is connected from another device.")
}

pub fn connected_elsewhere(bot: &str) -> String {
    format!(
        "{bot} is connected to another server; its session there ends if it is this device's: try again."
    )
}

pub fn reserved_for_bot(nick: &str) -> String {
    format!("Nickname \"{nick}\" is reserved for a bot.")
}

pub fn nick_unchanged(nick: &str) -> String {
    format!("You are already called \"{nick}\".")
}

pub fn user_not_found(nick: &str) -> String {
    format!("User '{nick}' not found.")
}

pub fn users(nicks: &[&str]) -> String {
    format!("Users in chat: {}", nicks.join(", "))
}

pub fn chat(stamp: &str, nick: &str, text: &str) -> String {
    format!("[{stamp}] {nick}: {text}")
}

pub fn action(stamp: &str, nick: &str, text: &str) -> String {
    format!("[{stamp}] * {nick} {text}")
}

pub fn joined(stamp: &str, nick: &str) -> String {
    format!("[{stamp}] * {nick} has joined the chat.")
}

pub fn left(stamp: &str, nick: &str) -> String {
    format!("[{stamp}] * {nick} has left the chat.")
}

pub fn new_owner(stamp: &str, nick: &str) -> String {
    format!("[{stamp}] * {nick} is now the room owner.")
}

pub fn renamed(stamp: &str, old: &str, new: &str) -> String {
    format!("[{stamp}] * User \"{old}\" has changed their nickname to \"{new}\".")
}

pub fn kicked_by(stamp: &str, target: &str, owner: &str) -> String {
    format!("[{stamp}] * {target} was kicked by {owner}.")
}

pub fn whisper_from(stamp: &str, from: &str, text: &str) -> String {
    format!("[{stamp}] [Whisper from {from}] {text}")
}

pub fn whisper_to(stamp: &str, to: &str, text: &str) -> String {
    format!("[{stamp}] [Whisper to {to}] {text}")
}

pub fn scheduled(stamp: &str, author: &str, text: &str) -> String {
    format!("[{stamp}] [Scheduled by {author}] {text}")
}

/// Confirmation of `/schedule`; `when` is the due time as the user reads it.
pub fn schedule_confirmed(when: &str) -> String {
    format!("Message scheduled for {when}.")
}

pub fn schedule_list_header(count: usize) -> String {
    format!("Your scheduled messages ({count}):")
}

pub fn schedule_list_item(number: usize, when: &str, text: &str) -> String {
    format!("{number}. {when} {text}")
}

pub fn schedule_cancelled(number: usize) -> String {
    format!("Scheduled message {number} cancelled.")
}

pub fn no_such_scheduled(number: usize) -> String {
    format!("You have no scheduled message number {number}.")
}

/// The lobby: every user is in it on login.
pub const LOBBY: &str = "#lobby";

pub fn users_in(room: &str, nicks: &[&str]) -> String {
    format!("Users in {room}: {}", nicks.join(", "))
}

pub fn now_talking_in(room: &str) -> String {
    format!("Now talking in {room}.")
}

pub fn too_many_rooms_for_you(limit: usize) -> String {
    format!("You are in {limit} rooms already; /part one first.")
}

pub fn not_in_room(room: &str) -> String {
    format!("You are not in {room}.")
}

pub fn no_room(room: &str) -> String {
    format!("No room {room}.")
}

pub fn topic_of(room: &str, topic: &str) -> String {
    format!("Topic of {room}: {topic}")
}

pub fn no_topic(room: &str) -> String {
    format!("{room} has no topic.")
}

pub fn only_owner_sets_topic(room: &str) -> String {
    format!("Only the owner of {room} can set its topic.")
}

pub fn only_owner_kicks_from(room: &str) -> String {
    format!("Only the owner of {room} can kick.")
}

pub fn user_not_in_room(nick: &str, room: &str) -> String {
    format!("{nick} is not in {room}.")
}

pub fn removed_from(room: &str, by: &str) -> String {
    format!("You have been removed from {room} by {by}.")
}

/// `/rooms`: the header, then one [`rooms_item`] per room.
pub fn rooms_header(count: usize) -> String {
    format!("Rooms ({count}):")
}

/// `mark` is `*` for the asker's current room, `+` for another of theirs,
/// `-` for the rest.
pub fn rooms_item(mark: char, room: &str, users: usize, topic: Option<&str>) -> String {
    let plural = if users == 1 { "" } else { "s" };
    match topic {
        Some(topic) => format!("  {mark} {room} ({users} user{plural}): {topic}"),
        None => format!("  {mark} {room} ({users} user{plural})"),
    }
}

pub fn joined_room(stamp: &str, nick: &str, room: &str) -> String {
    format!("[{stamp}] * {nick} has joined {room}.")
}

pub fn parted(stamp: &str, nick: &str, room: &str) -> String {
    format!("[{stamp}] * {nick} has left {room}.")
}

pub fn removed_by(stamp: &str, nick: &str, room: &str, by: &str) -> String {
    format!("[{stamp}] * {nick} was removed from {room} by {by}.")
}

pub fn new_room_owner(stamp: &str, nick: &str, room: &str) -> String {
    format!("[{stamp}] * {nick} is now the owner of {room}.")
}

pub fn topic_set(stamp: &str, nick: &str, room: &str, topic: &str) -> String {
    format!("[{stamp}] * {nick} set the topic of {room}: {topic}")
}

/// A public line of a room that is not the receiver's current one: the
/// room's name after the stamp.
pub fn elsewhere(line: &str, room: &str) -> String {
    match line.split_once("] ") {
        Some((stamp, rest)) => format!("{stamp}] {room} {rest}"),
        None => format!("{room} {line}"),
    }
}

/// A reply from the hub as the lines a person reads.
pub fn reply(reply: &Reply) -> Vec<String> {
    match reply {
        Reply::Error { message, .. } => vec![message.clone()],
        Reply::Users { room, nicks, bots } => {
            let shown: Vec<String> = nicks
                .iter()
                .map(|n| match bots.contains(n) {
                    true => format!("{n} (bot)"),
                    false => n.clone(),
                })
                .collect();
            let nicks: Vec<&str> = shown.iter().map(String::as_str).collect();
            if room == LOBBY {
                vec![users(&nicks)]
            } else {
                vec![users_in(room, &nicks)]
            }
        }
        Reply::Rooms(rooms) => {
            let mut lines = vec![rooms_header(rooms.len())];
            lines.extend(rooms.iter().map(|r| {
                let mark = match (r.current, r.member) {
                    (true, _) => '*',
                    (false, true) => '+',
                    (false, false) => '-',
                };
                rooms_item(mark, &r.room, r.users, r.topic.as_deref())
            }));
            lines
        }
        Reply::Topic { room, topic } => match topic {
            Some(topic) => vec![topic_of(room, topic)],
            None => vec![no_topic(room)],
        },
        Reply::Current { room } => vec![now_talking_in(room)],
        Reply::Scheduled { due, .. } => vec![schedule_confirmed(due)],
        Reply::ScheduleList(pending) if pending.is_empty() => vec![NO_SCHEDULED.to_string()],
        Reply::ScheduleList(pending) => {
            let mut lines = vec![schedule_list_header(pending.len())];
            lines.extend(
                pending
                    .iter()
                    .map(|p| schedule_list_item(p.number, &p.due, &p.text)),
            );
            lines
        }
        Reply::Cancelled { number } => vec![schedule_cancelled(*number)],
        Reply::History { count: 0, .. } => vec![NO_HISTORY.to_string()],
        Reply::History { count, .. } => vec![history_header(*count)],
        Reply::HistoryEnd => vec![HISTORY_END.to_string()],
    }
}
