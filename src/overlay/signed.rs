//! Signed items in certificate mode (docs/security.md "Signed items"): this
//! node signs every item it writes and every remove it asks for with its
//! node key, and checks every item and remove it receives against the
//! writer's (remover's) certificate before storing, using or doing it.
//!
//! Certificates travel beside the items: an overlay message that carries
//! items or a remove carries, in `P2P-Cert` headers (hex DER), the
//! certificates of their writers (remover) that this node knows
//! ([`P2P_CERT`]). A receiver checks each one once — signed by the overlay
//! CA, valid, not revoked, its Node-ID its address's — and keeps it in a
//! [`CertBook`] by Node-ID, so a signature is checked with a key from a
//! certificate the overlay CA issued for exactly the Node-ID the item names
//! as its writer.
//!
//! The ring calls [`Seals`] through [`ItemSeal`]; the overlay reads and
//! writes the `P2P-Cert` headers through the same [`CertBook`]. Wall-clock
//! time (signed expiries, remove times) is the driver's one reading plus
//! the `Instant`s elapsed since, as for the shared secret.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ezk_sip_types::{Headers, Name};
use sha2::{Digest, Sha256};
use tracing::debug;

use p2psip_certs::KeyKind;

use crate::overlay::identity::Signing;
use crate::overlay::wire::{hex, hex_bytes};
use crate::ring::seal::{self, ItemSeal, WINDOW};
use crate::ring::{Item, NodeId, RingRequest};

/// The header that carries a certificate (hex DER).
pub const P2P_CERT: &str = "P2P-Cert";
/// Longest certificate a message may carry, in bytes of DER.
const MAX_CERT: usize = 4096;
/// Most certificates one message carries (and is read).
pub const MAX_CERTS: usize = 16;
/// Most members' certificates kept; beyond, the oldest learnt is forgotten
/// (only certificates the overlay CA signed get in).
const MAX_KNOWN: usize = 4096;
/// Most remove signatures remembered against replay.
const MAX_REMOVES_SEEN: usize = 65_536;

/// A member's certificate as kept.
struct Known {
    der: Arc<Vec<u8>>,
    public_key: Vec<u8>,
    key_kind: KeyKind,
}

/// The members' certificates this node has checked, by Node-ID.
pub struct CertBook {
    signing: Arc<Signing>,
    known: HashMap<NodeId, Known>,
    /// SHA-256 of every kept certificate: one seen again is not checked again.
    digests: HashSet<[u8; 32]>,
    order: VecDeque<NodeId>,
    /// Certificates refused (not from the overlay CA, revoked, …).
    pub refused: u64,
    /// Certificates learnt and not yet handed out to be saved on disk
    /// (`Some` only when the node keeps a data directory).
    unsaved: Option<Vec<(NodeId, Arc<Vec<u8>>)>>,
}

impl CertBook {
    /// The book of a node that signs with `signing`: its own certificate first.
    pub fn new(signing: Arc<Signing>) -> CertBook {
        let mut book = CertBook {
            signing: signing.clone(),
            known: HashMap::new(),
            digests: HashSet::new(),
            order: VecDeque::new(),
            refused: 0,
            unsaved: None,
        };
        if let Ok(me) = p2psip_certs::parse_node(&signing.cert_der) {
            book.keep(
                signing.me,
                signing.cert_der.clone(),
                me.public_key,
                me.key_kind,
            );
        }
        book
    }

    fn keep(&mut self, id: NodeId, der: Vec<u8>, public_key: Vec<u8>, key_kind: KeyKind) {
        self.digests.insert(Sha256::digest(&der).into());
        if self.known.contains_key(&id) {
            self.order.retain(|n| *n != id);
        }
        self.order.push_back(id);
        let der = Arc::new(der);
        if let Some(unsaved) = &mut self.unsaved
            && id != self.signing.me
        {
            unsaved.push((id, der.clone()));
        }
        self.known.insert(
            id,
            Known {
                der,
                public_key,
                key_kind,
            },
        );
        while self.known.len() > MAX_KNOWN {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if old == self.signing.me {
                self.order.push_back(old);
                continue;
            }
            if let Some(gone) = self.known.remove(&old) {
                self.digests
                    .remove(&<[u8; 32]>::from(Sha256::digest(&*gone.der)));
            }
        }
    }

