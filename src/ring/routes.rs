//! Cached routes to a key's successor: when a key's holder answered one of
//! our operations (a fetch with items, a store), the next operation for the
//! same key goes straight to it, without a lookup — a REGISTER's store
//! right after its fetch, a call right after another. An entry lives for
//! two stabilize periods, is dropped when its holder fails us, and the
//! whole cache is cleared on every change of our predecessor or successor
//! list (the ring moved near us). A cached route to this node itself is
//! taken only while this node is the key's primary.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{NodeId, Peer};

/// Cached routes kept at most; beyond, the cache starts afresh.
const MAX_ROUTES: usize = 4096;

/// A key's holder as it last answered us, and the replicas named with it.
#[derive(Clone, Debug)]
pub(super) struct Route {
    pub(super) holder: Peer,
    pub(super) replicas: Vec<Peer>,
    at: Instant,
}

/// The cache, by key.
#[derive(Default)]
pub(super) struct Routes {
    map: HashMap<NodeId, Route>,
}

impl Routes {
    /// `holder` answered for `key` at `now`.
    pub(super) fn learn(&mut self, key: NodeId, holder: Peer, replicas: Vec<Peer>, now: Instant) {
        if self.map.len() >= MAX_ROUTES && !self.map.contains_key(&key) {
            self.map.clear();
        }
        self.map.insert(
            key,
            Route {
                holder,
                replicas,
                at: now,
            },
        );
    }

    /// The route to `key` learnt within `fresh_for`, if any.
    pub(super) fn get(&self, key: NodeId, fresh_for: Duration, now: Instant) -> Option<&Route> {
        self.map
            .get(&key)
            .filter(|r| now.saturating_duration_since(r.at) < fresh_for)
    }

    /// The route to `key` failed us.
    pub(super) fn forget(&mut self, key: NodeId) {
        self.map.remove(&key);
    }

    /// The ring changed near us: every route may be stale.
    pub(super) fn clear(&mut self) {
        self.map.clear();
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}
