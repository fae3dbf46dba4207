#!/usr/bin/env bash
# Soak: a 10-node ring on 127.0.0.1 carries calls, instant messages and
# registrations for a set time while nodes leave (SIGTERM), crash (SIGKILL)
# and rejoin; at the end it prints calls attempted/completed, messages
# sent/delivered, registrations lost (each user registered at the start
# must still be found by `p2psip lookup`; must be 0), stored messages
# sent/delivered (each round also sends one MESSAGE to one of 20 users who
# are offline, answered 202 and kept in the ring; at the end they register
# and every stored message must reach them: none may be lost) and each
# node's peak resident memory (VmHWM, the highest over its restarts).
#
#   scripts/soak.sh [SECONDS]        # default 600
#
# Needs sipp (Debian sip-tester). Uses target/release/p2psip (built if
# missing); P2PSIP=path overrides. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${1:-600}"
NODES=10
USERS=50
BASE=${SOAK_BASE:-26000}          # SIP ports BASE.., HTTP ports BASE+100..
UAS_PORT=$((BASE + 200))
AWAY=20                           # users offline during the soak (about 11 stored messages each in 600 s, within the default bound of 20)
AWAY_PORT=$((BASE + 220))         # their phone (a SIPp UAS) at the end
P2PSIP="${P2PSIP:-target/release/p2psip}"
[ -x "$P2PSIP" ] || cargo build --release --bin p2psip
command -v sipp >/dev/null || { echo "soak: needs sipp (apt-get install sip-tester)" >&2; exit 2; }

SC="$PWD/tests/sipp"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/p2psip-soak.XXXXXX")"
declare -a PID PEAK
cleanup() {
    for i in $(seq 0 $((NODES - 1))); do
        [ -n "${PID[$i]:-}" ] && kill -9 "${PID[$i]}" 2>/dev/null || true
    done
    [ -n "${UAS:-}" ] && kill -9 "$UAS" 2>/dev/null || true
    [ -n "${AWAY_UAS:-}" ] && kill -9 "$AWAY_UAS" 2>/dev/null || true
    jobs -p | xargs -r kill -9 2>/dev/null || true
}
trap cleanup EXIT

sip() { echo "127.0.0.1:$((BASE + $1))"; }

# Peak RSS of node i's current process, folded into PEAK[i] (kB).
sample() {
    local i=$1 hwm
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/${PID[$i]}/status" 2>/dev/null || echo 0)
    if [ "${hwm:-0}" -gt "${PEAK[$i]:-0}" ]; then PEAK[$i]=$hwm; fi
}

start_node() {
    local i=$1 join=()
    [ "$i" -ne 0 ] && join=(--join "$(sip 0)" --join "$(sip 1)")
    "$P2PSIP" node --sip "$(sip "$i")" --http "127.0.0.1:$((BASE + 100 + i))" \
        --data "$WORK/d$i" --domain example.test "${join[@]}" \
        > "$WORK/n$i.out" 2>> "$WORK/n$i.log" &
    PID[$i]=$!
    for _ in $(seq 1 100); do
        grep -q "listening" "$WORK/n$i.out" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "soak: node $i did not start; log:" >&2
    tail -20 "$WORK/n$i.log" >&2
    exit 1
}

# Waits until `p2psip ring` from node 0 or another live node lists n nodes.
wait_ring() {
    local want=$1 from=$2
    for _ in $(seq 1 300); do
        if "$P2PSIP" ring --sip "$(sip "$from")" --json 2>/dev/null \
            | python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if len(d['nodes'])==$want and not d['problems'] else 1)"; then
            return 0
        fi
        sleep 0.2
    done
    echo "soak: the ring did not come to $want nodes" >&2
    "$P2PSIP" ring --sip "$(sip "$from")" >&2 || true
    return 1
}

# sipp ... ; appends "ok failed" of its final statistics to $2.
sipp_run() {
    local name=$1 tally=$2; shift 2
    local dir="$WORK/sipp-$name"
    mkdir -p "$dir"
    (cd "$dir" && sipp "$@" -i 127.0.0.1 -nostdin -timeout 60s -trace_stat -stf stat.csv \
        > sipp.log 2>&1) || true
    python3 - "$dir/stat.csv" >> "$tally" <<'EOF'
import sys
try:
    rows = [l.strip().split(';') for l in open(sys.argv[1]) if l.strip()]
    h, last = rows[0], rows[-1]
    print(last[h.index('SuccessfulCall(C)')], last[h.index('FailedCall(C)')])
except Exception:
    print(0, 0)
EOF
    rm -rf "$dir"
}

