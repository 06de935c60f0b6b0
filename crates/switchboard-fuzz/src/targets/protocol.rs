//! Protocol v1 envelopes: `switchboard::protocol::{parse, peek_id, room_name,
//! presence_object, optional_bool, check_relayed}` on arbitrary bytes.
//!
//! Input: byte 0 picks `check_relayed`'s depth limit; the rest is the frame text, and also
//! a binary frame for `parse_binary`.
//!
//! Invariants: never panics; what `parse` accepts is JSON, and every raw field it keeps
//! is JSON on its own; `peek_id` reads the same id `parse` does (so a rate-limited frame is
//! answered with the right id); an accepted room name is 1-128 of `A-Z a-z 0-9 _ - . :`;
//! an accepted presence is a JSON object; an accepted bool is `true` or `false`; and JSON
//! that `check_relayed` accepts for `data` or `presence` parses with serde_json into a
//! `Value` (no lone surrogate, no non-finite number, not too deep) that serialises and
//! parses back to itself. `parse_binary` answers every fault with `bad_request`; what it
//! accepts is a `publish` without `data` whose header is exactly the bytes its length says,
//! parsed as `parse` parses them, and whose payload is the rest of the frame.

use serde_json::value::RawValue;
use serde_json::Value;
use switchboard::protocol::{self, ErrorCode, Field, MAX_ROOM_LEN};

use super::{ensure, Target};

pub const TARGET: Target = Target {
    name: "protocol",
    about: "switchboard::protocol: parse, peek_id, room_name, presence_object, optional_bool, check_relayed",
    run,
    seeds,
    corpus: "protocol",
    dict: &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b":",
        b",",
        b"\"type\":",
        b"\"id\":",
        b"\"room\":",
        b"\"data\":",
        b"\"presence\":",
        b"\"echo\":",
        b"\"join\"",
        b"\"publish\"",
        b"\"presence\"",
        b"\"leave\"",
        b"\"members\"",
        b"\"history\"",
        b"\"auth\"",
        b"\"ping\"",
        b"true",
        b"false",
        b"null",
        b"\\ud800",
        b"\\udc00",
        b"\\ud83d\\ude00",
        b"\\u0000",
        b"1e308",
        b"1e309",
        b"-1e400",
        b"0.0000001",
        b"9223372036854775807",
        b"9223372036854775808",
        b"-9223372036854775808",
        b"\\\"",
        b"\\\\",
    ],
    max_len: 8192,
};

/// `check_relayed`'s depth limits: the server's default (32) and ones near serde_json's
/// own recursion limit (128), past which `Value` cannot be parsed.
const DEPTHS: [usize; 8] = [32, 0, 1, 2, 8, 64, 100, 127];

fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

fn run(data: &[u8]) -> Result<(), String> {
    let Some((&d, text)) = data.split_first() else {
        return Ok(());
    };
    let max_depth = DEPTHS[usize::from(d) % DEPTHS.len()];
    binary(text)?;
    let peeked = protocol::peek_id(text);
    let (env, id) = match protocol::parse(text) {
        Err((id, failure)) => {
            ensure(!failure.message.is_empty(), || {
                "failure without a message".into()
            })?;
            if id.is_some() {
                ensure(peeked == id, || {
                    format!("parse failed with id {id:?}, peek_id read {peeked:?}")
                })?;
            }
            // Anything short of bad JSON was JSON. Known exception: serde reports a
            // duplicate field as soon as it reads it, so `{"id":1,"id":2` (not JSON)
            // is answered `bad_request` ("duplicate field"), not `bad_json`.
            if failure.code != ErrorCode::BadJson && !failure.message.contains("duplicate field") {
                ensure(
                    serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok(),
                    || {
                        format!(
                            "{:?} for text that is not JSON: {}",
                            failure.code, failure.message
                        )
                    },
                )?;
            }
            return Ok(());
        }
        Ok((env, id, _kind)) => (env, id),
    };
    ensure(
        serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok(),
        || "parse accepted text that is not JSON".into(),
    )?;
    ensure(peeked == id, || {
        format!("parse read id {id:?}, peek_id read {peeked:?}")
    })?;
    let fields = [
        env.kind,
        env.id,
        env.room,
        env.data,
        env.presence,
        env.echo,
        env.since,
        env.limit,
        env.token,
    ];
    for f in fields.iter().filter_map(|f| f.0) {
        ensure(is_json(f.get()), || {
            format!("raw field {:?} is not JSON", f.get())
        })?;
    }
    if let Ok(name) = protocol::room_name(env.room) {
        ensure(
            !name.is_empty()
                && name.len() <= MAX_ROOM_LEN
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')),
            || format!("accepted room name {name:?}"),
        )?;
    }
    for required in [false, true] {
        match protocol::presence_object(env.presence, required) {
            Ok(Some(raw)) => ensure(
                matches!(
                    serde_json::from_str::<Value>(raw.get()),
                    Ok(Value::Object(_))
                ) || serde_json::from_str::<Value>(raw.get()).is_err(),
                || format!("accepted presence {:?} is not an object", raw.get()),
            )?,
            Ok(None) => ensure(!required && env.presence.0.is_none(), || {
                "presence_object returned None".into()
            })?,
            Err(_) => {}
        }
    }
    for f in [env.echo, env.data] {
        if let Ok(Some(b)) = protocol::optional_bool(f, "echo") {
            let raw = f.0.map(RawValue::get).unwrap_or("");
            ensure(raw.trim() == if b { "true" } else { "false" }, || {
                format!("optional_bool read {b} from {raw:?}")
            })?;
        }
    }
    for (what, f) in [("data", env.data), ("presence", env.presence)] {
        check_relayed(what, f, max_depth)?;
    }
    Ok(())
}

