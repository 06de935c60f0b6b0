//! Protocol v1 on the wire: parsing client frames and writing server frames.
//!
//! Client frames are parsed without copying: fields stay raw JSON until a handler asks for
//! them, and `data`/`presence` are never re-serialised: their bytes go into the outgoing
//! frame as they came.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_ws::{Frame, FrameBuilder, OpCode};

pub const SUBPROTOCOL: &str = "switchboard.v1";

/// Error codes of `error` frames (docs/protocol.md lists them with their meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadJson,
    BadRequest,
    UnknownType,
    InvalidRoom,
    NotJoined,
    Forbidden,
    Unauthorized,
    RateLimited,
    TooLarge,
    TooManyRooms,
    UnrecoverablePosition,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::UnrecoverablePosition => "unrecoverable_position",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// A failed request: the code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// One raw field: present (any JSON, `null` included) or absent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Field<'a>(pub Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Field<'a>, D::Error> {
        <&'a RawValue>::deserialize(d).map(|v| Field(Some(v)))
    }
}

/// A client frame with its fields still raw. Unknown fields are ignored, so clients may
/// add their own.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    #[serde(rename = "type", default, borrow)]
    pub kind: Field<'a>,
    #[serde(default, borrow)]
    pub id: Field<'a>,
    #[serde(default, borrow)]
    pub room: Field<'a>,
    #[serde(default, borrow)]
    pub data: Field<'a>,
    #[serde(default, borrow)]
    pub presence: Field<'a>,
    #[serde(default, borrow)]
    pub echo: Field<'a>,
    #[serde(default, borrow)]
    pub since: Field<'a>,
    #[serde(default, borrow)]
    pub limit: Field<'a>,
    #[serde(default, borrow)]
    pub token: Field<'a>,
    #[serde(default, borrow)]
    pub cursor: Field<'a>,
    #[serde(default, borrow)]
    pub key: Field<'a>,
    #[serde(default, borrow)]
    pub reverse: Field<'a>,
}

/// The request types a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Auth,
    Join,
    Leave,
    Publish,
    Presence,
    Members,
    History,
    Ping,
}

/// A parsed client frame: its raw fields, its request id and its type.
pub type Request<'a> = (Envelope<'a>, Option<i64>, Kind);

/// Parses a text frame into its envelope, its request id and its type.
///
/// The id is worked out first, so that every later error can still be answered with it.
pub fn parse(text: &[u8]) -> Result<Request<'_>, (Option<i64>, Failure)> {
    // serde would read an array positionally into the envelope: only objects are frames.
    if text.trim_ascii_start().first() != Some(&b'{') {
        let failure = match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
            Ok(_) => Failure::new(ErrorCode::BadRequest, "a frame must be a JSON object"),
            Err(e) => Failure::new(ErrorCode::BadJson, format!("not valid JSON: {e}")),
        };
        return Err((None, failure));
    }
    let env: Envelope = serde_json::from_slice(text).map_err(|e| {
        let failure = if e.is_syntax() || e.is_eof() {
            Failure::new(ErrorCode::BadJson, format!("not valid JSON: {e}"))
        } else {
            Failure::new(
                ErrorCode::BadRequest,
                format!("a frame must be a JSON object with a \"type\": {e}"),
            )
        };
        (None, failure)
    })?;
    let id = match env.id.0 {
        None => None,
        Some(raw) => match serde_json::from_str::<i64>(raw.get()) {
            Ok(id) => Some(id),
            Err(_) => {
                return Err((
                    None,
                    Failure::new(ErrorCode::BadRequest, "\"id\" must be an integer"),
                ))
            }
        },
    };
    let kind_name: Cow<str> = match env.kind.0 {
        None => return Err((id, Failure::new(ErrorCode::BadRequest, "missing \"type\""))),
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| {
            (
                id,
                Failure::new(ErrorCode::BadRequest, "\"type\" must be a string"),
            )
        })?,
    };
    let kind = match &*kind_name {
        "auth" => Kind::Auth,
        "join" => Kind::Join,
        "leave" => Kind::Leave,
        "publish" => Kind::Publish,
        "presence" => Kind::Presence,
        "members" => Kind::Members,
        "history" => Kind::History,
        "ping" => Kind::Ping,
        other => {
            let mut shown: String = other.chars().take(40).collect();
            if shown.len() < other.len() {
                shown.push('…');
            }
            return Err((
                id,
                Failure::new(ErrorCode::UnknownType, format!("unknown type {shown:?}")),
            ));
        }
    };
    Ok((env, id, kind))
}

