//! The node's protocol core, sans-I/O: bytes and time go in, bytes to send,
//! names to resolve and the next deadline come out. It validates requests,
//! feeds the transaction layer, and hands each new request to the registrar,
//! the proxy or the node's own answers (OPTIONS).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ezk_sip_types::header::typed::Routing;
use ezk_sip_types::host::{Host, HostPort};
use ezk_sip_types::{Method, Name};
use tracing::{debug, warn};

use super::metrics::Metrics;
use super::outbox::{Outbox, ResolveId};
use crate::overlay::Overlay;
use crate::proxy::target::{NextHop, host_text};
use crate::proxy::{Proxy, Target, forward_stray, loop_hash};
use crate::registrar::binding::{Aor, Binding};
use crate::registrar::location::{LocationAnswer, LocationOp, LocationStore, MemoryLocation};
use crate::registrar::{self, Change, RegistrarConfig, Registration};
use crate::sip::message::{
    HeaderAccess, Message, Request, RequestUri, Response, bad_request_reply,
};
use crate::sip::transaction::{Event, Peer, ServerKey, Timers};

/// How requests for local users are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    /// Forward them to the user's contacts.
    Proxy,
    /// Answer 302 with the contacts.
    Redirect,
}

/// What the core needs to know about the node.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The address we listen on and put in Via and Record-Route.
    pub local: SocketAddr,
    /// Domains this node serves (lower case).
    pub domains: Vec<String>,
    pub routing: RoutingMode,
    pub registrar: RegistrarConfig,
    pub timers: Timers,
    /// The hybrid gateway's part (`[gateway]`); defaults route by DNS only.
    pub gateway: p2psip_bridge::config::GatewayConfig,
}

/// A hook in front of the registrar and proxy: returns a challenge (401/407)
/// or refusal to send instead of serving the request. The digest issue plugs in here.
pub trait Authenticator {
    fn check(&mut self, request: &Request) -> Option<Response>;
}

/// Accepts everything.
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn check(&mut self, _request: &Request) -> Option<Response> {
        None
    }
}

/// Where bindings live: this process's memory, or the ring.
pub enum Location {
    Memory(MemoryLocation),
    Overlay(Box<Overlay>),
}

impl Location {
    pub(super) fn store(&mut self) -> &mut dyn LocationStore {
        match self {
            Location::Memory(memory) => memory,
            Location::Overlay(overlay) => &mut overlay.location,
        }
    }

    pub(super) fn overlay(&mut self) -> Option<&mut Overlay> {
        match self {
            Location::Memory(_) => None,
            Location::Overlay(overlay) => Some(overlay),
        }
    }
}

/// What the node does when the location store answers.
pub(super) enum Waiting {
    RegisterFetch {
        key: ServerKey,
        request: Request,
        registration: Registration,
    },
    RegisterSave {
        key: ServerKey,
        request: Request,
        aor: Aor,
        /// When the AOR's last live binding expired before this REGISTER.
        previous_latest: Option<Instant>,
    },
    Route {
        key: ServerKey,
        request: Request,
        aor: Aor,
        then_dns: bool,
    },
    /// A legacy user's registration, mirrored into the ring.
    Mirror {
        aor: Aor,
        ops: Vec<p2psip_bridge::legacy::MirrorOp>,
    },
    /// The save of a mirrored registration; nobody waits for it.
    MirrorSave,
}

const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, SUBSCRIBE, NOTIFY, INFO, UPDATE, REFER, PRACK";

