//! The chat's rules: who is here, which rooms there are, who owns each,
//! and what each request does.
//!
//! The hub owns one [`Chat`]. It holds no sockets: each call returns the
//! [`Delivery`]s to make, and the hub carries them out. That keeps every
//! rule of the chat in one place that can be tested without processes.
//!
//! Users are identified by their connection's [`ConnId`], never by
//! nickname, since a nickname can change; rooms by their name's key
//! ([`room_key`]), since `#Lab2` and `#lab2` are one room. Every user is
//! in `#lobby` on login; a user who never types a room command sees the
//! chat as it was before there were rooms.
//!
//! May use: `protocol` and `os` only: no sockets, no files, no clock of
//! its own (the time is passed in). Checked by `scripts/check_layout.py`.

pub(crate) mod cluster;
pub(crate) mod entry;
pub(crate) mod saved;

pub(crate) use cluster::{Relay, Visitor};
pub(crate) use entry::{Entry, Kind};

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use crate::os::clock;
use crate::protocol::command::{
    MAX_HISTORY, Request, When, check_nick, check_room, nick_key, room_key,
};
use crate::protocol::ipc::{Format, Memberships, Registration, Removal, ToChild, ToHub, Whisper};
use crate::protocol::json;
use crate::protocol::render::{self, LOBBY};
use crate::protocol::reply::{self, Code, Pending, Reply, RoomItem};
use saved::{SavedMessage, State};

/// The hub's name for one child connection.
pub(crate) type ConnId = u64;

/// A room's name folded for comparison ([`room_key`]). The lobby's name
/// is its own key.
pub(crate) type RoomKey = String;

/// Pending scheduled messages per user, at most.
pub(crate) const MAX_SCHEDULED_PER_USER: usize = 10;

/// Lines of history a user who joins is shown, unless told otherwise.
pub(crate) const DEFAULT_REPLAY: usize = 20;

/// Public events kept in memory for JSON clients that resume: the last
/// this many over all rooms (a new hub reads as many back from the
/// history files).
pub(crate) const RESUME_KEPT: usize = 10_000;
/// Events one resume replays, at most, unless told otherwise.
pub(crate) const DEFAULT_RESUME_MAX: usize = 1000;

/// How many rooms there may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// Rooms one user may be in at once.
    pub per_user: usize,
    /// Rooms on the server, the lobby included.
    pub total: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits {
            per_user: 10,
            total: 1000,
        }
    }
}

/// Who receives a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    One(ConnId),
    /// Each of these users once.
    Many(Vec<ConnId>),
    /// Every member of a room: to people, the message as it is if it is
    /// their current room, [`Delivery::elsewhere`] if not; to programs,
    /// [`Delivery::json`].
    Room(RoomKey),
    /// The members of a room whose client reads JSON.
    JsonMembers(RoomKey),
}

/// A user's public line on its way to the cluster's stream of its room,
/// and from there back to every server, this one included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outgoing {
    pub key: RoomKey,
    /// The room's name as shown.
    pub room: String,
    pub kind: Kind,
    pub nick: String,
    pub text: String,
    /// `nick` is a bot.
    pub bot: bool,
    /// For an event about the whole chat (leaving it, a kick): the names
    /// of the user's other rooms, told with this one.
    pub also: Vec<String>,
    /// The server of the user it is about.
    pub server: String,
    /// That server's roster version when the line was handed out (see
    /// [`cluster`]).
    pub stamp: cluster::Version,
    /// Its number in the cluster, the same on every server, once it has
    /// one (0 before). Its `seq` is this times [`SEQ_PER_LINE`].
    pub number: u64,
}

/// In a cluster, a line numbered N by the cluster has `seq` N times this
/// on every server, so that a JSON client resumes from it on any of
/// them; the lines only one server tells (a new owner there, a server's
/// users gone, lines while the link is down) take the numbers in between.
pub(crate) const SEQ_PER_LINE: u64 = 1000;

/// One message to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub to: Target,
    pub msg: ToChild,
    /// For [`Target::Room`]: the form for the members whose current room
    /// is another (the room's name after the stamp).
    pub elsewhere: Option<ToChild>,
    /// For [`Target::Room`]: the form for members whose client reads
    /// JSON; made only when the room has such members.
    pub json: Option<ToChild>,
    /// For a room's public line: what it is and whose, for the hub's
    /// debug log (made only while that log is on).
    pub about: Option<(Kind, String)>,
}

pub(crate) fn to(conn: ConnId, msg: ToChild) -> Delivery {
    Delivery {
        to: Target::One(conn),
        msg,
        elsewhere: None,
        json: None,
        about: None,
    }
}

fn line(to: Target, text: String) -> Delivery {
    Delivery {
        to,
        msg: ToChild::Line(text),
        elsewhere: None,
        json: None,
        about: None,
    }
}

/// The answer to `conn`'s request.
fn answer(conn: ConnId, reply: Reply) -> Delivery {
    to(conn, ToChild::Reply(Box::new(reply)))
}

/// An error as the answer to `conn`'s request.
fn refuse(conn: ConnId, code: Code, message: impl Into<String>) -> Vec<Delivery> {
    vec![answer(conn, reply::error(code, message))]
}

#[derive(Debug)]
struct User {
    nick: String,
    addr: String,
    /// Stays the user's across hub restarts; the lobby's join order is id
    /// order.
    id: u64,
    /// The rooms the user is in, in the order joined, each with the
    /// user's place in its join order.
    rooms: Vec<(RoomKey, u64)>,
    /// Where plain lines go.
    current: RoomKey,
    /// What the user's client reads.
    format: Format,
    /// A program's session token, which lets a new connection take the
    /// session over. Never logged.
    token: Option<String>,
    /// A bot's device: the user is the bot of that name on that device.
    device: Option<String>,
    /// The user is on a browser's page (shown by `mpchat status`).
    web: bool,
}

/// Who logs in, as the child asks for it.
#[derive(Debug)]
struct Arrival {
    nick: String,
    addr: String,
    format: Format,
    /// Replay the events after this one (a resume).
    after: Option<u64>,
    token: Option<String>,
    /// Take over the session with this token.
    takeover: Option<String>,
    /// A bot's device; the hub has checked its proof.
    device: Option<String>,
    /// Rooms to be in at once, besides the lobby.
    rooms: Vec<String>,
    /// A browser's page.
    web: bool,
}

/// One member of a room.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member {
    pub conn: ConnId,
    /// Place in the room's join order: the longest present comes first.
    seq: u64,
    /// This is the member's current room.
    pub here: bool,
    /// The member's client reads JSON.
    pub json: bool,
}

#[derive(Debug)]
struct Room {
    /// As its creator wrote it.
    name: String,
    /// In join order; the first is the owner.
    members: Vec<Member>,
    /// Members whose current room is another: while there are none (a
    /// server that only has the lobby), a line needs only its one form.
    away: usize,
    /// Members whose client reads JSON: while there are none, no line is
    /// rendered as JSON.
    json: usize,
    topic: Option<String>,
    /// The users of the cluster's other servers in the room (their
    /// nicknames' keys), in the order they came: never delivered to here.
    visitors: Vec<String>,
    /// In a cluster: each user's place in the room's join order across
    /// the servers (its join's number in the cluster), by nickname key;
    /// the smallest owns the room (see `cluster`).
    order: HashMap<String, u64>,
    /// The owner last told, by nickname key (a cluster tells a new owner
    /// when it sees the order change).
    owner_told: Option<String>,
}

impl Room {
    fn new(name: &str) -> Room {
        Room {
            name: name.to_string(),
            members: Vec::new(),
            away: 0,
            json: 0,
            topic: None,
            visitors: Vec::new(),
            order: HashMap::new(),
            owner_told: None,
        }
    }

    /// Nobody is in it, here or on another server.
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.visitors.is_empty()
    }

    fn owner(&self) -> Option<ConnId> {
        self.members.first().map(|m| m.conn)
    }

    fn has(&self, conn: ConnId) -> bool {
        self.members.iter().any(|m| m.conn == conn)
    }

    /// Adds `conn` in its place by `seq`.
    fn add(&mut self, conn: ConnId, seq: u64, here: bool, format: Format) {
        let json = format == Format::Json;
        let at = self.members.partition_point(|m| m.seq < seq);
        self.members.insert(
            at,
            Member {
                conn,
                seq,
                here,
                json,
            },
        );
        self.away += usize::from(!here);
        self.json += usize::from(json);
    }

    fn remove(&mut self, conn: ConnId) {
        if let Some(at) = self.members.iter().position(|m| m.conn == conn) {
            let gone = self.members.remove(at);
            self.away -= usize::from(!gone.here);
            self.json -= usize::from(gone.json);
        }
    }

    fn set_here(&mut self, conn: ConnId, here: bool) {
        if let Some(m) = self.members.iter_mut().find(|m| m.conn == conn)
            && m.here != here
        {
            m.here = here;
            if here {
                self.away -= 1;
            } else {
                self.away += 1;
            }
        }
    }
}

#[derive(Debug)]
struct Scheduled {
    due: SystemTime,
    /// Breaks ties between messages due at the same second: first come,
    /// first delivered.
    seq: u64,
    /// The author's user id.
    author: u64,
    /// The author's nickname when scheduling; the message keeps it even if
    /// the author is renamed or gone by the time it is due.
    author_nick: String,
    text: String,
    /// The room that was the author's current one.
    room: String,
}

/// A room as `mpchat status` shows it.
#[derive(Debug)]
pub(crate) struct RoomInfo<'a> {
    pub name: &'a str,
    pub users: usize,
    pub owner: Option<&'a str>,
    pub topic: Option<&'a str>,
}

/// The shared state of the chat.
#[derive(Debug)]
pub(crate) struct Chat {
    users: HashMap<ConnId, User>,
    by_nick: HashMap<String, ConnId>,
    /// The rooms with members, and the lobby always.
    rooms: HashMap<RoomKey, Room>,
    limits: RoomLimits,
    /// Pending scheduled messages, sorted by (due, seq).
    schedule: Vec<Scheduled>,
    next_seq: u64,
    /// User ids and places in rooms' join orders.
    next_id: u64,
    /// The next public event's number (see [`Entry::seq`]).
    next_event: u64,
    /// Counts changes to what is saved (schedule, topics), so the hub
    /// knows when to save it.
    saved_changes: u64,
    /// Topics a former hub saved, for the rooms users bring back.
    /// (Kept in what is saved until their rooms come back, so a second
    /// restart does not lose them.)
    saved_topics: HashMap<RoomKey, (String, String)>,
    /// Users the hub dropped because their child stopped reading: their
    /// child must not rejoin when it finds its socket closed.
    too_slow: HashSet<u64>,
    /// Each room's last public lines, oldest first, at most
    /// [`MAX_HISTORY`]; kept when a room empties, as its history is.
    recent: HashMap<RoomKey, VecDeque<Entry>>,
    /// The last [`RESUME_KEPT`] public lines of all rooms, oldest first,
    /// for resumes.
    events: VecDeque<Entry>,
    /// Events one resume replays, at most.
    resume_max: usize,
    /// The seq the next public line takes, from the cluster's number.
    numbered: Option<u64>,
    /// Public lines the hub has not yet handed to the history's writer.
    unwritten: Vec<Entry>,
    /// Lines of history shown to a user who joins.
    replay_lines: usize,
    /// The bots' names, folded: no person may take one.
    bot_names: HashSet<String>,
    /// In a cluster whose link is up: users' lines go to [`Chat::outgoing`]
    /// and come back through [`Chat::cluster_line`].
    cluster: bool,
    outgoing: Vec<Outgoing>,
    /// In a cluster, nicknames are leased from Redis (by the hub): those
    /// freed here since the hub last looked, to give back.
    leases: bool,
    freed_nicks: Vec<String>,
    /// In a cluster: this server's name (empty otherwise), the users of
    /// the others by nickname key, and what is known of their versions.
    server: String,
    visitors: HashMap<String, Visitor>,
    heard: HashMap<String, cluster::Heard>,
    /// This server's last roster published, without its version line.
    roster_body: String,
    roster_version: cluster::Version,
    relays: Vec<(String, Relay)>,
}

