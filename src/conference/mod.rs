//! Conferences (issue 12, item 5): `sip:conf-NAME@DOMAIN` for any NAME,
//! and the rooms named in `[[conference.room]]` (optionally with a PIN),
//! each served by one node acting as focus in RFC 4353's model. The focus
//! of a room is the responsible node of its key (the hash of the room's
//! address, as for a user): an INVITE reaching another node is looked up
//! and forwarded there through the ring's own routing
//! (`core/conference.rs`), so participants entering through different
//! nodes meet at the same mixer. This module keeps who is in which room
//! and decides admission (maximum participants); the audio is the
//! [`mixer`]'s, run by the driver (`node/conference.rs`). Sans-I/O.

pub mod jitter;
pub mod mixer;

use std::collections::HashMap;

use crate::media::sdp::Offer;
use crate::registrar::binding::Aor;
use crate::ring::OpId;
use crate::sip::message::{HeaderAccess, Request};
use crate::sip::transaction::ServerKey;
use crate::voicemail::MediaCall;
use ezk_sip_types::Name;

/// The user part that makes any address a room: `conf-NAME`.
pub const PREFIX: &str = "conf-";
/// Conference media calls are numbered from here, apart from voicemail's.
pub const CALLS_FROM: u64 = 1 << 63;

/// A room named in the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomConfig {
    /// The user part of its address (`standup` for `sip:standup@DOMAIN`).
    pub name: String,
    /// Digits keyed in (RFC 4733) after answer before she is admitted.
    pub pin: Option<String>,
}

/// `[conference]` in the config.
#[derive(Clone, Debug)]
pub struct ConferenceConfig {
    pub enabled: bool,
    /// Participants of one room at most (beyond: 486).
    pub max_participants: usize,
    /// The UDP ports of the participants' RTP sockets.
    pub ports: (u16, u16),
    pub rooms: Vec<RoomConfig>,
}

impl Default for ConferenceConfig {
    fn default() -> Self {
        ConferenceConfig {
            enabled: true,
            max_participants: 16,
            ports: (21000, 21999),
            rooms: Vec::new(),
        }
    }
}

/// An INVITE on its way to a room.
pub struct Pending {
    pub key: ServerKey,
    pub request: Request,
    pub room: Aor,
    pub offer: Offer,
}

/// A participant's place: her room and her media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seat {
    pub room: Aor,
    pub call: MediaCall,
}

/// Why an INVITE is not taken into a room.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

/// The rooms this node is the focus of, and the INVITEs on their way.
#[derive(Default)]
pub struct Conferences {
    pub config: ConferenceConfig,
    next_call: u64,
    /// INVITEs waiting for the look-up of their room's focus node.
    looking: HashMap<OpId, (ServerKey, Request, Aor)>,
    /// INVITEs waiting for their RTP socket.
    opening: HashMap<MediaCall, Pending>,
    /// Participants by SIP Call-ID.
    seats: HashMap<String, Seat>,
    /// Participants (and INVITEs being answered) per room.
    rooms: HashMap<Aor, usize>,
}

impl Conferences {
    pub fn new(config: ConferenceConfig) -> Conferences {
        Conferences {
            config,
            ..Conferences::default()
        }
    }

    /// Whether `aor` is a room, and with which PIN (`Some(None)`: a room
    /// without one).
    pub fn room(&self, aor: &Aor) -> Option<Option<String>> {
        if !self.config.enabled {
            return None;
        }
        let user = aor
            .as_str()
            .rsplit_once('@')
            .map_or(aor.as_str(), |(u, _)| u);
        if let Some(room) = self.config.rooms.iter().find(|r| r.name == user) {
            return Some(room.pin.clone());
        }
        (user.len() > PREFIX.len() && user.starts_with(PREFIX)).then_some(None)
    }

    /// An INVITE waits for the look-up `op` of its room's focus.
    pub fn looking(&mut self, op: OpId, key: ServerKey, request: Request, room: Aor) {
        self.looking.insert(op, (key, request, room));
    }

    /// The look-up `op` ended: its INVITE.
    pub fn found(&mut self, op: OpId) -> Option<(ServerKey, Request, Aor)> {
        self.looking.remove(&op)
    }

    /// Why an INVITE for `room` is not taken: the room is full.
    pub fn refusal(&self, room: &Aor) -> Option<Refusal> {
        let max = self.config.max_participants;
        (self.participants(room) >= max).then(|| Refusal {
            status: 486,
            reason: format!("Busy Here (the room is full: {max} participants)"),
        })
    }

    /// An INVITE for `room` at its focus, with room for her (see
    /// [`refusal`](Self::refusal)): the media call to open a socket for.
    pub fn admit(
        &mut self,
        key: ServerKey,
        request: Request,
        room: Aor,
        offer: Offer,
    ) -> MediaCall {
        self.next_call += 1;
        let call = MediaCall(CALLS_FROM | self.next_call);
        *self.rooms.entry(room.clone()).or_default() += 1;
        self.opening.insert(
            call,
            Pending {
                key,
                request,
                room,
                offer,
            },
        );
        call
    }

    /// Whether `call` is one of ours waiting for its socket.
    pub fn is_opening(&self, call: MediaCall) -> bool {
        self.opening.contains_key(&call)
    }

    /// The socket of `call` is open (`answered`: the 200 goes out, she is
    /// in the room under her INVITE's Call-ID) or could not be (her place
    /// is given back).
    pub fn opened(&mut self, call: MediaCall, answered: bool) -> Option<Pending> {
        let pending = self.opening.remove(&call)?;
        let call_id = answered
            .then(|| pending.request.raw(&Name::CALL_ID).map(|v| v.to_string()))
            .flatten();
        match call_id {
            Some(call_id) => {
                self.seats.insert(
                    call_id,
                    Seat {
                        room: pending.room.clone(),
                        call,
                    },
                );
            }
            None => self.vacate(&pending.room),
        }
        Some(pending)
    }

    /// The participant with this SIP Call-ID, when she is in a room here.
    pub fn seat(&self, call_id: &str) -> Option<&Seat> {
        self.seats.get(call_id)
    }

    /// She left (BYE): her seat, and whether the room is now empty.
    pub fn leave(&mut self, call_id: &str) -> Option<(Seat, bool)> {
        let seat = self.seats.remove(call_id)?;
        self.vacate(&seat.room);
        let empty = !self.rooms.contains_key(&seat.room);
        Some((seat, empty))
    }

    fn vacate(&mut self, room: &Aor) {
        if let Some(count) = self.rooms.get_mut(room) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.rooms.remove(room);
            }
        }
    }

    /// Participants of `room` now.
    pub fn participants(&self, room: &Aor) -> usize {
        self.rooms.get(room).copied().unwrap_or(0)
    }

    /// Rooms open on this node.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests;
