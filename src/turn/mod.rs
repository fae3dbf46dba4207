//! A TURN server (RFC 8656), sans-I/O, for phones that relay their media
//! through a node (ICE's relayed candidates). Fed with datagrams from
//! clients and from peers, the users' keys it asked for, the relay sockets
//! it asked the driver to bind, and time; it answers with datagrams to send
//! (to a client from the TURN port, to a peer from a relay port), sockets
//! to open and close, credential look-ups, and its next deadline:
//! [`Server::handle_input`], then [`Server::poll_output`] until
//! [`Output::Timeout`]. `src/node/turn.rs` is its driver.
//!
//! What it does: Allocate (UDP relays, REQUESTED-TRANSPORT 17, EVEN-PORT
//! and RESERVATION-TOKEN for RTP/RTCP pairs), Refresh (lifetime 0 ends an
//! allocation), CreatePermission, ChannelBind, Send and Data indications,
//! ChannelData ([`channel`]), Binding; long-term credentials (RFC 8489
//! §9.2) whose key is the user's digest HA1 ([`nonce::Key`]), so a user's
//! SIP password is her TURN password. Bounded: allocations in all and per
//! user, permissions and channels per allocation, relay ports from a range,
//! requests waiting for credentials; a malformed datagram is dropped.

pub mod channel;
pub mod nonce;

mod allocate;
mod allocation;
mod credentials;
mod relay;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::sip::stun::message::{Integrity, Message, Writer, method};
use crate::sip::stun::{self, Class, attr};
use allocation::Allocation;
pub use nonce::Key;
use nonce::Nonces;

/// How long a permission lasts without a refresh (RFC 8656 §9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// How long a channel binding lasts without a refresh (RFC 8656 §12).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// How long a reserved port waits for its RESERVATION-TOKEN (RFC 8656 §7.2).
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// How long a user's key (or its absence) is trusted before it is asked again.
pub const KEY_CACHE_FOR: Duration = Duration::from_secs(30);
/// Requests waiting for their user's key at most, and how long each waits.
const MAX_WAITING: usize = 256;
const WAIT_AT_MOST: Duration = Duration::from_secs(5);
/// Users' keys cached at most.
const MAX_KEYS: usize = 10_000;
/// How often expired permissions, channels and cached keys are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Tries at binding a relay port before 508.
const BIND_TRIES: u8 = 8;

/// Comprehension-required attributes a request may carry here.
const KNOWN: [u16; 15] = [
    attr::USERNAME,
    attr::REALM,
    attr::NONCE,
    attr::ERROR_CODE,
    attr::CHANNEL_NUMBER,
    attr::LIFETIME,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::XOR_RELAYED_ADDRESS,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::EVEN_PORT,
    attr::REQUESTED_TRANSPORT,
    attr::RESERVATION_TOKEN,
    attr::XOR_MAPPED_ADDRESS,
    attr::PRIORITY,
];

/// How the server runs.
#[derive(Clone, Debug)]
pub struct TurnConfig {
    /// The TURN port's address (what Binding answers from).
    pub listen: SocketAddr,
    /// The realm of the long-term credentials: the users' domain.
    pub realm: String,
    /// The address relay sockets are bound on.
    pub relay_ip: IpAddr,
    /// The relay ports, LOW..=HIGH.
    pub ports: (u16, u16),
    /// Allocations at most, in all and per user (beyond: 508, 486).
    pub max_allocations: usize,
    pub max_per_user: usize,
    /// Permissions (peer IPs) and channels per allocation at most (beyond: 508).
    pub max_permissions: usize,
    pub max_channels: usize,
    /// The lifetime given when the client asks less, and the most it may ask.
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    /// How long a nonce is good for (then 438).
    pub nonce_lifetime: Duration,
    /// Signs the nonces; and seeds the reservation tokens.
    pub secret: [u8; 32],
    /// Requests per source and the block after failed authentications
    /// (the node's `[limits]`, as for SIP).
    pub limits: crate::auth::guard::Limits,
}

impl TurnConfig {
    /// The defaults for everything but the addresses, the realm and the secret.
    pub fn new(listen: SocketAddr, realm: String, secret: [u8; 32]) -> TurnConfig {
        TurnConfig {
            listen,
            realm,
            relay_ip: listen.ip(),
            ports: (49152, 65535),
            max_allocations: 1000,
            max_per_user: 10,
            max_permissions: 64,
            max_channels: 64,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(600),
            secret,
            limits: crate::auth::guard::Limits::for_auth(),
        }
    }
}

/// What goes into the server.
#[derive(Debug)]
pub enum Input<'a> {
    /// A datagram from a client on the TURN port.
    FromClient { from: SocketAddr, bytes: &'a [u8] },
    /// A datagram that reached relay port `port` from the peer `from`.
    FromPeer {
        port: u16,
        from: SocketAddr,
        bytes: &'a [u8],
    },
    /// The answer to [`Output::FetchCredentials`]: the user's key, or none
    /// (no such user).
    Credentials { username: String, key: Option<Key> },
    /// The answer to [`Output::OpenRelay`]: the port is bound, or not.
    RelayOpened { port: u16, ok: bool },
    /// Time passed (the last [`Output::Timeout`], or later).
    Timeout,
}

