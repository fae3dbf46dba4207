use super::*;
use crate::sip::message::HeaderAccess;
use bytes::Bytes;

const UAC: &str = "10.0.0.1:5060";
const UAS: &str = "10.0.0.2:5060";

fn peer(transport: TransportKind, addr: &str) -> Peer {
    Peer {
        transport,
        addr: addr.parse().expect("addr"),
    }
}

fn udp(addr: &str) -> Peer {
    peer(TransportKind::Udp, addr)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn parse(text: &str) -> Message {
    Message::parse(Bytes::from(text.to_string())).expect("test message parses")
}

fn request(method: &str, branch: &str, cseq: u32) -> Request {
    let text = format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5060;branch={branch}\r\n\
         Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKupstream\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:p1.example.com;lr>\r\n\
         Route: <sip:p2.example.com;lr>\r\n\
         From: Alice <sip:alice@example.com>;tag=1928\r\n\
         To: Bob <sip:bob@example.com>\r\n\
         Call-ID: a84b4c76e66710\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    match parse(&text) {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

fn invite(branch: &str) -> Request {
    request("INVITE", branch, 314159)
}

/// A response to `req` with an optional To tag, as a Message.
fn answer(req: &Request, status: u16, to_tag: Option<&str>) -> Message {
    let mut resp = req.response(status);
    if let Some(tag) = to_tag {
        let to = resp.raw(&Name::TO).cloned().expect("to");
        resp.headers.remove(&Name::TO);
        resp.headers.insert(Name::TO, format!("{to};tag={tag}"));
    }
    Message::Response(resp)
}

fn transmits(tx: &mut Transactions) -> Vec<Transmit> {
    std::iter::from_fn(|| tx.poll_transmit()).collect()
}

fn events(tx: &mut Transactions) -> Vec<Event> {
    std::iter::from_fn(|| tx.poll_event()).collect()
}

/// Runs all timers up to and including `until`; returns (time since t0, transmit) pairs.
fn run_until(tx: &mut Transactions, t0: Instant, until: Instant) -> Vec<(Duration, Transmit)> {
    let mut out = Vec::new();
    while let Some(at) = tx.poll_timeout() {
        if at > until {
            break;
        }
        tx.handle_timeout(at);
        for t in transmits(tx) {
            out.push((at - t0, t));
        }
    }
    out
}

fn method_of(m: &Message) -> String {
    match m {
        Message::Request(r) => r.method.to_string(),
        Message::Response(r) => format!("{}", r.status),
    }
}

fn status_of(m: &Message) -> u16 {
    match m {
        Message::Response(r) => r.status,
        Message::Request(_) => panic!("not a response"),
    }
}

fn as_request(m: &Message) -> &Request {
    match m {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

// ---------------------------------------------------------------------------
// Client INVITE
// ---------------------------------------------------------------------------

#[test]
fn timer_a_doubles_over_udp_and_timer_b_times_out() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let key = tx.send_request(invite("z9hG4bKa"), udp(UAS), t0);
    assert_eq!(transmits(&mut tx).len(), 1, "INVITE sent at once");
    assert_eq!(tx.len(), 1);
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(500)));

    let sent = run_until(&mut tx, t0, t0 + ms(31_999));
    let times: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
    assert_eq!(times, [500, 1500, 3500, 7500, 15500, 31500]);
    assert!(sent.iter().all(|(_, t)| method_of(&t.message) == "INVITE"));
    assert!(events(&mut tx).is_empty());

    tx.handle_timeout(t0 + ms(32_000));
    let ev = events(&mut tx);
    assert!(matches!(ev.as_slice(), [Event::Timeout { key: k, .. }] if *k == key));
    assert!(transmits(&mut tx).is_empty());
    assert_eq!(tx.len(), 0);
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn no_retransmissions_over_tcp() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let key = tx.send_request(invite("z9hG4bKt"), peer(TransportKind::Tcp, UAS), t0);
    assert_eq!(transmits(&mut tx).len(), 1);
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(32_000)), "only Timer B");
    let sent = run_until(&mut tx, t0, t0 + ms(40_000));
    assert!(sent.is_empty());
    assert!(matches!(events(&mut tx).as_slice(), [Event::Timeout { key: k, .. }] if *k == key));
    assert!(tx.is_empty());
}

