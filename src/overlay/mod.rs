//! The node's seat in the overlay: runs the Chord [`Ring`](crate::ring::Ring)
//! over the node's own SIP transactions (P2P-over-SIP, `docs/protocol.md`),
//! and keeps users' bindings in the ring as the node's location store.
//!
//! Ring requests go out as SIP client transactions and come in as server
//! transactions; this module maps one to the other and never touches a socket.
//!
//! Over 800 lines: the glue between the ring and the SIP transactions; the
//! next split takes the location-store operations into a file of their own.

pub mod admission;
pub mod directory;
pub mod discovery;
pub mod gateways;
pub mod identity;
pub mod limits;
pub mod load;
pub mod records;
pub mod relays;
pub mod sent;
pub mod signed;
pub mod store;
mod survey;
mod turn;
pub mod walk;
pub mod wire;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::outbox::owner;
use crate::ring::{
    IncomingId, Item, NodeId, OpId, Outgoing, RecordRefusals, Ring, RingConfig, RingError,
    RingEvent, RingStatus, Role,
};
use crate::sip::message::{HeaderAccess, Request, Response};
use crate::sip::transaction::{ClientKey, Owner, Peer, ServerKey, TransportKind};
use admission::{Admission, Refused};
use gateways::{GatewayRecord, Gateways};
use identity::{Members, Signing};
use limits::MemberRates;
use sent::SentRequests;
use signed::{CertBook, Certified, Seals, Wall};
use store::RingLocation;

/// The answer to a [`Overlay::fetch_items`].
pub struct Fetched {
    pub owner: Owner,
    pub op: OpId,
    pub result: Result<Vec<Item>, RingError>,
}

/// Counters the status page and metrics show.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct OverlayCounters {
    pub requests_in: u64,
    pub requests_out: u64,
    pub lookups: u64,
    pub lookup_hops_total: u64,
    pub stabilize_rounds: u64,
    pub failures: u64,
}

/// The ring plus what ties it to SIP.
pub struct Overlay {
    ring: Ring,
    /// Our ring requests travelling as SIP client transactions.
    sent: SentRequests,
    /// Ring requests we received and have not answered yet.
    received: HashMap<IncomingId, (ServerKey, Request)>,
    next_incoming: u64,
    /// The location store that lives in the ring.
    pub location: RingLocation,
    cseq: u32,
    /// The Call-ID of our ring requests, drawn from the core's RNG at the first.
    call_id: Option<String>,
    pub counters: OverlayCounters,
    /// The node's metrics (set by the core).
    pub metrics: Metrics,
    /// Gateway advertisements, when this node is a gateway.
    gateways: Option<Gateways>,
    /// TURN servers advertised in the ring (ours too, with `--turn`).
    relays: relays::Relays,
    /// Fetches started for other parts of the node, and their answers.
    raw_fetches: HashMap<OpId, Owner>,
    fetched: VecDeque<Fetched>,
    /// Stores started for other parts of the node, and their outcomes.
    raw_stores: HashMap<OpId, Owner>,
    stored: VecDeque<(Owner, OpId, bool)>,
    /// Claims (conditional stores) under way, and their outcomes.
    claims: HashSet<OpId>,
    claimed: VecDeque<(OpId, Result<(), RingError>)>,
    /// Look-ups of a key's successor started for other parts of the node.
    raw_lookups: HashMap<OpId, Owner>,
    found: VecDeque<(Owner, OpId, Result<crate::ring::Peer, RingError>)>,
    /// The shared secret and its replay window, when admission is on.
    admission: Option<Admission>,
    /// Certificate mode: which connections speak for which members.
    members: Option<Members>,
    /// Requests per member in the current interval.
    rates: MemberRates,
    /// The ring's refused record changes already counted in the metrics.
    refusals_counted: RecordRefusals,
    /// Certificate mode: the members' certificates that travel with signed
    /// items, and the wall clock they are checked at.
    certs: Option<Certified>,
    /// Items to store written at one time, signed together when they are
    /// handed to the ring ([`batch_stores`](Self::batch_stores)).
    batched: Option<Vec<Item>>,
    /// The log of bad signatures, once per period.
    bad_signatures: signed::RefusalLog,
    /// What the seal did (certificate mode), and how much of it is already
    /// in the metrics.
    seal_counts: Option<(Arc<signed::SealCounts>, (u64, u64, u64))>,
    /// The operator's ring walks and look-ups under way.
    surveys: walk::Surveys,
    /// This node's load, as its answers to GetPredecessor carry it.
    load: load::LoadMeter,
}

