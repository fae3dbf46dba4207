//! What the node's components hand to the network: messages through the
//! transaction layer, raw bytes sent statelessly, and names to resolve —
//! each request and each look-up tagged with the component that started it,
//! so that its answer goes back to that component and to no other.
//!
//! The outbox also holds the core's one source of randomness (branches,
//! tags, Call-IDs, client nonces): seeded once, so the same seed and the
//! same inputs give the same messages.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::sip::message::{Message, Request, Response};
use crate::sip::target::Destination;
use crate::sip::transaction::{
    ClientKey, MAGIC_COOKIE, Owner, Peer, ServerKey, Timers, Transactions,
};

/// The components that start client transactions and look-ups.
pub mod owner {
    use crate::sip::transaction::Owner;

    /// The proxy: forwarded requests and their targets' names.
    pub const PROXY: Owner = Owner(1);
    /// The overlay: the ring's own requests (P2P-over-SIP).
    pub const OVERLAY: Owner = Owner(2);
    /// The gateway: cross-registrations and ENUM look-ups.
    pub const GATEWAY: Owner = Owner(3);
    /// Authentication: users' credentials fetched from the ring.
    pub const AUTH: Owner = Owner(4);
    /// Offline messages: stored messages delivered, their ring items.
    pub const MESSAGES: Owner = Owner(5);
    /// Presence: NOTIFYs to watchers, publications and subscriptions in the ring.
    pub const PRESENCE: Owner = Owner(6);
    /// Voicemail: users' items looked at, recordings stored, BYE at the limit.
    pub const VOICEMAIL: Owner = Owner(7);
    /// Accounts: sign-up claims, buddy lists read and written (HTTP).
    pub const ACCOUNTS: Owner = Owner(20);
    /// Conferences: the look-up of a room's focus node.
    pub const CONFERENCE: Owner = Owner(8);
}

/// Names a pending resolution of a host name or an ENUM look-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResolveId(pub u64);

/// The transaction layer plus the stateless sends and resolutions.
pub struct Outbox {
    pub transactions: Transactions,
    raw: VecDeque<(Peer, Bytes)>,
    resolves: VecDeque<(ResolveId, Destination)>,
    enums: VecDeque<(ResolveId, String)>,
    /// Who asked for each look-up still unanswered.
    askers: HashMap<ResolveId, Owner>,
    next_resolve: u64,
    rng: StdRng,
}

impl Outbox {
    pub fn new(timers: Timers, seed: u64) -> Outbox {
        Outbox {
            transactions: Transactions::new(timers),
            raw: VecDeque::new(),
            resolves: VecDeque::new(),
            enums: VecDeque::new(),
            askers: HashMap::new(),
            next_resolve: 1,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Starts a client transaction for `owner`; its events carry the tag.
    pub fn request(&mut self, owner: Owner, request: Request, to: Peer, now: Instant) -> ClientKey {
        self.transactions.send_request_for(owner, request, to, now)
    }

    pub fn respond(&mut self, key: ServerKey, response: Response, now: Instant) {
        self.transactions.respond(key, response, now)
    }

    /// Sends a message outside any transaction (ACK for 2xx, stray responses).
    pub fn stateless(&mut self, to: Peer, message: &Message) {
        self.raw.push_back((to, message.to_bytes()));
    }

    pub fn raw(&mut self, to: Peer, bytes: Bytes) {
        self.raw.push_back((to, bytes));
    }

    /// Asks the driver to resolve a destination for `owner`; the answer
    /// comes back with the id.
    pub fn resolve(&mut self, owner: Owner, destination: Destination) -> ResolveId {
        let id = self.next_id(owner);
        self.resolves.push_back((id, destination));
        id
    }

    /// Asks the driver for the ENUM record of an E.164 number, for `owner`.
    pub fn enum_lookup(&mut self, owner: Owner, e164: String) -> ResolveId {
        let id = self.next_id(owner);
        self.enums.push_back((id, e164));
        id
    }

    fn next_id(&mut self, owner: Owner) -> ResolveId {
        let id = ResolveId(self.next_resolve);
        self.next_resolve += 1;
        self.askers.insert(id, owner);
        id
    }

    /// Who asked for look-up `id` (forgotten once told: one answer per id).
    pub fn asker(&mut self, id: ResolveId) -> Option<Owner> {
        self.askers.remove(&id)
    }

    /// The next bytes to send, from the transactions first.
    pub fn poll_transmit(&mut self) -> Option<(Peer, Bytes)> {
        if let Some(t) = self.transactions.poll_transmit() {
            return Some((t.to, t.message.to_bytes()));
        }
        self.raw.pop_front()
    }

    pub fn poll_resolve(&mut self) -> Option<(ResolveId, Destination)> {
        self.resolves.pop_front()
    }

    pub fn poll_enum(&mut self) -> Option<(ResolveId, String)> {
        self.enums.pop_front()
    }

    /// A fresh RFC 3261 branch: the magic cookie and 128 bits from the core's RNG.
    pub fn new_branch(&mut self) -> String {
        format!("{MAGIC_COOKIE}{:032x}", self.rng.random::<u128>())
    }

    /// 64 bits from the core's RNG in hex (tags, client nonces, Call-IDs).
    pub fn random_hex(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }

    /// A seed for a component that keeps a generator of its own.
    pub fn seed(&mut self) -> u64 {
        self.rng.random()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_have_the_cookie_differ_and_follow_the_seed() {
        let mut a = Outbox::new(Timers::default(), 7);
        let (first, second) = (a.new_branch(), a.new_branch());
        assert!(first.starts_with(MAGIC_COOKIE));
        assert_ne!(first, second);
        let mut b = Outbox::new(Timers::default(), 7);
        assert_eq!(
            b.new_branch(),
            first,
            "the same seed gives the same branches"
        );
    }
}
