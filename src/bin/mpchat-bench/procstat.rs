//! Reading /proc: the server's process tree (its pid and every descendant,
//! found through each process's ppid), that tree's CPU time and memory
//! (USS and PSS from smaps_rollup), the whole machine's busy time, and the
//! generator's own CPU through getrusage.
//!
//! With several servers (a cluster) the server figures are the sum of
//! their trees; a process given with `--extra-pid` (the cluster's Redis)
//! is measured the same way but kept apart, so the servers' CPU per
//! delivery stays comparable with one server's and the Redis cost is seen
//! on its own.
//!
//! Processes come and go while the tree is read (a fork-per-connection
//! server forks and reaps all the time), so one that vanishes between the
//! listing and the read is skipped, not an error.

use std::collections::HashMap;
use std::fs;
use std::io;

use mpchat::procfs;
use mpchat::status::Memory;
use nix::sys::resource::{UsageWho, getrusage};
use nix::unistd::{SysconfVar, sysconf};

/// The fields of /proc/PID/stat this program uses, in clock ticks.
#[derive(Debug, Clone, Copy)]
struct Stat {
    ppid: i32,
    /// utime + stime.
    own: u64,
    /// cutime + cstime: what reaped descendants used, which would
    /// otherwise vanish with them.
    children: u64,
}

fn read_stat(pid: i32) -> io::Result<Stat> {
    let stat = procfs::read(pid)?;
    // proc(5) prints the children's times as signed; a negative one would
    // be a kernel bug, and counts as nothing rather than as a huge figure.
    let ticks = |t: i64| u64::try_from(t).unwrap_or(0);
    Ok(Stat {
        ppid: stat.ppid,
        own: stat.utime.saturating_add(stat.stime),
        children: ticks(stat.cutime).saturating_add(ticks(stat.cstime)),
    })
}

/// The server pid and every live descendant.
fn tree(root: i32) -> Result<Vec<(i32, Stat)>, String> {
    let mut all: HashMap<i32, Stat> = HashMap::new();
    let dir = fs::read_dir("/proc").map_err(|e| format!("cannot list /proc: {e}"))?;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = read_stat(pid) {
            all.insert(pid, stat);
        }
    }
    if !all.contains_key(&root) {
        return Err(format!("server process {root} is gone"));
    }
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&pid, stat) in &all {
        children.entry(stat.ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    // A pid can only be reached once (each has one parent), and the walk
    // stops after every process was visited, so it is bounded.
    while let Some(pid) = todo.pop() {
        if out.len() > all.len() {
            break;
        }
        if let Some(stat) = all.get(&pid) {
            out.push((pid, *stat));
        }
        if let Some(kids) = children.get(&pid) {
            todo.extend(kids.iter().copied().filter(|&k| k != pid));
        }
    }
    Ok(out)
}

/// CPU time of every thread of `pid` in nanoseconds, from
/// /proc/PID/task/*/schedstat. The utime and stime of /proc/PID/stat are
/// whole clock ticks per process, and a fork-per-connection server's many
/// lightly used processes each round down: summed over the tree they
/// undercount badly. None when schedstat is not available.
fn sched_ns(pid: i32) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            total += ns;
            any = true;
        }
    }
    any.then_some(total)
}

/// CPU of the trees of `roots`, summed: (precise ns, the same from stat
/// ticks only, processes). None when there is no root or one is gone: a
/// sum without one of the servers would pass for all of them.
fn trees_cpu(roots: &[i32], ticks_per_sec: u64) -> Option<(u64, u64, usize)> {
    if roots.is_empty() {
        return None;
    }
    roots.iter().try_fold((0, 0, 0), |(p, t, n), &root| {
        let (dp, dt, dn) = tree_cpu(root, ticks_per_sec)?;
        Some((p + dp, t + dt, n + dn))
    })
}

