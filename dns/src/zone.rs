//! The model of an overlay domain's zone.
//!
//! A [`Zones`] handle holds every domain this node is authoritative for. The
//! records of a zone are not stored by the caller: they are *derived* from the
//! live gateway set ([`Zones::set_gateways`]) plus any static records
//! ([`Zones::add_static`]). Every change rebuilds an immutable snapshot
//! ([`ZoneData`]) that the server answers from, so a query never sees half an
//! update. The SOA serial moves only when the derived record set changes.
//!
//! This file builds the zones; answering questions from a snapshot is in
//! `answer`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::rr::rdata::{A, AAAA, NAPTR, NS, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use tracing::{debug, warn};

use crate::DnsError;

mod answer;

pub(crate) use answer::Answer;

/// Default TTL of every record in an overlay zone (seconds). Short, because the
/// gateway set follows the overlay's churn.
pub const DEFAULT_TTL: u32 = 30;

/// One live gateway node of an overlay domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Gateway {
    /// Host label (`"gw1"` → `gw1.<domain>`) or a fully qualified name. A name
    /// that contains a dot or ends with `.` is taken as absolute.
    pub name: String,
    /// Addresses published as A/AAAA for `name` (when `name` is inside the zone).
    pub addrs: Vec<IpAddr>,
    /// SIP over UDP port (`_sip._udp` SRV, `SIP+D2U` NAPTR).
    pub udp: Option<u16>,
    /// SIP over TCP port (`_sip._tcp` SRV, `SIP+D2T` NAPTR).
    pub tcp: Option<u16>,
    /// SIP over TLS port (`_sips._tcp` SRV, `SIPS+D2T` NAPTR).
    pub tls: Option<u16>,
}

/// Static configuration of one served zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The zone apex, e.g. `"overlay.test"` (a trailing dot is allowed).
    pub domain: String,
    /// TTL of every record, and the SOA minimum (negative-caching TTL). Default 30.
    pub ttl: u32,
    /// Name server host (label or FQDN). `None`: `ns.<domain>`, with an A/AAAA
    /// record holding the first gateway's addresses.
    pub ns_name: Option<String>,
}

impl ZoneConfig {
    /// A zone for `domain` with TTL 30 and `ns.<domain>` as name server.
    pub fn new(domain: impl Into<String>) -> ZoneConfig {
        ZoneConfig {
            domain: domain.into(),
            ttl: DEFAULT_TTL,
            ns_name: None,
        }
    }
}

impl Default for ZoneConfig {
    fn default() -> Self {
        ZoneConfig::new("")
    }
}

/// SOA timers (seconds). Nobody transfers these zones (no AXFR), so they only
/// matter as hints; `minimum` is the zone TTL.
const SOA_REFRESH: i32 = 300;
const SOA_RETRY: i32 = 60;
const SOA_EXPIRE: i32 = 86_400;

/// NAPTR order values for the three SIP services (RFC 3263 §4.1 ordering:
/// TLS first, then TCP, then UDP); preference is always 10.
pub const NAPTR_ORDER_SIPS_D2T: u16 = 10;
pub const NAPTR_ORDER_SIP_D2T: u16 = 20;
pub const NAPTR_ORDER_SIP_D2U: u16 = 30;
pub const NAPTR_PREFERENCE: u16 = 10;
/// SRV priority and weight given to every live gateway: all equal, so clients
/// spread load evenly (RFC 2782 weighted selection with equal weights).
pub const SRV_PRIORITY: u16 = 0;
pub const SRV_WEIGHT: u16 = 10;

/// An immutable snapshot of one zone's records, rebuilt on every change.
#[derive(Debug)]
pub(crate) struct ZoneData {
    pub(crate) origin: Name,
    pub(crate) soa: Record,
    /// Every RRset by owner name (SOA included at the apex).
    pub(crate) records: BTreeMap<LowerName, Vec<Record>>,
    /// Owner names plus the empty non-terminals between them and the apex
    /// (`_udp.<domain>` exists because `_sip._udp.<domain>` does): these
    /// answer NODATA, not NXDOMAIN (RFC 8020).
    pub(crate) names: BTreeSet<LowerName>,
}

struct ZoneEntry {
    config: ZoneConfig,
    origin: Name,
    gateways: Vec<Gateway>,
    statics: Vec<Record>,
    serial: u32,
    /// Derived records without the SOA, in canonical order; compared to decide
    /// whether the serial moves.
    content: Vec<Record>,
    data: Arc<ZoneData>,
}

/// The zones this node serves. Cheap to clone; all clones share the same state.
#[derive(Clone, Default)]
pub struct Zones {
    inner: Arc<RwLock<Vec<ZoneEntry>>>,
}

