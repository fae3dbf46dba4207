//! The SIP wire form of overlay messages (P2P-over-SIP; `docs/protocol.md`).
//!
//! Every overlay request carries one `P2P-Overlay: chord;op=…` header: that
//! header, and nothing else, tells overlay traffic from user traffic. Ring
//! operations travel as REGISTER (the seed's choice) with the key in the To
//! URI and neighbours in Contact parameters; the liveness probe is OPTIONS.
//! Items travel as a JSON body. Responses say what they carry in a
//! `P2P-Result` header; "ask this node next" is a 302.
//!
//! The codec builds and reads the overlay-specific parts only; the node adds
//! Via, Call-ID, CSeq, Max-Forwards and the From tag.
//!
//! Over 800 lines: it is the one place that reads and writes every overlay
//! header (one parser, one writer per header); the next split is by header
//! family (routing, items, admission).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ezk_sip_types::header::typed::Contact;
use ezk_sip_types::host::Host;
use ezk_sip_types::uri::{SipUri, SipUriUserPart};
use ezk_sip_types::{Method, Name};
use serde::{Deserialize, Serialize};

use crate::ring::{Item, NodeId, Peer, Refusal, Reply, RingRequest, RingResponse};
use crate::sip::message::{HeaderAccess, Request, RequestUri, Response};

/// The header that marks an overlay request.
pub const OVERLAY: &str = "P2P-Overlay";
/// How many FindSuccessor messages a lookup has taken so far.
pub const HOPS: &str = "P2P-Hops";
/// A semi-recursive lookup's nonce (16 hex digits), on the lookup and on
/// its answer.
pub const NONCE: &str = "P2P-Nonce";
/// What a 2xx response carries.
pub const RESULT: &str = "P2P-Result";
/// The host of key URIs (`sip:<key>@overlay.invalid`): keys are not hosts.
const KEY_HOST: &str = "overlay.invalid";

/// Why a message is not a well-formed overlay message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("no P2P-Overlay header")]
    NotOverlay,
    #[error("unknown overlay operation {0:?}")]
    UnknownOp(String),
    #[error("missing or bad {0}")]
    Missing(&'static str),
    #[error("bad item body: {0}")]
    BadBody(String),
}

/// Whether a request is an overlay message.
pub fn is_overlay(request: &Request) -> bool {
    request.raw(&Name::from(OVERLAY)).is_some()
}

/// An item as it travels: expiry as milliseconds left, value in hex.
#[derive(Serialize, Deserialize)]
struct WireItem {
    key: String,
    name: String,
    kind: String,
    value: String,
    version: u64,
    expires_ms: u64,
    /// The writer's Node-ID (absent from older nodes: the zero id).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    writer: String,
    /// The writer's signature, hex; empty unless items are signed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    signature: String,
    /// What lets the writer take the record over (a store only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proof: Option<String>,
}

/// Longest proof an item may carry (a digest `Authorization` value).
const MAX_PROOF: usize = 2048;
/// Longest signature an item may carry, in bytes.
const MAX_SIGNATURE: usize = 4096;

/// The body of Store and Transfer requests and of Items responses.
#[derive(Serialize, Deserialize)]
struct ItemsBody {
    items: Vec<WireItem>,
}

/// The body of a Remove request.
#[derive(Serialize, Deserialize)]
struct RemoveBody {
    name: String,
    /// Who asked for the removal (on a replica's copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    by: Option<String>,
    /// The remover's signature with its time, hex (certificate mode).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    signature: String,
}

fn node_uri(peer: &Peer) -> String {
    format!("sip:{}@{}", peer.id, peer.addr)
}

fn key_uri(key: &NodeId) -> String {
    format!("sip:{key}@{KEY_HOST}")
}

fn contact(peer: &Peer, role: &str) -> String {
    format!("<{}>;{role}", node_uri(peer))
}

