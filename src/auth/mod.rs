//! Authentication in front of the registrar and the proxy (RFC 3261 §22):
//! digest challenges and checks ([`digest`]), the users' credentials
//! ([`users`]) — from this node's users file, or fetched from the ring
//! where every node with a users file publishes them — and limits per
//! source ([`guard`]).
//!
//! The policy, close to Kamailio's default script: a REGISTER for one of
//! our domains needs credentials (401); a request from a phone that claims
//! one of our users in From needs them too (407); a request for one of our
//! users from elsewhere is served (calls from other domains); anything else
//! — a foreign domain or an IP literal, from a source that is neither an
//! authenticated phone, an overlay member nor a trusted peer — is refused
//! with 403 "Relaying Denied". In-dialog requests that follow our
//! Record-Route pass. With `auth = "open"` everything passes.

pub mod digest;
pub mod guard;
pub mod signup;
pub mod users;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ezk_sip_types::{Method, Name};
use serde::Deserialize;

use crate::registrar::binding::Aor;
use crate::ring::{Item, NodeId};
use crate::sip::message::{HeaderAccess, Request, Response};
use crate::sip::target::user_of;
use digest::{Credentials, Nonces, Rejection};
use guard::{Admission, Guard, Limits};
use users::{Algorithm, UserRecord};

/// The item kind of a user's credentials in the ring.
pub const CREDENTIAL_KIND: &str = "credential";
/// How long a fetched credential (or its absence) is trusted before it is
/// fetched again: a change made on another node takes effect within it.
const CACHE_FOR: Duration = Duration::from_secs(30);
/// How long a published credential lives in the ring without a refresh.
pub const CREDENTIAL_LIFETIME: Duration = Duration::from_secs(180);
/// Fetched credentials kept at most.
const MAX_CACHED: usize = 100_000;

/// Whether the node authenticates.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Everything is served (the start-up log says so).
    Open,
    /// Digest authentication with the users' credentials.
    Digest,
}

/// How the node authenticates.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub mode: AuthMode,
    pub limits: Limits,
    /// Peers whose requests need no credentials (the legacy registrar, a PSTN gateway).
    pub trusted: Vec<IpAddr>,
    /// The digest algorithms challenges offer, in order.
    pub algorithms: Vec<Algorithm>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Open,
            limits: Limits::default(),
            trusted: Vec::new(),
            algorithms: vec![Algorithm::Md5, Algorithm::Sha256],
        }
    }
}

/// What the node knows of a request's sender before it asks.
#[derive(Clone, Copy, Debug)]
pub struct Sender {
    pub ip: IpAddr,
    /// An overlay member (a node of our ring).
    pub member: bool,
}

/// The outcome of a check.
#[derive(Debug)]
pub enum Verdict {
    /// Serve it; `user`: the AOR whose credentials it carried.
    Pass { user: Option<Aor> },
    /// Answer this instead (a challenge or a refusal).
    Respond(Response),
    /// The credentials of this AOR must come from the ring first; check again then.
    Fetch(Aor),
}

/// The authentication component.
pub struct Auth {
    config: AuthConfig,
    nonces: Nonces,
    guard: Guard,
    /// From this node's users file.
    local: HashMap<Aor, UserRecord>,
    /// From the ring: the record (or none) and when it was fetched.
    cached: HashMap<Aor, (Option<UserRecord>, Instant)>,
}

impl Auth {
    pub fn new(config: AuthConfig, secret: [u8; 32], now: Instant) -> Auth {
        Auth {
            guard: Guard::new(config.limits.clone()),
            config,
            nonces: Nonces::new(secret, now),
            local: HashMap::new(),
            cached: HashMap::new(),
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.config.mode
    }

    fn trusted(&self, sender: Sender) -> bool {
        sender.member || self.config.trusted.contains(&sender.ip)
    }

    /// Counts a datagram or message from `sender`, before it is parsed.
    pub fn admit(&mut self, sender: Sender, now: Instant) -> Admission {
        if self.trusted(sender) {
            return Admission::Serve;
        }
        self.guard.admit(sender.ip, now)
    }

    /// This node's users (from its users file); the old set is replaced.
    pub fn set_local_users(&mut self, users: &[UserRecord]) {
        self.local = users.iter().map(|u| (u.aor.clone(), u.clone())).collect();
    }

    pub fn local_users(&self) -> impl Iterator<Item = &UserRecord> {
        self.local.values()
    }

    /// Credentials fetched from the ring for `aor` (`None`: no such user).
    pub fn learn(&mut self, aor: Aor, record: Option<UserRecord>, now: Instant) {
        if self.cached.len() >= MAX_CACHED {
            self.purge(now);
        }
        self.cached.insert(aor, (record, now));
    }

    /// The credentials of `aor` as known here: from the users file, or
    /// fetched from the ring within the last [`CACHE_FOR`] (`Some(None)`:
    /// no such user); `None` when they must be fetched.
    pub fn known(&self, aor: &Aor, now: Instant) -> Option<Option<UserRecord>> {
        if let Some(record) = self.local.get(aor) {
            return Some(Some(record.clone()));
        }
        match self.cached.get(aor) {
            Some((record, at)) if now.saturating_duration_since(*at) < CACHE_FOR => {
                Some(record.clone())
            }
            _ => None,
        }
    }

    /// Drops what has expired (housekeeping).
    pub fn purge(&mut self, now: Instant) {
        self.cached
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < CACHE_FOR);
        self.nonces.purge(now);
        self.guard.purge(now);
    }

