//! The long-term credential check of a TURN request (RFC 8489 §9.2.4):
//! no MESSAGE-INTEGRITY gets 401 with the realm and a nonce; a stale or
//! forged nonce 438 with a fresh one; an unknown user or a wrong key 401.
//! A user's key comes from the allocation she already has, from the cache,
//! or is asked for ([`Output::FetchCredentials`]) while the request waits.

use std::net::SocketAddr;
use std::time::Instant;

use tracing::debug;

use super::{Auth, KEY_CACHE_FOR, Key, MAX_KEYS, MAX_WAITING, Output, Server};
use crate::sip::stun::message::{Message, Writer};
use crate::sip::stun::{Class, attr};

impl Server {
    /// The request's user and key, or `None` when it was answered (a
    /// challenge, a refusal) or waits for the key.
    pub(super) fn authenticate(
        &mut self,
        from: SocketAddr,
        message: &Message<'_>,
        bytes: &[u8],
        now: Instant,
    ) -> Option<Auth> {
        let Some(integrity) = message.integrity() else {
            self.challenge(from, message, 401, "Unauthorized", now);
            return None;
        };
        let (Some(username), Some(realm), Some(nonce)) = (
            message.text(attr::USERNAME),
            message.text(attr::REALM),
            message.text(attr::NONCE),
        ) else {
            let mut out = Writer::answer(message, Class::Error);
            out.error(400, "Bad Request");
            self.refuse(from, out.finish(None, message.fingerprint));
            return None;
        };
        if self.nonces.check(nonce, now).is_err() {
            self.challenge(from, message, 438, "Stale Nonce", now);
            return None;
        }
        if realm != self.config.realm || username.is_empty() || username.len() > 256 {
            self.challenge(from, message, 401, "Unauthorized", now);
            return None;
        }
        let key = match self.allocations.get(&from) {
            Some(allocation) if allocation.username == username => Some(allocation.key.clone()),
            _ => match self.keys.get(username) {
                Some((key, at)) if now.saturating_duration_since(*at) < KEY_CACHE_FOR => {
                    key.clone()
                }
                _ => {
                    self.wait_for_key(username, from, bytes, now);
                    return None;
                }
            },
        };
        let Some(key) = key.filter(|key| message.check_integrity(&key.md5)) else {
            debug!(%from, username, "TURN credentials refused");
            self.guard.failed(from.ip(), now);
            self.challenge(from, message, 401, "Unauthorized", now);
            return None;
        };
        Some(Auth {
            username: username.to_string(),
            key,
            integrity,
        })
    }

    /// 401 or 438 with the realm and a fresh nonce, no integrity.
    fn challenge(
        &mut self,
        to: SocketAddr,
        message: &Message<'_>,
        status: u16,
        reason: &str,
        now: Instant,
    ) {
        let nonce = self.nonces.make(now);
        let mut out = Writer::answer(message, Class::Error);
        out.error(status, reason)
            .attribute(attr::REALM, self.config.realm.as_bytes())
            .attribute(attr::NONCE, nonce.as_bytes())
            .attribute(attr::SOFTWARE, crate::sip::stun::SOFTWARE.as_bytes());
        let bytes = out.finish(None, message.fingerprint);
        self.refuse(to, bytes);
    }

    /// Parks a request until the key of `username` is known; the first one
    /// for a user asks for it. Beyond [`MAX_WAITING`] the request is dropped
    /// (the client sends it again).
    fn wait_for_key(&mut self, username: &str, from: SocketAddr, bytes: &[u8], now: Instant) {
        if self.waiting_count >= MAX_WAITING {
            debug!(%from, "too many TURN requests waiting for credentials; dropped");
            return;
        }
        let list = self.waiting.entry(username.to_string()).or_default();
        if list
            .iter()
            .any(|(client, b, _)| *client == from && b == bytes)
        {
            return; // a retransmission of one already waiting
        }
        let first = list.is_empty();
        list.push((from, bytes.to_vec(), now));
        self.waiting_count += 1;
        if first {
            self.outputs.push_back(Output::FetchCredentials {
                username: username.to_string(),
            });
        }
    }

    /// The key of `username` (or none): remembered, and the requests
    /// waiting for it are taken up again.
    pub(super) fn on_credentials(&mut self, username: String, key: Option<Key>, now: Instant) {
        if self.keys.len() >= MAX_KEYS {
            self.keys
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < KEY_CACHE_FOR);
        }
        if self.keys.len() < MAX_KEYS || self.keys.contains_key(&username) {
            self.keys.insert(username.clone(), (key, now));
        }
        let Some(waiting) = self.waiting.remove(&username) else {
            return;
        };
        self.waiting_count -= waiting.len();
        let known = self.keys.contains_key(&username);
        for (from, bytes, _) in waiting {
            if known {
                self.on_client_again(from, &bytes, now);
            }
        }
    }

    fn on_client_again(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        if let Ok(message) = Message::parse(bytes) {
            self.request(from, &message, bytes, now);
        }
    }
}
