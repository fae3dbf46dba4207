//! The node's configuration: embedded defaults, a TOML file with a key for
//! every flag, and the command line on top. A bad value is reported in one
//! line naming the key and why.
//!
//! Over 800 lines: one serde section per config table with its checks beside
//! it; the next split moves each `[section]` into `config/` files.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use p2psip_bridge::config::GatewayConfig;

use crate::auth::guard::Limits;
use crate::auth::users::Algorithm;
use crate::auth::{AuthConfig, AuthMode};
use crate::proxy::RoutingMode;
use crate::registrar::RegistrarConfig;

/// Everything a node is started with.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address for SIP over UDP and TCP.
    pub sip: SocketAddr,
    /// Address for SIP over TLS (needs `tls_cert` and `tls_key`).
    pub sips: Option<SocketAddr>,
    /// PEM file: the node's TLS certificate (its chain, the node's first).
    pub tls_cert: Option<PathBuf>,
    /// PEM file: the certificate's private key.
    pub tls_key: Option<PathBuf>,
    /// PEM file: the CA certificates outgoing TLS connections verify servers against.
    pub tls_ca: Option<PathBuf>,
    /// Most TCP/TLS connections one IP address may have open to the node.
    pub max_connections_per_source: usize,
    /// Domains this node serves.
    pub domains: Vec<String>,
    /// Directory for what must survive a restart.
    pub data: Option<PathBuf>,
    /// `proxy` or `redirect`.
    pub routing: RoutingMode,
    /// Overlay nodes to join through; empty: the saved peers, else a ring of one.
    pub join: Vec<SocketAddr>,
    /// Copies of each item in the ring.
    pub replicas: usize,
    /// Address for the HTTP status page and metrics.
    pub http: Option<SocketAddr>,
    /// The same HTTP window over TLS (`tls_cert`, `tls_key`): where users
    /// sign up and keep their buddy lists from other machines.
    pub https: Option<SocketAddr>,
    /// Find peers on the LAN by multicast REGISTER (sip.mcast.net).
    pub discover: bool,
    /// The port of the discovery multicast group.
    pub discover_port: u16,
    pub registrar: RegistrarSection,
    /// The hybrid gateway (`[gateway]`; see docs/gateway.md).
    pub gateway: GatewayConfig,
    /// The users file (`p2psip users add`): turns digest authentication on.
    pub users: Option<PathBuf>,
    /// `digest` or `open`; unset: `digest` with a users file, `open` on
    /// loopback without one, and a refusal to start elsewhere.
    pub auth: Option<AuthMode>,
    /// Peers whose requests need no credentials (legacy registrar, PSTN gateway).
    pub trusted: Vec<IpAddr>,
    /// How much one source may ask (`[limits]`).
    pub limits: Option<Limits>,
    /// Digest algorithms offered in challenges, in order: "MD5", "SHA-256".
    pub auth_algorithms: Vec<Algorithm>,
    /// A file holding the overlay's shared secret: only nodes with it are
    /// members of the ring (docs/security.md "Overlay admission").
    pub overlay_secret: Option<PathBuf>,
    /// Certificate mode (docs/security.md "Certificate mode"): the overlay
    /// CA, this node's certificate (from `p2psip certs node`) and its key.
    pub overlay_ca: Option<PathBuf>,
    pub node_cert: Option<PathBuf>,
    pub node_key: Option<PathBuf>,
    /// Serials (hex) of node certificates no longer admitted.
    pub overlay_revoked: Vec<String>,
    /// How much one member may store and ask (`[overlay_limits]`).
    pub overlay_limits: OverlayLimits,
    /// Member or client of a super-node (`[ring]`, docs/nat.md).
    pub ring: RingSection,
    /// Offline instant messages (`[messages]`, docs/services.md).
    pub messages: MessagesSection,
    /// Presence and message-summary (`[presence]`, docs/services.md).
    pub presence: PresenceSection,
    /// Voicemail for offline users (`[voicemail]`, docs/services.md).
    pub voicemail: VoicemailSection,
    /// The media relay for calls behind NAT (`[relay]`, docs/nat.md).
    pub relay: RelaySection,
    /// A TURN server for phones' media (`[turn]`, docs/nat.md).
    pub turn: TurnSection,
    /// Sign-up and buddy lists over HTTP (`[signup]`, docs/services.md).
    pub signup: SignupSection,
    /// Conferences (`[conference]`, docs/services.md).
    pub conference: ConferenceSection,
    /// The address other nodes and phones reach this node at, when it is not
    /// the bound `sip` one (a port mapping): put in Via, Contact,
    /// Record-Route and the node's place in the ring.
    pub advertise: Option<SocketAddr>,
    /// `error`, `warn`, `info`, `debug` or `trace`, or a `RUST_LOG`-style
    /// filter; `RUST_LOG` overrides it. Changeable at run time (SIGHUP).
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: String,
}

/// The `[overlay_limits]` section: what one member of the ring may store
/// at a node and how fast it may ask (docs/security.md "Records").
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverlayLimits {
    /// Items a node keeps for one writer; a new one beyond is refused.
    pub items_per_writer: usize,
    /// Overlay requests one member may send per `interval_secs`; beyond: 503.
    pub requests_per_interval: u32,
    pub interval_secs: u64,
}

impl Default for OverlayLimits {
    fn default() -> Self {
        let ring = crate::ring::RingConfig::default();
        OverlayLimits {
            items_per_writer: ring.max_items_per_writer,
            requests_per_interval: ring.member_requests,
            interval_secs: ring.member_interval.as_secs(),
        }
    }
}