#[test]
fn provisional_stops_timer_a_and_b() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = invite("z9hG4bKp");
    let key = tx.send_request(req.clone(), udp(UAS), t0);
    transmits(&mut tx);
    tx.receive(answer(&req, 180, Some("b1")), udp(UAS), t0 + ms(100));
    assert!(matches!(
        events(&mut tx).as_slice(),
        [Event::Response { key: k, response, .. }] if *k == key && response.status == 180
    ));
    assert_eq!(
        tx.poll_timeout(),
        None,
        "Proceeding waits for the TU (Timer C)"
    );
    assert_eq!(tx.len(), 1);
}

#[test]
fn invite_486_is_acked_and_retransmissions_absorbed() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = invite("z9hG4bKbusy");
    let key = tx.send_request(req.clone(), udp(UAS), t0);
    transmits(&mut tx);

    tx.receive(answer(&req, 100, None), udp(UAS), t0 + ms(50));
    tx.receive(answer(&req, 486, Some("xyz")), udp(UAS), t0 + ms(100));
    let ev = events(&mut tx);
    assert_eq!(ev.len(), 2);
    assert!(
        matches!(&ev[1], Event::Response { key: k, response, .. } if *k == key && response.status == 486)
    );

    let sent = transmits(&mut tx);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, udp(UAS));
    let ack = as_request(&sent[0].message);
    assert_eq!(ack.method, Method::ACK);
    assert_eq!(ack.uri.to_string(), "sip:bob@example.com");
    assert_eq!(ack.branch().as_deref(), Some("z9hG4bKbusy"));
    assert_eq!(ack.vias().len(), 1, "only the top Via");
    assert_eq!(ack.to_header().and_then(|t| t.tag).as_deref(), Some("xyz"));
    assert_eq!(
        ack.from_header().and_then(|f| f.tag).as_deref(),
        Some("1928")
    );
    assert_eq!(ack.call_id().as_deref(), Some("a84b4c76e66710"));
    let cseq = ack.cseq().expect("cseq");
    assert_eq!((cseq.cseq, cseq.method), (314159, Method::ACK));
    let routes: Vec<_> = ack
        .headers
        .get_raw(&Name::ROUTE)
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        routes,
        ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    );
    // The ACK survives a print/parse round trip.
    assert!(Message::parse(ack.to_bytes()).is_ok());

    // Retransmitted 486: ACK again, no event.
    tx.receive(answer(&req, 486, Some("xyz")), udp(UAS), t0 + ms(600));
    let sent = transmits(&mut tx);
    assert_eq!(sent.len(), 1);
    assert_eq!(method_of(&sent[0].message), "ACK");
    assert!(events(&mut tx).is_empty());

    // No more INVITE retransmissions; Timer D frees it after 32 s.
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(100) + ms(32_000)));
    assert!(run_until(&mut tx, t0, t0 + ms(40_000)).is_empty());
    assert!(
        events(&mut tx).is_empty(),
        "no Timeout after a final response"
    );
    assert!(tx.is_empty());
}

#[test]
fn invite_486_over_tcp_terminates_at_once() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = invite("z9hG4bKtcp486");
    let tcp = peer(TransportKind::Tcp, UAS);
    tx.send_request(req.clone(), tcp, t0);
    transmits(&mut tx);
    tx.receive(answer(&req, 486, Some("x")), tcp, t0 + ms(10));
    assert_eq!(transmits(&mut tx).len(), 1, "ACK");
    assert_eq!(events(&mut tx).len(), 1);
    assert!(tx.is_empty(), "Timer D is zero over TCP");
}

