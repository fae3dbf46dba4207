//! p2psip: peer-to-peer Internet telephony over SIP.
//!
//! The crate holds the SIP stack ([`sip`]), and the node that ties it together.
//! Protocol logic is sans-I/O: state machines fed with messages and time that
//! return messages to send and timers to arm; thin tokio drivers do the I/O.

pub mod ring;
pub mod sip;
