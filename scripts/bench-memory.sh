#!/bin/bash
# bench-memory.sh — memory per held registration, the node beside Kamailio, same run, same load.
#
# In one private network namespace: Kamailio (scripts/bench/kamailio-legacy.cfg: usrloc in
# memory, no auth, children=4, UDP 127.0.0.1:5070, -m 1024 MB shared memory) and the node
# open, without a users file (`p2psip node --sip 127.0.0.1:5060 --domain legacy.test`, the
# ring of one node as its location store), like Kamailio without auth. Each gets the same
# SIPp load in turn: REG_N distinct users (scripts/bench/sipp/register.xml, Expires 3600,
# both servers keep that) at REG_RATE/s. Memory is read from /proc/PID/smaps_rollup summed
# over the server's processes (PSS: shared pages split between the processes that map
# them, so the sum is what the server really holds; RSS summed too, which counts
# Kamailio's shared memory once per process):
#   before      just before its SIPp run
#   after       just after the last 200
#   settled     SETTLE seconds later (the node keeps each REGISTER's UDP server transaction
#               for Timer J, 32 s, so "after" still includes them; "settled" is the held
#               registrations alone)
# and prints bytes per registration = (settled - before) / registrations (and after - before).
#
# Usage: scripts/bench-memory.sh           (~5 min)
# env:   P2PSIP_BIN=path  REG_N=100000  REG_RATE=2000  SETTLE=40  SERVERS="p2psip kamailio"
#        KAM_CHILDREN=4  KEEP=1 (keep logs)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
B=$HERE/bench
REG_N=${REG_N:-100000}; REG_RATE=${REG_RATE:-2000}; SETTLE=${SETTLE:-40}
SERVERS=${SERVERS:-"p2psip kamailio"}; KAM_CHILDREN=${KAM_CHILDREN:-4}
DOMAIN=legacy.test; KAM_PORT=5070; NODE_PORT=5060

. "$HERE/bench/lib.sh"
bench_install kamailio sip-tester iproute2 procps
bench_binary

bench_netns membench
udp_bound() { ip netns exec "$NS" ss -Hlun "sport = :$1" | grep -q .; }

KAMPID=""; NODEPID=""
ip netns exec "$NS" kamailio -DD -E -f "$B/kamailio-legacy.cfg" -Y "$TMP" -P "$TMP/kam.pid" \
   -m 1024 -M 16 -A "LISTEN_SOCK=udp:127.0.0.1:$KAM_PORT" -A "KAM_CHILDREN=$KAM_CHILDREN" \
   -A 'KAM_DEBUG=1' >"$TMP/kamailio.log" 2>&1 &
KAMPID=$!; PIDS+=($KAMPID)
ip netns exec "$NS" "$P2PSIP_BIN" node --sip "127.0.0.1:$NODE_PORT" --domain "$DOMAIN" \
   >"$TMP/p2psip.out" 2>"$TMP/p2psip.err" &
NODEPID=$!; PIDS+=($NODEPID)
for _ in $(seq 50); do udp_bound $KAM_PORT && grep -q '^p2psip listening on' "$TMP/p2psip.out" && break; sleep 0.2; done
udp_bound $KAM_PORT || { echo "kamailio did not start" >&2; tail "$TMP/kamailio.log" >&2; exit 1; }
grep -q '^p2psip listening on' "$TMP/p2psip.out" || { echo "p2psip did not start" >&2; tail "$TMP/p2psip.err" >&2; exit 1; }
sleep 1

