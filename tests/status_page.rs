//! The status page at `/` in a real headless browser (Debian chromium):
//! five nodes form a ring; the page of one of them, once its script has
//! fetched `/status`, draws every node it knows as an SVG circle — all five
//! here — lists a user whose binding it holds and, the node being a
//! gateway, the domain's gateway it publishes in DNS; a screenshot is kept
//! in the test's temporary directory.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;
use sha1::{Digest, Sha1};

fn sha1_hex(text: &str) -> String {
    Sha1::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A user whose binding `node` holds (it is among the key's three holders).
fn user_held_by(ids: &[String], node: &str) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort();
    (0..1000)
        .map(|i| format!("user{i}"))
        .find(|user| {
            let key = sha1_hex(&format!("{user}@{DOMAIN}"));
            let at = sorted.iter().position(|id| *id >= key).unwrap_or(0);
            (0..3).any(|k| sorted[(at + k) % sorted.len()] == node)
        })
        .expect("some user is held by the node")
}

/// The addresses a node's /status names: itself, predecessor, successors, fingers.
fn known(http: SocketAddr) -> BTreeSet<String> {
    let Some(status) =
        http_get(http, "/status").and_then(|b| serde_json::from_str::<Value>(&b).ok())
    else {
        return BTreeSet::new();
    };
    let mut set = BTreeSet::new();
    let mut add = |v: &Value| {
        if let Some(a) = v["addr"].as_str() {
            set.insert(a.to_string());
        }
    };
    add(&status);
    add(&status["predecessor"]);
    for key in ["successors", "fingers"] {
        for p in status[key].as_array().into_iter().flatten() {
            add(p);
        }
    }
    set
}

/// Chromium, headless and off the network but for the page.
fn chromium(profile: &std::path::Path) -> Command {
    let mut cmd = Command::new(require_tool("chromium", "chromium"));
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=8000",
        "--window-size=1000,700",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

#[test]
fn the_status_page_draws_the_ring() {
    let mut nodes = Vec::new();
    let mut https = Vec::new();
    for i in 0..5 {
        let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
        let mut args = vec!["--http".to_string(), http.to_string()];
        if i == 0 {
            let dns = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
            args.extend(["--dns".to_string(), dns.to_string()]);
        }
        if i > 0 {
            let first: &Node = &nodes[0];
            args.extend(["--join".to_string(), first.addr.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push(Node::start(&args));
        https.push(http);
    }
    let all: BTreeSet<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    wait_until(
        "node 0 knows all five nodes",
        Duration::from_secs(60),
        || known(https[0]) == all,
        || format!("{:?} of {all:?}", known(https[0])),
    );
    // A user whose binding node 0 holds, registered through another node.
    let ids: Vec<String> = nodes.iter().map(|n| n.node_id.clone()).collect();
    let user = user_held_by(&ids, &nodes[0].node_id);
    let aor = format!("{user}@{DOMAIN}");
    SippBuilder::new("register-page", "register.xml", Transport::Udp)
        .to(nodes[1].addr)
        .key("user", &user)
        .key("domain", DOMAIN)
        .key("contact", &format!("sip:{user}@127.0.0.1:5997"))
        .key("expires", "3600")
        .spawn()
        .expect_success(1);
    let status = || {
        http_get(https[0], "/status")
            .and_then(|b| serde_json::from_str::<Value>(&b).ok())
            .unwrap_or_default()
    };
    wait_until(
        "node 0's /status lists the user and its domain's gateway",
        Duration::from_secs(30),
        || {
            let s = status();
            s["users"]
                .as_array()
                .is_some_and(|u| u.iter().any(|u| u["aor"].as_str() == Some(aor.as_str())))
                && s["gateways"].as_array().is_some_and(|g| {
                    g.iter().any(|d| {
                        d["domain"].as_str() == Some(DOMAIN)
                            && d["gateways"].as_array().is_some_and(|g| !g.is_empty())
                    })
                })
        },
        || status().to_string(),
    );
    let dir = temp_dir("status-page");
    let url = format!("http://{}/", https[0]);
    let out = chromium(&dir.join("profile"))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let drawn: BTreeSet<String> = dom
        .match_indices("data-addr=\"")
        .filter_map(|(i, m)| dom[i + m.len()..].split('"').next().map(str::to_string))
        .collect();
    assert_eq!(
        drawn,
        all,
        "the page draws every node the status names\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        dom.matches("class=\"node me\"").count(),
        1,
        "one red dot for this node"
    );
    let rows = |class: &str| -> Vec<String> {
        dom.split(&format!("<tr class=\"{class}\">"))
            .skip(1)
            .filter_map(|r| r.split("</tr>").next().map(str::to_string))
            .collect()
    };
    assert!(
        rows("user").iter().any(|r| r.contains(&aor)),
        "the page lists {aor}: {:?}",
        rows("user")
    );
    assert!(
        rows("gateway")
            .iter()
            .any(|r| r.contains(DOMAIN) && r.contains("gw-") && r.contains("127.0.0.1")),
        "the page lists the gateway: {:?}",
        rows("gateway")
    );
    let shot = dir.join("status-page.png");
    let out = chromium(&dir.join("profile2"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    let png = std::fs::read(&shot)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "a screenshot ({} bytes)",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}
