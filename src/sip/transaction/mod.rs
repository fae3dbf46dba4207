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
//! rule, see [`rfc2543_branch`](server::rfc2543_branch) and `docs/transactions.md`.
//!
//! Cost per message: one parse of the top Via value and one of CSeq, one hash
//! lookup, and O(log n) timer bookkeeping in a `BTreeMap`. Transactions live
//! in a generation-checked slab, so a key lookup is an index, not a hash.
//!
//! The layer is split by concern: this file holds the public types and the
//! internal transaction state; `store` the slab and the deadline map,
//! `client` the client transactions (§17.1), `server` the server
//! transactions (§17.2) and `timers` the firing of their timers.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytesstr::BytesStr;
use ezk_sip_types::Headers;
use ezk_sip_types::Method;
use ezk_sip_types::header::typed::Via;
use ezk_sip_types::host::HostPort;

use super::message::{Message, Request, Response};

mod client;
mod server;
mod store;
mod timers;

#[cfg(test)]
mod tests;

use store::{Deadlines, Slab};

/// The RFC 3261 branch prefix ("magic cookie", §8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

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
    /// The TU gave up on it ([`Transactions::give_up`]): it ends at the end
    /// of the grace, with no timeout; a late response is still passed up.
    given_up: bool,
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
        // The index maps keep the capacity of their busiest moment: give it
        // back once they are mostly empty (a rehash now and then, after
        // their length fell fourfold).
        if self.servers.capacity() > 4096 && self.servers.len() * 8 < self.servers.capacity() {
            self.servers.shrink_to(self.servers.len() * 2);
        }
        if self.clients.capacity() > 4096 && self.clients.len() * 8 < self.clients.capacity() {
            self.clients.shrink_to(self.clients.len() * 2);
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
