//! The core's side of conferences ([`crate::conference`]): an INVITE to a
//! room is taken here instead of being looked up as a user. The room's
//! focus is the responsible node of the room's key (`NodeId::of_key` of
//! its address, the key a user of that name would have): a node that is
//! not responsible for it looks the key's successor up in the ring and
//! forwards the INVITE there (a Route to that node, the Request-URI
//! unchanged, this node in the Record-Route as for any call); the focus
//! takes an INVITE it is responsible for, or that another member of the
//! ring forwarded (so two nodes that disagree for a moment about the ring
//! cannot bounce it). At the focus: 488 without G.711, 486 when full,
//! otherwise an RTP socket from `[conference] port_range`, 200 with the
//! SDP answer and `Contact: <sip:ROOM@FOCUS>`, and the participant joins
//! the room's mixer in the driver. BYE leaves; the last to leave ends the
//! room. This module only moves things between the component, the ring,
//! the proxy and the driver's media.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use ezk_sip_types::{Method, Name};
use tracing::{debug, info};

use super::checks::{local_response, refusal};
use super::routing::Routed;
use super::{Core, Output};
use crate::media::sdp;
use crate::outbox::owner;
use crate::proxy::Target;
use crate::registrar::binding::Aor;
use crate::ring::{NodeId, OpId, RingError};
use crate::sip::message::{HeaderAccess, Request};
use crate::sip::transaction::{Peer, ServerKey};
use crate::voicemail::MediaCall;

impl Core {
    /// The room an INVITE is for, when it is for one.
    pub(super) fn conference_room(&self, request: &Request) -> Option<Aor> {
        if request.method != Method::INVITE || !self.conference.config.enabled {
            return None;
        }
        match self.route_target(request) {
            Routed::Local {
                aor,
                then_dns: false,
            } if self.conference.room(&aor).is_some() => Some(aor),
            _ => None,
        }
    }

    /// An INVITE to `room`: taken here when this node is its focus,
    /// otherwise the focus is looked up in the ring.
    pub(super) fn conference_call(
        &mut self,
        key: ServerKey,
        request: Request,
        from: Peer,
        room: Aor,
        now: Instant,
    ) {
        let forwarded = self.sender(from).member;
        if let Some(overlay) = self.location.overlay()
            && !forwarded
        {
            let id = NodeId::of_key(room.as_str());
            let ring = overlay.ring();
            let me = ring.me();
            let mine = match ring.predecessor() {
                Some(p) => id.in_open_closed(p.id, me.id),
                None => overlay.is_alone(),
            };
            if !mine {
                let op = overlay.lookup_for(owner::CONFERENCE, id, now);
                debug!(%room, "looking up the room's focus");
                return self.conference.looking(op, key, request, room);
            }
        }
        self.focus(key, request, room, now);
    }

    /// The room's focus was looked up: take the INVITE, forward it there,
    /// or 503.
    pub(super) fn on_focus_found(
        &mut self,
        op: OpId,
        result: Result<crate::ring::Peer, RingError>,
        now: Instant,
    ) {
        let Some((key, request, room)) = self.conference.found(op) else {
            return;
        };
        if self.cancelled.remove(&key) {
            return;
        }
        let me = self.me().map(|p| p.addr);
        match result {
            Ok(peer) if Some(peer.addr) == me => self.focus(key, request, room, now),
            Ok(peer) => {
                info!(%room, focus = %peer.addr, "INVITE forwarded to the room's focus");
                let target = Target {
                    uri: request.uri.clone(),
                    route: vec![format!("<sip:{};lr>", peer.addr)],
                    via_connection: None,
                    behind_nat: false,
                };
                self.proxy
                    .forward(key, request, vec![vec![target]], &mut self.out, now);
            }
            Err(error) => {
                debug!(%error, %room, "the room's focus could not be found");
                let reason = "Service Unavailable (the room's focus could not be found)";
                self.out.respond(key, refusal(&request, 503, reason), now);
            }
        }
    }

