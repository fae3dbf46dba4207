//! Abuse resistance per source address, before anything is parsed: a
//! request rate limit (Kamailio pike's idea — requests per source per
//! interval; beyond the limit 503 with Retry-After, beyond twice the limit
//! silence) and a block on sources that fail authentication again and again
//! (what stops `svcrack`). Overlay members and configured trusted peers are
//! not limited. Memory is bounded: at most [`MAX_SOURCES`] sources are
//! tracked, idle ones are forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::warn;

/// Sources tracked at most; a new source beyond it is served unlimited
/// until the next purge makes room (refusing it would let a spoofing
/// flood lock everybody out).
pub const MAX_SOURCES: usize = 100_000;

/// The `[limits]` section: how much one source may ask.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Requests one source may send per `interval_s` (0: no limit).
    pub requests: u32,
    pub interval_s: u64,
    /// Failed authentications within `failures_window_s` that block a source.
    pub auth_failures: u32,
    pub failures_window_s: u64,
    /// How long a blocked source gets no answer.
    pub block_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests: 0,
            interval_s: 2,
            auth_failures: 10,
            failures_window_s: 60,
            block_s: 600,
        }
    }
}

impl Limits {
    /// The defaults of a node that authenticates: 400 requests per 2 s per
    /// source (a busy PBX trunk comes from a trusted peer, not this path).
    pub fn for_auth() -> Limits {
        Limits {
            requests: 400,
            ..Limits::default()
        }
    }
}

/// What to do with a datagram or message from a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Serve,
    /// Over its limit: answer 503 with Retry-After, statelessly.
    Busy {
        retry_after: u64,
    },
    /// Far over its limit, or blocked: no answer at all.
    Drop,
}

#[derive(Default)]
struct Source {
    window_start: Option<Instant>,
    requests: u32,
    failures: u32,
    failures_since: Option<Instant>,
    blocked_until: Option<Instant>,
    last_seen: Option<Instant>,
    /// Already logged in this window.
    logged: bool,
}

/// Per-source counters.
pub struct Guard {
    limits: Limits,
    sources: HashMap<IpAddr, Source>,
}

impl Guard {
    pub fn new(limits: Limits) -> Guard {
        Guard {
            limits,
            sources: HashMap::new(),
        }
    }

    fn source(&mut self, ip: IpAddr) -> Option<&mut Source> {
        if !self.sources.contains_key(&ip) && self.sources.len() >= MAX_SOURCES {
            return None;
        }
        Some(self.sources.entry(ip).or_default())
    }

    /// Counts one request from `ip`.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Admission {
        let limits = self.limits.clone();
        let Some(source) = self.source(ip) else {
            return Admission::Serve;
        };
        source.last_seen = Some(now);
        if source.blocked_until.is_some_and(|until| now < until) {
            return Admission::Drop;
        }
        if limits.requests == 0 {
            return Admission::Serve;
        }
        let interval = Duration::from_secs(limits.interval_s.max(1));
        if source
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= interval)
        {
            source.window_start = Some(now);
            source.requests = 0;
            source.logged = false;
        }
        source.requests = source.requests.saturating_add(1);
        if source.requests <= limits.requests {
            return Admission::Serve;
        }
        if !source.logged {
            source.logged = true;
            warn!(%ip, limit = limits.requests, interval_s = limits.interval_s, "source over its request limit: 503, then silence");
        }
        if source.requests <= limits.requests.saturating_mul(2) {
            Admission::Busy {
                retry_after: limits.interval_s.max(1),
            }
        } else {
            Admission::Drop
        }
    }

    /// `ip` failed an authentication: enough of them block it.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        let limits = self.limits.clone();
        if limits.auth_failures == 0 {
            return;
        }
        let Some(source) = self.source(ip) else {
            return;
        };
        let window = Duration::from_secs(limits.failures_window_s);
        if source
            .failures_since
            .is_none_or(|since| now.saturating_duration_since(since) > window)
        {
            source.failures_since = Some(now);
            source.failures = 0;
        }
        source.failures += 1;
        if source.failures >= limits.auth_failures {
            source.blocked_until = Some(now + Duration::from_secs(limits.block_s));
            source.failures = 0;
            warn!(%ip, block_s = limits.block_s, "source blocked after failed authentications");
        }
    }

    /// Forgets sources that have been quiet for a while and are not blocked.
    pub fn purge(&mut self, now: Instant) {
        let keep_for =
            Duration::from_secs(self.limits.failures_window_s.max(self.limits.interval_s));
        self.sources.retain(|_, s| {
            s.blocked_until.is_some_and(|until| now < until)
                || s.last_seen
                    .is_some_and(|seen| now.saturating_duration_since(seen) <= keep_for)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_over_its_limit_gets_503_then_silence_and_others_are_served() {
        let t0 = Instant::now();
        let mut guard = Guard::new(Limits {
            requests: 3,
            ..Limits::default()
        });
        let flooder: IpAddr = "127.0.0.2".parse().expect("ip");
        let other: IpAddr = "127.0.0.3".parse().expect("ip");
        let answers: Vec<Admission> = (0..8).map(|_| guard.admit(flooder, t0)).collect();
        assert_eq!(answers[..3], [Admission::Serve; 3]);
        assert_eq!(answers[3..6], [Admission::Busy { retry_after: 2 }; 3]);
        assert_eq!(answers[6..], [Admission::Drop; 2]);
        assert_eq!(guard.admit(other, t0), Admission::Serve);
        assert_eq!(
            guard.admit(flooder, t0 + Duration::from_secs(2)),
            Admission::Serve,
            "a new window"
        );
    }

    #[test]
    fn repeated_failures_block_a_source_for_a_while() {
        let t0 = Instant::now();
        let mut guard = Guard::new(Limits::default());
        let cracker: IpAddr = "127.0.0.2".parse().expect("ip");
        for _ in 0..9 {
            guard.failed(cracker, t0);
        }
        assert_eq!(guard.admit(cracker, t0), Admission::Serve);
        guard.failed(cracker, t0);
        assert_eq!(guard.admit(cracker, t0), Admission::Drop);
        guard.purge(t0 + Duration::from_secs(61));
        assert_eq!(
            guard.admit(cracker, t0 + Duration::from_secs(61)),
            Admission::Drop,
            "still blocked"
        );
        assert_eq!(
            guard.admit(cracker, t0 + Duration::from_secs(601)),
            Admission::Serve
        );
    }
}
