//! The tokio side of the media relay ([`crate::relay`]): binds the four UDP
//! sockets of a relayed call (RTP and RTCP towards the caller and towards
//! the callee) and runs its sans-I/O [`Media`] on them in a task of its
//! own: a datagram in, at most one datagram out, on the same path, no
//! allocation. The core's updates (a side's SDP, the answer) reach the
//! task over a channel; dropping that channel closes the call. A session
//! that ends by itself (silence) or cannot be bound is reported back so
//! the core frees its ports. It makes no protocol decision.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::relay::sdp::Remote;
use crate::relay::{Component, Media, RelayCommand, SessionId, Side};

/// What the core tells a running session.
enum Update {
    Signalled(Side, Remote),
    Answered,
}

/// The relayed calls' tasks.
pub struct RelaySockets {
    running: HashMap<SessionId, mpsc::UnboundedSender<Update>>,
    ended: mpsc::Sender<SessionId>,
}

/// The sockets of a session in this order: side and component of each.
const SOCKETS: [(Side, Component); 4] = [
    (Side::Caller, Component::Rtp),
    (Side::Caller, Component::Rtcp),
    (Side::Callee, Component::Rtp),
    (Side::Callee, Component::Rtcp),
];

impl RelaySockets {
    /// Sessions that end by themselves are sent on `ended`.
    pub fn new(ended: mpsc::Sender<SessionId>) -> RelaySockets {
        RelaySockets {
            running: HashMap::new(),
            ended,
        }
    }

    /// Does what the relay asks; a session whose sockets could not be
    /// bound is returned (for [`crate::core::Input::RelayEnded`]).
    pub fn act(&mut self, command: RelayCommand) -> Option<SessionId> {
        match command {
            RelayCommand::Open {
                session,
                ip,
                caller,
                callee,
                media,
            } => {
                let sockets = match bind(ip, caller, callee) {
                    Ok(sockets) => sockets,
                    Err(error) => {
                        warn!(%error, session = session.0, caller, callee, "relay ports cannot be bound");
                        return Some(session);
                    }
                };
                let (tx, rx) = mpsc::unbounded_channel();
                self.running.insert(session, tx);
                tokio::spawn(run(session, sockets, *media, rx, self.ended.clone()));
            }
            RelayCommand::Signalled {
                session,
                side,
                remote,
            } => self.tell(session, Update::Signalled(side, remote)),
            RelayCommand::Answered { session } => self.tell(session, Update::Answered),
            RelayCommand::Close { session } => {
                // The task sees its channel closed and stops.
                self.running.remove(&session);
            }
        }
        None
    }

    /// A session that ended by itself is gone.
    pub fn finished(&mut self, session: SessionId) {
        self.running.remove(&session);
    }

    fn tell(&mut self, session: SessionId, update: Update) {
        if let Some(tx) = self.running.get(&session) {
            let _ = tx.send(update);
        }
    }
}

/// RTP at `caller` and `callee`, RTCP on the ports above them.
fn bind(ip: IpAddr, caller: u16, callee: u16) -> std::io::Result<[UdpSocket; 4]> {
    let open = |port: u16| -> std::io::Result<UdpSocket> {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, port))?;
        socket.set_nonblocking(true)?;
        UdpSocket::from_std(socket)
    };
    Ok([
        open(caller)?,
        open(caller.wrapping_add(1))?,
        open(callee)?,
        open(callee.wrapping_add(1))?,
    ])
}

/// Where a datagram on socket `index` goes: the socket to send it from
/// and the address.
fn route(
    media: &mut Media,
    index: usize,
    from: SocketAddr,
    packet: &[u8],
) -> Option<(usize, SocketAddr)> {
    let (side, component) = SOCKETS[index];
    let to = media.on_packet(side, component, from, packet, Instant::now())?;
    // The other side's socket of the same component.
    Some(((index + 2) % 4, to))
}

/// One session: forward until the core closes it or it falls silent.
async fn run(
    session: SessionId,
    sockets: [UdpSocket; 4],
    mut media: Media,
    mut updates: mpsc::UnboundedReceiver<Update>,
    ended: mpsc::Sender<SessionId>,
) {
    let size = crate::relay::session::MAX_PACKET + 1;
    let (mut b0, mut b1, mut b2, mut b3) = (
        vec![0u8; size],
        vec![0u8; size],
        vec![0u8; size],
        vec![0u8; size],
    );
    let by_itself = loop {
        let deadline = tokio::time::Instant::from_std(media.deadline());
        let (index, read) = tokio::select! {
            read = sockets[0].recv_from(&mut b0) => (0, read),
            read = sockets[1].recv_from(&mut b1) => (1, read),
            read = sockets[2].recv_from(&mut b2) => (2, read),
            read = sockets[3].recv_from(&mut b3) => (3, read),
            update = updates.recv() => {
                match update {
                    Some(Update::Signalled(side, remote)) => media.signalled(side, remote),
                    Some(Update::Answered) => media.answered(Instant::now()),
                    None => break false,
                }
                continue;
            }
            _ = tokio::time::sleep_until(deadline) => {
                if media.is_over(Instant::now()) {
                    break true;
                }
                continue;
            }
        };
        let Ok((n, from)) = read else {
            continue;
        };
        let buf = match index {
            0 => &b0,
            1 => &b1,
            2 => &b2,
            _ => &b3,
        };
        if let Some((out, to)) = route(&mut media, index, from, &buf[..n])
            && let Err(error) = sockets[out].try_send_to(&buf[..n], to)
        {
            debug!(%error, %to, "relayed packet not sent");
        }
    };
    info!(
        session = session.0,
        from_caller = media.forwarded[0],
        from_callee = media.forwarded[1],
        dropped = media.dropped,
        caller = ?media.latched(Side::Caller),
        callee = ?media.latched(Side::Callee),
        silent = by_itself,
        "relay session over"
    );
    if by_itself {
        let _ = ended.send(session).await;
    }
}
