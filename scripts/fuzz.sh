#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, cargo-fuzz, nightly) and runs each for a
# bounded time, one after the other on one core, then prints the executions
# of each. A crash leaves its input in fuzz/artifacts/<target>/ and makes
# the script exit 1 (after the other targets ran): copy the input to
# tests/torture/fuzz/ (tests/torture.rs replays it) and fix the cause.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS  per target, default 60
#   TARGET   sip_parse stream_framing overlay_wire dns_query core_input (default: all)
# The corpora grow in fuzz/corpus/<target>/ (not in git); they are seeded
# from tests/torture/ and docs/protocol.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(sip_parse stream_framing overlay_wire dns_query core_input)
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz
fi

corpus=$root/fuzz/corpus
mkdir -p "$corpus"/{sip_parse,stream_framing,overlay_wire,dns_query,core_input}

# stream_framing: 8 bytes of chunk-size seed, then two messages back to back.
if [ -z "$(ls -A "$corpus/stream_framing")" ]; then
  i=0
  for f in "$root"/tests/torture/*.dat; do
    i=$((i + 1))
    { printf '%08d' "$i"; cat "$f"; printf '\r\n\r\n'; cat "$root/tests/torture/wsinv.dat"; } \
      > "$corpus/stream_framing/seed-$(basename "$f" .dat)"
  done
fi
# overlay_wire: the example messages of docs/protocol.md, with CRLF.
if [ -z "$(ls -A "$corpus/overlay_wire")" ]; then
  awk -v dir="$corpus/overlay_wire" '
    /^```/ { if (inblock) { close(file); inblock = 0 } else { n++; file = sprintf("%s/protocol-%02d", dir, n); inblock = 1 }; next }
    inblock { printf "%s\r\n", $0 > file }
  ' "$root/docs/protocol.md"
  # A block that is not a SIP message is harmless: it just does not parse.
fi
# dns_query: a few queries for the served zone, plain and with EDNS.
if [ -z "$(ls -A "$corpus/dns_query")" ]; then
  python3 - "$corpus/dns_query" <<'PY'
import struct, sys
out = sys.argv[1]
def name(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.split(".") if l) + b"\0"
qs = [("overlay.test", 35), ("_sip._udp.overlay.test", 33), ("_sips._tcp.overlay.test", 33),
      ("gw1.overlay.test", 1), ("gw1.overlay.test", 28), ("overlay.test", 6), ("overlay.test", 2),
      ("nothere.overlay.test", 1), ("example.org", 1), ("overlay.test", 252), ("overlay.test", 255)]
for i, (n, t) in enumerate(qs):
    for edns in (False, True):
        head = struct.pack(">HHHHHH", 0x1000 + i, 0x0100, 1, 0, 0, 1 if edns else 0)
        body = name(n) + struct.pack(">HH", t, 1)
        if edns:
            body += b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0)
        open(f"{out}/q{i:02d}{'e' if edns else ''}", "wb").write(head + body)
PY
fi

# core_input: a mode byte, then records (op, u16 length, bytes): a phone's
# REGISTER, OPTIONS, MESSAGE and INVITE, time passing, and each torture message
# from a phone (see core_input in fuzz/src/lib.rs).
if [ -z "$(ls -A "$corpus/core_input")" ]; then
  python3 - "$corpus/core_input" "$root/tests/torture" <<'PY'
import glob, os, struct, sys
out, torture = sys.argv[1], sys.argv[2]
def rec(op, data=b""):
    return bytes([op]) + struct.pack(">H", len(data)) + data
def sip(text):
    return text.strip("\n").replace("\n", "\r\n").encode() + b"\r\n\r\n"
def req(method, uri, extra="", body="", n=1):
    to = "alice" if method == "REGISTER" else "bob"
    return sip(f"""{method} {uri} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{method}{n}
Max-Forwards: 70
From: <sip:alice@example.test>;tag=a{n}
To: <sip:{to}@example.test>
Call-ID: {method}-{n}@127.0.0.1
CSeq: {n} {method}
Contact: <sip:alice@127.0.0.1:5070;transport=udp>{extra}
Content-Length: {len(body)}""") + body.encode()
register = req("REGISTER", "sip:example.test", "\nExpires: 3600")
seeds = {
    "register": rec(0, register) + rec(4) + rec(0, req("OPTIONS", "sip:alice@example.test", n=2)),
    "call": rec(0, register) + rec(1, req("INVITE", "sip:alice@example.test", n=3)) + rec(7, b"\0") + rec(4, b"\x20"),
    "message": rec(0, req("MESSAGE", "sip:bob@example.org", body="hello", n=4)) + rec(7) + rec(5, b"\0"),
}
for name, data in seeds.items():
    for mode in (0, 1):
        open(os.path.join(out, f"{name}-{mode}"), "wb").write(bytes([mode]) + data)
for f in sorted(glob.glob(os.path.join(torture, "*.dat"))):
    data = open(f, "rb").read()[:65535]
    open(os.path.join(out, "torture-" + os.path.basename(f)), "wb").write(b"\0" + rec(0, data) + rec(4))
PY
fi

seeds_for() {
  case $1 in
    sip_parse) echo "$root/tests/torture" ;;
    overlay_wire) echo "$root/tests/torture" ;;
    *) echo "" ;;
  esac
}
dict_for() {
  case $1 in
    dns_query) echo "" ;;
    *) echo "-dict=$root/fuzz/sip.dict" ;;
  esac
}

cd "$root/fuzz"
cargo +nightly fuzz build -O

status=0
summary=()
for t in "${targets[@]}"; do
  log=$root/fuzz/artifacts/$t.log
  mkdir -p "$root/fuzz/artifacts/$t"
  echo "== $t: ${secs}s" >&2
  # shellcheck disable=SC2046
  if cargo +nightly fuzz run -O "$t" "$corpus/$t" $(seeds_for "$t") -- \
      -max_total_time="$secs" -max_len=16384 -rss_limit_mb=2048 \
      -print_final_stats=1 $(dict_for "$t") > "$log" 2>&1; then
    result=ok
  else
    result="CRASH (see $log and fuzz/artifacts/$t/)"
    status=1
  fi
  stat() { grep -o "$1 *[0-9]*" "$log" | tail -1 | awk '{print $NF}' || true; }
  execs=$(stat 'stat::number_of_executed_units:')
  rate=$(stat 'stat::average_exec_per_sec:')
  cov=$(stat 'cov:')
  if [ -z "$execs" ]; then
    # A crash ends the run before the final stats: take the last progress line.
    execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#' || true)
  fi
  summary+=("$(printf '%-15s %10s execs %8s/s  cov %6s  corpus %5s  %s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$(ls "$corpus/$t" | wc -l)" "$result")")
done

echo
echo "fuzzing, ${secs}s per target:"
printf '%s\n' "${summary[@]}"
exit $status
