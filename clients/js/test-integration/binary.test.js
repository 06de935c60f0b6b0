// Binary messages through the SDK against the real server (docs/protocol.md, "Binary
// messages"): ArrayBuffer, typed arrays, DataView and Blob published in Node, received as
// Uint8Array with the usual envelope, in one order of offsets with JSON messages; read back
// with history, recovered after a restart, and queued while the server is down.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { WebSocket } from "ws";
import { connect, join } from "./clients.js";
import { gatedWebSocket } from "./gate.js";
import { restartableServer, startServer } from "./server.js";
import { sleep, uniqueRoom, waitFor, within } from "./wait.js";

const TEST = { timeout: 30_000 };

const CONFIG = `
[namespaces.chat]
history_size = 1000
history_ttl = "1h"
`;

let shared;
async function server() {
  shared ??= await startServer({ config: CONFIG });
  return shared;
}
after(() => shared?.stop());

/** Every byte value, and then some: nothing a text encoding would keep. */
const awkward = (n) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + (i >> 8)) & 0xff);

test("ArrayBuffer, typed arrays, DataView and Blob arrive as the same bytes, in order with JSON", TEST, async (t) => {
  const { url } = await server();
  const ada = await connect(t, url);
  const grace = await connect(t, url);
  const name = uniqueRoom("chat");
  const a = join(ada.sb, name, { presence: { name: "ada" } });
  const g = join(grace.sb, name, { presence: { name: "grace" } });
  await Promise.all([a.room.ready, g.room.ready]);

  const bytes = awkward(3000);
  const sent = [
    bytes.buffer.slice(0),
    bytes.subarray(10, 20),
    { text: "json between" },
    new DataView(bytes.buffer, 100, 5),
    new Blob([bytes.subarray(0, 3), "text in a blob"]),
    new Uint16Array([1, 65535]),
    new Uint8Array(0),
  ];
  const replies = await Promise.all(sent.map((data) => a.room.publish(data)));
  assert.deepEqual(replies.map((r) => r.offset), [1, 2, 3, 4, 5, 6, 7], "in the order published");
  const want = [
    bytes,
    bytes.subarray(10, 20),
    { text: "json between" },
    bytes.subarray(100, 105),
    new Uint8Array([...bytes.subarray(0, 3), ...new TextEncoder().encode("text in a blob")]),
    new Uint8Array(new Uint16Array([1, 65535]).buffer),
    new Uint8Array(0),
  ];
  for (const r of [a, g]) {
    await waitFor(() => r.messages.length === 7, { what: "seven messages" });
    assert.deepEqual(r.messages.map((m) => m.offset), [1, 2, 3, 4, 5, 6, 7]);
    r.messages.forEach((m, i) => {
      if (i === 2) assert.deepEqual(m.data, want[i]);
      else {
        assert.ok(m.data instanceof Uint8Array, `message ${i + 1} is a Uint8Array`);
        assert.deepEqual([...m.data], [...want[i]], `message ${i + 1}`);
      }
      assert.deepEqual(Object.keys(m).sort(), ["data", "from", "offset", "ts"]);
      assert.equal(m.from.conn, ada.sb.conn);
      assert.equal(typeof m.ts, "number");
    });
  }

  // History lists them with the same bytes.
  const page = await g.room.history({ limit: 10 });
  assert.deepEqual(page.messages.map((m) => m.offset), [1, 2, 3, 4, 5, 6, 7]);
  page.messages.forEach((m, i) => {
    if (i === 2) assert.deepEqual(m.data, want[i]);
    else assert.deepEqual([...m.data], [...want[i]], `history message ${i + 1}`);
  });
  assert.ok(page.messages[0].data instanceof Uint8Array);
  assert.deepEqual(a.errors, []);
  assert.deepEqual(g.errors, []);
});

test("echo: false and keys work for bytes", TEST, async (t) => {
  const { url } = await server();
  const ada = await connect(t, url);
  const grace = await connect(t, url);
  const name = uniqueRoom("chat");
  const a = join(ada.sb, name);
  const g = join(grace.sb, name);
  await Promise.all([a.room.ready, g.room.ready]);
  const first = await a.room.publish(new Uint8Array([1, 2]), { echo: false, key: "bin-key-1" });
  const again = await a.room.publish(new Uint8Array([1, 2]), { key: "bin-key-1" });
  assert.deepEqual([first.offset, first.duplicate, again.offset, again.duplicate], [1, false, 1, true]);
  await waitFor(() => g.messages.length === 1, { what: "grace's message" });
  await sleep(200);
  assert.equal(g.messages.length, 1, "delivered once");
  assert.deepEqual(a.messages, [], "echo: false");
});

test("binary messages published while a client is away are recovered as bytes after a restart", TEST, async (t) => {
  const holder = await restartableServer(t);
  const { WebSocket: GatedWebSocket, gate } = gatedWebSocket(WebSocket);
  const ada = await connect(t, holder.server.url);
  const grace = await connect(t, holder.server.url, { WebSocket: GatedWebSocket });
  const name = uniqueRoom("chat");
  const a = join(ada.sb, name);
  const g = join(grace.sb, name);
  await Promise.all([a.room.ready, g.room.ready]);
  await a.room.publish(new Uint8Array([0]));
  await waitFor(() => g.messages.length === 1, { what: "the first message" });

  await holder.server.stop();
  await waitFor(() => grace.sb.state === "reconnecting", { what: "grace reconnecting" });
  gate.shut = true;
  // Queued while the server is down: sent once, in order, after ada reconnects.
  const publishes = [new Uint8Array([1, 255]), new Blob([new Uint8Array([2, 254])]), "json"].map((d) => a.room.publish(d));
  await holder.restart();
  const replies = await within(Promise.all(publishes), 10_000, "ada's queued publishes");
  assert.deepEqual(replies.map((r) => r.offset), [2, 3, 4]);
  gate.shut = false;
  await waitFor(() => g.recoveries.length === 1, { timeoutMs: 10_000, what: "grace recovered" });
  assert.deepEqual(g.recoveries, [{ room: name, count: 3 }]);
  assert.deepEqual(
    g.messages.map((m) => [m.offset, m.data instanceof Uint8Array ? [...m.data] : m.data]),
    [[1, [0]], [2, [1, 255]], [3, [2, 254]], [4, "json"]],
  );
  assert.deepEqual(g.gaps, []);
});
