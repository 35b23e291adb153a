//! The messages between client children and the hub, and the socket that
//! carries them.
//!
//! The socket is a Unix-domain `SOCK_SEQPACKET` socket: the kernel keeps
//! datagram boundaries. A datagram carries one or more messages, each on a
//! line of its own: a serde value as JSON ended by LF. JSON escapes every
//! newline and every other byte a client could use to forge another
//! message. One message travels differently, because it is nearly all the
//! traffic: a line for the client ([`ToChild::Line`]) is sent as the exact
//! bytes the client will receive, ended by CR LF, so a child passes it on
//! without decoding it. The two cannot be confused, since JSON never holds
//! a raw CR. The hub sends many messages to a child in one datagram (see
//! [`Link::try_send_batch`]), so a busy room costs one system call per
//! child per batch, not per line.
//!
//! A child sends [`ToHub`] requests and receives [`ToChild`] events. Neither
//! side ever blocks on the other: each sends what the socket takes and
//! queues the rest, in batches made by [`next_batch`] (see [`crate::hub`]
//! and [`crate::session`]). A hub waiting for a child to take its lines must
//! never find that child waiting for the hub to take a request.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr, sockopt,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::protocol::command::Request;
use crate::protocol::reply::{Code, Reply};

/// Largest datagram either side sends: a batch of a hundred or more chat
/// lines (one message is at most about 1 KiB, a 512-byte line
/// JSON-escaped). Bigger batches mean fewer system calls per line (16 KiB
/// against 4 KiB: about 0.55 against 0.8 us of server CPU per delivery in
/// a busy room of 100). A receive buffer this big costs a child only the
/// pages a datagram actually fills; see [`Link::try_recv_into`].
pub const MAX_DATAGRAM: usize = 16 * 1024;
/// Most messages the hub puts in one datagram (a system limit on the
/// number of pieces one `sendmsg` takes is 1024).
pub const MAX_BATCH: usize = 512;

/// A message from a client's child to the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToHub {
    /// Take this nickname and join the room; with `after`, the public
    /// events of the user's rooms since that one come first (a resume).
    /// A program's session has a `token`; with `takeover`, the token of
    /// a session that still exists, it takes that session over instead.
    /// A bot's nickname is its name, and `bot` its proof.
    Login {
        nick: String,
        addr: String,
        #[serde(default)]
        format: Format,
        #[serde(default)]
        after: Option<u64>,
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        takeover: Option<String>,
        #[serde(default)]
        bot: Option<BotProof>,
        /// Rooms to be in at once besides the lobby, so that a resume
        /// covers them too; the last becomes the current one.
        #[serde(default)]
        rooms: Vec<String>,
        /// The client is a browser's page (for `mpchat status`).
        #[serde(default)]
        web: bool,
    },
    /// A new hub has started: put this user back, silently, with the
    /// nickname and id the old hub gave, in the rooms it was in (none
    /// given: the lobby alone).
    Rejoin {
        nick: String,
        addr: String,
        id: u64,
        rooms: Option<Memberships>,
        #[serde(default)]
        format: Format,
        #[serde(default)]
        token: Option<String>,
        /// A bot's device.
        #[serde(default)]
        device: Option<String>,
        #[serde(default)]
        web: bool,
    },
    /// A registered user's command.
    Request(Request),
}

impl ToHub {
    /// A person's login: a nickname, nothing more.
    pub fn person(nick: String, addr: String) -> ToHub {
        ToHub::Login {
            nick,
            addr,
            format: Format::Text,
            after: None,
            token: None,
            takeover: None,
            bot: None,
            rooms: Vec::new(),
            web: false,
        }
    }
}

/// The rooms a user is in, as a new hub needs them to put the user back:
/// each room's name and the user's place in its join order, the rooms in
/// the order joined, and the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memberships {
    pub rooms: Vec<(String, u64)>,
    pub current: String,
}

/// A bot's answer to its challenge: HMAC-SHA256 with its secret over its
/// name, `device` and `nonce` (see `PROTOCOL.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotProof {
    pub device: String,
    pub nonce: String,
    pub mac: String,
}

