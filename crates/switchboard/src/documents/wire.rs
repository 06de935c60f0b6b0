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
use yrs::encoding::varint::VarInt;
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
                    Incoming::SyncStep1(decode_state_vector(&payload)?)
                }
                s if s == u64::from(MSG_SYNC_STEP_2) || s == u64::from(MSG_SYNC_UPDATE) => {
                    Incoming::Update(payload)
                }
                s => return Err(BadMessage::Malformed(format!("unknown sync step {s}"))),
            }
        }
        k if k == u64::from(MSG_AWARENESS) => {
            let payload = cur.read_buf().map_err(malformed)?;
            let update = decode_awareness(payload)?;
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

/// Decodes a Yjs v1 update, treating a panic inside yrs as a decoding error. The update is
/// first walked by [`check_update`], so that no count in it makes yrs reserve more than the
/// bytes present can hold, and no value nests deep enough to exhaust the stack.
pub fn decode_update(bytes: &[u8]) -> Result<Update, String> {
    // The check runs under `catch_unwind` too: it reads varints with yrs, which overflows a
    // shift (a panic where overflow checks are on) on an over-long one.
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        check_update(bytes)?;
        Update::decode_v1(bytes).map_err(|e| e.to_string())
    }));
    match decoded {
        Ok(result) => result,
        Err(_) => Err("undecodable update".into()),
    }
}

// yrs's decoders reserve room for as many entries as a length prefix claims before reading
// any of them: four bytes claiming 2^28 entries made it allocate (and touch) half a
// gigabyte. So every count is checked against the bytes left before yrs sees it; each
// entry takes at least the bytes named below, so a reservation never outgrows its input.

/// Least bytes of one state-vector entry: a client id and a clock.
const SV_ENTRY_MIN: usize = 2;
/// Least bytes of one awareness entry: a client id, a clock and a (possibly empty) state.
const AWARENESS_ENTRY_MIN: usize = 3;
/// Deepest nesting of `Any` values (arrays and maps in maps) accepted in an update. yrs
/// decodes (and drops) them recursively; what serde_json accepts, by default, for JSON.
pub const MAX_ANY_DEPTH: usize = 128;

fn bad(e: yrs::encoding::read::Error) -> String {
    e.to_string()
}

/// Reads a count of entries that take at least `min` bytes each, and refuses one that the
/// bytes left cannot hold. `T` is the integer type yrs reads that count as (they wrap
/// differently on over-long encodings).
fn read_count<T: VarInt + TryInto<u64>>(
    cur: &mut Cursor<'_>,
    min: usize,
    what: &str,
) -> Result<usize, String> {
    let n: T = cur.read_var().map_err(bad)?;
    let n: u64 = n.try_into().unwrap_or(u64::MAX);
    let left = cur.buf.len() - cur.next;
    if n > (left / min) as u64 {
        return Err(format!("{what} claims {n} entries in {left} bytes"));
    }
    Ok(n as usize)
}

/// A sync step 1 state vector, its entry count checked first.
pub fn decode_state_vector(payload: &[u8]) -> Result<StateVector, BadMessage> {
    read_count::<u32>(&mut Cursor::new(payload), SV_ENTRY_MIN, "state vector")
        .map_err(BadMessage::Malformed)?;
    StateVector::decode_v1(payload).map_err(|e| BadMessage::Malformed(e.to_string()))
}

/// An awareness update, its entry count checked first.
pub fn decode_awareness(payload: &[u8]) -> Result<AwarenessUpdate, BadMessage> {
    read_count::<usize>(
        &mut Cursor::new(payload),
        AWARENESS_ENTRY_MIN,
        "awareness update",
    )
    .map_err(BadMessage::Malformed)?;
    AwarenessUpdate::decode_v1(payload).map_err(|e| BadMessage::Malformed(e.to_string()))
}

