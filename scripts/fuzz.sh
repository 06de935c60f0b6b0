#!/usr/bin/env bash
# Fuzzes Switchboard's parsers with the harnesses of crates/switchboard-fuzz
# (docs/fuzzing.md): the WebSocket decoder, the handshake, protocol v1 envelopes and the
# y-websocket wire, coverage-guided, on stable Rust.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]    (default: 300 s, every target)
#
# FUZZ_JOBS targets run at once (default 2); FUZZ_SEED makes a run reproducible.
# Inputs that reach new coverage are kept under target/fuzz/<target>/corpus (and reused by
# the next run), failures under target/fuzz/<target>/crashes; a failure is printed in hex
# and the script exits 1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-300}
[ $# -gt 0 ] && shift

# A build of its own: the crates under test get SanitizerCoverage (see rustc-sancov.sh),
# with debug assertions and overflow checks on, optimised (-O1).
export CARGO_TARGET_DIR="$PWD/target/fuzz/build"
export RUSTC_WRAPPER="$PWD/crates/switchboard-fuzz/rustc-sancov.sh"
export CARGO_PROFILE_RELEASE_DEBUG=false
# -O1, as libFuzzer advises: nearly as fast to run, much faster to build (CI builds it clean).
export CARGO_PROFILE_RELEASE_OPT_LEVEL=1
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
# An explicit --target keeps build scripts and proc macros out of the instrumentation.
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --locked -p switchboard-fuzz --target "$host"

exec "$CARGO_TARGET_DIR/$host/release/switchboard-fuzz" run --seconds "$seconds" \
    --jobs "${FUZZ_JOBS:-2}" ${FUZZ_SEED:+--seed "$FUZZ_SEED"} "$@"
