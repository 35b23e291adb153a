//! The users of the cluster's other servers, as this server's chat knows
//! them ("visitors"): who they are, which rooms they are in, and what a
//! request about one of them turns into.
//!
//! A visitor is known from two sources, both handed in by the hub:
//!
//! - the events of the rooms' streams (a join, a part, a leave, a kick,
//!   a removal), applied as they come, so `/users` agrees with the lines
//!   just shown;
//! - each server's roster, a snapshot of its users and their rooms it
//!   publishes when it changed, which fills in what no event says (a
//!   server that started before this one, a hub that restarted and whose
//!   users came back silently) and takes out users a restarted server no
//!   longer has.
//!
//! The two are put in order by the roster's version, `(run, n)`: the
//! hub's start and a count of the rosters it published. Each event
//! carries the version of the last roster its server published before
//! it, so a roster not newer than an event already applied is older than
//! that event and is not applied, and an event older than the roster
//! applied is already in it.
//!
//! A room's owner is one for the whole cluster: its longest-present user
//! over every server, each join placed by its number in the cluster
//! (the same on every server, so every server finds the same owner, and
//! tells the same change after the same line). Rosters carry the places.
//!
//! A visitor cannot be reached directly: a whisper, a kick or a removal
//! of one becomes a [`Relay`] for its server, which carries it out there
//! as if its own user had asked (the servers of a cluster trust each
//! other; the owner was checked where the request was made).
//!
//! May use what `room` may: `protocol` and `os`.

use std::collections::HashMap;
use std::time::SystemTime;

use super::{Chat, ConnId, Delivery, Kind, Outgoing, Room, RoomKey, to};
use crate::os::clock;
use crate::protocol::command::{nick_key, room_key};
use crate::protocol::ipc::{ToChild, Whisper};

/// A roster's version: the hub's start (ms) and the count of rosters it
/// published. Ordered as a pair.
pub(crate) type Version = (u64, u64);

/// A user of another server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Visitor {
    pub nick: String,
    pub server: String,
    pub bot: bool,
    /// The rooms' keys.
    pub rooms: Vec<RoomKey>,
}

/// A roster's user: the visitor, and for each of its rooms (in order)
/// the room's name and the user's place in its join order across the
/// servers (0: not known).
type Listed = (Visitor, Vec<(String, u64)>);

/// What this server knows of another's versions.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Heard {
    /// The newest stamp of an event applied.
    events: Version,
    /// The version of the roster applied last.
    roster: Version,
}

/// A request about a visitor, for its server to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Relay {
    Whisper {
        from: String,
        to: String,
        text: String,
    },
    /// `/kick` in the lobby: out of the chat.
    Kick { target: String, by: String },
    /// `/kick` in another room: out of that room (its name).
    Remove {
        target: String,
        room: String,
        by: String,
    },
    /// A bot logging in on another server: its session here ends if it
    /// is that device's.
    TakeOver { nick: String, device: String },
}

/// What the membership event `kind` does to the user it is about.
enum Effect {
    Enter,
    Exit,
    Gone,
    Renamed,
    None,
}

fn effect(kind: Kind) -> Effect {
    match kind {
        Kind::Join => Effect::Enter,
        Kind::Part | Kind::Removed => Effect::Exit,
        Kind::Leave | Kind::Kick => Effect::Gone,
        Kind::Rename => Effect::Renamed,
        _ => Effect::None,
    }
}

/// Whether an event of `kind` concerns the whole chat: told once to a
/// person in several of its rooms.
pub(crate) fn chat_wide(kind: Kind) -> bool {
    matches!(kind, Kind::Leave | Kind::Kick | Kind::Rename)
}

