//! Who may take over a record another node wrote: the overlay's
//! [`RecordPolicy`] for the ring (RELOAD's USER-NODE-MATCH, as far as a
//! ring without certificates can check it; `docs/security.md`, "Records").
//!
//! - A binding: the node proves it authenticated the same user again. It
//!   sends the digest `Authorization` of the REGISTER it accepted as the
//!   item's proof; the holder (and each replica) holds the user's
//!   credentials under the same key and checks the digest response against
//!   them. A user with no credentials in the ring (an overlay without users
//!   files, a legacy user a gateway mirrors) has nothing to check against:
//!   any member may take her record over, and becomes its writer.
//! - Credentials: the writer, or a member publishing the same credentials
//!   (it holds the same line of a users file).
//! - A user-directory entry (no value, only "this user exists") and a user's
//!   "seen" mark (she has registered): any member.
//! - An offline message: written once under a name of its own; removed by
//!   any member (the node that delivered it, after her 2xx).
//! - A voicemail recording (its index and audio parts): written once under
//!   names of its own; removed by any member (the node where she listened
//!   and pressed 7 to delete it).
//! - A presence publication (RFC 3903): replaced or removed by any member
//!   (the node a refreshing PUBLISH reaches checks its entity-tag).
//! - A buddy list: replaced by any member (the node she sets it through
//!   checked her password against her credentials first).
//! - Anything else (gateway advertisements, unknown kinds): the writer only.

use std::time::Instant;

use crate::auth::digest::{self, Credentials};
use crate::auth::users::UserRecord;
use crate::auth::{CREDENTIAL_KIND, credential_name};
use crate::messages::record::{MESSAGE_KIND, SEEN_KIND};
use crate::presence::buddies::BUDDIES_KIND;
use crate::presence::state::PUBLICATION_KIND;
use crate::registrar::binding::Aor;
use crate::ring::{Item, KeyItems, RecordPolicy};
use crate::voicemail::{AUDIO_KIND, VOICEMAIL_KIND};

use super::directory::DIRECTORY_KIND;
use super::store::KIND as BINDING_KIND;

/// The overlay's rules for taking over a record.
pub struct OverlayRecords;

impl RecordPolicy for OverlayRecords {
    fn may_take_over(
        &self,
        existing: &Item,
        new: &Item,
        key_items: &KeyItems,
        now: Instant,
    ) -> bool {
        match new.kind.as_str() {
            BINDING_KIND => user_authenticated(new, key_items, now),
            CREDENTIAL_KIND => existing.kind == CREDENTIAL_KIND && existing.value == new.value,
            DIRECTORY_KIND => existing.kind == DIRECTORY_KIND,
            SEEN_KIND => existing.kind == SEEN_KIND,
            PUBLICATION_KIND => existing.kind == PUBLICATION_KIND,
            BUDDIES_KIND => existing.kind == BUDDIES_KIND,
            _ => false,
        }
    }

    fn may_remove(&self, existing: &Item) -> bool {
        matches!(
            existing.kind.as_str(),
            MESSAGE_KIND | PUBLICATION_KIND | VOICEMAIL_KIND | AUDIO_KIND
        )
    }

    /// A node that authenticated the user again may also shorten her
    /// binding (she unregistered there): her credentials are the authority.
    fn may_shorten(&self, existing: &Item, new: &Item) -> bool {
        new.kind == BINDING_KIND || self.may_remove(existing)
    }
}

