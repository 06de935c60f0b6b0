//! Yjs documents over the y-websocket protocol, at `GET /yjs/{doc}`.
//!
//! Each open document has one owner: a task that holds the `yrs` document and its awareness,
//! receives commands from the document's connections over a channel, merges updates, makes
//! them durable in the embedded store, and only then fans them out (one encoded frame,
//! shared by every connection's outbox). When the last connection leaves, the owner compacts
//! the document into a snapshot and ends. See docs/documents.md.
//!
//! - [`wire`]: the y-websocket message format.
//! - [`owner`]: the per-document task.
//! - [`store`]: the redb store (snapshot + updates per document).

pub mod owner;
pub mod store;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use switchboard_ws::{CloseCode, Frame};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::debug;

use crate::connection::{self, Data, Driver, Ending, Flow, Handler, Settings};
use crate::hub::ConnHandle;
use crate::outbox::Outbox;
use crate::rate::{RateLimiter, Verdict};
use crate::socket::{self, Socket};
use owner::Cmd;
use store::Store;

/// Most characters a document name may have (the same rule as room names).
pub const MAX_NAME_LEN: usize = crate::protocol::MAX_ROOM_LEN;
/// What a valid document name looks like, for error messages.
pub const NAME_RULE: &str = "document names are 1-128 characters of A-Z a-z 0-9 _ - . :";

/// Close codes of the document endpoint (besides the connection's own: 1009 for a message
/// over `max_update_size`, 4000 heartbeat, 4009 slow consumer, 1001 shutdown).
pub mod close {
    use switchboard_ws::CloseCode;
    /// A text message: y-websocket speaks binary only.
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// A message or update that does not decode.
    pub const MALFORMED: CloseCode = CloseCode(1007);
    /// An update that would take the document over `max_document_size`.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// The document could not be loaded or stored; it is not served rather than served wrong.
    pub const INTERNAL: CloseCode = CloseCode(1011);
    /// `max_connections_per_document` reached.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// Over the message rate limit (`message_rate`, `message_burst`) for too long.
    pub const RATE_LIMITED: CloseCode = CloseCode(4008);
    /// An edit from a connection whose token allows reading the document only.
    pub const FORBIDDEN: CloseCode = CloseCode(4003);
    /// The connection's token expired (a reconnect needs a fresh one on the URL).
    pub const TOKEN_EXPIRED: CloseCode = CloseCode(4010);
    /// A copy of the document (sync step 2) left unread while other connections wait.
    pub const SLOW_CONSUMER: CloseCode = CloseCode(4009);
}

/// A close code and reason for one connection.
pub type Refusal = (CloseCode, String);

/// The document settings, from the config.
#[derive(Debug, Clone)]
pub struct DocSettings {
    pub data_dir: PathBuf,
    pub max_document_size: usize,
    pub max_update_size: usize,
    pub max_connections_per_document: usize,
    /// Largest awareness state (its JSON) of one client.
    pub max_awareness_state_size: usize,
    /// Awareness states of one document in all (JSON plus [`owner::AWARENESS_ENTRY_COST`]
    /// per client).
    pub max_awareness_per_document: usize,
    /// Bytes of sync step 2 replies one document may have queued and not yet written.
    pub max_sync_queued_per_document: usize,
    /// How long a sync step 2 reply may stay unwritten while others wait for theirs.
    pub sync_timeout: Duration,
    /// The message rate limit, as on `/ws`.
    pub message_rate: u32,
    pub message_burst: u32,
    pub rate_limit_strikes: u32,
}

/// What a document connection may be sent at once, before it has had a chance to read:
/// sync step 1 (a state vector, never bigger than the document), every awareness state,
/// then its copy of the document (sync step 2), plus a couple of updates from others
/// meanwhile. Its outbound queue is at least this, so an editor that reads can always join.
pub fn first_frames_bound(config: &crate::config::Config) -> usize {
    2 * config.max_document_size
        + config.max_awareness_per_document
        + 2 * config.max_update_size
        + 1024
}

/// The `{doc}` of `/yjs/{doc}` if `path` is a valid document path.
pub fn doc_name(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/yjs/")?;
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    valid.then_some(name)
}

/// The open documents and the store.
pub struct Documents {
    settings: DocSettings,
    /// Opened on first use, so a server that serves no documents never creates a data dir.
    store: tokio::sync::Mutex<Option<Arc<Store>>>,
    open: Mutex<HashMap<Arc<str>, Entry>>,
    next_generation: AtomicU64,
    /// Notified whenever a document closes (for shutdown).
    closed: Notify,
    /// Set when the server shuts down: documents that linger after their last connection
    /// left close at once.
    shutdown: watch::Sender<bool>,
    /// Per document, hashes of updates that made yrs panic (the document was reset). Kept
    /// across resets, so that an editor re-sending the same update after reconnecting is
    /// refused instead of resetting the document again and again.
    poison: Mutex<HashMap<Arc<str>, VecDeque<u64>>>,
}

