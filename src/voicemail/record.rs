//! A recording kept in the ring. A SIP message carries 64 KB at most and
//! a ring item travels hex-encoded inside one, while a minute of 16-bit
//! audio is 960 KB; and the items under a user's key are fetched whole
//! (for her messages, her "seen" mark). So a recording is one small
//! **index** item of kind `voicemail` under her key (From, Date, length,
//! parts) and its WAV file cut into **parts** of [`PART_BYTES`], items of
//! kind `voicemail-audio`, each under a key of its own derived from her
//! AOR, the recording's name and the part's number.

use std::time::{Duration, Instant};

use crate::registrar::binding::Aor;
use crate::ring::{Item, NodeId};

/// The item kind of a recording's index, under the user's key.
pub const VOICEMAIL_KIND: &str = "voicemail";
/// The item kind of a part of a recording's WAV file.
pub const AUDIO_KIND: &str = "voicemail-audio";
/// Bytes of WAV per part (32 KB hex on the wire, well under 64 KB).
pub const PART_BYTES: usize = 16 * 1024;

/// What the index of a recording says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub from: String,
    pub date: String,
    /// Length of the audio in milliseconds.
    pub millis: u64,
    /// Bytes of the WAV file.
    pub bytes: usize,
}

impl Recorded {
    /// The number of parts the WAV file is cut into.
    pub fn parts(&self) -> usize {
        self.bytes.div_ceil(PART_BYTES)
    }

    /// Parses an index item; `None` for anything else or garbage.
    pub fn from_item(item: &Item) -> Option<Recorded> {
        if item.kind != VOICEMAIL_KIND {
            return None;
        }
        let text = std::str::from_utf8(&item.value).ok()?;
        let mut recorded = Recorded {
            from: String::new(),
            date: String::new(),
            millis: 0,
            bytes: 0,
        };
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(": ")?;
            match name {
                "From" => recorded.from = value.to_string(),
                "Date" => recorded.date = value.to_string(),
                "Millis" => recorded.millis = value.parse().ok()?,
                "Bytes" => recorded.bytes = value.parse().ok()?,
                _ => return None,
            }
        }
        Some(recorded)
    }
}

/// The key of part `part` of the recording `name` of `aor`.
pub fn part_key(aor: &Aor, name: &str, part: usize) -> NodeId {
    NodeId::of_key(&format!("{aor}|{name}|{part}"))
}

/// The index item and the part items of a recording named `name`.
pub fn to_items(
    aor: &Aor,
    name: &str,
    recorded: &Recorded,
    wav: &[u8],
    expires: Instant,
) -> (Item, Vec<Item>) {
    let one_line = |s: &str| s.replace(['\r', '\n'], " ");
    let value = format!(
        "From: {}\r\nDate: {}\r\nMillis: {}\r\nBytes: {}\r\n",
        one_line(&recorded.from),
        one_line(&recorded.date),
        recorded.millis,
        wav.len()
    );
    let item = |key, name: String, kind: &str, value: Vec<u8>| Item {
        key,
        name,
        kind: kind.to_string(),
        value,
        version: 0,
        expires,
        writer: NodeId::default(),
        signature: Vec::new(),
        proof: None,
    };
    let index = item(
        NodeId::of_key(aor.as_str()),
        name.to_string(),
        VOICEMAIL_KIND,
        value.into_bytes(),
    );
    let parts = wav
        .chunks(PART_BYTES)
        .enumerate()
        .map(|(n, chunk)| {
            item(
                part_key(aor, name, n),
                format!("{name}:{n:03}"),
                AUDIO_KIND,
                chunk.to_vec(),
            )
        })
        .collect();
    (index, parts)
}

/// How long a recording is kept by default (`voicemail.keep_s`).
pub const KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_parts_round_trip() {
        let aor = Aor::new("alice", "example.test");
        let recorded = Recorded {
            from: "<sip:bob@example.test>;tag=1\r\nEvil: x".into(),
            date: "Thu, 03 Dec 2026 10:00:00 GMT".into(),
            millis: 2000,
            bytes: 40_000,
        };
        let wav = vec![7u8; 40_000];
        let (index, parts) = to_items(&aor, "voicemail:1:1", &recorded, &wav, Instant::now());
        assert_eq!(index.key, NodeId::of_key(aor.as_str()));
        let back = Recorded::from_item(&index).expect("an index");
        assert_eq!(back.bytes, 40_000);
        assert_eq!(back.millis, 2000);
        assert!(!back.from.contains('\n'));
        assert_eq!(parts.len(), 3);
        assert_eq!(back.parts(), 3);
        assert_eq!(parts.iter().map(|p| p.value.len()).sum::<usize>(), 40_000);
        assert_eq!(parts[2].key, part_key(&aor, "voicemail:1:1", 2));
        assert_ne!(parts[0].key, parts[1].key);
        let mut garbage = index.clone();
        garbage.value = b"Millis: lots\r\n".to_vec();
        assert_eq!(Recorded::from_item(&garbage), None);
    }
}
