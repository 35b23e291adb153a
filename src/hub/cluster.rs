//! The hub's link to the other servers of a cluster, through Redis
//! (`--cluster redis://HOST:PORT[/DB]`).
//!
//! Each room's public lines go through one Redis Stream,
//! `mpchat:room:<room>`: a server adds its users' lines there (`XADD`,
//! trimmed to about [`STREAM_MAXLEN`] entries) and every server, the
//! writer's included, delivers a room's lines as it reads them back, so
//! every user on every server sees them in the stream's one order. The
//! stream `mpchat:rooms` announces each room a server writes to, so the
//! others start reading it.
//!
//! Only the hub talks to Redis, and never from its event loop: two
//! threads the hub starts after its fork own a connection each, opened
//! there (the parent never opens one, so no child inherits it). The writer
//! takes lines from a channel and adds them; the reader waits in `XREAD
//! BLOCK` on every room's stream and hands what arrives back through a
//! channel, waking the hub with a byte on a pipe in its epoll set. The
//! synchronous client on threads, rather than Redis's socket in the hub's
//! epoll: `XREAD BLOCK` is a blocking call by design, the crate's
//! synchronous connection is its plainest, and the hub's loop stays what
//! it was, sharing only two channels with the threads.
//!
//! When Redis cannot be reached, each thread says so and tries again with
//! back-off; the hub then delivers its users' lines itself (and lines the
//! writer could not add come back to it for that). The reader keeps the
//! last id it read of each stream, so when Redis is back it catches up
//! with what the other servers wrote meanwhile, in order, once.
//!
//! Each line is added under the next value of one counter, [`NUMBER`],
//! as its stream id, so every server numbers it alike (its `seq`).
//!
//! The writer also keeps nicknames unique across the servers: a login
//! takes the name's lease, `mpchat:nick:<name>`, which holds the server's
//! name for [`NICK_LEASE`] (a script takes it only if it is free or this
//! server's already, in one step), the hub renews its users' leases, and
//! gives a name back when its user leaves. Every [`PRESENCE_EVERY`] it
//! says the server is there (`mpchat:servers`), publishes the server's
//! roster if it changed and fetches the others' that did (see
//! `room::cluster`). A request about another server's user (a whisper, a
//! kick) goes to that server's inbox stream, which its reader reads with
//! the rooms'.
//!
//! May use: `room`, `protocol`; nothing else of the hub.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

use nix::fcntl::OFlag;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{Connection, RedisResult};

use crate::protocol::command::room_key;
use crate::room::{Kind, Outgoing, Relay};

/// About this many lines are kept in each room's stream (`MAXLEN ~`):
/// what a server that was cut off for a while can still catch up with.
/// At a busy room's 100 lines a second, over three minutes.
pub(crate) const STREAM_MAXLEN: usize = 20_000;
const ROOMS: &str = "mpchat:rooms";
const ROOMS_MAXLEN: usize = 10_000;
/// A server's inbox, `mpchat:inbox:<server>`: the whispers, kicks and
/// removals of its users that other servers' users asked for.
const INBOX_MAXLEN: usize = 10_000;
/// A random mark the first server to reach a Redis leaves in it. A reader
/// that finds another mark after a reconnect knows Redis lost its data
/// (restarted without saving it, or replaced): the streams it was reading
/// began again, so it reads them all from their start, and everything in
/// them is new to it. Without that, a new stream whose ids fell below
/// the old positions (another Redis host's clock) would go unread.
const EPOCH: &str = "mpchat:epoch";
/// Lines the writer sends in one round trip at most.
const BATCH_MAX: usize = 256;
/// The reader's `XREAD BLOCK`: how long it waits before it looks again
/// (it also wakes at once for a new room's announcement).
const BLOCK_MS: usize = 1000;
/// A connection attempt, or a reply, that takes longer has failed.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

fn stream_key(room_key: &str) -> String {
    format!("mpchat:room:{room_key}")
}

fn inbox_key(server: &str) -> String {
    format!("mpchat:inbox:{server}")
}

