// The SDK across server restarts: the real server is stopped (SIGTERM: `shutdown` frame, then
// close 1001) or killed, and started again on the same port and data directory. A graceful
// stop saves every room's recovery window, so the clients recover; a kill loses it, and they
// are told (`gap`).

import assert from "node:assert/strict";
import { test } from "node:test";
import { WebSocket } from "ws";
import { connect, join, names } from "./clients.js";
import { gatedWebSocket } from "./gate.js";
import { freePort, restartableServer, startServer } from "./server.js";
import { nextEvent, sleep, uniqueRoom, waitFor, within } from "./wait.js";

const TEST = { timeout: 30_000 };

/** Both rooms joined, each listing exactly the two given connections. */
function bothSeeBoth(records, conns) {
  const want = [...conns].sort();
  return records.every(
    (r) => r.room.state === "joined" && JSON.stringify(r.room.members.map((m) => m.conn).sort()) === JSON.stringify(want),
  );
}

const show = (...records) =>
  JSON.stringify(records.map((r) => ({ state: r.room.state, members: r.room.members, messages: r.messages.length })));

test("after a restart the client reconnects, re-joins, lists members right and recovers", TEST, async (t) => {
  const holder = await restartableServer(t);
  const url = holder.server.url;
  const ada = await connect(t, url);
  const grace = await connect(t, url);
  const name = uniqueRoom("chat");
  const a = join(ada.sb, name, { presence: { name: "ada" } });
  const firstJoin = await a.room.ready;
  const g = join(grace.sb, name, { presence: { name: "grace" } });
  await g.room.ready;
  await waitFor(() => bothSeeBoth([a, g], [ada.sb.conn, grace.sb.conn]), { what: "both members", describe: () => show(a, g) });
  await a.room.publish({ text: "before" });
  await waitFor(() => a.messages.length === 1 && g.messages.length === 1, { what: "the first message" });
  const oldConns = [ada.sb.conn, grace.sb.conn];

  const shutdown = nextEvent(ada.sb, "shutdown");
  const disconnect = nextEvent(ada.sb, "disconnect");
  const exit = await holder.server.stop();
  assert.deepEqual(exit, { code: 0, signal: null }, "SIGTERM: the server exits with 0");
  assert.equal((await shutdown).reconnectMs, 1000);
  assert.deepEqual(await disconnect, { code: 1001, reason: "server shutting down", reconnect: true });
  await waitFor(() => ada.sb.state === "reconnecting" && grace.sb.state === "reconnecting", { what: "reconnecting" });
  assert.equal(a.room.state, "joining");
  assert.equal(g.room.state, "joining");

  await sleep(1_500); // down long enough for attempts to fail (connection refused)
  assert.equal(ada.sb.state, "reconnecting");
  assert.ok(ada.disconnects.length >= 2, `failed attempts are reported: ${JSON.stringify(ada.disconnects)}`);
  await holder.restart();

  await waitFor(() => ada.sb.state === "open" && grace.sb.state === "open", { timeoutMs: 10_000, what: "both open again" });
  assert.deepEqual(ada.states, ["connecting", "open", "reconnecting", "open"]);
  assert.deepEqual(grace.states, ["connecting", "open", "reconnecting", "open"]);
  assert.notDeepEqual([ada.sb.conn, grace.sb.conn], oldConns, "new connections");

  // Re-joined automatically; each lists both, with their presence, and nobody stale.
  await waitFor(() => bothSeeBoth([a, g], [ada.sb.conn, grace.sb.conn]), {
    what: "both rooms re-joined, listing the two new connections",
    describe: () => show(a, g),
  });
  for (const r of [a, g]) {
    assert.deepEqual(names(r.room.members), ["ada", "grace"]);
    assert.ok(r.room.members.every((m) => !oldConns.includes(m.conn)), "no stale member");
  }
  assert.deepEqual((await holder.server.health()).connections, 2);

  // The server saved the room's window at shutdown: the re-join (with since) recovered,
  // with nothing missed, and the room keeps its epoch and offsets.
  await waitFor(() => a.recoveries.length === 1 && g.recoveries.length === 1, { what: "both recovered" });
  for (const r of [a, g]) {
    assert.deepEqual(r.gaps, [], "no gap");
    assert.deepEqual(r.recoveries, [{ room: name, count: 0 }]);
  }

  // Messages flow again, offsets going on in the same epoch; nothing is delivered twice.
  const after = await a.room.publish({ text: "after" });
  assert.deepEqual([after.offset, after.duplicate], [2, false]);
  await waitFor(() => a.messages.length === 2 && g.messages.length === 2, { what: "the message after the restart" });
  for (const r of [a, g]) {
    assert.deepEqual(r.messages.map((m) => [m.offset, m.data.text]), [[1, "before"], [2, "after"]]);
  }
  assert.equal(firstJoin.epoch, (await a.room.history()).epoch, "the same epoch");
  assert.deepEqual([...ada.errors, ...grace.errors, ...a.errors, ...g.errors], []);
});

