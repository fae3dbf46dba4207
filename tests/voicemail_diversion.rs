//! Voicemail for a callee who has live bindings but does not take the
//! call, with a real node process, SIPp as her phone and the test as the
//! caller over UDP (SIP from `common::phone`, RTP from `common::call`).
//!
//! Busy: her phone (SIPp `uas_busy.xml`) answers 486; Bob gets one final
//! answer, voicemail's 200 with an SDP answer (never the 486), hears the
//! greeting, sends a second of a 1 kHz tone and hangs up; the ring holds
//! the recording, its WAV (downloaded with her digest credentials) holds
//! the tone, and her `message-summary` says `Messages-Waiting: yes`.
//!
//! No answer: with `no_answer_s = 2` her phone (SIPp
//! `uas_ring_cancelled.xml`) only rings; its branch gets CANCEL, Bob gets
//! her 180 and then voicemail's 200.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::call::*;
use common::phone::Phone;
use common::*;
use serde_json::Value;

const PASSWORD: &str = "alice-secret-2026";

/// A node with voicemail on (`no_answer_s` as given), digest users (alice)
/// and its HTTP window and data directory.
fn start_node(no_answer_s: u32) -> (Node, SocketAddr, PathBuf) {
    let data = temp_dir("voicemail-diversion");
    let users = data.join("users");
    add_user(&users, "alice@example.test", PASSWORD);
    let low = port_block(20);
    let config = data.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nmode = \"off\"\n[voicemail]\nenabled = true\nno_answer_s = {no_answer_s}\nport_range = \"{low}-{}\"\n",
            low + 19
        ),
    )
    .expect("write the config");
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let args = [
        "--http".to_string(),
        http.to_string(),
        "--config".into(),
        config.to_str().expect("path").into(),
        "--data".into(),
        data.to_str().expect("path").into(),
        "--users".into(),
        users.to_str().expect("path").into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Node::start(&args), http, data)
}

/// Alice's REGISTER naming `contact` (her SIPp phone), with `auth` lines.
fn register(phone: &Phone, contact: SocketAddr, auth: &str) -> String {
    let me = phone.addr();
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK{}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@{DOMAIN}>;tag=r1\r\n\
         To: <sip:alice@{DOMAIN}>\r\n\
         Call-ID: reg-{me}\r\n\
         CSeq: {} REGISTER\r\n\
         Contact: <sip:alice@{contact}>;expires=600\r\n\
         {auth}Content-Length: 0\r\n\r\n",
        token(),
        if auth.is_empty() { 1 } else { 2 },
    )
}

/// Her phone (a SIPp UAS running `scenario` once) registered as alice.
fn her_phone(node: &Node, scenario: &str) -> Sipp {
    let mut uas = SippBuilder::new("alice", scenario, Transport::Udp)
        .calls(1)
        .spawn();
    uas.wait_listening();
    let contact = SocketAddr::from(([127, 0, 0, 1], uas.port));
    let phone = Phone::new("127.0.0.1", node.addr);
    let build = |auth: &str| register(&phone, contact, auth);
    let ok = with_digest(
        &phone,
        build,
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        PASSWORD,
    )
    .expect("an answer to her REGISTER");
    assert_eq!(ok.status, 200, "{}\n{}", ok.text, tail(&node.log(), 20));
    uas
}

/// Sends `invite` and gives every response to it, in order, up to and
/// including the first final one (bounded by [`WAIT`]).
fn responses(phone: &Phone, invite: &str) -> Vec<RawResponse> {
    let call_id = invite
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID: "))
        .expect("Call-ID")
        .to_string();
    phone.send(invite);
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 70_000];
    let mut got = Vec::new();
    while Instant::now() < deadline {
        phone
            .socket
            .set_read_timeout(Some(std::time::Duration::from_millis(500)))
            .expect("timeout");
        let Ok((n, _)) = phone.socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(response) = RawResponse::parse(&buf[..n]) else {
            continue;
        };
        if !response.text.contains(&call_id) || !response.text.contains(" INVITE\r\n") {
            continue;
        }
        let last = response.status >= 200;
        got.push(response);
        if last {
            break;
        }
    }
    got
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

/// Voicemail index items and bytes of WAV parts.
fn recording_in(items: &[Value]) -> (usize, u64) {
    let index = items.iter().filter(|i| i["kind"] == "voicemail").count();
    let audio = items
        .iter()
        .filter(|i| i["kind"] == "voicemail-audio")
        .filter_map(|i| i["bytes"].as_u64())
        .sum();
    (index, audio)
}

