//! Settings: defaults, then a TOML file (`--config`), then `SWITCHBOARD_*` environment
//! variables, then command-line flags. A bad value stops start-up with an error that names
//! the setting.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

/// Real-time messaging server: rooms, presence and history over WebSocket.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at start: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default when no command is given).
    Serve(ServeArgs),
    /// Mint a connection token (or, with --room, a room token) from the configured key, for
    /// local use and tests: `switchboard token --sub ada --rooms 'chat:*' --ttl 1h`.
    Token(TokenArgs),
}

/// What to run: the server, or the token command.
#[allow(clippy::large_enum_variant)]
pub enum Run {
    Serve(ServeArgs),
    Token(TokenArgs),
}

impl Cli {
    pub fn into_run(self) -> Run {
        match self.command {
            Some(Command::Serve(args)) => Run::Serve(args),
            Some(Command::Token(args)) => Run::Token(args),
            None => Run::Serve(self.serve),
        }
    }
}

/// Flags of `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Room patterns the token allows, comma-separated (`chat:*`, `news:today`, `*`); each
    /// with the permissions of --permissions.
    #[arg(long, value_delimiter = ',')]
    pub rooms: Vec<String>,
    /// Permissions for --rooms (or for --room), comma-separated. [default: join,publish,presence,history]
    #[arg(long, value_delimiter = ',')]
    pub permissions: Option<Vec<String>>,
    /// Make a room token for this one room instead of a connection token.
    #[arg(long)]
    pub room: Option<String>,
    /// A JSON object the backend vouches for, shown as `member.info`.
    #[arg(long)]
    pub info: Option<String>,
    /// How long the token is valid, e.g. 15m, 1h. [default: 1h]
    #[arg(long, default_value = "1h")]
    pub ttl: Millis,
    /// PEM private key to sign with (RS256, ES256 or EdDSA, by the key's type), instead of
    /// the configured HMAC secret.
    #[arg(long, value_name = "FILE")]
    pub private_key: Option<PathBuf>,
    /// `kid` to put in the header (for servers that read keys from a JWKS).
    #[arg(long)]
    pub kid: Option<String>,
    /// The server's config file, for token_hmac_secret, token_audience and token_issuer.
    #[arg(long, env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The HMAC secret (otherwise from the config file).
    #[arg(long, env = "SWITCHBOARD_TOKEN_HMAC_SECRET", hide_env_values = true)]
    pub token_hmac_secret: Option<String>,
}

