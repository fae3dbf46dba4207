//! Routing: resolving a key to its successor, recursively (forward the
//! lookup) or iteratively (tell the asker where to go next), retrying other
//! next hops when one fails, and handing the result to whoever waits for it.

use std::net::SocketAddr;
use std::time::Instant;

use super::requests::{Parent, Pending, own_nonce};
use super::{NodeId, Peer, Refusal, Ring, RingError, RingRequest, RingResponse};

/// Attempts a node makes to route one lookup (other next hops) before it
/// answers with a refusal.
pub(super) const ROUTE_ATTEMPTS: u32 = 3;

impl Ring {
    /// Resolve `key` from here. `hops` is the hop count of the request that
    /// brought the lookup (0 for our own).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn route(
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
        if self.client.is_some() {
            // A client asks its super-node, which routes for it.
            let Some(to) = self.via().filter(|v| !exclude.contains(&v.id)) else {
                return self.answer(parent, RingResponse::Refused(Refusal::NoRoute), now);
            };
            let pending = Pending::Route {
                key,
                parent,
                hops: hops + 1,
                iterative: false,
                exclude,
                attempts,
                to,
                reply: None,
            };
            return self.send_route(pending, false, now);
        }
        // Are we, or our successor, the answer?
        if self.neighbours.successors.is_empty() {
            let found = RingResponse::Found {
                successor: self.me,
                hops,
                replicas: Vec::new(),
            };
            return self.answer(parent, found, now);
        }
        if let Some(pred) = self.neighbours.predecessor
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
            .neighbours
            .successors
            .iter()
            .position(|p| !exclude.contains(&p.id))
        else {
            return self.answer(parent, RingResponse::Refused(Refusal::NoRoute), now);
        };
        let succ = self.neighbours.successors[si];
        // A lookup for a fetch lets the successor answer with its items.
        let wants_items = matches!(parent, Parent::Relay { reply, .. } if reply.items);
        let next = if key.in_open_closed(self.me.id, succ.id) {
            if self.is_fresh(succ.addr, now) && !wants_items {
                let replicas = self
                    .neighbours
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
        let reply = match &parent {
            Parent::Relay { reply, .. } => Some(*reply),
            Parent::Op(op) if !iterative && self.config.semi_recursive => {
                let items = self.op_is_fetch(*op);
                Some(self.new_reply(items))
            }
            _ => None,
        };
        let pending = Pending::Route {
            key,
            parent,
            hops: hops + 1,
            iterative,
            exclude,
            attempts,
            to: next,
            reply,
        };
        self.send_route(pending, iterative, now);
    }

    /// Sends a route's next step (a [`Pending::Route`]) as a FindSuccessor to
    /// its `to`; `ask_iteratively`: the request asks for the next hop back
    /// instead of having it forwarded.
    pub(super) fn send_route(&mut self, pending: Pending, ask_iteratively: bool, now: Instant) {
        let Pending::Route {
            key,
            hops,
            to,
            reply,
            ..
        } = &pending
        else {
            return;
        };
        let request = RingRequest::FindSuccessor {
            key: *key,
            hops: *hops,
            iterative: ask_iteratively,
            reply: *reply,
        };
        let to = to.addr;
        let nonce = own_nonce(&pending);
        let id = self.requests.next;
        self.send(to, request, pending, now);
        if let Some(nonce) = nonce {
            self.requests.awaiting.insert(nonce, id);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn retry_route(
        &mut self,
        key: NodeId,
        hops: u32,
        parent: Parent,
        iterative: bool,
        exclude: Vec<NodeId>,
        attempts: u32,
        now: Instant,
    ) {
        if matches!(parent, Parent::MergeCheck(_)) {
            // Only the lost peer's answer counts (our own table would
            // answer for our part of the ring): try again next time.
            return;
        }
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
    pub(super) fn closest_preceding(&self, key: NodeId, exclude: &[NodeId]) -> Option<Peer> {
        let mut best: Option<(NodeId, Peer)> = None;
        let candidates = self
            .fingers
            .table
            .iter()
            .flatten()
            .chain(self.neighbours.successors.iter());
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
        self.neighbours
            .successors
            .iter()
            .find(|p| !exclude.contains(&p.id))
            .copied()
    }

    /// Deliver a lookup result (or error response) to whoever waits for it.
    pub(super) fn answer(&mut self, parent: Parent, response: RingResponse, now: Instant) {
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
                self.rounds.fixing = false;
                if let RingResponse::Found { successor, .. } = response {
                    let succ = self.successor();
                    if successor != self.me
                        && successor.id.in_open(self.me.id, succ.id)
                        && !self.neighbours.dead.contains_key(&successor.addr)
                    {
                        // The ring knows a closer successor than we do (two
                        // strands of a loopy ring): take it and stabilize.
                        let mut list = vec![successor];
                        list.extend(self.neighbours.successors.iter().copied());
                        self.set_successors(list, now);
                        if !self.rounds.stabilizing {
                            self.stabilize(now);
                        }
                    }
                }
            }
            Parent::MergeCheck(asked) => self.merge_answer(asked, response, now),
            Parent::Relay { reply, key } => self.send_answer(reply, key, response, now),
            Parent::Finger(i) => {
                let result = match response {
                    RingResponse::Found { successor, .. } => Some(successor),
                    _ => None,
                };
                self.finger_found(i, result, now);
            }
        }
    }

    pub(super) fn route_done(
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

    /// Did `addr` answer us within the last one and a half stabilize periods?
    pub(super) fn is_fresh(&self, addr: SocketAddr, now: Instant) -> bool {
        let window = self.config.stabilize_every + self.config.stabilize_every / 2;
        self.neighbours
            .heard
            .get(&addr)
            .is_some_and(|t| now.saturating_duration_since(*t) <= window)
    }
}
