//! The node as a hybrid gateway (`[gateway]` in the config): where a request
//! for a foreign domain or a telephone number goes, cross-registration of
//! overlay users at a legacy registrar, and legacy phones' registrations
//! mirrored into the ring. The decisions are the `bridge` crate's; this
//! module ties them to the node's transactions and ring.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytesstr::BytesStr;
use ezk_sip_types::header::typed::{Contact, Via};
use ezk_sip_types::print::{AppendCtx, PrintCtx, UriContext};
use ezk_sip_types::uri::{SipUri, SipUriUserPart};
use ezk_sip_types::{Method, Name};
use p2psip_bridge::config::GatewayConfig;
use p2psip_bridge::crossreg::{CrossRegistrar, RegisterOut};
use p2psip_bridge::legacy::{ContactEntry, MirrorOp, granted_expires, mirror_bindings};
use p2psip_bridge::route::{Decision, TargetUri, TelRoute, decide, telephone_route};
use tracing::{debug, info};

use super::core::{Core, local_response};
use super::outbox::ResolveId;
use crate::proxy::target::{NextHop, next_hop};
use crate::proxy::{Target, transport_name};
use crate::registrar::binding::{Aor, Binding};
use crate::ring::{Item, NodeId, OpId};
use crate::sip::message::{HeaderAccess, Request, RequestUri, Response, push_via};
use crate::sip::transaction::{ClientKey, Peer, ServerKey, new_branch};

/// How often a cross-registering gateway reads the user directory.
const DIRECTORY_EVERY: Duration = Duration::from_secs(2);
/// The item kind of a user-directory entry.
pub const DIRECTORY_KIND: &str = "directory";

/// The user directory of a domain is split over this many ring keys, so no
/// one key holds (and no one answer carries) every user.
pub const DIRECTORY_SHARDS: u8 = 32;

/// The ring key of one shard of a domain's user directory.
pub fn directory_key(domain: &str, shard: u8) -> NodeId {
    NodeId::of_key(&format!("users:{domain}:{shard}"))
}

/// The directory shard an AOR is listed in.
pub fn directory_shard(aor: &Aor) -> u8 {
    NodeId::of_key(aor.as_str()).0[0] % DIRECTORY_SHARDS
}

/// Where a request goes, decided before any lookup.
pub(super) enum Routed {
    /// A user whose bindings are in the ring; `then_dns`: when it has none,
    /// forward by RFC 3263 instead of answering 404/480.
    Local {
        aor: Aor,
        then_dns: bool,
    },
    /// Forward as addressed (RFC 3263 for names).
    Forward,
    /// A telephone number: ENUM, then the PSTN gateway.
    Telephone(String),
    Reject(u16, String),
}

/// A REGISTER forwarded to the legacy registrar, to mirror on 2xx.
struct Mirror {
    aor: Aor,
    contacts: Vec<ContactEntry>,
    expires: Option<u32>,
}

/// The gateway's state inside the node.
pub struct GatewaySide {
    pub config: GatewayConfig,
    cross: Option<CrossRegistrar>,
    /// Our REGISTERs upstream: token and the contact we registered.
    cross_sent: HashMap<ClientKey, (u64, String)>,
    cross_resolving: HashMap<ResolveId, (u64, Request)>,
    enum_pending: HashMap<ResolveId, (ServerKey, Request, String)>,
    mirrors: HashMap<ServerKey, Mirror>,
    directory_ops: HashMap<OpId, (String, u8)>,
    /// Users seen in each directory shard at the last poll.
    present: HashMap<(String, u8), HashSet<String>>,
    next_poll: Instant,
}

