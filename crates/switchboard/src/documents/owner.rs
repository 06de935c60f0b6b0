//! The owner of one open document: a task that holds the `yrs` document and its awareness and
//! is the only place either changes.
//!
//! It takes commands in batches (whatever is queued, up to [`BATCH`]): merges the updates,
//! appends what actually changed to the store in one durable transaction, and only then
//! queues the outgoing frames and answers the connections. So an update reaches other
//! editors only once it is on disk, and one disk sync covers every update of a batch.
//! Each fanned-out update is encoded once; every connection's outbox gets the same bytes.
//!
//! When the last connection leaves, the owner lingers for [`LINGER`] (an editor reloading
//! its page finds the document open), then ends, compacting the document into a snapshot only
//! if the updates stored since the last one are large next to it: a disconnect never rewrites
//! a large document for a few small edits. A document whose stored data cannot be read is never served: its connections are
//! refused with 1011 and nothing is written, so the stored data stays as it was.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_ws::{CloseCode, Frame};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};
use yrs::sync::{Awareness, AwarenessUpdate};
use yrs::{ClientID, Doc, ReadTxn, StateVector, Transact};

use super::store::Store;
use super::wire::{self, BadMessage, Incoming};
use super::{close, Documents, Kick, Refusal};
use crate::hub::ConnHandle;
use crate::outgoing::Outgoing;

/// Most commands handled (and persisted) together.
const BATCH: usize = 128;
/// Compact once this many updates were stored since the last snapshot (they are replayed
/// on load)...
const COMPACT_EVERY_UPDATES: u64 = 5_000;
/// ...or once their bytes reach half the snapshot's (so that rewriting the snapshot costs at
/// most twice what was stored), and at least this many.
const COMPACT_MIN_BYTES: usize = 256 << 10;
/// How long a document stays open after its last connection left.
pub const LINGER: Duration = Duration::from_secs(3);
/// How often waiting sync requests are looked at again.
const SYNC_RECHECK: Duration = Duration::from_millis(50);
/// What one awareness client costs besides its JSON state: its id, clock and length prefix.
pub const AWARENESS_ENTRY_COST: usize = 20;
/// After a failed compaction, wait this long before trying again (the updates are safe).
const COMPACT_RETRY: Duration = Duration::from_secs(30);
/// Awareness client ids one connection may speak for (a y-websocket client uses one).
const MAX_CLIENTS_PER_CONNECTION: usize = 16;
/// Close code for a connection that speaks for too many awareness clients.
const POLICY: CloseCode = CloseCode(1008);

type Reply = oneshot::Sender<Result<(), Refusal>>;

pub enum Cmd {
    /// A connection wants the document; on `Ok` it has sync step 1 (and awareness) queued.
    Join {
        conn: Arc<ConnHandle>,
        kick: Arc<Kick>,
        reply: Reply,
    },
    /// One binary message from a member.
    Message {
        conn: u64,
        data: Bytes,
        reply: Reply,
    },
    /// A member's connection ended, for whatever reason.
    Leave { conn: u64 },
}

struct Member {
    conn: Arc<ConnHandle>,
    kick: Arc<Kick>,
    /// Awareness client ids this connection sent states for: removed when it leaves.
    clients: HashSet<u64>,
    /// Whether the log already says that an awareness update of it was not applied.
    awareness_dropped: bool,
}

/// A copy of the document (a sync step 2 reply) queued on a connection. The frame's bytes
/// hold a clone of `token`: once the connection has written (or dropped) them, only this one
/// is left.
struct Copy {
    conn: u64,
    token: Arc<()>,
    len: usize,
    since: Instant,
}

impl Copy {
    fn unsent(&self) -> bool {
        Arc::strong_count(&self.token) > 1
    }
}