#[test]
fn invite_2xx_terminates_and_retransmission_is_stray() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = invite("z9hG4bKok");
    let key = tx.send_request(req.clone(), udp(UAS), t0);
    transmits(&mut tx);
    tx.receive(answer(&req, 200, Some("ok1")), udp(UAS), t0 + ms(200));
    assert!(matches!(
        events(&mut tx).as_slice(),
        [Event::Response { key: k, response, .. }] if *k == key && response.status == 200
    ));
    assert!(transmits(&mut tx).is_empty(), "the TU ACKs a 2xx");
    assert!(tx.is_empty());
    assert_eq!(tx.poll_timeout(), None);

    tx.receive(answer(&req, 200, Some("ok1")), udp(UAS), t0 + ms(700));
    assert!(matches!(
        events(&mut tx).as_slice(),
        [Event::StrayResponse { response, from }] if response.status == 200 && *from == udp(UAS)
    ));
}

// ---------------------------------------------------------------------------
// Client non-INVITE
// ---------------------------------------------------------------------------

#[test]
fn timer_e_caps_at_t2_and_timer_f_times_out() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let key = tx.send_request(request("OPTIONS", "z9hG4bKe", 1), udp(UAS), t0);
    transmits(&mut tx);
    let sent = run_until(&mut tx, t0, t0 + ms(31_999));
    let times: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
    assert_eq!(
        times,
        [
            500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    tx.handle_timeout(t0 + ms(32_000));
    assert!(matches!(events(&mut tx).as_slice(), [Event::Timeout { key: k, .. }] if *k == key));
    assert!(tx.is_empty());
}

#[test]
fn timer_e_is_t2_after_provisional_and_k_frees() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = request("MESSAGE", "z9hG4bKe2", 7);
    let key = tx.send_request(req.clone(), udp(UAS), t0);
    transmits(&mut tx);
    // Retransmission at 500 ms, then a provisional at 600 ms.
    assert_eq!(run_until(&mut tx, t0, t0 + ms(600)).len(), 1);
    tx.receive(answer(&req, 100, None), udp(UAS), t0 + ms(600));
    assert_eq!(events(&mut tx).len(), 1);
    // The pending Timer E (1.5 s) fires, then every T2.
    let sent = run_until(&mut tx, t0, t0 + ms(10_000));
    let times: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
    assert_eq!(times, [1500, 5500, 9500]);

    tx.receive(answer(&req, 200, Some("t")), udp(UAS), t0 + ms(10_000));
    assert!(matches!(
        events(&mut tx).as_slice(),
        [Event::Response { key: k, response, .. }] if *k == key && response.status == 200
    ));
    tx.receive(answer(&req, 200, Some("t")), udp(UAS), t0 + ms(10_100));
    assert!(events(&mut tx).is_empty(), "retransmitted final absorbed");
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(15_000)), "Timer K = T4");
    assert!(run_until(&mut tx, t0, t0 + ms(20_000)).is_empty());
    assert!(tx.is_empty());
}

// ---------------------------------------------------------------------------
// Server INVITE
// ---------------------------------------------------------------------------

fn receive_invite(tx: &mut Transactions, req: &Request, from: Peer, now: Instant) -> ServerKey {
    tx.receive(Message::Request(req.clone()), from, now);
    let ev = events(tx);
    let [
        Event::Request {
            key,
            request,
            from: f,
        },
    ] = ev.as_slice()
    else {
        panic!("expected one Request event, got {ev:?}")
    };
    assert_eq!(*f, from);
    assert_eq!(request.method, req.method);
    *key
}