/// A login's success: the nickname, and `id`, the user's for as long as
/// the session lasts, across hub restarts (join order is id order); `seq`
/// is the newest public event's number; `rooms` are the session's rooms
/// (none: the lobby alone), and `took_over` says whether it is a session
/// taken over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub nick: String,
    pub id: u64,
    pub seq: u64,
    #[serde(default)]
    pub rooms: Option<Memberships>,
    #[serde(default)]
    pub took_over: bool,
}

/// A removal from a room, as the one removed is told it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    pub room: String,
    pub by: String,
}

/// A whisper, as each end is told it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whisper {
    pub from: String,
    pub to: String,
    pub text: String,
    pub time_ms: u64,
    /// This end sent it.
    pub sent: bool,
}

/// What a child's client reads: the hub renders public lines in this
/// form for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    /// Lines for people, `[14:05] alice: hi`.
    #[default]
    Text,
    /// JSON events for programs.
    Json,
}

/// An event from the hub for one client's child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToChild {
    /// A line to show the client, rendered by the hub in the client's
    /// [`Format`].
    Line(String),
    /// The login succeeded. (The rare messages are boxed, so that the one
    /// every line travels in stays small.)
    Registered(Box<Registration>),
    /// Another connection took this session over: say so and close.
    TakenOver,
    /// This user (a bot) has a flood rate of its own, in lines a second
    /// (0: no limit), in thousandths.
    FloodRate { millilines_per_s: u64 },
    /// The answer to the child's oldest unfinished request.
    Reply(Box<Reply>),
    /// The same kind of message, caused by someone else's request.
    Notice(Box<Reply>),
    /// A whisper, to its sender (`sent`) or to its receiver.
    Whisper(Box<Whisper>),
    /// The user was removed from a room by its owner.
    Removed(Box<Removal>),
    /// A resume could not replay everything: events after `after` and
    /// before `next` may be missing.
    Gap { after: u64, next: u64 },
    /// The user is back in the room of a new hub.
    Rejoined,
    /// The hub dropped this child for not reading its socket; it must not
    /// rejoin.
    TooSlow,
    /// The login failed; the reason is a line to show.
    NickRefused { code: Code, reason: String },
    /// The user's nickname is now this.
    Renamed { nick: String },
    /// The user was kicked: say so and close.
    Kicked,
    /// The user's rooms changed: the child keeps this, to give it back to
    /// a new hub in [`ToHub::Rejoin`].
    Memberships(Memberships),
    /// The hub has finished with the child's oldest unanswered request:
    /// everything it sent about that request came before this.
    Done,
}

impl ToChild {
    /// The wire form of this event, made once so the same bytes can go to
    /// many receivers.
    pub fn encode(&self) -> Vec<u8> {
        let ToChild::Line(text) = self else {
            return encode(self);
        };
        let mut bytes = Vec::with_capacity(text.len() + 2);
        // Rendered lines never hold a line end; if one ever did, it must
        // not split the message.
        if text.contains(['\r', '\n']) {
            bytes.extend_from_slice(text.replace(['\r', '\n'], " ").as_bytes());
        } else {
            bytes.extend_from_slice(text.as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        bytes
    }
}

/// One message of a datagram from the hub, as a child reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A line for the client, with its `\r\n`, ready to be written.
    ClientLine(&'a [u8]),
    Other(ToChild),
}

/// Splits a datagram from the hub into its messages.
///
/// Every byte a child sends its client passes through this search for
/// line ends, the hottest loop of a child: memchr's vectorized search
/// keeps it short (a byte-by-byte loop, as `split_inclusive` runs, cost
/// the fan-out benchmark up to a tenth more CPU depending only on where
/// the linker happened to place it).
pub fn events(datagram: &[u8]) -> impl Iterator<Item = io::Result<Event<'_>>> {
    let mut rest = datagram;
    let pieces = std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |at| at + 1);
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    });
    pieces.map(|piece| {
        if piece.ends_with(b"\r\n") {
            Ok(Event::ClientLine(piece))
        } else {
            decode(piece.strip_suffix(b"\n").unwrap_or(piece)).map(Event::Other)
        }
    })
}

/// The encoded messages at the front of a queue that fit in one datagram.
pub struct Batch<'a> {
    /// For [`Link::try_send_batch`]: always at least one message (however
    /// long), and at most [`MAX_BATCH`].
    pub pieces: Vec<IoSlice<'a>>,
    /// Their length in all, to take off what the queue holds once sent.
    pub bytes: usize,
}

