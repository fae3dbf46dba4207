//! The user's operations: lookup, store, remove and fetch. Each routes to the
//! key's successor, asks it (fetch: then its replicas), retries from scratch
//! when the route or the holder fails, and ends in one event.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::requests::{Parent, Pending};
use super::{
    Item, NodeId, OpId, Peer, Refusal, Ring, RingError, RingEvent, RingRequest, RingResponse, State,
};

/// The user's operations under way.
pub(super) struct Operations {
    pub(super) running: HashMap<u64, Op>,
    /// Operations the ring started itself (storing kept items again): they
    /// end without an event.
    pub(super) quiet: HashSet<u64>,
    /// The id of the next operation.
    pub(super) next: u64,
}

impl Operations {
    pub(super) fn new() -> Operations {
        Operations {
            running: HashMap::new(),
            quiet: HashSet::new(),
            next: 1,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) enum OpKind {
    Lookup,
    Store(Item),
    /// Store only if (key, name) is free (`claim.rs`).
    Claim(Item),
    Remove(String),
    Fetch,
}

pub(super) struct Op {
    pub(super) key: NodeId,
    pub(super) kind: OpKind,
    /// Route attempts so far.
    pub(super) attempts: u32,
    /// Fetch: holders still to ask, in order.
    pub(super) candidates: Vec<Peer>,
    /// Fetch: anybody answered?
    pub(super) answered: bool,
    /// The holder and replicas the lookup found (or the cache named).
    pub(super) found: Option<(Peer, Vec<Peer>)>,
}

pub(super) enum OpOutcome {
    Found(Peer, u32),
    Items(Vec<Item>),
    Done,
}

impl Ring {
    /// Find the successor of `key`; ends in [`RingEvent::LookupDone`].
    pub fn lookup(&mut self, key: NodeId, now: Instant) -> OpId {
        self.start_op(key, OpKind::Lookup, now)
    }

    /// Store `item` at its key's successor, which replicates it; ends in
    /// [`RingEvent::StoreDone`].
    /// The item is written in this node's name (its `writer` is set here),
    /// and also kept here until it expires or is removed through this node,
    /// and stored again when the holder that took it dies.
    /// When items are signed (`seal.rs`), it is signed here, once: copies
    /// stored again carry the same signature.
    pub fn store(&mut self, mut item: Item, now: Instant) -> OpId {
        item.writer = self.me.id;
        self.sign_item(&mut item, now);
        self.store_signed(item, now)
    }

    /// [`store`](Self::store) of several items written at one time: signed
    /// together when the seal does so (`seal.rs`); one operation each.
    pub fn store_all(&mut self, mut items: Vec<Item>, now: Instant) -> Vec<OpId> {
        for item in &mut items {
            item.writer = self.me.id;
        }
        if let Some(seal) = &mut self.storage.seal {
            seal.sign_items(&mut items, now);
        }
        items
            .into_iter()
            .map(|item| self.store_signed(item, now))
            .collect()
    }

    /// Stores an item written here and signed.
    fn store_signed(&mut self, item: Item, now: Instant) -> OpId {
        // The holder is this node when its range has the key (the registrar
        // of a lone node, or of its own arc): nothing to keep then
        // (`store_here`); should the route say otherwise, the copy is kept
        // when the store is sent.
        if !self.is_primary(item.key) {
            self.kept.keep(&item);
        }
        self.start_op(item.key, OpKind::Store(item), now)
    }

    /// Stores a kept item again (its holder died); ends without an event.
    pub(super) fn store_again(&mut self, item: Item, now: Instant) {
        let op = self.start_op(item.key, OpKind::Store(item), now);
        if self.ops.running.contains_key(&op.0) {
            self.ops.quiet.insert(op.0);
        }
    }

    /// Kept items whose holder is `dead` (or, with `None`, that have no
    /// holder) are stored again.
    pub(super) fn republish(&mut self, dead: Option<Peer>, now: Instant) {
        if self.state != State::Active {
            return;
        }
        for item in self.kept.due_again(dead, now) {
            self.store_again(item, now);
        }
    }

    /// The periodic check of kept items: expired ones dropped, those without
    /// a holder stored again, every holder probed (a dead one brings its
    /// items back through [`Ring::mark_dead`]).
    pub(super) fn check_kept(&mut self, now: Instant) {
        self.kept.purge(now);
        self.republish(None, now);
        for holder in self.kept.holders() {
            if holder != self.me {
                self.probe(holder, now);
            }
        }
    }

    /// Remove (key, name) from the key's successor and its replicas; ends in
    /// [`RingEvent::StoreDone`].
    pub fn remove(&mut self, key: NodeId, name: String, now: Instant) -> OpId {
        self.kept.forget(key, &name);
        self.start_op(key, OpKind::Remove(name), now)
    }

    /// All live items under `key`; ends in [`RingEvent::FetchDone`]. Asks the
    /// replicas when the primary fails or has nothing.
    pub fn fetch(&mut self, key: NodeId, now: Instant) -> OpId {
        self.start_op(key, OpKind::Fetch, now)
    }

    pub(super) fn start_op(&mut self, key: NodeId, kind: OpKind, now: Instant) -> OpId {
        let op = OpId(self.ops.next);
        self.ops.next += 1;
        let kind_is_lookup = matches!(kind, OpKind::Lookup);
        if self.state != State::Active {
            self.finish_op(op, &kind, Err(RingError::Left));
            return op;
        }
        self.ops.running.insert(
            op.0,
            Op {
                key,
                kind,
                attempts: 0,
                candidates: Vec::new(),
                answered: false,
                found: None,
            },
        );
        if !kind_is_lookup && let Some(via) = self.via() {
            // A client: its super-node carries the operation out.
            self.op_found(op, Ok((via, 0, Vec::new())), now);
            return op;
        }
        if !kind_is_lookup && let Some((holder, replicas)) = self.cached_route(key, now) {
            // The holder answered for this key lately: straight there.
            self.op_found(op, Ok((holder, 0, replicas)), now);
            return op;
        }
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

    pub(super) fn finish_op(
        &mut self,
        op: OpId,
        kind: &OpKind,
        result: Result<OpOutcome, RingError>,
    ) {
        if self.ops.quiet.remove(&op.0) {
            return;
        }
        let relayed = self.clients_waiting();
        let event = match kind {
            OpKind::Lookup => RingEvent::LookupDone {
                op,
                result: result.map(|o| match o {
                    OpOutcome::Found(p, h) => (p, h),
                    _ => unreachable!(),
                }),
            },
            OpKind::Store(_) | OpKind::Claim(_) | OpKind::Remove(_) => RingEvent::StoreDone {
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
        if relayed && self.relayed_end(op, &event) {
            return;
        }
        self.events.push_back(event);
    }

    /// A fresh cached route to `key`'s holder (never to a dead peer, and to
    /// this node only while it is the key's primary).
    fn cached_route(&mut self, key: NodeId, now: Instant) -> Option<(Peer, Vec<Peer>)> {
        let fresh_for = self.config.stabilize_every * 2;
        let route = self.routes.get(key, fresh_for, now)?.clone();
        let usable = if route.holder == self.me {
            self.is_primary(key)
        } else {
            !self.neighbours.dead.contains_key(&route.holder.addr)
        };
        if !usable {
            self.routes.forget(key);
            return None;
        }
        Some((route.holder, route.replicas))
    }

    /// Routes an operation again from scratch, unless it has used up its
    /// retries; false then.
    pub(super) fn retry_op(&mut self, op: OpId, now: Instant) -> bool {
        let Some(o) = self.ops.running.get_mut(&op.0) else {
            return false;
        };
        let key = o.key;
        // Whatever route it took failed.
        self.routes.forget(key);
        let Some(o) = self.ops.running.get_mut(&op.0) else {
            return false;
        };
        if o.attempts >= self.config.op_retries {
            return false;
        }
        o.attempts += 1;
        let iterative = self.config.iterative;
        self.route(key, 0, Parent::Op(op), iterative, Vec::new(), 0, false, now);
        true
    }

    /// A store whose holder is this node: merged here with the operation's
    /// own item (no copy of it is made for the match) and pushed to the
    /// replicas. The copy [`store`](Self::store) kept is dropped: this node
    /// holds the item itself, and a kept item whose holder is this node is
    /// never stored again (a holder that dies is another node), so it was
    /// only memory. Should the key move to a node that joins, the item goes
    /// with the handover as any held item does.
    fn store_here(&mut self, op: OpId, now: Instant) {
        let Some(o) = self.ops.running.remove(&op.0) else {
            return;
        };
        let OpKind::Store(item) = o.kind else {
            return;
        };
        if self.is_primary(item.key) {
            self.kept.forget(item.key, &item.name);
        } else {
            // Held here, but not in our range: the route ended here because
            // our successors all died (a ring of one for a moment). Kept
            // with no holder, so the next check of kept items stores it at
            // the key's true successor.
            self.kept.keep(&item);
        }
        let me = self.me.id;
        let (kept, refusal) = self.store_checked(me, false, vec![item], now);
        for to in self.replica_targets() {
            self.push_items(to, kept.clone(), now);
        }
        let result = match refusal {
            Some(refusal) => Err(RingError::Refused(refusal)),
            None => Ok(()),
        };
        if !self.ops.quiet.remove(&op.0) {
            self.events.push_back(RingEvent::StoreDone { op, result });
        }
    }

    /// The lookup of an operation ended.
    pub(super) fn op_found(
        &mut self,
        op: OpId,
        result: Result<(Peer, u32, Vec<Peer>), RingError>,
        now: Instant,
    ) {
        let Some(o) = self.ops.running.get_mut(&op.0) else {
            return;
        };
        let (holder, hops, replicas) = match result {
            Ok(found) => found,
            Err(e) => {
                if !self.retry_op(op, now) {
                    let o = self.ops.running.remove(&op.0).expect("op");
                    self.finish_op(op, &o.kind, Err(e));
                }
                return;
            }
        };
        o.found = Some((holder, replicas.clone()));
        if holder == self.me && matches!(o.kind, OpKind::Store(_)) {
            return self.store_here(op, now);
        }
        let kind = o.kind.clone();
        let key = o.key;
        match kind.clone() {
            OpKind::Lookup => {
                self.ops.running.remove(&op.0);
                self.finish_op(op, &kind, Ok(OpOutcome::Found(holder, hops)));
            }
            OpKind::Store(item) => {
                // (A store this node holds itself was done by `store_here`.)
                if !self.kept.has(&item) {
                    self.kept.keep(&item);
                }
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
            OpKind::Claim(item) => {
                if holder == self.me {
                    let me = self.me.id;
                    let result = self.claim_here(me, item.clone(), now);
                    if result.is_ok() {
                        self.kept.keep(&item);
                        self.kept.stored(&item, self.me);
                    }
                    // Not ours after all (a stale route): route again.
                    if matches!(result, Err(Refusal::NotHolder | Refusal::NotJoined))
                        && self.retry_op(op, now)
                    {
                        return;
                    }
                    self.ops.running.remove(&op.0);
                    let result = result.map(|()| OpOutcome::Done);
                    self.finish_op(op, &kind, result.map_err(RingError::Refused));
                } else {
                    let request = RingRequest::Claim { item };
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
                    let me = self.me.id;
                    let seal = self.sign_remove(key, &name, now);
                    let result = self
                        .remove_checked(me, key, &name, false, seal, now)
                        .map(|()| OpOutcome::Done)
                        .map_err(RingError::Refused);
                    self.ops.running.remove(&op.0);
                    self.finish_op(op, &kind, result);
                } else {
                    let seal = self.sign_remove(key, &name, now);
                    let request = RingRequest::Remove {
                        key,
                        name,
                        replica: false,
                        by: self.me.id,
                        seal,
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
                let o = self.ops.running.get_mut(&op.0).expect("op");
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

    /// A fetch's lookup came back with the holder's own items
    /// (semi-recursive, `answer.rs`): no second round to the holder. The
    /// holder answered for itself, so the route to it is learnt even when
    /// it holds nothing yet (the store of a first REGISTER goes straight
    /// there). The replicas are asked only if the items are forged.
    pub(super) fn op_found_items(
        &mut self,
        op: OpId,
        holder: Peer,
        replicas: Vec<Peer>,
        items: Vec<Item>,
        now: Instant,
    ) {
        let take = self.config.replicas.saturating_sub(1);
        let Some(o) = self.ops.running.get_mut(&op.0) else {
            return;
        };
        o.found = Some((holder, replicas.clone()));
        o.candidates = replicas
            .iter()
            .filter(|p| **p != holder)
            .take(take)
            .copied()
            .collect();
        let key = o.key;
        self.routes.learn(key, holder, replicas, now);
        let mut items = items;
        if items.iter_mut().all(|i| self.fetched_item_holds(i, now)) {
            if let Some(o) = self.ops.running.get_mut(&op.0) {
                o.answered = true;
                o.candidates.clear();
            }
            self.fetch_next(op, items, now);
        } else {
            self.routes.forget(key);
            self.fetch_next(op, Vec::new(), now);
        }
    }

    /// Ask the next holder for a fetch, or finish it.
    pub(super) fn fetch_next(&mut self, op: OpId, found: Vec<Item>, now: Instant) {
        let Some(o) = self.ops.running.get_mut(&op.0) else {
            return;
        };
        if found.is_empty() && o.candidates.is_empty() && !o.answered {
            // Nobody answered with items we believe (a forged answer, no
            // replica known yet — a holder just back names none): our own
            // copy, when we hold one, checked when it was stored here.
            let key = o.key;
            let items = self.local_items_at(key, now);
            if !items.is_empty() {
                if let Some(o) = self.ops.running.get_mut(&op.0) {
                    o.answered = true;
                }
                return self.fetch_next(op, items, now);
            }
        }
        let Some(o) = self.ops.running.get_mut(&op.0) else {
            return;
        };
        if !found.is_empty() || o.candidates.is_empty() {
            let o = self.ops.running.remove(&op.0).expect("op");
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
    pub(super) fn op_answer(
        &mut self,
        op: OpId,
        to: Peer,
        response: Option<RingResponse>,
        now: Instant,
    ) {
        let Some(o) = self.ops.running.get_mut(&op.0) else {
            return;
        };
        let kind = o.kind.clone();
        match kind {
            OpKind::Fetch => match response {
                Some(RingResponse::Items { mut items }) => {
                    // A forged item is not believed: the whole answer is
                    // dropped and the next holder asked.
                    if items.iter_mut().all(|i| self.fetched_item_holds(i, now)) {
                        if let Some(o) = self.ops.running.get_mut(&op.0) {
                            o.answered = true;
                            if !items.is_empty()
                                && let Some((holder, replicas)) = o.found.clone()
                                && holder == to
                            {
                                let key = o.key;
                                self.routes.learn(key, holder, replicas, now);
                            }
                        }
                        self.fetch_next(op, items, now)
                    } else {
                        self.fetch_next(op, Vec::new(), now)
                    }
                }
                _ => self.fetch_next(op, Vec::new(), now),
            },
            OpKind::Store(_) | OpKind::Claim(_) | OpKind::Remove(_) => match response {
                Some(RingResponse::Stored) => {
                    match &kind {
                        OpKind::Store(item) => self.kept.stored(item, to),
                        OpKind::Claim(item) => {
                            // Ours now: stored again should its holder die.
                            self.kept.keep(item);
                            self.kept.stored(item, to);
                        }
                        _ => {}
                    }
                    if let Some((holder, replicas)) = o.found.clone()
                        && holder == to
                    {
                        self.routes.learn(o.key, holder, replicas, now);
                    }
                    self.ops.running.remove(&op.0);
                    self.finish_op(op, &kind, Ok(OpOutcome::Done));
                }
                Some(RingResponse::Refused(
                    refusal @ (Refusal::NotWriter
                    | Refusal::TooManyItems
                    | Refusal::BadSignature
                    | Refusal::Taken),
                )) => {
                    // A verdict on the record, not on the route: final.
                    self.ops.running.remove(&op.0);
                    self.finish_op(op, &kind, Err(RingError::Refused(refusal)));
                }
                other => {
                    // Holder dead or refusing: route again after the ring heals.
                    if !self.retry_op(op, now) {
                        self.ops.running.remove(&op.0);
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
}
