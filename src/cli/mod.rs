//! The binary's parts besides running a node: the log set-up and the
//! operator commands, which find a node by its data directory or address
//! and ask it over HTTP (status, registrations, items) or over the ring's
//! own SIP messages (the ring walk, key look-ups), and finds a TURN
//! server through it (`turn find`).

pub mod control;
pub mod logging;
pub mod show;
pub mod signup;
pub mod turn;
pub mod walk;
