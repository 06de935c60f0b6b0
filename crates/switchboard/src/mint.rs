//! `switchboard token`: mints a token from the configured key, as a backend would, for
//! local use, scripts and tests (like `centrifugo gentoken`).

use anyhow::{bail, Context};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

use crate::auth::unix_now;
use crate::config::{Config, ServeArgs, TokenArgs};

/// The token for `args`, signed with the HMAC secret or `--private-key`.
pub fn mint(args: TokenArgs) -> anyhow::Result<String> {
    let cfg = Config::load(ServeArgs {
        config: args.config.clone(),
        token_hmac_secret: args.token_hmac_secret.clone(),
        ..ServeArgs::default()
    })?;
    let (alg, key) = match &args.private_key {
        Some(path) => {
            let pem =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            if let Ok(k) = EncodingKey::from_rsa_pem(&pem) {
                (Algorithm::RS256, k)
            } else if let Ok(k) = EncodingKey::from_ec_pem(&pem) {
                (Algorithm::ES256, k)
            } else if let Ok(k) = EncodingKey::from_ed_pem(&pem) {
                (Algorithm::EdDSA, k)
            } else {
                bail!(
                    "{} is not an RSA, EC or Ed25519 private key (PEM)",
                    path.display()
                );
            }
        }
        None => match &cfg.token_hmac_secret {
            Some(secret) => (
                Algorithm::HS256,
                EncodingKey::from_secret(secret.as_bytes()).context("token_hmac_secret")?,
            ),
            None => bail!(
                "no key to sign with: set token_hmac_secret (flag, environment or config \
                 file), or give --private-key"
            ),
        },
    };
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(args.sub));
    claims.insert("iat".into(), json!(unix_now()));
    claims.insert(
        "exp".into(),
        json!(unix_now() + args.ttl.0.as_secs().max(1)),
    );
    if let Some(aud) = &cfg.token_audience {
        claims.insert("aud".into(), json!(aud));
    }
    if let Some(iss) = &cfg.token_issuer {
        claims.insert("iss".into(), json!(iss));
    }
    if let Some(info) = &args.info {
        let v: Value = serde_json::from_str(info).context("--info is not JSON")?;
        if !v.is_object() {
            bail!("--info must be a JSON object");
        }
        claims.insert("info".into(), v);
    }
    let perms = args.permissions.clone();
    match &args.room {
        Some(room) => {
            if !args.rooms.is_empty() {
                bail!("--room makes a room token; --rooms belongs to connection tokens");
            }
            claims.insert("room".into(), json!(room));
            if let Some(p) = perms {
                claims.insert("permissions".into(), json!(p));
            }
        }
        None if !args.rooms.is_empty() => {
            let rooms = match perms {
                None => json!(args.rooms),
                Some(p) => {
                    Value::Object(args.rooms.iter().map(|r| (r.clone(), json!(p))).collect())
                }
            };
            claims.insert("rooms".into(), rooms);
        }
        None => {}
    }
    let mut header = Header::new(alg);
    header.kid = args.kid.clone();
    jsonwebtoken::encode(&header, &Value::Object(claims), &key).context("cannot sign the token")
}