#[test]
fn server_invite_sends_100_and_absorbs_retransmissions() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = invite("z9hG4bKs1");
    let key = receive_invite(&mut tx, &req, udp(UAC), t0);
    let sent = transmits(&mut tx);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, udp(UAC));
    assert_eq!(status_of(&sent[0].message), 100);

    // Retransmitted INVITE: 100 re-sent, no event.
    tx.receive(Message::Request(req.clone()), udp(UAC), t0 + ms(500));
    assert!(events(&mut tx).is_empty());
    let sent = transmits(&mut tx);
    assert_eq!(sent.len(), 1);
    assert_eq!(status_of(&sent[0].message), 100);

    // After 180, the 180 is what gets re-sent.
    tx.respond(key, req.response(180), t0 + ms(600));
    assert_eq!(status_of(&transmits(&mut tx)[0].message), 180);
    tx.receive(Message::Request(req.clone()), udp(UAC), t0 + ms(1500));
    assert!(events(&mut tx).is_empty());
    let sent = transmits(&mut tx);
    assert_eq!(sent.len(), 1);
    assert_eq!(status_of(&sent[0].message), 180);
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn server_invite_timer_g_until_ack_then_timer_i() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = invite("z9hG4bKs2");
    let key = receive_invite(&mut tx, &req, udp(UAC), t0);
    transmits(&mut tx);
    let resp = match answer(&req, 486, Some("srv")) {
        Message::Response(r) => r,
        Message::Request(_) => unreachable!(),
    };
    tx.respond(key, resp, t0);
    assert_eq!(status_of(&transmits(&mut tx)[0].message), 486);

    let sent = run_until(&mut tx, t0, t0 + ms(12_000));
    let times: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
    assert_eq!(
        times,
        [500, 1500, 3500, 7500, 11500],
        "Timer G doubles up to T2"
    );
    assert!(sent.iter().all(|(_, t)| status_of(&t.message) == 486));

    // Retransmitted INVITE in Completed: 486 re-sent.
    tx.receive(Message::Request(req.clone()), udp(UAC), t0 + ms(12_000));
    assert_eq!(transmits(&mut tx).len(), 1);

    // ACK (same branch): Confirmed, absorbed.
    let mut ack = request("ACK", "z9hG4bKs2", 314159);
    ack.headers.remove(&Name::TO);
    ack.headers
        .insert(Name::TO, "Bob <sip:bob@example.com>;tag=srv");
    tx.receive(Message::Request(ack.clone()), udp(UAC), t0 + ms(12_100));
    assert!(events(&mut tx).is_empty(), "ACK for a non-2xx is absorbed");
    assert!(transmits(&mut tx).is_empty());
    tx.receive(Message::Request(ack), udp(UAC), t0 + ms(12_200));
    tx.receive(Message::Request(req), udp(UAC), t0 + ms(12_300));
    assert!(events(&mut tx).is_empty());
    assert!(
        transmits(&mut tx).is_empty(),
        "Confirmed absorbs everything"
    );

    assert_eq!(tx.poll_timeout(), Some(t0 + ms(17_100)), "Timer I = T4");
    assert!(run_until(&mut tx, t0, t0 + ms(60_000)).is_empty());
    assert!(tx.is_empty());
}

#[test]
fn server_invite_timer_h_gives_up_without_ack() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = invite("z9hG4bKs3");
    let key = receive_invite(&mut tx, &req, udp(UAC), t0);
    tx.respond(key, req.response(603), t0);
    let sent = run_until(&mut tx, t0, t0 + ms(100_000));
    assert!(sent.last().is_some_and(|(d, _)| *d < ms(32_000)));
    assert!(events(&mut tx).is_empty());
    assert!(tx.is_empty());
}

#[test]
fn server_invite_2xx_terminates_and_ack_is_an_event() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = invite("z9hG4bKs4");
    let key = receive_invite(&mut tx, &req, udp(UAC), t0);
    transmits(&mut tx);
    tx.respond(key, req.response(200), t0 + ms(10));
    assert_eq!(status_of(&transmits(&mut tx)[0].message), 200);
    assert!(tx.is_empty());
    // A late response on the finished transaction is dropped.
    tx.respond(key, req.response(500), t0 + ms(20));
    assert!(transmits(&mut tx).is_empty());

    let ack = request("ACK", "z9hG4bKnewbranch", 314159);
    tx.receive(Message::Request(ack), udp(UAC), t0 + ms(30));
    assert!(matches!(
        events(&mut tx).as_slice(),
        [Event::Ack { request, from }] if request.method == Method::ACK && *from == udp(UAC)
    ));
    assert!(tx.is_empty());
}

#[test]
fn server_invite_over_tcp() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let tcp = peer(TransportKind::Tcp, UAC);
    let req = invite("z9hG4bKs5");
    let key = receive_invite(&mut tx, &req, tcp, t0);
    tx.respond(key, req.response(404), t0);
    assert_eq!(transmits(&mut tx).len(), 2, "100 and 404");
    assert_eq!(
        tx.poll_timeout(),
        Some(t0 + ms(32_000)),
        "no Timer G, Timer H only"
    );
    tx.receive(
        Message::Request(request("ACK", "z9hG4bKs5", 314159)),
        tcp,
        t0 + ms(5),
    );
    assert!(tx.is_empty(), "Timer I is zero over TCP");
    assert!(events(&mut tx).is_empty());
}

