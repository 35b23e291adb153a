//! The tests as sequences of driver phases, with CPU and memory readings
//! around the parts that are measured, turned into a [`Report`].

use crate::cli::{Plan, TestKind};
use crate::clock::{ns, secs};
use crate::driver::{Driver, Ended, REFUSED_JOIN};
use crate::procstat::{self, CpuSnap};
use crate::report::{
    ConnectReport, CycleReport, FanoutReport, JoinReport, Latency, MemoryReport, PerUnit, Report,
};
use crate::tally::Tally;

/// The room counts as quiet once nothing arrived for this long.
const QUIET_NS: u64 = 300_000_000;
/// How long after the room is quiet the memory of idle clients is read:
/// past the second after which a child gives its burst buffers back.
const IDLE_AFTER: std::time::Duration = std::time::Duration::from_millis(1500);
/// After the last expected delivery, keep reading this long to catch late
/// duplicates (outside the measured window).
const LINGER_NS: u64 = 100_000_000;
/// A TCP connect this slow means its first SYN was dropped and retried.
const SYN_RETRY_NS: u64 = 900_000_000;
/// CPU figures over a shorter window are mostly /proc/stat tick rounding.
const CPU_WINDOW_MIN_S: f64 = 1.0;

pub struct Scenario<'a> {
    pub plan: &'a Plan,
    pub driver: Driver,
    /// Every server's pid (none when attached without --server-pid): the
    /// CPU and memory figures are their trees' sum.
    pub server_pids: Vec<i32>,
    pub ticks_per_sec: u64,
    deadline_ns: u64,
}

