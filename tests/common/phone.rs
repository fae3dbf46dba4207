//! A phone on a raw UDP socket for the authentication tests: sends a request
//! it writes itself, reads the response to it, and answers digest challenges
//! with an implementation of RFC 7616 §3.4 of its own (MD5 and SHA-256,
//! `qop=auth`), independent of the node's code.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use md5::Md5;
use sha2::{Digest, Sha256};

use super::{RawResponse, token};

/// How long a phone waits for an answer.
pub const ANSWER: Duration = Duration::from_secs(5);

pub struct Phone {
    pub socket: UdpSocket,
    pub node: SocketAddr,
}

/// A challenge's parameters.
#[derive(Clone, Debug)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: String,
    pub qop: String,
    pub stale: bool,
}

impl Challenge {
    /// The challenges of a 401/407, in order.
    pub fn all_of(response: &RawResponse) -> Vec<Challenge> {
        let name = if response.status == 401 {
            "WWW-Authenticate"
        } else {
            "Proxy-Authenticate"
        };
        response
            .headers(name)
            .iter()
            .filter_map(|v| Challenge::parse(v))
            .collect()
    }

    fn parse(value: &str) -> Option<Challenge> {
        let rest = value.strip_prefix("Digest ")?;
        let get = |name: &str| {
            rest.split(',').find_map(|p| {
                let (n, v) = p.trim().split_once('=')?;
                (n.trim() == name).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        Some(Challenge {
            realm: get("realm")?,
            nonce: get("nonce")?,
            algorithm: get("algorithm").unwrap_or_else(|| "MD5".into()),
            qop: get("qop").unwrap_or_default(),
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    fn hash(&self, data: &str) -> String {
        let bytes: Vec<u8> = if self.algorithm.eq_ignore_ascii_case("SHA-256") {
            Sha256::digest(data.as_bytes()).to_vec()
        } else {
            Md5::digest(data.as_bytes()).to_vec()
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The `Digest …` credentials answering this challenge.
    pub fn answer(&self, user: &str, password: &str, method: &str, uri: &str, nc: u32) -> String {
        let ha1 = self.hash(&format!("{user}:{}:{password}", self.realm));
        let ha2 = self.hash(&format!("{method}:{uri}"));
        let cnonce = "4a1f00d2";
        let response = self.hash(&format!(
            "{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}",
            self.nonce
        ));
        format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}, qop=auth, nc={nc:08x}, cnonce=\"{cnonce}\"",
            self.realm, self.nonce, self.algorithm
        )
    }
}

impl Phone {
    /// A phone bound on `ip` (any port) that talks to `node`.
    pub fn new(ip: &str, node: SocketAddr) -> Phone {
        let socket = UdpSocket::bind((ip, 0)).expect("bind the phone's socket");
        Phone { socket, node }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local address")
    }

    /// A REGISTER of `user@domain` with `extra` header lines (each ending in CRLF).
    pub fn register(&self, user: &str, domain: &str, extra: &str) -> String {
        let me = self.addr();
        let branch = format!("z9hG4bK{}", token());
        format!(
            "REGISTER sip:{domain} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{domain}>;tag={branch}\r\n\
             To: <sip:{user}@{domain}>\r\n\
             Call-ID: {branch}@phone\r\n\
             CSeq: 1 REGISTER\r\n\
             Contact: <sip:{user}@{me}>\r\n\
             Expires: 600\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        )
    }

    /// A REGISTER of `user@DOMAIN` answered after a challenge with
    /// `password` and the challenge of `algorithm`: the final response.
    pub fn register_with(&self, user: &str, password: &str, algorithm: &str) -> RawResponse {
        let domain = super::DOMAIN;
        let first = self
            .ask(&self.register(user, domain, ""))
            .expect("an answer to REGISTER");
        assert_eq!(first.status, 401, "{}", first.text);
        let challenge = Challenge::all_of(&first)
            .into_iter()
            .find(|c| c.algorithm == algorithm)
            .unwrap_or_else(|| panic!("no {algorithm} challenge in\n{}", first.text));
        let credentials = challenge.answer(user, password, "REGISTER", &format!("sip:{domain}"), 1);
        self.ask(&self.register(user, domain, &format!("Authorization: {credentials}\r\n")))
            .expect("an answer to the REGISTER with credentials")
    }

    /// A MESSAGE (or another method) from `from` to `to`, with `extra` headers.
    pub fn request(&self, method: &str, from: &str, to: &str, extra: &str) -> String {
        let me = self.addr();
        let branch = format!("z9hG4bK{}", token());
        format!(
            "{method} sip:{to} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{from}>;tag={branch}\r\n\
             To: <sip:{to}>\r\n\
             Call-ID: {branch}@phone\r\n\
             CSeq: 1 {method}\r\n\
             Contact: <sip:phone@{me}>\r\n\
             Content-Type: text/plain\r\n\
             {extra}Content-Length: 5\r\n\r\nhello"
        )
    }

    /// Sends `request` and waits for nothing (an ACK).
    pub fn send(&self, request: &str) {
        self.socket
            .send_to(request.as_bytes(), self.node)
            .expect("send");
    }

    /// Sends `request` and gives the final response to it (`None`: nothing within [`ANSWER`]).
    pub fn ask(&self, request: &str) -> Option<RawResponse> {
        let branch = request
            .split("branch=")
            .nth(1)
            .and_then(|b| b.split(['\r', ';']).next())
            .expect("a branch")
            .to_string();
        self.socket
            .send_to(request.as_bytes(), self.node)
            .expect("send");
        let deadline = Instant::now() + ANSWER;
        let mut buf = vec![0u8; 70_000];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.socket.set_read_timeout(Some(left)).expect("timeout");
            match self.socket.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let Some(response) = RawResponse::parse(&buf[..n]) else {
                        continue;
                    };
                    if response.text.contains(&branch) && response.status >= 200 {
                        return Some(response);
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(e) => panic!("receive failed: {e}"),
            }
        }
    }
}
