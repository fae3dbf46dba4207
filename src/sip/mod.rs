//! The SIP stack: messages, stream framing, STUN on the SIP ports,
//! transactions, the UAS core's 2xx retransmissions and transports.

pub mod framing;
pub mod message;
pub mod stun;
pub mod target;
pub mod transaction;
pub mod transport;
pub mod uas;
