//! Voicemail with real node processes; the callers are the test itself
//! over UDP (SIP from `common::phone`, RTP and keys from `common::call`).
//!
//! One open node: Alice registered once and is now offline; a SIPp
//! watcher (as her own phone) subscribes to her `message-summary`; Bob's
//! INVITE (PCMU and telephone-event offered) is answered 200 with an SDP
//! answer, the greeting comes as PCMU RTP, Bob sends one second of a
//! 1 kHz tone and hangs up; the ring holds an index and one second of WAV
//! parts; the watcher gets `Messages-Waiting: yes` with `Voice-Message:
//! 1/0`; when she registers again her phone receives "You have 1 new
//! voicemail(s)"; she calls `voicemail@` from that phone and hears the
//! 1 kHz tone back (Goertzel, against the greeting's 425 Hz), while a
//! stranger calling as her gets 403; she presses 7, the recording is gone
//! from the ring and the watcher gets `Messages-Waiting: no`. An INVITE
//! offering no G.711 gets 488, one to a user who never registered 404.
//!
//! A ring of three nodes with digest users: Bob calls Alice through the
//! node holding her key, which records a 1.3 kHz tone; that node is
//! killed with SIGKILL; at another node the WAV downloads over HTTP with
//! her digest credentials (401 without, 401 with a wrong password), and
//! she registers there, calls `voicemail@` (authenticated) and hears the
//! tone back.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::call::*;
use common::phone::{Challenge, Phone};
use common::*;
use serde_json::Value;
use sha1::{Digest, Sha1};

/// One second at 8 kHz in 20 ms packets.
const PACKETS: u32 = 50;

/// A node with voicemail on, its HTTP window and data directory, and `extra` flags.
fn start_node(extra: &[&str]) -> (Node, SocketAddr, PathBuf) {
    start_node_limited(30, extra)
}

/// The same, recording at most `seconds`.
fn start_node_limited(seconds: u32, extra: &[&str]) -> (Node, SocketAddr, PathBuf) {
    let data = temp_dir("voicemail-data");
    let low = port_block(20);
    let config = data.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nmode = \"off\"\n[voicemail]\nenabled = true\nmax_seconds = {seconds}\nport_range = \"{low}-{}\"\n",
            low + 19
        ),
    )
    .expect("write the config");
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let http_arg = http.to_string();
    let mut args = vec![
        "--http",
        http_arg.as_str(),
        "--config",
        config.to_str().expect("path"),
        "--data",
        data.to_str().expect("path"),
    ];
    args.extend_from_slice(extra);
    (Node::start(&args), http, data)
}