echo "soak: $NODES nodes, $USERS users, ${DURATION}s, binary $P2PSIP, work dir $WORK"
for i in $(seq 0 $((NODES - 1))); do
    start_node "$i"
    [ "$i" -eq 0 ] && sleep 0.5
done
wait_ring "$NODES" 0

# One UAS answers every user's calls and messages.
sipp -sf "$SC"/uas_message_call.xml -i 127.0.0.1 -p "$UAS_PORT" -mp $((UAS_PORT + 10)) \
    -nostdin -m 100000000 > "$WORK/uas.log" 2>&1 &
UAS=$!
sleep 0.5

# Registrations (an hour, so none expires during the soak), through every node.
cat > "$WORK/users.csv" <<EOF
SEQUENTIAL
EOF
for u in $(seq 1 $USERS); do echo "user$u;" >> "$WORK/users.csv"; done
REG_TALLY="$WORK/reg.tally"
for i in $(seq 0 $((NODES - 1))); do
    first=$((i * USERS / NODES + 1)); last=$(((i + 1) * USERS / NODES))
    for u in $(seq "$first" "$last"); do
        sipp_run "reg-$u" "$REG_TALLY" "$(sip "$i")" -sf "$SC"/register.xml -m 1 \
            -p $((BASE + 300 + u)) -mp $((BASE + 440)) -key user "user$u" -key domain example.test \
            -key contact "sip:user$u@127.0.0.1:$UAS_PORT" -key expires 3600
    done
done
registered=$(awk '{s+=$1} END {print s+0}' "$REG_TALLY")
echo "soak: $registered of $USERS users registered"
# The offline users: registered once (so the ring knows them), then gone.
for u in $(seq 1 $AWAY); do
    for expires in 3600 0; do
        sipp_run "away-$u-$expires" /dev/null "$(sip $((u % NODES)))" -sf "$SC"/register.xml -m 1 \
            -p $((BASE + 450)) -mp $((BASE + 460)) -key user "away$u" -key domain example.test \
            -key contact "sip:away$u@127.0.0.1:$AWAY_PORT" -key expires "$expires"
    done
done

CALL_TALLY="$WORK/calls.tally"; MSG_TALLY="$WORK/msgs.tally"; STORED_TALLY="$WORK/stored.tally"
: > "$CALL_TALLY"; : > "$MSG_TALLY"; : > "$STORED_TALLY"
end=$(( $(date +%s) + DURATION ))
round=0
churn_next=$(( $(date +%s) + 20 ))
while [ "$(date +%s)" -lt "$end" ]; do
    round=$((round + 1))
    via=$((round % NODES))
    # (Churn below restarts a node before the next round: all are live here.)
    user="user$(( (round % USERS) + 1 ))"
    sipp_run "call-$round" "$CALL_TALLY" "$(sip "$via")" -sf "$SC"/uac_call.xml -m 10 -r 5 \
        -p $((BASE + 400)) -mp $((BASE + 410)) -s "$user" -key domain example.test &
    calling=$!
    sipp_run "msg-$round" "$MSG_TALLY" "$(sip $(((via + 3) % NODES)))" -sf "$SC"/uac_message.xml \
        -m 10 -r 10 -p $((BASE + 420)) -mp $((BASE + 430)) -s "$user" -key domain example.test &
    messaging=$!
    # One MESSAGE to an offline user: 202, stored in the ring.
    sipp_run "stored-$round" "$STORED_TALLY" "$(sip $(((via + 5) % NODES)))" -sf "$SC"/uac_message.xml \
        -m 1 -p $((BASE + 470)) -mp $((BASE + 480)) -s "away$(( (round % AWAY) + 1 ))" -key domain example.test &
    storing=$!
    wait "$calling" "$messaging" "$storing" || true
    for i in $(seq 0 $((NODES - 1))); do [ -n "${PID[$i]:-}" ] && sample "$i"; done
    if [ "$(date +%s)" -ge "$churn_next" ]; then
        # Churn, never the two nodes the others join through at once:
        # a leave, then a crash, each followed by the rejoin.
        victim=$(( 2 + (round % (NODES - 2)) ))
        sample "$victim"
        if [ $((round % 2)) -eq 0 ]; then
            kill -TERM "${PID[$victim]}"; how=left
        else
            kill -9 "${PID[$victim]}"; how=crashed
        fi
        wait "${PID[$victim]}" 2>/dev/null || true
        echo "soak: $(date -u +%T) node $victim $how"
        PID[$victim]=""
        sleep 5
        start_node "$victim"
        echo "soak: $(date -u +%T) node $victim rejoined"
        churn_next=$(( $(date +%s) + 30 ))
    fi
