//! RFC 3263 §4 client side: turn a SIP URI's host part into an ordered list of
//! (address, port, transport) targets to try, with NAPTR → SRV → A/AAAA,
//! RFC 2782 SRV ordering, a dead-target memory for failover, and ENUM
//! (RFC 6116) NAPTR lookups.
//!
//! This file holds the types and the RFC 3263 lookup itself; the SRV
//! ordering (`srv`), the dead-target memory (`dead`) and ENUM
//! (`enum_lookup`) live beside it.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::rdata::{NAPTR, SRV};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig as HickoryConfig,
    ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tracing::{debug, warn};

use crate::DnsError;

mod dead;
mod enum_lookup;
mod srv;

pub use enum_lookup::{apply_naptr_regexp, enum_domain};
pub use srv::order_srv;

/// A SIP transport this node can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// 5060 for UDP/TCP, 5061 for TLS (RFC 3261 §19.1.2).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Udp | Transport::Tcp => 5060,
            Transport::Tls => 5061,
        }
    }

    /// Lower-case name as in a Via or `transport=` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// The SRV service label pair (RFC 3263 §4.1): `_sip._udp`, `_sip._tcp`, `_sips._tcp`.
    pub fn srv_prefix(self) -> &'static str {
        match self {
            Transport::Udp => "_sip._udp",
            Transport::Tcp => "_sip._tcp",
            Transport::Tls => "_sips._tcp",
        }
    }

    /// The NAPTR service field for this transport (RFC 3263 §4.1).
    pub fn naptr_service(self) -> &'static str {
        match self {
            Transport::Udp => "SIP+D2U",
            Transport::Tcp => "SIP+D2T",
            Transport::Tls => "SIPS+D2T",
        }
    }

    fn from_naptr_service(service: &[u8]) -> Option<Transport> {
        let s = std::str::from_utf8(service).ok()?;
        [Transport::Udp, Transport::Tcp, Transport::Tls]
            .into_iter()
            .find(|t| t.naptr_service().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = DnsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            "tls" => Ok(Transport::Tls),
            other => Err(DnsError::NoUsableTransport(format!("transport={other}"))),
        }
    }
}

/// One place to send a request to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub addr: SocketAddr,
    pub transport: Transport,
    /// The SIP domain (the URI's host, without brackets): what a TLS client
    /// must verify the server certificate against and send as SNI
    /// (RFC 5922 §4), and a readable name for logs.
    pub host: String,
}

/// What a SIP URI says about where to send (host part and parameters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipDestination {
    /// Domain name or numeric address (IPv6 with or without brackets).
    pub host: String,
    /// Explicit port in the URI.
    pub port: Option<u16>,
    /// `transport=` parameter (for `sips:` the transport is always TLS).
    pub transport: Option<Transport>,
    /// `sips:` URI.
    pub sips: bool,
}

impl SipDestination {
    /// `sip:…@host` with no port and no transport parameter.
    pub fn new(host: impl Into<String>) -> SipDestination {
        SipDestination {
            host: host.into(),
            port: None,
            transport: None,
            sips: false,
        }
    }
}

/// Resolver settings.
#[derive(Clone, Debug)]
pub struct ResolverConfig {
    /// DNS server to ask (UDP, TCP on truncation). `None` = system `/etc/resolv.conf`.
    pub nameserver: Option<SocketAddr>,
    /// Per-query timeout.
    pub timeout: Duration,
    /// How long a target marked dead is tried last. Default 30 s.
    pub dead_for: Duration,
    /// Transports this node can use, in preference order (used when there are
    /// no NAPTR records).
    pub transports: Vec<Transport>,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            nameserver: None,
            timeout: Duration::from_secs(2),
            dead_for: Duration::from_secs(30),
            transports: vec![Transport::Udp, Transport::Tcp, Transport::Tls],
        }
    }
}

