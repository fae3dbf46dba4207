//! The RFC 3263 resolver against our own server (static + gateway records) on
//! 127.0.0.1, whose query log shows exactly what the resolver asked.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use p2psip_dns::proto::rr::{RData, RecordType};
use p2psip_dns::{
    DnsError, DnsServer, LoggedQuery, ResolverConfig, SipDestination, SipResolver, Transport,
    ZoneConfig, Zones,
};

/// Zones for the resolver tests:
/// - overlay.test: gw1 127.0.0.1 (UDP 5080, TCP 5081), gw2 127.0.0.2 (TLS 5061)
/// - legacy.test: like shared/interop/dns/legacy.test.zone (NAPTR D2U → SRV 5070 → proxy 127.0.0.1)
/// - prio.test: no NAPTR; _sip._udp SRV prio 10 → a (127.0.0.11:5070), prio 20 → b (127.0.0.12:5071)
/// - weight.test: _sip._udp SRV prio 0, weights 90 heavy (127.0.0.21) / 10 light (127.0.0.22)
/// - secure.test: _sips._tcp → s (127.0.0.51:5061), _sip._udp → u (127.0.0.52:5060), no NAPTR
/// - plain.test: only an A record (127.0.0.41)
/// - e164.arpa: ENUM NAPTRs
fn resolver_zones() -> Zones {
    let z = Zones::new();
    for d in [
        "overlay.test",
        "legacy.test",
        "prio.test",
        "weight.test",
        "secure.test",
        "plain.test",
        "e164.arpa",
    ] {
        z.add_zone(ZoneConfig::new(d));
    }
    z.set_gateways(
        "overlay.test",
        vec![
            gateway("gw1", v4(127, 0, 0, 1), Some(5080), Some(5081), None),
            gateway("gw2", v4(127, 0, 0, 2), None, None, Some(5061)),
        ],
    );
    let add = |name: &str, rdata: RData| z.add_static(name, rdata).unwrap();
    add(
        "legacy.test",
        naptr(10, "S", "SIP+D2U", "", "_sip._udp.legacy.test."),
    );
    // SRV records and the A records of their targets, in this order.
    for (service, (priority, weight, port), target, ip) in [
        (
            "_sip._udp.legacy.test",
            (0, 0, 5070),
            "proxy.legacy.test",
            [127, 0, 0, 1],
        ),
        (
            "_sip._udp.prio.test",
            (20, 0, 5071),
            "b.prio.test",
            [127, 0, 0, 12],
        ),
        (
            "_sip._udp.prio.test",
            (10, 0, 5070),
            "a.prio.test",
            [127, 0, 0, 11],
        ),
        (
            "_sip._udp.weight.test",
            (0, 90, 5060),
            "heavy.weight.test",
            [127, 0, 0, 21],
        ),
        (
            "_sip._udp.weight.test",
            (0, 10, 5060),
            "light.weight.test",
            [127, 0, 0, 22],
        ),
        (
            "_sips._tcp.secure.test",
            (0, 0, 5061),
            "s.secure.test",
            [127, 0, 0, 51],
        ),
        (
            "_sip._udp.secure.test",
            (0, 0, 5060),
            "u.secure.test",
            [127, 0, 0, 52],
        ),
    ] {
        add_srv_a(&z, service, (priority, weight, port), target, ip);
    }
    add("plain.test", a([127, 0, 0, 41]));

    // ENUM: +12125551234, a tel: rule first (not SIP, skipped), then the SIP
    // one; +442079460000, a backreference; +15550001, only a non-SIP service.
    for (name, order, services, regexp) in [
        (
            "4.3.2.1.5.5.5.2.1.2.1",
            50,
            "E2U+tel",
            "!^.*$!tel:+12125551234!",
        ),
        (
            "4.3.2.1.5.5.5.2.1.2.1",
            100,
            "E2U+sip",
            "!^.*$!sip:bob@overlay.test!",
        ),
        (
            "0.0.0.0.6.4.9.7.0.2.4.4",
            100,
            "E2U+sip",
            r"!^\+44(.*)$!sip:\1@legacy.test!",
        ),
        (
            "1.0.0.0.5.5.5.1",
            100,
            "E2U+email:mailto",
            "!^.*$!mailto:x@y.test!",
        ),
    ] {
        add(
            &format!("{name}.e164.arpa"),
            naptr(order, "u", services, regexp, "."),
        );
    }
    z
}