/// The `[ring]` section: how the node takes part in the ring
/// (docs/nat.md "Super-nodes and clients").
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingSection {
    /// `member` (join), `client` (attach to a super-node) or `auto` (a
    /// client unless a member can reach it).
    pub role: RoleSetting,
    /// Seconds a client stays attached and reachable before it joins the
    /// ring; 0: never.
    pub promote_after_s: u64,
    /// Clients this node serves as a super-node; beyond, an attach is refused.
    pub max_clients: usize,
    /// Seconds between a client's refreshes of its attachment.
    pub client_refresh_s: u64,
    /// Semi-recursive lookups for the node's own operations (the last hop
    /// answers the originator directly); off by default (docs/ring.md).
    pub semi_recursive: bool,
}

/// `[ring] role`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RoleSetting {
    #[default]
    Member,
    Client,
    Auto,
}

impl Default for RingSection {
    fn default() -> Self {
        let ring = crate::ring::RingConfig::default();
        RingSection {
            role: RoleSetting::Member,
            promote_after_s: ring.promote_after.map_or(0, |d| d.as_secs()),
            max_clients: ring.max_clients,
            client_refresh_s: ring.client_refresh.as_secs(),
            semi_recursive: ring.semi_recursive,
        }
    }
}

impl RingSection {
    /// The ring's own settings from this section.
    pub fn apply(&self, ring: &mut crate::ring::RingConfig) {
        use crate::ring::Role;
        ring.role = match self.role {
            RoleSetting::Member => Role::Member,
            RoleSetting::Client => Role::Client,
            RoleSetting::Auto => Role::Auto,
        };
        ring.promote_after = (self.promote_after_s > 0)
            .then(|| std::time::Duration::from_secs(self.promote_after_s));
        ring.max_clients = self.max_clients;
        ring.client_refresh = std::time::Duration::from_secs(self.client_refresh_s);
        ring.semi_recursive = self.semi_recursive;
    }
}

/// The `[messages]` section: offline messages kept per user.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesSection {
    /// Messages kept per user at most (beyond: 486).
    pub max_per_user: usize,
    /// Bytes kept per user at most (beyond: 507).
    pub max_bytes_per_user: usize,
    /// Seconds a stored message is kept.
    pub keep_s: u64,
    /// Seconds a registered user is remembered as known.
    pub known_s: u64,
}

impl Default for MessagesSection {
    fn default() -> Self {
        let d = crate::messages::MessagesConfig::default();
        MessagesSection {
            max_per_user: d.max_count,
            max_bytes_per_user: d.max_bytes,
            keep_s: d.keep_for.as_secs(),
            known_s: d.known_for.as_secs(),
        }
    }
}

/// The key set on line `line` (from 1) of a TOML text, with its section
/// (`presence.enabled`), when that line is a `key = value`.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let mut section = String::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            section = name.trim().to_string();
        }
        if i + 1 == line {
            let (key, _) = l.split_once('=')?;
            let key = key.trim().trim_matches('"');
            if key.is_empty() || key.starts_with('[') {
                return None;
            }
            return Some(match section.is_empty() {
                true => key.to_string(),
                false => format!("{section}.{key}"),
            });
        }
    }
    None
}

/// The `[presence]` section: SUBSCRIBE/NOTIFY and PUBLISH for our users.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceSection {
    /// Serve SUBSCRIBE (`presence`, `message-summary`) and PUBLISH here.
    pub enabled: bool,
    /// Seconds a subscription or publication lasts at least (below: 423).
    pub min_expires: u32,
    /// Seconds at most (longer ones are shortened).
    pub max_expires: u32,
}

impl Default for PresenceSection {
    fn default() -> Self {
        let d = crate::presence::PresenceConfig::default();
        PresenceSection {
            enabled: d.enabled,
            min_expires: d.min_expires,
            max_expires: d.max_expires,
        }
    }
}

/// The `[voicemail]` section: calls to offline users recorded.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoicemailSection {
    /// Answer calls to offline users and record them (off by default).
    pub enabled: bool,
    /// The longest recording, in seconds (1 to 300).
    pub max_seconds: u64,
    /// The UDP ports of the RTP sockets, "LOW-HIGH".
    pub port_range: String,
    /// Recordings kept per user at most (beyond: 486).
    pub max_per_user: usize,
    /// Seconds a recording is kept.
    pub keep_s: u64,
    /// Seconds a call to a user with live bindings may ring unanswered
    /// before voicemail takes it (0: never on no-answer; at most 3600).
    pub no_answer_s: u64,
}

impl Default for VoicemailSection {
    fn default() -> Self {
        let d = crate::voicemail::VoicemailConfig::default();
        VoicemailSection {
            enabled: d.enabled,
            max_seconds: d.max_length.as_secs(),
            port_range: format!("{}-{}", d.ports.0, d.ports.1),
            max_per_user: d.max_per_user,
            keep_s: d.keep_for.as_secs(),
            no_answer_s: d.no_answer.map_or(0, |d| d.as_secs()),
        }
    }
}

/// The `[relay]` section: media anchored for calls behind NAT.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySection {
    /// `nat` (a side behind NAT, no ICE: the default), `always` or `off`.
    pub mode: crate::relay::RelayMode,
    /// The UDP ports of the relay sockets, "LOW-HIGH" (four per call).
    pub ports: String,
    /// Calls relayed at once at most (beyond: not anchored).
    pub max_sessions: usize,
    /// Seconds of silence after which an answered call's relay ends.
    pub idle_s: u64,
}

