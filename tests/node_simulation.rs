//! Whole-node simulations (`p2psip::sim`): complete node cores in a ring,
//! scripted phones and a scripted legacy registrar on a virtual network
//! with a virtual clock. Every test is deterministic: one seed, one script.

use std::time::Duration;

use p2psip::sim::{Answer, World, WorldConfig};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A ring of `nodes` and one phone per user, each registered through a random node.
fn world_with(seed: u64, nodes: usize, users: &[&str]) -> (World, Vec<usize>) {
    let mut world = World::new(WorldConfig {
        seed,
        ..WorldConfig::default()
    });
    world.grow(nodes, Duration::from_millis(20), secs(10));
    let mut phones = Vec::new();
    for user in users {
        let node = world.random_live();
        phones.push(world.add_phone(user, node));
    }
    let ok = world.register_all(&phones, 600, secs(1), secs(30));
    assert_eq!(ok, phones.len(), "every phone registered");
    (world, phones)
}

#[test]
fn smoke_call_and_message() {
    let (mut world, phones) = world_with(7, 5, &["alice", "bob"]);
    let bob = world.uri("bob");
    let c = world.call(phones[0], &bob, Some(secs(1)));
    world.message(phones[1], &world.uri("alice"), "hi");
    world.run_for(secs(10));
    let call = &world.phones[phones[0]].calls[c];
    for line in world.trace.outcomes.iter() {
        eprintln!("{line}");
    }
    assert_eq!(call.status, Some(200), "{call:?}");
    assert_eq!(call.bye_status, Some(200), "{call:?}");
    assert_eq!(world.phones[phones[1]].sent[0].status, Some(200));
    let _ = Answer::Busy;
}
