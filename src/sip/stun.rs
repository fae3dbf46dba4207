//! STUN (RFC 8489) on the SIP ports, sans-I/O: a Binding request that
//! arrives on the node's SIP UDP port or on a SIP TCP/TLS connection gets
//! its source address back (XOR-MAPPED-ADDRESS, and MAPPED-ADDRESS for old
//! clients), so phones and nodes learn their public address and keep NAT
//! bindings open with the port they use for SIP.
//!
//! Telling STUN from SIP: a SIP message starts with a letter (top bits 01),
//! a STUN message with top bits 00 ([`looks_like_stun`]); on a stream the
//! magic cookie at offset 4 must be there too ([`frame_len`]). Classic
//! RFC 3489 Binding requests (no cookie) are answered with MAPPED-ADDRESS,
//! SOURCE-ADDRESS and CHANGED-ADDRESS. Bytes are hostile: every length is
//! checked, a message over [`MAX_STUN_SIZE`] or one that does not add up is
//! [`Malformed`] and dropped by the caller, never answered.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub mod message;

/// RFC 8489 §5: the fixed value at offset 4 of every RFC 5389/8489 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The STUN header: type, length, cookie, transaction ID.
pub const HEADER_LEN: usize = 20;
/// The largest STUN message read (RFC 8489 §6.1: path MTU; a Binding
/// request is well under 200 bytes).
pub const MAX_STUN_SIZE: usize = 1500;
/// What SOFTWARE says in our answers.
pub(crate) const SOFTWARE: &str = concat!("p2psip ", env!("CARGO_PKG_VERSION"));
/// The Binding method.
pub const BINDING: u16 = 0x001;
/// FINGERPRINT's CRC-32 is XORed with this (RFC 8489 §14.7).
pub(crate) const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Attribute types (RFC 8489 §18.3, RFC 3489 §11.2, RFC 8445 §16.1).
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const RESPONSE_ADDRESS: u16 = 0x0002;
    pub const CHANGE_REQUEST: u16 = 0x0003;
    pub const SOURCE_ADDRESS: u16 = 0x0004;
    pub const CHANGED_ADDRESS: u16 = 0x0005;
    pub const USERNAME: u16 = 0x0006;
    pub const PASSWORD: u16 = 0x0007;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const REFLECTED_FROM: u16 = 0x000B;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    // TURN (RFC 8656 §18).
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
}

/// Comprehension-required attributes this node understands (or may ignore
/// in a Binding request: credentials it does not check, ICE's PRIORITY).
const KNOWN: [u16; 19] = [
    attr::MAPPED_ADDRESS,
    attr::RESPONSE_ADDRESS,
    attr::CHANGE_REQUEST,
    attr::SOURCE_ADDRESS,
    attr::CHANGED_ADDRESS,
    attr::USERNAME,
    attr::PASSWORD,
    attr::MESSAGE_INTEGRITY,
    attr::ERROR_CODE,
    attr::UNKNOWN_ATTRIBUTES,
    attr::REFLECTED_FROM,
    attr::REALM,
    attr::NONCE,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::PASSWORD_ALGORITHM,
    attr::USERHASH,
    attr::XOR_MAPPED_ADDRESS,
    attr::PRIORITY,
    attr::USE_CANDIDATE,
];

/// The class of a message (the C1 C0 bits of its type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// Why bytes that looked like STUN are not a message to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than a STUN header")]
    Short,
    #[error("longer than {MAX_STUN_SIZE} bytes")]
    TooLong,
    #[error("top bits of the first byte are not 00")]
    NotStun,
    #[error("message length does not match the bytes")]
    Length,
    #[error("an attribute runs past the end, or follows FINGERPRINT")]
    Attribute,
    #[error("FINGERPRINT does not match")]
    Fingerprint,
    #[error("no magic cookie on a stream")]
    NoCookie,
}

