#!/bin/bash
# kamailio-interop.sh — a legacy proxy that has only DNS reaches the overlay
# through OUR authoritative server (not bind9): Kamailio (dns_try_naptr=yes)
# resolves overlay.test via p2psip-dns on 127.0.0.1:53 inside a private network
# namespace, NAPTR -> SRV (-> A), and delivers a MESSAGE to the "gateway" (a
# SIPp UAS on 127.0.0.1:5080). Needs root (netns), kamailio, sipp, dig, ss.
# Run by tests/kamailio.rs (cargo test), or by hand:
#
#   SERVE=target/debug/p2psip-dns-serve dns/tests/kamailio-interop.sh
#
# Kamailio config and SIPp scenarios are copies of shared/interop's (tests/data).
# Prints PASS/FAIL, exit 0/1; tears down everything it started. KEEP=1 keeps logs.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DATA="$HERE/data"
for t in kamailio sipp dig ip ss; do
  command -v $t >/dev/null || { echo "FAIL: $t not installed (shared/interop/install-tools.sh installs it)"; exit 1; }
done
if [ -z "${SERVE:-}" ]; then
  (cd "$HERE/../.." && cargo build -q -p p2psip-dns --bin p2psip-dns-serve) || { echo "FAIL: build"; exit 1; }
  SERVE="$HERE/../../target/debug/p2psip-dns-serve"
fi
[ -x "$SERVE" ] || { echo "FAIL: no server binary $SERVE"; exit 1; }

NS=p2pdns$$
TMP=$(mktemp -d /tmp/p2psip-dns-kam.XXXXXX)
PIDS=()
fail=0
cleanup() {
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill "${PIDS[$i]}" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null
  done
  for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  ip netns del "$NS" 2>/dev/null
  rm -rf "/etc/netns/$NS"; rmdir /etc/netns 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM
inns() { ip netns exec "$NS" "$@"; }
check() { local name=$1; shift
  if "$@" >>"$TMP/checks.log" 2>&1; then echo "  ok   $name"; else echo "  FAIL $name"; fail=1; fi; }

ip netns add "$NS" || { echo "FAIL: cannot create netns (need root)"; exit 1; }
inns ip link set lo up
mkdir -p "/etc/netns/$NS"
printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' > "/etc/netns/$NS/resolv.conf"

# our DNS server, authoritative for overlay.test, on 127.0.0.1:53 in the namespace
ip netns exec "$NS" "$SERVE" 127.0.0.1:53 overlay.test gw@127.0.0.1,udp=5080,tcp=5080 \
   >"$TMP/dns.out" 2>"$TMP/dns.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q '^listening on' "$TMP/dns.out" && break; sleep 0.1; done
check "p2psip-dns listening on 127.0.0.1:53" grep -q '^listening on 127.0.0.1:53' "$TMP/dns.out"
echo "DNS (inside $NS, via resolv.conf, served by p2psip-dns):"
inns dig +short NAPTR overlay.test | sed 's/^/    NAPTR /'
inns dig +short SRV _sip._udp.overlay.test | sed 's/^/    SRV   /'
check "dig SRV _sip._udp.overlay.test -> 0 10 5080 gw.overlay.test" \
  bash -c "ip netns exec $NS dig +short SRV _sip._udp.overlay.test | grep -qx '0 10 5080 gw.overlay.test.'"

ip netns exec "$NS" kamailio -DD -E -f "$DATA/kamailio-legacy.cfg" -Y "$TMP" -P "$TMP/kamailio.pid" \
     -m 64 -M 8 -A 'LISTEN_SOCK=udp:127.0.0.1:5070' -A 'KAM_DEBUG=2' -A 'KAM_CHILDREN=2' \
     >"$TMP/kamailio.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do inns ss -uln | grep -q '127.0.0.1:5070' && break; sleep 0.2; done
check "kamailio listening on 127.0.0.1:5070" bash -c "ip netns exec $NS ss -uln | grep -q 127.0.0.1:5070"

cd "$TMP"
ip netns exec "$NS" sipp -sf "$DATA/uas_message.xml" -i 127.0.0.1 -p 5080 -m 1 -nostdin \
     -timeout 20s -trace_msg -message_file "$TMP/gw_msgs.log" >"$TMP/uas_gw.log" 2>&1 &
GWPID=$!; PIDS+=($GWPID)
for _ in $(seq 50); do inns ss -uln | grep -q '127.0.0.1:5080' && break; sleep 0.1; done

check "MESSAGE sip:bob@overlay.test -> Kamailio -> NAPTR/SRV/A from p2psip-dns -> 127.0.0.1:5080 -> 200" \
  inns timeout 20 sipp 127.0.0.1:5070 -sf "$DATA/uac_message.xml" -s bob -key domain overlay.test \
       -i 127.0.0.1 -p 7102 -m 1 -nostdin -timeout 15s -timeout_error
check "gateway UAS (5080) completed its call" wait "$GWPID"
# the example prints its query log every 100 ms
for _ in $(seq 30); do grep -q '^query: _sip._udp.overlay.test IN SRV' "$TMP/dns.log" && break; sleep 0.1; done
check "Kamailio queried NAPTR overlay.test" grep -q '^query: overlay.test IN NAPTR' "$TMP/dns.log"
check "Kamailio queried SRV _sip._udp.overlay.test" grep -q '^query: _sip._udp.overlay.test IN SRV' "$TMP/dns.log"
check "gateway received R-URI sip:bob@overlay.test" grep -q '^MESSAGE sip:bob@overlay.test SIP/2.0' "$TMP/gw_msgs.log"

echo "DNS queries seen by p2psip-dns:"; grep -o '^query: .*' "$TMP/dns.log" | sort | uniq -c | sed 's/^/  /'
if [ $fail = 0 ]; then echo "PASS kamailio-interop (p2psip-dns)"; else
  echo "FAIL kamailio-interop (p2psip-dns)"; tail -30 "$TMP/checks.log"; tail -30 "$TMP/kamailio.log"; exit 1; fi
