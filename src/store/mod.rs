//! The node's durable storage, the driver's side of it: one redb database
//! in the data directory (`--data`) holding the ring items this node holds
//! (primary and replica: bindings, credentials, the user directory, and
//! whatever kinds come later), in front of it a write-ahead log
//! ([`log`]). The core stays sans-I/O: it hands out
//! [`Output::Persist`](crate::core::Output::Persist) with the items
//! changed, before the answers that accepted them; the driver commits them
//! here (appended to the log and synced) and only then sends. The log is
//! folded into the database in one transaction when it has grown past
//! [`FOLD_AT`], when the store is dropped at shutdown, and at start, before
//! the items are read back, the expired ones dropped, and the ring holds
//! the rest again (`Ring::restore`). In certificate mode the members'
//! certificates learnt are kept too ([`Output::PersistCerts`](crate::core::Output::PersistCerts)),
//! so that after a restart a copy of an item is believed before its writer
//! stores it again.

pub mod codec;
pub mod log;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tracing::{info, warn};

use crate::ring::{Change, Item, NodeId};
use codec::{Clock, Decoded};

/// The database file in the data directory.
pub const FILE: &str = "store.redb";

/// The log is folded into the database once it holds this many bytes, or
/// as many as the database file, whichever is more. A fold rewrites about
/// every page its records land on, up to the whole database when they are
/// many, so letting the log grow with the database keeps the cost of
/// folding per REGISTER the same however many users a node holds (the
/// rule of log-structured stores); the records waiting in memory for a
/// fold are then at most about the database's size, and 8 MB (some twenty
/// thousand bindings) while it is small.
pub const FOLD_AT: u64 = 8 << 20;

/// Items by (key, name).
const ITEMS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("items");
/// Members' certificates (DER) by Node-ID (certificate mode): the keys
/// that signed the items held here, so that a copy is believed after a
/// restart before its writer stores it again. A member enrolled again
/// replaces its old certificate; each is checked again when read back.
const CERTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("certs");

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Database {
        path: String,
        #[source]
        source: redb::Error,
    },
    #[error("store log {path}: {source}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The open database and its log.
pub struct Store {
    db: Database,
    path: String,
    log: log::Log,
    /// What the log holds that the database does not yet, in the order
    /// written (sorted by key, the latest state of each, only at the fold:
    /// ordering on every commit cost more than the fold itself).
    unfolded: Vec<log::Record>,
    fold_at: u64,
    /// The database file's size after the last fold.
    db_bytes: u64,
    /// Whether dropping folds the log (tests turn it off to act a crash).
    fold_on_drop: bool,
}

