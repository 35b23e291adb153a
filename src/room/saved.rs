//! What the hub saves so that a new hub, or a new server, keeps it: the
//! scheduled messages and the rooms' topics (the hub writes them to
//! `schedule.json`).

use serde::{Deserialize, Serialize};

/// Everything in the file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    /// The next scheduled message's sequence number.
    pub next_seq: u64,
    pub schedule: Vec<SavedMessage>,
    /// Each room's topic, by room name, so that the rooms the users bring
    /// back to a new hub keep theirs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<(String, String)>,
}

/// One pending scheduled message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedMessage {
    /// Due time, in milliseconds since the Unix epoch.
    pub due_ms: u64,
    pub seq: u64,
    /// The author's user id (see [`crate::protocol::ipc::ToChild::Registered`]).
    pub author: u64,
    pub author_nick: String,
    pub text: String,
    /// The room it is posted to; none in a file from before rooms.
    #[serde(default = "lobby")]
    pub room: String,
}

fn lobby() -> String {
    crate::protocol::render::LOBBY.to_string()
}
