#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, the Rust unit and integration tests
# (real server binary on real ports), the JS SDK and React tests, the Yjs interop test,
# the chat and editor apps in a real browser (Debian's chromium driven by playwright-core),
# and the Autobahn conformance run.
#
#   scripts/test.sh
#
# Set SKIP_AUTOBAHN=1 to leave out the Autobahn run (a few minutes) while iterating.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> [%ss] %s\n' "$SECONDS" "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "Editor packages: npm ci in web/editor (the binary embeds them)"
(cd web/editor && npm ci --no-audit --no-fund)

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "JS SDK: npm ci, unit tests, type check"
(cd clients/js && npm ci --no-audit --no-fund && npm test && npm run typecheck)

# The suites below start the debug server binary themselves.
cargo build -p switchboard --locked

step "Fuzzing: every harness, 30 s each, 2 at a time (docs/fuzzing.md; a failure prints its input in hex)"
scripts/fuzz.sh 30 ws_decoder ws_handshake protocol yjs_wire

step "Benchmark smoke run: every scenario, tiny, against Switchboard (correctness only)"
bench/smoke.sh

step "JS SDK integration tests against the server binary"
(cd clients/js && npm run test:integration)

step "Yjs interop: official yjs + y-websocket against the server binary"
(cd tests-node/yjs && npm ci --no-audit --no-fund && npm test)

step "React bindings: npm ci, tests against the server binary, type check"
(cd clients/react && npm ci --no-audit --no-fund && npm test && npm run typecheck)

step "Chat and editor apps in headless Chromium (e2e; the auth test runs the example backend)"
(cd examples/backend && npm ci --no-audit --no-fund)
(cd e2e && npm ci --no-audit --no-fund && npm test)

if [ "${SKIP_AUTOBAHN:-0}" != 1 ]; then
    step "Autobahn|Testsuite, cases 1-10, against /echo"
    AUTOBAHN_STRICT=1 scripts/autobahn.sh

    # The codec is the same over TLS: what TLS changes is how frames are cut into reads and
    # writes, which framing, fragmentation, UTF-8, close and large-message cases exercise
    # (the whole suite over wss: `AUTOBAHN_TLS=1 scripts/autobahn.sh`).
    step "Autobahn|Testsuite over wss:// (the server's own TLS): framing, fragments, UTF-8, close, large messages, deflate"
    SWITCHBOARD_BIN=${CARGO_TARGET_DIR:-target}/release/switchboard AUTOBAHN_TLS=1 AUTOBAHN_STRICT=1 \
        AUTOBAHN_CASES='1.*,2.*,3.*,4.*,5.*,6.1.*,6.2.*,6.4.*,7.*,9.1.*,9.5.*,10.*,12.1.1,12.2.1,13.1.1,13.2.1' scripts/autobahn.sh
fi

step "all tests passed"
