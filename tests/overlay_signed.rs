//! Signed items in certificate mode, with real processes (docs/security.md
//! "Signed items"): three enrolled members form a ring; alice registers at
//! member-0 and every copy of her binding carries member-0's signature; a
//! MESSAGE through member-1 reaches her. A test process with a member
//! certificate of its own (a compromised member) sends each member her
//! binding unsigned, with a garbage signature, naming member-0 as writer
//! but signed with its own key, and with her genuine signature over a
//! changed value: each store is refused 403 and counted, and nothing
//! changes on the three holders. Its own record it may remove with a fresh
//! signed remove, once: the same remove replayed, one signed a minute ago
//! and an unsigned one are refused.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::certs::*;
use common::members::*;
use common::phone::Phone;
use common::*;
use p2psip::ring::{Item, NodeId, seal};
use serde_json::Value;

const BAD_SIGNATURE: &str = "not signed by its writer";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock")
}

/// How an item is signed.
enum Signature {
    /// By the test member's key, over the item as sent.
    Ours,
    /// Right length and form, wrong bytes.
    Garbage,
    /// Not at all.
    Unsigned,
    /// This seal as it came from a member (hex).
    Copied(String),
}

/// One item as a store body: `writer` hex, signed as `signature` says.
fn item_body(
    rogue: &CertMember,
    name: &str,
    kind: &str,
    value: &[u8],
    version: u64,
    writer: &str,
    signature: Signature,
) -> String {
    let key = sha1_hex(name);
    let expires_s = unix_now().as_secs() + 600;
    let item = Item {
        key: key.parse().expect("key"),
        name: name.into(),
        kind: kind.into(),
        value: value.to_vec(),
        version,
        expires: Instant::now(),
        writer: writer.parse().expect("writer"),
        signature: Vec::new(),
        proof: None,
    };
    let seal = match signature {
        Signature::Ours => hex(&seal::join(
            expires_s,
            &rogue.sign(&item.signed_bytes(expires_s)),
        )),
        Signature::Garbage => hex(&seal::join(expires_s, &[0x30; 70])),
        Signature::Unsigned => String::new(),
        Signature::Copied(seal) => seal,
    };
    format!(
        "{{\"items\":[{{\"key\":\"{key}\",\"name\":\"{name}\",\"kind\":\"{kind}\",\"value\":\"{}\",\"version\":{version},\"expires_ms\":600000,\"writer\":\"{writer}\",\"signature\":\"{seal}\"}}]}}",
        hex(value)
    )
}

/// A remove body for `name` by the test member, signed at `at` (ms since
/// the Unix epoch), or unsigned.
fn remove_body(rogue: &CertMember, name: &str, at: Option<u64>) -> String {
    let signature = at.map_or(String::new(), |at| {
        let key: NodeId = sha1_hex(name).parse().expect("key");
        let by: NodeId = rogue.id().parse().expect("id");
        hex(&seal::join(
            at,
            &rogue.sign(&seal::remove_bytes(key, name, by, at)),
        ))
    });
    format!("{{\"name\":\"{name}\",\"signature\":\"{signature}\"}}")
}

