//! Voicemail with a real node process: Alice registered once and is now
//! offline; Bob's INVITE (PCMU and telephone-event offered) is answered
//! 200 with an SDP answer by the node, which sends its greeting as PCMU
//! RTP; Bob sends one second of a tone as RTP and hangs up; the ring then
//! holds a `voicemail` index item for her and WAV parts of one second's
//! length; when she registers again her phone receives "You have 1 new
//! voicemail(s)". An INVITE offering no G.711 gets 488, one to a user who
//! never registered 404. The caller is the test itself over UDP (SIP from
//! `common::phone`, RTP from a socket of its own).

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::phone::Phone;
use common::*;
use serde_json::Value;

/// One second at 8 kHz in 20 ms packets.
const PACKETS: u32 = 50;

fn start_node() -> (Node, std::path::PathBuf) {
    let data = temp_dir("voicemail-data");
    let low = port_block(20);
    let config = data.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[voicemail]\nenabled = true\nmax_seconds = 30\nport_range = \"{low}-{}\"\n",
            low + 19
        ),
    )
    .expect("write the config");
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1))).to_string();
    let node = Node::start(&[
        "--http",
        &http,
        "--config",
        config.to_str().expect("path"),
        "--data",
        data.to_str().expect("path"),
    ]);
    (node, data)
}

fn offer(rtp: SocketAddr, formats: &str, maps: &str) -> String {
    format!(
        "v=0\r\no=bob 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {formats}\r\n{maps}",
        ip = rtp.ip(),
        port = rtp.port()
    )
}

