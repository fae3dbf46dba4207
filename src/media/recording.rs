//! One call the node answers to record a voicemail, as a state machine:
//! fed RTP datagrams and time, it gives the greeting's packets to send
//! (a built-in 1 s, 425 Hz tone) and keeps the caller's audio, decoded
//! from G.711, until it is ended (BYE), the caller presses `#`, or the
//! limit passes. Samples are placed by RTP timestamp from the first
//! packet on, so reordered packets land where they belong and lost ones
//! leave silence: that is the whole jitter buffer a recording needs. The
//! memory is bounded by the limit whatever the timestamps say.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::debug;

use super::event::KeyEvent;
use super::rtp::Packet;
use super::sdp::Offer;
use super::{SAMPLE_RATE, SAMPLES_PER_PACKET};

/// The greeting's length.
pub const GREETING: Duration = Duration::from_secs(1);
/// The greeting's tone (the European dial-tone frequency).
pub const GREETING_HZ: f64 = 425.0;
const PACKET: Duration = Duration::from_millis(20);

/// A voicemail call's media.
#[derive(Clone, Debug)]
pub struct Recording {
    offer: Offer,
    started: Instant,
    limit: Duration,
    ssrc: u32,
    /// Greeting packets sent so far.
    sent: u32,
    /// The caller's stream: its SSRC and first timestamp.
    first: Option<(u32, u32)>,
    samples: Vec<i16>,
    /// Samples written up to here (the recording's length).
    written: usize,
    ended: bool,
    /// How late the greeting's packets went out (for the logs and the
    /// benchmark).
    pub lateness: GreetingLateness,
}

/// How late the greeting's packets left: each is due 20 ms after the one
/// before it from the answer on, and leaves when the driver asks for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GreetingLateness {
    /// Greeting packets sent.
    pub packets: u32,
    /// Packets sent more than 20 ms after their time.
    pub over: u32,
    /// The latest a packet left after its time.
    pub max: Duration,
}

impl Recording {
    /// A call answered at `now` with this offer, recording at most `limit`.
    pub fn new(offer: Offer, limit: Duration, ssrc: u32, now: Instant) -> Recording {
        Recording {
            offer,
            started: now,
            limit,
            ssrc,
            sent: 0,
            first: None,
            samples: Vec::new(),
            written: 0,
            ended: false,
            lateness: GreetingLateness::default(),
        }
    }

    /// Where the node sends its packets.
    pub fn remote(&self) -> SocketAddr {
        self.offer.remote
    }

    fn capacity(&self) -> usize {
        (self.limit.as_millis() as usize).saturating_mul(SAMPLE_RATE as usize) / 1000
    }

    /// A datagram from `from`. Only the offer's address may send (any
    /// port); anything that is not RTP of the chosen law is dropped.
    pub fn handle_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        if self.ended || from.ip() != self.offer.remote.ip() {
            return;
        }
        let packet = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(error) => {
                debug!(%error, %from, "not RTP; dropped");
                return;
            }
        };
        if Some(packet.payload_type) == self.offer.events {
            if let Some(key) = KeyEvent::parse(packet.payload).and_then(|e| e.key()) {
                debug!(%key, "key pressed during a recording");
                if key == '#' {
                    self.ended = true;
                }
            }
            return;
        }
        if packet.payload_type != self.offer.law.payload_type() {
            return;
        }
        let (ssrc, first) = *self.first.get_or_insert((packet.ssrc, packet.timestamp));
        if packet.ssrc != ssrc {
            return;
        }
        let Ok(at) = usize::try_from(packet.timestamp.wrapping_sub(first)) else {
            return;
        };
        let capacity = self.capacity();
        if at >= capacity {
            return;
        }
        let end = at.saturating_add(packet.payload.len()).min(capacity);
        if self.samples.len() < end {
            self.samples.resize(end, 0);
        }
        let law = self.offer.law;
        for (slot, byte) in self.samples[at..end].iter_mut().zip(packet.payload) {
            *slot = law.decode(*byte);
        }
        self.written = self.written.max(end);
    }

    /// The next greeting packet due at `now`, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let packets = (GREETING.as_millis() / PACKET.as_millis()) as u32;
        if self.ended || self.sent >= packets || now < self.started + PACKET * self.sent {
            return None;
        }
        let late = now.saturating_duration_since(self.started + PACKET * self.sent);
        self.lateness.packets += 1;
        self.lateness.max = self.lateness.max.max(late);
        if late > PACKET {
            self.lateness.over += 1;
        }
        let first = self.sent as usize * SAMPLES_PER_PACKET;
        let law = self.offer.law;
        let payload: Vec<u8> = (first..first + SAMPLES_PER_PACKET)
            .map(|n| law.encode(greeting_sample(n)))
            .collect();
        let packet = Packet {
            marker: self.sent == 0,
            payload_type: law.payload_type(),
            sequence: self.sent as u16,
            timestamp: first as u32,
            ssrc: self.ssrc,
            payload: &payload,
        };
        self.sent += 1;
        Some(packet.build())
    }

    /// Time passed: the recording ends at its limit.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.started + self.limit {
            self.ended = true;
        }
    }

    /// When to call again: the next greeting packet, or the limit.
    pub fn poll_timeout(&self) -> Instant {
        let packets = (GREETING.as_millis() / PACKET.as_millis()) as u32;
        let limit = self.started + self.limit;
        if self.sent < packets {
            (self.started + PACKET * self.sent).min(limit)
        } else {
            limit
        }
    }

    /// Stop recording (the call ended).
    pub fn end(&mut self) {
        self.ended = true;
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The recorded samples.
    pub fn into_samples(mut self) -> Vec<i16> {
        self.samples.truncate(self.written);
        self.samples
    }
}

