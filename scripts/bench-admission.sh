#!/bin/bash
# bench-admission.sh — the cost of overlay admission: CPU per REGISTER and per call through
# a ring of three members, open ring vs shared-secret ring (HMAC on every overlay message),
# in one run, with the same SIPp load.
#
# In one private network namespace it starts one ring of three nodes per mode (MODES):
#   open    no overlay credential (127.0.0.1:5060-5062)
#   secret  `overlay_secret` (127.0.0.1:5160-5162): every overlay request and response
#           carries a P2P-Auth HMAC, checked with a replay window
# (another mode is one more `case` in mode_config and a port base in mode_base), then drives
# each ring in turn with identical SIPp load, always at its first node:
#   1. REGISTER, unique users (each one a fetch and a store through the ring, the store
#      replicated to the two other nodes)           -> CPU ms per 1,000 REGISTERs
#   2. calls (uac_call.xml -> first node -> bob, a uas_call.xml registered at the second node)
#                                                   -> CPU ms per 1,000 calls
# CPU = utime+stime (/proc/PID/stat) of the three nodes of the ring, read just before and just
# after each SIPp run; both rings run all the time (the idle one only stabilizes). For every
# rate the modes run back to back and the order alternates, so drift in the machine's load
# hits both alike. The nodes get `[limits] requests = 0` (one SIPp source sends everything).
# "OK" as in bench-node.sh: 0 failed, 0 retransmissions, >= 95% of the offered rate.
#
# Usage: scripts/bench-admission.sh            (~6 min)
#        QUICK=1 scripts/bench-admission.sh    (smoke run, ~1 min)
# env:   P2PSIP_BIN=path   MODES="open secret"   REPS=2
#        REG_RATES="300 500"  REG_N=10000   CALL_RATES="100 200"  CALL_N=3000
#        SIPP_BUFF=1048576  KEEP=1 (keep logs)  RESULTS=file
# Output: one line per run, then per kind and mode the pooled CPU ms per 1,000 and the
# ratio to the open ring; raw lines are appended to scripts/bench/admission-<date>.txt.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
B=$HERE/bench

if [ "${QUICK:-0}" = 1 ]; then
  REG_RATES=${REG_RATES-300}; REG_N=${REG_N:-3000}
  CALL_RATES=${CALL_RATES-100}; CALL_N=${CALL_N:-1000}; REPS=${REPS:-1}
else
  REG_RATES=${REG_RATES-"300 500"}; REG_N=${REG_N:-10000}
  CALL_RATES=${CALL_RATES-"100 200"}; CALL_N=${CALL_N:-3000}; REPS=${REPS:-2}
fi
MODES=${MODES:-"open secret"}
SIPP_BUFF=${SIPP_BUFF:-1048576}
UAS_PORT=5090
DOMAIN=legacy.test
STAMP=$(date -u +%Y%m%d-%H%M%S)
RESULTS=${RESULTS:-$B/admission-$(date -u +%Y%m%d).txt}

. "$HERE/bench/lib.sh"
bench_install sip-tester iproute2 procps bc
bench_binary
bench_netns admbench

# ---------------------------------------------------------------- rings
mode_base() {
  case $1 in open) echo 5060 ;; secret) echo 5160 ;; *) echo "unknown mode $1" >&2; exit 1 ;; esac
}
# mode_config MODE: the config lines a mode adds to every node of its ring
mode_config() {
  case $1 in
    open) ;;
    secret) echo "overlay_secret = \"$TMP/overlay-secret\"" ;;
    *) echo "unknown mode $1" >&2; exit 1 ;;
  esac
}
# a fresh random secret for this run only (never committed)
head -c 32 /dev/urandom | base64 >"$TMP/overlay-secret"; chmod 600 "$TMP/overlay-secret"