/// A REGISTER of Alice with her contact at `contact` and these expiries.
fn register(phone: &Phone, contact: SocketAddr, expires: u32) -> String {
    let me = phone.addr();
    let branch = format!("z9hG4bK{}", token());
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@{DOMAIN}>;tag={branch}\r\n\
         To: <sip:alice@{DOMAIN}>\r\n\
         Call-ID: {branch}@alice\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:alice@{contact}>;expires={expires}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The node's items, by `p2psip items --data DIR --json`.
fn items(data: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_p2psip"))
        .args(["items", "--data", data.to_str().expect("path"), "--json"])
        .output()
        .expect("run p2psip items");
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

/// Waits (bounded) for one RTP packet of payload type 0 on `socket`.
fn greeting_heard(socket: &UdpSocket) -> bool {
    !receive_audio(socket, 160).is_empty()
}

/// The voicemail items under her key and the bytes of WAV parts in `items`.
fn recording_in(items: &[Value]) -> (usize, u64) {
    let index = items.iter().filter(|i| i["kind"] == "voicemail").count();
    let audio = items
        .iter()
        .filter(|i| i["kind"] == "voicemail-audio")
        .filter_map(|i| i["bytes"].as_u64())
        .sum();
    (index, audio)
}

#[test]
fn a_call_to_an_offline_user_is_recorded_announced_heard_and_deleted() {
    let (mut node, _http, data) = start_node(&[]);
    let alice = Phone::new("127.0.0.1", node.addr);
    let alice_phone = UdpSocket::bind("127.0.0.1:0").expect("bind Alice's phone");
    let contact = alice_phone.local_addr().expect("addr");
    let ok = alice
        .ask(&register(&alice, contact, 600))
        .expect("an answer");
    assert_eq!(ok.status, 200, "{}", ok.text);
    let gone = alice.ask(&register(&alice, contact, 0)).expect("an answer");
    assert_eq!(gone.status, 200, "{}", gone.text);

    // Her message-summary watcher: nothing waiting, then one voice
    // message, then nothing again (tests/sipp/subscribe_mwi.xml).
    let watcher = SippBuilder::new("mwi", "subscribe_mwi.xml", Transport::Udp)
        .to(node.addr)
        .service("alice")
        .key("domain", DOMAIN)
        .spawn();
    wait_until(
        "the watcher subscribed",
        WAIT,
        || {
            node.log()
                .contains("subscription accepted presentity=alice@example.test")
        },
        || watcher.diagnostics() + &tail(&node.log(), 30),
    );

    let bob = Phone::new("127.0.0.1", node.addr);
    let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind Bob's RTP");
    let rtp_addr = rtp.local_addr().expect("addr");

    // Nobody called carol ever: 404, not voicemail.
    let sdp = offer(rtp_addr, "0", "a=rtpmap:0 PCMU/8000\r\n");
    let to_carol = invite(
        &bob,
        &format!("bob@{DOMAIN}"),
        &format!("carol@{DOMAIN}"),
        &sdp,
        "",
    );
    let carol = bob.ask(&to_carol).expect("an answer");
    assert_eq!(carol.status, 404, "{}", carol.text);

    // G.722 only: 488.
    let g722 = offer(rtp_addr, "9", "a=rtpmap:9 G722/8000\r\n");
    let to_alice = invite(
        &bob,
        &format!("bob@{DOMAIN}"),
        &format!("alice@{DOMAIN}"),
        &g722,
        "",
    );
    let refused = bob.ask(&to_alice).expect("an answer");
    assert_eq!(refused.status, 488, "{}", refused.text);

    // PCMA, PCMU and telephone-event offered: PCMU and 101 answered.
    let sdp = offer(
        rtp_addr,
        "8 0 101",
        "a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
    );
    let call = invite(
        &bob,
        &format!("bob@{DOMAIN}"),
        &format!("alice@{DOMAIN}"),
        &sdp,
        "",
    );
    let answered = bob.ask(&call).expect("an answer to the INVITE");
    assert_eq!(answered.status, 200, "{}\n{}", answered.text, node.log());
    let body = answered.text.split("\r\n\r\n").nth(1).unwrap_or("");
    let media = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .expect("an audio stream in the answer");
    assert_eq!(
        media.split(' ').skip(1).collect::<Vec<_>>(),
        ["RTP/AVP", "0", "101"],
        "{body}"
    );
    assert!(body.contains("c=IN IP4 127.0.0.1"), "{body}");
    let node_rtp = answered_rtp(&answered);
    bob.send(&in_dialog(&bob, "ACK", 1, &call, &answered));
    assert!(greeting_heard(&rtp), "no greeting; log:\n{}", node.log());
    send_tone(&rtp, node_rtp, 1000.0, PACKETS);
    let bye = bob
        .ask(&in_dialog(&bob, "BYE", 2, &call, &answered))
        .expect("an answer to the BYE");
    assert_eq!(bye.status, 200, "{}", bye.text);

    // The recording in the ring: an index under her key, and WAV parts
    // holding 44 header bytes and one second of 16-bit samples.
    let wav = 44 + 2 * 8000;
    wait_until(
        "a voicemail item for alice with one second of audio",
        WAIT,
        || recording_in(&items(&data)) == (1, wav),
        || format!("items: {:?}\nlog:\n{}", items(&data), tail(&node.log(), 40)),
    );

    // She registers again: her phone is told.
    let back = alice
        .ask(&register(&alice, contact, 600))
        .expect("an answer");
    assert_eq!(back.status, 200, "{}", back.text);
    let message = message_on(&alice_phone).expect("a MESSAGE to her phone");
    assert!(message.contains("You have 1 new voicemail(s)"), "{message}");
    assert!(message.contains("sip:voicemail@example.test"), "{message}");

    // A stranger calling voicemail@ as her, from no contact she registered: 403.
    let listen_rtp = UdpSocket::bind("127.0.0.1:0").expect("bind her RTP");
    let listen_sdp = pcmu_offer(listen_rtp.local_addr().expect("addr"));
    let mailbox = format!("voicemail@{DOMAIN}");
    let as_her = format!("alice@{DOMAIN}");
    let stranger = bob
        .ask(&invite(&bob, &as_her, &mailbox, &listen_sdp, ""))
        .expect("an answer");
    assert_eq!(stranger.status, 403, "{}", stranger.text);

    // From her registered phone: her recording, played back.
    let listen = invite(&alice, &as_her, &mailbox, &listen_sdp, "");
    let answered = alice.ask(&listen).expect("an answer from voicemail@");
    assert_eq!(
        answered.status,
        200,
        "{}\n{}",
        answered.text,
        tail(&node.log(), 30)
    );
    alice.send(&in_dialog(&alice, "ACK", 1, &listen, &answered));
    let heard = receive_audio(&listen_rtp, 8000);
    assert_eq!(heard.len(), 8000, "{}", tail(&node.log(), 30));
    let tone = power_at(&heard, 1000.0);
    let greeting = power_at(&heard, 425.0);
    assert!(tone > 100.0 * greeting, "1 kHz {tone}, 425 Hz {greeting}");

    // 7 deletes it (it was still the one playing: the playback lingers).
    press(&listen_rtp, answered_rtp(&answered), 7, 8000, 1);
    wait_until(
        "the recording removed from the ring",
        WAIT,
        || recording_in(&items(&data)) == (0, 0),
        || format!("items: {:?}\nlog:\n{}", items(&data), tail(&node.log(), 40)),
    );
    let bye = alice
        .ask(&in_dialog(&alice, "BYE", 2, &listen, &answered))
        .expect("an answer to the BYE");
    assert_eq!(bye.status, 200, "{}", bye.text);
    watcher.expect_success_with(1, || tail(&node.log(), 40));
    node.assert_alive();
    assert!(node.terminate().success(), "{}", node.log());
}

#[test]
fn the_node_hangs_up_at_the_recording_limit() {
    let (mut node, _http, data) = start_node_limited(1, &[]);
    let alice = Phone::new("127.0.0.1", node.addr);
    let contact = alice.addr();
    for expires in [600, 0] {
        let ok = alice
            .ask(&register(&alice, contact, expires))
            .expect("an answer");
        assert_eq!(ok.status, 200, "{}", ok.text);
    }
    let bob = Phone::new("127.0.0.1", node.addr);
    let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind Bob's RTP");
    let sdp = pcmu_offer(rtp.local_addr().expect("addr"));
    let call = invite(
        &bob,
        "bob@elsewhere.test",
        &format!("alice@{DOMAIN}"),
        &sdp,
        "",
    );
    let answered = bob.ask(&call).expect("an answer to the INVITE");
    assert_eq!(answered.status, 200, "{}", answered.text);
    bob.send(&in_dialog(&bob, "ACK", 1, &call, &answered));
    // Two seconds of tone against a limit of one: the node says BYE.
    send_tone(&rtp, answered_rtp(&answered), 1000.0, 2 * PACKETS);
    let bye = request_on(&bob.socket, "BYE").expect("a BYE from the node");
    let call_id = call
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID: "))
        .expect("Call-ID");
    assert!(bye.contains(&format!("Call-ID: {call_id}")), "{bye}");
    let to_tag = answered.header("To").expect("To");
    assert!(bye.contains(&format!("From: {to_tag}")), "{bye}\n{to_tag}");
    // What was recorded is at most the limit.
    wait_until(
        "a recording of one second",
        WAIT,
        || {
            let (index, bytes) = recording_in(&items(&data));
            index == 1 && bytes <= 44 + 2 * 8000
        },
        || format!("items: {:?}\nlog:\n{}", items(&data), tail(&node.log(), 40)),
    );
    node.assert_alive();
}

#[test]
fn a_recording_survives_its_holder_and_is_heard_and_downloaded_at_another_node() {
    let dir = temp_dir("voicemail-ring");
    let users = dir.join("users");
    let password = "alice-secret-2026";
    add_user(&users, "alice@example.test", password);
    let users_arg = users.to_str().expect("path").to_string();
    let first = start_node(&["--users", &users_arg]);
    let join = first.0.addr.to_string();
    let mut nodes = vec![first];
    for _ in 0..2 {
        nodes.push(start_node(&["--users", &users_arg, "--join", &join]));
    }
    let logs = |nodes: &[(Node, SocketAddr, PathBuf)]| {
        nodes
            .iter()
            .map(|(n, _, _)| format!("--- {}:\n{}", n.addr, tail(&n.log(), 25)))
            .collect::<String>()
    };
    // Every node's successor and predecessor are its true neighbours.
    let mut ids: Vec<String> = nodes.iter().map(|(n, _, _)| n.node_id.clone()).collect();
    ids.sort();
    wait_until(
        "a consistent ring of three",
        WAIT,
        || {
            nodes.iter().all(|(n, http, _)| {
                let Some(s) =
                    http_get(*http, "/status").and_then(|b| serde_json::from_str::<Value>(&b).ok())
                else {
                    return false;
                };
                let me = ids.iter().position(|id| *id == n.node_id).unwrap_or(0);
                s["successors"][0]["id"].as_str() == Some(ids[(me + 1) % 3].as_str())
                    && s["predecessor"]["id"].as_str() == Some(ids[(me + 2) % 3].as_str())
            })
        },
        || logs(&nodes),
    );
    // The node responsible for her key takes the call and holds it.
    let key: String = Sha1::digest(b"alice@example.test")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let holder_id = ids.iter().find(|id| **id >= key).unwrap_or(&ids[0]).clone();
    let holder = nodes
        .iter()
        .position(|(n, _, _)| n.node_id == holder_id)
        .expect("the holder");
    let to = format!("alice@{DOMAIN}");
    leave_tone(nodes[holder].0.addr, &to, 1300.0, PACKETS, || logs(&nodes));
    let wav = 44 + 2 * 8000;
    for (i, (_, _, data)) in nodes.iter().enumerate() {
        wait_until(
            &format!("node {i} holds the recording (index and audio)"),
            WAIT,
            || recording_in(&items(data)) == (1, wav),
            || logs(&nodes),
        );
    }
    nodes[holder].0.kill();
    let (node, http_addr, _) = &nodes[(holder + 1) % 3];
    let node = node.addr;

    // Download over HTTP: 401 without credentials and with a wrong
    // password; her digest credentials get the WAV with the tone.
    let path = "/voicemail/alice@example.test/1.wav";
    let (refused, _) = http(*http_addr, path, None);
    assert_eq!(refused.status, 401, "{}", refused.text);
    let challenge = Challenge::all_of(&refused)
        .into_iter()
        .next()
        .expect("a digest challenge");
    assert_eq!(challenge.realm, DOMAIN);
    let wrong = challenge.answer("alice", "not-her-password", "GET", path, 1);
    let (refused, _) = http(*http_addr, path, Some(&wrong));
    assert_eq!(refused.status, 401, "{}", refused.text);
    let mut file = Vec::new();
    wait_until(
        "the WAV downloaded with her credentials",
        WAIT,
        || {
            let (asked, _) = http(*http_addr, path, None);
            let Some(challenge) = Challenge::all_of(&asked).into_iter().next() else {
                return false;
            };
            let right = challenge.answer("alice", password, "GET", path, 1);
            let (got, body) = http(*http_addr, path, Some(&right));
            file = unchunked(&got, body);
            got.status == 200
        },
        || logs(&nodes),
    );
    let samples = p2psip::media::wav::read(&file).expect("a WAV file");
    assert_eq!(samples.len(), 8000);
    let tone = power_at(&samples, 1300.0);
    assert!(tone > 100.0 * power_at(&samples, 425.0), "{tone}");

    // She registers at this node and calls voicemail@ (authenticated).
    let alice = Phone::new("127.0.0.1", node);
    wait_until(
        "alice registered at another node",
        WAIT,
        || {
            let build = |auth: &str| alice.register("alice", DOMAIN, auth);
            let answer = with_digest(
                &alice,
                build,
                "REGISTER",
                &format!("sip:{DOMAIN}"),
                password,
            );
            answer.is_some_and(|r| r.status == 200)
        },
        || logs(&nodes),
    );
    let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind her RTP");
    let sdp = pcmu_offer(rtp.local_addr().expect("addr"));
    let mailbox = format!("voicemail@{DOMAIN}");
    let listen = invite(&alice, &to, &mailbox, &sdp, "");
    let build = |auth: &str| {
        if auth.is_empty() {
            listen.clone()
        } else {
            again(&listen, auth)
        }
    };
    let answered = with_digest(&alice, build, "INVITE", &format!("sip:{mailbox}"), password)
        .expect("an answer from voicemail@");
    assert_eq!(answered.status, 200, "{}\n{}", answered.text, logs(&nodes));
    alice.send(&in_dialog(&alice, "ACK", 2, &listen, &answered));
    let heard = receive_audio(&rtp, 8000);
    assert_eq!(heard.len(), 8000, "{}", logs(&nodes));
    let tone = power_at(&heard, 1300.0);
    assert!(tone > 100.0 * power_at(&heard, 425.0), "{tone}");
    let bye = alice
        .ask(&in_dialog(&alice, "BYE", 3, &listen, &answered))
        .expect("an answer to the BYE");
    assert_eq!(bye.status, 200, "{}", bye.text);
}
