//! One public line of a room, as the history keeps it and as it is shown
//! again: what the room's rules produce, and the hub writes to disk.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::os::clock;
use crate::protocol::{json, render};

/// What kind of public line an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Chat,
    Me,
    Scheduled,
    /// Joined the room (the lobby: logged in).
    Join,
    /// Left the chat.
    Leave,
    Rename,
    /// Kicked from the chat.
    Kick,
    /// Someone became the room's owner.
    Owner,
    /// Left the room, staying in the chat.
    Part,
    /// Removed from the room by its owner (`text`).
    Removed,
    /// The owner set the room's topic (`text`).
    Topic,
}

fn lobby() -> String {
    render::LOBBY.to_string()
}

/// One public line, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The event's number: server-wide, only growing, never reused, also
    /// across hub and server restarts (a new hub goes on from the largest
    /// in the history). 0 for an entry from before numbers were kept.
    #[serde(default)]
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub kind: Kind,
    /// Who it is about: the speaker, who joined, left or was kicked, the
    /// old nickname of a rename, the author of a scheduled message.
    pub nick: String,
    /// The message; for a rename the new nickname, for a kick who kicked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    /// The room's name; the history from before rooms has none: the
    /// lobby's.
    #[serde(default = "lobby")]
    pub room: String,
    /// `nick` is a bot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bot: bool,
}

impl Kind {
    const ALL: [Kind; 11] = [
        Kind::Chat,
        Kind::Me,
        Kind::Scheduled,
        Kind::Join,
        Kind::Leave,
        Kind::Rename,
        Kind::Kick,
        Kind::Owner,
        Kind::Part,
        Kind::Removed,
        Kind::Topic,
    ];

    /// The kind [`Kind::name`] names.
    pub(crate) fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind as JSON events name it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Me => "me",
            Kind::Scheduled => "scheduled",
            Kind::Join => "join",
            Kind::Leave => "leave",
            Kind::Rename => "rename",
            Kind::Kick => "kick",
            Kind::Owner => "owner",
            Kind::Part => "part",
            Kind::Removed => "removed",
            Kind::Topic => "topic",
        }
    }
}

impl Entry {
    pub(crate) fn new(time: SystemTime, room: &str, kind: Kind, nick: &str, text: &str) -> Entry {
        Entry {
            seq: 0,
            time_ms: clock::unix_ms(time),
            kind,
            nick: nick.to_string(),
            text: text.to_string(),
            room: room.to_string(),
            bot: false,
        }
    }

    /// A message someone sent (rather than a join, leave and the like).
    pub(crate) fn is_message(&self) -> bool {
        matches!(self.kind, Kind::Chat | Kind::Me | Kind::Scheduled)
    }

    pub(crate) fn time(&self) -> SystemTime {
        clock::from_unix_ms(self.time_ms)
    }

    /// The line users see, with `stamp` for its time. Live lines and
    /// replayed ones are rendered by this one function, so they look alike.
    ///
    /// This is the line for the members whose current room it is; the
    /// others see [`render::elsewhere`] of it. The lobby keeps the words
    /// it had before there were rooms.
    pub(crate) fn render(&self, stamp: &str) -> String {
        let (nick, text, room) = (self.nick.as_str(), self.text.as_str(), self.room.as_str());
        let lobby = room == render::LOBBY;
        match self.kind {
            Kind::Chat => render::chat(stamp, nick, text),
            Kind::Me => render::action(stamp, nick, text),
            Kind::Scheduled => render::scheduled(stamp, nick, text),
            Kind::Join if lobby => render::joined(stamp, nick),
            Kind::Join => render::joined_room(stamp, nick, room),
            Kind::Leave => render::left(stamp, nick),
            Kind::Rename => render::renamed(stamp, nick, text),
            Kind::Kick => render::kicked_by(stamp, nick, text),
            Kind::Owner if lobby => render::new_owner(stamp, nick),
            Kind::Owner => render::new_room_owner(stamp, nick, room),
            Kind::Part => render::parted(stamp, nick, room),
            Kind::Removed => render::removed_by(stamp, nick, room, text),
            Kind::Topic => render::topic_set(stamp, nick, room, text),
        }
    }

    /// The event as JSON clients receive it (see `PROTOCOL.md`): the
    /// same for every member, whichever room is current for them.
    pub(crate) fn json(&self) -> String {
        let text = Some(self.text.as_str()).filter(|t| !t.is_empty());
        let (text, to, by) = match self.kind {
            Kind::Rename => (None, text, None),
            Kind::Kick | Kind::Removed => (None, None, text),
            _ => (text, None, None),
        };
        json::event(&json::Event {
            kind_of_line: "event",
            seq: self.seq,
            ts: self.time_ms,
            room: &self.room,
            kind: self.kind.name(),
            from: &self.nick,
            text,
            to,
            by,
            bot: self.bot,
        })
    }
}
