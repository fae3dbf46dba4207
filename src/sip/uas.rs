//! The 2xx retransmissions of the UAS core (RFC 3261 §13.3.1.4): the
//! transaction layer ends an INVITE server transaction with its 2xx, so
//! the node keeps re-sending the 200 of each call it answers itself
//! (voicemail, listening, a conference) until the caller's ACK arrives:
//! first after T1, the interval doubling up to T2; after 64·T1 without an
//! ACK it gives up and the call is to be ended with a BYE. Over TCP/TLS
//! nothing is re-sent, but the ACK is still awaited for 64·T1. Sans-I/O:
//! time is an argument; the core sends what [`Answers::handle_timeout`]
//! gives and ends the calls given up.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::message::Request;
use super::transaction::{Peer, Timers};

/// Answers awaiting their ACK at most (each holds its 200's bytes).
pub const MAX_PENDING: usize = 10_000;

/// A 200 awaiting its ACK.
struct Pending<T> {
    call: T,
    /// The INVITE answered, for the BYE when no ACK comes.
    invite: Request,
    cseq: u32,
    to: Peer,
    bytes: Bytes,
    interval: Duration,
    next: Instant,
    give_up: Instant,
}

/// What time did: 200s to send again, and calls whose ACK never came.
pub struct Due<T> {
    pub resend: Vec<(Peer, Bytes)>,
    pub given_up: Vec<GivenUp<T>>,
}

/// A call whose 200 was never ACKed: to end with a BYE.
pub struct GivenUp<T> {
    pub call: T,
    pub call_id: String,
    pub invite: Request,
}

/// The answered calls awaiting an ACK, by Call-ID.
pub struct Answers<T> {
    timers: Timers,
    pending: HashMap<String, Pending<T>>,
    deadlines: BTreeSet<(Instant, String)>,
}

impl<T: Copy> Answers<T> {
    pub fn new(timers: Timers) -> Answers<T> {
        Answers {
            timers,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
        }
    }

    /// The 200 `bytes` answering `invite` (its Call-ID `call_id`, CSeq
    /// number `cseq`) went to `to` now. Beyond [`MAX_PENDING`] it is sent
    /// once, as before.
    #[allow(clippy::too_many_arguments)]
    pub fn answered(
        &mut self,
        call: T,
        invite: Request,
        call_id: &str,
        cseq: u32,
        to: Peer,
        bytes: Bytes,
        now: Instant,
    ) {
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(call_id) {
            return;
        }
        self.forget(call_id);
        let t1 = self.timers.t1;
        let give_up = now + 64 * t1;
        let next = if to.transport.reliable() {
            give_up
        } else {
            now + t1
        };
        self.deadlines.insert((next, call_id.to_string()));
        self.pending.insert(
            call_id.to_string(),
            Pending {
                call,
                invite,
                cseq,
                to,
                bytes,
                interval: t1,
                next,
                give_up,
            },
        );
    }

    /// An ACK for `call_id` with CSeq number `cseq`: no more 200s. True
    /// when it was awaited.
    pub fn acked(&mut self, call_id: &str, cseq: u32) -> bool {
        if self.pending.get(call_id).is_some_and(|p| p.cseq == cseq) {
            self.forget(call_id);
            return true;
        }
        false
    }

    /// The call ended otherwise (a BYE came first): stop.
    pub fn forget(&mut self, call_id: &str) {
        if let Some(old) = self.pending.remove(call_id) {
            self.deadlines.remove(&(old.next, call_id.to_string()));
        }
    }

