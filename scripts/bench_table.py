#!/usr/bin/env python3
"""Builds BENCHMARKS.md from the mpchat-bench JSON that scripts/bench.sh
leaves in its results dir: PART--FIGURE--SERVER--rK.json (+ .meta.json).

Usage: scripts/bench_table.py RESULTS_DIR OUT.md
"""
import glob
import json
import os
import statistics
import sys
import time
from collections import defaultdict

res_dir, out_path = sys.argv[1], sys.argv[2]


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


# runs[part][(figure, server)] = [run, ...]; run = {"r": json or None, "m": meta}
runs = defaultdict(lambda: defaultdict(list))
mtimes = defaultdict(list)
for path in sorted(glob.glob(os.path.join(res_dir, "*--*--*--r*.json"))):
    if path.endswith(".meta.json"):
        continue
    part, figure, server, _ = os.path.basename(path)[: -len(".json")].split("--")
    meta = load(path[: -len(".json")] + ".meta.json", {})
    runs[part][(figure, server)].append({"r": load(path), "m": meta, "name": os.path.basename(path)})
    mtimes[part].append(os.path.getmtime(path))
machine = load(os.path.join(res_dir, "machine.json"), {})
quick = machine.get("quick") == "1"


def ok(run):
    return run["r"] is not None and run["r"].get("ok") and run["m"].get("rc", 1) == 0


def safe(get, j):
    try:
        return get(j)
    except (KeyError, TypeError, AttributeError):
        return None


def pick(rs, get):
    """Values from the ok runs, or (marked) from the failed runs that have one."""
    good = [v for v in (safe(get, r["r"]) for r in rs if ok(r)) if v is not None]
    if good:
        return good, ""
    return [v for v in (safe(get, r["r"]) for r in rs) if v is not None], "*"


def fmt(v, digits):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.{digits}f}"


def cell(rs, get, digits):
    vals, mark = pick(rs, get)
    if not vals:
        return "failed"
    med = statistics.median(vals)
    s = fmt(med, digits)
    if len(vals) > 1:
        s += f" ({fmt(min(vals), digits)}–{fmt(max(vals), digits)})"
    return s + mark


def median(rs, get):
    vals, mark = pick(rs, get)
    return (statistics.median(vals) if vals and not mark else None)


def okcount(rs):
    return f"{sum(ok(r) for r in rs)}/{len(rs)}"


# The parts in the order BENCHMARKS.md shows them.
PARTS = ["fanout", "connect", "memory", "scale", "web", "cluster"]

SERVER = {"mpchat": "mpchat", "mpchat-json": "mpchat, JSON clients",
          "mpchat-prompt": "mpchat, client waits for the prompt",
          "mpchat-echo": "mpchat --echo", "c-echo": "C echo-server", "ngircd": "ngircd",
          "mpchat-ws": "mpchat, WebSocket clients", "node-ws": "Node.js ws",
          "cluster3": "3 mpchat servers, one Redis", "single": "1 mpchat server (no --cluster)"}
ORDER = ["mpchat", "mpchat-json", "mpchat-prompt", "mpchat-echo", "c-echo", "ngircd",
         "mpchat-ws", "node-ws", "cluster3", "single"]


def by_figure(part):
    figs = defaultdict(dict)
    for (fig, server), rs in runs[part].items():
        figs[fig][server] = rs
    return figs


def order_word(orders):
    if not orders:
        return "–"
    if False in orders:
        return "NO"
    return "yes" if all(o is True for o in orders) else "same, incomplete"


def fig_key(fig):
    n = int(fig.split("-")[0][1:]) if fig.startswith("n") else 0
    return ("paced" in fig, "nowindow" in fig, "rooms" in fig, n)


def lost_cell(rs):
    """The worst run's lost deliveries, with their share of the expected."""
    fs = [r["r"]["fanout"] for r in rs if r["r"] and r["r"].get("fanout")]
    if not fs:
        return "–"
    worst = max(fs, key=lambda f: f["lost"])
    if not worst["lost"]:
        return "0"
    share = 100.0 * worst["lost"] / worst["expected"] if worst["expected"] else 0.0
    return f"**{fmt(worst['lost'], 0)}** ({share:.1f}%)"