/// The node's protocol state.
pub struct Core {
    pub(super) config: CoreConfig,
    pub(super) out: Outbox,
    pub(super) proxy: Proxy,
    pub(super) location: Location,
    /// Forks routed to a looked-up user, to drop a cached answer that failed.
    pub(super) routed: HashMap<ServerKey, Aor>,
    pub(super) auth: Box<dyn Authenticator + Send>,
    pub(super) waiting: HashMap<LocationOp, Waiting>,
    pub(super) next_op: u64,
    pub(super) next_housekeeping: Instant,
    pub metrics: Metrics,
    pub(super) gateway: super::gateway::GatewaySide,
    /// REGISTERs waiting for the one in progress for the same AOR.
    pub(super) registering:
        HashMap<Aor, std::collections::VecDeque<(ServerKey, Request, Registration)>>,
    /// INVITEs cancelled before they were forwarded (already answered 487).
    pub(super) cancelled: std::collections::HashSet<ServerKey>,
}

impl Core {
    pub fn new(config: CoreConfig, mut location: Location, now: Instant) -> Core {
        let metrics = Metrics::default();
        if let Some(overlay) = location.overlay() {
            overlay.metrics = metrics.clone();
        }
        Core {
            out: Outbox::new(config.timers),
            proxy: Proxy::new(config.local),
            location,
            routed: HashMap::new(),
            auth: Box::new(AllowAll),
            waiting: HashMap::new(),
            next_op: 1,
            next_housekeeping: now + HOUSEKEEPING_EVERY,
            metrics,
            gateway: super::gateway::GatewaySide::new(config.gateway.clone(), config.local, now),
            cancelled: std::collections::HashSet::new(),
            registering: HashMap::new(),
            config,
        }
    }

