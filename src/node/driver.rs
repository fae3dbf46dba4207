//! The tokio side of a node: owns the sockets, the resolver, the DNS server
//! and a clock, and pumps the sans-I/O [`Core`]: every wake-up reads the
//! clock once, feeds what arrived as [`Input`]s, then acts on the
//! [`Output`]s until the next deadline. It makes no protocol decision.
//!
//! Just over 800 lines: start-up (binding sockets, reading back the store)
//! and the event loop with its output dispatch. Group commits, ring lookups
//! and the HTTP queries already live in `driver/`; the next split is
//! start-up into `driver/start.rs`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::http::{self, Query};
use crate::core::{Core, CoreConfig, Input, Location, Output};
use crate::outbox::ResolveId;
use crate::overlay::Overlay;
use crate::overlay::admission::Admission;
use crate::overlay::discovery::GROUP;
use crate::overlay::gateways::GatewayRecord;
use crate::ring::RingConfig;
use crate::sip::target::Destination;
use crate::sip::transaction::{Peer, TransportKind};
use crate::sip::transport::{Inbound, TransportOptions, Transports};
use p2psip_dns::{
    DnsServer, Gateway, ResolverConfig, SipDestination, SipResolver, Target, Transport, Zones,
};

mod commit;
mod lookups;
mod queries;

use commit::CommitWindow;
use lookups::Lookups;

/// Datagrams read in one go before the node sends what they caused.
const UDP_BATCH: usize = 64;
/// How often the users file is checked for changes.
const USERS_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// How often a node not yet in the ring it was told to join says so.
const JOIN_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(3);
/// How often the TURN server's allocations are read for its advertisement.
const TURN_LOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// The peer cache file in the data directory.
const PEERS_FILE: &str = "peers.json";

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub core: CoreConfig,
    pub ring: RingConfig,
    /// Bootstrap addresses; empty means: the saved peers, else a ring of one.
    pub join: Vec<SocketAddr>,
    pub http: Option<SocketAddr>,
    /// The HTTP window over TLS too, with the transport's certificate.
    pub https: Option<SocketAddr>,
    pub data: Option<PathBuf>,
    /// Serve the domains' DNS here and advertise this node as their gateway.
    pub dns: Option<SocketAddr>,
    /// TTL of the served DNS records.
    pub dns_ttl: u32,
    /// Name server for RFC 3263 and ENUM look-ups; `None`: the system's.
    pub nameserver: Option<SocketAddr>,
    /// LAN discovery by multicast REGISTER on this port (usually 5060).
    pub discover: Option<u16>,
    /// The users file, read at start and again whenever it changes.
    pub users: Option<PathBuf>,
    /// The overlay's shared secret: members only (`overlay_secret`).
    pub overlay_secret: Option<Vec<u8>>,
    /// TLS (`--sips`) and the connection limits.
    pub transport: TransportOptions,
    /// The address others reach the node at, when not the bound one
    /// (`--advertise`, behind a port mapping).
    pub advertise: Option<SocketAddr>,
    /// A TURN server (`--turn`, `[turn]`); its secret is drawn here.
    pub turn: Option<crate::turn::TurnConfig>,
    /// How often the TURN server is advertised in the ring, and how long
    /// a set of servers found there is reused (`[turn] advertise_s`).
    pub turn_every: std::time::Duration,
}

