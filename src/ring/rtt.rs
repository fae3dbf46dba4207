//! Round-trip time estimates per peer (RFC 6298: SRTT and RTTVAR) and the
//! request timeouts derived from them, between a floor and a ceiling. A peer
//! never measured gets the ceiling.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Peers whose estimate is kept; beyond this the table is cleared and
/// learnt again (every answer is a sample).
const MAX_PEERS: usize = 4096;

/// One peer's estimate.
#[derive(Clone, Copy, Debug)]
pub(super) struct Estimate {
    srtt: Duration,
    rttvar: Duration,
}

/// The estimates of the peers that answered us.
#[derive(Default)]
pub(super) struct RoundTrips {
    peers: HashMap<SocketAddr, Estimate>,
    /// Every sample, whatever the peer.
    all: Option<Estimate>,
}

impl Estimate {
    fn first(rtt: Duration) -> Estimate {
        Estimate {
            srtt: rtt,
            rttvar: rtt / 2,
        }
    }

    fn update(&mut self, rtt: Duration) {
        let delta = self.srtt.abs_diff(rtt);
        self.rttvar = (self.rttvar * 3 + delta) / 4;
        self.srtt = (self.srtt * 7 + rtt) / 8;
    }
}

impl RoundTrips {
    /// A measured round trip to `addr` (RFC 6298 §2: alpha 1/8, beta 1/4).
    pub(super) fn sample(&mut self, addr: SocketAddr, rtt: Duration) {
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&addr) {
            self.peers.clear();
        }
        match self.peers.get_mut(&addr) {
            None => {
                self.peers.insert(addr, Estimate::first(rtt));
            }
            Some(e) => e.update(rtt),
        }
        match &mut self.all {
            None => self.all = Some(Estimate::first(rtt)),
            Some(e) => e.update(rtt),
        }
    }

    /// The smoothed round trip of `addr`, if it was ever measured.
    pub(super) fn srtt(&self, addr: SocketAddr) -> Option<Duration> {
        self.peers.get(&addr).map(|e| e.srtt)
    }

    /// The retransmission timeout of `addr`: SRTT + 4·RTTVAR within
    /// `[floor, ceiling]`; for a peer never measured, that of all peers;
    /// the ceiling before any sample.
    pub(super) fn timeout(&self, addr: SocketAddr, floor: Duration, ceiling: Duration) -> Duration {
        match self.peers.get(&addr).or(self.all.as_ref()) {
            None => ceiling,
            Some(e) => (e.srtt + e.rttvar * 4).clamp(floor, ceiling.max(floor)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:5060".parse().expect("addr")
    }

    #[test]
    fn unknown_peer_gets_the_ceiling() {
        let rtt = RoundTrips::default();
        let t = rtt.timeout(addr(), Duration::from_millis(50), Duration::from_secs(2));
        assert_eq!(t, Duration::from_secs(2));
    }

    #[test]
    fn unknown_peer_gets_the_estimate_of_all() {
        let mut rtt = RoundTrips::default();
        for _ in 0..50 {
            rtt.sample(addr(), Duration::from_millis(80));
        }
        let other: SocketAddr = "127.0.0.2:5060".parse().expect("addr");
        let t = rtt.timeout(other, Duration::from_millis(50), Duration::from_secs(2));
        assert!(
            t >= Duration::from_millis(80) && t < Duration::from_millis(100),
            "{t:?}"
        );
    }

    #[test]
    fn steady_samples_converge_to_the_floor_or_above() {
        let mut rtt = RoundTrips::default();
        for _ in 0..50 {
            rtt.sample(addr(), Duration::from_millis(40));
        }
        let t = rtt.timeout(addr(), Duration::from_millis(50), Duration::from_secs(2));
        assert!(
            t >= Duration::from_millis(50) && t < Duration::from_millis(60),
            "{t:?}"
        );
        let t = rtt.timeout(addr(), Duration::from_millis(10), Duration::from_secs(2));
        assert!(
            t >= Duration::from_millis(40) && t < Duration::from_millis(50),
            "{t:?}"
        );
    }

    #[test]
    fn jitter_widens_the_timeout_up_to_the_ceiling() {
        let mut rtt = RoundTrips::default();
        for i in 0..20 {
            let ms = if i % 2 == 0 { 10 } else { 300 };
            rtt.sample(addr(), Duration::from_millis(ms));
        }
        let t = rtt.timeout(addr(), Duration::from_millis(50), Duration::from_secs(2));
        assert!(t > Duration::from_millis(400), "{t:?}");
        let t = rtt.timeout(
            addr(),
            Duration::from_millis(50),
            Duration::from_millis(300),
        );
        assert_eq!(t, Duration::from_millis(300));
    }
}
