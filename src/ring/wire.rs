//! The SIP wire form of overlay messages ("P2P-over-SIP"); `docs/protocol.md`
//! is the specification, with an example of every message.
//!
//! - Every overlay request carries the marker header `P2P-Overlay: chord`;
//!   [`is_overlay`] looks at nothing else. Responses carry it too.
//! - The operation is named by `P2P-Op` (requests) and `P2P-Result`
//!   (responses); REGISTER carries the ring operations (the key in the To URI,
//!   as in the seed), OPTIONS the liveness probe.
//! - Peers are SIP URIs `sip:<40 hex Node-ID>@<ip>:<port>` in Contact headers,
//!   told apart by a `p2p=` parameter (`successor`, `predecessor`, `replica`,
//!   `next`, `leaving`), in order.
//! - Items travel as a JSON body (`application/p2p-items+json`), values in
//!   base64, expiry as seconds from now.
//!
//! [`encode_request`] builds the request line, To, From (without tag),
//! Contact, the P2P headers and the body. The driver adds Via (with a branch),
//! Call-ID, CSeq, Max-Forwards and the From tag, and sends it in a SIP client
//! transaction; [`encode_response`] builds on [`Request::response`], so the
//! response has Via, From, To, Call-ID and CSeq of the request.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytesstr::BytesStr;
use ezk_sip_types::Name;

use super::{Item, NodeId, Peer, RingRequest, RingResponse};
use crate::sip::message::{Message, Request, Response};

/// The marker header, with value [`OVERLAY_NAME`].
pub const OVERLAY_HEADER: &str = "P2P-Overlay";
pub const OVERLAY_NAME: &str = "chord";
pub const OP_HEADER: &str = "P2P-Op";
pub const RESULT_HEADER: &str = "P2P-Result";
pub const HOPS_HEADER: &str = "P2P-Hops";
pub const LOOKUP_HEADER: &str = "P2P-Lookup";
pub const ITEMS_CONTENT_TYPE: &str = "application/p2p-items+json";

const H_OVERLAY: Name = Name::custom("P2P-Overlay", &["p2p-overlay"]);
const H_OP: Name = Name::custom("P2P-Op", &["p2p-op"]);
const H_RESULT: Name = Name::custom("P2P-Result", &["p2p-result"]);
const H_HOPS: Name = Name::custom("P2P-Hops", &["p2p-hops"]);
const H_LOOKUP: Name = Name::custom("P2P-Lookup", &["p2p-lookup"]);

/// Why a SIP message is not a valid overlay message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not an overlay message (no P2P-Overlay: chord)")]
    NotOverlay,
    #[error("unknown overlay operation {0:?}")]
    UnknownOp(String),
    #[error("missing or malformed {0}")]
    Missing(&'static str),
    #[error("bad peer URI {0:?}")]
    BadPeer(String),
    #[error("bad item body: {0}")]
    BadBody(String),
}

/// True when the request carries the overlay marker `P2P-Overlay: chord`.
pub fn is_overlay(request: &Request) -> bool {
    request
        .headers
        .get_raw(&H_OVERLAY)
        .any(|v| first_token(v).eq_ignore_ascii_case(OVERLAY_NAME))
}

/// A peer as a SIP URI: `sip:<node-id>@<ip>:<port>`.
pub fn peer_uri(p: &Peer) -> String {
    format!("sip:{}@{}", p.id, p.addr)
}

/// Parses `sip:<node-id>@<ip>:<port>` (with or without angle brackets).
pub fn parse_peer_uri(s: &str) -> Result<Peer, WireError> {
    let bad = || WireError::BadPeer(s.to_string());
    let t = s.trim().trim_start_matches('<').trim_end_matches('>');
    let t = t
        .strip_prefix("sip:")
        .or_else(|| t.strip_prefix("sips:"))
        .ok_or_else(bad)?;
    let t = t.split(';').next().unwrap_or("");
    let (id, addr) = t.split_once('@').ok_or_else(bad)?;
    Ok(Peer {
        id: NodeId::from_str(id).map_err(|_| bad())?,
        addr: SocketAddr::from_str(addr).map_err(|_| bad())?,
    })
}