/// A node bound to its sockets, ready to run.
pub struct Node {
    core: Core,
    transports: Transports,
    inbound: mpsc::Receiver<Inbound>,
    queries: mpsc::Receiver<Query>,
    http: Option<SocketAddr>,
    data: Option<PathBuf>,
    /// The items on disk, with `--data`.
    store: Option<crate::store::Store>,
    /// The changes not yet committed and the transmits waiting for them.
    commits: CommitWindow,
    started: Instant,
    /// The authoritative DNS server and its zones, on a gateway.
    dns: Option<(DnsServer, Zones)>,
    nameserver: Option<SocketAddr>,
    /// The multicast socket and the group address, with `--discover`.
    discovery: Option<(tokio::net::UdpSocket, SocketAddr)>,
    /// The users file and when it last changed.
    users: Option<(PathBuf, Option<std::time::SystemTime>)>,
    /// A message here re-reads what can change at run time (SIGHUP).
    reload: Option<mpsc::Receiver<()>>,
    /// The RTP sockets of the calls the node answers (voicemail).
    media: super::media::MediaSockets,
    /// The conference rooms this node mixes.
    conference: super::conference::ConferenceRooms,
    media_done: mpsc::Receiver<(crate::voicemail::MediaCall, Vec<i16>)>,
    /// The sockets of relayed calls' media, and the sessions that ended by themselves.
    relay: super::relay::RelaySockets,
    relay_ended: mpsc::Receiver<crate::relay::SessionId>,
    /// The TURN server and its credential look-ups, with `--turn`.
    turn: Option<(
        super::turn::TurnService,
        mpsc::Receiver<super::turn::CredentialQuery>,
    )>,
    /// Credential look-ups of the TURN server waiting for the core, by id.
    turn_waiting: std::collections::HashMap<u64, super::turn::Reply>,
    /// What listening calls' media says.
    media_events: mpsc::Receiver<(
        crate::voicemail::MediaCall,
        crate::media::playback::PlaybackEvent,
    )>,
    /// The operator's walks and look-ups under way, by survey id.
    surveys: std::collections::HashMap<u64, Survey>,
    next_survey: u64,
}

/// Who waits for a walk or a look-up.
enum Survey {
    Ring(tokio::sync::oneshot::Sender<serde_json::Value>),
    Lookup(
        String,
        tokio::sync::oneshot::Sender<Result<serde_json::Value, String>>,
    ),
    /// A sign-up or a buddy list (`core/accounts.rs`).
    Account(tokio::sync::oneshot::Sender<crate::core::AccountAnswer>),
    /// A voicemail download (or listing) over HTTP.
    Download(tokio::sync::oneshot::Sender<crate::core::Downloaded>),
    /// The TURN servers of the ring (`/turn`).
    Turn(tokio::sync::oneshot::Sender<serde_json::Value>),
}