impl fmt::Debug for Zones {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let zones = self.inner.read().expect("zones lock");
        f.debug_list()
            .entries(
                zones
                    .iter()
                    .map(|z| (&z.config.domain, z.serial, z.gateways.len())),
            )
            .finish()
    }
}

fn now_serial() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
        .max(1)
}

/// The next serial: the current time when it is ahead (so a restarted gateway
/// does not go backwards), otherwise one more than the last.
fn next_serial(prev: u32) -> u32 {
    let now = now_serial();
    // RFC 1982 comparison: is `now` ahead of `prev`?
    if now != prev && now.wrapping_sub(prev) < (1 << 31) {
        now
    } else {
        prev.wrapping_add(1).max(1)
    }
}

pub(crate) fn parse_domain(domain: &str) -> Result<Name, DnsError> {
    let trimmed = domain.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(DnsError::InvalidName(domain.to_string()));
    }
    let mut name =
        Name::from_ascii(trimmed).map_err(|e| DnsError::InvalidName(format!("{domain}: {e}")))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// A gateway or NS host name: a single label is relative to `origin`, anything
/// with a dot (or a trailing dot) is absolute.
fn host_name(host: &str, origin: &Name) -> Result<Name, DnsError> {
    let host = host.trim();
    if host.is_empty() {
        return Err(DnsError::InvalidName(host.to_string()));
    }
    if host.contains('.') {
        parse_domain(host)
    } else {
        let label =
            Name::from_ascii(host).map_err(|e| DnsError::InvalidName(format!("{host}: {e}")))?;
        label
            .append_domain(origin)
            .map(|n| n.to_lowercase())
            .map_err(|e| DnsError::InvalidName(format!("{host}: {e}")))
    }
}

fn sub(origin: &Name, labels: &[&str]) -> Name {
    let mut name = origin.clone();
    for label in labels.iter().rev() {
        name = name
            .prepend_label(*label)
            .expect("static SIP service labels are valid");
    }
    name
}

fn addr_record(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => Record::from_rdata(name.clone(), ttl, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(v6))),
    }
}

fn sort_key(r: &Record) -> (LowerName, u16, String) {
    (
        LowerName::new(&r.name),
        u16::from(r.record_type()),
        r.data.to_string(),
    )
}

/// (NAPTR service, SRV labels, NAPTR order, the gateway's port for it).
type ServiceRow = (
    &'static str,
    &'static [&'static str],
    u16,
    fn(&Gateway) -> Option<u16>,
);

/// Derive the zone content (everything but the SOA) from gateways + statics.
fn derive_content(
    config: &ZoneConfig,
    origin: &Name,
    gateways: &[Gateway],
    statics: &[Record],
) -> Vec<Record> {
    let ttl = config.ttl;
    let mut out = Vec::new();

    // Resolve gateway names once; skip invalid ones.
    let gws: Vec<(Name, &Gateway)> = gateways
        .iter()
        .filter_map(|g| match host_name(&g.name, origin) {
            Ok(n) => Some((n, g)),
            Err(e) => {
                warn!(zone = %origin, gateway = %g.name, error = %e, "skipping gateway with invalid name");
                None
            }
        })
        .collect();

    // NS (+ address of ns.<domain> = first gateway's addresses).
    let ns_target = match &config.ns_name {
        Some(ns) => match host_name(ns, origin) {
            Ok(n) => n,
            Err(e) => {
                warn!(zone = %origin, error = %e, "invalid ns_name, using ns.<domain>");
                sub(origin, &["ns"])
            }
        },
        None => sub(origin, &["ns"]),
    };
    out.push(Record::from_rdata(
        origin.clone(),
        ttl,
        RData::NS(NS(ns_target.clone())),
    ));
    if config.ns_name.is_none()
        && let Some((_, first)) = gws.first()
    {
        for ip in &first.addrs {
            out.push(addr_record(&ns_target, ttl, *ip));
        }
    }

    // NAPTR + SRV per transport that at least one live gateway listens on.
    let services: [ServiceRow; 3] = [
        ("SIPS+D2T", &["_sips", "_tcp"], NAPTR_ORDER_SIPS_D2T, |g| {
            g.tls
        }),
        ("SIP+D2T", &["_sip", "_tcp"], NAPTR_ORDER_SIP_D2T, |g| g.tcp),
        ("SIP+D2U", &["_sip", "_udp"], NAPTR_ORDER_SIP_D2U, |g| g.udp),
    ];
    for (service, labels, order, port_of) in services {
        let srv_name = sub(origin, labels);
        let mut any = false;
        for (gw_name, g) in &gws {
            if let Some(port) = port_of(g) {
                any = true;
                out.push(Record::from_rdata(
                    srv_name.clone(),
                    ttl,
                    RData::SRV(SRV::new(SRV_PRIORITY, SRV_WEIGHT, port, gw_name.clone())),
                ));
            }
        }
        if any {
            out.push(Record::from_rdata(
                origin.clone(),
                ttl,
                RData::NAPTR(NAPTR::new(
                    order,
                    NAPTR_PREFERENCE,
                    b"s".to_vec().into_boxed_slice(),
                    service.as_bytes().to_vec().into_boxed_slice(),
                    Vec::new().into_boxed_slice(),
                    srv_name,
                )),
            ));
        }
    }

    // A/AAAA per gateway name inside the zone.
    for (gw_name, g) in &gws {
        if origin.zone_of(gw_name) {
            for ip in &g.addrs {
                out.push(addr_record(gw_name, ttl, *ip));
            }
        }
    }

    out.extend(statics.iter().cloned());

    // Canonical order, no duplicates (two gateways may share a name).
    out.sort_by_cached_key(sort_key);
    out.dedup_by(|a, b| sort_key(a) == sort_key(b));
    out
}

