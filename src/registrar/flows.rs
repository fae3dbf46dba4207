//! The flows this node holds for its own phones, so that a call reaching
//! another node of the ring still gets to a phone over the connection (or
//! NAT mapping) it registered on (RFC 5626 §5.3, the edge proxy's part).
//!
//! When this node accepts a binding that is reached only where its REGISTER
//! came from — a TCP/TLS connection, an Outbound flow, a phone behind NAT —
//! it puts a Path entry of its own in front of the binding's path:
//! `<sip:ob-TOKEN@NODE;lr;ob>`, the token naming the flow (transport and
//! source address). The binding goes into the ring with it, so any node that
//! routes to the binding sends the request to this node with that Route; this
//! node finds the flow by the token and sends the request over it, or answers
//! 430 Flow Failed when the flow is gone. A token names only a flow this node
//! accepted a live registration on: it cannot be used to reach any other
//! address. Sans-I/O: the core asks and forwards.
//!
//! An Outbound flow over a connection fails when the connection closes
//! (RFC 5626 §7: the registrar then removes the flow's binding): the flows
//! remember which AORs registered one over each connection, and
//! [`Flows::failed`] hands them to the core to remove.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::binding::{Aor, Binding};
use crate::sip::transaction::{Peer, TransportKind};

/// Flows remembered at most (beyond, new ones are not).
pub const MAX_FLOWS: usize = 100_000;

/// The user part of our flow routes starts with this.
const PREFIX: &str = "ob-";
/// How every flow route begins and ends (`<sip:ob-TOKEN@NODE;lr;ob>`).
const ROUTE_START: &str = "<sip:ob-";
const ROUTE_END: &str = ";lr;ob>";

/// A flow and what the binding said of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldFlow {
    /// Where the phone's REGISTER came from: where requests go.
    pub peer: Peer,
    /// The binding was behind NAT (media may need the relay).
    pub behind_nat: bool,
}

/// Flows by token, each until its binding expires.
#[derive(Debug, Default)]
pub struct Flows {
    flows: HashMap<String, (HeldFlow, Instant)>,
    /// The AORs with a live Outbound binding over each connection, by the
    /// connection's peer, each until its binding expires.
    outbound: HashMap<Peer, Vec<(Aor, Instant)>>,
    /// The reverse: the connections each AOR has an Outbound binding over,
    /// so a registration touches only her own entries.
    over: HashMap<Aor, Vec<Peer>>,
}

/// AORs remembered per connection at most (one phone registers a few).
const MAX_AORS_PER_FLOW: usize = 16;

impl Flows {
    /// Whether `binding` is reached only where its REGISTER came from, so
    /// that another node must route to it through this one.
    pub fn needs_route(binding: &Binding) -> bool {
        binding
            .source
            .is_some_and(|s| binding.behind_nat || binding.flow.is_some() || s.transport.reliable())
    }

    /// The token naming the flow from `peer`.
    pub fn token(peer: Peer) -> String {
        let t = match peer.transport {
            TransportKind::Udp => "u",
            TransportKind::Tcp => "t",
            TransportKind::Tls => "s",
        };
        let ip: String = match peer.addr.ip() {
            std::net::IpAddr::V4(ip) => ip.octets().iter().map(|b| format!("{b:02x}")).collect(),
            std::net::IpAddr::V6(ip) => ip.octets().iter().map(|b| format!("{b:02x}")).collect(),
        };
        format!("{PREFIX}{t}{ip}-{}", peer.addr.port())
    }

    /// Our Path entry for the flow from `peer`, this node listening at `local`.
    pub fn route(peer: Peer, local: SocketAddr) -> String {
        format!("<sip:{}@{local};lr;ob>", Flows::token(peer))
    }

    /// Whether `route` (a Path or Route value) is one of ours (this node at `local`).
    pub fn is_own_route(route: &str, local: SocketAddr) -> bool {
        Flows::is_flow_route(route)
            && route[..route.len() - ROUTE_END.len()]
                .rsplit_once('@')
                .is_some_and(|(_, node)| node.parse() == Ok(local))
    }

    /// Whether `route` is a flow route of some node (ours or another's).
    pub fn is_flow_route(route: &str) -> bool {
        route.starts_with(ROUTE_START) && route.ends_with(ROUTE_END)
    }

    /// Whether a Route's user part is a flow token.
    pub fn is_token(user: &str) -> bool {
        user.starts_with(PREFIX)
    }

    /// Puts our route in front of the path of each binding of this REGISTER
    /// (its Call-ID and CSeq) that needs one; others are left as they are.
    pub fn mark(bindings: &mut [Binding], (call_id, cseq): (&str, u32), local: SocketAddr) {
        for b in bindings.iter_mut() {
            let ours = b.call_id == call_id && b.cseq == cseq;
            let Some(source) = b.source else { continue };
            if !ours || !Flows::needs_route(b) {
                continue;
            }
            b.path.retain(|p| !Flows::is_own_route(p, local));
            b.path.insert(0, Flows::route(source, local));
        }
    }