/// Builds the SIP request for a ring request from `me` to the node at `to`.
pub fn encode_request(request: &RingRequest, me: &Peer, to: SocketAddr, now: Instant) -> Request {
    let method = match request {
        RingRequest::Ping => Method::OPTIONS,
        _ => Method::REGISTER,
    };
    let target = RequestUri::Sip(SipUri::new(to.into()));
    let mut sip = Request::new(method, target);
    let (op, flags) = op_of(request);
    let mut overlay = format!("chord;op={op}");
    for flag in flags {
        overlay.push(';');
        overlay.push_str(flag);
    }
    sip.headers.insert(Name::from(OVERLAY), overlay);
    sip.headers
        .insert(Name::FROM, format!("<{}>", node_uri(me)));
    let to_uri = match request {
        RingRequest::FindSuccessor { key, .. }
        | RingRequest::Fetch { key }
        | RingRequest::Remove { key, .. } => key_uri(key),
        _ => format!("sip:{to}"),
    };
    sip.headers.insert(Name::TO, format!("<{to_uri}>"));
    sip.headers
        .insert(Name::CONTACT, format!("<{}>", node_uri(me)));
    match request {
        RingRequest::FindSuccessor { hops, reply, .. } => {
            sip.headers.insert(Name::from(HOPS), hops.to_string());
            if let Some(reply) = reply {
                sip.headers
                    .insert(Name::from(NONCE), format!("{:016x}", reply.nonce));
                sip.headers
                    .insert(Name::CONTACT, contact(&reply.to, "reply"));
            }
        }
        RingRequest::Answer {
            nonce,
            successor,
            hops,
            replicas,
            items,
        } => {
            sip.headers
                .insert(Name::from(NONCE), format!("{nonce:016x}"));
            sip.headers.insert(Name::from(HOPS), hops.to_string());
            if let Some(successor) = successor {
                sip.headers
                    .insert(Name::CONTACT, contact(successor, "successor"));
            }
            for r in replicas {
                sip.headers.insert(Name::CONTACT, contact(r, "replica"));
            }
            if let Some(items) = items {
                set_items(&mut sip.headers, &mut sip.body, items, now);
            }
        }
        RingRequest::Notify { predecessor } | RingRequest::NewPredecessor { predecessor } => sip
            .headers
            .insert(Name::CONTACT, contact(predecessor, "predecessor")),
        RingRequest::Store { items, .. } | RingRequest::Transfer { items } => {
            set_items(&mut sip.headers, &mut sip.body, items, now)
        }
        RingRequest::Claim { item } => set_items(
            &mut sip.headers,
            &mut sip.body,
            std::slice::from_ref(item),
            now,
        ),
        RingRequest::Remove {
            name,
            replica,
            by,
            seal,
            ..
        } => {
            let body = serde_json::to_vec(&RemoveBody {
                name: name.clone(),
                by: replica.then(|| by.to_string()),
                signature: hex(seal),
            })
            .unwrap_or_default();
            sip.headers.insert(Name::CONTENT_TYPE, "application/json");
            sip.body = body.into();
        }
        RingRequest::Leave {
            leaving,
            predecessor,
            successors,
        } => {
            sip.headers
                .insert(Name::CONTACT, contact(leaving, "leaving"));
            if let Some(p) = predecessor {
                sip.headers.insert(Name::CONTACT, contact(p, "predecessor"));
            }
            for s in successors {
                sip.headers.insert(Name::CONTACT, contact(s, "successor"));
            }
        }
        RingRequest::Probe { peer } => sip.headers.insert(Name::CONTACT, contact(peer, "probe")),
        RingRequest::GetPredecessor
        | RingRequest::Ping
        | RingRequest::Fetch { .. }
        | RingRequest::Attach => {}
    }
    sip
}