echo "# bench-memory.sh $(date -u -Is) nproc=$(nproc) cpu=\"$(grep -m1 'model name' /proc/cpuinfo | sed 's/^.*: //')\""
echo "# $(kamailio -v 2>&1 | head -1 | sed 's/^version: //') children=$KAM_CHILDREN -m 1024; $(sipp -v 2>&1 | grep -m1 SIPp | sed 's/^ *//'); p2psip $("$P2PSIP_BIN" --version 2>/dev/null | awk '{print $2}') ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)), open (no users file)"
echo "# load: $REG_N distinct users, Expires 3600, $REG_RATE REGISTER/s; loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# pids of a server: its main process and its children (Kamailio's workers)
pids_of() {
  local root=$1 p s
  for p in $(ip netns pids "$NS"); do
    s=($(sed 's/^.*) //' /proc/$p/stat 2>/dev/null)) || continue
    { [ "$p" = "$root" ] || [ "${s[1]:-}" = "$root" ]; } && echo "$p"
  done
}
# "PSS_KB RSS_KB NPROC" summed over the server's processes
mem() {
  local p pss=0 rss=0 n=0 a b
  for p in $(pids_of "$1"); do
    read -r a b < <(awk '/^Pss:/ { p = $2 } /^Rss:/ { r = $2 } END { print p + 0, r + 0 }' "/proc/$p/smaps_rollup" 2>/dev/null)
    pss=$((pss + ${a:-0})); rss=$((rss + ${b:-0})); n=$((n + 1))
  done
  echo "$pss $rss $n"
}
bash "$B/sipp/make-users-csv.sh" "$TMP/users.csv" "$REG_N" "$DOMAIN" mem

declare -A RES
for s in $SERVERS; do
  if [ "$s" = kamailio ]; then root=$KAMPID; port=$KAM_PORT; else root=$NODEPID; port=$NODE_PORT; fi
  read -r p0 r0 n0 < <(mem "$root")
  limit=$(( REG_N / REG_RATE + 60 ))
  (cd "$TMP" && timeout -k 5 "$limit" ip netns exec "$NS" sipp "127.0.0.1:$port" -i 127.0.0.1 -p 7000 \
     -sf "$B/sipp/register.xml" -inf "$TMP/users.csv" -r "$REG_RATE" -m "$REG_N" -l 15000 -timeout "$limit" \
     -nostdin -buff_size 1048576 -trace_stat -stf "$TMP/$s.stf" -fd 1 </dev/null >"$TMP/$s.sipp.out" 2>&1)
  rc=$?
  read -r p1 r1 n1 < <(mem "$root")
  load1=$(cut -d' ' -f1 /proc/loadavg)
  stats=$(python3 - "$TMP/$s.stf" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1]), delimiter=";") if r]
h, l = rows[0], rows[-1]
g = lambda k: l[h.index(k)]
print(g("SuccessfulCall(C)"), g("FailedCall(C)"), g("Retransmissions(C)"))
PY
)
  read -r ok failed retr <<<"$stats"
  sleep "$SETTLE"
  read -r p2 r2 n2 < <(mem "$root")
  alive=$(kill -0 "$root" 2>/dev/null && echo yes || echo NO)
  echo
  echo "== $s: $ok registered, $failed failed, $retr retransmissions (sipp rc=$rc), $n1 process(es), alive $alive, loadavg $load1"
  printf '  %-28s %10s %10s\n' "" "PSS MB" "RSS MB"
  printf '  %-28s %10.1f %10.1f\n' "before" "$(echo "$p0/1024" | bc -l)" "$(echo "$r0/1024" | bc -l)"
  printf '  %-28s %10.1f %10.1f\n' "after the last 200" "$(echo "$p1/1024" | bc -l)" "$(echo "$r1/1024" | bc -l)"
  printf '  %-28s %10.1f %10.1f\n' "$SETTLE s later (settled)" "$(echo "$p2/1024" | bc -l)" "$(echo "$r2/1024" | bc -l)"
  if [ "${ok:-0}" -gt 0 ]; then
    bp=$(( (p2 - p0) * 1024 / ok )); br=$(( (r2 - r0) * 1024 / ok ))
    bp1=$(( (p1 - p0) * 1024 / ok )); br1=$(( (r1 - r0) * 1024 / ok ))
    echo "  bytes per registration: settled PSS $bp, RSS $br; right after the load PSS $bp1, RSS $br1"
    RES[$s]=$bp
  fi
done
if [ -n "${RES[p2psip]:-}" ] && [ -n "${RES[kamailio]:-}" ] && [ "${RES[kamailio]}" -gt 0 ]; then
  echo
  echo "settled PSS per registration: p2psip ${RES[p2psip]} B, kamailio ${RES[kamailio]} B, ratio p2psip/kamailio $(echo "scale=2; ${RES[p2psip]} / ${RES[kamailio]}" | bc -l)"
fi
echo "# loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
