//! Shared-secret overlay admission with real processes (docs/security.md
//! "Overlay admission"): three members with one secret form a ring and
//! carry a call and a MESSAGE; a process with no secret and one with a
//! wrong secret, joining through a member, never appear in any member's
//! ring; raw overlay requests (`store`, `remove`, `fetch`, `notify`,
//! `leave`) from a test socket get 403 and change nothing.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::members::*;
use common::*;

const FORBIDDEN: &str = "Forbidden (not an overlay member)";

fn write_secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn start(name: &str, secret: Option<&Path>, join: Option<SocketAddr>) -> Member {
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let mut builder = Node::builder()
        .name(name)
        .args(["--sip", "127.0.0.1:0", "--domain", DOMAIN])
        .args(["--http", &http.to_string()]);
    if let Some(secret) = secret {
        builder = builder.args(["--overlay-secret", &secret.display().to_string()]);
    }
    if let Some(join) = join {
        builder = builder.args(["--join", &join.to_string()]);
    }
    Member {
        node: builder.spawn(),
        http,
    }
}

/// An overlay request as a stranger writes it (docs/protocol.md), from `local`.
fn overlay_request(
    member: SocketAddr,
    local: SocketAddr,
    op: &str,
    to: &str,
    extra: &str,
    body: &str,
) -> String {
    members::overlay_request("UDP", local, member, op, to, extra, body)
}

