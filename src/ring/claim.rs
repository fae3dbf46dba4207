//! The conditional store: a claim stores an item only if no live item of
//! its (key, name) is held — first come, first served across the ring. The
//! key's holder alone decides (it is the one node every claimant's route
//! ends at), then replicates the winner like any store; a node that is not
//! the key's holder refuses, and the claimant routes again. Sign-up claims
//! a user's credentials this way (`docs/services.md`).

use std::time::Instant;

use super::ops::OpKind;
use super::{Item, NodeId, OpId, Refusal, Ring};

impl Ring {
    /// Stores `item` at its key's holder unless a live item of the same
    /// (key, name) is held there; ends in
    /// [`RingEvent::StoreDone`](super::RingEvent::StoreDone), refused
    /// [`Refusal::Taken`] when somebody was first. Written and signed in
    /// this node's name as [`store`](Self::store) does, but kept here (to be
    /// stored again should its holder die) only once it won.
    pub fn claim(&mut self, mut item: Item, now: Instant) -> OpId {
        item.writer = self.me.id;
        self.sign_item(&mut item, now);
        self.start_op(item.key, OpKind::Claim(item), now)
    }

    /// A claim from `sender` decided here: stored (and sent to the
    /// replicas), or why not.
    pub(super) fn claim_here(
        &mut self,
        sender: NodeId,
        item: Item,
        now: Instant,
    ) -> Result<(), Refusal> {
        if self.is_joining() {
            return Err(Refusal::NotJoined);
        }
        if !self.is_primary(item.key) {
            return Err(Refusal::NotHolder);
        }
        let held = self
            .storage
            .items
            .get(&item.key)
            .and_then(|l| l.get(&item.name));
        match held {
            Some(held) if held.expires > now => {
                // The same claim again (its answer was lost): it won.
                let again = held.writer == item.writer
                    && held.version == item.version
                    && held.value == item.value;
                return if again { Ok(()) } else { Err(Refusal::Taken) };
            }
            Some(_) => {
                // Expired, not purged yet: free, whatever its version.
                let name = item.name.clone();
                self.remove_local(item.key, &name);
            }
            None => {}
        }
        let (kept, refusal) = self.store_checked(sender, false, vec![item], now);
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        if kept.is_empty() {
            return Err(Refusal::Taken);
        }
        for to in self.replica_targets() {
            self.push_items(to, kept.clone(), now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::ring::sim::{Sim, SimConfig};
    use crate::ring::{Item, NodeId, Refusal, RingError, RingEvent};

    fn credential(value: &str, sim: &Sim) -> Item {
        Item {
            key: NodeId::of_key("carol@overlay.test"),
            name: "credential:carol@overlay.test".into(),
            kind: "credential".into(),
            value: value.as_bytes().to_vec(),
            version: 1,
            expires: sim.now() + Duration::from_secs(3600),
            writer: Default::default(),
            signature: Vec::new(),
            proof: None,
        }
    }

    fn ring_of(n: usize) -> Sim {
        let mut s = Sim::new(SimConfig::default());
        let first = s.add_node();
        for _ in 1..n {
            let next = s.add_node();
            s.join(next, first);
            s.run_for(Duration::from_secs(3));
        }
        s.run_for(Duration::from_secs(5));
        assert!(s.ring_consistent());
        s
    }

    fn outcome(s: &mut Sim, node: usize, op: crate::ring::OpId) -> Result<(), RingError> {
        match s.take_result(node, op) {
            Some(RingEvent::StoreDone { result, .. }) => result,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn two_claims_at_once_through_two_nodes_one_wins() {
        let mut s = ring_of(5);
        let a = s.claim(1, credential("first", &s));
        let b = s.claim(3, credential("second", &s));
        s.run_for(Duration::from_secs(2));
        let results = [outcome(&mut s, 1, a), outcome(&mut s, 3, b)];
        let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(won.len(), 1, "{results:?}");
        assert!(
            results.contains(&Err(RingError::Refused(Refusal::Taken))),
            "{results:?}"
        );
        // Every node that holds the record holds the winner's value.
        let winner = if results[0].is_ok() {
            "first"
        } else {
            "second"
        };
        let key = NodeId::of_key("carol@overlay.test");
        let copies: Vec<Vec<u8>> = s
            .nodes
            .iter()
            .flat_map(|n| n.ring.local_items(key))
            .map(|i| i.value)
            .collect();
        assert_eq!(copies.len(), 3, "the holder and two replicas");
        assert!(copies.iter().all(|v| v == winner.as_bytes()));
        // A later claim, even through the winner's node, is refused.
        let c = s.claim(1, credential("third", &s));
        s.run_for(Duration::from_secs(1));
        assert_eq!(
            outcome(&mut s, 1, c),
            Err(RingError::Refused(Refusal::Taken))
        );
    }

    #[test]
    fn a_claim_is_free_again_once_the_item_expired_and_repeats_are_no_loss() {
        let mut s = Sim::new(SimConfig::default());
        let a = s.add_node();
        let mut short = credential("first", &s);
        short.expires = s.now() + Duration::from_secs(1);
        let op = s.claim(a, short.clone());
        s.run_for(Duration::from_millis(10));
        assert_eq!(outcome(&mut s, a, op), Ok(()));
        // The same claim again (an answer lost): it still won.
        let mut again = short.clone();
        again.writer = s.nodes[a].ring.me().id;
        let now = s.now();
        assert_eq!(s.nodes[a].ring.claim_here(again.writer, again, now), Ok(()));
        s.run_for(Duration::from_secs(2));
        let op = s.claim(a, credential("second", &s));
        s.run_for(Duration::from_millis(10));
        assert_eq!(outcome(&mut s, a, op), Ok(()), "the first one expired");
        let key = NodeId::of_key("carol@overlay.test");
        let held = s.nodes[a].ring.local_items(key);
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].value, b"second");
    }

    #[test]
    fn a_node_that_is_not_the_holder_refuses_a_claim() {
        let mut s = ring_of(3);
        let key = NodeId::of_key("carol@overlay.test");
        let not_holder = (0..3)
            .find(|&n| !s.nodes[n].ring.is_primary(key))
            .expect("one of three is not the holder");
        let mut item = credential("x", &s);
        item.writer = s.nodes[not_holder].ring.me().id;
        let now = s.now();
        assert_eq!(
            s.nodes[not_holder].ring.claim_here(item.writer, item, now),
            Err(Refusal::NotHolder)
        );
    }
}
