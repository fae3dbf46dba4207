//! How busy a node is, as it tells the ring walk: the `P2P-Load` header on
//! its answers to GetPredecessor (`docs/protocol.md`), with the items it
//! holds (primary and replica), the overlay requests it took per second
//! over the last interval, its requests in flight and its role (node or
//! gateway). A peer's header is hostile input: bounded, parsed field by
//! field, and a malformed one reads as absent.

use std::time::{Duration, Instant};

/// The header's name.
pub const HEADER: &str = "P2P-Load";
/// Longest header value read; anything longer is ignored whole.
const MAX_LEN: usize = 256;
/// Most `key=value` fields read.
const MAX_FIELDS: usize = 16;
/// The load is measured again after this long (counting items walks them all).
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// Largest rate believed, requests per second.
const MAX_RATE: f64 = 1e9;

/// What a node does in the overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Node,
    /// It also publishes the overlay domains' DNS.
    Gateway,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Gateway => "gateway",
        }
    }
}

/// One node's load.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Load {
    pub role: Role,
    /// Items held as their key's successor.
    pub primary: u64,
    /// Items held as a replica.
    pub replica: u64,
    /// Overlay requests received per second over the last interval.
    pub rps: f64,
    /// Overlay requests of its own in flight.
    pub pending: u64,
}

impl Load {
    /// The header value, e.g. `role=node;primary=3;replica=6;rps=1.50;pending=0`.
    pub fn encode(&self) -> String {
        format!(
            "role={};primary={};replica={};rps={:.2};pending={}",
            self.role.as_str(),
            self.primary,
            self.replica,
            self.rps,
            self.pending
        )
    }

    /// A peer's header value; `None` unless every number is there and sane.
    pub fn parse(value: &str) -> Option<Load> {
        if value.len() > MAX_LEN {
            return None;
        }
        let (mut role, mut primary, mut replica, mut rps, mut pending) =
            (Role::Node, None, None, None, None);
        for field in value.split(';').take(MAX_FIELDS) {
            let Some((key, v)) = field.trim().split_once('=') else {
                continue;
            };
            let v = v.trim();
            match key.trim() {
                "role" => {
                    role = match v {
                        "gateway" => Role::Gateway,
                        "node" => Role::Node,
                        _ => return None,
                    }
                }
                "primary" => primary = Some(v.parse::<u64>().ok()?),
                "replica" => replica = Some(v.parse::<u64>().ok()?),
                "pending" => pending = Some(v.parse::<u64>().ok()?),
                "rps" => {
                    let r = v.parse::<f64>().ok()?;
                    if !r.is_finite() || !(0.0..=MAX_RATE).contains(&r) {
                        return None;
                    }
                    rps = Some(r);
                }
                _ => {}
            }
        }
        Some(Load {
            role,
            primary: primary?,
            replica: replica?,
            rps: rps?,
            pending: pending?,
        })
    }
}

/// This node's own load, measured at most every [`REFRESH_EVERY`].
#[derive(Debug, Default)]
pub struct LoadMeter {
    /// When last measured, the request count then, and what it gave.
    last: Option<(Instant, u64, Load)>,
}

impl LoadMeter {
    /// The load at `now`: `requests` is the count of overlay requests
    /// received since start; `measure` counts items (primary, replica) and
    /// pending requests, called only when the last figure is stale.
    pub fn load(
        &mut self,
        now: Instant,
        requests: u64,
        role: Role,
        measure: impl FnOnce() -> (u64, u64, u64),
    ) -> Load {
        if let Some((at, _, load)) = self.last
            && now.saturating_duration_since(at) < REFRESH_EVERY
            && load.role == role
        {
            return load;
        }
        let rps = match self.last {
            Some((at, before, _)) => {
                let secs = now.saturating_duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    requests.saturating_sub(before) as f64 / secs
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        let (primary, replica, pending) = measure();
        let load = Load {
            role,
            primary,
            replica,
            rps: rps.min(MAX_RATE),
            pending,
        };
        self.last = Some((now, requests, load));
        load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_reads_back() {
        let load = Load {
            role: Role::Gateway,
            primary: 3,
            replica: 6,
            rps: 1.5,
            pending: 2,
        };
        assert_eq!(Load::parse(&load.encode()), Some(load));
    }

    #[test]
    fn malformed_loads_read_as_absent() {
        for bad in [
            "",
            "primary=1;replica=2;rps=1",
            "primary=-1;replica=2;rps=1;pending=0",
            "primary=1;replica=2;rps=NaN;pending=0",
            "primary=1;replica=2;rps=inf;pending=0",
            "primary=1;replica=2;rps=1e12;pending=0",
            "role=king;primary=1;replica=2;rps=1;pending=0",
            "primary=99999999999999999999999;replica=2;rps=1;pending=0",
        ] {
            assert_eq!(Load::parse(bad), None, "{bad:?}");
        }
        let long = format!("primary=1;replica=2;rps=1;pending=0;x={}", "a".repeat(300));
        assert_eq!(Load::parse(&long), None);
        // Unknown fields are ignored; a missing role is a node.
        let load = Load::parse(" primary=1 ; replica=2;rps=0.5;pending=0;future=x").expect("load");
        assert_eq!((load.role, load.primary, load.rps), (Role::Node, 1, 0.5));
    }

    #[test]
    fn the_rate_is_over_the_last_interval() {
        let mut meter = LoadMeter::default();
        let t0 = Instant::now();
        let first = meter.load(t0, 100, Role::Node, || (1, 2, 0));
        assert_eq!(first.rps, 0.0);
        // Within the interval: the same figure, items not counted again.
        let same = meter.load(t0 + Duration::from_secs(1), 150, Role::Node, || {
            panic!("measured again too soon")
        });
        assert_eq!(same, first);
        let later = meter.load(t0 + Duration::from_secs(4), 140, Role::Node, || (5, 6, 1));
        assert_eq!((later.primary, later.rps), (5, 10.0));
    }
}
