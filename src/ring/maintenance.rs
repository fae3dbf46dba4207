//! Ring maintenance: joining through a bootstrap, stabilize and notify,
//! check-predecessor, fix-fingers, and what a node does when a peer is found
//! dead or says it leaves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::id::ID_BITS;
use super::requests::{Parent, Pending};
use super::rtt::RoundTrips;
use super::storage::batches;
use super::timers::Timer;
use super::{NodeId, Peer, Ring, RingEvent, RingRequest, State};

/// How long a peer found dead is kept out of our tables unless it talks to us.
const DEAD_MEMORY: Duration = Duration::from_secs(30);

/// Predecessor, successor list, and what we know of other peers' health.
#[derive(Default)]
pub(super) struct Neighbours {
    pub(super) predecessor: Option<Peer>,
    /// Nearest first; empty while alone.
    pub(super) successors: Vec<Peer>,
    /// Peers found dead, and when.
    pub(super) dead: HashMap<SocketAddr, Instant>,
    /// When each peer last answered us.
    pub(super) heard: HashMap<SocketAddr, Instant>,
    /// Round-trip estimates, for timeouts.
    pub(super) rtt: RoundTrips,
}

/// The finger table and where its refresh stands.
pub(super) struct Fingers {
    /// Finger `i` is the successor of `starts[i]`.
    pub(super) table: Vec<Option<Peer>>,
    /// `me + 2^i`.
    pub(super) starts: Vec<NodeId>,
    /// The finger refreshed next.
    pub(super) next: usize,
    /// Refresh fingers back to back (after a join), not one per period.
    pub(super) burst: bool,
    /// The successor check of this finger cycle is done.
    pub(super) succ_checked: bool,
}

impl Fingers {
    pub(super) fn new(me: NodeId) -> Fingers {
        Fingers {
            table: vec![None; ID_BITS as usize],
            starts: (0..ID_BITS).map(|i| me.add_pow2(i)).collect(),
            next: 0,
            burst: false,
            succ_checked: false,
        }
    }
}

/// Maintenance rounds in flight: at most one of each at a time.
#[derive(Default)]
pub(super) struct Rounds {
    pub(super) stabilizing: bool,
    /// Stabilize again as soon as the one in flight ends.
    pub(super) restabilize: bool,
    pub(super) fixing: bool,
    pub(super) checking: bool,
}

/// Bootstraps and whether we are in the ring yet.
#[derive(Default)]
pub(super) struct Joining {
    pub(super) bootstraps: Vec<SocketAddr>,
    /// Which bootstrap is tried next (modulo their number).
    pub(super) next: usize,
    /// A join request is in flight.
    pub(super) in_flight: bool,
    /// A join succeeded (or another node joined us).
    pub(super) joined: bool,
}

impl Ring {
    /// Join the ring that `bootstrap` belongs to. May be called several times:
    /// the bootstraps are tried in turn until one answers.
    pub fn join(&mut self, bootstrap: SocketAddr, now: Instant) {
        if self.state != State::Active || bootstrap == self.me.addr {
            return;
        }
        if !self.joining.bootstraps.contains(&bootstrap) {
            self.joining.bootstraps.push(bootstrap);
        }
        if self.joining.joined || self.joining.in_flight {
            return;
        }
        self.try_join(now);
    }

    pub(super) fn try_join(&mut self, now: Instant) {
        if self.joining.bootstraps.is_empty() || self.joining.joined {
            return;
        }
        let bootstrap = self.joining.bootstraps[self.joining.next % self.joining.bootstraps.len()];
        self.joining.in_flight = true;
        self.timers.clear(Timer::JoinRetry);
        self.send(
            bootstrap,
            RingRequest::FindSuccessor {
                key: self.me.id,
                hops: 1,
                iterative: false,
                reply: None,
            },
            Pending::Join { bootstrap },
            now,
        );
    }

    pub(super) fn join_failed(&mut self, now: Instant) {
        self.joining.in_flight = false;
        self.joining.next += 1;
        if self
            .joining
            .next
            .is_multiple_of(self.joining.bootstraps.len().max(1))
        {
            // Tried them all: wait a little before the next round.
            self.timers
                .set(Timer::JoinRetry, now + self.config.stabilize_every * 5);
        } else {
            self.try_join(now);
        }
    }

