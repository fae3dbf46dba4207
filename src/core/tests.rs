//! The node's core driven without sockets: messages in, messages out, a
//! virtual clock. A registration and a proxied call, then every timer run
//! out: nothing may be left behind. A phone behind NAT reached at its
//! source, its answer's Contact aliased and the BYE sent to the alias; STUN and keep-alives in the input path.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ezk_sip_types::Name;

use super::{Core, CoreConfig, Input, Location, Output};
use crate::registrar::location::MemoryLocation;
use crate::sip::message::{HeaderAccess, Message, Request, Response};
use crate::sip::transaction::{Peer, TransportKind};

fn udp(port: u16) -> Peer {
    Peer {
        transport: TransportKind::Udp,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn core(now: Instant) -> Core {
    let config = CoreConfig::new(udp(5060).addr, vec!["example.test".into()]);
    Core::new(config, Location::Memory(MemoryLocation::new()), now)
}

/// Everything the core wants to send now, parsed.
fn sent(core: &mut Core) -> Vec<(Peer, Message)> {
    let mut out = Vec::new();
    loop {
        match core.poll_output() {
            Output::Transmit { to, bytes } => out.push((
                to,
                Message::parse(bytes).expect("the core sends what parses"),
            )),
            Output::Timeout(_) => return out,
            _ => {}
        }
    }
}

/// Drains the outputs and gives the deadline they end with.
fn next_deadline(core: &mut Core) -> Instant {
    loop {
        if let Output::Timeout(at) = core.poll_output() {
            return at;
        }
    }
}

fn datagram(bytes: Bytes, port: u16) -> Input {
    Input::Datagram {
        bytes,
        from: udp(port),
    }
}

fn request(text: &str) -> Bytes {
    Bytes::from(text.replace('\n', "\r\n"))
}

/// The response a UAS sends to `request`, with a To tag.
fn answer(request: &Request, status: u16) -> Bytes {
    let mut response: Response = request.response(status);
    let to = response
        .raw(&Name::TO)
        .map(|t| t.to_string())
        .unwrap_or_default();
    response.headers.remove(&Name::TO);
    response.headers.insert(Name::TO, format!("{to};tag=uas1"));
    response
        .headers
        .insert(Name::CONTACT, "<sip:alice@127.0.0.1:5090>");
    response.to_bytes()
}

#[test]
fn a_call_through_the_core_leaves_nothing_behind() {
    let t0 = Instant::now();
    let mut core = core(t0);

    core.handle_input(
        Input::Datagram {
            bytes: request(
                "REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKreg1
From: <sip:alice@example.test>;tag=a1
To: <sip:alice@example.test>
Call-ID: reg-1
CSeq: 1 REGISTER
Contact: <sip:alice@127.0.0.1:5090>
Expires: 600
Content-Length: 0

",
            ),
            from: udp(5090),
        },
        t0,
    );
    let out = sent(&mut core);
    assert!(
        matches!(&out[..], [(p, Message::Response(r))] if *p == udp(5090) && r.status == 200),
        "REGISTER answered 200: {out:?}"
    );

    core.handle_input(
        Input::Datagram {
            bytes: request(
                "INVITE sip:alice@example.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bKinv1
Max-Forwards: 70
From: <sip:bob@example.test>;tag=b1
To: <sip:alice@example.test>
Call-ID: call-1
CSeq: 1 INVITE
Contact: <sip:bob@127.0.0.1:7000>
Content-Length: 0

",
            ),
            from: udp(7000),
        },
        t0,
    );
    let out = sent(&mut core);
    let forwarded = out
        .iter()
        .find_map(|(peer, m)| match m {
            Message::Request(r) if *peer == udp(5090) => Some(r.clone()),
            _ => None,
        })
        .expect("the INVITE goes to alice's contact");
    assert!(
        out.iter()
            .any(|(p, m)| *p == udp(7000) && matches!(m, Message::Response(r) if r.status == 100))
    );
    let vias = forwarded.vias();
    assert_eq!(vias.len(), 2, "our Via on top of bob's");
    assert_eq!(vias[0].sent_by.port, Some(5060));
    assert_eq!(forwarded.max_forwards(), Some(69));
    assert!(
        forwarded
            .raw(&Name::RECORD_ROUTE)
            .is_some_and(|r| r.contains("127.0.0.1:5060;lr"))
    );

    let t1 = t0 + Duration::from_millis(20);
    core.handle_input(datagram(answer(&forwarded, 180), 5090), t1);
    core.handle_input(datagram(answer(&forwarded, 200), 5090), t1);
    let out = sent(&mut core);
    let statuses: Vec<u16> = out
        .iter()
        .filter(|(p, _)| *p == udp(7000))
        .filter_map(|(_, m)| match m {
            Message::Response(r) => Some(r.status),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, vec![180, 200], "relayed to bob in order");
    for (_, m) in &out {
        if let Message::Response(r) = m {
            assert_eq!(r.vias().len(), 1, "bob sees only his own Via");
        }
    }

    // Every timer runs out: no transaction, fork or routing entry is left.
    let mut now = t1;
    for _ in 0..100 {
        now = next_deadline(&mut core).max(now);
        if now > t1 + Duration::from_secs(120) {
            break;
        }
        core.handle_input(Input::Timeout, now);
    }
    assert_eq!(core.load(), (0, 0), "transactions and forks all gone");
    assert!(
        core.routed.is_empty(),
        "no routing entry left after a relayed 2xx"
    );
}

#[test]
fn a_phone_behind_nat_is_reached_where_its_register_came_from() {
    let t0 = Instant::now();
    let mut core = core(t0);
    // Alice's phone sits behind a NAT: it writes its private address, the
    // node sees the NAT's mapping 127.0.0.1:40000.
    core.handle_input(
        datagram(
            request(
                "REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKnat1;rport
From: <sip:alice@example.test>;tag=a1
To: <sip:alice@example.test>
Call-ID: reg-nat
CSeq: 1 REGISTER
Contact: <sip:alice@192.168.1.20:5060>
Expires: 600
Content-Length: 0

",
            ),
            40000,
        ),
        t0,
    );
    let out = sent(&mut core);
    assert!(
        matches!(&out[..], [(p, Message::Response(r))] if *p == udp(40000) && r.status == 200),
        "REGISTER answered 200 at the mapping: {out:?}"
    );
    core.handle_input(
        datagram(
            request(
                "INVITE sip:alice@example.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bKinvnat
Max-Forwards: 70
From: <sip:bob@example.test>;tag=b1
To: <sip:alice@example.test>
Call-ID: call-nat
CSeq: 1 INVITE
Contact: <sip:bob@127.0.0.1:7000>
Content-Length: 0

",
            ),
            7000,
        ),
        t0,
    );
    let out = sent(&mut core);
    let forwarded = out
        .iter()
        .find_map(|(peer, m)| match m {
            Message::Request(r) => Some((*peer, r.clone())),
            _ => None,
        })
        .expect("the INVITE is forwarded");
    assert_eq!(forwarded.0, udp(40000), "sent to the NAT's mapping");
    assert_eq!(
        forwarded.1.uri.to_string(),
        "sip:alice@192.168.1.20:5060",
        "the contact as registered stays the Request-URI"
    );

    // Alice answers with her private Contact: bob gets it with the alias of
    // her NAT's mapping, and his BYE to it goes to the mapping with the
    // URI she wrote (src/proxy/alias.rs).
    let mut ok: Response = forwarded.1.response(200);
    let to = ok.raw(&Name::TO).map(|t| t.to_string()).unwrap_or_default();
    ok.headers.remove(&Name::TO);
    ok.headers.insert(Name::TO, format!("{to};tag=alice2"));
    ok.headers
        .insert(Name::CONTACT, "<sip:alice@192.168.1.20:5060>");
    core.handle_input(datagram(ok.to_bytes(), 40000), t0);
    let out = sent(&mut core);
    let relayed = out
        .iter()
        .find_map(|(peer, m)| match m {
            Message::Response(r) if r.status == 200 && *peer == udp(7000) => Some(r.clone()),
            _ => None,
        })
        .expect("the 200 is relayed to bob");
    let contact = relayed.raw(&Name::CONTACT).map(|c| c.to_string());
    assert_eq!(
        contact.as_deref(),
        Some("<sip:alice@192.168.1.20:5060;alias=127.0.0.1~40000~1>")
    );
    core.handle_input(
        datagram(
            request(
                "BYE sip:alice@192.168.1.20:5060;alias=127.0.0.1~40000~1 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bKbyenat
Route: <sip:127.0.0.1:5060;lr>
Max-Forwards: 70
From: <sip:bob@example.test>;tag=b1
To: <sip:alice@example.test>;tag=alice2
Call-ID: call-nat
CSeq: 2 BYE
Content-Length: 0

",
            ),
            7000,
        ),
        t0,
    );
    let out = sent(&mut core);
    let bye = out
        .iter()
        .find_map(|(peer, m)| match m {
            Message::Request(r) => Some((*peer, r.clone())),
            _ => None,
        })
        .expect("the BYE is forwarded");
    assert_eq!(bye.0, udp(40000), "the BYE goes to the alias");
    assert_eq!(bye.1.uri.to_string(), "sip:alice@192.168.1.20:5060");
}

#[test]
fn stun_is_answered_and_keepalives_and_garbage_are_not() {
    let t0 = Instant::now();
    let mut core = core(t0);
    let binding = crate::sip::stun::binding_request([3; 12], true);
    core.handle_input(datagram(Bytes::from(binding), 41000), t0);
    let mut answers = Vec::new();
    loop {
        match core.poll_output() {
            Output::Transmit { to, bytes } => answers.push((to, bytes)),
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    assert_eq!(answers.len(), 1, "one answer");
    assert_eq!(answers[0].0, udp(41000));
    let answer = crate::sip::stun::parse(&answers[0].1).expect("STUN");
    assert_eq!(answer.mapped, Some(udp(41000).addr));
    for bytes in [
        &b"\r\n"[..],
        b"\r\n\r\n",
        &[0u8; 20][..],
        &[0u8, 1, 0, 4][..],
    ] {
        core.handle_input(datagram(Bytes::copy_from_slice(bytes), 41000), t0);
        assert!(sent(&mut core).is_empty(), "{bytes:?} answered");
    }
    let text = core.metrics.encode();
    assert!(
        text.contains("p2psip_stun_total{outcome=\"answered\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("p2psip_stun_total{outcome=\"malformed\"} 1"),
        "{text}"
    );
}