declare -A RING_PIDS
start_ring() {
  local mode=$1 base i port conf pids=""
  base=$(mode_base "$mode")
  for i in 0 1 2; do
    port=$((base + i)); conf="$TMP/$mode-$i.toml"
    {
      echo "sip = \"127.0.0.1:$port\""
      echo "domains = [\"$DOMAIN\"]"
      echo "http = \"127.0.0.1:$((port + 3000))\""
      [ "$i" = 0 ] || echo "join = [\"127.0.0.1:$base\"]"
      mode_config "$mode"
      echo "[limits]"
      echo "requests = 0"
    } >"$conf"
    ip netns exec "$NS" "$P2PSIP_BIN" node --config "$conf" >"$TMP/$mode-$i.out" 2>"$TMP/$mode-$i.err" &
    PIDS+=($!); pids="$pids $!"
    for _ in $(seq 50); do grep -q '^p2psip listening on' "$TMP/$mode-$i.out" && break; sleep 0.2; done
    grep -q '^p2psip listening on' "$TMP/$mode-$i.out" || { echo "$mode node $i did not start" >&2; tail "$TMP/$mode-$i.err" >&2; exit 1; }
  done
  RING_PIDS[$mode]=$pids
  # joined: every node has a predecessor and a successor other than itself
  for _ in $(seq 150); do
    ip netns exec "$NS" python3 - "$base" <<'EOF' && return 0
import json, sys, urllib.request
base = int(sys.argv[1])
for i in range(3):
    try:
        s = json.load(urllib.request.urlopen(f"http://127.0.0.1:{base + i + 3000}/status", timeout=1))
    except Exception:
        sys.exit(1)
    ring = s.get("ring", s)
    succ = ring.get("successors") or [{}]
    if not ring.get("predecessor") or succ[0].get("addr") in (None, f"127.0.0.1:{base + i}"):
        sys.exit(1)
sys.exit(0)
EOF
    sleep 0.2
  done
  echo "the $mode ring did not form" >&2; tail "$TMP/$mode-"*.err >&2; exit 1
}

ticks() { # ticks MODE: utime+stime of the ring's three nodes
  local t=0 p s
  for p in ${RING_PIDS[$1]}; do
    s=($(sed 's/^.*) //' /proc/$p/stat 2>/dev/null)) || continue
    t=$((t + s[11] + s[12]))
  done
  echo $t
}

GONE=""
alive() {
  local p
  for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || GONE="$GONE $p"; done
  [ -z "$GONE" ] && return 0
  echo "!! a benchmark process exited (pid(s)$GONE); stopping, the last run is marked INVALID" >&2
  return 1
}

# run_sipp KIND PHASE MODE RATE N [sipp args...]
run_sipp() {
  local kind=$1 phase=$2 mode=$3 rate=$4 n=$5; shift 5
  local port tag stf t0 t1 c0 c1 limit
  port=$(mode_base "$mode"); tag=$kind-$phase-$rate-$mode; stf="$TMP/$tag-$RANDOM.csv"
  limit=$(( n / rate + 30 ))
  c0=$(ticks "$mode"); t0=$(date +%s.%N)
  (cd "$TMP" && timeout -k 5 "$limit" ip netns exec "$NS" sipp "127.0.0.1:$port" -i 127.0.0.1 \
      -r "$rate" -m "$n" -l $((rate * 4 + 100)) -timeout "$limit" -nostdin -buff_size "$SIPP_BUFF" \
      -trace_stat -stf "$stf" -fd 1 -trace_err -error_file "$TMP/$tag.err" "$@" </dev/null >"$TMP/$tag.out" 2>&1)
  local rc=$?
  t1=$(date +%s.%N); c1=$(ticks "$mode")
  python3 "$B/summarise.py" line --stf "$stf" --kind "$kind" --phase "$phase" --server "$mode" \
     --rate "$rate" --n "$n" --ticks $((c1 - c0)) --hz "$HZ" --wall "$(echo "$t1 - $t0" | bc -l)" \
     --rc "$rc" --stamp "$STAMP" --drops 0 --client-drops 0 >>"$TMP/raw.txt"
  tail -1 "$TMP/raw.txt" | python3 "$B/summarise.py" pretty
  alive || { sed -i '$ s/$/ INVALID=process_gone/' "$TMP/raw.txt"; return 1; }
}

