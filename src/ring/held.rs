//! The items held under one key, by name, stored as compactly as their
//! number allows.
//!
//! Almost every key holds one item (a user with one phone) or a few (her
//! phones, her credentials, a "seen" mark, a stored message). A `BTreeMap`
//! per key allocates a node sized for eleven entries even for one, which
//! made up most of a held registration's memory; here one item is held
//! inline, a few in a sorted vector, and only a key with many items (a
//! directory shard) pays for a map.

use std::collections::BTreeMap;

use super::Item;

/// Beyond this many items a key's items are kept in a map.
const FEW: usize = 16;

/// What is held by its name under a key.
pub trait Named {
    fn name(&self) -> &str;
}

impl Named for Item {
    fn name(&self) -> &str {
        &self.name
    }
}

/// The items under one key, each under its own name.
#[derive(Debug, Clone)]
pub enum KeyItems<T = Item> {
    /// One item.
    One(T),
    /// Two to [`FEW`] items, sorted by name.
    Few(Vec<T>),
    /// More, by name.
    Many(BTreeMap<String, T>),
}

impl<T: Named> KeyItems<T> {
    /// The item named `name`.
    pub fn get(&self, name: &str) -> Option<&T> {
        match self {
            KeyItems::One(item) => (item.name() == name).then_some(item),
            KeyItems::Few(items) => items
                .binary_search_by(|i| i.name().cmp(name))
                .ok()
                .map(|at| &items[at]),
            KeyItems::Many(items) => items.get(name),
        }
    }

    /// The item named `name`, to change in place (not its name).
    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut T> {
        match self {
            KeyItems::One(item) => (item.name() == name).then_some(item),
            KeyItems::Few(items) => items
                .binary_search_by(|i| i.name().cmp(name))
                .ok()
                .map(|at| &mut items[at]),
            KeyItems::Many(items) => items.get_mut(name),
        }
    }

    /// Holds `item` under its name, replacing an item of the same name.
    pub fn insert(&mut self, item: T) {
        match self {
            KeyItems::One(one) if one.name() == item.name() => *one = item,
            KeyItems::One(_) => {
                let KeyItems::One(one) = std::mem::replace(self, KeyItems::Few(Vec::new())) else {
                    return;
                };
                let mut items = vec![one, item];
                items.sort_by(|a, b| a.name().cmp(b.name()));
                *self = KeyItems::Few(items);
            }
            KeyItems::Few(items) if items.is_empty() => *self = KeyItems::One(item),
            KeyItems::Few(items) => match items.binary_search_by(|i| i.name().cmp(item.name())) {
                Ok(at) => items[at] = item,
                Err(at) if items.len() < FEW => items.insert(at, item),
                Err(_) => {
                    let mut map: BTreeMap<String, T> =
                        items.drain(..).map(|i| (i.name().to_string(), i)).collect();
                    map.insert(item.name().to_string(), item);
                    *self = KeyItems::Many(map);
                }
            },
            KeyItems::Many(items) => {
                items.insert(item.name().to_string(), item);
            }
        }
    }

    /// Takes out the item named `name`. A key left with no item is for the
    /// caller to drop ([`is_empty`](Self::is_empty)).
    pub(super) fn remove(&mut self, name: &str) -> Option<T> {
        let gone = match self {
            KeyItems::One(item) if item.name() == name => {
                match std::mem::replace(self, KeyItems::none()) {
                    KeyItems::One(item) => Some(item),
                    _ => None,
                }
            }
            KeyItems::One(_) => None,
            KeyItems::Few(items) => {
                let at = items.binary_search_by(|i| i.name().cmp(name)).ok()?;
                Some(items.remove(at))
            }
            KeyItems::Many(items) => items.remove(name),
        };
        self.settle();
        gone
    }

