//! Streams in Redis, shared by every node that uses the same Redis (`redis_url`).
//!
//! Per room (keys share the `{room}` hash tag, so one room's keys live on one shard):
//! - `sb:{room}:m`, a hash: `e` the epoch, `o` the last offset;
//! - `sb:{room}:s`, a stream of the kept messages, entry id `<offset>-0`, field `p` the
//!   publication (as stored on disk, [`stored::encode_publication`]);
//! - `sb:{room}:k:<key>`, an idempotency key's offset, expiring with the key window;
//! - channel `sb:{room}`: every publication with its position.
//!
//! One Lua script per publish dedups by key, keeps the epoch, assigns the offset, appends to
//! the trimmed stream and publishes — atomically, so every node sees the room's one order.
//! Every node (the publishing one too) delivers from its subscription, in offset order: a
//! publication it already delivered is skipped, one that arrives after a gap is preceded by
//! the missing ones read from the stream.
//!
//! A node subscribes to a room when its first local member joins; reads of the room's
//! position wait until the subscription is confirmed, so that every publication after the
//! position read reaches the node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::{Script, Value};
use tokio::sync::{mpsc, oneshot, Notify};

use super::stored;
use super::{
    check_since, BrokerError, HistoryPage, HistoryQuery, Inbound, Pending, Position, Publication,
    Published, StreamOptions, Unrecoverable,
};

/// How long a room's position outlives its last publish (a room whose members stay quiet
/// must keep its epoch): refreshed on every publish and every history read.
const META_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

const PUBLISH: &str = r#"
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[2]
  redis.call('hset', KEYS[1], 'e', epoch)
end
if ARGV[6] == '1' then
  local prev = redis.call('get', KEYS[3])
  if prev then
    return {tonumber(prev), epoch, 1}
  end
end
local offset = redis.call('hincrby', KEYS[1], 'o', 1)
redis.call('pexpire', KEYS[1], ARGV[5])
if tonumber(ARGV[3]) > 0 then
  redis.call('xadd', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-0', 'p', ARGV[1])
  redis.call('pexpire', KEYS[2], ARGV[4])
end
if ARGV[6] == '1' then
  redis.call('set', KEYS[3], offset, 'PX', ARGV[7])
end
redis.call('publish', KEYS[4], offset .. '\n' .. epoch .. '\n' .. ARGV[8] .. '\n' .. ARGV[1])
return {offset, epoch, 0}
"#;

/// Position, oldest kept offset and a range of the stream, in one atomic read. ARGV: epoch
/// for a new room, meta ttl, direction (`f`/`r`), start, end, count.
const READ: &str = r#"
redis.call('hsetnx', KEYS[1], 'e', ARGV[1])
redis.call('pexpire', KEYS[1], ARGV[2])
local epoch = redis.call('hget', KEYS[1], 'e')
local offset = redis.call('hget', KEYS[1], 'o') or '0'
local first = redis.call('xrange', KEYS[2], '-', '+', 'COUNT', 1)
local entries = {}
if tonumber(ARGV[6]) > 0 then
  if ARGV[3] == 'f' then
    entries = redis.call('xrange', KEYS[2], ARGV[4], ARGV[5], 'COUNT', ARGV[6])
  else
    entries = redis.call('xrevrange', KEYS[2], ARGV[5], ARGV[4], 'COUNT', ARGV[6])
  end
end
local firstid = ''
if first[1] then firstid = first[1][1] end
return {epoch, offset, firstid, entries}
"#;

pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    /// Commands: multiplexed, reconnecting by itself after Redis restarts or the network
    /// fails (the commands of the moment fail: their publishes answer `unavailable`).
    conn: ConnectionManager,
    publish: Script,
    read: Script,
    /// This node, so that `echo: false` is applied by the node of the publisher only.
    node: String,
    inbound: OnceLock<Weak<dyn Inbound>>,
    rooms: Mutex<HashMap<Arc<str>, Sub>>,
    commands: mpsc::UnboundedSender<Command>,
    publishes: mpsc::UnboundedSender<Publish>,
}

/// A publish waiting for the batcher.
struct Publish {
    room: Arc<str>,
    publication: Publication,
    opts: StreamOptions,
    reply: oneshot::Sender<Result<Published, BrokerError>>,
}

/// Most publishes sent to Redis in one pipeline.
const MAX_BATCH: usize = 256;

/// A room this node is subscribed to.
struct Sub {
    members: usize,
    /// The subscription is confirmed and `last` read: positions may be answered.
    active: bool,
    /// The last publication delivered here.
    last: Option<(Arc<str>, u64)>,
    /// Publishers and readers waiting for `active` or for a delivery.
    changed: Arc<Notify>,
}

