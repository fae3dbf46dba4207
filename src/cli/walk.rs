//! The operator CLI as a visitor of the overlay: it speaks the ring's own
//! SIP messages (docs/protocol.md) from a UDP socket of its own — "who is
//! your predecessor and what are your successors?" to walk the ring node by
//! node, FindSuccessor and Fetch to look a key up — and checks what it sees
//! (each node's predecessor is the node before it; Node-IDs go round once).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ezk_sip_types::Name;
use p2psip::overlay::wire;
use p2psip::ring::{Item, NodeId, Peer, RingRequest, RingResponse};
use p2psip::sip::message::{HeaderAccess, Message};

/// How long one try waits for the answer, and how many tries.
const WAIT: Duration = Duration::from_millis(700);
const TRIES: usize = 3;
/// Most nodes walked before the walk is called a loop.
const MAX_NODES: usize = 10_000;

/// A socket of the CLI's own, named as a (non-member) peer.
pub struct Visitor {
    socket: UdpSocket,
    me: Peer,
    sent: u64,
}

impl Visitor {
    /// A socket on the same kind of address as `towards` (loopback for loopback).
    pub fn new(towards: SocketAddr) -> Result<Visitor, String> {
        let bind: SocketAddr = match towards {
            SocketAddr::V4(a) if a.ip().is_loopback() => "127.0.0.1:0".parse().unwrap_or(towards),
            SocketAddr::V4(_) => "0.0.0.0:0".parse().unwrap_or(towards),
            SocketAddr::V6(_) => "[::]:0".parse().unwrap_or(towards),
        };
        // Learn the source address the kernel picks towards the node: the
        // CLI names itself by it, and the node answers there.
        let ip = {
            let probe = UdpSocket::bind(bind).map_err(|e| format!("UDP socket on {bind}: {e}"))?;
            probe
                .connect(towards)
                .map_err(|e| format!("UDP towards {towards}: {e}"))?;
            probe.local_addr().map_err(|e| e.to_string())?.ip()
        };
        let wanted = SocketAddr::new(ip, 0);
        let socket = UdpSocket::bind(wanted).map_err(|e| format!("UDP socket on {wanted}: {e}"))?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(WAIT))
            .map_err(|e| e.to_string())?;
        Ok(Visitor {
            socket,
            me: Peer {
                id: NodeId::of_addr(local),
                addr: local,
            },
            sent: 0,
        })
    }

    /// Sends `request` to `to` and waits for its final answer.
    pub fn ask(&mut self, to: SocketAddr, request: &RingRequest) -> Result<RingResponse, String> {
        self.sent += 1;
        let now = Instant::now();
        let mut sip = wire::encode_request(request, &self.me, to, now);
        let call_id = format!("walk-{}-{}", rand::random::<u64>(), self.sent);
        sip.headers.insert(
            Name::VIA,
            format!("SIP/2.0/UDP {};rport;branch=z9hG4bK{call_id}", self.me.addr),
        );
        sip.headers.insert(Name::CALL_ID, call_id.clone());
        sip.headers.insert(Name::CSEQ, format!("1 {}", sip.method));
        sip.headers.insert(Name::MAX_FORWARDS, "70");
        let bytes = sip.to_bytes();
        let mut buf = vec![0u8; 65536];
        for _ in 0..TRIES {
            self.socket
                .send_to(&bytes, to)
                .map_err(|e| format!("sending to {to}: {e}"))?;
            let until = Instant::now() + WAIT;
            while Instant::now() < until {
                let Ok((n, _)) = self.socket.recv_from(&mut buf) else {
                    break;
                };
                let Ok(Message::Response(response)) =
                    Message::parse(Bytes::copy_from_slice(&buf[..n]))
                else {
                    continue;
                };
                if response.status < 200
                    || response.raw(&Name::CALL_ID).map(|c| c.as_str()) != Some(call_id.as_str())
                {
                    continue;
                }
                return wire::decode_response(&response, Instant::now()).map_err(|e| {
                    format!("{to} answered {} {}: {e}", response.status, response.reason)
                });
            }
        }
        Err(format!("{to} did not answer"))
    }
}

/// One node met on the walk.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Stop {
    pub id: String,
    pub addr: SocketAddr,
    pub predecessor: Option<SocketAddr>,
    /// Its share of the identifier circle, in percent (the keys it is primary for).
    pub share: f64,
}