    pub fn set_authenticator(&mut self, auth: Box<dyn Authenticator + Send>) {
        self.auth = auth;
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Bytes received from `from` (a datagram, or one framed message).
    pub fn receive(&mut self, bytes: Bytes, from: Peer, now: Instant) {
        match Message::parse(bytes.clone()) {
            Err(error) => {
                debug!(%error, from = %from.addr, "unparsable message");
                if let Some(reply) = bad_request_reply(&bytes, &error.to_string()) {
                    self.out.raw(from, reply);
                }
            }
            Ok(Message::Request(mut request)) => {
                self.metrics
                    .count(super::metrics::label_of(&request.method), "in");
                if let Err(why) = validate(&request) {
                    debug!(why, from = %from.addr, "bad request");
                    // An ACK is never answered (RFC 3261 §17.2.3).
                    if request.top_via().is_some() && request.method != Method::ACK {
                        let mut response = request.final_response(400);
                        response.reason = format!("Bad Request ({why})");
                        self.out.stateless(from, &Message::Response(response));
                    }
                    return;
                }
                stamp_via(&mut request, from);
                self.out
                    .transactions
                    .receive(Message::Request(request), from, now);
            }
            Ok(Message::Response(response)) => {
                self.metrics.count("response", "in");
                if response.top_via().is_none() || response.cseq().is_err() {
                    debug!(from = %from.addr, "dropping response without Via or CSeq");
                    return;
                }
                self.out
                    .transactions
                    .receive(Message::Response(response), from, now);
            }
        }
        self.process(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.proxy.handle_timeout(&mut self.out, now);
        self.out.transactions.handle_timeout(now);
        if let Some(overlay) = self.location.overlay() {
            overlay.handle_timeout(&mut self.out, now);
        }
        self.gateway_timeout(now);
        if now >= self.next_housekeeping {
            self.location.store().purge(now);
            self.next_housekeeping = now + HOUSEKEEPING_EVERY;
        }
        self.process(now);
    }

    pub fn poll_timeout(&self) -> Instant {
        let mut deadline = self.next_housekeeping;
        if let Some(t) = self.out.transactions.poll_timeout() {
            deadline = deadline.min(t);
        }
        if let Some(t) = self.proxy.poll_timeout() {
            deadline = deadline.min(t);
        }
        if let Some(t) = self.gateway.poll_timeout() {
            deadline = deadline.min(t);
        }
        if let Location::Overlay(overlay) = &self.location
            && let Some(t) = overlay.poll_timeout()
        {
            deadline = deadline.min(t);
        }
        deadline
    }

    /// The overlay, when this node is part of one.
    pub fn overlay(&self) -> Option<&Overlay> {
        match &self.location {
            Location::Overlay(overlay) => Some(overlay),
            Location::Memory(_) => None,
        }
    }

    /// Next hops that failed (for the resolver's list of dead targets).
    pub fn take_dead(&mut self) -> Vec<Peer> {
        self.proxy.take_dead()
    }

    /// Makes this node a gateway of its domains, advertised in the ring.
    pub fn advertise_gateway(&mut self, me: crate::overlay::gateways::GatewayRecord, now: Instant) {
        let domains = self.gateway.config.served_domains(&self.config.domains);
        if let Some(overlay) = self.location.overlay() {
            overlay.advertise_gateway(me, domains, now);
        }
        self.process(now);
    }

    /// A domain whose live gateway set changed.
    pub fn poll_gateways(
        &mut self,
    ) -> Option<(String, Vec<crate::overlay::gateways::GatewayRecord>)> {
        self.location.overlay()?.poll_gateways()
    }

    /// This node's place in the overlay.
    pub fn me(&self) -> Option<crate::ring::Peer> {
        self.overlay().map(|o| o.ring().me())
    }

    /// True while this node's ring has no other node.
    pub fn is_alone(&self) -> bool {
        self.overlay().is_some_and(|o| o.is_alone())
    }

    /// An announcement heard on the LAN; true when the announcer should be
    /// answered directly (we are in a ring it can join).
    pub fn on_announcement(&mut self, peer: crate::ring::Peer, now: Instant) -> bool {
        let answer = self
            .location
            .overlay()
            .is_some_and(|o| o.discovered(peer, now));
        self.process(now);
        answer
    }

    /// Starts leaving the overlay gracefully (items handed to the successor).
    pub fn leave(&mut self, now: Instant) {
        if let Some(overlay) = self.location.overlay() {
            overlay.leave(&mut self.out, now);
        }
        self.process(now);
    }

    /// True when there is no overlay to leave, or the leave is complete.
    pub fn has_left(&self) -> bool {
        self.overlay().is_none_or(|o| o.has_left())
    }

    /// Addresses-of-record with live bindings in this node's store.
    pub fn registrations(&mut self) -> usize {
        self.location.store().len()
    }

    pub fn poll_transmit(&mut self) -> Option<(Peer, Bytes)> {
        let (peer, bytes) = self.out.poll_transmit()?;
        let first = bytes.split(|b| *b == b' ').next().unwrap_or_default();
        let method = if first.starts_with(b"SIP/") {
            "response"
        } else {
            std::str::from_utf8(first).unwrap_or("?")
        };
        self.metrics.count(method, "out");
        Some((peer, bytes))
    }

    /// The next ENUM look-up to make: its id and E.164 number.
    pub fn poll_enum(&mut self) -> Option<(ResolveId, String)> {
        self.out.poll_enum()
    }

    pub fn poll_resolve(&mut self) -> Option<(ResolveId, crate::proxy::target::Destination)> {
        self.out.poll_resolve()
    }

    /// The answer to a [`poll_resolve`](Self::poll_resolve): peers in the order to try.
    pub fn resolved(&mut self, id: ResolveId, peers: Vec<Peer>, now: Instant) {
        if !self.cross_resolved(id, &peers, now) {
            self.proxy.resolved(id, &peers, &mut self.out, now);
        }
        self.process(now);
    }

    /// Live transactions and forks, for metrics.
    pub fn load(&self) -> (usize, usize) {
        (self.out.transactions.len(), self.proxy.len())
    }

    /// Drains events of the transaction layer and answers of the store
    /// until neither has more.
    pub(super) fn process(&mut self, now: Instant) {
        loop {
            let mut busy = false;
            while let Some(event) = self.out.transactions.poll_event() {
                busy = true;
                self.on_event(event, now);
            }
            if let Some(overlay) = self.location.overlay() {
                overlay.pump(&mut self.out, now);
            }
            while let Some((op, answer)) = self.location.store().poll_answer() {
                busy = true;
                self.on_location(op, answer, now);
            }
            while let Some((server, response)) = self.proxy.poll_registered() {
                self.on_registered(server, &response, now);
            }
            self.gateway_fetched(now);
            while let Some((server, status)) = self.proxy.poll_finished() {
                self.forget_mirror(server);
                if let Some(aor) = self.routed.remove(&server)
                    && matches!(status, 408 | 480 | 500 | 503)
                {
                    self.location.store().forget(&aor);
                }
            }
            if !busy {
                break;
            }
        }
    }

    fn on_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Request { key, request, from } => {
                if let Some(overlay) = self.location.overlay()
                    && Overlay::is_overlay(&request)
                {
                    return overlay.on_request(key, request, from, &mut self.out, now);
                }
                self.on_request(key, request, from, now)
            }
            Event::Ack { mut request, .. } => {
                self.strip_own_routes(&mut request);
                if decrement_max_forwards(&mut request) {
                    self.proxy.forward_stateless(request, &mut self.out);
                }
            }
            Event::Cancel {
                invite, request, ..
            } => {
                if !self.proxy.on_cancel(invite, &mut self.out, now) {
                    // Still looking the callee up: answer 487 now, and
                    // forward nothing when the lookup ends.
                    let mut response = request.final_response(487);
                    if let Ok(cseq) = request.cseq() {
                        response.headers.remove(&Name::CSEQ);
                        response
                            .headers
                            .insert(Name::CSEQ, format!("{} INVITE", cseq.cseq));
                    }
                    self.out.respond(invite, response, now);
                    self.cancelled.insert(invite);
                }
            }
            Event::Response { key, response } => {
                if self.cross_response(key, &response, now) {
                    return;
                }
                if let Some(overlay) = self.location.overlay()
                    && overlay.on_response(key, &response, &mut self.out, now)
                {
                    return;
                }
                self.proxy.on_response(key, response, &mut self.out, now)
            }
            Event::Timeout { key } => {
                if self.cross_timeout(key, now) {
                    return;
                }
                if let Some(overlay) = self.location.overlay()
                    && overlay.on_timeout(key, &mut self.out, now)
                {
                    return;
                }
                self.proxy.on_timeout(key, &mut self.out, now)
            }
            Event::StrayResponse { response, .. } => {
                let local = self.config.local;
                let ours = response.top_via().is_some_and(|via| {
                    via.sent_by.ip() == Some(local.ip())
                        && via.sent_by.port.unwrap_or(5060) == local.port()
                });
                if ours {
                    forward_stray(response, &mut self.out);
                }
            }
        }
    }

