//! The relay on its own: which calls are anchored, the offer and the
//! answer rewritten both ways, the end of a session, and the media's
//! latching and silence, on virtual time.

use std::time::{Duration, Instant};

use super::sdp::Remote;
use super::*;
use crate::sip::message::Message;

const NODE: &str = "10.202.1.2";

fn sdp(ip: &str, port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
    )
}

/// An INVITE from a phone that wrote `via` and whose packet came from
/// `source` (the node stamps received/rport as `core::checks` does).
fn invite(via: &str, source: &str, body: &str) -> Request {
    let (ip, port) = source.split_once(':').unwrap();
    let text = format!(
        "INVITE sip:bob@10.201.2.2:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {via};branch=z9hG4bK1;received={ip};rport={port}\r\n\
         From: <sip:alice@example.test>;tag=a1\r\nTo: <sip:bob@example.test>\r\n\
         Call-ID: call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{via}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    match Message::parse(Bytes::from(text)) {
        Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn in_dialog(method: &str, from_tag: &str, to_tag: &str, cseq: u32, body: &str) -> Request {
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    let text = format!(
        "{method} sip:x@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK2\r\n\
         From: <sip:a@example.test>;tag={from_tag}\r\nTo: <sip:b@example.test>;tag={to_tag}\r\n\
         Call-ID: call-1\r\nCSeq: {cseq} {method}\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    match Message::parse(Bytes::from(text)) {
        Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn response(status: u16, from_tag: &str, method: &str, body: &str) -> Response {
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    let text = format!(
        "SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
         From: <sip:a@example.test>;tag={from_tag}\r\nTo: <sip:b@example.test>;tag=b1\r\n\
         Call-ID: call-1\r\nCSeq: 1 {method}\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    match Message::parse(Bytes::from(text)) {
        Ok(Message::Response(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn relay(mode: RelayMode) -> Relay {
    let config = RelayConfig {
        mode,
        ports: (30000, 30007),
        max_sessions: 10,
        idle: Duration::from_secs(30),
    };
    Relay::new(config, NODE.parse().unwrap())
}

fn commands(relay: &mut Relay) -> Vec<RelayCommand> {
    std::iter::from_fn(|| relay.poll_command()).collect()
}

fn text(body: &Bytes) -> &str {
    std::str::from_utf8(body).unwrap()
}

#[test]
fn a_caller_behind_nat_gets_both_sdps_rewritten() {
    let now = Instant::now();
    let mut relay = relay(RelayMode::Nat);
    // Alice wrote her private address; the packet came from her router.
    let mut request = invite(
        "10.201.1.2:5060",
        "10.202.1.1:40001",
        &sdp("10.201.1.2", 6000),
    );
    relay.on_request(&mut request, false, now);
    let offer = text(&request.body);
    assert!(offer.contains(&format!("c=IN IP4 {NODE}\r\n")), "{offer}");
    assert!(offer.contains("m=audio 30002 RTP/AVP 0\r\n"), "{offer}");
    let cmds = commands(&mut relay);
    let RelayCommand::Open {
        caller,
        callee,
        media,
        ..
    } = &cmds[0]
    else {
        panic!("{cmds:?}")
    };
    assert_eq!((*caller, *callee), (30000, 30002));
    assert!(media.deadline() > now);
    assert!(matches!(
        cmds[1],
        RelayCommand::Signalled { side: Side::Caller, remote: Remote { rtp: Some(a), .. }, .. }
            if a == "10.201.1.2:6000".parse().unwrap()
    ));

    // Bob's 200 (From is Alice's tag: it goes to the caller).
    let mut ok = response(200, "a1", "INVITE", &sdp("10.0.0.9", 7000));
    relay.on_response(&mut ok);
    let answer = text(&ok.body);
    assert!(answer.contains("m=audio 30000 RTP/AVP 0\r\n"), "{answer}");
    assert!(!answer.contains("c=IN IP4 10.0.0.9"), "{answer}");
    let cmds = commands(&mut relay);
    assert!(
        matches!(
            cmds[0],
            RelayCommand::Signalled {
                side: Side::Callee,
                ..
            }
        ),
        "{cmds:?}"
    );
    assert!(matches!(cmds[1], RelayCommand::Answered { .. }), "{cmds:?}");

    // A re-INVITE from Bob (his tag in From) moves his media.
    let mut reinvite = in_dialog("INVITE", "b1", "a1", 1, &sdp("10.0.0.10", 7100));
    relay.on_request(&mut reinvite, false, now);
    assert!(
        text(&reinvite.body).contains("m=audio 30000 "),
        "{}",
        text(&reinvite.body)
    );
    // Its 200 from Alice (From: Bob's tag) goes towards Bob.
    let mut ok = response(200, "b1", "INVITE", &sdp("10.201.1.2", 6000));
    relay.on_response(&mut ok);
    assert!(
        text(&ok.body).contains("m=audio 30002 "),
        "{}",
        text(&ok.body)
    );
    let cmds = commands(&mut relay);
    assert!(matches!(
        cmds[0],
        RelayCommand::Signalled {
            side: Side::Callee,
            ..
        }
    ));
    assert!(matches!(
        cmds[1],
        RelayCommand::Signalled {
            side: Side::Caller,
            ..
        }
    ));

    // BYE ends it, and frees the ports.
    let mut bye = in_dialog("BYE", "a1", "b1", 2, "");
    relay.on_request(&mut bye, false, now);
    assert!(matches!(
        commands(&mut relay)[..],
        [RelayCommand::Close { .. }]
    ));
    assert!(relay.is_empty());
    assert!(relay.used.is_empty());
}

#[test]
fn a_late_offer_is_anchored_from_the_200_and_the_ack() {
    let now = Instant::now();
    let mut relay = relay(RelayMode::Nat);
    let mut request = invite("10.201.1.2:5060", "10.201.1.2:5060", "");
    request.body = Bytes::new();
    relay.on_request(&mut request, true, now);
    assert!(matches!(
        commands(&mut relay)[..],
        [RelayCommand::Open { .. }]
    ));
    let mut ok = response(200, "a1", "INVITE", &sdp("10.0.0.9", 7000));
    relay.on_response(&mut ok);
    assert!(text(&ok.body).contains("m=audio 30000 "));
    let mut ack = in_dialog("ACK", "a1", "b1", 1, &sdp("10.201.1.2", 6000));
    relay.on_request(&mut ack, false, now);
    assert!(
        text(&ack.body).contains("m=audio 30002 "),
        "{}",
        text(&ack.body)
    );
}

#[test]
fn which_calls_are_anchored() {
    let now = Instant::now();
    let body = sdp("192.0.2.5", 6000);
    // Nobody behind NAT: untouched.
    let mut relay = relay(RelayMode::Nat);
    let mut request = invite("192.0.2.5:5060", "192.0.2.5:5060", &body);
    relay.on_request(&mut request, false, now);
    assert_eq!(text(&request.body), body);
    assert!(relay.poll_command().is_none());
    // The callee behind NAT: anchored.
    relay.on_request(&mut request, true, now);
    assert!(matches!(
        relay.poll_command(),
        Some(RelayCommand::Open { .. })
    ));
    // A private SDP address from a public source: the caller is behind NAT.
    let mut relay = self::relay(RelayMode::Nat);
    let mut request = invite("192.0.2.5:5060", "192.0.2.5:5060", &sdp("10.1.1.1", 6000));
    relay.on_request(&mut request, false, now);
    assert!(matches!(
        relay.poll_command(),
        Some(RelayCommand::Open { .. })
    ));
    // ICE finds its own way.
    let mut relay = self::relay(RelayMode::Always);
    let ice = format!("{body}a=ice-ufrag:x\r\na=candidate:1 1 UDP 1 192.0.2.5 6000 typ host\r\n");
    let mut request = invite("192.0.2.5:5060", "192.0.2.5:5060", &ice);
    relay.on_request(&mut request, true, now);
    assert!(relay.poll_command().is_none());
    // Off means off.
    let mut relay = self::relay(RelayMode::Off);
    let mut request = invite("10.201.1.2:5060", "10.202.1.1:40001", &body);
    relay.on_request(&mut request, true, now);
    assert!(relay.poll_command().is_none());
    // Always: every call.
    let mut relay = self::relay(RelayMode::Always);
    let mut request = invite("192.0.2.5:5060", "192.0.2.5:5060", &body);
    relay.on_request(&mut request, false, now);
    assert!(matches!(
        relay.poll_command(),
        Some(RelayCommand::Open { .. })
    ));
}

#[test]
fn a_failed_call_ends_and_the_range_bounds_the_sessions() {
    let now = Instant::now();
    let mut relay = relay(RelayMode::Always);
    let body = sdp("192.0.2.5", 6000);
    let mut first = invite("192.0.2.5:5060", "192.0.2.5:5060", &body);
    relay.on_request(&mut first, false, now);
    let mut second = first.clone();
    second.headers.remove(&Name::CALL_ID);
    second.headers.insert(Name::CALL_ID, "call-2");
    relay.on_request(&mut second, false, now);
    assert_eq!(relay.len(), 2);
    // Ports 30000-30007 hold two calls: a third goes through unanchored.
    let mut third = first.clone();
    third.headers.remove(&Name::CALL_ID);
    third.headers.insert(Name::CALL_ID, "call-3");
    third.body = Bytes::from(body.clone());
    relay.on_request(&mut third, false, now);
    assert_eq!(text(&third.body), body);
    assert_eq!(relay.len(), 2);
    // The first fails (486): its session closes, its ports are free.
    relay.fork_ended(&first, 486);
    assert_eq!(relay.len(), 1);
    relay.on_request(&mut third, false, now);
    assert_eq!(relay.len(), 2);
    // The media of the second fell silent.
    let ended = relay.calls["call-2"].session;
    relay.ended(ended);
    assert_eq!(relay.len(), 1);
    assert_eq!(relay.used.len(), 2);
}

fn rtp() -> Vec<u8> {
    let mut packet = vec![0x80, 0, 0, 1];
    packet.extend_from_slice(&[0u8; 168]);
    packet
}

#[test]
fn media_latches_the_first_source_behind_nat_and_the_signalled_ip_otherwise() {
    let now = Instant::now();
    let mut media = Media::new([true, false], Duration::from_secs(30), now);
    let private: SocketAddr = "10.201.1.2:6000".parse().unwrap();
    let mapped: SocketAddr = "10.202.1.1:40002".parse().unwrap();
    let bob: SocketAddr = "192.0.2.7:7000".parse().unwrap();
    let bob_rtcp: SocketAddr = "192.0.2.7:7001".parse().unwrap();
    media.signalled(
        Side::Caller,
        Remote {
            rtp: Some(private),
            rtcp: None,
        },
    );
    media.signalled(
        Side::Callee,
        Remote {
            rtp: Some(bob),
            rtcp: Some(bob_rtcp),
        },
    );
    // Alice (behind NAT) is heard from her mapping: latched, sent to Bob's SDP address.
    assert_eq!(
        media.on_packet(Side::Caller, Component::Rtp, mapped, &rtp(), now),
        Some(bob)
    );
    assert_eq!(media.latched(Side::Caller), Some(mapped));
    // Someone else on Alice's side now: dropped.
    let other: SocketAddr = "10.202.1.1:40999".parse().unwrap();
    assert_eq!(
        media.on_packet(Side::Caller, Component::Rtp, other, &rtp(), now),
        None
    );
    // Bob is not behind NAT: a stranger on his side is dropped, his own IP
    // (another port: symmetric RTP) is latched and sent to Alice's mapping.
    let stranger: SocketAddr = "198.51.100.1:7000".parse().unwrap();
    assert_eq!(
        media.on_packet(Side::Callee, Component::Rtp, stranger, &rtp(), now),
        None
    );
    let bob_out: SocketAddr = "192.0.2.7:7777".parse().unwrap();
    assert_eq!(
        media.on_packet(Side::Callee, Component::Rtp, bob_out, &rtp(), now),
        Some(mapped)
    );
    // RTCP latches on its own: Alice's RTCP is not heard yet, so Bob's goes nowhere.
    assert_eq!(
        media.on_packet(Side::Callee, Component::Rtcp, bob_rtcp, &rtp(), now),
        None
    );
    // Not RTP (a STUN request, a short packet, an oversized one): dropped.
    let mut stun = rtp();
    stun[0] = 0x00;
    assert_eq!(
        media.on_packet(Side::Caller, Component::Rtp, mapped, &stun, now),
        None
    );
    assert_eq!(
        media.on_packet(Side::Caller, Component::Rtp, mapped, &[0x80], now),
        None
    );
    let huge = vec![0x80; session::MAX_PACKET + 1];
    assert_eq!(
        media.on_packet(Side::Caller, Component::Rtp, mapped, &huge, now),
        None
    );
    assert_eq!(media.forwarded, [1, 1]);
    // A re-INVITE with a new address unlatches.
    media.signalled(
        Side::Callee,
        Remote {
            rtp: Some(bob_out),
            rtcp: Some(bob_rtcp),
        },
    );
    assert_eq!(
        media.on_packet(Side::Caller, Component::Rtp, mapped, &rtp(), now),
        Some(bob_out)
    );
}

#[test]
fn media_ends_after_silence_once_answered() {
    let start = Instant::now();
    let idle = Duration::from_secs(30);
    let mut media = Media::new([true, true], idle, start);
    // Ringing: no silence limit, only the set-up limit.
    assert_eq!(media.deadline(), start + session::SETUP_LIMIT);
    assert!(!media.is_over(start + Duration::from_secs(60)));
    let answered = start + Duration::from_secs(10);
    media.answered(answered);
    assert_eq!(media.deadline(), answered + idle);
    let from: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let later = answered + Duration::from_secs(20);
    media.on_packet(Side::Caller, Component::Rtp, from, &rtp(), later);
    assert_eq!(media.deadline(), later + idle);
    assert!(!media.is_over(later + idle - Duration::from_millis(1)));
    assert!(media.is_over(later + idle));
}
