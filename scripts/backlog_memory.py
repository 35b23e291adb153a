#!/usr/bin/env python3
"""What the slow-reader bounds cost in memory, measured on the release binary.

mpchat bounds what may wait for a client that does not read: the client's
child keeps at most --max-backlog-bytes (1 MiB) in a userspace backlog,
beyond what the kernel buffers, and the hub keeps at most 256 KiB queued
for one child before it stops reading everyone's requests. This script
starts real servers on loopback, drives them into those states with real
TCP clients, and reads each process's memory from /proc/PID/smaps_rollup:
RSS, PSS and USS (Private_Clean + Private_Dirty), in KiB.

Cases (each on a fresh server, with the admission and flood limits off,
--history-lines 0 and a fresh temporary --data-dir):

  1 baseline      alice and carol logged in, idle: the hub and both children;
                  again 2 s after alice has sent 250 lines that both read
                  (a control: the hub keeps the last 200 public lines).
  2 full backlog  --stall-timeout 0. carol never reads; alice sends 400-byte
                  lines one at a time, each time reading her echo, until
                  carol's backlog (`mpchat status --json`, in lines, times
                  the rendered 417 bytes) is just under 1,000,000 bytes.
                  Carol's child, alice's child and the hub; the bytes the
                  kernel holds for carol (Send-Q of the server's socket,
                  Recv-Q of carol's, from `ss -tn`).
  2 after cut     alice goes on until the room says carol has left (her
                  child cut her off past 1 MiB); carol's child at once,
                  while it waits (up to 3 s) to say goodbye.
  3 hub queue     --stall-timeout 0. carol's child is SIGSTOPped; alice sends
                  lines (one per echo) until no echo comes back within 2 s
                  (the hub has paused on carol's full queue): the hub then,
                  and 2 s after carol's child is SIGCONTed and the room
                  has caught up.
  scale           200 clients (alice and 199 others), idle; then alice sends
                  2000 lines of 400 bytes at full speed while all read: the
                  hub (and the mean of the children) before, right after
                  everyone has every line, and 2 s later; the hub also
                  2 s after a second, identical burst.

Idle measurements are taken after 1.5 s of quiet, so that children have
given back the buffers of their last output (they do after 1 s).

Usage (build first: cargo build --release):

    scripts/backlog_memory.py                  # one run, a table
    scripts/backlog_memory.py --runs 3         # min-max over 3 runs
    scripts/backlog_memory.py --runs 3 --json  # one JSON object

Options: --binary PATH (default target/release/mpchat of this checkout),
--clients N and --burst-lines N for the scale check (--clients 0 skips it).
Linux only; Python 3.11, standard library only. Every wait has a deadline
(30 s unless said otherwise); every server is started in its own process
group and that whole group is killed at the end, also on error.
"""

import argparse
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BINARY = REPO / "target" / "release" / "mpchat"

WAIT = 30.0  # seconds, for any single wait
SETTLE = 1.5  # quiet before an idle measurement
TEXT_BYTES = 400
RENDERED = 8 + 7 + TEXT_BYTES + 2  # "[HH:MM] " + "alice: " + text + "\r\n"
MAX_BACKLOG = 1 << 20  # the server's default --max-backlog-bytes
TARGET_BACKLOG = 1_000_000
PAUSE_WAIT = 2.0  # no echo for this long: the hub has paused
MAX_PAUSE_LINES = 20_000  # the hub must pause well before this
CONTROL_LINES = 250  # more than the 200 lines the hub keeps for /history
BASE_ARGS = [
    "--bind", "127.0.0.1", "--max-per-ip", "0", "--max-conn-rate", "0",
    "--max-unregistered", "0", "--flood-rate", "0", "--history-lines", "0",
]


class Failure(Exception):
    """A measurement could not be made; the message says why."""


def deadline(seconds=WAIT):
    return time.monotonic() + seconds


def text_of(seq):
    """Alice's line number `seq`: 400 bytes, starting with a unique tag."""
    tag = f"{seq:08d} "
    return tag + "x" * (TEXT_BYTES - len(tag))


