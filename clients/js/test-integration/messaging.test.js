// The SDK against the real server: connecting, rooms, messages, presence, and error replies
// surfacing as rejected promises with the server's code.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { SwitchboardError } from "../src/switchboard.js";
import { connect, join, names } from "./clients.js";
import { startServer } from "./server.js";
import { nextEvent, sleep, uniqueRoom, waitFor, within } from "./wait.js";

const TEST = { timeout: 20_000 };

describe("messaging against the real server", () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test("two clients join a room, see each other, and exchange messages", TEST, async (t) => {
    const name = uniqueRoom("chat");
    const { sb: ada } = await connect(t, server.url);
    const { sb: grace } = await connect(t, server.url);
    assert.equal(ada.state, "open");
    assert.match(ada.conn, /\S/);
    assert.notEqual(ada.conn, grace.conn);

    const a = join(ada, name, { presence: { name: "ada" } });
    const joined = await within(a.room.ready, 5_000, "ada's join");
    assert.equal(joined.room, name);
    assert.equal(typeof joined.epoch, "string");
    assert.equal(joined.offset, 0);
    assert.deepEqual(names(a.room.members), ["ada"]);

    const graceJoins = nextEvent(a.room, "presence", { filter: (e) => e.event === "join" });
    const g = join(grace, name, { presence: { name: "grace" } });
    const graceJoined = await within(g.room.ready, 5_000, "grace's join");
    assert.equal(graceJoined.epoch, joined.epoch, "same room, same epoch");
    assert.deepEqual(names(g.room.members), ["ada", "grace"]);
    const { member } = await graceJoins;
    assert.deepEqual(member, { conn: grace.conn, user: null, presence: { name: "grace" } });
    assert.deepEqual(names(a.room.members), ["ada", "grace"]);

    const reply = await within(a.room.publish({ text: "hi grace" }), 5_000, "publish");
    assert.equal(reply.offset, 1);
    const second = await within(a.room.publish("plain string"), 5_000, "publish");
    assert.equal(second.offset, 2);
    const third = await within(g.room.publish(null), 5_000, "publish");
    assert.equal(third.offset, 3);

    await waitFor(() => g.messages.length === 3 && a.messages.length === 3, {
      what: "3 messages on both sides",
      describe: () => JSON.stringify({ ada: a.messages, grace: g.messages }),
    });
    for (const record of [a, g]) {
      assert.deepEqual(
        record.messages.map((m) => [m.offset, m.data, m.from.presence.name]),
        [
          [1, { text: "hi grace" }, "ada"],
          [2, "plain string", "ada"],
          [3, null, "grace"],
        ],
      );
      assert.equal(record.messages[0].from.conn, ada.conn);
      assert.equal(typeof record.messages[0].ts, "number");
    }
    // Nothing more arrives: each message once.
    await sleep(100);
    assert.equal(a.messages.length, 3);
    assert.equal(g.messages.length, 3);
    assert.deepEqual([...a.errors, ...g.errors], []);
  });

  test("echo: false leaves the sender out", TEST, async (t) => {
    const name = uniqueRoom("chat");
    const { sb: ada } = await connect(t, server.url);
    const { sb: grace } = await connect(t, server.url);
    const a = join(ada, name);
    const g = join(grace, name);
    await Promise.all([a.room.ready, g.room.ready]);
    const { offset } = await a.room.publish("quiet", { echo: false });
    await waitFor(() => g.messages.length === 1, { what: "grace to get the message" });
    assert.equal(g.messages[0].offset, offset);
    await sleep(100);
    assert.deepEqual(a.messages, []);
  });

  test("presence updates and leaves reach the other member", TEST, async (t) => {
    const name = uniqueRoom("chat");
    const { sb: ada } = await connect(t, server.url);
    const { sb: grace } = await connect(t, server.url);
    const a = join(ada, name, { presence: { name: "ada" } });
    await a.room.ready;
    const g = join(grace, name, { presence: { name: "grace" } });
    await g.room.ready;
    await waitFor(() => a.room.members.length === 2, { what: "ada to see grace" });

    const update = nextEvent(g.room, "presence", { filter: (e) => e.event === "update" });
    await within(a.room.setPresence({ name: "ada", typing: true }), 5_000, "setPresence");
    const { member } = await update;
    assert.deepEqual(member, { conn: ada.conn, user: null, presence: { name: "ada", typing: true } });
    assert.deepEqual(
      g.room.members.find((m) => m.conn === ada.conn).presence,
      { name: "ada", typing: true },
    );

    const leave = nextEvent(a.room, "presence", { filter: (e) => e.event === "leave" });
    await within(g.room.leave(), 5_000, "leave");
    assert.equal(g.room.state, "closed");
    assert.equal((await leave).member.conn, grace.conn);
    assert.deepEqual(names(a.room.members), ["ada"]);

    // A room left can be joined again: a new room object, a fresh join.
    const again = join(grace, name, { presence: { name: "grace 2" } });
    assert.notEqual(again.room, g.room);
    await again.room.ready;
    assert.deepEqual(names(again.room.members), ["ada", "grace 2"]);
    await waitFor(() => a.room.members.length === 2, { what: "ada to see grace come back" });
  });

  test("the server counts the connection until the client closes", TEST, async (t) => {
    // A server of its own: the shared one may still be closing the connections of the
    // tests before, and its count would move under this test.
    const own = await startServer();
    t.after(() => own.stop());
    assert.equal((await own.health()).connections, 0);
    const { sb } = await connect(t, own.url);
    await waitFor(async () => (await own.health()).connections === 1, {
      what: "/healthz connections = 1",
    });
    const disconnect = nextEvent(sb, "disconnect");
    sb.close();
    assert.equal(sb.state, "closed");
    assert.deepEqual(await disconnect, { code: 1000, reason: "closed by the client", reconnect: false });
    await waitFor(async () => (await own.health()).connections === 0, {
      what: "/healthz connections back to 0",
    });
  });

  describe("error replies reject with the server's code", () => {
    test("joining and publishing to an invalid room name: invalid_room", TEST, async (t) => {
      const { sb } = await connect(t, server.url);
      const bad = join(sb, "no spaces allowed");
      const publish = bad.room.publish({ text: "lost" }); // waits for the join, fails with it
      await assert.rejects(within(bad.room.ready, 5_000, "ready"), (error) => {
        assert.ok(error instanceof SwitchboardError);
        assert.equal(error.code, "invalid_room");
        assert.match(error.message, /room names/);
        return true;
      });
      await assert.rejects(within(publish, 5_000, "publish"), { name: "SwitchboardError", code: "invalid_room" });
      assert.equal(bad.room.state, "closed");
      assert.deepEqual(bad.errors.map((e) => e.code), ["invalid_room"]);
      // Once refused, the room is over: later publishes fail at once.
      await assert.rejects(bad.room.publish("again"), { code: "closed" });

      const tooLong = join(sb, "x".repeat(129));
      await assert.rejects(within(tooLong.room.ready, 5_000, "ready"), { code: "invalid_room" });
      const longest = join(sb, "y".repeat(128));
      await within(longest.room.ready, 5_000, "a 128-character name is fine");

      // The connection is unaffected.
      assert.equal(sb.state, "open");
      const ok = join(sb, uniqueRoom("chat"));
      await ok.room.ready;
      assert.equal((await ok.room.publish("still fine")).offset, 1);
    });

    test("presence that is not an object: bad_request", TEST, async (t) => {
      const { sb } = await connect(t, server.url);
      const r = join(sb, uniqueRoom("chat"), { presence: { name: "ada" } });
      await r.room.ready;
      await assert.rejects(within(r.room.setPresence(["not", "an", "object"]), 5_000, "setPresence"), {
        code: "bad_request",
      });
      assert.deepEqual(r.errors.map((e) => e.code), ["bad_request"]);
      assert.equal(r.room.state, "joined", "the room stays joined");
      assert.equal((await r.room.publish("still here")).offset, 1);
    });

    test("a join refused outright: ready rejects, queued publishes too", TEST, async (t) => {
      const { sb } = await connect(t, server.url);
      const r = join(sb, uniqueRoom("chat"), { presence: "not an object" });
      const queued = r.room.publish("waiting");
      await assert.rejects(within(r.room.ready, 5_000, "ready"), { code: "bad_request" });
      await assert.rejects(within(queued, 5_000, "publish"), { code: "bad_request" });
      assert.equal(r.room.state, "closed");
    });
  });
});

