//! Cross-registration driven by the gateway: overlay users listed in the
//! ring's user directory are registered at the legacy registrar with the
//! gateway as their contact (the decisions and timers are
//! [`CrossRegistrar`]'s, in the bridge crate). This part reads the
//! directory from the ring, sends the REGISTERs as client transactions of
//! the gateway, resolves the registrar's name and feeds the answers back.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ezk_sip_types::header::typed::Via;
use ezk_sip_types::uri::SipUri;
use ezk_sip_types::{Method, Name};
use p2psip_bridge::config::UpstreamConfig;
use p2psip_bridge::crossreg::{CrossRegistrar, RegisterOut};
use p2psip_bridge::legacy::granted_expires;
use p2psip_bridge::route::TargetUri;

use super::mirror::{contact_entries, expires_header};
use crate::outbox::{Outbox, ResolveId, owner};
use crate::overlay::Overlay;
use crate::overlay::directory::{DIRECTORY_KIND, DIRECTORY_SHARDS, directory_key};
use crate::proxy::transport_name;
use crate::registrar::binding::Aor;
use crate::ring::{Item, OpId, RingError};
use crate::sip::message::{HeaderAccess, Request, RequestUri, Response, push_via};
use crate::sip::target::{NextHop, next_hop};
use crate::sip::transaction::{ClientKey, Peer};

/// How often a cross-registering gateway reads the user directory.
const DIRECTORY_EVERY: Duration = Duration::from_secs(2);

/// Cross-registration state: the registrar and the node's side of it.
pub(super) struct CrossRegistration {
    registrar: CrossRegistrar,
    /// The overlay domain requests to our contacts are for.
    overlay_domain: String,
    /// The domains whose directory is read.
    directory_domains: Vec<String>,
    local: SocketAddr,
    /// Our REGISTERs upstream: token and the contact we registered.
    sent: HashMap<ClientKey, (u64, String)>,
    resolving: HashMap<ResolveId, (u64, Request)>,
    directory_ops: HashMap<OpId, (String, u8)>,
    /// Users seen in each directory shard at the last poll.
    present: HashMap<(String, u8), HashSet<String>>,
    next_poll: Instant,
}

impl CrossRegistration {
    pub(super) fn new(
        upstream: UpstreamConfig,
        domains: &[String],
        local: SocketAddr,
        seed: u64,
        now: Instant,
    ) -> CrossRegistration {
        let overlay_domain = upstream
            .overlay_domain
            .clone()
            .or_else(|| domains.first().cloned())
            .unwrap_or_else(|| local.ip().to_string());
        let directory_domains = match &upstream.overlay_domain {
            Some(domain) => vec![domain.clone()],
            None => domains.to_vec(),
        };
        CrossRegistration {
            directory_domains,
            registrar: CrossRegistrar::new(upstream, local, seed, now),
            overlay_domain,
            local,
            sent: HashMap::new(),
            resolving: HashMap::new(),
            directory_ops: HashMap::new(),
            present: HashMap::new(),
            next_poll: now,
        }
    }

    /// A request to one of our cross-registration contacts: the overlay user.
    pub(super) fn inbound_aor(&self, target: &TargetUri) -> Option<Aor> {
        let user = self.registrar.inbound_user(target)?;
        Some(Aor::new(&user, &self.overlay_domain))
    }

    pub(super) fn registered(&self) -> Vec<String> {
        self.registrar.registered()
    }

    pub(super) fn poll_timeout(&self) -> Instant {
        match self.registrar.poll_timeout() {
            Some(t) => t.min(self.next_poll),
            None => self.next_poll,
        }
    }

    pub(super) fn handle_timeout(
        &mut self,
        overlay: Option<&mut Overlay>,
        out: &mut Outbox,
        now: Instant,
    ) {
        self.registrar.handle_timeout(now);
        if now >= self.next_poll {
            self.next_poll = now + DIRECTORY_EVERY;
            if let Some(overlay) = overlay {
                for domain in &self.directory_domains {
                    for shard in 0..DIRECTORY_SHARDS {
                        let op =
                            overlay.fetch_items(owner::GATEWAY, directory_key(domain, shard), now);
                        self.directory_ops.insert(op, (domain.clone(), shard));
                    }
                }
            }
        }
        self.send_registers(out, now);
    }