/// The request for `request`, from `me` to the node at `to`, stamped with
/// the current time (item expiry is sent as seconds from now).
pub fn encode_request(request: &RingRequest, me: &Peer, to: SocketAddr) -> Request {
    encode_request_at(request, me, to, Instant::now())
}

/// [`encode_request`] with an explicit clock.
pub fn encode_request_at(
    request: &RingRequest,
    me: &Peer,
    to: SocketAddr,
    now: Instant,
) -> Request {
    let to_id = NodeId::of_addr(to);
    let mut method = "REGISTER";
    let mut to_user = to_id;
    let mut lines: Vec<String> = Vec::new();
    let mut body: Option<String> = None;
    let op = match request {
        RingRequest::FindSuccessor {
            key,
            hops,
            iterative,
        } => {
            to_user = *key;
            lines.push(format!("{HOPS_HEADER}: {hops}"));
            let mode = if *iterative { "iterative" } else { "recursive" };
            lines.push(format!("{LOOKUP_HEADER}: {mode}"));
            "find-successor"
        }
        RingRequest::GetPredecessor => "get-predecessor",
        RingRequest::Notify { predecessor } => {
            lines.push(contact(predecessor, "predecessor"));
            "notify"
        }
        RingRequest::NewPredecessor { predecessor } => {
            lines.push(contact(predecessor, "predecessor"));
            "new-predecessor"
        }
        RingRequest::Ping => {
            method = "OPTIONS";
            "ping"
        }
        RingRequest::Store { items, replica } => {
            if let [one] = &items[..] {
                to_user = one.key;
            }
            body = Some(items_json(items, now));
            if *replica { "store-replica" } else { "store" }
        }
        RingRequest::Fetch { key } => {
            to_user = *key;
            "fetch"
        }
        RingRequest::Remove { key, name, replica } => {
            to_user = *key;
            let v = serde_json::json!({ "key": key.to_string(), "name": name });
            body = Some(v.to_string());
            if *replica { "remove-replica" } else { "remove" }
        }
        RingRequest::Transfer { items } => {
            body = Some(items_json(items, now));
            "transfer"
        }
        RingRequest::Leave {
            leaving,
            predecessor,
            successors,
        } => {
            lines.push(format!(
                "Contact: <{}>;p2p=leaving;expires=0",
                peer_uri(leaving)
            ));
            if let Some(p) = predecessor {
                lines.push(contact(p, "predecessor"));
            }
            for s in successors {
                lines.push(contact(s, "successor"));
            }
            "leave"
        }
    };
    let mut text = format!("{method} sip:{to} SIP/2.0\r\n");
    text.push_str(&format!("To: <sip:{to_user}@{to}>\r\n"));
    text.push_str(&format!("From: <{}>\r\n", peer_uri(me)));
    text.push_str(&format!("{OVERLAY_HEADER}: {OVERLAY_NAME}\r\n"));
    text.push_str(&format!("{OP_HEADER}: {op}\r\n"));
    for l in lines {
        text.push_str(&l);
        text.push_str("\r\n");
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() {
        let ctype = if matches!(request, RingRequest::Remove { .. }) {
            "application/json"
        } else {
            ITEMS_CONTENT_TYPE
        };
        text.push_str(&format!("Content-Type: {ctype}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    match Message::parse(Bytes::from(text)) {
        Ok(Message::Request(r)) => r,
        other => unreachable!("overlay request does not parse: {other:?}"),
    }
}

/// The overlay request in a SIP request.
pub fn decode_request(request: &Request) -> Result<RingRequest, WireError> {
    decode_request_at(request, Instant::now())
}

/// [`decode_request`] with an explicit clock.
pub fn decode_request_at(request: &Request, now: Instant) -> Result<RingRequest, WireError> {
    if !is_overlay(request) {
        return Err(WireError::NotOverlay);
    }
    let op = header(&request.headers, &H_OP).ok_or(WireError::Missing(OP_HEADER))?;
    let to_user = || -> Result<NodeId, WireError> {
        let to = header(&request.headers, &Name::TO).ok_or(WireError::Missing("To"))?;
        let uri = angle(&to);
        let user = uri
            .strip_prefix("sip:")
            .or_else(|| uri.strip_prefix("sips:"))
            .and_then(|u| u.split_once('@'))
            .map(|(u, _)| u)
            .ok_or(WireError::Missing("To user (key)"))?;
        NodeId::from_str(user).map_err(|_| WireError::Missing("To user (key)"))
    };
    let contacts = contacts(&request.headers)?;
    let one = |role: &'static str| -> Result<Peer, WireError> {
        contacts
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, p)| *p)
            .ok_or(WireError::Missing("Contact"))
    };
    let body = || std::str::from_utf8(&request.body).map_err(|e| WireError::BadBody(e.to_string()));
    Ok(match op.to_ascii_lowercase().as_str() {
        "find-successor" => {
            let hops = header(&request.headers, &H_HOPS)
                .and_then(|h| h.parse().ok())
                .ok_or(WireError::Missing(HOPS_HEADER))?;
            let iterative = header(&request.headers, &H_LOOKUP)
                .is_some_and(|m| m.eq_ignore_ascii_case("iterative"));
            RingRequest::FindSuccessor {
                key: to_user()?,
                hops,
                iterative,
            }
        }
        "get-predecessor" => RingRequest::GetPredecessor,
        "notify" => RingRequest::Notify {
            predecessor: one("predecessor")?,
        },
        "new-predecessor" => RingRequest::NewPredecessor {
            predecessor: one("predecessor")?,
        },
        "ping" => RingRequest::Ping,
        "store" | "store-replica" => RingRequest::Store {
            items: parse_items(body()?, now)?,
            replica: op.eq_ignore_ascii_case("store-replica"),
        },
        "fetch" => RingRequest::Fetch { key: to_user()? },
        "remove" | "remove-replica" => {
            let v: serde_json::Value =
                serde_json::from_str(body()?).map_err(|e| WireError::BadBody(e.to_string()))?;
            let key = v["key"]
                .as_str()
                .and_then(|k| NodeId::from_str(k).ok())
                .ok_or(WireError::BadBody("no key".into()))?;
            let name = v["name"]
                .as_str()
                .ok_or(WireError::BadBody("no name".into()))?
                .to_string();
            RingRequest::Remove {
                key,
                name,
                replica: op.eq_ignore_ascii_case("remove-replica"),
            }
        }
        "transfer" => RingRequest::Transfer {
            items: parse_items(body()?, now)?,
        },
        "leave" => RingRequest::Leave {
            leaving: one("leaving")?,
            predecessor: contacts
                .iter()
                .find(|(r, _)| r == "predecessor")
                .map(|(_, p)| *p),
            successors: role_list(&contacts, "successor"),
        },
        other => return Err(WireError::UnknownOp(other.to_string())),
    })
}

