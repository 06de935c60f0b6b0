//! Who may do what: connection and room tokens, namespaces and origins, on the real binary
//! with real tokens (HS256 minted here, RS256/Ed25519 with keys made by the openssl CLI).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{fresh_id, Closed, Peer, Server, STEP};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use switchboard_client::{Client, Error, Options};

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// An HS256 token over `claims` (with `exp` an hour from now unless given).
fn hs(claims: Value) -> String {
    hs_with(SECRET, claims)
}

fn hs_with(secret: &str, mut claims: Value) -> String {
    if claims.get("exp").is_none() {
        claims["exp"] = json!(now() + 3600);
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .expect("encode")
}

/// A server that checks HS256 tokens, with the namespaces in `namespaces` (TOML).
fn secured(namespaces: &str, extra: &[&str]) -> (Server, PathBuf) {
    let dir = common::temp_dir("auth");
    let config = dir.join("switchboard.toml");
    std::fs::write(
        &config,
        format!("token_hmac_secret = \"{SECRET}\"\n{namespaces}"),
    )
    .unwrap();
    let mut args = vec![
        "--config",
        config.to_str().expect("utf-8"),
        "--data-dir",
        dir.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    (Server::start(&args), dir)
}

async fn connect_token(server: &Server, token: &str) -> Peer {
    let client = tokio::time::timeout(
        STEP,
        Client::connect(&format!("{}?token={token}", server.url())),
    )
    .await
    .expect("connect timed out")
    .expect("connect");
    Peer::from_client(client).await
}

/// Expects the handshake to be refused; returns (status, body).
async fn refused_with(url: &str, options: Options) -> (u16, Value) {
    match tokio::time::timeout(STEP, Client::connect_with(url, options))
        .await
        .expect("connect timed out")
    {
        Err(Error::Refused { status, body }) => (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
        ),
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, the connection was accepted"),
    }
}

async fn request(peer: &mut Peer, mut frame: Value) -> Value {
    frame["id"] = json!(fresh_id());
    peer.request(frame).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_names_the_user_in_welcome_members_and_from() {
    let (server, _dir) = secured("", &[]);
    let token = hs(json!({"sub": "ada", "rooms": ["chat:*"], "info": {"name": "Ada L."}}));
    // On the URL.
    let mut ada = connect_token(&server, &token).await;
    assert_eq!(ada.welcome["user"], "ada");
    let joined = ada.join("chat:lobby", Some(json!({"typing": false}))).await;
    assert_eq!(
        joined["members"][0],
        json!({"conn": ada.conn, "user": "ada", "info": {"name": "Ada L."}, "presence": {"typing": false}})
    );
    // In the Authorization header.
    let grace_token = hs(json!({"sub": "grace", "rooms": {"chat:lobby": ["join", "publish"]}}));
    let client = Client::connect_with(
        &server.url(),
        Options {
            headers: vec![("Authorization".into(), format!("Bearer {grace_token}"))],
            ..Options::default()
        },
    )
    .await
    .expect("connect");
    let mut grace = Peer::from_client(client).await;
    assert_eq!(grace.welcome["user"], "grace");
    grace.join("chat:lobby", None).await;
    grace.publish("chat:lobby", json!("hi")).await;
    let m = ada.next_of("message").await;
    assert_eq!(m["from"]["user"], "grace");
    // In an `auth` frame.
    let mut bob = Peer::connect(&server).await;
    assert_eq!(bob.welcome["user"], Value::Null);
    let ok = request(
        &mut bob,
        json!({"type": "auth", "token": hs(json!({"sub": "bob", "rooms": ["chat:*"], "info": {"n": 1}}))}),
    )
    .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["user"], "bob");
    assert_eq!(ok["info"], json!({"n": 1}));
    assert!(ok["expires_at"].as_u64().is_some_and(|t| t > now()));
    bob.join("chat:lobby", None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_are_refused_at_the_handshake() {
    let (server, dir) = secured("", &[]);
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let claims = json!({"sub": "eve", "exp": now() + 3600, "rooms": ["*"]});
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    let expired = hs(json!({"sub": "eve", "exp": now() - 120}));
    let not_yet = hs(json!({"sub": "eve", "nbf": now() + 600}));
    let wrong_key = hs_with(
        "another-secret-that-is-also-long-enough",
        json!({"sub": "eve"}),
    );
    let room_claim = hs(json!({"sub": "eve", "room": "chat:lobby"}));
    let sub_number = hs(json!({"sub": 7}));
    let rooms_bad = hs(json!({"sub": "eve", "rooms": {"chat:*": ["fly"]}}));
    let info_array = hs(json!({"sub": "eve", "info": [1]}));
    let no_exp = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "eve"}),
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    let huge = hs(json!({"sub": "eve", "pad": "x".repeat(100_000)}));
    let cases = [
        ("alg none", none, "unauthorized"),
        ("expired", expired, "token_expired"),
        ("not yet valid", not_yet, "unauthorized"),
        ("wrong key", wrong_key, "unauthorized"),
        ("room claim", room_claim, "unauthorized"),
        ("sub of the wrong type", sub_number, "unauthorized"),
        ("unknown permission", rooms_bad, "unauthorized"),
        ("info not an object", info_array, "unauthorized"),
        ("no exp", no_exp, "unauthorized"),
        ("100 KB", huge, "unauthorized"),
    ];
    for (what, token, code) in cases {
        let options = Options {
            headers: vec![("Authorization".into(), format!("Bearer {token}"))],
            ..Options::default()
        };
        let (status, body) = refused_with(&server.url(), options).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"], code, "{what}: {body}");
        assert!(body["message"].is_string(), "{what}: {body}");
    }
    // Nothing changed for anyone: a good token still works.
    let mut ok = connect_token(&server, &hs(json!({"sub": "ok", "rooms": ["*"]}))).await;
    ok.join("r", None).await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_auth_frame_closes_4001_and_an_expired_one_4010() {
    let (server, _dir) = secured("", &[]);
    let mut a = Peer::connect(&server).await;
    let err = request(&mut a, json!({"type": "auth", "token": "not.a.jwt"})).await;
    assert_eq!(err["code"], "unauthorized", "{err}");
    let (_, how) = a.until_closed(STEP).await;
    assert_eq!(how, Closed::Code(4001));
    let mut b = Peer::connect(&server).await;
    let err = request(
        &mut b,
        json!({"type": "auth", "token": hs(json!({"sub": "b", "exp": now() - 120}))}),
    )
    .await;
    assert_eq!(err["code"], "unauthorized", "{err}");
    let (_, how) = b.until_closed(STEP).await;
    assert_eq!(how, Closed::Code(4010));
    let mut c = Peer::connect(&server).await;
    let err = request(&mut c, json!({"type": "auth", "token": 5})).await;
    assert_eq!(err["code"], "bad_request", "{err}");
}

const NAMESPACES: &str = r#"
[namespaces.default]
[namespaces.chat]
[namespaces.public]
anonymous = true
[namespaces.news]
anonymous = true
client_publish = false
[namespaces.quiet]
anonymous = true
presence = false
"#;

#[tokio::test(flavor = "multi_thread")]
async fn permissions_come_from_the_token_and_the_namespace() {
    let (server, _dir) = secured(NAMESPACES, &[]);
    let mut anon = Peer::connect(&server).await;
    // Without a token: only anonymous namespaces.
    let err = request(&mut anon, json!({"type": "join", "room": "chat:lobby"})).await;
    assert_eq!(err["code"], "unauthorized", "{err}");
    anon.join("public:square", None).await;
    anon.publish("public:square", json!(1)).await;
    let err = request(&mut anon, json!({"type": "join", "room": "nowhere:x"})).await;
    assert_eq!(err["code"], "invalid_room", "{err}");
    // client_publish = false: even the members may only read.
    anon.join("news:today", None).await;
    let err = request(
        &mut anon,
        json!({"type": "publish", "room": "news:today", "data": 1}),
    )
    .await;
    assert_eq!(err["code"], "forbidden", "{err}");
    // presence = false: no list, no events.
    let mut other = Peer::connect(&server).await;
    other.join("quiet:room", Some(json!({"name": "o"}))).await;
    let joined = anon.join("quiet:room", Some(json!({"name": "a"}))).await;
    assert_eq!(joined["members"], json!([]), "{joined}");
    let err = request(&mut anon, json!({"type": "members", "room": "quiet:room"})).await;
    assert_eq!(err["code"], "forbidden", "{err}");
    let err = request(
        &mut anon,
        json!({"type": "presence", "room": "quiet:room", "presence": {}}),
    )
    .await;
    assert_eq!(err["code"], "forbidden", "{err}");
    assert!(
        other
            .barrier()
            .await
            .iter()
            .all(|f| f["type"] != "presence"),
        "no presence events in a presence-off namespace"
    );

    // A token with some permissions in some rooms.
    let token = hs(
        json!({"sub": "ada", "rooms": {"chat:lobby": ["join"], "chat:team-*": ["join", "publish", "presence"]}}),
    );
    let mut ada = connect_token(&server, &token).await;
    ada.join("chat:lobby", None).await;
    let err = request(
        &mut ada,
        json!({"type": "publish", "room": "chat:lobby", "data": 1}),
    )
    .await;
    assert_eq!(err["code"], "forbidden", "{err}");
    let err = request(&mut ada, json!({"type": "join", "room": "chat:other"})).await;
    assert_eq!(err["code"], "forbidden", "{err}");
    ada.join("chat:team-red", None).await;
    ada.publish("chat:team-red", json!("go")).await;
    let err = request(
        &mut ada,
        json!({"type": "history", "room": "chat:team-red"}),
    )
    .await;
    assert_eq!(err["code"], "forbidden", "history is not granted: {err}");
    // An unprefixed room is in `default`, which needs a token permission.
    let err = request(&mut ada, json!({"type": "join", "room": "lobby"})).await;
    assert_eq!(err["code"], "forbidden", "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn room_tokens_grant_one_room_to_one_user() {
    let (server, _dir) = secured("", &[]);
    let mut ada = connect_token(&server, &hs(json!({"sub": "ada"}))).await;
    let room_token =
        |sub: &str, room: &str| hs(json!({"sub": sub, "room": room, "info": {"role": "guest"}}));
    let err = request(&mut ada, json!({"type": "join", "room": "private:1"})).await;
    assert_eq!(err["code"], "forbidden", "{err}");
    let joined = request(
        &mut ada,
        json!({"type": "join", "room": "private:1", "token": room_token("ada", "private:1")}),
    )
    .await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["members"][0]["info"], json!({"role": "guest"}));
    ada.publish("private:1", json!("in")).await;
    for (token, what) in [
        (room_token("bob", "private:2"), "another user's"),
        (room_token("ada", "private:3"), "another room's"),
        (
            hs(json!({"sub": "ada", "rooms": ["*"]})),
            "a connection token",
        ),
    ] {
        let err = request(
            &mut ada,
            json!({"type": "join", "room": "private:2", "token": token}),
        )
        .await;
        assert_eq!(err["code"], "forbidden", "{what}: {err}");
    }
    // An anonymous connection cannot use a room token: its `sub` cannot match.
    let mut anon = Peer::connect(&server).await;
    let err = request(
        &mut anon,
        json!({"type": "join", "room": "private:1", "token": room_token("ada", "private:1")}),
    )
    .await;
    assert_eq!(err["code"], "unauthorized", "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_keeps_the_connection_and_an_unrefreshed_token_expires_with_4010() {
    let (server, _dir) = secured("", &["--token-expiry-grace", "300ms"]);
    let short =
        |secs: u64, rooms: Value| hs(json!({"sub": "ada", "exp": now() + secs, "rooms": rooms}));
    let mut ada = connect_token(&server, &short(2, json!(["a", "b"]))).await;
    ada.join("a", None).await;
    ada.join("b", None).await;
    // Refreshed for another user: refused, nothing changes.
    let err = request(
        &mut ada,
        json!({"type": "auth", "token": hs(json!({"sub": "mallory", "rooms": ["*"]}))}),
    )
    .await;
    assert_eq!(err["code"], "forbidden", "{err}");
    // Refreshed without room b: b is left, with the reason.
    let ok = request(
        &mut ada,
        json!({"type": "auth", "token": short(3600, json!(["a"]))}),
    )
    .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let left = ada.next_of("left").await;
    assert_eq!(left["room"], "b");
    assert!(left["reason"].is_string(), "{left}");
    // Past the first token's expiry, the connection is still there.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    ada.publish("a", json!("still here")).await;

    // Without a refresh: closed with 4010 soon after `exp`.
    let mut bob = connect_token(
        &server,
        &hs(json!({"sub": "bob", "exp": now() + 1, "rooms": ["*"]})),
    )
    .await;
    bob.join("a", None).await;
    let (frames, how) = bob.until_closed(Duration::from_secs(8)).await;
    assert_eq!(how, Closed::Code(4010), "{frames:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_of_other_origins_cannot_open_websockets() {
    let server = Server::start(&[]);
    let with_origin = |origin: &str| Options {
        headers: vec![("Origin".into(), origin.into())],
        ..Options::default()
    };
    let (status, body) = refused_with(&server.url(), with_origin("https://evil.example")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden_origin"))
    );
    let (status, _) = refused_with(&server.url(), with_origin("null")).await;
    assert_eq!(status, 403);
    // The page's own origin (the Host the client sends is 127.0.0.1:PORT), and no Origin.
    let own = format!("http://{}", server.addr);
    Client::connect_with(&server.url(), with_origin(&own))
        .await
        .expect("same origin");
    Client::connect(&server.url()).await.expect("no Origin");
    server
        .wait_for_log("refused origin line", |l| l.contains("origin not allowed"))
        .await;

    let listed = Server::start(&[
        "--allowed-origins",
        "https://app.example.com,https://*.example.org",
    ]);
    // The server's own pages stay allowed beside the list.
    let own = format!("http://{}", listed.addr);
    Client::connect_with(&listed.url(), with_origin(&own))
        .await
        .expect("same origin with a list");
    for ok in [
        "https://app.example.com",
        "https://a.example.org",
        "https://b.c.example.org",
    ] {
        Client::connect_with(&listed.url(), with_origin(ok))
            .await
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "http://app.example.com",
        "https://example.org",
        "https://app.example.com.evil.io",
        "https://evilexample.org",
    ] {
        let (status, _) = refused_with(&listed.url(), with_origin(bad)).await;
        assert_eq!(status, 403, "{bad}");
    }
}

/// Makes a key pair with the openssl CLI; returns (private PEM, public PEM) paths.
fn openssl_keys(dir: &Path, kind: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{kind}.key"));
    let public = dir.join(format!("{kind}.pub"));
    let mut gen = std::process::Command::new("openssl");
    gen.arg("genpkey");
    match kind {
        "rsa" => gen.args(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
        "ed25519" => gen.args(["-algorithm", "ED25519"]),
        _ => gen.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
    };
    let out = gen
        .arg("-out")
        .arg(&private)
        .output()
        .expect("openssl genpkey");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .output()
        .expect("openssl pkey");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (private, public)
}

#[tokio::test(flavor = "multi_thread")]
async fn public_keys_accept_only_their_own_algorithm_family() {
    let dir = common::temp_dir("auth-keys");
    for (kind, alg) in [
        ("rsa", Algorithm::RS256),
        ("ed25519", Algorithm::EdDSA),
        ("ec", Algorithm::ES256),
    ] {
        let (private, public) = openssl_keys(&dir, kind);
        let server = Server::start(&["--token-public-key", public.to_str().expect("utf-8")]);
        let pem = std::fs::read(&private).unwrap();
        let key = match kind {
            "rsa" => EncodingKey::from_rsa_pem(&pem),
            "ed25519" => EncodingKey::from_ed_pem(&pem),
            _ => EncodingKey::from_ec_pem(&pem),
        }
        .expect("private key");
        let claims = json!({"sub": "ada", "exp": now() + 600, "rooms": ["*"]});
        let good = encode(&Header::new(alg), &claims, &key).expect("sign");
        let mut ada = connect_token(&server, &good).await;
        assert_eq!(ada.welcome["user"], "ada", "{kind}");
        ada.join("r", None).await;
        // Key confusion: an HS256 token whose secret is the public key's own PEM text.
        let public_pem = std::fs::read(&public).unwrap();
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&public_pem).unwrap(),
        )
        .unwrap();
        let options = Options {
            headers: vec![("Authorization".into(), format!("Bearer {confused}"))],
            ..Options::default()
        };
        let (status, body) = refused_with(&server.url(), options).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "{kind}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_chooses_the_key_by_kid() {
    let dir = common::temp_dir("auth-jwks");
    let jwks = dir.join("jwks.json");
    let secret_b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET)
    };
    std::fs::write(
        &jwks,
        json!({"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": secret_b64}]}).to_string(),
    )
    .unwrap();
    let server = Server::start(&["--token-jwks", jwks.to_str().expect("utf-8")]);
    let with_kid = |kid: Option<&str>| {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = kid.map(str::to_owned);
        encode(
            &h,
            &json!({"sub": "ada", "exp": now() + 600, "rooms": ["*"]}),
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let ada = connect_token(&server, &with_kid(Some("k1"))).await;
    assert_eq!(ada.welcome["user"], "ada");
    for (what, token) in [
        ("wrong kid", with_kid(Some("k2"))),
        ("no kid", with_kid(None)),
    ] {
        let options = Options {
            headers: vec![("Authorization".into(), format!("Bearer {token}"))],
            ..Options::default()
        };
        let (status, body) = refused_with(&server.url(), options).await;
        assert_eq!(status, 401, "{what}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_obey_the_same_rules() {
    let (server, _dir) = secured("", &[]);
    let doc = |token: Option<&str>| {
        let mut url = format!("ws://{}/yjs/notes:plan", server.addr);
        if let Some(t) = token {
            url.push_str("?token=");
            url.push_str(t);
        }
        url
    };
    // No token: 401; a token without the room: 403.
    let (status, _) = refused_with(&doc(None), common::no_subprotocol()).await;
    assert_eq!(status, 401);
    let other = hs(json!({"sub": "x", "rooms": ["chat:*"]}));
    let (status, _) = refused_with(&doc(Some(&other)), common::no_subprotocol()).await;
    assert_eq!(status, 403);
    // Read-only: connects and syncs, but an edit closes it with 4003.
    let reader = hs(json!({"sub": "r", "rooms": {"notes:*": ["join"]}}));
    let mut c = Client::connect_with(&doc(Some(&reader)), common::no_subprotocol())
        .await
        .expect("read-only connect");
    // A real edit: an update that inserts text, as a y-websocket sync update message.
    let edit = {
        use yrs::updates::encoder::Encode;
        use yrs::{Doc, ReadTxn, StateVector, Text, Transact};
        let d = Doc::new();
        let text = d.get_or_insert_text("t");
        text.push(&mut d.transact_mut(), "vandalism");
        let update = d
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        yrs::sync::Message::Sync(yrs::sync::SyncMessage::Update(update)).encode_v1()
    };
    c.send_binary(&edit).await.expect("send");
    let code = tokio::time::timeout(STEP, async {
        loop {
            match c.recv().await {
                Ok(_) => continue,
                Err(e) => return e.close_code(),
            }
        }
    })
    .await
    .expect("closed");
    assert_eq!(code, Some(4003));
    // A writer is allowed in.
    let writer = hs(json!({"sub": "w", "rooms": ["notes:*"]}));
    Client::connect_with(&doc(Some(&writer)), common::no_subprotocol())
        .await
        .expect("writer connect");
}

/// `switchboard token` mints what the server accepts: a connection token with its rooms and
/// permissions, and a room token.
#[tokio::test(flavor = "multi_thread")]
async fn the_token_command_mints_tokens_the_server_accepts() {
    let (server, _dir) = secured("", &[]);
    let mint = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("token")
            .args(args)
            .env("SWITCHBOARD_TOKEN_HMAC_SECRET", SECRET)
            .output()
            .expect("run switchboard token");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    };
    let token = mint(&[
        "--sub",
        "ada",
        "--rooms",
        "chat:*",
        "--permissions",
        "join",
        "--ttl",
        "10m",
        "--info",
        r#"{"name":"Ada"}"#,
    ]);
    let mut ada = connect_token(&server, &token).await;
    assert_eq!(ada.welcome["user"], "ada");
    let joined = ada.join("chat:x", None).await;
    assert_eq!(joined["members"][0]["info"], json!({"name": "Ada"}));
    let err = request(
        &mut ada,
        json!({"type": "publish", "room": "chat:x", "data": 1}),
    )
    .await;
    assert_eq!(err["code"], "forbidden", "join only: {err}");
    let room_token = mint(&["--sub", "ada", "--room", "vip:1"]);
    let joined = request(
        &mut ada,
        json!({"type": "join", "room": "vip:1", "token": room_token}),
    )
    .await;
    assert_eq!(joined["type"], "joined", "{joined}");
    // No key: a clear error, exit status 2.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["token", "--sub", "x"])
        .env_remove("SWITCHBOARD_TOKEN_HMAC_SECRET")
        .env_remove("SWITCHBOARD_CONFIG")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token_hmac_secret"));
}

/// A document connection cannot refresh its token in place (y-websocket has no such
/// message), so it is closed with 4010 once the token expires; the editor reconnects with a
/// fresh one.
#[tokio::test(flavor = "multi_thread")]
async fn a_document_connection_closes_with_4010_when_its_token_expires() {
    let (server, _dir) = secured("", &["--token-expiry-grace", "200ms"]);
    let token = hs(json!({"sub": "ada", "exp": now() + 1, "rooms": ["notes:*"]}));
    let url = format!("ws://{}/yjs/notes:a?token={token}", server.addr);
    let mut c = Client::connect_with(&url, common::no_subprotocol())
        .await
        .expect("connect");
    let code = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            if let Err(e) = c.recv().await {
                return e.close_code();
            }
        }
    })
    .await
    .expect("closed after the token expired");
    assert_eq!(code, Some(4010));
}