/// A STUN message read from the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub class: Class,
    pub method: u16,
    /// RFC 3489 (no magic cookie): the 16 bytes after the length are all
    /// transaction ID.
    pub classic: bool,
    /// Bytes 4..20: the cookie and transaction ID, copied into the answer.
    pub id: [u8; 16],
    /// Comprehension-required attributes not understood here (before any
    /// MESSAGE-INTEGRITY; what follows it is ignored, RFC 8489 §14.5).
    pub unknown: Vec<u16>,
    /// The message ended with a FINGERPRINT, which matched.
    pub fingerprint: bool,
    /// In a response: XOR-MAPPED-ADDRESS, or else MAPPED-ADDRESS.
    pub mapped: Option<SocketAddr>,
    /// CHANGE-REQUEST asked for another address or port (RFC 3489 §11.2.4).
    pub change_request: bool,
}

/// What to do with a STUN message received from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A Binding success response to send back.
    Binding(Vec<u8>),
    /// An error response to send back (420 Unknown Attribute, 400).
    Refusal { status: u16, bytes: Vec<u8> },
    /// Nothing to send: an indication (a keep-alive), a response, or a
    /// classic request for a change of address this node cannot make.
    Nothing,
}

/// True when a datagram or a stream starts as a STUN message does (top
/// bits 00) and not as a CRLF keep-alive or whitespace.
pub fn looks_like_stun(bytes: &[u8]) -> bool {
    bytes
        .first()
        .is_some_and(|b| b & 0xC0 == 0 && !matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
}

/// True for a datagram of CRLFs and whitespace only: a keep-alive (RFC 5626
/// §4.4.1 uses CRLF over UDP in some phones), ignored without an answer.
pub fn is_keepalive(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
}

/// On a stream starting with [`looks_like_stun`] bytes: `Ok(None)` while
/// the header is not all there, then the message's whole length. A stream
/// carries only RFC 5389/8489 STUN (the cookie), at most [`MAX_STUN_SIZE`].
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, Malformed> {
    if buf.len() < 8 {
        return Ok(None);
    }
    if u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE {
        return Err(Malformed::NoCookie);
    }
    let length = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let total = HEADER_LEN + length;
    if total > MAX_STUN_SIZE {
        return Err(Malformed::TooLong);
    }
    if length % 4 != 0 {
        return Err(Malformed::Length);
    }
    Ok((buf.len() >= total).then_some(total))
}

/// The class, method and transaction id (with the cookie in front) of one
/// whole STUN message, its length checked against the bytes; its
/// attributes follow at [`HEADER_LEN`]. Both readers, [`parse`] and
/// [`message::Message`], start here.
pub(crate) fn header(bytes: &[u8]) -> Result<(Class, u16, [u8; 16]), Malformed> {
    if bytes.len() < HEADER_LEN {
        return Err(Malformed::Short);
    }
    if bytes[0] & 0xC0 != 0 {
        return Err(Malformed::NotStun);
    }
    let kind = u16::from_be_bytes([bytes[0], bytes[1]]);
    let length = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    if length % 4 != 0 || HEADER_LEN + length != bytes.len() {
        return Err(Malformed::Length);
    }
    let class = match ((kind >> 4) & 1) | ((kind >> 7) & 2) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    let method = (kind & 0x000F) | ((kind >> 1) & 0x0070) | ((kind >> 2) & 0x0F80);
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[4..HEADER_LEN]);
    Ok((class, method, id))
}

