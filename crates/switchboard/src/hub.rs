//! The hub: connections, rooms, presence and fan-out — where real-time state lives.
//!
//! Rooms sit in a sharded map; each room has its own lock, held while a publication from
//! the broker is handed to its members' outboxes. A publish therefore touches only its
//! room: no global lock on the publish path. The broker assigns offsets and keeps history
//! (`broker/`); the hub receives every publication through [`Inbound::deliver`], in offset
//! order, and fans it out. A message is serialised once (its [`Publication`] caches the
//! frame) and every member's outbox gets a reference to the same bytes.
//!
//! Joining with recovery: the member is added at once but *pending*: publications for it
//! are buffered while the broker reads what it missed; then [`Hub::finish_join`] answers
//! `joined` with the missed messages and sends the buffered ones that came after them.
//! Each member has a `floor`, the offset its `joined` reply brought it to, and receives only
//! later offsets: nothing lost, nothing twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;
use switchboard_ws::{CloseCode, Frame};

use crate::broker::{
    Broker, BrokerError, HistoryPage, Inbound, Payload, Pending, Policy, Position, PresenceChange,
    Publication, Published, StreamOptions, Survey,
};
use crate::config::PresenceMode;
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
    /// The room's epoch, once the broker has told it (the first join's reply).
    epoch: Option<Arc<str>>,
    /// The offset of the last publication delivered here (or the position the broker
    /// answered, if later): a member joining without `since` starts from here.
    top: u64,
    members: MemberMap,
    /// What members are told of each other (the namespace's `presence`).
    mode: PresenceMode,
    /// Presence changes held for the next frame (a busy room sends one per interval).
    announcer: Announcer,
    /// Join order (member `seq` → who): member lists are read from here a page at a time,
    /// so a join costs the same in a room of ten or ten thousand.
    order: JoinOrder,
    /// Members on other nodes (a shared broker), by connection id.
    remote: Remotes,
    next_seq: u64,
    /// Set when the last member left and the room was removed from the hub: a connection
    /// that looked it up just before must look again.
    closed: bool,
    /// Its creator subscribed the broker to it: whoever closes it unsubscribes (once per
    /// room, so that the broker's count of members here never drops below the truth).
    subscribed: bool,
}

/// Presence changes of one room, sent at once while the room is quiet and gathered into one
/// frame per `presence_interval` while it is busy.
#[derive(Default)]
struct Announcer {
    /// When the last presence frame went out.
    last: Option<Instant>,
    /// Changes waiting for the flush.
    batch: Vec<Held>,
    /// The member count changed since the last frame (count mode).
    count_changed: bool,
    /// A flush is scheduled.
    scheduled: bool,
}

/// A presence change waiting for its room's next frame.
struct Held {
    event: &'static str,
    conn: Arc<str>,
    json: Arc<str>,
    /// The member of this node that joined (it has its `joined` reply): it is sent only
    /// the changes after this one.
    joiner: Option<u64>,
}

/// Most changes one batched presence frame carries: more are sent at once.
const MAX_BATCH: usize = 256;

/// A place in a room's join order.
enum Slot {
    /// A member on this node: its connection number.
    Local(u64),
    /// A member on another node: its connection id.
    Remote(Arc<str>),
}

/// Makes room for one more entry in a list that usually stays short (a room's members, a
/// connection's rooms): one entry for the first, then a few at a time, where a push would
/// make room for four at once and double after.
pub(crate) fn make_room_sparingly<T>(list: &mut Vec<T>) {
    if list.capacity() == list.len() {
        list.reserve_exact(list.len().clamp(1, 4));
    }
}

/// Gives an emptied list's memory back (an empty `Vec` holds none).
pub(crate) fn free_if_empty<T>(list: &mut Vec<T>) {
    if list.is_empty() {
        *list = Vec::new();
    }
}

/// A room's members on this node, by connection number: a list while the room is small (a
/// room of one holds one entry, where a hash map holds a table of four, ~370 bytes), a hash
/// map past [`MemberMap::SMALL`] members.
enum MemberMap {
    Small(Vec<(u64, Member)>),
    Big(HashMap<u64, Member>),
}

impl Default for MemberMap {
    fn default() -> MemberMap {
        MemberMap::Small(Vec::new())
    }
}

/// One of two iterators of the same items.
enum Either<A, B> {
    A(A),
    B(B),
}

impl<A: Iterator, B: Iterator<Item = A::Item>> Iterator for Either<A, B> {
    type Item = A::Item;

    fn next(&mut self) -> Option<A::Item> {
        match self {
            Either::A(a) => a.next(),
            Either::B(b) => b.next(),
        }
    }
}

impl MemberMap {
    const SMALL: usize = 16;

    fn get(&self, num: &u64) -> Option<&Member> {
        match self {
            MemberMap::Small(list) => list.iter().find(|(n, _)| n == num).map(|(_, m)| m),
            MemberMap::Big(map) => map.get(num),
        }
    }

    fn get_mut(&mut self, num: &u64) -> Option<&mut Member> {
        match self {
            MemberMap::Small(list) => list.iter_mut().find(|(n, _)| n == num).map(|(_, m)| m),
            MemberMap::Big(map) => map.get_mut(num),
        }
    }

    /// Adds or replaces a member; returns the one it replaced.
    fn insert(&mut self, num: u64, member: Member) -> Option<Member> {
        match self {
            MemberMap::Small(list) => {
                if let Some((_, m)) = list.iter_mut().find(|(n, _)| *n == num) {
                    return Some(std::mem::replace(m, member));
                }
                if list.len() >= Self::SMALL {
                    let mut map: HashMap<u64, Member> = std::mem::take(list).into_iter().collect();
                    map.insert(num, member);
                    *self = MemberMap::Big(map);
                    return None;
                }
                make_room_sparingly(list);
                list.push((num, member));
                None
            }
            MemberMap::Big(map) => map.insert(num, member),
        }
    }

