//! The result of a run: one serializable structure, printed either as a
//! readable table or as a single JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::{Preset, ProtoKind, TestKind};
use crate::driver::{Ended, Failure};
use crate::procstat::{CpuReport, MemSnap};
use crate::tally::{Histogram, OrderSummary};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub test: TestKind,
    pub proto: ProtoKind,
    pub preset: Option<Preset>,
    /// Rooms the clients were spread over (1: the server's one room).
    pub rooms: usize,
    /// The server's address; with several, all of them, comma-separated.
    pub target: String,
    /// The server's pid; with several, the first one's (all are in
    /// `targets`).
    pub server_pid: Option<i32>,
    /// With several servers: each one, and how many clients and senders
    /// it had (absent with one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetReport>,
    /// Source addresses the clients were spread over (0: kernel's choice).
    pub source_addresses: usize,
    pub nofile_limit: u64,
    pub timeout_s: f64,
    pub connect: Option<ConnectReport>,
    pub fanout: Option<FanoutReport>,
    pub cycles: Option<CycleReport>,
    pub memory: Option<MemoryReport>,
    /// Anything that makes the run fail (exit status 1).
    pub problems: Vec<String>,
    /// Worth knowing, but not a failure.
    pub warnings: Vec<String>,
    pub ok: bool,
}

