//! The Chord ring as a sans-I/O state machine.
//!
//! [`Ring`] owns no socket and no clock. The driver feeds it requests,
//! responses, failures and the current time, and drains what it wants sent
//! ([`Ring::poll_transmit`]), what happened ([`Ring::poll_event`]) and when it
//! next wants to be woken ([`Ring::poll_timeout`]). The same code runs in the
//! tokio node and in the deterministic simulator ([`sim`]).
//!
//! Chord after Stoica et al. (SIGCOMM 2001) as used by P2P-SIP (Singh and
//! Schulzrinne 2005): a successor list of `successors` entries, periodic
//! stabilize / notify, fix-fingers and check-predecessor, failure detection by
//! request timeout. Items (user bindings and the like) live at the successor of
//! their key and are replicated on the next `replicas - 1` successors.
//! `docs/ring.md` describes the algorithms; the wire form lives outside the
//! ring, in `crate::overlay::wire` (`docs/protocol.md`).

pub mod id;
pub mod sim;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use id::ID_BITS;
pub use id::NodeId;

/// A node of the overlay: its Node-ID and the address it listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub id: NodeId,
    pub addr: SocketAddr,
}

impl Peer {
    /// The peer listening on `addr`, with the Node-ID derived from it.
    pub fn of_addr(addr: SocketAddr) -> Peer {
        Peer {
            id: NodeId::of_addr(addr),
            addr,
        }
    }
}

/// Tuning of the ring.
#[derive(Clone, Debug)]
pub struct RingConfig {
    /// Length of the successor list.
    pub successors: usize,
    /// Copies of each item: the primary and `replicas - 1` successors.
    pub replicas: usize,
    pub stabilize_every: Duration,
    /// One distinct finger is refreshed per period.
    pub fix_fingers_every: Duration,
    pub check_predecessor_every: Duration,
    /// A request unanswered for this long has failed (the peer is taken for dead
    /// when the request was addressed to it directly).
    pub request_timeout: Duration,
    /// Resolve our own lookups iteratively (the next hop answers "ask X next").
    pub iterative: bool,
    /// How often an operation (lookup, store, fetch, remove) is retried from
    /// scratch after its route failed.
    pub op_retries: u32,
    /// Longest lookup path before a request is refused as looping.
    pub max_hops: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            successors: 8,
            replicas: 3,
            stabilize_every: Duration::from_secs(1),
            fix_fingers_every: Duration::from_secs(1),
            check_predecessor_every: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
            iterative: false,
            op_retries: 4,
            max_hops: 64,
        }
    }
}

/// Id this ring gives one of its own outgoing requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Id the driver gives an incoming request; echoed on the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IncomingId(pub u64);

/// Id of a user operation (lookup, store, fetch, remove).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// One stored value. Several items may live under one key, told apart by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub key: NodeId,
    /// E.g. the contact URI of a binding.
    pub name: String,
    /// "binding", "message", "gateway", ...
    pub kind: String,
    pub value: Vec<u8>,
    /// A store replaces an item of the same (key, name) with a lower or equal version.
    pub version: u64,
    pub expires: Instant,
}

/// Overlay requests, independent of the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingRequest {
    /// Find the successor of `key`. `hops` counts FindSuccessor messages on the
    /// path so far, this one included. Recursive unless `iterative`.
    FindSuccessor {
        key: NodeId,
        hops: u32,
        iterative: bool,
    },
    /// Stabilize: "who is your predecessor, and what is your successor list?"
    GetPredecessor,
    /// "I think I am your predecessor."
    Notify { predecessor: Peer },
    /// Liveness probe.
    Ping,
    /// Store items. `replica == false`: the receiver is the key's successor and
    /// replicates them itself; `true`: just keep the copy.
    Store { items: Vec<Item>, replica: bool },
    /// All live items under a key.
    Fetch { key: NodeId },
    /// Remove the item (key, name); `replica == false` makes the receiver remove
    /// it from its replicas too.
    Remove {
        key: NodeId,
        name: String,
        replica: bool,
    },
    /// Key hand-over: on join (successor to new predecessor) and on leave
    /// (leaving node to its successor).
    Transfer { items: Vec<Item> },
    /// "My predecessor is now `predecessor`": sent by a node to its previous
    /// predecessor, which then stabilizes at once and adopts the newcomer as
    /// its successor instead of a period later.
    NewPredecessor { predecessor: Peer },
    /// Graceful leave: `leaving` goes; its predecessor and successor list let the
    /// neighbours close the gap at once.
    Leave {
        leaving: Peer,
        predecessor: Option<Peer>,
        successors: Vec<Peer>,
    },
}

/// Overlay responses, independent of the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingResponse {
    /// The successor of the key, the path length, and the successor's own next
    /// successors (where the replicas of the key live).
    Found {
        successor: Peer,
        hops: u32,
        replicas: Vec<Peer>,
    },
    /// Iterative lookup: "ask this node next".
    Next {
        ask: Peer,
        hops: u32,
    },
    Predecessor {
        predecessor: Option<Peer>,
        successors: Vec<Peer>,
    },
    /// Plain acknowledgement (Ping, Notify, Transfer, Leave).
    Ok,
    /// Store or Remove done.
    Stored,
    Items {
        items: Vec<Item>,
    },
    /// The request was refused, and why.
    Refused(Refusal),
}

/// Why a node refused a request. Only what it means: the wire codec maps it
/// to and from the wire's own codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A lookup found no next hop it had not already tried.
    NoRoute,
    /// A lookup used up its route attempts.
    Timeout,
    /// An iterative lookup gave up: the path grew too long, or a hop named
    /// itself as the next one.
    LookupFailed,
    /// A lookup's path grew longer than `max_hops`.
    Loop,
    /// The node is still joining; answering as a ring of one would split the
    /// ring.
    NotJoined,
    /// The node is leaving and takes no more items.
    Leaving,
    /// The node has left the ring.
    Left,
    /// A refusal the ring has no name for, in the peer's own words.
    Other(String),
}

impl Refusal {
    /// Every refusal the ring itself gives.
    pub const NAMED: [Refusal; 7] = [
        Refusal::NoRoute,
        Refusal::Timeout,
        Refusal::LookupFailed,
        Refusal::Loop,
        Refusal::NotJoined,
        Refusal::Leaving,
        Refusal::Left,
    ];

    /// A few words for people (and the reason phrase on the wire).
    pub fn reason(&self) -> &str {
        match self {
            Refusal::NoRoute => "no route",
            Refusal::Timeout => "lookup timed out",
            Refusal::LookupFailed => "lookup failed",
            Refusal::Loop => "lookup loop",
            Refusal::NotJoined => "not joined yet",
            Refusal::Leaving => "node is leaving",
            Refusal::Left => "node has left the ring",
            Refusal::Other(words) => words,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// Outcome of a request this node sent, or a message it wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    Request {
        id: RequestId,
        to: SocketAddr,
        request: RingRequest,
    },
    Response {
        to: IncomingId,
        response: RingResponse,
    },
}

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("no answer after {0} attempts")]
    Timeout(u32),
    #[error("the peer refused: {0}")]
    Refused(Refusal),
    #[error("this node has left the ring")]
    Left,
}