    fn remove(&mut self, num: &u64) -> Option<Member> {
        match self {
            MemberMap::Small(list) => {
                let at = list.iter().position(|(n, _)| n == num)?;
                let (_, member) = list.swap_remove(at);
                free_if_empty(list);
                Some(member)
            }
            MemberMap::Big(map) => map.remove(num),
        }
    }

    fn len(&self) -> usize {
        match self {
            MemberMap::Small(list) => list.len(),
            MemberMap::Big(map) => map.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn iter(&self) -> impl Iterator<Item = (&u64, &Member)> {
        match self {
            MemberMap::Small(list) => Either::A(list.iter().map(|(n, m)| (n, m))),
            MemberMap::Big(map) => Either::B(map.iter()),
        }
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&u64, &mut Member)> {
        match self {
            MemberMap::Small(list) => Either::A(list.iter_mut().map(|(n, m)| (&*n, m))),
            MemberMap::Big(map) => Either::B(map.iter_mut()),
        }
    }

    fn keys(&self) -> impl Iterator<Item = &u64> {
        self.iter().map(|(n, _)| n)
    }

    fn values(&self) -> impl Iterator<Item = &Member> {
        self.iter().map(|(_, m)| m)
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Member> {
        self.iter_mut().map(|(_, m)| m)
    }
}

/// A room's join order: member `seq` → who. Small rooms keep it as a sorted list, which
/// for a room of one is one 32-byte entry where a B-tree takes a ~280-byte node; past
/// [`JoinOrder::SMALL`] members it becomes a B-tree, so that a leave in a room of ten
/// thousand costs a lookup, not a shift of the list.
enum JoinOrder {
    Small(Vec<(u64, Slot)>),
    Big(BTreeMap<u64, Slot>),
}

impl Default for JoinOrder {
    fn default() -> JoinOrder {
        JoinOrder::Small(Vec::new())
    }
}

impl JoinOrder {
    const SMALL: usize = 32;

    /// Puts a member at join position `seq` (a member joining again keeps its own).
    fn insert(&mut self, seq: u64, slot: Slot) {
        match self {
            JoinOrder::Small(list) => {
                if let Ok(at) = list.binary_search_by_key(&seq, |(s, _)| *s) {
                    list[at].1 = slot;
                    return;
                }
                if list.len() >= Self::SMALL {
                    let mut tree: BTreeMap<u64, Slot> = std::mem::take(list).into_iter().collect();
                    tree.insert(seq, slot);
                    *self = JoinOrder::Big(tree);
                    return;
                }
                make_room_sparingly(list);
                let at = list.partition_point(|(s, _)| *s < seq);
                list.insert(at, (seq, slot));
            }
            JoinOrder::Big(tree) => {
                tree.insert(seq, slot);
            }
        }
    }

    fn remove(&mut self, seq: u64) {
        match self {
            JoinOrder::Small(list) => {
                if let Ok(at) = list.binary_search_by_key(&seq, |(s, _)| *s) {
                    list.remove(at);
                }
                free_if_empty(list);
            }
            JoinOrder::Big(tree) => {
                tree.remove(&seq);
            }
        }
    }

    /// Calls `f` for each member after join position `after`, in join order, while it
    /// returns true.
    fn each_after(&self, after: u64, mut f: impl FnMut(u64, &Slot) -> bool) {
        match self {
            JoinOrder::Small(list) => {
                let from = list.partition_point(|(s, _)| *s <= after);
                for (seq, slot) in &list[from..] {
                    if !f(*seq, slot) {
                        return;
                    }
                }
            }
            JoinOrder::Big(tree) => {
                for (&seq, slot) in tree.range(after.saturating_add(1)..) {
                    if !f(seq, slot) {
                        return;
                    }
                }
            }
        }
    }
}

/// A member on another node, as its node announced it.
struct Remote {
    json: Arc<str>,
    seq: u64,
}

/// A room's members on other nodes, by connection id: a map only while there are some (an
/// empty hash map in every room would cost it 40 bytes more, on one node too).
// The box is the point: an empty `Option<Box<HashMap>>` is 8 bytes, an empty `HashMap` 48.
#[allow(clippy::box_collection)]
#[derive(Default)]
struct Remotes(Option<Box<HashMap<Arc<str>, Remote>>>);

impl Remotes {
    fn get(&self, conn: &str) -> Option<&Remote> {
        self.0.as_ref()?.get(conn)
    }

    fn get_mut(&mut self, conn: &str) -> Option<&mut Remote> {
        self.0.as_mut()?.get_mut(conn)
    }

    fn insert(&mut self, conn: Arc<str>, remote: Remote) {
        self.0.get_or_insert_with(Box::default).insert(conn, remote);
    }

    fn remove(&mut self, conn: &str) -> Option<Remote> {
        let map = self.0.as_mut()?;
        let removed = map.remove(conn);
        if map.is_empty() {
            self.0 = None;
        }
        removed
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.iter().flat_map(|m| m.keys())
    }
}

struct Member {
    conn: Arc<ConnHandle>,
    /// `{"conn":..,"user":..,"info":..,"presence":..}`, serialised once per change.
    json: Arc<str>,
    user: Option<Arc<str>>,
    info: Option<Arc<str>>,
    /// Join order, so member lists read in the order people arrived.
    seq: u64,
    /// The offset its `joined` reply brought it to: only later publications are sent.
    floor: u64,
    /// While its join is being answered: publications that arrived meanwhile.
    pending: Option<Box<Buffered>>,
}

/// Publications held for a member whose `joined` reply is being made.
#[derive(Default)]
struct Buffered {
    publications: Vec<Arc<Publication>>,
    /// Their frames' bytes.
    bytes: usize,
    /// More arrived than may be held: the member cannot be told exactly what it missed.
    overflowed: bool,
}

impl Room {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared (for keeping beside the room without another copy).
    pub fn shared_name(&self) -> Arc<str> {
        self.name.clone()
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
        let mut more = false;
        self.order.each_after(after, |seq, slot| {
            let json = match slot {
                Slot::Local(num) => self.members.get(num).map(|m| &m.json),
                Slot::Remote(conn) => self.remote.get(conn).map(|r| &r.json),
            };
            let Some(json) = json else {
                return true;
            };
            if !members.is_empty() && (members.len() == limit || bytes + json.len() > budget) {
                more = true;
                return false;
            }
            bytes += json.len() + 1;
            members.push(json.clone());
            last = Some(seq);
            true
        });
        Page {
            members,
            next: if more { last } else { None },
        }
    }

    /// Members on this node and on the others.
    fn member_count(&self) -> usize {
        self.members.len() + self.remote.len()
    }

    /// Tells the members that `conn` joined, changed (`update`) or left: at once, while the
    /// room's last presence frame is older than `interval`; otherwise held for the flush the
    /// caller must schedule when this returns true. An update of a member whose change is
    /// held replaces that change's member (a flood of updates costs one). `except` is left out
    /// of a frame sent at once (a joiner has its `joined` reply).
    fn announce(
        &mut self,
        room: &str,
        event: &'static str,
        conn: &Arc<str>,
        json: &Arc<str>,
        except: Option<u64>,
        pacing: Pacing,
    ) -> bool {
        if self.mode == PresenceMode::Off {
            return false;
        }
        let interval = pacing.for_members(self.member_count());
        let now = Instant::now();
        let a = &mut self.announcer;
        let quiet = !a.scheduled && a.last.is_none_or(|t| now.duration_since(t) >= interval);
        if quiet {
            // A frame nobody else receives (the first member's join) does not count.
            let others = self.members.keys().any(|n| Some(*n) != except);
            if others {
                a.last = Some(now);
            }
            let frame = match self.mode {
                PresenceMode::Full => presence_frame(room, event, json, self.member_count()),
                _ => count_frame(room, self.member_count()),
            };
            self.send_to_all(&frame, except);
            return false;
        }
        let held = Held {
            event,
            conn: conn.clone(),
            json: json.clone(),
            joiner: except,
        };
        if self.mode == PresenceMode::Count {
            a.count_changed = true;
        } else if event == "update" {
            // Coalesced into the member's last held update (not into a join: the joiner
            // must see its own update).
            match a
                .batch
                .last_mut()
                .filter(|h| h.conn == *conn && h.event == "update")
            {
                Some(last) => last.json = json.clone(),
                None => a.batch.push(held),
            }
        } else {
            a.batch.push(held);
        }
        if a.batch.len() >= MAX_BATCH {
            self.flush(room);
            self.announcer.scheduled = true; // the scheduled flush stays scheduled
            return false;
        }
        !std::mem::replace(&mut self.announcer.scheduled, true)
    }

    /// Sends what the announcer holds, as one frame to every member (a member that joined
    /// meanwhile gets only the changes after its join).
    fn flush(&mut self, room: &str) {
        let a = &mut self.announcer;
        a.scheduled = false;
        match self.mode {
            PresenceMode::Full if !a.batch.is_empty() => {
                let batch = std::mem::take(&mut a.batch);
                let count = self.member_count();
                let joined: HashMap<u64, usize> = batch
                    .iter()
                    .enumerate()
                    .filter_map(|(i, h)| h.joiner.map(|num| (num, i)))
                    .collect();
                let all = batch_frame(room, &batch, count);
                for (num, m) in self.members.iter() {
                    if m.pending.is_some() {
                        continue;
                    }
                    match joined.get(num) {
                        None => m.conn.send(&all),
                        Some(&i) if i + 1 < batch.len() => {
                            m.conn.send(&batch_frame(room, &batch[i + 1..], count));
                        }
                        Some(_) => {}
                    }
                }
            }
            PresenceMode::Count if std::mem::take(&mut a.count_changed) => {
                let frame = count_frame(room, self.member_count());
                self.send_to_all(&frame, None);
            }
            _ => return,
        }
        self.announcer.last = Some(Instant::now());
    }

    /// Records a member of another node joining or changing (`Some`) or leaving (`None`),
    /// and tells this node's members; true: schedule a flush.
    fn set_remote(
        &mut self,
        room: &str,
        conn: &Arc<str>,
        member: Option<&Arc<str>>,
        pacing: Pacing,
    ) -> bool {
        match member {
            Some(json) => {
                let event = match self.remote.get_mut(conn) {
                    Some(r) if r.json == *json => return false,
                    Some(r) => {
                        r.json = json.clone();
                        "update"
                    }
                    None => {
                        self.next_seq += 1;
                        let seq = self.next_seq;
                        self.order.insert(seq, Slot::Remote(conn.clone()));
                        let remote = Remote {
                            json: json.clone(),
                            seq,
                        };
                        self.remote.insert(conn.clone(), remote);
                        "join"
                    }
                };
                self.announce(room, event, conn, json, None, pacing)
            }
            None => {
                let Some(r) = self.remote.remove(conn) else {
                    return false;
                };
                self.order.remove(r.seq);
                self.announce(room, "leave", conn, &r.json, None, pacing)
            }
        }
    }

    /// Sends a presence event to every member but `except` (and those whose `joined`
    /// reply is still being made: it will list members as they are then).
    fn send_to_all(&self, frame: &Frame, except: Option<u64>) {
        for (num, m) in self.members.iter() {
            if Some(*num) != except && m.pending.is_none() {
                m.conn.send(frame);
            }
        }
    }

    fn joined_reply(
        &self,
        room: &str,
        id: Option<i64>,
        epoch: &str,
        offset: u64,
        replies: &ReplyLimits,
    ) -> Out {
        let mut reply = Out::new("joined")
            .opt_id(id)
            .str("room", room)
            .str("epoch", epoch)
            .uint("offset", offset);
        if self.mode == PresenceMode::Count {
            reply = reply
                .raw_list("members", [])
                .uint("member_count", self.member_count() as u64);
        } else if self.mode == PresenceMode::Full {
            let page = self.page(0, replies.members_page_size, replies.members_page_bytes);
            reply = reply
                .raw_list("members", page.members.iter().map(|m| &**m))
                .uint("member_count", self.member_count() as u64);
            if let Some(next) = page.next {
                reply = reply.str("members_cursor", &next.to_string());
            }
        } else {
            reply = reply.raw_list("members", []);
        }
        reply
    }
}

/// What a join may carry besides the room.
pub struct JoinRequest<'a> {
    pub id: Option<i64>,
    /// Who the member is: the token's `sub` and `info` (`None` for anonymous connections).
    pub user: Option<Arc<str>>,
    pub info: Option<Arc<str>>,
    /// What the room tells its members of each other (its namespace's option).
    pub announce: PresenceMode,
    pub presence: Option<&'a RawValue>,
    /// The position the client asks to recover from.
    pub since: Option<Position>,
    /// How the room's stream is kept (its namespace's history options).
    pub stream: StreamOptions,
}

/// What [`Hub::join`] did.
pub enum Join {
    /// Answered `joined`: the room's position was known and nothing was to be recovered.
    Done(Arc<Room>),
    /// The member is in, pending: read the room's history and call [`Hub::finish_join`].
    Pending(Arc<Room>),
}

/// How big the hub's replies may be.
#[derive(Debug, Clone, Copy)]
pub struct ReplyLimits {
    /// Most members in one `joined` or `members` reply.
    pub members_page_size: usize,
    /// Most bytes of member JSON in one reply, so that a reply always fits the outbound
    /// queue of the client that asked (a fraction of it, leaving room for live traffic).
    pub members_page_bytes: usize,
    /// Most missed messages one `joined` reply carries (`max_recovery_messages`).
    pub max_recovery_messages: usize,
    /// Most bytes of missed messages in one `joined` reply.
    pub recovery_bytes: usize,
    /// How often a busy room sends presence frames.
    pub presence: Pacing,
}

/// How long a busy room gathers presence changes into one frame: `presence_interval` in a
/// room of up to [`PACED_MEMBERS`] members, and in a bigger one longer in proportion to its
/// size (10,000 members: ten times), up to `presence_interval_max`. Each frame goes to every
/// member, so a room sends at most about `PACED_MEMBERS` / `presence_interval` presence
/// frames a second in all (20,000 with the defaults), however big it grows, until the cap.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub interval: Duration,
    pub max: Duration,
}

/// Members up to which a room's presence interval is `presence_interval` itself.
pub const PACED_MEMBERS: usize = 1000;

impl Pacing {
    /// The interval of a room of `members` members.
    pub fn for_members(&self, members: usize) -> Duration {
        if members <= PACED_MEMBERS {
            return self.interval;
        }
        self.interval
            .mul_f64(members as f64 / PACED_MEMBERS as f64)
            .min(self.max)
            .max(self.interval)
    }
}

/// Whom [`Hub::disconnect`] closes.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    User(&'a str),
    Conn(&'a str),
}

/// Close code for members of a room whose broker started it over in a new epoch, or whose
/// missed publications this node could not read back: they rejoin and recover.
pub const EPOCH_CHANGED_CLOSE: CloseCode = CloseCode(4011);

/// `from` of a message the server published (the HTTP API): not a member.
pub const SERVER_MEMBER: &str = r#"{"conn":null,"user":null,"presence":{},"server":true}"#;

pub struct Hub {
    rooms: Shards<Arc<str>, Arc<Room>>,
    connections: Shards<u64, Arc<ConnHandle>>,
    /// Document connections (`/yjs`) and echo ones (`/echo`), known here to be disconnected
    /// by the API and asked to stop at a shutdown.
    documents: Shards<u64, Arc<ConnHandle>>,
    broker: Arc<dyn Broker>,
    replies: ReplyLimits,
    policy: Policy,
}

impl Hub {
    /// A hub delivering what `broker` publishes.
    pub fn new(broker: Arc<dyn Broker>, replies: ReplyLimits, policy: Policy) -> Arc<Hub> {
        let shards = std::thread::available_parallelism().map_or(4, |n| n.get() * 8);
        let hub = Arc::new(Hub {
            rooms: Shards::new(shards),
            connections: Shards::new(shards),
            documents: Shards::new(shards),
            broker,
            replies,
            policy,
        });
        let inbound: Weak<dyn Inbound> = Arc::downgrade(&hub) as Weak<dyn Inbound>;
        hub.broker.attach(inbound);
        hub
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    pub fn replies(&self) -> &ReplyLimits {
        &self.replies
    }

    /// How rooms of namespace `ns` keep their streams.
    pub fn stream_options(&self, ns: &crate::auth::Namespace) -> StreamOptions {
        self.policy.stream(ns)
    }

    /// Most messages in one `history` reply.
    pub fn history_page_size(&self) -> usize {
        self.policy.page_size
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

    /// Adds `conn` to `room` (or, if it is there already, replaces its presence). Others in
    /// the room see a presence `join` (or `update`). Answers `joined` at once when the room's
    /// position is known and `since` was not sent; otherwise the member is pending until
    /// [`finish_join`](Hub::finish_join).
    pub fn join(&self, conn: &Arc<ConnHandle>, name: &str, req: JoinRequest<'_>) -> Join {
        loop {
            // A room that is not here yet is subscribed to before it is put in the map
            // (outside every lock: the broker's locks come first), so that whoever finds it
            // there can read its position under its lock: no join waits for the broker.
            let new = self.rooms.get(name).is_none();
            if new {
                self.broker.subscribe(name, req.stream);
            }
            let mut created = false;
            let room = self.rooms.get_or_insert_with(name, || {
                created = true;
                let name: Arc<str> = name.into();
                let room = Arc::new(Room {
                    name: name.clone(),
                    state: Mutex::new(RoomState {
                        epoch: None,
                        top: 0,
                        members: MemberMap::default(),
                        mode: req.announce,
                        announcer: Announcer::default(),
                        order: JoinOrder::default(),
                        remote: Remotes::default(),
                        next_seq: 0,
                        closed: false,
                        subscribed: false,
                    }),
                });
                (name, room)
            });
            if new && !created {
                // Another join put the room in first (with its own subscription).
                self.broker.unsubscribe(name);
            }
            if created && !new {
                // The room we found closed meanwhile and this join made it again.
                self.broker.subscribe(name, req.stream);
            }
            let mut st = room.lock();
            if st.closed {
                drop(st);
                if created {
                    // Closed before we could mark it subscribed: its closer did not
                    // unsubscribe; we do, outside the room lock (the broker's locks come first).
                    self.broker.unsubscribe(name);
                }
                continue; // emptied and removed between our lookup and our lock
            }
            if created {
                st.subscribed = true;
            }
            if st.epoch.is_none() {
                // Under the room lock: a publication the position counts has been delivered
                // here already or waits for this lock.
                if let Some(p) = self.broker.position(name) {
                    st.top = st.top.max(p.offset);
                    st.epoch = Some(p.epoch);
                }
            }
            let existing = st.members.get(&conn.num).map(|m| {
                (
                    m.seq,
                    m.json.clone(),
                    m.user == req.user && m.info == req.info,
                    m.floor,
                )
            });
            let user = req.user.as_deref();
            let info = req.info.as_deref();
            let (seq, json, floor) = match (existing, req.presence) {
                // A rejoin without presence (and as the same user) keeps what the member has.
                (Some((seq, json, true, floor)), None) => (seq, json, floor),
                (Some((seq, json, _, floor)), None) => {
                    let presence = presence_of(&json);
                    (
                        seq,
                        member_json(&conn.id, user, info, presence).into(),
                        floor,
                    )
                }
                (Some((seq, _, _, floor)), Some(p)) => (
                    seq,
                    member_json(&conn.id, user, info, Some(p.get())).into(),
                    floor,
                ),
                (None, presence) => {
                    st.next_seq += 1;
                    let json: Arc<str> =
                        member_json(&conn.id, user, info, presence.map(RawValue::get)).into();
                    (st.next_seq, json, 0)
                }
            };
            let ready = match (&st.epoch, &req.since) {
                (Some(epoch), None) => Some(epoch.clone()),
                _ => None,
            };
            let floor = if ready.is_some() { st.top } else { floor };
            let previous = st.members.insert(
                conn.num,
                Member {
                    conn: conn.clone(),
                    json: json.clone(),
                    user: req.user.clone(),
                    info: req.info.clone(),
                    seq,
                    floor,
                    pending: ready.is_none().then(Box::default),
                },
            );
            st.order.insert(seq, Slot::Local(conn.num));
            let changed = previous.as_ref().is_none_or(|p| p.json != json);
            if st.mode != PresenceMode::Off && changed {
                let change = PresenceChange::Set {
                    conn: conn.id.clone(),
                    member: json.clone(),
                };
                self.broker.presence(name, change);
            }
            if let Some(epoch) = &ready {
                let reply = st.joined_reply(name, req.id, epoch, st.top, &self.replies);
                conn.send(&reply.raw_list("messages", []).finish());
            }
            let event = if previous.is_some() { "update" } else { "join" };
            let flush = changed
                && st.announce(
                    name,
                    event,
                    &conn.id,
                    &json,
                    Some(conn.num),
                    self.replies.presence,
                );
            drop(st);
            if flush {
                self.schedule_flush(&room);
            }
            return match ready {
                Some(_) => Join::Done(room),
                None => Join::Pending(room),
            };
        }
    }

    /// Answers the `joined` of a pending member with what the broker read: the missed
    /// messages when `since` was sent and they could all be given (`recovered: true`), or
    /// `recovered: false` and a reason; then the publications that arrived meanwhile, after
    /// the reply's position. A failure with no known position takes the member out again.
    pub fn finish_join(
        &self,
        conn: &ConnHandle,
        room: &Arc<Room>,
        id: Option<i64>,
        recovering: bool,
        read: Result<HistoryPage, BrokerError>,
    ) -> Result<(), Failure> {
        let mut st = room.lock();
        let Some(member) = st.members.get_mut(&conn.num) else {
            return Err(not_joined(&room.name));
        };
        let buffered = member.pending.take().unwrap_or_default();
        let limits = self.replies;
        let (epoch, offset, messages, outcome) = match read {
            Ok(page) => {
                let too_many = page.messages.len() > limits.max_recovery_messages
                    || page
                        .messages
                        .iter()
                        .map(|p| p.v1_json(&room.name).len() + 1)
                        .sum::<usize>()
                        > limits.recovery_bytes;
                let (messages, outcome) = match (recovering, too_many) {
                    (false, _) => (Vec::new(), None),
                    (true, false) => (page.messages, Some(None)),
                    (true, true) => (Vec::new(), Some(Some("too_many"))),
                };
                (page.position.epoch, page.position.offset, messages, outcome)
            }
            Err(BrokerError::Unrecoverable { reason, position }) => (
                position.epoch,
                position.offset,
                Vec::new(),
                Some(Some(reason.as_str())),
            ),
            Err(BrokerError::Unavailable(why)) => match st.epoch.clone() {
                Some(epoch) => (epoch, st.top, Vec::new(), Some(Some("unavailable"))),
                None => {
                    drop(st);
                    self.remove_member(conn, room, None);
                    return Err(Failure::new(ErrorCode::Unavailable, why));
                }
            },
        };
        if st.epoch.as_ref() != Some(&epoch) {
            st.epoch = Some(epoch.clone());
        }
        st.top = st.top.max(offset);
        // Held publications overflowed: start from the latest, and say that it is not exact.
        let (offset, outcome, messages) = if buffered.overflowed {
            (st.top, Some(Some("too_many")), Vec::new())
        } else {
            (offset, outcome, messages)
        };
        let mut reply = st
            .joined_reply(&room.name, id, &epoch, offset, &limits)
            .raw_list("messages", messages.iter().map(|p| p.v1_json(&room.name)));
        match outcome {
            _ if !recovering => {}
            None => {}
            Some(None) => reply = reply.bool("recovered", true),
            Some(Some(reason)) => reply = reply.bool("recovered", false).str("reason", reason),
        }
        conn.send(&reply.finish());
        let mut floor = offset;
        if !buffered.overflowed {
            for p in buffered.publications.iter().filter(|p| p.offset > offset) {
                conn.send(p.v1_frame(&room.name));
                floor = p.offset;
            }
        }
        if let Some(member) = st.members.get_mut(&conn.num) {
            member.floor = floor;
        }
        Ok(())
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
        st.order.remove(member.seq);
        if let Some((id, reason)) = reply {
            if id.is_some() || reason.is_some() {
                let mut left = Out::new("left").opt_id(id).str("room", &room.name);
                if let Some(reason) = reason {
                    left = left.str("reason", reason);
                }
                conn.send(&left.finish());
            }
        }
        let mut flush = false;
        if st.mode != PresenceMode::Off {
            flush = st.announce(
                &room.name,
                "leave",
                &conn.id,
                &member.json,
                None,
                self.replies.presence,
            );
            let change = PresenceChange::Remove {
                conn: conn.id.clone(),
            };
            self.broker.presence(&room.name, change);
        }
        if flush && !st.members.is_empty() {
            drop(st);
            self.schedule_flush(room);
            return;
        }
        if st.members.is_empty() {
            st.closed = true;
            self.rooms.remove_if(&*room.name, |r| Arc::ptr_eq(r, room));
            let subscribed = std::mem::take(&mut st.subscribed);
            drop(st);
            if subscribed {
                self.broker.unsubscribe(&room.name);
            }
        }
    }

    /// Publishes `data` from member `conn` of `room`: the broker gives it the room's next
    /// offset and hands it back for every member (the sender too unless `echo` is false).
    pub fn publish(
        &self,
        conn: &ConnHandle,
        room: &Room,
        data: Payload,
        echo: bool,
        key: Option<Box<str>>,
        stream: StreamOptions,
    ) -> Result<Pending<Published>, Failure> {
        let from = {
            let st = room.lock();
            let member = st
                .members
                .get(&conn.num)
                .ok_or_else(|| not_joined(&room.name))?;
            member.json.clone()
        };
        let mut publication = Publication::new(data, from, key);
        if !echo {
            publication.exclude = Some(conn.num);
        }
        Ok(self.broker.publish(&room.name, publication, stream))
    }

    /// Publishes `data` to room `name` on behalf of the server (the HTTP API): with `from`
    /// naming the server, into the room's history whether or not it has members.
    pub fn publish_as_server(
        &self,
        name: &str,
        data: Payload,
        key: Option<Box<str>>,
        stream: StreamOptions,
    ) -> Pending<Published> {
        let publication = Publication::new(data, server_member(), key);
        self.broker.publish(&name.into(), publication, stream)
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
        Some((page.members, st.member_count(), page.next))
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

    /// Asks every connection the hub knows (protocol, document and echo ones) to shut
    /// down ([`Outbox::shutdown`](crate::outbox::Outbox::shutdown)).
    pub fn shut_down_connections(&self) {
        for conn in self
            .connections
            .values()
            .into_iter()
            .chain(self.documents.values())
        {
            conn.outbox.shutdown();
        }
    }

    /// Registers a document (or echo) connection, so that [`disconnect`](Hub::disconnect)
    /// and [`shut_down_connections`](Hub::shut_down_connections) reach it.
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
        room: &Arc<Room>,
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
        if st.mode != PresenceMode::Off {
            let change = PresenceChange::Set {
                conn: conn.id.clone(),
                member: json.clone(),
            };
            self.broker.presence(&room.name, change);
        }
        if id.is_some() {
            conn.send(&Out::new("ok").opt_id(id).finish());
        }
        let flush = st.announce(
            &room.name,
            "update",
            &conn.id,
            &json,
            None,
            self.replies.presence,
        );
        drop(st);
        if flush {
            self.schedule_flush(room);
        }
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
            .uint("member_count", st.member_count() as u64);
        drop(st);
        let reply = match page.next {
            Some(next) => reply.str("cursor", &next.to_string()),
            None => reply.raw("cursor", "null"),
        };
        conn.send(&reply.finish());
    }

    /// Sends the room's held presence changes after its interval.
    fn schedule_flush(&self, room: &Arc<Room>) {
        let interval = self
            .replies
            .presence
            .for_members(room.lock().member_count());
        let room = room.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep(interval).await;
                    let mut st = room.lock();
                    if !st.closed {
                        st.flush(&room.name);
                    }
                });
            }
            Err(_) => room.lock().flush(&room.name),
        }
    }

    /// The most members one `members` request may ask for.
    pub fn members_page_size(&self) -> usize {
        self.replies.members_page_size
    }
}

