//! 160-bit identifiers on the Chord circle.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use sha1::{Digest, Sha1};

/// A point on the identifier circle, big-endian: node ids and keys alike.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NodeId(pub [u8; 20]);

impl Ord for NodeId {
    /// The byte order of the big-endian number, compared as three words
    /// rather than by `memcmp`: the held items are a map keyed by id, and
    /// every store walks it several times.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let words = |id: &NodeId| {
            let b = &id.0;
            (
                u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
                u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
                u32::from_be_bytes([b[16], b[17], b[18], b[19]]),
            )
        };
        words(self).cmp(&words(other))
    }
}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Number of bits in an identifier (and of fingers in a finger table).
pub const ID_BITS: u32 = 160;

impl NodeId {
    /// SHA-1 of the text.
    pub fn hash(bytes: &[u8]) -> NodeId {
        let digest = Sha1::digest(bytes);
        let mut out = [0u8; 20];
        out.copy_from_slice(&digest);
        NodeId(out)
    }

    /// The Node-ID of a node: SHA-1 of `ip:port` as `SocketAddr` prints it
    /// (`192.0.2.1:5060`, and `[2001:db8::1]:5060` for IPv6).
    pub fn of_addr(addr: SocketAddr) -> NodeId {
        NodeId::hash(addr.to_string().as_bytes())
    }

    /// The key of a text, e.g. the address-of-record `alice@overlay.test`.
    pub fn of_key(text: &str) -> NodeId {
        NodeId::hash(text.as_bytes())
    }

    /// `self` in the half-open arc `(a, b]` going clockwise from `a`.
    /// When `a == b` the arc is the whole circle.
    pub fn in_open_closed(self, a: NodeId, b: NodeId) -> bool {
        if a == b {
            return true;
        }
        if a < b {
            a < self && self <= b
        } else {
            a < self || self <= b
        }
    }

    /// `self` in the open arc `(a, b)`. When `a == b`: every id but `a`.
    pub fn in_open(self, a: NodeId, b: NodeId) -> bool {
        if a == b {
            return self != a;
        }
        if a < b {
            a < self && self < b
        } else {
            a < self || self < b
        }
    }

    /// `self + 2^i` modulo `2^160` (`i < 160`).
    pub fn add_pow2(self, i: u32) -> NodeId {
        assert!(i < ID_BITS, "2^{i} is outside the identifier space");
        let mut out = self.0;
        let byte = 19 - (i / 8) as usize;
        let mut carry = 1u16 << (i % 8);
        let mut k = byte as isize;
        while carry != 0 && k >= 0 {
            let sum = out[k as usize] as u16 + carry;
            out[k as usize] = sum as u8;
            carry = sum >> 8;
            k -= 1;
        }
        NodeId(out)
    }

    /// Clockwise distance from `from` to `self`: `self - from` modulo `2^160`.
    pub fn distance_from(self, from: NodeId) -> NodeId {
        let mut out = [0u8; 20];
        let mut borrow = 0i16;
        for k in (0..20).rev() {
            let mut d = self.0[k] as i16 - from.0[k] as i16 - borrow;
            if d < 0 {
                d += 256;
                borrow = 1;
            } else {
                borrow = 0;
            }
            out[k] = d as u8;
        }
        NodeId(out)
    }

    /// The id as a fraction of the circle, for plots and statistics.
    pub fn as_f64(self) -> f64 {
        let mut x = 0f64;
        for b in self.0.iter().take(8) {
            x = x * 256.0 + *b as f64;
        }
        x / 2f64.powi(64)
    }

    /// The first eight hex digits, for logs.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_string()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

/// Why text is not a Node-ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a Node-ID is 40 hex digits")]
pub struct BadNodeId;

impl FromStr for NodeId {
    type Err = BadNodeId;

    fn from_str(s: &str) -> Result<NodeId, BadNodeId> {
        let s = s.trim();
        if s.len() != 40 || !s.is_ascii() {
            return Err(BadNodeId);
        }
        let mut out = [0u8; 20];
        for (k, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * k..2 * k + 2], 16).map_err(|_| BadNodeId)?;
        }
        Ok(NodeId(out))
    }
}

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NodeId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(last: u8) -> NodeId {
        let mut b = [0u8; 20];
        b[19] = last;
        NodeId(b)
    }

    #[test]
    fn ids_order_as_their_bytes_do() {
        let keys: Vec<NodeId> = (0..200).map(|i| NodeId::of_key(&format!("k{i}"))).collect();
        for a in &keys {
            for b in &keys {
                assert_eq!(a.cmp(b), a.0.cmp(&b.0), "{a} against {b}");
            }
        }
        let mut near = [0xffu8; 20];
        near[19] = 0xfe;
        assert!(NodeId(near) < NodeId([0xff; 20]));
        assert!(id(1) < id(2));
    }

    #[test]
    fn hex_round_trip_and_sha1() {
        // SHA-1("abc"), FIPS 180 test vector.
        let abc = NodeId::of_key("abc");
        assert_eq!(abc.to_string(), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(abc.to_string().parse::<NodeId>(), Ok(abc));
        assert!("xyz".parse::<NodeId>().is_err());
        assert!(
            "g9993e364706816aba3e25717850c26c9cd0d89d"
                .parse::<NodeId>()
                .is_err()
        );
        let addr: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        assert_eq!(NodeId::of_addr(addr), NodeId::of_key("192.0.2.1:5060"));
    }

    #[test]
    fn arcs_wrap_around() {
        let (a, b, c) = (id(10), id(20), id(30));
        assert!(b.in_open_closed(a, c));
        assert!(c.in_open_closed(a, c));
        assert!(!a.in_open_closed(a, c));
        assert!(!b.in_open(a, b));
        // Wrapping arc (c, a] contains 0, 5 and the top of the circle.
        assert!(id(5).in_open_closed(c, a));
        assert!(NodeId([0xff; 20]).in_open_closed(c, a));
        assert!(!b.in_open_closed(c, a));
        // (a, a] is the whole circle, (a, a) all but a.
        assert!(b.in_open_closed(a, a));
        assert!(a.in_open_closed(a, a));
        assert!(b.in_open(a, a));
        assert!(!a.in_open(a, a));
    }

    #[test]
    fn add_pow2_carries_and_wraps() {
        assert_eq!(id(1).add_pow2(0), id(2));
        assert_eq!(id(0xff).add_pow2(0).0[18], 1);
        assert_eq!(id(0xff).add_pow2(0).0[19], 0);
        let top = NodeId([0xff; 20]);
        assert_eq!(top.add_pow2(0), NodeId([0; 20]));
        let mut half = [0u8; 20];
        half[0] = 0x80;
        assert_eq!(NodeId([0; 20]).add_pow2(159), NodeId(half));
        assert_eq!(NodeId(half).add_pow2(159), NodeId([0; 20]));
        assert_eq!(id(3).add_pow2(4).distance_from(id(3)), id(16));
        let mut minus_two = [0xff; 20];
        minus_two[19] = 0xfe;
        assert_eq!(id(3).distance_from(id(5)), NodeId(minus_two));
    }
}