/// Walks a Yjs v1 update the way `Update::decode_v1` reads it (yrs 0.28, without the `weak`
/// feature), allocating nothing, and refuses it if a count claims more entries than the
/// bytes left can hold or `Any` values nest deeper than [`MAX_ANY_DEPTH`]. Anything else
/// that is wrong with it is left for yrs to find: this never refuses what yrs would accept
/// (but for the nesting limit).
pub fn check_update(bytes: &[u8]) -> Result<(), String> {
    let cur = &mut Cursor::new(bytes);
    // Each client's blocks: a block count, the client id and the first clock.
    let clients = read_count::<u32>(cur, 3, "update")?;
    for _ in 0..clients {
        let before = cur.next;
        let blocks: u32 = cur.read_var().map_err(bad)?;
        let _client: u64 = cur.read_var().map_err(bad)?;
        let _clock: u32 = cur.read_var().map_err(bad)?;
        // A block is at least an info byte and one more (a length, a parent, content).
        let left = cur.buf.len() - cur.next;
        if blocks as usize > left / 2 {
            return Err(format!(
                "update claims {blocks} blocks in {left} bytes (at byte {before})"
            ));
        }
        for _ in 0..blocks {
            check_block(cur)?;
        }
    }
    // The delete set: per client, an id and its ranges (a clock and a length each).
    let clients = read_count::<u32>(cur, 2, "delete set")?;
    for _ in 0..clients {
        let _client: u64 = cur.read_var().map_err(bad)?;
        let ranges = read_count::<u32>(cur, 2, "delete set ranges")?;
        for _ in 0..ranges {
            let _clock: u32 = cur.read_var().map_err(bad)?;
            let _len: u32 = cur.read_var().map_err(bad)?;
        }
    }
    Ok(())
}

fn skip_id(cur: &mut Cursor<'_>) -> Result<(), String> {
    let _client: u64 = cur.read_var().map_err(bad)?;
    let _clock: u32 = cur.read_var().map_err(bad)?;
    Ok(())
}

fn skip_buf(cur: &mut Cursor<'_>) -> Result<(), String> {
    cur.read_buf().map(|_| ()).map_err(bad)
}

fn check_block(cur: &mut Cursor<'_>) -> Result<(), String> {
    const GC: u8 = 0;
    const SKIP: u8 = 10;
    const HAS_ORIGIN: u8 = 0b1000_0000;
    const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
    const HAS_PARENT_SUB: u8 = 0b0010_0000;
    let info = cur.read_u8().map_err(bad)?;
    if info == GC || info == SKIP {
        let _len: u32 = cur.read_var().map_err(bad)?;
        return Ok(());
    }
    if info & HAS_ORIGIN != 0 {
        skip_id(cur)?;
    }
    if info & HAS_RIGHT_ORIGIN != 0 {
        skip_id(cur)?;
    }
    if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
        let named: u32 = cur.read_var().map_err(bad)?;
        if named == 1 {
            skip_buf(cur)?;
        } else {
            skip_id(cur)?;
        }
        if info & HAS_PARENT_SUB != 0 {
            skip_buf(cur)?;
        }
    }
    match info & 0b1111 {
        1 => {
            let _len: u32 = cur.read_var().map_err(bad)?; // deleted
        }
        2 => {
            // JSON: yrs reads one string more than the count says.
            let n = read_count::<u32>(cur, 1, "JSON content")?;
            for _ in 0..=n {
                skip_buf(cur)?;
            }
        }
        3..=5 => skip_buf(cur)?, // binary, string, embed
        6 => {
            skip_buf(cur)?; // format: key and value
            skip_buf(cur)?;
        }
        7 => {
            // A shared type: its type ref, and an XML element's name.
            let type_ref = cur.read_u8().map_err(bad)?;
            match type_ref {
                3 => skip_buf(cur)?,
                0..=2 | 4..=6 | 9 | 15 => {}
                t => return Err(format!("unknown type ref {t}")),
            }
        }
        8 => {
            let n = read_count::<u32>(cur, 1, "content")?;
            for _ in 0..n {
                check_any(cur, 1)?;
            }
        }
        9 => {
            skip_buf(cur)?; // a subdocument: its guid and options
            check_any(cur, 1)?;
        }
        r => return Err(format!("unknown content type {r}")),
    }
    Ok(())
}

