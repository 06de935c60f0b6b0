#!/usr/bin/env bash
# Switchboard built with each global allocator, side by side: memory per idle connection,
# memory after load (what is given back once every client has closed), fan-out at fixed
# rates and a saturation ladder. Prints a Markdown summary (bench/alloc_report.py).
#
#   bench/alloc.sh                                   # every allocator, RUNS=3, interleaved
#   ALLOCS="jemalloc system" RUNS=1 bench/alloc.sh   # a subset
#   QUICK=1 bench/alloc.sh                           # short steps: to try the script
#   SKIP_BUILD=1 bench/alloc.sh                      # reuse target/alloc/bin/switchboard-*
#
# Allocators (crates/switchboard features): jemalloc (the default), mimalloc, system
# (glibc malloc: --no-default-features), system-trim (glibc + the malloc-trim feature),
# system-arena2 (glibc with MALLOC_ARENA_MAX=2). Binaries are built into target/alloc, so
# target/release is left alone. Each scenario runs on a freshly started server pinned to
# CPU 0, the load generator to CPU 1; only servers started here are stopped (by PID).
# Raw results: target/bench/alloc-<timestamp>/results.jsonl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

ALLOCS=${ALLOCS:-"jemalloc mimalloc system system-trim"}
RUNS=${RUNS:-3}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
IDLE_SOURCES=${IDLE_SOURCES:-8}
# After load: a fan-out at AFTER_RATE published/s (× 100 members), a burst of
# AFTER_CONNECTIONS idle connections, then AFTER_WAIT seconds with nobody connected.
AFTER_RATE=${AFTER_RATE:-1000}
AFTER_PAYLOAD=${AFTER_PAYLOAD:-1024}
AFTER_SECS=${AFTER_SECS:-10}
AFTER_CONNECTIONS=${AFTER_CONNECTIONS:-15000}
AFTER_WAIT=${AFTER_WAIT:-15}
# Fan-out at fixed rates (published/s; × 100 members = deliveries/s), and a ladder.
FANOUT_RATES=${FANOUT_RATES:-"300 1000"}
FANOUT_SECS=${FANOUT_SECS:-5}
START_RATE=${START_RATE:-1000}
FACTOR=${FACTOR:-1.5}
MAX_RATE=${MAX_RATE:-50000}
STEP_SECS=${STEP_SECS:-3}
# Noise: a fan-out step during which other work used more than 0.15 CPUs is measured again
# up to RETRIES times, each after waiting up to QUIET_WAIT s for a quiet machine.
RETRIES=${RETRIES:-3}
QUIET_WAIT=${QUIET_WAIT:-5}
if [ "${QUICK:-0}" = 1 ]; then
    RUNS=1 FANOUT_SECS=2 STEP_SECS=1 AFTER_SECS=3 AFTER_WAIT=5 FACTOR=2 IDLE_CONNECTIONS=2000
    AFTER_CONNECTIONS=2000
fi

step() { printf '\n==> %s\n' "$*" >&2; }
die() { echo "bench/alloc.sh: $*" >&2; exit 1; }
command -v taskset >/dev/null || die "needs taskset"
[ "$(nproc --all)" -ge 2 ] || die "needs two CPUs (server on one, load generator on the other)"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/target/bench/alloc-$STAMP
mkdir -p "$OUT" target/alloc/bin
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

features() {
    case $1 in
    jemalloc) echo "" ;;
    mimalloc) echo "--no-default-features --features mimalloc" ;;
    system | system-arena2) echo "--no-default-features" ;;
    system-trim) echo "--no-default-features --features malloc-trim" ;;
    *) die "unknown allocator $1" ;;
    esac
}
binary() {
    case $1 in
    system-arena2) echo "$ROOT/target/alloc/bin/switchboard-system" ;;
    *) echo "$ROOT/target/alloc/bin/switchboard-$1" ;;
    esac
}

# SKIP_BUILD=1: use the binaries already in target/alloc/bin (built from another tree, say).
for a in $ALLOCS; do
    [ "${SKIP_BUILD:-0}" = 1 ] && break
    b=$(binary "$a")
    [ "$a" = system-arena2 ] && b_alloc=system || b_alloc=$a
    step "cargo build --release -p switchboard $(features "$b_alloc") (target/alloc)"
    # shellcheck disable=SC2046
    cargo build --release --locked -p switchboard --target-dir target/alloc $(features "$b_alloc")
    cp target/alloc/release/switchboard "$b"
done
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --locked -p switchboard-bench --target-dir target/alloc
GEN=$ROOT/target/alloc/release/switchboard-bench

SERVER_PID=""
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

ADDR=""
start_server() {
    local alloc=$1 port env=()
    [ "$alloc" = system-arena2 ] && env=(MALLOC_ARENA_MAX=2)
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    env "${env[@]}" taskset -c "$SERVER_CPU" "$(binary "$alloc")" --listen "127.0.0.1:$port" --log warn \
        --message-rate 1000000 --message-burst 1000000 \
        --max-connections-per-ip 1000000 --max-connections 1000000 \
        --max-outbound-queue 16MiB >>"$OUT/$alloc.server.log" 2>&1 &
    SERVER_PID=$!
    ADDR=""
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then ADDR=127.0.0.1:$port; break; fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$ADDR" ] || { cat "$OUT/$alloc.server.log" >&2; die "switchboard ($alloc) did not start"; }
    sleep 0.5
}

gen() {
    local alloc=$1 run=$2
    shift 2
    echo "    switchboard-bench $*" >&2
    timeout --kill-after=10 900 taskset -c "$GEN_CPU" "$GEN" --addr "$ADDR" --server-pid "$SERVER_PID" \
        --retries "$RETRIES" --quiet-wait "$QUIET_WAIT" \
        --json "$RESULTS" --tag "alloc=$alloc,run=$run" "$@" >>"$OUT/generator.log" 2>&1 ||
        echo "    (exit status $?: see $OUT/generator.log)" >&2
}

for run in $(seq "$RUNS"); do
    for a in $ALLOCS; do
        step "run $run/$RUNS: $a"
        start_server "$a"
        gen "$a" "$run" --sources "$IDLE_SOURCES" idle --connections "$IDLE_CONNECTIONS"
        stop_server
        start_server "$a"
        gen "$a" "$run" --sources "$IDLE_SOURCES" after-load --rate "$AFTER_RATE" \
            --payload "$AFTER_PAYLOAD" --duration "$AFTER_SECS" \
            --connections "$AFTER_CONNECTIONS" --wait "$AFTER_WAIT"
        stop_server
        start_server "$a"
        for rate in $FANOUT_RATES; do
            gen "$a" "$run" fanout --rate "$rate" --duration "$FANOUT_SECS"
        done
        gen "$a" "$run" saturation --start-rate "$START_RATE" --factor "$FACTOR" \
            --max-rate "$MAX_RATE" --duration "$STEP_SECS" --drain 3
        stop_server
    done
done

python3 bench/alloc_report.py "$RESULTS" | tee "$OUT/summary.md"
echo "bench/alloc.sh: raw results in $RESULTS" >&2