def echo_marker(seq):
    return f"alice: {seq:08d} ".encode()


# ---------------------------------------------------------------- memory

def smaps(pid):
    """Rss, Pss and USS of one process, in KiB."""
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    fields[parts[0].rstrip(":")] = int(parts[1])
    except FileNotFoundError:
        raise Failure(f"process {pid} is gone (no /proc/{pid}/smaps_rollup)")
    except PermissionError:
        raise Failure(f"cannot read /proc/{pid}/smaps_rollup (run as the server's user or root)")
    try:
        return {
            "rss_kib": fields["Rss"],
            "pss_kib": fields["Pss"],
            "uss_kib": fields["Private_Clean"] + fields["Private_Dirty"],
        }
    except KeyError as e:
        raise Failure(f"/proc/{pid}/smaps_rollup has no {e} field")


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


# ---------------------------------------------------------------- server

class Server:
    """One mpchat server in its own process group; a context manager that
    kills the whole group on the way out."""

    def __init__(self, binary, extra_args):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="mpchat-backlog-memory-")
        self.log_path = os.path.join(self.dir, "server.log")
        self.args = [binary, *BASE_ARGS, "--data-dir", os.path.join(self.dir, "data"),
                     *extra_args, "0"]
        self.proc = None
        self.port = None
        self.stopped_pids = []

    def __enter__(self):
        try:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    self.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=log, start_new_session=True)
            end = deadline()
            pattern = re.compile(rb"^mpchat: listening on (\S+):(\d+)$", re.M)
            while self.port is None:
                with open(self.log_path, "rb") as f:
                    m = pattern.search(f.read())
                if m:
                    self.port = int(m.group(2))
                elif self.proc.poll() is not None:
                    raise Failure(f"server exited with status {self.proc.returncode} "
                                  f"before listening:\n{self.log_tail()}")
                elif time.monotonic() > end:
                    raise Failure(f"server did not say it listens within {WAIT:.0f} s:\n"
                                  f"{self.log_tail()}")
                else:
                    time.sleep(0.02)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self):
        if self.proc is not None:
            pgid = self.proc.pid  # a session leader: its pid is the group's id
            for sig in (signal.SIGCONT,):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    pass
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            try:
                os.killpg(pgid, signal.SIGKILL)  # whatever is left of the group
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def status(self):
        try:
            out = subprocess.run(
                [self.binary, "status", "--json", "--port", str(self.port)],
                capture_output=True, timeout=WAIT)
        except subprocess.TimeoutExpired:
            raise Failure(f"`mpchat status` took more than {WAIT:.0f} s")
        if out.returncode != 0:
            raise Failure(f"`mpchat status` failed ({out.returncode}): "
                          f"{out.stderr.decode(errors='replace').strip()}")
        try:
            return json.loads(out.stdout)
        except ValueError as e:
            raise Failure(f"`mpchat status --json` printed no JSON: {e}")

    def hub_pid(self, report=None):
        report = report or self.status()
        for p in report["processes"]:
            if p["role"] == "hub":
                return p["pid"]
        raise Failure("`mpchat status` lists no hub")

    def user(self, nick, report=None):
        """The user's entry in the status report, or None."""
        report = report or self.status()
        return next((u for u in report["users"] if u["nick"] == nick), None)


# ---------------------------------------------------------------- clients

