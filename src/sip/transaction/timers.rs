//! Timers (RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2): the
//! retransmission timers A, E and G and the lifetime timers B, D, F, H, I, J
//! and K of both client and server transactions, fired from the deadline map.

use std::time::{Duration, Instant};

use super::{ClientKey, ClientState, Event, Kind, ServerState, Slot, Transactions, Transmit};

impl Transactions {
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.deadlines.map.first_entry() {
            let (at, _) = *entry.key();
            if at > now {
                break;
            }
            let ((at, _), (id, slot)) = entry.remove_entry();
            if let Some(txn) = self.slab.get_mut(id) {
                txn.timers[slot as usize] = None;
                self.fire(id, slot, at, now);
            }
        }
    }

    /// Timer `slot` of transaction `id`, due at `at`, fired at `now`.
    fn fire(&mut self, id: u64, slot: Slot, at: Instant, now: Instant) {
        let timers = self.timers;
        let Some(txn) = self.slab.get_mut(id) else {
            return;
        };
        // Keep the schedule exact when polled on time; never schedule in the past.
        let next = |interval: Duration| {
            let t = at + interval;
            if t > now { t } else { now + interval }
        };
        match (&mut txn.kind, slot) {
            (Kind::Client(client), Slot::Retransmit) => {
                let interval = match (client.invite, client.state) {
                    (true, ClientState::Initial) => client.interval * 2,
                    (false, ClientState::Initial) => (client.interval * 2).min(timers.t2),
                    (false, ClientState::Proceeding) => timers.t2,
                    _ => return,
                };
                client.interval = interval;
                self.transmits.push_back(Transmit {
                    to: client.to,
                    message: client.request.clone(),
                });
                self.deadlines
                    .arm(txn, id, Slot::Retransmit, next(interval));
            }
            (Kind::Client(client), Slot::Lifetime) => {
                // Timer B / F, or the 64*T1 limit after a CANCEL: a timeout.
                // Timer D / K: the end of the Completed state.
                // After give_up: the end of the grace, silently.
                if client.state != ClientState::Completed && !client.silent && !client.given_up {
                    let (key, owner) = (ClientKey(id), client.owner);
                    self.events.push_back(Event::Timeout { key, owner });
                }
                self.terminate(id);
            }
            (Kind::Server(server), Slot::Retransmit) => {
                if server.state != ServerState::Completed {
                    return;
                }
                if let Some(last) = &server.last {
                    self.transmits.push_back(Transmit {
                        to: server.from,
                        message: last.clone(),
                    });
                }
                server.interval = (server.interval * 2).min(timers.t2);
                let interval = server.interval;
                self.deadlines
                    .arm(txn, id, Slot::Retransmit, next(interval));
            }
            (Kind::Server(_), Slot::Lifetime) => {
                // Timer H (no ACK came), I or J.
                self.terminate(id);
            }
        }
    }
}