impl Inbound for Hub {
    fn remote_presence(&self, room: &str, conn: &Arc<str>, member: Option<&Arc<str>>) {
        self.remote_presence_in(room, conn, member);
    }

    fn remote_members(&self, room: &str, members: Vec<(Arc<str>, Arc<str>)>) {
        self.remote_members_in(room, members);
    }

    fn local_members(&self, name: &str) -> Vec<(Arc<str>, Arc<str>)> {
        let Some(room) = self.rooms.get(name) else {
            return Vec::new();
        };
        let st = room.lock();
        if st.closed || st.mode == PresenceMode::Off {
            return Vec::new();
        }
        st.members
            .values()
            .map(|m| (m.conn.id.clone(), m.json.clone()))
            .collect()
    }

    fn lost(&self, name: &str) {
        let Some(room) = self.rooms.get(name) else {
            return;
        };
        let st = room.lock();
        for m in st.members.values() {
            m.conn.outbox.close_with(
                EPOCH_CHANGED_CLOSE,
                "messages of a room were missed: rejoin",
            );
        }
    }

    fn answer(&self, survey: &Survey) -> serde_json::Value {
        match survey {
            Survey::Disconnect {
                user,
                conn,
                code,
                reason,
            } => {
                let who = match (user, conn) {
                    (Some(u), _) => Who::User(u),
                    (None, Some(c)) => Who::Conn(c),
                    (None, None) => return serde_json::json!({ "disconnected": 0 }),
                };
                let n = self.disconnect(who, CloseCode(*code), reason);
                serde_json::json!({ "disconnected": n })
            }
            Survey::Info => serde_json::json!({
                "connections": self.connection_count(),
                "rooms": self.room_count(),
            }),
        }
    }