/// The operation name and flags of a request's `P2P-Overlay` header.
fn op_of(request: &RingRequest) -> (&'static str, Vec<&'static str>) {
    match request {
        RingRequest::FindSuccessor {
            iterative, reply, ..
        } => {
            let mut flags = Vec::new();
            if *iterative {
                flags.push("iterative");
            }
            if reply.is_some_and(|r| r.items) {
                flags.push("items");
            }
            ("find-successor", flags)
        }
        RingRequest::Answer { items, .. } => (
            "answer",
            if items.is_some() {
                vec!["items"]
            } else {
                vec![]
            },
        ),
        RingRequest::GetPredecessor => ("get-predecessor", vec![]),
        RingRequest::Notify { .. } => ("notify", vec![]),
        RingRequest::NewPredecessor { .. } => ("new-predecessor", vec![]),
        RingRequest::Ping => ("ping", vec![]),
        RingRequest::Store { replica, .. } => {
            ("store", if *replica { vec!["replica"] } else { vec![] })
        }
        RingRequest::Claim { .. } => ("claim", vec![]),
        RingRequest::Fetch { .. } => ("fetch", vec![]),
        RingRequest::Remove { replica, .. } => {
            ("remove", if *replica { vec!["replica"] } else { vec![] })
        }
        RingRequest::Transfer { .. } => ("transfer", vec![]),
        RingRequest::Leave { .. } => ("leave", vec![]),
        RingRequest::Attach => ("attach", vec![]),
        RingRequest::Probe { .. } => ("probe", vec![]),
    }
}

/// Reads a ring request out of a SIP request.
pub fn decode_request(request: &Request, now: Instant) -> Result<RingRequest, WireError> {
    let header = request
        .raw(&Name::from(OVERLAY))
        .ok_or(WireError::NotOverlay)?;
    let mut parts = header.split(';').map(str::trim);
    if parts.next() != Some("chord") {
        return Err(WireError::UnknownOp(header.to_string()));
    }
    let mut op = "";
    let mut flags = Vec::new();
    for part in parts {
        match part.split_once('=') {
            Some(("op", value)) => op = value,
            _ => flags.push(part),
        }
    }
    let flag = |name: &str| flags.contains(&name);
    let key = || key_of_to(request);
    Ok(match op {
        "find-successor" => RingRequest::FindSuccessor {
            key: key()?,
            hops: hops_of(request)?,
            iterative: flag("iterative"),
            reply: match contacts_with(request.header_map(), "reply")
                .into_iter()
                .next()
            {
                Some(to) => Some(Reply {
                    to,
                    nonce: nonce_of(request)?,
                    items: flag("items"),
                }),
                None => None,
            },
        },
        "answer" => RingRequest::Answer {
            nonce: nonce_of(request)?,
            successor: contacts_with(request.header_map(), "successor")
                .into_iter()
                .next(),
            hops: hops_of(request)?,
            replicas: contacts_with(request.header_map(), "replica"),
            items: if flag("items") {
                Some(items_of(&request.body, now)?)
            } else {
                None
            },
        },
        "get-predecessor" => RingRequest::GetPredecessor,
        "notify" => RingRequest::Notify {
            predecessor: contacts_with(request.header_map(), "predecessor")
                .into_iter()
                .next()
                .ok_or(WireError::Missing("Contact;predecessor"))?,
        },
        "new-predecessor" => RingRequest::NewPredecessor {
            predecessor: contacts_with(request.header_map(), "predecessor")
                .into_iter()
                .next()
                .ok_or(WireError::Missing("Contact;predecessor"))?,
        },
        "ping" => RingRequest::Ping,
        "attach" => RingRequest::Attach,
        "probe" => RingRequest::Probe {
            peer: contacts_with(request.header_map(), "probe")
                .into_iter()
                .next()
                .ok_or(WireError::Missing("Contact;probe"))?,
        },
        "store" => RingRequest::Store {
            items: items_of(&request.body, now)?,
            replica: flag("replica"),
        },
        "claim" => {
            let mut items = items_of(&request.body, now)?;
            if items.len() != 1 {
                return Err(WireError::BadBody("a claim carries one item".into()));
            }
            RingRequest::Claim {
                item: items.remove(0),
            }
        }
        "fetch" => RingRequest::Fetch { key: key()? },
        "remove" => {
            let body: RemoveBody = serde_json::from_slice(&request.body)
                .map_err(|e| WireError::BadBody(e.to_string()))?;
            let by = match body.by {
                Some(by) => by
                    .parse()
                    .map_err(|_| WireError::BadBody("bad remover".into()))?,
                // The receiver takes the sender for the remover.
                None => NodeId::default(),
            };
            if body.signature.len() > 2 * MAX_SIGNATURE {
                return Err(WireError::BadBody("remove signature too long".into()));
            }
            RingRequest::Remove {
                key: key()?,
                name: body.name,
                replica: flag("replica"),
                by,
                seal: hex_bytes(&body.signature)
                    .ok_or_else(|| WireError::BadBody("bad remove signature".into()))?,
            }
        }
        "transfer" => RingRequest::Transfer {
            items: items_of(&request.body, now)?,
        },
        "leave" => RingRequest::Leave {
            leaving: contacts_with(request.header_map(), "leaving")
                .into_iter()
                .next()
                .ok_or(WireError::Missing("Contact;leaving"))?,
            predecessor: contacts_with(request.header_map(), "predecessor")
                .into_iter()
                .next(),
            successors: contacts_with(request.header_map(), "successor"),
        },
        other => return Err(WireError::UnknownOp(other.to_string())),
    })
}

