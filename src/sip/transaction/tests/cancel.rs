//! CANCEL on both sides: held until a provisional, dropped on a final,
//! the 64*T1 limit, and CANCELs received for an INVITE or for nothing.

use super::*;

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
