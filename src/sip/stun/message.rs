//! STUN messages with all their attributes, for TURN (RFC 8656) and the
//! long-term credential mechanism (RFC 8489 §9.2): a reader that keeps
//! every attribute up to MESSAGE-INTEGRITY, checks the integrity with a
//! key, and a writer that appends MESSAGE-INTEGRITY (HMAC-SHA1),
//! MESSAGE-INTEGRITY-SHA256 and FINGERPRINT. The Binding answers of the SIP
//! ports stay in [`super::answer`]; this is the general form.
//!
//! Bytes are hostile: lengths are checked as in [`super::parse`], at most
//! [`MAX_ATTRIBUTES`] attributes are read, and a value is only ever a slice
//! of the datagram.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;

use super::{Class, FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE, Malformed, attr, crc32};

/// Attributes read from one message at most (a TURN request has a handful).
pub const MAX_ATTRIBUTES: usize = 64;

/// TURN methods (RFC 8656 §17).
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Which MESSAGE-INTEGRITY a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Integrity {
    /// HMAC-SHA1 (RFC 5389, RFC 8489 §14.5).
    Sha1,
    /// HMAC-SHA256 (RFC 8489 §14.6).
    Sha256,
}

/// A STUN message (RFC 5389/8489: with the magic cookie) read from the wire.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    pub class: Class,
    pub method: u16,
    /// Bytes 4..20: the cookie and the transaction ID.
    pub id: [u8; 16],
    /// The attributes before MESSAGE-INTEGRITY, in order.
    pub attributes: Vec<(u16, &'a [u8])>,
    /// The message ended with a FINGERPRINT, which matched.
    pub fingerprint: bool,
    /// Where MESSAGE-INTEGRITY and MESSAGE-INTEGRITY-SHA256 start, and their values.
    sha1: Option<(usize, &'a [u8])>,
    sha256: Option<(usize, &'a [u8])>,
    bytes: &'a [u8],
}

impl<'a> Message<'a> {
    /// Reads one whole message; it must carry the magic cookie.
    pub fn parse(bytes: &'a [u8]) -> Result<Message<'a>, Malformed> {
        let (class, method, id) = super::header(bytes)?;
        if u32::from_be_bytes([id[0], id[1], id[2], id[3]]) != MAGIC_COOKIE {
            return Err(Malformed::NoCookie);
        }
        let mut message = Message {
            class,
            method,
            id,
            attributes: Vec::new(),
            fingerprint: false,
            sha1: None,
            sha256: None,
            bytes,
        };
        let mut at = HEADER_LEN;
        let mut count = 0;
        while at < bytes.len() {
            count += 1;
            if message.fingerprint || at + 4 > bytes.len() || count > MAX_ATTRIBUTES {
                return Err(Malformed::Attribute);
            }
            let kind = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
            let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
            let start = at + 4;
            let padded = (len + 3) & !3;
            if start + padded > bytes.len() {
                return Err(Malformed::Attribute);
            }
            let value = &bytes[start..start + len];
            let sealed = message.sha1.is_some() || message.sha256.is_some();
            match kind {
                attr::FINGERPRINT => {
                    let Ok(value) = <[u8; 4]>::try_from(value) else {
                        return Err(Malformed::Fingerprint);
                    };
                    if crc32(&bytes[..at]) ^ FINGERPRINT_XOR != u32::from_be_bytes(value) {
                        return Err(Malformed::Fingerprint);
                    }
                    message.fingerprint = true;
                }
                attr::MESSAGE_INTEGRITY if !sealed && len == 20 => {
                    message.sha1 = Some((at, value));
                }
                attr::MESSAGE_INTEGRITY_SHA256 if message.sha256.is_none() && len == 32 => {
                    message.sha256 = Some((at, value));
                }
                attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 if !sealed => {
                    return Err(Malformed::Attribute);
                }
                _ if sealed => {}
                _ => message.attributes.push((kind, value)),
            }
            at = start + padded;
        }
        Ok(message)
    }

    /// The first value of attribute `kind`.
    pub fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| *v)
    }

    /// Every value of attribute `kind` (XOR-PEER-ADDRESS may repeat).
    pub fn all(&self, kind: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.attributes
            .iter()
            .filter(move |(k, _)| *k == kind)
            .map(|(_, v)| *v)
    }

    /// A text attribute (USERNAME, REALM, NONCE) as UTF-8.
    pub fn text(&self, kind: u16) -> Option<&'a str> {
        std::str::from_utf8(self.get(kind)?).ok()
    }

    /// An XOR-…-ADDRESS attribute (RFC 8489 §14.2).
    pub fn xor_address(&self, kind: u16) -> Option<SocketAddr> {
        super::read_address(self.get(kind)?, Some(&self.id))
    }

    /// Comprehension-required attributes (below 0x8000) not in `known`.
    pub fn unknown(&self, known: &[u16]) -> Vec<u16> {
        let mut unknown: Vec<u16> = self
            .attributes
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| *k < 0x8000 && !known.contains(k))
            .collect();
        unknown.dedup();
        unknown
    }

    /// Which integrity the message carries (SHA-256 first, RFC 8489 §9.2.4).
    pub fn integrity(&self) -> Option<Integrity> {
        match (self.sha256, self.sha1) {
            (Some(_), _) => Some(Integrity::Sha256),
            (None, Some(_)) => Some(Integrity::Sha1),
            (None, None) => None,
        }
    }

    /// True when the message's MESSAGE-INTEGRITY (the SHA-256 one if there
    /// is one) is the HMAC under `key`.
    pub fn check_integrity(&self, key: &[u8]) -> bool {
        let (at, value, size) = match (self.sha256, self.sha1) {
            (Some((at, value)), _) => (at, value, 32),
            (None, Some((at, value))) => (at, value, 20),
            (None, None) => return false,
        };
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.bytes[..HEADER_LEN]);
        let length = (at + 4 + size - HEADER_LEN) as u16;
        header[2..4].copy_from_slice(&length.to_be_bytes());
        let body = &self.bytes[HEADER_LEN..at];
        let expected = if size == 32 {
            hmac_sha256(key, &[&header, body]).to_vec()
        } else {
            hmac_sha1(key, &[&header, body]).to_vec()
        };
        constant_time_eq(&expected, value)
    }
}

