#!/usr/bin/env bash
# Benchmarks mpchat next to its peers on this machine, in one go, and writes
# BENCHMARKS.md at the repo root: the table, the machine, and the exact
# mpchat-bench command behind every figure.
#
#   fan-out  N=100 (10 senders x 1000 messages) and N=1000 (10 x 100) at
#            full speed, N=100 paced at 1000 msg/s; mpchat and ngircd.
#            N=100 (10 x 1000 of 80 B) with senders that write as fast as
#            their sockets take the bytes (no window), for lost lines; mpchat
#   rooms    N=1000 in 100 rooms of 10 (#r0..#r99), every client sending 100
#            messages in its own room (--rooms 100 --senders 1000); mpchat
#            and ngircd (the same channels)
#   connect  connect/register/first reply/close cycles, 1 and 16 in flight;
#            mpchat, mpchat --echo, the C echo server, ngircd (8 at most)
#   memory   USS/PSS per idle client at N=1000; same four servers
#   scale    the largest N mpchat holds (--connect-only), 1000 to 10000
#   web      WebSocket clients (--proto ws, as the web page speaks): N=1000
#            in one room, 10 senders, full speed (10 x 100) and paced at 20
#            and 200 msg/s, and memory with 1000 sessions; mpchat against
#            the Node.js `ws` broadcast server in scripts/ws-peer (needs
#            node and npm: its packages are installed with `npm ci`)
#   cluster  several servers (--cluster): three mpchat servers sharing a
#            redis-server of the script's own (loopback, a free port, no
#            persistence), 300 users on each, all in one room, 10 senders,
#            at full speed (10 x 200) and paced at 100 msg/s (10 x 100, 10
#            s), and 33 users on each (99) paced the same, against one
#            mpchat alone with all the users and the same load; Redis's own
#            CPU is reported apart (needs redis-server)
#
# Every figure is run 3 times (median, min-max); the runs are interleaved
# (mpchat, peer, mpchat, peer, ...) so a drift of the machine hits both.
# Each run's JSON goes to target/bench/ (target/bench-quick/ with --quick),
# so scripts/bench_table.py can rebuild the table without rerunning.
#
# Usage: scripts/bench.sh [--quick] [--only fanout|connect|memory|scale|web|cluster]
#   --quick   each figure once, much smaller counts, scale up to 1000 only;
#             writes BENCHMARKS.quick.md (never BENCHMARKS.md)
#   --only P  rerun one part; the other parts' last results are kept
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

quick=0
only=all
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) quick=1 ;;
        --only) [[ $# -ge 2 ]] || { echo "bench.sh: --only needs a part" >&2; exit 2; }
                only=$2; shift ;;
        --only=*) only=${1#--only=} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case $only in
    all|fanout|connect|memory|scale|web|cluster) ;;
    *) echo "bench.sh: --only takes fanout, connect, memory, scale, web or cluster, not '$only'" >&2; exit 2 ;;
esac
want() { [[ $only == all || $only == "$1" ]]; }

# --- sizes ------------------------------------------------------------------
if [[ $quick == 1 ]]; then
    runs=1
    results=target/bench-quick
    out=BENCHMARKS.quick.md
    fan_small=30;  fan_small_msgs=200      # 10 senders each
    fan_large=100; fan_large_msgs=50
    paced_n=30;    paced_msgs=200          # 10 x 200 at 1000/s: 2 s
    rooms_n=100;   rooms_count=10; rooms_msgs=20   # 10 rooms of 10, all sending
    cycles=200
    mem_n=100
    scale_steps=(200 1000)
    web_n=100; web_msgs=50; web_light_msgs=10; web_heavy_msgs=20
    cluster_each=30; cluster_msgs=50; cluster_paced_msgs=20   # 2 s at 100/s
    cluster_light_each=10