impl Store {
    /// Opens (or creates) the database and its log in `dir`; what an
    /// earlier run left in the log is folded into the database first.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_folding_at(dir, FOLD_AT)
    }

    /// [`Store::open`], folding the log once it holds `fold_at` bytes.
    pub fn open_folding_at(dir: &Path, fold_at: u64) -> Result<Store, StoreError> {
        let file = dir.join(FILE);
        let path = file.display().to_string();
        let db = Database::create(&file).map_err(|e| StoreError::Database {
            path: path.clone(),
            source: e.into(),
        })?;
        let (log, records) = log::Log::open(dir).map_err(|e| StoreError::Log {
            path: dir.join(log::FILE).display().to_string(),
            source: e,
        })?;
        let replayed = records.len();
        let mut store = Store {
            db,
            path,
            log,
            unfolded: records,
            fold_at,
            db_bytes: 0,
            fold_on_drop: true,
        };
        if replayed > 0 {
            info!(path = %store.log.path().display(), records = replayed, "replaying the store log");
        }
        // Also creates the tables on the first start, so a read never
        // fails for want of them.
        store.fold()?;
        store.commit_certs(&[])?;
        Ok(store)
    }

    fn error(&self, source: impl Into<redb::Error>) -> StoreError {
        StoreError::Database {
            path: self.path.clone(),
            source: source.into(),
        }
    }

    fn log_error(&self, source: std::io::Error) -> StoreError {
        StoreError::Log {
            path: self.log.path().display().to_string(),
            source,
        }
    }

    /// Writes the changes, durable when this returns: appended to the log
    /// with one sync, and folded into the database when the log is full.
    pub fn commit(&mut self, changes: &[Change], clock: Clock) -> Result<(), StoreError> {
        let records: Vec<log::Record> = changes
            .iter()
            .map(|change| match change {
                Change::Put(item) => (
                    codec::key_of(&item.key, &item.name),
                    Some(codec::encode(item, clock)),
                ),
                Change::Delete { key, name } => (codec::key_of(key, name), None),
            })
            .collect();
        self.log.append(&records).map_err(|e| self.log_error(e))?;
        self.unfolded.extend(records);
        if self.log.len() >= self.fold_at.max(self.db_bytes) {
            self.fold()?;
        }
        Ok(())
    }

    /// Moves what the log holds into the database in one transaction, then
    /// empties the log. A crash between the two replays records the
    /// database already has, which changes nothing.
    pub fn fold(&mut self) -> Result<(), StoreError> {
        let records = self.unfolded.len();
        let started = std::time::Instant::now();
        // In key order (the B-tree's pages are then visited once each); a
        // stable sort keeps the order written among equal keys.
        self.unfolded.sort_by(|a, b| a.0.cmp(&b.0));
        // On an error the log and what waits for the fold stay as they
        // are: the next fold (or start) writes them.
        self.write_latest(&self.unfolded)?;
        self.unfolded.clear();
        if !self.log.is_empty() {
            let bytes = self.log.len();
            self.log.clear().map_err(|e| self.log_error(e))?;
            info!(
                records,
                log_bytes = bytes,
                ms = started.elapsed().as_millis(),
                "store log folded into the database"
            );
        }
        self.db_bytes = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        Ok(())
    }

    /// Writes records sorted by key in one transaction, of each key only
    /// its last.
    fn write_latest(&self, sorted: &[log::Record]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut table = txn.open_table(ITEMS).map_err(|e| self.error(e))?;
            for (at, (key, value)) in sorted.iter().enumerate() {
                if sorted.get(at + 1).is_some_and(|next| next.0 == *key) {
                    continue;
                }
                match value {
                    Some(value) => {
                        table
                            .insert(key.as_slice(), value.as_slice())
                            .map_err(|e| self.error(e))?;
                    }
                    None => {
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
    /// (Called after [`Store::open`], which leaves nothing in the log.)
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

impl Drop for Store {
    /// At shutdown the log is folded, so the next start replays nothing.
    fn drop(&mut self) {
        if self.log.is_empty() || !self.fold_on_drop {
            return;
        }
        if let Err(error) = self.fold() {
            warn!(%error, "could not fold the store log at shutdown; the next start replays it");
        }
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
            let mut store = Store::open(&dir).expect("open");
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

    #[test]
    fn a_crash_before_any_fold_loses_nothing_acknowledged() {
        let dir = scratch("crash");
        let clock = Clock::read();
        {
            let mut store = Store::open(&dir).expect("open");
            store
                .commit(&[Change::Put(item("a", clock, 60))], clock)
                .expect("commit");
            store
                .commit(
                    &[
                        Change::Put(item("b", clock, 60)),
                        Change::Delete {
                            key: NodeId::of_key("bob@overlay.test"),
                            name: "a".into(),
                        },
                    ],
                    clock,
                )
                .expect("commit");
            // A SIGKILL: no fold at shutdown, the records are only in the log.
            store.fold_on_drop = false;
        }
        assert!(std::fs::metadata(dir.join(log::FILE)).expect("log").len() > 0);
        let store = Store::open(&dir).expect("reopen");
        let names: Vec<String> = store
            .load(clock)
            .expect("load")
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, vec!["b".to_string()]);
        // Opening folded the log into the database and emptied it.
        assert_eq!(
            std::fs::metadata(dir.join(log::FILE)).expect("log").len(),
            0
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_log_is_folded_and_what_follows_the_fold_survives_a_crash() {
        let dir = scratch("fold");
        let clock = Clock::read();
        {
            let mut store = Store::open_folding_at(&dir, 1).expect("open");
            // As if the database were empty: the threshold is the least one.
            store.db_bytes = 0;
            store
                .commit(&[Change::Put(item("folded", clock, 60))], clock)
                .expect("commit");
            assert_eq!(
                std::fs::metadata(dir.join(log::FILE)).expect("log").len(),
                0,
                "past the threshold the log is folded at once"
            );
            store.fold_at = u64::MAX;
            store
                .commit(&[Change::Put(item("logged", clock, 60))], clock)
                .expect("commit");
            store.fold_on_drop = false;
        }
        let store = Store::open(&dir).expect("reopen");
        let mut names: Vec<String> = store
            .load(clock)
            .expect("load")
            .into_iter()
            .map(|i| i.name)
            .collect();
        names.sort();
        assert_eq!(names, vec!["folded".to_string(), "logged".to_string()]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