    fn on_request(&mut self, key: ServerKey, mut request: Request, from: Peer, now: Instant) {
        self.strip_own_routes(&mut request);
        let has_route = request.headers.contains(&Name::ROUTE);
        let target = request.uri.as_sip().map(|uri| {
            let user = match &uri.user_part {
                ezk_sip_types::uri::SipUriUserPart::Empty => None,
                ezk_sip_types::uri::SipUriUserPart::User(u) => Some(u.to_string()),
                ezk_sip_types::uri::SipUriUserPart::UserPw(u) => Some(u.user.to_string()),
            };
            (user, self.local_domain(&uri.host_port))
        });

        // Requests for the node itself.
        if !has_route && let Some((None, Some(_))) = &target {
            if request.method == Method::OPTIONS {
                let mut response = local_response(&request, 200);
                response.headers.insert(Name::ALLOW, ALLOW);
                response.headers.insert(Name::ACCEPT, "application/sdp");
                response.headers.insert(Name::SUPPORTED, "path");
                return self.out.respond(key, response, now);
            }
            if request.method != Method::REGISTER {
                return self.out.respond(key, local_response(&request, 404), now);
            }
        }

        if !decrement_max_forwards(&mut request) {
            return self.out.respond(key, local_response(&request, 483), now);
        }
        if self.is_loop(&request) {
            return self.out.respond(key, local_response(&request, 482), now);
        }
        if let Some(refusal) = self.auth.check(&request) {
            return self.out.respond(key, refusal, now);
        }

        if has_route {
            return self.forward_as_addressed(key, request, now);
        }
        if request.method == Method::REGISTER {
            if self.register_upstream(key, &request, now) {
                return;
            }
            if let Some((_, Some(domain))) = target {
                return self.on_register(key, request, from, domain, now);
            }
            return self.forward_as_addressed(key, request, now);
        }
        self.route_request(key, request, now);
    }