else
    runs=3
    results=target/bench
    out=BENCHMARKS.md
    fan_small=100;  fan_small_msgs=1000
    fan_large=1000; fan_large_msgs=100
    paced_n=100;    paced_msgs=1000        # 10 x 1000 at 1000/s: 10 s
    # 100 rooms of 10, all sending: 100 000 messages, 1 000 000 deliveries
    # (900 000 on IRC, which does not echo); ngircd takes about 10 s.
    rooms_n=1000;   rooms_count=100; rooms_msgs=100
    cycles=2000
    mem_n=1000
    scale_steps=(1000 2000 5000 10000)
    # Paced: 20 msg/s for 10 s (both servers keep up) and 200 msg/s for
    # 5 s (200 000 deliveries a second at N=1000).
    web_n=1000; web_msgs=100; web_light_msgs=20; web_heavy_msgs=100
    # 300 users on each of 3 servers, 900 in all, about fan-out's N=1000.
    # Full speed: 10 x 200 (1 800 000 deliveries), twice fan-out's N=1000
    # count, so the traffic lasts about a second and its CPU figures are
    # not tick rounding. Paced: 100 msg/s for 10 s, 90 000 deliveries a
    # second, about what fan-out's paced row (N=100 at 1000 msg/s) asks.
    cluster_each=300; cluster_msgs=200; cluster_paced_msgs=100
    # A message to 900 users wakes 900 processes (about 40 ms of CPU here
    # whatever the rate): that, not Redis, sets the paced latency at N=900.
    # The same pace with 33 users on each server (99, fan-out's N=100)
    # shows what the trip through Redis adds when the fan-out is small.
    cluster_light_each=33
fi
cluster_names=(a b c)                 # one --server-name per server
cluster_servers=${#cluster_names[@]}
cluster_rate=100
senders=10
paced_rate=1000
ngircd_in_flight=8     # ngircd listens with a backlog of 10
echo_in_flight=8       # the C echo server listens with a backlog of 16
max_clients=11000      # for every spawned mpchat; above the largest scale step

bench=target/release/mpchat-bench
# The admission limits are policy, not capacity: a load test turns them off.
mpchat="target/release/mpchat --bind 127.0.0.1 --max-clients $max_clients --max-per-ip 0 --max-conn-rate 0 --max-unregistered 0 --flood-rate 0"
c_echo="c-reference/echo-server 0"

# Servers log at their default level: a caller's RUST_LOG must not change
# the figures.
unset RUST_LOG

# --- cleanup: everything this script starts is stopped on exit -------------
current=""          # pid of the mpchat-bench run in progress (under timeout)
redis_pid=""        # the cluster part's redis-server
tmp=""
policy_rc=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $current ]]; then
        # timeout passes the TERM on to mpchat-bench, which stops and kills
        # the server group it spawned.
        kill -TERM "$current" 2>/dev/null || true
        wait "$current" 2>/dev/null || true
    fi
    if [[ -n $redis_pid ]]; then
        kill -TERM "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    if [[ -n $policy_rc ]]; then rm -f "$policy_rc"; fi
    if [[ -n $tmp ]]; then rm -rf "$tmp"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf 'bench.sh: %s\n' "$*" >&2; }

# --- build --------------------------------------------------------------------
log "building (cargo build --release, make -C c-reference)"
cargo build --release --quiet
make -C c-reference --quiet >/dev/null

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpchat-bench.XXXXXX")
mkdir -p "$results"
# The history is written as in real use, into a directory of the run's own.
# (The cluster's servers get one each: they are started from mpchat_bare.)
mpchat_bare=$mpchat
mpchat+=" --data-dir $tmp/data"

# As many fds as the hard limit allows (mpchat-bench raises its own, and the
# servers it spawns inherit that; this makes the figure visible here too).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)