// ---------------------------------------------------------------------------
// Server non-INVITE
// ---------------------------------------------------------------------------

#[test]
fn server_non_invite_retransmission_and_timer_j() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = request("OPTIONS", "z9hG4bKn1", 5);
    let key = receive_invite(&mut tx, &req, udp(UAC), t0);
    assert!(
        transmits(&mut tx).is_empty(),
        "no automatic 100 for non-INVITE"
    );

    tx.receive(Message::Request(req.clone()), udp(UAC), t0 + ms(500));
    assert!(events(&mut tx).is_empty());
    assert!(transmits(&mut tx).is_empty(), "nothing to resend yet");

    tx.respond(key, req.response(200), t0 + ms(600));
    assert_eq!(status_of(&transmits(&mut tx)[0].message), 200);
    tx.receive(Message::Request(req.clone()), udp(UAC), t0 + ms(1500));
    assert!(events(&mut tx).is_empty());
    let sent = transmits(&mut tx);
    assert_eq!(sent.len(), 1);
    assert_eq!(status_of(&sent[0].message), 200);
    assert_eq!(sent[0].to, udp(UAC));

    assert_eq!(tx.len(), 1);
    assert_eq!(
        tx.poll_timeout(),
        Some(t0 + ms(600) + ms(32_000)),
        "Timer J"
    );
    run_until(&mut tx, t0, t0 + ms(40_000));
    assert_eq!(tx.len(), 0);
}

#[test]
fn server_non_invite_over_tcp_ends_with_final() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let tcp = peer(TransportKind::Tls, UAC);
    let req = request("REGISTER", "z9hG4bKn2", 1);
    let key = receive_invite(&mut tx, &req, tcp, t0);
    tx.respond(key, req.response(100), t0);
    tx.respond(key, req.response(200), t0);
    let sent = transmits(&mut tx);
    assert_eq!(
        sent.iter()
            .map(|t| status_of(&t.message))
            .collect::<Vec<_>>(),
        [100, 200]
    );
    assert!(sent.iter().all(|t| t.to == tcp));
    assert!(tx.is_empty());
}

// ---------------------------------------------------------------------------
// CANCEL
// ---------------------------------------------------------------------------

#[test]
fn cancel_is_held_until_a_provisional() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = invite("z9hG4bKc1");
    let key = tx.send_request(req.clone(), udp(UAS), t0);
    transmits(&mut tx);
    tx.cancel(key, t0 + ms(100));
    assert!(
        transmits(&mut tx).is_empty(),
        "no CANCEL before a provisional"
    );

    tx.receive(answer(&req, 180, Some("r")), udp(UAS), t0 + ms(300));
    assert_eq!(events(&mut tx).len(), 1);
    let sent = transmits(&mut tx);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, udp(UAS));
    let cancel = as_request(&sent[0].message).clone();
    assert_eq!(cancel.method, Method::CANCEL);
    assert_eq!(cancel.uri.to_string(), "sip:bob@example.com");
    assert_eq!(cancel.branch().as_deref(), Some("z9hG4bKc1"));
    assert_eq!(cancel.vias().len(), 1);
    assert_eq!(
        cancel.to_header().and_then(|t| t.tag),
        None,
        "To of the INVITE"
    );
    assert_eq!(
        cancel.from_header().and_then(|f| f.tag).as_deref(),
        Some("1928")
    );
    let cseq = cancel.cseq().expect("cseq");
    assert_eq!((cseq.cseq, cseq.method), (314159, Method::CANCEL));
    assert_eq!(cancel.headers.get_raw(&Name::ROUTE).count(), 2);
    assert_eq!(tx.len(), 2, "INVITE and CANCEL transactions");

    // The 200 to the CANCEL is absorbed; the 487 to the INVITE is a Response + ACK.
    tx.receive(answer(&cancel, 200, Some("r")), udp(UAS), t0 + ms(350));
    assert!(events(&mut tx).is_empty());
    tx.receive(answer(&req, 487, Some("r")), udp(UAS), t0 + ms(400));
    assert!(matches!(
        events(&mut tx).as_slice(),
        [Event::Response { key: k, response, .. }] if *k == key && response.status == 487
    ));
    assert_eq!(method_of(&transmits(&mut tx)[0].message), "ACK");

    run_until(&mut tx, t0, t0 + ms(100_000));
    assert!(events(&mut tx).is_empty());
    assert!(tx.is_empty());
}