/// CPU of the tree: (precise ns, the same from stat ticks only, processes).
fn tree_cpu(root: i32, ticks_per_sec: u64) -> Option<(u64, u64, usize)> {
    let t = tree(root).ok()?;
    let tick_ns = 1_000_000_000 / ticks_per_sec.max(1);
    let mut precise = 0;
    let mut ticks = 0;
    for (pid, stat) in &t {
        let own = sched_ns(*pid).unwrap_or(stat.own * tick_ns);
        precise += own + stat.children * tick_ns;
        ticks += stat.own + stat.children;
    }
    Some((precise, ticks * tick_ns, t.len()))
}

pub fn clock_ticks_per_sec() -> Result<u64, String> {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => Ok(t as u64),
        Ok(_) => Err("sysconf(_SC_CLK_TCK) gave no value".into()),
        Err(e) => Err(format!("sysconf(_SC_CLK_TCK): {e}")),
    }
}

/// Busy clock ticks of the whole machine since boot (all CPUs): everything
/// in the `cpu` line of /proc/stat except idle and iowait.
fn machine_busy_ticks() -> Result<u64, String> {
    let text =
        fs::read_to_string("/proc/stat").map_err(|e| format!("cannot read /proc/stat: {e}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("/proc/stat has no cpu line")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user and nice).
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    Ok(get(0) + get(1) + get(2) + get(5) + get(6) + get(7))
}

/// The generator's own user + system CPU, in nanoseconds, all threads.
fn self_cpu_ns() -> Result<u64, String> {
    let u = getrusage(UsageWho::RUSAGE_SELF).map_err(|e| format!("getrusage: {e}"))?;
    let tv_ns = |t: nix::sys::time::TimeVal| {
        t.tv_sec().max(0) as u64 * 1_000_000_000 + t.tv_usec().max(0) as u64 * 1000
    };
    Ok(tv_ns(u.user_time()) + tv_ns(u.system_time()))
}

/// CPU counters at one moment.
#[derive(Debug, Clone)]
pub struct CpuSnap {
    wall_ns: u64,
    generator_ns: u64,
    machine_ticks: u64,
    /// (precise ns, stat-ticks-only ns, processes) of the server trees.
    tree: Option<(u64, u64, usize)>,
    /// Precise ns of each --extra-pid's tree, in the order given.
    extra: Vec<Option<u64>>,
}

/// CPU used between two snapshots.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CpuReport {
    pub wall_s: f64,
    /// getrusage(RUSAGE_SELF) user + sys.
    pub generator_s: f64,
    /// The server tree: each live thread's schedstat run time, plus the
    /// cutime + cstime that reaped descendants left in /proc/PID/stat.
    pub server_tree_s: Option<f64>,
    /// The same from /proc/PID/stat utime + stime + cutime + cstime alone
    /// (whole ticks per process, so it undercounts many small processes).
    pub server_tree_stat_s: Option<f64>,
    /// Processes in the tree (all the servers' trees) at the end.
    pub server_tree_procs: usize,
    /// The whole machine's busy time.
    pub machine_s: f64,
    /// machine − generator: what the server (and anything else) used,
    /// including processes too short-lived to be seen in the tree.
    pub server_machine_s: f64,
    /// --extra-pid processes (the cluster's Redis): not in the server tree
    /// figures, but in machine − generator.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<ExtraCpu>,
}

/// One --extra-pid's CPU between two snapshots.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExtraCpu {
    pub name: String,
    pub pid: i32,
    /// Its tree's schedstat run time (plus what reaped children left);
    /// None when it was gone at either end.
    pub cpu_s: Option<f64>,
}

impl CpuSnap {
    /// Takes a snapshot. `start` orders the reads so the expensive tree
    /// walk falls outside the measured window on both ends. A server that
    /// is gone has no tree; the report then shows no tree CPU rather than
    /// failing the run.
    pub fn take(
        roots: &[i32],
        extra: &[(String, i32)],
        wall_ns: u64,
        ticks_per_sec: u64,
        start: bool,
    ) -> Result<CpuSnap, String> {
        let trees_read = || {
            let tree = trees_cpu(roots, ticks_per_sec);
            let extra = extra
                .iter()
                .map(|(_, pid)| tree_cpu(*pid, ticks_per_sec).map(|t| t.0))
                .collect();
            (tree, extra)
        };
        if start {
            let (tree, extra) = trees_read();
            let generator_ns = self_cpu_ns()?;
            let machine_ticks = machine_busy_ticks()?;
            Ok(CpuSnap {
                wall_ns,
                generator_ns,
                machine_ticks,
                tree,
                extra,
            })
        } else {
            let machine_ticks = machine_busy_ticks()?;
            let generator_ns = self_cpu_ns()?;
            let (tree, extra) = trees_read();
            Ok(CpuSnap {
                wall_ns,
                generator_ns,
                machine_ticks,
                tree,
                extra,
            })
        }
    }