# --- ngircd -----------------------------------------------------------------
ngircd_note=""
ngircd=""
if want fanout || want connect || want memory; then
    if ! command -v ngircd >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "ngircd missing: apt-get install -y ngircd"
        # Keep the package from starting a system ngircd of its own.
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            policy_rc=/usr/sbin/policy-rc.d
            printf '#!/bin/sh\nexit 101\n' >"$policy_rc"
            chmod +x "$policy_rc"
        fi
        apt-get install -y ngircd >/dev/null 2>&1 \
            || { apt-get update >/dev/null 2>&1 && apt-get install -y ngircd >/dev/null 2>&1; } \
            || true
        if [[ -n $policy_rc ]]; then rm -f "$policy_rc"; policy_rc=""; fi
    fi
    if command -v ngircd >/dev/null; then
        ngircd_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        cat >"$tmp/ngircd.conf" <<EOF
[Global]
Name = bench.localhost
Info = mpchat-bench target
Listen = 127.0.0.1
Ports = $ngircd_port
MotdPhrase = bench
PidFile = $tmp/ngircd.pid
ServerUID = $(id -un)
ServerGID = $(id -gn)

[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 16
MaxPenaltyTime = 0
PingTimeout = 600
PongTimeout = 600

[Options]
PAM = no
Ident = no
DNS = no
EOF
        # A copy for the record (BENCHMARKS.md shows it), the temp dir's
        # name replaced by <tmp>.
        sed "s|$tmp|<tmp>|g" "$tmp/ngircd.conf" >"$results/ngircd.conf"
        ngircd="ngircd -n -f $tmp/ngircd.conf"
    else
        ngircd_note="ngircd is not installed (and could not be installed): its rows are skipped."
        log "$ngircd_note"
    fi
fi

# --- the Node.js WebSocket peer ---------------------------------------------------
ws_peer=""
ws_peer_note=""
if want web; then
    if command -v node >/dev/null && command -v npm >/dev/null; then
        if [[ ! -d scripts/ws-peer/node_modules/ws ]]; then
            log "installing the Node.js peer's packages (npm ci --prefix scripts/ws-peer)"
            npm ci --prefix scripts/ws-peer --no-audit --no-fund --loglevel=error >/dev/null 2>&1 || true
        fi
        if [[ -d scripts/ws-peer/node_modules/ws ]]; then
            ws_peer="node scripts/ws-peer/server.mjs 0"
        else
            ws_peer_note="npm ci --prefix scripts/ws-peer failed: the Node.js rows are skipped."
        fi
    else
        ws_peer_note="node and npm are not installed (apt-get install nodejs npm): the Node.js rows are skipped."
    fi
    if [[ -n $ws_peer_note ]]; then log "$ws_peer_note"; fi
fi

# --- redis, for the cluster part -----------------------------------------------
# One redis-server of the script's own: loopback, a free port, nothing
# saved. It is emptied (FLUSHALL) before each cluster run, so each starts as
# a new cluster does, with no stream, nickname lease or epoch mark left by
# the run before; cleanup() kills it by its pid, however the script ends.
redis_note=""
redis_port=""
if want cluster; then
    if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
        redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
            >"$tmp/redis.log" 2>&1 &
        redis_pid=$!
        for _ in $(seq 50); do
            if [[ $(redis-cli -p "$redis_port" ping 2>/dev/null) == PONG ]]; then break; fi
            sleep 0.1
        done
        if [[ $(redis-cli -p "$redis_port" ping 2>/dev/null) != PONG ]]; then
            redis_note="redis-server did not answer on 127.0.0.1:$redis_port within 5 s: the cluster rows are skipped."
            kill -TERM "$redis_pid" 2>/dev/null || true
            wait "$redis_pid" 2>/dev/null || true
            redis_pid=""
        fi
    else
        redis_note="redis-server and redis-cli are not installed (apt-get install redis-server): the cluster rows are skipped."
    fi
    if [[ -n $redis_note ]]; then log "$redis_note"; fi
fi
redis_flush() { redis-cli -p "$redis_port" flushall >/dev/null; }

# --- machine ------------------------------------------------------------------
ngircd_version=$( (ngircd --version 2>/dev/null || true) | head -n1)
NPROC=$(nproc) \
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1) \
MEM_TOTAL=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) \
KERNEL=$(uname -srm) \
DATE=$(date -u '+%Y-%m-%d %H:%M UTC') \
RUSTC=$(rustc --version) \
COMMIT=$( (git rev-parse --short HEAD 2>/dev/null || echo unknown) | tr -d '\n')$( [ -n "$(git status --porcelain --untracked-files=no -- . ':!BENCHMARKS.md' 2>/dev/null)" ] && echo ' (with uncommitted changes)') \
NGIRCD=${ngircd_version:-not installed} \
NODE=$( (node --version 2>/dev/null && sed -n 's/.*"version": "\(.*\)".*/ws \1/p' scripts/ws-peer/node_modules/ws/package.json 2>/dev/null) | tr '\n' ' ') \
REDIS=$( (redis-server --version 2>/dev/null || true) | sed -n 's/.*\(v=[^ ]*\).*/\1/p') \
NGIRCD_NOTE=$ngircd_note \
NOFILE=$nofile \
NOFILE_HARD=$(ulimit -Hn) \
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg) \
QUICK=$quick RUNS=$runs ONLY=$only \
python3 - "$results/machine.json" <<'EOF'
import json, os, sys
keys = ["NPROC", "CPU_MODEL", "MEM_TOTAL", "KERNEL", "DATE", "RUSTC", "COMMIT", "NGIRCD", "NODE", "REDIS",
        "NGIRCD_NOTE", "NOFILE", "NOFILE_HARD", "LOADAVG", "QUICK", "RUNS", "ONLY"]
