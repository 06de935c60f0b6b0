//! The server HTTP API for backends, under `/api/`: publish and broadcast as the server,
//! list rooms and members, disconnect users, and read the server's state. JSON in and out;
//! every error is a status with `{"error", "message"}`. Authenticated with `api_keys`
//! (`Authorization: Bearer <key>`, compared in constant time); without keys configured the
//! API does not exist (404), so an open development server exposes nothing extra.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use switchboard_ws::CloseCode;

use crate::auth::Access;
use crate::broker::{BrokerError, HistoryQuery, Payload, Position, StreamOptions, Survey};
use crate::hub::{Hub, Who};
use crate::protocol::{self, ErrorCode, Field};
use crate::rate::{RateLimiter, Verdict};
use crate::responses::{bearer, json, json_error, method_not_allowed, Body};

/// A refused request's whole answer (boxed: it is large next to the `Ok` values).
type Refusal = Box<Response<Body>>;

/// Failed key checks one address may make per second (a burst of twice that): guessing keys
/// is slow, and a flood of bad keys is answered 429 without comparing anything.
const AUTH_FAILURES_PER_SEC: u32 = 5;
/// Rooms one broadcast may name.
const MAX_BROADCAST_ROOMS: usize = 1000;
/// Rooms one `GET /api/rooms` lists.
const MAX_ROOM_LIST: usize = 1000;
/// Addresses whose rate limiters are remembered before the idle ones are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

pub struct Api {
    hub: Arc<Hub>,
    access: Arc<Access>,
    keys: Vec<String>,
    max_body: usize,
    max_json_depth: usize,
    request_rate: u32,
    started: Instant,
    limiters: Mutex<HashMap<IpAddr, Limiters>>,
}

struct Limiters {
    requests: RateLimiter,
    failures: RateLimiter,
}

/// Server counts `GET /api/info` reports beside the hub's.
pub struct Counts {
    pub pending_connections: usize,
    pub documents: usize,
}

impl Api {
    pub fn new(
        hub: Arc<Hub>,
        access: Arc<Access>,
        keys: Vec<String>,
        max_message_size: usize,
        max_json_depth: usize,
        request_rate: u32,
    ) -> Api {
        Api {
            hub,
            access,
            keys,
            // The data of one message plus room names and the envelope.
            max_body: max_message_size + 64 * 1024,
            max_json_depth,
            request_rate,
            started: Instant::now(),
            limiters: Mutex::new(HashMap::new()),
        }
    }

