// A room's recent messages: someone who arrives sees what was said before (the room's history,
// which scripts/demo.toml keeps for the chat's rooms), then the conversation goes on live,
// each message once; a page opened after a server restart sees them too (history on disk).

import assert from "node:assert/strict";
import { test } from "node:test";
import { launchBrowser, openChat, say, transcript, waitForMessages, within } from "../lib/browser.js";
import { startServer, startServerRetrying } from "../lib/server.js";

const messagesOf = async (page) => (await transcript(page)).filter((m) => m.kind === "message");

test("a page that joins late sees the earlier messages, then live ones, each once", { timeout: 120_000 }, async () => {
  const browser = await launchBrowser();
  let server = await startServer();
  try {
    const ada = await openChat(browser, server.origin, { name: "ada", room: "e2e-history" });
    const earlier = ["first, from ada", "second, from ada", "third, from ada"];
    for (const text of earlier) await say(ada.page, text);
    await waitForMessages(ada.page, earlier);
    await ada.page.waitForFunction(() => document.querySelectorAll("#messages .msg.pending").length === 0);

    const grace = await openChat(browser, server.origin, { name: "grace", room: "e2e-history" });
    await waitForMessages(grace.page, earlier);
    await say(ada.page, "live, from ada");
    await say(grace.page, "live, from grace");
    await waitForMessages(grace.page, ["live, from ada", "live, from grace"]);
    await waitForMessages(ada.page, ["live, from grace"]);
    await grace.page.waitForTimeout(500); // a duplicate would show up by now
    const shown = await messagesOf(grace.page);
    assert.deepEqual(
      shown.map((m) => [m.name, m.text]),
      [...earlier.map((text) => ["ada", text]), ["ada", "live, from ada"], ["grace", "live, from grace"]],
    );
    // The earlier messages come before the page's own "You joined" line.
    const lines = (await transcript(grace.page)).map((m) => m.text);
    assert.ok(lines.indexOf(earlier[2]) < lines.indexOf("You joined #e2e-history."), JSON.stringify(lines));

    // After a restart, a new page still sees all of it.
    const { port, dataDir } = server;
    assert.equal((await server.stop()).code, 0);
    server = await startServerRetrying({ port, dataDir });
    const cy = await openChat(browser, server.origin, { name: "cy", room: "e2e-history" });
    const all = [...earlier, "live, from ada", "live, from grace"];
    await waitForMessages(cy.page, all);
    assert.deepEqual((await messagesOf(cy.page)).map((m) => m.text), all);
    for (const { pageErrors } of [ada, grace, cy]) assert.deepEqual(pageErrors.map(String), []);
  } finally {
    try {
      await within(20_000, "closing the browser", browser.close());
    } finally {
      await server.stop();
    }
  }
});
