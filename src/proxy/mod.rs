//! The stateful proxy (RFC 3261 §16): forwards a request to its targets —
//! q-value groups one after another, the targets of a group in parallel —
//! relays provisional responses, forwards the first 2xx and cancels the
//! other branches, and otherwise answers with the best final response.
//!
//! Request validation, Route processing and target lookup happen before,
//! in the node; the proxy gets a request ready to forward and its targets.
//!
//! Over 800 lines since the NAT aliases and held failures landed; the next
//! split moves response selection and the relay/alias hooks into files of
//! their own.

pub mod alias;
pub mod fork;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;
use std::time::Instant;

use ezk_sip_types::Name;
use ezk_sip_types::header::typed::{Routing, Via};

use crate::outbox::{Outbox, ResolveId, owner};
use crate::sip::message::{HeaderAccess, Message, Request, RequestUri, Response, pop_top_via};
use crate::sip::target::{self, NextHop, next_hop};
use crate::sip::transaction::{ClientKey, Peer, ServerKey, TransportKind};
use fork::Fork;
use tracing::debug;

/// The reason of our own 503 for a next hop whose name did not resolve
/// (RFC 3263 §4.3); it is not turned into a 500 like a downstream 503.
pub const NOT_RESOLVED: &str = "Next Hop Not Resolved";

/// How requests for local users are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    /// Forward them to the user's contacts.
    Proxy,
    /// Answer 302 with the contacts.
    Redirect,
}

/// One place to send a forwarded request.
#[derive(Clone, Debug)]
pub struct Target {
    /// The new Request-URI (a contact).
    pub uri: RequestUri,
    /// Route set to put in front (a binding's Path).
    pub route: Vec<String>,
    /// Send over this connection instead of resolving the URI (the
    /// contact registered over TCP or TLS).
    pub via_connection: Option<Peer>,
    /// The contact is a binding behind NAT (the media relay anchors calls to it).
    pub behind_nat: bool,
}

/// A request waiting for its next hop's name to resolve.
enum Pending {
    Branch { server: ServerKey, request: Request },
    Stateless(Request),
}

/// The proxy core: forks in progress and their branches.
pub struct Proxy {
    local: SocketAddr,
    /// Our TLS address (`--sips`), for Via and Record-Route on TLS hops.
    tls: Option<SocketAddr>,
    forks: HashMap<ServerKey, Fork>,
    branch_of: HashMap<ClientKey, ServerKey>,
    resolving: HashMap<ResolveId, Pending>,
    counter: u64,
    /// Forks that ended, with the status sent upstream.
    finished: Vec<(ServerKey, u16)>,
    /// Final responses held back for the node (`hold_failures` forks).
    held: Vec<(ServerKey, Response)>,
    /// Branches with further resolved targets to fail over to (RFC 3263 §4.3).
    alternatives: HashMap<ClientKey, Alternatives>,
    /// When a branch with alternatives that heard nothing moves on.
    failover_at: BTreeSet<(Instant, ClientKey)>,
    /// Targets that failed, for the resolver's dead list.
    dead: Vec<Peer>,
    /// Timer C of INVITE branches (RFC 3261 §16.6 step 11): a branch that
    /// rang and then went silent is cancelled. Stale entries are skipped.
    timer_c: BTreeSet<(Instant, ClientKey)>,
    timer_c_at: HashMap<ClientKey, Instant>,
    /// 2xx responses relayed for forwarded REGISTERs (the gateway mirrors them).
    registered: Vec<(ServerKey, Response)>,
    /// Branches of forks with credentials: where they went and what was
    /// sent (before our Record-Route and Via), to send again with an answer
    /// to a challenge.
    challengeable: HashMap<ClientKey, (Peer, Request)>,
    /// The media relay: sees the SDP of every request forwarded and every
    /// response relayed (`crate::relay`).
    pub relay: crate::relay::Relay,
    /// Branches sent to a binding behind NAT, and where: the Contact of
    /// their answers gets an alias for it ([`alias`]).
    nated_branches: HashMap<ClientKey, Peer>,
}

/// What a branch falls back to when its target does not answer.
struct Alternatives {
    request: Request,
    peer: Peer,
    next: Vec<Peer>,
    heard: bool,
}

