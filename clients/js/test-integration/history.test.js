// History, recovery from history, and publishes whose `ok` is lost, against the real server:
// the `chat` namespace keeps history (on disk, in the server's data directory), `window` keeps
// only the default recovery window, and `bare` keeps nothing at all.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { WebSocket } from "ws";
import { connect, join } from "./clients.js";
import { restartableServer, startServer } from "./server.js";
import { sleep, uniqueRoom, waitFor, within } from "./wait.js";

const TEST = { timeout: 30_000 };

export const CONFIG = `
[namespaces.chat]
history_size = 1000
history_ttl = "1h"

[namespaces.window]

[namespaces.bare]
recovery_window = false
`;

let shared;
async function server() {
  shared ??= await startServer({ config: CONFIG });
  return shared;
}
after(() => shared?.stop());

const texts = (messages) => messages.map((m) => m.data.text);
const offsets = (messages) => messages.map((m) => m.offset);
const range = (from, to) => Array.from({ length: Math.abs(to - from) + 1 }, (_, i) => (from <= to ? from + i : from - i));

test("history pages backwards with reverse and forwards with since, as message objects", TEST, async (t) => {
  const { url } = await server();
  const ada = await connect(t, url);
  const name = uniqueRoom("chat");
  const a = join(ada.sb, name, { presence: { name: "ada" } });
  await a.room.ready;
  for (let i = 1; i <= 25; i++) await a.room.publish({ text: `m${i}` });

  // Someone who joins later reads the room, latest first, page by page.
  const grace = await connect(t, url);
  const g = join(grace.sb, name, { presence: { name: "grace" } });
  const joined = await g.room.ready;
  assert.equal(joined.offset, 25);
  const latest = await g.room.history({ limit: 10, reverse: true });
  assert.equal(latest.epoch, joined.epoch);
  assert.equal(latest.offset, 25);
  assert.deepEqual(offsets(latest.messages), range(25, 16));
  const [top] = latest.messages;
  assert.deepEqual(Object.keys(top).sort(), ["data", "from", "offset", "ts"]);
  assert.deepEqual(top.data, { text: "m25" });
  assert.equal(top.from.conn, ada.sb.conn);
  assert.equal(top.from.presence.name, "ada");
  assert.equal(typeof top.ts, "number");
  const before = (page) => ({ epoch: page.epoch, offset: page.messages.at(-1).offset });
  const older = await g.room.history({ since: before(latest), limit: 10, reverse: true });
  assert.deepEqual(offsets(older.messages), range(15, 6));
  const oldest = await g.room.history({ since: before(older), limit: 10, reverse: true });
  assert.deepEqual(offsets(oldest.messages), range(5, 1));
  assert.deepEqual((await g.room.history({ since: before(oldest), reverse: true })).messages, []);

  // Forwards: the oldest first, then what follows a position.
  const first = await g.room.history({ limit: 10 });
  assert.deepEqual(texts(first.messages), range(1, 10).map((i) => `m${i}`));
  const next = await g.room.history({ since: { epoch: first.epoch, offset: 10 }, limit: 10 });
  assert.deepEqual(offsets(next.messages), range(11, 20));
  const rest = await g.room.history({ since: { epoch: first.epoch, offset: 20 } });
  assert.deepEqual(offsets(rest.messages), range(21, 25));
  assert.deepEqual(g.messages, [], "history is not delivered as message events");
});

test("history refusals reject with the server's code", TEST, async (t) => {
  const { url } = await server();
  const ada = await connect(t, url);
  const a = join(ada.sb, uniqueRoom("chat"), { presence: { name: "ada" } });
  const { epoch } = await a.room.ready;
  await a.room.publish({ text: "one" });
  await assert.rejects(a.room.history({ since: { epoch: "not-this-room", offset: 0 } }), { code: "unrecoverable_position" });
  await assert.rejects(a.room.history({ since: { epoch, offset: 5 } }), { code: "unrecoverable_position" });
  await assert.rejects(a.room.history({ limit: 0 }), { code: "bad_request" });
  await assert.rejects(a.room.history({ limit: 1_000_000 }), { code: "bad_request" });
  await assert.rejects(a.room.history({ since: { epoch, offset: -1 } }), { code: "bad_request" });
  const bare = join(ada.sb, uniqueRoom("bare"), { presence: { name: "ada" } });
  await bare.room.ready;
  await assert.rejects(bare.room.history(), { code: "unavailable" });
  // The connection and the room are fine afterwards.
  assert.deepEqual(texts((await a.room.history()).messages), ["one"]);
});

