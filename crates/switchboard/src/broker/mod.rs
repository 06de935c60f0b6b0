//! The broker: where a room's messages get their positions, are kept, and come back from.
//!
//! The contract (centrifuge's shape): [`Broker::publish`] assigns a publication the room's
//! next offset in the room's epoch and keeps it in the room's stream for as long as the
//! room's [`StreamOptions`] say; [`Broker::history`] reads a stream, from a position or from
//! either end; and every publication reaches the hub through one inbound path,
//! [`Inbound::deliver`], in offset order — this node's own publishes too. A broker for many
//! nodes (Redis) implements the same trait, and one contract suite (`contract.rs`) runs
//! against every implementation.
//!
//! Calls never block: an answer that is not ready at once (a disk commit, a network round
//! trip) comes as [`Pending::Waiting`], which the caller awaits outside any lock. The hub
//! never calls its broker while it holds a room lock (but for [`Broker::presence`], which
//! only queues); brokers call [`Inbound::deliver`], which takes room locks, so this is the
//! one lock order there is.
//!
//! This node's brokers: [`memory`] keeps streams in memory (recovery windows, and history
//! with `history_storage = "memory"`); [`durable`] keeps them in `history.redb`, committed
//! before a publish is delivered or acknowledged. [`Local`] routes each room to one of them
//! by its options.

pub mod durable;
pub mod memory;
pub mod redis;
mod stored;
pub(crate) use stored::open_redb;

#[cfg(test)]
mod contract;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use switchboard_ws::Frame;
use tokio::sync::oneshot;

use crate::protocol::Out;

/// A position in a room's stream: the offset of the last message, in an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: Arc<str>,
    pub offset: u64,
}

/// What a publication carries: JSON text (a text `publish`'s `data`) or bytes (a binary
/// `publish`'s payload). Kept as it came, never re-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The message's JSON (`data`), as the publisher sent it.
    Json(Box<str>),
    /// The bytes of a binary publish.
    Binary(Bytes),
}

impl Payload {
    pub fn len(&self) -> usize {
        match self {
            Payload::Json(s) => s.len(),
            Payload::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_binary(&self) -> bool {
        matches!(self, Payload::Binary(_))
    }
}

/// One published message, the same for every protocol and every node: what the hub fans
/// out. Its encodings are made on first use and shared by every member that receives it.
pub struct Publication {
    /// The message's JSON or bytes, as the publisher sent them.
    pub data: Payload,
    /// The publisher as a member (`{"conn",..}`), or the server.
    pub from: Arc<str>,
    /// Milliseconds since the Unix epoch, when it was published.
    pub ts: u64,
    /// The publisher's idempotency key.
    pub key: Option<Box<str>>,
    /// Set by the broker.
    pub offset: u64,
    /// The connection (on this node) that asked not to receive its own message (`echo:
    /// false`); not kept in history.
    pub exclude: Option<u64>,
    /// The protocol v1 `message` frame, made once: a text frame for JSON, a binary frame
    /// (header + bytes) for bytes.
    v1: OnceLock<Frame>,
    /// A binary message's `message` object for lists in replies (base64 `data`), made once.
    listed: OnceLock<Box<str>>,
}

impl Publication {
    pub fn new(data: Payload, from: Arc<str>, key: Option<Box<str>>) -> Publication {
        Publication::from_parts(data, from, crate::hub::now_ms(), key, 0)
    }

    pub fn from_parts(
        data: Payload,
        from: Arc<str>,
        ts: u64,
        key: Option<Box<str>>,
        offset: u64,
    ) -> Publication {
        Publication {
            data,
            from,
            ts,
            key,
            offset,
            exclude: None,
            v1: OnceLock::new(),
            listed: OnceLock::new(),
        }
    }

    /// The protocol v1 `message` frame of this publication in `room`: for JSON the text
    /// frame `{"type":"message","room","data","from","offset","ts"}`; for bytes the binary
    /// frame of docs/protocol.md ("Binary messages"): a 4-byte big-endian header length,
    /// the header `{"type":"message","room","from","offset","ts"}`, then the bytes.
    pub fn v1_frame(&self, room: &str) -> &Frame {
        self.v1.get_or_init(|| match &self.data {
            Payload::Json(data) => {
                Out::with_capacity("message", data.len() + self.from.len() + room.len() + 64)
                    .str("room", room)
                    .raw("data", data)
                    .raw("from", &self.from)
                    .uint("offset", self.offset)
                    .uint("ts", self.ts)
                    .finish()
            }
            Payload::Binary(bytes) => {
                let header = Out::header("message", self.from.len() + room.len() + 64)
                    .str("room", room)
                    .raw("from", &self.from)
                    .uint("offset", self.offset)
                    .uint("ts", self.ts)
                    .finish_header();
                crate::protocol::binary_frame(&header, bytes)
            }
        })
    }

    /// The `message` object (the v1 text frame's payload), for lists of messages in
    /// replies. A binary message is listed with `"binary":true` and its bytes in base64 as
    /// `data` (a JSON reply cannot hold bytes; the marker tells it from a JSON string).
    pub fn v1_json(&self, room: &str) -> &str {
        if let Payload::Binary(bytes) = &self.data {
            return self.listed.get_or_init(|| {
                use base64::Engine as _;
                let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                Out::header("message", data.len() + self.from.len() + room.len() + 80)
                    .str("room", room)
                    .bool("binary", true)
                    .str("data", &data)
                    .raw("from", &self.from)
                    .uint("offset", self.offset)
                    .uint("ts", self.ts)
                    .finish_header()
                    .into_boxed_str()
            });
        }
        let bytes = self.v1_frame(room).as_bytes();
        // A server frame is unmasked: a 2-byte header, plus 2 or 8 bytes of length.
        let header = match bytes.get(1).map(|b| b & 0x7f) {
            Some(126) => 4,
            Some(127) => 10,
            _ => 2,
        };
        // The payload was written from a str by `Out`.
        std::str::from_utf8(&bytes[header.min(bytes.len())..]).unwrap_or("{}")
    }
}

/// How a room's stream is kept: from its namespace's options and the server's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Kept in `history.redb` (history with `history_storage = "disk"`), else in memory.
    pub durable: bool,
    /// Most messages kept; 0 keeps none (the position still lives while there are members).
    pub size: usize,
    /// How long each message is kept, in milliseconds.
    pub ttl_ms: u64,
    /// How long an idempotency key is remembered, in milliseconds.
    pub key_window_ms: u64,
}

impl StreamOptions {
    /// Whether the room keeps anything once its members are gone.
    pub fn keeps(&self) -> bool {
        self.size > 0
    }
}

/// The result of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub epoch: Arc<str>,
    pub offset: u64,
    /// The key was seen before: nothing was stored or delivered; `offset` is the first one's.
    pub duplicate: bool,
}

