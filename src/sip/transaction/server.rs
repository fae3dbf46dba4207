//! Server transactions (RFC 3261 §17.2): matching requests (with the
//! RFC 2543 fallback), absorbing retransmissions, answering CANCEL and
//! sending the TU's responses.

use std::time::Instant;

use bytesstr::BytesStr;
use ezk_sip_types::header::typed::{CSeq, CallID, FromTo};
use ezk_sip_types::host::{Host, HostPort};
use ezk_sip_types::{Method, Name};

use super::{
    Event, IndexKey, Kind, MAGIC_COOKIE, Peer, Server, ServerKey, ServerMatch, ServerState, Slot,
    Transactions, Transmit, Txn, top_via,
};
use crate::sip::message::{HeaderAccess, Message, Request, Response, local_tag};

impl Transactions {
    pub(super) fn receive_request(&mut self, request: Request, from: Peer, now: Instant) {
        let Some(via) = top_via(&request.headers) else {
            tracing::debug!(method = %request.method, "request without a Via: dropped");
            return;
        };
        if !request.headers.contains(&Name::CSEQ) {
            tracing::debug!(method = %request.method, "request without a CSeq: dropped");
            return;
        }
        let branch = match via.params.get_val("branch") {
            Some(b) if b.starts_with(MAGIC_COOKIE) => b.clone(),
            other => match rfc2543_branch(&request, other) {
                Some(b) => b,
                None => {
                    tracing::debug!(method = %request.method, "request without Call-ID or CSeq: dropped");
                    return;
                }
            },
        };
        let method = if request.method == Method::ACK {
            Method::INVITE
        } else {
            request.method.clone()
        };
        let key = ServerMatch {
            branch,
            sent_by: normalize(via.sent_by),
            method,
        };
        if let Some(&id) = self.servers.get(&key) {
            self.server_retransmission(id, request.method == Method::ACK, now);
            return;
        }
        if request.method == Method::ACK {
            self.events.push_back(Event::Ack { request, from });
            return;
        }
        if request.method == Method::CANCEL {
            self.receive_cancel(key, request, from, now);
            return;
        }
        let invite = request.method == Method::INVITE;
        let trying = invite.then(|| Message::Response(request.response(100)));
        let id = self.slab.insert(Txn {
            index: IndexKey::Server(key.clone()),
            timers: [None, None],
            kind: Kind::Server(Server {
                invite,
                state: if invite {
                    ServerState::Proceeding
                } else {
                    ServerState::Trying
                },
                from,
                last: trying.clone(),
                interval: self.timers.t1,
            }),
        });
        self.servers.insert(key, id);
        if let Some(trying) = trying {
            self.transmits.push_back(Transmit {
                to: from,
                message: trying,
            });
        }
        self.events.push_back(Event::Request {
            key: ServerKey(id),
            request,
            from,
        });
    }

    /// A request (or ACK) matching server transaction `id`.
    fn server_retransmission(&mut self, id: u64, ack: bool, now: Instant) {
        let t4 = self.timers.t4;
        let Some(txn) = self.slab.get_mut(id) else {
            return;
        };
        let Kind::Server(server) = &mut txn.kind else {
            return;
        };
        if ack {
            if server.invite && server.state == ServerState::Completed {
                server.state = ServerState::Confirmed;
                let reliable = server.from.transport.reliable();
                self.deadlines.disarm(txn, Slot::Retransmit);
                if reliable {
                    self.terminate(id);
                } else {
                    self.deadlines.arm(txn, id, Slot::Lifetime, now + t4);
                }
            }
            return;
        }
        match server.state {
            ServerState::Proceeding | ServerState::Completed => {
                if let Some(last) = &server.last {
                    self.transmits.push_back(Transmit {
                        to: server.from,
                        message: last.clone(),
                    });
                }
            }
            ServerState::Trying | ServerState::Confirmed => {}
        }
    }

    /// A CANCEL that is not a retransmission: answered here, 200 if it matches
    /// an INVITE server transaction, 481 if not.
    fn receive_cancel(&mut self, key: ServerMatch, request: Request, from: Peer, now: Instant) {
        let invite_key = ServerMatch {
            method: Method::INVITE,
            ..key.clone()
        };
        let invite =
            self.servers
                .get(&invite_key)
                .copied()
                .and_then(|id| match &self.slab.get(id)?.kind {
                    Kind::Server(s) => Some((id, s.state == ServerState::Proceeding)),
                    Kind::Client(_) => None,
                });
        let mut response = request.response(if invite.is_some() { 200 } else { 481 });
        add_to_tag(&mut response);
        let id = self.slab.insert(Txn {
            index: IndexKey::Server(key.clone()),
            timers: [None, None],
            kind: Kind::Server(Server {
                invite: false,
                state: ServerState::Trying,
                from,
                last: None,
                interval: self.timers.t1,
            }),
        });
        self.servers.insert(key, id);
        self.respond(ServerKey(id), response, now);
        if let Some((invite, true)) = invite {
            self.events.push_back(Event::Cancel {
                invite: ServerKey(invite),
                request,
                from,
            });
        }
    }

