//! `mpchat-bench`: the load generator for mpchat and for other chat and
//! echo servers that speak the same work (line protocol, JSON lines,
//! WebSocket, IRC, echo).
//!
//! This file owns the start and the end of a run: the command line, the fd
//! limit, the stop signals, getting the servers (started or attached: one,
//! or several the clients are spread over), and the report and exit status.
//! The work itself is in the modules:
//!
//! * `cli`: flags, presets, validation into a `Plan`.
//! * `server`: starting, watching and killing a `--spawn`ed server.
//! * `targets`: which server each client connects to, with several.
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
mod targets;
mod ws;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use clap::Parser;

use crate::cli::{Cli, Plan, ServerSource, TestKind};
use crate::clock::Clock;
use crate::driver::{Driver, Target};
use crate::net::Sources;
use crate::progress::Progress;
use crate::proto::Proto;
use crate::report::{Report, TargetReport};
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
    // Started one after the other; if one fails to start, those before
    // it are stopped as the vector drops.
    let mut spawned = Vec::new();
    if let ServerSource::Spawn(cmds) = &plan.server {
        for (i, cmd) in cmds.iter().enumerate() {
            let label = if cmds.len() == 1 {
                "server".to_string()
            } else {
                format!("server {}", i + 1)
            };
            spawned.push(Spawned::start(cmd, &label, plan.server_log)?);
        }
    }
    let result = measure(&plan, &mut spawned, nofile);
    for s in &mut spawned {
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

fn measure(plan: &Plan, spawned: &mut [Spawned], nofile: u64) -> Result<Report, String> {
    // (address, pid) of each server, in the order the clients go round.
    let servers: Vec<(SocketAddr, Option<i32>)> = match &plan.server {
        ServerSource::Attach { addrs, pids } => addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Ok((net::resolve(a)?, pids.get(i).copied())))
            .collect::<Result<_, String>>()?,
        ServerSource::Spawn(cmds) => {
            if spawned.len() != cmds.len() {
                return Err("internal: spawned server missing".into());
            }
            spawned.iter().map(|s| (s.addr, Some(s.pid))).collect()
        }
    };
    let mut targets = Vec::new();
    for &(addr, _) in &servers {
        let addr = net::connectable(addr);
        net::check_target(addr, plan.allow_remote)?;
        targets.push(Target {
            addr,
            sources: Sources::new(addr, plan.sources),
        });
    }
    let addrs: Vec<SocketAddr> = targets.iter().map(|t| t.addr).collect();
    let server_pids: Vec<i32> = servers.iter().filter_map(|s| s.1).collect();
    let spread = plan.spread();
    let clock = Clock::new()?;
    let mut report = Report {
        test: plan.test,
        proto: plan.proto,
        preset: plan.preset,
        rooms: plan.rooms,
        target: addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        server_pid: server_pids.first().copied(),
        targets: if spread.count() > 1 {
            addrs
                .iter()
                .zip(&servers)
                .enumerate()
                .map(|(i, (addr, s))| TargetReport {
                    addr: addr.to_string(),
                    pid: s.1,
                    clients: match plan.test {
                        TestKind::Connect => spread.on(i, plan.cycles as usize),
                        _ => spread.on(i, plan.clients),
                    },
                    senders: if plan.sends_traffic() {
                        spread.on(i, plan.senders)
                    } else {
                        0
                    },
                })
                .collect()
        } else {
            Vec::new()
        },
        // The same for every target: each has its own list of them.
        source_addresses: targets.first().map_or(0, |t| t.sources.count()),
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
    let driver = Driver::new(clock, Proto::new(plan, &addrs), targets, progress, &STOP)?;
    let mut scenario = Scenario::new(plan, driver, server_pids)?;
    scenario.run(&mut report)?;
    for s in spawned {
        if let Some(status) = s.exited() {
            report.problems.push(format!(
                "the {} exited during the run ({status}){}",
                s.label,
                s.recent_text()
            ));
        }
    }
    if STOP.load(std::sync::atomic::Ordering::Relaxed) {
        report.problems.push("interrupted by a signal".into());
    }
    report.ok = report.problems.is_empty();
    Ok(report)
}