    /// Checks a carried certificate (at wall time `wall`) and keeps it.
    pub fn learn(&mut self, der: &[u8], wall: Duration) {
        if der.len() > MAX_CERT {
            self.refused += 1;
            return;
        }
        let digest: [u8; 32] = Sha256::digest(der).into();
        if self.digests.contains(&digest) {
            return;
        }
        match self.signing.check_cert(der, wall) {
            Ok(cert) => {
                let id = NodeId::of_addr(cert.sip);
                self.keep(id, der.to_vec(), cert.public_key, cert.key_kind);
            }
            Err(why) => {
                self.refused += 1;
                debug!(%why, "carried certificate refused");
            }
        }
    }

    /// From now on, keep every certificate learnt for
    /// [`take_unsaved`](Self::take_unsaved).
    pub fn save_new(&mut self) {
        self.unsaved.get_or_insert_with(Vec::new);
    }

    /// The certificates learnt since the last call, by Node-ID, to be saved.
    pub fn take_unsaved(&mut self) -> Vec<(NodeId, Arc<Vec<u8>>)> {
        self.unsaved
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Whether the certificate of member `id` is known.
    pub fn knows(&self, id: NodeId) -> bool {
        self.known.contains_key(&id)
    }

    /// The public key of member `id` and its algorithm, if its certificate
    /// is known.
    fn public_key(&self, id: NodeId) -> Option<(KeyKind, &[u8])> {
        self.known
            .get(&id)
            .map(|k| (k.key_kind, k.public_key.as_slice()))
    }

    /// The certificates of `ids` that are known, each once, at most [`MAX_CERTS`].
    pub fn certs_of(&self, ids: impl IntoIterator<Item = NodeId>) -> Vec<Arc<Vec<u8>>> {
        let mut seen = HashSet::new();
        ids.into_iter()
            .filter(|id| seen.insert(*id))
            .filter_map(|id| self.known.get(&id).map(|k| k.der.clone()))
            .take(MAX_CERTS)
            .collect()
    }
}

/// Adds `certs` to a message as `P2P-Cert` headers.
pub fn add_certs(headers: &mut Headers, certs: &[Arc<Vec<u8>>]) {
    for der in certs {
        headers.insert(Name::from(P2P_CERT), hex(der));
    }
}

/// The certificates a message carries (at most [`MAX_CERTS`]; bad hex and
/// oversized ones are left out).
pub fn certs_in(headers: &Headers) -> Vec<Vec<u8>> {
    headers
        .get_raw(&Name::from(P2P_CERT))
        .filter_map(|value| {
            let text = value.trim();
            (text.len() <= 2 * MAX_CERT).then_some(())?;
            hex_bytes(text)
        })
        .take(MAX_CERTS)
        .collect()
}

/// The wall clock of the core: one reading and the `Instant`s since.
#[derive(Clone, Copy, Debug)]
pub struct Wall {
    wall0_ms: u64,
    now0: Instant,
}

impl Wall {
    /// `wall_at`: the wall-clock time (since the Unix epoch) at `now`.
    pub fn new(wall_at: Duration, now: Instant) -> Wall {
        Wall {
            wall0_ms: u64::try_from(wall_at.as_millis()).unwrap_or(u64::MAX),
            now0: now,
        }
    }

    /// Milliseconds since the Unix epoch at `at`.
    pub fn ms(&self, at: Instant) -> u64 {
        let ahead =
            u64::try_from(at.saturating_duration_since(self.now0).as_millis()).unwrap_or(u64::MAX);
        let behind =
            u64::try_from(self.now0.saturating_duration_since(at).as_millis()).unwrap_or(u64::MAX);
        self.wall0_ms.saturating_add(ahead).saturating_sub(behind)
    }

    /// The `Instant` of a wall-clock time (ms), seen from `now`; at most ten
    /// years ahead.
    fn instant(&self, ms: u64, now: Instant) -> Instant {
        let wall_now = self.ms(now);
        if ms <= wall_now {
            return now
                .checked_sub(Duration::from_millis(wall_now - ms))
                .unwrap_or(now);
        }
        let ahead = Duration::from_millis((ms - wall_now).min(10 * 365 * 86_400_000));
        now + ahead
    }
}

/// The overlay's side of certificate mode: the certificates messages carry
/// are learnt, and the ones of the writers (remover) of what we send added.
pub struct Certified {
    book: Arc<Mutex<CertBook>>,
    wall: Wall,
}

impl Certified {
    pub fn new(book: Arc<Mutex<CertBook>>, wall: Wall) -> Certified {
        Certified { book, wall }
    }

    /// Keeps a member's certificate from its TLS handshake (checked again
    /// as if carried).
    pub fn learn_one(&self, der: &[u8], now: Instant) {
        if let Ok(mut book) = self.book.lock() {
            book.learn(der, Duration::from_millis(self.wall.ms(now)));
        }
    }