impl Node {
    /// Binds the sockets. `core.local` may have port 0; [`local_addr`](Self::local_addr) tells the real one.
    pub async fn bind(mut options: NodeOptions) -> io::Result<Node> {
        if let Some(dir) = &options.data {
            std::fs::create_dir_all(dir).map_err(|e| {
                io::Error::new(e.kind(), format!("data directory {}: {e}", dir.display()))
            })?;
        }
        let (tx, inbound) = mpsc::channel(8192);
        let wanted = options.core.local;
        let transports = Transports::bind(wanted, tx, options.transport.clone())
            .await
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("SIP on {wanted} (udp, tcp, or the tls listener): {e}"),
                )
            })?;
        let bound = transports.local_addr();
        // Behind a port mapping the node names itself by the mapped address.
        let local = options.advertise.unwrap_or(bound);
        if local != bound {
            info!(%bound, advertised = %local, "advertising an address other than the bound one");
        }
        options.core.local = local;
        options.core.sips = transports.sips_addr();
        let now = Instant::now();
        let mut join = options.join.clone();
        if join.is_empty() {
            join = load_peers(options.data.as_ref());
            if !join.is_empty() {
                info!(peers = join.len(), "rejoining through saved peers");
            }
        }
        options.core.seed = rand::random();
        options.core.discover = options.discover;
        options.core.save_peers = options.data.is_some();
        let mut overlay = Overlay::new(local, options.ring.clone(), &join, now);
        let store = match &options.data {
            Some(dir) => Some(open_store(dir, &mut overlay)?),
            None => None,
        };
        if let Some(secret) = options.overlay_secret.take() {
            // The one reading of the wall clock: the overlay's timestamps
            // are this plus the Instants elapsed since `now`.
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            overlay.set_admission(Admission::new(secret, wall, now));
        }
        if let Some(member) = &options.transport.member {
            // The wall clock of signed items, read once as for the secret.
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            overlay.set_certified(member.signing.clone(), wall, now);
            if let Some(store) = &store {
                let saved = store.load_certs().map_err(io::Error::other)?;
                let believed = overlay.restore_certs(&saved, now);
                info!(
                    saved = saved.len(),
                    believed, "members' certificates read back"
                );
            }
        }
        let domains = options.core.domains.clone();
        let zone_configs = options.core.gateway.zone_configs(&domains);
        let served = options.core.gateway.served_domains(&domains);
        let mut core = Core::new(options.core, Location::Overlay(Box::new(overlay)), now);
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
            .unwrap_or(0);
        core.set_wall_clock(wall_ms, now);
        core.set_turn_period(options.turn_every, now);
        let dns = match options.dns {
            Some(addr) => {
                let zones = Zones::new();
                for zone in zone_configs {
                    zones.add_zone(zone);
                }
                let server = DnsServer::bind(addr, zones.clone())
                    .await
                    .map_err(|e| io::Error::other(format!("DNS on {addr}: {e}")))?;
                info!(addr = %server.local_addr(), ?domains, "serving DNS for the overlay domains");
                let id = core
                    .overlay()
                    .map(|o| o.ring().me().id.to_string())
                    .unwrap_or_default();
                let me = GatewayRecord {
                    name: format!("gw-{}", &id[..id.len().min(8)]),
                    addr: local.ip(),
                    udp: Some(local.port()),
                    tcp: Some(local.port()),
                    tls: transports
                        .sips_addr()
                        .filter(|sips| sips.ip() == local.ip())
                        .map(|sips| sips.port()),
                };
                // Serve ourselves at once: the ring reports the full set a
                // round later, and an empty zone until then would be cached
                // as NODATA by resolvers (negative TTL = zone TTL).
                for domain in &served {
                    zones.set_gateways(domain, vec![to_dns_gateway(me.clone())]);
                }
                core.advertise_gateway(me, now);
                Some((server, zones))
            }
            None => None,
        };
        let users = match &options.users {
            Some(path) => {
                let (records, changed) = read_users(path)?;
                core.handle_input(Input::Users(records), now);
                Some((path.clone(), changed))
            }
            None => None,
        };
        let (query_tx, queries) = mpsc::channel(64);
        let token = options.data.as_ref().map(|_| http::new_token());
        let tls_acceptor = options
            .transport
            .tls
            .as_ref()
            .and_then(|tls| tls.acceptor.clone());
        if let (Some(addr), Some(acceptor)) = (options.https, tls_acceptor) {
            let bound = http::serve_tls(addr, acceptor, query_tx.clone(), token.clone())
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("HTTPS on {addr}: {e}")))?;
            info!(addr = %bound, "HTTP window over TLS on https://{bound}/ (sign-up, buddy lists)");
        }
        let http = match options.http {
            Some(addr) => Some(
                http::serve(addr, query_tx, token.clone())
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("HTTP on {addr}: {e}")))?,
            ),
            None => None,
        };
        if let Some(addr) = http {
            info!(%addr, "status page on http://{addr}/, JSON on /status, metrics on /metrics");
            if let (Some(dir), Some(token)) = (&options.data, &token) {
                http::write_control(dir, addr, local, token)?;
            }
        }
        let turn = match options.turn.take() {
            Some(mut config) => {
                config.secret = rand::random();
                let (tx, rx) = mpsc::channel(256);
                let listen = config.listen;
                let service = super::turn::start(config, tx)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("TURN on {listen}: {e}")))?;
                core.advertise_turn(service.record(local), options.turn_every, wall_ms, now);
                Some((service, rx))
            }
            None => None,
        };
        let (media_tx, media_done) = mpsc::channel(64);
        let (relay_tx, relay_ended) = mpsc::channel(64);
        let mut media = super::media::MediaSockets::new(bound.ip(), media_tx);
        let media_events = media.take_events().unwrap_or_else(|| mpsc::channel(1).1);
        Ok(Node {
            turn,
            turn_waiting: std::collections::HashMap::new(),
            core,
            media,
            conference: Default::default(),
            media_done,
            relay: super::relay::RelaySockets::new(relay_tx),
            relay_ended,
            media_events,
            transports,
            inbound,
            queries,
            http,
            data: options.data,
            store,
            commits: CommitWindow::new(commit::WINDOW),
            started: now,
            dns,
            nameserver: options.nameserver,
            users,
            reload: None,
            surveys: std::collections::HashMap::new(),
            next_survey: 1,
            discovery: match options.discover {
                Some(port) => Some(bind_discovery(local, port)?),
                None => None,
            },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.transports.local_addr()
    }

    /// The TLS listener's address, with `--sips`.
    pub fn sips_addr(&self) -> Option<SocketAddr> {
        self.transports.sips_addr()
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// The TURN server's address, with `--turn`.
    pub fn turn_addr(&self) -> Option<SocketAddr> {
        self.turn.as_ref().map(|(service, _)| service.addr)
    }

    /// The TURN server's allocations now, with `--turn`.
    fn turn_allocations(&self) -> Option<u32> {
        self.turn.as_ref().map(|(service, _)| service.allocations())
    }

    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns.as_ref().map(|(server, _)| server.local_addr())
    }

    pub fn node_id(&self) -> String {
        self.core
            .overlay()
            .map(|o| o.ring().me().id.to_string())
            .unwrap_or_default()
    }

    /// Re-read what can change at run time (the users file) whenever
    /// `reload` receives (the binary sends on SIGHUP).
    pub fn reload_on(&mut self, reload: mpsc::Receiver<()>) {
        self.reload = Some(reload);
    }

    /// Serves until `shutdown` completes, then leaves the ring gracefully.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let (resolved_tx, mut resolved_rx) = mpsc::channel::<(ResolveId, Vec<Peer>)>(256);
        let (enum_tx, mut enum_rx) = mpsc::channel::<(ResolveId, Option<String>)>(64);
        let lookups = Lookups {
            resolver: SipResolver::new(ResolverConfig {
                nameserver: self.nameserver,
                ..ResolverConfig::default()
            })
            .map_err(|e| warn!(error = %e, "no RFC 3263 resolver; using the system resolver"))
            .ok(),
            resolved: resolved_tx,
            enums: enum_tx,
        };
        let mut buf = vec![0u8; 65536];
        let mut mbuf = vec![0u8; 65536];
        let mut leave_asked = false;
        let mut users_check = tokio::time::interval(USERS_CHECK_EVERY);
        let mut join_check = tokio::time::interval_at(
            tokio::time::Instant::now() + JOIN_WARN_EVERY,
            JOIN_WARN_EVERY,
        );
        let mut reload = self.reload.take();
        let mut turn_load = tokio::time::interval(TURN_LOAD_EVERY);
        let mut allocations = 0;
        let mut deadline = self.settle(&lookups);
        loop {
            if self.core.has_stopped(Instant::now()) {
                break;
            }
            let sleep = tokio::time::Instant::from_std(deadline);
            let commit_due = self.commits.due().map(tokio::time::Instant::from_std);
            let wake = tokio::select! {
                _ = &mut shutdown, if !leave_asked => {
                    leave_asked = true;
                    Wake::Input(Input::Leave)
                }
                read = self.transports.udp().recv_from(&mut buf) => match read {
                    Ok((n, from)) => Wake::Udp(n, from),
                    Err(_) => Wake::Nothing,
                },
                Some(event) = self.inbound.recv() => match event {
                    Inbound::Message { bytes, from } => Wake::Input(Input::Datagram { bytes, from }),
                    Inbound::Member { peer, node, cert } => {
                        Wake::Input(Input::Member { peer, node, cert })
                    }
                    Inbound::Closed { peer } => {
                        self.transports.on_inbound(&Inbound::Closed { peer });
                        Wake::Input(Input::ConnectionClosed(peer))
                    }
                    other => {
                        self.transports.on_inbound(&other);
                        Wake::Nothing
                    }
                },
                Some((id, peers)) = resolved_rx.recv() => Wake::Input(Input::Resolved { id, peers }),
                Some((id, uri)) = enum_rx.recv() => Wake::Input(Input::Enum { id, uri }),
                Some((call, samples)) = self.media_done.recv() => {
                    self.media.finished(call);
                    Wake::Input(Input::Recorded { call, samples })
                }
                Some(session) = self.relay_ended.recv() => {
                    self.relay.finished(session);
                    Wake::Input(Input::RelayEnded { session })
                }
                Some((call, event)) = self.media_events.recv() => {
                    if event == crate::media::playback::PlaybackEvent::Finished {
                        self.media.finished(call);
                    }
                    Wake::Input(Input::Playback { call, event })
                }
                Some(query) = self.queries.recv() => self.answer(query),
                Some(query) = recv_turn(self.turn.as_mut()) => {
                    let id = self.next_survey;
                    self.next_survey += 1;
                    self.turn_waiting.insert(id, query.reply);
                    Wake::Input(Input::TurnCredentials { id, aor: query.aor })
                }
                heard = recv_discovery(self.discovery.as_ref(), &mut mbuf) => match heard {
                    Some(bytes) => Wake::Input(Input::Announcement { bytes }),
                    None => Wake::Nothing,
                },
                _ = users_check.tick(), if self.users.is_some() => match self.users_changed() {
                    Some(records) => Wake::Input(Input::Users(records)),
                    None => Wake::Nothing,
                },
                _ = turn_load.tick(), if self.turn.is_some() => match self.turn_allocations() {
                    Some(now) if now != allocations => {
                        allocations = now;
                        Wake::Input(Input::TurnLoad { allocations })
                    }
                    _ => Wake::Nothing,
                },
                _ = join_check.tick() => {
                    self.warn_if_joining();
                    Wake::Nothing
                }
                Some(()) = recv_reload(reload.as_mut()) => {
                    info!("SIGHUP: re-reading the users file");
                    if let Some((_, seen)) = self.users.as_mut() {
                        *seen = None;
                    }
                    match self.users_changed() {
                        Some(records) => Wake::Input(Input::Users(records)),
                        None => Wake::Nothing,
                    }
                }
                _ = sleep_until_some(commit_due) => Wake::Nothing,
                _ = tokio::time::sleep_until(sleep) => Wake::Input(Input::Timeout),
            };
            let now = Instant::now();
            match wake {
                Wake::Input(input) => self.core.handle_input(input, now),
                Wake::Udp(n, from) => {
                    let bytes = Bytes::copy_from_slice(&buf[..n]);
                    self.core.handle_input(
                        Input::Datagram {
                            bytes,
                            from: udp(from),
                        },
                        now,
                    );
                    for _ in 0..UDP_BATCH {
                        let Ok((n, from)) = self.transports.udp().try_recv_from(&mut buf) else {
                            break;
                        };
                        let bytes = Bytes::copy_from_slice(&buf[..n]);
                        self.core.handle_input(
                            Input::Datagram {
                                bytes,
                                from: udp(from),
                            },
                            now,
                        );
                    }
                }
                Wake::Nothing => {}
            }
            deadline = self.settle(&lookups);
        }
        if let Some(group) = self.commits.take() {
            self.commit(group);
        }
        info!("node stopped");
    }

    /// Acts on the core's outputs, commits the open group of changes when
    /// it is due (then sends what waited for it, and acts on what that
    /// caused); returns the core's next deadline.
    fn settle(&mut self, lookups: &Lookups) -> Instant {
        let mut deadline = self.act(lookups);
        while let Some(group) = self.commits.take_due(Instant::now()) {
            self.commit(group);
            deadline = self.act(lookups);
        }
        deadline
    }

    /// Acts on the core's outputs until it gives the next deadline.
    fn act(&mut self, lookups: &Lookups) -> Instant {
        loop {
            match self.core.poll_output() {
                Output::Timeout(deadline) => return deadline,
                Output::Transmit { to, bytes } => {
                    if let Some((to, bytes)) = self.commits.hold(to, bytes) {
                        self.send(to, bytes);
                    }
                }
                Output::Announce { bytes } => {
                    if let Some((socket, group)) = &self.discovery {
                        let _ = socket.try_send_to(&bytes, *group);
                    }
                }
                Output::Resolve { id, destination } => lookups.resolve(id, destination),
                Output::Enum { id, e164, suffix } => lookups.enum_lookup(id, e164, suffix),
                Output::MarkDead(peer) => lookups.mark_dead(peer),
                Output::Gateways { domain, gateways } => {
                    if let Some((_, zones)) = &self.dns {
                        info!(%domain, gateways = gateways.len(), "gateway set changed");
                        let set = gateways.into_iter().map(to_dns_gateway).collect();
                        zones.set_gateways(&domain, set);
                    }
                }
                Output::SavePeers(peers) => self.save_peers(&peers),
                Output::Surveyed { id, report } => self.surveyed(id, report),
                Output::Account { id, answer } => self.accounted(id, answer),
                Output::Persist(changes) => {
                    if self.store.is_some() {
                        self.commits.add(changes, Instant::now());
                    }
                }
                Output::PersistCerts(certs) => self.persist_certs(&certs),
                Output::OpenMedia { call, ports } => {
                    let local = self.media.open(call, ports);
                    self.core
                        .handle_input(Input::MediaOpened { call, local }, Instant::now());
                }
                Output::StartMedia { call, recording } => self.media.start(call, *recording),
                Output::EndMedia { call } => self.media.end(call),
                Output::Relay(command) => {
                    if let Some(session) = self.relay.act(command) {
                        self.core
                            .handle_input(Input::RelayEnded { session }, Instant::now());
                    }
                }
                Output::TurnFound { id, choice } => self.turn_found(id, choice),
                Output::TurnCredentials { id, found } => {
                    if let Some(reply) = self.turn_waiting.remove(&id) {
                        let _ = reply.send(found);
                    }
                }
                Output::StartPlayback { call, playback } => {
                    self.media.start_playback(call, *playback)
                }
                Output::Downloaded { id, answer } => {
                    if let Some(Survey::Download(reply)) = self.surveys.remove(&id) {
                        let _ = reply.send(answer);
                    }
                }
                Output::JoinConference {
                    room,
                    call,
                    offer,
                    ssrc,
                    pin,
                } => match self.media.take(call) {
                    Some(socket) => self.conference.join(room, call, socket, offer, ssrc, pin),
                    None => warn!(
                        call = call.0,
                        "no socket bound for a conference participant"
                    ),
                },
                Output::LeaveConference { room, call, last } => {
                    self.conference.leave(&room, call, last)
                }
            }
        }
    }

    /// Says, every few seconds, that the node is not in the ring it was told to join.
    fn warn_if_joining(&self) {
        let Some(overlay) = self.core.overlay() else {
            return;
        };
        let ring = overlay.ring();
        if ring.is_joining() {
            let bootstraps: Vec<String> = ring.bootstraps().iter().map(|b| b.to_string()).collect();
            warn!(
                bootstraps = %bootstraps.join(", "),
                since_s = self.started.elapsed().as_secs(),
                "cannot reach any bootstrap node; still trying, and answering phones 503 until in the ring"
            );
        }
    }

    /// The users file again, when it changed since it was last read.
    fn users_changed(&mut self) -> Option<Vec<crate::auth::users::UserRecord>> {
        let (path, seen) = self.users.as_mut()?;
        let modified = std::fs::metadata(&*path).and_then(|m| m.modified()).ok();
        if modified == *seen {
            return None;
        }
        match read_users(path) {
            Ok((records, changed)) => {
                *seen = changed;
                Some(records)
            }
            Err(error) => {
                *seen = modified;
                warn!(%error, "users file changed but cannot be used; keeping the old users");
                None
            }
        }
    }

    /// Sends one transmit; a failure is the core's input.
    fn send(&mut self, to: Peer, bytes: Bytes) {
        if !self.transports.send(to, bytes) {
            self.core
                .handle_input(Input::SendFailed(to), Instant::now());
        }
    }

    /// Writes a group of changed items (one append to the store's log, one
    /// sync), then sends what the core had sent after them: the core hands
    /// the changes out ahead of the transmits of the same wake-up, and the
    /// transmits of the group's window waited (`commit.rs`), so one sync covers every
    /// REGISTER of the window and each 200 still follows its commit.
    fn commit(&mut self, group: commit::Group) {
        if let Some(store) = &mut self.store
            && let Err(error) = store.commit(&group.changes, crate::store::codec::Clock::read())
        {
            warn!(%error, changes = group.changes.len(), "could not write items to disk");
        }
        for (to, bytes) in group.held {
            self.send(to, bytes);
        }
    }

    /// Saves members' certificates the core learnt (certificate mode).
    fn persist_certs(&self, certs: &[(crate::ring::NodeId, std::sync::Arc<Vec<u8>>)]) {
        let Some(store) = &self.store else {
            return;
        };
        if let Err(error) = store.commit_certs(certs) {
            warn!(%error, certs = certs.len(), "could not write certificates to disk");
        }
    }

    /// Writes the peers the core handed out, to rejoin through them after a restart.
    fn save_peers(&self, peers: &[SocketAddr]) {
        let Some(dir) = &self.data else {
            return;
        };
        let peers: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
        let path = dir.join(PEERS_FILE);
        let tmp = dir.join(format!("{PEERS_FILE}.tmp"));
        let written = serde_json::to_vec_pretty(&peers)
            .map_err(io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => debug!(peers = peers.len(), "saved peers"),
            Err(error) => warn!(%error, path = %path.display(), "could not save peers"),
        }
    }
}

