//! Transports: UDP and TCP on one address, TLS on another (`--sips`).
//!
//! The node's driver owns a [`Transports`]: it reads datagrams from the UDP
//! socket itself, and gets framed messages from TCP and TLS connections
//! through the [`Inbound`] channel. Sending picks the socket by the peer's
//! transport; over TCP and TLS an open connection to the peer's address is
//! reused (responses, and requests to contacts registered over it), else
//! one is opened. Both stream transports run the same [`connection`] loop
//! (`stream.rs` accepts and connects), under the same [`limits`].

pub mod connection;
pub mod limits;
mod stream;
pub mod tls;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::overlay::identity::MemberTls;
use crate::sip::transaction::{Peer, TransportKind};
pub use limits::{Limits, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SOURCE};
pub use tls::{Tls, TlsFiles};

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Udp => "udp",
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
        })
    }
}

impl FromStr for TransportKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(TransportKind::Udp),
            "tcp" => Ok(TransportKind::Tcp),
            "tls" => Ok(TransportKind::Tls),
            other => Err(format!("unknown transport {other:?}")),
        }
    }
}

/// What connection tasks tell the driver.
#[derive(Debug)]
pub enum Inbound {
    /// One framed message from a connection.
    Message { bytes: Bytes, from: Peer },
    /// A connection was accepted (for TLS: its handshake is done); its
    /// writer is registered for reuse.
    Accepted {
        peer: Peer,
        writer: mpsc::UnboundedSender<Bytes>,
    },
    /// A connection closed (or could not be opened).
    Closed { peer: Peer },
    /// In certificate mode: the connection from `peer` carries a verified
    /// member certificate for the node at `node` (sent before its messages);
    /// `cert` is that certificate (DER), so that its signed items need not
    /// carry it.
    Member {
        peer: Peer,
        node: SocketAddr,
        cert: std::sync::Arc<Vec<u8>>,
    },
}

/// How to bind the transports beyond the UDP/TCP address.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Address for SIP over TLS; needs `tls` with a server certificate.
    pub sips: Option<SocketAddr>,
    /// TLS configurations (server for `sips`, client for outgoing TLS).
    pub tls: Option<Tls>,
    /// Most inbound connections from one IP address at once.
    pub max_connections_per_source: usize,
    /// Certificate mode: members' mutual TLS, on the TCP port.
    pub member: Option<MemberTls>,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            sips: None,
            tls: None,
            max_connections_per_source: MAX_CONNECTIONS_PER_SOURCE,
            member: None,
        }
    }
}

/// The node's sockets.
pub struct Transports {
    udp: Arc<UdpSocket>,
    local: SocketAddr,
    sips: Option<SocketAddr>,
    connections: HashMap<Peer, mpsc::UnboundedSender<Bytes>>,
    inbound: mpsc::Sender<Inbound>,
    limits: Arc<Limits>,
    connector: Option<tokio_rustls::TlsConnector>,
    member: Option<MemberTls>,
}

impl Transports {
    /// Binds UDP and TCP on `addr` (and TLS on `options.sips`) and starts
    /// accepting connections.
    pub async fn bind(
        addr: SocketAddr,
        inbound: mpsc::Sender<Inbound>,
        options: TransportOptions,
    ) -> io::Result<Transports> {
        let (udp, listener) = bind_udp_and_tcp(addr).await?;
        let local = udp.local_addr()?;
        let limits = Limits::new(options.max_connections_per_source, MAX_CONNECTIONS);
        tokio::spawn(stream::accept_loop(
            listener,
            None,
            inbound.clone(),
            limits.clone(),
            options.member.clone(),
        ));
        let mut sips = None;
        if let Some(addr) = options.sips {
            let acceptor = options
                .tls
                .as_ref()
                .and_then(|tls| tls.acceptor.clone())
                .ok_or_else(|| {
                    io::Error::other(format!("sips {addr}: no TLS certificate configured"))
                })?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("sips {addr}: {e}")))?;
            sips = Some(listener.local_addr()?);
            tokio::spawn(stream::accept_loop(
                listener,
                Some(acceptor),
                inbound.clone(),
                limits.clone(),
                None,
            ));
        }
        Ok(Transports {
            udp: Arc::new(udp),
            local,
            sips,
            connections: HashMap::new(),
            inbound,
            limits,
            connector: options.tls.and_then(|tls| tls.connector),
            member: options.member,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The TLS listener's address, with `--sips`.
    pub fn sips_addr(&self) -> Option<SocketAddr> {
        self.sips
    }

    pub fn udp(&self) -> &UdpSocket {
        &self.udp
    }

    /// Connections open now.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Handles a connection event from [`Inbound`] (not messages).
    pub fn on_inbound(&mut self, event: &Inbound) {
        match event {
            Inbound::Accepted { peer, writer } => {
                self.connections.insert(*peer, writer.clone());
            }
            Inbound::Closed { peer } => {
                // Only the closed connection's writer: a newer connection to
                // the same address may already be in its place.
                if self
                    .connections
                    .get(peer)
                    .is_some_and(|writer| writer.is_closed())
                {
                    self.connections.remove(peer);
                }
            }
            Inbound::Message { .. } | Inbound::Member { .. } => {}
        }
    }

    /// Sends bytes to a peer; false when they certainly cannot go (a UDP
    /// send refused for another reason than a full buffer, no room for
    /// another connection, no TLS client configuration). A connection that
    /// fails later is reported as [`Inbound::Closed`].
    pub fn send(&mut self, to: Peer, bytes: Bytes) -> bool {
        match to.transport {
            TransportKind::Udp => match self.udp.try_send_to(&bytes, to.addr) {
                Ok(_) => true,
                // A full send buffer is a datagram lost: retransmission covers it.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => true,
                Err(error) => {
                    debug!(%error, to = %to.addr, "UDP send failed");
                    false
                }
            },
            TransportKind::Tcp | TransportKind::Tls => {
                if let Some(writer) = self.connections.get(&to)
                    && writer.send(bytes.clone()).is_ok()
                {
                    return true;
                }
                let connector = match (to.transport, &self.connector) {
                    (TransportKind::Tls, _) if self.member.is_some() => None,
                    (TransportKind::Tls, None) => {
                        warn!(
                            to = %to.addr,
                            "no CA to verify TLS servers against (config key `tls_ca`); not connecting"
                        );
                        return false;
                    }
                    (TransportKind::Tls, Some(connector)) => Some(connector.clone()),
                    _ => None,
                };
                let Some(slot) = self.limits.admit_outbound() else {
                    warn!(to = %to.addr, "too many connections; not connecting");
                    return false;
                };
                let (writer, outgoing) = mpsc::unbounded_channel();
                let _ = writer.send(bytes);
                self.connections.insert(to, writer);
                tokio::spawn(stream::connect(
                    to,
                    connector,
                    self.member.clone(),
                    outgoing,
                    self.inbound.clone(),
                    slot,
                ));
                true
            }
        }
    }
}

/// UDP and TCP on the same port. With port 0 the port UDP got may already
/// be taken for TCP by another process: then another port is tried, a few
/// times. A port that was asked for is not changed.
async fn bind_udp_and_tcp(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    const TRIES: usize = 16;
    let mut last = None;
    for _ in 0..TRIES {
        let udp = bind_udp(addr)?;
        let local = udp.local_addr()?;
        match TcpListener::bind(local).await {
            Ok(listener) => return Ok((udp, listener)),
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

/// A UDP socket with room for bursts (a few MB of receive buffer).
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(8 << 20);
    let _ = socket.set_send_buffer_size(8 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}