/// The SIP response to `original` carrying `response`.
pub fn encode_response(original: &Request, response: &RingResponse) -> Response {
    encode_response_at(original, response, Instant::now())
}

/// [`encode_response`] with an explicit clock.
pub fn encode_response_at(original: &Request, response: &RingResponse, now: Instant) -> Response {
    let (status, result) = match response {
        RingResponse::Found { .. } => (200, "found"),
        RingResponse::Next { .. } => (302, "next"),
        RingResponse::Predecessor { .. } => (200, "predecessor"),
        RingResponse::Ok => (200, "ok"),
        RingResponse::Stored => (200, "stored"),
        RingResponse::Items { .. } => (200, "items"),
        RingResponse::Error { code, .. } => (*code, "error"),
    };
    let mut r = original.response(status);
    if let RingResponse::Error { reason, .. } = response
        && !reason.is_empty()
    {
        r.reason = reason.clone();
    }
    let mut add = |name: &str, value: String| {
        r.headers.insert(
            Name::unknown(BytesStr::from(name.to_string())),
            BytesStr::from(value),
        );
    };
    add(OVERLAY_HEADER, OVERLAY_NAME.to_string());
    add(RESULT_HEADER, result.to_string());
    let mut contacts: Vec<(Peer, &str)> = Vec::new();
    let mut body = None;
    match response {
        RingResponse::Found {
            successor,
            hops,
            replicas,
        } => {
            add(HOPS_HEADER, hops.to_string());
            contacts.push((*successor, "successor"));
            contacts.extend(replicas.iter().map(|p| (*p, "replica")));
        }
        RingResponse::Next { ask, hops } => {
            add(HOPS_HEADER, hops.to_string());
            contacts.push((*ask, "next"));
        }
        RingResponse::Predecessor {
            predecessor,
            successors,
        } => {
            contacts.extend(predecessor.iter().map(|p| (*p, "predecessor")));
            contacts.extend(successors.iter().map(|p| (*p, "successor")));
        }
        RingResponse::Items { items } => body = Some(items_json(items, now)),
        _ => {}
    }
    for (p, role) in contacts {
        r.headers.insert(
            Name::CONTACT,
            BytesStr::from(format!("<{}>;p2p={role}", peer_uri(&p))),
        );
    }
    if let Some(b) = body {
        r.headers.insert(
            Name::CONTENT_TYPE,
            BytesStr::from_static(ITEMS_CONTENT_TYPE),
        );
        r.body = Bytes::from(b);
    }
    r
}

