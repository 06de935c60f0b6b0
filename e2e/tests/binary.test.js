// Binary messages in Chromium: a page publishes bytes through the SDK (served by the server at
// /sdk/) as a Uint8Array and as a Blob, and another page receives identical bytes as
// Uint8Array, live and from history (docs/protocol.md, "Binary messages").

import assert from "node:assert/strict";
import { test } from "node:test";
import { launchBrowser, within } from "../lib/browser.js";
import { startServer } from "../lib/server.js";

/** A page of the server's origin with the SDK loaded and a client joined to `room`. */
async function sdkPage(browser, origin, room) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(error));
  // Any page of the origin: /ws allows the server's own origin.
  await page.goto(`${origin}/sdk/switchboard.js`);
  await page.evaluate(async (name) => {
    const { Switchboard } = await import("/sdk/switchboard.js");
    const sb = new Switchboard(`ws://${location.host}/ws`);
    const room = sb.join(name);
    window.received = [];
    room.on("message", (m) =>
      window.received.push({
        offset: m.offset,
        binary: m.data instanceof Uint8Array,
        bytes: m.data instanceof Uint8Array ? Array.from(m.data) : m.data,
        conn: m.from.conn,
      }),
    );
    await room.ready;
    window.sb = sb;
    window.room = room;
  }, room);
  return { page, pageErrors };
}

test("a page publishes a Uint8Array and a Blob; another page receives identical bytes", { timeout: 120_000 }, async () => {
  const browser = await launchBrowser();
  const server = await startServer();
  try {
    const room = "chat:e2e-binary";
    const ada = await sdkPage(browser, server.origin, room);
    const grace = await sdkPage(browser, server.origin, room);
    // Every byte value; the Blob mixes bytes and text.
    const bytes = Array.from({ length: 256 * 4 }, (_, i) => (i * 7 + (i >> 8)) & 0xff);
    const offsets = await ada.page.evaluate(async (values) => {
      const data = Uint8Array.from(values);
      const a = await window.room.publish(data);
      const b = await window.room.publish(new Blob([data.subarray(0, 16), "and some text"], { type: "application/octet-stream" }));
      const c = await window.room.publish({ text: "json" });
      return [a.offset, b.offset, c.offset];
    }, bytes);
    assert.deepEqual(offsets, [1, 2, 3]);
    const want = [
      { offset: 1, binary: true, bytes },
      { offset: 2, binary: true, bytes: [...bytes.slice(0, 16), ...Buffer.from("and some text")] },
      { offset: 3, binary: false, bytes: { text: "json" } },
    ];
    await grace.page.waitForFunction(() => window.received.length === 3, null, { timeout: 15_000 });
    const conn = await ada.page.evaluate(() => window.sb.conn);
    const got = await grace.page.evaluate(() => window.received);
    assert.deepEqual(got, want.map((m) => ({ ...m, conn })));
    // History gives the same bytes.
    const history = await grace.page.evaluate(async () => {
      const page = await window.room.history();
      return page.messages.map((m) => ({
        offset: m.offset,
        binary: m.data instanceof Uint8Array,
        bytes: m.data instanceof Uint8Array ? Array.from(m.data) : m.data,
        conn: m.from.conn,
      }));
    });
    assert.deepEqual(history, want.map((m) => ({ ...m, conn })));
    for (const { pageErrors } of [ada, grace]) assert.deepEqual(pageErrors.map(String), []);
  } finally {
    try {
      await within(20_000, "closing the browser", browser.close());
    } finally {
      await server.stop();
    }
  }
});
