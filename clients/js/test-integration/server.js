// The real Switchboard server, run as a child process for integration tests.
//
// The binary is $SWITCHBOARD_BIN (resolved against the current directory) or else
// ../../target/debug/switchboard relative to clients/js: build it first with
// `cargo build -p switchboard`. Also used by the React bindings' tests (clients/react).

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");

export const SERVER_BIN = process.env.SWITCHBOARD_BIN
  ? resolve(process.env.SWITCHBOARD_BIN)
  : resolve(PACKAGE_DIR, "../../target/debug/switchboard");

/** Throws a clear error when the server binary is missing. */
export function requireServerBinary() {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(
      `Switchboard server binary not found at ${SERVER_BIN}. ` +
        "Build it with `cargo build -p switchboard` at the repository root, " +
        "or set SWITCHBOARD_BIN to its path.",
    );
  }
}

// Children still running when this process exits (a failed or interrupted test run) are
// killed, so no server outlives its tests; the directories made for them are removed.
const running = new Set();
const scratch = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});

/** A new empty directory, removed when this process exits. */
export function scratchDir(prefix = "switchboard-test-") {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  scratch.add(dir);
  return dir;
}

/** A TCP port that was free a moment ago, for a server that must restart on the same port. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.unref();
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
}

/**
 * Starts the server on 127.0.0.1:`port` (0: any free port) and resolves once it listens.
 * `args` are extra command-line options, e.g. ["--message-rate", "1"]. `dataDir`: the
 * server's data directory (its documents and history): by default a new empty one, so tests
 * share nothing; pass the previous server's `dataDir` to restart it with what it saved.
 * `config`: the text of a TOML config file (e.g. namespaces with history), passed as --config.
 */
export async function startServer({ port = 0, args = [], dataDir = scratchDir(), config, timeoutMs = 10_000 } = {}) {
  requireServerBinary();
  const files = ["--data-dir", dataDir];
  if (config !== undefined) {
    const file = join(scratchDir("switchboard-config-"), "switchboard.toml");
    writeFileSync(file, config);
    files.push("--config", file);
  }
  // The server reads SWITCHBOARD_* settings from the environment: keep the caller's out.
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("SWITCHBOARD_")));
  const child = spawn(
    SERVER_BIN,
    // --health-details: the tests count connections and rooms on /healthz.
    ["--listen", `127.0.0.1:${port}`, "--log-format", "text", "--log", "info", "--health-details", ...files, ...args],
    { env, stdio: ["ignore", "ignore", "pipe"] },
  );
  running.add(child);
  const server = new ServerProcess(child);
  server.dataDir = dataDir;
  server.config = config;
  try {
    server.port = await server.listening(timeoutMs);
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  return server;
}

/**
 * A server on a port of its own, stopped when the test ends (whichever process runs then);
 * restart() starts it again on the same port with the same data directory and config.
 */
export async function restartableServer(t, options = {}) {
  const port = await freePort();
  const holder = { server: await startServer({ ...options, port }), port };
  holder.restart = async () => {
    const { dataDir, config } = holder.server;
    holder.server = await startServer({ ...options, port, dataDir, config });
    return holder.server;
  };
  t.after(() => holder.server.stop());
  return holder;
}

export class ServerProcess {
  #child;
  #log = [];
  #partial = "";
  #exit;
  /** @type {number} */
  port = 0;
  /** The data directory it was started with. @type {string} */
  dataDir = "";
  /** The config file's text it was started with, if any. @type {string | undefined} */
  config;

  constructor(child) {
    this.#child = child;
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      const lines = (this.#partial + chunk).split("\n");
      this.#partial = lines.pop();
      this.#log.push(...lines);
      if (this.#log.length > 200) this.#log.splice(0, this.#log.length - 200);
    });
    this.#exit = new Promise((resolveExit) => {
      child.on("exit", (code, signal) => {
        running.delete(child);
        resolveExit({ code, signal });
      });
      child.on("error", (error) => {
        running.delete(child);
        resolveExit({ code: null, signal: null, error });
      });
    });
  }

  get pid() {
    return this.#child.pid;
  }

  /** ws://127.0.0.1:PORT/ws */
  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /** The last lines the server logged, for failure messages. */
  get log() {
    return [...this.#log, this.#partial].join("\n");
  }

  /** Resolves with the port from the `listening addr=...` log line. */
  listening(timeoutMs) {
    return new Promise((resolvePort, reject) => {
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`switchboard did not report listening within ${timeoutMs} ms:\n${this.log}`));
      }, timeoutMs);
      const check = () => {
        const match = /listening addr=127\.0\.0\.1:(\d+)/.exec(this.log);
        if (!match) return;
        finish();
        resolvePort(Number(match[1]));
      };
      const finish = () => {
        clearTimeout(timer);
        this.#child.stderr.off("data", onData);
      };
      // After the line splitter (registered first) has seen the chunk.
      const onData = () => check();
      this.#child.stderr.on("data", onData);
      this.#exit.then(({ code, signal, error }) => {
        finish();
        reject(new Error(`switchboard exited before listening (code ${code}, signal ${signal}) ${error ?? ""}:\n${this.log}`));
      });
      check();
    });
  }

  /** Sends `signal` (e.g. SIGSTOP, SIGCONT) to the server process. */
  signal(signal) {
    this.#child.kill(signal);
  }

  /** Sends `signal` and resolves with { code, signal } once the process has exited. */
  async stop({ signal = "SIGTERM", timeoutMs = 10_000 } = {}) {
    if (this.#child.exitCode === null && this.#child.signalCode === null) {
      this.#child.kill(signal);
      this.#child.kill("SIGCONT"); // in case it was stopped
    }
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => {
        this.#child.kill("SIGKILL");
        reject(new Error(`switchboard did not exit within ${timeoutMs} ms of ${signal}:\n${this.log}`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([this.#exit, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** GET /healthz: { status, version, broker, connections, rooms }. */
  health(timeoutMs = 5_000) {
    return new Promise((resolveHealth, reject) => {
      const req = request(
        { host: "127.0.0.1", port: this.port, path: "/healthz", method: "GET", timeout: timeoutMs },
        (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (chunk) => (body += chunk));
          res.on("end", () => {
            try {
              resolveHealth(JSON.parse(body));
            } catch (error) {
              reject(new Error(`/healthz answered ${res.statusCode} with ${body}: ${error.message}`));
            }
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error(`/healthz: no answer within ${timeoutMs} ms`)));
      req.on("error", reject);
      req.end();
    });
  }
}
