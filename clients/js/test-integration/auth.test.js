// Tokens against the real server, with real HS256 tokens (jsonwebtoken, as a backend makes
// them): connecting with getToken, refreshing across expiry on the same connection, close
// 4001 and 4010, forbidden joins, room tokens, rooms left after a refresh, and a server that
// checks no tokens (open mode) not hanging a client that was given one.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import jwt from "jsonwebtoken";
import { connect, join } from "./clients.js";
import { startServer } from "./server.js";
import { nextEvent, sleep, uniqueRoom, waitFor } from "./wait.js";
import { WebSocket } from "ws";
import { Switchboard } from "../src/switchboard.js";

const SECRET = "integration-test-secret-of-at-least-32-bytes";
const ALL = ["join", "publish", "presence", "history"];

/** A connection token for `sub`, valid `ttlS` seconds, signed as a backend would. */
function token(sub, { ttlS = 60, rooms = { "chat:*": ALL }, info, secret = SECRET } = {}) {
  const claims = { sub, rooms };
  if (info) claims.info = info;
  return jwt.sign(claims, secret, { algorithm: "HS256", expiresIn: ttlS });
}

/** A room token for `sub` in `room`. */
function roomToken(sub, room, { permissions, ttlS = 60 } = {}) {
  const claims = { sub, room };
  if (permissions) claims.permissions = permissions;
  return jwt.sign(claims, SECRET, { algorithm: "HS256", expiresIn: ttlS });
}

/** A getToken that mints with `make` and counts its calls. */
function counted(make) {
  const getToken = async () => {
    getToken.calls += 1;
    return make(getToken.calls);
  };
  getToken.calls = 0;
  return getToken;
}

