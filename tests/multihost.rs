//! Several hosts for real: `scripts/multihost.sh` builds five network
//! namespaces on a bridge (private addresses only inside them, all removed
//! afterwards), one node per host, and runs registrations, calls and
//! messages across them through a crash, a leave and a host cut off and
//! reconnected, checking with `p2psip ring` that the overlay heals each
//! time and that each node's log names its own address; then a gateway
//! host (serving the overlay domain's DNS) and a legacy host (Kamailio and
//! named for legacy.test) join, and calls go from the legacy domain to the
//! overlay and back. Needs root, `ip`, `sipp`, `kamailio`, `named`, `dig`.

mod common;

use std::process::Command;

#[test]
fn five_hosts_on_a_bridge_call_and_heal() {
    common::require_tool("ip", "iproute2");
    common::require_tool("sipp", "sip-tester");
    common::require_tool("kamailio", "kamailio");
    common::require_tool("named", "bind9");
    common::require_tool("dig", "bind9-dnsutils");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/multihost.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("5")
        .env("P2PSIP", env!("CARGO_BIN_EXE_p2psip"))
        .output()
        .expect("run scripts/multihost.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("multihost: ok"),
        "scripts/multihost.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for step in [
        "call-after-crash ok",
        "message-after-leave ok",
        "call-after-cut ok",
        "call-after-return ok",
        "legacy-call-to-overlay ok",
        "overlay-call-to-legacy ok",
    ] {
        assert!(stdout.contains(step), "no {step:?} in:\n{stdout}");
    }
}
