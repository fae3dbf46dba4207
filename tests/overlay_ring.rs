//! The overlay with real processes: ten `p2psip` nodes on 127.0.0.1 form one
//! Chord ring over SIP; users registered through one node are called and
//! messaged through another (SIPp); the node holding a user's binding is
//! killed and the call still completes from a replica; a node stopped with
//! SIGTERM hands its items over; a restarted node rejoins from its saved peers.
//! A user whose three holders are all killed at once is still found while
//! the node she registered through lives (it stores her binding again).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sha1::{Digest, Sha1};

/// A node with its status page and data directory.
struct RingNode {
    node: Node,
    http: SocketAddr,
    data: PathBuf,
}

fn start(join: Option<SocketAddr>, data: Option<PathBuf>) -> RingNode {
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let data = data.unwrap_or_else(|| temp_dir("ring-data"));
    let http_arg = http.to_string();
    let data_arg = data.display().to_string();
    let join_arg = join.map(|j| j.to_string());
    // Three copies, so that killing a user's three holders kills them all
    // (the default keeps five).
    let mut args = vec![
        "--http",
        http_arg.as_str(),
        "--data",
        data_arg.as_str(),
        "--replicas",
        "3",
    ];
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

/// Polls `check` every 100 ms until it holds; panics after `limit`.
fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every live node's successor and predecessor are its true neighbours.
fn ring_is_consistent(nodes: &[Option<RingNode>]) -> bool {
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

/// The live node responsible for `aor`: the first Node-ID at or after SHA-1(aor).
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

/// Registers `user` at node `via` with `contact`.
fn register(nodes: &[Option<RingNode>], via: usize, user: &str, contact: &str) {
    SippBuilder::new(&format!("register-{user}"), "register.xml", Transport::Udp)
        .to(addr(nodes, via))
        .key("user", user)
        .key("domain", DOMAIN)
        .key("contact", contact)
        .key("expires", "3600")
        .spawn()
        .expect_success(1);
}

fn call(nodes: &[Option<RingNode>], via: usize, user: &str) {
    SippBuilder::new(&format!("call-{user}"), "uac_call.xml", Transport::Udp)
        .to(addr(nodes, via))
        .service(user)
        .key("domain", DOMAIN)
        .spawn()
        .expect_success(1);
}

fn message(nodes: &[Option<RingNode>], via: usize, user: &str) {
    SippBuilder::new(
        &format!("message-{user}"),
        "uac_message.xml",
        Transport::Udp,
    )
    .to(addr(nodes, via))
    .service(user)
    .key("domain", DOMAIN)
    .spawn()
    .expect_success(1);
}

/// A node index that is live and not in `avoid`.
fn other(nodes: &[Option<RingNode>], avoid: &[usize]) -> usize {
    (0..nodes.len())
        .find(|i| nodes[*i].is_some() && !avoid.contains(i))
        .expect("another live node")
}

#[test]
fn ten_nodes_form_a_ring_and_survive_failure() {
    let mut nodes: Vec<Option<RingNode>> = Vec::new();
    nodes.push(Some(start(None, None)));
    let bootstrap = addr(&nodes, 0);
    for _ in 1..10 {
        nodes.push(Some(start(Some(bootstrap), None)));
    }
    wait_until(
        "ten nodes agree on one ring",
        Duration::from_secs(90),
        || ring_is_consistent(&nodes),
    );

    // alice answers two calls; carol answers a message.
    let mut alice = SippBuilder::new("alice", "uas_call.xml", Transport::Udp)
        .calls(2)
        .timeout(Duration::from_secs(120))
        .spawn();
    alice.wait_listening();
    let mut carol = SippBuilder::new("carol", "uas_message.xml", Transport::Udp).spawn();
    carol.wait_listening();

    let holder = holder_of(&nodes, &format!("alice@{DOMAIN}"));
    let registrar = other(&nodes, &[holder]);
    register(
        &nodes,
        registrar,
        "alice",
        &Transport::Udp.contact("alice", alice.port),
    );
    register(
        &nodes,
        registrar,
        "carol",
        &Transport::Udp.contact("carol", carol.port),
    );

    // Registered through one node, called and messaged through another.
    let caller = other(&nodes, &[holder, registrar]);
    call(&nodes, caller, "alice");
    message(&nodes, caller, "carol");
    carol.expect_success(1);

    // The node holding alice's binding dies; a replica answers.
    nodes[holder].as_mut().expect("holder").node.kill();
    nodes[holder] = None;
    let second_caller = other(&nodes, &[registrar, caller]);
    call(&nodes, second_caller, "alice");
    alice.expect_success(2);

    // SIGTERM hands items over: dave's holder leaves, dave is still found.
    let mut dave = SippBuilder::new("dave", "uas_message.xml", Transport::Udp).spawn();
    dave.wait_listening();
    let dave_holder = holder_of(&nodes, &format!("dave@{DOMAIN}"));
    let dave_registrar = other(&nodes, &[dave_holder]);
    register(
        &nodes,
        dave_registrar,
        "dave",
        &Transport::Udp.contact("dave", dave.port),
    );
    let exit = nodes[dave_holder]
        .as_mut()
        .expect("dave's holder")
        .node
        .terminate();
    assert!(
        exit.success(),
        "SIGTERM should end the node cleanly: {exit}"
    );
    nodes[dave_holder] = None;
    let dave_caller = other(&nodes, &[dave_registrar]);
    message(&nodes, dave_caller, "dave");
    dave.expect_success(1);

    // A node restarted without --join rejoins through the peers it saved.
    let restart = other(&nodes, &[0]);
    let data = nodes[restart].as_ref().expect("node").data.clone();
    let exit = nodes[restart].as_mut().expect("node").node.terminate();
    assert!(exit.success(), "{exit}");
    assert!(
        data.join("peers.json").is_file(),
        "the node saved its peers"
    );
    nodes[restart] = None;
    nodes[restart] = Some(start(None, Some(data)));
    wait_until(
        "the restarted node is back in the ring",
        Duration::from_secs(60),
        || ring_is_consistent(&nodes),
    );
    let back = status(nodes[restart].as_ref().expect("restarted")).expect("status");
    assert_eq!(back["joined"], Value::Bool(true), "{back}");
    for node in nodes.iter_mut().flatten() {
        node.node.assert_alive();
    }
}

/// The `r` live nodes that should hold `aor`: its successor and the next ones.
fn holders_of(nodes: &[Option<RingNode>], aor: &str, r: usize) -> Vec<usize> {
    let mut live: Vec<(String, usize)> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.as_ref().map(|n| (n.node.node_id.clone(), i)))
        .collect();
    live.sort();
    let first = holder_of(nodes, aor);
    let at = live.iter().position(|(_, i)| *i == first).unwrap_or(0);
    (0..r.min(live.len()))
        .map(|k| live[(at + k) % live.len()].1)
        .collect()
}

/// Items held by the live nodes, primary and replica.
fn items_held(nodes: &[Option<RingNode>]) -> u64 {
    nodes
        .iter()
        .flatten()
        .filter_map(status)
        .map(|s| {
            s["ring"]["items_primary"].as_u64().unwrap_or(0)
                + s["ring"]["items_replica"].as_u64().unwrap_or(0)
                + s["items_primary"].as_u64().unwrap_or(0)
                + s["items_replica"].as_u64().unwrap_or(0)
        })
        .sum()
}

#[test]
fn a_user_outlives_all_her_holders_while_her_registrar_lives() {
    let mut nodes: Vec<Option<RingNode>> = Vec::new();
    nodes.push(Some(start(None, None)));
    let bootstrap = addr(&nodes, 0);
    for _ in 1..8 {
        nodes.push(Some(start(Some(bootstrap), None)));
    }
    wait_until(
        "eight nodes agree on one ring",
        Duration::from_secs(90),
        || ring_is_consistent(&nodes),
    );
    // Erin's phone must outlive the holders' death and the ring's healing
    // (up to 60 + 75 s on a loaded machine), not SIPp's default 25 s.
    let mut erin = SippBuilder::new("erin", "uas_message.xml", Transport::Udp)
        .timeout(Duration::from_secs(200))
        .spawn();
    erin.wait_listening();
    let aor = format!("erin@{DOMAIN}");
    let holders = holders_of(&nodes, &aor, 3);
    let registrar = other(&nodes, &holders);
    register(
        &nodes,
        registrar,
        "erin",
        &Transport::Udp.contact("erin", erin.port),
    );
    wait_until(
        "erin's binding on her holders",
        Duration::from_secs(10),
        || items_held(&nodes) >= 3,
    );

    // All three holders die at once; her registrar lives and stores her
    // binding again on the key's new successor.
    for h in &holders {
        nodes[*h].as_mut().expect("holder").node.kill();
        nodes[*h] = None;
    }
    wait_until(
        "the five survivors agree on one ring",
        Duration::from_secs(60),
        || ring_is_consistent(&nodes),
    );
    // Her registrar notices within a republish period (5 s) or two; until
    // then a message may get 404. The bound is generous: on a loaded
    // 2-core machine the probes of the dead holders time out slowly.
    let caller = other(&nodes, &[registrar]);
    common::wait_until(
        "a message to erin through another node arrives",
        Duration::from_secs(75),
        || {
            SippBuilder::new("message-erin", "uac_message.xml", Transport::Udp)
                .to(addr(&nodes, caller))
                .service("erin")
                .key("domain", DOMAIN)
                .spawn()
                .finish()
                .successful
                == 1
        },
        || {
            // What the live nodes said of the ring (not their transactions).
            let mut out = String::new();
            for (i, n) in nodes.iter().enumerate() {
                let Some(n) = n else { continue };
                let role = if i == registrar {
                    " (registrar)"
                } else if i == caller {
                    " (caller)"
                } else {
                    ""
                };
                let log = n.node.log();
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| !l.contains("sip::transaction"))
                    .collect();
                out.push_str(&format!(
                    "--- node {i}{role} {} status {}\n{}\n",
                    n.node.node_id,
                    status(n).map(|s| s.to_string()).unwrap_or_default(),
                    tail(&lines.join("\n"), 40)
                ));
            }
            out
        },
    );
    erin.expect_success(1);
    for node in nodes.iter_mut().flatten() {
        node.node.assert_alive();
    }
}