    pub(super) fn stabilize(&mut self, now: Instant) {
        if self.state != State::Active || self.rounds.stabilizing {
            return;
        }
        match self.neighbours.successors.first().copied() {
            Some(succ) => {
                self.rounds.stabilizing = true;
                self.send(
                    succ.addr,
                    RingRequest::GetPredecessor,
                    Pending::Stabilize { to: succ },
                    now,
                );
            }
            None => {
                // Alone: a predecessor means somebody joined us.
                if let Some(pred) = self.neighbours.predecessor {
                    self.set_successors(vec![pred], now);
                    if !self.neighbours.successors.is_empty() {
                        self.joining.joined = true;
                        self.notify(pred, now);
                    }
                } else if self.joining.joined
                    && !self.joining.bootstraps.is_empty()
                    && !self.joining.in_flight
                {
                    // Was in a ring and lost every neighbour (cut off from
                    // the network): join again through the bootstraps rather
                    // than go on as a ring of one, which would never merge
                    // back when the network returns.
                    self.joining.joined = false;
                    self.try_join(now);
                }
            }
        }
    }

    pub(super) fn on_stabilize(
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
        {
            if self.neighbours.dead.contains_key(&x.addr) {
                // Taken for dead, but our successor knows it: it may have
                // restarted. Ask it; if it answers we stabilize again.
                self.probe(x, now);
            } else {
                list.push(x);
                closer = true;
            }
        }
        list.push(from);
        list.extend(their_succs);
        self.set_successors(list, now);
        if closer {
            // A closer successor: ask it at once instead of a period later, so
            // a node that joined with a stale successor walks back to the true
            // one in round trips (each step strictly closer: this ends).
            self.stabilize(now);
        } else if let Some(succ) = self.neighbours.successors.first().copied() {
            self.notify(succ, now);
        }
    }

    pub(super) fn notify(&mut self, to: Peer, now: Instant) {
        let request = RingRequest::Notify {
            predecessor: self.me,
        };
        self.send(to.addr, request, Pending::Notify { to }, now);
    }

    pub(super) fn on_notify(&mut self, p: Peer, now: Instant) {
        if p == self.me {
            return;
        }
        self.neighbours.dead.remove(&p.addr);
        let old = self.neighbours.predecessor;
        let accept = match old {
            None => true,
            Some(pred) => p.id.in_open(pred.id, self.me.id),
        };
        if !accept {
            if old != Some(p) && !self.rounds.checking {
                // Somebody further back thinks we are its successor: is our
                // predecessor still there?
                self.check_predecessor(now);
            }
            return;
        }
        self.neighbours.predecessor = Some(p);
        self.joining.joined = true;
        self.routes.clear();
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
        let handover = self.storage.live_in(from, p.id, now);
        for chunk in batches(&handover) {
            let request = RingRequest::Transfer { items: chunk };
            self.send(p.addr, request, Pending::Push { to: p }, now);
        }
        if self.neighbours.successors.is_empty() {
            // A ring of two.
            self.set_successors(vec![p], now);
            self.notify(p, now);
        }
    }

    pub(super) fn on_leave(
        &mut self,
        leaving: Peer,
        predecessor: Option<Peer>,
        successors: Vec<Peer>,
        now: Instant,
    ) {
        self.neighbours.dead.insert(leaving.addr, now);
        // If the leave was forged, we find it again.
        self.lost.lose(leaving, now);
        if self.neighbours.predecessor.map(|p| p.addr) == Some(leaving.addr) {
            let new = predecessor.filter(|p| *p != self.me && *p != leaving);
            let old = self.neighbours.predecessor;
            self.neighbours.predecessor = new;
            self.routes.clear();
            self.events
                .push_back(RingEvent::PredecessorChanged { old, new });
        }
        if let Some(pos) = self
            .neighbours
            .successors
            .iter()
            .position(|p| p.addr == leaving.addr)
        {
            let mut list: Vec<Peer> = self.neighbours.successors[..pos].to_vec();
            list.extend(successors);
            list.extend(self.neighbours.successors[pos + 1..].iter().copied());
            self.set_successors(list, now);
        }
        for f in self.fingers.table.iter_mut() {
            if f.map(|p| p.addr) == Some(leaving.addr) {
                *f = None;
            }
        }
    }

    pub(super) fn check_predecessor(&mut self, now: Instant) {
        if let Some(pred) = self.neighbours.predecessor {
            self.rounds.checking = true;
            self.send(
                pred.addr,
                RingRequest::Ping,
                Pending::CheckPredecessor { to: pred },
                now,
            );
        }
    }

