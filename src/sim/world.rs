//! The [`World`]: nodes, phones and registrars on a virtual network, the
//! event queue and the run loops. Scripting helpers (growing a ring,
//! registering phones, who holds a binding) are in `script.rs`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::legacy::LegacyRegistrar;
use super::phone::{Effects, Phone, Timer};
use super::trace::Trace;
use crate::core::{Core, CoreConfig, Input, Location, Output};
use crate::overlay::Overlay;
use crate::ring::RingConfig;
use crate::sip::transaction::{Peer, TransportKind};

/// Network and node settings.
#[derive(Clone, Debug)]
pub struct WorldConfig {
    pub seed: u64,
    /// One-way delay of every message, uniform in this range.
    pub latency: RangeInclusive<Duration>,
    /// Loss probability on links without a phone at either end.
    pub loss: f64,
    pub ring: RingConfig,
    /// The overlay domain every node serves.
    pub domain: String,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            seed: 1,
            latency: Duration::from_millis(2)..=Duration::from_millis(30),
            loss: 0.0,
            ring: RingConfig::default(),
            domain: "overlay.test".into(),
        }
    }
}

/// One node's place in the World.
pub struct NodeSlot {
    pub addr: SocketAddr,
    /// None once crashed.
    pub core: Option<Core>,
    /// The configuration it was started with (its seed is redrawn on restart).
    pub config: CoreConfig,
    scheduled: Option<u64>,
}

/// Something a phone is told to do, now or at a scheduled time.
#[derive(Clone, Debug)]
pub enum Action {
    /// REGISTER with this expiry (0: un-REGISTER).
    Register(u32),
    /// INVITE the URI; hang up this long after the 200.
    Call {
        target: String,
        hold: Option<Duration>,
    },
    /// CANCEL the phone's call with this index.
    Cancel(usize),
    Message {
        target: String,
        body: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Entity {
    Node(usize),
    Phone(usize),
    Legacy(usize),
}

enum Event {
    Deliver {
        from: SocketAddr,
        to: SocketAddr,
        bytes: Bytes,
    },
    Wake {
        node: usize,
        at: u64,
    },
    PhoneTimer {
        phone: usize,
        timer: Timer,
    },
    Act {
        phone: usize,
        action: Action,
    },
}

/// The simulation.
pub struct World {
    pub config: WorldConfig,
    base: Instant,
    /// Virtual time in microseconds since `base`.
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    pub rng: StdRng,
    pub nodes: Vec<NodeSlot>,
    pub phones: Vec<Phone>,
    pub registrars: Vec<LegacyRegistrar>,
    entities: HashMap<SocketAddr, Entity>,
    /// Cut pairs (smaller address first): nothing crosses them.
    cuts: BTreeSet<(SocketAddr, SocketAddr)>,
    /// RFC 3263 answers: host name (lower case) → peers in order.
    pub dns: BTreeMap<String, Vec<Peer>>,
    /// ENUM answers: E.164 number → SIP URI.
    pub enum_table: BTreeMap<String, String>,
    pub trace: Trace,
    /// Messages lost, cut off, or sent to nobody.
    pub dropped: u64,
    /// Every `Output::MarkDead` a node gave: node and the peer.
    pub marked_dead: Vec<(usize, SocketAddr)>,
}

pub fn udp(addr: SocketAddr) -> Peer {
    Peer {
        transport: TransportKind::Udp,
        addr,
    }
}

impl World {
    pub fn new(config: WorldConfig) -> World {
        World {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            base: Instant::now(),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            nodes: Vec::new(),
            phones: Vec::new(),
            registrars: Vec::new(),
            entities: HashMap::new(),
            cuts: BTreeSet::new(),
            dns: BTreeMap::new(),
            enum_table: BTreeMap::new(),
            trace: Trace::default(),
            dropped: 0,
            marked_dead: Vec::new(),
        }
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        Duration::from_micros(self.now)
    }

    /// The virtual clock as the cores see it.
    pub fn instant(&self) -> Instant {
        self.base + self.now()
    }

    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }

    /// The address of the `i`th node: 127.0.1.x, 127.0.2.x, …
    pub fn node_addr(i: usize) -> SocketAddr {
        SocketAddr::from((
            Ipv4Addr::new(127, 0, 1 + (i / 200) as u8, 1 + (i % 200) as u8),
            5060,
        ))
    }

    /// The address of the `i`th phone: 127.0.100.x, 127.0.101.x, …
    pub fn phone_addr(i: usize) -> SocketAddr {
        SocketAddr::from((
            Ipv4Addr::new(127, 0, 100 + (i / 200) as u8, 1 + (i % 200) as u8),
            5060,
        ))
    }

    /// A node configuration with this World's domain and a seed of its own.
    pub fn node_config(&mut self, addr: SocketAddr) -> CoreConfig {
        let mut config = CoreConfig::new(addr, vec![self.config.domain.clone()]);
        config.seed = self.rng.random();
        config
    }

    /// Starts a node with `config`, joining the ring through `bootstrap`
    /// (none: the first node of a ring).
    pub fn add_node_with(&mut self, config: CoreConfig, bootstrap: Option<usize>) -> usize {
        let i = self.nodes.len();
        let addr = config.local;
        self.entities.insert(addr, Entity::Node(i));
        self.nodes.push(NodeSlot {
            addr,
            core: None,
            config,
            scheduled: None,
        });
        self.start_node(i, bootstrap);
        i
    }

    /// Starts a node at the next node address with the default configuration.
    pub fn add_node(&mut self, bootstrap: Option<usize>) -> usize {
        let config = self.node_config(Self::node_addr(self.nodes.len()));
        self.add_node_with(config, bootstrap)
    }

    fn start_node(&mut self, i: usize, bootstrap: Option<usize>) {
        let now = self.instant();
        let slot = &self.nodes[i];
        let join: Vec<SocketAddr> = bootstrap.map(|b| self.nodes[b].addr).into_iter().collect();
        let overlay = Overlay::new(slot.addr, self.config.ring.clone(), &join, now);
        let core = Core::new(
            slot.config.clone(),
            Location::Overlay(Box::new(overlay)),
            now,
        );
        self.nodes[i].core = Some(core);
        self.nodes[i].scheduled = None;
        self.drain(i);
    }

    /// The node's core is dropped; its address goes silent.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].core = None;
        self.nodes[i].scheduled = None;
        let at = self.now();
        self.trace.outcome(at, &format!("node {i} crashed"));
    }