    /// The next retransmission or give-up.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Whether any 200 awaits its ACK.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The 200s due again at `now`, and the calls given up (64·T1 without
    /// an ACK), each with its Call-ID.
    pub fn handle_timeout(&mut self, now: Instant) -> Due<T> {
        let mut due = Due {
            resend: Vec::new(),
            given_up: Vec::new(),
        };
        while let Some((at, call_id)) = self.deadlines.first().cloned() {
            if at > now {
                break;
            }
            self.deadlines.remove(&(at, call_id.clone()));
            let Some(pending) = self.pending.get_mut(&call_id) else {
                continue;
            };
            if now >= pending.give_up {
                if let Some(pending) = self.pending.remove(&call_id) {
                    due.given_up.push(GivenUp {
                        call: pending.call,
                        call_id,
                        invite: pending.invite,
                    });
                }
                continue;
            }
            due.resend.push((pending.to, pending.bytes.clone()));
            pending.interval = (pending.interval * 2).min(self.timers.t2);
            pending.next = (now + pending.interval).min(pending.give_up);
            self.deadlines.insert((pending.next, call_id));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::transaction::TransportKind;

    fn invite() -> Request {
        let text = "INVITE sip:alice@example.test SIP/2.0\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bK1\r\n\
            From: <sip:bob@example.test>;tag=b\r\nTo: <sip:alice@example.test>\r\n\
            Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        match Message::parse(Bytes::from(text)) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn peer(transport: TransportKind) -> Peer {
        Peer {
            transport,
            addr: "127.0.0.1:7000".parse().unwrap(),
        }
    }

    /// Runs the clock from `t0` to each deadline until none is left: the
    /// times (ms after `t0`) of each re-send, and of the give-up.
    fn run(answers: &mut Answers<u8>, t0: Instant) -> (Vec<u64>, Option<u64>) {
        let (mut sent, mut given_up) = (Vec::new(), None);
        while let Some(at) = answers.poll_timeout() {
            let due = answers.handle_timeout(at);
            let ms = at.duration_since(t0).as_millis() as u64;
            sent.extend(due.resend.iter().map(|_| ms));
            if !due.given_up.is_empty() {
                given_up = Some(ms);
            }
        }
        (sent, given_up)
    }

    #[test]
    fn re_sent_t1_doubling_to_t2_then_given_up_at_64_t1() {
        let t0 = Instant::now();
        let mut answers = Answers::new(Timers::default());
        answers.answered(
            1u8,
            invite(),
            "c1",
            1,
            peer(TransportKind::Udp),
            Bytes::from("200"),
            t0,
        );
        let (sent, given_up) = run(&mut answers, t0);
        // T1 = 0.5 s, T2 = 4 s: 0.5, 1.5, 3.5, 7.5, then every 4 s to 32 s.
        assert_eq!(
            sent,
            vec![
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
        assert_eq!(given_up, Some(32_000));
        assert!(answers.is_empty());
    }

    #[test]
    fn an_ack_stops_it_and_a_wrong_cseq_does_not() {
        let t0 = Instant::now();
        let mut answers = Answers::new(Timers::default());
        answers.answered(
            1u8,
            invite(),
            "c1",
            7,
            peer(TransportKind::Udp),
            Bytes::from("200"),
            t0,
        );
        let due = answers.handle_timeout(t0 + Duration::from_millis(500));
        assert_eq!(due.resend.len(), 1);
        assert!(!answers.acked("c1", 8), "an ACK of another INVITE");
        assert!(!answers.acked("c2", 7), "an ACK of another call");
        assert!(answers.acked("c1", 7));
        assert_eq!(answers.poll_timeout(), None);
        assert!(
            answers
                .handle_timeout(t0 + Duration::from_secs(40))
                .given_up
                .is_empty()
        );
    }

    #[test]
    fn over_tcp_nothing_is_re_sent_but_the_ack_is_awaited() {
        let t0 = Instant::now();
        let mut answers = Answers::new(Timers::default());
        answers.answered(
            3u8,
            invite(),
            "c1",
            1,
            peer(TransportKind::Tcp),
            Bytes::from("200"),
            t0,
        );
        let (sent, given_up) = run(&mut answers, t0);
        assert!(sent.is_empty());
        assert_eq!(given_up, Some(32_000));
    }
}
