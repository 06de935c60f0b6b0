//! permessage-deflate (RFC 7692): negotiating it from `Sec-WebSocket-Extensions`, inflating
//! what a peer sends (bounded) and deflating what we send.
//!
//! The implementation is zlib-rs through flate2 (`default-features = false, features =
//! ["zlib-rs"]`). Why: it is the fastest pure-Rust deflate (zlib-ng's algorithms: at level 1
//! it deflates JSON several times faster than miniz_oxide, flate2's default backend), it needs
//! no C toolchain, and it is the only pure-Rust backend behind flate2 that takes window bits,
//! which RFC 7692 negotiates (`server_max_window_bits` 9–15; miniz_oxide always uses 15).
//! Memory: an inflate stream is about 7 KiB of state plus a window of `2^bits` bytes (32 KiB
//! for the usual 15), allocated when it is first needed; a deflate stream is about 256 KiB,
//! which is why a server keeps one per thread, not one per connection (see [`Deflater`]).
//!
//! What a server answers ([`negotiate`]): the first acceptable offer, with
//! `server_no_context_takeover` always (every message is deflated on its own, so one deflated
//! frame can go to every member of a room, and the server keeps no deflate state per
//! connection), and `client_no_context_takeover` when [`Policy::client_no_context_takeover`]
//! asks for it (the inflate state is then dropped after each message, so an idle connection
//! holds none).

use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::frame::{Frame, FrameBuilder, OpCode};
use crate::handshake::ExtensionOffer;

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// The bytes a sender strips from the end of every compressed message (the empty stored
/// block a sync flush ends with) and the receiver appends before inflating (RFC 7692 §7.2.1).
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What the server asks of the client beyond what the client offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Answer `client_no_context_takeover` to every offer (RFC 7692 §7.1.1.2 lets a server
    /// include it even if the client did not offer it): the client then compresses each
    /// message on its own and the server can drop its inflate state between messages.
    /// Without it the state (about 40 KiB with a 15-bit window) lives as long as the
    /// connection once the client has sent one compressed message.
    pub client_no_context_takeover: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            client_no_context_takeover: true,
        }
    }
}

/// The parameters in force on a connection, as the server answered them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The server deflates every message on its own. Always true for what [`negotiate`]
    /// answers; a client-side user may see `false`.
    pub server_no_context_takeover: bool,
    /// The client deflates every message on its own: its inflater is reset after each.
    pub client_no_context_takeover: bool,
    /// The LZ77 window the server may use, 8–15 (15 when the client did not limit it).
    pub server_max_window_bits: u8,
    /// The LZ77 window the client may use, 8–15.
    pub client_max_window_bits: u8,
    /// Whether the answer carries `server_max_window_bits` (only when the client asked).
    answer_server_window: bool,
}

impl Params {
    /// The value of the `Sec-WebSocket-Extensions` answer header.
    pub fn response(&self) -> String {
        let mut s = String::from(EXTENSION_NAME);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if self.answer_server_window {
            s.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        s
    }

    /// The longest message the server may deflate on its own (no context takeover) and send
    /// on this connection: with a window of `2^bits` bytes, a message no longer than that can
    /// only refer back to data the peer's window still holds. `usize::MAX` for the full
    /// 15-bit window (any message: the deflater uses that window itself).
    pub fn max_deflated_len(&self) -> usize {
        if self.server_max_window_bits >= 15 {
            usize::MAX
        } else {
            1 << self.server_max_window_bits
        }
    }
}

/// Picks the first acceptable `permessage-deflate` offer of `offers` (in the client's
/// order) and returns the parameters to answer it with. An offer with an unknown parameter,
/// a parameter given twice or a bad value is declined (RFC 7692 §7: the server declines an
/// offer it cannot accept; the handshake goes on without it), and so is every other
/// extension: `None` means the connection runs uncompressed.
pub fn negotiate(offers: &[ExtensionOffer], policy: Policy) -> Option<Params> {
    offers
        .iter()
        .filter(|o| o.name.eq_ignore_ascii_case(EXTENSION_NAME))
        .find_map(|o| accept(o, policy))
}

/// The answer to one offer, or `None` to decline it.
fn accept(offer: &ExtensionOffer, policy: Policy) -> Option<Params> {
    let mut server_nct = false;
    let mut client_nct = false;
    let mut server_bits: Option<u8> = None;
    // `Some(None)`: offered without a value (the client supports the parameter).
    let mut client_bits: Option<Option<u8>> = None;
    for (name, value) in &offer.params {
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if !server_nct && value.is_none() => server_nct = true,
            "client_no_context_takeover" if !client_nct && value.is_none() => client_nct = true,
            "server_max_window_bits" if server_bits.is_none() => {
                server_bits = Some(window_bits(value.as_deref()?)?);
            }
            "client_max_window_bits" if client_bits.is_none() => {
                client_bits = Some(match value {
                    None => None,
                    Some(v) => Some(window_bits(v)?),
                });
            }
            _ => return None, // unknown, repeated, or with a value where none belongs
        }
    }
    let _ = server_nct; // we answer server_no_context_takeover whether or not it was asked
    Some(Params {
        server_no_context_takeover: true,
        client_no_context_takeover: client_nct || policy.client_no_context_takeover,
        server_max_window_bits: server_bits.unwrap_or(15),
        // We never answer client_max_window_bits: our inflater always has the full window,
        // which takes whatever the client uses. A value the client offered is what it will
        // use at most.
        client_max_window_bits: client_bits.flatten().unwrap_or(15),
        answer_server_window: server_bits.is_some(),
    })
}

