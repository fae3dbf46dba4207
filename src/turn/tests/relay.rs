//! What an allocation does: permissions, channels, Send and Data, lifetimes;
//! garbage and guessing.

use super::*;

#[test]
fn data_flows_with_a_permission_and_a_channel_and_not_without() {
    let mut f = Fixture::new();
    let ok = f.allocate(client(), &[]);
    let port = Message::parse(&ok)
        .expect("parses")
        .xor_address(attr::XOR_RELAYED_ADDRESS)
        .expect("relayed")
        .port();
    // No permission yet: the peer's datagram is dropped, and so is a Send.
    f.server.handle_input(
        Input::FromPeer {
            port,
            from: peer(),
            bytes: b"early",
        },
        f.now,
    );
    assert!(f.drain(None, &[]).is_empty());
    let send = {
        let id = f.id();
        let mut w = Writer::new(Class::Indication, method::SEND, &id);
        w.attribute(attr::XOR_PEER_ADDRESS, &peer_attr(&f, peer()))
            .attribute(attr::DATA, b"to peer");
        w.finish(None, false)
    };
    assert!(f.send(client(), &send, None).is_empty());
    assert!(f.drain(None, &[]).is_empty());
    let perm = f.request(
        method::CREATE_PERMISSION,
        &[(attr::XOR_PEER_ADDRESS, peer_attr(&f, peer()))],
        Some("secret"),
    );
    let answer = f.send(client(), &perm, Some("secret"));
    assert_eq!(
        Message::parse(&answer[0]).expect("parses").class,
        Class::Success
    );
    f.server.handle_input(
        Input::FromClient {
            from: client(),
            bytes: &send,
        },
        f.now,
    );
    assert_eq!(
        f.drain(None, &[]),
        vec![Output::ToPeer {
            port,
            to: peer(),
            bytes: b"to peer".to_vec()
        }]
    );
    f.server.handle_input(
        Input::FromPeer {
            port,
            from: peer(),
            bytes: b"back",
        },
        f.now,
    );
    let out = f.drain(None, &[]);
    let Some(Output::ToClient { bytes, .. }) = out.first() else {
        panic!("{out:?}")
    };
    let data = Message::parse(bytes).expect("parses");
    assert_eq!((data.class, data.method), (Class::Indication, method::DATA));
    assert_eq!(data.get(attr::DATA), Some(&b"back"[..]));
    assert_eq!(data.xor_address(attr::XOR_PEER_ADDRESS), Some(peer()));
    // A channel: ChannelData both ways.
    let bind = f.request(
        method::CHANNEL_BIND,
        &[
            (attr::CHANNEL_NUMBER, vec![0x40, 0x00, 0, 0]),
            (attr::XOR_PEER_ADDRESS, peer_attr(&f, peer())),
        ],
        Some("secret"),
    );
    assert_eq!(
        Message::parse(&f.send(client(), &bind, Some("secret"))[0])
            .expect("parses")
            .class,
        Class::Success
    );
    f.server.handle_input(
        Input::FromPeer {
            port,
            from: peer(),
            bytes: b"chan",
        },
        f.now,
    );
    assert_eq!(
        f.drain(None, &[]),
        vec![Output::ToClient {
            to: client(),
            bytes: channel::frame(0x4000, b"chan").expect("fits")
        }]
    );
    let cd = channel::frame(0x4000, b"up").expect("fits");
    f.server.handle_input(
        Input::FromClient {
            from: client(),
            bytes: &cd,
        },
        f.now,
    );
    assert_eq!(
        f.drain(None, &[]),
        vec![Output::ToPeer {
            port,
            to: peer(),
            bytes: b"up".to_vec()
        }]
    );
    // The same channel for another peer: 400.
    let other: SocketAddr = "127.0.0.3:1".parse().expect("addr");
    let bind = f.request(
        method::CHANNEL_BIND,
        &[
            (attr::CHANNEL_NUMBER, vec![0x40, 0x00, 0, 0]),
            (attr::XOR_PEER_ADDRESS, peer_attr(&f, other)),
        ],
        Some("secret"),
    );
    assert_eq!(
        status(&Message::parse(&f.send(client(), &bind, Some("secret"))[0]).expect("parses")),
        Some(400)
    );
    // Permissions lapse after 300 s (the channel's 600 s does not keep data flowing without one).
    f.now += PERMISSION_LIFETIME + Duration::from_secs(1);
    f.server.handle_input(
        Input::FromPeer {
            port,
            from: peer(),
            bytes: b"late",
        },
        f.now,
    );
    assert!(f.drain(None, &[]).is_empty());
}