with open(sys.argv[1], "w") as f:
    json.dump({k.lower(): os.environ.get(k, "") for k in keys}, f, indent=1)
EOF

# --- running one measurement --------------------------------------------------
# A command line as BENCHMARKS.md shows it: the temp dir as <tmp>, and the
# cluster's Redis port and pid as <redis-port> and <redis-pid>.
scrub() {
    local line=$1
    line=${line//"$tmp"/<tmp>}
    if [[ -n $redis_port ]]; then line=${line//"127.0.0.1:$redis_port"/127.0.0.1:<redis-port>}; fi
    if [[ -n $redis_pid ]]; then line=${line//"redis=$redis_pid"/redis=<redis-pid>}; fi
    printf '%s' "$line"
}

# A shell-quoted command line, quoting only the words that need it.
quote() {
    local w s=""
    for w in "$@"; do
        if [[ $w =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
            s+="$w "
        else
            s+="'${w//\'/\'\\\'\'}' "
        fi
    done
    printf '%s' "${s% }"
}

# run PART FIGURE SERVER RUN LIMIT ARGS...: one mpchat-bench run, bounded by
# --timeout LIMIT (and by timeout(1) a little later, in case the bench itself
# hangs). Its JSON goes to $results/PART--FIGURE--SERVER--rRUN.json and how
# it ended to the matching .meta.json. A failed run is recorded, never fatal.
# Sets last_ok to 1 or 0.
run() {
    local part=$1 figure=$2 server=$3 k=$4 limit=$5
    shift 5
    local base="$results/$part--$figure--$server--r$k"
    local cmd=("$bench" --json --quiet --timeout "$limit" "$@")
    if [[ $k == 1 ]]; then
        printf '%s\t%s\t%s\n' "$figure" "$server" "$(scrub "$(quote "${cmd[@]}")")" >>"$results/commands-$part.tsv"
    fi
    local rc=0 t0 t1
    t0=$(date +%s.%N)
    timeout --kill-after=10 "$((limit + 60))" "${cmd[@]}" >"$base.json" 2>"$base.stderr" &
    current=$!
    wait "$current" || rc=$?
    current=""
    t1=$(date +%s.%N)
    # One python call: write the .meta.json, print the server pids (several
    # with several servers) and the first problem the run reported.
    local spid why
    IFS='|' read -r spid why < <(python3 - "$base" "$rc" "$t0" "$t1" <<'EOF'
import json, sys
base, rc, t0, t1 = sys.argv[1:]
try:
    tail = open(base + ".stderr", errors="replace").read().strip().splitlines()[-5:]
except OSError:
    tail = []
with open(base + ".meta.json", "w") as f:
    json.dump({"rc": int(rc), "wall_s": float(t1) - float(t0), "stderr_tail": tail}, f)
try:
    r = json.load(open(base + ".json"))
except (OSError, ValueError):
    r = {}
why = (r.get("problems") or tail[-1:] or [""])[0]
pids = [t["pid"] for t in r.get("targets") or [] if t.get("pid")] or [r.get("server_pid") or ""]
print(f"{' '.join(str(p) for p in pids)}|{why}".replace("\n", " "))
EOF
    ) || true
    # mpchat-bench kills the server groups it spawned; make sure of it, by
    # the pids it reported (the group leaders), in case it was killed itself.
    local p
    for p in $spid; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM -- "-$p" 2>/dev/null || true
            sleep 2
            kill -KILL -- "-$p" 2>/dev/null || true
        fi
    done
    local verdict=ok
    last_ok=1
    if [[ $rc != 0 ]]; then
        verdict="FAILED (exit $rc${why:+: $why})"
        last_ok=0
    fi
    log "$part $figure $server run $k: $verdict in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
}

# Start a part afresh: drop its previous results.
begin() {
    rm -f "$results/$1"--*.json "$results/$1"--*.stderr "$results/commands-$1.tsv" "$results/notes-$1.txt"
    : >"$results/commands-$1.tsv"
}
note() { printf '%s\n' "$2" >>"$results/notes-$1.txt"; }

last_ok=0

# --- fan-out --------------------------------------------------------------------
if want fanout; then
    begin fanout
    log "fan-out"
    fan_limit=$([[ $quick == 1 ]] && echo 60 || echo 300)
    if [[ -n $ngircd_note ]]; then note fanout "$ngircd_note"; fi
    for k in $(seq "$runs"); do
        for server in mpchat mpchat-json ngircd; do
            case $server in
                mpchat) spawn=("--spawn" "$mpchat 0" --proto line) ;;
                # Programs on the JSON protocol, the same figures as people.
                mpchat-json) spawn=("--spawn" "$mpchat 0" --proto json) ;;
                ngircd)
                    [[ -n $ngircd ]] || continue
                    spawn=("--spawn" "$ngircd" --proto irc --in-flight "$ngircd_in_flight")
                    ;;
            esac
            run fanout "n$fan_small-full" "$server" "$k" "$fan_limit" "${spawn[@]}" \
                --clients "$fan_small" --senders "$senders" --messages "$fan_small_msgs"
            run fanout "n$fan_large-full" "$server" "$k" "$fan_limit" "${spawn[@]}" \
                --clients "$fan_large" --senders "$senders" --messages "$fan_large_msgs"
            # Rooms: the clients spread over rooms (client i in #r{i mod R},
            # joined before the traffic starts), every one of them talking
            # in its own; a line that reaches another room fails the run.
            run fanout "n$rooms_n-rooms$rooms_count" "$server" "$k" "$fan_limit" "${spawn[@]}" \
                --clients "$rooms_n" --rooms "$rooms_count" --senders "$rooms_n" --messages "$rooms_msgs"
            [[ $server == mpchat-json ]] && continue
            run fanout "n$paced_n-paced" "$server" "$k" "$fan_limit" "${spawn[@]}" \
                --clients "$paced_n" --senders "$senders" --messages "$paced_msgs" --rate "$paced_rate"
            # No window: each sender writes as fast as its socket takes the
            # bytes, as a paste or a bot does. A server that drops clients
            # who fall behind loses lines here (the run then fails).
            if [[ $server == mpchat ]]; then
                run fanout "n$fan_small-nowindow" "$server" "$k" "$fan_limit" "${spawn[@]}" \
                    --clients "$fan_small" --senders "$senders" --messages "$fan_small_msgs" \
                    --size 80 --window 0
            fi
        done
    done
fi

# --- connect rate ---------------------------------------------------------------
if want connect; then
    begin connect
    log "connect rate"
    con_limit=$([[ $quick == 1 ]] && echo 60 || echo 180)
    if [[ -n $ngircd_note ]]; then note connect "$ngircd_note"; fi
    if [[ -n $ngircd ]]; then note connect "ngircd listens with a backlog of 10 (more connects in flight lose SYNs, retried after a second), so its \"16 in flight\" row runs $ngircd_in_flight in flight."; fi
    for k in $(seq "$runs"); do
        for p in 1 16; do
            for server in mpchat mpchat-json mpchat-prompt mpchat-echo c-echo ngircd; do
                inflight=$p
                case $server in
                    mpchat) spawn=(--spawn "$mpchat 0" --proto line --speak-first) ;;
                    mpchat-json) spawn=(--spawn "$mpchat 0" --proto json) ;;
                    # A client that waits for the prompt (telnet, the C
                    # client) waits out the server's 100 ms for a first line.
                    mpchat-prompt) spawn=(--spawn "$mpchat 0" --proto line) ;;
                    mpchat-echo) spawn=(--spawn "$mpchat --echo 0" --proto echo) ;;
                    c-echo) spawn=(--spawn "$c_echo" --proto echo) ;;
                    ngircd)
                        [[ -n $ngircd ]] || continue
                        spawn=(--spawn "$ngircd" --proto irc)
                        if (( inflight > ngircd_in_flight )); then inflight=$ngircd_in_flight; fi
                        ;;
                esac
                # Each of those cycles waits 100 ms: a tenth of them says
                # as much, in a tenth of the time.
                n=$cycles
                if [[ $server == mpchat-prompt ]]; then n=$(( (cycles + 9) / 10 )); fi
                run connect "in-flight-$p" "$server" "$k" "$con_limit" "${spawn[@]}" \
                    --test connect --cycles "$n" --in-flight "$inflight"
            done
        done
    done
