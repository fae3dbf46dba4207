//! The tokio side of the TURN server (`--turn ADDR`, `[turn]`): the TURN
//! UDP socket, one UDP socket per relay port, and a task that pumps the
//! sans-I/O [`Server`] with what they receive, the credentials it asked
//! for and the time. Credentials are asked of the node's core (the same
//! records digest authentication uses, from the users file or the ring)
//! through [`CredentialQuery`]; the core and the server each cache them
//! briefly. It makes no protocol decision.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::auth::users::UserRecord;
use crate::overlay::relays::TurnRecord;
use crate::registrar::binding::Aor;
use crate::turn::{Input, Key, Output, Server, TurnConfig, TurnCounters};

/// Datagrams read in one go before what they caused is sent.
const BATCH: usize = 64;
/// Datagrams from peers queued for the server at most (beyond: dropped, as UDP may).
const PEER_QUEUE: usize = 4096;

/// Where the answer to a [`CredentialQuery`] goes: the user's record, none, or why not.
pub type Reply = oneshot::Sender<Result<Option<UserRecord>, String>>;

/// A credential look-up for the core.
pub struct CredentialQuery {
    pub aor: Aor,
    pub reply: Reply,
}

/// A running TURN server.
pub struct TurnService {
    pub addr: SocketAddr,
    /// Its counters, as of its last wake-up.
    pub counters: watch::Receiver<TurnCounters>,
    realm: String,
    max_allocations: usize,
    task: JoinHandle<()>,
}

impl TurnService {
    /// Its advertisement in the ring (`overlay/relays.rs`) for the node at
    /// ring address `node`, with no allocations yet.
    pub fn record(&self, node: SocketAddr) -> TurnRecord {
        TurnRecord {
            turn: self.addr,
            node,
            realm: self.realm.clone(),
            allocations: 0,
            max_allocations: u32::try_from(self.max_allocations).unwrap_or(u32::MAX),
        }
    }

    /// The allocations it holds now.
    pub fn allocations(&self) -> u32 {
        u32::try_from(self.counters.borrow().allocations).unwrap_or(u32::MAX)
    }
}

impl Drop for TurnService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds the TURN socket and starts the server; credential look-ups go to `queries`.
pub async fn start(
    mut config: TurnConfig,
    queries: mpsc::Sender<CredentialQuery>,
) -> io::Result<TurnService> {
    let socket = UdpSocket::bind(config.listen).await?;
    let addr = socket.local_addr()?;
    config.listen = addr;
    info!(%addr, realm = %config.realm, ports = ?config.ports, "TURN server listening (udp)");
    let (counters_tx, counters) = watch::channel(TurnCounters::default());
    let realm = config.realm.clone();
    let max_allocations = config.max_allocations;
    let task = tokio::spawn(run(config, socket, queries, counters_tx));
    Ok(TurnService {
        addr,
        counters,
        realm,
        max_allocations,
        task,
    })
}

