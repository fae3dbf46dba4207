//! When and what the notifier tells: a presentity's state read again
//! (on a change seen here, and every [`POLL_EVERY`](super::POLL_EVERY)),
//! one NOTIFY out at a time per subscription, the final one when it ends,
//! and what a NOTIFY's answer does.

use std::time::{Duration, Instant};

use tracing::debug;

use super::{POLL_EVERY, Presence, Purpose, RingOp, state};
use crate::outbox::{Outbox, owner};
use crate::registrar::binding::Aor;
use crate::ring::{Item, NodeId};
use crate::sip::transaction::{ClientKey, TransportKind};

impl Presence {
    /// Something about `aor` may have changed: read her state again now.
    pub fn changed(&mut self, aor: &Aor, now: Instant) {
        let Some(watched) = self.watched.get_mut(aor) else {
            return;
        };
        if watched.fetching {
            watched.again = true;
            return;
        }
        watched.fetching = true;
        watched.next_poll = now + POLL_EVERY;
        self.ops.push_back(RingOp::Fetch {
            key: NodeId::of_key(aor.as_str()),
            purpose: Purpose::Watch(aor.clone()),
        });
    }

    /// Something about `aor` was changed by an operation that ends without
    /// an answer (a removal): read her state again in a moment.
    pub fn changed_soon(&mut self, aor: &Aor, now: Instant) {
        if let Some(watched) = self.watched.get_mut(aor)
            && !watched.fetching
        {
            watched.next_poll = watched.next_poll.min(now + Duration::from_millis(500));
        }
    }

    /// A fetch asked for `purpose` answered.
    pub fn on_fetched(
        &mut self,
        purpose: Purpose,
        items: Option<Vec<Item>>,
        out: &mut Outbox,
        now: Instant,
    ) {
        match purpose {
            Purpose::Watch(aor) => self.on_state(&aor, items, out, now),
            Purpose::Publish(publishing) => self.publish_fetched(*publishing, items, out, now),
            Purpose::Published(publishing) => self.publish_fetched(*publishing, None, out, now),
        }
    }

    pub(super) fn on_state(
        &mut self,
        aor: &Aor,
        items: Option<Vec<Item>>,
        out: &mut Outbox,
        now: Instant,
    ) {
        let Some(watched) = self.watched.get_mut(aor) else {
            return;
        };
        watched.fetching = false;
        watched.next_poll = now + POLL_EVERY;
        if let Some(items) = items {
            watched.snapshot = Some(state::snapshot(aor, &items, now));
        }
        let again = std::mem::take(&mut watched.again);
        let ids: Vec<u64> = watched.subs.iter().copied().collect();
        for id in ids {
            self.tell(id, out, now);
        }
        if again {
            self.changed(aor, now);
        }
    }

    /// Sends subscription `id` a NOTIFY if it has something new to say.
    pub(super) fn tell(&mut self, id: u64, out: &mut Outbox, now: Instant) {
        let local = self.local;
        let transport = self
            .entries
            .get(&id)
            .map(|e| e.sub.source.transport)
            .unwrap_or(TransportKind::Udp);
        let contact = self.contact(transport);
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let aor = entry.sub.presentity.clone();
        let Some(snapshot) = self.watched.get(&aor).and_then(|w| w.snapshot.clone()) else {
            return;
        };
        if entry.final_sent {
            return;
        }
        let body = entry.sub.package.body(&aor, &snapshot);
        if !entry.force && !entry.ending && entry.last_body.as_deref() == Some(body.as_str()) {
            return;
        }
        if entry.in_flight {
            entry.dirty = true;
            return;
        }
        let state = if entry.ending || entry.sub.expires <= now {
            entry.final_sent = true;
            "terminated;reason=timeout".to_string()
        } else {
            format!("active;expires={}", entry.sub.remaining(now))
        };
        let peer = entry.sub.peer();
        let Some(request) =
            entry
                .sub
                .notify(&state, body.clone(), local, &contact, out.new_branch())
        else {
            debug!(contact = %entry.sub.contact, "a watcher's contact does not parse");
            return self.end(id);
        };
        entry.last_body = Some(body);
        entry.force = false;
        entry.dirty = false;
        entry.in_flight = true;
        let key = out.request(owner::PRESENCE, request, peer, now);
        self.notifying.insert(key, id);
        self.metrics.presence_notifies.inc();
    }

    /// The answer to a NOTIFY (`None`: no answer).
    pub fn on_notify_answer(
        &mut self,
        key: ClientKey,
        status: Option<u16>,
        out: &mut Outbox,
        now: Instant,
    ) {
        if status.is_some_and(|s| s < 200) {
            return;
        }
        let Some(id) = self.notifying.remove(&key) else {
            return;
        };
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        entry.in_flight = false;
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        if !ok {
            // RFC 6665 §4.2.2: a failed NOTIFY ends the subscription.
            debug!(?status, call_id = %entry.sub.call_id, "NOTIFY failed: subscription removed");
            return self.end(id);
        }
        if entry.final_sent {
            return self.end(id);
        }
        if entry.dirty || entry.ending {
            self.tell(id, out, now);
        }
    }

    /// Drops subscription `id` and its item.
    pub(super) fn end(&mut self, id: u64) {
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        self.dialogs.remove(&entry.sub.dialog());
        let aor = &entry.sub.presentity;
        if let Some(watched) = self.watched.get_mut(aor) {
            watched.subs.remove(&id);
            if watched.subs.is_empty() {
                self.watched.remove(aor);
            }
        }
        if entry.stored
            && let Some(node) = self.node
        {
            self.ops.push_back(RingOp::Remove {
                key: node,
                name: entry.sub.item_name(),
                purpose: None,
            });
        }
        self.metrics
            .presence_subscriptions
            .set(self.entries.len() as i64);
    }

    /// Expired subscriptions get their final NOTIFY; watched presentities
    /// due are read again.
    pub fn handle_timeout(&mut self, out: &mut Outbox, now: Instant) {
        let expired: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.ending && e.sub.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(entry) = self.entries.get_mut(&id) {
                entry.ending = true;
            }
            self.tell(id, out, now);
        }
        let due: Vec<Aor> = self
            .watched
            .iter()
            .filter(|(_, w)| !w.fetching && w.next_poll <= now)
            .map(|(aor, _)| aor.clone())
            .collect();
        for aor in due {
            self.changed(&aor, now);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let polls = self
            .watched
            .values()
            .filter(|w| !w.fetching)
            .map(|w| w.next_poll);
        let ends = self
            .entries
            .values()
            .filter(|e| !e.ending)
            .map(|e| e.sub.expires);
        polls.chain(ends).min()
    }
}
