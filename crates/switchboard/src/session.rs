//! One client's protocol v1 session: parses its frames, checks limits, and turns requests
//! into hub calls. Every failure is answered with an `error` frame (or a close code) and
//! touches nothing but this connection.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;
use switchboard_ws::CloseCode;

use crate::auth::{Access, Identity, Perm, RoomGrant, TokenError};
use crate::broker::{BrokerError, HistoryQuery, Payload, Pending, Published, StreamOptions};
use crate::config::PresenceMode;
use crate::connection::{Data, Flow, Handler};
use crate::hub::{
    free_if_empty, make_room_sparingly, not_joined, ConnHandle, Hub, Join, JoinRequest, Room,
};
use crate::protocol::{self, error_frame, ErrorCode, Failure, Kind, Out};
use crate::rate::{RateLimiter, Verdict};

/// Close code for a client that keeps sending while rate limited.
pub const RATE_LIMIT_CLOSE: CloseCode = CloseCode(4008);

/// The per-session limits, from the config.
#[derive(Debug, Clone)]
pub struct Limits {
    pub message_rate: u32,
    pub message_burst: u32,
    pub rate_limit_strikes: u32,
    pub max_rooms: usize,
    pub reconnect_hint_ms: u64,
    /// Most bytes of one member's presence JSON.
    pub max_presence_size: usize,
    /// Deepest nesting relayed in `data` and `presence`.
    pub max_json_depth: usize,
    /// How long a connection may stay after its token's `exp` without a refresh.
    pub token_expiry_grace: std::time::Duration,
}

pub struct Session {
    hub: Arc<Hub>,
    conn: Arc<ConnHandle>,
    rooms: JoinedRooms,
    rate: RateLimiter,
    limits: Arc<Limits>,
    access: Arc<Access>,
    /// The verified connection token, once the client presented one.
    identity: Option<Arc<Identity>>,
    /// When the connection must be closed with 4010 for want of a fresh token.
    expires: Option<tokio::time::Instant>,
}

/// A room this connection is in.
struct Joined {
    room: Arc<Room>,
    /// What the room token it joined with granted, if it used one.
    grant: Option<RoomGrant>,
    /// How the room's stream is kept (its namespace's options).
    stream: StreamOptions,
}

/// The rooms a connection is in, by name: a list, not a hash map. Connections are in a few
/// rooms (at most `max_rooms`), often one, and an empty hash map takes no memory but one
/// with a single room takes a table of four (~380 bytes): at 19,000 connections with a room
/// each, the list saves ~6 MB.
#[derive(Default)]
struct JoinedRooms(Vec<(Arc<str>, Joined)>);

impl JoinedRooms {
    fn get(&self, name: &str) -> Option<&Joined> {
        self.0.iter().find(|(n, _)| &**n == name).map(|(_, j)| j)
    }

    fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds the room, or replaces what was kept for it.
    fn insert(&mut self, name: Arc<str>, joined: Joined) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, j)) => *j = joined,
            None => {
                make_room_sparingly(&mut self.0);
                self.0.push((name, joined));
            }
        }
    }

    fn remove(&mut self, name: &str) -> Option<Joined> {
        let at = self.0.iter().position(|(n, _)| &**n == name)?;
        let (_, joined) = self.0.swap_remove(at);
        free_if_empty(&mut self.0); // a connection that left its rooms holds no list
        Some(joined)
    }

    fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Joined)> {
        self.0.iter().map(|(n, j)| (n, j))
    }

    fn drain(&mut self) -> impl Iterator<Item = (Arc<str>, Joined)> + '_ {
        self.0.drain(..)
    }
}

/// Close code for a bad token in an `auth` frame.
pub const UNAUTHORIZED_CLOSE: CloseCode = CloseCode(4001);
/// Close code for a token that expired (in an `auth` frame, or without a refresh).
pub const TOKEN_EXPIRED_CLOSE: CloseCode = CloseCode(4010);

