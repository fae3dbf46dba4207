#!/bin/bash
# bench-flood.sh — what one source can do to a node in digest mode, and what everyone else sees.
#
# In one private network namespace (loopback only; 127.0.0.2 and 127.0.0.3 are loopback
# addresses there) the node runs in digest mode (a users file) on 127.0.0.1:5060.
#   A. REGISTER flood: SIPp from 127.0.0.2 sends REGISTERs without credentials as fast as it
#      can (-r FLOOD_RATE, one REGISTER per call, no retransmissions) for FLOOD_SECS seconds.
#      Meanwhile a probe from 127.0.0.3 (scripts/bench/sip_probe.py) sends an OPTIONS every
#      100 ms and records each answer's latency (unanswered: no answer within 2 s). Before the
#      flood the same probe runs 3 s alone (baseline). The node's RSS is read every second
#      during the flood and for 60 s after it. Run twice, each with a fresh node:
#        limits=default   no [limits] section: digest mode's default, 400 requests / 2 s / source
#        limits=off       [limits] requests = 0
#   B. 10,000 idle TCP connections from 127.0.0.2 (scripts/bench/tcp_idle.py: each socket bound
#      to 127.0.0.2, nothing sent, held TCP_HOLD seconds), node with default limits; then a
#      client from 127.0.0.3 connects over TCP and sends an OPTIONS, and a UDP probe runs.
#      Records whether the node stays up, its RSS, open fds and CPU before/after, how many of
#      the connections were established and how many the node closed.
#
# Usage: scripts/bench-flood.sh              (~5 min)
# env:   P2PSIP_BIN=path   FLOOD_RATE=50000  FLOOD_SECS=20  AFTER_SECS=60  TCP_CONNS=10000
#        TCP_HOLD=40  NOFILE=65536 (ulimit -n of the script, the node and the clients)
#        PARTS="flood tcp"  KEEP=1 (keep logs)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
B=$HERE/bench
FLOOD_RATE=${FLOOD_RATE:-50000}; FLOOD_SECS=${FLOOD_SECS:-20}; AFTER_SECS=${AFTER_SECS:-60}
TCP_CONNS=${TCP_CONNS:-10000}; TCP_HOLD=${TCP_HOLD:-40}; NOFILE=${NOFILE:-65536}
PARTS=${PARTS:-"flood tcp"}
DOMAIN=legacy.test; PORT=5060

. "$HERE/bench/lib.sh"
bench_install sip-tester iproute2 procps
bench_binary

hard=$(ulimit -Hn); [ "$hard" != unlimited ] && [ "$hard" -lt "$NOFILE" ] && NOFILE=$hard
ulimit -n "$NOFILE" || { echo "cannot raise ulimit -n to $NOFILE" >&2; exit 1; }

bench_netns floodbench
python3 "$B/make-auth-users.py" "$TMP/auth" 1000 "$DOMAIN" fuser

echo "# bench-flood.sh $(date -u -Is) nproc=$(nproc) cpu=\"$(grep -m1 'model name' /proc/cpuinfo | sed 's/^.*: //')\""
echo "# p2psip $("$P2PSIP_BIN" --version 2>/dev/null | awk '{print $2}') ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)); $(sipp -v 2>&1 | grep -m1 SIPp | sed 's/^ *//'); ulimit -n $NOFILE"
echo "# loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"

