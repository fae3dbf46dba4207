//! RFC 2782 SRV ordering: ascending priority, weighted random selection
//! within a priority.

use hickory_proto::rr::rdata::SRV;
use rand::Rng;

/// RFC 2782 ordering: ascending priority; within a priority, weighted random
/// selection (zero-weight entries first in the pool, so they are picked only
/// when the running sum reaches them — rarely when others have weight).
pub fn order_srv<R: Rng + ?Sized>(mut records: Vec<SRV>, rng: &mut R) -> Vec<SRV> {
    records.sort_by_key(|s| (s.priority, s.weight != 0));
    let mut out = Vec::with_capacity(records.len());
    let mut i = 0;
    while i < records.len() {
        let prio = records[i].priority;
        let mut j = i;
        while j < records.len() && records[j].priority == prio {
            j += 1;
        }
        let mut pool: Vec<SRV> = records[i..j].to_vec();
        while !pool.is_empty() {
            let total: u32 = pool.iter().map(|s| u32::from(s.weight)).sum();
            let pick = rng.random_range(0..=total);
            let mut running = 0u32;
            let mut chosen = pool.len() - 1;
            for (k, s) in pool.iter().enumerate() {
                running += u32::from(s.weight);
                if running >= pick {
                    chosen = k;
                    break;
                }
            }
            out.push(pool.remove(chosen));
        }
        i = j;
    }
    out
}