/// What [`Broker::history`] reads.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    /// Forward: the messages after this position; reverse: the ones before it.
    pub since: Option<Position>,
    /// Most messages; 0 reads only the position (and checks `since`).
    pub limit: usize,
    /// Latest first.
    pub reverse: bool,
    /// A member is joining: the room's position must exist (and, on disk, be stored) from
    /// now on. Without it a room that does not exist is read as empty and nothing is made.
    pub open: bool,
}

/// What [`Broker::history`] found: messages and the room's current position.
pub struct HistoryPage {
    pub position: Position,
    pub messages: Vec<Arc<Publication>>,
}

/// Why a `since` cannot be continued from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrecoverable {
    /// The room's epoch is another one: what `since` counted in is gone.
    EpochChanged,
    /// Messages after `since` are no longer kept.
    TooOld,
    /// `since` is ahead of the room.
    InvalidPosition,
}

impl Unrecoverable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unrecoverable::EpochChanged => "epoch_changed",
            Unrecoverable::TooOld => "too_old",
            Unrecoverable::InvalidPosition => "invalid_position",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerError {
    /// The position cannot be continued from; `position` is the room's current one.
    Unrecoverable {
        reason: Unrecoverable,
        position: Position,
    },
    /// The store or the network failed: nothing was stored or delivered.
    Unavailable(String),
}

/// An answer that may not be ready yet: `Ready` costs no allocation and no task switch.
pub enum Pending<T> {
    Ready(Result<T, BrokerError>),
    Waiting(oneshot::Receiver<Result<T, BrokerError>>),
}

impl<T> Pending<T> {
    pub async fn wait(self) -> Result<T, BrokerError> {
        match self {
            Pending::Ready(r) => r,
            Pending::Waiting(rx) => rx.await.unwrap_or_else(|_| {
                Err(BrokerError::Unavailable(
                    "the history store stopped".to_owned(),
                ))
            }),
        }
    }
}

/// A change to one of this node's members, for a broker that other nodes share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceChange {
    /// The member joined, or its presence changed: its member JSON (`{"conn",..}`).
    Set { conn: Arc<str>, member: Arc<str> },
    /// The member left.
    Remove { conn: Arc<str> },
}

/// A question every node answers (a shared broker's [`Broker::survey`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Survey {
    /// Close the connections of `user` (or the one connection `conn`); answer how many.
    Disconnect {
        user: Option<String>,
        conn: Option<String>,
        code: u16,
        reason: String,
    },
    /// Answer this node's counts.
    Info,
}

