//! Voicemail (issue 12, first slice: recording). An INVITE to a user of an
//! overlay domain with no live binding is answered by the node that routed
//! it: once the items under her key show she is known and her mailbox has
//! room, the node opens an RTP socket (the driver), answers 200 with an
//! SDP answer, plays a short greeting and records the caller
//! ([`crate::media::recording`]) until BYE or the limit; the WAV file is
//! then stored in the ring ([`record`]). Sans-I/O like the other
//! components: the core feeds it ring answers and media events and does
//! what it decides (`core/voicemail.rs`).

pub mod diversion;
pub mod hangup;
pub mod mailbox;
pub mod record;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::auth::CREDENTIAL_KIND;
use crate::media::recording::Recording;
use crate::media::sdp::Offer;
use crate::messages::SEEN_KIND;
use crate::overlay::store::KIND as BINDING_KIND;
use crate::registrar::binding::Aor;
use crate::ring::{Item, OpId};
use ezk_sip_types::Name;

use crate::sip::message::{HeaderAccess, Request};
use crate::sip::transaction::ServerKey;
pub use record::{AUDIO_KIND, Recorded, VOICEMAIL_KIND};

/// `[voicemail]` in the config.
#[derive(Clone, Debug)]
pub struct VoicemailConfig {
    /// Off by default in this first slice: an INVITE to an offline user
    /// gets 480/404 as before.
    pub enabled: bool,
    /// The longest recording (`max_seconds`).
    pub max_length: Duration,
    /// The UDP ports the RTP sockets take (`port_range`, "20000-20999").
    pub ports: (u16, u16),
    /// Recordings kept per user at most (`max_per_user`).
    pub max_per_user: usize,
    /// How long a recording is kept (`keep_s`).
    pub keep_for: Duration,
    /// How long a call to a user with live bindings rings unanswered
    /// before voicemail takes it (`no_answer_s`; `None`: never).
    pub no_answer: Option<Duration>,
}

impl Default for VoicemailConfig {
    fn default() -> Self {
        VoicemailConfig {
            enabled: false,
            max_length: Duration::from_secs(60),
            ports: (20000, 20999),
            max_per_user: 10,
            keep_for: record::KEEP,
            no_answer: Some(Duration::from_secs(20)),
        }
    }
}

/// One voicemail call's media, as the driver knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MediaCall(pub u64);

/// What to do with an INVITE for a user without a live binding, once the
/// items under her key are known.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody by that name ever registered: 404.
    Unknown,
    /// Her mailbox is full: 486 with this reason.
    Full(String),
    /// Answer: open an RTP socket for this call.
    Open(MediaCall),
}

/// A call on its way to being answered, or answered.
struct Call {
    key: ServerKey,
    request: Request,
    aor: Aor,
    offer: Offer,
}

/// A recording's items, to store: the parts, then (once they are all
/// stored, [`Voicemail::stored`]) the index.
pub struct ToStore {
    pub serial: u64,
    pub index: Item,
    pub parts: Vec<Item>,
}

/// A recording whose items are being stored.
struct Storing {
    left: usize,
    ok: bool,
    index: Option<Item>,
    aor: Aor,
}

/// The state of voicemail on this node.
#[derive(Default)]
pub struct Voicemail {
    pub config: VoicemailConfig,
    next_call: u64,
    serial: u64,
    /// INVITEs waiting for the items under their user's key.
    looking: HashMap<OpId, Call>,
    /// INVITEs waiting for their RTP socket.
    opening: HashMap<MediaCall, Call>,
    /// Answered calls: SIP Call-ID → media call, user and caller's From.
    answered: HashMap<String, (MediaCall, Aor, String)>,
    /// Calls whose media ended, waiting for the samples.
    ended: HashMap<MediaCall, (Aor, String)>,
    /// Recordings being stored, by recording serial; and each store's serial.
    storing: HashMap<u64, Storing>,
    stores: HashMap<OpId, u64>,
    /// Stores of indexes (the recording complete), by whose it is.
    indexes: HashMap<OpId, Aor>,
    /// How many recordings this node last told each user of (by her AOR),
    /// so a REGISTER refresh does not repeat the notice.
    told: HashMap<Aor, usize>,
    /// Mailboxes being read (listening, downloads).
    pub mailboxes: mailbox::Mailboxes,
    /// Listening calls waiting for their RTP socket.
    listen_opening: HashMap<MediaCall, Opening>,
    /// Listening calls answered, by SIP Call-ID.
    listening: HashMap<String, Listening>,
    /// Nonces of the HTTP download's digest challenges.
    nonces: Option<crate::auth::digest::Nonces>,
    /// The INVITE of every answered call still up, for the BYE the node
    /// may send.
    dialogs: HashMap<MediaCall, Request>,
    /// Diverted calls: the callee's failure, sent instead when voicemail
    /// cannot take the call after all (her mailbox is full).
    fallbacks: HashMap<ServerKey, crate::sip::message::Response>,
}

