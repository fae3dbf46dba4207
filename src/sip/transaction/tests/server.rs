//! Server transactions: INVITE (100 Trying, timers G, H, I) and
//! non-INVITE (timer J), over UDP and stream transports.

use super::*;

// ---------------------------------------------------------------------------
// Server INVITE
// ---------------------------------------------------------------------------

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
