//! Cross-registration overlay → legacy, sans-I/O.
//!
//! For every overlay user the mapping covers and that has a binding in the
//! ring, the gateway REGISTERs `user@<legacy domain>` at the legacy
//! registrar with itself as Contact, refreshes at half the granted time,
//! answers one 401/407 per attempt with the configured credentials, backs
//! off after failures and de-registers (`Expires: 0`) once when the overlay
//! binding goes.
//!
//! The driver feeds overlay events ([`CrossRegistrar::user_present`],
//! [`CrossRegistrar::user_gone`]), final responses
//! ([`CrossRegistrar::handle_response`]) and time
//! ([`CrossRegistrar::handle_timeout`] at [`CrossRegistrar::poll_timeout`]),
//! and sends what [`CrossRegistrar::poll_register`] returns. Every token must
//! be answered once with a final response; a transaction timeout is 408. A
//! token left unanswered for [`RESPONSE_GUARD`] counts as 408.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, info, warn};

use crate::config::UpstreamConfig;
use crate::digest::{self, Credentials};
use crate::route::TargetUri;

/// First back-off after a failed registration; doubled per further failure.
pub const RETRY_BASE: Duration = Duration::from_secs(30);
/// Longest back-off.
pub const RETRY_MAX: Duration = Duration::from_secs(600);
/// A request without a response for this long is taken as timed out (408).
/// Longer than the SIP transaction timeout (64 × T1 = 32 s).
pub const RESPONSE_GUARD: Duration = Duration::from_secs(40);

/// One REGISTER to send to [`RegisterOut::registrar`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterOut {
    /// Pass back to [`CrossRegistrar::handle_response`].
    pub token: u64,
    /// The overlay user (user part).
    pub user: String,
    /// `sip:<legacy domain>`.
    pub request_uri: String,
    /// `<sip:user@<legacy domain>>`; From is the same AoR.
    pub to: String,
    /// `<sip:user@<gateway addr>>`.
    pub contact: String,
    /// Seconds; 0 = de-register.
    pub expires: u32,
    /// Stable per user.
    pub call_id: String,
    /// Increasing per user (per Call-ID).
    pub cseq: u32,
    /// `("Authorization" | "Proxy-Authorization", value)` when answering a
    /// challenge (or re-using the last one on a refresh).
    pub authorization: Option<(String, String)>,
    /// Where to send it: `host[:port]` of the legacy registrar.
    pub registrar: String,
    /// From tag, stable per user.
    pub from_tag: String,
}

#[derive(Clone, Debug)]
struct InFlight {
    token: u64,
    expires: u32,
    sent_at: Instant,
}

#[derive(Clone, Debug)]
struct Entry {
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// The overlay binding exists.
    want: bool,
    /// Registered upstream until then.
    registered_until: Option<Instant>,
    in_flight: Option<InFlight>,
    /// A request is due at the next poll.
    queued: bool,
    /// Refresh or retry time.
    next: Option<Instant>,
    failures: u32,
    /// Last challenge: (response header name, value).
    challenge: Option<(String, String)>,
    nc: u32,
    /// The current attempt already answered a challenge to itself.
    answered_challenge: bool,
    /// Expires to ask for (the configured one, or a 423 Min-Expires).
    expires: u32,
}

/// Overlay → legacy cross-registrations of one upstream.
#[derive(Debug)]
pub struct CrossRegistrar {
    upstream: UpstreamConfig,
    creds: Option<Credentials>,
    gateway_addr: SocketAddr,
    entries: BTreeMap<String, Entry>,
    queue: VecDeque<String>,
    next_token: u64,
    call_id_base: u64,
    call_ids: u64,
    /// The latest time the owner gave (stamps REGISTERs as sent).
    now: Instant,
    /// Tags and Call-IDs come from here: seeded by the owner, so a node fed
    /// the same inputs sends the same REGISTERs.
    rng: StdRng,
}