NODEPID=""
# start_node NAME [TOML lines...]: a fresh node in digest mode with the 1,000 users
start_node() {
  local name=$1; shift
  { printf '%s\n' "sip = \"127.0.0.1:$PORT\"" "domains = [\"$DOMAIN\"]" "users = \"$TMP/auth/node-users\""
    [ $# -gt 0 ] && printf '%s\n' "$@"; } >"$TMP/$name.toml"
  ip netns exec "$NS" "$P2PSIP_BIN" node --config "$TMP/$name.toml" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  NODEPID=$!; PIDS+=($NODEPID)
  for _ in $(seq 100); do grep -q '^p2psip listening on' "$TMP/$name.out" && return 0; sleep 0.2; done
  echo "p2psip did not start" >&2; tail "$TMP/$name.err" >&2; exit 1
}
stop_node() { kill "$NODEPID" 2>/dev/null; for _ in $(seq 50); do kill -0 "$NODEPID" 2>/dev/null || break; sleep 0.1; done; kill -9 "$NODEPID" 2>/dev/null; wait "$NODEPID" 2>/dev/null; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo gone; }
cpu_ticks() { local s; s=($(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null)) && echo $((s[11] + s[12])) || echo 0; }
nfds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
# namespace-wide UDP datagrams sent (/proc/net/snmp Udp OutDatagrams)
udp_out() { ip netns exec "$NS" awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } else print $c["OutDatagrams"] }' /proc/net/snmp; }
udp_drops() { ip netns exec "$NS" awk -v port="$(printf '%04X' "$PORT")" \
  'NR > 1 { split($2, a, ":"); if (a[2] == port) d += $NF } END { print d + 0 }' /proc/net/udp; }
probe() { ip netns exec "$NS" python3 "$B/sip_probe.py" udp --bind 127.0.0.3 --server "127.0.0.1:$PORT" "$@"; }

# ---------------------------------------------------------------- A. REGISTER flood
flood_run() {
  local label=$1; shift
  start_node "$label" "$@"
  sleep 1
  echo; echo "== REGISTER flood, limits=$label ($(if [ $# -gt 0 ]; then echo "$*"; else echo "no [limits] section"; fi)), loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "baseline probe (3 s, no flood): $(probe --every 0.1 --count 30 --wait 2)"
  local rss0 c0 d0 t
  rss0=$(rss_kb "$NODEPID"); c0=$(cpu_ticks "$NODEPID"); d0=$(udp_drops); o0=$(udp_out)
  # RSS once a second through the flood and AFTER_SECS after it (bounded)
  ( for t in $(seq 0 $((FLOOD_SECS + AFTER_SECS + 2))); do echo "$t $(rss_kb "$NODEPID")"; sleep 1; done ) >"$TMP/$label.rss" &
  local sampler=$!; PIDS+=($sampler)
  probe --every 0.1 --count $((FLOOD_SECS * 10)) --wait 2 --out "$TMP/$label.probe" >"$TMP/$label.probe.sum" &
  local prober=$!; PIDS+=($prober)
  (cd "$TMP" && timeout -k 5 $((FLOOD_SECS + 15)) ip netns exec "$NS" sipp "127.0.0.1:$PORT" -i 127.0.0.2 -p 7000 \
     -sf "$B/sipp/flood_register.xml" -inf "$TMP/auth/users.csv" -r "$FLOOD_RATE" -m $((FLOOD_RATE * FLOOD_SECS)) \
     -l 100000 -timeout "$FLOOD_SECS" -nostdin -buff_size 4194304 -trace_stat -stf "$TMP/$label.stf" -fd 1 \
     </dev/null >"$TMP/$label.sipp.out" 2>&1)
  local rc=$?
  local c1 d1; c1=$(cpu_ticks "$NODEPID"); d1=$(udp_drops)
  wait "$prober"; sleep 0.5
  local o1; o1=$(udp_out)
  python3 - "$TMP/$label.stf" "$rc" $((o1 - o0)) $((FLOOD_SECS * 10)) <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1]), delimiter=";") if r]
h, l = rows[0], rows[-1]
g = lambda k: l[h.index(k)]
ep = lambda f: float(f.split("\t")[-1])
el = ep(g("CurrentTime")) - ep(g("StartTime"))
sent = int(g("TotalCallCreated"))
# datagrams sent in the namespace = SIPp's REGISTERs + the probe's OPTIONS (and their answers)
# + the node's answers to the flood
answers = int(sys.argv[3]) - sent - 2 * int(sys.argv[4])
print(f"flood (SIPp from 127.0.0.2): sent={sent} REGISTERs in {el:.1f} s = {sent / el:.0f}/s;"
      f" node's answers to them ~{max(answers, 0)} (UDP OutDatagrams of the namespace minus SIPp's and the probe's);"
      f" sipp rc={sys.argv[2]}")