/// Reads one whole STUN message.
pub fn parse(bytes: &[u8]) -> Result<Parsed, Malformed> {
    if bytes.len() > MAX_STUN_SIZE {
        return Err(Malformed::TooLong);
    }
    let (class, method, id) = header(bytes)?;
    let classic = u32::from_be_bytes([id[0], id[1], id[2], id[3]]) != MAGIC_COOKIE;
    let mut parsed = Parsed {
        class,
        method,
        classic,
        id,
        unknown: Vec::new(),
        fingerprint: false,
        mapped: None,
        change_request: false,
    };
    let mut integrity = false;
    let mut xor_mapped = None;
    let mut plain_mapped = None;
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        if parsed.fingerprint || at + 4 > bytes.len() {
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
        match kind {
            attr::FINGERPRINT => {
                let Ok(value) = <[u8; 4]>::try_from(value) else {
                    return Err(Malformed::Fingerprint);
                };
                if crc32(&bytes[..at]) ^ FINGERPRINT_XOR != u32::from_be_bytes(value) {
                    return Err(Malformed::Fingerprint);
                }
                parsed.fingerprint = true;
            }
            _ if integrity => {}
            attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 => integrity = true,
            attr::XOR_MAPPED_ADDRESS => xor_mapped = read_address(value, Some(&id)),
            attr::MAPPED_ADDRESS => plain_mapped = read_address(value, None),
            attr::CHANGE_REQUEST => {
                parsed.change_request = value.get(3).is_some_and(|flags| flags & 0x06 != 0);
            }
            kind if kind < 0x8000 && !KNOWN.contains(&kind) => parsed.unknown.push(kind),
            _ => {}
        }
        at = start + padded;
    }
    parsed.mapped = xor_mapped.or(plain_mapped);
    Ok(parsed)
}

/// What to do with `bytes`, a STUN message from `from` to our `local`
/// address: a Binding request gets `from` back.
pub fn answer(bytes: &[u8], from: SocketAddr, local: SocketAddr) -> Result<Answer, Malformed> {
    let request = parse(bytes)?;
    // Classic STUN is answered for Binding requests only (its Shared
    // Secret requests need TLS; anything else is noise).
    if request.class != Class::Request || (request.classic && request.method != BINDING) {
        return Ok(Answer::Nothing);
    }
    if !request.unknown.is_empty() {
        let mut list = Vec::with_capacity(request.unknown.len() * 2);
        for kind in request.unknown.iter().take(64) {
            list.extend_from_slice(&kind.to_be_bytes());
        }
        let mut out = Builder::new(&request, Class::Error);
        out.error(420, "Unknown Attribute");
        out.attribute(attr::UNKNOWN_ATTRIBUTES, &list);
        return Ok(Answer::Refusal {
            status: 420,
            bytes: out.finish(&request),
        });
    }
    if request.method != BINDING {
        let mut out = Builder::new(&request, Class::Error);
        out.error(400, "Bad Request");
        return Ok(Answer::Refusal {
            status: 400,
            bytes: out.finish(&request),
        });
    }
    if request.classic && request.change_request {
        // A classic NAT-type probe asking for an answer from another
        // address: we have none, and answering from this one would make the
        // client believe it is on the open Internet.
        return Ok(Answer::Nothing);
    }
    let mut out = Builder::new(&request, Class::Success);
    if !request.classic {
        out.attribute(attr::XOR_MAPPED_ADDRESS, &address(from, Some(&request.id)));
    }
    out.attribute(attr::MAPPED_ADDRESS, &address(from, None));
    if request.classic {
        out.attribute(attr::SOURCE_ADDRESS, &address(local, None));
        out.attribute(attr::CHANGED_ADDRESS, &address(local, None));
    }
    out.attribute(attr::SOFTWARE, SOFTWARE.as_bytes());
    Ok(Answer::Binding(out.finish(&request)))
}

/// Builds a Binding request (for tests and for a node asking its peers).
pub fn binding_request(transaction: [u8; 12], fingerprint: bool) -> Vec<u8> {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    id[4..].copy_from_slice(&transaction);
    let header = Parsed {
        class: Class::Request,
        method: BINDING,
        classic: false,
        id,
        unknown: Vec::new(),
        fingerprint,
        mapped: None,
        change_request: false,
    };
    Builder::new(&header, Class::Request).finish(&header)
}