/// A roster as text: `run n` on the first line, then one line per user:
/// nickname, `1` for a bot (else `0`), and for each of their rooms its
/// name and the user's place in its join order, separated by tabs
/// (neither a nickname nor a room's name holds one).
pub(crate) fn parse_roster(text: &str, server: &str) -> Option<(Version, Vec<Listed>)> {
    let mut lines = text.lines();
    let mut head = lines.next()?.split(' ');
    let version = (head.next()?.parse().ok()?, head.next()?.parse().ok()?);
    let mut users = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split('\t').collect();
        let [nick, bot, rooms @ ..] = &fields[..] else {
            continue;
        };
        let rooms: Vec<(String, u64)> = (rooms.chunks_exact(2))
            .map(|p| (p[0].to_string(), p[1].parse().unwrap_or(0)))
            .collect();
        let visitor = Visitor {
            nick: nick.to_string(),
            server: server.to_string(),
            bot: *bot == "1",
            rooms: rooms.iter().map(|(name, _)| room_key(name)).collect(),
        };
        users.push((visitor, rooms));
    }
    Some((version, users))
}

impl Chat {
    /// In a cluster: this server's name, and its hub's start (ms), the
    /// run part of its rosters' versions.
    pub(crate) fn set_server(&mut self, name: &str, run: u64) {
        self.server = name.to_string();
        self.roster_version = (run, 0);
    }

    /// This server's roster, if it changed since the last one (or
    /// [`Chat::roster_again`] was called), with its new version.
    pub(crate) fn roster_if_changed(&mut self) -> Option<String> {
        let mut users: Vec<_> = self.users.values().collect();
        users.sort_by_key(|u| u.id);
        let mut body = String::new();
        for user in users {
            body.push_str(&user.nick);
            body.push_str(if user.device.is_some() { "\t1" } else { "\t0" });
            let me = nick_key(&user.nick);
            for (key, _) in &user.rooms {
                let room = self.rooms.get(key);
                let place = room.and_then(|r| r.order.get(&me)).copied().unwrap_or(0);
                body.push('\t');
                body.push_str(room.map_or(key.as_str(), |r| &r.name));
                body.push_str(&format!("\t{place}"));
            }
            body.push('\n');
        }
        if body == self.roster_body {
            return None;
        }
        self.roster_body = body;
        self.roster_version.1 += 1;
        let (run, n) = self.roster_version;
        Some(format!("{run} {n}\n{}", self.roster_body))
    }

    /// The next [`Chat::roster_if_changed`] gives the roster even if it
    /// did not change (what was published while the link was down may
    /// not have arrived).
    pub(crate) fn roster_again(&mut self) {
        self.roster_body.clear();
        self.roster_body.push('-');
    }

    /// The requests about visitors since the last call, each with the
    /// visitor's server.
    pub(crate) fn take_relays(&mut self) -> Vec<(String, Relay)> {
        std::mem::take(&mut self.relays)
    }

    /// The visitor of that nickname, if any.
    pub(crate) fn visitor(&self, nick: &str) -> Option<&Visitor> {
        self.visitors.get(&nick_key(nick))
    }

    /// The visitors in room `key`, in the order they came.
    pub(super) fn visitors_of(&self, key: &str) -> impl Iterator<Item = &Visitor> {
        let room = self.rooms.get(key);
        room.into_iter()
            .flat_map(|r| r.visitors.iter())
            .filter_map(|k| self.visitors.get(k))
    }