fn backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    RETRY_BASE.saturating_mul(1 << shift).min(RETRY_MAX)
}

impl CrossRegistrar {
    /// A registrar of no user yet; `seed` feeds its tags, Call-IDs and client nonces.
    pub fn new(
        upstream: UpstreamConfig,
        gateway_addr: SocketAddr,
        seed: u64,
        now: Instant,
    ) -> Self {
        let creds = upstream.credentials();
        let mut rng = StdRng::seed_from_u64(seed);
        CrossRegistrar {
            upstream,
            creds,
            gateway_addr,
            entries: BTreeMap::new(),
            queue: VecDeque::new(),
            next_token: 1,
            call_id_base: rng.random(),
            call_ids: 0,
            now,
            rng,
        }
    }

    /// The upstream this registrar serves.
    pub fn upstream(&self) -> &UpstreamConfig {
        &self.upstream
    }

    /// The mapping covers this overlay user (user part).
    pub fn wants(&self, user: &str) -> bool {
        self.upstream.users.covers(user)
    }

    /// The mapping covers `user@domain` (also checks `overlay_domain`).
    pub fn wants_aor(&self, user: &str, domain: &str) -> bool {
        self.upstream.covers(user, domain)
    }

    /// A request from the legacy side addressed to a cross-registration
    /// Contact (`sip:user@<gateway ip>[:port]`): the overlay user it is for.
    /// The node retargets it to `sip:user@<overlay domain>`
    /// (`upstream().overlay_domain`, else its own domain) before
    /// [`crate::route::decide`], which would send an IP host to DNS.
    pub fn inbound_user(&self, target: &TargetUri) -> Option<String> {
        if !matches!(target.scheme.to_ascii_lowercase().as_str(), "sip" | "sips") {
            return None;
        }
        if target.host_ip()? != self.gateway_addr.ip() {
            return None;
        }
        let user = target.user.as_deref()?;
        self.wants(user).then(|| user.to_string())
    }

    fn entry(&mut self, user: &str) -> &mut Entry {
        if !self.entries.contains_key(user) {
            self.call_ids += 1;
            let ip = self.gateway_addr.ip();
            let entry = Entry {
                call_id: format!("xreg-{:016x}-{}@{ip}", self.call_id_base, self.call_ids),
                from_tag: format!("{:016x}", self.rng.random::<u64>()),
                cseq: 0,
                want: false,
                registered_until: None,
                in_flight: None,
                queued: false,
                next: None,
                failures: 0,
                challenge: None,
                nc: 0,
                answered_challenge: false,
                expires: self.upstream.expires,
            };
            self.entries.insert(user.to_string(), entry);
        }
        self.entries.get_mut(user).expect("just inserted")
    }

    fn enqueue(queue: &mut VecDeque<String>, user: &str, entry: &mut Entry) {
        entry.next = None;
        if !entry.queued {
            entry.queued = true;
            queue.push_back(user.to_string());
        }
    }

    /// A new attempt (first registration, refresh, retry, de-registration).
    fn start_attempt(queue: &mut VecDeque<String>, user: &str, entry: &mut Entry) {
        entry.answered_challenge = false;
        Self::enqueue(queue, user, entry);
    }

    /// The overlay has a binding for `user`: register upstream (if not yet)
    /// and keep the registration refreshed.
    pub fn user_present(&mut self, user: &str, now: Instant) {
        self.now = now;
        if !self.wants(user) {
            debug!(user, "not covered by the cross-registration mapping");
            return;
        }
        let expires = self.upstream.expires;
        let entry = self.entry(user);
        if entry.want {
            return;
        }
        entry.want = true;
        entry.failures = 0;
        entry.expires = expires;
        if entry.in_flight.is_none() && entry.registered_until.is_none() {
            let entry = self.entries.get_mut(user).expect("exists");
            Self::start_attempt(&mut self.queue, user, entry);
        }
    }

