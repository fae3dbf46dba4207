//! One call the node answers to play a user's recordings back to her
//! (voicemail listening), as a state machine: fed RTP datagrams and time,
//! it gives 20 ms G.711 packets of the recordings in the order given
//! (newest first, as the core orders them), half a second of silence
//! between two; RFC 4733 keys from her phone act on the one playing, or
//! the one just played until the next begins: `#` skips to the next, `7`
//! deletes it (a [`PlaybackEvent::Deleted`] for the core, which removes
//! it from the ring) and goes on. A key is acted on once: the packets of
//! one press share an RTP timestamp. After the
//! last recording it sends nothing more and ends a minute later (the
//! caller hangs up before).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::debug;

use super::SAMPLES_PER_PACKET;
use super::event::KeyEvent;
use super::rtp::Packet;
use super::sdp::Offer;

const PACKET: Duration = Duration::from_millis(20);
/// Silence between two recordings, in packets (0.5 s).
const GAP_PACKETS: u32 = 25;
/// How long the call's media lives after the last recording.
const LINGER: Duration = Duration::from_secs(60);

/// What the core is told of a playback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaybackEvent {
    /// She pressed `7` while this recording played: delete it.
    Deleted(String),
    /// The media ended (the core asked, or the time ran out).
    Finished,
}

/// A listening call's media.
#[derive(Clone, Debug)]
pub struct Playback {
    offer: Offer,
    started: Instant,
    ssrc: u32,
    /// The recordings still to play, the one playing first: name and samples.
    queue: VecDeque<(String, Vec<i16>)>,
    /// Samples of the first of `queue` sent so far.
    position: usize,
    /// Silent packets still to send before the first of `queue`.
    gap: u32,
    /// Packets sent so far (their timestamps are continuous).
    sent: u32,
    /// The recording playing, or the last played until the next begins.
    current: Option<String>,
    /// The RTP timestamp of the last key press acted on.
    last_key: Option<u32>,
    events: VecDeque<PlaybackEvent>,
    /// When the last recording was done.
    done_at: Option<Instant>,
    ended: bool,
}

impl Playback {
    /// A call answered at `now` that plays `recordings` (name, samples) in order.
    pub fn new(
        offer: Offer,
        recordings: Vec<(String, Vec<i16>)>,
        ssrc: u32,
        now: Instant,
    ) -> Playback {
        Playback {
            offer,
            started: now,
            ssrc,
            queue: recordings.into(),
            position: 0,
            gap: 0,
            sent: 0,
            current: None,
            last_key: None,
            events: VecDeque::new(),
            done_at: None,
            ended: false,
        }
    }

    /// Where the node sends its packets.
    pub fn remote(&self) -> SocketAddr {
        self.offer.remote
    }

    /// A datagram from `from`: only the offer's address, only its key events.
    pub fn handle_datagram(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) {
        if self.ended || from.ip() != self.offer.remote.ip() {
            return;
        }
        let Ok(packet) = Packet::parse(bytes) else {
            return;
        };
        if Some(packet.payload_type) != self.offer.events {
            return;
        }
        let Some(key) = KeyEvent::parse(packet.payload).and_then(|e| e.key()) else {
            return;
        };
        if self.last_key == Some(packet.timestamp) {
            return;
        }
        self.last_key = Some(packet.timestamp);
        debug!(%key, "key pressed while listening");
        let playing = self.gap == 0
            && self.current.is_some()
            && self.queue.front().map(|(n, _)| n) == self.current.as_ref();
        match key {
            '#' if playing => self.next(now),
            '#' => self.gap = 0,
            '7' => {
                if let Some(name) = self.current.take() {
                    self.events.push_back(PlaybackEvent::Deleted(name));
                }
                if playing {
                    self.next(now);
                }
            }
            _ => {}
        }
    }

    /// Leaves the recording playing for the next one.
    fn next(&mut self, now: Instant) {
        if self.queue.pop_front().is_some() {
            self.position = 0;
            self.gap = GAP_PACKETS;
        }
        if self.queue.is_empty() && self.done_at.is_none() {
            self.done_at = Some(now);
        }
    }

    fn due(&self, n: u32) -> Instant {
        self.started + PACKET * n
    }

