import assert from "node:assert/strict";
import { test } from "node:test";

import { Switchboard } from "../src/switchboard.js";
import { flush, joined, setup } from "./fakes.js";

test("without a WebSocket implementation the constructor says what to pass", () => {
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = undefined;
  try {
    assert.throws(() => new Switchboard("ws://x/ws"), /pass one/);
  } finally {
    globalThis.WebSocket = saved;
  }
});

test("connects with the subprotocol and no token in the URL; open after welcome", () => {
  const { sb, WebSocket, named, connect } = setup();
  assert.equal(sb.state, "connecting");
  assert.equal(WebSocket.last.url, "ws://test/ws");
  assert.equal(WebSocket.last.protocol, "switchboard.v1");
  connect({ conn: "c9", heartbeat_ms: 0 });
  assert.equal(sb.state, "open");
  assert.equal(sb.conn, "c9");
  assert.deepEqual(named("open"), [{ conn: "c9", user: null, heartbeatMs: 0, server: { name: "fake" } }]);
});

test("a token goes in an auth frame, first; open waits for its ok", async () => {
  const { sb, WebSocket } = setup({ token: "jwt-1" });
  const ws = WebSocket.last;
  ws.open();
  assert.deepEqual(ws.sent, [{ type: "auth", token: "jwt-1", id: 1 }]);
  ws.welcome();
  assert.equal(sb.state, "connecting", "welcome alone is not enough");
  ws.reply("auth", { type: "ok", user: "ada" });
  await flush();
  assert.equal(sb.state, "open");
  assert.equal(sb.user, "ada");
});

test("the auth reply may also come before welcome", async () => {
  const { sb, WebSocket } = setup({ token: "jwt-1" });
  const ws = WebSocket.last;
  ws.open();
  ws.reply("auth", { type: "ok", user: "ada" });
  await flush();
  assert.equal(sb.state, "connecting");
  ws.welcome({ user: "ada" });
  assert.equal(sb.state, "open");
});

test("a refused token is reported, and the close that follows stops the client", async () => {
  const { sb, named, WebSocket } = setup({ token: "bad" });
  const ws = WebSocket.last;
  ws.open();
  ws.reply("auth", { type: "error", code: "unauthorized", message: "bad signature" });
  await flush();
  ws.serverClose(4001, "unauthorized");
  assert.equal(named("error")[0].code, "unauthorized");
  assert.equal(sb.state, "closed");
});

test("the module exports the client, its error type and constants", async () => {
  const sdk = await import("../src/switchboard.js");
  assert.deepEqual(Object.keys(sdk).sort(), ["CLIENT_CODES", "PROTOCOL", "Switchboard", "SwitchboardError"]);
  assert.equal(sdk.PROTOCOL, "switchboard.v1");
});

test("an error nobody listens to is logged, not dropped", (t) => {
  const logged = t.mock.method(console, "error", () => {});
  const clock = { now: () => 0, setTimeout: () => 0, clearTimeout: () => {} };
  const WebSocket = setup().WebSocket;
  const sb = new Switchboard("ws://x/ws", { WebSocket, clock });
  WebSocket.last.open();
  WebSocket.last.receive({ type: "error", code: "rate_limited", message: "slow down" });
  assert.equal(logged.mock.callCount(), 1);
  assert.equal(logged.mock.calls[0].arguments[1].code, "rate_limited");
  sb.close();
});

test("state machine: connecting → open → reconnecting → open → closed", () => {
  const { sb, clock, named, connect, WebSocket } = setup();
  assert.equal(sb.state, "connecting");
  connect();
  WebSocket.last.serverClose(1006);
  assert.equal(sb.state, "reconnecting");
  const [{ delayMs }] = named("reconnect");
  clock.advance(delayMs);
  assert.equal(WebSocket.instances.length, 2, "the reconnect timer dialled again");
  connect();
  sb.close();
  assert.deepEqual(named("state"), ["open", "reconnecting", "open", "closed"]);
  assert.deepEqual(WebSocket.last.closedWith, { code: 1000, reason: "client closed" });
  clock.advance(60_000);
  assert.equal(WebSocket.instances.length, 2, "no reconnect after close()");
});

test("a first connection that fails goes to reconnecting too", () => {
  const { sb, WebSocket } = setup();
  WebSocket.last.serverClose(1006);
  assert.equal(sb.state, "reconnecting");
});

test("reconnect delays follow the jittered schedule and say when", () => {
  const { clock, named, WebSocket } = setup({ random: () => 0.5 });
  for (let i = 0; i < 4; i++) {
    WebSocket.last.serverClose(1006);
    clock.advance(named("reconnect").at(-1).delayMs);
  }
  const at = clock.now();
  WebSocket.last.serverClose(1006);
  assert.deepEqual(
    named("reconnect").map((r) => [r.attempt, r.delayMs]),
    [[1, 250], [2, 500], [3, 1000], [4, 2000], [5, 4000]],
  );
  assert.equal(named("reconnect").at(-1).at, at + 4000);
});

