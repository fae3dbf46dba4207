//! Matching edge cases and robustness: RFC 2543 requests, host case,
//! malformed messages, ACK outside a transaction, transport failures and
//! timer load.

use super::*;

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
