use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::ring::{Ring, RingConfig};

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("address")
}

fn record(turn: &str, node: &str, allocations: u32) -> TurnRecord {
    TurnRecord {
        turn: addr(turn),
        node: addr(node),
        realm: "example.test".into(),
        allocations,
        max_allocations: 100,
    }
}

/// Ring address to round trip, in ms.
fn rtts(table: &[(&str, u64)]) -> impl Fn(SocketAddr) -> Option<Duration> {
    let table: Vec<(SocketAddr, Duration)> = table
        .iter()
        .map(|(a, ms)| (addr(a), Duration::from_millis(*ms)))
        .collect();
    move |a| table.iter().find(|(t, _)| *t == a).map(|(_, d)| *d)
}

#[test]
fn the_nearest_server_is_chosen_unless_its_load_outweighs_the_distance() {
    let now = Instant::now();
    let later = now + Duration::from_secs(30);
    let me = addr("127.0.0.9:5060");
    let near = record("127.0.0.1:3478", "127.0.0.1:5060", 0);
    let far = record("127.0.0.2:3478", "127.0.0.2:5060", 0);
    let rtt = rtts(&[("127.0.0.1:5060", 5), ("127.0.0.2:5060", 20)]);
    let known = vec![(far.clone(), later), (near.clone(), later)];
    let choice = rank(&known, me, &rtt, now);
    assert_eq!(
        choice.chosen.as_ref().map(|r| r.record.turn),
        Some(near.turn)
    );
    assert_eq!(choice.relays.len(), 2);
    assert_eq!(choice.relays[0].rtt_ms, Some(5.0));
    // Half full: 5 + 25 ms against 20 ms.
    let busy = record("127.0.0.1:3478", "127.0.0.1:5060", 50);
    let known = vec![(far.clone(), later), (busy, later)];
    let choice = rank(&known, me, &rtt, now);
    assert_eq!(choice.chosen.map(|r| r.record.turn), Some(far.turn));
    assert!((choice.relays[1].load - 0.5).abs() < 1e-9);
}

#[test]
fn full_servers_are_never_chosen_and_expired_ones_are_gone() {
    let now = Instant::now();
    let me = addr("127.0.0.9:5060");
    let full = record("127.0.0.1:3478", "127.0.0.1:5060", 100);
    let gone = record("127.0.0.2:3478", "127.0.0.2:5060", 0);
    let rtt = rtts(&[("127.0.0.1:5060", 1), ("127.0.0.2:5060", 1)]);
    let known = vec![(full.clone(), now + Duration::from_secs(5)), (gone, now)];
    let choice = rank(&known, me, &rtt, now);
    assert_eq!(choice.chosen, None);
    assert_eq!(choice.relays.len(), 1, "the expired one is left out");
    assert_eq!(choice.relays[0].record, full);
}

#[test]
fn this_node_is_nearest_and_unmeasured_nodes_rank_last() {
    let now = Instant::now();
    let later = now + Duration::from_secs(30);
    let me = addr("127.0.0.1:5060");
    let mine = record("127.0.0.1:3478", "127.0.0.1:5060", 10);
    let unknown = record("127.0.0.3:3478", "127.0.0.3:5060", 0);
    let measured = record("127.0.0.2:3478", "127.0.0.2:5060", 0);
    let rtt = rtts(&[("127.0.0.2:5060", 300)]);
    let known = vec![
        (unknown.clone(), later),
        (measured.clone(), later),
        (mine.clone(), later),
    ];
    let choice = rank(&known, me, &rtt, now);
    let order: Vec<SocketAddr> = choice.relays.iter().map(|r| r.record.turn).collect();
    assert_eq!(order, vec![mine.turn, measured.turn, unknown.turn]);
    assert_eq!(choice.relays[0].rtt_ms, Some(0.0));
    assert_eq!(choice.relays[2].rtt_ms, None);
}

/// Runs the ring's events into `relays` until it has none.
fn drain(ring: &mut Ring, relays: &mut [&mut Relays], now: Instant) {
    for _ in 0..100 {
        let Some(event) = ring.poll_event() else {
            return;
        };
        for r in relays.iter_mut() {
            r.on_ring_event(&event, now);
        }
    }
}