/// Builds the SIP response to `original` that carries a ring response.
pub fn encode_response(original: &Request, response: &RingResponse, now: Instant) -> Response {
    let mut sip = match response {
        RingResponse::Next { .. } => original.response(302),
        RingResponse::Refused(refusal) => original.response(status_of(refusal)),
        _ => original.response(200),
    };
    let result = Name::from(RESULT);
    match response {
        RingResponse::Found {
            successor,
            hops,
            replicas,
        } => {
            sip.headers.insert(result, "found");
            sip.headers.insert(Name::from(HOPS), hops.to_string());
            sip.headers
                .insert(Name::CONTACT, contact(successor, "successor"));
            for r in replicas {
                sip.headers.insert(Name::CONTACT, contact(r, "replica"));
            }
        }
        RingResponse::Next { ask, hops } => {
            sip.headers.insert(Name::from(HOPS), hops.to_string());
            sip.headers.insert(Name::CONTACT, contact(ask, "next"));
        }
        RingResponse::Predecessor {
            predecessor,
            successors,
        } => {
            sip.headers.insert(result, "predecessor");
            if let Some(p) = predecessor {
                sip.headers.insert(Name::CONTACT, contact(p, "predecessor"));
            }
            for s in successors {
                sip.headers.insert(Name::CONTACT, contact(s, "successor"));
            }
        }
        RingResponse::Ok => sip.headers.insert(result, "ok"),
        RingResponse::Stored => sip.headers.insert(result, "stored"),
        RingResponse::Items { items } => {
            sip.headers.insert(result, "items");
            set_items(&mut sip.headers, &mut sip.body, items, now);
        }
        RingResponse::Refused(refusal) => {
            sip.reason = refusal
                .reason()
                .chars()
                .filter(|c| !c.is_control())
                .take(80)
                .collect();
        }
    }
    sip
}

