//! Allocate (RFC 8656 §7.2): the checks in the RFC's order, the choice of
//! relay ports (an even one for EVEN-PORT, the next one reserved with R,
//! the reserved one for RESERVATION-TOKEN), the wait for the driver to bind
//! them, and the success response with XOR-RELAYED-ADDRESS, LIFETIME and
//! XOR-MAPPED-ADDRESS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::allocation::Allocation;
use super::{Auth, BIND_TRIES, Output, RESERVATION_LIFETIME, Server};
use crate::sip::stun::message::{Message, Writer};
use crate::sip::stun::{Class, attr};

/// REQUESTED-TRANSPORT's value for UDP.
const UDP: u8 = 17;

/// An allocation whose relay socket(s) are being bound.
pub(super) struct Pending {
    auth: Auth,
    /// The request's cookie and transaction ID, and whether it had a FINGERPRINT.
    id: [u8; 16],
    fingerprint: bool,
    lifetime: Duration,
    /// EVEN-PORT: an even port; with R, the next one reserved too.
    even: bool,
    reserve: bool,
    /// The ports asked for, and which are bound (`Some(true)`), failed or not yet answered.
    ports: Vec<(u16, Option<bool>)>,
    tries: u8,
}

impl Server {
    pub(super) fn allocate(
        &mut self,
        from: SocketAddr,
        message: &Message<'_>,
        auth: Auth,
        now: Instant,
    ) {
        if let Some(allocation) = self.allocations.get(&from) {
            if allocation.transaction == message.id {
                let again = allocation.response.clone();
                return self.send_to_client(from, again);
            }
            return self.error(from, message, &auth, 437, "Allocation Mismatch");
        }
        if self.pending.contains_key(&from) {
            return; // a retransmission while its socket is being bound
        }
        match message.get(attr::REQUESTED_TRANSPORT) {
            None => {
                return self.error(
                    from,
                    message,
                    &auth,
                    400,
                    "Bad Request (no REQUESTED-TRANSPORT)",
                );
            }
            Some(value) if value.first() != Some(&UDP) => {
                return self.error(from, message, &auth, 442, "Unsupported Transport Protocol");
            }
            Some(_) => {}
        }
        let even = message.get(attr::EVEN_PORT);
        let token = message.get(attr::RESERVATION_TOKEN);
        let family = message.get(attr::REQUESTED_ADDRESS_FAMILY);
        if token.is_some() && (even.is_some() || family.is_some()) {
            return self.error(from, message, &auth, 400, "Bad Request");
        }
        if let Some(family) = family {
            let ours = if self.config.relay_ip.is_ipv4() { 1 } else { 2 };
            if family.first() != Some(&ours) {
                return self.error(from, message, &auth, 440, "Address Family not Supported");
            }
        }
        if self.per_user.get(&auth.username).copied().unwrap_or(0) >= self.config.max_per_user {
            return self.error(from, message, &auth, 486, "Allocation Quota Reached");
        }
        if self.allocations.len() + self.pending.len() >= self.config.max_allocations {
            return self.error(from, message, &auth, 508, "Insufficient Capacity");
        }
        let lifetime = self.lifetime(message);
        if let Some(token) = token {
            let reserved = <[u8; 8]>::try_from(token)
                .ok()
                .and_then(|t| self.reservations.remove(&u64::from_be_bytes(t)));
            let Some((port, _)) = reserved else {
                return self.error(
                    from,
                    message,
                    &auth,
                    508,
                    "Insufficient Capacity (no such reservation)",
                );
            };
            let pending = Pending {
                auth,
                id: message.id,
                fingerprint: message.fingerprint,
                lifetime,
                even: false,
                reserve: false,
                ports: vec![(port, Some(true))],
                tries: 0,
            };
            return self.finish(from, pending, now);
        }
        let pending = Pending {
            auth,
            id: message.id,
            fingerprint: message.fingerprint,
            lifetime,
            even: even.is_some(),
            reserve: even
                .and_then(|v| v.first())
                .is_some_and(|flags| flags & 0x80 != 0),
            ports: Vec::new(),
            tries: 0,
        };
        self.bind(from, pending, now);
    }

