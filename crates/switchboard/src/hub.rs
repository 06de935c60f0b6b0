//! The hub: connections, rooms, presence and fan-out — where real-time state lives.
//!
//! Rooms sit in a sharded map; each room has its own lock, held while it assigns an offset
//! and hands the encoded frame to its members' outboxes. A publish therefore touches only
//! its room: no global lock on the publish path. A message is serialised once per room and
//! every member's outbox gets a reference to the same bytes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;
use switchboard_ws::{CloseCode, Frame};

use crate::broker::Broker;
use crate::outbox::Outbox;
use crate::protocol::{member_json, ErrorCode, Failure, Out};
use crate::shards::Shards;

/// One connection as the hub sees it.
pub struct ConnHandle {
    /// Process-unique number, the key in room member maps.
    pub num: u64,
    /// The id clients see (`welcome.conn`, `member.conn`).
    pub id: Arc<str>,
    pub outbox: Outbox,
    /// The authenticated user (the token's `sub`), once known: for disconnecting a user.
    user: Mutex<Option<Arc<str>>>,
}

impl ConnHandle {
    pub fn new(num: u64, id: Arc<str>, outbox: Outbox) -> ConnHandle {
        ConnHandle {
            num,
            id,
            outbox,
            user: Mutex::new(None),
        }
    }

    pub fn set_user(&self, user: Option<Arc<str>>) {
        *self.user.lock().unwrap_or_else(|e| e.into_inner()) = user;
    }

    pub fn user(&self) -> Option<Arc<str>> {
        self.user.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Queues a reply; a full queue closes the connection (its task sees the overflow).
    pub fn send(&self, frame: &Frame) {
        let _ = self.outbox.push(frame);
    }
}

pub struct Room {
    name: Arc<str>,
    state: Mutex<RoomState>,
}

struct RoomState {
    epoch: Arc<str>,
    offset: u64,
    members: HashMap<u64, Member>,
    /// Whether members are listed and presence events sent (the namespace's `presence`).
    presence: bool,
    /// Join order (member `seq` → connection number): member lists are read from here a
    /// page at a time, so a join costs the same in a room of ten or ten thousand.
    order: BTreeMap<u64, u64>,
    next_seq: u64,
    /// Set when the last member left and the room was removed from the hub: a connection
    /// that looked it up just before must look again.
    closed: bool,
}

struct Member {
    conn: Arc<ConnHandle>,
    /// `{"conn":..,"user":..,"info":..,"presence":..}`, serialised once per change.
    json: Arc<str>,
    user: Option<Arc<str>>,
    info: Option<Arc<str>>,
    /// Join order, so member lists read in the order people arrived.
    seq: u64,
}

impl Room {
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // Room state is only changed in short sections that do not panic midway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One page of a room's member list.
struct Page {
    members: Vec<Arc<str>>,
    /// Where the next page starts (the `seq` of this page's last member), if there is one.
    next: Option<u64>,
}

impl RoomState {
    /// Up to `limit` members after join position `after`, in join order, stopping early
    /// where the page would pass `budget` bytes (but never empty while members remain).
    fn page(&self, after: u64, limit: usize, budget: usize) -> Page {
        let mut members = Vec::new();
        let mut bytes = 0;
        let mut last = None;
        let mut rest = self.order.range(after.saturating_add(1)..);
        for (&seq, num) in rest.by_ref() {
            let Some(m) = self.members.get(num) else {
                continue;
            };
            if !members.is_empty() && (members.len() == limit || bytes + m.json.len() > budget) {
                return Page {
                    members,
                    next: last,
                };
            }
            bytes += m.json.len() + 1;
            members.push(m.json.clone());
            last = Some(seq);
        }
        Page {
            members,
            next: None,
        }
    }

