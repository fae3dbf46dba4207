//! Limits on stream connections (TCP and TLS): how many may be open at
//! once, in all and from one source address, and how long a connection may
//! stay idle, take over one message or over its TLS handshake.
//!
//! Connections the node opens itself count toward the total only: a source
//! that fills its share of inbound connections cannot stop the node from
//! reaching it, or anyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::warn;

/// Most stream connections open at once, inbound and outbound; further ones are refused.
pub const MAX_CONNECTIONS: usize = 4096;
/// Most inbound connections from one IP address at once (config key
/// `max_connections_per_source`); one more is closed as soon as it is accepted.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 64;
/// A connection that carried no message (nor a keep-alive ping) for this
/// long, in either direction, is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// A message started must be complete within this long (the slowloris guard).
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// The TLS handshake, and a TCP connect the node makes, must finish within this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Writing one message to a peer that does not read must finish within this long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Refused connections are logged at most once per this period, with a count.
const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);

/// The connection counts, shared by the listeners and the connection tasks.
#[derive(Debug)]
pub struct Limits {
    per_source: usize,
    total: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    open: usize,
    inbound: HashMap<IpAddr, usize>,
    refused: u64,
    last_logged: Option<Instant>,
}

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<Limits>,
    source: Option<IpAddr>,
}

impl Limits {
    pub fn new(per_source: usize, total: usize) -> Arc<Limits> {
        Arc::new(Limits {
            per_source: per_source.max(1),
            total,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters: still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A place for a connection accepted from `source`, or `None` (logged
    /// once per period) when the source or the node is at its limit.
    pub fn admit_inbound(self: &Arc<Self>, source: IpAddr) -> Option<Slot> {
        let mut state = self.state();
        let from_source = state.inbound.get(&source).copied().unwrap_or(0);
        if from_source >= self.per_source || state.open >= self.total {
            state.refused += 1;
            let now = Instant::now();
            if state
                .last_logged
                .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_PERIOD)
            {
                warn!(
                    %source,
                    from_source,
                    open = state.open,
                    per_source = self.per_source,
                    total = self.total,
                    refused = state.refused,
                    "connection limit reached: closing new connections (refused since the last report)"
                );
                state.refused = 0;
                state.last_logged = Some(now);
            }
            return None;
        }
        state.open += 1;
        *state.inbound.entry(source).or_insert(0) += 1;
        Some(Slot {
            limits: self.clone(),
            source: Some(source),
        })
    }

    /// A place for a connection the node opens itself: only the total counts.
    pub fn admit_outbound(self: &Arc<Self>) -> Option<Slot> {
        let mut state = self.state();
        if state.open >= self.total {
            return None;
        }
        state.open += 1;
        Some(Slot {
            limits: self.clone(),
            source: None,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.state().open
    }

    /// Inbound connections open now from `source`.
    pub fn from_source(&self, source: IpAddr) -> usize {
        self.state().inbound.get(&source).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.limits.state();
        state.open = state.open.saturating_sub(1);
        if let Some(source) = self.source
            && let Some(count) = state.inbound.get_mut(&source)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.inbound.remove(&source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

    #[test]
    fn one_source_cannot_take_every_place() {
        let limits = Limits::new(2, 10);
        let a1 = limits.admit_inbound(A).expect("first");
        let _a2 = limits.admit_inbound(A).expect("second");
        assert!(limits.admit_inbound(A).is_none(), "third from A");
        let _b = limits.admit_inbound(B).expect("B has its own share");
        drop(a1);
        assert_eq!(limits.from_source(A), 1);
        assert!(limits.admit_inbound(A).is_some(), "a place came back");
    }

    #[test]
    fn outbound_connections_count_toward_the_total_only() {
        let limits = Limits::new(1, 3);
        let _a = limits.admit_inbound(A).expect("A");
        let _o1 = limits.admit_outbound().expect("outbound");
        let _o2 = limits.admit_outbound().expect("outbound");
        assert_eq!(limits.from_source(A), 1);
        assert_eq!(limits.open(), 3);
        assert!(limits.admit_outbound().is_none(), "total reached");
        assert!(limits.admit_inbound(B).is_none(), "total reached");
    }
}
