//! Whole-node simulations (`p2psip::sim`): complete node cores in a ring,
//! scripted phones, a scripted legacy registrar and a DNS table on a
//! virtual network with a virtual clock. Every test is deterministic: one
//! seed, one script; each asserts on what the phones (or the registrar) saw.

use std::net::SocketAddr;
use std::time::Duration;

use p2psip::sim::{Action, Answer, LegacyRegistrar, World, WorldConfig};
use p2psip::sip::transaction::{Peer, TransportKind};
use p2psip_bridge::config::{CrossUsers, GatewayConfig, UpstreamConfig};
use rand::Rng;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

fn world(seed: u64, loss: f64) -> World {
    World::new(WorldConfig {
        seed,
        loss,
        ..WorldConfig::default()
    })
}

/// Adds one phone per user, each through a random node, and registers them all.
fn register_users(world: &mut World, users: &[&str]) -> Vec<usize> {
    let mut phones = Vec::new();
    for user in users {
        let node = world.random_live();
        phones.push(world.add_phone(user, node));
    }
    let ok = world.register_all(&phones, 600, secs(1), secs(30));
    assert_eq!(ok, phones.len(), "every phone registered");
    phones
}

/// Messages delivered to `addr` whose first line starts with `start`.
fn delivered_to(world: &World, addr: SocketAddr, start: &str) -> usize {
    let needle = format!("> {addr} {start}");
    world
        .trace
        .lines
        .iter()
        .filter(|l| l.contains(&needle))
        .count()
}

// ---------------------------------------------------------------- the big one

const NODES: usize = 50;
const USERS: usize = 200;
const OPS: usize = 1000;

#[derive(Debug, Default, PartialEq)]
struct Figures {
    calls: usize,
    answered: usize,
    hung_up: usize,
    messages: usize,
    delivered: usize,
    crashed: usize,
    reachable_users: usize,
    calls_after: usize,
    answered_after: usize,
    messages_after: usize,
    delivered_after: usize,
    hash: u64,
}

