//! The dead-target memory: targets that failed recently are put after the
//! live ones by [`SipResolver::resolve`] until `dead_for` has passed.

use std::time::Instant;

use super::{SipResolver, Target};

impl SipResolver {
    /// Remember a target as dead (timeout, transport error, 503) for
    /// `dead_for`; [`SipResolver::resolve`] then puts it after the live ones.
    pub fn mark_dead(&self, target: &Target) {
        let until = Instant::now() + self.inner.config.dead_for;
        self.inner
            .dead
            .lock()
            .expect("dead lock")
            .insert((target.addr, target.transport), until);
    }

    /// Forget that a target was dead (it answered again).
    pub fn mark_alive(&self, target: &Target) {
        self.inner
            .dead
            .lock()
            .expect("dead lock")
            .remove(&(target.addr, target.transport));
    }

    /// Whether a target is currently marked dead.
    pub fn is_dead(&self, target: &Target) -> bool {
        self.inner
            .dead
            .lock()
            .expect("dead lock")
            .get(&(target.addr, target.transport))
            .is_some_and(|until| *until > Instant::now())
    }
}