impl Default for Chat {
    fn default() -> Self {
        Self::new(RoomLimits::default())
    }
}

impl Chat {
    pub(crate) fn new(limits: RoomLimits) -> Self {
        // Ids start from the clock (in microseconds), so that a hub
        // started after another gives ids above all of the old hub's,
        // which its users bring back when they rejoin.
        let next_id = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        let mut rooms = HashMap::new();
        rooms.insert(LOBBY.to_string(), Room::new(LOBBY));
        Chat {
            users: HashMap::new(),
            by_nick: HashMap::new(),
            rooms,
            limits,
            schedule: Vec::new(),
            next_seq: 0,
            next_id,
            next_event: 1,
            saved_changes: 0,
            saved_topics: HashMap::new(),
            too_slow: HashSet::new(),
            recent: HashMap::new(),
            events: VecDeque::new(),
            resume_max: DEFAULT_RESUME_MAX,
            numbered: None,
            unwritten: Vec::new(),
            replay_lines: DEFAULT_REPLAY,
            bot_names: HashSet::new(),
            cluster: false,
            outgoing: Vec::new(),
            leases: false,
            freed_nicks: Vec::new(),
            server: String::new(),
            visitors: HashMap::new(),
            heard: HashMap::new(),
            roster_body: String::new(),
            roster_version: (0, 0),
            relays: Vec::new(),
        }
    }

    /// Takes the last lines of the history (oldest first), and how many of
    /// them a user who joins a room is shown.
    pub(crate) fn restore_history(&mut self, entries: Vec<Entry>, replay_lines: usize) {
        // The newest entries are the last written, so the largest number
        // is among them.
        if let Some(max) = entries.iter().map(|e| e.seq).max() {
            self.next_event = self.next_event.max(max + 1);
        }
        for entry in entries {
            self.remember(entry.clone());
            let recent = self.recent.entry(room_key(&entry.room)).or_default();
            if recent.len() == MAX_HISTORY {
                recent.pop_front();
            }
            recent.push_back(entry);
        }
        self.replay_lines = replay_lines.min(MAX_HISTORY);
    }