    /// Remembers the flows of the bindings this node accepted for `aor`
    /// (those with our route first), until each binding expires.
    pub fn registered(&mut self, aor: &Aor, bindings: &[Binding], local: SocketAddr, now: Instant) {
        self.remember_outbound(aor, bindings, now);
        for b in bindings {
            let Some(peer) = b.source else { continue };
            if !b
                .path
                .first()
                .is_some_and(|p| Flows::is_own_route(p, local))
            {
                continue;
            }
            let token = Flows::token(peer);
            if !b.is_live(now) {
                self.flows.remove(&token);
                continue;
            }
            if self.flows.len() >= MAX_FLOWS && !self.flows.contains_key(&token) {
                continue;
            }
            let held = HeldFlow {
                peer,
                behind_nat: b.behind_nat,
            };
            let until = self
                .flows
                .get(&token)
                .map_or(b.expires_at, |(_, u)| (*u).max(b.expires_at));
            self.flows.insert(token, (held, until));
        }
    }

    /// Which connections carry an Outbound binding of `aor` (its bindings
    /// as saved: a connection without one any more forgets her).
    fn remember_outbound(&mut self, aor: &Aor, bindings: &[Binding], now: Instant) {
        for peer in self.over.remove(aor).unwrap_or_default() {
            self.forget(peer, aor);
        }
        let mut peers = Vec::new();
        for b in bindings {
            let Some(peer) = b.source.filter(|p| p.transport.reliable()) else {
                continue;
            };
            if b.flow.is_none() || !b.is_live(now) {
                continue;
            }
            if self.outbound.len() >= MAX_FLOWS && !self.outbound.contains_key(&peer) {
                continue;
            }
            let aors = self.outbound.entry(peer).or_default();
            if let Some((_, until)) = aors.iter_mut().find(|(a, _)| a == aor) {
                *until = (*until).max(b.expires_at);
            } else if aors.len() < MAX_AORS_PER_FLOW {
                aors.push((aor.clone(), b.expires_at));
                peers.push(peer);
            }
        }
        if !peers.is_empty() {
            self.over.insert(aor.clone(), peers);
        }
    }

    /// `aor` has no Outbound binding over `peer` any more.
    fn forget(&mut self, peer: Peer, aor: &Aor) {
        if let Some(aors) = self.outbound.get_mut(&peer) {
            aors.retain(|(a, _)| a != aor);
            if aors.is_empty() {
                self.outbound.remove(&peer);
            }
        }
    }

    /// The connection to `peer` closed: the AORs whose live Outbound
    /// binding it carried, to be removed (and forgotten here).
    pub fn failed(&mut self, peer: Peer, now: Instant) -> Vec<Aor> {
        self.flows.remove(&Flows::token(peer));
        let aors = self.outbound.remove(&peer).unwrap_or_default();
        for (aor, _) in &aors {
            if let Some(peers) = self.over.get_mut(aor) {
                peers.retain(|p| *p != peer);
                if peers.is_empty() {
                    self.over.remove(aor);
                }
            }
        }
        aors.into_iter()
            .filter(|(_, until)| *until > now)
            .map(|(aor, _)| aor)
            .collect()
    }

    /// The live flow `token` names, if this node holds one.
    pub fn find(&self, token: &str, now: Instant) -> Option<HeldFlow> {
        self.flows
            .get(token)
            .filter(|(_, until)| *until > now)
            .map(|(flow, _)| *flow)
    }

    /// The bindings as this node routes to them: our own route dropped (we
    /// reach the flow ourselves).
    pub fn without_own_route(bindings: &mut [Binding], local: SocketAddr) {
        for b in bindings.iter_mut() {
            if b.path
                .first()
                .is_some_and(|p| Flows::is_own_route(p, local))
            {
                b.path.remove(0);
            }
        }
    }