    fn deliver(&self, name: &str, epoch: &Arc<str>, publication: &Arc<Publication>) {
        let Some(room) = self.rooms.get(name) else {
            return;
        };
        let mut st = room.lock();
        if st.closed {
            return;
        }
        if st.epoch.as_ref() != Some(epoch) {
            if st.epoch.is_some() {
                // The broker started the room over (its history was lost: Redis without
                // persistence restarted, say). `message` frames carry no epoch, so members
                // could not tell offset 1 of the new epoch from one they have seen: they are
                // closed, reconnect, and learn it from `recovered: false`.
                for m in st.members.values() {
                    m.conn
                        .outbox
                        .close_with(EPOCH_CHANGED_CLOSE, "the room's history was lost: rejoin");
                }
                st.top = 0;
                for m in st.members.values_mut() {
                    m.floor = u64::MAX;
                }
            }
            st.epoch = Some(epoch.clone());
        }
        st.top = st.top.max(publication.offset);
        let frame = publication.v1_frame(&room.name);
        let offset = publication.offset;
        let cap = self.replies.max_recovery_messages;
        let cap_bytes = self.replies.recovery_bytes;
        for (num, m) in st.members.iter_mut() {
            if publication.exclude == Some(*num) {
                continue;
            }
            match &mut m.pending {
                None if offset > m.floor => m.conn.send(frame),
                None => {}
                Some(held)
                    if held.publications.len() < cap && held.bytes + frame.len() <= cap_bytes =>
                {
                    held.publications.push(publication.clone());
                    held.bytes += frame.len();
                }
                Some(held) => held.overflowed = true,
            }
        }
    }
}

