#!/usr/bin/env bash
# RUSTC_WRAPPER for fuzz builds (scripts/fuzz.sh): compiles the crates under test with
# LLVM's SanitizerCoverage (stable rustc flags) so the engine gets edge coverage; every
# other crate is compiled as usual. The counters register with the fuzz binary's
# `__sanitizer_cov_8bit_counters_init` (crates/switchboard-fuzz/src/cov.rs).
#
# Only artifacts built for an explicit `--target` are instrumented: scripts/fuzz.sh passes
# one, so build scripts and proc macros (built for the host, without `--target`, and
# linked without the fuzz binary's counter registry) stay plain.
rustc="$1"
shift
crate=
for_target=0
prev=
for arg in "$@"; do
    case "$prev" in
        --crate-name) crate=$arg ;;
        --target) for_target=1 ;;
    esac
    prev=$arg
done
case "$crate" in
    switchboard | switchboard_ws | yrs | serde_json | httparse | base64) ;;
    *) for_target=0 ;;
esac
if [ "$for_target" = 1 ]; then
    exec "$rustc" "$@" -Cpasses=sancov-module \
        -Cllvm-args=-sanitizer-coverage-level=3 \
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
fi
exec "$rustc" "$@"
