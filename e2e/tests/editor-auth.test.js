// Access in real Chromium: the collaborative editor (web/editor) in auth mode behind the
// example backend (examples/backend) and a Switchboard server that checks tokens. Two people
// log in through the backend, open the same document and see each other's text; their
// connections carry the backend's tokens (4 s here), and a reconnection after the first token
// expired uses a fresh one. A socket to /yjs/… without a token is refused at the handshake.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { TOKEN_SECRET, logIn, startAuthSetup } from "../lib/backend.js";
import { launchBrowser, within } from "../lib/browser.js";
import { waitForText, waitSynced } from "../lib/editor.js";

const TTL_S = 4; // editor tokens: refreshed by the page after ~3 s

/** The HTTP status of a WebSocket handshake to `url` (101 when accepted). */
function handshakeStatus(url) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      headers: {
        connection: "Upgrade",
        upgrade: "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      },
    });
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      resolve(res.statusCode);
    });
    req.on("response", (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on("error", reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`no answer from ${url}`)));
    req.end();
  });
}

/** An HS256 JWT signed with the server's secret. */
function mint(claims) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ exp: Math.floor(Date.now() / 1000) + 60, ...claims })}`;
  return `${body}.${createHmac("sha256", TOKEN_SECRET).update(body).digest("base64url")}`;
}

describe("auth: the editor behind the example backend", { timeout: 120_000 }, () => {
  let server;
  let backend;
  let browser;
  const sessions = [];
  const dataDir = mkdtempSync(path.join(tmpdir(), "switchboard-editor-auth-e2e-"));

  before(async () => {
    ({ server, backend } = await startAuthSetup({
      backend: { tokenTtlS: TTL_S },
      args: ["--token-expiry-grace", "1s", "--data-dir", dataDir],
    }));
    browser = await launchBrowser();
  });

  after(async () => {
    try {
      if (browser) await within(20_000, "closing the browser", browser.close());
    } finally {
      await backend?.stop();
      await server?.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
    for (const { pageErrors } of sessions) assert.deepEqual(pageErrors.map(String), [], "uncaught errors in a page");
  });

  async function person(name) {
    const session = await logIn(browser, backend.origin, name, "/editor/?doc=plans");
    sessions.push(session);
    await waitSynced(session.page);
    return session;
  }

  test("two people log in and edit the same document with tokens; reconnecting after expiry works", { timeout: 60_000 }, async () => {
    const ada = await person("Ada");
    assert.equal(new URL(ada.page.url()).origin, backend.origin, "the editor is served by the backend's origin");
    assert.equal(await ada.page.locator("#me-name").textContent(), "Ada", "the name is the session's");
    const bob = await person("Bob");

    await ada.page.locator("#doc .ProseMirror").click();
    await ada.page.keyboard.type("Hello from Ada.");
    await waitForText(bob.page, ["Hello from Ada."]);
    await bob.page.locator("#doc .ProseMirror").click();
    await bob.page.keyboard.press("Control+End");
    await bob.page.keyboard.type(" Bob was here.");
    await waitForText(ada.page, ["Hello from Ada.", "Bob was here."]);

    // The editor's tokens: documents and the index, read and write, for each person.
    const adaToken = backend.tokens.find((t) => t.kind === "editor" && t.claims.sub === "ada");
    assert.deepEqual(adaToken.claims.rooms, { "doc:*": ["join", "publish"], "editor:index": ["join", "publish"] });
    const url = await ada.page.evaluate(() => window.__editor.session.provider.url);
    assert.match(url, /\/yjs\/doc:plans\?token=/, "the document connection carries a token");

    // Past the first token's expiry (and the server's grace), a dropped connection comes back
    // with a fresh token and edits keep flowing.
    const firstToken = await ada.page.evaluate(() => window.__editor.auth.token);
    await new Promise((resolve) => setTimeout(resolve, (TTL_S + 2) * 1000));
    const opened = [];
    ada.page.on("websocket", (ws) => opened.push(ws.url()));
    await ada.page.evaluate(() => window.__editor.session.provider.ws?.close());
    const reopened = () => opened.filter((u) => u.includes("/yjs/doc:plans?"));
    for (const deadline = Date.now() + 10_000; reopened().length === 0; ) {
      assert.ok(Date.now() < deadline, `the document reconnects: ${opened}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await waitSynced(ada.page); // the new socket exists, so this is its sync
    const current = await ada.page.evaluate(() => window.__editor.auth.token);
    assert.notEqual(current, firstToken, "the token was refreshed");
    assert.equal(new URL(reopened().at(-1)).searchParams.get("token"), current, "the reconnection used the fresh token");
    await ada.page.locator("#doc .ProseMirror").click();
    await ada.page.keyboard.press("Control+End");
    await ada.page.keyboard.type(" Still here.");
    await waitForText(bob.page, ["Still here."]);
    assert.ok(backend.tokens.filter((t) => t.kind === "editor" && t.claims.sub === "ada").length >= 2, "ada's token was refreshed");
  });

  test("without a token, or without the document's permission, the server refuses the socket", async () => {
    const yjs = `${server.origin}/yjs/doc:plans`;
    assert.equal(await handshakeStatus(yjs), 401, "no token: 401");
    const chatOnly = mint({ sub: "eve", rooms: { "chat:*": ["join", "publish"] } });
    assert.equal(await handshakeStatus(`${yjs}?token=${chatOnly}`), 403, "a token without the document: 403");
    const reader = mint({ sub: "eve", rooms: { "doc:*": ["join"] } });
    assert.equal(await handshakeStatus(`${yjs}?token=${reader}`), 101, "a token that may read: accepted");
  });
});
