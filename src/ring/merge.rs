//! Healing a split ring: the peers this node lost sight of (found dead, or
//! said to have left) are remembered for a while, and once per
//! `merge_every` one of them is asked for the successor of our id + 1. If it
//! answers with a node closer than our successor, it belongs to another part
//! of the ring (or came back): we take it as successor and stabilize, and
//! the parts merge. A peer that answers is forgotten (it is reachable again).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::requests::{Parent, Pending};
use super::{Peer, Ring, RingRequest, RingResponse, State};

/// Lost peers remembered at most.
const MAX_LOST: usize = 32;
/// How long a lost peer is tried again.
const LOST_FOR: Duration = Duration::from_secs(300);

/// Peers we lost sight of, oldest try first.
#[derive(Default)]
pub(super) struct Lost {
    peers: VecDeque<(Peer, Instant)>,
}

impl Lost {
    pub(super) fn lose(&mut self, peer: Peer, now: Instant) {
        if self.peers.iter().any(|(p, _)| *p == peer) {
            return;
        }
        if self.peers.len() >= MAX_LOST {
            self.peers.pop_front();
        }
        self.peers.push_back((peer, now));
    }

    pub(super) fn found(&mut self, peer: Peer) {
        self.peers.retain(|(p, _)| *p != peer);
    }

    /// The next peer to try (it goes to the back of the queue).
    fn next(&mut self, now: Instant) -> Option<Peer> {
        self.peers
            .retain(|(_, at)| now.saturating_duration_since(*at) < LOST_FOR);
        let (peer, at) = self.peers.pop_front()?;
        self.peers.push_back((peer, at));
        Some(peer)
    }

    pub(super) fn len(&self) -> usize {
        self.peers.len()
    }
}

impl Ring {
    /// Ask one lost peer where our successor is.
    pub(super) fn merge_check(&mut self, now: Instant) {
        if self.state != State::Active || !self.joining.joined {
            return;
        }
        let Some(to) = self.lost.next(now) else {
            return;
        };
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
            parent: Parent::MergeCheck(to),
            hops: 1,
            iterative,
            exclude: Vec::new(),
            attempts: 0,
            to,
            reply: None,
        };
        self.send(to.addr, request, pending, now);
    }

    /// A lost peer answered the merge check.
    pub(super) fn merge_answer(&mut self, asked: Peer, response: RingResponse, now: Instant) {
        let RingResponse::Found { successor, .. } = response else {
            return;
        };
        self.lost.found(asked);
        let succ = self.successor();
        let closer =
            self.neighbours.successors.is_empty() || successor.id.in_open(self.me.id, succ.id);
        if successor == self.me || !closer {
            return;
        }
        if self.neighbours.dead.contains_key(&successor.addr) {
            // Taken for dead across the cut: ask it (its answer adopts it).
            return self.probe(successor, now);
        }
        let mut list = vec![successor];
        list.extend(self.neighbours.successors.iter().copied());
        self.set_successors(list, now);
        if self.rounds.stabilizing {
            self.rounds.restabilize = true;
        } else {
            self.stabilize(now);
        }
    }
}
