//! The SDP offer/answer (RFC 4566, RFC 3264) of a call the node answers:
//! the offer's first audio stream read as far as needed (its address and
//! port, its formats and rtpmaps), G.711 chosen (PCMU before PCMA),
//! telephone-event kept if offered, and the answer built for the node's
//! RTP socket. No G.711 in the offer: [`SdpError::NoCodec`], which the
//! caller answers with 488.

use std::net::{IpAddr, SocketAddr};

use super::g711::Law;

/// Lines read at most; an offer beyond is refused.
pub const MAX_LINES: usize = 256;
/// Formats on one m= line read at most.
pub const MAX_FORMATS: usize = 32;

/// What the node takes from an offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// Where the caller wants the node's RTP.
    pub remote: SocketAddr,
    pub law: Law,
    /// The payload type of telephone-event/8000, when offered.
    pub events: Option<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    #[error("no SDP body, or not UTF-8")]
    Missing,
    #[error("SDP longer than {MAX_LINES} lines")]
    TooLong,
    #[error("no audio stream with a port and an address")]
    NoAudio,
    #[error("no PCMU or PCMA offered")]
    NoCodec,
}

/// Reads an offer.
pub fn parse_offer(body: &[u8]) -> Result<Offer, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::Missing)?;
    if text.trim().is_empty() {
        return Err(SdpError::Missing);
    }
    let mut session_ip: Option<IpAddr> = None;
    let mut media_ip: Option<IpAddr> = None;
    let mut audio: Option<(u16, Vec<u8>)> = None;
    let mut in_audio = false;
    let mut maps: Vec<(u8, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if n >= MAX_LINES {
            return Err(SdpError::TooLong);
        }
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            if audio.is_some() {
                // Only the first audio stream is used; the rest is ignored.
                in_audio = false;
                continue;
            }
            let mut parts = m.split(' ');
            in_audio = parts.next() == Some("audio");
            if !in_audio {
                continue;
            }
            let port = parts.next().and_then(|p| p.split('/').next()?.parse().ok());
            let proto = parts.next();
            let formats: Vec<u8> = parts
                .take(MAX_FORMATS)
                .filter_map(|f| f.parse().ok())
                .filter(|f| *f < 128)
                .collect();
            match (port, proto) {
                (Some(port), Some("RTP/AVP")) if port != 0 => audio = Some((port, formats)),
                _ => in_audio = false,
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            let ip = c
                .strip_prefix("IN IP4 ")
                .or_else(|| c.strip_prefix("IN IP6 "))
                .and_then(|a| a.split('/').next()?.parse().ok());
            if audio.is_none() && !in_audio {
                session_ip = ip;
            } else if in_audio {
                media_ip = ip;
            }
        } else if let Some(map) = line.strip_prefix("a=rtpmap:")
            && in_audio
            && let Some((pt, name)) = map.split_once(' ')
            && let Ok(pt) = pt.parse::<u8>()
            && maps.len() < MAX_FORMATS
        {
            maps.push((pt, name.to_ascii_lowercase()));
        }
    }
    let (port, formats) = audio.ok_or(SdpError::NoAudio)?;
    let ip = media_ip.or(session_ip).ok_or(SdpError::NoAudio)?;
    let named = |pt: u8| maps.iter().find(|(p, _)| *p == pt).map(|(_, n)| n.as_str());
    let is = |pt: u8, law: Law| match named(pt) {
        Some(name) => name == format!("{}/8000", law.name().to_ascii_lowercase()),
        None => pt == law.payload_type(),
    };
    let law = [Law::Pcmu, Law::Pcma]
        .into_iter()
        .find(|law| formats.iter().any(|pt| is(*pt, *law)))
        .ok_or(SdpError::NoCodec)?;
    let events = formats
        .iter()
        .copied()
        .find(|pt| named(*pt) == Some("telephone-event/8000"));
    Ok(Offer {
        remote: SocketAddr::new(ip, port),
        law,
        events,
    })
}

/// The answer: the chosen law (and telephone-event) at `local`.
/// `session` is the o= line's session id and version.
pub fn answer(offer: &Offer, local: SocketAddr, session: u64) -> String {
    let family = if local.is_ipv4() { "IP4" } else { "IP6" };
    let ip = local.ip();
    let pt = offer.law.payload_type();
    let mut formats = pt.to_string();
    if let Some(ev) = offer.events {
        formats.push_str(&format!(" {ev}"));
    }
    let mut sdp = format!(
        "v=0\r\no=p2psip {session} {session} IN {family} {ip}\r\ns=voicemail\r\n\
         c=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {formats}\r\n\
         a=rtpmap:{pt} {name}/8000\r\n",
        port = local.port(),
        name = offer.law.name(),
    );
    if let Some(ev) = offer.events {
        sdp.push_str(&format!(
            "a=rtpmap:{ev} telephone-event/8000\r\na=fmtp:{ev} 0-15\r\n"
        ));
    }
    sdp.push_str("a=ptime:20\r\na=sendrecv\r\n");
    sdp
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\n\
        t=0 0\r\nm=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

    #[test]
    fn picks_pcmu_and_telephone_event() {
        let offer = parse_offer(OFFER.as_bytes()).expect("an offer");
        assert_eq!(offer.remote, "10.0.0.1:4000".parse().unwrap());
        assert_eq!(offer.law, Law::Pcmu);
        assert_eq!(offer.events, Some(101));
        let sdp = answer(&offer, "127.0.0.1:20000".parse().unwrap(), 7);
        assert!(sdp.contains("m=audio 20000 RTP/AVP 0 101\r\n"), "{sdp}");
        assert!(sdp.contains("c=IN IP4 127.0.0.1\r\n"));
        assert!(sdp.contains("a=rtpmap:101 telephone-event/8000\r\n"));
    }

    #[test]
    fn pcma_alone_static_type_and_media_level_address() {
        let sdp = "v=0\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nm=audio 5000 RTP/AVP 8\r\n\
                   c=IN IP4 10.0.0.2\r\n";
        let offer = parse_offer(sdp.as_bytes()).expect("an offer");
        assert_eq!(offer.law, Law::Pcma);
        assert_eq!(offer.remote, "10.0.0.2:5000".parse().unwrap());
        assert_eq!(offer.events, None);
    }

    #[test]
    fn refusals() {
        let g722 = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n";
        assert_eq!(parse_offer(g722.as_bytes()), Err(SdpError::NoCodec));
        // A dynamic type named like a static one counts by its name.
        let tricky =
            "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 opus/48000/2\r\n";
        assert_eq!(parse_offer(tricky.as_bytes()), Err(SdpError::NoCodec));
        assert_eq!(parse_offer(b""), Err(SdpError::Missing));
        assert_eq!(parse_offer(&[0xff, 0xfe]), Err(SdpError::Missing));
        let rejected = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 0 RTP/AVP 0\r\n";
        assert_eq!(parse_offer(rejected.as_bytes()), Err(SdpError::NoAudio));
        let no_address = "v=0\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert_eq!(parse_offer(no_address.as_bytes()), Err(SdpError::NoAudio));
        let long = "a=x\r\n".repeat(MAX_LINES + 1);
        assert_eq!(parse_offer(long.as_bytes()), Err(SdpError::TooLong));
    }
}