impl GatewaySide {
    pub fn new(config: GatewayConfig, local: std::net::SocketAddr, now: Instant) -> GatewaySide {
        let cross = config
            .upstream
            .clone()
            .map(|upstream| CrossRegistrar::new(upstream, local));
        GatewaySide {
            config,
            cross,
            cross_sent: HashMap::new(),
            cross_resolving: HashMap::new(),
            enum_pending: HashMap::new(),
            mirrors: HashMap::new(),
            directory_ops: HashMap::new(),
            present: HashMap::new(),
            next_poll: now,
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let cross = self.cross.as_ref()?;
        Some(match cross.poll_timeout() {
            Some(t) => t.min(self.next_poll),
            None => self.next_poll,
        })
    }

    /// Overlay users registered upstream now.
    pub fn cross_registered(&self) -> Vec<String> {
        self.cross
            .as_ref()
            .map(|c| c.registered())
            .unwrap_or_default()
    }
}

fn target_uri(uri: &RequestUri) -> Option<TargetUri> {
    match uri {
        RequestUri::Sip(uri) => Some(TargetUri::from_sip_uri(uri)),
        RequestUri::Other(text) => TargetUri::parse(text),
    }
}

fn user_of(uri: &SipUri) -> Option<String> {
    match &uri.user_part {
        SipUriUserPart::Empty => None,
        SipUriUserPart::User(u) => Some(u.to_string()),
        SipUriUserPart::UserPw(u) => Some(u.user.to_string()),
    }
}

fn contact_entries(headers: &ezk_sip_types::Headers) -> Vec<ContactEntry> {
    if headers.get_raw(&Name::CONTACT).any(|v| v.trim() == "*") {
        return vec![ContactEntry {
            uri: "*".into(),
            expires: None,
        }];
    }
    let ctx = PrintCtx {
        method: None,
        uri: Some(UriContext::Contact),
    };
    headers
        .get_named::<Vec<Contact>>()
        .unwrap_or_default()
        .iter()
        .map(|c| ContactEntry {
            uri: c.uri.uri.print_ctx(ctx).to_string(),
            expires: c
                .params
                .get_val("expires")
                .and_then(|e| e.trim().parse().ok()),
        })
        .collect()
}

fn expires_header(headers: &ezk_sip_types::Headers) -> Option<u32> {
    headers
        .get_raw(&Name::EXPIRES)
        .next()
        .and_then(|v| v.trim().parse().ok())
}

impl Core {
    /// Decides where a request without a route set goes.
    pub(super) fn route_target(&self, request: &Request) -> Routed {
        let Some(target) = target_uri(&request.uri) else {
            return Routed::Reject(416, "Unsupported URI Scheme".into());
        };
        if let Some(cross) = &self.gateway.cross
            && let Some(user) = cross.inbound_user(&target)
        {
            let domain = cross
                .upstream()
                .overlay_domain
                .clone()
                .or_else(|| self.config.domains.first().cloned())
                .unwrap_or_else(|| self.config.local.ip().to_string());
            return Routed::Local {
                aor: Aor::new(&user, &domain),
                then_dns: false,
            };
        }
        let decision = decide(&target, &self.config.domains, &self.gateway.config);
        if let Decision::Telephone { e164 } = decision {
            return Routed::Telephone(e164);
        }
        if let Some(uri) = request.uri.as_sip()
            && let Some(domain) = self.local_domain(&uri.host_port)
        {
            return match user_of(uri) {
                Some(user) => Routed::Local {
                    aor: Aor::new(&user, &domain),
                    then_dns: false,
                },
                None => Routed::Reject(404, "Not Found".into()),
            };
        }
        let aor = || {
            let user = target.user.clone()?;
            Some(Aor::new(&user, &target.host))
        };
        match decision {
            Decision::Overlay => match aor() {
                Some(aor) => Routed::Local {
                    aor,
                    then_dns: false,
                },
                None => Routed::Reject(404, "Not Found".into()),
            },
            Decision::OverlayThenDns => match aor() {
                Some(aor) => Routed::Local {
                    aor,
                    then_dns: true,
                },
                None => Routed::Forward,
            },
            Decision::Dns => Routed::Forward,
            Decision::Reject { status, reason } => Routed::Reject(status, reason),
            Decision::Telephone { e164 } => Routed::Telephone(e164),
        }
    }

    /// Acts on a routing decision.
    pub(super) fn route_request(&mut self, key: ServerKey, request: Request, now: Instant) {
        match self.route_target(&request) {
            Routed::Local { aor, then_dns } => self.look_up(key, request, aor, then_dns, now),
            Routed::Forward => self.forward_as_addressed(key, request, now),
            Routed::Telephone(e164) => {
                debug!(%e164, "telephone number: asking ENUM");
                let id = self.out.enum_lookup(e164.clone());
                self.gateway.enum_pending.insert(id, (key, request, e164));
            }
            Routed::Reject(status, reason) => {
                let mut response = local_response(&request, status);
                response.reason = reason;
                self.out.respond(key, response, now);
            }
        }
    }

    /// Forwards a request to its Request-URI (or route set).
    pub(super) fn forward_as_addressed(&mut self, key: ServerKey, request: Request, now: Instant) {
        if self.cancelled.remove(&key) {
            return;
        }
        let target = Target {
            uri: request.uri.clone(),
            route: Vec::new(),
            via_connection: None,
        };
        self.proxy
            .forward(key, request, vec![vec![target]], &mut self.out, now);
    }

