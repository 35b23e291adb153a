#!/usr/bin/env bash
# A short conversation: starts mpchat on a free port, connects three nc
# clients that type a few lines each (two of them meet in a room, #lab2), then shows what every client saw and
# what the processes looked like in ps while they were connected.
#
# Usage: scripts/demo.sh        (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."

command -v nc >/dev/null || { echo "demo.sh: needs nc (apt-get install netcat-openbsd)" >&2; exit 1; }
cargo build --release --quiet
work=$(mktemp -d)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

./target/release/mpchat --bind 127.0.0.1 --data-dir "$work/data" 0 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 50); do
    port=$(sed -n 's/^mpchat: listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$work/server.log")
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "${port:-}" ] || { echo "demo.sh: the server did not start:" >&2; cat "$work/server.log" >&2; exit 1; }
echo "mpchat is listening on port $port"

# Each client types its lines with pauses, the way people do; -q 1 makes nc
# leave a second after its input ends.
client() {
    local name=$1; shift
    { for line in "$@"; do
          if [[ $line == sleep:* ]]; then sleep "${line#sleep:}"; else printf '%s\n' "$line"; fi
      done; } | nc -q 1 127.0.0.1 "$port" >"$work/$name.out" 2>&1 &
}
client alice alice sleep:1.0 "hi everyone" sleep:1.0 "/whisper bob are you there?" sleep:1.5 /users sleep:0.5 "/join #lab2" sleep:1.5 "the lab is open" sleep:1.5 /quit
client bob sleep:0.3 bob sleep:1.5 "/me waves" sleep:1.0 "/w alice yes!" sleep:1.7 "/join #lab2" sleep:0.5 "/join #lobby" sleep:2.0 /rooms sleep:0.5 /quit
client carol sleep:0.6 carol sleep:2.0 "/schedule +2 coffee time" sleep:3.0 /quit
sleep 1.2
echo
echo "--- ps while three clients are connected ---"
ps -o pid,ppid,comm,args --ppid "$server_pid" --pid "$server_pid"
wait_clients() { while [ "$(jobs -rp | wc -l)" -gt 1 ]; do sleep 1; done; }
wait_clients
for name in alice bob carol; do
    echo
    echo "--- what $name saw ---"
    tr -d '\r' <"$work/$name.out"
done
echo
echo "--- server log ---"
cat "$work/server.log"
