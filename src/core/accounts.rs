//! Users' own accounts through the node's HTTP window: sign-up (a claim of
//! her credentials in the ring, `auth/signup.rs`, `ring/claim.rs`) and her
//! buddy list, read and written with her password (`presence/buddies.rs`).
//! The driver hands a request in ([`Input::Account`](super::Input::Account))
//! and gets the answer back ([`Output::Account`](super::Output::Account))
//! once the ring has answered. The password never leaves this file: what
//! is kept while the ring works is its HA1.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use tracing::{debug, info};

use super::{Core, Output};
use crate::auth::signup::{self, Refused, Signup, Window};
use crate::auth::users::{Algorithm, UserRecord};
use crate::auth::{credential_item, credential_key, credential_of};
use crate::outbox::owner;
use crate::presence::buddies::{self, buddies_item, buddies_of};
use crate::registrar::binding::Aor;
use crate::ring::{Item, OpId, Refusal, RingError};

/// What a user asks of her account.
#[derive(Clone, Debug)]
pub enum AccountRequest {
    /// Claim `user@domain` (`user` `None`: the node picks a name).
    Signup {
        from: IpAddr,
        user: Option<String>,
        domain: String,
        password: String,
    },
    /// Read (`set` `None`) or replace her buddy list.
    Buddies {
        from: IpAddr,
        aor: String,
        password: String,
        set: Option<Vec<String>>,
    },
}

/// The answer, as HTTP will carry it.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountAnswer {
    pub status: u16,
    pub body: serde_json::Value,
    /// Seconds, with 429 and 503.
    pub retry_after: Option<u64>,
}

impl AccountAnswer {
    fn new(status: u16, body: serde_json::Value) -> AccountAnswer {
        AccountAnswer {
            status,
            body,
            retry_after: None,
        }
    }

    fn error(status: u16, why: impl Into<String>) -> AccountAnswer {
        AccountAnswer::new(status, serde_json::json!({ "error": why.into() }))
    }

    fn unavailable(why: impl Into<String>) -> AccountAnswer {
        AccountAnswer {
            retry_after: Some(5),
            ..AccountAnswer::error(503, why)
        }
    }
}

/// A buddy-list request waiting for the items under her key.
struct BuddyAsk {
    id: u64,
    aor: Aor,
    /// MD5(user:realm:password): compared with her credentials.
    ha1: String,
    set: Option<Vec<String>>,
}

/// The accounts component: the sign-up rules and what waits for the ring.
pub(super) struct Accounts {
    signup: Signup,
    buddy_window: Window,
    claims: HashMap<OpId, (u64, UserRecord)>,
    reads: HashMap<OpId, BuddyAsk>,
    writes: HashMap<OpId, (u64, Vec<String>)>,
}

impl Accounts {
    pub(super) fn new(config: signup::SignupConfig) -> Accounts {
        Accounts {
            buddy_window: Window::new(config.buddy_requests, config.window),
            signup: Signup::new(config),
            claims: HashMap::new(),
            reads: HashMap::new(),
            writes: HashMap::new(),
        }
    }

    pub(super) fn purge(&mut self, now: Instant) {
        self.signup.purge(now);
        self.buddy_window.purge(now);
    }
}

impl Core {
    /// A request from the HTTP window.
    pub(super) fn on_account(&mut self, id: u64, request: AccountRequest, now: Instant) {
        let answer = match request {
            AccountRequest::Signup {
                from,
                user,
                domain,
                password,
            } => self
                .signup(id, from, user, &domain, &password, now)
                .inspect(|answer| self.count_signup(answer.status)),
            AccountRequest::Buddies {
                from,
                aor,
                password,
                set,
            } => self.buddies(id, from, &aor, &password, set, now),
        };
        if let Some(answer) = answer {
            self.outputs.push_back(Output::Account { id, answer });
        }
    }

    /// One of our domains, as configured, if `domain` names it.
    fn our_domain(&self, domain: &str) -> Option<String> {
        self.config
            .domains
            .iter()
            .find(|d| d.eq_ignore_ascii_case(domain))
            .cloned()
    }