    /// The bots' names (folded), which people may not take.
    pub(crate) fn set_bots<'a>(&mut self, names: impl Iterator<Item = &'a str>) {
        self.bot_names = names.map(str::to_string).collect();
    }

    /// How many events one resume replays at most.
    pub(crate) fn set_resume_max(&mut self, resume_max: usize) {
        self.resume_max = resume_max;
    }

    /// Keeps an event for resumes.
    fn remember(&mut self, entry: Entry) {
        if self.events.len() == RESUME_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(entry);
    }

    /// A new public line, numbered (see [`Entry::seq`]).
    fn new_entry(
        &mut self,
        now: SystemTime,
        room: &str,
        kind: Kind,
        nick: &str,
        text: &str,
    ) -> Entry {
        let mut entry = Entry::new(now, room, kind, nick, text);
        entry.bot = !self.bot_names.is_empty() && self.bot_names.contains(&nick_key(nick));
        entry.seq = self.take_number();
        entry
    }

    /// The next public event's number.
    fn take_number(&mut self) -> u64 {
        // A cluster's number below this server's own (a Redis that lost
        // its data) would break the order: the server's own number then.
        let n = match self.numbered.take() {
            Some(n) if n >= self.next_event => n,
            _ => self.next_event,
        };
        self.next_event = n + 1;
        n
    }

    /// The highest line number in the cluster's numbering this server
    /// has given (see [`SEQ_PER_LINE`]).
    pub(crate) fn cluster_number(&self) -> u64 {
        self.next_event / SEQ_PER_LINE
    }

    /// The public lines since the last call, for the history's writer.
    pub(crate) fn take_unwritten(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.unwritten)
    }

    /// Keeps a public line for the history of its room, `key`, and for
    /// resumes.
    fn keep(&mut self, key: &str, entry: Entry) {
        if self.recent.len() >= 2 * self.limits.total && !self.recent.contains_key(key) {
            // Bounded: the history of rooms long gone is in the files.
            let rooms = &self.rooms;
            self.recent.retain(|k, _| rooms.contains_key(k));
        }
        let recent = match self.recent.get_mut(key) {
            Some(recent) => recent,
            None => self.recent.entry(key.to_string()).or_default(),
        };
        if recent.len() == MAX_HISTORY {
            recent.pop_front();
        }
        recent.push_back(entry.clone());
        self.remember(entry.clone());
        self.unwritten.push(entry);
    }

    /// A public line of room `key`: kept for the history and rendered once
    /// for its members, in both forms.
    fn public(
        &mut self,
        now: SystemTime,
        key: &str,
        kind: Kind,
        nick: &str,
        text: &str,
    ) -> Delivery {
        let (name, away, json) = self
            .rooms
            .get(key)
            .map_or((key, 0, 0), |r| (r.name.as_str(), r.away, r.json));
        // A count off by one would show a line without its room's name;
        // the tests run debug builds, which check it on every line.
        debug_assert_eq!(
            away,
            self.room_members(key).iter().filter(|m| !m.here).count(),
            "members away miscounted"
        );
        let mut entry = Entry::new(now, name, kind, nick, text);
        entry.bot = !self.bot_names.is_empty() && self.bot_names.contains(&nick_key(nick));
        entry.seq = self.take_number();
        let rendered = entry.render(&clock::hhmm(now));
        let elsewhere =
            (away > 0).then(|| ToChild::Line(render::elsewhere(&rendered, &entry.room)));
        let json = (json > 0).then(|| ToChild::Line(entry.json()));
        let about = log::log_enabled!(log::Level::Debug).then(|| (entry.kind, entry.nick.clone()));
        self.keep(key, entry);
        Delivery {
            to: Target::Room(key.to_string()),
            msg: ToChild::Line(rendered),
            elsewhere,
            json,
            about,
        }
    }

    /// The key of `room` if `conn`'s user is in it; else the refusal
    /// that says they are not.
    fn own_room(&self, conn: ConnId, room: &str) -> Result<RoomKey, Vec<Delivery>> {
        let key = room_key(room);
        let member =
            (self.users.get(&conn)).is_some_and(|u| u.rooms.iter().any(|(k, _)| *k == key));
        if member {
            Ok(key)
        } else {
            Err(refuse(conn, Code::NotInRoom, render::not_in_room(room)))
        }
    }

    /// A user's line in a room, or an event of its members: told to the
    /// room at once, or, in a cluster, handed out to come back in the
    /// cluster's order.
    fn say(
        &mut self,
        now: SystemTime,
        key: &str,
        kind: Kind,
        nick: &str,
        text: String,
    ) -> Vec<Delivery> {
        if !self.cluster {
            return vec![self.public(now, key, kind, nick, &text)];
        }
        self.hand_out(key, kind, nick, text, Vec::new());
        Vec::new()
    }

    /// An event about a user that concerns the whole chat (see
    /// [`Chat::chat_wide`]); in a cluster, handed out as one line of the
    /// first room's stream that names the others.
    fn say_chat_wide(
        &mut self,
        now: SystemTime,
        rooms: &[RoomKey],
        kind: Kind,
        nick: &str,
        text: &str,
    ) -> Vec<Delivery> {
        match rooms.split_first() {
            Some((first, rest)) if self.cluster => {
                let names = rest.iter().map(|k| self.room_name(k)).collect();
                self.hand_out(first, kind, nick, text.to_string(), names);
                Vec::new()
            }
            _ => self.chat_wide(now, rooms, kind, nick, text),
        }
    }

    fn room_name(&self, key: &str) -> String {
        self.rooms
            .get(key)
            .map_or(key, |r| r.name.as_str())
            .to_string()
    }

    fn hand_out(&mut self, key: &str, kind: Kind, nick: &str, text: String, also: Vec<String>) {
        self.outgoing.push(Outgoing {
            key: key.to_string(),
            room: self.room_name(key),
            kind,
            nick: nick.to_string(),
            text,
            bot: self.bot_names.contains(&nick_key(nick)),
            also,
            server: self.server.clone(),
            stamp: self.roster_version,
            number: 0,
        });
    }

    /// Whether users' lines go through the cluster (its link is up).
    pub(crate) fn set_cluster(&mut self, on: bool) {
        self.cluster = on;
    }

    pub(crate) fn cluster(&self) -> bool {
        self.cluster
    }

    /// Nicknames are leased across a cluster (`--cluster`), whether or
    /// not its link is up.
    pub(crate) fn set_leases(&mut self, on: bool) {
        self.leases = on;
    }

    /// The nicknames (folded) freed since the last call.
    pub(crate) fn take_freed_nicks(&mut self) -> Vec<String> {
        std::mem::take(&mut self.freed_nicks)
    }

    /// Whether a user of this server has the nickname of key `key`.
    pub(crate) fn holds_nick(&self, key: &str) -> bool {
        self.by_nick.contains_key(key)
    }

    /// Every user's nickname, folded.
    pub(crate) fn nick_keys(&self) -> Vec<String> {
        self.by_nick.keys().cloned().collect()
    }

    /// The lines to hand to the cluster since the last call.
    pub(crate) fn take_outgoing(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.outgoing)
    }

    /// A line of a room as the cluster ordered it, from this server's
    /// user or another's, or one that could not go through the cluster:
    /// told to this server's members of the room and kept in its history.
    /// Another server's event changes what this one knows of its users
    /// and of the room's topic.
    pub(crate) fn cluster_line(&mut self, now: SystemTime, line: &Outgoing) -> Vec<Delivery> {
        let mut out = Vec::new();
        if line.server != self.server {
            if line.kind == Kind::Topic {
                let room =
                    (self.rooms.entry(line.key.clone())).or_insert_with(|| Room::new(&line.room));
                room.topic = Some(line.text.clone());
                self.saved_changes += 1;
            }
            // A leave is told while the rooms still know the visitor.
            if !cluster::chat_wide(line.kind) {
                out.extend(self.apply_event(now, line));
            }
        }
        let mut rooms = vec![line.key.clone()];
        rooms.extend(line.also.iter().map(|r| room_key(r)));
        let wide = cluster::chat_wide(line.kind);
        // The line's own number is for the line alone.
        self.numbered = (line.number > 0).then(|| line.number * SEQ_PER_LINE);
        let told = match wide {
            true => self.chat_wide(now, &rooms, line.kind, &line.nick, &line.text),
            false => vec![self.public(now, &line.key, line.kind, &line.nick, &line.text)],
        };
        self.numbered = None;
        out.splice(0..0, told);
        if wide && line.server != self.server {
            out.extend(self.apply_event(now, line));
        }
        self.note_order(line, &rooms);
        out.extend(self.owner_changes(now, &rooms));
        out
    }

    /// A word from the server to everyone: people get the text, programs
    /// a `notice`.
    pub(crate) fn notice_all(&self, text: &str) -> Vec<Delivery> {
        let (mut people, mut programs) = (Vec::new(), Vec::new());
        for (conn, user) in &self.users {
            match user.format {
                Format::Text => people.push(*conn),
                Format::Json => programs.push(*conn),
            }
        }
        vec![
            Delivery {
                to: Target::Many(people),
                msg: ToChild::Line(render::server_notice(text)),
                elsewhere: None,
                json: None,
                about: None,
            },
            Delivery {
                to: Target::Many(programs),
                msg: ToChild::Line(json::notice(text)),
                elsewhere: None,
                json: None,
                about: None,
            },
        ]
    }

    /// A line about a user that concerns the whole chat (a rename, leaving
    /// the chat, a kick from it): kept in the history of each of `rooms`,
    /// and told once to every person in any of them, without a room's
    /// name; a program gets each room's event, as each has its number.
    fn chat_wide(
        &mut self,
        now: SystemTime,
        rooms: &[RoomKey],
        kind: Kind,
        nick: &str,
        text: &str,
    ) -> Vec<Delivery> {
        let mut rendered = None;
        let mut receivers = Vec::new();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for key in rooms {
            let Some(room) = self.rooms.get(key) else {
                continue;
            };
            receivers.extend(
                room.members
                    .iter()
                    .filter(|m| !m.json)
                    .map(|m| m.conn)
                    .filter(|c| seen.insert(*c)),
            );
            let programs = room.json > 0;
            let name = room.name.clone();
            let entry = self.new_entry(now, &name, kind, nick, text);
            rendered.get_or_insert_with(|| entry.render(&clock::hhmm(now)));
            if programs {
                out.push(line(Target::JsonMembers(key.clone()), entry.json()));
            }
            self.keep(key, entry);
        }
        if let Some(rendered) = rendered {
            out.insert(0, line(Target::Many(receivers), rendered));
        }
        out
    }

    /// The last `count` public lines of room `key` for `conn`, between
    /// markers, in the form its client reads. Lines of an earlier day
    /// carry their date.
    fn replay(&self, conn: ConnId, key: &str, count: usize, now: SystemTime) -> Vec<Delivery> {
        let empty = VecDeque::new();
        let recent = self.recent.get(key).unwrap_or(&empty);
        let shown = count.min(recent.len());
        let room = self.rooms.get(key).map_or(key, |r| r.name.as_str());
        let mut out = Vec::with_capacity(shown + 2);
        out.push(answer(
            conn,
            Reply::History {
                room: room.to_string(),
                count: shown,
            },
        ));
        if shown == 0 {
            return out;
        }
        let json = self.format_of(conn) == Format::Json;
        for entry in recent.range(recent.len() - shown..) {
            let text = if json {
                entry.json()
            } else {
                let at = entry.time();
                let stamp = if clock::same_day(at, now) {
                    clock::hhmm(at)
                } else {
                    clock::date_hhmm(at)
                };
                entry.render(&stamp)
            };
            out.push(line(Target::One(conn), text));
        }
        out.push(answer(conn, Reply::HistoryEnd));
        out
    }

    fn format_of(&self, conn: ConnId) -> Format {
        self.users.get(&conn).map_or(Format::Text, |u| u.format)
    }

    /// For a resume: the events of `conn`'s rooms after `after`, oldest
    /// first, at most [`Chat::resume_max`] of them, after a gap if some
    /// may be missing.
    fn resume(&self, conn: ConnId, after: u64) -> Vec<Delivery> {
        let Some(user) = self.users.get(&conn) else {
            return Vec::new();
        };
        let mine = |e: &&Entry| user.rooms.iter().any(|(k, _)| *k == room_key(&e.room));
        let start = self.events.partition_point(|e| e.seq <= after);
        let missed: Vec<&Entry> = self.events.range(start..).filter(mine).collect();
        let sent = &missed[missed.len().saturating_sub(self.resume_max)..];
        // What the memory no longer holds may have been in these rooms.
        let forgotten = self.events.front().is_some_and(|e| e.seq > after + 1) && after > 0;
        let mut out = Vec::with_capacity(sent.len() + 1);
        if forgotten || sent.len() < missed.len() {
            let next = sent.first().map_or(self.next_event, |e| e.seq);
            out.push(to(conn, ToChild::Gap { after, next }));
        }
        out.extend(sent.iter().map(|e| line(Target::One(conn), e.json())));
        out
    }

    fn has_history(&self, key: &str) -> bool {
        self.recent.get(key).is_some_and(|r| !r.is_empty())
    }

    /// The hub is dropping `conn` because its child stopped reading.
    pub(crate) fn too_slow(&mut self, conn: ConnId) {
        if let Some(user) = self.users.get(&conn) {
            // Bounded, in case of a very long run of very slow children.
            if self.too_slow.len() >= 10_000 {
                self.too_slow.clear();
            }
            self.too_slow.insert(user.id);
        }
    }

    /// Goes up whenever what is saved (the schedule, the topics) changes.
    pub(crate) fn saved_changes(&self) -> u64 {
        self.saved_changes
    }

    /// What a new hub needs to carry on: the scheduled messages and the
    /// rooms' topics.
    pub(crate) fn saved(&self) -> State {
        let schedule = self
            .schedule
            .iter()
            .map(|s| SavedMessage {
                due_ms: clock::unix_ms(s.due),
                seq: s.seq,
                author: s.author,
                author_nick: s.author_nick.clone(),
                text: s.text.clone(),
                room: s.room.clone(),
            })
            .collect();
        let mut topics: Vec<(String, String)> = self
            .rooms
            .values()
            .filter_map(|r| Some((r.name.clone(), r.topic.clone()?)))
            .chain(self.saved_topics.values().cloned())
            .collect();
        topics.sort();
        State {
            next_seq: self.next_seq,
            schedule,
            topics,
        }
    }

    /// Takes over what an earlier hub saved.
    pub(crate) fn restore(&mut self, state: State) {
        self.next_seq = state.next_seq;
        self.schedule = state
            .schedule
            .into_iter()
            .map(|s| Scheduled {
                due: clock::from_unix_ms(s.due_ms),
                seq: s.seq,
                author: s.author,
                author_nick: s.author_nick,
                text: s.text,
                room: s.room,
            })
            .collect();
        self.schedule.sort_by_key(|s| (s.due, s.seq));
        // Authors keep their ids; new users must come after them.
        if let Some(max) = self.schedule.iter().map(|s| s.author).max() {
            self.next_id = self.next_id.max(max + 1);
        }
        for (name, topic) in state.topics {
            let key = room_key(&name);
            match self.rooms.get_mut(&key) {
                Some(room) => room.topic = Some(topic),
                None => {
                    self.saved_topics.insert(key, (name, topic));
                }
            }
        }
    }

    /// Registered users, in the lobby's join order (the lobby's members
    /// first, then the users who left it).
    pub(crate) fn members(&self) -> Vec<ConnId> {
        let lobby = &self.rooms[LOBBY];
        let mut all: Vec<ConnId> = lobby.members.iter().map(|m| m.conn).collect();
        let mut others: Vec<(u64, ConnId)> = self
            .users
            .iter()
            .filter(|(c, _)| !lobby.has(**c))
            .map(|(c, u)| (u.id, *c))
            .collect();
        others.sort_unstable();
        all.extend(others.into_iter().map(|(_, c)| c));
        all
    }

    /// How many users are registered.
    pub(crate) fn user_count(&self) -> usize {
        self.users.len()
    }

    /// How many rooms there are, the lobby included.
    pub(crate) fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The members of room `key`, in its join order.
    pub(crate) fn room_members(&self, key: &str) -> &[Member] {
        self.rooms.get(key).map_or(&[], |r| &r.members)
    }

    /// The rooms, by name, for `mpchat status`.
    pub(crate) fn rooms(&self) -> Vec<RoomInfo<'_>> {
        let mut rooms: Vec<RoomInfo> = self
            .rooms
            .values()
            .map(|r| RoomInfo {
                name: &r.name,
                users: r.members.len() + r.visitors.len(),
                owner: self.owner_name(r),
                topic: r.topic.as_deref(),
            })
            .collect();
        rooms.sort_by_key(|r| room_key(r.name));
        rooms
    }

    /// A registered user's nickname, address and protocol (`line`,
    /// `json` or `bot`).
    pub(crate) fn user(&self, conn: ConnId) -> Option<(&str, &str, &'static str)> {
        self.users.get(&conn).map(|u| {
            let protocol = match (u.format, &u.device, u.web) {
                (_, Some(_), _) => "bot",
                (_, None, true) => "web",
                (Format::Json, None, false) => "json",
                (Format::Text, None, false) => "line",
            };
            (u.nick.as_str(), u.addr.as_str(), protocol)
        })
    }

    /// The lobby's owner: always its longest-present member (alone).
    #[cfg(test)]
    fn owner(&self) -> Option<ConnId> {
        self.rooms[LOBBY].owner()
    }

    /// Carries out one message from `conn`'s child. What it says to
    /// others as a reply (the one removed from a room is told which room
    /// is now current) goes to them as a notice: it answers no request of
    /// theirs.
    pub(crate) fn handle(&mut self, conn: ConnId, msg: ToHub, now: SystemTime) -> Vec<Delivery> {
        let mut out = self.carry_out(conn, msg, now);
        for delivery in &mut out {
            if delivery.to != Target::One(conn)
                && matches!(delivery.msg, ToChild::Reply(_))
                && let ToChild::Reply(reply) = std::mem::replace(&mut delivery.msg, ToChild::Done)
            {
                delivery.msg = ToChild::Notice(reply);
            }
        }
        out
    }

    fn carry_out(&mut self, conn: ConnId, msg: ToHub, now: SystemTime) -> Vec<Delivery> {
        match msg {
            ToHub::Login {
                nick,
                addr,
                format,
                after,
                token,
                takeover,
                bot,
                rooms,
                web,
            } => {
                let arrival = Arrival {
                    nick,
                    addr,
                    format,
                    after,
                    token,
                    takeover,
                    device: bot.map(|proof| proof.device),
                    rooms,
                    web,
                };
                self.login(conn, arrival, now)
            }
            ToHub::Rejoin {
                nick,
                addr,
                id,
                rooms,
                format,
                token,
                device,
                web,
            } => {
                let arrival = Arrival {
                    nick,
                    addr,
                    format,
                    after: None,
                    token,
                    takeover: None,
                    device,
                    rooms: Vec::new(),
                    web,
                };
                self.rejoin(conn, arrival, id, rooms)
            }
            ToHub::Request(request) => self.request(conn, request, now),
        }
    }

    /// Carries out a registered user's command.
    pub(crate) fn request(
        &mut self,
        conn: ConnId,
        request: Request,
        now: SystemTime,
    ) -> Vec<Delivery> {
        let Some(me) = self.users.get(&conn) else {
            // A child sends requests only once its user is registered.
            log::warn!("request from unregistered connection {conn} ignored");
            return Vec::new();
        };
        let me = me.nick.clone();
        let here = self.users[&conn].current.clone();
        match request {
            Request::Say(text) => self.say(now, &here, Kind::Chat, &me, text),
            Request::Me(text) => self.say(now, &here, Kind::Me, &me, text),
            Request::SayIn {
                room,
                text,
                me: action,
            } => {
                let key = match self.own_room(conn, &room) {
                    Ok(key) => key,
                    Err(refusal) => return refusal,
                };
                let kind = if action { Kind::Me } else { Kind::Chat };
                self.say(now, &key, kind, &me, text)
            }
            Request::Whisper { to: target, text } => self.whisper(conn, &me, &target, &text, now),
            Request::Users(room) => self.users_of(conn, room.as_deref().unwrap_or(&here)),
            Request::Rename(new) => self.rename(conn, &me, new, now),
            Request::Kick(target) if here == LOBBY => self.kick(conn, &me, &target, now),
            Request::Kick(target) => self.remove_from_room(conn, &me, &target, &here, now),
            Request::Schedule { when, text } => self.schedule(conn, me, when, text, now),
            Request::ScheduleList => self.schedule_list(conn, now),
            Request::ScheduleCancel(n) => self.schedule_cancel(conn, n),
            Request::History { count, room: None } => self.replay(conn, &here, count, now),
            Request::History {
                count,
                room: Some(room),
            } => match self.own_room(conn, &room) {
                Ok(key) => self.replay(conn, &key, count, now),
                Err(refusal) => refusal,
            },
            Request::Join(name) => self.join(conn, &me, &name, now),
            Request::Part(name) => {
                let name = name.unwrap_or_else(|| self.rooms[&here].name.clone());
                self.part(conn, &me, &name, now)
            }
            Request::Rooms => self.list_rooms(conn),
            Request::Topic(None) => self.show_topic(conn, &here),
            Request::Topic(Some(text)) => self.set_topic(conn, &me, &here, text, now),
        }
    }

    fn whisper(
        &mut self,
        conn: ConnId,
        me: &str,
        target: &str,
        text: &str,
        now: SystemTime,
    ) -> Vec<Delivery> {
        let Some((other, other_nick)) = self.find(target) else {
            if self.visitor(target).is_some() {
                return self.whisper_visitor(conn, me, target, text, now);
            }
            return refuse(conn, Code::NoSuchUser, render::user_not_found(target));
        };
        let whisper = |sent| {
            ToChild::Whisper(Box::new(Whisper {
                from: me.to_string(),
                to: other_nick.to_string(),
                text: text.to_string(),
                time_ms: clock::unix_ms(now),
                sent,
            }))
        };
        vec![to(other, whisper(false)), to(conn, whisper(true))]
    }

    fn users_of(&self, conn: ConnId, name: &str) -> Vec<Delivery> {
        let key = room_key(name);
        let Some(room) = self.rooms.get(&key) else {
            return refuse(conn, Code::NoSuchRoom, render::no_room(name));
        };
        let users = room.members.iter().map(|m| &self.users[&m.conn]);
        let users = users.map(|u| (u.nick.clone(), u.device.is_some()));
        // This server's users first, then the other servers'.
        let visitors = self.visitors_of(&key).map(|v| (v.nick.clone(), v.bot));
        let all: Vec<(String, bool)> = users.chain(visitors).collect();
        let bots = all
            .iter()
            .filter(|(_, bot)| *bot)
            .map(|(n, _)| n.clone())
            .collect();
        let nicks = all.into_iter().map(|(n, _)| n).collect();
        let room = room.name.clone();
        vec![answer(conn, Reply::Users { room, nicks, bots })]
    }

    /// A login: a person's, a program's or a bot's (whose proof the hub
    /// has checked), or the takeover of a session that still exists.
    fn login(&mut self, conn: ConnId, arrival: Arrival, now: SystemTime) -> Vec<Delivery> {
        if self.users.contains_key(&conn) {
            log::warn!("second login from connection {conn} ignored");
            return Vec::new();
        }
        let refused = |code, reason| vec![to(conn, ToChild::NickRefused { code, reason })];
        if let Some(token) = &arrival.takeover {
            return match self.by_token(token) {
                Some(old) if arrival.device.is_none() => self.take_over(old, conn, arrival),
                _ => refused(Code::UnknownSession, render::UNKNOWN_SESSION.to_string()),
            };
        }
        let nick = arrival.nick.clone();
        if let Err(reason) = check_nick(&nick) {
            return refused(Code::BadNick, reason);
        }
        let key = nick_key(&nick);
        if let Some(&holder) = self.by_nick.get(&key) {
            // A bot's device that comes back while its old connection
            // lingers takes its session over; another device is refused,
            // and the session that was there stays as it was.
            let same_bot = arrival.device.is_some()
                && self.users.get(&holder).and_then(|u| u.device.as_ref())
                    == arrival.device.as_ref();
            return match (same_bot, &arrival.device) {
                (true, _) => self.take_over(holder, conn, arrival),
                (false, Some(_)) => {
                    refused(Code::AlreadyConnected, render::already_connected(&nick))
                }
                (false, None) => refused(Code::NickTaken, render::nick_in_use(&nick)),
            };
        }
        if arrival.device.is_none() && self.bot_names.contains(&key) {
            return refused(Code::NickTaken, render::reserved_for_bot(&nick));
        }
        self.new_user(conn, arrival, now)
    }

    fn new_user(&mut self, conn: ConnId, arrival: Arrival, now: SystemTime) -> Vec<Delivery> {
        let Arrival {
            nick,
            addr,
            format,
            after,
            token,
            device,
            rooms,
            web,
            ..
        } = arrival;
        match &device {
            Some(device) => log::info!("{nick} (bot, device {device}) registered from {addr}"),
            None => log::info!("{nick} registered from {addr}"),
        }
        let id = self.next_id;
        self.next_id += 1;
        let lobby = LOBBY.to_string();
        self.by_nick.insert(nick_key(&nick), conn);
        self.users.insert(
            conn,
            User {
                nick: nick.clone(),
                addr,
                id,
                rooms: vec![(lobby.clone(), id)],
                current: lobby.clone(),
                format,
                token,
                device,
                web,
            },
        );
        if let Some(room) = self.rooms.get_mut(&lobby) {
            room.add(conn, id, true, format);
        }
        // In the rooms asked for before anything is sent, so that a
        // resume covers them; their joins are told after it.
        let (entered, refused) = self.enter_rooms(conn, &rooms);
        // A person gets the history first, then the welcome, then everyone
        // (this user included) hears of the arrival. A program gets the
        // welcome first, then what it missed if it resumes.
        let seq = self.next_event - 1;
        let mut out = match format {
            Format::Text if self.replay_lines > 0 && self.has_history(&lobby) => {
                self.replay(conn, &lobby, self.replay_lines, now)
            }
            Format::Text | Format::Json => Vec::new(),
        };
        let memberships = match entered.is_empty() {
            true => None,
            false => self.memberships(conn).and_then(|d| match d.msg {
                ToChild::Memberships(m) => Some(m),
                _ => None,
            }),
        };
        let registered = ToChild::Registered(Box::new(Registration {
            nick: nick.clone(),
            id,
            seq,
            rooms: memberships,
            took_over: false,
        }));
        out.push(to(conn, registered));
        if let Some(after) = after {
            out.extend(self.resume(conn, after));
        }
        out.extend(refused);
        out.extend(self.say(now, &lobby, Kind::Join, &nick, String::new()));
        for key in entered {
            out.extend(self.say(now, &key, Kind::Join, &nick, String::new()));
        }
        out
    }

    /// Makes a new user a member of `names` at once, without telling
    /// anyone yet (the caller does, once the user is welcomed); the last
    /// becomes the current room. Returns the rooms entered, and a refusal
    /// for each name that could not be.
    fn enter_rooms(&mut self, conn: ConnId, names: &[String]) -> (Vec<RoomKey>, Vec<Delivery>) {
        let mut entered = Vec::new();
        let mut refused = Vec::new();
        for name in names {
            if let Err(reason) = check_room(name) {
                refused.extend(refuse(conn, Code::BadRoom, reason));
                continue;
            }
            let key = room_key(name);
            let Some(user) = self.users.get(&conn) else {
                break;
            };
            if user.rooms.iter().any(|(k, _)| *k == key) {
                continue;
            }
            if user.rooms.len() >= self.limits.per_user {
                let message = render::too_many_rooms_for_you(self.limits.per_user);
                refused.extend(refuse(conn, Code::TooManyRooms, message));
                continue;
            }
            if !self.rooms.contains_key(&key) && self.rooms.len() >= self.limits.total {
                refused.extend(refuse(conn, Code::TooManyRooms, render::TOO_MANY_ROOMS));
                continue;
            }
            let format = user.format;
            let seq = self.next_id;
            self.next_id += 1;
            let saved_topic = self.saved_topics.remove(&key).map(|(_, topic)| topic);
            let room = self.rooms.entry(key.clone()).or_insert_with(|| Room {
                topic: saved_topic,
                ..Room::new(name)
            });
            room.add(conn, seq, false, format);
            if let Some(user) = self.users.get_mut(&conn) {
                user.rooms.push((key.clone(), seq));
            }
            entered.push(key);
        }
        if let Some(last) = entered.last().cloned() {
            self.make_current(conn, &last);
        }
        (entered, refused)
    }

    /// The session whose token is `token`, compared in constant time.
    fn by_token(&self, token: &str) -> Option<ConnId> {
        use subtle::ConstantTimeEq;
        if token.is_empty() {
            return None;
        }
        self.users.iter().find_map(|(conn, u)| {
            let mine = u.token.as_deref()?;
            bool::from(mine.as_bytes().ct_eq(token.as_bytes())).then_some(*conn)
        })
    }

    /// `conn` takes over `old`'s session: its nickname, rooms, places in
    /// them (so ownerships), current room and scheduled messages. The
    /// rooms hear nothing; the old connection is told and closes, and its
    /// end is then nobody's.
    fn take_over(&mut self, old: ConnId, conn: ConnId, arrival: Arrival) -> Vec<Delivery> {
        let Some(mut user) = self.users.remove(&old) else {
            return Vec::new();
        };
        log::info!(
            "{} taken over from {} by {}",
            user.nick,
            user.addr,
            arrival.addr
        );
        user.addr = arrival.addr;
        user.format = arrival.format;
        user.token = arrival.token;
        user.web = arrival.web;
        let json = arrival.format == Format::Json;
        for (key, _) in &user.rooms {
            if let Some(room) = self.rooms.get_mut(key)
                && let Some(member) = room.members.iter_mut().find(|m| m.conn == old)
            {
                room.json = room.json + usize::from(json) - usize::from(member.json);
                member.conn = conn;
                member.json = json;
            }
        }
        self.by_nick.insert(nick_key(&user.nick), conn);
        let (nick, id) = (user.nick.clone(), user.id);
        self.users.insert(conn, user);
        let rooms = self.memberships(conn).and_then(|d| match d.msg {
            ToChild::Memberships(m) => Some(m),
            _ => None,
        });
        let seq = self.next_event - 1;
        let mut out = vec![
            to(old, ToChild::TakenOver),
            to(
                conn,
                ToChild::Registered(Box::new(Registration {
                    nick,
                    id,
                    seq,
                    rooms,
                    took_over: true,
                })),
            ),
        ];
        if let Some(after) = arrival.after {
            out.extend(self.resume(conn, after));
        }
        out
    }

    /// A user of an earlier hub comes back: same nickname, same rooms,
    /// same place in each room's join order, same current room, and nobody
    /// is told, since for them nothing changed. Each room's owner is its
    /// longest-present member, as always. A nickname taken in the meantime
    /// (by a newcomer while the hub restarted) is refused like any login.
    fn rejoin(
        &mut self,
        conn: ConnId,
        arrival: Arrival,
        id: u64,
        rooms: Option<Memberships>,
    ) -> Vec<Delivery> {
        let Arrival {
            nick,
            addr,
            format,
            token,
            device,
            web,
            ..
        } = arrival;
        if self.users.contains_key(&conn) {
            log::warn!("second login from connection {conn} ignored");
            return Vec::new();
        }
        if self.too_slow.remove(&id) {
            return vec![to(conn, ToChild::TooSlow)];
        }
        let key = nick_key(&nick);
        if check_nick(&nick).is_err() || self.by_nick.contains_key(&key) {
            let reason = render::nick_in_use(&nick);
            let code = Code::NickLost;
            return vec![to(conn, ToChild::NickRefused { code, reason })];
        }
        log::info!("{nick} rejoined from {addr}");
        let rooms = rooms.unwrap_or_else(|| Memberships {
            rooms: vec![(LOBBY.to_string(), id)],
            current: LOBBY.to_string(),
        });
        let current = room_key(&rooms.current);
        let mut joined = Vec::new();
        for (name, seq) in rooms.rooms {
            let room_key = room_key(&name);
            if check_room(&name).is_err() || joined.iter().any(|(k, _)| *k == room_key) {
                continue;
            }
            self.next_id = self.next_id.max(seq + 1);
            let saved_topic = self.saved_topics.remove(&room_key).map(|(_, topic)| topic);
            let room = self.rooms.entry(room_key.clone()).or_insert_with(|| Room {
                topic: saved_topic,
                ..Room::new(&name)
            });
            room.add(conn, seq, room_key == current, format);
            joined.push((room_key, seq));
        }
        let current = if joined.iter().any(|(k, _)| *k == current) {
            current
        } else {
            // Nothing valid came back: the lobby, as on a login.
            let lobby = LOBBY.to_string();
            if joined.is_empty() {
                joined.push((lobby.clone(), id));
                if let Some(room) = self.rooms.get_mut(&lobby) {
                    room.add(conn, id, true, format);
                }
            }
            let (last, _) = joined.last().cloned().unwrap_or((lobby, id));
            if let Some(room) = self.rooms.get_mut(&last) {
                room.set_here(conn, true);
            }
            last
        };
        self.next_id = self.next_id.max(id + 1);
        self.by_nick.insert(key, conn);
        self.users.insert(
            conn,
            User {
                nick,
                addr,
                id,
                rooms: joined,
                current,
                format,
                token,
                device,
                web,
            },
        );
        vec![to(conn, ToChild::Rejoined)]
    }

    /// What the user's child keeps to give a new hub.
    fn memberships(&self, conn: ConnId) -> Option<Delivery> {
        let user = self.users.get(&conn)?;
        let name = |key: &str| self.rooms.get(key).map(|r| r.name.clone());
        let memberships = Memberships {
            rooms: user
                .rooms
                .iter()
                .filter_map(|(key, seq)| Some((name(key)?, *seq)))
                .collect(),
            current: name(&user.current)?,
        };
        Some(to(conn, ToChild::Memberships(memberships)))
    }

    /// Makes `key` the user's current room.
    fn make_current(&mut self, conn: ConnId, key: &str) {
        let Some(user) = self.users.get_mut(&conn) else {
            return;
        };
        let old = std::mem::replace(&mut user.current, key.to_string());
        if let Some(room) = self.rooms.get_mut(&old) {
            room.set_here(conn, false);
        }
        if let Some(room) = self.rooms.get_mut(key) {
            room.set_here(conn, true);
        }
    }

    fn join(&mut self, conn: ConnId, me: &str, name: &str, now: SystemTime) -> Vec<Delivery> {
        if let Err(reason) = check_room(name) {
            return refuse(conn, Code::BadRoom, reason);
        }
        let key = room_key(name);
        let user = &self.users[&conn];
        let format = user.format;
        if user.rooms.iter().any(|(k, _)| *k == key) {
            self.make_current(conn, &key);
            let room = self.rooms[&key].name.clone();
            let mut out = vec![answer(conn, Reply::Current { room })];
            out.extend(self.memberships(conn));
            return out;
        }
        if user.rooms.len() >= self.limits.per_user {
            let message = render::too_many_rooms_for_you(self.limits.per_user);
            return refuse(conn, Code::TooManyRooms, message);
        }
        if !self.rooms.contains_key(&key) && self.rooms.len() >= self.limits.total {
            return refuse(conn, Code::TooManyRooms, render::TOO_MANY_ROOMS);
        }
        let seq = self.next_id;
        self.next_id += 1;
        self.rooms.entry(key.clone()).or_insert_with(|| {
            log::info!("{me} created {name}");
            Room::new(name)
        });
        // A person is shown the room's last lines; a program asks for
        // them if it wants them.
        let mut out = Vec::new();
        if format == Format::Text && self.replay_lines > 0 && self.has_history(&key) {
            out.extend(self.replay(conn, &key, self.replay_lines, now));
        }
        let room = self.rooms.get_mut(&key).expect("made above");
        if let Some(topic) = &room.topic {
            let (room, topic) = (room.name.clone(), Some(topic.clone()));
            out.push(answer(conn, Reply::Topic { room, topic }));
        }
        let room = self.rooms.get_mut(&key).expect("made above");
        room.add(conn, seq, false, format);
        if let Some(user) = self.users.get_mut(&conn) {
            user.rooms.push((key.clone(), seq));
        }
        self.make_current(conn, &key);
        out.extend(self.say(now, &key, Kind::Join, me, String::new()));
        if format == Format::Json {
            let room = self.rooms[&key].name.clone();
            out.push(answer(conn, Reply::Current { room }));
        }
        out.extend(self.memberships(conn));
        out
    }

    fn part(&mut self, conn: ConnId, me: &str, name: &str, now: SystemTime) -> Vec<Delivery> {
        if let Err(reason) = check_room(name) {
            return refuse(conn, Code::BadRoom, reason);
        }
        let key = room_key(name);
        let user = &self.users[&conn];
        if !user.rooms.iter().any(|(k, _)| *k == key) {
            return refuse(conn, Code::NotInRoom, render::not_in_room(name));
        }
        if user.rooms.len() == 1 {
            return refuse(conn, Code::LastRoom, render::LAST_ROOM);
        }
        if self.cluster {
            return self.part_in_cluster(conn, me, &key, now);
        }
        // A room's lines reach whoever is its member when the hub delivers
        // them, after this request: the one who leaves is told apart.
        let left = self.public(now, &key, Kind::Part, me, "");
        let user = &self.users[&conn];
        let mine = match (user.format, user.current == key) {
            (Format::Json, _) => left.json.clone().unwrap_or_else(|| left.msg.clone()),
            (Format::Text, true) => left.msg.clone(),
            (Format::Text, false) => left.elsewhere.clone().unwrap_or_else(|| left.msg.clone()),
        };
        let mut out = vec![left, to(conn, mine)];
        out.extend(self.leave_room(conn, &key, now));
        out
    }

    /// In a cluster the part comes back when the one who left is no
    /// longer a member: a person is shown it now (a program learns it
    /// from its memberships).
    fn part_in_cluster(
        &mut self,
        conn: ConnId,
        me: &str,
        key: &str,
        now: SystemTime,
    ) -> Vec<Delivery> {
        self.hand_out(key, Kind::Part, me, String::new(), Vec::new());
        let user = &self.users[&conn];
        let mut out = Vec::new();
        if user.format == Format::Text {
            let entry = Entry::new(now, &self.room_name(key), Kind::Part, me, "");
            let mut text = entry.render(&clock::hhmm(now));
            if user.current != key {
                text = render::elsewhere(&text, &entry.room);
            }
            out.push(to(conn, ToChild::Line(text)));
        }
        out.extend(self.leave_room(conn, key, now));
        out
    }

    /// Takes `conn` out of room `key` (not its last): the next owner is
    /// announced, an empty room forgotten, and if it was the current room
    /// the most recently joined one left becomes current.
    fn leave_room(&mut self, conn: ConnId, key: &str, now: SystemTime) -> Vec<Delivery> {
        let mut out = self.drop_member(conn, key, now);
        let Some(user) = self.users.get_mut(&conn) else {
            return out;
        };
        user.rooms.retain(|(k, _)| k != key);
        if user.current == key
            && let Some((next, _)) = user.rooms.last().cloned()
        {
            self.make_current(conn, &next);
            let room = self
                .rooms
                .get(&next)
                .map_or(next.clone(), |r| r.name.clone());
            out.push(answer(conn, Reply::Current { room }));
        }
        out.extend(self.memberships(conn));
        out
    }

    /// Removes `conn` from room `key`'s members: announces the next owner
    /// if it was the owner, and forgets the room if it is empty now.
    fn drop_member(&mut self, conn: ConnId, key: &str, now: SystemTime) -> Vec<Delivery> {
        let Some(room) = self.rooms.get_mut(key) else {
            return Vec::new();
        };
        let was_owner = room.owner() == Some(conn);
        room.remove(conn);
        self.after_leaving(vec![(key.to_string(), was_owner)], now)
    }

    /// After someone left `rooms` (each with whether they owned it): each
    /// empty room but the lobby is forgotten, and where the owner left,
    /// the next one is announced.
    fn after_leaving(&mut self, rooms: Vec<(RoomKey, bool)>, now: SystemTime) -> Vec<Delivery> {
        let mut out = Vec::new();
        for (key, was_owner) in rooms {
            let Some(room) = self.rooms.get(&key) else {
                continue;
            };
            if room.is_empty() && key != LOBBY {
                log::info!("{} is empty; forgotten", room.name);
                if room.topic.is_some() {
                    self.saved_changes += 1;
                }
                self.rooms.remove(&key);
                continue;
            }
            // In a cluster the new owner is told when the order changes:
            // after the line that changed it, when it comes back (or now,
            // while the link is down and nothing comes back).
            if !self.server.is_empty() {
                if !self.cluster {
                    out.extend(self.owner_changes(now, std::slice::from_ref(&key)));
                }
                continue;
            }
            if let Some(heir) = room.owner().filter(|_| was_owner) {
                let nick = self.users[&heir].nick.clone();
                log::info!("{nick} now owns {}", room.name);
                out.push(self.public(now, &key, Kind::Owner, &nick, ""));
            }
        }
        out
    }

    fn list_rooms(&self, conn: ConnId) -> Vec<Delivery> {
        let user = &self.users[&conn];
        let items = self
            .rooms()
            .into_iter()
            .map(|room| {
                let key = room_key(room.name);
                RoomItem {
                    room: room.name.to_string(),
                    users: room.users,
                    topic: room.topic.map(str::to_string),
                    member: user.rooms.iter().any(|(k, _)| *k == key),
                    current: user.current == key,
                }
            })
            .collect();
        vec![answer(conn, Reply::Rooms(items))]
    }

    fn show_topic(&self, conn: ConnId, key: &str) -> Vec<Delivery> {
        let room = &self.rooms[key];
        let (room, topic) = (room.name.clone(), room.topic.clone());
        vec![answer(conn, Reply::Topic { room, topic })]
    }

    fn set_topic(
        &mut self,
        conn: ConnId,
        me: &str,
        key: &str,
        text: String,
        now: SystemTime,
    ) -> Vec<Delivery> {
        if !self.rooms.contains_key(key) {
            return Vec::new();
        }
        if !self.owns(conn, key) {
            let message = render::only_owner_sets_topic(&self.rooms[key].name);
            return refuse(conn, Code::NotOwner, message);
        }
        let Some(room) = self.rooms.get_mut(key) else {
            return Vec::new();
        };
        room.topic = Some(text.clone());
        self.saved_changes += 1;
        self.say(now, key, Kind::Topic, me, text)
    }

    /// Removes `conn`'s user, if registered, from the chat and tells the
    /// others.
    pub(crate) fn leave(&mut self, conn: ConnId, now: SystemTime) -> Vec<Delivery> {
        let Some((user, rooms)) = self.remove(conn) else {
            return Vec::new();
        };
        log::info!("{} ({}) left", user.nick, user.addr);
        let keys: Vec<RoomKey> = rooms.iter().map(|(k, _)| k.clone()).collect();
        let mut out = self.say_chat_wide(now, &keys, Kind::Leave, &user.nick, "");
        out.extend(self.after_leaving(rooms, now));
        out
    }

    /// Takes a user out of the chat: out of each room's members, and their
    /// nickname is free. Returns the user, and each room they were in
    /// with whether they owned it, for [`Chat::after_leaving`].
    fn remove(&mut self, conn: ConnId) -> Option<(User, Vec<(RoomKey, bool)>)> {
        let user = self.users.remove(&conn)?;
        let key = nick_key(&user.nick);
        self.by_nick.remove(&key);
        if self.leases {
            self.freed_nicks.push(key);
        }
        let mut rooms = Vec::new();
        for (key, _) in &user.rooms {
            if let Some(room) = self.rooms.get_mut(key) {
                rooms.push((key.clone(), room.owner() == Some(conn)));
                room.remove(conn);
            }
        }
        Some((user, rooms))
    }

    fn find(&self, nick: &str) -> Option<(ConnId, &str)> {
        let conn = *self.by_nick.get(&nick_key(nick))?;
        Some((conn, self.users[&conn].nick.as_str()))
    }

    fn rename(&mut self, conn: ConnId, old: &str, new: String, now: SystemTime) -> Vec<Delivery> {
        if let Err(reason) = check_nick(&new) {
            return refuse(conn, Code::BadNick, reason);
        }
        if new == old {
            return refuse(conn, Code::NickUnchanged, render::nick_unchanged(old));
        }
        let key = nick_key(&new);
        // Changing only the case of one's own name is allowed.
        if self.by_nick.get(&key).is_some_and(|&holder| holder != conn) {
            return refuse(conn, Code::NickTaken, render::nick_in_use(&new));
        }
        // In a cluster the hub has taken the new name's lease; the old
        // one goes back.
        if self.leases && key != nick_key(old) {
            self.freed_nicks.push(nick_key(old));
        }
        self.by_nick.remove(&nick_key(old));
        self.by_nick.insert(key, conn);
        let Some(user) = self.users.get_mut(&conn) else {
            return Vec::new();
        };
        user.nick = new.clone();
        let rooms: Vec<RoomKey> = user.rooms.iter().map(|(k, _)| k.clone()).collect();
        log::info!("{old} is now known as {new}");
        let mut out = self.say_chat_wide(now, &rooms, Kind::Rename, old, &new);
        out.push(to(conn, ToChild::Renamed { nick: new }));
        out
    }

    /// `/kick` in the lobby: its owner puts someone out of the chat.
    fn kick(&mut self, conn: ConnId, me: &str, target: &str, now: SystemTime) -> Vec<Delivery> {
        if !self.owns(conn, LOBBY) {
            return refuse(conn, Code::NotOwner, render::ONLY_OWNER_KICKS);
        }
        let victim = match (self.find(target), self.visitor(target)) {
            (Some((victim, _)), _) => victim,
            (None, Some(v)) => {
                let relay = Relay::Kick {
                    target: v.nick.clone(),
                    by: me.to_string(),
                };
                self.relay(v.server.clone(), relay);
                return Vec::new();
            }
            (None, None) => {
                return refuse(conn, Code::NoSuchUser, render::user_not_found(target));
            }
        };
        if victim == conn {
            return refuse(conn, Code::CannotKickSelf, render::CANNOT_KICK_SELF);
        }
        self.put_out(victim, me, now)
    }

    /// Puts `victim` out of the chat, kicked by `me`.
    fn put_out(&mut self, victim: ConnId, me: &str, now: SystemTime) -> Vec<Delivery> {
        let Some((user, rooms)) = self.remove(victim) else {
            return Vec::new();
        };
        log::info!("{} ({}) was kicked by {me}", user.nick, user.addr);
        let keys: Vec<RoomKey> = rooms.iter().map(|(k, _)| k.clone()).collect();
        let mut out = vec![to(victim, ToChild::Kicked)];
        out.extend(self.say_chat_wide(now, &keys, Kind::Kick, &user.nick, me));
        out.extend(self.after_leaving(rooms, now));
        out
    }

    /// `/kick` in another room: its owner removes someone from it. One
    /// removed from their only room is back in the lobby.
    fn remove_from_room(
        &mut self,
        conn: ConnId,
        me: &str,
        target: &str,
        key: &str,
        now: SystemTime,
    ) -> Vec<Delivery> {
        let room = &self.rooms[key];
        let name = room.name.clone();
        if !self.owns(conn, key) {
            return refuse(conn, Code::NotOwner, render::only_owner_kicks_from(&name));
        }
        let visiting = self
            .visitor(target)
            .filter(|v| v.rooms.iter().any(|r| r == key));
        let victim = match (self.find(target), visiting) {
            (Some((victim, _)), _) if room.has(victim) => victim,
            (None, Some(v)) => {
                let relay = Relay::Remove {
                    target: v.nick.clone(),
                    room: name,
                    by: me.to_string(),
                };
                self.relay(v.server.clone(), relay);
                return Vec::new();
            }
            _ => {
                let message = render::user_not_in_room(target, &name);
                return refuse(conn, Code::NoSuchUser, message);
            }
        };
        if victim == conn {
            return refuse(conn, Code::CannotKickSelf, render::CANNOT_KICK_SELF);
        }
        self.take_out_of(victim, me, key, now)
    }

    /// Takes `victim` out of room `key`, removed by `me`.
    fn take_out_of(
        &mut self,
        victim: ConnId,
        me: &str,
        key: &str,
        now: SystemTime,
    ) -> Vec<Delivery> {
        let name = self.room_name(key);
        let nick = self.users[&victim].nick.clone();
        log::info!("{nick} was removed from {name} by {me}");
        let mut out = self.say(now, key, Kind::Removed, &nick, me.to_string());
        let by = me.to_string();
        let removal = Removal { room: name, by };
        out.push(to(victim, ToChild::Removed(Box::new(removal))));
        if self.users[&victim].rooms.len() == 1 {
            out.extend(self.join(victim, &nick, LOBBY, now));
        }
        out.extend(self.leave_room(victim, key, now));
        out
    }

    fn schedule(
        &mut self,
        conn: ConnId,
        author_nick: String,
        when: When,
        text: String,
        now: SystemTime,
    ) -> Vec<Delivery> {
        if self.pending_of(conn).count() >= MAX_SCHEDULED_PER_USER {
            return refuse(conn, Code::TooManyScheduled, render::TOO_MANY_SCHEDULED);
        }
        let due = match when {
            When::Clock { hour, minute } => clock::next_clock_time(now, hour, minute),
            When::In { seconds } => now + Duration::from_secs(seconds.into()),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let at = self
            .schedule
            .partition_point(|s| (s.due, s.seq) <= (due, seq));
        self.saved_changes += 1;
        let user = &self.users[&conn];
        let room = self.rooms[&user.current].name.clone();
        self.schedule.insert(
            at,
            Scheduled {
                due,
                seq,
                author: user.id,
                author_nick,
                text,
                room,
            },
        );
        let reply = Reply::Scheduled {
            due_ms: clock::unix_ms(due),
            due: describe_due(due, now),
        };
        vec![answer(conn, reply)]
    }

    fn pending_of(&self, conn: ConnId) -> impl Iterator<Item = &Scheduled> {
        let id = self.users.get(&conn).map(|u| u.id);
        self.schedule.iter().filter(move |s| Some(s.author) == id)
    }

    fn schedule_list(&self, conn: ConnId, now: SystemTime) -> Vec<Delivery> {
        let mine = self
            .pending_of(conn)
            .enumerate()
            .map(|(i, s)| Pending {
                number: i + 1,
                due_ms: clock::unix_ms(s.due),
                due: describe_due(s.due, now),
                text: s.text.clone(),
            })
            .collect();
        vec![answer(conn, Reply::ScheduleList(mine))]
    }

    /// Cancels the `number`th (from 1) of `conn`'s pending messages, in the
    /// order `/schedule list` shows them.
    fn schedule_cancel(&mut self, conn: ConnId, number: usize) -> Vec<Delivery> {
        let id = self.users.get(&conn).map(|u| u.id);
        let index = self
            .schedule
            .iter()
            .enumerate()
            .filter(|(_, s)| Some(s.author) == id)
            .nth(number.wrapping_sub(1))
            .map(|(i, _)| i);
        match index {
            Some(i) => {
                self.schedule.remove(i);
                self.saved_changes += 1;
                vec![answer(conn, Reply::Cancelled { number })]
            }
            None => {
                let message = render::no_such_scheduled(number);
                refuse(conn, Code::NoSuchScheduled, message)
            }
        }
    }

    /// The scheduled messages due by `now`, in due order, each in its room
    /// (kept in the room's history even if nobody is in it now).
    pub(crate) fn due(&mut self, now: SystemTime) -> Vec<Delivery> {
        let ready = self.schedule.partition_point(|s| s.due <= now);
        if ready == 0 {
            return Vec::new();
        }
        self.saved_changes += 1;
        let due: Vec<Scheduled> = self.schedule.drain(..ready).collect();
        let mut out = Vec::new();
        for s in due {
            let key = room_key(&s.room);
            if self.rooms.contains_key(&key) {
                out.extend(self.say(now, &key, Kind::Scheduled, &s.author_nick, s.text));
            } else {
                let entry = self.new_entry(now, &s.room, Kind::Scheduled, &s.author_nick, &s.text);
                self.keep(&key, entry);
            }
        }
        out
    }

    /// When the next scheduled message is due, if any.
    pub(crate) fn next_due(&self) -> Option<SystemTime> {
        self.schedule.first().map(|s| s.due)
    }
}

