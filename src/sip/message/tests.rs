//! Tests of parsing, printing and the header accessors.
use super::*;

const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
    v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776\r\n\
    Max-Forwards: 70\r\n\
    t: <sip:bob@example.com>\r\n\
    f: Alice <sip:alice@example.com>;tag=1928\r\n\
    i: a84b4c76e66710\r\n\
    CSeq: 314159 INVITE\r\n\
    Subject: folded\r\n  continued\r\n\
    l: 4\r\n\r\nbodyEXTRA";

#[test]
fn parses_compact_and_folded_headers() {
    let msg = Message::parse(Bytes::from_static(INVITE.as_bytes())).expect("parse");
    let Message::Request(req) = msg else {
        panic!("not a request")
    };
    assert_eq!(req.method, Method::INVITE);
    assert_eq!(req.call_id().as_deref(), Some("a84b4c76e66710"));
    assert_eq!(req.branch().as_deref(), Some("z9hG4bK776"));
    assert_eq!(req.cseq().map(|c| c.cseq), Ok(314159));
    assert_eq!(&req.body[..], b"body", "body cut at Content-Length");
    let printed = String::from_utf8(req.to_bytes().to_vec()).expect("utf8");
    assert!(printed.starts_with("INVITE sip:bob@example.com SIP/2.0\r\n"));
    assert!(printed.contains("Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776\r\n"));
    assert!(printed.ends_with("Content-Length: 4\r\n\r\nbody"));
}

#[test]
fn keeps_tel_uris() {
    let raw = "INVITE tel:+12125551234 SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n";
    let Ok(Message::Request(req)) = Message::parse(Bytes::from(raw)) else {
        panic!("tel: request did not parse")
    };
    assert_eq!(req.uri.scheme(), "tel");
    assert_eq!(req.uri.to_string(), "tel:+12125551234");
}

#[test]
fn rejects_bad_input() {
    for raw in [
        "NOT A REQUEST\r\n\r\n",
        "INVITE sip:a@b SIP/2.0\r\nNoColonHere\r\n\r\n",
        "\u{1}\u{2}garbage",
    ] {
        assert!(
            Message::parse(Bytes::from(raw)).is_err(),
            "accepted {raw:?}"
        );
    }
    let short = "MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 50\r\n\r\nhi";
    assert!(matches!(
        Message::parse(Bytes::from(short)),
        Err(ParseError::BodyTruncated { .. })
    ));
    let big = vec![b'a'; MAX_MESSAGE_SIZE + 1];
    assert_eq!(
        Message::parse(Bytes::from(big)).err(),
        Some(ParseError::TooLarge)
    );
}

#[test]
fn reads_quoted_display_names_with_specials() {
    let raw = "REGISTER sip:example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
        From: \"J Rosenberg \\\\\\\"\" <sip:j@example.com>;tag=1\r\n\
        To: \"a, b; c <d> e\" <sip:j@example.com>\r\n\
        Contact: \"x \\\"y\\\", <z>;\" <sip:a@h1>;q=0.5, \"w\" <sip:b@h2>\r\n\
        Call-ID: q\r\nCSeq: 1 REGISTER\r\n\r\n";
    let Ok(Message::Request(req)) = Message::parse(Bytes::from(raw)) else {
        panic!("did not parse")
    };
    assert_eq!(req.from_header().and_then(|f| f.tag).as_deref(), Some("1"));
    let to = req.to_header().expect("To");
    assert_eq!(to.uri.name.as_deref(), Some("a, b; c <d> e"));
    let contacts = req
        .headers
        .get_named::<Vec<ezk_sip_types::header::typed::Contact>>()
        .expect("Contact");
    assert_eq!(contacts.len(), 2);
    assert!(Message::parse(req.to_bytes()).is_ok());
}

