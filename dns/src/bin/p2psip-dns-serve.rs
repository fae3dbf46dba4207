//! Serve an overlay zone from the command line (for interop checks with
//! Kamailio/dig, e.g. inside a network namespace on 127.0.0.1:53):
//!
//!     p2psip-dns-serve 127.0.0.1:53 overlay.test gw@127.0.0.1,udp=5080,tcp=5080 [gw2@...,tls=5061 ...]
//!
//! Prints `listening on ADDR` once both sockets are bound; runs until killed.

use std::net::SocketAddr;

use p2psip_dns::{DnsServer, Gateway, ZoneConfig, Zones};

fn parse_gateway(spec: &str) -> Result<Gateway, String> {
    let mut parts = spec.split(',');
    let head = parts.next().ok_or("empty gateway spec")?;
    let (name, ip) = head
        .split_once('@')
        .ok_or("gateway spec is NAME@IP[,udp=P][,tcp=P][,tls=P]")?;
    let mut gw = Gateway {
        name: name.to_string(),
        addrs: vec![ip.parse().map_err(|e| format!("{ip}: {e}"))?],
        udp: None,
        tcp: None,
        tls: None,
    };
    for p in parts {
        let (k, v) = p.split_once('=').ok_or(format!("bad option {p}"))?;
        let port: u16 = v.parse().map_err(|e| format!("{p}: {e}"))?;
        match k {
            "udp" => gw.udp = Some(port),
            "tcp" => gw.tcp = Some(port),
            "tls" => gw.tls = Some(port),
            _ => return Err(format!("unknown option {k}")),
        }
    }
    Ok(gw)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!(
            "usage: p2psip-dns-serve LISTEN_ADDR DOMAIN [NAME@IP[,udp=P][,tcp=P][,tls=P] ...]"
        );
        std::process::exit(2);
    }
    let listen: SocketAddr = args[0].parse().expect("listen address");
    let zones = Zones::new();
    zones
        .try_add_zone(ZoneConfig::new(args[1].clone()))
        .expect("domain");
    let gws = args[2..]
        .iter()
        .map(|s| parse_gateway(s).unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect();
    zones.set_gateways(&args[1], gws);
    let server = DnsServer::bind(listen, zones.clone()).await.expect("bind");
    println!("listening on {}", server.local_addr());
    eprint!("{}", zones.dump(&args[1]).unwrap_or_default());
    // query log to stderr, like named's querylog
    let mut seen = 0u64;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                let total = server.query_count();
                if total > seen {
                    let log = server.query_log();
                    let new = ((total - seen) as usize).min(log.len());
                    for q in &log[log.len() - new..] {
                        eprintln!("query: {} IN {} {}{}", q.name, q.rtype, q.rcode, if q.tcp { " tcp" } else { "" });
                    }
                    seen = total;
                }
            }
        }
    }
    server.shutdown().await;
}
