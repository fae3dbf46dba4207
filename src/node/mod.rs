//! The node's I/O: the tokio driver that pumps the sans-I/O
//! [`Core`](crate::core::Core), and the HTTP window onto it.

mod accounts;
mod conference;
pub mod driver;
pub mod http;
mod https;
mod inventory;
mod media;
mod relay;
pub mod status_page;
pub mod turn;
