//! The TURN server on virtual time: a client that speaks RFC 8656 with
//! long-term credentials, against the RFC's checks and bounds. Here the
//! fixture, the credential exchange and Allocate; what an allocation does
//! is in [`relay`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::sip::stun::MAGIC_COOKIE;
use crate::sip::stun::message::long_term_key;

const REALM: &str = "example.test";

fn key(password: &str) -> Key {
    let record = crate::auth::users::UserRecord::new(
        crate::registrar::binding::Aor::new("alice", REALM),
        password,
    );
    Key::of(&record).expect("hex")
}

fn client() -> SocketAddr {
    "127.0.0.1:40000".parse().expect("addr")
}

fn peer() -> SocketAddr {
    "127.0.0.2:5000".parse().expect("addr")
}

struct Fixture {
    server: Server,
    now: Instant,
    next_id: u8,
    nonce: String,
}

impl Fixture {
    fn new() -> Fixture {
        let now = Instant::now();
        let mut config = TurnConfig::new(
            "127.0.0.1:3478".parse().expect("addr"),
            REALM.into(),
            [3; 32],
        );
        config.ports = (50000, 50009);
        config.max_per_user = 2;
        Fixture {
            server: Server::new(config, now),
            now,
            next_id: 1,
            nonce: String::new(),
        }
    }

    fn id(&mut self) -> [u8; 16] {
        let mut id = [self.next_id; 16];
        self.next_id += 1;
        id[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        id
    }

    /// Every output until the deadline, the driver's part played: sockets
    /// bind (unless `refuse` lists the port), credentials come for alice.
    fn drain(&mut self, password: Option<&str>, refuse: &[u16]) -> Vec<Output> {
        let mut seen = Vec::new();
        for _ in 0..100 {
            match self.server.poll_output() {
                Output::Timeout(_) => return seen,
                Output::OpenRelay { port } => {
                    let ok = !refuse.contains(&port);
                    self.server
                        .handle_input(Input::RelayOpened { port, ok }, self.now);
                    seen.push(Output::OpenRelay { port });
                }
                Output::FetchCredentials { username } => {
                    let found = (username == "alice").then(|| password.map(key)).flatten();
                    self.server.handle_input(
                        Input::Credentials {
                            username: username.clone(),
                            key: found,
                        },
                        self.now,
                    );
                    seen.push(Output::FetchCredentials { username });
                }
                other => seen.push(other),
            }
        }
        panic!("outputs never end");
    }

    /// Sends `bytes` from `from`; the answers to the client.
    fn send(&mut self, from: SocketAddr, bytes: &[u8], password: Option<&str>) -> Vec<Vec<u8>> {
        self.server
            .handle_input(Input::FromClient { from, bytes }, self.now);
        self.drain(password, &[])
            .into_iter()
            .filter_map(|o| match o {
                Output::ToClient { to, bytes } if to == from => Some(bytes),
                _ => None,
            })
            .collect()
    }

    /// A request with credentials (alice, `password`) unless `password` is None.
    fn request(
        &mut self,
        method: u16,
        attrs: &[(u16, Vec<u8>)],
        password: Option<&str>,
    ) -> Vec<u8> {
        let id = self.id();
        let mut w = Writer::new(Class::Request, method, &id);
        for (kind, value) in attrs {
            w.attribute(*kind, value);
        }
        match password {
            Some(password) => {
                w.attribute(attr::USERNAME, b"alice")
                    .attribute(attr::REALM, REALM.as_bytes())
                    .attribute(attr::NONCE, self.nonce.as_bytes());
                let key = long_term_key("alice", REALM, password);
                w.finish(Some((Integrity::Sha1, &key)), true)
            }
            None => w.finish(None, true),
        }
    }

    /// Allocate the way clients do: without credentials, then with.
    fn allocate(&mut self, from: SocketAddr, extra: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut attrs = vec![(attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0])];
        attrs.extend_from_slice(extra);
        let first = self.request(method::ALLOCATE, &attrs, None);
        let answers = self.send(from, &first, Some("secret"));
        let challenge = Message::parse(&answers[0]).expect("parses");
        assert_eq!(status(&challenge), Some(401));
        assert_eq!(challenge.text(attr::REALM), Some(REALM));
        self.nonce = challenge.text(attr::NONCE).expect("nonce").to_string();
        let second = self.request(method::ALLOCATE, &attrs, Some("secret"));
        let mut answers = self.send(from, &second, Some("secret"));
        assert_eq!(answers.len(), 1);
        answers.remove(0)
    }
}

