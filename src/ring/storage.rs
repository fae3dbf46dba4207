//! The items held here: merging stores, removing, expiring, telling primary
//! from replica, and keeping the replicas on the next successors in step.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::net::SocketAddr;
use std::time::Instant;

use super::requests::Pending;
use super::{Item, NodeId, Peer, Ring, RingRequest, State};

/// Items per Store/Transfer message.
pub(super) const ITEMS_PER_MESSAGE: usize = 64;

/// The items held here, and what the replicas were last sent.
#[derive(Default)]
pub(super) struct Storage {
    /// Items by key and name, in one map: a store or remove finds its item
    /// at once however many share the key, and a key with one item (an
    /// AOR's bindings) costs one entry, not a map of its own (a B-tree
    /// leaf is eleven slots: 1.6 KB per registration when each key had one).
    pub(super) items: BTreeMap<(NodeId, String), Item>,
    /// Our predecessor when the replicas were last brought up to date.
    pub(super) synced_pred: Option<NodeId>,
    /// The replicas then.
    pub(super) synced_replicas: Vec<SocketAddr>,
}

impl Storage {
    /// The live items whose key is in the arc `(from, to]` (the whole circle
    /// when `from == to`).
    pub(super) fn live_in(&self, from: NodeId, to: NodeId, now: Instant) -> Vec<Item> {
        self.items
            .values()
            .filter(|i| i.key.in_open_closed(from, to) && i.expires > now)
            .cloned()
            .collect()
    }

    /// The items under `key`, expired ones included.
    pub(super) fn at(&self, key: NodeId) -> impl Iterator<Item = &Item> {
        self.items
            .range((key, String::new())..)
            .take_while(move |((k, _), _)| *k == key)
            .map(|(_, item)| item)
    }

    /// Keeps `item`, unless one of the same key and name has a higher version.
    pub(super) fn merge(&mut self, item: Item) {
        match self.items.entry((item.key, item.name.clone())) {
            Entry::Occupied(mut existing) => {
                if existing.get().version <= item.version {
                    existing.insert(item);
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(item);
            }
        }
    }
}

impl Ring {
    pub(super) fn is_primary(&self, key: NodeId) -> bool {
        match self.neighbours.predecessor {
            Some(pred) => key.in_open_closed(pred.id, self.me.id),
            None => self.neighbours.successors.is_empty(),
        }
    }

    pub(super) fn replica_targets(&self) -> Vec<Peer> {
        self.neighbours
            .successors
            .iter()
            .take(self.config.replicas.saturating_sub(1))
            .copied()
            .collect()
    }

    pub(super) fn merge(&mut self, item: Item, now: Instant) {
        if item.expires <= now {
            return;
        }
        self.storage.merge(item);
    }

    /// As the key's holder: remove the item here and from the replicas —
    /// one more than the replicas, since a node that joined recently may
    /// have left a stale copy one further along.
    pub(super) fn remove_everywhere(&mut self, key: NodeId, name: &str, now: Instant) {
        self.remove_local(key, name);
        let targets: Vec<Peer> = self
            .neighbours
            .successors
            .iter()
            .take(self.config.replicas)
            .copied()
            .collect();
        for to in targets {
            let request = RingRequest::Remove {
                key,
                name: name.to_string(),
                replica: true,
            };
            self.send(to.addr, request, Pending::Push { to }, now);
        }
    }

    pub(super) fn remove_local(&mut self, key: NodeId, name: &str) {
        self.storage.items.remove(&(key, name.to_string()));
    }

    pub(super) fn local_items_at(&self, key: NodeId, now: Instant) -> Vec<Item> {
        self.storage
            .at(key)
            .filter(|i| i.expires > now)
            .cloned()
            .collect()
    }

    pub(super) fn push_items(&mut self, to: Peer, items: Vec<Item>, now: Instant) {
        if to == self.me {
            return;
        }
        for chunk in items.chunks(ITEMS_PER_MESSAGE) {
            let request = RingRequest::Store {
                items: chunk.to_vec(),
                replica: true,
            };
            self.send(to.addr, request, Pending::Push { to }, now);
        }
    }

    /// Push our primary items to replicas that are new, or to all of them when
    /// our range grew.
    pub(super) fn resync(&mut self, now: Instant) {
        if self.state != State::Active {
            return;
        }
        let replicas = self.replica_targets();
        let Some(pred) = self.neighbours.predecessor else {
            self.storage.synced_pred = None;
            self.storage.synced_replicas = replicas.iter().map(|p| p.addr).collect();
            return;
        };
        let grew = match self.storage.synced_pred {
            None => true,
            Some(old) => old != pred.id && !pred.id.in_open(old, self.me.id),
        };
        let targets: Vec<Peer> = replicas
            .iter()
            .filter(|p| grew || !self.storage.synced_replicas.contains(&p.addr))
            .copied()
            .collect();
        self.storage.synced_pred = Some(pred.id);
        self.storage.synced_replicas = replicas.iter().map(|p| p.addr).collect();
        if targets.is_empty() || self.storage.items.is_empty() {
            return;
        }
        let primary = self.storage.live_in(pred.id, self.me.id, now);
        if primary.is_empty() {
            return;
        }
        for to in targets {
            self.push_items(to, primary.clone(), now);
        }
    }

    pub(super) fn purge(&mut self, now: Instant) {
        let keep = self.config.stabilize_every * 10;
        self.neighbours
            .heard
            .retain(|_, t| now.saturating_duration_since(*t) <= keep);
        self.storage.items.retain(|_, i| i.expires > now);
    }
}