    /// Picks the port(s) of `pending` and asks the driver to bind them.
    fn bind(&mut self, from: SocketAddr, mut pending: Pending, now: Instant) {
        pending.tries += 1;
        let Some(port) = self.free_port(pending.even, pending.reserve) else {
            debug!(client = %from, "no relay port free");
            let mut out = Writer::new(Class::Error, super::method::ALLOCATE, &pending.id);
            out.error(508, "Insufficient Capacity");
            let bytes = pending.auth.seal(out, pending.fingerprint);
            return self.refuse(from, bytes);
        };
        pending.ports = vec![(port, None)];
        if pending.reserve {
            pending.ports.push((port + 1, None));
        }
        for &(port, _) in &pending.ports {
            self.ports_used.insert(port);
            self.pending_ports.insert(port, from);
            self.outputs.push_back(Output::OpenRelay { port });
        }
        let _ = now;
        self.pending.insert(from, pending);
    }

    /// A free port of the range after the last one taken: even when
    /// `even`, with its odd neighbour free too when `pair`.
    fn free_port(&mut self, even: bool, pair: bool) -> Option<u16> {
        let (low, high) = self.config.ports;
        let span = u32::from(high - low) + 1;
        for step in 0..span {
            let offset = (self.next_port + step) % span;
            let port = low as u32 + offset;
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            if (even && port % 2 == 1) || self.ports_used.contains(&port) {
                continue;
            }
            if pair && (port == high || self.ports_used.contains(&(port + 1))) {
                continue;
            }
            self.next_port = (offset + if pair { 2 } else { 1 }) % span;
            return Some(port);
        }
        None
    }

    /// The driver bound (or could not bind) a relay port.
    pub(super) fn on_relay_opened(&mut self, port: u16, ok: bool, now: Instant) {
        let Some(from) = self.pending_ports.remove(&port) else {
            if ok {
                // Nobody waits for it any more.
                self.outputs.push_back(Output::CloseRelay { port });
            }
            return;
        };
        let Some(mut pending) = self.pending.remove(&from) else {
            return;
        };
        for slot in pending.ports.iter_mut().filter(|(p, _)| *p == port) {
            slot.1 = Some(ok);
        }
        if pending.ports.iter().any(|(_, state)| state.is_none()) {
            self.pending.insert(from, pending);
            return;
        }
        if pending.ports.iter().all(|(_, state)| *state == Some(true)) {
            return self.finish(from, pending, now);
        }
        // A port was taken by someone else: give back what was bound, try others.
        for (port, state) in std::mem::take(&mut pending.ports) {
            if state == Some(true) {
                self.release_port(port);
            } else {
                // Not bound: free again, and behind the cursor.
                self.ports_used.remove(&port);
            }
        }
        if pending.tries >= BIND_TRIES {
            let mut out = Writer::new(Class::Error, super::method::ALLOCATE, &pending.id);
            out.error(508, "Insufficient Capacity");
            let bytes = pending.auth.seal(out, pending.fingerprint);
            return self.refuse(from, bytes);
        }
        self.bind(from, pending, now);
    }

    /// The relay ports are bound: the allocation exists, and its answer goes out.
    fn finish(&mut self, from: SocketAddr, pending: Pending, now: Instant) {
        let port = pending.ports[0].0;
        let relayed = SocketAddr::new(self.config.relay_ip, port);
        let mut out = Writer::new(Class::Success, super::method::ALLOCATE, &pending.id);
        out.xor_address(attr::XOR_RELAYED_ADDRESS, relayed)
            .attribute(
                attr::LIFETIME,
                &(pending.lifetime.as_secs() as u32).to_be_bytes(),
            );
        if let Some(&(reserved, _)) = pending.ports.get(1) {
            let token = self.random();
            self.reservations
                .insert(token, (reserved, now + RESERVATION_LIFETIME));
            out.attribute(attr::RESERVATION_TOKEN, &token.to_be_bytes());
        }
        out.xor_address(attr::XOR_MAPPED_ADDRESS, from)
            .attribute(attr::SOFTWARE, crate::sip::stun::SOFTWARE.as_bytes());
        let response = pending.auth.seal(out, pending.fingerprint);
        let expires = now + pending.lifetime;
        info!(client = %from, user = %pending.auth.username, %relayed, lifetime_s = pending.lifetime.as_secs(), "TURN allocation");
        *self
            .per_user
            .entry(pending.auth.username.clone())
            .or_default() += 1;
        self.by_port.insert(port, from);
        self.expiries.insert((expires, from));
        self.allocations.insert(
            from,
            Allocation {
                port,
                username: pending.auth.username,
                key: pending.auth.key,
                expires,
                transaction: pending.id,
                response: response.clone(),
                permissions: HashMap::new(),
                channels: HashMap::new(),
                peers: HashMap::new(),
            },
        );
        self.counters.allocations = self.allocations.len();
        self.counters.allocated_total += 1;
        self.send_to_client(from, response);
    }
}