/// How long a branch with alternatives waits for any answer before the next
/// target gets the request: 4·T1, well inside Timer B/F.
pub const FAILOVER_AFTER: Duration = Duration::from_secs(2);

/// Timer C: how long an INVITE branch may go without a response once it
/// has one (more than 3 minutes, RFC 3261 §16.6 step 11).
pub const TIMER_C: Duration = Duration::from_secs(181);

impl Proxy {
    pub fn new(local: SocketAddr) -> Proxy {
        Proxy {
            local,
            tls: None,
            forks: HashMap::new(),
            branch_of: HashMap::new(),
            resolving: HashMap::new(),
            counter: 0,
            finished: Vec::new(),
            held: Vec::new(),
            alternatives: HashMap::new(),
            failover_at: BTreeSet::new(),
            dead: Vec::new(),
            registered: Vec::new(),
            timer_c: BTreeSet::new(),
            timer_c_at: HashMap::new(),
            challengeable: HashMap::new(),
            relay: crate::relay::Relay::new(Default::default(), local.ip()),
            nated_branches: HashMap::new(),
        }
    }

    /// The proxy with the media relay configured (`[relay]`).
    pub fn with_relay(mut self, config: crate::relay::RelayConfig) -> Proxy {
        self.relay = crate::relay::Relay::new(config, self.local.ip());
        self
    }

    /// The proxy with a TLS address for TLS hops.
    pub fn with_tls(mut self, tls: Option<SocketAddr>) -> Proxy {
        self.tls = tls;
        self
    }

    /// Our address as seen over `transport`.
    fn address(&self, transport: TransportKind) -> SocketAddr {
        match (transport, self.tls) {
            (TransportKind::Tls, Some(tls)) => tls,
            _ => self.local,
        }
    }

    /// A fork that ended, with the final status that went upstream.
    pub fn poll_finished(&mut self) -> Option<(ServerKey, u16)> {
        self.finished.pop()
    }

    /// Requests being forwarded now.
    pub fn len(&self) -> usize {
        self.forks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.forks.is_empty()
    }

    /// Forwards `request`, received on server transaction `server`, to the
    /// targets; `groups` are tried one after another.
    pub fn forward(
        &mut self,
        server: ServerKey,
        request: Request,
        groups: Vec<Vec<Target>>,
        out: &mut Outbox,
        now: Instant,
    ) {
        self.forward_with_credentials(server, request, groups, None, out, now);
    }

    /// [`forward`](Self::forward), answering one 401/407 challenge of the
    /// next hop with `credentials` (RFC 2617; the request is sent again on a
    /// new branch with `Authorization` or `Proxy-Authorization`).
    pub fn forward_with_credentials(
        &mut self,
        server: ServerKey,
        request: Request,
        groups: Vec<Vec<Target>>,
        credentials: Option<p2psip_bridge::digest::Credentials>,
        out: &mut Outbox,
        now: Instant,
    ) {
        self.start(server, request, groups, credentials, false, out, now);
    }

    /// [`forward`](Self::forward), except that a best final response of
    /// 486, 408 or 480 is not sent upstream but held for the node to
    /// decide ([`poll_held`](Self::poll_held)): voicemail may answer
    /// instead, or the node sends it on itself.
    pub fn forward_holding_failures(
        &mut self,
        server: ServerKey,
        request: Request,
        groups: Vec<Vec<Target>>,
        out: &mut Outbox,
        now: Instant,
    ) {
        self.start(server, request, groups, None, true, out, now);
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        server: ServerKey,
        request: Request,
        groups: Vec<Vec<Target>>,
        credentials: Option<p2psip_bridge::digest::Credentials>,
        hold_failures: bool,
        out: &mut Outbox,
        now: Instant,
    ) {
        let mut request = request;
        let callee_nated = groups.iter().flatten().any(|t| t.behind_nat);
        self.relay.on_request(&mut request, callee_nated, now);
        let mut fork = Fork::new(server, request, groups);
        fork.credentials = credentials;
        fork.hold_failures = hold_failures;
        self.forks.insert(server, fork);
        self.next_group(server, out, now);
    }

    /// A final response held back by a fork started with
    /// [`forward_holding_failures`](Self::forward_holding_failures): the
    /// node answers the server transaction itself (with it, or otherwise).
    pub fn poll_held(&mut self) -> Option<(ServerKey, Response)> {
        self.held.pop()
    }

