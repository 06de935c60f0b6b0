#!/usr/bin/env bash
# CI smoke run of the benchmark: builds the server and the load generator, starts
# Switchboard on a free port, and runs a tiny version of each scenario against it —
# fan-out (plain and compressed), saturation (a short ladder far below saturation), idle connections (two
# generator processes, several source addresses; and each connection in a room of its own),
# churn, memory after load, and a join storm (members joining one room at a paced rate).
# Correctness only: any loss, duplicate, gap, server error or dropped connection fails the
# run (exit status non-zero); latency limits are loose, since timing belongs to the
# benchmark (bench/run.sh), not to a test.
#
#   bench/smoke.sh                 # debug build (shares CI's test build)
#   PROFILE=release bench/smoke.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PROFILE=${PROFILE:-debug}
if [ "$PROFILE" = release ]; then
    cargo build --release --locked -p switchboard -p switchboard-bench
else
    cargo build --locked -p switchboard -p switchboard-bench
fi
TARGET=${CARGO_TARGET_DIR:-target}
SB=$TARGET/$PROFILE/switchboard
GEN=$TARGET/$PROFILE/switchboard-bench
LOG=$(mktemp -d)/switchboard.log

# With --log warn the server does not log its address: pick a free port first.
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$SB" --listen "127.0.0.1:$PORT" --log warn \
    --message-rate 1000000 --message-burst 1000000 \
    --max-connections-per-ip 1000000 --max-connections 1000000 \
    --max-outbound-queue 16MiB >"$LOG" 2>&1 &
PID=$!
cleanup() {
    if kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

ADDR=""
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        ADDR=127.0.0.1:$PORT
        break
    fi
    kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
    sleep 0.1
done
[ -n "$ADDR" ] || { echo "smoke: the server did not start" >&2; cat "$LOG" >&2; exit 1; }
echo "smoke: switchboard pid=$PID addr=$ADDR"

loose=(--warmup 0.5 --drain 5 --max-p99-ms 5000 --min-ratio 0.5)
run() {
    echo
    echo "==> smoke: $*"
    timeout --kill-after=5 60 "$GEN" --addr "$ADDR" --server-pid "$PID" --retries 0 --quiet-wait 0 "$@"
}
run fanout --rooms 3 --members 10 --publishers 3 --rate 300 --duration 2 "${loose[@]}"
# Compressing members (the run fails unless every one negotiated permessage-deflate), text
# worth compressing: every message inflated and checked.
run fanout --rooms 2 --members 10 --publishers 2 --rate 200 --duration 2 --payload 1024 --text \
    --compression "${loose[@]}"
run saturation --rooms 2 --members 10 --publishers 2 --start-rate 50 --factor 2 --max-rate 200 \
    --duration 1 "${loose[@]}"
run --sources 4 idle --connections 400 --shards 2 --concurrency 32 --settle 0.5
run --sources 4 idle --connections 300 --shards 2 --concurrency 32 --settle 0.5 --room-per-connection
run --sources 4 churn --members 5 --rate 100 --workers 4 --duration 2 "${loose[@]}"
run --sources 4 after-load --rooms 2 --members 10 --publishers 2 --rate 100 --duration 1 \
    --connections 200 --hold 0.5 --wait 1 "${loose[@]}"
# --strict here is correctness only: every join answered, none dropped, the message published
# afterwards reaches every member (a join storm has no timing criterion).
run --sources 4 --strict join-storm --members 300 --rate 600 --settle 0.5

kill -0 "$PID" 2>/dev/null || { echo "smoke: the server died" >&2; cat "$LOG" >&2; exit 1; }
echo
echo "smoke: every scenario passed"
