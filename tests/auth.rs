//! Digest authentication of phones, with real processes over loopback: the
//! users file made by `p2psip users add`, 401/407 challenges offering MD5 and
//! SHA-256, right and wrong passwords, replays, another user's AOR, unknown
//! users that look like wrong passwords, relaying denied, credentials found
//! through the ring by a node with no users file, blocking after failures,
//! and SIPp answering the challenges as a real peer.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::phone::{ANSWER, Challenge, Phone};
use common::{
    DOMAIN, Node, SippBuilder, Transport, add_user, http_get, port_block, temp_dir, wait_until,
};

fn users_file(tag: &str, users: &[(&str, &str)]) -> PathBuf {
    let file = temp_dir(tag).join("users");
    for (aor, password) in users {
        add_user(&file, aor, password);
    }
    file
}

#[test]
fn registrations_are_challenged_and_checked() {
    let users = users_file(
        "auth-register",
        &[
            ("alice@example.test", "wonderland"),
            ("bob@example.test", "builder"),
        ],
    );
    let text = std::fs::read_to_string(&users).expect("users file");
    assert!(!text.contains("wonderland"), "the file holds no password");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&users)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "users file mode");
    }
    let node = Node::start(&["--users", users.to_str().expect("path")]);
    let phone = Phone::new("127.0.0.1", node.addr);

    // No credentials: 401 with an MD5 and a SHA-256 challenge, qop=auth.
    let first = phone
        .ask(&phone.register("alice", DOMAIN, ""))
        .expect("answer");
    assert_eq!(first.status, 401, "{}", first.text);
    let challenges = Challenge::all_of(&first);
    let mut algorithms: Vec<&str> = challenges.iter().map(|c| c.algorithm.as_str()).collect();
    algorithms.sort();
    assert_eq!(algorithms, ["MD5", "SHA-256"], "{}", first.text);
    assert!(
        challenges
            .iter()
            .all(|c| c.qop == "auth" && c.realm == DOMAIN)
    );

    // The right password, with either algorithm.
    for algorithm in ["SHA-256", "MD5"] {
        let ok = phone.register_with("alice", "wonderland", algorithm);
        assert_eq!(ok.status, 200, "{algorithm}: {}", ok.text);
        assert!(
            ok.text.contains(&format!("sip:alice@{}", phone.addr())),
            "{}",
            ok.text
        );
    }

    // The same credentials again (same nonce, same nc): a replay.
    let challenge = Challenge::all_of(&first).remove(0);
    let answer = challenge.answer(
        "alice",
        "wonderland",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        7,
    );
    let header = format!("Authorization: {answer}\r\n");
    let once = phone
        .ask(&phone.register("alice", DOMAIN, &header))
        .expect("answer");
    assert_eq!(once.status, 200, "{}", once.text);
    let again = phone
        .ask(&phone.register("alice", DOMAIN, &header))
        .expect("answer");
    assert_eq!(
        again.status, 401,
        "a replayed nc is refused: {}",
        again.text
    );

    // A wrong password and an unknown user look the same.
    let wrong = phone.register_with("alice", "guess", "MD5");
    let unknown = phone.register_with("mallory", "guess", "MD5");
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert_eq!(unknown.status, wrong.status);
    let names = |r: &common::RawResponse| -> Vec<String> {
        let mut names: Vec<String> = r
            .text
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(n, _)| n.trim().to_ascii_lowercase())
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names(&wrong),
        names(&unknown),
        "same headers:\n{}\n{}",
        wrong.text,
        unknown.text
    );
    assert_eq!(wrong.text.lines().next(), unknown.text.lines().next());

    // Alice's credentials for bob's AOR.
    let first = phone
        .ask(&phone.register("bob", DOMAIN, ""))
        .expect("answer");
    let challenge = Challenge::all_of(&first).remove(0);
    let as_alice = challenge.answer(
        "alice",
        "wonderland",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        1,
    );
    let theft = phone
        .ask(&phone.register("bob", DOMAIN, &format!("Authorization: {as_alice}\r\n")))
        .expect("answer");
    assert_eq!(theft.status, 403, "{}", theft.text);

    // A nonce the node never made.
    let forged = Challenge {
        nonce: "00000000000000000000000000000000000000000000".into(),
        ..challenge
    };
    let answer = forged.answer("bob", "builder", "REGISTER", &format!("sip:{DOMAIN}"), 1);
    let reply = phone
        .ask(&phone.register("bob", DOMAIN, &format!("Authorization: {answer}\r\n")))
        .expect("answer");
    assert_eq!(reply.status, 401, "{}", reply.text);

    // SIPp, a real peer, answers the challenge (MD5) and registers.
    let contact = "sip:bob@127.0.0.1:5999".to_string();
    SippBuilder::new("bob-register", "register_auth.xml", Transport::Udp)
        .to(node.addr)
        .key("user", "bob")
        .key("domain", DOMAIN)
        .key("contact", &contact)
        .key("expires", "60")
        .credentials("bob", "builder")
        .spawn()
        .expect_success(1);
}

