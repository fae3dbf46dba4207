//! The server against the real `dig` (Debian bind9-dnsutils), UDP and TCP.
//! A missing `dig` is a failure, not a skip: the test install script installs it.

mod common;

use std::net::SocketAddr;

use common::*;
use p2psip_dns::DnsServer;
use tokio::process::Command;

/// Run `dig @127.0.0.1 -p PORT <args>` and return stdout.
async fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+time=3", "+tries=1", "+norecurse"])
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `dig` ({e}): install Debian package bind9-dnsutils \
                 (shared/interop/install-tools.sh does) — this test must not be skipped"
            )
        });
    assert!(
        out.status.success(),
        "dig {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn dig_sees_naptr_srv_a_and_status_codes() {
    let zones = overlay_zones();
    let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), zones.clone())
        .await
        .unwrap();
    let addr = server.local_addr();

    for tcp in ["+notcp", "+tcp"] {
        let naptr = dig(addr, &[tcp, "+short", "NAPTR", "overlay.test"]).await;
        assert_eq!(
            sorted_lines(&naptr),
            vec![
                r#"10 10 "s" "SIPS+D2T" "" _sips._tcp.overlay.test."#,
                r#"20 10 "s" "SIP+D2T" "" _sip._tcp.overlay.test."#,
                r#"30 10 "s" "SIP+D2U" "" _sip._udp.overlay.test."#,
            ],
            "{tcp}"
        );
        let srv = dig(addr, &[tcp, "+short", "SRV", "_sip._udp.overlay.test"]).await;
        assert_eq!(
            sorted_lines(&srv),
            vec!["0 10 5080 gw1.overlay.test.", "0 10 5090 gw2.overlay.test."]
        );
        let sips = dig(addr, &[tcp, "+short", "SRV", "_sips._tcp.overlay.test"]).await;
        assert_eq!(sorted_lines(&sips), vec!["0 10 5091 gw2.overlay.test."]);
        let a = dig(addr, &[tcp, "+short", "A", "gw1.overlay.test"]).await;
        assert_eq!(sorted_lines(&a), vec!["127.0.0.1"]);
        let ns = dig(addr, &[tcp, "+short", "NS", "overlay.test"]).await;
        assert_eq!(sorted_lines(&ns), vec!["ns.overlay.test."]);
        let ns_a = dig(addr, &[tcp, "+short", "A", "ns.overlay.test"]).await;
        assert_eq!(sorted_lines(&ns_a), vec!["127.0.0.1"]);

        let full = dig(addr, &[tcp, "NAPTR", "overlay.test"]).await;
        assert!(full.contains("status: NOERROR"), "{full}");
        assert!(full.contains(" aa"), "authoritative answer flag: {full}");

        let refused = dig(addr, &[tcp, "A", "www.example.com"]).await;
        assert!(refused.contains("status: REFUSED"), "{refused}");
        let nx = dig(addr, &[tcp, "A", "nobody.overlay.test"]).await;
        assert!(nx.contains("status: NXDOMAIN"), "{nx}");
        assert!(nx.contains("AUTHORITY: 1"), "SOA in authority: {nx}");
    }

    // a gateway leaves: dig sees it gone and the serial move
    let soa_before = dig(addr, &["+short", "SOA", "overlay.test"]).await;
    zones.set_gateways(
        "overlay.test",
        vec![gateway(
            "gw1",
            v4(127, 0, 0, 1),
            Some(5080),
            Some(5080),
            None,
        )],
    );
    let srv = dig(addr, &["+short", "SRV", "_sip._udp.overlay.test"]).await;
    assert_eq!(sorted_lines(&srv), vec!["0 10 5080 gw1.overlay.test."]);
    let soa_after = dig(addr, &["+short", "SOA", "overlay.test"]).await;
    let serial = |s: &str| -> u32 { s.split_whitespace().nth(2).unwrap().parse().unwrap() };
    assert!(
        serial(&soa_after) > serial(&soa_before),
        "{soa_before} -> {soa_after}"
    );
    assert_eq!(Some(serial(&soa_after)), zones.serial("overlay.test"));
    server.shutdown().await;
}
