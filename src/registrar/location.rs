//! The location service: where bindings are kept. A trait, so that the same
//! registrar and proxy work over memory (one node) or the ring (the overlay).
//!
//! The trait is sans-I/O like the rest of the node: an operation is started
//! with an id, and its answer is polled later — at once for memory, after
//! some messages for the ring.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::time::Instant;

use super::binding::{Aor, Binding};

/// Names an operation on the store, so its answer can be matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocationOp(pub u64);

/// The bindings of an address-of-record: `None` when it was never
/// registered, `Some(empty)` when it was but none is live.
pub type Lookup = Option<Vec<Binding>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("the location store is unreachable: {0}")]
    Unreachable(String),
}

/// The answer to an operation.
pub type LocationAnswer = Result<Lookup, LocationError>;

/// Where bindings live.
pub trait LocationStore {
    /// Starts fetching the live bindings of `aor`.
    fn fetch(&mut self, op: LocationOp, aor: &Aor, now: Instant);
    /// Starts a lookup for routing a request: like [`fetch`](Self::fetch),
    /// but a store may answer from a cache of recent answers.
    fn lookup(&mut self, op: LocationOp, aor: &Aor, now: Instant) {
        self.fetch(op, aor, now)
    }
    /// A request routed by a looked-up answer failed: drop any cached answer.
    fn forget(&mut self, _aor: &Aor) {}
    /// Starts replacing the bindings of `aor` by `bindings` (empty: remove all).
    /// The answer carries the bindings as saved.
    fn save(&mut self, op: LocationOp, aor: &Aor, bindings: Vec<Binding>, now: Instant);
    /// The next finished operation.
    fn poll_answer(&mut self) -> Option<(LocationOp, LocationAnswer)>;
    /// Drops expired bindings (called from the node's housekeeping timer).
    fn purge(&mut self, now: Instant);
    /// How many addresses-of-record have live bindings here.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bindings in this process's memory: the location store of a lone node.
#[derive(Default)]
pub struct MemoryLocation {
    records: HashMap<Aor, Vec<Binding>>,
    answers: VecDeque<(LocationOp, LocationAnswer)>,
}

impl MemoryLocation {
    pub fn new() -> MemoryLocation {
        MemoryLocation::default()
    }
}

impl LocationStore for MemoryLocation {
    fn fetch(&mut self, op: LocationOp, aor: &Aor, now: Instant) {
        let found = self.records.get(aor).map(|bindings| {
            bindings
                .iter()
                .filter(|b| b.is_live(now))
                .cloned()
                .collect()
        });
        self.answers.push_back((op, Ok(found)));
    }

    fn save(&mut self, op: LocationOp, aor: &Aor, bindings: Vec<Binding>, _now: Instant) {
        // An emptied record is kept, so later lookups tell 480 from 404.
        self.records.insert(aor.clone(), bindings.clone());
        self.answers.push_back((op, Ok(Some(bindings))));
    }

    fn poll_answer(&mut self) -> Option<(LocationOp, LocationAnswer)> {
        self.answers.pop_front()
    }

    fn purge(&mut self, now: Instant) {
        for bindings in self.records.values_mut() {
            bindings.retain(|b| b.is_live(now));
        }
    }

    fn len(&self) -> usize {
        self.records.values().filter(|b| !b.is_empty()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn binding(contact: &str, expires_at: Instant) -> Binding {
        Binding {
            contact: contact.into(),
            q: None,
            expires_at,
            call_id: "c".into(),
            cseq: 1,
            path: vec![],
            source: None,
            behind_nat: false,
            flow: None,
        }
    }

    #[test]
    fn tells_never_registered_from_expired() {
        let now = Instant::now();
        let mut store = MemoryLocation::new();
        let alice = Aor::new("alice", "example.test");
        store.fetch(LocationOp(1), &alice, now);
        assert_eq!(store.poll_answer(), Some((LocationOp(1), Ok(None))));
        let b = binding("sip:alice@127.0.0.1:5090", now + Duration::from_secs(10));
        store.save(LocationOp(2), &alice, vec![b.clone()], now);
        assert_eq!(
            store.poll_answer(),
            Some((LocationOp(2), Ok(Some(vec![b]))))
        );
        assert_eq!(store.len(), 1);
        store.fetch(LocationOp(3), &alice, now + Duration::from_secs(11));
        assert_eq!(store.poll_answer(), Some((LocationOp(3), Ok(Some(vec![])))));
        store.purge(now + Duration::from_secs(11));
        assert_eq!(store.len(), 0);
    }
}
