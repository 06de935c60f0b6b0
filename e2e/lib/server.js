// Starts the real Switchboard binary for a test and stops it (by its PID, never by name).
//
// The binary comes from $SWITCHBOARD_BIN, else ../target/debug/switchboard relative to e2e/
// (build it with `cargo build -p switchboard`: it embeds web/ at build time, so rebuild it
// after changing the chat app).

import { spawn } from "node:child_process";
import { accessSync, constants, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import path from "node:path";

const E2E_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
/** The config scripts/start.sh runs the server with: the apps' namespaces, the chat's history. */
export const DEMO_CONFIG = path.resolve(E2E_DIR, "../scripts/demo.toml");
const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 15_000;

/** Every server still running, so a crashing test process does not leave one behind. */
const running = new Set();
const scratch = new Set(); // data directories made here, removed at exit
process.on("exit", () => {
  for (const child of running) {
    try {
      process.kill(child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});

export function serverBinary() {
  const bin = process.env.SWITCHBOARD_BIN
    ? path.resolve(process.env.SWITCHBOARD_BIN)
    : path.resolve(E2E_DIR, "../target/debug/switchboard");
  try {
    accessSync(bin, constants.X_OK);
  } catch {
    throw new Error(
      `Switchboard server binary not found or not executable: ${bin}\n` +
        "Build it first with `cargo build -p switchboard` (from the repository root), " +
        "or point SWITCHBOARD_BIN at a built binary.",
    );
  }
  return bin;
}

/**
 * Starts the server on `port` (0: an ephemeral port) with scripts/demo.toml (what
 * scripts/start.sh runs), and resolves once it logs `listening addr=HOST:PORT`, with
 * { port, origin, pid, dataDir, stop(), log() }. `args` are more command-line options.
 * `dataDir`: the data directory (documents, history): a new empty one unless given here or
 * as `--data-dir` in `args`; pass the previous server's to restart it with what it kept.
 */
export async function startServer({ port = 0, args = [], dataDir } = {}) {
  const bin = serverBinary();
  const given = args.indexOf("--data-dir");
  if (given !== -1) dataDir = args[given + 1];
  const extra = ["--config", DEMO_CONFIG];
  if (dataDir === undefined) {
    dataDir = mkdtempSync(path.join(tmpdir(), "switchboard-e2e-"));
    scratch.add(dataDir);
  }
  if (given === -1) extra.push("--data-dir", dataDir);
  const child = spawn(bin, ["--listen", `127.0.0.1:${port}`, "--shutdown-timeout", "3s", ...extra, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, SWITCHBOARD_LOG: "info", SWITCHBOARD_LOG_FORMAT: "text", NO_COLOR: "1" },
  });
  running.add(child);
  let output = "";
  const exited = new Promise((resolve) => {
    child.once("exit", (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });

  const listening = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`server did not log "listening addr=" within ${START_TIMEOUT_MS} ms; output:\n${output}`));
    }, START_TIMEOUT_MS);
    const onData = (chunk) => {
      // eslint-disable-next-line no-control-regex
      output += chunk.toString().replace(/\x1b\[[0-9;]*m/g, "");
      const match = output.match(/listening addr=(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:]+\]):(\d+)/);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${bin}: ${error.message}`));
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`server exited (code ${code}, signal ${signal}) before listening; output:\n${output}`));
    });
  });

  let actualPort;
  try {
    actualPort = await listening;
  } catch (error) {
    killNow(child);
    throw error;
  }

  return {
    port: actualPort,
    origin: `http://127.0.0.1:${actualPort}`,
    pid: child.pid,
    dataDir,
    log: () => output,
    /** SIGKILL: no shutdown of any kind (a crash, a lost machine). */
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      killNow(child);
      return exited;
    },
    /** SIGTERM (the server's graceful shutdown), SIGKILL if it is not gone in time. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      process.kill(child.pid, "SIGTERM");
      let timer;
      const timeout = new Promise((resolve) => {
        timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS);
      });
      const result = await Promise.race([exited, timeout]);
      clearTimeout(timer);
      if (result) return result;
      killNow(child);
      await exited;
      throw new Error(`server (pid ${child.pid}) ignored SIGTERM for ${STOP_TIMEOUT_MS} ms; killed`);
    },
  };
}

function killNow(child) {
  try {
    process.kill(child.pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/**
 * startServer(options), retried for a few seconds while the port is still held (a restart on
 * the same port right after the previous server exited).
 */
export async function startServerRetrying(options, { attempts = 10, delayMs = 300 } = {}) {
  let lastError;
  for (let attempt = 0; attempt < attempts; attempt++) {
    try {
      return await startServer(options);
    } catch (error) {
      lastError = error;
      if (!/in use|cannot listen/i.test(error.message)) throw error;
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
  throw lastError;
}