class Client:
    """A blocking TCP client that reads lines with deadlines."""

    def __init__(self, port, nick):
        self.nick = nick
        try:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        except OSError as e:
            raise Failure(f"{nick}: cannot connect to port {port}: {e}")
        self.buf = bytearray()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def local_port(self):
        return self.sock.getsockname()[1]

    def send(self, text):
        self.sock.settimeout(WAIT)
        try:
            self.sock.sendall(text.encode() + b"\n")
        except OSError as e:
            raise Failure(f"{self.nick}: send failed: {e}")

    def read_until(self, marker, until):
        """Reads up to the end of the line holding `marker`; returns what was
        consumed, or None if it did not come by `until`."""
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                j = self.buf.find(b"\n", i + len(marker))
                if j >= 0:
                    taken = bytes(self.buf[: j + 1])
                    del self.buf[: j + 1]
                    return taken
            left = until - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except (socket.timeout, TimeoutError):
                return None
            except OSError as e:
                raise Failure(f"{self.nick}: receive failed: {e}")
            if not data:
                tail = bytes(self.buf[-300:]).decode(errors="replace")
                raise Failure(f"{self.nick}: the server closed the connection; last: {tail!r}")
            self.buf += data

    def expect(self, marker, what, seconds=WAIT):
        taken = self.read_until(marker, deadline(seconds))
        if taken is None:
            tail = bytes(self.buf[-300:]).decode(errors="replace")
            raise Failure(f"{self.nick}: no {what} within {seconds:.0f} s; last: {tail!r}")
        return taken

    def login(self):
        self.send(self.nick)
        self.expect(f"Hello, {self.nick}!".encode(), "welcome")
        self.expect(f"* {self.nick} has joined the chat.".encode(), "join line")


class Alice(Client):
    def __init__(self, port):
        super().__init__(port, "alice")
        self.seq = 0

    def say(self, echo_within=WAIT):
        """Sends the next line and reads its echo: what came with it, or None
        if no echo came within `echo_within` seconds."""
        self.seq += 1
        self.send(text_of(self.seq))
        return self.read_until(echo_marker(self.seq), deadline(echo_within))

    def say_echoed(self):
        taken = self.say()
        if taken is None:
            raise Failure(f"alice: no echo of line {self.seq} within {WAIT:.0f} s")
        return taken


def logged_in(port, nicks, opened):
    clients = []
    for nick in nicks:
        c = Alice(port) if nick == "alice" else Client(port, nick)
        opened.append(c)
        c.login()
        clients.append(c)
    return clients


# ---------------------------------------------------------------- kernel

def socket_queues(server_port, client_port):
    """(Send-Q of the server's socket to the client, Recv-Q of the client's
    socket), in bytes, from `ss -tn` (or /proc/net/tcp without ss)."""
    server_end = f"127.0.0.1:{server_port}"
    client_end = f"127.0.0.1:{client_port}"
    send_q = recv_q = None
    if shutil.which("ss"):
        out = subprocess.run(["ss", "-tnH"], capture_output=True, text=True, timeout=WAIT)
        for line in out.stdout.splitlines():
            f = line.split()
            if len(f) < 5:
                continue
            rq, sq, local, peer = int(f[1]), int(f[2]), f[3], f[4]
            if (local, peer) == (server_end, client_end):
                send_q = sq
            elif (local, peer) == (client_end, server_end):
                recv_q = rq
    else:
        def hexaddr(port):
            return f"0100007F:{port:04X}"
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                f_ = line.split()
                local, peer = f_[1], f_[2]
                tx, rx = (int(x, 16) for x in f_[4].split(":"))
                if (local, peer) == (hexaddr(server_port), hexaddr(client_port)):
                    send_q = tx
                elif (local, peer) == (hexaddr(client_port), hexaddr(server_port)):
                    recv_q = rx
    if send_q is None or recv_q is None:
        raise Failure(f"no TCP connection {client_end} <-> {server_end} found by ss")
    return send_q, recv_q


# ---------------------------------------------------------------- cases

def row(case, process, pid):
    return {"case": case, "process": process, "pid": pid, **smaps(pid)}


def baseline(binary):
    opened = []
    with Server(binary, []) as srv:
        try:
            alice, carol = logged_in(srv.port, ["alice", "carol"], opened)
            alice.expect(b"* carol has joined the chat.", "carol's join line")
            time.sleep(SETTLE)
            report = srv.status()
            pids = [("hub", srv.hub_pid(report)),
                    ("child alice", srv.user("alice", report)["pid"]),
                    ("child carol", srv.user("carol", report)["pid"])]
            rows = [row("1 baseline", name, pid) for name, pid in pids]
            # A control for the cases below: the same room after lines that
            # everyone read (the hub keeps the last 200 public lines).
            for _ in range(CONTROL_LINES):
                alice.say_echoed()
            carol.expect(echo_marker(alice.seq), "alice's last line")
            time.sleep(2.0)
            case = f"1 after {CONTROL_LINES} lines read +2 s"
            rows += [row(case, name, pid) for name, pid in pids]
            return rows, {}
        finally:
            for c in opened:
                c.close()