/// Other nodes' members, as a shared broker tells them.
impl Hub {
    fn remote_presence_in(&self, name: &str, conn: &Arc<str>, member: Option<&Arc<str>>) {
        let Some(room) = self.rooms.get(name) else {
            return;
        };
        let mut st = room.lock();
        if !st.closed && st.set_remote(name, conn, member, self.replies.presence) {
            drop(st);
            self.schedule_flush(&room);
        }
    }

    fn remote_members_in(&self, name: &str, members: Vec<(Arc<str>, Arc<str>)>) {
        let Some(room) = self.rooms.get(name) else {
            return;
        };
        let mut st = room.lock();
        if st.closed {
            return;
        }
        let known: HashMap<Arc<str>, Arc<str>> = members.into_iter().collect();
        let gone: Vec<Arc<str>> = st
            .remote
            .keys()
            .filter(|c| !known.contains_key(*c))
            .cloned()
            .collect();
        let pacing = self.replies.presence;
        let mut flush = false;
        for conn in gone {
            flush |= st.set_remote(name, &conn, None, pacing);
        }
        let local: std::collections::HashSet<Arc<str>> =
            st.members.values().map(|m| m.conn.id.clone()).collect();
        for (conn, json) in &known {
            if !local.contains(conn) {
                flush |= st.set_remote(name, conn, Some(json), pacing);
            }
        }
        drop(st);
        if flush {
            self.schedule_flush(&room);
        }
    }
}

