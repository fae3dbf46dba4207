//! Shared-secret admission to the overlay (`overlay_secret`; docs/security.md
//! "Overlay admission"): every overlay message a node sends carries
//!
//! ```text
//! P2P-Auth: ts=<ms since the Unix epoch>;mac=<HMAC-SHA256 in hex>
//! ```
//!
//! over its canonical parts (see [`canonical`]), and a node with a secret
//! accepts only messages whose MAC is right, whose timestamp lies within
//! [`WINDOW`] of its own clock and whose MAC it has not seen before.
//!
//! The core reads no clock: the driver hands in the wall-clock time at one
//! instant (`wall_at`), and the wall time of any later `now` is that plus
//! the `Instant`s elapsed since. Two nodes compare wall times, never
//! `Instant`s.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use ezk_sip_types::Headers;
use ezk_sip_types::Name;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::sip::message::{Request, Response};

type HmacSha256 = Hmac<Sha256>;

/// The header that carries the timestamp and the MAC.
pub const HEADER: &str = "P2P-Auth";
/// How far a message's timestamp may lie from our clock, either way.
pub const WINDOW: Duration = Duration::from_secs(30);
/// The shortest secret accepted, in bytes (after trimming).
pub const MIN_SECRET: usize = 16;
/// MACs remembered at most; beyond it the oldest are forgotten (only
/// messages with a valid MAC are remembered, so only members fill it).
pub const MAX_SEEN: usize = 262_144;
/// Refusals are logged at most once per this period.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no P2P-Auth header")]
    Missing,
    #[error("malformed P2P-Auth header")]
    Malformed,
    #[error("timestamp outside the window")]
    Stale,
    #[error("wrong MAC")]
    BadMac,
    #[error("replayed")]
    Replayed,
}

/// A secret that is too short, or the file that holds it.
pub fn read_secret(text: &[u8]) -> Result<Vec<u8>, String> {
    let secret = text.trim_ascii();
    if secret.len() < MIN_SECRET {
        return Err(format!(
            "the secret is {} bytes, fewer than {MIN_SECRET} (make one with `head -c 32 /dev/urandom | base64`)",
            secret.len()
        ));
    }
    Ok(secret.to_vec())
}

/// The secret, the clock, and the MACs seen within the window.
pub struct Admission {
    secret: Vec<u8>,
    /// Wall time (ms since the Unix epoch) at `now0`.
    wall0_ms: u64,
    now0: Instant,
    seen: HashSet<u128>,
    /// MACs in the order they arrived, with our wall time then.
    order: VecDeque<(u64, u128)>,
    /// Refusals not yet logged, and when we last logged.
    unlogged: u64,
    last_log: Option<Instant>,
}

impl Admission {
    /// `wall_at` is the wall-clock time (since the Unix epoch) at `now`.
    pub fn new(secret: Vec<u8>, wall_at: Duration, now: Instant) -> Admission {
        Admission {
            secret,
            wall0_ms: wall_at.as_millis() as u64,
            now0: now,
            seen: HashSet::new(),
            order: VecDeque::new(),
            unlogged: 0,
            last_log: None,
        }
    }

    /// Our wall time at `now`, in ms since the Unix epoch.
    pub fn wall_ms(&self, now: Instant) -> u64 {
        self.wall0_ms + now.saturating_duration_since(self.now0).as_millis() as u64
    }

    fn mac(&self, canonical: &[u8]) -> HmacSha256 {
        // HMAC takes a key of any length.
        let mut mac = match HmacSha256::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        mac.update(canonical);
        mac
    }

    fn sign_headers(&self, start: &str, headers: &mut Headers, body: &[u8], now: Instant) {
        let name = Name::from(HEADER);
        headers.remove(&name);
        let ts = self.wall_ms(now);
        let tag = self
            .mac(&canonical(start, headers, body, ts))
            .finalize()
            .into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        headers.insert(name, format!("ts={ts};mac={hex}"));
    }