#[test]
fn refresh_extends_and_lifetime_zero_ends_and_expiry_closes_the_port() {
    let mut f = Fixture::new();
    let ok = f.allocate(client(), &[]);
    let port = Message::parse(&ok)
        .expect("parses")
        .xor_address(attr::XOR_RELAYED_ADDRESS)
        .expect("relayed")
        .port();
    f.now += Duration::from_secs(500);
    let refresh = f.request(
        method::REFRESH,
        &[(attr::LIFETIME, 1200u32.to_be_bytes().to_vec())],
        Some("secret"),
    );
    let answer = f.send(client(), &refresh, Some("secret"));
    let m = Message::parse(&answer[0]).expect("parses");
    assert_eq!(m.get(attr::LIFETIME), Some(&1200u32.to_be_bytes()[..]));
    f.now += Duration::from_secs(1199);
    f.server.handle_input(Input::Timeout, f.now);
    assert_eq!(f.server.allocations(), 1, "refreshed");
    f.now += Duration::from_secs(2);
    f.server.handle_input(Input::Timeout, f.now);
    assert_eq!(f.server.allocations(), 0);
    assert!(f.drain(None, &[]).contains(&Output::CloseRelay { port }));
    // Refresh of nothing: 437. Lifetime 0 ends one at once.
    f.nonce = f.server.nonces.make(f.now);
    let refresh = f.request(method::REFRESH, &[], Some("secret"));
    assert_eq!(
        status(&Message::parse(&f.send(client(), &refresh, Some("secret"))[0]).expect("parses")),
        Some(437)
    );
    f.allocate(client(), &[]);
    let end = f.request(
        method::REFRESH,
        &[(attr::LIFETIME, vec![0, 0, 0, 0])],
        Some("secret"),
    );
    let answer = f.send(client(), &end, Some("secret"));
    assert_eq!(
        Message::parse(&answer[0])
            .expect("parses")
            .get(attr::LIFETIME),
        Some(&[0u8, 0, 0, 0][..])
    );
    assert_eq!(f.server.allocations(), 0);
}

#[test]
fn garbage_is_dropped_and_binding_is_answered() {
    let mut f = Fixture::new();
    for junk in [
        &b""[..],
        b"\x00\x01",
        b"INVITE sip:x SIP/2.0\r\n",
        &[0x40, 0, 0, 9, 1],
        &[0u8; 64],
    ] {
        f.server.handle_input(
            Input::FromClient {
                from: client(),
                bytes: junk,
            },
            f.now,
        );
        assert!(f.drain(None, &[]).is_empty(), "{junk:?}");
    }
    let binding = crate::sip::stun::binding_request([5; 12], true);
    let answer = f.send(client(), &binding, None);
    let m = Message::parse(&answer[0]).expect("parses");
    assert_eq!(m.class, Class::Success);
    assert_eq!(m.xor_address(attr::XOR_MAPPED_ADDRESS), Some(client()));
}

#[test]
fn a_source_guessing_passwords_is_silenced_and_others_are_not() {
    let mut f = Fixture::new();
    f.nonce = f.server.nonces.make(f.now);
    let guesser: SocketAddr = "127.0.0.9:4000".parse().expect("addr");
    let transport = (attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0]);
    for attempt in 0..10 {
        let guess = f.request(
            method::ALLOCATE,
            std::slice::from_ref(&transport),
            Some(&format!("guess{attempt}")),
        );
        let answers = f.send(guesser, &guess, Some("secret"));
        assert_eq!(
            status(&Message::parse(&answers[0]).expect("parses")),
            Some(401),
            "attempt {attempt}"
        );
    }
    // Blocked (the node's [limits]: 10 failures): even the right password gets silence.
    let right = f.request(
        method::ALLOCATE,
        std::slice::from_ref(&transport),
        Some("secret"),
    );
    assert!(f.send(guesser, &right, Some("secret")).is_empty());
    assert_eq!(f.server.allocations(), 0);
    let answers = f.send(client(), &right, Some("secret"));
    assert_eq!(
        Message::parse(&answers[0]).expect("parses").class,
        Class::Success
    );
}
