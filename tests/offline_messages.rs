//! Offline instant messages with real processes: a MESSAGE to a user of the
//! overlay who is not registered gets 202 and is kept in the ring; when she
//! registers later at another node, a SIPp UAS at her new contact receives
//! it with the original From and Date, even though the node holding it was
//! killed with SIGKILL in between. A user who never registered still gets
//! 404; the 21st message beyond the bound of 20 is refused with a reason.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::phone::Phone;
use common::*;
use serde_json::Value;
use sha1::{Digest, Sha1};

const DATE: &str = "Tue, 01 Dec 2026 22:00:00 GMT";

struct RingNode {
    node: Node,
    http: SocketAddr,
    data: PathBuf,
}

fn start(join: Option<SocketAddr>, data: Option<PathBuf>) -> RingNode {
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let data = data.unwrap_or_else(|| temp_dir("offline-data"));
    let http_arg = http.to_string();
    let data_arg = data.display().to_string();
    let join_arg = join.map(|j| j.to_string());
    let mut args = vec!["--http", http_arg.as_str(), "--data", data_arg.as_str()];
    if let Some(j) = &join_arg {
        args.extend(["--join", j.as_str()]);
    }
    RingNode {
        node: Node::start(&args),
        http,
        data,
    }
}

fn status(node: &RingNode) -> Option<Value> {
    http_get(node.http, "/status").and_then(|body| serde_json::from_str(&body).ok())
}

/// Every live node's successor and predecessor are its true neighbours.
fn consistent(nodes: &[Option<RingNode>]) -> bool {
    let live: Vec<&RingNode> = nodes.iter().flatten().collect();
    let mut ids: Vec<String> = live.iter().map(|n| n.node.node_id.clone()).collect();
    ids.sort();
    live.iter().all(|n| {
        let Some(s) = status(n) else { return false };
        let me = ids.iter().position(|id| *id == n.node.node_id).unwrap_or(0);
        let next = &ids[(me + 1) % ids.len()];
        let prev = &ids[(me + ids.len() - 1) % ids.len()];
        s["successors"][0]["id"].as_str() == Some(next.as_str())
            && s["predecessor"]["id"].as_str() == Some(prev.as_str())
    })
}

fn wait_consistent(nodes: &[Option<RingNode>]) {
    wait_until(
        "a consistent ring",
        Duration::from_secs(30),
        || consistent(nodes),
        String::new,
    );
}

/// The live node responsible for `aor`.
fn holder_of(nodes: &[Option<RingNode>], aor: &str) -> usize {
    let key: String = Sha1::digest(aor.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut live: Vec<(String, usize)> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.as_ref().map(|n| (n.node.node_id.clone(), i)))
        .collect();
    live.sort();
    live.iter()
        .find(|(id, _)| *id >= key)
        .or(live.first())
        .map(|(_, i)| *i)
        .expect("a live node")
}

fn addr(nodes: &[Option<RingNode>], i: usize) -> SocketAddr {
    nodes[i].as_ref().expect("live node").node.addr
}

fn ring(n: usize) -> Vec<Option<RingNode>> {
    let first = start(None, None);
    let join = first.node.addr;
    let mut nodes = vec![Some(first)];
    for _ in 1..n {
        nodes.push(Some(start(Some(join), None)));
    }
    if n > 1 {
        wait_consistent(&nodes);
    }
    nodes
}

/// REGISTER `user` at `node` with `contact` for `expires` seconds: the status.
fn register(node: SocketAddr, user: &str, contact: &str, expires: u32) -> u16 {
    let phone = Phone::new("127.0.0.1", node);
    let request = phone
        .register(user, DOMAIN, "")
        .replace("Expires: 600", &format!("Expires: {expires}"))
        .replace(
            &format!("<sip:{user}@{}>", phone.addr()),
            &format!("<{contact}>"),
        );
    phone.ask(&request).map(|r| r.status).unwrap_or(0)
}