/// The walk: the nodes in ring order, from the first one asked, and what
/// did not add up.
#[derive(Debug, serde::Serialize)]
pub struct Walk {
    pub nodes: Vec<Stop>,
    pub problems: Vec<String>,
}

/// Walks the ring by successors from `start` until it comes round.
pub fn walk(visitor: &mut Visitor, start: SocketAddr) -> Result<Walk, String> {
    let mut nodes: Vec<Stop> = Vec::new();
    let mut problems = Vec::new();
    let mut at = start;
    let mut at_id = NodeId::of_addr(start);
    loop {
        let (predecessor, successors) = match visitor.ask(at, &RingRequest::GetPredecessor)? {
            RingResponse::Predecessor {
                predecessor,
                successors,
            } => (predecessor, successors),
            RingResponse::Refused(why) => return Err(format!("{at} refused: {why:?}")),
            other => return Err(format!("{at} answered {other:?}")),
        };
        if let (Some(before), Some(pred)) = (nodes.last(), predecessor)
            && pred.addr != before.addr
        {
            problems.push(format!(
                "inconsistency: {at}'s predecessor is {}, but the walk came from {}",
                pred.addr, before.addr
            ));
        }
        nodes.push(Stop {
            id: at_id.to_string(),
            addr: at,
            predecessor: predecessor.map(|p| p.addr),
            share: 0.0,
        });
        if nodes.len() > MAX_NODES {
            return Err(format!("walked {MAX_NODES} nodes without coming round"));
        }
        // The first successor that answers; those that do not are a gap.
        let mut next = None;
        for s in &successors {
            if s.addr == start || s.addr == at {
                next = Some(*s);
                break;
            }
            match visitor.ask(s.addr, &RingRequest::Ping) {
                Ok(_) => {
                    next = Some(*s);
                    break;
                }
                Err(e) => problems.push(format!("gap: {at}'s successor {} is gone ({e})", s.addr)),
            }
        }
        let Some(next) = next else {
            if !successors.is_empty() {
                problems.push(format!(
                    "gap: none of {at}'s successors answers; the walk stops"
                ));
            }
            break;
        };
        if next.addr == start || next.addr == at {
            break;
        }
        if nodes.iter().any(|n| n.addr == next.addr) {
            problems.push(format!(
                "loop: {next:?} comes round again without passing {start}",
                next = next.addr
            ));
            break;
        }
        at = next.addr;
        at_id = next.id;
    }
    // Node-IDs must go round the circle exactly once.
    let ids: Vec<NodeId> = nodes.iter().filter_map(|n| n.id.parse().ok()).collect();
    let descents = (0..ids.len())
        .filter(|&i| ids[(i + 1) % ids.len()] <= ids[i])
        .count();
    if ids.len() > 1 && descents != 1 {
        problems.push(format!(
            "order: the Node-IDs go round {descents} times, not once"
        ));
    }
    for i in 0..ids.len() {
        let before = ids[(i + ids.len() - 1) % ids.len()];
        let share = if ids.len() == 1 {
            1.0
        } else {
            ids[i].distance_from(before).as_f64()
        };
        nodes[i].share = share * 100.0;
    }
    Ok(Walk { nodes, problems })
}

/// A key looked up: its holders, the hops, and the items under it.
#[derive(Debug)]
pub struct Lookup {
    pub key: NodeId,
    pub holder: Peer,
    pub replicas: Vec<Peer>,
    pub hops: u32,
    pub items: Vec<Item>,
}

/// Finds the successor of `key` through `start`, then fetches its items there.
pub fn lookup(visitor: &mut Visitor, start: SocketAddr, key: NodeId) -> Result<Lookup, String> {
    let found = visitor.ask(
        start,
        &RingRequest::FindSuccessor {
            key,
            hops: 1,
            iterative: false,
        },
    )?;
    let RingResponse::Found {
        successor,
        hops,
        replicas,
    } = found
    else {
        return Err(format!("{start} answered {found:?}"));
    };
    let items = match visitor.ask(successor.addr, &RingRequest::Fetch { key })? {
        RingResponse::Items { items } => items,
        other => {
            return Err(format!(
                "{} answered the fetch with {other:?}",
                successor.addr
            ));
        }
    };
    Ok(Lookup {
        key,
        holder: successor,
        replicas,
        hops,
        items,
    })
}
