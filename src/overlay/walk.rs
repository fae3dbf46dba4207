//! The operator's questions about the whole ring, asked by a member: the
//! ring walk (every node in ring order, by successors, with its load, and
//! what does not add up: a gap, an inconsistency, an order problem) and a
//! key's look-up (its holders, the hops, the items under it).
//!
//! Sans-I/O: a [`RingWalk`] or [`KeyLookup`] says what to ask whom next
//! ([`Step`]) and is fed the answer; the node's overlay sends the questions
//! as its own signed ring requests ([`Surveys`] keeps which is which), the
//! operator CLI as a visitor from a socket of its own (open rings only).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::load::Load;
use crate::ring::{Item, NodeId, OpId, Peer, RingError, RingRequest, RingResponse};
use crate::sip::transaction::ClientKey;

/// How long one question waits for its answer.
pub const WAIT: Duration = Duration::from_secs(2);
/// Most nodes walked before the walk is called a loop.
const MAX_NODES: usize = 10_000;
/// Most surveys running at once on one node.
const MAX_RUNNING: usize = 16;

/// What a survey wants done next.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Send `request` to `to` and feed back the answer.
    Ask(SocketAddr, RingRequest),
    /// Look the key up through the ring and feed back its successor and hops.
    Route(NodeId),
    /// Waiting for an answer.
    Wait,
    /// Finished.
    Done,
}

/// An answer to a [`Step::Ask`]: the ring's answer and the `P2P-Load` the
/// node sent with it, or why there was none.
pub type Answer = Result<(RingResponse, Option<Load>), String>;

/// One node met on the walk.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Stop {
    pub id: String,
    pub addr: SocketAddr,
    pub predecessor: Option<SocketAddr>,
    /// Its share of the identifier circle, in percent (the keys it is primary for).
    pub share: f64,
    /// What it reported of itself; `None`: it sent no (readable) `P2P-Load`.
    pub load: Option<Load>,
}

/// The walk's result: the nodes in ring order from the first one asked,
/// and what did not add up.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WalkReport {
    pub nodes: Vec<Stop>,
    pub problems: Vec<String>,
}

/// Walks the ring by successors from `start` until it comes round.
#[derive(Debug)]
pub struct RingWalk {
    start: SocketAddr,
    report: WalkReport,
    /// The node asked now (`None` before the first answer: `start`).
    asking: Option<Peer>,
    /// The successors of the last node recorded, not yet tried.
    candidates: VecDeque<Peer>,
    /// Whether the last node recorded had any successor.
    had_successors: bool,
    waiting: bool,
    done: bool,
}

impl RingWalk {
    pub fn new(start: SocketAddr) -> RingWalk {
        RingWalk {
            start,
            report: WalkReport::default(),
            asking: None,
            candidates: VecDeque::new(),
            had_successors: false,
            waiting: false,
            done: false,
        }
    }

    /// What to do next.
    pub fn next_step(&mut self) -> Step {
        if self.done {
            return Step::Done;
        }
        if self.waiting {
            return Step::Wait;
        }
        if self.report.nodes.is_empty() {
            self.waiting = true;
            return Step::Ask(self.start, RingRequest::GetPredecessor);
        }
        let from = self
            .report
            .nodes
            .last()
            .map(|n| n.addr)
            .unwrap_or(self.start);
        let Some(next) = self.candidates.pop_front() else {
            if self.had_successors {
                self.problem(format!(
                    "gap: none of {from}'s successors answers; the walk stops"
                ));
            }
            return self.finish();
        };
        if next.addr == self.start || next.addr == from {
            return self.finish();
        }
        if self.report.nodes.iter().any(|n| n.addr == next.addr) {
            self.problem(format!(
                "loop: {} comes round again without passing {}",
                next.addr, self.start
            ));
            return self.finish();
        }
        self.asking = Some(next);
        self.waiting = true;
        Step::Ask(next.addr, RingRequest::GetPredecessor)
    }

