//! The hybrid gateway as a component of the node core (`[gateway]` in the
//! config): where a request for a foreign domain or a telephone number
//! goes, ENUM look-ups, cross-registration of overlay users at a legacy
//! registrar ([`crossreg`]), and legacy phones' registrations mirrored into
//! the ring ([`mirror`]). The decisions are the `bridge` crate's; this
//! component ties them to the node's transactions, look-ups and ring. It
//! owns the client transactions and look-ups it starts
//! ([`owner::GATEWAY`](crate::outbox::owner::GATEWAY)).

mod crossreg;
mod mirror;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use p2psip_bridge::config::GatewayConfig;
use p2psip_bridge::digest::Credentials;
use p2psip_bridge::legacy::{RegisterRoute, register_route};
use p2psip_bridge::route::{Decision, TargetUri, TelRoute, decide, telephone_route};

use crate::outbox::{Outbox, ResolveId, owner};
use crate::overlay::Overlay;
use crate::registrar::binding::{Aor, Binding};
use crate::registrar::location::{LocationAnswer, LocationOp};
use crate::ring::{Item, OpId, RingError};
use crate::sip::message::{Request, Response};
use crate::sip::transaction::{ClientKey, Peer, ServerKey};
use crossreg::CrossRegistration;
pub use mirror::MirrorFetch;
use mirror::Mirrors;

/// The gateway's state inside the node.
pub struct Gateway {
    config: GatewayConfig,
    /// The node's own domains.
    domains: Vec<String>,
    cross: Option<CrossRegistration>,
    /// Telephone numbers waiting for ENUM.
    enum_pending: HashMap<ResolveId, (ServerKey, Request, String)>,
    mirrors: Mirrors,
}

impl Gateway {
    pub fn new(
        config: GatewayConfig,
        domains: Vec<String>,
        local: SocketAddr,
        seed: u64,
        now: Instant,
    ) -> Gateway {
        let cross = config
            .upstream
            .clone()
            .map(|upstream| CrossRegistration::new(upstream, &domains, local, seed, now));
        Gateway {
            config,
            domains,
            cross,
            enum_pending: HashMap::new(),
            mirrors: Mirrors::default(),
        }
    }

    /// The domains whose DNS this node serves and advertises as gateway.
    pub fn served_domains(&self) -> Vec<String> {
        self.config.served_domains(&self.domains)
    }

    /// The bridge's decision for a target (DHT, DNS, telephone, refusal).
    pub fn decide(&self, target: &TargetUri) -> Decision {
        decide(target, &self.domains, &self.config)
    }

    /// A request from the legacy side to one of our cross-registration
    /// contacts: the overlay user it is for.
    pub fn inbound_aor(&self, target: &TargetUri) -> Option<Aor> {
        self.cross.as_ref()?.inbound_aor(target)
    }

    /// Where a REGISTER for `domain` goes: ours, the legacy registrar's, or neither.
    pub fn register_route(&self, domain: &str) -> RegisterRoute {
        register_route(domain, &self.domains, &self.config)
    }

    /// Asks ENUM for the number of a request; the answer comes back through
    /// [`enum_answered`](Self::enum_answered).
    pub fn ask_enum(&mut self, key: ServerKey, request: Request, e164: String, out: &mut Outbox) {
        let id = out.enum_lookup(owner::GATEWAY, e164.clone());
        self.enum_pending.insert(id, (key, request, e164));
    }

    /// The request an ENUM answer is for.
    pub fn enum_answered(&mut self, id: ResolveId) -> Option<(ServerKey, Request, String)> {
        self.enum_pending.remove(&id)
    }

    /// The ENUM suffix numbers are looked up under.
    pub fn enum_suffix(&self) -> String {
        self.config.enum_suffix.clone()
    }

    /// Where a telephone number goes once ENUM gave `enum_uri` (or nothing).
    pub fn telephone_route(&self, e164: &str, enum_uri: Option<&str>) -> TelRoute {
        telephone_route(e164, enum_uri, &self.config)
    }

    /// The credentials that answer the PSTN gateway's challenges.
    pub fn pstn_credentials(&self) -> Option<Credentials> {
        self.config.pstn.as_ref().and_then(|p| p.credentials())
    }

    /// Overlay users registered upstream now.
    pub fn cross_registered(&self) -> Vec<String> {
        self.cross
            .as_ref()
            .map(|c| c.registered())
            .unwrap_or_default()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.cross.as_ref().map(|c| c.poll_timeout())
    }

    /// Cross-registration housekeeping: read the directory, send REGISTERs.
    pub fn handle_timeout(
        &mut self,
        overlay: Option<&mut Overlay>,
        out: &mut Outbox,
        now: Instant,
    ) {
        if let Some(cross) = &mut self.cross {
            cross.handle_timeout(overlay, out, now);
        }
    }

    /// A directory shard the gateway fetched from the ring.
    pub fn on_fetched(
        &mut self,
        op: OpId,
        result: Result<Vec<Item>, RingError>,
        out: &mut Outbox,
        now: Instant,
    ) {
        if let Some(cross) = &mut self.cross {
            cross.on_fetched(op, result, out, now);
        }
    }

    /// A response (or, with none, a timeout) to one of our REGISTERs upstream.
    pub fn on_response(
        &mut self,
        key: ClientKey,
        response: Option<&Response>,
        out: &mut Outbox,
        now: Instant,
    ) {
        if let Some(cross) = &mut self.cross {
            cross.on_response(key, response, out, now);
        }
    }

    /// The legacy registrar's name resolved.
    pub fn on_resolved(&mut self, id: ResolveId, peers: &[Peer], out: &mut Outbox, now: Instant) {
        if let Some(cross) = &mut self.cross {
            cross.on_resolved(id, peers, out, now);
        }
    }

    /// A REGISTER for a user of the legacy domain: the request to forward to
    /// the legacy registrar (its 2xx is mirrored into the ring). `to_us`:
    /// the phone addressed the REGISTER to this node.
    pub fn forward_upstream(
        &mut self,
        key: ServerKey,
        request: &Request,
        to_us: bool,
    ) -> Option<Request> {
        let upstream = self.config.upstream.as_ref()?;
        self.mirrors.forward(key, request, upstream, to_us)
    }

    /// A forwarded REGISTER ended with `response`: the AOR to fetch when it
    /// changed bindings (then [`mirror_fetching`](Self::mirror_fetching)).
    pub fn on_registered(&mut self, key: ServerKey, response: &Response) -> Option<MirrorFetch> {
        self.mirrors.on_registered(key, response)
    }

    /// The fetch of a mirrored AOR started as `op`.
    pub fn mirror_fetching(&mut self, op: LocationOp, fetch: MirrorFetch) {
        self.mirrors.fetching(op, fetch);
    }

    /// The location store answered a fetch of ours: the bindings to save.
    pub fn on_location(
        &mut self,
        op: LocationOp,
        answer: LocationAnswer,
        now: Instant,
    ) -> Option<(Aor, Vec<Binding>)> {
        self.mirrors.fetched(op, answer, now)
    }

    /// Forgets a forwarded REGISTER that ended.
    pub fn forget_mirror(&mut self, key: ServerKey) {
        self.mirrors.forget(key);
    }
}
