//! The items held here: merging stores, removing, expiring, telling primary
//! from replica, and keeping the replicas on the next successors in step.
//! Every change is checked first (`policy.rs`: who may change a record) and
//! bounded (items per writer).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use tracing::debug;

use super::held::KeyItems;
use super::policy::{self, RecordPolicy};
use super::requests::Pending;
use super::seal::ItemSeal;
use super::{Item, NodeId, Peer, Refusal, Ring, RingRequest, State};

/// Items per Store/Transfer message.
pub(super) const ITEMS_PER_MESSAGE: usize = 64;
/// Writers per Store/Transfer message: in certificate mode a message
/// carries each writer's certificate (about 1 kB each).
pub(super) const WRITERS_PER_MESSAGE: usize = 8;

/// `items` cut into messages of at most [`ITEMS_PER_MESSAGE`] items and
/// [`WRITERS_PER_MESSAGE`] writers.
pub(super) fn batches(items: &[Item]) -> Vec<Vec<Item>> {
    let mut out: Vec<Vec<Item>> = Vec::new();
    let mut writers: Vec<NodeId> = Vec::new();
    for item in items {
        let new_writer = !writers.contains(&item.writer);
        let full = out.last().is_none_or(|b| {
            b.len() >= ITEMS_PER_MESSAGE || (new_writer && writers.len() >= WRITERS_PER_MESSAGE)
        });
        if full {
            out.push(Vec::new());
            writers.clear();
        }
        if !writers.contains(&item.writer) {
            writers.push(item.writer);
        }
        if let Some(batch) = out.last_mut() {
            batch.push(item.clone());
        }
    }
    out
}

/// The items held here, and what the replicas were last sent.
#[derive(Default)]
pub(super) struct Storage {
    /// Items by key, then by name: a store or remove finds its item at once
    /// however many share the key.
    pub(super) items: BTreeMap<NodeId, KeyItems>,
    /// Our predecessor when the replicas were last brought up to date.
    pub(super) synced_pred: Option<NodeId>,
    /// The replicas then.
    pub(super) synced_replicas: Vec<SocketAddr>,
    /// Items held per writer (counted again at each purge).
    pub(super) per_writer: HashMap<NodeId, usize>,
    /// Who may take over another writer's record, set by the overlay.
    pub(super) policy: Option<Box<dyn RecordPolicy>>,
    /// Signs our items and removes and checks others' (certificate mode).
    pub(super) seal: Option<Box<dyn ItemSeal>>,
    /// Changes refused: not the writer's, and over the writer's limit.
    pub(super) refused: RecordRefusals,
    /// The (key, name) of every item changed since the journal was last
    /// taken, when the node keeps its items on disk (`Ring::keep_journal`).
    pub(super) journal: Option<BTreeSet<(NodeId, String)>>,
    /// Items stored here outside this node's range and handed on to their
    /// key's successor ([`Ring::hand_on_strays`]).
    pub(super) handed_on: u64,
}

/// A change to the items held here, for the driver to write down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The item now held under its (key, name).
    Put(Item),
    /// Nothing is held under (key, name) any more.
    Delete { key: NodeId, name: String },
}

/// Changes to records this node refused, since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecordRefusals {
    /// A store or remove by a node that may not change the record.
    pub not_writer: u64,
    /// A new item from a writer that already had its limit here.
    pub over_limit: u64,
    /// An item or a remove without a valid signature of its writer or
    /// remover (certificate mode): stored, fetched or removed.
    pub bad_signature: u64,
}

