//! Accepting and opening stream connections, TCP or TLS over TCP: each
//! takes a place under the [`Limits`], does its TLS handshake within
//! [`HANDSHAKE_TIMEOUT`], then runs the [`connection`] loop.

use std::sync::Arc;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, warn};

use super::limits::{HANDSHAKE_TIMEOUT, Limits, Slot};
use super::{Inbound, connection, tls};
use crate::sip::transaction::{Peer, TransportKind};

/// Accepts connections on `listener`: TLS when an acceptor is given.
pub(super) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    inbound: mpsc::Sender<Inbound>,
    limits: Arc<Limits>,
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
        tokio::spawn(async move {
            match tls {
                None => serve(stream, peer, inbound, slot).await,
                Some(acceptor) => match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve(stream, peer, inbound, slot).await,
                    Ok(Err(error)) => debug!(%error, peer = %addr, "TLS handshake failed"),
                    Err(_) => {
                        debug!(peer = %addr, "TLS handshake not done within {HANDSHAKE_TIMEOUT:?}")
                    }
                },
            }
        });
    }
}

/// An accepted connection: registered for reuse, run, reported closed.
async fn serve<S>(stream: S, peer: Peer, inbound: mpsc::Sender<Inbound>, slot: Slot)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
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

/// Opens a connection to `peer` (TLS with a connector) and runs it.
pub(super) async fn connect(
    peer: Peer,
    tls: Option<TlsConnector>,
    outgoing: mpsc::UnboundedReceiver<Bytes>,
    inbound: mpsc::Sender<Inbound>,
    slot: Slot,
) {
    open_and_run(peer, tls, outgoing, inbound.clone()).await;
    // `outgoing` is gone with `open_and_run`: later sends open a new
    // connection instead of queueing into this dead one.
    drop(slot);
    let _ = inbound.send(Inbound::Closed { peer }).await;
}

async fn open_and_run(
    peer: Peer,
    tls: Option<TlsConnector>,
    outgoing: mpsc::UnboundedReceiver<Bytes>,
    inbound: mpsc::Sender<Inbound>,
) {
    match timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(peer.addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
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
