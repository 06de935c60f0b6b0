//! Streams in memory: the recovery window every room keeps by default, and history with
//! `history_storage = "memory"`.
//!
//! Each room's stream has its own lock, held while it assigns an offset, keeps the message
//! and hands it to the hub, so deliveries of one room are in offset order and rooms never
//! wait for each other. A stream lives while its room has members here, and afterwards for
//! as long as it keeps a message or an idempotency key; then a sweep drops it, and the room
//! starts over in a new epoch.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use super::stored::{self, put_str, put_u64, Reader, Store};
use super::{
    check_since, wanted, BrokerError, HistoryPage, HistoryQuery, Inbound, Pending, Position,
    Publication, Published, StreamOptions,
};
use crate::hub::now_ms;
use crate::shards::Shards;

pub struct MemoryBroker {
    streams: Arc<Shards<Arc<str>, Arc<Stream>>>,
    inbound: OnceLock<Weak<dyn Inbound>>,
    /// Where windows are saved at a graceful shutdown (`None`: nothing goes to disk).
    data_dir: Option<PathBuf>,
    sweeper: OnceLock<()>,
    /// Set when the windows are taken at shutdown: a publish after it would get an offset
    /// the next start does not know, so it is refused.
    closing: std::sync::atomic::AtomicBool,
}

struct Stream {
    /// `State::epoch` and `State::offset`, readable without the lock (see
    /// [`MemoryBroker::position`]); the offset is stored before a publication is delivered.
    epoch: Arc<str>,
    top: AtomicU64,
    state: Mutex<State>,
}

impl Stream {
    fn new(st: State) -> Stream {
        Stream {
            epoch: st.epoch.clone(),
            top: AtomicU64::new(st.offset),
            state: Mutex::new(st),
        }
    }
}

/// The idempotency keys of a stream: boxed, and only while it has some, since most rooms are
/// never sent one (a room of its own per connection costs 72 bytes less).
#[derive(Default)]
struct Keys {
    /// Key → offset.
    offsets: HashMap<Arc<str>, u64>,
    /// (expiry in ms, key), in the order keys are forgotten in.
    expiry: VecDeque<(u64, Arc<str>)>,
}

struct State {
    epoch: Arc<str>,
    offset: u64,
    kept: VecDeque<Arc<Publication>>,
    /// The idempotency keys it remembers, if any.
    keys: Option<Box<Keys>>,
    /// Rooms on this node with members (0 or 1 for the one hub; counted to be safe).
    subscribers: usize,
    /// When it last published or was left by its last member (ms).
    last_active: u64,
    opts: StreamOptions,
    /// Dropped from the map: a caller that found it just before must look again.
    dead: bool,
}

impl State {
    fn new(opts: StreamOptions) -> State {
        State {
            epoch: crate::ids::random_token().into(),
            offset: 0,
            kept: VecDeque::new(),
            keys: None,
            subscribers: 0,
            last_active: now_ms(),
            opts,
            dead: false,
        }
    }

    fn trim(&mut self, now: u64) {
        while self.kept.len() > self.opts.size {
            self.kept.pop_front();
        }
        while self
            .kept
            .front()
            .is_some_and(|p| p.ts.saturating_add(self.opts.ttl_ms) < now)
        {
            self.kept.pop_front();
        }
        if let Some(keys) = &mut self.keys {
            while let Some((at, _)) = keys.expiry.front() {
                if *at > now {
                    break;
                }
                if let Some((_, key)) = keys.expiry.pop_front() {
                    keys.offsets.remove(&key);
                }
            }
            if keys.expiry.is_empty() {
                self.keys = None;
            }
        }
    }

    /// The offset a key was published at, if it is remembered.
    fn key_offset(&self, key: &str) -> Option<u64> {
        self.keys.as_ref()?.offsets.get(key).copied()
    }

    /// Remembers `key` as published at `offset` until `expires` (ms).
    fn remember_key(&mut self, key: Arc<str>, offset: u64, expires: u64) {
        let keys = self.keys.get_or_insert_with(Box::default);
        keys.offsets.insert(key.clone(), offset);
        keys.expiry.push_back((expires, key));
    }

    fn position(&self) -> Position {
        Position {
            epoch: self.epoch.clone(),
            offset: self.offset,
        }
    }

    /// Whether nothing needs it any more: no members, nothing kept, no key remembered.
    fn idle(&self, now: u64) -> bool {
        self.subscribers == 0
            && self.kept.is_empty()
            && self.keys.is_none()
            && (!self.opts.keeps() || self.last_active.saturating_add(self.opts.ttl_ms) < now)
    }

