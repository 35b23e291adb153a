//! The command line: flags, presets, and the checks that turn them into one
//! validated [`Plan`] the rest of the program can trust.

use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::rooms::Rooms;
use crate::targets::Spread;

/// Largest number of expected deliveries one run may track. Every delivery
/// has one bit (to tell duplicates from reordering), so this caps that
/// bookkeeping at 128 MiB.
const MAX_DELIVERIES: u64 = 1 << 30;
/// Longest nickname the line protocol allows (mpchat: 1 to 16 characters).
const LINE_NICK_MAX: usize = 16;
/// mpchat cuts lines at 512 bytes; IRC allows 512 bytes per line including
/// the command, the channel and the sender prefix the server adds.
const LINE_SIZE_MAX: usize = 500;
const IRC_SIZE_MAX: usize = 400;
/// Source addresses run from 127.0.1.1 through 127.255.255.254 at most.
const MAX_SOURCES: u32 = 254 * 65_000;
/// The IRC channel without --rooms.
const DEFAULT_CHANNEL: &str = "#bench";

/// Drives many clients against a chat server (mpchat's line protocol or
/// IRC) or an echo server, counts every delivery, and reports throughput,
/// latency, loss, ordering, CPU and memory.
///
/// Only loopback targets are allowed unless --allow-remote is given. Exit
/// status is 0 when everything expected arrived, 1 on loss, failure or
/// timeout, 2 on a usage error.
#[derive(Debug, Parser)]
#[command(name = "mpchat-bench", version, about)]
pub struct Cli {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = TestKind::Fanout)]
    pub test: TestKind,
    /// Protocol the clients speak.
    #[arg(long, value_enum, default_value_t = ProtoKind::Line)]
    pub proto: ProtoKind,
    /// Client count, senders, messages and timeout in one word (quick 30,
    /// medium 100, strong 500, extreme 1000, mega 5000, ultra 10000 clients;
    /// default quick). Explicit flags override it.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,

    /// Start the server with this command (split on whitespace) in its own
    /// process group, read "listening on HOST:PORT" from its stderr (or
    /// stdout), and kill the group at exit. It inherits the raised
    /// RLIMIT_NOFILE. Given several times, several servers (the servers of
    /// one cluster): client i connects to the (i mod T)-th, so the clients
    /// and the senders are spread round-robin over them, and the server CPU
    /// is that of all their trees.
    #[arg(long, value_name = "CMD", conflicts_with_all = ["addr", "server_pid"])]
    pub spawn: Vec<String>,
    /// Address of a running server. Several (the flag repeated, or a comma
    /// list) spread the clients over them as several --spawn do.
    #[arg(
        long,
        value_name = "HOST:PORT",
        value_delimiter = ',',
        required_unless_present = "spawn"
    )]
    pub addr: Vec<String>,
    /// Pid of the running server, for its CPU and memory (needed by
    /// --test memory). With several --addr, one per server (repeated or a
    /// comma list), in the same order: the CPU and memory are their trees'
    /// sum.
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pub server_pid: Vec<i32>,
    /// Another process whose CPU (its tree's) is measured with the
    /// server's but reported on its own line, under NAME: the Redis of a
    /// cluster, as `--extra-pid redis=PID`. Repeatable.
    #[arg(long, value_name = "NAME=PID", value_parser = parse_extra_pid)]
    pub extra_pid: Vec<(String, i32)>,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    pub allow_remote: bool,

    /// Clients to connect and register.
    #[arg(long, value_name = "N")]
    pub clients: Option<usize>,
    /// Clients among them that send (fanout, memory --burst).
    #[arg(long, value_name = "S")]
    pub senders: Option<usize>,
    /// Spread the clients over N rooms (fanout, memory), #r0 to #r{N-1}: client
    /// i is in room i % N (line protocol: it sends "/join #rK" after login and
    /// waits for its own "* NICK has joined #rK." line; IRC: it joins #rK
    /// instead of --channel). Traffic starts once every client is in. The
    /// senders are clients 0 to S-1, so they are spread the same way: when N
    /// does not divide S, the first S % N rooms get one sender more (and with
    /// fewer senders than rooms some rooms only listen). Each sender talks in
    /// its own room; every member of a room must get every line of that room's
    /// senders, and a line of another room's sender is counted as an error. 1
    /// (the default) is the one room of the server, with no /join sent.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub rooms: usize,
    /// Messages each sender sends.
    #[arg(long, value_name = "M", conflicts_with = "duration")]
    pub messages: Option<u32>,
    /// Total messages per second over all senders; 0 is full speed.
    #[arg(long, value_name = "R", default_value_t = 0)]
    pub rate: u64,
    /// With --rate, send for this long instead of a message count.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Give up after this long (whole run, from the first connect); what
    /// arrived by then is reported and the exit status is 1.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Bytes of message text (at least the "B sender seq time" header).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub size: usize,
    /// A sender sends message k only once message k-W has come back (to
    /// itself, or for IRC to the next client). 0 is no window: each sender
    /// writes as fast as its socket takes the bytes, as a paste or a bot
    /// does, keeping its send buffer full until all its messages are
    /// written, and never waits for its messages to come back (all clients
    /// still read everything). With --rate, a sender keeps to the rate
    /// whatever has come back.
    #[arg(long, value_name = "W", default_value_t = 64)]
    pub window: u32,

    /// Only connect and register the clients, hold them, report connect time.
    #[arg(long)]
    pub connect_only: bool,
    /// Seconds to hold the clients with --connect-only.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub hold: f64,
    /// Connect test: connect/register/reply/close cycles.
    #[arg(long, value_name = "C", default_value_t = 1000)]
    pub cycles: u64,
    /// Connections being set up at once (connect test: cycles in flight).
    /// Keep it under the server's listen backlog (ngircd: 10): beyond it
    /// the kernel drops SYNs, which are retried only after a second.
    #[arg(long, value_name = "P", default_value_t = 32)]
    pub in_flight: usize,
    /// Memory test: also measure after a burst of fanout traffic.
    #[arg(long)]
    pub burst: bool,
    /// Longest wait, after registration, for the join announcements to die
    /// down before traffic or a measurement starts.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub settle: f64,

    /// Line protocol: prompt lines to read before sending the nickname.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub nick_prompt_lines: u32,
    /// Line protocol: send the nickname at once, before the prompt, as
    /// `printf 'nick\n' | nc` does; mpchat then need not wait to see
    /// whether the client speaks first (it waits up to 100 ms for one
    /// that waits for the prompt).
    #[arg(long)]
    pub speak_first: bool,
    /// Nicknames are this prefix followed by the client number.
    #[arg(long, value_name = "PREFIX", default_value = "b")]
    pub nick_prefix: String,
    /// IRC channel to join without --rooms [default: #bench].
    #[arg(long, value_name = "NAME")]
    pub channel: Option<String>,
    /// Source addresses to spread the clients over (127.0.1.1 onwards);
    /// 0 lets the kernel choose.
    #[arg(long, value_name = "K", default_value_t = 200)]
    pub sources: u32,

    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Copy the spawned server's stderr and stdout to our stderr (prefixed
    /// "server: ").
    #[arg(long)]
    pub server_log: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TestKind {
    /// N clients, S senders, M messages each; count every delivery.
    Fanout,
    /// Cycles of connect, register, first reply, close.
    Connect,
    /// The server tree's USS and PSS idle and with N clients.
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtoKind {
    /// mpchat: prompt line(s), nickname line, then chat lines.
    Line,
    /// IRC: NICK/USER, 001, JOIN, PRIVMSG to a channel.
    Irc,
    /// Echo server: one line out, the same bytes back.
    Echo,
    /// mpchat's JSON lines for programs: hello, welcome, say, events.
    Json,
    /// The same JSON messages over WebSocket at /ws, as the web page
    /// speaks them (also the Node.js peer in scripts/ws-peer).
    Ws,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Quick,
    Medium,
    Strong,
    Extreme,
    Mega,
    Ultra,
}

impl Preset {
    /// (clients, senders, messages per sender, timeout in seconds). Bigger
    /// rooms get fewer messages per sender so a run stays at two million
    /// deliveries at most, and more time because registering N clients
    /// makes the server announce N²/2 joins.
    fn values(self) -> (usize, usize, u32, f64) {
        match self {
            Preset::Quick => (30, 5, 1000, 30.0),
            Preset::Medium => (100, 10, 500, 60.0),
            Preset::Strong => (500, 20, 200, 120.0),
            Preset::Extreme => (1000, 20, 100, 180.0),
            Preset::Mega => (5000, 10, 40, 300.0),
            Preset::Ultra => (10000, 10, 20, 600.0),
        }
    }
}

/// Where the servers come from: one or more, the clients spread over them
/// (see `targets`).
#[derive(Debug, Clone)]
pub enum ServerSource {
    Spawn(Vec<String>),
    /// The pids, when given, are one per address.
    Attach {
        addrs: Vec<String>,
        pids: Vec<i32>,
    },
}

impl ServerSource {
    /// How many servers the clients are spread over.
    pub fn count(&self) -> usize {
        match self {
            ServerSource::Spawn(cmds) => cmds.len(),
            ServerSource::Attach { addrs, .. } => addrs.len(),
        }
    }
}

/// `NAME=PID` of --extra-pid. The name labels a line of the report, so it
/// is kept to a plain word.
pub fn parse_extra_pid(arg: &str) -> Result<(String, i32), String> {
    let (name, pid) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?} is not NAME=PID (as redis=1234)"))?;
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "{name:?}: the name must be 1 to 32 letters, digits, _ or -"
        ));
    }
    match pid.parse::<i32>() {
        Ok(p) if p > 0 => Ok((name.to_string(), p)),
        _ => Err(format!("{pid:?} is not a pid")),
    }
}

