// One command for the whole setup: the Switchboard server (the repository's debug build,
// or $SWITCHBOARD_BIN) with a token secret, an API key and this backend's origin allowed,
// then the backend. Secrets are made fresh for each run.
//
//   npm run demo        → open http://127.0.0.1:3000/

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const bin = process.env.SWITCHBOARD_BIN ?? resolve(here, "../../target/debug/switchboard");
if (!existsSync(bin)) {
  console.error(`no Switchboard binary at ${bin}: run \`cargo build -p switchboard\` at the repository root first`);
  process.exit(1);
}
const port = Number(process.env.PORT ?? 3000);
const switchboardPort = Number(process.env.SWITCHBOARD_PORT ?? 8080);
const secrets = {
  TOKEN_SECRET: randomBytes(32).toString("hex"),
  SWITCHBOARD_API_KEY: randomBytes(24).toString("hex"),
};
const backendOrigin = `http://127.0.0.1:${port}`;
const server = spawn(bin, ["--listen", `127.0.0.1:${switchboardPort}`, "--allowed-origins", backendOrigin], {
  stdio: "inherit",
  env: {
    ...process.env,
    SWITCHBOARD_TOKEN_HMAC_SECRET: secrets.TOKEN_SECRET,
    SWITCHBOARD_API_KEYS: secrets.SWITCHBOARD_API_KEY,
  },
});
const backend = spawn(process.execPath, [resolve(here, "server.js")], {
  stdio: "inherit",
  env: { ...process.env, ...secrets, PORT: String(port), SWITCHBOARD_URL: `http://127.0.0.1:${switchboardPort}` },
});
const stop = () => {
  server.kill("SIGTERM");
  backend.kill("SIGTERM");
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
server.on("exit", (code) => {
  if (code) console.error(`switchboard exited with ${code}`);
  backend.kill("SIGTERM");
});
backend.on("exit", () => server.kill("SIGTERM"));
console.log(`open ${backendOrigin}/ (staff: ${process.env.STAFF ?? "grace"})`);
