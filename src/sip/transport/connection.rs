//! One stream connection (TCP now, TLS later): reads bytes, cuts them into
//! messages by Content-Length, answers CRLF keep-alive pings, and writes
//! what the node sends to this peer.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::debug;

use super::Inbound;
use crate::sip::framing::{Frame, FrameError, check};
use crate::sip::message::bad_request_reply;
use crate::sip::transaction::Peer;

/// A connection with no traffic for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// After the peer stops sending, how long answers may still be written.
const LINGER: Duration = Duration::from_secs(2);

/// Runs a connection until either side closes it.
pub async fn run<S>(
    stream: S,
    peer: Peer,
    mut outgoing: mpsc::UnboundedReceiver<Bytes>,
    inbound: mpsc::Sender<Inbound>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut reading = true;
    let mut idle = IDLE_TIMEOUT;
    loop {
        tokio::select! {
            read = reader.read_buf(&mut buf), if reading => {
                match read {
                    Ok(0) | Err(_) => {
                        // The peer is done sending: answer what is left if it can be answered.
                        if !buf.is_empty()
                            && let Some(reply) = bad_request_reply(&buf, "incomplete message: Content-Length beyond the body") {
                                let _ = writer.write_all(&reply).await;
                            }
                        // Keep writing for a while: answers may still be on their way.
                        reading = false;
                        idle = LINGER;
                    }
                    Ok(_) => {
                        if let Err(error) = drain_frames(&mut buf, peer, &inbound, &mut writer).await {
                            debug!(%error, peer = %peer.addr, "closing connection");
                            if let Some(reply) = bad_request_reply(&buf, &error.to_string()) {
                                let _ = writer.write_all(&reply).await;
                            }
                            let _ = writer.shutdown().await;
                            return;
                        }
                    }
                }
            }
            bytes = outgoing.recv() => {
                let Some(bytes) = bytes else { return };
                if writer.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(idle) => {
                debug!(peer = %peer.addr, "closing idle connection");
                let _ = writer.shutdown().await;
                return;
            }
        }
    }
}

/// Hands every whole message at the front of `buf` to the node.
async fn drain_frames<W: AsyncWrite + Unpin>(
    buf: &mut BytesMut,
    peer: Peer,
    inbound: &mpsc::Sender<Inbound>,
    writer: &mut W,
) -> Result<(), FrameError> {
    loop {
        match check(buf)? {
            Frame::Incomplete => return Ok(()),
            Frame::KeepAlive { len, ping } => {
                let _ = buf.split_to(len);
                if ping {
                    let _ = writer.write_all(b"\r\n").await;
                }
            }
            Frame::Message { len } => {
                let bytes = buf.split_to(len).freeze();
                if inbound
                    .send(Inbound::Message { bytes, from: peer })
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
    }
}
