#!/usr/bin/env bash
# A real cluster on one machine: Redis, three Switchboard nodes sharing it, and HAProxy in
# front, so that the chat at http://127.0.0.1:8080/chat/ shows people on every node:
#
#   scripts/cluster.sh                 # Ctrl-C stops everything it started
#
# Settings (environment): PORT (the balancer, 8080), NODES (3; node i listens on PORT+i),
# REDIS_PORT (6390), and any SWITCHBOARD_* for the nodes. Needs redis-server and haproxy
# (Debian: apt-get install redis-server haproxy). Redis runs with appendonly and
# appendfsync always in a scratch directory, so a Redis restart keeps every acknowledged
# message (docs/scaling.md). Each node's log goes to the directory printed at start.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PORT=${PORT:-8080}
NODES=${NODES:-3}
REDIS_PORT=${REDIS_PORT:-6390}
for tool in redis-server haproxy; do
    if ! command -v "$tool" >/dev/null; then
        echo "$tool not found: apt-get install redis-server haproxy" >&2
        exit 1
    fi
done

# The editor's packages and the release binary, as scripts/start.sh builds them.
if [ ! -f web/editor/node_modules/.package-lock.json ] ||
    [ web/editor/package-lock.json -nt web/editor/node_modules/.package-lock.json ]; then
    (cd web/editor && npm ci --no-audit --no-fund)
fi
cargo build --release --locked -p switchboard
BIN=target/release/switchboard

RUN=$(mktemp -d -t switchboard-cluster.XXXXXX)
pids=()
stop() {
    trap - INT TERM EXIT
    echo "==> stopping"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop INT TERM EXIT

echo "==> redis-server on 127.0.0.1:$REDIS_PORT (data and logs in $RUN)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$RUN" --save "" \
    --appendonly yes --appendfsync always >"$RUN/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break
    sleep 0.05
done

backends=()
for i in $(seq "$NODES"); do
    port=$((PORT + i))
    mkdir -p "$RUN/node$i"
    SWITCHBOARD_CONFIG="${SWITCHBOARD_CONFIG:-scripts/demo.toml}" \
        "$BIN" --listen "127.0.0.1:$port" --redis-url "redis://127.0.0.1:$REDIS_PORT/" \
        --data-dir "$RUN/node$i" >"$RUN/node$i.log" 2>&1 &
    pids+=($!)
    backends+=("127.0.0.1:$port")
    echo "==> node $i on 127.0.0.1:$port (pid $!, log $RUN/node$i.log)"
done

scripts/haproxy-config.sh "127.0.0.1:$PORT" "${backends[@]}" >"$RUN/haproxy.cfg"
haproxy -db -f "$RUN/haproxy.cfg" >"$RUN/haproxy.log" 2>&1 &
pids+=($!)
echo "==> HAProxy on 127.0.0.1:$PORT (config $RUN/haproxy.cfg)"
echo
echo "    chat:   http://127.0.0.1:$PORT/chat/"
echo "    editor: http://127.0.0.1:$PORT/editor/"
echo
echo "Open the chat in two browsers: each lands on a node (the balancer picks), and both see"
echo "everyone. Stop a node (kill -TERM <pid>) and its pages reconnect to another. Ctrl-C stops all."
# Until Ctrl-C, or until one of them exits.
wait -n "${pids[@]}"
echo "a process of the cluster exited; see $RUN" >&2
