//! The status page at `/` in a real headless browser (Debian chromium):
//! five nodes form a ring; the page of one of them, once its script has
//! fetched `/status`, draws every node it knows as an SVG circle — all five
//! here — and a screenshot is kept in the test's temporary directory.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

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
