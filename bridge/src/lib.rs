//! The hybrid gateway's pure parts (sans-I/O: no sockets, time passed in),
//! driven by the node's tokio driver and proxy. See `docs/gateway.md`.
//!
//! - [`config`]: the `[gateway]` configuration section and its validation.
//! - [`route`]: the routing decision per request (ring, ring then RFC 3263,
//!   RFC 3263, telephone number), E.164 normalisation, `tel:` URIs, PSTN
//!   prefix rules.
//! - [`digest`]: HTTP Digest client (MD5, `qop=auth` or none) for 401/407
//!   challenges of legacy registrars and PSTN gateways.
//! - [`crossreg`]: overlay → legacy cross-registration state machine.
//! - [`legacy`]: legacy → overlay: which REGISTERs are forwarded upstream and
//!   what their 2xx changes in the ring.
//!
//! This crate does not depend on `p2psip`; it uses `p2psip-dns` only for
//! its configuration types.

pub mod config;
pub mod crossreg;
pub mod digest;
pub mod legacy;
pub mod route;

pub use config::{
    CrossUsers, GatewayConfig, GatewayConfigError, PrefixRule, PstnConfig, UpstreamConfig,
};
pub use crossreg::{CrossRegistrar, RegisterOut};
pub use digest::{Credentials, DigestError, authorization};
pub use legacy::{ContactEntry, MirrorOp, RegisterRoute, mirror_bindings, register_route};
pub use route::{
    Decision, TargetUri, TelRoute, decide, normalize_e164, pstn_request_uri, tel_target,
    telephone_route,
};

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn types_are_send_and_sync() {
        send_sync::<super::CrossRegistrar>();
        send_sync::<super::GatewayConfig>();
        send_sync::<super::GatewayConfigError>();
        send_sync::<super::DigestError>();
    }
}