fn server_member() -> Arc<str> {
    static SERVER: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| SERVER_MEMBER.into()).clone()
}

/// The `presence` object of a member's JSON (which this module wrote).
fn presence_of(member: &str) -> Option<&str> {
    let at = member.rfind(",\"presence\":")?;
    member
        .get(at + ",\"presence\":".len()..member.len() - 1)
        .filter(|p| p.starts_with('{'))
}

fn presence_frame(room: &str, event: &str, member: &str, count: usize) -> Frame {
    Out::with_capacity("presence", member.len() + room.len() + 72)
        .str("room", room)
        .str("event", event)
        .raw("member", member)
        .uint("member_count", count as u64)
        .finish()
}

/// One presence frame for `held` changes: the usual shape for one, `events` for several.
fn batch_frame(room: &str, held: &[Held], count: usize) -> Frame {
    if let [one] = held {
        return presence_frame(room, one.event, &one.json, count);
    }
    let bytes: usize = held.iter().map(|h| h.json.len() + 32).sum();
    let mut events = String::with_capacity(bytes + 2);
    events.push('[');
    for (i, h) in held.iter().enumerate() {
        if i > 0 {
            events.push(',');
        }
        events.push_str("{\"event\":\"");
        events.push_str(h.event);
        events.push_str("\",\"member\":");
        events.push_str(&h.json);
        events.push('}');
    }
    events.push(']');
    Out::with_capacity("presence", events.len() + room.len() + 64)
        .str("room", room)
        .raw("events", &events)
        .uint("member_count", count as u64)
        .finish()
}

