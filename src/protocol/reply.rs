//! What the hub answers one user, as a value: the child renders it in its
//! client's protocol, as text lines ([`super::render::reply`]) or as a
//! JSON object ([`super::json::reply`]).
//!
//! Public lines are not replies: the hub renders them once, in each form
//! their receivers need (see `room::entry`). A reply goes to one child,
//! so rendering it there costs nothing shared, and the hub needs to know
//! nothing of the request's `id`, which only the JSON client's child keeps.

use serde::{Deserialize, Serialize};

/// Why a request failed, or a session ended: what a program reads,
/// where a person reads the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    BadJson,
    LineTooLong,
    UnknownType,
    BadRequest,
    TextTooLong,
    NotLoggedIn,
    AlreadyLoggedIn,
    BadNick,
    NickTaken,
    NickUnchanged,
    TooManyTries,
    LoginTimeout,
    BadRoom,
    NotInRoom,
    NoSuchRoom,
    LastRoom,
    TooManyRooms,
    NoSuchUser,
    NotOwner,
    CannotKickSelf,
    TooManyScheduled,
    NoSuchScheduled,
    Flood,
    UnknownSession,
    AuthFailed,
    AlreadyConnected,
    Kicked,
    PingTimeout,
    IdleTimeout,
    TooSlow,
    TakenOver,
    NickLost,
    ShuttingDown,
    TooManyErrors,
    ServerFull,
    TooManyConnections,
    ServerBusy,
}

impl Code {
    /// The code as it is on the wire (`nick_taken`).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadJson => "bad_json",
            Code::LineTooLong => "line_too_long",
            Code::UnknownType => "unknown_type",
            Code::BadRequest => "bad_request",
            Code::TextTooLong => "text_too_long",
            Code::NotLoggedIn => "not_logged_in",
            Code::AlreadyLoggedIn => "already_logged_in",
            Code::BadNick => "bad_nick",
            Code::NickTaken => "nick_taken",
            Code::NickUnchanged => "nick_unchanged",
            Code::TooManyTries => "too_many_tries",
            Code::LoginTimeout => "login_timeout",
            Code::BadRoom => "bad_room",
            Code::NotInRoom => "not_in_room",
            Code::NoSuchRoom => "no_such_room",
            Code::LastRoom => "last_room",
            Code::TooManyRooms => "too_many_rooms",
            Code::NoSuchUser => "no_such_user",
            Code::NotOwner => "not_owner",
            Code::CannotKickSelf => "cannot_kick_self",
            Code::TooManyScheduled => "too_many_scheduled",
            Code::NoSuchScheduled => "no_such_scheduled",
            Code::Flood => "flood",
            Code::UnknownSession => "unknown_session",
            Code::AuthFailed => "auth_failed",
            Code::AlreadyConnected => "already_connected",
            Code::Kicked => "kicked",
            Code::PingTimeout => "ping_timeout",
            Code::IdleTimeout => "idle_timeout",
            Code::TooSlow => "too_slow",
            Code::TakenOver => "taken_over",
            Code::NickLost => "nick_lost",
            Code::ShuttingDown => "shutting_down",
            Code::TooManyErrors => "too_many_errors",
            Code::ServerFull => "server_full",
            Code::TooManyConnections => "too_many_connections",
            Code::ServerBusy => "server_busy",
        }
    }
}

/// The hub's answer to a user's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The request changed nothing; `message` is the line a person reads.
    Error {
        code: Code,
        message: String,
    },
    /// Who is in a room, in its join order; `bots` are those of them that
    /// are bots.
    Users {
        room: String,
        nicks: Vec<String>,
        bots: Vec<String>,
    },
    Rooms(Vec<RoomItem>),
    Topic {
        room: String,
        topic: Option<String>,
    },
    /// The user's current room is now this one.
    Current {
        room: String,
    },
    /// A message was scheduled; `due` is the due time as a person reads
    /// it (`14:05:30`, `tomorrow 08:00:00`).
    Scheduled {
        due_ms: u64,
        due: String,
    },
    ScheduleList(Vec<Pending>),
    Cancelled {
        number: usize,
    },
    /// Replayed history of `room`: `count` lines follow, each already in
    /// the receiver's protocol, then [`Reply::HistoryEnd`] (none when
    /// `count` is 0).
    History {
        room: String,
        count: usize,
    },
    HistoryEnd,
}

/// One room as `/rooms` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomItem {
    pub room: String,
    pub users: usize,
    pub topic: Option<String>,
    /// The asker is in it.
    pub member: bool,
    /// It is the asker's current room.
    pub current: bool,
}

/// One of a user's scheduled messages, numbered from 1 as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub number: usize,
    pub due_ms: u64,
    pub due: String,
    pub text: String,
}

/// An error reply.
pub fn error(code: Code, message: impl Into<String>) -> Reply {
    Reply::Error {
        code,
        message: message.into(),
    }
}