/// Where brokers hand publications to: the hub.
pub trait Inbound: Send + Sync + 'static {
    /// A publication of `room`, with its offset in `epoch`. Called in offset order per room,
    /// never concurrently for one room.
    fn deliver(&self, room: &str, epoch: &Arc<str>, publication: &Arc<Publication>);
    /// A member of `room` on another node joined or changed (`member` is its JSON) or left
    /// (`None`). Called in the order of the changes, for rooms this node is subscribed to.
    fn remote_presence(&self, _room: &str, _conn: &Arc<str>, _member: Option<&Arc<str>>) {}
    /// Every member of `room` on the other nodes, as `(conn, member JSON)`: replaces what
    /// was known of them (on subscribing, and again after a lost connection).
    fn remote_members(&self, _room: &str, _members: Vec<(Arc<str>, Arc<str>)>) {}
    /// This node's members of `room`, as `(conn, member JSON)`.
    fn local_members(&self, _room: &str) -> Vec<(Arc<str>, Arc<str>)> {
        Vec::new()
    }
    /// Publications of `room` were missed on this node and cannot be read back (Redis was
    /// away, or no longer keeps them): its members have a gap they must learn about.
    fn lost(&self, _room: &str) {}
    /// This node's answer to `survey` (JSON).
    fn answer(&self, _survey: &Survey) -> serde_json::Value {
        serde_json::Value::Null
    }
}

pub trait Broker: Send + Sync + 'static {
    /// Names the broker in logs and `/healthz`.
    fn name(&self) -> &'static str;
    /// Where publications go: called once, before any other call.
    fn attach(&self, inbound: Weak<dyn Inbound>);
    /// Gives `publication` the room's next offset, keeps it as `opts` say, delivers it
    /// (unless its `key` was seen within the key window) and answers its position.
    fn publish(
        &self,
        room: &Arc<str>,
        publication: Publication,
        opts: StreamOptions,
    ) -> Pending<Published>;
    /// Reads the room's stream: its position, and messages as `query` says.
    fn history(&self, room: &str, query: HistoryQuery, opts: StreamOptions)
        -> Pending<HistoryPage>;
    /// The room's position if it is known here without waiting (`None`: read it with
    /// [`history`](Broker::history)). May be called under a hub room lock: it takes no lock
    /// that is held while [`Inbound::deliver`] runs, and a publication it counts is either
    /// delivered already or not yet (its delivery waits for the caller's room lock).
    fn position(&self, room: &str) -> Option<Position>;
    /// The room has members on this node (the first joined): its publications must reach
    /// this node, and its position must live.
    fn subscribe(&self, room: &str, opts: StreamOptions);
    /// The last member on this node left.
    fn unsubscribe(&self, room: &str);
    /// A graceful shutdown: keep what can be kept for the next start.
    fn shutdown(&self);

    /// Whether other nodes share this broker: presence, member lists, room lists and
    /// disconnects then span every node.
    fn shared(&self) -> bool {
        false
    }
    /// One of this node's members of `room` joined, changed or left. Called under the
    /// room's lock, in the order of the changes: it only queues the change.
    fn presence(&self, _room: &str, _change: PresenceChange) {}
    /// Every member of `room` on every node, as `(join order, member JSON)` in join order
    /// (shared brokers; others answer an empty list: ask the hub).
    fn members(&self, _room: &str) -> Pending<Vec<(u64, Arc<str>)>> {
        Pending::Ready(Ok(Vec::new()))
    }
    /// Every room with members on some node, with its member count (shared brokers).
    fn rooms(&self) -> Pending<Vec<(Arc<str>, usize)>> {
        Pending::Ready(Ok(Vec::new()))
    }
    /// Asks every node (this one too) `survey`; answers `(node, answer)` for each node that
    /// answered in time (shared brokers; others answer nothing: ask the hub).
    fn survey(&self, _survey: Survey) -> Pending<Vec<(String, serde_json::Value)>> {
        Pending::Ready(Ok(Vec::new()))
    }
}

/// Reads `query` from a stream held as a sorted list of publications: the one rule of what
/// `since`, `limit` and `reverse` mean, shared by the brokers. `kept` are the kept messages
/// oldest first; `first` is the offset of the oldest kept (or `top + 1` when none).
pub(crate) fn check_since(
    query: &HistoryQuery,
    position: &Position,
    first: u64,
) -> Result<(), BrokerError> {
    let Some(since) = &query.since else {
        return Ok(());
    };
    let fail = |reason| {
        Err(BrokerError::Unrecoverable {
            reason,
            position: position.clone(),
        })
    };
    if since.epoch != position.epoch {
        return fail(Unrecoverable::EpochChanged);
    }
    if since.offset > position.offset {
        return fail(Unrecoverable::InvalidPosition);
    }
    if !query.reverse && since.offset + 1 < first && since.offset < position.offset {
        return fail(Unrecoverable::TooOld);
    }
    Ok(())
}

