#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, the Rust unit and integration tests
# (real server binary on real ports), the JS SDK tests, the chat app in a real browser
# (Debian's chromium driven by playwright-core), and the Autobahn conformance run.
#
#   scripts/test.sh
#
# Set SKIP_AUTOBAHN=1 to leave out the Autobahn run (a few minutes) while iterating.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

if [ -f clients/js/package.json ]; then
    step "JS SDK: npm ci, unit tests, type check"
    (cd clients/js && npm ci --no-audit --no-fund && npm test && npm run typecheck)
fi

step "Chat app in headless Chromium (e2e)"
cargo build -p switchboard --locked
(cd e2e && npm ci --no-audit --no-fund && npm test)

if [ "${SKIP_AUTOBAHN:-0}" != 1 ]; then
    step "Autobahn|Testsuite, cases 1-10, against /echo"
    AUTOBAHN_STRICT=1 scripts/autobahn.sh
fi

step "all tests passed"
