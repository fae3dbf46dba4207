//! How much one member may ask: overlay requests per source per interval
//! (`[overlay_limits]`), so that a broken or compromised member cannot keep
//! the others busy. A request over the limit gets 503; the refusals are
//! counted and logged at most once per [`LOG_EVERY`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Sources tracked at most; those beyond share one window.
pub const MAX_TRACKED: usize = 4096;
/// Refusals are logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The requests each source made in its current interval.
pub struct MemberRates {
    limit: u32,
    every: Duration,
    /// Window start and count per source (`None`: the shared overflow window).
    windows: HashMap<Option<SocketAddr>, (Instant, u32)>,
    /// When refusals were last logged, and how many since.
    logged: Option<Instant>,
    unlogged: u64,
}

impl MemberRates {
    /// At most `limit` requests per source in every `every`.
    pub fn new(limit: u32, every: Duration) -> MemberRates {
        MemberRates {
            limit,
            every,
            windows: HashMap::new(),
            logged: None,
            unlogged: 0,
        }
    }

    /// Whether one more request from `source` is within its limit.
    pub fn allow(&mut self, source: SocketAddr, now: Instant) -> bool {
        let mut key = Some(source);
        if !self.windows.contains_key(&key) && self.windows.len() >= MAX_TRACKED {
            let every = self.every;
            self.windows
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < every);
            if self.windows.len() >= MAX_TRACKED {
                key = None;
            }
        }
        let window = self.windows.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(window.0) >= self.every {
            *window = (now, 0);
        }
        window.1 = window.1.saturating_add(1);
        window.1 <= self.limit
    }

    /// Notes a refusal; `Some(count)` (refusals since the last log) when it
    /// is time to log.
    pub fn note_refusal(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        let due = self
            .logged
            .is_none_or(|at| now.saturating_duration_since(at) >= LOG_EVERY);
        if !due {
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_member_over_its_rate_is_refused_until_the_next_interval() {
        let t0 = Instant::now();
        let mut rates = MemberRates::new(3, Duration::from_secs(1));
        assert!((0..3).all(|_| rates.allow(addr(1), t0)));
        assert!(!rates.allow(addr(1), t0), "fourth in the interval");
        assert!(rates.allow(addr(2), t0), "another member has its own count");
        assert!(rates.allow(addr(1), t0 + Duration::from_secs(1)));
    }

    #[test]
    fn sources_beyond_the_cap_share_one_window() {
        let t0 = Instant::now();
        let mut rates = MemberRates::new(2, Duration::from_secs(1));
        for port in 0..MAX_TRACKED as u16 {
            assert!(rates.allow(addr(port), t0));
        }
        assert!(rates.allow(addr(60_001), t0));
        assert!(rates.allow(addr(60_002), t0));
        assert!(!rates.allow(addr(60_003), t0), "the shared window is full");
        assert_eq!(rates.windows.len(), MAX_TRACKED + 1);
        // Once the old windows are stale, a new source gets its own again.
        let later = t0 + Duration::from_secs(2);
        assert!(rates.allow(addr(60_004), later));
        assert!(rates.windows.contains_key(&Some(addr(60_004))));
    }

    #[test]
    fn refusals_are_logged_once_per_period() {
        let t0 = Instant::now();
        let mut rates = MemberRates::new(1, Duration::from_secs(1));
        assert_eq!(rates.note_refusal(t0), Some(1));
        assert_eq!(rates.note_refusal(t0 + Duration::from_secs(1)), None);
        assert_eq!(rates.note_refusal(t0 + LOG_EVERY), Some(2));
    }
}