fi

# --- memory -------------------------------------------------------------------
if want memory; then
    begin memory
    log "memory"
    mem_limit=$([[ $quick == 1 ]] && echo 60 || echo 300)
    if [[ -n $ngircd_note ]]; then note memory "$ngircd_note"; fi
    note memory "The C echo server (backlog 16) and ngircd (backlog 10) are filled $echo_in_flight connects at a time, mpchat 32 (the default); it changes how fast they fill, not what they hold."
    for k in $(seq "$runs"); do
        for server in mpchat mpchat-echo c-echo ngircd; do
            case $server in
                mpchat) spawn=(--spawn "$mpchat 0" --proto line) ;;
                mpchat-echo) spawn=(--spawn "$mpchat --echo 0" --proto echo) ;;
                c-echo) spawn=(--spawn "$c_echo" --proto echo --in-flight "$echo_in_flight") ;;
                ngircd)
                    [[ -n $ngircd ]] || continue
                    spawn=(--spawn "$ngircd" --proto irc --in-flight "$ngircd_in_flight") ;;
            esac
            run memory "n$mem_n" "$server" "$k" "$mem_limit" "${spawn[@]}" \
                --test memory --clients "$mem_n"
        done
    done
fi

# --- scale ----------------------------------------------------------------------
if want scale; then
    begin scale
    log "scale (RLIMIT_NOFILE $nofile)"
    note scale "RLIMIT_NOFILE: soft raised to the hard limit, $nofile (mpchat-bench and the mpchat it spawns both run with it). mpchat runs with --max-clients $max_clients."
    if [[ $quick == 1 ]]; then note scale "--quick: steps above 1000 skipped."; fi
    for n in "${scale_steps[@]}"; do
        # Registering N clients makes mpchat announce N^2/2 joins: the time
        # grows with N^2 (1000 take a few seconds, 10000 a few minutes).
        limit=$(( 120 + n * n / 100000 ))
        if (( n + 64 > nofile )); then
            note scale "N=$n not tried: it needs about $((n + 64)) fds and RLIMIT_NOFILE is $nofile."
            break
        fi
        run scale "n$n" mpchat 1 "$limit" --spawn "$mpchat 0" --proto line \
            --connect-only --clients "$n" --hold 1
        if [[ $last_ok != 1 ]]; then
            note scale "Stopped at the first failure (N=$n)."
            break
        fi
    done
