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
/// nickname, `1` for a bot (else `0`), and the names of their rooms,
/// separated by tabs (neither a nickname nor a room's name holds one).
pub(crate) fn parse_roster(text: &str, server: &str) -> Option<(Version, Vec<Visitor>)> {
    let mut lines = text.lines();
    let mut head = lines.next()?.split(' ');
    let version = (head.next()?.parse().ok()?, head.next()?.parse().ok()?);
    let mut users = Vec::new();
    for line in lines {
        let mut fields = line.split('\t');
        let (Some(nick), Some(bot)) = (fields.next(), fields.next()) else {
            continue;
        };
        users.push(Visitor {
            nick: nick.to_string(),
            server: server.to_string(),
            bot: bot == "1",
            rooms: fields.map(room_key).collect(),
        });
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
            for (key, _) in &user.rooms {
                body.push('\t');
                body.push_str(self.rooms.get(key).map_or(key.as_str(), |r| &r.name));
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
            Effect::Gone => {
                let Some(visitor) = self.visitors.remove(&key) else {
                    return Vec::new();
                };
                let mut out = Vec::new();
                for room in &visitor.rooms {
                    out.extend(self.forget_visitor_in(&key, room, now));
                }
                out
            }
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
        out
    }

    fn apply_roster(
        &mut self,
        now: SystemTime,
        server: &str,
        users: Vec<Visitor>,
    ) -> Vec<Delivery> {
        let mut out = Vec::new();
        let keep: HashMap<String, Visitor> =
            users.into_iter().map(|v| (nick_key(&v.nick), v)).collect();
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
                // The roster names rooms by key; the room's name as shown
                // comes with its first line.
                let room = self
                    .rooms
                    .entry(room.clone())
                    .or_insert_with(|| Room::new(room));
                room.visitors.push(key.clone());
            }
            self.visitors.insert(key, visitor);
        }
        out
    }

    /// A visitor this server was not told about leaving (its server went
    /// away, or came back without them): out of every room, told there.
    fn visitor_left(&mut self, key: &str, now: SystemTime) -> Vec<Delivery> {
        let Some(visitor) = self.visitors.remove(key) else {
            return Vec::new();
        };
        log::info!("{} (on {}) left the cluster", visitor.nick, visitor.server);
        let mut out = self.chat_wide(now, &visitor.rooms, Kind::Leave, &visitor.nick, "");
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
        self.relays.push((
            server,
            Relay::Whisper {
                from: me.to_string(),
                to: nick.clone(),
                text: text.to_string(),
            },
        ));
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

    /// Relays a kick or a removal of a visitor to their server.
    pub(super) fn relay(&mut self, server: String, relay: Relay) {
        self.relays.push((server, relay));
    }
}