    /// The answer to the last [`Step::Ask`].
    pub fn answered(&mut self, answer: Answer) {
        if !self.waiting || self.done {
            return;
        }
        self.waiting = false;
        let at = self.asking.unwrap_or_else(|| Peer::of_addr(self.start));
        let from = self.report.nodes.last().map(|n| n.addr);
        match answer {
            Ok((
                RingResponse::Predecessor {
                    predecessor,
                    successors,
                },
                load,
            )) => self.record(at, predecessor, successors, load),
            Ok((RingResponse::Refused(why), _)) => match from {
                None => self.fail(format!("{} refused: {why}", at.addr)),
                Some(from) => self.problem(format!(
                    "gap: {from}'s successor {} refused ({why})",
                    at.addr
                )),
            },
            Ok((other, _)) => self.fail(format!("{} answered {other:?}", at.addr)),
            Err(e) => match from {
                None => self.fail(format!("{} did not answer: {e}", at.addr)),
                Some(from) => {
                    self.problem(format!("gap: {from}'s successor {} is gone ({e})", at.addr))
                }
            },
        }
    }

    /// The result, once [`next_step`](Self::next_step) said [`Step::Done`].
    pub fn report(&self) -> &WalkReport {
        &self.report
    }

    fn record(
        &mut self,
        at: Peer,
        predecessor: Option<Peer>,
        successors: Vec<Peer>,
        load: Option<Load>,
    ) {
        if let (Some(before), Some(pred)) = (self.report.nodes.last(), predecessor)
            && pred.addr != before.addr
        {
            let message = format!(
                "inconsistency: {}'s predecessor is {}, but the walk came from {}",
                at.addr, pred.addr, before.addr
            );
            self.problem(message);
        }
        self.report.nodes.push(Stop {
            id: at.id.to_string(),
            addr: at.addr,
            predecessor: predecessor.map(|p| p.addr),
            share: 0.0,
            load,
        });
        if self.report.nodes.len() >= MAX_NODES {
            self.fail(format!("walked {MAX_NODES} nodes without coming round"));
        }
        self.had_successors = !successors.is_empty();
        self.candidates = successors.into_iter().collect();
    }

    fn problem(&mut self, message: String) {
        self.report.problems.push(message);
    }

    fn fail(&mut self, message: String) {
        self.problem(message);
        self.done = true;
    }

    /// Checks the order and works out each node's share of the circle.
    fn finish(&mut self) -> Step {
        self.done = true;
        let nodes = &mut self.report.nodes;
        let ids: Vec<NodeId> = nodes.iter().filter_map(|n| n.id.parse().ok()).collect();
        if ids.len() != nodes.len() {
            return Step::Done;
        }
        let descents = (0..ids.len())
            .filter(|&i| ids[(i + 1) % ids.len()] <= ids[i])
            .count();
        for i in 0..ids.len() {
            let before = ids[(i + ids.len() - 1) % ids.len()];
            let share = if ids.len() == 1 {
                1.0
            } else {
                ids[i].distance_from(before).as_f64()
            };
            nodes[i].share = share * 100.0;
        }
        if ids.len() > 1 && descents != 1 {
            self.problem(format!(
                "order: the Node-IDs go round {descents} times, not once"
            ));
        }
        Step::Done
    }
}

/// A key looked up: its holders (the key's successor, then its replicas),
/// the hops the look-up took, and the items under the key at the holder.
#[derive(Clone, Debug)]
pub struct LookupReport {
    pub key: NodeId,
    pub holders: Vec<Peer>,
    pub hops: u32,
    pub items: Vec<Item>,
}

#[derive(Debug)]
enum Phase {
    Route,
    Routing,
    Neighbours,
    Fetch,
    Done,
}

/// Looks a key up through the ring, asks the holder for its successors
/// (where the replicas live) and fetches the items there.
#[derive(Debug)]
pub struct KeyLookup {
    key: NodeId,
    replicas: usize,
    phase: Phase,
    waiting: bool,
    result: Result<LookupReport, String>,
}

impl KeyLookup {
    /// `replicas`: copies of an item the ring keeps (holder included).
    pub fn new(key: NodeId, replicas: usize) -> KeyLookup {
        KeyLookup {
            key,
            replicas,
            phase: Phase::Route,
            waiting: false,
            result: Err("not looked up".into()),
        }
    }

