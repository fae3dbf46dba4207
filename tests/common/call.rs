//! A call made by the test itself over UDP, with its media: the INVITE
//! with an SDP offer and the ACK/BYE of its dialog (SIP through
//! [`super::phone::Phone`]), G.711 µ-law RTP of a tone sent paced as a
//! phone would, RFC 4733 key presses, the RTP the node sends received
//! and decoded, and the power at a frequency (Goertzel) to tell tones
//! apart; a request answered after its digest challenge and an HTTP GET
//! of a recording. For the tests where the node answers calls
//! (voicemail, conferences).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use p2psip::media::g711::Law;
use p2psip::media::rtp::Packet;

use super::phone::{Challenge, Phone};
use super::{RawResponse, WAIT, token};

/// An SDP offer for RTP at `rtp` with these formats and rtpmap lines.
pub fn offer(rtp: SocketAddr, formats: &str, maps: &str) -> String {
    format!(
        "v=0\r\no=test 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {formats}\r\n{maps}",
        ip = rtp.ip(),
        port = rtp.port()
    )
}

/// PCMU and telephone-event 101 at `rtp`.
pub fn pcmu_offer(rtp: SocketAddr) -> String {
    offer(
        rtp,
        "0 101",
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
    )
}

/// An INVITE from `from` (an AOR) to `to` with this SDP body and `extra`
/// header lines (each ending in CRLF).
pub fn invite(phone: &Phone, from: &str, to: &str, sdp: &str, extra: &str) -> String {
    let me = phone.addr();
    let branch = format!("z9hG4bK{}", token());
    format!(
        "INVITE sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{from}>;tag=t{branch}\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: {branch}@test\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@{me}>\r\n\
         Content-Type: application/sdp\r\n\
         {extra}Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The same INVITE again with a new branch, CSeq 2 and `extra` headers
/// (the answer to a challenge).
pub fn again(invite: &str, extra: &str) -> String {
    let branch = format!("z9hG4bK{}", token());
    let old = invite
        .split("branch=")
        .nth(1)
        .and_then(|b| b.split("\r\n").next())
        .expect("a branch");
    invite
        .replacen(old, &branch, 1)
        .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
        .replace("Content-Type:", &format!("{extra}Content-Type:"))
}

/// The ACK or BYE of the dialog a 200 to `invite` set up.
pub fn in_dialog(phone: &Phone, method: &str, cseq: u32, invite: &str, ok: &RawResponse) -> String {
    let me = phone.addr();
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

/// The node's RTP address in the SDP answer of a 200.
pub fn answered_rtp(ok: &RawResponse) -> SocketAddr {
    let body = ok.text.split("\r\n\r\n").nth(1).unwrap_or("");
    let port: u16 = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next()?.parse().ok())
        .expect("an audio port in the answer");
    let ip = body
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .and_then(|a| a.trim().parse().ok())
        .expect("an address in the answer");
    SocketAddr::new(ip, port)
}

/// µ-law of a linear sample (G.711), as a phone would send it.
pub fn ulaw(sample: i16) -> u8 {
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

/// The linear sample of a µ-law byte (G.711).
pub fn from_ulaw(byte: u8) -> i16 {
    let b = !byte;
    let exponent = (b >> 4) & 0x07;
    let mantissa = i32::from(b & 0x0f);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if b & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

pub fn rtp_packet(pt: u8, seq: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x80, pt];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&timestamp.to_be_bytes());
    packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// `packets` 20 ms packets of a `hz` tone as PCMU to `to`, paced in real time.
pub fn send_tone(socket: &UdpSocket, to: SocketAddr, hz: f64, packets: u32) {
    let start = Instant::now();
    for n in 0..packets {
        let payload: Vec<u8> = (0..160)
            .map(|i| {
                let t = f64::from(n * 160 + i) / 8000.0;
                ulaw((8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16)
            })
            .collect();
        socket
            .send_to(&rtp_packet(0, n as u16, n * 160, &payload), to)
            .expect("send RTP");
        let due = start + Duration::from_millis(20 * u64::from(n + 1));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
}

/// A key press (RFC 4733, payload type 101) as a phone sends it: three
/// packets of one event, the last two with the end bit.
pub fn press(socket: &UdpSocket, to: SocketAddr, key: u8, timestamp: u32, seq: u16) {
    for (n, end) in [(0u16, 0u8), (1, 0x80), (2, 0x80)] {
        let payload = [key, end | 10, 0x03, 0x20];
        socket
            .send_to(&rtp_packet(101, seq + n, timestamp, &payload), to)
            .expect("send a key");
    }
}

/// The PCMU audio received on `socket` until `samples` samples came or
/// [`WAIT`] passed; RTP of other payload types is skipped.
pub fn receive_audio(socket: &UdpSocket, samples: usize) -> Vec<i16> {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 2048];
    let mut audio = Vec::new();
    while audio.len() < samples && Instant::now() < deadline {
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        match socket.recv_from(&mut buf) {
            Ok((n, _)) if n > 12 && buf[0] >> 6 == 2 && buf[1] & 0x7f == 0 => {
                audio.extend(buf[12..n].iter().map(|b| from_ulaw(*b)));
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("RTP receive failed: {e}"),
        }
    }
    audio
}

/// The power of `samples` at `hz` (Goertzel), at 8 kHz.
pub fn power_at(samples: &[i16], hz: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * hz / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for x in samples {
        let s0 = f64::from(*x) + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - k * s1 * s2
}

/// Waits (bounded) for a MESSAGE on `socket`, answers it 200 and gives it.
pub fn message_on(socket: &UdpSocket) -> Option<String> {
    request_on(socket, "MESSAGE")
}

/// Waits (bounded) for a request of `method` on `socket`, answers it 200
/// and gives it.
pub fn request_on(socket: &UdpSocket, method: &str) -> Option<String> {
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
        if !text.starts_with(&format!("{method} ")) {
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

/// Bob (from another domain) leaves `packets` 20 ms packets of a `hz` tone for `to` through `node`.
pub fn leave_tone(node: SocketAddr, to: &str, hz: f64, packets: u32, context: impl Fn() -> String) {
    let bob = Phone::new("127.0.0.1", node);
    let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind Bob's RTP");
    let call = invite(
        &bob,
        "bob@elsewhere.test",
        to,
        &pcmu_offer(rtp.local_addr().expect("addr")),
        "",
    );
    let answered = bob.ask(&call).expect("an answer to the INVITE");
    assert_eq!(answered.status, 200, "{}\n{}", answered.text, context());
    let node_rtp = answered_rtp(&answered);
    bob.send(&in_dialog(&bob, "ACK", 1, &call, &answered));
    assert!(
        !receive_audio(&rtp, 160).is_empty(),
        "no greeting; log:\n{}",
        context()
    );
    send_tone(&rtp, node_rtp, hz, packets);
    let bye = bob
        .ask(&in_dialog(&bob, "BYE", 2, &call, &answered))
        .expect("an answer to the BYE");
    assert_eq!(bye.status, 200, "{}", bye.text);
}

/// Packet `n` (20 ms, 160 samples) of a `hz` tone at `amplitude`, as PCMU
/// RTP of stream `ssrc`.
pub fn tone_packet(n: u32, hz: f64, amplitude: f64, ssrc: u32) -> Vec<u8> {
    let payload: Vec<u8> = (0..160)
        .map(|i| {
            let t = f64::from(n * 160 + i) / 8000.0;
            Law::Pcmu.encode((amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16)
        })
        .collect();
    Packet {
        marker: n == 0,
        payload_type: 0,
        sequence: n as u16,
        timestamp: n * 160,
        ssrc,
        payload: &payload,
    }
    .build()
}

/// The samples of a PCMU RTP packet (`None`: not one).
pub fn pcmu_samples(bytes: &[u8]) -> Option<Vec<i16>> {
    let packet = Packet::parse(bytes).ok()?;
    (packet.payload_type == 0).then(|| {
        packet
            .payload
            .iter()
            .map(|b| Law::Pcmu.decode(*b))
            .collect()
    })
}

/// The power [`power_at`] gives for a pure tone of `amplitude` over `n` samples.
pub fn tone_power(amplitude: f64, n: usize) -> f64 {
    (amplitude * n as f64 / 2.0).powi(2)
}

/// A GET over HTTP/1.1 with an `Authorization` header: the head (as a
/// [`RawResponse`], for its status and headers) and the body.
pub fn http(addr: SocketAddr, path: &str, authorization: Option<&str>) -> (RawResponse, Vec<u8>) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head");
    let head = String::from_utf8_lossy(&bytes[..split + 4]).into_owned();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (
        RawResponse { status, text: head },
        bytes[split + 4..].to_vec(),
    )
}

/// The body of a chunked HTTP/1.1 answer, or the body as it is.
pub fn unchunked(head: &RawResponse, body: Vec<u8>) -> Vec<u8> {
    if !head
        .header("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        return body;
    }
    let mut out = Vec::new();
    let mut rest = &body[..];
    while let Some(line) = rest.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&rest[..line]).trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < line + 2 + size {
            break;
        }
        out.extend_from_slice(&rest[line + 2..line + 2 + size]);
        rest = &rest[line + 4 + size..];
    }
    out
}

/// A request answered after its digest challenge (401 or 407): `build`
/// makes it with the credentials header given.
pub fn with_digest(
    phone: &Phone,
    build: impl Fn(&str) -> String,
    method: &str,
    uri: &str,
    password: &str,
) -> Option<RawResponse> {
    let first = phone.ask(&build(""))?;
    if first.status != 401 && first.status != 407 {
        return Some(first);
    }
    let challenge = Challenge::all_of(&first).into_iter().next()?;
    let name = if first.status == 401 {
        "Authorization"
    } else {
        "Proxy-Authorization"
    };
    let answer = challenge.answer("alice", password, method, uri, 1);
    phone.ask(&build(&format!("{name}: {answer}\r\n")))
}

/// A WAV file of a `hz` tone, 8 kHz 16-bit mono, 40 s: baresip's audio
/// source (its `ausine` makes 48 kHz only, and G.711 wants 8 kHz), as
/// `DIR/tone.wav`.
pub fn tone_wav(dir: &std::path::Path, hz: f64) -> std::path::PathBuf {
    let rate = f64::from(p2psip::media::SAMPLE_RATE);
    let samples: Vec<i16> = (0..p2psip::media::SAMPLE_RATE * 40)
        .map(|n| (8000.0 * (2.0 * std::f64::consts::PI * hz * f64::from(n) / rate).sin()) as i16)
        .collect();
    let path = dir.join("tone.wav");
    std::fs::write(&path, p2psip::media::wav::write(&samples)).expect("tone.wav");
    path
}