/// What woke the driver up.
enum Wake {
    Input(Input),
    /// A datagram of this length is in the buffer (more may follow).
    Udp(usize, SocketAddr),
    Nothing,
}

/// Reads a users file: its records and when it was changed.
fn read_users(
    path: &std::path::Path,
) -> io::Result<(
    Vec<crate::auth::users::UserRecord>,
    Option<std::time::SystemTime>,
)> {
    let changed = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path)
        .map_err(|e| io::Error::other(format!("users file {}: {e}", path.display())))?;
    let records = crate::auth::users::parse_users(&text).map_err(|(line, why)| {
        io::Error::other(format!("users file {} line {line}: {why}", path.display()))
    })?;
    Ok((records, changed))
}

/// Opens the database in the data directory, puts the items it holds back
/// into the ring, and has the ring journal its changes from now on.
fn open_store(dir: &std::path::Path, overlay: &mut Overlay) -> io::Result<crate::store::Store> {
    std::fs::create_dir_all(dir)?;
    let store = crate::store::Store::open(dir).map_err(io::Error::other)?;
    let clock = crate::store::codec::Clock::read();
    let items = store.load(clock).map_err(io::Error::other)?;
    let ring = overlay.ring_mut();
    ring.restore(items, clock.now);
    ring.keep_journal();
    Ok(store)
}

