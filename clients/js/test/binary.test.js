import assert from "node:assert/strict";
import { test } from "node:test";

import { decodeFrame, encodeFrame } from "../src/binary.js";
import { flush, joined, setup } from "./fakes.js";

const bob = { conn: "c2", user: "bob", presence: {} };

async function joinedRoom() {
  const t = setup();
  const ws = t.connect();
  const room = t.sb.join("r");
  const messages = [];
  const errors = [];
  room.on("message", (m) => messages.push(m));
  t.sb.on("error", (e) => errors.push(e));
  joined(ws, { room: "r" });
  await flush();
  return { ...t, ws, room, messages, errors };
}

test("the frame layout: a u32 big-endian header length, the JSON header, the payload", () => {
  const frame = encodeFrame({ type: "publish", room: "r", id: 7 }, new Uint8Array([0, 255, 1]));
  const header = '{"type":"publish","room":"r","id":7}';
  assert.deepEqual([...frame.subarray(0, 4)], [0, 0, 0, header.length]);
  assert.equal(new TextDecoder().decode(frame.subarray(4, 4 + header.length)), header);
  assert.deepEqual([...frame.subarray(4 + header.length)], [0, 255, 1]);
  assert.deepEqual(decodeFrame(frame.buffer), { type: "publish", room: "r", id: 7, data: new Uint8Array([0, 255, 1]) });
  assert.equal(decodeFrame(new Uint8Array([0, 0, 0, 9, 123])), null, "a length past the end");
  assert.equal(decodeFrame(new Uint8Array([0, 0])), null);
  assert.equal(decodeFrame(encodeFrame([1], new Uint8Array())), null, "a header that is not an object");
});

test("bytes of every kind are published as a binary frame with a key, copied when published", async () => {
  const { ws, room } = await joinedRoom();
  const buffer = new Uint8Array([1, 2, 3, 4]).buffer;
  const view = new Uint8Array([9, 8, 7, 6, 5]).subarray(1, 4);
  const dataView = new DataView(new Uint8Array([5, 6, 7]).buffer, 1);
  const words = new Uint16Array([0x0102]);
  for (const data of [buffer, view, dataView, words]) room.publish(data);
  view[0] = 0; // after the publish: not what was sent
  const sent = ws.frames("publish");
  assert.equal(sent.length, 4);
  assert.deepEqual(
    sent.map((f) => [...f.data]),
    [[1, 2, 3, 4], [8, 7, 6], [6, 7], [...new Uint8Array(words.buffer)]],
  );
  for (const f of sent) {
    assert.equal(f.room, "r");
    assert.equal(typeof f.key, "string");
    assert.equal(typeof f.id, "number");
  }
});

test("a Blob is read, and publishes made after it go out after it", async () => {
  const { ws, room } = await joinedRoom();
  const blob = room.publish(new Blob([new Uint8Array([1, 2]), "ab"]));
  const after = room.publish({ text: "after" });
  await flush();
  await flush();
  const sent = ws.frames("publish");
  assert.deepEqual([...sent[0].data], [1, 2, 97, 98]);
  assert.deepEqual(sent[1].data, { text: "after" });
  ws.receive({ type: "ok", id: sent[0].id, offset: 1 });
  ws.receive({ type: "ok", id: sent[1].id, offset: 2 });
  assert.equal((await blob).offset, 1);
  assert.equal((await after).offset, 2);
});

test("binary publishes wait offline and are sent again, same key and bytes, after a reconnect", async () => {
  const t = await joinedRoom();
  const { ws, room, clock, named, WebSocket, connect } = t;
  const first = room.publish(new Uint8Array([1, 2, 3]));
  ws.serverClose(1006);
  const queued = room.publish(new Uint8Array([4]));
  clock.advance(named("reconnect").at(-1).delayMs);
  const next = connect();
  assert.equal(WebSocket.last, next);
  joined(next, { room: "r" });
  await flush();
  const sent = next.frames("publish");
  assert.deepEqual(sent.map((f) => [...f.data]), [[1, 2, 3], [4]]);
  assert.equal(sent[0].key, ws.frames("publish")[0].key, "the same key: delivered once");
  next.receive({ type: "ok", id: sent[0].id, offset: 1, duplicate: true });
  next.receive({ type: "ok", id: sent[1].id, offset: 2 });
  assert.equal((await first).duplicate, true);
  assert.equal((await queued).offset, 2);
});

test("received binary messages, live or listed in base64, are Uint8Arrays with the envelope", async () => {
  const { ws, room, messages, errors } = await joinedRoom();
  const header = { type: "message", room: "r", from: bob, offset: 1, ts: 5 };
  ws.receive(encodeFrame(header, new Uint8Array([0, 1, 255])).buffer);
  ws.receive(Buffer.from(encodeFrame({ ...header, offset: 2 }, new Uint8Array([7])))); // ws's Buffers
  assert.deepEqual(messages, [
    { data: new Uint8Array([0, 1, 255]), from: bob, offset: 1, ts: 5 },
    { data: new Uint8Array([7]), from: bob, offset: 2, ts: 5 },
  ]);
  ws.receive(new Uint8Array([0, 0, 0, 50]));
  assert.equal(errors.at(-1).code, "bad_frame");
  const page = room.history();
  await flush();
  ws.reply("history", {
    type: "history",
    epoch: "e1",
    offset: 2,
    messages: [
      { ...header, binary: true, data: "AAH/" },
      { ...header, offset: 2, data: "AAH/" },
    ],
  });
  const { messages: listed } = await page;
  assert.deepEqual(listed[0].data, new Uint8Array([0, 1, 255]));
  assert.equal(listed[1].data, "AAH/", "a JSON string stays a string");
});

test("recovered binary messages are Uint8Arrays", async () => {
  const t = await joinedRoom();
  const next = (t.ws.serverClose(1006), t.clock.advance(t.named("reconnect").at(-1).delayMs), t.connect());
  const join = next.frames("join").at(-1);
  assert.deepEqual(join.since, { epoch: "e1", offset: 0 });
  next.receive({
    type: "joined",
    id: join.id,
    room: "r",
    epoch: "e1",
    offset: 1,
    members: [],
    recovered: true,
    messages: [{ type: "message", room: "r", binary: true, data: "aGk=", from: bob, offset: 1, ts: 9 }],
  });
  await flush();
  assert.deepEqual(t.messages, [{ data: new TextEncoder().encode("hi"), from: bob, offset: 1, ts: 9 }]);
});
