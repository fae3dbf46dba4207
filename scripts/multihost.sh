#!/usr/bin/env bash
# Several hosts on one LAN, for real: each host is a network namespace with
# one p2psip node, joined to the others by a bridge (a veth pair per host to
# a hub namespace holding the bridge; private addresses 10.77.0.0/24 exist
# only inside these namespaces). Across them it runs registrations, calls
# and instant messages (SIPp on the hosts), then a crash (SIGKILL), a leave
# (SIGTERM) and a host cut off (its link down), and checks each time that
# `p2psip ring` lists exactly the nodes still reachable, in order, and that
# calls still go through; and that each node's log shows its own address.
# Then two more hosts join the LAN: a gateway host (a node of the ring that
# also serves the overlay domain's DNS, NAPTR/SRV pointing at itself) and a
# legacy host (Kamailio for legacy.test, whose resolver is the gateway's
# DNS, and named serving legacy.test for the gateway); a legacy phone calls
# an overlay user through Kamailio and the gateway, and an overlay phone
# calls the legacy user through the gateway's RFC 3263 look-up and Kamailio.
# Everything it made is removed on exit, also on failure.
#
#   scripts/multihost.sh [HOSTS]     # default 5; needs root, ip, sipp,
#                                    # kamailio, named (bind9), dig
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
command -v kamailio >/dev/null || { echo "multihost: needs kamailio" >&2; exit 2; }
NAMED="$(command -v named || echo /usr/sbin/named)"
[ -x "$NAMED" ] || { echo "multihost: needs named (bind9)" >&2; exit 2; }
command -v dig >/dev/null || { echo "multihost: needs dig (bind9-dnsutils)" >&2; exit 2; }

cleanup() {
    for ns in $(ip netns list | awk '{print $1}' | grep "^$TAG-" || true); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns delete "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
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
add_host() {
    local h=$1
    ip netns add "$(host "$h")"
    ip link add "v$TAG$h" netns "$(host "$h")" type veth peer name "p$h" netns "$TAG-hub"
    ip -n "$TAG-hub" link set "p$h" master br0 up
    ip -n "$(host "$h")" link set lo up
    ip -n "$(host "$h")" link set "v$TAG$h" name eth0
    ip -n "$(host "$h")" addr add "$(addr "$h")/24" dev eth0
    ip -n "$(host "$h")" link set eth0 up
}
for h in $(seq 1 "$HOSTS"); do add_host "$h"; done
sleep 0.5  # let the bridge ports come up (no STP by default)

declare -A PID
start_node() {
    local h=$1 join=(); shift
    [ "$h" -ne 1 ] && join=(--join "$(addr 1):5060")
    ip netns exec "$(host "$h")" "$P2PSIP" node --sip "$(addr "$h"):5060" --http "$(addr "$h"):8080" \
        --data "$WORK/d$h" --domain example.test --auth open "${join[@]}" "$@" \
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

# The organisation's edge: a gateway host G and a legacy host K join the LAN.
G=$((HOSTS + 1)); K=$((HOSTS + 2))
add_host "$G"; add_host "$K"
# K runs named for legacy.test (the gateway's resolver for the legacy side)...
mkdir -p "$WORK/named"
cat > "$WORK/named/legacy.test.zone" <<ZONE
\$TTL 60
@         IN SOA   ns.legacy.test. hostmaster.legacy.test. ( 1 60 60 600 60 )
@         IN NS    ns.legacy.test.
ns        IN A     $(addr "$K")
proxy     IN A     $(addr "$K")
@         IN NAPTR 10 10 "S" "SIP+D2U" "" _sip._udp.legacy.test.
_sip._udp IN SRV   0 0 5060 proxy.legacy.test.
ZONE
cat > "$WORK/named/named.conf" <<CONF
options {
    directory "$WORK/named"; pid-file "$WORK/named/named.pid";
    session-keyfile "$WORK/named/session.key"; managed-keys-directory "$WORK/named";
    listen-on port 53 { $(addr "$K"); }; listen-on-v6 { none; };
    recursion no; dnssec-validation no; allow-query { any; }; notify no;
};
controls { };
zone "legacy.test" { type primary; file "$WORK/named/legacy.test.zone"; };
CONF
ip netns exec "$(host "$K")" "$NAMED" -g -c "$WORK/named/named.conf" > "$WORK/named.log" 2>&1 &
for _ in $(seq 1 100); do
    in_host "$K" dig +short +time=1 +tries=1 @"$(addr "$K")" SOA legacy.test 2>/dev/null | grep -q . && break
    sleep 0.1
done
in_host "$K" dig +short @"$(addr "$K")" SOA legacy.test | grep -q . || fail "named on host $K does not answer"
# ...and G is a node of the ring that serves example.test's DNS.
start_node "$G" --dns "$(addr "$G"):53" --nameserver "$(addr "$K"):53"
expect_ring 1 1 2 3 "$G"
naptr=$(in_host "$K" dig +short @"$(addr "$G")" NAPTR example.test)
echo "multihost: gateway DNS: example.test NAPTR $naptr"
srv=$(in_host "$K" dig +short @"$(addr "$G")" SRV _sip._udp.example.test)
echo "$srv" | grep -q "5060 " || fail "the gateway's SRV for _sip._udp.example.test is [$srv]"
# Kamailio on K resolves through the gateway's DNS (the namespace's resolv.conf).
mkdir -p "/etc/netns/$(host "$K")"
echo "nameserver $(addr "$G")" > "/etc/netns/$(host "$K")/resolv.conf"
mkdir -p "$WORK/kam"
ip netns exec "$(host "$K")" kamailio -DD -E -f "$PWD/tests/kamailio/legacy.cfg" -Y "$WORK/kam" \
    -P "$WORK/kam/kamailio.pid" -m 64 -M 8 -A "LISTEN_SOCK=udp:$(addr "$K"):5060" \
    -A KAM_CHILDREN=2 -A KAM_DEBUG=2 -A "CTL_SOCK=\"unix:$WORK/kam/ctl\"" > "$WORK/kamailio.log" 2>&1 &
for _ in $(seq 1 150); do
    in_host "$K" ss -Hlun "sport = :5060" 2>/dev/null | grep -q 5060 && break
    sleep 0.1
done
in_host "$K" ss -Hlun "sport = :5060" | grep -q 5060 || { tail -20 "$WORK/kamailio.log" >&2; fail "kamailio on host $K did not start"; }
# alice@legacy.test is a phone (SIPp UAS) registered with Kamailio.
in_host "$K" sipp -sf "$SC/uas_message_call.xml" -i "$(addr "$K")" -p 5090 -mp 6300 -nostdin -m 1000 \
    > "$WORK/uas-alice.log" 2>&1 &
sipp_on "$K" register-alice-at-kamailio -sf "$SC/register.xml" -m 1 -key user alice -key domain legacy.test \
    -key contact "sip:alice@$(addr "$K"):5090" -key expires 3600
# sipp_on sends to the host's own :5060, which on K is Kamailio: the legacy side.
call_from "$K" legacy-call-to-overlay
sipp_on "$G" overlay-call-to-legacy -sf "$SC/uac_call.xml" -m 3 -s alice -key domain legacy.test
grep -q "_sip._udp.example.test\|example.test" "$WORK/kamailio.log" || true

echo "multihost: ok ($HOSTS hosts: calls, messages, crash, leave, cut-off, heal; a gateway and Kamailio host: legacy to overlay and back)"
