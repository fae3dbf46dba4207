//! Digest authentication, server side (RFC 3261 §22, RFC 7616, RFC 8760):
//! challenges offering SHA-256 and MD5 with `qop=auth`, nonces bound to time
//! by an HMAC of the node's secret (no state per challenge; an old nonce is
//! `stale`), credentials checked against the user's HA1, and nonce counts
//! that must grow (a replayed `nc` is refused).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::users::{Algorithm, UserRecord, hex};

/// How long a nonce is good for.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// Nonces whose counts are remembered at most (beyond it the oldest go,
/// and become stale).
pub const MAX_TRACKED_NONCES: usize = 65_536;

/// The credentials a request carries (`Authorization` or `Proxy-Authorization`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub qop: Option<String>,
    pub nc: Option<u32>,
    pub cnonce: Option<String>,
}

impl Credentials {
    /// Parses a `Digest …` credentials value; `None` when it is not one we can check.
    pub fn parse(value: &str) -> Option<Credentials> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(char::is_whitespace)?;
        if !scheme.eq_ignore_ascii_case("digest") {
            return None;
        }
        let params = p2psip_bridge::digest::parse_params(rest).ok()?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let nc = match get("nc") {
            Some(nc) => Some(u32::from_str_radix(nc.trim(), 16).ok()?),
            None => None,
        };
        Some(Credentials {
            username: get("username")?,
            realm: get("realm")?,
            nonce: get("nonce")?,
            uri: get("uri")?,
            response: get("response")?.to_ascii_lowercase(),
            algorithm: Algorithm::parse(get("algorithm").as_deref())?,
            qop: get("qop").map(|q| q.to_ascii_lowercase()),
            nc,
            cnonce: get("cnonce"),
        })
    }
}

/// What a nonce is worth now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceState {
    Fresh,
    /// Ours, but too old: challenge again with `stale=true`.
    Stale,
    /// Not ours.
    Forged,
}

/// Why credentials were not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// An old nonce of ours: challenge again with `stale=true`.
    Stale,
    /// A nonce count already seen: a replay.
    Replayed,
    /// Wrong password, unknown user, forged nonce, bad form: all look the same.
    Wrong,
}

/// The node's nonces and the counts seen for them.
pub struct Nonces {
    secret: [u8; 32],
    epoch: Instant,
    /// Makes every nonce unique, also two made in one millisecond.
    serial: u32,
    /// Highest `nc` accepted per nonce.
    counts: HashMap<String, u32>,
    /// The nonces in `counts`, in the order they were first counted, with
    /// when each was made: the oldest are forgotten first.
    order: VecDeque<(Instant, String)>,
    /// Nonces made at or before this are treated as stale: their counts may
    /// have been forgotten, so a replay of them cannot pass.
    floor: Option<Instant>,
}

impl Nonces {
    pub fn new(secret: [u8; 32], epoch: Instant) -> Nonces {
        Nonces {
            secret,
            epoch,
            serial: 0,
            counts: HashMap::new(),
            order: VecDeque::new(),
            floor: None,
        }
    }