def fanout_cells(rs):
    """delivered/s, p50, p99, CPU per delivery (machine, tree) and lost."""
    f = lambda r: r["fanout"]  # noqa: E731
    return " | ".join([
        cell(rs, lambda r: f(r)["deliveries_per_s"], 0),
        cell(rs, lambda r: f(r)["latency_ms"]["p50_ms"], 2),
        cell(rs, lambda r: f(r)["latency_ms"]["p99_ms"], 2),
        cell(rs, lambda r: f(r)["server_cpu_per_delivery"]["machine_us"], 2),
        cell(rs, lambda r: f(r)["server_cpu_per_delivery"]["tree_us"], 2),
        lost_cell(rs),
    ])


def extra_per_delivery(rs, name):
    """An --extra-pid's CPU (the cluster's Redis) per delivery, in µs."""
    return cell(rs, lambda r: r["fanout"]["server_cpu_per_delivery"]["extra_us"][name], 2)


def extra_core(rs, name):
    """An --extra-pid's CPU as a share of one core over the traffic."""
    def get(r):
        cpu = r["fanout"]["cpu"]
        e = next(e for e in cpu["extra"] if e["name"] == name)
        return 100.0 * e["cpu_s"] / cpu["wall_s"]
    return cell(rs, get, 0)


def dropped_cell(rs):
    """The most clients the server disconnected in one run (of them senders)."""
    fs = [r["r"]["fanout"] for r in rs if r["r"] and r["r"].get("fanout")]
    if not fs:
        return "–"
    worst = max(fs, key=lambda f: f.get("dropped_clients", 0))
    n = worst.get("dropped_clients", 0)
    if not n:
        return "0"
    senders = worst.get("dropped_senders")
    return f"**{n}**" + ("" if senders is None else f" ({senders} senders)")


out = []
w = out.append
title = "Benchmarks" + (" (quick run: tiny counts, only to check the script)" if quick else "")
w(f"# {title}\n")
w(f"Written by `scripts/bench.sh{' --quick' if quick else ''}` from the JSON in `{res_dir}/`. "
  f"Each figure was run {machine.get('runs', '?')} time(s): the median, with min–max in "
  "brackets when there are several runs. A value marked * comes from runs that failed "
  "(no run of that figure succeeded). Rerun one part with `scripts/bench.sh --only PART`; "
  "rebuild this file from the results with "
  f"`python3 scripts/bench_table.py {res_dir} {os.path.basename(out_path)}`.\n")

w("## Machine\n")
w("| | |\n|---|---|")
for key, label in [("cpu_model", "CPU"), ("nproc", "nproc"), ("mem_total", "memory"),
                   ("kernel", "kernel"), ("date", "date (last run)"), ("rustc", "rustc"),
                   ("commit", "mpchat commit"),
                   ("ngircd", "ngircd"), ("node", "Node.js, ws (the web peer)"),
                   ("redis", "Redis (the cluster part)"), ("nofile", "RLIMIT_NOFILE (soft, raised to hard)"),
                   ("loadavg", "load average at start")]:
    w(f"| {label} | {machine.get(key, '?')} |")
for part in PARTS:
    if mtimes[part]:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(min(mtimes[part])))
        w(f"| {part} measured | {when} |")
w("")

# ---- targets ----
targets = []


def target(what, ours, theirs, ratio, goal, passed, digits=2):
    mark = "–" if passed is None else ("✓" if passed else "✗")
    targets.append(f"| {what} | {fmt(ours, digits)} | {fmt(theirs, digits)} | "
                   f"{'–' if ratio is None else f'{ratio:.2f}×'} | {goal} | {mark} |")


def lost_target(what, runs):
    """The deliveries lost in the worst of `runs`, against the goal of none."""
    fs = [r["r"]["fanout"] for r in runs if r["r"] and r["r"].get("fanout")]
    worst = max((f["lost"] for f in fs), default=None)
    target(what, worst, None, None, "0", None if worst is None else worst == 0, 0)


def ratio(a, b):
    return a / b if a is not None and b else None


