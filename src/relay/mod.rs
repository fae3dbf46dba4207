//! The media relay for calls behind NAT (issue 13, item 3): rtpengine's job
//! for Kamailio, inside the proxy. When the caller or the callee is behind
//! NAT and the SDP carries no ICE, the node that routes the call anchors
//! its media: the offer and the answer (INVITE, 18x/2xx, ACK, re-INVITE,
//! UPDATE) are rewritten to relay ports of its own, one RTP/RTCP pair per
//! side from `[relay] ports`, and the driver forwards the packets
//! ([`session::Media`], symmetric RTP) until a BYE, a failed call, or
//! silence.
//!
//! Sans-I/O: the proxy hands every request it forwards and every response
//! it relays to [`Relay::on_request`] and [`Relay::on_response`]; what the
//! driver must do comes out of [`Relay::poll_command`]. A call is known by
//! its Call-ID; which way a message goes is told by its From tag (the
//! caller's, from the first INVITE).

pub mod sdp;
pub mod session;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ezk_sip_types::{Method, Name};
use tracing::{debug, info, warn};

use crate::sip::message::{HeaderAccess, Request, Response, raw_tag};
pub use session::{Component, Media, Side};

/// When calls are anchored (`[relay] mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayMode {
    /// Never: SDP passes untouched.
    Off,
    /// When a side is behind NAT and the SDP has no ICE (the default).
    Nat,
    /// Every call with SDP and no ICE (media through the node always).
    Always,
}

/// `[relay]` as the proxy takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    pub mode: RelayMode,
    /// UDP ports of the relay sockets, `LOW..=HIGH`; each session takes
    /// two pairs (RTP on an even port, RTCP above it).
    pub ports: (u16, u16),
    /// Sessions at most; beyond, a call goes through unanchored.
    pub max_sessions: usize,
    /// An answered call whose media is silent this long is over.
    pub idle: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            mode: RelayMode::Nat,
            ports: (22000, 25999),
            max_sessions: 1000,
            idle: Duration::from_secs(30),
        }
    }
}

/// One relayed call, as the driver knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// What the driver does for the relay.
#[derive(Clone, Debug)]
pub enum RelayCommand {
    /// Bind `caller` and `callee` (RTP; RTCP on the port above each) on
    /// `ip` and run `media` on them (answer [`Relay::ended`] when it ends
    /// by itself or cannot be bound).
    Open {
        session: SessionId,
        ip: IpAddr,
        caller: u16,
        callee: u16,
        media: Box<Media>,
    },
    /// A side's SDP named where it wants packets.
    Signalled {
        session: SessionId,
        side: Side,
        remote: sdp::Remote,
    },
    /// The call was answered.
    Answered { session: SessionId },
    /// The call is over: close its sockets.
    Close { session: SessionId },
}

/// A call being relayed.
struct Call {
    session: SessionId,
    /// The From tag of the first INVITE: requests with it go caller to callee.
    caller_tag: String,
    /// RTP ports of the relay towards the caller and towards the callee.
    caller_port: u16,
    callee_port: u16,
}

/// The relay's state: calls by Call-ID, the ports they hold.
pub struct Relay {
    pub config: RelayConfig,
    ip: IpAddr,
    calls: HashMap<String, Call>,
    by_session: HashMap<SessionId, String>,
    /// RTP ports in use (each with its RTCP port above).
    used: BTreeSet<u16>,
    /// Where the search for a free pair starts next.
    next_port: u16,
    next_session: u64,
    commands: VecDeque<RelayCommand>,
}

impl Relay {
    /// A relay whose sockets are on `ip` (the node's SIP address).
    pub fn new(config: RelayConfig, ip: IpAddr) -> Relay {
        let next_port = even(config.ports.0);
        Relay {
            config,
            ip,
            calls: HashMap::new(),
            by_session: HashMap::new(),
            used: BTreeSet::new(),
            next_port,
            next_session: 0,
            commands: VecDeque::new(),
        }
    }

    /// Calls relayed now.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The next thing for the driver to do.
    pub fn poll_command(&mut self) -> Option<RelayCommand> {
        self.commands.pop_front()
    }

