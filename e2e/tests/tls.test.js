// The chat app over HTTPS and WSS: the server itself terminates TLS (`tls_cert`, `tls_key`)
// with a certificate made here with the openssl CLI. Chromium is told to accept it
// (`--ignore-certificate-errors`: the test CA is not in its trust store).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { launchBrowser, openChat, say, waitForMembers, waitForMessages, within } from "../lib/browser.js";
import { startServer } from "../lib/server.js";

describe("chat over TLS", { timeout: 120_000 }, () => {
  let server;
  let browser;
  let dir;
  const opened = [];

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "switchboard-e2e-tls-"));
    execFileSync(
      "openssl",
      [
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=localhost",
        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
      ],
      { cwd: dir, stdio: "ignore" },
    );
    server = await startServer({
      args: ["--tls-cert", path.join(dir, "cert.pem"), "--tls-key", path.join(dir, "key.pem")],
    });
    browser = await launchBrowser({ args: ["--ignore-certificate-errors"] });
  });

  after(async () => {
    try {
      if (browser) await within(20_000, "closing the browser", browser.close());
    } finally {
      if (server) await server.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
    for (const { pageErrors } of opened) assert.deepEqual(pageErrors.map(String), [], "uncaught errors in a page");
  });

  test("two people chat over https and wss", { timeout: 60_000 }, async () => {
    const origin = `https://localhost:${server.port}`;
    const ada = await openChat(browser, origin, { name: "ada", room: "e2e-tls" });
    opened.push(ada);
    const grace = await openChat(browser, origin, { name: "grace", room: "e2e-tls" });
    opened.push(grace);
    assert.equal(await ada.page.evaluate(() => location.protocol), "https:");

    await waitForMembers(ada.page, ["ada", "grace"]);
    await waitForMembers(grace.page, ["ada", "grace"]);
    await say(ada.page, "Hello over wss");
    await waitForMessages(grace.page, ["Hello over wss"]);
    await say(grace.page, "Encrypted both ways");
    await waitForMessages(ada.page, ["Hello over wss", "Encrypted both ways"]);

    // Both WebSockets were TLS connections of the server's own.
    const connected = server.log().split("\n").filter((l) => l.includes(" connected") && l.includes("tls=true"));
    assert.ok(connected.length >= 2, `TLS connections in the log:\n${server.log()}`);
  });
});
