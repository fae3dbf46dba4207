//! The RFC 3261 §17 transaction layer as a sans-I/O state machine.
//!
//! [`Transactions`] holds every client and server transaction of a node. It is
//! fed with messages ([`Transactions::receive`]), with requests and responses
//! of the transaction user (TU) ([`Transactions::send_request`],
//! [`Transactions::respond`], [`Transactions::cancel`]) and with time
//! ([`Transactions::handle_timeout`]); it never reads a clock and does no I/O.
//! The driver drains [`Transactions::poll_transmit`] (messages to put on the
//! wire), [`Transactions::poll_event`] (what the TU must see) and arms one
//! timer at [`Transactions::poll_timeout`].
//!
//! Matching follows RFC 3261 §17.1.3 (client: branch + CSeq method) and
//! §17.2.3 (server: branch + sent-by + method, ACK matching INVITE). Requests
//! whose branch lacks the magic cookie are matched by a simplified RFC 2543
//! rule, see [`rfc2543_branch`] and `docs/transactions.md`.
//!
//! Cost per message: one parse of the top Via value and one of CSeq, one hash
//! lookup, and O(log n) timer bookkeeping in a `BTreeMap`. Transactions live
//! in a generation-checked slab, so a key lookup is an index, not a hash.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytesstr::BytesStr;
use ezk_sip_types::header::typed::{CSeq, CallID, FromTo, Via};
use ezk_sip_types::host::{Host, HostPort};
use ezk_sip_types::{Headers, Method, Name};

use super::message::{Message, Request, Response, local_tag};

#[cfg(test)]
mod tests;

/// The RFC 3261 branch prefix ("magic cookie", §8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Timer D for unreliable transports (RFC 3261 §17.1.1.2: at least 32 s).
const TIMER_D: Duration = Duration::from_secs(32);

/// Who started a client transaction: an opaque tag the layer keeps with it
/// and hands back with each of its events, so that the transaction user
/// gives a response or a timeout to the part that sent the request and to no
/// other. The layer gives it no meaning; `Owner::default()` is "nobody".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Owner(pub u8);

/// The transport a message came in on or goes out on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Udp,
    Tcp,
    Tls,
}

impl TransportKind {
    /// Whether the transport is reliable (no retransmissions, zero-length
    /// absorb timers D, I, J, K).
    pub fn reliable(self) -> bool {
        !matches!(self, TransportKind::Udp)
    }
}

/// The other end of a message: a transport and a socket address (for stream
/// transports, the address identifies the connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: TransportKind,
    pub addr: SocketAddr,
}

/// The RFC 3261 base timers (§17.1.1.1, Table 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate: first retransmission interval.
    pub t1: Duration,
    /// Longest retransmission interval for non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// Longest time a message stays in the network.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// A server transaction, as seen by the TU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey(pub u64);

/// A client transaction, as seen by the TU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(pub u64);

/// A message to put on the wire.
#[derive(Clone, Debug)]
pub struct Transmit {
    pub to: Peer,
    pub message: Message,
}

/// What the TU must see.
#[derive(Clone, Debug)]
pub enum Event {
    /// A new request (never a retransmission). For INVITE the layer has already sent 100 Trying.
    Request {
        key: ServerKey,
        request: Request,
        from: Peer,
    },
    /// An ACK that matches no INVITE server transaction (ACK for a 2xx): the TU (proxy) forwards it.
    Ack { request: Request, from: Peer },
    /// A CANCEL that matched an INVITE server transaction. The layer already answered the CANCEL with 200;
    /// the TU cancels its branches and answers the INVITE (487). A CANCEL matching nothing is answered 481
    /// by the layer, no event.
    Cancel {
        invite: ServerKey,
        request: Request,
        from: Peer,
    },
    /// A response for a client transaction (provisional or final; retransmitted finals are absorbed).
    Response {
        key: ClientKey,
        owner: Owner,
        response: Response,
    },
    /// The client transaction got no final response (Timer B / F) or the transport failed: treat as 408.
    Timeout { key: ClientKey, owner: Owner },
    /// A response matching no client transaction (e.g. a 2xx retransmission to INVITE): a proxy forwards
    /// it statelessly.
    StrayResponse { response: Response, from: Peer },
}

// ---------------------------------------------------------------------------
// Internal state
// ---------------------------------------------------------------------------