/// The long-term credential key (RFC 8489 §9.2.2, MD5): the digest HA1
/// MD5(username ":" realm ":" password) as bytes.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    Md5::digest(format!("{username}:{realm}:{password}").as_bytes()).into()
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
        return [0; 20];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A message being written: header, attributes (padded to 4 bytes), then
/// the integrity and the fingerprint asked for.
pub struct Writer(Vec<u8>);

impl Writer {
    /// A message of `class` and `method` with transaction `id` (cookie included).
    pub fn new(class: Class, method: u16, id: &[u8; 16]) -> Writer {
        let c = match class {
            Class::Request => 0,
            Class::Indication => 1,
            Class::Success => 2,
            Class::Error => 3,
        };
        let m = method & 0x0FFF;
        let kind = (m & 0x000F)
            | ((m & 0x0070) << 1)
            | ((m & 0x0F80) << 2)
            | ((c & 1) << 4)
            | ((c & 2) << 7);
        let mut bytes = Vec::with_capacity(160);
        bytes.extend_from_slice(&kind.to_be_bytes());
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(id);
        Writer(bytes)
    }

    /// The answer to `request`, of `class`.
    pub fn answer(request: &Message<'_>, class: Class) -> Writer {
        Writer::new(class, request.method, &request.id)
    }