    /// This node is the room's focus: 488, 486, or open an RTP socket.
    fn focus(&mut self, key: ServerKey, request: Request, room: Aor, now: Instant) {
        let offer = match sdp::parse_offer(&request.body) {
            Ok(offer) => offer,
            Err(error) => {
                debug!(%error, %room, "conference call refused");
                let reason = format!("Not Acceptable Here ({error})");
                return self.out.respond(key, refusal(&request, 488, reason), now);
            }
        };
        if let Some(why) = self.conference.refusal(&room) {
            info!(status = why.status, %room, "conference call refused: {}", why.reason);
            return self
                .out
                .respond(key, refusal(&request, why.status, why.reason), now);
        }
        let call = self.conference.admit(key, request, room, offer);
        let ports = self.conference.config.ports;
        self.outputs.push_back(Output::OpenMedia { call, ports });
    }

    /// Whether an RTP socket was asked for a conference participant.
    pub(super) fn is_conference_media(&self, call: MediaCall) -> bool {
        self.conference.is_opening(call)
    }

    /// The participant's RTP socket is open (or not): 200 with the SDP
    /// answer and she joins the mixer, or 503.
    pub(super) fn on_conference_opened(
        &mut self,
        call: MediaCall,
        local: Option<SocketAddr>,
        now: Instant,
    ) {
        let Some(pending) = self.conference.opened(call, local.is_some()) else {
            return;
        };
        let Some(local) = local else {
            let reason = "Service Unavailable (no RTP port free)";
            return self
                .out
                .respond(pending.key, refusal(&pending.request, 503, reason), now);
        };
        let session = self.out.seed() ^ call.0;
        let answer = sdp::answer(&pending.offer, local, session >> 1);
        let mut response = local_response(&pending.request, 200);
        let user = pending
            .room
            .as_str()
            .rsplit_once('@')
            .map_or(pending.room.as_str(), |(u, _)| u)
            .to_string();
        response
            .headers
            .insert(Name::CONTACT, format!("<sip:{user}@{}>", self.config.local));
        response
            .headers
            .insert(Name::CONTENT_TYPE, "application/sdp");
        response.body = Bytes::from(answer);
        let pin = self.conference.room(&pending.room).flatten();
        let ssrc = (session >> 32) as u32 ^ session as u32;
        info!(room = %pending.room, call = call.0, %local, remote = %pending.offer.remote,
            participants = self.conference.participants(&pending.room), "joined the conference");
        self.answer_call(pending.key, &pending.request, response, call, now);
        self.outputs.push_back(Output::JoinConference {
            room: pending.room.as_str().to_string(),
            call,
            offer: pending.offer,
            ssrc,
            pin,
        });
    }

    /// Whether a request belongs to a participant of a room here.
    pub(super) fn in_conference_call(&self, request: &Request) -> bool {
        request
            .raw(&Name::CALL_ID)
            .is_some_and(|id| self.conference.seat(id).is_some())
    }

    /// A request inside a participant's dialog: BYE leaves the room (the
    /// last one ends it); the ACK is absorbed; anything else gets 501.
    pub(super) fn conference_request(&mut self, key: ServerKey, request: Request, now: Instant) {
        if request.method == Method::ACK {
            return self.on_answer_acked(&request);
        }
        if request.method != Method::BYE {
            let reason = "Not Implemented (only BYE inside a conference call)";
            return self.out.respond(key, refusal(&request, 501, reason), now);
        }
        let call_id = request
            .raw(&Name::CALL_ID)
            .map(|v| v.to_string())
            .unwrap_or_default();
        self.answer_ended(&call_id);
        if let Some((seat, last)) = self.conference.leave(&call_id) {
            info!(room = %seat.room, call = seat.call.0, last, "left the conference");
            self.outputs.push_back(Output::LeaveConference {
                room: seat.room.as_str().to_string(),
                call: seat.call,
                last,
            });
        }
        self.out.respond(key, local_response(&request, 200), now);
    }
}
