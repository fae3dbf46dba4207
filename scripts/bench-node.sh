#!/bin/bash
# bench-node.sh — p2psip node vs Kamailio, same machine, same run, same SIPp load.
#
# In one private network namespace it starts Kamailio (scripts/bench/kamailio-legacy.cfg,
# children=4, UDP 127.0.0.1:5070) and the node (`p2psip node --sip 127.0.0.1:5060
# --domain legacy.test`), then drives each of them in turn with identical SIPp load:
#   1. REGISTER, unique users, at fixed offered rates  -> CPU ms per 1,000 REGISTERs
#   2. calls (uac_call.xml -> server -> uas_call.xml registered as bob) at fixed rates
#                                                       -> CPU ms per 1,000 calls
#   3. a ladder of short (STEP_SECS) steps above the fixed rates -> highest clean rate
#   4. kind register_auth (not in the default KINDS): REGISTER with digest, unique users each
#      with her own password: REGISTER -> 401 -> REGISTER with credentials -> 200, at fixed
#      rates -> CPU ms per 1,000 authenticated registrations (challenge + authenticated
#      REGISTER). Against a second pair of servers started for it: Kamailio with
#      scripts/bench/kamailio-auth.cfg (auth + htable, users from a db_text table) on
#      127.0.0.1:5072 and the node with a users file and `[limits] requests = 0` (one SIPp
#      source) on 127.0.0.1:5062; the same users and passwords for both (make-auth-users.py).
# CPU = utime+stime (/proc/PID/stat) summed over the server's processes, read just before
# and just after each SIPp run. "OK" (as the shared interop bench.sh): 0 failed calls,
# 0 retransmissions, achieved >= 95% of the offered rate. For every rate the two servers
# run back to back (which one goes first alternates), so slow drift in the machine's
# load hits both alike.
#
# Usage: scripts/bench-node.sh            (default, ~6-8 min)
#        QUICK=1 scripts/bench-node.sh    (smoke run, ~1 min)
# env:   P2PSIP_BIN=path        use this binary instead of building target/release/p2psip
#        REG_RATES="2000 5000"  REG_N=20000        fixed-rate REGISTER runs
#        CALL_RATES="200 500"   CALL_N=5000        fixed-rate call runs
#        REPS=3                 repetitions of each fixed-rate run (server order alternates)
#        REG_STEPS="10000 15000 20000" CALL_STEPS="1000 2000 3000 4000" STEP_SECS=5  (one run each)
#        SIPP_BUFF=1048576      SIPp socket buffers (65535 = SIPp's default)
#        AUTH_RATES="1000 2500" AUTH_N=20000 AUTH_STEPS=""   register_auth runs (calls per second)
#        SERVERS="kamailio p2psip"  KINDS="register call"  KAM_CHILDREN=4  RESULTS=file  KEEP=1 (keep logs)
#        KINDS="register_auth"  (or e.g. "register call register_auth")
#        RUST_LOG (passed to the node; unset = its default, info)
#        NODE_DATA=1            the node (not the auth one) keeps what it accepts durably, with
#                               --data in a fresh directory (every REGISTER durable before its 200)
# Output: a table (kind, rate, server, cpu_ms_per_1000, ok, failed, retrans, verdict, ...),
# the p2psip/kamailio ratios and the highest clean rates; raw lines are appended to
# scripts/bench/results-<date>.txt.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
B=$HERE/bench

# ---------------------------------------------------------------- parameters
if [ "${QUICK:-0}" = 1 ]; then
  REG_RATES=${REG_RATES-2000}; REG_N=${REG_N:-6000}
  CALL_RATES=${CALL_RATES-200}; CALL_N=${CALL_N:-1000}
  REG_STEPS=${REG_STEPS-5000}; CALL_STEPS=${CALL_STEPS-500}; STEP_SECS=${STEP_SECS:-2}; REPS=${REPS:-1}
  AUTH_RATES=${AUTH_RATES-1000}; AUTH_N=${AUTH_N:-4000}; AUTH_STEPS=${AUTH_STEPS-}
else
  REG_RATES=${REG_RATES-"2000 5000"}; REG_N=${REG_N:-20000}
  CALL_RATES=${CALL_RATES-"200 500"}; CALL_N=${CALL_N:-5000}
  REG_STEPS=${REG_STEPS-"10000 15000 20000"}; CALL_STEPS=${CALL_STEPS-"1000 2000 3000 4000"}
  STEP_SECS=${STEP_SECS:-5}; REPS=${REPS:-3}
  AUTH_RATES=${AUTH_RATES-"1000 2500"}; AUTH_N=${AUTH_N:-20000}; AUTH_STEPS=${AUTH_STEPS-}