/// Reads only the request id of a frame (to answer a frame we will not process, such as
/// a rate-limited one, with its id).
pub fn peek_id(text: &[u8]) -> Option<i64> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<i64>,
    }
    serde_json::from_slice::<IdOnly>(text).ok()?.id
}

/// Most characters a room name may have.
pub const MAX_ROOM_LEN: usize = 128;

/// Reads and checks a room name: 1–128 of `A–Z a–z 0–9 _ - . :`.
pub fn room_name(field: Field<'_>) -> Result<Cow<'_, str>, Failure> {
    let raw = field
        .0
        .ok_or_else(|| Failure::new(ErrorCode::BadRequest, "missing \"room\""))?;
    let name: Cow<str> = serde_json::from_str(raw.get())
        .map_err(|_| Failure::new(ErrorCode::BadRequest, "\"room\" must be a string"))?;
    check_room_name(&name)?;
    Ok(name)
}

/// Checks a room name: 1–128 of `A–Z a–z 0–9 _ - . :`.
pub fn check_room_name(name: &str) -> Result<(), Failure> {
    if name.is_empty()
        || name.len() > MAX_ROOM_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        return Err(Failure::new(
            ErrorCode::InvalidRoom,
            "room names are 1-128 characters of A-Z a-z 0-9 _ - . :",
        ));
    }
    Ok(())
}

/// Reads a presence state: a JSON object, kept as its raw text.
pub fn presence_object<'a>(
    field: Field<'a>,
    required: bool,
) -> Result<Option<&'a RawValue>, Failure> {
    match field.0 {
        None if required => Err(Failure::new(ErrorCode::BadRequest, "missing \"presence\"")),
        None => Ok(None),
        Some(raw) if raw.get().trim_start().starts_with('{') => Ok(Some(raw)),
        Some(_) => Err(Failure::new(
            ErrorCode::BadRequest,
            "\"presence\" must be a JSON object",
        )),
    }
}

