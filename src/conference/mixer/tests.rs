//! The mixer on a virtual clock: each participant sends a constant level,
//! so what each hears is plain arithmetic.

use super::*;
use crate::media::g711::Law;

const N: usize = SAMPLES_PER_PACKET;

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, n], 4000))
}

fn offer(n: u8, law: Law) -> Offer {
    Offer {
        remote: addr(n),
        law,
        events: Some(101),
    }
}

fn rtp(pt: u8, ssrc: u32, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    Packet {
        marker: false,
        payload_type: pt,
        sequence: seq,
        timestamp: ts,
        ssrc,
        payload,
    }
    .build()
}

/// A room on a virtual clock; participant `n` is `MediaCall(n)` at 127.0.0.n.
struct Room {
    mixer: Mixer,
    now: Instant,
    /// Ticks driven so far (each participant's packet timestamps follow it).
    ticks: u32,
    laws: BTreeMap<u8, Law>,
}

impl Room {
    fn new() -> Room {
        Room {
            mixer: Mixer::new(),
            now: Instant::now(),
            ticks: 0,
            laws: BTreeMap::new(),
        }
    }

    fn join(&mut self, n: u8, law: Law, pin: Option<&str>) {
        self.laws.insert(n, law);
        self.mixer.join(
            MediaCall(u64::from(n)),
            offer(n, law),
            1000 + u32::from(n),
            pin.map(str::to_string),
            self.now,
        );
    }

    fn leave(&mut self, n: u8) -> bool {
        self.laws.remove(&n);
        self.mixer.leave(MediaCall(u64::from(n)))
    }

    /// One tick: each `(n, level)` sends a packet of that level, then the
    /// clock moves to the next tick; gives the level each participant
    /// heard (the first sample of her packet, decoded in her law).
    fn tick(&mut self, sending: &[(u8, i16)]) -> BTreeMap<u8, i16> {
        for (n, level) in sending {
            let law = self.laws[n];
            let payload = vec![law.encode(*level); N];
            let bytes = rtp(
                law.payload_type(),
                77 + u32::from(*n),
                self.ticks as u16,
                self.ticks * N as u32,
                &payload,
            );
            self.mixer
                .handle_datagram(MediaCall(u64::from(*n)), &bytes, addr(*n));
        }
        self.ticks += 1;
        self.now += TICK;
        self.mixer.handle_timeout(self.now);
        let mut heard = BTreeMap::new();
        for out in self.mixer.drain_transmits() {
            let n = out.call.0 as u8;
            assert_eq!(out.to, addr(n));
            let packet = Packet::parse(&out.bytes).expect("RTP");
            let law = self.laws[&n];
            assert_eq!(packet.payload_type, law.payload_type());
            assert_eq!(packet.payload.len(), N);
            assert!(heard.insert(n, law.decode(packet.payload[0])).is_none());
        }
        heard
    }

    /// Ticks with everyone in `sending` talking until the delay has passed.
    fn settle(&mut self, sending: &[(u8, i16)]) -> BTreeMap<u8, i16> {
        let mut last = BTreeMap::new();
        for _ in 0..4 {
            last = self.tick(sending);
        }
        last
    }
}

fn near(got: i16, want: i32) -> bool {
    // G.711's step near 8,000 is 256 (µ) or 512 (A).
    (i32::from(got) - want).abs() <= want.abs() / 16 + 16
}

#[test]
fn each_hears_the_others_and_not_herself() {
    let mut room = Room::new();
    for n in 1..=3 {
        room.join(n, Law::Pcmu, None);
    }
    let talk = [(1, 1000), (2, 2000), (3, 4000)];
    let heard = room.settle(&talk);
    assert!(near(heard[&1], 6000), "{heard:?}");
    assert!(near(heard[&2], 5000), "{heard:?}");
    assert!(near(heard[&3], 3000), "{heard:?}");
    // Alone in the room, she hears silence, not herself.
    let mut solo = Room::new();
    solo.join(1, Law::Pcmu, None);
    assert_eq!(solo.settle(&[(1, 8000)])[&1], 0);
}