    /// Looks a user up in the location store, then routes to the bindings.
    pub(super) fn look_up(
        &mut self,
        key: ServerKey,
        request: Request,
        aor: Aor,
        then_dns: bool,
        now: Instant,
    ) {
        let op = self.op();
        self.location.store().lookup(op, &aor, now);
        self.waiting.insert(
            op,
            Waiting::Route {
                key,
                request,
                aor,
                then_dns,
            },
        );
    }

    fn on_register(
        &mut self,
        key: ServerKey,
        request: Request,
        from: Peer,
        _domain: String,
        now: Instant,
    ) {
        let Some(to) = request.to_header() else {
            return self.out.respond(key, local_response(&request, 400), now);
        };
        let user = match &to.uri.uri.user_part {
            ezk_sip_types::uri::SipUriUserPart::User(u) => u.to_string(),
            ezk_sip_types::uri::SipUriUserPart::UserPw(u) => u.user.to_string(),
            ezk_sip_types::uri::SipUriUserPart::Empty => {
                return self.out.respond(key, local_response(&request, 400), now);
            }
        };
        let Some(domain) = self.local_domain(&to.uri.uri.host_port) else {
            let mut response = local_response(&request, 403);
            response.reason = "Not A Domain Of This Registrar".into();
            return self.out.respond(key, response, now);
        };
        let aor = Aor::new(&user, &domain);
        match registrar::read(&request, aor.clone(), from, &self.config.registrar) {
            Err(refusal) => self.out.respond(key, refusal.response(&request), now),
            Ok(registration) => {
                // One REGISTER per AOR at a time: fetch, apply and save is a
                // read-modify-write of the AOR's bindings.
                if let Some(queue) = self.registering.get_mut(&aor) {
                    queue.push_back((key, request, registration));
                    return;
                }
                self.registering.insert(aor.clone(), Default::default());
                self.start_register(key, request, registration, now);
            }
        }
    }

    fn start_register(
        &mut self,
        key: ServerKey,
        request: Request,
        registration: Registration,
        now: Instant,
    ) {
        let op = self.op();
        self.location.store().fetch(op, &registration.aor, now);
        self.waiting.insert(
            op,
            Waiting::RegisterFetch {
                key,
                request,
                registration,
            },
        );
    }

    /// A REGISTER for `aor` ended: start the next one waiting, if any.
    fn register_done(&mut self, aor: &Aor, now: Instant) {
        let next = self.registering.get_mut(aor).and_then(|q| q.pop_front());
        match next {
            Some((key, request, registration)) => {
                self.start_register(key, request, registration, now)
            }
            None => {
                self.registering.remove(aor);
            }
        }
    }

    fn on_location(&mut self, op: LocationOp, answer: LocationAnswer, now: Instant) {
        let Some(waiting) = self.waiting.remove(&op) else {
            return;
        };
        if let Waiting::Route { key, .. } = &waiting
            && self.cancelled.remove(key)
        {
            return;
        }
        let registered_aor = match (&waiting, &answer) {
            (Waiting::RegisterSave { aor, .. }, _) => Some(aor.clone()),
            (Waiting::RegisterFetch { registration, .. }, Err(_)) => Some(registration.aor.clone()),
            _ => None,
        };
        self.answer_location(waiting, answer, now);
        if let Some(aor) = registered_aor {
            self.register_done(&aor, now);
        }
    }

