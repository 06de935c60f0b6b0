//! Yjs documents at `/yjs/{doc}`, against the real binary: editors converge, late joiners
//! get everything, content survives restarts, awareness comes and goes with connections,
//! and bad input is refused without harming the document or the other editors.
//!
//! The editors here are y-websocket clients written with `yrs`; tests-node/yjs runs the
//! official JavaScript `yjs` + `y-websocket` against the same server.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{http, no_subprotocol, temp_dir, Server, STEP};
use switchboard::documents::store::Store;
use switchboard_client::switchboard_ws::Message as WsMessage;
use switchboard_client::{Client, Error, Options};
use tokio::time::timeout;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, Text, TextRef, Transact, Update};

fn start(dir: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--data-dir", dir.to_str().expect("utf-8 temp dir")];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn doc_url(server: &Server, doc: &str) -> String {
    format!("ws://{}/yjs/{doc}", server.addr)
}

/// A y-websocket client made of `yrs`: a document with one text, `text`.
struct YPeer {
    client: Client,
    doc: Doc,
    text: TextRef,
    label: String,
    /// Sync step 2 received: the peer has everything the server had when it joined.
    synced: bool,
    /// Awareness states seen: client id → (clock, JSON state, "null" once removed).
    awareness: HashMap<u64, (u32, String)>,
    rng: u64,
}

impl YPeer {
    /// Connects and sends sync step 1, as y-websocket does on open.
    async fn connect(server: &Server, doc: &str, label: &str) -> YPeer {
        YPeer::connect_with(server, doc, label, no_subprotocol()).await
    }

    async fn connect_with(server: &Server, doc: &str, label: &str, options: Options) -> YPeer {
        let client = timeout(STEP, Client::connect_with(&doc_url(server, doc), options))
            .await
            .expect("connect timed out")
            .unwrap_or_else(|e| panic!("{label}: connect failed: {e}"));
        let ydoc = Doc::new();
        let text = ydoc.get_or_insert_text("text");
        let mut peer = YPeer {
            client,
            rng: 0x9e37_79b9_7f4a_7c15 ^ (ydoc.client_id().get() | 1),
            doc: ydoc,
            text,
            label: label.to_owned(),
            synced: false,
            awareness: HashMap::new(),
        };
        let sv = peer.doc.transact().state_vector();
        peer.send(Message::Sync(SyncMessage::SyncStep1(sv))).await;
        peer
    }

    /// Connects and waits for sync step 2.
    async fn synced(server: &Server, doc: &str, label: &str) -> YPeer {
        let mut peer = YPeer::connect(server, doc, label).await;
        peer.pump_until("sync step 2", |p| p.synced).await;
        peer
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        timeout(STEP, self.client.send_binary(bytes))
            .await
            .unwrap_or_else(|_| panic!("{}: send timed out", self.label))
            .unwrap_or_else(|e| panic!("{}: send failed: {e}", self.label));
    }

    async fn send(&mut self, message: Message) {
        self.send_raw(&message.encode_v1()).await;
    }

    fn content(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }

    fn len(&self) -> u32 {
        self.text.len(&self.doc.transact())
    }

    /// Types `s` at `index` and sends the update, as an editor binding does.
    async fn insert(&mut self, index: u32, s: &str) {
        let update = {
            let mut txn = self.doc.transact_mut();
            self.text.insert(&mut txn, index, s);
            txn.encode_update_v1()
        };
        self.send(Message::Sync(SyncMessage::Update(update))).await;
    }

    /// Announces this peer's awareness state; returns its client id.
    async fn set_awareness(&mut self, clock: u32, json: &str) -> u64 {
        let id = self.doc.client_id();
        let mut clients = HashMap::new();
        clients.insert(
            id,
            AwarenessUpdateEntry {
                clock,
                json: json.into(),
            },
        );
        self.send(Message::Awareness(AwarenessUpdate { clients }))
            .await;
        id.get()
    }

    fn state_of(&self, client: u64) -> Option<&str> {
        self.awareness.get(&client).map(|(_, json)| json.as_str())
    }

    async fn handle(&mut self, bytes: &[u8]) {
        let message = Message::decode_v1(bytes)
            .unwrap_or_else(|e| panic!("{}: undecodable message from the server: {e}", self.label));
        match message {
            Message::Sync(SyncMessage::SyncStep1(sv)) => {
                let update = self.doc.transact().encode_state_as_update_v1(&sv);
                self.send(Message::Sync(SyncMessage::SyncStep2(update)))
                    .await;
            }
            Message::Sync(SyncMessage::SyncStep2(update)) => {
                self.apply(&update);
                self.synced = true;
            }
            Message::Sync(SyncMessage::Update(update)) => self.apply(&update),
            Message::Awareness(update) => {
                for (id, entry) in update.clients {
                    self.awareness
                        .insert(id.get(), (entry.clock, entry.json.to_string()));
                }
            }
            other => panic!("{}: unexpected message {other:?}", self.label),
        }
    }

    fn apply(&mut self, update: &[u8]) {
        let update = Update::decode_v1(update)
            .unwrap_or_else(|e| panic!("{}: undecodable update: {e}", self.label));
        self.doc
            .transact_mut()
            .apply_update(update)
            .unwrap_or_else(|e| panic!("{}: update does not apply: {e}", self.label));
    }

