//! The registrar's part of the core: a REGISTER is a read-modify-write of
//! the AOR's bindings in the location store (fetch, [`registrar::apply`],
//! save), one at a time per AOR; and the answers of the store to the
//! look-ups the router started.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use ezk_sip_types::Name;
use tracing::warn;

use super::Core;
use super::checks::{local_response, refusal, with_to_tag};
use crate::registrar::binding::Aor;
use crate::registrar::flows::Flows;
use crate::registrar::location::{LocationAnswer, LocationOp};
use crate::registrar::{self, Change, Registration};
use crate::sip::message::{HeaderAccess, Request};
use crate::sip::target::{host_text, user_of};
use crate::sip::transaction::{Peer, ServerKey};

/// What the core does when the location store answers.
pub(super) enum Waiting {
    RegisterFetch {
        key: ServerKey,
        request: Request,
        registration: Registration,
    },
    RegisterSave {
        key: ServerKey,
        request: Request,
        aor: Aor,
        /// When the AOR's last live binding expired before this REGISTER.
        previous_latest: Option<Instant>,
    },
    Route {
        key: ServerKey,
        request: Request,
        aor: Aor,
        then_dns: bool,
    },
    /// The connection of an Outbound flow of hers closed (RFC 5626 §7):
    /// her bindings are read, to drop the ones over it.
    FlowFetch { aor: Aor, peer: Peer },
    /// Saved without them.
    FlowSave {
        aor: Aor,
        previous_latest: Option<Instant>,
    },
}

/// REGISTERs waiting for the one in progress for the same AOR.
#[derive(Default)]
pub(super) struct Registering(HashMap<Aor, VecDeque<(ServerKey, Request, Registration)>>);

impl Core {
    /// A REGISTER for one of our domains (by its Request-URI).
    pub(super) fn on_register(
        &mut self,
        key: ServerKey,
        request: Request,
        from: Peer,
        authenticated: Option<Aor>,
        now: Instant,
    ) {
        let Some(to) = request.to_header() else {
            return self.out.respond(key, local_response(&request, 400), now);
        };
        let Some(user) = user_of(&to.uri.uri) else {
            return self.out.respond(key, local_response(&request, 400), now);
        };
        let Some(domain) = self.local_domain(&to.uri.uri.host_port) else {
            tracing::info!(domain = %host_text(&to.uri.uri.host_port.host), %user, source = %from.addr, status = 403, "registration refused: not a domain of this registrar");
            let response = refusal(&request, 403, "Not A Domain Of This Registrar");
            return self.out.respond(key, response, now);
        };
        let aor = Aor::new(&user, &domain);
        // An authenticated user registers her own AOR only (RFC 3261 §10.3 step 3).
        if authenticated.as_ref().is_some_and(|who| *who != aor) {
            let response = refusal(&request, 403, "Forbidden (not your address)");
            return self.out.respond(key, response, now);
        }
        match registrar::read(&request, aor.clone(), from, &self.config.registrar) {
            Err(refusal) => self.out.respond(key, refusal.response(&request), now),
            Ok(registration) => {
                // One REGISTER per AOR at a time: fetch, apply and save is a
                // read-modify-write of the AOR's bindings.
                if let Some(queue) = self.registering.0.get_mut(&aor) {
                    queue.push_back((key, request, registration));
                    return;
                }
                self.registering.0.insert(aor, VecDeque::new());
                self.start_register(key, request, registration, now);
            }
        }
    }

    fn start_register(
        &mut self,
        key: ServerKey,
        request: Request,
        registration: Registration,
        now: Instant,
    ) {
        let op = self.op();
        self.location.store().fetch(op, &registration.aor, now);
        self.waiting.insert(
            op,
            Waiting::RegisterFetch {
                key,
                request,
                registration,
            },
        );
    }

    /// The connection to `peer` closed: the Outbound bindings it carried go,
    /// by the same read-modify-write as a REGISTER, one at a time per AOR.
    pub(super) fn connection_failed(&mut self, peer: Peer, now: Instant) {
        for aor in self.upkeep.flows.failed(peer, now) {
            if self.registering.0.contains_key(&aor) {
                // A REGISTER of hers is under way (likely over a new
                // connection): what it saves stands.
                tracing::debug!(%aor, peer = %peer.addr, "flow closed during a registration: left to it");
                continue;
            }
            self.registering.0.insert(aor.clone(), VecDeque::new());
            let op = self.op();
            self.location.store().fetch(op, &aor, now);
            self.waiting.insert(op, Waiting::FlowFetch { aor, peer });
        }
    }

    /// A REGISTER for `aor` ended: start the next one waiting, if any.
    fn register_done(&mut self, aor: &Aor, now: Instant) {
        let next = self.registering.0.get_mut(aor).and_then(|q| q.pop_front());
        match next {
            Some((key, request, registration)) => {
                self.start_register(key, request, registration, now)
            }
            None => {
                self.registering.0.remove(aor);
            }
        }
    }

    /// The location store answered one of the core's operations.
    pub(super) fn on_location(&mut self, op: LocationOp, answer: LocationAnswer, now: Instant) {
        let Some(waiting) = self.waiting.remove(&op) else {
            return;
        };
        if let Waiting::Route { key, .. } = &waiting
            && self.cancelled.remove(key)
        {
            return;
        }
        let registered_aor = match (&waiting, &answer) {
            (Waiting::RegisterSave { aor, .. }, _) | (Waiting::FlowSave { aor, .. }, _) => {
                Some(aor.clone())
            }
            (Waiting::RegisterFetch { registration, .. }, Err(_)) => Some(registration.aor.clone()),
            (Waiting::FlowFetch { aor, .. }, Err(_)) => Some(aor.clone()),
            _ => None,
        };
        self.answer_location(waiting, answer, now);
        if let Some(aor) = registered_aor {
            self.register_done(&aor, now);
        }
    }

