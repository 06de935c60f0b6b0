// An app backend for Switchboard: the part of a real product that knows who people are.
//
// Switchboard stores no users. This backend logs a person in (a name is enough here: put your
// real login in its place), keeps the session in a signed cookie, and tells Switchboard who
// the person is and what they may do by minting short-lived tokens (JWT, HS256) with the
// secret the server is configured with (--token-hmac-secret). It publishes on its own through
// the server's HTTP API with an API key (--api-keys).
//
//   GET  /                 login form, or who you are (and, for staff, an announcement form)
//   POST /login            name → session cookie → redirect to the chat
//   POST /logout
//   GET  /chat/…, /sdk/…   the chat app and SDK, fetched from the Switchboard server, served
//                          from this origin with the auth configuration in the page
//   GET  /editor/…         the collaborative editor, likewise
//   POST /auth/me          { user, name, staff }                        (401 without a session)
//   POST /auth/token       connection token { token, expires_at }       (401 without a session)
//   POST /auth/room-token  { room } → room token { token }              (403 for a staff room)
//   POST /auth/editor-token  connection token for the editor's documents { token, expires_at }
//   POST /announce         { room, text } → POST /api/publish           (staff only)
//
// The chat page is served from here rather than from the Switchboard server so that its
// token requests are same-origin (the session cookie goes with them, no CORS); it opens its
// WebSocket straight to the Switchboard server, which must list this origin in
// --allowed-origins.

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import express from "express";
import jwt from "jsonwebtoken";

