//! The broker contract, as tests: every broker implementation must pass all of them.
//! `brokers()` lists the implementations (memory; durable on a fresh store); a broker for
//! many nodes adds itself there.

use std::sync::{Arc, Mutex, Weak};

use serde_json::value::RawValue;

use super::durable::DurableBroker;
use super::memory::MemoryBroker;
use super::stored::Store;
use super::{
    Broker, BrokerError, HistoryPage, HistoryQuery, Inbound, Local, Payload, Position, Publication,
    Published, StreamOptions, Unrecoverable,
};

/// A payload as the tests compare it: JSON as its text, bytes as `bin:` and their hex.
fn shown(p: &Payload) -> String {
    match p {
        Payload::Json(s) => s.to_string(),
        Payload::Binary(b) => {
            let hex: String = b.iter().map(|b| format!("{b:02x}")).collect();
            format!("bin:{hex}")
        }
    }
}

/// What an inbound handler saw: (room, epoch, offset, data).
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String, u64, String)>>);

impl Inbound for Recorder {
    fn deliver(&self, room: &str, epoch: &Arc<str>, p: &Arc<Publication>) {
        self.0
            .lock()
            .unwrap()
            .push((room.into(), epoch.to_string(), p.offset, shown(&p.data)));
    }
}

fn opts(durable: bool, size: usize) -> StreamOptions {
    StreamOptions {
        durable,
        size,
        ttl_ms: 60_000,
        key_window_ms: 60_000,
    }
}

/// Each implementation with the options that select it, and a recorder attached.
/// A broker under test: its name, itself, whether its rooms are durable, what it delivered.
type UnderTest = (&'static str, Arc<dyn Broker>, bool, Arc<Recorder>);

/// A `redis-server` of the test's own on a free port, stopped when dropped.
struct RedisServer {
    child: std::process::Child,
    url: String,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_server() -> RedisServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server must be installed for the broker contract tests (apt-get install redis-server)");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    RedisServer {
        child,
        url: format!("redis://127.0.0.1:{port}/"),
    }
}

/// Subscribes to `room` the way the hub does: then reads its position, after which every
/// publication reaches the inbound handler.
async fn join(b: &dyn Broker, room: &str, o: StreamOptions) {
    b.subscribe(room, o);
    history(b, room, None, 0, false, o).await.expect("position");
}

async fn brokers() -> (Vec<UnderTest>, RedisServer) {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-contract-{}-{}",
        std::process::id(),
        crate::ids::random_token()
    ));
    let store = Store::open(&dir).expect("store");
    let durable = Local {
        memory: MemoryBroker::new(None),
        durable: Some(DurableBroker::start(store)),
    };
    let redis = redis_server();
    let shared = super::redis::RedisBroker::connect(
        &redis.url,
        super::redis::RedisOptions {
            node_timeout: std::time::Duration::from_secs(10),
        },
    )
    .await
    .expect("connect to the test's redis-server");
    let mut out: Vec<UnderTest> = vec![
        ("memory", Arc::new(Local::memory()), false, Arc::default()),
        ("durable", Arc::new(durable), true, Arc::default()),
        ("redis", Arc::new(shared), false, Arc::default()),
    ];
    for (_, b, _, rec) in &mut out {
        let weak: Weak<dyn Inbound> = Arc::downgrade(rec) as Weak<dyn Inbound>;
        b.attach(weak);
    }
    (out, redis)
}

fn publication(data: &str, key: Option<&str>) -> Publication {
    let raw = RawValue::from_string(data.to_owned()).unwrap();
    Publication::new(
        Payload::Json(raw.get().into()),
        "{\"conn\":\"c\"}".into(),
        key.map(Into::into),
    )
}

fn binary(data: &[u8], key: Option<&str>) -> Publication {
    Publication::new(
        Payload::Binary(bytes::Bytes::copy_from_slice(data)),
        "{\"conn\":\"c\"}".into(),
        key.map(Into::into),
    )
}

/// Bytes no text encoding would keep: every byte value, a NUL first, invalid UTF-8.
fn awkward_bytes() -> Vec<u8> {
    (0..=255u8).rev().chain([0, 0xff, 0xc3]).collect()
}

