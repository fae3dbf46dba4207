//! One relayed call's media, sans-I/O: four sockets of the relay (RTP and
//! RTCP towards the caller, the same towards the callee), where each side
//! said it wants packets (its SDP), and where they really come from
//! (symmetric RTP, "latching"). The driver feeds every datagram with
//! [`Media::on_packet`] and sends it where the answer says; time with
//! [`Media::is_over`]. It decides nothing else.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::sdp::Remote;

/// The longest datagram relayed; longer ones are dropped (RTP over UDP on
/// an Ethernet path fits in 1,500 bytes).
pub const MAX_PACKET: usize = 1500;

/// How long a call may ring before it must have been answered (Timer C,
/// 181 s, and a margin): an unanswered session ends after it.
pub const SETUP_LIMIT: Duration = Duration::from_secs(200);

/// The two ends of a relayed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The caller: sends to the relay ports given in the answer.
    Caller,
    /// The callee: sends to the relay ports given in the offer.
    Callee,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }

    fn index(self) -> usize {
        match self {
            Side::Caller => 0,
            Side::Callee => 1,
        }
    }
}

/// RTP, or RTCP on the port above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    Rtp,
    Rtcp,
}

impl Component {
    fn index(self) -> usize {
        match self {
            Component::Rtp => 0,
            Component::Rtcp => 1,
        }
    }
}

/// One side's end of one component.
#[derive(Clone, Copy, Debug, Default)]
struct Endpoint {
    /// Where its SDP said to send.
    signalled: Option<SocketAddr>,
    /// Where its packets come from, once one was taken.
    latched: Option<SocketAddr>,
}

/// The media state of one relayed call.
#[derive(Clone, Debug)]
pub struct Media {
    /// `[side][component]`.
    ends: [[Endpoint; 2]; 2],
    /// Behind NAT: its signalled address means nothing, its first packet's
    /// source is taken instead.
    nated: [bool; 2],
    idle: Duration,
    started: Instant,
    answered: Option<Instant>,
    last_packet: Option<Instant>,
    /// Datagrams forwarded from each side, and dropped.
    pub forwarded: [u64; 2],
    pub dropped: u64,
}

impl Media {
    /// A call set up at `now`; `nated` per side (caller, callee); it ends
    /// after `idle` without a packet once answered.
    pub fn new(nated: [bool; 2], idle: Duration, now: Instant) -> Media {
        Media {
            ends: Default::default(),
            nated,
            idle,
            started: now,
            answered: None,
            last_packet: None,
            forwarded: [0; 2],
            dropped: 0,
        }
    }

    /// `side` said (again) where it wants its packets. A new address drops
    /// what was latched (a re-INVITE after the phone moved).
    pub fn signalled(&mut self, side: Side, remote: Remote) {
        let [rtp, rtcp] = &mut self.ends[side.index()];
        for (end, at) in [(rtp, remote.rtp), (rtcp, remote.rtcp)] {
            if end.signalled != at {
                end.signalled = at;
                end.latched = None;
            }
        }
    }

    /// The call was answered (a 2xx): from now on silence ends it.
    pub fn answered(&mut self, now: Instant) {
        self.answered.get_or_insert(now);
    }

    /// A datagram of `len` bytes from `from` on the relay's `component`
    /// socket towards `side`: where to send it from the same component's
    /// socket towards the other side, or `None` to drop it.
    pub fn on_packet(
        &mut self,
        side: Side,
        component: Component,
        from: SocketAddr,
        packet: &[u8],
        now: Instant,
    ) -> Option<SocketAddr> {
        if !self.accept(side, component, from, packet) {
            self.dropped += 1;
            return None;
        }
        // Heard: the call is not silent, even while the other side is not
        // known yet.
        self.last_packet = Some(now);
        let to = self.destination(side.other(), component);
        match to {
            Some(_) => self.forwarded[side.index()] += 1,
            None => self.dropped += 1,
        }
        to
    }

    /// Whether a packet may come from `from`; the first one that may is latched.
    fn accept(
        &mut self,
        side: Side,
        component: Component,
        from: SocketAddr,
        packet: &[u8],
    ) -> bool {
        // RTP and RTCP are version 2 (RFC 3550 §5.1): anything else (STUN,
        // garbage) is not carried.
        if packet.len() > MAX_PACKET || packet.len() < 4 || packet[0] >> 6 != 2 {
            return false;
        }
        let nated = self.nated[side.index()];
        let end = &mut self.ends[side.index()][component.index()];
        match end.latched {
            Some(latched) => latched == from,
            None => {
                // Before the first packet: from the address its SDP named
                // (any port: symmetric RTP), or, behind NAT, from anywhere.
                let expected = end.signalled.is_some_and(|s| s.ip() == from.ip());
                if expected || nated {
                    end.latched = Some(from);
                }
                expected || nated
            }
        }
    }

    /// Where `side` is reached: where its packets come from; before that
    /// at its SDP's address, unless that is behind a NAT.
    fn destination(&self, side: Side, component: Component) -> Option<SocketAddr> {
        let there = &self.ends[side.index()][component.index()];
        there
            .latched
            .or_else(|| there.signalled.filter(|_| !self.nated[side.index()]))
    }

    /// When the session ends unless a packet comes: silence after the
    /// answer, or no answer within [`SETUP_LIMIT`].
    pub fn deadline(&self) -> Instant {
        match self.answered {
            Some(answered) => self.last_packet.unwrap_or(answered).max(answered) + self.idle,
            None => self.started + SETUP_LIMIT,
        }
    }

    pub fn is_over(&self, now: Instant) -> bool {
        now >= self.deadline()
    }

    /// Where `side`'s packets come from (latched), for the logs.
    pub fn latched(&self, side: Side) -> Option<SocketAddr> {
        self.ends[side.index()][0].latched
    }
}
