//! TEMPORARY stub of the transaction layer API (replaced by the real one).
#![allow(unused)]
use crate::sip::message::{Message, Request, Response};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Udp,
    Tcp,
    Tls,
}
impl TransportKind {
    pub fn reliable(self) -> bool {
        !matches!(self, TransportKind::Udp)
    }
}
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: TransportKind,
    pub addr: SocketAddr,
}
#[derive(Clone, Debug)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}
impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey(pub u64);
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(pub u64);
pub struct Transmit {
    pub to: Peer,
    pub message: Message,
}
pub enum Event {
    Request {
        key: ServerKey,
        request: Request,
        from: Peer,
    },
    Ack {
        request: Request,
        from: Peer,
    },
    Cancel {
        invite: ServerKey,
        request: Request,
        from: Peer,
    },
    Response {
        key: ClientKey,
        response: Response,
    },
    Timeout {
        key: ClientKey,
    },
    StrayResponse {
        response: Response,
        from: Peer,
    },
}
pub struct Transactions;
impl Transactions {
    pub fn new(timers: Timers) -> Self {
        todo!()
    }
    pub fn receive(&mut self, message: Message, from: Peer, now: Instant) {
        todo!()
    }
    pub fn send_request(&mut self, request: Request, to: Peer, now: Instant) -> ClientKey {
        todo!()
    }
    pub fn cancel(&mut self, key: ClientKey, now: Instant) {
        todo!()
    }
    pub fn respond(&mut self, key: ServerKey, response: Response, now: Instant) {
        todo!()
    }
    pub fn handle_timeout(&mut self, now: Instant) {
        todo!()
    }
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        todo!()
    }
    pub fn poll_event(&mut self) -> Option<Event> {
        todo!()
    }
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
    pub fn len(&self) -> usize {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        todo!()
    }
}
pub fn new_branch() -> String {
    todo!()
}