/**
 * A `ws` WebSocket that can go deaf: the client then receives nothing more on it (as when the
 * network drops the way back). Records the publish frames it sends.
 */
function deafWebSocket() {
  const sockets = [];
  const published = [];
  class DeafWebSocket extends WebSocket {
    deaf = false;
    constructor(url, protocols) {
      super(url, protocols);
      sockets.push(this);
    }
    set onmessage(listener) {
      super.onmessage = listener && ((event) => this.deaf || listener(event));
    }
    get onmessage() {
      return super.onmessage;
    }
    send(text) {
      const frame = JSON.parse(text);
      if (frame.type === "publish") published.push(frame);
      super.send(text);
    }
  }
  return { WebSocket: DeafWebSocket, sockets, published };
}

for (const ns of ["chat", "window"]) {
  test(`a publish whose ok is lost is sent again once, with its key, and delivered once (${ns})`, TEST, async (t) => {
    const { url } = await server();
    const deaf = deafWebSocket();
    const ada = await connect(t, url, { WebSocket: deaf.WebSocket });
    const grace = await connect(t, url);
    const name = uniqueRoom(ns);
    const a = join(ada.sb, name, { presence: { name: "ada" } });
    const g = join(grace.sb, name, { presence: { name: "grace" } });
    await Promise.all([a.room.ready, g.room.ready]);
    await a.room.publish({ text: "first" });
    await waitFor(() => g.messages.length === 1, { what: "the first message" });

    // Ada's socket goes deaf, she publishes; the server has it (grace receives it), but ada
    // gets neither her copy nor the ok before her socket dies.
    const socket = deaf.sockets.at(-1);
    socket.deaf = true;
    const publish = a.room.publish({ text: "ok lost" });
    await waitFor(() => g.messages.length === 2, { what: "grace receives the message" });
    socket.terminate();

    const reply = await within(publish, 10_000, "the publish whose ok was lost");
    assert.equal(reply.offset, 2);
    assert.equal(reply.duplicate, true, "the server had it already");
    const copies = deaf.published.filter((f) => f.data.text === "ok lost");
    assert.equal(copies.length, 2, "sent again once");
    assert.equal(copies[0].key, copies[1].key);
    assert.equal(reply.key, copies[0].key);
    assert.notEqual(deaf.sockets.at(-1), socket, "over a new connection");

    await a.room.publish({ text: "after" });
    await waitFor(() => g.messages.length >= 3 && a.messages.length >= 3, { what: "the message after" });
    await sleep(300); // a duplicate would show up by now
    for (const r of [a, g]) assert.deepEqual(texts(r.messages), ["first", "ok lost", "after"]);
    assert.deepEqual(a.recoveries, [{ room: name, count: 1 }], "ada's own copy came with the re-join");
    assert.deepEqual(texts((await g.room.history()).messages), ["first", "ok lost", "after"]);
  });
}

test("a room with history recovers across a server killed with SIGKILL", TEST, async (t) => {
  const holder = await restartableServer(t, { config: CONFIG });
  const ada = await connect(t, holder.server.url);
  const name = uniqueRoom("chat");
  const a = join(ada.sb, name, { presence: { name: "ada" } });
  const { epoch } = await a.room.ready;
  const acknowledged = [];
  for (let i = 1; i <= 5; i++) acknowledged.push((await a.room.publish({ text: `m${i}` })).offset);
  assert.deepEqual(acknowledged, [1, 2, 3, 4, 5]);
  await waitFor(() => a.messages.length === 5, { what: "ada's own five" });

  await holder.server.stop({ signal: "SIGKILL" });
  const queued = a.room.publish({ text: "while down" });
  await holder.restart();
  assert.equal((await within(queued, 10_000, "the queued publish")).offset, 6);
  await waitFor(() => a.recoveries.length === 1, { timeoutMs: 10_000, what: "ada recovered" });
  assert.deepEqual(a.gaps, []);
  const page = await a.room.history({ reverse: true, limit: 50 });
  assert.equal(page.epoch, epoch, "history on disk keeps the room's epoch");
  assert.deepEqual(texts(page.messages).reverse(), ["m1", "m2", "m3", "m4", "m5", "while down"]);
});
