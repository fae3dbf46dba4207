//! Continuous churn in the simulator (issue 11; Rhea et al., "Handling Churn
//! in a DHT", 2004): nodes join and depart for ever, each departure a crash or
//! a graceful leave, with exponential session times, while a steady lookup
//! load runs. Arrivals are a Poisson process of rate N/T (T the mean session,
//! median·/ln 2) and every live node departs at rate 1/T, so the population
//! stays about N; since the exponential is memoryless, the nodes of a settled
//! ring of N are already a sample of this steady state. After a warm-up, a
//! window is measured: lookup success (the true successor at the moment of
//! the answer), hops, latency, messages per node per second, and the same
//! per bucket of time.
//!
//! Uses only the public face of [`Sim`], so the benchmark binary and the tests
//! share it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::Rng;

use super::sim::{LookupRecord, LookupStats, Sim};

/// One churn phase.
#[derive(Clone, Debug)]
pub struct ChurnConfig {
    /// Median session time (the mean is median / ln 2).
    pub median_session: Duration,
    /// Share of departures that are crashes; the others leave gracefully.
    pub crash_share: f64,
    /// Lookups per live node per second, for random keys from random nodes.
    pub lookup_rate: f64,
    /// Churn before the window.
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
    /// Churn after the window so the window's lookups finish (not measured).
    pub drain: Duration,
    /// Width of a bucket of the time series.
    pub bucket: Duration,
}

impl Default for ChurnConfig {
    fn default() -> Self {
        ChurnConfig {
            median_session: Duration::from_secs(600),
            crash_share: 0.5,
            lookup_rate: 0.1,
            warmup: Duration::from_secs(60),
            window: Duration::from_secs(60),
            drain: Duration::from_secs(30),
            bucket: Duration::from_secs(10),
        }
    }
}

/// One bucket of the window.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ChurnBucket {
    /// Start of the bucket, seconds since the window began.
    pub at_s: f64,
    pub lookups: usize,
    pub success: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

/// What one phase measured.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ChurnStats {
    pub median_session_s: f64,
    pub nodes_mean: f64,
    /// Over warm-up, window and drain.
    pub joins: usize,
    pub leaves: usize,
    pub crashes: usize,
    /// Lookups issued in the window and answered, or still unanswered at
    /// the end of the drain while their node lives (counted as failures).
    /// Lookups ended by their own node's departure are not counted.
    pub lookups: LookupStats,
    pub unfinished: usize,
    /// Wrong answers naming a node that had departed (crashed or left).
    pub wrong_departed: usize,
    /// Wrong answers whose true successor had arrived less than 10 s before.
    pub wrong_newcomer: usize,
    /// Correct / (answered + unfinished).
    pub success: f64,
    pub msgs_per_node_s: f64,
    pub series: Vec<ChurnBucket>,
}

/// An exponential gap for events of `rate` per second.
fn gap(sim: &mut Sim, rate: f64) -> f64 {
    if rate <= 0.0 {
        return f64::INFINITY;
    }
    let u: f64 = sim.rng().random_range(f64::EPSILON..1.0);
    -u.ln() / rate
}

/// A random live node whose join completed.
fn joined_node(sim: &mut Sim) -> Option<usize> {
    for _ in 0..64 {
        let n = sim.random_live();
        if sim.nodes[n].ring.is_joined() {
            return Some(n);
        }
    }
    None
}