/// Reads a ring response out of a final SIP response.
pub fn decode_response(response: &Response, now: Instant) -> Result<RingResponse, WireError> {
    let hops = || {
        response
            .raw(&Name::from(HOPS))
            .and_then(|h| h.trim().parse().ok())
            .ok_or(WireError::Missing(HOPS))
    };
    if response.status == 302 {
        return Ok(RingResponse::Next {
            ask: contacts_with(&response.headers, "next")
                .into_iter()
                .next()
                .ok_or(WireError::Missing("Contact;next"))?,
            hops: hops()?,
        });
    }
    if !(200..300).contains(&response.status) {
        return Ok(RingResponse::Refused(refusal_of(
            response.status,
            &response.reason,
        )));
    }
    let result = response
        .raw(&Name::from(RESULT))
        .map(|r| r.trim().to_string())
        .ok_or(WireError::Missing(RESULT))?;
    Ok(match result.as_str() {
        "found" => RingResponse::Found {
            successor: contacts_with(&response.headers, "successor")
                .into_iter()
                .next()
                .ok_or(WireError::Missing("Contact;successor"))?,
            hops: hops()?,
            replicas: contacts_with(&response.headers, "replica"),
        },
        "predecessor" => RingResponse::Predecessor {
            predecessor: contacts_with(&response.headers, "predecessor")
                .into_iter()
                .next(),
            successors: contacts_with(&response.headers, "successor"),
        },
        "ok" => RingResponse::Ok,
        "stored" => RingResponse::Stored,
        "items" => RingResponse::Items {
            items: items_of(&response.body, now)?,
        },
        other => return Err(WireError::UnknownOp(other.to_string())),
    })
}

/// The status code that carries a refusal.
fn status_of(refusal: &Refusal) -> u16 {
    match refusal {
        Refusal::NoRoute | Refusal::Timeout | Refusal::LookupFailed => 408,
        Refusal::Loop => 482,
        Refusal::NotJoined | Refusal::Leaving | Refusal::Left | Refusal::NotHolder => 503,
        Refusal::Taken => 409,
        Refusal::NotWriter | Refusal::TooManyItems | Refusal::BadSignature => 403,
        Refusal::Other(_) => 500,
    }
}

/// The refusal a non-2xx final response means: a named one when status and
/// reason phrase are the ones [`status_of`] and [`Refusal::reason`] give,
/// else by status alone where that says enough.
fn refusal_of(status: u16, reason: &str) -> Refusal {
    let reason = reason.trim();
    if let Some(named) = Refusal::NAMED
        .into_iter()
        .find(|r| status_of(r) == status && r.reason() == reason)
    {
        return named;
    }
    match status {
        408 => Refusal::Timeout,
        482 => Refusal::Loop,
        _ => Refusal::Other(format!("{status} {reason}")),
    }
}

fn set_items(
    headers: &mut ezk_sip_types::Headers,
    body: &mut bytes::Bytes,
    items: &[Item],
    now: Instant,
) {
    let wire = ItemsBody {
        items: items
            .iter()
            .map(|i| WireItem {
                key: i.key.to_string(),
                name: i.name.clone(),
                kind: i.kind.clone(),
                value: hex(&i.value),
                version: i.version,
                expires_ms: i.expires.saturating_duration_since(now).as_millis() as u64,
                writer: i.writer.to_string(),
                signature: hex(&i.signature),
                proof: i.proof.clone(),
            })
            .collect(),
    };
    headers.insert(Name::CONTENT_TYPE, "application/json");
    *body = serde_json::to_vec(&wire).unwrap_or_default().into();
}

fn items_of(body: &[u8], now: Instant) -> Result<Vec<Item>, WireError> {
    let wire: ItemsBody =
        serde_json::from_slice(body).map_err(|e| WireError::BadBody(e.to_string()))?;
    wire.items
        .into_iter()
        .map(|w| {
            if w.proof.as_ref().is_some_and(|p| p.len() > MAX_PROOF)
                || w.signature.len() > 2 * MAX_SIGNATURE
            {
                return Err(WireError::BadBody(
                    "item proof or signature too long".into(),
                ));
            }
            let writer = match w.writer.as_str() {
                "" => NodeId::default(),
                text => text
                    .parse()
                    .map_err(|_| WireError::BadBody("bad item writer".into()))?,
            };
            Ok(Item {
                key: w
                    .key
                    .parse()
                    .map_err(|_| WireError::BadBody("bad item key".into()))?,
                name: w.name,
                kind: w.kind,
                value: hex_bytes(&w.value)
                    .ok_or_else(|| WireError::BadBody("bad item value".into()))?,
                version: w.version,
                expires: now + Duration::from_millis(w.expires_ms.min(10 * 365 * 86_400_000)),
                writer,
                signature: hex_bytes(&w.signature)
                    .ok_or_else(|| WireError::BadBody("bad item signature".into()))?,
                proof: w.proof,
            })
        })
        .collect()
}

