//! The node's protocol core, sans-I/O, in str0m's shape: feed it with
//! [`Core::handle_input`] (datagrams and framed stream messages, DNS and
//! ENUM answers, LAN announcements, closed connections, failed sends, time),
//! then drain [`Core::poll_output`] until it gives [`Output::Timeout`]
//! (bytes to send, names to resolve, targets found dead, gateway sets, peers
//! to save, and the next deadline). The driver reads the clock once per
//! wake-up and makes no protocol decision.
//!
//! Inside, components sit side by side, each with its own state: the
//! transactions ([`Outbox`]), the [`Proxy`], the [`Overlay`] (the ring and
//! the location store in it) and the [`Gateway`]. Every client transaction
//! and every look-up is tagged with the component that started it
//! ([`crate::outbox::owner`]), so an answer goes to one place. The core's
//! own modules route requests ([`routing`]), run the registrar's
//! read-modify-write of bindings ([`registration`]), check what comes in
//! ([`checks`]), fetch and publish users' credentials ([`credentials`];
//! the decisions are the [`Auth`] component's), answer STUN on the SIP
//! ports ([`stun`]), send INVITEs to a room on to its focus and answer
//! them there ([`conference`]) and keep the node's periodic chores
//! ([`upkeep`]).
//!
//! Over 800 lines: the input and output enums and the dispatch between the
//! components live here; each component's handling is already in its own
//! file; the next split moves the `Output` queueing into `core/output.rs`.

mod accounts;
mod checks;
mod conference;
mod credentials;
mod diversion;
mod mailbox;
mod offline;
mod presence;
mod registration;
mod routing;
mod stun;
mod turn_service;
mod uas;
mod upkeep;
mod voicemail;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod voicemail_tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use ezk_sip_types::{Method, Name};
use tracing::debug;

use crate::auth::guard::Admission;
use crate::auth::users::UserRecord;
use crate::auth::{Auth, AuthConfig, Sender};
use crate::gateway::Gateway;
use crate::metrics::{self, Metrics};
use crate::outbox::{Outbox, ResolveId, owner};
use crate::overlay::gateways::GatewayRecord;
use crate::overlay::{Fetched, Overlay};
use crate::proxy::{Proxy, RoutingMode, forward_stray};
use crate::registrar::RegistrarConfig;
use crate::registrar::binding::Aor;
use crate::registrar::location::{LocationOp, LocationStore, MemoryLocation};
use crate::ring::OpId;
use crate::sip::message::{HeaderAccess, Message, Response, bad_request_reply};
use crate::sip::target::Destination;
use crate::sip::transaction::{Event, Owner, Peer, ServerKey, Timers};

pub use accounts::{AccountAnswer, AccountRequest};
pub use checks::local_response;
use credentials::Parked;
pub use mailbox::Downloaded;
use registration::{Registering, Waiting};
use upkeep::Upkeep;

/// What the core needs to know about the node.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The address we listen on and put in Via and Record-Route.
    pub local: SocketAddr,
    /// The address of SIP over TLS (`--sips`), if any: ours too.
    pub sips: Option<SocketAddr>,
    /// Domains this node serves (lower case).
    pub domains: Vec<String>,
    pub routing: RoutingMode,
    pub registrar: RegistrarConfig,
    pub timers: Timers,
    /// The hybrid gateway's part (`[gateway]`); defaults route by DNS only.
    pub gateway: p2psip_bridge::config::GatewayConfig,
    /// Seeds the core's one random source (branches, tags, Call-IDs): the
    /// same seed and the same inputs give the same outputs.
    pub seed: u64,
    /// Announce this node on the LAN while it is alone (`--discover`), to
    /// the group on this port.
    pub discover: Option<u16>,
    /// Hand the known peers out to be saved, now and then and on leaving
    /// (the driver writes them to the data directory).
    pub save_peers: bool,
    /// Authentication and limits per source (`auth`, `users`, `[limits]`).
    pub auth: AuthConfig,
    /// Offline messages' bounds and lifetimes (`[messages]`).
    pub messages: crate::messages::MessagesConfig,
    /// Presence and message-summary (`[presence]`).
    pub presence: crate::presence::PresenceConfig,
    /// Voicemail (`[voicemail]`).
    pub voicemail: crate::voicemail::VoicemailConfig,
    /// The media relay for calls behind NAT (`[relay]`).
    pub relay: crate::relay::RelayConfig,
    /// Sign-up and buddy lists through the HTTP window (`[signup]`).
    pub signup: crate::auth::signup::SignupConfig,
    /// Conferences (`[conference]`).
    pub conference: crate::conference::ConferenceConfig,
}