    /// Adds our `P2P-Auth` to a complete request (after Call-ID, CSeq, From tag).
    pub fn sign_request(&self, request: &mut Request, now: Instant) {
        let start = request_start(request);
        self.sign_headers(&start, &mut request.headers, &request.body, now);
    }

    /// Adds our `P2P-Auth` to a response.
    pub fn sign_response(&self, response: &mut Response, now: Instant) {
        let start = response_start(response);
        self.sign_headers(&start, &mut response.headers, &response.body, now);
    }

    pub fn check_request(&mut self, request: &Request, now: Instant) -> Result<(), Refused> {
        let start = request_start(request);
        self.check(&start, &request.headers, &request.body, now)
    }

    pub fn check_response(&mut self, response: &Response, now: Instant) -> Result<(), Refused> {
        let start = response_start(response);
        self.check(&start, &response.headers, &response.body, now)
    }

    fn check(
        &mut self,
        start: &str,
        headers: &Headers,
        body: &[u8],
        now: Instant,
    ) -> Result<(), Refused> {
        let value = headers
            .get_raw(&Name::from(HEADER))
            .next()
            .ok_or(Refused::Missing)?;
        let (ts, tag) = parse_header(value).ok_or(Refused::Malformed)?;
        let mine = self.wall_ms(now);
        if ts.abs_diff(mine) > WINDOW.as_millis() as u64 {
            return Err(Refused::Stale);
        }
        self.mac(&canonical(start, headers, body, ts))
            .verify_slice(&tag)
            .map_err(|_| Refused::BadMac)?;
        let mut first = [0u8; 16];
        first.copy_from_slice(&tag[..16]);
        let id = u128::from_be_bytes(first);
        self.forget(mine);
        if !self.seen.insert(id) {
            return Err(Refused::Replayed);
        }
        self.order.push_back((mine, id));
        Ok(())
    }

    /// Drops MACs that can no longer pass the window, and the oldest beyond
    /// [`MAX_SEEN`].
    fn forget(&mut self, mine: u64) {
        let horizon = 2 * WINDOW.as_millis() as u64;
        while let Some(&(at, id)) = self.order.front() {
            if at + horizon >= mine && self.order.len() < MAX_SEEN {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&id);
        }
    }

