//! `p2psip`: run a node. With no arguments it runs one with embedded defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use p2psip::auth::AuthMode;
use p2psip::auth::users::{self, UserRecord};
use p2psip::config::Config;
use p2psip::core::CoreConfig;
use p2psip::node::driver::{Node, NodeOptions};
use p2psip::proxy::RoutingMode;
use p2psip::registrar::binding::Aor;
use p2psip::ring::RingConfig;
use p2psip::sip::transaction::Timers;
use p2psip::sip::transport::TransportOptions;
use tracing::info;

mod cli;
use cli::control::NodeAt;

/// The config file read when `--config` is not given (if it exists).
const DEFAULT_CONFIG: &str = "/etc/p2psip/p2psip.toml";

/// mimalloc rather than glibc's malloc: with hundreds of thousands of
/// bindings and transactions alive, glibc's free lists fragment and malloc
/// took a third of the node's CPU per call (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "p2psip",
    version,
    about = "Peer-to-peer Internet telephony over SIP"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: registrar and proxy for phones, member of the overlay.
    Node(Box<NodeArgs>),
    /// List a running node's registrations; `users add` manages the users file.
    Users {
        #[command(subcommand)]
        command: Option<UsersCommand>,
        #[command(flatten)]
        at: NodeAt,
    },
    /// A running node's status (its place in the ring, counters).
    Status(NodeAt),
    /// Walk the ring from a node and print every node in ring order.
    Ring(NodeAt),
    /// Where a user's registration lives: key, holders, hops, bindings.
    Lookup {
        #[arg(value_name = "USER@DOMAIN")]
        aor: String,
        #[command(flatten)]
        at: NodeAt,
    },
    /// The items a running node holds.
    Items(NodeAt),
    /// TURN servers advertised in the ring (`turn find`).
    #[command(subcommand)]
    Turn(TurnCommand),
    /// Validate a config file and exit: 0, or 2 with the one-line error.
    Check {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Make a CA and server certificates for SIP over TLS (docs/tls.md).
    #[command(subcommand)]
    Certs(CertsCommand),
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user, or change her password: reads the password on standard input.
    Add {
        /// The users file (created if missing)
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// The user's address-of-record
        #[arg(value_name = "USER@DOMAIN")]
        aor: String,
    },
    /// Claim a name at a running node that allows sign-up: reads the
    /// password on standard input; @DOMAIN lets the node pick the name.
    Signup {
        #[arg(value_name = "USER@DOMAIN")]
        aor: String,
        #[command(flatten)]
        at: NodeAt,
    },
}

#[derive(Subcommand)]
enum TurnCommand {
    /// The TURN servers a running node finds in the ring, ranked by its
    /// round trip to them and their load, and the one to use.
    Find(NodeAt),
}