    pub fn attribute(&mut self, kind: u16, value: &[u8]) -> &mut Writer {
        let len = value.len().min(usize::from(u16::MAX) & !3);
        self.0.extend_from_slice(&kind.to_be_bytes());
        self.0.extend_from_slice(&(len as u16).to_be_bytes());
        self.0.extend_from_slice(&value[..len]);
        let pad = (4 - len % 4) % 4;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// An XOR-…-ADDRESS attribute.
    pub fn xor_address(&mut self, kind: u16, addr: SocketAddr) -> &mut Writer {
        let mut id = [0u8; 16];
        id.copy_from_slice(&self.0[4..HEADER_LEN]);
        let value = super::address(addr, Some(&id));
        self.attribute(kind, &value)
    }

    /// ERROR-CODE (RFC 8489 §14.8): class and number, then the reason.
    pub fn error(&mut self, status: u16, reason: &str) -> &mut Writer {
        let mut value = vec![0, 0, (status / 100) as u8, (status % 100) as u8];
        value.extend_from_slice(reason.as_bytes());
        self.attribute(attr::ERROR_CODE, &value)
    }

    fn set_length(&mut self, length: usize) {
        let length = (length as u16).to_be_bytes();
        self.0[2] = length[0];
        self.0[3] = length[1];
    }

    /// The message, with MESSAGE-INTEGRITY of `integrity` under `key` when
    /// both are given, and a FINGERPRINT when `fingerprint`.
    pub fn finish(mut self, seal: Option<(Integrity, &[u8])>, fingerprint: bool) -> Vec<u8> {
        if let Some((integrity, key)) = seal {
            let (kind, size) = match integrity {
                Integrity::Sha1 => (attr::MESSAGE_INTEGRITY, 20),
                Integrity::Sha256 => (attr::MESSAGE_INTEGRITY_SHA256, 32),
            };
            let body = self.0.len() - HEADER_LEN;
            self.set_length(body + 4 + size);
            let mac = match integrity {
                Integrity::Sha1 => hmac_sha1(key, &[&self.0]).to_vec(),
                Integrity::Sha256 => hmac_sha256(key, &[&self.0]).to_vec(),
            };
            self.attribute(kind, &mac);
        }
        let body = self.0.len() - HEADER_LEN;
        if fingerprint {
            self.set_length(body + 8);
            let crc = crc32(&self.0) ^ FINGERPRINT_XOR;
            self.attribute(attr::FINGERPRINT, &crc.to_be_bytes());
        } else {
            self.set_length(body);
        }
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text
            .bytes()
            .filter(u8::is_ascii_hexdigit)
            .map(|b| (b as char).to_digit(16).map(|d| d as u8).unwrap_or(0))
            .collect();
        digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
    }

    /// RFC 5769 §2.4: a request with long-term authentication (no FINGERPRINT).
    fn long_term_request() -> Vec<u8> {
        hex("00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
             00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
             00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46
             53 54 76 79 36 34 73 41
             00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
             00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66")
    }

    #[test]
    fn the_rfc_5769_long_term_request_checks_with_the_digest_ha1() {
        let bytes = long_term_request();
        let message = Message::parse(&bytes).expect("parses");
        let username = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
        assert_eq!(message.class, Class::Request);
        assert_eq!(message.method, method::BINDING);
        assert_eq!(message.text(attr::USERNAME), Some(username));
        assert_eq!(message.text(attr::REALM), Some("example.org"));
        assert_eq!(
            message.text(attr::NONCE),
            Some("f//499k954d6OL34oL9FSTvy64sA")
        );
        assert_eq!(message.integrity(), Some(Integrity::Sha1));
        // The password after SASLprep, as RFC 5769 gives it.
        let key = long_term_key(username, "example.org", "TheMatrIX");
        assert!(message.check_integrity(&key));
        assert!(!message.check_integrity(&long_term_key(username, "example.org", "TheMatrix")));
        // The users file's HA1 is the same key.
        let ha1 =
            crate::auth::users::Algorithm::Md5.hex(&format!("{username}:example.org:TheMatrIX"));
        let as_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(ha1, as_hex);
    }

    #[test]
    fn written_integrity_and_fingerprint_check_both_ways() {
        let id = {
            let mut id = [7u8; 16];
            id[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            id
        };
        let key = long_term_key("alice", "example.test", "secret");
        for integrity in [Integrity::Sha1, Integrity::Sha256] {
            let mut w = Writer::new(Class::Request, method::ALLOCATE, &id);
            w.attribute(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                .attribute(attr::USERNAME, b"alice");
            let bytes = w.finish(Some((integrity, &key)), true);
            let m = Message::parse(&bytes).expect("parses");
            assert!(m.fingerprint);
            assert_eq!(m.integrity(), Some(integrity));
            assert!(m.check_integrity(&key));
            assert!(!m.check_integrity(&long_term_key("alice", "example.test", "other")));
            assert_eq!(m.get(attr::USERNAME), Some(&b"alice"[..]));
            // A flipped bit anywhere before the integrity breaks it (the
            // fingerprint is recomputed so that only the HMAC is tested).
            let mut bent = bytes.clone();
            bent[25] ^= 1;
            let at = bent.len() - 8;
            let crc = crc32(&bent[..at]) ^ FINGERPRINT_XOR;
            bent[at + 4..].copy_from_slice(&crc.to_be_bytes());
            let m = Message::parse(&bent).expect("parses");
            assert!(!m.check_integrity(&key));
        }
    }

    #[test]
    fn hostile_messages_are_malformed() {
        assert_eq!(Message::parse(&[0; 8]).err(), Some(Malformed::Short));
        let mut no_cookie = vec![0u8; 20];
        no_cookie[1] = 1;
        assert_eq!(Message::parse(&no_cookie).err(), Some(Malformed::NoCookie));
        let id = {
            let mut id = [1u8; 16];
            id[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            id
        };
        let mut w = Writer::new(Class::Request, method::ALLOCATE, &id);
        for _ in 0..=MAX_ATTRIBUTES {
            w.attribute(attr::SOFTWARE, b"x");
        }
        let many = w.finish(None, false);
        assert_eq!(Message::parse(&many).err(), Some(Malformed::Attribute));
        // An attribute whose length runs past the end.
        let mut w = Writer::new(Class::Request, method::ALLOCATE, &id);
        w.attribute(attr::USERNAME, b"abcd");
        let mut past = w.finish(None, false);
        past[23] = 40;
        assert_eq!(Message::parse(&past).err(), Some(Malformed::Attribute));
        // A MESSAGE-INTEGRITY of the wrong size.
        let mut w = Writer::new(Class::Request, method::ALLOCATE, &id);
        w.attribute(attr::MESSAGE_INTEGRITY, &[0; 8]);
        let short = w.finish(None, false);
        assert_eq!(Message::parse(&short).err(), Some(Malformed::Attribute));
    }
}
