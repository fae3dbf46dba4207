#!/bin/bash
# bench-overlay.sh — the ring beside OpenDHT, same machine, same run, same work.
#
# In one private network namespace (loopback only), one after the other:
#   p2psip   N `p2psip node` release processes on 127.0.0.1 (scripts/bench/overlay_p2psip.py:
#            node 0, then the others at once, each joining node 0), driven over UDP by one
#            small load driver that is the phones of all users;
#   OpenDHT  N DhtRunner nodes of Debian's python3-opendht in one process
#            (scripts/bench/opendht-anchor.py --single N).
# The same work for both: bootstrap (p2psip: every successor and predecessor right, then every
# finger table full; OpenDHT: every node knows >= 8 nodes), OPS users stored through random
# nodes (p2psip: REGISTER; OpenDHT: put), 16 in flight; each looked up once from a node that is
# neither the user's registrar/putter nor one of its holders (p2psip: an OPTIONS to the user,
# which the node routes by a ring fetch and proxies to the phone; OpenDHT: get, first answer);
# requests per operation from the nodes' own counters; then 20% of the nodes killed at once
# (p2psip: SIGKILL; OpenDHT: the runner stopped without a word) and every user looked up
# again right away and 30 s later; RSS and CPU per node. The scripts' docstrings say exactly
# how each figure is taken.
#
# Usage: scripts/bench-overlay.sh [N]          (N = 100 by default; ~4 min at 100)
# env:   P2PSIP_BIN=path  OPS=1000  CONCURRENCY=16  CHURN=0.2  CHURN_WAIT=30  SEED=1
#        PEERS="p2psip opendht"  KEEP=1 (keep the nodes' logs)  RESULTS=file
#        SEMI=1 (the nodes run with [ring] semi_recursive = true)
# Run it under the benchmark lock, with the release binary built under the same lock:
#        flock /tmp/bench.lock cargo build --release -p p2psip
#        flock /tmp/bench.lock scripts/bench-overlay.sh 100
# Output: each peer's summary line and RESULT json, then the figures side by side with the
# ratios; everything is also appended to scripts/bench/overlay-<date>.txt.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
B=$HERE/bench
N=${1:-100}
case $N in ''|*[!0-9]*) echo "N must be a number, not '$N'" >&2; exit 2 ;; esac
[ "$N" -ge 10 ] && [ "$N" -le 1000 ] || { echo "N must be within 10..1000" >&2; exit 2; }
OPS=${OPS:-1000}; CONCURRENCY=${CONCURRENCY:-16}; CHURN=${CHURN:-0.2}; CHURN_WAIT=${CHURN_WAIT:-30}
SEED=${SEED:-1}; PEERS=${PEERS:-"p2psip opendht"}
RESULTS=${RESULTS:-$B/overlay-$(date -u +%Y%m%d).txt}

. "$HERE/bench/lib.sh"
bench_install python3-opendht iproute2 procps
BIN_FROM="built from the tree"; [ -n "${P2PSIP_BIN:-}" ] && BIN_FROM="binary given in P2PSIP_BIN"
bench_binary
bench_netns overlaybench
[ "$N" -le 300 ] || ulimit -n 65536

OUT=$TMP/out.txt
{
  echo "# bench-overlay.sh $N $(date -u -Is) nproc=$(nproc) cpu=\"$(grep -m1 'model name' /proc/cpuinfo | sed 's/^.*: //')\" kernel $(uname -r)"
  echo "# p2psip $("$P2PSIP_BIN" --version 2>/dev/null | awk '{print $2}') ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD 2>/dev/null || echo ' +changes'), $BIN_FROM); python3-opendht $(dpkg-query -W -f='${Version}' python3-opendht 2>/dev/null)"
  echo "# ops=$OPS concurrency=$CONCURRENCY churn=$CHURN churn_wait=${CHURN_WAIT}s seed=$SEED; loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT"

LIMIT=$(( 600 + N * 2 ))
for peer in $PEERS; do
  case $peer in
    p2psip)
      mkdir -p "$TMP/p2psip"
      timeout -k 10 "$LIMIT" ip netns exec "$NS" python3 "$B/overlay_p2psip.py" --bin "$P2PSIP_BIN" \
        --tmp "$TMP/p2psip" --n "$N" --ops "$OPS" --concurrency "$CONCURRENCY" --churn "$CHURN" \
        --churn-wait "$CHURN_WAIT" --seed "$SEED" ${SEMI:+--semi-recursive} </dev/null 2>"$TMP/p2psip.err" | tee -a "$OUT"
      rc=${PIPESTATUS[0]} ;;
    opendht)
      timeout -k 10 "$LIMIT" ip netns exec "$NS" /usr/bin/python3 "$B/opendht-anchor.py" --single "$N" \
        --ops "$OPS" --concurrency "$CONCURRENCY" --churn "$CHURN" --churn-wait "$CHURN_WAIT" \
        --seed "$SEED" --op-timeout 60 </dev/null 2>"$TMP/opendht.err" | tee -a "$OUT"
      rc=${PIPESTATUS[0]} ;;
    *) echo "unknown peer $peer" >&2; exit 2 ;;
  esac
  [ "$rc" = 0 ] || { echo "$peer run failed (rc=$rc)" | tee -a "$OUT" >&2; tail -5 "$TMP/$peer.err" >&2; }
done

python3 "$B/overlay_compare.py" "$OUT" | tee -a "$OUT"
echo "# loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"
{ cat "$OUT"; echo; } >>"$RESULTS"