    /// The node takes the call over (no answer in time): every branch is
    /// cancelled, no more groups are tried, and nothing the branches still
    /// send goes upstream. False when the fork is gone or answered.
    pub fn take_over(&mut self, server: ServerKey, out: &mut Outbox, now: Instant) -> bool {
        let Some(fork) = self.forks.get_mut(&server) else {
            return false;
        };
        if fork.answered {
            return false;
        }
        fork.answered = true;
        fork.status = 487;
        fork.waiting.clear();
        for key in fork.active.clone() {
            out.transactions.cancel(key, now);
        }
        self.finish_if_done(server, out, now);
        true
    }

    /// Starts the next group of targets, or answers when none is left.
    fn next_group(&mut self, server: ServerKey, out: &mut Outbox, now: Instant) {
        let Some(fork) = self.forks.get_mut(&server) else {
            return;
        };
        let Some(group) = fork.waiting.pop_front() else {
            return self.finish_if_done(server, out, now);
        };
        let base = fork.request.clone();
        for target in group {
            let mut request = base.clone();
            request.uri = target.uri.clone();
            if !target.route.is_empty() {
                let existing: Vec<_> = request.headers.remove(&Name::ROUTE).unwrap_or_default();
                for route in &target.route {
                    request.headers.insert(Name::ROUTE, route.as_str());
                }
                for route in existing {
                    request.headers.insert(Name::ROUTE, route);
                }
            }
            let hop = match target.via_connection {
                Some(peer) => NextHop::Peer(peer),
                None => last_hop_alias(&mut request)
                    .map(NextHop::Peer)
                    .unwrap_or_else(|| hop_of(&request)),
            };
            match hop {
                NextHop::Peer(peer) => {
                    let key = self.send_branch(server, request, peer, out, now);
                    if let Some(key) = key
                        && target.behind_nat
                    {
                        self.nated_branches.insert(key, peer);
                    }
                }
                NextHop::Resolve(destination) => {
                    let id = out.resolve(owner::PROXY, destination);
                    self.resolving
                        .insert(id, Pending::Branch { server, request });
                    if let Some(fork) = self.forks.get_mut(&server) {
                        fork.resolving += 1;
                    }
                }
            }
        }
        self.finish_if_done(server, out, now);
    }

    fn send_branch(
        &mut self,
        server: ServerKey,
        mut request: Request,
        peer: Peer,
        out: &mut Outbox,
        now: Instant,
    ) -> Option<ClientKey> {
        let fork = self.forks.get(&server)?;
        // As it is before our Record-Route and Via: to send again on a
        // new branch when the next hop challenges.
        let plain = fork.credentials.is_some().then(|| request.clone());
        let dialog_forming = matches!(
            fork.request.method.to_string().as_str(),
            "INVITE" | "SUBSCRIBE" | "REFER"
        );
        if dialog_forming && to_tag(&fork.request).is_none() {
            // From another transport or address than the one it leaves by:
            // one entry for each side (RFC 5658 double Record-Route), so
            // each end sends its in-dialog requests to the side it knows.
            let arrived = fork
                .request
                .top_via()
                .and_then(|via| via.transport.parse::<TransportKind>().ok());
            if let Some(arrived) = arrived
                && self.address(arrived) != self.address(peer.transport)
            {
                let rr = record_route(self.address(arrived), arrived);
                crate::sip::message::prepend(&mut request.headers, Name::RECORD_ROUTE, rr.into());
            }
            let rr = record_route(self.address(peer.transport), peer.transport);
            crate::sip::message::prepend(&mut request.headers, Name::RECORD_ROUTE, rr.into());
            // A caller behind NAT: in-dialog requests to it go where it was seen.
            if crate::relay::caller_behind_nat(&fork.request)
                && let Some(caller) = fork.request.top_via().as_ref().and_then(via_peer)
            {
                alias::add_to_contact(&mut request, caller);
            }
        }
        self.counter += 1;
        let branch = format!("z9hG4bK{}.{}", loop_hash(&fork.request), self.counter);
        let via = Via::new(
            transport_name(peer.transport),
            self.address(peer.transport),
            branch,
        );
        crate::sip::message::push_via(&mut request.headers, &via);
        let invite = request.method == ezk_sip_types::Method::INVITE;
        let key = out.request(owner::PROXY, request, peer, now);
        if let Some(plain) = plain {
            self.challengeable.insert(key, (peer, plain));
        }
        self.branch_of.insert(key, server);
        if invite {
            self.arm_timer_c(key, now);
        }
        if let Some(fork) = self.forks.get_mut(&server) {
            fork.active.push(key);
        }
        Some(key)
    }