    /// The ENUM suffix the driver looks numbers up under.
    pub fn enum_suffix(&self) -> String {
        self.gateway.config.enum_suffix.clone()
    }

    /// The answer to an ENUM look-up: a SIP URI, or none.
    pub fn enum_resolved(&mut self, id: ResolveId, uri: Option<String>, now: Instant) {
        if let Some((key, request, e164)) = self.gateway.enum_pending.remove(&id)
            && !self.cancelled.remove(&key)
        {
            self.telephone(key, request, &e164, uri.as_deref(), now);
        }
        self.process(now);
    }

    /// Routes a telephone number after ENUM gave `enum_uri` (or nothing).
    fn telephone(
        &mut self,
        key: ServerKey,
        mut request: Request,
        e164: &str,
        enum_uri: Option<&str>,
        now: Instant,
    ) {
        match telephone_route(e164, enum_uri, &self.gateway.config) {
            TelRoute::Uri(text) => match text.parse::<SipUri>() {
                Ok(uri) => {
                    info!(%e164, %text, "ENUM answered");
                    request.uri = RequestUri::Sip(uri);
                    // ENUM is asked once per request: a URI that is a
                    // number again (user=phone) goes on as if ENUM had no
                    // SIP URI for it, instead of to ENUM over and over.
                    match self.route_target(&request) {
                        Routed::Telephone(number) => {
                            debug!(%number, "ENUM gave a number again: not asking twice");
                            self.telephone(key, request, &number, None, now)
                        }
                        _ => self.route_request(key, request, now),
                    }
                }
                Err(_) => self.out.respond(key, local_response(&request, 404), now),
            },
            TelRoute::Pstn(text) => match text.parse::<SipUri>() {
                Ok(uri) => {
                    info!(%e164, %text, "to the PSTN gateway");
                    request.uri = RequestUri::Sip(uri);
                    let target = Target {
                        uri: request.uri.clone(),
                        route: Vec::new(),
                        via_connection: None,
                    };
                    // The PSTN gateway's challenges are answered with
                    // the configured credentials.
                    let credentials = self
                        .gateway
                        .config
                        .pstn
                        .as_ref()
                        .and_then(|p| p.credentials());
                    self.proxy.forward_with_credentials(
                        key,
                        request,
                        vec![vec![target]],
                        credentials,
                        &mut self.out,
                        now,
                    );
                }
                Err(_) => self.out.respond(key, local_response(&request, 404), now),
            },
            TelRoute::NotFound => self.out.respond(key, local_response(&request, 404), now),
        }
    }

    /// A REGISTER for a user of the legacy domain: forwarded to the legacy
    /// registrar; its 2xx is mirrored into the ring. False when not such.
    pub(super) fn register_upstream(
        &mut self,
        key: ServerKey,
        request: &Request,
        now: Instant,
    ) -> bool {
        let Some(upstream) = &self.gateway.config.upstream else {
            return false;
        };
        let Some(to) = request.to_header() else {
            return false;
        };
        let domain = crate::proxy::target::host_text(&to.uri.uri.host_port.host);
        if !domain.eq_ignore_ascii_case(upstream.domain.trim()) {
            return false;
        }
        let Some(user) = user_of(&to.uri.uri) else {
            return false;
        };
        let registrar = upstream.registrar.trim().to_string();
        let mut forwarded = request.clone();
        // A phone that has us as its registrar addresses the REGISTER to us
        // (sip:<our address>); the legacy registrar serves its domain.
        let to_us = request
            .uri
            .as_sip()
            .is_some_and(|uri| self.local_domain(&uri.host_port).is_some());
        if to_us && let Ok(uri) = format!("sip:{domain}").parse::<SipUri>() {
            forwarded.uri = RequestUri::Sip(uri);
        }
        let route = format!("<sip:{registrar};lr>");
        crate::sip::message::prepend(&mut forwarded.headers, Name::ROUTE, BytesStr::from(route));
        self.gateway.mirrors.insert(
            key,
            Mirror {
                aor: Aor::new(&user, &domain),
                contacts: contact_entries(&request.headers),
                expires: expires_header(&request.headers),
            },
        );
        debug!(%user, %domain, %registrar, "forwarding a legacy REGISTER upstream");
        self.forward_as_addressed(key, forwarded, now);
        true
    }

