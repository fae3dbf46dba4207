//! Calls voicemail answers, through a whole core on a virtual clock (a
//! ring of one, no sockets). Diversion: a callee's 486 becomes
//! voicemail's 200 and the caller never sees the 486; a callee that only
//! rings is cancelled when `no_answer_s` is up and voicemail answers; a
//! 2xx, a 6xx and the caller's CANCEL are relayed as without voicemail.
//! The node's 200 is re-sent until the ACK, and without one the node
//! hangs up with a BYE after 64·T1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ezk_sip_types::{Method, Name};

use super::{Core, CoreConfig, Input, Location, Output};
use crate::overlay::Overlay;
use crate::ring::RingConfig;
use crate::sip::message::{HeaderAccess, Message, Request, Response};
use crate::sip::transaction::{Peer, TransportKind};
use crate::voicemail::MediaCall;

const CALLEE: u16 = 5090;
const CALLER: u16 = 7000;

fn udp(port: u16) -> Peer {
    Peer {
        transport: TransportKind::Udp,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn core(no_answer: Option<Duration>, now: Instant) -> Core {
    let local = udp(5060).addr;
    let mut config = CoreConfig::new(local, vec!["example.test".into()]);
    config.voicemail.enabled = true;
    config.voicemail.no_answer = no_answer;
    let overlay = Overlay::new(local, RingConfig::default(), &[], now);
    Core::new(config, Location::Overlay(Box::new(overlay)), now)
}

/// What the core sends now (peer, message), and the RTP sockets it asks for.
fn sent(core: &mut Core) -> (Vec<(Peer, Message)>, Vec<MediaCall>) {
    let (mut out, mut media) = (Vec::new(), Vec::new());
    loop {
        match core.poll_output() {
            Output::Transmit { to, bytes } => out.push((
                to,
                Message::parse(bytes).expect("the core sends what parses"),
            )),
            Output::OpenMedia { call, .. } => media.push(call),
            Output::Timeout(_) => return (out, media),
            _ => {}
        }
    }
}

fn feed(
    core: &mut Core,
    text: &str,
    port: u16,
    now: Instant,
) -> (Vec<(Peer, Message)>, Vec<MediaCall>) {
    let bytes = Bytes::from(text.replace('\n', "\r\n"));
    core.handle_input(
        Input::Datagram {
            bytes,
            from: udp(port),
        },
        now,
    );
    sent(core)
}

fn register(core: &mut Core, now: Instant) {
    let (out, _) = feed(
        core,
        &format!(
            "REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{CALLEE};branch=z9hG4bKreg1
From: <sip:alice@example.test>;tag=a1
To: <sip:alice@example.test>
Call-ID: reg-1
CSeq: 1 REGISTER
Contact: <sip:alice@127.0.0.1:{CALLEE}>
Expires: 600
Content-Length: 0

"
        ),
        CALLEE,
        now,
    );
    assert!(
        out.iter()
            .any(|(_, m)| matches!(m, Message::Response(r) if r.status == 200)),
        "registered: {out:?}"
    );
}

fn invite(n: u32) -> String {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    format!(
        "INVITE sip:alice@example.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{CALLER};branch=z9hG4bKinv{n}
Max-Forwards: 70
From: <sip:bob@example.test>;tag=b{n}
To: <sip:alice@example.test>
Call-ID: call-{n}
CSeq: 1 INVITE
Contact: <sip:bob@127.0.0.1:{CALLER}>
Content-Type: application/sdp
Content-Length: {}

{}",
        sdp.len(),
        sdp.replace("\r\n", "\n")
    )
}

/// Calls alice: the INVITE her phone gets.
fn call(core: &mut Core, n: u32, now: Instant) -> Request {
    let (out, media) = feed(core, &invite(n), CALLER, now);
    assert!(media.is_empty());
    out.into_iter()
        .find_map(|(peer, m)| match m {
            Message::Request(r) if peer == udp(CALLEE) && r.method == Method::INVITE => Some(r),
            _ => None,
        })
        .expect("the INVITE goes to alice's phone")
}

/// Her phone's answer to `request`, with a To tag.
fn answer(request: &Request, status: u16) -> String {
    let mut response: Response = request.response(status);
    let to = response
        .raw(&Name::TO)
        .map(|t| t.to_string())
        .unwrap_or_default();
    response.headers.remove(&Name::TO);
    response.headers.insert(Name::TO, format!("{to};tag=uas1"));
    String::from_utf8_lossy(&response.to_bytes()).replace("\r\n", "\n")
}

fn to_caller(out: &[(Peer, Message)]) -> Vec<u16> {
    out.iter()
        .filter(|(p, _)| *p == udp(CALLER))
        .filter_map(|(_, m)| match m {
            Message::Response(r) => Some(r.status),
            _ => None,
        })
        .filter(|s| *s != 100)
        .collect()
}

fn requests_to_callee(out: &[(Peer, Message)]) -> Vec<Method> {
    out.iter()
        .filter(|(p, _)| *p == udp(CALLEE))
        .filter_map(|(_, m)| match m {
            Message::Request(r) => Some(r.method.clone()),
            _ => None,
        })
        .collect()
}

/// The socket opens: the caller's 200 (with an SDP answer).
fn open(core: &mut Core, call: MediaCall, now: Instant) -> Vec<Response> {
    let local = Some(SocketAddr::from(([127, 0, 0, 1], 20000)));
    core.handle_input(Input::MediaOpened { call, local }, now);
    let (out, _) = sent(core);
    out.into_iter()
        .filter(|(p, _)| *p == udp(CALLER))
        .filter_map(|(_, m)| match m {
            Message::Response(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn a_busy_callee_is_diverted_and_the_caller_gets_only_voicemails_200() {
    let t0 = Instant::now();
    let mut core = core(Some(Duration::from_secs(20)), t0);
    register(&mut core, t0);
    let forwarded = call(&mut core, 1, t0);
    let (out, media) = feed(&mut core, &answer(&forwarded, 486), CALLEE, t0);
    assert_eq!(to_caller(&out), Vec::<u16>::new(), "no 486 to the caller");
    assert_eq!(
        requests_to_callee(&out),
        vec![Method::ACK],
        "her 486 is ACKed"
    );
    let [call] = media[..] else {
        panic!("voicemail opens one RTP socket: {media:?}");
    };
    let answers = open(&mut core, call, t0);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].status, 200);
    assert!(String::from_utf8_lossy(&answers[0].body).contains("m=audio 20000 "));
    assert!(
        answers[0]
            .raw(&Name::CONTACT)
            .is_some_and(|c| c.contains("voicemail@"))
    );
}

#[test]
fn a_callee_that_only_rings_is_cancelled_at_no_answer_and_voicemail_answers() {
    let t0 = Instant::now();
    let mut core = core(Some(Duration::from_secs(2)), t0);
    register(&mut core, t0);
    let forwarded = call(&mut core, 2, t0);
    let (out, _) = feed(&mut core, &answer(&forwarded, 180), CALLEE, t0);
    assert_eq!(to_caller(&out), vec![180], "her ringing is relayed");

    let t1 = t0 + Duration::from_millis(1999);
    core.handle_input(Input::Timeout, t1);
    let (out, media) = sent(&mut core);
    assert!(media.is_empty() && !requests_to_callee(&out).contains(&Method::CANCEL));

    let t2 = t0 + Duration::from_secs(2);
    core.handle_input(Input::Timeout, t2);
    let (out, media) = sent(&mut core);
    assert_eq!(
        requests_to_callee(&out),
        vec![Method::CANCEL],
        "her branch is cancelled"
    );
    let [call] = media[..] else {
        panic!("voicemail opens one RTP socket: {media:?}");
    };
    let (out, _) = feed(&mut core, &answer(&forwarded, 487), CALLEE, t2);
    assert_eq!(to_caller(&out), Vec::<u16>::new(), "her 487 stays here");
    assert_eq!(requests_to_callee(&out), vec![Method::ACK]);
    let answers = open(&mut core, call, t2);
    assert_eq!(
        answers.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![200]
    );
}

#[test]
fn an_answer_a_global_failure_and_a_cancel_are_relayed_without_voicemail() {
    let t0 = Instant::now();
    let mut core = core(Some(Duration::from_secs(2)), t0);
    register(&mut core, t0);

    let forwarded = call(&mut core, 3, t0);
    let (out, media) = feed(&mut core, &answer(&forwarded, 200), CALLEE, t0);
    assert_eq!(to_caller(&out), vec![200]);
    assert!(media.is_empty());

    let forwarded = call(&mut core, 4, t0);
    let (out, media) = feed(&mut core, &answer(&forwarded, 603), CALLEE, t0);
    assert_eq!(to_caller(&out), vec![603]);
    assert!(media.is_empty());

    let forwarded = call(&mut core, 5, t0);
    feed(&mut core, &answer(&forwarded, 180), CALLEE, t0);
    let cancel = invite(5)
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let (out, _) = feed(&mut core, &cancel, CALLER, t0);
    assert!(requests_to_callee(&out).contains(&Method::CANCEL));
    feed(&mut core, &answer(&forwarded, 487), CALLEE, t0);

    // No no-answer deadline is left to fire for any of them.
    let t1 = t0 + Duration::from_secs(3);
    core.handle_input(Input::Timeout, t1);
    let (out, media) = sent(&mut core);
    assert!(media.is_empty(), "voicemail took a call it should not have");
    assert!(!to_caller(&out).contains(&200));
    assert!(core.diversions.is_empty());
}

#[test]
fn without_no_answer_a_ringing_call_rings_on() {
    let t0 = Instant::now();
    let mut core = core(None, t0);
    register(&mut core, t0);
    let forwarded = call(&mut core, 6, t0);
    feed(&mut core, &answer(&forwarded, 180), CALLEE, t0);
    core.handle_input(Input::Timeout, t0 + Duration::from_secs(60));
    let (out, media) = sent(&mut core);
    assert!(media.is_empty());
    assert!(!requests_to_callee(&out).contains(&Method::CANCEL));
    let (out, media) = feed(
        &mut core,
        &answer(&forwarded, 480),
        CALLEE,
        t0 + Duration::from_secs(61),
    );
    assert_eq!(to_caller(&out), Vec::<u16>::new(), "480 taken by voicemail");
    assert_eq!(media.len(), 1);
}

/// Voicemail answers a call to alice (her phone says 486): the 200.
fn answered(core: &mut Core, n: u32, t0: Instant) -> Response {
    register(core, t0);
    let forwarded = call(core, n, t0);
    let (_, media) = feed(core, &answer(&forwarded, 486), CALLEE, t0);
    let mut answers = open(core, media[0], t0);
    assert_eq!(answers.len(), 1);
    answers.remove(0)
}

fn ack(ok: &Response, n: u32) -> String {
    let to = ok.raw(&Name::TO).map(|t| t.to_string()).unwrap_or_default();
    format!(
        "ACK sip:voicemail@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{CALLER};branch=z9hG4bKack{n}
Max-Forwards: 70
From: <sip:bob@example.test>;tag=b{n}
To: {to}
Call-ID: call-{n}
CSeq: 1 ACK
Content-Length: 0

"
    )
}

#[test]
fn the_200_is_re_sent_t1_doubling_until_the_ack() {
    let t0 = Instant::now();
    let mut core = core(None, t0);
    let ok = answered(&mut core, 7, t0);
    core.handle_input(Input::Timeout, t0 + Duration::from_millis(499));
    assert_eq!(to_caller(&sent(&mut core).0), Vec::<u16>::new());
    core.handle_input(Input::Timeout, t0 + Duration::from_millis(500));
    assert_eq!(to_caller(&sent(&mut core).0), vec![200], "after T1");
    core.handle_input(Input::Timeout, t0 + Duration::from_millis(1499));
    assert_eq!(to_caller(&sent(&mut core).0), Vec::<u16>::new());
    core.handle_input(Input::Timeout, t0 + Duration::from_millis(1500));
    assert_eq!(to_caller(&sent(&mut core).0), vec![200], "after 2·T1 more");
    feed(&mut core, &ack(&ok, 7), CALLER, t0 + Duration::from_secs(2));
    assert!(core.answers.is_empty(), "the ACK stops it");
    core.handle_input(Input::Timeout, t0 + Duration::from_secs(40));
    let (out, _) = sent(&mut core);
    assert!(
        to_caller(&out).is_empty(),
        "nothing more after the ACK: {out:?}"
    );
    assert!(
        !out.iter()
            .any(|(_, m)| matches!(m, Message::Request(r) if r.method == Method::BYE)),
        "no BYE after the ACK"
    );
}

#[test]
fn without_an_ack_the_node_hangs_up_after_64_t1() {
    let t0 = Instant::now();
    let mut core = core(None, t0);
    answered(&mut core, 8, t0);
    let mut now = t0;
    let mut resent = 0;
    let mut bye = None;
    while now < t0 + Duration::from_secs(33) {
        now = next_deadline(&mut core).max(now);
        core.handle_input(Input::Timeout, now);
        let (out, _) = sent(&mut core);
        resent += to_caller(&out).iter().filter(|s| **s == 200).count();
        if let Some(r) = out.into_iter().find_map(|(p, m)| match m {
            Message::Request(r) if r.method == Method::BYE => Some((p, r)),
            _ => None,
        }) {
            bye = Some((now, r));
            break;
        }
    }
    assert_eq!(resent, 10, "T1 doubling to T2 within 64·T1");
    let (at, (peer, bye)) = bye.expect("a BYE");
    assert_eq!(at, t0 + Duration::from_secs(32), "64·T1");
    assert_eq!(peer, udp(CALLER), "to the caller's Contact");
    assert_eq!(
        bye.raw(&Name::CALL_ID).map(|v| v.to_string()).as_deref(),
        Some("call-8")
    );
}

/// Drains the outputs and gives the deadline they end with.
fn next_deadline(core: &mut Core) -> Instant {
    loop {
        if let Output::Timeout(at) = core.poll_output() {
            return at;
        }
    }
}