impl Session {
    /// Registers the connection and queues `welcome`. `identity` comes from a token on the
    /// URL or in the `Authorization` header, already verified at the handshake.
    pub fn start(
        hub: Arc<Hub>,
        conn: Arc<ConnHandle>,
        limits: Arc<Limits>,
        access: Arc<Access>,
        identity: Option<Identity>,
        heartbeat_ms: u64,
    ) -> Session {
        hub.register(conn.clone());
        let mut welcome = Out::new("welcome").str("conn", &conn.id);
        welcome = match &identity {
            Some(id) => welcome.str("user", &id.user),
            None => welcome.raw("user", "null"),
        };
        let welcome = welcome
            .uint("heartbeat_ms", heartbeat_ms)
            .raw(
                "server",
                concat!(
                    "{\"name\":\"switchboard\",\"version\":\"",
                    env!("CARGO_PKG_VERSION"),
                    "\"}"
                ),
            )
            .finish();
        conn.send(&welcome);
        let mut session = Session {
            rate: RateLimiter::new(
                limits.message_rate,
                limits.message_burst,
                limits.rate_limit_strikes,
            ),
            hub,
            conn,
            rooms: JoinedRooms::default(),
            limits,
            access,
            identity: None,
            expires: None,
        };
        if let Some(id) = identity {
            session.set_identity(id);
        }
        session
    }

    fn set_identity(&mut self, id: Identity) {
        let grace = self.limits.token_expiry_grace;
        self.expires = Some(tokio::time::Instant::from_std(id.expiry_instant() + grace));
        self.conn.set_user(Some(id.user.clone()));
        self.identity = Some(Arc::new(id));
    }

    /// A presence state must be small enough for every member list it appears in, and
    /// parseable by every member's client.
    fn check_presence(&self, presence: &RawValue) -> Result<(), Failure> {
        let max = self.limits.max_presence_size;
        if presence.get().len() > max {
            return Err(Failure::new(
                ErrorCode::TooLarge,
                format!(
                    "\"presence\" is {} bytes; at most {max} are allowed",
                    presence.get().len()
                ),
            ));
        }
        protocol::check_relayed(presence, "presence", self.limits.max_json_depth)
    }

    fn fail(&self, id: Option<i64>, failure: Failure) {
        self.conn.send(&error_frame(id, &failure));
    }

    /// The joined room `field` names, checked for `perm`: the one place a request on a room
    /// this connection is in finds it and asks whether it may.
    fn joined(&self, field: protocol::Field<'_>, perm: Perm) -> Result<&Joined, Failure> {
        let name = protocol::room_name(field)?;
        let joined = self.rooms.get(&name).ok_or_else(|| not_joined(&name))?;
        self.access
            .check(self.identity.as_deref(), joined.grant.as_ref(), &name, perm)?;
        Ok(joined)
    }

