//! The node: the protocol core and the tokio driver that pumps it.

pub mod core;
pub mod driver;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod outbox;

#[cfg(test)]
mod tests;
