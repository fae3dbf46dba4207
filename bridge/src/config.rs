//! The `[gateway]` configuration section.
//!
//! Parsing is plain serde (`deny_unknown_fields`, every field has a default);
//! [`GatewayConfig::validate`] checks values that parse but make no sense and
//! reports the first bad entry in one line naming its key, e.g.
//! `gateway.pstn.prefixes[1].prefix: must be digits`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// Default TTL of the records in the overlay zones (seconds).
pub const DEFAULT_DNS_TTL: u32 = 30;
/// Default ENUM suffix (RFC 6116).
pub const DEFAULT_ENUM_SUFFIX: &str = "e164.arpa";
/// Default `Expires` asked for in cross-registrations (seconds).
pub const DEFAULT_UPSTREAM_EXPIRES: u32 = 300;

/// The `[gateway]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Overlay domains this gateway serves in DNS (and whose users live in
    /// the ring).
    pub domains: Vec<String>,
    /// Where the authoritative DNS server listens (e.g. `127.0.0.1:53`).
    /// `None`: no DNS server.
    pub dns_listen: Option<SocketAddr>,
    /// TTL of every record in the overlay zones. Default 30.
    pub dns_ttl: u32,
    /// Name server for RFC 3263 and ENUM lookups. `None`: the system's.
    pub nameserver: Option<SocketAddr>,
    /// Foreign domains whose users are looked up in the ring before DNS
    /// ("locate during call setup"). `"*"` = every foreign domain,
    /// `"*.example.com"` = every subdomain of example.com.
    pub locate_in_overlay: Vec<String>,
    /// ENUM suffix. Default `e164.arpa`.
    pub enum_suffix: String,
    /// Where telephone numbers go when ENUM has no SIP URI for them.
    pub pstn: Option<PstnConfig>,
    /// The legacy registrar for cross-registration and for legacy phones
    /// that use the gateway as outbound proxy.
    pub upstream: Option<UpstreamConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            domains: Vec::new(),
            dns_listen: None,
            dns_ttl: DEFAULT_DNS_TTL,
            nameserver: None,
            locate_in_overlay: Vec::new(),
            enum_suffix: DEFAULT_ENUM_SUFFIX.to_string(),
            pstn: None,
            upstream: None,
        }
    }
}

/// `[gateway.pstn]`: the PSTN gateway telephone numbers are sent to.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PstnConfig {
    /// `host[:port]` or `ip[:port]` (IPv6 in brackets); port 5060 when absent.
    pub address: String,
    /// `udp` (default) or `tcp`.
    pub transport: String,
    /// Digest credentials for challenges from the PSTN gateway.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Number rewriting; see [`crate::route::pstn_request_uri`]. Empty: every
    /// number is passed as `+digits`.
    pub prefixes: Vec<PrefixRule>,
}

impl Default for PstnConfig {
    fn default() -> Self {
        PstnConfig {
            address: String::new(),
            transport: "udp".to_string(),
            username: None,
            password: None,
            prefixes: Vec::new(),
        }
    }
}

/// One `[[gateway.pstn.prefixes]]` rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefixRule {
    /// E.164 digits after `+` this rule applies to (`"1212"`); `""` = any.
    pub prefix: String,
    /// How many leading digits (after `+`) to remove.
    pub strip: usize,
    /// What to put in front of the rest (digits, optionally a leading `+`).
    pub add: String,
}

/// `[gateway.upstream]`: the legacy registrar.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// `host[:port]` of the legacy registrar (where REGISTERs are sent).
    pub registrar: String,
    /// The legacy domain, e.g. `legacy.test` (Request-URI and To of REGISTERs).
    pub domain: String,
    /// Digest credentials for 401/407 challenges of the legacy registrar.
    pub username: Option<String>,
    pub password: Option<String>,
    /// `Expires` asked for. Default 300.
    pub expires: u32,
    /// Overlay users cross-registered at the legacy registrar: `"all"` or a
    /// list of user names. Default: none.
    pub users: CrossUsers,
    /// The overlay domain whose users are cross-registered. `None`: users of
    /// every overlay domain (only the user part is compared).
    pub overlay_domain: Option<String>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            registrar: String::new(),
            domain: String::new(),
            username: None,
            password: None,
            expires: DEFAULT_UPSTREAM_EXPIRES,
            users: CrossUsers::List(Vec::new()),
            overlay_domain: None,
        }
    }
}

/// Which overlay users are cross-registered. TOML: `users = "all"` or
/// `users = ["alice", "bob"]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrossUsers {
    All,
    List(Vec<String>),
}