    fn mac(&self, stamp: u64, serial: u32) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => return String::new(),
        };
        mac.update(&stamp.to_be_bytes());
        mac.update(&serial.to_be_bytes());
        hex(&mac.finalize().into_bytes()[..16])
    }

    /// A new nonce: the time it was made, a serial number, and an HMAC over both.
    pub fn make(&mut self, now: Instant) -> String {
        let stamp = now.saturating_duration_since(self.epoch).as_millis() as u64;
        self.serial = self.serial.wrapping_add(1);
        format!(
            "{stamp:016x}{:08x}{}",
            self.serial,
            self.mac(stamp, self.serial)
        )
    }

    /// Whether `nonce` is ours and still fresh.
    pub fn state(&self, nonce: &str, now: Instant) -> NonceState {
        let (Some(stamp), Some(serial), Some(mac)) =
            (nonce.get(..16), nonce.get(16..24), nonce.get(24..))
        else {
            return NonceState::Forged;
        };
        let (Ok(stamp), Ok(serial)) = (
            u64::from_str_radix(stamp, 16),
            u32::from_str_radix(serial, 16),
        ) else {
            return NonceState::Forged;
        };
        if !constant_time_eq(mac.as_bytes(), self.mac(stamp, serial).as_bytes()) {
            return NonceState::Forged;
        }
        let made = self.epoch + Duration::from_millis(stamp);
        let forgotten = self.floor.is_some_and(|floor| made <= floor);
        if forgotten || made > now || now.saturating_duration_since(made) > NONCE_LIFETIME {
            return NonceState::Stale;
        }
        NonceState::Fresh
    }

    /// Checks `credentials` for `method` against `record` (`None`: an
    /// unknown user, checked against nothing so that it fails the same way).
    pub fn verify(
        &mut self,
        credentials: &Credentials,
        method: &str,
        record: Option<&UserRecord>,
        now: Instant,
    ) -> Result<(), Rejection> {
        match self.state(&credentials.nonce, now) {
            NonceState::Forged => return Err(Rejection::Wrong),
            NonceState::Stale => return Err(Rejection::Stale),
            NonceState::Fresh => {}
        }
        let expected = record.map(|r| expected_response(r, credentials, method));
        let matches = expected
            .is_some_and(|e| constant_time_eq(e.as_bytes(), credentials.response.as_bytes()));
        if !matches {
            return Err(Rejection::Wrong);
        }
        // qop=auth: the count must grow (RFC 7616 §3.4).
        if let Some(nc) = credentials.nc {
            let seen = self.counts.get(&credentials.nonce).copied();
            if seen.is_some_and(|last| nc <= last) {
                return Err(Rejection::Replayed);
            }
            if seen.is_none() {
                let made = self.made(&credentials.nonce).unwrap_or(now);
                self.order.push_back((made, credentials.nonce.clone()));
            }
            self.counts.insert(credentials.nonce.clone(), nc);
            if self.counts.len() > MAX_TRACKED_NONCES {
                self.purge(now);
            }
        }
        Ok(())
    }

    /// When a nonce of ours was made.
    fn made(&self, nonce: &str) -> Option<Instant> {
        let stamp = u64::from_str_radix(nonce.get(..16)?, 16).ok()?;
        Some(self.epoch + Duration::from_millis(stamp))
    }

    /// Forgets the counts of nonces that are stale now, and the oldest
    /// beyond [`MAX_TRACKED_NONCES`] (those become stale at once). Each
    /// nonce is forgotten once: amortised constant time per REGISTER.
    pub fn purge(&mut self, now: Instant) {
        while let Some((made, nonce)) = self.order.front() {
            let stale = now.saturating_duration_since(*made) > NONCE_LIFETIME;
            if !stale && self.counts.len() <= MAX_TRACKED_NONCES {
                break;
            }
            if !stale {
                self.floor = Some(self.floor.map_or(*made, |f| f.max(*made)));
            }
            self.counts.remove(nonce);
            self.order.pop_front();
        }
    }
}

/// Whether `credentials` answer for `method` with `record`'s password: the
/// response alone, for a node that did not make the nonce (a ring holder
/// checking that a registrar authenticated the user; `overlay/records.rs`).
pub fn proves(record: &UserRecord, credentials: &Credentials, method: &str) -> bool {
    let expected = expected_response(record, credentials, method);
    !expected.is_empty() && constant_time_eq(expected.as_bytes(), credentials.response.as_bytes())
}

/// The `response` a client with the right password computes (RFC 7616 §3.4.1).
fn expected_response(record: &UserRecord, c: &Credentials, method: &str) -> String {
    let algorithm = c.algorithm;
    let ha1 = record.ha1(algorithm);
    let ha2 = algorithm.hex(&format!("{method}:{}", c.uri));
    match (&c.qop, c.nc, &c.cnonce) {
        (Some(qop), Some(nc), Some(cnonce)) if qop == "auth" => {
            algorithm.hex(&format!("{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}", c.nonce))
        }
        (None, _, _) => algorithm.hex(&format!("{ha1}:{}:{ha2}", c.nonce)),
        // auth-int, or qop without nc/cnonce: not accepted.
        _ => String::new(),
    }
}

