//! The tokio side of a node: owns the sockets and a clock, and pumps the
//! sans-I/O [`Core`] — bytes in, bytes out, deadlines, name resolution.
//! It makes no protocol decision of its own.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::core::{Core, CoreConfig};
use super::outbox::ResolveId;
use crate::proxy::target::Destination;
use crate::registrar::location::MemoryLocation;
use crate::sip::transaction::{Peer, TransportKind};
use crate::sip::transport::{Inbound, Transports};

/// Datagrams read in one go before the node sends what they caused.
const UDP_BATCH: usize = 64;

/// A node bound to its sockets, ready to run.
pub struct Node {
    core: Core,
    transports: Transports,
    inbound: mpsc::Receiver<Inbound>,
}

impl Node {
    /// Binds the sockets. `config.local` may have port 0; [`local_addr`](Self::local_addr) tells the real one.
    pub async fn bind(mut config: CoreConfig) -> io::Result<Node> {
        let (tx, inbound) = mpsc::channel(8192);
        let transports = Transports::bind(config.local, tx).await?;
        config.local = transports.local_addr();
        let core = Core::new(config, Box::new(MemoryLocation::new()), Instant::now());
        Ok(Node {
            core,
            transports,
            inbound,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.transports.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let (resolved_tx, mut resolved_rx) = mpsc::channel::<(ResolveId, Vec<Peer>)>(256);
        let mut buf = vec![0u8; 65536];
        loop {
            let deadline = tokio::time::Instant::from_std(self.core.poll_timeout());
            tokio::select! {
                _ = &mut shutdown => break,
                read = self.transports.udp().recv_from(&mut buf) => {
                    let now = Instant::now();
                    if let Ok((n, from)) = read {
                        self.core.receive(Bytes::copy_from_slice(&buf[..n]), udp(from), now);
                    }
                    for _ in 0..UDP_BATCH {
                        match self.transports.udp().try_recv_from(&mut buf) {
                            Ok((n, from)) => self.core.receive(Bytes::copy_from_slice(&buf[..n]), udp(from), now),
                            Err(_) => break,
                        }
                    }
                }
                Some(event) = self.inbound.recv() => {
                    match event {
                        Inbound::Message { bytes, from } => self.core.receive(bytes, from, Instant::now()),
                        other => self.transports.on_inbound(&other),
                    }
                }
                Some((id, peers)) = resolved_rx.recv() => {
                    self.core.resolved(id, peers, Instant::now());
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.core.handle_timeout(Instant::now());
                }
            }
            while let Some((peer, bytes)) = self.core.poll_transmit() {
                self.transports.send(peer, bytes);
            }
            while let Some((id, destination)) = self.core.poll_resolve() {
                let tx = resolved_tx.clone();
                tokio::spawn(async move {
                    let peers = resolve(&destination).await;
                    let _ = tx.send((id, peers)).await;
                });
            }
        }
        info!("node stopped");
    }
}

fn udp(addr: SocketAddr) -> Peer {
    Peer {
        transport: TransportKind::Udp,
        addr,
    }
}

/// Resolves a host name with the system resolver (A/AAAA).
async fn resolve(destination: &Destination) -> Vec<Peer> {
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