#[test]
fn only_members_with_the_secret_join_read_or_write_the_ring() {
    let dir = temp_dir("admission");
    let secret = write_secret(
        &dir,
        "secret",
        "c2VjcmV0IHNoYXJlZCBieSB0aGUgbWVtYmVycyBvZiB0aGlzIHJpbmc=\n",
    );
    let wrong = write_secret(
        &dir,
        "wrong",
        "YW5vdGhlciBzZWNyZXQsIGxvbmcgZW5vdWdoIHRvIHBhc3M=\n",
    );

    let first = start("member-0", Some(&secret), None);
    let boot = first.node.addr;
    let members = vec![
        first,
        start("member-1", Some(&secret), Some(boot)),
        start("member-2", Some(&secret), Some(boot)),
    ];
    let all: Vec<&Member> = members.iter().collect();
    wait_until(
        "three members agree on one ring",
        Duration::from_secs(60),
        || consistent(&members),
        || logs(&all),
    );
    for m in &members {
        assert!(
            m.node.log().contains("overlay admission on"),
            "{}",
            m.node.name
        );
    }

    // A call and a MESSAGE: registered at one member, sent through another.
    // Alice's phone outlives the intruders' wait (up to 60 + 30 s).
    let mut alice = SippBuilder::new("alice", "uas_call.xml", Transport::Udp)
        .calls(2)
        .timeout(Duration::from_secs(200))
        .spawn();
    alice.wait_listening();
    let mut carol = SippBuilder::new("carol", "uas_message.xml", Transport::Udp).spawn();
    carol.wait_listening();
    for (user, port) in [("alice", alice.port), ("carol", carol.port)] {
        SippBuilder::new(&format!("register-{user}"), "register.xml", Transport::Udp)
            .to(members[1].node.addr)
            .key("user", user)
            .key("domain", DOMAIN)
            .key("contact", &Transport::Udp.contact(user, port))
            .key("expires", "3600")
            .spawn()
            .expect_success(1);
    }
    let call = |via: SocketAddr, name: &str| {
        SippBuilder::new(name, "uac_call.xml", Transport::Udp)
            .to(via)
            .service("alice")
            .key("domain", DOMAIN)
            .spawn()
            .expect_success(1);
    };
    call(members[2].node.addr, "call-before");
    SippBuilder::new("message", "uac_message.xml", Transport::Udp)
        .to(members[0].node.addr)
        .service("carol")
        .key("domain", DOMAIN)
        .spawn()
        .expect_success(1);
    carol.expect_success(1);

    // Intruders: no secret, and a wrong one, both joining through a member.
    let open = start("no-secret", None, Some(boot));
    let forger = start("wrong-secret", Some(&wrong), Some(boot));
    assert!(
        open.node.log().contains("overlay admission is OFF"),
        "{}",
        open.node.log()
    );
    let intruders = [open.node.addr.to_string(), forger.node.addr.to_string()];
    let rounds = |m: &Member| metric(m, "p2psip_overlay_stabilize_rounds_total");
    let start_rounds: Vec<u64> = members.iter().map(rounds).collect();
    let mut everyone: Vec<&Member> = members.iter().collect();
    everyone.extend([&open, &forger]);
    wait_until(
        "both intruders refused, and five stabilize rounds on every member",
        Duration::from_secs(60),
        || {
            for m in &members {
                let s = status(m).unwrap_or_default();
                let seen = known(&s);
                for i in &intruders {
                    assert!(!seen.contains(i), "{} lists intruder {i}: {s}", m.node.name);
                }
            }
            let log = members[0].node.log();
            let refused_from = |addr: &str| {
                log.lines()
                    .any(|l| l.contains("overlay message refused") && l.contains(addr))
            };
            let refused = intruders.iter().all(|i| refused_from(i))
                && metric(&members[0], "p2psip_overlay_refused_total") >= 2;
            refused
                && members
                    .iter()
                    .zip(&start_rounds)
                    .all(|(m, r0)| rounds(m) >= r0 + 5)
        },
        || logs(&everyone),
    );

    // Raw overlay requests from a test socket: every one gets 403.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let local = socket.local_addr().expect("local");
    let key = sha1_hex(&format!("alice@{DOMAIN}"));
    let key_uri = format!("sip:{key}@overlay.invalid");
    let items = format!(
        "{{\"items\":[{{\"key\":\"{key}\",\"name\":\"alice@{DOMAIN}\",\"kind\":\"binding\",\"value\":\"00\",\"version\":999999,\"expires_ms\":3600000}}]}}"
    );
    let remove = format!("{{\"name\":\"alice@{DOMAIN}\"}}");
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let forged_mac = format!("P2P-Auth: ts={now_ms};mac={}\r\n", "0".repeat(64));
    for m in &members {
        let addr = m.node.addr;
        let other = members
            .iter()
            .map(|o| o.node.addr)
            .find(|a| *a != addr)
            .expect("another member");
        let node = format!("sip:{addr}");
        let requests = [
            ("store", node.clone(), String::new(), items.clone()),
            ("store", node.clone(), forged_mac.clone(), items.clone()),
            ("claim", node.clone(), String::new(), items.clone()),
            ("remove", key_uri.clone(), String::new(), remove.clone()),
            ("fetch", key_uri.clone(), String::new(), String::new()),
            (
                "notify",
                node.clone(),
                format!("Contact: <{}>;predecessor\r\n", peer_uri(local)),
                String::new(),
            ),
            (
                "leave",
                node.clone(),
                format!(
                    "Contact: <{}>;leaving\r\nContact: <{}>;successor\r\n",
                    peer_uri(other),
                    peer_uri(local)
                ),
                String::new(),
            ),
        ];
        for (op, to, extra, body) in requests {
            let request = overlay_request(addr, local, op, &to, &extra, &body);
            let answer = exchange(&socket, addr, &request);
            assert_eq!(
                answer.status, 403,
                "{op} to {}:\n{}",
                m.node.name, answer.text
            );
            assert!(answer.text.contains(FORBIDDEN), "{}", answer.text);
            assert!(!answer.text.contains("\"items\""), "{}", answer.text);
        }
    }
    // Control: the open node answers the same fetch.
    let request = overlay_request(open.node.addr, local, "fetch", &key_uri, "", "");
    assert_eq!(exchange(&socket, open.node.addr, &request).status, 200);

    // Nothing changed: the ring is whole and alice is still reached.
    wait_until(
        "the ring is still consistent",
        Duration::from_secs(30),
        || consistent(&members),
        || logs(&all),
    );
    call(members[0].node.addr, "call-after");
    alice.expect_success(2);
    for m in &members {
        let s = status(m).unwrap_or_default();
        assert!(!known(&s).contains(&local.to_string()), "{s}");
        assert!(
            metric(m, "p2psip_overlay_refused_total") >= 6,
            "{}",
            m.node.name
        );
    }
}

#[test]
fn a_short_or_missing_secret_is_one_error_line_and_exit_2() {
    let dir = temp_dir("admission-bad");
    let short = write_secret(&dir, "short", "too short\n");
    for path in [short, dir.join("missing")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_p2psip"))
            .args(["node", "--sip", "127.0.0.1:0", "--overlay-secret"])
            .arg(&path)
            .output()
            .expect("run p2psip");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("config key `overlay_secret`"), "{stderr}");
    }
}
