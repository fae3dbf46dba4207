//! Certificate-mode overlay admission with real processes (docs/security.md
//! "Certificate mode"): three members enrolled with `p2psip certs node`
//! form a ring over mutual TLS and carry a call; a node without a
//! certificate and one enrolled by another CA, joining through a member,
//! never appear in any member's ring; raw overlay requests (`store`,
//! `remove`, `fetch`, `notify`, `leave`, `transfer`) sent straight to
//! members over UDP and plain TCP get 403 and change nothing; a node whose
//! certificate names another address, or is revoked, does not start; and a
//! member whose serial is revoked in the others' config is shut out once
//! they restart with it.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::certs::*;
use common::members::*;
use common::*;

const FORBIDDEN: &str = "Forbidden (not an overlay member)";

/// An overlay request as a stranger writes it (docs/protocol.md), from `local`.
fn overlay_request(
    member: SocketAddr,
    local: SocketAddr,
    transport: &str,
    op: &str,
    to: &str,
    extra: &str,
    body: &str,
) -> String {
    members::overlay_request(transport, local, member, op, to, extra, body)
}

/// Sends `request` over a plain TCP connection and returns the final response.
fn exchange_tcp(to: SocketAddr, request: &str) -> RawResponse {
    let mut stream = TcpStream::connect(to).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    loop {
        let message = read_stream_message(&mut stream)
            .expect("read")
            .unwrap_or_else(|| panic!("{to} closed without answering:\n{request}"));
        if let Some(r) = RawResponse::parse(&message)
            && r.status >= 200
        {
            return r;
        }
    }
}

/// The raw overlay requests an outsider at `local` might send to `member`.
fn forged_requests(
    member: SocketAddr,
    other: SocketAddr,
    local: SocketAddr,
) -> Vec<(&'static str, String, String, String)> {
    let key = sha1_hex(&format!("alice@{DOMAIN}"));
    let key_uri = format!("sip:{key}@overlay.invalid");
    let items = format!(
        "{{\"items\":[{{\"key\":\"{key}\",\"name\":\"alice@{DOMAIN}\",\"kind\":\"binding\",\"value\":\"00\",\"version\":999999,\"expires_ms\":3600000}}]}}"
    );
    let node = format!("sip:{member}");
    vec![
        ("store", node.clone(), String::new(), items.clone()),
        ("transfer", node.clone(), String::new(), items),
        (
            "remove",
            key_uri.clone(),
            String::new(),
            format!("{{\"name\":\"alice@{DOMAIN}\"}}"),
        ),
        ("fetch", key_uri, String::new(), String::new()),
        (
            "notify",
            node.clone(),
            format!("Contact: <{}>;predecessor\r\n", peer_uri(local)),
            String::new(),
        ),
        (
            "leave",
            node,
            format!(
                "Contact: <{}>;leaving\r\nContact: <{}>;successor\r\n",
                peer_uri(other),
                peer_uri(local)
            ),
            String::new(),
        ),
    ]
}