/// A count-mode room's presence: only how many members it has.
fn count_frame(room: &str, count: usize) -> Frame {
    Out::with_capacity("presence", room.len() + 64)
        .str("room", room)
        .uint("member_count", count as u64)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn after(order: &JoinOrder, from: u64, max: usize) -> Vec<u64> {
        let mut seen = Vec::new();
        order.each_after(from, |seq, _| {
            seen.push(seq);
            seen.len() < max
        });
        seen
    }

    #[test]
    fn the_presence_interval_grows_with_a_big_room_up_to_its_cap() {
        let ms = Duration::from_millis;
        let pacing = Pacing {
            interval: ms(50),
            max: ms(1000),
        };
        assert_eq!(pacing.for_members(1), ms(50));
        assert_eq!(pacing.for_members(PACED_MEMBERS), ms(50));
        assert_eq!(pacing.for_members(2 * PACED_MEMBERS), ms(100));
        assert_eq!(pacing.for_members(10 * PACED_MEMBERS), ms(500));
        assert_eq!(pacing.for_members(100 * PACED_MEMBERS), ms(1000), "capped");
        let every_change = Pacing {
            interval: Duration::ZERO,
            max: ms(1000),
        };
        assert_eq!(every_change.for_members(50_000), Duration::ZERO);
        let cap_below = Pacing {
            interval: ms(50),
            max: ms(10),
        };
        assert_eq!(
            cap_below.for_members(50_000),
            ms(50),
            "never below the interval"
        );
    }

    #[test]
    fn join_order_reads_the_same_small_and_big() {
        let mut order = JoinOrder::default();
        for seq in 1..=JoinOrder::SMALL as u64 {
            order.insert(seq, Slot::Local(seq));
        }
        order.insert(5, Slot::Local(50)); // joined again: the same place
        assert!(matches!(order, JoinOrder::Small(_)));
        assert_eq!(after(&order, 0, 100).len(), JoinOrder::SMALL);
        order.remove(3);
        assert_eq!(after(&order, 1, 3), vec![2, 4, 5]);
        assert_eq!(after(&order, 0, 2), vec![1, 2]);
        for seq in 33..=40 {
            order.insert(seq, Slot::Remote(format!("c{seq}").into()));
        }
        assert!(
            matches!(order, JoinOrder::Big(_)),
            "past SMALL members: a B-tree"
        );
        order.remove(2);
        assert_eq!(after(&order, 0, 3), vec![1, 4, 5]);
        assert_eq!(after(&order, 38, 10), vec![39, 40]);
        assert_eq!(after(&order, 40, 10), Vec::<u64>::new());
    }

    fn member(num: u64) -> Member {
        let id: Arc<str> = format!("c{num}").into();
        Member {
            conn: Arc::new(ConnHandle::new(num, id.clone(), Outbox::new(1 << 16))),
            json: id,
            user: None,
            info: None,
            seq: num,
            floor: 0,
            pending: None,
        }
    }

    #[test]
    fn member_map_is_the_same_map_small_and_big() {
        let mut map = MemberMap::default();
        for num in 1..=MemberMap::SMALL as u64 {
            assert!(map.insert(num, member(num)).is_none());
        }
        assert!(matches!(map, MemberMap::Small(_)));
        assert!(
            map.insert(3, member(3)).is_some(),
            "a member joining again is replaced"
        );
        assert_eq!(map.len(), MemberMap::SMALL);
        assert!(map.insert(100, member(100)).is_none());
        assert!(matches!(map, MemberMap::Big(_)));
        assert_eq!(map.len(), MemberMap::SMALL + 1);
        assert_eq!(map.remove(&5).map(|m| m.seq), Some(5));
        assert!(map.get(&5).is_none() && map.get(&100).is_some());
        let mut keys: Vec<u64> = map.keys().copied().collect();
        keys.sort_unstable();
        assert_eq!(keys.len(), MemberMap::SMALL);
        assert_eq!(map.values().count(), MemberMap::SMALL);
        let mut small = MemberMap::default();
        small.insert(1, member(1));
        assert!(matches!(&small, MemberMap::Small(l) if l.capacity() == 1));
        assert!(small.remove(&2).is_none());
        small.remove(&1);
        assert!(small.is_empty());
        assert!(matches!(&small, MemberMap::Small(l) if l.capacity() == 0));
    }

    #[test]
    fn a_room_of_one_keeps_one_entry_and_none_once_empty() {
        let mut order = JoinOrder::default();
        order.insert(7, Slot::Local(1));
        match &order {
            JoinOrder::Small(list) => assert_eq!(list.capacity(), 1),
            JoinOrder::Big(_) => panic!("one member: a list"),
        }
        order.remove(7);
        match &order {
            JoinOrder::Small(list) => assert_eq!(list.capacity(), 0),
            JoinOrder::Big(_) => panic!("empty: a list"),
        }
    }
}