    /// Answers one request under `/api/`.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: IpAddr,
        counts: impl FnOnce() -> Counts,
    ) -> Response<Body> {
        if self.keys.is_empty() {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "the HTTP API is off: no api_keys are configured",
            );
        }
        if let Err(res) = self.authenticate(&req, peer) {
            return *res;
        }
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let query = req.uri().query().unwrap_or("").to_owned();
        match (method, path.as_str()) {
            (Method::POST, "/api/publish") => {
                let binary = is_octet_stream(req.headers());
                match self.body(req).await {
                    Ok(body) if binary => self.publish_binary(body, &query).await,
                    Ok(body) => self.publish(&body).await,
                    Err(res) => *res,
                }
            }
            (Method::POST, "/api/broadcast") => match self.body(req).await {
                Ok(body) => self.broadcast(&body).await,
                Err(res) => *res,
            },
            (Method::POST, "/api/disconnect") => match self.body(req).await {
                Ok(body) => self.disconnect(&body).await,
                Err(res) => *res,
            },
            (Method::GET | Method::HEAD, "/api/rooms") => self.rooms(&query).await,
            (Method::GET | Method::HEAD, "/api/info") => self.info(counts()).await,
            (Method::GET | Method::HEAD, p) if members_path(p).is_some() => {
                self.members(members_path(p).unwrap_or_default(), &query)
                    .await
            }
            (Method::GET | Method::HEAD, p) if history_path(p).is_some() => {
                self.history(history_path(p).unwrap_or_default(), &query)
                    .await
            }
            (_, "/api/publish" | "/api/broadcast" | "/api/disconnect") => {
                method_not_allowed("POST")
            }
            (_, "/api/rooms" | "/api/info") => method_not_allowed("GET, HEAD"),
            (_, p) if members_path(p).is_some() || history_path(p).is_some() => {
                method_not_allowed("GET, HEAD")
            }
            _ => error(StatusCode::NOT_FOUND, "not_found", "no such API endpoint"),
        }
    }

    /// Whether `req` carries a valid API key (within the rate limits; a wrong key counts as
    /// a failed check like any other).
    pub fn authorized(&self, req: &Request<Incoming>, peer: IpAddr) -> bool {
        !self.keys.is_empty() && self.authenticate(req, peer).is_ok()
    }

    /// Checks the rate limits and the key. Wrong keys are counted per address; once an
    /// address is over its allowance it gets 429 without its key being looked at.
    fn authenticate(&self, req: &Request<Incoming>, peer: IpAddr) -> Result<(), Refusal> {
        let now = Instant::now();
        let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        if limiters.len() >= MAX_TRACKED_ADDRESSES && !limiters.contains_key(&peer) {
            limiters.clear(); // forgetting only ever lets an address start afresh
        }
        let rate = self.request_rate;
        let l = limiters.entry(peer).or_insert_with(|| Limiters {
            requests: RateLimiter::new(rate, rate.saturating_mul(2), u32::MAX),
            failures: RateLimiter::new(AUTH_FAILURES_PER_SEC, AUTH_FAILURES_PER_SEC * 2, u32::MAX),
        });
        if l.requests.check(now) != Verdict::Allow {
            return Err(Box::new(rate_limited(
                "too many API requests from this address",
            )));
        }
        let given = bearer(req.headers());
        let known = given.is_some_and(|g| {
            // Every key is compared, each in constant time, so the time taken says nothing
            // about which key (or how much of one) matched.
            self.keys.iter().fold(false, |found, k| {
                found | constant_time_eq(k.as_bytes(), g.as_bytes())
            })
        });
        if known {
            return Ok(());
        }
        if l.failures.check(now) != Verdict::Allow {
            return Err(Box::new(rate_limited(
                "too many failed API key checks from this address",
            )));
        }
        drop(limiters);
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            if given.is_some() {
                "unknown API key"
            } else {
                "missing API key: send Authorization: Bearer <key>"
            },
        )))
    }

    /// Reads a JSON request body of at most `max_body` bytes.
    async fn body(&self, req: Request<Incoming>) -> Result<Bytes, Refusal> {
        // Any content type: the body is read as JSON whatever it says (curl's `-d` says
        // form-urlencoded). Browsers cannot forge these requests cross-site anyway: they
        // need the API key in `Authorization`, which no page of another site has.
        match Limited::new(req.into_body(), self.max_body).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(Box::new(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    &format!("the body is over {} bytes", self.max_body),
                )))
            }
            Err(_) => Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request body could not be read",
            ))),
        }
    }

    /// The room named by a URL path segment (`/api/rooms/{room}/…`): decoded, valid, and in
    /// a namespace that exists.
    fn room_in_path(&self, room: &str) -> Result<String, Refusal> {
        let name = percent_decode(room).unwrap_or_default();
        protocol::check_room_name(&name).map_err(|f| Box::new(bad(f.code, &f.message)))?;
        self.access.namespace(&name).map_err(|f| {
            Box::new(error(
                StatusCode::NOT_FOUND,
                "unknown_namespace",
                &f.message,
            ))
        })?;
        Ok(name)
    }

    /// Checks a room name for the API: valid, and in a namespace that exists.
    fn room<'a>(&self, field: Field<'a>) -> Result<std::borrow::Cow<'a, str>, Refusal> {
        let room = protocol::room_name(field).map_err(|f| bad(f.code, &f.message))?;
        self.access
            .namespace(&room)
            .map_err(|f| error(StatusCode::NOT_FOUND, "unknown_namespace", &f.message))?;
        Ok(room)
    }

    fn data<'a>(&self, field: Field<'a>) -> Result<&'a RawValue, Refusal> {
        let data = field
            .0
            .ok_or_else(|| bad(ErrorCode::BadRequest, "missing \"data\""))?;
        protocol::check_relayed(data, "data", self.max_json_depth)
            .map_err(|f| bad(f.code, &f.message))?;
        Ok(data)
    }

    /// How `room`'s stream is kept (its namespace exists: checked by [`Api::room`]).
    fn stream(&self, room: &str) -> StreamOptions {
        let ns = self.access.namespace(room).unwrap_or_default();
        self.hub.stream_options(&ns)
    }

    async fn publish(&self, body: &[u8]) -> Response<Body> {
        #[derive(Deserialize)]
        struct Publish<'a> {
            #[serde(default, borrow)]
            room: Field<'a>,
            #[serde(default, borrow)]
            data: Field<'a>,
            #[serde(default, borrow)]
            key: Field<'a>,
        }
        let req: Publish = match parse(body) {
            Ok(r) => r,
            Err(res) => return *res,
        };
        let room = match self.room(req.room) {
            Ok(r) => r,
            Err(res) => return *res,
        };
        let data = match self.data(req.data) {
            Ok(d) => d,
            Err(res) => return *res,
        };
        let key = match protocol::publish_key(req.key) {
            Ok(k) => k,
            Err(f) => return bad(f.code, &f.message),
        };
        self.publish_payload(&room, Payload::Json(data.get().into()), key)
            .await
    }

    /// Publishes `payload` to `room` as the server: answers its position, or why not.
    async fn publish_payload(
        &self,
        room: &str,
        payload: Payload,
        key: Option<Box<str>>,
    ) -> Response<Body> {
        let stream = self.stream(room);
        match self
            .hub
            .publish_as_server(room, payload, key, stream)
            .wait()
            .await
        {
            Ok(p) => ok(json!({
                "room": room,
                "epoch": &*p.epoch,
                "offset": p.offset,
                "duplicate": p.duplicate,
            })),
            Err(e) => broker_error(e),
        }
    }

    /// `POST /api/publish?room=…[&key=…]` with `Content-Type: application/octet-stream`:
    /// the body is the message's bytes, published as a binary message.
    async fn publish_binary(&self, body: Bytes, query: &str) -> Response<Body> {
        let Some(room) = query_param(query, "room") else {
            return bad(
                ErrorCode::BadRequest,
                "a binary publish names its room in the query string: /api/publish?room=…",
            );
        };
        if let Err(f) = protocol::check_room_name(&room) {
            return bad(f.code, &f.message);
        }
        if let Err(f) = self.access.namespace(&room) {
            return error(StatusCode::NOT_FOUND, "unknown_namespace", &f.message);
        }
        if body.len() > self.max_body - 64 * 1024 {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &format!(
                    "the body is over max_message_size ({} bytes)",
                    self.max_body - 64 * 1024
                ),
            );
        }
        let key = match query_param(query, "key") {
            None => None,
            Some(k) if k.is_empty() || k.len() > protocol::MAX_KEY_LEN => {
                return bad(
                    ErrorCode::BadRequest,
                    &format!(
                        "\"key\" must be a string of 1 to {} bytes",
                        protocol::MAX_KEY_LEN
                    ),
                )
            }
            Some(k) => Some(k.into_boxed_str()),
        };
        self.publish_payload(&room, Payload::Binary(body), key)
            .await
    }

    async fn broadcast(&self, body: &[u8]) -> Response<Body> {
        #[derive(Deserialize)]
        struct Broadcast<'a> {
            #[serde(default, borrow)]
            rooms: Option<Vec<Field<'a>>>,
            #[serde(default, borrow)]
            data: Field<'a>,
        }
        let req: Broadcast = match parse(body) {
            Ok(r) => r,
            Err(res) => return *res,
        };
        let Some(fields) = req.rooms.filter(|r| !r.is_empty()) else {
            return bad(
                ErrorCode::BadRequest,
                "\"rooms\" must be a non-empty array of room names",
            );
        };
        if fields.len() > MAX_BROADCAST_ROOMS {
            return bad(
                ErrorCode::BadRequest,
                &format!("at most {MAX_BROADCAST_ROOMS} rooms per broadcast"),
            );
        }
        let mut rooms = Vec::with_capacity(fields.len());
        for f in fields {
            match self.room(f) {
                Ok(r) => rooms.push(r),
                Err(res) => return *res,
            }
        }
        let data = match self.data(req.data) {
            Ok(d) => d,
            Err(res) => return *res,
        };
        // Every room's publish is started before any is awaited: rooms on disk share commits.
        let pending: Vec<_> = rooms
            .iter()
            .map(|room| {
                self.hub.publish_as_server(
                    room,
                    Payload::Json(data.get().into()),
                    None,
                    self.stream(room),
                )
            })
            .collect();
        let mut results = Vec::with_capacity(rooms.len());
        for (room, p) in rooms.iter().zip(pending) {
            results.push(match p.wait().await {
                Ok(p) => json!({ "room": room, "epoch": &*p.epoch, "offset": p.offset }),
                Err(_) => json!({ "room": room, "error": "unavailable" }),
            });
        }
        ok(json!({ "results": results }))
    }

    async fn disconnect(&self, body: &[u8]) -> Response<Body> {
        #[derive(Deserialize)]
        struct Disconnect {
            user: Option<String>,
            conn: Option<String>,
            code: Option<u16>,
            reason: Option<String>,
        }
        let req: Disconnect = match parse(body) {
            Ok(r) => r,
            Err(res) => return *res,
        };
        let who = match (&req.user, &req.conn) {
            (Some(u), None) => Who::User(u),
            (None, Some(c)) => Who::Conn(c),
            _ => {
                return bad(
                    ErrorCode::BadRequest,
                    "give exactly one of \"user\" and \"conn\"",
                )
            }
        };
        let code = req.code.unwrap_or(4003);
        if !(code == 1000 || code == 1008 || (4000..5000).contains(&code)) {
            return bad(
                ErrorCode::BadRequest,
                "\"code\" must be 1000, 1008 or 4000-4999 (default 4003)",
            );
        }
        let reason = req
            .reason
            .as_deref()
            .unwrap_or("disconnected by the server");
        if reason.len() > 120 {
            return bad(ErrorCode::BadRequest, "\"reason\" is at most 120 bytes");
        }
        if self.hub.broker().shared() {
            // Every node closes its own connections of the user.
            let survey = Survey::Disconnect {
                user: req.user.clone(),
                conn: req.conn.clone(),
                code,
                reason: reason.to_owned(),
            };
            return match self.hub.broker().survey(survey).wait().await {
                Ok(answers) => {
                    let n: u64 = answers
                        .iter()
                        .filter_map(|(_, a)| a["disconnected"].as_u64())
                        .sum();
                    ok(json!({ "disconnected": n, "nodes": answers.len() }))
                }
                Err(e) => broker_error(e),
            };
        }
        let n = self.hub.disconnect(who, CloseCode(code), reason);
        ok(json!({ "disconnected": n }))
    }

    async fn rooms(&self, query: &str) -> Response<Body> {
        let prefix = query_param(query, "prefix").unwrap_or_default();
        let mut rooms = if self.hub.broker().shared() {
            match self.hub.broker().rooms().wait().await {
                Ok(mut all) => {
                    all.retain(|(room, _)| room.starts_with(&*prefix));
                    all.sort_unstable();
                    all
                }
                Err(e) => return broker_error(e),
            }
        } else {
            self.hub.room_list(&prefix)
        };
        let truncated = rooms.len() > MAX_ROOM_LIST;
        rooms.truncate(MAX_ROOM_LIST);
        let list: Vec<Value> = rooms
            .iter()
            .map(|(room, members)| json!({ "room": &**room, "members": members }))
            .collect();
        ok(json!({ "rooms": list, "truncated": truncated }))
    }

    async fn members(&self, room: &str, query: &str) -> Response<Body> {
        let name = match self.room_in_path(room) {
            Ok(n) => n,
            Err(res) => return *res,
        };
        let cursor = match query_param(query, "cursor") {
            None => None,
            Some(c) => match c.parse::<u64>() {
                Ok(c) => Some(c),
                Err(_) => return bad(ErrorCode::BadRequest, "bad \"cursor\""),
            },
        };
        let max = self.hub.members_page_size();
        let limit = match page_limit(query, max) {
            Ok(n) => n,
            Err(res) => return *res,
        };
        let page = if self.hub.broker().shared() {
            match self.hub.broker().members(&name).wait().await {
                Ok(all) if all.is_empty() => None,
                Ok(all) => {
                    let count = all.len();
                    let after = cursor.unwrap_or(0);
                    let mut rest = all.into_iter().filter(|(seq, _)| *seq > after).peekable();
                    let mut page = Vec::new();
                    let mut last = None;
                    while page.len() < limit {
                        let Some((seq, member)) = rest.next() else {
                            break;
                        };
                        page.push(member);
                        last = Some(seq);
                    }
                    let next = rest.peek().and(last);
                    Some((page, count, next))
                }
                Err(e) => return broker_error(e),
            }
        } else {
            self.hub.member_page(&name, cursor, limit)
        };
        match page {
            None => error(
                StatusCode::NOT_FOUND,
                "not_found",
                "the room has no members",
            ),
            Some((members, count, next)) => {
                let members: Vec<Value> = members
                    .iter()
                    .filter_map(|m| serde_json::from_str(m).ok())
                    .collect();
                ok(json!({
                    "room": name,
                    "members": members,
                    "member_count": count,
                    "cursor": next.map(|n| n.to_string()),
                }))
            }
        }
    }

    /// `GET /api/rooms/{room}/history?limit=&reverse=&since_epoch=&since_offset=`.
    async fn history(&self, room: &str, query: &str) -> Response<Body> {
        let name = match self.room_in_path(room) {
            Ok(n) => n,
            Err(res) => return *res,
        };
        let max = self.hub.history_page_size();
        let limit = match page_limit(query, max) {
            Ok(n) => n,
            Err(res) => return *res,
        };
        let reverse = match query_param(query, "reverse").as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(_) => return bad(ErrorCode::BadRequest, "\"reverse\" must be true or false"),
        };
        let since = match (
            query_param(query, "since_epoch"),
            query_param(query, "since_offset"),
        ) {
            (None, None) => None,
            (Some(epoch), Some(offset)) => match offset.parse::<u64>() {
                Ok(offset) if !epoch.is_empty() && epoch.len() <= protocol::MAX_EPOCH_LEN => {
                    Some(Position {
                        epoch: epoch.as_str().into(),
                        offset,
                    })
                }
                _ => {
                    return bad(
                        ErrorCode::BadRequest,
                        "\"since_epoch\" must be an epoch and \"since_offset\" an integer >= 0",
                    )
                }
            },
            _ => {
                return bad(
                    ErrorCode::BadRequest,
                    "give both \"since_epoch\" and \"since_offset\", or neither",
                )
            }
        };
        let stream = self.stream(&name);
        if !stream.keeps() {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "this room's namespace keeps no history (history_size) and no recovery window",
            );
        }
        let query = HistoryQuery {
            since,
            limit,
            reverse,
            open: false,
        };
        match self.hub.broker().history(&name, query, stream).wait().await {
            Ok(page) => {
                let messages: Vec<Value> = page
                    .messages
                    .iter()
                    .filter_map(|p| serde_json::from_str(p.v1_json(&name)).ok())
                    .collect();
                ok(json!({
                    "room": name,
                    "epoch": &*page.position.epoch,
                    "offset": page.position.offset,
                    "messages": messages,
                }))
            }
            Err(e) => broker_error(e),
        }
    }

    async fn info(&self, counts: Counts) -> Response<Body> {
        let mut nodes = Value::Null;
        if self.hub.broker().shared() {
            match self.hub.broker().survey(Survey::Info).wait().await {
                Ok(answers) => {
                    let list: Vec<Value> = answers
                        .iter()
                        .map(|(node, a)| {
                            json!({
                                "node": node,
                                "connections": a["connections"],
                                "rooms": a["rooms"],
                            })
                        })
                        .collect();
                    let connections: u64 = answers
                        .iter()
                        .filter_map(|(_, a)| a["connections"].as_u64())
                        .sum();
                    let rooms = match self.hub.broker().rooms().wait().await {
                        Ok(r) => json!(r.len()),
                        Err(_) => Value::Null,
                    };
                    nodes = json!({ "nodes": list, "connections": connections, "rooms": rooms });
                }
                Err(e) => return broker_error(e),
            }
        }
        ok(json!({
            "node": crate::ids::node_id(),
            "cluster": nodes,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_ms": self.started.elapsed().as_millis() as u64,
            "broker": self.hub.broker_name(),
            "connections": self.hub.connection_count(),
            "rooms": self.hub.room_count(),
            "documents": counts.documents,
            "pending_connections": counts.pending_connections,
            "compression": crate::outgoing::stats(),
        }))
    }
}