fi
SERVERS=${SERVERS:-"kamailio p2psip"}
KINDS=${KINDS:-"register call"}
# SIPp's socket buffers (-buff_size). SIPp's own default, 65535, overflows on bursts of responses
# (see docs/BENCHMARKS.md); 1 MB keeps the client from being the bottleneck. Same for both servers.
SIPP_BUFF=${SIPP_BUFF:-1048576}
KAM_CHILDREN=${KAM_CHILDREN:-4}
KAM_PORT=5070; NODE_PORT=5060; UAS_PORT=5090
KAM_AUTH_PORT=5072; NODE_AUTH_PORT=5062
KAMPID=""; NODEPID=""; KAMAUTHPID=""; NODEAUTHPID=""
has_kind() { [[ " $KINDS " == *" $1 "* ]]; }
DOMAIN=legacy.test
STAMP=$(date -u +%Y%m%d-%H%M%S)
RESULTS=${RESULTS:-$B/results-$(date -u +%Y%m%d).txt}

# ---------------------------------------------------------------- tools
. "$HERE/bench/lib.sh"
bench_install kamailio sip-tester iproute2 procps bc

bench_binary

# ---------------------------------------------------------------- namespace + cleanup
bench_netns nodebench

# ---------------------------------------------------------------- servers
# Started as `ip netns exec NS prog &` directly so $! is the daemon itself.
udp_bound() { ip netns exec "$NS" ss -Hlun "sport = :$1" | grep -q .; }