#[test]
fn only_members_with_a_certificate_join_read_or_write_the_ring() {
    let dir = temp_dir("certs");
    let ca = dir.join("ca");
    certs(&["ca", "--out", &ca.display().to_string()]);
    let other_ca = dir.join("other-ca");
    certs(&["ca", "--out", &other_ca.display().to_string()]);

    let members = three_members(&dir, &ca);
    let all: Vec<&Member> = members.iter().collect();
    wait_until(
        "three members agree on one ring",
        Duration::from_secs(60),
        || consistent(&all),
        || logs(&all),
    );
    for m in &members {
        assert!(m.node.log().contains("certificate mode"), "{}", m.node.name);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = dir.join(&m.node.name).join("node-key.pem");
            let mode = std::fs::metadata(&key).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
    }

    // A call: alice registered at one member, called through another.
    // Alice's phone outlives the intruders' wait (up to 60 + 30 s).
    let mut alice = SippBuilder::new("alice", "uas_call.xml", Transport::Udp)
        .calls(2)
        .timeout(Duration::from_secs(200))
        .spawn();
    alice.wait_listening();
    SippBuilder::new("register-alice", "register.xml", Transport::Udp)
        .to(members[1].node.addr)
        .key("user", "alice")
        .key("domain", DOMAIN)
        .key("contact", &Transport::Udp.contact("alice", alice.port))
        .key("expires", "3600")
        .spawn()
        .expect_success(1);
    let call = |via: SocketAddr, name: &str| {
        SippBuilder::new(name, "uac_call.xml", Transport::Udp)
            .to(via)
            .service("alice")
            .key("domain", DOMAIN)
            .spawn()
            .expect_success(1);
    };
    call(members[2].node.addr, "call-before");

    // Intruders: no certificate, and one from another CA, joining through a member.
    let boot = members[0].node.addr;
    let (sip, http) = addresses();
    let open = start("no-certificate", sip, http, &[], Some(boot));
    let (sip, http) = addresses();
    let (stranger_dir, _) = enroll(&dir, &other_ca, sip, "stranger");
    let stranger = start(
        "other-ca",
        sip,
        http,
        &cert_args(&other_ca, &stranger_dir),
        Some(boot),
    );
    let intruders = [open.node.addr.to_string(), stranger.node.addr.to_string()];
    let rounds = |m: &Member| metric(m, "p2psip_overlay_stabilize_rounds_total");
    let start_rounds: Vec<u64> = members.iter().map(rounds).collect();
    let mut everyone: Vec<&Member> = members.iter().collect();
    everyone.extend([&open, &stranger]);
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
            let refused_open = members[0]
                .node
                .log()
                .lines()
                .any(|l| l.contains("overlay message refused") && l.contains(&intruders[0]));
            let refused_stranger = members[0]
                .node
                .log()
                .lines()
                .any(|l| l.contains("overlay TLS handshake failed"));
            refused_open
                && refused_stranger
                && members
                    .iter()
                    .zip(&start_rounds)
                    .all(|(m, r0)| rounds(m) >= r0 + 5)
        },
        || logs(&everyone),
    );

    // Raw overlay requests over UDP and plain TCP: every one gets 403.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let local = socket.local_addr().expect("local");
    for m in &members {
        let addr = m.node.addr;
        let other = members
            .iter()
            .map(|o| o.node.addr)
            .find(|a| *a != addr)
            .expect("another member");
        for (op, to, extra, body) in forged_requests(addr, other, local) {
            let request = overlay_request(addr, local, "UDP", op, &to, &extra, &body);
            let answer = exchange(&socket, addr, &request);
            assert_eq!(
                answer.status, 403,
                "{op} to {}:\n{}",
                m.node.name, answer.text
            );
            assert!(answer.text.contains(FORBIDDEN), "{}", answer.text);
            assert!(!answer.text.contains("\"items\""), "{}", answer.text);
            let request = overlay_request(addr, local, "TCP", op, &to, &extra, &body);
            let answer = exchange_tcp(addr, &request);
            assert_eq!(
                answer.status, 403,
                "{op} over TCP to {}:\n{}",
                m.node.name, answer.text
            );
        }
    }

    // Nothing changed: the ring is whole and alice is still reached.
    wait_until(
        "the ring is still consistent",
        Duration::from_secs(30),
        || consistent(&all),
        || logs(&all),
    );
    call(members[0].node.addr, "call-after");
    alice.expect_success(2);
    for m in &members {
        let s = status(m).unwrap_or_default();
        assert!(!known(&s).contains(&local.to_string()), "{s}");
        assert!(
            metric(m, "p2psip_overlay_refused_total") >= 12,
            "{}",
            m.node.name
        );
    }
}

