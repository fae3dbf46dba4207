//! One stream connection (TCP or TLS): reads bytes, cuts them into
//! messages by Content-Length (STUN by its own length), answers CRLF
//! keep-alive pings, and writes what the node sends to this peer. It
//! closes a connection that stays idle too long or takes too long over one
//! message ([`super::limits`]).

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant, timeout};
use tracing::debug;

use super::Inbound;
use super::limits::{IDLE_TIMEOUT, MESSAGE_TIMEOUT, WRITE_TIMEOUT};
use crate::sip::framing::{Frame, FrameError, check};
use crate::sip::message::bad_request_reply;
use crate::sip::transaction::Peer;

/// After the peer stops sending, how long answers may still be written.
const LINGER: Duration = Duration::from_secs(2);

/// Runs a connection until either side closes it or a limit closes it.
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
    // Moved on by every message or keep-alive, in either direction.
    let mut idle_at = Instant::now() + IDLE_TIMEOUT;
    // When the message at the front of `buf` started arriving.
    let mut started: Option<Instant> = None;
    loop {
        let deadline = match started {
            Some(at) if reading => idle_at.min(at + MESSAGE_TIMEOUT),
            _ => idle_at,
        };
        tokio::select! {
            read = reader.read_buf(&mut buf), if reading => {
                match read {
                    Ok(0) | Err(_) => {
                        // The peer is done sending: answer what is left if it can be answered.
                        if !buf.is_empty()
                            && let Some(reply) = bad_request_reply(&buf, "incomplete message: Content-Length beyond the body") {
                                let _ = timeout(WRITE_TIMEOUT, writer.write_all(&reply)).await;
                            }
                        // Keep writing for a while: answers may still be on their way.
                        reading = false;
                        idle_at = Instant::now() + LINGER;
                    }
                    Ok(_) => {
                        match drain_frames(&mut buf, peer, &inbound, &mut writer).await {
                            Err(error) => {
                                debug!(%error, peer = %peer.addr, "closing connection");
                                if let Some(reply) = bad_request_reply(&buf, &error.to_string()) {
                                    let _ = timeout(WRITE_TIMEOUT, writer.write_all(&reply)).await;
                                }
                                let _ = timeout(WRITE_TIMEOUT, writer.shutdown()).await;
                                return;
                            }
                            Ok(framed) => {
                                let now = Instant::now();
                                if framed {
                                    idle_at = now + IDLE_TIMEOUT;
                                    started = None;
                                }
                                if buf.is_empty() {
                                    started = None;
                                } else if started.is_none() {
                                    started = Some(now);
                                }
                            }
                        }
                    }
                }
            }
            bytes = outgoing.recv() => {
                let Some(bytes) = bytes else { return };
                match timeout(WRITE_TIMEOUT, writer.write_all(&bytes)).await {
                    Ok(Ok(())) => {
                        if reading {
                            idle_at = Instant::now() + IDLE_TIMEOUT;
                        }
                    }
                    Ok(Err(_)) => return,
                    Err(_) => {
                        debug!(peer = %peer.addr, "closing connection: the peer does not read");
                        return;
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                if reading && started.is_some_and(|at| Instant::now() >= at + MESSAGE_TIMEOUT) {
                    debug!(peer = %peer.addr, "closing connection: a message not completed within {MESSAGE_TIMEOUT:?}");
                } else if reading {
                    debug!(peer = %peer.addr, "closing idle connection");
                }
                let _ = timeout(WRITE_TIMEOUT, writer.shutdown()).await;
                return;
            }
        }
    }
}

/// Hands every whole message at the front of `buf` to the node; true when
/// at least one message or keep-alive was taken.
async fn drain_frames<W: AsyncWrite + Unpin>(
    buf: &mut BytesMut,
    peer: Peer,
    inbound: &mpsc::Sender<Inbound>,
    writer: &mut W,
) -> Result<bool, FrameError> {
    let mut framed = false;
    loop {
        match check(buf)? {
            Frame::Incomplete => return Ok(framed),
            Frame::KeepAlive { len, ping } => {
                let _ = buf.split_to(len);
                framed = true;
                if ping {
                    let _ = timeout(WRITE_TIMEOUT, writer.write_all(b"\r\n")).await;
                }
            }
            Frame::Message { len } | Frame::Stun { len } => {
                let bytes = buf.split_to(len).freeze();
                framed = true;
                if inbound
                    .send(Inbound::Message { bytes, from: peer })
                    .await
                    .is_err()
                {
                    return Ok(framed);
                }
            }
        }
    }
}