    /// Drops expired flows.
    pub fn purge(&mut self, now: Instant) {
        self.flows.retain(|_, (_, until)| *until > now);
        for aors in self.outbound.values_mut() {
            aors.retain(|(_, until)| *until > now);
        }
        self.outbound.retain(|_, aors| !aors.is_empty());
        let outbound = &self.outbound;
        self.over.retain(|aor, peers| {
            peers.retain(|p| {
                outbound
                    .get(p)
                    .is_some_and(|aors| aors.iter().any(|(a, _)| a == aor))
            });
            !peers.is_empty()
        });
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn alice() -> Aor {
        Aor::new("alice", "example.test")
    }

    fn peer(transport: TransportKind, addr: &str) -> Peer {
        Peer {
            transport,
            addr: addr.parse().expect("addr"),
        }
    }

    fn binding(source: Option<Peer>, behind_nat: bool, call_id: &str, until: Instant) -> Binding {
        Binding {
            contact: "sip:alice@192.168.1.2:5060;transport=tcp".into(),
            q: None,
            expires_at: until,
            call_id: call_id.into(),
            cseq: 1,
            path: Vec::new(),
            source,
            behind_nat,
            flow: None,
        }
    }

    #[test]
    fn a_connection_binding_gets_our_route_and_is_found_by_its_token() {
        let now = Instant::now();
        let local: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
        let tcp = peer(TransportKind::Tcp, "127.0.0.9:40001");
        let until = now + Duration::from_secs(60);
        let mut bindings = vec![
            binding(Some(tcp), false, "c", until),
            // Reachable as written (UDP, not behind NAT): no route.
            binding(
                Some(peer(TransportKind::Udp, "127.0.0.8:5060")),
                false,
                "c",
                until,
            ),
            // Another phone's binding, not this REGISTER's: left alone.
            binding(
                Some(peer(TransportKind::Tcp, "127.0.0.7:40002")),
                false,
                "other",
                until,
            ),
        ];
        Flows::mark(&mut bindings, ("c", 1), local);
        assert_eq!(bindings[0].path, vec![Flows::route(tcp, local)]);
        assert!(bindings[1].path.is_empty());
        assert!(bindings[2].path.is_empty());
        // Marked again (a refresh): still one route of ours.
        Flows::mark(&mut bindings, ("c", 1), local);
        assert_eq!(bindings[0].path.len(), 1);

        let mut flows = Flows::default();
        flows.registered(&alice(), &bindings, local, now);
        assert_eq!(flows.len(), 1);
        let token = Flows::token(tcp);
        assert!(Flows::is_token(&token));
        assert_eq!(flows.find(&token, now).map(|f| f.peer), Some(tcp));
        // A token for an address that never registered here finds nothing.
        let stranger = Flows::token(peer(TransportKind::Udp, "127.0.0.66:5060"));
        assert_eq!(flows.find(&stranger, now), None);
        // Gone once the binding expires.
        assert_eq!(flows.find(&token, until), None);
        flows.purge(until);
        assert!(flows.is_empty());
    }

    #[test]
    fn own_routes_are_told_from_another_node_s() {
        let local: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
        let other: SocketAddr = "127.0.0.2:5060".parse().expect("addr");
        let tcp = peer(TransportKind::Tcp, "127.0.0.9:40001");
        let ours = Flows::route(tcp, local);
        let theirs = Flows::route(tcp, other);
        assert!(Flows::is_own_route(&ours, local));
        assert!(!Flows::is_own_route(&theirs, local));
        assert!(Flows::is_flow_route(&theirs));
        assert!(!Flows::is_flow_route("<sip:edge.test;lr>"));
        let mut bindings = vec![binding(Some(tcp), false, "c", Instant::now())];
        bindings[0].path = vec![ours, "<sip:edge.test;lr>".into()];
        Flows::without_own_route(&mut bindings, local);
        assert_eq!(bindings[0].path, vec!["<sip:edge.test;lr>".to_string()]);
    }

    #[test]
    fn a_removed_binding_forgets_its_flow() {
        let now = Instant::now();
        let local: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
        let tcp = peer(TransportKind::Tcp, "127.0.0.9:40001");
        let mut bindings = vec![binding(
            Some(tcp),
            false,
            "c",
            now + Duration::from_secs(60),
        )];
        Flows::mark(&mut bindings, ("c", 1), local);
        let mut flows = Flows::default();
        flows.registered(&alice(), &bindings, local, now);
        bindings[0].expires_at = now;
        flows.registered(&alice(), &bindings, local, now);
        assert!(flows.is_empty());
    }

    #[test]
    fn a_closed_connection_names_the_aors_of_its_outbound_bindings_once() {
        use crate::registrar::binding::Flow;
        let now = Instant::now();
        let local: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
        let tcp = peer(TransportKind::Tcp, "127.0.0.9:40001");
        let until = now + Duration::from_secs(60);
        let mut outbound = binding(Some(tcp), false, "c", until);
        outbound.flow = Some(Flow {
            instance: "<urn:uuid:1>".into(),
            reg_id: 1,
        });
        let mut flows = Flows::default();
        // A TCP binding without Outbound: its connection closing removes nothing.
        flows.registered(
            &alice(),
            &[binding(Some(tcp), false, "c", until)],
            local,
            now,
        );
        assert!(flows.failed(tcp, now).is_empty());

        flows.registered(&alice(), &[outbound.clone()], local, now);
        let other = peer(TransportKind::Tcp, "127.0.0.9:40002");
        assert!(flows.failed(other, now).is_empty(), "another connection");
        assert_eq!(flows.failed(tcp, now), vec![alice()]);
        assert!(flows.failed(tcp, now).is_empty(), "named once");

        // Unregistered (no binding over it any more): nothing to remove.
        flows.registered(&alice(), &[outbound.clone()], local, now);
        flows.registered(&alice(), &[], local, now);
        assert!(flows.failed(tcp, now).is_empty());
        // Expired: nothing either.
        flows.registered(&alice(), &[outbound], local, now);
        assert!(flows.failed(tcp, until).is_empty());
    }
}
