#!/bin/bash
# bench-voicemail.sh — voicemail calls being recorded: CPU per concurrent call, and the most calls
# one node holds with no greeting RTP packet later than 20 ms past its time; beside it, in the
# same run and on the same node process, the conference mixer's CPU per participant.
#
# In a private network namespace, for each N of COUNTS: a ring of one node (`[voicemail]`
# enabled, max_seconds 60, RTP ports 40000-41999; `[conference]` ports 42000-43999, relay off)
# and scripts/bench/voicemail_load.py: N callers call N offline users (known to the node) at
# once; each ACKs voicemail's 200, receives the 1 s greeting and sends a 20 ms PCMU packet of a
# tone every 20 ms for SECS seconds, then hangs up (the node then stores N recordings).
# Measured:
#   cpu%/call   the node's CPU (utime+stime, /proc/PID/stat) in % of one core over the steady
#               part (every call answered and past its greeting, up to the first BYE), per call
#   late        greeting packets sent more than 20 ms after their time, of all sent, and the
#               latest, as the node logs them when each call's media ends ("voicemail media
#               ended": the time measured is the call task's wake-up against the packet's time)
#   greeting    greeting packets the callers received against N x 50
# Then scripts/bench/conference_load.py with N participants in one room on the same node
# (the peer: CPU per participant over its whole run, late mixer ticks), as bench-conference.sh.
#
# Usage: flock /tmp/bench.lock scripts/bench-voicemail.sh     (root, for the namespace)
# env:   P2PSIP_BIN=path  COUNTS="10 50 100 200 400"  SECS=20  KEEP=1 (keep logs)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
COUNTS=${COUNTS:-"10 50 100 200 400"}; SECS=${SECS:-20}
# shellcheck source=bench/lib.sh
source "$HERE/bench/lib.sh"
bench_install python3
bench_binary
bench_netns vmbench

cat > "$TMP/node.toml" <<TOML
[relay]
mode = "off"
[voicemail]
enabled = true
max_seconds = 60
port_range = "40000-41999"
[conference]
max_participants = 1000
port_range = "42000-43999"
TOML

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at start; ${SECS} s per run"
printf '%6s %8s %9s %14s %12s %10s | %9s %10s %12s\n' calls cpu% cpu%/call late/sent \
  max_late_ms greeting conf_cpu% cpu%/part late_ticks
best=0
for n in $COUNTS; do
  log="$TMP/node-$n.log"
  ip netns exec "$NS" "$P2PSIP_BIN" node --sip 127.0.0.1:5060 --domain example.test \
    --config "$TMP/node.toml" >"$TMP/node-$n.out" 2>"$log" &
  pid=$!; PIDS+=("$pid")
  for _ in $(seq 100); do grep -q listening "$TMP/node-$n.out" 2>/dev/null && break; sleep 0.05; done
  out=$(ip netns exec "$NS" python3 "$HERE/bench/voicemail_load.py" 5060 "$n" "$SECS" "$pid" \
    2>"$TMP/load-$n.err")
  val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$out"; }
  answered=$(val answered); received=$(val received)
  steady_s=$(val steady_s); steady_ticks=$(val steady_ticks)
  # Each call's media logs its greeting's lateness when it ends (after the BYE).
  for _ in $(seq 200); do
    [ "$(grep -c 'voicemail media ended' "$log")" -ge "${answered:-1}" ] && break; sleep 0.1
  done
  read -r packets late max_us < <(grep 'voicemail media ended' "$log" | awk '{
      for (i = 1; i <= NF; i++) { split($i, kv, "=");
        if (kv[1] == "greeting_packets") p += kv[2]; if (kv[1] == "late_packets") l += kv[2];
        if (kv[1] == "max_late_us" && kv[2] > m) m = kv[2] } }
      END { printf "%d %d %d\n", p, l, m }')
  # The peer: the conference mixer, N participants in one room, same node.
  t0=$(date +%s.%N); c0=$(cpu_ticks "$pid")
  conf=$(ip netns exec "$NS" python3 "$HERE/bench/conference_load.py" 5060 "$n" 10 2>"$TMP/conf-$n.err")
  c1=$(cpu_ticks "$pid"); t1=$(date +%s.%N)
  for _ in $(seq 100); do grep -q "conference room closed" "$log" && break; sleep 0.05; done
  closed=$(grep "conference room closed" "$log" | tail -1)
  ticks=$(sed -n 's/.* ticks=\([0-9]*\).*/\1/p' <<<"$closed")
  late_ticks=$(sed -n 's/.* late_ticks=\([0-9]*\).*/\1/p' <<<"$closed")
  kill "$pid"; wait "$pid" 2>/dev/null
  if [ "${answered:-0}" != "$n" ] || [ -z "$steady_s" ]; then
    echo "N=$n: answered ${answered:-0}; $(head -3 "$TMP/load-$n.err")"; continue
  fi
  awk -v n="$n" -v hz="$HZ" -v s="$steady_s" -v t="$steady_ticks" -v p="$packets" -v l="$late" \
      -v us="$max_us" -v rec="$received" -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" \
      -v lt="${late_ticks:--}" -v tk="${ticks:--}" 'BEGIN {
    cpu = t / hz / s * 100; conf = (c1 - c0) / hz / (t1 - t0) * 100
    printf "%6d %8.1f %9.3f %7d/%-6d %12.1f %9.1f%% | %9.1f %10.3f %6s/%-6s\n", n, cpu, cpu / n,
      l, p, us / 1000, rec / (n * 50) * 100, conf, conf / n, lt, tk }'
  [ "$late" = 0 ] && [ "$packets" -ge $((n * 50)) ] && best=$n
done
echo "most voicemail calls held with no greeting packet later than 20 ms: $best (of COUNTS)"
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