start_kamailio() {
  ip netns exec "$NS" kamailio -DD -E -f "$B/kamailio-legacy.cfg" -Y "$TMP" -P "$TMP/kam.pid" \
     -m 1024 -M 16 -A "LISTEN_SOCK=udp:127.0.0.1:$KAM_PORT" -A "KAM_CHILDREN=$KAM_CHILDREN" \
     -A 'KAM_DEBUG=1' >"$TMP/kamailio.log" 2>&1 &
  KAMPID=$!; PIDS+=($KAMPID)
  for _ in $(seq 50); do udp_bound $KAM_PORT && return 0; sleep 0.2; done
  echo "kamailio did not start" >&2; tail "$TMP/kamailio.log" >&2; exit 1
}
# The digest pair: users (the same for both) from make-auth-users.py in $TMP/auth.
# (-M 128: db_text builds the whole users table as one query result in private memory at start-up)
start_kamailio_auth() {
  mkdir -p "$TMP/kam-auth"
  ip netns exec "$NS" kamailio -DD -E -f "$B/kamailio-auth.cfg" -Y "$TMP/kam-auth" -P "$TMP/kam-auth/kam.pid" \
     -m 1024 -M 128 -A "LISTEN_SOCK=udp:127.0.0.1:$KAM_AUTH_PORT" -A "KAM_CHILDREN=$KAM_CHILDREN" \
     -A "AUTH_DB_URL=\"text://$TMP/auth/kamdb\"" -A 'KAM_DEBUG=1' >"$TMP/kamailio-auth.log" 2>&1 &
  KAMAUTHPID=$!; PIDS+=($KAMAUTHPID)
  for _ in $(seq 100); do udp_bound $KAM_AUTH_PORT && return 0; sleep 0.2; done
  echo "kamailio (auth) did not start" >&2; tail "$TMP/kamailio-auth.log" >&2; exit 1
}
start_node_auth() {
  printf '%s\n' "sip = \"127.0.0.1:$NODE_AUTH_PORT\"" "domains = [\"$DOMAIN\"]" \
    "users = \"$TMP/auth/node-users\"" "# one SIPp source sends everything: no per-source request limit" \
    "[limits]" "requests = 0" >"$TMP/node-auth.toml"
  ip netns exec "$NS" "$P2PSIP_BIN" node --config "$TMP/node-auth.toml" \
     >"$TMP/p2psip-auth.out" 2>"$TMP/p2psip-auth.err" &
  NODEAUTHPID=$!; PIDS+=($NODEAUTHPID)
  for _ in $(seq 100); do grep -q '^p2psip listening on' "$TMP/p2psip-auth.out" && return 0; sleep 0.2; done
  echo "p2psip (auth) did not start" >&2; tail "$TMP/p2psip-auth.err" >&2; exit 1
}
start_node() {
  local data=()
  if [ -n "${NODE_DATA:-}" ]; then mkdir -p "$TMP/node-data"; data=(--data "$TMP/node-data"); fi
  ip netns exec "$NS" "$P2PSIP_BIN" node --sip "127.0.0.1:$NODE_PORT" --domain "$DOMAIN" "${data[@]}" \
     >"$TMP/p2psip.out" 2>"$TMP/p2psip.err" &
  NODEPID=$!; PIDS+=($NODEPID)
  for _ in $(seq 50); do grep -q '^p2psip listening on' "$TMP/p2psip.out" && return 0; sleep 0.2; done
  echo "p2psip did not start" >&2; tail "$TMP/p2psip.err" >&2; exit 1
}
# port_of SERVER KIND / root_of SERVER KIND: the instance that serves KIND
port_of() {
  case $1/${2:-} in
    kamailio/register_auth) echo $KAM_AUTH_PORT ;; p2psip/register_auth) echo $NODE_AUTH_PORT ;;
    kamailio/*) echo $KAM_PORT ;; *) echo $NODE_PORT ;;
  esac
}
root_of() {
  case $1/${2:-} in
    kamailio/register_auth) echo "$KAMAUTHPID" ;; p2psip/register_auth) echo "$NODEAUTHPID" ;;
    kamailio/*) echo "$KAMPID" ;; *) echo "$NODEPID" ;;
  esac
}

# Kernel receive-buffer drops: of the server's UDP socket on port $1 (/proc/net/udp "drops"),
# or, with "all", of the whole namespace (/proc/net/snmp Udp RcvbufErrors; SIPp's sockets are
# gone by the time a run ends, so their share is all minus the server's).
udp_drops() {
  if [ "${2:-}" = all ]; then
    ip netns exec "$NS" awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } else print $c["RcvbufErrors"] }' /proc/net/snmp
  else
    ip netns exec "$NS" awk -v port="$(printf '%04X' "$1")" \
      'NR > 1 { split($2, a, ":"); if (a[2] == port) d += $NF } END { print d + 0 }' /proc/net/udp
  fi
}

# utime+stime clock ticks of the server instance (ticks SERVER KIND): its main process and
# its children (Kamailio's workers are children of its main process; the node has one process)
ticks() {
  local root t=0 p s; root=$(root_of "$1" "${2:-}")
  for p in $(ip netns pids "$NS"); do
    s=($(sed 's/^.*) //' /proc/$p/stat 2>/dev/null)) || continue
    [ ${#s[@]} -gt 13 ] || continue
    [ "$p" = "$root" ] || [ "${s[1]}" = "$root" ] || continue   # s[1]: ppid (field 4)
    t=$((t + s[11] + s[12]))   # fields 14,15 counting from pid
  done
  echo $t
}

# ---------------------------------------------------------------- one SIPp run
# run_sipp KIND PHASE SERVER RATE N [sipp args...]; appends a raw key=value line
run_sipp() {
  local kind=$1 phase=$2 server=$3 rate=$4 n=$5; shift 5
  local port tag stf t0 t1 c0 c1 limit maxcalls
  port=$(port_of "$server" "$kind"); tag=$kind-$phase-$rate-$server
  stf="$TMP/$tag.csv"
  limit=$(( n / rate + 30 ))
  # open-calls cap below the open-files limit (SIPp wants sockets + calls < ulimit -n)
  maxcalls=$(( rate * 4 + 100 )); [ "$maxcalls" -gt 15000 ] && maxcalls=15000
  local d0 o0 d1 o1
  d0=$(udp_drops "$port"); o0=$(udp_drops "$port" all)
  c0=$(ticks "$server" "$kind"); t0=$(date +%s.%N)
  (cd "$TMP" && timeout -k 5 "$limit" ip netns exec "$NS" sipp "127.0.0.1:$port" -i 127.0.0.1 \
      -r "$rate" -m "$n" -l "$maxcalls" -timeout "$limit" -nostdin \
      -buff_size "$SIPP_BUFF" -trace_stat -stf "$stf" -fd 1 -trace_err -error_file "$TMP/$tag.err" "$@" \
      </dev/null >"$TMP/$tag.out" 2>&1)
  local rc=$?
  t1=$(date +%s.%N); c1=$(ticks "$server" "$kind")
  d1=$(udp_drops "$port"); o1=$(udp_drops "$port" all)
  python3 "$B/summarise.py" line --stf "$stf" --kind "$kind" --phase "$phase" --server "$server" \
     --rate "$rate" --n "$n" --ticks $((c1 - c0)) --hz "$HZ" --wall "$(echo "$t1 - $t0" | bc -l)" \
     --rc "$rc" --stamp "$STAMP" \
     --drops $((d1 - d0)) --client-drops $(( (o1 - o0) - (d1 - d0) )) >>"$TMP/raw.txt"
  tail -1 "$TMP/raw.txt" | python3 "$B/summarise.py" pretty
  alive || { sed -i '$ s/$/ INVALID=process_gone/' "$TMP/raw.txt"; return 1; }
}

# Every server and the UAS must still be running (on a shared machine someone's `pkill sipp`
# or `pkill p2psip` would otherwise show up as failed calls). Stops the measurement if not.
GONE=""
alive() {
  local p
  for p in "${PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null || GONE="$GONE $p"
  done
  [ -z "$GONE" ] && return 0
  echo "!! a process of the benchmark exited during the last run (killed from outside?): pid(s)$GONE;" \
       "stopping here, the last run is marked INVALID" >&2
  return 1
}

# order of the two servers for the i-th rate: alternate who goes first
order() { local s; s=($SERVERS); if [ $(( $1 % 2 )) = 1 ] && [ ${#s[@]} = 2 ]; then echo "${s[1]} ${s[0]}"; else echo "${s[*]}"; fi; }

# plan: "phase rate n" lines — fixed rates REPS times, then the ladder steps once
plan() { # RATES STEPS N
  local r k
  for r in $1; do for k in $(seq "$REPS"); do echo "fixed $r $3"; done; done
  for r in $2; do [[ " $1 " == *" $r "* ]] || echo "step $r $(( r * STEP_SECS ))"; done
}

# ---------------------------------------------------------------- header
{
  echo "# bench-node.sh $(date -u -Is) cores=$(nproc) cpu=\"$(lscpu | sed -n 's/^Model name: *//p' | head -1)\" quick=${QUICK:-0}"
  echo "# $(kamailio -v 2>&1 | head -1 | sed 's/^version: //') children=$KAM_CHILDREN; $(sipp -v 2>&1 | grep -m1 SIPp | sed 's/^ *//'); p2psip $("$P2PSIP_BIN" --version 2>/dev/null | awk '{print $2}') ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown))${NODE_DATA:+; node with --data (durable)}"
  echo "# loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg); SIPp and both servers share the same cores; sipp -buff_size $SIPP_BUFF"
} | tee "$TMP/header.txt"

