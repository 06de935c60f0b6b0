//! Streams on disk, in `history.redb`: history with `history_storage = "disk"` (the default).
//!
//! One writer thread owns every durable room's position. It takes publishes from a queue,
//! as many as are waiting, and writes them in one transaction: offsets assigned, messages
//! and idempotency keys stored, old messages trimmed. Only after the commit returns — the
//! bytes are on disk — are the messages delivered to the hub, in order, and their publishers
//! answered. A failed commit leaves nothing behind: the positions it would have advanced are
//! not advanced, and every publish of the batch is answered `unavailable`. Batching is what
//! keeps this fast: one disk flush per batch, however many publishes it holds.
//!
//! Reads (history, recovery) run on tokio's blocking pool against committed data, bounded
//! by the committed position, so a reader never sees a message before its publisher's `ok`
//! could have been sent.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use redb::{ReadableTable, Table};
use tokio::sync::oneshot;

use super::stored::{self, Meta, Store, KEYS, MESSAGES, ROOMS, WINDOWS};
use super::{
    check_since, wanted, BrokerError, HistoryPage, HistoryQuery, Inbound, Pending, Position,
    Publication, Published, StreamOptions, Unrecoverable,
};
use crate::hub::now_ms;

/// Operations that may wait for the writer.
const QUEUE: usize = 16 * 1024;
/// Most publishes written in one transaction.
const MAX_BATCH: usize = 512;
/// How often expired messages, keys and idle rooms are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

pub struct DurableBroker {
    tx: Mutex<mpsc::SyncSender<Op>>,
    shared: Arc<Shared>,
}

struct Shared {
    store: Store,
    /// Committed positions of the rooms in use.
    meta: Mutex<HashMap<Arc<str>, Meta>>,
    /// Rooms with members on this node: their positions are never swept.
    subscribed: Mutex<HashMap<Arc<str>, usize>>,
    inbound: OnceLock<Weak<dyn Inbound>>,
}

type Reply<T> = oneshot::Sender<Result<T, BrokerError>>;

enum Op {
    Publish {
        room: Arc<str>,
        publication: Publication,
        opts: StreamOptions,
        reply: Reply<Published>,
    },
    Open {
        room: Arc<str>,
        opts: StreamOptions,
        reply: Reply<Meta>,
    },
    Save {
        windows: Vec<(Arc<str>, Vec<u8>)>,
        done: mpsc::Sender<Result<(), String>>,
    },
}

/// What an op comes to once its transaction commits.
enum Outcome {
    Published(Reply<Published>, Arc<str>, Arc<Publication>, Arc<str>),
    Duplicate(Reply<Published>, Published),
    Opened(Reply<Meta>, Meta),
    Saved(mpsc::Sender<Result<(), String>>),
}

