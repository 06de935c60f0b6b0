//! The listener: accepts TCP connections, serves HTTP on each (WebSocket upgrades, health,
//! static files), enforces connection limits and runs the graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use switchboard_ws::{deflate, handshake};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

use crate::api::{self, Api};
use crate::auth::{Access, Identity, Perm, TokenError};
use crate::broker::{Broker, Policy};
use crate::config::Config;
use crate::connection::{self, Driver, Ending, Settings};
use crate::documents::{self, DocSettings, Documents};
use crate::hub::{ConnHandle, Hub, Pacing, ReplyLimits};
use crate::ids;
use crate::limits::{self, ConnectionLimits, PendingLimits, Slot};
use crate::outbox::Outbox;
use crate::outgoing::{self, Compression};
use crate::protocol::{ErrorCode, SUBPROTOCOL};
use crate::responses::{bearer, json, json_error, method_not_allowed, Body};
use crate::session::{Echo, Limits, Session};
use crate::socket::Socket;
use crate::tls::{Tls, TlsSocket};
use crate::web;

/// What the server listens on: the one listener (TLS when `tls` is given), and the plain
/// `tls_redirect` listener.
pub struct Listeners {
    pub main: TcpListener,
    pub tls: Option<Arc<Tls>>,
    pub redirect: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(main: TcpListener) -> Listeners {
        Listeners {
            main,
            tls: None,
            redirect: None,
        }
    }
}

/// Everything a connection task needs, shared.
struct Shared {
    config: Config,
    hub: Arc<Hub>,
    limits: Arc<ConnectionLimits>,
    access: Arc<Access>,
    api: Api,
    /// HTTP connections that are not WebSockets (yet).
    pending: Arc<PendingLimits>,
    session_limits: Arc<Limits>,
    settings: Settings,
    documents: Arc<Documents>,
    /// `settings` for document connections: their messages may be up to `max_update_size`.
    doc_settings: Settings,
    /// The listener speaks TLS.
    tls: Option<Arc<Tls>>,
    shutdown: watch::Receiver<bool>,
    /// Held by every connection task; the server waits for all clones to drop.
    drained: mpsc::Sender<()>,
}

