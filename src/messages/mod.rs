//! Offline instant messages (issue 15): a MESSAGE to a user of an overlay
//! domain who has no live binding is kept in the ring under her key
//! ([`record`]) and answered 202; when she next registers, at any node,
//! that node fetches her messages and sends them in arrival order as
//! MESSAGEs to her new contact, with the original From and Date, removing
//! each from the ring only after her 2xx. Sans-I/O like the other
//! components: the core feeds it ring answers and responses and does what
//! it decides (`core/offline.rs`).

pub mod date;
pub mod record;

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ezk_sip_types::header::typed::Via;
use ezk_sip_types::uri::SipUri;
use ezk_sip_types::{Method, Name};

use crate::auth::CREDENTIAL_KIND;
use crate::overlay::store::KIND as BINDING_KIND;
use crate::registrar::binding::{Aor, Binding};
use crate::ring::{Item, NodeId, OpId};
use crate::sip::message::{HeaderAccess, Request, RequestUri, push_via};
use crate::sip::target::{NextHop, next_hop};
use crate::sip::transaction::{ClientKey, Peer, ServerKey};
pub use record::{MESSAGE_KIND, SEEN_KIND, SEEN_NAME, StoredMessage};

/// Bounds and lifetimes of stored messages (`[messages]` in the config).
#[derive(Clone, Debug)]
pub struct MessagesConfig {
    /// Messages kept per user at most (`max_per_user`).
    pub max_count: usize,
    /// Bytes of stored messages per user at most (`max_bytes_per_user`).
    pub max_bytes: usize,
    /// How long a stored message is kept (`keep_s`).
    pub keep_for: Duration,
    /// How long "she has registered" is remembered, so a MESSAGE to her is
    /// kept rather than answered 404 (`known_s`).
    pub known_for: Duration,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        MessagesConfig {
            max_count: 20,
            max_bytes: 64 * 1024,
            keep_for: Duration::from_secs(7 * 24 * 3600),
            known_for: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// What to do with a MESSAGE for a user without a live binding, once the
/// items under her key are known.
#[derive(Debug)]
pub enum Decision {
    /// Nobody by that name ever registered or has credentials: 404.
    Unknown,
    /// Over the bound: refuse with this status and reason phrase.
    Full(u16, String),
    /// Keep this item, then answer 202.
    Store(Item),
}

/// One user's messages on their way to her new contact.
struct Delivery {
    aor: Aor,
    key: NodeId,
    /// The item name of the message in flight.
    current: String,
    rest: VecDeque<(String, StoredMessage)>,
    contact: String,
    peer: Peer,
}

/// The state of offline messages on this node.
#[derive(Default)]
pub struct OfflineMessages {
    pub config: MessagesConfig,
    /// Wall-clock time (ms since the epoch) at an instant, from the driver.
    wall: Option<(u64, Instant)>,
    serial: u64,
    /// MESSAGEs waiting for the items under their user's key.
    leaving: HashMap<OpId, (ServerKey, Request, Aor)>,
    /// MESSAGEs whose store is under way: 202 when it is done.
    storing: HashMap<OpId, (ServerKey, Request, Aor)>,
    /// Registered users whose messages are being fetched, with the contact.
    collecting: HashMap<OpId, (Aor, Binding)>,
    /// A message in flight to a user's contact.
    sending: HashMap<ClientKey, Delivery>,
    /// Users with a delivery under way (one at a time each).
    delivering: HashSet<Aor>,
    /// When this node last stored a user's "seen" mark, by a keyed hash of
    /// her AOR (not the AOR itself: this is kept for every user registered
    /// here; two users sharing a hash only means one mark stored late).
    seen: HashMap<u64, Instant>,
    /// The key of that hash, this node's own.
    seen_hasher: RandomState,
}

impl OfflineMessages {
    pub fn new(config: MessagesConfig) -> OfflineMessages {
        OfflineMessages {
            config,
            ..OfflineMessages::default()
        }
    }

    /// The wall-clock time at `now` is `wall_ms` (for Date headers and
    /// the order of stored messages).
    pub fn set_wall_clock(&mut self, wall_ms: u64, now: Instant) {
        self.wall = Some((wall_ms, now));
    }

    /// The wall-clock time at `now`, in ms since the epoch (0 until the
    /// driver told it).
    pub fn wall_ms(&self, now: Instant) -> u64 {
        let (at, then) = self.wall.unwrap_or((0, now));
        let ms = u64::try_from(now.saturating_duration_since(then).as_millis()).unwrap_or(0);
        at.saturating_add(ms)
    }

    /// A MESSAGE to leave is waiting for the fetch `op`.
    pub fn leaving(&mut self, op: OpId, key: ServerKey, request: Request, aor: Aor) {
        self.leaving.insert(op, (key, request, aor));
    }

    pub fn take_leaving(&mut self, op: OpId) -> Option<(ServerKey, Request, Aor)> {
        self.leaving.remove(&op)
    }

    pub fn storing(&mut self, op: OpId, key: ServerKey, request: Request, aor: Aor) {
        self.storing.insert(op, (key, request, aor));
    }

    pub fn take_storing(&mut self, op: OpId) -> Option<(ServerKey, Request, Aor)> {
        self.storing.remove(&op)
    }

    /// Whether `op` is one of this component's fetches.
    pub fn is_ours(&self, op: OpId) -> bool {
        self.leaving.contains_key(&op) || self.collecting.contains_key(&op)
    }

    /// Decides on a MESSAGE given the items under its user's key.
    pub fn decide(
        &mut self,
        request: &Request,
        aor: &Aor,
        items: &[Item],
        now: Instant,
    ) -> Decision {
        let known = items.iter().any(|i| {
            i.expires > now
                && (i.kind == SEEN_KIND || i.kind == BINDING_KIND || i.kind == CREDENTIAL_KIND)
        });
        if !known {
            return Decision::Unknown;
        }
        let stored: Vec<&Item> = items
            .iter()
            .filter(|i| i.kind == MESSAGE_KIND && i.expires > now)
            .collect();
        let bytes: usize = stored.iter().map(|i| i.value.len()).sum();
        if stored.len() >= self.config.max_count {
            let reason = format!(
                "Busy Here (mailbox full: {} messages stored)",
                self.config.max_count
            );
            return Decision::Full(486, reason);
        }
        let wall_ms = self.wall_ms(now);
        let message = StoredMessage {
            from: request
                .raw(&Name::FROM)
                .map(|v| v.to_string())
                .unwrap_or_default(),
            date: request
                .raw(&Name::DATE)
                .map(|v| v.to_string())
                .unwrap_or_else(|| date::http_date(wall_ms / 1000)),
            content_type: request
                .raw(&Name::CONTENT_TYPE)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "text/plain".to_string()),
            body: request.body.to_vec(),
        };
        self.serial += 1;
        let item = message.to_item(
            NodeId::of_key(aor.as_str()),
            wall_ms,
            &format!("{:08}", self.serial),
            now + self.config.keep_for,
        );
        if bytes + item.value.len() > self.config.max_bytes {
            let reason = format!(
                "Insufficient Storage (mailbox full: {} bytes at most)",
                self.config.max_bytes
            );
            return Decision::Full(507, reason);
        }
        Decision::Store(item)
    }

    /// The "has registered" mark to store after a REGISTER of `aor`, at
    /// most once an hour per user from this node.
    pub fn seen_mark(&mut self, aor: &Aor, now: Instant) -> Option<Item> {
        let hash = self.seen_hasher.hash_one(aor.as_str());
        if self
            .seen
            .get(&hash)
            .is_some_and(|at| now.saturating_duration_since(*at) < Duration::from_secs(3600))
        {
            return None;
        }
        if self.seen.len() > 100_000 {
            self.seen.clear();
        }
        self.seen.insert(hash, now);
        Some(Item {
            key: NodeId::of_key(aor.as_str()),
            name: SEEN_NAME.to_string(),
            kind: SEEN_KIND.to_string(),
            value: Vec::new(),
            version: self.wall_ms(now),
            expires: now + self.config.known_for,
            writer: NodeId::default(),
            signature: Vec::new(),
            proof: None,
        })
    }

    /// Whether a delivery to `aor` may start (none is under way).
    pub fn may_collect(&self, aor: &Aor) -> bool {
        !self.delivering.contains(aor)
    }

    pub fn collecting(&mut self, op: OpId, aor: Aor, binding: Binding) {
        self.delivering.insert(aor.clone());
        self.collecting.insert(op, (aor, binding));
    }

    /// The user whose messages the fetch `op` collects.
    pub fn collecting_for(&self, op: OpId) -> Option<&Aor> {
        self.collecting.get(&op).map(|(aor, _)| aor)
    }

    /// The user's messages fetched: the first MESSAGE to send and where,
    /// or `None` when there is nothing (or nowhere) to deliver. `notice`
    /// (voicemail's "You have N new voicemail(s)") goes first and is kept
    /// nowhere: no item is removed after its 2xx.
    pub fn collected(
        &mut self,
        op: OpId,
        items: &[Item],
        notice: Option<StoredMessage>,
        local: std::net::SocketAddr,
        call_id: String,
        branch: String,
    ) -> Option<(Request, Peer, Pending)> {
        let (aor, binding) = self.collecting.remove(&op)?;
        let mut messages: Vec<(String, StoredMessage)> = items
            .iter()
            .filter_map(|i| StoredMessage::from_item(i).map(|m| (i.name.clone(), m)))
            .collect();
        messages.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(notice) = notice {
            messages.insert(0, (String::new(), notice));
        }
        // Over a connection, or from behind NAT, the MESSAGE goes back the
        // way the REGISTER came; over UDP to the contact itself.
        let connected = binding.source.filter(|p| {
            binding.behind_nat || p.transport != crate::sip::transaction::TransportKind::Udp
        });
        let peer = connected.or_else(|| {
            let uri: SipUri = binding.contact.parse().ok()?;
            match next_hop(&uri) {
                NextHop::Peer(peer) => Some(peer),
                NextHop::Resolve(_) => None,
            }
        });
        let (Some(peer), false) = (peer, messages.is_empty()) else {
            self.delivering.remove(&aor);
            return None;
        };
        let mut rest: VecDeque<_> = messages.into();
        let (current, first) = rest.pop_front()?;
        let request =
            message_request(&binding.contact, &aor, &first, local, peer, call_id, branch)?;
        let pending = Pending(Delivery {
            key: NodeId::of_key(aor.as_str()),
            aor,
            current,
            rest,
            contact: binding.contact,
            peer,
        });
        Some((request, peer, pending))
    }

    /// The MESSAGE `key` was sent for `pending`.
    pub fn sent(&mut self, key: ClientKey, pending: Pending) {
        self.sending.insert(key, pending.0);
    }

    /// The answer to a delivered MESSAGE (`None`: no answer). On a 2xx:
    /// the item to remove, and the next MESSAGE to send, if any.
    pub fn answered(
        &mut self,
        key: ClientKey,
        status: Option<u16>,
        local: std::net::SocketAddr,
        call_id: String,
        branch: String,
    ) -> Option<Answered> {
        let mut delivery = self.sending.remove(&key)?;
        if !status.is_some_and(|s| (200..300).contains(&s)) {
            // Kept in the ring for her next REGISTER.
            self.delivering.remove(&delivery.aor);
            return Some(Answered {
                aor: delivery.aor,
                remove: None,
                next: None,
            });
        }
        let current = std::mem::take(&mut delivery.current);
        let remove = (!current.is_empty()).then_some((delivery.key, current));
        let Some((name, message)) = delivery.rest.pop_front() else {
            self.delivering.remove(&delivery.aor);
            let aor = delivery.aor;
            return Some(Answered {
                aor,
                remove,
                next: None,
            });
        };
        let request = message_request(
            &delivery.contact,
            &delivery.aor,
            &message,
            local,
            delivery.peer,
            call_id,
            branch,
        );
        let Some(request) = request else {
            self.delivering.remove(&delivery.aor);
            let aor = delivery.aor;
            return Some(Answered {
                aor,
                remove,
                next: None,
            });
        };
        delivery.current = name;
        let peer = delivery.peer;
        Some(Answered {
            aor: delivery.aor.clone(),
            remove,
            next: Some((request, peer, Pending(delivery))),
        })
    }

    /// Whether `key` is a MESSAGE this component sent.
    pub fn is_sending(&self, key: &ClientKey) -> bool {
        self.sending.contains_key(key)
    }
}

/// A delivery waiting for its MESSAGE's client transaction.
pub struct Pending(Delivery);

/// What a delivered MESSAGE's answer leads to.
pub struct Answered {
    /// Whose message it was.
    pub aor: Aor,
    /// The stored message to remove from the ring.
    pub remove: Option<(NodeId, String)>,
    /// The next MESSAGE to send.
    pub next: Option<(Request, Peer, Pending)>,
}

/// The MESSAGE that delivers a stored message to `contact`, Via included.
#[allow(clippy::too_many_arguments)]
fn message_request(
    contact: &str,
    aor: &Aor,
    message: &StoredMessage,
    local: std::net::SocketAddr,
    peer: Peer,
    call_id: String,
    branch: String,
) -> Option<Request> {
    let uri: SipUri = contact.parse().ok()?;
    let mut request = Request::new(Method::MESSAGE, RequestUri::Sip(uri));
    let via = Via::new(crate::proxy::transport_name(peer.transport), local, branch);
    push_via(&mut request.headers, &via);
    let headers = &mut request.headers;
    headers.insert(Name::MAX_FORWARDS, "70");
    headers.insert(Name::FROM, message.from.as_str());
    headers.insert(Name::TO, format!("<sip:{aor}>"));
    headers.insert(Name::CALL_ID, call_id);
    headers.insert(Name::CSEQ, "1 MESSAGE");
    headers.insert(Name::DATE, message.date.as_str());
    headers.insert(Name::CONTENT_TYPE, message.content_type.as_str());
    request.body = Bytes::from(message.body.clone());
    Some(request)
}

#[cfg(test)]
mod tests;
