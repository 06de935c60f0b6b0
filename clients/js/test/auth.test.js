import assert from "node:assert/strict";
import { test } from "node:test";

import { jwtClaims, refreshDelayMs } from "../src/auth.js";
import { flush, joined, setup } from "./fakes.js";

/** An unsigned JWT-shaped token with these claims (the client reads, never checks, them). */
const jwt = (claims) => {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.signature`;
};

/** A client whose getToken hands out tok-1, tok-2, ... and counts its calls. */
function withTokens(options = {}) {
  const calls = { n: 0 };
  const t = setup({ getToken: async () => `tok-${++calls.n}`, ...options });
  return { ...t, calls };
}

/** Opens the newest socket, answers welcome and the auth frame (expiring in `ttlS` s). */
async function accept(t, { ttlS = 60, user = "ada" } = {}) {
  await flush();
  const ws = t.WebSocket.last;
  ws.open();
  ws.welcome();
  ws.reply("auth", { type: "ok", user, expires_at: Math.floor(t.clock.now() / 1000) + ttlS, info: null });
  await flush();
  return ws;
}

test("jwtClaims reads a token's payload (base64url, UTF-8) and is null for anything else", () => {
  assert.deepEqual(jwtClaims(jwt({ sub: "åda", exp: 10 })), { sub: "åda", exp: 10 });
  assert.equal(jwtClaims("not a token"), null);
  assert.equal(jwtClaims(null), null);
});

test("refresh time: 80 % of what is left or 30 s before expiry, whichever is earlier, not before half", () => {
  const now = 1_000_000_000_000;
  const at = (s) => now / 1000 + s;
  assert.equal(refreshDelayMs(at(3600), now, "opaque"), 2_880_000, "1 h: at 48 min");
  assert.equal(refreshDelayMs(at(120), now, "opaque"), 90_000, "2 min: 30 s before");
  assert.equal(refreshDelayMs(at(60), now, "opaque"), 30_000, "60 s: at half");
  assert.equal(refreshDelayMs(at(4), now, "opaque"), 2_000, "4 s: at half");
  assert.equal(refreshDelayMs(at(-5), now, "opaque"), 1_000, "never in a tight loop");
});

test("refresh time: a clock that is off is corrected by the token's own lifetime (exp - iat)", () => {
  const now = 1_000_000_000_000;
  const token = jwt({ sub: "ada", iat: 500, exp: 560 }); // a 60 s token
  // This clock 10 minutes behind the server: `expires_at` seems 10 min away; the token says 60 s.
  assert.equal(refreshDelayMs(now / 1000 + 660, now, token), 30_000);
  // This clock 10 minutes ahead: `expires_at` seems past.
  assert.equal(refreshDelayMs(now / 1000 - 540, now, token), 30_000);
});

test("rooms join only once the auth frame is answered", async () => {
  const { sb, WebSocket } = setup({ token: "jwt-1" });
  const room = sb.join("chat:lobby");
  const ws = WebSocket.last;
  ws.open();
  ws.welcome();
  assert.equal(ws.frames("join").length, 0);
  ws.reply("auth", { type: "ok", user: "ada", expires_at: 2_000_000_000, info: null });
  await flush();
  assert.deepEqual(ws.sent.map((f) => f.type), ["auth", "join"]);
  joined(ws);
  await room.ready;
});

test("a server without a token key answers auth with unavailable: the client goes on anonymously", async () => {
  const { sb, named, clock, WebSocket } = setup({ token: "jwt-1" });
  const room = sb.join("chat:lobby");
  const ws = WebSocket.last;
  ws.open();
  ws.welcome();
  ws.reply("auth", { type: "error", code: "unavailable", message: "this server has no token key configured" });
  await flush();
  assert.equal(sb.state, "open");
  assert.equal(sb.user, null);
  assert.equal(ws.frames("join").length, 1, "the room joins");
  assert.deepEqual(named("error"), [], "nothing went wrong");
  joined(ws);
  await room.ready;
  clock.advance(60_000);
  assert.equal(WebSocket.instances.length, 1, "no reconnect, no connect timeout");
  assert.equal(ws.frames("auth").length, 1, "no refresh either");
});

test("the token is refreshed on the open connection ahead of its expiry, again and again", async () => {
  const t = withTokens();
  const ws = await accept(t, { ttlS: 60 });
  assert.equal(t.calls.n, 1);
  t.clock.advance(29_999);
  await flush();
  assert.equal(t.calls.n, 1);
  t.clock.advance(1);
  await flush();
  assert.equal(t.calls.n, 2, "getToken at half of a 60 s lifetime");
  assert.deepEqual(ws.frames("auth").map((f) => f.token), ["tok-1", "tok-2"]);
  ws.reply("auth", { type: "ok", user: "ada", expires_at: Math.floor(t.clock.now() / 1000) + 60, info: null });
  await flush();
  t.clock.advance(30_000);
  await flush();
  assert.deepEqual(ws.frames("auth").map((f) => f.token), ["tok-1", "tok-2", "tok-3"]);
  assert.equal(t.sb.state, "open");
  assert.equal(t.WebSocket.instances.length, 1, "never reconnected");
  assert.deepEqual(t.named("state"), ["open"]);
});

test("a failing getToken during a refresh is reported and retried; the connection stays", async () => {
  let fail = false;
  let n = 0;
  const t = setup({
    getToken: async () => {
      if (fail) throw new Error("backend down");
      return `tok-${++n}`;
    },
  });
  const ws = await accept(t, { ttlS: 60 });
  fail = true;
  t.clock.advance(30_000);
  await flush();
  assert.equal(t.named("error").at(-1).code, "token_error");
  assert.match(t.named("error").at(-1).message, /backend down/);
  assert.equal(t.sb.state, "open");
  fail = false;
  t.clock.advance(250); // the first retry of the backoff schedule (random 0.5 × 500 ms)
  await flush();
  assert.deepEqual(ws.frames("auth").map((f) => f.token), ["tok-1", "tok-2"]);
});

test("a refresh refused as forbidden (another user) is reported, and tried again", async () => {
  const t = withTokens();
  const ws = await accept(t, { ttlS: 60 });
  t.clock.advance(30_000);
  await flush();
  ws.reply("auth", { type: "error", code: "forbidden", message: "a refreshed token must be for the same user" });
  await flush();
  assert.equal(t.named("error").at(-1).code, "forbidden");
  assert.equal(t.sb.state, "open");
  t.clock.advance(250);
  await flush();
  assert.equal(ws.frames("auth").length, 3);
});

test("no refresh without getToken: the server closes with 4010 at expiry and the client stops", async () => {
  const t = setup({ token: "fixed" });
  const ws = t.WebSocket.last;
  ws.open();
  ws.welcome();
  ws.reply("auth", { type: "ok", user: "ada", expires_at: Math.floor(t.clock.now() / 1000) + 60, info: null });
  await flush();
  t.clock.advance(120_000);
  await flush();
  assert.equal(ws.frames("auth").length, 1);
  ws.receive({ type: "error", code: "unauthorized", message: "token expired" });
  ws.serverClose(4010, "token expired");
  assert.equal(t.sb.state, "closed");
});

test("no refresh after the connection is lost; the reconnect reuses a token still good", async () => {
  const t = withTokens();
  const ws = await accept(t, { ttlS: 60 });
  t.clock.advance(10_000);
  ws.serverClose(1006);
  t.clock.advance(t.named("reconnect").at(-1).delayMs);
  await flush();
  assert.equal(t.calls.n, 1, "the token has 50 s left: no new one");
  t.WebSocket.last.open();
  assert.equal(t.WebSocket.last.frames("auth")[0].token, "tok-1");
  assert.equal(ws.frames("auth").length, 1, "nothing more on the old socket");
});

test("a reconnect after the token's refresh time fetches a new token first", async () => {
  const t = withTokens();
  const ws = await accept(t, { ttlS: 60 });
  t.clock.advance(29_900);
  ws.serverClose(1006);
  t.clock.advance(t.named("reconnect").at(-1).delayMs); // 250 ms: past the refresh time
  await flush();
  assert.equal(t.calls.n, 2);
  t.WebSocket.last.open();
  assert.equal(t.WebSocket.last.frames("auth")[0].token, "tok-2");
});

test("a refresh that the server refuses (4001) gets one fresh token; a 4001 on that stops", async () => {
  const t = withTokens();
  const ws = await accept(t, { ttlS: 60 });
  t.clock.advance(30_000);
  await flush();
  ws.reply("auth", { type: "error", code: "unauthorized", message: "bad signature" });
  await flush();
  ws.serverClose(4001, "unauthorized");
  assert.equal(t.sb.state, "reconnecting");
  t.clock.advance(t.named("reconnect").at(-1).delayMs);
  await flush();
  assert.equal(t.calls.n, 3);
  const next = t.WebSocket.last;
  next.open();
  assert.equal(next.frames("auth")[0].token, "tok-3");
  next.serverClose(4001, "unauthorized");
  assert.equal(t.sb.state, "closed");
  assert.equal(t.named("disconnect").at(-1).reconnect, false);
  t.clock.advance(120_000);
  await flush();
  assert.equal(t.calls.n, 3);
});

test("a left frame with a reason ends the room with an error", async () => {
  const t = withTokens();
  const ws = await accept(t);
  const room = t.sb.join("chat:staff");
  const errors = [];
  room.on("error", (e) => errors.push(e));
  joined(ws);
  await room.ready;
  const publish = room.publish("x");
  ws.receive({ type: "left", room: "chat:staff", reason: "the refreshed token does not allow this room" });
  assert.equal(room.state, "closed");
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, "left");
  assert.equal(errors[0].message, "the refreshed token does not allow this room");
  void publish.catch(() => {});
  assert.notEqual(t.sb.join("chat:staff"), room, "a new join starts a new room");
});

test("a left frame before the join was ready rejects room.ready", async () => {
  const { sb, connect } = setup();
  const ws = connect();
  const room = sb.join("chat:x");
  room.on("error", () => {});
  ws.receive({ type: "left", room: "chat:x", reason: "gone" });
  await assert.rejects(room.ready, { code: "left" });
});

test("a room token goes with the join; a room getToken is called before every (re)join", async () => {
  const t = setup();
  const ws = t.connect();
  const fixed = t.sb.join("order:1", { token: "room-jwt" });
  assert.equal(ws.frames("join")[0].token, "room-jwt");
  let n = 0;
  const asked = [];
  const room = t.sb.join("order:2", {
    getToken: async (name) => {
      asked.push(name);
      return `room-${++n}`;
    },
  });
  assert.equal(ws.frames("join").length, 1, "not before the token is there");
  await flush();
  assert.equal(ws.frames("join")[1].token, "room-1");
  assert.deepEqual(asked, ["order:2"]);
  joined(ws);
  await room.ready;
  void fixed;
  ws.serverClose(1006);
  t.clock.advance(t.named("reconnect").at(-1).delayMs);
  const next = t.connect();
  await flush();
  const tokens = Object.fromEntries(next.frames("join").map((f) => [f.room, f.token]));
  assert.deepEqual(tokens, { "order:1": "room-jwt", "order:2": "room-2" });
});

test("a room getToken failure is reported and retried with backoff", async () => {
  const t = setup();
  const ws = t.connect();
  let fail = true;
  const room = t.sb.join("order:3", {
    getToken: async () => {
      if (fail) throw new Error("no such order");
      return "room-jwt";
    },
  });
  const errors = [];
  room.on("error", (e) => errors.push(e));
  await flush();
  assert.equal(errors[0].code, "token_error");
  assert.match(errors[0].message, /no such order/);
  assert.equal(room.state, "joining");
  fail = false;
  t.clock.advance(250);
  await flush();
  assert.equal(ws.frames("join")[0].token, "room-jwt");
});

test("a join refused as forbidden rejects room.ready with that code and is not retried", async () => {
  const t = setup();
  const ws = t.connect();
  const room = t.sb.join("chat:staff", { token: "room-jwt" });
  room.on("error", () => {});
  ws.reply("join", { type: "error", code: "forbidden", message: "no join permission" });
  await assert.rejects(room.ready, { code: "forbidden" });
  t.clock.advance(60_000);
  assert.equal(ws.frames("join").length, 1);
});

test("a room getToken that refuses with code forbidden ends the room, without retrying", async () => {
  const t = setup();
  const ws = t.connect();
  let calls = 0;
  const room = t.sb.join("chat:staff", {
    getToken: async () => {
      calls += 1;
      throw Object.assign(new Error("#staff is for staff only"), { code: "forbidden" });
    },
  });
  room.on("error", () => {});
  await assert.rejects(room.ready, { code: "forbidden", message: "#staff is for staff only" });
  t.clock.advance(60_000);
  await flush();
  assert.equal(calls, 1);
  assert.equal(ws.frames("join").length, 0);
});

test("a connection getToken that refuses with code unauthorized stops the client (logged out)", async () => {
  const t = setup({
    getToken: async () => {
      throw Object.assign(new Error("not logged in"), { code: "unauthorized" });
    },
  });
  await flush();
  assert.equal(t.sb.state, "closed");
  assert.equal(t.named("error")[0].code, "unauthorized");
  assert.equal(t.WebSocket.instances.length, 0);
  t.clock.advance(60_000);
  await flush();
  assert.equal(t.WebSocket.instances.length, 0);
});
