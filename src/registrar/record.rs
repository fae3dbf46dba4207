//! The compact encoding of an AOR's bindings as a ring item's value: what
//! every node keeps for each registration it holds, so every byte counts
//! (JSON with field names took about three times as much).
//!
//! ```text
//! value   = 0x01 (format) count:u8 binding*
//! binding = contact:str q:u16 (0xffff: none) expires_in:u32 (seconds left)
//!           call_id:str cseq:u32 path_count:u8 path:str* source
//! str     = len:u16 bytes (UTF-8)
//! source  = 0 (none) | transport:u8 (1 UDP, 2 TCP, 3 TLS; +0x80 when the
//!           binding is behind NAT, reached at this address; +0x40 when
//!           it is an Outbound flow) addr [instance:str reg_id:u32]
//! addr    = 4 ip:4 port:u16 | 6 ip:16 port:u16
//! ```
//! Integers are big-endian. Decoding reads hostile bytes: every length is
//! checked, and anything malformed gives `None`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::binding::{Binding, Flow};
use crate::sip::transaction::{Peer, TransportKind};

const FORMAT: u8 = 1;
const NO_Q: u16 = u16::MAX;
/// The bit of the source's transport byte that says "behind NAT".
const NAT: u8 = 0x80;
/// The bit of the source's transport byte that says "a flow follows".
const FLOW: u8 = 0x40;

/// The value holding `bindings` (expiry as seconds left from `now`). At most
/// 255 bindings and 255 Path entries each, strings cut at 65,535 bytes (the
/// registrar keeps far fewer: `RegistrarConfig`).
pub fn encode(bindings: &[Binding], now: Instant) -> Vec<u8> {
    let size: usize = bindings
        .iter()
        .map(|b| {
            b.contact.len()
                + b.call_id.len()
                + b.path.iter().map(|p| p.len() + 2).sum::<usize>()
                + 35
        })
        .sum();
    let mut out = Vec::with_capacity(size + 2);
    out.push(FORMAT);
    let bindings = &bindings[..bindings.len().min(255)];
    out.push(bindings.len() as u8);
    for b in bindings {
        put_str(&mut out, &b.contact);
        out.extend_from_slice(&b.q.unwrap_or(NO_Q).to_be_bytes());
        let left = u32::try_from(b.remaining(now).as_secs()).unwrap_or(u32::MAX);
        out.extend_from_slice(&left.to_be_bytes());
        put_str(&mut out, &b.call_id);
        out.extend_from_slice(&b.cseq.to_be_bytes());
        let path = &b.path[..b.path.len().min(255)];
        out.push(path.len() as u8);
        for p in path {
            put_str(&mut out, p);
        }
        match b.source {
            None => out.push(0),
            Some(peer) => {
                let nat = if b.behind_nat { NAT } else { 0 };
                let flow = if b.flow.is_some() { FLOW } else { 0 };
                out.push(
                    nat | flow
                        | match peer.transport {
                            TransportKind::Udp => 1,
                            TransportKind::Tcp => 2,
                            TransportKind::Tls => 3,
                        },
                );
                match peer.addr.ip() {
                    IpAddr::V4(ip) => {
                        out.push(4);
                        out.extend_from_slice(&ip.octets());
                    }
                    IpAddr::V6(ip) => {
                        out.push(6);
                        out.extend_from_slice(&ip.octets());
                    }
                }
                out.extend_from_slice(&peer.addr.port().to_be_bytes());
                if let Some(flow) = &b.flow {
                    put_str(&mut out, &flow.instance);
                    out.extend_from_slice(&flow.reg_id.to_be_bytes());
                }
            }
        }
    }
    out
}

/// The bindings in `value`, expiring from `now`; `None` when it is not a
/// well-formed value.
pub fn decode(value: &[u8], now: Instant) -> Option<Vec<Binding>> {
    let mut r = Reader(value);
    if r.u8()? != FORMAT {
        return None;
    }
    let count = r.u8()?;
    let mut bindings = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let contact = r.str()?;
        let q = match r.u16()? {
            NO_Q => None,
            q => Some(q),
        };
        let expires_at = now + Duration::from_secs(u64::from(r.u32()?));
        let call_id = r.str()?;
        let cseq = r.u32()?;
        let paths = r.u8()?;
        let mut path = Vec::with_capacity(usize::from(paths));
        for _ in 0..paths {
            path.push(r.str()?);
        }
        let mut behind_nat = false;
        let mut flow = None;
        let source = match r.u8()? {
            0 => None,
            t => {
                behind_nat = t & NAT != 0;
                let transport = match t & !(NAT | FLOW) {
                    1 => TransportKind::Udp,
                    2 => TransportKind::Tcp,
                    3 => TransportKind::Tls,
                    _ => return None,
                };
                let ip = match r.u8()? {
                    4 => IpAddr::from(<[u8; 4]>::try_from(r.take(4)?).ok()?),
                    6 => IpAddr::from(<[u8; 16]>::try_from(r.take(16)?).ok()?),
                    _ => return None,
                };
                let addr = SocketAddr::new(ip, r.u16()?);
                if t & FLOW != 0 {
                    let instance = r.str()?;
                    let reg_id = r.u32()?;
                    flow = Some(Flow { instance, reg_id });
                }
                Some(Peer { transport, addr })
            }
        };
        bindings.push(Binding {
            contact,
            q,
            expires_at,
            call_id,
            cseq,
            path,
            source,
            behind_nat,
            flow,
        });
    }
    r.0.is_empty().then_some(bindings)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// Reads off the front of a value, checking every length.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let len = usize::from(self.u16()?);
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(now: Instant, source: Option<Peer>) -> Binding {
        Binding {
            contact: "<sip:alice@192.0.2.1:5070;transport=tcp>".into(),
            q: Some(500),
            expires_at: now + Duration::from_secs(3600),
            call_id: "c1@192.0.2.1".into(),
            cseq: 7,
            path: vec!["<sip:edge.test;lr>".into()],
            source,
            behind_nat: false,
            flow: None,
        }
    }

    #[test]
    fn bindings_round_trip() {
        let now = Instant::now();
        let v6 = Peer {
            transport: TransportKind::Tls,
            addr: "[2001:db8::1]:5061".parse().expect("addr"),
        };
        let v4 = Peer {
            transport: TransportKind::Udp,
            addr: "192.0.2.1:5070".parse().expect("addr"),
        };
        let mut none = binding(now, None);
        none.q = None;
        none.path.clear();
        let mut nat = binding(now, Some(v4));
        nat.behind_nat = true;
        nat.flow = Some(Flow {
            instance: "<urn:uuid:00000000-0000-1000-8000-000a95a0e128>".into(),
            reg_id: 2,
        });
        let all = vec![binding(now, Some(v4)), binding(now, Some(v6)), none, nat];
        let value = encode(&all, now);
        assert_eq!(decode(&value, now), Some(all));
        assert_eq!(decode(&encode(&[], now), now), Some(vec![]));
    }

    #[test]
    fn malformed_values_are_refused() {
        let now = Instant::now();
        let value = encode(&[binding(now, None)], now);
        // Every cut short, and one byte too many.
        for n in 0..value.len() {
            assert_eq!(decode(&value[..n], now), None, "cut at {n}");
        }
        let mut longer = value.clone();
        longer.push(0);
        assert_eq!(decode(&longer, now), None);
        // The JSON of before is not this format.
        assert_eq!(decode(b"[]", now), None);
    }
}
