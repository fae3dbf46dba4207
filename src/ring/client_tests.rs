//! Clients and super-nodes in the simulator: a client behind NAT stays
//! one and reaches the ring through its super-node; a reachable one is
//! promoted; a super-node bounds its clients; a client whose super-node
//! dies attaches to another member.

use std::time::Duration;

use super::sim::{Sim, SimConfig};
use super::tests::item;
use super::*;

fn sim(promote_after: Option<Duration>, max_clients: usize) -> Sim {
    let mut config = SimConfig::default();
    config.ring.client_refresh = Duration::from_secs(1);
    config.ring.promote_after = promote_after;
    config.ring.max_clients = max_clients;
    Sim::new(config)
}

/// Three members in a stable ring.
fn ring_of_three(s: &mut Sim) -> Vec<usize> {
    let a = s.add_node();
    let b = s.add_node();
    let c = s.add_node();
    s.join(b, a);
    s.join(c, a);
    s.run_for(Duration::from_secs(10));
    assert!(s.ring_consistent());
    vec![a, b, c]
}

/// No member names `node` as predecessor, successor or finger.
fn named_by_nobody(s: &Sim, members: &[usize], node: usize) -> bool {
    let addr = s.nodes[node].addr;
    members.iter().all(|m| !s.nodes[*m].ring.knows(addr))
}

fn fetch_names(s: &mut Sim, node: usize, key: &str) -> Vec<String> {
    let op = s.fetch(node, NodeId::of_key(key));
    s.run_for(Duration::from_secs(5));
    match s.take_result(node, op) {
        Some(RingEvent::FetchDone {
            result: Ok(items), ..
        }) => items.into_iter().map(|i| i.name).collect(),
        other => panic!("fetch: {other:?}"),
    }
}

#[test]
fn a_client_behind_nat_stays_one_and_stores_through_its_super_node() {
    let mut s = sim(Some(Duration::from_secs(3)), 64);
    let members = ring_of_three(&mut s);
    let client = s.add_node();
    s.nodes[client].nat = true;
    s.attach(client, &members[..1], true);
    s.run_for(Duration::from_secs(10));
    let ring = &s.nodes[client].ring;
    assert!(ring.is_client(), "a node behind NAT stays a client");
    assert_eq!(ring.role(), "client");
    assert_eq!(
        ring.super_node().map(|p| p.addr),
        Some(s.nodes[members[0]].addr)
    );
    assert_eq!(s.nodes[members[0]].ring.role(), "super");
    assert_eq!(s.nodes[members[0]].ring.client_count(), 1);
    assert!(named_by_nobody(&s, &members, client));

    // Its store goes through the super-node, which writes it in its name.
    let it = item("carol@overlay.test", "sip:carol@10.9.9.9", &s);
    let op = s.store(client, it.clone());
    s.run_for(Duration::from_secs(5));
    assert!(
        matches!(
            s.take_result(client, op),
            Some(RingEvent::StoreDone { result: Ok(()), .. })
        ),
        "store through the super-node"
    );
    assert_eq!(
        s.nodes[client].ring.all_items().count(),
        0,
        "a client holds nothing"
    );
    assert_eq!(s.holders_of(it.key, &it.name).len(), 3);
    // A lookup and a fetch from the client are answered through it too.
    let names = fetch_names(&mut s, client, "carol@overlay.test");
    assert_eq!(names, vec![it.name.clone()]);
    s.lookup(client, it.key);
    s.run_for(Duration::from_secs(5));
    let record = s.lookup_records.last().expect("the lookup ended");
    assert!(
        record.correct(),
        "lookup through the super-node: {record:?}"
    );

    // The client dies: nothing is lost.
    s.crash(client);
    s.run_for(Duration::from_secs(30));
    assert_eq!(
        fetch_names(&mut s, members[2], "carol@overlay.test"),
        vec![it.name]
    );
    assert_eq!(
        s.nodes[members[0]].ring.client_count(),
        0,
        "a dead client is forgotten"
    );
    assert_eq!(s.nodes[members[0]].ring.role(), "member");
}

#[test]
fn a_reachable_client_is_promoted_after_the_promotion_time_and_holds_keys() {
    let mut s = sim(Some(Duration::from_secs(20)), 64);
    let members = ring_of_three(&mut s);
    for n in 0..40 {
        let it = item(&format!("user{n}@overlay.test"), &format!("sip:u{n}@h"), &s);
        s.store(members[n % 3], it);
    }
    s.run_for(Duration::from_secs(5));
    let client = s.add_node();
    s.attach(client, &members[1..2], false);
    s.run_for(Duration::from_secs(15));
    assert!(
        s.nodes[client].ring.is_client(),
        "not before the promotion time"
    );
    assert!(named_by_nobody(&s, &members, client));
    s.run_for(Duration::from_secs(30));
    s.count_promoted();
    let ring = &s.nodes[client].ring;
    assert!(!ring.is_client(), "promoted");
    assert_eq!(ring.role(), "member");
    assert!(ring.is_joined());
    assert!(s.ring_consistent());
    assert!(
        s.nodes[client].ring.all_items().count() > 0,
        "it holds keys now"
    );
}

#[test]
fn auto_joins_at_once_when_reachable() {
    let mut s = sim(None, 64);
    let members = ring_of_three(&mut s);
    let node = s.add_node();
    s.attach(node, &members[..1], true);
    s.run_for(Duration::from_secs(10));
    s.count_promoted();
    assert!(!s.nodes[node].ring.is_client());
    assert!(s.ring_consistent());
}

#[test]
fn a_super_node_refuses_clients_beyond_its_bound() {
    let mut s = sim(None, 1);
    let members = ring_of_three(&mut s);
    let first = s.add_node();
    let second = s.add_node();
    s.nodes[first].nat = true;
    s.nodes[second].nat = true;
    s.attach(first, &members[..1], false);
    s.run_for(Duration::from_secs(3));
    s.attach(second, &[members[0], members[1]], false);
    s.run_for(Duration::from_secs(5));
    assert_eq!(s.nodes[members[0]].ring.client_count(), 1);
    assert!(s.nodes[members[0]].ring.clients_refused() >= 1);
    assert_eq!(
        s.nodes[second].ring.super_node().map(|p| p.addr),
        Some(s.nodes[members[1]].addr),
        "the refused client attaches to the next member"
    );
}

#[test]
fn a_client_whose_super_node_dies_attaches_to_another_member() {
    let mut s = sim(None, 64);
    let members = ring_of_three(&mut s);
    let client = s.add_node();
    s.nodes[client].nat = true;
    s.attach(client, &members[..1], false);
    s.run_for(Duration::from_secs(5));
    let it = item("dave@overlay.test", "sip:dave@10.9.9.8", &s);
    let op = s.store(client, it.clone());
    s.run_for(Duration::from_secs(5));
    assert!(matches!(
        s.take_result(client, op),
        Some(RingEvent::StoreDone { result: Ok(()), .. })
    ));
    s.crash(members[0]);
    s.run_for(Duration::from_secs(20));
    let sup = s.nodes[client].ring.super_node().map(|p| p.addr);
    assert!(
        sup == Some(s.nodes[members[1]].addr) || sup == Some(s.nodes[members[2]].addr),
        "attached to a live member: {sup:?}"
    );
    assert_eq!(
        fetch_names(&mut s, client, "dave@overlay.test"),
        vec![it.name]
    );
}
