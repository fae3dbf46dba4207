//! The Chord ring at scale, in the deterministic simulator.
//!
//! 1,000 nodes join one by one; random lookups must all find the true
//! successor in about ½·log2 N hops; 20% of the nodes then crash at once and
//! within three stabilization periods lookups are all correct again, with no
//! item lost unless its registrar (the node it was stored through) and all of
//! its r holders crashed. A second test leaves
//! gracefully and loses nothing; one keeps lookups right under continuous
//! churn. Racing claims (the conditional store of
//! sign-up) give each name to exactly one claimant, and still refuse it
//! after the holder crashed.

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
    // `RING_SEMI_RECURSIVE=1` with semi-recursive lookups (`ring/answer.rs`).
    config.ring.semi_recursive = std::env::var("RING_SEMI_RECURSIVE").is_ok_and(|v| v == "1");
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
    // The node each item was stored through: its registrar.
    let registrars: Vec<usize> = ops.iter().map(|(from, _)| *from).collect();
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

    // Let replicas re-sync, then: nothing lost unless its registrar and
    // all r holders crashed (a live registrar stores it again).
    sim.run_for(Duration::from_secs(20));
    assert!(sim.ring_consistent(), "ring repaired");
    let mut doomed = 0;
    let mut saved_by_registrar = 0;
    let mut fetches = Vec::new();
    for ((it, h), registrar) in items.iter().zip(&holders).zip(&registrars) {
        let all_crashed = h.iter().all(|n| crashed.contains(n));
        if all_crashed && crashed.contains(registrar) {
            doomed += 1;
            continue;
        }
        if all_crashed {
            saved_by_registrar += 1;
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
        "items: {} stored, {doomed} had their registrar and all {R} holders crashed, \
         {saved_by_registrar} only their {R} holders, {lost} of the rest lost",
        items.len()
    );
    assert_eq!(lost, 0);
    assert!(
        saved_by_registrar > 0,
        "the scenario lost some items' holders"
    );
}