/// What the ring reports to its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingEvent {
    Joined {
        successor: Peer,
    },
    SuccessorChanged {
        old: Option<Peer>,
        new: Peer,
    },
    PredecessorChanged {
        old: Option<Peer>,
        new: Option<Peer>,
    },
    LookupDone {
        op: OpId,
        result: Result<(Peer, u32), RingError>,
    },
    /// Store and remove both end in `StoreDone`.
    StoreDone {
        op: OpId,
        result: Result<(), RingError>,
    },
    FetchDone {
        op: OpId,
        result: Result<Vec<Item>, RingError>,
    },
    Left,
}

/// A peer in [`RingStatus`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeerStatus {
    pub id: String,
    pub addr: String,
}

impl From<Peer> for PeerStatus {
    fn from(p: Peer) -> Self {
        PeerStatus {
            id: p.id.to_string(),
            addr: p.addr.to_string(),
        }
    }
}

/// A snapshot of the node's view of the ring.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RingStatus {
    pub node_id: String,
    pub addr: String,
    pub joined: bool,
    pub predecessor: Option<PeerStatus>,
    pub successors: Vec<PeerStatus>,
    /// Distinct finger entries, nearest first.
    pub fingers: Vec<PeerStatus>,
    pub items_primary: usize,
    pub items_replica: usize,
    pub pending_requests: usize,
}

/// How often expired items are dropped. Reads already skip expired items;
/// the purge only frees memory, and scans every item, so it runs seldom.
pub const PURGE_EVERY: Duration = Duration::from_secs(30);

/// Items per Store/Transfer message.
const ITEMS_PER_MESSAGE: usize = 64;
/// How long a peer found dead is kept out of our tables unless it talks to us.
const DEAD_MEMORY: Duration = Duration::from_secs(30);
/// Attempts a node makes to route one lookup (other next hops) before it
/// answers with an error.
const ROUTE_ATTEMPTS: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Active,
    Leaving,
    Left,
}