/// Everything one run needs, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub test: TestKind,
    pub proto: ProtoKind,
    pub preset: Option<Preset>,
    pub server: ServerSource,
    /// --extra-pid: (name, pid) of processes whose CPU is reported apart.
    pub extra_pids: Vec<(String, i32)>,
    pub allow_remote: bool,
    pub clients: usize,
    pub senders: usize,
    /// Rooms the clients are spread over; 1: the server's one room, no
    /// /join sent.
    pub rooms: usize,
    pub messages: u32,
    pub rate: u64,
    pub timeout: Duration,
    pub size: usize,
    /// Messages a sender may have on their way; 0: no window.
    pub window: u32,
    pub connect_only: bool,
    pub hold: Duration,
    pub cycles: u64,
    pub in_flight: usize,
    pub burst: bool,
    pub settle: Duration,
    pub nick_prompt_lines: u32,
    pub speak_first: bool,
    pub nick_prefix: String,
    /// IRC channel when there is one room.
    pub channel: String,
    pub sources: u32,
    pub json: bool,
    pub quiet: bool,
    pub server_log: bool,
}

fn seconds(what: &str, secs: f64) -> Result<Duration, String> {
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{what} must be between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Plan {
    pub fn from_cli(cli: Cli) -> Result<Plan, String> {
        let (p_clients, p_senders, p_messages, p_timeout) =
            cli.preset.unwrap_or(Preset::Quick).values();
        let clients = cli.clients.unwrap_or(p_clients);
        let senders = cli.senders.unwrap_or(p_senders.min(clients));
        let timeout = seconds("--timeout", cli.timeout.unwrap_or(p_timeout))?;
        if timeout.is_zero() {
            return Err("--timeout must be more than 0 seconds".into());
        }
        let messages = match cli.duration {
            Some(secs) => {
                if cli.rate == 0 {
                    return Err("--duration needs a --rate above 0".into());
                }
                let total = (cli.rate as f64 * seconds("--duration", secs)?.as_secs_f64()).ceil();
                (total / senders.max(1) as f64).ceil().min(u32::MAX as f64) as u32
            }
            None => cli.messages.unwrap_or(p_messages),
        };
        let server = if !cli.spawn.is_empty() {
            if cli
                .spawn
                .iter()
                .any(|cmd| cmd.split_whitespace().next().is_none())
            {
                return Err("--spawn needs a command".into());
            }
            ServerSource::Spawn(cli.spawn)
        } else if !cli.addr.is_empty() {
            if cli.addr.iter().any(|a| a.trim().is_empty()) {
                return Err("--addr needs HOST:PORT (an empty one in the list?)".into());
            }
            // With several servers a pid short would leave its tree out of
            // the CPU per delivery without a word.
            if !cli.server_pid.is_empty() && cli.server_pid.len() != cli.addr.len() {
                return Err(format!(
                    "{} --server-pid for {} --addr: give one per server, or none",
                    cli.server_pid.len(),
                    cli.addr.len()
                ));
            }
            ServerSource::Attach {
                addrs: cli.addr,
                pids: cli.server_pid,
            }
        } else {
            return Err("give --spawn CMD or --addr HOST:PORT".into());
        };
        if cli.rooms > 1
            && let Some(channel) = &cli.channel
        {
            return Err(format!(
                "--channel {channel} names the one room; with --rooms {} the channels are #r0 to #r{}",
                cli.rooms,
                cli.rooms - 1
            ));
        }
        let plan = Plan {
            test: cli.test,
            proto: cli.proto,
            preset: cli.preset,
            server,
            extra_pids: cli.extra_pid,
            allow_remote: cli.allow_remote,
            clients,
            senders,
            rooms: cli.rooms,
            messages,
            rate: cli.rate,
            timeout,
            size: cli.size,
            window: cli.window,
            connect_only: cli.connect_only,
            hold: seconds("--hold", cli.hold)?,
            cycles: cli.cycles,
            in_flight: cli.in_flight,
            burst: cli.burst,
            settle: seconds("--settle", cli.settle)?,
            nick_prompt_lines: cli.nick_prompt_lines,
            speak_first: cli.speak_first,
            nick_prefix: cli.nick_prefix,
            channel: cli.channel.unwrap_or_else(|| DEFAULT_CHANNEL.to_string()),
            sources: cli.sources,
            json: cli.json,
            quiet: cli.quiet,
            server_log: cli.server_log,
        };
        plan.check()?;
        Ok(plan)
    }

    /// True when this run sends chat traffic (and so needs senders).
    pub fn sends_traffic(&self) -> bool {
        match self.test {
            TestKind::Fanout => !self.connect_only,
            TestKind::Memory => self.burst,
            TestKind::Connect => false,
        }
    }

    /// Who is in which room, and who sends.
    pub fn layout(&self) -> Rooms {
        Rooms::new(self.rooms, self.clients, self.senders)
    }

    /// Which server each client connects to.
    pub fn spread(&self) -> Spread {
        Spread::new(self.server.count())
    }

    /// Whether a sender gets its own messages back: IRC does not echo a
    /// channel message to its sender; mpchat does.
    pub fn self_delivery(&self) -> bool {
        self.proto != ProtoKind::Irc
    }

    /// Receivers of each message (in the largest room, with --rooms:
    /// room 0, sender 0's).
    pub fn receivers_per_message(&self) -> usize {
        self.layout().receivers_of(0, self.self_delivery())
    }

    pub fn expected_deliveries(&self) -> u64 {
        self.layout().expected(self.messages, self.self_delivery())
    }

    fn check(&self) -> Result<(), String> {
        if self.clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        if self.in_flight == 0 {
            return Err("--in-flight must be at least 1".into());
        }
        if self.cycles == 0 || self.cycles > u64::from(u32::MAX) {
            return Err(format!("--cycles must be between 1 and {}", u32::MAX));
        }
        if self.clients > u32::MAX as usize {
            return Err(format!("--clients must be at most {}", u32::MAX));
        }
        if self.sources > MAX_SOURCES {
            return Err(format!("--sources must be at most {MAX_SOURCES}"));
        }
        if self.nick_prefix.is_empty()
            || !self
                .nick_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err("--nick-prefix must be letters, digits, _ or -".into());
        }
        let biggest_id = match self.test {
            TestKind::Connect => self.cycles.saturating_sub(1),
            _ => self.clients as u64 - 1,
        };
        let nick_len = self.nick_prefix.len() + biggest_id.to_string().len();
        if matches!(
            self.proto,
            ProtoKind::Line | ProtoKind::Json | ProtoKind::Ws
        ) && nick_len > LINE_NICK_MAX
        {
            return Err(format!(
                "nicknames would be {nick_len} characters; the line protocol allows {LINE_NICK_MAX} (shorten --nick-prefix)"
            ));
        }
        self.check_rooms()?;
        if self.proto == ProtoKind::Irc
            && (!self.channel.starts_with(['#', '&'])
                || self.channel.contains([' ', ',', '\r', '\n']))
        {
            return Err("--channel must start with # or & and hold no space or comma".into());
        }
        let size_max = if self.proto == ProtoKind::Irc {
            IRC_SIZE_MAX
        } else {
            LINE_SIZE_MAX
        };
        if self.size > size_max {
            return Err(format!(
                "--size {} is over {size_max} bytes, the most this protocol carries in one line",
                self.size
            ));
        }
        if self.proto == ProtoKind::Echo && self.sends_traffic() {
            return Err(
                "--proto echo has no chat traffic: use --test connect, --test memory (without --burst) or --connect-only"
                    .into(),
            );
        }
        if self.test == TestKind::Memory {
            let has_pid = match &self.server {
                ServerSource::Spawn(_) => true,
                ServerSource::Attach { pids, .. } => !pids.is_empty(),
            };
            if !has_pid {
                return Err(
                    "--test memory needs the server's pid: use --spawn or --server-pid".into(),
                );
            }
        }
        if self.sends_traffic() {
            if self.senders == 0 || self.senders > self.clients {
                return Err(format!(
                    "--senders must be between 1 and the client count ({})",
                    self.clients
                ));
            }
            if self.proto == ProtoKind::Irc && self.clients < 2 {
                return Err("--proto irc needs at least 2 clients: a channel message does not come back to its sender".into());
            }
            if self.proto == ProtoKind::Irc && self.clients < self.rooms.saturating_mul(2) {
                return Err(format!(
                    "--proto irc with --rooms {} needs at least {} clients, 2 per room: a channel message does not come back to its sender",
                    self.rooms,
                    2 * self.rooms
                ));
            }
            if self.messages == 0 {
                return Err("--messages must be at least 1".into());
            }
            if self.expected_deliveries() > MAX_DELIVERIES {
                return Err(format!(
                    "{} expected deliveries is over the {MAX_DELIVERIES} one run can track; lower --messages or --senders",
                    self.expected_deliveries()
                ));
            }
            // With uneven rooms the ledger keeps a few more bits than there
            // are deliveries (every room as wide as the largest).
            let bits = self.layout().pairs() as u64 * u64::from(self.messages);
            if self.rooms > 1 && bits > MAX_DELIVERIES {
                return Err(format!(
                    "{bits} deliveries to track is over the {MAX_DELIVERIES} one run can; lower --messages or --senders"
                ));
            }
        }
        Ok(())
    }

    /// The flag combinations --rooms allows.
    fn check_rooms(&self) -> Result<(), String> {
        if self.rooms == 0 {
            return Err("--rooms must be at least 1".into());
        }
        if self.rooms == 1 {
            return Ok(());
        }
        if self.test == TestKind::Connect {
            return Err(
                "--rooms is for --test fanout and --test memory; connect cycles have no rooms"
                    .into(),
            );
        }
        if self.proto == ProtoKind::Echo {
            return Err("--proto echo has no rooms".into());
        }
        if self.rooms > self.clients {
            return Err(format!(
                "--rooms {} needs at least as many clients, one per room (--clients is {})",
                self.rooms, self.clients
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let mut argv = vec!["mpchat-bench", "--addr", "127.0.0.1:1"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        Plan::from_cli(cli)
    }

    #[test]
    fn one_room_by_default_with_the_old_counts() {
        let p = plan(&["--clients", "100", "--senders", "10", "--messages", "1000"]).unwrap();
        assert_eq!(p.rooms, 1);
        assert_eq!(p.channel, "#bench");
        assert_eq!(p.receivers_per_message(), 100);
        assert_eq!(p.expected_deliveries(), 100 * 10 * 1000);
        let p = plan(&["--proto", "irc", "--clients", "100", "--senders", "10"]).unwrap();
        assert_eq!(p.receivers_per_message(), 99);
        assert_eq!(p.expected_deliveries(), 99 * 10 * 1000);
    }

    #[test]
    fn rooms_of_ten_with_every_member_sending() {
        let args = ["--clients", "1000", "--rooms", "100", "--senders", "1000"];
        let p = plan(&[&args[..], &["--messages", "20"]].concat()).unwrap();
        assert_eq!(p.receivers_per_message(), 10);
        assert_eq!(p.expected_deliveries(), 1000 * 10 * 20);
        let p = plan(&[&args[..], &["--messages", "20", "--proto", "irc"]].concat()).unwrap();
        assert_eq!(p.receivers_per_message(), 9);
        assert_eq!(p.expected_deliveries(), 1000 * 9 * 20);
    }

    fn parsed(argv: &[&str]) -> Result<Plan, String> {
        let mut all = vec!["mpchat-bench"];
        all.extend_from_slice(argv);
        let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
        Plan::from_cli(cli)
    }

    #[test]
    fn one_server_is_one_target() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.spread().count(), 1);
        let ServerSource::Attach { addrs, pids } = &p.server else {
            panic!("{:?}", p.server);
        };
        assert_eq!(
            (addrs.as_slice(), pids.as_slice()),
            (&["127.0.0.1:1".to_string()][..], &[][..])
        );
        let p = parsed(&["--spawn", "mpchat 0"]).unwrap();
        assert!(matches!(&p.server, ServerSource::Spawn(c) if c == &["mpchat 0"]));
        assert!(p.extra_pids.is_empty());
    }

    #[test]
    fn several_servers_by_address_or_by_command() {
        // Repeated, or a comma list, or both.
        for argv in [
            &[
                "--addr",
                "127.0.0.1:1",
                "--addr",
                "127.0.0.1:2",
                "--addr",
                "127.0.0.1:3",
            ][..],
            &["--addr", "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"][..],
            &["--addr", "127.0.0.1:1,127.0.0.1:2", "--addr", "127.0.0.1:3"][..],
        ] {
            let p = parsed(argv).unwrap();
            assert_eq!(p.spread().count(), 3, "{argv:?}");
            let ServerSource::Attach { addrs, .. } = &p.server else {
                panic!("{argv:?}");
            };
            assert_eq!(addrs, &["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        }
        let p = parsed(&[
            "--addr",
            "127.0.0.1:1,127.0.0.1:2",
            "--server-pid",
            "10,11",
            "--test",
            "memory",
        ])
        .unwrap();
        assert!(matches!(&p.server, ServerSource::Attach { pids, .. } if pids == &[10, 11]));
        let p = parsed(&["--spawn", "mpchat a 0", "--spawn", "mpchat b 0"]).unwrap();
        assert_eq!(p.spread().count(), 2);
    }

    #[test]
    fn one_pid_per_server_or_none() {
        let e = parsed(&["--addr", "127.0.0.1:1,127.0.0.1:2", "--server-pid", "10"]).unwrap_err();
        assert!(e.contains("1 --server-pid for 2 --addr"), "{e}");
        let e = parsed(&["--addr", "127.0.0.1:1,,127.0.0.1:2"]).unwrap_err();
        assert!(e.contains("--addr needs HOST:PORT"), "{e}");
        assert!(parsed(&["--spawn", "mpchat 0", "--spawn", " "]).is_err());
        let e = parsed(&["--addr", "127.0.0.1:1,127.0.0.1:2", "--test", "memory"]).unwrap_err();
        assert!(e.contains("needs the server's pid"), "{e}");
    }

    #[test]
    fn extra_pids_are_name_equals_pid() {
        assert_eq!(
            parse_extra_pid("redis=1234"),
            Ok(("redis".to_string(), 1234))
        );
        assert_eq!(parse_extra_pid("db_2=7"), Ok(("db_2".to_string(), 7)));
        for bad in [
            "1234", "=5", "redis=", "redis=x", "redis=-1", "redis=0", "a b=3", "r=1=2",
        ] {
            assert!(parse_extra_pid(bad).is_err(), "{bad}");
        }
        let p = plan(&["--extra-pid", "redis=99", "--extra-pid", "other=100"]).unwrap();
        assert_eq!(
            p.extra_pids,
            [("redis".to_string(), 99), ("other".to_string(), 100)]
        );
    }

    #[test]
    fn bad_room_combinations_are_refused() {
        let refused = |args: &[&str], says: &str| {
            let e = plan(args).unwrap_err();
            assert!(e.contains(says), "{args:?}: {e}");
        };
        refused(&["--rooms", "0"], "at least 1");
        refused(
            &["--clients", "5", "--senders", "1", "--rooms", "6"],
            "one per room",
        );
        refused(&["--rooms", "2", "--channel", "#x"], "#r0 to #r1");
        refused(
            &["--rooms", "2", "--test", "connect"],
            "connect cycles have no rooms",
        );
        refused(
            &["--rooms", "2", "--proto", "echo", "--connect-only"],
            "no rooms",
        );
        refused(
            &[
                "--proto",
                "irc",
                "--clients",
                "5",
                "--senders",
                "1",
                "--rooms",
                "3",
            ],
            "2 per room",
        );
        // One room keeps --channel, and --rooms 1 is the same as none.
        assert!(plan(&["--rooms", "1", "--channel", "#x", "--proto", "irc"]).is_ok());
    }
}
