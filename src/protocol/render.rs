//! Rendering: every line the server sends to a client, in one place.
//!
//! Lines are returned without their `\r\n`; the child adds it when writing.
//! Public lines carry an `[HH:MM]` stamp of the server's local time, which
//! the caller passes in already formatted (see [`crate::os::clock`]).

use super::framing::MAX_LINE;

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
pub const NO_SCHEDULED: &str = "You have no scheduled messages.";

pub const USAGE_WHISPER: &str = "Usage: /whisper <nick> <message>";
pub const USAGE_RENAME: &str = "Usage: /rename <newnick>";
pub const USAGE_KICK: &str = "Usage: /kick <nick>";
pub const USAGE_ME: &str = "Usage: /me <action>";
pub const USAGE_SCHEDULE: &str = "Usage: /schedule HH:MM <message> or /schedule +SECONDS <message>";
pub const USAGE_SCHEDULE_CANCEL: &str = "Usage: /schedule cancel N";
pub const USAGE_HISTORY: &str = "Usage: /history [N] (N from 1 to 200)";

pub const HISTORY_END: &str = "--- end of history ---";
pub const NO_HISTORY: &str = "--- no messages yet ---";

/// `/help`: one line per command.
pub const HELP: &[&str] = &[
    "Commands:",
    "/whisper <nick> <message> (or /w) - private message to one user",
    "/user (or /users) - list the users in the chat",
    "/rename <newnick> (or /nick) - change your nickname",
    "/kick <nick> - disconnect a user (room owner only)",
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

pub fn bye(nick: &str) -> String {
    format!("Bye, {nick}.")
}

pub fn unknown_command(word: &str) -> String {
    format!("Unknown command: {word}. Type /help for commands.")
}

pub fn nick_in_use(nick: &str) -> String {
    format!("Nickname \"{nick}\" is already in use.")
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