/// Which of a transaction's two timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Timer A, E or G: retransmission.
    Retransmit = 0,
    /// Timer B, D, F, H, I, J, K (and the 64*T1 limit after a CANCEL).
    Lifetime = 1,
}

/// Position of an armed timer in the deadline map.
type TimerPos = (Instant, u64);

/// Server matching key, RFC 3261 §17.2.3. `method` is INVITE for an ACK.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ServerMatch {
    branch: BytesStr,
    sent_by: HostPort,
    method: Method,
}

/// Client matching key, RFC 3261 §17.1.3.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ClientMatch {
    branch: BytesStr,
    method: Method,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    /// Calling (INVITE) or Trying (non-INVITE).
    Initial,
    Proceeding,
    Completed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CancelState {
    None,
    /// `cancel()` was called before any provisional response.
    Pending,
    Sent,
}

struct Client {
    invite: bool,
    state: ClientState,
    /// The request as sent (for retransmissions, ACK and CANCEL).
    request: Message,
    to: Peer,
    /// Current retransmission interval (Timer A / E).
    interval: Duration,
    /// A CANCEL made by the layer: responses and timeouts are absorbed.
    silent: bool,
    cancel: CancelState,
    /// The ACK sent for a non-2xx final response, re-sent on retransmissions.
    ack: Option<Message>,
    /// Who sent the request (returned with every event).
    owner: Owner,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerState {
    /// Non-INVITE before any response.
    Trying,
    Proceeding,
    Completed,
    /// INVITE after the ACK for a non-2xx final response.
    Confirmed,
}

struct Server {
    invite: bool,
    state: ServerState,
    from: Peer,
    /// The last response sent, re-sent on request retransmissions.
    last: Option<Message>,
    /// Current retransmission interval (Timer G).
    interval: Duration,
}

// The slab slot is written once and reused, so the size difference costs no moves.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Client(Client),
    Server(Server),
}

enum IndexKey {
    Client(ClientMatch),
    Server(ServerMatch),
    /// Not reachable from the network (a client request without a branch).
    None,
}

struct Txn {
    index: IndexKey,
    timers: [Option<TimerPos>; 2],
    kind: Kind,
}

/// Generation-checked slab: a key is `generation << 32 | index`.
#[derive(Default)]
struct Slab {
    entries: Vec<SlabEntry>,
    free: Vec<u32>,
    live: usize,
}

struct SlabEntry {
    generation: u32,
    txn: Option<Txn>,
}

impl Slab {
    fn insert(&mut self, txn: Txn) -> u64 {
        self.live += 1;
        let index = match self.free.pop() {
            Some(index) => {
                self.entries[index as usize].txn = Some(txn);
                index
            }
            None => {
                self.entries.push(SlabEntry {
                    generation: 0,
                    txn: Some(txn),
                });
                (self.entries.len() - 1) as u32
            }
        };
        let generation = self.entries[index as usize].generation;
        (u64::from(generation) << 32) | u64::from(index)
    }

    fn entry(&mut self, key: u64) -> Option<&mut SlabEntry> {
        let entry = self.entries.get_mut(key as u32 as usize)?;
        (entry.generation == (key >> 32) as u32 && entry.txn.is_some()).then_some(entry)
    }

    fn get(&self, key: u64) -> Option<&Txn> {
        let entry = self.entries.get(key as u32 as usize)?;
        if entry.generation == (key >> 32) as u32 {
            entry.txn.as_ref()
        } else {
            None
        }
    }

    fn get_mut(&mut self, key: u64) -> Option<&mut Txn> {
        self.entry(key)?.txn.as_mut()
    }

    fn remove(&mut self, key: u64) -> Option<Txn> {
        let entry = self.entry(key)?;
        let txn = entry.txn.take();
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(key as u32);
        self.live -= 1;
        txn
    }
}

/// Armed timers, ordered by deadline.
#[derive(Default)]
struct Deadlines {
    map: BTreeMap<TimerPos, (u64, Slot)>,
    seq: u64,
}

impl Deadlines {
    fn arm(&mut self, txn: &mut Txn, id: u64, slot: Slot, at: Instant) {
        let cur = &mut txn.timers[slot as usize];
        if let Some(pos) = cur.take() {
            self.map.remove(&pos);
        }
        self.seq += 1;
        let pos = (at, self.seq);
        self.map.insert(pos, (id, slot));
        *cur = Some(pos);
    }

