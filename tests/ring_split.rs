//! A ring of real processes split in three and healed (issue 11, "partitions
//! heal"): nine `p2psip` nodes in a network namespace of the test's own, on
//! three groups of loopback addresses (127.0.1.x, 127.0.2.x, 127.0.3.x, one
//! group per part, scattered on the circle by their Node-IDs). iptables DROP
//! rules inside that namespace between the groups cut the network; each part
//! becomes a ring of its own; the rules are deleted and the parts must be one
//! ring again within five stabilization periods. A user registered before the
//! split is then found (a MESSAGE reaches her) through every node.
//!
//! The rules live only in the test's namespace: they go with it when the
//! namespace is deleted (its guard, also on panic) and touch nothing on the
//! host. Needs root, iproute2 and iptables.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::*;
use serde_json::Value;

/// The ring's stabilize period (`RingConfig::default().stabilize_every`).
const STABILIZE: Duration = Duration::from_secs(1);
const PARTS: usize = 3;
const PER_PART: usize = 3;

struct SplitNode {
    node: Node,
    http: SocketAddr,
    part: usize,
}

/// Node `i` lives in part `i % PARTS` at 127.0.(part+1).(i/PARTS+1).
fn address(i: usize) -> (usize, String) {
    let part = i % PARTS;
    (part, format!("127.0.{}.{}", part + 1, i / PARTS + 1))
}

fn start(ns: &Netns, i: usize, join: Option<SocketAddr>) -> SplitNode {
    let (part, ip) = address(i);
    let sip = format!("{ip}:5060");
    let http: SocketAddr = format!("{ip}:8080").parse().expect("http addr");
    let mut args = vec![
        "--sip".to_string(),
        sip,
        "--http".to_string(),
        http.to_string(),
        "--domain".to_string(),
        DOMAIN.to_string(),
    ];
    if let Some(j) = join {
        args.extend(["--join".to_string(), j.to_string()]);
    }
    let node = Node::builder()
        .name(&format!("node{i}"))
        .args(args)
        .in_netns(ns)
        .spawn();
    SplitNode { node, http, part }
}

fn status(ns: &Netns, n: &SplitNode) -> Option<Value> {
    ns.http_get_direct(n.http, "/status")
        .and_then(|body| serde_json::from_str(&body).ok())
}

/// Every node of `group` has as successor and predecessor its true
/// neighbours among the nodes of `group`.
fn ring_of(ns: &Netns, group: &[&SplitNode]) -> bool {
    let mut ids: Vec<&str> = group.iter().map(|n| n.node.node_id.as_str()).collect();
    ids.sort();
    group.iter().all(|n| {
        let Some(s) = status(ns, n) else { return false };
        let me = ids.iter().position(|id| *id == n.node.node_id).unwrap_or(0);
        let next = ids[(me + 1) % ids.len()];
        let prev = ids[(me + ids.len() - 1) % ids.len()];
        s["successors"][0]["id"].as_str() == Some(next)
            && s["predecessor"]["id"].as_str() == Some(prev)
    })
}

/// `n`'s successor and predecessor (when it has them) are in its own part.
fn within_part(ns: &Netns, nodes: &[SplitNode], n: &SplitNode) -> bool {
    let Some(s) = status(ns, n) else { return false };
    let part_of = |id: Option<&str>| {
        id.and_then(|id| nodes.iter().find(|m| m.node.node_id == id))
            .map(|m| m.part)
    };
    let succ = part_of(s["successors"][0]["id"].as_str());
    let pred = part_of(s["predecessor"]["id"].as_str());
    succ.is_none_or(|p| p == n.part) && pred.is_none_or(|p| p == n.part)
}

fn whole(nodes: &[SplitNode]) -> Vec<&SplitNode> {
    nodes.iter().collect()
}

fn part(nodes: &[SplitNode], p: usize) -> Vec<&SplitNode> {
    nodes.iter().filter(|n| n.part == p).collect()
}

/// Each node's successor and predecessor, for a failure message.
fn views(ns: &Netns, nodes: &[SplitNode]) -> String {
    let mut out = String::new();
    for n in nodes {
        let s = status(ns, n).unwrap_or(Value::Null);
        out.push_str(&format!(
            "{} part {} {}: succ {} pred {}\n",
            n.node.name,
            n.part,
            &n.node.node_id[..8],
            s["successors"][0]["id"].as_str().unwrap_or("-"),
            s["predecessor"]["id"].as_str().unwrap_or("-"),
        ));
    }
    out
}

/// The DROP rules between the parts, in the test's namespace.
struct Cut<'a> {
    ns: &'a Netns,
    rules: Vec<Vec<String>>,
}

