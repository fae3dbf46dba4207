//! Scripted SIP phones for the [`World`](super::World): REGISTER (refreshed
//! at half the expiry), calls as caller (INVITE, ACK for every final
//! response, CANCEL, BYE after a hold time) and as callee (180 then 200
//! after delays, busy 486, or ringing for ever), and MESSAGE (answered 200).
//!
//! Requests are written by hand with `format!` and what arrives is read with
//! [`Message::parse`]. Phones do not retransmit: the World gives every link
//! with a phone at one end no loss (only delay), so a phone's request or
//! response is never lost; a request that arrives twice (a node's
//! retransmission) is answered again with the last response.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ezk_sip_types::{Method, Name};

use crate::sip::message::{HeaderAccess, Message, Request, Response, raw_tag};

/// What a phone does with an incoming INVITE.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Answer {
    /// 180 after `ring`, then 200 `answer` after the INVITE came.
    Ring { ring: Duration, answer: Duration },
    /// 486 Busy Here at once.
    Busy,
    /// 180 at once, then nothing (until CANCEL).
    RingForever,
}

impl Default for Answer {
    fn default() -> Self {
        Answer::Ring {
            ring: Duration::from_millis(20),
            answer: Duration::from_millis(500),
        }
    }
}

/// A call this phone placed, as the phone saw it.
#[derive(Clone, Debug, Default)]
pub struct Call {
    pub target: String,
    pub call_id: String,
    pub started: Duration,
    /// Provisional statuses in the order they came.
    pub provisional: Vec<u16>,
    /// The first final response.
    pub status: Option<u16>,
    pub final_at: Option<Duration>,
    /// Further 2xx from other forks (answered with ACK and BYE).
    pub extra_2xx: u32,
    pub cancel_status: Option<u16>,
    pub bye_status: Option<u16>,
    /// Hang up this long after the 200 (None: keep the call).
    pub hold: Option<Duration>,
    branch: String,
    from_tag: String,
    to_tag: Option<String>,
    route: Vec<String>,
    remote_target: Option<String>,
}

/// A call that reached this phone.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub call_id: String,
    pub at: Duration,
    /// The last response sent, and its status.
    pub last: Option<(u16, Bytes)>,
    pub cancelled: bool,
    pub acked: bool,
    pub bye: bool,
    request: Request,
    from: SocketAddr,
    to_tag: String,
}

/// A MESSAGE this phone sent, and its answer.
#[derive(Clone, Debug)]
pub struct Sent {
    pub target: String,
    pub call_id: String,
    pub at: Duration,
    pub status: Option<u16>,
}

/// What a phone asks the World to do after an input.
#[derive(Default)]
pub(super) struct Effects {
    pub sends: Vec<(SocketAddr, Bytes)>,
    pub timers: Vec<(Duration, Timer)>,
    pub outcomes: Vec<String>,
}

/// A phone's own timer.
#[derive(Clone, Copy, Debug)]
pub enum Timer {
    Refresh(u64),
    Ring(usize),
    Answer(usize),
    Hangup(usize),
}

/// One scripted user agent.
#[derive(Clone, Debug)]
pub struct Phone {
    pub addr: SocketAddr,
    pub user: String,
    pub domain: String,
    /// The node it sends its requests to (its outbound proxy).
    pub proxy: SocketAddr,
    pub answer: Answer,
    /// Expires asked for in REGISTERs.
    pub expires: u32,
    /// `q` of the Contact, when set.
    pub q: Option<f32>,
    /// REGISTER answers: time and status.
    pub registrations: Vec<(Duration, u16)>,
    pub calls: Vec<Call>,
    pub incoming: Vec<Incoming>,
    pub sent: Vec<Sent>,
    /// MESSAGEs received.
    pub messages_in: u32,
    /// Requests received that were retransmissions.
    pub duplicates: u32,
    reg_cseq: u32,
    /// Bumped on every (un)REGISTER so that a stale refresh timer does nothing.
    reg_generation: u64,
    counter: u64,
}

