//! The authoritative server over real sockets on 127.0.0.1: hickory's resolver
//! and raw hickory-proto queries (UDP and TCP) against `DnsServer`.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use p2psip_dns::proto::op::ResponseCode;
use p2psip_dns::proto::rr::{RData, RecordType};
use p2psip_dns::{DnsServer, ZoneConfig, Zones};

async fn start(zones: Zones) -> DnsServer {
    DnsServer::bind("127.0.0.1:0".parse().unwrap(), zones)
        .await
        .expect("bind DNS server")
}

fn hickory_resolver(server: SocketAddr, tcp_only: bool) -> TokioResolver {
    let mut conns = Vec::new();
    if !tcp_only {
        let mut udp = ConnectionConfig::udp();
        udp.port = server.port();
        conns.push(udp);
    }
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = server.port();
    conns.push(tcp);
    let config =
        ResolverConfig::from_name_servers(vec![NameServerConfig::new(server.ip(), true, conns)]);
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.ndots = 0;
    hickory_resolver::Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .unwrap()
}

async fn check_overlay_with_hickory(resolver: &TokioResolver) {
    let naptr = resolver
        .lookup("overlay.test.", RecordType::NAPTR)
        .await
        .unwrap();
    let mut services: Vec<(u16, String, String)> = naptr
        .answers()
        .iter()
        .map(|r| match &r.data {
            RData::NAPTR(n) => (
                n.order,
                String::from_utf8_lossy(&n.services).into_owned(),
                n.replacement.to_ascii(),
            ),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    services.sort();
    assert_eq!(
        services,
        vec![
            (10, "SIPS+D2T".into(), "_sips._tcp.overlay.test.".into()),
            (20, "SIP+D2T".into(), "_sip._tcp.overlay.test.".into()),
            (30, "SIP+D2U".into(), "_sip._udp.overlay.test.".into()),
        ]
    );

    let srv = resolver
        .lookup("_sip._udp.overlay.test.", RecordType::SRV)
        .await
        .unwrap();
    let mut targets: Vec<(u16, u16, u16, String)> = srv
        .answers()
        .iter()
        .map(|r| match &r.data {
            RData::SRV(s) => (s.priority, s.weight, s.port, s.target.to_ascii()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        vec![
            (0, 10, 5080, "gw1.overlay.test.".into()),
            (0, 10, 5090, "gw2.overlay.test.".into()),
        ]
    );

    let ips: Vec<IpAddr> = resolver
        .lookup_ip("gw1.overlay.test.")
        .await
        .unwrap()
        .iter()
        .collect();
    assert_eq!(ips, vec![v4(127, 0, 0, 1)]);
}

#[tokio::test]
async fn hickory_resolver_sees_naptr_srv_a_over_udp_and_tcp() {
    let server = start(overlay_zones()).await;
    check_overlay_with_hickory(&hickory_resolver(server.local_addr(), false)).await;
    let before = server.query_log().iter().filter(|q| q.tcp).count();
    check_overlay_with_hickory(&hickory_resolver(server.local_addr(), true)).await;
    let after = server.query_log().iter().filter(|q| q.tcp).count();
    assert!(after >= before + 3, "TCP queries seen: {before} -> {after}");
    server.shutdown().await;
}

#[tokio::test]
async fn removing_a_gateway_updates_srv_naptr_and_serial() {
    let zones = overlay_zones();
    let server = start(zones.clone()).await;
    let addr = server.local_addr();

    let soa1 = query_udp(addr, "overlay.test.", RecordType::SOA).await;
    assert_eq!(soa1.metadata.response_code, ResponseCode::NoError);
    assert!(soa1.metadata.authoritative, "AA flag");
    let serial1 = soa_serial(&soa1.answers).unwrap();
    assert_eq!(Some(serial1), zones.serial("overlay.test"));

    // gw2 leaves: its SRV targets and the TLS NAPTR (only gw2 had TLS) go.
    zones.set_gateways(
        "overlay.test",
        vec![gateway(
            "gw1",
            v4(127, 0, 0, 1),
            Some(5080),
            Some(5080),
            None,
        )],
    );
    let srv = query_udp(addr, "_sip._udp.overlay.test.", RecordType::SRV).await;
    assert_eq!(srvs(&srv), vec![(0, 10, 5080, "gw1.overlay.test.".into())]);
    let naptr = query_udp(addr, "overlay.test.", RecordType::NAPTR).await;
    assert_eq!(
        naptrs(&naptr),
        vec![
            (
                20,
                "s".into(),
                "SIP+D2T".into(),
                "_sip._tcp.overlay.test.".into()
            ),
            (
                30,
                "s".into(),
                "SIP+D2U".into(),
                "_sip._udp.overlay.test.".into()
            ),
        ]
    );
    // _sips._tcp no longer exists at all: NXDOMAIN with the SOA
    let sips = query_udp(addr, "_sips._tcp.overlay.test.", RecordType::SRV).await;
    assert_eq!(sips.metadata.response_code, ResponseCode::NXDomain);
    assert!(sips.answers.is_empty());
    assert!(soa_serial(&sips.authorities).is_some());
    let gw2 = query_udp(addr, "gw2.overlay.test.", RecordType::A).await;
    assert_eq!(gw2.metadata.response_code, ResponseCode::NXDomain);

    let soa2 = query_udp(addr, "overlay.test.", RecordType::SOA).await;
    let serial2 = soa_serial(&soa2.answers).unwrap();
    assert!(serial2 > serial1, "serial {serial1} -> {serial2}");

    // the same set again: no serial change
    zones.set_gateways(
        "overlay.test",
        vec![gateway(
            "gw1",
            v4(127, 0, 0, 1),
            Some(5080),
            Some(5080),
            None,
        )],
    );
    let soa3 = query_tcp(addr, "overlay.test.", RecordType::SOA).await;
    assert_eq!(soa_serial(&soa3.answers), Some(serial2));
    server.shutdown().await;
}

#[tokio::test]
async fn refused_nxdomain_nodata_over_udp_and_tcp() {
    let server = start(overlay_zones()).await;
    let addr = server.local_addr();
    for tcp in [false, true] {
        let q = |name: &'static str, t: RecordType| async move {
            if tcp {
                query_tcp(addr, name, t).await
            } else {
                query_udp(addr, name, t).await
            }
        };
        let outside = q("example.com.", RecordType::A).await;
        assert_eq!(
            outside.metadata.response_code,
            ResponseCode::Refused,
            "tcp={tcp}"
        );
        assert!(outside.answers.is_empty() && outside.authorities.is_empty());
        assert!(!outside.metadata.authoritative);
        // a parent of the zone is outside too
        let parent = q("test.", RecordType::SOA).await;
        assert_eq!(parent.metadata.response_code, ResponseCode::Refused);

        let nx = q("nobody.overlay.test.", RecordType::A).await;
        assert_eq!(
            nx.metadata.response_code,
            ResponseCode::NXDomain,
            "tcp={tcp}"
        );
        assert!(nx.metadata.authoritative);
        assert!(soa_serial(&nx.authorities).is_some(), "SOA in authority");

        let nodata = q("gw1.overlay.test.", RecordType::AAAA).await;
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert!(
            soa_serial(&nodata.authorities).is_some(),
            "SOA in authority"
        );

        // empty non-terminal: NODATA, not NXDOMAIN
        let ent = q("_udp.overlay.test.", RecordType::SRV).await;
        assert_eq!(ent.metadata.response_code, ResponseCode::NoError);

        // case-insensitive
        let mixed = q("GW1.Overlay.TEST.", RecordType::A).await;
        assert_eq!(mixed.answers.len(), 1);

        // NS + glue, SRV targets in the additional section
        let ns = q("overlay.test.", RecordType::NS).await;
        assert_eq!(ns.answers.len(), 1);
        let srv = q("_sip._udp.overlay.test.", RecordType::SRV).await;
        let extra: Vec<String> = srv
            .additionals
            .iter()
            .filter(|r| r.record_type() == RecordType::A)
            .map(|r| r.name.to_ascii())
            .collect();
        assert_eq!(extra, vec!["gw1.overlay.test.", "gw2.overlay.test."]);
    }
    let log = server.query_log();
    assert!(
        log.iter()
            .any(|q| q.name == "example.com" && q.rcode == ResponseCode::Refused)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn large_answer_truncates_over_udp_and_completes_over_tcp() {
    let zones = Zones::new();
    zones.add_zone(ZoneConfig::new("big.test"));
    let gws = (1..=60)
        .map(|i| {
            gateway(
                &format!("gateway-number-{i}"),
                v4(127, 0, 1, i),
                Some(5060),
                None,
                None,
            )
        })
        .collect();
    zones.set_gateways("big.test", gws);
    let server = start(zones).await;
    let udp = query_udp_opts(
        server.local_addr(),
        "_sip._udp.big.test.",
        RecordType::SRV,
        false,
    )
    .await;
    assert!(udp.metadata.truncation, "TC over 512-byte UDP");
    let tcp = query_tcp(server.local_addr(), "_sip._udp.big.test.", RecordType::SRV).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(srvs(&tcp).len(), 60);
    // hickory's resolver falls back to TCP by itself
    let r = hickory_resolver(server.local_addr(), false);
    let lookup = r
        .lookup("_sip._udp.big.test.", RecordType::SRV)
        .await
        .unwrap();
    assert_eq!(lookup.answers().len(), 60);
    server.shutdown().await;
}

#[tokio::test]
async fn zone_added_after_bind_is_served_and_dropped_server_stops() {
    let zones = Zones::new();
    let server = start(zones.clone()).await;
    let addr = server.local_addr();
    let before = query_udp(addr, "later.test.", RecordType::SOA).await;
    assert_eq!(before.metadata.response_code, ResponseCode::Refused);
    zones.add_zone(ZoneConfig {
        domain: "later.test".into(),
        ttl: 5,
        ns_name: Some("dns1.example.net.".into()),
    });
    let after = query_udp(addr, "later.test.", RecordType::SOA).await;
    assert_eq!(after.metadata.response_code, ResponseCode::NoError);
    assert_eq!(after.answers[0].ttl, 5);
    let ns = query_udp(addr, "later.test.", RecordType::NS).await;
    match &ns.answers[0].data {
        RData::NS(n) => assert_eq!(n.0.to_ascii(), "dns1.example.net."),
        other => panic!("{other:?}"),
    }
    drop(server);
    // after drop the TCP listener is gone (connect refused or closed)
    let gone = tokio::net::TcpStream::connect(addr).await;
    if let Ok(mut s) = gone {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(IO_TIMEOUT, s.read(&mut b))
            .await
            .unwrap();
        assert!(
            matches!(n, Ok(0) | Err(_)),
            "connection still served after drop"
        );
    }
}

/// Inputs the `dns_query` fuzz target found (`dns/tests/fuzz/`), sent raw over
/// UDP: every answer must be a well-formed DNS message. The first one's
/// question names point into the header (RFC 1035 §4.1.4); the server used
/// to echo those bytes, which point elsewhere in the response.
#[tokio::test]
async fn fuzz_found_queries_get_well_formed_answers() {
    use p2psip_dns::proto::op::Message;
    let server = start(overlay_zones()).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    inputs.sort_by_key(|e| e.path());
    assert!(!inputs.is_empty());
    for entry in inputs {
        let bytes = std::fs::read(entry.path()).unwrap();
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(&bytes, server.local_addr()).await.unwrap();
        let mut buf = vec![0u8; 65535];
        let (n, _) = tokio::time::timeout(IO_TIMEOUT, sock.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        if let Err(e) = Message::from_vec(&buf[..n]) {
            panic!("{}: malformed answer: {e}", entry.path().display());
        }
    }
}