    fn send_to_all(&self, frame: &Frame, except: Option<u64>) {
        for (num, m) in &self.members {
            if Some(*num) != except {
                m.conn.send(frame);
            }
        }
    }
}

/// What a join may carry besides the room.
pub struct JoinRequest<'a> {
    pub id: Option<i64>,
    /// Who the member is: the token's `sub` and `info` (`None` for anonymous connections).
    pub user: Option<Arc<str>>,
    pub info: Option<Arc<str>>,
    /// Whether the room lists members and sends presence events (its namespace's option).
    pub announce: bool,
    pub presence: Option<&'a RawValue>,
    /// Whether the client sent `since` (asking for recovery).
    pub since: bool,
}

/// How big the hub's replies may be.
#[derive(Debug, Clone, Copy)]
pub struct ReplyLimits {
    /// Most members in one `joined` or `members` reply.
    pub members_page_size: usize,
    /// Most bytes of member JSON in one reply, so that a reply always fits the outbound
    /// queue of the client that asked (a fraction of it, leaving room for live traffic).
    pub members_page_bytes: usize,
}

/// Whom [`Hub::disconnect`] closes.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    User(&'a str),
    Conn(&'a str),
}

/// `from` of a message the server published (the HTTP API): not a member.
pub const SERVER_MEMBER: &str = r#"{"conn":null,"user":null,"presence":{},"server":true}"#;

pub struct Hub {
    rooms: Shards<Arc<str>, Arc<Room>>,
    connections: Shards<u64, Arc<ConnHandle>>,
    /// Document connections (`/yjs`), known here only to be disconnected by the API.
    documents: Shards<u64, Arc<ConnHandle>>,
    broker: Arc<dyn Broker>,
    replies: ReplyLimits,
}

impl Hub {
    pub fn new(broker: Arc<dyn Broker>, replies: ReplyLimits) -> Hub {
        let shards = std::thread::available_parallelism().map_or(4, |n| n.get() * 8);
        Hub {
            rooms: Shards::new(shards),
            connections: Shards::new(shards),
            documents: Shards::new(shards),
            broker,
            replies,
        }
    }

    pub fn broker_name(&self) -> &'static str {
        self.broker.name()
    }

    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn register(&self, conn: Arc<ConnHandle>) {
        self.connections.insert(conn.num, conn);
    }

    /// Removes a connection and its presence from every room it was in.
    pub fn unregister(&self, conn: &ConnHandle, rooms: impl IntoIterator<Item = Arc<Room>>) {
        for room in rooms {
            self.remove_member(conn, &room, None);
        }
        self.connections.remove_if(&conn.num, |_| true);
    }

    /// Every connection, e.g. to tell them all that the server is shutting down.
    pub fn connections(&self) -> Vec<Arc<ConnHandle>> {
        self.connections.values()
    }

    /// Adds `conn` to `room` (or, if it is there already, replaces its presence) and
    /// answers `joined`. Others in the room see a presence `join` (or `update`).
    pub fn join(&self, conn: &Arc<ConnHandle>, name: &str, req: JoinRequest<'_>) -> Arc<Room> {
        loop {
            let room = self.rooms.get_or_insert_with(name, || {
                let name: Arc<str> = name.into();
                let room = Arc::new(Room {
                    name: name.clone(),
                    state: Mutex::new(RoomState {
                        epoch: self.broker.open_room(&name),
                        offset: 0,
                        members: HashMap::new(),
                        presence: req.announce,
                        order: BTreeMap::new(),
                        next_seq: 0,
                        closed: false,
                    }),
                });
                (name, room)
            });
            let mut st = room.lock();
            if st.closed {
                continue; // emptied and removed between our lookup and our lock
            }
            let existing = st.members.get(&conn.num).map(|m| {
                (
                    m.seq,
                    m.json.clone(),
                    m.user == req.user && m.info == req.info,
                )
            });
            let user = req.user.as_deref();
            let info = req.info.as_deref();
            let (seq, json) = match (existing, req.presence) {
                // A rejoin without presence (and as the same user) keeps what the member has.
                (Some((seq, json, true)), None) => (seq, json),
                (Some((seq, json, _)), None) => {
                    let presence = presence_of(&json);
                    (seq, member_json(&conn.id, user, info, presence).into())
                }
                (Some((seq, _, _)), Some(p)) => {
                    (seq, member_json(&conn.id, user, info, Some(p.get())).into())
                }
                (None, presence) => {
                    st.next_seq += 1;
                    let json: Arc<str> =
                        member_json(&conn.id, user, info, presence.map(RawValue::get)).into();
                    (st.next_seq, json)
                }
            };
            let previous = st.members.insert(
                conn.num,
                Member {
                    conn: conn.clone(),
                    json: json.clone(),
                    user: req.user.clone(),
                    info: req.info.clone(),
                    seq,
                },
            );
            st.order.insert(seq, conn.num);
            let mut reply = Out::new("joined")
                .opt_id(req.id)
                .str("room", name)
                .str("epoch", &st.epoch)
                .uint("offset", st.offset);
            if st.presence {
                let page = st.page(
                    0,
                    self.replies.members_page_size,
                    self.replies.members_page_bytes,
                );
                reply = reply
                    .raw_list("members", page.members.iter().map(|m| &**m))
                    .uint("member_count", st.members.len() as u64);
                if let Some(next) = page.next {
                    reply = reply.str("members_cursor", &next.to_string());
                }
            } else {
                reply = reply.raw_list("members", []);
            }
            if req.since {
                // Recovery needs history, which this server does not keep yet: say so
                // plainly instead of leaving a silent gap.
                reply = reply.bool("recovered", false);
            }
            conn.send(&reply.raw_list("messages", []).finish());
            if st.presence {
                let event = if previous.is_some() { "update" } else { "join" };
                let frame = presence_frame(name, event, &json);
                st.send_to_all(&frame, Some(conn.num));
                self.broker.forward_presence(name, &frame);
            }
            drop(st);
            return room;
        }
    }