    /// Handles one message if one arrives within `wait`: `Ok(true)`; `Ok(false)` if none
    /// came; `Err(close code)` once the connection is closed.
    async fn read(&mut self, wait: Duration) -> Result<bool, Option<u16>> {
        match timeout(wait, self.client.recv()).await {
            Err(_) => Ok(false),
            Ok(Ok(WsMessage::Binary(b))) => {
                self.handle(&b).await;
                Ok(true)
            }
            Ok(Ok(WsMessage::Text(t))) => panic!("{}: text message from /yjs: {t:?}", self.label),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(e.close_code()),
        }
    }

    /// Handles whatever has already arrived.
    async fn drain(&mut self) {
        while let Ok(true) = self.read(Duration::from_millis(1)).await {}
    }

    async fn pump_until(&mut self, what: &str, pred: impl Fn(&YPeer) -> bool) {
        let limit = 3 * STEP;
        let deadline = Instant::now() + limit;
        while !pred(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "{}: no {what} within {limit:?}; text has {} characters",
                    self.label,
                    self.len()
                );
            }
            if let Err(code) = self.read(left).await {
                panic!("{}: closed ({code:?}) while waiting for {what}", self.label);
            }
        }
    }

    /// Reads (ignoring messages) until the server closes; returns its close code and reason.
    async fn closed(&mut self) -> (u16, String) {
        loop {
            match timeout(STEP, self.client.recv()).await {
                Err(_) => panic!("{}: still open after {STEP:?}", self.label),
                Ok(Ok(_)) => {}
                Ok(Err(Error::Closed(Some(f)))) => return (f.code.0, f.reason),
                Ok(Err(e)) => panic!("{}: ended without a close frame: {e}", self.label),
            }
        }
    }

    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Every peer types `per_peer` characters of its own letter at once, at position 0 or at
/// random positions, reading what the others send in between. Returns the peers and the
/// characters typed.
async fn type_concurrently(
    peers: Vec<YPeer>,
    per_peer: usize,
    at_start: bool,
) -> (Vec<YPeer>, String) {
    let mut typed = String::new();
    let mut tasks = Vec::new();
    for (i, mut peer) in peers.into_iter().enumerate() {
        let letter = char::from(ALPHABET[i]);
        typed.extend(std::iter::repeat_n(letter, per_peer));
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_peer {
                let index = if at_start {
                    0
                } else {
                    (peer.next_rand() % (u64::from(peer.len()) + 1)) as u32
                };
                peer.insert(index, &letter.to_string()).await;
                peer.drain().await;
            }
            peer
        }));
    }
    let mut peers = Vec::new();
    for task in tasks {
        peers.push(task.await.expect("editor task panicked"));
    }
    (peers, typed)
}