struct Inner {
    resolver: TokioResolver,
    config: ResolverConfig,
    dead: Mutex<HashMap<(SocketAddr, Transport), Instant>>,
}

/// RFC 3263 resolver. Cheap to clone; clones share the DNS cache and the
/// dead-target memory.
#[derive(Clone)]
pub struct SipResolver {
    inner: Arc<Inner>,
}

impl fmt::Debug for SipResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipResolver")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The NAPTR records of an answer, in the order to use them (RFC 3403:
/// order, then preference).
pub(crate) fn naptrs_in_order(lookup: &hickory_resolver::lookup::Lookup) -> Vec<&NAPTR> {
    let mut naptrs: Vec<&NAPTR> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::NAPTR(n) => Some(n),
            _ => None,
        })
        .collect();
    naptrs.sort_by_key(|n| (n.order, n.preference));
    naptrs
}

/// Lookup errors that mean "no such data" rather than "could not ask".
fn is_no_data(e: &NetError) -> bool {
    e.is_no_records_found() || e.is_nx_domain()
}

/// Fully qualified (trailing dot) so no search domain is ever appended.
fn fqdn(host: &str) -> Result<Name, DnsError> {
    let h = host.trim().trim_end_matches('.');
    if h.is_empty() {
        return Err(DnsError::InvalidName(host.to_string()));
    }
    let mut name =
        Name::from_ascii(h).map_err(|e| DnsError::InvalidName(format!("{host}: {e}")))?;
    name.set_fqdn(true);
    Ok(name)
}

/// The name server could not be reached at all (as opposed to an error answer).
fn is_unreachable(e: &NetError) -> bool {
    matches!(
        e,
        NetError::Timeout | NetError::NoConnections | NetError::Io(_)
    )
}

/// Collected lookup failures, to tell "nothing there" from "could not ask".
#[derive(Default)]
struct Failures {
    last: Option<String>,
    unreachable: bool,
}

impl Failures {
    fn note(&mut self, what: &str, e: &NetError) {
        warn!(%what, error = %e, "DNS lookup failed");
        self.last = Some(format!("{what}: {e}"));
        self.unreachable |= is_unreachable(e);
    }
}