    /// Keeps only the items for which `keep` is true.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        match self {
            KeyItems::One(item) => {
                if !keep(item) {
                    *self = KeyItems::none();
                }
            }
            KeyItems::Few(items) => items.retain(|i| keep(i)),
            KeyItems::Many(items) => items.retain(|_, i| keep(i)),
        }
        self.settle();
    }

    /// After items went: back to the smaller form their number allows (a
    /// map shrinks only at half of [`FEW`], so that a key at the edge does
    /// not change form on every store and remove).
    fn settle(&mut self) {
        match self {
            KeyItems::Few(items) if items.len() == 1 => {
                if let Some(last) = items.pop() {
                    *self = KeyItems::One(last);
                }
            }
            KeyItems::Many(items) if items.len() <= FEW / 2 => {
                let few: Vec<T> = std::mem::take(items).into_values().collect();
                *self = KeyItems::Few(few);
                self.settle();
            }
            _ => {}
        }
    }

    /// The items, in name order.
    pub fn values(&self) -> Values<'_, T> {
        match self {
            KeyItems::One(item) => Values::One(Some(item)),
            KeyItems::Few(items) => Values::Few(items.iter()),
            KeyItems::Many(items) => Values::Many(items.values()),
        }
    }

    /// The items, in name order, to change in place (not their names).
    pub(super) fn values_mut(&mut self) -> Box<dyn Iterator<Item = &mut T> + '_> {
        match self {
            KeyItems::One(item) => Box::new(std::iter::once(item)),
            KeyItems::Few(items) => Box::new(items.iter_mut()),
            KeyItems::Many(items) => Box::new(items.values_mut()),
        }
    }

    /// How many items.
    pub fn len(&self) -> usize {
        match self {
            KeyItems::One(_) => 1,
            KeyItems::Few(items) => items.len(),
            KeyItems::Many(items) => items.len(),
        }
    }

    /// True when no item is left.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// No items (for a policy asked about a key that holds nothing).
    pub fn none() -> KeyItems<T> {
        KeyItems::Few(Vec::new())
    }

    /// These items, each under its name (a later one replaces an earlier
    /// one of the same name).
    pub fn of(items: impl IntoIterator<Item = T>) -> KeyItems<T> {
        let mut held = KeyItems::none();
        for item in items {
            held.insert(item);
        }
        held
    }
}

/// The items under one key, in name order (no allocation).
pub enum Values<'a, T> {
    One(Option<&'a T>),
    Few(std::slice::Iter<'a, T>),
    Many(std::collections::btree_map::Values<'a, String, T>),
}

impl<'a, T> Iterator for Values<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        match self {
            Values::One(item) => item.take(),
            Values::Few(items) => items.next(),
            Values::Many(items) => items.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::ring::NodeId;

    fn item(name: &str) -> Item {
        Item {
            key: NodeId::of_key("alice@overlay.test"),
            name: name.into(),
            kind: "binding".into(),
            value: name.as_bytes().to_vec(),
            version: 1,
            expires: Instant::now() + Duration::from_secs(60),
            writer: NodeId::of_addr("127.0.0.1:5060".parse().expect("addr")),
            signature: Vec::new(),
            proof: None,
        }
    }

    fn names(items: &KeyItems) -> Vec<String> {
        items.values().map(|i| i.name.clone()).collect()
    }

    #[test]
    fn items_grow_from_one_to_few_to_many_and_back_in_name_order() {
        let mut items = KeyItems::One(item("m"));
        assert!(matches!(items, KeyItems::One(_)));
        items.insert(item("c"));
        assert!(matches!(items, KeyItems::Few(_)));
        assert_eq!(names(&items), ["c", "m"]);
        for n in 0..FEW {
            items.insert(item(&format!("x{n:02}")));
        }
        assert!(matches!(items, KeyItems::Many(_)));
        assert_eq!(items.len(), FEW + 2);
        let all = names(&items);
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        assert_eq!(items.get("x03").map(|i| i.name.as_str()), Some("x03"));
        assert!(items.get("nope").is_none());
        items.retain(|i| i.name == "c" || i.name == "m");
        assert_eq!(names(&items), ["c", "m"]);
        assert_eq!(items.remove("c").map(|i| i.name), Some("c".to_string()));
        assert!(matches!(items, KeyItems::One(_)), "{items:?}");
        assert!(items.remove("c").is_none());
        assert_eq!(items.remove("m").map(|i| i.name), Some("m".to_string()));
        assert!(items.is_empty());
    }

    #[test]
    fn an_item_of_the_same_name_replaces_the_one_held() {
        let mut items = KeyItems::One(item("a"));
        let mut newer = item("a");
        newer.version = 2;
        items.insert(newer.clone());
        assert_eq!(items.len(), 1);
        assert_eq!(items.get("a").map(|i| i.version), Some(2));
        items.insert(item("b"));
        let mut newest = item("b");
        newest.version = 3;
        items.insert(newest);
        assert_eq!(items.len(), 2);
        assert_eq!(items.get("b").map(|i| i.version), Some(3));
    }
}