    /// A directory shard came back from the ring: who came and who went.
    pub(super) fn on_fetched(
        &mut self,
        op: OpId,
        result: Result<Vec<Item>, RingError>,
        out: &mut Outbox,
        now: Instant,
    ) {
        let Some((domain, shard)) = self.directory_ops.remove(&op) else {
            return;
        };
        let Ok(items) = result else {
            return;
        };
        let registrar = &mut self.registrar;
        let now_present: HashSet<String> = items
            .iter()
            .filter(|i| i.kind == DIRECTORY_KIND && i.expires > now)
            .filter_map(|i| {
                let (user, d) = i.name.rsplit_once('@')?;
                (d == domain && registrar.wants_aor(user, d)).then(|| user.to_string())
            })
            .collect();
        let before = self
            .present
            .remove(&(domain.clone(), shard))
            .unwrap_or_default();
        for user in &now_present {
            registrar.user_present(user, now);
        }
        for user in before.difference(&now_present) {
            registrar.user_gone(user, now);
        }
        self.present.insert((domain, shard), now_present);
        self.send_registers(out, now);
    }

    fn send_registers(&mut self, out: &mut Outbox, now: Instant) {
        while let Some(register) = self.registrar.poll_register() {
            let token = register.token;
            let Some(request) = build_register(&register) else {
                continue;
            };
            let Ok(registrar) = format!("sip:{}", register.registrar).parse::<SipUri>() else {
                continue;
            };
            match next_hop(&registrar) {
                NextHop::Peer(peer) => self.send(token, request, peer, out, now),
                NextHop::Resolve(destination) => {
                    let id = out.resolve(owner::GATEWAY, destination);
                    self.resolving.insert(id, (token, request));
                }
            }
        }
    }

    fn send(
        &mut self,
        token: u64,
        mut request: Request,
        peer: Peer,
        out: &mut Outbox,
        now: Instant,
    ) {
        let via = Via::new(transport_name(peer.transport), self.local, out.new_branch());
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
        let key = out.request(owner::GATEWAY, request, peer, now);
        self.sent.insert(key, (token, contact));
    }

    /// The registrar's name resolved.
    pub(super) fn on_resolved(
        &mut self,
        id: ResolveId,
        peers: &[Peer],
        out: &mut Outbox,
        now: Instant,
    ) {
        let Some((token, request)) = self.resolving.remove(&id) else {
            return;
        };
        match peers.first() {
            Some(peer) => self.send(token, request, *peer, out, now),
            None => self.registrar.handle_response(token, 503, None, None, now),
        }
    }

    /// A response to one of our REGISTERs, or (with none) its timeout.
    pub(super) fn on_response(
        &mut self,
        key: ClientKey,
        response: Option<&Response>,
        out: &mut Outbox,
        now: Instant,
    ) {
        if response.is_some_and(|r| r.status < 200) {
            return;
        }
        let Some((token, contact)) = self.sent.remove(&key) else {
            return;
        };
        let Some(response) = response else {
            self.registrar.handle_response(token, 408, None, None, now);
            return self.send_registers(out, now);
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
        self.registrar.handle_response(
            token,
            response.status,
            challenge.as_ref().map(|(n, v)| (*n, v.as_str())),
            granted,
            now,
        );
        self.send_registers(out, now);
    }
}

/// The REGISTER the cross-registrar asked for, without its Via.
fn build_register(register: &RegisterOut) -> Option<Request> {
    let uri: SipUri = register.request_uri.parse().ok()?;
    let mut request = Request::new(Method::REGISTER, RequestUri::Sip(uri));
    let headers = &mut request.headers;
    headers.insert(Name::MAX_FORWARDS, "70");
    headers.insert(
        Name::FROM,
        format!("{};tag={}", register.to, register.from_tag),
    );
    headers.insert(Name::TO, register.to.as_str());
    headers.insert(Name::CALL_ID, register.call_id.as_str());
    headers.insert(Name::CSEQ, format!("{} REGISTER", register.cseq));
    headers.insert(Name::CONTACT, register.contact.as_str());
    headers.insert(Name::EXPIRES, register.expires.to_string());
    if let Some((name, value)) = &register.authorization {
        headers.insert(Name::from(name.clone()), value.as_str());
    }
    Some(request)
}