async fn setup(transports: &[Transport]) -> (DnsServer, SipResolver) {
    let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), resolver_zones())
        .await
        .unwrap();
    let resolver = SipResolver::new(ResolverConfig {
        timeout: Duration::from_secs(2),
        dead_for: Duration::from_secs(30),
        ..resolver_config(server.local_addr(), transports)
    })
    .unwrap();
    (server, resolver)
}

const ALL: &[Transport] = &[Transport::Udp, Transport::Tcp, Transport::Tls];
const UDP_TCP: &[Transport] = &[Transport::Udp, Transport::Tcp];

fn t(ip: [u8; 4], port: u16, transport: Transport) -> (SocketAddr, Transport) {
    (SocketAddr::new(IpAddr::from(ip), port), transport)
}

fn asked(log: &[LoggedQuery]) -> Vec<String> {
    log.iter()
        .map(|q| format!("{} {}", q.rtype, q.name))
        .collect()
}

#[tokio::test]
async fn naptr_srv_a_chain_transport_from_naptr() {
    let (server, resolver) = setup(UDP_TCP).await;
    let targets = resolve(&resolver, "overlay.test").await;
    // SIPS+D2T (order 10) is skipped: no TLS here. SIP+D2T (20) before SIP+D2U (30).
    assert_eq!(
        short(&targets),
        vec![
            t([127, 0, 0, 1], 5081, Transport::Tcp),
            t([127, 0, 0, 1], 5080, Transport::Udp)
        ]
    );
    assert!(targets.iter().all(|t| t.host == "overlay.test"));
    let log = asked(&server.query_log());
    assert_eq!(log[0], "NAPTR overlay.test");
    assert_eq!(log[1], "SRV _sip._tcp.overlay.test");
    assert!(log.contains(&"A gw1.overlay.test".to_string()));
    let udp_srv = log
        .iter()
        .position(|q| q == "SRV _sip._udp.overlay.test")
        .unwrap();
    assert!(udp_srv > 1);
    assert!(!log.iter().any(|q| q.contains("_sips")), "asked {log:?}");

    // with TLS the SIPS+D2T service comes first
    let (_s2, all) = setup(ALL).await;
    let targets = resolve(&all, "overlay.test").await;
    assert_eq!(
        short(&targets),
        vec![
            t([127, 0, 0, 2], 5061, Transport::Tls),
            t([127, 0, 0, 1], 5081, Transport::Tcp),
            t([127, 0, 0, 1], 5080, Transport::Udp),
        ]
    );
    // UDP only: just the D2U chain
    let (_s3, udp) = setup(&[Transport::Udp]).await;
    let targets = resolve(&udp, "overlay.test").await;
    assert_eq!(
        short(&targets),
        vec![t([127, 0, 0, 1], 5080, Transport::Udp)]
    );
}

#[tokio::test]
async fn legacy_domain_like_kamailio_sees_it() {
    let (server, resolver) = setup(UDP_TCP).await;
    let targets = resolve(&resolver, "legacy.test").await;
    assert_eq!(
        short(&targets),
        vec![t([127, 0, 0, 1], 5070, Transport::Udp)]
    );
    let log = asked(&server.query_log());
    assert_eq!(
        &log[..3],
        &[
            "NAPTR legacy.test",
            "SRV _sip._udp.legacy.test",
            "A proxy.legacy.test"
        ]
    );
}

#[tokio::test]
async fn srv_priority_order_and_weights() {
    let (server, resolver) = setup(UDP_TCP).await;
    // no NAPTR: SRV for each transport we support, in our order
    let targets = resolve(&resolver, "prio.test").await;
    assert_eq!(
        short(&targets),
        vec![
            t([127, 0, 0, 11], 5070, Transport::Udp),
            t([127, 0, 0, 12], 5071, Transport::Udp)
        ]
    );
    let log = asked(&server.query_log());
    assert_eq!(&log[..2], &["NAPTR prio.test", "SRV _sip._udp.prio.test"]);
    assert!(log.contains(&"SRV _sip._tcp.prio.test".to_string()));

    let mut heavy_first = 0;
    for _ in 0..300 {
        let targets = resolve(&resolver, "weight.test").await;
        assert_eq!(targets.len(), 2);
        if targets[0].addr.ip() == v4(127, 0, 0, 21) {
            heavy_first += 1;
        }
    }
    // weight 90 vs 10: expect ~270 of 300
    assert!(
        (220..=295).contains(&heavy_first),
        "heavy first {heavy_first}/300"
    );
}