/// Checks JSON that will be relayed to other clients (`data`, `presence`) for what their
/// parsers cannot take, although ours does: nesting deeper than `max_depth` (browsers and
/// Python's `json` fail from about 1,000 levels; serde_json skips raw values at any depth),
/// `\u` escapes that leave a UTF-16 surrogate unpaired (not a Unicode string: strict
/// decoders reject it, others turn it into U+FFFD), and numbers that are not finite doubles
/// (`1e400`; JavaScript reads `Infinity`, which is not JSON). The text is syntactically valid
/// JSON already (serde_json checked it while reading the envelope); this pass only looks
/// for those three things, in one scan without allocating.
pub fn check_relayed(raw: &RawValue, what: &str, max_depth: usize) -> Result<(), Failure> {
    let bad = |why: &str| Failure::new(ErrorCode::BadRequest, format!("\"{what}\" {why}"));
    let b = raw.get().as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(bad(&format!(
                        "is nested deeper than {max_depth} levels of arrays and objects"
                    )));
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'"' => {
                i = scan_string(b, i + 1)
                    .map_err(|()| bad("has a string with an unpaired UTF-16 surrogate escape"))?;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                let mut exponent = false;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    exponent |= matches!(b[i], b'e' | b'E');
                    i += 1;
                }
                // Without an exponent, up to 308 digits are finite; every number is
                // otherwise cheap to check exactly.
                if exponent || i - start > 300 {
                    // The token is ASCII digits and signs: valid UTF-8.
                    let text = std::str::from_utf8(&b[start..i]).unwrap_or("0");
                    if !text.parse::<f64>().is_ok_and(f64::is_finite) {
                        return Err(bad("has a number that is not a finite double"));
                    }
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Skips a JSON string whose opening quote is just before `i`; returns the index after its
/// closing quote, or `Err` for an unpaired surrogate escape.
fn scan_string(b: &[u8], mut i: usize) -> Result<usize, ()> {
    let hex4 = |at: usize| -> Option<u16> {
        let digits = b.get(at..at + 4)?;
        u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    while i < b.len() {
        match b[i] {
            b'"' => return Ok(i + 1),
            b'\\' if b.get(i + 1) == Some(&b'u') => {
                let unit = hex4(i + 2).ok_or(())?;
                i += 6;
                match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate must be followed by an escaped low one.
                        let low = (b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'u'))
                            .then(|| hex4(i + 2))
                            .flatten();
                        if !matches!(low, Some(0xDC00..=0xDFFF)) {
                            return Err(());
                        }
                        i += 6;
                    }
                    0xDC00..=0xDFFF => return Err(()),
                    _ => {}
                }
            }
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    Ok(i)
}

/// Reads a member-list cursor: absent or null (the first page), or a string from an earlier
/// `members` or `joined` reply.
pub fn members_cursor(field: Field<'_>) -> Result<Option<u64>, Failure> {
    let Some(raw) = field.0 else {
        return Ok(None);
    };
    if raw.get() == "null" {
        return Ok(None);
    }
    let bad = || {
        Failure::new(
            ErrorCode::BadRequest,
            "\"cursor\" must be a cursor string from a previous members reply",
        )
    };
    let text: Cow<str> = serde_json::from_str(raw.get()).map_err(|_| bad())?;
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse().map(Some).map_err(|_| bad())
}

/// Longest epoch a `since` may name (ours are 12 characters; other brokers' are longer).
pub const MAX_EPOCH_LEN: usize = 64;
/// Longest idempotency `key` of a publish.
pub const MAX_KEY_LEN: usize = 128;

/// Reads a `since` position: absent or null, or `{"epoch": string, "offset": integer ≥ 0}`.
pub fn since(field: Field<'_>) -> Result<Option<crate::broker::Position>, Failure> {
    #[derive(Deserialize)]
    struct Since<'a> {
        #[serde(borrow)]
        epoch: Cow<'a, str>,
        offset: u64,
    }
    let Some(raw) = field.0 else {
        return Ok(None);
    };
    if raw.get() == "null" {
        return Ok(None);
    }
    let bad = || {
        Failure::new(
            ErrorCode::BadRequest,
            format!(
                "\"since\" must be {{\"epoch\": a string of at most {MAX_EPOCH_LEN} bytes, \"offset\": an integer >= 0}}"
            ),
        )
    };
    let since: Since = serde_json::from_str(raw.get()).map_err(|_| bad())?;
    if since.epoch.is_empty() || since.epoch.len() > MAX_EPOCH_LEN {
        return Err(bad());
    }
    Ok(Some(crate::broker::Position {
        epoch: since.epoch.as_ref().into(),
        offset: since.offset,
    }))
}

/// Reads a publish's idempotency `key`: absent, or a string of 1 to 128 bytes.
pub fn publish_key(field: Field<'_>) -> Result<Option<Box<str>>, Failure> {
    let bad = || {
        Failure::new(
            ErrorCode::BadRequest,
            format!("\"key\" must be a string of 1 to {MAX_KEY_LEN} bytes"),
        )
    };
    match optional_str(field, "key").map_err(|_| bad())? {
        None => Ok(None),
        Some(k) if k.is_empty() || k.len() > MAX_KEY_LEN => Err(bad()),
        Some(k) => Ok(Some(k.as_ref().into())),
    }
}

/// Reads an optional count from 1 to `max`.
pub fn optional_count(
    field: Field<'_>,
    name: &'static str,
    max: usize,
) -> Result<Option<usize>, Failure> {
    let Some(raw) = field.0 else {
        return Ok(None);
    };
    match serde_json::from_str::<u64>(raw.get()) {
        Ok(n) if n >= 1 && n <= max as u64 => Ok(Some(n as usize)),
        _ => Err(Failure::new(
            ErrorCode::BadRequest,
            format!("\"{name}\" must be an integer from 1 to {max}"),
        )),
    }
}

/// Reads an optional string field.
pub fn optional_str<'a>(
    field: Field<'a>,
    name: &'static str,
) -> Result<Option<Cow<'a, str>>, Failure> {
    match field.0 {
        None => Ok(None),
        Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|_| {
            Failure::new(
                ErrorCode::BadRequest,
                format!("\"{name}\" must be a string"),
            )
        }),
    }
}

