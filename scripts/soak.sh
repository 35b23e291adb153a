#!/usr/bin/env bash
# Soak tests, the long versions of two tests of the suite:
# - 10,000 visits to one server (connect, log in, say a line, see it,
#   quit) while one user stays throughout; then the hub's RSS must be within
#   1 MiB of its size after the first 100 visits, the parent's and the hub's
#   open fds back where they were, and no process left over or unreaped
#   (the suite runs 2,000 visits);
# - 10% of 20 users' children killed with SIGKILL every second for a
#   minute while the rest chat: nobody else is dropped, every leave is
#   announced, every name is free again at once (the suite runs 5 rounds
#   back to back).
#
# Usage: scripts/soak.sh [VISITS [ROUNDS]]     (defaults 10000 and 60)
set -euo pipefail
cd "$(dirname "$0")/.."
visits=${1:-10000}
rounds=${2:-60}
if ! [[ $visits =~ ^[0-9]+$ && $rounds =~ ^[0-9]+$ ]] || (( visits < 200 )); then
    echo "soak.sh: VISITS (200 or more) and ROUNDS must be numbers, not '$visits' '$rounds'" >&2
    exit 2
fi
MPCHAT_SOAK_VISITS=$visits cargo test --release --test processes \
    two_thousand_visits_leak_no_memory_fd_or_process -- --exact --nocapture
MPCHAT_KILL_ROUNDS=$rounds MPCHAT_KILL_PACE_MS=1000 cargo test --release --test processes \
    killing_children_drops_nobody_else_and_frees_their_names -- --exact --nocapture
