//! Signed items across restarts, with real processes in certificate mode
//! (docs/security.md "Signed items"), each member keeping a data directory:
//!
//! - a member answers a `fetch` with a forged copy (its stored binding
//!   changed on disk while it was down: another contact, a higher version,
//!   the writer's old signature); the member that looks the user up drops
//!   that answer, asks the next holder, and a MESSAGE reaches the phone at
//!   the contact she registered;
//! - the members' certificates are kept on disk beside the items: a holder
//!   restarted alone, whose writer is gone and never stores again, hands
//!   its copy to a new member, and the new member believes it (the writer's
//!   certificate travels with the copy, read back from disk).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::certs::*;
use common::members::*;
use common::phone::Phone;
use common::*;
use p2psip::ring::Change;
use p2psip::store::{Store, codec::Clock};

/// A member enrolled by the CA in `ca` at `sip`, keeping its items in `data`.
fn member(
    name: &str,
    (sip, http): (SocketAddr, SocketAddr),
    ca: &Path,
    node_dir: &Path,
    data: &Path,
    join: Option<SocketAddr>,
) -> Member {
    let mut extra = cert_args(ca, node_dir);
    extra.extend(["--data".to_string(), data.display().to_string()]);
    start(name, sip, http, &extra, join)
}

/// Three enrolled members with a data directory each: their addresses,
/// certificate directories and data directories.
struct Three {
    members: Vec<Member>,
    addrs: Vec<(SocketAddr, SocketAddr)>,
    node_dirs: Vec<PathBuf>,
    data: Vec<PathBuf>,
}

fn three(dir: &Path, ca: &Path) -> Three {
    let mut three = Three {
        members: Vec::new(),
        addrs: Vec::new(),
        node_dirs: Vec::new(),
        data: Vec::new(),
    };
    for i in 0..3 {
        let addrs = addresses();
        let (node_dir, _) = enroll(dir, ca, addrs.0, &format!("member-{i}"));
        let data = dir.join(format!("data-{i}"));
        let join = three.members.first().map(|m: &Member| m.node.addr);
        let m = member(&format!("member-{i}"), addrs, ca, &node_dir, &data, join);
        three.members.push(m);
        three.addrs.push(addrs);
        three.node_dirs.push(node_dir);
        three.data.push(data);
    }
    wait_until(
        "three members agree on one ring",
        Duration::from_secs(60),
        || consistent(&three.members),
        || logs(&three.members),
    );
    three
}

/// Alice registers at `at` from a phone on 127.0.0.1; the phone.
fn register_alice(at: SocketAddr) -> Phone {
    let alice = Phone::new("127.0.0.1", at);
    let answer = alice
        .ask(&alice.register("alice", DOMAIN, ""))
        .expect("an answer to REGISTER");
    assert_eq!(answer.status, 200, "{}", answer.text);
    alice
}

/// Whether the item's value names `contact` (hex of the binding's bytes).
fn value_has(item: &serde_json::Value, contact: &str) -> bool {
    let hex = item["value"].as_str().unwrap_or("");
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    String::from_utf8_lossy(&bytes).contains(contact)
}