    pub(super) fn fix_fingers(&mut self, now: Instant) {
        if self.state != State::Active
            || self.neighbours.successors.is_empty()
            || self.rounds.fixing
        {
            return;
        }
        let succ = self.neighbours.successors[0];
        if self.fingers.next == 0 && !self.fingers.burst && !self.fingers.succ_checked {
            // Once per finger cycle: look up our own successor through the
            // farthest finger, not locally. Stabilize alone cannot repair a
            // ring whose successor pointers wind around it twice.
            self.fingers.succ_checked = true;
            let far = self
                .fingers
                .table
                .iter()
                .rev()
                .flatten()
                .find(|f| **f != succ)
                .copied();
            if let Some(to) = far {
                self.rounds.fixing = true;
                let key = self.me.id.add_pow2(0);
                let iterative = self.config.iterative;
                let request = RingRequest::FindSuccessor {
                    key,
                    hops: 1,
                    iterative,
                    reply: None,
                };
                let pending = Pending::Route {
                    key,
                    parent: Parent::SuccessorCheck,
                    hops: 1,
                    iterative,
                    exclude: Vec::new(),
                    attempts: 0,
                    to,
                    reply: None,
                };
                self.send(to.addr, request, pending, now);
                return;
            }
        }
        self.fingers.succ_checked = false;
        let mut i = self.fingers.next;
        while i < ID_BITS as usize && self.fingers.starts[i].in_open_closed(self.me.id, succ.id) {
            self.fingers.table[i] = Some(succ);
            i += 1;
        }
        if i >= ID_BITS as usize {
            self.fingers.next = 0;
            self.fingers.burst = false;
            return;
        }
        self.fingers.next = i;
        self.rounds.fixing = true;
        let key = self.fingers.starts[i];
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

    pub(super) fn finger_found(&mut self, i: usize, found: Option<Peer>, now: Instant) {
        self.rounds.fixing = false;
        let mut j = i + 1;
        if let Some(s) = found {
            if s != self.me {
                self.fingers.table[i] = Some(s);
                while j < ID_BITS as usize
                    && self.fingers.starts[j].in_open_closed(self.me.id, s.id)
                {
                    self.fingers.table[j] = Some(s);
                    j += 1;
                }
            } else {
                self.fingers.table[i] = None;
            }
        }
        if j >= ID_BITS as usize {
            self.fingers.next = 0;
            self.fingers.burst = false;
        } else {
            self.fingers.next = j;
            if self.fingers.burst {
                self.fix_fingers(now);
            }
        }
    }

    /// Is `peer` alive? One probe at a time per peer.
    pub(super) fn probe(&mut self, peer: Peer, now: Instant) {
        let probing = self
            .requests
            .pending
            .values()
            .any(|e| matches!(e.pending, Pending::Probe { to } if to == peer));
        if !probing {
            self.send(
                peer.addr,
                RingRequest::Ping,
                Pending::Probe { to: peer },
                now,
            );
        }
    }

    /// A peer did not answer: forget it everywhere, and fail every other
    /// request waiting on it at once (they go elsewhere).
    pub(super) fn mark_dead(&mut self, peer: Peer, now: Instant) {
        if peer == self.me {
            return;
        }
        self.neighbours.dead.insert(peer.addr, now);
        self.client_lost(peer, now);
        if self.client.is_none() {
            self.lost.lose(peer, now);
        }
        self.fail_pending_to(peer.addr, now);
        // What we stored on it goes to the key's new successor.
        self.republish(Some(peer), now);
        if self.neighbours.predecessor.map(|p| p.addr) == Some(peer.addr) {
            let old = self.neighbours.predecessor.take();
            self.routes.clear();
            self.events
                .push_back(RingEvent::PredecessorChanged { old, new: None });
        }
        for f in self.fingers.table.iter_mut() {
            if f.map(|p| p.addr) == Some(peer.addr) {
                *f = None;
            }
        }
        if self
            .neighbours
            .successors
            .iter()
            .any(|p| p.addr == peer.addr)
        {
            let list: Vec<Peer> = self
                .neighbours
                .successors
                .iter()
                .filter(|p| p.addr != peer.addr)
                .copied()
                .collect();
            self.set_successors(list, now);
            if self.neighbours.successors.is_empty() {
                // Every successor gone: fall back on the nearest finger.
                let mut best: Option<(NodeId, Peer)> = None;
                for f in self.fingers.table.iter().flatten() {
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
    pub(super) fn set_successors(&mut self, list: Vec<Peer>, now: Instant) {
        let dead_memory = DEAD_MEMORY;
        self.neighbours
            .dead
            .retain(|_, t| now.saturating_duration_since(*t) < dead_memory);
        let mut out: Vec<Peer> = Vec::with_capacity(self.config.successors);
        for p in list {
            if p == self.me || self.neighbours.dead.contains_key(&p.addr) || out.contains(&p) {
                continue;
            }
            out.push(p);
            if out.len() == self.config.successors {
                break;
            }
        }
        let old = self.neighbours.successors.first().copied();
        let new = out.first().copied();
        if self.neighbours.successors != out {
            self.routes.clear();
        }
        self.neighbours.successors = out;
        if old != new
            && let Some(new) = new
        {
            self.events
                .push_back(RingEvent::SuccessorChanged { old, new });
        }
    }
}