def carol_backlog_settled(srv):
    """Carol's backlog in lines once it has not changed for 1.5 s: longer
    than a child's wait for its client to catch up (1 s), during which the
    hub may still hold lines for her."""
    end = deadline()
    last, since = None, None
    while True:
        user = srv.user("carol")
        if user is None:
            raise Failure("carol is no longer connected (cut off before the bound?)")
        now = time.monotonic()
        if user["backlog"] != last:
            last, since = user["backlog"], now
        elif now - since >= 1.5:
            return user
        if now > end:
            raise Failure(f"carol's backlog did not settle within {WAIT:.0f} s")
        time.sleep(0.25)


def full_backlog(binary):
    opened = []
    with Server(binary, ["--stall-timeout", "0"]) as srv:
        try:
            alice, carol = logged_in(srv.port, ["alice", "carol"], opened)
            alice.expect(b"* carol has joined the chat.", "carol's join line")
            # carol reads nothing from here on.
            for _ in range(20):
                user = carol_backlog_settled(srv)
                remaining = (TARGET_BACKLOG - user["backlog"] * RENDERED) // RENDERED
                if remaining <= 0:
                    break
                for _ in range(remaining):
                    alice.say_echoed()
            else:
                raise Failure("carol's backlog did not reach the target in 20 rounds")
            backlog_bytes = user["backlog"] * RENDERED
            if backlog_bytes > MAX_BACKLOG:
                raise Failure(f"overshot: carol's backlog is {backlog_bytes} bytes")
            carol_pid = user["pid"]
            report = srv.status()
            rows = [
                row("2 full backlog", "child carol", carol_pid),
                row("2 full backlog", "child alice", srv.user("alice", report)["pid"]),
                row("2 full backlog", "hub", srv.hub_pid(report)),
            ]
            send_q, recv_q = socket_queues(srv.port, carol.local_port())
            if srv.user("carol") is None:
                raise Failure("carol was cut off while being measured")
            facts = {
                "lines_sent": alice.seq,
                "carol_backlog_lines": user["backlog"],
                "carol_backlog_bytes": backlog_bytes,
                "kernel_server_send_q": send_q,
                "kernel_client_recv_q": recv_q,
            }
            # Past the bound: alice goes on until the room says carol left.
            limit = alice.seq + (MAX_BACKLOG - backlog_bytes) // RENDERED + 200
            left = False
            while not left and alice.seq < limit:
                left = b"* carol has left the chat." in alice.say_echoed()
            if not left:
                raise Failure(f"carol was not cut off after {alice.seq} lines")
            if alive(carol_pid):
                rows.append(row("2 after cut", "child carol", carol_pid))
            else:
                facts["cut_child_exited_before_measured"] = True
            facts["lines_sent_until_cut"] = alice.seq
            return rows, facts
        finally:
            for c in opened:
                c.close()


