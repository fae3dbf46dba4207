//! Client transactions: INVITE (timers A, B, D, the ACK for a non-2xx)
//! and non-INVITE (timers E, F, K).

use super::*;

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

#[test]
fn a_failed_peer_ends_only_the_transactions_that_heard_nothing() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let tcp = peer(TransportKind::Tcp, UAS);
    let silent = tx.send_request(request("OPTIONS", "z9hG4bKp1", 1), tcp, t0);
    let ringing_req = invite("z9hG4bKp2");
    let ringing = tx.send_request(ringing_req.clone(), tcp, t0);
    let elsewhere = tx.send_request(request("OPTIONS", "z9hG4bKp3", 2), udp(UAS), t0);
    transmits(&mut tx);
    tx.receive(answer(&ringing_req, 180, Some("t")), tcp, t0);
    events(&mut tx);
    tx.peer_failed(tcp, t0);
    let ended: Vec<_> = events(&mut tx)
        .into_iter()
        .filter_map(|e| match e {
            Event::Timeout { key, .. } => Some(key),
            _ => None,
        })
        .collect();
    assert_eq!(
        ended,
        vec![silent],
        "the ringing INVITE and the UDP one go on"
    );
    assert_ne!(ended[0], ringing);
    assert_ne!(ended[0], elsewhere);
    assert_eq!(tx.len(), 2);
}

#[test]
fn a_transaction_given_up_on_stops_after_its_grace_and_never_times_out() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let key = tx.send_request(request("OPTIONS", "z9hG4bKg1", 1), udp(UAS), t0);
    transmits(&mut tx);
    assert_eq!(
        run_until(&mut tx, t0, t0 + ms(600)).len(),
        1,
        "one retransmission at 500 ms"
    );
    tx.give_up(key, ms(1_000), t0 + ms(700));
    assert_eq!(tx.len(), 1, "kept for the grace");
    let sent = run_until(&mut tx, t0, t0 + ms(40_000));
    let times: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
    assert_eq!(
        times,
        [1500],
        "Timer E within the grace only (else 9 more, to 31.5 s)"
    );
    assert!(events(&mut tx).is_empty(), "no timeout, then or later");
    assert!(tx.is_empty(), "ended at the end of the grace");
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn a_late_answer_within_the_grace_is_still_passed_up() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let req = request("REGISTER", "z9hG4bKg2", 3);
    let key = tx.send_request(req.clone(), udp(UAS), t0);
    transmits(&mut tx);
    tx.give_up(key, ms(1_000), t0 + ms(100));
    tx.receive(answer(&req, 100, None), udp(UAS), t0 + ms(200));
    tx.receive(answer(&req, 200, Some("t")), udp(UAS), t0 + ms(900));
    let ev = events(&mut tx);
    assert_eq!(ev.len(), 2, "the 100 and the 200: {ev:?}");
    assert!(matches!(
        ev.last(),
        Some(Event::Response { key: k, response, .. }) if *k == key && response.status == 200
    ));
    assert!(tx.is_empty(), "ended with the answer, no Timer K");
    assert!(run_until(&mut tx, t0, t0 + ms(40_000)).is_empty());
    assert!(events(&mut tx).is_empty());
}

#[test]
fn giving_up_leaves_an_invite_and_an_answered_transaction_alone() {
    let t0 = Instant::now();
    let mut tx = Transactions::new(Timers::default());
    let inv = tx.send_request(invite("z9hG4bKg3"), udp(UAS), t0);
    let req = request("OPTIONS", "z9hG4bKg4", 1);
    let done = tx.send_request(req.clone(), udp(UAS), t0);
    transmits(&mut tx);
    tx.receive(answer(&req, 200, Some("t")), udp(UAS), t0 + ms(10));
    events(&mut tx);
    tx.give_up(inv, ms(1_000), t0 + ms(20));
    tx.give_up(done, ms(1_000), t0 + ms(20));
    let sent = run_until(&mut tx, t0, t0 + ms(1_600));
    assert_eq!(sent.len(), 2, "the INVITE goes on with Timer A: {sent:?}");
    assert_eq!(
        tx.poll_timeout(),
        Some(t0 + ms(3_500)),
        "the INVITE's next Timer A"
    );
    run_until(&mut tx, t0, t0 + ms(32_000));
    assert!(matches!(events(&mut tx).as_slice(), [Event::Timeout { key, .. }] if *key == inv));
}