#[test]
fn pending_cancel_dropped_on_final() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = invite("z9hG4bKc2");
    let key = tx.send_request(req.clone(), udp(UAS), t0);
    transmits(&mut tx);
    tx.cancel(key, t0);
    tx.receive(answer(&req, 603, Some("d")), udp(UAS), t0 + ms(100));
    let sent = transmits(&mut tx);
    assert_eq!(sent.len(), 1);
    assert_eq!(method_of(&sent[0].message), "ACK", "ACK, no CANCEL");
    tx.receive(answer(&req, 603, Some("d")), udp(UAS), t0 + ms(200));
    let sent = transmits(&mut tx);
    assert_eq!(sent.len(), 1);
    assert_eq!(method_of(&sent[0].message), "ACK");
    assert_eq!(tx.len(), 1);
}

#[test]
fn cancel_unanswered_invite_times_out_after_64_t1() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = invite("z9hG4bKc3");
    let key = tx.send_request(req.clone(), udp(UAS), t0);
    tx.receive(answer(&req, 180, Some("r")), udp(UAS), t0 + ms(100));
    tx.cancel(key, t0 + ms(1_000));
    transmits(&mut tx);
    events(&mut tx);
    let sent = run_until(&mut tx, t0, t0 + ms(100_000));
    assert!(
        sent.iter().all(|(_, t)| method_of(&t.message) == "CANCEL"),
        "only the CANCEL is retransmitted"
    );
    assert!(matches!(events(&mut tx).as_slice(), [Event::Timeout { key: k, .. }] if *k == key));
    assert!(tx.is_empty());
}

#[test]
fn server_cancel_matching_invite() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = invite("z9hG4bKsc");
    let key = receive_invite(&mut tx, &req, udp(UAC), t0);
    transmits(&mut tx);

    let cancel = request("CANCEL", "z9hG4bKsc", 314159);
    tx.receive(Message::Request(cancel.clone()), udp(UAC), t0 + ms(100));
    let sent = transmits(&mut tx);
    assert_eq!(sent.len(), 1);
    let Message::Response(ok) = &sent[0].message else {
        panic!("not a response")
    };
    assert_eq!(ok.status, 200);
    assert_eq!(ok.cseq().map(|c| c.method), Ok(Method::CANCEL));
    assert!(ok.to_header().and_then(|t| t.tag).is_some(), "To tag added");
    assert!(matches!(
        events(&mut tx).as_slice(),
        [Event::Cancel { invite, request, from }]
            if *invite == key && request.method == Method::CANCEL && *from == udp(UAC)
    ));

    // A retransmitted CANCEL gets the 200 again, no event.
    tx.receive(Message::Request(cancel), udp(UAC), t0 + ms(600));
    let sent = transmits(&mut tx);
    assert_eq!(sent.len(), 1);
    assert_eq!(status_of(&sent[0].message), 200);
    assert!(events(&mut tx).is_empty());

    tx.respond(key, req.response(487), t0 + ms(700));
    assert_eq!(status_of(&transmits(&mut tx)[0].message), 487);
    tx.receive(
        Message::Request(request("ACK", "z9hG4bKsc", 314159)),
        udp(UAC),
        t0 + ms(800),
    );
    run_until(&mut tx, t0, t0 + ms(100_000));
    assert!(events(&mut tx).is_empty());
    assert!(tx.is_empty());
}

