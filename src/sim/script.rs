//! Scripting helpers on the [`World`]: growing a ring node by node, placing
//! calls and messages, registering many phones, and working out which nodes
//! hold a user's bindings (to tell which users a crash left reachable).

use std::time::Duration;

use rand::Rng;

use super::world::{Action, World};
use crate::ring::NodeId;

impl World {
    /// A live node chosen at random (panics when none is left).
    pub fn random_live(&mut self) -> usize {
        let live = self.live_nodes();
        live[self.rng.random_range(0..live.len())]
    }

    /// Grows the ring by `n` nodes, one by one: each joins through a random
    /// joined node, the next starts once it has joined (or 10 s passed) and
    /// `spacing` later; then the ring settles for `settle`.
    pub fn grow(&mut self, n: usize, spacing: Duration, settle: Duration) {
        for _ in 0..n {
            let first = self.live_nodes().is_empty();
            if first {
                self.add_node(None);
            } else {
                let joined: Vec<usize> = self
                    .live_nodes()
                    .into_iter()
                    .filter(|i| self.is_joined(*i) || self.live_nodes().len() == 1)
                    .collect();
                let bootstrap = joined[self.rng.random_range(0..joined.len())];
                let node = self.add_node(Some(bootstrap));
                self.run_until_cond(Duration::from_secs(10), |w| w.is_joined(node));
            }
            self.run_for(spacing);
        }
        self.run_for(settle);
    }

    /// The SIP URI of `user` in the World's domain.
    pub fn uri(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.config.domain)
    }

    /// Phone `phone` calls `target` now; returns the call's index in its [`calls`](super::Phone::calls).
    pub fn call(&mut self, phone: usize, target: &str, hold: Option<Duration>) -> usize {
        let n = self.phones[phone].calls.len();
        self.act(
            phone,
            Action::Call {
                target: target.to_string(),
                hold,
            },
        );
        n
    }

    /// Phone `phone` CANCELs its call `index` now.
    pub fn cancel(&mut self, phone: usize, index: usize) {
        self.act(phone, Action::Cancel(index));
    }

    /// Phone `phone` sends a MESSAGE to `target` now.
    pub fn message(&mut self, phone: usize, target: &str, body: &str) {
        self.act(
            phone,
            Action::Message {
                target: target.to_string(),
                body: body.to_string(),
            },
        );
    }

    /// Every phone in `phones` REGISTERs (with `expires`) at a random
    /// moment within `over`; then runs until all have an answer or `limit`
    /// passed. Returns how many got 200.
    pub fn register_all(
        &mut self,
        phones: &[usize],
        expires: u32,
        over: Duration,
        limit: Duration,
    ) -> usize {
        let start = self.now();
        for &p in phones {
            let offset = self.rng.random_range(0..=over.as_micros() as u64);
            self.schedule(
                start + Duration::from_micros(offset),
                p,
                Action::Register(expires),
            );
        }
        let counts = |w: &World| {
            phones
                .iter()
                .filter(|p| w.phones[**p].registrations.iter().any(|(t, _)| *t >= start))
                .count()
        };
        self.run_until_cond(over + limit, |w| counts(w) == phones.len());
        phones
            .iter()
            .filter(|p| self.phones[**p].is_registered())
            .count()
    }

    /// The nodes among `among` that hold the bindings of `aor` (`user@domain`)
    /// by the ring's rule: the successor of the key and the `replicas - 1`
    /// nodes after it.
    pub fn holders(&self, aor: &str, among: &[usize]) -> Vec<usize> {
        let key = NodeId::of_key(aor);
        let mut ring: Vec<(NodeId, usize)> = among
            .iter()
            .map(|i| (NodeId::of_addr(self.nodes[*i].addr), *i))
            .collect();
        ring.sort();
        if ring.is_empty() {
            return Vec::new();
        }
        let start = ring.iter().position(|(id, _)| *id >= key).unwrap_or(0);
        let replicas = self.config.ring.replicas.min(ring.len());
        (0..replicas)
            .map(|k| ring[(start + k) % ring.len()].1)
            .collect()
    }
}