    /// Where the responses of server transaction `key` go (the peer its
    /// request came from), while it lives.
    pub fn peer_of(&self, key: ServerKey) -> Option<Peer> {
        match &self.slab.get(key.0)?.kind {
            Kind::Server(server) => Some(server.from),
            _ => None,
        }
    }

    /// Send a response on a server transaction (provisional or final).
    /// Responses go to the peer the request came from (RFC 3581: source
    /// address and port, same transport / connection). A response the state
    /// does not allow (a second final, a response after termination) is
    /// dropped.
    pub fn respond(&mut self, key: ServerKey, response: Response, now: Instant) {
        let id = key.0;
        let timers = self.timers;
        let Some(txn) = self.slab.get_mut(id) else {
            tracing::debug!(
                status = response.status,
                "response for a finished server transaction: dropped"
            );
            return;
        };
        let Kind::Server(server) = &mut txn.kind else {
            return;
        };
        let status = response.status;
        let open = match server.state {
            ServerState::Trying | ServerState::Proceeding => true,
            ServerState::Completed | ServerState::Confirmed => false,
        };
        if !open {
            tracing::debug!(status, "response after the final one: dropped");
            return;
        }
        let to = server.from;
        let reliable = to.transport.reliable();
        if status >= 200 {
            let method = response
                .cseq()
                .map(|c| c.method.to_string())
                .unwrap_or_default();
            let target = response.raw(&Name::TO).map(|t| t.to_string());
            tracing::debug!(%method, to = target.as_deref().unwrap_or("-"), status, peer = %to.addr, "transaction");
            if method == "INVITE" {
                tracing::info!(to = target.as_deref().unwrap_or("-"), status, caller = %to.addr, "call");
            }
        }
        let message = Message::Response(response);
        if status < 200 {
            server.state = ServerState::Proceeding;
            server.last = Some(message.clone());
            self.transmits.push_back(Transmit { to, message });
        } else if server.invite && status < 300 {
            self.transmits.push_back(Transmit { to, message });
            self.terminate(id);
        } else if server.invite {
            server.state = ServerState::Completed;
            server.last = Some(message.clone());
            server.interval = timers.t1;
            self.transmits.push_back(Transmit { to, message });
            if !reliable {
                self.deadlines
                    .arm(txn, id, Slot::Retransmit, now + timers.t1);
            }
            self.deadlines
                .arm(txn, id, Slot::Lifetime, now + 64 * timers.t1);
        } else {
            server.state = ServerState::Completed;
            server.last = Some(message.clone());
            self.transmits.push_back(Transmit { to, message });
            if reliable {
                self.terminate(id);
            } else {
                self.deadlines
                    .arm(txn, id, Slot::Lifetime, now + 64 * timers.t1);
            }
        }
    }
}

/// Host names compare case-insensitively (RFC 3261 §19.1.4).
fn normalize(mut sent_by: HostPort) -> HostPort {
    if let Host::Name(name) = &sent_by.host
        && name.bytes().any(|b| b.is_ascii_uppercase())
    {
        sent_by.host = Host::Name(name.to_ascii_lowercase().into());
    }
    sent_by
}

/// The matching key for a request whose branch lacks the magic cookie: a
/// simplified RFC 2543 rule (§17.2.3 of RFC 3261). Call-ID, From tag, CSeq
/// number and the top Via branch (if any) identify the transaction; the
/// sent-by and method are compared as usual. An INVITE, its retransmissions,
/// its CANCEL and the ACK for its non-2xx final response share these values,
/// so ACK and CANCEL match as they do with RFC 3261 branches. The To tag and
/// Request-URI are not compared. `None` when Call-ID or CSeq is missing.
fn rfc2543_branch(request: &Request, branch: Option<&BytesStr>) -> Option<BytesStr> {
    let call_id = request.headers.get_named::<CallID>().ok()?;
    let cseq = request.headers.get_named::<CSeq>().ok()?;
    let from_tag = request
        .headers
        .get::<FromTo>(Name::FROM)
        .ok()
        .and_then(|f| f.tag);
    Some(
        format!(
            "2543;{};{};{};{}",
            call_id.0,
            from_tag.as_deref().unwrap_or(""),
            cseq.cseq,
            branch.map(|b| b.as_str()).unwrap_or("")
        )
        .into(),
    )
}

/// Adds a To tag to a response the layer makes itself, if it has none.
fn add_to_tag(response: &mut Response) {
    let Some(to) = response.headers.get_raw(&Name::TO).next().cloned() else {
        return;
    };
    let tagged = match response.headers.get::<FromTo>(Name::TO) {
        Ok(parsed) => parsed.tag.is_some(),
        Err(_) => return,
    };
    if !tagged {
        response.headers.remove(&Name::TO);
        response.headers.insert(
            Name::TO,
            format!("{to};tag={}", local_tag(&response.headers)),
        );
    }
}