enum Command {
    Subscribe(Arc<str>),
    Unsubscribe(Arc<str>),
}

fn meta_key(room: &str) -> String {
    format!("sb:{{{room}}}:m")
}
fn stream_key(room: &str) -> String {
    format!("sb:{{{room}}}:s")
}
fn idem_key(room: &str, key: &str) -> String {
    format!("sb:{{{room}}}:k:{key}")
}
fn channel(room: &str) -> String {
    format!("sb:{{{room}}}")
}
fn room_of(channel: &str) -> Option<&str> {
    channel.strip_prefix("sb:{")?.strip_suffix('}')
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("redis: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RedisBroker {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`); fails if Redis cannot
    /// be reached now. Afterwards the connections reconnect by themselves.
    pub async fn connect(url: &str) -> Result<RedisBroker, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis_url {url:?}: {e}"))?;
        let conn = ConnectionManager::new(client.clone())
            .await
            .map_err(|e| format!("cannot connect to Redis at {url}: {e}"))?;
        let (commands, rx) = mpsc::unbounded_channel();
        let (publishes, queue) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            conn,
            publish: Script::new(PUBLISH),
            read: Script::new(READ),
            node: crate::ids::random_token(),
            inbound: OnceLock::new(),
            rooms: Mutex::new(HashMap::new()),
            commands,
            publishes,
        });
        tokio::spawn(subscriber(client, Arc::downgrade(&inner), rx));
        tokio::spawn(batcher(Arc::downgrade(&inner), queue));
        Ok(RedisBroker { inner })
    }

    pub fn attach(&self, inbound: Weak<dyn Inbound>) {
        let _ = self.inner.inbound.set(inbound);
    }

    pub fn publish(
        &self,
        room: &Arc<str>,
        publication: Publication,
        opts: StreamOptions,
    ) -> Pending<Published> {
        let (reply, rx) = oneshot::channel();
        let publish = Publish {
            room: room.clone(),
            publication,
            opts,
            reply,
        };
        match self.inner.publishes.send(publish) {
            Ok(()) => Pending::Waiting(rx),
            Err(_) => Pending::Ready(Err(unavailable("the publisher stopped"))),
        }
    }

    pub fn history(
        &self,
        room: &str,
        query: HistoryQuery,
        _opts: StreamOptions,
    ) -> Pending<HistoryPage> {
        let (reply, rx) = oneshot::channel();
        let inner = self.inner.clone();
        let room: Arc<str> = room.into();
        tokio::spawn(async move {
            inner.ready(&room).await;
            let _ = reply.send(inner.read(&room, &query).await);
        });
        Pending::Waiting(rx)
    }

    pub fn position(&self, room: &str) -> Option<Position> {
        let rooms = lock(&self.inner.rooms);
        let sub = rooms.get(room)?;
        let (epoch, offset) = sub.last.clone().filter(|_| sub.active)?;
        Some(Position { epoch, offset })
    }

    pub fn subscribe(&self, room: &str) {
        let mut rooms = lock(&self.inner.rooms);
        let sub = rooms.entry(room.into()).or_insert_with(|| Sub {
            members: 0,
            active: false,
            last: None,
            changed: Arc::new(Notify::new()),
        });
        sub.members += 1;
        if sub.members == 1 {
            let _ = self.inner.commands.send(Command::Subscribe(room.into()));
        }
    }

    pub fn unsubscribe(&self, room: &str) {
        let mut rooms = lock(&self.inner.rooms);
        let Some(sub) = rooms.get_mut(room) else {
            return;
        };
        sub.members = sub.members.saturating_sub(1);
        if sub.members == 0 {
            rooms.remove(room);
            let _ = self.inner.commands.send(Command::Unsubscribe(room.into()));
        }
    }
}

impl Inner {
    /// Adds one publish script call to `pipe`.
    fn add_publish(
        &self,
        pipe: &mut redis::Pipeline,
        room: &str,
        p: &Publication,
        opts: StreamOptions,
    ) {
        let mut encoded = Vec::with_capacity(p.data.len() + p.from.len() + 48);
        stored::encode_publication(p, &mut encoded);
        let key = p.key.as_deref();
        let exclude = match p.exclude {
            Some(conn) => format!("{}:{conn}", self.node),
            None => String::new(),
        };
        pipe.cmd("EVALSHA")
            .arg(self.publish.get_hash())
            .arg(4)
            .arg(meta_key(room))
            .arg(stream_key(room))
            .arg(idem_key(room, key.unwrap_or("")))
            .arg(channel(room))
            .arg(encoded)
            .arg(crate::ids::random_token())
            .arg(opts.size)
            .arg(opts.ttl_ms.max(1))
            .arg(META_TTL_MS.max(opts.ttl_ms))
            .arg(if key.is_some() { "1" } else { "0" })
            .arg(opts.key_window_ms.max(1))
            .arg(exclude);
    }