    /// A request the proxy forwards. `callee_nated`: one of its targets is
    /// a binding behind NAT. A first INVITE may open a session; inside a
    /// relayed call its SDP is rewritten and a BYE ends it.
    pub fn on_request(&mut self, request: &mut Request, callee_nated: bool, now: Instant) {
        if self.config.mode == RelayMode::Off {
            return;
        }
        let Some(call_id) = request.raw(&Name::CALL_ID).map(|v| v.trim().to_string()) else {
            return;
        };
        let from_tag = request.raw(&Name::FROM).and_then(|v| raw_tag(v));
        if !self.calls.contains_key(&call_id) {
            let first_invite =
                request.method == Method::INVITE && crate::proxy::to_tag(request).is_none();
            if first_invite && let Some(from_tag) = from_tag {
                self.open(request, call_id, from_tag, callee_nated, now);
            }
            return;
        }
        if request.method == Method::BYE {
            return self.close(&call_id, "BYE");
        }
        if request.method == Method::CANCEL {
            return;
        }
        let from_caller = from_tag.is_some_and(|tag| self.calls[&call_id].caller_tag == tag);
        let side = if from_caller {
            Side::Caller
        } else {
            Side::Callee
        };
        if let Some(body) = self.anchor_body(&call_id, side, &request.headers, &request.body) {
            request.body = body;
        }
    }

    /// A response the proxy relays upstream (the callee's to a caller's
    /// request, or the other way): its SDP is rewritten; a 2xx to the
    /// first INVITE marks the call answered, a final failure ends it.
    pub fn on_response(&mut self, response: &mut Response) {
        let Some(call_id) = response.raw(&Name::CALL_ID).map(|v| v.trim().to_string()) else {
            return;
        };
        let Some(call) = self.calls.get(&call_id) else {
            return;
        };
        let session = call.session;
        let to_caller = response
            .raw(&Name::FROM)
            .and_then(|v| raw_tag(v))
            .is_some_and(|tag| tag == call.caller_tag);
        // A response goes back to who sent the request: it comes from the other side.
        let side = if to_caller {
            Side::Callee
        } else {
            Side::Caller
        };
        let invite = response
            .cseq()
            .is_ok_and(|cseq| cseq.method == Method::INVITE);
        if let Some(body) = self.anchor_body(&call_id, side, &response.headers, &response.body) {
            response.body = body;
        }
        if invite && (200..300).contains(&response.status) {
            self.commands.push_back(RelayCommand::Answered { session });
        }
    }

    /// A fork ended with `status` upstream: a first INVITE that failed
    /// (or was cancelled) ends its session.
    pub fn fork_ended(&mut self, request: &Request, status: u16) {
        if status < 300
            || request.method != Method::INVITE
            || crate::proxy::to_tag(request).is_some()
        {
            return;
        }
        if let Some(call_id) = request.raw(&Name::CALL_ID).map(|v| v.trim().to_string()) {
            self.close(&call_id, "call failed");
        }
    }

    /// The driver ended a session by itself (silence, or its ports could
    /// not be bound): its ports are free again.
    pub fn ended(&mut self, session: SessionId) {
        if let Some(call_id) = self.by_session.remove(&session)
            && let Some(call) = self.calls.remove(&call_id)
        {
            self.used.remove(&call.caller_port);
            self.used.remove(&call.callee_port);
            debug!(%call_id, session = session.0, "relay session ended by the media");
        }
    }

    /// Opens a session for a first INVITE when one of its sides is behind
    /// NAT (or always), and rewrites its offer, if it has one.
    fn open(
        &mut self,
        request: &mut Request,
        call_id: String,
        caller_tag: String,
        callee_nated: bool,
        now: Instant,
    ) {
        let sdp = is_sdp(&request.headers);
        if !request.body.is_empty() && !sdp || sdp::has_ice(&request.body) {
            return;
        }
        let caller_nated = caller_behind_nat(request);
        if self.config.mode == RelayMode::Nat && !caller_nated && !callee_nated {
            return;
        }
        if self.calls.len() >= self.config.max_sessions {
            warn!(%call_id, max = self.config.max_sessions, "relay full: call not anchored");
            return;
        }
        let Some((caller_port, callee_port)) = self.take_ports() else {
            warn!(%call_id, "no relay ports free: call not anchored");
            return;
        };
        self.next_session += 1;
        let session = SessionId(self.next_session);
        let nated = [caller_nated, callee_nated];
        info!(%call_id, session = session.0, caller_nated, callee_nated, caller_port, callee_port, "relaying a call's media");
        let media = Box::new(Media::new(nated, self.config.idle, now));
        self.commands.push_back(RelayCommand::Open {
            session,
            ip: self.ip,
            caller: caller_port,
            callee: callee_port,
            media,
        });
        self.by_session.insert(session, call_id.clone());
        self.calls.insert(
            call_id.clone(),
            Call {
                session,
                caller_tag,
                caller_port,
                callee_port,
            },
        );
        if let Some(body) =
            self.anchor_body(&call_id, Side::Caller, &request.headers, &request.body)
        {
            request.body = body;
        }
    }

