// The example app backend (examples/backend) in front of a Switchboard server that checks
// tokens, for the auth tests: the server (token secret, API key, the backend's origin
// allowed), the backend on its own port, and logging a person in through its form.
//
// examples/backend needs its packages: `npm ci` in examples/backend first.

import { existsSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { WAIT_MS } from "./browser.js";
import { startServer } from "./server.js";

const BACKEND_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../examples/backend");

export const TOKEN_SECRET = "e2e-token-secret-of-at-least-32-bytes!!";
export const API_KEY = "e2e-api-key-0123456789";

/** A TCP port that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Starts Switchboard (checking HS256 tokens, with the API key, allowing the backend's origin)
 * and the example backend. `backend` options go to createApp (tokenTtlS, staff, onToken...);
 * `args` to the server. Returns { server, backend: { origin, tokens, stop() } } where `tokens`
 * lists every token the backend minted: { kind, claims, at }.
 */
export async function startAuthSetup({ backend: options = {}, args = [] } = {}) {
  if (!existsSync(path.join(BACKEND_DIR, "node_modules"))) {
    throw new Error(`examples/backend has no node_modules: run \`npm ci\` in ${BACKEND_DIR}`);
  }
  const { createApp } = await import(pathToFileURL(path.join(BACKEND_DIR, "app.js")).href);
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  const server = await startServer({
    args: ["--token-hmac-secret", TOKEN_SECRET, "--api-keys", API_KEY, "--allowed-origins", origin, ...args],
  });
  const tokens = [];
  const app = createApp({
    switchboardUrl: server.origin,
    tokenSecret: TOKEN_SECRET,
    apiKey: API_KEY,
    onToken: (kind, claims) => tokens.push({ kind, claims, at: Date.now() }),
    ...options,
  });
  let http;
  try {
    http = await new Promise((resolve, reject) => {
      const listening = app.listen(port, "127.0.0.1", () => resolve(listening));
      listening.once("error", reject);
    });
  } catch (error) {
    await server.stop();
    throw error;
  }
  const backend = {
    origin,
    tokens,
    stop: () =>
      new Promise((resolve) => {
        http.closeAllConnections?.();
        http.close(() => resolve());
      }),
  };
  return { server, backend };
}

/**
 * Logs `name` in through the backend's form in a fresh browser context, starting at `next`
 * (e.g. "/chat/?room=lobby": the backend sends the visitor to the login form and back).
 * Returns { page, context, pageErrors }.
 */
export async function logIn(browser, origin, name, next = "/chat/?room=lobby") {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "en-GB", timezoneId: "UTC" });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(error));
  // Pages of the backend send a visitor without a session to the login form, with ?next=.
  const start = new URL(next === "/" ? "/?next=%2F" : next, origin);
  await page.goto(start.href);
  await page.waitForSelector("form#login");
  await page.locator("#name").fill(name);
  await Promise.all([page.waitForURL((url) => !url.searchParams.has("next")), page.locator("form#login button").click()]);
  return { page, context, pageErrors };
}
