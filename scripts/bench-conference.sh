#!/bin/bash
# bench-conference.sh — conference mixing: CPU per participant, and the most participants one
# node mixes with no RTP packet later than 20 ms past its time.
#
# In a private network namespace, for each N of COUNTS: a ring of one node (the focus of every
# room, `[conference] max_participants = 1000`, RTP ports 40000-41999) and
# scripts/bench/conference_load.py: N participants join sip:conf-bench@example.test (PCMU, one
# RTP socket each), send a 20 ms packet of a tone each every 20 ms for SECS seconds, then hang
# up. Measured:
#   cpu%/part  the node's CPU (utime+stime from /proc/PID/stat) over the load's run, per
#              participant, in % of one core
#   late       the mixer's ticks sent more than 20 ms after their time, and the latest, as the
#              node logs them when the room closes (a tick's packets leave when the room's task
#              wakes for it: the time measured is the wake-up's against the tick's instant)
#   received   packets the participants received against N x ticks (the mix reached them)
# A room is "on time" when no tick was late by more than 20 ms (none skipped).
#
# Usage: scripts/bench-conference.sh     (~2 min; root, for the namespace)
# env:   P2PSIP_BIN=path  COUNTS="10 25 50 100 200 400"  SECS=10  KEEP=1 (keep logs)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
COUNTS=${COUNTS:-"10 25 50 100 200 400"}; SECS=${SECS:-10}
# shellcheck source=bench/lib.sh
source "$HERE/bench/lib.sh"
bench_install python3
bench_binary
bench_netns confbench

cat > "$TMP/node.toml" <<TOML
[conference]
max_participants = 1000
port_range = "40000-41999"
TOML

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at start; ${SECS} s per run"
printf '%6s %10s %10s %12s %14s %10s\n' participants cpu% cpu%/part late_ticks max_late_ms received
best=0
for n in $COUNTS; do
  log="$TMP/node-$n.log"
  ip netns exec "$NS" "$P2PSIP_BIN" node --sip 127.0.0.1:5060 --domain example.test \
    --config "$TMP/node.toml" >"$TMP/node-$n.out" 2>"$log" &
  pid=$!; PIDS+=("$pid")
  for _ in $(seq 100); do grep -q listening "$TMP/node-$n.out" 2>/dev/null && break; sleep 0.05; done
  t0=$(date +%s.%N); c0=$(cpu_ticks "$pid")
  out=$(ip netns exec "$NS" python3 "$HERE/bench/conference_load.py" 5060 "$n" "$SECS" 2>"$TMP/load-$n.err")
  c1=$(cpu_ticks "$pid"); t1=$(date +%s.%N)
  for _ in $(seq 100); do grep -q "conference room closed" "$log" && break; sleep 0.05; done
  closed=$(grep "conference room closed" "$log" | tail -1)
  field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$closed"; }
  ticks=$(field ticks); late=$(field late_ticks); max_us=$(field max_late_us)
  joined=$(sed -n 's/.*joined=\([0-9]*\).*/\1/p' <<<"$out")
  received=$(sed -n 's/.*received=\([0-9]*\).*/\1/p' <<<"$out")
  kill "$pid"; wait "$pid" 2>/dev/null
  if [ -z "$ticks" ] || [ "${joined:-0}" != "$n" ]; then
    echo "N=$n: joined ${joined:-0}, room log: ${closed:-none}; $(head -3 "$TMP/load-$n.err")"; continue
  fi
  awk -v n="$n" -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v hz="$HZ" -v late="$late" \
      -v us="$max_us" -v ticks="$ticks" -v rec="$received" 'BEGIN {
    cpu = (c1 - c0) / hz / (t1 - t0) * 100
    printf "%6d %10.1f %10.2f %7d/%-6d %12.1f %10.1f%%\n", n, cpu, cpu / n, late, ticks, us / 1000,
      rec / (n * ticks) * 100 }'
  [ "$late" = 0 ] && best=$n
done
echo "most participants mixed on time (no tick later than 20 ms): $best"
