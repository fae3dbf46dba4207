//! The TURN server's nonces and keys. A nonce is stateless: the second it
//! expires (counted from the server's start) and an HMAC of it under the
//! server's secret, so any nonce the server made can be checked without a
//! table, and a stale one told from a forged one (both get 438, RFC 8489
//! §9.2.4). The key of a user is her digest HA1 (RFC 8489 §9.2.2), from the
//! same credential records SIP digest uses.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::auth::users::UserRecord;

/// A user's long-term credential keys: MD5(user:realm:password) and its
/// SHA-256 counterpart (RFC 8489 §18.5.1's two password algorithms).
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    pub md5: [u8; 16],
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// The keys of a credential record (its HA1s, hex-decoded).
    pub fn of(record: &UserRecord) -> Option<Key> {
        Some(Key {
            md5: unhex(&record.md5)?,
            sha256: unhex(&record.sha256)?,
        })
    }
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Makes and checks nonces.
pub struct Nonces {
    secret: [u8; 32],
    epoch: Instant,
    lifetime: Duration,
}

/// Why a nonce is not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stale {
    Expired,
    Forged,
}

impl Nonces {
    pub fn new(secret: [u8; 32], epoch: Instant, lifetime: Duration) -> Nonces {
        Nonces {
            secret,
            epoch,
            lifetime,
        }
    }

    /// A nonce valid for the lifetime from `now`.
    pub fn make(&self, now: Instant) -> String {
        let expires = (now.saturating_duration_since(self.epoch) + self.lifetime).as_secs();
        format!("{expires:016x}{}", self.mac(expires))
    }

    /// Whether `nonce` is one of ours and still valid at `now`.
    pub fn check(&self, nonce: &str, now: Instant) -> Result<(), Stale> {
        if nonce.len() != 32 || !nonce.is_ascii() {
            return Err(Stale::Forged);
        }
        let (expires, mac) = nonce.split_at(16);
        let expires = u64::from_str_radix(expires, 16).map_err(|_| Stale::Forged)?;
        let expected = self.mac(expires);
        let same = expected
            .bytes()
            .zip(mac.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if !same {
            return Err(Stale::Forged);
        }
        if now.saturating_duration_since(self.epoch).as_secs() >= expires {
            return Err(Stale::Expired);
        }
        Ok(())
    }

    fn mac(&self, expires: u64) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            return String::new();
        };
        mac.update(b"turn-nonce");
        mac.update(&expires.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        tag[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::binding::Aor;

    #[test]
    fn nonces_expire_and_forgeries_are_told() {
        let start = Instant::now();
        let nonces = Nonces::new([9; 32], start, Duration::from_secs(600));
        let nonce = nonces.make(start);
        assert_eq!(nonce.len(), 32);
        assert_eq!(
            nonces.check(&nonce, start + Duration::from_secs(599)),
            Ok(())
        );
        assert_eq!(
            nonces.check(&nonce, start + Duration::from_secs(600)),
            Err(Stale::Expired)
        );
        let other = Nonces::new([8; 32], start, Duration::from_secs(600));
        assert_eq!(other.check(&nonce, start), Err(Stale::Forged));
        assert_eq!(nonces.check("short", start), Err(Stale::Forged));
        assert_eq!(nonces.check(&"é".repeat(16), start), Err(Stale::Forged));
    }

    #[test]
    fn the_key_is_the_users_ha1() {
        let record = UserRecord::new(Aor::new("alice", "example.test"), "secret");
        let key = Key::of(&record).expect("hex");
        assert_eq!(
            key.md5,
            crate::sip::stun::message::long_term_key("alice", "example.test", "secret")
        );
    }
}
