//! The Chord ring at scale, in the deterministic simulator.
//!
//! 1,000 nodes join one by one; random lookups must all find the true
//! successor in about ½·log2 N hops; 20% of the nodes then crash at once and
//! within three stabilization periods lookups are all correct again, with no
//! item lost unless all of its r holders crashed. A second test leaves
//! gracefully and loses nothing.

use std::collections::HashSet;
use std::time::Duration;

use p2psip::ring::sim::{Sim, SimConfig};
use p2psip::ring::{Item, NodeId, RingEvent};

const N: usize = 1000;
const R: usize = 3;

/// The same item but for its writer (the ring sets it to the storing node).
fn same_item(a: &Item, b: &Item) -> bool {
    (a.key, &a.name, &a.kind, &a.value, a.version) == (b.key, &b.name, &b.kind, &b.value, b.version)
}

fn item(sim: &Sim, k: usize) -> Item {
    let aor = format!("user{k}@overlay.test");
    Item {
        key: NodeId::of_key(&aor),
        name: format!("sip:user{k}@192.0.2.{}:5060", k % 250 + 1),
        kind: "binding".into(),
        value: format!("<sip:user{k}@192.0.2.{}:5060>;expires=3600", k % 250 + 1).into_bytes(),
        version: 1,
        expires: sim.now() + Duration::from_secs(24 * 3600),
        writer: Default::default(),
        signature: Vec::new(),
        proof: None,
    }
}

/// The seed; `RING_SEED` overrides it to try other runs (the simulation is
/// deterministic per seed).
fn config(seed: u64) -> SimConfig {
    let seed = std::env::var("RING_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(seed);
    let mut config = SimConfig {
        seed,
        ..SimConfig::default()
    };
    // `RING_ITERATIVE=1` runs the same scenarios with iterative lookups.
    config.ring.iterative = std::env::var("RING_ITERATIVE").is_ok_and(|v| v == "1");
    config
}

#[test]
fn thousand_nodes_lookup_and_survive_crash_of_a_fifth() {
    let mut sim = Sim::new(config(7));
    let period = sim.config.ring.stabilize_every;

    // Join one by one, each through a random member, then let fingers settle.
    sim.grow(N, Duration::from_millis(20), Duration::from_secs(30));
    assert_eq!(sim.live_count(), N);
    assert!(
        sim.ring_consistent(),
        "successors and predecessors all true: {:?}",
        sim.inconsistencies()
    );

    let stats = sim.lookup_batch(10_000, Duration::ZERO, Duration::from_secs(30));
    let bound = 0.5 * (N as f64).log2() + 1.0;
    eprintln!("before crash: {stats:?} (bound {bound:.2})");
    assert_eq!(stats.correct, 10_000, "{stats:?}");
    assert!(
        stats.hops_mean <= bound,
        "mean hops {} > {bound}",
        stats.hops_mean
    );

    // Store 2,000 items from random nodes.
    let items: Vec<Item> = (0..2000).map(|k| item(&sim, k)).collect();
    let mut ops = Vec::new();
    for it in &items {
        let from = sim.random_live();
        ops.push((from, sim.store(from, it.clone())));
    }
    sim.run_for(Duration::from_secs(5));
    for (from, op) in ops {
        match sim.take_result(from, op) {
            Some(RingEvent::StoreDone { result: Ok(()), .. }) => {}
            other => panic!("store: {other:?}"),
        }
    }
    let holders: Vec<Vec<usize>> = items.iter().map(|it| sim.true_holders(it.key, R)).collect();
    for (it, h) in items.iter().zip(&holders) {
        let actual = sim.holders_of(it.key, &it.name);
        for n in h {
            assert!(actual.contains(n), "item {} not on holder {n}", it.key);
        }
    }

    // 20% crash at once.
    let mut crashed = HashSet::new();
    while crashed.len() < N / 5 {
        let v = sim.random_live();
        sim.crash(v);
        crashed.insert(v);
    }
    let crash_at = sim.elapsed();

    // Within three stabilization periods lookups are correct again.
    sim.run_for(period * 3);
    let issued = sim.elapsed() - crash_at;
    let stats = sim.lookup_batch(2_000, Duration::ZERO, Duration::from_secs(60));
    eprintln!("lookups issued {issued:?} after the crash: {stats:?}");
    for r in sim
        .lookup_records
        .iter()
        .rev()
        .take(2_000)
        .filter(|r| !r.correct())
    {
        let found_dead = r
            .found
            .map(|p| crashed.iter().any(|c| sim.nodes[*c].ring.me() == p));
        eprintln!(
            "wrong: issued {:?} done {:?} after crash, found crashed node: {found_dead:?}",
            r.issued_at - crash_at,
            r.done_at - crash_at
        );
    }
    assert_eq!(stats.correct, 2_000, "{stats:?}");

    // Let replicas re-sync, then: nothing lost unless all r holders crashed.
    sim.run_for(Duration::from_secs(20));
    assert!(sim.ring_consistent(), "ring repaired");
    let mut doomed = 0;
    let mut fetches = Vec::new();
    for (it, h) in items.iter().zip(&holders) {
        let all_crashed = h.iter().all(|n| crashed.contains(n));
        if all_crashed {
            doomed += 1;
            continue;
        }
        let from = sim.random_live();
        fetches.push((it, from, sim.fetch(from, it.key)));
    }
    sim.run_for(Duration::from_secs(10));
    let mut lost = 0;
    for (it, from, op) in fetches {
        match sim.take_result(from, op) {
            Some(RingEvent::FetchDone {
                result: Ok(got), ..
            }) if got.iter().any(|g| same_item(g, it)) => {}
            other => {
                lost += 1;
                eprintln!("lost {}: {other:?}", it.key);
            }
        }
        // And it is back on r live holders.
        let now_on = sim.holders_of(it.key, &it.name);
        for n in sim.true_holders(it.key, R) {
            assert!(
                now_on.contains(&n),
                "item {} not re-replicated on {n}",
                it.key
            );
        }
    }
    eprintln!(
        "items: {} stored, {doomed} had all {R} holders crashed, {lost} of the rest lost",
        items.len()
    );
    assert_eq!(lost, 0);
}

#[test]
fn graceful_leaves_lose_nothing() {
    let mut sim = Sim::new(config(11));
    sim.grow(300, Duration::from_millis(20), Duration::from_secs(20));
    assert!(sim.ring_consistent(), "{:?}", sim.inconsistencies());
    let items: Vec<Item> = (0..600).map(|k| item(&sim, k)).collect();
    for it in &items {
        let from = sim.random_live();
        sim.store(from, it.clone());
    }
    sim.run_for(Duration::from_secs(5));

    // A fifth of the nodes leave, 100 ms apart (neighbours leave concurrently).
    for _ in 0..60 {
        let v = sim.random_live();
        sim.leave(v);
        sim.run_for(Duration::from_millis(100));
    }
    sim.run_for(Duration::from_secs(15));
    assert_eq!(sim.live_count(), 240);
    assert!(sim.ring_consistent(), "ring closed over the leavers");
    for it in &items {
        let now_on = sim.holders_of(it.key, &it.name);
        for n in sim.true_holders(it.key, R) {
            assert!(now_on.contains(&n), "item {} missing on holder {n}", it.key);
        }
    }
    let stats = sim.lookup_batch(1_000, Duration::ZERO, Duration::from_secs(30));
    assert_eq!(stats.correct, 1_000, "{stats:?}");
}