    async fn handle(&mut self, text: &[u8]) -> Result<Flow, (Option<i64>, Failure)> {
        let (env, id, kind) = protocol::parse(text)?;
        let with_id = |f: Failure| (id, f);
        match kind {
            Kind::Ping => {
                if id.is_some() {
                    self.conn.send(&Out::new("pong").opt_id(id).finish());
                }
            }
            Kind::Join => {
                let room = protocol::room_name(env.room).map_err(with_id)?;
                let presence = protocol::presence_object(env.presence, false).map_err(with_id)?;
                if let Some(p) = presence {
                    self.check_presence(p).map_err(with_id)?;
                }
                let since = protocol::since(env.since).map_err(with_id)?;
                let grant = match protocol::optional_str(env.token, "token").map_err(with_id)? {
                    None => None,
                    Some(token) => Some(self.room_grant(&token, &room).map_err(with_id)?),
                };
                let ns = self
                    .access
                    .check(self.identity.as_deref(), grant.as_ref(), &room, Perm::Join)
                    .map_err(with_id)?;
                if !self.rooms.contains_key(&room) && self.rooms.len() >= self.limits.max_rooms {
                    return Err(with_id(Failure::new(
                        ErrorCode::TooManyRooms,
                        format!(
                            "a connection may be in at most {} rooms",
                            self.limits.max_rooms
                        ),
                    )));
                }
                let identity = self.identity.as_deref();
                let info = grant
                    .as_ref()
                    .and_then(|g| g.info.clone())
                    .or_else(|| identity.and_then(|i| i.info.clone()));
                let stream = self.hub.stream_options(&ns);
                let recovering = since.is_some();
                let step = self.hub.join(
                    &self.conn,
                    &room,
                    JoinRequest {
                        id,
                        user: identity.map(|i| i.user.clone()),
                        info,
                        announce: ns.presence,
                        presence,
                        since: since.clone(),
                        stream,
                    },
                );
                let (joined, pending) = match step {
                    Join::Done(r) => (r, false),
                    Join::Pending(r) => (r, true),
                };
                // The room's own name: no copy of it per member.
                let name = joined.shared_name();
                // In the map before anything is awaited: if the connection ends meanwhile,
                // its close takes the member out.
                self.rooms.insert(
                    name.clone(),
                    Joined {
                        room: joined.clone(),
                        grant,
                        stream,
                    },
                );
                if pending {
                    // What was missed (with `since`), or only the room's position.
                    let query = HistoryQuery {
                        since,
                        limit: if recovering {
                            self.hub.replies().max_recovery_messages.saturating_add(1)
                        } else {
                            0
                        },
                        reverse: false,
                        open: true,
                    };
                    let read = wait(self.hub.broker().history(&name, query, stream)).await;
                    if let Err(f) = self
                        .hub
                        .finish_join(&self.conn, &joined, id, recovering, read)
                    {
                        self.rooms.remove(&name);
                        return Err(with_id(f));
                    }
                }
            }
            Kind::Leave => {
                let name = protocol::room_name(env.room).map_err(with_id)?;
                let joined = self
                    .rooms
                    .remove(&name)
                    .ok_or_else(|| with_id(not_joined(&name)))?;
                self.hub.leave(&self.conn, &joined.room, id, None);
            }
            Kind::Publish => {
                let data = env.data.0.ok_or_else(|| {
                    with_id(Failure::new(ErrorCode::BadRequest, "missing \"data\""))
                })?;
                protocol::check_relayed(data, "data", self.limits.max_json_depth)
                    .map_err(with_id)?;
                self.publish(&env, id, Payload::Json(data.get().into()))
                    .map_err(with_id)?;
            }
            Kind::Presence => {
                let presence = protocol::presence_object(env.presence, true)
                    .map_err(with_id)?
                    .expect("required");
                self.check_presence(presence).map_err(with_id)?;
                let joined = self.joined(env.room, Perm::Presence).map_err(with_id)?;
                self.hub
                    .set_presence(&self.conn, &joined.room, presence, id)
                    .map_err(with_id)?;
            }
            Kind::Members => {
                // Who is here is part of joining; a namespace without presence has no list.
                let joined = self.joined(env.room, Perm::Join).map_err(with_id)?;
                let room = &joined.room;
                if self
                    .access
                    .namespace(room.name())
                    .map_err(with_id)?
                    .presence
                    != PresenceMode::Full
                {
                    return Err(with_id(Failure::new(
                        ErrorCode::Forbidden,
                        "this room's namespace has no member list (presence is count or off)",
                    )));
                }
                let cursor = protocol::members_cursor(env.cursor).map_err(with_id)?;
                let limit =
                    protocol::optional_count(env.limit, "limit", self.hub.members_page_size())
                        .map_err(with_id)?;
                self.hub.members(&self.conn, room, cursor, limit, id);
            }
            Kind::History => {
                let name = protocol::room_name(env.room).map_err(with_id)?;
                let grant = self.rooms.get(&name).and_then(|j| j.grant.as_ref());
                let ns = self
                    .access
                    .check(self.identity.as_deref(), grant, &name, Perm::History)
                    .map_err(with_id)?;
                let stream = self.hub.stream_options(&ns);
                let page_size = self.hub.history_page_size();
                let query = HistoryQuery {
                    since: protocol::since(env.since).map_err(with_id)?,
                    limit: protocol::optional_count(env.limit, "limit", page_size)
                        .map_err(with_id)?
                        .unwrap_or(page_size),
                    reverse: protocol::optional_bool(env.reverse, "reverse")
                        .map_err(with_id)?
                        .unwrap_or(false),
                    open: false,
                };
                if !stream.keeps() {
                    return Err(with_id(Failure::new(
                        ErrorCode::Unavailable,
                        "this room's namespace keeps no history (history_size) and no recovery window",
                    )));
                }
                if id.is_none() {
                    return Ok(Flow::Continue); // no id, no reply
                }
                let page = wait(self.hub.broker().history(&name, query, stream))
                    .await
                    .map_err(|e| with_id(history_failure(e)))?;
                // A page fits the client's queue: at most a quarter of it (at least one
                // message); the client pages on with `since`.
                let budget = self.hub.replies().recovery_bytes;
                let mut bytes = 0;
                let messages = page
                    .messages
                    .iter()
                    .map(|p| p.v1_json(&name))
                    .take_while(|m| {
                        bytes += m.len() + 1;
                        bytes == m.len() + 1 || bytes <= budget
                    });
                let reply = Out::new("history")
                    .opt_id(id)
                    .str("room", &name)
                    .str("epoch", &page.position.epoch)
                    .uint("offset", page.position.offset)
                    .raw_list("messages", messages)
                    .finish();
                self.conn.send(&reply);
            }
            Kind::Auth => return Ok(self.auth(env.token, id)),
        }
        Ok(Flow::Continue)
    }