    /// The earliest failover or Timer C deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let failover = self.failover_at.first().map(|(t, _)| *t);
        let timer_c = self.timer_c.first().map(|(t, _)| *t);
        match (failover, timer_c) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// (Re)arms Timer C of an INVITE branch.
    fn arm_timer_c(&mut self, key: ClientKey, now: Instant) {
        if let Some(old) = self.timer_c_at.insert(key, now + TIMER_C) {
            self.timer_c.remove(&(old, key));
        }
        self.timer_c.insert((now + TIMER_C, key));
    }

    /// Branches with alternatives that heard nothing in time are given up
    /// (their transaction ends as a timeout, which fails over).
    pub fn handle_timeout(&mut self, out: &mut Outbox, now: Instant) {
        while let Some(&(at, key)) = self.timer_c.first() {
            if at > now {
                break;
            }
            self.timer_c.remove(&(at, key));
            self.timer_c_at.remove(&key);
            if self.branch_of.contains_key(&key) {
                debug!(?key, "Timer C: cancelling a silent INVITE branch");
                out.transactions.cancel(key, now);
            }
        }
        while let Some(&(at, key)) = self.failover_at.first() {
            if at > now {
                break;
            }
            self.failover_at.remove(&(at, key));
            if self.alternatives.get(&key).is_some_and(|a| !a.heard) {
                out.transactions.transport_error(key, now);
            }
        }
    }

    /// The 2xx relayed for a forwarded REGISTER, if any since the last call.
    pub fn poll_registered(&mut self) -> Option<(ServerKey, Response)> {
        self.registered.pop()
    }

    /// Targets found dead since the last call.
    pub fn take_dead(&mut self) -> Vec<Peer> {
        std::mem::take(&mut self.dead)
    }

    /// Moves a failed branch to its next target; false when there is none.
    fn fail_over(
        &mut self,
        key: ClientKey,
        server: ServerKey,
        out: &mut Outbox,
        now: Instant,
    ) -> bool {
        let Some(mut alt) = self.alternatives.remove(&key) else {
            return false;
        };
        // Answered or cancelled meanwhile: no new branch.
        if self.forks.get(&server).is_none_or(|f| f.answered) {
            return false;
        }
        self.dead.push(alt.peer);
        if alt.next.is_empty() {
            return false;
        }
        let peer = alt.next.remove(0);
        if let Some(fork) = self.forks.get_mut(&server) {
            fork.active.retain(|k| *k != key);
        }
        self.branch_of.remove(&key);
        let plain = alt.request.clone();
        if let Some(new_key) = self.send_branch(server, alt.request, peer, out, now)
            && !alt.next.is_empty()
        {
            self.alternatives.insert(
                new_key,
                Alternatives {
                    request: plain,
                    peer,
                    next: alt.next,
                    heard: false,
                },
            );
            self.failover_at.insert((now + FAILOVER_AFTER, new_key));
        }
        true
    }

    /// A host name resolved (or failed to: `peers` empty).
    pub fn resolved(&mut self, id: ResolveId, peers: &[Peer], out: &mut Outbox, now: Instant) {
        let Some(pending) = self.resolving.remove(&id) else {
            return;
        };
        match pending {
            Pending::Branch { server, request } => {
                if let Some(fork) = self.forks.get_mut(&server) {
                    fork.resolving = fork.resolving.saturating_sub(1);
                    // Answered or cancelled meanwhile: no new branch.
                    let peers = if fork.answered { &[][..] } else { peers };
                    match peers.split_first() {
                        Some((peer, rest)) => {
                            let plain = request.clone();
                            if let Some(key) = self.send_branch(server, request, *peer, out, now)
                                && !rest.is_empty()
                            {
                                self.alternatives.insert(
                                    key,
                                    Alternatives {
                                        request: plain,
                                        peer: *peer,
                                        next: rest.to_vec(),
                                        heard: false,
                                    },
                                );
                                self.failover_at.insert((now + FAILOVER_AFTER, key));
                            }
                        }
                        None => {
                            let mut response = own_response(&fork.request, 503);
                            response.reason = NOT_RESOLVED.into();
                            fork.record_final(response);
                        }
                    }
                }
                self.finish_if_done(server, out, now);
            }
            Pending::Stateless(request) => {
                if let Some(peer) = peers.first() {
                    out.stateless(*peer, &Message::Request(request));
                }
            }
        }
    }