    fn answer_location(&mut self, waiting: Waiting, answer: LocationAnswer, now: Instant) {
        match (waiting, answer) {
            (Waiting::RegisterFetch { key, request, .. }, Err(error))
            | (Waiting::RegisterSave { key, request, .. }, Err(error))
            | (Waiting::Route { key, request, .. }, Err(error)) => {
                warn!(%error, "location store failed");
                let mut response = local_response(&request, 503);
                response.headers.insert(Name::RETRY_AFTER, "5");
                self.out.respond(key, response, now);
            }
            (Waiting::Mirror { aor, .. }, Err(error)) => {
                warn!(%error, %aor, "could not mirror a legacy registration");
            }
            (Waiting::MirrorSave, _) => {}
            (Waiting::Mirror { aor, ops }, Ok(existing)) => {
                let bindings = Self::apply_mirror(existing.unwrap_or_default(), &ops, now);
                let op = self.op();
                self.location.store().save(op, &aor, bindings, now);
                self.waiting.insert(op, Waiting::MirrorSave);
            }
            (
                Waiting::RegisterFetch {
                    key,
                    request,
                    registration,
                },
                Ok(existing),
            ) => {
                let existing = existing.unwrap_or_default();
                let previous_latest = existing
                    .iter()
                    .filter(|b| b.is_live(now))
                    .map(|b| b.expires_at)
                    .max();
                match registrar::apply(&registration, existing, &self.config.registrar, now) {
                    Err(refusal) => {
                        self.out.respond(key, refusal.response(&request), now);
                        self.register_done(&registration.aor, now);
                    }
                    Ok(bindings) if registration.change == Change::Query => {
                        let response = registrar::ok_response(&request, &bindings, now);
                        self.out.respond(key, with_to_tag(&request, response), now);
                        self.register_done(&registration.aor, now);
                    }
                    Ok(bindings) => {
                        let op = self.op();
                        self.location
                            .store()
                            .save(op, &registration.aor, bindings, now);
                        self.waiting.insert(
                            op,
                            Waiting::RegisterSave {
                                key,
                                request,
                                aor: registration.aor,
                                previous_latest,
                            },
                        );
                    }
                }
            }
            (
                Waiting::RegisterSave {
                    key,
                    request,
                    aor,
                    previous_latest,
                },
                Ok(saved),
            ) => {
                let bindings = saved.unwrap_or_default();
                self.update_directory(&aor, &bindings, previous_latest, now);
                let response = registrar::ok_response(&request, &bindings, now);
                self.out.respond(key, with_to_tag(&request, response), now);
            }
            (
                Waiting::Route {
                    key,
                    request,
                    aor,
                    then_dns,
                },
                Ok(found),
            ) => {
                let empty = found.as_ref().is_none_or(|b| b.is_empty());
                if then_dns && empty {
                    debug!(%aor, "not in the overlay; trying DNS");
                    return self.forward_as_addressed(key, request, now);
                }
                self.route_to_bindings(key, request, &aor, found, now)
            }
        }
    }

    fn route_to_bindings(
        &mut self,
        key: ServerKey,
        request: Request,
        aor: &Aor,
        found: Option<Vec<Binding>>,
        now: Instant,
    ) {
        let bindings = match found {
            None => {
                debug!(%aor, "unknown user");
                return self.out.respond(key, local_response(&request, 404), now);
            }
            Some(b) if b.is_empty() => {
                return self.out.respond(key, local_response(&request, 480), now);
            }
            Some(b) => b,
        };
        if self.config.routing == RoutingMode::Redirect {
            let mut response = local_response(&request, 302);
            for b in &bindings {
                let value = match b.q_text() {
                    Some(q) => format!("<{}>;q={q}", b.contact),
                    None => format!("<{}>", b.contact),
                };
                response.headers.insert(Name::CONTACT, value);
            }
            return self.out.respond(key, response, now);
        }
        let groups = group_by_q(&bindings);
        if groups.is_empty() {
            return self.out.respond(key, local_response(&request, 480), now);
        }
        self.routed.insert(key, aor.clone());
        self.proxy.forward(key, request, groups, &mut self.out, now);
    }

