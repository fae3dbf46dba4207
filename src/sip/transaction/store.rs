//! Where the transactions live: a generation-checked slab (a key is an
//! index, not a hash, and a stale key finds nothing) and the map of armed
//! timers ordered by deadline.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Instant;

use super::{Slot, TimerPos, Txn};

/// Generation-checked slab: a key is `generation << 32 | index`.
#[derive(Default)]
pub(super) struct Slab {
    pub(super) entries: Vec<SlabEntry>,
    /// Free indices, lowest first: live transactions gather at the front,
    /// so the end of the slab empties and can be given back.
    free: BinaryHeap<Reverse<u32>>,
    pub(super) live: usize,
    /// Generation of entries pushed anew: above that of every entry ever
    /// cut off the end, so a stale key never finds a later transaction.
    floor: u32,
    /// Removals since the slab last gave memory back.
    removed: usize,
}

pub(super) struct SlabEntry {
    pub(super) generation: u32,
    pub(super) txn: Option<Txn>,
}

impl Slab {
    pub(super) fn insert(&mut self, txn: Txn) -> u64 {
        self.live += 1;
        let index = match self.free.pop() {
            Some(Reverse(index)) => {
                self.entries[index as usize].txn = Some(txn);
                index
            }
            None => {
                self.entries.push(SlabEntry {
                    generation: self.floor,
                    txn: Some(txn),
                });
                (self.entries.len() - 1) as u32
            }
        };
        let generation = self.entries[index as usize].generation;
        (u64::from(generation) << 32) | u64::from(index)
    }

    fn entry(&mut self, key: u64) -> Option<&mut SlabEntry> {
        let entry = self.entries.get_mut(key as u32 as usize)?;
        (entry.generation == (key >> 32) as u32 && entry.txn.is_some()).then_some(entry)
    }

    pub(super) fn get(&self, key: u64) -> Option<&Txn> {
        let entry = self.entries.get(key as u32 as usize)?;
        if entry.generation == (key >> 32) as u32 {
            entry.txn.as_ref()
        } else {
            None
        }
    }

    pub(super) fn get_mut(&mut self, key: u64) -> Option<&mut Txn> {
        self.entry(key)?.txn.as_mut()
    }

    pub(super) fn remove(&mut self, key: u64) -> Option<Txn> {
        let entry = self.entry(key)?;
        let txn = entry.txn.take();
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(Reverse(key as u32));
        self.live -= 1;
        self.removed += 1;
        self.give_back();
        txn
    }

    /// After a burst (a REGISTER flood keeps tens of thousands of
    /// transactions for Timer J, then they all end) the slab is cut back to
    /// its last live entry and its spare capacity freed: at most once per
    /// quarter of its length of removals, so this stays O(1) per removal.
    fn give_back(&mut self) {
        let len = self.entries.len();
        if len < 1024 || self.live * 4 > len || (self.removed * 4 < len && self.live > 0) {
            return;
        }
        self.removed = 0;
        while let Some(last) = self.entries.last() {
            if last.txn.is_some() {
                break;
            }
            self.floor = self.floor.max(last.generation.wrapping_add(1));
            self.entries.pop();
        }
        let len = self.entries.len();
        self.free.retain(|Reverse(i)| (*i as usize) < len);
        self.entries.shrink_to(len * 2);
        self.free.shrink_to(self.free.len() * 2);
    }
}

/// Armed timers, ordered by deadline.
#[derive(Default)]
pub(super) struct Deadlines {
    pub(super) map: BTreeMap<TimerPos, (u64, Slot)>,
    seq: u64,
}

impl Deadlines {
    pub(super) fn arm(&mut self, txn: &mut Txn, id: u64, slot: Slot, at: Instant) {
        let cur = &mut txn.timers[slot as usize];
        if let Some(pos) = cur.take() {
            self.map.remove(&pos);
        }
        self.seq += 1;
        let pos = (at, self.seq);
        self.map.insert(pos, (id, slot));
        *cur = Some(pos);
    }

    pub(super) fn disarm(&mut self, txn: &mut Txn, slot: Slot) {
        if let Some(pos) = txn.timers[slot as usize].take() {
            self.map.remove(&pos);
        }
    }
}