/// Continuous churn at 1,000 nodes (the benchmark's 10,000 in small,
/// `ring-sim --churn`): sessions of median 10 minutes, half the departures
/// crashes; after 30 s of churn, 60 s of lookups at 0.1 per node per second
/// name the true successor at least 99.9% of the time and none is left
/// unanswered.
#[test]
fn continuous_churn_with_ten_minute_sessions_keeps_lookups_right() {
    use p2psip::ring::churn::{self, ChurnConfig};
    let mut sim = Sim::new(config(11));
    sim.grow_concurrent(N, Duration::from_millis(5), Duration::from_secs(30));
    let stats = churn::run(
        &mut sim,
        N,
        &ChurnConfig {
            median_session: Duration::from_secs(600),
            warmup: Duration::from_secs(30),
            window: Duration::from_secs(60),
            ..ChurnConfig::default()
        },
    );
    eprintln!("{stats:?}");
    assert!(
        stats.joins > 50 && stats.leaves + stats.crashes > 50,
        "{stats:?}"
    );
    assert!(stats.lookups.count >= 5000, "{stats:?}");
    assert_eq!(stats.unfinished, 0, "{stats:?}");
    assert!(stats.success >= 0.999, "{stats:?}");
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

#[test]
fn ring_split_in_three_merges_after_healing() {
    let mut sim = Sim::new(config(13));
    let period = sim.config.ring.stabilize_every;
    sim.grow(300, Duration::from_millis(20), Duration::from_secs(20));
    assert!(sim.ring_consistent(), "{:?}", sim.inconsistencies());

    // Three parts by position on the ring would keep each part's order;
    // cut by node index instead, so every part is scattered on the circle.
    sim.split(|i| (i % 3) as u8);
    sim.run_for(Duration::from_secs(20));
    let one_ring = sim.ring_consistent();
    assert!(!one_ring, "the parts cannot see each other");

    sim.heal();
    let healed = sim.elapsed();
    let merged = sim.run_until_cond(period / 10, period * 5, |s| s.ring_consistent());
    eprintln!(
        "one ring again {:?} after healing ({:?})",
        sim.elapsed() - healed,
        sim.inconsistencies()
    );
    assert!(merged, "one ring within five stabilization periods");
    let stats = sim.lookup_batch(2_000, Duration::ZERO, Duration::from_secs(30));
    assert_eq!(stats.correct, 2_000, "{stats:?}");
}

#[test]
fn a_restarted_node_is_taken_back_at_once() {
    let mut sim = Sim::new(config(17));
    let period = sim.config.ring.stabilize_every;
    sim.grow(100, Duration::from_millis(20), Duration::from_secs(15));
    assert!(sim.ring_consistent(), "{:?}", sim.inconsistencies());
    let node = 42;
    sim.crash(node);
    // Its neighbours find it dead (they keep it marked for 30 s).
    sim.run_for(period * 5);
    assert!(sim.ring_consistent(), "ring closed over the crash");
    sim.restart(node, 0);
    let back = sim.elapsed();
    let ok = sim.run_until_cond(period / 10, period * 3, |s| s.ring_consistent());
    eprintln!(
        "restarted node back in {:?} ({:?})",
        sim.elapsed() - back,
        sim.inconsistencies()
    );
    assert!(ok, "taken back within three stabilization periods");
}

/// The credentials a claimant `c` of name `k` offers (its value tells the
/// claimants apart).
fn claim_item(sim: &Sim, k: usize, c: usize) -> Item {
    let aor = format!("new{k}@overlay.test");
    Item {
        key: NodeId::of_key(&aor),
        name: format!("credential:{aor}"),
        kind: "credential".into(),
        value: format!("claimant {c}").into_bytes(),
        version: 1,
        expires: sim.now() + Duration::from_secs(24 * 3600),
        writer: Default::default(),
        signature: Vec::new(),
        proof: None,
    }
}

#[test]
fn racing_claims_give_each_name_to_one_node_even_after_its_holder_crashes() {
    use p2psip::ring::{Refusal, RingError};
    let mut sim = Sim::new(config(23));
    sim.grow(200, Duration::from_millis(20), Duration::from_secs(20));
    assert!(sim.ring_consistent(), "{:?}", sim.inconsistencies());

    // Five claimants, each through a random node, for each of 50 names, all
    // in the same instant: one wins each name, the others hear "taken".
    let mut ops = Vec::new();
    for k in 0..50 {
        for c in 0..5 {
            let from = sim.random_live();
            let op = sim.claim(from, claim_item(&sim, k, c));
            ops.push((k, c, from, op));
        }
    }
    sim.run_for(Duration::from_secs(10));
    let mut winners = vec![None; 50];
    for (k, c, from, op) in ops {
        match sim.take_result(from, op) {
            Some(RingEvent::StoreDone { result: Ok(()), .. }) => {
                assert!(winners[k].is_none(), "name {k} went twice");
                winners[k] = Some(c);
            }
            Some(RingEvent::StoreDone {
                result: Err(RingError::Refused(Refusal::Taken)),
                ..
            }) => {}
            other => panic!("claim {k}/{c}: {other:?}"),
        }
    }
    // Names whose holders are all apart from the other chosen names' holders.
    let mut chosen: Vec<(usize, usize)> = Vec::new();
    let mut touched: HashSet<usize> = HashSet::new();
    for (k, winner) in winners.iter().enumerate() {
        let winner = winner.unwrap_or_else(|| panic!("nobody got name {k}"));
        let it = claim_item(&sim, k, winner);
        let holders = sim.true_holders(it.key, R);
        for n in &holders {
            let held = sim.nodes[*n].ring.local_items(it.key);
            assert!(
                held.iter().any(|i| i.value == it.value),
                "holder {n} of name {k} lacks the winner's claim"
            );
        }
        if chosen.len() < 10 && holders.iter().all(|n| !touched.contains(n)) {
            touched.extend(holders.iter().copied());
            chosen.push((k, holders[0]));
        }
    }
    assert_eq!(chosen.len(), 10);
    // Their primaries crash; each one's successor, a replica, answers now.
    for (_, primary) in &chosen {
        sim.crash(*primary);
    }
    sim.run_for(sim.config.ring.stabilize_every * 5);
    for (k, _) in chosen {
        let from = sim.random_live();
        let it = claim_item(&sim, k, 9);
        let before = sim.holders_of(it.key, &it.name);
        let op = sim.claim(from, it.clone());
        sim.run_for(Duration::from_secs(5));
        let result = sim.take_result(from, op);
        assert!(
            matches!(
                result,
                Some(RingEvent::StoreDone {
                    result: Err(RingError::Refused(Refusal::Taken)),
                    ..
                })
            ),
            "name {k} claimed again after its holder crashed: {result:?}; held by {before:?}, true holders {:?}",
            sim.true_holders(it.key, R)
        );
    }
}

/// Eight nodes; for each of many keys, an item stored through a node that
/// is not one of the key's three holders: the one right after them, one
/// further on, or the one right before them; the three holders crash at
/// once. The live registrar stores the item again — also when it is itself
/// the key's new successor, and when its own successors all died — so a
/// fetch from any other node finds it.
#[test]
fn a_registrar_stores_again_when_all_three_holders_die_even_as_the_new_successor() {
    for trial in 0..24u64 {
        let mut sim = Sim::new(config(100 + trial));
        // Soon after the ring formed (as in the process test): successor
        // lists are still short.
        sim.grow_concurrent(8, Duration::from_millis(5), Duration::from_millis(1500));
        let it = item(&sim, trial as usize);
        let order = sim.true_holders(it.key, 8);
        // The registrar is the node right after the holders (it becomes the
        // key's successor), one further on, or the node right before them
        // (its whole successor list dies: it falls back on a finger).
        let position = [3, 5, 7][trial as usize % 3];
        let registrar = order[position];
        let op = sim.store(registrar, it.clone());
        sim.run_for(Duration::from_secs(5));
        match sim.take_result(registrar, op) {
            Some(RingEvent::StoreDone { result: Ok(()), .. }) => {}
            other => panic!("trial {trial}: store: {other:?}"),
        }
        for h in &order[..3] {
            sim.crash(*h);
        }
        sim.run_for(Duration::from_secs(60));
        let asker = order[4..]
            .iter()
            .copied()
            .find(|n| *n != registrar)
            .expect("another live node");
        let op = sim.fetch(asker, it.key);
        sim.run_for(Duration::from_secs(10));
        match sim.take_result(asker, op) {
            Some(RingEvent::FetchDone {
                result: Ok(items), ..
            }) => assert!(
                items.iter().any(|i| same_item(i, &it)),
                "trial {trial}: registrar {registrar} (position {position} after the key): \
                 item lost; holders now {:?}",
                sim.holders_of(it.key, &it.name)
            ),
            other => panic!("trial {trial}: fetch: {other:?}"),
        }
    }
}