/// Flags of `serve`. Every flag can also be set by its environment variable or in the
/// config file (same name, with underscores); flags win over the environment, which wins
/// over the file.
#[derive(Debug, Args, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on. [default: 127.0.0.1:8080]
    #[arg(long, env = "SWITCHBOARD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// PEM file of the TLS certificate chain (leaf first): with tls_key, the listener speaks HTTPS and WSS only. Reloaded on SIGHUP and when the file changes. [default: none: plain HTTP]
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the TLS private key (PKCS#8, PKCS#1 or SEC1), for tls_cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// A plain-HTTP address that answers every request with 301 to the same host and path over https (with tls_cert). [default: none]
    #[arg(long, env = "SWITCHBOARD_TLS_REDIRECT", value_name = "ADDR")]
    pub tls_redirect: Option<SocketAddr>,
    /// Largest message a client may send, e.g. 65536, 64KiB, 16MiB; bigger closes with 1009. [default: 64KiB]
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_SIZE", value_name = "SIZE")]
    pub max_message_size: Option<Size>,
    /// Bytes that may wait for one slow client before it is closed with 4009. [default: 1MiB, or twice max-message-size if that is more]
    #[arg(long, env = "SWITCHBOARD_MAX_OUTBOUND_QUEUE", value_name = "SIZE")]
    pub max_outbound_queue: Option<Size>,
    /// How often the server pings each client, e.g. 25s, 500ms. [default: 25s]
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT_INTERVAL", value_name = "DURATION")]
    pub heartbeat_interval: Option<Millis>,
    /// How long a client has to answer a ping (with a pong or any frame) before it is closed with 4000. [default: 10s]
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT_TIMEOUT", value_name = "DURATION")]
    pub heartbeat_timeout: Option<Millis>,
    /// How long bytes queued for a client may wait for a socket that takes none of them before it is closed with 4009. [default: 20s]
    #[arg(long, env = "SWITCHBOARD_WRITE_TIMEOUT", value_name = "DURATION")]
    pub write_timeout: Option<Millis>,
    /// Largest presence state one member may have in a room (its JSON text); bigger is refused with too_large. [default: 4KiB]
    #[arg(long, env = "SWITCHBOARD_MAX_PRESENCE_SIZE", value_name = "SIZE")]
    pub max_presence_size: Option<Size>,
    /// Deepest nesting of arrays and objects in `data` and `presence`; deeper is refused with bad_request. [default: 32]
    #[arg(long, env = "SWITCHBOARD_MAX_JSON_DEPTH", value_name = "N")]
    pub max_json_depth: Option<usize>,
    /// Most members listed in one `joined` or `members` reply; the rest are paged with a cursor. [default: 100]
    #[arg(long, env = "SWITCHBOARD_MEMBERS_PAGE_SIZE", value_name = "N")]
    pub members_page_size: Option<usize>,
    /// In a busy room, presence changes within this interval go out together, in one frame per room (0: each at once). [default: 50ms]
    #[arg(long, env = "SWITCHBOARD_PRESENCE_INTERVAL", value_name = "DURATION")]
    pub presence_interval: Option<Millis>,
    /// The longest a room bigger than 1,000 members gathers presence changes: its interval grows with it (presence_interval per 1,000 members) up to this. [default: 1s]
    #[arg(
        long,
        env = "SWITCHBOARD_PRESENCE_INTERVAL_MAX",
        value_name = "DURATION"
    )]
    pub presence_interval_max: Option<Millis>,
    /// Messages per second each connection may send, on average. [default: 100]
    #[arg(long, env = "SWITCHBOARD_MESSAGE_RATE", value_name = "N")]
    pub message_rate: Option<u32>,
    /// Messages a connection may send at once above the average rate. [default: 200]
    #[arg(long, env = "SWITCHBOARD_MESSAGE_BURST", value_name = "N")]
    pub message_burst: Option<u32>,
    /// Rate-limited messages a connection may send before it is closed with 4008. [default: 50]
    #[arg(long, env = "SWITCHBOARD_RATE_LIMIT_STRIKES", value_name = "N")]
    pub rate_limit_strikes: Option<u32>,
    /// Rooms one connection may be in at once. [default: 100]
    #[arg(long, env = "SWITCHBOARD_MAX_ROOMS_PER_CONNECTION", value_name = "N")]
    pub max_rooms_per_connection: Option<usize>,
    /// WebSocket connections the server holds at once; more are refused with 429. [default: 100000]
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// WebSocket connections one IP address may hold at once; more are refused with 429. [default: 10000]
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Time a client has to send its HTTP request head (stalled handshakes are dropped). [default: 10s]
    #[arg(long, env = "SWITCHBOARD_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    pub handshake_timeout: Option<Millis>,
    /// TCP connections that have not finished their HTTP request yet; at the limit the oldest is dropped for a new one. [default: 1024]
    #[arg(long, env = "SWITCHBOARD_MAX_PENDING_CONNECTIONS", value_name = "N")]
    pub max_pending_connections: Option<usize>,
    /// The same, per client IP address. [default: 256]
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_PENDING_CONNECTIONS_PER_IP",
        value_name = "N"
    )]
    pub max_pending_connections_per_ip: Option<usize>,
    /// Whether GET /healthz shows the version and live counts to anyone (otherwise only the status). [default: false]
    #[arg(long, env = "SWITCHBOARD_HEALTH_DETAILS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub health_details: Option<bool>,
    /// Secret of HS256/384/512 connection and room tokens (the environment or the file is better: flags show in `ps`).
    #[arg(
        long,
        env = "SWITCHBOARD_TOKEN_HMAC_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub token_hmac_secret: Option<String>,
    /// PEM file with the public key tokens are signed with: RSA (RS*, PS*), EC (ES256, ES384) or Ed25519 (EdDSA).
    #[arg(long, env = "SWITCHBOARD_TOKEN_PUBLIC_KEY", value_name = "FILE")]
    pub token_public_key: Option<PathBuf>,
    /// JWKS file of token keys, chosen by each token's `kid` (read again on an unknown kid, at most once a minute).
    #[arg(long, env = "SWITCHBOARD_TOKEN_JWKS", value_name = "FILE")]
    pub token_jwks: Option<PathBuf>,
    /// Required `aud` of tokens. [default: not checked]
    #[arg(long, env = "SWITCHBOARD_TOKEN_AUDIENCE", value_name = "AUD")]
    pub token_audience: Option<String>,
    /// Required `iss` of tokens. [default: not checked]
    #[arg(long, env = "SWITCHBOARD_TOKEN_ISSUER", value_name = "ISS")]
    pub token_issuer: Option<String>,
    /// Time a connection may stay after its token expired without a refresh; then it is closed with 4010. [default: 5s]
    #[arg(long, env = "SWITCHBOARD_TOKEN_EXPIRY_GRACE", value_name = "DURATION")]
    pub token_expiry_grace: Option<Millis>,
    /// Origins whose pages may open WebSockets, comma-separated: exact (https://app.example.com), patterns (https://*.example.com), or *. [default: the request's own Host]
    #[arg(
        long,
        env = "SWITCHBOARD_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Option<Vec<String>>,
    /// Keys of the server HTTP API under /api/, comma-separated (the environment or the file is better). [default: none: /api/ answers 404]
    #[arg(
        long,
        env = "SWITCHBOARD_API_KEYS",
        value_name = "KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Option<Vec<String>>,
    /// Requests per second one address may make to the HTTP API (a burst of twice that). [default: 1000]
    #[arg(long, env = "SWITCHBOARD_API_RATE", value_name = "N")]
    pub api_rate: Option<u32>,
    /// Namespaces and their options: a table in the config file only (`[namespaces.chat]`).
    #[arg(skip)]
    pub namespaces: Option<BTreeMap<String, NamespaceOptions>>,
    /// On SIGINT/SIGTERM, time given to clients to receive what is queued and close. [default: 10s]
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    pub shutdown_timeout: Option<Millis>,
    /// Redis that several nodes share (redis://[user:password@]host:port[/db]): rooms, history and recovery across nodes. [default: none: this node alone]
    #[arg(
        long,
        env = "SWITCHBOARD_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,
    /// With redis_url: a node that has not heartbeated in Redis for this long is taken for dead, and its members leave every room on the other nodes (within this plus a quarter of it). [default: 10s]
    #[arg(long, env = "SWITCHBOARD_NODE_TIMEOUT", value_name = "DURATION")]
    pub node_timeout: Option<Millis>,
    /// Where history is kept: disk (history.redb in data-dir: survives restarts and crashes) or memory (nothing on disk). [default: disk]
    #[arg(long, env = "SWITCHBOARD_HISTORY_STORAGE", value_name = "disk|memory")]
    pub history_storage: Option<HistoryStorage>,
    /// Messages every room keeps in memory for clients that reconnect (0 turns the window off). [default: 100]
    #[arg(long, env = "SWITCHBOARD_RECOVERY_WINDOW_SIZE", value_name = "N")]
    pub recovery_window_size: Option<usize>,
    /// How long the recovery window keeps each message. [default: 2m]
    #[arg(long, env = "SWITCHBOARD_RECOVERY_WINDOW_TTL", value_name = "DURATION")]
    pub recovery_window_ttl: Option<Millis>,
    /// Most missed messages one recovering join is given; more: recovered false, reason too_many. [default: 500]
    #[arg(long, env = "SWITCHBOARD_MAX_RECOVERY_MESSAGES", value_name = "N")]
    pub max_recovery_messages: Option<usize>,
    /// Most messages in one history reply (the largest `limit`). [default: 100]
    #[arg(long, env = "SWITCHBOARD_HISTORY_PAGE_SIZE", value_name = "N")]
    pub history_page_size: Option<usize>,
    /// How long a publish `key` is remembered: a repeat within it is not delivered again. [default: 5m]
    #[arg(long, env = "SWITCHBOARD_IDEMPOTENCY_WINDOW", value_name = "DURATION")]
    pub idempotency_window: Option<Millis>,
    /// Directory of the embedded stores: documents.redb and history.redb. [default: ./data]
    #[arg(long, env = "SWITCHBOARD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Largest encoded size of one document; an update that would go over it closes with 1009. [default: 8MiB]
    #[arg(long, env = "SWITCHBOARD_MAX_DOCUMENT_SIZE", value_name = "SIZE")]
    pub max_document_size: Option<Size>,
    /// Largest message a document client may send (a Yjs update); bigger closes with 1009. [default: 1MiB]
    #[arg(long, env = "SWITCHBOARD_MAX_UPDATE_SIZE", value_name = "SIZE")]
    pub max_update_size: Option<Size>,
    /// Connections one document may have at once; more are closed with 1013. [default: 1000]
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_CONNECTIONS_PER_DOCUMENT",
        value_name = "N"
    )]
    pub max_connections_per_document: Option<usize>,
    /// Largest awareness state (cursor, user) one document client may set; bigger closes with 1009. [default: 16KiB]
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_AWARENESS_STATE_SIZE",
        value_name = "SIZE"
    )]
    pub max_awareness_state_size: Option<Size>,
    /// Awareness states one document holds in all; an update that would go over it is not applied. [default: 1MiB]
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_AWARENESS_PER_DOCUMENT",
        value_name = "SIZE"
    )]
    pub max_awareness_per_document: Option<Size>,
    /// Bytes of whole-document copies (sync step 2 replies) one document may have queued unsent; more wait. [default: 32MiB]
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_SYNC_QUEUED_PER_DOCUMENT",
        value_name = "SIZE"
    )]
    pub max_sync_queued_per_document: Option<Size>,
    /// Time a document copy may stay unread while others wait for theirs; then its client is closed with 4009. [default: 5s]
    #[arg(
        long,
        env = "SWITCHBOARD_DOCUMENT_SYNC_TIMEOUT",
        value_name = "DURATION"
    )]
    pub document_sync_timeout: Option<Millis>,
    /// Answer permessage-deflate offers (RFC 7692) on /ws, /yjs and /echo: messages of at least compression_threshold bytes go compressed to clients that offered it. [default: true]
    #[arg(long, env = "SWITCHBOARD_COMPRESSION", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub compression: Option<bool>,
    /// Deflate level for outgoing messages, 1 (fastest) to 9 (smallest). [default: 2]
    #[arg(long, env = "SWITCHBOARD_COMPRESSION_LEVEL", value_name = "1-9")]
    pub compression_level: Option<u32>,
    /// Messages smaller than this go uncompressed even to compressing clients (deflating them saves little and costs a deflate each). [default: 128B]
    #[arg(long, env = "SWITCHBOARD_COMPRESSION_THRESHOLD", value_name = "SIZE")]
    pub compression_threshold: Option<Size>,
    /// Serve GET /echo, a WebSocket endpoint that echoes every message (for conformance tests).
    #[arg(long, env = "SWITCHBOARD_ECHO_ENDPOINT", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub echo_endpoint: Option<bool>,
    /// Log format. [default: text]
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log level or per-module levels, e.g. info, or warn,switchboard=debug. [default: info]
    #[arg(long, env = "SWITCHBOARD_LOG", value_name = "FILTER")]
    pub log: Option<String>,
}

