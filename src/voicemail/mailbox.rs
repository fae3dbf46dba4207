//! A user's mailbox read back: for listening (`sip:voicemail@DOMAIN`
//! from her own phone) and for download over HTTP. Reading it is two
//! steps of ring fetches: the items under her key (the recordings'
//! indexes, her bindings and credentials, which the core checks), then
//! every part of the recordings wanted, each under a key of its own
//! ([`super::record`]). This module keeps what each fetch is for and
//! puts the WAV files together; the core starts the fetches and decides.

use std::collections::HashMap;
use std::time::Instant;

use crate::media::sdp::Offer;
use crate::registrar::binding::Aor;
use crate::ring::{Item, NodeId, OpId};
use crate::sip::message::Request;
use crate::sip::transaction::{Peer, ServerKey};

use super::record::{AUDIO_KIND, Recorded, VOICEMAIL_KIND, part_key};

/// An INVITE to `voicemail@` from a user, waiting for her mailbox.
pub struct Listener {
    pub key: ServerKey,
    pub request: Request,
    pub offer: Offer,
    /// Where the INVITE came from.
    pub from: Peer,
    /// Open mode: she is who her From says only when the INVITE comes from
    /// a contact she registered (checked against her bindings).
    pub check_source: bool,
}

/// A download asked over HTTP (answered with the same `id`).
pub struct Download {
    pub id: u64,
    /// The recording wanted, 1 the newest; `None`: the listing.
    pub number: Option<usize>,
    /// The `Authorization` header, and the request's path (the digest's uri).
    pub authorization: Option<String>,
    pub uri: String,
}

/// What the mailbox is read for.
pub enum Purpose {
    Listen(Box<Listener>),
    Download(Download),
}

/// One recording being read: its name, index and parts.
struct Reading {
    name: String,
    recorded: Recorded,
    parts: Vec<Option<Vec<u8>>>,
}

/// One mailbox being read.
struct Load {
    aor: Aor,
    purpose: Purpose,
    recordings: Vec<Reading>,
    left: usize,
}

/// A recording read back whole.
pub struct Loaded {
    pub name: String,
    pub recorded: Recorded,
    /// The WAV file; `None` when a part is missing.
    pub wav: Option<Vec<u8>>,
}

/// The mailboxes being read on this node.
#[derive(Default)]
pub struct Mailboxes {
    /// Fetches of the items under a user's key.
    indexes: HashMap<OpId, (Aor, Purpose)>,
    loads: HashMap<u64, Load>,
    /// Fetches of parts: the load, the recording, the part.
    parts: HashMap<OpId, (u64, usize, usize)>,
    next: u64,
}

/// Her recordings among the items under her key, newest first.
pub fn recordings(items: &[Item], now: Instant, at_most: usize) -> Vec<(String, Recorded)> {
    let mut found: Vec<(String, Recorded)> = items
        .iter()
        .filter(|i| i.kind == VOICEMAIL_KIND && i.expires > now)
        .filter_map(|i| Some((i.name.clone(), Recorded::from_item(i)?)))
        .collect();
    // Names are `voicemail:<wall ms>:<serial>`: they sort by time.
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.dedup_by(|a, b| a.0 == b.0);
    found.truncate(at_most);
    found
}

impl Mailboxes {
    /// The fetch `op` reads `aor`'s items for `purpose`.
    pub fn fetching(&mut self, op: OpId, aor: Aor, purpose: Purpose) {
        self.indexes.insert(op, (aor, purpose));
    }

    /// Whether `op` is one of the mailboxes' fetches.
    pub fn is_ours(&self, op: OpId) -> bool {
        self.indexes.contains_key(&op) || self.parts.contains_key(&op)
    }

    /// The items under her key came (or not): whose and what for.
    pub fn indexed(&mut self, op: OpId) -> Option<(Aor, Purpose)> {
        self.indexes.remove(&op)
    }

    /// Read these recordings of `aor` for `purpose`: the keys of their
    /// parts to fetch, each with the token to give [`Mailboxes::part_fetch`].
    /// With no part to fetch the load is done at once: `Err` with what it
    /// was for and the recordings (none, or all without audio).
    #[allow(clippy::type_complexity)]
    pub fn load(
        &mut self,
        aor: Aor,
        purpose: Purpose,
        wanted: Vec<(String, Recorded)>,
    ) -> Result<Vec<(NodeId, (u64, usize, usize))>, (Purpose, Vec<Loaded>)> {
        let mut keys = Vec::new();
        self.next += 1;
        let load = self.next;
        let recordings: Vec<Reading> = wanted
            .into_iter()
            .enumerate()
            .map(|(r, (name, recorded))| {
                let parts = recorded.parts();
                for n in 0..parts {
                    keys.push((part_key(&aor, &name, n), (load, r, n)));
                }
                Reading {
                    name,
                    recorded,
                    parts: vec![None; parts],
                }
            })
            .collect();
        if keys.is_empty() {
            let loaded = recordings.into_iter().map(finish).collect();
            return Err((purpose, loaded));
        }
        self.loads.insert(
            load,
            Load {
                aor,
                purpose,
                recordings,
                left: keys.len(),
            },
        );
        Ok(keys)
    }

