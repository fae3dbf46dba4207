//! The core's side of presence ([`crate::presence`]): SUBSCRIBE and
//! PUBLISH for users of our domains are handed to the notifier once the
//! authentication hook has admitted them (in digest mode only from
//! authenticated users; `message-summary` and PUBLISH only for oneself),
//! in-dialog SUBSCRIBEs of its dialogs go straight to it, and the ring
//! operations it asks for are started here. This module only moves
//! things between the component, the ring and the transactions.

use std::time::Instant;

use ezk_sip_types::{Method, Name};

use super::Core;
use super::checks::refusal;
use crate::auth::AuthMode;
use crate::outbox::owner;
use crate::presence::subscription::{Subscription, WATCH_KIND};
use crate::presence::{Package, RingOp, read_event};
use crate::registrar::binding::Aor;
use crate::ring::{Item, NodeId, OpId, RingError};
use crate::sip::message::{HeaderAccess, Request, raw_tag};
use crate::sip::target::user_of;
use crate::sip::transaction::{ClientKey, Peer, ServerKey};

impl Core {
    /// Whether the notifier serves this request (SUBSCRIBE or PUBLISH, with
    /// presence on and a ring to keep its state in).
    pub(super) fn serves_presence(&self, request: &Request) -> bool {
        self.config.presence.enabled
            && self.overlay().is_some()
            && matches!(request.method, Method::SUBSCRIBE | Method::PUBLISH)
    }

    /// An in-dialog SUBSCRIBE not routed elsewhere: a refresh of one of our
    /// subscriptions, or 481 when it names our own address and no dialog
    /// of ours. True when it was answered here.
    pub(super) fn presence_in_dialog(
        &mut self,
        key: ServerKey,
        request: &Request,
        for_the_node: bool,
        now: Instant,
    ) -> bool {
        if request.method != Method::SUBSCRIBE
            || !self.serves_presence(request)
            || request
                .raw(&Name::TO)
                .is_none_or(|to| raw_tag(to).is_none())
        {
            return false;
        }
        if self.presence.knows_dialog(request) || for_the_node {
            self.presence.refresh(key, request, &mut self.out, now);
            return true;
        }
        false
    }

    /// A new SUBSCRIBE or PUBLISH for `aor`, a user of our domains.
    pub(super) fn on_presence(
        &mut self,
        key: ServerKey,
        request: Request,
        from: Peer,
        aor: Aor,
        user: Option<Aor>,
        now: Instant,
    ) {
        if self.auth.mode() == AuthMode::Digest && user.is_none() {
            let response = refusal(
                &request,
                403,
                "Forbidden (presence is for authenticated users)",
            );
            return self.out.respond(key, response, now);
        }
        let watcher = user.or_else(|| self.sender_aor(&request));
        let for_oneself = request.method == Method::PUBLISH
            || read_event(&request).is_some_and(|(p, _)| p == Package::MessageSummary);
        if for_oneself && watcher.as_ref() != Some(&aor) {
            let response = refusal(&request, 403, "Forbidden (only for your own address)");
            return self.out.respond(key, response, now);
        }
        if request.method == Method::PUBLISH {
            self.presence.publish(key, request, aor, &mut self.out, now);
        } else {
            self.presence
                .subscribe(key, &request, from, aor, &mut self.out, now);
        }
    }

    /// The AOR in a request's From, when its host is one of our domains.
    pub(super) fn sender_aor(&self, request: &Request) -> Option<Aor> {
        let uri = request.from_header()?.uri.uri;
        let domain = self.local_domain(&uri.host_port)?;
        Some(Aor::new(&user_of(&uri)?, &domain))
    }

    /// Starts the ring operations the notifier asked for; true if any.
    pub(super) fn start_presence_ops(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(op) = self.presence.poll_op() {
            any = true;
            let Some(overlay) = self.location.overlay() else {
                continue;
            };
            match op {
                RingOp::Fetch { key, purpose } => {
                    let id = overlay.fetch_items(owner::PRESENCE, key, now);
                    self.presence.started(id, purpose);
                }
                RingOp::Store {
                    item,
                    purpose: Some(purpose),
                } => {
                    let id = overlay.store_item_for(owner::PRESENCE, item, now);
                    self.presence.started(id, purpose);
                }
                RingOp::Store {
                    item,
                    purpose: None,
                } => overlay.store_item(item, now),
                RingOp::Remove {
                    key,
                    name,
                    purpose: Some(purpose),
                } => {
                    let id = overlay.remove_item_for(owner::PRESENCE, key, name, now);
                    self.presence.started(id, purpose);
                }
                RingOp::Remove {
                    key,
                    name,
                    purpose: None,
                } => overlay.remove_item(key, name, now),
            }
        }
        any
    }

    /// A fetch of the notifier answered.
    pub(super) fn on_presence_fetched(
        &mut self,
        op: OpId,
        result: Result<Vec<Item>, RingError>,
        now: Instant,
    ) {
        if let Some(purpose) = self.presence.take(op) {
            self.presence
                .on_fetched(purpose, result.ok(), &mut self.out, now);
        }
    }

    /// A store or removal of the notifier done.
    pub(super) fn on_presence_stored(&mut self, op: OpId, stored: bool, now: Instant) {
        if let Some(purpose) = self.presence.take(op) {
            self.presence.on_stored(purpose, stored, &mut self.out, now);
        }
    }

    /// The answer (or none) to one of our NOTIFYs.
    pub(super) fn on_notify_answer(&mut self, key: ClientKey, status: Option<u16>, now: Instant) {
        self.presence
            .on_notify_answer(key, status, &mut self.out, now);
    }

    /// Subscriptions whose notifier left the ring are taken over by the
    /// node that now holds their items as primary: a live node always
    /// holds its own key, so an item under another node's key that lands
    /// here, from a notifier our ring does not know, is an orphan.
    pub(super) fn adopt_subscriptions(&mut self, now: Instant) {
        if !self.presence.adoption_due(now) {
            return;
        }
        let Some(overlay) = self.overlay() else {
            return;
        };
        let ring = overlay.ring();
        let me = ring.me();
        let predecessor = ring.predecessor();
        let orphans: Vec<Item> = ring
            .all_items()
            .filter(|i| i.kind == WATCH_KIND && i.key != me.id && i.expires > now)
            .filter(|i| predecessor.is_none_or(|p| i.key.in_open_closed(p.id, me.id)))
            .filter(|i| {
                Subscription::notifier_of(i).is_some_and(|at| {
                    at != me.addr && !ring.knows(at) && NodeId::of_addr(at) == i.key
                })
            })
            .cloned()
            .collect();
        for item in &orphans {
            self.presence.adopt(item, now);
        }
    }

    /// Once, at the first input: the subscriptions this node kept under its
    /// own key (read back from disk with the ring's items).
    pub(super) fn restore_presence(&mut self, now: Instant) {
        if self.presence.has_node() {
            return;
        }
        let Some(me) = self.me() else {
            return;
        };
        let items = self
            .overlay()
            .map(|o| o.ring().local_items(me.id))
            .unwrap_or_default();
        self.presence.restore(me.id, &items, now);
    }
}