/// Runs the server on `listener` until `signal` resolves, then shuts down gracefully:
/// stop accepting, tell every client (`shutdown`, then close 1001), and wait up to the
/// shutdown timeout for them to drain.
pub async fn serve(
    mut config: Config,
    access: Access,
    broker: Arc<dyn Broker>,
    listeners: impl Into<Listeners>,
    signal: impl Future<Output = ()>,
) {
    let Listeners {
        main: listener,
        tls,
        redirect,
    } = listeners.into();
    if !access.secured() {
        warn!(
            "no token key configured (token_hmac_secret, token_public_key or token_jwks): \
             the server runs open, anyone who can reach it may join any room and edit any document"
        );
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (drained_tx, mut drained_rx) = mpsc::channel::<()>(1);
    fit_connection_limits(&mut config);
    let access = Arc::new(access);
    let hub = Hub::new(
        broker.clone(),
        ReplyLimits {
            members_page_size: config.members_page_size,
            // A quarter of the queue: a reply always fits beside what else is queued.
            members_page_bytes: config.max_outbound_queue / 4,
            max_recovery_messages: config.max_recovery_messages,
            recovery_bytes: config.max_outbound_queue / 4,
            presence: Pacing {
                interval: config.presence_interval,
                max: config.presence_interval_max,
            },
        },
        history_policy(&config),
    );
    let shared = Arc::new(Shared {
        limits: ConnectionLimits::new(config.max_connections, config.max_connections_per_ip),
        pending: PendingLimits::new(
            config.max_pending_connections,
            config.max_pending_connections_per_ip,
        ),
        session_limits: Arc::new(Limits {
            message_rate: config.message_rate,
            message_burst: config.message_burst,
            rate_limit_strikes: config.rate_limit_strikes,
            max_rooms: config.max_rooms_per_connection,
            reconnect_hint_ms: 1000,
            max_presence_size: config.max_presence_size,
            max_json_depth: config.max_json_depth,
            token_expiry_grace: config.token_expiry_grace,
        }),
        api: Api::new(
            hub.clone(),
            access.clone(),
            config.api_keys.clone(),
            config.max_message_size,
            config.max_json_depth,
            config.api_rate,
        ),
        access,
        settings: Settings {
            max_message_size: config.max_message_size,
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_timeout: config.heartbeat_timeout,
            write_timeout: config.write_timeout,
        },
        documents: Documents::new(DocSettings {
            data_dir: config.data_dir.clone(),
            max_document_size: config.max_document_size,
            max_update_size: config.max_update_size,
            max_connections_per_document: config.max_connections_per_document,
            max_awareness_state_size: config.max_awareness_state_size,
            max_awareness_per_document: config.max_awareness_per_document,
            max_sync_queued_per_document: config.max_sync_queued_per_document,
            sync_timeout: config.document_sync_timeout,
            message_rate: config.message_rate,
            message_burst: config.message_burst,
            rate_limit_strikes: config.rate_limit_strikes,
        }),
        doc_settings: Settings {
            max_message_size: config.max_update_size,
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_timeout: config.heartbeat_timeout,
            write_timeout: config.write_timeout,
        },
        hub,
        tls: tls.clone(),
        shutdown: shutdown_rx,
        drained: drained_tx,
        config,
    });
    // The certificate is reloaded on SIGHUP and when its files change.
    let watcher = tls.map(Tls::watch);
    let redirector = redirect.map(|r| {
        let https_port = listener.local_addr().map_or(443, |a| a.port());
        tokio::spawn(serve_redirects(shared.clone(), r, https_port))
    });

    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move { serve_http(shared, stream, peer).await });
                }
                Err(e) => {
                    // Out of file descriptors, usually: back off briefly instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }

    let open = shared.hub.connection_count();
    info!(connections = open, "shutting down");
    drop(listener);
    if let Some(w) = watcher {
        w.abort();
    }
    if let Some(r) = redirector {
        // Its task holds `shared`, and so the drain: stop it first.
        r.abort();
        let _ = r.await;
    }
    let _ = shutdown_tx.send(true);
    // Every connection learns it through its outbox (see `told_if_shutting_down`).
    shared.hub.shut_down_connections();
    let timeout = shared.config.shutdown_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let documents = shared.documents.clone();
    drop(shared);
    match tokio::time::timeout(timeout, drained_rx.recv()).await {
        Ok(_) => info!("all connections closed"),
        Err(_) => warn!(
            timeout_ms = timeout.as_millis() as u64,
            "shutdown timeout: closing remaining connections"
        ),
    }
    // Documents compact when their last connection leaves; let them finish.
    if tokio::time::timeout_at(deadline, documents.closed())
        .await
        .is_err()
    {
        warn!(
            open = documents.open_count(),
            "shutdown timeout: documents still closing (their updates are stored)"
        );
    }
    // Every connection is closed: no publish can come after the windows are saved.
    let _ = tokio::task::spawn_blocking(move || broker.shutdown()).await;
}

/// The history settings of `config`.
pub fn history_policy(config: &Config) -> Policy {
    Policy {
        disk: config.history_storage == crate::config::HistoryStorage::Disk,
        window_size: config.recovery_window_size,
        window_ttl_ms: config.recovery_window_ttl.as_millis() as u64,
        key_window_ms: config.idempotency_window.as_millis() as u64,
        page_size: config.history_page_size,
    }
}

/// Opens the broker `config` asks for: Redis, shared with other nodes, with `redis_url`;
/// else this node's streams, with the history store when some namespace keeps history on
/// disk. An unreadable store or an unreachable Redis stops start-up, naming it.
pub async fn open_broker(config: &Config) -> anyhow::Result<Arc<dyn Broker>> {
    if let Some(url) = &config.redis_url {
        let options = crate::broker::redis::RedisOptions {
            node_timeout: config.node_timeout,
        };
        let urls: Vec<&str> = url.split(',').map(str::trim).collect();
        if urls.len() > 1 {
            let redis = crate::broker::redis::ShardedRedis::connect(&urls, options)
                .await
                .map_err(anyhow::Error::msg)?;
            return Ok(Arc::new(redis));
        }
        let redis = crate::broker::redis::RedisBroker::connect(url, options)
            .await
            .map_err(anyhow::Error::msg)?;
        return Ok(Arc::new(redis));
    }
    let policy = history_policy(config);
    let durable_rooms = config.namespaces.as_ref().is_some_and(|table| {
        table
            .values()
            .any(|o| policy.stream(&crate::auth::Namespace::from(o)).durable)
    });
    let storage = crate::broker::Storage {
        disk: policy.disk,
        data_dir: config.data_dir.clone(),
        durable_rooms,
    };
    let local = crate::broker::Local::open(&storage).map_err(anyhow::Error::msg)?;
    Ok(Arc::new(local))
}

