//! Who may do what: connection and room tokens (JWT), the permissions they carry, and the
//! namespace rules that decide, for each room, whether a request needs one.
//!
//! A backend mints tokens with a key the server is configured with (an HMAC secret, a public
//! key, or a JWKS); the server never issues or stores them. Only the algorithm family of the
//! configured key is accepted, so `alg: none`, an HS token checked against a public key
//! (key confusion) and unknown `kid`s are refused before any claim is read. See docs/auth.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{Config, NamespaceOptions};
use crate::protocol::{self, ErrorCode, Failure};

/// Longest token accepted, in bytes; a longer one is refused before it is decoded.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Largest `info` claim, in bytes of JSON: it is repeated in every member list.
pub const MAX_INFO_LEN: usize = 4 * 1024;
/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 5;
/// A JWKS file is read again on an unknown `kid` at most this often.
const JWKS_RELOAD: Duration = Duration::from_secs(60);

/// One thing a member may do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    Join = 1,
    Publish = 2,
    Presence = 4,
    History = 8,
}

impl Perm {
    pub fn name(self) -> &'static str {
        match self {
            Perm::Join => "join",
            Perm::Publish => "publish",
            Perm::Presence => "presence",
            Perm::History => "history",
        }
    }

    fn parse(s: &str) -> Option<Perm> {
        Some(match s {
            "join" => Perm::Join,
            "publish" => Perm::Publish,
            "presence" => Perm::Presence,
            "history" => Perm::History,
            _ => return None,
        })
    }
}

/// A set of [`Perm`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Perms(u8);

impl Perms {
    pub const ALL: Perms = Perms(15);

    pub fn has(self, p: Perm) -> bool {
        self.0 & p as u8 != 0
    }

    fn from_names(names: &[String]) -> Result<Perms, String> {
        let mut set = 0;
        for n in names {
            let p = Perm::parse(n).ok_or_else(|| {
                format!("unknown permission {n:?} (join, publish, presence, history)")
            })?;
            set |= p as u8;
        }
        Ok(Perms(set))
    }
}

/// A room pattern of a `rooms` claim: `chat:lobby`, `chat:*` (a prefix) or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Any,
    Prefix(String),
    Exact(String),
}

impl Pattern {
    fn parse(s: &str) -> Result<Pattern, String> {
        if s == "*" {
            return Ok(Pattern::Any);
        }
        let (body, prefix) = match s.strip_suffix('*') {
            Some(body) => (body, true),
            None => (s, false),
        };
        let valid_chars = body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if body.is_empty() || body.len() > protocol::MAX_ROOM_LEN || !valid_chars {
            return Err(format!(
                "room pattern {s:?} is not a room name, `prefix*` or `*`"
            ));
        }
        Ok(if prefix {
            Pattern::Prefix(body.to_owned())
        } else {
            Pattern::Exact(body.to_owned())
        })
    }

    /// How specifically the pattern names `room`, if it matches it: an exact name beats any
    /// prefix, a longer prefix a shorter one, and any prefix `*`.
    fn specificity(&self, room: &str) -> Option<usize> {
        match self {
            Pattern::Any => Some(0),
            Pattern::Prefix(p) => room.starts_with(p.as_str()).then_some(1 + p.len()),
            Pattern::Exact(r) => (r == room).then_some(usize::MAX),
        }
    }
}

/// What a connection token lets its holder do, room by room. The most specific pattern
/// that matches a room decides, so `{"chat:*": ["join", "publish"], "chat:staff": []}` is
/// every chat room but the staff's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions(Vec<(Pattern, Perms)>);

impl Permissions {
    pub fn allows(&self, room: &str, perm: Perm) -> bool {
        self.0
            .iter()
            .filter_map(|(pattern, perms)| Some((pattern.specificity(room)?, *perms)))
            .max_by_key(|(specificity, _)| *specificity)
            .is_some_and(|(_, perms)| perms.has(perm))
    }
}

