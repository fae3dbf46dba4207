//! Ring members seen from outside, for the overlay's process tests: a node
//! with its HTTP address, read through `/status` and `/metrics`.

use std::borrow::Borrow;
use std::net::{SocketAddr, UdpSocket};

use serde_json::Value;
use sha1::{Digest, Sha1};

use super::{Node, RawResponse, http_get, tail};

/// A node of the ring under test and the address of its HTTP server.
pub struct Member {
    pub node: Node,
    pub http: SocketAddr,
}

/// The member's `/status`, when it answers.
pub fn status(m: &Member) -> Option<Value> {
    http_get(m.http, "/status").and_then(|body| serde_json::from_str(&body).ok())
}

/// A counter from `/metrics` (0 when absent or unreachable).
pub fn metric(m: &Member, name: &str) -> u64 {
    http_get(m.http, "/metrics")
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        })
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// Every address a node's `/status` names: predecessor, successors, fingers.
pub fn known(s: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(a) = s["predecessor"]["addr"].as_str() {
        out.push(a.to_string());
    }
    for list in ["successors", "fingers"] {
        for p in s[list].as_array().into_iter().flatten() {
            if let Some(a) = p["addr"].as_str() {
                out.push(a.to_string());
            }
        }
    }
    out
}

/// Each member's successor and predecessor are its true neighbours.
pub fn consistent<M: Borrow<Member>>(members: &[M]) -> bool {
    let mut ids: Vec<&str> = members
        .iter()
        .map(|m| m.borrow().node.node_id.as_str())
        .collect();
    ids.sort();
    members.iter().all(|m| {
        let m = m.borrow();
        let Some(s) = status(m) else { return false };
        let me = ids.iter().position(|id| *id == m.node.node_id).unwrap_or(0);
        let next = ids[(me + 1) % ids.len()];
        let prev = ids[(me + ids.len() - 1) % ids.len()];
        s["successors"][0]["id"].as_str() == Some(next)
            && s["predecessor"]["id"].as_str() == Some(prev)
    })
}

/// The last lines of each member's log, for a failure's message.
pub fn logs<M: Borrow<Member>>(members: &[M]) -> String {
    members
        .iter()
        .map(|m| {
            let m = m.borrow();
            format!("--- {}:\n{}", m.node.name, tail(&m.node.log(), 40))
        })
        .collect()
}

/// SHA-1 of `text` in lower-case hex (a Node-ID or a key).
pub fn sha1_hex(text: &str) -> String {
    Sha1::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SIP URI of the ring peer at `addr` (its Node-ID as the user part).
pub fn peer_uri(addr: SocketAddr) -> String {
    format!("sip:{}@{addr}", sha1_hex(&addr.to_string()))
}

/// An overlay request as a node writes it (docs/protocol.md): `op` with
/// its flags, To `to`, `extra` header lines and a JSON `body`, from the
/// node at `local` over `transport` ("UDP", "TCP", "TLS") to `member`.
pub fn overlay_request(
    transport: &str,
    local: SocketAddr,
    member: SocketAddr,
    op: &str,
    to: &str,
    extra: &str,
    body: &str,
) -> String {
    let t = super::token();
    let me = format!("<{}>", peer_uri(local));
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    format!(
        "REGISTER sip:{member} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch=z9hG4bK{t}\r\n\
         P2P-Overlay: chord;op={op}\r\n\
         From: {me};tag={t}\r\n\
         To: <{to}>\r\n\
         Contact: {me}\r\n\
         {extra}{content_type}Max-Forwards: 70\r\n\
         Call-ID: {t}@{local}\r\n\
         CSeq: 1 REGISTER\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends `request` from `socket` to `to` and returns the final answer
/// (the socket's read timeout bounds the wait).
pub fn exchange(socket: &UdpSocket, to: SocketAddr, request: &str) -> RawResponse {
    socket.send_to(request.as_bytes(), to).expect("send");
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, _) = socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no answer from {to} to:\n{request}\n{e}"));
        if let Some(r) = RawResponse::parse(&buf[..n])
            && r.status >= 200
        {
            return r;
        }
    }
}