/// Lowers the connection limits, with a warning, where the process may not open enough files
/// for them (see [`limits::fit_to_fds`]).
fn fit_connection_limits(config: &mut Config) {
    let Some(fds) = limits::raise_fd_limit() else {
        return;
    };
    let (connections, pending) =
        limits::fit_to_fds(config.max_connections, config.max_pending_connections, fds);
    if connections < config.max_connections || pending < config.max_pending_connections {
        warn!(
            open_files = fds,
            max_connections = connections,
            max_pending_connections = pending,
            "connection limits lowered to fit the open-file limit (raise `ulimit -n` for more)"
        );
        config.max_connections = connections;
        config.max_pending_connections = pending;
    }
}

async fn serve_http(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    // Counted from the moment it is accepted: a connection that never sends a request holds
    // a file descriptor and memory like any other (a TLS handshake in progress too).
    let (slot, evicted) = shared.pending.admit(peer.ip());
    if evicted > 0 {
        debug!(remote = %peer, evicted, "pending connection limit reached: closed the oldest");
    }
    let Some(tls) = shared.tls.clone() else {
        return serve_http_on(shared, TokioIo::new(stream), peer, slot).await;
    };
    let drained = shared.drained.clone();
    let mut shutdown = shared.shutdown.clone();
    // The TLS handshake has the handshake timeout (then the request head has it again).
    let timeout = shared.config.handshake_timeout;
    let accepted = tokio::select! {
        // Boxed: the handshake's state should not widen every plain connection's task.
        r = tokio::time::timeout(timeout, Box::pin(tls.accept(stream))) => r,
        _ = slot.evicted.notified() => {
            debug!(remote = %peer, "TLS handshake closed to make room for a newer connection");
            return;
        }
        _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
    };
    match accepted {
        Ok(Ok(stream)) => serve_http_on(shared, TokioIo::new(stream), peer, slot).await,
        Ok(Err(e)) => debug!(remote = %peer, error = %e, "TLS handshake failed"),
        Err(_) => debug!(
            remote = %peer,
            timeout_ms = timeout.as_millis() as u64,
            "TLS handshake timed out"
        ),
    }
    drop(drained);
}

/// Serves HTTP on one connection, plain or TLS.
async fn serve_http_on<I>(shared: Arc<Shared>, io: I, peer: SocketAddr, slot: limits::PendingSlot)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut shutdown = shared.shutdown.clone();
    let drained = shared.drained.clone();
    let service = {
        let shared = shared.clone();
        hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(route(shared, req, peer).await) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.handshake_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                debug!(remote = %peer, error = %e, "http connection ended");
            }
        }
        _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = slot.evicted.notified() => {}
            }
        }
        _ = slot.evicted.notified() => {
            debug!(remote = %peer, "closed to make room for a newer connection");
        }
    }
    drop(slot);
    drop(drained);
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path();
    if path == "/api" || path.starts_with("/api/") {
        let counts = || api::Counts {
            pending_connections: shared.pending.count(),
            documents: shared.documents.open_count(),
        };
        return shared.api.handle(req, peer.ip(), counts).await;
    }
    match path {
        "/ws" => upgrade(shared, req, peer, Endpoint::Protocol),
        "/echo" if shared.config.echo_endpoint => upgrade(shared, req, peer, Endpoint::Echo),
        "/healthz" => {
            // The details for anyone with `health_details`, or for a request with an API key.
            let details = shared.config.health_details
                || (req.headers().contains_key(header::AUTHORIZATION)
                    && shared.api.authorized(&req, peer.ip()));
            health(&shared, req.method(), details)
        }
        p if p == "/yjs" || p.starts_with("/yjs/") => match documents::doc_name(p) {
            Some(name) => {
                let endpoint = Endpoint::Document {
                    name: name.into(),
                    read_only: false,
                };
                upgrade(shared, req, peer, endpoint)
            }
            None => json_error(
                StatusCode::BAD_REQUEST,
                "invalid_document",
                documents::NAME_RULE,
            ),
        },
        _ => static_file(req.method(), path),
    }
}

