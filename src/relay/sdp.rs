//! The SDP of a relayed call (RFC 4566, RFC 3264): where a body's first
//! audio stream wants its RTP and RTCP, whether the body does ICE, and the
//! body rewritten to the relay's address and ports. Lines are rewritten in
//! place, so everything the relay does not touch (codecs, crypto, o=, the
//! order of lines) reaches the other side as written.

use std::net::{IpAddr, SocketAddr};

/// Lines read at most; a longer body is not relayed.
pub const MAX_LINES: usize = crate::media::sdp::MAX_LINES;

/// Where one side wants the relayed stream's packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Remote {
    /// `None`: on hold (`c=0.0.0.0`) or no address.
    pub rtp: Option<SocketAddr>,
    pub rtcp: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    #[error("not UTF-8")]
    NotText,
    #[error("SDP longer than {MAX_LINES} lines")]
    TooLong,
    #[error("no audio stream with a port")]
    NoAudio,
}

/// True when the body carries ICE (candidates or credentials): such a call
/// finds its own way and is not anchored.
pub fn has_ice(body: &[u8]) -> bool {
    std::str::from_utf8(body).is_ok_and(|text| {
        text.lines()
            .take(MAX_LINES)
            .any(|l| l.starts_with("a=candidate:") || l.starts_with("a=ice-ufrag:"))
    })
}

