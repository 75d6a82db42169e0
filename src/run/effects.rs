//! The effect store of the `event_stream` pattern: a redb file on one node
//! (`effect_store = true`), keyed by a record's `(partition, offset)`,
//! served as [`APPLY`] (a consumer's handler records the effect of one
//! record) and [`SEEN`] (the load asks whether a record's effect is
//! there).
//!
//! # Guarantees
//! - Idempotent by `(partition, offset)`: the effect of a record is
//!   applied once, however often it is delivered; every delivery after
//!   the first is counted as a redelivery (`effect_redeliveries`).
//! - An apply is answered only once its transaction is committed: an
//!   answered effect survives a restart of the node (same file).
//!
//! # Not guaranteed
//! One store, not replicated; the figures (`effects`, `effect_deliveries`,
//! `effect_redeliveries`, `effects_applied_twice`) are read from the file
//! when the node's stats are taken.

use std::path::Path;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// The service a consumer's handler calls with an [`Apply`].
pub(crate) const APPLY: &str = "effects.apply";
/// The service the load calls with a [`Seen`].
pub(crate) const SEEN: &str = "effects.seen";

/// `(partition, offset)` → `(deliveries, applied)`.
const EFFECTS: TableDefinition<(u32, u64), (u64, u64)> = TableDefinition::new("effects");

/// Record the effect of one record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Apply {
    /// Its partition.
    pub(crate) partition: u32,
    /// Its offset.
    pub(crate) offset: u64,
}

/// Whether the effect of one record is there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Seen {
    /// Its partition.
    pub(crate) partition: u32,
    /// Its offset.
    pub(crate) offset: u64,
}

/// What an apply did.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The first delivery: the effect was applied now.
    pub(crate) first: bool,
}

/// Why the effect store failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EffectError {
    /// The redb file could not be opened, read or written.
    #[error("effect store: {0}")]
    Db(#[from] redb::Error),
    /// The store was closed ([`EffectStore::close`]): its node stopped.
    #[error("the effect store is closed")]
    Closed,
}

impl From<redb::DatabaseError> for EffectError {
    fn from(e: redb::DatabaseError) -> Self {
        EffectError::Db(e.into())
    }
}
impl From<redb::TransactionError> for EffectError {
    fn from(e: redb::TransactionError) -> Self {
        EffectError::Db(e.into())
    }
}
impl From<redb::TableError> for EffectError {
    fn from(e: redb::TableError) -> Self {
        EffectError::Db(e.into())
    }
}
impl From<redb::StorageError> for EffectError {
    fn from(e: redb::StorageError) -> Self {
        EffectError::Db(e.into())
    }
}
impl From<redb::CommitError> for EffectError {
    fn from(e: redb::CommitError) -> Self {
        EffectError::Db(e.into())
    }
}

/// What the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EffectCounts {
    /// Distinct records whose effect is there.
    pub(crate) effects: u64,
    /// Deliveries in all.
    pub(crate) deliveries: u64,
    /// Deliveries after a record's first.
    pub(crate) redeliveries: u64,
    /// Records whose effect was applied more than once (0 when the store
    /// is idempotent).
    pub(crate) applied_twice: u64,
}

/// The effect store.
#[derive(Clone)]
pub(crate) struct EffectStore {
    /// `None` once closed ([`EffectStore::close`]), so that a restart in
    /// the same process can open the file again.
    db: Arc<parking_lot::RwLock<Option<redb::Database>>>,
}

impl std::fmt::Debug for EffectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EffectStore").finish_non_exhaustive()
    }
}

impl EffectStore {
    /// Opens (or creates) the store at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, EffectError> {
        let db = redb::Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(EFFECTS)?;
        txn.commit()?;
        Ok(EffectStore {
            db: Arc::new(parking_lot::RwLock::new(Some(db))),
        })
    }

    /// Closes the file (calls after this fail with
    /// [`EffectError::Closed`]).
    pub(crate) fn close(&self) {
        self.db.write().take();
    }

    /// Records one delivery of `(partition, offset)`; applies its effect
    /// if it is the first.
    pub(crate) fn apply(&self, partition: u32, offset: u64) -> Result<Applied, EffectError> {
        let db = self.db.read();
        let txn = db.as_ref().ok_or(EffectError::Closed)?.begin_write()?;
        let first = {
            let mut t = txn.open_table(EFFECTS)?;
            let was = t.get((partition, offset))?.map(|v| v.value());
            let (deliveries, applied) = was.unwrap_or((0, 0));
            let first = applied == 0;
            t.insert(
                (partition, offset),
                (deliveries + 1, applied + u64::from(first)),
            )?;
            first
        };
        txn.commit()?;
        Ok(Applied { first })
    }

    /// Whether the effect of `(partition, offset)` is there.
    pub(crate) fn seen(&self, partition: u32, offset: u64) -> Result<bool, EffectError> {
        let db = self.db.read();
        let txn = db.as_ref().ok_or(EffectError::Closed)?.begin_read()?;
        let t = txn.open_table(EFFECTS)?;
        let seen = t.get((partition, offset))?.is_some();
        Ok(seen)
    }

    /// What it holds now.
    pub(crate) fn counts(&self) -> Result<EffectCounts, EffectError> {
        let db = self.db.read();
        let txn = db.as_ref().ok_or(EffectError::Closed)?.begin_read()?;
        let t = txn.open_table(EFFECTS)?;
        let mut c = EffectCounts {
            effects: t.len()?,
            ..EffectCounts::default()
        };
        for row in t.iter()? {
            let (_, v) = row?;
            let (deliveries, applied) = v.value();
            c.deliveries += deliveries;
            c.redeliveries += deliveries.saturating_sub(1);
            c.applied_twice += u64::from(applied > 1);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_delivered_twice_is_applied_once_and_counted_as_redelivered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.redb");
        let s = EffectStore::open(&path).unwrap();
        assert!(s.apply(0, 7).unwrap().first);
        assert!(!s.apply(0, 7).unwrap().first);
        assert!(s.apply(1, 7).unwrap().first);
        assert!(s.seen(0, 7).unwrap());
        assert!(!s.seen(0, 8).unwrap());
        let want = EffectCounts {
            effects: 2,
            deliveries: 3,
            redeliveries: 1,
            applied_twice: 0,
        };
        assert_eq!(s.counts().unwrap(), want);
        drop(s);
        // Survives a reopen.
        let s = EffectStore::open(&path).unwrap();
        assert_eq!(s.counts().unwrap(), want);
    }
}
