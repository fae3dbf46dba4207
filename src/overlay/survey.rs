//! The overlay's side of the operator's ring walks and look-ups
//! ([`walk`](super::walk)): it starts them, sends their questions as its own
//! ring requests (signed, or over member TLS), answers those addressed to
//! itself from its own state, and hands their answers back; and it
//! measures the load its GetPredecessor answers carry ([`load`](super::load)).

use std::time::Instant;

use super::{Overlay, load, walk, wire};
use crate::outbox::Outbox;
use crate::ring::NodeId;
use crate::sip::message::{HeaderAccess, Response};
use crate::sip::transaction::ClientKey;

impl Overlay {
    /// Starts walking the ring from this node, as a member, for the
    /// operator; the report comes from [`poll_surveyed`](Self::poll_surveyed)
    /// with `id`. `false`: too many surveys run already.
    pub fn start_walk(&mut self, id: u64, out: &mut Outbox, now: Instant) -> bool {
        let started = self.surveys.walk(id, self.ring.me().addr);
        self.pump(out, now);
        started
    }

    /// Starts looking `key` up for the operator: its holders, the hops,
    /// the items (see [`start_walk`](Self::start_walk)).
    pub fn start_lookup(&mut self, id: u64, key: NodeId, out: &mut Outbox, now: Instant) -> bool {
        let replicas = self.ring.config().replicas;
        let started = self.surveys.lookup(id, key, replicas);
        self.pump(out, now);
        started
    }

    /// A finished walk or look-up.
    pub fn poll_surveyed(&mut self) -> Option<(u64, walk::Report)> {
        self.surveys.poll_done()
    }

    /// This node's load (measured at most every few seconds).
    pub fn load(&mut self, now: Instant) -> load::Load {
        let role = match self.gateways {
            Some(_) => load::Role::Gateway,
            None => load::Role::Node,
        };
        let ring = &self.ring;
        self.load.load(now, self.counters.requests_in, role, || {
            let status = ring.status();
            (
                status.items_primary as u64,
                status.items_replica as u64,
                status.pending_requests as u64,
            )
        })
    }

    /// Moves the surveys on: their questions go out (or are answered here
    /// when they ask this node). Whether any moved.
    pub(super) fn drive_surveys(&mut self, out: &mut Outbox, now: Instant) -> bool {
        let mut busy = false;
        while let Some((id, step)) = self.surveys.next_step() {
            busy = true;
            match step {
                walk::Step::Ask(to, request) if to == self.ring.me().addr => {
                    let answer = self.answer_here(&request, now);
                    self.surveys.answered(None, Some(id), answer);
                }
                walk::Step::Ask(to, request) => {
                    let key = self.send_request(to, &request, out, now);
                    self.surveys.sent(id, key, now);
                }
                walk::Step::Route(key) => {
                    let op = self.ring.lookup(key, now);
                    self.surveys.routing(id, op);
                }
                walk::Step::Wait | walk::Step::Done => {}
            }
        }
        busy
    }

    /// A survey's question to this node itself, answered from its own state.
    fn answer_here(&mut self, request: &crate::ring::RingRequest, now: Instant) -> walk::Answer {
        use crate::ring::{RingRequest, RingResponse};
        match request {
            RingRequest::GetPredecessor => Ok((
                RingResponse::Predecessor {
                    predecessor: self.ring.predecessor(),
                    successors: self.ring.successors().to_vec(),
                },
                Some(self.load(now)),
            )),
            RingRequest::Fetch { key } => {
                let items = self
                    .ring
                    .local_items(*key)
                    .into_iter()
                    .filter(|i| i.expires > now)
                    .collect();
                Ok((RingResponse::Items { items }, None))
            }
            other => Err(format!("not asked of oneself: {other:?}")),
        }
    }

    /// The answer to a survey's question.
    pub(super) fn survey_answered(
        &mut self,
        key: ClientKey,
        response: &Response,
        out: &mut Outbox,
        now: Instant,
    ) {
        if response.status < 200 {
            return;
        }
        let answer = match &mut self.admission {
            Some(admission) => admission
                .check_response(response, now)
                .map_err(|why| format!("not signed by a member: {why}")),
            None => Ok(()),
        }
        .and_then(|()| {
            wire::decode_response(response, now)
                .map_err(|e| format!("answered {} {}: {e}", response.status, response.reason))
        })
        .map(|ring_response| {
            let load = response
                .raw(&ezk_sip_types::Name::from(load::HEADER))
                .and_then(|v| load::Load::parse(v.as_str()));
            (ring_response, load)
        });
        self.surveys.answered(Some(key), None, answer);
        self.pump(out, now);
    }
}