/// One of several servers the clients were spread over.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub addr: String,
    pub pid: Option<i32>,
    /// Clients connected to it (connect test: cycles run against it).
    pub clients: usize,
    pub senders: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram) -> Latency {
        let ms = |ns: u64| ns as f64 / 1e6;
        Latency {
            count: h.count(),
            p50_ms: ms(h.quantile(0.50)),
            p90_ms: ms(h.quantile(0.90)),
            p99_ms: ms(h.quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectReport {
    pub clients: u64,
    pub connected: u64,
    pub registered: u64,
    pub failed: u64,
    pub ended: Ended,
    /// From the first connect to the last registration.
    pub elapsed_s: f64,
    pub registered_per_s: f64,
    /// Start of connect to TCP established.
    pub connect_ms: Latency,
    /// Start of connect to registered.
    pub register_ms: Latency,
    /// Waiting for the join announcements to stop, after registration.
    pub settle_s: f64,
    pub settled: bool,
    pub held_s: Option<f64>,
    /// Line protocol with rooms: the clients' `/join`s (absent without
    /// rooms, and with IRC, whose clients join while registering).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<JoinReport>,
    pub cpu: CpuReport,
    pub failures: Vec<Failure>,
}

/// Every client joining its room, all at once, after registration.
#[derive(Debug, Clone, Serialize)]
pub struct JoinReport {
    pub rooms: usize,
    /// Clients that sent their `/join`.
    pub asked: u64,
    /// Of those, in their room (their own "has joined" line came).
    pub joined: u64,
    /// Closed while joining: refused or disconnected by the server.
    pub failed: u64,
    pub ended: Ended,
    /// From the first `/join` to the last client in.
    pub elapsed_s: f64,
    pub joined_per_s: f64,
    /// `/join` sent to own "has joined" line.
    pub join_ms: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct PerUnit {
    /// Server tree CPU divided by the count.
    pub tree_us: Option<f64>,
    /// (machine − generator) CPU divided by the count.
    pub machine_us: f64,
    /// Each --extra-pid's CPU divided by the count, by its name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_us: BTreeMap<String, f64>,
}

impl PerUnit {
    pub fn of(cpu: &CpuReport, count: u64) -> Option<PerUnit> {
        if count == 0 {
            return None;
        }
        let per = |s: f64| s * 1e6 / count as f64;
        Some(PerUnit {
            tree_us: cpu.server_tree_s.map(per),
            machine_us: per(cpu.server_machine_s),
            extra_us: cpu
                .extra
                .iter()
                .filter_map(|e| Some((e.name.clone(), per(e.cpu_s?))))
                .collect(),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    pub senders: usize,
    pub messages_per_sender: u32,
    pub receivers_per_message: usize,
    /// Messages per second over all senders; 0 is full speed.
    pub rate: u64,
    /// Messages a sender may have on their way; 0 is no window (each
    /// sender writes as fast as its socket takes them).
    pub window: u32,
    pub size: usize,
    pub ended: Ended,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Deliveries whose seq was lower than one already seen from the same
    /// sender by the same receiver.
    pub reordered: u64,
    /// Benchmark-looking lines that belong to no message of this run.
    pub foreign: u64,
    /// Messages of this run that reached a client outside their sender's
    /// room (not counted as deliveries).
    pub cross_room: u64,
    pub order: OrderSummary,
    /// Registered clients the server disconnected during the run.
    pub dropped_clients: u64,
    /// How many of them were senders.
    pub dropped_senders: u64,
    pub send_s: f64,
    pub send_per_s: f64,
    /// From the first send to the last delivery.
    pub delivery_s: f64,
    pub deliveries_per_s: f64,
    pub latency_ms: Latency,
    pub cpu: CpuReport,
    pub server_cpu_per_delivery: Option<PerUnit>,
    pub failures: Vec<Failure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    pub cycles: u64,
    pub completed: u64,
    pub failed: u64,
    pub in_flight: usize,
    pub ended: Ended,
    pub elapsed_s: f64,
    pub cycles_per_s: f64,
    /// Start of connect to first reply.
    pub cycle_ms: Latency,
    pub connect_ms: Latency,
    pub cpu: CpuReport,
    pub server_cpu_per_cycle: Option<PerUnit>,
    pub failures: Vec<Failure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub clients: u64,
    pub idle: MemSnap,
    pub with_clients: Option<MemSnap>,
    pub after_burst: Option<MemSnap>,
    /// (with − idle) / clients.
    pub per_client_uss_kib: Option<f64>,
    pub per_client_pss_kib: Option<f64>,
}

impl Report {
    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string(self).map_err(|e| format!("cannot encode the report as JSON: {e}"))
    }

    pub fn to_table(&self) -> String {
        let mut t = String::new();
        let pid = if self.targets.is_empty() {
            self.server_pid
                .map(|p| format!(", server pid {p}"))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let preset = self
            .preset
            .map(|p| format!(", preset {p:?}").to_lowercase())
            .unwrap_or_default();
        let rooms = if self.rooms > 1 {
            format!(", {} rooms (#r0 to #r{})", self.rooms, self.rooms - 1)
        } else {
            String::new()
        };
        let target = if self.targets.is_empty() {
            self.target.clone()
        } else {
            format!("{} servers", self.targets.len())
        };
        let _ = writeln!(
            t,
            "mpchat-bench: {} test, {} protocol, {}{}{}{}",
            format!("{:?}", self.test).to_lowercase(),
            format!("{:?}", self.proto).to_lowercase(),
            target,
            pid,
            preset,
            rooms
        );
        for (i, s) in self.targets.iter().enumerate() {
            let pid = s.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
            let load = if self.test == TestKind::Connect {
                format!("{} connect cycles", s.clients)
            } else {
                format!("{} clients, {} senders", s.clients, s.senders)
            };
            let _ = writeln!(t, "  server {}: {}{pid}, {load}", i + 1, s.addr);
        }
        let _ = writeln!(
            t,
            "  {} source addresses, RLIMIT_NOFILE {}, timeout {} s",
            self.source_addresses, self.nofile_limit, self.timeout_s
        );
        let servers = self.targets.len().max(1);
        if let Some(m) = &self.memory {
            memory_table(&mut t, m, servers);
        }
        if let Some(c) = &self.connect {
            connect_table(&mut t, c, servers);
        }
        if let Some(f) = &self.fanout {
            let clients = self.connect.as_ref().map_or(0, |c| c.clients);
            fanout_table(&mut t, f, self.rooms, clients, servers);
        }
        if let Some(c) = &self.cycles {
            cycles_table(&mut t, c, servers);
        }
        for w in &self.warnings {
            let _ = writeln!(t, "warning: {w}");
        }
        if self.ok {
            let _ = writeln!(t, "result: OK");
        } else {
            let _ = writeln!(t, "result: FAILED");
            for p in &self.problems {
                let _ = writeln!(t, "  - {p}");
            }
        }
        t
    }
}

fn row(t: &mut String, key: &str, value: String) {
    let _ = writeln!(t, "  {key:<26}{value}");
}

fn lat(l: &Latency) -> String {
    if l.count == 0 {
        return "none".into();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  max {}",
        ms(l.p50_ms),
        ms(l.p90_ms),
        ms(l.p99_ms),
        ms(l.max_ms)
    )
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn count_rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// `servers`: how many servers' trees the server figures sum.
fn cpu_rows(t: &mut String, cpu: &CpuReport, servers: usize) {
    let core = |s: f64| {
        // Over a few milliseconds the ratio is rounding noise.
        if cpu.wall_s >= 0.1 {
            format!(" ({:.0}% of a core)", s * 100.0 / cpu.wall_s)
        } else {
            String::new()
        }
    };
    row(
        t,
        "CPU: generator",
        format!(
            "{:.3} s{} over {:.3} s",
            cpu.generator_s,
            core(cpu.generator_s),
            cpu.wall_s
        ),
    );
    let trees = if servers > 1 {
        format!(" in {servers} trees")
    } else {
        String::new()
    };
    match cpu.server_tree_s {
        Some(s) => row(
            t,
            "CPU: server tree",
            format!(
                "{s:.3} s{}, {} processes{trees} (stat ticks alone: {:.3} s)",
                core(s),
                cpu.server_tree_procs,
                cpu.server_tree_stat_s.unwrap_or(0.0)
            ),
        ),
        None if servers > 1 => row(
            t,
            "CPU: server tree",
            "unknown (no server pids, or a server was gone)".into(),
        ),
        None => row(t, "CPU: server tree", "unknown (no server pid)".into()),
    }
    for e in &cpu.extra {
        let value = match e.cpu_s {
            Some(s) => format!("{s:.3} s{}, pid {} and its children", core(s), e.pid),
            None => format!("unknown (pid {} gone)", e.pid),
        };
        row(t, &format!("CPU: {}", e.name), value);
    }
    let with_extra = if cpu.extra.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = cpu.extra.iter().map(|e| e.name.as_str()).collect();
        format!(" (includes {})", names.join(", "))
    };
    row(
        t,
        "CPU: machine − generator",
        format!(
            "{:.3} s{}{with_extra}",
            cpu.server_machine_s,
            core(cpu.server_machine_s)
        ),
    );
}

fn per_unit(t: &mut String, key: &str, p: &Option<PerUnit>) {
    if let Some(p) = p {
        let tree = p
            .tree_us
            .map(|v| format!("{v:.2} µs (tree), "))
            .unwrap_or_default();
        let extra: String = p
            .extra_us
            .iter()
            .map(|(name, us)| format!("; {name} {us:.2} µs"))
            .collect();
        row(
            t,
            key,
            format!("{tree}{:.2} µs (machine − generator){extra}", p.machine_us),
        );
    }
}

fn failures(t: &mut String, list: &[Failure]) {
    for f in list {
        let line = f
            .last_line
            .as_ref()
            .map(|l| format!("; last line: {l:?}"))
            .unwrap_or_default();
        row(t, "failure", format!("{} × {}{}", f.count, f.reason, line));
    }
}

fn connect_table(t: &mut String, c: &ConnectReport, servers: usize) {
    let _ = writeln!(t, "connect");
    row(
        t,
        "registered",
        format!(
            "{}/{} in {:.3} s ({}/s), {} failed, {}",
            c.registered,
            c.clients,
            c.elapsed_s,
            count_rate(c.registered_per_s),
            c.failed,
            c.ended.word()
        ),
    );
    row(t, "connect ms", lat(&c.connect_ms));
    row(t, "register ms", lat(&c.register_ms));
    if let Some(j) = &c.join {
        row(
            t,
            "joined rooms",
            format!(
                "{}/{} in {} rooms in {:.3} s ({}/s), {} failed, {}",
                j.joined,
                j.asked,
                j.rooms,
                j.elapsed_s,
                count_rate(j.joined_per_s),
                j.failed,
                j.ended.word()
            ),
        );
        row(t, "join ms", lat(&j.join_ms));
    }
    row(
        t,
        "settle",
        format!(
            "{:.2} s ({})",
            c.settle_s,
            if c.settled {
                "quiet"
            } else {
                "still busy, gave up"
            }
        ),
    );
    if let Some(h) = c.held_s {
        row(t, "held", format!("{h:.2} s"));
    }
    cpu_rows(t, &c.cpu, servers);
    failures(t, &c.failures);
}

fn fanout_table(t: &mut String, f: &FanoutReport, rooms: usize, clients: u64, servers: usize) {
    let _ = writeln!(t, "fanout");
    let rate = if f.rate == 0 {
        "full speed".to_string()
    } else {
        format!("{} msg/s in total", f.rate)
    };
    let window = if f.window == 0 && f.rate == 0 {
        "no window (as fast as each socket takes them)".to_string()
    } else if f.window == 0 {
        "no window".to_string()
    } else {
        format!("window {}", f.window)
    };
    let receivers = if rooms > 1 {
        // Rooms of unequal size: the figure is the largest room's.
        let most = if clients.is_multiple_of(rooms as u64) {
            ""
        } else {
            " (at most)"
        };
        format!(
            "in {rooms} rooms, each to its room's {}{most} receivers",
            f.receivers_per_message
        )
    } else {
        format!("to {} receivers", f.receivers_per_message)
    };
    row(
        t,
        "traffic",
        format!(
            "{} senders × {} messages of {} B {receivers}, {rate}, {window}",
            f.senders, f.messages_per_sender, f.size
        ),
    );
    row(
        t,
        "deliveries",
        format!(
            "{} expected, {} received, {} lost, {} duplicate",
            f.expected, f.received, f.lost, f.duplicates
        ),
    );
    row(t, "reordered (per sender)", f.reordered.to_string());
    if rooms > 1 {
        row(
            t,
            "cross-room",
            format!("{} lines reached a client outside their room", f.cross_room),
        );
    }
    let (one, first) = if rooms > 1 {
        ("one order in each room", "their room's first")
    } else {
        ("one global order", "the first")
    };
    let order = if f.order.compared == 0 {
        "not compared (every receiver sends, and a sender does not get its own lines)".to_string()
    } else if f.order.one_global_order {
        format!(
            "{one} ({}/{} receivers agree)",
            f.order.agreeing, f.order.compared
        )
    } else if f.order.agreeing == f.order.compared {
        format!(
            "same order at all {} receivers, but not every message arrived",
            f.order.compared
        )
    } else {
        format!(
            "NOT {one} ({}/{} receivers agree with {first})",
            f.order.agreeing, f.order.compared
        )
    };
    row(t, "order", order);
    if f.foreign > 0 {
        row(t, "foreign messages", f.foreign.to_string());
    }
    if f.dropped_clients > 0 {
        row(
            t,
            "clients dropped",
            format!(
                "{} disconnected by the server ({} of them senders)",
                f.dropped_clients, f.dropped_senders
            ),
        );
    }
    row(
        t,
        "sent",
        format!(
            "{} in {:.3} s ({} msg/s)",
            f.sent,
            f.send_s,
            count_rate(f.send_per_s)
        ),
    );
    row(
        t,
        "delivered",
        format!(
            "{} in {:.3} s = {} deliveries/s, {}",
            f.received,
            f.delivery_s,
            count_rate(f.deliveries_per_s),
            f.ended.word()
        ),
    );
    row(t, "latency ms", lat(&f.latency_ms));
    cpu_rows(t, &f.cpu, servers);
    per_unit(t, "server CPU per delivery", &f.server_cpu_per_delivery);
    failures(t, &f.failures);
}

fn cycles_table(t: &mut String, c: &CycleReport, servers: usize) {
    let _ = writeln!(t, "connect cycles");
    row(
        t,
        "cycles",
        format!(
            "{}/{} in {:.3} s = {} cycles/s, {} in flight, {} failed, {}",
            c.completed,
            c.cycles,
            c.elapsed_s,
            count_rate(c.cycles_per_s),
            c.in_flight,
            c.failed,
            c.ended.word()
        ),
    );
    row(t, "cycle ms", lat(&c.cycle_ms));
    row(t, "connect ms", lat(&c.connect_ms));
    cpu_rows(t, &c.cpu, servers);
    per_unit(t, "server CPU per cycle", &c.server_cpu_per_cycle);
    failures(t, &c.failures);
}

fn memory_table(t: &mut String, m: &MemoryReport, servers: usize) {
    if servers > 1 {
        let _ = writeln!(t, "memory ({servers} server trees summed, smaps_rollup)");
    } else {
        let _ = writeln!(t, "memory (server tree, smaps_rollup)");
    }
    let snap = |s: &MemSnap| {
        format!(
            "USS {} KiB  PSS {} KiB  RSS {} KiB  in {} processes",
            s.uss_kib, s.pss_kib, s.rss_kib, s.processes
        )
    };
    row(t, "idle", snap(&m.idle));
    if let Some(w) = &m.with_clients {
        row(t, &format!("with {} clients", m.clients), snap(w));
    }
    if let (Some(u), Some(p)) = (m.per_client_uss_kib, m.per_client_pss_kib) {
        row(t, "per client", format!("USS {u:.1} KiB  PSS {p:.1} KiB"));
    }
    if let Some(b) = &m.after_burst {
        row(t, "after the burst", snap(b));
    }
}
