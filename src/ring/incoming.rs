//! The driver's entry points: a request from another node, the answer to one
//! of ours, and the failure of one of ours. Each dispatches to the part of the
//! ring the message is for.

use std::net::SocketAddr;
use std::time::Instant;

use super::requests::{Parent, Pending, measures_rtt, pending_peer_addr};
use super::{
    IncomingId, NodeId, Peer, Refusal, RequestId, Ring, RingError, RingEvent, RingRequest,
    RingResponse, State,
};

impl Ring {
    /// A request from another node. `from` is the transport source; the ring
    /// answers with an [`Outgoing::Response`](super::Outgoing::Response) carrying
    /// `id`. The sender is taken to be the node listening at `from`
    /// ([`NodeId::of_addr`]); see [`handle_request_as`](Self::handle_request_as).
    pub fn handle_request(
        &mut self,
        from: SocketAddr,
        id: IncomingId,
        request: RingRequest,
        now: Instant,
    ) {
        self.handle_request_as(NodeId::of_addr(from), id, request, now)
    }

    /// A request from the node `sender`, as its transport authenticated it
    /// (shared secret: the source address only; certificates: the Node-ID
    /// of the certificate). Stores and removes are checked against it.
    pub fn handle_request_as(
        &mut self,
        sender: NodeId,
        id: IncomingId,
        request: RingRequest,
        now: Instant,
    ) {
        if self.state == State::Left {
            self.respond(id, RingResponse::Refused(Refusal::Left));
            return;
        }
        if self.client.is_some() {
            // A client is no member: it answers pings only.
            return self.client_refuses(id, &request);
        }
        let request = if self.is_our_client(sender) && !matches!(request, RingRequest::Attach) {
            match self.on_client_request(id, request, now) {
                Some(request) => request,
                None => return self.resync(now),
            }
        } else {
            request
        };
        match request {
            RingRequest::FindSuccessor {
                key,
                hops,
                iterative,
                reply,
            } => {
                if hops > self.config.max_hops {
                    self.respond(id, RingResponse::Refused(Refusal::Loop));
                    return;
                }
                if !self.joining.joined && !self.joining.bootstraps.is_empty() {
                    // Still joining: answering as a ring of one would split the ring.
                    self.respond(id, RingResponse::Refused(Refusal::NotJoined));
                    return;
                }
                let parent = match reply {
                    // Semi-recursive: acknowledged now, answered by whoever
                    // finds it (`answer.rs`).
                    Some(reply) if !iterative => {
                        self.respond(id, RingResponse::Ok);
                        Parent::Relay { reply, key }
                    }
                    _ => Parent::Remote(id),
                };
                self.route(key, hops, parent, iterative, Vec::new(), 0, true, now);
            }
            RingRequest::Answer {
                nonce,
                successor,
                hops,
                replicas,
                items,
            } => {
                self.respond(id, RingResponse::Ok);
                self.on_answer(sender, nonce, successor, hops, replicas, items, now);
            }
            RingRequest::GetPredecessor => {
                let response = RingResponse::Predecessor {
                    predecessor: self.neighbours.predecessor,
                    successors: self.neighbours.successors.clone(),
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
                    if self.rounds.stabilizing {
                        self.rounds.restabilize = true;
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
                let changed = if replica {
                    Vec::new()
                } else {
                    self.changed_here(&items)
                };
                let (kept, refusal) = self.store_checked(sender, replica, items, now);
                if !replica && !kept.is_empty() {
                    let targets: Vec<Peer> = self.replica_targets();
                    for to in targets {
                        self.push_items(to, kept.clone(), now);
                    }
                }
                let answer = match refusal {
                    Some(refusal) => RingResponse::Refused(refusal),
                    None => RingResponse::Stored,
                };
                self.respond(id, answer);
                if !replica {
                    self.hand_on_strays(kept, &changed, now);
                }
            }
            RingRequest::Claim { item } => {
                if self.state == State::Leaving {
                    self.respond(id, RingResponse::Refused(Refusal::Leaving));
                    return;
                }
                let answer = match self.claim_here(sender, item, now) {
                    Ok(()) => RingResponse::Stored,
                    Err(refusal) => RingResponse::Refused(refusal),
                };
                self.respond(id, answer);
            }
            RingRequest::Fetch { key } => {
                let items = self.local_items_at(key, now);
                self.respond(id, RingResponse::Items { items });
            }
            RingRequest::Remove {
                key,
                name,
                replica,
                by,
                seal,
            } => {
                if self.state == State::Leaving {
                    self.respond(id, RingResponse::Refused(Refusal::Leaving));
                    return;
                }
                // From the writer itself, or passed on by the key's holder.
                let by = if replica { by } else { sender };
                let answer = match self.remove_checked(by, key, &name, replica, seal, now) {
                    Ok(()) => RingResponse::Stored,
                    Err(refusal) => RingResponse::Refused(refusal),
                };
                self.respond(id, answer);
            }
            RingRequest::Transfer { items } => {
                if self.state == State::Leaving {
                    self.respond(id, RingResponse::Refused(Refusal::Leaving));
                    return;
                }
                // Handed over by their holder: checked as a replica checks.
                let (kept, _) = self.store_checked(sender, true, items, now);
                let mine: Vec<_> = kept
                    .into_iter()
                    .filter(|item| self.is_primary(item.key))
                    .collect();
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
            RingRequest::Attach => self.on_attach(sender, id, now),
            // Only an attached client may ask to be probed.
            RingRequest::Probe { .. } => {
                self.respond(id, RingResponse::Refused(Refusal::NotJoined));
            }
        }
        self.resync(now);
    }

    /// The answer to a request this ring sent.
    pub fn handle_response(&mut self, id: RequestId, response: RingResponse, now: Instant) {
        let Some(entry) = self.take_pending(id.0) else {
            // Given up on, but the peer lives after all.
            if let Some(addr) = self.requests.expired.remove(&id.0) {
                self.neighbours.dead.remove(&addr);
                self.neighbours.heard.insert(addr, now);
            }
            return;
        };
        if self.state == State::Left {
            return;
        }
        let pending = entry.pending;
        if let Some(addr) = pending_peer_addr(&pending) {
            self.neighbours.dead.remove(&addr);
            self.neighbours.heard.insert(addr, now);
            if measures_rtt(&pending) {
                let rtt = now.saturating_duration_since(entry.sent);
                self.neighbours.rtt.sample(addr, rtt);
            }
        }
        if matches!(pending, Pending::Route { reply: Some(_), .. }) && response == RingResponse::Ok
        {
            // A semi-recursive hop took it on: the answer comes from the end.
            self.await_answer(id.0, entry.sent, pending, now);
            return self.resync(now);
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
                ..
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
                        let pending = Pending::Route {
                            key,
                            parent,
                            hops: hops + 1,
                            iterative,
                            exclude,
                            attempts,
                            to: ask,
                            reply: None,
                        };
                        self.send_route(pending, true, now);
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
                    self.joining.in_flight = false;
                    let mut list = vec![successor];
                    list.extend(replicas);
                    self.set_successors(list, now);
                    if self.neighbours.successors.is_empty() {
                        self.join_failed(now);
                    } else {
                        self.joining.joined = true;
                        let successor = self.neighbours.successors[0];
                        self.events.push_back(RingEvent::Joined { successor });
                        self.fingers.burst = true;
                        self.fingers.next = 0;
                        self.stabilize(now);
                        if !self.rounds.fixing {
                            self.fix_fingers(now);
                        }
                    }
                } else {
                    self.join_failed(now);
                }
            }
            Pending::Stabilize { to } => {
                self.rounds.stabilizing = false;
                if let RingResponse::Predecessor {
                    predecessor,
                    successors,
                } = response
                {
                    self.on_stabilize(to, predecessor, successors, now);
                }
                if self.rounds.restabilize && !self.rounds.stabilizing {
                    self.rounds.restabilize = false;
                    self.stabilize(now);
                }
            }
            Pending::Probe { to } => {
                // A peer we had taken for dead that lies before our
                // successor (it restarted): take it back now.
                let succ = self.successor();
                if to.id.in_open(self.me.id, succ.id) || self.neighbours.successors.is_empty() {
                    if self.rounds.stabilizing {
                        self.rounds.restabilize = true;
                    } else {
                        let mut list = vec![to];
                        list.extend(self.neighbours.successors.iter().copied());
                        self.set_successors(list, now);
                        self.stabilize(now);
                    }
                }
            }
            Pending::Notify { .. } | Pending::Push { .. } | Pending::Answer { .. } => {}
            // Answered by its own request (`on_answer`), never by a response.
            Pending::Await { .. } => {}
            Pending::CheckPredecessor { .. } => self.rounds.checking = false,
            Pending::OpRequest { op, to } => self.op_answer(op, to, Some(response), now),
            Pending::Leave { to, handover } => {
                if handover && matches!(response, RingResponse::Refused(_)) {
                    self.hand_over_failed(to, now);
                }
                self.leave_step();
            }
            Pending::Attach { to } => self.on_attached(to, Some(response), now),
            Pending::Reachable { .. } => self.on_probed(Some(response), now),
            Pending::Members { .. } => self.on_members(response),
            Pending::Reach { incoming, .. } => {
                self.on_reach(incoming, matches!(response, RingResponse::Ok))
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

    pub(super) fn on_failure(&mut self, pending: Pending, now: Instant) {
        match pending {
            Pending::Route {
                key,
                parent,
                hops,
                iterative,
                mut exclude,
                attempts,
                to,
                ..
            } => {
                exclude.push(to.id);
                if iterative {
                    // We asked `to` directly and it only had to answer.
                    self.mark_dead(to, now);
                } else if !self.neighbours.dead.contains_key(&to.addr) {
                    // The delay may be further down the path: check the peer.
                    self.probe(to, now);
                }
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
            Pending::Await {
                key,
                parent,
                mut exclude,
                attempts,
                to,
                ..
            } => {
                // The path went silent beyond the first hop (which lives):
                // another first hop.
                exclude.push(to.id);
                self.retry_route(key, 0, parent, false, exclude, attempts + 1, now);
            }
            // The originator went away: nothing waits for it here.
            Pending::Answer { .. } => {}
            Pending::Join { bootstrap } => {
                let _ = bootstrap;
                self.join_failed(now);
            }
            Pending::Stabilize { to } => {
                self.rounds.stabilizing = false;
                self.mark_dead(to, now);
                // Go straight on with the next successor.
                self.stabilize(now);
            }
            Pending::Notify { to } | Pending::Probe { to } | Pending::Push { to } => {
                self.mark_dead(to, now)
            }
            Pending::CheckPredecessor { to } => {
                self.rounds.checking = false;
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
            Pending::Attach { to } => {
                self.mark_dead(to, now);
                self.on_attached(to, None, now);
            }
            Pending::Reachable { .. } => self.on_probed(None, now),
            Pending::Members { .. } => {}
            // A client unreachable is no dead member: not marked.
            Pending::Reach { incoming, .. } => self.on_reach(incoming, false),
        }
    }
}