struct Entry {
    tx: mpsc::Sender<Cmd>,
    generation: u64,
}

/// Commands waiting per document before connections wait to send more.
const CHANNEL_DEPTH: usize = 256;
/// Attempts to join a document whose owner is closing at that very moment.
const JOIN_ATTEMPTS: usize = 5;

impl Documents {
    pub fn new(settings: DocSettings) -> Arc<Documents> {
        Arc::new(Documents {
            settings,
            store: tokio::sync::Mutex::new(None),
            open: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            closed: Notify::new(),
            shutdown: watch::Sender::new(false),
            poison: Mutex::new(HashMap::new()),
        })
    }

    pub fn settings(&self) -> &DocSettings {
        &self.settings
    }

    /// Documents open right now.
    pub fn open_count(&self) -> usize {
        self.lock().len()
    }

    /// Waits until every document has closed (each compacts when its last connection leaves).
    /// Called on shutdown: documents that linger with no connection close at once.
    pub async fn closed(&self) {
        self.shutdown.send_replace(true);
        loop {
            let notified = self.closed.notified();
            if self.lock().is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// The store, opened on first use. An error is returned (and retried next time) rather
    /// than remembered, so fixing the data directory needs no restart.
    async fn store(&self) -> Result<Arc<Store>, String> {
        let mut slot = self.store.lock().await;
        if let Some(store) = &*slot {
            return Ok(store.clone());
        }
        let dir = self.settings.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&dir))
            .await
            .map_err(|e| format!("cannot open the document store: {e}"))??;
        let store = Arc::new(store);
        tracing::info!(path = %store.path().display(), "document store opened");
        *slot = Some(store.clone());
        Ok(store)
    }

    /// Whether an update with this hash made yrs panic on document `name` before.
    fn is_poison(&self, name: &str, hash: u64) -> bool {
        let poison = self.poison.lock().unwrap_or_else(|e| e.into_inner());
        poison.get(name).is_some_and(|h| h.contains(&hash))
    }

    fn add_poison(&self, name: &Arc<str>, hash: u64) {
        const KEEP: usize = 16;
        let mut poison = self.poison.lock().unwrap_or_else(|e| e.into_inner());
        let hashes = poison.entry(name.clone()).or_default();
        if hashes.len() == KEEP {
            hashes.pop_front();
        }
        hashes.push_back(hash);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        // The map is only changed by short sections that do not panic midway.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `conn` to document `name`, opening (loading) the document if needed. On success
    /// the owner has queued sync step 1 and the awareness states on the connection.
    async fn join(
        self: &Arc<Self>,
        name: &Arc<str>,
        conn: &Arc<ConnHandle>,
        kick: &Arc<Kick>,
    ) -> Result<mpsc::Sender<Cmd>, Refusal> {
        for _ in 0..JOIN_ATTEMPTS {
            let (tx, generation) = {
                let mut open = self.lock();
                match open.get(name) {
                    Some(e) => (e.tx.clone(), e.generation),
                    None => {
                        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
                        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
                        open.insert(
                            name.clone(),
                            Entry {
                                tx: tx.clone(),
                                generation,
                            },
                        );
                        tokio::spawn(owner::run(self.clone(), name.clone(), generation, rx));
                        (tx, generation)
                    }
                }
            };
            let (reply, answer) = oneshot::channel();
            let cmd = Cmd::Join {
                conn: conn.clone(),
                kick: kick.clone(),
                reply,
            };
            if tx.send(cmd).await.is_ok() {
                if let Ok(result) = answer.await {
                    return result.map(|()| tx);
                }
            }
            // The owner ended between our lookup and its answer: forget it and retry.
            self.forget(name, generation);
        }
        Err((
            close::INTERNAL,
            "document unavailable, try again".to_owned(),
        ))
    }

    /// Removes the registry entry of `name` if it is still `generation`.
    fn forget(&self, name: &str, generation: u64) {
        let mut open = self.lock();
        if open.get(name).is_some_and(|e| e.generation == generation) {
            open.remove(name);
            drop(open);
            self.closed.notify_waiters();
        }
    }

    /// Called by an owner that wants to end: succeeds (and unregisters it) only if no
    /// command is waiting for it. Checked under the registry lock, so a connection either
    /// finds the owner registered and its command is seen, or finds no owner and opens anew.
    fn try_unregister(&self, name: &str, generation: u64, rx: &mpsc::Receiver<Cmd>) -> bool {
        let mut open = self.lock();
        if !rx.is_empty() {
            return false;
        }
        if open.get(name).is_some_and(|e| e.generation == generation) {
            open.remove(name);
        }
        drop(open);
        self.closed.notify_waiters();
        true
    }
}

/// How an owner closes one of its connections from outside the connection's task: it queues
/// the close frame (code and reason of its choosing) and stops the connection as a server
/// shutdown does ([`Outbox::shutdown`]), which makes the connection driver run the close
/// handshake with its usual deadline.
#[derive(Default)]
pub struct Kick {
    why: Mutex<Option<Refusal>>,
}

impl Kick {
    pub fn fire(&self, outbox: &Outbox, code: CloseCode, reason: &str) {
        {
            let mut why = self.why.lock().unwrap_or_else(|e| e.into_inner());
            if why.is_some() {
                return;
            }
            *why = Some((code, reason.to_owned()));
        }
        outbox.push_close(Frame::close(code, reason));
        outbox.shutdown();
    }