#[test]
fn a_forged_fetch_answer_is_dropped_and_the_next_holder_asked() {
    let dir = temp_dir("restart-forged");
    let ca = dir.join("ca");
    certs(&["ca", "--out", &ca.display().to_string()]);
    let mut ring = three(&dir, &ca);
    let rogue = CertMember::new(&dir, &ca, "reader");

    // The holder of alice's key (its successor among the three Node-IDs);
    // she registers at another member, a stranger writes through the third.
    let aor = format!("alice@{DOMAIN}");
    let key = sha1_hex(&aor);
    let mut ids: Vec<(String, usize)> = ring
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.node.node_id.clone(), i))
        .collect();
    ids.sort();
    let holder = ids.iter().find(|(id, _)| *id >= key).unwrap_or(&ids[0]).1;
    let registrar = (holder + 1) % 3;
    let asker = (holder + 2) % 3;
    let alice = register_alice(ring.members[registrar].node.addr);
    let true_contact = alice.addr().to_string();
    wait_until(
        "every member holds alice's binding",
        Duration::from_secs(30),
        || {
            ring.members
                .iter()
                .all(|m| rogue.item_at(m.node.addr, &aor).is_some())
        },
        || logs(&ring.members),
    );

    // The holder goes down; its copy is changed on disk: another contact,
    // a higher version, the writer's signature over the old one.
    ring.members[holder].node.kill();
    let forged_contact = "127.0.0.66:5099";
    {
        let mut store = Store::open(&ring.data[holder]).expect("the holder's store");
        let mut items = store.load(Clock::read()).expect("items");
        let binding = items
            .iter_mut()
            .find(|i| i.name == aor && i.kind == "binding")
            .expect("alice's binding on the holder's disk");
        let text = String::from_utf8_lossy(&binding.value).into_owned();
        assert!(text.contains(&true_contact), "{text}");
        binding.value = text.replace(&true_contact, forged_contact).into_bytes();
        binding.version += 1;
        store
            .commit(&[Change::Put(binding.clone())], Clock::read())
            .expect("written");
    }
    let join = ring.members[registrar].node.addr;
    ring.members[holder] = member(
        "member-holder-again",
        ring.addrs[holder],
        &ca,
        &ring.node_dirs[holder],
        &ring.data[holder],
        Some(join),
    );
    wait_until(
        "the ring is whole again and the holder serves its forged copy",
        Duration::from_secs(60),
        || {
            consistent(&ring.members)
                && rogue
                    .item_at(ring.members[holder].node.addr, &aor)
                    .is_some_and(|i| value_has(&i, forged_contact))
        },
        || logs(&ring.members),
    );
    // The other members kept the genuine copy (the forged one pushed to
    // them is refused).
    for i in [registrar, asker] {
        let item = rogue
            .item_at(ring.members[i].node.addr, &aor)
            .expect("a copy");
        assert!(value_has(&item, &true_contact), "{item}");
    }
    let refused_before = metric(&ring.members[asker], "p2psip_overlay_bad_signatures_total");

    // A MESSAGE through the third member: it asks the holder first, drops
    // the forged answer, asks a replica, and alice's phone gets it. Right
    // after the ring is whole a member may still route alice's key to
    // itself (its own copy is genuine: the MESSAGE arrives, but the holder
    // was not asked); then it is tried again once the answer it cached
    // (`CACHE_FOR`, 30 s) is gone, at most twice more.
    let stranger = Phone::new("127.0.0.3", ring.members[asker].node.addr);
    alice
        .socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = vec![0u8; 65_536];
    let mut refused_after = refused_before;
    for attempt in 0..3 {
        if attempt > 0 {
            // No event tells that a cached answer expired: wait it out.
            std::thread::sleep(Duration::from_secs(31));
        }
        let message = stranger.request("MESSAGE", "eve@elsewhere.test", &aor, "");
        stranger
            .socket
            .send_to(message.as_bytes(), ring.members[asker].node.addr)
            .expect("send");
        let reached = (0..20).any(|_| {
            alice.socket.recv_from(&mut buf).is_ok_and(|(n, _)| {
                let text = String::from_utf8_lossy(&buf[..n]);
                text.starts_with("MESSAGE") && text.contains("eve@elsewhere.test")
            })
        });
        assert!(reached, "alice got the MESSAGE\n{}", logs(&ring.members));
        // It was the fetch answer that was refused, on the asking member.
        refused_after = metric(&ring.members[asker], "p2psip_overlay_bad_signatures_total");
        if refused_after > refused_before {
            break;
        }
    }
    assert!(
        refused_after > refused_before,
        "{refused_before} -> {refused_after}"
    );
    let dropped = ring.members[asker]
        .node
        .log()
        .lines()
        .any(|l| l.contains("fetched item without its writer's signature") && l.contains(&aor));
    assert!(dropped, "{}", logs(&ring.members));
    drop(ring);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restarted_holder_hands_on_copies_its_writer_never_stored_again() {
    let dir = temp_dir("restart-certs");
    let ca = dir.join("ca");
    certs(&["ca", "--out", &ca.display().to_string()]);
    let mut ring = three(&dir, &ca);
    let rogue = CertMember::new(&dir, &ca, "reader");
    let aor = format!("alice@{DOMAIN}");
    let writer = ring.members[0].node.node_id.clone();
    let _alice = register_alice(ring.members[0].node.addr);
    wait_until(
        "every member holds alice's binding, written by member-0",
        Duration::from_secs(30),
        || {
            ring.members.iter().all(|m| {
                rogue
                    .item_at(m.node.addr, &aor)
                    .is_some_and(|i| i["writer"].as_str() == Some(writer.as_str()))
            })
        },
        || logs(&ring.members),
    );

    // All three stop. The writer never comes back; member-2 comes back with
    // nothing (a new disk); member-1 comes back alone with its data (its
    // saved peers removed, so it starts a ring of its own).
    for m in ring.members.iter_mut() {
        m.node.kill();
    }
    let _ = std::fs::remove_dir_all(&ring.data[2]);
    let _ = std::fs::remove_file(ring.data[1].join("peers.json"));
    let holder = member(
        "member-1-again",
        ring.addrs[1],
        &ca,
        &ring.node_dirs[1],
        &ring.data[1],
        None,
    );
    let restored = rogue
        .item_at(holder.node.addr, &aor)
        .expect("member-1 serves its restored copy");
    assert_eq!(restored["writer"].as_str(), Some(writer.as_str()));
    assert!(
        holder
            .node
            .log()
            .contains("members' certificates read back"),
        "{}",
        tail(&holder.node.log(), 40)
    );

    // The new member-2 joins it and gets the copy: it is told the writer's
    // certificate, which member-1 had only from its disk, and believes it.
    let newcomer = member(
        "member-2-new",
        ring.addrs[2],
        &ca,
        &ring.node_dirs[2],
        &ring.data[2],
        Some(holder.node.addr),
    );
    let both = [&holder, &newcomer];
    wait_until(
        "the new member holds alice's binding, written by member-0",
        Duration::from_secs(60),
        || {
            rogue.item_at(newcomer.node.addr, &aor).is_some_and(|i| {
                i["writer"].as_str() == Some(writer.as_str())
                    && i["signature"] == restored["signature"]
            })
        },
        || logs(&both),
    );
    assert_eq!(
        metric(&newcomer, "p2psip_overlay_bad_signatures_total"),
        0,
        "{}",
        logs(&both)
    );
    drop(ring);
    let _ = std::fs::remove_dir_all(&dir);
}