/// A listening call waiting for its socket: the INVITE, its offer, whose
/// mailbox, and the recordings to play (name, parts, samples).
pub struct Opening {
    pub key: ServerKey,
    pub request: Request,
    pub offer: Offer,
    pub aor: Aor,
    pub recordings: Vec<(String, usize, Vec<i16>)>,
}

/// An answered listening call.
struct Listening {
    media: MediaCall,
    aor: Aor,
    /// The parts of each recording it plays, by name (to delete them).
    parts: HashMap<String, usize>,
}

impl Voicemail {
    pub fn new(config: VoicemailConfig) -> Voicemail {
        Voicemail {
            config,
            ..Voicemail::default()
        }
    }

    /// An INVITE waits for the fetch `op`.
    pub fn looking(&mut self, op: OpId, key: ServerKey, request: Request, aor: Aor, offer: Offer) {
        self.looking.insert(
            op,
            Call {
                key,
                request,
                aor,
                offer,
            },
        );
    }

    /// Whether `op` is one of this component's fetches.
    pub fn is_ours(&self, op: OpId) -> bool {
        self.looking.contains_key(&op)
    }

    /// The call on `key` was diverted after the callee's `failure`: sent
    /// instead should voicemail refuse it.
    pub fn fall_back(&mut self, key: ServerKey, failure: crate::sip::message::Response) {
        self.fallbacks.insert(key, failure);
    }

    /// The failure to send instead of voicemail's refusal of `key`, if the
    /// call was diverted after one (taken once).
    pub fn take_fallback(&mut self, key: ServerKey) -> Option<crate::sip::message::Response> {
        self.fallbacks.remove(&key)
    }

    /// Whether the INVITE on `key` is on its way to being answered here
    /// (its user's items or its RTP socket awaited).
    pub fn is_answering(&self, key: ServerKey) -> bool {
        self.looking.values().any(|c| c.key == key) || self.opening.values().any(|c| c.key == key)
    }

    /// The fetch `op` answered with these items (`None`: it failed). Gives
    /// the INVITE and what to do with it.
    pub fn fetched(
        &mut self,
        op: OpId,
        items: Option<&[Item]>,
        now: Instant,
    ) -> Option<(ServerKey, Request, Option<Decision>)> {
        let call = self.looking.remove(&op)?;
        let Some(items) = items else {
            return Some((call.key, call.request, None));
        };
        let known = items.iter().any(|i| {
            i.expires > now
                && (i.kind == SEEN_KIND || i.kind == BINDING_KIND || i.kind == CREDENTIAL_KIND)
        });
        if !known {
            return Some((call.key, call.request, Some(Decision::Unknown)));
        }
        let stored = items
            .iter()
            .filter(|i| i.kind == VOICEMAIL_KIND && i.expires > now)
            .count();
        if stored >= self.config.max_per_user {
            let reason = format!(
                "Busy Here (mailbox full: {} voicemails stored)",
                self.config.max_per_user
            );
            return Some((call.key, call.request, Some(Decision::Full(reason))));
        }
        self.next_call += 1;
        let media = MediaCall(self.next_call);
        let (key, request) = (call.key, call.request.clone());
        self.opening.insert(media, call);
        Some((key, request, Some(Decision::Open(media))))
    }

