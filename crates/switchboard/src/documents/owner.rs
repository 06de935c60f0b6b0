//! The owner of one open document: a task that holds the `yrs` document and its awareness and
//! is the only place either changes.
//!
//! It takes commands in batches (whatever is queued, up to [`BATCH`]): merges the updates,
//! appends what actually changed to the store in one durable transaction, and only then
//! queues the outgoing frames and answers the connections. So an update reaches other
//! editors only once it is on disk, and one disk sync covers every update of a batch.
//! Each fanned-out update is encoded once; every connection's outbox gets the same bytes.
//!
//! When the last connection leaves, the owner compacts the document into a snapshot and
//! ends. A document whose stored data cannot be read is never served: its connections are
//! refused with 1011 and nothing is written, so the stored data stays as it was.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_ws::{CloseCode, Frame};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};
use yrs::sync::Awareness;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Transact};

use super::store::Store;
use super::wire::{self, BadMessage, Incoming};
use super::{close, Documents, Kick, Refusal};
use crate::hub::ConnHandle;

/// Most commands handled (and persisted) together.
const BATCH: usize = 128;
/// Compact once this many updates were stored since the last snapshot...
const COMPACT_EVERY_UPDATES: u64 = 500;
/// ...or this many bytes of them.
const COMPACT_EVERY_BYTES: usize = 4 << 20;
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
    loop {
        let Some(first) = rx.recv().await else {
            return; // unreachable while registered: the registry holds a sender
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        for cmd in batch {
            owner.handle(cmd);
        }
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
        if owner.members.is_empty() {
            owner.compact().await;
            if docs.try_unregister(&name, generation, &rx) {
                info!(doc = %name, size = owner.size, "document closed");
                return;
            }
        } else if owner.compaction_due() {
            owner.compact().await;
        }
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
            },
        );
        let sv = self.awareness.doc().transact().state_vector();
        self.actions
            .push(Action::To(num, Frame::binary(&wire::sync_step1(sv))));
        if let Ok(states) = self.awareness.update() {
            if !states.clients.is_empty() {
                self.actions
                    .push(Action::To(num, Frame::binary(&wire::awareness(states))));
            }
        }
        Ok(())
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
                let update = self
                    .awareness
                    .doc()
                    .transact()
                    .encode_state_as_update_v1(&sv);
                self.actions
                    .push(Action::To(conn, Frame::binary(&wire::sync_step2(update))));
                Ok(())
            }
            Incoming::Update(update) => self.merge(conn, &update),
            Incoming::Awareness(update) => {
                if let Some(member) = self.members.get_mut(&conn) {
                    member
                        .clients
                        .extend(update.clients.keys().map(ClientID::get));
                    if member.clients.len() > MAX_CLIENTS_PER_CONNECTION {
                        return Err((
                            POLICY,
                            "too many awareness clients on one connection".to_owned(),
                        ));
                    }
                }
                self.awareness
                    .apply_update(update)
                    .map_err(|e| (close::MALFORMED, format!("bad awareness update: {e}")))?;
                // Relayed as it came, to every connection: the sender too, as y-websocket
                // does (its client counts any message as a sign of life).
                self.actions.push(Action::All {
                    except: None,
                    frame: Frame::binary(data),
                });
                Ok(())
            }
            Incoming::QueryAwareness => {
                if let Ok(states) = self.awareness.update() {
                    self.actions
                        .push(Action::To(conn, Frame::binary(&wire::awareness(states))));
                }
                Ok(())
            }
            Incoming::Auth => Ok(()),
        }
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
        }
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
                    for (num, m) in &self.members {
                        if Some(*num) != except {
                            m.conn.send(&frame);
                        }
                    }
                }
                Action::Reply(reply, result) => {
                    let _ = reply.send(result);
                }
            }
        }
    }

    fn compaction_due(&self) -> bool {
        (self.uncompacted >= COMPACT_EVERY_UPDATES || self.uncompacted_bytes >= COMPACT_EVERY_BYTES)
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