def hub_queue(binary):
    opened = []
    with Server(binary, ["--stall-timeout", "0"]) as srv:
        carol_pid = None
        try:
            alice, _carol = logged_in(srv.port, ["alice", "carol"], opened)
            alice.expect(b"* carol has joined the chat.", "carol's join line")
            time.sleep(SETTLE)
            report = srv.status()
            hub = srv.hub_pid(report)
            carol_pid = srv.user("carol", report)["pid"]
            rows = [row("3 hub queue, before", "hub", hub)]
            os.kill(carol_pid, signal.SIGSTOP)
            while alice.say(echo_within=PAUSE_WAIT) is not None:
                if alice.seq >= MAX_PAUSE_LINES:
                    raise Failure(f"the hub did not pause within {MAX_PAUSE_LINES} lines")
            paused_at = alice.seq
            rows.append(row("3 hub queue, paused", "hub", hub))
            os.kill(carol_pid, signal.SIGCONT)
            carol_pid = None
            # The line the hub left unread must now come back.
            alice.expect(echo_marker(alice.seq), "echo after SIGCONT")
            time.sleep(2.0)
            rows.append(row("3 hub queue, resumed +2 s", "hub", hub))
            return rows, {"lines_until_pause": paused_at}
        finally:
            if carol_pid is not None:
                try:
                    os.kill(carol_pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            for c in opened:
                c.close()


def children_mean(case, report):
    pids = [u["pid"] for u in report["users"]]
    samples = [smaps(pid) for pid in pids]
    mean = {k: round(sum(s[k] for s in samples) / len(samples)) for k in samples[0]}
    return {"case": case, "process": f"children (mean of {len(pids)})", "pid": None, **mean}


def burst(alice, clients, lines):
    """Alice writes `lines` lines as fast as her socket takes them while
    every client reads, until each has her last line."""
    payload = b"".join(text_of(alice.seq + i).encode() + b"\n" for i in range(1, lines + 1))
    last = echo_marker(alice.seq + lines)
    alice.seq += lines
    sel = selectors.DefaultSelector()
    pending = {}
    for c in clients:
        c.sock.setblocking(False)
        tail = bytes(c.buf[-len(last):])
        c.buf.clear()
        pending[c.sock.fileno()] = (c, tail)
        sel.register(c.sock, selectors.EVENT_READ, c)
    sent = 0
    sel.modify(alice.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, alice)
    started = time.monotonic()
    quiet_until = deadline()
    received = 0
    try:
        while pending:
            if time.monotonic() > quiet_until:
                raise Failure(f"burst: nothing moved for {WAIT:.0f} s; "
                              f"{len(pending)} clients still wait for the last line")
            for key, events in sel.select(timeout=1.0):
                c = key.data
                if events & selectors.EVENT_WRITE and sent < len(payload):
                    try:
                        n = c.sock.send(payload[sent:sent + (1 << 16)])
                    except BlockingIOError:
                        n = 0
                    sent += n
                    if sent == len(payload):
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                    if n:
                        quiet_until = deadline()
                if events & selectors.EVENT_READ:
                    try:
                        data = c.sock.recv(1 << 18)
                    except BlockingIOError:
                        continue
                    if not data:
                        raise Failure(f"burst: the server closed {c.nick}'s connection")
                    received += len(data)
                    quiet_until = deadline()
                    entry = pending.get(c.sock.fileno())
                    if entry is None:
                        continue
                    window = entry[1] + data
                    if b"Disconnected" in window:
                        raise Failure(f"burst: {c.nick} was disconnected: {window[-200:]!r}")
                    if last in window:
                        del pending[c.sock.fileno()]
                    else:
                        pending[c.sock.fileno()] = (c, window[-(len(last) + 200):])
    finally:
        sel.close()
        for c in clients:
            c.sock.setblocking(True)
    return time.monotonic() - started, received


def scale(binary, n_clients, burst_lines):
    opened = []
    with Server(binary, []) as srv:
        try:
            nicks = ["alice"] + [f"u{i:03d}" for i in range(1, n_clients)]
            clients = logged_in(srv.port, nicks, opened)
            alice = clients[0]
            last_join = f"* {nicks[-1]} has joined the chat.".encode()
            for c in clients[:-1]:
                c.expect(last_join, "the last join line")
            time.sleep(SETTLE)
            report = srv.status()
            if len(report["users"]) != n_clients:
                raise Failure(f"{len(report['users'])} users logged in, not {n_clients}")
            hub = srv.hub_pid(report)
            rows = [row(f"scale {n_clients} idle", "hub", hub),
                    children_mean(f"scale {n_clients} idle", report)]
            seconds, received = burst(alice, clients, burst_lines)
            rows.append(row(f"scale {n_clients} after burst", "hub", hub))
            rows.append(children_mean(f"scale {n_clients} after burst", report))
            time.sleep(2.0)
            rows.append(row(f"scale {n_clients} after burst +2 s", "hub", hub))
            rows.append(children_mean(f"scale {n_clients} after burst +2 s", report))
            # Again: does the hub reuse what it kept, or keep more?
            burst(alice, clients, burst_lines)
            time.sleep(2.0)
            rows.append(row(f"scale {n_clients} 2nd burst +2 s", "hub", hub))
            if len(srv.status()["users"]) != n_clients:
                raise Failure("some clients were disconnected during the burst")
            return rows, {"burst_seconds": round(seconds, 2), "burst_bytes_received": received}
        finally:
            for c in opened:
                c.close()


def one_run(binary, n_clients, burst_lines):
    rows, facts = [], {}
    cases = [baseline, full_backlog, hub_queue]
    for case in cases:
        r, f = case(binary)
        rows += r
        facts.update(f)
    if n_clients > 0:
        r, f = scale(binary, n_clients, burst_lines)
        rows += r
        facts.update(f)
    return rows, facts


# ---------------------------------------------------------------- output

def span(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def summarize(runs):
    """Rows keyed by (case, process), each figure as min-max over the runs."""
    order, by_key = [], {}
    for rows, _ in runs:
        for r in rows:
            key = (r["case"], r["process"])
            if key not in by_key:
                order.append(key)
                by_key[key] = []
            by_key[key].append(r)
    table = []
    for key in order:
        rs = by_key[key]
        table.append({
            "case": key[0], "process": key[1], "runs": len(rs),
            **{k: {"min": min(r[k] for r in rs), "max": max(r[k] for r in rs)}
               for k in ("rss_kib", "pss_kib", "uss_kib")},
        })
    facts = {}
    for _, f in runs:
        for k, v in f.items():
            facts.setdefault(k, []).append(v)
    return table, facts


def print_table(table, facts, binary, n_runs):
    print(f"mpchat slow-reader memory ({binary}), {n_runs} run(s); KiB, min-max over runs")
    header = ("case", "process", "RSS", "PSS", "USS")
    lines = [(t["case"], t["process"],
              *(span([t[k]["min"], t[k]["max"]]) for k in ("rss_kib", "pss_kib", "uss_kib")))
             for t in table]
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(5)]
    fmt = "  ".join(f"{{:<{widths[0]}}}" if i == 0 else
                    (f"{{:<{widths[1]}}}" if i == 1 else f"{{:>{widths[i]}}}")
                    for i in range(5))
    print(fmt.format(*header))
    for line in lines:
        print(fmt.format(*line))
    print()
    for k, vs in facts.items():
        print(f"{k}: {span(vs) if all(isinstance(v, (int, float)) for v in vs) else vs}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=str(DEFAULT_BINARY))
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--clients", type=int, default=200, help="scale check (0: skip)")
    ap.add_argument("--burst-lines", type=int, default=2000)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print(f"backlog_memory: no executable mpchat at {binary} "
              "(run `cargo build --release`, or pass --binary)", file=sys.stderr)
        return 2
    if not os.path.exists("/proc/self/smaps_rollup"):
        print("backlog_memory: needs Linux's /proc/PID/smaps_rollup", file=sys.stderr)
        return 2
    if args.runs < 1 or args.clients == 1 or args.clients < 0 or args.burst_lines < 1:
        ap.error("--runs and --burst-lines must be >= 1, --clients 0 or >= 2")
    runs = []
    try:
        for i in range(args.runs):
            rows, facts = one_run(binary, args.clients, args.burst_lines)
            runs.append((rows, facts))
            if not args.json:
                print(f"run {i + 1}/{args.runs} done", file=sys.stderr)
    except Failure as e:
        print(f"backlog_memory: {e}", file=sys.stderr)
        return 1
    table, facts = summarize(runs)
    if args.json:
        json.dump({"binary": binary, "runs": [{"rows": r, "facts": f} for r, f in runs],
                   "summary": table, "facts": facts}, sys.stdout, indent=1)
        print()
    else:
        print_table(table, facts, binary, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