/// The offsets `query` asks for, as an inclusive range (`lo..=hi`) and a direction.
pub(crate) fn wanted(query: &HistoryQuery, top: u64) -> Option<(u64, u64)> {
    let (lo, hi) = match (&query.since, query.reverse) {
        (None, _) => (1, top),
        (Some(s), false) => (s.offset + 1, top),
        (Some(s), true) => (1, s.offset.saturating_sub(1)),
    };
    (query.limit > 0 && lo <= hi && hi > 0).then_some((lo, hi))
}

/// How the server keeps history: the settings that, with a namespace's options, make a
/// room's [`StreamOptions`].
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `history_storage = "disk"`.
    pub disk: bool,
    pub window_size: usize,
    pub window_ttl_ms: u64,
    pub key_window_ms: u64,
    /// Most messages in one `history` reply.
    pub page_size: usize,
}

impl Policy {
    /// A room of namespace `ns` keeps the larger of its history and the recovery window;
    /// history goes to disk unless storage is memory.
    pub fn stream(&self, ns: &crate::auth::Namespace) -> StreamOptions {
        let (window, window_ttl) = if ns.recovery_window {
            (self.window_size, self.window_ttl_ms)
        } else {
            (0, 0)
        };
        let history_ttl = if ns.history_size > 0 {
            ns.history_ttl.as_millis() as u64
        } else {
            0
        };
        StreamOptions {
            durable: self.disk && ns.history_size > 0,
            size: ns.history_size.max(window),
            ttl_ms: history_ttl.max(window_ttl),
            key_window_ms: self.key_window_ms,
        }
    }
}

/// This node's broker: rooms with history on disk go to the durable store, all others to
/// memory.
pub struct Local {
    memory: memory::MemoryBroker,
    durable: Option<durable::DurableBroker>,
}

/// Where and whether the server keeps history.
#[derive(Debug, Clone)]
pub struct Storage {
    /// `history.redb` is used (`history_storage = "disk"`).
    pub disk: bool,
    pub data_dir: PathBuf,
    /// Some namespace keeps history on disk: the store is opened at start and kept open.
    pub durable_rooms: bool,
}

impl Local {
    /// Opens the store as `storage` says and reads back the recovery windows saved at the
    /// last graceful shutdown. An unreadable store is an error naming its file.
    pub fn open(storage: &Storage) -> Result<Local, String> {
        let memory = memory::MemoryBroker::new(storage.disk.then(|| storage.data_dir.clone()));
        let durable = if storage.disk && storage.durable_rooms {
            let store = stored::Store::open(&storage.data_dir)?;
            memory.restore(store.take_windows()?);
            Some(durable::DurableBroker::start(store))
        } else {
            if storage.disk {
                memory.restore_from(&storage.data_dir)?;
            }
            None
        };
        Ok(Local { memory, durable })
    }

    pub fn memory() -> Local {
        Local {
            memory: memory::MemoryBroker::new(None),
            durable: None,
        }
    }
}

impl Broker for Local {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn attach(&self, inbound: Weak<dyn Inbound>) {
        if let Some(d) = &self.durable {
            d.attach(inbound.clone());
        }
        self.memory.attach(inbound);
    }

    fn publish(
        &self,
        room: &Arc<str>,
        publication: Publication,
        opts: StreamOptions,
    ) -> Pending<Published> {
        match (&self.durable, opts.durable) {
            (Some(d), true) => d.publish(room, publication, opts),
            _ => self.memory.publish(room, publication, opts),
        }
    }

    fn history(
        &self,
        room: &str,
        query: HistoryQuery,
        opts: StreamOptions,
    ) -> Pending<HistoryPage> {
        match (&self.durable, opts.durable) {
            (Some(d), true) => d.history(room, query, opts),
            _ => self.memory.history(room, query, opts),
        }
    }

    fn position(&self, room: &str) -> Option<Position> {
        match self.memory.position(room) {
            Some(p) => Some(p),
            None => self.durable.as_ref()?.position(room),
        }
    }

    fn subscribe(&self, room: &str, opts: StreamOptions) {
        match (&self.durable, opts.durable) {
            (Some(d), true) => d.subscribe(room, opts),
            _ => self.memory.subscribe(room, opts),
        }
    }

    fn unsubscribe(&self, room: &str) {
        self.memory.unsubscribe(room);
        if let Some(d) = &self.durable {
            d.unsubscribe(room);
        }
    }

    fn shutdown(&self) {
        match &self.durable {
            Some(d) => d.save_windows(self.memory.windows()),
            None => self.memory.shutdown(),
        }
    }
}