pub fn optional_bool(field: Field<'_>, name: &'static str) -> Result<Option<bool>, Failure> {
    match field.0 {
        None => Ok(None),
        Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|_| {
            Failure::new(
                ErrorCode::BadRequest,
                format!("\"{name}\" must be true or false"),
            )
        }),
    }
}

/// Writes server frames. Strings that come from clients are escaped by serde_json; room
/// names and ids are known to need no escaping.
pub struct Out(Sink);

/// Where [`Out`] writes: a text frame, or the JSON header of a binary frame.
enum Sink {
    Frame(FrameBuilder),
    Header(Vec<u8>),
}

impl Sink {
    fn extend_from_slice(&mut self, data: &[u8]) {
        match self {
            Sink::Frame(b) => b.extend_from_slice(data),
            Sink::Header(v) => v.extend_from_slice(data),
        }
    }
}

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Out {
    pub fn new(kind: &str) -> Out {
        Out::with_capacity(kind, 64)
    }

    pub fn with_capacity(kind: &str, capacity: usize) -> Out {
        let b = FrameBuilder::with_capacity(OpCode::Text, capacity + 16 + kind.len());
        Out::start(Sink::Frame(b), kind)
    }

    /// The JSON header of a binary frame ([`binary_frame`]), ended with
    /// [`finish_header`](Out::finish_header).
    pub fn header(kind: &str, capacity: usize) -> Out {
        Out::start(
            Sink::Header(Vec::with_capacity(capacity + 16 + kind.len())),
            kind,
        )
    }

    fn start(mut sink: Sink, kind: &str) -> Out {
        sink.extend_from_slice(b"{\"type\":\"");
        sink.extend_from_slice(kind.as_bytes());
        sink.extend_from_slice(b"\"");
        Out(sink)
    }

    /// `"name":` followed by raw JSON.
    pub fn raw(mut self, name: &str, json: &str) -> Out {
        self.key(name);
        self.0.extend_from_slice(json.as_bytes());
        self
    }

    pub fn str(mut self, name: &str, value: &str) -> Out {
        self.key(name);
        // Writing into a FrameBuilder or a Vec cannot fail, and a str always serialises.
        let _ = serde_json::to_writer(&mut self.0, value);
        self
    }

    pub fn int(mut self, name: &str, value: i64) -> Out {
        self.key(name);
        let mut s = String::new();
        let _ = write!(s, "{value}");
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    pub fn uint(self, name: &str, value: u64) -> Out {
        self.int(name, value as i64)
    }

    pub fn opt_id(self, id: Option<i64>) -> Out {
        match id {
            Some(id) => self.int("id", id),
            None => self,
        }
    }

    pub fn bool(self, name: &str, value: bool) -> Out {
        self.raw(name, if value { "true" } else { "false" })
    }

    /// `"name":[...]` with the given raw JSON items.
    pub fn raw_list<'a>(mut self, name: &str, items: impl IntoIterator<Item = &'a str>) -> Out {
        self.key(name);
        self.0.extend_from_slice(b"[");
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.0.extend_from_slice(b",");
            }
            self.0.extend_from_slice(item.as_bytes());
        }
        self.0.extend_from_slice(b"]");
        self
    }

    pub fn finish(mut self) -> Frame {
        self.0.extend_from_slice(b"}");
        match self.0 {
            Sink::Frame(b) => b.finish(),
            Sink::Header(v) => Frame::text(&String::from_utf8_lossy(&v)),
        }
    }

    /// The JSON text of a header started with [`Out::header`].
    pub fn finish_header(mut self) -> String {
        self.0.extend_from_slice(b"}");
        match self.0 {
            // Everything written is str or ASCII.
            Sink::Header(v) => String::from_utf8(v).unwrap_or_default(),
            Sink::Frame(b) => {
                let f = b.finish();
                String::from_utf8_lossy(f.payload()).into_owned()
            }
        }
    }

    fn key(&mut self, name: &str) {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b"\":");
    }
}

