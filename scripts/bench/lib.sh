# lib.sh — what the benchmark scripts share (sourced, not run): installing the
# tools, the node's release binary, and a private network namespace with a
# temp dir that are removed on exit. Each script sets ROOT before sourcing it.

# bench_install PKG...: apt-get installs the Debian packages that are missing.
bench_install() {
  local need="" p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
  done
  if [ -n "$need" ]; then
    echo "installing:$need" >&2
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $need >/dev/null \
      || { echo "cannot install$need" >&2; exit 1; }
  fi
  command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
}

# bench_binary: P2PSIP_BIN, built in release mode unless given, as an absolute path.
bench_binary() {
  if [ -z "${P2PSIP_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release -p p2psip) || { echo "cargo build failed" >&2; exit 1; }
    P2PSIP_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/p2psip
  fi
  [ -x "$P2PSIP_BIN" ] || { echo "no p2psip binary at $P2PSIP_BIN" >&2; exit 1; }
  P2PSIP_BIN=$(cd "$(dirname "$P2PSIP_BIN")" && pwd)/$(basename "$P2PSIP_BIN")
}

# bench_netns NAME: a network namespace NS (loopback up) and a temp dir TMP;
# processes whose pids are added to PIDS are stopped, and both removed, on exit
# (TMP is kept with KEEP=1).
bench_netns() {
  NS=$1$$
  TMP=$(mktemp -d "/tmp/$1.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
  trap 'exit 1' INT TERM
  ip netns add "$NS" || { echo "cannot create netns $NS (root needed)" >&2; exit 1; }
  ip netns exec "$NS" ip link set lo up
  HZ=$(getconf CLK_TCK)
}

bench_cleanup() {
  local i p
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill "${PIDS[$i]}" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null
  done
  for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  ip netns del "$NS" 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