#[test]
fn server_cancel_matching_nothing_gets_481() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    tx.receive(
        Message::Request(request("CANCEL", "z9hG4bKnone", 1)),
        udp(UAC),
        t0,
    );
    let sent = transmits(&mut tx);
    assert_eq!(sent.len(), 1);
    assert_eq!(status_of(&sent[0].message), 481);
    assert!(events(&mut tx).is_empty());
    // A CANCEL from another sent-by does not match the INVITE either.
    let req = invite("z9hG4bKother");
    receive_invite(&mut tx, &req, udp(UAC), t0);
    transmits(&mut tx);
    let mut cancel = request("CANCEL", "z9hG4bKother", 314159);
    cancel.headers.remove(&Name::VIA);
    cancel
        .headers
        .insert(Name::VIA, "SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKother");
    tx.receive(Message::Request(cancel), udp(UAC), t0);
    assert_eq!(status_of(&transmits(&mut tx)[0].message), 481);
    assert!(events(&mut tx).is_empty());
    run_until(&mut tx, t0, t0 + ms(100_000));
    assert_eq!(tx.len(), 1, "only the INVITE, waiting for the TU");
}

// ---------------------------------------------------------------------------
// Matching edge cases
// ---------------------------------------------------------------------------

#[test]
fn rfc2543_requests_match_by_dialog_fields() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = invite("old1");
    let key = receive_invite(&mut tx, &req, udp(UAC), t0);
    tx.receive(Message::Request(req.clone()), udp(UAC), t0 + ms(500));
    assert!(events(&mut tx).is_empty(), "retransmission recognised");
    let cancel = request("CANCEL", "old1", 314159);
    tx.receive(Message::Request(cancel), udp(UAC), t0 + ms(600));
    assert!(matches!(events(&mut tx).as_slice(), [Event::Cancel { invite, .. }] if *invite == key));
    // A different CSeq is a new transaction.
    let other = request("INVITE", "old1", 314160);
    receive_invite(&mut tx, &other, udp(UAC), t0 + ms(700));
}

#[test]
fn host_case_and_branch_case() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let text = |host: &str| {
        format!(
            "OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP {host};branch=z9hG4bKh\r\n\
             From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
        )
    };
    tx.receive(parse(&text("Host.Example.com")), udp(UAC), t0);
    assert_eq!(events(&mut tx).len(), 1);
    tx.receive(parse(&text("host.example.COM")), udp(UAC), t0);
    assert!(
        events(&mut tx).is_empty(),
        "host compared case-insensitively"
    );
    tx.receive(parse(&text("other.example.com")), udp(UAC), t0);
    assert_eq!(
        events(&mut tx).len(),
        1,
        "different sent-by, different transaction"
    );
}

#[test]
fn malformed_messages_do_not_panic() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    for text in [
        "OPTIONS sip:b@x SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n",
        "OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n",
        "OPTIONS sip:b@x SIP/2.0\r\nVia: garbage\r\nCSeq: x\r\n\r\n",
        "ACK sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n",
        "CANCEL sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCall-ID: c\r\nCSeq: 1 CANCEL\r\n\r\n",
    ] {
        tx.receive(parse(text), udp(UAC), t0);
    }
    for text in [
        "SIP/2.0 200 OK\r\n\r\n",
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n",
        "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: nope\r\n\r\n",
    ] {
        tx.receive(parse(text), udp(UAS), t0);
    }
    let ev = events(&mut tx);
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::StrayResponse { .. }))
            .count(),
        3
    );
    // Client requests without Via or branch still run and time out.
    let mut bare = Request::new(Method::OPTIONS, invite("z9hG4bKx").uri);
    bare.headers.insert(Name::CSEQ, "1 OPTIONS");
    let key = tx.send_request(bare, udp(UAS), t0);
    tx.cancel(key, t0);
    tx.respond(ServerKey(key.0), invite("z9hG4bKx").response(200), t0);
    run_until(&mut tx, t0, t0 + ms(100_000));
    assert!(
        events(&mut tx)
            .iter()
            .any(|e| matches!(e, Event::Timeout { key: k, .. } if *k == key))
    );
    assert!(tx.is_empty());
}