/// Sample `n` of the greeting: a 425 Hz tone at about -12 dBFS.
fn greeting_sample(n: usize) -> i16 {
    let t = n as f64 / f64::from(SAMPLE_RATE);
    (8000.0 * (2.0 * std::f64::consts::PI * GREETING_HZ * t).sin()) as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711::Law;

    fn offer() -> Offer {
        Offer {
            remote: "127.0.0.1:4000".parse().unwrap(),
            law: Law::Pcmu,
            events: Some(101),
        }
    }

    fn rtp(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        Packet {
            marker: false,
            payload_type: pt,
            sequence: seq,
            timestamp: ts,
            ssrc: 9,
            payload,
        }
        .build()
    }

    #[test]
    fn sends_one_second_of_greeting_on_time() {
        let t0 = Instant::now();
        let mut rec = Recording::new(offer(), Duration::from_secs(60), 1, t0);
        let mut sent = 0;
        let mut now = t0;
        while now < t0 + Duration::from_secs(2) {
            while let Some(bytes) = rec.poll_transmit(now) {
                let p = Packet::parse(&bytes).expect("RTP");
                assert_eq!(p.payload.len(), SAMPLES_PER_PACKET);
                assert_eq!(p.timestamp, sent * 160);
                sent += 1;
            }
            now = rec.poll_timeout().max(now + Duration::from_millis(1));
        }
        assert_eq!(sent, 50);
        assert_eq!(rec.lateness.packets, 50);
        assert_eq!(rec.lateness.over, 0, "{:?}", rec.lateness);
    }

    #[test]
    fn counts_greeting_packets_sent_late() {
        let t0 = Instant::now();
        let mut rec = Recording::new(offer(), Duration::from_secs(60), 1, t0);
        assert!(rec.poll_transmit(t0).is_some());
        // The driver wakes 45 ms late for the second packet (due at 20 ms):
        // it and the third (due at 40 ms, 25 ms late) go out at once.
        let woke = t0 + Duration::from_millis(65);
        assert!(rec.poll_transmit(woke).is_some());
        assert!(rec.poll_transmit(woke).is_some());
        assert!(rec.poll_transmit(woke).is_some(), "the fourth, 5 ms late");
        assert!(rec.poll_transmit(woke).is_none());
        assert_eq!(rec.lateness.packets, 4);
        assert_eq!(rec.lateness.over, 2);
        assert_eq!(rec.lateness.max, Duration::from_millis(45));
    }

    #[test]
    fn records_by_timestamp_with_gaps_and_reordering() {
        let from: SocketAddr = "127.0.0.1:4002".parse().unwrap();
        let mut rec = Recording::new(offer(), Duration::from_secs(60), 1, Instant::now());
        let loud = Law::Pcmu.encode(1000);
        rec.handle_datagram(&rtp(0, 1, 1000, &[loud; 160]), from);
        rec.handle_datagram(&rtp(0, 3, 1320, &[loud; 160]), from); // 2 lost
        rec.handle_datagram(&rtp(0, 0, 840, &[loud; 160]), from); // before the first: wraps, dropped
        rec.handle_datagram(&rtp(8, 4, 1480, &[loud; 160]), from); // other law
        rec.handle_datagram(
            &rtp(0, 5, 1640, &[loud; 160]),
            "10.9.9.9:4000".parse().unwrap(),
        );
        let samples = rec.into_samples();
        assert_eq!(samples.len(), 480);
        assert!(samples[..160].iter().all(|s| (s - 1000).abs() < 50));
        assert!(samples[160..320].iter().all(|s| *s == 0));
    }

    #[test]
    fn bounded_by_the_limit_and_ended_by_hash_or_time() {
        let from: SocketAddr = "127.0.0.1:4002".parse().unwrap();
        let t0 = Instant::now();
        let mut rec = Recording::new(offer(), Duration::from_secs(1), 1, t0);
        rec.handle_datagram(&rtp(0, 1, 0, &[0xff; 160]), from);
        // A hostile timestamp far ahead is dropped, not allocated.
        rec.handle_datagram(&rtp(0, 2, 4_000_000_000, &[0xff; 160]), from);
        rec.handle_datagram(&rtp(0, 3, 7950, &[0xff; 160]), from);
        assert!(!rec.is_ended());
        rec.handle_datagram(&rtp(101, 4, 8000, &[11, 0x80, 0, 160]), from);
        assert!(rec.is_ended());
        assert_eq!(rec.clone().into_samples().len(), 8000);
        let mut timed = Recording::new(offer(), Duration::from_secs(1), 1, t0);
        timed.handle_timeout(t0 + Duration::from_millis(999));
        assert!(!timed.is_ended());
        timed.handle_timeout(t0 + Duration::from_secs(1));
        assert!(timed.is_ended());
    }
}