#[test]
fn sums_are_clipped_and_each_gets_her_own_law() {
    let mut room = Room::new();
    room.join(1, Law::Pcmu, None);
    room.join(2, Law::Pcma, None);
    room.join(3, Law::Pcmu, None);
    let heard = room.settle(&[(1, 20000), (2, 20000), (3, 20000)]);
    // 40,000 clipped to 32,767, then the law's top step.
    assert!(heard[&1] > 31000, "{heard:?}");
    assert!(heard[&2] > 31000, "{heard:?}");
    let heard = room.settle(&[(1, -20000), (2, -20000), (3, 1000)]);
    assert!(heard[&3] < -31000, "{heard:?}");
    assert!(near(heard[&1], -19000), "{heard:?}");
}

#[test]
fn joins_and_leaves_change_the_mix_and_the_last_ends_it() {
    let mut room = Room::new();
    room.join(1, Law::Pcmu, None);
    room.join(2, Law::Pcmu, None);
    let heard = room.settle(&[(1, 1000), (2, 2000)]);
    assert!(near(heard[&1], 2000) && near(heard[&2], 1000), "{heard:?}");
    room.join(4, Law::Pcmu, None);
    let heard = room.settle(&[(1, 1000), (2, 2000), (4, 8000)]);
    assert!(near(heard[&1], 10000), "{heard:?}");
    assert!(near(heard[&4], 3000), "{heard:?}");
    assert!(!room.leave(4));
    let heard = room.settle(&[(1, 1000), (2, 2000)]);
    assert_eq!(heard.len(), 2);
    assert!(near(heard[&1], 2000) && near(heard[&2], 1000), "{heard:?}");
    assert!(!room.leave(1));
    assert!(room.leave(2));
    assert_eq!(room.mixer.poll_timeout(), None);
}

#[test]
fn ticks_on_time_are_not_late() {
    let mut room = Room::new();
    room.join(1, Law::Pcmu, None);
    room.settle(&[(1, 1000)]);
    assert_eq!(room.mixer.lateness.ticks, 4);
    assert_eq!(room.mixer.lateness.over, 0);
    assert_eq!(room.mixer.lateness.max, Duration::ZERO);
}

#[test]
fn outgoing_streams_are_continuous() {
    let mut room = Room::new();
    room.join(1, Law::Pcmu, None);
    room.join(2, Law::Pcmu, None);
    let mut last: Option<(u16, u32)> = None;
    for _ in 0..10 {
        room.ticks += 1;
        room.now += TICK;
        room.mixer.handle_timeout(room.now);
        let outs: Vec<Outgoing> = room.mixer.drain_transmits().collect();
        assert_eq!(outs.len(), 2);
        let p = Packet::parse(&outs[0].bytes).expect("RTP");
        if let Some((seq, ts)) = last {
            assert_eq!(p.sequence, seq.wrapping_add(1));
            assert_eq!(p.timestamp, ts.wrapping_add(N as u32));
        }
        assert_eq!(p.ssrc, 1001);
        last = Some((p.sequence, p.timestamp));
    }
}

#[test]
fn loss_and_reordering_in_one_stream() {
    let mut room = Room::new();
    room.join(1, Law::Pcmu, None);
    room.join(2, Law::Pcmu, None);
    let call = MediaCall(2);
    // 2's packets 0, 2, 1 (reordered), 3 lost, 4.
    for (seq, level) in [(0u16, 1000i16), (2, 3000), (1, 2000), (4, 5000)] {
        let payload = vec![Law::Pcmu.encode(level); N];
        let bytes = rtp(0, 9, seq, u32::from(seq) * N as u32, &payload);
        room.mixer.handle_datagram(call, &bytes, addr(2));
    }
    let mut heard = Vec::new();
    for _ in 0..8 {
        heard.push(room.tick(&[])[&1]);
    }
    // Two ticks of delay, then 1000, 2000, 3000, silence, 5000.
    assert_eq!(&heard[..2], &[0, 0], "{heard:?}");
    assert!(near(heard[2], 1000) && near(heard[3], 2000) && near(heard[4], 3000));
    assert_eq!(heard[5], 0, "{heard:?}");
    assert!(near(heard[6], 5000), "{heard:?}");
}