/// Bytes of the header length that starts every binary frame of the protocol.
pub const BINARY_HEADER_LEN_BYTES: usize = 4;

/// A binary frame of the protocol (docs/protocol.md, "Binary messages"): the header's
/// length as a u32 big-endian, the JSON header, then the payload.
pub fn binary_frame(header: &str, payload: &[u8]) -> Frame {
    let mut b = FrameBuilder::with_capacity(
        OpCode::Binary,
        BINARY_HEADER_LEN_BYTES + header.len() + payload.len(),
    );
    b.extend_from_slice(&(header.len() as u32).to_be_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(payload);
    b.finish()
}

/// A parsed binary frame: its header as a request, and its payload.
pub type BinaryRequest<'a> = (Request<'a>, &'a [u8]);

/// Splits a client's binary frame into its JSON header and its payload, and parses the
/// header as a request. Every fault — too short for the length, a length past the end, a
/// header that is not a JSON request, a type other than `publish`, a `data` field in the
/// header — is `bad_request`, with the header's id when it could be read.
pub fn parse_binary(frame: &[u8]) -> Result<BinaryRequest<'_>, (Option<i64>, Failure)> {
    let bad = |id, why: String| {
        (
            id,
            Failure::new(
                ErrorCode::BadRequest,
                format!("bad binary frame: {why} (docs/protocol.md, \"Binary messages\")"),
            ),
        )
    };
    let Some((len, rest)) = frame.split_first_chunk::<BINARY_HEADER_LEN_BYTES>() else {
        return Err(bad(
            None,
            format!(
                "{} bytes, shorter than the {BINARY_HEADER_LEN_BYTES}-byte header length",
                frame.len()
            ),
        ));
    };
    let len = u32::from_be_bytes(*len) as usize;
    if len > rest.len() {
        return Err(bad(
            None,
            format!("the header length says {len} bytes; {} follow", rest.len()),
        ));
    }
    let (header, payload) = rest.split_at(len);
    // An id is read from a header that is a JSON object (an array would be read by
    // position) even when the rest of it is wrong.
    let object_id = || {
        (header.trim_ascii_start().first() == Some(&b'{'))
            .then(|| peek_id(header))
            .flatten()
    };
    let (env, id, kind) = parse(header)
        .map_err(|(id, f)| bad(id.or_else(object_id), format!("header: {}", f.message)))?;
    if kind != Kind::Publish {
        return Err(bad(
            id,
            "only \"publish\" may be sent as a binary frame; send other requests as JSON text"
                .to_owned(),
        ));
    }
    if env.data.0.is_some() {
        return Err(bad(
            id,
            "the header has a \"data\": a binary publish's data is the payload after the header"
                .to_owned(),
        ));
    }
    Ok(((env, id, kind), payload))
}