    /// Starts a claim, or answers at once.
    fn signup(
        &mut self,
        id: u64,
        from: IpAddr,
        user: Option<String>,
        domain: &str,
        password: &str,
        now: Instant,
    ) -> Option<AccountAnswer> {
        if let Err(refused) = self
            .accounts
            .signup
            .admit(from, user.as_deref(), password, now)
        {
            return Some(match refused {
                Refused::Off => AccountAnswer::error(403, "sign-up is off on this node"),
                Refused::Bad(why) => AccountAnswer::error(400, why),
                Refused::Limited(wait) => AccountAnswer {
                    retry_after: Some(wait.as_secs().max(1)),
                    ..AccountAnswer::error(429, "too many sign-ups from this address")
                },
            });
        }
        let Some(domain) = self.our_domain(domain) else {
            return Some(AccountAnswer::error(400, "not a domain of this node"));
        };
        let user = user.unwrap_or_else(|| signup::chosen_name(self.out.seed()));
        let aor = Aor::new(&user, &domain);
        if self.auth.local_users().any(|u| u.aor == aor) {
            return Some(AccountAnswer::error(409, "name taken"));
        }
        let keep_for = self.accounts.signup.config().keep_for;
        let record = UserRecord::new(aor.clone(), password);
        let mut item = credential_item(&record, 1, now);
        item.expires = now + keep_for;
        let Some(overlay) = self.location.overlay() else {
            return Some(AccountAnswer::unavailable("this node is not in an overlay"));
        };
        let op = overlay.claim_item(item, now);
        debug!(%aor, "sign-up: claiming the name in the ring");
        self.accounts.claims.insert(op, (id, record));
        None
    }

    /// A claim ended.
    pub(super) fn on_claimed(&mut self, op: OpId, result: Result<(), RingError>, now: Instant) {
        let Some((id, record)) = self.accounts.claims.remove(&op) else {
            return;
        };
        let aor = record.aor.clone();
        let answer = match result {
            Ok(()) => {
                info!(%aor, "sign-up: name claimed");
                // Served here at once; other nodes fetch it when she comes.
                self.auth.learn(aor.clone(), Some(record), now);
                AccountAnswer::new(201, serde_json::json!({ "aor": aor.as_str() }))
            }
            Err(RingError::Refused(Refusal::Taken | Refusal::NotWriter)) => {
                info!(%aor, "sign-up: name already taken");
                AccountAnswer::error(409, "name taken")
            }
            Err(error) => {
                debug!(%aor, %error, "sign-up: the ring did not answer");
                AccountAnswer::unavailable(format!("the ring did not answer: {error}"))
            }
        };
        self.count_signup(answer.status);
        self.outputs.push_back(Output::Account { id, answer });
    }

    fn count_signup(&self, status: u16) {
        let outcome = match status {
            201 => "claimed",
            409 => "taken",
            503 => "failed",
            _ => "refused",
        };
        self.metrics
            .signups
            .get_or_create(&crate::metrics::SignupLabels { outcome })
            .inc();
    }

    /// Starts the fetch of her items (credentials and list), or answers.
    fn buddies(
        &mut self,
        id: u64,
        from: IpAddr,
        aor: &str,
        password: &str,
        set: Option<Vec<String>>,
        now: Instant,
    ) -> Option<AccountAnswer> {
        if let Err(wait) = self.accounts.buddy_window.admit(from, now) {
            return Some(AccountAnswer {
                retry_after: Some(wait.as_secs().max(1)),
                ..AccountAnswer::error(429, "too many requests from this address")
            });
        }
        let set = match set.map(|list| buddies::check_list(&list)) {
            Some(Err(why)) => return Some(AccountAnswer::error(400, why)),
            Some(Ok(list)) => Some(list),
            None => None,
        };
        let Some((user, domain)) = aor.split_once('@') else {
            return Some(AccountAnswer::error(400, "user@domain wanted"));
        };
        let Some(domain) = self.our_domain(domain) else {
            return Some(AccountAnswer::error(401, "wrong user or password"));
        };
        let aor = Aor::new(user, &domain);
        let ha1 = Algorithm::Md5.hex(&format!("{user}:{domain}:{password}"));
        let Some(overlay) = self.location.overlay() else {
            return Some(AccountAnswer::unavailable("this node is not in an overlay"));
        };
        let op = overlay.fetch_items(owner::ACCOUNTS, credential_key(&aor), now);
        self.accounts
            .reads
            .insert(op, BuddyAsk { id, aor, ha1, set });
        None
    }