fn status(message: &Message<'_>) -> Option<u16> {
    let v = message.get(attr::ERROR_CODE)?;
    Some(u16::from(v[2]) * 100 + u16::from(v[3]))
}

fn peer_attr(f: &Fixture, addr: SocketAddr) -> Vec<u8> {
    // The XOR is with the cookie only for IPv4, so any ID will do.
    let _ = f;
    crate::sip::stun::address(
        addr,
        Some(&{
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            id
        }),
    )
}

#[test]
fn allocate_is_challenged_then_granted_with_the_users_ha1() {
    let mut f = Fixture::new();
    let answer = f.allocate(client(), &[]);
    let ok = Message::parse(&answer).expect("parses");
    assert_eq!(ok.class, Class::Success);
    assert!(
        ok.check_integrity(&key("secret").md5),
        "answer sealed with her key"
    );
    assert!(ok.fingerprint);
    let relayed = ok.xor_address(attr::XOR_RELAYED_ADDRESS).expect("relayed");
    assert_eq!(
        relayed.ip(),
        "127.0.0.1".parse::<std::net::IpAddr>().expect("ip")
    );
    assert!((50000..=50009).contains(&relayed.port()));
    assert_eq!(ok.xor_address(attr::XOR_MAPPED_ADDRESS), Some(client()));
    assert_eq!(ok.get(attr::LIFETIME), Some(&600u32.to_be_bytes()[..]));
    assert_eq!(f.server.allocations(), 1);
}

#[test]
fn a_wrong_password_or_an_unknown_user_gets_401_and_no_allocation() {
    let mut f = Fixture::new();
    let first = f.request(
        method::ALLOCATE,
        &[(attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0])],
        None,
    );
    let answers = f.send(client(), &first, Some("secret"));
    f.nonce = Message::parse(&answers[0])
        .expect("parses")
        .text(attr::NONCE)
        .expect("nonce")
        .into();
    let wrong = f.request(
        method::ALLOCATE,
        &[(attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0])],
        Some("guess"),
    );
    let answers = f.send(client(), &wrong, Some("secret"));
    let refusal = Message::parse(&answers[0]).expect("parses");
    assert_eq!(status(&refusal), Some(401));
    assert_eq!(f.server.allocations(), 0);
    // No such user: the look-up says none, 401 too.
    let mut f = Fixture::new();
    f.nonce = f.server.nonces.make(f.now);
    let unknown = f.request(
        method::ALLOCATE,
        &[(attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0])],
        Some("secret"),
    );
    let answers = f.send(client(), &unknown, None);
    assert_eq!(
        status(&Message::parse(&answers[0]).expect("parses")),
        Some(401)
    );
    assert_eq!(f.server.allocations(), 0);
}

#[test]
fn a_stale_nonce_gets_438_with_a_fresh_one() {
    let mut f = Fixture::new();
    f.nonce = f.server.nonces.make(f.now);
    f.now += Duration::from_secs(601);
    let late = f.request(
        method::ALLOCATE,
        &[(attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0])],
        Some("secret"),
    );
    let answers = f.send(client(), &late, Some("secret"));
    let stale = Message::parse(&answers[0]).expect("parses");
    assert_eq!(status(&stale), Some(438));
    let fresh = stale.text(attr::NONCE).expect("nonce");
    assert_ne!(fresh, f.nonce);
    assert!(f.server.nonces.check(fresh, f.now).is_ok());
}

