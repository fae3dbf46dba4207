//! An instant message kept in the ring for a user who was offline: the
//! item's kind, its name (which sorts in arrival order), and its value —
//! the original From, Date and Content-Type as header lines, a blank line,
//! then the body as it came.

use std::time::Instant;

use crate::ring::{Item, NodeId};

/// The item kind of a stored message.
pub const MESSAGE_KIND: &str = "message";
/// The item kind of the mark "this user has registered" (`SEEN_NAME`).
pub const SEEN_KIND: &str = "seen";
/// The one item name of the mark.
pub const SEEN_NAME: &str = "seen";

/// A stored message as delivered later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub from: String,
    pub date: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl StoredMessage {
    /// The item under the user's `key`, named so that names sort in
    /// arrival order (`wall_ms`, then `serial` within one millisecond).
    pub fn to_item(&self, key: NodeId, wall_ms: u64, serial: &str, expires: Instant) -> Item {
        let mut value = Vec::with_capacity(self.body.len() + 128);
        for (name, text) in [
            ("From", &self.from),
            ("Date", &self.date),
            ("Content-Type", &self.content_type),
        ] {
            value.extend_from_slice(name.as_bytes());
            value.extend_from_slice(b": ");
            value.extend_from_slice(one_line(text).as_bytes());
            value.extend_from_slice(b"\r\n");
        }
        value.extend_from_slice(b"\r\n");
        value.extend_from_slice(&self.body);
        Item {
            key,
            name: format!("message:{wall_ms:016}:{serial}"),
            kind: MESSAGE_KIND.to_string(),
            value,
            version: 0,
            expires,
            writer: NodeId::default(),
            signature: Vec::new(),
            proof: None,
        }
    }

    /// The message of a stored item; `None` for anything else or garbage.
    pub fn from_item(item: &Item) -> Option<StoredMessage> {
        if item.kind != MESSAGE_KIND {
            return None;
        }
        let split = item.value.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&item.value[..split]).ok()?;
        let body = item.value[split + 4..].to_vec();
        let mut message = StoredMessage {
            from: String::new(),
            date: String::new(),
            content_type: String::new(),
            body,
        };
        for line in head.split("\r\n") {
            let (name, text) = line.split_once(": ")?;
            match name {
                "From" => message.from = text.to_string(),
                "Date" => message.date = text.to_string(),
                "Content-Type" => message.content_type = text.to_string(),
                _ => return None,
            }
        }
        (!message.from.is_empty()).then_some(message)
    }
}

/// A header value on one line: CR and LF dropped.
fn one_line(text: &str) -> String {
    text.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_comes_back_from_its_item_and_names_sort_in_order() {
        let message = StoredMessage {
            from: "<sip:bob@overlay.test>;tag=1".into(),
            date: "Tue, 01 Dec 2026 23:00:00 GMT".into(),
            content_type: "text/plain".into(),
            body: b"hello\r\n\r\nstill the body".to_vec(),
        };
        let now = Instant::now();
        let key = NodeId::of_key("alice@overlay.test");
        let first = message.to_item(key, 5, "a", now);
        let second = message.to_item(key, 40, "a", now);
        assert!(first.name < second.name);
        assert_eq!(StoredMessage::from_item(&first), Some(message));
        let mut other = first.clone();
        other.kind = "binding".into();
        assert_eq!(StoredMessage::from_item(&other), None);
        other = first;
        other.value = b"no blank line".to_vec();
        assert_eq!(StoredMessage::from_item(&other), None);
    }
}
