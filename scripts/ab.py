#!/usr/bin/env python3
"""Compare two mpchat builds on the same benchmark, in interleaved runs.

This machine's speed drifts by 10-15% from one minute to the next, so a
before/after figure is only worth quoting from runs of A and B taken in
turn (A B B A A B ...), compared pair by pair. For each pair this runs
mpchat-bench once against each server binary, each with a fresh data
directory, and prints the median and range of each figure and of the
B/A ratio over the pairs.

    scripts/ab.py --pairs 9 --bench fanout OLD/mpchat target/release/mpchat
    scripts/ab.py --bench fanout1000 OLD/mpchat target/release/mpchat
    scripts/ab.py --bench paced  OLD/mpchat target/release/mpchat
    scripts/ab.py --bench connect OLD/mpchat target/release/mpchat
    scripts/ab.py --bench memory OLD/mpchat target/release/mpchat

The load generator is target/release/mpchat-bench (--generator to change
it); both servers get the same one. The admission and flood limits are
off, as in every load test.

Both server binaries are first copied into one temporary directory, and
run from there: the same bytes run about 10% slower in the connect test
from the file the linker wrote than from a copy of it (measured here,
pair by pair, both ways round), which would otherwise count against
whichever build is fresh from cargo.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

LIMITS_OFF = "--bind 127.0.0.1 --max-per-ip 0 --max-conn-rate 0 --max-unregistered 0 --flood-rate 0"

# Each benchmark: mpchat-bench's arguments, and the figures to compare as
# (name, path in the JSON report).
BENCHES = {
    "fanout": (
        "--test fanout --clients 100 --senders 10 --messages 3000",
        [
            ("deliveries/s", ("fanout", "deliveries_per_s")),
            ("server CPU us/delivery", ("fanout", "server_cpu_per_delivery", "tree_us")),
        ],
    ),
    "fanout1000": (
        "--test fanout --clients 1000 --senders 10 --messages 300",
        [
            ("deliveries/s", ("fanout", "deliveries_per_s")),
            ("server CPU us/delivery", ("fanout", "server_cpu_per_delivery", "tree_us")),
        ],
    ),
    "nowindow": (
        "--test fanout --clients 100 --senders 10 --messages 1000 --size 80 --window 0",
        [
            ("deliveries/s", ("fanout", "deliveries_per_s")),
            ("server CPU us/delivery", ("fanout", "server_cpu_per_delivery", "tree_us")),
            ("lost", ("fanout", "lost")),
        ],
    ),
    "paced": (
        "--test fanout --clients 100 --senders 10 --messages 200 --rate 1000",
        [
            ("p50 ms", ("fanout", "latency_ms", "p50_ms")),
            ("p99 ms", ("fanout", "latency_ms", "p99_ms")),
            ("server CPU us/delivery", ("fanout", "server_cpu_per_delivery", "tree_us")),
        ],
    ),
    "connect": (
        "--test connect --cycles 3000 --in-flight 16 --speak-first",
        [("cycles/s", ("cycles", "cycles_per_s"))],
    ),
    "memory": (
        "--test memory --clients 1000",
        [("USS KiB/client", ("memory", "per_client_uss_kib"))],
    ),
}


def figure(report, path):
    value = report
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, (int, float)) else None


def run_once(generator, server, bench_args, timeout):
    data = tempfile.mkdtemp(prefix="mpchat-ab-")
    try:
        spawn = f"{server} {LIMITS_OFF} --max-clients 11000 --data-dir {data} 0"
        cmd = [generator, "--json", "--quiet", "--timeout", str(timeout)]
        cmd += bench_args.split() + ["--spawn", spawn]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60)
        try:
            return json.loads(done.stdout)
        except json.JSONDecodeError:
            sys.exit(f"ab.py: no report from {' '.join(cmd)}:\n{done.stderr[-2000:]}")
    finally:
        shutil.rmtree(data, ignore_errors=True)


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{statistics.median(values):.4g} ({min(values):.4g}-{max(values):.4g})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="the server binary before")
    parser.add_argument("b", help="the server binary after")
    parser.add_argument("--bench", choices=sorted(BENCHES), default="fanout")
    parser.add_argument("--pairs", type=int, default=9)
    parser.add_argument("--generator", default="target/release/mpchat-bench")
    parser.add_argument("--timeout", type=int, default=120)
    args = parser.parse_args()
    for path in (args.a, args.b, args.generator):
        if not Path(path).is_file():
            sys.exit(f"ab.py: no such file: {path} (cargo build --release?)")
    if not 1 <= args.pairs <= 50:
        sys.exit("ab.py: --pairs must be 1 to 50")
    bench_args, figures = BENCHES[args.bench]
    copies = tempfile.mkdtemp(prefix="mpchat-ab-bin-")
    servers = []
    for name, path in (("a", args.a), ("b", args.b)):
        servers.append(shutil.copy2(path, Path(copies) / f"mpchat-{name}"))
    try:
        compare(args, bench_args, figures, servers)
    finally:
        shutil.rmtree(copies, ignore_errors=True)


def compare(args, bench_args, figures, servers):
    rows = {name: ([], [], []) for name, _ in figures}
    for pair in range(args.pairs):
        # Which build runs first alternates (A B, B A, A B, ...): the second
        # run of a pair was measured slower in the paced benchmark,
        # whichever build it was, and an even count of pairs cancels that.
        order = servers if pair % 2 == 0 else servers[::-1]
        by_server = {server: run_once(args.generator, server, bench_args, args.timeout) for server in order}
        reports = [by_server[server] for server in servers]
        for name, path in figures:
            a, b = (figure(r, path) for r in reports)
            rows[name][0].append(a)
            rows[name][1].append(b)
            rows[name][2].append(b / a if a and b is not None else None)
        print(f"pair {pair + 1}/{args.pairs} done", file=sys.stderr)
    print(f"mpchat-bench {bench_args}, {args.pairs} pairs, A = {args.a}, B = {args.b}")
    print(f"{'figure':<24} {'A median (range)':<28} {'B median (range)':<28} B/A median (range)")
    for name, (a, b, ratio) in rows.items():
        print(f"{name:<24} {spread(a):<28} {spread(b):<28} {spread(ratio)}")


if __name__ == "__main__":
    main()