test("publishes made while the server is down are sent once, in order, after the reconnect", TEST, async (t) => {
  const holder = await restartableServer(t);
  // Ada's connection attempts go nowhere (a 404) while the gate is shut, so that grace is
  // back in the room before ada's queued publishes go out, and must receive them.
  const { WebSocket: GatedWebSocket, gate } = gatedWebSocket(WebSocket);
  const ada = await connect(t, holder.server.url, { WebSocket: GatedWebSocket });
  const grace = await connect(t, holder.server.url);
  const name = uniqueRoom("chat");
  const a = join(ada.sb, name, { presence: { name: "ada" } });
  const g = join(grace.sb, name, { presence: { name: "grace" } });
  await Promise.all([a.room.ready, g.room.ready]);
  await a.room.publish("before");
  await waitFor(() => g.messages.length === 1, { what: "the first message" });

  await holder.server.stop();
  await waitFor(() => ada.sb.state === "reconnecting" && a.room.state === "joining", { what: "ada reconnecting" });
  gate.shut = true;

  // Published while the server is down: queued, not rejected.
  const texts = ["one", "two", "three", "four", "five"];
  const settled = texts.map(() => "pending");
  const publishes = texts.map((text, i) =>
    a.room.publish({ text }).then(
      (reply) => {
        settled[i] = "ok";
        return reply;
      },
      (error) => {
        settled[i] = error.code;
        throw error;
      },
    ),
  );
  await sleep(300);
  assert.deepEqual(settled, texts.map(() => "pending"), "queued while down");

  await holder.restart();
  await waitFor(() => grace.sb.state === "open" && g.room.state === "joined", { timeoutMs: 10_000, what: "grace back" });
  await sleep(200);
  assert.equal(ada.sb.state, "reconnecting", "ada is kept out until grace is back");
  assert.deepEqual(settled, texts.map(() => "pending"));
  gate.shut = false;

  const replies = await within(Promise.all(publishes), 10_000, "the queued publishes");
  const offsets = replies.map((reply) => reply.offset);
  assert.deepEqual(offsets, [2, 3, 4, 5, 6], "in order, one offset each, after the one before the restart");

  const after = (r) => r.messages.slice(1); // the ones published while down
  await waitFor(() => after(a).length >= 5 && after(g).length >= 5, {
    what: "5 queued messages on both sides",
    describe: () => show(a, g),
  });
  await sleep(300); // anything delivered twice would show up by now
  for (const r of [a, g]) {
    assert.deepEqual(
      after(r).map((m) => [m.offset, m.data.text, m.from.conn]),
      texts.map((text, i) => [i + 2, text, ada.sb.conn]),
    );
    assert.deepEqual(r.gaps, [], "the restarted server recovers the room");
  }
  await waitFor(() => bothSeeBoth([a, g], [ada.sb.conn, grace.sb.conn]), { what: "both members", describe: () => show(a, g) });
});