    fn disarm(&mut self, txn: &mut Txn, slot: Slot) {
        if let Some(pos) = txn.timers[slot as usize].take() {
            self.map.remove(&pos);
        }
    }
}

/// All transactions of a node. See the module documentation.
pub struct Transactions {
    timers: Timers,
    slab: Slab,
    servers: HashMap<ServerMatch, u64>,
    clients: HashMap<ClientMatch, u64>,
    deadlines: Deadlines,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Default for Transactions {
    fn default() -> Self {
        Transactions::new(Timers::default())
    }
}

impl std::fmt::Debug for Transactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transactions")
            .field("timers", &self.timers)
            .field("live", &self.slab.live)
            .field("next_timeout", &self.poll_timeout())
            .field("queued_transmits", &self.transmits.len())
            .field("queued_events", &self.events.len())
            .finish()
    }
}

impl Transactions {
    pub fn new(timers: Timers) -> Self {
        Transactions {
            timers,
            slab: Slab::default(),
            servers: HashMap::new(),
            clients: HashMap::new(),
            deadlines: Deadlines::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The timer values in use.
    pub fn timers(&self) -> Timers {
        self.timers
    }

    /// Number of live transactions (for metrics).
    pub fn len(&self) -> usize {
        self.slab.live
    }

    pub fn is_empty(&self) -> bool {
        self.slab.live == 0
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.map.first_key_value().map(|((at, _), _)| *at)
    }

    /// Queues a message outside any transaction (an ACK for a 2xx, a response
    /// forwarded statelessly), so that a driver has a single output queue.
    pub fn send_stateless(&mut self, message: Message, to: Peer) {
        self.transmits.push_back(Transmit { to, message });
    }

    /// Feed a message received from the network.
    pub fn receive(&mut self, message: Message, from: Peer, now: Instant) {
        match message {
            Message::Request(request) => self.receive_request(request, from, now),
            Message::Response(response) => self.receive_response(response, from, now),
        }
    }

    // -----------------------------------------------------------------------
    // Client side
    // -----------------------------------------------------------------------

    /// Start a client transaction. The caller has already put its own top Via
    /// with a fresh RFC 3261 branch ("z9hG4bK..."); the layer keys on it.
    /// For INVITE the layer sends the ACK for a non-2xx final response itself
    /// (RFC 3261 §17.1.1.3), and absorbs retransmissions.
    ///
    /// An ACK is not a transaction: it is sent once and the key returned
    /// refers to nothing (no event ever carries it). A request without a
    /// branch is sent and retransmitted but cannot match a response; it ends
    /// with [`Event::Timeout`].
    pub fn send_request(&mut self, request: Request, to: Peer, now: Instant) -> ClientKey {
        self.send_request_for(Owner::default(), request, to, now)
    }

    /// [`send_request`](Self::send_request) on behalf of `owner`, whose tag
    /// every event of the transaction carries.
    pub fn send_request_for(
        &mut self,
        owner: Owner,
        request: Request,
        to: Peer,
        now: Instant,
    ) -> ClientKey {
        if request.method == Method::ACK {
            self.transmits.push_back(Transmit {
                to,
                message: Message::Request(request),
            });
            // Slot index u32::MAX is never allocated: this key refers to nothing.
            return ClientKey(u64::MAX);
        }
        ClientKey(self.start_client(request, to, now, false, owner))
    }

    fn start_client(
        &mut self,
        request: Request,
        to: Peer,
        now: Instant,
        silent: bool,
        owner: Owner,
    ) -> u64 {
        let invite = request.method == Method::INVITE;
        let index = match top_via(&request.headers).and_then(|v| branch_of(&v)) {
            Some(branch) => IndexKey::Client(ClientMatch {
                branch,
                method: request.method.clone(),
            }),
            None => {
                tracing::warn!(method = %request.method, "client request without a Via branch: responses cannot match");
                IndexKey::None
            }
        };
        let message = Message::Request(request);
        self.transmits.push_back(Transmit {
            to,
            message: message.clone(),
        });
        let match_key = match &index {
            IndexKey::Client(k) => Some(k.clone()),
            _ => None,
        };
        let id = self.slab.insert(Txn {
            index,
            timers: [None, None],
            kind: Kind::Client(Client {
                invite,
                state: ClientState::Initial,
                request: message,
                to,
                interval: self.timers.t1,
                silent,
                cancel: CancelState::None,
                ack: None,
                owner,
            }),
        });
        if let Some(k) = match_key
            && let Some(old) = self.clients.insert(k, id)
        {
            tracing::warn!(
                "client branch reused: the older transaction no longer matches responses"
            );
            if let Some(txn) = self.slab.get_mut(old) {
                txn.index = IndexKey::None;
            }
        }
        let t1 = self.timers.t1;
        if let Some(txn) = self.slab.get_mut(id) {
            if !to.transport.reliable() {
                self.deadlines.arm(txn, id, Slot::Retransmit, now + t1);
            }
            self.deadlines.arm(txn, id, Slot::Lifetime, now + 64 * t1);
        }
        id
    }

    /// Cancel a pending INVITE client transaction (RFC 3261 §9.1). The CANCEL
    /// is sent once a provisional response has arrived (at once if one has),
    /// dropped if a final response arrives first. Responses to the CANCEL are
    /// absorbed. If the INVITE still has no final response 64*T1 after the
    /// CANCEL went out, the INVITE transaction ends with [`Event::Timeout`].
    pub fn cancel(&mut self, key: ClientKey, now: Instant) {
        let Some(Txn {
            kind: Kind::Client(client),
            ..
        }) = self.slab.get_mut(key.0)
        else {
            return;
        };
        if !client.invite || client.cancel != CancelState::None {
            return;
        }
        match client.state {
            ClientState::Initial => client.cancel = CancelState::Pending,
            ClientState::Proceeding => self.send_cancel(key.0, now),
            ClientState::Completed => {}
        }
    }

    /// Builds and sends the CANCEL for INVITE transaction `id` (in Proceeding).
    fn send_cancel(&mut self, id: u64, now: Instant) {
        let Some(txn) = self.slab.get_mut(id) else {
            return;
        };
        let Kind::Client(client) = &mut txn.kind else {
            return;
        };
        client.cancel = CancelState::Sent;
        let to = client.to;
        let cancel = match &client.request {
            Message::Request(invite) => build_in_transaction(invite, Method::CANCEL, None),
            Message::Response(_) => None,
        };
        let limit = now + 64 * self.timers.t1;
        self.deadlines.arm(txn, id, Slot::Lifetime, limit);
        if let Some(cancel) = cancel {
            self.start_client(cancel, to, now, true, Owner::default());
        }
    }

    /// The transport could not deliver the request of a client transaction:
    /// it ends with [`Event::Timeout`] (RFC 3261 §17.1.4).
    pub fn transport_error(&mut self, key: ClientKey, _now: Instant) {
        let Some(Txn {
            kind: Kind::Client(client),
            ..
        }) = self.slab.get(key.0)
        else {
            return;
        };
        if client.state != ClientState::Completed && !client.silent {
            let owner = client.owner;
            self.events.push_back(Event::Timeout { key, owner });
        }
        self.terminate(key.0);
    }

    /// Nothing more can reach `peer` (its connection closed, or a send to it
    /// failed): every client transaction still waiting for its answer from
    /// that peer ends with [`Event::Timeout`] (RFC 3261 §17.1.4). Over UDP
    /// the failure is a local one (no route, a refused send), so the same
    /// holds. A rare event: the transactions are scanned.
    pub fn peer_failed(&mut self, peer: Peer, now: Instant) {
        let failed: Vec<u64> = self
            .slab
            .entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| match &entry.txn {
                Some(Txn {
                    kind: Kind::Client(client),
                    ..
                }) if client.to == peer && client.state != ClientState::Completed => {
                    Some((u64::from(entry.generation) << 32) | index as u64)
                }
                _ => None,
            })
            .collect();
        for id in failed {
            self.transport_error(ClientKey(id), now);
        }
    }

    /// A [`Transmit`] taken from [`Transactions::poll_transmit`] could not be
    /// sent (connection refused or lost, no route). If it carried the request
    /// of a client transaction, that transaction ends with
    /// [`Event::Timeout`] (RFC 3261 §17.1.4); found by its top Via branch and
    /// method, no scan. Other failed messages (responses, ACKs) are left to
    /// the timers.
    pub fn transmit_failed(&mut self, transmit: &Transmit, now: Instant) {
        let Message::Request(request) = &transmit.message else {
            return;
        };
        let Some(branch) = top_via(&request.headers).and_then(|v| branch_of(&v)) else {
            return;
        };
        let key = ClientMatch {
            branch,
            method: request.method.clone(),
        };
        if let Some(&id) = self.clients.get(&key)
            && let Some(Txn {
                kind: Kind::Client(client),
                ..
            }) = self.slab.get(id)
            && client.to == transmit.to
        {
            self.transport_error(ClientKey(id), now);
        }
    }

    fn receive_response(&mut self, response: Response, from: Peer, now: Instant) {
        let key = top_via(&response.headers)
            .and_then(|v| branch_of(&v))
            .zip(response.headers.get_named::<CSeq>().ok())
            .map(|(branch, cseq)| ClientMatch {
                branch,
                method: cseq.method,
            });
        let id = key.and_then(|k| self.clients.get(&k).copied());
        let Some(id) = id else {
            self.events
                .push_back(Event::StrayResponse { response, from });
            return;
        };
        let timers = self.timers;
        let Some(txn) = self.slab.get_mut(id) else {
            return;
        };
        let Kind::Client(client) = &mut txn.kind else {
            return;
        };
        let status = response.status;
        let reliable = client.to.transport.reliable();
        let key = ClientKey(id);
        let owner = client.owner;
        if client.invite {
            match client.state {
                ClientState::Initial | ClientState::Proceeding => {
                    if status < 200 {
                        let first = client.state == ClientState::Initial;
                        client.state = ClientState::Proceeding;
                        let send_cancel = client.cancel == CancelState::Pending;
                        if first {
                            self.deadlines.disarm(txn, Slot::Retransmit);
                            self.deadlines.disarm(txn, Slot::Lifetime);
                        }
                        self.events.push_back(Event::Response {
                            key,
                            owner,
                            response,
                        });
                        if send_cancel {
                            self.send_cancel(id, now);
                        }
                    } else if status < 300 {
                        self.events.push_back(Event::Response {
                            key,
                            owner,
                            response,
                        });
                        self.terminate(id);
                    } else {
                        let ack = match &client.request {
                            Message::Request(invite) => {
                                build_in_transaction(invite, Method::ACK, Some(&response))
                            }
                            Message::Response(_) => None,
                        }
                        .map(Message::Request);
                        if let Some(ack) = &ack {
                            self.transmits.push_back(Transmit {
                                to: client.to,
                                message: ack.clone(),
                            });
                        }
                        client.ack = ack;
                        client.state = ClientState::Completed;
                        client.cancel = match client.cancel {
                            CancelState::Pending => CancelState::None,
                            other => other,
                        };
                        self.events.push_back(Event::Response {
                            key,
                            owner,
                            response,
                        });
                        self.deadlines.disarm(txn, Slot::Retransmit);
                        if reliable {
                            self.terminate(id);
                        } else {
                            self.deadlines.arm(txn, id, Slot::Lifetime, now + TIMER_D);
                        }
                    }
                }
                ClientState::Completed => {
                    if status >= 300
                        && let Some(ack) = &client.ack
                    {
                        self.transmits.push_back(Transmit {
                            to: client.to,
                            message: ack.clone(),
                        });
                    }
                }
            }
        } else {
            match client.state {
                ClientState::Initial | ClientState::Proceeding => {
                    let silent = client.silent;
                    if status < 200 {
                        client.state = ClientState::Proceeding;
                    } else {
                        client.state = ClientState::Completed;
                        self.deadlines.disarm(txn, Slot::Retransmit);
                        if reliable {
                            self.terminate(id);
                        } else {
                            self.deadlines.arm(txn, id, Slot::Lifetime, now + timers.t4);
                        }
                    }
                    if !silent {
                        self.events.push_back(Event::Response {
                            key,
                            owner,
                            response,
                        });
                    }
                }
                ClientState::Completed => {}
            }
        }
    }

    // -----------------------------------------------------------------------
    // Server side
    // -----------------------------------------------------------------------

    fn receive_request(&mut self, request: Request, from: Peer, now: Instant) {
        let Some(via) = top_via(&request.headers) else {
            tracing::debug!(method = %request.method, "request without a Via: dropped");
            return;
        };
        if !request.headers.contains(&Name::CSEQ) {
            tracing::debug!(method = %request.method, "request without a CSeq: dropped");
            return;
        }
        let branch = match via.params.get_val("branch") {
            Some(b) if b.starts_with(MAGIC_COOKIE) => b.clone(),
            other => match rfc2543_branch(&request, other) {
                Some(b) => b,
                None => {
                    tracing::debug!(method = %request.method, "request without Call-ID or CSeq: dropped");
                    return;
                }
            },
        };
        let method = if request.method == Method::ACK {
            Method::INVITE
        } else {
            request.method.clone()
        };
        let key = ServerMatch {
            branch,
            sent_by: normalize(via.sent_by),
            method,
        };
        if let Some(&id) = self.servers.get(&key) {
            self.server_retransmission(id, request.method == Method::ACK, now);
            return;
        }
        if request.method == Method::ACK {
            self.events.push_back(Event::Ack { request, from });
            return;
        }
        if request.method == Method::CANCEL {
            self.receive_cancel(key, request, from, now);
            return;
        }
        let invite = request.method == Method::INVITE;
        let trying = invite.then(|| Message::Response(request.response(100)));
        let id = self.slab.insert(Txn {
            index: IndexKey::Server(key.clone()),
            timers: [None, None],
            kind: Kind::Server(Server {
                invite,
                state: if invite {
                    ServerState::Proceeding
                } else {
                    ServerState::Trying
                },
                from,
                last: trying.clone(),
                interval: self.timers.t1,
            }),
        });
        self.servers.insert(key, id);
        if let Some(trying) = trying {
            self.transmits.push_back(Transmit {
                to: from,
                message: trying,
            });
        }
        self.events.push_back(Event::Request {
            key: ServerKey(id),
            request,
            from,
        });
    }

    /// A request (or ACK) matching server transaction `id`.
    fn server_retransmission(&mut self, id: u64, ack: bool, now: Instant) {
        let t4 = self.timers.t4;
        let Some(txn) = self.slab.get_mut(id) else {
            return;
        };
        let Kind::Server(server) = &mut txn.kind else {
            return;
        };
        if ack {
            if server.invite && server.state == ServerState::Completed {
                server.state = ServerState::Confirmed;
                let reliable = server.from.transport.reliable();
                self.deadlines.disarm(txn, Slot::Retransmit);
                if reliable {
                    self.terminate(id);
                } else {
                    self.deadlines.arm(txn, id, Slot::Lifetime, now + t4);
                }
            }
            return;
        }
        match server.state {
            ServerState::Proceeding | ServerState::Completed => {
                if let Some(last) = &server.last {
                    self.transmits.push_back(Transmit {
                        to: server.from,
                        message: last.clone(),
                    });
                }
            }
            ServerState::Trying | ServerState::Confirmed => {}
        }
    }

    /// A CANCEL that is not a retransmission: answered here, 200 if it matches
    /// an INVITE server transaction, 481 if not.
    fn receive_cancel(&mut self, key: ServerMatch, request: Request, from: Peer, now: Instant) {
        let invite_key = ServerMatch {
            method: Method::INVITE,
            ..key.clone()
        };
        let invite =
            self.servers
                .get(&invite_key)
                .copied()
                .and_then(|id| match &self.slab.get(id)?.kind {
                    Kind::Server(s) => Some((id, s.state == ServerState::Proceeding)),
                    Kind::Client(_) => None,
                });
        let mut response = request.response(if invite.is_some() { 200 } else { 481 });
        add_to_tag(&mut response);
        let id = self.slab.insert(Txn {
            index: IndexKey::Server(key.clone()),
            timers: [None, None],
            kind: Kind::Server(Server {
                invite: false,
                state: ServerState::Trying,
                from,
                last: None,
                interval: self.timers.t1,
            }),
        });
        self.servers.insert(key, id);
        self.respond(ServerKey(id), response, now);
        if let Some((invite, true)) = invite {
            self.events.push_back(Event::Cancel {
                invite: ServerKey(invite),
                request,
                from,
            });
        }
    }

    /// Send a response on a server transaction (provisional or final).
    /// Responses go to the peer the request came from (RFC 3581: source
    /// address and port, same transport / connection). A response the state
    /// does not allow (a second final, a response after termination) is
    /// dropped.
    pub fn respond(&mut self, key: ServerKey, response: Response, now: Instant) {
        let id = key.0;
        let timers = self.timers;
        let Some(txn) = self.slab.get_mut(id) else {
            tracing::debug!(
                status = response.status,
                "response for a finished server transaction: dropped"
            );
            return;
        };
        let Kind::Server(server) = &mut txn.kind else {
            return;
        };
        let status = response.status;
        let open = match server.state {
            ServerState::Trying | ServerState::Proceeding => true,
            ServerState::Completed | ServerState::Confirmed => false,
        };
        if !open {
            tracing::debug!(status, "response after the final one: dropped");
            return;
        }
        let to = server.from;
        let reliable = to.transport.reliable();
        let message = Message::Response(response);
        if status < 200 {
            server.state = ServerState::Proceeding;
            server.last = Some(message.clone());
            self.transmits.push_back(Transmit { to, message });
        } else if server.invite && status < 300 {
            self.transmits.push_back(Transmit { to, message });
            self.terminate(id);
        } else if server.invite {
            server.state = ServerState::Completed;
            server.last = Some(message.clone());
            server.interval = timers.t1;
            self.transmits.push_back(Transmit { to, message });
            if !reliable {
                self.deadlines
                    .arm(txn, id, Slot::Retransmit, now + timers.t1);
            }
            self.deadlines
                .arm(txn, id, Slot::Lifetime, now + 64 * timers.t1);
        } else {
            server.state = ServerState::Completed;
            server.last = Some(message.clone());
            self.transmits.push_back(Transmit { to, message });
            if reliable {
                self.terminate(id);
            } else {
                self.deadlines
                    .arm(txn, id, Slot::Lifetime, now + 64 * timers.t1);
            }
        }
    }

    // -----------------------------------------------------------------------
    // Timers
    // -----------------------------------------------------------------------

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.deadlines.map.first_entry() {
            let (at, _) = *entry.key();
            if at > now {
                break;
            }
            let ((at, _), (id, slot)) = entry.remove_entry();
            if let Some(txn) = self.slab.get_mut(id) {
                txn.timers[slot as usize] = None;
                self.fire(id, slot, at, now);
            }
        }
    }

