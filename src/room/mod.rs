//! The room: who is here, who owns it, and what each request does.
//!
//! The hub owns one [`Room`]. It holds no sockets: each call returns the
//! [`Delivery`]s to make, and the hub carries them out. That keeps every
//! rule of the chat in one place that can be tested without processes.
//!
//! Users are identified by their connection's [`ConnId`], never by
//! nickname, since a nickname can change.
//!
//! May use: `protocol` and `os` only: no sockets, no files, no clock of
//! its own (the time is passed in). Checked by `scripts/check_layout.py`.

pub(crate) mod entry;
pub(crate) mod saved;

pub(crate) use entry::{Entry, Kind};

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use crate::os::clock;
use crate::protocol::command::{MAX_HISTORY, Request, When, check_nick, nick_key};
use crate::protocol::ipc::{ToChild, ToHub};
use crate::protocol::render;
use saved::{SavedMessage, State};

/// The hub's name for one child connection.
pub(crate) type ConnId = u64;

/// Pending scheduled messages per user, at most.
pub(crate) const MAX_SCHEDULED_PER_USER: usize = 10;

/// Lines of history a user who joins is shown, unless told otherwise.
pub(crate) const DEFAULT_REPLAY: usize = 20;

/// Who receives a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    One(ConnId),
    /// Every registered user.
    All,
}

/// One message to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub to: Target,
    pub msg: ToChild,
}

fn to(conn: ConnId, msg: ToChild) -> Delivery {
    Delivery {
        to: Target::One(conn),
        msg,
    }
}

fn line(to: Target, text: String) -> Delivery {
    Delivery {
        to,
        msg: ToChild::Line(text),
    }
}

#[derive(Debug)]
struct User {
    nick: String,
    addr: String,
    /// Stays the user's across hub restarts; join order is id order.
    id: u64,
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
}

/// The shared state of the chat.
#[derive(Debug)]
pub(crate) struct Room {
    users: HashMap<ConnId, User>,
    /// Registered users, longest-connected first.
    order: Vec<ConnId>,
    by_nick: HashMap<String, ConnId>,
    /// Pending scheduled messages, sorted by (due, seq).
    schedule: Vec<Scheduled>,
    next_seq: u64,
    next_user: u64,
    /// Counts changes to `schedule`, so the hub knows when to save it.
    schedule_changes: u64,
    /// Users the hub dropped because their child stopped reading: their
    /// child must not rejoin when it finds its socket closed.
    too_slow: HashSet<u64>,
    /// The last public lines, oldest first, at most [`MAX_HISTORY`].
    recent: VecDeque<Entry>,
    /// Public lines the hub has not yet handed to the history's writer.
    unwritten: Vec<Entry>,
    /// Lines of history shown to a user who joins.
    replay_lines: usize,
}

impl Default for Room {
    fn default() -> Self {
        Self::new()
    }
}

impl Room {
    pub(crate) fn new() -> Self {
        // User ids start from the clock (in microseconds), so that a hub
        // started after another gives ids above all of the old hub's,
        // which its users bring back when they rejoin.
        let next_user = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Room {
            users: HashMap::new(),
            order: Vec::new(),
            by_nick: HashMap::new(),
            schedule: Vec::new(),
            next_seq: 0,
            next_user,
            schedule_changes: 0,
            too_slow: HashSet::new(),
            recent: VecDeque::new(),
            unwritten: Vec::new(),
            replay_lines: DEFAULT_REPLAY,
        }
    }

    /// Takes the last lines of the history (oldest first), and how many of
    /// them a user who joins is shown.
    pub(crate) fn restore_history(&mut self, entries: Vec<Entry>, replay_lines: usize) {
        self.recent = entries.into();
        self.recent
            .drain(..self.recent.len().saturating_sub(MAX_HISTORY));
        self.replay_lines = replay_lines.min(MAX_HISTORY);
    }