/// The reason phrase of the 403 a non-member gets.
pub const NOT_A_MEMBER: &str = "Forbidden (not an overlay member)";
/// The reason phrase of the 503 a member over its request rate gets.
pub const TOO_MANY_REQUESTS: &str = "Too Many Overlay Requests";

impl Overlay {
    /// A ring of one at `local`, joining through `bootstrap` when given.
    pub fn new(
        local: SocketAddr,
        config: RingConfig,
        bootstrap: &[SocketAddr],
        now: Instant,
    ) -> Overlay {
        let rates = MemberRates::new(config.member_requests, config.member_interval);
        let mut ring = Ring::new(local, config, now);
        ring.set_record_policy(Box::new(records::OverlayRecords));
        info!(node_id = %ring.me().id, %local, "overlay node");
        match ring.config().role {
            Role::Member => {
                for addr in bootstrap {
                    if *addr != local {
                        info!(bootstrap = %addr, "joining the ring");
                        ring.join(*addr, now);
                    }
                }
            }
            role => {
                info!(members = ?bootstrap, ?role, "attaching to a super-node as a client");
                ring.attach(bootstrap, role == Role::Auto, now);
            }
        }
        Overlay {
            ring,
            sent: SentRequests::default(),
            received: HashMap::new(),
            next_incoming: 1,
            batched: None,
            location: RingLocation::new(),
            cseq: 1,
            call_id: None,
            counters: OverlayCounters::default(),
            metrics: Metrics::default(),
            gateways: None,
            relays: relays::Relays::new(relays::DEFAULT_EVERY, now),
            raw_fetches: HashMap::new(),
            fetched: VecDeque::new(),
            raw_stores: HashMap::new(),
            stored: VecDeque::new(),
            claims: HashSet::new(),
            claimed: VecDeque::new(),
            raw_lookups: HashMap::new(),
            found: VecDeque::new(),
            admission: None,
            members: None,
            rates,
            refusals_counted: RecordRefusals::default(),
            certs: None,
            bad_signatures: signed::RefusalLog::default(),
            seal_counts: None,
            surveys: walk::Surveys::default(),
            load: load::LoadMeter::default(),
        }
    }

    /// Turns certificate mode on: overlay messages go over members' mutual
    /// TLS, and only those from a connection with a member certificate are
    /// accepted, as from the member it names (`identity.rs`); items and
    /// removes are signed with `signing` and checked (`signed.rs`).
    /// `wall_at`: the wall-clock time (since the Unix epoch) at `now`.
    pub fn set_certified(&mut self, signing: Arc<Signing>, wall_at: Duration, now: Instant) {
        self.members = Some(Members::default());
        let wall = Wall::new(wall_at, now);
        let book = Arc::new(Mutex::new(CertBook::new(signing.clone())));
        let seals = Seals::new(signing, book.clone(), wall);
        self.seal_counts = Some((seals.verified.counts.clone(), (0, 0, 0)));
        self.ring.set_item_seal(Box::new(seals));
        self.certs = Some(Certified::new(book, wall));
    }

    /// Certificate mode with a data directory: members' certificates saved
    /// by an earlier run are believed again (each checked as if carried),
    /// and every one learnt from now on is handed out by
    /// [`take_new_certs`](Self::take_new_certs) to be saved. Returns how
    /// many were believed (0 outside certificate mode).
    pub fn restore_certs(&mut self, saved: &[Vec<u8>], now: Instant) -> usize {
        self.certs
            .as_ref()
            .map_or(0, |certs| certs.restore(saved, now))
    }

