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

/// Items a node keeps for one writer by default: a registrar node with
/// 100,000 users stays well inside it on a ring of three.
pub const DEFAULT_MAX_ITEMS_PER_WRITER: usize = 400_000;

/// Overlay requests a member may send per second by default: ten times what
/// one member sends for 500 REGISTERs a second on a ring of three.
pub const DEFAULT_MEMBER_REQUESTS: u32 = 20_000;

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
    /// Our own operations' recursive lookups are semi-recursive: the node
    /// that finds the answer sends it straight back to us, and a lookup for
    /// a fetch brings the holder's items with it (`answer.rs`). Off by
    /// default: the 100-process benchmark with it on did not finish (see
    /// `docs/BENCHMARKS.md`); the simulator and the unit tests turn it on.
    pub semi_recursive: bool,
    /// How often an operation (lookup, store, fetch, remove) is retried from
    /// scratch after its route failed.
    pub op_retries: u32,
    /// Longest lookup path before a request is refused as looping.
    pub max_hops: u32,
    /// Items a node keeps for one writer (primary and replica copies
    /// together); a new one beyond is refused with `Refusal::TooManyItems`.
    pub max_items_per_writer: usize,
    /// Overlay requests one member may send in `member_interval` (checked
    /// by the overlay before the ring sees them); beyond: 503.
    pub member_requests: u32,
    pub member_interval: Duration,
    /// How this node takes part (`client.rs`): member, client, or a client
    /// until a probe says it is reachable.
    pub role: super::Role,
    /// How often a client refreshes its attachment (and is probed).
    pub client_refresh: Duration,
    /// A client attached and reachable for this long joins the ring;
    /// `None`: never.
    pub promote_after: Option<Duration>,
    /// Clients a super-node keeps; an Attach beyond is refused.
    pub max_clients: usize,
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
            semi_recursive: false,
            op_retries: 4,
            max_hops: 64,
            max_items_per_writer: DEFAULT_MAX_ITEMS_PER_WRITER,
            member_requests: DEFAULT_MEMBER_REQUESTS,
            member_interval: Duration::from_secs(1),
            role: super::Role::Member,
            client_refresh: Duration::from_secs(10),
            promote_after: Some(Duration::from_secs(600)),
            max_clients: 64,
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
    /// The node that wrote the item: the one that authenticated the user (or
    /// the gateway that mirrored a legacy user). [`Ring::store`](super::Ring::store)
    /// sets it to this node; only the writer (or who may take over, see
    /// `policy.rs`) may replace or remove the item.
    pub writer: NodeId,
    /// The expiry the writer signed and its signature over
    /// [`Item::signed_bytes`] (layout in `seal.rs`); empty unless the
    /// overlay signs items (certificate mode), which then checks it through
    /// the ring's [`ItemSeal`](super::ItemSeal) before storing or using it.
    pub signature: Vec<u8>,
    /// What lets a new writer take the item over from another one (for a
    /// binding: the digest `Authorization` of the REGISTER that the new
    /// writer authenticated). Carried on a store to the holder and its
    /// replicas, never kept nor returned by a fetch.
    pub proof: Option<String>,
}

impl Item {
    /// The bytes a writer signs: key, name, kind, value, version, expiry and
    /// writer, each variable part length-prefixed so that no two items share
    /// an encoding. Items carry no wall clock (expiry is an [`Instant`] here,
    /// milliseconds left on the wire), so the expiry signed is the absolute
    /// one the signer chose, `expires_unix_secs` (seconds since the Unix
    /// epoch), which the signature must carry beside it for the checker.
    pub fn signed_bytes(&self, expires_unix_secs: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(80 + self.name.len() + self.kind.len() + self.value.len());
        out.extend_from_slice(b"p2psip-item-v1");
        out.extend_from_slice(&self.key.0);
        for part in [self.name.as_bytes(), self.kind.as_bytes(), &self.value] {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part);
        }
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&expires_unix_secs.to_be_bytes());
        out.extend_from_slice(&self.writer.0);
        out
    }
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
    /// `member`, `super` (a member with clients) or `client`.
    pub role: &'static str,
    /// A client's super-node.
    pub super_node: Option<PeerStatus>,
    /// A super-node's clients.
    pub clients: usize,
}