    /// The overlay binding of `user` is gone: de-register (`Expires: 0`) once.
    pub fn user_gone(&mut self, user: &str, now: Instant) {
        self.now = now;
        let Some(entry) = self.entries.get_mut(user) else {
            return;
        };
        if !entry.want {
            return;
        }
        entry.want = false;
        entry.next = None;
        if entry.in_flight.is_some() {
            // Decided when the response arrives.
            return;
        }
        if entry.registered_until.is_some() {
            Self::start_attempt(&mut self.queue, user, entry);
        } else {
            entry.queued = false;
        }
    }

    /// A final response (or 408 for a timeout) to the REGISTER with `token`.
    /// `challenge` is the `WWW-Authenticate`/`Proxy-Authenticate` header
    /// (name, value) of a 401/407; `granted_expires` the expiry the registrar
    /// granted our Contact (its `expires` parameter in the 2xx, else the
    /// `Expires` header), or the `Min-Expires` of a 423.
    pub fn handle_response(
        &mut self,
        token: u64,
        status: u16,
        challenge: Option<(&str, &str)>,
        granted_expires: Option<u32>,
        now: Instant,
    ) {
        self.now = now;
        let Some((user, entry)) = self
            .entries
            .iter_mut()
            .find(|(_, e)| e.in_flight.as_ref().is_some_and(|f| f.token == token))
        else {
            debug!(token, status, "response for an unknown cross-registration");
            return;
        };
        if status < 200 {
            return;
        }
        let user = user.clone();
        let sent = entry.in_flight.take().expect("matched");
        match status {
            200..=299 => {
                entry.failures = 0;
                if sent.expires == 0 {
                    info!(user, "de-registered upstream");
                    entry.registered_until = None;
                    entry.next = None;
                    if entry.want {
                        Self::start_attempt(&mut self.queue, &user, entry);
                    }
                    return;
                }
                let granted = granted_expires.unwrap_or(sent.expires);
                if granted == 0 {
                    warn!(user, "registrar granted expires 0");
                    self.failed(&user, sent, status, now);
                    return;
                }
                if entry.registered_until.is_none() {
                    info!(user, granted, "registered upstream");
                }
                entry.registered_until = Some(now + Duration::from_secs(granted.into()));
                if entry.want {
                    entry.next = Some(now + Duration::from_millis(u64::from(granted) * 500));
                } else {
                    Self::start_attempt(&mut self.queue, &user, entry);
                }
            }
            401 | 407 => {
                let usable = match (challenge, &self.creds) {
                    (Some((name, value)), Some(_)) if !entry.answered_challenge => {
                        match digest::parse_challenge(value) {
                            Ok(_) => Some((name.to_string(), value.to_string())),
                            Err(e) => {
                                warn!(user, status, error = %e, "cannot answer challenge");
                                None
                            }
                        }
                    }
                    _ => None,
                };
                match usable {
                    Some(ch) => {
                        entry.challenge = Some(ch);
                        entry.nc = 0;
                        entry.answered_challenge = true;
                        Self::enqueue(&mut self.queue, &user, entry);
                    }
                    None => {
                        if entry.answered_challenge {
                            warn!(user, status, "credentials rejected by the registrar");
                        }
                        entry.challenge = None;
                        self.failed(&user, sent, status, now);
                    }
                }
            }
            423 if entry.want
                && sent.expires > 0
                && granted_expires.is_some_and(|m| m > sent.expires) =>
            {
                entry.expires = granted_expires.expect("checked");
                Self::enqueue(&mut self.queue, &user, entry);
            }
            _ => self.failed(&user, sent, status, now),
        }
    }

