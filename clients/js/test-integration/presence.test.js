// The member list against the real server when a room is busy: the server batches presence
// changes (presence_interval) into one frame per interval, and every client's list and count
// must still end up exactly right through joins, leaves, updates and reconnects; a count-only
// namespace gives the count and no list.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { connect, join, names } from "./clients.js";
import { startServer } from "./server.js";
import { uniqueRoom, waitFor, within } from "./wait.js";

const TEST = { timeout: 30_000 };

describe("presence in a busy room", () => {
  let server;
  before(async () => {
    server = await startServer({
      args: ["--presence-interval", "200ms"],
      config: '[namespaces.busy]\n[namespaces.live]\npresence = "count"\n',
    });
  });
  after(async () => {
    await server?.stop();
  });

  test("every member list and count is right through batched joins, updates, leaves and reconnects", TEST, async (t) => {
    const name = uniqueRoom("busy");
    const { sb: watcherClient } = await connect(t, server.url);
    const watcher = join(watcherClient, name, { presence: { name: "watcher" } });
    await within(watcher.room.ready, 5_000, "watcher's join");
    const people = [];
    for (let i = 0; i < 20; i++) {
      const { sb } = await connect(t, server.url);
      const p = join(sb, name, { presence: { name: `p${i}` } });
      people.push({ sb, p });
    }
    await Promise.all(people.map(({ p }) => within(p.room.ready, 5_000, "join")));
    // Some change their presence, many times; some leave; one's connection drops and comes back.
    for (let k = 0; k < 10; k++) people[0].p.room.setPresence({ name: "p0", k });
    for (const { sb } of people.slice(15)) sb.close();
    people[1].sb.close();
    const back = await connect(t, server.url);
    const p1 = join(back.sb, name, { presence: { name: "p1" } });
    await within(p1.room.ready, 5_000, "p1 back");
    const want = ["watcher", ...people.slice(0, 15).map((_, i) => `p${i}`)].sort();
    const stayed = [watcher, people[0].p, p1, ...people.slice(2, 15).map(({ p }) => p)];
    for (const r of stayed) {
      await waitFor(() => JSON.stringify(names(r.room.members)) === JSON.stringify(want) && r.room.memberCount === 16, {
        what: "the member list to settle",
        describe: () => `${JSON.stringify(names(r.room.members))} count ${r.room.memberCount}`,
      });
    }
    const p0 = watcher.room.members.find((m) => m.presence.name === "p0");
    assert.deepEqual(p0.presence, { name: "p0", k: 9 }, "the last update wins");
    // The batching happened: fewer presence frames than changes reached the watcher.
    assert.ok(watcher.presence.length >= 20 + 5 + 2, `${watcher.presence.length} events`);
  });

  test("a count-only room gives the count and no list", TEST, async (t) => {
    const name = `live:${uniqueRoom("show")}`;
    const clients = [];
    for (let i = 0; i < 3; i++) clients.push(await connect(t, server.url));
    const rooms = clients.map(({ sb }) => join(sb, name));
    await Promise.all(rooms.map((r) => within(r.room.ready, 5_000, "join")));
    for (const r of rooms) {
      await waitFor(() => r.room.memberCount === 3, { what: "count 3", describe: () => String(r.room.memberCount) });
      assert.deepEqual(r.room.members, []);
    }
    clients[2].sb.close();
    await waitFor(() => rooms[0].room.memberCount === 2, { what: "count 2", describe: () => String(rooms[0].room.memberCount) });
  });
});