if has_kind register || has_kind call; then
  for s in $SERVERS; do case $s in kamailio) start_kamailio ;; p2psip) start_node ;; *) echo "unknown server $s"; exit 1 ;; esac; done
fi
if has_kind register_auth; then
  # distinct users for every run, the same for both servers: as many as the plan needs
  AUTH_TOTAL=$(plan "$AUTH_RATES" "$AUTH_STEPS" "$AUTH_N" | awk '{ t += $3 } END { print t + 0 }')
  python3 "$B/make-auth-users.py" "$TMP/auth" "$AUTH_TOTAL" "$DOMAIN" auser
  echo "# register_auth: $AUTH_TOTAL users, each with her own password (node users file, Kamailio htable from db_text); node [limits] requests = 0" | tee -a "$TMP/header.txt"
  for s in $SERVERS; do case $s in kamailio) start_kamailio_auth ;; p2psip) start_node_auth ;; *) echo "unknown server $s"; exit 1 ;; esac; done
fi

# ---------------------------------------------------------------- 1. REGISTER
if has_kind register; then
i=0
while read -r phase r n; do
  [ -n "$r" ] || continue
  # the same unique users for both servers (each has its own location table); new users each run
  bash "$B/sipp/make-users-csv.sh" "$TMP/users.csv" "$n" "$DOMAIN" "u${i}x"
  for s in $(order $i); do
    run_sipp register "$phase" "$s" "$r" "$n" -sf "$B/sipp/register.xml" -inf "$TMP/users.csv" -p 7000 || break 2
    sleep 0.5
  done
  i=$((i + 1))