/// Bob calls alice: voicemail's 200 must be the only final answer.
fn bob_calls(node: &Node) -> (Phone, UdpSocket, String, RawResponse, Vec<u16>) {
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
    let mut got = responses(&bob, &call);
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    let ok = got
        .pop()
        .unwrap_or_else(|| panic!("no final answer to Bob's INVITE\n{}", tail(&node.log(), 40)));
    assert_eq!(
        ok.status,
        200,
        "{statuses:?}\n{}\n{}",
        ok.text,
        tail(&node.log(), 40)
    );
    assert!(
        ok.header("Contact")
            .is_some_and(|c| c.contains("voicemail@")),
        "{}",
        ok.text
    );
    (bob, rtp, call, ok, statuses)
}

#[test]
fn a_busy_callee_goes_to_voicemail_and_the_caller_never_sees_her_486() {
    let (mut node, http_addr, data) = start_node(20);
    let busy = her_phone(&node, "uas_busy.xml");

    // The first final answer Bob gets is voicemail's 200 (bob_calls).
    let (bob, rtp, call, ok, _) = bob_calls(&node);
    bob.send(&in_dialog(&bob, "ACK", 1, &call, &ok));
    busy.expect_success_with(1, || tail(&node.log(), 40));
    assert!(
        !receive_audio(&rtp, 160).is_empty(),
        "no greeting\n{}",
        tail(&node.log(), 30)
    );
    send_tone(&rtp, answered_rtp(&ok), 1000.0, 50);
    let bye = bob
        .ask(&in_dialog(&bob, "BYE", 2, &call, &ok))
        .expect("an answer to the BYE");
    assert_eq!(bye.status, 200, "{}", bye.text);

    let wav = 44 + 2 * 8000;
    wait_until(
        "the recording in the ring (index and one second of audio)",
        WAIT,
        || recording_in(&items(&data)) == (1, wav),
        || format!("items: {:?}\nlog:\n{}", items(&data), tail(&node.log(), 40)),
    );
    let path = "/voicemail/alice@example.test/1.wav";
    let (challenged, _) = http(http_addr, path, None);
    assert_eq!(challenged.status, 401, "{}", challenged.text);
    let challenge = common::phone::Challenge::all_of(&challenged)
        .into_iter()
        .next()
        .expect("a digest challenge");
    let right = challenge.answer("alice", PASSWORD, "GET", path, 1);
    let (got, body) = http(http_addr, path, Some(&right));
    assert_eq!(got.status, 200, "{}", got.text);
    let samples = p2psip::media::wav::read(&unchunked(&got, body)).expect("a WAV file");
    assert_eq!(samples.len(), 8000);
    let tone = power_at(&samples, 1000.0);
    assert!(tone > 100.0 * power_at(&samples, 425.0), "{tone}");

    // Her message-summary: a voice message waits.
    let watcher = Phone::new("127.0.0.1", node.addr);
    let me = watcher.addr();
    let subscribe = |auth: &str| {
        format!(
            "SUBSCRIBE sip:alice@{DOMAIN} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK{}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@{DOMAIN}>;tag=w1\r\n\
             To: <sip:alice@{DOMAIN}>\r\n\
             Call-ID: mwi-{me}\r\n\
             CSeq: {} SUBSCRIBE\r\n\
             Contact: <sip:alice@{me}>\r\n\
             Event: message-summary\r\n\
             Expires: 600\r\n\
             {auth}Content-Length: 0\r\n\r\n",
            token(),
            if auth.is_empty() { 1 } else { 2 },
        )
    };
    let uri = format!("sip:alice@{DOMAIN}");
    let accepted = with_digest(&watcher, subscribe, "SUBSCRIBE", &uri, PASSWORD)
        .expect("an answer to the SUBSCRIBE");
    assert_eq!(accepted.status, 200, "{}", accepted.text);
    let notify = request_on(&watcher.socket, "NOTIFY").expect("a NOTIFY");
    assert!(notify.contains("Messages-Waiting: yes"), "{notify}");
    assert!(notify.contains("Voice-Message: 1/0"), "{notify}");
    node.assert_alive();
}

#[test]
fn a_callee_that_only_rings_is_cancelled_after_no_answer_s_and_voicemail_answers() {
    let (mut node, _http, _data) = start_node(2);
    let ringing = her_phone(&node, "uas_ring_cancelled.xml");
    let started = Instant::now();
    let (bob, _rtp, call, ok, statuses) = bob_calls(&node);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "voicemail answered before no_answer_s"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s >= 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(statuses.contains(&180), "her ringing relayed: {statuses:?}");
    bob.send(&in_dialog(&bob, "ACK", 1, &call, &ok));
    // Her branch got CANCEL (and answered it 200 and 487, ACKed).
    ringing.expect_success_with(1, || tail(&node.log(), 40));
    assert!(
        node.log().contains("call diverted to voicemail"),
        "{}",
        tail(&node.log(), 30)
    );
    let bye = bob
        .ask(&in_dialog(&bob, "BYE", 2, &call, &ok))
        .expect("an answer to the BYE");
    assert_eq!(bye.status, 200, "{}", bye.text);
    node.assert_alive();
}
