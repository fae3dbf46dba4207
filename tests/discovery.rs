//! LAN discovery with no configuration: two nodes started with `--discover`
//! and no `--join`, in a network namespace whose loopback carries multicast,
//! find each other by the multicast REGISTER to sip.mcast.net and form one
//! ring; a third node finds the ring the same way.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::netns::Netns;
use common::{Node, wait_until};
use serde_json::Value;

fn successor(ns: &Netns, http: SocketAddr) -> Option<String> {
    let body = ns.http_get(http, "/status")?;
    let status: Value = serde_json::from_str(&body).ok()?;
    status["successors"][0]["addr"].as_str().map(str::to_string)
}

#[test]
fn nodes_on_one_lan_find_each_other() {
    let ns = Netns::new("discover");
    for args in [
        ["ip", "link", "set", "lo", "multicast", "on"].as_slice(),
        ["ip", "route", "add", "224.0.0.0/4", "dev", "lo"].as_slice(),
    ] {
        let (status, _, err) = ns.run(args);
        assert!(status.success(), "{args:?}: {err}");
    }
    let https: Vec<SocketAddr> = (0..3)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 8060 + i)))
        .collect();
    let a = Node::builder()
        .name("a")
        .args([
            "--sip",
            "127.0.0.1:5060",
            "--discover",
            "--http",
            &https[0].to_string(),
        ])
        .in_netns(&ns)
        .spawn();
    let b = Node::builder()
        .name("b")
        .args([
            "--sip",
            "127.0.0.1:5070",
            "--discover",
            "--http",
            &https[1].to_string(),
        ])
        .in_netns(&ns)
        .spawn();
    wait_until(
        "a and b form one ring by discovery",
        Duration::from_secs(20),
        || {
            successor(&ns, https[0]).as_deref() == Some("127.0.0.1:5070")
                && successor(&ns, https[1]).as_deref() == Some("127.0.0.1:5060")
        },
        || {
            format!(
                "a:\n{}\nb:\n{}",
                common::tail(&a.log(), 30),
                common::tail(&b.log(), 30)
            )
        },
    );
    // A newcomer hears back from the ring and joins it.
    let c = Node::builder()
        .name("c")
        .args([
            "--sip",
            "127.0.0.1:5080",
            "--discover",
            "--http",
            &https[2].to_string(),
        ])
        .in_netns(&ns)
        .spawn();
    wait_until(
        "c joins the ring of a and b",
        Duration::from_secs(20),
        || {
            let succs: Vec<Option<String>> = https.iter().map(|h| successor(&ns, *h)).collect();
            let mut seen: Vec<String> = succs.iter().flatten().cloned().collect();
            seen.sort();
            succs.iter().all(|s| s.is_some())
                && seen == ["127.0.0.1:5060", "127.0.0.1:5070", "127.0.0.1:5080"]
        },
        || format!("c:\n{}", common::tail(&c.log(), 30)),
    );
}