impl DurableBroker {
    pub fn start(store: Store) -> DurableBroker {
        let shared = Arc::new(Shared {
            store,
            meta: Mutex::new(HashMap::new()),
            subscribed: Mutex::new(HashMap::new()),
            inbound: OnceLock::new(),
        });
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let writer = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || run(&writer, &rx));
        if let Err(e) = spawned {
            // Publishes then fail with `unavailable` (their queue has no reader).
            tracing::error!(error = %e, "cannot start the history writer");
        }
        DurableBroker {
            tx: Mutex::new(tx),
            shared,
        }
    }

    pub fn attach(&self, inbound: Weak<dyn Inbound>) {
        let _ = self.shared.inbound.set(inbound);
    }

    /// Queues `op` for the writer; false if the writer is gone (the op is dropped, and
    /// its reply channel with it).
    fn send(&self, op: Op) -> bool {
        // A full queue (the disk is not keeping up) refuses the op: its caller answers
        // `unavailable` rather than holding memory without bound.
        lock(&self.tx).try_send(op).is_ok()
    }

    pub fn publish(
        &self,
        room: &Arc<str>,
        publication: Publication,
        opts: StreamOptions,
    ) -> Pending<Published> {
        let (reply, rx) = oneshot::channel();
        let op = Op::Publish {
            room: room.clone(),
            publication,
            opts,
            reply,
        };
        if self.send(op) {
            Pending::Waiting(rx)
        } else {
            Pending::Ready(Err(stopped()))
        }
    }

    pub fn history(
        &self,
        room: &str,
        query: HistoryQuery,
        opts: StreamOptions,
    ) -> Pending<HistoryPage> {
        let (reply, rx) = oneshot::channel();
        let room: Arc<str> = room.into();
        let cached = lock(&self.shared.meta).get(&room).cloned();
        let opened = match cached {
            Some(meta) => Ok(meta),
            None if !query.open => {
                // Read as it is stored; a room that does not exist is answered empty and
                // nothing is written for it.
                let shared = self.shared.clone();
                tokio::task::spawn_blocking(move || {
                    let read = match shared.store.read_meta(&room) {
                        Ok(Some(meta)) => read_page(&shared.store, &room, &meta, &query),
                        Ok(None) => {
                            read_page(&shared.store, &room, &new_meta(opts, now_ms()), &query)
                        }
                        Err(e) => Err(unavailable(&shared.store, &e)),
                    };
                    let _ = reply.send(read);
                });
                return Pending::Waiting(rx);
            }
            None => {
                let (open, opened) = oneshot::channel();
                let op = Op::Open {
                    room: room.clone(),
                    opts,
                    reply: open,
                };
                if !self.send(op) {
                    return Pending::Ready(Err(stopped()));
                }
                Err(opened)
            }
        };
        let shared = self.shared.clone();
        tokio::spawn(async move {
            // The writer's answer is awaited here, not on a blocking thread.
            let meta = match opened {
                Ok(meta) => meta,
                Err(opened) => match opened.await {
                    Ok(Ok(meta)) => meta,
                    Ok(Err(e)) => return drop(reply.send(Err(e))),
                    Err(_) => return drop(reply.send(Err(stopped()))),
                },
            };
            let read =
                tokio::task::spawn_blocking(move || read_page(&shared.store, &room, &meta, &query))
                    .await
                    .unwrap_or_else(|_| Err(stopped()));
            let _ = reply.send(read);
        });
        Pending::Waiting(rx)
    }

    /// The committed position, if the room is in use (cached).
    pub fn position(&self, room: &str) -> Option<Position> {
        lock(&self.shared.meta).get(room).map(|m| Position {
            epoch: m.epoch.clone(),
            offset: m.offset,
        })
    }

    pub fn subscribe(&self, room: &str, _opts: StreamOptions) {
        *lock(&self.shared.subscribed)
            .entry(room.into())
            .or_insert(0) += 1;
    }

    pub fn unsubscribe(&self, room: &str) {
        let mut subs = lock(&self.shared.subscribed);
        if let Some(n) = subs.get_mut(room) {
            *n -= 1;
            if *n == 0 {
                subs.remove(room);
            }
        }
    }

    /// Writes the memory brokers' recovery windows at a graceful shutdown, after every
    /// publish already queued.
    pub fn save_windows(&self, windows: Vec<(Arc<str>, Vec<u8>)>) {
        let (done, wait) = mpsc::channel();
        let n = windows.len();
        if !self.send(Op::Save { windows, done }) {
            return;
        }
        match wait.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) if n > 0 => tracing::info!(rooms = n, "recovery windows saved"),
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot save recovery windows"),
            Err(_) => tracing::warn!("the history store did not save the recovery windows in time"),
        }
    }
}

fn stopped() -> BrokerError {
    BrokerError::Unavailable("the history store is not running".to_owned())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A page of `room`'s history from committed data, bounded by the committed position.
fn read_page(
    store: &Store,
    room: &str,
    meta: &Meta,
    query: &HistoryQuery,
) -> Result<HistoryPage, BrokerError> {
    let position = Position {
        epoch: meta.epoch.clone(),
        offset: meta.offset,
    };
    check_since(query, &position, meta.first)?;
    let mut messages = Vec::new();
    if let Some((lo, hi)) = wanted(query, meta.offset) {
        messages = store
            .read_messages(room, lo, hi, query.limit, query.reverse)
            .map_err(|e| unavailable(store, &e))?;
        // Past its ttl a message is gone, whether or not a trim has removed it yet.
        let now = now_ms();
        messages.retain(|p| p.ts.saturating_add(meta.ttl_ms) >= now);
        // Trimmed since `meta` was read: what was asked for from `since` is gone (an empty
        // page included: it would pass for "nothing missed").
        if query.since.is_some() && !query.reverse && messages.first().map(|p| p.offset) != Some(lo)
        {
            return Err(BrokerError::Unrecoverable {
                reason: Unrecoverable::TooOld,
                position,
            });
        }
    }
    Ok(HistoryPage { position, messages })
}

fn unavailable(store: &Store, e: &dyn std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("history store {}: {e}", store.path.display()))
}

