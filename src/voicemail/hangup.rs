//! The BYE the node sends to end a call it answered itself (RFC 3261
//! §15.1.1, as the UAS of the dialog): when a recording reaches its limit
//! (or the caller pressed `#`), and when a listening call has played
//! everything and lingered. Built from the INVITE: our From is its To with
//! the tag of our 200, our To its From, the Request-URI its Contact (the
//! remote target), the route set its Record-Route in order.

use std::net::SocketAddr;

use ezk_sip_types::header::typed::Via;
use ezk_sip_types::uri::SipUri;
use ezk_sip_types::{Method, Name};

use crate::presence::subscription::contact_uri;
use crate::sip::message::{HeaderAccess, Request, RequestUri, push_via};
use crate::sip::target::{NextHop, next_hop};
use crate::sip::transaction::Peer;

/// The BYE for the dialog `invite` set up with our 200, and where to send
/// it; `None` when the INVITE has no usable Contact or it needs DNS.
pub fn bye(invite: &Request, local: SocketAddr, branch: String) -> Option<(Request, Peer)> {
    let ours = invite.final_response(200).raw(&Name::TO)?.to_string();
    let theirs = invite.raw(&Name::FROM)?.to_string();
    let call_id = invite.raw(&Name::CALL_ID)?.to_string();
    let target: SipUri = contact_uri(invite.raw(&Name::CONTACT)?)?.parse().ok()?;
    let routes: Vec<String> = invite
        .headers
        .get_raw(&Name::RECORD_ROUTE)
        .flat_map(|v| v.split(','))
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .take(8)
        .collect();
    let first_hop: SipUri = match routes.first() {
        Some(route) => contact_uri(route)?.parse().ok()?,
        None => target.clone(),
    };
    let NextHop::Peer(peer) = next_hop(&first_hop) else {
        return None;
    };
    let mut request = Request::new(Method::BYE, RequestUri::Sip(target));
    let transport = crate::proxy::transport_name(peer.transport);
    push_via(&mut request.headers, &Via::new(transport, local, branch));
    let headers = &mut request.headers;
    headers.insert(Name::MAX_FORWARDS, "70");
    for route in routes {
        headers.insert(Name::ROUTE, route);
    }
    headers.insert(Name::FROM, ours);
    headers.insert(Name::TO, theirs);
    headers.insert(Name::CALL_ID, call_id);
    headers.insert(Name::CSEQ, "1 BYE");
    Some((request, peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;

    #[test]
    fn a_bye_for_the_callers_contact_with_our_tag() {
        let text = "INVITE sip:alice@example.test SIP/2.0\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bK1\r\n\
            From: <sip:bob@example.test>;tag=b1\r\nTo: <sip:alice@example.test>\r\n\
            Call-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:7001>\r\n\
            Content-Length: 0\r\n\r\n";
        let Ok(Message::Request(invite)) = Message::parse(bytes::Bytes::from(text)) else {
            panic!("an INVITE");
        };
        let local: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let (bye, peer) = bye(&invite, local, "z9hG4bKbye".into()).expect("a BYE");
        assert_eq!(peer.addr, "127.0.0.1:7001".parse().unwrap());
        let text = |r: &Request, name: &Name| r.raw(name).map(|v| v.to_string());
        assert_eq!(
            text(&bye, &Name::TO).as_deref(),
            Some("<sip:bob@example.test>;tag=b1")
        );
        let from = text(&bye, &Name::FROM).expect("From");
        assert!(from.starts_with("<sip:alice@example.test>;tag="), "{from}");
        let ok = invite.final_response(200);
        assert_eq!(ok.raw(&Name::TO).map(|v| v.to_string()), Some(from));
        assert_eq!(text(&bye, &Name::CALL_ID).as_deref(), Some("c1"));
    }
}