/// The parameters a server answered (the value of its `Sec-WebSocket-Extensions`), for a
/// client: `None` if it did not accept permessage-deflate or answered something invalid.
pub fn accepted(header: &str) -> Option<Params> {
    let mut parts = header.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(EXTENSION_NAME) {
        return None;
    }
    let mut p = Params {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
        answer_server_window: false,
    };
    let mut seen = Vec::new();
    for part in parts.filter(|p| !p.is_empty()) {
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (part, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => p.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => p.client_no_context_takeover = true,
            ("server_max_window_bits", Some(v)) => {
                p.server_max_window_bits = window_bits(v)?;
                p.answer_server_window = true;
            }
            ("client_max_window_bits", Some(v)) => p.client_max_window_bits = window_bits(v)?,
            _ => return None,
        }
        seen.push(name);
    }
    Some(p)
}

/// A window-bits value: 8 to 15, digits only, no leading zero (RFC 7692 §7.1.2).
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// Why inflating a message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The message inflates past the size limit (close 1009). Inflating stops at the limit:
    /// a small message that would inflate to gigabytes costs no more than the limit.
    TooBig,
    /// The compressed data is not valid deflate (close 1007).
    Corrupt,
}

/// Inflates the messages of one connection, bounded: output never grows past the limit.
pub struct Inflater {
    stream: Decompress,
    /// The stream ended (a block with BFINAL): the rest of the message is ignored, and the
    /// next message starts a fresh stream.
    ended: bool,
}

/// Output is produced in steps of at least this much.
const INFLATE_STEP: usize = 16 * 1024;

impl Default for Inflater {
    fn default() -> Inflater {
        Inflater::new()
    }
}

impl Inflater {
    pub fn new() -> Inflater {
        Inflater {
            // The full window inflates streams made with any smaller one.
            stream: Decompress::new_with_window_bits(false, 15),
            ended: false,
        }
    }

