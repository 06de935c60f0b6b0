import { defineConfig } from "vitest/config";

// Tests render real React (development build: StrictMode double-mounts effects) in happy-dom,
// against the real Switchboard server binary (see ../js/test-integration/server.js).
export default defineConfig({
  test: {
    environment: "happy-dom",
    include: ["test/**/*.test.js"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Each file starts its own server; its tests count that server's connections, so they
    // run one after the other within the file.
    sequence: { concurrent: false },
  },
});
