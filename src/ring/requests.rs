//! Our requests in flight: what each one is for ([`Pending`]), who waits for a
//! lookup's answer ([`Parent`]), and the table of deadlines by which the
//! driver's silence counts as failure.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use super::{IncomingId, NodeId, OpId, Outgoing, Peer, RequestId, Ring, RingRequest};

/// Our requests in flight, by request id, and their deadlines in order.
pub(super) struct Requests {
    pub(super) pending: HashMap<u64, PendingEntry>,
    pub(super) deadlines: BTreeSet<(Instant, u64)>,
    /// The id of the next request.
    pub(super) next: u64,
}

impl Requests {
    pub(super) fn new() -> Requests {
        Requests {
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            next: 1,
        }
    }
}

/// Who waits for a lookup's result.
#[derive(Clone, Debug)]
pub(super) enum Parent {
    /// A remote node's FindSuccessor that we forwarded.
    Remote(IncomingId),
    /// Our own operation.
    Op(OpId),
    /// Refreshing finger `i`.
    Finger(usize),
    /// Checking our successor by a lookup routed through the ring.
    SuccessorCheck,
}

#[derive(Clone, Debug)]
pub(super) enum Pending {
    Route {
        key: NodeId,
        parent: Parent,
        /// The `hops` value of the request we sent.
        hops: u32,
        iterative: bool,
        exclude: Vec<NodeId>,
        attempts: u32,
        to: Peer,
    },
    Join {
        bootstrap: SocketAddr,
    },
    Stabilize {
        to: Peer,
    },
    Notify {
        to: Peer,
    },
    CheckPredecessor {
        to: Peer,
    },
    /// Is this peer alive? (after a forwarded lookup timed out)
    Probe {
        to: Peer,
    },
    /// Replica push, removal or key hand-over: failure means the peer is dead.
    Push {
        to: Peer,
    },
    /// Our operation's request to the key's holder.
    OpRequest {
        op: OpId,
        to: Peer,
    },
    /// A Transfer or Leave sent while leaving.
    Leave {
        to: Peer,
        /// Items and leave notice to a successor (retried with the next one).
        handover: bool,
    },
}

pub(super) struct PendingEntry {
    pub(super) deadline: Instant,
    pub(super) pending: Pending,
}

pub(super) fn pending_peer_addr(p: &Pending) -> Option<SocketAddr> {
    match p {
        Pending::Route { to, .. }
        | Pending::Stabilize { to }
        | Pending::Notify { to }
        | Pending::CheckPredecessor { to }
        | Pending::Probe { to }
        | Pending::Push { to }
        | Pending::OpRequest { to, .. }
        | Pending::Leave { to, .. } => Some(to.addr),
        Pending::Join { bootstrap } => Some(*bootstrap),
    }
}

impl Ring {
    pub(super) fn send(
        &mut self,
        to: SocketAddr,
        request: RingRequest,
        pending: Pending,
        now: Instant,
    ) {
        let id = self.requests.next;
        self.requests.next += 1;
        let deadline = now + self.config.request_timeout;
        self.requests
            .pending
            .insert(id, PendingEntry { deadline, pending });
        self.requests.deadlines.insert((deadline, id));
        self.transmits.push_back(Outgoing::Request {
            id: RequestId(id),
            to,
            request,
        });
    }

    pub(super) fn take_pending(&mut self, id: u64) -> Option<PendingEntry> {
        let entry = self.requests.pending.remove(&id)?;
        self.requests.deadlines.remove(&(entry.deadline, id));
        Some(entry)
    }
}
