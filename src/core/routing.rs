//! Where a request goes: the node's own answers (OPTIONS to the node), loop
//! and Max-Forwards checks, then the route — a user whose bindings are in
//! the location store, a foreign host by RFC 3263, a telephone number by
//! ENUM or to the PSTN gateway — and the hand-over to the proxy. The
//! decisions between worlds are the gateway's; this module acts on them.

use std::time::Instant;

use ezk_sip_types::header::typed::Routing;
use ezk_sip_types::host::{Host, HostPort};
use ezk_sip_types::uri::SipUri;
use ezk_sip_types::{Method, Name};
use p2psip_bridge::legacy::RegisterRoute;
use p2psip_bridge::route::{Decision, TargetUri, TelRoute};
use tracing::{debug, info, warn};

use super::checks::{decrement_max_forwards, local_response, refusal};
use super::credentials::Parked;
use super::registration::Waiting;
use super::{Core, CoreConfig};
use crate::auth::Verdict;
use crate::proxy::{RoutingMode, Target, loop_hash};
use crate::registrar::binding::{Aor, Binding};
use crate::registrar::flows::{Flows, HeldFlow};
use crate::sip::message::{HeaderAccess, Request, RequestUri};
use crate::sip::target::{NextHop, host_text, next_hop, user_of};
use crate::sip::transaction::{Peer, ServerKey, TransportKind};

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, SUBSCRIBE, NOTIFY, PUBLISH, INFO, UPDATE, REFER, PRACK";

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

