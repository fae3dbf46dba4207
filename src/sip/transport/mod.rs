//! Transports: UDP and TCP on one address, with the slot where TLS plugs in.
//!
//! The node's driver owns a [`Transports`]: it reads datagrams from the UDP
//! socket itself, and gets framed messages from TCP connections through the
//! [`Inbound`] channel. Sending picks the socket by the peer's transport;
//! over TCP an open connection to the peer's address is reused (responses,
//! and requests to contacts registered over TCP), else one is opened.
//! TLS (a later issue) is a third listener whose connections run the same
//! [`connection`] loop over a `tokio-rustls` stream.

pub mod connection;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::sip::transaction::{Peer, TransportKind};

/// Most TCP connections open at once; further ones are refused.
pub const MAX_CONNECTIONS: usize = 4096;

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
    /// A connection was accepted; its writer is registered for reuse.
    Accepted {
        peer: Peer,
        writer: mpsc::UnboundedSender<Bytes>,
    },
    /// A connection closed (or could not be opened).
    Closed { peer: Peer },
}

/// The node's sockets.
pub struct Transports {
    udp: Arc<UdpSocket>,
    local: SocketAddr,
    connections: HashMap<SocketAddr, mpsc::UnboundedSender<Bytes>>,
    inbound: mpsc::Sender<Inbound>,
    open: Arc<AtomicUsize>,
}

impl Transports {
    /// Binds UDP and TCP on `addr` and starts accepting connections.
    pub async fn bind(addr: SocketAddr, inbound: mpsc::Sender<Inbound>) -> io::Result<Transports> {
        let udp = bind_udp(addr)?;
        let local = udp.local_addr()?;
        // TCP on the same port as UDP (port 0 means: the one UDP got).
        let listener = TcpListener::bind(local).await?;
        let open = Arc::new(AtomicUsize::new(0));
        tokio::spawn(accept_loop(listener, inbound.clone(), open.clone()));
        Ok(Transports {
            udp: Arc::new(udp),
            local,
            connections: HashMap::new(),
            inbound,
            open,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
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
                self.connections.insert(peer.addr, writer.clone());
            }
            Inbound::Closed { peer } => {
                // Only the closed connection's writer: a newer connection to
                // the same address may already be in its place.
                if self
                    .connections
                    .get(&peer.addr)
                    .is_some_and(|writer| writer.is_closed())
                {
                    self.connections.remove(&peer.addr);
                }
            }
            Inbound::Message { .. } => {}
        }
    }

    /// Sends bytes to a peer; false when they certainly cannot go (a UDP
    /// send refused for another reason than a full buffer, no room for
    /// another connection, no TLS). A connection that fails later is
    /// reported as [`Inbound::Closed`].
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
            TransportKind::Tcp => {
                if let Some(writer) = self.connections.get(&to.addr)
                    && writer.send(bytes.clone()).is_ok()
                {
                    return true;
                }
                if self.open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    warn!(to = %to.addr, "too many connections; not connecting");
                    return false;
                }
                let (writer, outgoing) = mpsc::unbounded_channel();
                let _ = writer.send(bytes);
                self.connections.insert(to.addr, writer);
                tokio::spawn(connect(
                    to,
                    outgoing,
                    self.inbound.clone(),
                    self.open.clone(),
                ));
                true
            }
            TransportKind::Tls => {
                warn!(to = %to.addr, "TLS is not configured on this node; dropping message");
                false
            }
        }
    }
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

async fn accept_loop(
    listener: TcpListener,
    inbound: mpsc::Sender<Inbound>,
    open: Arc<AtomicUsize>,
) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                warn!(%error, "accept failed");
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            debug!(%addr, "refusing connection: too many open");
            continue;
        }
        let peer = Peer {
            transport: TransportKind::Tcp,
            addr,
        };
        let (writer, outgoing) = mpsc::unbounded_channel();
        if inbound
            .send(Inbound::Accepted { peer, writer })
            .await
            .is_err()
        {
            return;
        }
        let _ = stream.set_nodelay(true);
        open.fetch_add(1, Ordering::Relaxed);
        let inbound = inbound.clone();
        let open = open.clone();
        tokio::spawn(async move {
            connection::run(stream, peer, outgoing, inbound.clone()).await;
            open.fetch_sub(1, Ordering::Relaxed);
            let _ = inbound.send(Inbound::Closed { peer }).await;
        });
    }
}

async fn connect(
    peer: Peer,
    outgoing: mpsc::UnboundedReceiver<Bytes>,
    inbound: mpsc::Sender<Inbound>,
    open: Arc<AtomicUsize>,
) {
    open.fetch_add(1, Ordering::Relaxed);
    match TcpStream::connect(peer.addr).await {
        Ok(stream) => {
            let _ = stream.set_nodelay(true);
            connection::run(stream, peer, outgoing, inbound.clone()).await;
        }
        Err(error) => {
            debug!(%error, to = %peer.addr, "TCP connect failed");
            // Close the channel first: later sends then open a new connection
            // instead of queueing into this dead one.
            drop(outgoing);
        }
    }
    open.fetch_sub(1, Ordering::Relaxed);
    let _ = inbound.send(Inbound::Closed { peer }).await;
}
