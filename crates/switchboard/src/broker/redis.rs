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
//!
//! Presence across nodes:
//! - `sb:{room}:p`, a hash: every member on every node, field the connection id, value
//!   `node \n join-seq \n member JSON`; fields `#e` (the hash's epoch) and `#s` (its change
//!   counter). Each change is published on the room's channel as
//!   `p \n epoch \n seq \n node \n j|u|l \n conn \n member`; a node that subscribes reads the
//!   hash (after subscribing) and skips the changes the read already holds.
//! - `sb:n:{node}`, a set: the rooms where `node` has members;
//! - `sb:nodes`, a sorted set: every node and its last heartbeat (Redis's clock). A node
//!   missing for `node_timeout` is taken for dead: one live node takes its members out of
//!   every room (each other node's members see `leave`), and forgets it.
//! - channel `sb:control`: surveys every node answers, on the asker's `sb:r:<node>`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::{Script, Value};
use tokio::sync::{mpsc, oneshot, Notify};

use super::stored;
use super::{
    check_since, BrokerError, HistoryPage, HistoryQuery, Inbound, Pending, Position,
    PresenceChange, Publication, Published, StreamOptions, Survey, Unrecoverable,
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
/// for a new room, meta ttl, direction (`f`/`r`), start, end, count, whether to make the
/// room's position if it has none (`1`: a member joins; else an unknown room reads empty).
const READ: &str = r#"
if ARGV[7] == '1' then
  redis.call('hsetnx', KEYS[1], 'e', ARGV[1])
  redis.call('pexpire', KEYS[1], ARGV[2])
end
local epoch = redis.call('hget', KEYS[1], 'e') or ARGV[1]
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

/// One member change (ARGV[1] `set`/`remove`/`sync`), atomically with its event.
/// KEYS: the presence hash, the room's channel. ARGV: op, node, a new epoch for the hash,
/// then `set`: conn, member; `remove`: conn; `sync`: whether to answer the hash (`1`), then
/// conn, member pairs: the node's members — its others are removed.
const PRESENCE: &str = r#"
local h, ch, node, fresh = KEYS[1], KEYS[2], ARGV[2], ARGV[3]
local function split(v)
  local a = string.find(v, '\n', 1, true)
  local b = string.find(v, '\n', a + 1, true)
  return string.sub(v, 1, a - 1), string.sub(v, a + 1, b - 1), string.sub(v, b + 1)
end
local function event(kind, conn, member)
  redis.call('hsetnx', h, '#e', fresh)
  local e = redis.call('hget', h, '#e')
  local s = redis.call('hincrby', h, '#s', 1)
  redis.call('publish', ch, 'p\n' .. e .. '\n' .. s .. '\n' .. node .. '\n' .. kind .. '\n' .. conn .. '\n' .. member)
  return s
end
local function set(conn, member)
  local old = redis.call('hget', h, conn)
  local seq = nil
  local kind = 'j'
  if old then
    local onode, oseq, omember = split(old)
    if onode == node and omember == member then return 0 end
    seq = oseq
    kind = 'u'
  end
  local s = event(kind, conn, member)
  redis.call('hset', h, conn, node .. '\n' .. (seq or s) .. '\n' .. member)
  return 1
end
local function remove(conn)
  local old = redis.call('hget', h, conn)
  if not old then return 0 end
  local onode = split(old)
  if onode ~= node then return 0 end
  redis.call('hdel', h, conn)
  event('l', conn, '')
  if redis.call('hlen', h) <= 2 then redis.call('del', h) end
  return 1
end
local op = ARGV[1]
if op == 'set' then return set(ARGV[4], ARGV[5]) end
if op == 'remove' then return remove(ARGV[4]) end
local keep = {}
for i = 5, #ARGV, 2 do keep[ARGV[i]] = true end
local all = redis.call('hgetall', h)
for i = 1, #all, 2 do
  local conn = all[i]
  if string.sub(conn, 1, 1) ~= '#' and not keep[conn] then
    local onode = split(all[i + 1])
    if onode == node then remove(conn) end
  end
end
for i = 5, #ARGV, 2 do set(ARGV[i], ARGV[i + 1]) end
if ARGV[4] == '1' then return redis.call('hgetall', h) end
return {}
"#;

/// A node's heartbeat: records it (Redis's clock), answers whether it was not known (it was
/// taken for dead, or Redis lost its data) and the nodes silent for ARGV[2] ms.
const HEARTBEAT: &str = r#"
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = redis.call('zadd', KEYS[1], now, ARGV[1])
local dead = redis.call('zrangebyscore', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local live = redis.call('zrangebyscore', KEYS[1], now - tonumber(ARGV[2]), '+inf')
return {added, dead, live}
"#;

const NODES: &str = "sb:nodes";
const CONTROL: &str = "sb:control";

/// How long a survey waits for the nodes' answers.
const SURVEY_TIMEOUT: Duration = Duration::from_secs(2);

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
    presence: Script,
    heartbeat: Script,
    /// Presence changes, syncs and room index updates: written to Redis in this order.
    presence_ops: mpsc::UnboundedSender<PresenceOp>,
    node_timeout: Duration,
    /// The nodes that heartbeated within `node_timeout`, as of the last heartbeat.
    live_nodes: Mutex<Vec<String>>,
    /// Surveys this node asked, waiting for answers.
    surveys: Mutex<HashMap<String, mpsc::UnboundedSender<(String, serde_json::Value)>>>,
    /// A graceful shutdown started: no more heartbeats.
    closing: std::sync::atomic::AtomicBool,
}

/// What the presence writer sends to Redis, in order.
enum PresenceOp {
    Change(Arc<str>, PresenceChange),
    /// Make this node's members of the room in Redis what the hub has, and (with `reply`)
    /// read every member.
    Sync(Arc<str>, Option<oneshot::Sender<Option<Snapshot>>>),
    /// The node has members in the room (`true`), or none any more.
    Index(Arc<str>, bool),
    /// Answered once everything queued before it was written.
    Flush(oneshot::Sender<()>),
}

/// A room's presence hash as read.
struct Snapshot {
    epoch: Arc<str>,
    seq: u64,
    /// Members on other nodes: (conn, member JSON).
    others: Vec<(Arc<str>, Arc<str>)>,
}

/// How a Redis broker runs.
#[derive(Debug, Clone, Copy)]
pub struct RedisOptions {
    /// A node silent for this long is taken for dead.
    pub node_timeout: Duration,
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
    /// The room's presence hash as last known here: (epoch, change counter).
    presence: Option<(Arc<str>, u64)>,
    /// The last publication handed to the hub (`last` is set just before the hand-over):
    /// a publisher's `ok` waits for this, so that its own copy is queued first.
    handed: Option<(Arc<str>, u64)>,
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
fn presence_key(room: &str) -> String {
    format!("sb:{{{room}}}:p")
}
fn node_rooms_key(node: &str) -> String {
    format!("sb:n:{{{node}}}")
}
fn reply_channel(node: &str) -> String {
    format!("sb:r:{node}")
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
    pub async fn connect(url: &str, options: RedisOptions) -> Result<RedisBroker, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis_url {url:?}: {e}"))?;
        // A command fails within a few seconds when Redis is away (its publish answers
        // `unavailable`), and the connection is made again in the background.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(3)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| format!("cannot connect to Redis at {url}: {e}"))?;
        let (commands, rx) = mpsc::unbounded_channel();
        let (publishes, queue) = mpsc::unbounded_channel();
        let (presence_ops, presence_queue) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            conn,
            publish: Script::new(PUBLISH),
            read: Script::new(READ),
            node: crate::ids::node_id().to_owned(),
            inbound: OnceLock::new(),
            rooms: Mutex::new(HashMap::new()),
            commands,
            publishes,
            presence: Script::new(PRESENCE),
            heartbeat: Script::new(HEARTBEAT),
            presence_ops,
            node_timeout: options.node_timeout,
            live_nodes: Mutex::new(Vec::new()),
            surveys: Mutex::new(HashMap::new()),
            closing: std::sync::atomic::AtomicBool::new(false),
        });
        // The scripts are loaded before the first pipeline (which would otherwise fail with
        // NOSCRIPT and be sent again).
        {
            let mut conn = inner.conn.clone();
            for script in [
                &inner.publish,
                &inner.read,
                &inner.presence,
                &inner.heartbeat,
            ] {
                script
                    .prepare_invoke()
                    .load_async(&mut conn)
                    .await
                    .map_err(|e| format!("redis at {url}: loading a script: {e}"))?;
            }
        }
        // Registered before any member joins: no other node takes this one for dead.
        inner
            .beat()
            .await
            .map_err(|e| format!("redis at {url}: {e}"))?;
        tokio::spawn(subscriber(client, Arc::downgrade(&inner), rx));
        tokio::spawn(batcher(Arc::downgrade(&inner), queue));
        tokio::spawn(presence_writer(Arc::downgrade(&inner), presence_queue));
        tokio::spawn(heartbeat(Arc::downgrade(&inner)));
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
            presence: None,
            handed: None,
        });
        sub.members += 1;
        if sub.members == 1 {
            let _ = self.inner.commands.send(Command::Subscribe(room.into()));
            let _ = self
                .inner
                .presence_ops
                .send(PresenceOp::Index(room.into(), true));
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
            let _ = self
                .inner
                .presence_ops
                .send(PresenceOp::Index(room.into(), false));
        }
    }

    /// Every member of `room` on every node, in join order.
    pub fn members(&self, room: &str) -> Pending<Vec<(u64, Arc<str>)>> {
        let (reply, rx) = oneshot::channel();
        let inner = self.inner.clone();
        let key = presence_key(room);
        tokio::spawn(async move {
            let mut conn = inner.conn.clone();
            let read: redis::RedisResult<Vec<Vec<u8>>> =
                redis::cmd("HGETALL").arg(key).query_async(&mut conn).await;
            let answer = read.map_err(unavailable).map(|flat| {
                let mut members: Vec<(u64, Arc<str>)> = flat
                    .chunks_exact(2)
                    .filter(|kv| !kv[0].starts_with(b"#"))
                    .filter_map(|kv| {
                        let (_, seq, member) = split_member(&kv[1])?;
                        Some((seq, member.into()))
                    })
                    .collect();
                members.sort_unstable_by_key(|(seq, _)| *seq);
                members
            });
            let _ = reply.send(answer);
        });
        Pending::Waiting(rx)
    }

    /// Every room with members on a live node, with its member count.
    pub fn rooms(&self) -> Pending<Vec<(Arc<str>, usize)>> {
        let (reply, rx) = oneshot::channel();
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _ = reply.send(inner.room_counts().await.map_err(unavailable));
        });
        Pending::Waiting(rx)
    }

    /// Asks every live node `survey`, this one too; answers those that answered within
    /// [`SURVEY_TIMEOUT`].
    pub fn survey(&self, survey: Survey) -> Pending<Vec<(String, serde_json::Value)>> {
        let (reply, rx) = oneshot::channel();
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _ = reply.send(inner.survey(survey).await);
        });
        Pending::Waiting(rx)
    }

    /// A graceful shutdown: this node's members leave every room at once, and the node
    /// leaves the list of nodes. Runs on a blocking thread of the runtime.
    pub fn shutdown(&self) {
        use std::sync::atomic::Ordering;
        self.inner.closing.store(true, Ordering::Relaxed);
        let inner = self.inner.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.block_on(async move {
            let done = async {
                let (tx, rx) = oneshot::channel();
                if inner.presence_ops.send(PresenceOp::Flush(tx)).is_ok() {
                    let _ = rx.await;
                }
                let node = inner.node.clone();
                inner.remove_node(&node).await
            };
            match tokio::time::timeout(Duration::from_secs(5), done).await {
                Ok(Ok(rooms)) => tracing::info!(rooms, "this node's members left Redis"),
                Ok(Err(e)) => tracing::warn!(error = %e, "could not remove this node's members from Redis; the other nodes will when it stops heartbeating"),
                Err(_) => tracing::warn!("timed out removing this node's members from Redis; the other nodes will when it stops heartbeating"),
            }
        });
    }
}

