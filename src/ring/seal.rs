//! Signed items and signed removes: the hook through which the overlay signs
//! what this node writes and checks what others wrote (certificate mode,
//! docs/security.md "Signed items"). The ring knows when, not how:
//!
//! - an item this node writes is signed in [`Ring::store`](super::Ring::store),
//!   before it is kept or sent;
//! - an item is checked before it is stored here — from its writer, from
//!   the key's holder (a replica's copy) or handed over (`transfer`) — and
//!   before a fetched one is used;
//! - a remove this node asks for carries its signature over (key, name,
//!   remover, time), passed on by the holder to the replicas; every copy
//!   checks it before removing.
//!
//! Without a seal (open ring, shared secret, the simulator) nothing is
//! signed nor checked.
//!
//! An item's [`signature`](super::Item::signature) is the expiry its writer
//! signed (8 bytes, seconds since the Unix epoch, big-endian) followed by
//! the signature over [`Item::signed_bytes`](super::Item::signed_bytes) of
//! that expiry: items carry no wall clock of their own, so the signed
//! expiry travels beside the signature and the checker turns it into its
//! own `Instant`.

use std::time::{Duration, Instant};

use super::{Item, NodeId};

/// How far a signed remove's time may be from the checker's clock, and how
/// long it is remembered against replay; a store that would bring an
/// item's expiry forward by more than this counts as a remove
/// (`policy::check_store`).
pub const WINDOW: Duration = Duration::from_secs(30);

/// What signs and checks items and removes for the ring (the overlay's
/// certificate mode).
pub trait ItemSeal: Send {
    /// Signs `item`, written by this node: fills its `signature`, and sets
    /// its `expires` to the expiry signed (whole seconds).
    fn sign_item(&mut self, item: &mut Item, now: Instant);

    /// Signs `items`, written by this node at one time, as
    /// [`sign_item`](Self::sign_item) does each; a seal may sign them
    /// together (one signature that each item carries).
    fn sign_items(&mut self, items: &mut [Item], now: Instant) {
        for item in items {
            self.sign_item(item, now);
        }
    }

    /// The expiry (as our `Instant`) `item`'s writer signed, when its
    /// signature is valid and made with the key of a member certificate
    /// naming `item.writer`; `None` otherwise.
    fn check_item(&mut self, item: &Item, now: Instant) -> Option<Instant>;

    /// This node's signature over the remove of (key, name) by `by`, now.
    fn sign_remove(&mut self, key: NodeId, name: &str, by: NodeId, now: Instant) -> Vec<u8>;

    /// Whether `seal` is `by`'s signature over the remove of (key, name),
    /// made within [`WINDOW`] of now and not seen before (it is remembered).
    fn check_remove(
        &mut self,
        key: NodeId,
        name: &str,
        by: NodeId,
        seal: &[u8],
        now: Instant,
    ) -> bool;
}

/// The bytes a remover signs: key, name, remover and its time (ms since
/// the Unix epoch).
pub fn remove_bytes(key: NodeId, name: &str, by: NodeId, at_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(80 + name.len());
    out.extend_from_slice(b"p2psip-remove-v1");
    out.extend_from_slice(&key.0);
    out.extend_from_slice(&(name.len() as u64).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&by.0);
    out.extend_from_slice(&at_ms.to_be_bytes());
    out
}

/// An item's or a remove's signature split into the time it carries
/// (signed expiry in s, or remove time in ms) and the signature itself.
pub fn split(seal: &[u8]) -> Option<(u64, &[u8])> {
    let (time, signature) = seal.split_first_chunk::<8>()?;
    (!signature.is_empty()).then(|| (u64::from_be_bytes(*time), signature))
}

/// A time and a signature as [`split`] reads them.
pub fn join(time: u64, signature: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + signature.len());
    out.extend_from_slice(&time.to_be_bytes());
    out.extend_from_slice(signature);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_splits_into_its_time_and_signature() {
        let seal = join(1_700_000_000, &[1, 2, 3]);
        assert_eq!(split(&seal), Some((1_700_000_000, &[1u8, 2, 3][..])));
        assert_eq!(split(&seal[..8]), None, "no signature");
        assert_eq!(split(&[]), None);
        let a = remove_bytes(NodeId([1; 20]), "ab", NodeId([2; 20]), 5);
        let b = remove_bytes(NodeId([1; 20]), "a", NodeId([2; 20]), 5);
        assert_ne!(a, b);
    }
}