impl CoreConfig {
    /// A configuration with the defaults for everything but the address and domains.
    pub fn new(local: SocketAddr, domains: Vec<String>) -> CoreConfig {
        CoreConfig {
            local,
            sips: None,
            domains,
            routing: RoutingMode::Proxy,
            registrar: RegistrarConfig::default(),
            timers: Timers::default(),
            gateway: Default::default(),
            seed: 0,
            discover: None,
            save_peers: false,
            auth: AuthConfig::default(),
            messages: Default::default(),
            presence: Default::default(),
            voicemail: Default::default(),
            relay: Default::default(),
            signup: Default::default(),
            conference: Default::default(),
        }
    }
}

/// Where bindings live: this process's memory, or the ring.
pub enum Location {
    Memory(MemoryLocation),
    Overlay(Box<Overlay>),
}

impl Location {
    fn store(&mut self) -> &mut dyn LocationStore {
        match self {
            Location::Memory(memory) => memory,
            Location::Overlay(overlay) => &mut overlay.location,
        }
    }

    fn overlay(&mut self) -> Option<&mut Overlay> {
        match self {
            Location::Memory(_) => None,
            Location::Overlay(overlay) => Some(overlay),
        }
    }
}

/// What goes into the core.
#[derive(Clone, Debug)]
pub enum Input {
    /// Bytes from `from`: a datagram, or one message framed off a stream.
    Datagram { bytes: Bytes, from: Peer },
    /// The answer to an [`Output::Resolve`]: peers in the order to try.
    Resolved { id: ResolveId, peers: Vec<Peer> },
    /// The answer to an [`Output::Enum`]: a SIP URI, or none.
    Enum { id: ResolveId, uri: Option<String> },
    /// A datagram heard on the LAN discovery group.
    Announcement { bytes: Bytes },
    /// A stream connection to this peer closed, or could not be opened.
    ConnectionClosed(Peer),
    /// Certificate mode: messages from `peer` (a TLS connection) come
    /// from the overlay member at `node`, as its verified certificate says.
    /// `cert`: that certificate (DER).
    Member {
        peer: Peer,
        node: std::net::SocketAddr,
        cert: std::sync::Arc<Vec<u8>>,
    },
    /// Bytes for this peer could not be sent.
    SendFailed(Peer),
    /// This node's users (its users file, read again): their credentials
    /// are used here and published in the ring for every other node.
    Users(Vec<UserRecord>),
    /// Walk the ring from this node for the operator (answered with
    /// [`Output::Surveyed`] and the same `id`).
    Walk { id: u64 },
    /// Look a key up for the operator: holders, hops, items (answered with
    /// [`Output::Surveyed`]).
    Lookup { id: u64, key: crate::ring::NodeId },
    /// A user's sign-up or buddy list from the HTTP window (answered with
    /// [`Output::Account`] and the same `id`).
    Account {
        id: u64,
        request: accounts::AccountRequest,
    },
    /// Leave the ring gracefully (items handed over), then stop.
    Leave,
    /// The RTP socket asked for with [`Output::OpenMedia`] is bound at
    /// this address (`None`: no port of the range was free).
    MediaOpened {
        call: crate::voicemail::MediaCall,
        local: Option<SocketAddr>,
    },
    /// A voicemail call's media ended (asked, at its limit, or by `#`):
    /// the caller's audio.
    Recorded {
        call: crate::voicemail::MediaCall,
        samples: Vec<i16>,
    },
    /// A relayed call's media ended by itself (silence) or could not be
    /// set up (its ports taken): its ports are free again.
    RelayEnded { session: crate::relay::SessionId },
    /// The TURN server asks for a user's credentials (answered with
    /// [`Output::TurnCredentials`] and the same `id`): from the users file,
    /// the cache, or the ring, as digest authentication finds them.
    TurnCredentials { id: u64, aor: Aor },
    /// The allocations this node's TURN server holds now (advertised in the ring).
    TurnLoad { allocations: u32 },
    /// Find the TURN servers of the ring and choose one (answered with
    /// [`Output::TurnFound`] and the same `id`).
    FindTurn { id: u64 },
    /// What a listening call's media says (a recording deleted, the end).
    Playback {
        call: crate::voicemail::MediaCall,
        event: crate::media::playback::PlaybackEvent,
    },
    /// The HTTP window asks for `aor`'s recording `number` (1 the newest;
    /// `None`: the listing) with this `Authorization` header for the path
    /// `uri` (answered with [`Output::Downloaded`] and the same `id`).
    Download {
        id: u64,
        aor: String,
        number: Option<usize>,
        authorization: Option<String>,
        uri: String,
    },
    /// Time passed (the deadline of the last [`Output::Timeout`], or later).
    Timeout,
}