    /// Sends a batch of publishes as one pipeline, in order (a publisher's messages keep
    /// their order), loading the script first if Redis does not know it (a restart).
    async fn publish_batch(&self, batch: &[Publish]) -> Vec<Result<Published, BrokerError>> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for p in batch {
            self.add_publish(&mut pipe, &p.room, &p.publication, p.opts);
        }
        let mut conn = self.conn.clone();
        for attempt in 0..2 {
            let results: Vec<redis::RedisResult<(u64, String, u8)>> =
                match pipe.query_async(&mut conn).await {
                    Ok(r) => r,
                    Err(e) => return batch.iter().map(|_| Err(unavailable(&e))).collect(),
                };
            let no_script = results.iter().any(|r| {
                r.as_ref()
                    .err()
                    .is_some_and(|e| e.code() == Some("NOSCRIPT"))
            });
            if no_script && attempt == 0 {
                // Nothing ran: every call of the batch needs the script.
                if let Err(e) = self.publish.prepare_invoke().load_async(&mut conn).await {
                    return batch.iter().map(|_| Err(unavailable(&e))).collect();
                }
                continue;
            }
            return results
                .into_iter()
                .map(|r| {
                    r.map(|(offset, epoch, duplicate)| Published {
                        epoch: epoch.into(),
                        offset,
                        duplicate: duplicate == 1,
                    })
                    .map_err(unavailable)
                })
                .collect();
        }
        batch
            .iter()
            .map(|_| Err(unavailable("the publish script could not be loaded")))
            .collect()
    }

    /// Waits (at most a second) until this node has delivered `offset` of `room`, if it is
    /// subscribed to it.
    async fn delivered(&self, room: &str, epoch: &str, offset: u64) {
        self.wait_until(
            room,
            Duration::from_secs(1),
            |sub| matches!(&sub.last, Some((e, last)) if &**e == epoch && *last >= offset),
        )
        .await;
    }

    /// Waits until `done` holds for the room's subscription, or it is gone, or `timeout`.
    async fn wait_until(&self, room: &str, timeout: Duration, done: impl Fn(&Sub) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Some(changed) = lock(&self.rooms).get(room).map(|s| s.changed.clone()) else {
                return;
            };
            let notified = changed.notified();
            tokio::pin!(notified);
            // Registered before the check: a change after it wakes us.
            notified.as_mut().enable();
            match lock(&self.rooms).get(room) {
                Some(sub) if !done(sub) => {}
                _ => return,
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Waits (at most five seconds) until the room's subscription, if one was asked for, is
    /// confirmed.
    async fn ready(&self, room: &str) {
        self.wait_until(room, Duration::from_secs(5), |sub| sub.active)
            .await;
    }

    async fn read(&self, room: &str, query: &HistoryQuery) -> Result<HistoryPage, BrokerError> {
        let (dir, start, end) = match (&query.since, query.reverse) {
            (None, false) => ("f", "-".to_owned(), "+".to_owned()),
            (None, true) => ("r", "-".to_owned(), "+".to_owned()),
            (Some(s), false) => (
                "f",
                format!("{}-0", s.offset.saturating_add(1)),
                "+".to_owned(),
            ),
            (Some(s), true) if s.offset <= 1 => ("r", "-".to_owned(), "0-1".to_owned()),
            (Some(s), true) => ("r", "-".to_owned(), format!("{}-0", s.offset - 1)),
        };
        let mut conn = self.conn.clone();
        let reply: Value = self
            .read
            .key(meta_key(room))
            .key(stream_key(room))
            .arg(crate::ids::random_token())
            .arg(META_TTL_MS)
            .arg(dir)
            .arg(start)
            .arg(end)
            .arg(query.limit)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let bad = || unavailable("unexpected reply to the history read");
        let Value::Array(parts) = reply else {
            return Err(bad());
        };
        let [epoch, offset, first, entries] = <[Value; 4]>::try_from(parts).map_err(|_| bad())?;
        let position = Position {
            epoch: text(&epoch).ok_or_else(bad)?.into(),
            offset: text(&offset).and_then(|o| o.parse().ok()).ok_or_else(bad)?,
        };
        let first = text(&first)
            .and_then(entry_offset)
            .unwrap_or(position.offset + 1);
        check_since(query, &position, first)?;
        let mut messages = Vec::new();
        if let Value::Array(entries) = entries {
            for entry in entries {
                let Some((offset, p)) = parse_entry(entry) else {
                    continue;
                };
                if offset <= position.offset {
                    messages.push(Arc::new(p));
                }
            }
        }
        if let (Some(s), false) = (&query.since, query.reverse) {
            if messages.first().is_some_and(|p| p.offset != s.offset + 1) {
                return Err(BrokerError::Unrecoverable {
                    reason: Unrecoverable::TooOld,
                    position,
                });
            }
        }
        Ok(HistoryPage { position, messages })
    }

    /// Delivers the room's publications after `from` up to `to`, read from the stream.
    async fn catch_up(&self, room: &str, epoch: Arc<str>, from: u64, to: u64) {
        let query = HistoryQuery {
            since: Some(Position {
                epoch: epoch.clone(),
                offset: from,
            }),
            limit: (to - from) as usize,
            reverse: false,
        };
        let messages = match self.read(room, &query).await {
            Ok(page) => page.messages,
            Err(e) => {
                tracing::warn!(room, error = ?e, "messages missed on this node could not be read back");
                return;
            }
        };
        self.hand_over(room, &epoch, messages);
    }

    /// Delivers `messages` in order, recording each as the last delivered first.
    fn hand_over(&self, room: &str, epoch: &Arc<str>, messages: Vec<Arc<Publication>>) {
        let inbound = self.inbound.get().and_then(Weak::upgrade);
        let mut changed = None;
        for p in messages {
            {
                let mut rooms = lock(&self.rooms);
                let Some(sub) = rooms.get_mut(room) else {
                    return;
                };
                if matches!(&sub.last, Some((e, l)) if e == epoch && p.offset <= *l) {
                    continue;
                }
                // Before the delivery: see `position`.
                sub.last = Some((epoch.clone(), p.offset));
                changed = Some(sub.changed.clone());
            }
            if let Some(inbound) = &inbound {
                inbound.deliver(room, epoch, &p);
            }
        }
        if let Some(changed) = changed {
            changed.notify_waiters();
        }
    }

    /// Hands a publication received on the room's channel to the hub, in order: already
    /// delivered ones are skipped, missing ones before it are read from the stream first.
    async fn receive(&self, room: &str, epoch: &str, offset: u64, mut p: Publication) {
        let Some(last) = lock(&self.rooms).get(room).map(|s| s.last.clone()) else {
            return;
        };
        let mut missing = Vec::new();
        match &last {
            Some((e, l)) if &**e == epoch && offset <= *l => return,
            Some((e, l)) if &**e == epoch && offset > l + 1 => {
                let since = Position {
                    epoch: e.clone(),
                    offset: *l,
                };
                let query = HistoryQuery {
                    since: Some(since),
                    limit: (offset - l - 1) as usize,
                    reverse: false,
                };
                match self.read(room, &query).await {
                    Ok(page) => missing = page.messages,
                    Err(e) => {
                        tracing::warn!(room, error = ?e, "messages missed on this node could not be read back");
                    }
                }
            }
            _ => {}
        }
        p.offset = offset;
        missing.retain(|m| m.offset < offset);
        missing.push(Arc::new(p));
        self.hand_over(room, &epoch.into(), missing);
    }
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn entry_offset(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

fn parse_entry(entry: Value) -> Option<(u64, Publication)> {
    let Value::Array(mut parts) = entry else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let fields = parts.pop()?;
    let offset = entry_offset(text(&parts[0])?)?;
    let Value::Array(fields) = fields else {
        return None;
    };
    let Some(Value::BulkString(bytes)) = fields.get(1) else {
        return None;
    };
    Some((offset, stored::decode_publication(bytes, offset)?))
}

/// Takes publishes off the queue, as many as are waiting, and sends each batch to Redis as
/// one pipeline; answers each after this node delivered it (when the room has members
/// here), so the sender's own copy comes before its `ok`, as on one node.
async fn batcher(inner: Weak<Inner>, mut queue: mpsc::UnboundedReceiver<Publish>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let Some(node) = inner.upgrade() else {
            return;
        };
        let results = node.publish_batch(&batch).await;
        for (p, result) in batch.drain(..).zip(results) {
            match result {
                Ok(r) if !r.duplicate => {
                    let node = node.clone();
                    tokio::spawn(async move {
                        node.delivered(&p.room, &r.epoch, r.offset).await;
                        let _ = p.reply.send(Ok(r));
                    });
                }
                other => {
                    let _ = p.reply.send(other);
                }
            }
        }
    }
}

/// `offset \n epoch \n exclude \n publication`.
fn parse_message(payload: &[u8]) -> Option<(u64, &str, &str, &[u8])> {
    let mut parts = payload.splitn(4, |b| *b == b'\n');
    let offset = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let epoch = std::str::from_utf8(parts.next()?).ok()?;
    let exclude = std::str::from_utf8(parts.next()?).ok()?;
    Some((offset, epoch, exclude, parts.next()?))
}

/// The node's subscription connection: (re)connects with backoff, subscribes to the rooms
/// asked for (all of them again after a reconnect) and receives their publications.
async fn subscriber(
    client: redis::Client,
    inner: Weak<Inner>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(node) = inner.upgrade() else {
            return;
        };
        let pubsub = match client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to Redis for subscriptions; retrying");
                drop(node);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let (mut sink, mut stream) = pubsub.split();
        let rooms: Vec<Arc<str>> = lock(&node.rooms).keys().cloned().collect();
        drop(node);
        for room in rooms {
            if !subscribe(&inner, &mut sink, room).await {
                break;
            }
        }
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Subscribe(room)) => {
                        if !subscribe(&inner, &mut sink, room).await {
                            break;
                        }
                    }
                    Some(Command::Unsubscribe(room)) => {
                        if sink.unsubscribe(channel(&room)).await.is_err() {
                            break;
                        }
                    }
                },
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let Some(node) = inner.upgrade() else { return };
                    let Some(room) = room_of(message.get_channel_name()) else { continue };
                    let Some((offset, epoch, exclude, encoded)) = parse_message(message.get_payload_bytes()) else {
                        continue;
                    };
                    let Some(mut p) = stored::decode_publication(encoded, offset) else { continue };
                    if let Some((n, conn)) = exclude.split_once(':') {
                        if n == node.node {
                            p.exclude = conn.parse().ok();
                        }
                    }
                    let room: Arc<str> = room.into();
                    node.receive(&room, epoch, offset, p).await;
                }
            }
        }
        tracing::warn!("lost the Redis subscription connection; reconnecting");
        if let Some(node) = inner.upgrade() {
            for sub in lock(&node.rooms).values_mut() {
                sub.active = false;
            }
        }
    }
}