/// The next datagram's worth of a queue of encoded messages.
pub fn next_batch<T: AsRef<[u8]>>(queue: &VecDeque<T>) -> Batch<'_> {
    let mut batch = Batch {
        pieces: Vec::new(),
        bytes: 0,
    };
    for message in queue.iter().take(MAX_BATCH).map(AsRef::as_ref) {
        if !batch.pieces.is_empty() && batch.bytes + message.len() > MAX_DATAGRAM {
            break;
        }
        batch.bytes += message.len();
        batch.pieces.push(IoSlice::new(message));
    }
    batch
}

/// The other end of the connection is gone (a send's error).
pub fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN)
    )
}

/// Encodes a message as JSON with its line end.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these plain enums of strings and numbers cannot fail.
    let mut bytes = serde_json::to_vec(msg).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Decodes one message; a malformed one is an `InvalidData` error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    serde_json::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// What a non-blocking receive found.
#[derive(Debug)]
pub enum Received<T> {
    /// One datagram (its messages, or its length).
    Data(T),
    /// Nothing waiting right now.
    Empty,
    /// The other side closed the socket (or died).
    Closed,
}

/// One end of a child–hub connection.
#[derive(Debug)]
pub struct Link {
    fd: OwnedFd,
}

impl AsFd for Link {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Link {
    /// Connects a child to the hub's socket.
    pub fn connect(path: &Path) -> io::Result<Link> {
        let fd = seqpacket_socket()?;
        let addr = UnixAddr::new(path)?;
        socket::connect(fd.as_raw_fd(), &addr)?;
        Ok(Link { fd })
    }

