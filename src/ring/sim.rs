//! A deterministic discrete-event simulator for [`Ring`]s.
//!
//! One seeded RNG, one virtual clock, one event queue (message deliveries and
//! node wake-ups). Messages get a uniform random one-way latency and may be
//! lost; a crashed node's messages go nowhere and requests to it time out in
//! the sender's ring. Nothing here reads the wall clock except the base
//! `Instant` the virtual clock counts from, so a seed replays exactly.
//!
//! At ~800 lines it holds one thing, the simulator's world (nodes, queue,
//! network faults: crash, split, one-way NAT) and its observations. The next
//! split is the observations — `LookupRecord`, `LookupStats`, the consistency
//! checks — into a `sim/measure.rs` beside it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{
    IncomingId, Item, NodeId, OpId, Outgoing, Peer, RequestId, Ring, RingConfig, RingEvent,
    RingRequest, RingResponse,
};

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// One-way latency, uniform in `[latency_min, latency_max]`.
    pub latency_min: Duration,
    pub latency_max: Duration,
    /// Probability that a message is lost.
    pub loss: f64,
    pub ring: RingConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            latency_min: Duration::from_millis(5),
            latency_max: Duration::from_millis(50),
            loss: 0.0,
            ring: RingConfig::default(),
        }
    }
}

/// One simulated node.
pub struct SimNode {
    pub ring: Ring,
    pub addr: SocketAddr,
    /// False once crashed or gone after a graceful leave.
    pub alive: bool,
    /// Leave called; gone once `RingEvent::Left` came.
    pub leaving: bool,
    /// Messages this node sent (requests and responses).
    pub sent: u64,
    /// Part of a split network ([`Sim::split`]): messages between parts are lost.
    pub part: u8,
    /// Behind a NAT: requests to it are lost, answers to its own requests
    /// come back.
    pub nat: bool,
    scheduled: Option<u64>,
}

#[derive(Debug)]
enum Msg {
    Request {
        id: RequestId,
        request: RingRequest,
    },
    Response {
        id: RequestId,
        response: RingResponse,
    },
}

#[derive(Debug)]
// A delivery carries a whole ring message; wake-ups are the few small ones.
#[allow(clippy::large_enum_variant)]
enum Event {
    Deliver {
        to: SocketAddr,
        from: SocketAddr,
        msg: Msg,
    },
    Wake {
        node: usize,
        at: u64,
    },
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Outcome of one lookup issued through [`Sim::lookup`].
#[derive(Clone, Debug)]
pub struct LookupRecord {
    pub key: NodeId,
    pub issued_at: Duration,
    pub done_at: Duration,
    /// `None`: the lookup failed.
    pub found: Option<Peer>,
    pub hops: u32,
    /// The true successor among live nodes that have joined, when the
    /// answer came ([`Sim::true_member_successor`]).
    pub truth: Peer,
    /// The lookup ended because its node left the ring (`RingError::Left`).
    pub left: bool,
}

impl LookupRecord {
    pub fn correct(&self) -> bool {
        self.found == Some(self.truth)
    }
}

/// Summary of a batch of lookups.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LookupStats {
    pub count: usize,
    pub correct: usize,
    pub wrong: usize,
    pub failed: usize,
    pub hops_mean: f64,
    pub hops_p99: u32,
    pub latency_mean_ms: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

impl LookupStats {
    pub fn of(records: &[LookupRecord]) -> LookupStats {
        let mut hops: Vec<u32> = records
            .iter()
            .filter(|r| r.found.is_some())
            .map(|r| r.hops)
            .collect();
        hops.sort_unstable();
        let answered = hops.len().max(1);
        let p99 = if hops.is_empty() {
            0
        } else {
            hops[((hops.len() as f64 * 0.99).ceil() as usize).clamp(1, hops.len()) - 1]
        };
        let mut latencies: Vec<f64> = records
            .iter()
            .map(|r| (r.done_at - r.issued_at).as_secs_f64() * 1000.0)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let pct = |q: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
            latencies[i - 1]
        };
        LookupStats {
            latency_p50_ms: pct(0.5),
            latency_p99_ms: pct(0.99),
            count: records.len(),
            correct: records.iter().filter(|r| r.correct()).count(),
            wrong: records
                .iter()
                .filter(|r| r.found.is_some() && !r.correct())
                .count(),
            failed: records.iter().filter(|r| r.found.is_none()).count(),
            hops_mean: hops.iter().map(|h| *h as f64).sum::<f64>() / answered as f64,
            hops_p99: p99,
            latency_mean_ms: records
                .iter()
                .map(|r| (r.done_at - r.issued_at).as_secs_f64() * 1000.0)
                .sum::<f64>()
                / records.len().max(1) as f64,
        }
    }
}

