//! One participant's jitter buffer: the samples of her RTP packets placed
//! by timestamp on a short ring, so that packets reordered in transit
//! land where their sequence puts them and a lost one leaves silence, and
//! played out 20 ms at a time about 40–60 ms after the first arrived
//! ([`DELAY`] plus up to one tick). Bounded: a packet far ahead of the
//! play-out point (a new stream, a jump after silence suppression) or a
//! run of packets all too late (the sender's clock slower than ours)
//! starts the buffer again from that packet.

use crate::media::SAMPLES_PER_PACKET;
use crate::media::g711::Law;

/// Samples held back before the first packet plays: 40 ms.
pub const DELAY: u32 = 320;
/// Samples the ring holds: 256 ms (a power of two).
const CAPACITY: usize = 2048;
const MASK: u32 = CAPACITY as u32 - 1;
/// Packets in a row that arrive wholly too late before the buffer starts
/// again from the latest.
const LATE_RUN: u32 = 3;

/// The buffer of one stream.
#[derive(Clone, Debug)]
pub struct JitterBuffer {
    law: Law,
    /// The stream followed (its SSRC), once a packet came.
    ssrc: Option<u32>,
    /// The RTP timestamp of the next sample to play.
    play: u32,
    samples: Box<[i16; CAPACITY]>,
    present: Box<[bool; CAPACITY]>,
    late: u32,
}

impl JitterBuffer {
    pub fn new(law: Law) -> JitterBuffer {
        JitterBuffer {
            law,
            ssrc: None,
            play: 0,
            samples: Box::new([0; CAPACITY]),
            present: Box::new([false; CAPACITY]),
            late: 0,
        }
    }

    /// One packet's G.711 payload, of stream `ssrc`, starting at `timestamp`.
    pub fn push(&mut self, ssrc: u32, timestamp: u32, payload: &[u8]) {
        let len = payload.len();
        if len == 0 || len > CAPACITY / 2 {
            return;
        }
        if self.ssrc != Some(ssrc) {
            self.restart(ssrc, timestamp);
        }
        let mut offset = i64::from(timestamp.wrapping_sub(self.play) as i32);
        if offset + len as i64 <= 0 {
            self.late += 1;
            if self.late < LATE_RUN {
                return;
            }
            self.restart(ssrc, timestamp);
            offset = i64::from(DELAY);
        } else if offset + len as i64 > CAPACITY as i64 {
            self.restart(ssrc, timestamp);
            offset = i64::from(DELAY);
        }
        self.late = 0;
        for (i, byte) in payload.iter().enumerate() {
            let at = offset + i as i64;
            if at < 0 {
                continue;
            }
            let slot = (self.play.wrapping_add(at as u32) & MASK) as usize;
            self.samples[slot] = self.law.decode(*byte);
            self.present[slot] = true;
        }
    }

    /// Starts again from a packet at `timestamp`: it plays after [`DELAY`].
    fn restart(&mut self, ssrc: u32, timestamp: u32) {
        self.ssrc = Some(ssrc);
        self.play = timestamp.wrapping_sub(DELAY);
        self.present.fill(false);
        self.late = 0;
    }

    /// The next 20 ms into `frame` (silence where nothing arrived); true
    /// when any of it came from a packet.
    pub fn pop(&mut self, frame: &mut [i16; SAMPLES_PER_PACKET]) -> bool {
        let mut heard = false;
        for (i, out) in frame.iter_mut().enumerate() {
            let slot = (self.play.wrapping_add(i as u32) & MASK) as usize;
            if self.present[slot] {
                *out = self.samples[slot];
                self.present[slot] = false;
                heard = true;
            } else {
                *out = 0;
            }
        }
        if self.ssrc.is_some() {
            self.play = self.play.wrapping_add(SAMPLES_PER_PACKET as u32);
        }
        heard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = SAMPLES_PER_PACKET;

    /// A packet whose every sample is `value`.
    fn packet(value: i16) -> Vec<u8> {
        vec![Law::Pcmu.encode(value); N]
    }

    /// The level of the next frame (its first sample), or None for silence.
    fn next(buffer: &mut JitterBuffer) -> Option<i16> {
        let mut frame = [0i16; N];
        buffer.pop(&mut frame).then_some(frame[0])
    }

    fn near(got: Option<i16>, want: i16) -> bool {
        got.is_some_and(|g| (i32::from(g) - i32::from(want)).abs() <= i32::from(want) / 16 + 16)
    }

    #[test]
    fn plays_after_the_delay_in_timestamp_order() {
        let mut b = JitterBuffer::new(Law::Pcmu);
        b.push(7, 1000, &packet(1000));
        // Reordered in transit: the third before the second.
        b.push(7, 1320, &packet(3000));
        b.push(7, 1160, &packet(2000));
        assert_eq!(next(&mut b), None);
        assert_eq!(next(&mut b), None);
        assert!(near(next(&mut b), 1000));
        assert!(near(next(&mut b), 2000));
        assert!(near(next(&mut b), 3000));
        assert_eq!(next(&mut b), None);
    }

    #[test]
    fn a_lost_packet_is_silence_and_a_late_one_is_dropped() {
        let mut b = JitterBuffer::new(Law::Pcmu);
        b.push(7, 0, &packet(1000));
        b.push(7, 320, &packet(3000)); // 160 lost
        for _ in 0..2 {
            assert_eq!(next(&mut b), None);
        }
        assert!(near(next(&mut b), 1000));
        assert_eq!(next(&mut b), None);
        // The lost one turns up after its time: not played.
        b.push(7, 160, &packet(2000));
        assert!(near(next(&mut b), 3000));
        assert_eq!(next(&mut b), None);
    }

    #[test]
    fn wraps_and_restarts_on_a_jump_a_new_stream_or_a_late_run() {
        let mut b = JitterBuffer::new(Law::Pcmu);
        let start = u32::MAX - 100;
        b.push(7, start, &packet(1000));
        b.push(7, start.wrapping_add(160), &packet(2000));
        next(&mut b);
        next(&mut b);
        assert!(near(next(&mut b), 1000));
        assert!(near(next(&mut b), 2000));
        // A jump of ten seconds: plays after the delay again.
        b.push(7, 80_000, &packet(3000));
        assert_eq!(next(&mut b), None);
        assert_eq!(next(&mut b), None);
        assert!(near(next(&mut b), 3000));
        // Another SSRC: followed from its first packet.
        b.push(8, 5, &packet(4000));
        next(&mut b);
        next(&mut b);
        assert!(near(next(&mut b), 4000));
        // A sender whose packets all come too late: after three, followed again.
        for k in 0..3u32 {
            b.push(8, 5u32.wrapping_sub(10_000 + k * 160), &packet(5000));
        }
        next(&mut b);
        next(&mut b);
        assert!(near(next(&mut b), 5000));
    }

    #[test]
    fn hostile_payloads_are_bounded() {
        let mut b = JitterBuffer::new(Law::Pcma);
        b.push(1, 0, &[]);
        b.push(1, 0, &vec![0u8; 4000]);
        assert_eq!(next(&mut b), None);
        // A packet overlapping the play-out point keeps what is still due.
        b.push(1, 0, &packet(1000)[..80]);
        b.push(1, 100, &[Law::Pcma.encode(1000); 400]);
        let mut frames = 0;
        for _ in 0..8 {
            frames += usize::from(next(&mut b).is_some());
        }
        assert!(frames >= 3, "{frames}");
    }
}
