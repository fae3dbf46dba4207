//! One allocation (RFC 8656 §2.2): the client's relay port, its user and
//! key, its lifetime, the permissions (peer IPs, 300 s each) and the
//! channel bindings (channel ↔ peer address, 600 s each). Expiry is read
//! against the time given; [`Allocation::sweep`] forgets what lapsed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::Key;

pub(super) struct Allocation {
    pub port: u16,
    pub username: String,
    pub key: Key,
    pub expires: Instant,
    /// The Allocate that made it, and the answer it got (for retransmissions).
    pub transaction: [u8; 16],
    pub response: Vec<u8>,
    pub permissions: HashMap<IpAddr, Instant>,
    pub channels: HashMap<u16, (SocketAddr, Instant)>,
    pub peers: HashMap<SocketAddr, u16>,
}

impl Allocation {
    pub fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|until| *until > now)
    }

    /// The peer of a live channel.
    pub fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&number)
            .filter(|(_, until)| *until > now)
            .map(|(peer, _)| *peer)
    }

    /// The live channel bound to `peer`.
    pub fn channel_of(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let number = *self.peers.get(&peer)?;
        self.channel_peer(number, now).map(|_| number)
    }

    /// Forgets lapsed permissions and channels.
    pub fn sweep(&mut self, now: Instant) {
        self.permissions.retain(|_, until| *until > now);
        self.channels.retain(|_, (_, until)| *until > now);
        let channels = &self.channels;
        self.peers.retain(|_, number| channels.contains_key(number));
    }
}