    /// A crashed node starts afresh (new seed, empty state), joining through `bootstrap`.
    pub fn restart(&mut self, i: usize, bootstrap: usize) {
        self.nodes[i].config.seed = self.rng.random();
        let at = self.now();
        self.trace.outcome(at, &format!("node {i} restarts"));
        self.start_node(i, Some(bootstrap));
    }

    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].core.is_some()
    }

    /// Indices of the live nodes.
    pub fn live_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.is_alive(*i))
            .collect()
    }

    /// True when the node is alive and has joined its ring.
    pub fn is_joined(&self, i: usize) -> bool {
        self.nodes[i]
            .core
            .as_ref()
            .and_then(|c| c.overlay())
            .is_some_and(|o| o.ring().is_joined())
    }

    /// Adds a phone for `user` at the next phone address, using node `proxy`.
    pub fn add_phone(&mut self, user: &str, proxy: usize) -> usize {
        let addr = Self::phone_addr(self.phones.len());
        self.add_phone_at(addr, user, proxy)
    }

    pub fn add_phone_at(&mut self, addr: SocketAddr, user: &str, proxy: usize) -> usize {
        let i = self.phones.len();
        let domain = self.config.domain.clone();
        self.entities.insert(addr, Entity::Phone(i));
        self.phones
            .push(Phone::new(addr, user, &domain, self.nodes[proxy].addr));
        i
    }

    pub fn add_registrar(&mut self, registrar: LegacyRegistrar) -> usize {
        let i = self.registrars.len();
        self.entities.insert(registrar.addr, Entity::Legacy(i));
        self.registrars.push(registrar);
        i
    }

    /// Nothing passes between any member of `a` and any member of `b`.
    pub fn partition(&mut self, a: &[SocketAddr], b: &[SocketAddr]) {
        for x in a {
            for y in b {
                self.cuts.insert(((*x).min(*y), (*x).max(*y)));
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        self.cuts.clear();
    }

    /// Tells phone `phone` to act now.
    pub fn act(&mut self, phone: usize, action: Action) {
        let mut fx = Effects::default();
        let now = self.now();
        let p = &mut self.phones[phone];
        match action {
            Action::Register(expires) => p.register(expires, &mut fx),
            Action::Call { target, hold } => {
                let n = p.call(&target, hold, now, &mut fx);
                fx.outcomes.push(format!("{} calls {target} ({n})", p.user));
            }
            Action::Cancel(index) => {
                p.cancel(index, &mut fx);
                fx.outcomes.push(format!("{} cancels call {index}", p.user));
            }
            Action::Message { target, body } => p.message(&target, &body, now, &mut fx),
        }
        self.apply(phone, fx);
    }

    /// Tells phone `phone` to act at virtual time `at` (or now, if past).
    pub fn schedule(&mut self, at: Duration, phone: usize, action: Action) {
        let at = (at.as_micros() as u64).max(self.now);
        self.push(at, Event::Act { phone, action });
    }

    /// Runs every event up to `until` (virtual time since the start).
    pub fn run_until(&mut self, until: Duration) {
        let until = until.as_micros() as u64;
        while let Some(Reverse((at, _))) = self.queue.peek() {
            if *at > until {
                break;
            }
            self.step();
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now() + d);
    }

    /// Runs until `done` holds (checked after every event) or `limit` more
    /// virtual time has passed; tells which.
    pub fn run_until_cond(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&World) -> bool,
    ) -> bool {
        let until = self.now + limit.as_micros() as u64;
        loop {
            if done(self) {
                return true;
            }
            match self.queue.peek() {
                Some(Reverse((at, _))) if *at <= until => self.step(),
                _ => {
                    self.now = self.now.max(until);
                    return done(self);
                }
            }
        }
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, event);
    }

    fn step(&mut self) {
        let Some(Reverse((at, seq))) = self.queue.pop() else {
            return;
        };
        let Some(event) = self.events.remove(&seq) else {
            return;
        };
        self.now = self.now.max(at);
        match event {
            Event::Deliver { from, to, bytes } => self.deliver(from, to, bytes),
            Event::Wake { node, at } => {
                if self.nodes[node].scheduled == Some(at) && self.nodes[node].core.is_some() {
                    self.nodes[node].scheduled = None;
                    let now = self.instant();
                    if let Some(core) = self.nodes[node].core.as_mut() {
                        core.handle_input(Input::Timeout, now);
                    }
                    self.drain(node);
                }
            }
            Event::PhoneTimer { phone, timer } => {
                let mut fx = Effects::default();
                let now = self.now();
                self.phones[phone].timer(timer, now, &mut fx);
                self.apply(phone, fx);
            }
            Event::Act { phone, action } => self.act(phone, action),
        }
    }

    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, bytes: Bytes) {
        let at = self.now();
        match self.entities.get(&to).copied() {
            Some(Entity::Node(i)) if self.nodes[i].core.is_some() => {
                self.trace.message(at, from, to, &bytes);
                let now = self.instant();
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.handle_input(
                        Input::Datagram {
                            bytes,
                            from: udp(from),
                        },
                        now,
                    );
                }
                self.drain(i);
            }
            Some(Entity::Phone(i)) => {
                self.trace.message(at, from, to, &bytes);
                let mut fx = Effects::default();
                self.phones[i].receive(bytes, from, at, &mut fx);
                self.apply(i, fx);
            }
            Some(Entity::Legacy(i)) => {
                self.trace.message(at, from, to, &bytes);
                if let Some((answer, outcome)) = self.registrars[i].receive(bytes, at) {
                    self.trace.outcome(at, &outcome);
                    let me = self.registrars[i].addr;
                    self.send(me, from, answer);
                }
            }
            _ => self.dropped += 1,
        }
    }

    /// Carries out what a phone asked for.
    fn apply(&mut self, phone: usize, fx: Effects) {
        let at = self.now();
        for outcome in &fx.outcomes {
            self.trace.outcome(at, outcome);
        }
        let me = self.phones[phone].addr;
        for (to, bytes) in fx.sends {
            self.send(me, to, bytes);
        }
        for (after, timer) in fx.timers {
            let when = self.now + after.as_micros() as u64;
            self.push(when, Event::PhoneTimer { phone, timer });
        }
    }

    /// Puts a message on the network.
    pub fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Bytes) {
        if self.cuts.contains(&(from.min(to), from.max(to))) {
            self.dropped += 1;
            return;
        }
        let phone_link = matches!(self.entities.get(&from), Some(Entity::Phone(_)))
            || matches!(self.entities.get(&to), Some(Entity::Phone(_)));
        if !phone_link && self.config.loss > 0.0 && self.rng.random_bool(self.config.loss) {
            self.dropped += 1;
            return;
        }
        let (lo, hi) = (
            self.config.latency.start().as_micros() as u64,
            self.config.latency.end().as_micros() as u64,
        );
        let delay = self.rng.random_range(lo..=hi);
        self.push(self.now + delay, Event::Deliver { from, to, bytes });
    }

    /// Acts on a node's outputs until it gives its next deadline.
    fn drain(&mut self, i: usize) {
        let now = self.instant();
        let at = self.now();
        let from = self.nodes[i].addr;
        loop {
            let mut inputs = Vec::new();
            let mut sends = Vec::new();
            let deadline = {
                let Some(core) = self.nodes[i].core.as_mut() else {
                    return;
                };
                loop {
                    match core.poll_output() {
                        Output::Transmit { to, bytes } => sends.push((to.addr, bytes)),
                        // The simulation runs no media (voicemail is off).
                        Output::OpenMedia { call, .. } => {
                            inputs.push(Input::MediaOpened { call, local: None })
                        }
                        Output::StartMedia { .. }
                        | Output::EndMedia { .. }
                        | Output::StartPlayback { .. }
                        | Output::Downloaded { .. }
                        | Output::JoinConference { .. }
                        | Output::LeaveConference { .. } => {}
                        // Nor relayed media: a session is ended at once.
                        Output::Relay(crate::relay::RelayCommand::Open { session, .. }) => {
                            inputs.push(Input::RelayEnded { session })
                        }
                        Output::Relay(_) => {}
                        Output::Resolve { id, destination } => {
                            let peers = self
                                .dns
                                .get(&destination.host.to_ascii_lowercase())
                                .cloned()
                                .unwrap_or_default();
                            inputs.push(Input::Resolved { id, peers });
                        }
                        Output::Enum { id, e164, .. } => {
                            let uri = self.enum_table.get(&e164).cloned();
                            inputs.push(Input::Enum { id, uri });
                        }
                        Output::MarkDead(peer) => {
                            self.marked_dead.push((i, peer.addr));
                            self.trace
                                .outcome(at, &format!("node {i} marks {} dead", peer.addr));
                        }
                        Output::Timeout(deadline) => break deadline,
                        Output::Announce { .. }
                        | Output::Gateways { .. }
                        | Output::SavePeers(_)
                        | Output::Surveyed { .. }
                        | Output::Account { .. }
                        | Output::Persist(_)
                        | Output::PersistCerts(_)
                        | Output::TurnCredentials { .. }
                        | Output::TurnFound { .. } => {}
                    }
                }
            };
            for (to, bytes) in sends {
                self.send(from, to, bytes);
            }
            if inputs.is_empty() {
                let at = deadline.saturating_duration_since(self.base).as_micros() as u64;
                // A deadline already due is run a millisecond on, so that a
                // core that keeps asking for "now" cannot stall the clock.
                let at = if at <= self.now { self.now + 1000 } else { at };
                if self.nodes[i].scheduled != Some(at) {
                    self.nodes[i].scheduled = Some(at);
                    self.push(at, Event::Wake { node: i, at });
                }
                return;
            }
            if let Some(core) = self.nodes[i].core.as_mut() {
                for input in inputs {
                    core.handle_input(input, now);
                }
            }
        }
    }
}
