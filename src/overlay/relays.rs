//! TURN servers advertised in the ring, and the choice of one (RELOAD's
//! TURN-SERVICE kind, RFC 6940 §9.2 and §12, reduced to this ring).
//!
//! A node with a TURN server stores, every period, one short-lived item
//! of kind `turn-service` under one of [`BUCKETS`] well-known keys,
//! SHA-1("turn-service:" + n), the bucket chosen by its Node-ID (as
//! RELOAD spreads TURN servers over its redundancy levels, so no single
//! key holds them all). The item is named by the TURN address and says
//! where the server is and how full it is ([`TurnRecord`]); it is written
//! in the node's name, so only that node may change it, and it lives three
//! periods: a node that dies drops out of the set within that, one that
//! leaves removes it.
//!
//! Any node finds the servers by fetching the buckets (every round on a
//! TURN node, on demand elsewhere, a set reused for one period), and ranks
//! them ([`rank`]): by the ring's round-trip estimate to the advertising
//! node, plus a penalty for load; full servers are left out.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ring::{Item, NodeId, OpId, Ring, RingEvent};

/// The item kind of a TURN server's advertisement.
pub const KIND: &str = "turn-service";
/// The well-known keys TURN servers spread over.
pub const BUCKETS: u8 = 4;
/// How much a full server weighs against a nearer one: a server at load
/// `f` (0..1) ranks as if it were `f * LOAD_WEIGHT` further away.
pub const LOAD_WEIGHT: Duration = Duration::from_millis(50);
/// The round trip assumed for a node the ring has never measured (the
/// ring's default request timeout): it ranks behind every measured one.
pub const UNMEASURED: Duration = Duration::from_secs(2);
/// The period of rounds on a node that does not say otherwise (`[turn] advertise_s`).
pub const DEFAULT_EVERY: Duration = Duration::from_secs(10);
/// How soon an advertisement that could not be stored (or a node still
/// joining) tries again.
const RETRY: Duration = Duration::from_secs(1);
/// Servers kept from one round at most (the rest are not read).
const MAX_KNOWN: usize = 256;

/// The ring key of TURN bucket `n`.
pub fn key_of(bucket: u8) -> NodeId {
    NodeId::of_key(&format!("turn-service:{bucket}"))
}

/// The bucket a node advertises in.
pub fn bucket_of(node: NodeId) -> u8 {
    node.0[0] % BUCKETS
}

/// What a TURN server tells about itself (the value of its item).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// The TURN address (UDP) clients allocate at.
    pub turn: SocketAddr,
    /// The advertising node's ring address (its round trip is measured).
    pub node: SocketAddr,
    /// The realm of its long-term credentials (the users' domain).
    pub realm: String,
    pub allocations: u32,
    pub max_allocations: u32,
}

impl TurnRecord {
    /// How full the server is, 0 (empty) to 1 (full).
    pub fn load(&self) -> f64 {
        if self.max_allocations == 0 {
            return 1.0;
        }
        (f64::from(self.allocations) / f64::from(self.max_allocations)).min(1.0)
    }

    fn full(&self) -> bool {
        self.allocations >= self.max_allocations
    }
}

/// A known server as ranked for the asker.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KnownRelay {
    #[serde(flatten)]
    pub record: TurnRecord,
    /// The ring's round-trip estimate to its node (0 for this node itself).
    pub rtt_ms: Option<f64>,
    pub load: f64,
    /// Lower is better: the round trip plus the load's penalty, in ms.
    pub score_ms: f64,
    /// Seconds its advertisement has left.
    pub expires_in_s: u64,
}

/// The ranked servers and the one chosen (the first, unless all are full).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RelayChoice {
    pub chosen: Option<KnownRelay>,
    pub relays: Vec<KnownRelay>,
}

/// Ranks `known` (with their expiries) for a node whose round trip to a
/// ring address `rtt` tells, `me` being its own ring address. Expired
/// advertisements are left out; full servers are listed but never chosen.
pub fn rank(
    known: &[(TurnRecord, Instant)],
    me: SocketAddr,
    rtt: impl Fn(SocketAddr) -> Option<Duration>,
    now: Instant,
) -> RelayChoice {
    let mut relays: Vec<KnownRelay> = known
        .iter()
        .filter(|(_, expires)| *expires > now)
        .map(|(record, expires)| {
            let measured = if record.node == me {
                Some(Duration::ZERO)
            } else {
                rtt(record.node)
            };
            let rtt = measured.unwrap_or(UNMEASURED);
            let load = record.load();
            let score = rtt.as_secs_f64() * 1e3 + load * LOAD_WEIGHT.as_secs_f64() * 1e3;
            KnownRelay {
                record: record.clone(),
                rtt_ms: measured.map(|d| d.as_secs_f64() * 1e3),
                load,
                score_ms: score,
                expires_in_s: expires.saturating_duration_since(now).as_secs(),
            }
        })
        .collect();
    relays.sort_by(|a, b| {
        (a.record.full(), a.score_ms)
            .partial_cmp(&(b.record.full(), b.score_ms))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.record.turn.cmp(&b.record.turn))
    });
    let chosen = relays.first().filter(|r| !r.record.full()).cloned();
    RelayChoice { chosen, relays }
}

/// This node's advertisement (when it has a TURN server) and the servers
/// it has seen.
pub struct Relays {
    me: Option<TurnRecord>,
    /// Versions: wall-clock ms at `started`, plus the time since, so a
    /// restarted node's advertisement replaces the one it left behind.
    started: Instant,
    wall_ms: u64,
    every: Duration,
    next_round: Instant,
    /// A round was asked for (someone waits for the set).
    asked: bool,
    in_flight: HashSet<OpId>,
    /// The store of our advertisement under way.
    storing: Option<OpId>,
    gathered: Vec<(TurnRecord, Instant)>,
    known: Vec<(TurnRecord, Instant)>,
    learnt: Option<Instant>,
    /// Who waits for the round under way, and who may have an answer.
    waiting: Vec<u64>,
    answered: VecDeque<u64>,
    stopped: bool,
}

