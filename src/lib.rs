//! p2psip: peer-to-peer Internet telephony over SIP.
//!
//! The crate holds the SIP stack ([`sip`]), the registrar and proxy, the
//! Chord ring ([`ring`]) and the overlay that runs it over SIP, and the node
//! that ties them together. Protocol logic is sans-I/O: state machines fed
//! with messages and time that return messages to send and timers to arm;
//! thin tokio drivers do the I/O.

pub mod auth;
pub mod conference;
pub mod config;
pub mod core;
pub mod gateway;
pub mod media;
pub mod messages;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod overlay;
pub mod presence;
pub mod proxy;
pub mod registrar;
pub mod relay;
pub mod ring;
pub mod sim;
pub mod sip;
pub mod store;
pub mod turn;
pub mod voicemail;
