import assert from "node:assert/strict";
import { test } from "node:test";

import { flush, joined, setup } from "./fakes.js";

const ada = { conn: "c1", user: "ada", presence: { name: "ada" } };
const bob = { conn: "c2", user: "bob", presence: { name: "bob" } };
const msg = (offset, data = `m${offset}`) => ({ type: "message", room: "chat:lobby", data, from: bob, offset, ts: 1000 + offset });

/** A client joined to chat:lobby, with a record of the room's events. */
async function joinedRoom(options = {}, joinedFields = {}) {
  const t = setup(options);
  const ws = t.connect();
  const room = t.sb.join("chat:lobby", { presence: { name: "ada" } });
  const seen = [];
  for (const name of ["state", "joined", "message", "presence", "members", "gap", "error"]) {
    room.on(name, (payload) => seen.push([name, payload]));
  }
  joined(ws, { members: [ada], ...joinedFields });
  await flush();
  const of = (name) => seen.filter(([n]) => n === name).map(([, p]) => p);
  return { ...t, ws, room, seen, of };
}

/** Drops the connection and brings the next one up (open + welcome). */
function reconnect({ clock, named, WebSocket, connect }, code = 1006) {
  WebSocket.last.serverClose(code);
  clock.advance(named("reconnect").at(-1).delayMs);
  return connect();
}

test("join sends the room and presence; ready resolves with the joined reply", async () => {
  const { sb, connect } = setup();
  const ws = connect();
  const room = sb.join("chat:lobby", { presence: { name: "ada" } });
  assert.equal(sb.join("chat:lobby"), room, "one room per name");
  assert.deepEqual(ws.frames("join"), [{ type: "join", room: "chat:lobby", presence: { name: "ada" }, id: 1 }]);
  assert.equal(room.state, "joining");
  joined(ws, { members: [ada], offset: 7 });
  const reply = await room.ready;
  assert.equal(reply.offset, 7);
  assert.equal(room.state, "joined");
  assert.deepEqual(room.members, [ada]);
});

test("a room joined before the connection opens joins once it does", async () => {
  const { sb, connect } = setup();
  const room = sb.join("chat:lobby");
  const ws = connect();
  assert.equal(ws.frames("join").length, 1);
  joined(ws);
  await room.ready;
});

test("messages are emitted as { data, from, offset, ts }", async () => {
  const { ws, of } = await joinedRoom();
  ws.receive(msg(1, { text: "hi" }));
  assert.deepEqual(of("message"), [{ data: { text: "hi" }, from: bob, offset: 1, ts: 1001 }]);
});

test("members stay live from presence events, keyed by conn", async () => {
  const { ws, room, of } = await joinedRoom();
  ws.receive({ type: "presence", room: "chat:lobby", event: "join", member: bob });
  const typing = { ...bob, presence: { name: "bob", typing: true } };
  ws.receive({ type: "presence", room: "chat:lobby", event: "update", member: typing });
  assert.deepEqual(room.members, [ada, typing]);
  assert.equal(room.members, room.members, "the same array until something changes");
  ws.receive({ type: "presence", room: "chat:lobby", event: "leave", member: typing });
  assert.deepEqual(room.members, [ada]);
  assert.deepEqual(of("presence").map((e) => e.event), ["join", "update", "leave"]);
  assert.equal(of("members").length, 4, "once for the join reply, once per event");
});

test("a big room's member list is fetched page by page, with events applied in between", async () => {
  const cy = { conn: "c3", user: "cy", presence: { name: "cy" } };
  const dee = { conn: "c4", user: "dee", presence: { name: "dee" } };
  const { ws, room, of } = await joinedRoom({}, { members: [ada], member_count: 3, members_cursor: "1" });
  assert.deepEqual(room.members, [ada]);
  assert.equal(room.memberCount, 3, "the count covers members not fetched yet");
  const first = ws.frames("members").at(-1);
  assert.equal(first.room, "chat:lobby");
  assert.equal(first.cursor, "1");
  // Before the page arrives, cy (on that page) leaves and dee joins.
  ws.receive({ type: "presence", room: "chat:lobby", event: "leave", member: cy });
  ws.receive({ type: "presence", room: "chat:lobby", event: "join", member: dee });
  assert.equal(room.memberCount, 3);
  // The page was made after those events: it has bob (not cy), and dee.
  ws.reply("members", { type: "members", room: "chat:lobby", members: [bob], member_count: 3, cursor: "2" });
  await flush();
  assert.equal(ws.frames("members").length, 2);
  assert.equal(ws.frames("members").at(-1).cursor, "2");
  ws.reply("members", { type: "members", room: "chat:lobby", members: [dee], member_count: 3, cursor: null });
  await flush();
  assert.equal(ws.frames("members").length, 2, "no request after the last page");
  assert.deepEqual(room.members.map((m) => m.conn), ["c1", "c4", "c2"]);
  assert.equal(room.memberCount, 3);
  assert.ok(of("members").length >= 4);
});