    /// The CPU between this snapshot and `end`; `extra` names the
    /// --extra-pid processes, as given to both.
    pub fn report(&self, end: &CpuSnap, extra: &[(String, i32)], ticks_per_sec: u64) -> CpuReport {
        let tps = ticks_per_sec.max(1) as f64;
        let generator_s = end.generator_ns.saturating_sub(self.generator_ns) as f64 / 1e9;
        let machine_s = end.machine_ticks.saturating_sub(self.machine_ticks) as f64 / tps;
        let (server_tree_s, server_tree_stat_s) = match (self.tree, end.tree) {
            (Some((a, sa, _)), Some((b, sb, _))) => (
                Some(b.saturating_sub(a) as f64 / 1e9),
                Some(sb.saturating_sub(sa) as f64 / 1e9),
            ),
            _ => (None, None),
        };
        CpuReport {
            wall_s: end.wall_ns.saturating_sub(self.wall_ns) as f64 / 1e9,
            generator_s,
            server_tree_s,
            server_tree_stat_s,
            server_tree_procs: end.tree.map_or(0, |t| t.2),
            machine_s,
            server_machine_s: (machine_s - generator_s).max(0.0),
            extra: extra
                .iter()
                .enumerate()
                .map(|(i, (name, pid))| ExtraCpu {
                    name: name.clone(),
                    pid: *pid,
                    cpu_s: match (self.extra.get(i), end.extra.get(i)) {
                        (Some(Some(a)), Some(Some(b))) => Some(b.saturating_sub(*a) as f64 / 1e9),
                        _ => None,
                    },
                })
                .collect(),
        }
    }
}

/// Memory of the server tree at one moment, in KiB.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct MemSnap {
    pub processes: usize,
    /// Private_Clean + Private_Dirty, summed.
    pub uss_kib: u64,
    pub pss_kib: u64,
    pub rss_kib: u64,
}

/// Memory of the trees of `roots` (one per server), summed.
pub fn trees_memory(roots: &[i32]) -> Result<MemSnap, String> {
    let mut snap = MemSnap::default();
    for &root in roots {
        let before = snap.processes;
        for (pid, _) in tree(root)? {
            let Some(m) = Memory::of(pid as u32) else {
                continue;
            };
            snap.processes += 1;
            snap.uss_kib += m.uss_kib;
            snap.pss_kib += m.pss_kib;
            snap.rss_kib += m.rss_kib;
        }
        if snap.processes == before {
            return Err(format!(
                "cannot read /proc/{root}/smaps_rollup (permission?)"
            ));
        }
    }
    if snap.processes == 0 {
        return Err("no server pid to read the memory of".into());
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_tree_is_found() {
        let me = std::process::id() as i32;
        let t = tree(me).expect("own tree");
        assert_eq!(t[0].0, me);
    }

    #[test]
    fn several_trees_are_summed_and_a_missing_one_spoils_the_sum() {
        let me = std::process::id() as i32;
        let tps = clock_ticks_per_sec().expect("ticks");
        let one = trees_cpu(&[me], tps).expect("own tree");
        // The same tree twice: twice its processes, and at least twice the
        // CPU it had a moment before.
        let two = trees_cpu(&[me, me], tps).expect("own tree twice");
        assert_eq!(two.2, 2 * one.2);
        assert!(two.0 >= 2 * one.0);
        assert_eq!(trees_cpu(&[], tps), None);
        // Pid 0 is the scheduler, never in /proc.
        assert_eq!(trees_cpu(&[me, 0], tps), None);
    }
}