    /// Decides on a request. `ours`: the domain of ours a host stands for
    /// (one of our domains, or our address for the first); `routed_through_us`: the request carried a Route
    /// naming us (an in-dialog request following our Record-Route).
    pub fn check(
        &mut self,
        request: &Request,
        sender: Sender,
        ours: &dyn Fn(&ezk_sip_types::host::HostPort) -> Option<String>,
        routed_through_us: bool,
        now: Instant,
    ) -> Verdict {
        if self.config.mode == AuthMode::Open || self.trusted(sender) {
            return Verdict::Pass { user: None };
        }
        let register = request.method == Method::REGISTER;
        let in_dialog = request
            .raw(&Name::TO)
            .is_some_and(|to| crate::sip::message::raw_tag(to).is_some());
        if !register && in_dialog && routed_through_us {
            return Verdict::Pass { user: None };
        }
        // Whose credentials would it carry: the To user of a REGISTER, the
        // From user of anything else, when that user is one of ours.
        let claimed = if register {
            request.to_header().map(|h| h.uri.uri)
        } else {
            request.from_header().map(|h| h.uri.uri)
        };
        let claimed = claimed.and_then(|uri| Some((ours(&uri.host_port)?, uri)));
        let Some((realm, claimed)) = claimed else {
            if register {
                return respond(request, 403, "Not A Domain Of This Registrar");
            }
            let for_us = request
                .uri
                .as_sip()
                .is_some_and(|uri| ours(&uri.host_port).is_some());
            return if for_us {
                Verdict::Pass { user: None }
            } else {
                respond(request, 403, "Relaying Denied")
            };
        };
        let header = if register {
            Name::AUTHORIZATION
        } else {
            Name::PROXY_AUTHORIZATION
        };
        let credentials = request
            .headers
            .get_raw(&header)
            .filter_map(|v| Credentials::parse(v))
            .find(|c| c.realm.eq_ignore_ascii_case(&realm));
        let Some(credentials) = credentials else {
            return self.challenge(request, &realm, false, now);
        };
        let aor = Aor::new(&credentials.username, &realm);
        let Some(record) = self.known(&aor, now) else {
            return Verdict::Fetch(aor);
        };
        let method = request.method.to_string();
        match self
            .nonces
            .verify(&credentials, &method, record.as_ref(), now)
        {
            Ok(()) => {}
            Err(Rejection::Stale) => return self.challenge(request, &realm, true, now),
            Err(Rejection::Replayed | Rejection::Wrong) => {
                self.guard.failed(sender.ip, now);
                return self.challenge(request, &realm, false, now);
            }
        }
        // The authenticated user may act only as herself (RFC 3261 §22.3).
        let claimed_user = user_of(&claimed);
        if claimed_user.as_deref() != Some(credentials.username.as_str()) {
            return respond(request, 403, "Forbidden (not your address)");
        }
        Verdict::Pass { user: Some(aor) }
    }

    fn challenge(&mut self, request: &Request, realm: &str, stale: bool, now: Instant) -> Verdict {
        let register = request.method == Method::REGISTER;
        let (status, header) = if register {
            (401, Name::WWW_AUTHENTICATE)
        } else {
            (407, Name::PROXY_AUTHENTICATE)
        };
        let mut response = request.final_response(status);
        let nonce = self.nonces.make(now);
        for value in digest::challenges(realm, &nonce, stale, &self.config.algorithms) {
            response.headers.insert(header.clone(), value);
        }
        Verdict::Respond(response)
    }
}

/// Removes the proxy credentials a request carried for our `realm` before
/// it is forwarded (RFC 3261 §22.3: they were for us, not the next hop).
pub fn consume_credentials(request: &mut Request, realm: &str) {
    let values: Vec<_> = request
        .headers
        .get_raw(&Name::PROXY_AUTHORIZATION)
        .cloned()
        .collect();
    if values.is_empty() {
        return;
    }
    request.headers.remove(&Name::PROXY_AUTHORIZATION);
    for value in values {
        let ours = Credentials::parse(&value).is_some_and(|c| c.realm.eq_ignore_ascii_case(realm));
        if !ours {
            request.headers.insert(Name::PROXY_AUTHORIZATION, value);
        }
    }
}

fn respond(request: &Request, status: u16, reason: &str) -> Verdict {
    let mut response = request.final_response(status);
    response.reason = reason.into();
    Verdict::Respond(response)
}

/// The ring key of a user's credentials: the user's key.
pub fn credential_key(aor: &Aor) -> NodeId {
    NodeId::of_key(aor.as_str())
}

/// The item name of a user's credentials (beside her bindings under one key).
pub fn credential_name(aor: &Aor) -> String {
    format!("credential:{aor}")
}

/// The ring item of a user's credentials; `version` orders republications.
pub fn credential_item(record: &UserRecord, version: u64, now: Instant) -> Item {
    Item {
        key: credential_key(&record.aor),
        name: credential_name(&record.aor),
        kind: CREDENTIAL_KIND.to_string(),
        value: record.to_line().into_bytes(),
        version,
        expires: now + CREDENTIAL_LIFETIME,
        writer: Default::default(),
        signature: Vec::new(),
        proof: None,
    }
}

/// The credentials of `aor` among the items of its key, if any.
pub fn credential_of(aor: &Aor, items: &[Item], now: Instant) -> Option<UserRecord> {
    let name = credential_name(aor);
    let item = items
        .iter()
        .filter(|i| i.kind == CREDENTIAL_KIND && i.name == name && i.expires > now)
        .max_by_key(|i| i.version)?;
    let text = std::str::from_utf8(&item.value).ok()?;
    UserRecord::parse_line(text)?.ok().filter(|r| r.aor == *aor)
}