/// Who waits for a lookup's result.
#[derive(Clone, Debug)]
enum Parent {
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
enum Pending {
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

struct PendingEntry {
    deadline: Instant,
    pending: Pending,
}

#[derive(Clone, Debug)]
enum OpKind {
    Lookup,
    Store(Item),
    Remove(String),
    Fetch,
}

struct Op {
    key: NodeId,
    kind: OpKind,
    /// Route attempts so far.
    attempts: u32,
    /// Fetch: holders still to ask, in order.
    candidates: Vec<Peer>,
    /// Fetch: anybody answered?
    answered: bool,
}

/// The Chord ring state machine of one node.
pub struct Ring {
    me: Peer,
    config: RingConfig,
    state: State,
    joined: bool,
    predecessor: Option<Peer>,
    successors: Vec<Peer>,
    fingers: Vec<Option<Peer>>,
    finger_starts: Vec<NodeId>,
    next_finger: usize,
    finger_burst: bool,
    /// The successor check of this finger cycle is done.
    succ_checked: bool,
    /// Items by key, then by name: a store or remove finds its item at once
    /// however many share the key.
    items: BTreeMap<NodeId, BTreeMap<String, Item>>,
    pending: HashMap<u64, PendingEntry>,
    deadlines: BTreeSet<(Instant, u64)>,
    next_request: u64,
    next_op: u64,
    ops: HashMap<u64, Op>,
    transmits: VecDeque<Outgoing>,
    events: VecDeque<RingEvent>,
    next_stabilize: Instant,
    next_fix: Instant,
    next_check: Instant,
    /// When expired items are next dropped (a scan of every item).
    next_purge: Instant,
    stabilizing: bool,
    /// Stabilize again as soon as the one in flight ends.
    restabilize: bool,
    fixing: bool,
    checking: bool,
    dead: HashMap<SocketAddr, Instant>,
    /// When each peer last answered us.
    heard: HashMap<SocketAddr, Instant>,
    bootstraps: Vec<SocketAddr>,
    next_bootstrap: usize,
    joining: bool,
    join_retry_at: Option<Instant>,
    synced_pred: Option<NodeId>,
    synced_replicas: Vec<SocketAddr>,
    leave_pending: usize,
    /// Successors we tried to hand our items to while leaving.
    leave_tried: Vec<SocketAddr>,
}

impl Ring {
    /// A ring of one. The Node-ID is `NodeId::of_addr(me)`.
    pub fn new(me: SocketAddr, config: RingConfig, now: Instant) -> Ring {
        let me = Peer::of_addr(me);
        // Spread the timers of different nodes over the period, deterministically.
        let phase = |period: Duration, salt: usize| {
            let frac = me.id.0[salt] as f64 / 256.0;
            now + period.mul_f64(frac)
        };
        let finger_starts = (0..ID_BITS).map(|i| me.id.add_pow2(i)).collect();
        Ring {
            me,
            next_stabilize: phase(config.stabilize_every, 0),
            next_fix: phase(config.fix_fingers_every, 1),
            next_check: phase(config.check_predecessor_every, 2),
            next_purge: now + PURGE_EVERY,
            config,
            state: State::Active,
            joined: false,
            predecessor: None,
            successors: Vec::new(),
            fingers: vec![None; ID_BITS as usize],
            finger_starts,
            next_finger: 0,
            finger_burst: false,
            succ_checked: false,
            items: BTreeMap::new(),
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_request: 1,
            next_op: 1,
            ops: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stabilizing: false,
            restabilize: false,
            fixing: false,
            checking: false,
            dead: HashMap::new(),
            heard: HashMap::new(),
            bootstraps: Vec::new(),
            next_bootstrap: 0,
            joining: false,
            join_retry_at: None,
            synced_pred: None,
            synced_replicas: Vec::new(),
            leave_pending: 0,
            leave_tried: Vec::new(),
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
        self.joined
    }

    pub fn has_left(&self) -> bool {
        self.state == State::Left
    }

    pub fn predecessor(&self) -> Option<Peer> {
        self.predecessor
    }

    /// The successor list, nearest first; empty while alone.
    pub fn successors(&self) -> &[Peer] {
        &self.successors
    }

    /// Our successor, or ourselves while alone.
    pub fn successor(&self) -> Peer {
        self.successors.first().copied().unwrap_or(self.me)
    }

    /// Join the ring that `bootstrap` belongs to. May be called several times:
    /// the bootstraps are tried in turn until one answers.
    pub fn join(&mut self, bootstrap: SocketAddr, now: Instant) {
        if self.state != State::Active || bootstrap == self.me.addr {
            return;
        }
        if !self.bootstraps.contains(&bootstrap) {
            self.bootstraps.push(bootstrap);
        }
        if self.joined || self.joining {
            return;
        }
        self.try_join(now);
    }

    fn try_join(&mut self, now: Instant) {
        if self.bootstraps.is_empty() || self.joined {
            return;
        }
        let bootstrap = self.bootstraps[self.next_bootstrap % self.bootstraps.len()];
        self.joining = true;
        self.join_retry_at = None;
        self.send(
            bootstrap,
            RingRequest::FindSuccessor {
                key: self.me.id,
                hops: 1,
                iterative: false,
            },
            Pending::Join { bootstrap },
            now,
        );
    }

    // ----- incoming -----

    /// A request from another node. `from` is the transport source; the ring
    /// answers with an [`Outgoing::Response`] carrying `id`.
    pub fn handle_request(
        &mut self,
        from: SocketAddr,
        id: IncomingId,
        request: RingRequest,
        now: Instant,
    ) {
        let _ = from;
        if self.state == State::Left {
            self.respond(id, RingResponse::Refused(Refusal::Left));
            return;
        }
        match request {
            RingRequest::FindSuccessor {
                key,
                hops,
                iterative,
            } => {
                if hops > self.config.max_hops {
                    self.respond(id, RingResponse::Refused(Refusal::Loop));
                    return;
                }
                if !self.joined && !self.bootstraps.is_empty() {
                    // Still joining: answering as a ring of one would split the ring.
                    self.respond(id, RingResponse::Refused(Refusal::NotJoined));
                    return;
                }
                self.route(
                    key,
                    hops,
                    Parent::Remote(id),
                    iterative,
                    Vec::new(),
                    0,
                    true,
                    now,
                );
            }
            RingRequest::GetPredecessor => {
                let response = RingResponse::Predecessor {
                    predecessor: self.predecessor,
                    successors: self.successors.clone(),
                };
                self.respond(id, response);
            }
            RingRequest::Notify { predecessor } => {
                self.respond(id, RingResponse::Ok);
                self.on_notify(predecessor, now);
            }
            RingRequest::Ping => self.respond(id, RingResponse::Ok),
            RingRequest::NewPredecessor { predecessor } => {
                self.respond(id, RingResponse::Ok);
                let succ = self.successor();
                if predecessor != self.me && predecessor.id.in_open(self.me.id, succ.id) {
                    if self.stabilizing {
                        self.restabilize = true;
                    } else {
                        self.stabilize(now);
                    }
                }
            }
            RingRequest::Store { items, replica } => {
                if self.state == State::Leaving {
                    self.respond(id, RingResponse::Refused(Refusal::Leaving));
                    return;
                }
                for item in &items {
                    self.merge(item.clone(), now);
                }
                if !replica {
                    let targets: Vec<Peer> = self.replica_targets();
                    for to in targets {
                        self.push_items(to, items.clone(), now);
                    }
                }
                self.respond(id, RingResponse::Stored);
            }
            RingRequest::Fetch { key } => {
                let items = self.local_items_at(key, now);
                self.respond(id, RingResponse::Items { items });
            }
            RingRequest::Remove { key, name, replica } => {
                if self.state == State::Leaving {
                    self.respond(id, RingResponse::Refused(Refusal::Leaving));
                    return;
                }
                if replica {
                    self.remove_local(key, &name);
                } else {
                    self.remove_everywhere(key, &name, now);
                }
                self.respond(id, RingResponse::Stored);
            }
            RingRequest::Transfer { items } => {
                if self.state == State::Leaving {
                    self.respond(id, RingResponse::Refused(Refusal::Leaving));
                    return;
                }
                let mut mine = Vec::new();
                for item in items {
                    if self.is_primary(item.key) {
                        mine.push(item.clone());
                    }
                    self.merge(item, now);
                }
                self.respond(id, RingResponse::Ok);
                // Items we are now primary for go on to our replicas.
                if !mine.is_empty() {
                    for to in self.replica_targets() {
                        self.push_items(to, mine.clone(), now);
                    }
                }
            }
            RingRequest::Leave {
                leaving,
                predecessor,
                successors,
            } => {
                self.respond(id, RingResponse::Ok);
                self.on_leave(leaving, predecessor, successors, now);
            }
        }
        self.resync(now);
    }

    /// The answer to a request this ring sent.
    pub fn handle_response(&mut self, id: RequestId, response: RingResponse, now: Instant) {
        let Some(entry) = self.take_pending(id.0) else {
            return;
        };
        if self.state == State::Left {
            return;
        }
        let pending = entry.pending;
        if let Some(addr) = pending_peer_addr(&pending) {
            self.dead.remove(&addr);
            self.heard.insert(addr, now);
        }
        match pending {
            Pending::Route {
                key,
                parent,
                hops,
                iterative,
                exclude,
                attempts,
                to,
            } => match response {
                RingResponse::Found {
                    successor,
                    hops,
                    replicas,
                } => self.route_done(parent, Ok((successor, hops, replicas)), now),
                RingResponse::Next { ask, .. } if iterative => {
                    if hops >= self.config.max_hops || ask == to {
                        self.route_done(parent, Err(RingError::Timeout(attempts + 1)), now);
                    } else {
                        let request = RingRequest::FindSuccessor {
                            key,
                            hops: hops + 1,
                            iterative: true,
                        };
                        let pending = Pending::Route {
                            key,
                            parent,
                            hops: hops + 1,
                            iterative,
                            exclude,
                            attempts,
                            to: ask,
                        };
                        self.send(ask.addr, request, pending, now);
                    }
                }
                _ => {
                    // An error from the next hop: try another route.
                    let mut exclude = exclude;
                    exclude.push(to.id);
                    self.retry_route(key, hops - 1, parent, iterative, exclude, attempts + 1, now);
                }
            },
            Pending::Join { .. } => {
                if let RingResponse::Found {
                    successor,
                    replicas,
                    ..
                } = response
                {
                    self.joining = false;
                    let mut list = vec![successor];
                    list.extend(replicas);
                    self.set_successors(list, now);
                    if self.successors.is_empty() {
                        self.join_failed(now);
                    } else {
                        self.joined = true;
                        let successor = self.successors[0];
                        self.events.push_back(RingEvent::Joined { successor });
                        self.finger_burst = true;
                        self.next_finger = 0;
                        self.stabilize(now);
                        if !self.fixing {
                            self.fix_fingers(now);
                        }
                    }
                } else {
                    self.join_failed(now);
                }
            }
            Pending::Stabilize { to } => {
                self.stabilizing = false;
                if let RingResponse::Predecessor {
                    predecessor,
                    successors,
                } = response
                {
                    self.on_stabilize(to, predecessor, successors, now);
                }
                if self.restabilize && !self.stabilizing {
                    self.restabilize = false;
                    self.stabilize(now);
                }
            }
            Pending::Notify { .. } | Pending::Push { .. } | Pending::Probe { .. } => {}
            Pending::CheckPredecessor { .. } => self.checking = false,
            Pending::OpRequest { op, to } => self.op_answer(op, to, Some(response), now),
            Pending::Leave { to, handover } => {
                if handover && matches!(response, RingResponse::Refused(_)) {
                    self.hand_over_failed(to, now);
                }
                self.leave_step();
            }
        }
        self.resync(now);
    }

    /// A request this ring sent failed: transport error or the driver's timeout.
    pub fn handle_failure(&mut self, id: RequestId, now: Instant) {
        let Some(entry) = self.take_pending(id.0) else {
            return;
        };
        if self.state == State::Left {
            return;
        }
        self.on_failure(entry.pending, now);
        self.resync(now);
    }

    fn on_failure(&mut self, pending: Pending, now: Instant) {
        match pending {
            Pending::Route {
                key,
                parent,
                hops,
                iterative,
                mut exclude,
                attempts,
                to,
            } => {
                if iterative {
                    // We asked `to` directly and it only had to answer.
                    self.mark_dead(to, now);
                } else {
                    // The delay may be further down the path: check the peer.
                    self.send(to.addr, RingRequest::Ping, Pending::Probe { to }, now);
                }
                exclude.push(to.id);
                let start_hops = if iterative { 0 } else { hops - 1 };
                self.retry_route(
                    key,
                    start_hops,
                    parent,
                    iterative,
                    exclude,
                    attempts + 1,
                    now,
                );
            }
            Pending::Join { bootstrap } => {
                let _ = bootstrap;
                self.join_failed(now);
            }
            Pending::Stabilize { to } => {
                self.stabilizing = false;
                self.mark_dead(to, now);
                // Go straight on with the next successor.
                self.stabilize(now);
            }
            Pending::Notify { to } | Pending::Probe { to } | Pending::Push { to } => {
                self.mark_dead(to, now)
            }
            Pending::CheckPredecessor { to } => {
                self.checking = false;
                self.mark_dead(to, now);
            }
            Pending::OpRequest { op, to } => {
                self.mark_dead(to, now);
                self.op_answer(op, to, None, now);
            }
            Pending::Leave { to, handover } => {
                if handover {
                    self.hand_over_failed(to, now);
                }
                self.leave_step();
            }
        }
    }

    /// Timers: request timeouts, stabilize, fix-fingers, check-predecessor,
    /// expiry of items.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Left {
            return;
        }
        while let Some(&(deadline, id)) = self.deadlines.iter().next() {
            if deadline > now {
                break;
            }
            self.deadlines.remove(&(deadline, id));
            if let Some(entry) = self.pending.remove(&id) {
                self.on_failure(entry.pending, now);
            }
        }
        if self.state != State::Active {
            return;
        }
        if let Some(at) = self.join_retry_at
            && at <= now
        {
            self.join_retry_at = None;
            self.try_join(now);
        }
        if self.next_stabilize <= now {
            self.next_stabilize = now + self.config.stabilize_every;
            if !self.stabilizing {
                self.stabilize(now);
            }
        }
        if self.next_purge <= now {
            self.next_purge = now + PURGE_EVERY;
            self.purge(now);
        }
        if self.next_fix <= now {
            self.next_fix = now + self.config.fix_fingers_every;
            if !self.fixing {
                self.fix_fingers(now);
            }
        }
        if self.next_check <= now {
            self.next_check = now + self.config.check_predecessor_every;
            if !self.checking {
                self.check_predecessor(now);
            }
        }
        self.resync(now);
    }

    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<RingEvent> {
        self.events.pop_front()
    }

