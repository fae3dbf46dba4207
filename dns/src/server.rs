//! The authoritative DNS server for overlay domains (UDP + TCP), on
//! hickory-server 0.26's socket machinery with our own [`RequestHandler`] that
//! answers from the live [`Zones`] model.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder, NameEncoding};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use tokio::net::{TcpListener, UdpSocket};
use tracing::{debug, info, warn};

use crate::DnsError;
use crate::zone::{Answer, Zones};

/// How long an idle TCP client may keep its connection.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// Queries remembered by [`DnsServer::query_log`].
const QUERY_LOG_LEN: usize = 4096;

/// One question the server answered (for tests and operations: "what did the
/// legacy proxy ask?").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedQuery {
    /// Query name, lower case, without the trailing dot.
    pub name: String,
    pub rtype: RecordType,
    /// Whether it came over TCP.
    pub tcp: bool,
    pub rcode: ResponseCode,
}

#[derive(Default)]
struct Stats {
    queries: AtomicU64,
    log: Mutex<VecDeque<LoggedQuery>>,
}

impl Stats {
    fn record(&self, entry: LoggedQuery) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().expect("query log lock");
        if log.len() == QUERY_LOG_LEN {
            log.pop_front();
        }
        log.push_back(entry);
    }
}

struct Handler {
    zones: Zones,
    stats: Arc<Stats>,
}

/// A running authoritative server. Serves until [`DnsServer::shutdown`] or drop
/// (dropping aborts the socket tasks).
pub struct DnsServer {
    server: Server<Handler>,
    local_addr: SocketAddr,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Bind UDP and TCP on `addr` (port 0 allowed: both get the same free port,
    /// [`DnsServer::local_addr`] tells) and serve `zones` until dropped/shut down.
    /// Must be called inside a tokio runtime.
    pub async fn bind(addr: SocketAddr, zones: Zones) -> Result<DnsServer, DnsError> {
        let io = |addr, source| DnsError::Io { addr, source };
        // With port 0, the port UDP got may be taken for TCP: retry a few times.
        let mut attempt = 0;
        let (udp, tcp, local_addr) = loop {
            attempt += 1;
            let udp = UdpSocket::bind(addr).await.map_err(|e| io(addr, e))?;
            let local = udp.local_addr().map_err(|e| io(addr, e))?;
            match TcpListener::bind(local).await {
                Ok(tcp) => break (udp, tcp, local),
                Err(e) if addr.port() == 0 && attempt < 16 => {
                    debug!(%local, error = %e, "TCP port taken, trying another");
                    continue;
                }
                Err(e) => return Err(io(local, e)),
            }
        };
        let stats = Arc::new(Stats::default());
        let mut server = Server::new(Handler {
            zones,
            stats: stats.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        info!(%local_addr, "DNS server listening (UDP+TCP)");
        Ok(DnsServer {
            server,
            local_addr,
            stats,
        })
    }

    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Questions answered so far (all protocols, all outcomes).
    pub fn query_count(&self) -> u64 {
        self.stats.queries.load(Ordering::Relaxed)
    }

    /// The last (up to 4096) questions answered, oldest first.
    pub fn query_log(&self) -> Vec<LoggedQuery> {
        self.stats
            .log
            .lock()
            .expect("query log lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Stop accepting, finish the socket tasks.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            warn!(error = %e, "DNS server shutdown");
        }
    }
}

/// The server's request handler on its own, without sockets: it answers
/// from `zones` exactly as a bound [`DnsServer`] does. For feeding raw DNS
/// messages (`hickory_server::server::Request::from_bytes`) in fuzzing and
/// tests.
pub fn handler(zones: Zones) -> impl RequestHandler {
    Handler {
        zones,
        stats: Arc::default(),
    }
}

/// The question section to echo. hickory-server echoes the query's own
/// bytes, and a name there that points (RFC 1035 §4.1.4) outside the
/// question section, into the header, points at other bytes in the
/// response: the answer was malformed (found by fuzzing, docs/security.md).
/// The parsed questions are written again, uncompressed and in their own
/// case (DNS 0x20 still works), at the offset they have in a message.
fn echoed_queries(queries: &Queries) -> Queries {
    const HEADER: usize = 12;
    let mut bytes = vec![0; HEADER];
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_offset(HEADER);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    let mut count = 0;
    for q in queries.queries() {
        if q.original().emit(&mut encoder).is_err() {
            break;
        }
        count += 1;
    }
    let mut decoder = BinDecoder::new(&bytes);
    let read = decoder
        .read_slice(HEADER)
        .ok()
        .and_then(|_| Queries::read(&mut decoder, count).ok());
    read.unwrap_or_else(|| {
        Queries::read(&mut BinDecoder::new(&[]), 0).expect("no questions always read")
    })
}

fn failed_info(request: &Request, rcode: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    metadata.response_code = rcode;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// Rough UDP size check: would the response with additionals exceed the
/// client's limit? (Then we drop the additionals rather than set TC for data
/// that is only a courtesy, RFC 2181 §9.)
fn fits(
    request: &Request,
    edns: Option<&Edns>,
    answers: &[Record],
    authority: &[Record],
    additionals: &[Record],
) -> bool {
    let limit = edns.map(|e| e.max_payload()).unwrap_or(512) as usize;
    let mut msg = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    msg.add_queries(
        request
            .queries
            .queries()
            .iter()
            .map(|q| q.original().clone()),
    );
    msg.add_answers(answers.iter().cloned());
    msg.add_authorities(authority.iter().cloned());
    msg.add_additionals(additionals.iter().cloned());
    if let Some(e) = edns {
        msg.set_edns(e.clone());
    }
    msg.to_vec().map(|v| v.len() <= limit).unwrap_or(false)
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // EDNS: answer with OPT when asked (RFC 6891), version 0 only.
        let resp_edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e.set_version(0);
            e
        });
        let queries = echoed_queries(&request.queries);
        let builder = MessageResponseBuilder::new(&queries, resp_edns.as_ref());
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = false;

        let tcp = request.protocol() == Protocol::Tcp;
        let query = request.queries.queries();

        let early = if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            Some(ResponseCode::BADVERS)
        } else if request.metadata.op_code != OpCode::Query
            || request.metadata.message_type != MessageType::Query
        {
            Some(ResponseCode::NotImp)
        } else if query.len() != 1 {
            Some(ResponseCode::FormErr)
        } else {
            None
        };
        if let Some(rcode) = early {
            metadata.response_code = rcode;
            let resp = builder.build_no_records(metadata);
            return match response_handle.send_response(resp).await {
                Ok(info) => info,
                Err(e) => {
                    debug!(error = %e, "sending DNS error response");
                    failed_info(request, rcode)
                }
            };
        }

        let q = &query[0];
        let qname = q.original().name().clone();
        let qtype = q.query_type();
        let answer = if q.query_class() != DNSClass::IN
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            // no zone transfers, no CHAOS
            Answer::Refused
        } else {
            self.zones.answer(&qname, qtype)
        };

