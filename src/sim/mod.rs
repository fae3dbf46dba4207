//! A deterministic whole-node simulation: complete [`Core`](crate::core::Core)s
//! in a Chord ring, scripted phones, a scripted legacy registrar and a DNS
//! table on one virtual network with one virtual clock (the architecture
//! issue, part 5). The ring-only simulator is [`crate::ring::sim`].
//!
//! * [`World`] holds everything: nodes (a `Core` each, or none once
//!   crashed), [`Phone`]s, [`LegacyRegistrar`]s, the event queue (message
//!   deliveries, node wake-ups, phone timers and scripted actions, ordered by
//!   time then a sequence number) and one seeded `StdRng` that makes every
//!   random choice (delays, losses, node seeds, the tests' picks).
//! * Time starts at one `Instant` captured when the World is made and moves
//!   only as events are run ([`World::run_until`], [`World::run_for`],
//!   [`World::run_until_cond`]); nothing touches a socket: addresses like
//!   `127.0.1.7:5060` are never bound.
//! * The network gives every message a one-way delay uniform in
//!   [`WorldConfig::latency`] (reordering follows from it), loses messages
//!   between nodes (and between a node and a registrar) with probability
//!   [`WorldConfig::loss`], drops messages across cut pairs
//!   ([`World::partition`]) and to crashed nodes. Links with a phone at one
//!   end are never lossy (the phones do not retransmit; see [`phone`]).
//! * `Output::Resolve` is answered from [`World::dns`] (a name → peers in
//!   order), `Output::Enum` from [`World::enum_table`].
//! * Every delivered message and every outcome a participant sees goes into
//!   the [`Trace`]; [`World::trace_hash`] compares runs.

pub mod legacy;
pub mod phone;
mod script;
pub mod trace;
mod world;

pub use legacy::{LegacyRegistrar, SeenRegister};
pub use phone::{Answer, Call, Incoming, Phone, Sent};
pub use trace::Trace;
pub use world::{Action, NodeSlot, World, WorldConfig};
