//! `mpchat-bench`: the load generator for mpchat and for other chat and
//! echo servers that speak the same work (line protocol, JSON lines,
//! WebSocket, IRC, echo).
//!
//! This file owns the start and the end of a run: the command line, the fd
//! limit, the stop signals, getting a server (started or attached), and the
//! report and exit status. The work itself is in the modules:
//!
//! * `cli`: flags, presets, validation into a `Plan`.
//! * `server`: starting, watching and killing a `--spawn`ed server.
//! * `net`: target checks, source addresses, non-blocking connect.
//! * `proto`: what the clients say, per protocol, and message parsing.
//! * `ws`: the client's side of WebSocket framing for `--proto ws`.
//! * `driver`: the single-threaded epoll loop and its phases.
//! * `rooms`: which room each client is in with `--rooms`.
//! * `tally`: loss, duplicates, order, cross-room lines and latency of
//!   deliveries.
//! * `procstat`: CPU and memory from /proc and getrusage.
//! * `scenario`: the tests as sequences of phases.
//! * `report`, `progress`: what the user sees.

mod cli;
mod clock;
mod driver;
mod net;
mod procstat;
mod progress;
mod proto;
mod report;
mod rooms;
mod scenario;
mod server;
mod tally;
mod ws;

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use clap::Parser;

use crate::cli::{Cli, Plan, ServerSource};
use crate::clock::Clock;
use crate::driver::Driver;
use crate::net::Sources;
use crate::progress::Progress;
use crate::proto::Proto;
use crate::report::Report;
use crate::scenario::Scenario;
use crate::server::Spawned;

/// Set by SIGINT or SIGTERM; every loop checks it, so an interrupted run
/// still reports and still kills the server it started.
static STOP: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let plan = match Plan::from_cli(cli) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("mpchat-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match run(plan) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("mpchat-bench: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(plan: Plan) -> Result<bool, String> {
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, &STOP)
            .map_err(|e| format!("cannot install a signal handler: {e}"))?;
    }
    let nofile = net::raise_nofile()?;
    let needed = plan.clients.max(plan.in_flight) as u64 + 64;
    if needed > nofile {
        return Err(format!(
            "{} clients need about {needed} fds but RLIMIT_NOFILE allows {nofile}",
            plan.clients
        ));
    }
    let mut spawned = match &plan.server {
        ServerSource::Spawn(cmd) => Some(Spawned::start(cmd, plan.server_log)?),
        ServerSource::Attach { .. } => None,
    };
    let result = measure(&plan, spawned.as_mut(), nofile);
    if let Some(s) = spawned.as_mut() {
        s.stop();
    }
    let report = result?;
    if plan.json {
        println!("{}", report.to_json()?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(report.ok)
}

fn measure(plan: &Plan, spawned: Option<&mut Spawned>, nofile: u64) -> Result<Report, String> {
    let (target, server_pid) = match (&plan.server, spawned.as_deref()) {
        (ServerSource::Attach { addr, pid }, _) => (net::resolve(addr)?, *pid),
        (ServerSource::Spawn(_), Some(s)) => (s.addr, Some(s.pid)),
        (ServerSource::Spawn(_), None) => return Err("internal: spawned server missing".into()),
    };
    let target = net::connectable(target);
    net::check_target(target, plan.allow_remote)?;
    let clock = Clock::new()?;
    let sources = Sources::new(target, plan.sources);
    let mut report = Report {
        test: plan.test,
        proto: plan.proto,
        preset: plan.preset,
        rooms: plan.rooms,
        target: target.to_string(),
        server_pid,
        source_addresses: sources.count(),
        nofile_limit: nofile,
        timeout_s: plan.timeout.as_secs_f64(),
        connect: None,
        fanout: None,
        cycles: None,
        memory: None,
        problems: Vec::new(),
        warnings: Vec::new(),
        ok: false,
    };
    let progress = Progress::new(plan.quiet, clock.now_ns());
    let driver = Driver::new(
        clock,
        Proto::new(plan, target),
        target,
        sources,
        progress,
        &STOP,
    )?;
    let mut scenario = Scenario::new(plan, driver, server_pid)?;
    scenario.run(&mut report)?;
    if let Some(s) = spawned
        && let Some(status) = s.exited()
    {
        report.problems.push(format!(
            "the server exited during the run ({status}){}",
            s.recent_text()
        ));
    }
    if STOP.load(std::sync::atomic::Ordering::Relaxed) {
        report.problems.push("interrupted by a signal".into());
    }
    report.ok = report.problems.is_empty();
    Ok(report)
}