    pub fn next_step(&mut self) -> Step {
        if self.waiting {
            return Step::Wait;
        }
        let holder = self.result.as_ref().ok().and_then(|r| r.holders.first());
        let step = match (&self.phase, holder) {
            (Phase::Route, _) => {
                self.phase = Phase::Routing;
                Step::Route(self.key)
            }
            (Phase::Neighbours, Some(h)) => Step::Ask(h.addr, RingRequest::GetPredecessor),
            (Phase::Fetch, Some(h)) => Step::Ask(h.addr, RingRequest::Fetch { key: self.key }),
            _ => {
                self.phase = Phase::Done;
                return Step::Done;
            }
        };
        self.waiting = true;
        step
    }

    /// The ring's look-up of the key ended.
    pub fn routed(&mut self, result: Result<(Peer, u32), RingError>) {
        if !matches!(self.phase, Phase::Routing) {
            return;
        }
        self.waiting = false;
        match result {
            Ok((holder, hops)) => {
                self.result = Ok(LookupReport {
                    key: self.key,
                    holders: vec![holder],
                    hops,
                    items: Vec::new(),
                });
                self.phase = Phase::Neighbours;
            }
            Err(e) => self.fail(format!("the look-up of {} failed: {e:?}", self.key)),
        }
    }

    /// The answer to the last [`Step::Ask`].
    pub fn answered(&mut self, answer: Answer) {
        if !self.waiting {
            return;
        }
        self.waiting = false;
        let Ok(report) = &mut self.result else {
            return;
        };
        let holder = report.holders[0].addr;
        match (&self.phase, answer) {
            (Phase::Neighbours, Ok((RingResponse::Predecessor { successors, .. }, _))) => {
                for s in successors {
                    if report.holders.len() >= self.replicas.max(1) {
                        break;
                    }
                    if !report.holders.iter().any(|h| h.addr == s.addr) {
                        report.holders.push(s);
                    }
                }
                self.phase = Phase::Fetch;
            }
            (Phase::Fetch, Ok((RingResponse::Items { items }, _))) => {
                report.items = items;
                self.phase = Phase::Done;
            }
            (_, Ok((other, _))) => self.fail(format!("{holder} answered {other:?}")),
            (_, Err(e)) => self.fail(format!("{holder} did not answer: {e}")),
        }
    }

    /// The result, once [`next_step`](Self::next_step) said [`Step::Done`].
    pub fn result(&self) -> &Result<LookupReport, String> {
        &self.result
    }

    fn fail(&mut self, message: String) {
        self.result = Err(message);
        self.phase = Phase::Done;
    }
}

/// A survey's result.
#[derive(Clone, Debug)]
pub enum Report {
    Walk(WalkReport),
    Lookup(Result<LookupReport, String>),
    /// Not started: too many surveys run on this node already.
    Busy,
}

enum Survey {
    Walk(RingWalk),
    Lookup(KeyLookup),
}

impl Survey {
    fn next_step(&mut self) -> Step {
        match self {
            Survey::Walk(w) => w.next_step(),
            Survey::Lookup(l) => l.next_step(),
        }
    }

    fn answered(&mut self, answer: Answer) {
        match self {
            Survey::Walk(w) => w.answered(answer),
            Survey::Lookup(l) => l.answered(answer),
        }
    }

    fn report(self) -> Report {
        match self {
            Survey::Walk(w) => Report::Walk(w.report),
            Survey::Lookup(l) => Report::Lookup(l.result),
        }
    }
}

/// The surveys a node runs for its operator, by the id the operator's
/// query got, and which of the node's transactions and ring look-ups
/// answer which.
#[derive(Default)]
pub struct Surveys {
    running: HashMap<u64, (Survey, Option<(ClientKey, Instant)>)>,
    asked: HashMap<ClientKey, u64>,
    routing: HashMap<OpId, u64>,
    done: VecDeque<(u64, Report)>,
}

impl Surveys {
    /// Starts a walk from `me`; `false` (and [`Report::Busy`]) when too
    /// many surveys run already.
    pub fn walk(&mut self, id: u64, me: SocketAddr) -> bool {
        self.start(id, Survey::Walk(RingWalk::new(me)))
    }

    /// Starts a key's look-up; `false` when too many surveys run already.
    pub fn lookup(&mut self, id: u64, key: NodeId, replicas: usize) -> bool {
        self.start(id, Survey::Lookup(KeyLookup::new(key, replicas)))
    }

