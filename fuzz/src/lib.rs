//! The bodies of the fuzz targets (`fuzz_targets/*.rs` only call these), so
//! that a crash input can be replayed by a plain test as well
//! (`tests/torture.rs` feeds `tests/torture/fuzz/*`).
//!
//! Each target asserts what must hold for any input, not only "no panic":
//! - `sip_parse`: what parses prints to bytes that parse again, and printing
//!   that second message gives the same bytes;
//! - `stream_framing`: cutting a stream into messages gives the same messages
//!   however the bytes arrive (all at once, or in random chunks);
//! - `overlay_wire`: what decodes as a ring request or response encodes back
//!   to a SIP message that decodes to the same value;
//! - `dns_query`: the DNS server's handler answers any bytes that hickory
//!   reads as a DNS message, and its answer serializes.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use ezk_sip_types::Name;
use ezk_sip_types::header::typed::Contact;
use p2psip::overlay::wire;
use p2psip::ring::{Refusal, RingResponse};
use p2psip::sip::framing::{self, Frame};
use p2psip::sip::message::{self, HeaderAccess, Message};

/// Reads every typed view of a message the node ever takes.
fn exercise(msg: &Message) {
    let _ = msg.vias();
    let _ = msg.top_via();
    let _ = msg.branch();
    let _ = msg.call_id();
    let _ = msg.from_header();
    let _ = msg.to_header();
    let _ = msg.headers().get_named::<Vec<Contact>>();
    for name in [Name::FROM, Name::TO] {
        if let Some(raw) = msg.raw(&name) {
            let _ = message::raw_tag(raw);
        }
    }
    let _ = message::local_tag(msg.headers());
    match msg {
        Message::Request(r) => {
            let _ = r.cseq();
            let _ = r.max_forwards();
            let _ = r.uri.scheme();
            let _ = r.uri.to_string();
            let _ = r.final_response(400).to_bytes();
        }
        Message::Response(r) => {
            let _ = r.cseq();
        }
    }
}

/// `Message::parse` on any bytes; what parses round-trips.
pub fn sip_parse(data: &[u8]) {
    let _ = message::bad_request_reply(data, "fuzz");
    let Ok(first) = Message::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    exercise(&first);
    let printed = first.to_bytes();
    let second = match Message::parse(printed.clone()) {
        Ok(m) => m,
        Err(e) => panic!(
            "printed message does not parse ({e}):\n{:?}",
            String::from_utf8_lossy(&printed)
        ),
    };
    exercise(&second);
    assert_eq!(second.to_bytes(), printed, "printing is not stable");
}

/// What a stream reader makes of the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
enum Cut {
    Message(Vec<u8>),
    Error,
}

/// Cuts `stream`, arriving in pieces of the given sizes, as the TCP
/// transport does: append, then take every whole frame off the front.
fn cut(stream: &[u8], sizes: impl Iterator<Item = usize>) -> Vec<Cut> {
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut rest = stream;
    let mut sizes = sizes.peekable();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match framing::check(&buf) {
                Ok(Frame::Incomplete) => break,
                Ok(Frame::KeepAlive { len, .. }) => {
                    assert!(
                        len > 0 && len <= buf.len(),
                        "keep-alive of {len} in {}",
                        buf.len()
                    );
                    assert!(buf[..len].iter().all(|b| *b == b'\r' || *b == b'\n'));
                    buf.drain(..len);
                }
                Ok(Frame::Stun { len }) => {
                    assert!(
                        len >= 20 && len <= buf.len() && len <= 1500,
                        "STUN of {len} in {}",
                        buf.len()
                    );
                    let frame: Vec<u8> = buf.drain(..len).collect();
                    let _ = p2psip::sip::stun::parse(&frame);
                    out.push(Cut::Message(frame));
                }
                Ok(Frame::Message { len }) => {
                    assert!(
                        len > 0 && len <= buf.len(),
                        "message of {len} in {}",
                        buf.len()
                    );
                    let frame: Vec<u8> = buf.drain(..len).collect();
                    // The frame is what the parser is handed next.
                    let _ = Message::parse(Bytes::copy_from_slice(&frame));
                    out.push(Cut::Message(frame));
                }
                Err(_) => {
                    out.push(Cut::Error);
                    return out;
                }
            }
        }
    }
    out
}

/// `sip::framing` on a stream in arbitrary chunks: the first 8 bytes seed the
/// chunk sizes, the rest is the stream.
pub fn stream_framing(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let (seed, stream) = data.split_at(8);
    let mut x = u64::from_le_bytes(seed.try_into().expect("8 bytes")) | 1;
    let sizes = std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Mostly small pieces, now and then a large one.
        Some(if x % 8 == 0 {
            (x >> 8) as usize % 4096
        } else {
            (x >> 8) as usize % 16
        })
    });
    let whole = cut(stream, std::iter::once(stream.len()));
    let chunked = cut(stream, sizes);
    assert_eq!(whole, chunked, "framing depends on how the bytes arrive");
}

fn peer() -> p2psip::ring::Peer {
    p2psip::ring::Peer::of_addr(SocketAddr::from(([127, 0, 0, 1], 5060)))
}

