//! Finding peers on the LAN with no configuration (`--discover`): the seed's
//! multicast REGISTER to sip.mcast.net (224.0.1.75). A node alone in its
//! ring announces itself to the group a few times; a node that hears an
//! announcement joins the announcer when it is alone itself, and otherwise
//! answers the announcer directly so that the announcer joins its ring.
//! Off by default.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ezk_sip_types::header::typed::Contact;
use ezk_sip_types::uri::SipUri;
use ezk_sip_types::{Method, Name};

use crate::ring::{NodeId, Peer};
use crate::sip::message::{HeaderAccess, Request, RequestUri};

/// sip.mcast.net (RFC 3261 §10.2.6).
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 1, 75);
/// Announcements while alone, at most.
pub const MAX_ANNOUNCEMENTS: u32 = 12;
/// Time between announcements.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);

/// The `P2P-Overlay` value of an announcement.
const DISCOVER: &str = "chord;op=discover";

/// A complete announcement of `me` (a REGISTER to the group); `nonce`
/// (random hex from the core) makes its branch, tag and Call-ID.
pub fn announcement(me: &Peer, to: SocketAddr, nonce: &str) -> Request {
    let uri = SipUri::new(to.into());
    let mut request = Request::new(Method::REGISTER, RequestUri::Sip(uri));
    let node = format!("<sip:{}@{}>", me.id, me.addr);
    request.headers.insert(
        Name::VIA,
        format!("SIP/2.0/UDP {};branch=z9hG4bK{nonce}", me.addr),
    );
    request.headers.insert(Name::MAX_FORWARDS, "1");
    request
        .headers
        .insert(Name::from(super::wire::OVERLAY), DISCOVER);
    request
        .headers
        .insert(Name::FROM, format!("{node};tag={nonce}"));
    request.headers.insert(Name::TO, node.as_str());
    request
        .headers
        .insert(Name::CALL_ID, format!("{nonce}@{}", me.addr));
    request.headers.insert(Name::CSEQ, "1 REGISTER");
    request.headers.insert(Name::CONTACT, node.as_str());
    request
}

/// The node a request announces, when it is an announcement.
pub fn announcer(request: &Request) -> Option<Peer> {
    let overlay = request.raw(&Name::from(super::wire::OVERLAY))?;
    if overlay.split(';').map(str::trim).nth(1) != Some("op=discover") {
        return None;
    }
    let contact = request.headers.get_named::<Vec<Contact>>().ok()?;
    let uri = &contact.first()?.uri.uri;
    let ezk_sip_types::uri::SipUriUserPart::User(user) = &uri.user_part else {
        return None;
    };
    let id: NodeId = user.parse().ok()?;
    let ip = uri.host_port.ip()?;
    let addr = SocketAddr::new(ip, uri.host_port.port?);
    (NodeId::of_addr(addr) == id).then_some(Peer { id, addr })
}

/// When to announce.
pub struct Announcer {
    next: Instant,
    sent: u32,
}

impl Announcer {
    pub fn new(now: Instant) -> Announcer {
        Announcer { next: now, sent: 0 }
    }

    /// The next announcement, if one is due and we are still alone.
    pub fn due(&mut self, alone: bool, now: Instant) -> bool {
        if !alone || self.sent >= MAX_ANNOUNCEMENTS || now < self.next {
            return false;
        }
        self.sent += 1;
        self.next = now + ANNOUNCE_EVERY;
        true
    }

    pub fn poll_timeout(&self, alone: bool) -> Option<Instant> {
        (alone && self.sent < MAX_ANNOUNCEMENTS).then_some(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;

    #[test]
    fn announcements_name_their_node_and_are_bounded() {
        let me = Peer::of_addr("127.0.0.1:5060".parse().expect("addr"));
        let request = announcement(&me, SocketAddr::from((GROUP, 5060)), "0123456789abcdef");
        let Ok(Message::Request(back)) = Message::parse(request.to_bytes()) else {
            panic!("announcement does not parse")
        };
        assert_eq!(announcer(&back), Some(me));
        assert!(crate::overlay::wire::is_overlay(&back));

        let now = Instant::now();
        let mut a = Announcer::new(now);
        assert!(a.due(true, now));
        assert!(!a.due(true, now), "not twice at once");
        assert!(!a.due(false, now + ANNOUNCE_EVERY), "not once joined");
        let sent = (1..100)
            .filter(|i| a.due(true, now + ANNOUNCE_EVERY * *i))
            .count();
        assert_eq!(sent as u32, MAX_ANNOUNCEMENTS - 1);
    }
}
