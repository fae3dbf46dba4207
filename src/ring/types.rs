//! The ring's plain data: peers, ids, items, its configuration, the events and
//! errors it reports, and the status snapshot.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{NodeId, Refusal};

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
    /// The shortest timeout derived from a peer's round-trip estimate (the
    /// longest is `request_timeout`, also used for peers never measured).
    pub rto_min: Duration,
    /// How often this node checks that the items stored through it still
    /// have a live holder, and stores them again if not.
    pub republish_every: Duration,
    /// How often a node asks a saved peer or bootstrap outside its tables
    /// where its successor is, to merge parts of a split ring.
    pub merge_every: Duration,
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
            rto_min: Duration::from_millis(100),
            republish_every: Duration::from_secs(5),
            merge_every: Duration::from_secs(1),
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
