//! Our requests in flight: what each one is for ([`Pending`]), who waits for a
//! lookup's answer ([`Parent`]), and the table of deadlines by which the
//! driver's silence counts as failure. Timeouts come from the peer's
//! round-trip estimate ([`super::rtt`]); a lookup forwarded recursively
//! waits for the whole path, so it gets the ceiling and a *late* mark at a
//! few round trips to its next hop, when that hop is probed. Requests given
//! up on are queued for the driver, which stops their retransmissions.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{IncomingId, NodeId, OpId, Outgoing, Peer, Reply, RequestId, Ring, RingRequest};

/// Our requests in flight, by request id, and their deadlines in order.
pub(super) struct Requests {
    pub(super) pending: HashMap<u64, PendingEntry>,
    pub(super) deadlines: BTreeSet<(Instant, u64)>,
    /// When forwarded lookups are late (their next hop is probed then).
    pub(super) lates: BTreeSet<(Instant, u64)>,
    /// Requests given up on, with their peer: a late answer still tells us
    /// the peer lives.
    pub(super) expired: HashMap<u64, SocketAddr>,
    /// Requests given up on, for the driver ([`Ring::poll_given_up`]): it
    /// stops their retransmissions.
    pub(super) given_up: VecDeque<RequestId>,
    /// Our semi-recursive lookups in flight: nonce to request id.
    pub(super) awaiting: HashMap<u64, u64>,
    /// What our nonces are drawn from (`answer.rs`).
    pub(super) secret: u64,
    /// The id of the next request.
    pub(super) next: u64,
}

/// Requests given up on that are remembered for late answers.
const MAX_EXPIRED: usize = 4096;

/// Requests given up on that wait for the driver to take them; beyond, the
/// oldest is dropped (its transport then retransmits until its own timeout).
const MAX_GIVEN_UP: usize = 4096;

/// A forwarded lookup is late after this many round trips to its next hop.
const LATE_AFTER_RTOS: u32 = 2;