impl SipResolver {
    /// Build the resolver. Cheap; sockets are opened on first use (inside the
    /// tokio runtime that calls `resolve`).
    pub fn new(config: ResolverConfig) -> Result<SipResolver, DnsError> {
        let (hconf, mut opts) = match config.nameserver {
            Some(ns) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = ns.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = ns.port();
                (
                    HickoryConfig::from_name_servers(vec![NameServerConfig::new(
                        ns.ip(),
                        true,
                        vec![udp, tcp],
                    )]),
                    ResolverOpts::default(),
                )
            }
            None => hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| DnsError::Config(format!("/etc/resolv.conf: {e}")))?,
        };
        opts.timeout = config.timeout;
        opts.attempts = 2;
        // A before AAAA, asked in parallel: most SIP peers are still IPv4-first.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // We build FQDNs ourselves; never expand with search domains.
        opts.ndots = 0;
        let resolver =
            hickory_resolver::Resolver::builder_with_config(hconf, TokioRuntimeProvider::default())
                .with_options(opts)
                .build()
                .map_err(|e| DnsError::Config(e.to_string()))?;
        Ok(SipResolver {
            inner: Arc::new(Inner {
                resolver,
                config,
                dead: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration this resolver was built with.
    pub fn config(&self) -> &ResolverConfig {
        &self.inner.config
    }

    /// Forget cached DNS answers (e.g. after the overlay zone changed).
    pub fn clear_cache(&self) {
        self.inner.resolver.clear_cache();
    }

    fn supports(&self, t: Transport) -> bool {
        self.inner.config.transports.contains(&t)
    }

    /// Transports usable for this URI, in our preference order.
    fn allowed(&self, dest: &SipDestination) -> Vec<Transport> {
        let mut out = Vec::new();
        for &t in &self.inner.config.transports {
            if (!dest.sips || t == Transport::Tls) && !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    /// The transport for a URI that names it or fixes a port (RFC 3263 §4.1:
    /// UDP for sip, TLS for sips, when the URI does not say).
    fn explicit_transport(&self, dest: &SipDestination) -> Result<Transport, DnsError> {
        let t = match (dest.sips, dest.transport) {
            (true, Some(Transport::Udp)) => {
                return Err(DnsError::NoUsableTransport(format!(
                    "sips:{} with transport=udp",
                    dest.host
                )));
            }
            (true, _) => Transport::Tls,
            (false, Some(t)) => t,
            (false, None) => {
                if self.supports(Transport::Udp) {
                    Transport::Udp
                } else {
                    // RFC 3263 says UDP; use what we have rather than fail
                    *self
                        .allowed(dest)
                        .first()
                        .ok_or_else(|| DnsError::NoUsableTransport(dest.host.clone()))?
                }
            }
        };
        if !self.supports(t) {
            return Err(DnsError::NoUsableTransport(format!("{}:{t}", dest.host)));
        }
        Ok(t)
    }

    /// RFC 3263 §4: ordered list of targets to try, in failover order. Numeric
    /// host → no lookups (port default 5060/5061); explicit port → A/AAAA only;
    /// explicit transport → SRV for it, then A/AAAA; else NAPTR (only services
    /// we support, by order/preference) → SRV (RFC 2782) → A/AAAA; no usable
    /// NAPTR → SRV for each supported transport (`_sips._tcp` only for sips) →
    /// A/AAAA with the default port. Targets marked dead go last.
    pub async fn resolve(&self, dest: &SipDestination) -> Result<Vec<Target>, DnsError> {
        let host = dest
            .host
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let mut failures = Failures::default();

        // 1. Numeric address: no DNS at all.
        if let Ok(ip) = host.parse::<IpAddr>() {
            let transport = self.explicit_transport(dest)?;
            let port = dest.port.unwrap_or(transport.default_port());
            return Ok(vec![Target {
                addr: SocketAddr::new(ip, port),
                transport,
                host,
            }]);
        }
        let name = fqdn(&host)?;

        let mut targets = Vec::new();
        if let Some(port) = dest.port {
            // 2. Explicit port: A/AAAA only.
            let transport = self.explicit_transport(dest)?;
            self.address_targets(&name, port, transport, &host, &mut targets, &mut failures)
                .await;
        } else if dest.transport.is_some() {
            // 3. Explicit transport, no port: SRV for that transport, else A/AAAA.
            let transport = self.explicit_transport(dest)?;
            let srv_name = fqdn(&format!("{}.{}", transport.srv_prefix(), host))?;
            self.srv_targets(&srv_name, transport, &host, &mut targets, &mut failures)
                .await;
            if targets.is_empty() {
                self.address_targets(
                    &name,
                    transport.default_port(),
                    transport,
                    &host,
                    &mut targets,
                    &mut failures,
                )
                .await;
            }
        } else {
            let allowed = self.allowed(dest);
            if allowed.is_empty() {
                return Err(DnsError::NoUsableTransport(dest.host.clone()));
            }
            // 4. NAPTR.
            let services = self.naptr_services(&name, &allowed, &mut failures).await;
            if failures.unreachable {
                // The name server does not answer: every further query would
                // wait for the timeout too. Fail now.
                return Err(DnsError::Lookup {
                    name: host,
                    reason: failures.last.unwrap_or_default(),
                });
            }
            for (transport, replacement) in services {
                self.srv_targets(&replacement, transport, &host, &mut targets, &mut failures)
                    .await;
            }
            // 5. No (usable) NAPTR: SRV per transport we can use.
            if targets.is_empty() {
                for &t in &allowed {
                    let srv_name = fqdn(&format!("{}.{}", t.srv_prefix(), host))?;
                    self.srv_targets(&srv_name, t, &host, &mut targets, &mut failures)
                        .await;
                }
            }
            // 6. No SRV: A/AAAA with the default port.
            if targets.is_empty() {
                let transport = self.explicit_transport(dest)?;
                self.address_targets(
                    &name,
                    transport.default_port(),
                    transport,
                    &host,
                    &mut targets,
                    &mut failures,
                )
                .await;
            }
        }

        // Dedup (same address+transport via two SRV records), then dead last.
        let mut seen = std::collections::HashSet::new();
        targets.retain(|t| seen.insert((t.addr, t.transport)));
        let now = Instant::now();
        let (alive, dead): (Vec<Target>, Vec<Target>) = {
            let mut deadmap = self.inner.dead.lock().expect("dead lock");
            deadmap.retain(|_, until| *until > now);
            targets
                .into_iter()
                .partition(|t| !deadmap.contains_key(&(t.addr, t.transport)))
        };
        let mut out = alive;
        out.extend(dead);
        if out.is_empty() {
            return Err(match failures.last {
                Some(reason) => DnsError::Lookup { name: host, reason },
                None => DnsError::NotFound(host),
            });
        }
        debug!(host = %dest.host, targets = ?out, "RFC 3263 resolved");
        Ok(out)
    }

    /// Usable NAPTR services of `name`: (transport, SRV name), by order/preference.
    /// One look-up; a failure other than "no such data" is noted in `failures`.
    async fn lookup_noting(
        &self,
        name: &Name,
        rtype: RecordType,
        failures: &mut Failures,
    ) -> Option<hickory_resolver::lookup::Lookup> {
        match self.inner.resolver.lookup(name.clone(), rtype).await {
            Ok(lookup) => Some(lookup),
            Err(e) => {
                if !is_no_data(&e) {
                    failures.note(&format!("{rtype} {name}"), &e);
                }
                None
            }
        }
    }

    async fn naptr_services(
        &self,
        name: &Name,
        allowed: &[Transport],
        failures: &mut Failures,
    ) -> Vec<(Transport, Name)> {
        let Some(lookup) = self.lookup_noting(name, RecordType::NAPTR, failures).await else {
            return Vec::new();
        };
        let naptrs = naptrs_in_order(&lookup);
        let mut out = Vec::new();
        for n in naptrs {
            if !n.flags.eq_ignore_ascii_case(b"s") {
                continue;
            }
            let Some(t) = Transport::from_naptr_service(&n.services) else {
                continue;
            };
            if allowed.contains(&t) && !out.iter().any(|(_, r)| *r == n.replacement) {
                out.push((t, n.replacement.clone()));
            }
        }
        debug!(%name, services = ?out, "NAPTR");
        out
    }

    async fn srv_targets(
        &self,
        srv_name: &Name,
        transport: Transport,
        host: &str,
        out: &mut Vec<Target>,
        failures: &mut Failures,
    ) {
        let Some(lookup) = self
            .lookup_noting(srv_name, RecordType::SRV, failures)
            .await
        else {
            return;
        };
        let srvs: Vec<SRV> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) if !s.target.is_root() => Some(s.clone()),
                _ => None,
            })
            .collect();
        let ordered = order_srv(srvs, &mut rand::rng());
        for srv in ordered {
            self.address_targets(&srv.target, srv.port, transport, host, out, failures)
                .await;
        }
    }

    async fn address_targets(
        &self,
        name: &Name,
        port: u16,
        transport: Transport,
        host: &str,
        out: &mut Vec<Target>,
        failures: &mut Failures,
    ) {
        match self.inner.resolver.lookup_ip(name.clone()).await {
            Ok(ips) => {
                for ip in ips.iter() {
                    out.push(Target {
                        addr: SocketAddr::new(ip, port),
                        transport,
                        host: host.to_string(),
                    });
                }
            }
            Err(e) => {
                if !is_no_data(&e) {
                    failures.note(&format!("A/AAAA {name}"), &e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
