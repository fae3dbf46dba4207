//! The core's side of offline messages ([`crate::messages`]): a MESSAGE
//! for a user without a live binding is handed here instead of getting
//! 404/480, and every accepted REGISTER may start a delivery. This module
//! only moves things between the component, the ring and the transactions.

use std::time::Instant;

use tracing::debug;

use super::Core;
use super::checks::{local_response, refusal};
use crate::messages::{Decision, StoredMessage};
use crate::outbox::owner;
use crate::registrar::binding::{Aor, Binding};
use crate::ring::{Item, NodeId, OpId, RingError};
use crate::sip::message::Request;
use crate::sip::transaction::{ClientKey, ServerKey};

impl Core {
    /// A MESSAGE for `aor`, who has no live binding: look under her key
    /// whether she is known and how much is stored. Without a ring: 404/480
    /// as before (`absent`).
    pub(super) fn offline_message(
        &mut self,
        key: ServerKey,
        request: Request,
        aor: &Aor,
        absent: u16,
        now: Instant,
    ) {
        let Some(overlay) = self.location.overlay() else {
            return self.out.respond(key, local_response(&request, absent), now);
        };
        let op = overlay.fetch_items(owner::MESSAGES, NodeId::of_key(aor.as_str()), now);
        self.messages.leaving(op, key, request, aor.clone());
    }

    /// A fetch of this component answered.
    pub(super) fn on_messages_fetched(
        &mut self,
        op: OpId,
        result: Result<Vec<Item>, RingError>,
        now: Instant,
    ) {
        if let Some((key, request, aor)) = self.messages.take_leaving(op) {
            let items = match result {
                Ok(items) => items,
                Err(error) => {
                    debug!(%error, %aor, "could not read the user's stored messages");
                    return self.out.respond(
                        key,
                        refusal(&request, 503, "Service Unavailable"),
                        now,
                    );
                }
            };
            return match self.messages.decide(&request, &aor, &items, now) {
                Decision::Unknown => self.out.respond(key, local_response(&request, 404), now),
                Decision::Full(status, reason) => {
                    debug!(%aor, status, "offline message refused");
                    self.out
                        .respond(key, refusal(&request, status, reason), now)
                }
                Decision::Store(item) => {
                    let Some(overlay) = self.location.overlay() else {
                        return;
                    };
                    let op = overlay.store_item_for(owner::MESSAGES, item, now);
                    self.messages.storing(op, key, request, aor);
                }
            };
        }
        let items = result.unwrap_or_default();
        let notice = self
            .messages
            .collecting_for(op)
            .cloned()
            .and_then(|aor| self.voicemail_notice(&aor, &items, now));
        let local = self.config.local;
        let call_id = format!("{}@{local}", self.out.random_hex());
        let branch = self.out.new_branch();
        if let Some((request, peer, pending)) = self
            .messages
            .collected(op, &items, notice, local, call_id, branch)
        {
            let key = self.out.request(owner::MESSAGES, request, peer, now);
            self.messages.sent(key, pending);
        }
    }

    /// A store of this component done: the MESSAGE it keeps gets 202.
    pub(super) fn on_messages_stored(&mut self, op: OpId, stored: bool, now: Instant) {
        let Some((key, request, aor)) = self.messages.take_storing(op) else {
            return;
        };
        if stored {
            self.presence.changed(&aor, now);
        }
        let response = if stored {
            refusal(&request, 202, "Accepted (stored for delivery)")
        } else {
            refusal(&request, 503, "Service Unavailable")
        };
        self.out.respond(key, response, now);
    }

    /// A REGISTER of `aor` was accepted with these bindings: remember that
    /// she is known, and deliver what is stored for her.
    pub(super) fn registered_for_messages(
        &mut self,
        aor: &Aor,
        bindings: &[Binding],
        now: Instant,
    ) {
        let Some(contact) = bindings.iter().max_by_key(|b| b.q.unwrap_or(1000)).cloned() else {
            return;
        };
        let mark = self.messages.seen_mark(aor, now);
        let may_collect = self.messages.may_collect(aor);
        let Some(overlay) = self.location.overlay() else {
            return;
        };
        if let Some(mark) = mark {
            overlay.store_item(mark, now);
        }
        // The REGISTER's own fetch of her key saw whether anything waits.
        let nothing_waits = overlay.location.take_mail_seen(aor) == Some(false);
        if nothing_waits {
            // As a fetch that found no recordings would.
            self.voicemail.should_tell(aor, 0);
        }
        if may_collect && !nothing_waits {
            let op = overlay.fetch_items(owner::MESSAGES, NodeId::of_key(aor.as_str()), now);
            self.messages.collecting(op, aor.clone(), contact);
        }
    }

    /// "You have N new voicemail(s)", from `voicemail@` her domain, when
    /// recordings are stored for her and this node has not told her that
    /// count yet.
    fn voicemail_notice(
        &mut self,
        aor: &Aor,
        items: &[Item],
        now: Instant,
    ) -> Option<StoredMessage> {
        let count = crate::voicemail::count(items, now);
        if !self.voicemail.should_tell(aor, count) {
            return None;
        }
        let domain = aor.as_str().rsplit_once('@').map_or("", |(_, d)| d);
        let wall_ms = self.messages.wall_ms(now);
        Some(StoredMessage {
            from: format!("<sip:voicemail@{domain}>"),
            date: crate::messages::date::http_date(wall_ms / 1000),
            content_type: "text/plain".to_string(),
            body: format!("You have {count} new voicemail(s)").into_bytes(),
        })
    }

    /// The answer (or none) to a MESSAGE delivering a stored one.
    pub(super) fn on_delivery_answer(&mut self, key: ClientKey, status: Option<u16>, now: Instant) {
        if status.is_some_and(|s| s < 200) {
            return;
        }
        let local = self.config.local;
        let call_id = format!("{}@{local}", self.out.random_hex());
        let branch = self.out.new_branch();
        let Some(answered) = self.messages.answered(key, status, local, call_id, branch) else {
            return;
        };
        if let Some((item_key, name)) = answered.remove
            && let Some(overlay) = self.location.overlay()
        {
            overlay.remove_item(item_key, name, now);
            self.presence.changed_soon(&answered.aor, now);
        }
        if let Some((request, peer, pending)) = answered.next {
            let key = self.out.request(owner::MESSAGES, request, peer, now);
            self.messages.sent(key, pending);
        }
    }
}