impl Phone {
    pub fn new(addr: SocketAddr, user: &str, domain: &str, proxy: SocketAddr) -> Phone {
        Phone {
            addr,
            user: user.to_string(),
            domain: domain.to_string(),
            proxy,
            answer: Answer::default(),
            expires: 600,
            q: None,
            registrations: Vec::new(),
            calls: Vec::new(),
            incoming: Vec::new(),
            sent: Vec::new(),
            messages_in: 0,
            duplicates: 0,
            reg_cseq: 0,
            reg_generation: 0,
            counter: 0,
        }
    }

    /// The last REGISTER answer was 200 (and not an un-REGISTER).
    pub fn is_registered(&self) -> bool {
        self.reg_generation > 0 && self.registrations.last().is_some_and(|(_, s)| *s == 200)
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn via(&mut self) -> (String, String) {
        let n = self.next();
        let branch = format!("z9hG4bK-{}-{n}", self.user);
        (format!("SIP/2.0/UDP {};branch={branch}", self.addr), branch)
    }

    fn me(&self) -> String {
        format!("<sip:{}@{}>", self.user, self.domain)
    }

    fn contact(&self) -> String {
        let q = self.q.map(|q| format!(";q={q}")).unwrap_or_default();
        format!("<sip:{}@{}>{q}", self.user, self.addr)
    }

    pub(super) fn register(&mut self, expires: u32, fx: &mut Effects) {
        self.reg_cseq += 1;
        self.reg_generation += 1;
        self.expires = if expires == 0 { self.expires } else { expires };
        let (via, _) = self.via();
        let text = format!(
            "REGISTER sip:{domain} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
             From: {me};tag=r{user}\r\nTo: {me}\r\nCall-ID: reg-{user}-{addr}\r\n\
             CSeq: {cseq} REGISTER\r\nContact: {contact}\r\nExpires: {expires}\r\n\
             Content-Length: 0\r\n\r\n",
            domain = self.domain,
            me = self.me(),
            user = self.user,
            addr = self.addr,
            cseq = self.reg_cseq,
            contact = self.contact(),
        );
        if expires > 0 {
            fx.timers.push((
                Duration::from_secs(u64::from(expires) / 2),
                Timer::Refresh(self.reg_generation),
            ));
        } else {
            // No refresh after an un-REGISTER.
            self.reg_generation = 0;
        }
        fx.sends.push((self.proxy, Bytes::from(text)));
    }

    /// Places a call to `target` (a SIP URI); returns its index in [`Phone::calls`].
    pub(super) fn call(
        &mut self,
        target: &str,
        hold: Option<Duration>,
        now: Duration,
        fx: &mut Effects,
    ) -> usize {
        let n = self.next();
        let call_id = format!("call-{}-{n}@{}", self.user, self.addr.ip());
        let (via, branch) = self.via();
        let from_tag = format!("f{}{n}", self.user);
        let text = format!(
            "INVITE {target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
             From: {me};tag={from_tag}\r\nTo: <{target}>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:{user}@{addr}>\r\nContent-Length: 0\r\n\r\n",
            me = self.me(),
            user = self.user,
            addr = self.addr,
        );
        fx.sends.push((self.proxy, Bytes::from(text)));
        self.calls.push(Call {
            target: target.to_string(),
            call_id,
            started: now,
            hold,
            branch,
            from_tag,
            ..Call::default()
        });
        self.calls.len() - 1
    }

    /// CANCELs call `index` (only while no final response came).
    pub(super) fn cancel(&mut self, index: usize, fx: &mut Effects) {
        let Some(call) = self.calls.get(index) else {
            return;
        };
        if call.status.is_some() {
            return;
        }
        let text = format!(
            "CANCEL {target} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: {me};tag={tag}\r\nTo: <{target}>\r\n\
             Call-ID: {cid}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
            target = call.target,
            addr = self.addr,
            branch = call.branch,
            me = self.me(),
            tag = call.from_tag,
            cid = call.call_id,
        );
        fx.sends.push((self.proxy, Bytes::from(text)));
    }

    pub(super) fn message(&mut self, target: &str, body: &str, now: Duration, fx: &mut Effects) {
        let n = self.next();
        let call_id = format!("msg-{}-{n}@{}", self.user, self.addr.ip());
        let (via, _) = self.via();
        let text = format!(
            "MESSAGE {target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
             From: {me};tag=m{n}\r\nTo: <{target}>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\n\r\n{body}",
            me = self.me(),
            len = body.len(),
        );
        fx.sends.push((self.proxy, Bytes::from(text)));
        self.sent.push(Sent {
            target: target.to_string(),
            call_id,
            at: now,
            status: None,
        });
    }

    pub(super) fn timer(&mut self, timer: Timer, now: Duration, fx: &mut Effects) {
        match timer {
            Timer::Refresh(generation) => {
                if generation == self.reg_generation {
                    self.register(self.expires, fx);
                }
            }
            Timer::Ring(i) => {
                if self.incoming[i].last.is_none() {
                    self.respond_incoming(i, 180, fx);
                }
            }
            Timer::Answer(i) => {
                let pending = &self.incoming[i];
                if !pending.cancelled && pending.last.as_ref().is_none_or(|(s, _)| *s < 200) {
                    self.respond_incoming(i, 200, fx);
                    fx.outcomes.push(format!(
                        "{} answers {}",
                        self.user, self.incoming[i].call_id
                    ));
                }
            }
            Timer::Hangup(i) => self.bye(i, now, fx),
        }
    }

    fn bye(&mut self, index: usize, _now: Duration, fx: &mut Effects) {
        let call = &self.calls[index];
        let (Some(target), Some(tag)) = (call.remote_target.clone(), call.to_tag.clone()) else {
            return;
        };
        self.send_in_dialog(index, "BYE", 2, &target, &tag, fx);
    }

    /// An in-dialog request of call `index` (the ACK of a 2xx, BYE) to
    /// `target`, along the call's route set, on a transaction of its own.
    fn send_in_dialog(
        &mut self,
        index: usize,
        method: &str,
        cseq: u32,
        target: &str,
        tag: &str,
        fx: &mut Effects,
    ) {
        let (via, _) = self.via();
        let call = &self.calls[index];
        let routes: String = call
            .route
            .iter()
            .map(|r| format!("Route: {r}\r\n"))
            .collect();
        let text = format!(
            "{method} {target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n{routes}\
             From: {me};tag={from_tag}\r\nTo: <{to}>;tag={tag}\r\nCall-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            me = self.me(),
            from_tag = call.from_tag,
            to = call.target,
            cid = call.call_id,
        );
        let next = first_hop(&call.route, target).unwrap_or(self.proxy);
        fx.sends.push((next, Bytes::from(text)));
    }

    /// A datagram from `from`.
    pub(super) fn receive(
        &mut self,
        bytes: Bytes,
        from: SocketAddr,
        now: Duration,
        fx: &mut Effects,
    ) {
        match Message::parse(bytes) {
            Ok(Message::Request(request)) => self.on_request(request, from, now, fx),
            Ok(Message::Response(response)) => self.on_response(response, now, fx),
            Err(error) => fx
                .outcomes
                .push(format!("{} unparsable: {error}", self.user)),
        }
    }

    fn on_response(&mut self, response: Response, now: Duration, fx: &mut Effects) {
        let Ok(cseq) = response.cseq() else { return };
        let call_id = response
            .raw(&Name::CALL_ID)
            .map(|c| c.trim().to_string())
            .unwrap_or_default();
        let status = response.status;
        if cseq.method == Method::REGISTER {
            self.registrations.push((now, status));
            fx.outcomes.push(format!("{} REGISTER {status}", self.user));
            return;
        }
        if cseq.method == Method::MESSAGE {
            if let Some(sent) = self.sent.iter_mut().find(|s| s.call_id == call_id)
                && sent.status.is_none()
            {
                sent.status = Some(status);
                fx.outcomes
                    .push(format!("{} MESSAGE {call_id} {status}", self.user));
            }
            return;
        }
        let Some(index) = self.calls.iter().position(|c| c.call_id == call_id) else {
            return;
        };
        let user = self.user.clone();
        let call = &mut self.calls[index];
        match cseq.method {
            Method::CANCEL => call.cancel_status = Some(status),
            Method::BYE => {
                if call.bye_status.is_none() {
                    fx.outcomes.push(format!("{user} BYE {call_id} {status}"));
                }
                call.bye_status = Some(status);
            }
            Method::INVITE if status < 200 => {
                call.provisional.push(status);
                if status > 100 {
                    fx.outcomes.push(format!("{user} call {call_id} {status}"));
                }
            }
            Method::INVITE => {
                let tag = response.raw(&Name::TO).and_then(|t| raw_tag(t));
                if status >= 300 {
                    // The ACK of a non-2xx belongs to the INVITE transaction
                    // (same branch, hop by hop to the proxy).
                    let to = response
                        .raw(&Name::TO)
                        .map(|t| t.to_string())
                        .unwrap_or_default();
                    let text = format!(
                        "ACK {target} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch={branch}\r\n\
                         Max-Forwards: 70\r\nFrom: <sip:{user}@{domain}>;tag={from_tag}\r\n\
                         To: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                        target = call.target,
                        addr = self.addr,
                        branch = call.branch,
                        domain = self.domain,
                        from_tag = call.from_tag,
                    );
                    fx.sends.push((self.proxy, Bytes::from(text)));
                    if call.status.is_none() {
                        call.status = Some(status);
                        call.final_at = Some(now);
                        fx.outcomes.push(format!("{user} call {call_id} {status}"));
                    }
                    return;
                }
                let first = call.status.is_none();
                let same = call.to_tag.is_some() && call.to_tag == tag;
                if !first && !same {
                    call.extra_2xx += 1;
                    fx.outcomes.push(format!("{user} call {call_id} extra 2xx"));
                }
                if first {
                    call.status = Some(status);
                    call.final_at = Some(now);
                    call.to_tag = tag.clone();
                    let mut route: Vec<String> = response
                        .header_map()
                        .get_raw(&Name::RECORD_ROUTE)
                        .flat_map(|v| {
                            v.split(',')
                                .map(|s| s.trim().to_string())
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    route.reverse();
                    call.route = route;
                    call.remote_target = response.raw(&Name::CONTACT).map(|c| {
                        c.trim()
                            .trim_start_matches('<')
                            .split('>')
                            .next()
                            .unwrap_or("")
                            .to_string()
                    });
                    fx.outcomes.push(format!("{user} call {call_id} {status}"));
                    if let Some(hold) = call.hold {
                        fx.timers.push((hold, Timer::Hangup(index)));
                    }
                }
                self.ack_2xx(index, tag.as_deref(), fx);
                if !first && !same {
                    // A second answer from another fork: we keep the first.
                    let (via, _) = self.via();
                    let call = &self.calls[index];
                    let text = format!(
                        "BYE {target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
                         From: {me};tag={from_tag}\r\nTo: <{to}>;tag={tag}\r\nCall-ID: {call_id}\r\n\
                         CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
                        target = call.target,
                        me = self.me(),
                        from_tag = call.from_tag,
                        to = call.target,
                        tag = tag.unwrap_or_default(),
                    );
                    fx.sends.push((self.proxy, Bytes::from(text)));
                }
            }
            _ => {}
        }
    }

    /// The ACK of a 2xx: its own transaction, along the route set.
    fn ack_2xx(&mut self, index: usize, tag: Option<&str>, fx: &mut Effects) {
        let call = &self.calls[index];
        let target = call
            .remote_target
            .clone()
            .unwrap_or_else(|| call.target.clone());
        self.send_in_dialog(index, "ACK", 1, &target, tag.unwrap_or_default(), fx);
    }

    fn on_request(&mut self, request: Request, from: SocketAddr, now: Duration, fx: &mut Effects) {
        let call_id = request
            .raw(&Name::CALL_ID)
            .map(|c| c.trim().to_string())
            .unwrap_or_default();
        let existing = self.incoming.iter().position(|i| i.call_id == call_id);
        let reply =
            |request: &Request, status: u16| -> Bytes { request.final_response(status).to_bytes() };
        match request.method {
            Method::INVITE => {
                if let Some(i) = existing {
                    self.duplicates += 1;
                    if let Some((_, bytes)) = &self.incoming[i].last {
                        fx.sends.push((from, bytes.clone()));
                    }
                    return;
                }
                let n = self.next();
                self.incoming.push(Incoming {
                    call_id: call_id.clone(),
                    at: now,
                    last: None,
                    cancelled: false,
                    acked: false,
                    bye: false,
                    request,
                    from,
                    to_tag: format!("t{}{n}", self.user),
                });
                let i = self.incoming.len() - 1;
                fx.outcomes
                    .push(format!("{} rings for {call_id}", self.user));
                match self.answer {
                    Answer::Busy => self.respond_incoming(i, 486, fx),
                    Answer::RingForever => self.respond_incoming(i, 180, fx),
                    Answer::Ring { ring, answer } => {
                        fx.timers.push((ring, Timer::Ring(i)));
                        fx.timers.push((answer.max(ring), Timer::Answer(i)));
                    }
                }
            }
            Method::CANCEL => {
                fx.sends.push((from, reply(&request, 200)));
                if let Some(i) = existing
                    && self.incoming[i].last.as_ref().is_none_or(|(s, _)| *s < 200)
                {
                    self.incoming[i].cancelled = true;
                    fx.outcomes
                        .push(format!("{} cancelled {call_id}", self.user));
                    self.respond_incoming(i, 487, fx);
                }
            }
            Method::ACK => {
                if let Some(i) = existing {
                    self.incoming[i].acked = true;
                }
            }
            Method::BYE => {
                fx.sends.push((from, reply(&request, 200)));
                if let Some(i) = existing {
                    self.incoming[i].bye = true;
                    fx.outcomes
                        .push(format!("{} hung up on {call_id}", self.user));
                }
            }
            Method::MESSAGE => {
                self.messages_in += 1;
                fx.sends.push((from, reply(&request, 200)));
            }
            _ => fx.sends.push((from, reply(&request, 200))),
        }
    }

    /// Sends `status` for incoming call `i` (with our To tag and Contact).
    fn respond_incoming(&mut self, i: usize, status: u16, fx: &mut Effects) {
        let contact = format!("<sip:{}@{}>", self.user, self.addr);
        let incoming = &mut self.incoming[i];
        let mut response = incoming.request.response(status);
        let to = response
            .raw(&Name::TO)
            .map(|t| t.to_string())
            .unwrap_or_default();
        response.headers.remove(&Name::TO);
        response
            .headers
            .insert(Name::TO, format!("{to};tag={}", incoming.to_tag));
        if status < 300 {
            response.headers.insert(Name::CONTACT, contact);
            for rr in incoming.request.header_map().get_raw(&Name::RECORD_ROUTE) {
                response.headers.insert(Name::RECORD_ROUTE, rr.clone());
            }
        }
        let bytes = response.to_bytes();
        incoming.last = Some((status, bytes.clone()));
        fx.sends.push((incoming.from, bytes));
    }
}

/// Where a request along `route` (or, with none, to `target`) goes first.
fn first_hop(route: &[String], target: &str) -> Option<SocketAddr> {
    uri_addr(route.first().map(String::as_str).unwrap_or(target))
}

/// The address in a SIP URI like `<sip:user@127.0.0.1:5060;lr>`.
pub fn uri_addr(text: &str) -> Option<SocketAddr> {
    let text = text.trim().trim_start_matches('<');
    let rest = text
        .strip_prefix("sip:")
        .or_else(|| text.strip_prefix("sips:"))?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let end = rest.find([';', '>', '?']).unwrap_or(rest.len());
    let host = &rest[..end];
    host.parse()
        .ok()
        .or_else(|| format!("{host}:5060").parse().ok())
}