#[test]
fn refuses_what_rfc_3261_forbids() {
    let ok = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
        From: <sip:c@d>;tag=1\r\nTo: sip:a@b\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n";
    assert!(Message::parse(Bytes::from(format!("{ok}\r\n"))).is_ok());
    for extra in [
        "Date: Fri, 01 Jan 2010 16:00:00 EST\r\n",
        "Contact: sip:a@b?Route=x\r\n",
        "Contact: <sip:a@b>;;\r\n",
        "Contact: <sip:a@b>,\r\n",
        "Contact: \"open <sip:a@b>\r\n",
        "Route: < sip:a@b >\r\n",
        "Call-ID: y\r\n",
        "v: SIP/2.0/UDP h2;;branch=z9hG4bK2\r\n",
        // fuzz/regressions/core_input-via-empty-param: NULs as a parameter.
        "v: SIP/2.0/TCP h3;branch=z9hG4;\0\0\0\r\n",
        "Subject: a\x01b\r\n",
        // fuzz/regressions/core_input-via-backslash-param.
        "v: SIP/2.0/UDP h4;\\\\branch=z9hG4bK4\r\n",
    ] {
        let raw = format!("{ok}{extra}\r\n");
        assert!(
            Message::parse(Bytes::from(raw)).is_err(),
            "accepted {extra:?}"
        );
    }
    assert!(
        Message::parse(Bytes::from(format!(
            "{ok}Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n\r\n"
        )))
        .is_ok()
    );
    for line in [
        "OPTIONS  sip:a@b SIP/2.0",
        "OPTIONS sip:a@b SIP/2.0 ",
        "OPTIONS <sip:a@b> SIP/2.0",
        "OPTIONS sip:a@b?Route=x SIP/2.0",
    ] {
        let raw = ok.replacen("OPTIONS sip:a@b SIP/2.0", line, 1) + "\r\n";
        assert!(
            Message::parse(Bytes::from(raw)).is_err(),
            "accepted {line:?}"
        );
    }
    let badvers = "OPTIONS sip:a@b SIP/7.0\r\nVia: SIP/7.0/UDP h;branch=z9hG4bK1\r\n\r\n";
    let reply = bad_request_reply(badvers.as_bytes(), "version").expect("reply");
    assert!(reply.starts_with(b"SIP/2.0 505 "));
}

#[test]
fn escaped_percent_in_request_uri_survives_printing() {
    let raw =
        "INVITE sip:100%25off@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n";
    let Ok(Message::Request(req)) = Message::parse(Bytes::from(raw)) else {
        panic!("did not parse")
    };
    assert_eq!(req.uri.to_string(), "sip:100%25off@example.com");
    for uri in ["sip:a%%42b@h", "sip:a%4@h", "sip:a@h;p=%25", "sip:a%zz@h"] {
        let raw = format!("OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n");
        assert!(Message::parse(Bytes::from(raw)).is_err(), "accepted {uri}");
    }
}

#[test]
fn answers_what_it_can_of_garbage() {
    let raw = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nNoColon\r\nCall-ID: x\r\n\r\n";
    let reply = bad_request_reply(raw, "bad header line").expect("a reply");
    let text = String::from_utf8(reply.to_vec()).expect("utf8");
    assert!(text.starts_with("SIP/2.0 400 Bad Request\r\n"));
    assert!(text.contains("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"));
    assert!(text.contains("Call-ID: x\r\n"));
    assert!(bad_request_reply(b"\x01\x02garbage", "x").is_none());
    let ack =
        b"ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nNoColon\r\n\r\n";
    assert!(
        bad_request_reply(ack, "x").is_none(),
        "an ACK is never answered"
    );
    assert!(bad_request_reply(b"SIP/2.0 200 OK\r\nVia: a\r\n\r\n", "x").is_none());
}

#[test]
fn response_copies_dialog_headers_and_rewrites_via() {
    let Ok(Message::Request(req)) = Message::parse(Bytes::from_static(INVITE.as_bytes())) else {
        panic!("parse")
    };
    let mut resp = req.response(180);
    assert_eq!(resp.reason, "Ringing");
    let mut via = resp.top_via().expect("via");
    via.params.push_or_edit("received", "127.0.0.1");
    set_top_via(&mut resp.headers, &via);
    let back = Message::parse(resp.to_bytes()).expect("reparse");
    let Message::Response(back) = back else {
        panic!("not a response")
    };
    assert_eq!(back.status, 180);
    assert_eq!(
        back.top_via()
            .and_then(|v| v.params.get_val("received").cloned())
            .as_deref(),
        Some("127.0.0.1")
    );
    assert!(pop_top_via(&mut resp.headers).is_some());
    assert!(resp.top_via().is_none());
}