/// What comes out of the core, in the order to act on it.
#[derive(Clone, Debug)]
pub enum Output {
    /// Bytes to send to a peer.
    Transmit { to: Peer, bytes: Bytes },
    /// Bytes to send to the LAN discovery group.
    Announce { bytes: Bytes },
    /// Resolve a name by RFC 3263 (answer with [`Input::Resolved`]).
    Resolve {
        id: ResolveId,
        destination: Destination,
    },
    /// Look an E.164 number up in ENUM under `suffix` (answer with [`Input::Enum`]).
    Enum {
        id: ResolveId,
        e164: String,
        suffix: String,
    },
    /// A next hop that failed: the resolver's list of dead targets.
    MarkDead(Peer),
    /// The live gateway set of a domain changed (for the DNS zones).
    Gateways {
        domain: String,
        gateways: Vec<GatewayRecord>,
    },
    /// Peers to save for the next start.
    SavePeers(Vec<SocketAddr>),
    /// The operator's walk or look-up `id` ([`Input::Walk`], [`Input::Lookup`]) ended.
    Surveyed {
        id: u64,
        report: crate::overlay::walk::Report,
    },
    /// The answer to [`Input::Account`] `id`.
    Account {
        id: u64,
        answer: accounts::AccountAnswer,
    },
    /// Changes to the items this node holds, to write down before any
    /// output after it (the 2xx that accepted them); given before every
    /// transmit of the same wake-up, so one commit covers them all.
    Persist(Vec<crate::ring::Change>),
    /// Members' certificates learnt (certificate mode, with a data
    /// directory), by Node-ID, to save beside the items so that copies
    /// signed by their writers are believed after a restart.
    PersistCerts(Vec<(crate::ring::NodeId, std::sync::Arc<Vec<u8>>)>),
    /// Bind an RTP socket from `ports` on the node's address for a call
    /// (answer with [`Input::MediaOpened`]).
    OpenMedia {
        call: crate::voicemail::MediaCall,
        ports: (u16, u16),
    },
    /// Run this call's media on its socket (answer with [`Input::Recorded`]
    /// when it ends).
    StartMedia {
        call: crate::voicemail::MediaCall,
        recording: Box<crate::media::recording::Recording>,
    },
    /// End this call's media (BYE).
    EndMedia { call: crate::voicemail::MediaCall },
    /// Open, update or close a relayed call's media (`crate::relay`).
    Relay(crate::relay::RelayCommand),
    /// The answer to [`Input::TurnCredentials`]: the user's record, none
    /// (no such user), or why the ring could not say.
    TurnCredentials {
        id: u64,
        found: Result<Option<UserRecord>, String>,
    },
    /// The answer to [`Input::FindTurn`]: the servers ranked, the one chosen.
    TurnFound {
        id: u64,
        choice: crate::overlay::relays::RelayChoice,
    },
    /// Play recordings back on this call's socket (its events come back
    /// as [`Input::Playback`]).
    StartPlayback {
        call: crate::voicemail::MediaCall,
        playback: Box<crate::media::playback::Playback>,
    },
    /// The answer to [`Input::Download`] `id`.
    Downloaded { id: u64, answer: Downloaded },
    /// A participant joins `room`'s mixer with the socket bound for `call`
    /// ([`Output::OpenMedia`]); her stream is `ssrc`; with `pin`, she keys
    /// it in before she is heard.
    JoinConference {
        room: String,
        call: crate::voicemail::MediaCall,
        offer: crate::media::sdp::Offer,
        ssrc: u32,
        pin: Option<String>,
    },
    /// A participant left `room` (BYE); `last`: the room ends.
    LeaveConference {
        room: String,
        call: crate::voicemail::MediaCall,
        last: bool,
    },
    /// Nothing more now: call [`Core::handle_input`] with
    /// [`Input::Timeout`] at this instant, or earlier with other input.
    Timeout(Instant),
}

