#!/usr/bin/env bash
# The project's test command: installs what the integration tests need on a
# fresh Debian machine (as root; idempotent, apt-get only when something is
# missing), prints the tool versions, then runs the whole workspace's tests.
# Usage: scripts/test.sh [extra cargo test args...]   Exit code: cargo's.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS="sip-tester kamailio kamailio-extra-modules bind9 bind9-dnsutils iproute2 procps sipvicious baresip-core chromium stun-client coturn iptables adduser"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "test.sh: installing:$missing" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: must run as root to install:$missing" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The package test (tests/package.rs) packages the built binary with
# cargo-deb; pinned, since it warns that a later version will refuse the
# dev profile the test packages from.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-deb 3.8.0" >&2
  cargo install --locked --quiet cargo-deb@3.8.0
fi

echo "sipp:     $(sipp -v 2>&1 | grep -m1 SIPp | sed 's/^ *//')"
echo "kamailio: $(kamailio -v 2>&1 | head -1)"
echo "dig:      $(dig -v 2>&1 | head -1)"
echo "baresip:  $(dpkg-query -W -f='${Version}' baresip-core 2>/dev/null)"
cargo --version

set +e
cargo test --workspace "$@"
status=$?
exit "$status"