/// `p2psip node ARGS`, expected to refuse to start: its one stderr line.
fn refused(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_p2psip"))
        .arg("node")
        .args(args)
        .output()
        .expect("run p2psip");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn a_certificate_for_another_node_or_revoked_is_refused() {
    let dir = temp_dir("certs-refused");
    let ca = dir.join("ca");
    certs(&["ca", "--out", &ca.display().to_string()]);

    // A certificate for another address.
    let (sip, _) = addresses();
    let (node_dir, serial) = enroll(&dir, &ca, sip, "node");
    let elsewhere = SocketAddr::from(([127, 0, 0, 1], sip.port() + 1));
    let mut args = vec!["--sip".to_string(), elsewhere.to_string()];
    args.extend(cert_args(&ca, &node_dir));
    let line = refused(&args);
    assert!(
        line.contains("config key `node_cert`") && line.contains("not this node's"),
        "{line}"
    );

    // Its own serial revoked in its config.
    let config = dir.join("revoked.toml");
    std::fs::write(&config, format!("overlay_revoked = [\"{serial}\"]\n")).expect("config");
    let mut args = vec![
        "--sip".to_string(),
        sip.to_string(),
        "--config".into(),
        config.display().to_string(),
    ];
    args.extend(cert_args(&ca, &node_dir));
    let line = refused(&args);
    assert!(
        line.contains("config key `node_cert`") && line.contains("revoked"),
        "{line}"
    );

    // Half of certificate mode, a bad serial, and both modes at once.
    let line = refused(&[
        "--sip".into(),
        sip.to_string(),
        "--overlay-ca".into(),
        ca.join("ca.pem").display().to_string(),
    ]);
    assert!(line.contains("config key `node_cert`"), "{line}");
    std::fs::write(&config, "overlay_revoked = [\"not-hex\"]\n").expect("config");
    let line = refused(&args);
    assert!(line.contains("config key `overlay_revoked`"), "{line}");
    let secret = dir.join("secret");
    std::fs::write(
        &secret,
        "c2VjcmV0IHNoYXJlZCBieSB0aGUgbWVtYmVycyBvZiB0aGlzIHJpbmc=\n",
    )
    .expect("secret");
    let mut args = vec![
        "--sip".to_string(),
        sip.to_string(),
        "--overlay-secret".into(),
        secret.display().to_string(),
    ];
    args.extend(cert_args(&ca, &node_dir));
    let line = refused(&args);
    assert!(line.contains("config key `overlay_secret`"), "{line}");
}

#[test]
fn a_member_revoked_in_the_config_is_shut_out_after_a_restart() {
    let dir = temp_dir("certs-revoke");
    let ca = dir.join("ca");
    certs(&["ca", "--out", &ca.display().to_string()]);
    let mut nodes = Vec::new();
    for i in 0..3 {
        let (sip, http) = addresses();
        let (node_dir, serial) = enroll(&dir, &ca, sip, &format!("m{i}"));
        nodes.push((sip, http, node_dir, serial));
    }
    let boot = nodes[0].0;
    let spawn = |i: usize, extra: &[String]| {
        let (sip, http, node_dir, _) = &nodes[i];
        let mut args = cert_args(&ca, node_dir);
        args.extend_from_slice(extra);
        start(
            &format!("m{i}"),
            *sip,
            *http,
            &args,
            (i > 0).then_some(boot),
        )
    };
    let mut m0 = spawn(0, &[]);
    let mut m1 = spawn(1, &[]);
    let mut m2 = spawn(2, &[]);
    wait_until(
        "three members agree on one ring",
        Duration::from_secs(60),
        || consistent(&[&m0, &m1, &m2]),
        || logs(&[&m0, &m1, &m2]),
    );

    // m2's serial revoked: m0 and m1 restart with the new config; m2, with
    // its own config unchanged, restarts too and joins through m0 again.
    let config = dir.join("overlay.toml");
    std::fs::write(&config, format!("overlay_revoked = [\"{}\"]\n", nodes[2].3)).expect("config");
    let with_config = ["--config".to_string(), config.display().to_string()];
    for m in [&mut m0, &mut m1, &mut m2] {
        m.node.terminate();
    }
    let m0 = spawn(0, &with_config);
    let m1 = spawn(1, &with_config);
    let m2 = spawn(2, &[]);
    let revoked = nodes[2].0.to_string();
    let rounds = |m: &Member| metric(m, "p2psip_overlay_stabilize_rounds_total");
    wait_until(
        "m0 and m1 form a ring of two without m2, for five stabilize rounds",
        Duration::from_secs(60),
        || {
            for m in [&m0, &m1] {
                let s = status(m).unwrap_or_default();
                assert!(
                    !known(&s).contains(&revoked),
                    "{} lists revoked m2: {s}",
                    m.node.name
                );
            }
            consistent(&[&m0, &m1])
                && rounds(&m0) >= 5
                && rounds(&m1) >= 5
                && [&m0, &m1]
                    .iter()
                    .any(|m| m.node.log().contains("is revoked"))
        },
        || logs(&[&m0, &m1, &m2]),
    );
}
