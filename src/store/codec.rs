//! How one ring item is laid out in the database: the key is the item's
//! 20-byte ring key followed by its name, the value its version, its
//! expiry in milliseconds of Unix time, its writer (20 bytes), its
//! signature (length-prefixed), its kind and its bytes. The
//! instants of the core become wall-clock times here and back, through
//! one pair of readings (`Clock`) per commit or load.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::ring::{Item, NodeId};

/// One reading of both clocks, to turn an `Instant` into Unix time and back.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now: Instant,
    /// Milliseconds since the Unix epoch at `now`.
    pub wall_ms: u64,
}

impl Clock {
    /// Both clocks, now.
    pub fn read() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            now: Instant::now(),
            wall_ms: u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn to_wall(self, at: Instant) -> u64 {
        let ahead = at.saturating_duration_since(self.now).as_millis();
        self.wall_ms
            .saturating_add(u64::try_from(ahead).unwrap_or(u64::MAX))
    }

    /// The instant of a wall-clock time, or `None` when it has passed.
    fn to_instant(self, wall_ms: u64) -> Option<Instant> {
        let ahead = wall_ms.checked_sub(self.wall_ms).filter(|ms| *ms > 0)?;
        self.now.checked_add(Duration::from_millis(ahead))
    }
}

/// The database key of (key, name).
pub fn key_of(key: &NodeId, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + name.len());
    out.extend_from_slice(&key.0);
    out.extend_from_slice(name.as_bytes());
    out
}

/// The database value of an item.
pub fn encode(item: &Item, clock: Clock) -> Vec<u8> {
    let kind = item.kind.as_bytes();
    let kind_len = u16::try_from(kind.len()).unwrap_or(u16::MAX);
    let kind = &kind[..usize::from(kind_len)];
    let signature = item.signature.as_slice();
    let sig_len = u16::try_from(signature.len()).unwrap_or(u16::MAX);
    let signature = &signature[..usize::from(sig_len)];
    let mut out = Vec::with_capacity(40 + signature.len() + kind.len() + item.value.len());
    out.extend_from_slice(&item.version.to_be_bytes());
    out.extend_from_slice(&clock.to_wall(item.expires).to_be_bytes());
    out.extend_from_slice(&item.writer.0);
    out.extend_from_slice(&sig_len.to_be_bytes());
    out.extend_from_slice(signature);
    out.extend_from_slice(&kind_len.to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(&item.value);
    out
}

/// What a record read back is.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Live(Item),
    Expired,
    /// Not a record this version wrote (the caller drops it).
    Garbled,
}

/// The item of a database record.
pub fn decode(db_key: &[u8], value: &[u8], clock: Clock) -> Decoded {
    let Some((id, name)) = db_key.split_first_chunk::<20>() else {
        return Decoded::Garbled;
    };
    let Ok(name) = std::str::from_utf8(name) else {
        return Decoded::Garbled;
    };
    let Some((version, rest)) = value.split_first_chunk::<8>() else {
        return Decoded::Garbled;
    };
    let Some((expires, rest)) = rest.split_first_chunk::<8>() else {
        return Decoded::Garbled;
    };
    let Some((writer, rest)) = rest.split_first_chunk::<20>() else {
        return Decoded::Garbled;
    };
    let Some((sig_len, rest)) = rest.split_first_chunk::<2>() else {
        return Decoded::Garbled;
    };
    let sig_len = usize::from(u16::from_be_bytes(*sig_len));
    if rest.len() < sig_len {
        return Decoded::Garbled;
    }
    let (signature, rest) = rest.split_at(sig_len);
    let Some((kind_len, rest)) = rest.split_first_chunk::<2>() else {
        return Decoded::Garbled;
    };
    let kind_len = usize::from(u16::from_be_bytes(*kind_len));
    if rest.len() < kind_len {
        return Decoded::Garbled;
    }
    let (kind, bytes) = rest.split_at(kind_len);
    let Ok(kind) = std::str::from_utf8(kind) else {
        return Decoded::Garbled;
    };
    let Some(expires) = clock.to_instant(u64::from_be_bytes(*expires)) else {
        return Decoded::Expired;
    };
    Decoded::Live(Item {
        key: NodeId(*id),
        name: name.to_string(),
        kind: kind.to_string(),
        value: bytes.to_vec(),
        version: u64::from_be_bytes(*version),
        expires,
        writer: NodeId(*writer),
        signature: signature.to_vec(),
        proof: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(clock: Clock, ttl: u64) -> Item {
        Item {
            key: NodeId::of_key("alice@overlay.test"),
            name: "sip:alice@192.0.2.1:5060".into(),
            kind: "binding".into(),
            value: b"{\"q\":1}".to_vec(),
            version: 7,
            expires: clock.now + Duration::from_secs(ttl),
            writer: NodeId::of_key("writer"),
            // A certificate-mode seal: the signed expiry, then an ECDSA
            // signature's length of DER.
            signature: crate::ring::seal::join(1_700_000_000, &[0x30; 72]),
            proof: None,
        }
    }

    #[test]
    fn an_item_comes_back_as_it_went_in_across_clocks() {
        let before = Clock::read();
        let original = item(before, 3600);
        let key = key_of(&original.key, &original.name);
        let value = encode(&original, before);
        // Read back by a later process: its Instant is another, its wall
        // clock 10 s on.
        let later = Clock {
            now: before.now + Duration::from_secs(500),
            wall_ms: before.wall_ms + 10_000,
        };
        let Decoded::Live(back) = decode(&key, &value, later) else {
            panic!("not live");
        };
        assert_eq!(back.name, original.name);
        assert_eq!(back.kind, original.kind);
        assert_eq!(back.value, original.value);
        assert_eq!(back.version, 7);
        assert_eq!(back.writer, original.writer);
        assert_eq!(back.signature, original.signature);
        assert_eq!(
            crate::ring::seal::split(&back.signature),
            Some((1_700_000_000, &[0x30u8; 72][..]))
        );
        assert_eq!(back.expires, later.now + Duration::from_secs(3590));
    }

    #[test]
    fn an_expired_record_is_told_apart_and_garbage_is_refused() {
        let clock = Clock::read();
        let original = item(clock, 5);
        let key = key_of(&original.key, &original.name);
        let value = encode(&original, clock);
        let later = Clock {
            now: clock.now,
            wall_ms: clock.wall_ms + 6_000,
        };
        assert_eq!(decode(&key, &value, later), Decoded::Expired);
        assert_eq!(decode(&key[..10], &value, clock), Decoded::Garbled);
        assert_eq!(decode(&key, &value[..17], clock), Decoded::Garbled);
        // A signature length past the end (after version, expiry, writer).
        let mut long_signature = value.clone();
        long_signature[36] = 0xff;
        assert_eq!(decode(&key, &long_signature, clock), Decoded::Garbled);
    }
}
