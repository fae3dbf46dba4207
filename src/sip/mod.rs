//! The SIP stack: messages, stream framing, transactions and transports.

pub mod message;
pub mod transaction;