/// The `rooms` claim: patterns → permissions, or a list of patterns (all four permissions).
#[derive(Deserialize)]
#[serde(untagged)]
enum RoomsClaim {
    List(Vec<String>),
    Map(BTreeMap<String, Vec<String>>),
}

impl RoomsClaim {
    fn permissions(self) -> Result<Permissions, String> {
        let mut out = Vec::new();
        match self {
            RoomsClaim::List(patterns) => {
                for p in patterns {
                    out.push((Pattern::parse(&p)?, Perms::ALL));
                }
            }
            RoomsClaim::Map(map) => {
                for (p, perms) in map {
                    out.push((Pattern::parse(&p)?, Perms::from_names(&perms)?));
                }
            }
        }
        Ok(Permissions(out))
    }
}

/// A verified connection token.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `sub`: the user, shown as `user` in `welcome`, members and `from`.
    pub user: Arc<str>,
    /// `info`: a JSON object the backend vouches for (raw JSON), shown as `member.info`.
    pub info: Option<Arc<str>>,
    pub rooms: Permissions,
    /// `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Identity {
    /// When the token stops being valid, as an `Instant` (now, if it already has).
    pub fn expiry_instant(&self) -> Instant {
        let left = self.expires_at.saturating_sub(unix_now());
        Instant::now() + Duration::from_secs(left)
    }
}

/// What a room token grants in its one room.
#[derive(Debug, Clone)]
pub struct RoomGrant {
    pub perms: Perms,
    /// Replaces the connection's `info` in this room, when given.
    pub info: Option<Arc<str>>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Invalid(String),
    Expired,
}

impl TokenError {
    /// The code for an HTTP body (`unauthorized` or `token_expired`).
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Invalid(_) => "unauthorized",
            TokenError::Expired => "token_expired",
        }
    }

    pub fn message(&self) -> String {
        match self {
            TokenError::Invalid(why) => format!("invalid token: {why}"),
            TokenError::Expired => "token expired".to_owned(),
        }
    }
}

#[derive(Deserialize)]
struct ConnectionClaims {
    sub: String,
    exp: u64,
    #[serde(default)]
    info: Option<Box<RawValue>>,
    #[serde(default)]
    rooms: Option<RoomsClaim>,
    /// Only room tokens have it: one here is token confusion.
    #[serde(default)]
    room: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct RoomClaims {
    sub: String,
    room: String,
    #[allow(dead_code)] // checked by the validation; required here so its type is checked
    exp: u64,
    #[serde(default)]
    permissions: Option<Vec<String>>,
    #[serde(default)]
    info: Option<Box<RawValue>>,
}

/// The configured key(s).
enum Keys {
    Hmac(DecodingKey),
    Public(DecodingKey, Vec<Algorithm>),
    Jwks {
        path: PathBuf,
        state: Mutex<JwksState>,
    },
}

struct JwksState {
    set: Arc<JwkSet>,
    loaded: Instant,
}

/// Verifies tokens against the configured key.
pub struct Verifier {
    keys: Keys,
    audience: Option<String>,
    issuer: Option<String>,
    max_json_depth: usize,
}

impl Verifier {
    /// The verifier for the configured key, or `None` when no key is configured (the server
    /// runs open).
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<Verifier>> {
        let keys = if let Some(secret) = &cfg.token_hmac_secret {
            Keys::Hmac(DecodingKey::from_secret(secret.as_bytes()).context("token_hmac_secret")?)
        } else if let Some(path) = &cfg.token_public_key {
            let pem = std::fs::read(path)
                .with_context(|| format!("token_public_key: cannot read {}", path.display()))?;
            public_key(&pem).with_context(|| {
                format!(
                    "token_public_key: {} is not a usable PEM public key",
                    path.display()
                )
            })?
        } else if let Some(path) = &cfg.token_jwks {
            let set = read_jwks(path)?;
            Keys::Jwks {
                path: path.clone(),
                state: Mutex::new(JwksState {
                    set: Arc::new(set),
                    loaded: Instant::now(),
                }),
            }
        } else {
            return Ok(None);
        };
        Ok(Some(Verifier {
            keys,
            audience: cfg.token_audience.clone(),
            issuer: cfg.token_issuer.clone(),
            max_json_depth: cfg.max_json_depth,
        }))
    }

