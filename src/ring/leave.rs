//! Graceful leave: hand every item to the successor (the next one when it
//! fails), tell the predecessor and successor, and end in
//! [`RingEvent::Left`](super::RingEvent::Left) once all of that is answered.

use std::net::SocketAddr;
use std::time::Instant;

use super::ops::Op;
use super::requests::Pending;
use super::storage::batches;
use super::{OpId, Peer, Ring, RingError, RingEvent, RingRequest, State};

/// A graceful leave under way.
#[derive(Default)]
pub(super) struct Leaving {
    /// Leave requests not yet answered.
    pub(super) pending: usize,
    /// Successors we tried to hand our items to.
    pub(super) tried: Vec<SocketAddr>,
}

impl Ring {
    /// Hand everything to the successor, tell the neighbours, then
    /// [`RingEvent::Left`].
    pub fn leave(&mut self, now: Instant) {
        if self.state != State::Active {
            return;
        }
        self.state = State::Leaving;
        let Some(succ) = self.neighbours.successors.first().copied() else {
            self.state = State::Left;
            self.events.push_back(RingEvent::Left);
            return;
        };
        self.hand_over(succ, now);
        if let Some(pred) = self.neighbours.predecessor
            && pred != succ
            && pred != self.me
        {
            let notice = self.leave_notice();
            self.leaving.pending += 1;
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

    pub(super) fn leave_notice(&self) -> RingRequest {
        RingRequest::Leave {
            leaving: self.me,
            predecessor: self.neighbours.predecessor,
            successors: self.neighbours.successors.clone(),
        }
    }

    /// Transfer all items to `succ` and tell it we leave.
    pub(super) fn hand_over(&mut self, succ: Peer, now: Instant) {
        self.leaving.tried.push(succ.addr);
        // The arc (me, me] is the whole circle: everything live.
        let items = self.storage.live_in(self.me.id, self.me.id, now);
        let pending = Pending::Leave {
            to: succ,
            handover: true,
        };
        for chunk in batches(&items) {
            let request = RingRequest::Transfer { items: chunk };
            self.leaving.pending += 1;
            self.send(succ.addr, request, pending.clone(), now);
        }
        let notice = self.leave_notice();
        self.leaving.pending += 1;
        self.send(succ.addr, notice, pending, now);
    }

    /// A hand-over failed (the successor is gone or leaving too): hand over to
    /// the next successor we have not tried.
    pub(super) fn hand_over_failed(&mut self, to: Peer, now: Instant) {
        if self.leaving.tried.last() != Some(&to.addr) {
            return; // already moved on
        }
        let next = self
            .neighbours
            .successors
            .iter()
            .find(|p| !self.leaving.tried.contains(&p.addr))
            .copied();
        if let Some(next) = next {
            self.hand_over(next, now);
        }
    }

    pub(super) fn leave_step(&mut self) {
        self.leaving.pending = self.leaving.pending.saturating_sub(1);
        if self.leaving.pending == 0 && self.state == State::Leaving {
            self.state = State::Left;
            // Not journaled: the copy on disk is read back at the next
            // start, and the ring's versions sort out what is stale.
            self.storage.items.clear();
            let mut ops: Vec<(u64, Op)> =
                std::mem::take(&mut self.ops.running).into_iter().collect();
            ops.sort_by_key(|(id, _)| *id);
            for (id, op) in ops {
                self.finish_op(OpId(id), &op.kind, Err(RingError::Left));
            }
            self.requests.pending.clear();
            self.requests.deadlines.clear();
            self.events.push_back(RingEvent::Left);
        }
    }
}