fn soa_record(config: &ZoneConfig, origin: &Name, serial: u32) -> Record {
    let mname = config
        .ns_name
        .as_deref()
        .and_then(|ns| host_name(ns, origin).ok())
        .unwrap_or_else(|| sub(origin, &["ns"]));
    let rname = sub(origin, &["hostmaster"]);
    Record::from_rdata(
        origin.clone(),
        config.ttl,
        RData::SOA(SOA::new(
            mname,
            rname,
            serial,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            config.ttl,
        )),
    )
}

fn build_data(config: &ZoneConfig, origin: &Name, serial: u32, content: &[Record]) -> ZoneData {
    let soa = soa_record(config, origin, serial);
    let mut records: BTreeMap<LowerName, Vec<Record>> = BTreeMap::new();
    let mut names = BTreeSet::new();
    for r in std::iter::once(&soa).chain(content.iter()) {
        let mut name = r.name.clone();
        if !origin.zone_of(&name) {
            // out-of-zone data (e.g. glue for an external NS): never served
            continue;
        }
        records
            .entry(LowerName::new(&name))
            .or_default()
            .push(r.clone());
        while origin.zone_of(&name) && names.insert(LowerName::new(&name)) && name != *origin {
            name = name.base_name();
        }
    }
    ZoneData {
        origin: origin.clone(),
        soa,
        records,
        names,
    }
}

impl ZoneEntry {
    fn new(config: ZoneConfig, origin: Name) -> ZoneEntry {
        let serial = now_serial();
        let content = derive_content(&config, &origin, &[], &[]);
        let data = Arc::new(build_data(&config, &origin, serial, &content));
        ZoneEntry {
            config,
            origin,
            gateways: Vec::new(),
            statics: Vec::new(),
            serial,
            content,
            data,
        }
    }

    /// Re-derive the records; bump the serial when they changed. Returns whether
    /// they did.
    fn rebuild(&mut self, force_data: bool) -> bool {
        let content = derive_content(&self.config, &self.origin, &self.gateways, &self.statics);
        let changed = content != self.content;
        if changed {
            self.serial = next_serial(self.serial);
            self.content = content;
        }
        if changed || force_data {
            self.data = Arc::new(build_data(
                &self.config,
                &self.origin,
                self.serial,
                &self.content,
            ));
        }
        changed
    }
}

impl Zones {
    /// No zones yet.
    pub fn new() -> Zones {
        Zones::default()
    }

    /// Serve `config.domain` (replacing its configuration if already served; its
    /// gateways and static records are kept). An invalid domain name is logged
    /// and ignored; [`Zones::try_add_zone`] reports it.
    pub fn add_zone(&self, config: ZoneConfig) {
        if let Err(e) = self.try_add_zone(config) {
            warn!(error = %e, "add_zone: invalid zone");
        }
    }

    /// Like [`Zones::add_zone`], but returns an error for an invalid domain.
    pub fn try_add_zone(&self, config: ZoneConfig) -> Result<(), DnsError> {
        let origin = parse_domain(&config.domain)?;
        let mut zones = self.inner.write().expect("zones lock");
        if let Some(z) = zones.iter_mut().find(|z| z.origin == origin) {
            z.config = config;
            z.rebuild(true);
        } else {
            debug!(zone = %origin, "serving zone");
            zones.push(ZoneEntry::new(config, origin));
        }
        Ok(())
    }

    /// Stop serving a zone. Returns whether it was served.
    pub fn remove_zone(&self, domain: &str) -> bool {
        let Ok(origin) = parse_domain(domain) else {
            return false;
        };
        let mut zones = self.inner.write().expect("zones lock");
        let before = zones.len();
        zones.retain(|z| z.origin != origin);
        zones.len() != before
    }