    /// The fetch `op` reads the part named by `token`.
    pub fn part_fetch(&mut self, op: OpId, token: (u64, usize, usize)) {
        self.parts.insert(op, token);
    }

    /// A part's fetch answered (`None`: failed). When it was the load's
    /// last: what it was for, whose, and the recordings read.
    #[allow(clippy::type_complexity)]
    pub fn part(
        &mut self,
        op: OpId,
        items: Option<&[Item]>,
    ) -> Option<Option<(Aor, Purpose, Vec<Loaded>)>> {
        let (load_id, r, n) = self.parts.remove(&op)?;
        let Some(load) = self.loads.get_mut(&load_id) else {
            return Some(None);
        };
        if let Some(reading) = load.recordings.get_mut(r) {
            let name = format!("{}:{n:03}", reading.name);
            let found = items
                .unwrap_or_default()
                .iter()
                .find(|i| i.kind == AUDIO_KIND && i.name == name)
                .map(|i| i.value.clone());
            if let Some(slot) = reading.parts.get_mut(n) {
                *slot = found;
            }
        }
        load.left = load.left.saturating_sub(1);
        if load.left > 0 {
            return Some(None);
        }
        let load = self.loads.remove(&load_id)?;
        let loaded = load.recordings.into_iter().map(finish).collect();
        Some(Some((load.aor, load.purpose, loaded)))
    }
}

/// A recording's parts put together, when they are all there and add up.
fn finish(reading: Reading) -> Loaded {
    let whole: Option<Vec<Vec<u8>>> = reading.parts.into_iter().collect();
    let wav = whole
        .map(|parts| parts.concat())
        .filter(|wav| wav.len() == reading.recorded.bytes);
    Loaded {
        name: reading.name,
        recorded: reading.recorded,
        wav,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voicemail::record::to_items;
    use std::time::Duration;

    #[test]
    fn reads_the_newest_first_and_puts_the_parts_together() {
        let now = Instant::now();
        let aor = Aor::new("alice", "example.test");
        let wav = crate::media::wav::write(&vec![300i16; 10_000]);
        let recorded = |bytes| Recorded {
            from: "bob".into(),
            date: "d".into(),
            millis: 1250,
            bytes,
        };
        let later = now + Duration::from_secs(60);
        let (old, old_parts) = to_items(&aor, "voicemail:1:1", &recorded(wav.len()), &wav, later);
        let (new, _) = to_items(&aor, "voicemail:2:2", &recorded(wav.len()), &wav, later);
        let listed = recordings(&[old.clone(), new.clone()], now, 10);
        assert_eq!(listed[0].0, "voicemail:2:2");
        assert_eq!(listed.len(), 2);
        assert_eq!(recordings(&[old, new], now, 1).len(), 1);

        let mut boxes = Mailboxes::default();
        let purpose = Purpose::Download(Download {
            id: 1,
            number: Some(1),
            authorization: None,
            uri: "/".into(),
        });
        let wanted = vec![("voicemail:1:1".to_string(), recorded(wav.len()))];
        let Ok(keys) = boxes.load(aor.clone(), purpose, wanted) else {
            panic!("parts to fetch");
        };
        assert_eq!(keys.len(), old_parts.len());
        for (n, (key, token)) in keys.iter().enumerate() {
            assert_eq!(*key, old_parts[n].key);
            boxes.part_fetch(OpId(100 + n as u64), *token);
        }
        // The parts come back in any order, with other items beside them.
        let mut done = None;
        for n in (0..keys.len()).rev() {
            let items = [old_parts[n].clone()];
            done = boxes
                .part(OpId(100 + n as u64), Some(&items))
                .expect("ours");
        }
        let (_, _, loaded) = done.expect("the last part ends the load");
        assert_eq!(loaded[0].wav.as_deref(), Some(&wav[..]));

        // A part missing: no WAV.
        let wanted = vec![("voicemail:1:1".to_string(), recorded(wav.len()))];
        let purpose = Purpose::Download(Download {
            id: 2,
            number: None,
            authorization: None,
            uri: "/".into(),
        });
        let keys = boxes.load(aor, purpose, wanted).ok().expect("parts");
        for (n, (_, token)) in keys.iter().enumerate() {
            boxes.part_fetch(OpId(200 + n as u64), *token);
        }
        let mut done = None;
        for (n, part) in old_parts.iter().enumerate().take(keys.len()) {
            let items = if n == 0 { vec![] } else { vec![part.clone()] };
            done = boxes
                .part(OpId(200 + n as u64), Some(&items))
                .expect("ours");
        }
        assert!(done.expect("done").2[0].wav.is_none());
    }
}