/// The overlay response in a SIP response. Any final status other than 200
/// and the overlay's 302 is an [`RingResponse::Error`] with that status.
pub fn decode_response(response: &Response) -> Result<RingResponse, WireError> {
    decode_response_at(response, Instant::now())
}

/// [`decode_response`] with an explicit clock.
pub fn decode_response_at(response: &Response, now: Instant) -> Result<RingResponse, WireError> {
    let result = header(&response.headers, &H_RESULT).unwrap_or_default();
    let overlay = response
        .headers
        .get_raw(&H_OVERLAY)
        .any(|v| first_token(v).eq_ignore_ascii_case(OVERLAY_NAME));
    if response.status >= 300 && !(response.status == 302 && result == "next") {
        // Errors may come from plain SIP elements that know nothing of us.
        return Ok(RingResponse::Error {
            code: response.status,
            reason: response.reason.clone(),
        });
    }
    if !overlay {
        return Err(WireError::NotOverlay);
    }
    let contacts = contacts(&response.headers)?;
    let hops = || {
        header(&response.headers, &H_HOPS)
            .and_then(|h| h.parse::<u32>().ok())
            .ok_or(WireError::Missing(HOPS_HEADER))
    };
    let body =
        || std::str::from_utf8(&response.body).map_err(|e| WireError::BadBody(e.to_string()));
    Ok(match result.to_ascii_lowercase().as_str() {
        "found" => RingResponse::Found {
            successor: role_list(&contacts, "successor")
                .first()
                .copied()
                .ok_or(WireError::Missing("Contact;p2p=successor"))?,
            hops: hops()?,
            replicas: role_list(&contacts, "replica"),
        },
        "next" => RingResponse::Next {
            ask: role_list(&contacts, "next")
                .first()
                .copied()
                .ok_or(WireError::Missing("Contact;p2p=next"))?,
            hops: hops()?,
        },
        "predecessor" => RingResponse::Predecessor {
            predecessor: role_list(&contacts, "predecessor").first().copied(),
            successors: role_list(&contacts, "successor"),
        },
        "ok" => RingResponse::Ok,
        "stored" => RingResponse::Stored,
        "items" => RingResponse::Items {
            items: parse_items(body()?, now)?,
        },
        other => return Err(WireError::UnknownOp(other.to_string())),
    })
}

// ----- helpers -----

fn contact(p: &Peer, role: &str) -> String {
    format!("Contact: <{}>;p2p={role}", peer_uri(p))
}

fn first_token(v: &str) -> &str {
    v.split(';').next().unwrap_or("").trim()
}

fn header(headers: &ezk_sip_types::Headers, name: &Name) -> Option<String> {
    headers.get_raw(name).next().map(|v| v.trim().to_string())
}

/// The URI inside `<...>`, or the whole value.
fn angle(v: &str) -> String {
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].to_string(),
        _ => v.split(';').next().unwrap_or("").trim().to_string(),
    }
}

/// Every Contact value with a `p2p=` role, in order: (role, peer).
fn contacts(headers: &ezk_sip_types::Headers) -> Result<Vec<(String, Peer)>, WireError> {
    let mut out = Vec::new();
    for line in headers.get_raw(&Name::CONTACT) {
        for value in split_commas(line) {
            let role = value
                .rsplit_once('>')
                .map(|(_, params)| params)
                .unwrap_or("")
                .split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("p2p"))
                .map(|(_, v)| v.trim().to_ascii_lowercase());
            if let Some(role) = role {
                out.push((role, parse_peer_uri(&angle(value))?));
            }
        }
    }
    Ok(out)
}