    /// The RTP socket of `media` is open at `local` (or could not be):
    /// the INVITE to answer, its offer and its user.
    pub fn opened(&mut self, media: MediaCall) -> Option<(ServerKey, Request, Offer)> {
        let call = self.opening.remove(&media)?;
        self.dialogs.insert(media, call.request.clone());
        let text = |name: &Name| call.request.raw(name).map(|v| v.to_string());
        let call_id = text(&Name::CALL_ID).unwrap_or_default();
        let from = text(&Name::FROM).unwrap_or_default();
        self.answered.insert(call_id, (media, call.aor, from));
        Some((call.key, call.request, call.offer))
    }

    /// The recording state machine of an answered call.
    pub fn recording(&self, offer: Offer, ssrc: u32, now: Instant) -> Recording {
        Recording::new(offer, self.config.max_length, ssrc, now)
    }

    /// The media of the call with this SIP Call-ID, when it is ours
    /// (recording or listening).
    pub fn call_of(&self, call_id: &str) -> Option<MediaCall> {
        self.answered
            .get(call_id)
            .map(|(m, _, _)| *m)
            .or_else(|| self.listening.get(call_id).map(|l| l.media))
    }

    /// The call was never answered (no RTP port): forget it.
    pub fn forget(&mut self, call_id: &str) {
        if let Some((media, _, _)) = self.answered.remove(call_id) {
            self.dialogs.remove(&media);
        }
    }

    /// The INVITE of `media`'s call, still up, to send its BYE (once).
    pub fn take_dialog(&mut self, media: MediaCall) -> Option<Request> {
        self.dialogs.remove(&media)
    }

    /// The call ended (BYE): its media should stop.
    pub fn hang_up(&mut self, call_id: &str) -> Option<MediaCall> {
        let (media, aor, from) = self.answered.remove(call_id)?;
        self.dialogs.remove(&media);
        self.ended.insert(media, (aor, from));
        Some(media)
    }

    /// The media of `media` ended with these samples: the items to store
    /// (`None` when the call is unknown or nothing was recorded), and the
    /// SIP Call-ID of a call still up (the limit was reached).
    pub fn recorded(
        &mut self,
        media: MediaCall,
        samples: &[i16],
        wall_ms: u64,
        date: String,
        now: Instant,
    ) -> (Option<ToStore>, Option<String>) {
        let mut still_up = None;
        let (aor, from) = match self.ended.remove(&media) {
            Some(ended) => ended,
            None => {
                let Some(call_id) = self
                    .answered
                    .iter()
                    .find(|(_, (m, _, _))| *m == media)
                    .map(|(c, _)| c.clone())
                else {
                    return (None, None);
                };
                let Some((_, aor, from)) = self.answered.remove(&call_id) else {
                    return (None, None);
                };
                still_up = Some(call_id);
                (aor, from)
            }
        };
        if samples.is_empty() {
            return (None, still_up);
        }
        let wav = crate::media::wav::write(samples);
        self.serial += 1;
        let name = format!("voicemail:{wall_ms:016}:{:08}", self.serial);
        let recorded = Recorded {
            from,
            date,
            millis: samples.len() as u64 * 1000 / u64::from(crate::media::SAMPLE_RATE),
            bytes: wav.len(),
        };
        let (index, parts) =
            record::to_items(&aor, &name, &recorded, &wav, now + self.config.keep_for);
        self.storing.insert(
            self.serial,
            Storing {
                left: parts.len(),
                ok: true,
                index: Some(index.clone()),
                aor: aor.clone(),
            },
        );
        let serial = self.serial;
        (
            Some(ToStore {
                serial,
                index,
                parts,
            }),
            still_up,
        )
    }

    /// The store `op` belongs to recording `serial`.
    pub fn storing(&mut self, op: OpId, serial: u64) {
        self.stores.insert(op, serial);
    }

    /// Whether `op` is one of this component's stores.
    pub fn is_store(&self, op: OpId) -> bool {
        self.stores.contains_key(&op) || self.indexes.contains_key(&op)
    }

    /// The store `op` is of a recording's index, for `aor`.
    pub fn storing_index(&mut self, op: OpId, aor: Aor) {
        self.indexes.insert(op, aor);
    }