fi

# --- web: WebSocket clients, mpchat and the Node.js peer ------------------------
if want web; then
    begin web
    log "web (WebSocket)"
    web_limit=$([[ $quick == 1 ]] && echo 60 || echo 300)
    if [[ -n $ws_peer_note ]]; then note web "$ws_peer_note"; fi
    note web "Both servers get the same messages (PROTOCOL.md's hello, welcome, say and events, one per text frame) from the same clients; the Node.js peer is scripts/ws-peer/server.mjs, one process that serialises each event once and sends it to every client, as the ws package's broadcast example does."
    for k in $(seq "$runs"); do
        for server in mpchat-ws node-ws; do
            case $server in
                mpchat-ws) spawn=(--spawn "$mpchat 0" --proto ws) ;;
                node-ws)
                    [[ -n $ws_peer ]] || continue
                    spawn=(--spawn "$ws_peer" --proto ws) ;;
            esac
            run web "n$web_n-full" "$server" "$k" "$web_limit" "${spawn[@]}" \
                --clients "$web_n" --senders "$senders" --messages "$web_msgs"
            run web "n$web_n-paced20" "$server" "$k" "$web_limit" "${spawn[@]}" \
                --clients "$web_n" --senders "$senders" --messages "$web_light_msgs" --rate 20
            run web "n$web_n-paced200" "$server" "$k" "$web_limit" "${spawn[@]}" \
                --clients "$web_n" --senders "$senders" --messages "$web_heavy_msgs" --rate 200
            run web "n$web_n-memory" "$server" "$k" "$web_limit" "${spawn[@]}" \
                --test memory --clients "$web_n"
        done
    done