    /// When [`Ring::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Left {
            return None;
        }
        let request = self.deadlines.iter().next().map(|(t, _)| *t);
        if self.state == State::Leaving {
            return request;
        }
        let mut t = self
            .next_stabilize
            .min(self.next_fix)
            .min(self.next_check)
            .min(self.next_purge);
        if let Some(r) = request {
            t = t.min(r);
        }
        if let Some(j) = self.join_retry_at {
            t = t.min(j);
        }
        Some(t)
    }

    // ----- operations -----

    /// Find the successor of `key`; ends in [`RingEvent::LookupDone`].
    pub fn lookup(&mut self, key: NodeId, now: Instant) -> OpId {
        self.start_op(key, OpKind::Lookup, now)
    }

    /// Store `item` at its key's successor, which replicates it; ends in
    /// [`RingEvent::StoreDone`].
    pub fn store(&mut self, item: Item, now: Instant) -> OpId {
        self.start_op(item.key, OpKind::Store(item), now)
    }

    /// Remove (key, name) from the key's successor and its replicas; ends in
    /// [`RingEvent::StoreDone`].
    pub fn remove(&mut self, key: NodeId, name: String, now: Instant) -> OpId {
        self.start_op(key, OpKind::Remove(name), now)
    }

    /// All live items under `key`; ends in [`RingEvent::FetchDone`]. Asks the
    /// replicas when the primary fails or has nothing.
    pub fn fetch(&mut self, key: NodeId, now: Instant) -> OpId {
        self.start_op(key, OpKind::Fetch, now)
    }

    fn start_op(&mut self, key: NodeId, kind: OpKind, now: Instant) -> OpId {
        let op = OpId(self.next_op);
        self.next_op += 1;
        if self.state != State::Active {
            self.finish_op(op, &kind, Err(RingError::Left));
            return op;
        }
        self.ops.insert(
            op.0,
            Op {
                key,
                kind,
                attempts: 0,
                candidates: Vec::new(),
                answered: false,
            },
        );
        self.route(
            key,
            0,
            Parent::Op(op),
            self.config.iterative,
            Vec::new(),
            0,
            false,
            now,
        );
        op
    }

    fn finish_op(&mut self, op: OpId, kind: &OpKind, result: Result<OpOutcome, RingError>) {
        let event = match kind {
            OpKind::Lookup => RingEvent::LookupDone {
                op,
                result: result.map(|o| match o {
                    OpOutcome::Found(p, h) => (p, h),
                    _ => unreachable!(),
                }),
            },
            OpKind::Store(_) | OpKind::Remove(_) => RingEvent::StoreDone {
                op,
                result: result.map(|_| ()),
            },
            OpKind::Fetch => RingEvent::FetchDone {
                op,
                result: result.map(|o| match o {
                    OpOutcome::Items(items) => items,
                    _ => Vec::new(),
                }),
            },
        };
        self.events.push_back(event);
    }

    /// Routes an operation again from scratch, unless it has used up its
    /// retries; false then.
    fn retry_op(&mut self, op: OpId, now: Instant) -> bool {
        let Some(o) = self.ops.get_mut(&op.0) else {
            return false;
        };
        if o.attempts >= self.config.op_retries {
            return false;
        }
        o.attempts += 1;
        let key = o.key;
        let iterative = self.config.iterative;
        self.route(key, 0, Parent::Op(op), iterative, Vec::new(), 0, false, now);
        true
    }

    /// The lookup of an operation ended.
    fn op_found(
        &mut self,
        op: OpId,
        result: Result<(Peer, u32, Vec<Peer>), RingError>,
        now: Instant,
    ) {
        let Some(o) = self.ops.get_mut(&op.0) else {
            return;
        };
        let (holder, hops, replicas) = match result {
            Ok(found) => found,
            Err(e) => {
                if !self.retry_op(op, now) {
                    let o = self.ops.remove(&op.0).expect("op");
                    self.finish_op(op, &o.kind, Err(e));
                }
                return;
            }
        };
        let kind = o.kind.clone();
        let key = o.key;
        match kind.clone() {
            OpKind::Lookup => {
                self.ops.remove(&op.0);
                self.finish_op(op, &kind, Ok(OpOutcome::Found(holder, hops)));
            }
            OpKind::Store(item) => {
                if holder == self.me {
                    self.merge(item.clone(), now);
                    for to in self.replica_targets() {
                        self.push_items(to, vec![item.clone()], now);
                    }
                    self.ops.remove(&op.0);
                    self.finish_op(op, &kind, Ok(OpOutcome::Done));
                } else {
                    let request = RingRequest::Store {
                        items: vec![item],
                        replica: false,
                    };
                    self.send(
                        holder.addr,
                        request,
                        Pending::OpRequest { op, to: holder },
                        now,
                    );
                }
            }
            OpKind::Remove(name) => {
                if holder == self.me {
                    self.remove_everywhere(key, &name, now);
                    self.ops.remove(&op.0);
                    self.finish_op(op, &kind, Ok(OpOutcome::Done));
                } else {
                    let request = RingRequest::Remove {
                        key,
                        name,
                        replica: false,
                    };
                    self.send(
                        holder.addr,
                        request,
                        Pending::OpRequest { op, to: holder },
                        now,
                    );
                }
            }
            OpKind::Fetch => {
                let o = self.ops.get_mut(&op.0).expect("op");
                let mut candidates = vec![holder];
                candidates.extend(
                    replicas
                        .into_iter()
                        .filter(|p| *p != holder)
                        .take(self.config.replicas.saturating_sub(1)),
                );
                o.candidates = candidates;
                self.fetch_next(op, Vec::new(), now);
            }
        }
    }

    /// Ask the next holder for a fetch, or finish it.
    fn fetch_next(&mut self, op: OpId, found: Vec<Item>, now: Instant) {
        let Some(o) = self.ops.get_mut(&op.0) else {
            return;
        };
        if !found.is_empty() || o.candidates.is_empty() {
            let o = self.ops.remove(&op.0).expect("op");
            let result = if o.answered || !found.is_empty() {
                Ok(OpOutcome::Items(found))
            } else {
                Err(RingError::Timeout(o.candidates.len() as u32))
            };
            self.finish_op(op, &o.kind, result);
            return;
        }
        let next = o.candidates.remove(0);
        let key = o.key;
        if next == self.me {
            o.answered = true;
            let items = self.local_items_at(key, now);
            self.fetch_next(op, items, now);
        } else {
            self.send(
                next.addr,
                RingRequest::Fetch { key },
                Pending::OpRequest { op, to: next },
                now,
            );
        }
    }

    /// The holder answered our operation's request (or failed: `None`).
    fn op_answer(&mut self, op: OpId, to: Peer, response: Option<RingResponse>, now: Instant) {
        let _ = to;
        let Some(o) = self.ops.get_mut(&op.0) else {
            return;
        };
        let kind = o.kind.clone();
        match kind {
            OpKind::Fetch => match response {
                Some(RingResponse::Items { items }) => {
                    o.answered = true;
                    self.fetch_next(op, items, now)
                }
                _ => self.fetch_next(op, Vec::new(), now),
            },
            OpKind::Store(_) | OpKind::Remove(_) => match response {
                Some(RingResponse::Stored) => {
                    self.ops.remove(&op.0);
                    self.finish_op(op, &kind, Ok(OpOutcome::Done));
                }
                other => {
                    // Holder dead or refusing: route again after the ring heals.
                    if !self.retry_op(op, now) {
                        self.ops.remove(&op.0);
                        let err = match other {
                            Some(RingResponse::Refused(refusal)) => RingError::Refused(refusal),
                            _ => RingError::Timeout(self.config.op_retries + 1),
                        };
                        self.finish_op(op, &kind, Err(err));
                    }
                }
            },
            OpKind::Lookup => {}
        }
    }

    /// Hand everything to the successor, tell the neighbours, then
    /// [`RingEvent::Left`].
    pub fn leave(&mut self, now: Instant) {
        if self.state != State::Active {
            return;
        }
        self.state = State::Leaving;
        let Some(succ) = self.successors.first().copied() else {
            self.state = State::Left;
            self.events.push_back(RingEvent::Left);
            return;
        };
        self.hand_over(succ, now);
        if let Some(pred) = self.predecessor
            && pred != succ
            && pred != self.me
        {
            let notice = self.leave_notice();
            self.leave_pending += 1;
            self.send(
                pred.addr,
                notice,
                Pending::Leave {
                    to: pred,
                    handover: false,
                },
                now,
            );
        }
    }

    fn leave_notice(&self) -> RingRequest {
        RingRequest::Leave {
            leaving: self.me,
            predecessor: self.predecessor,
            successors: self.successors.clone(),
        }
    }

    /// Transfer all items to `succ` and tell it we leave.
    fn hand_over(&mut self, succ: Peer, now: Instant) {
        self.leave_tried.push(succ.addr);
        let items: Vec<Item> = self
            .items
            .values()
            .flat_map(|m| m.values())
            .filter(|i| i.expires > now)
            .cloned()
            .collect();
        let pending = Pending::Leave {
            to: succ,
            handover: true,
        };
        for chunk in items.chunks(ITEMS_PER_MESSAGE) {
            let request = RingRequest::Transfer {
                items: chunk.to_vec(),
            };
            self.leave_pending += 1;
            self.send(succ.addr, request, pending.clone(), now);
        }
        let notice = self.leave_notice();
        self.leave_pending += 1;
        self.send(succ.addr, notice, pending, now);
    }

    /// A hand-over failed (the successor is gone or leaving too): hand over to
    /// the next successor we have not tried.
    fn hand_over_failed(&mut self, to: Peer, now: Instant) {
        if self.leave_tried.last() != Some(&to.addr) {
            return; // already moved on
        }
        let next = self
            .successors
            .iter()
            .find(|p| !self.leave_tried.contains(&p.addr))
            .copied();
        if let Some(next) = next {
            self.hand_over(next, now);
        }
    }

    fn leave_step(&mut self) {
        self.leave_pending = self.leave_pending.saturating_sub(1);
        if self.leave_pending == 0 && self.state == State::Leaving {
            self.state = State::Left;
            self.items.clear();
            let mut ops: Vec<(u64, Op)> = std::mem::take(&mut self.ops).into_iter().collect();
            ops.sort_by_key(|(id, _)| *id);
            for (id, op) in ops {
                self.finish_op(OpId(id), &op.kind, Err(RingError::Left));
            }
            self.pending.clear();
            self.deadlines.clear();
            self.events.push_back(RingEvent::Left);
        }
    }

    // ----- views -----

    pub fn status(&self) -> RingStatus {
        let mut fingers: Vec<Peer> = Vec::new();
        for f in self.fingers.iter().flatten() {
            if !fingers.contains(f) {
                fingers.push(*f);
            }
        }
        let mut primary = 0;
        let mut replica = 0;
        for (key, items) in &self.items {
            if self.is_primary(*key) {
                primary += items.len();
            } else {
                replica += items.len();
            }
        }
        RingStatus {
            node_id: self.me.id.to_string(),
            addr: self.me.addr.to_string(),
            joined: self.joined,
            predecessor: self.predecessor.map(Into::into),
            successors: self.successors.iter().map(|p| (*p).into()).collect(),
            fingers: fingers.into_iter().map(Into::into).collect(),
            items_primary: primary,
            items_replica: replica,
            pending_requests: self.pending.len(),
        }
    }

    /// What this node holds for `key`, primary or replica (expired ones included
    /// until the next purge).
    pub fn local_items(&self, key: NodeId) -> Vec<Item> {
        self.items
            .get(&key)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every item held here.
    pub fn all_items(&self) -> impl Iterator<Item = &Item> {
        self.items.values().flat_map(|m| m.values())
    }

    /// Peers worth remembering for a later bootstrap.
    pub fn known_peers(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        let all = self
            .predecessor
            .iter()
            .chain(self.successors.iter())
            .chain(self.fingers.iter().flatten());
        for p in all {
            if !out.contains(&p.addr) {
                out.push(p.addr);
            }
        }
        out
    }

    /// Distinct finger entries.
    pub fn distinct_fingers(&self) -> usize {
        let mut seen: Vec<NodeId> = Vec::new();
        for f in self.fingers.iter().flatten() {
            if !seen.contains(&f.id) {
                seen.push(f.id);
            }
        }
        seen.len()
    }

    // ----- routing -----

    /// Resolve `key` from here. `hops` is the hop count of the request that
    /// brought the lookup (0 for our own).
    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        key: NodeId,
        hops: u32,
        parent: Parent,
        iterative: bool,
        exclude: Vec<NodeId>,
        attempts: u32,
        remote: bool,
        now: Instant,
    ) {
        // Are we, or our successor, the answer?
        if self.successors.is_empty() {
            let found = RingResponse::Found {
                successor: self.me,
                hops,
                replicas: Vec::new(),
            };
            return self.answer(parent, found, now);
        }
        if let Some(pred) = self.predecessor
            && key.in_open_closed(pred.id, self.me.id)
        {
            let replicas = self.replica_targets();
            let found = RingResponse::Found {
                successor: self.me,
                hops,
                replicas,
            };
            return self.answer(parent, found, now);
        }
        // Our first successor not excluded (the excluded ones failed us).
        let Some(si) = self
            .successors
            .iter()
            .position(|p| !exclude.contains(&p.id))
        else {
            return self.answer(parent, RingResponse::Refused(Refusal::NoRoute), now);
        };
        let succ = self.successors[si];
        let next = if key.in_open_closed(self.me.id, succ.id) {
            if self.is_fresh(succ.addr, now) {
                let replicas = self
                    .successors
                    .iter()
                    .skip(si + 1)
                    .take(self.config.replicas.saturating_sub(1))
                    .copied()
                    .collect();
                let found = RingResponse::Found {
                    successor: succ,
                    hops,
                    replicas,
                };
                return self.answer(parent, found, now);
            }
            // Not heard from it lately (it may have crashed since): let it
            // answer for itself, which costs a hop but never names a dead node.
            succ
        } else {
            match self.closest_preceding(key, &exclude) {
                Some(next) => next,
                None => return self.answer(parent, RingResponse::Refused(Refusal::NoRoute), now),
            }
        };
        if remote && iterative {
            // Iterative request: tell the asker where to go next.
            return self.answer(parent, RingResponse::Next { ask: next, hops }, now);
        }
        let request = RingRequest::FindSuccessor {
            key,
            hops: hops + 1,
            iterative,
        };
        let pending = Pending::Route {
            key,
            parent,
            hops: hops + 1,
            iterative,
            exclude,
            attempts,
            to: next,
        };
        self.send(next.addr, request, pending, now);
    }

    #[allow(clippy::too_many_arguments)]
    fn retry_route(
        &mut self,
        key: NodeId,
        hops: u32,
        parent: Parent,
        iterative: bool,
        exclude: Vec<NodeId>,
        attempts: u32,
        now: Instant,
    ) {
        if attempts >= ROUTE_ATTEMPTS {
            let e = RingResponse::Refused(Refusal::Timeout);
            return self.answer(parent, e, now);
        }
        let remote = matches!(parent, Parent::Remote(_));
        // Iterative retries start from our own table, like a new lookup.
        let iterative_remote = remote && iterative;
        self.route(
            key,
            hops,
            parent,
            iterative && !iterative_remote,
            exclude,
            attempts,
            false,
            now,
        );
    }

    /// The closest finger or successor strictly between us and `key`, or our
    /// successor when there is none.
    fn closest_preceding(&self, key: NodeId, exclude: &[NodeId]) -> Option<Peer> {
        let mut best: Option<(NodeId, Peer)> = None;
        let candidates = self.fingers.iter().flatten().chain(self.successors.iter());
        for p in candidates {
            if !p.id.in_open(self.me.id, key) || exclude.contains(&p.id) {
                continue;
            }
            let d = p.id.distance_from(self.me.id);
            if best.is_none_or(|(bd, _)| d > bd) {
                best = Some((d, *p));
            }
        }
        if let Some((_, p)) = best {
            return Some(p);
        }
        self.successors
            .iter()
            .find(|p| !exclude.contains(&p.id))
            .copied()
    }

    /// Deliver a lookup result (or error response) to whoever waits for it.
    fn answer(&mut self, parent: Parent, response: RingResponse, now: Instant) {
        match parent {
            Parent::Remote(id) => self.respond(id, response),
            Parent::Op(op) => {
                let result = match response {
                    RingResponse::Found {
                        successor,
                        hops,
                        replicas,
                    } => Ok((successor, hops, replicas)),
                    _ => Err(RingError::Timeout(ROUTE_ATTEMPTS)),
                };
                self.op_found(op, result, now);
            }
            Parent::SuccessorCheck => {
                self.fixing = false;
                if let RingResponse::Found { successor, .. } = response {
                    let succ = self.successor();
                    if successor != self.me
                        && successor.id.in_open(self.me.id, succ.id)
                        && !self.dead.contains_key(&successor.addr)
                    {
                        // The ring knows a closer successor than we do (two
                        // strands of a loopy ring): take it and stabilize.
                        let mut list = vec![successor];
                        list.extend(self.successors.iter().copied());
                        self.set_successors(list, now);
                        if !self.stabilizing {
                            self.stabilize(now);
                        }
                    }
                }
            }
            Parent::Finger(i) => {
                let result = match response {
                    RingResponse::Found { successor, .. } => Some(successor),
                    _ => None,
                };
                self.finger_found(i, result, now);
            }
        }
    }

    fn route_done(
        &mut self,
        parent: Parent,
        result: Result<(Peer, u32, Vec<Peer>), RingError>,
        now: Instant,
    ) {
        let response = match result {
            Ok((successor, hops, replicas)) => RingResponse::Found {
                successor,
                hops,
                replicas,
            },
            Err(_) => RingResponse::Refused(Refusal::LookupFailed),
        };
        self.answer(parent, response, now);
    }

    // ----- maintenance -----

    fn stabilize(&mut self, now: Instant) {
        if self.state != State::Active || self.stabilizing {
            return;
        }
        match self.successors.first().copied() {
            Some(succ) => {
                self.stabilizing = true;
                self.send(
                    succ.addr,
                    RingRequest::GetPredecessor,
                    Pending::Stabilize { to: succ },
                    now,
                );
            }
            None => {
                // Alone: a predecessor means somebody joined us.
                if let Some(pred) = self.predecessor {
                    self.set_successors(vec![pred], now);
                    if !self.successors.is_empty() {
                        self.joined = true;
                        self.notify(pred, now);
                    }
                }
            }
        }
    }

    fn on_stabilize(
        &mut self,
        from: Peer,
        their_pred: Option<Peer>,
        their_succs: Vec<Peer>,
        now: Instant,
    ) {
        let mut list = Vec::with_capacity(self.config.successors + 1);
        let mut closer = false;
        if let Some(x) = their_pred
            && x.id.in_open(self.me.id, from.id)
            && !self.dead.contains_key(&x.addr)
        {
            list.push(x);
            closer = true;
        }
        list.push(from);
        list.extend(their_succs);
        self.set_successors(list, now);
        if closer {
            // A closer successor: ask it at once instead of a period later, so
            // a node that joined with a stale successor walks back to the true
            // one in round trips (each step strictly closer: this ends).
            self.stabilize(now);
        } else if let Some(succ) = self.successors.first().copied() {
            self.notify(succ, now);
        }
    }

    fn notify(&mut self, to: Peer, now: Instant) {
        let request = RingRequest::Notify {
            predecessor: self.me,
        };
        self.send(to.addr, request, Pending::Notify { to }, now);
    }

    fn on_notify(&mut self, p: Peer, now: Instant) {
        if p == self.me {
            return;
        }
        self.dead.remove(&p.addr);
        let old = self.predecessor;
        let accept = match old {
            None => true,
            Some(pred) => p.id.in_open(pred.id, self.me.id),
        };
        if !accept {
            if old != Some(p) && !self.checking {
                // Somebody further back thinks we are its successor: is our
                // predecessor still there?
                self.check_predecessor(now);
            }
            return;
        }
        self.predecessor = Some(p);
        self.joined = true;
        self.events
            .push_back(RingEvent::PredecessorChanged { old, new: Some(p) });
        if let Some(o) = old {
            // Tell the old predecessor, so it adopts p now.
            let hint = RingRequest::NewPredecessor { predecessor: p };
            self.send(o.addr, hint, Pending::Notify { to: o }, now);
        }
        // Keys in (old predecessor, p] now belong to p; we keep our copies as
        // its first replica.
        let from = old.map(|o| o.id).unwrap_or(self.me.id);
        let handover: Vec<Item> = self
            .items
            .values()
            .flat_map(|m| m.values())
            .filter(|i| i.key.in_open_closed(from, p.id) && i.expires > now)
            .cloned()
            .collect();
        for chunk in handover.chunks(ITEMS_PER_MESSAGE) {
            let request = RingRequest::Transfer {
                items: chunk.to_vec(),
            };
            self.send(p.addr, request, Pending::Push { to: p }, now);
        }
        if self.successors.is_empty() {
            // A ring of two.
            self.set_successors(vec![p], now);
            self.notify(p, now);
        }
    }

    fn on_leave(
        &mut self,
        leaving: Peer,
        predecessor: Option<Peer>,
        successors: Vec<Peer>,
        now: Instant,
    ) {
        self.dead.insert(leaving.addr, now);
        if self.predecessor.map(|p| p.addr) == Some(leaving.addr) {
            let new = predecessor.filter(|p| *p != self.me && *p != leaving);
            let old = self.predecessor;
            self.predecessor = new;
            self.events
                .push_back(RingEvent::PredecessorChanged { old, new });
        }
        if let Some(pos) = self.successors.iter().position(|p| p.addr == leaving.addr) {
            let mut list: Vec<Peer> = self.successors[..pos].to_vec();
            list.extend(successors);
            list.extend(self.successors[pos + 1..].iter().copied());
            self.set_successors(list, now);
        }
        for f in self.fingers.iter_mut() {
            if f.map(|p| p.addr) == Some(leaving.addr) {
                *f = None;
            }
        }
    }

    fn check_predecessor(&mut self, now: Instant) {
        if let Some(pred) = self.predecessor {
            self.checking = true;
            self.send(
                pred.addr,
                RingRequest::Ping,
                Pending::CheckPredecessor { to: pred },
                now,
            );
        }
    }

    fn fix_fingers(&mut self, now: Instant) {
        if self.state != State::Active || self.successors.is_empty() || self.fixing {
            return;
        }
        let succ = self.successors[0];
        if self.next_finger == 0 && !self.finger_burst && !self.succ_checked {
            // Once per finger cycle: look up our own successor through the
            // farthest finger, not locally. Stabilize alone cannot repair a
            // ring whose successor pointers wind around it twice.
            self.succ_checked = true;
            let far = self
                .fingers
                .iter()
                .rev()
                .flatten()
                .find(|f| **f != succ)
                .copied();
            if let Some(to) = far {
                self.fixing = true;
                let key = self.me.id.add_pow2(0);
                let iterative = self.config.iterative;
                let request = RingRequest::FindSuccessor {
                    key,
                    hops: 1,
                    iterative,
                };
                let pending = Pending::Route {
                    key,
                    parent: Parent::SuccessorCheck,
                    hops: 1,
                    iterative,
                    exclude: Vec::new(),
                    attempts: 0,
                    to,
                };
                self.send(to.addr, request, pending, now);
                return;
            }
        }
        self.succ_checked = false;
        let mut i = self.next_finger;
        while i < ID_BITS as usize && self.finger_starts[i].in_open_closed(self.me.id, succ.id) {
            self.fingers[i] = Some(succ);
            i += 1;
        }
        if i >= ID_BITS as usize {
            self.next_finger = 0;
            self.finger_burst = false;
            return;
        }
        self.next_finger = i;
        self.fixing = true;
        let key = self.finger_starts[i];
        self.route(
            key,
            0,
            Parent::Finger(i),
            self.config.iterative,
            Vec::new(),
            0,
            false,
            now,
        );
    }

    fn finger_found(&mut self, i: usize, found: Option<Peer>, now: Instant) {
        self.fixing = false;
        let mut j = i + 1;
        if let Some(s) = found {
            if s != self.me {
                self.fingers[i] = Some(s);
                while j < ID_BITS as usize && self.finger_starts[j].in_open_closed(self.me.id, s.id)
                {
                    self.fingers[j] = Some(s);
                    j += 1;
                }
            } else {
                self.fingers[i] = None;
            }
        }
        if j >= ID_BITS as usize {
            self.next_finger = 0;
            self.finger_burst = false;
        } else {
            self.next_finger = j;
            if self.finger_burst {
                self.fix_fingers(now);
            }
        }
    }

    fn join_failed(&mut self, now: Instant) {
        self.joining = false;
        self.next_bootstrap += 1;
        if self
            .next_bootstrap
            .is_multiple_of(self.bootstraps.len().max(1))
        {
            // Tried them all: wait a little before the next round.
            self.join_retry_at = Some(now + self.config.stabilize_every * 5);
        } else {
            self.try_join(now);
        }
    }

    /// A peer did not answer: forget it everywhere.
    fn mark_dead(&mut self, peer: Peer, now: Instant) {
        if peer == self.me {
            return;
        }
        self.dead.insert(peer.addr, now);
        if self.predecessor.map(|p| p.addr) == Some(peer.addr) {
            let old = self.predecessor.take();
            self.events
                .push_back(RingEvent::PredecessorChanged { old, new: None });
        }
        for f in self.fingers.iter_mut() {
            if f.map(|p| p.addr) == Some(peer.addr) {
                *f = None;
            }
        }
        if self.successors.iter().any(|p| p.addr == peer.addr) {
            let list: Vec<Peer> = self
                .successors
                .iter()
                .filter(|p| p.addr != peer.addr)
                .copied()
                .collect();
            self.set_successors(list, now);
            if self.successors.is_empty() {
                // Every successor gone: fall back on the nearest finger.
                let mut best: Option<(NodeId, Peer)> = None;
                for f in self.fingers.iter().flatten() {
                    let d = f.id.distance_from(self.me.id);
                    if best.is_none_or(|(bd, _)| d < bd) {
                        best = Some((d, *f));
                    }
                }
                if let Some((_, f)) = best {
                    self.set_successors(vec![f], now);
                }
            }
        }
    }

    /// Install a new successor list: ourselves, dead peers and duplicates out.
    fn set_successors(&mut self, list: Vec<Peer>, now: Instant) {
        let dead_memory = DEAD_MEMORY;
        self.dead
            .retain(|_, t| now.saturating_duration_since(*t) < dead_memory);
        let mut out: Vec<Peer> = Vec::with_capacity(self.config.successors);
        for p in list {
            if p == self.me || self.dead.contains_key(&p.addr) || out.contains(&p) {
                continue;
            }
            out.push(p);
            if out.len() == self.config.successors {
                break;
            }
        }
        let old = self.successors.first().copied();
        let new = out.first().copied();
        self.successors = out;
        if old != new
            && let Some(new) = new
        {
            self.events
                .push_back(RingEvent::SuccessorChanged { old, new });
        }
    }

    /// Push our primary items to replicas that are new, or to all of them when
    /// our range grew.
    fn resync(&mut self, now: Instant) {
        if self.state != State::Active {
            return;
        }
        let replicas = self.replica_targets();
        let Some(pred) = self.predecessor else {
            self.synced_pred = None;
            self.synced_replicas = replicas.iter().map(|p| p.addr).collect();
            return;
        };
        let grew = match self.synced_pred {
            None => true,
            Some(old) => old != pred.id && !pred.id.in_open(old, self.me.id),
        };
        let targets: Vec<Peer> = replicas
            .iter()
            .filter(|p| grew || !self.synced_replicas.contains(&p.addr))
            .copied()
            .collect();
        self.synced_pred = Some(pred.id);
        self.synced_replicas = replicas.iter().map(|p| p.addr).collect();
        if targets.is_empty() || self.items.is_empty() {
            return;
        }
        let primary: Vec<Item> = self
            .items
            .values()
            .flat_map(|m| m.values())
            .filter(|i| i.key.in_open_closed(pred.id, self.me.id) && i.expires > now)
            .cloned()
            .collect();
        if primary.is_empty() {
            return;
        }
        for to in targets {
            self.push_items(to, primary.clone(), now);
        }
    }

    /// Did `addr` answer us within the last one and a half stabilize periods?
    fn is_fresh(&self, addr: SocketAddr, now: Instant) -> bool {
        let window = self.config.stabilize_every + self.config.stabilize_every / 2;
        self.heard
            .get(&addr)
            .is_some_and(|t| now.saturating_duration_since(*t) <= window)
    }

    fn purge(&mut self, now: Instant) {
        let keep = self.config.stabilize_every * 10;
        self.heard
            .retain(|_, t| now.saturating_duration_since(*t) <= keep);
        self.items.retain(|_, items| {
            items.retain(|_, i| i.expires > now);
            !items.is_empty()
        });
    }

    // ----- storage -----

    fn is_primary(&self, key: NodeId) -> bool {
        match self.predecessor {
            Some(pred) => key.in_open_closed(pred.id, self.me.id),
            None => self.successors.is_empty(),
        }
    }

    fn replica_targets(&self) -> Vec<Peer> {
        self.successors
            .iter()
            .take(self.config.replicas.saturating_sub(1))
            .copied()
            .collect()
    }

    fn merge(&mut self, item: Item, now: Instant) {
        if item.expires <= now {
            return;
        }
        let list = self.items.entry(item.key).or_default();
        match list.get_mut(&item.name) {
            Some(existing) => {
                if existing.version <= item.version {
                    *existing = item;
                }
            }
            None => {
                list.insert(item.name.clone(), item);
            }
        }
    }

    /// As the key's holder: remove the item here and from the replicas —
    /// one more than the replicas, since a node that joined recently may
    /// have left a stale copy one further along.
    fn remove_everywhere(&mut self, key: NodeId, name: &str, now: Instant) {
        self.remove_local(key, name);
        let targets: Vec<Peer> = self
            .successors
            .iter()
            .take(self.config.replicas)
            .copied()
            .collect();
        for to in targets {
            let request = RingRequest::Remove {
                key,
                name: name.to_string(),
                replica: true,
            };
            self.send(to.addr, request, Pending::Push { to }, now);
        }
    }

    fn remove_local(&mut self, key: NodeId, name: &str) {
        if let Some(list) = self.items.get_mut(&key) {
            list.remove(name);
            if list.is_empty() {
                self.items.remove(&key);
            }
        }
    }

    fn local_items_at(&self, key: NodeId, now: Instant) -> Vec<Item> {
        self.items
            .get(&key)
            .map(|l| l.values().filter(|i| i.expires > now).cloned().collect())
            .unwrap_or_default()
    }

    fn push_items(&mut self, to: Peer, items: Vec<Item>, now: Instant) {
        if to == self.me {
            return;
        }
        for chunk in items.chunks(ITEMS_PER_MESSAGE) {
            let request = RingRequest::Store {
                items: chunk.to_vec(),
                replica: true,
            };
            self.send(to.addr, request, Pending::Push { to }, now);
        }
    }

    // ----- plumbing -----

    fn send(&mut self, to: SocketAddr, request: RingRequest, pending: Pending, now: Instant) {
        let id = self.next_request;
        self.next_request += 1;
        let deadline = now + self.config.request_timeout;
        self.pending.insert(id, PendingEntry { deadline, pending });
        self.deadlines.insert((deadline, id));
        self.transmits.push_back(Outgoing::Request {
            id: RequestId(id),
            to,
            request,
        });
    }

    fn take_pending(&mut self, id: u64) -> Option<PendingEntry> {
        let entry = self.pending.remove(&id)?;
        self.deadlines.remove(&(entry.deadline, id));
        Some(entry)
    }

    fn respond(&mut self, id: IncomingId, response: RingResponse) {
        self.transmits
            .push_back(Outgoing::Response { to: id, response });
    }
}

enum OpOutcome {
    Found(Peer, u32),
    Items(Vec<Item>),
    Done,
}

fn pending_peer_addr(p: &Pending) -> Option<SocketAddr> {
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

#[cfg(test)]
mod tests;
