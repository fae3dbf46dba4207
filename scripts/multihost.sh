#!/usr/bin/env bash
# Several hosts on one LAN, for real: each host is a network namespace with
# one p2psip node, joined to the others by a bridge (a veth pair per host to
# a hub namespace holding the bridge; private addresses 10.77.0.0/24 exist
# only inside these namespaces). Across them it runs registrations, calls
# and instant messages (SIPp on the hosts), then a crash (SIGKILL), a leave
# (SIGTERM) and a host cut off (its link down), and checks each time that
# `p2psip ring` lists exactly the nodes still reachable, in order, and that
# calls still go through; and that each node's log shows its own address.
# Everything it made is removed on exit, also on failure.
#
#   scripts/multihost.sh [HOSTS]     # default 5; needs root, ip, sipp
set -euo pipefail
cd "$(dirname "$0")/.."

HOSTS="${1:-5}"
P2PSIP="${P2PSIP:-target/debug/p2psip}"
[ -x "$P2PSIP" ] || cargo build --bin p2psip
P2PSIP="$(realpath "$P2PSIP")"
SC="$PWD/tests/sipp"
TAG="mh$$"
NET=10.77.0
WORK="$(mktemp -d "${TMPDIR:-/tmp}/p2psip-multihost.XXXXXX")"
command -v sipp >/dev/null || { echo "multihost: needs sipp (sip-tester)" >&2; exit 2; }

cleanup() {
    for ns in $(ip netns list | awk '{print $1}' | grep "^$TAG-" || true); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns delete "$ns" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ] || [ "${FAILED:-0}" = 1 ]; then
        echo "multihost: logs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap 'FAILED=1' ERR
trap cleanup EXIT
fail() { FAILED=1; echo "multihost: $*" >&2; exit 1; }

host() { echo "$TAG-h$1"; }
addr() { echo "$NET.$(($1 + 10))"; }
in_host() { local h=$1; shift; ip netns exec "$(host "$h")" "$@"; }

# The LAN: a hub namespace with a bridge, a veth pair per host.
ip netns add "$TAG-hub"
ip -n "$TAG-hub" link add br0 type bridge
ip -n "$TAG-hub" link set br0 up
for h in $(seq 1 "$HOSTS"); do
    ip netns add "$(host "$h")"
    ip link add "v$TAG$h" netns "$(host "$h")" type veth peer name "p$h" netns "$TAG-hub"
    ip -n "$TAG-hub" link set "p$h" master br0 up
    ip -n "$(host "$h")" link set lo up
    ip -n "$(host "$h")" link set "v$TAG$h" name eth0
    ip -n "$(host "$h")" addr add "$(addr "$h")/24" dev eth0
    ip -n "$(host "$h")" link set eth0 up
done
sleep 0.5  # let the bridge ports come up (no STP by default)

declare -A PID
start_node() {
    local h=$1 join=()
    [ "$h" -ne 1 ] && join=(--join "$(addr 1):5060")
    ip netns exec "$(host "$h")" "$P2PSIP" node --sip "$(addr "$h"):5060" --http "$(addr "$h"):8080" \
        --data "$WORK/d$h" --domain example.test --auth open "${join[@]}" \
        > "$WORK/n$h.out" 2> "$WORK/n$h.log" &
    PID[$h]=$!
    for _ in $(seq 1 100); do
        grep -q listening "$WORK/n$h.out" 2>/dev/null && return 0
        sleep 0.1
    done
    tail -20 "$WORK/n$h.log" >&2
    fail "node on host $h did not start"
}

# `p2psip ring` from host $1 lists exactly the given hosts' nodes, no problem.
expect_ring() {
    local from=$1; shift
    local want
    want=$(for h in "$@"; do echo "$(addr "$h"):5060"; done | sort | tr '\n' ' ')
    for _ in $(seq 1 300); do
        got=$(in_host "$from" "$P2PSIP" ring --sip "$(addr "$from"):5060" --json 2>/dev/null \
            | python3 -c "import json,sys; d=json.load(sys.stdin); print('' if d['problems'] else ' '.join(sorted(n['addr'] for n in d['nodes']))+' ')" 2>/dev/null || true)
        [ "$got" = "$want" ] && { echo "multihost: ring from host $from: $want"; return 0; }
        sleep 0.2
    done
    in_host "$from" "$P2PSIP" ring --sip "$(addr "$from"):5060" >&2 || true
    fail "ring from host $from is not [$want]"
}

# SIPp on host $1 through its node: sipp_on HOST NAME ARGS...; fails if a call failed.
sipp_on() {
    local h=$1 name=$2; shift 2
    local dir="$WORK/sipp-$name"; mkdir -p "$dir"
    (cd "$dir" && in_host "$h" sipp "$(addr "$h"):5060" -i "$(addr "$h")" -p 5070 -mp 6100 \
        -nostdin -timeout 30s -timeout_error "$@" > out.log 2>&1) \
        || fail "sipp $name on host $h failed: $(tail -5 "$dir/out.log")"
    echo "multihost: $name ok"
}

for h in $(seq 1 "$HOSTS"); do start_node "$h"; [ "$h" -eq 1 ] && sleep 0.5; done
all=$(seq 1 "$HOSTS")
# shellcheck disable=SC2086
expect_ring 1 $all
# shellcheck disable=SC2086
expect_ring "$HOSTS" $all

# Each log names its node's own address, not a neighbour's or loopback.
for h in $all; do
    grep -q "node started local=$(addr "$h"):5060" "$WORK/n$h.log" \
        || fail "host $h's log does not name $(addr "$h"):5060"
done

# A callee on host 2 (UAS for calls and messages), registered through host 2.
in_host 2 sipp -sf "$SC/uas_message_call.xml" -i "$(addr 2)" -p 5090 -mp 6200 -nostdin -m 1000 \
    > "$WORK/uas.log" 2>&1 &
sipp_on 2 register-bob -sf "$SC/register.xml" -m 1 -key user bob -key domain example.test \
    -key contact "sip:bob@$(addr 2):5090" -key expires 3600
call_from() { sipp_on "$1" "$2" -sf "$SC/uac_call.xml" -m 3 -s bob -key domain example.test; }
message_from() { sipp_on "$1" "$2" -sf "$SC/uac_message.xml" -m 3 -s bob -key domain example.test; }
call_from 3 call-3
message_from 4 message-4

# A crash: host 5's node dies without a word.
kill -9 "${PID[$HOSTS]}"
left=$(seq 1 $((HOSTS - 1)))
# shellcheck disable=SC2086
expect_ring 1 $left
call_from 1 call-after-crash

# A leave: host 4's node says goodbye (SIGTERM).
kill -TERM "${PID[4]}"
wait "${PID[4]}" 2>/dev/null || true
# shellcheck disable=SC2086
expect_ring 1 1 2 3
message_from 3 message-after-leave

# A host cut off: host 3's link goes down; the others heal around it.
ip -n "$(host 3)" link set eth0 down
expect_ring 1 1 2
call_from 1 call-after-cut
# It comes back: its node finds the ring again.
ip -n "$(host 3)" link set eth0 up
expect_ring 1 1 2 3
call_from 3 call-after-return

echo "multihost: ok ($HOSTS hosts: calls, messages, crash, leave, cut-off, heal)"
