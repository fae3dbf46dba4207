//! Where a request goes next: the next hop of a URI (RFC 3261 §16.6 step 7,
//! §18.1.1), before any DNS — a numeric host is a hop at once, a name must
//! be resolved first (RFC 3263, by the node's resolver).

use std::net::{IpAddr, SocketAddr};

use ezk_sip_types::host::Host;
use ezk_sip_types::uri::SipUri;

use crate::sip::transaction::{Peer, TransportKind};

/// The next hop of a request.
#[derive(Clone, Debug, PartialEq)]
pub enum NextHop {
    Peer(Peer),
    /// A host name: resolve it, then send.
    Resolve(Destination),
}

/// What a URI says about where it lives, for the resolver.
#[derive(Clone, Debug, PartialEq)]
pub struct Destination {
    pub host: String,
    pub port: Option<u16>,
    pub transport: Option<TransportKind>,
    pub sips: bool,
}

/// The transport a URI asks for, from `sips:` or its `transport` parameter.
pub fn uri_transport(uri: &SipUri) -> Option<TransportKind> {
    if uri.sips {
        return Some(TransportKind::Tls);
    }
    let param = uri.uri_params.get_val("transport")?;
    match param.to_ascii_lowercase().as_str() {
        "udp" => Some(TransportKind::Udp),
        "tcp" => Some(TransportKind::Tcp),
        "tls" => Some(TransportKind::Tls),
        _ => None,
    }
}

/// The host of a URI as text (IPv6 without brackets), lower case.
pub fn host_text(host: &Host) -> String {
    match host {
        Host::IP4(ip) => ip.to_string(),
        Host::IP6(ip) => ip.to_string(),
        Host::Name(name) => name.to_ascii_lowercase(),
    }
}

/// The next hop for a URI.
pub fn next_hop(uri: &SipUri) -> NextHop {
    let transport = uri_transport(uri);
    let ip: Option<IpAddr> = match &uri.host_port.host {
        Host::IP4(ip) => Some((*ip).into()),
        Host::IP6(ip) => Some((*ip).into()),
        Host::Name(name) => name.parse().ok(),
    };
    match ip {
        Some(ip) => {
            let transport = transport.unwrap_or(TransportKind::Udp);
            let default_port = if transport == TransportKind::Tls {
                5061
            } else {
                5060
            };
            NextHop::Peer(Peer {
                transport,
                addr: SocketAddr::new(ip, uri.host_port.port.unwrap_or(default_port)),
            })
        }
        None => NextHop::Resolve(Destination {
            host: host_text(&uri.host_port.host),
            port: uri.host_port.port,
            transport,
            sips: uri.sips,
        }),
    }
}

/// The user part of a SIP URI, if it has one.
pub fn user_of(uri: &SipUri) -> Option<String> {
    use ezk_sip_types::uri::SipUriUserPart;
    match &uri.user_part {
        SipUriUserPart::Empty => None,
        SipUriUserPart::User(u) => Some(u.to_string()),
        SipUriUserPart::UserPw(u) => Some(u.user.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> SipUri {
        s.parse().expect("uri")
    }

    #[test]
    fn numeric_hosts_are_hops() {
        assert_eq!(
            next_hop(&uri("sip:bob@127.0.0.1:5090;transport=tcp")),
            NextHop::Peer(Peer {
                transport: TransportKind::Tcp,
                addr: "127.0.0.1:5090".parse().expect("addr"),
            })
        );
        assert_eq!(
            next_hop(&uri("sips:bob@127.0.0.1")),
            NextHop::Peer(Peer {
                transport: TransportKind::Tls,
                addr: "127.0.0.1:5061".parse().expect("addr"),
            })
        );
    }

    #[test]
    fn names_need_resolving() {
        let NextHop::Resolve(dest) = next_hop(&uri("sip:carol@Legacy.Test")) else {
            panic!("expected a resolve")
        };
        assert_eq!(dest.host, "legacy.test");
        assert_eq!(dest.port, None);
    }
}