impl Requests {
    pub(super) fn new() -> Requests {
        Requests {
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            lates: BTreeSet::new(),
            expired: HashMap::new(),
            given_up: VecDeque::new(),
            awaiting: HashMap::new(),
            secret: 0,
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
    /// Asking a peer we had lost sight of where our successor is.
    MergeCheck(Peer),
    /// A semi-recursive lookup passing through: the answer goes straight
    /// to the originator (`answer.rs`), not back to the node that asked us.
    Relay { reply: Reply, key: NodeId },
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
        /// Semi-recursive: where the answer goes; `to` only acknowledges.
        reply: Option<Reply>,
    },
    /// Our semi-recursive lookup, acknowledged by its first hop: waiting
    /// for the answer from the node that finds it (`answer.rs`).
    Await {
        key: NodeId,
        parent: Parent,
        exclude: Vec<NodeId>,
        attempts: u32,
        /// The first hop, which acknowledged.
        to: Peer,
        nonce: u64,
    },
    /// A semi-recursive lookup's answer sent to its originator.
    Answer {
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
    /// Is this peer alive? (a forwarded lookup through it is late or timed
    /// out, or it is a closer successor we had taken for dead)
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
    /// A client's Attach to a super-node (`client.rs`).
    Attach {
        to: Peer,
    },
    /// A client's Probe: may the super-node reach us?
    Reachable {
        to: Peer,
    },
    /// A client asks its super-node for its successors (members to attach
    /// to later).
    Members {
        to: Peer,
    },
    /// A super-node's Ping of a client that asked to be probed.
    Reach {
        incoming: IncomingId,
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
    /// When it was sent: the answer's delay is a round-trip sample when the
    /// peer answers by itself ([`measures_rtt`]).
    pub(super) sent: Instant,
    /// Forwarded lookups: when the next hop is probed.
    pub(super) late: Option<Instant>,
    pub(super) pending: Pending,
}

/// The nonce of our own semi-recursive lookup (not one we relay).
pub(super) fn own_nonce(p: &Pending) -> Option<u64> {
    match p {
        Pending::Route {
            reply: Some(reply),
            parent,
            ..
        } if !matches!(parent, Parent::Relay { .. }) => Some(reply.nonce),
        Pending::Await { nonce, .. } => Some(*nonce),
        _ => None,
    }
}

/// Does the answer to this request come from its peer alone (not after
/// a lookup further along the ring)?
pub(super) fn measures_rtt(p: &Pending) -> bool {
    match p {
        Pending::Route {
            iterative, reply, ..
        } => *iterative || reply.is_some(),
        Pending::Join { .. } | Pending::Reachable { .. } | Pending::Await { .. } => false,
        _ => true,
    }
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
        | Pending::Leave { to, .. }
        | Pending::Attach { to }
        | Pending::Reachable { to }
        | Pending::Members { to }
        | Pending::Reach { to, .. }
        | Pending::Answer { to } => Some(to.addr),
        Pending::Join { bootstrap } => Some(*bootstrap),
        // Its first hop acknowledged; the answer comes from elsewhere.
        Pending::Await { .. } => None,
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
        let (timeout, late) = self.timeouts(to, &pending);
        let deadline = now + timeout;
        let late = late.map(|l| now + l);
        self.requests.pending.insert(
            id,
            PendingEntry {
                deadline,
                sent: now,
                late,
                pending,
            },
        );
        self.requests.deadlines.insert((deadline, id));
        if let Some(late) = late {
            self.requests.lates.insert((late, id));
        }
        self.transmits.push_back(Outgoing::Request {
            id: RequestId(id),
            to,
            request,
        });
    }

    pub(super) fn take_pending(&mut self, id: u64) -> Option<PendingEntry> {
        let entry = self.requests.pending.remove(&id)?;
        if let Some(nonce) = own_nonce(&entry.pending) {
            self.requests.awaiting.remove(&nonce);
        }
        self.requests.deadlines.remove(&(entry.deadline, id));
        if let Some(late) = entry.late {
            self.requests.lates.remove(&(late, id));
        }
        Some(entry)
    }

    /// Remembers a request given up on, so that its late answer still
    /// clears its peer's dead mark.
    pub(super) fn expire(&mut self, id: u64, pending: &Pending) {
        if self.requests.expired.len() >= MAX_EXPIRED {
            self.requests.expired.clear();
        }
        if self.requests.given_up.len() >= MAX_GIVEN_UP {
            self.requests.given_up.pop_front();
        }
        self.requests.given_up.push_back(RequestId(id));
        if let Some(addr) = pending_peer_addr(pending) {
            self.requests.expired.insert(id, addr);
        }
    }

    /// The next request this ring gave up on (its deadline passed, or its
    /// peer was found dead): nobody waits for its answer any more, so the
    /// driver may stop retransmitting it. A late answer fed to
    /// [`Ring::handle_response`] is still welcome (it clears the peer's dead
    /// mark); a failure reported for it is ignored.
    pub fn poll_given_up(&mut self) -> Option<RequestId> {
        self.requests.given_up.pop_front()
    }

    /// The retransmission timeout of `addr`, from its round-trip estimate.
    pub(super) fn rto(&self, addr: SocketAddr) -> Duration {
        self.neighbours
            .rtt
            .timeout(addr, self.config.rto_min, self.config.request_timeout)
    }

    /// How long a request may go unanswered, and for a forwarded lookup when
    /// it is late.
    fn timeouts(&self, to: SocketAddr, pending: &Pending) -> (Duration, Option<Duration>) {
        let ceiling = self.config.request_timeout;
        match pending {
            // A whole path answers, or many items travel: the ceiling.
            Pending::Route {
                iterative: false,
                reply: None,
                ..
            } => {
                let late = self.rto(to) * LATE_AFTER_RTOS;
                (ceiling, (late < ceiling).then_some(late))
            }
            // A semi-recursive hop only acknowledges: its own round trip,
            // floored as other requests' are (a 30 ms floor took hops that
            // were merely late on a loaded machine for lost, and the
            // re-routes multiplied the load: docs/BENCHMARKS.md).
            Pending::Route {
                reply: Some(_),
                iterative: false,
                ..
            } => (self.rto(to), None),
            Pending::Join { .. } | Pending::Leave { .. } | Pending::Push { .. } => (ceiling, None),
            // The super-node pings us first, then answers.
            Pending::Reachable { .. } => (ceiling, None),
            // The super-node carries the operation out, then answers.
            Pending::OpRequest { .. } if self.client.is_some() => {
                (super::client::relayed_timeout(ceiling), None)
            }
            _ => (self.rto(to), None),
        }
    }

    /// Every request to `addr` fails now (the peer is known dead).
    pub(super) fn fail_pending_to(&mut self, addr: SocketAddr, now: Instant) {
        let mut ids: Vec<u64> = self
            .requests
            .pending
            .iter()
            .filter(|(_, e)| {
                pending_peer_addr(&e.pending) == Some(addr)
                    && !matches!(e.pending, Pending::Join { .. } | Pending::Leave { .. })
            })
            .map(|(id, _)| *id)
            .collect();
        // In the order they were sent: the simulations replay exactly.
        ids.sort_unstable();
        let entries: Vec<(u64, PendingEntry)> = ids
            .into_iter()
            .filter_map(|id| self.take_pending(id).map(|e| (id, e)))
            .collect();
        for (id, entry) in entries {
            self.expire(id, &entry.pending);
            self.on_failure(entry.pending, now);
        }
    }

    /// Forwarded lookups that are late: probe their next hop, which fails
    /// them at once (and every other request to it) if it is dead.
    pub(super) fn handle_lates(&mut self, now: Instant) {
        while let Some(&(late, id)) = self.requests.lates.iter().next() {
            if late > now {
                break;
            }
            self.requests.lates.remove(&(late, id));
            let Some(entry) = self.requests.pending.get_mut(&id) else {
                continue;
            };
            entry.late = None;
            let to = match entry.pending {
                Pending::Route { to, .. } => Some(to),
                _ => None,
            };
            if let Some(to) = to {
                self.probe(to, now);
            }
        }
    }
}