    /// Members' certificates learnt since the last call, by Node-ID, to be
    /// saved beside the items (after [`restore_certs`](Self::restore_certs)).
    pub fn take_new_certs(&mut self) -> Vec<(NodeId, Arc<Vec<u8>>)> {
        self.certs
            .as_ref()
            .map(Certified::take_unsaved)
            .unwrap_or_default()
    }

    /// Certificate mode: the connection from `peer` speaks for `node`,
    /// whose certificate (DER, checked by the handshake) is `cert`: it is
    /// kept as if carried, so that the items `node` signed need not carry
    /// it over this connection (`signed.rs`, [`Certified::attach`]).
    pub fn member_connected(&mut self, peer: Peer, node: SocketAddr, cert: &[u8], now: Instant) {
        if let Some(members) = &mut self.members {
            members.connected(peer, node);
        }
        if let Some(certs) = &self.certs {
            certs.learn_one(cert, now);
        }
    }

    /// A stream connection closed: it speaks for nobody any more.
    pub fn connection_closed(&mut self, peer: Peer) {
        if let Some(members) = &mut self.members {
            members.closed(peer);
        }
    }

    /// Turns shared-secret admission on: every message we send is signed,
    /// and only signed ones are accepted (`admission.rs`).
    pub fn set_admission(&mut self, admission: Admission) {
        self.admission = Some(admission);
    }

    /// Whether admission is on.
    pub fn admits_members_only(&self) -> bool {
        self.admission.is_some() || self.members.is_some()
    }

    /// Signs a request the node sends outside a transaction (a LAN announcement).
    pub fn sign_request(&self, request: &mut Request, now: Instant) {
        if let Some(admission) = &self.admission {
            admission.sign_request(request, now);
        }
    }

    /// Whether a request heard outside a transaction (a LAN announcement)
    /// comes from a member; a refusal is counted.
    pub fn admit(&mut self, request: &Request, source: SocketAddr, now: Instant) -> bool {
        if self.members.is_some() {
            // A multicast datagram carries no certificate.
            self.refused(source, Refused::NoCertificate, now);
            return false;
        }
        let Some(admission) = &mut self.admission else {
            return true;
        };
        match admission.check_request(request, now) {
            Ok(()) => true,
            Err(why) => {
                self.refused(source, why, now);
                false
            }
        }
    }

    /// Counts a refused message and logs it, at most once per period.
    fn refused(&mut self, source: SocketAddr, why: Refused, now: Instant) {
        self.metrics.overlay_refused.inc();
        debug!(%source, reason = %why, "overlay message refused");
        let count = match (&mut self.admission, &mut self.members) {
            (Some(admission), _) => admission.note_refusal(now),
            (None, Some(members)) => members.note_refusal(now),
            (None, None) => Some(1),
        };
        if let Some(count) = count {
            warn!(%source, reason = %why, refused = count, "refused overlay messages from a non-member (counted in overlay_refused_total)");
        }
    }

    /// Answers 503 to a member over its request rate; counted, logged at
    /// most once per period.
    fn rate_limited(
        &mut self,
        key: ServerKey,
        request: &Request,
        source: SocketAddr,
        out: &mut Outbox,
        now: Instant,
    ) {
        self.metrics.overlay_rate_limited.inc();
        if let Some(count) = self.rates.note_refusal(now) {
            warn!(%source, refused = count, "a member is over its overlay request rate (overlay_limits.requests_per_interval; counted in overlay_rate_limited_total)");
        }
        let mut response = request.response(503);
        response.reason = TOO_MANY_REQUESTS.into();
        response
            .headers
            .insert(ezk_sip_types::Name::RETRY_AFTER, "1");
        self.respond(key, response, out, now);
    }