/// 50 nodes, 200 phones, 1,000 calls and messages; then 20% of the nodes
/// crash and another 500 go to users whose binding holders survived.
fn big_run(seed: u64) -> Figures {
    let mut world = world(seed, 0.0);
    world.grow(NODES, ms(20), secs(20));
    let names: Vec<String> = (0..USERS).map(|i| format!("u{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let phones = register_users(&mut world, &refs);

    let mut figures = Figures::default();
    let ops = |world: &mut World, n: usize, targets: &[usize], over: Duration| {
        let start = world.now();
        for _ in 0..n {
            let caller = phones[world.rng.random_range(0..phones.len())];
            let callee = loop {
                let c = targets[world.rng.random_range(0..targets.len())];
                if c != caller {
                    break c;
                }
            };
            let at =
                start + Duration::from_micros(world.rng.random_range(0..over.as_micros() as u64));
            let target = world.uri(&world.phones[callee].user.clone());
            let action = if world.rng.random_bool(0.7) {
                let hold = ms(world.rng.random_range(500..3000));
                Action::Call {
                    target,
                    hold: Some(hold),
                }
            } else {
                Action::Message {
                    target,
                    body: "hello".into(),
                }
            };
            world.schedule(at, caller, action);
        }
        world.run_for(over + secs(15));
    };
    let tally = |world: &World, since: Duration| {
        let (mut calls, mut answered, mut hung_up, mut messages, mut delivered) = (0, 0, 0, 0, 0);
        for p in &world.phones {
            for c in p.calls.iter().filter(|c| c.started >= since) {
                calls += 1;
                answered += usize::from(c.status == Some(200));
                hung_up += usize::from(c.bye_status == Some(200));
            }
            for m in p.sent.iter().filter(|m| m.at >= since) {
                messages += 1;
                delivered += usize::from(m.status == Some(200));
            }
        }
        (calls, answered, hung_up, messages, delivered)
    };

    let all: Vec<usize> = phones.clone();
    ops(&mut world, OPS, &all, secs(60));
    (
        figures.calls,
        figures.answered,
        figures.hung_up,
        figures.messages,
        figures.delivered,
    ) = tally(&world, Duration::ZERO);

    // A fifth of the nodes crash; their phones move to a live node.
    let before = world.live_nodes();
    let mut crashed = Vec::new();
    while crashed.len() < NODES / 5 {
        let n = world.random_live();
        world.crash(n);
        crashed.push(n);
    }
    figures.crashed = crashed.len();
    for p in phones.clone() {
        let proxy = world.phones[p].proxy;
        if crashed.iter().any(|n| world.nodes[*n].addr == proxy) {
            let n = world.random_live();
            world.phones[p].proxy = world.nodes[n].addr;
        }
    }
    world.run_for(secs(30));
    let survivors = world.live_nodes();
    let domain = world.config.domain.clone();
    let reachable: Vec<usize> = phones
        .iter()
        .copied()
        .filter(|p| {
            let aor = format!("{}@{domain}", world.phones[*p].user);
            world
                .holders(&aor, &before)
                .iter()
                .any(|h| survivors.contains(h))
        })
        .collect();
    figures.reachable_users = reachable.len();
    let since = world.now();
    ops(&mut world, OPS / 2, &reachable, secs(30));
    let (calls, answered, _, messages, delivered) = tally(&world, since);
    (
        figures.calls_after,
        figures.answered_after,
        figures.messages_after,
        figures.delivered_after,
    ) = (calls, answered, messages, delivered);
    figures.hash = world.trace_hash();
    eprintln!(
        "seed {seed}: {} messages delivered, {} dropped, {:?} virtual",
        world.trace.messages,
        world.dropped,
        world.now()
    );
    figures
}

#[test]
fn fifty_nodes_two_hundred_phones_a_thousand_calls_and_a_crash() {
    let started = std::time::Instant::now();
    let (a, b, c) = std::thread::scope(|s| {
        let a = s.spawn(|| big_run(1));
        let b = s.spawn(|| big_run(1));
        let c = big_run(2);
        (a.join().unwrap(), b.join().unwrap(), c)
    });
    eprintln!(
        "seed 1: {a:?}\nseed 2: {c:?}\nwall: {:?}",
        started.elapsed()
    );
    for f in [&a, &c] {
        assert!(f.calls > 600 && f.messages > 200, "{f:?}");
        assert!(
            f.answered * 100 >= f.calls * 99,
            "≥ 99% of calls answered: {f:?}"
        );
        assert!(f.hung_up * 100 >= f.answered * 99, "BYEs answered: {f:?}");
        assert_eq!(f.delivered, f.messages, "every MESSAGE 200: {f:?}");
        assert_eq!(f.crashed, NODES / 5);
        assert!(f.reachable_users >= USERS * 9 / 10, "{f:?}");
        assert!(
            f.answered_after * 100 >= f.calls_after * 99,
            "after the crash: {f:?}"
        );
        assert_eq!(
            f.delivered_after, f.messages_after,
            "MESSAGEs after the crash: {f:?}"
        );
    }
    assert_eq!(a, b, "one seed, one run");
    assert_ne!(a.hash, c.hash, "another seed, another run");
}

// ------------------------------------------------------------- proxy forking

/// A ring of 5; `carol` calls `dave`, who has a busy phone and one that answers.
fn forking(seed: u64, busy_q: Option<f32>, answer_q: Option<f32>) -> (World, usize, usize, usize) {
    let mut world = world(seed, 0.0);
    world.trace.keep_lines = true;
    world.grow(5, ms(20), secs(10));
    let carol = world.add_phone("carol", 0);
    let busy = world.add_phone("dave", 1);
    let answers = world.add_phone("dave", 2);
    world.phones[busy].answer = Answer::Busy;
    world.phones[busy].q = busy_q;
    world.phones[answers].q = answer_q;
    assert_eq!(
        world.register_all(&[carol, busy, answers], 600, secs(1), secs(30)),
        3
    );
    let target = world.uri("dave");
    world.call(carol, &target, None);
    world.run_for(secs(10));
    (world, carol, busy, answers)
}

#[test]
fn forking_parallel_busy_and_answer() {
    let (world, carol, busy, answers) = forking(11, None, None);
    let call = &world.phones[carol].calls[0];
    assert_eq!(call.status, Some(200), "{call:?}");
    assert_eq!(call.extra_2xx, 0);
    assert_eq!(
        world.phones[busy].incoming.len(),
        1,
        "the busy phone was tried"
    );
    assert_eq!(world.phones[answers].incoming.len(), 1);
    let carol_addr = world.phones[carol].addr;
    assert_eq!(
        delivered_to(&world, carol_addr, "SIP/2.0 486"),
        0,
        "486 not relayed"
    );
    // Same q: both branches start together.
    let gap = world.phones[answers].incoming[0]
        .at
        .abs_diff(world.phones[busy].incoming[0].at);
    assert!(gap < ms(100), "parallel: {gap:?}");
}

#[test]
fn forking_sequential_by_q() {
    let (world, carol, busy, answers) = forking(12, Some(1.0), Some(0.5));
    let call = &world.phones[carol].calls[0];
    assert_eq!(call.status, Some(200), "{call:?}");
    let (b, a) = (
        &world.phones[busy].incoming,
        &world.phones[answers].incoming,
    );
    assert_eq!((b.len(), a.len()), (1, 1));
    assert!(
        b[0].at < a[0].at,
        "the higher q first, then the other: {:?} {:?}",
        b[0].at,
        a[0].at
    );
    assert_eq!(
        delivered_to(&world, world.phones[carol].addr, "SIP/2.0 486"),
        0
    );
}

// ------------------------------------------------------------------- CANCEL

#[test]
fn cancel_during_lookup_and_while_ringing() {
    let mut world = World::new(WorldConfig {
        seed: 21,
        latency: ms(20)..=ms(30),
        ..WorldConfig::default()
    });
    world.grow(8, ms(20), secs(10));
    let all = world.live_nodes();
    let domain = world.config.domain.clone();
    // The caller's node holds no copy of the callee's bindings: the lookup
    // crosses the ring (at least one round trip of 40 ms or more).
    let holders = world.holders(&format!("gina@{domain}"), &all);
    let home = *all
        .iter()
        .find(|n| !holders.contains(n))
        .expect("a node that is no holder");
    let hank = world.add_phone("hank", home);
    let gina = world.add_phone("gina", holders[0]);
    world.phones[gina].answer = Answer::Ring {
        ring: ms(10),
        answer: secs(5),
    };
    assert_eq!(world.register_all(&[hank, gina], 600, secs(1), secs(30)), 2);
    world.run_for(secs(2));

    // During the lookup: the INVITE is at the node (≤ 30 ms), the CANCEL
    // follows 5 ms behind it, before the lookup can have come back.
    let target = world.uri("gina");
    let first = world.call(hank, &target, None);
    world.run_for(ms(31));
    world.cancel(hank, first);
    world.run_for(secs(5));
    let call = world.phones[hank].calls[first].clone();
    assert_eq!(call.status, Some(487), "{call:?}");
    assert_eq!(call.cancel_status, Some(200));
    assert_eq!(call.extra_2xx, 0);
    assert!(
        world.phones[gina].incoming.is_empty(),
        "never reached the callee"
    );

    // While ringing.
    let second = world.call(hank, &target, None);
    world.run_for(secs(2));
    assert_eq!(
        world.phones[hank].calls[second].provisional.last(),
        Some(&180)
    );
    world.cancel(hank, second);
    world.run_for(secs(10));
    let call = &world.phones[hank].calls[second];
    assert_eq!(call.status, Some(487), "{call:?}");
    assert_eq!(call.extra_2xx, 0, "no 200 after the 487");
    let incoming = &world.phones[gina].incoming;
    assert_eq!(incoming.len(), 1);
    assert!(incoming[0].cancelled, "the callee got the CANCEL");
}

// ------------------------------------------------------------------ Timer C

#[test]
fn timer_c_ends_a_call_that_rings_for_ever() {
    let mut world = world(31, 0.0);
    world.grow(4, ms(20), secs(10));
    let ivan = world.add_phone("ivan", 0);
    let judy = world.add_phone("judy", 1);
    world.phones[judy].answer = Answer::RingForever;
    assert_eq!(world.register_all(&[ivan, judy], 600, secs(1), secs(30)), 2);
    let call = world.call(ivan, &world.uri("judy"), None);
    world.run_for(secs(170));
    assert_eq!(
        world.phones[ivan].calls[call].status, None,
        "still ringing at 170 s"
    );
    world.run_for(secs(20));
    let call = &world.phones[ivan].calls[call];
    assert!(matches!(call.status, Some(408 | 480 | 487)), "{call:?}");
    let took = call.final_at.unwrap() - call.started;
    assert!(took >= secs(180) && took < secs(185), "Timer C: {took:?}");
    assert!(
        world.phones[judy].incoming[0].cancelled,
        "the branch was cancelled"
    );
}

// ------------------------------------------------------ the ring under loss

#[test]
fn registrations_and_calls_through_a_lossy_ring() {
    let mut world = world(41, 0.05);
    world.grow(10, ms(20), secs(20));
    let names: Vec<String> = (0..20).map(|i| format!("l{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let phones = register_users(&mut world, &refs);
    for k in 0..60 {
        let caller = phones[k % phones.len()];
        let callee = phones[(k * 7 + 3) % phones.len()];
        let target = world.uri(&world.phones[callee].user.clone());
        world.schedule(
            world.now() + ms(200 * k as u64),
            caller,
            Action::Call {
                target,
                hold: Some(secs(1)),
            },
        );
    }
    world.run_for(secs(60));
    let calls: Vec<_> = world.phones.iter().flat_map(|p| p.calls.iter()).collect();
    let answered = calls.iter().filter(|c| c.status == Some(200)).count();
    eprintln!(
        "lossy: {answered}/{} answered, {} dropped",
        calls.len(),
        world.dropped
    );
    assert!(world.dropped > 100, "the loss was real");
    assert!(
        answered * 100 >= calls.len() * 95,
        "{answered}/{}",
        calls.len()
    );
}

// ---------------------------------------------------- cross-registration

const LEGACY: &str = "127.0.9.1:5060";

#[test]
fn cross_registration_is_refreshed_then_removed() {
    let mut world = world(51, 0.0);
    let mut config = world.node_config(World::node_addr(0));
    config.gateway = GatewayConfig {
        domains: vec!["overlay.test".into()],
        upstream: Some(UpstreamConfig {
            registrar: LEGACY.into(),
            domain: "legacy.test".into(),
            username: Some("gateway".into()),
            password: Some("secret".into()),
            expires: 10,
            users: CrossUsers::All,
            overlay_domain: Some("overlay.test".into()),
        }),
        ..GatewayConfig::default()
    };
    world.add_node_with(config, None);
    world.add_registrar(LegacyRegistrar::new(
        LEGACY.parse().unwrap(),
        "legacy.test",
        "gateway",
    ));
    world.grow(3, ms(20), secs(10));
    let erin = world.add_phone("erin", 2);
    assert_eq!(world.register_all(&[erin], 60, secs(1), secs(30)), 1);
    world.run_for(secs(40));
    let legacy = &world.registrars[0];
    let seen: Vec<_> = legacy.seen.iter().filter(|s| s.user == "erin").collect();
    assert!(seen.iter().any(|s| s.status == 401), "challenged: {seen:?}");
    assert!(
        legacy.successful_registers("erin") >= 2,
        "registered and refreshed: {seen:?}"
    );
    assert!(!legacy.deregistered("erin"));

    world.act(erin, Action::Register(0));
    world.run_for(secs(30));
    let legacy = &world.registrars[0];
    assert!(
        legacy.deregistered("erin"),
        "Expires 0 after the binding went: {:?}",
        legacy.seen
    );
}

// --------------------------------------------------------- gateway failover

#[test]
fn a_foreign_call_fails_over_to_the_second_target() {
    let mut world = world(61, 0.0);
    world.grow(3, ms(20), secs(10));
    let kim = world.add_phone("kim", 0);
    assert_eq!(world.register_all(&[kim], 600, secs(1), secs(30)), 1);
    let dead: SocketAddr = "127.0.9.50:5060".parse().unwrap();
    let second: SocketAddr = "127.0.9.51:5060".parse().unwrap();
    let leo = world.add_phone_at(second, "leo", 0);
    let udp = |addr| Peer {
        transport: TransportKind::Udp,
        addr,
    };
    world
        .dns
        .insert("far.test".into(), vec![udp(dead), udp(second)]);
    let call = world.call(kim, "sip:leo@far.test", Some(secs(1)));
    world.run_for(secs(15));
    let call = &world.phones[kim].calls[call];
    assert_eq!(call.status, Some(200), "{call:?}");
    let took = call.final_at.unwrap() - call.started;
    assert!(took >= secs(2), "after FAILOVER_AFTER: {took:?}");
    assert_eq!(world.phones[leo].incoming.len(), 1);
    assert!(
        world.marked_dead.iter().any(|(_, a)| *a == dead),
        "{:?}",
        world.marked_dead
    );
}