/// Frame bytes that tell, by being dropped, that they are no longer queued anywhere.
struct Tracked {
    bytes: Bytes,
    _token: Arc<()>,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// A sync step 1 waiting for room under `max_sync_queued_per_document`.
struct Waiting {
    conn: u64,
    sv: StateVector,
    /// Size of its reply when last tried: not encoded again until that much is free.
    needed: usize,
}

/// Output of a batch, held back until the batch's updates are durable.
enum Action {
    To(u64, Frame),
    All { except: Option<u64>, frame: Frame },
    Reply(Reply, Result<(), Refusal>),
}

struct Owner {
    docs: Arc<Documents>,
    name: Arc<str>,
    store: Arc<Store>,
    awareness: Awareness,
    members: HashMap<u64, Member>,
    /// Sequence number of the next stored update.
    next_seq: u64,
    /// Updates (and their bytes) stored since the snapshot.
    uncompacted: u64,
    uncompacted_bytes: usize,
    next_compaction: Instant,
    /// Encoded size of the document: exact after load or compaction, then an estimate
    /// (plus every merged delta) until measured again.
    size: usize,
    size_exact: bool,
    /// Deltas merged in this batch, not stored yet.
    deltas: Vec<Vec<u8>>,
    actions: Vec<Action>,
    /// yrs panicked while merging: the in-memory document is not to be trusted any more.
    poisoned: bool,
    /// Size of the stored snapshot.
    snapshot_len: usize,
    /// Sync step 1 as sent to joiners, until the document changes (shared by all of them).
    step1: Option<Frame>,
    /// Every awareness state, as sent to joiners, until a state changes (`Some(None)`: none).
    states: Option<Option<Frame>>,
    /// Cost of each awareness client's state (JSON + AWARENESS_ENTRY_COST), and their sum.
    state_costs: HashMap<u64, usize>,
    awareness_cost: usize,
    /// Copies of the document queued and maybe not yet written.
    copies: Vec<Copy>,
    /// Sync requests waiting for room, in order of arrival.
    waiting: VecDeque<Waiting>,
}

/// The owner task of document `name`.
pub async fn run(
    docs: Arc<Documents>,
    name: Arc<str>,
    generation: u64,
    mut rx: mpsc::Receiver<Cmd>,
) {
    let mut owner = match Owner::load(docs.clone(), name.clone()).await {
        Ok(owner) => owner,
        Err(why) => {
            error!(doc = %name, error = %why, "document cannot be loaded; refusing its connections and leaving its stored data untouched");
            refuse_queued(&docs, &name, generation, rx);
            return;
        }
    };
    let mut shutdown = docs.shutdown.subscribe();
    // Set while the document has no connection: when it closes.
    let mut linger: Option<tokio::time::Instant> = None;
    loop {
        let recheck =
            (!owner.waiting.is_empty()).then(|| tokio::time::Instant::now() + SYNC_RECHECK);
        let wake = match (linger, recheck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let first = tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => Some(cmd),
                None => return, // unreachable while registered: the registry holds a sender
            },
            _ = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => None,
            _ = shutdown.wait_for(|s| *s), if linger.is_some() => {
                linger = Some(tokio::time::Instant::now());
                None
            }
        };
        let mut batch: Vec<Cmd> = first.into_iter().collect();
        while !batch.is_empty() && batch.len() < BATCH {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        for cmd in batch {
            owner.handle(cmd);
        }
        owner.serve_waiting();
        if owner.poisoned {
            owner.reset("document reset after an internal error; reconnect");
            docs.forget(&name, generation);
            return;
        }
        if let Err(e) = owner.persist().await {
            error!(doc = %name, error = %e, "cannot store document updates; closing the document's connections");
            owner.reset("document storage failed; reconnect");
            docs.forget(&name, generation);
            return;
        }
        owner.flush();
        if !owner.members.is_empty() {
            linger = None;
            if owner.compaction_due() {
                owner.compact().await;
            }
            continue;
        }
        let closing = *shutdown.borrow();
        let deadline = *linger.get_or_insert_with(|| {
            tokio::time::Instant::now() + if closing { Duration::ZERO } else { LINGER }
        });
        if tokio::time::Instant::now() < deadline && !closing {
            continue;
        }
        // On shutdown every stored update is folded in; otherwise only when they are
        // large next to the snapshot (they are replayed on the next load).
        if closing || owner.compaction_due() {
            owner.compact().await;
        }
        if docs.try_unregister(&name, generation, &rx) {
            info!(doc = %name, size = owner.size, updates = owner.uncompacted, "document closed");
            return;
        }
    }
}

/// What one awareness state costs the document's budget.
fn state_cost(json: &str) -> usize {
    if json == "null" {
        0
    } else {
        json.len() + AWARENESS_ENTRY_COST
    }
}

/// Answers every queued and late join with a refusal, after unregistering the owner.
fn refuse_queued(docs: &Documents, name: &str, generation: u64, mut rx: mpsc::Receiver<Cmd>) {
    let refuse = |cmd: Cmd| {
        if let Cmd::Join { reply, .. } | Cmd::Message { reply, .. } = cmd {
            let _ = reply.send(Err((
                close::INTERNAL,
                "document cannot be loaded; see the server log".to_owned(),
            )));
        }
    };
    loop {
        while let Ok(cmd) = rx.try_recv() {
            refuse(cmd);
        }
        if docs.try_unregister(name, generation, &rx) {
            break;
        }
    }
    rx.close();
    while let Ok(cmd) = rx.try_recv() {
        refuse(cmd);
    }
}

impl Owner {
    async fn load(docs: Arc<Documents>, name: Arc<str>) -> Result<Owner, String> {
        let store = docs.store().await?;
        let stored = {
            let (store, name) = (store.clone(), name.clone());
            tokio::task::spawn_blocking(move || store.load(&name))
                .await
                .map_err(|e| format!("load task failed: {e}"))?
                .map_err(|e| format!("cannot read the document store: {e}"))?
        };
        let doc = Doc::new();
        let merged = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
            let mut txn = doc.transact_mut();
            if let Some(snapshot) = &stored.snapshot {
                let update = wire::decode_update(snapshot)
                    .map_err(|e| format!("stored snapshot does not decode: {e}"))?;
                txn.apply_update(update)
                    .map_err(|e| format!("stored snapshot does not apply: {e}"))?;
            }
            for (seq, bytes) in &stored.updates {
                let update = wire::decode_update(bytes)
                    .map_err(|e| format!("stored update {seq} does not decode: {e}"))?;
                txn.apply_update(update)
                    .map_err(|e| format!("stored update {seq} does not apply: {e}"))?;
            }
            Ok(())
        }));
        match merged {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("stored data makes the CRDT library panic".to_owned()),
        }
        info!(
            doc = %name,
            snapshot = stored.snapshot.as_ref().map_or(0, Vec::len),
            updates = stored.updates.len(),
            "document opened"
        );
        Ok(Owner {
            store,
            awareness: Awareness::new(doc),
            members: HashMap::new(),
            next_seq: stored.next_seq(),
            uncompacted: stored.updates.len() as u64,
            uncompacted_bytes: stored.updates.iter().map(|(_, u)| u.len()).sum(),
            next_compaction: Instant::now(),
            size: stored.bytes(),
            size_exact: false,
            deltas: Vec::new(),
            actions: Vec::new(),
            poisoned: false,
            snapshot_len: stored.snapshot.as_ref().map_or(0, Vec::len),
            step1: None,
            states: None,
            state_costs: HashMap::new(),
            awareness_cost: 0,
            copies: Vec::new(),
            waiting: VecDeque::new(),
            docs,
            name,
        })
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Join { conn, kick, reply } => {
                let result = self.join(conn, kick);
                self.actions.push(Action::Reply(reply, result));
            }
            Cmd::Message { conn, data, reply } => {
                let result = self.message(conn, &data);
                if let Err((code, reason)) = &result {
                    let id = self.members.get(&conn).map(|m| m.conn.id.clone());
                    warn!(doc = %self.name, conn = id.as_deref().unwrap_or("?"), code = code.0, reason = %reason, "document message rejected");
                }
                self.actions.push(Action::Reply(reply, result));
            }
            Cmd::Leave { conn } => self.leave(conn),
        }
    }

    fn join(&mut self, conn: Arc<ConnHandle>, kick: Arc<Kick>) -> Result<(), Refusal> {
        let max = self.docs.settings().max_connections_per_document;
        if self.members.len() >= max {
            return Err((
                close::TRY_AGAIN_LATER,
                format!("document has the most connections allowed ({max})"),
            ));
        }
        let num = conn.num;
        self.members.insert(
            num,
            Member {
                conn,
                kick,
                clients: HashSet::new(),
                awareness_dropped: false,
            },
        );
        let step1 = match &self.step1 {
            Some(frame) => frame.clone(),
            None => {
                let sv = self.awareness.doc().transact().state_vector();
                let frame = Frame::binary(&wire::sync_step1(sv));
                self.step1 = Some(frame.clone());
                frame
            }
        };
        self.actions.push(Action::To(num, step1));
        if let Some(states) = self.states_frame() {
            self.actions.push(Action::To(num, states));
        }
        Ok(())
    }

    /// Every current awareness state in one frame (`None` if there is none), encoded once
    /// until a state changes.
    fn states_frame(&mut self) -> Option<Frame> {
        if self.states.is_none() {
            let frame = match self.awareness.update() {
                Ok(states) if !states.clients.is_empty() => {
                    Some(Frame::binary(&wire::awareness(states)))
                }
                _ => None,
            };
            self.states = Some(frame);
        }
        self.states.clone().flatten()
    }

    fn message(&mut self, conn: u64, data: &Bytes) -> Result<(), Refusal> {
        let message = wire::decode(data).map_err(|e| match e {
            BadMessage::Malformed(why) => (close::MALFORMED, format!("malformed message: {why}")),
            BadMessage::Unsupported(kind) => (
                close::UNSUPPORTED,
                format!("unsupported message type {kind}"),
            ),
        })?;
        match message {
            Incoming::SyncStep1(sv) => {
                self.sync_request(conn, sv);
                Ok(())
            }
            Incoming::Update(update) => self.merge(conn, &update),
            Incoming::Awareness(update) => self.awareness_update(conn, data, update),
            Incoming::QueryAwareness => {
                let frame = self.states_frame().unwrap_or_else(|| {
                    Frame::binary(&wire::awareness(AwarenessUpdate {
                        clients: Default::default(),
                    }))
                });
                self.actions.push(Action::To(conn, frame));
                Ok(())
            }
            Incoming::Auth => Ok(()),
        }
    }

    /// Answers a sync step 1 with a copy of what the client lacks, unless the document's
    /// unsent copies are at `max_sync_queued_per_document`: then it waits its turn.
    fn sync_request(&mut self, conn: u64, sv: StateVector) {
        if let Some(w) = self.waiting.iter_mut().find(|w| w.conn == conn) {
            w.sv = sv; // asked again while waiting: the newer state vector counts
            return;
        }
        self.waiting.push_back(Waiting {
            conn,
            sv,
            needed: 0,
        });
    }

    /// Bytes of copies queued and not yet written.
    fn unsent(&mut self) -> usize {
        self.copies.retain(Copy::unsent);
        self.copies.iter().map(|c| c.len).sum()
    }

    /// Sends the waiting sync replies that fit, in order. While one does not fit, the
    /// connections whose copies have stayed unread for `sync_timeout` are closed with 4009
    /// (their copies are dropped with them), so silent clients cannot hold the document's
    /// copy budget and lock out editors who read.
    fn serve_waiting(&mut self) {
        let budget = self.docs.settings().max_sync_queued_per_document;
        let timeout = self.docs.settings().sync_timeout;
        while let Some(needed) = self.waiting.front().map(|w| w.needed) {
            let unsent = self.unsent();
            if unsent > 0 && unsent + needed > budget {
                let now = Instant::now();
                let mut evicted = false;
                for copy in self.copies.iter() {
                    if now.duration_since(copy.since) < timeout {
                        continue;
                    }
                    if let Some(m) = self.members.get(&copy.conn) {
                        warn!(doc = %self.name, conn = %m.conn.id, bytes = copy.len, "document copy not read; closing the connection");
                        m.kick.fire(
                            &m.conn.outbox,
                            close::SLOW_CONSUMER,
                            "slow consumer: document not read",
                        );
                        evicted = true;
                    }
                }
                if evicted {
                    self.copies
                        .retain(|c| now.duration_since(c.since) < timeout);
                    continue;
                }
                return;
            }
            let Some(head) = self.waiting.pop_front() else {
                return;
            };
            let update = self
                .awareness
                .doc()
                .transact()
                .encode_state_as_update_v1(&head.sv);
            let frame = Frame::binary(&wire::sync_step2(update));
            let len = frame.len();
            if unsent > 0 && unsent + len > budget {
                // Does not fit after all: wait, without encoding it again until it could.
                self.waiting.push_front(Waiting {
                    needed: len,
                    ..head
                });
                continue;
            }
            let token = Arc::new(());
            let tracked = Bytes::from_owner(Tracked {
                bytes: frame.into_bytes(),
                _token: token.clone(),
            });
            self.copies.push(Copy {
                conn: head.conn,
                token,
                len,
                since: Instant::now(),
            });
            self.actions
                .push(Action::To(head.conn, Frame::from_raw(tracked)));
        }
    }

    /// Applies and relays an awareness update, after checking it against the limits. A
    /// refused update changes nothing (not even which clients the connection speaks for).
    fn awareness_update(
        &mut self,
        conn: u64,
        data: &Bytes,
        update: AwarenessUpdate,
    ) -> Result<(), Refusal> {
        let settings = self.docs.settings();
        let (max_state, max_total) = (
            settings.max_awareness_state_size,
            settings.max_awareness_per_document,
        );
        let Some(member) = self.members.get(&conn) else {
            return Ok(());
        };
        let new_clients = update
            .clients
            .keys()
            .filter(|c| !member.clients.contains(&c.get()))
            .count();
        if member.clients.len() + new_clients > MAX_CLIENTS_PER_CONNECTION {
            return Err((
                POLICY,
                "too many awareness clients on one connection".to_owned(),
            ));
        }
        if let Some(big) = update.clients.values().map(|e| e.json.len()).max() {
            if big > max_state {
                return Err((
                    close::TOO_BIG,
                    format!(
                        "awareness state too big (max_awareness_state_size is {max_state} bytes)"
                    ),
                ));
            }
        }
        // What the document's states will cost once this is applied (entries that yrs will
        // ignore as stale do not count).
        let mut cost = self.awareness_cost;
        for (id, entry) in &update.clients {
            let applies = match self.awareness.meta(*id) {
                None => true,
                Some((clock, _)) => {
                    clock < entry.clock
                        || (clock == entry.clock
                            && &*entry.json == "null"
                            && self.state_costs.contains_key(&id.get()))
                }
            };
            if applies {
                cost -= self.state_costs.get(&id.get()).copied().unwrap_or(0);
                cost += state_cost(&entry.json);
            }
        }
        if cost > max_total && cost > self.awareness_cost {
            // Not applied, not relayed, and the connection stays: the document's editors
            // keep editing; this state shows once others have left (y-websocket renews its
            // state every 15 s).
            if let Some(m) = self.members.get_mut(&conn) {
                if !m.awareness_dropped {
                    m.awareness_dropped = true;
                    warn!(doc = %self.name, conn = %m.conn.id, "awareness update not applied: the document's awareness states are at max_awareness_per_document");
                }
            }
            return Ok(());
        }
        let ids: Vec<ClientID> = update.clients.keys().copied().collect();
        if let Some(member) = self.members.get_mut(&conn) {
            member.clients.extend(ids.iter().map(|c| c.get()));
        }
        let applied = self.awareness.apply_update(update);
        // Whatever yrs kept, counted as it is now.
        self.states = None;
        if let Ok(now) = self.awareness.update_with_clients(ids.iter().copied()) {
            for (id, entry) in now.clients {
                let cost = if &*entry.json == "null" {
                    0
                } else {
                    state_cost(&entry.json)
                };
                let old = if cost == 0 {
                    self.state_costs.remove(&id.get())
                } else {
                    self.state_costs.insert(id.get(), cost)
                };
                self.awareness_cost = self.awareness_cost + cost - old.unwrap_or(0);
            }
        }
        applied.map_err(|e| (close::MALFORMED, format!("bad awareness update: {e}")))?;
        // Relayed as it came, to every connection: the sender too, as y-websocket does (its
        // client counts any message as a sign of life).
        self.actions.push(Action::All {
            except: None,
            frame: Frame::binary(data),
        });
        Ok(())
    }

    /// Merges an update (sync step 2 or update) and queues what it changed.
    fn merge(&mut self, conn: u64, bytes: &[u8]) -> Result<(), Refusal> {
        if !self.fits(bytes.len()) {
            return Err((
                close::TOO_BIG,
                format!(
                    "document is full (max_document_size is {} bytes)",
                    self.docs.settings().max_document_size
                ),
            ));
        }
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            h.finish()
        };
        if self.docs.is_poison(&self.name, hash) {
            return Err((
                close::MALFORMED,
                "update refused: it broke the merge before".to_owned(),
            ));
        }
        let update = wire::decode_update(bytes)
            .map_err(|e| (close::MALFORMED, format!("malformed update: {e}")))?;
        let doc = self.awareness.doc();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            let result = txn.apply_update(update);
            txn.commit();
            let changed = !txn.delete_set().is_empty() || txn.before_state() != txn.after_state();
            (result, changed.then(|| txn.encode_update_v1()))
        }));
        let (result, delta) = match outcome {
            Ok(outcome) => outcome,
            Err(_) => {
                error!(doc = %self.name, "the CRDT library panicked while merging an update; resetting the document");
                self.docs.add_poison(&self.name, hash);
                self.poisoned = true;
                return Err((close::INTERNAL, "internal error".to_owned()));
            }
        };
        // Whatever merged (even from an update that then failed) is kept, stored and sent,
        // so memory, disk and the other editors agree.
        if let Some(delta) = delta {
            self.size += delta.len();
            self.size_exact = false;
            self.step1 = None;
            self.actions.push(Action::All {
                except: Some(conn),
                frame: Frame::binary(&wire::sync_update(delta.clone())),
            });
            self.deltas.push(delta);
        }
        result.map_err(|e| (close::MALFORMED, format!("update rejected: {e}")))
    }

    /// Whether an update of `len` bytes may be merged without going over the size limit.
    /// The update's own length bounds what it adds; the size is measured exactly only when
    /// the estimate says no.
    fn fits(&mut self, len: usize) -> bool {
        let max = self.docs.settings().max_document_size;
        if self.size + len <= max {
            return true;
        }
        if !self.size_exact {
            self.size = self
                .awareness
                .doc()
                .transact()
                .encode_state_as_update_v1(&StateVector::default())
                .len();
            self.size_exact = true;
        }
        self.size + len <= max
    }

    fn leave(&mut self, conn: u64) {
        let Some(member) = self.members.remove(&conn) else {
            return;
        };
        // Its queued copy goes with its connection; its request no longer waits.
        self.copies.retain(|c| c.conn != conn);
        self.waiting.retain(|w| w.conn != conn);
        // Forget the awareness states only this connection spoke for, and tell the others.
        let gone: Vec<ClientID> = member
            .clients
            .into_iter()
            .filter(|c| !self.members.values().any(|m| m.clients.contains(c)))
            .map(ClientID::new)
            .collect();
        if gone.is_empty() {
            return;
        }
        for client in &gone {
            self.awareness.remove_state(*client);
            if let Some(cost) = self.state_costs.remove(&client.get()) {
                self.awareness_cost -= cost;
            }
        }
        self.states = None;
        if let Ok(update) = self.awareness.update_with_clients(gone) {
            self.actions.push(Action::All {
                except: None,
                frame: Frame::binary(&wire::awareness(update)),
            });
        }
    }

    /// Stores the batch's deltas in one durable transaction.
    async fn persist(&mut self) -> Result<(), String> {
        if self.deltas.is_empty() {
            return Ok(());
        }
        let deltas = std::mem::take(&mut self.deltas);
        let count = deltas.len() as u64;
        let bytes: usize = deltas.iter().map(Vec::len).sum();
        let (store, name, first) = (self.store.clone(), self.name.clone(), self.next_seq);
        tokio::task::spawn_blocking(move || store.append(&name, first, &deltas))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.next_seq += count;
        self.uncompacted += count;
        self.uncompacted_bytes += bytes;
        Ok(())
    }

    /// Sends the batch's frames and answers, in order.
    fn flush(&mut self) {
        for action in std::mem::take(&mut self.actions) {
            match action {
                Action::To(num, frame) => {
                    if let Some(m) = self.members.get(&num) {
                        m.conn.send(&frame);
                    }
                }
                Action::All { except, frame } => {
                    // Deflated at most once for every compressing member.
                    let message = Outgoing::new(frame);
                    for (num, m) in &self.members {
                        if Some(*num) != except {
                            let _ = m.conn.outbox.push_shared(&message);
                        }
                    }
                }
                Action::Reply(reply, result) => {
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// Whether the updates stored since the snapshot are many, or large next to it.
    fn compaction_due(&self) -> bool {
        let bytes_due = self.uncompacted_bytes >= (self.snapshot_len / 2).max(COMPACT_MIN_BYTES);
        self.uncompacted > 0
            && (self.uncompacted >= COMPACT_EVERY_UPDATES || bytes_due)
            && Instant::now() >= self.next_compaction
    }

    /// Replaces the snapshot with the whole document and drops the updates it includes.
    async fn compact(&mut self) {
        if self.uncompacted == 0 {
            return;
        }
        let snapshot = self
            .awareness
            .doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let len = snapshot.len();
        let through = self.next_seq - 1;
        let (store, name) = (self.store.clone(), self.name.clone());
        let result = tokio::task::spawn_blocking(move || store.compact(&name, &snapshot, through))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match result {
            Ok(()) => {
                debug!(doc = %self.name, updates = self.uncompacted, size = len, "document compacted");
                self.size = len;
                self.size_exact = true;
                self.snapshot_len = len;
                self.uncompacted = 0;
                self.uncompacted_bytes = 0;
            }
            Err(e) => {
                // The updates are still stored: nothing is lost, the next attempt retries.
                error!(doc = %self.name, error = %e, "document compaction failed");
                self.next_compaction = Instant::now() + COMPACT_RETRY;
            }
        }
    }

    /// Gives up the in-memory document: answers the batch with `reason`, sends nothing it
    /// produced, and closes every connection (they reconnect and sync from the store).
    fn reset(&mut self, reason: &str) {
        for action in std::mem::take(&mut self.actions) {
            if let Action::Reply(reply, _) = action {
                let _ = reply.send(Err((close::INTERNAL, reason.to_owned())));
            }
        }
        for m in self.members.values() {
            m.kick.fire(&m.conn.outbox, close::INTERNAL, reason);
        }
        self.members.clear();
        self.deltas.clear();
    }
}