    /// Timer `slot` of transaction `id`, due at `at`, fired at `now`.
    fn fire(&mut self, id: u64, slot: Slot, at: Instant, now: Instant) {
        let timers = self.timers;
        let Some(txn) = self.slab.get_mut(id) else {
            return;
        };
        // Keep the schedule exact when polled on time; never schedule in the past.
        let next = |interval: Duration| {
            let t = at + interval;
            if t > now { t } else { now + interval }
        };
        match (&mut txn.kind, slot) {
            (Kind::Client(client), Slot::Retransmit) => {
                let interval = match (client.invite, client.state) {
                    (true, ClientState::Initial) => client.interval * 2,
                    (false, ClientState::Initial) => (client.interval * 2).min(timers.t2),
                    (false, ClientState::Proceeding) => timers.t2,
                    _ => return,
                };
                client.interval = interval;
                self.transmits.push_back(Transmit {
                    to: client.to,
                    message: client.request.clone(),
                });
                self.deadlines
                    .arm(txn, id, Slot::Retransmit, next(interval));
            }
            (Kind::Client(client), Slot::Lifetime) => {
                // Timer B / F, or the 64*T1 limit after a CANCEL: a timeout.
                // Timer D / K: the end of the Completed state.
                if client.state != ClientState::Completed && !client.silent {
                    let (key, owner) = (ClientKey(id), client.owner);
                    self.events.push_back(Event::Timeout { key, owner });
                }
                self.terminate(id);
            }
            (Kind::Server(server), Slot::Retransmit) => {
                if server.state != ServerState::Completed {
                    return;
                }
                if let Some(last) = &server.last {
                    self.transmits.push_back(Transmit {
                        to: server.from,
                        message: last.clone(),
                    });
                }
                server.interval = (server.interval * 2).min(timers.t2);
                let interval = server.interval;
                self.deadlines
                    .arm(txn, id, Slot::Retransmit, next(interval));
            }
            (Kind::Server(_), Slot::Lifetime) => {
                // Timer H (no ACK came), I or J.
                self.terminate(id);
            }
        }
    }

