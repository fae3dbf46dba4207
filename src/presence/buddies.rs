//! A user's buddy list kept in the ring: one item of kind `buddies` under
//! her key, its value a JSON array of the contacts' SIP URIs. She sets and
//! reads it with her password at any node (`PUT`/`GET /buddies`,
//! `core/accounts.rs`); her phone then subscribes to each contact's
//! presence as phones do (`docs/services.md`, "Buddy lists").

use std::time::{Duration, Instant};

use crate::registrar::binding::Aor;
use crate::ring::{Item, NodeId};

/// The item kind of a buddy list.
pub const BUDDIES_KIND: &str = "buddies";
/// Contacts a list holds at most.
pub const MAX_BUDDIES: usize = 200;
/// Longest contact URI.
pub const MAX_URI: usize = 256;

/// The item name of `aor`'s list (beside her bindings under one key).
pub fn buddies_name(aor: &Aor) -> String {
    format!("buddies:{aor}")
}

/// Checks a list as a user sent it: at most [`MAX_BUDDIES`] `sip:` or
/// `sips:` URIs of the form `user@host`, each at most [`MAX_URI`] bytes,
/// no blanks or control characters; duplicates dropped, order kept.
pub fn check_list(list: &[String]) -> Result<Vec<String>, String> {
    if list.len() > MAX_BUDDIES {
        return Err(format!("a list has at most {MAX_BUDDIES} contacts"));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for uri in list {
        let plain = uri.len() <= MAX_URI
            && !uri
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
        let rest = uri
            .strip_prefix("sip:")
            .or_else(|| uri.strip_prefix("sips:"));
        let addressed = rest
            .and_then(|r| r.split_once('@'))
            .is_some_and(|(u, h)| !u.is_empty() && !h.is_empty() && !h.contains('@'));
        if !plain || !addressed {
            return Err(format!(
                "not a contact URI (sip:user@host): {:?}",
                truncate(uri)
            ));
        }
        if !out.contains(uri) {
            out.push(uri.clone());
        }
    }
    Ok(out)
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

/// The ring item of `aor`'s list; `version` orders changes (the wall
/// clock in ms, so that a later change through any node wins).
pub fn buddies_item(
    aor: &Aor,
    list: &[String],
    version: u64,
    keep_for: Duration,
    now: Instant,
) -> Item {
    Item {
        key: NodeId::of_key(aor.as_str()),
        name: buddies_name(aor),
        kind: BUDDIES_KIND.to_string(),
        value: serde_json::to_vec(list).unwrap_or_default(),
        version,
        expires: now + keep_for,
        writer: Default::default(),
        signature: Vec::new(),
        proof: None,
    }
}

/// `aor`'s list among the items of her key (empty when she has none).
pub fn buddies_of(aor: &Aor, items: &[Item], now: Instant) -> Vec<String> {
    let name = buddies_name(aor);
    items
        .iter()
        .filter(|i| i.kind == BUDDIES_KIND && i.name == name && i.expires > now)
        .max_by_key(|i| i.version)
        .and_then(|i| serde_json::from_slice::<Vec<String>>(&i.value).ok())
        .and_then(|list| check_list(&list).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_contact_uris_bounded_and_without_repeats() {
        let list = vec![
            "sip:bob@example.test".to_string(),
            "sips:dave@example.test".to_string(),
            "sip:bob@example.test".to_string(),
        ];
        assert_eq!(check_list(&list).expect("good").len(), 2);
        for bad in [
            "bob@example.test",
            "sip:bob",
            "sip:@x",
            "sip:a b@x",
            "sip:a@b@c",
            "sip:<a@b>",
        ] {
            assert!(check_list(&[bad.to_string()]).is_err(), "{bad}");
        }
        let long = vec!["sip:a@b".to_string(); MAX_BUDDIES + 1];
        assert!(check_list(&long).is_err());
        assert!(check_list(&[format!("sip:{}@b", "a".repeat(MAX_URI))]).is_err());
    }

    #[test]
    fn the_newest_list_of_the_user_is_read_back() {
        let now = Instant::now();
        let aor = Aor::new("carol", "example.test");
        let old = buddies_item(
            &aor,
            &["sip:bob@example.test".into()],
            1,
            Duration::from_secs(60),
            now,
        );
        let new = buddies_item(
            &aor,
            &["sip:dave@example.test".into()],
            2,
            Duration::from_secs(60),
            now,
        );
        let other = buddies_item(
            &Aor::new("eve", "example.test"),
            &["sip:x@y".into()],
            3,
            Duration::from_secs(60),
            now,
        );
        assert_eq!(
            buddies_of(&aor, &[old.clone(), new, other], now),
            vec!["sip:dave@example.test"]
        );
        assert!(buddies_of(&aor, &[old], now + Duration::from_secs(61)).is_empty());
    }
}
