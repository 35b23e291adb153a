//! The `mpchat` command: parses the command line, sets up logging and runs
//! the server. Everything else is in the library.
//!
//! The options come in groups, one per part of [`Config`], and each group
//! turns into its part next to where it is declared. Their order in the
//! structs is their order in `--help`.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mpchat::{
    BacklogLimits, ClusterOptions, Config, FloodLimits, Fsync, HistoryOptions, Limits,
    ProgramOptions, RoomLimits, Server, logging, title,
};

/// A fork-per-connection chat server: connect with telnet, nc or the
/// class-lab C client.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    args_override_self = true,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Subcommand>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Subcommand {
    /// Show who is connected, the totals and each process's memory, as
    /// the server on PORT (run by this user, or by anyone for root) sees
    /// them.
    Status {
        /// The port the server listens on.
        #[arg(long)]
        port: u16,
        /// The same figures as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    if let Some(Subcommand::Status { port, json }) = cli.command {
        return exit_code(status(port, json));
    }
    cli.server.backlog.warn_if_retired();
    // After the command line is read: the title is written over it.
    title::init();
    exit_code(run(cli.server.into()))
}

fn exit_code(result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mpchat: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mpchat status`: one report, as text or JSON. A closed pipe (`| head`)
/// is no error.
fn status(port: u16, json: bool) -> std::io::Result<()> {
    let report = mpchat::status::query(port)?;
    let bytes = if json {
        mpchat::status::encode(&report)
    } else {
        mpchat::status::render(&report).into_bytes()
    };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn run(config: Config) -> std::io::Result<()> {
    let server = Server::bind(config)?;
    // Scripts and tests started on port 0 read the real port from this line.
    eprintln!("mpchat: listening on {}", server.local_addr()?);
    server.serve()
}

/// Everything that starts a server, in the order of [`Config`].
#[derive(Debug, clap::Args)]
struct ServerArgs {
    #[command(flatten)]
    listen: ListenArgs,
    #[command(flatten)]
    admission: AdmissionArgs,
    #[command(flatten)]
    flood: FloodArgs,
    #[command(flatten)]
    backlog: BacklogArgs,
    #[command(flatten)]
    rooms: RoomArgs,
    #[command(flatten)]
    programs: ProgramArgs,
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    history: HistoryArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Several servers sharing their rooms through Redis (README "Several
/// servers").
#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// Share the rooms with the other servers using this Redis:
    /// redis://[:PASSWORD@]HOST:PORT[/DB]. Without it the server is alone.
    #[arg(long, value_name = "URL", value_parser = cluster_url)]
    cluster: Option<String>,
    /// This server's name in the cluster, unique there (default: the
    /// host name).
    #[arg(long, value_name = "NAME", requires = "cluster")]
    server_name: Option<String>,
    /// Read Redis's password from this file (its first line), rather than
    /// writing it in the URL, where `ps` shows it. Read at start, before
    /// --user takes effect, so the file may be root's alone.
    #[arg(long, value_name = "FILE", requires = "cluster", value_parser = password_file)]
    cluster_password_file: Option<Password>,
}

/// A password, kept out of `Debug`.
#[derive(Clone)]
struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

fn password_file(path: &str) -> Result<Password, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    match text.lines().next().map(str::trim) {
        Some(line) if !line.is_empty() => Ok(Password(line.to_string())),
        _ => Err(format!("{path} has no password on its first line")),
    }
}

/// A Redis URL, checked (not connected to: only the hub connects).
fn cluster_url(arg: &str) -> Result<String, String> {
    match redis::parse_redis_url(arg) {
        Some(url) if url.scheme() == "redis" => Ok(arg.to_string()),
        _ => Err("expected redis://[:PASSWORD@]HOST:PORT[/DB]".into()),
    }
}

impl ClusterArgs {
    fn into_options(self) -> Option<ClusterOptions> {
        let url = self.cluster?;
        let server = self.server_name.unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "mpchat".into())
        });
        let password = self.cluster_password_file.map(|p| p.0);
        Some(ClusterOptions {
            url,
            server,
            password,
        })
    }
}

impl From<ServerArgs> for Config {
    fn from(args: ServerArgs) -> Config {
        let ServerArgs {
            listen,
            admission,
            flood,
            backlog,
            rooms,
            programs,
            service,
            history,
            cluster,
        } = args;
        // The listening and service options are plain fields of Config,
        // not structs of their own, so they are filled in here.
        Config {
            bind: listen.bind,
            port: listen.port.unwrap_or_default(),
            max_clients: listen.max_clients,
            login_timeout: Duration::from_secs(listen.login_timeout),
            idle_timeout: seconds_or_never(listen.idle_timeout),
            limits: admission.into(),
            flood: flood.into(),
            backlog: backlog.into(),
            rooms: rooms.into(),
            programs: programs.into(),
            echo: service.echo,
            user: service.user,
            history: history.into(),
            cluster: cluster.into_options(),
        }
    }
}

/// A timeout where 0 means none, as the command line writes it.
fn seconds_or_never(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Where the server listens, how many it serves, and for how long.
#[derive(Debug, clap::Args)]
struct ListenArgs {
    /// TCP port to listen on (0 picks a free port).
    // An Option only so that `mpchat status` can go without it: clap
    // requires it whenever there is no subcommand.
    #[arg(required = true)]
    port: Option<u16>,
    /// Address to listen on; IPv6 addresses work too.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Most clients connected at once; more are refused without a fork.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    max_clients: usize,
    /// Seconds a new connection has to choose a nickname, from connect.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    login_timeout: u64,
    /// Seconds a user may send nothing before being disconnected (0: never).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    idle_timeout: u64,
}

/// Who gets in, decided by the parent before it forks.
#[derive(Debug, clap::Args)]
struct AdmissionArgs {
    /// Most connections at once from one address (0: no limit).
    #[arg(long, default_value_t = 32, value_name = "N")]
    max_per_ip: usize,
    /// Most new connections a minute from one address (0: no limit).
    #[arg(long, default_value_t = 60, value_name = "N")]
    max_conn_rate: u32,
    /// How many of those may come in one burst.
    #[arg(long, default_value_t = 30, value_name = "N")]
    conn_burst: u32,
    /// Connections still choosing a nickname at which every new one is
    /// refused; from 16 on, some are (0: no limit).
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_unregistered: usize,
}

impl From<AdmissionArgs> for Limits {
    fn from(args: AdmissionArgs) -> Limits {
        Limits {
            max_per_ip: args.max_per_ip,
            conn_rate: args.max_conn_rate,
            conn_burst: args.conn_burst,
            max_unregistered: args.max_unregistered,
        }
    }
}

/// How fast one user may send lines.
#[derive(Debug, clap::Args)]
struct FloodArgs {
    /// Lines a user may send at once before the rate limit applies.
    #[arg(long, default_value_t = 10, value_name = "N")]
    flood_burst: u32,
    /// Lines a second a user may send after the burst (0: no limit).
    #[arg(long, default_value_t = 2.0, value_name = "N", value_parser = lines_per_second)]
    flood_rate: f64,
}

impl From<FloodArgs> for FloodLimits {
    fn from(args: FloodArgs) -> FloodLimits {
        FloodLimits {
            burst: args.flood_burst,
            rate: args.flood_rate,
        }
    }
}

/// How many rooms there may be.
#[derive(Debug, clap::Args)]
struct RoomArgs {
    /// Rooms one user may be in at once.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_rooms_per_user: u32,
    /// Rooms on the server, #lobby included.
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_rooms: u32,
}

impl From<RoomArgs> for RoomLimits {
    fn from(args: RoomArgs) -> RoomLimits {
        RoomLimits {
            per_user: args.max_rooms_per_user as usize,
            total: args.max_rooms as usize,
        }
    }
}

/// Programs on the JSON protocol (see PROTOCOL.md).
#[derive(Debug, clap::Args)]
struct ProgramArgs {
    /// Ping a JSON client after this many seconds without a line from it;
    /// it is disconnected after 2.5 times as long (0: never).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    ping_interval: u64,
    /// Events one resume replays at most; a client that missed more is
    /// told of the gap (at most 10000, what the hub keeps).
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=10_000))]
    resume_max: u32,
    /// The bots: one a line, NAME SECRET [RATE] (the secret as hex, at
    /// least 32 bytes; RATE, the bot's own --flood-rate); must be readable
    /// by its owner alone. Read again on SIGHUP.
    #[arg(long, value_name = "FILE")]
    bots: Option<PathBuf>,
    /// A web site besides this server (say https://chat.example.org, when
    /// a proxy serves the page) whose pages may open the chat's
    /// WebSocket; repeatable.
    #[arg(long = "allowed-origin", value_name = "URL")]
    allowed_origins: Vec<String>,
}

impl From<ProgramArgs> for ProgramOptions {
    fn from(args: ProgramArgs) -> ProgramOptions {
        ProgramOptions {
            ping_interval: Duration::from_secs(args.ping_interval),
            resume_max: args.resume_max as usize,
            bots: args.bots,
            allowed_origins: args.allowed_origins,
        }
    }
}

/// A rate for --flood-rate: a number of lines a second, 0 or more.
fn lines_per_second(arg: &str) -> Result<f64, String> {
    match arg.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err("expected a number of lines a second, 0 or more (such as 2 or 0.5)".into()),
    }
}

/// When a client that does not keep up is cut off.
#[derive(Debug, clap::Args)]
struct BacklogArgs {
    /// Seconds a client may take no bytes at all while lines wait for it
    /// before it is disconnected (0: never).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    stall_timeout: u64,
    /// Bytes that may wait for a client that reads, but more slowly than
    /// the room talks, before it is disconnected (0: no limit).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    max_backlog_bytes: usize,
    /// Retired: a count of lines bounded neither memory nor time. Accepted,
    /// with a warning, so existing command lines still start.
    #[arg(long, value_name = "LINES", hide = true)]
    max_backlog: Option<usize>,
}

impl BacklogArgs {
    /// Says that --max-backlog no longer does anything, once logging is
    /// set up, rather than refusing the command lines that still give it.
    fn warn_if_retired(&self) {
        if self.max_backlog.is_some() {
            log::warn!(
                "--max-backlog is no longer used and is ignored: a client is cut off when it \
                 takes nothing for --stall-timeout seconds, or has more than \
                 --max-backlog-bytes waiting"
            );
        }
    }
}

impl From<BacklogArgs> for BacklogLimits {
    fn from(args: BacklogArgs) -> BacklogLimits {
        BacklogLimits {
            bytes: args.max_backlog_bytes,
            stall: seconds_or_never(args.stall_timeout),
        }
    }
}

/// What is served, and as whom.
#[derive(Debug, clap::Args)]
struct ServiceArgs {
    /// Run the class-lab echo server instead of the chat.
    #[arg(long)]
    echo: bool,
    /// Started as root: serve as this user (and its groups) once the port
    /// is bound.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
}

/// Where and how the chat history is kept.
#[derive(Debug, clap::Args)]
struct HistoryArgs {
    /// Where the chat history and the scheduled messages are kept
    /// (created mode 0700).
    #[arg(long, default_value = "./mpchat-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// Lines of history shown to a user who joins (0 to 200; 0: none).
    #[arg(long, default_value_t = 20, value_name = "N",
          value_parser = clap::value_parser!(u16).range(0..=200))]
    history_lines: u16,
    /// Size at which a history segment is closed and a new one started.
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..))]
    history_segment_bytes: u64,
    /// History segments kept, the newest included; older ones are deleted.
    #[arg(long, default_value_t = 16, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    history_keep: u64,
    /// When history lines are flushed to disk: always (after every
    /// write), interval (once a second) or never (when the kernel decides).
    #[arg(long, default_value = "interval", value_name = "WHEN", value_parser = fsync_policy)]
    fsync: Fsync,
}

impl From<HistoryArgs> for HistoryOptions {
    fn from(args: HistoryArgs) -> HistoryOptions {
        HistoryOptions {
            dir: args.data_dir,
            segment_bytes: args.history_segment_bytes,
            keep: args.history_keep as usize,
            fsync: args.fsync,
            replay_lines: args.history_lines.into(),
        }
    }
}

fn fsync_policy(arg: &str) -> Result<Fsync, String> {
    arg.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn config(args: &[&str]) -> Config {
        let cli = Cli::try_parse_from(["mpchat"].iter().chain(args)).expect("a valid command line");
        assert!(cli.command.is_none());
        cli.server.into()
    }

    #[test]
    fn every_option_reaches_its_part_of_the_config() {
        let config = config(&[
            "--bind=::1",
            "--max-clients=7",
            "--login-timeout=8",
            "--idle-timeout=9",
            "--max-per-ip=10",
            "--max-conn-rate=11",
            "--conn-burst=12",
            "--max-unregistered=13",
            "--flood-burst=14",
            "--flood-rate=0.5",
            "--stall-timeout=15",
            "--max-backlog-bytes=16",
            "--max-backlog=17",
            "--echo",
            "--user=nobody",
            "--data-dir=/var/lib/mpchat",
            "--history-lines=18",
            "--history-segment-bytes=19",
            "--history-keep=20",
            "--fsync=never",
            "4321",
        ]);
        assert_eq!(config.bind, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(config.port, 4321);
        assert_eq!(config.max_clients, 7);
        assert_eq!(config.login_timeout, Duration::from_secs(8));
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(9)));
        let Limits {
            max_per_ip,
            conn_rate,
            conn_burst,
            max_unregistered,
        } = config.limits;
        assert_eq!(
            (max_per_ip, conn_rate, conn_burst, max_unregistered),
            (10, 11, 12, 13)
        );
        assert_eq!((config.flood.burst, config.flood.rate), (14, 0.5));
        assert_eq!(config.backlog.stall, Some(Duration::from_secs(15)));
        assert_eq!(config.backlog.bytes, 16);
        assert!(config.echo);
        assert_eq!(config.user.as_deref(), Some("nobody"));
        assert_eq!(config.history.dir, PathBuf::from("/var/lib/mpchat"));
        assert_eq!(config.history.replay_lines, 18);
        assert_eq!(config.history.segment_bytes, 19);
        assert_eq!(config.history.keep, 20);
        assert!(matches!(config.history.fsync, Fsync::Never));
    }

    #[test]
    fn a_timeout_of_zero_is_none() {
        let config = config(&["--idle-timeout=0", "--stall-timeout=0", "0"]);
        assert_eq!(config.idle_timeout, None);
        assert_eq!(config.backlog.stall, None);
    }
}
