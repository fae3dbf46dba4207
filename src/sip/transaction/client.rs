//! Client transactions (RFC 3261 §17.1): starting them, CANCEL, transport
//! failures and the responses that match them, with the ACK and CANCEL the
//! layer builds itself.

use std::time::{Duration, Instant};

use ezk_sip_types::Method;
use ezk_sip_types::Name;
use ezk_sip_types::header::typed::CSeq;

use super::{
    CancelState, Client, ClientKey, ClientMatch, ClientState, Event, IndexKey, Kind, Owner, Peer,
    Slot, Transactions, Transmit, Txn, branch_of, top_via,
};
use crate::sip::message::{Message, Request, Response};

/// Timer D for unreliable transports (RFC 3261 §17.1.1.2: at least 32 s).
const TIMER_D: Duration = Duration::from_secs(32);

impl Transactions {
    /// Start a client transaction. The caller has already put its own top Via
    /// with a fresh RFC 3261 branch ("z9hG4bK..."); the layer keys on it.
    /// For INVITE the layer sends the ACK for a non-2xx final response itself
    /// (RFC 3261 §17.1.1.3), and absorbs retransmissions.
    ///
    /// An ACK is not a transaction: it is sent once and the key returned
    /// refers to nothing (no event ever carries it). A request without a
    /// branch is sent and retransmitted but cannot match a response; it ends
    /// with [`Event::Timeout`].
    pub fn send_request(&mut self, request: Request, to: Peer, now: Instant) -> ClientKey {
        self.send_request_for(Owner::default(), request, to, now)
    }

    /// [`send_request`](Self::send_request) on behalf of `owner`, whose tag
    /// every event of the transaction carries.
    pub fn send_request_for(
        &mut self,
        owner: Owner,
        request: Request,
        to: Peer,
        now: Instant,
    ) -> ClientKey {
        if request.method == Method::ACK {
            self.transmits.push_back(Transmit {
                to,
                message: Message::Request(request),
            });
            // Slot index u32::MAX is never allocated: this key refers to nothing.
            return ClientKey(u64::MAX);
        }
        ClientKey(self.start_client(request, to, now, false, owner))
    }

    fn start_client(
        &mut self,
        request: Request,
        to: Peer,
        now: Instant,
        silent: bool,
        owner: Owner,
    ) -> u64 {
        let invite = request.method == Method::INVITE;
        let index = match top_via(&request.headers).and_then(|v| branch_of(&v)) {
            Some(branch) => IndexKey::Client(ClientMatch {
                branch,
                method: request.method.clone(),
            }),
            None => {
                tracing::warn!(method = %request.method, "client request without a Via branch: responses cannot match");
                IndexKey::None
            }
        };
        let message = Message::Request(request);
        self.transmits.push_back(Transmit {
            to,
            message: message.clone(),
        });
        let match_key = match &index {
            IndexKey::Client(k) => Some(k.clone()),
            _ => None,
        };
        let id = self.slab.insert(Txn {
            index,
            timers: [None, None],
            kind: Kind::Client(Client {
                invite,
                state: ClientState::Initial,
                request: message,
                to,
                interval: self.timers.t1,
                silent,
                cancel: CancelState::None,
                ack: None,
                owner,
                given_up: false,
            }),
        });
        if let Some(k) = match_key
            && let Some(old) = self.clients.insert(k, id)
        {
            tracing::warn!(
                "client branch reused: the older transaction no longer matches responses"
            );
            if let Some(txn) = self.slab.get_mut(old) {
                txn.index = IndexKey::None;
            }
        }
        let t1 = self.timers.t1;
        if let Some(txn) = self.slab.get_mut(id) {
            if !to.transport.reliable() {
                self.deadlines.arm(txn, id, Slot::Retransmit, now + t1);
            }
            self.deadlines.arm(txn, id, Slot::Lifetime, now + 64 * t1);
        }
        id
    }

    /// Cancel a pending INVITE client transaction (RFC 3261 §9.1). The CANCEL
    /// is sent once a provisional response has arrived (at once if one has),
    /// dropped if a final response arrives first. Responses to the CANCEL are
    /// absorbed. If the INVITE still has no final response 64*T1 after the
    /// CANCEL went out, the INVITE transaction ends with [`Event::Timeout`].
    pub fn cancel(&mut self, key: ClientKey, now: Instant) {
        let Some(Txn {
            kind: Kind::Client(client),
            ..
        }) = self.slab.get_mut(key.0)
        else {
            return;
        };
        if !client.invite || client.cancel != CancelState::None {
            return;
        }
        match client.state {
            ClientState::Initial => client.cancel = CancelState::Pending,
            ClientState::Proceeding => self.send_cancel(key.0, now),
            ClientState::Completed => {}
        }
    }

