//! Interop: Kamailio 5.6 (a legacy proxy with only DNS, `dns_try_naptr=yes`)
//! resolves overlay.test through p2psip-dns (NAPTR -> SRV -> A) and delivers a
//! MESSAGE to the gateway. Runs tests/kamailio-interop.sh: a private network
//! namespace (root), our server on its 127.0.0.1:53, Kamailio, SIPp. Missing
//! tools are a failure, not a skip (shared/interop/install-tools.sh installs them).

use std::process::Command;

#[test]
fn kamailio_resolves_overlay_domain_through_our_server() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kamailio-interop.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("SERVE", env!("CARGO_BIN_EXE_p2psip-dns-serve"))
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("PASS kamailio-interop"),
        "Kamailio interop failed:\n{stdout}"
    );
}
