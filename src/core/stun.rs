//! STUN on the SIP ports, in the core's input path: after the admission
//! checks (limits per source apply to STUN as to SIP), a STUN message gets
//! its answer from [`crate::sip::stun`], over the transport it came on, and
//! is counted; a malformed one is dropped and counted.

use std::time::Instant;

use bytes::Bytes;
use tracing::debug;

use super::Core;
use crate::metrics::StunLabels;
use crate::sip::stun::{self, Answer};
use crate::sip::transaction::{Peer, TransportKind};

impl Core {
    /// A STUN message from `from`, already admitted.
    pub(super) fn on_stun(&mut self, bytes: &[u8], from: Peer, _now: Instant) {
        let local = match (from.transport, self.config.sips) {
            (TransportKind::Tls, Some(sips)) => sips,
            _ => self.config.local,
        };
        let outcome = match stun::answer(bytes, from.addr, local) {
            Ok(Answer::Binding(reply)) => {
                self.out.raw(from, Bytes::from(reply));
                "answered"
            }
            Ok(Answer::Refusal { status, bytes }) => {
                debug!(status, from = %from.addr, "STUN request refused");
                self.out.raw(from, Bytes::from(bytes));
                "refused"
            }
            Ok(Answer::Nothing) => "ignored",
            Err(error) => {
                debug!(%error, from = %from.addr, "malformed STUN dropped");
                "malformed"
            }
        };
        self.metrics
            .stun
            .get_or_create(&StunLabels { outcome })
            .inc();
    }
}
