//! Tests of the transaction layer, driven through its public API with
//! explicit instants; this file holds the shared helpers (peers, parsed
//! messages, draining the queues, running timers).

use super::*;
use crate::sip::message::HeaderAccess;
use bytes::Bytes;
use ezk_sip_types::Name;

mod cancel;
mod client;
mod matching;
mod server;

const UAC: &str = "10.0.0.1:5060";
const UAS: &str = "10.0.0.2:5060";

fn peer(transport: TransportKind, addr: &str) -> Peer {
    Peer {
        transport,
        addr: addr.parse().expect("addr"),
    }
}

fn udp(addr: &str) -> Peer {
    peer(TransportKind::Udp, addr)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn parse(text: &str) -> Message {
    Message::parse(Bytes::from(text.to_string())).expect("test message parses")
}

fn request(method: &str, branch: &str, cseq: u32) -> Request {
    let text = format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5060;branch={branch}\r\n\
         Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKupstream\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:p1.example.com;lr>\r\n\
         Route: <sip:p2.example.com;lr>\r\n\
         From: Alice <sip:alice@example.com>;tag=1928\r\n\
         To: Bob <sip:bob@example.com>\r\n\
         Call-ID: a84b4c76e66710\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    match parse(&text) {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

fn invite(branch: &str) -> Request {
    request("INVITE", branch, 314159)
}

/// A response to `req` with an optional To tag, as a Message.
fn answer(req: &Request, status: u16, to_tag: Option<&str>) -> Message {
    let mut resp = req.response(status);
    if let Some(tag) = to_tag {
        let to = resp.raw(&Name::TO).cloned().expect("to");
        resp.headers.remove(&Name::TO);
        resp.headers.insert(Name::TO, format!("{to};tag={tag}"));
    }
    Message::Response(resp)
}

fn transmits(tx: &mut Transactions) -> Vec<Transmit> {
    std::iter::from_fn(|| tx.poll_transmit()).collect()
}

fn events(tx: &mut Transactions) -> Vec<Event> {
    std::iter::from_fn(|| tx.poll_event()).collect()
}

/// Runs all timers up to and including `until`; returns (time since t0, transmit) pairs.
fn run_until(tx: &mut Transactions, t0: Instant, until: Instant) -> Vec<(Duration, Transmit)> {
    let mut out = Vec::new();
    while let Some(at) = tx.poll_timeout() {
        if at > until {
            break;
        }
        tx.handle_timeout(at);
        for t in transmits(tx) {
            out.push((at - t0, t));
        }
    }
    out
}

fn method_of(m: &Message) -> String {
    match m {
        Message::Request(r) => r.method.to_string(),
        Message::Response(r) => format!("{}", r.status),
    }
}

fn status_of(m: &Message) -> u16 {
    match m {
        Message::Response(r) => r.status,
        Message::Request(_) => panic!("not a response"),
    }
}

fn as_request(m: &Message) -> &Request {
    match m {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

/// Feeds `req` from `from` and expects exactly one new-request event for it.
fn receive_invite(tx: &mut Transactions, req: &Request, from: Peer, now: Instant) -> ServerKey {
    tx.receive(Message::Request(req.clone()), from, now);
    let ev = events(tx);
    let [
        Event::Request {
            key,
            request,
            from: f,
        },
    ] = ev.as_slice()
    else {
        panic!("expected one Request event, got {ev:?}")
    };
    assert_eq!(*f, from);
    assert_eq!(request.method, req.method);
    *key
}