    /// The store `op` of an index is done: whose recording it was.
    pub fn index_stored(&mut self, op: OpId) -> Option<Aor> {
        self.indexes.remove(&op)
    }

    /// A store done: once every part is stored, the index to store (the
    /// recording becomes visible only when all its audio is there), and
    /// whose it is.
    pub fn stored(&mut self, op: OpId, ok: bool) -> Option<(Item, Aor)> {
        let serial = self.stores.remove(&op)?;
        let storing = self.storing.get_mut(&serial)?;
        storing.ok &= ok;
        storing.left = storing.left.saturating_sub(1);
        if storing.left > 0 {
            return None;
        }
        let done = self.storing.remove(&serial)?;
        if !done.ok {
            tracing::warn!(
                serial,
                "a voicemail part could not be stored; recording dropped"
            );
            return None;
        }
        Some((done.index?, done.aor))
    }
}

impl Voicemail {
    /// A listening call is ready to be answered: open its socket.
    pub fn listen_open(&mut self, opening: Opening) -> MediaCall {
        self.next_call += 1;
        let media = MediaCall(self.next_call);
        self.listen_opening.insert(media, opening);
        media
    }

    /// Whether `media` is a listening call waiting for its socket.
    pub fn is_listen_opening(&self, media: MediaCall) -> bool {
        self.listen_opening.contains_key(&media)
    }

    /// The socket of listening call `media` is open (or not, `answered`
    /// false): the call to answer.
    pub fn listen_opened(&mut self, media: MediaCall, answered: bool) -> Option<Opening> {
        let opening = self.listen_opening.remove(&media)?;
        if answered {
            self.dialogs.insert(media, opening.request.clone());
            let call_id = opening
                .request
                .raw(&Name::CALL_ID)
                .map(|v| v.to_string())
                .unwrap_or_default();
            let parts = opening
                .recordings
                .iter()
                .map(|(name, parts, _)| (name.clone(), *parts))
                .collect();
            self.listening.insert(
                call_id,
                Listening {
                    media,
                    aor: opening.aor.clone(),
                    parts,
                },
            );
        }
        Some(opening)
    }

    /// The listening call with this SIP Call-ID ended (BYE): its media.
    pub fn stop_listening(&mut self, call_id: &str) -> Option<MediaCall> {
        let media = self.listening.remove(call_id)?.media;
        self.dialogs.remove(&media);
        Some(media)
    }

    /// She deleted `name` while listening on `media`: whose it is and its
    /// parts, to remove from the ring.
    pub fn deleted(&mut self, media: MediaCall, name: &str) -> Option<(Aor, usize)> {
        let call = self.listening.values_mut().find(|l| l.media == media)?;
        let parts = call.parts.remove(name)?;
        Some((call.aor.clone(), parts))
    }

    /// The media of listening call `media` ended by itself: forget the call.
    pub fn listen_finished(&mut self, media: MediaCall) {
        self.listening.retain(|_, l| l.media != media);
    }

    /// Whether the download's nonces are made yet.
    pub fn has_nonces(&self) -> bool {
        self.nonces.is_some()
    }

    /// The nonces of the HTTP download's challenges (made on first use
    /// from `secret`).
    pub fn nonces(&mut self, secret: [u8; 32], now: Instant) -> &mut crate::auth::digest::Nonces {
        self.nonces
            .get_or_insert_with(|| crate::auth::digest::Nonces::new(secret, now))
    }

    /// Whether to tell `aor` she has `count` recordings: not when this
    /// node told her the same count last.
    pub fn should_tell(&mut self, aor: &Aor, count: usize) -> bool {
        if count == 0 {
            self.told.remove(aor);
            return false;
        }
        if self.told.len() >= 100_000 && !self.told.contains_key(aor) {
            self.told.clear();
        }
        self.told.insert(aor.clone(), count) != Some(count)
    }
}

/// New recordings among these items (for the notice on registration).
pub fn count(items: &[Item], now: Instant) -> usize {
    items
        .iter()
        .filter(|i| i.kind == VOICEMAIL_KIND && i.expires > now)
        .count()
}

#[cfg(test)]
mod tests;