test("a small room's joined reply is the whole list: no members request", async () => {
  const { ws, room } = await joinedRoom({}, { members: [ada, bob], member_count: 2 });
  assert.equal(ws.frames("members").length, 0);
  assert.equal(room.memberCount, 2);
});

test("setPresence sends a presence frame; while not joined it goes with the next join", async () => {
  const t = await joinedRoom();
  t.room.setPresence({ name: "ada", typing: true });
  assert.deepEqual(t.ws.frames("presence").at(-1).presence, { name: "ada", typing: true });
  t.WebSocket.last.serverClose(1006);
  await t.room.setPresence({ name: "ada", away: true });
  const ws = reconnect(t);
  assert.deepEqual(ws.frames("join")[0].presence, { name: "ada", away: true });
});

test("after a reconnect the room re-joins with since = the last message seen", async () => {
  const t = await joinedRoom({}, { epoch: "e1", offset: 4 });
  t.ws.receive(msg(5));
  t.ws.receive(msg(6));
  const ws = reconnect(t);
  assert.deepEqual(ws.frames("join")[0].since, { epoch: "e1", offset: 6 });
  assert.equal(t.room.state, "joining");
});

test("without messages, since is the offset the room was joined at", async () => {
  const t = await joinedRoom({}, { epoch: "e1", offset: 4 });
  const ws = reconnect(t);
  assert.deepEqual(ws.frames("join")[0].since, { epoch: "e1", offset: 4 });
});

test("recovered: missed messages are emitted once each, in order", async () => {
  const t = await joinedRoom({}, { epoch: "e1", offset: 4 });
  t.ws.receive(msg(5));
  const ws = reconnect(t);
  // The server may repeat what was already seen; offsets tell.
  joined(ws, { epoch: "e1", offset: 8, recovered: true, members: [ada, bob], messages: [msg(5), msg(6), msg(7), msg(8)] });
  await flush();
  ws.receive(msg(8));
  ws.receive(msg(9));
  assert.deepEqual(t.of("message").map((m) => m.offset), [5, 6, 7, 8, 9]);
  assert.deepEqual(t.of("gap"), []);
  assert.deepEqual(t.room.members, [ada, bob], "the member list is replaced on re-join");
});

test("not recovered: a gap event, then what the server sent", async () => {
  const t = await joinedRoom({}, { epoch: "e1", offset: 4 });
  const ws = reconnect(t);
  joined(ws, { epoch: "e1", offset: 50, recovered: false, messages: [msg(49), msg(50)] });
  await flush();
  assert.deepEqual(t.of("gap"), [{ since: { epoch: "e1", offset: 4 }, epoch: "e1", offset: 50 }]);
  assert.deepEqual(t.of("message").map((m) => m.offset), [49, 50]);
});

test("a new epoch restarts offsets: lower ones are new messages, not repeats", async () => {
  const t = await joinedRoom({}, { epoch: "e1", offset: 40 });
  const ws = reconnect(t);
  joined(ws, { epoch: "e2", offset: 1, recovered: false, messages: [msg(1)] });
  await flush();
  assert.equal(t.of("gap").length, 1);
  assert.deepEqual(t.of("message").map((m) => m.offset), [1]);
  const next = reconnect(t);
  assert.deepEqual(next.frames("join")[0].since, { epoch: "e2", offset: 1 });
});

test("frames that arrive before the joined reply wait for it", async () => {
  const { sb, connect } = setup();
  const ws = connect();
  const room = sb.join("chat:lobby");
  const offsets = [];
  room.on("message", (m) => offsets.push(m.offset));
  ws.receive(msg(3));
  ws.receive({ type: "presence", room: "chat:lobby", event: "join", member: bob });
  joined(ws, { offset: 2, members: [ada], messages: [msg(1), msg(2)] });
  await flush();
  assert.deepEqual(offsets, [1, 2, 3]);
  assert.deepEqual(room.members, [ada, bob]);
});

test("offline queue: publishes wait, then go out in order right after the re-join", async () => {
  const t = await joinedRoom();
  t.WebSocket.last.serverClose(1006);
  const results = ["a", "b", "c"].map((text) => t.room.publish({ text }));
  const ws = reconnect(t);
  assert.deepEqual(ws.sent.map((f) => f.type), ["join"], "nothing before the join is answered");
  joined(ws, { epoch: "e1", offset: 0, recovered: true });
  await flush();
  assert.deepEqual(ws.sent.map((f) => f.type), ["join", "publish", "publish", "publish"]);
  assert.deepEqual(ws.frames("publish").map((f) => f.data.text), ["a", "b", "c"]);
  for (const [i, frame] of ws.frames("publish").entries()) {
    ws.receive({ type: "ok", id: frame.id, offset: i + 1 });
  }
  assert.deepEqual(await Promise.all(results).then((r) => r.map((ok) => ok.offset)), [1, 2, 3]);
});