    pub(super) fn op(&mut self) -> LocationOp {
        self.next_op += 1;
        LocationOp(self.next_op)
    }

    /// The domain a host stands for when it is ours: one of our domains, or
    /// our own address (which stands for our first domain, or our IP).
    pub(super) fn local_domain(&self, host_port: &HostPort) -> Option<String> {
        let host = host_text(&host_port.host);
        if let Some(domain) = self.config.domains.iter().find(|d| **d == host) {
            return Some(domain.clone());
        }
        if self.is_own_address(host_port) {
            return Some(
                self.config
                    .domains
                    .first()
                    .cloned()
                    .unwrap_or_else(|| self.config.local.ip().to_string()),
            );
        }
        None
    }

    fn is_own_address(&self, host_port: &HostPort) -> bool {
        let local = self.config.local;
        let port_matches = host_port.port.unwrap_or(5060) == local.port();
        let host_matches = match &host_port.host {
            Host::IP4(ip) => std::net::IpAddr::V4(*ip) == local.ip(),
            Host::IP6(ip) => std::net::IpAddr::V6(*ip) == local.ip(),
            Host::Name(name) => name.eq_ignore_ascii_case("localhost") && local.ip().is_loopback(),
        };
        host_matches && port_matches
    }

    /// Loose routing (RFC 3261 §16.4): drop Route entries that name us.
    fn strip_own_routes(&self, request: &mut Request) {
        let Ok(routes) = request.headers.get::<Vec<Routing>>(Name::ROUTE) else {
            return;
        };
        let keep: Vec<&Routing> = routes
            .iter()
            .skip_while(|r| self.is_own_address(&r.uri.uri.host_port))
            .collect();
        if keep.len() == routes.len() {
            return;
        }
        request.headers.remove(&Name::ROUTE);
        if !keep.is_empty() {
            let kept: Vec<Routing> = keep.into_iter().cloned().collect();
            request.headers.insert_type_front(Name::ROUTE, &kept);
        }
    }

    /// A Via of ours carrying the branch this request would get again.
    fn is_loop(&self, request: &Request) -> bool {
        let vias = request.vias();
        let ours = |via: &&ezk_sip_types::header::typed::Via| {
            via.sent_by.ip() == Some(self.config.local.ip())
                && via.sent_by.port == Some(self.config.local.port())
        };
        if !vias.iter().skip(1).any(|v| ours(&v)) {
            return false;
        }
        let prefix = format!("z9hG4bK{}.", loop_hash(request));
        vias.iter().skip(1).any(|via| {
            via.sent_by.ip() == Some(self.config.local.ip())
                && via.sent_by.port == Some(self.config.local.port())
                && via
                    .params
                    .get_val("branch")
                    .is_some_and(|b| b.starts_with(&prefix))
        })
    }
}

/// Checks what RFC 3261 §8.2 and §16.3 require before a request is served.
fn validate(request: &Request) -> Result<(), &'static str> {
    if request.top_via().is_none() {
        return Err("missing Via");
    }
    // From and To may hold any URI (RFC 3261 §20.20, §20.39): `tel:` is
    // common, and the typed header only parses SIP URIs.
    if !names_a_uri(request.raw(&Name::FROM)) && request.from_header().is_none() {
        return Err("missing or bad From");
    }
    if !names_a_uri(request.raw(&Name::TO)) && request.to_header().is_none() {
        return Err("missing or bad To");
    }
    if request.raw(&Name::CALL_ID).is_none() {
        return Err("missing Call-ID");
    }
    match request.cseq() {
        Ok(cseq) if cseq.method == request.method => {}
        Ok(_) => return Err("CSeq method does not match"),
        Err(_) => return Err("missing or bad CSeq"),
    }
    if request.raw(&Name::MAX_FORWARDS).is_some() && request.max_forwards().is_none() {
        return Err("bad Max-Forwards");
    }
    Ok(())
}