#[tokio::test]
async fn numeric_host_and_explicit_port_short_circuit() {
    let (server, resolver) = setup(ALL).await;
    let cases = [
        (
            SipDestination::new("127.0.0.5"),
            t([127, 0, 0, 5], 5060, Transport::Udp),
        ),
        (
            SipDestination {
                port: Some(5070),
                transport: Some(Transport::Tcp),
                ..SipDestination::new("127.0.0.6")
            },
            t([127, 0, 0, 6], 5070, Transport::Tcp),
        ),
        (
            SipDestination {
                sips: true,
                ..SipDestination::new("127.0.0.7")
            },
            t([127, 0, 0, 7], 5061, Transport::Tls),
        ),
    ];
    for (dest, expect) in cases {
        let targets = resolver.resolve(&dest).await.unwrap();
        assert_eq!(short(&targets), vec![expect]);
    }
    let v6 = resolver
        .resolve(&SipDestination {
            sips: true,
            ..SipDestination::new("[::1]")
        })
        .await
        .unwrap();
    assert_eq!(v6[0].addr, "[::1]:5061".parse().unwrap());
    assert_eq!(server.query_count(), 0, "numeric hosts must not query DNS");

    // explicit port: A/AAAA only, no NAPTR/SRV
    let dest = SipDestination {
        port: Some(5099),
        ..SipDestination::new("gw1.overlay.test")
    };
    let targets = resolver.resolve(&dest).await.unwrap();
    assert_eq!(
        short(&targets),
        vec![t([127, 0, 0, 1], 5099, Transport::Udp)]
    );
    let log = server.query_log();
    assert!(!log.is_empty());
    assert!(
        log.iter()
            .all(|q| q.name == "gw1.overlay.test"
                && matches!(q.rtype, RecordType::A | RecordType::AAAA)),
        "asked {:?}",
        asked(&log)
    );
}

#[tokio::test]
async fn explicit_transport_uses_its_srv_then_a() {
    let (server, resolver) = setup(ALL).await;
    let dest = SipDestination {
        transport: Some(Transport::Tcp),
        ..SipDestination::new("overlay.test")
    };
    let targets = resolver.resolve(&dest).await.unwrap();
    assert_eq!(
        short(&targets),
        vec![t([127, 0, 0, 1], 5081, Transport::Tcp)]
    );
    assert_eq!(asked(&server.query_log())[0], "SRV _sip._tcp.overlay.test");
    // no _sip._tcp SRV at plain.test: A with the default port
    let dest = SipDestination {
        transport: Some(Transport::Tcp),
        ..SipDestination::new("plain.test")
    };
    let targets = resolver.resolve(&dest).await.unwrap();
    assert_eq!(
        short(&targets),
        vec![t([127, 0, 0, 41], 5060, Transport::Tcp)]
    );
}

#[tokio::test]
async fn no_naptr_no_srv_falls_back_to_a_with_default_port() {
    let (_server, resolver) = setup(UDP_TCP).await;
    let targets = resolve(&resolver, "plain.test").await;
    assert_eq!(
        short(&targets),
        vec![t([127, 0, 0, 41], 5060, Transport::Udp)]
    );
}

#[tokio::test]
async fn mark_dead_moves_target_last_until_alive() {
    let (_server, resolver) = setup(UDP_TCP).await;
    let first = resolve(&resolver, "prio.test").await;
    assert_eq!(first[0].addr.ip(), v4(127, 0, 0, 11));
    resolver.mark_dead(&first[0]);
    assert!(resolver.is_dead(&first[0]));
    let again = resolve(&resolver, "prio.test").await;
    assert_eq!(
        short(&again),
        vec![
            t([127, 0, 0, 12], 5071, Transport::Udp),
            t([127, 0, 0, 11], 5070, Transport::Udp)
        ]
    );
    // clones share the memory
    let clone = resolver.clone();
    clone.mark_alive(&first[0]);
    let back = resolve(&resolver, "prio.test").await;
    assert_eq!(back[0].addr.ip(), v4(127, 0, 0, 11));

    // dead_for = 0: the mark expires at once
    let (server, _) = setup(UDP_TCP).await;
    let quick = SipResolver::new(ResolverConfig {
        dead_for: Duration::ZERO,
        ..resolver_config(server.local_addr(), UDP_TCP)
    })
    .unwrap();
    let a = resolve(&quick, "prio.test").await;
    quick.mark_dead(&a[0]);
    let b = resolve(&quick, "prio.test").await;
    assert_eq!(a, b);
}