    fn reason(&self) -> Option<Refusal> {
        self.why.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Which document a connection opens, and how.
pub struct Opening {
    pub name: Arc<str>,
    /// The token allows reading (`join`) but not editing (`publish`).
    pub read_only: bool,
    /// When the connection's token stops being valid (its `exp` plus the grace): then the
    /// connection is closed with 4010, and y-websocket reconnects with a fresh one.
    pub expires: Option<tokio::time::Instant>,
}

/// Serves one upgraded connection on document `name` until it ends.
pub async fn serve<S: Socket>(
    docs: Arc<Documents>,
    Opening {
        name,
        read_only,
        expires,
    }: Opening,
    conn: Arc<ConnHandle>,
    stream: S,
    leftover: Bytes,
    settings: &Settings,
) -> Ending {
    // The connection stops on server shutdown (the hub asks every connection's outbox) or
    // when its owner kicks it.
    let kick = Arc::new(Kick::default());
    let tx = match docs.join(&name, &conn, &kick).await {
        Ok(tx) => tx,
        Err((code, reason)) => return refuse(stream, code, &reason).await,
    };
    let s = docs.settings();
    let mut handler = DocConn {
        tx,
        conn: conn.clone(),
        rate: RateLimiter::new(s.message_rate, s.message_burst, s.rate_limit_strikes),
        message_rate: s.message_rate,
        read_only,
        expires,
    };
    let mut driver = Driver::new(stream, leftover, conn, settings);
    let mut ending = connection::run(&mut driver, &mut handler, settings).await;
    if let Some((code, reason)) = kick.reason() {
        ending.code = code;
        ending.reason = reason;
        ending.by_peer = false;
    }
    ending
}

/// Closes a connection that never got to its document: sends the close frame, then reads
/// (and drops) what the client sends until it closes too, or 3 s pass.
async fn refuse<S: Socket>(mut stream: S, code: CloseCode, reason: &str) -> Ending {
    let ending = Ending {
        code,
        reason: reason.to_owned(),
        by_peer: false,
    };
    if socket::write_all(&mut stream, Frame::close(code, reason).as_bytes())
        .await
        .is_err()
    {
        return ending;
    }
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = BytesMut::with_capacity(1024);
        while matches!(socket::read_some(&mut stream, &mut buf).await, Ok(n) if n > 0) {
            buf.clear();
        }
    };
    if tokio::time::timeout(Duration::from_secs(3), drain)
        .await
        .is_err()
    {
        debug!(code = code.0, "refused client did not close");
    }
    ending
}

/// The connection side: hands each binary message to the owner and waits for its verdict,
/// so a connection has at most one message in flight (its socket is not read meanwhile,
/// which is the backpressure).
struct DocConn {
    tx: mpsc::Sender<Cmd>,
    conn: Arc<ConnHandle>,
    rate: RateLimiter,
    message_rate: u32,
    /// The token allows `join` (read) but not `publish` (edit).
    read_only: bool,
    expires: Option<tokio::time::Instant>,
}

/// Whether a y-websocket message is a sync step 2 or update that changes something (an
/// empty Yjs update, which a read-only editor sends when it syncs, changes nothing).
fn is_edit(data: &Bytes) -> bool {
    match wire::decode(data) {
        Ok(wire::Incoming::Update(update)) => update.iter().any(|b| *b != 0),
        _ => false,
    }
}

impl Handler for DocConn {
    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.expires
    }

    fn on_deadline(&mut self) -> Flow {
        Flow::Close(close::TOKEN_EXPIRED, "token expired".to_owned())
    }