/// `/api/rooms/{room}/members` → `{room}`.
/// `limit` of a page request: absent (`max`), or from 1 to `max`.
fn page_limit(query: &str, max: usize) -> Result<usize, Refusal> {
    match query_param(query, "limit") {
        None => Ok(max),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(Box::new(bad(
                ErrorCode::BadRequest,
                &format!("\"limit\" must be from 1 to {max}"),
            ))),
        },
    }
}

fn history_path(path: &str) -> Option<&str> {
    path.strip_prefix("/api/rooms/")?
        .strip_suffix("/history")
        .filter(|r| !r.is_empty() && !r.contains('/'))
}

/// 410 for a position history cannot continue from, 503 when the store failed.
fn broker_error(e: BrokerError) -> Response<Body> {
    let unrecoverable = matches!(e, BrokerError::Unrecoverable { .. });
    let f = crate::session::history_failure(e);
    let status = if unrecoverable {
        StatusCode::GONE
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    error(status, f.code.as_str(), &f.message)
}

fn members_path(path: &str) -> Option<&str> {
    path.strip_prefix("/api/rooms/")?
        .strip_suffix("/members")
        .filter(|r| !r.is_empty() && !r.contains('/'))
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Refusal> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(Box::new(bad(
            ErrorCode::BadJson,
            "the body must be a JSON object",
        )));
    }
    serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() {
            ErrorCode::BadJson
        } else {
            ErrorCode::BadRequest
        };
        Box::new(bad(code, &e.to_string()))
    })
}