/// Waits until every peer has every typed character, then checks they hold the same text
/// and that it is exactly the typed characters. Returns the text.
async fn converge(peers: &mut [YPeer], typed: &str) -> String {
    let total = typed.len() as u32;
    for peer in peers.iter_mut() {
        peer.pump_until(&format!("all {total} characters"), |p| p.len() >= total)
            .await;
    }
    let text = peers[0].content();
    for peer in peers.iter() {
        assert_eq!(
            peer.content(),
            text,
            "{} differs from {}",
            peer.label,
            peers[0].label
        );
    }
    let mut got: Vec<u8> = text.clone().into_bytes();
    let mut want: Vec<u8> = typed.as_bytes().to_vec();
    got.sort_unstable();
    want.sort_unstable();
    assert!(
        got == want,
        "the text is not exactly the typed characters: {text:?}"
    );
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn two_editors_converge_and_a_late_joiner_gets_everything() {
    let dir = temp_dir("docs-two");
    let server = start(&dir, &[]);
    let a = YPeer::synced(&server, "notes", "a").await;
    let b = YPeer::synced(&server, "notes", "b").await;
    let (mut peers, typed) = type_concurrently(vec![a, b], 60, false).await;
    let text = converge(&mut peers, &typed).await;

    let mut late = YPeer::synced(&server, "notes", "late").await;
    assert_eq!(
        late.content(),
        text,
        "a late joiner gets the whole document"
    );
    // And it edits like anyone else.
    late.insert(0, "!").await;
    for peer in peers.iter_mut() {
        peer.pump_until("the late joiner's edit", |p| p.content().starts_with('!'))
            .await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_editors_typing_at_the_same_position_converge() {
    let dir = temp_dir("docs-ten");
    let server = start(&dir, &[]);
    let mut peers = Vec::new();
    for i in 0..10 {
        peers.push(YPeer::synced(&server, "crowd", &format!("editor{i}")).await);
    }
    let (mut peers, typed) = type_concurrently(peers, 30, true).await;
    let text = converge(&mut peers, &typed).await;
    assert_eq!(text.len(), 300);

    let late = YPeer::synced(&server, "crowd", "late").await;
    assert_eq!(late.content(), text);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_are_separate() {
    let dir = temp_dir("docs-separate");
    let server = start(&dir, &[]);
    let mut a = YPeer::synced(&server, "one", "a").await;
    let mut b = YPeer::synced(&server, "two", "b").await;
    a.insert(0, "in one").await;
    b.insert(0, "in two").await;
    let mut a2 = YPeer::synced(&server, "one", "a2").await;
    let mut b2 = YPeer::synced(&server, "two", "b2").await;
    a2.pump_until("a's edit", |p| p.content().contains("one"))
        .await;
    b2.pump_until("b's edit", |p| p.content().contains("two"))
        .await;
    a2.drain().await;
    b2.drain().await;
    assert_eq!(a2.content(), "in one");
    assert_eq!(b2.content(), "in two");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn content_survives_a_crash_and_a_graceful_restart() {
    let dir = temp_dir("docs-restart");
    let server = start(&dir, &[]);
    let mut a = YPeer::synced(&server, "keep", "a").await;
    let mut b = YPeer::synced(&server, "keep", "b").await;
    a.insert(0, "hello world").await;
    // An update reaches other editors only once it is stored.
    b.pump_until("a's update", |p| p.content() == "hello world")
        .await;
    drop(server); // SIGKILL: no compaction, no clean shutdown

    let mut server = start(&dir, &[]);
    let mut c = YPeer::synced(&server, "keep", "c").await;
    assert_eq!(c.content(), "hello world", "stored updates survive a crash");
    c.insert(11, "!").await;
    let mut d = YPeer::synced(&server, "keep", "d").await;
    d.pump_until("c's edit", |p| p.content() == "hello world!")
        .await;
    server.sigterm();
    let status = server.wait_exit(STEP).await.expect("server exits");
    assert!(status.success(), "{status}");

    // The last editor leaving compacted the document into one snapshot.
    let stored = Store::open(&dir).unwrap().load("keep").unwrap();
    assert!(stored.snapshot.is_some(), "a snapshot after the last leave");
    assert!(
        stored.updates.is_empty(),
        "merged updates are deleted: {stored:?}"
    );

    let server = start(&dir, &[]);
    let e = YPeer::synced(&server, "keep", "e").await;
    assert_eq!(e.content(), "hello world!", "the snapshot loads");
    drop((a, b));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_document_that_cannot_be_loaded_is_refused_and_left_alone() {
    let dir = temp_dir("docs-corrupt");
    let mut server = start(&dir, &[]);
    let mut a = YPeer::synced(&server, "precious", "a").await;
    a.insert(0, "precious words").await;
    let mut b = YPeer::synced(&server, "precious", "b").await;
    b.pump_until("a's words", |p| p.content() == "precious words")
        .await;
    drop((a, b));
    server.sigterm();
    server.wait_exit(STEP).await.expect("server exits");

    // Damage the stored document: a garbage update after the snapshot.
    let (snapshot, garbage_seq) = {
        let store = Store::open(&dir).unwrap();
        let stored = store.load("precious").unwrap();
        let seq = stored.next_seq();
        store
            .append("precious", seq, &[vec![0xff, 0xff, 0xff, 0xff]])
            .unwrap();
        (stored.snapshot.expect("snapshot"), seq)
    };

    let mut server = start(&dir, &[]);
    for attempt in 0..2 {
        let mut c = YPeer::connect(&server, "precious", "c").await;
        let (code, reason) = c.closed().await;
        assert_eq!(code, 1011, "attempt {attempt}: {reason}");
        assert!(reason.contains("cannot be loaded"), "{reason}");
    }
    server
        .wait_for_log("an error about the damaged document", |l| {
            l.contains("ERROR") && l.contains("document cannot be loaded") && l.contains("precious")
        })
        .await;
    // Other documents are served as usual.
    let mut other = YPeer::synced(&server, "other", "other").await;
    other.insert(0, "fine").await;
    server.sigterm();
    server.wait_exit(STEP).await.expect("server exits");

    // Nothing was overwritten: remove the damage and the content is all there.
    {
        let store = Store::open(&dir).unwrap();
        let stored = store.load("precious").unwrap();
        assert_eq!(stored.snapshot.as_deref(), Some(&snapshot[..]));
        assert_eq!(
            stored.updates,
            vec![(garbage_seq, vec![0xff, 0xff, 0xff, 0xff])]
        );
        store.compact("precious", &snapshot, garbage_seq).unwrap();
    }
    let server = start(&dir, &[]);
    let d = YPeer::synced(&server, "precious", "d").await;
    assert_eq!(d.content(), "precious words");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_messages_are_refused_and_harm_nothing() {
    let dir = temp_dir("docs-malformed");
    let server = start(&dir, &[]);
    let mut writer = YPeer::synced(&server, "doc", "writer").await;
    writer.insert(0, "intact").await;
    let mut witness = YPeer::synced(&server, "doc", "witness").await;
    witness
        .pump_until("the writer's text", |p| p.content() == "intact")
        .await;

    // A real update, cut short.
    let cut = {
        let other = Doc::new();
        let t = other.get_or_insert_text("text");
        let mut txn = other.transact_mut();
        t.insert(&mut txn, 0, "this update is cut in half");
        let u = txn.encode_update_v1();
        u[..u.len() / 2].to_vec()
    };
    let bad: Vec<(Vec<u8>, u16)> = vec![
        (
            Message::Sync(SyncMessage::Update(cut.clone())).encode_v1(),
            1007,
        ),
        (Message::Sync(SyncMessage::SyncStep2(cut)).encode_v1(), 1007),
        (
            Message::Sync(SyncMessage::Update(vec![0xff; 16])).encode_v1(),
            1007,
        ),
        (vec![0, 1, 200], 1007),              // length past the end
        (vec![0, 0, 1, 0, 0], 1007),          // trailing byte
        (vec![0, 9, 0], 1007),                // unknown sync step
        (vec![1, 5, 1, 1, 1, 1, b'{'], 1007), // awareness state that is not JSON
        (vec![9, 0], 1003),                   // unknown message type
    ];
    for (i, (bytes, code)) in bad.into_iter().enumerate() {
        let mut bad_peer = YPeer::synced(&server, "doc", &format!("bad{i}")).await;
        bad_peer.send_raw(&bytes).await;
        let (got, reason) = bad_peer.closed().await;
        assert_eq!(got, code, "message {i} {bytes:?}: {reason}");
    }
    let mut texter = YPeer::synced(&server, "doc", "texter").await;
    timeout(STEP, texter.client.send_text("{\"type\":\"update\"}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(texter.closed().await.0, 1003);

    // The document and the editors are untouched.
    witness.insert(6, "!").await;
    writer
        .pump_until("the witness's edit", |p| p.content() == "intact!")
        .await;
    let late = YPeer::synced(&server, "doc", "late").await;
    assert_eq!(late.content(), "intact!");
    witness.drain().await;
    assert_eq!(witness.content(), "intact!");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_updates_and_full_documents_are_refused() {
    let dir = temp_dir("docs-size");
    let server = start(
        &dir,
        &["--max-update-size", "4KiB", "--max-document-size", "16KiB"],
    );
    let mut witness = YPeer::synced(&server, "doc", "witness").await;
    witness.insert(0, "start;").await;

    // One message over max_update_size: 1009 from the connection itself.
    let mut big = YPeer::synced(&server, "doc", "big").await;
    big.insert(0, &"x".repeat(8 * 1024)).await;
    let (code, reason) = big.closed().await;
    assert_eq!(code, 1009, "{reason}");

    // Updates under the limit until the document is full: 1009, "document is full".
    let mut filler = YPeer::synced(&server, "doc", "filler").await;
    filler
        .pump_until("the witness's text", |p| p.content() == "start;")
        .await;
    let chunk = "y".repeat(3000);
    let (code, reason) = loop {
        filler.insert(0, &chunk).await;
        match filler.read(Duration::from_millis(200)).await {
            Ok(_) => {}
            Err(_) => break filler.closed().await,
        }
        assert!(filler.len() < 40_000, "the document never filled up");
    };
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("document is full"), "{reason}");

    // Neither touched the document beyond what was accepted, nor the witness.
    let late = YPeer::synced(&server, "doc", "late").await;
    let text = late.content();
    assert!(
        text.ends_with("start;") && !text.contains('x'),
        "{}",
        text.len()
    );
    assert!(text.len() <= 16 * 1024);
    witness
        .pump_until("the accepted chunks", |p| p.content() == text)
        .await;
    witness.insert(0, "still here ").await;
    let mut later = YPeer::synced(&server, "doc", "later").await;
    later
        .pump_until("the witness's edit", |p| {
            p.content().starts_with("still here ")
        })
        .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn awareness_is_relayed_queried_and_removed_when_a_connection_drops() {
    let dir = temp_dir("docs-awareness");
    let server = start(&dir, &[]);
    let mut a = YPeer::synced(&server, "room", "a").await;
    let a_id = a
        .set_awareness(1, r#"{"user":{"name":"Ada"},"cursor":3}"#)
        .await;
    a.pump_until("its own awareness echoed", |p| p.state_of(a_id).is_some())
        .await;

    // A joiner gets the current states right away.
    let mut b = YPeer::synced(&server, "room", "b").await;
    b.pump_until("a's awareness", |p| p.state_of(a_id).is_some())
        .await;
    assert!(b.state_of(a_id).unwrap().contains("Ada"));
    let b_id = b.set_awareness(1, r#"{"user":{"name":"Bo"}}"#).await;
    a.pump_until("b's awareness", |p| p.state_of(b_id).is_some())
        .await;

    // Updates are relayed; a query returns everyone.
    a.set_awareness(2, r#"{"user":{"name":"Ada"},"cursor":9}"#)
        .await;
    b.pump_until("a's new cursor", |p| {
        p.state_of(a_id).is_some_and(|s| s.contains("\"cursor\":9"))
    })
    .await;
    let mut c = YPeer::synced(&server, "room", "c").await;
    c.awareness.clear();
    c.send_raw(&[3]).await;
    c.pump_until("both states", |p| {
        p.state_of(a_id).is_some() && p.state_of(b_id).is_some()
    })
    .await;

    // A goes away without a close frame: everyone sees its state removed.
    drop(a);
    for peer in [&mut b, &mut c] {
        peer.pump_until("a's state removed", |p| p.state_of(a_id) == Some("null"))
            .await;
    }
    assert_ne!(b.state_of(b_id), Some("null"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_clients_are_reaped_and_idle_ones_kept() {
    let dir = temp_dir("docs-reap");
    let server = start(
        &dir,
        &[
            "--heartbeat-interval",
            "300ms",
            "--heartbeat-timeout",
            "300ms",
        ],
    );
    let silent_options = Options {
        auto_pong: false,
        ..no_subprotocol()
    };
    let mut silent = YPeer::connect_with(&server, "room", "silent", silent_options).await;
    silent.pump_until("sync step 2", |p| p.synced).await;
    let silent_id = silent.set_awareness(1, r#"{"user":"silent"}"#).await;

    let mut idle = YPeer::synced(&server, "room", "idle").await;
    let idle_id = idle.set_awareness(1, r#"{"user":"idle"}"#).await;
    idle.pump_until("the silent client's state", |p| {
        p.state_of(silent_id).is_some()
    })
    .await;
    let started = Instant::now();
    // The silent one stops answering pings; the idle one only answers pings.
    idle.pump_until("the silent client reaped", |p| {
        p.state_of(silent_id) == Some("null")
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Idle for many heartbeats more, and still there.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        idle.read(Duration::from_millis(100))
            .await
            .expect("the idle client stays connected");
    }
    idle.awareness.clear();
    idle.send_raw(&[3]).await;
    idle.pump_until("its own state", |p| p.state_of(idle_id).is_some())
        .await;
    assert!(!idle.state_of(idle_id).unwrap().contains("null"));
    let (code, _) = silent.closed().await;
    assert_eq!(code, 4000);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_per_document_are_limited() {
    let dir = temp_dir("docs-limit");
    let server = start(&dir, &["--max-connections-per-document", "2"]);
    let _a = YPeer::synced(&server, "busy", "a").await;
    let _b = YPeer::synced(&server, "busy", "b").await;
    let mut c = YPeer::connect(&server, "busy", "c").await;
    let (code, reason) = c.closed().await;
    assert_eq!(code, 1013, "{reason}");
    let _other = YPeer::synced(&server, "quiet", "other").await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_document_names_get_400() {
    let dir = temp_dir("docs-names");
    let server = start(&dir, &[]);
    let long = format!("/yjs/{}", "d".repeat(129));
    for path in [
        "/yjs",
        "/yjs/",
        "/yjs/a%20b",
        "/yjs/a/b",
        "/yjs/a,b",
        long.as_str(),
    ] {
        let res = http(server.addr, &upgrade(path)).await;
        assert_eq!(res.status, 400, "{path}");
        assert_eq!(res.json()["error"], "invalid_document", "{path}");
    }
    let ok = format!("/yjs/{}", "d".repeat(128));
    let res = http(server.addr, &upgrade(&ok)).await;
    assert_eq!(res.status, 101);
    let res = http(server.addr, &upgrade("/yjs/Team-1_notes.v2:draft")).await;
    assert_eq!(res.status, 101);
    let _ = std::fs::remove_dir_all(dir);
}

fn upgrade(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_data_dir_refuses_documents_but_not_rooms() {
    let dir = temp_dir("docs-unusable");
    let file = dir.join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let server = start(&file, &[]);
    let mut peer = YPeer::connect(&server, "doc", "peer").await;
    let (code, reason) = peer.closed().await;
    assert_eq!(code, 1011, "{reason}");
    server
        .wait_for_log("an error naming the data directory", |l| {
            l.contains("ERROR") && l.contains("not-a-directory")
        })
        .await;
    // Protocol v1 does not need the store.
    let mut room_peer = common::Peer::connect(&server).await;
    room_peer.join("lobby", None).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Mangled updates (bit flips, cuts, splices of real updates) sent as updates and as
/// awareness. Each one is refused (1003/1007/1008), or merged as a strange but well-formed
/// edit, or — when it makes yrs panic — the document is reset: all its editors are closed
/// with 1011 and it is loaded again from the store, intact. Throughout, the server stays up
/// and other documents do not notice. (Agreement inside the mangled document is not
/// asserted: an update that decodes but forges ids can leave peers disagreeing, as with any
/// Yjs server; Yjs trusts its editors.)
#[tokio::test(flavor = "multi_thread")]
async fn mangled_updates_never_break_the_server() {
    let dir = temp_dir("docs-mangled");
    let server = start(&dir, &[]);
    let mut target = YPeer::synced(&server, "target", "target-witness").await;
    target.insert(0, "hello world").await;
    // Once another editor has it, it is stored.
    YPeer::synced(&server, "target", "checker")
        .await
        .pump_until("the witness's text", |p| p.content() == "hello world")
        .await;
    let mut calm = YPeer::synced(&server, "calm", "calm-witness").await;
    let mut bystander = YPeer::synced(&server, "calm", "bystander").await;
    let samples: Vec<Vec<u8>> = {
        let d = Doc::with_client_id(424_242);
        let t = d.get_or_insert_text("text");
        let mut out = Vec::new();
        for (i, s) in ["abc", "défg", "0123456789"].iter().enumerate() {
            let mut txn = d.transact_mut();
            t.insert(&mut txn, i as u32, s);
            if i == 2 {
                t.remove_range(&mut txn, 1, 3);
            }
            out.push(txn.encode_update_v1());
        }
        out.push(d.transact().encode_state_as_update_v1(&Default::default()));
        out
    };
    let mut rng: u64 = 0x0fed_cba9_8765_4321;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut mangler = YPeer::synced(&server, "target", "mangler").await;
    let (mut refused, mut resets, mut pluses) = (0, 0, 0);
    for round in 0..800 {
        let mut bytes = samples[(next() % samples.len() as u64) as usize].clone();
        match next() % 3 {
            0 => {
                for _ in 0..1 + next() % 3 {
                    let i = (next() % bytes.len() as u64) as usize;
                    bytes[i] ^= 1 << (next() % 8);
                }
            }
            1 => bytes.truncate((next() % bytes.len() as u64) as usize),
            _ => {
                let i = (next() % bytes.len() as u64) as usize;
                bytes.splice(i..i, (0..1 + next() % 6).map(|_| next() as u8));
            }
        }
        let message = if round % 5 == 4 {
            let mut m = vec![1, 0];
            m.extend_from_slice(&bytes[..bytes.len().min(127)]);
            m[1] = (m.len() - 2) as u8;
            m
        } else {
            Message::Sync(SyncMessage::Update(bytes)).encode_v1()
        };
        mangler.send_raw(&message).await;
        match mangler.read(Duration::from_millis(20)).await {
            Ok(_) => {}
            Err(Some(1003 | 1007 | 1008)) => refused += 1,
            Err(Some(1011)) => {
                // Reset: the other editor is closed too, and the stored document is intact.
                resets += 1;
                let (code, _) = target.closed().await;
                assert_eq!(code, 1011, "round {round}: the other editor after a reset");
                target = YPeer::synced(&server, "target", "target-witness").await;
                assert!(target.content().contains("hello world"), "round {round}");
            }
            Err(code) => panic!("round {round}: closed with {code:?}"),
        }
        if mangler.read(Duration::ZERO).await.is_err() {
            mangler = YPeer::synced(&server, "target", "mangler").await;
        }
        if round % 50 == 0 {
            bystander.insert(0, "+").await;
            pluses += 1;
        }
    }
    assert!(refused > 0, "some mangled updates are refused");
    eprintln!("{refused} refused, {resets} resets");

    // The mangled document is still served, and its other editor is still connected.
    let late = YPeer::synced(&server, "target", "late").await;
    assert!(
        late.content().contains("hello world"),
        "{:?}",
        late.content()
    );
    target.drain().await;
    target.awareness.clear();
    target.send_raw(&[3]).await;
    target
        .read(STEP)
        .await
        .expect("the target's editor is still connected");

    // The other document did not notice.
    let want = "+".repeat(pluses);
    calm.pump_until("the bystander's edits", |p| p.content() == want)
        .await;
    bystander.insert(0, "done").await;
    let mut calm_late = YPeer::synced(&server, "calm", "calm-late").await;
    let want = format!("done{want}");
    calm_late
        .pump_until("every edit", |p| p.content() == want)
        .await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A `kB` field of the server's /proc/PID/status ("VmRSS:", "VmHWM:").
fn server_kib(server: &Server, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in the server's status"))
}

/// Resets the server's peak resident memory (VmHWM) to what is resident now.
fn reset_server_peak(server: &Server) {
    std::fs::write(format!("/proc/{}/clear_refs", server.pid()), "5")
        .expect("cannot reset the server's VmHWM");
}

/// Finding 1 of issue 14: a few bytes claiming 2^28 entries made yrs reserve ~512 MiB (a
/// state vector, an awareness update, an update's client table), and an update nesting
/// values 5,000 deep (10 KB) overflows the stack. Each is refused with 1007 before yrs
/// reserves anything, the server's peak memory stays put, and the document is unharmed.
#[tokio::test(flavor = "multi_thread")]
async fn counts_that_the_bytes_cannot_hold_are_refused_without_allocating() {
    let dir = temp_dir("docs-bomb");
    let server = start(&dir, &[]);
    let mut writer = YPeer::synced(&server, "doc", "writer").await;
    writer.insert(0, "intact").await;
    let huge = [0xff, 0xff, 0xff, 0x7f];
    let mut deep = vec![1u8, 1, 1, 0, 8, 1, 4, b't', b'e', b'x', b't', 1];
    for _ in 0..5_000 {
        deep.extend_from_slice(&[117, 1]);
    }
    deep.extend_from_slice(&[126, 0]);
    let bombs: Vec<(&str, Vec<u8>)> = vec![
        ("sync step 1", [&[0, 0, 4][..], &huge].concat()),
        ("awareness", [&[1, 4][..], &huge].concat()),
        ("update", [&[0, 2, 4][..], &huge].concat()),
        ("step 2", [&[0, 1, 4][..], &huge].concat()),
        ("blocks", [&[0, 2, 7, 1][..], &huge, &[1, 0]].concat()),
        ("deep", Message::Sync(SyncMessage::Update(deep)).encode_v1()),
    ];
    reset_server_peak(&server);
    let before = server_kib(&server, "VmRSS:");
    for (what, bytes) in &bombs {
        let mut bad = YPeer::synced(&server, "doc", what).await;
        bad.send_raw(bytes).await;
        let (code, reason) = bad.closed().await;
        assert_eq!(code, 1007, "{what}: {reason}");
    }
    let peak = server_kib(&server, "VmHWM:");
    assert!(
        peak < before + 32 * 1024,
        "peak memory grew from {before} to {peak} KiB"
    );
    let late = YPeer::synced(&server, "doc", "late").await;
    assert_eq!(late.content(), "intact");
    let _ = std::fs::remove_dir_all(dir);
}

/// A `name: value` field of the server's /proc/PID/io ("wchar:", "write_bytes:").
fn server_io(server: &Server, field: &str) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{}/io", server.pid())).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in the server's io"))
}

/// Fills document `doc` with `mib` MiB of text (in updates under max_update_size) and
/// returns a peer holding all of it, synced.
async fn big_document(server: &Server, doc: &str, mib: usize) -> YPeer {
    let mut writer = YPeer::synced(server, doc, "filler").await;
    let chunk = "z".repeat(900 * 1024);
    for _ in 0..mib * 1024 / 900 {
        writer.insert(0, &chunk).await;
    }
    let total = writer.len();
    let mut reader = YPeer::synced(server, doc, "reader").await;
    reader
        .pump_until("the whole document", |p| p.len() == total)
        .await;
    reader
}

/// An awareness update of `count` clients from `first` on, each with `state`.
fn awareness_of(first: u64, count: u64, state: &str) -> Vec<u8> {
    let clients = (first..first + count)
        .map(|id| {
            let entry = AwarenessUpdateEntry {
                clock: 1,
                json: state.into(),
            };
            (yrs::block::ClientID::new(id), entry)
        })
        .collect();
    Message::Awareness(AwarenessUpdate { clients }).encode_v1()
}

/// Finding 8 of issue 14: an awareness update speaking for 140,000 clients is refused with
/// 1008 and changes nothing: when its connection leaves, nobody is sent a removal of 140,000
/// states (it was 1.26 MB to every editor), and the server keeps none of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_awareness_update_changes_nothing() {
    let dir = temp_dir("docs-refused-awareness");
    let server = start(&dir, &[]);
    let mut witness = YPeer::synced(&server, "room", "witness").await;
    let own = witness.set_awareness(1, r#"{"user":"w"}"#).await;
    witness
        .pump_until("its own state", |p| p.state_of(own).is_some())
        .await;
    let before = server_kib(&server, "VmRSS:");
    let mut flood = YPeer::synced(&server, "room", "flood").await;
    let bytes = awareness_of(1_000_000, 140_000, "{}");
    assert!(bytes.len() < 1 << 20, "{} bytes", bytes.len());
    flood.send_raw(&bytes).await;
    let (code, reason) = flood.closed().await;
    assert_eq!(code, 1008, "{reason}");
    drop(flood);
    // Nothing about those clients reaches the witness, not even their removal.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        witness.read(Duration::from_millis(50)).await.unwrap();
    }
    assert_eq!(witness.awareness.len(), 1, "only its own state");
    witness.awareness.clear();
    witness.send_raw(&[3]).await;
    witness
        .pump_until("the answer to its query", |p| p.state_of(own).is_some())
        .await;
    assert_eq!(witness.awareness.len(), 1);
    let after = server_kib(&server, "VmRSS:");
    assert!(
        after < before + 16 * 1024,
        "resident memory grew from {before} to {after} KiB"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Finding 3 of issue 14: awareness states of ~1 MB each made every joiner's first frames
/// exceed its outbound queue (4009 at once), locking the document. A state over
/// max_awareness_state_size is refused with 1009; states past max_awareness_per_document
/// are not applied (their sender stays connected); and an editor who joins then is sent
/// every state and the document, and syncs.
#[tokio::test(flavor = "multi_thread")]
async fn awareness_cannot_lock_a_document() {
    let dir = temp_dir("docs-awareness-lock");
    let server = start(&dir, &[]);
    let mut writer = YPeer::synced(&server, "doc", "writer").await;
    writer.insert(0, "still editable").await;
    let mut big = YPeer::synced(&server, "doc", "big").await;
    let state = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1_000_000));
    big.set_awareness(1, &state).await;
    let (code, reason) = big.closed().await;
    assert_eq!(code, 1009, "{reason}");

    // 16 states of ~16 KB per connection: four connections fill the 1 MiB budget.
    let state = format!(r#"{{"pad":"{}"}}"#, "y".repeat(16_000));
    let mut fillers = Vec::new();
    for i in 0..5u64 {
        let mut filler = YPeer::synced(&server, "doc", &format!("filler{i}")).await;
        filler
            .send_raw(&awareness_of(1000 + 100 * i, 16, &state))
            .await;
        fillers.push(filler);
    }
    // The fifth was not applied (nobody sees it), and its sender is still connected.
    let mut joiner = YPeer::synced(&server, "doc", "joiner").await;
    joiner
        .pump_until("the writer's text", |p| p.content() == "still editable")
        .await;
    joiner
        .pump_until("the first four fillers' states", |p| {
            (0..4).all(|i| p.state_of(1000 + 100 * i).is_some())
        })
        .await;
    joiner.drain().await;
    assert!(
        joiner.state_of(1400).is_none(),
        "over the budget: not applied"
    );
    for filler in fillers.iter_mut() {
        filler
            .read(Duration::from_millis(10))
            .await
            .expect("still connected");
    }
    // A small state still fits, and is relayed.
    let id = joiner.set_awareness(1, r#"{"user":"j"}"#).await;
    writer
        .pump_until("the joiner's state", |p| p.state_of(id).is_some())
        .await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Finding 4 of issue 14: connections that send a sync step 1 and never read each pinned a
/// whole copy of the document (30 on a 7 MB document: +187 MiB). Now copies queued unsent
/// count against max_sync_queued_per_document: further requests wait, and copies left
/// unread for document_sync_timeout while others wait close their connection with 4009.
/// Server memory stays bounded and an editor who reads joins.
#[tokio::test(flavor = "multi_thread")]
async fn silent_sync_requests_cannot_pin_copies_of_a_document() {
    let dir = temp_dir("docs-silent-sync");
    let server = start(
        &dir,
        &[
            "--max-sync-queued-per-document",
            "16MiB",
            "--document-sync-timeout",
            "1s",
        ],
    );
    let reader = big_document(&server, "big", 7).await;
    reset_server_peak(&server);
    let before = server_kib(&server, "VmRSS:");
    let mut silent = Vec::new();
    for _ in 0..10 {
        let mut client = timeout(
            STEP,
            Client::connect_with(&doc_url(&server, "big"), no_subprotocol()),
        )
        .await
        .unwrap()
        .unwrap();
        client.send_binary(&[0, 0, 1, 0]).await.unwrap();
        silent.push(client);
    }
    // Before any copy has been unread for the timeout: two copies (16 MiB) are queued,
    // the other requests wait. Ten copies would be 65 MB.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let peak = server_kib(&server, "VmHWM:");
    assert!(
        peak < before + 40 * 1024,
        "peak memory grew from {before} to {peak} KiB"
    );
    // An editor who reads gets its copy once those ahead of it had theirs (two at a time,
    // each held 1 s at most).
    let started = Instant::now();
    let honest = YPeer::synced(&server, "big", "honest").await;
    assert_eq!(honest.len(), reader.len());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the honest editor waited {:?}",
        started.elapsed()
    );
    // The silent ones that held copies were closed as slow consumers.
    let mut slow = 0;
    for mut client in silent {
        loop {
            match timeout(Duration::from_millis(100), client.recv()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    if e.close_code() == Some(4009) {
                        slow += 1;
                    }
                    break;
                }
                Err(_) => break,
            }
        }
    }
    assert!(slow >= 1, "no silent client was closed with 4009");
    let _ = std::fs::remove_dir_all(dir);
}

/// Finding 7 of issue 14, part one: /yjs messages are rate limited like /ws messages. Over
/// the rate they are held back (a Yjs update cannot be dropped); a client that keeps it up
/// for rate_limit_strikes messages is closed with 4008. What it sent before is kept.
#[tokio::test(flavor = "multi_thread")]
async fn document_messages_are_rate_limited() {
    let dir = temp_dir("docs-rate");
    let server = start(
        &dir,
        &[
            "--message-rate",
            "20",
            "--message-burst",
            "5",
            "--rate-limit-strikes",
            "5",
        ],
    );
    let mut witness = YPeer::synced(&server, "doc", "witness").await;
    let mut flood = YPeer::synced(&server, "doc", "flood").await;
    let started = Instant::now();
    let code = loop {
        flood.insert(0, "f").await;
        if let Err(code) = flood.read(Duration::ZERO).await {
            break code;
        }
        assert!(flood.len() < 1000, "never rate limited");
    };
    let code = match code {
        Some(code) => code,
        None => flood.closed().await.0,
    };
    assert_eq!(code, 4008);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "held back first"
    );
    witness
        .pump_until("the flood's first edits", |p| p.len() >= 5)
        .await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Finding 7 of issue 14, part two: 20 connect → one small update → disconnect cycles on a
/// 7 MB document rewrote it every time (169 MB written). A document now lingers after its
/// last connection and compacts only when the updates since its snapshot are large next
/// to it, so the cycles write little more than the updates.
#[tokio::test(flavor = "multi_thread")]
async fn reconnect_cycles_do_not_rewrite_a_large_document() {
    let dir = temp_dir("docs-cycles");
    let mut server = start(&dir, &[]);
    let reader = big_document(&server, "big", 7).await;
    let full = reader.doc.transact().state_vector();
    let mut local = reader.doc;
    let text = reader.text;
    drop(reader.client);
    let written = server_io(&server, "wchar:");
    for i in 0..20 {
        let mut client = timeout(
            STEP,
            Client::connect_with(&doc_url(&server, "big"), no_subprotocol()),
        )
        .await
        .unwrap()
        .unwrap();
        let sv = local.transact().state_vector();
        client
            .send_binary(&Message::Sync(SyncMessage::SyncStep1(sv)).encode_v1())
            .await
            .unwrap();
        let update = {
            let mut txn = local.transact_mut();
            text.insert(&mut txn, 0, &format!("{i} "));
            txn.encode_update_v1()
        };
        client
            .send_binary(&Message::Sync(SyncMessage::Update(update)).encode_v1())
            .await
            .unwrap();
        // The server's step 1 and our (tiny) step 2 reply.
        let _ = timeout(STEP, client.recv()).await;
        client.close(1000, "").await.unwrap();
        let _ = timeout(STEP, client.closed()).await;
    }
    let cycles = server_io(&server, "wchar:") - written;
    assert!(
        cycles < 8 << 20,
        "20 cycles wrote {cycles} bytes (the document is 7 MB)"
    );
    // The small updates are stored, not lost: they are there after a restart.
    server.sigterm();
    server.wait_exit(STEP).await.expect("server exits");
    let server = start(&dir, &[]);
    let late = YPeer::synced(&server, "big", "late").await;
    assert!(
        late.content().starts_with("19 18 17"),
        "{:?}",
        &late.content()[..20]
    );
    drop((full, &mut local));
    let _ = std::fs::remove_dir_all(dir);
}
