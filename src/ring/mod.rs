//! The Chord ring as a sans-I/O state machine.
//!
//! [`Ring`] owns no socket and no clock. The driver feeds it requests,
//! responses, failures and the current time, and drains what it wants sent
//! ([`Ring::poll_transmit`]), what happened ([`Ring::poll_event`]) and when it
//! next wants to be woken ([`Ring::poll_timeout`]). The same code runs in the
//! tokio node and in the deterministic simulator ([`sim`]).
//!
//! Chord after Stoica et al. (SIGCOMM 2001) as Singh and Schulzrinne (2005)
//! use it for peer-to-peer telephony: a successor list of `successors`
//! entries, periodic stabilize / notify, fix-fingers and check-predecessor,
//! failure detection by request timeout. Items (user bindings and the like) live at the successor of
//! their key and are replicated on the next `replicas - 1` successors.
//! `docs/ring.md` describes the algorithms; the wire form lives outside the
//! ring, in `crate::overlay::wire` (`docs/protocol.md`).
//!
//! The parts, one file each: `types` and `message` (what the ring says
//! and hears), `incoming` (the driver's entry points), `routing` (lookups),
//! `maintenance` (join, stabilize, fingers, failure), `leave` (graceful
//! leave), `storage` (items held here), `claim` (the conditional store), `seal` (signed items), `ops` (the user's operations),
//! `requests` (our requests in flight), `client` (clients and
//! super-nodes), `routes` (cached routes to keys'
//! holders) and `timers` (the periodic work).

pub mod churn;
pub mod id;
mod message;
pub mod sim;
mod types;

mod answer;
mod claim;
mod client;
mod held;
mod incoming;
mod kept;
mod leave;
mod maintenance;
mod merge;
mod ops;
pub mod policy;
mod requests;
mod routes;
mod routing;
mod rtt;
pub mod seal;
mod storage;
mod timers;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

pub use client::{NOT_FOR_CLIENTS, Role, TOO_MANY_CLIENTS, UNREACHABLE};
pub use held::KeyItems;
pub use id::NodeId;
pub use message::{Outgoing, Refusal, Reply, RingRequest, RingResponse};
pub use policy::RecordPolicy;
pub use seal::ItemSeal;
pub use storage::Change;
pub use storage::RecordRefusals;
pub use timers::PURGE_EVERY;
pub use types::{
    IncomingId, Item, OpId, Peer, PeerStatus, RequestId, RingConfig, RingError, RingEvent,
    RingStatus,
};

use client::{ClientSide, Clients};
use kept::Kept;
use leave::Leaving;
use maintenance::{Fingers, Joining, Neighbours, Rounds};
use merge::Lost;
use ops::Operations;
use requests::Requests;
use routes::Routes;
use storage::Storage;
use timers::Timers;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Active,
    Leaving,
    Left,
}

/// The Chord ring state machine of one node.
pub struct Ring {
    me: Peer,
    config: RingConfig,
    state: State,
    /// Predecessor, successor list, and what we know of other peers' health.
    neighbours: Neighbours,
    /// The finger table and where its refresh stands.
    fingers: Fingers,
    /// Maintenance rounds in flight.
    rounds: Rounds,
    /// Bootstraps and whether we are in the ring yet.
    joining: Joining,
    /// A graceful leave under way.
    leaving: Leaving,
    /// The items held here, and what the replicas were last sent.
    storage: Storage,
    /// The user's operations under way.
    ops: Operations,
    /// The items stored through this node, stored again when their holder dies.
    kept: Kept,
    /// Peers we lost sight of, asked now and then where our successor is.
    lost: Lost,
    /// Our requests in flight, with their deadlines.
    requests: Requests,
    /// Keys' holders that answered us lately (`routes.rs`).
    routes: Routes,
    /// When each periodic job is next due.
    timers: Timers,
    /// This node as a client of a super-node (`client.rs`); `None`: a member.
    client: Option<ClientSide>,
    /// This node's clients, as a super-node.
    clients: Clients,
    transmits: VecDeque<Outgoing>,
    events: VecDeque<RingEvent>,
}