#[test]
fn only_items_and_removes_signed_by_their_writer_are_believed() {
    let dir = temp_dir("signed");
    let ca = dir.join("ca");
    certs(&["ca", "--out", &ca.display().to_string()]);
    let members = three_members(&dir, &ca);
    wait_until(
        "three members agree on one ring",
        Duration::from_secs(60),
        || consistent(&members),
        || logs(&members),
    );
    let rogue = CertMember::new(&dir, &ca, "rogue");

    // Alice registers at member-0: every copy carries its signature.
    let aor = format!("alice@{DOMAIN}");
    let alice = Phone::new("127.0.0.1", members[0].node.addr);
    let answer = alice
        .ask(&alice.register("alice", DOMAIN, ""))
        .expect("an answer to REGISTER");
    assert_eq!(answer.status, 200, "{}", answer.text);
    let writer = members[0].node.node_id.clone();
    wait_until(
        "every member holds alice's binding, signed by member-0",
        Duration::from_secs(30),
        || {
            members.iter().all(|m| {
                rogue.item_at(m.node.addr, &aor).is_some_and(|i| {
                    i["writer"].as_str() == Some(writer.as_str())
                        && i["signature"].as_str().is_some_and(|s| s.len() > 16)
                })
            })
        },
        || logs(&members),
    );
    let before: Vec<Value> = members
        .iter()
        .filter_map(|m| rogue.item_at(m.node.addr, &aor))
        .collect();
    assert_eq!(before.len(), 3);

    // A MESSAGE through member-1 reaches her.
    let stranger = Phone::new("127.0.0.3", members[1].node.addr);
    let message = stranger.request("MESSAGE", "eve@elsewhere.test", &aor, "");
    stranger
        .socket
        .send_to(message.as_bytes(), members[1].node.addr)
        .expect("send");
    alice
        .socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = vec![0u8; 65_536];
    let reached = (0..20).any(|_| {
        alice.socket.recv_from(&mut buf).is_ok_and(|(n, _)| {
            let text = String::from_utf8_lossy(&buf[..n]);
            text.starts_with("MESSAGE") && text.contains("eve@elsewhere.test")
        })
    });
    assert!(reached, "alice got the MESSAGE\n{}", logs(&members));

    // The test member tries to take her binding with bad signatures.
    let me = rogue.id();
    let stolen = format!("sip:alice@{}", rogue.addr);
    let genuine = before[0]["signature"].as_str().expect("seal").to_string();
    let version = before[0]["version"].as_u64().expect("version");
    let attempts = [
        (
            "store",
            item_body(
                &rogue,
                &aor,
                "binding",
                stolen.as_bytes(),
                version + 1,
                &me,
                Signature::Unsigned,
            ),
            "unsigned, in its own name",
        ),
        (
            "store",
            item_body(
                &rogue,
                &aor,
                "binding",
                stolen.as_bytes(),
                version + 1,
                &me,
                Signature::Garbage,
            ),
            "a garbage signature",
        ),
        (
            "store;replica",
            item_body(
                &rogue,
                &aor,
                "binding",
                stolen.as_bytes(),
                version + 1,
                &writer,
                Signature::Ours,
            ),
            "member-0's name, its own signature",
        ),
        (
            "store;replica",
            item_body(
                &rogue,
                &aor,
                "binding",
                stolen.as_bytes(),
                version,
                &writer,
                Signature::Copied(genuine.clone()),
            ),
            "member-0's genuine signature over another value",
        ),
    ];
    let cert = rogue.cert_header();
    for m in &members {
        let node = m.node.addr;
        for (op, body, what) in &attempts {
            let answer = rogue.ask(node, op, &format!("sip:{node}"), &cert, body);
            assert_eq!(
                answer.status, 403,
                "{what} at {}:\n{}",
                m.node.name, answer.text
            );
            assert!(
                answer.text.contains(BAD_SIGNATURE),
                "{what}: {}",
                answer.text
            );
        }
        // A transfer is answered, but its forged item is not kept.
        let body = item_body(
            &rogue,
            &aor,
            "binding",
            stolen.as_bytes(),
            version + 1,
            &writer,
            Signature::Ours,
        );
        rogue.ask(node, "transfer", &format!("sip:{node}"), &cert, &body);
    }
    let after: Vec<Value> = members
        .iter()
        .filter_map(|m| rogue.item_at(m.node.addr, &aor))
        .collect();
    let parts = |items: &[Value]| -> Vec<(Value, Value, Value, Value)> {
        items
            .iter()
            .map(|i| {
                (
                    i["writer"].clone(),
                    i["version"].clone(),
                    i["value"].clone(),
                    i["signature"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(
        parts(&after),
        parts(&before),
        "nothing changed on the holders"
    );
    for m in &members {
        let bad = metric(m, "p2psip_overlay_bad_signatures_total");
        assert!(bad > attempts.len() as u64, "{}: {bad}", m.node.name);
    }
    assert!(
        members[0]
            .node
            .log()
            .contains("without their writer's valid signature refused"),
        "{}",
        logs(&members)
    );

    // Its own record it may store, and remove with a fresh signature, once.
    let name = format!("rogue-record-{}", token());
    let node = members[0].node.addr;
    let to = format!("sip:{node}");
    let key_uri = format!("sip:{}@overlay.invalid", sha1_hex(&name));
    let own = |version| {
        item_body(
            &rogue,
            &name,
            "gateway",
            b"x",
            version,
            &me,
            Signature::Ours,
        )
    };
    let answer = rogue.ask(node, "store", &to, &cert, &own(1));
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(rogue.item_at(node, &name).is_some());
    let now_ms = || unix_now().as_millis() as u64;
    let remove = remove_body(&rogue, &name, Some(now_ms()));
    let answer = rogue.ask(node, "remove", &key_uri, &cert, &remove);
    assert_eq!(answer.status, 200, "{}", answer.text);
    wait_until(
        "the record is gone from every member",
        Duration::from_secs(30),
        || {
            members
                .iter()
                .all(|m| rogue.item_at(m.node.addr, &name).is_none())
        },
        || logs(&members),
    );
    let answer = rogue.ask(node, "store", &to, &cert, &own(2));
    assert_eq!(answer.status, 200, "{}", answer.text);
    let stale = remove_body(&rogue, &name, Some(now_ms() - 60_000));
    let unsigned = remove_body(&rogue, &name, None);
    for (body, what) in [
        (&remove, "replayed"),
        (&stale, "a minute old"),
        (&unsigned, "unsigned"),
    ] {
        let answer = rogue.ask(node, "remove", &key_uri, &cert, body);
        assert_eq!(answer.status, 403, "{what}:\n{}", answer.text);
        assert!(
            answer.text.contains(BAD_SIGNATURE),
            "{what}: {}",
            answer.text
        );
    }
    let kept = rogue.item_at(node, &name).expect("still held");
    assert_eq!(kept["version"].as_u64(), Some(2));
    assert_eq!(unhex(kept["value"].as_str().unwrap_or("")), b"x");
    let _ = std::fs::remove_dir_all(&dir);
}