    /// Counts the record changes the ring refused since the last call; bad
    /// signatures are logged at most once per period.
    fn count_record_refusals(&mut self, at: Instant) {
        let now = self.ring.record_refusals();
        let before = std::mem::replace(&mut self.refusals_counted, now);
        self.metrics
            .records_refused
            .inc_by(now.not_writer.saturating_sub(before.not_writer));
        self.metrics
            .items_over_limit
            .inc_by(now.over_limit.saturating_sub(before.over_limit));
        if let Some((counts, counted)) = &mut self.seal_counts {
            let (signed, checked, remembered) = counts.read();
            let metrics = &self.metrics;
            metrics
                .signatures_made
                .inc_by(signed.saturating_sub(counted.0));
            metrics
                .signatures_checked
                .inc_by(checked.saturating_sub(counted.1));
            metrics
                .signatures_remembered
                .inc_by(remembered.saturating_sub(counted.2));
            *counted = (signed, checked, remembered);
        }
        let bad = now.bad_signature.saturating_sub(before.bad_signature);
        if bad > 0 {
            self.metrics.bad_signatures.inc_by(bad);
            if let Some(count) = self.bad_signatures.note(bad, at) {
                warn!(
                    refused = count,
                    "items or removes without their writer's valid signature refused (counted in overlay_bad_signatures_total)"
                );
            }
        }
    }

    /// Answers a request 403 and hands it to nobody.
    fn forbid(&mut self, key: ServerKey, request: &Request, out: &mut Outbox, now: Instant) {
        let mut response = request.response(403);
        response.reason = NOT_A_MEMBER.into();
        self.respond(key, response, out, now);
    }

    /// Sends a response on a server transaction, signed when admission is on.
    fn respond(&mut self, key: ServerKey, mut response: Response, out: &mut Outbox, now: Instant) {
        if let Some(admission) = &self.admission {
            admission.sign_response(&mut response, now);
        }
        out.respond(key, response, now);
    }

    /// True while this node's ring has no other node.
    pub fn is_alone(&self) -> bool {
        self.ring.successor() == self.ring.me()
    }

    /// A peer found by LAN discovery: join it when alone. Returns true when
    /// the announcer should be answered so that it joins us instead.
    pub fn discovered(&mut self, peer: crate::ring::Peer, now: Instant) -> bool {
        if peer.addr == self.ring.me().addr {
            return false;
        }
        if self.is_alone() && !self.ring.is_client() {
            info!(peer = %peer.addr, "discovered a peer on the LAN; joining it");
            self.ring.join(peer.addr, now);
            false
        } else {
            true
        }
    }

    /// Stores an item in the ring (fire and forget); between
    /// [`batch_stores`](Self::batch_stores) and
    /// [`flush_stores`](Self::flush_stores), at the flush.
    pub fn store_item(&mut self, item: Item, now: Instant) {
        match &mut self.batched {
            Some(batched) => batched.push(item),
            None => {
                self.ring.store(item, now);
            }
        }
    }

    /// From now until [`flush_stores`](Self::flush_stores), the items
    /// [`store_item`](Self::store_item) gets are written at one time: in
    /// certificate mode one signature covers them all (`signed/batch.rs`).
    pub fn batch_stores(&mut self) {
        self.batched.get_or_insert_with(Vec::new);
    }

    /// Hands the items stored since [`batch_stores`](Self::batch_stores) to
    /// the ring, signed together.
    pub fn flush_stores(&mut self, now: Instant) {
        if let Some(items) = self.batched.take()
            && !items.is_empty()
        {
            self.ring.store_all(items, now);
        }
    }

    /// Stores an item in the ring; whether it was stored comes from
    /// [`poll_stored`](Self::poll_stored) with `owner`.
    pub fn store_item_for(&mut self, owner: Owner, item: Item, now: Instant) -> OpId {
        let op = self.ring.store(item, now);
        self.raw_stores.insert(op, owner);
        op
    }

    /// A store another part of the node started, done: who asked, and
    /// whether the item is stored.
    pub fn poll_stored(&mut self) -> Option<(Owner, OpId, bool)> {
        self.stored.pop_front()
    }