    async fn on_message(&mut self, data: Data) -> Flow {
        let data = match data {
            Data::Binary(b) => b,
            Data::Text(_) => {
                return Flow::Close(
                    close::UNSUPPORTED,
                    "y-websocket messages are binary".to_owned(),
                )
            }
        };
        // A Yjs update cannot be dropped (the editor believes it was sent), so a message over
        // the rate is held back until the bucket refills instead: the socket is not read
        // meanwhile. A client that keeps it up for `rate_limit_strikes` messages in a row is
        // closed with 4008.
        match self.rate.check(std::time::Instant::now()) {
            Verdict::Allow => {}
            Verdict::Limit => {
                let wait = Duration::from_secs_f64(1.0 / f64::from(self.message_rate.max(1)));
                tokio::time::sleep(wait).await;
            }
            Verdict::Close => {
                return Flow::Close(
                    close::RATE_LIMITED,
                    "rate limited: too many document messages".to_owned(),
                )
            }
        }
        if self.read_only && is_edit(&data) {
            // Refused before the owner sees it: the document is untouched.
            return Flow::Close(
                close::FORBIDDEN,
                "read-only: your token does not allow editing this document".to_owned(),
            );
        }
        let (reply, answer) = oneshot::channel();
        let cmd = Cmd::Message {
            conn: self.conn.num,
            data,
            reply,
        };
        if self.tx.send(cmd).await.is_err() {
            return Flow::Close(close::INTERNAL, "document closed".to_owned());
        }
        match answer.await {
            Ok(Ok(())) => Flow::Continue,
            Ok(Err((code, reason))) => Flow::Close(code, reason),
            Err(_) => Flow::Close(close::INTERNAL, "document closed".to_owned()),
        }
    }

    async fn on_close(&mut self) {
        if self
            .tx
            .send(Cmd::Leave {
                conn: self.conn.num,
            })
            .await
            .is_err()
        {
            // The owner was reset (and kicked this connection): nothing left to release.
            debug!(conn = %self.conn.id, "document owner gone before leave");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_ws::{Decoder, Message, Role};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[test]
    fn document_names() {
        assert_eq!(doc_name("/yjs/notes"), Some("notes"));
        assert_eq!(doc_name("/yjs/Team-1_a.b:c"), Some("Team-1_a.b:c"));
        let max = format!("/yjs/{}", "d".repeat(MAX_NAME_LEN));
        assert!(doc_name(&max).is_some());
        let long = format!("/yjs/{}", "d".repeat(MAX_NAME_LEN + 1));
        for bad in [
            "/yjs",
            "/yjs/",
            "/yjs/a/b",
            "/yjs/a b",
            "/yjs/a%20",
            "/yjsx",
            &long,
        ] {
            assert_eq!(doc_name(bad), None, "{bad}");
        }
    }

    struct Quiet;
    impl Handler for Quiet {
        async fn on_message(&mut self, _: Data) -> Flow {
            Flow::Continue
        }
        async fn on_close(&mut self) {}
    }

    /// A kicked connection gets the owner's close code and reason on the wire (not the
    /// driver's shutdown 1001), and the driver still runs the close handshake.
    #[tokio::test]
    async fn a_kick_closes_the_connection_with_its_own_code() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let conn = Arc::new(ConnHandle::new(1, "kicked".into(), Outbox::new(1 << 20)));
        let outbox = &conn.outbox;
        let kick = Kick::default();
        let settings = Settings {
            max_message_size: 1 << 16,
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
        };
        let mut wire = Driver::new(server, Bytes::new(), conn.clone(), &settings);
        let driver = async { connection::run(&mut wire, &mut Quiet, &settings).await };
        let peer = async {
            outbox.push(&Frame::binary(b"before")).unwrap();
            kick.fire(outbox, close::INTERNAL, "document reset");
            kick.fire(outbox, close::MALFORMED, "second kick is ignored");
            let mut decoder = Decoder::new(Role::Client, 1 << 16);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            loop {
                while let Some(m) = decoder.decode(&mut buf).unwrap() {
                    got.push(m);
                }
                if matches!(got.last(), Some(Message::Close(_))) {
                    break;
                }
                assert!(client.read_buf(&mut buf).await.unwrap() > 0, "eof: {got:?}");
            }
            // Answer the close, as a client does.
            let close = Frame::masked_close(close::INTERNAL, "", [1, 2, 3, 4]);
            client.write_all(close.as_bytes()).await.unwrap();
            got
        };
        let (ending, got) =
            tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(driver, peer) })
                .await
                .expect("the kicked connection ends");
        assert!(matches!(&got[0], Message::Binary(b) if &b[..] == b"before"));
        match &got[1] {
            Message::Close(Some(f)) => {
                assert_eq!(f.code, close::INTERNAL);
                assert_eq!(f.reason, "document reset");
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
        assert_eq!(got.len(), 2);
        assert_eq!(
            kick.reason(),
            Some((close::INTERNAL, "document reset".to_owned()))
        );
        // The driver reports its own shutdown close; `serve` replaces it with the kick's.
        assert!(ending.code == CloseCode::GOING_AWAY || ending.code == close::INTERNAL);
    }
}
