//! The node's periodic chores, as timers of the core rather than of the
//! driver: purging expired bindings and credentials, publishing this
//! node's users' credentials in the ring again, announcing the node on the LAN while
//! it is alone, handing out the known peers to be saved, and the time a
//! graceful leave may take.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, info};

use super::credentials::PUBLISH_EVERY;
use super::{Core, CoreConfig, Output};
use crate::overlay::discovery::{self, Announcer, GROUP};

/// How often expired bindings are dropped from the location store.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);
/// How often the known peers are handed out to be saved.
const SAVE_PEERS_EVERY: Duration = Duration::from_secs(30);
/// Longest wait for a graceful leave to hand items over.
const LEAVE_FOR: Duration = Duration::from_secs(5);

/// The chores' timers.
pub(super) struct Upkeep {
    next_housekeeping: Instant,
    next_publish: Instant,
    next_save: Option<Instant>,
    announcer: Option<Announcer>,
    leaving_until: Option<Instant>,
    /// OPTIONS keep-alives to phones behind NAT without Outbound.
    pub(super) natping: crate::registrar::natping::NatPing,
    /// The flows of phones registered here, for requests routed to them
    /// through this node by others (`registrar/flows.rs`).
    pub(super) flows: crate::registrar::flows::Flows,
}

impl Upkeep {
    pub(super) fn new(config: &CoreConfig, now: Instant) -> Upkeep {
        Upkeep {
            next_housekeeping: now + HOUSEKEEPING_EVERY,
            next_publish: now + PUBLISH_EVERY,
            next_save: config.save_peers.then_some(now + SAVE_PEERS_EVERY),
            announcer: config.discover.map(|_| Announcer::new(now)),
            leaving_until: None,
            natping: crate::registrar::natping::NatPing::new(config.registrar.natping),
            flows: crate::registrar::flows::Flows::default(),
        }
    }

    pub(super) fn poll_timeout(&self, alone: bool) -> Instant {
        let others = [
            self.next_save,
            self.announcer.as_ref().and_then(|a| a.poll_timeout(alone)),
            self.leaving_until,
            self.natping.poll_timeout(),
        ];
        others
            .into_iter()
            .flatten()
            .fold(self.next_housekeeping.min(self.next_publish), Instant::min)
    }

    pub(super) fn leaving_until(&self) -> Option<Instant> {
        self.leaving_until
    }
}

impl Core {
    /// An OPTIONS keep-alive to a phone behind NAT, sent to its mapping
    /// outside any transaction (its answer is a stray response, dropped).
    fn natping(&mut self, mapping: crate::sip::transaction::Peer, contact: &str) {
        let local = self.config.local;
        let (branch, tag, call_id) = (
            self.out.random_hex(),
            self.out.random_hex(),
            self.out.random_hex(),
        );
        let text = format!(
            "OPTIONS {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:ping@{local}>;tag={tag}\r\nTo: <{contact}>\r\n\
             Call-ID: {call_id}@{local}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        debug!(%contact, to = %mapping.addr, "OPTIONS keep-alive to a phone behind NAT");
        self.out.raw(mapping, Bytes::from(text));
    }

    /// Runs the chores that are due.
    pub(super) fn upkeep_due(&mut self, now: Instant) {
        if now >= self.upkeep.next_housekeeping {
            self.location.store().purge(now);
            self.auth.purge(now);
            self.accounts.purge(now);
            self.upkeep.flows.purge(now);
            self.upkeep.next_housekeeping = now + HOUSEKEEPING_EVERY;
        }
        if now >= self.upkeep.next_publish {
            self.upkeep.next_publish = now + PUBLISH_EVERY;
            self.publish_credentials(now);
        }
        if self.upkeep.next_save.is_some_and(|t| now >= t) {
            self.upkeep.next_save = Some(now + SAVE_PEERS_EVERY);
            self.save_peers();
        }
        for (mapping, contact) in self.upkeep.natping.due(now) {
            self.natping(mapping, &contact);
        }
        let alone = self.is_alone();
        let me = self.me();
        if let (Some(announcer), Some(me)) = (&mut self.upkeep.announcer, me)
            && announcer.due(alone, now)
        {
            debug!(group = %GROUP, "announcing this node on the LAN");
            let port = self.config.discover.unwrap_or(5060);
            let group = std::net::SocketAddr::from((GROUP, port));
            let nonce = self.out.random_hex();
            let mut announcement = discovery::announcement(&me, group, &nonce);
            if let Some(overlay) = self.location.overlay() {
                overlay.sign_request(&mut announcement, now);
            }
            let bytes = announcement.to_bytes();
            self.outputs.push_back(Output::Announce { bytes });
        }
    }

    /// A datagram heard on the LAN group: join the announcer when alone,
    /// else answer it directly so that it joins our ring.
    pub(super) fn on_announcement(&mut self, bytes: Bytes, now: Instant) {
        let Ok(crate::sip::message::Message::Request(request)) =
            crate::sip::message::Message::parse(bytes)
        else {
            return;
        };
        let Some(peer) = discovery::announcer(&request) else {
            return;
        };
        let answer = self
            .location
            .overlay()
            .is_some_and(|o| o.admit(&request, peer.addr, now) && o.discovered(peer, now));
        if answer && let Some(me) = self.me() {
            let nonce = self.out.random_hex();
            let mut announcement = discovery::announcement(&me, peer.addr, &nonce);
            if let Some(overlay) = self.location.overlay() {
                overlay.sign_request(&mut announcement, now);
            }
            self.out.raw(udp(peer.addr), announcement.to_bytes());
        }
    }

    /// Starts leaving the overlay gracefully (items handed to the successor).
    pub(super) fn leave(&mut self, now: Instant) {
        if self.upkeep.leaving_until.is_some() {
            return;
        }
        info!("leaving the ring");
        self.save_peers();
        self.upkeep.leaving_until = Some(now + LEAVE_FOR);
        if let Some(overlay) = self.location.overlay() {
            overlay.leave(&mut self.out, now);
        }
    }

    /// Hands out the peers this node knows, to rejoin through them after a restart.
    fn save_peers(&mut self) {
        if !self.config.save_peers {
            return;
        }
        let local = self.config.local;
        let Some(overlay) = self.overlay() else {
            return;
        };
        let peers: Vec<_> = overlay
            .ring()
            .known_peers()
            .into_iter()
            .filter(|p| *p != local)
            .collect();
        if !peers.is_empty() {
            self.outputs.push_back(Output::SavePeers(peers));
        }
    }
}

fn udp(addr: std::net::SocketAddr) -> crate::sip::transaction::Peer {
    crate::sip::transaction::Peer {
        transport: crate::sip::transaction::TransportKind::Udp,
        addr,
    }
}