/// A relay port's socket and the task reading it.
struct Relay {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

struct Driver {
    server: Server,
    socket: UdpSocket,
    relay_ip: IpAddr,
    realm: String,
    relays: HashMap<u16, Relay>,
    from_peers: mpsc::Sender<(u16, SocketAddr, Vec<u8>)>,
    credentials: mpsc::Sender<(String, Option<Key>)>,
    queries: mpsc::Sender<CredentialQuery>,
}

async fn run(
    config: TurnConfig,
    socket: UdpSocket,
    queries: mpsc::Sender<CredentialQuery>,
    counters: watch::Sender<TurnCounters>,
) {
    let (from_peers, mut peer_rx) = mpsc::channel(PEER_QUEUE);
    let (credentials, mut credential_rx) = mpsc::channel(256);
    let mut driver = Driver {
        relay_ip: config.relay_ip,
        realm: config.realm.clone(),
        server: Server::new(config, Instant::now()),
        socket,
        relays: HashMap::new(),
        from_peers,
        credentials,
        queries,
    };
    let mut buf = vec![0u8; 65536];
    loop {
        let deadline = driver.act();
        counters.send_replace(driver.server.counters);
        let sleep = tokio::time::Instant::from_std(deadline);
        tokio::select! {
            read = driver.socket.recv_from(&mut buf) => {
                let Ok((n, from)) = read else { continue };
                let now = Instant::now();
                driver.server.handle_input(Input::FromClient { from, bytes: &buf[..n] }, now);
                for _ in 0..BATCH {
                    let Ok((n, from)) = driver.socket.try_recv_from(&mut buf) else { break };
                    driver.server.handle_input(Input::FromClient { from, bytes: &buf[..n] }, now);
                }
            }
            Some((port, from, bytes)) = peer_rx.recv() => {
                let now = Instant::now();
                driver.server.handle_input(Input::FromPeer { port, from, bytes: &bytes }, now);
                for _ in 0..BATCH {
                    let Ok((port, from, bytes)) = peer_rx.try_recv() else { break };
                    driver.server.handle_input(Input::FromPeer { port, from, bytes: &bytes }, now);
                }
            }
            Some((username, key)) = credential_rx.recv() => {
                driver.server.handle_input(Input::Credentials { username, key }, Instant::now());
            }
            _ = tokio::time::sleep_until(sleep) => {
                driver.server.handle_input(Input::Timeout, Instant::now());
            }
        }
    }
}

impl Driver {
    /// Acts on the server's outputs until it gives the next deadline.
    fn act(&mut self) -> Instant {
        loop {
            match self.server.poll_output() {
                Output::Timeout(deadline) => return deadline,
                Output::ToClient { to, bytes } => {
                    if let Err(error) = self.socket.try_send_to(&bytes, to) {
                        debug!(%error, %to, "TURN send to client failed");
                    }
                }
                Output::ToPeer { port, to, bytes } => {
                    if let Some(relay) = self.relays.get(&port)
                        && let Err(error) = relay.socket.try_send_to(&bytes, to)
                    {
                        debug!(%error, %to, port, "TURN send to peer failed");
                    }
                }
                Output::FetchCredentials { username } => self.fetch(username),
                Output::OpenRelay { port } => {
                    let ok = self.open(port);
                    self.server
                        .handle_input(Input::RelayOpened { port, ok }, Instant::now());
                }
                Output::CloseRelay { port } => {
                    self.relays.remove(&port);
                }
            }
        }
    }

    /// Asks the core for a user's credentials; the answer comes back on
    /// `credentials` (none when the ring could not say: the request waits
    /// and the client sends it again).
    fn fetch(&self, username: String) {
        let aor = Aor::new(&username, &self.realm);
        let queries = self.queries.clone();
        let answers = self.credentials.clone();
        tokio::spawn(async move {
            let (reply, answer) = oneshot::channel();
            if queries.send(CredentialQuery { aor, reply }).await.is_err() {
                return;
            }
            match answer.await {
                Ok(Ok(record)) => {
                    let key = record.as_ref().and_then(Key::of);
                    let _ = answers.send((username, key)).await;
                }
                Ok(Err(error)) => {
                    debug!(%error, %username, "TURN credentials not found in the ring")
                }
                Err(_) => {}
            }
        });
    }

    /// Binds relay port `port` and starts reading it.
    fn open(&mut self, port: u16) -> bool {
        let bound = std::net::UdpSocket::bind((self.relay_ip, port))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .and_then(UdpSocket::from_std);
        let socket = match bound {
            Ok(socket) => Arc::new(socket),
            Err(error) => {
                debug!(%error, port, "relay port not bound");
                return false;
            }
        };
        let reader = tokio::spawn(read_relay(port, socket.clone(), self.from_peers.clone()));
        self.relays.insert(port, Relay { socket, reader });
        true
    }
}

/// Hands what reaches a relay port to the server.
async fn read_relay(
    port: u16,
    socket: Arc<UdpSocket>,
    to_server: mpsc::Sender<(u16, SocketAddr, Vec<u8>)>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if to_server.try_send((port, from, buf[..n].to_vec())).is_err() {
                    if to_server.is_closed() {
                        return;
                    }
                    debug!(port, "TURN relay queue full; datagram dropped");
                }
            }
            Err(error) => {
                // ICMP errors of earlier sends show up here on Linux; go on.
                debug!(%error, port, "relay read failed");
                if to_server.is_closed() {
                    return;
                }
            }
        }
    }
}
