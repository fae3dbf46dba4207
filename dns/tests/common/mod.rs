//! Test helpers: raw DNS queries over UDP/TCP (hickory-proto messages, so the
//! tests see rcode, flags and every section exactly), and zone builders.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use p2psip_dns::proto::op::{Edns, Message, Query};
use p2psip_dns::proto::rr::rdata::{A, NAPTR, SRV};
use p2psip_dns::proto::rr::{Name, RData, Record, RecordType};
use p2psip_dns::{
    Gateway, ResolverConfig, SipDestination, SipResolver, Target, Transport, ZoneConfig, Zones,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn request(name: &str, rtype: RecordType, edns: bool) -> Message {
    let mut msg = Message::query();
    msg.metadata.id = rand_id();
    msg.metadata.recursion_desired = false;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        msg.set_edns(e);
    }
    msg
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(4242);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One query over UDP (no EDNS unless asked), the parsed response.
pub async fn query_udp_opts(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    edns: bool,
) -> Message {
    let req = request(name, rtype, edns);
    let sock = UdpSocket::bind((server.ip(), 0)).await.unwrap();
    sock.send_to(&req.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(IO_TIMEOUT, sock.recv_from(&mut buf))
        .await
        .expect("UDP DNS response timed out")
        .unwrap();
    let resp = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(resp.metadata.id, req.metadata.id);
    resp
}

pub async fn query_udp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    query_udp_opts(server, name, rtype, true).await
}

/// One query over a fresh TCP connection.
pub async fn query_tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let req = request(name, rtype, false).to_vec().unwrap();
    let mut s = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(server))
        .await
        .unwrap()
        .unwrap();
    let mut framed = (req.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&req);
    s.write_all(&framed).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(IO_TIMEOUT, s.read_exact(&mut len))
        .await
        .expect("TCP DNS response timed out")
        .unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

pub fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

pub fn gateway(
    name: &str,
    ip: IpAddr,
    udp: Option<u16>,
    tcp: Option<u16>,
    tls: Option<u16>,
) -> Gateway {
    Gateway {
        name: name.to_string(),
        addrs: vec![ip],
        udp,
        tcp,
        tls,
    }
}

/// `overlay.test` with two gateways: gw1 (UDP+TCP 5080) and gw2 (UDP 5090, TLS 5091).
pub fn overlay_zones() -> Zones {
    let zones = Zones::new();
    zones.add_zone(ZoneConfig::new("overlay.test"));
    zones.set_gateways(
        "overlay.test",
        vec![
            gateway("gw1", v4(127, 0, 0, 1), Some(5080), Some(5080), None),
            gateway("gw2", v4(127, 0, 0, 2), Some(5090), None, Some(5091)),
        ],
    );
    zones
}

/// (services, replacement) of every NAPTR answer, sorted by order.
pub fn naptrs(msg: &Message) -> Vec<(u16, String, String, String)> {
    let mut out: Vec<_> = msg
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::NAPTR(n) => Some((
                n.order,
                String::from_utf8_lossy(&n.flags).into_owned(),
                String::from_utf8_lossy(&n.services).into_owned(),
                n.replacement.to_ascii(),
            )),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// (priority, weight, port, target) of every SRV answer, sorted.
pub fn srvs(msg: &Message) -> Vec<(u16, u16, u16, String)> {
    let mut out: Vec<_> = msg
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.priority, s.weight, s.port, s.target.to_ascii())),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

pub fn soa_serial(records: &[Record]) -> Option<u32> {
    records.iter().find_map(|r| match &r.data {
        RData::SOA(s) => Some(s.serial),
        _ => None,
    })
}

// ---------------------------------------------------------------- records and resolvers

pub fn naptr(order: u16, flags: &str, services: &str, regexp: &str, replacement: &str) -> RData {
    RData::NAPTR(NAPTR::new(
        order,
        10,
        flags.as_bytes().into(),
        services.as_bytes().into(),
        regexp.as_bytes().into(),
        Name::from_ascii(replacement).unwrap(),
    ))
}

pub fn srv(priority: u16, weight: u16, port: u16, target: &str) -> RData {
    RData::SRV(SRV::new(
        priority,
        weight,
        port,
        Name::from_ascii(target).unwrap(),
    ))
}

pub fn a(ip: [u8; 4]) -> RData {
    RData::A(A(ip.into()))
}

/// A static SRV record `service` → `target` (`(priority, weight, port)`) and
/// the A record of `target`.
pub fn add_srv_a(
    zones: &Zones,
    service: &str,
    (priority, weight, port): (u16, u16, u16),
    target: &str,
    ip: [u8; 4],
) {
    zones
        .add_static(service, srv(priority, weight, port, &format!("{target}.")))
        .unwrap();
    zones.add_static(target, a(ip)).unwrap();
}

/// A resolver configuration asking `nameserver`, for `transports`.
pub fn resolver_config(nameserver: SocketAddr, transports: &[Transport]) -> ResolverConfig {
    ResolverConfig {
        nameserver: Some(nameserver),
        transports: transports.to_vec(),
        ..ResolverConfig::default()
    }
}

/// The targets of `host` (a plain `sip:` destination); panics on an error.
pub async fn resolve(resolver: &SipResolver, host: &str) -> Vec<Target> {
    resolver
        .resolve(&SipDestination::new(host))
        .await
        .unwrap_or_else(|e| panic!("resolve {host}: {e:?}"))
}

/// (address, transport) of each target, in order.
pub fn short(targets: &[Target]) -> Vec<(SocketAddr, Transport)> {
    targets.iter().map(|t| (t.addr, t.transport)).collect()
}