/// Subscribes to `room`'s channel, then reads its position: from then on every later
/// publication arrives here, and positions may be answered.
async fn subscribe(inner: &Weak<Inner>, sink: &mut redis::aio::PubSubSink, room: Arc<str>) -> bool {
    if sink.subscribe(channel(&room)).await.is_err() {
        return false;
    }
    let Some(node) = inner.upgrade() else {
        return false;
    };
    let query = HistoryQuery {
        since: None,
        limit: 0,
        reverse: false,
    };
    let read = node.read(&room, &query).await;
    let last = lock(&node.rooms).get(&room).and_then(|s| s.last.clone());
    if let (Ok(page), Some((epoch, l))) = (&read, &last) {
        // Resubscribed after a lost connection: deliver what was published meanwhile.
        if *epoch == page.position.epoch && *l < page.position.offset {
            node.catch_up(&room, epoch.clone(), *l, page.position.offset)
                .await;
        }
    }
    let mut rooms = lock(&node.rooms);
    if let Some(sub) = rooms.get_mut(&room) {
        if let Ok(page) = read {
            let behind = match &sub.last {
                Some((e, l)) => *e != page.position.epoch || *l < page.position.offset,
                None => true,
            };
            if behind {
                sub.last = Some((page.position.epoch, page.position.offset));
            }
        }
        sub.active = true;
        sub.changed.notify_waiters();
    }
    true
}

impl super::Broker for RedisBroker {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn attach(&self, inbound: Weak<dyn Inbound>) {
        RedisBroker::attach(self, inbound);
    }

    fn publish(
        &self,
        room: &Arc<str>,
        publication: Publication,
        opts: StreamOptions,
    ) -> Pending<Published> {
        RedisBroker::publish(self, room, publication, opts)
    }

    fn history(
        &self,
        room: &str,
        query: HistoryQuery,
        opts: StreamOptions,
    ) -> Pending<HistoryPage> {
        RedisBroker::history(self, room, query, opts)
    }

    fn position(&self, room: &str) -> Option<Position> {
        RedisBroker::position(self, room)
    }

    fn subscribe(&self, room: &str, _opts: StreamOptions) {
        RedisBroker::subscribe(self, room);
    }

    fn unsubscribe(&self, room: &str) {
        RedisBroker::unsubscribe(self, room);
    }

    fn shutdown(&self) {}
}
