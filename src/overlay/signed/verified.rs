//! Signatures already checked (certificate mode, `signed.rs`): the same
//! bytes are not checked twice.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use p2psip_certs::KeyKind;

/// Most (key, message, signature) triples remembered as verified
/// ([`Verified`]); beyond, the oldest are forgotten (and checked again if
/// they come back).
pub(super) const MAX_VERIFIED: usize = 16_384;

/// Signatures already found valid, so that the same bytes are not
/// checked twice: a replica's copy of an item this node wrote (it signed
/// it), a copy stored again, handed over or fetched after it was stored
/// here. An entry is SHA-256 over the public key, the message and the
/// signature, so a hit is exactly a triple that verified (or that this
/// node signed with its own key): a changed byte, another key (a member
/// enrolled again) or another signature is checked in full. At most
/// [`MAX_VERIFIED`], the oldest forgotten first.
#[derive(Default)]
pub struct Verified {
    seen: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
    /// Signatures made, checked in full, and answered from here.
    pub counts: Arc<SealCounts>,
}

/// What the seal did since the node started (shown in `/metrics`).
#[derive(Debug, Default)]
pub struct SealCounts {
    /// Signatures made with our key (items and removes).
    pub signed: AtomicU64,
    /// Signatures checked in full (a public-key operation).
    pub checked: AtomicU64,
    /// Checks answered by [`Verified`]: the same bytes already held.
    pub remembered: AtomicU64,
}

impl SealCounts {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (signed, checked, remembered) now.
    pub fn read(&self) -> (u64, u64, u64) {
        (
            self.signed.load(Ordering::Relaxed),
            self.checked.load(Ordering::Relaxed),
            self.remembered.load(Ordering::Relaxed),
        )
    }
}

impl Verified {
    fn digest(public_key: &[u8], message: &[u8], signature: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"p2psip-verified-v1");
        for part in [public_key, message, signature] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    fn contains(&self, digest: &[u8; 32]) -> bool {
        self.seen.contains(digest)
    }

    fn insert(&mut self, digest: [u8; 32]) {
        if !self.seen.insert(digest) {
            return;
        }
        self.order.push_back(digest);
        while self.order.len() > MAX_VERIFIED {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    /// Whether `signature` over `message` is `public_key`'s (of `kind`):
    /// remembered, or checked and then remembered when valid.
    pub fn check(
        &mut self,
        kind: KeyKind,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let digest = Self::digest(public_key, message, signature);
        if self.contains(&digest) {
            SealCounts::bump(&self.counts.remembered);
            return true;
        }
        SealCounts::bump(&self.counts.checked);
        let valid = p2psip_certs::verify(kind, public_key, message, signature);
        if valid {
            self.insert(digest);
        }
        valid
    }

    /// Remembers a signature this node just made with `public_key`.
    pub fn signed(&mut self, public_key: &[u8], message: &[u8], signature: &[u8]) {
        SealCounts::bump(&self.counts.signed);
        self.insert(Self::digest(public_key, message, signature));
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}