    /// Forwards a request outside any transaction (ACK for a 2xx).
    pub fn forward_stateless(&mut self, mut request: Request, out: &mut Outbox, now: Instant) {
        self.relay.on_request(&mut request, false, now);
        let branch = format!("z9hG4bK{}.0", loop_hash(&request));
        let hop = last_hop_alias(&mut request)
            .map(NextHop::Peer)
            .unwrap_or_else(|| hop_of(&request));
        let transport = match &hop {
            NextHop::Peer(p) => p.transport,
            NextHop::Resolve(d) => d.transport.unwrap_or(TransportKind::Udp),
        };
        let via = Via::new(transport_name(transport), self.address(transport), branch);
        crate::sip::message::push_via(&mut request.headers, &via);
        match hop {
            NextHop::Peer(peer) => out.stateless(peer, &Message::Request(request)),
            NextHop::Resolve(destination) => {
                let id = out.resolve(owner::PROXY, destination);
                self.resolving.insert(id, Pending::Stateless(request));
            }
        }
    }

    /// A response arrived on one of our branches.
    pub fn on_response(
        &mut self,
        key: ClientKey,
        mut response: Response,
        out: &mut Outbox,
        now: Instant,
    ) {
        let Some(&server) = self.branch_of.get(&key) else {
            return;
        };
        pop_top_via(&mut response.headers);
        self.relay.on_response(&mut response);
        if let Some(&callee) = self.nated_branches.get(&key) {
            if response.status >= 200 {
                self.nated_branches.remove(&key);
            }
            let dialog_forming = self.forks.get(&server).is_some_and(|f| {
                matches!(
                    f.request.method.to_string().as_str(),
                    "INVITE" | "SUBSCRIBE" | "REFER"
                ) && to_tag(&f.request).is_none()
            });
            if dialog_forming && (101..300).contains(&response.status) {
                alias::add_to_contact(&mut response, callee);
            }
        }
        if response.status >= 200 {
            let sent = self.challengeable.remove(&key);
            if matches!(response.status, 401 | 407)
                && let Some((peer, sent)) = sent
                && self.answer_challenge(key, server, &response, peer, sent, out, now)
            {
                return;
            }
        }
        if let Some(alt) = self.alternatives.get_mut(&key) {
            alt.heard = true;
            if response.status == 503 && self.fail_over(key, server, out, now) {
                return;
            }
            if response.status >= 200 {
                self.alternatives.remove(&key);
            }
        }
        let Some(fork) = self.forks.get_mut(&server) else {
            return;
        };
        match response.status {
            100 => {}
            101..=199 => {
                if fork.invite {
                    self.arm_timer_c(key, now);
                }
                let Some(fork) = self.forks.get_mut(&server) else {
                    return;
                };
                if !fork.answered {
                    out.respond(server, response, now);
                }
            }
            200..=299 => {
                self.branch_of.remove(&key);
                fork.active.retain(|k| *k != key);
                if fork.answered {
                    // A second 2xx to an INVITE is forwarded all the same (§16.7 step 5).
                    if fork.invite {
                        forward_response_upstream(response, out);
                    }
                } else {
                    fork.answered = true;
                    fork.status = response.status;
                    if fork.request.method == ezk_sip_types::Method::REGISTER {
                        self.registered.push((server, response.clone()));
                    }
                    out.respond(server, response, now);
                }
                if fork.invite {
                    for other in fork.active.clone() {
                        out.transactions.cancel(other, now);
                    }
                    fork.waiting.clear();
                }
                self.finish_if_done(server, out, now);
            }
            _ => {
                self.branch_of.remove(&key);
                fork.active.retain(|k| *k != key);
                fork.record_final(response);
                if fork.invite && fork.has_global_failure() {
                    for other in fork.active.clone() {
                        out.transactions.cancel(other, now);
                    }
                    fork.waiting.clear();
                }
                self.finish_if_done(server, out, now);
            }
        }
    }