    /// A publish of `data` (a text frame's JSON, or a binary frame's bytes) as `env` asks:
    /// the same checks, permissions and answers for both.
    fn publish(
        &self,
        env: &protocol::Envelope<'_>,
        id: Option<i64>,
        data: Payload,
    ) -> Result<(), Failure> {
        let echo = protocol::optional_bool(env.echo, "echo")?.unwrap_or(true);
        let key = protocol::publish_key(env.key)?;
        let joined = self.joined(env.room, Perm::Publish)?;
        let pending = self
            .hub
            .publish(&self.conn, &joined.room, data, echo, key, joined.stream)?;
        match pending {
            Pending::Ready(result) => answer_publish(&self.conn, id, result),
            // On disk before `ok`: the connection goes on reading meanwhile, so a client
            // that pipelines publishes is not held to one commit each.
            waiting => {
                let conn = self.conn.clone();
                tokio::spawn(async move {
                    answer_publish(&conn, id, wait(waiting).await);
                });
            }
        }
        Ok(())
    }

    /// A binary frame: a `publish` whose data is the bytes after its header.
    fn handle_binary(&self, frame: &[u8]) -> Result<(), (Option<i64>, Failure)> {
        let ((env, id, _), payload) = protocol::parse_binary(frame)?;
        // Copied, as a text publish's `data` is: a slice of the frame could keep the whole
        // read buffer it came in alive for as long as the message is kept in a window.
        self.publish(&env, id, Payload::Binary(Bytes::copy_from_slice(payload)))
            .map_err(|f| (id, f))
    }

    fn room_grant(&self, token: &str, room: &str) -> Result<RoomGrant, Failure> {
        let verifier = self.access.verifier.as_ref().ok_or_else(|| {
            Failure::new(
                ErrorCode::BadRequest,
                "this server checks no tokens (none is configured): join without one",
            )
        })?;
        let user = self
            .identity
            .as_ref()
            .map(|i| i.user.clone())
            .ok_or_else(|| {
                Failure::new(
                    ErrorCode::Unauthorized,
                    "a room token needs an authenticated connection (its `sub` must be yours)",
                )
            })?;
        verifier
            .room(token, &user, room)
            .map_err(|e| Failure::new(ErrorCode::Forbidden, e.message()))
    }