// The other order: ada is back first and her queued publishes go out while grace is still
// away. Grace's re-join (since: the last message she saw) brings them, each once.
test("after a restart, a client back later recovers what another published before it was back", TEST, async (t) => {
  const holder = await restartableServer(t);
  const { WebSocket: GatedWebSocket, gate } = gatedWebSocket(WebSocket);
  const ada = await connect(t, holder.server.url);
  const grace = await connect(t, holder.server.url, { WebSocket: GatedWebSocket });
  const name = uniqueRoom("chat");
  const a = join(ada.sb, name, { presence: { name: "ada" } });
  const g = join(grace.sb, name, { presence: { name: "grace" } });
  await Promise.all([a.room.ready, g.room.ready]);
  await a.room.publish("before");
  await waitFor(() => g.messages.length === 1, { what: "the first message" });

  await holder.server.stop();
  await waitFor(() => grace.sb.state === "reconnecting", { what: "grace reconnecting" });
  gate.shut = true;
  const texts = ["one", "two", "three"];
  const publishes = texts.map((text) => a.room.publish({ text }));
  await holder.restart();
  const replies = await within(Promise.all(publishes), 10_000, "ada's queued publishes");
  assert.deepEqual(replies.map((r) => r.offset), [2, 3, 4]);
  assert.equal(grace.sb.state, "reconnecting", "grace was away while they went out");
  assert.equal(g.messages.length, 1);
  await a.room.publish({ text: "four, live" });

  gate.shut = false;
  await waitFor(() => g.recoveries.length === 1, { timeoutMs: 10_000, what: "grace recovered" });
  assert.deepEqual(g.recoveries, [{ room: name, count: 4 }]);
  await a.room.publish({ text: "five, after grace is back" });
  await waitFor(() => g.messages.length === 6, { what: "six messages for grace", describe: () => show(a, g) });
  await sleep(300); // anything delivered twice would show up by now
  assert.deepEqual(
    g.messages.map((m) => [m.offset, m.data.text ?? m.data]),
    [[1, "before"], [2, "one"], [3, "two"], [4, "three"], [5, "four, live"], [6, "five, after grace is back"]],
  );
  assert.deepEqual(g.gaps, []);
  assert.deepEqual(a.messages.map((m) => m.offset), [1, 2, 3, 4, 5, 6]);
});

test("a server killed without a shutdown frame: the client reconnects all the same", TEST, async (t) => {
  const holder = await restartableServer(t);
  const ada = await connect(t, holder.server.url);
  const name = uniqueRoom("chat");
  const a = join(ada.sb, name, { presence: { name: "ada" } });
  await a.room.ready;

  const disconnect = nextEvent(ada.sb, "disconnect");
  const exit = await holder.server.stop({ signal: "SIGKILL" });
  assert.equal(exit.signal, "SIGKILL");
  const { code, reconnect } = await disconnect;
  assert.equal(code, 1006);
  assert.equal(reconnect, true);
  const queued = a.room.publish("while down");

  await holder.restart();
  await waitFor(() => ada.sb.state === "open" && a.room.state === "joined", { timeoutMs: 10_000, what: "open again" });
  // The recovery window was in memory only: the room starts over, and the client is told.
  assert.equal((await within(queued, 5_000, "queued publish")).offset, 1);
  assert.deepEqual(ada.states, ["connecting", "open", "reconnecting", "open"]);
  assert.deepEqual(a.gaps.map((g) => [g.room, g.reason, g.since.epoch === g.epoch]), [[name, "epoch_changed", false]]);
  assert.deepEqual(a.recoveries, []);
  assert.deepEqual(a.room.members.map((m) => m.conn), [ada.sb.conn]);
});

test("a server that stops answering: heartbeat finds the dead connection, the client reconnects", TEST, async (t) => {
  const port = await freePort();
  const args = ["--heartbeat-interval", "200ms", "--heartbeat-timeout", "5s"];
  const server = await startServer({ port, args });
  t.after(() => server.stop());
  // Silence allowed: heartbeat_ms (200, from welcome) + heartbeatGraceMs.
  const ada = await connect(t, server.url, { heartbeatGraceMs: 300, timeoutMs: 500 });
  const a = join(ada.sb, uniqueRoom("chat"), { presence: { name: "ada" } });
  await a.room.ready;
  await sleep(1_000); // idle but alive: the pings are answered
  assert.deepEqual(ada.disconnects, []);

  const dropped = nextEvent(ada.sb, "disconnect", { timeoutMs: 3_000 });
  server.signal("SIGSTOP"); // the process freezes: the socket stays open, nothing comes back
  t.after(() => server.signal("SIGCONT"));
  const { code, reason, reconnect } = await dropped;
  assert.equal(code, 1006);
  assert.match(reason, /no frame from the server/);
  assert.equal(reconnect, true);
  assert.equal(ada.sb.state, "reconnecting");
  await sleep(300); // attempts time out against the frozen server
  server.signal("SIGCONT");
  await waitFor(() => ada.sb.state === "open" && a.room.state === "joined", { timeoutMs: 10_000, what: "open again" });
  // The server may let the new connection in before it reads the old one's close: the old
  // one may be listed for a moment, then its leave removes it.
  await waitFor(() => a.room.members.length === 1 && a.room.members[0].conn === ada.sb.conn, {
    what: "only the new connection listed",
    describe: () => JSON.stringify(a.room.members),
  });
  // The same server, with the room's window in memory: recovered, not a gap.
  assert.deepEqual(a.gaps, []);
  assert.deepEqual(a.recoveries.map((r) => r.count), [0]);
});