/// The options of one namespace (`[namespaces.NAME]` in the file; `default` is the namespace
/// of rooms without a `prefix:`). Absent options keep their defaults.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NamespaceOptions {
    /// Anyone may join, publish, set presence and read history, token or not. [default: false]
    pub anonymous: Option<bool>,
    /// Clients may publish (with permission); false: only the backend, through the HTTP API. [default: true]
    pub client_publish: Option<bool>,
    /// Presence: "full" (member lists and presence events), "count" (only how many are in the room), "off"; true/false mean full/off. [default: "full"]
    pub presence: Option<PresenceMode>,
    /// Messages kept per room for history and recovery (on disk unless history_storage = "memory"). [default: 0]
    pub history_size: Option<usize>,
    /// How long each kept message stays. [default: 24h]
    pub history_ttl: Option<Millis>,
    /// The short recovery window in memory (recovery_window_size, recovery_window_ttl). [default: true]
    pub recovery_window: Option<bool>,
}

/// What a namespace's rooms tell their members about each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceMode {
    /// Member lists, and join, update and leave events.
    Full,
    /// Only the number of members, kept current.
    Count,
    /// Nothing.
    Off,
}

impl<'de> Deserialize<'de> for PresenceMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PresenceMode, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(PresenceMode::Full),
            Raw::Bool(false) => Ok(PresenceMode::Off),
            Raw::Name(n) => match n.as_str() {
                "full" => Ok(PresenceMode::Full),
                "count" => Ok(PresenceMode::Count),
                "off" => Ok(PresenceMode::Off),
                _ => Err(serde::de::Error::custom(format!(
                    "presence must be \"full\", \"count\" or \"off\" (or true/false), not {n:?}"
                ))),
            },
        }
    }
}