/// A From/To value the typed header could not parse still names a URI
/// (`scheme:rest`, optionally in angle brackets).
fn names_a_uri(value: Option<&bytesstr::BytesStr>) -> bool {
    let Some(value) = value else {
        return false;
    };
    let value = value.trim();
    let uri = match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        (None, None) => value,
        _ => return false,
    };
    uri.split_once(':').is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && !rest.is_empty()
    })
}

/// RFC 3581 and §18.2.1: note where the request really came from.
fn stamp_via(request: &mut Request, from: Peer) {
    let Some(mut via) = request.top_via() else {
        return;
    };
    let mut changed = false;
    if via.sent_by.ip() != Some(from.addr.ip()) {
        via.params
            .push_or_edit("received", from.addr.ip().to_string());
        changed = true;
    }
    if via.params.get("rport").is_some() {
        via.params
            .push_or_edit("rport", from.addr.port().to_string());
        if via.params.get_val("received").is_none() {
            via.params
                .push_or_edit("received", from.addr.ip().to_string());
        }
        changed = true;
    }
    if changed {
        crate::sip::message::set_top_via(&mut request.headers, &via);
    }
}

/// Decrements Max-Forwards (70 when absent); false when it was already 0.
fn decrement_max_forwards(request: &mut Request) -> bool {
    let current = request.max_forwards().unwrap_or(70);
    if current == 0 {
        return false;
    }
    request.headers.remove(&Name::MAX_FORWARDS);
    request
        .headers
        .insert(Name::MAX_FORWARDS, (current - 1).to_string());
    true
}

/// Contacts grouped by q-value, highest first; no q counts as 1.0.
fn group_by_q(bindings: &[Binding]) -> Vec<Vec<Target>> {
    let mut sorted: Vec<&Binding> = bindings.iter().collect();
    sorted.sort_by_key(|b| std::cmp::Reverse(b.q.unwrap_or(1000)));
    let mut groups: Vec<(u16, Vec<Target>)> = Vec::new();
    for b in sorted {
        let Ok(uri) = b.contact.parse() else {
            warn!(contact = %b.contact, "stored contact does not parse");
            continue;
        };
        // Reuse the connection the REGISTER came over when the contact names
        // that very connection; otherwise reach the contact as it says.
        let via_connection = b.source.filter(|source| {
            source.transport.reliable()
                && matches!(crate::proxy::target::next_hop(&uri), NextHop::Peer(p) if p.addr == source.addr)
        });
        let target = Target {
            uri: RequestUri::Sip(uri),
            route: b.path.clone(),
            via_connection,
        };
        let q = b.q.unwrap_or(1000);
        match groups.last_mut() {
            Some((last_q, group)) if *last_q == q => group.push(target),
            _ => groups.push((q, vec![target])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// A response generated here, with a To tag when it is final.
pub fn local_response(request: &Request, status: u16) -> Response {
    request.final_response(status)
}

/// Adds our To tag to a response if the request had none.
fn with_to_tag(request: &Request, mut response: Response) -> Response {
    if let Some(raw) = response.raw(&Name::TO).map(|v| v.to_string())
        && crate::sip::message::raw_tag(&raw).is_none()
    {
        let tagged = request.final_response(response.status);
        if let Some(to) = tagged.raw(&Name::TO).cloned() {
            response.headers.remove(&Name::TO);
            response.headers.insert(Name::TO, to);
        }
    }
    response
}
