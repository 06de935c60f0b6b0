//! The embedded document store: one redb file, `documents.redb`, in the data directory.
//!
//! A document is a snapshot (its whole state, one Yjs update) plus the updates accepted
//! since, each under `(document, sequence number)`. Every write is one redb transaction
//! committed with `Durability::Immediate` (the default): when a call returns `Ok`, the
//! bytes are on disk. Compaction replaces the snapshot and deletes the updates it merged, in
//! one transaction, so a crash leaves either the old pair or the new one.
//!
//! Calls block on disk I/O: the document owners run them on tokio's blocking pool.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition};

/// document name → its snapshot (a Yjs v1 update holding the whole state).
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("doc_snapshots");
/// (document name, sequence number) → one Yjs v1 update accepted after the snapshot.
const UPDATES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("doc_updates");

/// The file name inside the data directory.
pub const FILE_NAME: &str = "documents.redb";

pub struct Store {
    db: Database,
    path: PathBuf,
}

/// What the store holds for one document.
#[derive(Debug, Default)]
pub struct Stored {
    pub snapshot: Option<Vec<u8>>,
    /// In sequence order.
    pub updates: Vec<(u64, Vec<u8>)>,
}

impl Stored {
    pub fn bytes(&self) -> usize {
        self.snapshot.as_ref().map_or(0, Vec::len)
            + self.updates.iter().map(|(_, u)| u.len()).sum::<usize>()
    }

    /// The sequence number the next update gets.
    pub fn next_seq(&self) -> u64 {
        self.updates.last().map_or(0, |(seq, _)| seq + 1)
    }
}

impl Store {
    /// Opens (creating if needed) `dir/documents.redb`, creating `dir` too.
    pub fn open(dir: &Path) -> Result<Store, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
        let path = dir.join(FILE_NAME);
        let db = crate::broker::open_redb(&path)
            .map_err(|e| format!("cannot open document store {}: {e}", path.display()))?;
        let store = Store { db, path };
        // Create both tables up front, so that readers never meet a missing table.
        store
            .write(|txn| {
                txn.open_table(SNAPSHOTS)?;
                txn.open_table(UPDATES)?;
                Ok(())
            })
            .map_err(|e| format!("cannot initialise {}: {e}", store.path.display()))?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything stored for `doc` (nothing, for a new document).
    pub fn load(&self, doc: &str) -> Result<Stored, redb::Error> {
        let txn = self.db.begin_read()?;
        let snapshot = txn
            .open_table(SNAPSHOTS)?
            .get(doc)?
            .map(|v| v.value().to_vec());
        let mut updates = Vec::new();
        for entry in txn
            .open_table(UPDATES)?
            .range((doc, 0u64)..=(doc, u64::MAX))?
        {
            let (key, value) = entry?;
            updates.push((key.value().1, value.value().to_vec()));
        }
        Ok(Stored { snapshot, updates })
    }

    /// Stores `updates` under `first_seq`, `first_seq + 1`, ... in one durable transaction.
    pub fn append(
        &self,
        doc: &str,
        first_seq: u64,
        updates: &[Vec<u8>],
    ) -> Result<(), redb::Error> {
        self.write(|txn| {
            let mut table = txn.open_table(UPDATES)?;
            for (i, update) in updates.iter().enumerate() {
                table.insert((doc, first_seq + i as u64), update.as_slice())?;
            }
            Ok(())
        })
    }

    /// Replaces the snapshot of `doc` and deletes its updates up to `through_seq`, which the
    /// snapshot includes.
    pub fn compact(&self, doc: &str, snapshot: &[u8], through_seq: u64) -> Result<(), redb::Error> {
        self.write(|txn| {
            txn.open_table(SNAPSHOTS)?.insert(doc, snapshot)?;
            txn.open_table(UPDATES)?
                .retain_in((doc, 0u64)..=(doc, through_seq), |_, _| false)?;
            Ok(())
        })
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        f(&txn)?;
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_load_compact() {
        let dir = std::env::temp_dir().join(format!("sb-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        assert!(store.load("a").unwrap().snapshot.is_none());
        store.append("a", 0, &[vec![1], vec![2]]).unwrap();
        store.append("ab", 0, &[vec![9]]).unwrap();
        let a = store.load("a").unwrap();
        assert_eq!(a.updates, vec![(0, vec![1]), (1, vec![2])]);
        assert_eq!(a.next_seq(), 2);
        store.append("a", 2, &[vec![3]]).unwrap();
        store.compact("a", &[7, 7], 1).unwrap();
        let a = store.load("a").unwrap();
        assert_eq!(a.snapshot, Some(vec![7, 7]));
        assert_eq!(a.updates, vec![(2, vec![3])]);
        assert_eq!(store.load("ab").unwrap().updates, vec![(0, vec![9])]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