    fn start(&mut self, id: u64, survey: Survey) -> bool {
        if self.running.len() >= MAX_RUNNING || self.running.contains_key(&id) {
            self.done.push_back((id, Report::Busy));
            return false;
        }
        self.running.insert(id, (survey, None));
        true
    }

    /// The next thing one of the surveys wants done; finished ones move to
    /// [`poll_done`](Self::poll_done) on the way.
    pub fn next_step(&mut self) -> Option<(u64, Step)> {
        let mut ids: Vec<u64> = self.running.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some((survey, _)) = self.running.get_mut(&id) else {
                continue;
            };
            match survey.next_step() {
                Step::Wait => continue,
                Step::Done => {
                    if let Some((survey, _)) = self.running.remove(&id) {
                        self.done.push_back((id, survey.report()));
                    }
                }
                step => return Some((id, step)),
            }
        }
        None
    }

    /// Survey `id`'s question went out on transaction `key`.
    pub fn sent(&mut self, id: u64, key: ClientKey, now: Instant) {
        if let Some((_, asked)) = self.running.get_mut(&id) {
            *asked = Some((key, now + WAIT));
            self.asked.insert(key, id);
        }
    }

    /// Survey `id`'s look-up went into the ring as `op`.
    pub fn routing(&mut self, id: u64, op: OpId) {
        self.routing.insert(op, id);
    }

    /// Whether transaction `key` carries a survey's question (its answer
    /// then goes to [`answered`](Self::answered), not to the ring).
    pub fn owns(&self, key: ClientKey) -> bool {
        self.asked.contains_key(&key)
    }

    /// The answer on transaction `key` (or to survey `id` directly).
    pub fn answered(&mut self, key: Option<ClientKey>, id: Option<u64>, answer: Answer) {
        let id = match (key, id) {
            (Some(key), _) => self.asked.remove(&key),
            (None, id) => id,
        };
        let Some((survey, asked)) = id.and_then(|id| self.running.get_mut(&id)) else {
            return;
        };
        if let (Some(key), Some((waited, _))) = (key, *asked)
            && key != waited
        {
            return;
        }
        *asked = None;
        survey.answered(answer);
    }

    /// Whether the ring look-up `op` is a survey's; then its result is fed to it.
    pub fn routed(&mut self, op: OpId, result: &Result<(Peer, u32), RingError>) -> bool {
        let Some(id) = self.routing.remove(&op) else {
            return false;
        };
        if let Some((Survey::Lookup(lookup), _)) = self.running.get_mut(&id) {
            lookup.routed(result.clone());
        }
        true
    }

    /// Questions unanswered past their time fail.
    pub fn handle_timeout(&mut self, now: Instant) {
        let late: Vec<ClientKey> = self
            .running
            .values()
            .filter_map(|(_, asked)| asked.filter(|(_, until)| *until <= now).map(|(k, _)| k))
            .collect();
        for key in late {
            self.answered(Some(key), None, Err(format!("no answer within {WAIT:?}")));
        }
    }

    /// When the next question times out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.running
            .values()
            .filter_map(|(_, asked)| asked.map(|(_, until)| until))
            .min()
    }

    /// A finished survey's report.
    pub fn poll_done(&mut self) -> Option<(u64, Report)> {
        self.done.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> Peer {
        Peer::of_addr(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Three nodes in ring order by Node-ID.
    fn three() -> Vec<Peer> {
        let mut peers: Vec<Peer> = (5000..5003).map(peer).collect();
        peers.sort_by_key(|p| p.id);
        peers
    }

    fn answer_of(ring: &[Peer], at: SocketAddr, dead: &[SocketAddr]) -> Answer {
        if dead.contains(&at) {
            return Err("timeout".into());
        }
        let i = ring.iter().position(|p| p.addr == at).expect("in ring");
        let n = ring.len();
        let successors = (1..n).map(|k| ring[(i + k) % n]).collect();
        let load = Load {
            role: super::super::load::Role::Node,
            primary: i as u64,
            replica: 0,
            rps: 0.0,
            pending: 0,
        };
        Ok((
            RingResponse::Predecessor {
                predecessor: Some(ring[(i + n - 1) % n]),
                successors,
            },
            (i != 1).then_some(load),
        ))
    }

    fn run(walk: &mut RingWalk, ring: &[Peer], dead: &[SocketAddr]) {
        for _ in 0..100 {
            match walk.next_step() {
                Step::Ask(to, RingRequest::GetPredecessor) => {
                    walk.answered(answer_of(ring, to, dead))
                }
                Step::Done => return,
                other => panic!("{other:?}"),
            }
        }
        panic!("the walk did not end");
    }

    #[test]
    fn a_whole_ring_walks_round_once_with_loads() {
        let ring = three();
        let mut walk = RingWalk::new(ring[1].addr);
        run(&mut walk, &ring, &[]);
        let report = walk.report();
        let order: Vec<SocketAddr> = report.nodes.iter().map(|n| n.addr).collect();
        assert_eq!(order, vec![ring[1].addr, ring[2].addr, ring[0].addr]);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let total: f64 = report.nodes.iter().map(|n| n.share).sum();
        assert!((total - 100.0).abs() < 1e-6);
        // The node that sent no load has none.
        assert!(report.nodes[0].load.is_none());
        assert_eq!(report.nodes[1].load.map(|l| l.primary), Some(2));
    }

    #[test]
    fn a_dead_successor_is_a_gap_and_the_walk_goes_on() {
        let ring = three();
        let mut walk = RingWalk::new(ring[0].addr);
        run(&mut walk, &ring, &[ring[1].addr]);
        let report = walk.report();
        assert_eq!(report.nodes.len(), 2);
        assert!(report.problems.iter().any(|p| p.starts_with("gap:")));
        // ring[2]'s predecessor is ring[1], not ring[0]: an inconsistency.
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.starts_with("inconsistency:"))
        );
    }

    #[test]
    fn a_silent_start_fails_the_walk() {
        let ring = three();
        let mut walk = RingWalk::new(ring[0].addr);
        run(&mut walk, &ring, &[ring[0].addr]);
        assert!(walk.report().nodes.is_empty());
        assert_eq!(walk.report().problems.len(), 1);
    }

    #[test]
    fn a_lookup_names_the_holder_its_replicas_and_the_items() {
        let ring = three();
        let mut lookup = KeyLookup::new(NodeId::of_key("alice@example.com"), 3);
        assert!(matches!(lookup.next_step(), Step::Route(_)));
        assert_eq!(lookup.next_step(), Step::Wait);
        lookup.routed(Ok((ring[2], 2)));
        let Step::Ask(to, RingRequest::GetPredecessor) = lookup.next_step() else {
            panic!("asks the holder for its successors");
        };
        lookup.answered(answer_of(&ring, to, &[]));
        let Step::Ask(to, RingRequest::Fetch { .. }) = lookup.next_step() else {
            panic!("fetches at the holder");
        };
        assert_eq!(to, ring[2].addr);
        lookup.answered(Ok((RingResponse::Items { items: Vec::new() }, None)));
        assert_eq!(lookup.next_step(), Step::Done);
        let report = lookup.result().as_ref().expect("found");
        let holders: Vec<SocketAddr> = report.holders.iter().map(|p| p.addr).collect();
        assert_eq!(holders, vec![ring[2].addr, ring[0].addr, ring[1].addr]);
        assert_eq!(report.hops, 2);
    }

    #[test]
    fn surveys_time_out_and_report() {
        let mut surveys = Surveys::default();
        let t0 = Instant::now();
        let me = peer(5000).addr;
        assert!(surveys.walk(7, me));
        let Some((7, Step::Ask(to, _))) = surveys.next_step() else {
            panic!("the walk asks first");
        };
        assert_eq!(to, me);
        surveys.sent(7, ClientKey(1), t0);
        assert!(surveys.owns(ClientKey(1)));
        assert!(surveys.next_step().is_none());
        assert_eq!(surveys.poll_timeout(), Some(t0 + WAIT));
        surveys.handle_timeout(t0 + WAIT);
        assert!(surveys.next_step().is_none());
        let Some((7, Report::Walk(report))) = surveys.poll_done() else {
            panic!("reported");
        };
        assert_eq!(report.problems.len(), 1);
    }
}