    /// The public lines since the last call, for the history's writer.
    pub(crate) fn take_unwritten(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.unwritten)
    }

    /// A public line: kept for the history and rendered for everyone.
    fn public(&mut self, now: SystemTime, kind: Kind, nick: &str, text: &str) -> Delivery {
        let entry = Entry::new(now, kind, nick, text);
        let rendered = entry.render(&clock::hhmm(now));
        if self.recent.len() == MAX_HISTORY {
            self.recent.pop_front();
        }
        self.recent.push_back(entry.clone());
        self.unwritten.push(entry);
        line(Target::All, rendered)
    }

    /// The last `count` public lines for `conn`, between markers. Lines of
    /// an earlier day carry their date.
    fn replay(&self, conn: ConnId, count: usize, now: SystemTime) -> Vec<Delivery> {
        let shown = count.min(self.recent.len());
        let mut out = Vec::with_capacity(shown + 2);
        out.push(line(Target::One(conn), render::history_header(shown)));
        for entry in self.recent.range(self.recent.len() - shown..) {
            let at = entry.time();
            let stamp = if clock::same_day(at, now) {
                clock::hhmm(at)
            } else {
                clock::date_hhmm(at)
            };
            out.push(line(Target::One(conn), entry.render(&stamp)));
        }
        out.push(line(Target::One(conn), render::HISTORY_END.to_string()));
        out
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

    /// Goes up whenever the scheduled messages change.
    pub(crate) fn schedule_changes(&self) -> u64 {
        self.schedule_changes
    }

    /// What a new hub needs to carry on: the scheduled messages.
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
            })
            .collect();
        State {
            next_seq: self.next_seq,
            schedule,
        }
    }

    /// Takes over the scheduled messages an earlier hub saved.
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
            })
            .collect();
        self.schedule.sort_by_key(|s| (s.due, s.seq));
        // Authors keep their ids; new users must come after them.
        if let Some(max) = self.schedule.iter().map(|s| s.author).max() {
            self.next_user = self.next_user.max(max + 1);
        }
    }

    /// Registered users in join order.
    pub(crate) fn members(&self) -> &[ConnId] {
        &self.order
    }

    /// A registered user's nickname and address.
    pub(crate) fn user(&self, conn: ConnId) -> Option<(&str, &str)> {
        self.users
            .get(&conn)
            .map(|u| (u.nick.as_str(), u.addr.as_str()))
    }

    /// The room's owner: always the longest-connected user (the first to
    /// register, then whoever has been here longest once the owner leaves).
    pub(crate) fn owner(&self) -> Option<ConnId> {
        self.order.first().copied()
    }

    /// Carries out one message from `conn`'s child.
    pub(crate) fn handle(&mut self, conn: ConnId, msg: ToHub, now: SystemTime) -> Vec<Delivery> {
        match msg {
            ToHub::Login { nick, addr } => self.join(conn, nick, addr, now),
            ToHub::Rejoin { nick, addr, id } => self.rejoin(conn, nick, addr, id),
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
        match request {
            Request::Say(text) => vec![self.public(now, Kind::Chat, &me, &text)],
            Request::Me(text) => vec![self.public(now, Kind::Me, &me, &text)],
            Request::Whisper { to: target, text } => match self.find(&target) {
                None => vec![line(Target::One(conn), render::user_not_found(&target))],
                Some((other, other_nick)) => {
                    let stamp = clock::hhmm(now);
                    vec![
                        line(Target::One(other), render::whisper_from(&stamp, &me, &text)),
                        line(
                            Target::One(conn),
                            render::whisper_to(&stamp, other_nick, &text),
                        ),
                    ]
                }
            },
            Request::Users => {
                let nicks: Vec<&str> = self
                    .order
                    .iter()
                    .map(|c| self.users[c].nick.as_str())
                    .collect();
                vec![line(Target::One(conn), render::users(&nicks))]
            }
            Request::Rename(new) => self.rename(conn, &me, new, now),
            Request::Kick(target) => self.kick(conn, &me, &target, now),
            Request::Schedule { when, text } => self.schedule(conn, me, when, text, now),
            Request::ScheduleList => self.schedule_list(conn, now),
            Request::ScheduleCancel(n) => self.schedule_cancel(conn, n),
            Request::History(_) if self.recent.is_empty() => {
                vec![line(Target::One(conn), render::NO_HISTORY.to_string())]
            }
            Request::History(count) => self.replay(conn, count, now),
        }
    }

    fn join(&mut self, conn: ConnId, nick: String, addr: String, now: SystemTime) -> Vec<Delivery> {
        if self.users.contains_key(&conn) {
            log::warn!("second login from connection {conn} ignored");
            return Vec::new();
        }
        if let Err(reason) = check_nick(&nick) {
            return vec![to(conn, ToChild::NickRefused { reason })];
        }
        let key = nick_key(&nick);
        if self.by_nick.contains_key(&key) {
            let reason = render::nick_in_use(&nick);
            return vec![to(conn, ToChild::NickRefused { reason })];
        }
        log::info!("{nick} registered from {addr}");
        let id = self.next_user;
        self.next_user += 1;
        self.by_nick.insert(key, conn);
        self.order.push(conn);
        self.users.insert(
            conn,
            User {
                nick: nick.clone(),
                addr,
                id,
            },
        );
        // The history first, then the welcome, then everyone (this user
        // included) hears of the arrival.
        let mut out = if self.replay_lines > 0 && !self.recent.is_empty() {
            self.replay(conn, self.replay_lines, now)
        } else {
            Vec::new()
        };
        let joined = self.public(now, Kind::Join, &nick, "");
        out.push(to(conn, ToChild::Registered { nick, id }));
        out.push(joined);
        out
    }

    /// A user of an earlier hub comes back: same nickname, same place in
    /// the join order, and nobody is told, since for them nothing changed.
    /// The owner is the longest-connected user, as always. A nickname
    /// taken in the meantime (by a newcomer while the hub restarted) is
    /// refused like any login.
    fn rejoin(&mut self, conn: ConnId, nick: String, addr: String, id: u64) -> Vec<Delivery> {
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
            return vec![to(conn, ToChild::NickRefused { reason })];
        }
        log::info!("{nick} rejoined from {addr}");
        self.next_user = self.next_user.max(id + 1);
        let at = self.order.partition_point(|c| self.users[c].id < id);
        self.order.insert(at, conn);
        self.by_nick.insert(key, conn);
        self.users.insert(conn, User { nick, addr, id });
        vec![to(conn, ToChild::Rejoined)]
    }

    /// Removes `conn`'s user, if registered, and tells the others.
    pub(crate) fn leave(&mut self, conn: ConnId, now: SystemTime) -> Vec<Delivery> {
        let was_owner = self.owner() == Some(conn);
        let Some(user) = self.remove(conn) else {
            return Vec::new();
        };
        log::info!("{} ({}) left", user.nick, user.addr);
        let mut out = vec![self.public(now, Kind::Leave, &user.nick, "")];
        if was_owner {
            out.extend(self.announce_owner(now));
        }
        out
    }

    fn remove(&mut self, conn: ConnId) -> Option<User> {
        let user = self.users.remove(&conn)?;
        self.by_nick.remove(&nick_key(&user.nick));
        self.order.retain(|&c| c != conn);
        Some(user)
    }

    /// After the owner left: who owns the room now, if anyone is left.
    fn announce_owner(&mut self, now: SystemTime) -> Option<Delivery> {
        let heir = self.owner()?;
        let nick = self.users[&heir].nick.clone();
        log::info!("{nick} is now the room owner");
        Some(self.public(now, Kind::Owner, &nick, ""))
    }

    fn find(&self, nick: &str) -> Option<(ConnId, &str)> {
        let conn = *self.by_nick.get(&nick_key(nick))?;
        Some((conn, self.users[&conn].nick.as_str()))
    }

    fn rename(&mut self, conn: ConnId, old: &str, new: String, now: SystemTime) -> Vec<Delivery> {
        if let Err(reason) = check_nick(&new) {
            return vec![line(Target::One(conn), reason)];
        }
        if new == old {
            return vec![line(Target::One(conn), render::nick_unchanged(old))];
        }
        let key = nick_key(&new);
        // Changing only the case of one's own name is allowed.
        if self.by_nick.get(&key).is_some_and(|&holder| holder != conn) {
            return vec![line(Target::One(conn), render::nick_in_use(&new))];
        }
        self.by_nick.remove(&nick_key(old));
        self.by_nick.insert(key, conn);
        if let Some(user) = self.users.get_mut(&conn) {
            user.nick = new.clone();
        }
        log::info!("{old} is now known as {new}");
        vec![
            self.public(now, Kind::Rename, old, &new),
            to(conn, ToChild::Renamed { nick: new }),
        ]
    }

    fn kick(&mut self, conn: ConnId, me: &str, target: &str, now: SystemTime) -> Vec<Delivery> {
        let reply = |text: String| vec![line(Target::One(conn), text)];
        if self.owner() != Some(conn) {
            return reply(render::ONLY_OWNER_KICKS.to_string());
        }
        let Some((victim, _)) = self.find(target) else {
            return reply(render::user_not_found(target));
        };
        if victim == conn {
            return reply(render::CANNOT_KICK_SELF.to_string());
        }
        let Some(user) = self.remove(victim) else {
            return Vec::new();
        };
        log::info!("{} ({}) was kicked by {me}", user.nick, user.addr);
        vec![
            to(victim, ToChild::Kicked),
            self.public(now, Kind::Kick, &user.nick, me),
        ]
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
            return vec![line(
                Target::One(conn),
                render::TOO_MANY_SCHEDULED.to_string(),
            )];
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
        self.schedule_changes += 1;
        self.schedule.insert(
            at,
            Scheduled {
                due,
                seq,
                author: self.users[&conn].id,
                author_nick,
                text,
            },
        );
        let confirmation = render::schedule_confirmed(&describe_due(due, now));
        vec![line(Target::One(conn), confirmation)]
    }

    fn pending_of(&self, conn: ConnId) -> impl Iterator<Item = &Scheduled> {
        let id = self.users.get(&conn).map(|u| u.id);
        self.schedule.iter().filter(move |s| Some(s.author) == id)
    }

    fn schedule_list(&self, conn: ConnId, now: SystemTime) -> Vec<Delivery> {
        let mine: Vec<&Scheduled> = self.pending_of(conn).collect();
        if mine.is_empty() {
            return vec![line(Target::One(conn), render::NO_SCHEDULED.to_string())];
        }
        let mut out = vec![line(
            Target::One(conn),
            render::schedule_list_header(mine.len()),
        )];
        for (i, s) in mine.iter().enumerate() {
            let item = render::schedule_list_item(i + 1, &describe_due(s.due, now), &s.text);
            out.push(line(Target::One(conn), item));
        }
        out
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
        let text = match index {
            Some(i) => {
                self.schedule.remove(i);
                self.schedule_changes += 1;
                render::schedule_cancelled(number)
            }
            None => render::no_such_scheduled(number),
        };
        vec![line(Target::One(conn), text)]
    }

    /// The scheduled messages due by `now`, in due order.
    pub(crate) fn due(&mut self, now: SystemTime) -> Vec<Delivery> {
        let ready = self.schedule.partition_point(|s| s.due <= now);
        if ready == 0 {
            return Vec::new();
        }
        self.schedule_changes += 1;
        let due: Vec<Scheduled> = self.schedule.drain(..ready).collect();
        due.iter()
            .map(|s| self.public(now, Kind::Scheduled, &s.author_nick, &s.text))
            .collect()
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

    fn login(room: &mut Room, conn: ConnId, nick: &str) -> Vec<Delivery> {
        let req = ToHub::Login {
            nick: nick.into(),
            addr: "127.0.0.1:1".into(),
        };
        room.handle(conn, req, SystemTime::now())
    }

    /// The text of every line delivery, without the `[HH:MM] ` stamp.
    fn texts(out: &[Delivery]) -> Vec<(Target, String)> {
        out.iter()
            .filter_map(|d| match &d.msg {
                ToChild::Line(l) => {
                    let text = if l.starts_with('[') && l.as_bytes().get(6) == Some(&b']') {
                        l[8..].to_string()
                    } else {
                        l.clone()
                    };
                    Some((d.to, text))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn first_user_owns_and_names_are_unique_without_case() {
        let mut room = Room::new();
        let out = login(&mut room, 1, "Alice");
        assert!(
            matches!(&out[0], Delivery { to: Target::One(1), msg: ToChild::Registered { nick, .. } } if nick == "Alice"),
            "{out:?}"
        );
        assert_eq!(
            texts(&out),
            [(Target::All, "* Alice has joined the chat.".into())]
        );
        assert_eq!(room.owner(), Some(1));
        let out = login(&mut room, 2, "alice");
        assert_eq!(
            out,
            [to(
                2,
                ToChild::NickRefused {
                    reason: "Nickname \"alice\" is already in use.".into()
                }
            )]
        );
        assert_eq!(room.members(), [1]);
    }

    #[test]
    fn owner_passes_to_longest_connected() {
        let mut room = Room::new();
        for (conn, nick) in [(1, "a"), (2, "b"), (3, "c")] {
            login(&mut room, conn, nick);
        }
        let out = room.leave(1, SystemTime::now());
        assert_eq!(
            texts(&out),
            [
                (Target::All, "* a has left the chat.".into()),
                (Target::All, "* b is now the room owner.".into())
            ]
        );
        assert_eq!(room.owner(), Some(2));
        assert!(texts(&room.leave(3, SystemTime::now())).len() == 1);
    }

    #[test]
    fn kick_rules() {
        let mut room = Room::new();
        login(&mut room, 1, "own");
        login(&mut room, 2, "bob");
        let now = SystemTime::now();
        let out = room.request(2, Request::Kick("own".into()), now);
        assert_eq!(
            texts(&out),
            [(Target::One(2), render::ONLY_OWNER_KICKS.into())]
        );
        let out = room.request(1, Request::Kick("own".into()), now);
        assert_eq!(
            texts(&out),
            [(Target::One(1), render::CANNOT_KICK_SELF.into())]
        );
        let out = room.request(1, Request::Kick("zed".into()), now);
        assert_eq!(
            texts(&out),
            [(Target::One(1), "User 'zed' not found.".into())]
        );
        let out = room.request(1, Request::Kick("BOB".into()), now);
        assert_eq!(out[0], to(2, ToChild::Kicked));
        assert_eq!(
            texts(&out),
            [(Target::All, "* bob was kicked by own.".into())]
        );
        assert_eq!(room.members(), [1]);
        // The kicked user's connection closing later announces nothing more.
        assert!(room.leave(2, now).is_empty());
    }

    #[test]
    fn rename_checks_and_frees_the_old_name() {
        let mut room = Room::new();
        login(&mut room, 1, "alice");
        login(&mut room, 2, "bob");
        let now = SystemTime::now();
        let out = room.request(1, Request::Rename("BOB".into()), now);
        assert_eq!(
            texts(&out),
            [(Target::One(1), "Nickname \"BOB\" is already in use.".into())]
        );
        let out = room.request(1, Request::Rename("Alice".into()), now);
        assert_eq!(
            texts(&out),
            [(
                Target::All,
                "* User \"alice\" has changed their nickname to \"Alice\".".into()
            )]
        );
        room.request(1, Request::Rename("ally".into()), now);
        assert!(
            login(&mut room, 3, "alice")
                .iter()
                .any(|d| matches!(d.msg, ToChild::Registered { .. }))
        );
    }

    #[test]
    fn scheduled_messages_are_due_in_order_and_outlive_their_author() {
        let mut room = Room::new();
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
                (Target::All, "[Scheduled by alice] first".into()),
                (Target::All, "[Scheduled by alice] second".into())
            ]
        );
        assert_eq!(room.next_due(), None);
    }

    #[test]
    fn schedule_limit_and_cancel() {
        let mut room = Room::new();
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
            [(Target::One(1), render::TOO_MANY_SCHEDULED.into())]
        );
        let out = room.request(1, Request::ScheduleCancel(11), now);
        assert_eq!(
            texts(&out),
            [(Target::One(1), render::no_such_scheduled(11))]
        );
        let out = room.request(1, Request::ScheduleCancel(1), now);
        assert_eq!(
            texts(&out),
            [(Target::One(1), render::schedule_cancelled(1))]
        );
        let list = texts(&room.request(1, Request::ScheduleList, now));
        assert!(list[1].1.ends_with(" m1"));
    }

    fn registered_id(out: &[Delivery]) -> u64 {
        out.iter()
            .find_map(|d| match d.msg {
                ToChild::Registered { id, .. } => Some(id),
                _ => None,
            })
            .expect("registered")
    }

    fn rejoin(room: &mut Room, conn: ConnId, nick: &str, id: u64) -> Vec<Delivery> {
        let req = ToHub::Rejoin {
            nick: nick.into(),
            addr: "127.0.0.1:1".into(),
            id,
        };
        room.handle(conn, req, SystemTime::now())
    }

    #[test]
    fn users_of_an_old_hub_rejoin_silently_in_their_old_order() {
        let mut old = Room::new();
        let a = registered_id(&login(&mut old, 1, "alice"));
        let b = registered_id(&login(&mut old, 2, "bob"));
        let c = registered_id(&login(&mut old, 3, "carol"));
        assert!(a < b && b < c);
        // A new hub; the children come back in any order, on new conns.
        let mut room = Room::new();
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
        assert_eq!(room.members(), [11, 12, 10]);
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
        assert_eq!(room.members(), [11, 12, 10, 13]);
    }

    #[test]
    fn a_user_dropped_for_falling_behind_cannot_rejoin() {
        let mut room = Room::new();
        let id = registered_id(&login(&mut room, 1, "alice"));
        room.too_slow(1);
        room.leave(1, SystemTime::now());
        assert_eq!(rejoin(&mut room, 2, "alice", id), [to(2, ToChild::TooSlow)]);
        assert!(room.members().is_empty());
    }

    #[test]
    fn a_rejoin_under_a_name_taken_meanwhile_is_refused() {
        let mut room = Room::new();
        login(&mut room, 1, "alice");
        let out = rejoin(&mut room, 2, "Alice", 1);
        assert!(matches!(out[0].msg, ToChild::NickRefused { .. }), "{out:?}");
        assert_eq!(room.members(), [1]);
    }

    fn say(room: &mut Room, conn: ConnId, text: &str) -> Vec<Delivery> {
        room.request(conn, Request::Say(text.into()), SystemTime::now())
    }

    #[test]
    fn a_newcomer_gets_the_history_before_the_welcome_and_the_join() {
        let mut room = Room::new();
        room.restore_history(Vec::new(), 2);
        login(&mut room, 1, "alice");
        say(&mut room, 1, "one");
        say(&mut room, 1, "two");
        let out = login(&mut room, 2, "bob");
        assert_eq!(
            texts(&out),
            [
                (Target::One(2), "--- last 2 messages ---".to_string()),
                (Target::One(2), "alice: one".to_string()),
                (Target::One(2), "alice: two".to_string()),
                (Target::One(2), render::HISTORY_END.to_string()),
                (Target::All, "* bob has joined the chat.".to_string()),
            ]
        );
        // The welcome (Registered) comes after the replay, before the join.
        assert!(matches!(out[4].msg, ToChild::Registered { .. }), "{out:?}");
    }

    #[test]
    fn public_lines_are_handed_to_the_writer_once_and_whispers_never() {
        let mut room = Room::new();
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
        let mut room = Room::new();
        let old: Vec<Entry> = (0..250)
            .map(|i| Entry::new(SystemTime::now(), Kind::Chat, "bob", &i.to_string()))
            .collect();
        room.restore_history(old, 500);
        login(&mut room, 1, "alice");
        let out = room.request(1, Request::History(200), SystemTime::now());
        let lines = texts(&out);
        assert_eq!(lines.len(), 202);
        assert_eq!(lines[0].1, "--- last 200 messages ---");
        // 250 restored and alice's join: the oldest 51 are gone.
        assert_eq!(lines[1].1, "bob: 51");
        assert_eq!(lines[200].1, "* alice has joined the chat.");
    }
}
