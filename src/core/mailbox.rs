//! The core's side of reading a user's mailbox ([`crate::voicemail::mailbox`]):
//! listening, an INVITE to `sip:voicemail@DOMAIN` from her own phone (in
//! digest mode: authenticated as her; open: her From, and only from a
//! contact she has registered), answered with her recordings played
//! newest first (`#` skips, `7` deletes); and the HTTP download of a
//! recording as WAV (or the listing), with her digest credentials. This
//! module starts the ring fetches, checks who asks, and hands the result
//! to the driver.

use std::time::Instant;

use ezk_sip_types::Method;
use tracing::{debug, info};

use super::checks::refusal;
use super::{Core, Output};
use crate::auth::AuthMode;
use crate::auth::digest::{Credentials, Rejection, challenges};
use crate::media::playback::{Playback, PlaybackEvent};
use crate::media::sdp;
use crate::outbox::owner;
use crate::overlay::store::KIND as BINDING_KIND;
use crate::registrar::binding::Aor;
use crate::ring::{Item, NodeId, OpId, RingError};
use crate::sip::message::Request;
use crate::sip::target::user_of;
use crate::sip::transaction::{Peer, ServerKey};
use crate::voicemail::mailbox::{self, Download, Listener, Loaded, Purpose};
use crate::voicemail::{MediaCall, Opening};

/// The user name a phone calls to listen to its mailbox.
pub const VOICEMAIL_USER: &str = "voicemail";

/// What an HTTP download gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Downloaded {
    /// The WAV file.
    Wav(Vec<u8>),
    /// Her recordings, newest first, as JSON.
    Listing(String),
    /// 401 with these `WWW-Authenticate` values.
    Challenge(Vec<String>),
    /// 404, and why.
    NotFound(&'static str),
    /// 503: the ring did not answer.
    Unavailable,
}

impl Core {
    /// Whether an INVITE is for `voicemail@` one of our domains, to listen.
    pub(super) fn is_listening_call(&self, request: &Request) -> bool {
        request.method == Method::INVITE
            && self.voicemail.config.enabled
            && self.overlay().is_some()
            && request.uri.as_sip().is_some_and(|uri| {
                user_of(uri).as_deref() == Some(VOICEMAIL_USER)
                    && self.local_domain(&uri.host_port).is_some()
            })
    }

    /// An INVITE to `voicemail@`: whose mailbox (the authenticated user,
    /// or in open mode her From), then read it.
    pub(super) fn listen_call(
        &mut self,
        key: ServerKey,
        request: Request,
        from: Peer,
        user: Option<Aor>,
        now: Instant,
    ) {
        let digest = self.auth.mode() == AuthMode::Digest;
        let owner_aor = if digest {
            user
        } else {
            self.sender_aor(&request)
        };
        let Some(aor) = owner_aor else {
            let reason = "Forbidden (voicemail is for the mailbox's own phone)";
            return self.out.respond(key, refusal(&request, 403, reason), now);
        };
        let offer = match sdp::parse_offer(&request.body) {
            Ok(offer) => offer,
            Err(error) => {
                let reason = format!("Not Acceptable Here ({error})");
                return self.out.respond(key, refusal(&request, 488, reason), now);
            }
        };
        let Some(overlay) = self.location.overlay() else {
            return;
        };
        let op = overlay.fetch_items(owner::VOICEMAIL, NodeId::of_key(aor.as_str()), now);
        let listener = Listener {
            key,
            request,
            offer,
            from,
            check_source: !digest,
        };
        self.voicemail
            .mailboxes
            .fetching(op, aor, Purpose::Listen(Box::new(listener)));
    }

    /// A download asked over HTTP: `number` (1 the newest) of `aor`'s
    /// recordings, or the listing. Without credentials: the challenge at
    /// once; with them, her items are read to check them.
    pub(super) fn download(&mut self, id: u64, aor: &str, download: Download, now: Instant) {
        let Some((user, domain)) = aor.split_once('@') else {
            return self.downloaded(id, Downloaded::NotFound("not USER@DOMAIN"));
        };
        let aor = Aor::new(user, domain);
        if !self.config.domains.iter().any(|d| d == domain_of(&aor)) {
            return self.downloaded(id, Downloaded::NotFound("not a domain of this node"));
        }
        if download.authorization.is_none() {
            let challenge = self.download_challenge(&aor, false, now);
            return self.downloaded(id, challenge);
        }
        let Some(overlay) = self.location.overlay() else {
            return self.downloaded(id, Downloaded::NotFound("no ring"));
        };
        let op = overlay.fetch_items(owner::VOICEMAIL, NodeId::of_key(aor.as_str()), now);
        self.voicemail
            .mailboxes
            .fetching(op, aor, Purpose::Download(download));
    }

    fn downloaded(&mut self, id: u64, answer: Downloaded) {
        self.outputs.push_back(Output::Downloaded { id, answer });
    }

    fn download_challenge(&mut self, aor: &Aor, stale: bool, now: Instant) -> Downloaded {
        let nonce = self.download_nonces(now).make(now);
        let algorithms = self.config.auth.algorithms.clone();
        Downloaded::Challenge(challenges(domain_of(aor), &nonce, stale, &algorithms))
    }

