//! How fast a new node is useful (`ring-sim --join-trials T`): in a settled
//! ring of N holding ten items per node, T nodes join one after another, each
//! through a random member, and for each the simulator notes how long after
//! the start of its join
//!
//! - it has joined (its successor answered),
//! - the whole ring is consistent again (every successor and predecessor
//!   right, the new node's too),
//! - lookups are answered correctly: from then on, every lookup issued by
//!   the new node and every lookup by another node for a key in the new
//!   node's range names the true successor,
//! - it holds its share: every item of which it is now the primary holder.
//!
//! Latency, loss and timers are the simulator's (`SimConfig`); no CPU time.

use std::time::Duration;

use p2psip::ring::NodeId;
use p2psip::ring::sim::Sim;

use super::{Args, item, settled_ring};

/// Lookups of each kind issued per step while a node joins.
const LOOKUPS_PER_STEP: usize = 4;
/// How often the conditions are checked and lookups issued.
const STEP: Duration = Duration::from_millis(50);
/// Items stored per node of the settled ring (the overlay benchmark's
/// 1,000 users at N = 100).
const ITEMS_PER_NODE: usize = 10;
/// How long one join is watched at most.
const WATCH: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Default, serde::Serialize)]
struct Trial {
    joined_ms: Option<f64>,
    consistent_ms: Option<f64>,
    answers_ms: Option<f64>,
    holds_ms: Option<f64>,
    share: usize,
}

pub(crate) fn main(args: &Args) {
    for &n in &args.nodes {
        let trials = run(args, n);
        print(n, &trials);
        println!(
            "{}",
            serde_json::to_string(&trials).unwrap_or_else(|e| format!("\"{e}\""))
        );
    }
}

fn run(args: &Args, n: usize) -> Vec<Trial> {
    let mut sim = settled_ring(
        args,
        n,
        args.seed ^ n as u64 ^ 0x6a6f696e,
        "before the joins",
    );
    let items: Vec<_> = (0..ITEMS_PER_NODE * n).map(|k| item(&sim, k)).collect();
    for it in &items {
        let from = sim.random_live();
        sim.store(from, it.clone());
    }
    sim.run_for(Duration::from_secs(10));
    (0..args.join_trials)
        .map(|_| {
            let trial = one_join(&mut sim, &items);
            // Let the ring settle before the next one.
            sim.run_for(Duration::from_secs(10));
            trial
        })
        .collect()
}

fn one_join(sim: &mut Sim, items: &[p2psip::ring::Item]) -> Trial {
    let bootstrap = sim.random_live();
    let node = sim.add_node();
    let id = sim.nodes[node].ring.me().id;
    let start = sim.elapsed();
    sim.join(node, bootstrap);
    let mine: Vec<_> = items
        .iter()
        .filter(|it| sim.true_holders(it.key, 1).first() == Some(&node))
        .collect();
    let mut trial = Trial {
        share: mine.len(),
        ..Trial::default()
    };
    // (key, issued at) of every lookup issued while watching.
    let mut issued: Vec<(NodeId, Duration)> = Vec::new();
    let first_record = sim.lookup_records.len();
    let ms = |d: Duration| (d - start).as_secs_f64() * 1000.0;
    while sim.elapsed() - start < WATCH {
        let now = sim.elapsed();
        if trial.joined_ms.is_none() && sim.nodes[node].ring.is_joined() {
            trial.joined_ms = Some(ms(now));
        }
        if trial.consistent_ms.is_none() && sim.ring_consistent() {
            trial.consistent_ms = Some(ms(now));
        }
        if trial.holds_ms.is_none()
            && mine
                .iter()
                .all(|it| sim.holders_of(it.key, &it.name).contains(&node))
        {
            trial.holds_ms = Some(ms(now));
        }
        if trial.joined_ms.is_some() {
            for _ in 0..LOOKUPS_PER_STEP {
                let key = sim.random_key();
                sim.lookup(node, key);
                issued.push((key, now));
                let key = key_in_range_of(sim, id);
                let from = loop {
                    let from = sim.random_live();
                    if from != node {
                        break from;
                    }
                };
                sim.lookup(from, key);
                issued.push((key, now));
            }
        }
        if trial.consistent_ms.is_some() && trial.holds_ms.is_some() && issued.len() > 400 {
            break;
        }
        sim.run_for(STEP);
    }
    sim.run_until_cond(STEP, Duration::from_secs(10), |s| {
        s.lookups_in_flight() == 0
    });
    // The first issue time from which every lookup was correct.
    let records = &sim.lookup_records[first_record..];
    let correct_of = |key: NodeId, at: Duration| {
        records
            .iter()
            .find(|r| r.key == key && r.issued_at == at)
            .is_some_and(|r| r.correct())
    };
    let last_wrong = issued
        .iter()
        .filter(|(key, at)| !correct_of(*key, *at))
        .map(|(_, at)| *at)
        .max();
    trial.answers_ms = match (last_wrong, trial.joined_ms) {
        (None, Some(joined)) => Some(joined),
        (Some(at), _) if issued.iter().any(|(_, later)| *later > at) => Some(ms(at + STEP)),
        _ => None,
    };
    trial
}

/// A random key the node `id` is now the successor of.
fn key_in_range_of(sim: &mut Sim, id: NodeId) -> NodeId {
    for _ in 0..100_000 {
        let key = sim.random_key();
        if sim.true_successor(key).id == id {
            return key;
        }
    }
    id
}

/// One figure of a trial: `None` when it does not apply to the trial,
/// `Some(None)` when it never held.
type Figure = fn(&Trial) -> Option<Option<f64>>;

fn print(n: usize, trials: &[Trial]) {
    let stat = |f: Figure| {
        let applies: Vec<Option<f64>> = trials.iter().filter_map(f).collect();
        let mut v: Vec<f64> = applies.iter().flatten().copied().collect();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| {
            v.get(((v.len() as f64 - 1.0) * q).round() as usize)
                .copied()
        };
        (
            at(0.5),
            v.last().copied(),
            applies.len() - v.len(),
            applies.len(),
        )
    };
    println!(
        "N={n}, {} joins one after another (ms after the join starts: p50 / max / never within {} s, of trials)",
        trials.len(),
        WATCH.as_secs()
    );
    let rows: [(&str, Figure); 4] = [
        ("joined", |t| Some(t.joined_ms)),
        ("ring consistent", |t| Some(t.consistent_ms)),
        ("lookups answered correctly", |t| Some(t.answers_ms)),
        ("holds its share of items", |t| {
            (t.share > 0).then_some(t.holds_ms)
        }),
    ];
    for (name, f) in rows {
        let (p50, max, never, of) = stat(f);
        let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        println!(
            "  {name:<28} {:>7} / {:>7} / {never} of {of}",
            show(p50),
            show(max)
        );
    }
    let share: usize = trials.iter().map(|t| t.share).sum();
    println!(
        "  items taken over: {share} in all, {:.1} per join",
        share as f64 / trials.len().max(1) as f64
    );
}
