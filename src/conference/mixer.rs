//! The focus's audio mixer of one room, sans-I/O: fed each participant's
//! RTP datagrams and time, it plays every participant's jitter buffer out
//! once per 20 ms tick, and gives each participant the sum of the others'
//! decoded audio (never her own), clipped to 16 bits and encoded in the
//! G.711 law her offer chose, as one RTP packet of her own stream
//! (sequence and timestamp of her own, continuous from her join). A
//! participant of a room with a PIN is neither heard nor hears anyone
//! until she has keyed it in (RFC 4733 digits, then `#` or the last
//! digit). The tokio side (`node/conference.rs`) only moves datagrams.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::debug;

use super::jitter::JitterBuffer;
use crate::media::SAMPLES_PER_PACKET;
use crate::media::event::KeyEvent;
use crate::media::rtp::Packet;
use crate::media::sdp::Offer;
use crate::voicemail::MediaCall;

/// The mixer's tick: one packet per participant each.
pub const TICK: Duration = Duration::from_millis(20);
/// Ticks mixed at once when the driver woke late; beyond, the missed ones
/// are skipped (a late burst would only overflow the phones' buffers).
const CATCH_UP: u32 = 5;
/// Digits kept of a PIN being keyed in.
const MAX_DIGITS: usize = 32;

/// A packet to send: to `to`, from the socket of participant `call`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub call: MediaCall,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// What a participant still has to key in before she is admitted.
#[derive(Clone, Debug)]
struct PinEntry {
    pin: String,
    keyed: String,
    /// The RTP timestamp of the last key event counted (its retransmissions
    /// and end packets carry the same one).
    last_event: Option<u32>,
}

impl PinEntry {
    /// A key pressed; true when the PIN is now complete and right.
    fn key(&mut self, key: char) -> bool {
        if key == '#' || key == '*' {
            let right = self.keyed == self.pin;
            self.keyed.clear();
            return right;
        }
        if self.keyed.len() < MAX_DIGITS {
            self.keyed.push(key);
        }
        self.keyed == self.pin
    }
}

/// One participant's leg.
#[derive(Clone, Debug)]
struct Leg {
    offer: Offer,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    jitter: JitterBuffer,
    /// `Some` until she keyed the room's PIN in.
    pin: Option<PinEntry>,
    /// This tick's audio from her.
    frame: [i16; SAMPLES_PER_PACKET],
    /// Packets of hers taken, and dropped (not RTP, wrong source or type).
    received: u64,
    dropped: u64,
}

/// The mixer of one room.
#[derive(Clone, Debug, Default)]
pub struct Mixer {
    legs: BTreeMap<MediaCall, Leg>,
    /// The next tick, while anyone is in the room.
    next_tick: Option<Instant>,
    out: Vec<Outgoing>,
    /// How late the ticks were mixed (for the logs and the benchmark).
    pub lateness: Lateness,
}

/// How late the mixer's ticks went out: each is due at its instant, and
/// its packets leave when the driver wakes for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lateness {
    /// Ticks mixed.
    pub ticks: u64,
    /// Ticks mixed more than one tick (20 ms) after their time, plus the
    /// ticks skipped (never mixed).
    pub over: u64,
    /// Ticks skipped because the driver woke too late.
    pub skipped: u64,
    /// The latest a tick was mixed after its time.
    pub max: Duration,
}

impl Mixer {
    pub fn new() -> Mixer {
        Mixer::default()
    }

    /// A participant joins at `now` with her offer; she sends her stream
    /// as `ssrc`; with `pin`, she must key it in first.
    pub fn join(
        &mut self,
        call: MediaCall,
        offer: Offer,
        ssrc: u32,
        pin: Option<String>,
        now: Instant,
    ) {
        let leg = Leg {
            jitter: JitterBuffer::new(offer.law),
            offer,
            ssrc,
            sequence: (ssrc >> 16) as u16,
            timestamp: ssrc.rotate_left(7),
            pin: pin.map(|pin| PinEntry {
                pin,
                keyed: String::new(),
                last_event: None,
            }),
            frame: [0; SAMPLES_PER_PACKET],
            received: 0,
            dropped: 0,
        };
        self.legs.insert(call, leg);
        self.next_tick.get_or_insert(now + TICK);
    }