    fn failed(&mut self, user: &str, sent: InFlight, status: u16, now: Instant) {
        let entry = self.entries.get_mut(user).expect("exists");
        if sent.expires == 0 {
            // De-registration is tried once; the binding expires upstream anyway.
            warn!(user, status, "de-registration failed");
            entry.registered_until = None;
            entry.next = None;
            if entry.want {
                Self::start_attempt(&mut self.queue, user, entry);
            }
            return;
        }
        if !entry.want {
            // Gone while the REGISTER was out: remove what may still be there.
            if entry.registered_until.is_some() {
                Self::start_attempt(&mut self.queue, user, entry);
            }
            return;
        }
        entry.failures += 1;
        let wait = backoff(entry.failures);
        warn!(user, status, retry_in = ?wait, "cross-registration failed");
        entry.next = Some(now + wait);
    }

    /// Refreshes and retries that are due; responses overdue by
    /// [`RESPONSE_GUARD`] count as 408.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        let overdue: Vec<u64> = self
            .entries
            .values()
            .filter_map(|e| e.in_flight.as_ref())
            .filter(|f| f.sent_at + RESPONSE_GUARD <= now)
            .map(|f| f.token)
            .collect();
        for token in overdue {
            self.handle_response(token, 408, None, None, now);
        }
        for (user, entry) in self.entries.iter_mut() {
            if entry.registered_until.is_some_and(|t| t <= now) {
                info!(user, "upstream registration expired");
                entry.registered_until = None;
            }
            if entry.in_flight.is_none() && entry.next.is_some_and(|t| t <= now) {
                entry.next = None;
                if entry.want {
                    Self::start_attempt(&mut self.queue, user, entry);
                }
            }
        }
    }

    /// When [`CrossRegistrar::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .values()
            .flat_map(|e| {
                [
                    e.next.filter(|_| e.in_flight.is_none()),
                    e.in_flight.as_ref().map(|f| f.sent_at + RESPONSE_GUARD),
                    e.registered_until,
                ]
            })
            .flatten()
            .min()
    }

    /// The next REGISTER to send.
    pub fn poll_register(&mut self) -> Option<RegisterOut> {
        while let Some(user) = self.queue.pop_front() {
            let Some(entry) = self.entries.get_mut(&user) else {
                continue;
            };
            if !entry.queued {
                continue;
            }
            entry.queued = false;
            if entry.in_flight.is_some() {
                continue;
            }
            let expires = if entry.want { entry.expires } else { 0 };
            let domain = self
                .upstream
                .domain
                .trim()
                .trim_end_matches('.')
                .to_string();
            let request_uri = format!("sip:{domain}");
            let cnonce: u64 = self.rng.random();
            let authorization = match (&entry.challenge, &self.creds) {
                (Some((name, value)), Some(creds)) => {
                    entry.nc += 1;
                    match digest::authorization(
                        value,
                        "REGISTER",
                        &request_uri,
                        creds,
                        &format!("{:016x}", cnonce),
                        entry.nc,
                    ) {
                        Ok(v) => {
                            let header = if name.eq_ignore_ascii_case("proxy-authenticate") {
                                "Proxy-Authorization"
                            } else {
                                "Authorization"
                            };
                            Some((header.to_string(), v))
                        }
                        Err(e) => {
                            warn!(user, error = %e, "cannot answer challenge");
                            entry.challenge = None;
                            None
                        }
                    }
                }
                _ => None,
            };
            entry.cseq += 1;
            let token = self.next_token;
            self.next_token += 1;
            let now = self.now;
            entry.in_flight = Some(InFlight {
                token,
                expires,
                sent_at: now,
            });
            return Some(RegisterOut {
                token,
                request_uri,
                to: format!("<sip:{user}@{domain}>"),
                contact: format!("<sip:{user}@{}>", self.gateway_addr),
                expires,
                call_id: entry.call_id.clone(),
                cseq: entry.cseq,
                authorization,
                registrar: self.upstream.registrar.trim().to_string(),
                from_tag: entry.from_tag.clone(),
                user,
            });
        }
        None
    }

    /// Users currently registered upstream.
    pub fn registered(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.registered_until.is_some())
            .map(|(u, _)| u.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests;