/// A due time as a user reads it: `14:05:30`, or `tomorrow 08:00:00`.
fn describe_due(due: SystemTime, now: SystemTime) -> String {
    if clock::same_day(due, now) {
        clock::hhmmss(due)
    } else {
        format!("tomorrow {}", clock::hhmmss(due))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(room: &mut Chat, conn: ConnId, nick: &str) -> Vec<Delivery> {
        let req = ToHub::person(nick.into(), "127.0.0.1:1".into());
        room.handle(conn, req, SystemTime::now())
    }

    /// Who a line goes to, as these tests tell them apart.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Who {
        One(ConnId),
        /// A room's members or everyone who shares a room with someone.
        All,
    }

    /// The text of every line delivery to people, as the child renders
    /// it, without the `[HH:MM] ` stamp.
    fn texts(out: &[Delivery]) -> Vec<(Who, String)> {
        let mut texts = Vec::new();
        for d in out {
            let who = match d.to {
                Target::One(conn) => Who::One(conn),
                Target::Many(_) | Target::Room(_) => Who::All,
                Target::JsonMembers(_) => continue,
            };
            let lines = match &d.msg {
                ToChild::Line(l) => vec![l.clone()],
                ToChild::Reply(r) | ToChild::Notice(r) => render::reply(r),
                ToChild::Whisper(w) if w.sent => vec![render::whisper_to("00:00", &w.to, &w.text)],
                ToChild::Whisper(w) => vec![render::whisper_from("00:00", &w.from, &w.text)],
                ToChild::Removed(r) => vec![render::removed_from(&r.room, &r.by)],
                _ => continue,
            };
            for l in lines {
                let text = if l.starts_with('[') && l.as_bytes().get(6) == Some(&b']') {
                    l[8..].to_string()
                } else {
                    l
                };
                texts.push((who.clone(), text));
            }
        }
        texts
    }

    #[test]
    fn first_user_owns_and_names_are_unique_without_case() {
        let mut room = Chat::default();
        let out = login(&mut room, 1, "Alice");
        assert!(
            matches!(&out[0], Delivery { to: Target::One(1), msg: ToChild::Registered(r), .. } if r.nick == "Alice"),
            "{out:?}"
        );
        assert_eq!(
            texts(&out),
            [(Who::All, "* Alice has joined the chat.".into())]
        );
        assert_eq!(room.owner(), Some(1));
        let out = login(&mut room, 2, "alice");
        assert_eq!(
            out,
            [to(
                2,
                ToChild::NickRefused {
                    code: Code::NickTaken,
                    reason: "Nickname \"alice\" is already in use.".into()
                }
            )]
        );
        assert_eq!(room.members(), vec![1]);
    }

    #[test]
    fn owner_passes_to_longest_connected() {
        let mut room = Chat::default();
        for (conn, nick) in [(1, "a"), (2, "b"), (3, "c")] {
            login(&mut room, conn, nick);
        }
        let out = room.leave(1, SystemTime::now());
        assert_eq!(
            texts(&out),
            [
                (Who::All, "* a has left the chat.".into()),
                (Who::All, "* b is now the room owner.".into())
            ]
        );
        assert_eq!(room.owner(), Some(2));
        assert!(texts(&room.leave(3, SystemTime::now())).len() == 1);
    }

    #[test]
    fn kick_rules() {
        let mut room = Chat::default();
        login(&mut room, 1, "own");
        login(&mut room, 2, "bob");
        let now = SystemTime::now();
        let out = room.request(2, Request::Kick("own".into()), now);
        assert_eq!(
            texts(&out),
            [(Who::One(2), render::ONLY_OWNER_KICKS.into())]
        );
        let out = room.request(1, Request::Kick("own".into()), now);
        assert_eq!(
            texts(&out),
            [(Who::One(1), render::CANNOT_KICK_SELF.into())]
        );
        let out = room.request(1, Request::Kick("zed".into()), now);
        assert_eq!(texts(&out), [(Who::One(1), "User 'zed' not found.".into())]);
        let out = room.request(1, Request::Kick("BOB".into()), now);
        assert_eq!(out[0], to(2, ToChild::Kicked));
        assert_eq!(texts(&out), [(Who::All, "* bob was kicked by own.".into())]);
        assert_eq!(room.members(), vec![1]);
        // The kicked user's connection closing later announces nothing more.
        assert!(room.leave(2, now).is_empty());
    }

    #[test]
    fn rename_checks_and_frees_the_old_name() {
        let mut room = Chat::default();
        login(&mut room, 1, "alice");
        login(&mut room, 2, "bob");
        let now = SystemTime::now();
        let out = room.request(1, Request::Rename("BOB".into()), now);
        assert_eq!(
            texts(&out),
            [(Who::One(1), "Nickname \"BOB\" is already in use.".into())]
        );
        let out = room.request(1, Request::Rename("Alice".into()), now);
        assert_eq!(
            texts(&out),
            [(
                Who::All,
                "* User \"alice\" has changed their nickname to \"Alice\".".into()
            )]
        );
        room.request(1, Request::Rename("ally".into()), now);
        assert!(
            login(&mut room, 3, "alice")
                .iter()
                .any(|d| matches!(d.msg, ToChild::Registered(_)))
        );
    }

    #[test]
    fn scheduled_messages_are_due_in_order_and_outlive_their_author() {
        let mut room = Chat::default();
        login(&mut room, 1, "alice");
        login(&mut room, 2, "bob");
        let now = SystemTime::now();
        room.request(
            1,
            Request::Schedule {
                when: When::In { seconds: 20 },
                text: "second".into(),
            },
            now,
        );
        room.request(
            1,
            Request::Schedule {
                when: When::In { seconds: 10 },
                text: "first".into(),
            },
            now,
        );
        let list = texts(&room.request(1, Request::ScheduleList, now));
        assert_eq!(list.len(), 3);
        assert!(list[1].1.starts_with("1. ") && list[1].1.ends_with(" first"));
        room.leave(1, now);
        assert!(room.due(now + Duration::from_secs(5)).is_empty());
        let out = room.due(now + Duration::from_secs(30));
        assert_eq!(
            texts(&out),
            [
                (Who::All, "[Scheduled by alice] first".into()),
                (Who::All, "[Scheduled by alice] second".into())
            ]
        );
        assert_eq!(room.next_due(), None);
    }

    #[test]
    fn schedule_limit_and_cancel() {
        let mut room = Chat::default();
        login(&mut room, 1, "alice");
        let now = SystemTime::now();
        for i in 0..MAX_SCHEDULED_PER_USER {
            room.request(
                1,
                Request::Schedule {
                    when: When::In { seconds: 60 },
                    text: format!("m{i}"),
                },
                now,
            );
        }
        let out = room.request(
            1,
            Request::Schedule {
                when: When::In { seconds: 60 },
                text: "x".into(),
            },
            now,
        );
        assert_eq!(
            texts(&out),
            [(Who::One(1), render::TOO_MANY_SCHEDULED.into())]
        );
        let out = room.request(1, Request::ScheduleCancel(11), now);
        assert_eq!(texts(&out), [(Who::One(1), render::no_such_scheduled(11))]);
        let out = room.request(1, Request::ScheduleCancel(1), now);
        assert_eq!(texts(&out), [(Who::One(1), render::schedule_cancelled(1))]);
        let list = texts(&room.request(1, Request::ScheduleList, now));
        assert!(list[1].1.ends_with(" m1"));
    }

    fn registered_id(out: &[Delivery]) -> u64 {
        out.iter()
            .find_map(|d| match &d.msg {
                ToChild::Registered(r) => Some(r.id),
                _ => None,
            })
            .expect("registered")
    }

    fn rejoin(room: &mut Chat, conn: ConnId, nick: &str, id: u64) -> Vec<Delivery> {
        let req = ToHub::Rejoin {
            format: Format::Text,
            token: None,
            device: None,
            web: false,
            nick: nick.into(),
            addr: "127.0.0.1:1".into(),
            id,
            rooms: None,
        };
        room.handle(conn, req, SystemTime::now())
    }

    #[test]
    fn users_of_an_old_hub_rejoin_silently_in_their_old_order() {
        let mut old = Chat::default();
        let a = registered_id(&login(&mut old, 1, "alice"));
        let b = registered_id(&login(&mut old, 2, "bob"));
        let c = registered_id(&login(&mut old, 3, "carol"));
        assert!(a < b && b < c);
        // A new hub; the children come back in any order, on new conns.
        let mut room = Chat::default();
        assert_eq!(
            rejoin(&mut room, 10, "carol", c),
            [to(10, ToChild::Rejoined)]
        );
        assert_eq!(room.owner(), Some(10));
        assert_eq!(
            rejoin(&mut room, 11, "alice", a),
            [to(11, ToChild::Rejoined)]
        );
        assert_eq!(rejoin(&mut room, 12, "bob", b), [to(12, ToChild::Rejoined)]);
        assert_eq!(room.members(), vec![11, 12, 10]);
        assert_eq!(
            room.owner(),
            Some(11),
            "the longest-connected owns the room"
        );
        // A newcomer comes after all of them, and cannot take their names.
        let out = login(&mut room, 13, "dave");
        assert!(registered_id(&out) > c);
        assert!(matches!(
            login(&mut room, 14, "Bob")[0].msg,
            ToChild::NickRefused { .. }
        ));
        assert_eq!(room.members(), vec![11, 12, 10, 13]);
    }

    #[test]
    fn a_user_dropped_for_falling_behind_cannot_rejoin() {
        let mut room = Chat::default();
        let id = registered_id(&login(&mut room, 1, "alice"));
        room.too_slow(1);
        room.leave(1, SystemTime::now());
        assert_eq!(rejoin(&mut room, 2, "alice", id), [to(2, ToChild::TooSlow)]);
        assert!(room.members().is_empty());
    }

    #[test]
    fn a_rejoin_under_a_name_taken_meanwhile_is_refused() {
        let mut room = Chat::default();
        login(&mut room, 1, "alice");
        let out = rejoin(&mut room, 2, "Alice", 1);
        assert!(matches!(out[0].msg, ToChild::NickRefused { .. }), "{out:?}");
        assert_eq!(room.members(), vec![1]);
    }

    fn say(room: &mut Chat, conn: ConnId, text: &str) -> Vec<Delivery> {
        room.request(conn, Request::Say(text.into()), SystemTime::now())
    }

    #[test]
    fn a_newcomer_gets_the_history_before_the_welcome_and_the_join() {
        let mut room = Chat::default();
        room.restore_history(Vec::new(), 2);
        login(&mut room, 1, "alice");
        say(&mut room, 1, "one");
        say(&mut room, 1, "two");
        let out = login(&mut room, 2, "bob");
        assert_eq!(
            texts(&out),
            [
                (Who::One(2), "--- last 2 messages ---".to_string()),
                (Who::One(2), "alice: one".to_string()),
                (Who::One(2), "alice: two".to_string()),
                (Who::One(2), render::HISTORY_END.to_string()),
                (Who::All, "* bob has joined the chat.".to_string()),
            ]
        );
        // The welcome (Registered) comes after the replay, before the join.
        assert!(matches!(out[4].msg, ToChild::Registered(_)), "{out:?}");
    }

    #[test]
    fn public_lines_are_handed_to_the_writer_once_and_whispers_never() {
        let mut room = Chat::default();
        login(&mut room, 1, "alice");
        login(&mut room, 2, "bob");
        room.take_unwritten();
        say(&mut room, 1, "hi");
        let whisper = Request::Whisper {
            to: "bob".into(),
            text: "secret".into(),
        };
        room.request(1, whisper, SystemTime::now());
        room.leave(2, SystemTime::now());
        let kinds: Vec<Kind> = room.take_unwritten().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [Kind::Chat, Kind::Leave]);
        assert!(room.take_unwritten().is_empty());
    }

    #[test]
    fn the_room_keeps_only_the_last_lines_in_memory() {
        let mut room = Chat::default();
        let old: Vec<Entry> = (0..250)
            .map(|i| {
                Entry::new(
                    SystemTime::now(),
                    "#lobby",
                    Kind::Chat,
                    "bob",
                    &i.to_string(),
                )
            })
            .collect();
        room.restore_history(old, 500);
        login(&mut room, 1, "alice");
        let out = room.request(
            1,
            Request::History {
                count: 200,
                room: None,
            },
            SystemTime::now(),
        );
        let lines = texts(&out);
        assert_eq!(lines.len(), 202);
        assert_eq!(lines[0].1, "--- last 200 messages ---");
        // 250 restored and alice's join: the oldest 51 are gone.
        assert_eq!(lines[1].1, "bob: 51");
        assert_eq!(lines[200].1, "* alice has joined the chat.");
    }

    fn req(chat: &mut Chat, conn: ConnId, request: Request) -> Vec<Delivery> {
        chat.request(conn, request, SystemTime::now())
    }

    fn join_room(chat: &mut Chat, conn: ConnId, name: &str) -> Vec<Delivery> {
        req(chat, conn, Request::Join(name.into()))
    }

    /// A room's members in join order, each with whether it is their
    /// current room.
    fn places(chat: &Chat, key: &str) -> Vec<(ConnId, bool)> {
        chat.room_members(key)
            .iter()
            .map(|m| (m.conn, m.here))
            .collect()
    }

    fn current_of(chat: &Chat, conn: ConnId) -> &str {
        &chat.users[&conn].current
    }

    #[test]
    fn a_room_line_has_two_forms_and_reaches_each_member_in_one() {
        let mut chat = Chat::default();
        login(&mut chat, 1, "alice");
        login(&mut chat, 2, "bob");
        join_room(&mut chat, 1, "#Lab2");
        join_room(&mut chat, 2, "#lab2");
        req(&mut chat, 2, Request::Join("#lobby".into()));
        let out = say(&mut chat, 1, "hi");
        let d = &out[0];
        assert_eq!(d.to, Target::Room("#lab2".into()));
        let (ToChild::Line(here), Some(ToChild::Line(there))) = (&d.msg, &d.elsewhere) else {
            panic!("{d:?}");
        };
        assert!(here.ends_with("] alice: hi"), "{here}");
        assert!(there.ends_with("] #Lab2 alice: hi"), "{there}");
        assert_eq!(places(&chat, "#lab2"), [(1, true), (2, false)]);
    }

    #[test]
    fn parting_moves_to_the_last_joined_room_and_hands_over_the_room() {
        let mut chat = Chat::default();
        login(&mut chat, 1, "alice");
        login(&mut chat, 2, "bob");
        join_room(&mut chat, 1, "#a");
        join_room(&mut chat, 1, "#b");
        join_room(&mut chat, 2, "#a");
        req(&mut chat, 1, Request::Join("#a".into()));
        let out = req(&mut chat, 1, Request::Part(None));
        assert_eq!(current_of(&chat, 1), "#b");
        let lines = texts(&out);
        assert!(
            lines.contains(&(Who::One(1), "Now talking in #b.".into())),
            "{lines:?}"
        );
        assert!(
            lines.contains(&(Who::All, "* bob is now the owner of #a.".into())),
            "{lines:?}"
        );
        req(&mut chat, 2, Request::Part(Some("#a".into())));
        assert!(!chat.rooms.contains_key("#a"), "an empty room is forgotten");
        req(&mut chat, 1, Request::Part(Some("#lobby".into())));
        let out = req(&mut chat, 1, Request::Part(None));
        assert_eq!(texts(&out), [(Who::One(1), render::LAST_ROOM.into())]);
        assert_eq!(chat.owner(), Some(2), "the lobby passed to bob");
    }

    #[test]
    fn room_limits_and_bad_names_change_nothing() {
        let mut chat = Chat::new(RoomLimits {
            per_user: 2,
            total: 2,
        });
        login(&mut chat, 1, "alice");
        login(&mut chat, 2, "bob");
        let out = join_room(&mut chat, 1, "lab");
        assert_eq!(texts(&out), [(Who::One(1), render::BAD_ROOM_NAME.into())]);
        join_room(&mut chat, 1, "#a");
        let out = join_room(&mut chat, 1, "#b");
        assert_eq!(
            texts(&out),
            [(Who::One(1), render::too_many_rooms_for_you(2))]
        );
        let out = join_room(&mut chat, 2, "#b");
        assert_eq!(texts(&out), [(Who::One(2), render::TOO_MANY_ROOMS.into())]);
        assert_eq!(chat.room_count(), 2);
        assert_eq!(current_of(&chat, 2), "#lobby");
    }

    #[test]
    fn a_new_hub_takes_back_rooms_order_and_current_room_from_the_children() {
        let mut old = Chat::default();
        let mut ids = Vec::new();
        for (conn, nick) in [(1, "alice"), (2, "bob")] {
            ids.push(registered_id(&login(&mut old, conn, nick)));
        }
        join_room(&mut old, 1, "#lab");
        join_room(&mut old, 2, "#lab");
        req(&mut old, 2, Request::Join("#lobby".into()));
        req(&mut old, 1, Request::Topic(Some("t".into())));
        let memberships: Vec<Memberships> = [1, 2]
            .iter()
            .map(|&conn| match old.memberships(conn).map(|d| d.msg) {
                Some(ToChild::Memberships(m)) => m,
                other => panic!("{other:?}"),
            })
            .collect();
        let mut new = Chat::default();
        new.restore(old.saved());
        // Saved again before anyone is back, the topic is not lost.
        assert_eq!(new.saved().topics, [("#lab".to_string(), "t".to_string())]);
        // In the other order: the places come from the children.
        for (conn, i) in [(12, 1), (11, 0)] {
            let out = new.handle(
                conn,
                ToHub::Rejoin {
                    format: Format::Text,
                    token: None,
                    device: None,
                    web: false,
                    nick: ["alice", "bob"][i].into(),
                    addr: "127.0.0.1:1".into(),
                    id: ids[i],
                    rooms: Some(memberships[i].clone()),
                },
                SystemTime::now(),
            );
            assert_eq!(out, [to(conn, ToChild::Rejoined)]);
        }
        assert_eq!(places(&new, "#lab"), [(11, true), (12, false)]);
        assert_eq!(new.owner(), Some(11));
        let out = req(&mut new, 11, Request::Topic(None));
        assert_eq!(texts(&out), [(Who::One(11), "Topic of #lab: t".into())]);
    }

    #[test]
    fn public_events_are_numbered_on_from_the_history() {
        let mut chat = Chat::default();
        let old: Vec<Entry> = (1..=3)
            .map(|seq| Entry {
                seq: seq * 10,
                ..Entry::new(SystemTime::now(), "#lobby", Kind::Chat, "bob", "x")
            })
            .collect();
        chat.restore_history(old, DEFAULT_REPLAY);
        login(&mut chat, 1, "alice");
        join_room(&mut chat, 1, "#lab");
        say(&mut chat, 1, "hi");
        req(&mut chat, 1, Request::Rename("ally".into()));
        let seqs: Vec<u64> = chat.take_unwritten().iter().map(|e| e.seq).collect();
        // Joined the lobby, joined #lab, said hi, and the rename once in
        // each room.
        assert_eq!(seqs, [31, 32, 33, 34, 35]);
    }

    #[test]
    fn the_lobby_s_name_is_its_own_key() {
        assert_eq!(room_key(LOBBY), LOBBY);
    }

    fn arrive(
        chat: &mut Chat,
        conn: ConnId,
        nick: &str,
        takeover: Option<&str>,
        device: Option<&str>,
    ) -> Vec<Delivery> {
        let req = ToHub::Login {
            nick: nick.into(),
            addr: "127.0.0.1:1".into(),
            format: Format::Json,
            after: None,
            token: Some(format!("token-{conn}")),
            takeover: takeover.map(str::to_string),
            bot: device.map(|d| crate::protocol::ipc::BotProof {
                device: d.into(),
                nonce: String::new(),
                mac: String::new(),
            }),
            rooms: Vec::new(),
            web: false,
        };
        chat.handle(conn, req, SystemTime::now())
    }

    fn refusal(out: &[Delivery]) -> Option<Code> {
        out.iter().find_map(|d| match &d.msg {
            ToChild::NickRefused { code, .. } => Some(*code),
            _ => None,
        })
    }

    #[test]
    fn a_takeover_keeps_the_session_and_the_rooms_hear_nothing() {
        let mut chat = Chat::default();
        arrive(&mut chat, 1, "prog", None, None);
        login(&mut chat, 2, "bob");
        join_room(&mut chat, 1, "#lab2");
        join_room(&mut chat, 2, "#lab2");
        assert_eq!(
            refusal(&arrive(&mut chat, 3, "", Some("token-9"), None)),
            Some(Code::UnknownSession)
        );
        let out = arrive(&mut chat, 3, "", Some("token-1"), None);
        assert!(texts(&out).is_empty(), "nobody is told: {out:?}");
        assert!(out.contains(&to(1, ToChild::TakenOver)));
        let Some(ToChild::Registered(registration)) = out
            .iter()
            .map(|d| d.msg.clone())
            .find(|m| matches!(m, ToChild::Registered(_)))
        else {
            panic!("no registration: {out:?}");
        };
        let Registration {
            nick,
            rooms: Some(rooms),
            ..
        } = *registration
        else {
            panic!("no rooms in {registration:?}");
        };
        assert_eq!(nick, "prog");
        assert_eq!(rooms.current, "#lab2");
        // Same places: still the owner of #lab2, ahead of bob.
        assert_eq!(places(&chat, "#lab2"), [(3, true), (2, true)]);
        // The old connection's end is nobody's; the old token is spent.
        assert!(chat.leave(1, SystemTime::now()).is_empty());
        assert_eq!(
            refusal(&arrive(&mut chat, 4, "", Some("token-1"), None)),
            Some(Code::UnknownSession)
        );
        assert!(refusal(&arrive(&mut chat, 4, "", Some("token-3"), None)).is_none());
    }

    #[test]
    fn a_bot_s_device_takes_over_and_another_device_is_refused() {
        let mut chat = Chat::default();
        chat.set_bots(["weather"].into_iter());
        assert_eq!(
            refusal(&arrive(&mut chat, 1, "Weather", None, None)),
            Some(Code::NickTaken),
            "a person cannot take a bot's name"
        );
        arrive(&mut chat, 2, "weather", None, Some("pi"));
        assert_eq!(
            refusal(&arrive(&mut chat, 3, "weather", None, Some("laptop"))),
            Some(Code::AlreadyConnected)
        );
        assert_eq!(
            chat.user(2).map(|u| u.2),
            Some("bot"),
            "the first is untouched"
        );
        let out = arrive(&mut chat, 4, "weather", None, Some("pi"));
        assert!(out.contains(&to(2, ToChild::TakenOver)));
        assert!(texts(&out).is_empty());
        assert_eq!(chat.user(4).map(|u| u.0), Some("weather"));
    }

    #[test]
    fn in_a_cluster_a_line_goes_out_and_is_told_when_it_comes_back() {
        let mut chat = Chat::default();
        login(&mut chat, 1, "alice");
        chat.take_unwritten();
        chat.set_cluster(true);
        assert!(say(&mut chat, 1, "hi").is_empty(), "told before its turn");
        let out = chat.take_outgoing();
        assert_eq!(out.len(), 1);
        assert_eq!(
            (
                out[0].room.as_str(),
                out[0].kind,
                out[0].nick.as_str(),
                out[0].text.as_str()
            ),
            ("#lobby", Kind::Chat, "alice", "hi")
        );
        assert!(chat.take_unwritten().is_empty(), "kept before its turn");
        // Back from the cluster, with another server's line before it.
        let now = SystemTime::now();
        let zed = Outgoing {
            key: "#lobby".into(),
            room: "#Lobby".into(),
            kind: Kind::Me,
            nick: "zed".into(),
            text: "waves".into(),
            bot: false,
            also: Vec::new(),
            server: "b".into(),
            stamp: (1, 0),
            number: 0,
        };
        let mut both = chat.cluster_line(now, &zed);
        both.extend(chat.cluster_line(now, &out[0]));
        assert_eq!(
            texts(&both),
            [
                (Who::All, "* zed waves".to_string()),
                (Who::All, "alice: hi".to_string()),
            ]
        );
        assert_eq!(chat.take_unwritten().len(), 2, "both kept in the history");
        // The link down: told here at once.
        chat.set_cluster(false);
        assert_eq!(say(&mut chat, 1, "alone").len(), 1);
        assert!(chat.take_outgoing().is_empty());
    }

    fn event(kind: Kind, nick: &str, room: &str, stamp: cluster::Version) -> Outgoing {
        Outgoing {
            key: room_key(room),
            room: room.into(),
            kind,
            nick: nick.into(),
            text: String::new(),
            bot: false,
            also: Vec::new(),
            server: "b".into(),
            stamp,
            number: 0,
        }
    }

    fn users_in(chat: &mut Chat, room: &str) -> Vec<String> {
        let out = req(chat, 1, Request::Users(Some(room.into())));
        match &out[..] {
            [
                Delivery {
                    msg: ToChild::Reply(reply),
                    ..
                },
            ] => match &**reply {
                Reply::Users { nicks, .. } => nicks.clone(),
                other => panic!("not a list of users: {other:?}"),
            },
            other => panic!("not one answer: {other:?}"),
        }
    }

    #[test]
    fn in_a_cluster_other_servers_users_come_from_events_and_rosters() {
        let now = SystemTime::now();
        let mut chat = Chat::default();
        chat.set_server("a", 100);
        login(&mut chat, 1, "alice");
        chat.set_cluster(true);
        let bob = event(Kind::Join, "bob", "#lobby", (200, 0));
        let told = chat.cluster_line(now, &bob);
        assert_eq!(
            texts(&told),
            [(Who::All, "* bob has joined the chat.".to_string())]
        );
        assert_eq!(users_in(&mut chat, "#lobby"), ["alice", "bob"]);
        // Whispers and kicks go to bob's server.
        let sent = req(
            &mut chat,
            1,
            Request::Whisper {
                to: "BOB".into(),
                text: "psst".into(),
            },
        );
        assert!(
            matches!(&sent[..], [d] if d.to == Target::One(1)),
            "{sent:?}"
        );
        req(&mut chat, 1, Request::Kick("bob".into()));
        let whisper = Relay::Whisper {
            from: "alice".into(),
            to: "bob".into(),
            text: "psst".into(),
        };
        let kick = Relay::Kick {
            target: "bob".into(),
            by: "alice".into(),
        };
        assert_eq!(
            chat.take_relays(),
            [("b".into(), whisper), ("b".into(), kick)]
        );
        // A roster no newer than an event applied is older than it.
        let old = "200 0\nbob\t0\t#lobby\t0\nzoe\t0\t#lobby\t0\n".to_string();
        chat.other_servers(now, &[("b".into(), Some(old))]);
        assert_eq!(users_in(&mut chat, "#lobby"), ["alice", "bob"]);
        let new = "200 1\nbob\t0\t#lobby\t0\ncarol\t0\t#lobby\t0\t#Lab\t0\n".to_string();
        let told = chat.other_servers(now, &[("b".into(), Some(new))]);
        assert!(told.is_empty(), "who was there already comes in silently");
        assert_eq!(users_in(&mut chat, "#lobby"), ["alice", "bob", "carol"]);
        assert!(
            chat.rooms()
                .iter()
                .any(|r| r.name == "#Lab" && r.users == 1)
        );
        // An event older than the roster is in it already.
        chat.cluster_line(now, &event(Kind::Part, "carol", "#lab", (200, 0)));
        assert!(
            chat.rooms()
                .iter()
                .any(|r| r.name == "#Lab" && r.users == 1)
        );
        // Its server gone: both leave, the room with nobody is forgotten.
        let told = chat.other_servers(now, &[]);
        assert_eq!(told.len(), 2, "one line each: {told:?}");
        assert!(
            texts(&told)
                .iter()
                .all(|(_, t)| t.ends_with("has left the chat."))
        );
        assert_eq!(users_in(&mut chat, "#lobby"), ["alice"]);
        assert_eq!(chat.room_count(), 1);
        // A relayed whisper reaches this server's user.
        let whisper = Relay::Whisper {
            from: "bob".into(),
            to: "Alice".into(),
            text: "hi".into(),
        };
        let out = chat.relayed(now, whisper);
        assert!(matches!(&out[..], [d] if d.to == Target::One(1)), "{out:?}");
    }
}