    /// After a forwarded REGISTER ended: mirror a 2xx into the ring.
    pub(super) fn on_registered(&mut self, key: ServerKey, response: &Response, now: Instant) {
        let Some(mirror) = self.gateway.mirrors.remove(&key) else {
            return;
        };
        let ops = mirror_bindings(
            &mirror.contacts,
            mirror.expires,
            response.status,
            &contact_entries(&response.headers),
            expires_header(&response.headers),
        );
        if ops.is_empty() {
            return;
        }
        info!(aor = %mirror.aor, changes = ops.len(), "mirroring a legacy registration into the ring");
        let op = self.op();
        self.location.store().fetch(op, &mirror.aor, now);
        self.waiting.insert(
            op,
            super::core::Waiting::Mirror {
                aor: mirror.aor,
                ops,
            },
        );
    }

    /// Forgets a forwarded REGISTER that did not succeed.
    pub(super) fn forget_mirror(&mut self, key: ServerKey) {
        self.gateway.mirrors.remove(&key);
    }

    /// Applies mirror operations to the bindings of a legacy AOR.
    pub(super) fn apply_mirror(
        mut bindings: Vec<Binding>,
        ops: &[MirrorOp],
        now: Instant,
    ) -> Vec<Binding> {
        for op in ops {
            match op {
                MirrorOp::RemoveAll => bindings.clear(),
                MirrorOp::Remove { contact } => bindings.retain(|b| b.contact != *contact),
                MirrorOp::Store { contact, expires } => {
                    bindings.retain(|b| b.contact != *contact);
                    bindings.push(Binding {
                        contact: contact.clone(),
                        q: None,
                        expires_at: now + Duration::from_secs((*expires).into()),
                        call_id: String::new(),
                        cseq: 0,
                        path: Vec::new(),
                        source: None,
                    });
                }
            }
        }
        bindings
    }

    /// Keeps the domain's user directory in the ring up to date after a save:
    /// the AOR's entry lives as long as its latest binding, so it is stored
    /// again whenever that moves later than before (`previous_latest`: the
    /// latest expiry before this REGISTER, `None` when there was none).
    pub(super) fn update_directory(
        &mut self,
        aor: &Aor,
        bindings: &[Binding],
        previous_latest: Option<Instant>,
        now: Instant,
    ) {
        let Some(domain) = aor.as_str().rsplit_once('@').map(|(_, d)| d.to_string()) else {
            return;
        };
        let Some(overlay) = self.location.overlay() else {
            return;
        };
        let key = directory_key(&domain, directory_shard(aor));
        match bindings.iter().map(|b| b.expires_at).max() {
            None => overlay.remove_item(key, aor.to_string(), now),
            Some(expires) if previous_latest.is_none_or(|p| expires > p) => overlay.store_item(
                Item {
                    key,
                    name: aor.to_string(),
                    kind: DIRECTORY_KIND.to_string(),
                    value: Vec::new(),
                    version: 0,
                    expires,
                },
                now,
            ),
            Some(_) => {}
        }
    }

    /// Cross-registration housekeeping: read the directory, send REGISTERs.
    pub(super) fn gateway_timeout(&mut self, now: Instant) {
        let Some(cross) = &mut self.gateway.cross else {
            return;
        };
        cross.handle_timeout(now);
        if now >= self.gateway.next_poll {
            self.gateway.next_poll = now + DIRECTORY_EVERY;
            let domains: Vec<String> = match &cross.upstream().overlay_domain {
                Some(d) => vec![d.clone()],
                None => self.config.domains.clone(),
            };
            if let Some(overlay) = self.location.overlay() {
                for domain in domains {
                    for shard in 0..DIRECTORY_SHARDS {
                        let op = overlay.fetch_items(directory_key(&domain, shard), now);
                        self.gateway
                            .directory_ops
                            .insert(op, (domain.clone(), shard));
                    }
                }
            }
        }
        self.send_cross_registers(now);
    }

    /// Takes the directory answers the ring finished.
    pub(super) fn gateway_fetched(&mut self, now: Instant) {
        while let Some((op, result)) = self.location.overlay().and_then(|o| o.poll_fetched()) {
            let Some((domain, shard)) = self.gateway.directory_ops.remove(&op) else {
                continue;
            };
            let Ok(items) = result else {
                continue;
            };
            let Some(cross) = &mut self.gateway.cross else {
                continue;
            };
            let now_present: HashSet<String> = items
                .iter()
                .filter(|i| i.kind == DIRECTORY_KIND && i.expires > now)
                .filter_map(|i| {
                    let (user, d) = i.name.rsplit_once('@')?;
                    (d == domain && cross.wants_aor(user, d)).then(|| user.to_string())
                })
                .collect();
            let before = self
                .gateway
                .present
                .remove(&(domain.clone(), shard))
                .unwrap_or_default();
            for user in &now_present {
                cross.user_present(user, now);
            }
            for user in before.difference(&now_present) {
                cross.user_gone(user, now);
            }
            self.gateway.present.insert((domain, shard), now_present);
        }
        self.send_cross_registers(now);
    }

