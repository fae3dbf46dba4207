//! Signed items and removes with real node certificates from a test CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::*;
use crate::overlay::identity::{Identity, IdentityFiles};
use crate::ring::{Peer, Ring, RingConfig, RingEvent, RingRequest, RingResponse};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p2psip-signed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The signing part of a member at `port`, enrolled by the CA in `ca`.
fn member(dir: &Path, ca: &str, port: u16) -> Arc<Signing> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let out = dir.join(format!("{ca}-{port}"));
    p2psip_certs::write_node(
        &dir.join(ca),
        addr,
        &NodeId::of_addr(addr).to_string(),
        &out,
    )
    .expect("node certificate");
    let ca_pem = dir.join(ca).join(p2psip_certs::CA_CERT);
    let cert = out.join(p2psip_certs::NODE_CERT);
    let key = out.join(p2psip_certs::NODE_KEY);
    let files = IdentityFiles {
        ca: Some(&ca_pem),
        cert: Some(&cert),
        key: Some(&key),
        revoked: &[],
    };
    Identity::load(&files, addr)
        .expect("loads")
        .expect("certificate mode")
        .tls
        .signing
}

fn wall_now() -> Duration {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

struct Node {
    signing: Arc<Signing>,
    book: Arc<Mutex<CertBook>>,
    seals: Seals,
}

fn node(signing: Arc<Signing>, now: Instant) -> Node {
    let book = Arc::new(Mutex::new(CertBook::new(signing.clone())));
    let seals = Seals::new(signing.clone(), book.clone(), Wall::new(wall_now(), now));
    Node {
        signing,
        book,
        seals,
    }
}

fn item(writer: NodeId, now: Instant) -> Item {
    Item {
        key: NodeId::of_key("alice@example.test"),
        name: "alice@example.test".into(),
        kind: "binding".into(),
        value: b"contact".to_vec(),
        version: 7,
        expires: now + Duration::from_secs(3600),
        writer,
        signature: Vec::new(),
        proof: None,
    }
}

/// A CA, members A (5070) and B (5071), and C (5072) from another CA.
fn three(name: &str, now: Instant) -> (PathBuf, Node, Node, Node) {
    let dir = temp_dir(name);
    p2psip_certs::write_ca(&dir.join("ca")).expect("CA");
    p2psip_certs::write_ca(&dir.join("other")).expect("CA");
    let a = node(member(&dir, "ca", 5070), now);
    let b = node(member(&dir, "ca", 5071), now);
    let c = node(member(&dir, "other", 5072), now);
    (dir, a, b, c)
}

#[test]
fn an_item_holds_only_with_its_writers_signature_and_certificate() {
    let now = Instant::now();
    let (dir, mut a, mut b, mut c) = three("items", now);
    let mut signed = item(a.signing.me, now);
    a.seals.sign_item(&mut signed, now);
    assert!(!signed.signature.is_empty());
    // B does not know A's certificate yet: not believed.
    assert_eq!(b.seals.check_item(&signed, now), None);
    b.book
        .lock()
        .unwrap()
        .learn(&a.signing.cert_der, wall_now());
    let expires = b.seals.check_item(&signed, now).expect("valid");
    let gap = expires
        .max(signed.expires)
        .duration_since(expires.min(signed.expires));
    assert!(gap < Duration::from_secs(2), "{gap:?}");

    for (what, forged) in [
        ("value", {
            let mut f = signed.clone();
            f.value = b"attacker".to_vec();
            f
        }),
        ("version", {
            let mut f = signed.clone();
            f.version += 1;
            f
        }),
        ("writer", {
            let mut f = signed.clone();
            f.writer = b.signing.me;
            f
        }),
        ("expiry", {
            let mut f = signed.clone();
            let (s, sig) = seal::split(&f.signature).unwrap();
            f.signature = seal::join(s + 86_400, sig);
            f
        }),
        ("unsigned", {
            let mut f = signed.clone();
            f.signature.clear();
            f
        }),
    ] {
        assert_eq!(b.seals.check_item(&forged, now), None, "{what}");
    }
    // B signs an item naming A as its writer: A's key did not sign it.
    let mut theirs = item(a.signing.me, now);
    b.seals.sign_item(&mut theirs, now);
    assert_eq!(b.seals.check_item(&theirs, now), None);

    // Another CA's member: its certificate is not learnt, its items not believed.
    b.book
        .lock()
        .unwrap()
        .learn(&c.signing.cert_der, wall_now());
    assert_eq!(b.book.lock().unwrap().refused, 1);
    let mut other = item(c.signing.me, now);
    c.seals.sign_item(&mut other, now);
    assert_eq!(b.seals.check_item(&other, now), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn items_signed_together_hold_each_alone_and_are_checked_once() {
    let now = Instant::now();
    let (dir, mut a, mut b, _) = three("together", now);
    b.book
        .lock()
        .unwrap()
        .learn(&a.signing.cert_der, wall_now());
    let mut entry = item(a.signing.me, now);
    entry.kind = "directory".into();
    entry.value.clear();
    let mut items = vec![item(a.signing.me, now), entry];
    a.seals.sign_items(&mut items, now);
    assert_eq!(
        a.seals.verified.counts.read().0,
        1,
        "one signature for both"
    );
    for signed in &items {
        assert!(b.seals.check_item(signed, now).is_some());
    }
    let (_, checked, remembered) = b.seals.verified.counts.read();
    assert_eq!((checked, remembered), (1, 1), "one public-key check");

    // Another value is not among the signed digests.
    let mut forged = items[0].clone();
    forged.value = b"attacker".to_vec();
    assert_eq!(b.seals.check_item(&forged, now), None);
    // Its digest put in the list: the list is not the one signed.
    let (expires_s, signature) = seal::split(&items[0].signature).unwrap();
    let (digests, inner) = batch::split(signature).unwrap();
    let mut listed = digests.to_vec();
    listed[..32].copy_from_slice(&batch::digest(&forged.signed_bytes(expires_s)));
    forged.signature = seal::join(expires_s, &batch::join(&listed, inner));
    assert_eq!(b.seals.check_item(&forged, now), None);
    // Another writer named; B's own group in A's name.
    let mut other = items[1].clone();
    other.writer = b.signing.me;
    assert_eq!(b.seals.check_item(&other, now), None);
    let mut theirs = vec![item(a.signing.me, now), item(a.signing.me, now)];
    theirs[1].name = "bob@example.test".into();
    b.seals.sign_items(&mut theirs, now);
    assert_eq!(b.seals.check_item(&theirs[0], now), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_remove_holds_once_within_the_window() {
    let now = Instant::now();
    let (dir, mut a, mut b, _) = three("removes", now);
    b.book
        .lock()
        .unwrap()
        .learn(&a.signing.cert_der, wall_now());
    let key = NodeId::of_key("alice@example.test");
    let name = "alice@example.test";
    let seal = a.seals.sign_remove(key, name, a.signing.me, now);
    assert!(
        !b.seals
            .check_remove(key, "bob@example.test", a.signing.me, &seal, now)
    );
    assert!(
        !b.seals.check_remove(key, name, b.signing.me, &seal, now),
        "another remover"
    );
    assert!(b.seals.check_remove(key, name, a.signing.me, &seal, now));
    assert!(
        !b.seals.check_remove(key, name, a.signing.me, &seal, now),
        "replayed"
    );
    // A fresh one later is fine; one signed 31 s before is not.
    let later = now + Duration::from_secs(31);
    let fresh = a.seals.sign_remove(key, name, a.signing.me, later);
    assert!(b.seals.check_remove(key, name, a.signing.me, &fresh, later));
    let old = a.seals.sign_remove(key, name, a.signing.me, now);
    assert!(
        !b.seals.check_remove(key, name, a.signing.me, &old, later),
        "too old"
    );
    assert!(
        !b.seals.check_remove(key, name, a.signing.me, &[], now),
        "unsigned"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn certificates_travel_in_headers() {
    let now = Instant::now();
    let (dir, a, b, _) = three("headers", now);
    let mut headers = Headers::new();
    let certs = a
        .book
        .lock()
        .unwrap()
        .certs_of([a.signing.me, a.signing.me, b.signing.me]);
    assert_eq!(certs.len(), 1, "its own, once; B's is unknown");
    add_certs(&mut headers, &certs);
    headers.insert(Name::from(P2P_CERT), "zz");
    let back = certs_in(&headers);
    assert_eq!(back, vec![a.signing.cert_der.clone()]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Drives a ring through a fetch whose first holder answers `items`; the
/// items the fetch ends with (the second holder answers with `good`).
fn fetch_answered(ring: &mut Ring, forged: Vec<Item>, good: Vec<Item>, now: Instant) -> Vec<Item> {
    let holder = Peer::of_addr("127.0.0.1:5081".parse().unwrap());
    let replica = Peer::of_addr("127.0.0.1:5082".parse().unwrap());
    let key = NodeId::of_key("alice@example.test");
    let op = ring.fetch(key, now);
    let mut answers = vec![forged, good].into_iter();
    let mut found = None;
    for _ in 0..20 {
        while let Some(out) = ring.poll_transmit() {
            let crate::ring::Outgoing::Request { id, request, .. } = out else {
                continue;
            };
            let response = match request {
                RingRequest::FindSuccessor { .. } => RingResponse::Found {
                    successor: holder,
                    hops: 1,
                    replicas: vec![replica],
                },
                RingRequest::Fetch { .. } => RingResponse::Items {
                    items: answers.next().unwrap_or_default(),
                },
                _ => RingResponse::Ok,
            };
            ring.handle_response(id, response, now);
        }
        while let Some(event) = ring.poll_event() {
            if let RingEvent::FetchDone { op: done, result } = event
                && done == op
            {
                found = Some(result.expect("fetched"));
            }
        }
        if found.is_some() {
            break;
        }
    }
    found.expect("the fetch ends")
}

#[test]
fn a_forged_answer_to_a_fetch_is_not_believed() {
    let now = Instant::now();
    let (dir, mut a, b, _) = three("fetch", now);
    // B fetches; the ring B sees is B and a "holder" that answers first.
    let bootstrap: SocketAddr = "127.0.0.1:5081".parse().unwrap();
    let mut ring = Ring::new(
        "127.0.0.1:5071".parse().unwrap(),
        RingConfig::default(),
        now,
    );
    ring.join(bootstrap, now);
    ring.set_item_seal(Box::new(Seals::new(
        b.signing.clone(),
        b.book.clone(),
        Wall::new(wall_now(), now),
    )));
    // Joined: the bootstrap answers the join lookup and stabilize.
    for _ in 0..10 {
        while let Some(out) = ring.poll_transmit() {
            if let crate::ring::Outgoing::Request { id, request, .. } = out {
                let response = match request {
                    RingRequest::FindSuccessor { .. } => RingResponse::Found {
                        successor: Peer::of_addr(bootstrap),
                        hops: 1,
                        replicas: vec![],
                    },
                    RingRequest::GetPredecessor => RingResponse::Predecessor {
                        predecessor: None,
                        successors: vec![],
                    },
                    _ => RingResponse::Ok,
                };
                ring.handle_response(id, response, now);
            }
        }
        while ring.poll_event().is_some() {}
    }
    b.book
        .lock()
        .unwrap()
        .learn(&a.signing.cert_der, wall_now());
    let mut genuine = item(a.signing.me, now);
    a.seals.sign_item(&mut genuine, now);
    let mut forged = genuine.clone();
    forged.value = b"sip:attacker@192.0.2.66".to_vec();
    let got = fetch_answered(&mut ring, vec![forged], vec![genuine.clone()], now);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, genuine.value, "the replica's genuine copy");
    assert_eq!(ring.record_refusals().bad_signature, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_signature_is_checked_in_full_once_and_only_for_the_same_bytes() {
    let now = Instant::now();
    let (dir, mut a, mut b, _) = three("verified", now);
    b.book
        .lock()
        .unwrap()
        .learn(&a.signing.cert_der, wall_now());
    // A node does not check again what it signed itself.
    let mut own = item(a.signing.me, now);
    a.seals.sign_item(&mut own, now);
    assert!(a.seals.check_item(&own, now).is_some());
    assert_eq!(a.seals.verified.counts.read(), (1, 0, 1));
    // Another checks it once in full, then remembers it.
    assert!(b.seals.check_item(&own, now).is_some());
    assert!(b.seals.check_item(&own, now).is_some());
    assert_eq!(b.seals.verified.counts.read(), (0, 1, 1));
    // One byte changed, or another signature: checked in full, refused, not
    // remembered.
    let mut changed = own.clone();
    changed.version += 1;
    assert_eq!(a.seals.check_item(&changed, now), None);
    assert_eq!(b.seals.check_item(&changed, now), None);
    assert_eq!(b.seals.check_item(&changed, now), None);
    assert_eq!(b.seals.verified.counts.read().1, 3);
    let mut other_signature = own.clone();
    if let Some(last) = other_signature.signature.last_mut() {
        *last ^= 1;
    }
    assert_eq!(b.seals.check_item(&other_signature, now), None);
    // The same bytes in another writer's name: its key, so checked and refused.
    let mut renamed = own.clone();
    renamed.writer = b.signing.me;
    assert_eq!(b.seals.check_item(&renamed, now), None);
    // Bounded.
    for i in 0..(MAX_VERIFIED + 10) as u64 {
        let mut next = item(a.signing.me, now);
        next.version = 100 + i;
        a.seals.sign_item(&mut next, now);
    }
    assert_eq!(a.seals.verified.len(), MAX_VERIFIED);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn certificates_learnt_are_handed_out_to_be_saved_and_believed_again() {
    let now = Instant::now();
    let (dir, a, b, c) = three("saved", now);
    let wall = Wall::new(wall_now(), now);
    let certified = Certified::new(b.book.clone(), wall);
    // Before the data directory is read, nothing is handed out.
    b.book
        .lock()
        .unwrap()
        .learn(&a.signing.cert_der, wall_now());
    assert!(certified.take_unsaved().is_empty());
    assert_eq!(certified.restore(&[], now), 0);
    let mut d = node(member(&dir, "ca", 5073), now);
    let mut ours = item(d.signing.me, now);
    d.seals.sign_item(&mut ours, now);
    // A member learnt from now on is handed out once, by Node-ID; its own
    // certificate never.
    b.book
        .lock()
        .unwrap()
        .learn(&d.signing.cert_der, wall_now());
    let unsaved = certified.take_unsaved();
    assert_eq!(unsaved.len(), 1);
    assert_eq!(unsaved[0].0, d.signing.me);
    assert!(certified.take_unsaved().is_empty());

    // After a restart: a new book knows only itself until the saved
    // certificates are read back, each checked again (another CA's is not
    // believed).
    let restarted = node(b.signing.clone(), now);
    let again = Certified::new(restarted.book.clone(), wall);
    let saved = vec![
        unsaved[0].1.to_vec(),
        c.signing.cert_der.clone(),
        b"junk".to_vec(),
    ];
    let mut checker = restarted;
    assert_eq!(checker.seals.check_item(&ours, now), None, "unknown writer");
    assert_eq!(again.restore(&saved, now), 1);
    assert!(checker.book.lock().unwrap().knows(d.signing.me));
    assert!(!checker.book.lock().unwrap().knows(c.signing.me));
    assert!(checker.seals.check_item(&ours, now).is_some());
    let _ = std::fs::remove_dir_all(&dir);
}