#[derive(Clone)]
enum Endpoint {
    Protocol,
    Echo,
    /// `/yjs/{doc}`: the y-websocket protocol on one document; `read_only` when the
    /// client may `join` the document's room but not `publish` (edit).
    Document {
        name: Arc<str>,
        read_only: bool,
    },
}

fn upgrade(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
    mut endpoint: Endpoint,
) -> Response<Body> {
    if req.method() != Method::GET {
        return method_not_allowed("GET");
    }
    let up = match handshake::validate_request(
        req.method().as_str(),
        req.version() >= Version::HTTP_11,
        req.headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
    ) {
        Ok(up) => up,
        Err(e) => {
            let mut res = json_error(
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                "bad_handshake",
                &e.to_string(),
            );
            if e.status() == 426 {
                res.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            return res;
        }
    };
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let origin = origin.to_str().unwrap_or("");
        if !origin_allowed(shared.config.allowed_origins.as_deref(), origin, host) {
            warn!(remote = %peer, origin = %origin, path = %req.uri().path(), "WebSocket refused: origin not allowed");
            return json_error(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                "pages of this origin may not open WebSockets here (see allowed_origins)",
            );
        }
    }
    let identity = match handshake_identity(&shared, &req) {
        Ok(identity) => identity,
        Err(e) => {
            debug!(remote = %peer, error = %e.message(), "WebSocket refused: bad token");
            return json_error(StatusCode::UNAUTHORIZED, e.code(), &e.message());
        }
    };
    if let Endpoint::Document { name, read_only } = &mut endpoint {
        // A document is a room for permissions: `join` reads it, `publish` edits it.
        if let Err(f) = shared
            .access
            .check(identity.as_ref(), None, name, Perm::Join)
        {
            let status = match f.code {
                ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidRoom => StatusCode::NOT_FOUND,
                _ => StatusCode::FORBIDDEN,
            };
            return json_error(status, f.code.as_str(), &f.message);
        }
        *read_only = shared
            .access
            .check(identity.as_ref(), None, name, Perm::Publish)
            .is_err();
    }
    let protocol = match endpoint {
        Endpoint::Echo | Endpoint::Document { .. } => None,
        Endpoint::Protocol => match up.pick_protocol(&[SUBPROTOCOL]) {
            Some(p) => Some(p),
            None if up.protocols.is_empty() => None,
            None => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_handshake",
                    "unsupported subprotocol: this endpoint speaks switchboard.v1",
                )
            }
        },
    };
    // permessage-deflate: the first acceptable offer, answered with
    // server_no_context_takeover (one deflated frame serves a whole room) and
    // client_no_context_takeover (no inflate state kept between messages).
    let compression = if shared.config.compression {
        deflate::negotiate(&up.extensions, deflate::Policy::default()).map(|params| Compression {
            params,
            level: shared.config.compression_level,
            threshold: shared.config.compression_threshold,
        })
    } else {
        None
    };
    if *shared.shutdown.borrow() {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down; try again shortly",
        );
    }
    let slot = match shared.limits.acquire(peer.ip()) {
        Ok(slot) => slot,
        Err(why) => return json_error(StatusCode::TOO_MANY_REQUESTS, "too_many_connections", why),
    };

    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let opening = (endpoint, identity, compression);
                // A task of its own for the connection's life: this one's state (the
                // upgrade future) is freed now instead of living beside the connection.
                // `read_buf` holds what the HTTP server read past the handshake (plaintext).
                let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
                    Ok(parts) => {
                        let stream = parts.io.into_inner();
                        tokio::spawn(websocket(
                            shared,
                            stream,
                            parts.read_buf,
                            peer,
                            opening,
                            slot,
                        ));
                        return;
                    }
                    Err(upgraded) => upgraded,
                };
                match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
                    Ok(parts) => {
                        // The TCP stream and the TLS session, driven without tokio-rustls
                        // from here on (the decrypted bytes rustls holds stay in it).
                        let (tcp, tls) = parts.io.into_inner().into_inner();
                        let stream = TlsSocket::new(tcp, tls);
                        tokio::spawn(websocket(
                            shared,
                            stream,
                            parts.read_buf,
                            peer,
                            opening,
                            slot,
                        ));
                    }
                    Err(_) => warn!(remote = %peer, "upgraded connection is neither TCP nor TLS"),
                }
            }
            Err(e) => debug!(remote = %peer, error = %e, "upgrade failed"),
        }
    });

    let mut res = Response::new(Body::default());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&up.accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    if let Some(c) = &compression {
        if let Ok(v) = HeaderValue::from_str(&c.params.response()) {
            h.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
        }
    }
    res
}