#[test]
fn ack_via_send_request_is_not_a_transaction() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let key = tx.send_request(request("ACK", "z9hG4bKack", 1), udp(UAS), t0);
    assert_eq!(transmits(&mut tx).len(), 1);
    assert!(tx.is_empty());
    tx.cancel(key, t0);
    tx.transport_error(key, t0);
    assert!(events(&mut tx).is_empty());
}

#[test]
fn transport_error_times_out_client() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let key = tx.send_request(
        request("BYE", "z9hG4bKbye", 2),
        peer(TransportKind::Tcp, UAS),
        t0,
    );
    tx.transport_error(key, t0);
    assert!(matches!(events(&mut tx).as_slice(), [Event::Timeout { key: k, .. }] if *k == key));
    assert!(tx.is_empty());
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn many_transactions_drain() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    for i in 0..200u32 {
        let req = invite(&format!("z9hG4bKm{i}"));
        let k = tx.send_request(req.clone(), udp(UAS), t0);
        if i % 3 == 0 {
            tx.receive(answer(&req, 486, Some("x")), udp(UAS), t0 + ms(10));
        } else if i % 3 == 1 {
            tx.receive(answer(&req, 180, Some("x")), udp(UAS), t0 + ms(10));
            tx.cancel(k, t0 + ms(20));
        }
        let s = request("MESSAGE", &format!("z9hG4bKsm{i}"), i);
        tx.receive(Message::Request(s.clone()), udp(UAC), t0);
        if let Some(Event::Request { key, .. }) = events(&mut tx).pop() {
            tx.respond(key, s.response(202), t0 + ms(5));
        }
    }
    assert!(tx.len() > 200);
    run_until(&mut tx, t0, t0 + ms(1_000_000));
    assert!(tx.is_empty());
    assert_eq!(tx.poll_timeout(), None);
    assert!(tx.clients.is_empty() && tx.servers.is_empty());
}

#[test]
fn comma_separated_vias_use_the_first() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = invite("z9hG4bKcv");
    let key = tx.send_request(req.clone(), udp(UAS), t0);
    let text = "SIP/2.0 180 Ringing\r\n\
        Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKcv;received=10.0.0.1, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKup\r\n\
        From: Alice <sip:alice@example.com>;tag=1928\r\nTo: Bob <sip:bob@example.com>;tag=9\r\n\
        Call-ID: a84b4c76e66710\r\nCSeq: 314159 INVITE\r\n\r\n";
    tx.receive(parse(text), udp(UAS), t0 + ms(5));
    assert!(matches!(events(&mut tx).as_slice(), [Event::Response { key: k, .. }] if *k == key));
    // Same branch, other method (CSeq BYE): no match.
    tx.receive(
        parse(&text.replace("314159 INVITE", "314159 BYE")),
        udp(UAS),
        t0 + ms(6),
    );
    assert!(matches!(
        events(&mut tx).as_slice(),
        [Event::StrayResponse { .. }]
    ));
}

#[test]
fn late_timer_handling_does_not_burst() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    tx.send_request(request("OPTIONS", "z9hG4bKlate", 1), udp(UAS), t0);
    transmits(&mut tx);
    // The driver wakes up 3 s late: one retransmission, next one interval later.
    tx.handle_timeout(t0 + ms(3_500));
    assert_eq!(transmits(&mut tx).len(), 1);
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(4_500)));
}

#[test]
fn failed_transmit_times_out_its_client_transaction() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = invite("z9hG4bKfail");
    let key = tx.send_request(req.clone(), peer(TransportKind::Tcp, UAS), t0);
    let sent = transmits(&mut tx);
    // A failure reported for another peer does not match.
    let other = Transmit {
        to: udp(UAC),
        message: sent[0].message.clone(),
    };
    tx.transmit_failed(&other, t0);
    assert!(events(&mut tx).is_empty());
    tx.transmit_failed(&sent[0], t0 + ms(1));
    assert!(matches!(events(&mut tx).as_slice(), [Event::Timeout { key: k, .. }] if *k == key));
    assert!(tx.is_empty());
    // A response that failed is ignored.
    tx.transmit_failed(
        &Transmit {
            to: udp(UAC),
            message: answer(&req, 200, None),
        },
        t0,
    );
    assert!(events(&mut tx).is_empty());
}
