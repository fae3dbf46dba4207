//! The core's side of voicemail ([`crate::voicemail`]): an INVITE for a
//! user without a live binding is handed here instead of getting 404/480
//! when `[voicemail] enabled`; the ACK and BYE of an answered call stop
//! here; the recording's items go to the ring. This module only moves
//! things between the component, the ring, the transactions and the
//! driver's media.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use ezk_sip_types::{Method, Name};
use tracing::{debug, info};

use super::checks::{local_response, refusal};
use super::{Core, Output};
use crate::media::sdp::{self, SdpError};
use crate::outbox::owner;
use crate::registrar::binding::Aor;
use crate::ring::{Item, NodeId, OpId, RingError};
use crate::sip::message::{HeaderAccess, Request};
use crate::sip::transaction::ServerKey;
use crate::voicemail::{Decision, MediaCall};

impl Core {
    /// Whether voicemail takes an INVITE for an absent user.
    pub(super) fn voicemail_takes(&self, request: &Request) -> bool {
        request.method == Method::INVITE && self.voicemail.config.enabled
    }

    /// An INVITE for `aor`, who has no live binding: 488 without G.711 in
    /// the offer; otherwise look under her key whether she is known and
    /// how much is stored. Without a ring: 404/480 as before (`absent`).
    pub(super) fn voicemail_call(
        &mut self,
        key: ServerKey,
        request: Request,
        aor: &Aor,
        absent: u16,
        now: Instant,
    ) {
        let offer = match sdp::parse_offer(&request.body) {
            Ok(offer) => offer,
            Err(error @ (SdpError::NoCodec | SdpError::NoAudio | SdpError::TooLong)) => {
                debug!(%error, %aor, "voicemail call refused");
                let reason = format!("Not Acceptable Here ({error})");
                return self.out.respond(key, refusal(&request, 488, reason), now);
            }
            Err(SdpError::Missing) => {
                // An offer in the ACK is not taken in this slice.
                let reason = "Not Acceptable Here (an SDP offer in the INVITE is needed)";
                return self.out.respond(key, refusal(&request, 488, reason), now);
            }
        };
        let Some(overlay) = self.location.overlay() else {
            return self.out.respond(key, local_response(&request, absent), now);
        };
        let op = overlay.fetch_items(owner::VOICEMAIL, NodeId::of_key(aor.as_str()), now);
        self.voicemail.looking(op, key, request, aor.clone(), offer);
    }

    /// The items under the callee's key: 404, 486, or open an RTP socket.
    pub(super) fn on_voicemail_fetched(
        &mut self,
        op: OpId,
        result: Result<Vec<Item>, RingError>,
        now: Instant,
    ) {
        if self.is_mailbox_fetch(op) {
            return self.on_mailbox_fetched(op, result, now);
        }
        if let Err(error) = &result {
            debug!(%error, "could not read the callee's items");
        }
        let items = result.ok();
        let Some((key, request, decision)) = self.voicemail.fetched(op, items.as_deref(), now)
        else {
            return;
        };
        // A diverted call voicemail cannot take: the callee's failure.
        let fallback = self.voicemail.take_fallback(key);
        if self.cancelled.remove(&key) {
            return;
        }
        if let Some(failure) = fallback
            && !matches!(decision, Some(Decision::Open(_)))
        {
            return self.out.respond(key, failure, now);
        }
        match decision {
            None => self
                .out
                .respond(key, refusal(&request, 503, "Service Unavailable"), now),
            Some(Decision::Unknown) => self.out.respond(key, local_response(&request, 404), now),
            Some(Decision::Full(reason)) => {
                self.out.respond(key, refusal(&request, 486, reason), now)
            }
            Some(Decision::Open(call)) => {
                let ports = self.voicemail.config.ports;
                self.outputs.push_back(Output::OpenMedia { call, ports });
            }
        }
    }

    /// The RTP socket is open (or not): answer 200 with the SDP answer and
    /// start the media, or 503.
    pub(super) fn on_media_opened(
        &mut self,
        call: MediaCall,
        local: Option<SocketAddr>,
        now: Instant,
    ) {
        if self.voicemail.is_listen_opening(call) {
            return self.on_listen_opened(call, local, now);
        }
        let Some((key, request, offer)) = self.voicemail.opened(call) else {
            return;
        };
        let cancelled = self.cancelled.remove(&key);
        if local.is_none() || cancelled {
            let call_id = request.raw(&Name::CALL_ID).map(|v| v.to_string());
            if let Some(call_id) = call_id {
                self.voicemail.forget(&call_id);
            }
        }
        if cancelled {
            // The caller gave up meanwhile (answered 487 already).
            self.outputs.push_back(Output::EndMedia { call });
            return;
        }
        let Some(local) = local else {
            return self.out.respond(
                key,
                refusal(&request, 503, "Service Unavailable (no RTP port free)"),
                now,
            );
        };
        let (response, ssrc) = self.media_answer(&request, &offer, local, call);
        let recording = self.voicemail.recording(offer, ssrc, now);
        info!(call = call.0, %local, remote = %recording.remote(), "voicemail call answered");
        self.answer_call(key, &request, response, call, now);
        self.outputs.push_back(Output::StartMedia {
            call,
            recording: Box::new(recording),
        });
    }

