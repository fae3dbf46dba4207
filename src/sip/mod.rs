//! The SIP stack: messages, stream framing, transactions and transports.

pub mod framing;
pub mod message;
pub mod target;
pub mod transaction;
pub mod transport;