/// The challenge header values, one per algorithm offered, in the order
/// given (`auth_algorithms`; by default MD5, then SHA-256). RFC 8760 would
/// list the preferred one first, but many clients read only the first
/// challenge and give up on an algorithm they do not know (SIPp 3.6:
/// "authentication must use MD5"), and some refuse the whole set when one
/// of them is unknown (baresip 1.0's libre: "Function not implemented"):
/// for those, offer MD5 alone (docs/security.md).
pub fn challenges(realm: &str, nonce: &str, stale: bool, algorithms: &[Algorithm]) -> Vec<String> {
    let stale = if stale { ", stale=true" } else { "" };
    algorithms
        .iter()
        .map(|a| {
            format!(
                "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}",
                a.name()
            )
        })
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::binding::Aor;

    /// What a phone sends for `record`'s password.
    fn answer(nonce: &str, algorithm: Algorithm, nc: u32, password: &str) -> Credentials {
        let record = UserRecord::new(Aor::new("alice", "example.test"), password);
        let mut c = Credentials {
            username: "alice".into(),
            realm: "example.test".into(),
            nonce: nonce.into(),
            uri: "sip:example.test".into(),
            response: String::new(),
            algorithm,
            qop: Some("auth".into()),
            nc: Some(nc),
            cnonce: Some("0a4f113b".into()),
        };
        c.response = expected_response(&record, &c, "REGISTER");
        c
    }

    #[test]
    fn right_password_passes_once_per_count_and_nonces_go_stale() {
        let t0 = Instant::now();
        let mut nonces = Nonces::new([7; 32], t0);
        let record = UserRecord::new(Aor::new("alice", "example.test"), "secret");
        let nonce = nonces.make(t0);
        assert_ne!(nonces.make(t0), nonce, "two nonces in one instant differ");
        for algorithm in [Algorithm::Sha256, Algorithm::Md5] {
            let good = answer(
                &nonce,
                algorithm,
                if algorithm == Algorithm::Md5 { 2 } else { 1 },
                "secret",
            );
            assert_eq!(nonces.verify(&good, "REGISTER", Some(&record), t0), Ok(()));
            assert_eq!(
                nonces.verify(&good, "REGISTER", Some(&record), t0),
                Err(Rejection::Replayed)
            );
        }
        let wrong = answer(&nonce, Algorithm::Md5, 5, "guess");
        assert_eq!(
            nonces.verify(&wrong, "REGISTER", Some(&record), t0),
            Err(Rejection::Wrong)
        );
        let unknown = answer(&nonce, Algorithm::Md5, 6, "secret");
        assert_eq!(
            nonces.verify(&unknown, "REGISTER", None, t0),
            Err(Rejection::Wrong)
        );
        let late = t0 + NONCE_LIFETIME + Duration::from_secs(1);
        let old = answer(&nonce, Algorithm::Md5, 9, "secret");
        assert_eq!(
            nonces.verify(&old, "REGISTER", Some(&record), late),
            Err(Rejection::Stale)
        );
        let mut other = Nonces::new([8; 32], t0);
        let _ = other.make(t0);
        assert_eq!(other.state(&nonce, t0), NonceState::Forged);
        assert_eq!(nonces.state("zz", t0), NonceState::Forged);
    }

    #[test]
    fn beyond_the_cap_the_oldest_nonces_go_stale() {
        let t0 = Instant::now();
        let mut nonces = Nonces::new([3; 32], t0);
        let record = UserRecord::new(Aor::new("alice", "example.test"), "secret");
        let first = nonces.make(t0);
        let answer_first = answer(&first, Algorithm::Md5, 1, "secret");
        assert_eq!(
            nonces.verify(&answer_first, "REGISTER", Some(&record), t0),
            Ok(())
        );
        for i in 0..MAX_TRACKED_NONCES + 10 {
            let t = t0 + Duration::from_micros(i as u64 * 10 + 1000);
            let nonce = nonces.make(t);
            let c = answer(&nonce, Algorithm::Md5, 1, "secret");
            assert_eq!(nonces.verify(&c, "REGISTER", Some(&record), t), Ok(()));
        }
        assert!(nonces.counts.len() <= MAX_TRACKED_NONCES);
        let later = t0 + Duration::from_secs(2);
        let again = answer(&first, Algorithm::Md5, 2, "secret");
        assert_eq!(
            nonces.verify(&again, "REGISTER", Some(&record), later),
            Err(Rejection::Stale),
            "a forgotten nonce is stale, not open to replays"
        );
    }

    #[test]
    fn credentials_parse_as_phones_send_them() {
        let value = "Digest username=\"alice\", realm=\"example.test\", nonce=\"abc\", uri=\"sip:example.test\", response=\"DEAD\", algorithm=SHA-256, cnonce=\"x\", qop=auth, nc=0000000a";
        let c = Credentials::parse(value).expect("parses");
        assert_eq!(
            (c.nc, c.algorithm, c.response.as_str()),
            (Some(10), Algorithm::Sha256, "dead")
        );
        assert!(Credentials::parse("Basic YWxhZGRpbjpvcGVuc2VzYW1l").is_none());
        assert!(Credentials::parse("Digest username=\"a\", algorithm=SHA-512-256, realm=\"r\", nonce=\"n\", uri=\"u\", response=\"r\"").is_none());
    }
}