/// A message being written: header, then attributes, padded to 4 bytes.
struct Builder(Vec<u8>);

impl Builder {
    fn new(to: &Parsed, class: Class) -> Builder {
        let c = match class {
            Class::Request => 0,
            Class::Indication => 1,
            Class::Success => 2,
            Class::Error => 3,
        };
        let m = to.method & 0x0FFF;
        let kind = (m & 0x000F)
            | ((m & 0x0070) << 1)
            | ((m & 0x0F80) << 2)
            | ((c & 1) << 4)
            | ((c & 2) << 7);
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(&kind.to_be_bytes());
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(&to.id);
        Builder(bytes)
    }

    fn attribute(&mut self, kind: u16, value: &[u8]) {
        let len = value.len().min(usize::from(u16::MAX) & !3);
        self.0.extend_from_slice(&kind.to_be_bytes());
        self.0.extend_from_slice(&(len as u16).to_be_bytes());
        self.0.extend_from_slice(&value[..len]);
        let pad = (4 - len % 4) % 4;
        self.0.extend(std::iter::repeat_n(0u8, pad));
    }

    /// ERROR-CODE (RFC 8489 §14.8): class and number, then the reason.
    fn error(&mut self, status: u16, reason: &str) {
        let mut value = vec![0, 0, (status / 100) as u8, (status % 100) as u8];
        value.extend_from_slice(reason.as_bytes());
        self.attribute(attr::ERROR_CODE, &value);
    }

    fn set_length(&mut self, length: usize) {
        let length = (length as u16).to_be_bytes();
        self.0[2] = length[0];
        self.0[3] = length[1];
    }

    /// The message, with a FINGERPRINT when the request had one.
    fn finish(mut self, to: &Parsed) -> Vec<u8> {
        let body = self.0.len() - HEADER_LEN;
        if to.fingerprint && !to.classic {
            self.set_length(body + 8);
            let crc = crc32(&self.0) ^ FINGERPRINT_XOR;
            self.attribute(attr::FINGERPRINT, &crc.to_be_bytes());
        } else {
            self.set_length(body);
        }
        self.0
    }
}

/// A (XOR-)MAPPED-ADDRESS value; XORed with the cookie and transaction ID
/// when `xor` is given (RFC 8489 §14.2).
pub(crate) fn address(addr: SocketAddr, xor: Option<&[u8; 16]>) -> Vec<u8> {
    let mask = xor.copied().unwrap_or([0; 16]);
    let port = addr.port() ^ u16::from_be_bytes([mask[0], mask[1]]);
    let mut value = vec![0, 0];
    value.extend_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            value[1] = 1;
            value.extend(ip.octets().iter().zip(mask).map(|(b, m)| b ^ m));
        }
        IpAddr::V6(ip) => {
            value[1] = 2;
            value.extend(ip.octets().iter().zip(mask).map(|(b, m)| b ^ m));
        }
    }
    value
}

/// Reads a (XOR-)MAPPED-ADDRESS value; `None` when it does not add up.
pub(crate) fn read_address(value: &[u8], xor: Option<&[u8; 16]>) -> Option<SocketAddr> {
    let mask = xor.copied().unwrap_or([0; 16]);
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?])
        ^ u16::from_be_bytes([mask[0], mask[1]]);
    let raw = value.get(4..)?;
    let ip = match (value.get(1)?, raw.len()) {
        (1, 4) => {
            let mut o = [0u8; 4];
            for (i, b) in o.iter_mut().enumerate() {
                *b = raw[i] ^ mask[i];
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (2, 16) => {
            let mut o = [0u8; 16];
            for (i, b) in o.iter_mut().enumerate() {
                *b = raw[i] ^ mask[i];
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// CRC-32 (ISO 3309, the one FINGERPRINT uses), bit by bit: messages here
/// are at most 1,500 bytes.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests;