/// Bytes as lower-case hex (ring values and certificates on the wire).
pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
    // Only ASCII digits were pushed.
    String::from_utf8(out).unwrap_or_default()
}

/// Hex back to bytes; `None` for an odd length or a non-hex digit.
pub(super) fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// The `P2P-Hops` of a request.
fn hops_of(request: &Request) -> Result<u32, WireError> {
    request
        .raw(&Name::from(HOPS))
        .and_then(|h| h.trim().parse().ok())
        .ok_or(WireError::Missing(HOPS))
}

/// The `P2P-Nonce` of a request: 16 hex digits.
fn nonce_of(request: &Request) -> Result<u64, WireError> {
    request
        .raw(&Name::from(NONCE))
        .map(|n| n.trim())
        .filter(|n| n.len() == 16)
        .and_then(|n| u64::from_str_radix(n, 16).ok())
        .ok_or(WireError::Missing(NONCE))
}

/// The key named by the user part of the To URI.
fn key_of_to(request: &Request) -> Result<NodeId, WireError> {
    let to = request.to_header().ok_or(WireError::Missing("To"))?;
    match &to.uri.uri.user_part {
        SipUriUserPart::User(user) => user.parse().map_err(|_| WireError::Missing("key in To")),
        _ => Err(WireError::Missing("key in To")),
    }
}

/// The peers in Contact headers carrying parameter `role`, in order.
fn contacts_with(headers: &ezk_sip_types::Headers, role: &str) -> Vec<Peer> {
    let contacts = headers.get_named::<Vec<Contact>>().unwrap_or_default();
    contacts
        .iter()
        .filter(|c| c.params.get(role).is_some())
        .filter_map(|c| peer_of(&c.uri.uri))
        .collect()
}

