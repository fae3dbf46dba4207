//! Bindings kept in the ring: the location store of an overlay node.
//!
//! The bindings of an address-of-record are one ring item under
//! SHA-1(aor), named by the AOR, holding the bindings in a compact binary
//! form ([`record`], expiry as seconds left). An emptied record stays as
//! a tombstone for a while, so a call then gets 480 rather than 404.
//! Lookups for routing may be answered from a short cache of recent answers
//! (the seed's "known buddies, use cache first"); a failed call drops the entry.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::messages::record::MESSAGE_KIND;
use crate::registrar::binding::{Aor, Binding};
use crate::registrar::location::{
    LocationAnswer, LocationError, LocationOp, LocationStore, Lookup,
};
use crate::registrar::record;
use crate::ring::{Item, NodeId, OpId, Ring, RingError, RingEvent};
use crate::voicemail::record::VOICEMAIL_KIND;

/// How long a looked-up binding set may be used without asking the ring.
pub const CACHE_FOR: Duration = Duration::from_secs(30);
/// How long an emptied record is kept.
const TOMBSTONE_FOR: Duration = Duration::from_secs(3600);
/// At most this many AORs' "mail seen" answers are kept.
const MAIL_SEEN_BOUND: usize = 100_000;
/// The item kind of a binding set.
pub const KIND: &str = "binding";

enum Queued {
    Fetch(Aor),
    Save(Aor, Vec<Binding>),
}

enum InFlight {
    Fetch(Aor),
    Save(Aor, Vec<Binding>),
}

/// The location store in the ring.
#[derive(Default)]
pub struct RingLocation {
    queued: VecDeque<(LocationOp, Queued)>,
    in_flight: HashMap<OpId, (LocationOp, InFlight)>,
    answers: VecDeque<(LocationOp, LocationAnswer)>,
    cache: HashMap<Aor, (Vec<Binding>, Instant)>,
    /// Highest item version seen per AOR, so a save supersedes it.
    versions: HashMap<Aor, u64>,
    /// AORs (by ring key: no string per registration) with live bindings
    /// saved through this node, with their latest expiry (for metrics).
    saved_here: HashMap<NodeId, Instant>,
    /// The digest `Authorization` of the REGISTER whose save is next, per
    /// AOR: sent with the item as the proof that this node authenticated
    /// the user (`records.rs`), never stored.
    proofs: HashMap<Aor, String>,
    /// Per AOR, whether the last fetch of her key found stored messages or
    /// voicemail beside her bindings: a REGISTER's own fetch tells, so the
    /// delivery after it needs no second fetch when there is nothing.
    mail: HashMap<Aor, bool>,
}

impl RingLocation {
    pub fn new() -> RingLocation {
        RingLocation::default()
    }

    /// Drops a cached answer (the call to it failed).
    pub fn forget(&mut self, aor: &Aor) {
        self.cache.remove(aor);
    }

    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// The REGISTER about to be saved for `aor` carried `authorization`,
    /// which this node checked: it goes with the item as its proof.
    pub fn prove(&mut self, aor: &Aor, authorization: &str) {
        self.proofs.insert(aor.clone(), authorization.to_string());
    }

    /// Whether the last fetch of `aor`'s key found messages or voicemail
    /// stored for her (`None`: no fetch told since the last ask).
    pub fn take_mail_seen(&mut self, aor: &Aor) -> Option<bool> {
        self.mail.remove(aor)
    }

    /// Hands queued operations to the ring; true when there were some.
    pub fn start_ops(&mut self, ring: &mut Ring, now: Instant) -> bool {
        let busy = !self.queued.is_empty();
        while let Some((op, queued)) = self.queued.pop_front() {
            match queued {
                Queued::Fetch(aor) => {
                    let id = ring.fetch(NodeId::of_key(aor.as_str()), now);
                    self.in_flight.insert(id, (op, InFlight::Fetch(aor)));
                }
                Queued::Save(aor, bindings) => {
                    let version = self.versions.get(&aor).copied().unwrap_or(0) + 1;
                    self.versions.insert(aor.clone(), version);
                    let mut item = to_item(&aor, &bindings, version, now);
                    item.proof = self.proofs.remove(&aor);
                    let id = ring.store(item, now);
                    self.in_flight
                        .insert(id, (op, InFlight::Save(aor, bindings)));
                }
            }
        }
        busy
    }

    /// Finishes operations the ring completed.
    pub fn on_ring_event(&mut self, event: RingEvent, now: Instant) -> Result<(), RingError> {
        match event {
            RingEvent::FetchDone { op, result } => {
                let Some((location_op, InFlight::Fetch(aor))) = self.in_flight.remove(&op) else {
                    return Ok(());
                };
                let answer = match &result {
                    Ok(items) => Ok(self.read_items(&aor, items, now)),
                    Err(error) => Err(LocationError::Unreachable(error.to_string())),
                };
                if let Ok(Some(bindings)) = &answer
                    && !bindings.is_empty()
                {
                    self.cache.insert(aor, (bindings.clone(), now));
                }
                self.answers.push_back((location_op, answer));
                result.map(|_| ())
            }
            RingEvent::StoreDone { op, result } => {
                let Some((location_op, InFlight::Save(aor, bindings))) = self.in_flight.remove(&op)
                else {
                    return Ok(());
                };
                let answer = match &result {
                    Ok(()) => {
                        if bindings.is_empty() {
                            self.cache.remove(&aor);
                        } else {
                            self.cache.insert(aor, (bindings.clone(), now));
                        }
                        Ok(Some(bindings))
                    }
                    Err(error) => Err(LocationError::Unreachable(error.to_string())),
                };
                self.answers.push_back((location_op, answer));
                result
            }
            _ => Ok(()),
        }
    }