/// Runs one phase of churn around a population of `target` nodes on `sim`
/// (a settled ring) and measures its window.
pub fn run(sim: &mut Sim, target: usize, config: &ChurnConfig) -> ChurnStats {
    let mean = config.median_session.as_secs_f64() / std::f64::consts::LN_2;
    let step = Duration::from_millis(10);
    let start = sim.elapsed().as_secs_f64();
    let w0 = start + config.warmup.as_secs_f64();
    let w1 = w0 + config.window.as_secs_f64();
    let end = w1 + config.drain.as_secs_f64();
    let (mut joins, mut leaves, mut crashes) = (0, 0, 0);
    let mut leaving: HashSet<usize> = HashSet::new();
    let mut arrived: HashMap<usize, f64> = HashMap::new();
    let mut departed: HashMap<usize, f64> = HashMap::new();
    let live = sim.live_count() as f64;
    let mut next_join = start + gap(sim, target as f64 / mean);
    let mut next_depart = start + gap(sim, live / mean);
    let mut next_lookup = w0;
    let first_record = sim.lookup_records.len();
    let (mut msgs0, mut msgs1) = (0, 0);
    let (mut live_sum, mut live_samples) = (0.0, 0u64);
    let mut t = start;
    while t < end {
        t += step.as_secs_f64();
        sim.run_until(Duration::from_secs_f64(t));
        while next_join <= t {
            let node = sim.add_node();
            arrived.insert(node, t);
            if let Some(b) = joined_node(sim).filter(|b| *b != node) {
                sim.join(node, b);
            }
            joins += 1;
            next_join += gap(sim, target as f64 / mean);
        }
        while next_depart <= t {
            if sim.live_count() > 2 {
                let v = sim.random_live();
                departed.insert(v, t);
                if sim.rng().random::<f64>() < config.crash_share {
                    sim.crash(v);
                    sim.discard(v);
                    crashes += 1;
                } else {
                    sim.leave(v);
                    leaving.insert(v);
                    leaves += 1;
                }
            }
            let live = sim.live_count() as f64;
            next_depart += gap(sim, live / mean);
        }
        leaving.retain(|&v| {
            let gone = !sim.nodes[v].alive;
            if gone {
                sim.discard(v);
            }
            !gone
        });
        if t >= w0 && t < w1 {
            if msgs0 == 0 {
                msgs0 = sim.messages;
            }
            live_sum += sim.live_count() as f64;
            live_samples += 1;
            while next_lookup <= t {
                if let Some(from) = joined_node(sim) {
                    let key = sim.random_key();
                    sim.lookup(from, key);
                }
                let live = sim.live_count() as f64;
                next_lookup += gap(sim, config.lookup_rate * live);
            }
        } else if t >= w1 && msgs1 == 0 {
            msgs1 = sim.messages;
        }
    }
    let nodes_mean = live_sum / live_samples.max(1) as f64;
    let in_window = |at: Duration| {
        let at = at.as_secs_f64();
        at >= w0 && at < w1
    };
    let records: Vec<LookupRecord> = sim.lookup_records[first_record..]
        .iter()
        .filter(|r| in_window(r.issued_at) && !r.left)
        .cloned()
        .collect();
    let unfinished = sim
        .lookups_pending()
        .filter(|(node, at)| in_window(*at) && sim.is_live(*node))
        .count();
    let lookups = LookupStats::of(&records);
    let wrong: Vec<&LookupRecord> = records
        .iter()
        .filter(|r| r.found.is_some() && !r.correct())
        .collect();
    let wrong_departed = wrong
        .iter()
        .filter(|r| {
            r.found
                .and_then(|p| sim.node_at(p.addr))
                .and_then(|n| departed.get(&n))
                .is_some_and(|at| *at <= r.done_at.as_secs_f64())
        })
        .count();
    let wrong_newcomer = wrong
        .iter()
        .filter(|r| {
            sim.node_at(r.truth.addr)
                .and_then(|n| arrived.get(&n))
                .is_some_and(|at| r.done_at.as_secs_f64() - at < 10.0)
        })
        .count();
    let success = lookups.correct as f64 / (records.len() + unfinished).max(1) as f64;
    let width = config.bucket.as_secs_f64().max(0.001);
    let buckets = (config.window.as_secs_f64() / width).ceil() as usize;
    let series = (0..buckets)
        .map(|b| {
            let lo = w0 + b as f64 * width;
            let hi = lo + width;
            let part: Vec<LookupRecord> = records
                .iter()
                .filter(|r| {
                    let at = r.issued_at.as_secs_f64();
                    at >= lo && at < hi
                })
                .cloned()
                .collect();
            let s = LookupStats::of(&part);
            ChurnBucket {
                at_s: b as f64 * width,
                lookups: s.count,
                success: s.correct as f64 / s.count.max(1) as f64,
                latency_p50_ms: s.latency_p50_ms,
                latency_p99_ms: s.latency_p99_ms,
            }
        })
        .collect();
    ChurnStats {
        median_session_s: config.median_session.as_secs_f64(),
        nodes_mean,
        joins,
        leaves,
        crashes,
        lookups,
        unfinished,
        wrong_departed,
        wrong_newcomer,
        success,
        msgs_per_node_s: (msgs1.saturating_sub(msgs0)) as f64
            / nodes_mean.max(1.0)
            / config.window.as_secs_f64(),
        series,
    }
}
