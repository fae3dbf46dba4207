//! What an allocation does once it exists (RFC 8656 §8–§12): Refresh,
//! CreatePermission and ChannelBind requests; Send indications and
//! ChannelData from the client out of the relay port; datagrams from peers
//! back to the client, as ChannelData on a bound channel or else as a Data
//! indication, and only from peers with a permission.

use std::net::SocketAddr;
use std::time::Instant;

use tracing::debug;

use super::{Auth, CHANNEL_LIFETIME, Output, PERMISSION_LIFETIME, Server, channel};
use crate::sip::stun::message::{Message, Writer, method};
use crate::sip::stun::{Class, MAGIC_COOKIE, attr};

/// The largest datagram relayed (a Data indication adds 36 bytes; UDP ends at 65,507).
const MAX_DATA: usize = 65_000;

impl Server {
    /// The allocation of `from` for a request, checked to be the same user's.
    fn allocation_for(&mut self, from: SocketAddr, message: &Message<'_>, auth: &Auth) -> bool {
        match self.allocations.get(&from) {
            None => {
                self.error(from, message, auth, 437, "Allocation Mismatch");
                false
            }
            Some(a) if a.username != auth.username => {
                self.error(from, message, auth, 441, "Wrong Credentials");
                false
            }
            Some(_) => true,
        }
    }

    pub(super) fn refresh(
        &mut self,
        from: SocketAddr,
        message: &Message<'_>,
        auth: Auth,
        now: Instant,
    ) {
        if !self.allocation_for(from, message, &auth) {
            return;
        }
        let zero = message.get(attr::LIFETIME) == Some(&[0, 0, 0, 0][..]);
        let lifetime = if zero {
            debug!(client = %from, "TURN allocation ended by its client");
            self.remove_allocation(from);
            0
        } else {
            let lifetime = self.lifetime(message);
            if let Some(allocation) = self.allocations.get_mut(&from) {
                self.expiries.remove(&(allocation.expires, from));
                allocation.expires = now + lifetime;
                self.expiries.insert((allocation.expires, from));
            }
            lifetime.as_secs() as u32
        };
        let mut out = Writer::answer(message, Class::Success);
        out.attribute(attr::LIFETIME, &lifetime.to_be_bytes());
        let bytes = auth.seal(out, message.fingerprint);
        self.send_to_client(from, bytes);
    }

    pub(super) fn create_permission(
        &mut self,
        from: SocketAddr,
        message: &Message<'_>,
        auth: Auth,
        now: Instant,
    ) {
        if !self.allocation_for(from, message, &auth) {
            return;
        }
        let peers: Vec<Option<SocketAddr>> = message
            .all(attr::XOR_PEER_ADDRESS)
            .map(|v| crate::sip::stun::read_address(v, Some(&message.id)))
            .collect();
        if peers.is_empty() || peers.iter().any(Option::is_none) {
            return self.error(from, message, &auth, 400, "Bad Request (XOR-PEER-ADDRESS)");
        }
        let peers: Vec<SocketAddr> = peers.into_iter().flatten().collect();
        if peers
            .iter()
            .any(|p| p.is_ipv4() != self.config.relay_ip.is_ipv4())
        {
            return self.error(from, message, &auth, 443, "Peer Address Family Mismatch");
        }
        let max = self.config.max_permissions;
        let Some(allocation) = self.allocations.get_mut(&from) else {
            return;
        };
        allocation.sweep(now);
        let new = peers
            .iter()
            .filter(|p| !allocation.permissions.contains_key(&p.ip()))
            .count();
        if allocation.permissions.len() + new > max {
            return self.error(
                from,
                message,
                &auth,
                508,
                "Insufficient Capacity (permissions)",
            );
        }
        for peer in peers {
            allocation
                .permissions
                .insert(peer.ip(), now + PERMISSION_LIFETIME);
        }
        let out = Writer::answer(message, Class::Success);
        let bytes = auth.seal(out, message.fingerprint);
        self.send_to_client(from, bytes);
    }