#[test]
fn an_advertisement_is_found_through_the_ring_and_expires_without_refreshes() {
    let t0 = Instant::now();
    let every = Duration::from_secs(1);
    let node = addr("127.0.0.1:5060");
    let mut ring = Ring::new(node, RingConfig::default(), t0);
    let mut server = Relays::new(every, t0);
    server.advertise(
        record("127.0.0.1:3478", "127.0.0.1:5060", 0),
        every,
        1_000,
        t0,
    );
    assert_eq!(server.poll_timeout(), Some(t0));
    assert!(server.start_ops(&mut ring, t0));
    assert!(!server.start_ops(&mut ring, t0), "one round at a time");
    drain(&mut ring, &mut [&mut server], t0);
    assert_eq!(server.known().len(), 1);
    assert_eq!(server.poll_timeout(), Some(t0 + every));

    // Another asker: its first question starts a round.
    let mut asker = Relays::new(every, t0);
    asker.want(7, t0);
    assert_eq!(asker.poll_answered(), None);
    assert!(asker.start_ops(&mut ring, t0));
    drain(&mut ring, &mut [&mut asker], t0);
    assert_eq!(asker.poll_answered(), Some(7));
    let choice = rank(asker.known(), addr("127.0.0.2:5060"), |_| None, t0);
    assert_eq!(
        choice.chosen.map(|r| r.record.turn),
        Some(addr("127.0.0.1:3478"))
    );
    // Within the period the same set answers at once.
    asker.want(8, t0 + every / 2);
    assert_eq!(asker.poll_answered(), Some(8));

    // The load goes into the next round's advertisement.
    let t1 = t0 + every;
    server.set_load(40);
    assert!(server.start_ops(&mut ring, t1));
    drain(&mut ring, &mut [&mut server], t1);
    assert_eq!(server.known()[0].0.allocations, 40);

    // The server stops (it died): three periods later nobody finds it.
    server.stop();
    assert!(!server.start_ops(&mut ring, t1 + every));
    let t2 = t1 + every * 3 + Duration::from_millis(1);
    asker.want(9, t2);
    assert!(asker.start_ops(&mut ring, t2));
    drain(&mut ring, &mut [&mut asker], t2);
    assert_eq!(asker.poll_answered(), Some(9));
    let choice = rank(asker.known(), node, |_| None, t2);
    assert_eq!(choice, RelayChoice::default());
}

#[test]
fn a_withdrawn_advertisement_is_gone_at_once() {
    let t0 = Instant::now();
    let every = Duration::from_secs(10);
    let node = addr("127.0.0.1:5060");
    let mut ring = Ring::new(node, RingConfig::default(), t0);
    let mut server = Relays::new(every, t0);
    server.advertise(record("127.0.0.1:3478", "127.0.0.1:5060", 0), every, 1, t0);
    assert!(server.start_ops(&mut ring, t0));
    drain(&mut ring, &mut [&mut server], t0);
    assert_eq!(server.known().len(), 1);
    let (key, name) = server.withdraw(ring.me().id).expect("advertised");
    assert_eq!(server.withdraw(ring.me().id), None, "once");
    assert_eq!(server.poll_timeout(), None);
    ring.remove(key, name, t0);
    let mut asker = Relays::new(every, t0);
    asker.want(1, t0);
    assert!(asker.start_ops(&mut ring, t0));
    drain(&mut ring, &mut [&mut asker], t0);
    assert_eq!(asker.poll_answered(), Some(1));
    assert!(asker.known().is_empty(), "well before its expiry");
    // A node that never advertised has nothing to withdraw.
    assert_eq!(asker.withdraw(ring.me().id), None);
}

#[test]
fn a_node_still_joining_advertises_once_it_is_in_the_ring() {
    let t0 = Instant::now();
    let every = Duration::from_secs(30);
    let mut ring = Ring::new(addr("127.0.0.1:5060"), RingConfig::default(), t0);
    ring.join(addr("127.0.0.1:5070"), t0);
    assert!(ring.is_joining());
    let mut server = Relays::new(every, t0);
    server.advertise(record("127.0.0.1:3478", "127.0.0.1:5060", 0), every, 1, t0);
    assert!(!server.start_ops(&mut ring, t0));
    // Not a period later: a second later, and no busy loop meanwhile.
    assert_eq!(server.poll_timeout(), Some(t0 + RETRY));
}

#[test]
fn servers_spread_over_the_buckets() {
    let mut seen = [false; BUCKETS as usize];
    for i in 0..64u8 {
        let id = NodeId::of_addr(SocketAddr::from(([127, 0, 0, i], 5060)));
        seen[usize::from(bucket_of(id))] = true;
    }
    assert!(seen.iter().all(|s| *s));
    let keys: HashSet<NodeId> = (0..BUCKETS).map(key_of).collect();
    assert_eq!(keys.len(), usize::from(BUCKETS));
}