    /// A body `from` one side: the SDP it carries learnt and rewritten to
    /// the ports towards the other side. `None`: no SDP, or not one the
    /// relay reads (left as it is).
    fn anchor_body(
        &mut self,
        call_id: &str,
        from: Side,
        headers: &ezk_sip_types::Headers,
        body: &Bytes,
    ) -> Option<Bytes> {
        if body.is_empty() || !is_sdp(headers) {
            return None;
        }
        let call = self.calls.get(call_id)?;
        // The other side sends to the ports that face it.
        let port = match from {
            Side::Caller => call.callee_port,
            Side::Callee => call.caller_port,
        };
        match sdp::rewrite(body, SocketAddr::new(self.ip, port)) {
            Ok((text, remote)) => {
                self.commands.push_back(RelayCommand::Signalled {
                    session: call.session,
                    side: from,
                    remote,
                });
                Some(Bytes::from(text))
            }
            Err(error) => {
                debug!(%error, %call_id, "SDP not relayed");
                None
            }
        }
    }

    fn close(&mut self, call_id: &str, why: &str) {
        let Some(call) = self.calls.remove(call_id) else {
            return;
        };
        self.by_session.remove(&call.session);
        self.used.remove(&call.caller_port);
        self.used.remove(&call.callee_port);
        info!(%call_id, session = call.session.0, why, "relay session closed");
        self.commands.push_back(RelayCommand::Close {
            session: call.session,
        });
    }

    /// Two free RTP ports (even, RTCP above each) of the range, searched
    /// from where the last search stopped.
    fn take_ports(&mut self) -> Option<(u16, u16)> {
        let (low, high) = (even(self.config.ports.0), self.config.ports.1);
        if high < low.saturating_add(1) {
            return None;
        }
        let pairs = (u32::from(high) - u32::from(low)).div_ceil(2);
        let mut found = Vec::with_capacity(2);
        for step in 0..pairs {
            let offset = (u32::from(self.next_port.saturating_sub(low)) / 2 + step) % pairs;
            let port = low + (offset * 2) as u16;
            if !self.used.contains(&port) && !found.contains(&port) {
                found.push(port);
                if found.len() == 2 {
                    let next = low as u32 + ((offset + 1) % pairs) * 2;
                    self.next_port = next as u16;
                    break;
                }
            }
        }
        let [caller, callee] = found[..] else {
            return None;
        };
        self.used.insert(caller);
        self.used.insert(callee);
        Some((caller, callee))
    }
}

/// The first even port at or above `port`.
fn even(port: u16) -> u16 {
    port.saturating_add(port % 2)
}

/// Whether a message's body is SDP (`Content-Type: application/sdp`).
fn is_sdp(headers: &ezk_sip_types::Headers) -> bool {
    headers
        .get_raw(&Name::CONTENT_TYPE)
        .next()
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
        })
}

/// Whether the caller of a first INVITE that came straight from its phone
/// (one Via) is behind NAT: its Via was rewritten on the way (the node
/// stamped `received`/`rport` that differ from sent-by), or its SDP names
/// a private address while the packet came from a public one — Kamailio's
/// `nat_uac_test` 2, 16 and 8.
pub fn caller_behind_nat(request: &Request) -> bool {
    let vias = request.vias();
    let [via] = &vias[..] else {
        return false;
    };
    let Some(source) = crate::proxy::via_peer(via) else {
        return false;
    };
    let sent_by = via.sent_by.ip().map(|ip| {
        let port = via.sent_by.port.unwrap_or(source.addr.port());
        SocketAddr::new(ip, port)
    });
    if crate::registrar::binding::via_differs(sent_by, source) {
        return true;
    }
    let signalled = sdp::rewrite(&request.body, SocketAddr::new(source.addr.ip(), 0))
        .ok()
        .and_then(|(_, remote)| remote.rtp);
    signalled.is_some_and(|at| {
        crate::registrar::binding::is_private(at.ip())
            && !crate::registrar::binding::is_private(source.addr.ip())
    })
}