test("rooms joined while disconnected, and rooms left while disconnected", TEST, async (t) => {
  const holder = await restartableServer(t);
  const ada = await connect(t, holder.server.url);
  const grace = await connect(t, holder.server.url);
  const stay = uniqueRoom("stay");
  const gone = uniqueRoom("gone");
  const fresh = uniqueRoom("fresh");
  const aStay = join(ada.sb, stay, { presence: { name: "ada" } });
  const aGone = join(ada.sb, gone, { presence: { name: "ada" } });
  const gStay = join(grace.sb, stay, { presence: { name: "grace" } });
  const gGone = join(grace.sb, gone, { presence: { name: "grace" } });
  await Promise.all([aStay, aGone, gStay, gGone].map((r) => r.room.ready));

  await holder.server.stop();
  await waitFor(() => ada.sb.state === "reconnecting", { what: "reconnecting" });
  await aGone.room.leave(); // while down: nothing to tell the server
  assert.equal(aGone.room.state, "closed");
  await aStay.room.setPresence({ name: "ada", away: true }); // goes with the re-join
  const aFresh = join(ada.sb, fresh, { presence: { name: "ada" } });
  const gFresh = join(grace.sb, fresh, { presence: { name: "grace" } });

  await holder.restart();
  await within(Promise.all([aFresh.room.ready, gFresh.room.ready]), 10_000, "joins made while down");
  await waitFor(() => bothSeeBoth([aStay, gStay], [ada.sb.conn, grace.sb.conn]), { what: "stay", describe: () => show(aStay, gStay) });
  await waitFor(() => bothSeeBoth([aFresh, gFresh], [ada.sb.conn, grace.sb.conn]), { what: "fresh", describe: () => show(aFresh, gFresh) });
  // The room ada left before the restart is not re-joined: grace is alone in it.
  await waitFor(() => gGone.room.state === "joined", { what: "grace back in gone" });
  await sleep(200);
  assert.deepEqual(gGone.room.members.map((m) => m.conn), [grace.sb.conn]);
  assert.equal((await holder.server.health()).rooms, 3);
  // Presence set while down went out with the re-join.
  assert.deepEqual(gStay.room.members.find((m) => m.conn === ada.sb.conn).presence, { name: "ada", away: true });
});

// Once the server has sent `shutdown`, rooms count as not joined: a publish made then waits in
// the room's queue for the reconnect instead of going to a connection that will not process it.
test("publishes made after the server announced its shutdown wait for the reconnect", { ...TEST }, async (t) => {
  const holder = await restartableServer(t);
  const ada = await connect(t, holder.server.url);
  const a = join(ada.sb, uniqueRoom("chat"), { presence: { name: "ada" } });
  await a.room.ready;
  const publishes = [];
  const publish = (data) => {
    const promise = a.room.publish(data);
    promise.catch(() => {}); // looked at below
    publishes.push(promise);
  };
  ada.sb.on("shutdown", () => {
    publish("in the shutdown listener");
    setTimeout(() => publish("during the closing handshake"), 0);
  });
  await holder.server.stop();
  await holder.restart();
  await waitFor(() => ada.sb.state === "open" && a.room.state === "joined", { timeoutMs: 10_000, what: "open again" });
  const results = await within(Promise.allSettled(publishes), 10_000, "the publishes");
  assert.deepEqual(
    results.map((r) => (r.status === "fulfilled" ? r.value.offset : r.reason.code)),
    [1, 2],
  );
  await waitFor(() => a.messages.length === 2, { what: "both messages" });
});

// docs/protocol.md: "on a graceful shutdown the windows are written to the embedded store and
// read back at start, so a planned restart loses nothing"; "the epoch of a room changes only
// when everything it kept is gone". A room in which nothing was published yet keeps its epoch
// too, so its members are told `recovered`, not `gap`.
test("a room where nothing was published yet recovers across a graceful restart", TEST, async (t) => {
  const holder = await restartableServer(t);
  const ada = await connect(t, holder.server.url);
  const a = join(ada.sb, uniqueRoom("chat"), { presence: { name: "ada" } });
  await a.room.ready;
  await holder.server.stop();
  await holder.restart();
  await waitFor(() => a.recoveries.length + a.gaps.length > 0, { timeoutMs: 10_000, what: "the re-join" });
  assert.deepEqual(a.gaps, []);
  assert.deepEqual(a.recoveries.map((r) => r.count), [0]);
});