    /// Claims (key, name) for `item`: stored only if nobody holds it yet
    /// (`ring/claim.rs`); the outcome comes from
    /// [`poll_claimed`](Self::poll_claimed).
    pub fn claim_item(&mut self, item: Item, now: Instant) -> OpId {
        let op = self.ring.claim(item, now);
        self.claims.insert(op);
        op
    }

    /// A claim done: stored, or why not (`Refusal::Taken`: somebody was first).
    pub fn poll_claimed(&mut self) -> Option<(OpId, Result<(), RingError>)> {
        self.claimed.pop_front()
    }

    /// Removes an item from the ring (fire and forget).
    pub fn remove_item(&mut self, key: NodeId, name: String, now: Instant) {
        self.ring.remove(key, name, now);
    }

    /// Removes an item from the ring; whether it was removed comes from
    /// [`poll_stored`](Self::poll_stored) with `owner`.
    pub fn remove_item_for(
        &mut self,
        owner: Owner,
        key: NodeId,
        name: String,
        now: Instant,
    ) -> OpId {
        let op = self.ring.remove(key, name, now);
        self.raw_stores.insert(op, owner);
        op
    }

    /// Starts fetching the items under `key`; the answer comes from [`poll_fetched`](Self::poll_fetched).
    pub fn fetch_items(&mut self, owner: Owner, key: NodeId, now: Instant) -> OpId {
        let op = self.ring.fetch(key, now);
        self.raw_fetches.insert(op, owner);
        op
    }

    /// A fetch another part of the node started, answered: who asked, and what came.
    pub fn poll_fetched(&mut self) -> Option<Fetched> {
        self.fetched.pop_front()
    }

    /// Starts looking up the node responsible for `key` (its successor);
    /// the answer comes from [`poll_found`](Self::poll_found).
    pub fn lookup_for(&mut self, owner: Owner, key: NodeId, now: Instant) -> OpId {
        let op = self.ring.lookup(key, now);
        self.raw_lookups.insert(op, owner);
        op
    }

    /// A look-up another part of the node started, answered.
    pub fn poll_found(&mut self) -> Option<(Owner, OpId, Result<crate::ring::Peer, RingError>)> {
        self.found.pop_front()
    }

    /// Makes this node a gateway of `domains`: it advertises `me` in the ring
    /// and reports every domain's live gateway set (see [`poll_gateways`](Self::poll_gateways)).
    pub fn advertise_gateway(&mut self, me: GatewayRecord, domains: Vec<String>, now: Instant) {
        let every = self.ring.config().stabilize_every;
        self.gateways = Some(Gateways::new(me, domains, every, now));
    }

    /// The live gateway set of each domain, as this gateway last saw it
    /// (by domain); empty on a node that is not a gateway.
    pub fn gateway_sets(&self) -> Vec<(String, Vec<GatewayRecord>)> {
        let mut sets: Vec<(String, Vec<GatewayRecord>)> = self
            .gateways
            .iter()
            .flat_map(|g| g.sets())
            .map(|(d, s)| (d.clone(), s.clone()))
            .collect();
        sets.sort();
        sets
    }