/// A server's roster (see `room::cluster`): its users and their rooms.
fn roster_key(server: &str) -> String {
    format!("mpchat:roster:{server}")
}

/// `--cluster`, `--server-name` and `--cluster-password-file`.
#[derive(Clone)]
pub struct Options {
    /// May hold a password: never logged.
    pub url: String,
    pub server: String,
    /// From the file: replaces the URL's.
    pub password: Option<String>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// What the hub asks of the writer.
#[derive(Debug)]
enum ToWriter {
    Line(Outgoing),
    Lease {
        conn: u64,
        key: String,
    },
    Renew(Vec<String>),
    Release(Vec<String>),
    Present {
        users: usize,
        /// The roster, when it changed.
        roster: Option<String>,
    },
    Relay(String, Relay),
}

/// Another server, as its presence says.
#[derive(Debug)]
pub(crate) struct Other {
    pub name: String,
    pub users: usize,
    /// Its roster, when it published a new one since the last time.
    pub roster: Option<String>,
}

/// What the threads tell the hub.
#[derive(Debug)]
pub(crate) enum FromCluster {
    /// A room's line as read back from its stream.
    Line(Outgoing),
    /// The writer could not add these: the hub delivers them itself.
    Undelivered(Outgoing),
    /// One side's connection is up (`reader`: the reader's) or down.
    Link { reader: bool, up: bool },
    /// The answer to [`Cluster::lease`]: false if another server's user
    /// holds the nickname. Without Redis, every lease is granted.
    Lease { conn: u64, granted: bool },
    /// The other servers heard from lately.
    Servers(Vec<Other>),
    /// Another server's user's request about one of this server's.
    Relayed(Relay),
}

/// The hub's end of the link.
pub(crate) struct Cluster {
    to_writer: Sender<ToWriter>,
    from_threads: Receiver<FromCluster>,
    wake: OwnedFd,
}

impl Cluster {
    /// Starts the two threads; they connect on their own, and say when
    /// they are up.
    /// `highest` is the highest line number the hub's history holds.
    pub(crate) fn start(opts: &Options, highest: u64) -> io::Result<Cluster> {
        let invalid = |e| io::Error::new(io::ErrorKind::InvalidInput, format!("--cluster: {e}"));
        let mut info =
            redis::IntoConnectionInfo::into_connection_info(opts.url.as_str()).map_err(invalid)?;
        if let Some(password) = &opts.password {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let server = opts.server.as_str();
        let client = redis::Client::open(info).map_err(invalid)?;
        let (wake, waker) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let (to_hub, from_threads) = mpsc::channel();
        let (to_writer, from_hub) = mpsc::channel();
        let writer = Writer {
            client: client.clone(),
            server: server.to_string(),
            tell: Teller {
                tx: to_hub.clone(),
                waker: waker.try_clone()?,
            },
            announced: HashSet::new(),
            rosters: BTreeMap::new(),
            version: "0 0".to_string(),
        };
        let reader = Reader {
            client,
            inbox: inbox_key(server),
            tell: Teller { tx: to_hub, waker },
            last: BTreeMap::new(),
            started: false,
            epoch: None,
            highest,
        };
        thread::Builder::new()
            .name("cluster-writer".into())
            .spawn(move || writer.run(&from_hub))?;
        thread::Builder::new()
            .name("cluster-reader".into())
            .spawn(move || reader.run())?;
        Ok(Cluster {
            to_writer,
            from_threads,
            wake,
        })
    }

    /// The fd the hub's epoll watches: readable when there is news.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Hands a line to the writer; gives it back if the writer is gone.
    pub(crate) fn publish(&self, line: Outgoing) -> Option<Outgoing> {
        match self.to_writer.send(ToWriter::Line(line)) {
            Ok(()) => None,
            Err(mpsc::SendError(ToWriter::Line(line))) => Some(line),
            Err(_) => None,
        }
    }

    /// Asks for the lease of a nickname (its folded key) for a login on
    /// connection `conn`; the answer comes as [`FromCluster::Lease`]. False
    /// if the writer is gone.
    pub(crate) fn lease(&self, conn: u64, key: String) -> bool {
        self.to_writer.send(ToWriter::Lease { conn, key }).is_ok()
    }

    /// Renews the leases of this server's users' nicknames.
    pub(crate) fn renew(&self, keys: Vec<String>) {
        let _ = self.to_writer.send(ToWriter::Renew(keys));
    }

    /// Says this server is there with `users` users, and publishes its
    /// roster if it changed; the others come back as
    /// [`FromCluster::Servers`].
    pub(crate) fn present(&self, users: usize, roster: Option<String>) {
        let _ = self.to_writer.send(ToWriter::Present { users, roster });
    }

    /// Hands a request about another server's user to that server.
    pub(crate) fn relay(&self, server: String, relay: Relay) {
        let _ = self.to_writer.send(ToWriter::Relay(server, relay));
    }

    /// Gives up the leases of nicknames no longer in use here.
    pub(crate) fn release(&self, keys: Vec<String>) {
        let _ = self.to_writer.send(ToWriter::Release(keys));
    }

    /// Everything the threads have said since the last call.
    pub(crate) fn take(&self) -> Vec<FromCluster> {
        let mut buf = [0u8; 256];
        while matches!(nix::unistd::read(&self.wake, &mut buf), Ok(n) if n > 0) {}
        self.from_threads.try_iter().collect()
    }
}

/// A thread's way to tell the hub something: the channel, then a byte on
/// the pipe the hub's epoll watches.
struct Teller {
    tx: Sender<FromCluster>,
    waker: OwnedFd,
}

impl Teller {
    /// False once the hub is gone.
    fn tell(&self, what: FromCluster) -> bool {
        if self.tx.send(what).is_err() {
            return false;
        }
        // A full pipe wakes the hub already.
        let _ = nix::unistd::write(&self.waker, b"x");
        true
    }
}

fn connect(client: &redis::Client) -> RedisResult<Connection> {
    let con = client.get_connection_with_timeout(IO_TIMEOUT)?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    // Above the reader's BLOCK, so a blocked read is not taken for a
    // dead server.
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

/// Waits between attempts to reach Redis: doubling, up to [`RETRY_MAX`].
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(RETRY_FIRST)
    }

    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(RETRY_MAX);
        wait
    }
}

