//! The overlay's side of TURN servers in the ring (`relays.rs`): this
//! node's advertisement, and the ranked set for whoever asks.

use std::time::{Duration, Instant};

use super::Overlay;
use super::relays::{RelayChoice, TurnRecord, rank};
use crate::outbox::Outbox;

impl Overlay {
    /// Advertises this node's TURN server `me` every `every`; `wall_ms`
    /// is the wall clock at `now` (the items' versions).
    pub fn advertise_turn(
        &mut self,
        me: TurnRecord,
        every: Duration,
        wall_ms: u64,
        out: &mut Outbox,
        now: Instant,
    ) {
        self.relays.advertise(me, every, wall_ms, now);
        self.pump(out, now);
    }

    /// How long a set of TURN servers is reused on a node that does not
    /// advertise one (its period, `[turn] advertise_s`).
    pub fn set_turn_period(&mut self, every: Duration, now: Instant) {
        if self.relays.advertised().is_none() {
            self.relays = super::relays::Relays::new(every, now);
        }
    }

    /// The allocations this node's TURN server holds now.
    pub fn set_turn_load(&mut self, allocations: u32) {
        self.relays.set_load(allocations);
    }

    /// Asker `id` wants the TURN servers of the ring: ready when
    /// [`poll_turn_answered`](Self::poll_turn_answered) gives `id`.
    pub fn find_turn(&mut self, id: u64, out: &mut Outbox, now: Instant) {
        self.relays.want(id, now);
        self.pump(out, now);
    }

    pub fn poll_turn_answered(&mut self) -> Option<u64> {
        self.relays.poll_answered()
    }

    /// The TURN servers last seen, ranked from this node.
    pub fn turn_relays(&self, now: Instant) -> RelayChoice {
        let me = self.ring.me().addr;
        rank(self.relays.known(), me, |addr| self.ring.rtt(addr), now)
    }
}