    /// Replace the live gateway set of a domain; bumps the SOA serial only when
    /// the served records changed (the order of `gateways` matters only for
    /// which gateway's addresses `ns.<domain>` gets: the first). A domain that
    /// is not served yet is added with [`ZoneConfig::new`] defaults.
    pub fn set_gateways(&self, domain: &str, gateways: Vec<Gateway>) {
        let origin = match parse_domain(domain) {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "set_gateways: invalid domain");
                return;
            }
        };
        let mut zones = self.inner.write().expect("zones lock");
        let idx = match zones.iter().position(|z| z.origin == origin) {
            Some(i) => i,
            None => {
                zones.push(ZoneEntry::new(ZoneConfig::new(domain), origin));
                zones.len() - 1
            }
        };
        let zone = &mut zones[idx];
        zone.gateways = gateways;
        if zone.rebuild(false) {
            debug!(zone = %zone.origin, serial = zone.serial, gateways = zone.gateways.len(), "zone changed");
        }
    }

    /// The live gateway set of a domain, as last given to [`Zones::set_gateways`].
    pub fn gateways(&self, domain: &str) -> Option<Vec<Gateway>> {
        let origin = parse_domain(domain).ok()?;
        let zones = self.inner.read().expect("zones lock");
        zones
            .iter()
            .find(|z| z.origin == origin)
            .map(|z| z.gateways.clone())
    }

    /// Current SOA serial of a served domain.
    pub fn serial(&self, domain: &str) -> Option<u32> {
        let origin = parse_domain(domain).ok()?;
        let zones = self.inner.read().expect("zones lock");
        zones.iter().find(|z| z.origin == origin).map(|z| z.serial)
    }

    /// Domains served, as FQDNs without the trailing dot.
    pub fn domains(&self) -> Vec<String> {
        let zones = self.inner.read().expect("zones lock");
        zones
            .iter()
            .map(|z| z.origin.to_ascii().trim_end_matches('.').to_string())
            .collect()
    }

    /// Add a static record (any type: NAPTR for ENUM, SRV/A for a test
    /// "legacy" domain, CNAME, TXT...) to the served zone that contains `name`
    /// (the most specific one). The record gets the zone's TTL. Bumps the serial
    /// when it is new.
    pub fn add_static(&self, name: &str, rdata: RData) -> Result<(), DnsError> {
        let owner = parse_domain(name)?;
        let mut zones = self.inner.write().expect("zones lock");
        let zone = zones
            .iter_mut()
            .filter(|z| z.origin.zone_of(&owner))
            .max_by_key(|z| z.origin.num_labels())
            .ok_or_else(|| DnsError::NotInZone(name.to_string()))?;
        let rec = Record::from_rdata(owner, zone.config.ttl, rdata);
        zone.statics.push(rec);
        zone.rebuild(false);
        Ok(())
    }

    /// Remove every static record at `name` (of `rtype`, or all types when `None`).
    pub fn remove_static(&self, name: &str, rtype: Option<RecordType>) -> Result<(), DnsError> {
        let owner = parse_domain(name)?;
        let mut zones = self.inner.write().expect("zones lock");
        for zone in zones.iter_mut().filter(|z| z.origin.zone_of(&owner)) {
            let before = zone.statics.len();
            zone.statics
                .retain(|r| !(r.name == owner && rtype.is_none_or(|t| r.record_type() == t)));
            if zone.statics.len() != before {
                zone.rebuild(false);
            }
        }
        Ok(())
    }

    /// All records of a served domain (SOA first), in zone-file-like text, for
    /// logs and debugging.
    pub fn dump(&self, domain: &str) -> Option<String> {
        let data = self.find_zone_by_origin(domain)?;
        let mut out = String::new();
        for rec in data.records.values().flatten() {
            out.push_str(&rec.to_string());
            out.push('\n');
        }
        Some(out)
    }

    fn find_zone_by_origin(&self, domain: &str) -> Option<Arc<ZoneData>> {
        let origin = parse_domain(domain).ok()?;
        let zones = self.inner.read().expect("zones lock");
        zones
            .iter()
            .find(|z| z.origin == origin)
            .map(|z| z.data.clone())
    }

    /// The snapshot of the most specific zone containing `name`, if any.
    pub(crate) fn zone_for(&self, name: &Name) -> Option<Arc<ZoneData>> {
        let zones = self.inner.read().expect("zones lock");
        zones
            .iter()
            .filter(|z| z.origin.zone_of(name))
            .max_by_key(|z| z.origin.num_labels())
            .map(|z| z.data.clone())
    }
}

#[cfg(test)]
mod tests;
