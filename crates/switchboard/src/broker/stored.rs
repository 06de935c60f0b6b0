//! The history store: one redb file, `history.redb`, in the data directory.
//!
//! Tables:
//! - `rooms`: room → its stream's position and policy ([`Meta`]);
//! - `messages`: (room, offset) → one publication;
//! - `keys`: (room, idempotency key) → (offset, when the key is forgotten, ms);
//! - `windows`: room → a recovery window saved at a graceful shutdown, read back (and
//!   removed) at the next start.
//!
//! Writes are redb transactions committed with `Durability::Immediate`: when a commit
//! returns, the bytes are on disk; a failed commit leaves nothing of the transaction.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use bytes::Bytes;

use super::{Payload, Publication};

pub const FILE_NAME: &str = "history.redb";

pub const ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("history_rooms");
pub const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history_messages");
pub const KEYS: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("history_keys");
pub const WINDOWS: TableDefinition<&str, &[u8]> = TableDefinition::new("history_windows");

pub struct Store {
    /// Replaced by [`Store::reopen`] after a failed write (redb refuses every later write
    /// of a database that saw an I/O error).
    db: std::sync::RwLock<Database>,
    /// The file could not be opened again: nothing may be written until it can.
    broken: std::sync::atomic::AtomicBool,
    pub path: PathBuf,
}

/// A durable room's stream, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub epoch: Arc<str>,
    /// Offset of the last message.
    pub offset: u64,
    /// Offset of the oldest message kept (`offset + 1` when none is).
    pub first: u64,
    /// When the last message was published (ms).
    pub last_ts: u64,
    /// The policy the room was last written with (for the sweeper).
    pub size: u64,
    pub ttl_ms: u64,
    pub key_window_ms: u64,
}

/// Opens or creates a redb file. redb 4.5 can panic on a damaged file (an assertion in its
/// page allocator while it repairs a truncated one) instead of returning an error: that is
/// an error here too, so the caller can name the file.
pub(crate) fn open_redb(path: &Path) -> Result<Database, String> {
    std::panic::catch_unwind(|| Database::create(path))
        .map_err(|_| "the file is damaged (its store panicked opening it)".to_owned())?
        .map_err(|e| e.to_string())
}