    /// Verifies a connection token.
    pub fn connection(&self, token: &str) -> Result<Identity, TokenError> {
        let claims: ConnectionClaims = self.decode(token)?;
        if claims.room.is_some() {
            return Err(TokenError::Invalid(
                "a room token (it has a `room` claim) cannot open a connection".into(),
            ));
        }
        let user = checked_sub(claims.sub)?;
        let rooms = match claims.rooms {
            Some(r) => r.permissions().map_err(TokenError::Invalid)?,
            None => Permissions::default(),
        };
        Ok(Identity {
            user,
            info: self.checked_info(claims.info)?,
            rooms,
            expires_at: claims.exp,
        })
    }

    /// Verifies a room token for `room`, presented by a connection of `user`.
    pub fn room(&self, token: &str, user: &str, room: &str) -> Result<RoomGrant, TokenError> {
        let claims: RoomClaims = self.decode(token)?;
        if claims.sub != user {
            return Err(TokenError::Invalid(
                "the room token is for another user (`sub`)".into(),
            ));
        }
        if claims.room != room {
            return Err(TokenError::Invalid(format!(
                "the room token is for room {:?}",
                claims.room
            )));
        }
        let perms = match &claims.permissions {
            Some(names) => Perms::from_names(names).map_err(TokenError::Invalid)?,
            None => Perms::ALL,
        };
        Ok(RoomGrant {
            perms,
            info: self.checked_info(claims.info)?,
        })
    }

    fn checked_info(&self, info: Option<Box<RawValue>>) -> Result<Option<Arc<str>>, TokenError> {
        let Some(info) = info else { return Ok(None) };
        if !info.get().starts_with('{') {
            return Err(TokenError::Invalid("`info` must be a JSON object".into()));
        }
        if info.get().len() > MAX_INFO_LEN {
            return Err(TokenError::Invalid(format!(
                "`info` is over {MAX_INFO_LEN} bytes"
            )));
        }
        protocol::check_relayed(&info, "info", self.max_json_depth)
            .map_err(|f| TokenError::Invalid(f.message.into_owned()))?;
        Ok(Some(info.get().into()))
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, token: &str) -> Result<T, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid(format!(
                "longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| TokenError::Invalid(format!("header: {e}")))?;
        let (key, algorithms) = match &self.keys {
            Keys::Hmac(key) => (
                key.clone(),
                vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            ),
            Keys::Public(key, algs) => (key.clone(), algs.clone()),
            Keys::Jwks { path, state } => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| TokenError::Invalid("no `kid` in the header".into()))?;
                jwk_key(path, state, kid)?
            }
        };
        let mut v = Validation::new(header.alg);
        v.algorithms = algorithms;
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub"]);
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                v.required_spec_claims.insert("aud".into());
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".into());
        }
        jsonwebtoken::decode::<T>(token, &key, &v)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                    TokenError::Invalid("its algorithm does not match the server's key".into())
                }
                _ => TokenError::Invalid(e.to_string()),
            })
    }
}

fn checked_sub(sub: String) -> Result<Arc<str>, TokenError> {
    if sub.is_empty() || sub.len() > 256 {
        return Err(TokenError::Invalid("`sub` must be 1-256 bytes".into()));
    }
    Ok(sub.into())
}

fn public_key(pem: &[u8]) -> anyhow::Result<Keys> {
    use jsonwebtoken::Algorithm::*;
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok(Keys::Public(
            key,
            vec![RS256, RS384, RS512, PS256, PS384, PS512],
        ));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok(Keys::Public(key, vec![ES256, ES384]));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Ok(Keys::Public(key, vec![EdDSA]));
    }
    bail!("not an RSA, EC (P-256, P-384) or Ed25519 public key")
}