#[test]
fn strangers_other_types_and_garbage_are_dropped() {
    let mut room = Room::new();
    room.join(1, Law::Pcmu, None);
    room.join(2, Law::Pcmu, None);
    let loud = vec![Law::Pcmu.encode(8000); N];
    let stranger = SocketAddr::from(([10, 0, 0, 9], 4000));
    room.mixer
        .handle_datagram(MediaCall(2), &rtp(0, 9, 0, 0, &loud), stranger);
    room.mixer
        .handle_datagram(MediaCall(2), &rtp(8, 9, 0, 0, &loud), addr(2));
    room.mixer
        .handle_datagram(MediaCall(2), &[0x80, 0, 1], addr(2));
    room.mixer
        .handle_datagram(MediaCall(9), &rtp(0, 9, 0, 0, &loud), addr(9));
    let heard = room.settle(&[]);
    assert_eq!(heard[&1], 0);
    assert_eq!(room.mixer.legs[&MediaCall(2)].dropped, 3);
}

#[test]
fn a_pin_admits_only_once_keyed_in() {
    let mut room = Room::new();
    room.join(1, Law::Pcmu, None);
    room.join(2, Law::Pcmu, Some("42"));
    let heard = room.settle(&[(1, 1000), (2, 2000)]);
    assert_eq!(heard[&1], 0, "not heard before the PIN: {heard:?}");
    assert_eq!(heard[&2], 0, "hears nobody before the PIN: {heard:?}");
    let key = |event: u8, end: bool, ts: u32| {
        rtp(
            101,
            9,
            0,
            ts,
            &[event, (if end { 0x80 } else { 0 }) | 10, 0, 160],
        )
    };
    let call = MediaCall(2);
    // A wrong PIN, ended by '#': still out.
    for (event, ts) in [(4u8, 100), (1, 200), (11, 300)] {
        room.mixer
            .handle_datagram(call, &key(event, false, ts), addr(2));
        room.mixer
            .handle_datagram(call, &key(event, true, ts), addr(2));
    }
    assert!(!room.mixer.is_admitted(call));
    // '4' then '2', each event sent three times (RFC 4733 §2.5.1.4): counted once.
    for (event, ts) in [(4u8, 400), (2, 500)] {
        for end in [false, true, true] {
            room.mixer
                .handle_datagram(call, &key(event, end, ts), addr(2));
        }
    }
    assert!(room.mixer.is_admitted(call));
    let heard = room.settle(&[(1, 1000), (2, 2000)]);
    assert!(near(heard[&1], 2000) && near(heard[&2], 1000), "{heard:?}");
}

#[test]
fn a_late_wake_up_mixes_a_few_ticks_and_skips_the_rest() {
    let mut room = Room::new();
    room.join(1, Law::Pcmu, None);
    room.now += Duration::from_secs(1);
    room.mixer.handle_timeout(room.now);
    assert_eq!(room.mixer.drain_transmits().count(), CATCH_UP as usize);
    let late = room.mixer.lateness;
    assert!(late.skipped >= 40, "{late:?}");
    assert_eq!(late.ticks, u64::from(CATCH_UP));
    assert!(late.over >= late.skipped + 4, "{late:?}");
    assert_eq!(late.max, Duration::from_secs(1) - TICK);
    assert!(room.mixer.poll_timeout().expect("a tick") > room.now);
}