/// What comes out, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Send from the TURN port to a client.
    ToClient { to: SocketAddr, bytes: Vec<u8> },
    /// Send from relay port `port` to a peer.
    ToPeer {
        port: u16,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    /// Look up the key of `username` in the realm (answer with [`Input::Credentials`]).
    FetchCredentials { username: String },
    /// Bind a UDP socket on the relay address and this port (answer with
    /// [`Input::RelayOpened`]).
    OpenRelay { port: u16 },
    /// Close the socket of this relay port.
    CloseRelay { port: u16 },
    /// Nothing more now: call again with [`Input::Timeout`] then.
    Timeout(Instant),
}

/// Counters for the status page and `/metrics`.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct TurnCounters {
    pub allocations: usize,
    pub allocated_total: u64,
    pub refused_total: u64,
    pub relayed_to_peers: u64,
    pub relayed_to_clients: u64,
}

/// The TURN server's state.
pub struct Server {
    config: TurnConfig,
    nonces: Nonces,
    /// Requests per source, and sources blocked after failed authentications.
    guard: crate::auth::guard::Guard,
    /// By the client's address (the 5-tuple: one TURN socket, UDP).
    allocations: HashMap<SocketAddr, Allocation>,
    /// The client of each relay port.
    by_port: HashMap<u16, SocketAddr>,
    /// Allocation expiries, earliest first.
    expiries: BTreeSet<(Instant, SocketAddr)>,
    per_user: HashMap<String, usize>,
    /// Allocations waiting for their relay sockets.
    pending: HashMap<SocketAddr, allocate::Pending>,
    pending_ports: HashMap<u16, SocketAddr>,
    /// Reserved ports (EVEN-PORT with R) by token, and when they lapse.
    reservations: HashMap<u64, (u16, Instant)>,
    /// Every port bound or being bound: allocations, reservations, pending.
    ports_used: HashSet<u16>,
    /// Where the search for a free port starts next (offset into the range).
    next_port: u32,
    /// Users' keys (or `None`: no such user) and when they were learnt.
    keys: HashMap<String, (Option<Key>, Instant)>,
    /// Requests waiting for their user's key: client, bytes, since when.
    waiting: HashMap<String, Vec<(SocketAddr, Vec<u8>, Instant)>>,
    waiting_count: usize,
    /// Reservation tokens come from here (xorshift, seeded by the secret).
    rng: u64,
    next_sweep: Instant,
    outputs: VecDeque<Output>,
    pub counters: TurnCounters,
}