const SESSION_COOKIE = "sb_session";
const SESSION_MAX_AGE_S = 12 * 60 * 60;
const ROOM_PREFIX = "chat:";
const DIRECTORY_ROOM = "chat:_rooms"; // the chat's room list (web/chat/util.js)
const NAME = /^[\p{L}\p{N} ._'-]{1,32}$/u;
const ROOM = /^chat:[A-Za-z0-9_.-]{1,64}$/;
const EDITOR_DOCS = "doc:*"; // the editor's documents (web/editor/util.js)
const EDITOR_INDEX = "editor:index"; // its list of documents

/**
 * The express app. `config`:
 *   switchboardUrl  the server's HTTP origin, e.g. http://127.0.0.1:8080 (proxy and API)
 *   publicWsUrl     the WebSocket URL browsers use (default: switchboardUrl's, ws[s]://…/ws)
 *   tokenSecret     the server's --token-hmac-secret
 *   apiKey          one of the server's --api-keys
 *   tokenTtlS       lifetime of connection tokens (default 60 s: the SDK refreshes them)
 *   staff           names of staff members (case-insensitive): they may enter staff rooms
 *   staffRooms      rooms for staff only (default ["chat:staff"])
 *   sessionSecret   signs session cookies (default: random, so sessions end with the process)
 *   onToken         (kind, claims) => void, called for every token minted (for tests)
 */
export function createApp(config) {
  const {
    switchboardUrl,
    tokenSecret,
    apiKey,
    tokenTtlS = 60,
    staff = [],
    staffRooms = ["chat:staff"],
    sessionSecret = randomBytes(32).toString("hex"),
    onToken = () => {},
  } = config;
  if (!switchboardUrl) throw new Error("switchboardUrl is required (the Switchboard server's http:// origin)");
  if (!tokenSecret || tokenSecret.length < 32) throw new Error("tokenSecret must be the server's token secret (32 bytes or more)");
  const upstream = new URL(switchboardUrl);
  const publicWsUrl =
    config.publicWsUrl ?? `${upstream.protocol === "https:" ? "wss" : "ws"}://${upstream.host}/ws`;
  const staffNames = new Set(staff.map((n) => n.toLowerCase()));
  const staffOnly = new Set(staffRooms);

  const app = express();
  app.disable("x-powered-by");
  app.use(express.urlencoded({ extended: false, limit: "8kb" }));
  app.use(express.json({ limit: "8kb" }));

  // ---------------------------------------------------------------------------------------
  // Sessions: a signed cookie { user, name, staff, iat }. HttpOnly (no script reads it),
  // SameSite=Lax (not sent with other sites' POSTs).

  const sign = (payload) => createHmac("sha256", sessionSecret).update(payload).digest("base64url");

  function readSession(req) {
    const raw = parseCookies(req.headers.cookie)[SESSION_COOKIE];
    if (!raw) return null;
    const [payload, mac] = raw.split(".");
    if (!payload || !mac) return null;
    const expected = Buffer.from(sign(payload));
    const given = Buffer.from(mac);
    if (expected.length !== given.length || !timingSafeEqual(expected, given)) return null;
    try {
      const session = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
      if (Date.now() / 1000 - session.iat > SESSION_MAX_AGE_S) return null;
      return session;
    } catch {
      return null;
    }
  }

  function writeSession(res, session) {
    const payload = Buffer.from(JSON.stringify(session)).toString("base64url");
    res.cookie(SESSION_COOKIE, `${payload}.${sign(payload)}`, {
      httpOnly: true,
      sameSite: "lax",
      secure: config.secureCookies ?? false,
      maxAge: SESSION_MAX_AGE_S * 1000,
      path: "/",
    });
  }

  // State-changing requests from pages of other origins are refused (on top of SameSite).
  function sameOrigin(req, res, next) {
    const origin = req.headers.origin;
    if (origin && origin !== `${req.protocol}://${req.headers.host}`) {
      return res.status(403).json({ error: "forbidden_origin", message: `requests from ${origin} are not accepted` });
    }
    next();
  }

  function requireSession(req, res, next) {
    req.session = readSession(req);
    if (!req.session) return res.status(401).json({ error: "unauthorized", message: "log in first", login: "/" });
    next();
  }

  // ---------------------------------------------------------------------------------------
  // Pages: login, and who you are.

  app.get("/", (req, res) => {
    const session = readSession(req);
    const next = safeNext(req.query.next);
    res.set("content-security-policy", PAGE_CSP).type("html");
    if (!session) return res.send(loginPage(next, req.query.error));
    res.send(homePage(session, req.query.announced));
  });

  app.post("/login", sameOrigin, (req, res) => {
    const name = String(req.body?.name ?? "").trim();
    const next = safeNext(req.body?.next);
    if (!NAME.test(name)) {
      return res.redirect(303, `/?error=${encodeURIComponent("Enter a name: 1–32 letters, digits, spaces, . _ ' -")}&next=${encodeURIComponent(next)}`);
    }
    // The user id (`sub`) is the name, lowercased: one person per name in this demo.
    const user = name.toLowerCase().replace(/\s+/g, "-");
    writeSession(res, { user, name, staff: staffNames.has(name.toLowerCase()), iat: Math.floor(Date.now() / 1000) });
    res.redirect(303, next);
  });

  app.post("/logout", sameOrigin, (req, res) => {
    res.clearCookie(SESSION_COOKIE, { path: "/" });
    res.redirect(303, "/");
  });

  // ---------------------------------------------------------------------------------------
  // Tokens.

  app.post("/auth/me", sameOrigin, requireSession, (req, res) => {
    const { user, name, staff: isStaff } = req.session;
    res.json({ user, name, staff: isStaff });
  });

  // The connection token: who the person is (`sub`, `info`) and the rooms the connection may
  // use without a room token: only the chat's room list. Each chat room is joined with a room
  // token from /auth/room-token, so this backend decides room by room (a pattern like
  // `chat:*` in `rooms` would cover every chat room, staff rooms included).
  app.post("/auth/token", sameOrigin, requireSession, (req, res) => {
    const { user, name, staff: isStaff } = req.session;
    const claims = { sub: user, info: { name, staff: isStaff }, rooms: { [DIRECTORY_ROOM]: ["join", "presence"] } };
    const token = jwt.sign(claims, tokenSecret, { algorithm: "HS256", expiresIn: tokenTtlS });
    onToken("connection", claims);
    res.set("cache-control", "no-store").json({ token, expires_at: Math.floor(Date.now() / 1000) + tokenTtlS });
  });

  // The editor's connection token (web/editor): its documents are `doc:<name>` and its list
  // of documents `editor:index` (/yjs/{doc}); `join` reads a document, `publish` edits it.
  app.post("/auth/editor-token", sameOrigin, requireSession, (req, res) => {
    const { user, name, staff: isStaff } = req.session;
    const perms = ["join", "publish"];
    const claims = { sub: user, info: { name, staff: isStaff }, rooms: { [EDITOR_DOCS]: perms, [EDITOR_INDEX]: perms } };
    const token = jwt.sign(claims, tokenSecret, { algorithm: "HS256", expiresIn: tokenTtlS });
    onToken("editor", claims);
    res.set("cache-control", "no-store").json({ token, expires_at: Math.floor(Date.now() / 1000) + tokenTtlS });
  });

  // A room token for one chat room: join, publish, presence and history (the chat shows the
  // room's recent messages when someone arrives); staff rooms for staff only.
  app.post("/auth/room-token", sameOrigin, requireSession, (req, res) => {
    const room = String(req.body?.room ?? "");
    if (!ROOM.test(room) || room === DIRECTORY_ROOM) {
      return res.status(400).json({ error: "bad_request", message: `not a chat room: ${JSON.stringify(room)}` });
    }
    const { user, name, staff: isStaff } = req.session;
    if (staffOnly.has(room) && !isStaff) {
      const label = `#${room.slice(ROOM_PREFIX.length)}`;
      return res.status(403).json({ error: "forbidden", message: `${label} is for staff only` });
    }
    const claims = { sub: user, room, permissions: ["join", "publish", "presence", "history"], info: { name, staff: isStaff } };
    const token = jwt.sign(claims, tokenSecret, { algorithm: "HS256", expiresIn: 60 });
    onToken("room", claims);
    res.set("cache-control", "no-store").json({ token });
  });

  // ---------------------------------------------------------------------------------------
  // Publishing from the backend: POST /api/publish with the API key. The message reaches
  // every member with `from.server: true`; no client can forge that.

  app.post("/announce", sameOrigin, requireSession, async (req, res) => {
    const wantsJson = req.is("application/json");
    if (!req.session.staff) return res.status(403).json({ error: "forbidden", message: "only staff make announcements" });
    const room = ROOM_PREFIX + String(req.body?.room ?? "").replace(/^#/, "").replace(/^chat:/, "");
    const text = String(req.body?.text ?? "").trim().slice(0, 1000);
    if (!ROOM.test(room) || text === "") return res.status(400).json({ error: "bad_request", message: "a room and a text, please" });
    if (!apiKey) return res.status(503).json({ error: "unavailable", message: "no API key configured (SWITCHBOARD_API_KEY)" });
    let reply;
    try {
      const response = await fetch(new URL("/api/publish", upstream), {
        method: "POST",
        headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
        body: JSON.stringify({ room, data: { text, announcement: true, by: req.session.name } }),
      });
      reply = await response.json();
      if (!response.ok) return res.status(502).json({ error: "upstream", message: reply.message ?? `HTTP ${response.status}` });
    } catch (error) {
      return res.status(502).json({ error: "upstream", message: `Switchboard: ${error.message}` });
    }
    if (wantsJson) return res.json(reply);
    res.redirect(303, `/?announced=${encodeURIComponent(room)}`);
  });

  // ---------------------------------------------------------------------------------------
  // The chat, the editor and the SDK, from the Switchboard server, served from this origin.
  // Their pages get the auth configuration (meta tags) and the upstream's CSP — which holds
  // the hashes of their inline scripts (the editor's import map) — with the Switchboard
  // server's socket added to connect-src.

  const wsOrigin = new URL(publicWsUrl).origin.replace(/^http/, "ws");
  const authMeta = '\n<meta name="switchboard-auth" content="/auth">\n<meta name="switchboard-login" content="/">';
  const proxied = [
    { dir: "chat", meta: `<meta name="switchboard-url" content="${escapeHtml(publicWsUrl)}">` },
    { dir: "editor", meta: `<meta name="switchboard-yjs-url" content="${escapeHtml(`${wsOrigin}/yjs`)}">` },
    { dir: "sdk", meta: null },
  ];
  for (const { dir, meta } of proxied) {
    if (meta !== null) {
      app.get(`/${dir}`, (req, res, next) =>
        req.originalUrl.split("?")[0] === `/${dir}` ? res.redirect(301, `/${dir}/`) : next(),
      );
    }
    app.get(`/${dir}/{*path}`, async (req, res) => {
      const isPage = meta !== null && (req.path === `/${dir}/` || req.path === `/${dir}/index.html`);
      if (isPage && !readSession(req)) {
        return res.redirect(303, `/?next=${encodeURIComponent(req.originalUrl)}`);
      }
      let response;
      try {
        response = await fetch(new URL(req.path, upstream));
      } catch (error) {
        return res.status(502).type("text").send(`the Switchboard server at ${upstream.origin} is not reachable: ${error.message}`);
      }
      if (!response.ok) return res.status(response.status).type("text").send(`${req.path}: ${response.status}`);
      res.set("content-type", response.headers.get("content-type") ?? "application/octet-stream");
      res.set("cache-control", "no-cache");
      res.set("x-content-type-options", "nosniff");
      if (!isPage) return res.send(Buffer.from(await response.arrayBuffer()));
      const html = (await response.text()).replace("<head>", `<head>\n${meta}${authMeta}`);
      res.set("content-security-policy", withConnectSrc(response.headers.get("content-security-policy"), wsOrigin)).send(html);
    });
  }

  return app;
}

/** `csp` (the upstream's, or a strict default) with `origin` added to its connect-src. */
function withConnectSrc(csp, origin) {
  const directives = (csp ?? "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'")
    .split(";")
    .map((d) => d.trim())
    .filter(Boolean);
  const i = directives.findIndex((d) => d.split(/\s+/)[0].toLowerCase() === "connect-src");
  if (i < 0) directives.push(`connect-src 'self' ${origin}`);
  else directives[i] = `${directives[i]} ${origin}`;
  return directives.join("; ");
}

const PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/** A redirect target on this site only ("/chat/?room=x"), never another origin. */
function safeNext(next) {
  const value = typeof next === "string" ? next : "";
  return value.startsWith("/") && !value.startsWith("//") && !value.startsWith("/\\") ? value : "/chat/?room=lobby";
}

function parseCookies(header = "") {
  const out = {};
  for (const part of header.split(";")) {
    const i = part.indexOf("=");
    if (i > 0) out[part.slice(0, i).trim()] = decodeURIComponent(part.slice(i + 1).trim());
  }
  return out;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

const STYLE = `<style>
body { font: 16px/1.5 system-ui, sans-serif; max-width: 28rem; margin: 4rem auto; padding: 0 1rem; color: #1f2937; }
h1 { font-size: 1.4rem; } label { display: block; margin: 1rem 0 .3rem; font-weight: 600; }
input { font: inherit; padding: .5rem .6rem; width: 100%; box-sizing: border-box; border: 1px solid #cbd5e1; border-radius: 8px; }
button, .button { font: inherit; margin-top: 1rem; padding: .5rem 1rem; border: 0; border-radius: 8px; background: #4f46e5; color: white; cursor: pointer; text-decoration: none; display: inline-block; }
.secondary { background: #e2e8f0; color: #1f2937; } .error { color: #b91c1c; } .muted { color: #64748b; font-size: .9rem; }
</style>`;

function loginPage(next, error) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · Switchboard example</title>${STYLE}</head><body>
<h1>Log in</h1>
<p class="muted">This example backend trusts any name: put your real login here.</p>
<form id="login" method="post" action="/login">
<input type="hidden" name="next" value="${escapeHtml(next)}">
<label for="name">Your name</label>
<input id="name" name="name" autocomplete="nickname" maxlength="32" required autofocus>
${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ""}
<button type="submit">Log in</button>
</form></body></html>`;
}

function homePage(session, announced) {
  const announce = session.staff
    ? `<h2>Announce</h2><form id="announce" method="post" action="/announce">
<label for="room">Room</label><input id="room" name="room" value="lobby" required>
<label for="text">Text</label><input id="text" name="text" required>
<button type="submit">Publish through the HTTP API</button></form>
${announced ? `<p class="muted">Announced in ${escapeHtml(announced)}.</p>` : ""}`
    : "";
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Switchboard example</title>${STYLE}</head><body>
<h1>Hello, ${escapeHtml(session.name)}</h1>
<p class="muted">Signed in as <code>${escapeHtml(session.user)}</code>${session.staff ? " (staff)" : ""}.</p>
<a class="button" href="/chat/?room=lobby">Open the chat</a>
<a class="button" href="/editor/">Open the editor</a>
${announce}
<form method="post" action="/logout"><button class="secondary" type="submit">Log out</button></form>
</body></html>`;
}