    fn page(&self, query: &HistoryQuery) -> Result<HistoryPage, BrokerError> {
        let position = self.position();
        let first = self.kept.front().map_or(self.offset + 1, |p| p.offset);
        check_since(query, &position, first)?;
        let mut messages = Vec::new();
        if let Some((lo, hi)) = wanted(query, self.offset) {
            let in_range = |p: &&Arc<Publication>| p.offset >= lo && p.offset <= hi;
            if query.reverse {
                messages.extend(
                    self.kept
                        .iter()
                        .rev()
                        .filter(in_range)
                        .take(query.limit)
                        .cloned(),
                );
            } else {
                // Kept messages are contiguous: start at the first wanted one.
                let skip = lo.saturating_sub(first) as usize;
                messages.extend(
                    self.kept
                        .iter()
                        .skip(skip)
                        .filter(in_range)
                        .take(query.limit)
                        .cloned(),
                );
            }
        }
        Ok(HistoryPage { position, messages })
    }
}

impl MemoryBroker {
    pub fn new(data_dir: Option<PathBuf>) -> MemoryBroker {
        let shards = std::thread::available_parallelism().map_or(4, |n| n.get() * 8);
        MemoryBroker {
            streams: Arc::new(Shards::new(shards)),
            inbound: OnceLock::new(),
            data_dir,
            sweeper: OnceLock::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn attach(&self, inbound: Weak<dyn Inbound>) {
        let _ = self.inbound.set(inbound);
    }

    /// Runs `f` on the room's stream (made if there is none), under its lock.
    fn with_stream<T>(
        &self,
        room: &str,
        opts: StreamOptions,
        f: impl FnOnce(&Stream, &mut State) -> T,
    ) -> T {
        self.start_sweeper();
        loop {
            let stream = self.streams.get_or_insert_with(room, || {
                (room.into(), Arc::new(Stream::new(State::new(opts))))
            });
            let mut st = lock(&stream);
            if st.dead {
                continue;
            }
            st.opts = opts;
            return f(&stream, &mut st);
        }
    }

    pub fn publish(
        &self,
        room: &Arc<str>,
        mut publication: Publication,
        opts: StreamOptions,
    ) -> Pending<Published> {
        if self.closing.load(Ordering::Acquire) {
            return Pending::Ready(Err(super::BrokerError::Unavailable(
                "the server is shutting down".to_owned(),
            )));
        }
        let inbound = self.inbound.get().and_then(Weak::upgrade);
        Pending::Ready(Ok(self.with_stream(room, opts, |stream, st| {
            let now = now_ms();
            st.trim(now);
            if let Some(offset) = publication.key.as_deref().and_then(|k| st.key_offset(k)) {
                return Published {
                    epoch: st.epoch.clone(),
                    offset,
                    duplicate: true,
                };
            }
            st.offset += 1;
            // Before the delivery: see `position`.
            stream.top.store(st.offset, Ordering::Release);
            st.last_active = now;
            publication.offset = st.offset;
            let key: Option<Arc<str>> = publication.key.as_deref().map(Into::into);
            let publication = Arc::new(publication);
            if opts.keeps() {
                st.kept.push_back(publication.clone());
                st.trim(now);
            }
            if let Some(key) = key {
                let offset = st.offset;
                st.remember_key(key, offset, now.saturating_add(opts.key_window_ms));
            }
            // Under the stream's lock: the hub receives the room's messages in order.
            if let Some(inbound) = &inbound {
                inbound.deliver(room, &st.epoch, &publication);
            }
            Published {
                epoch: st.epoch.clone(),
                offset: st.offset,
                duplicate: false,
            }
        })))
    }

    pub fn history(
        &self,
        room: &str,
        query: HistoryQuery,
        opts: StreamOptions,
    ) -> Pending<HistoryPage> {
        if !query.open && self.streams.get(room).is_none() {
            // Nothing is kept for a room nobody uses: answer it empty, make nothing.
            return Pending::Ready(State::new(opts).page(&query));
        }
        Pending::Ready(self.with_stream(room, opts, |_, st| {
            st.trim(now_ms());
            st.page(&query)
        }))
    }

    /// The stream's position, read without its lock (so the hub may ask under a room lock).
    pub fn position(&self, room: &str) -> Option<Position> {
        let stream = self.streams.get(room)?;
        Some(Position {
            epoch: stream.epoch.clone(),
            offset: stream.top.load(Ordering::Acquire),
        })
    }

    pub fn subscribe(&self, room: &str, opts: StreamOptions) {
        self.with_stream(room, opts, |_, st| st.subscribers += 1);
    }

    pub fn unsubscribe(&self, room: &str) {
        let Some(stream) = self.streams.get(room) else {
            return;
        };
        let mut st = lock(&stream);
        st.subscribers = st.subscribers.saturating_sub(1);
        st.last_active = now_ms();
        if st.idle(st.last_active) {
            st.dead = true;
            self.streams.remove_if(room, |s| Arc::ptr_eq(s, &stream));
        }
    }

    /// Drops streams nothing needs any more, every second, from a background thread (the
    /// work is a pass over the rooms' streams, each locked briefly).
    fn start_sweeper(&self) {
        self.sweeper.get_or_init(|| {
            let streams = Arc::downgrade(&self.streams);
            let spawned = std::thread::Builder::new()
                .name("history-sweep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(1));
                    let Some(streams) = streams.upgrade() else {
                        return;
                    };
                    sweep(&streams);
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the history sweeper; idle rooms stay in memory");
            }
        });
    }

    /// The recovery windows, for saving at a graceful shutdown.
    pub fn windows(&self) -> Vec<(Arc<str>, Vec<u8>)> {
        self.closing.store(true, Ordering::Release);
        let now = now_ms();
        let mut out = Vec::new();
        for (name, stream) in self.streams.entries() {
            let mut st = lock(&stream);
            st.trim(now);
            // A position with nothing kept still tells a returning client it missed nothing
            // (a quiet room keeps its epoch across a restart too).
            if st.dead || !st.opts.keeps() {
                continue;
            }
            out.push((name, encode_window(&st)));
        }
        out
    }

    /// Saves the windows in `history.redb` (a graceful shutdown without durable rooms).
    pub fn shutdown(&self) {
        let Some(dir) = &self.data_dir else {
            return;
        };
        let windows = self.windows();
        if windows.is_empty() {
            return;
        }
        let saved = Store::open(dir).and_then(|s| {
            s.save_windows(&windows)
                .map_err(|e| format!("{}: {e}", s.path.display()))
        });
        match saved {
            Ok(()) => tracing::info!(rooms = windows.len(), "recovery windows saved"),
            Err(e) => tracing::warn!(error = %e, "cannot save recovery windows"),
        }
    }

    /// Reads back windows saved at the last graceful shutdown, if `dir` has a store.
    pub fn restore_from(&self, dir: &std::path::Path) -> Result<(), String> {
        match Store::open_existing(dir) {
            Ok(Some(store)) => {
                self.restore(store.take_windows()?);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) if e.contains("already open") => {
                tracing::warn!(error = %e, "recovery windows not restored: another process has the history store open");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub fn restore(&self, windows: Vec<(String, Vec<u8>)>) {
        let now = now_ms();
        let mut n = 0;
        for (room, blob) in windows {
            let Some(mut st) = decode_window(&blob) else {
                tracing::warn!(room, "a saved recovery window is unreadable; skipped");
                continue;
            };
            st.trim(now);
            if st.idle(now) {
                continue;
            }
            let room: Arc<str> = room.into();
            self.streams.insert(room, Arc::new(Stream::new(st)));
            n += 1;
        }
        if n > 0 {
            tracing::info!(rooms = n, "recovery windows restored");
        }
    }
}

fn lock(stream: &Stream) -> MutexGuard<'_, State> {
    // Stream state is changed in short sections that do not panic midway.
    stream.state.lock().unwrap_or_else(|e| e.into_inner())
}

fn sweep(streams: &Shards<Arc<str>, Arc<Stream>>) {
    let now = now_ms();
    for (name, stream) in streams.entries() {
        let mut st = lock(&stream);
        st.trim(now);
        if !st.dead && st.idle(now) {
            st.dead = true;
            streams.remove_if(&*name, |s| Arc::ptr_eq(s, &stream));
        }
    }
}

fn encode_window(st: &State) -> Vec<u8> {
    let mut b = Vec::new();
    put_str(&mut b, &st.epoch);
    for n in [
        st.offset,
        st.last_active,
        st.opts.size as u64,
        st.opts.ttl_ms,
        st.opts.key_window_ms,
        st.kept.len() as u64,
    ] {
        put_u64(&mut b, n);
    }
    let mut one = Vec::new();
    for p in &st.kept {
        put_u64(&mut b, p.offset);
        one.clear();
        stored::encode_publication(p, &mut one);
        b.extend_from_slice(&(one.len() as u32).to_le_bytes());
        b.extend_from_slice(&one);
    }
    let expiry = st.keys.as_ref().map(|k| &k.expiry);
    put_u64(&mut b, expiry.map_or(0, VecDeque::len) as u64);
    for (at, key) in expiry.into_iter().flatten() {
        put_str(&mut b, key);
        put_u64(&mut b, st.key_offset(key).unwrap_or(0));
        put_u64(&mut b, *at);
    }
    b
}

fn decode_window(b: &[u8]) -> Option<State> {
    let mut r = Reader(b);
    let epoch: Arc<str> = r.str()?.into();
    let offset = r.u64()?;
    let last_active = r.u64()?;
    let opts = StreamOptions {
        durable: false,
        size: r.u64()? as usize,
        ttl_ms: r.u64()?,
        key_window_ms: r.u64()?,
    };
    let mut st = State {
        epoch,
        offset,
        kept: VecDeque::new(),
        keys: None,
        subscribers: 0,
        last_active,
        opts,
        dead: false,
    };
    for _ in 0..r.u64()? {
        let at = r.u64()?;
        let p = stored::decode_publication(r.bytes()?, at)?;
        st.kept.push_back(Arc::new(p));
    }
    for _ in 0..r.u64()? {
        let key: Arc<str> = r.str()?.into();
        let at = r.u64()?;
        let expires = r.u64()?;
        st.remember_key(key, at, expires);
    }
    Some(st)
}
