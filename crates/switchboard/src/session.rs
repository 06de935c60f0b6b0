//! One client's protocol v1 session: parses its frames, checks limits, and turns requests
//! into hub calls. Every failure is answered with an `error` frame (or a close code) and
//! touches nothing but this connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;
use switchboard_ws::CloseCode;

use crate::connection::{Data, Flow, Handler};
use crate::hub::{not_joined, ConnHandle, Hub, JoinRequest, Room};
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
}

pub struct Session {
    hub: Arc<Hub>,
    conn: Arc<ConnHandle>,
    rooms: HashMap<Arc<str>, Arc<Room>>,
    rate: RateLimiter,
    limits: Arc<Limits>,
}

impl Session {
    /// Registers the connection and queues `welcome`.
    pub fn start(
        hub: Arc<Hub>,
        conn: Arc<ConnHandle>,
        limits: Arc<Limits>,
        heartbeat_ms: u64,
    ) -> Session {
        hub.register(conn.clone());
        let welcome = Out::new("welcome")
            .str("conn", &conn.id)
            .raw("user", "null")
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
        Session {
            rate: RateLimiter::new(
                limits.message_rate,
                limits.message_burst,
                limits.rate_limit_strikes,
            ),
            hub,
            conn,
            rooms: HashMap::new(),
            limits,
        }
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

    fn handle(&mut self, text: &[u8]) -> Result<(), (Option<i64>, Failure)> {
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
                let since = match env.since.0 {
                    None => false,
                    Some(raw) if raw.get().starts_with('{') => true,
                    Some(_) => {
                        return Err(with_id(Failure::new(
                            ErrorCode::BadRequest,
                            "\"since\" must be an object {\"epoch\", \"offset\"}",
                        )))
                    }
                };
                if !self.rooms.contains_key(&*room) && self.rooms.len() >= self.limits.max_rooms {
                    return Err(with_id(Failure::new(
                        ErrorCode::TooManyRooms,
                        format!(
                            "a connection may be in at most {} rooms",
                            self.limits.max_rooms
                        ),
                    )));
                }
                let joined = self.hub.join(
                    &self.conn,
                    &room,
                    JoinRequest {
                        id,
                        presence,
                        since,
                    },
                );
                self.rooms.insert(room.into_owned().into(), joined);
            }
            Kind::Leave => {
                let name = protocol::room_name(env.room).map_err(with_id)?;
                let room = self
                    .rooms
                    .remove(&*name)
                    .ok_or_else(|| with_id(not_joined(&name)))?;
                self.hub.leave(&self.conn, &room, id);
            }
            Kind::Publish => {
                let name = protocol::room_name(env.room).map_err(with_id)?;
                let data = env.data.0.ok_or_else(|| {
                    with_id(Failure::new(ErrorCode::BadRequest, "missing \"data\""))
                })?;
                protocol::check_relayed(data, "data", self.limits.max_json_depth)
                    .map_err(with_id)?;
                let echo = protocol::optional_bool(env.echo, "echo")
                    .map_err(with_id)?
                    .unwrap_or(true);
                let room = self
                    .rooms
                    .get(&*name)
                    .ok_or_else(|| with_id(not_joined(&name)))?;
                self.hub
                    .publish(&self.conn, room, data, echo, id)
                    .map_err(with_id)?;
            }
            Kind::Presence => {
                let name = protocol::room_name(env.room).map_err(with_id)?;
                let presence = protocol::presence_object(env.presence, true)
                    .map_err(with_id)?
                    .expect("required");
                self.check_presence(presence).map_err(with_id)?;
                let room = self
                    .rooms
                    .get(&*name)
                    .ok_or_else(|| with_id(not_joined(&name)))?;
                self.hub
                    .set_presence(&self.conn, room, presence, id)
                    .map_err(with_id)?;
            }
            Kind::Members => {
                let name = protocol::room_name(env.room).map_err(with_id)?;
                let room = self
                    .rooms
                    .get(&*name)
                    .ok_or_else(|| with_id(not_joined(&name)))?;
                let cursor = protocol::members_cursor(env.cursor).map_err(with_id)?;
                let limit =
                    protocol::optional_count(env.limit, "limit", self.hub.members_page_size())
                        .map_err(with_id)?;
                self.hub.members(&self.conn, room, cursor, limit, id);
            }
            Kind::History => {
                protocol::room_name(env.room).map_err(with_id)?;
                return Err(with_id(Failure::new(
                    ErrorCode::Unavailable,
                    "this server keeps no history yet",
                )));
            }
            Kind::Auth => {
                return Err(with_id(Failure::new(
                    ErrorCode::Unavailable,
                    "this server has no authentication configured; connections are anonymous",
                )));
            }
        }
        Ok(())
    }
}

impl Handler for Session {
    async fn on_message(&mut self, data: Data) -> Flow {
        match self.rate.check(Instant::now()) {
            Verdict::Allow => {}
            Verdict::Limit => {
                let id = match &data {
                    Data::Text(text) => protocol::peek_id(text),
                    Data::Binary(_) => None,
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
            Data::Text(text) => {
                if let Err((id, failure)) = self.handle(&text) {
                    self.fail(id, failure);
                }
            }
            Data::Binary(_) => self.fail(
                None,
                Failure::new(
                    ErrorCode::BadRequest,
                    "binary frames are reserved for the binary encoding; send JSON text frames",
                ),
            ),
        }
        Flow::Continue
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
        let rooms: Vec<Arc<Room>> = self.rooms.drain().map(|(_, r)| r).collect();
        self.hub.unregister(&self.conn, rooms);
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
