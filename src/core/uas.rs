//! The 200s of the calls the node answers itself (voicemail, listening,
//! conferences): sent, re-sent until the caller's ACK (RFC 3261
//! §13.3.1.4, [`crate::sip::uas`]), and the call ended with a BYE when no
//! ACK came within 64·T1.

use std::time::Instant;

use ezk_sip_types::Name;
use tracing::{debug, warn};

use super::{Core, Output};
use crate::sip::message::{HeaderAccess, Request, Response};
use crate::sip::transaction::ServerKey;
use crate::voicemail::MediaCall;

impl Core {
    /// Sends `response` (a 200 to `invite` on `key`) and keeps it to send
    /// again until the ACK.
    pub(super) fn answer_call(
        &mut self,
        key: ServerKey,
        invite: &Request,
        response: Response,
        call: MediaCall,
        now: Instant,
    ) {
        let peer = self.out.transactions.peer_of(key);
        let call_id = invite.raw(&Name::CALL_ID).map(|v| v.trim().to_string());
        if let (Some(peer), Some(call_id), Ok(cseq)) = (peer, call_id, invite.cseq()) {
            let bytes = response.to_bytes();
            self.answers
                .answered(call, invite.clone(), &call_id, cseq.cseq, peer, bytes, now);
        }
        self.out.respond(key, response, now);
    }

    /// An ACK inside a call the node answered: its 200 is no longer sent.
    pub(super) fn on_answer_acked(&mut self, ack: &Request) {
        let call_id = ack.raw(&Name::CALL_ID).map(|v| v.trim().to_string());
        if let (Some(call_id), Ok(cseq)) = (call_id, ack.cseq()) {
            self.answers.acked(&call_id, cseq.cseq);
        }
    }

    /// The call with this Call-ID ended (a BYE): nothing more to re-send.
    pub(super) fn answer_ended(&mut self, call_id: &str) {
        self.answers.forget(call_id.trim());
    }

    /// The 200s due again now, and the calls whose ACK never came: each
    /// gets a BYE and its media ends.
    pub(super) fn answers_due(&mut self, now: Instant) {
        let due = self.answers.handle_timeout(now);
        for (peer, bytes) in due.resend {
            self.out.raw(peer, bytes);
        }
        for given_up in due.given_up {
            let call = given_up.call;
            let call_id = given_up.call_id;
            warn!(%call_id, "no ACK for the node's 200 within 64·T1: hanging up");
            self.voicemail.take_dialog(call);
            let branch = self.out.new_branch();
            match crate::voicemail::hangup::bye(&given_up.invite, self.config.local, branch) {
                Some((bye, peer)) => {
                    self.out
                        .request(crate::outbox::owner::VOICEMAIL, bye, peer, now);
                }
                None => debug!("no way back to the caller: no BYE sent"),
            }
            if let Some(call) = self.voicemail.hang_up(&call_id) {
                self.outputs.push_back(Output::EndMedia { call });
            } else if let Some(call) = self.voicemail.stop_listening(&call_id) {
                self.outputs.push_back(Output::EndMedia { call });
            } else if let Some((seat, last)) = self.conference.leave(&call_id) {
                self.outputs.push_back(Output::LeaveConference {
                    room: seat.room.as_str().to_string(),
                    call: seat.call,
                    last,
                });
            }
        }
    }
}