describe("a server that checks tokens", () => {
  let server;
  before(async () => {
    server = await startServer({ args: ["--token-hmac-secret", SECRET, "--token-expiry-grace", "1s"] });
  });
  after(() => server?.stop());

  test("getToken gives the connection its user; members and senders carry it and the token's info", async (t) => {
    const room = uniqueRoom("chat");
    const ada = await connect(t, server.url, { getToken: counted(() => token("ada", { info: { role: "admin" } })) });
    const bob = await connect(t, server.url, { getToken: counted(() => token("bob")) });
    assert.equal(ada.sb.user, "ada");
    const a = join(ada.sb, room, { presence: { name: "Ada" } });
    await a.room.ready;
    const b = join(bob.sb, room, { presence: { name: "Bob" } });
    const reply = await b.room.ready;
    const adaMember = reply.members.find((m) => m.user === "ada");
    assert.deepEqual(adaMember.info, { role: "admin" });
    await a.room.publish({ text: "hi" });
    await waitFor(() => b.messages.length === 1, { what: "bob gets ada's message" });
    assert.equal(b.messages[0].from.user, "ada");
    assert.deepEqual(ada.errors, []);
  });

  test("a 3 s token is refreshed on the same connection again and again; messages keep flowing", async (t) => {
    const room = uniqueRoom("chat");
    const getToken = counted(() => token("ada", { ttlS: 3 }));
    const ada = await connect(t, server.url, { getToken });
    const bob = await connect(t, server.url, { getToken: counted(() => token("bob", { ttlS: 600 })) });
    const a = join(ada.sb, room);
    const b = join(bob.sb, room);
    await Promise.all([a.room.ready, b.room.ready]);
    // 8 s: well past the first token's expiry plus the 1 s grace, twice over.
    for (let i = 0; i < 16; i++) {
      await b.room.publish({ n: i });
      await a.room.publish({ n: 100 + i });
      await sleep(500);
    }
    await waitFor(() => a.messages.length === 32 && b.messages.length === 32, {
      what: "all 32 messages on both sides",
      describe: () => `ada ${a.messages.length}, bob ${b.messages.length}`,
    });
    assert.ok(getToken.calls >= 4, `getToken called ${getToken.calls} times`);
    assert.deepEqual(ada.disconnects, [], "never disconnected");
    assert.deepEqual(ada.states, ["connecting", "open"]);
    assert.deepEqual(ada.errors, []);
    assert.deepEqual(a.gaps, []);
    assert.equal((await server.health()).connections >= 2, true);
  });

  test("without a refresh the server closes with 4010; getToken then reconnects the client", async (t) => {
    const room = uniqueRoom("chat");
    let failing = false;
    const getToken = counted(() => {
      if (failing) throw new Error("the backend is down");
      return token("ada", { ttlS: 2 });
    });
    const ada = await connect(t, server.url, { getToken });
    const a = join(ada.sb, room);
    await a.room.ready;
    failing = true;
    const closed = nextEvent(ada.sb, "disconnect", { timeoutMs: 8_000 });
    const disconnect = await closed;
    assert.equal(disconnect.code, 4010);
    assert.equal(disconnect.reconnect, true);
    assert.ok(ada.errors.some((e) => e.code === "token_error"), "the failed refreshes were reported");
    failing = false;
    await nextEvent(ada.sb, "open", { timeoutMs: 8_000 });
    await waitFor(() => a.room.state === "joined", { what: "room joined again" });
  });

  test("4001: a bad cached token gets one fresh token; a fresh one refused again stops the client", async () => {
    const bad = token("ada", { secret: "another-secret-of-at-least-32-bytes!!" });
    const getToken = counted(() => bad);
    const sb = new Switchboard(server.url, { WebSocket, token: bad, getToken, backoff: { baseMs: 50, maxMs: 200 } });
    const errors = [];
    const disconnects = [];
    sb.on("error", (e) => errors.push(e));
    sb.on("disconnect", (d) => disconnects.push(d));
    try {
      await waitFor(() => sb.state === "closed", { timeoutMs: 8_000, what: "closed" });
      assert.deepEqual(
        disconnects.map((d) => [d.code, d.reconnect]),
        [
          [4001, true],
          [4001, false],
        ],
      );
      assert.equal(getToken.calls, 1);
      assert.ok(errors.every((e) => e.code === "unauthorized"));
      await sleep(500);
      assert.equal(sb.state, "closed", "stays closed");
    } finally {
      sb.close();
    }
  });

  test("4001 on a cached token, then a good fresh one: the client opens", async (t) => {
    const bad = token("ada", { secret: "another-secret-of-at-least-32-bytes!!" });
    const getToken = counted(() => token("ada"));
    const ada = await connect(t, server.url, { token: bad, getToken });
    assert.equal(ada.sb.user, "ada");
    assert.equal(getToken.calls, 1);
    assert.deepEqual(ada.disconnects.map((d) => d.code), [4001]);
  });

  test("a join the token does not allow rejects room.ready with forbidden", async (t) => {
    const ada = await connect(t, server.url, { getToken: () => token("ada", { rooms: { "chat:*": ["join"] } }) });
    const staff = join(ada.sb, uniqueRoom("staff"));
    await assert.rejects(staff.room.ready, { code: "forbidden" });
    assert.equal(staff.room.state, "closed");
    const chat = join(ada.sb, uniqueRoom("chat"));
    await chat.room.ready;
    await assert.rejects(chat.room.publish({ text: "no" }), { code: "forbidden" });
  });

  test("room tokens, fetched for every join, open one room each", async (t) => {
    const ada = await connect(t, server.url, { getToken: () => token("ada", { rooms: {} }) });
    const name = uniqueRoom("order");
    const asked = [];
    const order = join(ada.sb, name, {
      getToken: async (room) => {
        asked.push(room);
        return roomToken("ada", room);
      },
    });
    await order.room.ready;
    await order.room.publish({ text: "paid" });
    assert.deepEqual(asked, [name]);
    const other = join(ada.sb, uniqueRoom("order"), { token: roomToken("bob", name) });
    await assert.rejects(other.room.ready, { code: "forbidden" });
  });

  test("a refresh whose token lacks a room leaves that room, with the reason", async (t) => {
    const keep = uniqueRoom("chat");
    const lose = uniqueRoom("chat");
    const getToken = counted((n) => token("ada", { ttlS: 3, rooms: n === 1 ? { "chat:*": ALL } : { [keep]: ALL } }));
    const ada = await connect(t, server.url, { getToken });
    const k = join(ada.sb, keep);
    const l = join(ada.sb, lose);
    await Promise.all([k.room.ready, l.room.ready]);
    await waitFor(() => l.room.state === "closed", { timeoutMs: 6_000, what: "the room the new token lacks is left" });
    assert.equal(l.errors.at(-1).code, "left");
    assert.match(l.errors.at(-1).message, /does not allow this room/);
    assert.equal(k.room.state, "joined");
    await k.room.publish({ text: "still here" });
    assert.equal(ada.sb.state, "open");
  });
});

describe("a server that checks no tokens (open mode)", () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(() => server?.stop());

  test("a client given a token does not hang: it goes on anonymously", async (t) => {
    const getToken = counted(() => token("ada"));
    const ada = await connect(t, server.url, { getToken, timeoutMs: 2_000 });
    assert.equal(ada.sb.user, null);
    const room = join(ada.sb, uniqueRoom("chat"));
    await room.room.ready;
    await room.room.publish({ text: "hi" });
    await sleep(2_500); // past the connect timeout, had the client been waiting for an auth reply
    assert.equal(ada.sb.state, "open");
    assert.deepEqual(ada.disconnects, []);
    assert.deepEqual(ada.errors, []);
    assert.equal(getToken.calls, 1);
  });
});
