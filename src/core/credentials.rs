//! Users' credentials for the [`Auth`](crate::auth::Auth) component: the
//! ones of this node's users file, published in the ring under each user's
//! key (replicated like bindings, refreshed so that a deleted user's expire,
//! removed at once when a user leaves the file); and the ones a request
//! needs from the ring, fetched while the request waits.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::{Core, Output};
use crate::auth::users::UserRecord;
use crate::auth::{credential_item, credential_key, credential_name, credential_of};
use crate::outbox::owner;
use crate::registrar::binding::Aor;
use crate::ring::{Item, OpId, RingError};
use crate::sip::message::Request;
use crate::sip::transaction::{Peer, ServerKey};

/// How often this node publishes its users' credentials again.
pub(super) const PUBLISH_EVERY: Duration = Duration::from_secs(60);

/// A request waiting for its user's credentials.
pub(super) struct Parked {
    pub key: ServerKey,
    pub request: Request,
    pub from: Peer,
    pub aor: Aor,
    pub routed_through_us: bool,
    /// The flow of one of our phones the request is routed to.
    pub flow: Option<crate::registrar::flows::HeldFlow>,
}

impl Core {
    /// This node's users changed (its users file was read).
    pub(super) fn set_users(&mut self, users: Vec<UserRecord>, now: Instant) {
        let before: HashSet<Aor> = self.auth.local_users().map(|u| u.aor.clone()).collect();
        let after: HashSet<Aor> = users.iter().map(|u| u.aor.clone()).collect();
        self.auth.set_local_users(&users);
        info!(
            users = users.len(),
            "users file read: authenticating with these credentials"
        );
        if let Some(overlay) = self.location.overlay() {
            for gone in before.difference(&after) {
                overlay.remove_item(credential_key(gone), credential_name(gone), now);
            }
        }
        self.publish_credentials(now);
    }

    /// Stores every local user's credentials in the ring again.
    pub(super) fn publish_credentials(&mut self, now: Instant) {
        self.credentials_version += 1;
        let version = self.credentials_version;
        let items: Vec<Item> = self
            .auth
            .local_users()
            .map(|u| credential_item(u, version, now))
            .collect();
        if let Some(overlay) = self.location.overlay() {
            for item in items {
                overlay.store_item(item, now);
            }
        }
    }

    /// Parks a request until the credentials of `parked.aor` are fetched.
    pub(super) fn fetch_credentials(&mut self, parked: Parked, now: Instant) {
        match self.location.overlay() {
            Some(overlay) => {
                debug!(aor = %parked.aor, "fetching credentials from the ring");
                let op = overlay.fetch_items(owner::AUTH, credential_key(&parked.aor), now);
                self.parked.insert(op, parked);
            }
            None => {
                // No ring to ask: the user is unknown here.
                self.auth.learn(parked.aor.clone(), None, now);
                self.authenticate(parked, now);
            }
        }
    }

    /// The TURN server asks for the credentials of `aor`: known here, or
    /// fetched from the ring (the answer comes in [`Self::on_credentials`]).
    pub(super) fn turn_credentials(&mut self, id: u64, aor: Aor, now: Instant) {
        if let Some(record) = self.auth.known(&aor, now) {
            return self.outputs.push_back(Output::TurnCredentials {
                id,
                found: Ok(record),
            });
        }
        match self.location.overlay() {
            Some(overlay) => {
                debug!(%aor, "fetching TURN credentials from the ring");
                let op = overlay.fetch_items(owner::AUTH, credential_key(&aor), now);
                self.turn_waiting.insert(op, (id, aor));
            }
            None => self.outputs.push_back(Output::TurnCredentials {
                id,
                found: Ok(None),
            }),
        }
    }

    /// The ring answered a credentials fetch: check the request again.
    pub(super) fn on_credentials(
        &mut self,
        op: OpId,
        result: Result<Vec<Item>, RingError>,
        now: Instant,
    ) {
        if let Some((id, aor)) = self.turn_waiting.remove(&op) {
            let found = match result {
                Ok(items) => {
                    let record = credential_of(&aor, &items, now);
                    self.auth.learn(aor, record.clone(), now);
                    Ok(record)
                }
                Err(error) => Err(error.to_string()),
            };
            self.outputs
                .push_back(Output::TurnCredentials { id, found });
            return;
        }
        let Some(parked) = self.parked.remove(&op) else {
            return;
        };
        let record = match result {
            Ok(items) => credential_of(&parked.aor, &items, now),
            Err(error) => {
                debug!(%error, aor = %parked.aor, "credentials fetch failed");
                let response = super::checks::refusal(&parked.request, 503, "Service Unavailable");
                return self.out.respond(parked.key, response, now);
            }
        };
        self.auth.learn(parked.aor.clone(), record, now);
        self.authenticate(parked, now);
    }
}