    /// The nonces of the download's challenges, keyed (on first use) from
    /// the core's random source, apart from the SIP challenges' own.
    fn download_nonces(&mut self, now: Instant) -> &mut crate::auth::digest::Nonces {
        let mut secret = [0u8; 32];
        if !self.voicemail.has_nonces() {
            for chunk in secret.chunks_mut(8) {
                chunk.copy_from_slice(&self.out.seed().to_be_bytes());
            }
        }
        self.voicemail.nonces(secret, now)
    }

    /// Whether this fetch is the mailboxes'.
    pub(super) fn is_mailbox_fetch(&self, op: OpId) -> bool {
        self.voicemail.mailboxes.is_ours(op)
    }

    /// A fetch of the mailboxes answered: the items under her key (check
    /// who asks, then read the recordings wanted), or a part.
    pub(super) fn on_mailbox_fetched(
        &mut self,
        op: OpId,
        result: Result<Vec<Item>, RingError>,
        now: Instant,
    ) {
        if let Some((aor, purpose)) = self.voicemail.mailboxes.indexed(op) {
            return self.mailbox_indexed(aor, purpose, result, now);
        }
        let items = result.ok();
        if let Some(Some((aor, purpose, loaded))) =
            self.voicemail.mailboxes.part(op, items.as_deref())
        {
            self.mailbox_loaded(aor, purpose, loaded, now);
        }
    }

    fn mailbox_indexed(
        &mut self,
        aor: Aor,
        purpose: Purpose,
        result: Result<Vec<Item>, RingError>,
        now: Instant,
    ) {
        let items = match result {
            Ok(items) => items,
            Err(error) => {
                debug!(%error, %aor, "could not read the mailbox");
                return match purpose {
                    Purpose::Listen(l) => self.out.respond(
                        l.key,
                        refusal(&l.request, 503, "Service Unavailable"),
                        now,
                    ),
                    Purpose::Download(d) => self.downloaded(d.id, Downloaded::Unavailable),
                };
            }
        };
        let at_most = self.voicemail.config.max_per_user;
        let mut recordings = mailbox::recordings(&items, now, at_most);
        match &purpose {
            Purpose::Listen(listener) => {
                if listener.check_source && !from_her_contact(&aor, &items, listener.from, now) {
                    info!(%aor, source = %listener.from.addr, "voicemail refused: not from a contact she registered");
                    let reason = "Forbidden (call from a phone registered as this user)";
                    let response = refusal(&listener.request, 403, reason);
                    return self.out.respond(listener.key, response, now);
                }
            }
            Purpose::Download(download) => {
                if let Err(refused) = self.download_allowed(&aor, download, &items, now) {
                    return self.downloaded(download.id, refused);
                }
                if let Some(number) = download.number {
                    let Some(one) = number.checked_sub(1).and_then(|n| recordings.get(n)) else {
                        return self
                            .downloaded(download.id, Downloaded::NotFound("no such recording"));
                    };
                    recordings = vec![one.clone()];
                } else {
                    let listing = listing(&aor, &recordings);
                    return self.downloaded(download.id, Downloaded::Listing(listing));
                }
            }
        }
        match self
            .voicemail
            .mailboxes
            .load(aor.clone(), purpose, recordings)
        {
            Ok(keys) => {
                let Some(overlay) = self.location.overlay() else {
                    return;
                };
                let ops: Vec<_> = keys
                    .into_iter()
                    .map(|(key, token)| (overlay.fetch_items(owner::VOICEMAIL, key, now), token))
                    .collect();
                for (op, token) in ops {
                    self.voicemail.mailboxes.part_fetch(op, token);
                }
            }
            Err((purpose, loaded)) => self.mailbox_loaded(aor, purpose, loaded, now),
        }
    }

    /// Whether the download's credentials are hers (the users file, or
    /// her credentials in the ring), else the answer.
    fn download_allowed(
        &mut self,
        aor: &Aor,
        download: &Download,
        items: &[Item],
        now: Instant,
    ) -> Result<(), Downloaded> {
        let record = self
            .auth
            .local_users()
            .find(|r| r.aor == *aor)
            .cloned()
            .or_else(|| crate::auth::credential_of(aor, items, now));
        let credentials = download
            .authorization
            .as_deref()
            .and_then(Credentials::parse)
            .filter(|c| {
                let (user, realm) = aor.as_str().rsplit_once('@').unwrap_or_default();
                c.username == user && c.realm == realm && c.uri == download.uri
            });
        let Some(credentials) = credentials else {
            return Err(self.download_challenge(aor, false, now));
        };
        let verdict = self
            .download_nonces(now)
            .verify(&credentials, "GET", record.as_ref(), now);
        match verdict {
            Ok(()) => Ok(()),
            Err(Rejection::Stale) => Err(self.download_challenge(aor, true, now)),
            Err(_) => {
                info!(%aor, "voicemail download refused: wrong credentials");
                Err(self.download_challenge(aor, false, now))
            }
        }
    }