    /// Sends encoded messages as one datagram without waiting: `Ok(false)`
    /// means the socket is full and the caller should try again when it is
    /// writable. The pieces are gathered by the kernel, not copied here.
    pub fn try_send_batch(&self, messages: &[IoSlice]) -> io::Result<bool> {
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        loop {
            match socket::sendmsg::<UnixAddr>(self.fd.as_raw_fd(), messages, &[], flags, None) {
                Ok(_) => return Ok(true),
                Err(Errno::EAGAIN) => return Ok(false),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives one datagram of JSON messages without waiting. A message
    /// that does not decode is an `InvalidData` error; the datagram's other
    /// messages are lost with it.
    pub fn try_recv<T: DeserializeOwned>(&self, buf: &mut Vec<u8>) -> io::Result<Received<Vec<T>>> {
        match self.try_recv_into(buf)? {
            Received::Data(()) => {}
            Received::Empty => return Ok(Received::Empty),
            Received::Closed => return Ok(Received::Closed),
        }
        buf.split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(decode)
            .collect::<io::Result<Vec<T>>>()
            .map(Received::Data)
    }

    /// Receives one datagram without waiting; `buf` then holds exactly it.
    ///
    /// The buffer gets room for [`MAX_DATAGRAM`] bytes but is not zeroed
    /// first: zeroing would make every child keep all of its pages, where
    /// the kernel writes only the pages the datagram fills. nix's `recv`
    /// wants an initialized slice, so this calls libc itself.
    pub fn try_recv_into(&self, buf: &mut Vec<u8>) -> io::Result<Received<()>> {
        buf.clear();
        buf.reserve(MAX_DATAGRAM);
        loop {
            // SAFETY: the pointer and length describe `buf`'s spare
            // capacity, valid for writes; recv writes at most that many
            // bytes into it and reads nothing from it.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.capacity(),
                    libc::MSG_DONTWAIT,
                )
            };
            if let Ok(n) = usize::try_from(n) {
                // SAFETY: recv has initialized the first `n` bytes, and `n`
                // is at most the capacity.
                unsafe { buf.set_len(n) };
                return Ok(if n == 0 {
                    Received::Closed
                } else {
                    Received::Data(())
                });
            }
            match Errno::last() {
                Errno::EAGAIN => return Ok(Received::Empty),
                Errno::EINTR => continue,
                Errno::ECONNRESET => return Ok(Received::Closed),
                e => return Err(e.into()),
            }
        }
    }

    /// Ends the connection now, though the fd stays open until dropped.
    pub fn shutdown(&self) {
        let _ = socket::shutdown(self.fd.as_raw_fd(), socket::Shutdown::Both);
    }

    /// The user id and pid of the process at the other end (as it was
    /// when it connected).
    pub fn peer(&self) -> io::Result<(u32, u32)> {
        let credentials = socket::getsockopt(&self.fd, sockopt::PeerCredentials)?;
        Ok((credentials.uid(), credentials.pid() as u32))
    }
}

fn seqpacket_socket() -> io::Result<OwnedFd> {
    Ok(socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// The hub's listening socket.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Listener {
    /// Another fd for the same socket (close-on-exec like the first).
    pub fn try_clone(&self) -> io::Result<Listener> {
        Ok(Listener {
            fd: self.fd.try_clone()?,
        })
    }

    /// Binds the hub's socket at `path`. The caller makes `path`'s directory
    /// private; the file is also made owner-only.
    pub fn bind(path: &Path) -> io::Result<Listener> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        socket::bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        socket::listen(&fd, Backlog::MAXCONN)?;
        Ok(Listener { fd })
    }

    /// Accepts one waiting connection, non-blocking; `Ok(None)` when none.
    pub fn accept(&self) -> io::Result<Option<Link>> {
        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        loop {
            match socket::accept4(&self.fd, flags) {
                Ok(fd) => return Ok(Some(Link { fd })),
                Err(Errno::EAGAIN | Errno::ECONNABORTED) => return Ok(None),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_cannot_forge_a_second_message() {
        let text = "\"\n{\"Kick\":\"bob\"}\r\0".to_string();
        let bytes = encode(&ToHub::Request(Request::Say(text.clone())));
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert_eq!(
            decode::<ToHub>(&bytes).unwrap(),
            ToHub::Request(Request::Say(text))
        );
    }

    #[test]
    fn a_batch_fills_one_datagram_and_always_holds_one_message() {
        let queue: VecDeque<Vec<u8>> = [10_000, 6_000, 500, 1].map(|n| vec![b'x'; n]).into();
        let batch = next_batch(&queue);
        assert_eq!((batch.pieces.len(), batch.bytes), (2, 16_000));
        let huge: VecDeque<Vec<u8>> = [vec![b'x'; 20_000], vec![b'x'; 1]].into();
        let batch = next_batch(&huge);
        assert_eq!((batch.pieces.len(), batch.bytes), (1, 20_000));
        let many: VecDeque<Vec<u8>> = (0..MAX_BATCH + 5).map(|_| vec![b'x'; 1]).collect();
        assert_eq!(next_batch(&many).pieces.len(), MAX_BATCH);
    }

    #[test]
    fn messages_round_trip_over_a_socket() {
        let dir = std::env::temp_dir().join(format!("mpchat-ipc-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hub.sock");
        let listener = Listener::bind(&path).unwrap();
        let child = Link::connect(&path).unwrap();
        let hub = listener.accept().unwrap().expect("pending connection");
        let hi = encode(&ToHub::Request(Request::Say("hi".into())));
        assert!(child.try_send_batch(&[IoSlice::new(&hi)]).unwrap());
        let mut buf = Vec::new();
        match hub.try_recv::<ToHub>(&mut buf).unwrap() {
            Received::Data(m) => assert_eq!(m, [ToHub::Request(Request::Say("hi".into()))]),
            other => panic!("expected a message, got {other:?}"),
        }
        let batch = [
            ToChild::Line("a {\"Kicked\"}".into()).encode(),
            ToChild::Kicked.encode(),
            ToChild::Line("b\nc".into()).encode(),
        ];
        let slices: Vec<IoSlice> = batch.iter().map(|b| IoSlice::new(b)).collect();
        assert!(hub.try_send_batch(&slices).unwrap());
        match child.try_recv_into(&mut buf).unwrap() {
            Received::Data(()) => {}
            other => panic!("expected a datagram, got {other:?}"),
        }
        let got: Vec<Event> = events(&buf).map(Result::unwrap).collect();
        assert_eq!(
            got,
            [
                Event::ClientLine(b"a {\"Kicked\"}\r\n"),
                Event::Other(ToChild::Kicked),
                Event::ClientLine(b"b c\r\n"),
            ]
        );
        let (uid, pid) = hub.peer().unwrap();
        assert_eq!(uid, nix::unistd::getuid().as_raw());
        assert_eq!(pid, std::process::id());
        drop(child);
        assert!(matches!(
            hub.try_recv::<ToHub>(&mut buf).unwrap(),
            Received::Closed
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