impl Inner {
    /// Records this node's heartbeat; answers whether Redis did not know the node, and the
    /// nodes silent for `node_timeout`.
    async fn beat(&self) -> redis::RedisResult<(bool, Vec<String>)> {
        let mut conn = self.conn.clone();
        let (added, dead, live): (u8, Vec<String>, Vec<String>) = self
            .heartbeat
            .key(NODES)
            .arg(&self.node)
            .arg(self.node_timeout.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        *lock(&self.live_nodes) = live;
        Ok((added == 1, dead))
    }

    /// Adds one call of the presence script to `pipe`: `op` for `node`'s members of `room`;
    /// the caller adds the op's own arguments.
    fn add_presence<'p>(
        &self,
        pipe: &'p mut redis::Pipeline,
        room: &str,
        op: &str,
        node: &str,
    ) -> &'p mut redis::Pipeline {
        pipe.cmd("EVALSHA")
            .arg(self.presence.get_hash())
            .arg(2)
            .arg(presence_key(room))
            .arg(channel(room))
            .arg(op)
            .arg(node)
            .arg(crate::ids::random_token())
    }

    /// Runs `pipe` (built with `ignore_errors`) of calls of `script`; if Redis does not
    /// know the script (it restarted), none of them ran: loads it and runs the pipeline again.
    async fn run_scripted<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        script: &Script,
    ) -> redis::RedisResult<Vec<redis::RedisResult<T>>> {
        let mut conn = self.conn.clone();
        let results: Vec<redis::RedisResult<T>> = pipe.query_async(&mut conn).await?;
        let no_script = results.iter().any(|r| {
            r.as_ref()
                .err()
                .is_some_and(|e| e.code() == Some("NOSCRIPT"))
        });
        if !no_script {
            return Ok(results);
        }
        script.prepare_invoke().load_async(&mut conn).await?;
        pipe.query_async(&mut conn).await
    }

    /// Writes a batch of presence operations as one pipeline, in order.
    async fn write_presence(&self, ops: Vec<PresenceOp>) -> bool {
        let inbound = self.inbound.get().and_then(Weak::upgrade);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut commands = 0;
        let mut syncs = Vec::new();
        let mut flushes = Vec::new();
        for op in ops {
            match op {
                PresenceOp::Change(room, PresenceChange::Set { conn, member }) => {
                    self.add_presence(&mut pipe, &room, "set", &self.node)
                        .arg(&*conn)
                        .arg(&*member);
                    commands += 1;
                }
                PresenceOp::Change(room, PresenceChange::Remove { conn }) => {
                    self.add_presence(&mut pipe, &room, "remove", &self.node)
                        .arg(&*conn);
                    commands += 1;
                }
                PresenceOp::Sync(room, reply) => {
                    let members = inbound
                        .as_ref()
                        .map(|i| i.local_members(&room))
                        .unwrap_or_default();
                    let answer = if reply.is_some() { "1" } else { "0" };
                    self.add_presence(&mut pipe, &room, "sync", &self.node)
                        .arg(answer);
                    for (conn, member) in &members {
                        pipe.arg(&**conn).arg(&**member);
                    }
                    if let Some(reply) = reply {
                        syncs.push((commands, reply));
                    }
                    commands += 1;
                }
                PresenceOp::Index(room, add) => {
                    pipe.cmd(if add { "SADD" } else { "SREM" })
                        .arg(node_rooms_key(&self.node))
                        .arg(&*room);
                    commands += 1;
                }
                PresenceOp::Flush(reply) => flushes.push(reply),
            }
        }
        let written = if commands == 0 {
            Ok(Vec::new())
        } else {
            self.run_scripted(&pipe, &self.presence).await
        };
        let ok = match written {
            Ok(mut results) => {
                for (i, reply) in syncs {
                    let snapshot = match results.get_mut(i).map(take_result) {
                        Some(Ok(value)) => self.snapshot(value),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "could not read a room's members from Redis");
                            None
                        }
                        None => None,
                    };
                    let _ = reply.send(snapshot);
                }
                let failed = results.iter().filter(|r| r.is_err()).count();
                if failed > 0 {
                    tracing::warn!(failed, "presence changes were refused by Redis");
                }
                failed == 0
            }
            Err(e) => {
                tracing::warn!(error = %e, "presence changes could not be written to Redis; this node's members will be announced again");
                false
            }
        };
        for flush in flushes {
            let _ = flush.send(());
        }
        ok
    }

    /// A presence hash as `HGETALL` answered it.
    fn snapshot(&self, value: Value) -> Option<Snapshot> {
        let Value::Array(flat) = value else {
            return None;
        };
        let mut snapshot = Snapshot {
            epoch: "".into(),
            seq: 0,
            others: Vec::new(),
        };
        for kv in flat.chunks_exact(2) {
            let (Value::BulkString(k), Value::BulkString(v)) = (&kv[0], &kv[1]) else {
                continue;
            };
            match &k[..] {
                b"#e" => snapshot.epoch = String::from_utf8_lossy(v).into(),
                b"#s" => {
                    snapshot.seq = std::str::from_utf8(v).ok()?.parse().ok()?;
                }
                _ => {
                    let Some((node, _, member)) = split_member(v) else {
                        continue;
                    };
                    if node != self.node {
                        let conn = String::from_utf8_lossy(k);
                        snapshot.others.push((conn.into(), member.into()));
                    }
                }
            }
        }
        Some(snapshot)
    }

    /// Announces this node's members of every room again (after Redis lost them, or took
    /// this node for dead).
    fn resync_all(&self) {
        let rooms: Vec<Arc<str>> = lock(&self.rooms).keys().cloned().collect();
        for room in rooms {
            let _ = self
                .presence_ops
                .send(PresenceOp::Index(room.clone(), true));
            let _ = self.presence_ops.send(PresenceOp::Sync(room, None));
        }
    }

    /// Takes the members of `node` (silent for `node_timeout`) out of every room, once for
    /// all the nodes that noticed: the first to claim it does it.
    async fn reap(&self, node: &str) {
        let mut conn = self.conn.clone();
        let claimed: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(format!("{}:reap", node_rooms_key(node)))
            .arg(&self.node)
            .arg("NX")
            .arg("PX")
            .arg(60_000)
            .query_async(&mut conn)
            .await;
        if !matches!(claimed, Ok(Some(_))) {
            return;
        }
        match self.remove_node(node).await {
            Ok(rooms) => tracing::warn!(
                node,
                rooms,
                "a node stopped heartbeating: its members left its rooms"
            ),
            Err(e) => {
                tracing::warn!(node, error = %e, "could not remove the members of a dead node")
            }
        }
    }

    /// Removes every member of `node` from every room it had members in (each other node's
    /// members see them leave), and the node from the list of nodes. Answers the rooms.
    async fn remove_node(&self, node: &str) -> redis::RedisResult<usize> {
        let mut conn = self.conn.clone();
        let rooms: Vec<String> = redis::cmd("SMEMBERS")
            .arg(node_rooms_key(node))
            .query_async(&mut conn)
            .await?;
        for chunk in rooms.chunks(MAX_BATCH) {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for room in chunk {
                self.add_presence(&mut pipe, room, "sync", node).arg("0");
            }
            self.run_scripted::<Value>(&pipe, &self.presence).await?;
        }
        let () = redis::pipe()
            .cmd("DEL")
            .arg(node_rooms_key(node))
            .ignore()
            .cmd("ZREM")
            .arg(NODES)
            .arg(node)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(rooms.len())
    }

    /// Every room with members on some node, with its member count.
    async fn room_counts(&self) -> redis::RedisResult<Vec<(Arc<str>, usize)>> {
        let mut conn = self.conn.clone();
        let nodes: Vec<String> = redis::cmd("ZRANGE")
            .arg(NODES)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        let mut pipe = redis::pipe();
        for node in &nodes {
            pipe.cmd("SMEMBERS").arg(node_rooms_key(node));
        }
        let sets: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
        let rooms: std::collections::BTreeSet<String> = sets.into_iter().flatten().collect();
        let mut counts = Vec::with_capacity(rooms.len());
        let rooms: Vec<String> = rooms.into_iter().collect();
        for chunk in rooms.chunks(1000) {
            let mut pipe = redis::pipe();
            for room in chunk {
                pipe.cmd("HLEN").arg(presence_key(room));
            }
            let lens: Vec<usize> = pipe.query_async(&mut conn).await?;
            for (room, len) in chunk.iter().zip(lens) {
                // Less the hash's epoch and counter.
                if len > 2 {
                    counts.push((room.as_str().into(), len - 2));
                }
            }
        }
        Ok(counts)
    }

    /// Asks every node `survey` through `sb:control`, and gathers their answers.
    async fn survey(
        &self,
        survey: Survey,
    ) -> Result<Vec<(String, serde_json::Value)>, BrokerError> {
        let id = crate::ids::random_token();
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&self.surveys).insert(id.clone(), tx);
        let request = serde_json::json!({ "id": id, "from": self.node, "survey": survey });
        let mut conn = self.conn.clone();
        let sent: redis::RedisResult<usize> = redis::cmd("PUBLISH")
            .arg(CONTROL)
            .arg(request.to_string())
            .query_async(&mut conn)
            .await;
        let result = match sent {
            Err(e) => Err(unavailable(e)),
            Ok(listeners) => {
                let mut answers: Vec<(String, serde_json::Value)> = Vec::new();
                let deadline = tokio::time::Instant::now() + SURVEY_TIMEOUT;
                while answers.len() < listeners {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(answer)) => answers.push(answer),
                        _ => break,
                    }
                }
                if !answers.iter().any(|(n, _)| *n == self.node) {
                    // This node's subscription is down: it answers for itself.
                    if let Some(inbound) = self.inbound.get().and_then(Weak::upgrade) {
                        answers.push((self.node.clone(), inbound.answer(&survey)));
                    }
                }
                answers.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(answers)
            }
        };
        lock(&self.surveys).remove(&id);
        result
    }

    /// A survey from another node (or this one) on `sb:control`: answered on the asker's
    /// reply channel.
    fn on_control(self: &Arc<Self>, payload: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Request {
            id: String,
            from: String,
            survey: Survey,
        }
        let Ok(request) = serde_json::from_slice::<Request>(payload) else {
            return;
        };
        let Some(inbound) = self.inbound.get().and_then(Weak::upgrade) else {
            return;
        };
        let answer = inbound.answer(&request.survey);
        let reply = serde_json::json!({ "id": request.id, "node": self.node, "answer": answer });
        let inner = self.clone();
        tokio::spawn(async move {
            let mut conn = inner.conn.clone();
            let _: redis::RedisResult<usize> = redis::cmd("PUBLISH")
                .arg(reply_channel(&request.from))
                .arg(reply.to_string())
                .query_async(&mut conn)
                .await;
        });
    }

    /// An answer to one of this node's surveys.
    fn on_reply(&self, payload: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Reply {
            id: String,
            node: String,
            answer: serde_json::Value,
        }
        let Ok(reply) = serde_json::from_slice::<Reply>(payload) else {
            return;
        };
        if let Some(tx) = lock(&self.surveys).get(&reply.id) {
            let _ = tx.send((reply.node, reply.answer));
        }
    }

    /// A presence change published on a room's channel: handed to the hub unless this
    /// node made it or the room's presence read already held it.
    fn on_presence(&self, room: &str, payload: &[u8]) {
        let mut parts = payload.splitn(7, |b| *b == b'\n');
        let (Some(_), Some(epoch), Some(seq), Some(node), Some(kind), Some(conn), Some(member)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return;
        };
        let (Ok(epoch), Some(seq), Ok(node), Ok(conn), Ok(member)) = (
            std::str::from_utf8(epoch),
            std::str::from_utf8(seq)
                .ok()
                .and_then(|s| s.parse::<u64>().ok()),
            std::str::from_utf8(node),
            std::str::from_utf8(conn),
            std::str::from_utf8(member),
        ) else {
            return;
        };
        {
            let mut rooms = lock(&self.rooms);
            let Some(sub) = rooms.get_mut(room) else {
                return;
            };
            if matches!(&sub.presence, Some((e, s)) if **e == *epoch && seq <= *s) {
                return;
            }
            sub.presence = Some((epoch.into(), seq));
        }
        if node == self.node {
            return;
        }
        let Some(inbound) = self.inbound.get().and_then(Weak::upgrade) else {
            return;
        };
        let conn: Arc<str> = conn.into();
        match kind {
            b"j" | b"u" => inbound.remote_presence(room, &conn, Some(&member.into())),
            b"l" => inbound.remote_presence(room, &conn, None),
            _ => {}
        }
    }

    /// Adds one publish script call to `pipe`.
    /// `fresh`: the epoch of a room that has none yet (one per batch).
    fn add_publish(
        &self,
        pipe: &mut redis::Pipeline,
        room: &str,
        p: &Publication,
        opts: StreamOptions,
        fresh: &str,
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
            .arg(fresh)
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
        let fresh = crate::ids::random_token();
        for p in batch {
            self.add_publish(&mut pipe, &p.room, &p.publication, p.opts, &fresh);
        }
        let results: Vec<redis::RedisResult<(u64, String, u8)>> =
            match self.run_scripted(&pipe, &self.publish).await {
                Ok(r) => r,
                Err(e) => return batch.iter().map(|_| Err(unavailable(&e))).collect(),
            };
        results
            .into_iter()
            .map(|r| {
                r.map(|(offset, epoch, duplicate)| Published {
                    epoch: epoch.into(),
                    offset,
                    duplicate: duplicate == 1,
                })
                .map_err(unavailable)
            })
            .collect()
    }

    /// Waits (at most a second) until this node has delivered `offset` of `room`, if it is
    /// subscribed to it.
    async fn delivered(&self, room: &str, epoch: &str, offset: u64) {
        self.wait_until(
            room,
            Duration::from_secs(1),
            |sub| matches!(&sub.handed, Some((e, last)) if &**e == epoch && *last >= offset),
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
            .arg(if query.open { "1" } else { "0" })
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
            open: true,
        };
        let messages = match self.read(room, &query).await {
            Ok(page) => page.messages,
            Err(e) => {
                self.lost(room, &e);
                return;
            }
        };
        self.hand_over(room, &epoch, messages);
    }

    /// Publications missed here could not be read back: the room's members are told
    /// (they rejoin, and recover what the stream still has or learn `recovered: false`).
    fn lost(&self, room: &str, error: &BrokerError) {
        tracing::warn!(room, error = ?error, "messages missed on this node could not be read back: its members rejoin");
        if let Some(inbound) = self.inbound.get().and_then(Weak::upgrade) {
            inbound.lost(room);
        }
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
            if let Some(sub) = lock(&self.rooms).get_mut(room) {
                sub.handed = Some((epoch.clone(), p.offset));
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
                    open: true,
                };
                match self.read(room, &query).await {
                    Ok(page) => missing = page.messages,
                    Err(e) => self.lost(room, &e),
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

/// `node \n join-seq \n member` of a presence hash's field.
fn split_member(v: &[u8]) -> Option<(&str, u64, &str)> {
    let mut parts = v.splitn(3, |b| *b == b'\n');
    let node = std::str::from_utf8(parts.next()?).ok()?;
    let seq = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let member = std::str::from_utf8(parts.next()?).ok()?;
    Some((node, seq, member))
}

/// Waits for the next item of `queue` and takes as many more as are waiting, up to
/// [`MAX_BATCH`], into `batch`; false once the queue is closed.
async fn next_batch<T>(queue: &mut mpsc::UnboundedReceiver<T>, batch: &mut Vec<T>) -> bool {
    let Some(first) = queue.recv().await else {
        return false;
    };
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    true
}

/// Writes presence operations to Redis in the order they were queued, as many at a time as
/// are waiting. After a failed write this node's members are announced again.
async fn presence_writer(inner: Weak<Inner>, mut queue: mpsc::UnboundedReceiver<PresenceOp>) {
    let mut ops = Vec::with_capacity(MAX_BATCH);
    while next_batch(&mut queue, &mut ops).await {
        let Some(node) = inner.upgrade() else {
            return;
        };
        if !node.write_presence(std::mem::take(&mut ops)).await {
            tokio::time::sleep(Duration::from_secs(1)).await;
            node.resync_all();
        }
    }
}

/// Heartbeats in Redis every quarter of `node_timeout`; takes the members of nodes silent
/// for `node_timeout` out of their rooms (once this node itself has been in touch with
/// Redis for that long: after an outage every node gets its time to beat again).
async fn heartbeat(inner: Weak<Inner>) {
    use std::sync::atomic::Ordering;
    let Some(period) = inner
        .upgrade()
        .map(|n| (n.node_timeout / 4).max(Duration::from_millis(50)))
    else {
        return;
    };
    let mut in_touch_since = Some(tokio::time::Instant::now());
    loop {
        tokio::time::sleep(period).await;
        let Some(node) = inner.upgrade() else {
            return;
        };
        if node.closing.load(Ordering::Relaxed) {
            return;
        }
        match node.beat().await {
            Ok((added, dead)) => {
                let since = *in_touch_since.get_or_insert_with(tokio::time::Instant::now);
                if added {
                    tracing::warn!("Redis did not know this node (it lost its data, or took the node for dead): announcing its members again");
                    node.resync_all();
                }
                if since.elapsed() >= node.node_timeout {
                    for d in dead.iter().filter(|d| **d != node.node) {
                        node.reap(d).await;
                    }
                }
            }
            Err(e) => {
                if in_touch_since.take().is_some() {
                    tracing::warn!(error = %e, "cannot heartbeat in Redis");
                }
            }
        }
    }
}

fn take_result(r: &mut redis::RedisResult<Value>) -> redis::RedisResult<Value> {
    std::mem::replace(r, Ok(Value::Nil))
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
    while next_batch(&mut queue, &mut batch).await {
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
        let control = sink
            .subscribe(&[CONTROL.to_owned(), reply_channel(&node.node)])
            .await;
        drop(node);
        if control.is_err() {
            continue;
        }
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
                    let name = message.get_channel_name();
                    if name == CONTROL {
                        node.on_control(message.get_payload_bytes());
                        continue;
                    }
                    if name.starts_with("sb:r:") {
                        node.on_reply(message.get_payload_bytes());
                        continue;
                    }
                    let Some(room) = room_of(name) else { continue };
                    if message.get_payload_bytes().starts_with(b"p\n") {
                        node.on_presence(room, message.get_payload_bytes());
                        continue;
                    }
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
        open: true,
    };
    let mut read = node.read(&room, &query).await;
    for wait in [100, 400, 1600] {
        if read.is_ok() {
            break;
        }
        // The command connection may still be coming back.
        tokio::time::sleep(Duration::from_millis(wait)).await;
        read = node.read(&room, &query).await;
    }
    let last = lock(&node.rooms).get(&room).and_then(|s| s.last.clone());
    match (&read, &last) {
        // Resubscribed after a lost connection: deliver what was published meanwhile.
        (Ok(page), Some((epoch, l)))
            if *epoch == page.position.epoch && *l < page.position.offset =>
        {
            node.catch_up(&room, epoch.clone(), *l, page.position.offset)
                .await;
        }
        // What was missed meanwhile cannot be known.
        (Err(e), Some(_)) => node.lost(&room, e),
        _ => {}
    }
    // Everyone in the room now (this node's members written first); the changes after the
    // read arrive on the channel, and those the read holds are skipped.
    let (tx, rx) = oneshot::channel();
    let _ = node
        .presence_ops
        .send(PresenceOp::Sync(room.clone(), Some(tx)));
    match tokio::time::timeout(Duration::from_secs(5), rx).await {
        Ok(Ok(Some(snapshot))) => {
            if let Some(sub) = lock(&node.rooms).get_mut(&room) {
                sub.presence = Some((snapshot.epoch.clone(), snapshot.seq));
            }
            if let Some(inbound) = node.inbound.get().and_then(Weak::upgrade) {
                inbound.remote_members(&room, snapshot.others);
            }
        }
        _ => tracing::warn!(
            room = &*room,
            "could not read the room's members on other nodes"
        ),
    }
    let mut rooms = lock(&node.rooms);
    if let Some(sub) = rooms.get_mut(&room) {
        if let Ok(page) = read {
            let behind = match &sub.last {
                Some((e, l)) => *e != page.position.epoch || *l < page.position.offset,
                None => true,
            };
            if behind {
                // Nothing of it is for this node's members: they joined after.
                sub.last = Some((page.position.epoch, page.position.offset));
                sub.handed = sub.last.clone();
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

    fn shutdown(&self) {
        RedisBroker::shutdown(self);
    }

    fn shared(&self) -> bool {
        true
    }

    fn presence(&self, room: &str, change: PresenceChange) {
        let _ = self
            .inner
            .presence_ops
            .send(PresenceOp::Change(room.into(), change));
    }

    fn members(&self, room: &str) -> Pending<Vec<(u64, Arc<str>)>> {
        RedisBroker::members(self, room)
    }

    fn rooms(&self) -> Pending<Vec<(Arc<str>, usize)>> {
        RedisBroker::rooms(self)
    }

    fn survey(&self, survey: Survey) -> Pending<Vec<(String, serde_json::Value)>> {
        RedisBroker::survey(self, survey)
    }
}

/// Rooms spread over several Redis servers (`redis_url` lists them, comma-separated): each
/// room lives on one of them, chosen by a hash of its name that every node computes alike;
/// the node heartbeats on each, and surveys go through the first. Every node must list the
/// same servers in the same order.
pub struct ShardedRedis {
    shards: Vec<RedisBroker>,
}

impl ShardedRedis {
    pub async fn connect(urls: &[&str], options: RedisOptions) -> Result<ShardedRedis, String> {
        let mut shards = Vec::with_capacity(urls.len());
        for url in urls {
            shards.push(RedisBroker::connect(url, options).await?);
        }
        Ok(ShardedRedis { shards })
    }

    fn shard(&self, room: &str) -> &RedisBroker {
        &self.shards[shard_of(room, self.shards.len())]
    }
}

/// The shard of `room` among `n`: FNV-1a of its name, the same on every node and release.
pub fn shard_of(room: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % n.max(1) as u64) as usize
}

impl super::Broker for ShardedRedis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn attach(&self, inbound: Weak<dyn Inbound>) {
        for shard in &self.shards {
            shard.attach(inbound.clone());
        }
    }

    fn publish(
        &self,
        room: &Arc<str>,
        publication: Publication,
        opts: StreamOptions,
    ) -> Pending<Published> {
        self.shard(room).publish(room, publication, opts)
    }

    fn history(
        &self,
        room: &str,
        query: HistoryQuery,
        opts: StreamOptions,
    ) -> Pending<HistoryPage> {
        self.shard(room).history(room, query, opts)
    }

    fn position(&self, room: &str) -> Option<Position> {
        self.shard(room).position(room)
    }

    fn subscribe(&self, room: &str, _opts: StreamOptions) {
        self.shard(room).subscribe(room);
    }

    fn unsubscribe(&self, room: &str) {
        self.shard(room).unsubscribe(room);
    }

    fn shutdown(&self) {
        for shard in &self.shards {
            shard.shutdown();
        }
    }

    fn shared(&self) -> bool {
        true
    }

    fn presence(&self, room: &str, change: PresenceChange) {
        super::Broker::presence(self.shard(room), room, change);
    }

    fn members(&self, room: &str) -> Pending<Vec<(u64, Arc<str>)>> {
        self.shard(room).members(room)
    }

    fn rooms(&self) -> Pending<Vec<(Arc<str>, usize)>> {
        let pending: Vec<_> = self.shards.iter().map(RedisBroker::rooms).collect();
        let (reply, rx) = oneshot::channel();
        tokio::spawn(async move {
            let mut all = Vec::new();
            for p in pending {
                match p.wait().await {
                    Ok(rooms) => all.extend(rooms),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
            }
            let _ = reply.send(Ok(all));
        });
        Pending::Waiting(rx)
    }

    fn survey(&self, survey: Survey) -> Pending<Vec<(String, serde_json::Value)>> {
        self.shards[0].survey(survey)
    }
}
