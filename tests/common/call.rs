//! A call driven by the test itself: the INVITE with an SDP offer, the
//! ACK and BYE of its dialog, the answer's RTP address, G.711 tones as
//! RTP packets and a Goertzel filter to tell tones apart by frequency.
//! For the tests where the node answers calls (voicemail, conferences).

use std::net::SocketAddr;

use p2psip::media::g711::Law;
use p2psip::media::rtp::Packet;

use super::phone::Phone;
use super::{DOMAIN, RawResponse, token};

/// An SDP offer for RTP at `rtp` with these formats and rtpmap lines.
pub fn offer(rtp: SocketAddr, formats: &str, maps: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {formats}\r\n{maps}",
        ip = rtp.ip(),
        port = rtp.port()
    )
}

/// PCMU and telephone-event at `rtp`.
pub fn pcmu_offer(rtp: SocketAddr) -> String {
    offer(
        rtp,
        "0 101",
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
    )
}

/// An INVITE from `user@DOMAIN` on `phone` to `to` with this SDP body.
pub fn invite(phone: &Phone, user: &str, to: &str, sdp: &str) -> String {
    let me = phone.addr();
    let branch = format!("z9hG4bK{}", token());
    format!(
        "INVITE sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{DOMAIN}>;tag={user}{branch}\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: {branch}@{user}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:{user}@{me}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The ACK or BYE of the dialog the 200 `ok` to `invite` set up: to the
/// 200's Contact, through its Record-Route (reversed, RFC 3261 §12.1.2).
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
    let mut routes: Vec<String> = ok
        .headers("Record-Route")
        .iter()
        .flat_map(|v| {
            v.split(',')
                .map(|r| r.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    routes.reverse();
    let route = if routes.is_empty() {
        String::new()
    } else {
        format!("Route: {}\r\n", routes.join(", "))
    };
    let branch = format!("z9hG4bK{}", token());
    format!(
        "{method} {target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch={branch}\r\n\
         {route}Max-Forwards: 70\r\n\
         From: {}\r\nTo: {}\r\nCall-ID: {}\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n",
        header("From"),
        ok.header("To").expect("To"),
        header("Call-ID"),
    )
}

/// Where the answer in `ok` wants RTP: its c= address and m=audio port.
pub fn answer_rtp(ok: &RawResponse) -> Option<SocketAddr> {
    let body = ok.text.split("\r\n\r\n").nth(1)?;
    let ip = body
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))?
        .trim()
        .parse()
        .ok()?;
    let port = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, port))
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

/// The power [`power_at`] gives for a pure tone of `amplitude` over `n` samples.
pub fn tone_power(amplitude: f64, n: usize) -> f64 {
    (amplitude * n as f64 / 2.0).powi(2)
}
