//! What the node's state machines hand to the network: messages through the
//! transaction layer, raw bytes sent statelessly, and host names to resolve.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::proxy::target::Destination;
use crate::sip::message::{Message, Request, Response};
use crate::sip::transaction::{ClientKey, Peer, ServerKey, Timers, Transactions};

/// Names a pending resolution of a host name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResolveId(pub u64);

/// The transaction layer plus the stateless sends and resolutions.
pub struct Outbox {
    pub transactions: Transactions,
    raw: VecDeque<(Peer, Bytes)>,
    resolves: VecDeque<(ResolveId, Destination)>,
    enums: VecDeque<(ResolveId, String)>,
    next_resolve: u64,
}

impl Outbox {
    pub fn new(timers: Timers) -> Outbox {
        Outbox {
            transactions: Transactions::new(timers),
            raw: VecDeque::new(),
            resolves: VecDeque::new(),
            enums: VecDeque::new(),
            next_resolve: 1,
        }
    }

    pub fn request(&mut self, request: Request, to: Peer, now: Instant) -> ClientKey {
        self.transactions.send_request(request, to, now)
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

    /// Asks the driver to resolve a destination; the answer comes back with the id.
    pub fn resolve(&mut self, destination: Destination) -> ResolveId {
        let id = ResolveId(self.next_resolve);
        self.next_resolve += 1;
        self.resolves.push_back((id, destination));
        id
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

    /// Asks the driver for the ENUM record of an E.164 number.
    pub fn enum_lookup(&mut self, e164: String) -> ResolveId {
        let id = ResolveId(self.next_resolve);
        self.next_resolve += 1;
        self.enums.push_back((id, e164));
        id
    }

    pub fn poll_enum(&mut self) -> Option<(ResolveId, String)> {
        self.enums.pop_front()
    }
}