    /// The recordings wanted are read: answer the listening call (open its
    /// socket) or the download.
    fn mailbox_loaded(&mut self, aor: Aor, purpose: Purpose, loaded: Vec<Loaded>, now: Instant) {
        match purpose {
            Purpose::Download(download) => {
                let answer = match loaded.into_iter().next().and_then(|l| l.wav) {
                    Some(wav) => Downloaded::Wav(wav),
                    None => Downloaded::Unavailable,
                };
                self.downloaded(download.id, answer);
            }
            Purpose::Listen(listener) => {
                if self.cancelled.remove(&listener.key) {
                    return;
                }
                let recordings = loaded
                    .into_iter()
                    .filter_map(|l| {
                        let samples = crate::media::wav::read(l.wav.as_deref()?)?;
                        Some((l.name, l.recorded.parts(), samples))
                    })
                    .collect();
                let Listener {
                    key,
                    request,
                    offer,
                    ..
                } = *listener;
                let call = self.voicemail.listen_open(Opening {
                    key,
                    request,
                    offer,
                    aor,
                    recordings,
                });
                let ports = self.voicemail.config.ports;
                self.outputs.push_back(Output::OpenMedia { call, ports });
            }
        }
        let _ = now;
    }

    /// The socket of a listening call is open (or not): answer 200 and
    /// start playing, or 503.
    pub(super) fn on_listen_opened(
        &mut self,
        call: MediaCall,
        local: Option<std::net::SocketAddr>,
        now: Instant,
    ) {
        let Some(opening) = self.voicemail.listen_opened(call, local.is_some()) else {
            return;
        };
        let Some(local) = local else {
            let reason = "Service Unavailable (no RTP port free)";
            return self
                .out
                .respond(opening.key, refusal(&opening.request, 503, reason), now);
        };
        let (response, ssrc) = self.media_answer(&opening.request, &opening.offer, local, call);
        let count = opening.recordings.len();
        info!(call = call.0, aor = %opening.aor, recordings = count, "voicemail listened to");
        let recordings = opening
            .recordings
            .into_iter()
            .map(|(name, _, samples)| (name, samples))
            .collect();
        let playback = Playback::new(opening.offer, recordings, ssrc, now);
        self.answer_call(opening.key, &opening.request, response, call, now);
        self.outputs.push_back(Output::StartPlayback {
            call,
            playback: Box::new(playback),
        });
    }

    /// What a listening call's media says: a recording deleted (its index
    /// and parts removed from the ring, her watchers told), or the end.
    pub(super) fn on_playback(&mut self, call: MediaCall, event: PlaybackEvent, now: Instant) {
        match event {
            PlaybackEvent::Finished => {
                self.hang_up_caller(call, now);
                self.voicemail.listen_finished(call);
            }
            PlaybackEvent::Deleted(name) => {
                let Some((aor, parts)) = self.voicemail.deleted(call, &name) else {
                    return;
                };
                info!(%aor, %name, "voicemail deleted");
                let Some(overlay) = self.location.overlay() else {
                    return;
                };
                overlay.remove_item(NodeId::of_key(aor.as_str()), name.clone(), now);
                for n in 0..parts {
                    let key = crate::voicemail::record::part_key(&aor, &name, n);
                    overlay.remove_item(key, format!("{name}:{n:03}"), now);
                }
                self.presence.changed_soon(&aor, now);
            }
        }
    }
}

/// The domain of an AOR (the realm of her credentials).
fn domain_of(aor: &Aor) -> &str {
    aor.as_str().rsplit_once('@').map_or("", |(_, d)| d)
}

/// Whether `from` is where one of her live bindings was registered from,
/// or the address its contact names.
fn from_her_contact(aor: &Aor, items: &[Item], from: Peer, now: Instant) -> bool {
    let Some(bindings) = items
        .iter()
        .filter(|i| i.kind == BINDING_KIND && i.name == aor.as_str())
        .max_by_key(|i| i.version)
        .and_then(|i| crate::registrar::record::decode(&i.value, now))
    else {
        return false;
    };
    bindings.iter().filter(|b| b.is_live(now)).any(|b| {
        b.source.is_some_and(|s| s.addr == from.addr)
            || b.contact
                .parse::<ezk_sip_types::uri::SipUri>()
                .ok()
                .and_then(|uri| match crate::sip::target::next_hop(&uri) {
                    crate::sip::target::NextHop::Peer(p) => Some(p.addr == from.addr),
                    crate::sip::target::NextHop::Resolve(_) => None,
                })
                .unwrap_or(false)
    })
}

/// The listing of her recordings as JSON, newest first (numbered from 1).
fn listing(aor: &Aor, recordings: &[(String, crate::voicemail::Recorded)]) -> String {
    let list: Vec<serde_json::Value> = recordings
        .iter()
        .enumerate()
        .map(|(n, (name, r))| {
            serde_json::json!({
                "number": n + 1,
                "name": name,
                "from": r.from,
                "date": r.date,
                "millis": r.millis,
                "bytes": r.bytes,
                "href": format!("/voicemail/{aor}/{}.wav", n + 1),
            })
        })
        .collect();
    serde_json::json!({ "user": aor.as_str(), "recordings": list }).to_string()
}