impl Store {
    /// Opens (creating if needed) `dir/history.redb`, creating `dir` too.
    pub fn open(dir: &Path) -> Result<Store, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
        let path = dir.join(FILE_NAME);
        let db = open_redb(&path)
            .map_err(|e| format!("cannot open history store {}: {e}", path.display()))?;
        let store = Store {
            db: std::sync::RwLock::new(db),
            broken: std::sync::atomic::AtomicBool::new(false),
            path,
        };
        store
            .write(|txn| {
                txn.open_table(ROOMS)?;
                txn.open_table(MESSAGES)?;
                txn.open_table(KEYS)?;
                txn.open_table(WINDOWS)?;
                Ok(())
            })
            .map_err(|e| format!("cannot use history store {}: {e}", store.path.display()))?;
        Ok(store)
    }

    /// The database, for a transaction (held only while one is begun).
    pub fn db(&self) -> std::sync::RwLockReadGuard<'_, Database> {
        self.db.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the file again after a failed write, so that the store works again once the
    /// disk does (a full disk freed, say); redb checks and repairs the file as it opens.
    pub fn reopen(&self) -> Result<(), String> {
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        // The old handle must be closed before the file can be opened again.
        let placeholder = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| e.to_string())?;
        drop(std::mem::replace(&mut *db, placeholder));
        match open_redb(&self.path) {
            Ok(fresh) => {
                *db = fresh;
                self.broken
                    .store(false, std::sync::atomic::Ordering::Release);
                Ok(())
            }
            Err(e) => {
                // The placeholder holds no tables: reads fail, and writes are not tried.
                self.broken
                    .store(true, std::sync::atomic::Ordering::Release);
                Err(format!(
                    "cannot open history store {} again: {e}",
                    self.path.display()
                ))
            }
        }
    }

    /// Whether the last attempt to open the file again failed (see [`Store::reopen`]).
    pub fn broken(&self) -> bool {
        self.broken.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Opens `dir/history.redb` only if it exists.
    pub fn open_existing(dir: &Path) -> Result<Option<Store>, String> {
        if dir.join(FILE_NAME).exists() {
            Store::open(dir).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, redb::Error> {
        let txn = self.db().begin_write()?;
        let out = f(&txn)?;
        txn.commit()?;
        Ok(out)
    }

    /// The saved recovery windows, removed from the store in the same transaction (a window
    /// is good for one start only: after a crash, an old one would tell clients a position
    /// that later messages reused).
    pub fn take_windows(&self) -> Result<Vec<(String, Vec<u8>)>, String> {
        self.write(|txn| {
            let mut t = txn.open_table(WINDOWS)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_owned(), v.value().to_vec()));
            }
            t.retain(|_, _| false)?;
            Ok(out)
        })
        .map_err(|e| {
            format!(
                "cannot read recovery windows from {}: {e}",
                self.path.display()
            )
        })
    }

    pub fn save_windows(&self, windows: &[(Arc<str>, Vec<u8>)]) -> Result<(), redb::Error> {
        self.write(|txn| {
            let mut t = txn.open_table(WINDOWS)?;
            for (room, blob) in windows {
                t.insert(&**room, blob.as_slice())?;
            }
            Ok(())
        })
    }

    pub fn read_meta(&self, room: &str) -> Result<Option<Meta>, redb::Error> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(ROOMS)?;
        Ok(t.get(room)?.and_then(|v| decode_meta(v.value())))
    }

    /// Messages of `room` with offsets in `lo..=hi`, at most `limit`, latest first if
    /// `reverse`.
    pub fn read_messages(
        &self,
        room: &str,
        lo: u64,
        hi: u64,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Arc<Publication>>, redb::Error> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(MESSAGES)?;
        let range = t.range((room, lo)..=(room, hi))?;
        let mut out = Vec::new();
        let rows: Box<dyn Iterator<Item = _>> = if reverse {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        for row in rows {
            let (k, v) = row?;
            if let Some(p) = decode_publication(v.value(), k.value().1) {
                out.push(Arc::new(p));
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

pub fn encode_meta(m: &Meta) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    put_str(&mut b, &m.epoch);
    for n in [
        m.offset,
        m.first,
        m.last_ts,
        m.size,
        m.ttl_ms,
        m.key_window_ms,
    ] {
        b.extend_from_slice(&n.to_le_bytes());
    }
    b
}

pub fn decode_meta(b: &[u8]) -> Option<Meta> {
    let mut r = Reader(b);
    Some(Meta {
        epoch: r.str()?.into(),
        offset: r.u64()?,
        first: r.u64()?,
        last_ts: r.u64()?,
        size: r.u64()?,
        ttl_ms: r.u64()?,
        key_window_ms: r.u64()?,
    })
}

/// A publication as stored: ts, from, key, data (the offset is the key of its row). Bytes
/// (a binary publish) are stored as they are, followed by one byte [`BINARY`]; JSON is
/// stored as its text with nothing after it (as every row was before binary messages, so
/// rows written then read the same).
pub fn encode_publication(p: &Publication, b: &mut Vec<u8>) {
    b.extend_from_slice(&p.ts.to_le_bytes());
    put_str(b, &p.from);
    put_str(b, p.key.as_deref().unwrap_or(""));
    match &p.data {
        Payload::Json(data) => put_str(b, data),
        Payload::Binary(data) => {
            put_bytes(b, data);
            b.push(BINARY);
        }
    }
}

/// The marker after a binary publication's bytes.
const BINARY: u8 = 1;

pub fn decode_publication(b: &[u8], offset: u64) -> Option<Publication> {
    let mut r = Reader(b);
    let ts = r.u64()?;
    let from: Arc<str> = r.str()?.into();
    let key = r.str()?;
    let key = (!key.is_empty()).then(|| key.into());
    let data = r.bytes()?;
    let data = match r.0 {
        [] => Payload::Json(std::str::from_utf8(data).ok()?.into()),
        [BINARY] => Payload::Binary(Bytes::copy_from_slice(data)),
        _ => return None,
    };
    Some(Publication::from_parts(data, from, ts, key, offset))
}

pub fn put_bytes(b: &mut Vec<u8>, s: &[u8]) {
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s);
}

pub fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

pub fn put_u64(b: &mut Vec<u8>, n: u64) {
    b.extend_from_slice(&n.to_le_bytes());
}

/// Reads what `put_*` wrote; `None` on anything short or malformed.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*head))
    }

    pub fn str(&mut self) -> Option<&'a str> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        let n = u32::from_le_bytes(*head) as usize;
        if rest.len() < n {
            return None;
        }
        let (s, rest) = rest.split_at(n);
        self.0 = rest;
        std::str::from_utf8(s).ok()
    }

    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        let n = u32::from_le_bytes(*head) as usize;
        if rest.len() < n {
            return None;
        }
        let (s, rest) = rest.split_at(n);
        self.0 = rest;
        Some(s)
    }
}
