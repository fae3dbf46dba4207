//! Bindings: what a REGISTER leaves behind — an address-of-record mapped to
//! the contacts where its user can be reached, each with an expiry — and
//! the test that tells a contact behind NAT ([`behind_nat`]), and SIP
//! Outbound flows (RFC 5626, [`Flow`]).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ezk_sip_types::uri::SipUri;

use serde::{Deserialize, Serialize};

use crate::sip::target::{NextHop, next_hop, uri_transport};
use crate::sip::transaction::Peer;

/// A canonical address-of-record, `user@domain` in the form keys are made of:
/// user part as written, domain in lower case, no port, no parameters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Aor(pub String);

impl Aor {
    pub fn new(user: &str, domain: &str) -> Aor {
        Aor(format!("{}@{}", user, domain.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Aor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One contact of an address-of-record.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    /// The contact URI as the phone gave it (without header parameters).
    pub contact: String,
    /// q-value in thousandths (1000 = q=1.0); `None` when the phone gave none.
    pub q: Option<u16>,
    pub expires_at: Instant,
    pub call_id: String,
    pub cseq: u32,
    /// Path headers (RFC 3327), used as the Route set towards the contact.
    pub path: Vec<String>,
    /// Where the REGISTER came from: requests to a contact registered over a
    /// connection go back over that connection.
    pub source: Option<Peer>,
    /// The contact cannot be reached as written (a phone behind NAT without
    /// Outbound, [`behind_nat`]): requests keep it as Request-URI but are
    /// sent to `source`, as Kamailio's `fix_nated_register` does. An
    /// Outbound flow is reached over its flow the same way.
    pub behind_nat: bool,
    /// The Outbound flow (RFC 5626) this binding is, if any.
    pub flow: Option<Flow>,
}

/// An Outbound flow's identity: the phone's `+sip.instance` and the
/// `reg-id` of the registration. A REGISTER with the same pair replaces the
/// binding, whatever its contact URI (RFC 5626 §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub instance: String,
    pub reg_id: u32,
}

impl Binding {
    pub fn remaining(&self, now: Instant) -> Duration {
        self.expires_at.saturating_duration_since(now)
    }

    pub fn is_live(&self, now: Instant) -> bool {
        self.expires_at > now
    }

    /// The q-value as printed in a Contact parameter.
    pub fn q_text(&self) -> Option<String> {
        self.q.map(|q| {
            let text = format!("{}.{:03}", q / 1000, q % 1000);
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        })
    }
}

/// True when a phone registering `contact` from `source` is behind NAT and
/// must be reached at its source address (nathelper's `nat_uac_test` and
/// `fix_nated_register`): the contact is an IP address that is not where
/// the REGISTER came from, and either the phone's own Via was not either
/// (`via_nated`: a NAT rewrote the packet on its way) or the contact is a
/// private address (RFC 1918, RFC 6598 shared space, IPv6 unique-local)
/// while the REGISTER came from a routed one. A private contact registered
/// from a private source is a phone on the same private network, or a
/// third-party registration there (a PBX's LAN), and is taken as written.
/// Over TCP and TLS only the IP counts: a
/// stream's source port is always an ephemeral one, not the phone's
/// listening port. A contact with a host name, or one that names another
/// transport than the REGISTER came over, is taken as written.
pub fn behind_nat(contact: &str, source: Peer, via_nated: bool) -> bool {
    let Ok(uri) = contact
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .parse::<SipUri>()
    else {
        return false;
    };
    let NextHop::Peer(at) = next_hop(&uri) else {
        return false;
    };
    if uri_transport(&uri).is_some_and(|t| t != source.transport) {
        return false;
    }
    let differs = if source.transport.reliable() {
        at.addr.ip() != source.addr.ip()
    } else {
        at.addr != source.addr
    };
    differs && (via_nated || (is_private(at.addr.ip()) && !is_private(source.addr.ip())))
}

/// True when a Via's sent-by is not `source` (IP, and port over UDP): the
/// packet was rewritten on its way, by a NAT. A host name is not compared.
pub fn via_differs(sent_by: Option<SocketAddr>, source: Peer) -> bool {
    sent_by.is_some_and(|sent_by| {
        sent_by.ip() != source.addr.ip()
            || (!source.transport.reliable() && sent_by.port() != source.addr.port())
    })
}

/// Addresses that are not routed on the Internet: behind a NAT.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            ip.is_private() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(ip) => ip.segments()[0] & 0xfe00 == 0xfc00,
    }
}

/// Parses a q-value ("0.5", "1", "0.125") into thousandths.
pub fn parse_q(text: &str) -> Option<u16> {
    let value: f64 = text.trim().parse().ok()?;
    if !(0.0..=1.0).contains(&value) {
        return None;
    }
    Some((value * 1000.0).round() as u16)
}