done

wait_ring "$NODES" 0 || true
lost=0
for u in $(seq 1 $USERS); do
    # A look-up that fails (a timeout on a loaded machine) is asked again
    # through the next node, three times; a lost record stays lost.
    found=0
    for try in 0 1 2; do
        found=$("$P2PSIP" lookup "user$u@example.test" --sip "$(sip $(((u + try) % NODES)))" --json \
            2>>"$WORK/lookup.err" | python3 -c "import json,sys; print(len(json.load(sys.stdin)['bindings']))" \
            2>/dev/null || echo 0)
        [ "$found" -ge 1 ] && break
        echo "soak: look-up $try of user$u found no binding" >&2
        sleep 1
    done
    [ "$found" -ge 1 ] || { lost=$((lost + 1)); echo "soak: user$u has no binding" >&2; }
done
# The offline users come online (each through another node than the one
# she was last registered at) and must receive every stored message.
sum() { awk -v c="$2" '{s+=$c} END {print s+0}' "$1"; }
stored_ok=$(sum "$STORED_TALLY" 1); stored_failed=$(sum "$STORED_TALLY" 2)
mkdir -p "$WORK/away-uas"
(cd "$WORK/away-uas" && exec sipp -sf "$SC"/uas_message_call.xml -i 127.0.0.1 -p "$AWAY_PORT" \
    -mp $((AWAY_PORT + 10)) -nostdin -m 100000000 -trace_stat -stf stat.csv -fd 1 > uas.log 2>&1) &
AWAY_UAS=$!
sleep 0.5
for u in $(seq 1 $AWAY); do
    sipp_run "away-back-$u" /dev/null "$(sip $(((u + 2) % NODES)))" -sf "$SC"/register.xml -m 1 \
        -p $((BASE + 450)) -mp $((BASE + 460)) -key user "away$u" -key domain example.test \
        -key contact "sip:away$u@127.0.0.1:$AWAY_PORT" -key expires 3600
done
received() {
    python3 - "$WORK/away-uas/stat.csv" <<'EOF'
import sys
try:
    rows = [l.strip().split(';') for l in open(sys.argv[1]) if l.strip()]
    print(rows[-1][rows[0].index('SuccessfulCall(C)')])
except Exception:
    print(0)
EOF
}
for _ in $(seq 1 120); do
    [ "$(received)" -ge "$stored_ok" ] && break
    sleep 1
done
sleep 2   # one more statistics period, so a late duplicate shows too
stored_delivered=$(received)
for i in $(seq 0 $((NODES - 1))); do [ -n "${PID[$i]:-}" ] && sample "$i"; done

calls_ok=$(sum "$CALL_TALLY" 1); calls_failed=$(sum "$CALL_TALLY" 2)
msgs_ok=$(sum "$MSG_TALLY" 1); msgs_failed=$(sum "$MSG_TALLY" 2)
echo
echo "soak results (${DURATION}s, $NODES nodes, $USERS users)"
echo "calls attempted $((calls_ok + calls_failed)) completed $calls_ok"
echo "messages sent $((msgs_ok + msgs_failed)) delivered $msgs_ok"
echo "registrations lost $lost of $registered"
echo "stored messages sent $((stored_ok + stored_failed)) accepted $stored_ok delivered $stored_delivered"
for i in $(seq 0 $((NODES - 1))); do
    echo "node $i ($(sip "$i")) peak RSS $((${PEAK[$i]:-0} / 1024)) MiB"
done
[ "$lost" -eq 0 ] && [ "$stored_delivered" -ge "$stored_ok" ]
