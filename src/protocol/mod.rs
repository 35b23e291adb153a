//! The wire protocols: between a client and its child process, and
//! between the children and the hub.
//!
//! Clients are people on `telnet` or `nc` and the class-lab C client, who
//! get plain text: the server sends UTF-8 lines ending in `\r\n`, and
//! accepts lines ended any way a terminal ends them; and programs, who
//! speak JSON lines on the same port.
//!
//! * [`framing`]: bytes to lines (line ends, telnet negotiation, length cap).
//! * [`sanitize`]: a line's bytes to text that is safe to show to others.
//! * [`command`]: text to a [`command::Command`], and nickname rules.
//! * [`render`]: every line the server sends, in one place.
//! * [`sniff`]: which protocol a client speaks, from its first bytes.
//! * [`json`]: the JSON-lines protocol for programs (`PROTOCOL.md`).
//! * [`http`]: a browser's request and the response (the page, embedded).
//! * [`websocket`]: the browser's JSON messages over WebSocket.
//! * [`reply`]: the hub's answers to one user, as values each protocol
//!   renders its way.
//! * [`ipc`]: the messages between a client's child and the hub, and the
//!   socket that carries them.
//!
//! May use: `os` only. Checked by `scripts/check_layout.py`.

pub mod command;
pub mod framing;
pub mod http;
pub mod ipc;
pub mod json;
pub mod render;
pub mod reply;
pub mod sanitize;
pub mod sniff;
pub mod websocket;

/// What ends every line the server sends.
pub const CRLF: &str = "\r\n";