/// `sip:<node-id>@<ip>:<port>` as a peer.
fn peer_of(uri: &SipUri) -> Option<Peer> {
    let SipUriUserPart::User(user) = &uri.user_part else {
        return None;
    };
    let id: NodeId = user.parse().ok()?;
    let ip = match &uri.host_port.host {
        Host::IP4(ip) => (*ip).into(),
        Host::IP6(ip) => (*ip).into(),
        Host::Name(_) => return None,
    };
    Some(Peer {
        id,
        addr: SocketAddr::new(ip, uri.host_port.port?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;

    fn peer(port: u16) -> Peer {
        Peer::of_addr(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Encodes, prints, parses and decodes: what a peer would read.
    fn round_trip(request: RingRequest) -> RingRequest {
        let now = Instant::now();
        let sip = encode_request(
            &request,
            &peer(5060),
            "127.0.0.1:5070".parse().expect("addr"),
            now,
        );
        let mut sip = sip;
        sip.headers
            .insert(Name::VIA, "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx");
        sip.headers.insert(Name::CALL_ID, "c");
        sip.headers.insert(Name::CSEQ, format!("1 {}", sip.method));
        let Ok(Message::Request(back)) = Message::parse(sip.to_bytes()) else {
            panic!("encoded request does not parse")
        };
        assert!(is_overlay(&back));
        let decoded = decode_request(&back, now).expect("decodes");
        // Responses too, on the same request.
        for response in responses() {
            let encoded = encode_response(&back, &response, now);
            let Ok(Message::Response(parsed)) = Message::parse(encoded.to_bytes()) else {
                panic!("encoded response does not parse")
            };
            let again = decode_response(&parsed, now).expect("response decodes");
            assert_eq!(strip_expiry_resp(again), strip_expiry_resp(response));
        }
        decoded
    }

    fn item(name: &str) -> Item {
        Item {
            key: NodeId::of_key("alice@example.test"),
            name: name.into(),
            kind: "binding".into(),
            value: vec![0, 1, 2, 255],
            version: 7,
            expires: Instant::now() + Duration::from_secs(3600),
            writer: NodeId::of_key("writer"),
            signature: vec![9, 8, 7],
            proof: Some("Digest username=\"alice\"".into()),
        }
    }

    type Stripped = (
        NodeId,
        String,
        String,
        Vec<u8>,
        u64,
        NodeId,
        Vec<u8>,
        Option<String>,
    );

    fn strip_items(items: Vec<Item>) -> Vec<Stripped> {
        items
            .into_iter()
            .map(|i| {
                (
                    i.key,
                    i.name,
                    i.kind,
                    i.value,
                    i.version,
                    i.writer,
                    i.signature,
                    i.proof,
                )
            })
            .collect()
    }

    fn strip_expiry_resp(r: RingResponse) -> String {
        match r {
            RingResponse::Items { items } => format!("items {:?}", strip_items(items)),
            other => format!("{other:?}"),
        }
    }

    fn responses() -> Vec<RingResponse> {
        vec![
            RingResponse::Found {
                successor: peer(5080),
                hops: 3,
                replicas: vec![peer(5081), peer(5082)],
            },
            RingResponse::Next {
                ask: peer(5090),
                hops: 2,
            },
            RingResponse::Predecessor {
                predecessor: Some(peer(5050)),
                successors: vec![peer(5080), peer(5081)],
            },
            RingResponse::Predecessor {
                predecessor: None,
                successors: vec![],
            },
            RingResponse::Ok,
            RingResponse::Stored,
            RingResponse::Items {
                items: vec![item("a"), item("b")],
            },
        ]
        .into_iter()
        .chain(Refusal::NAMED.into_iter().map(RingResponse::Refused))
        .collect()
    }

    #[test]
    fn every_request_survives_the_wire() {
        let key = NodeId::of_key("alice@example.test");
        for request in [
            RingRequest::FindSuccessor {
                key,
                hops: 4,
                iterative: true,
                reply: None,
            },
            RingRequest::FindSuccessor {
                key,
                hops: 1,
                iterative: false,
                reply: None,
            },
            RingRequest::FindSuccessor {
                key,
                hops: 2,
                iterative: false,
                reply: Some(Reply {
                    to: peer(5030),
                    nonce: 0x0123_4567_89ab_cdef,
                    items: true,
                }),
            },
            RingRequest::Answer {
                nonce: u64::MAX,
                successor: Some(peer(5090)),
                hops: 3,
                replicas: vec![peer(5091), peer(5092)],
                items: None,
            },
            RingRequest::Answer {
                nonce: 1,
                successor: None,
                hops: 0,
                replicas: Vec::new(),
                items: None,
            },
            RingRequest::Answer {
                nonce: 2,
                successor: Some(peer(5090)),
                hops: 1,
                replicas: Vec::new(),
                items: Some(Vec::new()),
            },
            RingRequest::GetPredecessor,
            RingRequest::Notify {
                predecessor: peer(5050),
            },
            RingRequest::NewPredecessor {
                predecessor: peer(5040),
            },
            RingRequest::Ping,
            RingRequest::Attach,
            RingRequest::Probe { peer: peer(5090) },
            RingRequest::Fetch { key },
            RingRequest::Remove {
                key,
                name: "alice@example.test".into(),
                replica: true,
                by: NodeId::of_key("remover"),
                seal: vec![0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
            },
            RingRequest::Leave {
                leaving: peer(5060),
                predecessor: Some(peer(5050)),
                successors: vec![peer(5070), peer(5080)],
            },
        ] {
            assert_eq!(round_trip(request.clone()), request);
        }
        for request in [
            RingRequest::Store {
                items: vec![item("x")],
                replica: false,
            },
            RingRequest::Transfer {
                items: vec![item("x"), item("y")],
            },
            RingRequest::Claim { item: item("c") },
            RingRequest::Answer {
                nonce: 3,
                successor: Some(peer(5090)),
                hops: 2,
                replicas: vec![peer(5091)],
                items: Some(vec![item("a")]),
            },
        ] {
            let back = round_trip(request.clone());
            match (back, request) {
                (
                    RingRequest::Answer {
                        items: Some(a),
                        nonce: na,
                        successor: sa,
                        ..
                    },
                    RingRequest::Answer {
                        items: Some(b),
                        nonce: nb,
                        successor: sb,
                        ..
                    },
                ) => {
                    assert_eq!(strip_items(a), strip_items(b));
                    assert_eq!((na, sa), (nb, sb));
                }
                (
                    RingRequest::Store {
                        items: a,
                        replica: ra,
                    },
                    RingRequest::Store {
                        items: b,
                        replica: rb,
                    },
                ) => {
                    assert_eq!(strip_items(a), strip_items(b));
                    assert_eq!(ra, rb);
                }
                (RingRequest::Transfer { items: a }, RingRequest::Transfer { items: b }) => {
                    assert_eq!(strip_items(a), strip_items(b))
                }
                (RingRequest::Claim { item: a }, RingRequest::Claim { item: b }) => {
                    assert_eq!(strip_items(vec![a]), strip_items(vec![b]))
                }
                other => panic!("changed kind: {other:?}"),
            }
        }
    }

    #[test]
    fn a_claim_carries_exactly_one_item_and_taken_is_409() {
        let now = Instant::now();
        let me = peer(5060);
        let mut sip = encode_request(
            &RingRequest::Transfer {
                items: vec![item("x"), item("y")],
            },
            &me,
            peer(5070).addr,
            now,
        );
        sip.headers.remove(&Name::from(OVERLAY));
        sip.headers.insert(Name::from(OVERLAY), "chord;op=claim");
        assert!(matches!(
            decode_request(&sip, now),
            Err(WireError::BadBody(_))
        ));
        assert_eq!(status_of(&Refusal::Taken), 409);
        assert_eq!(refusal_of(409, "already taken"), Refusal::Taken);
    }

    #[test]
    fn unnamed_refusals_keep_status_and_words() {
        assert_eq!(
            refusal_of(503, "Service Unavailable"),
            Refusal::Other("503 Service Unavailable".into())
        );
        assert_eq!(refusal_of(408, "Request Timeout"), Refusal::Timeout);
        assert_eq!(refusal_of(482, "Loop Detected"), Refusal::Loop);
        assert_eq!(status_of(&Refusal::Other("x".into())), 500);
    }

    #[test]
    fn user_traffic_is_not_overlay_and_bad_overlay_is_refused() {
        let raw =
            "INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n";
        let Ok(Message::Request(invite)) = Message::parse(bytes::Bytes::from(raw)) else {
            panic!("parse")
        };
        assert!(!is_overlay(&invite));
        let raw = "REGISTER sip:127.0.0.1 SIP/2.0\r\nP2P-Overlay: chord;op=teleport\r\n\r\n";
        let Ok(Message::Request(bad)) = Message::parse(bytes::Bytes::from(raw)) else {
            panic!("parse")
        };
        assert!(is_overlay(&bad));
        assert_eq!(
            decode_request(&bad, Instant::now()),
            Err(WireError::UnknownOp("teleport".into()))
        );
    }
}
