//! The y-websocket wire: `switchboard::documents::wire::decode` on whole messages and
//! `wire::decode_update` on Yjs updates (the payload of an update message, or bare).
//! Target `yjs_apply` goes one step further and merges decoded updates into a document
//! as the server does (under `catch_unwind`, like the server).
//!
//! Input: byte 0 bit 0 picks a whole message (0) or a bare update (1); the rest is it.
//!
//! Invariants: never panics; never allocates more than the engine's limits (64 MiB in one
//! allocation, 128 MiB live) however large the counts the input claims; an update payload
//! is a slice of the message; a decoded state vector and awareness update encode (with the
//! server's own encoders) to messages that decode to the same value; awareness states are
//! JSON.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;
use switchboard::documents::wire::{self, Incoming};
use yrs::sync::awareness::AwarenessUpdateEntry;
use yrs::sync::AwarenessUpdate;
use yrs::{Array, ClientID, Doc, Map, ReadTxn, StateVector, Text, Transact};

use super::{ensure, Target};

pub const TARGET: Target = Target {
    name: "yjs_wire",
    about: "switchboard::documents::wire: decode and decode_update, with allocation limits",
    run,
    seeds,
    corpus: "yjs_wire",
    dict: &[
        &[0, 0],
        &[0, 1],
        &[0, 2],
        &[1],
        &[3],
        &[0x80, 0x80, 0x80, 0x80, 0x01],
        &[0xff, 0xff, 0xff, 0xff, 0x0f],
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
        b"{}",
        b"null",
        &[0x77],
        &[0x76],
        &[0x75],
        &[0x74],
    ],
    max_len: 8192,
};

pub const APPLY: Target = Target {
    name: "yjs_apply",
    about: "yjs_wire, then yrs's apply_update of what decodes, as the server merges updates",
    run: run_apply,
    ..TARGET
};

fn run(data: &[u8]) -> Result<(), String> {
    check(data, |u| {
        let _ = wire::decode_update(u);
    })
}

fn run_apply(data: &[u8]) -> Result<(), String> {
    check(data, apply)
}

fn apply(update: &[u8]) {
    if let Ok(update) = wire::decode_update(update) {
        let doc = Doc::new();
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            let _ = txn.apply_update(update);
            txn.commit();
            let _ = txn.encode_update_v1();
        }));
    }
}

fn check(data: &[u8], update: fn(&[u8])) -> Result<(), String> {
    let Some((&mode, rest)) = data.split_first() else {
        return Ok(());
    };
    if mode & 1 == 1 {
        update(rest);
        return Ok(());
    }
    match wire::decode(&Bytes::copy_from_slice(rest)) {
        Ok(Incoming::Update(u)) => {
            ensure(u.len() < rest.len(), || {
                "update longer than its message".into()
            })?;
            update(&u);
        }
        Ok(Incoming::SyncStep1(sv)) => {
            let again = wire::decode(&Bytes::from(wire::sync_step1(sv.clone())));
            ensure(
                matches!(&again, Ok(Incoming::SyncStep1(s)) if *s == sv),
                || format!("state vector {sv:?} encodes to a message that decodes to {again:?}"),
            )?;
        }
        Ok(Incoming::Awareness(update)) => {
            for e in update.clients.values() {
                ensure(
                    serde_json::from_str::<serde::de::IgnoredAny>(&e.json).is_ok(),
                    || format!("awareness state {:?} is not JSON", e.json),
                )?;
            }
            let again = wire::decode(&Bytes::from(wire::awareness(update.clone())));
            ensure(
                matches!(&again, Ok(Incoming::Awareness(u)) if *u == update),
                || format!("awareness {update:?} encodes to a message that decodes to {again:?}"),
            )?;
        }
        Ok(Incoming::QueryAwareness | Incoming::Auth) | Err(_) => {}
    }
    Ok(())
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let doc = Doc::with_client_id(7);
    let text = doc.get_or_insert_text("t");
    let map = doc.get_or_insert_map("m");
    let array = doc.get_or_insert_array("a");
    {
        let mut txn = doc.transact_mut();
        text.push(&mut txn, "hello wörld");
        text.remove_range(&mut txn, 2, 3);
        map.insert(&mut txn, "n", 1.5);
        map.insert(&mut txn, "s", "x");
        map.insert(
            &mut txn,
            "nested",
            yrs::Any::from(HashMap::from([(
                "k".to_owned(),
                yrs::Any::from(vec![yrs::Any::Null, yrs::Any::Bool(true)]),
            )])),
        );
        array.push_back(&mut txn, 42);
    }
    let sv = doc.transact().state_vector();
    let full = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let awareness = AwarenessUpdate {
        clients: HashMap::from([
            (
                ClientID::new(7),
                AwarenessUpdateEntry {
                    clock: 3,
                    json: Arc::from(r##"{"user":{"name":"ada","color":"#f00"},"cursor":null}"##),
                },
            ),
            (
                ClientID::new(9),
                AwarenessUpdateEntry {
                    clock: 1,
                    json: Arc::from("null"),
                },
            ),
        ]),
    };
    let msg = |mode: u8, bytes: Vec<u8>| [vec![mode], bytes].concat();
    vec![
        (
            "sync-step1-empty",
            msg(0, wire::sync_step1(StateVector::default())),
        ),
        ("sync-step1", msg(0, wire::sync_step1(sv))),
        ("sync-step2", msg(0, wire::sync_step2(full.clone()))),
        ("sync-update", msg(0, wire::sync_update(full.clone()))),
        ("awareness", msg(0, wire::awareness(awareness))),
        ("query-awareness", msg(0, vec![3])),
        ("auth", msg(0, vec![2, 0, 2, b'o', b'k'])),
        ("update", msg(1, full)),
    ]
}
