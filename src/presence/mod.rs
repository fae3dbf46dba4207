//! Presence (RFC 3856, PIDF bodies RFC 3863, PUBLISH RFC 3903) and
//! message-summary (RFC 3842) as the notifier of SUBSCRIBE/NOTIFY (RFC
//! 6665), sans-I/O like the other components: the core hands it
//! SUBSCRIBE and PUBLISH requests for users of the overlay domains, the
//! answers of the ring operations it asked for ([`RingOp`]) and of its
//! NOTIFYs, and time; it answers through the [`Outbox`] and queues ring
//! operations for the core to start (`core/presence.rs`).
//!
//! The node that accepts a subscription keeps its dialog and sends every
//! NOTIFY. A presentity's state is read from the items under her key (one
//! fetch: bindings, publication, stored messages, [`state`]) when a
//! subscription starts, when this node sees her change (a REGISTER, a
//! PUBLISH, a stored or delivered message) and every [`POLL_EVERY`]
//! while someone here watches her, so changes made through other nodes
//! arrive too. Each subscription is also kept as a ring item under this
//! node's own key ([`subscription`]): the node holds it itself (a node is
//! always the successor of its own id), so with `--data` it is on disk and
//! read back on start; when the node crashes, the successor that becomes
//! primary for its key takes its subscriptions over ([`Presence::adopt`]).
//! `notifier.rs`: when and what to NOTIFY; `publish.rs`: PUBLISH.

pub mod buddies;
mod notifier;
pub mod pidf;
mod publish;
pub mod state;
pub mod subscription;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ezk_sip_types::Name;
use tracing::debug;

use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::registrar::binding::Aor;
use crate::ring::{Item, NodeId, OpId};
use crate::sip::message::{HeaderAccess, Request, Response, raw_tag};
use crate::sip::transaction::{ClientKey, Peer, ServerKey, TransportKind};
use publish::Publishing;
use state::Snapshot;
use subscription::{Subscription, contact_uri, dialog_of, split_commas, without_tag};

/// The event packages served (`Allow-Events`).
pub const ALLOW_EVENTS: &str = "presence, message-summary";
/// How often the state of a watched presentity is read again.
pub const POLL_EVERY: Duration = Duration::from_secs(5);
/// Subscriptions a node holds at most; beyond: 503.
pub const MAX_SUBSCRIPTIONS: usize = 10_000;
/// Bounds on what a subscription keeps of its SUBSCRIBE (else 400).
const MAX_FIELD: usize = 512;
const MAX_ROUTES: usize = 8;
/// Added to a restored subscription's CSeq: NOTIFYs sent after its item
/// was last written are not counted in it.
const CSEQ_GAP: u32 = 1000;

/// `[presence]` in the config.
#[derive(Clone, Debug)]
pub struct PresenceConfig {
    /// SUBSCRIBE and PUBLISH for our users are served here (else proxied).
    pub enabled: bool,
    /// A subscription or publication shorter than this gets 423.
    pub min_expires: u32,
    /// Longer ones are shortened to this.
    pub max_expires: u32,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            enabled: true,
            min_expires: 60,
            max_expires: 3600,
        }
    }
}

/// An event package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Package {
    Presence,
    MessageSummary,
}

impl Package {
    pub fn parse(name: &str) -> Option<Package> {
        match name.trim().to_ascii_lowercase().as_str() {
            "presence" => Some(Package::Presence),
            "message-summary" => Some(Package::MessageSummary),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Package::Presence => "presence",
            Package::MessageSummary => "message-summary",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Package::Presence => pidf::CONTENT_TYPE,
            Package::MessageSummary => "application/simple-message-summary",
        }
    }

    /// The body of a NOTIFY for `aor` in state `snapshot`.
    fn body(self, aor: &Aor, snapshot: &Snapshot) -> String {
        match self {
            Package::Presence => pidf::document(aor.as_str(), &snapshot.status),
            Package::MessageSummary => {
                state::message_summary(aor, snapshot.messages, snapshot.voice)
            }
        }
    }
}

/// The Event header of a request: its package and `id` parameter; `None`
/// for a missing header or a package not served (489).
pub fn read_event(request: &Request) -> Option<(Package, Option<String>)> {
    let value = request.raw(&Name::EVENT)?;
    let mut parts = value.split(';');
    let package = Package::parse(parts.next()?)?;
    let id = parts
        .filter_map(|p| p.split_once('='))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("id"))
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_graphic()));
    Some((package, id))
}

/// Why a SUBSCRIBE or PUBLISH is refused.
fn refuse(request: &Request, status: u16, reason: &str) -> Response {
    let mut response = request.final_response(status);
    if !reason.is_empty() {
        response.reason = reason.to_string();
    }
    response
}

