// The chat through a real load balancer over two nodes sharing a real Redis, as
// scripts/cluster.sh runs it: two people whose pages land on different nodes see each other
// and talk; when one node is killed, its page reconnects through the balancer to the other
// node and gets what was said meanwhile, exactly once.

import assert from "node:assert/strict";
import { test } from "node:test";
import { API_KEY } from "../lib/backend.js";
import { transcript, countMessages, launchBrowser, openChat, say, waitForConnection, waitForMembers, waitForMessages, within } from "../lib/browser.js";
import { startBalancer, startNodes, startRedis } from "../lib/cluster.js";

const ROOM = "e2e-cluster";

async function api(node, path) {
  const res = await fetch(`${node.origin}${path}`, { headers: { Authorization: `Bearer ${API_KEY}` } });
  assert.equal(res.status, 200, `${path}: ${await res.clone().text()}`);
  return res.json();
}

/** Which node (its id) each person's connection is on, from the members every node lists. */
async function whereIs(nodes) {
  const ids = await Promise.all(nodes.map(async (n) => (await api(n, "/api/info")).node));
  const { members } = await api(nodes[0], `/api/rooms/${encodeURIComponent(`chat:${ROOM}`)}/members`);
  const where = {};
  for (const m of members) where[m.info?.name ?? m.presence?.name ?? m.user ?? m.conn] = ids.indexOf(m.conn.split(".")[0]);
  return where;
}

test("two pages on two nodes behind a load balancer see each other, talk, and survive a node's death", { timeout: 120_000 }, async () => {
  const browser = await launchBrowser();
  const redis = await startRedis();
  const nodes = await startNodes(redis, 2, ["--node-timeout", "2s", "--api-keys", API_KEY]);
  const balancer = await startBalancer(nodes);
  try {
    const ada = await openChat(browser, balancer.origin, { name: "ada", room: ROOM });
    const grace = await openChat(browser, balancer.origin, { name: "grace", room: ROOM });
    globalThis.__ada = ada.page;
    globalThis.__grace = grace.page;
    // Each sees the other, whichever node the balancer picked.
    await waitForMembers(ada.page, ["ada", "grace"]);
    await waitForMembers(grace.page, ["ada", "grace"]);
    const where = await whereIs(nodes);
    assert.notEqual(where.ada, where.grace, `the balancer spreads the connections: ${JSON.stringify(where)}`);
    assert.ok(where.ada >= 0 && where.grace >= 0, JSON.stringify(where));

    await say(ada.page, "hello from ada's node");
    await say(grace.page, "hello from grace's node");
    for (const { page } of [ada, grace]) await waitForMessages(page, ["hello from ada's node", "hello from grace's node"]);

    // Grace's node dies (SIGKILL): her page reconnects through the balancer to ada's node.
    await nodes[where.grace].kill();
    await say(ada.page, "said while grace's node was down");
    await waitForConnection(grace.page, "open", 30_000);
    await waitForMessages(grace.page, ["said while grace's node was down"], 30_000);
    // Her old connection leaves (the dead node's members are removed within node_timeout),
    // her new one is there: ada sees grace once, on the remaining node.
    await waitForMembers(ada.page, ["ada", "grace"], 30_000);
    await waitForMembers(grace.page, ["ada", "grace"], 30_000);
    const after = await whereIs([nodes[where.ada]]);
    assert.equal(after.grace, 0, `grace is on the remaining node: ${JSON.stringify(after)}`);

    await say(grace.page, "back, from grace");
    await waitForMessages(ada.page, ["back, from grace"]);
    await ada.page.waitForTimeout(1_000);
    for (const { page } of [ada, grace]) {
      for (const text of ["hello from ada's node", "hello from grace's node", "said while grace's node was down", "back, from grace"]) {
        assert.equal(await countMessages(page, text), 1, `"${text}" shows exactly once`);
      }
    }
    for (const { pageErrors } of [ada, grace]) assert.deepEqual(pageErrors.map(String), []);
  } catch (error) {
    for (const n of nodes) console.log(n.log().split("\n").filter((l) => !/ INFO .*(connected|listening)/.test(l) || /disconnected/.test(l)).join("\n"));
    for (const p of [globalThis.__ada, globalThis.__grace]) if (p) console.log(JSON.stringify(await transcript(p)));
    throw error;
  } finally {
    try {
      await within(20_000, "closing the browser", browser.close());
    } finally {
      await balancer.stop();
      for (const n of nodes) await n.stop();
      await redis.stop();
    }
  }
});