/// The overlay codec (`p2psip::overlay::wire`) on whatever parses as SIP.
pub fn overlay_wire(data: &[u8]) {
    let Ok(msg) = Message::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    let now = Instant::now();
    match msg {
        Message::Request(request) => {
            let _ = wire::is_overlay(&request);
            let Ok(ring) = wire::decode_request(&request, now) else {
                return;
            };
            let to = SocketAddr::from(([127, 0, 0, 2], 5060));
            let encoded = wire::encode_request(&ring, &peer(), to, now);
            let Ok(Message::Request(back)) = Message::parse(encoded.to_bytes()) else {
                panic!("encoded ring request does not parse: {ring:?}");
            };
            assert_eq!(
                wire::decode_request(&back, now).as_ref(),
                Ok(&ring),
                "ring request does not round-trip"
            );
        }
        // The overlay reads final responses only.
        Message::Response(response) if response.status >= 200 => {
            let Ok(ring) = wire::decode_response(&response, now) else {
                return;
            };
            // A response is encoded against the request it answers.
            let original = wire::encode_request(
                &p2psip::ring::RingRequest::Ping,
                &peer(),
                SocketAddr::from(([127, 0, 0, 2], 5060)),
                now,
            );
            let encoded = wire::encode_response(&original, &ring, now);
            // A refusal the codec has no name for travels as 500 with its
            // words: it comes back as a refusal without a name, not the same words.
            let unnamed = matches!(ring, RingResponse::Refused(Refusal::Other(_)));
            let Ok(Message::Response(back)) = Message::parse(encoded.to_bytes()) else {
                panic!("encoded ring response does not parse: {ring:?}");
            };
            let decoded = wire::decode_response(&back, now);
            if unnamed {
                assert!(
                    matches!(decoded, Ok(RingResponse::Refused(Refusal::Other(_)))),
                    "an unnamed refusal comes back unnamed: {decoded:?}"
                );
                return;
            }
            assert_eq!(
                decoded.as_ref(),
                Ok(&ring),
                "ring response does not round-trip"
            );
        }
        Message::Response(_) => {}
    }
}

mod dns {
    use std::net::SocketAddr;

    use hickory_server::net::NetError;
    use hickory_server::net::runtime::TokioTime;
    use hickory_server::net::xfer::Protocol;
    use hickory_server::proto::op::Message;
    use hickory_server::proto::rr::Record;
    use hickory_server::proto::serialize::binary::BinEncoder;
    use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
    use hickory_server::zone_handler::MessageResponse;
    use p2psip_dns::{Gateway, ZoneConfig, Zones};

    /// Serializes the response as the UDP handle would, and checks it reads back.
    #[derive(Clone)]
    struct Capture;

    #[async_trait::async_trait]
    impl ResponseHandler for Capture {
        async fn send_response<'a>(
            &mut self,
            response: MessageResponse<
                '_,
                'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
            >,
        ) -> Result<ResponseInfo, NetError> {
            let mut bytes = Vec::with_capacity(512);
            let mut encoder = BinEncoder::new(&mut bytes);
            let info = response.destructive_emit(&mut encoder)?;
            Message::from_vec(&bytes).expect("the server's answer reads back");
            Ok(info)
        }
    }

    pub(super) fn zones() -> Zones {
        let zones = Zones::new();
        zones.add_zone(ZoneConfig::new("overlay.test"));
        zones.set_gateways(
            "overlay.test",
            vec![Gateway {
                name: "gw1".into(),
                addrs: vec![
                    "192.0.2.10".parse().expect("ip"),
                    "2001:db8::10".parse().expect("ip"),
                ],
                udp: Some(5060),
                tcp: Some(5060),
                tls: Some(5061),
            }],
        );
        zones
    }

    pub(super) fn query(
        handler: &(impl RequestHandler + ?Sized),
        runtime: &tokio::runtime::Runtime,
        data: &[u8],
    ) {
        let src = SocketAddr::from(([192, 0, 2, 99], 53000));
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            let Ok(request) = Request::from_bytes(data.to_vec(), src, protocol) else {
                return;
            };
            runtime.block_on(handler.handle_request::<_, TokioTime>(&request, Capture));
        }
    }
}

struct Dns {
    runtime: tokio::runtime::Runtime,
    handler: Box<dyn Fn(&tokio::runtime::Runtime, &[u8]) + Send + Sync>,
}

/// The DNS server's query handling (`p2psip_dns::server::handler`, the very
/// `RequestHandler` the sockets use) on any bytes, over "UDP" and "TCP".
pub fn dns_query(data: &[u8]) {
    static DNS: OnceLock<Dns> = OnceLock::new();
    let dns = DNS.get_or_init(|| {
        let handler = p2psip_dns::server::handler(dns::zones());
        Dns {
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            handler: Box::new(move |rt, data| dns::query(&handler, rt, data)),
        }
    });
    (dns.handler)(&dns.runtime, data);
}