    /// Counts a refusal; returns how many to log now (at most once per
    /// [`LOG_EVERY`]), or `None` to stay quiet.
    pub fn note_refusal(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        let due = self
            .last_log
            .is_none_or(|at| now.saturating_duration_since(at) >= LOG_EVERY);
        if !due {
            return None;
        }
        self.last_log = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

fn request_start(request: &Request) -> String {
    format!("{} {}", request.method, request.uri)
}

fn response_start(response: &Response) -> String {
    format!("{} {}", response.status, response.reason.trim())
}

/// `ts=<ms>;mac=<64 hex>`.
fn parse_header(value: &str) -> Option<(u64, Vec<u8>)> {
    let mut ts = None;
    let mut mac = None;
    for part in value.split(';').map(str::trim) {
        match part.split_once('=') {
            Some(("ts", v)) => ts = v.parse::<u64>().ok(),
            Some(("mac", v)) => mac = hex32(v),
            _ => {}
        }
    }
    Some((ts?, mac?))
}

fn hex32(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What the MAC covers, one item a line: a version tag, the start line
/// (method and Request-URI, or status and reason), `P2P-Overlay`, From, To,
/// Call-ID, CSeq and every Contact (in order), every other `P2P-` header
/// but `P2P-Auth` (sorted by name, values in order), the timestamp, and
/// the body with its length. Via and Max-Forwards change hop by hop and
/// are not covered.
pub fn canonical(start: &str, headers: &Headers, body: &[u8], ts: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 + body.len());
    out.extend_from_slice(b"p2psip-auth-1\n");
    out.extend_from_slice(start.trim().as_bytes());
    out.push(b'\n');
    let fixed = [
        Name::from(super::wire::OVERLAY),
        Name::FROM,
        Name::TO,
        Name::CALL_ID,
        Name::CSEQ,
        Name::CONTACT,
    ];
    for name in &fixed {
        for value in headers.get_raw(name) {
            line(&mut out, &name.as_print_str().to_ascii_lowercase(), value);
        }
    }
    let mut others: Vec<(String, &str)> = headers
        .iter()
        .map(|(name, value)| (name.as_print_str().to_ascii_lowercase(), value.as_str()))
        .filter(|(name, _)| name.starts_with("p2p-") && name != "p2p-auth" && name != "p2p-overlay")
        .collect();
    others.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in others {
        line(&mut out, &name, value);
    }
    out.extend_from_slice(format!("ts:{ts}\nbody:{}\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

fn line(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    out.extend_from_slice(value.trim().as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::wire;
    use crate::ring::{Item, NodeId, Peer, RingRequest, RingResponse};
    use crate::sip::message::Message;
    use std::net::SocketAddr;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const EPOCH: Duration = Duration::from_secs(1_700_000_000);

    fn peer(port: u16) -> Peer {
        Peer::of_addr(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn store(now: Instant) -> Request {
        let item = Item {
            key: NodeId::of_key("alice@example.test"),
            name: "alice@example.test".into(),
            kind: "credential".into(),
            value: vec![1, 2, 3],
            version: 1,
            expires: now + Duration::from_secs(60),
            writer: Default::default(),
            signature: Vec::new(),
            proof: None,
        };
        let request = RingRequest::Store {
            items: vec![item],
            replica: false,
        };
        let to = "127.0.0.1:5070".parse().expect("addr");
        let mut sip = wire::encode_request(&request, &peer(5060), to, now);
        sip.headers
            .insert(Name::VIA, "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx");
        sip.headers.insert(Name::CALL_ID, "c@127.0.0.1:5060");
        sip.headers.insert(Name::CSEQ, "7 REGISTER");
        sip
    }

    /// Prints and parses: what the peer reads.
    fn wire_request(request: &Request) -> Request {
        match Message::parse(request.to_bytes()) {
            Ok(Message::Request(back)) => back,
            _ => panic!("does not parse"),
        }
    }

    fn wire_response(response: &Response) -> Response {
        match Message::parse(response.to_bytes()) {
            Ok(Message::Response(back)) => back,
            _ => panic!("does not parse"),
        }
    }

    fn pair(now: Instant) -> (Admission, Admission) {
        // The two nodes' Instants differ; their wall clocks agree.
        let a = Admission::new(SECRET.to_vec(), EPOCH, now);
        let b = Admission::new(
            SECRET.to_vec(),
            EPOCH + Duration::from_secs(5),
            now + Duration::from_secs(5),
        );
        (a, b)
    }

    #[test]
    fn a_signed_request_and_response_pass_once() {
        let now = Instant::now();
        let (a, mut b) = pair(now);
        let mut request = store(now);
        a.sign_request(&mut request, now);
        let got = wire_request(&request);
        assert_eq!(b.check_request(&got, now + Duration::from_secs(1)), Ok(()));
        assert_eq!(
            b.check_request(&got, now + Duration::from_secs(2)),
            Err(Refused::Replayed)
        );
        let mut response = wire::encode_response(&got, &RingResponse::Stored, now);
        b.sign_response(&mut response, now);
        let mut a = a;
        assert_eq!(a.check_response(&wire_response(&response), now), Ok(()));
        let mut refused = got.response(403);
        refused.reason = "Forbidden (not an overlay member)".into();
        b.sign_response(&mut refused, now);
        assert_eq!(a.check_response(&wire_response(&refused), now), Ok(()));
    }

    #[test]
    fn missing_wrong_stale_and_changed_are_refused() {
        let now = Instant::now();
        let (a, mut b) = pair(now);
        let plain = store(now);
        assert_eq!(
            b.check_request(&wire_request(&plain), now),
            Err(Refused::Missing)
        );

        let wrong = Admission::new(b"another secret, long enough".to_vec(), EPOCH, now);
        let mut forged = store(now);
        wrong.sign_request(&mut forged, now);
        assert_eq!(
            b.check_request(&wire_request(&forged), now),
            Err(Refused::BadMac)
        );

        let mut old = store(now);
        a.sign_request(&mut old, now);
        let late = now + WINDOW + Duration::from_secs(1);
        assert_eq!(
            b.check_request(&wire_request(&old), late),
            Err(Refused::Stale)
        );

        // Each covered part, changed after signing.
        let mut signed = store(now);
        a.sign_request(&mut signed, now);
        type Edit = Box<dyn Fn(&mut Request)>;
        let edits: Vec<Edit> = vec![
            Box::new(|r| r.body = bytes::Bytes::from_static(b"{\"items\":[]}")),
            Box::new(|r| {
                r.headers.remove(&Name::from(wire::OVERLAY));
                r.headers
                    .insert(Name::from(wire::OVERLAY), "chord;op=store;replica");
            }),
            Box::new(|r| {
                r.headers.remove(&Name::CSEQ);
                r.headers.insert(Name::CSEQ, "8 REGISTER");
            }),
            Box::new(|r| {
                r.headers
                    .insert(Name::CONTACT, "<sip:x@127.0.0.1:9>;successor")
            }),
            Box::new(|r| r.headers.insert(Name::from(wire::HOPS), "1")),
            Box::new(|r| r.method = ezk_sip_types::Method::OPTIONS),
        ];
        for edit in edits {
            let mut changed = wire_request(&signed);
            edit(&mut changed);
            assert_eq!(
                b.check_request(&wire_request(&changed), now),
                Err(Refused::BadMac)
            );
        }
        // Via is not covered: a hop may add received/rport.
        let mut via = wire_request(&signed);
        via.headers.remove(&Name::VIA);
        via.headers.insert(
            Name::VIA,
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx;received=127.0.0.1",
        );
        assert_eq!(b.check_request(&wire_request(&via), now), Ok(()));

        for bad in ["ts=1", "mac=00", "ts=x;mac=zz", "ts=1;mac=abc"] {
            let mut r = wire_request(&plain);
            r.headers.insert(Name::from(HEADER), bad);
            assert_eq!(b.check_request(&r, now), Err(Refused::Malformed), "{bad}");
        }
    }

    #[test]
    fn seen_macs_are_bounded_and_expire() {
        let now = Instant::now();
        let (a, mut b) = pair(now);
        for i in 0..50u32 {
            let mut r = store(now);
            r.headers.remove(&Name::CSEQ);
            r.headers.insert(Name::CSEQ, format!("{i} REGISTER"));
            a.sign_request(&mut r, now);
            assert_eq!(b.check_request(&r, now), Ok(()));
        }
        assert_eq!(b.seen.len(), 50);
        let later = now + 3 * WINDOW;
        let mut r = store(later);
        a.sign_request(&mut r, later);
        assert_eq!(b.check_request(&r, later), Ok(()));
        assert_eq!(b.seen.len(), 1, "the old MACs are forgotten");
    }

    #[test]
    fn secrets_are_trimmed_and_long_enough() {
        assert_eq!(
            read_secret(b"  0123456789abcdef\n"),
            Ok(b"0123456789abcdef".to_vec())
        );
        assert!(read_secret(b"short\n").is_err());
        assert!(read_secret(b"").is_err());
    }

    #[test]
    fn refusals_are_logged_once_per_period() {
        let now = Instant::now();
        let (_, mut b) = pair(now);
        assert_eq!(b.note_refusal(now), Some(1));
        assert_eq!(b.note_refusal(now + Duration::from_secs(1)), None);
        assert_eq!(b.note_refusal(now + Duration::from_secs(2)), None);
        assert_eq!(b.note_refusal(now + LOG_EVERY), Some(3));
    }
}