    /// `auth`: the first token of a connection, or a refresh before the current one expires.
    fn auth(&mut self, token: protocol::Field<'_>, id: Option<i64>) -> Flow {
        let Some(verifier) = self.access.verifier.as_ref() else {
            self.fail(
                id,
                Failure::new(
                    ErrorCode::Unavailable,
                    "this server has no token key configured; connections are anonymous",
                ),
            );
            return Flow::Continue;
        };
        let token = match protocol::optional_str(token, "token") {
            Ok(Some(t)) => t,
            Ok(None) => {
                self.fail(id, Failure::new(ErrorCode::BadRequest, "missing \"token\""));
                return Flow::Continue;
            }
            Err(f) => {
                self.fail(id, f);
                return Flow::Continue;
            }
        };
        let identity = match verifier.connection(&token) {
            Ok(identity) => identity,
            Err(e) => {
                self.fail(id, Failure::new(ErrorCode::Unauthorized, e.message()));
                let code = match e {
                    TokenError::Expired => TOKEN_EXPIRED_CLOSE,
                    TokenError::Invalid(_) => UNAUTHORIZED_CLOSE,
                };
                return Flow::Close(code, e.code().to_owned());
            }
        };
        if let Some(current) = &self.identity {
            if current.user != identity.user {
                self.fail(
                    id,
                    Failure::new(
                        ErrorCode::Forbidden,
                        "a refreshed token must be for the same user (`sub`); reconnect to change users",
                    ),
                );
                return Flow::Continue;
            }
        }
        let reply = Out::new("ok")
            .opt_id(id)
            .str("user", &identity.user)
            .uint("expires_at", identity.expires_at);
        let reply = match &identity.info {
            Some(info) => reply.raw("info", info),
            None => reply.raw("info", "null"),
        };
        self.set_identity(identity);
        if id.is_some() {
            self.conn.send(&reply.finish());
        }
        // Rooms the new token no longer allows are left, with the reason.
        let lost: Vec<Arc<str>> = self
            .rooms
            .iter()
            .filter(|(name, j)| {
                self.access
                    .check(self.identity.as_deref(), j.grant.as_ref(), name, Perm::Join)
                    .is_err()
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in lost {
            if let Some(joined) = self.rooms.remove(&name) {
                self.hub.leave(
                    &self.conn,
                    &joined.room,
                    None,
                    Some("the refreshed token does not allow this room"),
                );
            }
        }
        Flow::Continue
    }
}

impl Handler for Session {
    async fn on_message(&mut self, data: Data) -> Flow {
        match self.rate.check(Instant::now()) {
            Verdict::Allow => {}
            Verdict::Limit => {
                let id = match &data {
                    Data::Text(text) => protocol::peek_id(text),
                    Data::Binary(frame) => match protocol::parse_binary(frame) {
                        Ok(((_, id, _), _)) | Err((id, _)) => id,
                    },
                };
                self.fail(
                    id,
                    Failure::new(
                        ErrorCode::RateLimited,
                        format!(
                            "more than {} messages per second; this message was dropped",
                            self.limits.message_rate
                        ),
                    ),
                );
                return Flow::Continue;
            }
            Verdict::Close => {
                return Flow::Close(RATE_LIMIT_CLOSE, "rate limit exceeded repeatedly".into())
            }
        }
        match data {
            Data::Text(text) => match self.handle(&text).await {
                Ok(flow) => return flow,
                Err((id, failure)) => self.fail(id, failure),
            },
            Data::Binary(frame) => {
                if let Err((id, failure)) = self.handle_binary(&frame) {
                    self.fail(id, failure);
                }
            }
        }
        Flow::Continue
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.expires
    }

    fn on_deadline(&mut self) -> Flow {
        self.fail(
            None,
            Failure::new(
                ErrorCode::Unauthorized,
                "token expired: refresh it with an `auth` frame before `exp`",
            ),
        );
        Flow::Close(TOKEN_EXPIRED_CLOSE, "token expired".into())
    }

    fn on_shutdown(&mut self) {
        self.conn.send(
            &Out::new("shutdown")
                .str("reason", "server shutting down")
                .uint("reconnect_ms", self.limits.reconnect_hint_ms)
                .finish(),
        );
    }

    async fn on_close(&mut self) {
        let rooms: Vec<Arc<Room>> = self.rooms.drain().map(|(_, j)| j.room).collect();
        self.hub.unregister(&self.conn, rooms);
    }
}

/// How long a request waits for the broker (a stalled disk, an unreachable Redis) before it
/// is answered `unavailable`.
const BROKER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn wait<T>(pending: Pending<T>) -> Result<T, BrokerError> {
    match tokio::time::timeout(BROKER_TIMEOUT, pending.wait()).await {
        Ok(r) => r,
        Err(_) => Err(BrokerError::Unavailable(
            "the history store did not answer in time".to_owned(),
        )),
    }
}

/// Answers a publish: `ok` with its offset (and `duplicate` for a repeated key), or the
/// error that kept it from being stored and delivered.
fn answer_publish(conn: &ConnHandle, id: Option<i64>, result: Result<Published, BrokerError>) {
    match result {
        Ok(p) => {
            if id.is_some() {
                let mut ok = Out::new("ok").opt_id(id).uint("offset", p.offset);
                if p.duplicate {
                    ok = ok.bool("duplicate", true);
                }
                conn.send(&ok.finish());
            }
        }
        Err(e) => conn.send(&error_frame(id, &history_failure(e))),
    }
}

/// The error a client is told when the broker cannot do what it asked.
pub fn history_failure(e: BrokerError) -> Failure {
    match e {
        BrokerError::Unrecoverable { reason, position } => Failure::new(
            ErrorCode::UnrecoverablePosition,
            format!(
                "cannot continue from that position ({}); the room is at epoch {:?}, offset {}",
                reason.as_str(),
                position.epoch,
                position.offset
            ),
        ),
        BrokerError::Unavailable(why) => Failure::new(ErrorCode::Unavailable, why),
    }
}

/// The `/echo` endpoint's handler: every message comes back as it went out.
pub struct Echo<'a>(pub &'a ConnHandle);

impl Handler for Echo<'_> {
    async fn on_message(&mut self, data: Data) -> Flow {
        let frame = match data {
            // The decoder has checked that text is UTF-8.
            Data::Text(b) => switchboard_ws::Frame::unmasked(switchboard_ws::OpCode::Text, &b),
            Data::Binary(b) => switchboard_ws::Frame::binary(&b),
        };
        self.0.send(&frame);
        Flow::Continue
    }

    async fn on_close(&mut self) {}
}
