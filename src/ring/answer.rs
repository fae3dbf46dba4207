//! Semi-recursive lookups: each hop acknowledges a `FindSuccessor` to its
//! sender at once and forwards it; the node that finds the key's successor
//! sends the answer straight to the originator ([`RingRequest::Answer`]),
//! with the successor's items for the key when the lookup is for a fetch.
//! A lookup of h hops costs h + 1 one-way legs instead of 2·h, and a fetch
//! no second round to the holder.
//!
//! The originator accepts an answer only with the nonce of a lookup it has
//! in flight (drawn from a secret, so a stranger cannot forge one), bounds
//! the wait (`AWAIT_FOR`) and routes again through another first hop when
//! it passes. Every hop waits for its next hop's acknowledgement only, a
//! round-trip timeout, so a dead hop is routed around at the speed of the
//! network.

use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use super::ops::OpKind;
use super::requests::{Parent, Pending, PendingEntry};
use super::{Item, NodeId, Peer, Reply, Ring, RingRequest, RingResponse};

/// How long our lookup waits for its answer once the first hop has
/// acknowledged it, as a share of `request_timeout` (the hops on the way
/// each fail over at their own round-trip timeouts meanwhile).
const AWAIT_SHARE: u32 = 2;

impl Ring {
    /// Sets the secret our lookups' nonces are drawn from (the driver gives
    /// one from its seeded RNG; the simulator leaves the default).
    pub fn set_nonce_secret(&mut self, secret: u64) {
        self.requests.secret = secret;
    }

    /// Where the answer to a new lookup of ours goes, with a fresh nonce.
    pub(super) fn new_reply(&mut self, items: bool) -> Reply {
        let count = self.requests.next;
        let mut hash = Sha1::new();
        hash.update(b"p2psip-lookup-nonce");
        hash.update(self.requests.secret.to_be_bytes());
        hash.update(self.me.id.0);
        hash.update(count.to_be_bytes());
        let digest = hash.finalize();
        let mut nonce = [0u8; 8];
        nonce.copy_from_slice(&digest[..8]);
        Reply {
            to: self.me,
            nonce: u64::from_be_bytes(nonce),
            items,
        }
    }

    /// Is operation `op` a fetch (its lookup brings the items)?
    pub(super) fn op_is_fetch(&self, op: super::OpId) -> bool {
        self.ops
            .running
            .get(&op.0)
            .is_some_and(|o| matches!(o.kind, OpKind::Fetch))
    }

    /// A lookup we relay found its answer (or failed): straight to the
    /// originator.
    pub(super) fn send_answer(
        &mut self,
        reply: Reply,
        key: NodeId,
        response: RingResponse,
        now: Instant,
    ) {
        let (successor, hops, replicas) = match response {
            RingResponse::Found {
                successor,
                hops,
                replicas,
            } => (Some(successor), hops, replicas),
            _ => (None, 0, Vec::new()),
        };
        // Items only from the holder itself, answering for its own range.
        let items =
            (reply.items && successor == Some(self.me)).then(|| self.local_items_at(key, now));
        if reply.to == self.me {
            // The path came back to the originator.
            let me = self.me.id;
            return self.on_answer(me, reply.nonce, successor, hops, replicas, items, now);
        }
        let request = RingRequest::Answer {
            nonce: reply.nonce,
            successor,
            hops,
            replicas,
            items,
        };
        self.send(
            reply.to.addr,
            request,
            Pending::Answer { to: reply.to },
            now,
        );
    }

    /// Our first hop acknowledged our semi-recursive lookup (`pending`,
    /// request `id`, already taken): wait for the answer.
    pub(super) fn await_answer(&mut self, id: u64, sent: Instant, pending: Pending, now: Instant) {
        let Pending::Route {
            key,
            parent,
            exclude,
            attempts,
            to,
            reply: Some(reply),
            ..
        } = pending
        else {
            return;
        };
        if matches!(parent, Parent::Relay { .. }) {
            // Relayed: our part is done.
            return;
        }
        let deadline = now + self.await_for();
        let pending = Pending::Await {
            key,
            parent,
            exclude,
            attempts,
            to,
            nonce: reply.nonce,
        };
        self.requests.pending.insert(
            id,
            PendingEntry {
                deadline,
                sent,
                late: None,
                pending,
            },
        );
        self.requests.deadlines.insert((deadline, id));
        self.requests.awaiting.insert(reply.nonce, id);
    }

    /// The answer to one of our semi-recursive lookups, from `sender`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_answer(
        &mut self,
        sender: NodeId,
        nonce: u64,
        successor: Option<Peer>,
        hops: u32,
        replicas: Vec<Peer>,
        items: Option<Vec<Item>>,
        now: Instant,
    ) {
        // Only an answer we wait for, by its nonce.
        let Some(&id) = self.requests.awaiting.get(&nonce) else {
            return;
        };
        let Some(entry) = self.take_pending(id) else {
            return;
        };
        let (key, parent, mut exclude, attempts, to) = match entry.pending {
            Pending::Route {
                key,
                parent,
                exclude,
                attempts,
                to,
                ..
            }
            | Pending::Await {
                key,
                parent,
                exclude,
                attempts,
                to,
                ..
            } => (key, parent, exclude, attempts, to),
            _ => return,
        };
        let Some(successor) = successor else {
            // The path found no way: another first hop.
            exclude.push(to.id);
            return self.retry_route(key, 0, parent, false, exclude, attempts + 1, now);
        };
        let replicas: Vec<Peer> = replicas.into_iter().take(self.config.successors).collect();
        if let (Some(items), Parent::Op(op)) = (items, &parent)
            && successor.id == sender
            && self.op_is_fetch(*op)
        {
            return self.op_found_items(*op, successor, replicas, items, now);
        }
        self.route_done(parent, Ok((successor, hops, replicas)), now);
    }

    /// How long an acknowledged lookup of ours waits for its answer.
    pub(super) fn await_for(&self) -> Duration {
        self.config.request_timeout / AWAIT_SHARE
    }
}
