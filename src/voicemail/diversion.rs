//! Diversion to voicemail (issue 12): the INVITEs to users with live
//! bindings that voicemail may still take, and when. A call is watched
//! from the moment the proxy forks it; voicemail takes it when no contact
//! sent a final answer within `no_answer_s` ([`Diversions::due`]) or when
//! the proxy's best final answer is 486, 408 or 480
//! ([`Diversions::on_failure`]); a 2xx, a 6xx or the caller's CANCEL end
//! the watch ([`Diversions::ended`]). Sans-I/O: time is an argument; the
//! core acts on the answers (`core/diversion.rs`).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::registrar::binding::Aor;
use crate::sip::message::Request;
use crate::sip::transaction::ServerKey;

/// Calls watched at most; beyond, a new call is forwarded without
/// diversion (each holds a copy of its INVITE, at most 64 KB).
pub const MAX_WATCHED: usize = 10_000;

/// The final statuses voicemail answers instead of relaying (RFC 3261:
/// Busy Here, Request Timeout, Temporarily Unavailable).
pub fn diverts(status: u16) -> bool {
    matches!(status, 408 | 480 | 486)
}

/// A call voicemail may take: the INVITE as it arrived (before the proxy
/// or the media relay changed it) and whose mailbox it is.
struct Watched {
    request: Request,
    aor: Aor,
    deadline: Option<Instant>,
}

/// The calls being watched, and their no-answer deadlines.
pub struct Diversions {
    no_answer: Option<Duration>,
    calls: HashMap<ServerKey, Watched>,
    deadlines: BTreeSet<(Instant, ServerKey)>,
}

impl Diversions {
    /// `no_answer`: how long a call rings before voicemail takes it
    /// (`None`: only on 486/408/480).
    pub fn new(no_answer: Option<Duration>) -> Diversions {
        Diversions {
            no_answer,
            calls: HashMap::new(),
            deadlines: BTreeSet::new(),
        }
    }

    /// The proxy forks `request` (server transaction `key`) to `aor`'s
    /// contacts now. False when too many calls are watched already.
    pub fn watch(&mut self, key: ServerKey, request: Request, aor: Aor, now: Instant) -> bool {
        if self.calls.len() >= MAX_WATCHED && !self.calls.contains_key(&key) {
            return false;
        }
        let deadline = self.no_answer.map(|d| now + d);
        if let Some(at) = deadline {
            self.deadlines.insert((at, key));
        }
        if let Some(old) = self.calls.insert(
            key,
            Watched {
                request,
                aor,
                deadline,
            },
        ) && let Some(at) = old.deadline
            && Some(at) != deadline
        {
            self.deadlines.remove(&(at, key));
        }
        true
    }

    /// Whether `key` is watched.
    pub fn is_watched(&self, key: ServerKey) -> bool {
        self.calls.contains_key(&key)
    }

    /// The fork of `key` ended with this final status (the best of its
    /// branches): the INVITE and mailbox for voicemail when the status is
    /// one voicemail takes, else `None` (relay it). Either way the watch
    /// ends.
    pub fn on_failure(&mut self, key: ServerKey, status: u16) -> Option<(Request, Aor)> {
        let watched = self.remove(key)?;
        diverts(status).then_some((watched.request, watched.aor))
    }

    /// The call ended otherwise (a 2xx or 6xx relayed, the caller's
    /// CANCEL): nothing more to watch.
    pub fn ended(&mut self, key: ServerKey) {
        self.remove(key);
    }

    /// The earliest no-answer deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The calls whose no-answer time is up at `now`: each with its
    /// INVITE and mailbox (the watch ends).
    pub fn due(&mut self, now: Instant) -> Vec<(ServerKey, Request, Aor)> {
        let mut due = Vec::new();
        while let Some(&(at, key)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.remove(&(at, key));
            if let Some(watched) = self.calls.remove(&key) {
                due.push((key, watched.request, watched.aor));
            }
        }
        due
    }

    /// Calls watched now.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    fn remove(&mut self, key: ServerKey) -> Option<Watched> {
        let watched = self.calls.remove(&key)?;
        if let Some(at) = watched.deadline {
            self.deadlines.remove(&(at, key));
        }
        Some(watched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;

    fn invite() -> Request {
        let text = "INVITE sip:alice@example.test SIP/2.0\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
            From: <sip:bob@example.test>;tag=b\r\nTo: <sip:alice@example.test>\r\n\
            Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        match Message::parse(bytes::Bytes::from(text)) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn aor() -> Aor {
        Aor::new("alice", "example.test")
    }

    #[test]
    fn no_answer_is_due_at_its_time_and_not_before() {
        let t0 = Instant::now();
        let mut d = Diversions::new(Some(Duration::from_secs(20)));
        assert!(d.watch(ServerKey(1), invite(), aor(), t0));
        assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_secs(20)));
        assert!(d.due(t0 + Duration::from_secs(19)).is_empty());
        let due = d.due(t0 + Duration::from_secs(20));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, ServerKey(1));
        assert_eq!(due[0].2, aor());
        assert!(d.is_empty());
        assert_eq!(d.poll_timeout(), None);
        assert!(d.on_failure(ServerKey(1), 486).is_none(), "taken once");
    }

    #[test]
    fn failures_divert_and_other_answers_do_not() {
        let t0 = Instant::now();
        let mut d = Diversions::new(None);
        for (key, status, taken) in [
            (1, 486, true),
            (2, 408, true),
            (3, 480, true),
            (4, 404, false),
            (5, 500, false),
            (6, 603, false),
        ] {
            d.watch(ServerKey(key), invite(), aor(), t0);
            assert_eq!(
                d.on_failure(ServerKey(key), status).is_some(),
                taken,
                "{status}"
            );
        }
        assert!(d.is_empty());
        assert_eq!(d.poll_timeout(), None, "no-answer off: no deadline");
    }

    #[test]
    fn an_answered_or_cancelled_call_is_forgotten_with_its_deadline() {
        let t0 = Instant::now();
        let mut d = Diversions::new(Some(Duration::from_secs(2)));
        d.watch(ServerKey(1), invite(), aor(), t0);
        d.watch(ServerKey(2), invite(), aor(), t0 + Duration::from_secs(1));
        d.ended(ServerKey(1));
        assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_secs(3)));
        assert!(d.due(t0 + Duration::from_secs(2)).is_empty());
        assert_eq!(d.due(t0 + Duration::from_secs(3)).len(), 1);
    }
}