impl Storage {
    /// One item of `writer` fewer.
    fn uncount(&mut self, writer: NodeId) {
        if let Some(n) = self.per_writer.get_mut(&writer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_writer.remove(&writer);
            }
        }
    }

    /// The live items whose key is in the arc `(from, to]` (the whole circle
    /// when `from == to`).
    pub(super) fn live_in(&self, from: NodeId, to: NodeId, now: Instant) -> Vec<Item> {
        self.items
            .values()
            .flat_map(|m| m.values())
            .filter(|i| i.key.in_open_closed(from, to) && i.expires > now)
            .cloned()
            .collect()
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

    /// Records that the item under (key, name) changed, when keeping a journal.
    fn note(&mut self, key: NodeId, name: &str) {
        if let Some(journal) = &mut self.storage.journal {
            journal.insert((key, name.to_string()));
        }
    }

    /// From now on, remember every change to the items held here until
    /// [`take_changes`](Self::take_changes) hands them out.
    pub fn keep_journal(&mut self) {
        self.storage.journal.get_or_insert_with(BTreeSet::new);
    }

    /// The changes since the last call, each (key, name) once with its
    /// state now; empty without a journal.
    pub fn take_changes(&mut self) -> Vec<Change> {
        let Some(journal) = &mut self.storage.journal else {
            return Vec::new();
        };
        if journal.is_empty() {
            return Vec::new();
        }
        let noted = std::mem::take(journal);
        noted
            .into_iter()
            .map(
                |(key, name)| match self.storage.items.get(&key).and_then(|l| l.get(&name)) {
                    Some(item) => Change::Put(item.clone()),
                    None => Change::Delete { key, name },
                },
            )
            .collect()
    }

    /// Items read back from disk at start: held as if stored, not journaled
    /// again; the replicas are brought up to date once the ring is joined
    /// (`resync`).
    pub fn restore(&mut self, items: Vec<Item>, now: Instant) {
        let journal = self.storage.journal.take();
        for item in items {
            self.merge(item, now);
        }
        self.storage.journal = journal;
    }

    /// Who may take over another writer's record (the overlay's rules).
    pub fn set_record_policy(&mut self, policy: Box<dyn RecordPolicy>) {
        self.storage.policy = Some(policy);
    }

    /// Signs this node's items and removes, and checks everybody's before
    /// they are stored, used or done (`seal.rs`).
    pub fn set_item_seal(&mut self, seal: Box<dyn ItemSeal>) {
        self.storage.seal = Some(seal);
    }

    /// Signs an item this node writes, when items are signed.
    pub(super) fn sign_item(&mut self, item: &mut Item, now: Instant) {
        if let Some(seal) = &mut self.storage.seal {
            seal.sign_item(item, now);
        }
    }

    /// This node's signature over a remove it asks for (empty when items
    /// are not signed).
    pub(super) fn sign_remove(&mut self, key: NodeId, name: &str, now: Instant) -> Vec<u8> {
        match &mut self.storage.seal {
            Some(seal) => seal.sign_remove(key, name, self.me.id, now),
            None => Vec::new(),
        }
    }

    /// Whether a fetched item may be used: its writer's valid signature
    /// (always, when items are not signed); a forged one is counted.
    pub(super) fn fetched_item_holds(&mut self, item: &mut Item, now: Instant) -> bool {
        let Some(seal) = &mut self.storage.seal else {
            return true;
        };
        match seal.check_item(item, now) {
            Some(expires) => {
                item.expires = expires;
                true
            }
            None => {
                self.storage.refused.bad_signature += 1;
                debug!(writer = %item.writer.short(), name = %item.name, "fetched item without its writer's signature");
                false
            }
        }
    }

    /// The changes to records refused here so far.
    /// How many items this node took as holder outside its range and handed
    /// on to their key's successor.
    pub fn items_handed_on(&self) -> u64 {
        self.storage.handed_on
    }

    pub fn record_refusals(&self) -> RecordRefusals {
        self.storage.refused
    }

    /// Stores what may be stored of `items` from `sender` (`replica`: sent
    /// on by the key's holder, not by the writer); returns the items kept
    /// and the first refusal, if any.
    pub(super) fn store_checked(
        &mut self,
        sender: NodeId,
        replica: bool,
        items: Vec<Item>,
        now: Instant,
    ) -> (Vec<Item>, Option<Refusal>) {
        let mut kept = Vec::with_capacity(items.len());
        let mut refusal = None;
        for mut item in items {
            let checked = match &mut self.storage.seal {
                Some(seal) => match seal.check_item(&item, now) {
                    Some(expires) => {
                        // The writer's expiry, not the one the sender said.
                        item.expires = expires;
                        Ok(())
                    }
                    None => Err(Refusal::BadSignature),
                },
                None => Ok(()),
            };
            match checked.and_then(|()| self.check(sender, replica, &item, now)) {
                Ok(()) => {
                    if self.merge(item.clone(), now) {
                        kept.push(item);
                    }
                }
                Err(why) => {
                    match why {
                        Refusal::TooManyItems => self.storage.refused.over_limit += 1,
                        Refusal::BadSignature => self.storage.refused.bad_signature += 1,
                        _ => self.storage.refused.not_writer += 1,
                    }
                    debug!(sender = %sender.short(), writer = %item.writer.short(), name = %item.name, kind = %item.kind, reason = %why, "record change refused");
                    refusal.get_or_insert(why);
                }
            }
        }
        (kept, refusal)
    }

    /// Whether `item` from `sender` may be stored here: the record policy,
    /// then the writer's limit when it would hold one more item.
    fn check(
        &self,
        sender: NodeId,
        replica: bool,
        item: &Item,
        now: Instant,
    ) -> Result<(), Refusal> {
        let list = self.storage.items.get(&item.key);
        let existing = list.and_then(|l| l.get(&item.name));
        let empty = KeyItems::none();
        policy::check_store(
            self.storage.policy.as_deref(),
            sender,
            replica,
            existing,
            item,
            list.unwrap_or(&empty),
            now,
        )?;
        let grows = existing.is_none_or(|e| e.writer != item.writer);
        let held = self
            .storage
            .per_writer
            .get(&item.writer)
            .copied()
            .unwrap_or(0);
        if grows && held >= self.config.max_items_per_writer {
            return Err(Refusal::TooManyItems);
        }
        Ok(())
    }

    /// Keeps `item` unless an item of the same (key, name) has a higher
    /// version; true when kept. The proof that let it in is not kept.
    pub(super) fn merge(&mut self, mut item: Item, now: Instant) -> bool {
        if item.expires <= now {
            return false;
        }
        item.proof = None;
        let (key, name, writer) = (item.key, item.name.clone(), item.writer);
        // One walk of the map for the key, whatever follows.
        let (old_writer, unchanged) = match self.storage.items.get_mut(&key) {
            Some(list) => {
                let (old_writer, unchanged) = match list.get(&name) {
                    Some(existing) if existing.version > item.version => return false,
                    Some(existing) => (Some(existing.writer), *existing == item),
                    None => (None, false),
                };
                list.insert(item);
                (old_writer, unchanged)
            }
            None => {
                self.storage.items.insert(key, KeyItems::One(item));
                (None, false)
            }
        };
        if !unchanged {
            self.note(key, &name);
        }
        if old_writer != Some(writer) {
            if let Some(old) = old_writer {
                self.storage.uncount(old);
            }
            *self.storage.per_writer.entry(writer).or_insert(0) += 1;
        }
        true
    }

    /// Removes (key, name) when `by` may (and, when items are signed,
    /// `seal` is its fresh signature over the remove); as the key's holder
    /// (`replica` false) from the replicas too, with the same signature.
    pub(super) fn remove_checked(
        &mut self,
        by: NodeId,
        key: NodeId,
        name: &str,
        replica: bool,
        seal: Vec<u8>,
        now: Instant,
    ) -> Result<(), Refusal> {
        if let Some(check) = &mut self.storage.seal
            && !check.check_remove(key, name, by, &seal, now)
        {
            self.storage.refused.bad_signature += 1;
            debug!(by = %by.short(), %name, "remove without a fresh signature of its remover refused");
            return Err(Refusal::BadSignature);
        }
        let existing = self.storage.items.get(&key).and_then(|l| l.get(name));
        if let Err(why) = policy::check_remove(self.storage.policy.as_deref(), by, existing, now) {
            self.storage.refused.not_writer += 1;
            debug!(by = %by.short(), %name, reason = %why, "record removal refused");
            return Err(why);
        }
        if replica {
            self.remove_local(key, name);
        } else {
            self.remove_everywhere(key, name, by, seal, now);
        }
        Ok(())
    }

    /// As the key's holder: remove the item here and from the replicas —
    /// one more than the replicas, since a node that joined recently may
    /// have left a stale copy one further along.
    pub(super) fn remove_everywhere(
        &mut self,
        key: NodeId,
        name: &str,
        by: NodeId,
        seal: Vec<u8>,
        now: Instant,
    ) {
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
                by,
                seal: seal.clone(),
            };
            self.send(to.addr, request, Pending::Push { to }, now);
        }
    }

    pub(super) fn remove_local(&mut self, key: NodeId, name: &str) {
        let Some(list) = self.storage.items.get_mut(&key) else {
            return;
        };
        let gone = list.remove(name);
        if list.is_empty() {
            self.storage.items.remove(&key);
        }
        if let Some(gone) = gone {
            self.storage.uncount(gone.writer);
            self.note(key, name);
        }
    }

    pub(super) fn local_items_at(&self, key: NodeId, now: Instant) -> Vec<Item> {
        self.storage
            .items
            .get(&key)
            .map(|l| l.values().filter(|i| i.expires > now).cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn push_items(&mut self, to: Peer, items: Vec<Item>, now: Instant) {
        if to == self.me {
            return;
        }
        for chunk in batches(&items) {
            let request = RingRequest::Store {
                items: chunk,
                replica: true,
            };
            self.send(to.addr, request, Pending::Push { to }, now);
        }
    }

    /// Which of `items` (by (key, name)) are new here or differ from what is
    /// held: only those are handed on by [`hand_on_strays`](Self::hand_on_strays),
    /// so two nodes with crossed views cannot pass an item back and forth.
    pub(super) fn changed_here(&self, items: &[Item]) -> Vec<(NodeId, String)> {
        items
            .iter()
            .filter(|i| {
                self.storage
                    .items
                    .get(&i.key)
                    .and_then(|l| l.get(&i.name))
                    .is_none_or(|held| held != *i)
            })
            .map(|i| (i.key, i.name.clone()))
            .collect()
    }

    /// Items stored here as their key's holder although this node's range
    /// (from its predecessor) does not cover the key: the writer routed by a
    /// stale view (e.g. a successor list that fell back on a far finger
    /// while its successors died). They stay here, and go on to the key's
    /// successor in the writer's name, signature untouched, so that the
    /// true holder has them: nobody else would repair them, since the writer
    /// only stores again when the node that took them dies.
    pub(super) fn hand_on_strays(
        &mut self,
        kept: Vec<Item>,
        changed: &[(NodeId, String)],
        now: Instant,
    ) {
        if self.neighbours.predecessor.is_none() {
            return;
        }
        for item in kept {
            if self.is_primary(item.key) || !changed.contains(&(item.key, item.name.clone())) {
                continue;
            }
            debug!(key = %item.key.short(), name = %item.name, "stored here outside this node's range: handed on to the key's successor");
            self.storage.handed_on += 1;
            self.store_again(item, now);
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
        let journal = &mut self.storage.journal;
        self.storage.items.retain(|key, items| {
            items.retain(|i| {
                let live = i.expires > now;
                if !live && let Some(journal) = journal.as_mut() {
                    journal.insert((*key, i.name.clone()));
                }
                live
            });
            !items.is_empty()
        });
        let mut counts: HashMap<NodeId, usize> = HashMap::new();
        for item in self.storage.items.values().flat_map(|m| m.values()) {
            *counts.entry(item.writer).or_insert(0) += 1;
        }
        self.storage.per_writer = counts;
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_batch_holds_few_writers_and_few_items() {
        let now = Instant::now();
        let items: Vec<Item> = (0..200u8)
            .map(|n| Item {
                key: NodeId([n; 20]),
                name: n.to_string(),
                kind: "binding".into(),
                value: Vec::new(),
                version: 1,
                expires: now + Duration::from_secs(60),
                writer: NodeId([n % 20; 20]),
                signature: Vec::new(),
                proof: None,
            })
            .collect();
        let cut = batches(&items);
        assert_eq!(cut.iter().map(Vec::len).sum::<usize>(), 200);
        for batch in &cut {
            let mut writers: Vec<NodeId> = batch.iter().map(|i| i.writer).collect();
            writers.sort();
            writers.dedup();
            assert!(batch.len() <= ITEMS_PER_MESSAGE && writers.len() <= WRITERS_PER_MESSAGE);
        }
        let one_writer: Vec<Item> = items
            .iter()
            .cloned()
            .map(|mut i| {
                i.writer = NodeId([1; 20]);
                i
            })
            .collect();
        assert_eq!(batches(&one_writer).len(), 4);
        assert!(batches(&[]).is_empty());
    }
}

#[cfg(test)]
mod journal_tests {
    use std::time::Duration;

    use super::*;
    use crate::ring::{RingConfig, RingEvent};

    fn item(name: &str, version: u64, now: Instant) -> Item {
        Item {
            key: NodeId::of_key("alice@overlay.test"),
            name: name.into(),
            kind: "binding".into(),
            value: name.as_bytes().to_vec(),
            version,
            expires: now + Duration::from_secs(60),
            writer: NodeId::of_addr("127.0.0.1:5060".parse().expect("addr")),
            signature: Vec::new(),
            proof: None,
        }
    }

    #[test]
    fn the_journal_names_each_change_once_with_its_state_now() {
        let now = Instant::now();
        let mut ring = Ring::new(
            "127.0.0.1:5060".parse().expect("addr"),
            RingConfig::default(),
            now,
        );
        ring.store(item("a", 1, now), now);
        assert!(ring.take_changes().is_empty(), "no journal kept yet");
        ring.restore(vec![item("r", 1, now)], now);
        ring.keep_journal();
        assert!(
            ring.take_changes().is_empty(),
            "restored items are not journaled"
        );
        ring.store(item("b", 1, now), now);
        ring.store(item("b", 2, now), now);
        // An older version changes nothing.
        ring.store(item("a", 0, now), now);
        let changes = ring.take_changes();
        assert_eq!(changes, vec![Change::Put(item("b", 2, now))]);
        ring.remove(NodeId::of_key("alice@overlay.test"), "a".into(), now);
        while ring
            .poll_event()
            .is_some_and(|e| !matches!(e, RingEvent::StoreDone { .. }))
        {}
        let key = NodeId::of_key("alice@overlay.test");
        assert_eq!(
            ring.take_changes(),
            vec![Change::Delete {
                key,
                name: "a".into()
            }]
        );
        // Expired items purged are deletes too.
        ring.purge(now + Duration::from_secs(61));
        let mut purged = ring.take_changes();
        purged.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(purged.len(), 2, "{purged:?}");
        assert!(purged.iter().all(|c| matches!(c, Change::Delete { .. })));
    }
}