impl Relays {
    /// Rounds every `every` (advertising) and sets reused for as long.
    pub fn new(every: Duration, now: Instant) -> Relays {
        Relays {
            me: None,
            started: now,
            wall_ms: 0,
            every,
            next_round: now,
            asked: false,
            in_flight: HashSet::new(),
            storing: None,
            gathered: Vec::new(),
            known: Vec::new(),
            learnt: None,
            waiting: Vec::new(),
            answered: VecDeque::new(),
            stopped: false,
        }
    }

    /// Advertises `me` every `every` from now on (`wall_ms`: the wall
    /// clock at `now`, for the versions).
    pub fn advertise(&mut self, me: TurnRecord, every: Duration, wall_ms: u64, now: Instant) {
        self.me = Some(me);
        self.every = every;
        self.started = now;
        self.wall_ms = wall_ms;
        self.next_round = now;
    }

    /// The TURN server's allocations now; advertised from the next round.
    pub fn set_load(&mut self, allocations: u32) {
        if let Some(me) = &mut self.me {
            me.allocations = allocations;
        }
    }

    pub fn advertised(&self) -> Option<&TurnRecord> {
        self.me.as_ref()
    }

    /// Stops advertising (the node leaves); the item expires by itself.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Stops advertising and gives the key and name of our item, to remove
    /// it from the ring (a graceful leave); `None` when there is none.
    pub fn withdraw(&mut self, me: NodeId) -> Option<(NodeId, String)> {
        let was = !self.stopped;
        self.stop();
        let record = self.me.as_ref().filter(|_| was)?;
        Some((key_of(bucket_of(me)), record.turn.to_string()))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        // A round asked for starts at once (the overlay pumps after `want`).
        if self.stopped {
            return None;
        }
        self.me.as_ref().map(|_| self.next_round)
    }

    /// Asker `id` wants the set: answered at once (see
    /// [`poll_answered`](Self::poll_answered)) when the last one is less
    /// than a period old, else after a round.
    pub fn want(&mut self, id: u64, now: Instant) {
        let fresh = self.learnt.is_some_and(|at| now < at + self.every);
        if fresh && self.in_flight.is_empty() {
            self.answered.push_back(id);
        } else {
            self.waiting.push(id);
            self.asked = true;
        }
    }

    /// Runs a round when due: store our item, fetch every bucket. True when it did.
    pub fn start_ops(&mut self, ring: &mut Ring, now: Instant) -> bool {
        if !self.in_flight.is_empty() {
            return false;
        }
        if self.stopped {
            // Nothing more will come: whoever waits gets what is known.
            self.answered.extend(self.waiting.drain(..));
            return false;
        }
        let advertise_due = self.me.is_some() && now >= self.next_round;
        if !advertise_due && !self.asked {
            return false;
        }
        if ring.is_joining() {
            // Not in the ring yet: nothing to store into or fetch from.
            if advertise_due {
                self.next_round = now + RETRY.min(self.every);
            }
            return false;
        }
        if let Some(me) = self.me.as_ref().filter(|_| advertise_due) {
            self.next_round = now + self.every;
            let item = Item {
                key: key_of(bucket_of(ring.me().id)),
                name: me.turn.to_string(),
                kind: KIND.to_string(),
                value: serde_json::to_vec(me).unwrap_or_default(),
                version: self.wall_ms
                    + now.saturating_duration_since(self.started).as_millis() as u64
                    + 1,
                expires: now + self.every * 3,
                writer: Default::default(),
                signature: Vec::new(),
                proof: None,
            };
            self.storing = Some(ring.store(item, now));
        }
        self.asked = false;
        self.gathered.clear();
        for bucket in 0..BUCKETS {
            self.in_flight.insert(ring.fetch(key_of(bucket), now));
        }
        true
    }

    /// Takes the answer to one of our fetches.
    pub fn on_ring_event(&mut self, event: &RingEvent, now: Instant) {
        if let RingEvent::StoreDone { op, result } = event
            && self.storing == Some(*op)
        {
            self.storing = None;
            if result.is_err() {
                // Stored nowhere: again soon rather than a period later.
                self.next_round = self.next_round.min(now + RETRY);
            }
            return;
        }
        let RingEvent::FetchDone { op, result } = event else {
            return;
        };
        if !self.in_flight.remove(op) {
            return;
        }
        // A bucket that could not be fetched adds nothing this round.
        if let Ok(items) = result {
            for item in items.iter().filter(|i| i.kind == KIND && i.expires > now) {
                if self.gathered.len() >= MAX_KNOWN {
                    break;
                }
                let Ok(record) = serde_json::from_slice::<TurnRecord>(&item.value) else {
                    continue;
                };
                if self.gathered.iter().all(|(r, _)| r.turn != record.turn) {
                    self.gathered.push((record, item.expires));
                }
            }
        }
        if self.in_flight.is_empty() {
            self.known = std::mem::take(&mut self.gathered);
            self.learnt = Some(now);
            self.answered.extend(self.waiting.drain(..));
        }
    }

    /// The servers seen in the last round, with their expiries.
    pub fn known(&self) -> &[(TurnRecord, Instant)] {
        &self.known
    }

    /// An asker whose answer is ready.
    pub fn poll_answered(&mut self) -> Option<u64> {
        self.answered.pop_front()
    }
}

#[cfg(test)]
#[path = "relays_tests.rs"]
mod tests;
