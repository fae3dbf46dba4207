#!/usr/bin/env bash
# The Debian package, installed for real: builds it with `cargo deb`,
# installs it with dpkg, checks the user, files and modes it made, then starts
# the packaged binary with the packaged config as the `p2psip` user, the way
# the unit does (ExecStart), and waits for it to listen and answer /status.
# With systemd running (PID 1), it starts the unit itself instead. Purges the
# package at the end, also on failure. Needs root and cargo-deb
# (`cargo install cargo-deb`).
#
#   scripts/package-test.sh [path/to/p2psip_*.deb]   # default: build one
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "package-test: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "needs root (dpkg -i)"

DEB="${1:-}"
if [ -z "$DEB" ]; then
    cargo deb --version >/dev/null 2>&1 || fail "needs cargo-deb: cargo install cargo-deb"
    DEB="$(cargo deb 2>/dev/null | tail -n1)"
fi
[ -f "$DEB" ] || fail "no package at $DEB"

cleanup() {
    [ -n "${NODE:-}" ] && kill "$NODE" 2>/dev/null || true
    if [ -d /run/systemd/system ]; then systemctl stop p2psip 2>/dev/null || true; fi
    dpkg --purge p2psip >/dev/null 2>&1 || true
}
trap cleanup EXIT

dpkg -i "$DEB" >/dev/null
echo "package-test: installed $DEB"
getent passwd p2psip >/dev/null || fail "no p2psip user"
[ -x /usr/bin/p2psip ] || fail "no /usr/bin/p2psip"
[ -f /etc/p2psip/p2psip.toml ] || fail "no /etc/p2psip/p2psip.toml"
unit=$(ls /lib/systemd/system/p2psip.service /usr/lib/systemd/system/p2psip.service 2>/dev/null | head -n1)
[ -n "$unit" ] || fail "no p2psip.service"
grep -q "AmbientCapabilities=CAP_NET_BIND_SERVICE" "$unit" || fail "unit without CAP_NET_BIND_SERVICE"
[ "$(stat -c %U /var/lib/p2psip)" = p2psip ] || fail "/var/lib/p2psip not owned by p2psip"
/usr/bin/p2psip check --config /etc/p2psip/p2psip.toml

HTTP=127.0.0.1:18099
LOG="$(mktemp)"
if [ -d /run/systemd/system ]; then
    mkdir -p /etc/systemd/system/p2psip.service.d
    printf '[Service]\nExecStart=\nExecStart=/usr/bin/p2psip node --data /var/lib/p2psip --sip 127.0.0.1:15099 --http %s\n' "$HTTP" \
        > /etc/systemd/system/p2psip.service.d/test.conf
    systemctl daemon-reload
    systemctl start p2psip
    how="systemctl start p2psip"
else
    # No systemd here: what the unit's ExecStart does, as the unit's user.
    # The default config path is read because no --config is given.
    runuser -u p2psip -- /usr/bin/p2psip node --data /var/lib/p2psip --sip 127.0.0.1:15099 \
        --http "$HTTP" > "$LOG" 2>&1 &
    NODE=$!
    how="the unit's ExecStart as user p2psip (no systemd in this container)"
fi
for _ in $(seq 1 100); do
    if /usr/bin/p2psip status --http "$HTTP" >/dev/null 2>&1; then
        echo "package-test: node started by $how answers:"
        status=$(/usr/bin/p2psip status --http "$HTTP")
        echo "${status%%predecessor*}"
        [ -f /var/lib/p2psip/control.json ] || fail "no control.json in the data directory"
        [ "$(stat -c %a /var/lib/p2psip/control.json)" = 600 ] || fail "control.json not 0600"
        /usr/bin/p2psip ring --data /var/lib/p2psip >/dev/null || fail "p2psip ring failed"
        [ -d /etc/systemd/system/p2psip.service.d ] && rm -rf /etc/systemd/system/p2psip.service.d
        echo "package-test: ok"
        exit 0
    fi
    sleep 0.1
done
cat "$LOG" >&2 2>/dev/null || true
fail "the packaged node did not answer on $HTTP"