    /// A domain whose live gateway set changed.
    pub fn poll_gateways(&mut self) -> Option<(String, Vec<GatewayRecord>)> {
        self.gateways.as_mut()?.poll_change()
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The ring, to keep its journal or restore its items (durable storage).
    pub fn ring_mut(&mut self) -> &mut Ring {
        &mut self.ring
    }

    pub fn status(&self) -> RingStatus {
        self.ring.status()
    }

    /// Whether a request is an overlay message rather than user traffic.
    pub fn is_overlay(request: &Request) -> bool {
        wire::is_overlay(request)
    }

    /// An overlay request arrived on server transaction `key`.
    pub fn on_request(
        &mut self,
        key: ServerKey,
        request: Request,
        from: Peer,
        out: &mut Outbox,
        now: Instant,
    ) {
        self.counters.requests_in += 1;
        if let Some(admission) = &mut self.admission
            && let Err(why) = admission.check_request(&request, now)
        {
            self.refused(from.addr, why, now);
            return self.forbid(key, &request, out, now);
        }
        // Overlay requests leave from a node's one UDP socket, so the
        // source address is the sender's listening address; in
        // certificate mode it is the one its certificate names.
        let source = match &self.members {
            None => from.addr,
            Some(members) => match members.member(&from) {
                Some(node) => node,
                None => {
                    self.refused(from.addr, Refused::NoCertificate, now);
                    return self.forbid(key, &request, out, now);
                }
            },
        };
        if !self.rates.allow(source, now) {
            return self.rate_limited(key, &request, source, out, now);
        }
        if let Some(certs) = &self.certs {
            certs.learn(&request.headers, now);
        }
        if let Some(peer) = discovery::announcer(&request) {
            // An answer to our announcement (or a unicast one): join it if alone.
            self.respond(key, request.response(200), out, now);
            self.discovered(peer, now);
            return self.pump(out, now);
        }
        match wire::decode_request(&request, now) {
            Ok(ring_request) if !speaks_for_itself(&ring_request, source) => {
                // In every mode: a node tells us of its own arrival or
                // departure only from its own address.
                debug!(%source, "notify or leave on another node's behalf");
                self.metrics.overlay_refused.inc();
                self.forbid(key, &request, out, now);
            }
            Ok(ring_request) => {
                let id = IncomingId(self.next_incoming);
                self.next_incoming += 1;
                self.received.insert(id, (key, request));
                self.ring.handle_request(source, id, ring_request, now);
            }
            Err(error) => {
                debug!(%error, "bad overlay request");
                let mut response = request.response(400);
                response.reason = format!("Bad Overlay Request ({error})");
                self.respond(key, response, out, now);
            }
        }
        self.pump(out, now);
    }

    /// A response on one of our transactions.
    pub fn on_response(
        &mut self,
        key: ClientKey,
        response: &Response,
        out: &mut Outbox,
        now: Instant,
    ) {
        if self.surveys.owns(key) {
            return self.survey_answered(key, response, out, now);
        }
        let Some((id, to)) = self.sent.get(key) else {
            return;
        };
        if response.status < 200 {
            return;
        }
        self.sent.remove(key);
        if let Some(admission) = &mut self.admission
            && let Err(why) = admission.check_response(response, now)
        {
            // Not from a member: as if the request had failed.
            self.refused(to, why, now);
            self.counters.failures += 1;
            self.ring.handle_failure(id, now);
            return self.pump(out, now);
        }
        if let Some(certs) = &self.certs {
            certs.learn(&response.headers, now);
        }
        match wire::decode_response(response, now) {
            Ok(ring_response) => self.ring.handle_response(id, ring_response, now),
            Err(error) => {
                debug!(%error, status = response.status, "bad overlay response");
                self.ring.handle_failure(id, now);
            }
        }
        self.pump(out, now);
    }

    /// One of our transactions timed out.
    pub fn on_timeout(&mut self, key: ClientKey, out: &mut Outbox, now: Instant) {
        if self.surveys.owns(key) {
            self.surveys
                .answered(Some(key), None, Err("no answer".into()));
            return self.pump(out, now);
        }
        let Some((id, _)) = self.sent.remove(key) else {
            return;
        };
        self.counters.failures += 1;
        self.ring.handle_failure(id, now);
        self.pump(out, now);
    }

    pub fn handle_timeout(&mut self, out: &mut Outbox, now: Instant) {
        self.ring.handle_timeout(now);
        self.surveys.handle_timeout(now);
        self.pump(out, now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let gateway = self.gateways.as_ref().and_then(|g| g.poll_timeout());
        [
            self.ring.poll_timeout(),
            gateway,
            self.relays.poll_timeout(),
            self.surveys.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Starts a graceful leave: items go to the successor first.
    pub fn leave(&mut self, out: &mut Outbox, now: Instant) {
        if let Some(gateways) = &mut self.gateways {
            gateways.stop();
        }
        // Our TURN server goes with us (best effort: the remove runs beside
        // the hand-over, and the item expires anyway).
        if let Some((key, name)) = self.relays.withdraw(self.ring.me().id) {
            self.ring.remove(key, name, now);
        }
        self.ring.leave(now);
        self.pump(out, now);
    }

    pub fn has_left(&self) -> bool {
        self.ring.has_left()
    }

    /// Moves work between the ring, the location store and the transactions
    /// until none of them has more.
    pub fn pump(&mut self, out: &mut Outbox, now: Instant) {
        self.count_record_refusals(now);
        loop {
            let mut busy = self.location.start_ops(&mut self.ring, now);
            busy |= self.drive_surveys(out, now);
            if let Some(gateways) = &mut self.gateways {
                busy |= gateways.start_ops(&mut self.ring, now);
            }
            busy |= self.relays.start_ops(&mut self.ring, now);
            while let Some(outgoing) = self.ring.poll_transmit() {
                busy = true;
                self.transmit(outgoing, out, now);
            }
            while let Some(event) = self.ring.poll_event() {
                busy = true;
                self.on_ring_event(event, now);
            }
            if !busy {
                break;
            }
        }
        // Requests the ring no longer waits for: their transactions stop.
        while let Some(id) = self.ring.poll_given_up() {
            if let Some(key) = self.sent.give_up(id, now) {
                out.transactions.give_up(key, sent::GRACE, now);
            }
        }
        self.sent.purge(now);
    }

    fn transmit(&mut self, outgoing: Outgoing, out: &mut Outbox, now: Instant) {
        match outgoing {
            Outgoing::Request { id, to, request } => {
                self.counters.requests_out += 1;
                if matches!(request, crate::ring::RingRequest::GetPredecessor) {
                    self.counters.stabilize_rounds += 1;
                    self.metrics.stabilize_rounds.inc();
                }
                let key = self.send_request(to, &request, out, now);
                self.sent.insert(key, id, to);
            }
            Outgoing::Response { to, response } => {
                let Some((key, original)) = self.received.remove(&to) else {
                    return;
                };
                let mut sip = wire::encode_response(&original, &response, now);
                if let (Some(certs), crate::ring::RingResponse::Items { items }) =
                    (&self.certs, &response)
                {
                    let me = self.ring.me().id;
                    certs.attach(&mut sip.headers, items.iter().map(|i| i.writer), [me]);
                }
                if matches!(response, crate::ring::RingResponse::Predecessor { .. }) {
                    let load = self.load(now).encode();
                    sip.headers
                        .insert(ezk_sip_types::Name::from(load::HEADER), load);
                }
                self.respond(key, sip, out, now);
            }
        }
    }

    /// Sends a ring request of ours as a SIP client transaction (signed
    /// when admission is on, over TLS in certificate mode).
    fn send_request(
        &mut self,
        to: SocketAddr,
        request: &crate::ring::RingRequest,
        out: &mut Outbox,
        now: Instant,
    ) -> ClientKey {
        let mut sip = wire::encode_request(request, &self.ring.me(), to, now);
        if let Some(certs) = &self.certs {
            certs.attach_for_request(&mut sip.headers, request, self.ring.me().id, to);
        }
        self.cseq = self.cseq.wrapping_add(1);
        let me = self.ring.me().addr;
        let call_id = self
            .call_id
            .get_or_insert_with(|| format!("{}@{me}", out.random_hex()));
        let fresh = Fresh {
            branch: out.new_branch(),
            tag: out.random_hex(),
        };
        complete_request(&mut sip, me, call_id, self.cseq, fresh);
        if let Some(admission) = &self.admission {
            admission.sign_request(&mut sip, now);
        }
        // Certificate mode: over the members' mutual TLS.
        let transport = match self.members {
            Some(_) => TransportKind::Tls,
            None => TransportKind::Udp,
        };
        let peer = Peer {
            transport,
            addr: to,
        };
        out.request(owner::OVERLAY, sip, peer, now)
    }

    fn on_ring_event(&mut self, event: RingEvent, now: Instant) {
        match &event {
            RingEvent::Joined { successor } => {
                info!(successor = %successor.addr, successor_id = %successor.id, "joined the ring")
            }
            RingEvent::SuccessorChanged { old, new } => {
                info!(old = ?old.map(|p| p.addr), new = %new.addr, "successor changed")
            }
            RingEvent::PredecessorChanged { old, new } => {
                info!(old = ?old.map(|p| p.addr), new = ?new.map(|p| p.addr), "predecessor changed")
            }
            RingEvent::LookupDone {
                result: Ok((_, hops)),
                ..
            } => {
                self.counters.lookups += 1;
                self.counters.lookup_hops_total += u64::from(*hops);
                self.metrics.lookups.inc();
                self.metrics.lookup_hops.observe(f64::from(*hops));
            }
            RingEvent::Left => info!("left the ring"),
            _ => {}
        }
        if let RingEvent::LookupDone { op, result } = &event
            && self.surveys.routed(*op, result)
        {
            return;
        }
        if let RingEvent::LookupDone { op, result } = &event
            && let Some(owner) = self.raw_lookups.remove(op)
        {
            let found = result.clone().map(|(peer, _)| peer);
            self.found.push_back((owner, *op, found));
            return;
        }
        if let Some(gateways) = &mut self.gateways {
            gateways.on_ring_event(&event);
        }
        self.relays.on_ring_event(&event, now);
        if let RingEvent::StoreDone { op, result } = &event
            && self.claims.remove(op)
        {
            self.claimed.push_back((*op, result.clone()));
            return;
        }
        if let RingEvent::StoreDone { op, result } = &event
            && let Some(owner) = self.raw_stores.remove(op)
        {
            self.stored.push_back((owner, *op, result.is_ok()));
            return;
        }
        if let RingEvent::FetchDone { op, result } = &event
            && let Some(owner) = self.raw_fetches.remove(op)
        {
            self.fetched.push_back(Fetched {
                owner,
                op: *op,
                result: result.clone(),
            });
            return;
        }
        if let Err(error) = self.location.on_ring_event(event, now) {
            warn!(%error, "ring operation failed");
        }
    }
}

/// Whether a request that names the node it speaks for (`notify`: "I am
/// your predecessor"; `leave`: "I am leaving") comes from that node.
fn speaks_for_itself(request: &crate::ring::RingRequest, source: SocketAddr) -> bool {
    use crate::ring::RingRequest;
    match request {
        RingRequest::Notify { predecessor } => predecessor.addr == source,
        RingRequest::Leave { leaving, .. } => leaving.addr == source,
        _ => true,
    }
}

/// A branch and a tag from the core's RNG, for one request.
struct Fresh {
    branch: String,
    tag: String,
}

/// Adds what makes an encoded overlay request a complete SIP request: our
/// Via with a fresh branch, Max-Forwards, Call-ID, CSeq and a From tag.
fn complete_request(
    request: &mut Request,
    local: SocketAddr,
    call_id: &str,
    cseq: u32,
    fresh: Fresh,
) {
    use ezk_sip_types::Name;
    use ezk_sip_types::header::typed::Via;
    let via = Via::new("UDP", local, fresh.branch);
    crate::sip::message::push_via(&mut request.headers, &via);
    if !request.headers.contains(&Name::MAX_FORWARDS) {
        request.headers.insert(Name::MAX_FORWARDS, "70");
    }
    if !request.headers.contains(&Name::CALL_ID) {
        request.headers.insert(Name::CALL_ID, call_id);
    }
    if !request.headers.contains(&Name::CSEQ) {
        request
            .headers
            .insert(Name::CSEQ, format!("{cseq} {}", request.method));
    }
    if let Some(mut from) = request.from_header()
        && from.tag.is_none()
    {
        from.tag = Some(fresh.tag.into());
        request.headers.remove(&Name::FROM);
        request.headers.insert_type(Name::FROM, &from);
    }
}