describe("error replies under server limits", () => {
  test("over max-rooms-per-connection: too_many_rooms", TEST, async (t) => {
    const server = await startServer({ args: ["--max-rooms-per-connection", "2"] });
    t.after(() => server.stop());
    const { sb } = await connect(t, server.url);
    const first = join(sb, uniqueRoom("a"));
    const second = join(sb, uniqueRoom("b"));
    await Promise.all([first.room.ready, second.room.ready]);
    const third = join(sb, uniqueRoom("c"));
    await assert.rejects(within(third.room.ready, 5_000, "ready"), { code: "too_many_rooms" });
    assert.equal(third.room.state, "closed");
    // Leaving one makes room for another.
    await first.room.leave();
    const fourth = join(sb, uniqueRoom("d"));
    await within(fourth.room.ready, 5_000, "join after a leave");
  });

  // A frame dropped by the rate limiter is answered with its id, so publish() rejects
  // with rate_limited instead of waiting out its timeout.
  test("over the message rate: rate_limited, and the connection stays", { ...TEST }, async (t) => {
    const server = await startServer({ args: ["--message-rate", "1", "--message-burst", "3"] });
    t.after(() => server.stop());
    const { sb } = await connect(t, server.url);
    const r = join(sb, uniqueRoom("chat"));
    await r.room.ready; // the join is one frame of the burst
    const publish = (data) => r.room.publish(data, { timeoutMs: 1_000 });
    const results = await within(
      Promise.allSettled([publish(1), publish(2), publish(3), publish(4)]),
      5_000,
      "publishes",
    );
    const codes = results.map((result) => (result.status === "fulfilled" ? "ok" : result.reason.code));
    assert.deepEqual(codes, ["ok", "ok", "rate_limited", "rate_limited"]);
    assert.equal(sb.state, "open");
    await waitFor(() => r.messages.length === 2, { what: "the 2 accepted messages" });
    assert.deepEqual(r.messages.map((m) => m.data), [1, 2]);
  });

  // A big room's joined reply carries one page of members; the SDK fetches the rest and keeps
  // the list right through joins and leaves that happen meanwhile.
  test("a room bigger than a page: the SDK lists every member and the count", { ...TEST }, async (t) => {
    const server = await startServer({ args: ["--members-page-size", "3"] });
    t.after(() => server.stop());
    const name = uniqueRoom("big");
    const early = [];
    for (let i = 0; i < 8; i++) {
      const { sb } = await connect(t, server.url);
      const r = join(sb, name, { presence: { name: `m${i}` } });
      await within(r.room.ready, 5_000, `member ${i} joins`);
      early.push(r);
    }
    const { sb } = await connect(t, server.url);
    const newcomer = join(sb, name, { presence: { name: "new" } });
    const reply = await within(newcomer.room.ready, 5_000, "newcomer joins");
    assert.equal(reply.members.length, 3);
    assert.equal(reply.member_count, 9);
    assert.equal(newcomer.room.memberCount, 9);
    await early[0].room.leave();
    await waitFor(() => newcomer.room.members.length === 8, {
      what: "all 8 remaining members listed",
      describe: () => JSON.stringify(names(newcomer.room.members)),
    });
    assert.deepEqual(names(newcomer.room.members).sort(), ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "new"]);
    assert.equal(newcomer.room.memberCount, 8);
  });

  test("a room bigger than memberLimit: the first page and the count, the rest on fetchMembers()", { ...TEST }, async (t) => {
    const server = await startServer({ args: ["--members-page-size", "3"] });
    t.after(() => server.stop());
    const name = uniqueRoom("bigger");
    for (let i = 0; i < 8; i++) {
      const { sb } = await connect(t, server.url);
      await within(join(sb, name, { presence: { name: `m${i}` } }).room.ready, 5_000, `member ${i} joins`);
    }
    const { sb } = await connect(t, server.url);
    const newcomer = join(sb, name, { presence: { name: "new" }, memberLimit: 5 });
    await within(newcomer.room.ready, 5_000, "newcomer joins");
    // Time for pages to arrive, had any been asked for.
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(newcomer.room.members.length, 3, "only the first page");
    assert.equal(newcomer.room.memberCount, 9);
    assert.equal(newcomer.room.membersComplete, false);
    const late = await connect(t, server.url);
    await within(join(late.sb, name, { presence: { name: "late" } }).room.ready, 5_000, "a late member joins");
    await waitFor(() => names(newcomer.room.members).includes("late"), { what: "the late member listed" });
    const all = await within(newcomer.room.fetchMembers(), 5_000, "every page fetched");
    assert.deepEqual(names(all).sort(), ["late", "m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "new"]);
    assert.equal(newcomer.room.memberCount, 10);
    assert.equal(newcomer.room.membersComplete, true);
  });
});