    /// The next packet due at `now`, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.ended || self.queue.is_empty() || now < self.due(self.sent) {
            return None;
        }
        let law = self.offer.law;
        let payload: Vec<u8> = if self.gap > 0 {
            self.gap -= 1;
            vec![law.encode(0); SAMPLES_PER_PACKET]
        } else {
            let (name, samples) = self.queue.front()?;
            if self.position == 0 {
                self.current = Some(name.clone());
            }
            let end = (self.position + SAMPLES_PER_PACKET).min(samples.len());
            let mut payload: Vec<u8> = samples[self.position..end]
                .iter()
                .map(|s| law.encode(*s))
                .collect();
            payload.resize(SAMPLES_PER_PACKET, law.encode(0));
            self.position = end;
            if end >= samples.len() {
                self.next(now);
            }
            payload
        };
        let packet = Packet {
            marker: self.sent == 0,
            payload_type: law.payload_type(),
            sequence: self.sent as u16,
            timestamp: self.sent.wrapping_mul(SAMPLES_PER_PACKET as u32),
            ssrc: self.ssrc,
            payload: &payload,
        };
        self.sent += 1;
        Some(packet.build())
    }

    /// Time passed: the media ends a while after the last recording.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.queue.is_empty() && self.done_at.is_none() {
            self.done_at = Some(now);
        }
        if self.done_at.is_some_and(|at| now >= at + LINGER) {
            self.end();
        }
    }

    /// When to call again: the next packet, or the end.
    pub fn poll_timeout(&self) -> Instant {
        match self.done_at {
            Some(at) => at + LINGER,
            None => self.due(self.sent),
        }
    }

    /// What the core should hear of.
    pub fn poll_event(&mut self) -> Option<PlaybackEvent> {
        self.events.pop_front()
    }

    /// Stop (the call ended).
    pub fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            self.events.push_back(PlaybackEvent::Finished);
        }
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }
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

    fn key(event: u8, ts: u32) -> Vec<u8> {
        Packet {
            marker: true,
            payload_type: 101,
            sequence: 1,
            timestamp: ts,
            ssrc: 5,
            payload: &[event, 0x0a, 0, 160],
        }
        .build()
    }

    /// Runs `playback` until `until`, decoding what it sends.
    fn play(playback: &mut Playback, from: Instant, until: Instant) -> Vec<i16> {
        let mut out = Vec::new();
        let mut now = from;
        while now < until {
            playback.handle_timeout(now);
            while let Some(bytes) = playback.poll_transmit(now) {
                let p = Packet::parse(&bytes).expect("RTP");
                assert_eq!(p.payload.len(), SAMPLES_PER_PACKET);
                out.extend(p.payload.iter().map(|b| Law::Pcmu.decode(*b)));
            }
            now = playback
                .poll_timeout()
                .max(now + Duration::from_millis(1))
                .min(until);
        }
        out
    }

    #[test]
    fn plays_in_order_with_a_gap_and_then_stops() {
        let t0 = Instant::now();
        let first = vec![1000i16; 400];
        let second = vec![-1000i16; 160];
        let mut playback = Playback::new(
            offer(),
            vec![("new".into(), first), ("old".into(), second)],
            1,
            t0,
        );
        let heard = play(&mut playback, t0, t0 + Duration::from_secs(3));
        // 400 samples padded to 480, 25 silent packets, then 160.
        assert_eq!(heard.len(), 480 + 25 * 160 + 160);
        assert!(heard[..400].iter().all(|s| (s - 1000).abs() < 50));
        assert!(heard[400..480 + 4000].iter().all(|s| s.abs() < 10));
        assert!(heard[4480..].iter().all(|s| (s + 1000).abs() < 50));
        assert!(!playback.is_ended());
        playback.handle_timeout(t0 + Duration::from_secs(70));
        assert!(playback.is_ended());
        assert_eq!(playback.poll_event(), Some(PlaybackEvent::Finished));
    }

    #[test]
    fn hash_skips_and_seven_deletes_once_per_press() {
        let t0 = Instant::now();
        let from: SocketAddr = "127.0.0.1:4002".parse().unwrap();
        let long = || vec![500i16; 8000 * 5];
        let mut playback = Playback::new(
            offer(),
            vec![
                ("a".into(), long()),
                ("b".into(), long()),
                ("c".into(), long()),
            ],
            1,
            t0,
        );
        let t1 = t0 + Duration::from_millis(100);
        let _ = play(&mut playback, t0, t1);
        playback.handle_datagram(&key(11, 800), from, t1); // '#': a is skipped
        playback.handle_datagram(&key(11, 800), from, t1); // the same press again
        let t2 = t1 + Duration::from_millis(700);
        let _ = play(&mut playback, t1, t2); // past the gap: b plays
        playback.handle_datagram(&key(7, 1600), from, t2); // '7': b deleted
        playback.handle_datagram(&key(7, 1600), from, t2);
        assert_eq!(
            playback.poll_event(),
            Some(PlaybackEvent::Deleted("b".into()))
        );
        assert_eq!(playback.poll_event(), None);
        // In the gap nothing is current any more; a stranger's key is not hers.
        playback.handle_datagram(&key(7, 2000), from, t2);
        assert_eq!(playback.poll_event(), None);
        let t3 = t2 + Duration::from_millis(700);
        let _ = play(&mut playback, t2, t3); // c plays
        playback.handle_datagram(&key(7, 2400), "10.0.0.9:4000".parse().unwrap(), t3);
        assert_eq!(playback.poll_event(), None);
        // c plays to its end; 7 after it still deletes it.
        let t4 = t3 + Duration::from_secs(6);
        let _ = play(&mut playback, t3, t4);
        playback.handle_datagram(&key(7, 3200), from, t4);
        assert_eq!(
            playback.poll_event(),
            Some(PlaybackEvent::Deleted("c".into()))
        );
        assert_eq!(playback.poll_transmit(t4), None);
    }
}