order() { # order I: the modes, rotated by I
  local m=($MODES) n k out=""; n=${#m[@]}
  for ((k = 0; k < n; k++)); do out="$out ${m[$(( (k + $1) % n ))]}"; done
  echo $out
}

# ---------------------------------------------------------------- header
{
  echo "# bench-admission.sh $(date -u -Is) cores=$(nproc) cpu=\"$(lscpu | sed -n 's/^Model name: *//p' | head -1)\" quick=${QUICK:-0} modes=\"$MODES\""
  echo "# $(sipp -v 2>&1 | grep -m1 SIPp | sed 's/^ *//'); p2psip $("$P2PSIP_BIN" --version 2>/dev/null | awk '{print $2}') ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo "# loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg); rings of three, SIPp and all nodes share the same cores"
} | tee "$TMP/header.txt"

for m in $MODES; do start_ring "$m"; done

# ---------------------------------------------------------------- 1. REGISTER
i=0
for r in $REG_RATES; do
  for _ in $(seq "$REPS"); do
    bash "$B/sipp/make-users-csv.sh" "$TMP/users.csv" "$REG_N" "$DOMAIN" "u${i}x"
    for m in $(order $i); do
      run_sipp register fixed "$m" "$r" "$REG_N" -sf "$B/sipp/register.xml" -inf "$TMP/users.csv" -p 7000 || break 3
      sleep 0.5
    done
    i=$((i + 1))
  done
done

# ---------------------------------------------------------------- 2. calls
if [ -z "$GONE" ]; then
  ip netns exec "$NS" sipp -sf "$B/sipp/uas_call.xml" -i 127.0.0.1 -p $UAS_PORT -mp 16000 -l 15000 \
     -buff_size "$SIPP_BUFF" -nostdin -bind_local -trace_err -error_file "$TMP/uas.err" >"$TMP/uas.out" 2>&1 &
  PIDS+=($!)
  sleep 0.5
  printf 'SEQUENTIAL\nbob;%s\n' "$DOMAIN" >"$TMP/bob.csv"
  sed "s/\[field0\]@\[local_ip\]:\[local_port\]/bob@127.0.0.1:$UAS_PORT/" "$B/sipp/register.xml" >"$TMP/reg-bob.xml"
  for m in $MODES; do
    (cd "$TMP" && timeout 15 ip netns exec "$NS" sipp "127.0.0.1:$(( $(mode_base "$m") + 1 ))" -i 127.0.0.1 -p 7001 \
       -sf reg-bob.xml -inf bob.csv -m 1 -timeout 10 -nostdin >"$TMP/reg-bob-$m.out" 2>&1) \
       || { echo "registering bob with the $m ring failed" >&2; exit 1; }
  done
  i=0
  for r in $CALL_RATES; do
    for _ in $(seq "$REPS"); do
      for m in $(order $i); do
        run_sipp call fixed "$m" "$r" "$CALL_N" -sf "$B/sipp/uac_call.xml" -s bob -key domain "$DOMAIN" \
          -p 7002 -mp 17000 -d 0 || break 3
        sleep 1
      done
      i=$((i + 1))
    done
  done
fi

# ---------------------------------------------------------------- summary
summary() { # summary RAWFILE
  python3 - "$MODES" "$1" <<'EOF'
import sys
modes = sys.argv[1].split()
runs = []
for raw in open(sys.argv[2]):
    if raw.startswith("#") or "=" not in raw:
        continue
    d = dict(kv.split("=", 1) for kv in raw.split() if "=" in kv)
    runs.append(d)
print("pooled CPU ms per 1,000 over the OK runs of a kind (total CPU / total transactions;")
print("saturated runs, whose retransmissions cost CPU too, are left out; ratio = mode / open; goal <= 1.15):")
for kind in ("register", "call"):
    pooled = {}
    for m in modes:
        rs = [r for r in runs if r["kind"] == kind and r["server"] == m and "INVALID" not in r]
        good = [r for r in rs if r["verdict"] == "OK"]
        done = sum(int(r["ok"]) + int(r["failed"]) for r in good)
        cpu = sum(int(r["cpu_ms"]) for r in good)
        singles = sorted(float(r["cpu_ms_per_1000"]) for r in good)
        if done:
            pooled[m] = cpu * 1000.0 / done
            print(f"  {kind:<9} {m:<7} {pooled[m]:8.1f}  [{singles[0]:.0f}-{singles[-1]:.0f}]  (runs OK {len(good)}/{len(rs)})")
        else:
            print(f"  {kind:<9} {m:<7}        -  (runs OK 0/{len(rs)})")
    base = pooled.get("open")
    for m, v in pooled.items():
        if m != "open" and base:
            print(f"  {kind:<9} {m}/open = {v / base:.2f}")
EOF
}
# SIP messages each ring handled over the whole run (all runs, both directions, all nodes):
# the same load should cost the same number of messages in every mode
for m in $MODES; do
  ip netns exec "$NS" python3 - "$(mode_base "$m")" "$m" <<'EOF' >>"$TMP/header.txt"
import sys, urllib.request
base, mode = int(sys.argv[1]), sys.argv[2]
total = {}
for i in range(3):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{base + i + 3000}/metrics", timeout=2).read().decode()
    except Exception:
        continue
    for line in text.splitlines():
        if line.startswith("p2psip_sip_messages_total{"):
            labels, value = line.rsplit(" ", 1)
            method = labels.split('method="', 1)[1].split('"', 1)[0]
            total[method] = total.get(method, 0) + int(float(value))
print(f"# {mode} ring, SIP messages over the run (3 nodes, in+out): " + " ".join(f"{k}={v}" for k, v in sorted(total.items())))
EOF
done
echo
{ cat "$TMP/header.txt"; summary "$TMP/raw.txt"; } | tee "$TMP/summary.txt"
{ cat "$TMP/header.txt"; cat "$TMP/raw.txt"; sed 's/^/# /' "$TMP/summary.txt" | grep -v '^# #'; echo; } >>"$RESULTS"
echo "raw lines appended to ${RESULTS#"$ROOT"/}"
[ -z "$GONE" ] || { echo "incomplete: a benchmark process exited during the run" >&2; exit 1; }
