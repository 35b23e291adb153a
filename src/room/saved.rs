//! The scheduled messages as they are saved, so that a new hub, or a new
//! server, keeps them (the hub writes them to `schedule.json`).

use serde::{Deserialize, Serialize};

/// Everything in the file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    /// The next scheduled message's sequence number.
    pub next_seq: u64,
    pub schedule: Vec<SavedMessage>,
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
}