    /// Builds and sends the CANCEL for INVITE transaction `id` (in Proceeding).
    fn send_cancel(&mut self, id: u64, now: Instant) {
        let Some(txn) = self.slab.get_mut(id) else {
            return;
        };
        let Kind::Client(client) = &mut txn.kind else {
            return;
        };
        client.cancel = CancelState::Sent;
        let to = client.to;
        let cancel = match &client.request {
            Message::Request(invite) => build_in_transaction(invite, Method::CANCEL, None),
            Message::Response(_) => None,
        };
        let limit = now + 64 * self.timers.t1;
        self.deadlines.arm(txn, id, Slot::Lifetime, limit);
        if let Some(cancel) = cancel {
            self.start_client(cancel, to, now, true, Owner::default());
        }
    }

    /// The TU no longer waits for the answer of non-INVITE client
    /// transaction `key` (its owner gave up on the request, e.g. a ring
    /// lookup that went on through another hop): it ends silently `grace`
    /// from now instead of at Timer F, with no [`Event::Timeout`], and
    /// nothing is retransmitted after that. Within the grace Timer E goes on
    /// and a response is still passed up, so the owner learns from a late
    /// answer (a first datagram lost under load is still repeated). An
    /// INVITE is left alone (it ends by CANCEL), as is a transaction
    /// already answered.
    pub fn give_up(&mut self, key: ClientKey, grace: Duration, now: Instant) {
        let Some(txn) = self.slab.get_mut(key.0) else {
            return;
        };
        let Kind::Client(client) = &mut txn.kind else {
            return;
        };
        if client.invite || client.state == ClientState::Completed || client.given_up {
            return;
        }
        client.given_up = true;
        self.deadlines.arm(txn, key.0, Slot::Lifetime, now + grace);
    }

    /// The transport could not deliver the request of a client transaction:
    /// it ends with [`Event::Timeout`] (RFC 3261 §17.1.4).
    pub fn transport_error(&mut self, key: ClientKey, _now: Instant) {
        let Some(Txn {
            kind: Kind::Client(client),
            ..
        }) = self.slab.get(key.0)
        else {
            return;
        };
        if client.state != ClientState::Completed && !client.silent && !client.given_up {
            let owner = client.owner;
            self.events.push_back(Event::Timeout { key, owner });
        }
        self.terminate(key.0);
    }