/// Two contacts name the same binding: RFC 3261 §19.1.4 URI equality —
/// scheme, user and password exactly, host case-insensitively, the same
/// port, and the `transport`, `user`, `ttl`, `method` and `maddr`
/// parameters, which must match when either URI has them (§10.3 step 7 asks
/// for URI equality, not text). A contact that does not parse as a SIP URI
/// is compared as text.
pub fn same_contact(a: &str, b: &str) -> bool {
    let bare = |u: &str| {
        let u = u.trim();
        u.strip_prefix('<')
            .and_then(|u| u.strip_suffix('>'))
            .unwrap_or(u)
            .trim()
            .to_string()
    };
    let (a, b) = (bare(a), bare(b));
    if a == b {
        return true;
    }
    let (Ok(x), Ok(y)) = (a.parse::<SipUri>(), b.parse::<SipUri>()) else {
        return false;
    };
    let host = |u: &SipUri| crate::sip::target::host_text(&u.host_port.host).to_ascii_lowercase();
    let port = |u: &SipUri| u.host_port.port.unwrap_or(if u.sips { 5061 } else { 5060 });
    let explicit_port = |u: &SipUri| u.host_port.port.is_some();
    x.sips == y.sips
        && x.user_part == y.user_part
        && host(&x) == host(&y)
        && explicit_port(&x) == explicit_port(&y)
        && port(&x) == port(&y)
        && ["transport", "user", "ttl", "method", "maddr"]
            .iter()
            .all(|name| {
                let value =
                    |u: &SipUri| u.uri_params.get_val(*name).map(|v| v.to_ascii_lowercase());
                value(&x) == value(&y)
            })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::TransportKind;

    #[test]
    fn contacts_compare_as_uris() {
        assert!(same_contact(
            "sip:bob@HOST.test:5060",
            "<sip:bob@host.test:5060>"
        ));
        assert!(!same_contact("sip:Bob@host.test", "sip:bob@host.test"));
        assert!(!same_contact("sip:bob@host.test", "sip:bob@host.test:5060"));
        assert!(same_contact(
            "sip:bob@h.test;transport=TCP;x=1",
            "sip:bob@h.test;transport=tcp"
        ));
        assert!(!same_contact(
            "sip:bob@h.test;transport=tcp",
            "sip:bob@h.test"
        ));
        assert!(!same_contact("sips:bob@h.test", "sip:bob@h.test"));
    }

    fn peer(transport: TransportKind, addr: &str) -> Peer {
        Peer {
            transport,
            addr: addr.parse().expect("addr"),
        }
    }

    #[test]
    fn contacts_behind_nat_are_told_from_reachable_ones() {
        use TransportKind::{Tcp, Udp};
        let nat = peer(Udp, "203.0.113.5:40000");
        // A private contact that is not the source: behind NAT.
        assert!(behind_nat("sip:alice@192.168.1.20:5060", nat, false));
        assert!(behind_nat("<sip:alice@10.0.0.7>", nat, false));
        assert!(behind_nat("sip:alice@172.16.3.4:5062", nat, false));
        assert!(behind_nat("sip:alice@100.64.0.9:5060", nat, false));
        assert!(behind_nat("sip:alice@[fd00::1]:5060", nat, false));
        // A public contact that is not the source: only when the Via says
        // a NAT rewrote the packet (else: a third-party registration).
        assert!(!behind_nat("sip:alice@198.51.100.9:5060", nat, false));
        assert!(behind_nat("sip:alice@198.51.100.9:5060", nat, true));
        // The source itself, a host name, another transport: as written.
        assert!(!behind_nat("sip:alice@203.0.113.5:40000", nat, true));
        assert!(!behind_nat("sip:alice@phone.example.test", nat, true));
        assert!(!behind_nat(
            "sip:alice@198.51.100.9:5061;transport=tls",
            nat,
            true
        ));
        assert!(!behind_nat("not a uri", nat, true));
        // A private phone seen at its own address (no NAT between): as written.
        let lan = peer(Udp, "192.168.1.20:5060");
        // A private contact registered from another private address (a
        // third-party registration on the LAN, here from port 5070 for the
        // phone at 5090): as written, unless the Via says NAT.
        let third = peer(Udp, "10.77.0.12:5070");
        assert!(!behind_nat("sip:bob@10.77.0.12:5090", third, false));
        assert!(behind_nat("sip:bob@10.77.0.12:5090", third, true));
        assert!(!behind_nat("sip:alice@192.168.1.20:5060", lan, true));
        assert!(
            !behind_nat("sip:alice@192.168.1.20", lan, true),
            "5060 by default"
        );
        // Over TCP the source port is ephemeral: only the IP counts.
        let tcp = peer(Tcp, "192.0.2.8:51234");
        assert!(!behind_nat(
            "sip:alice@192.0.2.8:5060;transport=tcp",
            tcp,
            true
        ));
        assert!(behind_nat(
            "sip:alice@192.168.0.8:5060;transport=tcp",
            tcp,
            false
        ));
    }

    #[test]
    fn a_via_rewritten_on_its_way_says_nat() {
        use TransportKind::{Tcp, Udp};
        let addr = |s: &str| Some(s.parse::<SocketAddr>().expect("addr"));
        let udp = peer(Udp, "203.0.113.5:40000");
        assert!(via_differs(addr("192.168.1.20:5060"), udp));
        assert!(via_differs(addr("203.0.113.5:5060"), udp), "port rewritten");
        assert!(!via_differs(addr("203.0.113.5:40000"), udp));
        assert!(!via_differs(None, udp), "a host name is not compared");
        let tcp = peer(Tcp, "203.0.113.5:51234");
        assert!(!via_differs(addr("203.0.113.5:5060"), tcp));
        assert!(via_differs(addr("10.1.1.1:5060"), tcp));
    }

    #[test]
    fn q_values_round_trip() {
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("x"), None);
        let now = Instant::now();
        let b = Binding {
            contact: "sip:a@127.0.0.1".into(),
            q: Some(500),
            expires_at: now + Duration::from_secs(60),
            call_id: "c".into(),
            cseq: 1,
            path: vec![],
            source: None,
            behind_nat: false,
            flow: None,
        };
        assert_eq!(b.q_text().as_deref(), Some("0.5"));
        let back = super::super::record::decode(
            &super::super::record::encode(std::slice::from_ref(&b), now),
            now,
        );
        assert_eq!(back, Some(vec![b]));
    }
}