/// Whether the new writer of a binding proved that it authenticated its
/// user: true when the ring holds no credentials for her here.
fn user_authenticated(new: &Item, key_items: &KeyItems, now: Instant) -> bool {
    let aor = Aor(new.name.clone());
    let Some(record) = key_items
        .get(&credential_name(&aor))
        .filter(|c| c.kind == CREDENTIAL_KIND && c.expires > now)
        .and_then(|c| std::str::from_utf8(&c.value).ok())
        .and_then(UserRecord::parse_line)
        .and_then(Result::ok)
        .filter(|r| r.aor == aor)
    else {
        return true;
    };
    let Some(proof) = new.proof.as_deref().and_then(Credentials::parse) else {
        return false;
    };
    let (user, realm) = record.user_and_realm();
    proof.username == user
        && proof.realm.eq_ignore_ascii_case(realm)
        && digest::proves(&record, &proof, "REGISTER")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::credential_item;
    use crate::auth::users::Algorithm;
    use crate::ring::NodeId;
    use std::time::Duration;

    fn alice() -> Aor {
        Aor::new("alice", "example.test")
    }

    fn binding(writer: u8, proof: Option<String>, now: Instant) -> Item {
        Item {
            key: NodeId::of_key(alice().as_str()),
            name: alice().as_str().to_string(),
            kind: BINDING_KIND.into(),
            value: b"[]".to_vec(),
            version: 3,
            expires: now + Duration::from_secs(60),
            writer: NodeId([writer; 20]),
            signature: Vec::new(),
            proof,
        }
    }

    /// The `Authorization` a phone sends for `password`.
    fn authorization(password: &str) -> String {
        let record = UserRecord::new(alice(), password);
        let md5 = Algorithm::parse(Some("MD5")).expect("md5");
        let ha1 = record.ha1(md5);
        let ha2 = md5.hex("REGISTER:sip:example.test");
        let response = md5.hex(&format!("{ha1}:n0nce:00000001:c0ffee:auth:{ha2}"));
        format!(
            "Digest username=\"alice\", realm=\"example.test\", nonce=\"n0nce\", \
             uri=\"sip:example.test\", response=\"{response}\", algorithm=MD5, \
             qop=auth, nc=00000001, cnonce=\"c0ffee\""
        )
    }

    fn held(now: Instant) -> KeyItems {
        let record = UserRecord::new(alice(), "secret");
        let credential = credential_item(&record, 1, now);
        let old = binding(1, None, now);
        KeyItems::of([credential, old])
    }

    #[test]
    fn a_binding_changes_hands_only_with_the_users_digest() {
        let now = Instant::now();
        let items = held(now);
        let old = items.get(alice().as_str()).expect("alice's binding");
        let policy = OverlayRecords;
        let none = binding(2, None, now);
        assert!(!policy.may_take_over(old, &none, &items, now), "no proof");
        let wrong = binding(2, Some(authorization("guess")), now);
        assert!(
            !policy.may_take_over(old, &wrong, &items, now),
            "wrong password"
        );
        let garbage = binding(2, Some("Digest nonsense".into()), now);
        assert!(!policy.may_take_over(old, &garbage, &items, now));
        let right = binding(2, Some(authorization("secret")), now);
        assert!(policy.may_take_over(old, &right, &items, now));
    }

    #[test]
    fn without_credentials_in_the_ring_a_binding_is_anybodys() {
        let now = Instant::now();
        let old = binding(1, None, now);
        let items = KeyItems::of([old.clone()]);
        assert!(OverlayRecords.may_take_over(&old, &binding(2, None, now), &items, now));
    }

    #[test]
    fn credentials_only_the_same_and_other_kinds_only_by_the_writer() {
        let now = Instant::now();
        let record = UserRecord::new(alice(), "secret");
        let mut old = credential_item(&record, 1, now);
        old.writer = NodeId([1; 20]);
        let mut same = credential_item(&record, 2, now);
        same.writer = NodeId([2; 20]);
        let none = KeyItems::none();
        assert!(OverlayRecords.may_take_over(&old, &same, &none, now));
        let mut other = credential_item(&UserRecord::new(alice(), "attacker"), 2, now);
        other.writer = NodeId([2; 20]);
        assert!(!OverlayRecords.may_take_over(&old, &other, &none, now));
        let mut gateway = binding(2, None, now);
        gateway.kind = "gateway".into();
        assert!(!OverlayRecords.may_take_over(&gateway.clone(), &gateway, &none, now));
    }
}