    /// Her items came: check her password, then answer or store the list.
    pub(super) fn on_account_fetched(
        &mut self,
        op: OpId,
        result: Result<Vec<Item>, RingError>,
        now: Instant,
    ) {
        let Some(ask) = self.accounts.reads.remove(&op) else {
            return;
        };
        let items = match result {
            Ok(items) => items,
            Err(error) => {
                let answer =
                    AccountAnswer::unavailable(format!("the ring did not answer: {error}"));
                return self
                    .outputs
                    .push_back(Output::Account { id: ask.id, answer });
            }
        };
        let record = self
            .auth
            .local_users()
            .find(|u| u.aor == ask.aor)
            .cloned()
            .or_else(|| credential_of(&ask.aor, &items, now));
        let right = record.is_some_and(|r| same(r.md5.as_bytes(), ask.ha1.as_bytes()));
        if !right {
            // An unknown user and a wrong password get the same answer.
            let answer = AccountAnswer::error(401, "wrong user or password");
            return self
                .outputs
                .push_back(Output::Account { id: ask.id, answer });
        }
        let Some(list) = ask.set else {
            let list = buddies_of(&ask.aor, &items, now);
            let answer = AccountAnswer::new(200, serde_json::json!({ "buddies": list }));
            return self
                .outputs
                .push_back(Output::Account { id: ask.id, answer });
        };
        // Later than the list she has (read in the same fetch), even when
        // this node's wall clock is a little behind the last writer's.
        let name = buddies::buddies_name(&ask.aor);
        let current = items
            .iter()
            .filter(|i| i.name == name)
            .map(|i| i.version)
            .max()
            .unwrap_or(0);
        let version = self.messages.wall_ms(now).max(current.saturating_add(1));
        let keep_for = self.accounts.signup.config().keep_for;
        let item = buddies_item(&ask.aor, &list, version, keep_for, now);
        let Some(overlay) = self.location.overlay() else {
            return;
        };
        let op = overlay.store_item_for(owner::ACCOUNTS, item, now);
        self.accounts.writes.insert(op, (ask.id, list));
    }

    /// Her new list is stored (or not).
    pub(super) fn on_account_stored(&mut self, op: OpId, stored: bool) {
        let Some((id, list)) = self.accounts.writes.remove(&op) else {
            return;
        };
        let answer = if stored {
            AccountAnswer::new(200, serde_json::json!({ "buddies": list }))
        } else {
            AccountAnswer::unavailable("the ring did not store the list")
        };
        self.outputs.push_back(Output::Account { id, answer });
    }
}