fn run(shared: &Shared, rx: &mpsc::Receiver<Op>) {
    let mut next_sweep = std::time::Instant::now() + SWEEP_EVERY;
    loop {
        // Swept every SWEEP_EVERY, busy or not.
        let now = std::time::Instant::now();
        if now >= next_sweep {
            if let Err(e) = sweep(shared) {
                tracing::warn!(error = %e, "history sweep failed");
            }
            next_sweep = now + SWEEP_EVERY;
        }
        let first = match rx.recv_timeout(next_sweep.saturating_duration_since(now)) {
            Ok(op) => op,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        write_batch(shared, batch);
    }
}

fn write_batch(shared: &Shared, batch: Vec<Op>) {
    let now = now_ms();
    let mut staged: HashMap<Arc<str>, Meta> = HashMap::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut ops = batch.into_iter();
    let result = (|| -> Result<(), redb::Error> {
        if shared.store.broken() {
            shared
                .store
                .reopen()
                .map_err(|e| redb::Error::Io(std::io::Error::other(e)))?;
        }
        let txn = shared.store.db().begin_write()?;
        {
            let mut rooms = txn.open_table(ROOMS)?;
            let mut messages = txn.open_table(MESSAGES)?;
            let mut keys = txn.open_table(KEYS)?;
            let cache = lock(&shared.meta).clone_for(&ops);
            for op in ops.by_ref() {
                match op {
                    Op::Open { room, opts, reply } => {
                        let meta = staged_meta(&mut staged, &cache, &rooms, &room, opts, now)?;
                        outcomes.push(Outcome::Opened(reply, meta.clone()));
                    }
                    Op::Publish {
                        room,
                        mut publication,
                        opts,
                        reply,
                    } => {
                        let meta = staged_meta(&mut staged, &cache, &rooms, &room, opts, now)?;
                        if let Some(key) = publication.key.as_deref() {
                            if let Some(v) = keys.get((&*room, key))? {
                                let (offset, expires) = v.value();
                                if expires > now {
                                    let published = Published {
                                        epoch: meta.epoch.clone(),
                                        offset,
                                        duplicate: true,
                                    };
                                    outcomes.push(Outcome::Duplicate(reply, published));
                                    continue;
                                }
                            }
                        }
                        meta.offset += 1;
                        meta.last_ts = now;
                        meta.size = opts.size as u64;
                        meta.ttl_ms = opts.ttl_ms;
                        meta.key_window_ms = opts.key_window_ms;
                        publication.offset = meta.offset;
                        let mut bytes = Vec::with_capacity(
                            publication.data.len() + publication.from.len() + 48,
                        );
                        stored::encode_publication(&publication, &mut bytes);
                        messages.insert((&*room, meta.offset), bytes.as_slice())?;
                        if let Some(key) = publication.key.as_deref() {
                            let expires = now.saturating_add(opts.key_window_ms);
                            keys.insert((&*room, key), (meta.offset, expires))?;
                        }
                        trim(&mut messages, &room, meta, now)?;
                        let epoch = meta.epoch.clone();
                        outcomes.push(Outcome::Published(
                            reply,
                            room,
                            Arc::new(publication),
                            epoch,
                        ));
                    }
                    Op::Save { windows, done } => {
                        let mut t = txn.open_table(WINDOWS)?;
                        for (room, blob) in &windows {
                            t.insert(&**room, blob.as_slice())?;
                        }
                        outcomes.push(Outcome::Saved(done));
                    }
                }
            }
            for (room, meta) in &staged {
                rooms.insert(&**room, stored::encode_meta(meta).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            lock(&shared.meta).extend(staged);
            let inbound = shared.inbound.get().and_then(Weak::upgrade);
            for outcome in outcomes {
                match outcome {
                    Outcome::Published(reply, room, publication, epoch) => {
                        if let Some(inbound) = &inbound {
                            inbound.deliver(&room, &epoch, &publication);
                        }
                        let _ = reply.send(Ok(Published {
                            epoch,
                            offset: publication.offset,
                            duplicate: false,
                        }));
                    }
                    Outcome::Duplicate(reply, published) => {
                        let _ = reply.send(Ok(published));
                    }
                    Outcome::Opened(reply, meta) => {
                        let _ = reply.send(Ok(meta));
                    }
                    Outcome::Saved(done) => {
                        let _ = done.send(Ok(()));
                    }
                }
            }
        }
        Err(e) => {
            let error = unavailable(&shared.store, &e);
            tracing::warn!(error = %e, file = %shared.store.path.display(), "history store write failed; its publishes were refused");
            // Nothing of the batch is stored; the next one tries a freshly opened file (a
            // failed database refuses every later write).
            if !shared.store.broken() {
                if let Err(e) = shared.store.reopen() {
                    tracing::warn!(error = %e, "history store stays unavailable");
                }
            }
            for outcome in outcomes {
                match outcome {
                    Outcome::Published(reply, ..) | Outcome::Duplicate(reply, _) => {
                        let _ = reply.send(Err(error.clone()));
                    }
                    Outcome::Opened(reply, _) => {
                        let _ = reply.send(Err(error.clone()));
                    }
                    Outcome::Saved(done) => {
                        let _ = done.send(Err(e.to_string()));
                    }
                }
            }
            for op in ops {
                match op {
                    Op::Publish { reply, .. } => drop(reply.send(Err(error.clone()))),
                    Op::Open { reply, .. } => drop(reply.send(Err(error.clone()))),
                    Op::Save { done, .. } => drop(done.send(Err(e.to_string()))),
                }
            }
        }
    }
}

trait CloneFor {
    fn clone_for(&self, ops: &std::vec::IntoIter<Op>) -> HashMap<Arc<str>, Meta>;
}

impl CloneFor for HashMap<Arc<str>, Meta> {
    /// The cached positions of the rooms a batch touches.
    fn clone_for(&self, ops: &std::vec::IntoIter<Op>) -> HashMap<Arc<str>, Meta> {
        let mut out = HashMap::new();
        for op in ops.as_slice() {
            let room = match op {
                Op::Publish { room, .. } | Op::Open { room, .. } => room,
                Op::Save { .. } => continue,
            };
            if let Some(m) = self.get(room) {
                out.insert(room.clone(), m.clone());
            }
        }
        out
    }
}

/// The room's position as this transaction sees it: staged by an earlier op of the batch,
/// cached, stored, or new (a new epoch).
fn staged_meta<'a>(
    staged: &'a mut HashMap<Arc<str>, Meta>,
    cache: &HashMap<Arc<str>, Meta>,
    rooms: &Table<&str, &[u8]>,
    room: &Arc<str>,
    opts: StreamOptions,
    now: u64,
) -> Result<&'a mut Meta, redb::Error> {
    if !staged.contains_key(room) {
        let meta = match cache.get(room) {
            Some(m) => m.clone(),
            None => match rooms.get(&**room)? {
                Some(v) => stored::decode_meta(v.value()).unwrap_or_else(|| new_meta(opts, now)),
                None => new_meta(opts, now),
            },
        };
        staged.insert(room.clone(), meta);
    }
    Ok(staged.get_mut(room).expect("inserted above"))
}

fn new_meta(opts: StreamOptions, now: u64) -> Meta {
    Meta {
        epoch: crate::ids::random_token().into(),
        offset: 0,
        first: 1,
        last_ts: now,
        size: opts.size as u64,
        ttl_ms: opts.ttl_ms,
        key_window_ms: opts.key_window_ms,
    }
}

/// Removes the room's messages beyond its size and past its ttl, oldest first.
fn trim(
    messages: &mut Table<(&str, u64), &[u8]>,
    room: &str,
    meta: &mut Meta,
    now: u64,
) -> Result<(), redb::Error> {
    while meta.first <= meta.offset {
        let over = meta.offset - meta.first + 1 > meta.size;
        if !over {
            let expired = match messages.get((room, meta.first))? {
                Some(v) => stored::Reader(v.value())
                    .u64()
                    .is_none_or(|ts| ts.saturating_add(meta.ttl_ms) < now),
                None => true,
            };
            if !expired {
                break;
            }
        }
        messages.remove((room, meta.first))?;
        meta.first += 1;
    }
    Ok(())
}

/// Removes expired messages and keys, and the positions of rooms that keep nothing any more
/// and have no members (they start over in a new epoch).
fn sweep(shared: &Shared) -> Result<(), redb::Error> {
    let now = now_ms();
    let subscribed: Vec<Arc<str>> = lock(&shared.subscribed).keys().cloned().collect();
    let mut dropped = Vec::new();
    let mut updated = Vec::new();
    let txn = shared.store.db().begin_write()?;
    {
        let mut rooms = txn.open_table(ROOMS)?;
        let mut messages = txn.open_table(MESSAGES)?;
        let mut keys = txn.open_table(KEYS)?;
        keys.retain(|_, v| v.1 > now)?;
        let all: Vec<(String, Meta)> = rooms
            .iter()?
            .filter_map(|row| {
                let (k, v) = row.ok()?;
                Some((k.value().to_owned(), stored::decode_meta(v.value())?))
            })
            .collect();
        for (room, mut meta) in all {
            let before = meta.first;
            trim(&mut messages, &room, &mut meta, now)?;
            let idle = meta.first > meta.offset
                && meta
                    .last_ts
                    .saturating_add(meta.ttl_ms.max(meta.key_window_ms))
                    < now
                && !subscribed.iter().any(|s| **s == *room);
            if idle {
                rooms.remove(&*room)?;
                dropped.push(room);
            } else if meta.first != before {
                rooms.insert(&*room, stored::encode_meta(&meta).as_slice())?;
                updated.push((room, meta));
            }
        }
    }
    txn.commit()?;
    let mut cache = lock(&shared.meta);
    for room in dropped {
        cache.remove(&*room);
    }
    for (room, meta) in updated {
        if let Some(m) = cache.get_mut(&*room) {
            m.first = meta.first;
        }
    }
    Ok(())
}