/// The body with its first audio stream moved to `relay` (RTP there, RTCP
/// on the port above), its c= lines naming the relay's address, and every
/// other stream disabled (port 0: the relay carries audio only); and where
/// the sender of the body wants that stream's packets.
pub fn rewrite(body: &[u8], relay: SocketAddr) -> Result<(String, Remote), SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotText)?;
    let family = if relay.is_ipv4() { "IP4" } else { "IP6" };
    let mut out = String::with_capacity(text.len() + 32);
    let mut session_ip: Option<IpAddr> = None;
    let mut media_ip: Option<IpAddr> = None;
    let mut rtp_port: Option<u16> = None;
    let mut rtcp: Option<(u16, Option<IpAddr>)> = None;
    let mut mux = false;
    // Inside the relayed stream, inside another, or before any m= line.
    let mut section = Section::Session;
    for (n, line) in text.lines().enumerate() {
        if n >= MAX_LINES {
            return Err(SdpError::TooLong);
        }
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.splitn(3, ' ');
            let kind = parts.next().unwrap_or_default();
            let port = parts.next().unwrap_or_default();
            let rest = parts.next().unwrap_or_default();
            let number: Option<u16> = port.split('/').next().and_then(|p| p.parse().ok());
            if kind == "audio" && rtp_port.is_none() && number.is_some_and(|p| p != 0) {
                section = Section::Relayed;
                rtp_port = number;
                out.push_str(&format!("m=audio {} {rest}\r\n", relay.port()));
            } else {
                section = Section::Other;
                out.push_str(&format!("m={kind} 0 {rest}\r\n"));
            }
            continue;
        }
        if let Some(c) = line.strip_prefix("c=") {
            let ip = connection_ip(c);
            match section {
                Section::Session => session_ip = ip,
                Section::Relayed => media_ip = ip,
                Section::Other => {}
            }
            if ip.is_some_and(|ip| ip.is_unspecified()) {
                // Hold as RFC 2543 wrote it: kept, nobody to send to.
                out.push_str(line);
            } else {
                out.push_str(&format!("c=IN {family} {}", relay.ip()));
            }
            out.push_str("\r\n");
            continue;
        }
        if section == Section::Relayed {
            if let Some(value) = line.strip_prefix("a=rtcp:") {
                rtcp = rtcp_attribute(value);
                out.push_str(&format!("a=rtcp:{}\r\n", relay.port().wrapping_add(1)));
                continue;
            }
            if line == "a=rtcp-mux" {
                mux = true;
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    let port = rtp_port.ok_or(SdpError::NoAudio)?;
    let ip = media_ip.or(session_ip).filter(|ip| !ip.is_unspecified());
    let rtp = ip.map(|ip| SocketAddr::new(ip, port));
    let rtcp = match (mux, rtcp) {
        (true, _) => rtp,
        (false, Some((port, at))) => at.or(ip).map(|ip| SocketAddr::new(ip, port)),
        (false, None) => ip.map(|ip| SocketAddr::new(ip, port.saturating_add(1))),
    };
    Ok((out, Remote { rtp, rtcp }))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Session,
    Relayed,
    Other,
}

/// The address of a `c=` value (`IN IP4 10.0.0.1[/ttl]`).
fn connection_ip(value: &str) -> Option<IpAddr> {
    let address = value
        .strip_prefix("IN IP4 ")
        .or_else(|| value.strip_prefix("IN IP6 "))?;
    address.split('/').next()?.trim().parse().ok()
}

/// `a=rtcp:PORT [IN IP4 ADDR]` (RFC 3605).
fn rtcp_attribute(value: &str) -> Option<(u16, Option<IpAddr>)> {
    let (port, rest) = value.split_once(' ').unwrap_or((value, ""));
    let port = port.trim().parse().ok()?;
    Some((port, connection_ip(rest.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=alice 1 1 IN IP4 10.201.1.2\r\ns=-\r\nc=IN IP4 10.201.1.2\r\n\
        t=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
        m=video 6002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";

    fn relay() -> SocketAddr {
        "10.202.1.2:30000".parse().unwrap()
    }

    #[test]
    fn the_offer_names_the_relay_and_the_sender_is_learnt() {
        let (body, remote) = rewrite(OFFER.as_bytes(), relay()).expect("rewritten");
        assert!(body.contains("c=IN IP4 10.202.1.2\r\n"), "{body}");
        assert!(!body.contains("c=IN IP4 10.201.1.2"), "{body}");
        assert!(body.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{body}");
        // Video is not relayed: disabled, not left pointing nowhere.
        assert!(body.contains("m=video 0 RTP/AVP 96\r\n"), "{body}");
        // What the relay does not touch stays as written.
        assert!(body.contains("o=alice 1 1 IN IP4 10.201.1.2\r\n"));
        assert!(body.contains("a=rtpmap:0 PCMU/8000\r\n"));
        assert_eq!(remote.rtp, Some("10.201.1.2:6000".parse().unwrap()));
        assert_eq!(remote.rtcp, Some("10.201.1.2:6001".parse().unwrap()));
    }

    #[test]
    fn the_answer_the_same_way_with_rtcp_and_media_level_address() {
        let answer = "v=0\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n\
                      c=IN IP4 10.0.0.8\r\na=rtcp:7005 IN IP4 10.0.0.7\r\n";
        let (body, remote) = rewrite(answer.as_bytes(), relay()).expect("rewritten");
        assert!(body.contains("a=rtcp:30001\r\n"), "{body}");
        assert_eq!(body.matches("c=IN IP4 10.202.1.2\r\n").count(), 2, "{body}");
        assert_eq!(remote.rtp, Some("10.0.0.8:7000".parse().unwrap()));
        assert_eq!(remote.rtcp, Some("10.0.0.7:7005".parse().unwrap()));
        let mux = "v=0\r\nc=IN IP4 10.0.0.9\r\nm=audio 7000 RTP/AVP 0\r\na=rtcp-mux\r\n";
        let (_, remote) = rewrite(mux.as_bytes(), relay()).expect("rewritten");
        assert_eq!(remote.rtcp, remote.rtp);
    }

    #[test]
    fn hold_and_refusals() {
        let hold = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 7000 RTP/AVP 0\r\n";
        let (body, remote) = rewrite(hold.as_bytes(), relay()).expect("rewritten");
        assert!(body.contains("c=IN IP4 0.0.0.0\r\n"), "{body}");
        assert_eq!(remote, Remote::default());
        let no_audio = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=video 5000 RTP/AVP 96\r\n";
        assert_eq!(
            rewrite(no_audio.as_bytes(), relay()),
            Err(SdpError::NoAudio)
        );
        assert_eq!(rewrite(&[0xff], relay()), Err(SdpError::NotText));
        let long = "a=x\r\n".repeat(MAX_LINES + 1);
        assert_eq!(rewrite(long.as_bytes(), relay()), Err(SdpError::TooLong));
    }

    #[test]
    fn ice_is_seen() {
        assert!(!has_ice(OFFER.as_bytes()));
        let ice = format!("{OFFER}a=ice-ufrag:abcd\r\n");
        assert!(has_ice(ice.as_bytes()));
    }
}