    /// Removes transaction `id`, its index entry and its timers.
    fn terminate(&mut self, id: u64) {
        let Some(mut txn) = self.slab.remove(id) else {
            return;
        };
        self.deadlines.disarm(&mut txn, Slot::Retransmit);
        self.deadlines.disarm(&mut txn, Slot::Lifetime);
        match txn.index {
            IndexKey::Client(k) => {
                if self.clients.get(&k) == Some(&id) {
                    self.clients.remove(&k);
                }
            }
            IndexKey::Server(k) => {
                if self.servers.get(&k) == Some(&id) {
                    self.servers.remove(&k);
                }
            }
            IndexKey::None => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Header helpers
// ---------------------------------------------------------------------------

/// The top Via, parsing only the first Via value.
fn top_via(headers: &Headers) -> Option<Via> {
    headers.get_named::<Via>().ok()
}

fn branch_of(via: &Via) -> Option<BytesStr> {
    via.params.get_val("branch").cloned()
}

/// Host names compare case-insensitively (RFC 3261 §19.1.4).
fn normalize(mut sent_by: HostPort) -> HostPort {
    if let Host::Name(name) = &sent_by.host
        && name.bytes().any(|b| b.is_ascii_uppercase())
    {
        sent_by.host = Host::Name(name.to_ascii_lowercase().into());
    }
    sent_by
}

/// The matching key for a request whose branch lacks the magic cookie: a
/// simplified RFC 2543 rule (§17.2.3 of RFC 3261). Call-ID, From tag, CSeq
/// number and the top Via branch (if any) identify the transaction; the
/// sent-by and method are compared as usual. An INVITE, its retransmissions,
/// its CANCEL and the ACK for its non-2xx final response share these values,
/// so ACK and CANCEL match as they do with RFC 3261 branches. The To tag and
/// Request-URI are not compared. `None` when Call-ID or CSeq is missing.
fn rfc2543_branch(request: &Request, branch: Option<&BytesStr>) -> Option<BytesStr> {
    let call_id = request.headers.get_named::<CallID>().ok()?;
    let cseq = request.headers.get_named::<CSeq>().ok()?;
    let from_tag = request
        .headers
        .get::<FromTo>(Name::FROM)
        .ok()
        .and_then(|f| f.tag);
    Some(
        format!(
            "2543;{};{};{};{}",
            call_id.0,
            from_tag.as_deref().unwrap_or(""),
            cseq.cseq,
            branch.map(|b| b.as_str()).unwrap_or("")
        )
        .into(),
    )
}

/// An ACK (RFC 3261 §17.1.1.3, `to_from` the final response) or a CANCEL
/// (§9.1) for `invite`: same Request-URI, Call-ID, From, CSeq number, top Via
/// only, Route set and Max-Forwards; To from the response for ACK, from the
/// INVITE for CANCEL. `None` if the INVITE lacks CSeq.
fn build_in_transaction(
    invite: &Request,
    method: Method,
    to_from: Option<&Response>,
) -> Option<Request> {
    let cseq = invite.headers.get_named::<CSeq>().ok()?;
    let via = top_via(&invite.headers)?;
    let mut req = Request::new(method.clone(), invite.uri.clone());
    let h = &mut req.headers;
    h.insert_named(&via);
    for route in invite.headers.get_raw(&Name::ROUTE) {
        h.insert(Name::ROUTE, route.clone());
    }
    match invite.headers.get_raw(&Name::MAX_FORWARDS).next() {
        Some(mf) => h.insert(Name::MAX_FORWARDS, mf.clone()),
        None => h.insert(Name::MAX_FORWARDS, "70"),
    }
    for name in [Name::FROM, Name::TO, Name::CALL_ID] {
        let source = match (&name, to_from) {
            (n, Some(resp)) if *n == Name::TO => &resp.headers,
            _ => &invite.headers,
        };
        if let Some(value) = source.get_raw(&name).next() {
            h.insert(name, value.clone());
        }
    }
    h.insert_named(&CSeq::new(cseq.cseq, method));
    Some(req)
}

/// Adds a To tag to a response the layer makes itself, if it has none.
fn add_to_tag(response: &mut Response) {
    let Some(to) = response.headers.get_raw(&Name::TO).next().cloned() else {
        return;
    };
    let tagged = match response.headers.get::<FromTo>(Name::TO) {
        Ok(parsed) => parsed.tag.is_some(),
        Err(_) => return,
    };
    if !tagged {
        response.headers.remove(&Name::TO);
        response
            .headers
            .insert(Name::TO, format!("{to};tag={}", local_tag(&response.headers)));
    }
}
