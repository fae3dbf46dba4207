//! The hand-over of a call to voicemail when its callee does not take it
//! (issue 12): the one decision point between the proxy, which forks the
//! INVITE to her contacts and holds back a final 486/408/480, and
//! voicemail, which answers instead. The state and the clock's part are
//! [`crate::voicemail::diversion`]; this module only moves the call.

use std::time::Instant;

use tracing::info;

use super::Core;
use crate::media::sdp;
use crate::proxy::Target;
use crate::registrar::binding::Aor;
use crate::sip::message::{Request, Response};
use crate::sip::transaction::ServerKey;

/// Why voicemail takes a call its callee's phones were offered.
enum Cause {
    /// No contact answered within `no_answer_s`: the branches are cancelled.
    NoAnswer,
    /// Every branch failed; the proxy's best answer, sent instead should
    /// voicemail refuse the call.
    Failed(Response),
}

impl Core {
    /// Forwards an INVITE to `aor`'s contacts; voicemail may take it later
    /// when it is on, the ring holds mailboxes, the call is a new one and
    /// its offer is one voicemail can answer.
    pub(super) fn forward_to_user(
        &mut self,
        key: ServerKey,
        request: Request,
        aor: &Aor,
        groups: Vec<Vec<Target>>,
        now: Instant,
    ) {
        let divertible = self.voicemail_takes(&request)
            && self.overlay().is_some()
            && crate::proxy::to_tag(&request).is_none()
            && sdp::parse_offer(&request.body).is_ok()
            && self
                .diversions
                .watch(key, request.clone(), aor.clone(), now);
        if divertible {
            self.proxy
                .forward_holding_failures(key, request, groups, &mut self.out, now);
        } else {
            self.proxy.forward(key, request, groups, &mut self.out, now);
        }
    }

    /// The proxy held back a fork's final failure: voicemail answers
    /// instead (486, 408, 480 of a watched call), or it goes upstream.
    pub(super) fn on_held(&mut self, key: ServerKey, failure: Response, now: Instant) {
        match self.diversions.on_failure(key, failure.status) {
            Some((request, aor)) => self.divert(key, request, aor, Cause::Failed(failure), now),
            None => self.out.respond(key, failure, now),
        }
    }

    /// No-answer deadlines that are up: the branches are cancelled and
    /// voicemail answers.
    pub(super) fn diversions_due(&mut self, now: Instant) {
        for (key, request, aor) in self.diversions.due(now) {
            if self.proxy.take_over(key, &mut self.out, now) {
                self.divert(key, request, aor, Cause::NoAnswer, now);
            }
        }
    }

    /// A fork ended by itself (2xx, 6xx, CANCEL, a failure relayed): its
    /// call is no longer voicemail's to take.
    pub(super) fn fork_ended(&mut self, key: ServerKey) {
        self.diversions.ended(key);
    }

    /// The decision made: voicemail answers the INVITE as it arrived (the
    /// caller's own offer), with the callee's failure to fall back on.
    fn divert(&mut self, key: ServerKey, request: Request, aor: Aor, cause: Cause, now: Instant) {
        let why = match &cause {
            Cause::NoAnswer => "no answer".to_string(),
            Cause::Failed(failure) => failure.status.to_string(),
        };
        info!(%aor, cause = %why, "call diverted to voicemail");
        if let Cause::Failed(failure) = cause {
            self.voicemail.fall_back(key, failure);
        }
        self.voicemail_call(key, request, &aor, 480, now);
    }
}
