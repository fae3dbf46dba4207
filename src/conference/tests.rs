//! The conference component on its own: which addresses are rooms, the
//! maximum, a room ending with its last participant.

use super::*;
use crate::media::g711::Law;

fn invite(call_id: &str) -> Request {
    let text = format!(
        "INVITE sip:conf-x@example.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{call_id}\r\n\
         From: <sip:bob@example.test>;tag=b\r\nTo: <sip:conf-x@example.test>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    match crate::sip::message::Message::parse(bytes::Bytes::from(text)) {
        Ok(crate::sip::message::Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn offer() -> Offer {
    Offer {
        remote: "127.0.0.1:4000".parse().unwrap(),
        law: Law::Pcmu,
        events: None,
    }
}

#[test]
fn rooms_by_prefix_and_by_config() {
    let conferences = Conferences::new(ConferenceConfig {
        rooms: vec![RoomConfig {
            name: "standup".into(),
            pin: Some("1234".into()),
        }],
        ..ConferenceConfig::default()
    });
    let room = |user: &str| conferences.room(&Aor::new(user, "example.test"));
    assert_eq!(room("conf-team"), Some(None));
    assert_eq!(room("standup"), Some(Some("1234".into())));
    assert_eq!(room("conf-"), None);
    assert_eq!(room("alice"), None);
    let off = Conferences::new(ConferenceConfig {
        enabled: false,
        ..ConferenceConfig::default()
    });
    assert_eq!(off.room(&Aor::new("conf-team", "example.test")), None);
}

#[test]
fn the_maximum_and_the_last_to_leave() {
    let mut conferences = Conferences::new(ConferenceConfig {
        max_participants: 2,
        ..ConferenceConfig::default()
    });
    let room = Aor::new("conf-x", "example.test");
    assert_eq!(conferences.refusal(&room), None);
    let a = conferences.admit(ServerKey(1), invite("a"), room.clone(), offer());
    let b = conferences.admit(ServerKey(2), invite("b"), room.clone(), offer());
    assert!(a.0 >= CALLS_FROM && a != b);
    // Two are being answered: the third is refused, in another room not.
    let refusal = conferences.refusal(&room).expect("full");
    assert_eq!(refusal.status, 486);
    let other = Aor::new("conf-y", "example.test");
    assert_eq!(conferences.refusal(&other), None);
    conferences.admit(ServerKey(4), invite("d"), other, offer());
    // a's socket could not be bound: her place is free again.
    assert!(conferences.opened(a, false).is_some());
    assert!(!conferences.is_opening(a));
    assert_eq!(conferences.participants(&room), 1);
    assert!(conferences.opened(b, true).is_some());
    assert_eq!(conferences.seat("b").map(|s| s.call), Some(b));
    assert_eq!(conferences.refusal(&room), None);
    let c = conferences.admit(ServerKey(5), invite("c"), room.clone(), offer());
    conferences.opened(c, true);
    assert_eq!(conferences.leave("b").map(|(_, empty)| empty), Some(false));
    assert_eq!(conferences.leave("b"), None);
    assert_eq!(conferences.leave("c").map(|(_, empty)| empty), Some(true));
    assert_eq!(conferences.participants(&room), 0);
    assert_eq!(conferences.rooms(), 1);
}
