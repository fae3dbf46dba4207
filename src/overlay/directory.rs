//! The user directory of a domain in the ring: every registrar lists the
//! AORs it holds live bindings for, so that a cross-registering gateway can
//! learn the overlay's users. It is split over [`DIRECTORY_SHARDS`] keys,
//! so no one key holds (and no one answer carries) every user.

use std::time::Instant;

use super::Overlay;
use crate::registrar::binding::{Aor, Binding};
use crate::ring::{Item, NodeId};

/// The item kind of a user-directory entry.
pub const DIRECTORY_KIND: &str = "directory";

/// The directory of a domain is split over this many ring keys.
pub const DIRECTORY_SHARDS: u8 = 32;

/// The ring key of one shard of a domain's user directory.
pub fn directory_key(domain: &str, shard: u8) -> NodeId {
    NodeId::of_key(&format!("users:{domain}:{shard}"))
}

/// The directory shard an AOR is listed in.
pub fn directory_shard(aor: &Aor) -> u8 {
    NodeId::of_key(aor.as_str()).0[0] % DIRECTORY_SHARDS
}

impl Overlay {
    /// Keeps the domain's user directory up to date after a save: the AOR's
    /// entry lives as long as its latest binding, so it is stored again
    /// whenever that moves later than before (`previous_latest`: the latest
    /// expiry before this REGISTER, `None` when there was none).
    pub fn update_directory(
        &mut self,
        aor: &Aor,
        bindings: &[Binding],
        previous_latest: Option<Instant>,
        now: Instant,
    ) {
        let Some((_, domain)) = aor.as_str().rsplit_once('@') else {
            return;
        };
        let key = directory_key(domain, directory_shard(aor));
        match bindings.iter().map(|b| b.expires_at).max() {
            None => self.remove_item(key, aor.to_string(), now),
            Some(expires) if previous_latest.is_none_or(|p| expires > p) => self.store_item(
                Item {
                    key,
                    name: aor.to_string(),
                    kind: DIRECTORY_KIND.to_string(),
                    value: Vec::new(),
                    version: 0,
                    expires,
                    writer: Default::default(),
                    signature: Vec::new(),
                    proof: None,
                },
                now,
            ),
            Some(_) => {}
        }
    }
}
