//! `switchboard_ws::Decoder`: both roles, small and large `max_message_size`, the same
//! bytes fed whole, byte by byte and in random chunks.
//!
//! Input: byte 0 picks the role (bit 0), permessage-deflate negotiated (bit 1: RSV1 marks
//! compressed messages, inflated within the limit) and the size limit (bits
//! 2-5); bytes 1-2 seed the chunk sizes; the rest is the byte stream.
//!
//! Invariants: never panics; every chunking yields the same messages and the same error;
//! no text or binary message exceeds `max_message_size`, no control frame 125 bytes; text
//! is valid UTF-8; close reasons are UTF-8 with an allowed code; and the messages decoded,
//! encoded again with `Frame` (masked toward a server), decode to themselves.

use bytes::BytesMut;
use switchboard_ws::{CloseCode, Decoder, Frame, Message, OpCode, ProtocolError, Role};

use super::{ensure, Target};

pub const TARGET: Target = Target {
    name: "ws_decoder",
    about: "switchboard_ws::Decoder, both roles, small and large limits, random chunking",
    run,
    seeds,
    corpus: "ws_decoder",
    dict: &[
        &[0x81],
        &[0x01],
        &[0x80],
        &[0x82],
        &[0x88],
        &[0x89],
        &[0x8a],
        &[0xc1],
        &[0xfe, 0x00, 0x7e],
        &[0xff, 0, 0, 0, 0, 0, 1, 0, 0],
        &[0x7e],
        &[0x7f],
        &[0xed, 0xa0, 0x80],
        &[0xf4, 0x90, 0x80, 0x80],
        &[0xe2, 0x82, 0xac],
        &[0x03, 0xe8],
    ],
    max_len: 4096,
};

const LIMITS: [usize; 16] = [
    0,
    1,
    2,
    7,
    125,
    126,
    1000,
    4096,
    65_535,
    65_536,
    1 << 20,
    16 << 20,
    64 << 20,
    3,
    16,
    200,
];

type Outcome = (Vec<Message>, Option<ProtocolError>);