/// A ring operation for the core to start on this component's behalf.
pub enum RingOp {
    /// Fetch the items under a key; the answer goes to [`Presence::on_fetched`].
    Fetch { key: NodeId, purpose: Purpose },
    /// Store an item; with a purpose, the outcome goes to [`Presence::on_stored`].
    Store {
        item: Item,
        purpose: Option<Purpose>,
    },
    /// Remove an item; with a purpose, the outcome goes to [`Presence::on_stored`].
    Remove {
        key: NodeId,
        name: String,
        purpose: Option<Purpose>,
    },
}

/// What a ring operation's answer is for.
pub enum Purpose {
    /// A watched presentity's state.
    Watch(Aor),
    /// A PUBLISH waiting for her current publication.
    Publish(Box<Publishing>),
    /// A PUBLISH whose publication is being stored or removed.
    Published(Box<Publishing>),
}

/// A subscription and where its NOTIFYs stand.
struct Entry {
    sub: Subscription,
    /// The body of the last NOTIFY sent.
    last_body: Option<String>,
    /// A NOTIFY is out and not answered yet.
    in_flight: bool,
    /// Something to tell once the NOTIFY out is answered.
    dirty: bool,
    /// Send a NOTIFY even if the body is the same (a refresh).
    force: bool,
    /// It ends: the next NOTIFY is the final one.
    ending: bool,
    final_sent: bool,
    /// Its ring item was written (removed when it ends).
    stored: bool,
}

/// A presentity watched from this node.
struct Watched {
    subs: BTreeSet<u64>,
    snapshot: Option<Snapshot>,
    next_poll: Instant,
    fetching: bool,
    /// Fetch again as soon as the fetch under way is done.
    again: bool,
}

/// The notifier's state on this node.
pub struct Presence {
    pub config: PresenceConfig,
    /// Our address: the Contact of our 200s and NOTIFYs, our Via.
    local: SocketAddr,
    /// Our SIP over TLS address, if any (the Contact for watchers over TLS).
    sips: Option<SocketAddr>,
    metrics: Metrics,
    /// This node's own key, under which its subscriptions are kept.
    node: Option<NodeId>,
    entries: HashMap<u64, Entry>,
    dialogs: HashMap<(String, String, String), u64>,
    watched: HashMap<Aor, Watched>,
    notifying: HashMap<ClientKey, u64>,
    ops: VecDeque<RingOp>,
    /// Ring operations started for us, and what each answer is for.
    started: HashMap<OpId, Purpose>,
    next_id: u64,
    wall: Option<(u64, Instant)>,
    next_adoption: Option<Instant>,
}

impl Presence {
    pub fn new(
        config: PresenceConfig,
        local: SocketAddr,
        sips: Option<SocketAddr>,
        metrics: Metrics,
    ) -> Presence {
        Presence {
            config,
            local,
            sips,
            metrics,
            node: None,
            entries: HashMap::new(),
            dialogs: HashMap::new(),
            watched: HashMap::new(),
            notifying: HashMap::new(),
            ops: VecDeque::new(),
            started: HashMap::new(),
            next_id: 1,
            wall: None,
            next_adoption: None,
        }
    }

    /// The wall-clock time at `now` (versions of the items written).
    pub fn set_wall_clock(&mut self, wall_ms: u64, now: Instant) {
        self.wall = Some((wall_ms, now));
    }

    fn wall_ms(&self, now: Instant) -> u64 {
        let (at, then) = self.wall.unwrap_or((0, now));
        let ms = u64::try_from(now.saturating_duration_since(then).as_millis()).unwrap_or(0);
        at.saturating_add(ms)
    }

    /// Our Contact for a watcher that reached us over `transport`.
    fn contact(&self, transport: TransportKind) -> String {
        match (transport, self.sips) {
            (TransportKind::Tls, Some(sips)) => format!("<sip:{sips};transport=tls>"),
            (TransportKind::Tcp, _) => format!("<sip:{};transport=tcp>", self.local),
            _ => format!("<sip:{}>", self.local),
        }
    }

    /// Subscriptions held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The next ring operation to start.
    pub fn poll_op(&mut self) -> Option<RingOp> {
        self.ops.pop_front()
    }

    /// The core started ring operation `op` for `purpose`.
    pub fn started(&mut self, op: OpId, purpose: Purpose) {
        self.started.insert(op, purpose);
    }

    /// What ring operation `op` was for, if it was ours.
    pub fn take(&mut self, op: OpId) -> Option<Purpose> {
        self.started.remove(&op)
    }