/// What a connection serves, set up before its future starts: protocol and echo
/// connections with their driver, made here so that the future holds it once.
enum Serving<S> {
    Protocol(Session, Driver<S>),
    /// Boxed: document connections are rare next to protocol ones, and their larger state
    /// should not widen every connection's task.
    Document(Pin<Box<dyn Future<Output = Ending> + Send>>),
    Echo(Driver<S>),
}

/// Sets up an upgraded connection and returns the future that serves it for its life. The
/// setup is done here, outside the future: what only the setup needs (the token's identity,
/// the endpoint, the negotiated compression) is not kept in every connection's task, as an
/// `async fn`'s arguments would be for as long as it runs.
fn websocket<S: Socket>(
    shared: Arc<Shared>,
    stream: S,
    leftover: Bytes,
    peer: SocketAddr,
    (endpoint, identity, compression): (Endpoint, Option<Identity>, Option<Compression>),
    slot: Slot,
) -> impl Future<Output = ()> + Send {
    let drained = shared.drained.clone();
    let (num, id) = ids::next_conn_id();
    let cap = match endpoint {
        Endpoint::Protocol => shared.config.max_outbound_queue,
        // The echo endpoint sends back what it receives: room for one maximal message.
        Endpoint::Echo => shared
            .config
            .max_outbound_queue
            .max(2 * shared.config.max_message_size + 64),
        // A joining editor is sent the whole document at once.
        Endpoint::Document { .. } => shared
            .config
            .max_outbound_queue
            .max(documents::first_frames_bound(&shared.config)),
    };
    let outbox = Outbox::with_compression(cap, compression);
    let conn = Arc::new(ConnHandle::new(num, id.into(), outbox));
    conn.set_user(identity.as_ref().map(|i| i.user.clone()));
    info!(conn = %conn.id, remote = %peer, compression = compression.is_some(), tls = shared.tls.is_some(), "connected");
    let mut serving = match endpoint {
        Endpoint::Document { name, read_only } => {
            info!(conn = %conn.id, doc = %name, read_only, "document connection");
            // Known to the hub: for the API's disconnect, and the shutdown reaches it there.
            shared.hub.register_document(conn.clone());
            let opening = documents::Opening {
                name,
                read_only,
                expires: identity.as_ref().map(|i| {
                    tokio::time::Instant::from_std(
                        i.expiry_instant() + shared.config.token_expiry_grace,
                    )
                }),
            };
            let (shared, conn) = (shared.clone(), conn.clone());
            Serving::Document(Box::pin(async move {
                documents::serve(
                    shared.documents.clone(),
                    opening,
                    conn,
                    stream,
                    leftover,
                    &shared.doc_settings,
                )
                .await
            }))
        }
        Endpoint::Protocol => {
            let heartbeat_ms = shared.config.heartbeat_interval.as_millis() as u64;
            // Registers the connection with the hub.
            let session = Session::start(
                shared.hub.clone(),
                conn.clone(),
                shared.session_limits.clone(),
                shared.access.clone(),
                identity,
                heartbeat_ms,
            );
            let driver = Driver::new(stream, leftover, conn.clone(), &shared.settings);
            Serving::Protocol(session, driver)
        }
        Endpoint::Echo => {
            shared.hub.register_document(conn.clone());
            Serving::Echo(Driver::new(
                stream,
                leftover,
                conn.clone(),
                &shared.settings,
            ))
        }
    };
    told_if_shutting_down(&shared, &conn);
    async move {
        // Held for the connection's life: the drain the shutdown waits for, and the
        // connection's place in the limits.
        let _held = (&drained, &slot);
        let ending: Ending = match &mut serving {
            Serving::Document(serve) => serve.await,
            Serving::Protocol(session, driver) => {
                connection::run(driver, session, &shared.settings).await
            }
            Serving::Echo(driver) => {
                connection::run(driver, &mut Echo(&conn), &shared.settings).await
            }
        };
        // A session unregisters itself when it closes; the others were registered above.
        if !matches!(serving, Serving::Protocol(..)) {
            shared.hub.unregister_document(&conn);
        }
        info!(
            conn = %conn.id,
            remote = %peer,
            code = ending.code.0,
            reason = %ending.reason,
            by = if ending.by_peer { "client" } else { "server" },
            "disconnected"
        );
    }
}