#[tokio::test]
async fn sips_uses_only_tls() {
    let (server, resolver) = setup(ALL).await;
    let sips = |host: &str| SipDestination {
        sips: true,
        ..SipDestination::new(host)
    };
    // NAPTR: only SIPS+D2T counts
    let targets = resolver.resolve(&sips("overlay.test")).await.unwrap();
    assert_eq!(
        short(&targets),
        vec![t([127, 0, 0, 2], 5061, Transport::Tls)]
    );
    // no NAPTR: _sips._tcp, never _sip._udp
    let targets = resolver.resolve(&sips("secure.test")).await.unwrap();
    assert_eq!(
        short(&targets),
        vec![t([127, 0, 0, 51], 5061, Transport::Tls)]
    );
    let log = asked(&server.query_log());
    let i = log.iter().position(|q| q == "NAPTR secure.test").unwrap();
    assert_eq!(log[i + 1], "SRV _sips._tcp.secure.test");
    assert!(!log.contains(&"SRV _sip._udp.secure.test".to_string()));
    // plain sip at secure.test with all transports: TLS is our last preference
    let targets = resolve(&resolver, "secure.test").await;
    assert_eq!(
        short(&targets),
        vec![
            t([127, 0, 0, 52], 5060, Transport::Udp),
            t([127, 0, 0, 51], 5061, Transport::Tls)
        ]
    );

    // sips without TLS support: error, no guessing
    let (_s, no_tls) = setup(UDP_TCP).await;
    assert!(matches!(
        no_tls.resolve(&sips("overlay.test")).await,
        Err(DnsError::NoUsableTransport(_))
    ));
    assert!(matches!(
        no_tls.resolve(&sips("127.0.0.1")).await,
        Err(DnsError::NoUsableTransport(_))
    ));
}

#[tokio::test]
async fn unknown_and_refused_names_are_errors() {
    let (_server, resolver) = setup(UDP_TCP).await;
    match resolver
        .resolve(&SipDestination::new("nobody.overlay.test"))
        .await
    {
        Err(DnsError::NotFound(h)) => assert_eq!(h, "nobody.overlay.test"),
        other => panic!("{other:?}"),
    }
    // outside every served zone the server says REFUSED: a lookup failure
    match resolver.resolve(&SipDestination::new("example.org")).await {
        Err(DnsError::Lookup { name, .. }) => assert_eq!(name, "example.org"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn enum_lookup_applies_regexp() {
    let (server, resolver) = setup(UDP_TCP).await;
    assert_eq!(
        resolver
            .enum_lookup("+12125551234", "e164.arpa")
            .await
            .unwrap()
            .as_deref(),
        Some("sip:bob@overlay.test")
    );
    assert_eq!(
        resolver
            .enum_lookup("+44 20 7946 0000", "")
            .await
            .unwrap()
            .as_deref(),
        Some("sip:2079460000@legacy.test")
    );
    assert_eq!(
        resolver
            .enum_lookup("+15550001", "e164.arpa")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        resolver.enum_lookup("+4930123", "e164.arpa").await.unwrap(),
        None
    );
    assert!(matches!(
        resolver.enum_lookup("2125551234", "e164.arpa").await,
        Err(DnsError::InvalidE164(_))
    ));
    let log = asked(&server.query_log());
    assert_eq!(log[0], "NAPTR 4.3.2.1.5.5.5.2.1.2.1.e164.arpa");
}

#[tokio::test]
async fn silent_nameserver_fails_fast_with_lookup_error() {
    // a UDP socket that never answers, and no TCP listener on its port
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let resolver = SipResolver::new(ResolverConfig {
        timeout: Duration::from_millis(200),
        ..resolver_config(silent.local_addr().unwrap(), UDP_TCP)
    })
    .unwrap();
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        resolver.resolve(&SipDestination::new("overlay.test")),
    )
    .await
    .expect("resolve must give up on its own");
    // gave up after the NAPTR query (2 attempts x 200 ms), did not go on to
    // SRV and A/AAAA queries that would time out too
    match r {
        Err(DnsError::Lookup { name, reason }) => {
            assert_eq!(name, "overlay.test");
            assert!(reason.starts_with("NAPTR overlay.test"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