    /// Whether the subscriptions kept on disk were read back already.
    pub fn has_node(&self) -> bool {
        self.node.is_some()
    }

    /// This node's key is `node`; `items` are those it holds under it
    /// (read back from disk): its subscriptions are taken up again, and
    /// each watcher gets a NOTIFY with the state as it is now.
    pub fn restore(&mut self, node: NodeId, items: &[Item], now: Instant) {
        if self.node.is_some() {
            return;
        }
        self.node = Some(node);
        for item in items {
            if item.expires <= now {
                continue;
            }
            if let Some(sub) = Subscription::from_item(item, CSEQ_GAP) {
                debug!(presentity = %sub.presentity, call_id = %sub.call_id, "subscription restored");
                let id = self.insert(sub, false, now);
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.stored = true;
                }
            }
        }
    }

    /// Whether it is time to look for subscriptions whose notifier left
    /// the ring (every [`POLL_EVERY`]).
    pub fn adoption_due(&mut self, now: Instant) -> bool {
        if self.next_adoption.is_some_and(|at| now < at) {
            return false;
        }
        self.next_adoption = Some(now + POLL_EVERY);
        true
    }

    /// Takes over a subscription whose notifier left the ring: this node
    /// holds its `item` as primary. It is kept under our own key from now
    /// on (the old item removed), and its watcher gets a NOTIFY from us,
    /// whose Contact moves the dialog's remote target here.
    pub fn adopt(&mut self, item: &Item, now: Instant) {
        let Some(sub) = Subscription::from_item(item, CSEQ_GAP) else {
            return;
        };
        if self.dialogs.contains_key(&sub.dialog()) || self.entries.len() >= MAX_SUBSCRIPTIONS {
            return;
        }
        tracing::info!(presentity = %sub.presentity, call_id = %sub.call_id, "subscription taken over from a notifier that left the ring");
        self.ops.push_back(RingOp::Remove {
            key: item.key,
            name: item.name.clone(),
            purpose: None,
        });
        self.insert(sub, true, now);
    }

    /// Whether an in-dialog SUBSCRIBE belongs to one of our subscriptions.
    pub fn knows_dialog(&self, request: &Request) -> bool {
        dialog_of(request).is_some_and(|d| self.dialogs.contains_key(&d))
    }

    /// A new SUBSCRIBE for `presentity`, already authorized.
    pub fn subscribe(
        &mut self,
        key: ServerKey,
        request: &Request,
        from: Peer,
        presentity: Aor,
        out: &mut Outbox,
        now: Instant,
    ) {
        let response = match self.accept(request, from, presentity, out, now) {
            Ok(response) | Err(response) => response,
        };
        out.respond(key, response, now);
    }

    fn accept(
        &mut self,
        request: &Request,
        from: Peer,
        presentity: Aor,
        out: &mut Outbox,
        now: Instant,
    ) -> Result<Response, Response> {
        let (package, event_id) = read_event(request).ok_or_else(|| bad_event(request))?;
        let expires = self.read_expires(request)?;
        if self.entries.len() >= MAX_SUBSCRIPTIONS {
            return Err(refuse(
                request,
                503,
                "Service Unavailable (too many subscriptions)",
            ));
        }
        let bad = |why: &str| refuse(request, 400, &format!("Bad Request ({why})"));
        let call_id = request.raw(&Name::CALL_ID).map(|v| v.to_string());
        let from_raw = request.raw(&Name::FROM).map(|v| v.to_string());
        let to_raw = request.raw(&Name::TO).map(|v| v.to_string());
        let (Some(call_id), Some(from_raw), Some(to_raw)) = (call_id, from_raw, to_raw) else {
            return Err(bad("missing dialog headers"));
        };
        let remote_tag = raw_tag(&from_raw).ok_or_else(|| bad("From without a tag"))?;
        let contact = request
            .raw(&Name::CONTACT)
            .and_then(|c| contact_uri(c))
            .ok_or_else(|| bad("missing or bad Contact"))?;
        let route: Vec<String> = request
            .headers
            .get_raw(&Name::RECORD_ROUTE)
            .flat_map(|v| split_commas(v))
            .collect();
        let fields = [&call_id, &from_raw, &to_raw, &contact];
        if fields.iter().any(|f| f.len() > MAX_FIELD)
            || route.len() > MAX_ROUTES
            || route.iter().any(|r| r.len() > MAX_FIELD)
        {
            return Err(bad("dialog headers too long"));
        }
        let local_tag = out.random_hex();
        let sub = Subscription {
            package,
            event_id,
            presentity,
            call_id,
            local_tag,
            remote_tag,
            local_uri: without_tag(&to_raw),
            remote_uri: without_tag(&from_raw),
            contact,
            route,
            source: from,
            expires: now + Duration::from_secs(u64::from(expires)),
            cseq: 0,
        };
        let mut response = request.response(200);
        response.headers.remove(&Name::TO);
        response
            .headers
            .insert(Name::TO, format!("{to_raw};tag={}", sub.local_tag));
        response.headers.insert(Name::EXPIRES, expires.to_string());
        response
            .headers
            .insert(Name::CONTACT, self.contact(from.transport));
        response.headers.insert(Name::ALLOW_EVENTS, ALLOW_EVENTS);
        debug!(presentity = %sub.presentity, package = package.name(), expires, "subscription accepted");
        let id = self.insert(sub, expires > 0, now);
        if expires == 0 {
            // A one-off fetch of the state: one NOTIFY, terminated.
            if let Some(entry) = self.entries.get_mut(&id) {
                entry.ending = true;
            }
        }
        Ok(response)
    }

    /// Keeps `sub`, writes its item when `durable`, reads its presentity's state.
    fn insert(&mut self, sub: Subscription, durable: bool, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let aor = sub.presentity.clone();
        self.dialogs.insert(sub.dialog(), id);
        let mut entry = Entry {
            sub,
            last_body: None,
            in_flight: false,
            dirty: false,
            force: true,
            ending: false,
            final_sent: false,
            stored: false,
        };
        if durable && let Some(node) = self.node {
            let item = entry.sub.to_item(node, self.local, self.wall_ms(now));
            self.ops.push_back(RingOp::Store {
                item,
                purpose: None,
            });
            entry.stored = true;
        }
        self.entries.insert(id, entry);
        let watched = self.watched.entry(aor.clone()).or_insert_with(|| Watched {
            subs: BTreeSet::new(),
            snapshot: None,
            next_poll: now,
            fetching: false,
            again: false,
        });
        watched.subs.insert(id);
        self.metrics
            .presence_subscriptions
            .set(self.entries.len() as i64);
        self.changed(&aor, now);
        id
    }

    /// An in-dialog SUBSCRIBE: a refresh, or with `Expires: 0` the end.
    pub fn refresh(&mut self, key: ServerKey, request: &Request, out: &mut Outbox, now: Instant) {
        let Some(id) = dialog_of(request).and_then(|d| self.dialogs.get(&d).copied()) else {
            return out.respond(key, refuse(request, 481, ""), now);
        };
        if read_event(request).is_none() {
            return out.respond(key, bad_event(request), now);
        }
        let expires = match self.read_expires(request) {
            Ok(expires) => expires,
            Err(response) => return out.respond(key, response, now),
        };
        let mut response = request.response(200);
        response.headers.insert(Name::EXPIRES, expires.to_string());
        response.headers.insert(Name::ALLOW_EVENTS, ALLOW_EVENTS);
        let node = self.node;
        let local = self.local;
        let wall = self.wall_ms(now);
        let Some(entry) = self.entries.get_mut(&id) else {
            return out.respond(key, refuse(request, 481, ""), now);
        };
        if let Some(contact) = request.raw(&Name::CONTACT).and_then(|c| contact_uri(c))
            && contact.len() <= MAX_FIELD
        {
            entry.sub.contact = contact;
        }
        entry.sub.expires = now + Duration::from_secs(u64::from(expires));
        entry.force = true;
        if expires == 0 {
            entry.ending = true;
        } else if let Some(node) = node {
            let item = entry.sub.to_item(node, local, wall);
            self.ops.push_back(RingOp::Store {
                item,
                purpose: None,
            });
            entry.stored = true;
        }
        out.respond(key, response, now);
        self.tell(id, out, now);
    }

    /// `Expires` of a SUBSCRIBE or PUBLISH: 3600 when absent, shortened to
    /// `max_expires`; 0 stays 0; under `min_expires` is refused (423).
    fn read_expires(&self, request: &Request) -> Result<u32, Response> {
        let expires = match request.raw(&Name::EXPIRES) {
            None => 3600,
            Some(text) => text
                .trim()
                .parse::<u32>()
                .map_err(|_| refuse(request, 400, "Bad Request (Expires is not a number)"))?,
        };
        if expires > 0 && expires < self.config.min_expires {
            let mut response = refuse(request, 423, "");
            response
                .headers
                .insert(Name::MIN_EXPIRES, self.config.min_expires.to_string());
            return Err(response);
        }
        Ok(expires.min(self.config.max_expires))
    }
}

/// The 489 for an event package not served.
fn bad_event(request: &Request) -> Response {
    let mut response = refuse(request, 489, "");
    response.headers.insert(Name::ALLOW_EVENTS, ALLOW_EVENTS);
    response
}