/// An INVITE from Bob to `to` with this SDP body.
fn invite(bob: &Phone, to: &str, sdp: &str) -> String {
    let me = bob.addr();
    let branch = format!("z9hG4bK{}", token());
    format!(
        "INVITE sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:bob@{DOMAIN}>;tag=bob{branch}\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: {branch}@bob\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:bob@{me}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The ACK or BYE of the dialog a 200 to `invite` set up.
fn in_dialog(bob: &Phone, method: &str, cseq: u32, invite: &str, ok: &RawResponse) -> String {
    let me = bob.addr();
    let header = |name: &str| {
        invite
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .expect("a header of the INVITE")
            .to_string()
    };
    let contact = ok.header("Contact").expect("a Contact in the 200");
    let target = contact.trim_start_matches('<').trim_end_matches('>');
    let branch = format!("z9hG4bK{}", token());
    format!(
        "{method} {target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: {}\r\nTo: {}\r\nCall-ID: {}\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n",
        header("From"),
        ok.header("To").expect("To"),
        header("Call-ID"),
    )
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

/// µ-law of a linear sample (G.711), as a phone would send it.
fn ulaw(sample: i16) -> u8 {
    let mut value = i32::from(sample);
    let sign = if value < 0 {
        value = -value;
        0x80
    } else {
        0
    };
    value = value.min(32635) + 0x84;
    let exponent = (0..8).rev().find(|e| value & (0x80 << e) != 0).unwrap_or(0);
    let mantissa = (value >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

fn rtp_packet(seq: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x80, 0];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&timestamp.to_be_bytes());
    packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// Waits (bounded) for one RTP packet of payload type 0 on `socket`.
fn greeting_heard(socket: &UdpSocket) -> bool {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        match socket.recv_from(&mut buf) {
            Ok((n, _)) if n == 12 + 160 && buf[0] >> 6 == 2 && buf[1] & 0x7f == 0 => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("RTP receive failed: {e}"),
        }
    }
    false
}

/// Waits (bounded) for a MESSAGE on `socket`, answers it 200 and gives it.
fn message_on(socket: &UdpSocket) -> Option<String> {
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 70_000];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("MESSAGE ") {
            continue;
        }
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        let keep: Vec<&str> = head
            .lines()
            .filter(|l| {
                ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                    .iter()
                    .any(|h| l.starts_with(h))
            })
            .collect();
        let ok = format!(
            "SIP/2.0 200 OK\r\n{}\r\nContent-Length: 0\r\n\r\n",
            keep.join("\r\n")
        );
        socket.send_to(ok.as_bytes(), from).expect("send 200");
        return Some(text);
    }
    None
}

#[test]
fn a_call_to_an_offline_user_is_recorded_and_announced() {
    let (mut node, data) = start_node();
    let alice = Phone::new("127.0.0.1", node.addr);
    let alice_phone = UdpSocket::bind("127.0.0.1:0").expect("bind Alice's phone");
    let contact = alice_phone.local_addr().expect("addr");
    let ok = alice
        .ask(&register(&alice, contact, 600))
        .expect("an answer");
    assert_eq!(ok.status, 200, "{}", ok.text);
    let gone = alice.ask(&register(&alice, contact, 0)).expect("an answer");
    assert_eq!(gone.status, 200, "{}", gone.text);

    let bob = Phone::new("127.0.0.1", node.addr);
    let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind Bob's RTP");
    let rtp_addr = rtp.local_addr().expect("addr");

    // Nobody called carol ever: 404, not voicemail.
    let sdp = offer(rtp_addr, "0", "a=rtpmap:0 PCMU/8000\r\n");
    let carol = bob
        .ask(&invite(&bob, &format!("carol@{DOMAIN}"), &sdp))
        .expect("an answer");
    assert_eq!(carol.status, 404, "{}", carol.text);

    // G.722 only: 488.
    let g722 = offer(rtp_addr, "9", "a=rtpmap:9 G722/8000\r\n");
    let refused = bob
        .ask(&invite(&bob, &format!("alice@{DOMAIN}"), &g722))
        .expect("an answer");
    assert_eq!(refused.status, 488, "{}", refused.text);

    // PCMA, PCMU and telephone-event offered: PCMU and 101 answered.
    let sdp = offer(
        rtp_addr,
        "8 0 101",
        "a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
    );
    let call = invite(&bob, &format!("alice@{DOMAIN}"), &sdp);
    let answered = bob.ask(&call).expect("an answer to the INVITE");
    assert_eq!(answered.status, 200, "{}\n{}", answered.text, node.log());
    let body = answered.text.split("\r\n\r\n").nth(1).unwrap_or("");
    let media = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .expect("an audio stream in the answer");
    let mut fields = media.split(' ');
    let port: u16 = fields.next().and_then(|p| p.parse().ok()).expect("a port");
    assert_eq!(
        fields.collect::<Vec<_>>(),
        ["RTP/AVP", "0", "101"],
        "{body}"
    );
    assert!(body.contains("c=IN IP4 127.0.0.1"), "{body}");
    let node_rtp = SocketAddr::from(([127, 0, 0, 1], port));
    bob.send(&in_dialog(&bob, "ACK", 1, &call, &answered));

    assert!(greeting_heard(&rtp), "no greeting; log:\n{}", node.log());

    // One second of a 1 kHz tone, paced as a phone would.
    let start = Instant::now();
    for n in 0..PACKETS {
        let payload: Vec<u8> = (0..160)
            .map(|i| {
                let t = f64::from(n * 160 + i) / 8000.0;
                ulaw((8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16)
            })
            .collect();
        rtp.send_to(&rtp_packet(n as u16, n * 160, &payload), node_rtp)
            .expect("send RTP");
        let due = start + Duration::from_millis(20 * u64::from(n + 1));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
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
        || {
            let seen = items(&data);
            let index = seen.iter().any(|i| i["kind"] == "voicemail");
            let audio: u64 = seen
                .iter()
                .filter(|i| i["kind"] == "voicemail-audio")
                .filter_map(|i| i["bytes"].as_u64())
                .sum();
            index && audio == wav
        },
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
    node.assert_alive();

    // On disk after the node stopped: the WAV holds Bob's 1 kHz tone, not
    // the greeting's 425 Hz.
    assert!(node.terminate().success(), "{}", node.log());
    let store = p2psip::store::Store::open(&data).expect("open the store");
    let mut parts: Vec<_> = store
        .load(p2psip::store::codec::Clock::read())
        .expect("read the store")
        .into_iter()
        .filter(|i| i.kind == "voicemail-audio")
        .collect();
    parts.sort_by(|a, b| a.name.cmp(&b.name));
    let file: Vec<u8> = parts.into_iter().flat_map(|i| i.value).collect();
    let samples = p2psip::media::wav::read(&file).expect("a WAV file");
    assert_eq!(samples.len(), 8000);
    let tone = power_at(&samples, 1000.0);
    let greeting = power_at(&samples, 425.0);
    assert!(tone > 100.0 * greeting, "1 kHz {tone}, 425 Hz {greeting}");
}

/// The power of `samples` at `hz` (Goertzel), at 8 kHz.
fn power_at(samples: &[i16], hz: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * hz / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for x in samples {
        let s0 = f64::from(*x) + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - k * s1 * s2
}