#[test]
fn the_rfcs_refusals_of_allocate() {
    let mut f = Fixture::new();
    f.nonce = f.server.nonces.make(f.now);
    let tcp = f.request(
        method::ALLOCATE,
        &[(attr::REQUESTED_TRANSPORT, vec![6, 0, 0, 0])],
        Some("secret"),
    );
    assert_eq!(
        status(&Message::parse(&f.send(client(), &tcp, Some("secret"))[0]).expect("parses")),
        Some(442)
    );
    let none = f.request(method::ALLOCATE, &[], Some("secret"));
    assert_eq!(
        status(&Message::parse(&f.send(client(), &none, Some("secret"))[0]).expect("parses")),
        Some(400)
    );
    let v6 = f.request(
        method::ALLOCATE,
        &[
            (attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0]),
            (attr::REQUESTED_ADDRESS_FAMILY, vec![2, 0, 0, 0]),
        ],
        Some("secret"),
    );
    assert_eq!(
        status(&Message::parse(&f.send(client(), &v6, Some("secret"))[0]).expect("parses")),
        Some(440)
    );
    let df = f.request(
        method::ALLOCATE,
        &[
            (attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0]),
            (attr::DONT_FRAGMENT, vec![]),
        ],
        Some("secret"),
    );
    assert_eq!(
        status(&Message::parse(&f.send(client(), &df, Some("secret"))[0]).expect("parses")),
        Some(420)
    );
    // Two allocations per user here: a third from another address is 486.
    f.allocate("127.0.0.1:40001".parse().expect("addr"), &[]);
    f.allocate("127.0.0.1:40002".parse().expect("addr"), &[]);
    let third = f.request(
        method::ALLOCATE,
        &[(attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0])],
        Some("secret"),
    );
    let answer = f.send(
        "127.0.0.1:40003".parse().expect("addr"),
        &third,
        Some("secret"),
    );
    assert_eq!(
        status(&Message::parse(&answer[0]).expect("parses")),
        Some(486)
    );
    // A second Allocate on the same 5-tuple: 437; the same one again: the same answer.
    let again = f.request(
        method::ALLOCATE,
        &[(attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0])],
        Some("secret"),
    );
    let from = "127.0.0.1:40001".parse().expect("addr");
    assert_eq!(
        status(&Message::parse(&f.send(from, &again, Some("secret"))[0]).expect("parses")),
        Some(437)
    );
}

#[test]
fn relay_ports_run_out_with_508_and_a_taken_port_is_skipped() {
    let mut f = Fixture::new();
    f.server.config.max_per_user = 100;
    f.nonce = f.server.nonces.make(f.now);
    let mut granted = 0;
    for i in 0..11u16 {
        let from: SocketAddr = format!("127.0.0.1:{}", 41000 + i).parse().expect("addr");
        let req = f.request(
            method::ALLOCATE,
            &[(attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0])],
            Some("secret"),
        );
        f.server
            .handle_input(Input::FromClient { from, bytes: &req }, f.now);
        // Port 50003 is someone else's.
        let outputs = f.drain(Some("secret"), &[50003]);
        for o in outputs {
            if let Output::ToClient { bytes, .. } = o {
                let m = Message::parse(&bytes).expect("parses");
                if m.class == Class::Success {
                    granted += 1;
                    assert_ne!(
                        m.xor_address(attr::XOR_RELAYED_ADDRESS).map(|a| a.port()),
                        Some(50003)
                    );
                } else {
                    assert_eq!(status(&m), Some(508), "allocation {i}");
                }
            }
        }
    }
    assert_eq!(granted, 9, "ten ports, one taken");
}

#[test]
fn even_port_reserves_the_next_for_its_token() {
    let mut f = Fixture::new();
    f.server.config.max_per_user = 10;
    let answer = f.allocate(client(), &[(attr::EVEN_PORT, vec![0x80, 0, 0, 0])]);
    let ok = Message::parse(&answer).expect("parses");
    let port = ok
        .xor_address(attr::XOR_RELAYED_ADDRESS)
        .expect("relayed")
        .port();
    assert_eq!(port % 2, 0);
    let token = ok.get(attr::RESERVATION_TOKEN).expect("token").to_vec();
    let other: SocketAddr = "127.0.0.1:40010".parse().expect("addr");
    let req = f.request(
        method::ALLOCATE,
        &[
            (attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0]),
            (attr::RESERVATION_TOKEN, token.clone()),
        ],
        Some("secret"),
    );
    let answer = f.send(other, &req, Some("secret"));
    let rtcp = Message::parse(&answer[0]).expect("parses");
    assert_eq!(
        rtcp.xor_address(attr::XOR_RELAYED_ADDRESS)
            .map(|a| a.port()),
        Some(port + 1)
    );
    // The token is spent.
    let req = f.request(
        method::ALLOCATE,
        &[
            (attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0]),
            (attr::RESERVATION_TOKEN, token),
        ],
        Some("secret"),
    );
    let answer = f.send(
        "127.0.0.1:40011".parse().expect("addr"),
        &req,
        Some("secret"),
    );
    assert_eq!(
        status(&Message::parse(&answer[0]).expect("parses")),
        Some(508)
    );
}

mod relay;