/// Equal bytes, compared in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::auth::signup::SignupConfig;
    use crate::auth::{AuthConfig, AuthMode};
    use crate::core::{CoreConfig, Input, Location};
    use crate::overlay::Overlay;
    use crate::ring::RingConfig;

    /// A ring of one in digest mode with sign-up on (2 per source).
    fn core(now: Instant) -> Core {
        let local = SocketAddr::from(([127, 0, 0, 1], 5060));
        let mut config = CoreConfig::new(local, vec!["example.test".into()]);
        config.auth = AuthConfig {
            mode: AuthMode::Digest,
            ..AuthConfig::default()
        };
        config.signup = SignupConfig {
            enabled: true,
            per_source: 2,
            ..SignupConfig::default()
        };
        let overlay = Overlay::new(local, RingConfig::default(), &[], now);
        Core::new(config, Location::Overlay(Box::new(overlay)), now)
    }

    /// Feeds one request and gives its answer (a ring of one answers at once).
    fn ask(core: &mut Core, id: u64, request: AccountRequest, now: Instant) -> AccountAnswer {
        core.handle_input(Input::Account { id, request }, now);
        loop {
            match core.poll_output() {
                Output::Account { id: got, answer } if got == id => return answer,
                Output::Timeout(_) => panic!("no answer to {id}"),
                _ => {}
            }
        }
    }

    fn signup(user: Option<&str>, from: [u8; 4], password: &str) -> AccountRequest {
        AccountRequest::Signup {
            from: IpAddr::from(from),
            user: user.map(str::to_string),
            domain: "Example.Test".into(),
            password: password.into(),
        }
    }

    fn buddies(password: &str, set: Option<Vec<String>>) -> AccountRequest {
        AccountRequest::Buddies {
            from: IpAddr::from([192, 0, 2, 9]),
            aor: "carol@example.test".into(),
            password: password.into(),
            set,
        }
    }

    #[test]
    fn the_first_claim_wins_and_the_user_is_known_at_once() {
        let now = Instant::now();
        let mut core = core(now);
        let won = ask(
            &mut core,
            1,
            signup(Some("carol"), [192, 0, 2, 1], "password-1"),
            now,
        );
        assert_eq!(won.status, 201, "{won:?}");
        assert_eq!(won.body["aor"], "carol@example.test");
        let taken = ask(
            &mut core,
            2,
            signup(Some("carol"), [192, 0, 2, 2], "password-2"),
            now,
        );
        assert_eq!(
            (taken.status, taken.body["error"].as_str()),
            (409, Some("name taken"))
        );
        let aor = Aor::new("carol", "example.test");
        let record = core.auth.local_users().next().cloned();
        assert!(record.is_none(), "not a users-file user");
        let held = core
            .overlay()
            .map(|o| o.ring().local_items(credential_key(&aor)))
            .unwrap_or_default();
        let stored = credential_of(&aor, &held, now).expect("her credentials in the ring");
        assert_eq!(stored, UserRecord::new(aor, "password-1"));
        assert!(held[0].expires > now + Duration::from_secs(364 * 86_400));
        // A name the node picks.
        let chosen = ask(
            &mut core,
            3,
            signup(None, [192, 0, 2, 1], "password-3"),
            now,
        );
        assert_eq!(chosen.status, 201, "{chosen:?}");
        assert!(
            chosen.body["aor"]
                .as_str()
                .is_some_and(|a| a.starts_with("user"))
        );
    }

    #[test]
    fn refusals_before_the_ring_bad_names_foreign_domains_and_too_many_tries() {
        let now = Instant::now();
        let mut core = core(now);
        let ip = [192, 0, 2, 1];
        let bad = ask(&mut core, 1, signup(Some("Carol"), ip, "password-1"), now);
        assert_eq!(bad.status, 400);
        let foreign = AccountRequest::Signup {
            from: IpAddr::from([192, 0, 2, 5]),
            user: Some("carol".into()),
            domain: "elsewhere.test".into(),
            password: "password-1".into(),
        };
        assert_eq!(ask(&mut core, 2, foreign, now).status, 400);
        assert_eq!(
            ask(&mut core, 3, signup(Some("carol"), ip, "short"), now).status,
            400
        );
        let limited = ask(&mut core, 4, signup(Some("carol"), ip, "password-1"), now);
        assert_eq!(limited.status, 429);
        assert_eq!(limited.retry_after, Some(600));
    }

    #[test]
    fn her_list_is_read_and_written_with_her_password_only() {
        let now = Instant::now();
        let mut core = core(now);
        assert_eq!(
            ask(
                &mut core,
                1,
                signup(Some("carol"), [192, 0, 2, 1], "password-1"),
                now
            )
            .status,
            201
        );
        assert_eq!(
            ask(&mut core, 2, buddies("password-1", None), now).body["buddies"],
            serde_json::json!([])
        );
        let list = vec!["sip:bob@example.test".to_string()];
        let set = ask(&mut core, 3, buddies("password-1", Some(list.clone())), now);
        assert_eq!(set.status, 200, "{set:?}");
        let read = ask(
            &mut core,
            4,
            buddies("password-1", None),
            now + Duration::from_millis(5),
        );
        assert_eq!(read.body["buddies"], serde_json::json!(list));
        for (id, request) in [
            (5, buddies("wrong-password", None)),
            (6, buddies("wrong-password", Some(Vec::new()))),
            (
                7,
                AccountRequest::Buddies {
                    from: IpAddr::from([192, 0, 2, 9]),
                    aor: "nobody@example.test".into(),
                    password: "password-1".into(),
                    set: None,
                },
            ),
        ] {
            assert_eq!(ask(&mut core, id, request, now).status, 401, "{id}");
        }
        let junk = ask(
            &mut core,
            8,
            buddies("password-1", Some(vec!["junk".into()])),
            now,
        );
        assert_eq!(junk.status, 400);
        assert_eq!(
            ask(&mut core, 9, buddies("password-1", None), now).body["buddies"],
            serde_json::json!(list),
            "a refused change changed nothing"
        );
    }
}