/// A connection registered with the hub after the shutdown asked every registered one to
/// stop is asked here: each connection is asked by one or the other (the hub's registry is
/// read after the shutdown flag is set, and this reads the flag after registering).
fn told_if_shutting_down(shared: &Shared, conn: &ConnHandle) {
    if *shared.shutdown.borrow() {
        conn.outbox.shutdown();
    }
}

/// The connection token of a handshake, from `Authorization: Bearer` or `?token=`, verified.
/// `Ok(None)` without one, and always when no key is configured (the server runs open).
fn handshake_identity(
    shared: &Shared,
    req: &Request<Incoming>,
) -> Result<Option<Identity>, TokenError> {
    let Some(verifier) = shared.access.verifier.as_ref() else {
        return Ok(None);
    };
    let token = bearer(req.headers())
        .map(str::to_owned)
        .or_else(|| api::query_param(req.uri().query().unwrap_or(""), "token"));
    match token {
        None => Ok(None),
        Some(t) => verifier.connection(&t).map(Some),
    }
}

/// Whether a page of `origin` may open a WebSocket: a page served by this very host (its
/// `Host` header), always — the server's own web apps — and pages of the `allowed_origins`.
/// Cross-site WebSocket hijacking needs a page of another site, which a browser marks with
/// its own `Origin`. Non-browser clients send no `Origin` and are not asked.
fn origin_allowed(allowed: Option<&[String]>, origin: &str, host: Option<&str>) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return allowed.is_some_and(|a| a.iter().any(|p| p == "*" || p == origin));
    };
    let authority = normal_authority(scheme, authority);
    if host.is_some_and(|h| normal_authority(scheme, h) == authority) {
        return true;
    }
    match allowed {
        None => false,
        Some(patterns) => patterns.iter().any(|p| {
            if p == "*" {
                return true;
            }
            let Some((p_scheme, p_auth)) = p.split_once("://") else {
                return false;
            };
            if !p_scheme.eq_ignore_ascii_case(scheme) {
                return false;
            }
            let p_auth = normal_authority(p_scheme, p_auth);
            match p_auth.strip_prefix("*.") {
                Some(suffix) => authority
                    .strip_suffix(suffix)
                    .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
                None => p_auth == authority,
            }
        }),
    }
}

/// `host[:port]` in lower case, without the scheme's default port.
fn normal_authority(scheme: &str, authority: &str) -> String {
    let a = authority.trim_end_matches('/').to_ascii_lowercase();
    let default = match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => ":443",
        _ => ":80",
    };
    match a.strip_suffix(default) {
        Some(stripped) => stripped.to_owned(),
        None => a,
    }
}