#[test]
fn phones_are_challenged_for_what_they_send_and_relaying_is_denied() {
    let users = users_file(
        "auth-requests",
        &[
            ("alice@example.test", "wonderland"),
            ("bob@example.test", "builder"),
        ],
    );
    let node = Node::start(&["--users", users.to_str().expect("path")]);
    let alice = Phone::new("127.0.0.1", node.addr);
    let bob = Phone::new("127.0.0.1", node.addr);
    assert_eq!(bob.register_with("bob", "builder", "MD5").status, 200);

    // A MESSAGE from alice without credentials: 407; with them it reaches bob.
    let to = format!("bob@{DOMAIN}");
    let from = format!("alice@{DOMAIN}");
    let first = alice
        .ask(&alice.request("MESSAGE", &from, &to, ""))
        .expect("answer");
    assert_eq!(first.status, 407, "{}", first.text);
    let challenge = Challenge::all_of(&first)
        .into_iter()
        .find(|c| c.algorithm == "SHA-256")
        .expect("a SHA-256 challenge");
    let answer = challenge.answer("alice", "wonderland", "MESSAGE", &format!("sip:{to}"), 1);
    let request = alice.request(
        "MESSAGE",
        &from,
        &to,
        &format!("Proxy-Authorization: {answer}\r\n"),
    );
    alice
        .socket
        .send_to(request.as_bytes(), node.addr)
        .expect("send");
    let mut buf = vec![0u8; 70_000];
    bob.socket.set_read_timeout(Some(ANSWER)).expect("timeout");
    let (n, _) = bob
        .socket
        .recv_from(&mut buf)
        .expect("bob gets the MESSAGE");
    let got = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(got.starts_with("MESSAGE sip:bob@"), "{got}");
    assert!(
        !got.contains("Proxy-Authorization"),
        "credentials are not passed on: {got}"
    );

    // An INVITE from alice without credentials: 407.
    let invite = alice
        .ask(&alice.request("INVITE", &from, &to, ""))
        .expect("answer");
    assert_eq!(invite.status, 407, "{}", invite.text);

    // SIPp calls with credentials answered (MD5) through the node to a SIPp UAS.
    let mut callee = SippBuilder::new("carol-uas", "uas_call.xml", Transport::Udp).spawn();
    callee.wait_listening();
    let contact = format!("sip:carol@127.0.0.1:{}", callee.port);
    let carol = Phone::new("127.0.0.1", node.addr);
    add_user(&users, "carol@example.test", "secret");
    // The node reads its users file again within a few seconds (and says so).
    wait_until(
        "the node read its users file again",
        Duration::from_secs(15),
        || node.log().matches("users file read").count() >= 2,
        || node.log(),
    );
    let first = carol
        .ask(&carol.register("carol", DOMAIN, ""))
        .expect("answer");
    let challenge = Challenge::all_of(&first).remove(0);
    let answer = challenge.answer("carol", "secret", "REGISTER", &format!("sip:{DOMAIN}"), 1);
    let register = carol
        .register("carol", DOMAIN, &format!("Authorization: {answer}\r\n"))
        .replace(
            &format!("<sip:carol@{}>", carol.addr()),
            &format!("<{contact}>"),
        );
    let registered = carol.ask(&register).expect("answer");
    assert_eq!(registered.status, 200, "{}", registered.text);
    SippBuilder::new("alice-call", "uac_call_auth.xml", Transport::Udp)
        .to(node.addr)
        .service("carol")
        .key("domain", DOMAIN)
        .key("caller", "alice")
        .credentials("alice", "wonderland")
        .spawn()
        .expect_success(1);
    callee.finish();

    // Strangers may not relay: a foreign domain and an IP literal get 403,
    // and nothing is forwarded.
    let stranger = Phone::new("127.0.0.3", node.addr);
    let listener = std::net::UdpSocket::bind("127.0.0.9:0").expect("bind");
    let literal = listener.local_addr().expect("addr");
    for target in [format!("x@{literal}"), "x@foreign.test".to_string()] {
        let reply = stranger
            .ask(&stranger.request("MESSAGE", "eve@elsewhere.test", &target, ""))
            .expect("answer");
        assert_eq!(reply.status, 403, "{target}: {}", reply.text);
        assert!(reply.text.contains("Relaying Denied"), "{}", reply.text);
    }
    listener
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    assert!(
        listener.recv_from(&mut buf).is_err(),
        "nothing reached the IP literal"
    );
    // A call for one of our users from another domain is served (bob is registered).
    let inbound = stranger.request("MESSAGE", "eve@elsewhere.test", &to, "");
    stranger
        .socket
        .send_to(inbound.as_bytes(), node.addr)
        .expect("send");
    // (Bob never answered alice's MESSAGE: its retransmissions come too.)
    let from_outside = (0..20).any(|_| {
        let (n, _) = bob
            .socket
            .recv_from(&mut buf)
            .expect("bob gets the MESSAGE from outside");
        String::from_utf8_lossy(&buf[..n]).contains("eve@elsewhere.test")
    });
    assert!(from_outside, "bob got the MESSAGE from another domain");
}

