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
  for (const name of ["state", "joined", "message", "presence", "members", "gap", "recovered", "error"]) {
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

test("a room bigger than memberLimit lists its first page until fetchMembers() is called", async () => {
  const cy = { conn: "c3", user: "cy", presence: { name: "cy" } };
  const t = setup();
  const ws = t.connect();
  const room = t.sb.join("chat:lobby", { memberLimit: 2 });
  joined(ws, { members: [ada], member_count: 3, members_cursor: "1" });
  await flush();
  assert.equal(ws.frames("members").length, 0, "3 members > memberLimit 2: no page fetched by itself");
  assert.equal(room.membersComplete, false);
  assert.equal(room.memberCount, 3);
  // Someone who joins later is listed all the same.
  ws.receive({ type: "presence", room: "chat:lobby", events: [{ event: "join", member: cy }], member_count: 4 });
  assert.deepEqual(room.members.map((m) => m.conn), ["c1", "c3"]);
  assert.equal(room.memberCount, 4);
  const all = room.fetchMembers();
  assert.equal(room.fetchMembers(), all, "one fetch at a time");
  assert.equal(ws.frames("members").length, 1);
  assert.equal(ws.frames("members").at(-1).cursor, "1");
  ws.reply("members", { type: "members", room: "chat:lobby", members: [bob], member_count: 4, cursor: "2" });
  await flush();
  ws.reply("members", { type: "members", room: "chat:lobby", members: [cy], member_count: 4, cursor: null });
  const list = await all;
  assert.deepEqual(list.map((m) => m.conn), ["c1", "c3", "c2"]);
  assert.equal(room.membersComplete, true);
  assert.equal(await room.fetchMembers(), room.members, "complete: resolves at once");
  assert.equal(ws.frames("members").length, 2);
});

test("fetchMembers() rejects when the connection is lost, and the next join starts the list over", async () => {
  const t = setup();
  const ws = t.connect();
  const room = t.sb.join("chat:lobby", { memberLimit: 0 });
  joined(ws, { members: [ada], member_count: 2, members_cursor: "1" });
  await flush();
  const all = room.fetchMembers();
  const ws2 = reconnect(t);
  await assert.rejects(all, { code: "disconnected" });
  await assert.rejects(room.fetchMembers(), { code: "disconnected" }, "not joined");
  joined(ws2, { members: [ada, bob], member_count: 2 });
  await flush();
  assert.equal(room.membersComplete, true);
  assert.deepEqual(room.members, [ada, bob]);
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
  assert.deepEqual(t.of("recovered"), [{ room: "chat:lobby", count: 3 }], "the three not seen before");
  assert.deepEqual(t.room.members, [ada, bob], "the member list is replaced on re-join");
});

test("recovered: the recovered event follows the missed messages, and comes with none missed too", async () => {
  const t = await joinedRoom({}, { epoch: "e1", offset: 4 });
  const order = [];
  t.room.on("message", (m) => order.push(`message ${m.offset}`));
  t.room.on("recovered", ({ count }) => order.push(`recovered ${count}`));
  let ws = reconnect(t);
  joined(ws, { epoch: "e1", offset: 6, recovered: true, messages: [msg(5), msg(6)] });
  await flush();
  ws = reconnect(t);
  assert.deepEqual(ws.frames("join")[0].since, { epoch: "e1", offset: 6 });
  joined(ws, { epoch: "e1", offset: 6, recovered: true, messages: [] });
  await flush();
  assert.deepEqual(order, ["message 5", "message 6", "recovered 2", "recovered 0"]);
  assert.deepEqual(t.of("gap"), []);
});

test("not recovered: a gap event with the server's reason, and the room goes on from the reply's position", async () => {
  const t = await joinedRoom({}, { epoch: "e1", offset: 4 });
  const ws = reconnect(t);
  joined(ws, { epoch: "e1", offset: 50, recovered: false, reason: "too_many", messages: [] });
  await flush();
  assert.deepEqual(t.of("gap"), [{ room: "chat:lobby", reason: "too_many", since: { epoch: "e1", offset: 4 }, epoch: "e1", offset: 50 }]);
  assert.deepEqual(t.of("recovered"), []);
  ws.receive(msg(51));
  assert.deepEqual(t.of("message").map((m) => m.offset), [51]);
  assert.deepEqual(reconnect(t).frames("join")[0].since, { epoch: "e1", offset: 51 });
});

test("a position ahead of the room (invalid_position): later messages with lower offsets are not dropped", async () => {
  const t = await joinedRoom({}, { epoch: "e1", offset: 40 });
  const ws = reconnect(t);
  joined(ws, { epoch: "e1", offset: 3, recovered: false, reason: "invalid_position", messages: [] });
  await flush();
  assert.equal(t.of("gap")[0].reason, "invalid_position");
  ws.receive(msg(4));
  ws.receive(msg(4)); // a repeat is still dropped
  ws.receive(msg(5));
  assert.deepEqual(t.of("message").map((m) => m.offset), [4, 5]);
});

test("a first join reports neither gap nor recovered", async () => {
  const t = await joinedRoom({}, { epoch: "e1", offset: 9 });
  assert.deepEqual([t.of("gap"), t.of("recovered")], [[], []]);
  assert.equal(t.ws.frames("join")[0].since, undefined);
});

test("a new epoch restarts offsets: lower ones are new messages, not repeats", async () => {
  const t = await joinedRoom({}, { epoch: "e1", offset: 40 });
  const ws = reconnect(t);
  joined(ws, { epoch: "e2", offset: 1, recovered: false, messages: [msg(1)] });
  await flush();
  assert.deepEqual(t.of("gap").map((g) => g.reason), ["epoch_changed"], "the reason, when the server gives none");
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

test("every publish carries a key: one the SDK makes, or the app's; the reply says whether it was a duplicate", async () => {
  const t = await joinedRoom();
  const made = t.room.publish("a");
  const given = t.room.publish("b", { key: "order-17" });
  const [a, b] = t.ws.frames("publish");
  assert.equal(typeof a.key, "string");
  assert.ok(a.key.length >= 1 && a.key.length <= 128);
  assert.equal(b.key, "order-17");
  t.room.publish("c").catch(() => {});
  assert.equal(new Set(t.ws.frames("publish").map((f) => f.key)).size, 3, "a new key per publish");
  t.ws.receive({ type: "ok", id: a.id, offset: 1 });
  t.ws.receive({ type: "ok", id: b.id, offset: 1, duplicate: true });
  assert.deepEqual(await made, { type: "ok", id: a.id, offset: 1, key: a.key, duplicate: false });
  assert.deepEqual(await given, { type: "ok", id: b.id, offset: 1, key: "order-17", duplicate: true });
});

test("a publish whose ok was lost with the connection is sent again after the re-join, with its key, once", async () => {
  const t = await joinedRoom({}, { epoch: "e1", offset: 0 });
  const lost = t.room.publish({ text: "lost ok" });
  const sentKey = t.ws.frames("publish")[0].key;
  t.WebSocket.last.serverClose(1006);
  const queued = t.room.publish({ text: "typed offline" });
  let ws = reconnect(t);
  assert.deepEqual(ws.sent.map((f) => f.type), ["join"], "nothing goes before the join is answered");
  joined(ws, { epoch: "e1", offset: 1, recovered: true, messages: [msg(1, { text: "lost ok" })] });
  await flush();
  const publishes = ws.frames("publish");
  assert.deepEqual(publishes.map((f) => [f.data.text, f.key === sentKey]), [["lost ok", true], ["typed offline", false]]);
  ws.receive({ type: "ok", id: publishes[0].id, offset: 1, duplicate: true });
  ws.receive({ type: "ok", id: publishes[1].id, offset: 2 });
  const [first, second] = await Promise.all([lost, queued]);
  assert.deepEqual([first.offset, first.duplicate, first.key], [1, true, sentKey]);
  assert.deepEqual([second.offset, second.duplicate], [2, false]);
  // Acknowledged now: another reconnect sends neither again.
  ws = reconnect(t);
  joined(ws, { epoch: "e1", offset: 2, recovered: true, messages: [] });
  await flush();
  assert.deepEqual(ws.frames("publish"), []);
});

test("an ok that arrives after the shutdown frame counts: that publish is not sent again", async () => {
  const t = await joinedRoom({}, { epoch: "e1", offset: 0 });
  const answered = t.room.publish("answered while draining");
  const unanswered = t.room.publish("not answered");
  const [a] = t.ws.frames("publish");
  t.ws.receive({ type: "shutdown", reason: "server shutting down", reconnect_ms: 0 });
  t.ws.receive({ type: "ok", id: a.id, offset: 1 });
  assert.equal((await answered).offset, 1);
  const ws = reconnect(t, 1001);
  joined(ws, { epoch: "e1", offset: 1, recovered: true, messages: [] });
  await flush();
  assert.deepEqual(ws.frames("publish").map((f) => f.data), ["not answered"]);
  ws.reply("publish", { type: "ok", offset: 2 });
  assert.equal((await unanswered).offset, 2);
});

test("a publish refused by the server rejects with its code and is not sent again", async () => {
  const t = await joinedRoom();
  const refused = t.room.publish("x".repeat(10));
  t.ws.reply("publish", { type: "error", code: "too_large", message: "too big" });
  await assert.rejects(refused, { code: "too_large" });
  const ws = reconnect(t);
  joined(ws);
  await flush();
  assert.deepEqual(ws.frames("publish"), []);
});

test("a publish without reply on an open connection rejects with timeout; the app can send it again with its key", async () => {
  const t = await joinedRoom();
  const slow = t.room.publish("slow", { timeoutMs: 1000 });
  t.clock.advance(1000);
  const error = await slow.then(() => null, (e) => e);
  assert.equal(error.code, "timeout");
  const key = t.ws.frames("publish")[0].key;
  const again = t.room.publish("slow", { key });
  assert.equal(t.ws.frames("publish")[1].key, key);
  t.ws.reply("publish", { type: "ok", offset: 3, duplicate: true });
  assert.equal((await again).duplicate, true);
  const ws = reconnect(t);
  joined(ws);
  await flush();
  assert.deepEqual(ws.frames("publish"), [], "a publish that timed out is not sent again by itself");
});

test("a publish sent before leave still gets its ok", async () => {
  const t = await joinedRoom();
  const publish = t.room.publish("bye");
  const queuedLeave = t.room.leave();
  t.ws.reply("publish", { type: "ok", offset: 4 });
  t.ws.reply("leave", { type: "left", room: "chat:lobby" });
  assert.equal((await publish).offset, 4);
  await queuedLeave;
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

test("history sends since, limit and reverse and resolves with the position and the messages", async () => {
  const t = await joinedRoom();
  const page = t.room.history({ since: { epoch: "e1", offset: 30 }, limit: 2, reverse: true });
  assert.deepEqual(t.ws.frames("history").map(({ id, ...f }) => f), [
    { type: "history", room: "chat:lobby", since: { epoch: "e1", offset: 30 }, limit: 2, reverse: true },
  ]);
  t.ws.reply("history", { type: "history", room: "chat:lobby", epoch: "e1", offset: 42, messages: [msg(29), msg(28)] });
  assert.deepEqual(await page, {
    epoch: "e1",
    offset: 42,
    messages: [
      { data: "m29", from: bob, offset: 29, ts: 1029 },
      { data: "m28", from: bob, offset: 28, ts: 1028 },
    ],
  });
  assert.deepEqual(t.of("message"), [], "history is not delivered as message events");
  t.room.history();
  assert.deepEqual(Object.keys(t.ws.frames("history")[1]).sort(), ["id", "room", "type"], "only what was asked");
});

test("history rejects with the server's code", async () => {
  const t = await joinedRoom();
  const page = t.room.history({ since: { epoch: "other", offset: 1 } });
  t.ws.reply("history", { type: "error", code: "unrecoverable_position", message: "another epoch" });
  await assert.rejects(page, { code: "unrecoverable_position" });
});

test("history waits for the connection, and is asked again if its reply was lost", async () => {
  const t = setup();
  const room = t.sb.join("chat:lobby");
  const page = room.history({ limit: 5, reverse: true });
  let ws = t.connect();
  assert.deepEqual(ws.sent.map((f) => f.type), ["join", "history"]);
  ws.serverClose(1006);
  t.clock.advance(t.named("reconnect").at(-1).delayMs);
  ws = t.connect();
  assert.deepEqual(ws.sent.map((f) => f.type), ["join", "history"]);
  ws.reply("history", { type: "history", room: "chat:lobby", epoch: "e1", offset: 0, messages: [] });
  assert.deepEqual(await page, { epoch: "e1", offset: 0, messages: [] });
});

test("history of a room that was left, or of a closed client, rejects with closed", async () => {
  const t = await joinedRoom();
  const waiting = (() => {
    t.WebSocket.last.serverClose(1006);
    return t.room.history();
  })();
  t.room.leave();
  await assert.rejects(waiting, { code: "closed" });
  await assert.rejects(t.room.history(), { code: "closed" });
  t.sb.close();
  await assert.rejects(t.sb.join("chat:other").history(), { code: "closed" });
});

test("a batched presence frame is applied in order and its member_count is the count", async () => {
  const cy = { conn: "c3", user: "cy", presence: { name: "cy" } };
  const { ws, room, of } = await joinedRoom({}, { members: [ada, bob], member_count: 2 });
  const seen = [];
  room.on("presence", (e) => seen.push(`${e.event} ${e.member.conn}`));
  ws.receive({
    type: "presence",
    room: "chat:lobby",
    events: [
      { event: "join", member: cy },
      { event: "update", member: { ...cy, presence: { name: "cy", away: true } } },
      { event: "leave", member: bob },
      { event: "join", member: bob },
      { event: "leave", member: bob },
    ],
    member_count: 2,
  });
  assert.deepEqual(seen, ["join c3", "update c3", "leave c2", "join c2", "leave c2"]);
  assert.deepEqual(room.members.map((m) => m.conn), ["c1", "c3"]);
  assert.deepEqual(room.members[1].presence, { name: "cy", away: true });
  assert.equal(room.memberCount, 2);
  assert.ok(of("members").length >= 2);
  // A count-only room's frame: the count, no list change.
  ws.receive({ type: "presence", room: "chat:lobby", member_count: 7 });
  assert.equal(room.memberCount, 7);
  assert.deepEqual(room.members.map((m) => m.conn), ["c1", "c3"]);
});
