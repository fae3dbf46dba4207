//! A presentity's state as the ring holds it: her binding set (open while
//! one binding is live), her publication (RFC 3903: the status she
//! PUBLISHed, an item of its own under her key, which replaces the derived
//! one while it lives and she is registered: a phone that vanished without
//! un-publishing is closed when its binding ends) and the count of her stored offline messages (for
//! `message-summary`, RFC 3842). One fetch of the items under her key
//! gives all three.

use std::time::Instant;

use super::pidf::{self, Status};
use crate::messages::MESSAGE_KIND;
use crate::overlay::store::KIND as BINDING_KIND;
use crate::registrar::binding::Aor;
use crate::ring::{Item, NodeId};

/// The item kind of a publication.
pub const PUBLICATION_KIND: &str = "publication";
/// The one item name of a user's publication.
pub const PUBLICATION_NAME: &str = "publication";

/// What a presentity's watchers are told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub status: Status,
    /// Offline messages stored for her.
    pub messages: usize,
    /// Voicemail recordings stored for her.
    pub voice: usize,
}

/// A status she published, with the entity-tag that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    pub etag: String,
    pub status: Status,
}

impl Publication {
    /// The ring item under her key.
    pub fn to_item(&self, aor: &Aor, version: u64, expires: Instant) -> Item {
        let mut value = format!(
            "etag: {}\r\nbasic: {}\r\n",
            self.etag,
            if self.status.open { "open" } else { "closed" }
        );
        if let Some(note) = &self.status.note {
            let line: String = note.chars().filter(|c| !c.is_control()).collect();
            value.push_str(&format!("note: {line}\r\n"));
        }
        Item {
            key: NodeId::of_key(aor.as_str()),
            name: PUBLICATION_NAME.to_string(),
            kind: PUBLICATION_KIND.to_string(),
            value: value.into_bytes(),
            version,
            expires,
            writer: NodeId::default(),
            signature: Vec::new(),
            proof: None,
        }
    }

    /// The publication of an item; `None` for anything else or garbage.
    pub fn from_item(item: &Item) -> Option<Publication> {
        if item.kind != PUBLICATION_KIND || item.value.len() > 2 * pidf::MAX_NOTE + 256 {
            return None;
        }
        let text = std::str::from_utf8(&item.value).ok()?;
        let (mut etag, mut open, mut note) = (None, None, None);
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            match line.split_once(": ")? {
                ("etag", v) => etag = Some(v.to_string()),
                ("basic", "open") => open = Some(true),
                ("basic", "closed") => open = Some(false),
                ("note", v) => note = Some(v.to_string()),
                _ => return None,
            }
        }
        Some(Publication {
            etag: etag.filter(|e| !e.is_empty())?,
            status: Status { open: open?, note },
        })
    }
}

/// Her live publication among the items under her key.
pub fn publication(items: &[Item], now: Instant) -> Option<Publication> {
    items
        .iter()
        .filter(|i| i.kind == PUBLICATION_KIND && i.expires > now)
        .max_by_key(|i| i.version)
        .and_then(Publication::from_item)
}

/// What the items under `aor`'s key say of her.
pub fn snapshot(aor: &Aor, items: &[Item], now: Instant) -> Snapshot {
    let registered = items
        .iter()
        .filter(|i| i.kind == BINDING_KIND && i.name == aor.as_str())
        .max_by_key(|i| i.version)
        .and_then(|i| crate::registrar::record::decode(&i.value, now))
        .is_some_and(|bindings| bindings.iter().any(|b| b.is_live(now)));
    let status = match publication(items, now) {
        Some(published) if registered => published.status,
        _ => Status {
            open: registered,
            note: None,
        },
    };
    let messages = items
        .iter()
        .filter(|i| i.kind == MESSAGE_KIND && i.expires > now)
        .count();
    let voice = crate::voicemail::count(items, now);
    Snapshot {
        status,
        messages,
        voice,
    }
}

/// The `application/simple-message-summary` body (RFC 3842) for `aor`:
/// her stored instant messages as `Text-Message`, her voicemail
/// recordings as `Voice-Message` (all counted new: none is marked heard).
pub fn message_summary(aor: &Aor, messages: usize, voice: usize) -> String {
    let waiting = if messages + voice > 0 { "yes" } else { "no" };
    format!(
        "Messages-Waiting: {waiting}\r\nMessage-Account: sip:{aor}\r\nVoice-Message: {voice}/0\r\nText-Message: {messages}/0\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::binding::Binding;
    use std::time::Duration;

    #[test]
    fn a_publication_comes_back_from_its_item_and_replaces_the_derived_status() {
        let now = Instant::now();
        let aor = Aor::new("bob", "example.test");
        let published = Publication {
            etag: "e1".into(),
            status: Status {
                open: false,
                note: Some("On the phone\r\nX: y".into()),
            },
        };
        let item = published.to_item(&aor, 1, now + Duration::from_secs(60));
        let back = Publication::from_item(&item).expect("reads back");
        assert_eq!(back.etag, "e1");
        assert_eq!(back.status.note.as_deref(), Some("On the phoneX: y"));
        assert!(!snapshot(&aor, &[], now).status.open);
        // Registered: what she published.
        let binding = Binding {
            contact: "sip:bob@127.0.0.1:5070".into(),
            q: None,
            expires_at: now + Duration::from_secs(120),
            call_id: "c".into(),
            cseq: 1,
            path: Vec::new(),
            source: None,
            behind_nat: false,
            flow: None,
        };
        let bindings = crate::overlay::store::to_item(&aor, &[binding], 1, now);
        let items = [bindings.clone(), item.clone()];
        assert_eq!(snapshot(&aor, &items, now).status, back.status);
        // Not registered: closed, whatever she published.
        let alone = snapshot(&aor, std::slice::from_ref(&item), now).status;
        assert_eq!((alone.open, alone.note), (false, None));
        // Expired: no longer hers; registered, she is open.
        let late = now + Duration::from_secs(61);
        let state = snapshot(&aor, &[bindings, item], late).status;
        assert_eq!((state.open, state.note), (true, None));
    }

    #[test]
    fn the_summary_says_whether_messages_wait() {
        let aor = Aor::new("alice", "example.test");
        let body = message_summary(&aor, 1, 0);
        assert!(body.starts_with("Messages-Waiting: yes\r\n"), "{body}");
        assert!(body.contains("Text-Message: 1/0"));
        assert!(body.contains("Voice-Message: 0/0"));
        let voice = message_summary(&aor, 0, 2);
        assert!(voice.starts_with("Messages-Waiting: yes\r\n"), "{voice}");
        assert!(voice.contains("Voice-Message: 2/0"));
        assert!(message_summary(&aor, 0, 0).starts_with("Messages-Waiting: no"));
    }
}