fn decode(
    role: Role,
    max: usize,
    rsv: u8,
    chunks: impl Iterator<Item = usize>,
    s: &[u8],
) -> Outcome {
    let mut dec = Decoder::new(role, max);
    if rsv != 0 {
        let offer = switchboard_ws::handshake::ExtensionOffer {
            name: "permessage-deflate".into(),
            params: Vec::new(),
        };
        let policy = switchboard_ws::deflate::Policy::default();
        if let Some(params) = switchboard_ws::deflate::negotiate(&[offer], policy) {
            dec.enable_deflate(&params);
        }
    }
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut chunks = chunks;
    while at < s.len() {
        let n = chunks.next().unwrap_or(s.len()).clamp(1, s.len() - at);
        buf.extend_from_slice(&s[at..at + n]);
        at += n;
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn check_message(m: &Message, max: usize) -> Result<(), String> {
    match m {
        Message::Text(t) => {
            ensure(t.len() <= max, || {
                format!("text of {} bytes over the limit {max}", t.len())
            })?;
            ensure(std::str::from_utf8(t).is_ok(), || {
                "text is not UTF-8".into()
            })
        }
        Message::Binary(b) => ensure(b.len() <= max, || {
            format!("binary of {} bytes over the limit {max}", b.len())
        }),
        Message::Ping(p) | Message::Pong(p) => ensure(p.len() <= 125, || {
            format!("control payload of {} bytes", p.len())
        }),
        Message::Close(Some(c)) => {
            ensure(c.code.is_allowed_on_wire(), || {
                format!("close code {}", c.code)
            })?;
            ensure(c.reason.len() <= 123, || {
                "close reason over 123 bytes".into()
            })
        }
        Message::Close(None) => Ok(()),
    }
}

/// The frame a peer in `role`'s opposite sends for `m`.
fn encode(m: &Message, toward: Role, mask: [u8; 4]) -> Frame {
    let (op, payload): (OpCode, Vec<u8>) = match m {
        Message::Text(t) => (OpCode::Text, t.to_vec()),
        Message::Binary(b) => (OpCode::Binary, b.to_vec()),
        Message::Ping(p) => (OpCode::Ping, p.to_vec()),
        Message::Pong(p) => (OpCode::Pong, p.to_vec()),
        Message::Close(c) => {
            let mut p = Vec::new();
            if let Some(c) = c {
                p.extend_from_slice(&c.code.0.to_be_bytes());
                p.extend_from_slice(c.reason.as_bytes());
            }
            (OpCode::Close, p)
        }
    };
    match toward {
        Role::Server => Frame::masked(op, &payload, mask),
        Role::Client => Frame::unmasked(op, &payload),
    }
}

fn run(data: &[u8]) -> Result<(), String> {
    let [flags, s0, s1, stream @ ..] = data else {
        return Ok(());
    };
    let role = if flags & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let rsv = if flags & 2 == 0 { 0 } else { 0b100 };
    let max = LIMITS[usize::from(flags >> 2) % LIMITS.len()];
    let whole = decode(role, max, rsv, std::iter::empty(), stream);
    let bytewise = decode(role, max, rsv, std::iter::repeat(1), stream);
    let mut seed = u64::from(u16::from_le_bytes([*s0, *s1])) | 1 << 32;
    let random = decode(
        role,
        max,
        rsv,
        std::iter::from_fn(|| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Mostly small chunks, now and then a large one.
            Some(if seed % 8 == 0 {
                (seed >> 8) as usize % 512
            } else {
                (seed >> 8) as usize % 9 + 1
            })
        }),
        stream,
    );
    let describe = |o: &Outcome| format!("{} messages, error {:?}", o.0.len(), o.1);
    ensure(whole == bytewise, || {
        format!(
            "whole: {}; byte by byte: {}",
            describe(&whole),
            describe(&bytewise)
        )
    })?;
    ensure(whole == random, || {
        format!(
            "whole: {}; random chunks: {}",
            describe(&whole),
            describe(&random)
        )
    })?;
    for m in &whole.0 {
        check_message(m, max)?;
    }
    if let Some(e) = &whole.1 {
        ensure(
            e.code != CloseCode::NORMAL && e.code.is_allowed_on_wire(),
            || format!("error with close code {}", e.code),
        )?;
    }
    // What decoded encodes back to itself.
    let mut again = Vec::new();
    for m in &whole.0 {
        again.extend_from_slice(encode(m, role, [s0 ^ 0x5a, *s1, 0x13, 0x37]).as_bytes());
    }
    let round = decode(role, max, rsv, std::iter::empty(), &again);
    ensure(round.1.is_none() && round.0 == whole.0, || {
        format!("re-encoded messages decode to {}", describe(&round))
    })
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let frames = |fs: &[bytes::Bytes]| {
        fs.iter()
            .flat_map(|f| f.iter().copied())
            .collect::<Vec<u8>>()
    };
    let with = |flags: u8, stream: Vec<u8>| {
        let mut v = vec![flags, 0x42, 0x17];
        v.extend(stream);
        v
    };
    let frag = switchboard_ws::encode_fragment;
    // Flags: bit 0 client role, bits 2-5 index LIMITS (6 = 1000 bytes, 10 = 1 MiB).
    let small = 6 << 2;
    let large = 10 << 2;
    let mut out = vec![
        (
            "server-text",
            with(
                small,
                Frame::masked(OpCode::Text, "héllo €".as_bytes(), mask)
                    .into_bytes()
                    .to_vec(),
            ),
        ),
        (
            "client-text",
            with(small | 1, Frame::text("Hello").into_bytes().to_vec()),
        ),
        (
            "server-binary-126",
            with(
                large,
                Frame::masked(OpCode::Binary, &[7; 300], mask)
                    .into_bytes()
                    .to_vec(),
            ),
        ),
        (
            "client-binary-65536",
            with(11 << 2 | 1, frame_header_only(0x82, 65_536)),
        ),
        (
            "server-fragmented-text-with-ping",
            with(
                small,
                frames(&[
                    frag(false, OpCode::Text, "frag".as_bytes(), Some(mask)),
                    Frame::masked(OpCode::Ping, b"p", mask).into_bytes(),
                    frag(false, OpCode::Continuation, "m€".as_bytes(), Some(mask)),
                    frag(true, OpCode::Continuation, "nt".as_bytes(), Some(mask)),
                ]),
            ),
        ),
        (
            "client-close-pong",
            with(
                small | 1,
                frames(&[
                    Frame::pong(b"pong").into_bytes(),
                    Frame::close(CloseCode::NORMAL, "bye").into_bytes(),
                ]),
            ),
        ),
        (
            "server-masked-close",
            with(
                small,
                Frame::masked_close(CloseCode::GOING_AWAY, "gone", mask)
                    .into_bytes()
                    .to_vec(),
            ),
        ),
        (
            "server-rsv1-binary",
            with(small | 2, {
                let mut f = Frame::masked(OpCode::Binary, b"deflated?", mask)
                    .into_bytes()
                    .to_vec();
                f[0] |= 0x40;
                f
            }),
        ),
    ];
    // RFC 7692 §7.2.3.1: "Hello" compressed, as one frame and as two fragments.
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let deflated = switchboard_ws::encode_frame(true, 0b100, OpCode::Text, &hello, Some(mask));
    out.push(("server-deflate", with(small | 2, deflated.to_vec())));
    let first = switchboard_ws::encode_frame(false, 0b100, OpCode::Text, &hello[..3], Some(mask));
    let rest = frag(true, OpCode::Continuation, &hello[3..], Some(mask));
    out.push((
        "server-deflate-fragmented",
        with(small | 2, frames(&[first, rest])),
    ));
    out.push((
        "server-invalid-utf8",
        with(
            small,
            Frame::masked(OpCode::Text, &[0x68, 0xed, 0xa0, 0x80], mask)
                .into_bytes()
                .to_vec(),
        ),
    ));
    out
}

/// A header announcing `len` bytes, with a few of them.
fn frame_header_only(b0: u8, len: u64) -> Vec<u8> {
    let mut v = vec![b0, 127];
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&[1, 2, 3, 4]);
    v
}