    /// The transport failed towards `peer` (a connection could not be opened
    /// or closed, a send was refused): every client transaction to that
    /// peer that has heard nothing yet ends with [`Event::Timeout`]
    /// (RFC 3261 §17.1.4), so its owner fails over now instead of after
    /// Timer B/F. One that has a provisional response is left to its
    /// timers: over TCP the server may open a new connection for the final
    /// response (§18.2.2). A rare event: the transactions are scanned.
    pub fn peer_failed(&mut self, peer: Peer, now: Instant) {
        let failed: Vec<u64> = self
            .slab
            .entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| match &entry.txn {
                Some(Txn {
                    kind: Kind::Client(client),
                    ..
                }) if client.to == peer && client.state == ClientState::Initial => {
                    Some((u64::from(entry.generation) << 32) | index as u64)
                }
                _ => None,
            })
            .collect();
        for id in failed {
            self.transport_error(ClientKey(id), now);
        }
    }

    /// A [`Transmit`] taken from [`Transactions::poll_transmit`] could not be
    /// sent (connection refused or lost, no route). If it carried the request
    /// of a client transaction, that transaction ends with
    /// [`Event::Timeout`] (RFC 3261 §17.1.4); found by its top Via branch and
    /// method, no scan. Other failed messages (responses, ACKs) are left to
    /// the timers.
    pub fn transmit_failed(&mut self, transmit: &Transmit, now: Instant) {
        let Message::Request(request) = &transmit.message else {
            return;
        };
        let Some(branch) = top_via(&request.headers).and_then(|v| branch_of(&v)) else {
            return;
        };
        let key = ClientMatch {
            branch,
            method: request.method.clone(),
        };
        if let Some(&id) = self.clients.get(&key)
            && let Some(Txn {
                kind: Kind::Client(client),
                ..
            }) = self.slab.get(id)
            && client.to == transmit.to
        {
            self.transport_error(ClientKey(id), now);
        }
    }

    pub(super) fn receive_response(&mut self, response: Response, from: Peer, now: Instant) {
        let key = top_via(&response.headers)
            .and_then(|v| branch_of(&v))
            .zip(response.headers.get_named::<CSeq>().ok())
            .map(|(branch, cseq)| ClientMatch {
                branch,
                method: cseq.method,
            });
        let id = key.and_then(|k| self.clients.get(&k).copied());
        let Some(id) = id else {
            self.events
                .push_back(Event::StrayResponse { response, from });
            return;
        };
        let timers = self.timers;
        let Some(txn) = self.slab.get_mut(id) else {
            return;
        };
        let Kind::Client(client) = &mut txn.kind else {
            return;
        };
        let status = response.status;
        let reliable = client.to.transport.reliable();
        let key = ClientKey(id);
        let owner = client.owner;
        if client.invite {
            match client.state {
                ClientState::Initial | ClientState::Proceeding => {
                    if status < 200 {
                        let first = client.state == ClientState::Initial;
                        client.state = ClientState::Proceeding;
                        let send_cancel = client.cancel == CancelState::Pending;
                        if first {
                            self.deadlines.disarm(txn, Slot::Retransmit);
                            self.deadlines.disarm(txn, Slot::Lifetime);
                        }
                        self.events.push_back(Event::Response {
                            key,
                            owner,
                            response,
                        });
                        if send_cancel {
                            self.send_cancel(id, now);
                        }
                    } else if status < 300 {
                        self.events.push_back(Event::Response {
                            key,
                            owner,
                            response,
                        });
                        self.terminate(id);
                    } else {
                        let ack = match &client.request {
                            Message::Request(invite) => {
                                build_in_transaction(invite, Method::ACK, Some(&response))
                            }
                            Message::Response(_) => None,
                        }
                        .map(Message::Request);
                        if let Some(ack) = &ack {
                            self.transmits.push_back(Transmit {
                                to: client.to,
                                message: ack.clone(),
                            });
                        }
                        client.ack = ack;
                        client.state = ClientState::Completed;
                        client.cancel = match client.cancel {
                            CancelState::Pending => CancelState::None,
                            other => other,
                        };
                        self.events.push_back(Event::Response {
                            key,
                            owner,
                            response,
                        });
                        self.deadlines.disarm(txn, Slot::Retransmit);
                        if reliable {
                            self.terminate(id);
                        } else {
                            self.deadlines.arm(txn, id, Slot::Lifetime, now + TIMER_D);
                        }
                    }
                }
                ClientState::Completed => {
                    if status >= 300
                        && let Some(ack) = &client.ack
                    {
                        self.transmits.push_back(Transmit {
                            to: client.to,
                            message: ack.clone(),
                        });
                    }
                }
            }
        } else {
            match client.state {
                ClientState::Initial | ClientState::Proceeding => {
                    let silent = client.silent;
                    if status < 200 {
                        client.state = ClientState::Proceeding;
                    } else if client.given_up {
                        // Nobody waits for it: no Timer K either.
                        self.events.push_back(Event::Response {
                            key,
                            owner,
                            response,
                        });
                        return self.terminate(id);
                    } else {
                        client.state = ClientState::Completed;
                        self.deadlines.disarm(txn, Slot::Retransmit);
                        if reliable {
                            self.terminate(id);
                        } else {
                            self.deadlines.arm(txn, id, Slot::Lifetime, now + timers.t4);
                        }
                    }
                    if !silent {
                        self.events.push_back(Event::Response {
                            key,
                            owner,
                            response,
                        });
                    }
                }
                ClientState::Completed => {}
            }
        }
    }
}

/// An ACK (RFC 3261 §17.1.1.3, `to_from` the final response) or a CANCEL
/// (§9.1) for `invite`: same Request-URI, Call-ID, From, CSeq number, top Via
/// only, Route set and Max-Forwards; To from the response for ACK, from the
/// INVITE for CANCEL. `None` if the INVITE lacks CSeq.
fn build_in_transaction(
    invite: &Request,
    method: Method,
    to_from: Option<&Response>,
) -> Option<Request> {
    let cseq = invite.headers.get_named::<CSeq>().ok()?;
    let via = top_via(&invite.headers)?;
    let mut req = Request::new(method.clone(), invite.uri.clone());
    let h = &mut req.headers;
    h.insert_named(&via);
    for route in invite.headers.get_raw(&Name::ROUTE) {
        h.insert(Name::ROUTE, route.clone());
    }
    match invite.headers.get_raw(&Name::MAX_FORWARDS).next() {
        Some(mf) => h.insert(Name::MAX_FORWARDS, mf.clone()),
        None => h.insert(Name::MAX_FORWARDS, "70"),
    }
    for name in [Name::FROM, Name::TO, Name::CALL_ID] {
        let source = match (&name, to_from) {
            (n, Some(resp)) if *n == Name::TO => &resp.headers,
            _ => &invite.headers,
        };
        if let Some(value) = source.get_raw(&name).next() {
            h.insert(name, value.clone());
        }
    }
    h.insert_named(&CSeq::new(cseq.cseq, method));
    Some(req)
}