done < <(plan "$REG_RATES" "$REG_STEPS" "$REG_N")
fi

# ---------------------------------------------------------------- 2. calls
if has_kind call && [ -z "$GONE" ]; then
# one UAS (bob at 127.0.0.1:5090) registered with both servers
ip netns exec "$NS" sipp -sf "$B/sipp/uas_call.xml" -i 127.0.0.1 -p $UAS_PORT -mp 16000 -l 15000 \
   -buff_size "$SIPP_BUFF" -nostdin -bind_local -trace_err -error_file "$TMP/uas.err" >"$TMP/uas.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do udp_bound $UAS_PORT && break; sleep 0.2; done
printf 'SEQUENTIAL\nbob;%s\n' "$DOMAIN" > "$TMP/bob.csv"
sed "s/\[field0\]@\[local_ip\]:\[local_port\]/bob@127.0.0.1:$UAS_PORT/" "$B/sipp/register.xml" > "$TMP/reg-bob.xml"
for s in $SERVERS; do
  (cd "$TMP" && timeout 15 ip netns exec "$NS" sipp "127.0.0.1:$(port_of "$s" call)" -i 127.0.0.1 -p 7001 \
     -sf reg-bob.xml -inf bob.csv -m 1 -timeout 10 -nostdin >"$TMP/reg-bob-$s.out" 2>&1) \
     || { echo "registering bob with $s failed" >&2; exit 1; }
done

i=0
while read -r phase r n; do
  [ -n "$r" ] || continue
  for s in $(order $i); do
    run_sipp call "$phase" "$s" "$r" "$n" -sf "$B/sipp/uac_call.xml" -s bob -key domain "$DOMAIN" \
      -p 7002 -mp 17000 -d 0 || break 2
    sleep 1
  done
  i=$((i + 1))
done < <(plan "$CALL_RATES" "$CALL_STEPS" "$CALL_N")
fi

# ---------------------------------------------------------------- 4. REGISTER with digest
if has_kind register_auth && [ -z "$GONE" ]; then
i=0; off=0
while read -r phase r n; do
  [ -n "$r" ] || continue
  # this run's users: the next n of the provisioned ones (SIPp reads -inf from its first line)
  { echo SEQUENTIAL; sed -n "$((off + 2)),$((off + n + 1))p" "$TMP/auth/users.csv"; } >"$TMP/auth-run.csv"
  off=$((off + n))
  for s in $(order $i); do
    run_sipp register_auth "$phase" "$s" "$r" "$n" -sf "$B/sipp/register_auth.xml" -inf "$TMP/auth-run.csv" \
      -au '[field0]' -ap '[field2]' -p 7003 || break 2
    sleep 0.5
  done
  i=$((i + 1))
done < <(plan "$AUTH_RATES" "$AUTH_STEPS" "$AUTH_N")
fi

# ---------------------------------------------------------------- summary
echo
{ cat "$TMP/header.txt"; python3 "$B/summarise.py" table <"$TMP/raw.txt"; } | tee "$TMP/summary.txt"
{ cat "$TMP/header.txt"; cat "$TMP/raw.txt"; sed 's/^/# /' "$TMP/summary.txt" | grep -v '^# #'; echo; } >>"$RESULTS"
echo "raw lines appended to ${RESULTS#"$ROOT"/}"

# what went wrong, if anything: SIPp's error logs summarised by reason, and the node's stderr
if grep -q ' failed=[1-9]' "$TMP/raw.txt"; then
  echo; echo "--- failures: SIPp error logs, counted by reason"
  for f in "$TMP"/*-*.err "$TMP/uas.err"; do
    [ -s "$f" ] || continue
    echo "== $(basename "$f" .err | sed 's/-[0-9]*$//')"
    grep -o "Aborting call on [a-zA-Z ]*\|received 'SIP/2.0 [0-9]* [A-Za-z ]*\|received '[A-Z]* sip" "$f" \
      | sed 's/ for Call$//' | sort | uniq -c | sort -rn | head -5
  done
  for f in "$TMP"/p2psip*.err; do echo "== $(basename "$f") (last lines)"; tail -5 "$f" | sed "s/\x1b\[[0-9;]*m//g"; done
fi
[ -z "$GONE" ] || { echo "incomplete: a benchmark process exited during the run (see above)" >&2; exit 1; }
