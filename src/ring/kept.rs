//! Items stored through this node (the bindings of the phones registered
//! here, a gateway's record): kept in memory until they expire or are
//! removed, so that the node can store them again when the holder it stored
//! them on dies. With this a record is lost only when its registrar and all
//! of its r holders die together. The only place they live: a durable copy
//! on disk would hook in here.

use std::collections::BTreeMap;
use std::time::Instant;

use super::held::{KeyItems, Named};
use super::{Item, NodeId, Peer};

/// At most this many items are kept; beyond, new stores are not kept (they
/// still go to the ring).
const MAX_KEPT: usize = 100_000;

/// One item stored through this node, and the holder that took it.
pub(super) struct KeptItem {
    pub(super) item: Item,
    /// The key's successor that acknowledged the last store; `None` while a
    /// store is under way or failed.
    pub(super) holder: Option<Peer>,
}

impl Named for KeptItem {
    fn name(&self) -> &str {
        &self.item.name
    }
}

/// The items stored through this node, by key, then by name.
#[derive(Default)]
pub(super) struct Kept {
    items: BTreeMap<NodeId, KeyItems<KeptItem>>,
    /// How many items, under all keys.
    count: usize,
}

impl Kept {
    /// Remember `item` (replacing an older version of it).
    pub(super) fn keep(&mut self, item: &Item) {
        if let Some(k) = self
            .items
            .get_mut(&item.key)
            .and_then(|l| l.get_mut(&item.name))
        {
            if k.item.version <= item.version {
                k.item = item.clone();
                k.holder = None;
            }
            return;
        }
        if self.count >= MAX_KEPT {
            return;
        }
        let kept = KeptItem {
            item: item.clone(),
            holder: None,
        };
        match self.items.get_mut(&item.key) {
            Some(list) => list.insert(kept),
            None => {
                self.items.insert(item.key, KeyItems::One(kept));
            }
        }
        self.count += 1;
    }

    /// Whether `item` (this version or a newer one) is kept.
    pub(super) fn has(&self, item: &Item) -> bool {
        self.items
            .get(&item.key)
            .and_then(|l| l.get(&item.name))
            .is_some_and(|k| k.item.version >= item.version)
    }

    /// The item was removed through this node: forget it.
    pub(super) fn forget(&mut self, key: NodeId, name: &str) {
        let Some(list) = self.items.get_mut(&key) else {
            return;
        };
        if list.remove(name).is_some() {
            self.count = self.count.saturating_sub(1);
        }
        if list.is_empty() {
            self.items.remove(&key);
        }
    }

    /// `holder` acknowledged the store of `item`.
    pub(super) fn stored(&mut self, item: &Item, holder: Peer) {
        if let Some(k) = self
            .items
            .get_mut(&item.key)
            .and_then(|l| l.get_mut(&item.name))
            && k.item.version == item.version
        {
            k.holder = Some(holder);
        }
    }

    /// Drop what expired.
    pub(super) fn purge(&mut self, now: Instant) {
        let mut count = 0;
        self.items.retain(|_, list| {
            list.retain(|k| k.item.expires > now);
            count += list.len();
            !list.is_empty()
        });
        self.count = count;
    }

    /// The distinct holders of kept items (to check they live).
    pub(super) fn holders(&self) -> Vec<Peer> {
        let mut out: Vec<Peer> = Vec::new();
        for h in self
            .items
            .values()
            .flat_map(|l| l.values())
            .filter_map(|k| k.holder)
        {
            if !out.contains(&h) {
                out.push(h);
            }
        }
        out
    }

    /// The live items with no holder known, or held by `dead`; their holder
    /// is cleared (a new store is about to start).
    pub(super) fn due_again(&mut self, dead: Option<Peer>, now: Instant) -> Vec<Item> {
        let mut out = Vec::new();
        for k in self.items.values_mut().flat_map(|l| l.values_mut()) {
            if k.item.expires <= now {
                continue;
            }
            let again = match dead {
                Some(d) => k.holder == Some(d),
                None => k.holder.is_none(),
            };
            if again {
                k.holder = None;
                out.push(k.item.clone());
            }
        }
        out
    }

    pub(super) fn len(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn item(version: u64, now: Instant) -> Item {
        Item {
            key: NodeId::of_key("alice@example.test"),
            name: "alice@example.test".into(),
            kind: "binding".into(),
            value: Vec::new(),
            version,
            expires: now + Duration::from_secs(60),
            writer: NodeId::default(),
            signature: Vec::new(),
            proof: None,
        }
    }

    #[test]
    fn a_dead_holder_brings_its_items_back_and_expiry_drops_them() {
        let now = Instant::now();
        let holder = Peer::of_addr("127.0.0.1:5060".parse().expect("addr"));
        let other = Peer::of_addr("127.0.0.2:5060".parse().expect("addr"));
        let mut kept = Kept::default();
        kept.keep(&item(1, now));
        assert_eq!(kept.due_again(None, now).len(), 1, "no holder yet");
        kept.stored(&item(1, now), holder);
        assert!(kept.due_again(None, now).is_empty());
        assert!(kept.due_again(Some(other), now).is_empty());
        assert_eq!(kept.holders(), vec![holder]);
        assert_eq!(kept.due_again(Some(holder), now).len(), 1);
        // An older version's acknowledgement does not count for a newer one.
        kept.keep(&item(2, now));
        kept.stored(&item(1, now), holder);
        assert_eq!(kept.due_again(None, now).len(), 1);
        assert!(kept.has(&item(2, now)) && kept.has(&item(1, now)));
        assert!(
            !kept.has(&item(3, now)),
            "an older version kept is not this one"
        );
        kept.purge(now + Duration::from_secs(61));
        assert_eq!(kept.len(), 0);
        assert!(!kept.has(&item(2, now)));
    }
}