#[tokio::test]
async fn binary_publications_keep_their_bytes_beside_json_ones() {
    let (brokers, _redis) = brokers().await;
    let bytes = awkward_bytes();
    for (name, b, durable, rec) in brokers {
        let o = opts(durable, 100);
        join(&*b, "bin", o).await;
        publish(&*b, "bin", "\"text\"", None, o).await;
        let p = b
            .publish(&"bin".into(), binary(&bytes, Some("bk")), o)
            .wait()
            .await
            .expect("publish");
        assert_eq!(p.offset, 2, "{name}");
        publish(&*b, "bin", "{\"n\":3}", None, o).await;
        b.publish(&"bin".into(), binary(b"", None), o)
            .wait()
            .await
            .expect("an empty binary message");
        let again = b
            .publish(&"bin".into(), binary(&bytes, Some("bk")), o)
            .wait()
            .await
            .unwrap();
        assert!(
            again.duplicate && again.offset == 2,
            "{name}: keys work for bytes"
        );
        let want = vec![
            "\"text\"".to_owned(),
            shown(&Payload::Binary(bytes.clone().into())),
            "{\"n\":3}".to_owned(),
            "bin:".to_owned(),
        ];
        let page = history(&*b, "bin", None, 10, false, o).await.unwrap();
        let read: Vec<String> = page.messages.iter().map(|p| shown(&p.data)).collect();
        assert_eq!(read, want, "{name}: history");
        for _ in 0..100 {
            if rec.0.lock().unwrap().len() >= 4 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let delivered: Vec<String> = rec.0.lock().unwrap().iter().map(|d| d.3.clone()).collect();
        assert_eq!(delivered, want, "{name}: delivered");
    }
}

async fn publish(
    b: &dyn Broker,
    room: &str,
    data: &str,
    key: Option<&str>,
    o: StreamOptions,
) -> Published {
    b.publish(&room.into(), publication(data, key), o)
        .wait()
        .await
        .expect("publish")
}

async fn history(
    b: &dyn Broker,
    room: &str,
    since: Option<Position>,
    limit: usize,
    reverse: bool,
    o: StreamOptions,
) -> Result<HistoryPage, BrokerError> {
    b.history(
        room,
        HistoryQuery {
            since,
            limit,
            reverse,
            open: true,
        },
        o,
    )
    .wait()
    .await
}

fn offsets(page: &HistoryPage) -> Vec<u64> {
    page.messages.iter().map(|p| p.offset).collect()
}

#[tokio::test]
async fn offsets_count_from_one_in_one_epoch_and_deliveries_are_in_order() {
    let (brokers, _redis) = brokers().await;
    for (name, b, durable, rec) in brokers {
        let o = opts(durable, 100);
        join(&*b, "r", o).await;
        let mut epochs = Vec::new();
        for i in 1..=20u64 {
            let p = publish(&*b, "r", &i.to_string(), None, o).await;
            assert_eq!(p.offset, i, "{name}");
            assert!(!p.duplicate, "{name}");
            epochs.push(p.epoch);
        }
        epochs.dedup();
        assert_eq!(epochs.len(), 1, "{name}: one epoch");
        let seen = rec.0.lock().unwrap().clone();
        let got: Vec<u64> = seen.iter().map(|s| s.2).collect();
        assert_eq!(
            got,
            (1..=20).collect::<Vec<_>>(),
            "{name}: delivered in order"
        );
        assert!(
            seen.iter().all(|s| s.0 == "r" && s.1 == *epochs[0]),
            "{name}"
        );
        // Another room counts on its own.
        assert_eq!(
            publish(&*b, "other", "1", None, o).await.offset,
            1,
            "{name}"
        );
    }
}

#[tokio::test]
async fn history_reads_forward_backward_and_from_a_position() {
    let (brokers, _redis) = brokers().await;
    for (name, b, durable, _) in brokers {
        let o = opts(durable, 100);
        join(&*b, "h", o).await;
        let mut epoch = None;
        for i in 1..=10 {
            epoch = Some(publish(&*b, "h", &i.to_string(), None, o).await.epoch);
        }
        let epoch = epoch.unwrap();
        let at = |offset| {
            Some(Position {
                epoch: epoch.clone(),
                offset,
            })
        };
        let page = history(&*b, "h", None, 100, false, o).await.unwrap();
        assert_eq!(offsets(&page), (1..=10).collect::<Vec<_>>(), "{name}");
        assert_eq!(
            page.position,
            Position {
                epoch: epoch.clone(),
                offset: 10
            }
        );
        let page = history(&*b, "h", None, 3, true, o).await.unwrap();
        assert_eq!(offsets(&page), vec![10, 9, 8], "{name}: latest first");
        let page = history(&*b, "h", at(4), 3, false, o).await.unwrap();
        assert_eq!(offsets(&page), vec![5, 6, 7], "{name}: after since");
        let page = history(&*b, "h", at(4), 2, true, o).await.unwrap();
        assert_eq!(offsets(&page), vec![3, 2], "{name}: before since");
        let page = history(&*b, "h", at(10), 100, false, o).await.unwrap();
        assert!(page.messages.is_empty(), "{name}: nothing missed");
        let page = history(&*b, "h", None, 0, false, o).await.unwrap();
        assert!(
            page.messages.is_empty() && page.position.offset == 10,
            "{name}: position only"
        );
        let data: Vec<String> = history(&*b, "h", at(8), 10, false, o)
            .await
            .unwrap()
            .messages
            .iter()
            .map(|p| shown(&p.data))
            .collect();
        assert_eq!(data, vec!["9", "10"], "{name}: the data comes back");
    }
}

#[tokio::test]
async fn positions_it_cannot_continue_from_are_refused_with_a_reason() {
    let (brokers, _redis) = brokers().await;
    for (name, b, durable, _) in brokers {
        let o = opts(durable, 5);
        join(&*b, "u", o).await;
        let mut epoch = None;
        for i in 1..=12 {
            epoch = Some(publish(&*b, "u", &i.to_string(), None, o).await.epoch);
        }
        let epoch = epoch.unwrap();
        let reason = |r: Result<HistoryPage, BrokerError>| match r {
            Err(BrokerError::Unrecoverable { reason, position }) => {
                assert_eq!(
                    position.offset, 12,
                    "{name}: the current position comes along"
                );
                Some(reason)
            }
            _ => None,
        };
        let foreign = Some(Position {
            epoch: "elsewhere".into(),
            offset: 3,
        });
        assert_eq!(
            reason(history(&*b, "u", foreign, 10, false, o).await),
            Some(Unrecoverable::EpochChanged),
            "{name}"
        );
        let future = Some(Position {
            epoch: epoch.clone(),
            offset: 13,
        });
        assert_eq!(
            reason(history(&*b, "u", future, 10, false, o).await),
            Some(Unrecoverable::InvalidPosition),
            "{name}"
        );
        // Five kept: 8..=12. From 6, message 7 is gone.
        let old = Some(Position {
            epoch: epoch.clone(),
            offset: 6,
        });
        assert_eq!(
            reason(history(&*b, "u", old, 10, false, o).await),
            Some(Unrecoverable::TooOld),
            "{name}"
        );
        let edge = Some(Position {
            epoch: epoch.clone(),
            offset: 7,
        });
        let page = history(&*b, "u", edge, 10, false, o).await.unwrap();
        assert_eq!(
            offsets(&page),
            vec![8, 9, 10, 11, 12],
            "{name}: trimmed to size"
        );
    }
}

#[tokio::test]
async fn a_repeated_key_is_answered_with_the_first_offset_and_not_delivered() {
    let (brokers, _redis) = brokers().await;
    for (name, b, durable, rec) in brokers {
        let o = opts(durable, 100);
        join(&*b, "k", o).await;
        let first = publish(&*b, "k", "1", Some("key-a"), o).await;
        publish(&*b, "k", "2", Some("key-b"), o).await;
        let again = publish(&*b, "k", "1", Some("key-a"), o).await;
        assert!(again.duplicate, "{name}");
        assert_eq!(again.offset, first.offset, "{name}");
        assert_eq!(rec.0.lock().unwrap().len(), 2, "{name}: delivered once");
        // The same key in another room is another message.
        assert!(
            !publish(&*b, "k2", "1", Some("key-a"), o).await.duplicate,
            "{name}"
        );
        // Keys are remembered even by rooms that keep no messages.
        let none = opts(durable, 0);
        if !durable {
            let a = publish(&*b, "k3", "1", Some("x"), none).await;
            assert!(
                publish(&*b, "k3", "1", Some("x"), none).await.duplicate && a.offset == 1,
                "{name}"
            );
        }
    }
}

#[tokio::test]
async fn a_room_that_keeps_nothing_starts_over_when_its_last_member_leaves() {
    let b = Local::memory();
    let o = opts(false, 0);
    join(&b, "e", o).await;
    let first = publish(&b, "e", "1", None, o).await;
    b.unsubscribe("e");
    join(&b, "e", o).await;
    let page = history(&b, "e", None, 0, false, o).await.unwrap();
    assert_ne!(page.position.epoch, first.epoch, "a new epoch");
    assert_eq!(page.position.offset, 0);
    // One that keeps messages keeps its position after its members leave.
    let o = opts(false, 10);
    join(&b, "w", o).await;
    let first = publish(&b, "w", "1", None, o).await;
    b.unsubscribe("w");
    let page = history(&b, "w", None, 0, false, o).await.unwrap();
    assert_eq!(
        page.position,
        Position {
            epoch: first.epoch,
            offset: 1
        }
    );
}

#[tokio::test]
async fn durable_history_and_keys_survive_reopening_the_store() {
    let dir =
        std::env::temp_dir().join(format!("switchboard-reopen-{}", crate::ids::random_token()));
    let o = opts(true, 100);
    let epoch = {
        let b = DurableBroker::start(Store::open(&dir).unwrap());
        let mut epoch = None;
        for i in 1..=3 {
            let key = format!("k{i}");
            epoch = Some(
                b.publish(&"d".into(), publication(&i.to_string(), Some(&key)), o)
                    .wait()
                    .await
                    .unwrap()
                    .epoch,
            );
        }
        epoch.unwrap()
    };
    // The writer thread stops when its queue's sender is dropped; give it a moment.
    let store = loop {
        match Store::open(&dir) {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    let b = DurableBroker::start(store);
    let again = b
        .publish(&"d".into(), publication("2", Some("k2")), o)
        .wait()
        .await
        .unwrap();
    assert!(again.duplicate && again.offset == 2 && again.epoch == epoch);
    let next = b
        .publish(&"d".into(), publication("4", None), o)
        .wait()
        .await
        .unwrap();
    assert_eq!((next.offset, next.epoch.clone()), (4, epoch.clone()));
    let page = b
        .history(
            "d",
            HistoryQuery {
                since: Some(Position { epoch, offset: 1 }),
                limit: 10,
                reverse: false,
                open: true,
            },
            o,
        )
        .wait()
        .await
        .unwrap();
    assert_eq!(offsets(&page), vec![2, 3, 4]);
    let bytes = b
        .publish(&"d".into(), binary(&awkward_bytes(), None), o)
        .wait()
        .await
        .unwrap();
    drop(b);
    let store = loop {
        match Store::open(&dir) {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    let b = DurableBroker::start(store);
    let page = b
        .history(
            "d",
            HistoryQuery {
                since: Some(Position {
                    epoch: bytes.epoch,
                    offset: 4,
                }),
                limit: 10,
                reverse: false,
                open: true,
            },
            o,
        )
        .wait()
        .await
        .unwrap();
    assert_eq!(offsets(&page), vec![5]);
    assert_eq!(
        page.messages[0].data,
        Payload::Binary(awkward_bytes().into())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn memory_windows_saved_at_shutdown_come_back_once() {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-windows-{}",
        crate::ids::random_token()
    ));
    let o = opts(false, 10);
    let first = {
        let b = MemoryBroker::new(Some(dir.clone()));
        let p = b
            .publish(&"w".into(), publication("1", Some("key")), o)
            .wait()
            .await
            .unwrap();
        b.publish(&"w".into(), binary(&awkward_bytes(), None), o)
            .wait()
            .await
            .unwrap();
        b.shutdown();
        p
    };
    let b = MemoryBroker::new(Some(dir.clone()));
    b.restore_from(&dir).unwrap();
    let page = b
        .history(
            "w",
            HistoryQuery {
                since: None,
                limit: 10,
                reverse: false,
                open: true,
            },
            o,
        )
        .wait()
        .await
        .unwrap();
    assert_eq!(
        page.position,
        Position {
            epoch: first.epoch.clone(),
            offset: 2
        }
    );
    assert_eq!(offsets(&page), vec![1, 2]);
    assert_eq!(
        page.messages[1].data,
        Payload::Binary(awkward_bytes().into())
    );
    assert!(
        b.publish(&"w".into(), publication("1", Some("key")), o)
            .wait()
            .await
            .unwrap()
            .duplicate
    );
    // Read once: a second start does not see them again.
    let c = MemoryBroker::new(Some(dir.clone()));
    c.restore_from(&dir).unwrap();
    let page = c
        .history(
            "w",
            HistoryQuery {
                since: None,
                limit: 10,
                reverse: false,
                open: true,
            },
            o,
        )
        .wait()
        .await
        .unwrap();
    assert_ne!(page.position.epoch, first.epoch);
    let _ = std::fs::remove_dir_all(&dir);
}