impl Ring {
    /// A ring of one. The Node-ID is `NodeId::of_addr(me)`.
    pub fn new(me: SocketAddr, config: RingConfig, now: Instant) -> Ring {
        let me = Peer::of_addr(me);
        Ring {
            me,
            timers: Timers::new(me.id, &config, now),
            fingers: Fingers::new(me.id),
            config,
            state: State::Active,
            neighbours: Neighbours::default(),
            rounds: Rounds::default(),
            joining: Joining::default(),
            leaving: Leaving::default(),
            storage: Storage::default(),
            ops: Operations::new(),
            kept: Kept::default(),
            lost: Lost::default(),
            routes: Routes::default(),
            requests: Requests::new(),
            client: None,
            clients: Clients::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn me(&self) -> Peer {
        self.me
    }

    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// True once a join succeeded (or another node joined us).
    pub fn is_joined(&self) -> bool {
        self.joining.joined
    }

    pub fn has_left(&self) -> bool {
        self.state == State::Left
    }

    /// Told to join through bootstrap nodes and not in their ring yet: the
    /// node must not serve as a ring of one (that would split the ring).
    pub fn is_joining(&self) -> bool {
        !self.joining.joined && !self.joining.bootstraps.is_empty()
    }

    /// The bootstrap nodes it was told to join through.
    pub fn bootstraps(&self) -> &[SocketAddr] {
        &self.joining.bootstraps
    }

    pub fn predecessor(&self) -> Option<Peer> {
        self.neighbours.predecessor
    }

    /// The successor list, nearest first; empty while alone.
    pub fn successors(&self) -> &[Peer] {
        &self.neighbours.successors
    }

    /// Our successor, or ourselves while alone.
    pub fn successor(&self) -> Peer {
        self.neighbours
            .successors
            .first()
            .copied()
            .unwrap_or(self.me)
    }

    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<RingEvent> {
        self.events.pop_front()
    }

    pub fn status(&self) -> RingStatus {
        let mut fingers: Vec<Peer> = Vec::new();
        for f in self.fingers.table.iter().flatten() {
            if !fingers.contains(f) {
                fingers.push(*f);
            }
        }
        let mut primary = 0;
        let mut replica = 0;
        for (key, items) in &self.storage.items {
            if self.is_primary(*key) {
                primary += items.len();
            } else {
                replica += items.len();
            }
        }
        RingStatus {
            node_id: self.me.id.to_string(),
            addr: self.me.addr.to_string(),
            joined: self.joining.joined,
            predecessor: self.neighbours.predecessor.map(Into::into),
            successors: self
                .neighbours
                .successors
                .iter()
                .map(|p| (*p).into())
                .collect(),
            fingers: fingers.into_iter().map(Into::into).collect(),
            items_primary: primary,
            items_replica: replica,
            pending_requests: self.requests.pending.len(),
            role: self.role(),
            super_node: self.super_node().map(Into::into),
            clients: self.client_count(),
        }
    }

    /// What this node holds for `key`, primary or replica (expired ones included
    /// until the next purge).
    pub fn local_items(&self, key: NodeId) -> Vec<Item> {
        self.storage
            .items
            .get(&key)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every item held here.
    pub fn all_items(&self) -> impl Iterator<Item = &Item> {
        self.storage.items.values().flat_map(|m| m.values())
    }

    /// Peers worth remembering for a later bootstrap.
    /// Whether `addr` is a node of our ring that we know (predecessor,
    /// successor list, fingers), without allocating.
    pub fn knows(&self, addr: SocketAddr) -> bool {
        self.neighbours
            .predecessor
            .iter()
            .chain(self.neighbours.successors.iter())
            .chain(self.fingers.table.iter().flatten())
            .any(|p| p.addr == addr && p.addr != self.me.addr)
    }

    pub fn known_peers(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        let all = self
            .neighbours
            .predecessor
            .iter()
            .chain(self.neighbours.successors.iter())
            .chain(self.fingers.table.iter().flatten());
        for p in all {
            if !out.contains(&p.addr) {
                out.push(p.addr);
            }
        }
        out
    }

    /// How many items stored through this node are kept here, to be stored
    /// again should their holder die.
    pub fn kept_items(&self) -> usize {
        self.kept.len()
    }

    /// The smoothed round trip to the peer at `addr`, if it ever answered us.
    pub fn rtt(&self, addr: SocketAddr) -> Option<std::time::Duration> {
        self.neighbours.rtt.srtt(addr)
    }

    /// How many peers this node lost sight of and still tries, to merge a
    /// split ring.
    pub fn lost_peers(&self) -> usize {
        self.lost.len()
    }

    /// Distinct finger entries.
    pub fn distinct_fingers(&self) -> usize {
        let mut seen: Vec<NodeId> = Vec::new();
        for f in self.fingers.table.iter().flatten() {
            if !seen.contains(&f.id) {
                seen.push(f.id);
            }
        }
        seen.len()
    }

    fn respond(&mut self, id: IncomingId, response: RingResponse) {
        self.transmits
            .push_back(Outgoing::Response { to: id, response });
    }
}

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod tests;