PY
  echo "node: cpu during flood $(( (c1 - c0) * 1000 / HZ )) ms; kernel drops at its UDP socket $((d1 - d0)); alive after flood: $(kill -0 "$NODEPID" 2>/dev/null && echo yes || echo NO)"
  echo "probe from 127.0.0.3 during the flood (OPTIONS every 100 ms): $(cat "$TMP/$label.probe.sum")"
  echo "  (waiting ${AFTER_SECS} s after the flood for the last RSS reading)"
  wait "$sampler"
  awk -v f="$FLOOD_SECS" -v a="$AFTER_SECS" -v r0="$rss0" '
    { rss[$1] = $2; if ($1 <= f + 1 && $2 + 0 > peak) peak = $2 + 0 }
    END { printf "node RSS (MB): before %.1f, peak during flood %.1f, at end of flood %.1f, %d s after %.1f\n",
          r0 / 1024, peak / 1024, rss[f] / 1024, a, rss[f + a] / 1024 }' "$TMP/$label.rss"
  echo "  RSS every second (s:MB): $(awk '{ printf "%s:%.0f ", $1, $2 / 1024 }' "$TMP/$label.rss")"
  grep -c 'limit\|blocked\|busy' "$TMP/$label.err" >/dev/null 2>&1 && \
    echo "  node log lines about limits: $(sed 's/\x1b\[[0-9;]*m//g' "$TMP/$label.err" | grep -i 'limit\|block\|busy' | head -3 | cut -c1-200)"
  stop_node
}
if [[ " $PARTS " == *" flood "* ]]; then
  flood_run default
  flood_run off "[limits]" "requests = 0"
fi

# ---------------------------------------------------------------- B. idle TCP connections
if [[ " $PARTS " == *" tcp "* ]]; then
  start_node tcp
  sleep 1
  echo; echo "== $TCP_CONNS idle TCP connections from 127.0.0.2 (node in digest mode, default limits), loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "node nofile limit: $(awk '/Max open files/ { print $4 " soft / " $5 " hard" }' /proc/$NODEPID/limits)"
  echo "before: RSS $(( $(rss_kb "$NODEPID") / 1024 )) MB, fds $(nfds "$NODEPID"); TCP OPTIONS from 127.0.0.3: $(ip netns exec "$NS" python3 "$B/sip_probe.py" tcp --bind 127.0.0.3 --server "127.0.0.1:$PORT" --wait 5)"
  c0=$(cpu_ticks "$NODEPID")
  rm -f "$TMP/tcp.ready"
  timeout -k 5 $((TCP_HOLD + 200)) ip netns exec "$NS" python3 "$B/tcp_idle.py" --bind 127.0.0.2 --server "127.0.0.1:$PORT" \
     --count "$TCP_CONNS" --hold "$TCP_HOLD" --ready "$TMP/tcp.ready" >"$TMP/tcp.out" 2>&1 &
  idler=$!; PIDS+=($idler)
  for _ in $(seq 600); do [ -s "$TMP/tcp.ready" ] && break; kill -0 "$idler" 2>/dev/null || break; sleep 0.2; done
  sleep 2
  head -1 "$TMP/tcp.out"
  echo "with the connections open: node alive $(kill -0 "$NODEPID" 2>/dev/null && echo yes || echo NO)," \
       "RSS $(( $(rss_kb "$NODEPID") / 1024 )) MB, fds $(nfds "$NODEPID")," \
       "established to :$PORT $(ip netns exec "$NS" ss -Htn state established "( sport = :$PORT )" | wc -l)"
  echo "  TCP OPTIONS from 127.0.0.3: $(ip netns exec "$NS" python3 "$B/sip_probe.py" tcp --bind 127.0.0.3 --server "127.0.0.1:$PORT" --wait 5)"
  echo "  UDP probe from 127.0.0.3 (20 × 100 ms): $(probe --every 0.1 --count 20 --wait 2)"
  wait "$idler"
  tail -1 "$TMP/tcp.out"
  c1=$(cpu_ticks "$NODEPID")
  sleep 2
  echo "after the client closed them: node alive $(kill -0 "$NODEPID" 2>/dev/null && echo yes || echo NO)," \
       "RSS $(( $(rss_kb "$NODEPID") / 1024 )) MB, fds $(nfds "$NODEPID"), node CPU while they were open $(( (c1 - c0) * 1000 / HZ )) ms;" \
       "TCP OPTIONS from 127.0.0.3: $(ip netns exec "$NS" python3 "$B/sip_probe.py" tcp --bind 127.0.0.3 --server "127.0.0.1:$PORT" --wait 5)"
  sed 's/\x1b\[[0-9;]*m//g' "$TMP/tcp.err" | grep -iv ' INFO ' | head -5 | cut -c1-200 | sed 's/^/  node log: /'
  stop_node
fi
echo; echo "# loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