/// `GET /healthz`: the status for load balancers and probes; the version and live counts
/// only with `health_details` or an API key, since they tell anyone what to attack and how
/// busy we are.
fn health(shared: &Shared, method: &Method, details: bool) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let shutting_down = *shared.shutdown.borrow();
    let status = if shutting_down { "shutting_down" } else { "ok" };
    let body = if details {
        serde_json::json!({
            "status": status,
            "version": env!("CARGO_PKG_VERSION"),
            "broker": shared.hub.broker_name(),
            "connections": shared.hub.connection_count(),
            "rooms": shared.hub.room_count(),
            "pending_connections": shared.pending.count(),
            "compression": outgoing::stats(),
        })
    } else {
        serde_json::json!({ "status": status })
    };
    let status = if shutting_down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(status, body.to_string())
}

fn static_file(method: &Method, path: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    match web::asset(path) {
        Some((bytes, content_type)) => {
            // HEAD gets the same body: hyper sends only its headers, Content-Length included.
            let mut res = Response::new(Body::new(Bytes::from_static(bytes)));
            let h = res.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            if let Ok(csp) = HeaderValue::from_str(&web::content_security_policy(path)) {
                h.insert(header::CONTENT_SECURITY_POLICY, csp);
            }
            // For browsers that predate `frame-ancestors`.
            h.insert(
                header::X_FRAME_OPTIONS,
                HeaderValue::from_static("SAMEORIGIN"),
            );
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
            res
        }
        None if web::is_directory(path) => {
            let mut res = Response::new(Body::default());
            *res.status_mut() = StatusCode::MOVED_PERMANENTLY;
            if let Ok(v) = HeaderValue::from_str(&format!("{path}/")) {
                res.headers_mut().insert(header::LOCATION, v);
            }
            res
        }
        None => json_error(StatusCode::NOT_FOUND, "not_found", "no such page"),
    }
}

/// `tls_redirect`: a plain listener that answers every request with 301 to the same host
/// and path over https, on the TLS listener's port. Its connections count as pending ones
/// and have the handshake timeout; each serves one request.
async fn serve_redirects(shared: Arc<Shared>, listener: TcpListener, https_port: u16) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept failed (tls_redirect)");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        };
        let shared = shared.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let (slot, _) = shared.pending.admit(peer.ip());
            let service = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                Ok::<_, Infallible>(redirect(&req, https_port))
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(shared.config.handshake_timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                res = conn => {
                    if let Err(e) = res {
                        debug!(remote = %peer, error = %e, "redirect connection ended");
                    }
                }
                _ = slot.evicted.notified() => {}
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {}
            }
        });
    }
}

/// 301 to `https://{host}{path}` (the TLS port unless it is 443); 400 without a usable Host.
fn redirect(req: &Request<Incoming>, https_port: u16) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .and_then(host_name);
    let Some(host) = host else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a Host header is needed to redirect to https",
        );
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = match https_port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    };
    let mut res = Response::new(Body::default());
    *res.status_mut() = StatusCode::MOVED_PERMANENTLY;
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            res.headers_mut().insert(header::LOCATION, v);
            res
        }
        Err(_) => json_error(StatusCode::BAD_REQUEST, "bad_request", "invalid Host"),
    }
}

/// The host of a `Host` value without its port: a DNS name or IPv4 address, or a bracketed
/// IPv6 address; `None` for anything else (nothing but a host goes into the Location).
fn host_name(authority: &str) -> Option<&str> {
    let host = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        if !(rest.is_empty() || rest.starts_with(':')) {
            return None;
        }
        let inner = &host[1..host.len() - 1];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        host
    } else {
        let host = authority.split(':').next()?;
        if authority.matches(':').count() > 1 {
            return None;
        }
        host
    };
    let plain = host.starts_with('[')
        || host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    (!host.is_empty() && plain).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn redirect_hosts() {
        assert_eq!(host_name("example.com"), Some("example.com"));
        assert_eq!(host_name("example.com:8080"), Some("example.com"));
        assert_eq!(host_name("127.0.0.1:80"), Some("127.0.0.1"));
        assert_eq!(host_name("[::1]:80"), Some("[::1]"));
        assert_eq!(host_name("[2001:db8::1]"), Some("[2001:db8::1]"));
        for bad in [
            "",
            ":80",
            "a/b",
            "evil.com/x@y",
            "a b",
            "[::1]x",
            "[]",
            "[::1",
            "a:1:2",
            "user@host",
        ] {
            assert_eq!(host_name(bad), None, "{bad:?}");
        }
    }
}