fan = by_figure("fanout")
undercount = []
for fig in sorted(fan, key=fig_key):
    m, n = fan[fig].get("mpchat", []), fan[fig].get("ngircd", [])
    paced = "paced" in fig
    if "nowindow" in fig:
        # Senders without a window: the figure that matters is the loss.
        fs = [r["r"]["fanout"] for r in m if r["r"] and r["r"].get("fanout")]
        worst = max((f["lost"] for f in fs), default=None)
        target(f"fan-out {fig}: deliveries lost (worst run), mpchat", worst, None, None, "0",
               None if worst is None else worst == 0, 0)
        continue
    if not paced:
        a = median(m, lambda r: r["fanout"]["deliveries_per_s"])
        b = median(n, lambda r: r["fanout"]["deliveries_per_s"])
        q = ratio(a, b)
        target(f"fan-out {fig}: delivered/s, mpchat vs ngircd", a, b, q, "≥ 1.5×",
               None if q is None else q >= 1.5, 0)
    else:
        a = median(m, lambda r: r["fanout"]["latency_ms"]["p99_ms"])
        b = median(n, lambda r: r["fanout"]["latency_ms"]["p99_ms"])
        q = ratio(a, b)
        target(f"fan-out {fig}: p99 latency (ms), mpchat vs ngircd", a, b, q, "≤ 0.5× and < 5 ms",
               None if q is None else (q <= 0.5 and a < 5.0))
    lim = 1.5 if paced else 1.0
    for key, label in [("machine_us", "machine − generator"), ("tree_us", "server tree")]:
        cpu = lambda r: r["fanout"]["server_cpu_per_delivery"][key]  # noqa: E731
        a, b = median(m, cpu), median(n, cpu)
        q = ratio(a, b)
        target(f"fan-out {fig}: server CPU per delivery (µs, {label}), mpchat vs ngircd",
               a, b, q, f"≤ {lim}×", None if q is None else q <= lim)
        if key == "machine_us":
            mach_ab = (a, b)
        else:
            for who, mach, tree in [("mpchat", mach_ab[0], a), ("ngircd", mach_ab[1], b)]:
                if mach is not None and tree and mach < 0.9 * tree:
                    undercount.append(f"{fig} {who}: machine − generator {mach:.2f} µs "
                                      f"< server tree {tree:.2f} µs")
con = by_figure("connect").get("in-flight-16", {})
if con:
    rate = lambda r: r["cycles"]["cycles_per_s"]  # noqa: E731
    a, b = median(con.get("mpchat", []), rate), median(con.get("c-echo", []), rate)
    q = ratio(a, b)
    target("connect rate, 16 in flight (cycles/s), mpchat vs C echo-server", a, b, q, "≥ 0.8×",
           None if q is None else q >= 0.8, 0)
for fig, per in by_figure("memory").items():
    a = median(per.get("mpchat", []), lambda r: r["memory"]["per_client_uss_kib"])
    target(f"memory per idle client ({fig}), mpchat USS (KiB)", a, None, None, "≤ 64 KiB",
           None if a is None else a <= 64, 1)
web = by_figure("web")
for fig in sorted(web, key=fig_key):
    m, n = web[fig].get("mpchat-ws", []), web[fig].get("node-ws", [])
    if "memory" in fig:
        a = median(m, lambda r: r["memory"]["per_client_uss_kib"])
        regs = [safe(lambda r: r["connect"]["registered"], r["r"]) for r in m if ok(r)]
        target(f"web {fig}: WebSocket sessions held at once, mpchat", max(regs, default=None),
               None, None, "1 000", None if not regs else max(regs) >= 1000, 0)
        continue
    lost_target(f"web {fig}: deliveries lost (worst run, both servers)", m + n)
    if "paced" in fig:
        a = median(m, lambda r: r["fanout"]["latency_ms"]["p99_ms"])
        b = median(n, lambda r: r["fanout"]["latency_ms"]["p99_ms"])
        q = ratio(a, b)
        target(f"web {fig}: p99 latency (ms), mpchat vs Node.js ws", a, b, q, "< 1×",
               None if q is None else q < 1.0)
    else:
        a = median(m, lambda r: r["fanout"]["deliveries_per_s"])
        b = median(n, lambda r: r["fanout"]["deliveries_per_s"])
        q = ratio(a, b)
        target(f"web {fig}: delivered/s, mpchat vs Node.js ws", a, b, q, "> 1×",
               None if q is None else q > 1.0, 0)