impl<'a> Scenario<'a> {
    pub fn new(
        plan: &'a Plan,
        driver: Driver,
        server_pids: Vec<i32>,
    ) -> Result<Scenario<'a>, String> {
        Ok(Scenario {
            plan,
            driver,
            server_pids,
            ticks_per_sec: procstat::clock_ticks_per_sec()?,
            deadline_ns: 0,
        })
    }

    fn snap(&self, start: bool) -> Result<CpuSnap, String> {
        CpuSnap::take(
            &self.server_pids,
            &self.plan.extra_pids,
            self.driver.now_ns(),
            self.ticks_per_sec,
            start,
        )
    }

    /// Runs the planned test and fills `report`.
    pub fn run(&mut self, report: &mut Report) -> Result<(), String> {
        self.deadline_ns = self.driver.now_ns() + ns(self.plan.timeout);
        let result = match self.plan.test {
            TestKind::Fanout => self.fanout_test(report),
            TestKind::Connect => self.connect_test(report),
            TestKind::Memory => self.memory_test(report),
        };
        self.driver.finish_progress();
        self.driver.close_all();
        result
    }

    /// Connects and registers all clients, with rooms on the line protocol
    /// has each join its room, then waits for quiet; true when every client
    /// registered (and got into its room).
    fn connect_phase(&mut self, report: &mut Report, hold: bool) -> Result<bool, String> {
        let n = self.plan.clients;
        let before = self.snap(true)?;
        let start = self.driver.now_ns();
        let ended = self
            .driver
            .connect_clients(n, self.plan.in_flight, self.deadline_ns)?;
        let end = self.driver.now_ns();
        let after = self.snap(false)?;
        let join = if ended == Ended::Done && self.driver.counts.registered > 0 {
            self.join_phase(report)?
        } else {
            None
        };
        let (settle_ns, settled) = if self.driver.counts.registered > 0 {
            self.driver
                .settle(QUIET_NS, ns(self.plan.settle), self.deadline_ns)?
        } else {
            (0, true)
        };
        let held_s = if hold && self.driver.counts.registered > 0 {
            self.driver.hold("hold", ns(self.plan.hold))?;
            Some(self.plan.hold.as_secs_f64())
        } else {
            None
        };
        let c = self.driver.counts;
        let elapsed = end.saturating_sub(start);
        // Clients closed because their /join failed are the join's
        // problem, reported there, not registrations that went wrong.
        let dropped = c.dropped - join.as_ref().map_or(0, |j| j.failed);
        let all = c.registered == n as u64 && dropped == 0;
        let joined_all = join.as_ref().is_none_or(|j| j.joined == j.asked);
        report.connect = Some(ConnectReport {
            clients: n as u64,
            connected: c.connected,
            registered: c.registered,
            failed: c.failed,
            ended,
            elapsed_s: secs(elapsed),
            registered_per_s: rate(c.registered, elapsed),
            connect_ms: Latency::of(&self.driver.connect_lat),
            register_ms: Latency::of(&self.driver.register_lat),
            settle_s: secs(settle_ns),
            settled,
            held_s,
            join,
            cpu: before.report(&after, &self.plan.extra_pids, self.ticks_per_sec),
            failures: self.driver.failures(),
        });
        if ended != Ended::Done {
            report.problems.push(format!(
                "connect phase {}: {}/{} clients registered",
                ended_word(ended),
                c.registered,
                n
            ));
        } else if !all {
            if c.failed > 0 {
                report
                    .problems
                    .push(format!("{} of {n} clients failed to register", c.failed));
            }
            if dropped > 0 {
                report.problems.push(format!(
                    "{dropped} registered clients were disconnected while the others connected"
                ));
            }
        }
        let slow = self.driver.connect_lat.quantile(0.99);
        if slow >= SYN_RETRY_NS {
            report.warnings.push(format!(
                "1% of TCP connects took {:.2} s or more: SYNs were dropped (server's listen backlog full?); try a lower --in-flight",
                secs(slow)
            ));
        }
        if !settled && ended == Ended::Done {
            report.warnings.push(format!(
                "the room was still busy {:.1} s after the last registration (--settle)",
                secs(settle_ns)
            ));
        }
        if hold && self.driver.counts.dropped > c.dropped {
            report
                .problems
                .push("clients were disconnected while held".into());
        }
        Ok(ended == Ended::Done && all && joined_all)
    }

    /// The join step of the connect phase (line protocol with rooms); None
    /// when there is nothing to join.
    fn join_phase(&mut self, report: &mut Report) -> Result<Option<JoinReport>, String> {
        let start = self.driver.now_ns();
        let base = self.driver.counts;
        let (ended, asked) = self.driver.join_rooms(self.deadline_ns)?;
        if asked == 0 {
            return Ok(None);
        }
        let elapsed = self.driver.now_ns().saturating_sub(start);
        let joined = self.driver.counts.joined - base.joined;
        let failed = self.driver.counts.dropped - base.dropped;
        if joined < asked {
            let why = if ended == Ended::Done {
                // The refusal names the cause (a server without rooms says
                // so), so the one-line summary carries it.
                let refusal = self
                    .driver
                    .failures()
                    .into_iter()
                    .find(|f| f.reason == REFUSED_JOIN)
                    .and_then(|f| f.last_line);
                match refusal {
                    Some(line) => {
                        format!("{failed} refused or disconnected; the server said {line:?}")
                    }
                    None => format!("{failed} refused or disconnected, see the failures"),
                }
            } else {
                format!("the join {}", ended_word(ended))
            };
            report.problems.push(format!(
                "{} of {asked} clients did not get into their room: {why}",
                asked - joined
            ));
        }
        Ok(Some(JoinReport {
            rooms: self.plan.rooms,
            asked,
            joined,
            failed,
            ended,
            elapsed_s: secs(elapsed),
            joined_per_s: rate(joined, elapsed),
            join_ms: Latency::of(&self.driver.join_lat),
        }))
    }

    fn traffic_phase(&mut self, report: &mut Report) -> Result<(), String> {
        let p = self.plan;
        let tally = Tally::new(p.layout(), p.messages, p.self_delivery());
        let dropped_before = self.driver.counts.dropped;
        let failures_before = self.driver.failures().len();
        let before = self.snap(true)?;
        let traffic = self.driver.fanout(
            tally,
            p.senders,
            p.messages,
            p.rate,
            p.window,
            self.deadline_ns,
        )?;
        let after = self.snap(false)?;
        if traffic.ended == Ended::Done {
            self.driver.hold("linger", LINGER_NS)?;
        }
        let Some(tally) = self.driver.tally.take() else {
            return Err("internal: the fanout tally went missing".into());
        };
        let expected = tally.expected();
        let first_send = traffic.first_send_ns.unwrap_or(0);
        let send_ns = traffic
            .last_send_ns
            .unwrap_or(first_send)
            .saturating_sub(first_send);
        let delivery_ns = tally
            .last_ns
            .unwrap_or(first_send)
            .saturating_sub(first_send);
        let cpu = before.report(&after, &self.plan.extra_pids, self.ticks_per_sec);
        let order = tally.order_summary();
        let lost = expected.saturating_sub(tally.received);
        let dropped = self.driver.counts.dropped - dropped_before;
        let dropped_senders = self
            .driver
            .gone
            .iter()
            .filter(|&&id| (id as usize) < p.senders)
            .count() as u64;
        let f = FanoutReport {
            senders: p.senders,
            messages_per_sender: p.messages,
            receivers_per_message: p.receivers_per_message(),
            rate: p.rate,
            window: p.window,
            size: p.size,
            ended: traffic.ended,
            sent: traffic.sent,
            expected,
            received: tally.received,
            lost,
            duplicates: tally.duplicates,
            reordered: tally.reordered,
            foreign: tally.foreign,
            cross_room: tally.cross_room,
            order: order.clone(),
            dropped_clients: dropped,
            dropped_senders,
            send_s: secs(send_ns),
            send_per_s: rate(traffic.sent, send_ns),
            delivery_s: secs(delivery_ns),
            deliveries_per_s: rate(tally.received, delivery_ns),
            latency_ms: Latency::of(&tally.latency),
            server_cpu_per_delivery: PerUnit::of(&cpu, tally.received),
            cpu,
            failures: self
                .driver
                .failures()
                .into_iter()
                .skip(failures_before)
                .collect(),
        };
        if traffic.ended != Ended::Done {
            report.problems.push(format!(
                "fanout {}: {} of {} deliveries arrived",
                ended_word(traffic.ended),
                tally.received,
                expected
            ));
        } else if lost > 0 {
            report.problems.push(format!("{lost} deliveries lost"));
        }
        if tally.cross_room > 0 {
            report.problems.push(format!(
                "{} lines reached clients outside their sender's room",
                tally.cross_room
            ));
        }
        if tally.duplicates > 0 {
            report
                .problems
                .push(format!("{} duplicate deliveries", tally.duplicates));
        }
        if dropped > 0 {
            report.problems.push(format!(
                "the server disconnected {dropped} clients during the traffic ({dropped_senders} of them senders)"
            ));
        }
        if tally.reordered > 0 {
            report.warnings.push(format!(
                "{} deliveries arrived out of their sender's order",
                tally.reordered
            ));
        }
        if order.agreeing < order.compared {
            let first = if p.rooms > 1 {
                "their room's first"
            } else {
                "the first"
            };
            report.warnings.push(format!(
                "receivers did not all see one order: {}/{} agree with {first}",
                order.agreeing, order.compared
            ));
        }
        if p.rate > 0 && traffic.ended == Ended::Done {
            let wanted = p.rate as f64;
            let got = rate(traffic.sent, send_ns);
            if send_ns > 1_000_000_000 && got < wanted * 0.95 {
                report.warnings.push(format!(
                    "sent {got:.0} msg/s, below the asked {wanted:.0} (window full or server slow)"
                ));
            }
        }
        if f.cpu.wall_s < CPU_WINDOW_MIN_S {
            report.warnings.push(format!(
                "the traffic took {:.2} s: its CPU figures are coarse (use more --messages)",
                f.cpu.wall_s
            ));
        }
        report.fanout = Some(f);
        Ok(())
    }

    fn fanout_test(&mut self, report: &mut Report) -> Result<(), String> {
        let hold = self.plan.connect_only;
        if !self.connect_phase(report, hold)? || hold {
            return Ok(());
        }
        self.traffic_phase(report)
    }

    fn connect_test(&mut self, report: &mut Report) -> Result<(), String> {
        let p = self.plan;
        let before = self.snap(true)?;
        let start = self.driver.now_ns();
        let ended = self
            .driver
            .cycles(p.cycles, p.in_flight, self.deadline_ns)?;
        let end = self.driver.now_ns();
        let after = self.snap(false)?;
        let c = self.driver.counts;
        let elapsed = end.saturating_sub(start);
        let cpu = before.report(&after, &self.plan.extra_pids, self.ticks_per_sec);
        let failed = c.failed + c.dropped;
        report.cycles = Some(CycleReport {
            cycles: p.cycles,
            completed: c.completed,
            failed,
            in_flight: p.in_flight,
            ended,
            elapsed_s: secs(elapsed),
            cycles_per_s: rate(c.completed, elapsed),
            cycle_ms: Latency::of(&self.driver.register_lat),
            connect_ms: Latency::of(&self.driver.connect_lat),
            server_cpu_per_cycle: PerUnit::of(&cpu, c.completed),
            cpu,
            failures: self.driver.failures(),
        });
        if ended != Ended::Done {
            report.problems.push(format!(
                "connect cycles {}: {}/{} done",
                ended_word(ended),
                c.completed,
                p.cycles
            ));
        }
        if failed > 0 {
            report
                .problems
                .push(format!("{failed} of {} cycles failed", p.cycles));
        }
        Ok(())
    }

    fn memory_test(&mut self, report: &mut Report) -> Result<(), String> {
        if self.server_pids.is_empty() {
            return Err("--test memory needs the server's pid".into());
        }
        let pids = self.server_pids.clone();
        let idle = procstat::trees_memory(&pids)?;
        let mut m = MemoryReport {
            clients: self.plan.clients as u64,
            idle,
            with_clients: None,
            after_burst: None,
            per_client_uss_kib: None,
            per_client_pss_kib: None,
        };
        let registered = self.connect_phase(report, false)?;
        // An idle client's child gives back the buffers of the join burst
        // a second after its last line (the server's RELEASE_AFTER):
        // measured before that, it is still busy, and how busy depends on
        // how the logins happened to be spread.
        std::thread::sleep(IDLE_AFTER);
        let with = procstat::trees_memory(&pids)?;
        let n = self.driver.counts.registered.max(1) as f64;
        m.per_client_uss_kib = Some((with.uss_kib as f64 - idle.uss_kib as f64) / n);
        m.per_client_pss_kib = Some((with.pss_kib as f64 - idle.pss_kib as f64) / n);
        m.with_clients = Some(with);
        if registered && self.plan.burst {
            self.traffic_phase(report)?;
            self.driver
                .settle(QUIET_NS, ns(self.plan.settle), self.deadline_ns)?;
            m.after_burst = Some(procstat::trees_memory(&pids)?);
        }
        report.memory = Some(m);
        Ok(())
    }
}

fn rate(count: u64, over_ns: u64) -> f64 {
    if over_ns == 0 {
        0.0
    } else {
        count as f64 * 1e9 / over_ns as f64
    }
}

fn ended_word(e: Ended) -> &'static str {
    match e {
        Ended::Stalled => "stalled (nothing sent or delivered for 10 s)",
        Ended::Disconnected => {
            "ended early (the server disconnected clients before they got or sent everything)"
        }
        other => other.word(),
    }
}