fn role_list(contacts: &[(String, Peer)], role: &str) -> Vec<Peer> {
    contacts
        .iter()
        .filter(|(r, _)| r == role)
        .map(|(_, p)| *p)
        .collect()
}

/// Splits a header value at commas outside `<...>` and quotes.
fn split_commas(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    for (i, c) in v.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(v[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(v[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

#[derive(serde::Serialize, serde::Deserialize)]
struct WireItem {
    key: String,
    name: String,
    kind: String,
    /// base64 (RFC 4648, with padding).
    value: String,
    version: u64,
    /// Seconds from now.
    expires: u64,
}

fn items_json(items: &[Item], now: Instant) -> String {
    let wire: Vec<WireItem> = items
        .iter()
        .map(|i| WireItem {
            key: i.key.to_string(),
            name: i.name.clone(),
            kind: i.kind.clone(),
            value: base64_encode(&i.value),
            version: i.version,
            expires: i
                .expires
                .saturating_duration_since(now)
                .as_secs_f64()
                .ceil() as u64,
        })
        .collect();
    serde_json::to_string(&wire).expect("items serialize")
}

fn parse_items(body: &str, now: Instant) -> Result<Vec<Item>, WireError> {
    let wire: Vec<WireItem> =
        serde_json::from_str(body).map_err(|e| WireError::BadBody(e.to_string()))?;
    wire.into_iter()
        .map(|w| {
            Ok(Item {
                key: NodeId::from_str(&w.key).map_err(|e| WireError::BadBody(e.to_string()))?,
                name: w.name,
                kind: w.kind,
                value: base64_decode(&w.value)
                    .ok_or_else(|| WireError::BadBody("bad base64 value".into()))?,
                version: w.version,
                expires: now + Duration::from_secs(w.expires.min(10 * 365 * 86_400)),
            })
        })
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            B64[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            B64[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Decodes standard base64 (padding optional); `None` on bad input.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::HeaderAccess;
    use ezk_sip_types::Method;

    fn peer(port: u16) -> Peer {
        Peer::of_addr(SocketAddr::from(([192, 0, 2, 1], port)))
    }

    /// What the driver adds before sending, and the trip through bytes.
    fn over_the_wire(mut r: Request) -> Request {
        r.headers.insert_front(
            Name::VIA,
            BytesStr::from_static("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1"),
        );
        r.headers
            .insert(Name::CALL_ID, BytesStr::from_static("c1@192.0.2.1"));
        r.headers
            .insert(Name::CSEQ, BytesStr::from(format!("1 {}", r.method)));
        r.headers
            .insert(Name::MAX_FORWARDS, BytesStr::from_static("70"));
        match Message::parse(r.to_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn reparse_response(r: Response) -> Response {
        match Message::parse(r.to_bytes()) {
            Ok(Message::Response(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn items(now: Instant) -> Vec<Item> {
        vec![
            Item {
                key: NodeId::of_key("alice@overlay.test"),
                name: "sip:alice@192.0.2.10:5060".into(),
                kind: "binding".into(),
                value: b"<sip:alice@192.0.2.10:5060>;expires=3600".to_vec(),
                version: 7,
                expires: now + Duration::from_secs(3600),
            },
            Item {
                key: NodeId::of_key("bob@overlay.test"),
                name: "msg-1".into(),
                kind: "message".into(),
                value: vec![0, 1, 2, 255, 254, b','],
                version: 1,
                expires: now + Duration::from_secs(60),
            },
        ]
    }

    #[test]
    fn base64_round_trip() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            assert_eq!(base64_decode(&base64_encode(data)).as_deref(), Some(data));
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert!(base64_decode("!!").is_none());
    }

    #[test]
    fn every_request_round_trips() {
        let now = Instant::now();
        let me = peer(5060);
        let to = SocketAddr::from(([192, 0, 2, 2], 5070));
        let requests = vec![
            RingRequest::FindSuccessor {
                key: NodeId::of_key("alice@overlay.test"),
                hops: 3,
                iterative: false,
            },
            RingRequest::FindSuccessor {
                key: NodeId::of_key("bob@overlay.test"),
                hops: 1,
                iterative: true,
            },
            RingRequest::GetPredecessor,
            RingRequest::Notify { predecessor: me },
            RingRequest::NewPredecessor {
                predecessor: peer(5090),
            },
            RingRequest::Ping,
            RingRequest::Store {
                items: items(now)[..1].to_vec(),
                replica: false,
            },
            RingRequest::Store {
                items: items(now),
                replica: true,
            },
            RingRequest::Fetch {
                key: NodeId::of_key("alice@overlay.test"),
            },
            RingRequest::Remove {
                key: NodeId::of_key("alice@overlay.test"),
                name: "sip:alice@192.0.2.10:5060;transport=tcp, \"odd\" <name>".into(),
                replica: false,
            },
            RingRequest::Remove {
                key: NodeId::of_key("alice@overlay.test"),
                name: "x".into(),
                replica: true,
            },
            RingRequest::Transfer { items: items(now) },
            RingRequest::Leave {
                leaving: me,
                predecessor: Some(peer(5080)),
                successors: vec![peer(5070), peer(5071), peer(5072)],
            },
            RingRequest::Leave {
                leaving: me,
                predecessor: None,
                successors: vec![],
            },
        ];
        for req in requests {
            let sip = over_the_wire(encode_request_at(&req, &me, to, now));
            assert!(is_overlay(&sip), "{req:?}");
            let expected_method = if req == RingRequest::Ping {
                Method::OPTIONS
            } else {
                Method::REGISTER
            };
            assert_eq!(sip.method, expected_method);
            assert_eq!(sip.uri.to_string(), format!("sip:{to}"));
            let back = decode_request_at(&sip, now).unwrap_or_else(|e| panic!("{req:?}: {e}"));
            assert_eq!(back, req);
        }
    }

    #[test]
    fn every_response_round_trips() {
        let now = Instant::now();
        let me = peer(5060);
        let to = SocketAddr::from(([192, 0, 2, 2], 5070));
        let original = over_the_wire(encode_request_at(
            &RingRequest::FindSuccessor {
                key: NodeId::of_key("alice@overlay.test"),
                hops: 1,
                iterative: false,
            },
            &me,
            to,
            now,
        ));
        let responses = vec![
            RingResponse::Found {
                successor: peer(5070),
                hops: 4,
                replicas: vec![peer(5071), peer(5072)],
            },
            RingResponse::Next {
                ask: peer(5075),
                hops: 2,
            },
            RingResponse::Predecessor {
                predecessor: Some(peer(5050)),
                successors: vec![peer(5071), peer(5072)],
            },
            RingResponse::Predecessor {
                predecessor: None,
                successors: vec![],
            },
            RingResponse::Ok,
            RingResponse::Stored,
            RingResponse::Items { items: items(now) },
            RingResponse::Items { items: vec![] },
            RingResponse::Error {
                code: 503,
                reason: "node is leaving".into(),
            },
        ];
        for resp in responses {
            let sip = reparse_response(encode_response_at(&original, &resp, now));
            assert_eq!(sip.call_id().as_deref(), Some("c1@192.0.2.1"));
            let back = decode_response_at(&sip, now).unwrap_or_else(|e| panic!("{resp:?}: {e}"));
            assert_eq!(back, resp);
        }
        // The 302 of an iterative lookup is a real redirect with the next hop.
        let next = encode_response_at(
            &original,
            &RingResponse::Next {
                ask: peer(5075),
                hops: 2,
            },
            now,
        );
        assert_eq!(next.status, 302);
        // Any error from a plain SIP element is an Error.
        let mut plain = original.response(408);
        plain.reason = "Request Timeout".into();
        assert_eq!(
            decode_response_at(&plain, now),
            Ok(RingResponse::Error {
                code: 408,
                reason: "Request Timeout".into()
            })
        );
    }

    #[test]
    fn user_traffic_is_not_overlay() {
        let raw = "REGISTER sip:overlay.test SIP/2.0\r\n\
            Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-u\r\n\
            To: <sip:alice@overlay.test>\r\nFrom: <sip:alice@overlay.test>;tag=1\r\n\
            Call-ID: u1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@192.0.2.9>\r\n\r\n";
        let Ok(Message::Request(req)) = Message::parse(Bytes::from(raw)) else {
            panic!("parse")
        };
        assert!(!is_overlay(&req));
        assert_eq!(decode_request(&req), Err(WireError::NotOverlay));
        // A marker with another overlay name is not ours either.
        let other = raw.replace("Contact:", "P2P-Overlay: kademlia\r\nContact:");
        let Ok(Message::Request(req)) = Message::parse(Bytes::from(other)) else {
            panic!("parse")
        };
        assert!(!is_overlay(&req));
    }

    #[test]
    fn malformed_overlay_requests_are_errors() {
        let base = "REGISTER sip:192.0.2.2:5070 SIP/2.0\r\nTo: <sip:nothex@192.0.2.2:5070>\r\n\
            From: <sip:x@y>\r\nP2P-Overlay: chord\r\n";
        for (extra, body) in [
            ("P2P-Op: find-successor\r\nP2P-Hops: 1\r\n", ""),
            ("P2P-Op: teleport\r\n", ""),
            (
                "P2P-Op: notify\r\nContact: <sip:zz@192.0.2.1:5060>;p2p=predecessor\r\n",
                "",
            ),
            ("P2P-Op: store\r\n", "{not json"),
            ("", ""),
        ] {
            let raw = format!("{base}{extra}Content-Length: {}\r\n\r\n{body}", body.len());
            let Ok(Message::Request(req)) = Message::parse(Bytes::from(raw)) else {
                panic!("parse")
            };
            assert!(decode_request(&req).is_err(), "{extra}");
        }
    }
}

/// Prints one example of every overlay message, as on the wire once the
/// driver added its headers: `cargo test -p p2psip --lib print_protocol_examples -- --ignored --nocapture`.
/// `docs/protocol.md` quotes this output.
#[cfg(test)]
mod examples {
    use super::*;

    fn peer(last: u8) -> Peer {
        Peer::of_addr(SocketAddr::from(([192, 0, 2, last], 5060)))
    }

    fn wire_request(r: &RingRequest, from: &Peer, to: &Peer, n: u32, now: Instant) -> Request {
        let mut req = encode_request_at(r, from, to.addr, now);
        // What the driver adds: Via with a branch, Max-Forwards, From tag,
        // Call-ID and CSeq.
        let from_value = req.headers.remove(&Name::FROM).expect("from")[0].clone();
        req.headers.insert_front(
            Name::VIA,
            BytesStr::from(format!("SIP/2.0/UDP {};branch=z9hG4bK-{n:04}", from.addr)),
        );
        req.headers
            .insert(Name::MAX_FORWARDS, BytesStr::from_static("70"));
        req.headers.insert(
            Name::FROM,
            BytesStr::from(format!("{from_value};tag=t{n:04}")),
        );
        req.headers.insert(
            Name::CALL_ID,
            BytesStr::from(format!("ov{n:04}@{}", from.addr.ip())),
        );
        req.headers
            .insert(Name::CSEQ, BytesStr::from(format!("{n} {}", req.method)));
        req
    }

    fn show(title: &str, req: &Request, resp: &Response) {
        println!("=== {title}");
        println!("{}", String::from_utf8_lossy(&req.to_bytes()));
        println!("---");
        println!("{}", String::from_utf8_lossy(&resp.to_bytes()));
    }

    #[test]
    #[ignore]
    fn print_protocol_examples() {
        let now = Instant::now();
        let (a, b, c, d, e) = (peer(1), peer(2), peer(3), peer(4), peer(5));
        println!(
            "A = {} {}\nB = {} {}\nC = {} {}\nD = {} {}\nE = {} {}",
            a.addr, a.id, b.addr, b.id, c.addr, c.id, d.addr, d.id, e.addr, e.id
        );
        let alice = NodeId::of_key("alice@overlay.test");
        let binding = Item {
            key: alice,
            name: "sip:alice@198.51.100.7:5060".into(),
            kind: "binding".into(),
            value: b"<sip:alice@198.51.100.7:5060>;expires=3600".to_vec(),
            version: 3,
            expires: now + Duration::from_secs(3600),
        };
        let mut n = 0;
        let mut ex = |title: &str, from: &Peer, to: &Peer, rq: RingRequest, rs: RingResponse| {
            n += 1;
            let req = wire_request(&rq, from, to, n, now);
            assert_eq!(decode_request_at(&req, now).as_ref(), Ok(&rq));
            let resp = encode_response_at(&req, &rs, now);
            assert_eq!(decode_response_at(&resp, now).as_ref(), Ok(&rs));
            show(title, &req, &resp);
        };
        // Ring order: D 7cc7.. < A 780c.. < B b59d.. < E d888.. < C ff99..;
        // alice (bcd8..) lives at E, replicas C and D; bob (87de..) at B.
        let bob = Item {
            key: NodeId::of_key("bob@overlay.test"),
            name: "sip:bob@198.51.100.9:5062".into(),
            kind: "binding".into(),
            value: b"<sip:bob@198.51.100.9:5062>;expires=600".to_vec(),
            version: 1,
            expires: now + Duration::from_secs(600),
        };
        ex(
            "find-successor, recursive",
            &a,
            &b,
            RingRequest::FindSuccessor {
                key: alice,
                hops: 1,
                iterative: false,
            },
            RingResponse::Found {
                successor: e,
                hops: 1,
                replicas: vec![c, d],
            },
        );
        ex(
            "find-successor, iterative (302 ask next)",
            &c,
            &a,
            RingRequest::FindSuccessor {
                key: alice,
                hops: 1,
                iterative: true,
            },
            RingResponse::Next { ask: b, hops: 1 },
        );
        ex(
            "get-predecessor (stabilize)",
            &a,
            &b,
            RingRequest::GetPredecessor,
            RingResponse::Predecessor {
                predecessor: Some(a),
                successors: vec![e, c, d],
            },
        );
        ex(
            "notify",
            &a,
            &b,
            RingRequest::Notify { predecessor: a },
            RingResponse::Ok,
        );
        ex(
            "new-predecessor",
            &b,
            &d,
            RingRequest::NewPredecessor { predecessor: a },
            RingResponse::Ok,
        );
        ex(
            "ping (liveness probe)",
            &b,
            &a,
            RingRequest::Ping,
            RingResponse::Ok,
        );
        ex(
            "store (to the key's successor)",
            &a,
            &e,
            RingRequest::Store {
                items: vec![binding.clone()],
                replica: false,
            },
            RingResponse::Stored,
        );
        ex(
            "store-replica",
            &e,
            &c,
            RingRequest::Store {
                items: vec![binding.clone()],
                replica: true,
            },
            RingResponse::Stored,
        );
        ex(
            "fetch",
            &a,
            &e,
            RingRequest::Fetch { key: alice },
            RingResponse::Items {
                items: vec![binding.clone()],
            },
        );
        ex(
            "remove",
            &a,
            &e,
            RingRequest::Remove {
                key: alice,
                name: binding.name.clone(),
                replica: false,
            },
            RingResponse::Stored,
        );
        ex(
            "remove-replica",
            &e,
            &c,
            RingRequest::Remove {
                key: alice,
                name: binding.name.clone(),
                replica: true,
            },
            RingResponse::Stored,
        );
        ex(
            "transfer on join (E hands the keys in (A, B] to its new predecessor B)",
            &e,
            &b,
            RingRequest::Transfer {
                items: vec![bob.clone()],
            },
            RingResponse::Ok,
        );
        ex(
            "transfer on leave (E hands everything to its successor C)",
            &e,
            &c,
            RingRequest::Transfer {
                items: vec![binding.clone(), bob.clone()],
            },
            RingResponse::Ok,
        );
        ex(
            "leave (E to its successor C; the same to its predecessor B)",
            &e,
            &c,
            RingRequest::Leave {
                leaving: e,
                predecessor: Some(b),
                successors: vec![c, d, a],
            },
            RingResponse::Ok,
        );
        ex(
            "error",
            &a,
            &e,
            RingRequest::Store {
                items: vec![binding.clone()],
                replica: false,
            },
            RingResponse::Error {
                code: 503,
                reason: "node is leaving".into(),
            },
        );
    }
}