struct Writer {
    client: redis::Client,
    server: String,
    tell: Teller,
    /// Rooms announced on `mpchat:rooms` over the current connection (a
    /// Redis that lost its data has forgotten them).
    announced: HashSet<String>,
    /// The roster version of each other server fetched last.
    rosters: BTreeMap<String, String>,
    /// This server's roster version last published.
    version: String,
}

impl Writer {
    fn run(mut self, asks: &Receiver<ToWriter>) {
        let mut con: Option<Connection> = None;
        // A request taken from the channel behind a batch of lines.
        let mut held: Option<ToWriter> = None;
        let mut backoff = Backoff::new();
        let mut retry_at = std::time::Instant::now();
        loop {
            if con.is_none() && std::time::Instant::now() >= retry_at {
                match connect(&self.client) {
                    Ok(c) => {
                        log::info!("cluster: writing to Redis");
                        con = Some(c);
                        backoff = Backoff::new();
                        self.announced.clear();
                        self.rosters.clear();
                        if !self.tell.tell(FromCluster::Link {
                            reader: false,
                            up: true,
                        }) {
                            return;
                        }
                    }
                    Err(e) => {
                        log::debug!("cluster: cannot reach Redis to write: {e}");
                        retry_at = std::time::Instant::now() + backoff.next();
                    }
                }
            }
            let failed = match asks.recv_timeout(Duration::from_millis(500)) {
                Ok(ToWriter::Line(line)) => {
                    // The lines queued behind it go in the same round
                    // trip; anything else waits for its turn.
                    let mut batch = vec![line];
                    while batch.len() < BATCH_MAX {
                        match asks.try_recv() {
                            Ok(ToWriter::Line(line)) => batch.push(line),
                            Ok(other) => {
                                held = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.add_lines(&mut con, batch)
                }
                Ok(ask) => self.nick_ask(&mut con, ask),
                // Idle: make sure the link is still there, so the hub
                // knows before its users' next line.
                Err(RecvTimeoutError::Timeout) => con
                    .as_mut()
                    .and_then(|c| redis::cmd("PING").query::<String>(c).err())
                    .map(|e| (e, Vec::new())),
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let failed = match (failed, held.take()) {
                (None, Some(ask)) => self.nick_ask(&mut con, ask),
                (failed, Some(ask)) => {
                    let _ = self.nick_ask(&mut None, ask);
                    failed
                }
                (failed, None) => failed,
            };
            if let Some((e, batch)) = failed {
                log::warn!("cluster: Redis write failed: {e}");
                con = None;
                retry_at = std::time::Instant::now() + backoff.next();
                let told = self.tell.tell(FromCluster::Link {
                    reader: false,
                    up: false,
                }) && batch
                    .into_iter()
                    .all(|l| self.tell.tell(FromCluster::Undelivered(l)));
                if !told {
                    return;
                }
            }
        }
    }

    /// Adds a batch of lines; on failure, the error and the lines.
    fn add_lines(
        &mut self,
        con: &mut Option<Connection>,
        batch: Vec<Outgoing>,
    ) -> Option<(redis::RedisError, Vec<Outgoing>)> {
        match con.as_mut().map(|c| self.add(c, &batch)) {
            Some(Ok(())) => None,
            // A connection that went stale (Redis restarted since the
            // last PING) gets one fresh try before the lines are given up
            // to this server alone.
            Some(Err(_)) => match self.add_afresh(&batch) {
                Ok(fresh) => {
                    *con = Some(fresh);
                    None
                }
                Err(e) => Some((e, batch)),
            },
            None => {
                for line in batch {
                    self.tell.tell(FromCluster::Undelivered(line));
                }
                None
            }
        }
    }

    /// A nickname lease asked for, renewed or given up. Without Redis a
    /// lease is granted: each server is alone then, and its own rules
    /// keep its nicknames apart.
    fn nick_ask(
        &mut self,
        con: &mut Option<Connection>,
        ask: ToWriter,
    ) -> Option<(redis::RedisError, Vec<Outgoing>)> {
        let mut result = self.carry_out(con.as_mut(), &ask);
        // A connection gone stale (Redis restarted since the last PING)
        // gets one fresh try, as lines do.
        if result.is_err() && con.is_some() {
            result = self.fresh_connection().and_then(|mut fresh| {
                let done = self.carry_out(Some(&mut fresh), &ask)?;
                *con = Some(fresh);
                Ok(done)
            });
        }
        let (granted, failed) = match result {
            Ok(granted) => (granted.unwrap_or(true), None),
            Err(e) => (true, Some((e, Vec::new()))),
        };
        if let ToWriter::Lease { conn, .. } = ask {
            self.tell.tell(FromCluster::Lease { conn, granted });
        }
        failed
    }

    /// A new connection, on which nothing is taken as known.
    fn fresh_connection(&mut self) -> RedisResult<Connection> {
        let con = connect(&self.client)?;
        self.announced.clear();
        self.rosters.clear();
        Ok(con)
    }

    /// Carries out one request; `Some(granted)` for a lease.
    fn carry_out(
        &mut self,
        con: Option<&mut Connection>,
        ask: &ToWriter,
    ) -> RedisResult<Option<bool>> {
        match (ask, con) {
            (ToWriter::Lease { key, .. }, Some(c)) => acquire(c, key, &self.server).map(Some),
            (ToWriter::Renew(keys), Some(c)) => renew(c, keys, &self.server).map(|()| None),
            (ToWriter::Present { users, roster }, Some(c)) => {
                self.present(c, *users, roster.as_deref()).map(|others| {
                    self.tell.tell(FromCluster::Servers(others));
                    None
                })
            }
            (ToWriter::Relay(server, relay), Some(c)) => add_relay(c, server, relay).map(|()| None),
            (ToWriter::Release(keys), Some(c)) => release(c, keys, &self.server).map(|()| None),
            (_, _) => Ok(Some(true)),
        }
    }

    /// Publishes the roster if it changed, says this server is there, and
    /// returns the others, with the rosters of those that published a
    /// new one since this writer last looked.
    fn present(
        &mut self,
        con: &mut Connection,
        users: usize,
        roster: Option<&str>,
    ) -> RedisResult<Vec<Other>> {
        if let Some(roster) = roster {
            let _: () = redis::cmd("SET")
                .arg(roster_key(&self.server))
                .arg(roster)
                .query(con)?;
            self.version = roster.lines().next().unwrap_or_default().to_string();
        }
        let mut others = Vec::new();
        for (name, users, version) in present(con, &self.server, users, &self.version)? {
            let roster = match self.rosters.get(&name) {
                Some(seen) if *seen == version => None,
                _ => {
                    let text: Option<String> =
                        redis::cmd("GET").arg(roster_key(&name)).query(con)?;
                    self.rosters.insert(name.clone(), version);
                    text
                }
            };
            others.push(Other {
                name,
                users,
                roster,
            });
        }
        self.rosters
            .retain(|name, _| others.iter().any(|o| o.name == *name));
        Ok(others)
    }

    /// Adds `lines` over a new connection, which it returns.
    fn add_afresh(&mut self, lines: &[Outgoing]) -> RedisResult<Connection> {
        let mut con = self.fresh_connection()?;
        self.add(&mut con, lines)?;
        Ok(con)
    }

    /// Adds lines to their rooms' streams in one round trip (a pipeline,
    /// in order), announcing each room first that this connection has not.
    fn add(&mut self, con: &mut Connection, lines: &[Outgoing]) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        let mut announcing = Vec::new();
        for line in lines {
            let announce = !self.announced.contains(&line.key) && !announcing.contains(&&line.key);
            if announce {
                announcing.push(&line.key);
            }
            let (run, n) = line.stamp;
            pipe.cmd("EVAL")
                .arg(ADD)
                .arg(3)
                .arg(stream_key(&line.key))
                .arg(ROOMS)
                .arg(NUMBER)
                .arg(u8::from(announce))
                .arg(&line.key)
                .arg(STREAM_MAXLEN)
                .arg(ROOMS_MAXLEN)
                .arg("k")
                .arg(line.kind.name())
                .arg("r")
                .arg(&line.room)
                .arg("n")
                .arg(&line.nick)
                .arg("t")
                .arg(&line.text)
                .arg("s")
                .arg(&self.server)
                .arg("b")
                .arg(u8::from(line.bot))
                .arg("a")
                .arg(line.also.join(" "))
                .arg("v")
                .arg(format!("{run} {n}"))
                .ignore();
        }
        pipe.query::<()>(con)?;
        self.announced.extend(announcing.into_iter().cloned());
        Ok(())
    }
}

/// The cluster's line counter: each line's stream id is `N-1` for the
/// next N, so ids grow across all the rooms' streams together, and N is
/// the line's number on every server (its `seq`, see
/// `room::SEQ_PER_LINE`), the position a JSON client resumes from on any
/// of them.
const NUMBER: &str = "mpchat:number";

/// Adds one line (KEYS[1] its room's stream) under the next number
/// (KEYS[3]), announcing the room first on KEYS[2] if ARGV[1] is 1 (as
/// `N-0`, so a reader that learns of the room from it reads the line).
/// A counter behind a stream's last id (deleted by hand, or a Redis that
/// kept some keys and not others) is moved past it: ids must grow.
const ADD: &str = "local n = redis.call('INCR', KEYS[3]) \
local function past(key) \
local top = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1) \
if top[1] then local t = tonumber(string.match(top[1][1], '^(%d+)')) \
if t >= n then n = t + 1 redis.call('SET', KEYS[3], n) end end end \
past(KEYS[1]) \
if ARGV[1] == '1' then past(KEYS[2]) \
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], n .. '-0', 'room', ARGV[2]) end \
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], n .. '-1', unpack(ARGV, 5)) \
return n";

/// Raises the counter to at least ARGV[1]: a Redis that lost its data
/// would number lines from 1 again, below the numbers clients hold.
const RAISE: &str = "if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then \
redis.call('SET', KEYS[1], ARGV[1]) end return 0";

/// How long a nickname's lease lasts unless renewed: the time after
/// which a server that died without a word frees its users' nicknames.
pub(crate) const NICK_LEASE: Duration = Duration::from_secs(30);
/// How often a server says it is there (`mpchat:servers`); one not heard
/// from within a lease is taken for gone.
pub(crate) const PRESENCE_EVERY: Duration = Duration::from_secs(2);

fn nick_key(key: &str) -> String {
    format!("mpchat:nick:{key}")
}

/// Takes the lease if it is free or already this server's; in one step,
/// so of two servers asking at once exactly one gets it.
const ACQUIRE: &str = "local v = redis.call('GET', KEYS[1]) \
if v == false or v == ARGV[1] then \
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end return 0";
/// Deletes the lease only if it is this server's.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
return redis.call('DEL', KEYS[1]) end return 0";

fn lease_cmd(script: &str, key: &str, server: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script)
        .arg(1)
        .arg(nick_key(key))
        .arg(server)
        .arg(NICK_LEASE.as_millis() as u64);
    cmd
}

fn acquire(con: &mut Connection, key: &str, server: &str) -> RedisResult<bool> {
    let got: i64 = lease_cmd(ACQUIRE, key, server).query(con)?;
    Ok(got == 1)
}

/// Renews the leases of `keys`; one held by another server (after Redis
/// lost its data, two servers may have given the same name) is logged.
fn renew(con: &mut Connection, keys: &[String], server: &str) -> RedisResult<()> {
    // An empty pipeline is an error to the client.
    if keys.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.add_command(lease_cmd(ACQUIRE, key, server));
    }
    let got: Vec<i64> = pipe.query(con)?;
    for (key, got) in keys.iter().zip(got) {
        if got != 1 {
            log::warn!("cluster: the nickname {key} is held by another server too");
        }
    }
    Ok(())
}

/// Says in `mpchat:servers` that this server is there with `users` users
/// and its roster's version (stamped with Redis's clock, the one all
/// servers share), and returns the others heard from within a lease; the
/// ones not heard from for longer are taken out, with their rosters.
const PRESENT: &str = "local t = redis.call('TIME') \
local now = t[1] * 1000 + math.floor(t[2] / 1000) \
redis.call('HSET', KEYS[1], ARGV[1], now .. ' ' .. ARGV[2] .. ' ' .. ARGV[4]) \
local all = redis.call('HGETALL', KEYS[1]) local out = {} \
for i = 1, #all, 2 do \
local at, users, version = string.match(all[i + 1], '^(%d+) (%d+) (.*)$') \
if at and now - tonumber(at) <= tonumber(ARGV[3]) then \
if all[i] ~= ARGV[1] then \
table.insert(out, all[i]) table.insert(out, users) table.insert(out, version) end \
else redis.call('HDEL', KEYS[1], all[i]) redis.call('DEL', 'mpchat:roster:' .. all[i]) end \
end return out";

/// The other servers present: name, users, roster version.
fn present(
    con: &mut Connection,
    server: &str,
    users: usize,
    version: &str,
) -> RedisResult<Vec<(String, usize, String)>> {
    let flat: Vec<String> = redis::cmd("EVAL")
        .arg(PRESENT)
        .arg(1)
        .arg("mpchat:servers")
        .arg(server)
        .arg(users)
        .arg(NICK_LEASE.as_millis() as u64)
        .arg(version)
        .query(con)?;
    let mut others: Vec<(String, usize, String)> = flat
        .chunks(3)
        .filter_map(|three| match three {
            [name, users, version] => Some((name.clone(), users.parse().ok()?, version.clone())),
            _ => None,
        })
        .collect();
    others.sort();
    Ok(others)
}

/// Adds a request to another server's inbox.
fn add_relay(con: &mut Connection, server: &str, relay: &Relay) -> RedisResult<()> {
    let (kind, fields): (&str, [(&str, &str); 3]) = match relay {
        Relay::Whisper { from, to, text } => ("whisper", [("f", from), ("to", to), ("x", text)]),
        Relay::Kick { target, by } => ("kick", [("f", by), ("to", target), ("x", "")]),
        Relay::Remove { target, room, by } => ("remove", [("f", by), ("to", target), ("x", room)]),
        Relay::TakeOver { nick, device } => ("takeover", [("f", device), ("to", nick), ("x", "")]),
    };
    let mut cmd = redis::cmd("XADD");
    cmd.arg(inbox_key(server))
        .arg("MAXLEN")
        .arg("~")
        .arg(INBOX_MAXLEN)
        .arg("*")
        .arg("k")
        .arg(kind);
    for (name, value) in fields {
        cmd.arg(name).arg(value);
    }
    cmd.query::<()>(con)
}

/// An inbox's entry; `None` for one that is not a request.
fn parse_relay(entry: &StreamId) -> Option<Relay> {
    let field = |name: &str| entry.get::<String>(name);
    let (from, to, x) = (field("f")?, field("to")?, field("x")?);
    match field("k")?.as_str() {
        "whisper" => Some(Relay::Whisper { from, to, text: x }),
        "kick" => Some(Relay::Kick {
            target: to,
            by: from,
        }),
        "takeover" => Some(Relay::TakeOver {
            nick: to,
            device: from,
        }),
        "remove" => Some(Relay::Remove {
            target: to,
            room: x,
            by: from,
        }),
        _ => None,
    }
}

fn release(con: &mut Connection, keys: &[String], server: &str) -> RedisResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.add_command(lease_cmd(RELEASE, key, server)).ignore();
    }
    pipe.query::<()>(con)
}