impl Server {
    pub fn new(config: TurnConfig, now: Instant) -> Server {
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&config.secret[..8]);
        Server {
            nonces: Nonces::new(config.secret, now, config.nonce_lifetime),
            guard: crate::auth::guard::Guard::new(config.limits.clone()),
            allocations: HashMap::new(),
            by_port: HashMap::new(),
            expiries: BTreeSet::new(),
            per_user: HashMap::new(),
            pending: HashMap::new(),
            pending_ports: HashMap::new(),
            reservations: HashMap::new(),
            ports_used: HashSet::new(),
            next_port: 0,
            keys: HashMap::new(),
            waiting: HashMap::new(),
            waiting_count: 0,
            rng: u64::from_be_bytes(seed) | 1,
            next_sweep: now + SWEEP_EVERY,
            outputs: VecDeque::new(),
            counters: TurnCounters::default(),
            config,
        }
    }

    pub fn config(&self) -> &TurnConfig {
        &self.config
    }

    /// Feeds one input.
    pub fn handle_input(&mut self, input: Input<'_>, now: Instant) {
        match input {
            Input::FromClient { from, bytes } => self.on_client(from, bytes, now),
            Input::FromPeer { port, from, bytes } => self.on_peer_data(port, from, bytes, now),
            Input::Credentials { username, key } => self.on_credentials(username, key, now),
            Input::RelayOpened { port, ok } => self.on_relay_opened(port, ok, now),
            Input::Timeout => self.on_timeout(now),
        }
    }

    /// The next thing to do; [`Output::Timeout`] when there is nothing more.
    pub fn poll_output(&mut self) -> Output {
        self.outputs
            .pop_front()
            .unwrap_or_else(|| Output::Timeout(self.deadline()))
    }

    fn deadline(&self) -> Instant {
        let mut deadline = self.next_sweep;
        if let Some((at, _)) = self.expiries.first() {
            deadline = deadline.min(*at);
        }
        for (_, at) in self.reservations.values() {
            deadline = deadline.min(*at);
        }
        deadline
    }

    fn on_client(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        if channel::looks_like_channel_data(bytes) {
            if let Some((number, data)) = channel::parse(bytes) {
                self.channel_data(from, number, data, now);
            }
            return;
        }
        let message = match Message::parse(bytes) {
            Ok(m) => m,
            Err(error) => {
                debug!(%error, %from, "malformed TURN message dropped");
                return;
            }
        };
        match (message.class, message.method) {
            (Class::Indication, method::SEND) => self.send_indication(from, &message, now),
            (Class::Request, method::BINDING) => {
                if let Ok(
                    stun::Answer::Binding(reply) | stun::Answer::Refusal { bytes: reply, .. },
                ) = stun::answer(bytes, from, self.config.listen)
                {
                    self.send_to_client(from, reply);
                }
            }
            (Class::Request, _) => {
                // Over its rate or blocked after failed authentications: silence.
                if self.guard.admit(from.ip(), now) != crate::auth::guard::Admission::Serve {
                    return;
                }
                self.request(from, &message, bytes, now)
            }
            _ => {}
        }
    }

    /// An authenticated request's dispatch (after the unknown-attribute check).
    fn request(&mut self, from: SocketAddr, message: &Message<'_>, bytes: &[u8], now: Instant) {
        let unknown = message.unknown(&KNOWN);
        if !unknown.is_empty() {
            let list: Vec<u8> = unknown.iter().flat_map(|k| k.to_be_bytes()).collect();
            let mut out = Writer::answer(message, Class::Error);
            out.error(420, "Unknown Attribute")
                .attribute(attr::UNKNOWN_ATTRIBUTES, &list);
            return self.refuse(from, out.finish(None, message.fingerprint));
        }
        if !matches!(
            message.method,
            method::ALLOCATE | method::REFRESH | method::CREATE_PERMISSION | method::CHANNEL_BIND
        ) {
            let mut out = Writer::answer(message, Class::Error);
            out.error(400, "Bad Request");
            return self.refuse(from, out.finish(None, message.fingerprint));
        }
        let Some(auth) = self.authenticate(from, message, bytes, now) else {
            return;
        };
        match message.method {
            method::ALLOCATE => self.allocate(from, message, auth, now),
            method::REFRESH => self.refresh(from, message, auth, now),
            method::CREATE_PERMISSION => self.create_permission(from, message, auth, now),
            _ => self.channel_bind(from, message, auth, now),
        }
    }

    fn send_to_client(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        self.outputs.push_back(Output::ToClient { to, bytes });
    }

    fn refuse(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        self.counters.refused_total += 1;
        self.send_to_client(to, bytes);
    }

    /// An error response to an authenticated request (with its integrity).
    fn error(
        &mut self,
        to: SocketAddr,
        request: &Message<'_>,
        auth: &Auth,
        status: u16,
        reason: &str,
    ) {
        debug!(status, reason, client = %to, "TURN request refused");
        let mut out = Writer::answer(request, Class::Error);
        out.error(status, reason);
        let bytes = auth.seal(out, request.fingerprint);
        self.refuse(to, bytes);
    }

    fn on_timeout(&mut self, now: Instant) {
        while let Some(&(at, client)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.expiries.pop_first();
            debug!(%client, "TURN allocation expired");
            self.remove_allocation(client);
        }
        let lapsed: Vec<u64> = self
            .reservations
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(token, _)| *token)
            .collect();
        for token in lapsed {
            if let Some((port, _)) = self.reservations.remove(&token) {
                self.release_port(port);
            }
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            for allocation in self.allocations.values_mut() {
                allocation.sweep(now);
            }
            self.keys
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < KEY_CACHE_FOR);
            self.guard.purge(now);
            let mut dropped = 0;
            self.waiting.retain(|_, list| {
                let before = list.len();
                list.retain(|(_, _, at)| now.saturating_duration_since(*at) < WAIT_AT_MOST);
                dropped += before - list.len();
                !list.is_empty()
            });
            self.waiting_count -= dropped;
        }
    }

    /// Ends the allocation of `client`: its relay port closes.
    fn remove_allocation(&mut self, client: SocketAddr) {
        let Some(allocation) = self.allocations.remove(&client) else {
            return;
        };
        self.expiries.remove(&(allocation.expires, client));
        self.by_port.remove(&allocation.port);
        self.release_port(allocation.port);
        if let Some(count) = self.per_user.get_mut(&allocation.username) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_user.remove(&allocation.username);
            }
        }
        self.counters.allocations = self.allocations.len();
    }

    fn release_port(&mut self, port: u16) {
        self.ports_used.remove(&port);
        self.outputs.push_back(Output::CloseRelay { port });
    }

    /// The lifetime granted for a LIFETIME attribute (or none).
    fn lifetime(&self, message: &Message<'_>) -> Duration {
        let asked = message
            .get(attr::LIFETIME)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(|v| Duration::from_secs(u64::from(u32::from_be_bytes(v))));
        match asked {
            Some(asked) => asked
                .max(self.config.default_lifetime)
                .min(self.config.max_lifetime),
            None => self.config.default_lifetime,
        }
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Allocations alive.
    pub fn allocations(&self) -> usize {
        self.allocations.len()
    }
}

/// Who a request authenticated as, and how to seal the answer.
pub(crate) struct Auth {
    pub username: String,
    pub key: Key,
    pub integrity: Integrity,
}

impl Auth {
    fn seal(&self, out: Writer, fingerprint: bool) -> Vec<u8> {
        out.finish(Some((self.integrity, &self.key.md5)), fingerprint)
    }
}