impl Default for CrossUsers {
    fn default() -> Self {
        CrossUsers::List(Vec::new())
    }
}

impl CrossUsers {
    /// Whether `user` (a user part) is covered.
    pub fn covers(&self, user: &str) -> bool {
        match self {
            CrossUsers::All => !user.is_empty(),
            CrossUsers::List(list) => list.iter().any(|u| u == user),
        }
    }
}

impl<'de> Deserialize<'de> for CrossUsers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CrossUsers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"all\" or a list of user names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CrossUsers, E> {
                if v.trim().eq_ignore_ascii_case("all") {
                    Ok(CrossUsers::All)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CrossUsers, A::Error> {
                let mut users = Vec::new();
                while let Some(u) = seq.next_element::<String>()? {
                    users.push(u);
                }
                Ok(CrossUsers::List(users))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A bad configuration entry: `<key>: <why>`, one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {why}")]
pub struct GatewayConfigError {
    /// Full key, e.g. `gateway.pstn.prefixes[1].prefix`.
    pub key: String,
    pub why: String,
}

fn bad(key: impl Into<String>, why: impl Into<String>) -> GatewayConfigError {
    GatewayConfigError {
        key: key.into(),
        why: why.into().replace('\n', " "),
    }
}

/// `a.b-c.d`, optionally with a trailing dot; not an IP address.
pub(crate) fn is_domain_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.parse::<IpAddr>().is_err()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// `host`, `host:port`, `ip`, `ip:port`, `[v6]`, `[v6]:port`.
pub(crate) fn is_host_port(s: &str) -> bool {
    // A bare IPv6 address would be ambiguous in a URI: brackets required.
    if s.parse::<SocketAddr>().is_ok() || s.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let Some((ip, tail)) = rest.split_once(']') else {
            return false;
        };
        return ip.parse::<std::net::Ipv6Addr>().is_ok()
            && (tail.is_empty()
                || tail
                    .strip_prefix(':')
                    .is_some_and(|p| p.parse::<u16>().is_ok_and(|p| p != 0)));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if let Some(p) = port
        && !p.parse::<u16>().is_ok_and(|p| p != 0)
    {
        return false;
    }
    is_domain_name(host) || host.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Characters RFC 3261 allows unescaped in a user part (unreserved and
/// user-unreserved), plus `%` escapes.
pub(crate) fn is_user_part(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/%".contains(c))
}

fn check_credentials(
    prefix: &str,
    username: &Option<String>,
    password: &Option<String>,
) -> Result<(), GatewayConfigError> {
    match (username, password) {
        (Some(u), _) if u.is_empty() => Err(bad(format!("{prefix}.username"), "must not be empty")),
        (Some(_), None) => Err(bad(
            format!("{prefix}.password"),
            "required when username is set",
        )),
        (None, Some(_)) => Err(bad(
            format!("{prefix}.username"),
            "required when password is set",
        )),
        _ => Ok(()),
    }
}

fn same_domain(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

impl GatewayConfig {
    /// Checks values that parse but make no sense; the error names the first
    /// bad key (`gateway.…`) in one line.
    pub fn validate(&self) -> Result<(), GatewayConfigError> {
        for (i, d) in self.domains.iter().enumerate() {
            if !is_domain_name(d.trim()) {
                return Err(bad(
                    format!("gateway.domains[{i}]"),
                    format!("{d:?} is not a domain name"),
                ));
            }
            if self.domains[..i].iter().any(|o| same_domain(o, d)) {
                return Err(bad(
                    format!("gateway.domains[{i}]"),
                    format!("{d:?} is listed twice"),
                ));
            }
        }
        if self.dns_ttl == 0 || self.dns_ttl > 86_400 {
            return Err(bad(
                "gateway.dns_ttl",
                "must be between 1 and 86400 seconds",
            ));
        }
        if let Some(ns) = self.nameserver
            && (ns.ip().is_unspecified() || ns.port() == 0)
        {
            return Err(bad(
                "gateway.nameserver",
                format!("{ns} is not a usable name server address"),
            ));
        }
        for (i, d) in self.locate_in_overlay.iter().enumerate() {
            let d = d.trim();
            let ok =
                d == "*" || d.strip_prefix("*.").is_some_and(is_domain_name) || is_domain_name(d);
            if !ok {
                return Err(bad(
                    format!("gateway.locate_in_overlay[{i}]"),
                    format!("{d:?} is not a domain name, \"*\" or \"*.domain\""),
                ));
            }
        }
        if !is_domain_name(self.enum_suffix.trim()) {
            return Err(bad(
                "gateway.enum_suffix",
                format!("{:?} is not a domain name", self.enum_suffix),
            ));
        }
        if let Some(p) = &self.pstn {
            p.validate()?;
        }
        if let Some(u) = &self.upstream {
            u.validate(self)?;
        }
        Ok(())
    }

    /// The domains to serve in DNS: [`GatewayConfig::domains`], or the
    /// node's own domains when that list is empty.
    pub fn served_domains(&self, node_domains: &[String]) -> Vec<String> {
        let list = if self.domains.is_empty() {
            node_domains
        } else {
            &self.domains
        };
        list.iter()
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
            .collect()
    }

    /// Whether `domain` is one of [`GatewayConfig::domains`].
    pub fn serves(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| same_domain(d.trim(), domain))
    }

    /// Whether users of the foreign `domain` are looked up in the ring before
    /// DNS (`locate_in_overlay`).
    pub fn locates_in_overlay(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.');
        self.locate_in_overlay.iter().any(|entry| {
            let entry = entry.trim();
            if entry == "*" {
                return true;
            }
            if let Some(parent) = entry.strip_prefix("*.") {
                let parent = parent.trim_end_matches('.');
                return domain.len() > parent.len() + 1
                    && domain[domain.len() - parent.len()..].eq_ignore_ascii_case(parent)
                    && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.';
            }
            same_domain(entry, domain)
        })
    }

    /// The zones the DNS server serves ([`GatewayConfig::served_domains`]),
    /// with [`GatewayConfig::dns_ttl`].
    pub fn zone_configs(&self, node_domains: &[String]) -> Vec<p2psip_dns::ZoneConfig> {
        self.served_domains(node_domains)
            .into_iter()
            .map(|d| {
                let mut z = p2psip_dns::ZoneConfig::new(d);
                z.ttl = self.dns_ttl;
                z
            })
            .collect()
    }

    /// Resolver settings for RFC 3263 and ENUM lookups.
    pub fn resolver_config(&self) -> p2psip_dns::ResolverConfig {
        p2psip_dns::ResolverConfig {
            nameserver: self.nameserver,
            ..Default::default()
        }
    }
}

impl PstnConfig {
    fn validate(&self) -> Result<(), GatewayConfigError> {
        if self.address.trim().is_empty() {
            return Err(bad("gateway.pstn.address", "required"));
        }
        if !is_host_port(self.address.trim()) {
            return Err(bad(
                "gateway.pstn.address",
                format!("{:?} is not host[:port]", self.address),
            ));
        }
        if !matches!(self.transport.to_ascii_lowercase().as_str(), "udp" | "tcp") {
            return Err(bad(
                "gateway.pstn.transport",
                format!("{:?}: must be udp or tcp", self.transport),
            ));
        }
        check_credentials("gateway.pstn", &self.username, &self.password)?;
        for (i, r) in self.prefixes.iter().enumerate() {
            let key = format!("gateway.pstn.prefixes[{i}]");
            if !r.prefix.chars().all(|c| c.is_ascii_digit()) {
                return Err(bad(format!("{key}.prefix"), "must be digits"));
            }
            if r.prefix.len() > 15 {
                return Err(bad(format!("{key}.prefix"), "longer than an E.164 number"));
            }
            if let Some(j) = self.prefixes[..i].iter().position(|o| o.prefix == r.prefix) {
                return Err(bad(
                    format!("{key}.prefix"),
                    format!("{:?} is already the prefix of prefixes[{j}]", r.prefix),
                ));
            }
            if r.strip > 15 {
                return Err(bad(format!("{key}.strip"), "must be at most 15"));
            }
            let add = r.add.strip_prefix('+').unwrap_or(&r.add);
            if !add.chars().all(|c| c.is_ascii_digit()) {
                return Err(bad(
                    format!("{key}.add"),
                    "must be digits, optionally after a leading '+'",
                ));
            }
        }
        Ok(())
    }

    /// Whether [`PstnConfig::transport`] is TCP.
    pub fn is_tcp(&self) -> bool {
        self.transport.eq_ignore_ascii_case("tcp")
    }

    /// Digest credentials, when configured.
    pub fn credentials(&self) -> Option<crate::digest::Credentials> {
        Some(crate::digest::Credentials {
            username: self.username.clone()?,
            password: self.password.clone()?,
        })
    }
}

impl UpstreamConfig {
    fn validate(&self, gw: &GatewayConfig) -> Result<(), GatewayConfigError> {
        if self.registrar.trim().is_empty() {
            return Err(bad("gateway.upstream.registrar", "required"));
        }
        if !is_host_port(self.registrar.trim()) {
            return Err(bad(
                "gateway.upstream.registrar",
                format!("{:?} is not host[:port]", self.registrar),
            ));
        }
        if self.domain.trim().is_empty() {
            return Err(bad("gateway.upstream.domain", "required"));
        }
        if !is_domain_name(self.domain.trim()) {
            return Err(bad(
                "gateway.upstream.domain",
                format!("{:?} is not a domain name", self.domain),
            ));
        }
        if gw.serves(self.domain.trim()) {
            return Err(bad(
                "gateway.upstream.domain",
                format!("{:?} is an overlay domain of this gateway", self.domain),
            ));
        }
        check_credentials("gateway.upstream", &self.username, &self.password)?;
        if self.expires == 0 {
            return Err(bad("gateway.upstream.expires", "must be at least 1 second"));
        }
        if let CrossUsers::List(users) = &self.users {
            for (i, u) in users.iter().enumerate() {
                if !is_user_part(u) {
                    return Err(bad(
                        format!("gateway.upstream.users[{i}]"),
                        format!("{u:?} is not a SIP user name (no '@', no spaces)"),
                    ));
                }
            }
        }
        if let Some(d) = &self.overlay_domain
            && !is_domain_name(d.trim())
        {
            return Err(bad(
                "gateway.upstream.overlay_domain",
                format!("{d:?} is not a domain name"),
            ));
        }
        Ok(())
    }

    /// Digest credentials, when configured.
    pub fn credentials(&self) -> Option<crate::digest::Credentials> {
        Some(crate::digest::Credentials {
            username: self.username.clone()?,
            password: self.password.clone()?,
        })
    }

    /// Whether the overlay user `user@domain` is cross-registered.
    pub fn covers(&self, user: &str, domain: &str) -> bool {
        self.overlay_domain
            .as_deref()
            .is_none_or(|d| same_domain(d.trim(), domain))
            && self.users.covers(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node embeds `[gateway]` in its own file; parse it the same way.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        gateway: GatewayConfig,
    }

    fn parse(text: &str) -> Result<GatewayConfig, String> {
        toml::from_str::<File>(text)
            .map(|f| f.gateway)
            .map_err(|e| e.message().replace('\n', " "))
    }

    const FULL: &str = r#"
[gateway]
domains = ["overlay.test"]
dns_listen = "127.0.0.1:5353"
dns_ttl = 20
nameserver = "127.0.0.1:5353"
locate_in_overlay = ["legacy.test", "*.corp.test"]
enum_suffix = "e164.test"

[gateway.pstn]
address = "pstn.legacy.test:5060"
transport = "tcp"
username = "gw"
password = "secret"
prefixes = [
  { prefix = "1212", strip = 1, add = "" },
  { prefix = "", strip = 0, add = "00" },
]

[gateway.upstream]
registrar = "127.0.0.1:5080"
domain = "legacy.test"
username = "gateway"
password = "pw"
expires = 600
users = "all"
"#;

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, GatewayConfig::default());
        assert_eq!(c.dns_ttl, 30);
        assert_eq!(c.enum_suffix, "e164.arpa");
        c.validate().unwrap();
    }

    #[test]
    fn full_example_parses_and_validates() {
        let c = parse(FULL).unwrap();
        c.validate().unwrap();
        assert_eq!(c.dns_listen, Some("127.0.0.1:5353".parse().unwrap()));
        let p = c.pstn.as_ref().unwrap();
        assert!(p.is_tcp());
        assert_eq!(p.prefixes.len(), 2);
        assert_eq!(p.prefixes[0].strip, 1);
        let u = c.upstream.as_ref().unwrap();
        assert_eq!(u.users, CrossUsers::All);
        assert_eq!(u.expires, 600);
        assert!(c.locates_in_overlay("legacy.test"));
        assert!(c.locates_in_overlay("a.corp.test"));
        assert!(!c.locates_in_overlay("corp.test"));
        assert!(!c.locates_in_overlay("xcorp.test"));
        assert_eq!(c.zone_configs(&[])[0].ttl, 20);
        assert_eq!(
            c.served_domains(&["node.test".into()]),
            vec!["overlay.test"]
        );
        let empty = GatewayConfig::default();
        assert_eq!(
            empty.served_domains(&["Node.test.".into()]),
            vec!["node.test"]
        );
        assert_eq!(c.resolver_config().nameserver, c.nameserver);
    }

    #[test]
    fn users_all_or_list() {
        let c = parse("[gateway.upstream]\nusers = \"all\"").unwrap();
        assert_eq!(c.upstream.unwrap().users, CrossUsers::All);
        let c = parse("[gateway.upstream]\nusers = \"ALL\"").unwrap();
        assert_eq!(c.upstream.unwrap().users, CrossUsers::All);
        let c = parse("[gateway.upstream]\nusers = [\"alice\", \"bob\"]").unwrap();
        let users = c.upstream.unwrap().users;
        assert_eq!(users, CrossUsers::List(vec!["alice".into(), "bob".into()]));
        assert!(users.covers("bob") && !users.covers("carol"));
        let err = parse("[gateway.upstream]\nusers = \"some\"").unwrap_err();
        assert!(err.contains("\"all\" or a list"), "{err}");
        let err = parse("[gateway.upstream]\nusers = 3").unwrap_err();
        assert!(err.contains("\"all\" or a list"), "{err}");
        // Default: nobody.
        let c = parse("[gateway.upstream]\nregistrar = \"r.test\"").unwrap();
        assert!(!c.upstream.unwrap().users.covers("alice"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = parse("[gateway]\nbogus = 1").unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        let err = parse("[gateway.pstn]\nadress = \"x\"").unwrap_err();
        assert!(err.contains("adress"), "{err}");
    }

    fn invalid(text: &str) -> String {
        let c = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let err = c.validate().expect_err(text).to_string();
        assert!(!err.contains('\n'), "{err}");
        err
    }

    #[test]
    fn errors_name_the_key_in_one_line() {
        let pstn = "[gateway.pstn]\naddress = \"gw.test\"\n";
        assert_eq!(
            invalid(&format!(
                "{pstn}prefixes = [{{ prefix = \"1\" }}, {{ prefix = \"12a\" }}]"
            )),
            "gateway.pstn.prefixes[1].prefix: must be digits"
        );
        assert!(
            invalid(&format!(
                "{pstn}prefixes = [{{ prefix = \"1\" }}, {{ prefix = \"1\" }}]"
            ))
            .starts_with("gateway.pstn.prefixes[1].prefix:")
        );
        assert!(
            invalid(&format!("{pstn}prefixes = [{{ add = \"x\" }}]"))
                .starts_with("gateway.pstn.prefixes[0].add:")
        );
        assert!(
            invalid(&format!("{pstn}transport = \"sctp\"")).starts_with("gateway.pstn.transport:")
        );
        assert!(invalid(&format!("{pstn}username = \"u\"")).starts_with("gateway.pstn.password:"));
        assert_eq!(invalid("[gateway.pstn]"), "gateway.pstn.address: required");
        assert!(invalid("[gateway.pstn]\naddress = \"a b\"").starts_with("gateway.pstn.address:"));
        assert!(
            invalid("[gateway]\ndomains = [\"ok.test\", \"bad domain\"]")
                .starts_with("gateway.domains[1]:")
        );
        assert!(invalid("[gateway]\ndns_ttl = 0").starts_with("gateway.dns_ttl:"));
        assert!(invalid("[gateway]\nenum_suffix = \"\"").starts_with("gateway.enum_suffix:"));
        assert!(
            invalid("[gateway]\nlocate_in_overlay = [\"*\", \"x y\"]")
                .starts_with("gateway.locate_in_overlay[1]:")
        );
        let up = "[gateway.upstream]\nregistrar = \"127.0.0.1:5080\"\n";
        assert_eq!(invalid(up), "gateway.upstream.domain: required");
        assert!(
            invalid(&format!(
                "{up}domain = \"legacy.test\"\nusers = [\"al ice\"]"
            ))
            .starts_with("gateway.upstream.users[0]:")
        );
        assert!(
            invalid(&format!("{up}domain = \"legacy.test\"\nexpires = 0"))
                .starts_with("gateway.upstream.expires:")
        );
        assert!(
            invalid(&format!(
                "[gateway]\ndomains = [\"legacy.test\"]\n{up}domain = \"legacy.test\""
            ))
            .starts_with("gateway.upstream.domain:")
        );
        assert!(
            invalid("[gateway.upstream]\nregistrar = \"host:99999\"\ndomain = \"l.test\"")
                .starts_with("gateway.upstream.registrar:")
        );
    }

    #[test]
    fn host_port_forms() {
        for ok in [
            "gw.test",
            "gw.test:5060",
            "10.0.0.1",
            "10.0.0.1:5070",
            "[::1]:5060",
            "[::1]",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for no in [
            "",
            "gw test",
            "gw.test:",
            "gw.test:0",
            "[::1",
            "-gw.test",
            "gw.test:x",
        ] {
            assert!(!is_host_port(no), "{no}");
        }
    }
}
