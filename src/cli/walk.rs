//! The operator CLI as a visitor of the overlay, for a node named only by
//! `--sip` (no control channel): it speaks the ring's own SIP messages
//! (docs/protocol.md) from a UDP socket of its own — "who is your
//! predecessor and what are your successors?" to walk the ring node by
//! node ([`RingWalk`], the same walk a node runs as a member), FindSuccessor
//! and Fetch to look a key up. Rings with `overlay_secret` or certificates
//! refuse a visitor; there the node walks for the CLI (`/control/ring`).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ezk_sip_types::Name;
use p2psip::overlay::load::{self, Load};
use p2psip::overlay::walk::{RingWalk, Step, WalkReport};
use p2psip::overlay::wire;
use p2psip::ring::{Item, NodeId, Peer, RingRequest, RingResponse};
use p2psip::sip::message::{HeaderAccess, Message};

/// How long one try waits for the answer, and how many tries.
const WAIT: Duration = Duration::from_millis(700);
const TRIES: usize = 3;

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

    /// Sends `request` to `to` and waits for its final answer, and the
    /// `P2P-Load` it came with.
    pub fn ask(
        &mut self,
        to: SocketAddr,
        request: &RingRequest,
    ) -> Result<(RingResponse, Option<Load>), String> {
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
                let load = response
                    .raw(&Name::from(load::HEADER))
                    .and_then(|v| Load::parse(v.as_str()));
                return wire::decode_response(&response, Instant::now())
                    .map(|r| (r, load))
                    .map_err(|e| {
                        format!("{to} answered {} {}: {e}", response.status, response.reason)
                    });
            }
        }
        Err(format!("{to} did not answer"))
    }
}

/// Walks the ring by successors from `start` until it comes round, as a
/// visitor (the same walk a node runs as a member for `/control/ring`).
pub fn walk(visitor: &mut Visitor, start: SocketAddr) -> WalkReport {
    let mut walk = RingWalk::new(start);
    loop {
        match walk.next_step() {
            Step::Ask(to, request) => {
                let answer = visitor.ask(to, &request);
                walk.answered(answer);
            }
            Step::Done | Step::Wait | Step::Route(_) => return walk.report().clone(),
        }
    }
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
    let found = visitor
        .ask(
            start,
            &RingRequest::FindSuccessor {
                key,
                hops: 1,
                iterative: false,
                reply: None,
            },
        )?
        .0;
    let RingResponse::Found {
        successor,
        hops,
        replicas,
    } = found
    else {
        return Err(format!("{start} answered {found:?}"));
    };
    let items = match visitor.ask(successor.addr, &RingRequest::Fetch { key })?.0 {
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
