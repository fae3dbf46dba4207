//! The messages ring nodes exchange, independent of any wire form, and the
//! [`Outgoing`] queue entries through which the ring asks its driver to send
//! them. A refusal says what it means ([`Refusal`]); the wire codec decides
//! how to carry it.

use std::net::SocketAddr;

use super::{IncomingId, Item, NodeId, Peer, RequestId};

/// Overlay requests, independent of the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingRequest {
    /// Find the successor of `key`. `hops` counts FindSuccessor messages on the
    /// path so far, this one included. Recursive unless `iterative`.
    FindSuccessor {
        key: NodeId,
        hops: u32,
        iterative: bool,
        /// Semi-recursive: the node that finds the answer sends it straight
        /// to the originator ([`RingRequest::Answer`]) and every hop only
        /// acknowledges the request (`Ok`) to its sender. `None`: recursive,
        /// the answer retraces the path.
        reply: Option<Reply>,
    },
    /// The answer of a semi-recursive lookup, from the node that found it
    /// to the originator named in [`Reply`]. Carries the originator's nonce
    /// (an answer with a nonce it does not wait for is ignored).
    /// `successor: None`: the path failed (no route left). `items`: the
    /// successor's own items for the key, when the lookup asked for them
    /// and the successor answers for itself.
    Answer {
        nonce: u64,
        successor: Option<Peer>,
        hops: u32,
        replicas: Vec<Peer>,
        items: Option<Vec<Item>>,
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
    /// Store one item only if no live item of its (key, name) is held:
    /// first come, first served, decided by the key's holder alone (the
    /// receiver must be it), which then replicates it as a store. Answered
    /// `Stored`, or refused [`Refusal::Taken`] (or [`Refusal::NotHolder`]
    /// when the key is not the receiver's).
    Claim { item: Item },
    /// All live items under a key.
    Fetch { key: NodeId },
    /// Remove the item (key, name); `replica == false` makes the receiver remove
    /// it from its replicas too.
    Remove {
        key: NodeId,
        name: String,
        replica: bool,
        /// The node that asked for the removal (the holder passes it on to
        /// its replicas, which check it against the item's writer).
        by: NodeId,
        /// `by`'s signature over the remove and its time (`seal.rs`), passed
        /// on unchanged by the holder; empty when items are not signed.
        seal: Vec<u8>,
    },
    /// Key hand-over: on join (successor to new predecessor) and on leave
    /// (leaving node to its successor).
    Transfer { items: Vec<Item> },
    /// "My predecessor is now `predecessor`": sent by a node to its previous
    /// predecessor, which then stabilizes at once and adopts the newcomer as
    /// its successor instead of a period later.
    NewPredecessor { predecessor: Peer },
    /// A client asks to attach to this member, its super-node, or refreshes
    /// its attachment (`client.rs`). Answered `Ok`, or refused.
    Attach,
    /// A client asks its super-node whether it can be reached at `peer`
    /// (the address it would have in the ring): the super-node pings it and
    /// answers `Ok` if the ping was answered.
    Probe { peer: Peer },
    /// Graceful leave: `leaving` goes; its predecessor and successor list let the
    /// neighbours close the gap at once.
    Leave {
        leaving: Peer,
        predecessor: Option<Peer>,
        successors: Vec<Peer>,
    },
}

/// Where a semi-recursive lookup's answer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The originator.
    pub to: Peer,
    /// Unguessable per request: the originator accepts an answer only with
    /// the nonce of a lookup it has in flight.
    pub nonce: u64,
    /// The key's successor answers for itself and sends its items for the
    /// key with the answer (a lookup for a fetch).
    pub items: bool,
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
    /// The sender may not replace or remove this record: it is not its
    /// writer and cannot take it over (`policy.rs`).
    NotWriter,
    /// The writer already has as many items here as a holder keeps for one
    /// writer (`overlay_limits.items_per_writer`).
    TooManyItems,
    /// The item is not signed by its writer, or the remove not by its
    /// remover within the time window (certificate mode, `seal.rs`).
    BadSignature,
    /// A claim found a live item under its (key, name): somebody was first.
    Taken,
    /// A claim reached a node that is not the key's holder (its route was
    /// stale); the claimant routes again.
    NotHolder,
    /// A refusal the ring has no name for, in the peer's own words.
    Other(String),
}

impl Refusal {
    /// Every refusal the ring itself gives.
    pub const NAMED: [Refusal; 12] = [
        Refusal::NoRoute,
        Refusal::Timeout,
        Refusal::LookupFailed,
        Refusal::Loop,
        Refusal::NotJoined,
        Refusal::Leaving,
        Refusal::Left,
        Refusal::NotWriter,
        Refusal::TooManyItems,
        Refusal::BadSignature,
        Refusal::Taken,
        Refusal::NotHolder,
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
            Refusal::NotWriter => "not the record's writer",
            Refusal::TooManyItems => "too many items from this writer",
            Refusal::BadSignature => "not signed by its writer",
            Refusal::Taken => "already taken",
            Refusal::NotHolder => "not the key's holder",
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
