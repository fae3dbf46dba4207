//! A scripted legacy registrar, the fake upstream of cross-registration:
//! a REGISTER without credentials is challenged (401 with a digest
//! `WWW-Authenticate`), one with an `Authorization` naming the expected
//! user is answered 200 with the Contact and the granted expiry (the asked
//! one, capped), and every REGISTER is recorded. The digest response itself
//! is not checked (the bridge crate's tests do that); its presence is.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ezk_sip_types::{Method, Name};

use crate::sip::message::{HeaderAccess, Message};

/// One REGISTER the registrar saw.
#[derive(Clone, Debug, PartialEq)]
pub struct SeenRegister {
    pub at: Duration,
    /// The user part of To.
    pub user: String,
    pub contact: Option<String>,
    /// The Expires asked for (header or Contact parameter).
    pub expires: Option<u32>,
    pub authorized: bool,
    /// What we answered.
    pub status: u16,
}

/// The scripted registrar.
#[derive(Clone, Debug)]
pub struct LegacyRegistrar {
    pub addr: SocketAddr,
    pub realm: String,
    /// The digest user name expected in `Authorization`.
    pub username: String,
    /// Longest expiry granted.
    pub max_expires: u32,
    pub seen: Vec<SeenRegister>,
    nonces: u64,
}

impl LegacyRegistrar {
    pub fn new(addr: SocketAddr, realm: &str, username: &str) -> LegacyRegistrar {
        LegacyRegistrar {
            addr,
            realm: realm.to_string(),
            username: username.to_string(),
            max_expires: 3600,
            seen: Vec::new(),
            nonces: 0,
        }
    }

    /// REGISTERs for `user` answered 200 with a non-zero expiry.
    pub fn successful_registers(&self, user: &str) -> usize {
        self.seen
            .iter()
            .filter(|s| s.user == user && s.status == 200 && s.expires != Some(0))
            .count()
    }

    /// True when `user` was de-registered (Expires 0 answered 200).
    pub fn deregistered(&self, user: &str) -> bool {
        self.seen
            .iter()
            .any(|s| s.user == user && s.status == 200 && s.expires == Some(0))
    }

    /// A datagram: returns the answer to send back to `from`, if any.
    pub(super) fn receive(&mut self, bytes: Bytes, now: Duration) -> Option<(Bytes, String)> {
        let Ok(Message::Request(request)) = Message::parse(bytes) else {
            return None;
        };
        if request.method == Method::ACK {
            return None;
        }
        if request.method != Method::REGISTER {
            return Some((request.final_response(405).to_bytes(), "legacy 405".into()));
        }
        let user = request
            .raw(&Name::TO)
            .and_then(|to| to.split("sip:").nth(1))
            .and_then(|rest| rest.split('@').next())
            .unwrap_or_default()
            .to_string();
        let contact = request.raw(&Name::CONTACT).map(|c| c.trim().to_string());
        let contact_expires = contact.as_deref().and_then(|c| {
            c.split(';')
                .find_map(|p| p.trim().strip_prefix("expires="))
                .and_then(|v| v.trim().parse().ok())
        });
        let expires: Option<u32> = contact_expires.or_else(|| {
            request
                .raw(&Name::EXPIRES)
                .and_then(|v| v.trim().parse().ok())
        });
        let authorized = request.raw(&Name::AUTHORIZATION).is_some_and(|a| {
            a.contains("Digest")
                && a.contains(&format!("username=\"{}\"", self.username))
                && a.contains("response=")
        });
        let response = if authorized {
            let mut response = request.final_response(200);
            let granted = expires.unwrap_or(3600).min(self.max_expires);
            if granted > 0
                && let Some(contact) = &contact
            {
                let uri = contact.split(';').next().unwrap_or(contact);
                response
                    .headers
                    .insert(Name::CONTACT, format!("{uri};expires={granted}"));
            }
            response.headers.insert(Name::EXPIRES, granted.to_string());
            response
        } else {
            self.nonces += 1;
            let mut response = request.final_response(401);
            response.headers.insert(
                Name::WWW_AUTHENTICATE,
                format!(
                    "Digest realm=\"{}\", nonce=\"n{}\", algorithm=MD5, qop=\"auth\"",
                    self.realm, self.nonces
                ),
            );
            response
        };
        let status = response.status;
        self.seen.push(SeenRegister {
            at: now,
            user: user.clone(),
            contact,
            expires,
            authorized,
            status,
        });
        let outcome = format!("legacy REGISTER {user} expires {expires:?} -> {status}");
        Some((response.to_bytes(), outcome))
    }
}
