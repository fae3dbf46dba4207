//! DNS for overlay domains: the authoritative server ([`DnsServer`], answering
//! from a live [`Zones`] model) and the RFC 3263 resolver for foreign SIP
//! domains ([`SipResolver`]). Plain types only: this crate does not depend on
//! `p2psip`. See `docs/dns.md`.

pub mod e164;
pub mod resolve;
pub mod server;
pub mod zone;

pub use e164::normalize_e164;
pub use resolve::{ResolverConfig, SipDestination, SipResolver, Target, Transport};
pub use server::{DnsServer, LoggedQuery};
pub use zone::{Gateway, ZoneConfig, Zones};

/// The hickory-proto version this crate speaks (record types for
/// [`Zones::add_static`]).
pub use hickory_proto as proto;

/// Errors of the DNS server and resolver.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// Binding or running a socket failed.
    #[error("DNS socket {addr}: {source}")]
    Io {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A domain or host name that is not a valid DNS name.
    #[error("invalid DNS name: {0}")]
    InvalidName(String),
    /// A static record whose owner is in none of the served zones.
    #[error("{0} is not inside a served zone")]
    NotInZone(String),
    /// The resolver could not be configured (e.g. unreadable resolv.conf).
    #[error("resolver configuration: {0}")]
    Config(String),
    /// Lookups failed (timeout, SERVFAIL, REFUSED, network) and no target was found.
    #[error("DNS lookup for {name} failed: {reason}")]
    Lookup { name: String, reason: String },
    /// The name resolved to nothing usable (NXDOMAIN / no records).
    #[error("no SIP targets for {0}")]
    NotFound(String),
    /// The URI asks for a transport this node does not support (e.g. sips
    /// without TLS, `transport=tcp` when only UDP is configured).
    #[error("no usable transport for {0}")]
    NoUsableTransport(String),
    /// Not an E.164 number (`+` and digits).
    #[error("invalid E.164 number: {0}")]
    InvalidE164(String),
}

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        send_sync::<super::Zones>();
        send_sync::<super::SipResolver>();
        send_sync::<super::DnsServer>();
        send_sync::<super::DnsError>();
    }
}
