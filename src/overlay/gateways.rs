//! Gateway nodes advertise themselves in the ring, so every gateway of an
//! overlay domain serves the same DNS answer.
//!
//! Each gateway stores, every period, one short-lived item under
//! SHA-1("gateway:" + domain), named by its own address; then it fetches all
//! items under that key and reports the live set. A gateway that joins shows
//! up within one period; one that leaves or fails drops out when its item
//! expires, a few periods later.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ring::{Item, NodeId, OpId, Ring, RingEvent};

/// The item kind of a gateway advertisement.
pub const KIND: &str = "gateway";

/// What a gateway tells about itself (the value of its item).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct GatewayRecord {
    /// Host label in the zone, e.g. "gw-3f2a9c".
    pub name: String,
    pub addr: IpAddr,
    pub udp: Option<u16>,
    pub tcp: Option<u16>,
    pub tls: Option<u16>,
}

/// The ring key of a domain's gateway set.
pub fn key_of(domain: &str) -> NodeId {
    NodeId::of_key(&format!("gateway:{domain}"))
}

/// This node's advertisements and the sets it has seen.
pub struct Gateways {
    me: GatewayRecord,
    /// When advertising began: versions count milliseconds from here.
    started: Instant,
    domains: Vec<String>,
    every: Duration,
    /// How long an advertisement lives without a refresh.
    lifetime: Duration,
    next_round: Instant,
    in_flight: HashMap<OpId, String>,
    seen: HashMap<String, Vec<GatewayRecord>>,
    changes: VecDeque<(String, Vec<GatewayRecord>)>,
    stopped: bool,
}

impl Gateways {
    pub fn new(me: GatewayRecord, domains: Vec<String>, every: Duration, now: Instant) -> Gateways {
        Gateways {
            me,
            started: now,
            domains,
            every,
            lifetime: every * 3,
            next_round: now,
            in_flight: HashMap::new(),
            seen: HashMap::new(),
            changes: VecDeque::new(),
            stopped: false,
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.stopped).then_some(self.next_round)
    }

    /// Stops advertising (the node leaves).
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Runs a round when due: store our item, fetch the set. True when it did.
    pub fn start_ops(&mut self, ring: &mut Ring, now: Instant) -> bool {
        if self.stopped || now < self.next_round || !self.in_flight.is_empty() {
            return false;
        }
        self.next_round = now + self.every;
        let value = serde_json::to_vec(&self.me).unwrap_or_default();
        for domain in &self.domains {
            let item = Item {
                key: key_of(domain),
                name: format!(
                    "{}:{}",
                    self.me.addr,
                    self.me.udp.or(self.me.tcp).unwrap_or(0)
                ),
                kind: KIND.to_string(),
                value: value.clone(),
                version: version_of(self.started, now),
                expires: now + self.lifetime,
                writer: Default::default(),
                signature: Vec::new(),
                proof: None,
            };
            ring.store(item, now);
            let op = ring.fetch(key_of(domain), now);
            self.in_flight.insert(op, domain.clone());
        }
        true
    }

    /// Takes the answer to one of our fetches.
    pub fn on_ring_event(&mut self, event: &RingEvent) {
        let RingEvent::FetchDone { op, result } = event else {
            return;
        };
        let Some(domain) = self.in_flight.remove(op) else {
            return;
        };
        let Ok(items) = result else {
            return;
        };
        let mut set: Vec<GatewayRecord> = items
            .iter()
            .filter(|i| i.kind == KIND)
            .filter_map(|i| serde_json::from_slice(&i.value).ok())
            .collect();
        set.sort();
        set.dedup();
        if self.seen.get(&domain) != Some(&set) {
            self.seen.insert(domain.clone(), set.clone());
            self.changes.push_back((domain, set));
        }
    }

    /// The live gateway set last seen of each domain.
    pub fn sets(&self) -> impl Iterator<Item = (&String, &Vec<GatewayRecord>)> {
        self.seen.iter()
    }

    /// A domain whose live gateway set changed.
    pub fn poll_change(&mut self) -> Option<(String, Vec<GatewayRecord>)> {
        self.changes.pop_front()
    }
}

/// Advertisements replace older ones of the same name: the version grows
/// with time since advertising began. That is enough, since each gateway
/// only ever replaces its own item.
fn version_of(started: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(started).as_millis() as u64 + 1
}
