//! Keep-alives for phones behind NAT that do not do SIP Outbound
//! (Kamailio nathelper's `natping` with `sipping`): the node that accepted
//! such a phone's REGISTER over UDP sends it an OPTIONS every
//! `[registrar] natping_s`, to the NAT's mapping the REGISTER came from,
//! so the mapping stays open for calls to the phone. Outbound flows keep
//! themselves alive (CRLF, STUN); TCP and TLS connections need no ping.
//! Sans-I/O: which phones, and when; the core writes the OPTIONS.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::binding::{Aor, Binding};
use crate::sip::transaction::{Peer, TransportKind};

/// Phones pinged at most (beyond, new ones are not).
pub const MAX_PHONES: usize = 100_000;

/// The phones to ping and the next round.
#[derive(Debug, Default)]
pub struct NatPing {
    every: Option<Duration>,
    /// `(AOR, contact)` → the mapping, until when the binding lives, and
    /// the Call-ID of the phone's REGISTERs.
    phones: HashMap<(Aor, String), (Peer, Instant, String)>,
    next: Option<Instant>,
}

impl NatPing {
    /// Pings every `every`; `None`: never.
    pub fn new(every: Option<Duration>) -> NatPing {
        NatPing {
            every,
            ..NatPing::default()
        }
    }

    /// `aor`'s bindings after this node accepted the REGISTER `(Call-ID,
    /// CSeq)`: those it registered behind NAT, over UDP and without
    /// Outbound, are pinged from now on; those of the same phone (its
    /// Call-ID) it removed are no longer.
    pub fn registered(
        &mut self,
        aor: &Aor,
        bindings: &[Binding],
        (call_id, cseq): (&str, u32),
        now: Instant,
    ) {
        let Some(every) = self.every else {
            return;
        };
        self.phones
            .retain(|(a, _), (_, _, id)| a != aor || id != call_id);
        for b in bindings {
            let Some(source) = b.source else { continue };
            let ours = b.call_id == call_id && b.cseq == cseq;
            let pinged = b.behind_nat && b.flow.is_none() && source.transport == TransportKind::Udp;
            if ours && pinged && b.is_live(now) && self.phones.len() < MAX_PHONES {
                let entry = (source, b.expires_at, b.call_id.clone());
                self.phones.insert((aor.clone(), b.contact.clone()), entry);
            }
        }
        if !self.phones.is_empty() && self.next.is_none() {
            self.next = Some(now + every);
        }
    }

    /// When the next round is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    /// The phones to ping now (`(mapping, contact)`), expired bindings
    /// forgotten; empty before the round is due.
    pub fn due(&mut self, now: Instant) -> Vec<(Peer, String)> {
        let (Some(next), Some(every)) = (self.next, self.every) else {
            return Vec::new();
        };
        if now < next {
            return Vec::new();
        }
        self.phones.retain(|_, (_, until, _)| *until > now);
        self.next = (!self.phones.is_empty()).then_some(now + every);
        let mut due: Vec<(Peer, String)> = self
            .phones
            .iter()
            .map(|((_, contact), (peer, _, _))| (*peer, contact.clone()))
            .collect();
        // In a fixed order: the core's outputs stay deterministic.
        due.sort_by(|a, b| (a.0.addr, &a.1).cmp(&(b.0.addr, &b.1)));
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(contact: &str, source: Peer, behind_nat: bool, until: Instant) -> Binding {
        let call_id = if source.addr.port() == 5060 {
            "other"
        } else {
            "c"
        };
        Binding {
            contact: contact.into(),
            q: None,
            expires_at: until,
            call_id: call_id.into(),
            cseq: 1,
            path: Vec::new(),
            source: Some(source),
            behind_nat,
            flow: None,
        }
    }

    fn udp(addr: &str) -> Peer {
        Peer {
            transport: TransportKind::Udp,
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn nated_udp_phones_are_pinged_until_they_go() {
        let now = Instant::now();
        let every = Duration::from_secs(20);
        let mut ping = NatPing::new(Some(every));
        let aor = Aor::new("bob", "example.test");
        let mapping = udp("203.0.113.7:40001");
        let until = now + Duration::from_secs(50);
        let bindings = [
            binding("sip:bob@10.0.0.2:5060", mapping, true, until),
            // Registered through another node, or not behind NAT: not ours to ping.
            binding(
                "sip:bob@10.0.0.3:5060",
                udp("198.51.100.1:5060"),
                true,
                until,
            ),
            binding("sip:bob@203.0.113.7:5070", mapping, false, until),
        ];
        ping.registered(&aor, &bindings, ("c", 1), now);
        assert_eq!(ping.poll_timeout(), Some(now + every));
        assert!(ping.due(now).is_empty());
        let round = ping.due(now + every);
        assert_eq!(round, vec![(mapping, "sip:bob@10.0.0.2:5060".to_string())]);
        assert_eq!(ping.poll_timeout(), Some(now + every * 2));
        // The binding expires before the third round: no more pings.
        assert_eq!(ping.due(now + every * 2).len(), 1);
        assert!(ping.due(now + every * 3).is_empty());
        assert_eq!(ping.poll_timeout(), None);
        // Unregistered (no binding left from this source): gone at once.
        ping.registered(&aor, &bindings[..1], ("c", 1), now);
        ping.registered(&aor, &[], ("c", 2), now);
        assert!(ping.due(now + every).is_empty());
        // Off: nothing kept.
        let mut off = NatPing::new(None);
        off.registered(&aor, &bindings, ("c", 1), now);
        assert_eq!(off.poll_timeout(), None);
    }
}