    /// Takes `conn` out of `room`, answering `left` when `id` is given (a request) or
    /// `reason` is (the server made it leave). Others see a presence `leave`.
    pub fn leave(
        &self,
        conn: &ConnHandle,
        room: &Arc<Room>,
        id: Option<i64>,
        reason: Option<&str>,
    ) {
        self.remove_member(conn, room, Some((id, reason)));
    }

    fn remove_member(
        &self,
        conn: &ConnHandle,
        room: &Arc<Room>,
        reply: Option<(Option<i64>, Option<&str>)>,
    ) {
        let mut st = room.lock();
        let Some(member) = st.members.remove(&conn.num) else {
            return;
        };
        st.order.remove(&member.seq);
        if let Some((id, reason)) = reply {
            if id.is_some() || reason.is_some() {
                let mut left = Out::new("left").opt_id(id).str("room", &room.name);
                if let Some(reason) = reason {
                    left = left.str("reason", reason);
                }
                conn.send(&left.finish());
            }
        }
        if st.presence {
            let frame = presence_frame(&room.name, "leave", &member.json);
            st.send_to_all(&frame, None);
            self.broker.forward_presence(&room.name, &frame);
        }
        if st.members.is_empty() {
            st.closed = true;
            self.rooms.remove_if(&*room.name, |r| Arc::ptr_eq(r, room));
            self.broker.close_room(&room.name);
        }
    }

    /// Gives the message the room's next offset and queues it for every member (the
    /// sender too unless `echo` is false); answers `ok` with the offset when `id` is given.
    pub fn publish(
        &self,
        conn: &ConnHandle,
        room: &Room,
        data: &RawValue,
        echo: bool,
        id: Option<i64>,
    ) -> Result<u64, Failure> {
        let mut st = room.lock();
        let Some(from) = st.members.get(&conn.num).map(|m| m.json.clone()) else {
            return Err(not_joined(&room.name));
        };
        st.offset += 1;
        let offset = st.offset;
        let data = data.get();
        let frame = Out::with_capacity("message", data.len() + from.len() + room.name.len() + 64)
            .str("room", &room.name)
            .raw("data", data)
            .raw("from", &from)
            .uint("offset", offset)
            .uint("ts", now_ms())
            .finish();
        st.send_to_all(&frame, if echo { None } else { Some(conn.num) });
        if id.is_some() {
            conn.send(&Out::new("ok").opt_id(id).uint("offset", offset).finish());
        }
        self.broker.forward_message(&room.name, offset, &frame);
        Ok(offset)
    }

    /// Publishes `data` to room `name` on behalf of the server (the HTTP API): every member
    /// gets it, with `from` naming the server. `None` when the room has no members (it does
    /// not exist: there is no one to deliver to, and no history to keep it in yet).
    pub fn publish_as_server(&self, name: &str, data: &RawValue) -> Option<u64> {
        let room = self.rooms.get(name)?;
        let mut st = room.lock();
        if st.closed {
            return None;
        }
        st.offset += 1;
        let offset = st.offset;
        let data = data.get();
        let frame = Out::with_capacity("message", data.len() + name.len() + 128)
            .str("room", &room.name)
            .raw("data", data)
            .raw("from", SERVER_MEMBER)
            .uint("offset", offset)
            .uint("ts", now_ms())
            .finish();
        st.send_to_all(&frame, None);
        self.broker.forward_message(&room.name, offset, &frame);
        Some(offset)
    }