        let (rcode, answers, soa, mut additionals) = match answer {
            Answer::Refused => (ResponseCode::Refused, vec![], vec![], vec![]),
            Answer::Found {
                answers,
                additionals,
            } => (ResponseCode::NoError, answers, vec![], additionals),
            Answer::NoData { soa } => (ResponseCode::NoError, vec![], vec![soa], vec![]),
            Answer::NxDomain { soa } => (ResponseCode::NXDomain, vec![], vec![soa], vec![]),
        };
        metadata.response_code = rcode;
        metadata.authoritative = rcode != ResponseCode::Refused;

        if !tcp
            && !additionals.is_empty()
            && !fits(request, resp_edns.as_ref(), &answers, &soa, &additionals)
        {
            additionals.clear();
        }

        let mut name = qname.to_lowercase().to_ascii();
        if name.len() > 1 {
            name.pop();
        }
        self.stats.record(LoggedQuery {
            name,
            rtype: qtype,
            tcp,
            rcode,
        });
        debug!(%qname, %qtype, %rcode, answers = answers.len(), tcp, "DNS query");

        let no_authorities: [Record; 0] = [];
        let resp = builder.build(
            metadata,
            answers.iter(),
            no_authorities.iter(),
            soa.iter(),
            additionals.iter(),
        );
        match response_handle.send_response(resp).await {
            Ok(info) => info,
            Err(e) => {
                debug!(error = %e, "sending DNS response");
                failed_info(request, ResponseCode::ServFail)
            }
        }
    }
}