impl Default for RelaySection {
    fn default() -> Self {
        let d = crate::relay::RelayConfig::default();
        RelaySection {
            mode: d.mode,
            ports: format!("{}-{}", d.ports.0, d.ports.1),
            max_sessions: d.max_sessions,
            idle_s: d.idle.as_secs(),
        }
    }
}

/// The `[turn]` section: a TURN server (RFC 8656) with the users' credentials.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnSection {
    /// The TURN UDP address (flag `--turn`); unset: no TURN server.
    pub listen: Option<SocketAddr>,
    /// The credentials' realm; unset: the first of `domains`.
    pub realm: Option<String>,
    /// The relay ports, "LOW-HIGH".
    pub ports: String,
    /// Allocations at most, in all and per user.
    pub max_allocations: usize,
    pub max_per_user: usize,
    /// Seconds between the TURN server's advertisements in the ring (each
    /// lives three), and for how long a set found there is reused.
    pub advertise_s: u64,
}

impl Default for TurnSection {
    fn default() -> Self {
        TurnSection {
            listen: None,
            realm: None,
            ports: "49152-65535".into(),
            max_allocations: 1000,
            max_per_user: 10,
            advertise_s: 10,
        }
    }
}

/// The `[signup]` section: users claim names themselves (`POST /signup`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignupSection {
    /// Serve sign-up (off by default; needs digest authentication).
    pub enabled: bool,
    /// Sign-ups one source IP may attempt per `window_s` (beyond: 429).
    pub per_source: u32,
    pub window_s: u64,
    /// Days a claimed name lives in the ring.
    pub keep_days: u64,
    /// Buddy-list reads and writes one source may make per `window_s`.
    pub buddy_requests: u32,
}

impl Default for SignupSection {
    fn default() -> Self {
        let d = crate::auth::signup::SignupConfig::default();
        SignupSection {
            enabled: d.enabled,
            per_source: d.per_source,
            window_s: d.window.as_secs(),
            keep_days: d.keep_for.as_secs() / 86_400,
            buddy_requests: d.buddy_requests,
        }
    }
}

/// The `[conference]` section: rooms served by their focus node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConferenceSection {
    /// Serve `sip:conf-NAME@DOMAIN` and the rooms below (on by default).
    pub enabled: bool,
    /// Participants of one room at most (1 to 1000; beyond: 486).
    pub max_participants: usize,
    /// The UDP ports of the participants' RTP sockets, "LOW-HIGH".
    pub port_range: String,
    /// Rooms with a name of their own (`[[conference.room]]`); the same
    /// list on every node of the ring.
    pub room: Vec<ConferenceRoom>,
}

/// One `[[conference.room]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConferenceRoom {
    /// The user part of the room's address.
    pub name: String,
    /// Digits (1 to 16) keyed in after answer before one is heard.
    pub pin: Option<String>,
}

impl Default for ConferenceSection {
    fn default() -> Self {
        let d = crate::conference::ConferenceConfig::default();
        ConferenceSection {
            enabled: d.enabled,
            max_participants: d.max_participants,
            port_range: format!("{}-{}", d.ports.0, d.ports.1),
            room: Vec::new(),
        }
    }
}

/// `"LOW-HIGH"` as two ports, LOW ≤ HIGH, neither 0.
pub fn port_range(text: &str) -> Option<(u16, u16)> {
    let (low, high) = text.split_once('-')?;
    let low: u16 = low.trim().parse().ok()?;
    let high: u16 = high.trim().parse().ok()?;
    (low != 0 && low <= high).then_some((low, high))
}

/// The `[registrar]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarSection {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts: usize,
    /// Seconds between OPTIONS keep-alives to phones behind NAT without
    /// Outbound (0: none).
    pub natping_s: u64,
}

impl Default for RegistrarSection {
    fn default() -> Self {
        let d = RegistrarConfig::default();
        RegistrarSection {
            min_expires: d.min_expires,
            max_expires: d.max_expires,
            default_expires: d.default_expires,
            max_contacts: d.max_contacts,
            natping_s: d.natping.map_or(0, |t| t.as_secs()),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sip: SocketAddr::from(([127, 0, 0, 1], 5060)),
            sips: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            max_connections_per_source: crate::sip::transport::MAX_CONNECTIONS_PER_SOURCE,
            domains: Vec::new(),
            data: None,
            routing: RoutingMode::Proxy,
            join: Vec::new(),
            // Three. Five would leave some copy of all but ~0.03 % of the
            // records when 20 % of the nodes crash at once (three: ~0.8 %,
            // found again once their registrars store them), for 5/3 of the
            // memory and replica traffic; not the default until measured.
            replicas: 3,
            http: None,
            https: None,
            discover: false,
            discover_port: 5060,
            registrar: RegistrarSection::default(),
            gateway: GatewayConfig::default(),
            users: None,
            auth: None,
            trusted: Vec::new(),
            limits: None,
            auth_algorithms: vec![Algorithm::Md5, Algorithm::Sha256],
            overlay_secret: None,
            overlay_ca: None,
            node_cert: None,
            node_key: None,
            overlay_revoked: Vec::new(),
            overlay_limits: OverlayLimits::default(),
            ring: RingSection::default(),
            messages: MessagesSection::default(),
            presence: PresenceSection::default(),
            voicemail: VoicemailSection::default(),
            relay: RelaySection::default(),
            turn: TurnSection::default(),
            signup: SignupSection::default(),
            conference: ConferenceSection::default(),
            advertise: None,
            log_level: "info".into(),
            log_format: "text".into(),
        }
    }
}