    /// Sends a challenged branch's request again with the fork's
    /// credentials, once per fork; false when it cannot (no credentials,
    /// answered before, an unusable challenge).
    #[allow(clippy::too_many_arguments)]
    fn answer_challenge(
        &mut self,
        key: ClientKey,
        server: ServerKey,
        response: &Response,
        peer: Peer,
        mut request: Request,
        out: &mut Outbox,
        now: Instant,
    ) -> bool {
        let Some(fork) = self.forks.get_mut(&server) else {
            return false;
        };
        if fork.answered || fork.challenged {
            return false;
        }
        let Some(credentials) = fork.credentials.clone() else {
            return false;
        };
        let (challenge, answer) = if response.status == 401 {
            ("WWW-Authenticate", "Authorization")
        } else {
            ("Proxy-Authenticate", "Proxy-Authorization")
        };
        let Some(challenge) = response.raw(&Name::from(challenge)) else {
            return false;
        };
        let uri = request.uri.to_string();
        let value = match p2psip_bridge::digest::authorization(
            challenge,
            &request.method.to_string(),
            &uri,
            &credentials,
            &out.random_hex(),
            1,
        ) {
            Ok(value) => value,
            Err(error) => {
                tracing::debug!(%error, "cannot answer the next hop's challenge");
                return false;
            }
        };
        fork.challenged = true;
        fork.active.retain(|k| *k != key);
        self.branch_of.remove(&key);
        self.alternatives.remove(&key);
        request.headers.insert(Name::from(answer), value);
        self.send_branch(server, request, peer, out, now);
        true
    }

    /// A branch got no final response in time (or its transport failed).
    pub fn on_timeout(&mut self, key: ClientKey, out: &mut Outbox, now: Instant) {
        self.challengeable.remove(&key);
        self.nated_branches.remove(&key);
        let Some(&server) = self.branch_of.get(&key) else {
            return;
        };
        if self.fail_over(key, server, out, now) {
            return;
        }
        self.branch_of.remove(&key);
        if let Some(fork) = self.forks.get_mut(&server) {
            fork.active.retain(|k| *k != key);
            let response = own_response(&fork.request, 408);
            fork.record_final(response);
        }
        self.finish_if_done(server, out, now);
    }

    /// The caller cancelled the INVITE: cancel every branch and answer 487.
    /// False when no fork exists for the INVITE (yet).
    pub fn on_cancel(&mut self, invite: ServerKey, out: &mut Outbox, now: Instant) -> bool {
        let Some(fork) = self.forks.get_mut(&invite) else {
            return false;
        };
        fork.waiting.clear();
        for key in fork.active.clone() {
            out.transactions.cancel(key, now);
        }
        if !fork.answered {
            fork.answered = true;
            fork.status = 487;
            let response = own_response(&fork.request, 487);
            out.respond(invite, response, now);
        }
        self.finish_if_done(invite, out, now);
        true
    }

    /// Sends the best response when every branch is done, and forgets the
    /// fork once nothing more can arrive for it.
    fn finish_if_done(&mut self, server: ServerKey, out: &mut Outbox, now: Instant) {
        let Some(fork) = self.forks.get_mut(&server) else {
            return;
        };
        if !fork.group_done() {
            return;
        }
        if !fork.answered && !fork.waiting.is_empty() && !fork.has_global_failure() {
            return self.next_group(server, out, now);
        }
        if !fork.answered {
            fork.answered = true;
            let response = fork.best_response();
            fork.status = response.status;
            if fork.hold_failures && matches!(response.status, 408 | 480 | 486) {
                self.held.push((server, response));
            } else {
                out.respond(server, response, now);
            }
        }
        self.relay.fork_ended(&fork.request, fork.status);
        self.finished.push((server, fork.status));
        self.forks.remove(&server);
    }
}

/// Forwards a response that belongs to no branch we track (a retransmitted
/// 2xx to an INVITE): pop our Via and send it to the next one (RFC 3581).
pub fn forward_response_upstream(response: Response, out: &mut Outbox) {
    let Some(via) = response.top_via() else {
        return;
    };
    if let Some(peer) = via_peer(&via) {
        out.stateless(peer, &Message::Response(response));
    }
}