    /// Keeps the certificates a message from a member carries.
    pub fn learn(&self, headers: &Headers, now: Instant) {
        let carried = certs_in(headers);
        if carried.is_empty() {
            return;
        }
        if let Ok(mut book) = self.book.lock() {
            let at = Duration::from_millis(self.wall.ms(now));
            for der in carried {
                book.learn(&der, at);
            }
        }
    }

    /// Certificates saved on disk by an earlier run: each checked again as
    /// if carried (CA, validity, revocation: a certificate revoked since
    /// is not believed), and kept; then every certificate learnt from now
    /// on is handed out to be saved ([`take_unsaved`](Self::take_unsaved)).
    /// Returns how many were believed.
    pub fn restore(&self, saved: &[Vec<u8>], now: Instant) -> usize {
        let Ok(mut book) = self.book.lock() else {
            return 0;
        };
        let at = Duration::from_millis(self.wall.ms(now));
        let refused = book.refused;
        for der in saved {
            book.learn(der, at);
        }
        let believed = saved.len() - (book.refused - refused) as usize;
        book.refused = refused;
        book.save_new();
        believed
    }

    /// The certificates learnt since the last call, to be saved on disk.
    pub fn take_unsaved(&self) -> Vec<(NodeId, Arc<Vec<u8>>)> {
        self.book
            .lock()
            .map(|mut book| book.take_unsaved())
            .unwrap_or_default()
    }

    /// Adds the certificates of `ids` (writers, a remover) to a message,
    /// but those of `known`: the receiver has them already (its own, and
    /// ours, which it took from the TLS handshake of the connection the
    /// message arrives on).
    pub fn attach(
        &self,
        headers: &mut Headers,
        ids: impl IntoIterator<Item = NodeId>,
        known: impl IntoIterator<Item = NodeId>,
    ) {
        let known: Vec<NodeId> = known.into_iter().collect();
        let certs = match self.book.lock() {
            Ok(book) => book.certs_of(ids.into_iter().filter(|id| !known.contains(id))),
            Err(_) => return,
        };
        add_certs(headers, &certs);
    }