    /// A membership event of another server's user, from its room's
    /// stream: applied unless that server's roster applied is newer.
    pub(super) fn apply_event(&mut self, now: SystemTime, line: &Outgoing) -> Vec<Delivery> {
        let heard = self.heard.entry(line.server.clone()).or_default();
        heard.events = heard.events.max(line.stamp);
        if line.stamp < heard.roster {
            return Vec::new();
        }
        let key = nick_key(&line.nick);
        match effect(line.kind) {
            Effect::Enter => {
                let visitor = self.visitors.entry(key.clone()).or_insert_with(|| Visitor {
                    nick: line.nick.clone(),
                    server: line.server.clone(),
                    bot: line.bot,
                    rooms: Vec::new(),
                });
                if !visitor.rooms.contains(&line.key) {
                    visitor.rooms.push(line.key.clone());
                    let room = self
                        .rooms
                        .entry(line.key.clone())
                        .or_insert_with(|| Room::new(&line.room));
                    room.visitors.push(key);
                }
                Vec::new()
            }
            Effect::Exit => {
                if let Some(visitor) = self.visitors.get_mut(&key) {
                    visitor.rooms.retain(|k| *k != line.key);
                }
                self.forget_visitor_in(&key, &line.key, now)
            }
            Effect::Gone => self.forget_visitor(&key, now),
            // The new name is the event's text.
            Effect::Renamed => {
                let Some(mut visitor) = self.visitors.remove(&key) else {
                    return Vec::new();
                };
                let new = nick_key(&line.text);
                for room in &visitor.rooms {
                    if let Some(r) = self.rooms.get_mut(room) {
                        for k in r.visitors.iter_mut().filter(|k| **k == key) {
                            k.clone_from(&new);
                        }
                    }
                }
                visitor.nick.clone_from(&line.text);
                self.visitors.insert(new, visitor);
                Vec::new()
            }
            Effect::None => Vec::new(),
        }
    }

    /// Takes visitor `key` out of room `room`'s list, and forgets the room
    /// if nobody is left in it.
    fn forget_visitor_in(&mut self, key: &str, room: &str, now: SystemTime) -> Vec<Delivery> {
        let Some(r) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        r.visitors.retain(|k| k != key);
        self.after_leaving(vec![(room.to_string(), false)], now)
    }

