//! Small rings driven through the simulator.

use std::time::Duration;

use super::sim::{Sim, SimConfig};
use super::*;

fn sim() -> Sim {
    Sim::new(SimConfig::default())
}

/// A binding item under SHA-1(`key`) (also for `client_tests.rs`).
pub(super) fn item(key: &str, name: &str, sim: &Sim) -> Item {
    Item {
        key: NodeId::of_key(key),
        name: name.to_string(),
        kind: "binding".to_string(),
        value: name.as_bytes().to_vec(),
        version: 1,
        expires: sim.now() + Duration::from_secs(3600),
        writer: Default::default(),
        signature: Vec::new(),
        proof: None,
    }
}

#[test]
fn ring_of_one_answers_itself() {
    let mut s = sim();
    let a = s.add_node();
    let key = NodeId::of_key("alice@overlay.test");
    s.lookup(a, key);
    s.run_for(Duration::from_millis(10));
    let r = &s.lookup_records[0];
    assert_eq!(r.found, Some(s.nodes[a].ring.me()));
    assert_eq!(r.hops, 0);
    let mut it = item("alice@overlay.test", "sip:alice@192.0.2.1", &s);
    // The ring writes it in the storing node's name.
    it.writer = s.nodes[a].ring.me().id;
    let op = s.store(a, it.clone());
    assert!(matches!(
        s.take_result(a, op),
        Some(RingEvent::StoreDone { result: Ok(()), .. })
    ));
    // Its own holder keeps no second copy to store again.
    assert_eq!(s.nodes[a].ring.kept_items(), 0);
    let op = s.fetch(a, it.key);
    match s.take_result(a, op) {
        Some(RingEvent::FetchDone {
            result: Ok(items), ..
        }) => assert_eq!(items, vec![it]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn two_and_three_nodes_stabilize() {
    let mut s = sim();
    let a = s.add_node();
    let b = s.add_node();
    s.join(b, a);
    s.run_for(Duration::from_secs(5));
    assert!(s.ring_consistent(), "two nodes");
    assert_eq!(s.nodes[a].ring.successor(), s.nodes[b].ring.me());
    assert_eq!(s.nodes[b].ring.successor(), s.nodes[a].ring.me());
    let c = s.add_node();
    s.join(c, b);
    s.run_for(Duration::from_secs(5));
    assert!(s.ring_consistent(), "three nodes");
    for n in [a, b, c] {
        assert_eq!(s.nodes[n].ring.successors().len(), 2);
        assert!(s.nodes[n].ring.status().joined);
    }
    for _ in 0..50 {
        let key = s.random_key();
        let from = s.random_live();
        s.lookup(from, key);
    }
    s.run_for(Duration::from_secs(2));
    assert_eq!(s.lookup_records.len(), 50);
    assert!(s.lookup_records.iter().all(|r| r.correct()));
}

#[test]
fn store_fetch_replicate_and_leave() {
    let mut s = sim();
    s.grow(5, Duration::from_millis(200), Duration::from_secs(10));
    assert!(s.ring_consistent());
    let nodes = s.live_nodes();
    let it = item("bob@overlay.test", "sip:bob@192.0.2.7", &s);
    let op = s.store(nodes[0], it.clone());
    s.run_for(Duration::from_secs(1));
    assert!(matches!(
        s.take_result(nodes[0], op),
        Some(RingEvent::StoreDone { result: Ok(()), .. })
    ));
    let mut holders = s.holders_of(it.key, &it.name);
    holders.sort();
    let mut want = s.true_holders(it.key, 3);
    want.sort();
    assert_eq!(holders, want, "primary and two replicas");

    // A newer version replaces the old one.
    let mut v2 = it.clone();
    v2.version = 2;
    v2.value = b"two".to_vec();
    v2.writer = s.nodes[nodes[1]].ring.me().id;
    s.store(nodes[1], v2.clone());
    s.run_for(Duration::from_secs(1));
    let op = s.fetch(nodes[2], it.key);
    s.run_for(Duration::from_secs(1));
    match s.take_result(nodes[2], op) {
        Some(RingEvent::FetchDone {
            result: Ok(items), ..
        }) => assert_eq!(items, vec![v2.clone()]),
        other => panic!("{other:?}"),
    }

    // The primary leaves gracefully: the item stays on three live nodes.
    let primary = s.true_holders(it.key, 1)[0];
    s.leave(primary);
    s.run_for(Duration::from_secs(5));
    assert!(!s.nodes[primary].alive, "left");
    assert!(s.ring_consistent());
    let mut holders = s.holders_of(it.key, &it.name);
    holders.sort();
    let mut want = s.true_holders(it.key, 3);
    want.sort();
    assert_eq!(holders, want, "re-replicated after leave");

    // Remove deletes it everywhere.
    let from = s.live_nodes()[0];
    let op = s.remove(from, it.key, it.name.clone());
    s.run_for(Duration::from_secs(1));
    assert!(matches!(
        s.take_result(from, op),
        Some(RingEvent::StoreDone { result: Ok(()), .. })
    ));
    assert!(s.holders_of(it.key, &it.name).is_empty());
}

#[test]
fn join_takes_over_keys_and_crash_keeps_them() {
    let mut s = sim();
    s.grow(8, Duration::from_millis(200), Duration::from_secs(10));
    let first = s.live_nodes()[0];
    let mut items = Vec::new();
    for k in 0..40 {
        let it = item(&format!("user{k}@overlay.test"), "sip:u@192.0.2.9", &s);
        s.store(first, it.clone());
        items.push(it);
    }
    s.run_for(Duration::from_secs(2));
    s.grow(4, Duration::from_millis(500), Duration::from_secs(10));
    assert!(s.ring_consistent());
    for it in &items {
        let holders = s.holders_of(it.key, &it.name);
        for h in s.true_holders(it.key, 3) {
            assert!(
                holders.contains(&h),
                "{h} should hold {:?} after joins",
                it.key
            );
        }
    }
    // Crash two neighbours: items they held are still fetchable.
    let victim = s.true_holders(items[0].key, 1)[0];
    let next = s.true_holders(items[0].key, 2)[1];
    s.crash(victim);
    s.crash(next);
    s.run_for(Duration::from_secs(10));
    assert!(s.ring_consistent());
    for it in &items {
        let from = s.random_live();
        let op = s.fetch(from, it.key);
        s.run_for(Duration::from_secs(1));
        match s.take_result(from, op) {
            Some(RingEvent::FetchDone {
                result: Ok(got), ..
            }) => {
                assert_eq!(got.len(), 1, "{:?}", it.key)
            }
            other => panic!("{other:?}"),
        }
        let holders = s.holders_of(it.key, &it.name);
        assert!(holders.len() >= 3, "re-replicated: {holders:?}");
    }
}

#[test]
fn iterative_lookups_agree() {
    let mut cfg = SimConfig::default();
    cfg.ring.iterative = true;
    let mut s = Sim::new(cfg);
    s.grow(30, Duration::from_millis(100), Duration::from_secs(30));
    assert!(s.ring_consistent());
    let stats = s.lookup_batch(200, Duration::ZERO, Duration::from_secs(10));
    assert_eq!(stats.correct, 200, "{stats:?}");
}

#[test]
fn neighbours_leaving_together_lose_nothing() {
    let mut s = sim();
    s.grow(12, Duration::from_millis(100), Duration::from_secs(15));
    let first = s.live_nodes()[0];
    let items: Vec<Item> = (0..60)
        .map(|k| item(&format!("n{k}@overlay.test"), "sip:n@192.0.2.3", &s))
        .collect();
    for it in &items {
        s.store(first, it.clone());
    }
    s.run_for(Duration::from_secs(2));
    // A node, its successor and the one after leave at the same instant.
    let a = s.true_holders(items[0].key, 3);
    for n in &a {
        s.leave(*n);
    }
    s.run_for(Duration::from_secs(10));
    assert!(a.iter().all(|n| !s.nodes[*n].alive));
    assert!(s.ring_consistent(), "{:?}", s.inconsistencies());
    for it in &items {
        let on = s.holders_of(it.key, &it.name);
        for h in s.true_holders(it.key, 3) {
            assert!(on.contains(&h), "{:?} missing on {h}: {on:?}", it.key);
        }
    }
}

#[test]
fn pending_operations_fail_when_leaving() {
    let mut s = sim();
    s.grow(3, Duration::from_millis(100), Duration::from_secs(5));
    let n = s.live_nodes()[0];
    let op = s.fetch(n, NodeId::of_key("x@overlay.test"));
    s.leave(n);
    s.run_for(Duration::from_secs(3));
    assert!(matches!(
        s.take_result(n, op),
        Some(RingEvent::FetchDone { .. })
    ));
    let now = s.now();
    let late = s.nodes[n].ring.lookup(NodeId::of_key("y"), now);
    assert_eq!(
        s.nodes[n].ring.poll_event(),
        Some(RingEvent::LookupDone {
            op: late,
            result: Err(RingError::Left)
        })
    );
}

#[test]
fn live_in_takes_the_arc_and_skips_expired_items() {
    let s = sim();
    let now = s.now();
    let mut storage = super::storage::Storage::default();
    let mut keep = |key: &str, expires: std::time::Instant| {
        let mut it = item(key, key, &s);
        it.expires = expires;
        storage
            .items
            .entry(it.key)
            .or_insert_with(super::KeyItems::none)
            .insert(it);
    };
    keep("a@overlay.test", now + Duration::from_secs(60));
    keep("b@overlay.test", now + Duration::from_secs(60));
    keep("gone@overlay.test", now);
    let a = NodeId::of_key("a@overlay.test");
    let b = NodeId::of_key("b@overlay.test");
    // The whole circle: every live item, the expired one left out.
    assert_eq!(storage.live_in(a, a, now).len(), 2);
    // (a, b] holds b and not a; (b, a] the other way round.
    let names = |v: Vec<Item>| v.into_iter().map(|i| i.name).collect::<Vec<_>>();
    assert_eq!(names(storage.live_in(a, b, now)), vec!["b@overlay.test"]);
    assert_eq!(names(storage.live_in(b, a, now)), vec!["a@overlay.test"]);
}

#[test]
fn poll_timeout_is_the_earliest_timer_and_none_once_left() {
    let now = std::time::Instant::now();
    let config = RingConfig::default();
    let mut ring = Ring::new("10.0.0.1:5060".parse().expect("addr"), config.clone(), now);
    let first = ring.poll_timeout().expect("timers armed");
    let period = config
        .stabilize_every
        .max(config.fix_fingers_every)
        .max(config.check_predecessor_every);
    assert!(first >= now && first < now + period);
    // Nothing is due before the earliest deadline, so nothing is sent.
    ring.handle_timeout(now);
    assert!(ring.poll_transmit().is_none());
    assert_eq!(ring.poll_timeout(), Some(first));
    // A ring of one leaves at once and then wants no more wake-ups.
    ring.leave(now);
    assert_eq!(ring.poll_event(), Some(RingEvent::Left));
    assert_eq!(ring.poll_timeout(), None);
}

/// What the requests in flight for operation `op` at `node` are: "route"
/// (a lookup) or "holder" (straight to a holder).
fn op_requests(s: &Sim, node: usize, op: OpId) -> Vec<&'static str> {
    use super::requests::{Parent, Pending};
    let mut out: Vec<&'static str> = s.nodes[node]
        .ring
        .requests
        .pending
        .values()
        .filter_map(|e| match &e.pending {
            Pending::Route {
                parent: Parent::Op(o),
                ..
            }
            | Pending::Await {
                parent: Parent::Op(o),
                ..
            } if *o == op => Some("route"),
            Pending::OpRequest { op: o, .. } if *o == op => Some("holder"),
            _ => None,
        })
        .collect();
    out.sort_unstable();
    out
}

/// A settled ring of 12, a key, and a node that neither holds it nor is
/// next to its holder (so that its own successor cannot answer for it).
fn ring_and_a_distant_node() -> (Sim, Item, usize) {
    let mut s = sim();
    s.grow(12, Duration::from_millis(200), Duration::from_secs(10));
    assert!(s.ring_consistent());
    for k in 0.. {
        let it = item(&format!("carol{k}@overlay.test"), "sip:carol@192.0.2.3", &s);
        let holders = s.true_holders(it.key, 4);
        if let Some(&a) = s.live_nodes().iter().find(|n| !holders.contains(n)) {
            // Nor the node just before the primary (its successor would answer).
            let next = s.true_holders(s.nodes[a].ring.me().id, 2)[1];
            if next != holders[0] {
                return (s, it, a);
            }
        }
        assert!(k < 100, "no key found");
    }
    unreachable!()
}

#[test]
fn a_fetch_after_a_store_goes_straight_to_the_holder() {
    let (mut s, it, a) = ring_and_a_distant_node();
    let primary = s.true_holders(it.key, 1)[0];
    let op = s.store(a, it.clone());
    assert_eq!(
        op_requests(&s, a, op),
        ["route"],
        "the first op looks the key up"
    );
    s.run_for(Duration::from_millis(500));
    assert!(matches!(
        s.take_result(a, op),
        Some(RingEvent::StoreDone { result: Ok(()), .. })
    ));
    assert_eq!(
        s.nodes[a].ring.routes.len(),
        1,
        "the holder's answer is remembered"
    );

    let op = s.fetch(a, it.key);
    assert_eq!(
        op_requests(&s, a, op),
        ["holder"],
        "no lookup: straight to the holder"
    );
    let to = s.nodes[a]
        .ring
        .requests
        .pending
        .values()
        .find_map(|e| match &e.pending {
            super::requests::Pending::OpRequest { op: o, to } if *o == op => Some(*to),
            _ => None,
        });
    assert_eq!(to, Some(s.nodes[primary].ring.me()));
    s.run_for(Duration::from_millis(500));
    match s.take_result(a, op) {
        Some(RingEvent::FetchDone {
            result: Ok(items), ..
        }) => assert_eq!(items.len(), 1),
        other => panic!("{other:?}"),
    }

    // Two stabilize periods later the route is stale: a lookup again.
    s.run_for(Duration::from_secs(3));
    let op = s.fetch(a, it.key);
    assert_eq!(op_requests(&s, a, op), ["route"]);
    s.run_for(Duration::from_millis(500));
    assert!(matches!(
        s.take_result(a, op),
        Some(RingEvent::FetchDone { result: Ok(_), .. })
    ));
}

#[test]
fn the_route_cache_is_cleared_when_the_ring_moves_next_to_us() {
    let (mut s, it, a) = ring_and_a_distant_node();
    s.store(a, it.clone());
    s.run_for(Duration::from_millis(500));
    assert_eq!(s.nodes[a].ring.routes.len(), 1);
    let old = s.nodes[a].ring.successor();
    let succ = (0..s.nodes.len())
        .find(|&n| s.nodes[n].ring.me() == old)
        .expect("successor");
    s.crash(succ);
    let moved = s.run_until_cond(Duration::from_millis(10), Duration::from_secs(5), |s| {
        s.nodes[a].ring.successor() != old
    });
    assert!(moved, "the crashed successor was replaced");
    assert_eq!(
        s.nodes[a].ring.routes.len(),
        0,
        "cleared with the successor change"
    );
}

#[test]
fn a_cached_route_to_itself_is_taken_only_while_primary() {
    let (mut s, it, a) = ring_and_a_distant_node();
    let me = s.nodes[a].ring.me();
    let now = s.now();
    // Not primary for it.key: a route to itself must not be taken.
    s.nodes[a].ring.routes.learn(it.key, me, Vec::new(), now);
    let op = s.fetch(a, it.key);
    assert!(
        s.take_result(a, op).is_none(),
        "not answered from its own empty store"
    );
    assert!(!op_requests(&s, a, op).is_empty());
    assert_eq!(
        s.nodes[a].ring.routes.len(),
        0,
        "the wrong route is forgotten"
    );
    s.run_for(Duration::from_millis(500));
    assert!(s.take_result(a, op).is_some());

    // Primary for a key of its own: answered here, no message.
    let own = me.id;
    s.nodes[a].ring.routes.learn(own, me, Vec::new(), now);
    let op = s.fetch(a, own);
    assert!(op_requests(&s, a, op).is_empty());
    assert!(matches!(
        s.take_result(a, op),
        Some(RingEvent::FetchDone { result: Ok(_), .. })
    ));
}

#[test]
fn a_holder_outside_its_range_hands_the_item_on_to_the_key_s_successor() {
    let mut s = sim();
    let first = s.add_node();
    for _ in 1..6 {
        let n = s.add_node();
        s.join(n, first);
        s.run_for(Duration::from_secs(3));
    }
    s.run_for(Duration::from_secs(5));
    assert!(s.ring_consistent());
    let mut it = item("erin@overlay.test", "sip:erin@192.0.2.1", &s);
    let order = s.true_holders(it.key, 6);
    // Neither the holder nor one of its replicas: a writer's stale view sent
    // the store there.
    let stray = order[4];
    it.writer = s.nodes[order[5]].ring.me().id;
    let store = || RingRequest::Store {
        items: vec![it.clone()],
        replica: false,
    };
    let now = s.now();
    let writer = it.writer;
    s.nodes[stray]
        .ring
        .handle_request_as(writer, IncomingId(1), store(), now);
    s.run_for(Duration::from_secs(3));
    let holders = s.holders_of(it.key, &it.name);
    assert!(
        holders.contains(&order[0]),
        "the true holder has it: {holders:?}"
    );
    assert!(
        holders.contains(&stray),
        "and the stray keeps its copy: {holders:?}"
    );
    assert_eq!(s.nodes[stray].ring.items_handed_on(), 1);
    // The same store again changes nothing there: not handed on twice.
    let now = s.now();
    s.nodes[stray]
        .ring
        .handle_request_as(writer, IncomingId(2), store(), now);
    s.run_for(Duration::from_secs(1));
    assert_eq!(s.nodes[stray].ring.items_handed_on(), 1);
    // A store at the true holder is not handed on.
    let now = s.now();
    s.nodes[order[0]]
        .ring
        .handle_request_as(writer, IncomingId(3), store(), now);
    assert_eq!(s.nodes[order[0]].ring.items_handed_on(), 0);
}

/// Semi-recursive lookups on at every node (off by default).
fn semi_recursive(s: &mut Sim) {
    for n in &mut s.nodes {
        n.ring.config.semi_recursive = true;
    }
}

/// The nonce of `node`'s semi-recursive lookup in flight for `op`.
fn awaited_nonce(s: &Sim, node: usize, op: OpId) -> Option<u64> {
    use super::requests::{Parent, Pending};
    s.nodes[node]
        .ring
        .requests
        .pending
        .values()
        .find_map(|e| match &e.pending {
            Pending::Route {
                parent: Parent::Op(o),
                reply: Some(r),
                ..
            } if *o == op => Some(r.nonce),
            Pending::Await {
                parent: Parent::Op(o),
                nonce,
                ..
            } if *o == op => Some(*nonce),
            _ => None,
        })
}

#[test]
fn a_fetch_s_lookup_brings_the_holder_s_items_with_its_answer() {
    let (mut s, it, a) = ring_and_a_distant_node();
    semi_recursive(&mut s);
    // Stored through the primary itself: `a` has no cached route.
    let primary = s.true_holders(it.key, 1)[0];
    s.store(primary, it.clone());
    s.run_for(Duration::from_millis(500));
    assert_eq!(s.nodes[a].ring.routes.len(), 0);
    let op = s.fetch(a, it.key);
    assert!(awaited_nonce(&s, a, op).is_some(), "semi-recursive");
    // Until it ends, `a` never asks a holder: the items come with the answer.
    for _ in 0..1000 {
        assert!(
            !op_requests(&s, a, op).contains(&"holder"),
            "a second Fetch round"
        );
        s.run_for(Duration::from_millis(1));
        if let Some(done) = s.take_result(a, op) {
            match done {
                RingEvent::FetchDone {
                    result: Ok(items), ..
                } => assert_eq!(items.len(), 1),
                other => panic!("{other:?}"),
            }
            // The holder answered for itself: its route is learnt.
            assert_eq!(s.nodes[a].ring.routes.len(), 1);
            return;
        }
    }
    panic!("the fetch did not end within 1 s");
}

#[test]
fn an_answer_without_the_lookup_s_nonce_is_ignored() {
    let (mut s, it, a) = ring_and_a_distant_node();
    semi_recursive(&mut s);
    let primary = s.true_holders(it.key, 1)[0];
    let op = s.lookup(a, it.key);
    let nonce = awaited_nonce(&s, a, op).expect("semi-recursive");
    // A stranger names itself the successor, with a wrong nonce.
    let stranger = Peer::of_addr("192.0.2.66:5060".parse().expect("addr"));
    let now = s.now();
    s.nodes[a].ring.handle_request(
        stranger.addr,
        IncomingId(9_999),
        RingRequest::Answer {
            nonce: nonce ^ 1,
            successor: Some(stranger),
            hops: 1,
            replicas: Vec::new(),
            items: None,
        },
        now,
    );
    assert_eq!(awaited_nonce(&s, a, op), Some(nonce), "still waiting");
    s.run_for(Duration::from_millis(500));
    let record = s.lookup_records.last().expect("ended");
    assert_eq!(record.found, Some(s.nodes[primary].ring.me()));
}

#[test]
fn a_lookup_meeting_a_dead_hop_fails_over_within_round_trips() {
    // Semi-recursive hops wait for their next hop's acknowledgement only
    // (a round-trip timeout), not for the whole path.
    let (mut s, it, a) = ring_and_a_distant_node();
    semi_recursive(&mut s);
    let primary = s.true_holders(it.key, 1)[0];
    // Round-trip estimates first (as a busy node has them).
    for _ in 0..20 {
        let key = s.random_key();
        let from = s.random_live();
        s.lookup(from, key);
        s.run_for(Duration::from_millis(100));
    }
    // Crash the first hop `a` would take.
    let first = s.nodes[a].ring.closest_preceding(it.key, &[]).expect("hop");
    let hop = s.node_at(first.addr).expect("node");
    assert_ne!(hop, primary);
    s.crash(hop);
    let start = s.now();
    let op = s.lookup(a, it.key);
    let done = s.run_until_cond(Duration::from_millis(1), Duration::from_secs(2), |s| {
        !s.nodes[a].ring.ops.running.contains_key(&op.0)
    });
    assert!(done, "ended");
    let took = s.now().saturating_duration_since(start);
    let record = s.lookup_records.last().expect("recorded");
    assert_eq!(record.key, it.key);
    assert_eq!(record.found, Some(s.nodes[primary].ring.me()));
    // The 2 s ceiling a recursive hop waited before; a few round trips of
    // 10-100 ms here (the floor is 100 ms).
    assert!(took < Duration::from_millis(700), "took {took:?}");
}

#[test]
fn a_first_register_is_one_lookup_and_one_store_round() {
    // A REGISTER of a new user: a fetch that finds nothing, then a store.
    let (mut s, it, a) = ring_and_a_distant_node();
    semi_recursive(&mut s);
    let primary = s.true_holders(it.key, 1)[0];
    let op = s.fetch(a, it.key);
    assert_eq!(op_requests(&s, a, op), ["route"]);
    let done = s.run_until_cond(Duration::from_millis(1), Duration::from_secs(1), |s| {
        !s.nodes[a].ring.ops.running.contains_key(&op.0)
    });
    assert!(done);
    match s.take_result(a, op) {
        Some(RingEvent::FetchDone {
            result: Ok(items), ..
        }) => assert!(items.is_empty()),
        other => panic!("{other:?}"),
    }
    // The empty answer came from the holder itself: the store goes there.
    let op = s.store(a, it.clone());
    assert_eq!(op_requests(&s, a, op), ["holder"], "no second lookup");
    s.run_for(Duration::from_millis(500));
    assert!(matches!(
        s.take_result(a, op),
        Some(RingEvent::StoreDone { result: Ok(()), .. })
    ));
    let held = s.nodes[primary].ring.local_items_at(it.key, s.now());
    assert_eq!(held.len(), 1);
}
