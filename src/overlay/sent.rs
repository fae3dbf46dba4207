//! Our ring requests in flight as SIP client transactions: which
//! transaction carries which ring request, both ways, so that an answer
//! reaches the ring and a request the ring gave up on
//! ([`Ring::poll_given_up`](crate::ring::Ring::poll_given_up)) stops its
//! transaction at once instead of retransmitting it until Timer F.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::ring::RequestId;
use crate::sip::transaction::ClientKey;

/// How long a transaction given up on still goes on (Timer E included) and
/// takes a late answer, which tells the ring its peer lives after all.
/// With 1 s and no retransmission in it, a ring of 100 processes on a
/// loaded 2-core machine fell apart: under load answers come later than
/// the ring's round-trip timeouts, and a peer whose answer no longer came
/// stayed marked dead until its successor lists emptied. 4 s keeps three
/// retransmissions (at 0.5, 1.5 and 3.5 s) of the eleven Timer F allows.
pub const GRACE: Duration = Duration::from_secs(4);

/// The ring requests travelling as client transactions.
#[derive(Default)]
pub struct SentRequests {
    by_key: HashMap<ClientKey, (RequestId, SocketAddr)>,
    by_id: HashMap<RequestId, ClientKey>,
    /// Given up on: forgotten at the end of their grace, in that order.
    given_up: VecDeque<(Instant, ClientKey)>,
}

impl SentRequests {
    /// Ring request `id` to `to` goes out as transaction `key`.
    pub fn insert(&mut self, key: ClientKey, id: RequestId, to: SocketAddr) {
        self.by_key.insert(key, (id, to));
        self.by_id.insert(id, key);
    }

    /// The ring request transaction `key` carries, if it is ours.
    pub fn get(&self, key: ClientKey) -> Option<(RequestId, SocketAddr)> {
        self.by_key.get(&key).copied()
    }

    /// Transaction `key` ended (answered or failed): forgets it.
    pub fn remove(&mut self, key: ClientKey) -> Option<(RequestId, SocketAddr)> {
        let (id, to) = self.by_key.remove(&key)?;
        if self.by_id.get(&id) == Some(&key) {
            self.by_id.remove(&id);
        }
        Some((id, to))
    }

    /// The ring gave up on request `id`: the transaction to stop, if it is
    /// still running. Its answer is still taken for [`GRACE`].
    pub fn give_up(&mut self, id: RequestId, now: Instant) -> Option<ClientKey> {
        let key = self.by_id.remove(&id)?;
        self.given_up.push_back((now + GRACE, key));
        Some(key)
    }

    /// Forgets the transactions given up on whose grace is over (the
    /// transaction layer ended them without an event).
    pub fn purge(&mut self, now: Instant) {
        while let Some(&(until, key)) = self.given_up.front() {
            if until > now {
                break;
            }
            self.given_up.pop_front();
            self.by_key.remove(&key);
        }
    }

    /// Transactions in flight (given up on or not).
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_given_up_on_is_forgotten_after_its_grace() {
        let t0 = Instant::now();
        let to: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
        let mut sent = SentRequests::default();
        sent.insert(ClientKey(7), RequestId(1), to);
        sent.insert(ClientKey(8), RequestId(2), to);
        assert_eq!(sent.give_up(RequestId(1), t0), Some(ClientKey(7)));
        assert_eq!(sent.give_up(RequestId(1), t0), None, "once");
        assert_eq!(sent.give_up(RequestId(9), t0), None, "not ours");
        sent.purge(t0 + GRACE / 2);
        assert_eq!(
            sent.get(ClientKey(7)),
            Some((RequestId(1), to)),
            "a late answer still counts"
        );
        sent.purge(t0 + GRACE);
        assert_eq!(sent.get(ClientKey(7)), None);
        assert_eq!(sent.remove(ClientKey(8)), Some((RequestId(2), to)));
        assert_eq!(sent.give_up(RequestId(2), t0), None, "already answered");
        assert!(sent.is_empty());
    }
}