clu = by_figure("cluster")
for fig in sorted(clu, key=fig_key):
    c, one = clu[fig].get("cluster3", []), clu[fig].get("single", [])
    lost_target(f"cluster {fig}: deliveries lost (worst run, 3 servers and 1)", c + one)
    if "paced" in fig:
        a = median(c, lambda r: r["fanout"]["latency_ms"]["p99_ms"])
        b = median(one, lambda r: r["fanout"]["latency_ms"]["p99_ms"])
        target(f"cluster {fig}: p99 latency (ms), 3 servers through Redis vs 1 server", a, b,
               ratio(a, b), "< 10 ms", None if a is None else a < 10.0)
    else:
        a = median(c, lambda r: r["fanout"]["deliveries_per_s"])
        b = median(one, lambda r: r["fanout"]["deliveries_per_s"])
        q = ratio(a, b)
        target(f"cluster {fig}: delivered/s, 3 servers through Redis vs 1 server", a, b, q, "> 1×",
               None if q is None else q > 1.0, 0)
if targets:
    w("## Targets\n")
    w("✓ met, ✗ not met, – not measured (a run failed or the peer is missing). "
      "Ratios are of the medians." + (" Quick-run counts are far too small to judge "
                                      "anything by: this only shows the table works." if quick else "") + "\n")
    w("| target | mpchat | peer | ratio | goal | |\n|---|---|---|---|---|---|")
    out.extend(targets)
    w("")
    if undercount:
        w("**The machine − generator CPU figure undercounts here**: the machine's busy time "
          "(/proc/stat, sampled at each clock tick) came out below what the server processes "
          "alone used (schedstat, exact), which cannot be. Work done in short bursts between "
          "two ticks (paced traffic, very short runs) is missed by tick sampling. Judge CPU by "
          "the server-tree rows where they disagree: " + "; ".join(undercount) + ".\n")