impl Core {
    /// A new request that is not the overlay's own.
    pub(super) fn on_request(
        &mut self,
        key: ServerKey,
        mut request: Request,
        from: Peer,
        now: Instant,
    ) {
        if request.method != Method::ACK && self.overlay().is_some_and(|o| o.ring().is_joining()) {
            // Not in the ring yet: serving phones as a ring of one would
            // split the phone system; they retry (RFC 3261 §21.5.4).
            let mut response = refusal(&request, 503, "Not Yet In The Ring");
            response.headers.insert(Name::RETRY_AFTER, "5");
            return self.out.respond(key, response, now);
        }
        let flow_token = self.own_flow_token(&request);
        let routed_through_us = self.strip_own_routes(&mut request);
        let has_route = request.headers.contains(&Name::ROUTE);
        // Routed to one of our phones' flows by another node (or by the
        // phone's own dialog): over that flow, or 430 when it is gone.
        let flow = match flow_token {
            Some(token) if !has_route => match self.upkeep.flows.find(&token, now) {
                Some(flow) => Some(flow),
                None => {
                    debug!(%token, "request for a flow this node does not hold");
                    let response = refusal(&request, 430, "Flow Failed");
                    return self.out.respond(key, response, now);
                }
            },
            _ => None,
        };
        let _ = from;
        let target = request
            .uri
            .as_sip()
            .map(|uri| (user_of(uri), self.local_domain(&uri.host_port)));

        let for_the_node = matches!(&target, Some((None, Some(_))));
        if !has_route && self.presence_in_dialog(key, &request, for_the_node, now) {
            return;
        }

        // Requests for the node itself.
        if !has_route && let Some((None, Some(_))) = &target {
            if request.method == Method::OPTIONS {
                let mut response = local_response(&request, 200);
                response.headers.insert(Name::ALLOW, ALLOW);
                response.headers.insert(Name::ACCEPT, "application/sdp");
                response.headers.insert(Name::SUPPORTED, "path");
                if self.config.presence.enabled {
                    response
                        .headers
                        .insert(Name::ALLOW_EVENTS, crate::presence::ALLOW_EVENTS);
                }
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
        let parked = Parked {
            key,
            request,
            from,
            aor: Aor::new("", ""),
            routed_through_us,
            flow,
        };
        self.authenticate(parked, now);
    }

    /// Asks the authentication component, then serves the request (or
    /// answers its challenge, or waits for the user's credentials).
    pub(super) fn authenticate(&mut self, mut parked: Parked, now: Instant) {
        let sender = self.sender(parked.from);
        let verdict = {
            let config = &self.config;
            let ours = |host_port: &HostPort| domain_of(config, host_port);
            self.auth.check(
                &parked.request,
                sender,
                &ours,
                parked.routed_through_us,
                now,
            )
        };
        match verdict {
            Verdict::Respond(response) => self.out.respond(parked.key, response, now),
            Verdict::Fetch(aor) => {
                parked.aor = aor;
                self.fetch_credentials(parked, now)
            }
            Verdict::Pass { user } => {
                if let Some(aor) = &user
                    && let Some((_, realm)) = aor.as_str().rsplit_once('@')
                {
                    crate::auth::consume_credentials(&mut parked.request, realm);
                }
                if let Some(flow) = parked.flow {
                    return self.send_on_flow(parked.key, parked.request, flow, now);
                }
                self.serve(parked.key, parked.request, parked.from, user, now)
            }
        }
    }

    /// A request that may be served: by route, as a REGISTER, or routed.
    fn serve(
        &mut self,
        key: ServerKey,
        request: Request,
        from: Peer,
        user: Option<Aor>,
        now: Instant,
    ) {
        if request.headers.contains(&Name::ROUTE) {
            return self.forward_as_addressed(key, request, now);
        }
        if request.method == Method::REGISTER {
            let uri_domain = request
                .uri
                .as_sip()
                .and_then(|uri| self.local_domain(&uri.host_port));
            return self.route_register(key, request, from, uri_domain, user, now);
        }
        if self.is_listening_call(&request) {
            return self.listen_call(key, request, from, user, now);
        }
        if let Some(room) = self.conference_room(&request) {
            return self.conference_call(key, request, from, room, now);
        }
        if self.serves_presence(&request)
            && let Routed::Local {
                aor,
                then_dns: false,
            } = self.route_target(&request)
        {
            return self.on_presence(key, request, from, aor, user, now);
        }
        self.route_request(key, request, now);
    }

    /// A REGISTER: the legacy registrar's (forwarded, then mirrored), ours,
    /// or as addressed.
    fn route_register(
        &mut self,
        key: ServerKey,
        request: Request,
        from: Peer,
        uri_domain: Option<String>,
        user: Option<Aor>,
        now: Instant,
    ) {
        let to_domain = request
            .to_header()
            .map(|to| host_text(&to.uri.uri.host_port.host));
        if let Some(domain) = &to_domain
            && let RegisterRoute::Upstream { .. } = self.gateway.register_route(domain)
        {
            let to_us = uri_domain.is_some();
            if let Some(forwarded) = self.gateway.forward_upstream(key, &request, to_us) {
                return self.forward_as_addressed(key, forwarded, now);
            }
        }
        match uri_domain {
            Some(_) => self.on_register(key, request, from, user, now),
            None => {
                // Not ours, and not a legacy domain we mirror: no registrar
                // here for it (a phone using us as its outbound proxy puts
                // us in a Route, forwarded above).
                let domain = request.uri.as_sip().map(|u| host_text(&u.host_port.host));
                info!(domain = domain.as_deref().unwrap_or("-"), source = %from.addr, status = 403, "registration refused: not a domain of this registrar");
                let response = refusal(&request, 403, "Not A Domain Of This Registrar");
                self.out.respond(key, response, now)
            }
        }
    }

    /// Decides where a request without a route set goes.
    pub(super) fn route_target(&self, request: &Request) -> Routed {
        let Some(target) = target_uri(&request.uri) else {
            return Routed::Reject(416, "Unsupported URI Scheme".into());
        };
        if let Some(aor) = self.gateway.inbound_aor(&target) {
            return Routed::Local {
                aor,
                then_dns: false,
            };
        }
        let decision = self.gateway.decide(&target);
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
        let aor = || Some(Aor::new(target.user.as_deref()?, &target.host));
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
                self.gateway.ask_enum(key, request, e164, &mut self.out);
            }
            Routed::Reject(status, reason) => {
                self.out
                    .respond(key, refusal(&request, status, reason), now)
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
            behind_nat: false,
        };
        self.proxy
            .forward(key, request, vec![vec![target]], &mut self.out, now);
    }

    /// Routes a telephone number after ENUM gave `enum_uri` (or nothing).
    pub(super) fn telephone(
        &mut self,
        key: ServerKey,
        mut request: Request,
        e164: &str,
        enum_uri: Option<&str>,
        now: Instant,
    ) {
        let (text, to_pstn) = match self.gateway.telephone_route(e164, enum_uri) {
            TelRoute::Uri(text) => (text, false),
            TelRoute::Pstn(text) => (text, true),
            TelRoute::NotFound => return self.out.respond(key, local_response(&request, 404), now),
        };
        let Ok(uri) = text.parse::<SipUri>() else {
            return self.out.respond(key, local_response(&request, 404), now);
        };
        request.uri = RequestUri::Sip(uri);
        if !to_pstn {
            info!(%e164, %text, "ENUM answered");
            // ENUM is asked once per request: a URI that is a number again
            // (user=phone) goes on as if ENUM had no SIP URI for it,
            // instead of to ENUM over and over.
            return match self.route_target(&request) {
                Routed::Telephone(number) => {
                    debug!(%number, "ENUM gave a number again: not asking twice");
                    self.telephone(key, request, &number, None, now)
                }
                _ => self.route_request(key, request, now),
            };
        }
        info!(%e164, %text, "to the PSTN gateway");
        let target = Target {
            uri: request.uri.clone(),
            route: Vec::new(),
            via_connection: None,
            behind_nat: false,
        };
        // The PSTN gateway's challenges are answered with the configured credentials.
        let credentials = self.gateway.pstn_credentials();
        self.proxy.forward_with_credentials(
            key,
            request,
            vec![vec![target]],
            credentials,
            &mut self.out,
            now,
        );
    }

    /// Looks a user up in the location store, then routes to the bindings.
    fn look_up(
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

    /// The answer to a [`look_up`](Self::look_up).
    pub(super) fn route_found(
        &mut self,
        key: ServerKey,
        request: Request,
        aor: &Aor,
        found: Option<Vec<Binding>>,
        then_dns: bool,
        now: Instant,
    ) {
        let empty = found.as_ref().is_none_or(|b| b.is_empty());
        if then_dns && empty {
            debug!(%aor, "not in the overlay; trying DNS");
            return self.forward_as_addressed(key, request, now);
        }
        if empty && request.method == Method::MESSAGE {
            let absent = if found.is_none() { 404 } else { 480 };
            return self.offline_message(key, request, aor, absent, now);
        }
        if empty && self.voicemail_takes(&request) {
            let absent = if found.is_none() { 404 } else { 480 };
            return self.voicemail_call(key, request, aor, absent, now);
        }
        let bindings = match found {
            None => {
                debug!(%aor, "unknown user");
                return self.out.respond(key, local_response(&request, 404), now);
            }
            Some(b) if b.is_empty() => {
                return self.out.respond(key, local_response(&request, 480), now);
            }
            Some(mut b) => {
                // Flows of our own phones: reached by us, not through us.
                Flows::without_own_route(&mut b, self.config.local);
                b
            }
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
        self.forward_to_user(key, request, aor, groups, now);
    }

    /// The domain a host stands for when it is ours: one of our domains, or
    /// our own address (which stands for our first domain, or our IP).
    pub(super) fn local_domain(&self, host_port: &HostPort) -> Option<String> {
        domain_of(&self.config, host_port)
    }

    fn is_own_address(&self, host_port: &HostPort) -> bool {
        is_own_address(&self.config, host_port)
    }

    /// The flow token of the top Route when it names us (`registrar/flows.rs`).
    fn own_flow_token(&self, request: &Request) -> Option<String> {
        let routes = request.headers.get::<Vec<Routing>>(Name::ROUTE).ok()?;
        let top = routes.first()?;
        if !self.is_own_address(&top.uri.uri.host_port) {
            return None;
        }
        user_of(&top.uri.uri).filter(|user| Flows::is_token(user))
    }

    /// Sends a request over one of our phones' flows, as addressed.
    fn send_on_flow(&mut self, key: ServerKey, request: Request, flow: HeldFlow, now: Instant) {
        if self.cancelled.remove(&key) {
            return;
        }
        debug!(to = %flow.peer.addr, "over the flow the phone registered on");
        let target = Target {
            uri: request.uri.clone(),
            route: Vec::new(),
            via_connection: Some(flow.peer),
            behind_nat: flow.behind_nat,
        };
        self.proxy
            .forward(key, request, vec![vec![target]], &mut self.out, now);
    }

    /// Loose routing (RFC 3261 §16.4): drop Route entries that name us;
    /// true when there were any.
    pub(super) fn strip_own_routes(&self, request: &mut Request) -> bool {
        let Ok(routes) = request.headers.get::<Vec<Routing>>(Name::ROUTE) else {
            return false;
        };
        let keep: Vec<&Routing> = routes
            .iter()
            .skip_while(|r| self.is_own_address(&r.uri.uri.host_port))
            .collect();
        if keep.len() == routes.len() {
            return false;
        }
        request.headers.remove(&Name::ROUTE);
        if !keep.is_empty() {
            let kept: Vec<Routing> = keep.into_iter().cloned().collect();
            request.headers.insert_type_front(Name::ROUTE, &kept);
        }
        true
    }

    /// A Via of ours carrying the branch this request would get again.
    fn is_loop(&self, request: &Request) -> bool {
        let local = self.config.local;
        let ours = |via: &ezk_sip_types::header::typed::Via| {
            via.sent_by.ip() == Some(local.ip()) && via.sent_by.port == Some(local.port())
        };
        let vias = request.vias();
        if !vias.iter().skip(1).any(ours) {
            return false;
        }
        let prefix = format!("z9hG4bK{}.", loop_hash(request));
        vias.iter().skip(1).any(|via| {
            ours(via)
                && via
                    .params
                    .get_val("branch")
                    .is_some_and(|b| b.starts_with(&prefix))
        })
    }
}

/// The domain a host stands for in `config`, when it is ours.
fn domain_of(config: &CoreConfig, host_port: &HostPort) -> Option<String> {
    let host = host_text(&host_port.host);
    if let Some(domain) = config.domains.iter().find(|d| **d == host) {
        return Some(domain.clone());
    }
    if is_own_address(config, host_port) {
        return Some(
            config
                .domains
                .first()
                .cloned()
                .unwrap_or_else(|| config.local.ip().to_string()),
        );
    }
    None
}

fn is_own_address(config: &CoreConfig, host_port: &HostPort) -> bool {
    let sips = config.sips.filter(|s| host_port.port == Some(s.port()));
    let local = sips.unwrap_or(config.local);
    let port_matches = host_port.port.unwrap_or(5060) == local.port();
    let host_matches = match &host_port.host {
        Host::IP4(ip) => std::net::IpAddr::V4(*ip) == local.ip(),
        Host::IP6(ip) => std::net::IpAddr::V6(*ip) == local.ip(),
        Host::Name(name) => name.eq_ignore_ascii_case("localhost") && local.ip().is_loopback(),
    };
    host_matches && port_matches
}

fn target_uri(uri: &RequestUri) -> Option<TargetUri> {
    match uri {
        RequestUri::Sip(uri) => Some(TargetUri::from_sip_uri(uri)),
        RequestUri::Other(text) => TargetUri::parse(text),
    }
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
        // A contact behind NAT is reached where its REGISTER came from
        // (UDP: the NAT's mapping; TCP/TLS: the connection). Otherwise reuse
        // the connection the REGISTER came over when the contact names that
        // very connection, or is a TLS contact registered over TLS (a phone's
        // TLS listening port is rarely reachable, nor certified); else reach
        // the contact as it says.
        // A flow another node holds: through that node (its route first).
        let elsewhere = b.path.first().is_some_and(|p| Flows::is_flow_route(p));
        let via_connection = b.source.filter(|source| {
            !elsewhere
                && b.behind_nat
                || source.transport.reliable()
                    && matches!(next_hop(&uri), NextHop::Peer(p) if p.addr == source.addr
                    || (p.transport == TransportKind::Tls && source.transport == TransportKind::Tls))
        });
        let target = Target {
            uri: RequestUri::Sip(uri),
            route: b.path.clone(),
            via_connection,
            behind_nat: b.behind_nat && !elsewhere,
        };
        let q = b.q.unwrap_or(1000);
        match groups.last_mut() {
            Some((last_q, group)) if *last_q == q => group.push(target),
            _ => groups.push((q, vec![target])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}