    /// The 200 answering a call the node takes itself, with the SDP
    /// answer for the RTP socket at `local`, and the SSRC of its stream.
    pub(super) fn media_answer(
        &mut self,
        request: &Request,
        offer: &crate::media::sdp::Offer,
        local: SocketAddr,
        call: MediaCall,
    ) -> (crate::sip::message::Response, u32) {
        let session = self.out.seed() ^ call.0;
        let answer = sdp::answer(offer, local, session >> 1);
        let mut response = local_response(request, 200);
        response.headers.insert(
            Name::CONTACT,
            format!("<sip:voicemail@{}>", self.config.local),
        );
        response
            .headers
            .insert(Name::CONTENT_TYPE, "application/sdp");
        response.body = Bytes::from(answer);
        (response, (session >> 32) as u32)
    }

    /// Sends the BYE of `call`'s dialog, when it is still up.
    pub(super) fn hang_up_caller(&mut self, call: MediaCall, now: Instant) {
        let Some(invite) = self.voicemail.take_dialog(call) else {
            return;
        };
        if let Some(call_id) = invite.raw(&Name::CALL_ID) {
            self.answers.forget(call_id.trim());
        }
        let branch = self.out.new_branch();
        match crate::voicemail::hangup::bye(&invite, self.config.local, branch) {
            Some((bye, peer)) => {
                self.out.request(owner::VOICEMAIL, bye, peer, now);
            }
            None => debug!("no way back to the caller: no BYE sent"),
        }
    }

    /// Whether a request belongs to a call this node answered.
    pub(super) fn in_voicemail_call(&self, request: &Request) -> bool {
        request
            .raw(&Name::CALL_ID)
            .is_some_and(|id| self.voicemail.call_of(id).is_some())
    }

    /// A request inside a voicemail call: BYE ends the media; anything
    /// else (re-INVITE, INFO, ...) is refused in this slice.
    pub(super) fn voicemail_request(&mut self, key: ServerKey, request: Request, now: Instant) {
        if request.method == Method::ACK {
            // Never answered (RFC 3261 §17.2.3); the 2xx's ACK ends here.
            return self.on_answer_acked(&request);
        }
        if request.method != Method::BYE {
            let reason = "Not Implemented (only BYE inside a voicemail call)";
            return self.out.respond(key, refusal(&request, 501, reason), now);
        }
        let call_id = request
            .raw(&Name::CALL_ID)
            .map(|v| v.to_string())
            .unwrap_or_default();
        self.answer_ended(&call_id);
        if let Some(call) = self.voicemail.hang_up(&call_id) {
            self.outputs.push_back(Output::EndMedia { call });
        } else if let Some(call) = self.voicemail.stop_listening(&call_id) {
            self.outputs.push_back(Output::EndMedia { call });
        }
        self.out.respond(key, local_response(&request, 200), now);
    }

    /// The media ended: store the recording's parts (the index follows
    /// once they are all stored).
    pub(super) fn on_recorded(&mut self, call: MediaCall, samples: &[i16], now: Instant) {
        let wall_ms = self.messages.wall_ms(now);
        let date = crate::messages::date::http_date(wall_ms / 1000);
        let (stored, still_up) = self.voicemail.recorded(call, samples, wall_ms, date, now);
        if let Some(call_id) = still_up {
            info!(%call_id, "voicemail recording ended with the call up: hanging up");
            self.hang_up_caller(call, now);
        }
        let Some(crate::voicemail::ToStore {
            serial,
            index,
            parts,
        }) = stored
        else {
            return;
        };
        info!(name = %index.name, samples = samples.len(), parts = parts.len(), "voicemail recorded");
        let Some(overlay) = self.location.overlay() else {
            return;
        };
        let ops: Vec<OpId> = parts
            .into_iter()
            .map(|part| overlay.store_item_for(owner::VOICEMAIL, part, now))
            .collect();
        for op in ops {
            self.voicemail.storing(op, serial);
        }
    }

    /// A store of this component done: after the last part, the index;
    /// once the index is stored, her message-summary watchers are told.
    pub(super) fn on_voicemail_stored(&mut self, op: OpId, stored: bool, now: Instant) {
        if let Some(aor) = self.voicemail.index_stored(op) {
            if stored {
                self.presence.changed(&aor, now);
            }
            return;
        }
        if let Some((index, aor)) = self.voicemail.stored(op, stored)
            && let Some(overlay) = self.location.overlay()
        {
            let op = overlay.store_item_for(owner::VOICEMAIL, index, now);
            self.voicemail.storing_index(op, aor);
        }
    }
}
