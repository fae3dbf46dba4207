#!/usr/bin/env bash
# Call-setup time (INVITE to 180, timed by scripts/bench/call_setup.py) through the overlay, beside the same call
# through a single node, measured with SIPp in one run on 127.0.0.1.
#   - ring: 10 nodes; alice (a SIPp UAS) registers at node 0; for each other
#     node, a first call (the node asks the ring) and a second call (the node
#     answers from its cache of recent lookups);
#   - single: one standalone node with alice registered at it.
# Usage: scripts/bench-callsetup.sh [CALLS_PER_NODE=5]
# Prints a table of setup times (ms): median and mean per kind.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5}
BIN=${P2PSIP_BIN:-target/release/p2psip}
[ -n "${P2PSIP_BIN:-}" ] || cargo build --release -q -p p2psip
command -v sipp >/dev/null || { echo "sipp missing: run scripts/test.sh first" >&2; exit 1; }
TMP=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
BASE=25100; UAS=25090; HTTP=25200

start() { # port, extra args...
  local port=$1; shift
  "$BIN" node --sip "127.0.0.1:$port" --domain example.test "$@" >"$TMP/node$port.out" 2>"$TMP/node$port.err" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q listening "$TMP/node$port.out" 2>/dev/null && return; sleep 0.05; done
  echo "node on $port did not start" >&2; exit 1
}
register() { # node port, contact port
  sipp "127.0.0.1:$1" -sf tests/sipp/register.xml -i 127.0.0.1 -p $((BASE + 90)) -m 1 -nostdin \
    -key user alice -key domain example.test -key contact "sip:alice@127.0.0.1:$2" -key expires 3600 >/dev/null 2>&1
}
call() { # node port, tag: one call, its setup time (ms) appended to $TMP/$tag
  python3 scripts/bench/call_setup.py "$1" alice example.test 1 $((BASE + 91)) >> "$TMP/$2" \
    || { echo "call through $1 failed" >&2; exit 1; }
}

sipp -sf tests/sipp/uas_call.xml -i 127.0.0.1 -p $UAS -mp 26000 -nostdin >/dev/null 2>&1 &
PIDS+=($!)
# the ring
start $BASE --http 127.0.0.1:$HTTP
for i in $(seq 1 9); do start $((BASE + i)) --join 127.0.0.1:$BASE --http 127.0.0.1:$((HTTP + i)); done
for _ in $(seq 300); do
  ok=1; for i in $(seq 0 9); do
    curl -s "127.0.0.1:$((HTTP + i))/status" | grep -q '"joined":true' || ok=0
  done; [ $ok = 1 ] && break; sleep 0.1
done
sleep 3   # let stabilization settle the fingers (bounded; the figures are about steady state)
register $BASE $UAS
for round in $(seq 1 "$N"); do
  for i in $(seq 1 9); do
    call $((BASE + i)) first
    call $((BASE + i)) cached
  done
  # new registration: the cached entries are dropped by a new Call-ID only on failure,
  # so wait out the cache (30 s) instead of re-using it between rounds
  [ "$round" -lt "$N" ] && sleep 31
done
for p in "${PIDS[@]:1}"; do kill "$p" 2>/dev/null || true; done; PIDS=("${PIDS[0]}")
# a single node
start $((BASE + 50))
register $((BASE + 50)) $UAS
for _ in $(seq 1 $((N * 9))); do call $((BASE + 50)) single; done


python3 - "$TMP" <<'PY'
import statistics, sys, os
tmp = sys.argv[1]
print(f"{'kind':<28}{'calls':>6}{'median ms':>11}{'mean ms':>10}{'max ms':>9}")
for kind, label in [("single", "single node"), ("first", "ring, first call (lookup)"), ("cached", "ring, cached call")]:
    xs = [float(x) for x in open(os.path.join(tmp, kind)).read().split()]
    print(f"{label:<28}{len(xs):>6}{statistics.median(xs):>11.2f}{statistics.mean(xs):>10.2f}{max(xs):>9.2f}")
PY
