//! The `mpchat` command: parses the command line, sets up logging and runs
//! the server. Everything else is in the library.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mpchat::{
    BacklogLimits, Config, FloodLimits, Fsync, HistoryOptions, Limits, Server, logging, title,
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
    /// TCP port to listen on (0 picks a free port).
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
    /// Lines a user may send at once before the rate limit applies.
    #[arg(long, default_value_t = 10, value_name = "N")]
    flood_burst: u32,
    /// Lines a second a user may send after the burst (0: no limit).
    #[arg(long, default_value_t = 2.0, value_name = "N", value_parser = lines_per_second)]
    flood_rate: f64,
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
    /// Run the class-lab echo server instead of the chat.
    #[arg(long)]
    echo: bool,
    /// Started as root: serve as this user (and its groups) once the port
    /// is bound.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
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
    if cli.max_backlog.is_some() {
        log::warn!(
            "--max-backlog is no longer used and is ignored: a client is cut off when it takes \
             nothing for --stall-timeout seconds, or has more than --max-backlog-bytes waiting"
        );
    }
    // After the command line is read: the title is written over it.
    title::init();
    let config = Config {
        bind: cli.bind,
        port: cli.port.unwrap_or_default(),
        max_clients: cli.max_clients,
        login_timeout: Duration::from_secs(cli.login_timeout),
        idle_timeout: (cli.idle_timeout > 0).then(|| Duration::from_secs(cli.idle_timeout)),
        limits: Limits {
            max_per_ip: cli.max_per_ip,
            conn_rate: cli.max_conn_rate,
            conn_burst: cli.conn_burst,
            max_unregistered: cli.max_unregistered,
        },
        flood: FloodLimits {
            burst: cli.flood_burst,
            rate: cli.flood_rate,
        },
        backlog: BacklogLimits {
            bytes: cli.max_backlog_bytes,
            stall: (cli.stall_timeout > 0).then(|| Duration::from_secs(cli.stall_timeout)),
        },
        echo: cli.echo,
        user: cli.user,
        history: HistoryOptions {
            dir: cli.data_dir,
            segment_bytes: cli.history_segment_bytes,
            keep: cli.history_keep as usize,
            fsync: cli.fsync,
            replay_lines: cli.history_lines.into(),
        },
    };
    exit_code(run(config))
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

/// A rate for --flood-rate: a number of lines a second, 0 or more.
fn lines_per_second(arg: &str) -> Result<f64, String> {
    match arg.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err("expected a number of lines a second, 0 or more (such as 2 or 0.5)".into()),
    }
}

fn fsync_policy(arg: &str) -> Result<Fsync, String> {
    arg.parse()
}

fn run(config: Config) -> std::io::Result<()> {
    let server = Server::bind(config)?;
    // Scripts and tests started on port 0 read the real port from this line.
    eprintln!("mpchat: listening on {}", server.local_addr()?);
    server.serve()
}