    /// Rooms whose names start with `prefix`, with their member counts, sorted by name.
    pub fn room_list(&self, prefix: &str) -> Vec<(Arc<str>, usize)> {
        let mut rooms: Vec<(Arc<str>, usize)> = self
            .rooms
            .values()
            .into_iter()
            .filter(|r| r.name.starts_with(prefix))
            .map(|r| {
                let n = r.lock().members.len();
                (r.name.clone(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        rooms.sort_unstable();
        rooms
    }

    /// One page of room `name`'s members for the HTTP API: (members, count, next cursor), or
    /// `None` when the room has no members.
    pub fn member_page(
        &self,
        name: &str,
        cursor: Option<u64>,
        limit: usize,
    ) -> Option<(Vec<Arc<str>>, usize, Option<u64>)> {
        let room = self.rooms.get(name)?;
        let st = room.lock();
        if st.closed {
            return None;
        }
        let page = st.page(cursor.unwrap_or(0), limit, self.replies.members_page_bytes);
        Some((page.members, st.members.len(), page.next))
    }

    /// Closes every connection of `user` (or the one connection `conn`) with `code`:
    /// protocol and document connections alike. Returns how many were closed.
    pub fn disconnect(&self, who: Who<'_>, code: CloseCode, reason: &str) -> usize {
        let mut n = 0;
        for conn in self
            .connections
            .values()
            .into_iter()
            .chain(self.documents.values())
        {
            let matches = match who {
                Who::User(u) => conn.user().as_deref() == Some(u),
                Who::Conn(c) => &*conn.id == c,
            };
            if matches && conn.outbox.close_with(code, reason) {
                n += 1;
            }
        }
        n
    }

    /// Registers a document connection, so that [`disconnect`](Hub::disconnect) reaches it.
    pub fn register_document(&self, conn: Arc<ConnHandle>) {
        self.documents.insert(conn.num, conn);
    }

    pub fn unregister_document(&self, conn: &ConnHandle) {
        self.documents.remove_if(&conn.num, |_| true);
    }

    /// Replaces `conn`'s presence state in `room`; every member (the sender too) sees a
    /// presence `update`, so everyone's member list reads the same.
    pub fn set_presence(
        &self,
        conn: &ConnHandle,
        room: &Room,
        presence: &RawValue,
        id: Option<i64>,
    ) -> Result<(), Failure> {
        let mut st = room.lock();
        let Some(member) = st.members.get_mut(&conn.num) else {
            return Err(not_joined(&room.name));
        };
        let json: Arc<str> = member_json(
            &conn.id,
            member.user.as_deref(),
            member.info.as_deref(),
            Some(presence.get()),
        )
        .into();
        member.json = json.clone();
        if id.is_some() {
            conn.send(&Out::new("ok").opt_id(id).finish());
        }
        let frame = presence_frame(&room.name, "update", &json);
        st.send_to_all(&frame, None);
        self.broker.forward_presence(&room.name, &frame);
        Ok(())
    }

    /// Answers `members` with one page of the room's member list, in join order: the first
    /// page, or the one after `cursor` (a previous reply's). `limit` is at most the page size.
    pub fn members(
        &self,
        conn: &ConnHandle,
        room: &Room,
        cursor: Option<u64>,
        limit: Option<usize>,
        id: Option<i64>,
    ) {
        if id.is_none() {
            return; // a reply nobody can match is not sent (protocol: no id, no reply)
        }
        let limit = limit.unwrap_or(self.replies.members_page_size);
        let st = room.lock();
        let page = st.page(cursor.unwrap_or(0), limit, self.replies.members_page_bytes);
        let reply = Out::new("members")
            .opt_id(id)
            .str("room", &room.name)
            .raw_list("members", page.members.iter().map(|m| &**m))
            .uint("member_count", st.members.len() as u64);
        drop(st);
        let reply = match page.next {
            Some(next) => reply.str("cursor", &next.to_string()),
            None => reply.raw("cursor", "null"),
        };
        conn.send(&reply.finish());
    }

    /// The most members one `members` request may ask for.
    pub fn members_page_size(&self) -> usize {
        self.replies.members_page_size
    }
}

/// The `presence` object of a member's JSON (which this module wrote).
fn presence_of(member: &str) -> Option<&str> {
    let at = member.rfind(",\"presence\":")?;
    member
        .get(at + ",\"presence\":".len()..member.len() - 1)
        .filter(|p| p.starts_with('{'))
}

fn presence_frame(room: &str, event: &str, member: &str) -> Frame {
    Out::with_capacity("presence", member.len() + room.len() + 48)
        .str("room", room)
        .str("event", event)
        .raw("member", member)
        .finish()
}

pub fn not_joined(room: &str) -> Failure {
    Failure::new(
        ErrorCode::NotJoined,
        format!("join room {room:?} before using it"),
    )
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