/// The percent-decoded value of `name` in a query string.
/// Whether a request body is bytes (`Content-Type: application/octet-stream`) rather than
/// JSON (any other type, or none: see [`Api::body`]).
fn is_octet_stream(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/octet-stream"))
}

pub fn query_param(query: &str, name: &str) -> Option<String> {
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?;
    percent_decode(raw)
}

/// Decodes `%XX` escapes and `+` (a space, in queries).
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn ok(body: Value) -> Response<Body> {
    respond(StatusCode::OK, body)
}

/// 400 for the codes a request body earns (bad JSON, bad fields, bad room names).
fn bad(code: ErrorCode, message: &str) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, code.as_str(), message)
}

fn rate_limited(message: &str) -> Response<Body> {
    let mut res = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let mut res = json_error(status, code, message);
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn respond(status: StatusCode, body: Value) -> Response<Body> {
    let mut res = json(status, body.to_string());
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries() {
        assert_eq!(
            members_path("/api/rooms/chat:lobby/members"),
            Some("chat:lobby")
        );
        assert_eq!(members_path("/api/rooms//members"), None);
        assert_eq!(members_path("/api/rooms/a/b/members"), None);
        assert_eq!(
            query_param("prefix=chat%3A&x=1", "prefix").as_deref(),
            Some("chat:")
        );
        assert_eq!(query_param("x=1", "prefix"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