/// Peers saved by an earlier run, if any.
fn load_peers(data: Option<&PathBuf>) -> Vec<SocketAddr> {
    let Some(dir) = data else {
        return Vec::new();
    };
    let Ok(bytes) = std::fs::read(dir.join(PEERS_FILE)) else {
        return Vec::new();
    };
    let peers: Vec<String> = serde_json::from_slice(&bytes).unwrap_or_default();
    peers.iter().filter_map(|p| p.parse().ok()).collect()
}

/// The multicast socket for LAN discovery: bound to the group and port,
/// shared with other nodes on the host, sending on the node's interface.
fn bind_discovery(local: SocketAddr, port: u16) -> io::Result<(tokio::net::UdpSocket, SocketAddr)> {
    let std::net::IpAddr::V4(interface) = local.ip() else {
        return Err(io::Error::other("--discover needs an IPv4 SIP address"));
    };
    let group = SocketAddr::from((GROUP, port));
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&group.into())?;
    socket.join_multicast_v4(&GROUP, &interface)?;
    socket.set_multicast_if_v4(&interface)?;
    socket.set_multicast_loop_v4(true)?;
    socket.set_multicast_ttl_v4(1)?;
    socket.set_nonblocking(true)?;
    info!(%group, %interface, "LAN discovery on");
    Ok((tokio::net::UdpSocket::from_std(socket.into())?, group))
}

