#!/usr/bin/env bash
# Relayed RTP streams one node carries: one-way latency added by the relay (p50/p99/p99.9, against the same
# streams sent directly) and the relay's CPU per stream, beside rtpengine (userspace, Debian rtpengine-daemon)
# in the same run when it is installed. Load: src/bin/relay-load.rs (G.711, 50 packets/s each way per stream).
# Usage: scripts/bench-relay.sh [SECONDS=10] [STREAMS...=100 250 500]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}; shift || true
COUNTS=${*:-100 250 500}
[ -n "${P2PSIP_BIN:-}" ] || cargo build --release -q -p p2psip --bins
BIN=${P2PSIP_BIN:-target/release/p2psip}
LOAD=$(dirname "$BIN")/relay-load
TMP=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
# Outside the relay's ports (22000-25999) and rtpengine's (27000-29999), all below the
# ephemeral ports (32768-60999) the load generator's sockets take.
SIP=127.0.0.1:26400; NG=127.0.0.1:26401
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime of a process, in clock ticks
HZ=$(getconf CLK_TCK)

printf '[relay]\nmode = "always"\nports = "22000-25999"\nmax_sessions = 5000\nidle_s = 20\n' > "$TMP/relay.toml"
"$BIN" node --sip "$SIP" --domain example.test --config "$TMP/relay.toml" >"$TMP/node.out" 2>"$TMP/node.err" &
NODE=$!; PIDS+=($NODE)
for _ in $(seq 100); do grep -q listening "$TMP/node.out" 2>/dev/null && break; sleep 0.05; done
RTPE=; PEER="not installed"
if command -v rtpengine >/dev/null; then
  PEER=$(rtpengine --version 2>&1 | head -1)
  rtpengine --foreground --table=-1 --interface=127.0.0.1 --listen-ng=$NG --port-min=27000 --port-max=29999 \
    --log-stderr --log-level=3 2>"$TMP/rtpengine.err" &
  RTPE=$!; PIDS+=($RTPE)
  for _ in $(seq 100); do ss -Hlun "sport = :${NG##*:}" | grep -q . && break; sleep 0.05; done
fi

run() { # kind, server, streams, pid-or-empty: one line of figures
  local before after cpu
  [ -n "$4" ] && before=$(ticks "$4")
  out=$("$LOAD" "$1" "$2" "$3" "$SECS")
  if [ -n "$4" ]; then
    after=$(ticks "$4")
    cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v s="$SECS" -v n="$3" \
      'BEGIN { printf "cpu=%.1f%% cpu_per_stream=%.3f%%", 100*t/hz/s, 100*t/hz/s/n }')
  else cpu="cpu=- cpu_per_stream=-"; fi
  echo "$out $cpu"
}
echo "# $(git rev-parse --short HEAD), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), ${SECS} s per run, rtpengine: $PEER"
for n in $COUNTS; do
  run direct 127.0.0.1:9 "$n" ""
  run p2psip "$SIP" "$n" "$NODE"
  [ -n "$RTPE" ] && run rtpengine "$NG" "$n" "$RTPE"
done