    pub(super) fn channel_bind(
        &mut self,
        from: SocketAddr,
        message: &Message<'_>,
        auth: Auth,
        now: Instant,
    ) {
        if !self.allocation_for(from, message, &auth) {
            return;
        }
        let number = message
            .get(attr::CHANNEL_NUMBER)
            .filter(|v| v.len() == 4)
            .map(|v| u16::from_be_bytes([v[0], v[1]]))
            .filter(|n| channel::CHANNELS.contains(n));
        let peer = message.xor_address(attr::XOR_PEER_ADDRESS);
        let (Some(number), Some(peer)) = (number, peer) else {
            debug!(number = ?message.get(attr::CHANNEL_NUMBER), peer = ?peer, "ChannelBind without a usable channel or peer");
            return self.error(
                from,
                message,
                &auth,
                400,
                "Bad Request (CHANNEL-NUMBER, XOR-PEER-ADDRESS)",
            );
        };
        if peer.is_ipv4() != self.config.relay_ip.is_ipv4() {
            return self.error(from, message, &auth, 443, "Peer Address Family Mismatch");
        }
        let (max_channels, max_permissions) =
            (self.config.max_channels, self.config.max_permissions);
        let Some(allocation) = self.allocations.get_mut(&from) else {
            return;
        };
        allocation.sweep(now);
        let bound_elsewhere = allocation
            .channels
            .get(&number)
            .is_some_and(|(p, _)| *p != peer)
            || allocation.peers.get(&peer).is_some_and(|n| *n != number);
        if bound_elsewhere {
            return self.error(from, message, &auth, 400, "Bad Request (bound otherwise)");
        }
        let full = (!allocation.channels.contains_key(&number)
            && allocation.channels.len() >= max_channels)
            || (!allocation.permissions.contains_key(&peer.ip())
                && allocation.permissions.len() >= max_permissions);
        if full {
            return self.error(
                from,
                message,
                &auth,
                508,
                "Insufficient Capacity (channels)",
            );
        }
        allocation
            .channels
            .insert(number, (peer, now + CHANNEL_LIFETIME));
        allocation.peers.insert(peer, number);
        allocation
            .permissions
            .insert(peer.ip(), now + PERMISSION_LIFETIME);
        let out = Writer::answer(message, Class::Success);
        let bytes = auth.seal(out, message.fingerprint);
        self.send_to_client(from, bytes);
    }

    /// A Send indication: its DATA to its XOR-PEER-ADDRESS, if permitted.
    pub(super) fn send_indication(
        &mut self,
        from: SocketAddr,
        message: &Message<'_>,
        now: Instant,
    ) {
        let Some(allocation) = self.allocations.get(&from) else {
            return;
        };
        let (Some(peer), Some(data)) = (
            message.xor_address(attr::XOR_PEER_ADDRESS),
            message.get(attr::DATA),
        ) else {
            return;
        };
        if !allocation.permitted(peer.ip(), now) {
            return;
        }
        let port = allocation.port;
        self.counters.relayed_to_peers += 1;
        self.outputs.push_back(Output::ToPeer {
            port,
            to: peer,
            bytes: data.to_vec(),
        });
    }

    /// ChannelData from the client: to the channel's peer.
    pub(super) fn channel_data(
        &mut self,
        from: SocketAddr,
        number: u16,
        data: &[u8],
        now: Instant,
    ) {
        let Some(allocation) = self.allocations.get(&from) else {
            return;
        };
        let Some(peer) = allocation.channel_peer(number, now) else {
            return;
        };
        if !allocation.permitted(peer.ip(), now) {
            return;
        }
        let port = allocation.port;
        self.counters.relayed_to_peers += 1;
        self.outputs.push_back(Output::ToPeer {
            port,
            to: peer,
            bytes: data.to_vec(),
        });
    }

    /// A datagram from a peer on a relay port: to the client, if permitted.
    pub(super) fn on_peer_data(&mut self, port: u16, from: SocketAddr, data: &[u8], now: Instant) {
        let Some(client) = self.by_port.get(&port).copied() else {
            return;
        };
        let Some(allocation) = self.allocations.get(&client) else {
            return;
        };
        if data.len() > MAX_DATA || !allocation.permitted(from.ip(), now) {
            return;
        }
        let bytes = match allocation.channel_of(from, now) {
            Some(number) => match channel::frame(number, data) {
                Some(bytes) => bytes,
                None => return,
            },
            None => {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                let random = self.random().to_be_bytes();
                id[4..12].copy_from_slice(&random);
                id[12..].copy_from_slice(&random[..4]);
                let mut out = Writer::new(Class::Indication, method::DATA, &id);
                out.xor_address(attr::XOR_PEER_ADDRESS, from)
                    .attribute(attr::DATA, data);
                out.finish(None, false)
            }
        };
        self.counters.relayed_to_clients += 1;
        self.send_to_client(client, bytes);
    }
}