impl<'a> Cut<'a> {
    fn new(ns: &'a Netns) -> Cut<'a> {
        let mut rules = Vec::new();
        for a in 0..PARTS {
            for b in 0..PARTS {
                if a != b {
                    rules.push(vec![
                        "INPUT".to_string(),
                        "-s".to_string(),
                        format!("127.0.{}.0/24", a + 1),
                        "-d".to_string(),
                        format!("127.0.{}.0/24", b + 1),
                        "-j".to_string(),
                        "DROP".to_string(),
                    ]);
                }
            }
        }
        let cut = Cut { ns, rules };
        for rule in &cut.rules {
            cut.iptables("-A", rule);
        }
        cut
    }

    fn iptables(&self, op: &str, rule: &[String]) {
        let mut args = vec!["iptables", "-w", op];
        args.extend(rule.iter().map(String::as_str));
        let (status, _, err) = self.ns.run(&args);
        assert!(status.success(), "iptables {op} {rule:?}: {err}");
    }

    /// Deletes the rules: the parts see each other again.
    fn heal(mut self) {
        for rule in std::mem::take(&mut self.rules) {
            self.iptables("-D", &rule);
        }
    }
}

/// Sends a MESSAGE to `user` through `via`; whether it got its 200.
fn message(ns: &Netns, via: SocketAddr, user: &str) -> bool {
    SippBuilder::new(
        &format!("message-{user}"),
        "uac_message.xml",
        Transport::Udp,
    )
    .in_netns(ns)
    .to(via)
    .service(user)
    .key("domain", DOMAIN)
    .spawn()
    .finish()
    .successful
        == 1
}

#[test]
fn a_ring_of_processes_split_in_three_is_one_ring_again_after_healing() {
    require_tool("iptables", "iptables");
    let ns = Netns::new("split");
    let mut nodes = vec![start(&ns, 0, None)];
    let bootstrap = nodes[0].node.addr;
    for i in 1..PARTS * PER_PART {
        nodes.push(start(&ns, i, Some(bootstrap)));
    }
    let logs = |nodes: &[SplitNode]| {
        nodes
            .iter()
            .map(|n| format!("--- {}\n{}", n.node.name, tail(&n.node.log(), 15)))
            .collect::<String>()
    };
    wait_until(
        "nine nodes agree on one ring",
        Duration::from_secs(90),
        || ring_of(&ns, &whole(&nodes)),
        || views(&ns, &nodes),
    );

    // erin answers MESSAGEs: one through every node after the healing.
    let mut erin = SippBuilder::new("erin", "uas_message.xml", Transport::Udp)
        .in_netns(&ns)
        .calls(nodes.len() as u32)
        // She outlives the cut and the healing (bounds 120 + 30 + 60 s).
        .timeout(Duration::from_secs(300))
        .spawn();
    erin.wait_listening();
    let registrar = nodes[1].node.addr;
    SippBuilder::new("register-erin", "register.xml", Transport::Udp)
        .in_netns(&ns)
        .to(registrar)
        .key("user", "erin")
        .key("domain", DOMAIN)
        .key("contact", &Transport::Udp.contact("erin", erin.port))
        .key("expires", "3600")
        .spawn()
        .expect_success(1);

    // Cut: each part must become a ring of its own.
    let cut = Cut::new(&ns);
    let cut_at = Instant::now();
    wait_until(
        "each of the three parts is a ring of its own",
        Duration::from_secs(120),
        || (0..PARTS).all(|p| ring_of(&ns, &part(&nodes, p))),
        || views(&ns, &nodes),
    );

    eprintln!("three rings {:?} after the cut", cut_at.elapsed());
    // The parts stay apart while the cut lasts (ten periods more): each
    // has lost sight of the others for good, not for a retransmission.
    // (A node may lose its predecessor for a moment, a ping late on this
    // loaded machine; it must never name a node of another part.)
    let apart = Instant::now() + STABILIZE * 10;
    while Instant::now() < apart {
        assert!(
            nodes.iter().all(|n| within_part(&ns, &nodes, n)),
            "a node sees across the cut\n{}",
            views(&ns, &nodes)
        );
    }
    wait_until(
        "each part is a ring of its own at the end of the cut",
        Duration::from_secs(30),
        || (0..PARTS).all(|p| ring_of(&ns, &part(&nodes, p))),
        || views(&ns, &nodes),
    );

    // Heal: one ring within five stabilization periods.
    cut.heal();
    let healed = Instant::now();
    wait_until(
        "one ring again after healing",
        Duration::from_secs(60),
        || ring_of(&ns, &whole(&nodes)),
        || format!("{}{}", views(&ns, &nodes), logs(&nodes)),
    );
    let took = healed.elapsed();
    eprintln!("one ring {took:?} after healing");
    assert!(
        took <= STABILIZE * 5,
        "one ring only {took:?} after healing (more than five stabilization periods)\n{}",
        views(&ns, &nodes)
    );

    // erin, registered before the split, is found through every node.
    for n in &nodes {
        assert!(
            message(&ns, n.node.addr, "erin"),
            "a MESSAGE to erin through {} did not arrive\n{}",
            n.node.name,
            logs(&nodes)
        );
    }
    erin.expect_success(nodes.len() as u64);
    for n in &mut nodes {
        n.node.assert_alive();
    }
}