/// Transactions alive at most: beyond it new requests are shed with a
/// stateless 503 before memory grows without bound. A REGISTER's server
/// transaction lives 32 s after its answer (Timer J over UDP) at 2–5 KB, so
/// this holds about 3,000 authenticated REGISTERs a second (a challenge and
/// the answer each) in under 1 GB.
pub const MAX_TRANSACTIONS: usize = 200_000;

/// The node's protocol state.
pub struct Core {
    config: CoreConfig,
    out: Outbox,
    proxy: Proxy,
    location: Location,
    gateway: Gateway,
    auth: Auth,
    /// Requests waiting for their user's credentials from the ring.
    parked: HashMap<OpId, Parked>,
    /// The TURN server's credential look-ups waiting for the ring.
    turn_waiting: HashMap<OpId, (u64, Aor)>,
    /// Versions of the credentials this node publishes.
    credentials_version: u64,
    /// Location operations in progress, and what the core does with each answer.
    waiting: HashMap<LocationOp, Waiting>,
    /// Location operations the gateway started (it ignores their answers).
    gateway_ops: HashSet<LocationOp>,
    next_op: u64,
    /// Forks routed to a looked-up user, to drop a cached answer that failed.
    routed: HashMap<ServerKey, Aor>,
    /// REGISTERs waiting for the one in progress for the same AOR.
    registering: Registering,
    /// INVITEs cancelled before they were forwarded (already answered 487).
    cancelled: HashSet<ServerKey>,
    upkeep: Upkeep,
    /// Offline instant messages: kept in the ring, delivered on REGISTER.
    messages: crate::messages::OfflineMessages,
    /// The notifier of presence and message-summary subscriptions.
    presence: crate::presence::Presence,
    /// Voicemail: calls to offline users answered and recorded.
    voicemail: crate::voicemail::Voicemail,
    /// Calls to users with live bindings that voicemail may still take.
    diversions: crate::voicemail::diversion::Diversions,
    /// The 200s of calls the node answered itself, until their ACK.
    answers: crate::sip::uas::Answers<crate::voicemail::MediaCall>,
    /// Sign-up and buddy lists (`accounts.rs`).
    accounts: accounts::Accounts,
    /// Conferences: the rooms this node is the focus of.
    conference: crate::conference::Conferences,
    /// Outputs other than transmits, in order.
    outputs: VecDeque<Output>,
    pub metrics: Metrics,
}