/// A configuration problem, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {why}")]
    Read { path: String, why: String },
    #[error("config file {path}: {why}")]
    Parse { path: String, why: String },
    #[error("config key `{key}`: {why}")]
    Invalid { key: &'static str, why: String },
    #[error("config key {0}")]
    Gateway(String),
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        Config::from_toml(&text).map_err(|why| ConfigError::Parse {
            path: path.display().to_string(),
            why,
        })
    }

    /// Parses TOML text; the error is one line with the line number and key.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str::<Config>(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().replace('\n', " ");
            match line {
                Some(line) => match key_on_line(text, line) {
                    Some(key) => format!("config key `{key}` (line {line}): {message}"),
                    None => format!("line {line}: {message}"),
                },
                None => message,
            }
        })
    }

    /// The authentication the node runs with: `auth` as set, or what the
    /// users file and the bound address imply. An open node on an address
    /// outside 127.0.0.0/8 must be asked for explicitly.
    pub fn auth_config(&self) -> Result<AuthConfig, ConfigError> {
        let mode = match (self.auth, &self.users) {
            (Some(AuthMode::Open), Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "auth",
                    why: "\"open\" with a users file: drop one of the two".into(),
                });
            }
            (Some(mode), _) => mode,
            (None, Some(_)) => AuthMode::Digest,
            (None, None) if self.sip.ip().is_loopback() => AuthMode::Open,
            (None, None) => {
                return Err(ConfigError::Invalid {
                    key: "auth",
                    why: format!(
                        "the node listens on {}, outside 127.0.0.0/8, with no users file: \
                         set `users` (p2psip users add) or `auth = \"digest\"`, or \
                         `auth = \"open\"` to serve anyone",
                        self.sip
                    ),
                });
            }
        };
        let limits = match (&self.limits, mode) {
            (Some(limits), _) => limits.clone(),
            (None, AuthMode::Digest) => Limits::for_auth(),
            (None, AuthMode::Open) => Limits::default(),
        };
        if self.auth_algorithms.is_empty() {
            return Err(ConfigError::Invalid {
                key: "auth_algorithms",
                why: "offers no algorithm: give \"MD5\", \"SHA-256\" or both".into(),
            });
        }
        Ok(AuthConfig {
            mode,
            limits,
            trusted: self.trusted.clone(),
            algorithms: self.auth_algorithms.clone(),
        })
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.auth_config()?;
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid {
                key: "log_format",
                why: format!("{:?} is neither \"text\" nor \"json\"", self.log_format),
            });
        }
        if let Some(advertise) = self.advertise
            && (advertise.ip().is_unspecified() || advertise.port() == 0)
        {
            return Err(ConfigError::Invalid {
                key: "advertise",
                why: format!(
                    "{advertise} is not an address others can reach (no 0.0.0.0, no port 0)"
                ),
            });
        }
        for domain in &mut self.domains {
            *domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
            let ok = !domain.is_empty()
                && domain.split('.').all(|label| {
                    !label.is_empty()
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "domains",
                    why: format!("{domain:?} is not a domain name"),
                });
            }
        }
        let r = &self.registrar;
        if r.min_expires == 0 || r.min_expires > r.max_expires {
            return Err(ConfigError::Invalid {
                key: "registrar.min_expires",
                why: format!("must be between 1 and max_expires ({})", r.max_expires),
            });
        }
        if r.default_expires < r.min_expires || r.default_expires > r.max_expires {
            return Err(ConfigError::Invalid {
                key: "registrar.default_expires",
                why: "must lie between min_expires and max_expires".into(),
            });
        }
        if r.max_contacts == 0 {
            return Err(ConfigError::Invalid {
                key: "registrar.max_contacts",
                why: "must be at least 1".into(),
            });
        }
        let p = &self.presence;
        if p.min_expires == 0 || p.min_expires > p.max_expires {
            return Err(ConfigError::Invalid {
                key: "presence.min_expires",
                why: format!("must be between 1 and max_expires ({})", p.max_expires),
            });
        }
        if p.max_expires > 86_400 {
            return Err(ConfigError::Invalid {
                key: "presence.max_expires",
                why: format!("{} is more than a day", p.max_expires),
            });
        }
        let l = &self.overlay_limits;
        for (key, value) in [
            ("overlay_limits.items_per_writer", l.items_per_writer as u64),
            (
                "overlay_limits.requests_per_interval",
                u64::from(l.requests_per_interval),
            ),
            ("overlay_limits.interval_secs", l.interval_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    why: "must be at least 1".into(),
                });
            }
        }
        if l.interval_secs > 3600 {
            return Err(ConfigError::Invalid {
                key: "overlay_limits.interval_secs",
                why: format!("{} is more than an hour", l.interval_secs),
            });
        }
        let r = &self.ring;
        if r.client_refresh_s == 0 || r.client_refresh_s > 3600 {
            return Err(ConfigError::Invalid {
                key: "ring.client_refresh_s",
                why: format!("{} is not between 1 and 3600", r.client_refresh_s),
            });
        }
        if r.promote_after_s > 30 * 86_400 {
            return Err(ConfigError::Invalid {
                key: "ring.promote_after_s",
                why: format!("{} is more than 30 days", r.promote_after_s),
            });
        }
        if r.max_clients > 100_000 {
            return Err(ConfigError::Invalid {
                key: "ring.max_clients",
                why: format!("{} is more than 100000", r.max_clients),
            });
        }
        if r.role != RoleSetting::Member && self.join.is_empty() {
            return Err(ConfigError::Invalid {
                key: "ring.role",
                why: "a client needs a member to attach to: give `join`".into(),
            });
        }
        if self.replicas == 0 || self.replicas > 8 {
            return Err(ConfigError::Invalid {
                key: "replicas",
                why: format!(
                    "{} is not between 1 and 8 (the successor list)",
                    self.replicas
                ),
            });
        }
        self.gateway
            .validate()
            .map_err(|e| ConfigError::Gateway(e.to_string()))?;
        if self.gateway.dns_listen.is_some()
            && self.gateway.served_domains(&self.domains).is_empty()
        {
            return Err(ConfigError::Invalid {
                key: "gateway.dns_listen",
                why: "a gateway serves the DNS of its domains: give at least one domain".into(),
            });
        }
        if self.max_connections_per_source == 0 {
            return Err(ConfigError::Invalid {
                key: "max_connections_per_source",
                why: "must be at least 1".into(),
            });
        }
        if let Some(sips) = self.sips
            && sips.ip().is_unspecified()
        {
            return Err(ConfigError::Invalid {
                key: "sips",
                why: "give the address phones reach this node at, not 0.0.0.0 (it goes into Via and Record-Route)".into(),
            });
        }
        if self.https.is_some() && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Err(ConfigError::Invalid {
                key: "https",
                why: "needs a certificate and its key (tls_cert, tls_key)".into(),
            });
        }
        if port_range(&self.voicemail.port_range).is_none() {
            return Err(ConfigError::Invalid {
                key: "voicemail.port_range",
                why: format!(
                    "{:?} is not LOW-HIGH with 1 <= LOW <= HIGH <= 65535",
                    self.voicemail.port_range
                ),
            });
        }
        self.validate_relay()?;
        for (key, zero) in [
            ("signup.per_source", self.signup.per_source == 0),
            (
                "signup.window_s",
                !(1..=86_400).contains(&self.signup.window_s),
            ),
            (
                "signup.keep_days",
                !(1..=3650).contains(&self.signup.keep_days),
            ),
            ("signup.buddy_requests", self.signup.buddy_requests == 0),
        ] {
            if zero {
                return Err(ConfigError::Invalid {
                    key,
                    why: "out of range (per_source and buddy_requests at least 1, window_s 1 to 86400, keep_days 1 to 3650)".into(),
                });
            }
        }
        if !(1..=300).contains(&self.voicemail.max_seconds) {
            return Err(ConfigError::Invalid {
                key: "voicemail.max_seconds",
                why: "must be between 1 and 300".into(),
            });
        }
        if self.voicemail.no_answer_s > 3600 {
            return Err(ConfigError::Invalid {
                key: "voicemail.no_answer_s",
                why: "must be between 0 (never on no-answer) and 3600".into(),
            });
        }
        self.validate_turn()?;
        self.validate_conference()?;
        if self.sip.ip().is_unspecified() {
            return Err(ConfigError::Invalid {
                key: "sip",
                why: "give the address phones reach this node at, not 0.0.0.0 (it goes into Via and Record-Route)".into(),
            });
        }
        Ok(())
    }

    /// TLS and the connection limits for the transports; reads the TLS
    /// files (a bad one is an error naming its key and path).
    pub fn transport_options(
        &self,
    ) -> Result<crate::sip::transport::TransportOptions, crate::sip::transport::tls::TlsError> {
        use crate::sip::transport::{Tls, TlsFiles, TransportOptions};
        let files = TlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            ca: self.tls_ca.clone(),
        };
        let any = files.cert.is_some() || files.key.is_some() || files.ca.is_some();
        let server = self.sips.is_some() || self.https.is_some();
        let tls = if server || any {
            Some(Tls::load(&files, server)?)
        } else {
            None
        };
        Ok(TransportOptions {
            sips: self.sips,
            tls,
            max_connections_per_source: self.max_connections_per_source,
            member: None,
        })
    }

    /// The overlay's shared secret, read from `overlay_secret` (trimmed, at
    /// least 16 bytes); `None` when the key is unset (an open ring).
    pub fn overlay_secret(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(path) = &self.overlay_secret else {
            return Ok(None);
        };
        let invalid = |why: String| ConfigError::Invalid {
            key: "overlay_secret",
            why: format!("{}: {why}", path.display()),
        };
        let text = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
        crate::overlay::admission::read_secret(&text)
            .map(Some)
            .map_err(invalid)
    }

    fn validate_relay(&self) -> Result<(), ConfigError> {
        let invalid = |key, why: String| Err(ConfigError::Invalid { key, why });
        let Some((low, high)) = port_range(&self.relay.ports).filter(|(l, h)| h - l >= 3) else {
            return invalid(
                "relay.ports",
                format!(
                    "{:?} is not LOW-HIGH with 1 <= LOW, LOW + 3 <= HIGH <= 65535 (a call takes four ports)",
                    self.relay.ports
                ),
            );
        };
        for (key, other) in [
            ("voicemail.port_range", &self.voicemail.port_range),
            ("conference.port_range", &self.conference.port_range),
        ] {
            if let Some((o_low, o_high)) = port_range(other)
                && self.relay.mode != crate::relay::RelayMode::Off
                && low <= o_high
                && o_low <= high
            {
                return invalid(
                    "relay.ports",
                    format!("{:?} overlaps {key}", self.relay.ports),
                );
            }
        }
        if self.relay.max_sessions == 0 {
            return invalid("relay.max_sessions", "must be at least 1".into());
        }
        if !(1..=3600).contains(&self.relay.idle_s) {
            return invalid("relay.idle_s", "must be between 1 and 3600".into());
        }
        Ok(())
    }

    fn validate_turn(&self) -> Result<(), ConfigError> {
        let t = &self.turn;
        if port_range(&t.ports).is_none() {
            return Err(ConfigError::Invalid {
                key: "turn.ports",
                why: format!(
                    "{:?} is not LOW-HIGH with 1 <= LOW <= HIGH <= 65535",
                    t.ports
                ),
            });
        }
        for (key, value) in [
            ("turn.max_allocations", t.max_allocations),
            ("turn.max_per_user", t.max_per_user),
            ("turn.advertise_s", t.advertise_s as usize),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    why: "must be at least 1".into(),
                });
            }
        }
        let Some(listen) = t.listen else {
            return Ok(());
        };
        if listen.ip().is_unspecified() {
            return Err(ConfigError::Invalid {
                key: "turn.listen",
                why: "give the address clients reach, not 0.0.0.0 (relay sockets are bound on it and it goes into XOR-RELAYED-ADDRESS)".into(),
            });
        }
        if t.realm
            .as_deref()
            .or(self.domains.first().map(String::as_str))
            .is_none()
        {
            return Err(ConfigError::Invalid {
                key: "turn.realm",
                why: "the users' domain: give `realm` or at least one of `domains`".into(),
            });
        }
        Ok(())
    }

    /// `[relay]` as the proxy takes it (checked by [`Config::validate`]).
    pub fn relay_config(&self) -> crate::relay::RelayConfig {
        let r = &self.relay;
        let d = crate::relay::RelayConfig::default();
        crate::relay::RelayConfig {
            mode: r.mode,
            ports: port_range(&r.ports).unwrap_or(d.ports),
            max_sessions: r.max_sessions,
            idle: std::time::Duration::from_secs(r.idle_s),
        }
    }

    /// `[turn]` as the TURN server takes it, with a zero secret the driver
    /// replaces (checked by [`Config::validate`]); `None` without `listen`.
    pub fn turn_config(&self) -> Option<crate::turn::TurnConfig> {
        let t = &self.turn;
        let listen = t.listen?;
        let realm = t.realm.clone().or_else(|| self.domains.first().cloned())?;
        let mut config = crate::turn::TurnConfig::new(listen, realm.to_ascii_lowercase(), [0; 32]);
        config.ports = port_range(&t.ports).unwrap_or(config.ports);
        config.max_allocations = t.max_allocations;
        config.max_per_user = t.max_per_user;
        if let Ok(auth) = self.auth_config() {
            config.limits = auth.limits;
        }
        Some(config)
    }

    /// `[signup]` as the core takes it (checked by [`Config::validate`]).
    pub fn signup_config(&self) -> crate::auth::signup::SignupConfig {
        let s = &self.signup;
        crate::auth::signup::SignupConfig {
            enabled: s.enabled,
            per_source: s.per_source,
            window: std::time::Duration::from_secs(s.window_s),
            keep_for: std::time::Duration::from_secs(s.keep_days * 86_400),
            buddy_requests: s.buddy_requests,
        }
    }

    /// `[voicemail]` as the core takes it (checked by [`Config::validate`]).
    pub fn voicemail_config(&self) -> crate::voicemail::VoicemailConfig {
        let v = &self.voicemail;
        crate::voicemail::VoicemailConfig {
            enabled: v.enabled,
            max_length: std::time::Duration::from_secs(v.max_seconds),
            ports: port_range(&v.port_range).unwrap_or((20000, 20999)),
            max_per_user: v.max_per_user,
            keep_for: std::time::Duration::from_secs(v.keep_s),
            no_answer: (v.no_answer_s > 0).then(|| std::time::Duration::from_secs(v.no_answer_s)),
        }
    }

    /// `[conference]`'s values, each checked.
    fn validate_conference(&self) -> Result<(), ConfigError> {
        let c = &self.conference;
        if port_range(&c.port_range).is_none() {
            return Err(ConfigError::Invalid {
                key: "conference.port_range",
                why: format!(
                    "{:?} is not LOW-HIGH with 1 <= LOW <= HIGH <= 65535",
                    c.port_range
                ),
            });
        }
        if !(1..=1000).contains(&c.max_participants) {
            return Err(ConfigError::Invalid {
                key: "conference.max_participants",
                why: "must be between 1 and 1000".into(),
            });
        }
        for room in &c.room {
            let name_ok = !room.name.is_empty()
                && room.name.len() <= 64
                && room
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
            if !name_ok {
                return Err(ConfigError::Invalid {
                    key: "conference.room.name",
                    why: format!("{:?}: 1 to 64 letters, digits, '-', '_' or '.'", room.name),
                });
            }
            if let Some(pin) = &room.pin
                && (!(1..=16).contains(&pin.len()) || !pin.chars().all(|ch| ch.is_ascii_digit()))
            {
                return Err(ConfigError::Invalid {
                    key: "conference.room.pin",
                    why: format!("room {:?}: 1 to 16 digits", room.name),
                });
            }
        }
        Ok(())
    }

    /// `[conference]` as the core takes it (checked by [`Config::validate`]).
    pub fn conference_config(&self) -> crate::conference::ConferenceConfig {
        let c = &self.conference;
        let d = crate::conference::ConferenceConfig::default();
        crate::conference::ConferenceConfig {
            enabled: c.enabled,
            max_participants: c.max_participants,
            ports: port_range(&c.port_range).unwrap_or(d.ports),
            rooms: c
                .room
                .iter()
                .map(|r| crate::conference::RoomConfig {
                    name: r.name.clone(),
                    pin: r.pin.clone(),
                })
                .collect(),
        }
    }

    pub fn messages_config(&self) -> crate::messages::MessagesConfig {
        let m = &self.messages;
        crate::messages::MessagesConfig {
            max_count: m.max_per_user,
            max_bytes: m.max_bytes_per_user,
            keep_for: std::time::Duration::from_secs(m.keep_s),
            known_for: std::time::Duration::from_secs(m.known_s),
        }
    }

    pub fn presence_config(&self) -> crate::presence::PresenceConfig {
        crate::presence::PresenceConfig {
            enabled: self.presence.enabled,
            min_expires: self.presence.min_expires,
            max_expires: self.presence.max_expires,
        }
    }

    /// Certificate mode, loaded and checked against this node's address;
    /// `None` when `overlay_ca`, `node_cert` and `node_key` are all unset.
    pub fn overlay_identity(
        &self,
    ) -> Result<Option<crate::overlay::identity::Identity>, ConfigError> {
        use crate::overlay::identity::{Identity, IdentityFiles};
        let files = IdentityFiles {
            ca: self.overlay_ca.as_deref(),
            cert: self.node_cert.as_deref(),
            key: self.node_key.as_deref(),
            revoked: &self.overlay_revoked,
        };
        let identity = Identity::load(&files, self.sip).map_err(|e| ConfigError::Invalid {
            key: e.key,
            why: e.why,
        })?;
        if identity.is_some() && self.overlay_secret.is_some() {
            return Err(ConfigError::Invalid {
                key: "overlay_secret",
                why: "cannot be combined with certificate mode (`overlay_ca`): choose one".into(),
            });
        }
        Ok(identity)
    }

    pub fn registrar_config(&self) -> RegistrarConfig {
        RegistrarConfig {
            min_expires: self.registrar.min_expires,
            max_expires: self.registrar.max_expires,
            default_expires: self.registrar.default_expires,
            max_contacts: self.registrar.max_contacts,
            natping: (self.registrar.natping_s > 0)
                .then(|| std::time::Duration::from_secs(self.registrar.natping_s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_example_is_a_valid_config() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("```toml\n")
            .expect("a toml block in the README")
            + 8;
        let end = start + readme[start..].find("```").expect("end of the block");
        let mut config =
            Config::from_toml(&readme[start..end]).expect("the README's config parses");
        config.validate().expect("the README's config is valid");
        assert_eq!(config.domains, vec!["example.test".to_string()]);
        assert!(config.gateway.upstream.is_some());
    }

    #[test]
    fn ring_role_and_promotion_are_read_and_checked() {
        let mut config = Config::from_toml(
            "join = [\"127.0.0.1:5060\"]\n[ring]\nrole = \"client\"\npromote_after_s = 5\nmax_clients = 2\n",
        )
        .expect("parses");
        config.validate().expect("valid");
        let mut ring = crate::ring::RingConfig::default();
        config.ring.apply(&mut ring);
        assert_eq!(ring.role, crate::ring::Role::Client);
        assert_eq!(ring.promote_after, Some(std::time::Duration::from_secs(5)));
        assert_eq!(ring.max_clients, 2);
        let semi = Config::from_toml("[ring]\nsemi_recursive = true\n").expect("parses");
        let mut semi_ring = crate::ring::RingConfig::default();
        semi.ring.apply(&mut semi_ring);
        assert!(semi_ring.semi_recursive);
        let mut never = Config::from_toml("[ring]\npromote_after_s = 0\n").expect("parses");
        never.validate().expect("valid");
        never.ring.apply(&mut ring);
        assert_eq!(ring.promote_after, None);
        let err = Config::from_toml("[ring]\nrole = \"boss\"\n").expect_err("bad role");
        assert!(err.contains("role") && !err.contains('\n'), "{err}");
        let mut alone = Config::from_toml("[ring]\nrole = \"auto\"\n").expect("parses");
        let err = alone
            .validate()
            .expect_err("a client without join")
            .to_string();
        assert!(err.starts_with("config key `ring.role`"), "{err}");
        let mut zero = Config::from_toml("[ring]\nclient_refresh_s = 0\n").expect("parses");
        let err = zero.validate().expect_err("refresh 0").to_string();
        assert!(
            err.starts_with("config key `ring.client_refresh_s`"),
            "{err}"
        );
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::from_toml("").expect("empty config");
        assert_eq!(config.sip.to_string(), "127.0.0.1:5060");
        assert_eq!(config.routing, RoutingMode::Proxy);
    }

    #[test]
    fn errors_name_the_key_in_one_line() {
        let err =
            Config::from_toml("sip = \"127.0.0.1:5070\"\nbogus = 1\n").expect_err("unknown key");
        assert!(err.contains("line 2") && err.contains("bogus"), "{err}");
        assert!(!err.contains('\n'));
        let err = Config::from_toml("routing = \"sideways\"").expect_err("bad routing");
        assert!(err.contains("sideways"), "{err}");
        let mut config = Config::from_toml("domains = [\"bad domain\"]").expect("parses");
        let err = config.validate().expect_err("bad domain").to_string();
        assert!(err.starts_with("config key `domains`"), "{err}");
        let mut config = Config::from_toml("[registrar]\nmin_expires = 0").expect("parses");
        assert!(config.validate().is_err());
    }

    #[test]
    fn presence_bounds_are_checked_by_key() {
        let config = Config::from_toml("").expect("empty config");
        let presence = config.presence_config();
        assert!(presence.enabled);
        assert_eq!((presence.min_expires, presence.max_expires), (60, 3600));
        for (text, key) in [
            ("[presence]\nmin_expires = 0", "presence.min_expires"),
            (
                "[presence]\nmin_expires = 600\nmax_expires = 300",
                "presence.min_expires",
            ),
            ("[presence]\nmax_expires = 100000", "presence.max_expires"),
        ] {
            let mut config = Config::from_toml(text).expect("parses");
            let err = config.validate().expect_err(text).to_string();
            assert!(err.starts_with(&format!("config key `{key}`")), "{err}");
            assert!(!err.contains('\n'));
        }
        let err = Config::from_toml("[presence]\nenabled = \"yes\"").expect_err("not a bool");
        assert!(
            err.starts_with("config key `presence.enabled` (line 2)"),
            "{err}"
        );
        let mut off = Config::from_toml("[presence]\nenabled = false").expect("parses");
        off.validate().expect("valid");
        assert!(!off.presence_config().enabled);
    }

    #[test]
    fn the_relay_section() {
        let mut config = Config::from_toml(
            "[relay]\nmode = \"always\"\nports = \"40000-40099\"\nmax_sessions = 5\nidle_s = 10\n",
        )
        .expect("parses");
        config.validate().expect("valid");
        let r = config.relay_config();
        assert_eq!(r.mode, crate::relay::RelayMode::Always);
        assert_eq!(r.ports, (40000, 40099));
        assert_eq!((r.max_sessions, r.idle.as_secs()), (5, 10));
        assert_eq!(
            Config::default().relay_config().mode,
            crate::relay::RelayMode::Nat
        );
        for (text, key) in [
            ("ports = \"40000-40001\"", "relay.ports"),
            ("ports = \"20500-21500\"", "relay.ports"),
            ("ports = \"21500-22500\"", "relay.ports"),
            ("max_sessions = 0", "relay.max_sessions"),
            ("idle_s = 0", "relay.idle_s"),
        ] {
            let mut config = Config::from_toml(&format!("[relay]\n{text}\n")).expect("parses");
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        assert!(Config::from_toml("[relay]\nmode = \"sometimes\"\n").is_err());
    }

    #[test]
    fn the_turn_section() {
        let mut config = Config::from_toml(
            "domains = [\"example.test\"]\n[turn]\nlisten = \"127.0.0.1:3478\"\nports = \"40000-40009\"\n",
        )
        .expect("parses");
        config.validate().expect("valid");
        let turn = config.turn_config().expect("on");
        assert_eq!(turn.realm, "example.test");
        assert_eq!(turn.ports, (40000, 40009));
        assert!(Config::default().turn_config().is_none());
        for (toml, key) in [
            ("[turn]\nlisten = \"127.0.0.1:3478\"\n", "turn.realm"),
            ("[turn]\nports = \"9-1\"\n", "turn.ports"),
            (
                "domains = [\"a.test\"]\n[turn]\nlisten = \"0.0.0.0:3478\"\n",
                "turn.listen",
            ),
            ("[turn]\nmax_per_user = 0\n", "turn.max_per_user"),
            ("[turn]\nadvertise_s = 0\n", "turn.advertise_s"),
        ] {
            let mut config = Config::from_toml(toml).expect("parses");
            let err = config.validate().expect_err("invalid").to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn the_conference_section() {
        let mut config = Config::from_toml(
            "[conference]\nmax_participants = 3\nport_range = \"31000-31009\"\n\
             [[conference.room]]\nname = \"standup\"\npin = \"1234\"\n\
             [[conference.room]]\nname = \"open\"\n",
        )
        .expect("parses");
        config.validate().expect("valid");
        let c = config.conference_config();
        assert!(c.enabled);
        assert_eq!((c.max_participants, c.ports), (3, (31000, 31009)));
        assert_eq!(c.rooms.len(), 2);
        assert_eq!(c.rooms[0].pin.as_deref(), Some("1234"));
        assert_eq!(c.rooms[1].pin, None);
        for (text, key) in [
            (
                "[conference]\nport_range = \"9-1\"\n",
                "conference.port_range",
            ),
            (
                "[conference]\nmax_participants = 0\n",
                "conference.max_participants",
            ),
            (
                "[[conference.room]]\nname = \"a b\"\n",
                "conference.room.name",
            ),
            (
                "[[conference.room]]\nname = \"x\"\npin = \"12a\"\n",
                "conference.room.pin",
            ),
        ] {
            let err = Config::from_toml(text)
                .expect("parses")
                .validate()
                .expect_err(text)
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn the_voicemail_section() {
        let mut config = Config::from_toml(
            "[voicemail]\nenabled = true\nport_range = \"30000-30009\"\nmax_seconds = 20\n",
        )
        .expect("parses");
        config.validate().expect("valid");
        let v = config.voicemail_config();
        assert!(v.enabled);
        assert_eq!(v.ports, (30000, 30009));
        assert_eq!(v.max_length.as_secs(), 20);
        assert!(!Config::default().voicemail_config().enabled);
        for bad in ["\"30010-30000\"", "\"0-10\"", "\"many\""] {
            let mut config =
                Config::from_toml(&format!("[voicemail]\nport_range = {bad}\n")).expect("parses");
            let err = config.validate().expect_err("bad range").to_string();
            assert!(err.contains("voicemail.port_range"), "{err}");
        }
        let mut config = Config::from_toml("[voicemail]\nmax_seconds = 301\n").expect("parses");
        let err = config.validate().expect_err("too long").to_string();
        assert!(err.contains("voicemail.max_seconds"), "{err}");
        assert_eq!(
            Config::default().voicemail_config().no_answer,
            Some(std::time::Duration::from_secs(20))
        );
        let mut config = Config::from_toml("[voicemail]\nno_answer_s = 0\n").expect("parses");
        config.validate().expect("0 is off");
        assert_eq!(config.voicemail_config().no_answer, None);
        let mut config = Config::from_toml("[voicemail]\nno_answer_s = 3601\n").expect("parses");
        let err = config.validate().expect_err("too long").to_string();
        assert!(err.contains("voicemail.no_answer_s"), "{err}");
    }
}