pub fn error_frame(id: Option<i64>, failure: &Failure) -> Frame {
    Out::new("error")
        .opt_id(id)
        .str("code", failure.code.as_str())
        .str("message", &failure.message)
        .finish()
}

/// A member as it appears in `joined`, `members` and `presence`, serialised once per change:
/// `{"conn", "user", "info" (only when the token has one), "presence"}`. `info` and
/// `presence` are raw JSON objects; `presence` comes last (the hub reads it back from there).
pub fn member_json(
    conn: &str,
    user: Option<&str>,
    info: Option<&str>,
    presence: Option<&str>,
) -> String {
    let presence = presence.unwrap_or("{}");
    let mut s = String::with_capacity(48 + presence.len() + info.map_or(0, str::len));
    s.push_str("{\"conn\":");
    s.push_str(&serde_json::to_string(conn).unwrap_or_default());
    s.push_str(",\"user\":");
    match user {
        Some(u) => s.push_str(&serde_json::to_string(u).unwrap_or_default()),
        None => s.push_str("null"),
    }
    if let Some(info) = info {
        s.push_str(",\"info\":");
        s.push_str(info);
    }
    s.push_str(",\"presence\":");
    s.push_str(presence);
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> (Option<i64>, ErrorCode) {
        let (id, f) = parse(text.as_bytes()).unwrap_err();
        (id, f.code)
    }

    #[test]
    fn classifies_bad_frames() {
        assert_eq!(code("{not json"), (None, ErrorCode::BadJson));
        assert_eq!(code(""), (None, ErrorCode::BadJson));
        assert_eq!(code("[1,2]"), (None, ErrorCode::BadRequest));
        assert_eq!(code("{\"id\":1}"), (Some(1), ErrorCode::BadRequest));
        assert_eq!(
            code("{\"id\":\"x\",\"type\":\"ping\"}"),
            (None, ErrorCode::BadRequest)
        );
        assert_eq!(
            code("{\"id\":2,\"type\":7}"),
            (Some(2), ErrorCode::BadRequest)
        );
        assert_eq!(
            code("{\"id\":3,\"type\":\"dance\"}"),
            (Some(3), ErrorCode::UnknownType)
        );
    }

    #[test]
    fn keeps_null_data_distinct_from_missing_data() {
        let (env, id, kind) =
            parse(br#"{"type":"publish","id":9,"room":"a","data":null}"#).unwrap();
        assert_eq!((id, kind), (Some(9), Kind::Publish));
        assert_eq!(env.data.0.map(|r| r.get()), Some("null"));
        let (env, _, _) = parse(br#"{"type":"publish","room":"a"}"#).unwrap();
        assert!(env.data.0.is_none());
    }

    #[test]
    fn checks_room_names() {
        let ok = |s: &str| room_name(parse(s.as_bytes()).unwrap().0.room).map(|r| r.into_owned());
        assert_eq!(
            ok(r#"{"type":"join","room":"chat:lobby"}"#).unwrap(),
            "chat:lobby"
        );
        assert_eq!(ok(r#"{"type":"join","room":"caf\u0065"}"#).unwrap(), "cafe");
        for bad in [
            r#""""#,
            r#""a b""#,
            r#""<script>""#,
            &format!("\"{}\"", "a".repeat(129)),
        ] {
            let err = ok(&format!(r#"{{"type":"join","room":{bad}}}"#)).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRoom, "{bad}");
        }
        assert_eq!(
            ok(r#"{"type":"join","room":5}"#).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            ok(r#"{"type":"join"}"#).unwrap_err().code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn refuses_relayed_json_other_parsers_cannot_take() {
        let check = |json: &str| {
            let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
            check_relayed(&raw, "data", 32).map_err(|f| f.code)
        };
        for ok in [
            r#"{"text":"hi","n":[1,2.5,-3e10,1E308]}"#,
            r#""caf\u00e9 \ud83d\ude00 \\u d800""#,
            r#"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"#,
            r#""[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[ in a string""#,
            "0",
            "-0.0e-400",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        let big = format!("1{}", "0".repeat(400));
        for bad in [
            deep.as_str(),
            r#""\ud800""#,
            r#""\ud800x""#,
            r#""\ud800\u0041""#,
            r#""\udc00\ud800""#,
            r#"{"a":1e400}"#,
            "-1e309",
            big.as_str(),
        ] {
            assert_eq!(check(bad), Err(ErrorCode::BadRequest), "{bad}");
        }
    }

    fn framed(header: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut f = (header.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(header);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn splits_binary_frames_and_refuses_bad_ones() {
        let f = framed(
            br#"{"type":"publish","id":7,"room":"r","key":"k"}"#,
            b"\0\xffab",
        );
        let ((env, id, kind), payload) = parse_binary(&f).unwrap();
        assert_eq!(
            (id, kind, payload),
            (Some(7), Kind::Publish, &b"\0\xffab"[..])
        );
        assert_eq!(room_name(env.room).unwrap(), "r");
        // An empty payload is a message of no bytes.
        let f = framed(br#"{"type":"publish","room":"r"}"#, b"");
        assert_eq!(parse_binary(&f).unwrap().1, b"");
        let bad = |f: &[u8]| {
            let (id, failure) = parse_binary(f).unwrap_err();
            assert_eq!(failure.code, ErrorCode::BadRequest, "{:?}", failure.message);
            id
        };
        assert_eq!(bad(b""), None);
        assert_eq!(bad(b"\0\0\0"), None);
        assert_eq!(bad(&[0, 0, 0, 9, b'{', b'}']), None, "length past the end");
        assert_eq!(bad(&[0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(bad(&framed(b"not json", b"x")), None);
        assert_eq!(bad(&framed(b"[1]", b"x")), None);
        assert_eq!(bad(&framed(b"\xff\xfe", b"x")), None, "not UTF-8");
        assert_eq!(bad(&framed(br#"{"id":3,"type":"dance"}"#, b"x")), Some(3));
        assert_eq!(
            bad(&framed(br#"{"id":4,"type":"join","room":"r"}"#, b"x")),
            Some(4)
        );
        assert_eq!(bad(&framed(br#"{"id":5}"#, b"x")), Some(5));
        assert_eq!(
            bad(&framed(
                br#"{"id":6,"type":"publish","room":"r","data":1}"#,
                b"x"
            )),
            Some(6)
        );
        // A missing room is found where a text publish's is: by the session, bad_request.
        let f = framed(br#"{"type":"publish"}"#, b"x");
        let ((env, _, _), _) = parse_binary(&f).unwrap();
        assert_eq!(room_name(env.room).unwrap_err().code, ErrorCode::BadRequest);
    }

    #[test]
    fn writes_binary_frames_with_their_header() {
        let header = Out::header("message", 0)
            .str("room", "r")
            .uint("offset", 3)
            .finish_header();
        assert_eq!(header, r#"{"type":"message","room":"r","offset":3}"#);
        let frame = binary_frame(&header, b"\x01\x02");
        assert_eq!(frame.opcode(), Some(OpCode::Binary));
        let p = frame.payload();
        assert_eq!(&p[..4], &(header.len() as u32).to_be_bytes());
        assert_eq!(&p[4..4 + header.len()], header.as_bytes());
        assert_eq!(&p[4 + header.len()..], b"\x01\x02");
    }

    #[test]
    fn writes_frames_as_json() {
        let frame = error_frame(Some(4), &Failure::new(ErrorCode::NotJoined, "say \"hi\""));
        let payload = &frame.as_bytes()[2..];
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"error","id":4,"code":"not_joined","message":"say \"hi\""})
        );
        let m = member_json("c\"1", None, None, None);
        let v: serde_json::Value = serde_json::from_str(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"conn":"c\"1","user":null,"presence":{}})
        );
    }
}