    /// Inflates `input` (one frame's payload, unmasked) onto `out`, which may hold at most
    /// `limit` bytes. `last`: this is the message's final frame (the trailer is added).
    pub fn inflate(
        &mut self,
        input: &[u8],
        last: bool,
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), InflateError> {
        // Input comes from the network: should the backend ever panic on it, the message
        // is corrupt (1007), not the end of the task.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.feed(input, out, limit)?;
            if last {
                self.feed(&TRAILER, out, limit)?;
            }
            Ok(())
        }))
        .unwrap_or(Err(InflateError::Corrupt))
    }

    /// Ends a message: with context takeover the window is kept for the next one;
    /// otherwise (or when the stream ended) the stream starts afresh.
    pub fn end_message(&mut self, keep_context: bool) {
        if !keep_context || self.ended {
            self.stream.reset(false);
            self.ended = false;
        }
    }

    fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), InflateError> {
        // Output never waits inside the stream between calls (each call runs until the
        // output buffer is not full), so there is nothing to do without input.
        if input.is_empty() {
            return Ok(());
        }
        while !self.ended {
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            // Room for one byte past the limit, so crossing it shows.
            let room = (limit + 1 - out.len()).min(INFLATE_STEP.max(input.len() * 4));
            let start = out.len();
            out.resize(start + room, 0);
            let (in_before, out_before) = (self.stream.total_in(), self.stream.total_out());
            let status = self
                .stream
                .decompress(input, &mut out[start..], FlushDecompress::Sync);
            let consumed = (self.stream.total_in() - in_before) as usize;
            let produced = (self.stream.total_out() - out_before) as usize;
            out.truncate(start + produced);
            input = &input[consumed..];
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            match status {
                Err(_) => return Err(InflateError::Corrupt),
                Ok(Status::StreamEnd) => self.ended = true,
                Ok(Status::Ok | Status::BufError) => {
                    let output_full = produced == room;
                    if !output_full && (input.is_empty() || consumed == 0) {
                        break; // everything in is out, or the stream needs more input
                    }
                }
            }
        }
        Ok(())
    }
}

/// Deflates outgoing messages, each on its own (no context takeover). One deflate stream
/// is about 256 KiB, so a server keeps one per thread, not one per connection; resetting
/// it between messages is what `server_no_context_takeover` asks for anyway.
pub struct Deflater {
    stream: Compress,
    level: u32,
}

impl Deflater {
    /// `level` 1–9 (clamped); a 15-bit window (see [`Params::max_deflated_len`] for peers
    /// that asked for less).
    pub fn new(level: u32) -> Deflater {
        let level = level.clamp(1, 9);
        Deflater {
            stream: new_stream(level),
            level,
        }
    }

    /// A compressed frame (RSV1 set) holding `payload`, or `None` when deflating does not
    /// make it smaller: then it should go plain.
    ///
    /// The stream always runs to the end of its sync flush, with room for the worst case,
    /// and is only then compared with the input: zlib-rs 0.6.8 panics ("buf.len() must fit
    /// in remaining()") on the next message after a stream was abandoned halfway with its
    /// output buffer full, which stopping early at the input's size did for incompressible
    /// data.
    pub fn deflate(&mut self, opcode: OpCode, payload: &[u8]) -> Option<Frame> {
        // A panic in the backend must not end the connection (or leave this thread's
        // deflater broken): the message goes plain and the stream starts afresh.
        let level = self.level;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.try_deflate(opcode, payload)
        }))
        .unwrap_or_else(|_| {
            self.stream = new_stream(level);
            None
        })
    }

    fn try_deflate(&mut self, opcode: OpCode, payload: &[u8]) -> Option<Frame> {
        self.stream.reset();
        // Stored blocks add 5 bytes per 64 KiB; the sync flush 5 more, plus a little slack.
        let bound = payload.len() + payload.len() / 1024 + 64;
        let mut frame = FrameBuilder::with_capacity(opcode, bound).rsv(0b100);
        let buf = frame.buf_mut();
        let start = buf.len();
        buf.resize(start + bound, 0);
        let mut input = payload;
        let mut written = 0;
        loop {
            let (in_before, out_before) = (self.stream.total_in(), self.stream.total_out());
            let status =
                self.stream
                    .compress(input, &mut buf[start + written..], FlushCompress::Sync);
            let consumed = (self.stream.total_in() - in_before) as usize;
            let produced = (self.stream.total_out() - out_before) as usize;
            input = &input[consumed..];
            written += produced;
            let full = start + written == buf.len();
            match status {
                Ok(_) if input.is_empty() && !full => break,
                Ok(_) if consumed > 0 || produced > 0 => {
                    if full {
                        let more = buf.len() / 2 + 64;
                        buf.resize(buf.len() + more, 0);
                    }
                }
                _ => {
                    // An error, or no progress: start from a fresh stream next time.
                    self.stream = new_stream(self.level);
                    return None;
                }
            }
        }
        buf.truncate(start + written);
        if !buf.ends_with(&TRAILER) || written - TRAILER.len() >= payload.len() {
            return None; // not smaller: send it plain
        }
        buf.truncate(buf.len() - TRAILER.len());
        Some(frame.finish())
    }
}