    /// Adds what a ring request to the member at `to` needs: its items'
    /// writers' certificates, or its remover's (`me` when we ask for the
    /// remove), but ours and `to`'s own (see [`attach`](Self::attach)).
    pub fn attach_for_request(
        &self,
        headers: &mut Headers,
        request: &RingRequest,
        me: NodeId,
        to: std::net::SocketAddr,
    ) {
        let known = [me, NodeId::of_addr(to)];
        match request {
            RingRequest::Store { items, .. } | RingRequest::Transfer { items } => {
                self.attach(headers, items.iter().map(|i| i.writer), known)
            }
            RingRequest::Claim { item } => self.attach(headers, [item.writer], known),
            RingRequest::Answer {
                items: Some(items), ..
            } => self.attach(headers, items.iter().map(|i| i.writer), known),
            RingRequest::Remove { by, replica, .. } => {
                self.attach(headers, [if *replica { *by } else { me }], known)
            }
            _ => {}
        }
    }
}

/// Refusals counted between log lines: at most one line per
/// [`LOG_EVERY`](crate::overlay::admission::LOG_EVERY).
#[derive(Debug, Default)]
pub struct RefusalLog {
    unlogged: u64,
    last: Option<Instant>,
}

impl RefusalLog {
    /// Counts `n` more; `Some(count)` since the last line when one is due.
    pub fn note(&mut self, n: u64, now: Instant) -> Option<u64> {
        self.unlogged += n;
        let due = self.last.is_none_or(|t| {
            now.saturating_duration_since(t) >= crate::overlay::admission::LOG_EVERY
        });
        if !due {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// The ring's [`ItemSeal`] in certificate mode.
pub struct Seals {
    signing: Arc<Signing>,
    book: Arc<Mutex<CertBook>>,
    wall: Wall,
    /// Remove signatures seen (by digest) and their time, against replay.
    removes_seen: HashSet<[u8; 32]>,
    removes_order: VecDeque<([u8; 32], u64)>,
    /// Signatures found valid (or made here), not checked again.
    pub verified: Verified,
}

impl Seals {
    pub fn new(signing: Arc<Signing>, book: Arc<Mutex<CertBook>>, wall: Wall) -> Seals {
        Seals {
            signing,
            book,
            wall,
            removes_seen: HashSet::new(),
            removes_order: VecDeque::new(),
            verified: Verified::default(),
        }
    }

    /// Whether `signature` over `message` was made by member `id`.
    fn signed_by(&mut self, id: NodeId, message: &[u8], signature: &[u8]) -> bool {
        let Ok(book) = self.book.lock() else {
            return false;
        };
        let Some((kind, key)) = book.public_key(id) else {
            return false;
        };
        self.verified.check(kind, key, message, signature)
    }

    /// Our signature over `message`, remembered as valid.
    fn sign(&mut self, message: &[u8]) -> Option<Vec<u8>> {
        let signature = self.signing.sign(message)?;
        if let Ok(book) = self.book.lock()
            && let Some((_, key)) = book.public_key(self.signing.me)
        {
            self.verified.signed(key, message, &signature);
        }
        Some(signature)
    }
}

impl Seals {
    /// The expiry `item` is signed with (whole seconds since the Unix
    /// epoch); its `expires` is set to it.
    fn signed_expiry(&self, item: &mut Item, now: Instant) -> u64 {
        let expires_s = self.wall.ms(item.expires).div_ceil(1000);
        item.expires = self.wall.instant(expires_s.saturating_mul(1000), now);
        expires_s
    }
}

impl ItemSeal for Seals {
    fn sign_item(&mut self, item: &mut Item, now: Instant) {
        let expires_s = self.signed_expiry(item, now);
        item.signature = match self.sign(&item.signed_bytes(expires_s)) {
            Some(signature) => seal::join(expires_s, &signature),
            None => Vec::new(),
        };
    }

    fn sign_items(&mut self, items: &mut [Item], now: Instant) {
        for group in items.chunks_mut(batch::MAX_ITEMS) {
            if let [item] = group {
                self.sign_item(item, now);
                continue;
            }
            let mut expiries = Vec::with_capacity(group.len());
            let mut digests = Vec::with_capacity(group.len());
            for item in group.iter_mut() {
                let expires_s = self.signed_expiry(item, now);
                digests.push(batch::digest(&item.signed_bytes(expires_s)));
                expiries.push(expires_s);
            }
            let digests = batch::flat(&digests);
            let signature = self.sign(&batch::message(&digests));
            for (item, expires_s) in group.iter_mut().zip(expiries) {
                item.signature = match &signature {
                    Some(signature) => seal::join(expires_s, &batch::join(&digests, signature)),
                    None => Vec::new(),
                };
            }
        }
    }

    fn check_item(&mut self, item: &Item, now: Instant) -> Option<Instant> {
        let (expires_s, signature) = seal::split(&item.signature)?;
        let signed = item.signed_bytes(expires_s);
        let valid = match batch::split(signature) {
            // Signed with other items: its digest among theirs, and those signed.
            Some((digests, signature)) => {
                batch::covers(digests, &batch::digest(&signed))
                    && self.signed_by(item.writer, &batch::message(digests), signature)
            }
            None => self.signed_by(item.writer, &signed, signature),
        };
        valid.then(|| self.wall.instant(expires_s.saturating_mul(1000), now))
    }

    fn sign_remove(&mut self, key: NodeId, name: &str, by: NodeId, now: Instant) -> Vec<u8> {
        let at = self.wall.ms(now);
        match self.sign(&seal::remove_bytes(key, name, by, at)) {
            Some(signature) => seal::join(at, &signature),
            None => Vec::new(),
        }
    }

    fn check_remove(
        &mut self,
        key: NodeId,
        name: &str,
        by: NodeId,
        seal: &[u8],
        now: Instant,
    ) -> bool {
        let Some((at, signature)) = seal::split(seal) else {
            return false;
        };
        let wall = self.wall.ms(now);
        let window = WINDOW.as_millis() as u64;
        if at.abs_diff(wall) > window {
            return false;
        }
        // Forget what is out of the window anyway.
        while let Some((digest, t)) = self.removes_order.front().copied() {
            if t.saturating_add(window) >= wall && self.removes_order.len() < MAX_REMOVES_SEEN {
                break;
            }
            self.removes_order.pop_front();
            self.removes_seen.remove(&digest);
        }
        let digest: [u8; 32] = Sha256::digest(signature).into();
        if self.removes_seen.contains(&digest) {
            return false;
        }
        if !self.signed_by(by, &seal::remove_bytes(key, name, by, at), signature) {
            return false;
        }
        self.removes_seen.insert(digest);
        self.removes_order.push_back((digest, at));
        true
    }
}

mod batch;
#[cfg(test)]
mod tests;
mod verified;
#[cfg(test)]
use verified::MAX_VERIFIED;
pub use verified::{SealCounts, Verified};