    /// The other servers heard from, each with its roster if it published
    /// a new one. The users of a server no longer among them, and those a
    /// newer roster does not have, left: each room they were in is told
    /// so. Those a roster has and this server did not know come in
    /// silently (they came while it was not listening).
    pub(crate) fn other_servers(
        &mut self,
        now: SystemTime,
        servers: &[(String, Option<String>)],
    ) -> Vec<Delivery> {
        let mut out = Vec::new();
        let gone: Vec<String> = (self.visitors.iter())
            .filter(|(_, v)| !servers.iter().any(|(s, _)| *s == v.server))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            out.extend(self.visitor_left(&key, now));
        }
        self.heard
            .retain(|s, _| servers.iter().any(|(name, _)| name == s));
        for (server, roster) in servers {
            let Some((version, users)) = roster.as_deref().and_then(|t| parse_roster(t, server))
            else {
                continue;
            };
            let heard = self.heard.entry(server.clone()).or_default();
            if version <= heard.events || version <= heard.roster {
                continue;
            }
            heard.roster = version;
            out.extend(self.apply_roster(now, server, users));
        }
        let keys: Vec<RoomKey> = self.rooms.keys().cloned().collect();
        out.extend(self.owner_changes(now, &keys));
        out
    }

    fn apply_roster(&mut self, now: SystemTime, server: &str, users: Vec<Listed>) -> Vec<Delivery> {
        let mut out = Vec::new();
        let mut keep: HashMap<String, Visitor> = HashMap::new();
        let mut places = Vec::new();
        for (visitor, rooms) in users {
            let key = nick_key(&visitor.nick);
            places.push((key.clone(), rooms));
            keep.insert(key, visitor);
        }
        let left: Vec<String> = (self.visitors.iter())
            .filter(|(k, v)| v.server == server && !keep.contains_key(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in left {
            out.extend(self.visitor_left(&key, now));
        }
        for (key, visitor) in keep {
            let old = self
                .visitors
                .remove(&key)
                .map(|v| v.rooms)
                .unwrap_or_default();
            for room in old.iter().filter(|r| !visitor.rooms.contains(r)) {
                out.extend(self.forget_visitor_in(&key, room, now));
            }
            for room in visitor.rooms.iter().filter(|r| !old.contains(r)) {
                if let Some(room) = self.rooms.get_mut(room) {
                    room.visitors.push(key.clone());
                }
            }
            self.visitors.insert(key, visitor);
        }
        // Rooms made here by the roster, and each visitor's place.
        for (key, rooms) in places {
            for (name, place) in rooms {
                let room = (self.rooms.entry(room_key(&name))).or_insert_with(|| Room::new(&name));
                if !room.visitors.contains(&key) && self.visitors.contains_key(&key) {
                    room.visitors.push(key.clone());
                }
                if place > 0 {
                    room.order.insert(key.clone(), place);
                }
            }
        }
        out
    }

    /// A visitor this server was not told about leaving (its server went
    /// away, or came back without them): out of every room, told there.
    fn visitor_left(&mut self, key: &str, now: SystemTime) -> Vec<Delivery> {
        let Some(visitor) = self.visitors.get(key) else {
            return Vec::new();
        };
        log::info!("{} (on {}) left the cluster", visitor.nick, visitor.server);
        let (rooms, nick) = (visitor.rooms.clone(), visitor.nick.clone());
        let mut out = self.chat_wide(now, &rooms, Kind::Leave, &nick, "");
        out.extend(self.forget_visitor(key, now));
        out
    }

    /// Takes visitor `key` out of the chat and of every room it was in.
    fn forget_visitor(&mut self, key: &str, now: SystemTime) -> Vec<Delivery> {
        let Some(visitor) = self.visitors.remove(key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for room in &visitor.rooms {
            out.extend(self.forget_visitor_in(key, room, now));
        }
        out
    }

    /// A whisper to a visitor: relayed; the sender sees it sent.
    pub(super) fn whisper_visitor(
        &mut self,
        conn: ConnId,
        me: &str,
        visitor: &str,
        text: &str,
        now: SystemTime,
    ) -> Vec<Delivery> {
        let Some(v) = self.visitor(visitor) else {
            return Vec::new();
        };
        let (server, nick) = (v.server.clone(), v.nick.clone());
        let relay = Relay::Whisper {
            from: me.to_string(),
            to: nick.clone(),
            text: text.to_string(),
        };
        self.relay(server, relay);
        let sent = Whisper {
            from: me.to_string(),
            to: nick,
            text: text.to_string(),
            time_ms: clock::unix_ms(now),
            sent: true,
        };
        vec![to(conn, ToChild::Whisper(Box::new(sent)))]
    }

    /// A request another server relayed, about one of this server's
    /// users: carried out as that server's user asked it.
    pub(crate) fn relayed(&mut self, now: SystemTime, relay: Relay) -> Vec<Delivery> {
        match relay {
            Relay::Whisper {
                from,
                to: nick,
                text,
            } => {
                let Some((conn, nick)) = self.find(&nick) else {
                    log::debug!("cluster: a whisper from {from} to {nick}, who is gone");
                    return Vec::new();
                };
                let whisper = Whisper {
                    from,
                    to: nick.to_string(),
                    text,
                    time_ms: clock::unix_ms(now),
                    sent: false,
                };
                vec![to(conn, ToChild::Whisper(Box::new(whisper)))]
            }
            Relay::TakeOver { nick, device } => {
                let same = |u: &super::User| u.device.as_deref() == Some(device.as_str());
                match self.find(&nick) {
                    Some((conn, _)) if self.users.get(&conn).is_some_and(same) => {
                        log::info!("{nick} logs in on another server: its session here ends");
                        let mut out = vec![to(conn, ToChild::TakenOver)];
                        out.extend(self.leave(conn, now));
                        out
                    }
                    _ => Vec::new(),
                }
            }
            Relay::Kick { target, by } => match self.find(&target) {
                Some((victim, _)) => self.put_out(victim, &by, now),
                None => Vec::new(),
            },
            Relay::Remove { target, room, by } => {
                let key = room_key(&room);
                match self.find(&target) {
                    Some((victim, _)) if self.rooms.get(&key).is_some_and(|r| r.has(victim)) => {
                        self.take_out_of(victim, &by, &key, now)
                    }
                    _ => Vec::new(),
                }
            }
        }
    }

    /// The nickname key of room `room`'s owner in a cluster: its
    /// longest-present user over every server, by the numbers of their
    /// joins; users whose join has no number yet (said while the link was
    /// down, or not back yet) come after, this server's first.
    fn owner_key(&self, room: &Room) -> Option<String> {
        let here = (room.members.iter())
            .filter_map(|m| self.users.get(&m.conn))
            .map(|u| nick_key(&u.nick));
        let all = here.chain(room.visitors.iter().cloned());
        all.min_by_key(|k| room.order.get(k).copied().unwrap_or(u64::MAX))
    }

    /// Whether `conn`'s user owns room `key`: alone, its longest-present
    /// member; in a cluster, over every server.
    pub(super) fn owns(&self, conn: ConnId, key: &str) -> bool {
        let Some(room) = self.rooms.get(key) else {
            return false;
        };
        if self.server.is_empty() {
            return room.owner() == Some(conn);
        }
        let me = self.users.get(&conn).map(|u| nick_key(&u.nick));
        me.is_some() && self.owner_key(room) == me
    }

    /// The nickname of room `room`'s owner.
    pub(super) fn owner_name<'a>(&'a self, room: &'a Room) -> Option<&'a str> {
        if self.server.is_empty() {
            let owner = room.owner()?;
            return self.users.get(&owner).map(|u| u.nick.as_str());
        }
        let key = self.owner_key(room)?;
        match self.by_nick.get(&key) {
            Some(conn) => self.users.get(conn).map(|u| u.nick.as_str()),
            None => self.visitors.get(&key).map(|v| v.nick.as_str()),
        }
    }

    /// A cluster's line moves its user in the rooms' join orders: a join
    /// takes its number as its place, leaving gives it up.
    pub(super) fn note_order(&mut self, line: &Outgoing, rooms: &[RoomKey]) {
        let key = nick_key(&line.nick);
        for room in rooms {
            let Some(room) = self.rooms.get_mut(room) else {
                continue;
            };
            match line.kind {
                Kind::Join if line.number > 0 => {
                    room.order.entry(key.clone()).or_insert(line.number);
                }
                Kind::Part | Kind::Removed | Kind::Leave | Kind::Kick => {
                    room.order.remove(&key);
                }
                Kind::Rename => {
                    if let Some(place) = room.order.remove(&key) {
                        room.order.insert(nick_key(&line.text), place);
                    }
                }
                _ => {}
            }
        }
    }

    /// In a cluster: tells each of `rooms` whose owner changed who owns
    /// it now, as every server does when it sees the same change. (A
    /// room's first owner is not told, as alone.)
    pub(super) fn owner_changes(&mut self, now: SystemTime, rooms: &[RoomKey]) -> Vec<Delivery> {
        let mut out = Vec::new();
        if self.server.is_empty() {
            return out;
        }
        for key in rooms {
            let Some(room) = self.rooms.get(key) else {
                continue;
            };
            let owner = self.owner_key(room);
            if owner == room.owner_told {
                continue;
            }
            let nick = self.owner_name(room).map(str::to_string);
            let Some(room) = self.rooms.get_mut(key) else {
                continue;
            };
            let before = std::mem::replace(&mut room.owner_told, owner);
            if let (Some(_), Some(nick)) = (before, nick) {
                log::info!("{nick} now owns {}", room.name);
                out.push(self.public(now, key, Kind::Owner, &nick, ""));
            }
        }
        out
    }

    /// Relays a request about a visitor to their server.
    pub(super) fn relay(&mut self, server: String, relay: Relay) {
        self.relays.push((server, relay));
    }
}
