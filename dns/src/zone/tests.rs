//! Tests of the zone model: records derived from the gateway set, the SOA
//! serial, static records and the answers (NODATA, NXDOMAIN, REFUSED).

use super::*;
use std::net::Ipv4Addr;

fn gw(name: &str, ip: [u8; 4], udp: Option<u16>, tcp: Option<u16>, tls: Option<u16>) -> Gateway {
    Gateway {
        name: name.into(),
        addrs: vec![IpAddr::V4(Ipv4Addr::from(ip))],
        udp,
        tcp,
        tls,
    }
}

fn zones() -> Zones {
    let z = Zones::new();
    z.add_zone(ZoneConfig::new("overlay.test"));
    z
}

#[test]
fn naptr_only_for_transports_with_gateways() {
    let z = zones();
    z.set_gateways(
        "overlay.test",
        vec![gw("gw1", [127, 0, 0, 1], Some(5080), None, None)],
    );
    let naptrs = z.lookup("overlay.test", RecordType::NAPTR);
    assert_eq!(naptrs.len(), 1);
    let RData::NAPTR(n) = &naptrs[0].data else {
        panic!()
    };
    assert_eq!(&*n.services, b"SIP+D2U");
    assert_eq!(&*n.flags, b"s");
    assert_eq!(n.order, NAPTR_ORDER_SIP_D2U);
    assert_eq!(n.replacement.to_ascii(), "_sip._udp.overlay.test.");
    assert!(
        z.lookup("_sip._tcp.overlay.test", RecordType::SRV)
            .is_empty()
    );

    z.set_gateways(
        "overlay.test",
        vec![
            gw("gw1", [127, 0, 0, 1], Some(5080), None, None),
            gw("gw2", [127, 0, 0, 2], Some(5060), Some(5060), Some(5061)),
        ],
    );
    let mut services: Vec<(u16, String)> = z
        .lookup("overlay.test", RecordType::NAPTR)
        .iter()
        .map(|r| match &r.data {
            RData::NAPTR(n) => (n.order, String::from_utf8_lossy(&n.services).into_owned()),
            _ => panic!(),
        })
        .collect();
    services.sort();
    assert_eq!(
        services,
        vec![
            (10, "SIPS+D2T".into()),
            (20, "SIP+D2T".into()),
            (30, "SIP+D2U".into())
        ]
    );
    assert_eq!(z.lookup("_sip._udp.overlay.test", RecordType::SRV).len(), 2);
    assert_eq!(
        z.lookup("_sips._tcp.overlay.test", RecordType::SRV).len(),
        1
    );
}

#[test]
fn serial_moves_only_on_change() {
    let z = zones();
    let s0 = z.serial("overlay.test").unwrap();
    let set = vec![gw("gw1", [127, 0, 0, 1], Some(5080), None, None)];
    z.set_gateways("overlay.test", set.clone());
    let s1 = z.serial("overlay.test").unwrap();
    assert!(s1 > s0);
    z.set_gateways("overlay.test", set.clone());
    assert_eq!(z.serial("overlay.test").unwrap(), s1);
    z.set_gateways("overlay.test", vec![]);
    assert!(z.serial("overlay.test").unwrap() > s1);
    assert_eq!(z.serial("OVERLAY.test."), z.serial("overlay.test"));
    assert_eq!(z.serial("other.test"), None);
}

#[test]
fn ns_address_is_first_gateway() {
    let z = zones();
    z.set_gateways(
        "overlay.test",
        vec![
            gw("gw2", [127, 0, 0, 2], Some(5080), None, None),
            gw("gw1", [127, 0, 0, 1], Some(5080), None, None),
        ],
    );
    let a = z.lookup("ns.overlay.test", RecordType::A);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].data, RData::A(A(Ipv4Addr::new(127, 0, 0, 2))));
    assert_eq!(z.lookup("overlay.test", RecordType::NS).len(), 1);
}

#[test]
fn nodata_nxdomain_refused() {
    let z = zones();
    z.set_gateways(
        "overlay.test",
        vec![gw("gw1", [127, 0, 0, 1], Some(5080), None, None)],
    );
    let q = |n: &str, t| z.answer(&parse_domain(n).unwrap(), t);
    assert!(matches!(
        q("gw1.overlay.test", RecordType::AAAA),
        Answer::NoData { .. }
    ));
    assert!(matches!(
        q("_udp.overlay.test", RecordType::SRV),
        Answer::NoData { .. }
    ));
    assert!(matches!(
        q("nope.overlay.test", RecordType::A),
        Answer::NxDomain { .. }
    ));
    assert!(matches!(q("example.com", RecordType::A), Answer::Refused));
    assert!(matches!(
        q("overlay.test", RecordType::SOA),
        Answer::Found { .. }
    ));
}

#[test]
fn statics_and_fqdn_gateways() {
    let z = zones();
    z.add_zone(ZoneConfig::new("e164.arpa"));
    z.set_gateways(
        "overlay.test",
        vec![gw(
            "edge.example.net.",
            [127, 0, 0, 9],
            Some(5060),
            None,
            None,
        )],
    );
    // SRV points outside; no A served for it
    assert_eq!(z.lookup("_sip._udp.overlay.test", RecordType::SRV).len(), 1);
    assert!(z.lookup("edge.example.net", RecordType::A).is_empty());
    let s0 = z.serial("e164.arpa").unwrap();
    z.add_static(
        "4.3.2.1.e164.arpa",
        RData::NAPTR(NAPTR::new(
            10,
            10,
            b"u".to_vec().into(),
            b"E2U+sip".to_vec().into(),
            b"!^.*$!sip:bob@overlay.test!".to_vec().into(),
            Name::root(),
        )),
    )
    .unwrap();
    assert!(z.serial("e164.arpa").unwrap() > s0);
    assert_eq!(z.lookup("4.3.2.1.e164.arpa", RecordType::NAPTR).len(), 1);
    assert!(
        z.add_static("x.nowhere.test", RData::A(A(Ipv4Addr::LOCALHOST)))
            .is_err()
    );
    z.remove_static("4.3.2.1.e164.arpa", None).unwrap();
    assert!(z.lookup("4.3.2.1.e164.arpa", RecordType::NAPTR).is_empty());
}