    fn read_items(&mut self, aor: &Aor, items: &[Item], now: Instant) -> Lookup {
        let mail = items
            .iter()
            .any(|i| i.expires > now && (i.kind == MESSAGE_KIND || i.kind == VOICEMAIL_KIND));
        if self.mail.len() >= MAIL_SEEN_BOUND {
            // Fetches for calls are never asked about; a miss costs one fetch.
            self.mail.clear();
        }
        self.mail.insert(aor.clone(), mail);
        let item = items
            .iter()
            .filter(|i| i.kind == KIND && i.name == aor.as_str())
            .max_by_key(|i| i.version)?;
        let seen = self.versions.entry(aor.clone()).or_insert(0);
        *seen = (*seen).max(item.version);
        let mut bindings = record::decode(&item.value, now).unwrap_or_default();
        bindings.retain(|b| b.is_live(now));
        Some(bindings)
    }
}

/// The ring item holding an AOR's bindings.
pub fn to_item(aor: &Aor, bindings: &[Binding], version: u64, now: Instant) -> Item {
    let expires = bindings
        .iter()
        .map(|b| b.expires_at)
        .max()
        .unwrap_or(now + TOMBSTONE_FOR);
    Item {
        key: NodeId::of_key(aor.as_str()),
        name: aor.as_str().to_string(),
        kind: KIND.to_string(),
        value: record::encode(bindings, now),
        version,
        expires,
        writer: Default::default(),
        signature: Vec::new(),
        proof: None,
    }
}

impl LocationStore for RingLocation {
    fn fetch(&mut self, op: LocationOp, aor: &Aor, _now: Instant) {
        self.queued.push_back((op, Queued::Fetch(aor.clone())));
    }

    fn lookup(&mut self, op: LocationOp, aor: &Aor, now: Instant) {
        if let Some((bindings, at)) = self.cache.get(aor)
            && now.saturating_duration_since(*at) < CACHE_FOR
        {
            let live: Vec<Binding> = bindings
                .iter()
                .filter(|b| b.is_live(now))
                .cloned()
                .collect();
            if !live.is_empty() {
                self.answers.push_back((op, Ok(Some(live))));
                return;
            }
        }
        self.fetch(op, aor, now)
    }

    fn save(&mut self, op: LocationOp, aor: &Aor, bindings: Vec<Binding>, _now: Instant) {
        match bindings.iter().map(|b| b.expires_at).max() {
            Some(latest) => {
                self.saved_here.insert(NodeId::of_key(aor.as_str()), latest);
            }
            None => {
                self.saved_here.remove(&NodeId::of_key(aor.as_str()));
            }
        }
        self.queued
            .push_back((op, Queued::Save(aor.clone(), bindings)));
    }

    fn poll_answer(&mut self) -> Option<(LocationOp, LocationAnswer)> {
        self.answers.pop_front()
    }

    fn purge(&mut self, now: Instant) {
        self.cache
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < CACHE_FOR);
        self.saved_here.retain(|_, latest| *latest > now);
        // Every save is preceded by a fetch, which learns the version again.
        // A new map, not `clear()`: that would keep the capacity of the
        // busiest moment (100,000 REGISTERs in 30 s: 4 MB) for good.
        if self.in_flight.is_empty() && self.queued.is_empty() {
            self.versions = HashMap::new();
            self.proofs = HashMap::new();
            self.mail = HashMap::new();
        }
        // Likewise the cache after a burst of lookups or saves.
        if self.cache.capacity() > 4 * (self.cache.len() + 64) {
            self.cache.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.saved_here.len()
    }

    fn forget(&mut self, aor: &Aor) {
        RingLocation::forget(self, aor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(aor: &Aor, kind: &str, expires: Instant) -> Item {
        Item {
            key: NodeId::of_key(aor.as_str()),
            name: format!("{kind}-1"),
            kind: kind.to_string(),
            value: Vec::new(),
            version: 1,
            expires,
            writer: NodeId::default(),
            signature: Vec::new(),
            proof: None,
        }
    }

    #[test]
    fn a_fetch_tells_whether_mail_waits_once() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let alice = Aor::new("alice", "example.com");
        let mut location = RingLocation::new();
        assert_eq!(location.take_mail_seen(&alice), None, "no fetch yet");

        location.read_items(&alice, &[item(&alice, "seen", later)], now);
        assert_eq!(location.take_mail_seen(&alice), Some(false));
        assert_eq!(location.take_mail_seen(&alice), None, "told once");

        for kind in [MESSAGE_KIND, VOICEMAIL_KIND] {
            location.read_items(&alice, &[item(&alice, kind, later)], now);
            assert_eq!(location.take_mail_seen(&alice), Some(true), "{kind}");
        }
        // An expired message is no mail.
        location.read_items(&alice, &[item(&alice, MESSAGE_KIND, now)], now);
        assert_eq!(location.take_mail_seen(&alice), Some(false));
    }
}