/// The simulator.
pub struct Sim {
    pub config: SimConfig,
    rng: StdRng,
    base: Instant,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    pub nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Live (not crashed, not leaving) nodes by id: the ground truth.
    live: BTreeMap<NodeId, usize>,
    incoming: HashMap<u64, (SocketAddr, RequestId)>,
    next_incoming: u64,
    /// Finished operations: (node, op) -> event.
    done: HashMap<(usize, u64), RingEvent>,
    lookups: HashMap<(usize, u64), (NodeId, u64)>,
    /// Finished lookups issued through [`Sim::lookup`], in completion order.
    pub lookup_records: Vec<LookupRecord>,
    /// Every message sent (requests and responses).
    pub messages: u64,
    /// Messages lost on the way (random loss).
    pub lost: u64,
    /// `RingEvent::Joined` count.
    pub joined: usize,
}

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        Sim {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            base: Instant::now(),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            live: BTreeMap::new(),
            incoming: HashMap::new(),
            next_incoming: 1,
            done: HashMap::new(),
            lookups: HashMap::new(),
            lookup_records: Vec::new(),
            messages: 0,
            lost: 0,
            joined: 0,
        }
    }

    /// The virtual time as an `Instant`.
    pub fn now(&self) -> Instant {
        self.base + Duration::from_micros(self.now)
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        Duration::from_micros(self.now)
    }

    /// The address of node `i`: `10.a.b.c:5060`.
    pub fn addr_of(i: usize) -> SocketAddr {
        let i = i as u32 + 1;
        let ip = Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8);
        SocketAddr::new(IpAddr::V4(ip), 5060)
    }

    /// A new node, alone in its own ring until told to join.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let addr = Sim::addr_of(i);
        let ring = Ring::new(addr, self.config.ring.clone(), self.now());
        let id = ring.me().id;
        self.nodes.push(SimNode {
            ring,
            addr,
            alive: true,
            leaving: false,
            sent: 0,
            part: 0,
            nat: false,
            scheduled: None,
        });
        self.by_addr.insert(addr, i);
        self.live.insert(id, i);
        self.flush(i);
        i
    }

    pub fn join(&mut self, node: usize, bootstrap: usize) {
        let now = self.now();
        let addr = self.nodes[bootstrap].addr;
        self.nodes[node].ring.join(addr, now);
        self.flush(node);
    }

    /// The node attaches to `members` as a client (`client.rs`) instead of
    /// joining; it is no holder in the ground truth while it is one.
    pub fn attach(&mut self, node: usize, members: &[usize], auto: bool) {
        let now = self.now();
        let addrs: Vec<SocketAddr> = members.iter().map(|m| self.nodes[*m].addr).collect();
        self.live.remove(&self.nodes[node].ring.me().id);
        self.nodes[node].ring.attach(&addrs, auto, now);
        self.flush(node);
    }

    /// A client that became a member counts as a holder again.
    pub fn count_promoted(&mut self) {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.alive && !n.ring.is_client() {
                self.live.insert(n.ring.me().id, i);
            }
        }
    }

    /// The node stops dead: no more messages in or out.
    pub fn crash(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if n.alive {
            n.alive = false;
            self.live.remove(&n.ring.me().id);
        }
    }

    /// Cuts the network: `part(i)` is node i's part; messages between parts
    /// are lost until [`Sim::heal`].
    pub fn split(&mut self, mut part: impl FnMut(usize) -> u8) {
        for (i, n) in self.nodes.iter_mut().enumerate() {
            n.part = part(i);
        }
    }

    /// Joins the parts again.
    pub fn heal(&mut self) {
        for n in &mut self.nodes {
            n.part = 0;
        }
    }

    /// A crashed node comes back at the same address with empty state and
    /// joins through `bootstrap`.
    pub fn restart(&mut self, node: usize, bootstrap: usize) {
        let now = self.now();
        let addr = self.nodes[node].addr;
        let ring = Ring::new(addr, self.config.ring.clone(), now);
        self.live.insert(ring.me().id, node);
        let n = &mut self.nodes[node];
        n.ring = ring;
        n.alive = true;
        n.leaving = false;
        self.join(node, bootstrap);
    }

    /// Frees the state of a node that crashed or has left (it never comes
    /// back at this address): long churn runs add nodes for ever.
    pub fn discard(&mut self, node: usize) {
        if self.nodes[node].alive {
            return;
        }
        let addr = self.nodes[node].addr;
        self.nodes[node].ring = Ring::new(addr, self.config.ring.clone(), self.now());
    }

    /// Lookups issued through [`Sim::lookup`] not finished yet, with the
    /// node that issued each and when (virtual time since the start).
    pub fn lookups_pending(&self) -> impl Iterator<Item = (usize, Duration)> + '_ {
        self.lookups
            .iter()
            .map(|((node, _), (_, at))| (*node, Duration::from_micros(*at)))
    }

    /// Graceful leave: the node hands over its items and goes once it is done.
    pub fn leave(&mut self, node: usize) {
        if !self.nodes[node].alive || self.nodes[node].leaving {
            return;
        }
        let now = self.now();
        self.nodes[node].leaving = true;
        self.live.remove(&self.nodes[node].ring.me().id);
        self.nodes[node].ring.leave(now);
        self.flush(node);
    }

    /// The node at `addr`, if any ever was.
    pub fn node_at(&self, addr: SocketAddr) -> Option<usize> {
        self.by_addr.get(&addr).copied()
    }

    pub fn is_live(&self, node: usize) -> bool {
        self.nodes[node].alive && !self.nodes[node].leaving
    }

    /// Indices of live nodes.
    pub fn live_nodes(&self) -> Vec<usize> {
        self.live.values().copied().collect()
    }

    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// The successor of `key` among live nodes.
    pub fn true_successor(&self, key: NodeId) -> Peer {
        let i = self
            .live
            .range(key..)
            .next()
            .or_else(|| self.live.iter().next())
            .map(|(_, i)| *i)
            .expect("no live node");
        self.nodes[i].ring.me()
    }

    /// The successor of `key` among live nodes whose join completed: the
    /// node a lookup should name (one still joining is in no one's tables
    /// yet). Falls back to [`Sim::true_successor`] while none has joined.
    pub fn true_member_successor(&self, key: NodeId) -> Peer {
        self.live
            .range(key..)
            .chain(self.live.range(..key))
            .map(|(_, i)| &self.nodes[*i].ring)
            .find(|ring| ring.is_joined())
            .map(|ring| ring.me())
            .unwrap_or_else(|| self.true_successor(key))
    }

    /// The `r` live nodes that should hold `key`: its successor and the next r-1.
    pub fn true_holders(&self, key: NodeId, r: usize) -> Vec<usize> {
        let r = r.min(self.live.len());
        self.live
            .range(key..)
            .chain(self.live.iter())
            .take(r)
            .map(|(_, i)| *i)
            .collect()
    }

    /// A uniformly random key.
    pub fn random_key(&mut self) -> NodeId {
        let mut b = [0u8; 20];
        self.rng.fill(&mut b);
        NodeId(b)
    }

    /// A random live node.
    pub fn random_live(&mut self) -> usize {
        let live = self.live.len();
        let k = self.rng.random_range(0..live);
        *self.live.values().nth(k).expect("live node")
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Start a lookup whose outcome lands in [`Sim::lookup_records`].
    pub fn lookup(&mut self, node: usize, key: NodeId) -> OpId {
        let now = self.now();
        let op = self.nodes[node].ring.lookup(key, now);
        self.lookups.insert((node, op.0), (key, self.now));
        self.flush(node);
        op
    }

    pub fn store(&mut self, node: usize, item: Item) -> OpId {
        let now = self.now();
        let op = self.nodes[node].ring.store(item, now);
        self.flush(node);
        op
    }

    /// A conditional store (`Ring::claim`) through `node`.
    pub fn claim(&mut self, node: usize, item: Item) -> OpId {
        let now = self.now();
        let op = self.nodes[node].ring.claim(item, now);
        self.flush(node);
        op
    }

    pub fn remove(&mut self, node: usize, key: NodeId, name: String) -> OpId {
        let now = self.now();
        let op = self.nodes[node].ring.remove(key, name, now);
        self.flush(node);
        op
    }

    pub fn fetch(&mut self, node: usize, key: NodeId) -> OpId {
        let now = self.now();
        let op = self.nodes[node].ring.fetch(key, now);
        self.flush(node);
        op
    }

    /// The finished event of an operation (taken out), if it finished.
    pub fn take_result(&mut self, node: usize, op: OpId) -> Option<RingEvent> {
        self.done.remove(&(node, op.0))
    }

    /// Lookups issued through [`Sim::lookup`] not finished yet.
    pub fn lookups_in_flight(&self) -> usize {
        self.lookups.len()
    }

    /// Run the event loop until virtual time `until` (since the start).
    pub fn run_until(&mut self, until: Duration) {
        let until = until.as_micros() as u64;
        while let Some(Reverse(top)) = self.queue.peek() {
            if top.at > until {
                break;
            }
            let Reverse(s) = self.queue.pop().expect("peeked");
            self.now = s.at;
            self.dispatch(s.event);
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.elapsed() + d;
        self.run_until(until);
    }

    /// Run until `pred` holds, checking every `step`, at most `max` long.
    /// Returns whether it held.
    pub fn run_until_cond(
        &mut self,
        step: Duration,
        max: Duration,
        mut pred: impl FnMut(&mut Sim) -> bool,
    ) -> bool {
        let end = self.elapsed() + max;
        loop {
            if pred(self) {
                return true;
            }
            if self.elapsed() >= end {
                return false;
            }
            self.run_for(step);
        }
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Wake { node, at } => {
                let now = self.now();
                let n = &mut self.nodes[node];
                if n.scheduled != Some(at) {
                    return;
                }
                n.scheduled = None;
                if !n.alive {
                    return;
                }
                n.ring.handle_timeout(now);
                self.flush(node);
            }
            Event::Deliver { to, from, msg } => {
                let Some(&node) = self.by_addr.get(&to) else {
                    return;
                };
                if !self.nodes[node].alive {
                    return;
                }
                let cut = self
                    .by_addr
                    .get(&from)
                    .is_some_and(|&f| self.nodes[f].part != self.nodes[node].part);
                let natted = self.nodes[node].nat && matches!(msg, Msg::Request { .. });
                if cut || natted {
                    self.lost += 1;
                    return;
                }
                let now = self.now();
                match msg {
                    Msg::Request { id, request } => {
                        let incoming = self.next_incoming;
                        self.next_incoming += 1;
                        self.incoming.insert(incoming, (from, id));
                        self.nodes[node].ring.handle_request(
                            from,
                            IncomingId(incoming),
                            request,
                            now,
                        );
                    }
                    Msg::Response { id, response } => {
                        self.nodes[node].ring.handle_response(id, response, now);
                    }
                }
                self.flush(node);
            }
        }
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    fn latency(&mut self) -> u64 {
        let lo = self.config.latency_min.as_micros() as u64;
        let hi = self.config.latency_max.as_micros() as u64;
        if hi <= lo {
            lo
        } else {
            self.rng.random_range(lo..=hi)
        }
    }

    /// Move a node's output into the world and re-arm its wake-up.
    fn flush(&mut self, node: usize) {
        let from = self.nodes[node].addr;
        while let Some(out) = self.nodes[node].ring.poll_transmit() {
            self.messages += 1;
            self.nodes[node].sent += 1;
            let (to, msg) = match out {
                Outgoing::Request { id, to, request } => (to, Msg::Request { id, request }),
                Outgoing::Response { to, response } => {
                    let Some((requester, id)) = self.incoming.remove(&to.0) else {
                        continue;
                    };
                    (requester, Msg::Response { id, response })
                }
            };
            if self.config.loss > 0.0 && self.rng.random::<f64>() < self.config.loss {
                self.lost += 1;
                continue;
            }
            let at = self.now + self.latency();
            self.schedule(at, Event::Deliver { to, from, msg });
        }
        while let Some(event) = self.nodes[node].ring.poll_event() {
            self.on_event(node, event);
        }
        if let Some(t) = self.nodes[node].ring.poll_timeout() {
            // Round up: waking a node before its deadline would not advance it.
            let at = (t
                .saturating_duration_since(self.base)
                .as_nanos()
                .div_ceil(1000) as u64)
                .max(self.now);
            let n = &mut self.nodes[node];
            if n.scheduled.is_none_or(|s| at < s) {
                n.scheduled = Some(at);
                self.schedule(at, Event::Wake { node, at });
            }
        }
    }

    fn on_event(&mut self, node: usize, event: RingEvent) {
        match &event {
            RingEvent::Joined { .. } => self.joined += 1,
            RingEvent::Left => {
                self.nodes[node].alive = false;
            }
            RingEvent::LookupDone { op, result } => {
                if let Some((key, issued)) = self.lookups.remove(&(node, op.0)) {
                    let truth = self.true_member_successor(key);
                    let (found, hops) = match result {
                        Ok((p, h)) => (Some(*p), *h),
                        Err(_) => (None, 0),
                    };
                    let left = matches!(result, Err(super::RingError::Left));
                    self.lookup_records.push(LookupRecord {
                        key,
                        issued_at: Duration::from_micros(issued),
                        done_at: self.elapsed(),
                        found,
                        hops,
                        truth,
                        left,
                    });
                    return;
                }
                self.done.insert((node, op.0), event);
            }
            RingEvent::StoreDone { op, .. } | RingEvent::FetchDone { op, .. } => {
                self.done.insert((node, op.0), event.clone());
            }
            _ => {}
        }
    }

    /// Issue `count` lookups of random keys from random live nodes, `spacing`
    /// apart, run until all are answered (or `max` passed) and summarise them.
    pub fn lookup_batch(&mut self, count: usize, spacing: Duration, max: Duration) -> LookupStats {
        let start = self.lookup_records.len();
        for _ in 0..count {
            let node = self.random_live();
            let key = self.random_key();
            self.lookup(node, key);
            if !spacing.is_zero() {
                self.run_for(spacing);
            }
        }
        self.run_until_cond(Duration::from_millis(100), max, |s| {
            s.lookups_in_flight() == 0
        });
        LookupStats::of(&self.lookup_records[start..])
    }

    /// Messages sent per live node per second over a window: run for `window`
    /// and count.
    pub fn message_rate(&mut self, window: Duration) -> f64 {
        let before = self.messages;
        self.run_for(window);
        let sent = self.messages - before;
        sent as f64 / self.live_count().max(1) as f64 / window.as_secs_f64()
    }

    /// Live nodes whose successor, resp. predecessor, is not the true one.
    pub fn inconsistencies(&self) -> (usize, usize) {
        let ids: Vec<(NodeId, usize)> = self.live.iter().map(|(k, v)| (*k, *v)).collect();
        let n = ids.len();
        let (mut succ_bad, mut pred_bad) = (0, 0);
        if n < 2 {
            return (0, 0);
        }
        for (k, (_, i)) in ids.iter().enumerate() {
            let ring = &self.nodes[*i].ring;
            let succ = self.nodes[ids[(k + 1) % n].1].ring.me();
            let pred = self.nodes[ids[(k + n - 1) % n].1].ring.me();
            succ_bad += (ring.successor() != succ) as usize;
            pred_bad += (ring.predecessor() != Some(pred)) as usize;
        }
        (succ_bad, pred_bad)
    }

    /// Have all live nodes the true successor and predecessor?
    pub fn ring_consistent(&self) -> bool {
        let ids: Vec<(NodeId, usize)> = self.live.iter().map(|(k, v)| (*k, *v)).collect();
        let n = ids.len();
        for (k, (_, i)) in ids.iter().enumerate() {
            let ring = &self.nodes[*i].ring;
            let succ = self.nodes[ids[(k + 1) % n].1].ring.me();
            let pred = self.nodes[ids[(k + n - 1) % n].1].ring.me();
            if n > 1 && (ring.successor() != succ || ring.predecessor() != Some(pred)) {
                return false;
            }
        }
        true
    }

    /// Live nodes holding an item (key, name).
    pub fn holders_of(&self, key: NodeId, name: &str) -> Vec<usize> {
        self.live
            .values()
            .copied()
            .filter(|i| {
                self.nodes[*i]
                    .ring
                    .local_items(key)
                    .iter()
                    .any(|it| it.name == name)
            })
            .collect()
    }

    /// Build a network of `n` nodes joining one by one, `spacing` apart, each
    /// through a random node already in; then let it settle for `settle`.
    pub fn grow(&mut self, n: usize, spacing: Duration, settle: Duration) {
        let first = self.nodes.len();
        for k in 0..n {
            let node = self.add_node();
            if k > 0 || first > 0 {
                // A member: the first node, or one whose join completed.
                let bootstrap = loop {
                    let b = self.random_live();
                    if b != node && (b == first || self.nodes[b].ring.is_joined()) {
                        break b;
                    }
                };
                self.join(node, bootstrap);
                // One by one: the next starts once this one has its successor.
                self.run_until_cond(Duration::from_millis(5), Duration::from_secs(10), |s| {
                    s.nodes[node].ring.is_joined()
                });
            }
            self.run_for(spacing);
        }
        self.run_for(settle);
    }

    /// Like [`Sim::grow`], but each node starts its join `spacing` after the
    /// previous one without waiting for it (concurrent joins), through a random
    /// member that has joined. Faster for large networks; the ring needs longer
    /// to settle.
    pub fn grow_concurrent(&mut self, n: usize, spacing: Duration, settle: Duration) {
        let first = self.nodes.len();
        for k in 0..n {
            let node = self.add_node();
            if k > 0 || first > 0 {
                let bootstrap = loop {
                    let b = self.random_live();
                    if b != node && (b == first || self.nodes[b].ring.is_joined()) {
                        break b;
                    }
                };
                self.join(node, bootstrap);
            }
            self.run_for(spacing);
        }
        self.run_for(settle);
    }
}