/// Where history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryStorage {
    Disk,
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The settings the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// With `tls_key`: the listener speaks TLS only.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A plain listener that redirects to https.
    pub tls_redirect: Option<SocketAddr>,
    pub max_message_size: usize,
    pub max_outbound_queue: usize,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub write_timeout: Duration,
    pub max_presence_size: usize,
    pub max_json_depth: usize,
    pub members_page_size: usize,
    pub presence_interval: Duration,
    pub presence_interval_max: Duration,
    pub message_rate: u32,
    pub message_burst: u32,
    pub rate_limit_strikes: u32,
    pub max_rooms_per_connection: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub handshake_timeout: Duration,
    pub max_pending_connections: usize,
    pub max_pending_connections_per_ip: usize,
    pub health_details: bool,
    pub token_hmac_secret: Option<String>,
    pub token_public_key: Option<PathBuf>,
    pub token_jwks: Option<PathBuf>,
    pub token_audience: Option<String>,
    pub token_issuer: Option<String>,
    pub token_expiry_grace: Duration,
    /// `None`: same origin only.
    pub allowed_origins: Option<Vec<String>>,
    pub api_keys: Vec<String>,
    pub api_rate: u32,
    /// `None`: no `[namespaces]` table, every namespace exists with default options.
    pub namespaces: Option<BTreeMap<String, NamespaceOptions>>,
    pub shutdown_timeout: Duration,
    pub echo_endpoint: bool,
    pub redis_url: Option<String>,
    pub node_timeout: Duration,
    pub history_storage: HistoryStorage,
    pub recovery_window_size: usize,
    pub recovery_window_ttl: Duration,
    pub max_recovery_messages: usize,
    pub history_page_size: usize,
    pub idempotency_window: Duration,
    pub compression: bool,
    pub compression_level: u32,
    pub compression_threshold: usize,
    pub data_dir: PathBuf,
    pub max_document_size: usize,
    pub max_update_size: usize,
    pub max_connections_per_document: usize,
    pub max_awareness_state_size: usize,
    pub max_awareness_per_document: usize,
    pub max_sync_queued_per_document: usize,
    pub document_sync_timeout: Duration,
    pub log_format: LogFormat,
    pub log: String,
    /// Whether max_outbound_queue was given, rather than following max_message_size.
    outbound_queue_set: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            tls_redirect: None,
            max_message_size: 64 * 1024,
            max_outbound_queue: 1024 * 1024,
            heartbeat_interval: Duration::from_secs(25),
            heartbeat_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(20),
            max_presence_size: 4 * 1024,
            max_json_depth: 32,
            members_page_size: 100,
            presence_interval: Duration::from_millis(50),
            presence_interval_max: Duration::from_secs(1),
            message_rate: 100,
            message_burst: 200,
            rate_limit_strikes: 50,
            max_rooms_per_connection: 100,
            max_connections: 100_000,
            max_connections_per_ip: 10_000,
            handshake_timeout: Duration::from_secs(10),
            max_pending_connections: 1024,
            max_pending_connections_per_ip: 256,
            health_details: false,
            token_hmac_secret: None,
            token_public_key: None,
            token_jwks: None,
            token_audience: None,
            token_issuer: None,
            token_expiry_grace: Duration::from_secs(5),
            allowed_origins: None,
            api_keys: Vec::new(),
            api_rate: 1000,
            namespaces: None,
            shutdown_timeout: Duration::from_secs(10),
            echo_endpoint: false,
            redis_url: None,
            node_timeout: Duration::from_secs(10),
            history_storage: HistoryStorage::Disk,
            recovery_window_size: 100,
            recovery_window_ttl: Duration::from_secs(120),
            max_recovery_messages: 500,
            history_page_size: 100,
            idempotency_window: Duration::from_secs(300),
            compression: true,
            compression_level: 2,
            compression_threshold: 128,
            data_dir: PathBuf::from("./data"),
            max_document_size: 8 * 1024 * 1024,
            max_update_size: 1024 * 1024,
            max_connections_per_document: 1000,
            max_awareness_state_size: 16 * 1024,
            max_awareness_per_document: 1024 * 1024,
            max_sync_queued_per_document: 32 * 1024 * 1024,
            document_sync_timeout: Duration::from_secs(5),
            log_format: LogFormat::Text,
            log: "info".to_owned(),
            outbound_queue_set: false,
        }
    }
}