    /// A participant leaves; true when the room is now empty.
    pub fn leave(&mut self, call: MediaCall) -> bool {
        self.legs.remove(&call);
        if self.legs.is_empty() {
            self.next_tick = None;
        }
        self.legs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.legs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.legs.is_empty()
    }

    /// Whether `call` is in the room and admitted (PIN keyed in, or none).
    pub fn is_admitted(&self, call: MediaCall) -> bool {
        self.legs.get(&call).is_some_and(|l| l.pin.is_none())
    }

    /// A datagram on participant `call`'s socket from `from`. Only her
    /// offer's address may send; what is not RTP of her law or her
    /// telephone-events is dropped.
    pub fn handle_datagram(&mut self, call: MediaCall, bytes: &[u8], from: SocketAddr) {
        let Some(leg) = self.legs.get_mut(&call) else {
            return;
        };
        if from.ip() != leg.offer.remote.ip() {
            leg.dropped += 1;
            return;
        }
        let packet = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(error) => {
                debug!(%error, %from, "not RTP; dropped");
                leg.dropped += 1;
                return;
            }
        };
        if Some(packet.payload_type) == leg.offer.events {
            if let Some(entry) = &mut leg.pin
                && entry.last_event != Some(packet.timestamp)
                && let Some(key) = KeyEvent::parse(packet.payload).and_then(|e| e.key())
            {
                entry.last_event = Some(packet.timestamp);
                if entry.key(key) {
                    debug!(call = call.0, "PIN keyed in: admitted to the room");
                    leg.pin = None;
                }
            }
            return;
        }
        if packet.payload_type != leg.offer.law.payload_type() {
            leg.dropped += 1;
            return;
        }
        leg.received += 1;
        leg.jitter
            .push(packet.ssrc, packet.timestamp, packet.payload);
    }

    /// Time passed: mixes every tick due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut mixed = 0;
        while let Some(tick) = self.next_tick
            && now >= tick
        {
            if mixed == CATCH_UP {
                let behind = (now - tick).as_millis() / TICK.as_millis() + 1;
                self.lateness.skipped += behind as u64;
                self.lateness.over += behind as u64;
                self.next_tick = Some(tick + TICK * behind as u32);
                break;
            }
            let late = now - tick;
            self.lateness.ticks += 1;
            self.lateness.max = self.lateness.max.max(late);
            if late > TICK {
                self.lateness.over += 1;
            }
            self.mix();
            mixed += 1;
            self.next_tick = Some(tick + TICK);
        }
    }

    /// One tick: every leg's frame played out, and each admitted
    /// participant sent the others' sum.
    fn mix(&mut self) {
        let mut sum = [0i32; SAMPLES_PER_PACKET];
        for leg in self.legs.values_mut() {
            let mut frame = [0i16; SAMPLES_PER_PACKET];
            let heard = leg.jitter.pop(&mut frame);
            if !heard || leg.pin.is_some() {
                frame = [0; SAMPLES_PER_PACKET];
            }
            for (s, x) in sum.iter_mut().zip(frame) {
                *s += i32::from(x);
            }
            leg.frame = frame;
        }
        for (call, leg) in self.legs.iter_mut() {
            let law = leg.offer.law;
            let payload: Vec<u8> = if leg.pin.is_some() {
                vec![law.encode(0); SAMPLES_PER_PACKET]
            } else {
                sum.iter()
                    .zip(leg.frame)
                    .map(|(s, own)| law.encode(clip(s - i32::from(own))))
                    .collect()
            };
            let packet = Packet {
                marker: false,
                payload_type: law.payload_type(),
                sequence: leg.sequence,
                timestamp: leg.timestamp,
                ssrc: leg.ssrc,
                payload: &payload,
            };
            leg.sequence = leg.sequence.wrapping_add(1);
            leg.timestamp = leg.timestamp.wrapping_add(SAMPLES_PER_PACKET as u32);
            self.out.push(Outgoing {
                call: *call,
                to: leg.offer.remote,
                bytes: packet.build(),
            });
        }
    }

    /// The packets mixed so far, to send now.
    pub fn drain_transmits(&mut self) -> std::vec::Drain<'_, Outgoing> {
        self.out.drain(..)
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next (`None`:
    /// the room is empty).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }
}

/// A sum clipped to a 16-bit sample.
fn clip(sample: i32) -> i16 {
    sample.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

#[cfg(test)]
mod tests;