test("the schedule starts over after a connection that stayed open 10 s", () => {
  const { clock, named, connect, WebSocket } = setup();
  const closeAndRedial = () => {
    WebSocket.last.serverClose(1011);
    clock.advance(named("reconnect").at(-1).delayMs);
  };
  closeAndRedial();
  closeAndRedial();
  connect();
  clock.advance(9_999);
  closeAndRedial();
  assert.equal(named("reconnect").at(-1).attempt, 3, "9.999 s open is not stable yet");
  connect();
  clock.advance(10_000);
  closeAndRedial();
  assert.equal(named("reconnect").at(-1).attempt, 1);
});

test("close codes 1000, 1008, 4001, 4003 stop, and say why", () => {
  for (const code of [1000, 1008, 4001, 4003]) {
    const { sb, clock, named, connect, WebSocket } = setup();
    connect();
    WebSocket.last.serverClose(code, code === 4003 ? "not in this namespace" : "");
    assert.equal(sb.state, "closed", code);
    const [disconnect] = named("disconnect");
    assert.equal(disconnect.code, code);
    assert.equal(disconnect.reconnect, false);
    assert.ok(disconnect.reason.length > 0);
    clock.advance(120_000);
    assert.equal(WebSocket.instances.length, 1, `no reconnect after ${code}`);
  }
});

test("close codes 1001, 1006, 1009, 1011, 4008, 4009 and unknown ones reconnect", () => {
  for (const code of [1001, 1006, 1009, 1011, 4008, 4009, 4321]) {
    const { sb, clock, named, connect, WebSocket } = setup();
    connect();
    WebSocket.last.serverClose(code);
    assert.equal(sb.state, "reconnecting", code);
    assert.equal(named("disconnect")[0].reconnect, true);
    clock.advance(named("reconnect")[0].delayMs);
    assert.equal(WebSocket.instances.length, 2, code);
  }
});

test("4008 (rate limited) waits at least 5 s before reconnecting", () => {
  const { named, connect, WebSocket } = setup();
  connect();
  WebSocket.last.serverClose(4008);
  assert.equal(named("reconnect")[0].delayMs, 5000 + 250);
});

test("a shutdown frame's reconnect_ms is the floor of the next delay", () => {
  const { named, connect, WebSocket } = setup();
  connect();
  WebSocket.last.receive({ type: "shutdown", reason: "restart", reconnect_ms: 2000 });
  WebSocket.last.serverClose(1001);
  assert.deepEqual(named("shutdown"), [{ reason: "restart", reconnectMs: 2000 }]);
  assert.equal(named("reconnect")[0].delayMs, 2000 + 250);
  assert.equal(named("disconnect")[0].reason, "server going away");
});

test("4010 fetches a new token with getToken, then reconnects with it", async () => {
  const tokens = ["jwt-1", "jwt-2"];
  const { sb, clock, named, WebSocket } = setup({ getToken: async () => tokens.shift() });
  await flush();
  const first = WebSocket.last;
  first.open();
  assert.equal(first.frames("auth")[0].token, "jwt-1");
  first.welcome();
  first.reply("auth", { type: "ok", user: "ada" });
  await flush();
  assert.equal(sb.state, "open");
  first.serverClose(4010);
  assert.equal(named("disconnect")[0].reconnect, true);
  clock.advance(named("reconnect")[0].delayMs);
  await flush();
  WebSocket.last.open();
  assert.equal(WebSocket.last.frames("auth")[0].token, "jwt-2");
});

test("4010 without getToken stops: the token cannot be refreshed", () => {
  const { sb, WebSocket } = setup({ token: "jwt-1" });
  WebSocket.last.serverClose(4010);
  assert.equal(sb.state, "closed");
});

test("4001 on a cached token tries one fresh token; 4001 on that one stops", async () => {
  let calls = 0;
  const { sb, clock, named, WebSocket } = setup({ token: "old", getToken: async () => `new-${++calls}` });
  WebSocket.last.open();
  WebSocket.last.serverClose(4001);
  assert.equal(sb.state, "reconnecting");
  clock.advance(named("reconnect")[0].delayMs);
  await flush();
  WebSocket.last.open();
  assert.equal(WebSocket.last.frames("auth")[0].token, "new-1");
  WebSocket.last.serverClose(4001);
  assert.equal(sb.state, "closed");
  assert.equal(calls, 1);
});

test("a getToken failure is reported and retried with backoff", async () => {
  let fail = true;
  const getToken = async () => {
    if (fail) throw new Error("backend down");
    return "jwt";
  };
  const { sb, clock, named, WebSocket } = setup({ getToken });
  await flush();
  assert.equal(named("error")[0].code, "token_error");
  assert.match(named("error")[0].message, /backend down/);
  assert.equal(sb.state, "reconnecting");
  fail = false;
  clock.advance(named("reconnect")[0].delayMs);
  await flush();
  assert.equal(WebSocket.instances.length, 1);
});