fn new_stream(level: u32) -> Compress {
    Compress::new_with_window_bits(Compression::new(level), false, 15)
}

/// Inflates a whole compressed payload (trailer stripped, as on the wire) in one go, up to
/// `limit` bytes: for clients and tests.
pub fn inflate_message(payload: &[u8], limit: usize) -> Result<Bytes, InflateError> {
    let mut out = BytesMut::new();
    Inflater::new().inflate(payload, true, &mut out, limit)?;
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(params: &[(&str, Option<&str>)]) -> ExtensionOffer {
        ExtensionOffer {
            name: EXTENSION_NAME.to_owned(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_owned)))
                .collect(),
        }
    }

    fn answer(params: &[(&str, Option<&str>)]) -> Option<String> {
        negotiate(&[offer(params)], Policy::default()).map(|p| p.response())
    }

    /// Every combination of the four parameters of RFC 7692 §7, each absent or present
    /// (window bits with no value, the smallest, the largest): what the server answers.
    #[test]
    fn every_parameter_combination_is_answered() {
        let server_bits = [None, Some("8"), Some("15")];
        let client_bits: [Option<Option<&str>>; 4] =
            [None, Some(None), Some(Some("8")), Some(Some("15"))];
        for policy_cnct in [false, true] {
            let policy = Policy {
                client_no_context_takeover: policy_cnct,
            };
            for snct in [false, true] {
                for cnct in [false, true] {
                    for sb in server_bits {
                        for cb in client_bits {
                            let mut p: Vec<(&str, Option<&str>)> = Vec::new();
                            if snct {
                                p.push(("server_no_context_takeover", None));
                            }
                            if cnct {
                                p.push(("client_no_context_takeover", None));
                            }
                            if let Some(b) = sb {
                                p.push(("server_max_window_bits", Some(b)));
                            }
                            if let Some(b) = cb {
                                p.push(("client_max_window_bits", b));
                            }
                            let got = negotiate(&[offer(&p)], policy)
                                .unwrap_or_else(|| panic!("declined {p:?}"));
                            let mut want =
                                "permessage-deflate; server_no_context_takeover".to_owned();
                            if cnct || policy_cnct {
                                want.push_str("; client_no_context_takeover");
                            }
                            if let Some(b) = sb {
                                want.push_str(&format!("; server_max_window_bits={b}"));
                            }
                            assert_eq!(got.response(), want, "offer {p:?}");
                            assert!(got.server_no_context_takeover);
                            assert_eq!(got.client_no_context_takeover, cnct || policy_cnct);
                            let sbits = sb.map_or(15, |b| b.parse().unwrap());
                            assert_eq!(got.server_max_window_bits, sbits);
                            let cbits = cb.flatten().map_or(15, |b| b.parse().unwrap());
                            assert_eq!(got.client_max_window_bits, cbits);
                            assert_eq!(
                                got.max_deflated_len(),
                                if sbits == 15 { usize::MAX } else { 1 << sbits }
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn never_answers_window_bits_unasked() {
        let a = answer(&[("client_max_window_bits", None)]).unwrap();
        assert!(!a.contains("window_bits"), "{a}");
        let a = answer(&[]).unwrap();
        assert_eq!(
            a,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn a_client_reads_the_answer_back() {
        let offer = offer(&[("server_max_window_bits", Some("10"))]);
        let p = negotiate(&[offer], Policy::default()).unwrap();
        assert_eq!(accepted(&p.response()), Some(p));
        assert_eq!(accepted("x-other"), None);
        assert_eq!(accepted("permessage-deflate; client_max_window_bits"), None);
        assert_eq!(
            accepted("permessage-deflate; server_no_context_takeover; server_no_context_takeover"),
            None
        );
    }

    #[test]
    fn bad_and_duplicate_parameters_decline_the_offer() {
        let bad: &[&[(&str, Option<&str>)]] = &[
            &[
                ("server_no_context_takeover", None),
                ("server_no_context_takeover", None),
            ],
            &[
                ("client_no_context_takeover", None),
                ("client_no_context_takeover", None),
            ],
            &[
                ("server_max_window_bits", Some("10")),
                ("server_max_window_bits", Some("10")),
            ],
            &[
                ("client_max_window_bits", None),
                ("client_max_window_bits", None),
            ],
            &[("server_no_context_takeover", Some("1"))],
            &[("client_no_context_takeover", Some("true"))],
            &[("server_max_window_bits", None)],
            &[("server_max_window_bits", Some("7"))],
            &[("server_max_window_bits", Some("16"))],
            &[("server_max_window_bits", Some("010"))],
            &[("server_max_window_bits", Some("0"))],
            &[("server_max_window_bits", Some("+9"))],
            &[("server_max_window_bits", Some("9a"))],
            &[("server_max_window_bits", Some(""))],
            &[("client_max_window_bits", Some("7"))],
            &[("client_max_window_bits", Some("16"))],
            &[("client_max_window_bits", Some("abc"))],
            &[("mux", None)],
            &[("server_no_context_takeover", None), ("x", Some("1"))],
        ];
        for params in bad {
            assert_eq!(answer(params), None, "{params:?} should be declined");
        }
    }

    #[test]
    fn the_first_acceptable_offer_wins() {
        let offers = vec![
            ExtensionOffer {
                name: "x-webkit-deflate-frame".into(),
                params: vec![],
            },
            offer(&[("server_max_window_bits", Some("99"))]), // declined
            offer(&[("server_max_window_bits", Some("10"))]),
            offer(&[]),
        ];
        let p = negotiate(&offers, Policy::default()).unwrap();
        assert_eq!(p.server_max_window_bits, 10);
        assert_eq!(
            negotiate(&offers[..2], Policy::default()),
            None,
            "nothing acceptable: no compression"
        );
    }

    #[test]
    fn the_offer_from_a_real_header_is_parsed() {
        let up = crate::handshake::validate_request(
            "GET",
            true,
            [
                ("Upgrade", &b"websocket"[..]),
                ("Connection", b"Upgrade"),
                ("Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", b"13"),
                (
                    "Sec-WebSocket-Extensions",
                    b"permessage-deflate; client_max_window_bits; server_max_window_bits=\"12\", permessage-deflate",
                ),
            ],
        )
        .unwrap();
        let p = negotiate(&up.extensions, Policy::default()).unwrap();
        assert_eq!(
            p.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12"
        );
    }

    fn payload_of(frame: &Frame) -> &[u8] {
        // server frames: 2, 4 or 10 bytes of header
        let b = frame.as_bytes();
        let h = match b[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        &b[h..]
    }

    #[test]
    fn deflate_round_trips_and_sets_rsv1() {
        let text = r#"{"type":"message","room":"chat:lobby","data":{"text":"hello hello hello"}}"#
            .repeat(20);
        let frame = Deflater::new(1)
            .deflate(OpCode::Text, text.as_bytes())
            .unwrap();
        assert_eq!(frame.as_bytes()[0], 0x80 | 0x40 | 0x1, "FIN, RSV1, text");
        let payload = payload_of(&frame);
        assert!(payload.len() < text.len() / 5, "{} bytes", payload.len());
        assert!(!payload.ends_with(&TRAILER));
        let back = inflate_message(payload, 1 << 20).unwrap();
        assert_eq!(&back[..], text.as_bytes());
    }

    #[test]
    fn incompressible_messages_are_not_deflated() {
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert!(Deflater::new(9).deflate(OpCode::Binary, &noise).is_none());
        assert!(Deflater::new(1).deflate(OpCode::Text, b"a").is_none());
        assert!(Deflater::new(1).deflate(OpCode::Text, b"").is_none());
    }

    /// Mostly incompressible messages (a bitmap, a PDF) one after another on one deflater:
    /// Autobahn's 12.2/12.5 made zlib-rs panic here when a stream that stopped early (its
    /// output as long as the input) was reset and reused.
    #[test]
    fn a_deflater_survives_incompressible_messages() {
        let mut x = 0x9e37_79b9u32;
        let data: Vec<u8> = (0..300_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if (i / 700) % 3 == 0 {
                    (i % 7) as u8
                } else {
                    x as u8
                }
            })
            .collect();
        let mut d = Deflater::new(1);
        let (mut pos, mut plain, mut deflated) = (0, 0, 0);
        for size in [16384usize, 4096, 256, 131072, 8192] {
            for _ in 0..60 {
                let end = (pos + size).min(data.len());
                let msg = &data[pos..end];
                pos = if end == data.len() { 0 } else { end };
                match d.deflate(OpCode::Binary, msg) {
                    Some(f) => {
                        deflated += 1;
                        assert!(f.payload().len() < msg.len());
                        assert_eq!(&inflate_message(f.payload(), 1 << 20).unwrap()[..], msg);
                    }
                    None => plain += 1,
                }
            }
        }
        assert!(
            plain > 0 && deflated > 0,
            "{plain} plain, {deflated} deflated"
        );
    }

    #[test]
    fn a_deflater_is_reusable_message_after_message() {
        let mut d = Deflater::new(3);
        for i in 0..20 {
            let text = format!("message {i} ").repeat(50);
            let f = d.deflate(OpCode::Text, text.as_bytes()).unwrap();
            // Each message inflates on its own: no context is shared.
            assert_eq!(
                &inflate_message(payload_of(&f), 1 << 20).unwrap()[..],
                text.as_bytes()
            );
        }
    }

    #[test]
    fn inflating_stops_at_the_limit() {
        // 10 MB of zeros deflates to about 10 KB.
        let zeros = vec![0u8; 10 << 20];
        let mut c = Compress::new_with_window_bits(Compression::best(), false, 15);
        let mut bomb = Vec::with_capacity(64 << 10);
        c.compress_vec(&zeros, &mut bomb, FlushCompress::Sync)
            .unwrap();
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let mut out = BytesMut::new();
        let err = Inflater::new()
            .inflate(&bomb, true, &mut out, 64 << 10)
            .unwrap_err();
        assert_eq!(err, InflateError::TooBig);
        assert!(out.len() <= (64 << 10) + 1);
        assert!(out.capacity() < 256 << 10, "capacity {}", out.capacity());
        // Exactly at the limit is fine.
        let small = vec![7u8; 1000];
        let mut c = Compress::new_with_window_bits(Compression::fast(), false, 15);
        let mut z = Vec::with_capacity(2000);
        c.compress_vec(&small, &mut z, FlushCompress::Sync).unwrap();
        let z = &z[..z.len() - 4];
        assert_eq!(inflate_message(z, 1000).unwrap().len(), 1000);
        assert_eq!(inflate_message(z, 999), Err(InflateError::TooBig));
    }

    #[test]
    fn corrupt_data_is_an_error_not_a_panic() {
        assert_eq!(
            inflate_message(&[0xff, 0xff, 0xff], 1000),
            Err(InflateError::Corrupt)
        );
        // A block type 3 (reserved).
        assert_eq!(inflate_message(&[0x07], 1000), Err(InflateError::Corrupt));
    }

    #[test]
    fn context_takeover_keeps_the_window_between_messages() {
        // A client with context takeover: the second message refers back into the first.
        let mut c = Compress::new_with_window_bits(Compression::fast(), false, 15);
        let text = b"the same words again and again, the same words again and again";
        let mut m1 = Vec::with_capacity(200);
        c.compress_vec(text, &mut m1, FlushCompress::Sync).unwrap();
        let mut m2 = Vec::with_capacity(200);
        c.compress_vec(text, &mut m2, FlushCompress::Sync).unwrap();
        let (m1, m2) = (&m1[..m1.len() - 4], &m2[..m2.len() - 4]);
        assert!(m2.len() < m1.len() / 2);
        let mut inf = Inflater::new();
        for m in [m1, m2] {
            let mut out = BytesMut::new();
            inf.inflate(m, true, &mut out, 1000).unwrap();
            assert_eq!(&out[..], &text[..]);
            inf.end_message(true);
        }
        // Without the context the second message cannot be inflated.
        let mut inf = Inflater::new();
        inf.inflate(m1, true, &mut BytesMut::new(), 1000).unwrap();
        inf.end_message(false);
        let mut out = BytesMut::new();
        assert!(inf.inflate(m2, true, &mut out, 1000).is_err() || out[..] != text[..]);
    }
}