fn read_jwks(path: &PathBuf) -> anyhow::Result<JwkSet> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("token_jwks: cannot read {}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .with_context(|| format!("token_jwks: {} is not a JWKS", path.display()))?;
    if set.keys.iter().any(|k| k.common.key_id.is_none()) {
        bail!("token_jwks: every key in {} needs a `kid`", path.display());
    }
    Ok(set)
}

/// The key of `kid` from the JWKS, reading the file again (at most once a minute) when
/// the kid is unknown: keys rotate by adding a new one before tokens use it.
fn jwk_key(
    path: &PathBuf,
    state: &Mutex<JwksState>,
    kid: &str,
) -> Result<(DecodingKey, Vec<Algorithm>), TokenError> {
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    if st.set.find(kid).is_none() && st.loaded.elapsed() >= JWKS_RELOAD {
        st.loaded = Instant::now();
        match read_jwks(path) {
            Ok(set) => st.set = Arc::new(set),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "token_jwks: reload failed; keeping the keys read before")
            }
        }
    }
    let set = st.set.clone();
    drop(st);
    let jwk = set
        .find(kid)
        .ok_or_else(|| TokenError::Invalid(format!("unknown `kid` {kid:?}")))?;
    let key =
        DecodingKey::from_jwk(jwk).map_err(|e| TokenError::Invalid(format!("key {kid:?}: {e}")))?;
    let algorithms = match jwk.common.key_algorithm {
        Some(alg) => vec![alg
            .to_string()
            .parse::<Algorithm>()
            .map_err(|_| TokenError::Invalid(format!("key {kid:?} has an unsupported alg")))?],
        None => key.family().algorithms().to_vec(),
    };
    Ok((key, algorithms))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A namespace's options, with defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespace {
    pub anonymous: bool,
    pub client_publish: bool,
    pub presence: crate::config::PresenceMode,
    /// Messages kept per room (0: only the recovery window, if on).
    pub history_size: usize,
    pub history_ttl: std::time::Duration,
    pub recovery_window: bool,
}

/// `history_ttl` when a namespace keeps history and does not say for how long.
pub const DEFAULT_HISTORY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Default for Namespace {
    fn default() -> Namespace {
        Namespace::from(&NamespaceOptions::default())
    }
}

impl From<&NamespaceOptions> for Namespace {
    fn from(o: &NamespaceOptions) -> Namespace {
        Namespace {
            anonymous: o.anonymous.unwrap_or(false),
            client_publish: o.client_publish.unwrap_or(true),
            presence: o.presence.unwrap_or(crate::config::PresenceMode::Full),
            history_size: o.history_size.unwrap_or(0),
            history_ttl: o.history_ttl.map_or(DEFAULT_HISTORY_TTL, |t| t.0),
            recovery_window: o.recovery_window.unwrap_or(true),
        }
    }
}

/// The name of the namespace of `room`: its prefix before the first `:`, or `default`.
pub fn namespace_name(room: &str) -> &str {
    match room.split_once(':') {
        Some((ns, _)) => ns,
        None => "default",
    }
}

/// The access rules: the token verifier and the namespaces.
pub struct Access {
    pub verifier: Option<Verifier>,
    /// `None`: no `[namespaces]` table, so every namespace exists with default options.
    namespaces: Option<BTreeMap<String, Namespace>>,
}