/// Applies every setting that is present in `$src` onto `$cfg`, converting with `$conv`.
macro_rules! overlay {
    ($cfg:ident, $src:ident, $conv:expr, [$($field:ident),* $(,)?]) => {
        $( if let Some(v) = $src.$field { $cfg.$field = $conv(v); } )*
    };
}

impl Config {
    /// Builds the settings from a file (if named) and the flags/environment clap parsed.
    pub fn load(args: ServeArgs) -> anyhow::Result<Config> {
        let mut cfg = Config::default();
        if let Some(path) = &args.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("config: cannot read {}", path.display()))?;
            // The file holds the same settings as the flags (one struct serves both, so they
            // cannot drift apart); unknown keys are errors.
            let file: ServeArgs = toml::from_str(&text)
                .with_context(|| format!("config: invalid setting in {}", path.display()))?;
            cfg.apply(file);
        }
        cfg.apply(args);
        if !cfg.outbound_queue_set {
            cfg.max_outbound_queue = cfg.max_outbound_queue.max(2 * cfg.max_message_size);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn apply(&mut self, a: ServeArgs) {
        let cfg = self;
        cfg.outbound_queue_set |= a.max_outbound_queue.is_some();
        overlay!(
            cfg,
            a,
            Some,
            [
                token_hmac_secret,
                token_public_key,
                token_jwks,
                token_audience,
                token_issuer,
                allowed_origins,
                namespaces,
                redis_url,
                tls_cert,
                tls_key,
                tls_redirect
            ]
        );
        overlay!(
            cfg,
            a,
            |v| v,
            [
                listen,
                message_rate,
                message_burst,
                rate_limit_strikes,
                max_rooms_per_connection,
                max_connections,
                max_connections_per_ip,
                max_pending_connections,
                max_pending_connections_per_ip,
                health_details,
                api_keys,
                api_rate,
                max_json_depth,
                members_page_size,
                echo_endpoint,
                history_storage,
                recovery_window_size,
                max_recovery_messages,
                history_page_size,
                compression,
                compression_level,
                data_dir,
                max_connections_per_document,
                log_format,
                log
            ]
        );
        overlay!(
            cfg,
            a,
            |v: Size| v.0,
            [
                max_message_size,
                max_outbound_queue,
                compression_threshold,
                max_presence_size,
                max_document_size,
                max_update_size,
                max_awareness_state_size,
                max_awareness_per_document,
                max_sync_queued_per_document
            ]
        );
        overlay!(
            cfg,
            a,
            |v: Millis| v.0,
            [
                heartbeat_interval,
                heartbeat_timeout,
                write_timeout,
                token_expiry_grace,
                handshake_timeout,
                shutdown_timeout,
                document_sync_timeout,
                recovery_window_ttl,
                idempotency_window,
                node_timeout,
                presence_interval,
                presence_interval_max
            ]
        );
    }

    fn validate(&self) -> anyhow::Result<()> {
        let keys = [
            self.token_hmac_secret.is_some(),
            self.token_public_key.is_some(),
            self.token_jwks.is_some(),
        ];
        if keys.iter().filter(|k| **k).count() > 1 {
            bail!("config: set one of token_hmac_secret, token_public_key and token_jwks, not several");
        }
        if self
            .token_hmac_secret
            .as_ref()
            .is_some_and(|s| s.len() < 32)
        {
            bail!("config: token_hmac_secret must be at least 32 bytes (256 bits), or it can be guessed");
        }
        if self.api_keys.iter().any(|k| k.len() < 16) {
            bail!("config: every api_keys entry must be at least 16 characters");
        }
        if let Some(names) = &self.namespaces {
            for name in names.keys() {
                let valid = !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
                if !valid {
                    bail!("config: namespace name {name:?} must be 1-64 characters of A-Z a-z 0-9 _ - .");
                }
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                bail!("config: tls_cert is set but tls_key is not (set both, or neither)")
            }
            (None, Some(_)) => {
                bail!("config: tls_key is set but tls_cert is not (set both, or neither)")
            }
            _ => {}
        }
        if let Some(redirect) = self.tls_redirect {
            if self.tls_cert.is_none() {
                bail!("config: tls_redirect needs tls_cert and tls_key (it redirects to https)");
            }
            if redirect == self.listen && redirect.port() != 0 {
                bail!("config: tls_redirect ({redirect}) must differ from listen");
            }
        }
        let positive_durations = [
            ("heartbeat_interval", self.heartbeat_interval),
            ("heartbeat_timeout", self.heartbeat_timeout),
            ("write_timeout", self.write_timeout),
            ("node_timeout", self.node_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("document_sync_timeout", self.document_sync_timeout),
        ];
        for (name, d) in positive_durations {
            if d.is_zero() {
                bail!("config: {name} must be greater than zero");
            }
        }
        let positive_counts = [
            ("message_rate", self.message_rate as usize),
            ("message_burst", self.message_burst as usize),
            ("rate_limit_strikes", self.rate_limit_strikes as usize),
            ("max_rooms_per_connection", self.max_rooms_per_connection),
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_pending_connections", self.max_pending_connections),
            (
                "max_pending_connections_per_ip",
                self.max_pending_connections_per_ip,
            ),
            ("max_json_depth", self.max_json_depth),
            ("members_page_size", self.members_page_size),
            ("max_recovery_messages", self.max_recovery_messages),
            ("history_page_size", self.history_page_size),
            ("api_rate", self.api_rate as usize),
            (
                "max_connections_per_document",
                self.max_connections_per_document,
            ),
        ];
        for (name, n) in positive_counts {
            if n == 0 {
                bail!("config: {name} must be at least 1");
            }
        }
        if !(1..=9).contains(&self.compression_level) {
            bail!("config: compression_level must be 1 (fastest) to 9 (smallest)");
        }
        if self.max_message_size < 125 {
            bail!("config: max_message_size must be at least 125 bytes");
        }
        if self.max_presence_size < 2 {
            bail!("config: max_presence_size must be at least 2 bytes (an empty object)");
        }
        if self.max_update_size < 125 {
            bail!("config: max_update_size must be at least 125 bytes");
        }
        if self.max_document_size < self.max_update_size {
            bail!(
                "config: max_document_size ({}) must be at least max_update_size ({})",
                self.max_document_size,
                self.max_update_size
            );
        }
        if self.max_awareness_state_size < 125
            || self.max_awareness_per_document < self.max_awareness_state_size
        {
            bail!(
                "config: max_awareness_state_size ({}) must be at least 125 bytes and at most \
                 max_awareness_per_document ({})",
                self.max_awareness_state_size,
                self.max_awareness_per_document
            );
        }
        if let Some(names) = &self.namespaces {
            for (name, ns) in names {
                if ns.history_size.is_some_and(|n| n > MAX_HISTORY_SIZE) {
                    bail!(
                        "config: namespaces.{name}.history_size must be at most {MAX_HISTORY_SIZE}"
                    );
                }
                if ns.history_ttl.is_some_and(|t| t.0.is_zero()) {
                    bail!("config: namespaces.{name}.history_ttl must be greater than zero");
                }
            }
        }
        if self.recovery_window_size > MAX_HISTORY_SIZE {
            bail!("config: recovery_window_size must be at most {MAX_HISTORY_SIZE}");
        }
        if self.recovery_window_size > 0 && self.recovery_window_ttl.is_zero() {
            bail!("config: recovery_window_ttl must be greater than zero");
        }
        if self.data_dir.as_os_str().is_empty() {
            bail!("config: data_dir must not be empty");
        }
        if self.max_outbound_queue < self.max_message_size {
            bail!(
                "config: max_outbound_queue ({}) must be at least max_message_size ({}), \
                 or no client could receive a message of the largest size",
                self.max_outbound_queue,
                self.max_message_size
            );
        }
        Ok(())
    }
}

/// Most messages one room may keep (`history_size`, `recovery_window_size`).
pub const MAX_HISTORY_SIZE: usize = 100_000;

/// A byte count: a plain number, or a number with B, KB, KiB, MB, MiB, GB or GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub usize);

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Size, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: usize = num
            .parse()
            .map_err(|_| format!("invalid size {s:?} (try 65536, 64KiB or 16MiB)"))?;
        let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "kib" | "k" => 1024,
            "mb" => 1000 * 1000,
            "mib" | "m" => 1024 * 1024,
            "gb" => 1000 * 1000 * 1000,
            "gib" | "g" => 1024 * 1024 * 1024,
            _ => {
                return Err(format!(
                    "invalid size {s:?} (units: B, KB, KiB, MB, MiB, GB, GiB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(Size)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

/// A duration: a number with ms, s, m or h (a plain number is milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub Duration);

impl FromStr for Millis {
    type Err = String;
    fn from_str(s: &str) -> Result<Millis, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid duration {s:?} (try 500ms, 25s or 2m)"))?;
        let ms = match unit.trim() {
            "" | "ms" => Some(n),
            "s" => n.checked_mul(1000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            "d" => n.checked_mul(86_400_000),
            _ => return Err(format!("invalid duration {s:?} (units: ms, s, m, h, d)")),
        };
        ms.map(|ms| Millis(Duration::from_millis(ms)))
            .ok_or_else(|| format!("duration {s:?} is too long"))
    }
}

/// Sizes and durations in the file may be strings ("64KiB", "25s") or plain numbers.
fn deserialize_str_or_int<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromStr<Err = String>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Str(String),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Int(n) => n.to_string(),
        Raw::Str(s) => s,
    };
    text.parse().map_err(serde::de::Error::custom)
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        deserialize_str_or_int(d)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        deserialize_str_or_int(d)
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_and_durations() {
        assert_eq!("65536".parse(), Ok(Size(65536)));
        assert_eq!("64KiB".parse(), Ok(Size(65536)));
        assert_eq!("16MiB".parse(), Ok(Size(16 << 20)));
        assert!("12 parsecs".parse::<Size>().is_err());
        assert_eq!("25s".parse(), Ok(Millis(Duration::from_secs(25))));
        assert_eq!("1500".parse(), Ok(Millis(Duration::from_millis(1500))));
        assert!("soon".parse::<Millis>().is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("sb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("switchboard.toml");
        std::fs::write(
            &path,
            "max_message_size = \"1MiB\"\nmessage_rate = 5\nheartbeat_interval = 3000\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            message_rate: Some(7),
            ..ServeArgs::default()
        };
        let cfg = Config::load(args).unwrap();
        assert_eq!(cfg.max_message_size, 1 << 20);
        assert_eq!(cfg.message_rate, 7);
        assert_eq!(cfg.heartbeat_interval, Duration::from_secs(3));

        std::fs::write(&path, "max_mesage_size = 10\n").unwrap();
        let err = Config::load(ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("max_mesage_size"), "{err:#}");
        std::fs::write(&path, "max_message_size = \"lots\"\n").unwrap();
        let err = Config::load(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("max_message_size"), "{err:#}");
    }

    #[test]
    fn document_settings() {
        let cfg = Config::load(ServeArgs::default()).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("./data"));
        assert_eq!(cfg.max_update_size, 1 << 20);
        let dir = std::env::temp_dir().join(format!("sb-config-docs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("switchboard.toml");
        std::fs::write(
            &path,
            "data_dir = \"/var/lib/sb\"\nmax_document_size = \"2MiB\"\n\
             max_update_size = 65536\nmax_connections_per_document = 3\n",
        )
        .unwrap();
        let cfg = Config::load(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/sb"));
        assert_eq!(cfg.max_document_size, 2 << 20);
        assert_eq!(cfg.max_update_size, 65536);
        assert_eq!(cfg.max_connections_per_document, 3);
        let err = Config::load(ServeArgs {
            max_document_size: Some(Size(1000)),
            max_update_size: Some(Size(2000)),
            ..ServeArgs::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("max_document_size"), "{err}");
    }

    #[test]
    fn tls_settings_come_in_pairs() {
        let err = |args: ServeArgs| Config::load(args).unwrap_err().to_string();
        let cert = || Some(PathBuf::from("cert.pem"));
        let key = || Some(PathBuf::from("key.pem"));
        let e = err(ServeArgs {
            tls_cert: cert(),
            ..ServeArgs::default()
        });
        assert!(e.contains("tls_key"), "{e}");
        let e = err(ServeArgs {
            tls_key: key(),
            ..ServeArgs::default()
        });
        assert!(e.contains("tls_cert"), "{e}");
        let e = err(ServeArgs {
            tls_redirect: Some("127.0.0.1:80".parse().unwrap()),
            ..ServeArgs::default()
        });
        assert!(e.contains("tls_redirect"), "{e}");
        let cfg = Config::load(ServeArgs {
            tls_cert: cert(),
            tls_key: key(),
            tls_redirect: Some("127.0.0.1:80".parse().unwrap()),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(cfg.tls_cert, cert());
        assert_eq!(cfg.tls_redirect, Some("127.0.0.1:80".parse().unwrap()));
    }

    #[test]
    fn inconsistent_settings_are_refused_by_name() {
        let args = ServeArgs {
            max_message_size: Some(Size(2 << 20)),
            ..ServeArgs::default()
        };
        let cfg = Config::load(args).unwrap();
        assert_eq!(
            cfg.max_outbound_queue,
            4 << 20,
            "follows the message size when not set"
        );
        let args = ServeArgs {
            max_message_size: Some(Size(2 << 20)),
            max_outbound_queue: Some(Size(1 << 20)),
            ..ServeArgs::default()
        };
        let err = Config::load(args).unwrap_err().to_string();
        assert!(err.contains("max_outbound_queue"), "{err}");
    }
}
