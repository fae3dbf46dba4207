//! Who may change a stored record: the checks a holder and every replica
//! make before storing, replacing or removing an item (RELOAD's access
//! control, RFC 6940 §7.3, reduced to what a ring without certificates can
//! tell).
//!
//! The ring knows one rule of its own: an item is changed by its writer.
//! Whether another node may take it over depends on what the item is (a
//! binding: the node proves it authenticated the same user again), which
//! only the overlay knows: it says so through a [`RecordPolicy`]. A ring
//! without one lets any node take over (the writer is recorded).

use std::time::Instant;

use super::held::KeyItems;
use super::seal::WINDOW;
use super::{Item, NodeId, Refusal};

/// What the overlay decides for the ring: whether `new`, written by
/// `new.writer`, may replace `existing`, written by another node.
pub trait RecordPolicy: Send {
    /// `key_items`: the live and expired items held under the same key (a
    /// user's credentials live under the key of her bindings).
    fn may_take_over(
        &self,
        existing: &Item,
        new: &Item,
        key_items: &KeyItems,
        now: Instant,
    ) -> bool;

    /// Whether a node other than its writer may remove the live `existing`
    /// (e.g. a delivered offline message, removed by the node that
    /// delivered it). Nobody, unless the overlay says so.
    fn may_remove(&self, existing: &Item) -> bool {
        let _ = existing;
        false
    }

    /// Whether `new`, by another writer that may take `existing` over, may
    /// also bring its expiry forward by more than [`WINDOW`] (which counts
    /// as a remove): by default only when that writer may remove it.
    fn may_shorten(&self, existing: &Item, new: &Item) -> bool {
        let _ = new;
        self.may_remove(existing)
    }
}

/// Whether `sender` may store `new` over `existing` here. `replica`: the
/// store comes from the key's holder (which checked it) rather than from
/// the writer itself, so the writer named in the item is not the sender.
///
/// A store that would bring a live item's expiry forward by more than
/// [`WINDOW`] counts as a remove: it needs a higher version (an equal or
/// lower one is a stale copy, e.g. a signed item replayed) and, from
/// another writer, the policy's leave to shorten it.
pub fn check_store(
    policy: Option<&dyn RecordPolicy>,
    sender: NodeId,
    replica: bool,
    existing: Option<&Item>,
    new: &Item,
    key_items: &KeyItems,
    now: Instant,
) -> Result<(), Refusal> {
    if !replica && new.writer != sender {
        // A node writes in its own name only.
        return Err(Refusal::NotWriter);
    }
    let Some(existing) = existing.filter(|e| e.expires > now) else {
        return Ok(());
    };
    let shortens = new.expires + WINDOW < existing.expires;
    if shortens && new.version <= existing.version && policy.is_some() {
        return Err(Refusal::NotWriter);
    }
    if existing.writer == new.writer {
        return Ok(());
    }
    match policy {
        Some(policy) if !policy.may_take_over(existing, new, key_items, now) => {
            Err(Refusal::NotWriter)
        }
        Some(policy) if shortens && !policy.may_shorten(existing, new) => Err(Refusal::NotWriter),
        _ => Ok(()),
    }
}

