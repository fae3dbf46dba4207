//! Dialogs with phones behind NAT (Kamailio nathelper's `add_contact_alias`
//! and `handle_ruri_alias`): the Contact a NATed phone writes in a
//! dialog-forming request or its answer names its private address, which
//! in-dialog requests (the ACK, the other side's BYE) cannot reach. The
//! proxy adds `;alias=IP~PORT~T` to that Contact's URI — where the phone
//! was seen (its NAT's mapping, or its connection), `T` 1 for UDP, 2 for
//! TCP, 3 for TLS — and a request whose Request-URI carries an alias, with
//! no Route left after ours, is sent to that address with the alias taken
//! off, so the phone gets back the URI it wrote.
//!
//! Pure functions on headers and URIs; the proxy decides when.

use std::net::{IpAddr, SocketAddr};

use ezk_sip_types::Name;

use crate::sip::message::{HeaderAccess, RequestUri};
use crate::sip::transaction::{Peer, TransportKind};

/// The URI parameter.
pub const PARAM: &str = "alias";

/// The alias value of `peer`: `IP~PORT~T`.
pub fn value(peer: Peer) -> String {
    let t = match peer.transport {
        TransportKind::Udp => 1,
        TransportKind::Tcp => 2,
        TransportKind::Tls => 3,
    };
    format!("{}~{}~{t}", peer.addr.ip(), peer.addr.port())
}

/// Reads an alias value; `None` when it is not one (never trusted further).
pub fn parse(text: &str) -> Option<Peer> {
    if text.len() > 64 {
        return None;
    }
    let mut parts = text.rsplitn(3, '~');
    let transport = match parts.next()? {
        "1" => TransportKind::Udp,
        "2" => TransportKind::Tcp,
        "3" => TransportKind::Tls,
        _ => return None,
    };
    let port: u16 = parts.next()?.parse().ok().filter(|p| *p != 0)?;
    let ip: IpAddr = parts.next()?.parse().ok()?;
    Some(Peer {
        transport,
        addr: SocketAddr::new(ip, port),
    })
}

/// Takes the alias off a Request-URI and gives where the request goes.
pub fn take(uri: &mut RequestUri) -> Option<Peer> {
    let RequestUri::Sip(sip) = uri else {
        return None;
    };
    let peer = parse(sip.uri_params.get_val(PARAM)?.as_str())?;
    sip.uri_params.take(PARAM);
    Some(peer)
}

/// Adds `;alias=` for `peer` to the URI of the message's one Contact.
/// Nothing changes when there is no Contact or more than one, a `*`, a
/// Contact that already has an alias, or one that cannot be read.
pub fn add_to_contact(message: &mut impl AliasTarget, peer: Peer) {
    let values: Vec<String> = message
        .headers_of()
        .get_raw(&Name::CONTACT)
        .map(|v| v.to_string())
        .collect();
    let [contact] = &values[..] else {
        return;
    };
    let Some(rewritten) = with_alias(contact, &value(peer)) else {
        return;
    };
    let headers = message.headers_of_mut();
    headers.remove(&Name::CONTACT);
    headers.insert(Name::CONTACT, rewritten);
}

/// The Contact value `contact` with `;alias=VALUE` in its URI.
fn with_alias(contact: &str, value: &str) -> Option<String> {
    let contact = contact.trim();
    if contact == "*" || contact.contains(',') || contact.len() > 1024 {
        return None;
    }
    if let Some(open) = contact.find('<') {
        let close = open + contact[open..].find('>')?;
        let uri = &contact[open + 1..close];
        if has_alias(uri) {
            return None;
        }
        return Some(format!(
            "{}<{uri};{PARAM}={value}>{}",
            &contact[..open],
            &contact[close + 1..]
        ));
    }
    // A bare URI: what follows its first ';' are the header's parameters.
    let (uri, params) = match contact.find(';') {
        Some(at) => contact.split_at(at),
        None => (contact, ""),
    };
    if !uri.starts_with("sip:") && !uri.starts_with("sips:") {
        return None;
    }
    Some(format!("<{uri};{PARAM}={value}>{params}"))
}

fn has_alias(uri: &str) -> bool {
    let params = uri.split_once('?').map_or(uri, |(u, _)| u);
    params.split(';').skip(1).any(|p| {
        p.split('=')
            .next()
            .is_some_and(|n| n.trim().eq_ignore_ascii_case(PARAM))
    })
}

/// A request or a response, whose headers the alias goes into.
pub trait AliasTarget: HeaderAccess {
    fn headers_of(&self) -> &ezk_sip_types::Headers;
    fn headers_of_mut(&mut self) -> &mut ezk_sip_types::Headers;
}

impl AliasTarget for crate::sip::message::Request {
    fn headers_of(&self) -> &ezk_sip_types::Headers {
        &self.headers
    }
    fn headers_of_mut(&mut self) -> &mut ezk_sip_types::Headers {
        &mut self.headers
    }
}

impl AliasTarget for crate::sip::message::Response {
    fn headers_of(&self) -> &ezk_sip_types::Headers {
        &self.headers
    }
    fn headers_of_mut(&mut self) -> &mut ezk_sip_types::Headers {
        &mut self.headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(addr: &str) -> Peer {
        Peer {
            transport: TransportKind::Udp,
            addr: addr.parse().expect("address"),
        }
    }

    #[test]
    fn an_alias_is_written_into_the_contact_uri_and_read_back() {
        let peer = udp("203.0.113.7:40123");
        assert_eq!(
            with_alias("\"Bob\" <sip:bob@10.0.0.2:5060;transport=udp>;expires=60", &value(peer)),
            Some(
                "\"Bob\" <sip:bob@10.0.0.2:5060;transport=udp;alias=203.0.113.7~40123~1>;expires=60"
                    .into()
            )
        );
        assert_eq!(
            with_alias("sip:bob@10.0.0.2;q=0.5", "1.2.3.4~5~2"),
            Some("<sip:bob@10.0.0.2;alias=1.2.3.4~5~2>;q=0.5".into())
        );
        assert_eq!(parse("203.0.113.7~40123~1"), Some(peer));
        let v6 = Peer {
            transport: TransportKind::Tls,
            addr: "[2001:db8::1]:5061".parse().expect("address"),
        };
        assert_eq!(parse(&value(v6)), Some(v6));
    }

    #[test]
    fn an_existing_alias_a_star_or_garbage_is_left_alone() {
        assert_eq!(with_alias("<sip:a@b;alias=1.2.3.4~5~1>", "x"), None);
        assert_eq!(with_alias("*", "x"), None);
        assert_eq!(with_alias("<sip:a@b", "x"), None);
        assert_eq!(with_alias("<sip:a@b>, <sip:c@d>", "x"), None);
        for bad in [
            "",
            "1.2.3.4~5",
            "1.2.3.4~0~1",
            "1.2.3.4~5~9",
            "host~5~1",
            "1.2.3.4~x~1",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_alias_comes_off_the_request_uri() {
        let mut uri = RequestUri::Sip(
            "sip:bob@10.0.0.2:5060;alias=203.0.113.7~40123~1;transport=udp"
                .parse()
                .expect("uri"),
        );
        assert_eq!(take(&mut uri), Some(udp("203.0.113.7:40123")));
        let RequestUri::Sip(sip) = &uri else {
            panic!("not SIP")
        };
        assert!(sip.uri_params.get_val(PARAM).is_none());
        assert!(sip.uri_params.get_val("transport").is_some());
        assert_eq!(take(&mut uri), None);
    }
}