fi

# --- cluster: three servers sharing one Redis, against one alone ---------------
if want cluster; then
    begin cluster
    log "cluster (several servers through Redis)"
    cluster_limit=$([[ $quick == 1 ]] && echo 60 || echo 300)
    cluster_n=$((cluster_servers * cluster_each))
    cluster_light_n=$((cluster_servers * cluster_light_each))
    if [[ -n $redis_note ]]; then note cluster "$redis_note"; fi
    note cluster "$cluster_servers mpchat servers, each with --cluster redis://127.0.0.1:<redis-port>, its own --server-name (${cluster_names[*]}) and its own --data-dir; mpchat-bench connects client i to server i mod $cluster_servers ($cluster_each users each, $cluster_light_each in the small paced row) and sender s to server s mod $cluster_servers, and counts every delivery as with one server. \"one server\" is one mpchat with all the users and the same load. Redis is emptied before each cluster run. Everything, Redis and mpchat-bench included, shares this machine's $(nproc) cores."
    if [[ -n $redis_pid ]]; then
        # A Redis round trip on this machine, idle, as redis-cli measures
        # it: the unit the cluster's added latency is judged in.
        read -r rtt_min rtt_max rtt_avg rtt_n < <(redis-cli -p "$redis_port" --latency --raw 2>/dev/null || echo "- - - 0")
        note cluster "One round trip to this Redis, idle (redis-cli --latency --raw, 1 s, $rtt_n samples): avg $rtt_avg ms, min $rtt_min ms, max $rtt_max ms (whole milliseconds for min and max)."
        printf '{"min_ms": "%s", "max_ms": "%s", "avg_ms": "%s", "samples": "%s"}\n' \
            "$rtt_min" "$rtt_max" "$rtt_avg" "$rtt_n" >"$results/cluster-redis-rtt.json"
    fi
    for k in $(seq "$runs"); do
        for server in cluster3 single; do
            case $server in
                cluster3)
                    [[ -n $redis_pid ]] || continue
                    spawn=()
                    for name in "${cluster_names[@]}"; do
                        spawn+=(--spawn "$mpchat_bare --data-dir $tmp/cluster-$name --cluster redis://127.0.0.1:$redis_port --server-name $name 0")
                    done
                    spawn+=(--extra-pid "redis=$redis_pid")
                    ;;
                single) spawn=(--spawn "$mpchat 0") ;;
            esac
            # The servers' logs go to the run's .stderr (--server-log): the
            # warnings and errors in them are summed up in the notes.
            if [[ $server == cluster3 ]]; then redis_flush; fi
            run cluster "n$cluster_n-full" "$server" "$k" "$cluster_limit" "${spawn[@]}" --server-log \
                --clients "$cluster_n" --senders "$senders" --messages "$cluster_msgs"
            if [[ $server == cluster3 ]]; then redis_flush; fi
            run cluster "n$cluster_n-paced" "$server" "$k" "$cluster_limit" "${spawn[@]}" --server-log \
                --clients "$cluster_n" --senders "$senders" --messages "$cluster_paced_msgs" --rate "$cluster_rate"
            if [[ $server == cluster3 ]]; then redis_flush; fi
            run cluster "n$cluster_light_n-paced" "$server" "$k" "$cluster_limit" "${spawn[@]}" --server-log \
                --clients "$cluster_light_n" --senders "$senders" --messages "$cluster_paced_msgs" --rate "$cluster_rate"
        done
    done
    # What the servers and Redis logged at WARN or worse, once per kind
    # (timestamps and pids left out), for the notes.
    python3 - "$results" "$tmp/redis.log" >>"$results/notes-cluster.txt" <<'EOF'