#[test]
fn a_user_of_one_node_registers_at_another_through_the_ring() {
    let users = users_file("auth-ring", &[("alice@example.test", "wonderland")]);
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let a = Node::start(&["--users", users.to_str().expect("path")]);
    let join = a.addr.to_string();
    let http_arg = http.to_string();
    let b = Node::start(&["--auth", "digest", "--join", &join, "--http", &http_arg]);
    wait_until(
        "b joined a",
        Duration::from_secs(15),
        || {
            http_get(http, "/status")
                .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
                .is_some_and(|s| s["successors"][0]["id"].as_str() == Some(a.node_id.as_str()))
        },
        || b.log(),
    );
    let phone = Phone::new("127.0.0.1", b.addr);
    // The credentials reach the ring at a's start or at its next publication.
    wait_until(
        "alice registers at b, which has no users file",
        Duration::from_secs(75),
        || phone.register_with("alice", "wonderland", "SHA-256").status == 200,
        || format!("{}\n{}", a.log(), b.log()),
    );
    assert_eq!(phone.register_with("alice", "guess", "SHA-256").status, 401);
}

#[test]
fn repeated_failures_silence_a_source() {
    let users = users_file("auth-block", &[("alice@example.test", "wonderland")]);
    let node = Node::start(&["--users", users.to_str().expect("path")]);
    let cracker = Phone::new("127.0.0.2", node.addr);
    for attempt in 0..10 {
        let reply = cracker.register_with("alice", &format!("guess{attempt}"), "MD5");
        assert_eq!(reply.status, 401, "attempt {attempt}");
    }
    assert!(
        cracker
            .ask(&cracker.register("alice", DOMAIN, ""))
            .is_none(),
        "a blocked source gets no answer"
    );
    // Another source is still served.
    let phone = Phone::new("127.0.0.3", node.addr);
    assert_eq!(
        phone.register_with("alice", "wonderland", "MD5").status,
        200
    );
}

#[test]
fn an_open_node_outside_loopback_must_be_asked_for() {
    let out = Command::new(env!("CARGO_BIN_EXE_p2psip"))
        .args(["node", "--sip", "0.0.0.0:0"])
        .output()
        .expect("run p2psip");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("config key `auth`") && stderr.lines().count() == 1,
        "{stderr}"
    );
}