/// The stateless reply to a message that did not parse (`bad_request_reply`).
fn unparsed_reply(bytes: &[u8]) -> bool {
    (bytes.starts_with(b"SIP/2.0 400 ") || bytes.starts_with(b"SIP/2.0 505 ")) && {
        let warning: &[u8] = b"\r\nWarning: 399 p2psip \"";
        bytes.windows(warning.len()).any(|w| w == warning)
    }
}

/// The senders a `core_input` run speaks as: phones over UDP and TCP, and
/// another "node" of the ring.
fn core_peer(selector: u8) -> p2psip::sip::transaction::Peer {
    use p2psip::sip::transaction::{Peer, TransportKind};
    let (transport, port) = match selector % 4 {
        0 => (TransportKind::Udp, 5070),
        1 => (TransportKind::Udp, 5080),
        2 => (TransportKind::Tcp, 5090),
        _ => (TransportKind::Udp, 5060),
    };
    let ip = if selector % 4 == 3 { 2 } else { 1 };
    Peer {
        transport,
        addr: SocketAddr::from(([127, 0, 0, ip], port)),
    }
}

/// A whole node's core (`p2psip::core::Core`, a ring of one as its location
/// store) fed a sequence of inputs read from the bytes. The first byte picks
/// open or digest mode; then records of `op`, a big-endian `u16` length and
/// that many bytes:
/// - op % 8 in 0..4: a datagram from sender `op % 4`;
/// - 4: time passes: to the core's deadline (empty), or the first byte's
///   seconds;
/// - 5: the sender `payload[0]`'s connection closed; 6: a send to it failed;
/// - 7: the oldest pending resolution is answered with sender `payload[0]`
///   (or with nothing when empty).
///
/// Whatever the core sends must parse as SIP (it prints only what it parsed
/// or built), but for the 400/505 that echoes an unparsable message; and it must
/// always end its outputs with a deadline.
pub fn core_input(data: &[u8]) {
    use p2psip::auth::AuthMode;
    use p2psip::auth::users::UserRecord;
    use p2psip::core::{Core, CoreConfig, Input, Location, Output};
    use p2psip::overlay::Overlay;
    use p2psip::registrar::binding::Aor;
    use p2psip::ring::RingConfig;
    use std::time::Duration;

    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let t0 = Instant::now();
    let mut now = t0;
    let local = SocketAddr::from(([127, 0, 0, 1], 5060));
    let mut config = CoreConfig::new(local, vec!["example.test".into()]);
    let digest = mode & 1 == 1;
    if digest {
        config.auth.mode = AuthMode::Digest;
    }
    let overlay = Overlay::new(local, RingConfig::default(), &[], now);
    let mut core = Core::new(config, Location::Overlay(Box::new(overlay)), now);
    if digest {
        let alice = UserRecord::new(Aor::new("alice", "example.test"), "secret");
        core.handle_input(Input::Users(vec![alice]), now);
    }
    let mut resolving = std::collections::VecDeque::new();
    let mut deadline = now;
    let drain = |core: &mut Core, resolving: &mut std::collections::VecDeque<_>| {
        // Bounded: the core never has more than a few outputs per input.
        for _ in 0..100_000 {
            match core.poll_output() {
                // The 400 (or 505) to a message that did not parse echoes
                // its headers as they came (so the sender can match it),
                // with the parser's complaint in a Warning: it need not
                // parse either.
                Output::Transmit { bytes, .. } if unparsed_reply(&bytes) => {}
                Output::Transmit { bytes, .. } => {
                    if let Err(e) = Message::parse(bytes.clone()) {
                        panic!(
                            "the core sent what does not parse ({e}):\n{:?}",
                            String::from_utf8_lossy(&bytes)
                        );
                    }
                }
                Output::Resolve { id, .. } => resolving.push_back(id),
                Output::Timeout(at) => return at,
                _ => {}
            }
        }
        panic!("the core's outputs never end");
    };
    deadline = deadline.max(drain(&mut core, &mut resolving));
    while rest.len() >= 3 {
        let op = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let payload = &rest[3..3 + len];
        rest = &rest[3 + len..];
        let input = match op % 8 {
            0..4 => Input::Datagram {
                bytes: Bytes::copy_from_slice(payload),
                from: core_peer(op),
            },
            4 => {
                now = match payload.first() {
                    Some(s) => now + Duration::from_secs(u64::from(*s)),
                    None => deadline.max(now),
                };
                Input::Timeout
            }
            5 => Input::ConnectionClosed(core_peer(payload.first().copied().unwrap_or(0))),
            6 => Input::SendFailed(core_peer(payload.first().copied().unwrap_or(0))),
            _ => {
                let Some(id) = resolving.pop_front() else {
                    continue;
                };
                let peers = payload
                    .first()
                    .map(|s| vec![core_peer(*s)])
                    .unwrap_or_default();
                Input::Resolved { id, peers }
            }
        };
        core.handle_input(input, now);
        deadline = drain(&mut core, &mut resolving);
    }
    // Then every timer runs out: nothing may panic on the way.
    for _ in 0..64 {
        now = deadline.max(now + Duration::from_secs(1));
        if now > t0 + Duration::from_secs(3600) {
            break;
        }
        core.handle_input(Input::Timeout, now);
        deadline = drain(&mut core, &mut resolving);
    }
}