/// The TURN server's next credential look-up (never, without one).
async fn recv_turn(
    turn: Option<&mut (
        super::turn::TurnService,
        mpsc::Receiver<super::turn::CredentialQuery>,
    )>,
) -> Option<super::turn::CredentialQuery> {
    match turn {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at` (never, without one).
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next reload request (never, without a channel).
async fn recv_reload(reload: Option<&mut mpsc::Receiver<()>>) -> Option<()> {
    match reload {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next datagram heard on the discovery socket (never, without one).
async fn recv_discovery(
    discovery: Option<&(tokio::net::UdpSocket, SocketAddr)>,
    buf: &mut [u8],
) -> Option<Bytes> {
    let Some((socket, _)) = discovery else {
        return std::future::pending().await;
    };
    let (n, _) = socket.recv_from(buf).await.ok()?;
    Some(Bytes::copy_from_slice(&buf[..n]))
}

fn udp(addr: SocketAddr) -> Peer {
    Peer {
        transport: TransportKind::Udp,
        addr,
    }
}

fn dns_transport(transport: TransportKind) -> Transport {
    match transport {
        TransportKind::Udp => Transport::Udp,
        TransportKind::Tcp => Transport::Tcp,
        TransportKind::Tls => Transport::Tls,
    }
}

fn to_dns_gateway(record: GatewayRecord) -> Gateway {
    Gateway {
        name: record.name,
        addrs: vec![record.addr],
        udp: record.udp,
        tcp: record.tcp,
        tls: record.tls,
    }
}