impl Core {
    pub fn new(config: CoreConfig, mut location: Location, now: Instant) -> Core {
        let metrics = Metrics::default();
        if let Some(overlay) = location.overlay() {
            overlay.metrics = metrics.clone();
        }
        let mut out = Outbox::new(config.timers, config.seed);
        let mut secret = [0u8; 32];
        for chunk in secret.chunks_mut(8) {
            chunk.copy_from_slice(&out.seed().to_be_bytes());
        }
        let auth = Auth::new(config.auth.clone(), secret, now);
        if let Some(overlay) = location.overlay() {
            // Our lookups' nonces (semi-recursive answers) are unguessable.
            overlay.ring_mut().set_nonce_secret(out.seed());
        }
        let gateway = Gateway::new(
            config.gateway.clone(),
            config.domains.clone(),
            config.local,
            out.seed(),
            now,
        );
        Core {
            upkeep: Upkeep::new(&config, now),
            messages: crate::messages::OfflineMessages::new(config.messages.clone()),
            presence: crate::presence::Presence::new(
                config.presence.clone(),
                config.local,
                config.sips,
                metrics.clone(),
            ),
            voicemail: crate::voicemail::Voicemail::new(config.voicemail.clone()),
            diversions: crate::voicemail::diversion::Diversions::new(config.voicemail.no_answer),
            answers: crate::sip::uas::Answers::new(config.timers),
            accounts: accounts::Accounts::new(config.signup.clone()),
            conference: crate::conference::Conferences::new(config.conference.clone()),
            out,
            proxy: Proxy::new(config.local)
                .with_tls(config.sips)
                .with_relay(config.relay.clone()),
            location,
            gateway,
            auth,
            parked: HashMap::new(),
            turn_waiting: HashMap::new(),
            credentials_version: 0,
            waiting: HashMap::new(),
            gateway_ops: HashSet::new(),
            next_op: 1,
            routed: HashMap::new(),
            registering: Registering::default(),
            cancelled: HashSet::new(),
            outputs: VecDeque::new(),
            metrics,
            config,
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The wall-clock time at `now` (ms since the Unix epoch), from the
    /// driver: Date headers and the order of stored messages.
    pub fn set_wall_clock(&mut self, wall_ms: u64, now: Instant) {
        self.messages.set_wall_clock(wall_ms, now);
        self.presence.set_wall_clock(wall_ms, now);
    }

    /// Feeds one input at `now`.
    pub fn handle_input(&mut self, input: Input, now: Instant) {
        self.restore_presence(now);
        match input {
            Input::Datagram { bytes, from } => self.receive(bytes, from, now),
            Input::Resolved { id, peers } => match self.out.asker(id) {
                Some(owner::GATEWAY) => self.gateway.on_resolved(id, &peers, &mut self.out, now),
                Some(owner::PROXY) => self.proxy.resolved(id, &peers, &mut self.out, now),
                _ => debug!(?id, "an answer nobody asked for"),
            },
            Input::Enum { id, uri } => {
                if self.out.asker(id) == Some(owner::GATEWAY)
                    && let Some((key, request, e164)) = self.gateway.enum_answered(id)
                    && !self.cancelled.remove(&key)
                {
                    self.telephone(key, request, &e164, uri.as_deref(), now);
                }
            }
            Input::Announcement { bytes } => self.on_announcement(bytes, now),
            Input::Member { peer, node, cert } => {
                if let Some(overlay) = self.location.overlay() {
                    overlay.member_connected(peer, node, &cert, now);
                }
            }
            Input::ConnectionClosed(peer) | Input::SendFailed(peer) => {
                if let Some(overlay) = self.location.overlay() {
                    overlay.connection_closed(peer);
                }
                if peer.transport.reliable() {
                    self.connection_failed(peer, now);
                }
                // Whatever was on its way to the peer will not arrive: the
                // client transactions end at once (RFC 3261 §17.1.4), and
                // their owners fail over instead of waiting for Timer B/F.
                self.out.transactions.peer_failed(peer, now);
            }
            Input::Users(users) => self.set_users(users, now),
            Input::TurnCredentials { id, aor } => self.turn_credentials(id, aor, now),
            Input::TurnLoad { allocations } => self.on_turn_load(allocations),
            Input::FindTurn { id } => self.find_turn(id, now),
            Input::Walk { id } => match self.location.overlay() {
                Some(overlay) => {
                    overlay.start_walk(id, &mut self.out, now);
                }
                None => self.outputs.push_back(Output::Surveyed {
                    id,
                    report: crate::overlay::walk::Report::Walk(Default::default()),
                }),
            },
            Input::Lookup { id, key } => match self.location.overlay() {
                Some(overlay) => {
                    overlay.start_lookup(id, key, &mut self.out, now);
                }
                None => self.outputs.push_back(Output::Surveyed {
                    id,
                    report: crate::overlay::walk::Report::Lookup(Err(
                        "this node is not in an overlay".into(),
                    )),
                }),
            },
            Input::Account { id, request } => self.on_account(id, request, now),
            Input::Leave => self.leave(now),
            Input::MediaOpened { call, local } if self.is_conference_media(call) => {
                self.on_conference_opened(call, local, now)
            }
            Input::MediaOpened { call, local } => self.on_media_opened(call, local, now),
            Input::Recorded { call, samples } => self.on_recorded(call, &samples, now),
            Input::RelayEnded { session } => self.proxy.relay.ended(session),
            Input::Playback { call, event } => self.on_playback(call, event, now),
            Input::Download {
                id,
                aor,
                number,
                authorization,
                uri,
            } => {
                let download = crate::voicemail::mailbox::Download {
                    id,
                    number,
                    authorization,
                    uri,
                };
                self.download(id, &aor, download, now)
            }
            Input::Timeout => self.handle_timeout(now),
        }
        self.process(now);
    }

    /// The next output; ends with [`Output::Timeout`] when nothing is left.
    pub fn poll_output(&mut self) -> Output {
        if let Some(overlay) = self.location.overlay() {
            let changes = overlay.ring_mut().take_changes();
            if !changes.is_empty() {
                return Output::Persist(changes);
            }
            let certs = overlay.take_new_certs();
            if !certs.is_empty() {
                return Output::PersistCerts(certs);
            }
        }
        if let Some((to, bytes)) = self.out.poll_transmit() {
            self.metrics.count(metrics::label_of_bytes(&bytes), "out");
            return Output::Transmit { to, bytes };
        }
        if let Some(output) = self.outputs.pop_front() {
            return output;
        }
        if let Some(command) = self.proxy.relay.poll_command() {
            return Output::Relay(command);
        }
        if let Some((id, destination)) = self.out.poll_resolve() {
            return Output::Resolve { id, destination };
        }
        if let Some((id, e164)) = self.out.poll_enum() {
            let suffix = self.gateway.enum_suffix();
            return Output::Enum { id, e164, suffix };
        }
        if let Some(peer) = self.proxy.take_dead().into_iter().next() {
            return Output::MarkDead(peer);
        }
        if let Some((domain, gateways)) = self.location.overlay().and_then(|o| o.poll_gateways()) {
            return Output::Gateways { domain, gateways };
        }
        if let Some((id, report)) = self.location.overlay().and_then(|o| o.poll_surveyed()) {
            return Output::Surveyed { id, report };
        }
        Output::Timeout(self.poll_timeout())
    }

    /// The overlay, when this node is part of one.
    pub fn overlay(&self) -> Option<&Overlay> {
        match &self.location {
            Location::Overlay(overlay) => Some(overlay),
            Location::Memory(_) => None,
        }
    }

    /// This node's place in the overlay.
    pub fn me(&self) -> Option<crate::ring::Peer> {
        self.overlay().map(|o| o.ring().me())
    }

    /// True while this node's ring has no other node.
    pub fn is_alone(&self) -> bool {
        self.overlay().is_some_and(|o| o.is_alone())
    }

    /// Makes this node a gateway of its domains, advertised in the ring.
    pub fn advertise_gateway(&mut self, me: GatewayRecord, now: Instant) {
        let domains = self.gateway.served_domains();
        if let Some(overlay) = self.location.overlay() {
            overlay.advertise_gateway(me, domains, now);
        }
        self.process(now);
    }

    /// True once a leave asked with [`Input::Leave`] is complete (or has
    /// run out of time): the driver may stop.
    pub fn has_stopped(&self, now: Instant) -> bool {
        self.upkeep
            .leaving_until()
            .is_some_and(|until| now >= until || self.overlay().is_none_or(|o| o.has_left()))
    }

    /// Addresses-of-record with live bindings in this node's store.
    pub fn registrations(&mut self) -> usize {
        self.location.store().len()
    }

    /// Live transactions and forks, for metrics.
    pub fn load(&self) -> (usize, usize) {
        (self.out.transactions.len(), self.proxy.len())
    }

    /// Overlay users registered at the legacy registrar now.
    pub fn cross_registered(&self) -> Vec<String> {
        self.gateway.cross_registered()
    }

    /// Bytes received from `from` (a datagram, or one framed message).
    fn receive(&mut self, bytes: Bytes, from: Peer, now: Instant) {
        let sender = self.sender(from);
        let retry_after = match self.auth.admit(sender, now) {
            Admission::Serve => None,
            Admission::Drop => return,
            Admission::Busy { retry_after } => Some(retry_after),
        };
        // A CRLF keep-alive in a datagram (on streams the framing answers
        // them): no answer, not a 400.
        if crate::sip::stun::is_keepalive(&bytes) {
            return;
        }
        if crate::sip::stun::looks_like_stun(&bytes) {
            if retry_after.is_none() {
                self.on_stun(&bytes, from, now);
            }
            return;
        }
        match Message::parse(bytes.clone()) {
            Err(error) => {
                debug!(%error, from = %from.addr, "unparsable message");
                if let Some(reply) = bad_request_reply(&bytes, &error.to_string()) {
                    self.out.raw(from, reply);
                }
            }
            Ok(Message::Request(request))
                if retry_after.is_some()
                    || (self.out.transactions.len() >= MAX_TRANSACTIONS
                        && request.method != Method::ACK) =>
            {
                // Over its limit: a stateless 503, no transaction, no work.
                if request.method != Method::ACK && request.top_via().is_some() {
                    let mut response = request.final_response(503);
                    let seconds = retry_after.unwrap_or(5).to_string();
                    response.headers.insert(Name::RETRY_AFTER, seconds);
                    self.out.stateless(from, &Message::Response(response));
                }
            }
            Ok(Message::Request(mut request)) => {
                self.metrics.count(metrics::label_of(&request.method), "in");
                if let Err(why) = checks::validate(&request) {
                    debug!(why, from = %from.addr, "bad request");
                    // An ACK is never answered (RFC 3261 §17.2.3).
                    if request.top_via().is_some() && request.method != Method::ACK {
                        let mut response = request.final_response(400);
                        response.reason = format!("Bad Request ({why})");
                        self.out.stateless(from, &Message::Response(response));
                    }
                    return;
                }
                checks::stamp_via(&mut request, from);
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
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.proxy.handle_timeout(&mut self.out, now);
        self.diversions_due(now);
        self.answers_due(now);
        self.out.transactions.handle_timeout(now);
        if let Some(overlay) = self.location.overlay() {
            overlay.handle_timeout(&mut self.out, now);
        }
        self.gateway
            .handle_timeout(self.location.overlay(), &mut self.out, now);
        self.adopt_subscriptions(now);
        self.presence.handle_timeout(&mut self.out, now);
        self.upkeep_due(now);
    }

    fn poll_timeout(&self) -> Instant {
        let mut deadline = self.upkeep.poll_timeout(self.is_alone());
        let others = [
            self.out.transactions.poll_timeout(),
            self.proxy.poll_timeout(),
            self.gateway.poll_timeout(),
            self.overlay().and_then(|o| o.poll_timeout()),
            self.presence.poll_timeout(),
            self.diversions.poll_timeout(),
            self.answers.poll_timeout(),
        ];
        for t in others.into_iter().flatten() {
            deadline = deadline.min(t);
        }
        deadline
    }

    /// Drains events of the transaction layer and answers of the store
    /// until neither has more.
    fn process(&mut self, now: Instant) {
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
                if self.gateway_ops.remove(&op) {
                    if let Some((aor, bindings)) = self.gateway.on_location(op, answer, now) {
                        let save = self.op();
                        self.location.store().save(save, &aor, bindings, now);
                        self.gateway_ops.insert(save);
                    }
                } else {
                    self.on_location(op, answer, now);
                }
            }
            while let Some((server, response)) = self.proxy.poll_registered() {
                if let Some(fetch) = self.gateway.on_registered(server, &response) {
                    let op = self.op();
                    self.location.store().fetch(op, fetch.aor(), now);
                    self.gateway_ops.insert(op);
                    self.gateway.mirror_fetching(op, fetch);
                }
            }
            while let Some(fetched) = self.location.overlay().and_then(|o| o.poll_fetched()) {
                busy = true;
                match fetched.owner {
                    owner::GATEWAY => {
                        let Fetched { op, result, .. } = fetched;
                        self.gateway.on_fetched(op, result, &mut self.out, now)
                    }
                    owner::AUTH => self.on_credentials(fetched.op, fetched.result, now),
                    owner::MESSAGES => self.on_messages_fetched(fetched.op, fetched.result, now),
                    owner::PRESENCE => self.on_presence_fetched(fetched.op, fetched.result, now),
                    owner::VOICEMAIL => self.on_voicemail_fetched(fetched.op, fetched.result, now),
                    owner::ACCOUNTS => self.on_account_fetched(fetched.op, fetched.result, now),
                    other => debug!(?other, "a fetch for no component"),
                }
            }
            while let Some((who, op, stored)) =
                self.location.overlay().and_then(|o| o.poll_stored())
            {
                busy = true;
                match who {
                    owner::PRESENCE => self.on_presence_stored(op, stored, now),
                    owner::VOICEMAIL => self.on_voicemail_stored(op, stored, now),
                    owner::ACCOUNTS => self.on_account_stored(op, stored),
                    _ => self.on_messages_stored(op, stored, now),
                }
            }
            busy |= self.turn_answers(now);
            while let Some((op, result)) = self.location.overlay().and_then(|o| o.poll_claimed()) {
                busy = true;
                self.on_claimed(op, result, now);
            }
            while let Some((who, op, result)) = self.location.overlay().and_then(|o| o.poll_found())
            {
                busy = true;
                match who {
                    owner::CONFERENCE => self.on_focus_found(op, result, now),
                    other => debug!(?other, "a look-up for no component"),
                }
            }
            busy |= self.start_presence_ops(now);
            while let Some((server, failure)) = self.proxy.poll_held() {
                busy = true;
                self.on_held(server, failure, now);
            }
            while let Some((server, status)) = self.proxy.poll_finished() {
                self.fork_ended(server);
                self.gateway.forget_mirror(server);
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

    /// One event of the transaction layer, to the component it belongs to.
    fn on_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Request { key, request, from } => {
                if let Some(overlay) = self.location.overlay()
                    && Overlay::is_overlay(&request)
                {
                    return overlay.on_request(key, request, from, &mut self.out, now);
                }
                if self.in_voicemail_call(&request) {
                    return self.voicemail_request(key, request, now);
                }
                if self.in_conference_call(&request) {
                    return self.conference_request(key, request, now);
                }
                self.on_request(key, request, from, now)
            }
            Event::Ack { request, .. }
                if self.in_voicemail_call(&request) || self.in_conference_call(&request) =>
            {
                self.on_answer_acked(&request)
            }
            Event::Ack { mut request, .. } => {
                self.strip_own_routes(&mut request);
                if checks::decrement_max_forwards(&mut request) {
                    self.proxy.forward_stateless(request, &mut self.out, now);
                }
            }
            Event::Cancel {
                invite, request, ..
            } => {
                // Diverted to voicemail and not answered yet: the proxy's
                // fork (if still there) no longer answers for the call.
                let diverted = self.voicemail.is_answering(invite);
                if !self.proxy.on_cancel(invite, &mut self.out, now) || diverted {
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
            Event::Response {
                key,
                owner,
                response,
            } => self.hand_to_owner(owner, key, Some(response), now),
            Event::Timeout { key, owner } => self.hand_to_owner(owner, key, None, now),
            Event::StrayResponse { response, .. } => {
                let local = self.config.local;
                let ours = response.top_via().is_some_and(|via| {
                    via.sent_by.ip() == Some(local.ip())
                        && via.sent_by.port.unwrap_or(5060) == local.port()
                });
                if ours {
                    let mut response = response;
                    self.proxy.relay.on_response(&mut response);
                    forward_stray(response, &mut self.out);
                }
            }
        }
    }

    /// A response (or, with none, a timeout) on a client transaction, to the
    /// component that started it.
    fn hand_to_owner(
        &mut self,
        owner: Owner,
        key: crate::sip::transaction::ClientKey,
        response: Option<Response>,
        now: Instant,
    ) {
        let out = &mut self.out;
        match (owner, response) {
            (owner::PROXY, Some(response)) => self.proxy.on_response(key, response, out, now),
            (owner::PROXY, None) => self.proxy.on_timeout(key, out, now),
            (owner::OVERLAY, response) => {
                if let Some(overlay) = self.location.overlay() {
                    match response {
                        Some(response) => overlay.on_response(key, &response, out, now),
                        None => overlay.on_timeout(key, out, now),
                    }
                }
            }
            (owner::GATEWAY, response) => {
                self.gateway.on_response(key, response.as_ref(), out, now)
            }
            (owner::MESSAGES, response) => {
                self.on_delivery_answer(key, response.map(|r| r.status), now)
            }
            (owner::PRESENCE, response) => {
                self.on_notify_answer(key, response.map(|r| r.status), now)
            }
            (owner::VOICEMAIL | owner::CONFERENCE, _) => {}
            (other, _) => debug!(?other, ?key, "an event for no component"),
        }
    }

    /// What the node knows of a source before it reads a byte of it.
    fn sender(&self, from: Peer) -> Sender {
        Sender {
            ip: from.addr.ip(),
            member: self.overlay().is_some_and(|o| o.ring().knows(from.addr)),
        }
    }

    fn op(&mut self) -> LocationOp {
        self.next_op += 1;
        LocationOp(self.next_op)
    }
}
