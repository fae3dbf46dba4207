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
            } => self.signup(id, from, user, &domain, &password, now),
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
        self.outputs.push_back(Output::Account { id, answer });
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
        let version = self.messages.wall_ms(now);
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