test("a publish made by a listener of the re-join goes out after the queued ones", async () => {
  const t = await joinedRoom();
  t.WebSocket.last.serverClose(1006);
  t.room.publish("queued").catch(() => {});
  t.room.on("joined", () => t.room.publish("from listener").catch(() => {}));
  const ws = reconnect(t);
  joined(ws);
  await flush();
  assert.deepEqual(ws.frames("publish").map((f) => f.data), ["queued", "from listener"]);
});

test("the queue is bounded: past queueLimit a publish is rejected at once", async () => {
  const t = await joinedRoom({ queueLimit: 2 });
  t.WebSocket.last.serverClose(1006);
  const kept = [t.room.publish(1), t.room.publish(2)];
  const third = t.room.publish(3).then(() => "sent", (error) => error.code);
  assert.equal(await Promise.race([third, flush().then(() => "still waiting")]), "queue_full");
  const ws = reconnect(t);
  joined(ws);
  await flush();
  assert.deepEqual(ws.frames("publish").map((f) => f.data), [1, 2]);
  kept.forEach((p) => p.catch(() => {}));
});

test("a queued publish's timeout starts when it is sent", async () => {
  const t = await joinedRoom();
  t.WebSocket.last.serverClose(1006);
  const publish = t.room.publish("late", { timeoutMs: 1000 });
  t.clock.advance(30_000); // offline, well past the timeout, while reconnect attempts fail
  const ws = reconnect(t);
  joined(ws);
  await flush();
  ws.reply("publish", { type: "ok", offset: 1 });
  assert.equal((await publish).offset, 1);
});

test("a publish in flight when the connection drops rejects with disconnected", async () => {
  const t = await joinedRoom();
  const publish = t.room.publish("x");
  t.WebSocket.last.serverClose(1006);
  await assert.rejects(publish, { code: "disconnected" });
});

test("when the client stops, queued publishes are rejected and new ones too", async () => {
  const t = await joinedRoom();
  t.WebSocket.last.serverClose(1006);
  const queued = t.room.publish("x");
  t.clock.advance(t.named("reconnect")[0].delayMs);
  t.WebSocket.last.serverClose(4003);
  await assert.rejects(queued, { code: "closed", message: /4003/ });
  await assert.rejects(t.room.publish("y"), { code: "closed" });
});

test("close() closes every room and rejects what waits", async () => {
  const { sb, connect } = setup();
  connect();
  const room = sb.join("chat:lobby");
  const queued = room.publish("x");
  sb.close();
  assert.equal(room.state, "closed");
  await assert.rejects(room.ready, { code: "closed" });
  await assert.rejects(queued, { code: "closed" });
});

test("a refused join rejects ready, emits error and closes the room", async () => {
  const { sb, connect } = setup();
  const ws = connect();
  const room = sb.join("secret:room");
  const errors = [];
  room.on("error", (e) => errors.push(e.code));
  ws.reply("join", { type: "error", code: "forbidden", message: "no" });
  await assert.rejects(room.ready, { code: "forbidden" });
  assert.deepEqual(errors, ["forbidden"]);
  assert.equal(room.state, "closed");
  assert.notEqual(sb.join("secret:room"), room, "a closed room is forgotten");
});

test("a join that fails for a passing reason is retried on the backoff schedule", async () => {
  const { sb, clock, connect } = setup();
  const ws = connect();
  const room = sb.join("chat:lobby");
  const errors = [];
  room.on("error", (e) => errors.push(e.code));
  ws.reply("join", { type: "error", code: "unavailable", message: "broker down" });
  await flush();
  assert.equal(room.state, "joining");
  assert.deepEqual(clock.pending, [250]);
  clock.advance(250);
  assert.equal(ws.frames("join").length, 2);
  clock.advance(10_000); // the second join times out: retried again, later
  await flush();
  assert.deepEqual(clock.pending, [500]);
  clock.advance(500);
  joined(ws);
  assert.equal((await room.ready).type, "joined");
  assert.deepEqual(errors, ["unavailable", "timeout"]);
});

test("leave sends leave, closes the room, and later frames are ignored", async () => {
  const t = await joinedRoom();
  const left = t.room.leave();
  assert.equal(t.room.state, "closed");
  t.ws.reply("leave", { type: "left", room: "chat:lobby" });
  await left;
  t.ws.receive(msg(1));
  assert.deepEqual(t.of("message"), []);
  await assert.rejects(t.room.publish("x"), { code: "closed" });
});

test("leaving from a listener stops the events at once", async () => {
  const t = await joinedRoom({}, { epoch: "e1", offset: 0 });
  const ws = reconnect(t);
  t.room.on("message", () => t.room.leave());
  joined(ws, { epoch: "e1", offset: 3, recovered: true, messages: [msg(1), msg(2), msg(3)] });
  await flush();
  assert.deepEqual(t.of("message").map((m) => m.offset), [1]);
  assert.deepEqual(t.of("state").at(-1), "closed");
});
