//! Clients and super-nodes (issue 13, item 5).
//!
//! A **client** is a node that is not a ring member: it holds no keys, is
//! nobody's finger, successor or predecessor, and answers no lookups. It
//! attaches to a member, its **super-node** (`Attach`, refreshed every
//! `client_refresh`), and sends every ring operation to it: a lookup as a
//! recursive `FindSuccessor`, a store, claim, remove or fetch as the same
//! request, which the super-node carries out as an operation of its own
//! (items are written in the super-node's name and kept there, stored again
//! should their holder die) and answers when it ends. When the super-node
//! dies the client attaches to the next member it knows (its bootstraps and
//! the super-node's successors, learnt at each refresh).
//!
//! **Reachability:** with each refresh the client asks its super-node to
//! `Probe` it: the member pings the address the client would have in the
//! ring (its listening address) and answers whether the ping was answered.
//! Behind a NAT that address is not reachable from the public side. A
//! client that has been attached and reachable for `promote_after` joins
//! the ring as a member (a normal join). A node started with
//! [`Role::Auto`] is a client until its first probe: reachable → it joins
//! at once; not → it stays a client.
//!
//! A **super-node** is a member with clients: it keeps at most
//! `max_clients`, forgets one not refreshed for three periods, and refuses
//! an Attach beyond the bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::requests::Pending;
use super::{
    IncomingId, Item, NodeId, OpId, Peer, Refusal, Ring, RingError, RingRequest, RingResponse,
};

/// How a node takes part in the ring (`[ring] role`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Joins the ring through its bootstraps (the default).
    #[default]
    Member,
    /// Attaches to a member as a client (`--client`); promoted when it has
    /// stayed reachable for `promote_after`.
    Client,
    /// A client until the first probe says whether it is reachable: joins
    /// the ring if so, stays a client if not.
    Auto,
}

/// The refusal words of a super-node that has as many clients as it keeps.
pub const TOO_MANY_CLIENTS: &str = "too many clients";
/// The refusal words of a probe whose ping went unanswered.
pub const UNREACHABLE: &str = "unreachable";
/// The refusal words for a request a client may not make of its super-node.
pub const NOT_FOR_CLIENTS: &str = "not for clients";
/// Members a client remembers to attach to.
const MAX_CANDIDATES: usize = 16;

/// This node's side as a client.
#[derive(Debug)]
pub(super) struct ClientSide {
    /// Started as [`Role::Auto`]: the first probe decides.
    auto: bool,
    /// Members to attach to, in order.
    candidates: Vec<SocketAddr>,
    /// The super-node that accepted our Attach.
    attached: Option<Peer>,
    /// An Attach in flight.
    attaching: bool,
    /// A probe in flight.
    probing: bool,
    /// Since when the probes say we are reachable.
    reachable_since: Option<Instant>,
    /// When the attachment is next refreshed (or tried again).
    next_refresh: Instant,
    /// Probes answered and not, for the status.
    pub(super) probes_ok: u64,
    pub(super) probes_failed: u64,
}

/// The clients of this node as a super-node.
#[derive(Debug, Default)]
pub(super) struct Clients {
    /// Attached clients (by the Node-ID of their transport address), and
    /// when they last refreshed.
    attached: HashMap<NodeId, Instant>,
    /// Our operations carried out for a client, and the request to answer.
    relayed: HashMap<u64, IncomingId>,
    /// Attaches refused because we had as many clients as we keep.
    pub(super) refused: u64,
}

impl Ring {
    /// Starts this node as a client of one of `members` (tried in turn),
    /// instead of joining; `auto`: a reachable node joins at its first probe.
    pub fn attach(&mut self, members: &[SocketAddr], auto: bool, now: Instant) {
        let candidates: Vec<SocketAddr> = members
            .iter()
            .copied()
            .filter(|a| *a != self.me.addr)
            .take(MAX_CANDIDATES)
            .collect();
        if candidates.is_empty() {
            return;
        }
        self.client = Some(ClientSide {
            auto,
            candidates,
            attached: None,
            attaching: false,
            probing: false,
            reachable_since: None,
            next_refresh: now,
            probes_ok: 0,
            probes_failed: 0,
        });
        self.client_tick(now);
    }

