// A cluster for the tests, as scripts/cluster.sh runs it: a redis-server, Switchboard nodes
// sharing it, and HAProxy in front (its configuration from scripts/haproxy-config.sh).
// Every process is started here and stopped by its PID.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "./backend.js";
import { startServer } from "./server.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const running = new Set();
process.on("exit", () => {
  for (const child of running) {
    try {
      process.kill(child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
});

/** Resolves once something accepts TCP connections on `port`, or rejects after `ms`. */
async function listening(port, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const up = await new Promise((resolve) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (up) return;
    if (Date.now() > deadline) throw new Error(`${what} is not listening on ${port} after ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function started(command, args, what) {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  const exited = new Promise((resolve) => child.once("exit", () => (running.delete(child), resolve())));
  child.once("error", (error) => {
    output += `cannot start ${command}: ${error.message} (apt-get install redis-server haproxy)`;
  });
  return {
    child,
    log: () => output,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, "SIGTERM");
      await exited;
    },
    what,
  };
}

/** A redis-server of the test's own on a free port, keeping nothing on disk. */
export async function startRedis() {
  const port = await freePort();
  const redis = started("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], "redis-server");
  await listening(port, 10_000, "redis-server").catch((error) => {
    throw new Error(`${error.message}\n${redis.log()}`);
  });
  return { ...redis, url: `redis://127.0.0.1:${port}/` };
}

/** `count` Switchboard nodes sharing `redis`, with `args`. */
export async function startNodes(redis, count, args = []) {
  const nodes = [];
  for (let i = 0; i < count; i++) nodes.push(await startServer({ args: ["--redis-url", redis.url, ...args] }));
  return nodes;
}

/** HAProxy balancing over `nodes` on a free port; `origin` is the URL pages open. */
export async function startBalancer(nodes) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-haproxy-"));
  const config = execFileSync(path.join(ROOT, "scripts/haproxy-config.sh"), [
    `127.0.0.1:${port}`,
    ...nodes.map((n) => `127.0.0.1:${n.port}`),
  ]);
  const file = path.join(dir, "haproxy.cfg");
  writeFileSync(file, config);
  const haproxy = started("haproxy", ["-db", "-f", file], "haproxy");
  await listening(port, 10_000, "haproxy").catch((error) => {
    throw new Error(`${error.message}\n${haproxy.log()}`);
  });
  return {
    ...haproxy,
    port,
    origin: `http://127.0.0.1:${port}`,
    async stop() {
      await haproxy.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