import glob, os, re, sys
from collections import Counter
res, redis_log = sys.argv[1:]
seen = Counter()
for path in sorted(glob.glob(os.path.join(res, "cluster--*.stderr"))):
    server = os.path.basename(path).split("--")[2]
    for line in open(path, errors="replace"):
        m = re.search(r"\b(WARN|ERROR)\s+\S+\[\d+\]\s+(.*)", line)
        if m and "running as root" not in m.group(2):
            seen[(server, m.group(1), re.sub(r"\d+", "N", m.group(2).strip()))] += 1
try:
    for line in open(redis_log, errors="replace"):
        # Redis marks warnings with '#'; the start-up banner and config
        # lines are not warnings.
        m = re.match(r"\d+:\w \d+ \w+ \d+ [\d:.]+ # (.*)", line)
        if m and "WARNING" in m.group(1):
            seen[("redis", "WARN", m.group(1).split(".")[0])] += 1
except OSError:
    pass
if not seen:
    print("Server logs (mpchat at info, every run) and the Redis log: no warning or error, apart from mpchat's \"running as root\".")
for (server, level, text), n in sorted(seen.items()):
    print(f"Log, {server}: {n} x {level} {text}")
EOF
    # Done with Redis: stop it now rather than at exit.
    if [[ -n $redis_pid ]]; then
        kill -TERM "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
        redis_pid=""
    fi
fi

# --- the table ----------------------------------------------------------------
python3 scripts/bench_table.py "$results" "$out"
log "wrote $out (results in $results/)"
