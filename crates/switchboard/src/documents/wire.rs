//! The y-websocket wire format, one message per binary WebSocket message:
//!
//! ```text
//! varuint 0 (sync)       varuint 0 (step 1)  varuint8array state vector
//!                        varuint 1 (step 2)  varuint8array update
//!                        varuint 2 (update)  varuint8array update
//! varuint 1 (awareness)  varuint8array awareness update
//! varuint 2 (auth)       (server to client only; ignored when a client sends it)
//! varuint 3 (query awareness)
//! ```
//!
//! The envelope is read here so that the raw payload slices can be kept without copying
//! and trailing garbage is caught; the payloads are decoded with `yrs` itself, and outgoing
//! messages are encoded with `yrs::sync::Message`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use yrs::encoding::read::{Cursor, Read};
use yrs::sync::protocol::{
    MSG_AUTH, MSG_AWARENESS, MSG_QUERY_AWARENESS, MSG_SYNC, MSG_SYNC_STEP_1, MSG_SYNC_STEP_2,
    MSG_SYNC_UPDATE,
};
use yrs::sync::{AwarenessUpdate, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{StateVector, Update};

/// One message from a client.
#[derive(Debug)]
pub enum Incoming {
    SyncStep1(StateVector),
    /// Step 2 and update are handled alike: both carry an update to merge.
    Update(Bytes),
    /// The decoded update (the message itself is relayed as it came).
    Awareness(AwarenessUpdate),
    QueryAwareness,
    Auth,
}

/// Why a message was not understood; becomes a close code.
#[derive(Debug, PartialEq, Eq)]
pub enum BadMessage {
    /// Broken encoding: close 1007.
    Malformed(String),
    /// A message type this server does not know: close 1003.
    Unsupported(u64),
}

/// Reads one y-websocket message. Never panics: yrs checks some invariants with
/// `debug_assert!`, so decoding runs under `catch_unwind` and a panic counts as malformed.
pub fn decode(data: &Bytes) -> Result<Incoming, BadMessage> {
    match catch_unwind(AssertUnwindSafe(|| decode_inner(data))) {
        Ok(result) => result,
        Err(_) => Err(BadMessage::Malformed("undecodable message".into())),
    }
}

fn decode_inner(data: &Bytes) -> Result<Incoming, BadMessage> {
    let malformed = |e: yrs::encoding::read::Error| BadMessage::Malformed(e.to_string());
    let mut cur = Cursor::new(data);
    let kind: u64 = cur.read_var().map_err(malformed)?;
    let message = match kind {
        k if k == u64::from(MSG_SYNC) => {
            let step: u64 = cur.read_var().map_err(malformed)?;
            let len = cur.read_buf().map_err(malformed)?.len();
            let payload = data.slice(cur.next - len..cur.next);
            match step {
                s if s == u64::from(MSG_SYNC_STEP_1) => {
                    Incoming::SyncStep1(StateVector::decode_v1(&payload).map_err(malformed)?)
                }
                s if s == u64::from(MSG_SYNC_STEP_2) || s == u64::from(MSG_SYNC_UPDATE) => {
                    Incoming::Update(payload)
                }
                s => return Err(BadMessage::Malformed(format!("unknown sync step {s}"))),
            }
        }
        k if k == u64::from(MSG_AWARENESS) => {
            let payload = cur.read_buf().map_err(malformed)?;
            let update = AwarenessUpdate::decode_v1(payload).map_err(malformed)?;
            // Other clients JSON.parse every state: refuse what they could not parse.
            for entry in update.clients.values() {
                if serde_json::from_str::<serde::de::IgnoredAny>(&entry.json).is_err() {
                    return Err(BadMessage::Malformed("awareness state is not JSON".into()));
                }
            }
            Incoming::Awareness(update)
        }
        k if k == u64::from(MSG_QUERY_AWARENESS) => Incoming::QueryAwareness,
        k if k == u64::from(MSG_AUTH) => {
            // Only servers send auth messages; skip its content.
            cur.next = data.len();
            Incoming::Auth
        }
        k => return Err(BadMessage::Unsupported(k)),
    };
    if cur.has_content() {
        return Err(BadMessage::Malformed(format!(
            "{} bytes after the end of the message",
            data.len() - cur.next
        )));
    }
    Ok(message)
}

/// Decodes a Yjs v1 update, treating a panic inside yrs as a decoding error.
pub fn decode_update(bytes: &[u8]) -> Result<Update, String> {
    match catch_unwind(AssertUnwindSafe(|| Update::decode_v1(bytes))) {
        Ok(Ok(update)) => Ok(update),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("undecodable update".into()),
    }
}

pub fn sync_step1(sv: StateVector) -> Vec<u8> {
    Message::Sync(SyncMessage::SyncStep1(sv)).encode_v1()
}

pub fn sync_step2(update: Vec<u8>) -> Vec<u8> {
    Message::Sync(SyncMessage::SyncStep2(update)).encode_v1()
}

pub fn sync_update(update: Vec<u8>) -> Vec<u8> {
    Message::Sync(SyncMessage::Update(update)).encode_v1()
}

pub fn awareness(update: AwarenessUpdate) -> Vec<u8> {
    Message::Awareness(update).encode_v1()
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Doc, GetString, ReadTxn, Text, Transact};

    #[test]
    fn round_trips_sync_messages() {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        text.push(&mut doc.transact_mut(), "hi");
        let sv = doc.transact().state_vector();
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());

        let m = decode(&Bytes::from(sync_step1(sv.clone()))).unwrap();
        assert!(matches!(m, Incoming::SyncStep1(s) if s == sv));
        for bytes in [sync_step2(update.clone()), sync_update(update.clone())] {
            let Incoming::Update(u) = decode(&Bytes::from(bytes)).unwrap() else {
                panic!("not an update")
            };
            let other = Doc::new();
            let t = other.get_or_insert_text("t");
            other
                .transact_mut()
                .apply_update(decode_update(&u).unwrap())
                .unwrap();
            assert_eq!(t.get_string(&other.transact()), "hi");
        }
        assert!(matches!(
            decode(&Bytes::from_static(&[3])),
            Ok(Incoming::QueryAwareness)
        ));
    }

    #[test]
    fn refuses_bad_input() {
        let bad: &[&[u8]] = &[
            &[],
            &[0],
            &[0, 1, 5, 1, 2],       // length past the end
            &[0, 7, 0],             // unknown step
            &[3, 0],                // trailing byte
            &[1, 3, 1, 1, 1],       // awareness cut short
            &[0, 0, 2, 0xff, 0xff], // state vector cut short
        ];
        for b in bad {
            assert!(
                matches!(
                    decode(&Bytes::copy_from_slice(b)),
                    Err(BadMessage::Malformed(_))
                ),
                "{b:?}"
            );
        }
        assert_eq!(
            decode(&Bytes::from_static(&[9, 0])).unwrap_err(),
            BadMessage::Unsupported(9)
        );
        // Awareness state that is not JSON: client 1, clock 1, state "{".
        let not_json = [1, 5, 1, 1, 1, 1, b'{'];
        assert!(matches!(
            decode(&Bytes::copy_from_slice(&not_json)),
            Err(BadMessage::Malformed(_))
        ));
        assert!(decode_update(&[0xff, 0xff, 0xff]).is_err());
    }
}