impl Access {
    pub fn from_config(cfg: &Config) -> anyhow::Result<Access> {
        Ok(Access {
            verifier: Verifier::from_config(cfg)?,
            namespaces: cfg
                .namespaces
                .as_ref()
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.into())).collect()),
        })
    }

    /// Whether tokens are checked (a key is configured).
    pub fn secured(&self) -> bool {
        self.verifier.is_some()
    }

    /// The namespace of `room`, or `invalid_room` when namespaces are configured and its
    /// prefix names none of them.
    pub fn namespace(&self, room: &str) -> Result<Namespace, Failure> {
        let name = namespace_name(room);
        match &self.namespaces {
            None => Ok(Namespace::default()),
            Some(table) => table.get(name).copied().ok_or_else(|| {
                Failure::new(
                    ErrorCode::InvalidRoom,
                    format!("namespace {name:?} is not configured on this server"),
                )
            }),
        }
    }

    /// Whether a client may do `perm` in `room`: with the connection's `identity` (if it
    /// authenticated) and the room token's `grant` (if it joined with one).
    pub fn check(
        &self,
        identity: Option<&Identity>,
        grant: Option<&RoomGrant>,
        room: &str,
        perm: Perm,
    ) -> Result<Namespace, Failure> {
        let ns = self.namespace(room)?;
        if perm == Perm::Publish && !ns.client_publish {
            return Err(Failure::new(
                ErrorCode::Forbidden,
                format!(
                    "only the server publishes in namespace {:?}",
                    namespace_name(room)
                ),
            ));
        }
        if perm == Perm::Presence && ns.presence != crate::config::PresenceMode::Full {
            let mode = match ns.presence {
                crate::config::PresenceMode::Count => "count only",
                _ => "off",
            };
            return Err(Failure::new(
                ErrorCode::Forbidden,
                format!("presence is {mode} in namespace {:?}", namespace_name(room)),
            ));
        }
        if !self.secured() || ns.anonymous || grant.is_some_and(|g| g.perms.has(perm)) {
            return Ok(ns);
        }
        match identity {
            None => Err(Failure::new(
                ErrorCode::Unauthorized,
                format!(
                    "room {room:?} needs a token: authenticate first (an `auth` frame, ?token= or a join `token`)"
                ),
            )),
            Some(id) if id.rooms.allows(room, perm) => Ok(ns),
            Some(_) => Err(Failure::new(
                ErrorCode::Forbidden,
                format!("your token does not allow {} in room {room:?}", perm.name()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_permissions() {
        let claim: RoomsClaim = serde_json::from_str(
            r#"{"chat:*":["join","publish"],"news:today":["join"],"*":["history"]}"#,
        )
        .unwrap();
        let p = claim.permissions().unwrap();
        assert!(p.allows("chat:lobby", Perm::Join));
        assert!(p.allows("chat:lobby", Perm::Publish));
        assert!(!p.allows("chat:lobby", Perm::Presence));
        assert!(p.allows("news:today", Perm::Join));
        assert!(!p.allows("news:todays", Perm::Join));
        assert!(!p.allows("news:today", Perm::Publish));
        assert!(p.allows("anything", Perm::History));
        // The most specific pattern decides: a longer prefix or an exact name can take away.
        let claim: RoomsClaim = serde_json::from_str(
            r#"{"chat:*":["join","publish"],"chat:staff":[],"chat:team-*":["join"],"*":["join"]}"#,
        )
        .unwrap();
        let p = claim.permissions().unwrap();
        assert!(p.allows("chat:lobby", Perm::Publish));
        assert!(
            !p.allows("chat:staff", Perm::Join),
            "an exact name with no permissions denies"
        );
        assert!(p.allows("chat:team-red", Perm::Join));
        assert!(
            !p.allows("chat:team-red", Perm::Publish),
            "the longer prefix decides"
        );
        assert!(p.allows("news:x", Perm::Join));
        assert!(!p.allows("news:x", Perm::Publish));
        let list: RoomsClaim = serde_json::from_str(r#"["chat:a"]"#).unwrap();
        let p = list.permissions().unwrap();
        for perm in [Perm::Join, Perm::Publish, Perm::Presence, Perm::History] {
            assert!(p.allows("chat:a", perm));
        }
        for bad in [r#"["a*b"]"#, r#"["**"]"#, r#"{"a":["fly"]}"#, r#"[""]"#] {
            let c: RoomsClaim = serde_json::from_str(bad).unwrap();
            assert!(c.permissions().is_err(), "{bad}");
        }
    }

    #[test]
    fn namespace_names() {
        assert_eq!(namespace_name("chat:lobby"), "chat");
        assert_eq!(namespace_name("lobby"), "default");
        assert_eq!(namespace_name("a:b:c"), "a");
    }
}