struct Reader {
    client: redis::Client,
    /// This server's inbox's key.
    inbox: String,
    tell: Teller,
    /// The last id read of each stream (the rooms' and `mpchat:rooms`).
    last: BTreeMap<String, String>,
    /// The positions were taken once: after that, a new connection goes
    /// on from them, catching up.
    started: bool,
    /// The mark of the Redis data this reader knows (see [`EPOCH`]).
    epoch: Option<String>,
    /// The highest line number this server knows of (see [`NUMBER`]).
    highest: u64,
}

impl Reader {
    fn run(mut self) {
        let mut backoff = Backoff::new();
        // Failures in a row: the first is logged as a warning, the rest
        // (one every few seconds while Redis is away) only at debug.
        let mut failures = 0u64;
        loop {
            let result = connect(&self.client).and_then(|mut con| {
                self.check_epoch(&mut con)?;
                if !self.started {
                    self.start_positions(&mut con)?;
                    self.started = true;
                }
                log::info!(
                    "cluster: reading from Redis ({} rooms)",
                    self.last.len() - 2
                );
                backoff = Backoff::new();
                failures = 0;
                if !self.tell.tell(FromCluster::Link {
                    reader: true,
                    up: true,
                }) {
                    return Ok(false);
                }
                loop {
                    if !self.read(&mut con)? {
                        return Ok(false);
                    }
                }
            });
            match result {
                Ok(_) => return,
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        log::warn!("cluster: cannot read from Redis: {e}; trying again");
                    } else {
                        log::debug!(
                            "cluster: still cannot read from Redis ({failures} tries): {e}"
                        );
                    }
                    if !self.tell.tell(FromCluster::Link {
                        reader: true,
                        up: false,
                    }) {
                        return;
                    }
                    thread::sleep(backoff.next());
                }
            }
        }
    }

    /// Notices a Redis that lost its data since the last connection.
    fn check_epoch(&mut self, con: &mut Connection) -> RedisResult<()> {
        let mut mark = [0u8; 16];
        getrandom::fill(&mut mark).map_err(|e| {
            redis::RedisError::from(io::Error::other(format!(
                "no random bytes from the OS: {e}"
            )))
        })?;
        let _: Option<String> = redis::cmd("SET")
            .arg(EPOCH)
            .arg(hex::encode(mark))
            .arg("NX")
            .query(con)?;
        let now: String = redis::cmd("GET").arg(EPOCH).query(con)?;
        if let Some(known) = &self.epoch
            && *known != now
        {
            log::warn!(
                "cluster: Redis lost its data (restarted without it, or replaced): reading every stream from its start"
            );
            for id in self.last.values_mut() {
                *id = "0-0".to_string();
            }
        }
        self.epoch = Some(now);
        let _: i64 = redis::cmd("EVAL")
            .arg(RAISE)
            .arg(1)
            .arg(NUMBER)
            .arg(self.highest)
            .query(con)?;
        Ok(())
    }

    /// Where reading starts: after what is in the streams now. The rooms
    /// already announced are read from their last entry on.
    fn start_positions(&mut self, con: &mut Connection) -> RedisResult<()> {
        let rooms: StreamRangeReply = redis::cmd("XRANGE")
            .arg(ROOMS)
            .arg("-")
            .arg("+")
            .query(con)?;
        self.last.insert(
            ROOMS.to_string(),
            rooms.ids.last().map_or("0-0".to_string(), |e| e.id.clone()),
        );
        for entry in &rooms.ids {
            let Some(room) = entry.get::<String>("room") else {
                continue;
            };
            let key = stream_key(&room);
            if self.last.contains_key(&key) {
                continue;
            }
            let id = newest_id(con, &key)?;
            self.last.insert(key, id);
        }
        // Requests sent to a server before it was there are not for it.
        let id = newest_id(con, &self.inbox)?;
        self.last.insert(self.inbox.clone(), id);
        Ok(())
    }

    /// One `XREAD` of every stream; false once the hub is gone.
    fn read(&mut self, con: &mut Connection) -> RedisResult<bool> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(500)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS");
        for key in self.last.keys() {
            cmd.arg(key);
        }
        for id in self.last.values() {
            cmd.arg(id);
        }
        let reply: Option<StreamReadReply> = cmd.query(con)?;
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(last) = stream.ids.last().map(|e| e.id.clone()) else {
                continue;
            };
            if stream.key == ROOMS {
                for entry in &stream.ids {
                    self.learn_room(entry);
                }
            } else if stream.key == self.inbox {
                for entry in &stream.ids {
                    if let Some(relay) = parse_relay(entry)
                        && !self.tell.tell(FromCluster::Relayed(relay))
                    {
                        return Ok(false);
                    }
                }
            } else {
                for entry in &stream.ids {
                    let Some(line) = parse_line(entry) else {
                        continue;
                    };
                    self.highest = self.highest.max(line.number);
                    if !self.tell.tell(FromCluster::Line(line)) {
                        return Ok(false);
                    }
                }
            }
            self.last.insert(stream.key, last);
        }
        Ok(true)
    }

    /// A room announced on `mpchat:rooms`: read from the announcement
    /// on (its id is `N-0`, the room's first line's `N-1`).
    fn learn_room(&mut self, entry: &StreamId) {
        let Some(room) = entry.get::<String>("room") else {
            return;
        };
        let key = stream_key(&room);
        self.last.entry(key).or_insert_with(|| entry.id.clone());
    }
}

/// The id of a stream's last entry (`0-0` if it has none).
fn newest_id(con: &mut Connection, key: &str) -> RedisResult<String> {
    let newest: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(con)?;
    Ok(newest
        .ids
        .first()
        .map_or("0-0".to_string(), |e| e.id.clone()))
}

/// A room stream's entry; `None` for one that is not a line.
fn parse_line(entry: &StreamId) -> Option<Outgoing> {
    let field = |name: &str| entry.get::<String>(name);
    let kind = Kind::from_name(&field("k")?)?;
    let room = field("r")?;
    let stamp = field("v").unwrap_or_default();
    let mut stamp = stamp.split(' ').map(|n| n.parse().unwrap_or(0));
    Some(Outgoing {
        key: room_key(&room),
        room,
        kind,
        nick: field("n")?,
        text: field("t")?,
        bot: field("b").is_some_and(|b| b == "1"),
        also: (field("a").unwrap_or_default().split(' '))
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect(),
        server: field("s").unwrap_or_default(),
        stamp: (stamp.next().unwrap_or(0), stamp.next().unwrap_or(0)),
        number: entry
            .id
            .split('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    })
}
