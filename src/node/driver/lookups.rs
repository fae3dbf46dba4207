//! Name look-ups off the core's thread: RFC 3263 and ENUM through the
//! resolver (or the system's), their answers sent back on channels.

use super::*;

/// The resolver and the channels its answers come back on.
pub(super) struct Lookups {
    pub(super) resolver: Option<SipResolver>,
    pub(super) resolved: mpsc::Sender<(ResolveId, Vec<Peer>)>,
    pub(super) enums: mpsc::Sender<(ResolveId, Option<String>)>,
}

impl Lookups {
    pub(super) fn resolve(&self, id: ResolveId, destination: Destination) {
        let tx = self.resolved.clone();
        let resolver = self.resolver.clone();
        tokio::spawn(async move {
            let peers = resolve(resolver.as_ref(), &destination).await;
            let _ = tx.send((id, peers)).await;
        });
    }

    pub(super) fn enum_lookup(&self, id: ResolveId, e164: String, suffix: String) {
        let tx = self.enums.clone();
        let resolver = self.resolver.clone();
        tokio::spawn(async move {
            let uri = match resolver {
                Some(r) => r.enum_lookup(&e164, &suffix).await.unwrap_or_else(|e| {
                    debug!(error = %e, %e164, "ENUM look-up failed");
                    None
                }),
                None => None,
            };
            let _ = tx.send((id, uri)).await;
        });
    }

    pub(super) fn mark_dead(&self, peer: Peer) {
        if let Some(resolver) = &self.resolver {
            debug!(target = %peer.addr, "marking next hop dead");
            resolver.mark_dead(&Target {
                addr: peer.addr,
                transport: dns_transport(peer.transport),
                host: String::new(),
            });
        }
    }
}

/// Resolves a destination by RFC 3263 (NAPTR, SRV, A/AAAA), in failover
/// order; without a resolver, by the system's A/AAAA look-up.
pub(super) async fn resolve(
    resolver: Option<&SipResolver>,
    destination: &Destination,
) -> Vec<Peer> {
    if let Some(resolver) = resolver {
        let wanted = SipDestination {
            host: destination.host.clone(),
            port: destination.port,
            transport: destination.transport.map(dns_transport),
            sips: destination.sips,
        };
        return match resolver.resolve(&wanted).await {
            Ok(targets) => targets
                .into_iter()
                .map(|t| Peer {
                    transport: match t.transport {
                        Transport::Udp => TransportKind::Udp,
                        Transport::Tcp => TransportKind::Tcp,
                        Transport::Tls => TransportKind::Tls,
                    },
                    addr: t.addr,
                })
                .collect(),
            Err(error) => {
                debug!(%error, host = %destination.host, "RFC 3263 resolution failed");
                Vec::new()
            }
        };
    }
    system_resolve(destination).await
}

/// Resolves a host name with the system resolver (A/AAAA).
pub(super) async fn system_resolve(destination: &Destination) -> Vec<Peer> {
    let transport = destination.transport.unwrap_or(TransportKind::Udp);
    let port = destination
        .port
        .unwrap_or(if transport == TransportKind::Tls {
            5061
        } else {
            5060
        });
    match tokio::net::lookup_host((destination.host.as_str(), port)).await {
        Ok(addrs) => addrs.map(|addr| Peer { transport, addr }).collect(),
        Err(error) => {
            debug!(%error, host = %destination.host, "could not resolve");
            Vec::new()
        }
    }
}