/// `parse_binary` on `frame`: the layout of docs/protocol.md, "Binary messages".
fn binary(frame: &[u8]) -> Result<(), String> {
    match protocol::parse_binary(frame) {
        Err((_, failure)) => ensure(failure.code == ErrorCode::BadRequest, || {
            format!("a bad binary frame answered {:?}", failure.code)
        }),
        Ok(((env, id, kind), payload)) => {
            let len = frame
                .first_chunk::<4>()
                .map(|b| u32::from_be_bytes(*b) as usize);
            let header = len.and_then(|n| frame.get(4..4 + n));
            let Some(header) = header else {
                return Err("accepted a frame shorter than its header length".into());
            };
            ensure(payload == &frame[4 + header.len()..], || {
                "the payload is not the rest of the frame".into()
            })?;
            ensure(
                kind == protocol::Kind::Publish && env.data.0.is_none(),
                || format!("accepted {kind:?} (data: {})", env.data.0.is_some()),
            )?;
            let parsed = protocol::parse(header)
                .map_err(|(_, f)| format!("accepted a header parse refuses: {}", f.message))?;
            ensure(parsed.1 == id, || {
                "the header's id differs from parse's".into()
            })
        }
    }
}

fn check_relayed(what: &str, field: Field<'_>, max_depth: usize) -> Result<(), String> {
    let Some(raw) = field.0 else {
        return Ok(());
    };
    if protocol::check_relayed(raw, what, max_depth).is_err() {
        return Ok(());
    }
    let value: Value = serde_json::from_str(raw.get()).map_err(|e| {
        format!("check_relayed (depth {max_depth}) accepted {what} that serde_json cannot read as a Value: {e}")
    })?;
    let text =
        serde_json::to_string(&value).map_err(|e| format!("{what} does not serialise: {e}"))?;
    let again: Value = serde_json::from_str(&text)
        .map_err(|e| format!("re-serialised {what} does not parse: {e}"))?;
    ensure(same(&again, &value), || {
        format!("{what} changes when re-serialised: {text}")
    })
}

/// Equal, with floats compared to within a few ULPs: serde_json (without its
/// `float_roundtrip` feature) may read a long decimal one ULP off, which is harmless here
/// (the server relays the raw text, never a re-serialised `Value`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let frames: &[(&str, &str)] = &[
        (
            "join",
            r#"{"type":"join","id":1,"room":"chat:lobby","presence":{"name":"ada"}}"#,
        ),
        (
            "publish",
            r#"{"type":"publish","id":2,"room":"chat:lobby","data":{"text":"hi","n":[1,2.5,-3e2,true,null]},"echo":false}"#,
        ),
        (
            "presence",
            r#"{"type":"presence","id":3,"room":"a.b_c-d","presence":{"cursor":{"x":1,"y":2}}}"#,
        ),
        (
            "history",
            r#"{"type":"history","id":4,"room":"r","since":10,"limit":50}"#,
        ),
        ("auth", r#"{"type":"auth","id":5,"token":"eyJhbGciOi.x.y"}"#),
        (
            "leave-members-ping",
            r#"{"type":"members","id":-9223372036854775808,"room":"caf\u0065"}"#,
        ),
        ("unknown-type", r#"{"id":7,"type":"dance\ud83d\ude00"}"#),
        ("array", "[1,2]"),
        (
            "surrogate-data",
            r#"{"type":"publish","id":8,"room":"r","data":"\ud800"}"#,
        ),
        (
            "infinite-data",
            r#"{"type":"publish","id":9,"room":"r","data":[1e400]}"#,
        ),
    ];
    let mut out: Vec<(&'static str, Vec<u8>)> = frames
        .iter()
        .map(|(name, text)| (*name, [&[0u8][..], text.as_bytes()].concat()))
        .collect();
    let deep = format!(
        r#"{{"type":"publish","id":10,"room":"r","data":{}1{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    out.push(("deep-data", [&[0u8][..], deep.as_bytes()].concat()));
    for (name, header, payload) in [
        (
            "binary-publish",
            &br#"{"type":"publish","id":11,"room":"r","key":"k"}"#[..],
            &b"\x00\xff bytes"[..],
        ),
        ("binary-join", br#"{"type":"join","id":12,"room":"r"}"#, b""),
    ] {
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
        frame.extend_from_slice(header);
        frame.extend_from_slice(payload);
        out.push((name, frame));
    }
    out
}