fn check_any(cur: &mut Cursor<'_>, depth: usize) -> Result<(), String> {
    if depth > MAX_ANY_DEPTH {
        return Err(format!("values nested deeper than {MAX_ANY_DEPTH}"));
    }
    match cur.read_u8().map_err(bad)? {
        127 | 126 | 121 | 120 => {} // undefined, null, false, true
        125 => {
            let _: i64 = cur.read_var().map_err(bad)?;
        }
        124 => {
            cur.read_exact(4).map_err(bad)?;
        }
        123 | 122 => {
            cur.read_exact(8).map_err(bad)?;
        }
        119 | 116 => skip_buf(cur)?, // string, buffer
        118 => {
            // A map: a key and a value per entry.
            let n = read_count::<usize>(cur, 2, "map")?;
            for _ in 0..n {
                skip_buf(cur)?;
                check_any(cur, depth + 1)?;
            }
        }
        117 => {
            let n = read_count::<usize>(cur, 1, "array")?;
            for _ in 0..n {
                check_any(cur, depth + 1)?;
            }
        }
        t => return Err(format!("unknown value tag {t}")),
    }
    Ok(())
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

#[cfg(test)]
mod bounds {
    use super::*;
    use std::collections::HashMap;
    use yrs::types::ToJson;
    use yrs::{Any, Array, Doc, Map, ReadTxn, Text, Transact, Xml, XmlFragment};

    /// Peak resident memory (kB) while `f` runs, above what was resident before.
    fn peak_growth_kb(f: impl FnOnce()) -> usize {
        let read = |key: &str| -> usize {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with(key)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        // Resets VmHWM to the current RSS (Linux 4.0+).
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let before = read("VmRSS:");
        f();
        read("VmHWM:").saturating_sub(before)
    }

    /// A few bytes claiming 2^28 entries: yrs alone reserved (and touched) ~512 MiB for the
    /// state vector, the awareness update and the update's client table.
    #[test]
    fn counts_that_the_bytes_cannot_hold_are_refused_without_allocating() {
        let huge = [0xff, 0xff, 0xff, 0x7f];
        let messages: Vec<Vec<u8>> = vec![
            [&[0, 0, 4][..], &huge].concat(), // sync step 1
            [&[1, 4][..], &huge].concat(),    // awareness
            [&[0, 2, 4][..], &huge].concat(), // update: clients
        ];
        for m in &messages {
            let grew = peak_growth_kb(|| {
                let got = decode(&Bytes::copy_from_slice(m));
                if let Ok(Incoming::Update(u)) = &got {
                    assert!(decode_update(u).is_err(), "{m:?}");
                } else {
                    assert!(matches!(got, Err(BadMessage::Malformed(_))), "{m:?}");
                }
            });
            assert!(grew < 8 * 1024, "{m:?}: peak memory grew by {grew} kB");
        }
        let updates: Vec<Vec<u8>> = vec![
            [&[1][..], &huge, &[1, 0]].concat(), // blocks of one client
            [&[1, 1, 1, 0, 8, 1, 1, b't'][..], &huge].concat(), // Any content
            [&[1, 1, 1, 0, 8, 1, 1, b't', 1, 118][..], &huge].concat(), // a map
            [&[1, 1, 1, 0, 8, 1, 1, b't', 1, 117][..], &huge].concat(), // an array
            [&[1, 1, 1, 0, 2, 1, 1, b't'][..], &huge].concat(), // JSON content
            [&[0, 1, 1][..], &huge].concat(),    // delete set ranges
            [&[0][..], &huge].concat(),          // delete set clients
        ];
        for u in &updates {
            assert!(check_update(u).is_err(), "{u:?}");
            assert!(decode_update(u).is_err(), "{u:?}");
        }
    }

    /// Nested values: yrs decodes them recursively, and 5,000 levels (10 KB) overflowed a
    /// 2 MiB stack, which aborts the process. Up to MAX_ANY_DEPTH is fine.
    #[test]
    fn deep_nesting_is_refused_before_it_reaches_yrs() {
        let nested = |depth: usize| {
            let mut u = vec![1u8, 1, 1, 0, 8, 1, 1, b't', 1];
            for _ in 1..depth {
                u.extend_from_slice(&[117, 1]);
            }
            u.push(126);
            u.extend_from_slice(&[0]);
            u
        };
        let ok = nested(MAX_ANY_DEPTH);
        let deep = nested(MAX_ANY_DEPTH + 1);
        let far = nested(5_000);
        let result = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let update = decode_update(&ok).expect("the deepest accepted nesting");
                let doc = Doc::new();
                doc.transact_mut().apply_update(update).unwrap();
                let _ = doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                (decode_update(&deep).is_err(), decode_update(&far).is_err())
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert_eq!(result, (true, true));
    }

    /// Updates of every kind of content, and the whole documents they make.
    fn samples() -> Vec<Vec<u8>> {
        let doc = Doc::with_client_id(7);
        let mut out = Vec::new();
        let text = doc.get_or_insert_text("text");
        let map = doc.get_or_insert_map("map");
        let array = doc.get_or_insert_array("array");
        let xml = doc.get_or_insert_xml_fragment("xml");
        let mut nested = Any::from(HashMap::from([("leaf".to_owned(), Any::from(1.5))]));
        for i in 0..40 {
            nested = if i % 2 == 0 {
                Any::from(vec![nested, Any::Null, Any::from(true)])
            } else {
                Any::from(HashMap::from([("k".to_owned(), nested)]))
            };
        }
        type Step<'a> = Box<dyn Fn(&mut yrs::TransactionMut) + 'a>;
        let steps: Vec<Step> = vec![
            Box::new(|t| text.insert(t, 0, "hello world")),
            Box::new(|t| {
                let bold = HashMap::from([("bold".into(), Any::from(true))]);
                text.format(t, 1, 3, bold);
            }),
            Box::new(|t| {
                text.insert_embed(t, 2, Any::from(vec![Any::from("img")]));
            }),
            Box::new(|t| text.remove_range(t, 4, 3)),
            Box::new(|t| text.push(t, " wörld")),
            Box::new(|t| {
                map.insert(t, "n", 42i64);
                map.insert(t, "big", i64::MAX);
                map.insert(t, "f", 0.25f64);
                map.insert(t, "s", "str");
                map.insert(t, "bin", Any::from(vec![1u8, 2, 3]));
                map.insert(t, "nested", nested.clone());
                map.insert(t, "undef", Any::Undefined);
            }),
            Box::new(|t| {
                array.insert_range(t, 0, [1i64, 2, 3]);
                array.insert(t, 1, yrs::MapPrelim::default());
                array.insert(t, 0, yrs::ArrayPrelim::default());
                array.insert(t, 0, yrs::TextPrelim::new("inner"));
                array.remove_range(t, 2, 2);
            }),
            Box::new(|t| {
                let el = xml.insert(t, 0, yrs::XmlElementPrelim::empty("p"));
                el.insert_attribute(t, "class", "x");
                el.insert(t, 0, yrs::XmlTextPrelim::new("para"));
            }),
            Box::new(|t| {
                map.insert(t, "sub", Doc::new());
                map.remove(t, "n");
            }),
        ];
        for step in &steps {
            let mut txn = doc.transact_mut();
            step(&mut txn);
            out.push(txn.encode_update_v1());
        }
        out.push(
            doc.transact()
                .encode_state_as_update_v1(&StateVector::default()),
        );
        let _ = map.to_json(&doc.transact());
        out
    }

    #[test]
    fn every_kind_of_content_passes() {
        for (i, s) in samples().iter().enumerate() {
            check_update(s).unwrap_or_else(|e| panic!("sample {i}: {e}"));
            decode_update(s).unwrap_or_else(|e| panic!("sample {i}: {e}"));
        }
    }

    /// Mangled updates: the check never refuses one that yrs reads.
    #[test]
    fn the_check_never_refuses_what_yrs_reads() {
        let samples = samples();
        let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut read, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut b = samples[(next() % samples.len() as u64) as usize].clone();
            for _ in 0..1 + next() % 3 {
                let i = (next() % b.len() as u64) as usize;
                match next() % 3 {
                    0 => b[i] ^= 1 << (next() % 8),
                    1 => b[i] = next() as u8,
                    _ => b.truncate(i.max(1)),
                }
            }
            let yrs_reads = catch_unwind(|| Update::decode_v1(&b).is_ok()).unwrap_or(false);
            let checked = check_update(&b);
            if yrs_reads {
                read += 1;
                assert!(checked.is_ok(), "{b:?}: {checked:?}");
            } else if checked.is_err() {
                refused += 1;
            }
        }
        assert!(
            read > 100 && refused > 100,
            "{read} read, {refused} refused"
        );
    }
}