/// Whether `by` may remove `existing`: only its writer (an expired item
/// goes with anybody's remove, as it would at the next purge). A bare ring
/// (no policy) lets anybody remove, as it lets anybody take over.
pub fn check_remove(
    policy: Option<&dyn RecordPolicy>,
    by: NodeId,
    existing: Option<&Item>,
    now: Instant,
) -> Result<(), Refusal> {
    match existing {
        Some(e)
            if e.expires > now && e.writer != by && policy.is_some_and(|p| !p.may_remove(e)) =>
        {
            Err(Refusal::NotWriter)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(n: u8) -> NodeId {
        NodeId([n; 20])
    }

    fn item(writer: u8, version: u64, now: Instant) -> Item {
        Item {
            key: NodeId::of_key("alice@example.test"),
            name: "alice@example.test".into(),
            kind: "binding".into(),
            value: vec![1],
            version,
            expires: now + Duration::from_secs(60),
            writer: id(writer),
            signature: Vec::new(),
            proof: None,
        }
    }

    /// Lets a takeover through when the new item carries the proof "ok".
    struct ProofOk;
    impl RecordPolicy for ProofOk {
        fn may_take_over(
            &self,
            _existing: &Item,
            new: &Item,
            _key_items: &KeyItems,
            _now: Instant,
        ) -> bool {
            new.proof.as_deref() == Some("ok")
        }
    }

    #[test]
    fn the_writer_replaces_its_own_and_nobody_writes_in_anothers_name() {
        let now = Instant::now();
        let none = KeyItems::none();
        let old = item(1, 1, now);
        let mine = item(1, 2, now);
        let policy: Option<&dyn RecordPolicy> = Some(&ProofOk);
        assert_eq!(
            check_store(policy, id(1), false, Some(&old), &mine, &none, now),
            Ok(())
        );
        // Node 2 sends an item that says node 1 wrote it.
        assert_eq!(
            check_store(policy, id(2), false, None, &mine, &none, now),
            Err(Refusal::NotWriter)
        );
        // On a replica the sender is the holder: the item's writer counts.
        assert_eq!(
            check_store(policy, id(9), true, Some(&old), &mine, &none, now),
            Ok(())
        );
    }

    #[test]
    fn another_writer_takes_over_only_with_what_the_policy_accepts() {
        let now = Instant::now();
        let none = KeyItems::none();
        let old = item(1, 1, now);
        let mut theirs = item(2, 5, now);
        let policy: Option<&dyn RecordPolicy> = Some(&ProofOk);
        for replica in [false, true] {
            assert_eq!(
                check_store(policy, id(2), replica, Some(&old), &theirs, &none, now),
                Err(Refusal::NotWriter)
            );
        }
        theirs.proof = Some("ok".into());
        assert_eq!(
            check_store(policy, id(2), false, Some(&old), &theirs, &none, now),
            Ok(())
        );
        theirs.proof = None;
        // No policy (a bare ring): takeovers are free.
        assert_eq!(
            check_store(None, id(2), false, Some(&old), &theirs, &none, now),
            Ok(())
        );
        // An expired record is anybody's.
        let mut gone = old.clone();
        gone.expires = now;
        assert_eq!(
            check_store(policy, id(2), false, Some(&gone), &theirs, &none, now),
            Ok(())
        );
    }

    #[test]
    fn bringing_an_expiry_forward_counts_as_a_remove() {
        let now = Instant::now();
        let none = KeyItems::none();
        let old = item(1, 5, now);
        let policy: Option<&dyn RecordPolicy> = Some(&ProofOk);
        let mut short = item(1, 5, now);
        short.expires = now + Duration::from_secs(20);
        // The same version, 40 s sooner: a stale copy (or a replay).
        assert_eq!(
            check_store(policy, id(1), false, Some(&old), &short, &none, now),
            Err(Refusal::NotWriter)
        );
        // Within the window: an ordinary refresh.
        let mut close = item(1, 5, now);
        close.expires = now + Duration::from_secs(40);
        assert_eq!(
            check_store(policy, id(1), false, Some(&old), &close, &none, now),
            Ok(())
        );
        // A new version from the writer: its own decision.
        short.version = 6;
        assert_eq!(
            check_store(policy, id(1), false, Some(&old), &short, &none, now),
            Ok(())
        );
        // Another writer that may take over, but not remove.
        let mut theirs = short.clone();
        theirs.writer = id(2);
        theirs.proof = Some("ok".into());
        assert_eq!(
            check_store(policy, id(2), false, Some(&old), &theirs, &none, now),
            Err(Refusal::NotWriter)
        );
        theirs.expires = old.expires;
        assert_eq!(
            check_store(policy, id(2), false, Some(&old), &theirs, &none, now),
            Ok(())
        );
    }

    #[test]
    fn only_the_writer_removes_a_live_item() {
        let now = Instant::now();
        let old = item(1, 1, now);
        let policy: Option<&dyn RecordPolicy> = Some(&ProofOk);
        assert_eq!(check_remove(policy, id(1), Some(&old), now), Ok(()));
        assert_eq!(
            check_remove(policy, id(2), Some(&old), now),
            Err(Refusal::NotWriter)
        );
        assert_eq!(check_remove(policy, id(2), None, now), Ok(()));
        assert_eq!(check_remove(None, id(2), Some(&old), now), Ok(()));
        let mut gone = old;
        gone.expires = now;
        assert_eq!(check_remove(policy, id(2), Some(&gone), now), Ok(()));
    }
}
