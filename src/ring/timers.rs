//! The periodic work of a ring: one table of deadlines indexed by [`Timer`],
//! `poll_timeout` as its minimum (and our requests' deadlines), and
//! `handle_timeout` firing what is due.

use std::time::{Duration, Instant};

use super::{NodeId, Ring, RingConfig, State};

/// How often expired items are dropped. Reads already skip expired items;
/// the purge only frees memory, and scans every item, so it runs seldom.
pub const PURGE_EVERY: Duration = Duration::from_secs(30);

/// The ring's timers, in the order they fire when due together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// Try the bootstraps again after a round of them failed (one-shot).
    JoinRetry,
    Stabilize,
    /// Drop expired items.
    Purge,
    FixFingers,
    CheckPredecessor,
    /// Items stored through this node: do their holders live?
    Republish,
    /// Ask a peer we lost sight of where our successor is.
    Merge,
}

impl Timer {
    const COUNT: usize = 7;
    const ALL: [Timer; Timer::COUNT] = [
        Timer::JoinRetry,
        Timer::Stabilize,
        Timer::Purge,
        Timer::FixFingers,
        Timer::CheckPredecessor,
        Timer::Republish,
        Timer::Merge,
    ];

    /// The period of a periodic timer; `None` for a one-shot.
    fn period(self, config: &RingConfig) -> Option<Duration> {
        match self {
            Timer::JoinRetry => None,
            Timer::Stabilize => Some(config.stabilize_every),
            Timer::Purge => Some(PURGE_EVERY),
            Timer::FixFingers => Some(config.fix_fingers_every),
            Timer::CheckPredecessor => Some(config.check_predecessor_every),
            Timer::Republish => Some(config.republish_every),
            Timer::Merge => Some(config.merge_every),
        }
    }
}

/// When each timer is next due; `None`: not armed.
pub(super) struct Timers {
    at: [Option<Instant>; Timer::COUNT],
}

impl Timers {
    /// The periodic timers armed, each at a phase of its period taken from a
    /// byte of the Node-ID: the timers of different nodes spread over the
    /// period, deterministically.
    pub(super) fn new(me: NodeId, config: &RingConfig, now: Instant) -> Timers {
        let phase = |period: Duration, salt: usize| {
            let frac = me.0[salt] as f64 / 256.0;
            now + period.mul_f64(frac)
        };
        let mut timers = Timers {
            at: [None; Timer::COUNT],
        };
        timers.set(Timer::Stabilize, phase(config.stabilize_every, 0));
        timers.set(Timer::FixFingers, phase(config.fix_fingers_every, 1));
        timers.set(
            Timer::CheckPredecessor,
            phase(config.check_predecessor_every, 2),
        );
        timers.set(Timer::Purge, now + PURGE_EVERY);
        timers.set(Timer::Republish, phase(config.republish_every, 3));
        timers.set(Timer::Merge, phase(config.merge_every, 4));
        timers
    }

    pub(super) fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer as usize] = Some(at);
    }

    pub(super) fn clear(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    fn due(&self, timer: Timer, now: Instant) -> bool {
        self.at[timer as usize].is_some_and(|at| at <= now)
    }

    /// The earliest armed timer.
    fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }
}

impl Ring {
    /// Timers: request timeouts, stabilize, fix-fingers, check-predecessor,
    /// expiry of items.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Left {
            return;
        }
        while let Some(&(deadline, id)) = self.requests.deadlines.iter().next() {
            if deadline > now {
                break;
            }
            if let Some(entry) = self.take_pending(id) {
                self.expire(id, &entry.pending);
                self.on_failure(entry.pending, now);
            } else {
                self.requests.deadlines.remove(&(deadline, id));
            }
        }
        self.handle_lates(now);
        if self.state != State::Active {
            return;
        }
        self.client_tick(now);
        for timer in Timer::ALL {
            if !self.timers.due(timer, now) {
                continue;
            }
            match timer.period(&self.config) {
                Some(period) => self.timers.set(timer, now + period),
                None => self.timers.clear(timer),
            }
            if self.client.is_some() && !matches!(timer, Timer::Purge | Timer::Republish) {
                // A client keeps no ring tables: no maintenance.
                continue;
            }
            self.fire(timer, now);
        }
        self.resync(now);
    }

    fn fire(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::JoinRetry => self.try_join(now),
            Timer::Stabilize => {
                if !self.rounds.stabilizing {
                    self.stabilize(now);
                }
            }
            Timer::Purge => self.purge(now),
            Timer::FixFingers => {
                if !self.rounds.fixing {
                    self.fix_fingers(now);
                }
            }
            Timer::CheckPredecessor => {
                if !self.rounds.checking {
                    self.check_predecessor(now);
                }
            }
            Timer::Republish => self.check_kept(now),
            Timer::Merge => self.merge_check(now),
        }
    }

    /// When [`Ring::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Left {
            return None;
        }
        let request = self.requests.deadlines.iter().next().map(|(t, _)| *t);
        let late = self.requests.lates.iter().next().map(|(t, _)| *t);
        let request = request.into_iter().chain(late).min();
        if self.state == State::Leaving {
            return request;
        }
        self.timers
            .next()
            .into_iter()
            .chain(request)
            .chain(self.client_deadline())
            .min()
    }
}
