use std::time::{Duration, Instant};

use super::*;
use crate::sip::message::Message;

fn message_to(aor: &str, body: &str) -> Request {
    let text = format!(
        "MESSAGE sip:{aor} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK1\r\n\
         From: <sip:bob@overlay.test>;tag=b1\r\nTo: <sip:{aor}>\r\nCall-ID: m1\r\n\
         CSeq: 1 MESSAGE\r\nDate: Tue, 01 Dec 2026 23:00:00 GMT\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    match Message::parse(Bytes::from(text)) {
        Ok(Message::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

fn seen(aor: &Aor, now: Instant) -> Item {
    OfflineMessages::default()
        .seen_mark(aor, now)
        .expect("a first mark")
}

#[test]
fn unknown_users_get_nothing_stored_and_the_bound_is_kept() {
    let now = Instant::now();
    let aor = Aor::new("alice", "overlay.test");
    let mut messages = OfflineMessages::new(MessagesConfig {
        max_count: 2,
        ..MessagesConfig::default()
    });
    let request = message_to("alice@overlay.test", "hi");
    assert!(matches!(
        messages.decide(&request, &aor, &[], now),
        Decision::Unknown
    ));
    let mut items = vec![seen(&aor, now)];
    for _ in 0..2 {
        let Decision::Store(item) = messages.decide(&request, &aor, &items, now) else {
            panic!("not stored");
        };
        let back = StoredMessage::from_item(&item).expect("a message");
        assert_eq!(back.from, "<sip:bob@overlay.test>;tag=b1");
        assert_eq!(back.date, "Tue, 01 Dec 2026 23:00:00 GMT");
        assert_eq!(back.body, b"hi");
        assert!(item.expires >= now + Duration::from_secs(3600));
        items.push(item);
    }
    match messages.decide(&request, &aor, &items, now) {
        Decision::Full(486, reason) => assert!(reason.contains("mailbox full"), "{reason}"),
        other => panic!("expected 486, got {other:?}"),
    }
}

#[test]
fn too_many_bytes_get_507() {
    let now = Instant::now();
    let aor = Aor::new("alice", "overlay.test");
    let mut messages = OfflineMessages::new(MessagesConfig {
        max_bytes: 100,
        ..MessagesConfig::default()
    });
    let request = message_to("alice@overlay.test", &"x".repeat(200));
    let items = vec![seen(&aor, now)];
    assert!(matches!(
        messages.decide(&request, &aor, &items, now),
        Decision::Full(507, _)
    ));
}