    fn answer_location(&mut self, waiting: Waiting, answer: LocationAnswer, now: Instant) {
        match (waiting, answer) {
            (Waiting::RegisterFetch { key, request, .. }, Err(error))
            | (Waiting::RegisterSave { key, request, .. }, Err(error))
            | (Waiting::Route { key, request, .. }, Err(error)) => {
                warn!(%error, "location store failed");
                let mut response = local_response(&request, 503);
                response.headers.insert(Name::RETRY_AFTER, "5");
                self.out.respond(key, response, now);
            }
            (Waiting::FlowFetch { aor, .. }, Err(error))
            | (Waiting::FlowSave { aor, .. }, Err(error)) => {
                warn!(%error, %aor, "location store failed: a closed flow's binding stays until it expires");
            }
            (Waiting::FlowFetch { aor, peer }, Ok(existing)) => {
                let live: Vec<_> = existing
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|b| b.is_live(now))
                    .collect();
                let previous_latest = live.iter().map(|b| b.expires_at).max();
                let before = live.len();
                let kept: Vec<_> = live
                    .into_iter()
                    .filter(|b| !(b.source == Some(peer) && b.flow.is_some()))
                    .collect();
                if kept.len() == before {
                    return self.register_done(&aor, now);
                }
                tracing::info!(%aor, peer = %peer.addr, removed = before - kept.len(), "outbound flow closed: its binding removed");
                let op = self.op();
                self.location.store().save(op, &aor, kept, now);
                self.waiting.insert(
                    op,
                    Waiting::FlowSave {
                        aor,
                        previous_latest,
                    },
                );
            }
            (
                Waiting::FlowSave {
                    aor,
                    previous_latest,
                },
                Ok(saved),
            ) => {
                let bindings = saved.unwrap_or_default();
                if let Some(overlay) = self.location.overlay() {
                    overlay.update_directory(&aor, &bindings, previous_latest, now);
                }
                self.upkeep
                    .flows
                    .registered(&aor, &bindings, self.config.local, now);
                self.presence.changed(&aor, now);
            }
            (
                Waiting::RegisterFetch {
                    key,
                    request,
                    registration,
                },
                Ok(existing),
            ) => {
                let existing = existing.unwrap_or_default();
                let previous_latest = existing
                    .iter()
                    .filter(|b| b.is_live(now))
                    .map(|b| b.expires_at)
                    .max();
                match registrar::apply(&registration, existing, &self.config.registrar, now) {
                    Err(refusal) => {
                        self.out.respond(key, refusal.response(&request), now);
                        self.register_done(&registration.aor, now);
                    }
                    Ok(bindings) if registration.change == Change::Query => {
                        let response = registrar::ok_response(&request, &bindings, now);
                        self.out.respond(key, with_to_tag(&request, response), now);
                        self.register_done(&registration.aor, now);
                    }
                    Ok(mut bindings) => {
                        let op = self.op();
                        let this = request.raw(&Name::CALL_ID).zip(request.cseq().ok());
                        if self.location.overlay().is_some()
                            && let Some((call_id, cseq)) = this
                        {
                            // Reached only over its flow: others route to it through us.
                            let local = self.config.local;
                            Flows::mark(&mut bindings, (call_id.trim(), cseq.cseq), local);
                        }
                        if let Some(overlay) = self.location.overlay() {
                            // The proof that we authenticated the user, for
                            // a holder whose record another node wrote.
                            let proof = request
                                .headers
                                .get_raw(&Name::AUTHORIZATION)
                                .find(|v| crate::auth::digest::Credentials::parse(v).is_some());
                            if let Some(proof) = proof {
                                overlay.location.prove(&registration.aor, proof);
                            }
                        }
                        self.location
                            .store()
                            .save(op, &registration.aor, bindings, now);
                        self.waiting.insert(
                            op,
                            Waiting::RegisterSave {
                                key,
                                request,
                                aor: registration.aor,
                                previous_latest,
                            },
                        );
                    }
                }
            }
            (
                Waiting::RegisterSave {
                    key,
                    request,
                    aor,
                    previous_latest,
                },
                Ok(saved),
            ) => {
                let bindings = saved.unwrap_or_default();
                if let Some(overlay) = self.location.overlay() {
                    // Her directory entry and "seen" mark (below): one
                    // signature for both (`overlay/signed/batch.rs`).
                    overlay.batch_stores();
                    overlay.update_directory(&aor, &bindings, previous_latest, now);
                }
                let live = bindings.iter().filter(|b| b.is_live(now)).count();
                let expires = bindings
                    .iter()
                    .map(|b| b.remaining(now).as_secs())
                    .max()
                    .unwrap_or(0);
                tracing::debug!(%aor, contacts = live, expires_s = expires, status = 200, "registration");
                if let (Some(call_id), Ok(cseq)) = (request.raw(&Name::CALL_ID), request.cseq()) {
                    let this = (call_id.trim(), cseq.cseq);
                    self.upkeep.natping.registered(&aor, &bindings, this, now);
                }
                self.upkeep
                    .flows
                    .registered(&aor, &bindings, self.config.local, now);
                let response = registrar::ok_response(&request, &bindings, now);
                self.out.respond(key, with_to_tag(&request, response), now);
                self.registered_for_messages(&aor, &bindings, now);
                if let Some(overlay) = self.location.overlay() {
                    overlay.flush_stores(now);
                }
                self.presence.changed(&aor, now);
            }
            (
                Waiting::Route {
                    key,
                    request,
                    aor,
                    then_dns,
                },
                Ok(found),
            ) => self.route_found(key, request, &aor, found, then_dns, now),
        }
    }
}