    /// True while this node is a client (not a ring member).
    pub fn is_client(&self) -> bool {
        self.client.is_some()
    }

    /// `member`, `super` (a member with clients) or `client`.
    pub fn role(&self) -> &'static str {
        match (&self.client, self.clients.attached.is_empty()) {
            (Some(_), _) => "client",
            (None, true) => "member",
            (None, false) => "super",
        }
    }

    /// The super-node this client is attached to.
    pub fn super_node(&self) -> Option<Peer> {
        self.client.as_ref().and_then(|c| c.attached)
    }

    /// Clients attached to this node.
    pub fn client_count(&self) -> usize {
        self.clients.attached.len()
    }

    /// Attaches refused because this node had `max_clients` already.
    pub fn clients_refused(&self) -> u64 {
        self.clients.refused
    }

    /// Where a client sends its requests: its super-node, or while it has
    /// none the first member it may attach to.
    pub(super) fn via(&self) -> Option<Peer> {
        let c = self.client.as_ref()?;
        c.attached.or_else(|| {
            c.candidates
                .iter()
                .find(|a| !self.neighbours.dead.contains_key(a))
                .or(c.candidates.first())
                .map(|a| Peer::of_addr(*a))
        })
    }

    /// The client's periodic work: attach, refresh, probe, promote.
    pub(super) fn client_tick(&mut self, now: Instant) {
        let refresh = self.config.client_refresh;
        let promote_after = self.config.promote_after;
        let Some(c) = self.client.as_mut() else {
            // A super-node forgets clients that stopped refreshing.
            let stale = refresh * 3;
            self.clients
                .attached
                .retain(|_, last| now.saturating_duration_since(*last) < stale);
            return;
        };
        if let (Some(since), Some(after), Some(sup)) =
            (c.reachable_since, promote_after, c.attached)
            && now.saturating_duration_since(since) >= after
        {
            info!(super_node = %sup.addr, "reachable for the promotion time: joining the ring as a member");
            return self.promote(sup.addr, now);
        }
        if now < c.next_refresh || c.attaching {
            return;
        }
        c.next_refresh = now + refresh;
        let Some(to) = self.via() else {
            return;
        };
        if let Some(c) = self.client.as_mut() {
            c.attaching = true;
        }
        self.send(to.addr, RingRequest::Attach, Pending::Attach { to }, now);
    }

    /// Leaves the client role and joins the ring through `through`.
    fn promote(&mut self, through: SocketAddr, now: Instant) {
        let Some(c) = self.client.take() else {
            return;
        };
        self.join(through, now);
        for other in c.candidates {
            self.join(other, now);
        }
    }

    /// When the client next wants to be woken.
    pub(super) fn client_deadline(&self) -> Option<Instant> {
        let c = self.client.as_ref()?;
        let promote = match (c.reachable_since, self.config.promote_after) {
            (Some(since), Some(after)) => Some(since + after),
            _ => None,
        };
        Some(promote.map_or(c.next_refresh, |p| p.min(c.next_refresh)))
    }

    /// The answer to our Attach.
    pub(super) fn on_attached(&mut self, to: Peer, response: Option<RingResponse>, now: Instant) {
        let Some(c) = self.client.as_mut() else {
            return;
        };
        c.attaching = false;
        match response {
            Some(RingResponse::Ok) => {
                if c.attached != Some(to) {
                    info!(super_node = %to.addr, "attached to a super-node as a client");
                }
                c.attached = Some(to);
                let probe = self.config.promote_after.is_some() || c.auto;
                if probe && !c.probing {
                    c.probing = true;
                    let me = self.me;
                    self.send(
                        to.addr,
                        RingRequest::Probe { peer: me },
                        Pending::Reachable { to },
                        now,
                    );
                }
                // Learn more members to attach to should this one die.
                self.send(
                    to.addr,
                    RingRequest::GetPredecessor,
                    Pending::Members { to },
                    now,
                );
            }
            other => {
                debug!(super_node = %to.addr, answer = ?other, "attach refused or failed; trying the next member");
                self.next_candidate(to, now);
            }
        }
    }

    /// The answer to our Probe: are we reachable?
    pub(super) fn on_probed(&mut self, response: Option<RingResponse>, now: Instant) {
        let Some(c) = self.client.as_mut() else {
            return;
        };
        c.probing = false;
        let reachable = matches!(response, Some(RingResponse::Ok));
        if reachable {
            c.probes_ok += 1;
            c.reachable_since.get_or_insert(now);
        } else {
            c.probes_failed += 1;
            c.reachable_since = None;
        }
        if c.auto {
            c.auto = false;
            if reachable && let Some(sup) = c.attached {
                info!("reachable from the ring: joining as a member");
                self.promote(sup.addr, now);
            } else {
                info!("not reachable from the ring: staying a client");
            }
        }
    }

    /// The super-node's successors: members to attach to later.
    pub(super) fn on_members(&mut self, response: RingResponse) {
        let (Some(c), RingResponse::Predecessor { successors, .. }) =
            (self.client.as_mut(), response)
        else {
            return;
        };
        for s in successors {
            if c.candidates.len() >= MAX_CANDIDATES {
                break;
            }
            if s.addr != self.me.addr && !c.candidates.contains(&s.addr) {
                c.candidates.push(s.addr);
            }
        }
    }

    /// `dead` failed us: when it is our super-node (or the member we were
    /// attaching to), attach to the next one at once.
    pub(super) fn client_lost(&mut self, dead: Peer, now: Instant) {
        let Some(c) = self.client.as_mut() else {
            return;
        };
        if c.attached == Some(dead) {
            info!(super_node = %dead.addr, "super-node lost; attaching to another member");
            c.attached = None;
            c.reachable_since = None;
            self.next_candidate(dead, now);
        }
    }

    /// Puts `failed` last among the candidates and tries the next one.
    fn next_candidate(&mut self, failed: Peer, now: Instant) {
        let Some(c) = self.client.as_mut() else {
            return;
        };
        if c.attached == Some(failed) {
            c.attached = None;
        }
        if let Some(i) = c.candidates.iter().position(|a| *a == failed.addr) {
            let a = c.candidates.remove(i);
            c.candidates.push(a);
        }
        // Not in a tight loop when every member refuses: once per period
        // after a full round.
        let first_again = c.candidates.first() == Some(&failed.addr) || c.candidates.len() <= 1;
        c.next_refresh = if first_again {
            now + self.config.client_refresh
        } else {
            now
        };
        self.client_tick(now);
    }

    /// A request that came to this node while it is a client: only pings
    /// are answered (a client is no member).
    pub(super) fn client_refuses(&mut self, id: IncomingId, request: &RingRequest) {
        let answer = match request {
            RingRequest::Ping => RingResponse::Ok,
            _ => RingResponse::Refused(Refusal::NotJoined),
        };
        self.respond(id, answer);
    }

    /// Whether `sender` is one of our clients.
    pub(super) fn is_our_client(&self, sender: NodeId) -> bool {
        self.clients.attached.contains_key(&sender)
    }

    /// An Attach: taken while we are a member with room.
    pub(super) fn on_attach(&mut self, sender: NodeId, id: IncomingId, now: Instant) {
        if !self.joining.joined && !self.joining.bootstraps.is_empty() {
            return self.respond(id, RingResponse::Refused(Refusal::NotJoined));
        }
        let known = self.clients.attached.contains_key(&sender);
        if !known && self.clients.attached.len() >= self.config.max_clients {
            self.clients.refused += 1;
            debug!(client = %sender.short(), "attach refused: as many clients as kept");
            return self.respond(
                id,
                RingResponse::Refused(Refusal::Other(TOO_MANY_CLIENTS.into())),
            );
        }
        if !known {
            info!(client = %sender.short(), "client attached");
        }
        self.clients.attached.insert(sender, now);
        self.respond(id, RingResponse::Ok);
    }

    /// A request from one of our clients: carried out as our own operation
    /// where it is one, answered when it ends.
    pub(super) fn on_client_request(
        &mut self,
        id: IncomingId,
        request: RingRequest,
        now: Instant,
    ) -> Option<RingRequest> {
        let op = match request {
            RingRequest::Probe { peer } => {
                self.send(
                    peer.addr,
                    RingRequest::Ping,
                    Pending::Reach {
                        incoming: id,
                        to: peer,
                    },
                    now,
                );
                return None;
            }
            RingRequest::Store {
                mut items,
                replica: false,
            } if items.len() == 1 => {
                let item: Item = items.remove(0);
                self.store(item, now)
            }
            RingRequest::Claim { item } => self.claim(item, now),
            RingRequest::Remove {
                key,
                name,
                replica: false,
                ..
            } => self.remove(key, name, now),
            RingRequest::Fetch { key } => self.fetch(key, now),
            // Lookups are routed as anybody's; pings answered.
            r @ (RingRequest::FindSuccessor { .. }
            | RingRequest::Ping
            | RingRequest::GetPredecessor) => {
                return Some(r);
            }
            _ => {
                self.respond(
                    id,
                    RingResponse::Refused(Refusal::Other(NOT_FOR_CLIENTS.into())),
                );
                return None;
            }
        };
        self.relay_when_done(op, id);
        None
    }

    /// Our ping of a probed client was answered (`true`) or not.
    pub(super) fn on_reach(&mut self, incoming: IncomingId, answered: bool) {
        let answer = if answered {
            RingResponse::Ok
        } else {
            RingResponse::Refused(Refusal::Other(UNREACHABLE.into()))
        };
        self.respond(incoming, answer);
    }

    fn relay_when_done(&mut self, op: OpId, id: IncomingId) {
        if self.ops.running.contains_key(&op.0) {
            self.clients.relayed.insert(op.0, id);
        } else {
            // Ended at once: its event is the last one queued.
            if let Some(event) = self.events.pop_back() {
                if let Some(answer) = relayed_answer(&event) {
                    self.respond(id, answer);
                } else {
                    self.events.push_back(event);
                }
            }
        }
    }

    /// Any operation carried out for a client still running?
    pub(super) fn clients_waiting(&self) -> bool {
        !self.clients.relayed.is_empty()
    }

    /// An operation carried out for a client ended: its answer, or `None`
    /// when it was not a client's.
    pub(super) fn relayed_end(&mut self, op: OpId, event: &super::RingEvent) -> bool {
        let Some(id) = self.clients.relayed.remove(&op.0) else {
            return false;
        };
        if let Some(answer) = relayed_answer(event) {
            self.respond(id, answer);
        }
        true
    }
}

/// What a client hears when the operation its super-node carried out ends.
fn relayed_answer(event: &super::RingEvent) -> Option<RingResponse> {
    use super::RingEvent;
    let refused = |e: &RingError| match e {
        RingError::Refused(r) => RingResponse::Refused(r.clone()),
        _ => RingResponse::Refused(Refusal::Timeout),
    };
    Some(match event {
        RingEvent::StoreDone { result: Ok(()), .. } => RingResponse::Stored,
        RingEvent::StoreDone { result: Err(e), .. } => refused(e),
        RingEvent::FetchDone {
            result: Ok(items), ..
        } => RingResponse::Items {
            items: items.clone(),
        },
        RingEvent::FetchDone { result: Err(e), .. } => refused(e),
        _ => return None,
    })
}

/// How long a client waits for its super-node to carry out an operation:
/// a lookup and a request further on.
pub(super) fn relayed_timeout(ceiling: Duration) -> Duration {
    ceiling * 2
}