    fn send_cross_registers(&mut self, now: Instant) {
        while let Some(out) = self.gateway.cross.as_mut().and_then(|c| c.poll_register()) {
            let token = out.token;
            let Some(request) = self.cross_request(&out) else {
                continue;
            };
            let Ok(registrar) = format!("sip:{}", out.registrar).parse::<SipUri>() else {
                continue;
            };
            match next_hop(&registrar) {
                NextHop::Peer(peer) => self.send_cross(token, request, peer, now),
                NextHop::Resolve(destination) => {
                    let id = self.out.resolve(destination);
                    self.gateway.cross_resolving.insert(id, (token, request));
                }
            }
        }
    }

    fn cross_request(&self, out: &RegisterOut) -> Option<Request> {
        let uri: SipUri = out.request_uri.parse().ok()?;
        let mut request = Request::new(Method::REGISTER, RequestUri::Sip(uri));
        request.headers.insert(Name::MAX_FORWARDS, "70");
        request
            .headers
            .insert(Name::FROM, format!("{};tag={}", out.to, out.from_tag));
        request.headers.insert(Name::TO, out.to.as_str());
        request.headers.insert(Name::CALL_ID, out.call_id.as_str());
        request
            .headers
            .insert(Name::CSEQ, format!("{} REGISTER", out.cseq));
        request.headers.insert(Name::CONTACT, out.contact.as_str());
        request
            .headers
            .insert(Name::EXPIRES, out.expires.to_string());
        if let Some((name, value)) = &out.authorization {
            request
                .headers
                .insert(Name::from(name.clone()), value.as_str());
        }
        Some(request)
    }

    fn send_cross(&mut self, token: u64, mut request: Request, peer: Peer, now: Instant) {
        let via = Via::new(
            transport_name(peer.transport),
            self.config.local,
            new_branch(),
        );
        push_via(&mut request.headers, &via);
        let contact = request
            .raw(&Name::CONTACT)
            .map(|c| {
                c.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
            .unwrap_or_default();
        let key = self.out.request(request, peer, now);
        self.gateway.cross_sent.insert(key, (token, contact));
    }

    /// A resolved host for a cross-registration; false when the id is not ours.
    pub(super) fn cross_resolved(&mut self, id: ResolveId, peers: &[Peer], now: Instant) -> bool {
        let Some((token, request)) = self.gateway.cross_resolving.remove(&id) else {
            return false;
        };
        match peers.first() {
            Some(peer) => self.send_cross(token, request, *peer, now),
            None => {
                if let Some(cross) = &mut self.gateway.cross {
                    cross.handle_response(token, 503, None, None, now);
                }
            }
        }
        true
    }

    /// A response to one of our cross-registrations; false when not ours.
    pub(super) fn cross_response(
        &mut self,
        key: ClientKey,
        response: &Response,
        now: Instant,
    ) -> bool {
        if !self.gateway.cross_sent.contains_key(&key) {
            return false;
        }
        if response.status < 200 {
            return true;
        }
        let Some((token, contact)) = self.gateway.cross_sent.remove(&key) else {
            return true;
        };
        let Some(cross) = &mut self.gateway.cross else {
            return true;
        };
        let challenge = ["WWW-Authenticate", "Proxy-Authenticate"]
            .iter()
            .find_map(|name| {
                response
                    .raw(&Name::from(*name))
                    .map(|value| (*name, value.to_string()))
            });
        let granted = if response.status == 423 {
            response
                .raw(&Name::MIN_EXPIRES)
                .and_then(|v| v.trim().parse().ok())
        } else {
            granted_expires(
                &contact,
                &contact_entries(&response.headers),
                expires_header(&response.headers),
            )
        };
        cross.handle_response(
            token,
            response.status,
            challenge.as_ref().map(|(n, v)| (*n, v.as_str())),
            granted,
            now,
        );
        self.send_cross_registers(now);
        true
    }

    /// One of our cross-registrations timed out; false when not ours.
    pub(super) fn cross_timeout(&mut self, key: ClientKey, now: Instant) -> bool {
        let Some((token, _)) = self.gateway.cross_sent.remove(&key) else {
            return false;
        };
        if let Some(cross) = &mut self.gateway.cross {
            cross.handle_response(token, 408, None, None, now);
        }
        self.send_cross_registers(now);
        true
    }
}