test("connect() while waiting to reconnect dials at once", () => {
  const { sb, clock, WebSocket } = setup();
  WebSocket.last.serverClose(1006);
  sb.connect();
  assert.equal(WebSocket.instances.length, 2);
  assert.deepEqual(clock.pending, [10_000], "only the new socket's connect timeout is left");
});

test("connect() after a stop starts over", () => {
  const { sb, connect, WebSocket } = setup();
  WebSocket.last.serverClose(4003);
  sb.connect();
  assert.equal(sb.state, "connecting");
  connect();
  assert.equal(sb.state, "open");
});

test("autoConnect: false waits for connect()", () => {
  const { sb, WebSocket } = setup({ autoConnect: false });
  assert.equal(sb.state, "closed");
  assert.equal(WebSocket.instances.length, 0);
  sb.connect();
  assert.equal(WebSocket.instances.length, 1);
});

test("requests time out, and their late reply is ignored", async () => {
  const { sb, clock, connect } = setup();
  const ws = connect();
  const room = sb.join("chat:lobby");
  joined(ws);
  await flush();
  const publish = room.publish({ text: "hi" }, { timeoutMs: 5000 });
  clock.advance(4999);
  await flush();
  clock.advance(1);
  await assert.rejects(publish, { code: "timeout" });
  ws.reply("publish", { type: "ok", offset: 1 });
});

test("an error reply rejects with the server's code; one without id is emitted", async () => {
  const { sb, named, connect } = setup();
  const ws = connect();
  const room = sb.join("chat:lobby");
  joined(ws);
  await flush();
  const publish = room.publish("x");
  ws.reply("publish", { type: "error", code: "rate_limited", message: "slow down" });
  await assert.rejects(publish, { code: "rate_limited", message: "slow down" });
  ws.receive({ type: "error", code: "bad_json", message: "not valid JSON" });
  assert.equal(named("error")[0].code, "bad_json");
  ws.receive("{oops");
  assert.equal(named("error")[1].code, "bad_frame");
});

test("the connection must open within timeoutMs", () => {
  const { sb, clock, named, WebSocket } = setup({ timeoutMs: 3000 });
  WebSocket.last.open();
  clock.advance(3000);
  assert.equal(sb.state, "reconnecting");
  assert.match(named("disconnect")[0].reason, /not open within 3000 ms/);
  assert.notEqual(WebSocket.last.closedWith, null);
});

test("dead connection: ping after heartbeat_ms of silence, give up after the grace period", () => {
  const { sb, clock, named, connect, WebSocket } = setup({ heartbeatGraceMs: 500 });
  const ws = connect({ heartbeat_ms: 1000 });
  clock.advance(999);
  assert.equal(ws.frames("ping").length, 0);
  clock.advance(1);
  assert.equal(ws.frames("ping").length, 1);
  ws.receive({ type: "pong", id: ws.frames("ping")[0].id });
  clock.advance(1400);
  assert.equal(sb.state, "open", "the pong proved it alive");
  assert.equal(ws.frames("ping").length, 2);
  clock.advance(100);
  assert.equal(sb.state, "reconnecting");
  assert.notEqual(ws.closedWith, null);
  assert.deepEqual(named("disconnect")[0], {
    code: 1006,
    reason: "no frame from the server for 1500 ms",
    reconnect: true,
  });
  assert.equal(WebSocket.instances.length, 1);
});

test("any frame counts as a sign of life", () => {
  const { sb, clock, connect } = setup({ heartbeatGraceMs: 500 });
  const ws = connect({ heartbeat_ms: 1000 });
  for (let i = 0; i < 10; i++) {
    clock.advance(900);
    ws.receive({ type: "message", room: "elsewhere", data: i, offset: i, ts: 0, from: null });
  }
  assert.equal(ws.frames("ping").length, 0);
  assert.equal(sb.state, "open");
});

test("listeners unsubscribe with the function on() returns", () => {
  const { sb, connect } = setup();
  const seen = [];
  const off = sb.on("state", (s) => seen.push(s));
  connect();
  off();
  sb.close();
  assert.deepEqual(seen, ["open"]);
});

test("a throwing listener does not stop the others or the client; its error is rethrown apart", () => {
  const { sb, connect } = setup();
  const rethrown = [];
  const saved = globalThis.queueMicrotask;
  globalThis.queueMicrotask = (fn) => {
    try {
      fn();
    } catch (error) {
      rethrown.push(error.message);
    }
  };
  try {
    sb.on("state", () => {
      throw new Error("listener bug");
    });
    const seen = [];
    sb.on("state", (s) => seen.push(s));
    connect();
    assert.deepEqual(seen, ["open"]);
    assert.equal(sb.state, "open");
    assert.deepEqual(rethrown, ["listener bug"]);
  } finally {
    globalThis.queueMicrotask = saved;
  }
});
