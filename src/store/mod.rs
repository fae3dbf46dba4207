//! The node's durable storage, the driver's side of it: one redb database
//! in the data directory (`--data`) holding the ring items this node holds
//! (primary and replica: bindings, credentials, the user directory, and
//! whatever kinds come later). The core stays sans-I/O: it hands out
//! [`Output::Persist`](crate::core::Output::Persist) with the items
//! changed, before the answers that accepted them; the driver commits them
//! here in one transaction (fsync'd) and only then sends. At start the
//! items are read back, the expired ones dropped, and the ring holds the
//! rest again (`Ring::restore`). In certificate mode the members'
//! certificates learnt are kept too ([`Output::PersistCerts`](crate::core::Output::PersistCerts)),
//! so that after a restart a copy of an item is believed before its writer
//! stores it again.

pub mod codec;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tracing::{info, warn};

use crate::ring::{Change, Item, NodeId};
use codec::{Clock, Decoded};

/// The database file in the data directory.
pub const FILE: &str = "store.redb";

/// Items by (key, name).
const ITEMS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("items");
/// Members' certificates (DER) by Node-ID (certificate mode): the keys
/// that signed the items held here, so that a copy is believed after a
/// restart before its writer stores it again. A member enrolled again
/// replaces its old certificate; each is checked again when read back.
const CERTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("certs");

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
#[error("store {path}: {source}")]
pub struct StoreError {
    path: String,
    #[source]
    source: redb::Error,
}

/// The open database.
pub struct Store {
    db: Database,
    path: String,
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let file = dir.join(FILE);
        let path = file.display().to_string();
        let db = Database::create(&file).map_err(|e| StoreError {
            path: path.clone(),
            source: e.into(),
        })?;
        let store = Store { db, path };
        // The table exists from the first start on, so a read never fails
        // for want of it.
        store.commit(&[], Clock::read())?;
        store.commit_certs(&[])?;
        Ok(store)
    }

    fn error(&self, source: impl Into<redb::Error>) -> StoreError {
        StoreError {
            path: self.path.clone(),
            source: source.into(),
        }
    }

    /// Writes the changes in one transaction, durable when this returns.
    pub fn commit(&self, changes: &[Change], clock: Clock) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut table = txn.open_table(ITEMS).map_err(|e| self.error(e))?;
            for change in changes {
                match change {
                    Change::Put(item) => {
                        let key = codec::key_of(&item.key, &item.name);
                        let value = codec::encode(item, clock);
                        table
                            .insert(key.as_slice(), value.as_slice())
                            .map_err(|e| self.error(e))?;
                    }
                    Change::Delete { key, name } => {
                        let key = codec::key_of(key, name);
                        table.remove(key.as_slice()).map_err(|e| self.error(e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| self.error(e))
    }

    /// Saves members' certificates by Node-ID, in one transaction.
    pub fn commit_certs(&self, certs: &[(NodeId, Arc<Vec<u8>>)]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut table = txn.open_table(CERTS).map_err(|e| self.error(e))?;
            for (id, der) in certs {
                table
                    .insert(id.0.as_slice(), der.as_slice())
                    .map_err(|e| self.error(e))?;
            }
        }
        txn.commit().map_err(|e| self.error(e))
    }

    /// The certificates saved (not checked here: the overlay checks each).
    pub fn load_certs(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(CERTS).map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for record in table.iter().map_err(|e| self.error(e))? {
            let (_, der) = record.map_err(|e| self.error(e))?;
            out.push(der.value().to_vec());
        }
        Ok(out)
    }

    /// The live items on disk; expired and unreadable records are deleted.
    pub fn load(&self, clock: Clock) -> Result<Vec<Item>, StoreError> {
        let mut live = Vec::new();
        let mut dead = Vec::new();
        {
            let txn = self.db.begin_read().map_err(|e| self.error(e))?;
            let table = txn.open_table(ITEMS).map_err(|e| self.error(e))?;
            for record in table.iter().map_err(|e| self.error(e))? {
                let (key, value) = record.map_err(|e| self.error(e))?;
                match codec::decode(key.value(), value.value(), clock) {
                    Decoded::Live(item) => live.push(item),
                    Decoded::Expired => dead.push(key.value().to_vec()),
                    Decoded::Garbled => {
                        warn!(path = %self.path, "dropping an unreadable record");
                        dead.push(key.value().to_vec());
                    }
                }
            }
        }
        if !dead.is_empty() {
            let txn = self.db.begin_write().map_err(|e| self.error(e))?;
            {
                let mut table = txn.open_table(ITEMS).map_err(|e| self.error(e))?;
                for key in &dead {
                    table.remove(key.as_slice()).map_err(|e| self.error(e))?;
                }
            }
            txn.commit().map_err(|e| self.error(e))?;
        }
        info!(path = %self.path, live = live.len(), expired = dead.len(), "items read back");
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ring::NodeId;

    fn item(name: &str, clock: Clock, ttl: u64) -> Item {
        Item {
            key: NodeId::of_key("bob@overlay.test"),
            name: name.into(),
            kind: "binding".into(),
            value: name.as_bytes().to_vec(),
            version: 1,
            expires: clock.now + Duration::from_secs(ttl),
            writer: NodeId::of_key("writer"),
            signature: Vec::new(),
            proof: None,
        }
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("p2psip-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn what_was_committed_is_there_after_reopening_and_deletes_stick() {
        let dir = scratch("reopen");
        let clock = Clock::read();
        {
            let store = Store::open(&dir).expect("open");
            let a = item("a", clock, 60);
            let b = item("b", clock, 60);
            let c = item("c", clock, 1);
            store
                .commit(&[Change::Put(a), Change::Put(b), Change::Put(c)], clock)
                .expect("commit");
            let gone = Change::Delete {
                key: NodeId::of_key("bob@overlay.test"),
                name: "b".into(),
            };
            store.commit(&[gone], clock).expect("commit");
        }
        let later = Clock {
            now: clock.now,
            wall_ms: clock.wall_ms + 2_000,
        };
        let store = Store::open(&dir).expect("reopen");
        let names: Vec<String> = store
            .load(later)
            .expect("load")
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, vec!["a".to_string()]);
        // The expired one was deleted on the way.
        let again = store.load(clock).expect("load");
        assert_eq!(again.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
