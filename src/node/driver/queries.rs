//! The driver's answers to the HTTP window's queries (status, users,
//! items, the operator's ring walks and look-ups, users' sign-ups and
//! buddy lists), read off the core.

use super::*;

impl Node {
    /// A walk or look-up ended: its answer to whoever asked.
    pub(super) fn surveyed(&mut self, id: u64, report: crate::overlay::walk::Report) {
        match self.surveys.remove(&id) {
            Some(Survey::Ring(reply)) => {
                let _ = reply.send(crate::node::inventory::walk(report));
            }
            Some(Survey::Lookup(aor, reply)) => {
                let _ = reply.send(crate::node::inventory::lookup(&aor, report, Instant::now()));
            }
            Some(other @ (Survey::Download(_) | Survey::Account(_) | Survey::Turn(_))) => {
                self.surveys.insert(id, other);
            }
            None => {}
        }
    }

    /// A sign-up or buddy-list request ended: its answer to the HTTP window.
    pub(super) fn accounted(&mut self, id: u64, answer: crate::core::AccountAnswer) {
        if let Some(Survey::Account(reply)) = self.surveys.remove(&id) {
            let _ = reply.send(answer);
        }
    }

    /// The TURN servers of the ring were found: the answer to `/turn`.
    pub(super) fn turn_found(&mut self, id: u64, choice: crate::overlay::relays::RelayChoice) {
        if let Some(Survey::Turn(reply)) = self.surveys.remove(&id) {
            let _ = reply.send(serde_json::to_value(choice).unwrap_or_default());
        }
    }

    /// A query from the HTTP window: answered now, or (a walk, a look-up)
    /// handed to the core, which answers with [`Output::Surveyed`].
    pub(super) fn answer(&mut self, query: Query) -> Wake {
        let id = self.next_survey;
        match query {
            Query::Turn(reply) => {
                self.next_survey += 1;
                self.surveys.insert(id, Survey::Turn(reply));
                Wake::Input(Input::FindTurn { id })
            }
            Query::Ring(reply) => {
                self.next_survey += 1;
                self.surveys.insert(id, Survey::Ring(reply));
                Wake::Input(Input::Walk { id })
            }
            Query::Lookup(aor, reply) => {
                self.next_survey += 1;
                let key = crate::ring::NodeId::of_key(&aor);
                self.surveys.insert(id, Survey::Lookup(aor, reply));
                Wake::Input(Input::Lookup { id, key })
            }
            Query::Account(request, reply) => {
                self.next_survey += 1;
                self.surveys.insert(id, Survey::Account(reply));
                Wake::Input(Input::Account { id, request })
            }
            Query::Voicemail {
                aor,
                number,
                authorization,
                uri,
                reply,
            } => {
                self.next_survey += 1;
                self.surveys.insert(id, Survey::Download(reply));
                Wake::Input(Input::Download {
                    id,
                    aor,
                    number,
                    authorization,
                    uri,
                })
            }
            other => {
                self.answer_now(other);
                Wake::Nothing
            }
        }
    }

    pub(super) fn answer_now(&mut self, query: Query) {
        let (transactions, forks) = self.core.load();
        self.core.metrics.transactions.set(transactions as i64);
        let registrations = self.core.registrations();
        self.core.metrics.registrations.set(registrations as i64);
        let ring = self.core.overlay().map(|o| o.status());
        if let Some(ring) = &ring {
            self.core
                .metrics
                .items_primary
                .set(ring.items_primary as i64);
            self.core
                .metrics
                .items_replica
                .set(ring.items_replica as i64);
            for role in ["member", "super", "client"] {
                let on = i64::from(role == ring.role);
                let labels = crate::metrics::RoleLabels { role };
                self.core.metrics.role.get_or_create(&labels).set(on);
            }
            self.core.metrics.clients.set(ring.clients as i64);
        }
        match query {
            Query::Status(reply) => {
                let mut value = serde_json::to_value(&ring).unwrap_or_default();
                if !value.is_object() {
                    value = serde_json::json!({});
                }
                if let Some(object) = value.as_object_mut() {
                    object.insert("uptime_s".into(), self.started.elapsed().as_secs().into());
                    object.insert("domains".into(), self.core.config().domains.clone().into());
                    object.insert("registrations".into(), registrations.into());
                    object.insert("transactions".into(), transactions.into());
                    object.insert("forks".into(), forks.into());
                    if let Some(overlay) = self.core.overlay()
                        && let Ok(counters) = serde_json::to_value(&overlay.counters)
                    {
                        object.insert("overlay".into(), counters);
                    }
                    object.insert("keys".into(), self.held_keys().into());
                    object.insert(
                        "users".into(),
                        crate::node::inventory::users_held(&self.core, Instant::now()),
                    );
                    object.insert(
                        "gateways".into(),
                        crate::node::inventory::gateways(&self.core),
                    );
                    if let Some((service, _)) = &self.turn {
                        let mut turn =
                            serde_json::to_value(*service.counters.borrow()).unwrap_or_default();
                        if let Some(turn) = turn.as_object_mut() {
                            turn.insert("addr".into(), service.addr.to_string().into());
                        }
                        object.insert("turn".into(), turn);
                    }
                    object.insert(
                        "turn_relays".into(),
                        serde_json::to_value(self.core.turn_relays(Instant::now()))
                            .unwrap_or_default(),
                    );
                    object.insert(
                        "joining".into(),
                        self.core
                            .overlay()
                            .is_some_and(|o| o.ring().is_joining())
                            .into(),
                    );
                }
                let _ = reply.send(value);
            }
            Query::Registrations(reply) => {
                let _ = reply.send(crate::node::inventory::registrations(
                    &self.core,
                    Instant::now(),
                ));
            }
            Query::Items(reply) => {
                let _ = reply.send(crate::node::inventory::items(&self.core, Instant::now()));
            }
            Query::Metrics(reply) => {
                let _ = reply.send(self.core.metrics.encode());
            }
            Query::Ring(_)
            | Query::Lookup(..)
            | Query::Account(..)
            | Query::Voicemail { .. }
            | Query::Turn(_) => {}
        }
    }

    /// The distinct keys of the items held here, at most 500 (for the page).
    pub(super) fn held_keys(&self) -> Vec<String> {
        let Some(overlay) = self.core.overlay() else {
            return Vec::new();
        };
        let mut keys: Vec<String> = overlay
            .ring()
            .all_items()
            .map(|i| i.key.to_string())
            .collect();
        keys.sort();
        keys.dedup();
        keys.truncate(500);
        keys
    }
}
