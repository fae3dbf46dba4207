//! The core's part in TURN servers advertised in the ring
//! (`overlay/relays.rs`): this node's advertisement and its load, and the
//! answers to whoever asks for a relay (`GET /turn`, `p2psip turn find`).

use std::time::{Duration, Instant};

use super::{Core, Output};
use crate::overlay::relays::{RelayChoice, TurnRecord};

impl Core {
    /// Advertises this node's TURN server in the ring every `every`
    /// (`wall_ms`: the wall clock at `now`).
    pub fn advertise_turn(&mut self, me: TurnRecord, every: Duration, wall_ms: u64, now: Instant) {
        if let Some(overlay) = self.location.overlay() {
            overlay.advertise_turn(me, every, wall_ms, &mut self.out, now);
        }
        self.process(now);
    }

    /// How long a set of TURN servers found in the ring is reused.
    pub fn set_turn_period(&mut self, every: Duration, now: Instant) {
        if let Some(overlay) = self.location.overlay() {
            overlay.set_turn_period(every, now);
        }
    }

    pub(super) fn on_turn_load(&mut self, allocations: u32) {
        tracing::debug!(allocations, "TURN load for the ring's advertisement");
        if let Some(overlay) = self.location.overlay() {
            overlay.set_turn_load(allocations);
        }
    }

    /// Asker `id` wants a relay: answered with [`Output::TurnFound`].
    pub(super) fn find_turn(&mut self, id: u64, now: Instant) {
        match self.location.overlay() {
            Some(overlay) => overlay.find_turn(id, &mut self.out, now),
            None => self.outputs.push_back(Output::TurnFound {
                id,
                choice: RelayChoice::default(),
            }),
        }
    }

    /// The answers ready, as outputs; true when there was one.
    pub(super) fn turn_answers(&mut self, now: Instant) -> bool {
        let Some(overlay) = self.location.overlay() else {
            return false;
        };
        let mut any = false;
        while let Some(id) = overlay.poll_turn_answered() {
            any = true;
            let choice = overlay.turn_relays(now);
            self.outputs.push_back(Output::TurnFound { id, choice });
        }
        any
    }

    /// The TURN servers last seen in the ring, ranked from here (`/status`).
    pub fn turn_relays(&self, now: Instant) -> RelayChoice {
        self.overlay()
            .map(|o| o.turn_relays(now))
            .unwrap_or_default()
    }
}
