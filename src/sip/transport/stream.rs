//! Accepting and opening stream connections, TCP or TLS over TCP: each
//! takes a place under the [`Limits`], does its TLS handshake within
//! [`HANDSHAKE_TIMEOUT`], then runs the [`connection`] loop.
//!
//! In certificate mode (`MemberTls`) the plain TCP listener also takes
//! mutually authenticated TLS from other members: a connection whose first
//! byte is a TLS handshake record (0x16, which no SIP message starts with)
//! is TLS, and the member its certificate names is told to the node
//! ([`Inbound::Member`]) before any of its messages.

use std::sync::Arc;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, warn};

use super::limits::{HANDSHAKE_TIMEOUT, Limits, Slot};
use super::{Inbound, connection, tls};
use crate::overlay::identity::MemberTls;
use crate::sip::transaction::{Peer, TransportKind};

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Accepts connections on `listener`: TLS when an acceptor is given.
pub(super) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    inbound: mpsc::Sender<Inbound>,
    limits: Arc<Limits>,
    member: Option<MemberTls>,
) {
    let transport = if tls.is_some() {
        TransportKind::Tls
    } else {
        TransportKind::Tcp
    };
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                warn!(%error, %transport, "accept failed");
                // Out of file descriptors, say: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if inbound.is_closed() {
            return;
        }
        // Over the limit: the stream is dropped, which closes it at once.
        let Some(slot) = limits.admit_inbound(addr.ip()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let peer = Peer { transport, addr };
        let inbound = inbound.clone();
        let tls = tls.clone();
        let member = member.clone();
        tokio::spawn(async move {
            match (tls, member) {
                (None, Some(member)) => {
                    accept_member_or_plain(stream, peer, member, inbound, slot).await
                }
                (None, None) => serve(stream, peer, None, inbound, slot).await,
                (Some(acceptor), _) => {
                    match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve(stream, peer, None, inbound, slot).await,
                        Ok(Err(error)) => debug!(%error, peer = %addr, "TLS handshake failed"),
                        Err(_) => {
                            debug!(peer = %addr, "TLS handshake not done within {HANDSHAKE_TIMEOUT:?}")
                        }
                    }
                }
            }
        });
    }
}

/// On the TCP listener in certificate mode: a member's TLS, or plain TCP.
async fn accept_member_or_plain(
    stream: TcpStream,
    peer: Peer,
    member: MemberTls,
    inbound: mpsc::Sender<Inbound>,
    slot: Slot,
) {
    let mut first = [0u8; 1];
    match timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {}
        Ok(Ok(_)) => return serve(stream, peer, None, inbound, slot).await,
        _ => return,
    }
    let peer = Peer {
        transport: TransportKind::Tls,
        addr: peer.addr,
    };
    match timeout(HANDSHAKE_TIMEOUT, member.acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let node = member.member(stream.get_ref().1.peer_certificates());
            match node {
                Ok(node) => serve(stream, peer, Some(node), inbound, slot).await,
                Err(why) => warn!(peer = %peer.addr, %why, "overlay TLS connection refused"),
            }
        }
        Ok(Err(error)) => {
            debug!(%error, peer = %peer.addr, "overlay TLS handshake failed (no member certificate?)")
        }
        Err(_) => debug!(peer = %peer.addr, "TLS handshake not done within {HANDSHAKE_TIMEOUT:?}"),
    }
}

/// An accepted connection: registered for reuse, run, reported closed.
/// `member`: the overlay member its certificate names.
async fn serve<S>(
    stream: S,
    peer: Peer,
    member: Option<(std::net::SocketAddr, std::sync::Arc<Vec<u8>>)>,
    inbound: mpsc::Sender<Inbound>,
    slot: Slot,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Some((node, cert)) = member
        && inbound
            .send(Inbound::Member { peer, node, cert })
            .await
            .is_err()
    {
        return;
    }
    let (writer, outgoing) = mpsc::unbounded_channel();
    if inbound
        .send(Inbound::Accepted { peer, writer })
        .await
        .is_err()
    {
        return;
    }
    connection::run(stream, peer, outgoing, inbound.clone()).await;
    drop(slot);
    let _ = inbound.send(Inbound::Closed { peer }).await;
}

/// Opens a connection to `peer` (TLS with a connector; a member's TLS in
/// certificate mode) and runs it.
pub(super) async fn connect(
    peer: Peer,
    tls: Option<TlsConnector>,
    member: Option<MemberTls>,
    outgoing: mpsc::UnboundedReceiver<Bytes>,
    inbound: mpsc::Sender<Inbound>,
    slot: Slot,
) {
    open_and_run(peer, tls, member, outgoing, inbound.clone()).await;
    // `outgoing` is gone with `open_and_run`: later sends open a new
    // connection instead of queueing into this dead one.
    drop(slot);
    let _ = inbound.send(Inbound::Closed { peer }).await;
}

async fn open_and_run(
    peer: Peer,
    tls: Option<TlsConnector>,
    member: Option<MemberTls>,
    outgoing: mpsc::UnboundedReceiver<Bytes>,
    inbound: mpsc::Sender<Inbound>,
) {
    match timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(peer.addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            if let Some(member) = member
                && peer.transport == TransportKind::Tls
            {
                return run_member(stream, peer, member, outgoing, inbound).await;
            }
            match tls {
                None => connection::run(stream, peer, outgoing, inbound).await,
                Some(connector) => {
                    let name = tls::server_name(peer.addr.ip());
                    match timeout(HANDSHAKE_TIMEOUT, connector.connect(name, stream)).await {
                        Ok(Ok(stream)) => connection::run(stream, peer, outgoing, inbound).await,
                        Ok(Err(error)) => {
                            warn!(%error, to = %peer.addr, "TLS connection refused: the server is not verified")
                        }
                        Err(_) => {
                            warn!(to = %peer.addr, "TLS handshake not done within {HANDSHAKE_TIMEOUT:?}")
                        }
                    }
                }
            }
        }
        Ok(Err(error)) => {
            debug!(%error, to = %peer.addr, transport = %peer.transport, "connect failed")
        }
        Err(_) => debug!(to = %peer.addr, "connect not done within {HANDSHAKE_TIMEOUT:?}"),
    }
}

/// An outgoing connection to a member: TLS with our certificate, and the
/// server's certificate must name the address we dialled.
async fn run_member(
    stream: TcpStream,
    peer: Peer,
    member: MemberTls,
    outgoing: mpsc::UnboundedReceiver<Bytes>,
    inbound: mpsc::Sender<Inbound>,
) {
    let name = tls::server_name(peer.addr.ip());
    let stream = match timeout(HANDSHAKE_TIMEOUT, member.connector.connect(name, stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            return warn!(%error, to = %peer.addr, "overlay TLS connection refused: not a member");
        }
        Err(_) => {
            return warn!(to = %peer.addr, "TLS handshake not done within {HANDSHAKE_TIMEOUT:?}");
        }
    };
    match member.member(stream.get_ref().1.peer_certificates()) {
        Ok((node, cert)) if node == peer.addr => {
            if inbound
                .send(Inbound::Member { peer, node, cert })
                .await
                .is_ok()
            {
                connection::run(stream, peer, outgoing, inbound).await;
            }
        }
        Ok((node, _)) => {
            warn!(to = %peer.addr, certificate = %node, "overlay TLS connection refused: the certificate is for another node")
        }
        Err(why) => warn!(to = %peer.addr, %why, "overlay TLS connection refused"),
    }
}