#[derive(Subcommand)]
enum CertsCommand {
    /// A new CA: writes ca.pem and ca-key.pem (mode 0600) into DIR.
    Ca {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// A server certificate signed by the CA: writes cert.pem and key.pem (mode 0600) into DIR.
    Server {
        /// The CA's directory (ca.pem, ca-key.pem)
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// A DNS name or IP address phones reach the node at (repeatable)
        #[arg(long = "name", value_name = "NAME", required = true)]
        names: Vec<String>,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// A node certificate for the overlay (certificate mode): writes node.pem
    /// and node-key.pem (mode 0600) into DIR; its SANs carry sip:IP:PORT and the Node-ID.
    Node {
        /// The overlay CA's directory (ca.pem, ca-key.pem)
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The node's SIP address (its --sip), IP:PORT
        #[arg(long, value_name = "IP:PORT")]
        sip: SocketAddr,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(clap::Args, Default)]
struct NodeArgs {
    /// Address for SIP over UDP and TCP [default: 127.0.0.1:5060]
    #[arg(long, value_name = "ADDR")]
    sip: Option<SocketAddr>,
    /// Address for SIP over TLS (needs --tls-cert and --tls-key)
    #[arg(long, value_name = "ADDR")]
    sips: Option<SocketAddr>,
    /// PEM file with the node's TLS certificate (chain, the node's first)
    #[arg(long = "tls-cert", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM file with the certificate's private key
    #[arg(long = "tls-key", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM file with the CA certificates outgoing TLS verifies servers against
    #[arg(long = "tls-ca", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Most TCP/TLS connections from one IP address at once [default: 64]
    #[arg(long = "max-connections-per-source", value_name = "N")]
    max_connections_per_source: Option<usize>,
    /// A domain this node serves (repeatable)
    #[arg(long = "domain", value_name = "NAME")]
    domains: Vec<String>,
    /// Directory for state that survives a restart
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// How calls to local users are handled
    #[arg(long, value_enum)]
    routing: Option<RoutingArg>,
    /// An overlay node to join through (repeatable); none: the saved peers, else a new ring
    #[arg(long, value_name = "ADDR")]
    join: Vec<SocketAddr>,
    /// Attach to a super-node (one of --join) as a client instead of joining
    /// the ring; promoted once reachable for `[ring] promote_after_s`
    #[arg(long)]
    client: bool,
    /// Copies of each registration in the ring [default: 3]
    #[arg(long, value_name = "N")]
    replicas: Option<usize>,
    /// Find peers on the LAN by multicast REGISTER to sip.mcast.net (off by default)
    #[arg(long)]
    discover: bool,
    /// Serve /status and /metrics over HTTP on this address
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Serve TURN (RFC 8656, UDP) here with the users' credentials (turn.listen)
    #[arg(long, value_name = "ADDR")]
    turn: Option<SocketAddr>,
    /// The same over HTTPS (needs --tls-cert and --tls-key): sign-up and buddy lists from other machines
    #[arg(long, value_name = "ADDR")]
    https: Option<SocketAddr>,
    /// Serve the domains' DNS (NAPTR/SRV/A) here and act as their gateway
    #[arg(long, value_name = "ADDR")]
    dns: Option<SocketAddr>,
    /// Name server for RFC 3263 and ENUM look-ups [default: the system's]
    #[arg(long, value_name = "ADDR")]
    nameserver: Option<SocketAddr>,
    /// The users file: turns digest authentication on (see `p2psip users add`)
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// `digest` (a node without a users file authenticates against the ring) or `open`
    #[arg(long, value_enum)]
    auth: Option<AuthArg>,
    /// File with the overlay's shared secret: only nodes with it join the ring
    #[arg(long = "overlay-secret", value_name = "FILE")]
    overlay_secret: Option<PathBuf>,
    /// Certificate mode: the overlay CA's certificate (with --node-cert, --node-key)
    #[arg(long = "overlay-ca", value_name = "FILE")]
    overlay_ca: Option<PathBuf>,
    /// Certificate mode: this node's certificate (`p2psip certs node`)
    #[arg(long = "node-cert", value_name = "FILE")]
    node_cert: Option<PathBuf>,
    /// Certificate mode: this node's private key
    #[arg(long = "node-key", value_name = "FILE")]
    node_key: Option<PathBuf>,
    /// TOML file with a key for every flag; flags override it [default: /etc/p2psip/p2psip.toml if it exists]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The address others reach this node at, behind a port mapping (Via, Contact, Record-Route, the ring)
    #[arg(long, value_name = "ADDR")]
    advertise: Option<SocketAddr>,
    /// error, warn, info, debug, trace, or a RUST_LOG-style filter [default: info]; RUST_LOG wins
    #[arg(long = "log-level", value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log as `text` or `json` (one object a line) [default: text]
    #[arg(long = "log-format", value_name = "FORMAT")]
    log_format: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AuthArg {
    Digest,
    Open,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoutingArg {
    Proxy,
    Redirect,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Node(args)) => *args,
        Some(Command::Users {
            command: Some(command),
            ..
        }) => return users(command),
        Some(Command::Users { command: None, at }) => return cli::show::users(&at),
        Some(Command::Status(at)) => return cli::show::status(&at),
        Some(Command::Ring(at)) => return cli::show::ring(&at),
        Some(Command::Lookup { aor, at }) => return cli::show::lookup(&at, &aor),
        Some(Command::Items(at)) => return cli::show::items(&at),
        Some(Command::Turn(TurnCommand::Find(at))) => return cli::turn::find(&at),
        Some(Command::Check { config }) => return check(config),
        Some(Command::Certs(command)) => return certs(command),
        None => NodeArgs::default(),
    };
    let config_file = config_path(&args);
    let (config, transport) = match load(args) {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("p2psip: {message}");
            return ExitCode::from(2);
        }
    };
    let log_level = match cli::logging::init(&config.log_level, config.log_format == "json") {
        Ok(handle) => handle,
        Err(message) => {
            eprintln!("p2psip: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("p2psip: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, transport, config_file, log_level)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("p2psip: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `p2psip certs …`: one line saying what was written, or one error line.
fn certs(command: CertsCommand) -> ExitCode {
    let written = match &command {
        CertsCommand::Ca { out } => p2psip_certs::write_ca(out).map(|_| {
            format!(
                "wrote {} and {}",
                out.join(p2psip_certs::CA_CERT).display(),
                out.join(p2psip_certs::CA_KEY).display()
            )
        }),
        CertsCommand::Node { ca, sip, out } => {
            let id = p2psip::ring::NodeId::of_addr(*sip).to_string();
            p2psip_certs::write_node(ca, *sip, &id, out).map(|pair| {
                let serial = p2psip_certs::first_cert_der(pair.cert_pem.as_bytes())
                    .and_then(|der| p2psip_certs::parse_node(&der))
                    .map(|cert| cert.serial)
                    .unwrap_or_default();
                format!(
                    "wrote {} and {} for sip:{sip}, Node-ID {id}, serial {serial}",
                    out.join(p2psip_certs::NODE_CERT).display(),
                    out.join(p2psip_certs::NODE_KEY).display(),
                )
            })
        }
        CertsCommand::Server { ca, names, out } => {
            p2psip_certs::write_server(ca, names, out).map(|_| {
                format!(
                    "wrote {} and {} for {}",
                    out.join(p2psip_certs::SERVER_CERT).display(),
                    out.join(p2psip_certs::SERVER_KEY).display(),
                    names.join(", ")
                )
            })
        }
    };
    match written {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("p2psip certs: {e}");
            ExitCode::from(2)
        }
    }
}

/// `p2psip check --config FILE`: what starting a node would say of it.
fn check(path: PathBuf) -> ExitCode {
    let args = NodeArgs {
        config: Some(path.clone()),
        ..NodeArgs::default()
    };
    match load(args) {
        Ok(_) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("p2psip: {message}");
            ExitCode::from(2)
        }
    }
}

/// The config file: `--config`, else the default path if it exists.
fn config_path(args: &NodeArgs) -> Option<PathBuf> {
    args.config.clone().or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG);
        default.exists().then_some(default)
    })
}

/// Defaults, then the config file, then the flags.
fn load(args: NodeArgs) -> Result<(Config, TransportOptions), String> {
    let mut config = match config_path(&args) {
        Some(path) => Config::from_file(&path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(advertise) = args.advertise {
        config.advertise = Some(advertise);
    }
    if let Some(level) = &args.log_level {
        config.log_level = level.clone();
    }
    if let Some(format) = &args.log_format {
        config.log_format = format.clone();
    }
    if let Some(sip) = args.sip {
        config.sip = sip;
    }
    if let Some(sips) = args.sips {
        config.sips = Some(sips);
    }
    if let Some(path) = args.tls_cert {
        config.tls_cert = Some(path);
    }
    if let Some(path) = args.tls_key {
        config.tls_key = Some(path);
    }
    if let Some(path) = args.tls_ca {
        config.tls_ca = Some(path);
    }
    if let Some(n) = args.max_connections_per_source {
        config.max_connections_per_source = n;
    }
    if !args.domains.is_empty() {
        config.domains = args.domains;
    }
    if !args.join.is_empty() {
        config.join = args.join;
    }
    if let Some(replicas) = args.replicas {
        config.replicas = replicas;
    }
    if args.client {
        config.ring.role = p2psip::config::RoleSetting::Client;
    }
    if let Some(turn) = args.turn {
        config.turn.listen = Some(turn);
    }
    if let Some(dns) = args.dns {
        config.gateway.dns_listen = Some(dns);
    }
    if let Some(nameserver) = args.nameserver {
        config.gateway.nameserver = Some(nameserver);
    }
    if args.discover {
        config.discover = true;
    }
    if let Some(http) = args.http {
        config.http = Some(http);
    }
    if let Some(https) = args.https {
        config.https = Some(https);
    }
    if let Some(data) = args.data {
        config.data = Some(data);
    }
    if let Some(path) = args.overlay_secret {
        config.overlay_secret = Some(path);
    }
    if let Some(path) = args.overlay_ca {
        config.overlay_ca = Some(path);
    }
    if let Some(path) = args.node_cert {
        config.node_cert = Some(path);
    }
    if let Some(path) = args.node_key {
        config.node_key = Some(path);
    }
    if let Some(users) = args.users {
        config.users = Some(users);
    }
    if let Some(auth) = args.auth {
        config.auth = Some(match auth {
            AuthArg::Digest => AuthMode::Digest,
            AuthArg::Open => AuthMode::Open,
        });
    }
    if let Some(routing) = args.routing {
        config.routing = match routing {
            RoutingArg::Proxy => RoutingMode::Proxy,
            RoutingArg::Redirect => RoutingMode::Redirect,
        };
    }
    config.validate().map_err(|e| e.to_string())?;
    if config.signup.enabled
        && config
            .auth_config()
            .is_ok_and(|auth| auth.mode == AuthMode::Open)
    {
        return Err("config key `signup.enabled`: sign-up needs digest authentication (`auth = \"digest\"` or `users`)".into());
    }
    cli::logging::filter_of(&config.log_level)?;
    if let Some(path) = &config.users {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("config key `users`: {}: {e}", path.display()))?;
        users::parse_users(&text).map_err(|(line, why)| {
            format!("config key `users`: {} line {line}: {why}", path.display())
        })?;
    }
    config.overlay_secret().map_err(|e| e.to_string())?;
    let identity = config.overlay_identity().map_err(|e| e.to_string())?;
    let mut transport = config.transport_options().map_err(|e| e.to_string())?;
    transport.member = identity.map(|identity| identity.tls);
    Ok((config, transport))
}

/// `p2psip users add`: the HA1s of a password read on standard input.
fn users(command: UsersCommand) -> ExitCode {
    let (file, aor) = match command {
        UsersCommand::Add { file, aor } => (file, aor),
        UsersCommand::Signup { aor, at } => return cli::signup::signup(&at, &aor),
    };
    let Some((user, domain)) = aor
        .split_once('@')
        .filter(|(u, d)| !u.is_empty() && !d.is_empty())
    else {
        eprintln!("p2psip: {aor:?} is not USER@DOMAIN");
        return ExitCode::from(2);
    };
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut password) {
        eprintln!("p2psip: cannot read the password on standard input: {e}");
        return ExitCode::from(2);
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("p2psip: empty password on standard input");
        return ExitCode::from(2);
    }
    let record = UserRecord::new(Aor::new(user, domain), password);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            eprintln!("p2psip: users file {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    if let Err((line, why)) = users::parse_users(&text) {
        eprintln!("p2psip: users file {} line {line}: {why}", file.display());
        return ExitCode::from(2);
    }
    if let Err(e) = write_private(&file, &users::with_user(&text, &record)) {
        eprintln!("p2psip: users file {}: {e}", file.display());
        return ExitCode::from(2);
    }
    println!("{} in {}", record.aor, file.display());
    ExitCode::SUCCESS
}

/// Writes `text` to `path` readable by its owner only (it holds HA1s).
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

async fn serve(
    config: Config,
    transport: TransportOptions,
    config_file: Option<PathBuf>,
    log_level: cli::logging::LogLevel,
) -> Result<(), String> {
    let auth = config.auth_config().map_err(|e| e.to_string())?;
    let overlay_secret = config.overlay_secret().map_err(|e| e.to_string())?;
    let admission = overlay_secret.is_some();
    let certified = transport.member.is_some();
    let options = NodeOptions {
        core: CoreConfig {
            local: config.sip,
            sips: None,
            domains: config.domains.clone(),
            routing: config.routing,
            registrar: config.registrar_config(),
            timers: Timers::default(),
            gateway: config.gateway.clone(),
            // The driver draws the seed and sets the LAN and peer-saving
            // chores from the options below.
            seed: 0,
            discover: None,
            save_peers: false,
            auth,
            messages: config.messages_config(),
            presence: config.presence_config(),
            voicemail: config.voicemail_config(),
            relay: config.relay_config(),
            signup: config.signup_config(),
            conference: config.conference_config(),
        },
        ring: {
            let mut ring = RingConfig {
                replicas: config.replicas,
                max_items_per_writer: config.overlay_limits.items_per_writer,
                member_requests: config.overlay_limits.requests_per_interval,
                member_interval: std::time::Duration::from_secs(
                    config.overlay_limits.interval_secs,
                ),
                ..RingConfig::default()
            };
            config.ring.apply(&mut ring);
            ring
        },
        join: config.join.clone(),
        http: config.http,
        https: config.https,
        data: config.data.clone(),
        dns: config.gateway.dns_listen,
        dns_ttl: config.gateway.dns_ttl,
        nameserver: config.gateway.nameserver,
        discover: config.discover.then_some(config.discover_port),
        users: config.users.clone(),
        overlay_secret,
        transport,
        advertise: config.advertise,
        turn: config.turn_config(),
        turn_every: std::time::Duration::from_secs(config.turn.advertise_s),
    };
    // The error names the socket, directory or file that failed.
    let mut node = Node::bind(options)
        .await
        .map_err(|e| format!("cannot start the node: {e}"))?;
    node.reload_on(reload_on_hangup(config_file, log_level));
    let local = node.local_addr();
    let node_id = node.node_id();
    let domain = config
        .domains
        .first()
        .cloned()
        .unwrap_or_else(|| local.ip().to_string());
    let sips = node.sips_addr();
    info!(%local, sips = ?sips, node_id = %node_id, domains = ?config.domains, routing = ?config.routing, "node started");
    match config.auth_config().map(|a| a.mode) {
        Ok(AuthMode::Open) => tracing::warn!(
            %local,
            "authentication is OFF: anyone who reaches this node can register as any user and have calls relayed anywhere; set `users` or `auth = \"digest\"`"
        ),
        Ok(AuthMode::Digest) => match &config.users {
            Some(path) => {
                info!(users = %path.display(), "digest authentication on, with this node's users file")
            }
            None => info!("digest authentication on, with the credentials in the ring"),
        },
        Err(_) => {}
    }
    if certified {
        info!(
            "overlay admission on, certificate mode: only nodes with a certificate from the overlay CA are members of the ring, over mutual TLS"
        );
    } else if admission {
        info!("overlay admission on: only nodes with the shared secret are members of the ring");
    } else {
        tracing::warn!(
            %local,
            "overlay admission is OFF: anyone who reaches this node can join the ring and read, write or remove any record (credentials included); set `overlay_secret`"
        );
    }
    if let Some(turn) = node.turn_addr() {
        info!(%turn, realm = ?config.turn_config().map(|t| t.realm), "TURN with the users' credentials");
    }
    // The one line on stdout: where the node listens (tests and scripts read it).
    match sips {
        Some(sips) => {
            println!("p2psip listening on {local} (udp, tcp) {sips} (tls) node-id {node_id}")
        }
        None => println!("p2psip listening on {local} (udp, tcp) node-id {node_id}"),
    }
    println!(
        "register a phone as sip:USER@{domain} with registrar and outbound proxy {local}; call sip:OTHER@{domain}"
    );
    node.run(shutdown_signal()).await;
    Ok(())
}

/// On SIGHUP: re-reads the config file for what can change at run time
/// (`log_level`) and tells the node to re-read its users file. Other keys
/// need a restart; a config file that no longer parses changes nothing.
fn reload_on_hangup(
    config: Option<PathBuf>,
    log_level: cli::logging::LogLevel,
) -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot catch SIGHUP: reloading is off");
            return;
        };
        while hangup.recv().await.is_some() {
            if let Some(path) = &config {
                match Config::from_file(path) {
                    Ok(new) => match log_level.set(&new.log_level) {
                        Ok(true) => {
                            info!(config = %path.display(), log_level = %new.log_level, "SIGHUP: log level set")
                        }
                        Ok(false) => info!("SIGHUP: RUST_LOG is set; the log level stays"),
                        Err(error) => tracing::warn!(%error, "SIGHUP: log level unchanged"),
                    },
                    Err(error) => {
                        tracing::warn!(%error, "SIGHUP: config file unusable; nothing changed")
                    }
                }
            }
            let _ = tx.try_send(());
        }
    });
    #[cfg(not(unix))]
    let _ = (config, log_level, tx);
    rx
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    info!("shutting down");
}
