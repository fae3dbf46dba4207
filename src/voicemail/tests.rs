//! The voicemail component on its own: who is known, the bound, the
//! parts stored before the index.

use std::time::{Duration, Instant};

use super::*;
use crate::ring::NodeId;

fn item(kind: &str, name: &str, now: Instant) -> Item {
    Item {
        key: NodeId::of_key("alice@example.test"),
        name: name.into(),
        kind: kind.into(),
        value: Vec::new(),
        version: 0,
        expires: now + Duration::from_secs(60),
        writer: NodeId::default(),
        signature: Vec::new(),
        proof: None,
    }
}

fn invite() -> Request {
    let text = "INVITE sip:alice@example.test SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
        From: <sip:bob@example.test>;tag=b\r\nTo: <sip:alice@example.test>\r\n\
        Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    match crate::sip::message::Message::parse(bytes::Bytes::from(text)) {
        Ok(crate::sip::message::Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn offer() -> Offer {
    Offer {
        remote: "127.0.0.1:4000".parse().unwrap(),
        law: crate::media::g711::Law::Pcmu,
        events: None,
    }
}

fn key() -> ServerKey {
    ServerKey(1)
}

#[test]
fn unknown_full_and_open() {
    let now = Instant::now();
    let aor = Aor::new("alice", "example.test");
    let mut vm = Voicemail::new(VoicemailConfig {
        max_per_user: 2,
        ..VoicemailConfig::default()
    });
    vm.looking(OpId(1), key(), invite(), aor.clone(), offer());
    let (_, _, d) = vm.fetched(OpId(1), Some(&[]), now).expect("ours");
    assert_eq!(d, Some(Decision::Unknown));
    let full = [
        item(SEEN_KIND, "seen", now),
        item(VOICEMAIL_KIND, "voicemail:1", now),
        item(VOICEMAIL_KIND, "voicemail:2", now),
    ];
    vm.looking(OpId(2), key(), invite(), aor.clone(), offer());
    let (_, _, d) = vm.fetched(OpId(2), Some(&full), now).expect("ours");
    assert!(matches!(d, Some(Decision::Full(_))));
    vm.looking(OpId(3), key(), invite(), aor.clone(), offer());
    let (_, _, d) = vm.fetched(OpId(3), Some(&full[..2]), now).expect("ours");
    let Some(Decision::Open(media)) = d else {
        panic!("{d:?}")
    };
    assert!(vm.fetched(OpId(3), Some(&[]), now).is_none());
    vm.opened(media).expect("opening");
    assert_eq!(vm.call_of("c1"), Some(media));
    assert_eq!(vm.hang_up("c1"), Some(media));

    // Two parts, then the index.
    let samples = vec![100i16; 12_000];
    let (stored, still_up) = vm.recorded(media, &samples, 1, "date".into(), now);
    assert_eq!(still_up, None);
    let ToStore {
        serial,
        index,
        parts,
    } = stored.expect("a recording");
    assert_eq!(parts.len(), 2);
    assert_eq!(Recorded::from_item(&index).map(|r| r.millis), Some(1500));
    vm.storing(OpId(10), serial);
    vm.storing(OpId(11), serial);
    assert!(vm.stored(OpId(10), true).is_none());
    assert_eq!(
        vm.stored(OpId(11), true).map(|(i, _)| i.name),
        Some(index.name)
    );
}

#[test]
fn a_call_at_its_limit_is_still_up_and_a_failed_part_drops_it() {
    let now = Instant::now();
    let aor = Aor::new("alice", "example.test");
    let mut vm = Voicemail::new(VoicemailConfig::default());
    vm.looking(OpId(1), key(), invite(), aor, offer());
    let known = [item(SEEN_KIND, "seen", now)];
    let Some((_, _, Some(Decision::Open(media)))) = vm.fetched(OpId(1), Some(&known), now) else {
        panic!("not opened")
    };
    vm.opened(media);
    let (stored, still_up) = vm.recorded(media, &[1; 160], 1, "d".into(), now);
    assert_eq!(still_up.as_deref(), Some("c1"));
    let serial = stored.expect("a recording").serial;
    vm.storing(OpId(5), serial);
    assert!(vm.stored(OpId(5), false).is_none());
    assert_eq!(vm.call_of("c1"), None);
}

#[test]
fn the_notice_is_not_repeated_for_the_same_count() {
    let aor = Aor::new("alice", "example.test");
    let mut vm = Voicemail::default();
    assert!(!vm.should_tell(&aor, 0));
    assert!(vm.should_tell(&aor, 1));
    assert!(!vm.should_tell(&aor, 1));
    assert!(vm.should_tell(&aor, 2));
}
