//! Consumer positions kept durably in an embedded database (`redb`): the
//! next offset to process, per `(consumer or group, partition)`, with the
//! id of the log it belongs to.
//!
//! # Guarantees
//! - [`OffsetStore::commit`] returns after redb's commit (an fsync of its
//!   file): a position that was committed survives a crash of the
//!   process and of the machine.
//! - Several positions committed together ([`OffsetStore::commit_all`])
//!   are one transaction: all or none.
//!
//! # Not guaranteed
//! One process opens a store at a time (redb locks the file; a second
//! opener gets [`OffsetError::Db`]). A position is only as good as the
//! handler that processed the records before it was committed: commit
//! after processing, never before.

use std::path::Path;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

/// `(owner, partition)` → `(log id, next offset)`.
const POSITIONS: TableDefinition<(&str, u32), (u64, u64)> = TableDefinition::new("positions");

/// Where a consumer stands in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The log it belongs to (a stream recreated under the same name has
    /// a new id: its old positions do not apply).
    pub log_id: u64,
    /// The next offset to process: every record before it was processed.
    pub next: u64,
}

/// Why the offset store failed.
#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    /// The database refused (open, read, write or commit); the message
    /// names the file.
    #[error("offset store {path}: {source}")]
    Db {
        /// The store's file.
        path: String,
        /// redb's error.
        #[source]
        source: Box<redb::Error>,
    },
}

/// A durable map of consumer positions. Cheap to clone (one database).
#[derive(Clone)]
pub struct OffsetStore {
    db: Arc<redb::Database>,
    path: Arc<str>,
}

impl std::fmt::Debug for OffsetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffsetStore")
            .field("path", &self.path)
            .finish()
    }
}

impl OffsetStore {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, OffsetError> {
        let name: Arc<str> = Arc::from(path.display().to_string());
        let err = |e: redb::Error| OffsetError::Db {
            path: name.to_string(),
            source: Box::new(e),
        };
        let db = redb::Database::create(path).map_err(|e| err(e.into()))?;
        // Create the table so that reads never meet a missing one.
        let txn = db.begin_write().map_err(|e| err(e.into()))?;
        txn.open_table(POSITIONS).map_err(|e| err(e.into()))?;
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(OffsetStore {
            db: Arc::new(db),
            path: name,
        })
    }

    fn err(&self, e: impl Into<redb::Error>) -> OffsetError {
        OffsetError::Db {
            path: self.path.to_string(),
            source: Box::new(e.into()),
        }
    }

    /// The committed position of `owner` in `partition`, if any.
    pub fn get(&self, owner: &str, partition: u32) -> Result<Option<Position>, OffsetError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(POSITIONS).map_err(|e| self.err(e))?;
        let v = table.get((owner, partition)).map_err(|e| self.err(e))?;
        Ok(v.map(|g| {
            let (log_id, next) = g.value();
            Position { log_id, next }
        }))
    }

    /// Commits `position` for `owner` in `partition`, durably.
    pub fn commit(
        &self,
        owner: &str,
        partition: u32,
        position: Position,
    ) -> Result<(), OffsetError> {
        self.commit_all(owner, &[(partition, position)])
    }

    /// Commits several partitions' positions for `owner` in one
    /// transaction.
    pub fn commit_all(
        &self,
        owner: &str,
        positions: &[(u32, Position)],
    ) -> Result<(), OffsetError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(POSITIONS).map_err(|e| self.err(e))?;
            for (p, pos) in positions {
                table
                    .insert((owner, *p), (pos.log_id, pos.next))
                    .map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_survive_reopening_and_are_kept_per_owner_and_partition() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets.redb");
        {
            let s = OffsetStore::open(&path).unwrap();
            assert_eq!(s.get("billing", 0).unwrap(), None);
            s.commit(
                "billing",
                0,
                Position {
                    log_id: 9,
                    next: 41,
                },
            )
            .unwrap();
            s.commit_all(
                "audit",
                &[
                    (0, Position { log_id: 9, next: 3 }),
                    (1, Position { log_id: 9, next: 5 }),
                ],
            )
            .unwrap();
            s.commit(
                "billing",
                0,
                Position {
                    log_id: 9,
                    next: 42,
                },
            )
            .unwrap();
        }
        let s = OffsetStore::open(&path).unwrap();
        assert_eq!(
            s.get("billing", 0).unwrap(),
            Some(Position {
                log_id: 9,
                next: 42
            })
        );
        assert_eq!(s.get("audit", 1).unwrap().unwrap().next, 5);
        assert_eq!(s.get("billing", 1).unwrap(), None);
    }

    #[test]
    fn a_file_that_is_not_a_store_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.redb");
        std::fs::write(&path, b"this is not a redb file, not at all, no").unwrap();
        let e = OffsetStore::open(&path).unwrap_err();
        assert!(e.to_string().contains("junk.redb"), "{e}");
    }
}
