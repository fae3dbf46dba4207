//! The response context of one proxied request (RFC 3261 §16.7): its
//! branches, grouped by q-value and tried group after group, and the choice
//! of the best final response.

use std::collections::VecDeque;

use crate::sip::message::{Request, Response};
use crate::sip::transaction::{ClientKey, ServerKey};

use super::Target;

/// A request being forwarded to one or more targets.
pub struct Fork {
    pub server: ServerKey,
    /// The request as received (after Route processing), for building our own responses.
    pub request: Request,
    pub invite: bool,
    /// Groups of targets not tried yet, highest q first.
    pub waiting: VecDeque<Vec<Target>>,
    /// Branches still without a final response.
    pub active: Vec<ClientKey>,
    /// Branches waiting for a host name to resolve.
    pub resolving: usize,
    best: Option<Response>,
    /// A final response went upstream already.
    pub answered: bool,
    /// Its status (0 until then).
    pub status: u16,
    /// Digest credentials for the next hop's 401/407 (the PSTN gateway's).
    pub credentials: Option<p2psip_bridge::digest::Credentials>,
    /// A challenge was answered already: a second one is a failure.
    pub challenged: bool,
    /// A best final response of 486, 408 or 480 is held for the node
    /// instead of sent upstream (voicemail may answer instead).
    pub hold_failures: bool,
}

impl Fork {
    pub fn new(server: ServerKey, request: Request, groups: Vec<Vec<Target>>) -> Fork {
        let invite = request.method == ezk_sip_types::Method::INVITE;
        Fork {
            server,
            request,
            invite,
            waiting: groups.into(),
            active: Vec::new(),
            resolving: 0,
            best: None,
            answered: false,
            status: 0,
            credentials: None,
            challenged: false,
            hold_failures: false,
        }
    }

    /// Records a final non-2xx response (or a synthesised 408/503) of a branch.
    pub fn record_final(&mut self, response: Response) {
        let better = match &self.best {
            None => true,
            Some(best) => rank(response.status) < rank(best.status),
        };
        if better {
            self.best = Some(response);
        }
    }

    /// No branch is active or resolving, in the current group.
    pub fn group_done(&self) -> bool {
        self.active.is_empty() && self.resolving == 0
    }

    /// The response to send upstream once every branch is done (§16.7 step 6).
    pub fn best_response(&mut self) -> Response {
        match self.best.take() {
            Some(mut best) => {
                // A 503 from downstream becomes 500 (RFC 3261 §16.7 step 6);
                // our own, for a next hop DNS did not resolve, stays 503.
                if best.status == 503 && best.reason != super::NOT_RESOLVED {
                    best.status = 500;
                    best.reason = "Server Internal Error".into();
                }
                best
            }
            None => super::own_response(&self.request, 408),
        }
    }

    /// The best so far is a 6xx: no more groups are tried.
    pub fn has_global_failure(&self) -> bool {
        self.best.as_ref().is_some_and(|b| b.status >= 600)
    }
}

/// Lower is better: 6xx first, then the lowest class; within a class the
/// first one received wins.
fn rank(status: u16) -> u16 {
    if status >= 600 { 0 } else { status / 100 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{HeaderAccess, Message, RequestUri};
    use bytes::Bytes;

    fn invite() -> Request {
        let raw = "INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
        match Message::parse(Bytes::from(raw)) {
            Ok(Message::Request(r)) => r,
            _ => panic!("parse"),
        }
    }

    #[test]
    fn picks_the_best_final_response() {
        let req = invite();
        let mut fork = Fork::new(ServerKey(1), req.clone(), vec![]);
        fork.record_final(req.response(486));
        fork.record_final(req.response(404));
        assert_eq!(
            fork.best_response().status,
            486,
            "first of the lowest class"
        );
        fork.record_final(req.response(404));
        fork.record_final(req.response(603));
        assert!(fork.has_global_failure());
        assert_eq!(fork.best_response().status, 603);
        fork.record_final(req.response(503));
        assert_eq!(fork.best_response().status, 500, "503 becomes 500");
        let timeout = fork.best_response();
        assert_eq!(timeout.status, 408, "no response at all");
        let to = timeout.raw(&ezk_sip_types::Name::TO).map(|v| v.to_string());
        assert!(
            to.as_deref().and_then(super::super::raw_tag).is_some(),
            "our own 408 has a To tag: {to:?}"
        );
        let _ = RequestUri::Other("x".into());
    }
}