/// A MESSAGE from bob to `to` through `node`: the status and reason.
fn message(node: SocketAddr, to: &str) -> (u16, String) {
    let phone = Phone::new("127.0.0.1", node);
    let request = phone.request(
        "MESSAGE",
        &format!("bob@{DOMAIN}"),
        &format!("{to}@{DOMAIN}"),
        &format!("Date: {DATE}\r\n"),
    );
    match phone.ask(&request) {
        Some(r) => (r.status, r.text.lines().next().unwrap_or("").to_string()),
        None => (0, "no answer".to_string()),
    }
}

fn logs(nodes: &[Option<RingNode>]) -> String {
    nodes
        .iter()
        .flatten()
        .map(|n| format!("--- {}:\n{}", n.node.addr, tail(&n.node.log(), 30)))
        .collect()
}

/// Alice registers once (she is known), then leaves; bob's MESSAGE is kept.
fn leave_a_message(nodes: &[Option<RingNode>], at: usize, via: usize) {
    let gone = "sip:alice@127.0.0.1:9";
    assert_eq!(register(addr(nodes, at), "alice", gone, 600), 200);
    assert_eq!(register(addr(nodes, at), "alice", gone, 0), 200);
    let (status, line) = message(addr(nodes, via), "alice");
    assert_eq!(status, 202, "{line}\n{}", logs(nodes));
}

/// Alice registers at `at` with a SIPp UAS as contact, which must receive
/// bob's stored message.
fn receive_it(nodes: &[Option<RingNode>], at: usize) {
    let mut uas = SippBuilder::new("alice", "uas_message_stored.xml", Transport::Udp).spawn();
    uas.wait_listening();
    let contact = format!("sip:alice@127.0.0.1:{}", uas.port);
    assert_eq!(register(addr(nodes, at), "alice", &contact, 600), 200);
    uas.expect_success_with(1, || logs(nodes));
}

#[test]
fn a_stored_message_survives_the_holder_killed_and_reaches_her_at_another_node() {
    let mut nodes = ring(4);
    let holder = holder_of(&nodes, &format!("alice@{DOMAIN}"));
    let others: Vec<usize> = (0..4).filter(|i| *i != holder).collect();
    leave_a_message(&nodes, others[0], others[1]);
    // Nobody ever registered as carol: 404, nothing kept.
    assert_eq!(message(addr(&nodes, others[1]), "carol").0, 404);

    if let Some(mut gone) = nodes[holder].take() {
        gone.node.kill();
    }
    wait_consistent(&nodes);
    receive_it(&nodes, others[2]);
}

#[test]
fn a_stored_message_survives_every_node_restarted_in_turn() {
    let mut nodes = ring(3);
    leave_a_message(&nodes, 0, 1);
    for i in 0..nodes.len() {
        let Some(mut old) = nodes[i].take() else {
            continue;
        };
        assert!(
            old.node.terminate().success(),
            "{} did not stop",
            old.node.name
        );
        let join = nodes.iter().flatten().next().map(|n| n.node.addr);
        let data = old.data.clone();
        drop(old);
        nodes[i] = Some(start(join, Some(data)));
        wait_consistent(&nodes);
    }
    receive_it(&nodes, 2);
}

#[test]
fn the_twenty_first_message_beyond_the_bound_is_refused_with_a_reason() {
    let nodes = ring(1);
    let gone = "sip:dave@127.0.0.1:9";
    assert_eq!(register(addr(&nodes, 0), "dave", gone, 600), 200);
    assert_eq!(register(addr(&nodes, 0), "dave", gone, 0), 200);
    for n in 1..=20 {
        let (status, line) = message(addr(&nodes, 0), "dave");
        assert_eq!(status, 202, "message {n}: {line}");
    }
    let (status, line) = message(addr(&nodes, 0), "dave");
    assert_eq!(status, 486, "{line}");
    assert!(line.contains("mailbox full"), "{line}");
}