# ---- fan-out ----
if fan:
    w("## Fan-out\n")
    w("Every sender's message goes to every client (mpchat also echoes it to its sender; "
      "IRC does not). Server CPU per delivery is (whole machine's busy time − mpchat-bench's "
      "own CPU) / deliveries, so it includes anything else running on the machine; \"tree\" is "
      "the server processes' own CPU (schedstat) / deliveries, which does not. "
      "\"one order\": every receiver saw the messages in the same order, in every run. "
      "Senders keep at most 64 messages on their way, except in the \"no window\" row, where "
      "each writes as fast as its socket takes the bytes (a paste, a bot): a server that "
      "drops clients who fall behind loses lines there. In the rooms row the clients are "
      "spread over rooms (client i in #r{i mod R}, each joined before the traffic starts) and "
      "every client talks in its own: a message goes to its sender's room only, \"one order\" "
      "is per room, and a line that reaches a client of another room fails the run. "
      "\"lost\": deliveries that never "
      "arrived in the worst run; \"dropped\": clients the server disconnected in the worst "
      "run.\n")
    w("| figure | server | runs ok | delivered/s | p50 ms | p99 ms | CPU µs/delivery | (tree) | lost | dropped | one order |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for fig in sorted(fan, key=fig_key):
        for server in ORDER:
            rs = fan[fig].get(server)
            if not rs:
                continue
            f0 = next((r["r"]["fanout"] for r in rs if r["r"] and r["r"].get("fanout")), None)
            desc = fig
            if f0:
                n = (next(r["r"] for r in rs if r["r"] and r["r"].get("fanout"))["connect"]["clients"])
                speed = "full speed" if f0["rate"] == 0 else f"{f0['rate']} msg/s"
                size = "" if f0.get("size", 64) == 64 else f" of {f0['size']} B"
                window = ", no window" if f0.get("window") == 0 else ""
                r0 = next(r["r"] for r in rs if r["r"] and r["r"].get("fanout"))
                rooms = r0.get("rooms", 1)
                where = f" in {rooms} rooms" if rooms > 1 else ""
                desc = (f"N={n}{where}, {f0['senders']}×{f0['messages_per_sender']}{size}, "
                        f"{speed}{window}")
            # yes / NO / "same, incomplete" (every receiver agreed, but not
            # everything arrived, so one order is not shown).
            orders = []
            for r in rs:
                o = (r["r"] or {}).get("fanout", {}) or {}
                o = o.get("order")
                # Nothing to compare when every receiver sends on IRC (no
                # receiver gets its own lines, so none gets them all).
                if o and o["compared"] > 0:
                    orders.append(True if o["one_global_order"] else
                                  ("same, incomplete" if o["agreeing"] == o["compared"] else False))
            w(f"| {desc} | {SERVER[server]} | {okcount(rs)} | {fanout_cells(rs)} "
              f"| {dropped_cell(rs)} "
              f"| {order_word(orders)} |")
    w("")

# ---- connect ----
cons = by_figure("connect")
if cons:
    w("## Connect rate\n")
    w("One cycle: connect, register (mpchat: nickname; IRC: NICK/USER, 001, JOIN), first "
      "reply, close; echo servers: one line out and back. The mpchat client sends its "
      "nickname at once, as `printf 'nick\\n' | nc` does (`--speak-first`); one that waits "
      "for the prompt gets it only after mpchat has waited up to 100 ms for a first line, "
      "to tell people from programs (the \"waits for the prompt\" row). JSON clients send "
      "their hello at once.\n")
    w("| in flight | server | proto | runs ok | cycles/s | cycle p50 ms | cycle p99 ms | CPU µs/cycle | (tree) |")
    w("|---|---|---|---|---|---|---|---|---|")
    for fig in sorted(cons, key=lambda f: int(f.rsplit("-", 1)[1])):
        for server in ORDER:
            rs = cons[fig].get(server)
            if not rs:
                continue
            r0 = next((r["r"] for r in rs if r["r"]), None)
            inflight = r0["cycles"]["in_flight"] if r0 and r0.get("cycles") else fig.rsplit("-", 1)[1]
            asked = fig.rsplit("-", 1)[1]
            shown = f"{inflight}" + ("†" if str(inflight) != asked else "")
            w(f"| {shown} | {SERVER[server]} | {r0['proto'] if r0 else '?'} | {okcount(rs)} "
              f"| {cell(rs, lambda r: r['cycles']['cycles_per_s'], 0)} "
              f"| {cell(rs, lambda r: r['cycles']['cycle_ms']['p50_ms'], 2)} "
              f"| {cell(rs, lambda r: r['cycles']['cycle_ms']['p99_ms'], 2)} "
              f"| {cell(rs, lambda r: r['cycles']['server_cpu_per_cycle']['machine_us'], 0)} "
              f"| {cell(rs, lambda r: r['cycles']['server_cpu_per_cycle']['tree_us'], 0)} |")
    w("\n† ngircd: at most 8 in flight (its listen backlog is 10).\n")

# ---- memory ----
mems = by_figure("memory")
if mems:
    w("## Memory per idle client\n")
    w("(server tree with N registered idle clients − the idle tree) / N, from smaps_rollup. "
      "USS counts only private pages; PSS also a share of the pages processes share "
      "(fork-per-connection children share most of their pages).\n")
    w("| N | server | runs ok | USS KiB/client | PSS KiB/client | tree USS MiB | tree PSS MiB | processes |")
    w("|---|---|---|---|---|---|---|---|")
    for fig in sorted(mems, key=fig_key):
        for server in ORDER:
            rs = mems[fig].get(server)
            if not rs:
                continue
            w(f"| {fig[1:]} | {SERVER[server]} | {okcount(rs)} "
              f"| {cell(rs, lambda r: r['memory']['per_client_uss_kib'], 1)} "
              f"| {cell(rs, lambda r: r['memory']['per_client_pss_kib'], 1)} "
              f"| {cell(rs, lambda r: r['memory']['with_clients']['uss_kib'] / 1024, 1)} "
              f"| {cell(rs, lambda r: r['memory']['with_clients']['pss_kib'] / 1024, 1)} "
              f"| {cell(rs, lambda r: r['memory']['with_clients']['processes'], 0)} |")
    w("")

# ---- scale ----
scale = by_figure("scale")
if scale:
    w("## Scale\n")
    w("mpchat alone, `--connect-only`: N clients connect and register, then are held for a "
      "second. Registering N clients makes the room announce about N²/2 joins, so the time "
      "grows with N². One run per step; the steps stop at the first failure.\n")
    w("| N | result | registered | registration s | registered/s | room quiet after s | run wall s |")
    w("|---|---|---|---|---|---|---|")
    reached = 0
    for fig in sorted(scale, key=fig_key):
        for r in scale[fig].get("mpchat", []):
            c = (r["r"] or {}).get("connect") or {}
            good = ok(r)
            n = int(fig[1:])
            if good:
                reached = max(reached, n)
            settle = f"{c['settle_s']:.1f}" + ("" if c.get("settled") else " (still busy)") if c else "–"
            w(f"| {n} | {'ok' if good else 'FAILED'} | {c.get('registered', '–')}/{n} "
              f"| {fmt(c.get('elapsed_s'), 1)} | {fmt(c.get('registered_per_s'), 0)} "
              f"| {settle} | {fmt(r['m'].get('wall_s'), 1)} |")
    w(f"\nLargest N reached: **{reached or 'none'}** (tried up to "
      f"{max(int(f[1:]) for f in scale)}).\n")

# ---- web ----
if web:
    w("## WebSocket (the web page's clients)\n")
    w("`mpchat-bench --proto ws`: each client upgrades at `/ws` (with the `Origin` a page on "
      "the server sends) and speaks the JSON messages of PROTOCOL.md, one per masked text "
      "frame, as the web page does. The peer is scripts/ws-peer/server.mjs: Node.js with the "
      "`ws` package (and `bufferutil`), one process that serialises each event once and "
      "sends it to every client. Same columns as the fan-out table; the memory row is the "
      "server tree's USS per idle session with N sessions open.\n")
    w("| figure | server | runs ok | delivered/s | p50 ms | p99 ms | CPU µs/delivery | (tree) | lost | USS KiB/session |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for fig in sorted(web, key=fig_key):
        for server in ORDER:
            rs = web[fig].get(server)
            if not rs:
                continue
            r0 = next((r["r"] for r in rs if r["r"]), None) or {}
            n = (r0.get("connect") or {}).get("clients", fig.split("-")[0][1:])
            f0 = r0.get("fanout")
            if f0:
                speed = "full speed" if f0["rate"] == 0 else f"{f0['rate']} msg/s"
                desc = f"N={n}, {f0['senders']}×{f0['messages_per_sender']}, {speed}"
                w(f"| {desc} | {SERVER[server]} | {okcount(rs)} | {fanout_cells(rs)} | |")
            else:
                w(f"| N={n} sessions, idle | {SERVER[server]} | {okcount(rs)} "
                  f"| | | | | | | {cell(rs, lambda r: r['memory']['per_client_uss_kib'], 1)} |")
    w("")

# ---- cluster ----
if clu:
    rtt = load(os.path.join(res_dir, "cluster-redis-rtt.json"), {})
    # Senders per server, as a cluster run reports them (the same in all).
    spread = next((r["r"]["targets"] for rs in (per.get("cluster3", []) for per in clu.values())
                   for r in rs if r["r"] and r["r"].get("targets")), [])
    each = (" (N/3 users each; senders " + ", ".join(str(t["senders"]) for t in spread) + ")"
            if spread else " (N/3 users each)")
    w("## Several servers (cluster)\n")
    w("Three mpchat servers started with `--cluster redis://127.0.0.1:PORT --server-name a|b|c` "
      "(each its own `--data-dir`) share one redis-server that bench.sh starts for the part "
      "(loopback, no persistence, emptied before each run). mpchat-bench connects client i to "
      f"server i mod 3, and so sender s to server s mod 3{each}, all in one room; every "
      "line goes through Redis and back to every server, and every delivery is counted and "
      "timed as with one server (the sender's timestamp in the line, one clock). \"one "
      "server\" is one mpchat without `--cluster` holding all the users, with the same load. "
      "CPU µs/delivery is the machine's busy time − mpchat-bench's own, so it includes Redis; "
      "\"(tree)\" sums the three servers' process trees (schedstat) and leaves Redis out; "
      "Redis's own CPU is in its two columns (its tree, per delivery and as a share of one "
      "core over the traffic). Same other columns as the fan-out table.\n")
    w("| figure | servers | runs ok | delivered/s | p50 ms | p99 ms | CPU µs/delivery | (tree) "
      "| lost | Redis µs/delivery | Redis % of a core | dropped | one order |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for fig in sorted(clu, key=fig_key):
        for server in ORDER:
            rs = clu[fig].get(server)
            if not rs:
                continue
            r0 = next((r["r"] for r in rs if r["r"] and r["r"].get("fanout")), None) or {}
            f0 = r0.get("fanout")
            n = (r0.get("connect") or {}).get("clients", fig.split("-")[0][1:])
            desc = fig
            if f0:
                speed = "full speed" if f0["rate"] == 0 else f"{f0['rate']} msg/s"
                desc = f"N={n}, {f0['senders']}×{f0['messages_per_sender']}, {speed}"
            redis = server == "cluster3"
            orders = []
            for r in rs:
                o = ((r["r"] or {}).get("fanout") or {}).get("order")
                if o and o["compared"] > 0:
                    orders.append(True if o["one_global_order"] else
                                  ("same, incomplete" if o["agreeing"] == o["compared"] else False))
            w(f"| {desc} | {SERVER[server]} | {okcount(rs)} | {fanout_cells(rs)} "
              f"| {extra_per_delivery(rs, 'redis') if redis else '–'} "
              f"| {extra_core(rs, 'redis') if redis else '–'} "
              f"| {dropped_cell(rs)} | {order_word(orders)} |")
    w("")
    # The goals, judged from the medians above.
    lat = lambda q: (lambda r: r["fanout"]["latency_ms"][q])  # noqa: E731
    rate = lambda r: r["fanout"]["deliveries_per_s"]  # noqa: E731
    said = []
    try:
        rtt_ms = float(rtt.get("avg_ms"))
    except (TypeError, ValueError):
        rtt_ms = None
    for fig in sorted(clu, key=fig_key):
        c, one = clu[fig].get("cluster3", []), clu[fig].get("single", [])
        if "paced" in fig:
            c50, o50 = median(c, lat("p50_ms")), median(one, lat("p50_ms"))
            c99, o99 = median(c, lat("p99_ms")), median(one, lat("p99_ms"))
            if None in (c50, o50, c99, o99):
                said.append(f"**Latency, {fig}**: not judged (a run failed).")
                continue
            verdict = "met" if c99 < 10.0 else "**not met**"
            trip = ""
            if rtt_ms:
                trips = (c50 - o50) / rtt_ms
                within = "within one" if trips <= 1.0 else f"**{trips:.1f}**"
                trip = (f" One round trip to this Redis, idle, takes {rtt_ms:.2f} ms "
                        f"(redis-cli --latency): the median added is {within} round trip"
                        f"{'' if trips <= 1.0 else 's'}.")
            alone = ""
            if o99 >= 10.0:
                alone = (f" One server alone is already at {o99:.2f} ms: at this N, handing each "
                         "line to every user's process on these cores, not Redis, sets the p99.")
            said.append(
                f"**Latency, {fig}** (goal: the cluster adds at most one Redis round trip; p99 "
                f"under 10 ms paced): p99 {c99:.2f} ms through the cluster against {o99:.2f} ms "
                f"on one server, p50 {c50:.2f} against {o50:.2f} ms, so the cluster adds "
                f"{c50 - o50:+.2f} ms at the median and {c99 - o99:+.2f} ms at p99. "
                f"p99 under 10 ms: {verdict}.{alone}{trip}")
        else:
            a, b = median(c, rate), median(one, rate)
            if a is None or b is None:
                said.append(f"**Throughput, {fig}**: not judged (a run failed).")
                continue
            verdict = "met" if a > b else "**not met**"
            tree = lambda r: r["fanout"]["server_cpu_per_delivery"]["tree_us"]  # noqa: E731
            redis_us = median(c, lambda r: r["fanout"]["server_cpu_per_delivery"]["extra_us"]["redis"])
            ct, ot = median(c, tree), median(one, tree)
            cpu = ""
            if ct is not None and ot is not None:
                cpu = (f" Each delivery costs the three servers {ct:.2f} µs of CPU"
                       + (f" and Redis {redis_us:.2f} µs" if redis_us is not None else "")
                       + f", against {ot:.2f} µs for one server alone.")
            said.append(
                f"**Throughput, {fig}** (goal: three servers deliver more per second than one): "
                f"{fmt(a, 0)} deliveries/s through the cluster against {fmt(b, 0)} on one "
                f"server ({a / b:.2f}×): {verdict}.{cpu}")
    # How busy the machine was with work that is not this benchmark's:
    # its busy time less mpchat-bench, the servers and Redis.
    def others(r):
        cpu = r["fanout"]["cpu"]
        ours = cpu["generator_s"] + cpu["server_tree_s"] + sum(e["cpu_s"] for e in cpu.get("extra", []))
        return 100.0 * max(cpu["machine_s"] - ours, 0.0) / cpu["wall_s"]
    busy = [v for per in clu.values() for rs in per.values() for r in rs
            for v in [safe(others, r["r"])] if v is not None]
    if busy:
        said.append(f"Other work on the machine while the traffic ran (its busy time not "
                    f"charged to mpchat-bench, the servers or Redis: other processes, and kernel "
                    f"work charged to none of them): {statistics.median(busy):.0f}% of a "
                    f"core in the median run, {max(busy):.0f}% at most, of "
                    f"{machine.get('nproc', '?')} cores; where that is high the figures, the "
                    "paced latencies above all, are the machine's as much as mpchat's.")
    said.append("This machine has " + str(machine.get("nproc", "?")) + " cores for the three "
                "servers, Redis and mpchat-bench together (and anything else running), so more "
                "servers cannot bring more CPU here: the figures show what the cluster costs on "
                "one machine, not how it scales over several.")
    w("\n\n".join(said) + "\n")

# ---- notes, failures, commands ----
notes = []
for part in PARTS:
    try:
        with open(os.path.join(res_dir, f"notes-{part}.txt")) as f:
            notes += [f"{part}: {line.strip()}" for line in f if line.strip()]
    except OSError:
        pass
notes.append("The servers log at their default level (mpchat: info; ngircd -n: to stderr); "
             "mpchat-bench reads that output and drops it.")
if machine.get("ngircd_note"):
    notes.append(machine["ngircd_note"])
w("## Notes\n")
out.extend(f"- {n}" for n in dict.fromkeys(notes))
w("")

problems = []
for part in PARTS:
    for (fig, server), rs in sorted(runs[part].items()):
        for r in rs:
            j = r["r"] or {}
            if not ok(r):
                why = "; ".join(j.get("problems") or []) or " / ".join(r["m"].get("stderr_tail") or []) \
                    or f"exit {r['m'].get('rc')}"
                problems.append(f"- **failed** {r['name']}: {why}")
        warns = sorted({wn for r in rs for wn in ((r["r"] or {}).get("warnings") or [])})
        for wn in warns:
            problems.append(f"- warning, {part} {fig} {SERVER[server]}: {wn}")
if problems:
    w("## Failures and warnings\n")
    out.extend(problems)
    w("")

w("## Commands\n")
w("Run from the repo root after `cargo build --release` and `make -C c-reference`. "
  "`<tmp>` is the temp dir bench.sh made; the ngircd config it held is below. "
  "`<redis-port>` and `<redis-pid>` are those of the redis-server bench.sh started for the "
  "cluster part (`redis-server --port PORT --bind 127.0.0.1 --save '' --appendonly no "
  "--daemonize no`).\n")
for part in PARTS:
    try:
        with open(os.path.join(res_dir, f"commands-{part}.tsv")) as f:
            rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except OSError:
        continue
    if not rows:
        continue
    w(f"### {part}\n")
    for fig, server, cmd in rows:
        w(f"- {fig}, {SERVER[server]}:\n  `{cmd}`")
    w("")
try:
    with open(os.path.join(res_dir, "ngircd.conf")) as f:
        w("### ngircd config (`<tmp>/ngircd.conf`)\n")
        w("```ini\n" + f.read().rstrip() + "\n```\n")
except OSError:
    pass

with open(out_path, "w") as f:
    f.write("\n".join(out).rstrip() + "\n")
