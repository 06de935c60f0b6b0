// Runs the example backend from environment variables (see README.md):
//
//   SWITCHBOARD_URL=http://127.0.0.1:8080 TOKEN_SECRET=… SWITCHBOARD_API_KEY=… node server.js

import { createApp } from "./app.js";

const env = process.env;
const port = Number(env.PORT ?? 3000);
const host = env.HOST ?? "127.0.0.1";
const app = createApp({
  switchboardUrl: env.SWITCHBOARD_URL ?? "http://127.0.0.1:8080",
  publicWsUrl: env.SWITCHBOARD_WS_URL,
  tokenSecret: env.TOKEN_SECRET,
  apiKey: env.SWITCHBOARD_API_KEY,
  tokenTtlS: Number(env.TOKEN_TTL ?? 60),
  staff: (env.STAFF ?? "grace").split(",").map((s) => s.trim()).filter(Boolean),
  sessionSecret: env.SESSION_SECRET,
  secureCookies: env.SECURE_COOKIES === "1",
});
const server = app.listen(port, host, () => {
  const { port: actual } = server.address();
  console.log(`example backend on http://${host}:${actual} (Switchboard at ${env.SWITCHBOARD_URL ?? "http://127.0.0.1:8080"})`);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => server.close(() => process.exit(0)));