/// Pops our own top Via from a stray response, then forwards it.
pub fn forward_stray(mut response: Response, out: &mut Outbox) {
    pop_top_via(&mut response.headers);
    forward_response_upstream(response, out);
}

/// A final response the proxy makes up itself (408, 487, 503): with a To
/// tag of ours when the request had none (RFC 3261 §8.2.6.2), appended to
/// the To value as written.
pub fn own_response(request: &Request, status: u16) -> Response {
    request.final_response(status)
}

/// The To tag of a request, also when its To holds a URI the typed header
/// cannot parse (`tel:`).
pub fn to_tag(request: &Request) -> Option<String> {
    match request.to_header() {
        Some(to) => to.tag.map(|t| t.to_string()),
        None => raw_tag(request.raw(&Name::TO)?),
    }
}

/// The `tag` parameter of a From/To value as text: the header parameters
/// follow the `>` of a name-addr, or the first `;` of a bare addr-spec.
pub fn raw_tag(value: &str) -> Option<String> {
    crate::sip::message::raw_tag(value)
}

/// Where a response to this Via goes: received/rport over sent-by.
pub fn via_peer(via: &Via) -> Option<Peer> {
    let transport = match via.transport.to_ascii_uppercase().as_str() {
        "UDP" => TransportKind::Udp,
        "TCP" => TransportKind::Tcp,
        "TLS" => TransportKind::Tls,
        _ => return None,
    };
    let host = via
        .params
        .get_val("received")
        .and_then(|r| r.parse().ok())
        .or_else(|| via.sent_by.ip())?;
    let port = via
        .params
        .get_val("rport")
        .and_then(|p| p.parse().ok())
        .or(via.sent_by.port)
        .unwrap_or(if transport == TransportKind::Tls {
            5061
        } else {
            5060
        });
    Some(Peer {
        transport,
        addr: SocketAddr::new(host, port),
    })
}

/// A request with no Route left whose Request-URI carries an alias of a
/// phone behind NAT goes there, the alias taken off ([`alias`]).
fn last_hop_alias(request: &mut Request) -> Option<Peer> {
    if request.headers.contains(&Name::ROUTE) {
        return None;
    }
    alias::take(&mut request.uri)
}

/// The next hop of a request: its first Route, else its Request-URI.
pub fn hop_of(request: &Request) -> NextHop {
    if let Ok(routes) = request.headers.get::<Vec<Routing>>(Name::ROUTE)
        && let Some(first) = routes.first()
    {
        return next_hop(&first.uri.uri);
    }
    match &request.uri {
        RequestUri::Sip(uri) => next_hop(uri),
        RequestUri::Other(text) => NextHop::Resolve(target::Destination {
            host: text.to_string(),
            port: None,
            transport: None,
            sips: false,
        }),
    }
}

pub fn transport_name(transport: TransportKind) -> &'static str {
    match transport {
        TransportKind::Udp => "UDP",
        TransportKind::Tcp => "TCP",
        TransportKind::Tls => "TLS",
    }
}

/// Our Record-Route entry.
pub fn record_route(local: SocketAddr, transport: TransportKind) -> String {
    let scheme = if transport == TransportKind::Tls {
        "sips"
    } else {
        "sip"
    };
    let host = match local.ip() {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        std::net::IpAddr::V4(ip) => ip.to_string(),
    };
    match transport {
        TransportKind::Tcp => format!("<{scheme}:{host}:{};transport=tcp;lr>", local.port()),
        _ => format!("<{scheme}:{host}:{};lr>", local.port()),
    }
}

/// The part of our branch that detects loops (RFC 3261 §16.6 step 8): the
/// same request coming back with the same Request-URI hashes the same.
/// Computed from the header values as written (no parsing): Request-URI,
/// Call-ID, CSeq, and the From and To tags.
pub fn loop_hash(request: &Request) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    request.uri.to_string().hash(&mut hasher);
    for name in [Name::CALL_ID, Name::CSEQ] {
        request.raw(&name).map(|v| v.trim()).hash(&mut hasher);
    }
    for name in [Name::FROM, Name::TO] {
        request
            .raw(&name)
            .and_then(|v| raw_tag(v))
            .hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}
