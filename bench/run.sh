#!/usr/bin/env bash
# The side-by-side benchmark: Switchboard, Node `ws`, Socket.IO v4 and Python `websockets`,
# one after the other on the same machine with the same load generator.
#
#   bench/run.sh                # everything, then writes docs/benchmarks.md and docs/bench/*.svg
#   SERVERS="switchboard node-ws" RUNS=1 bench/run.sh      # a subset
#   QUICK=1 bench/run.sh        # short steps, one run: to try the script, not to publish
#   SERVERS="switchboard switchboard-redis2" SECTION=redis bench/run.sh
#                               # one node against two over Redis: rewrites only that section
#   SECTION=compression bench/run.sh
#                               # each server plain and with permessage-deflate, 1 KiB text
#                               # messages: rewrites only the section "Compression"
#   SECTION=bigroom bench/run.sh
#                               # fan-out in one room of BIGROOM_MEMBERS (200) at the fixed loads
#                               # BIGROOM_LOADS (deliveries/s) and a saturation ladder, Switchboard
#                               # against Bun, with server CPU per million deliveries: rewrites
#                               # only the section "Fan-out in a 200-member room"
#   SECTION=rooms bench/run.sh  # large rooms: a join storm (JOIN_MEMBERS clients joining one
#                               # room at JOIN_RATE/s) and idle connections each in a room of
#                               # its own (IDLE_ROOM_SIZES), a fresh server each: rewrites
#                               # only the section "Large rooms and a room per connection"
#
# It installs the peers (npm ci in bench/peers/node, pip into target/bench-venv), builds
# release binaries, pins each server to CPU 0 and the load generator to CPU 1 (taskset),
# warms each server up, runs every scenario RUNS times (interleaved) and reports medians. Every server
# listens on 127.0.0.1 only, every step is time-bounded, and only processes started here
# are stopped (by their PID). Raw results: target/bench/<timestamp>/results.jsonl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

# switchboard-history: the fan-out rooms keep 1,000 messages of history on disk
# (history.redb, committed before delivery); switchboard-nowindow: no recovery window
# either (rooms keep nothing). Plain switchboard is the default: a 100-message recovery
# window in memory.
# switchboard-redis2: two nodes sharing one Redis (--redis-url), each room's members and
# the publishers split between them; the two nodes and redis-server share SERVER_CPU, the
# one CPU a single server gets (the server side's CPU budget stays the same).
# bun: Bun (uWebSockets inside) with server.publish, the fastest peer we know.
# *-deflate: the same server with permessage-deflate on (Switchboard: its defaults; Bun and
# Node ws: PERMESSAGE_DEFLATE=1, see their server.js), and members that offer it as browsers
# do (switchboard-bench --compression).
DEFAULT_SERVERS="switchboard switchboard-history switchboard-nowindow switchboard-redis2 bun node-ws socketio python-websockets"
if ! command -v redis-server >/dev/null; then
    # Without Debian's redis-server the default run leaves the Redis configuration out.
    DEFAULT_SERVERS=${DEFAULT_SERVERS/ switchboard-redis2/}
fi
if [ "${SECTION:-}" = compression ]; then
    # Messages worth compressing: 1 KiB of words in `data` (ws compresses nothing under
    # 1 KiB by default); a coarser ladder (the compressing peers saturate early).
    DEFAULT_SERVERS="switchboard switchboard-deflate bun bun-deflate node-ws node-ws-deflate"
    PAYLOAD=${PAYLOAD:-1024}
    TEXT=${TEXT:-1}
    FACTOR=${FACTOR:-1.5}
fi
if [ "${SECTION:-}" = bigroom ]; then
    # One room of 200 members, 10 of them publishing; the ladder from 20k deliveries/s.
    DEFAULT_SERVERS="switchboard bun"
    ROOMS=${ROOMS:-1}
    MEMBERS=${MEMBERS:-${BIGROOM_MEMBERS:-200}}
    START_RATE=${START_RATE:-100}
fi
if [ "${SECTION:-}" = rooms ]; then
    # switchboard-count: rooms that tell only their member count (presence = "count").
    DEFAULT_SERVERS="switchboard switchboard-count bun node-ws"
fi
SERVERS=${SERVERS:-$DEFAULT_SERVERS}
RUNS=${RUNS:-3}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
# Fan-out shape: ROOMS × MEMBERS connections, PUBLISHERS of them publish.
ROOMS=${ROOMS:-10}
MEMBERS=${MEMBERS:-100}
PUBLISHERS=${PUBLISHERS:-10}
PAYLOAD=${PAYLOAD:-64}
# TEXT=1: pad each message's data with words (compressible like chat) instead of `x`s.
TEXT=${TEXT:-0}
# Fixed-rate fan-out (messages published per second, all publishers together).
FANOUT_RATE=${FANOUT_RATE:-300}
# Saturation ladder (published per second): START, ×FACTOR, up to MAX.
START_RATE=${START_RATE:-200}
FACTOR=${FACTOR:-1.25}
MAX_RATE=${MAX_RATE:-50000}
MAX_P99_MS=${MAX_P99_MS:-50}
WARMUP=${WARMUP:-1}
STEP_SECS=${STEP_SECS:-3}
FANOUT_SECS=${FANOUT_SECS:-5}
DRAIN=${DRAIN:-3}
# Idle connections: sizes, source addresses. 19,000 is as many as a server process holds
# here (open files are capped at 20,000 per process).
IDLE_SIZES=${IDLE_SIZES:-"1000 10000 19000"}
IDLE_SOURCES=${IDLE_SOURCES:-8}
# SECTION=rooms: the join storm (JOIN_MEMBERS clients join one room, started at JOIN_RATE
# per second), and idle connections each in a room of its own (IDLE_ROOM_SIZES; Switchboard
# bare at the same sizes too, so that both figures come from one run).
JOIN_MEMBERS=${JOIN_MEMBERS:-10000}
JOIN_RATE=${JOIN_RATE:-2000}
IDLE_ROOM_SIZES=${IDLE_ROOM_SIZES:-"19000"}
# One more member joins the storm's room first and reads nothing for DEAF_SECS: past
# Switchboard's 20 s write_timeout and its heartbeat (a ping at 25 s, 10 s to answer).
DEAF_SECS=${DEAF_SECS:-37}
# SECTION=bigroom: the fixed loads, in deliveries per second (published/s × MEMBERS).
BIGROOM_LOADS=${BIGROOM_LOADS:-"160000 320000 640000"}
# Noise: a step during which other work used more than MAX_OTHER_CPU CPUs is measured
# again (up to RETRIES times, after waiting up to QUIET_WAIT s for a quiet machine).
# (Other work on a CPU delays a pinned server by whole scheduler time slices: even 0.3 CPU
# of it during a step shows as tens of milliseconds at p99.)
MAX_OTHER_CPU=${MAX_OTHER_CPU:-0.15}
RETRIES=${RETRIES:-3}
QUIET_WAIT=${QUIET_WAIT:-5}
# Measurements again at most per generator run (a saturation ladder, say).
RETRY_BUDGET=${RETRY_BUDGET:-8}
# Churn: workers opening/joining/closing while the room publishes at CHURN_RATE.
CHURN_WORKERS=${CHURN_WORKERS:-16}
CHURN_MEMBERS=${CHURN_MEMBERS:-20}
CHURN_RATE=${CHURN_RATE:-200}
CHURN_SECS=${CHURN_SECS:-5}
DOC=${DOC:-docs/benchmarks.md}
PLOTS=${PLOTS:-$(dirname "$DOC")/bench}

if [ "${QUICK:-0}" = 1 ]; then
    RUNS=1 STEP_SECS=1 FANOUT_SECS=2 CHURN_SECS=2 FACTOR=2 IDLE_SIZES=${IDLE_SIZES_QUICK:-"1000"} RETRIES=0
fi

step() { printf '\n==> %s\n' "$*" >&2; }
die() { echo "bench/run.sh: $*" >&2; exit 1; }

for tool in cargo node npm python3 taskset; do
    command -v "$tool" >/dev/null || die "needs $tool"
done
[ "$(nproc --all)" -ge 2 ] || die "needs two CPUs (server on one, load generator on the other)"
case " $SERVERS " in
*" switchboard-redis2 "*) command -v redis-server >/dev/null || die "switchboard-redis2 needs redis-server (apt-get install redis-server)" ;;
esac

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/target/bench/$STAMP
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
COMMAND="bench/run.sh"
for v in SERVERS RUNS ROOMS MEMBERS PUBLISHERS PAYLOAD TEXT FANOUT_RATE START_RATE FACTOR MAX_RATE \
    MAX_P99_MS STEP_SECS IDLE_SIZES QUICK SECTION MAX_OTHER_CPU RETRIES QUIET_WAIT RETRY_BUDGET \
    JOIN_MEMBERS JOIN_RATE IDLE_ROOM_SIZES BIGROOM_MEMBERS BIGROOM_LOADS; do
    # Record any setting given in the environment, so the command in the doc is exact.
    if printenv "$v" >/dev/null 2>&1; then COMMAND="$v=\"$(printenv "$v")\" $COMMAND"; fi
done

step "peers: npm ci (bench/peers/node), pip (target/bench-venv)"
(cd bench/peers/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
# The `bun` package's binary comes from its platform package (@oven/bun-linux-x64).
(cd bench/peers/bun && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
VENV=$ROOT/target/bench-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r bench/peers/python/requirements.txt

step "cargo build --release (switchboard, switchboard-bench)"
cargo build --release --locked -p switchboard -p switchboard-bench
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SB=$TARGET/release/switchboard
GEN=$TARGET/release/switchboard-bench

# --- starting and stopping servers (only the ones started here, by PID) ---
# SERVER_PID: the server (several, comma-separated, for a configuration of several nodes);
# SERVER_ADDR likewise. REDIS_PID, REDIS_ADDR: the Redis the nodes share, if any.
SERVER_PID=""
SERVER_ADDR=""
REDIS_PID=""
REDIS_ADDR=""
stop_pid() {
    local pid=$1
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
stop_server() {
    local pid
    # The nodes first (a node's graceful shutdown clears its presence in Redis), then Redis.
    for pid in ${SERVER_PID//,/ }; do stop_pid "$pid"; done
    [ -z "$REDIS_PID" ] || stop_pid "$REDIS_PID"
    SERVER_PID=""
    REDIS_PID=""
    REDIS_ADDR=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something listens on 127.0.0.1:$1 (while process $2 lives).
wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# A Switchboard node pinned to the server CPU: start_node NAME PORT DATA-DIR [ARGS...]
# (19,000 idle connections and the open-file cap of 20,000: fewer descriptors kept for
# handshakes in progress than the default 1,024 leave room for them all.)
start_node() {
    local name=$1 port=$2 data=$3
    shift 3
    rm -rf "$data"
    taskset -c "$SERVER_CPU" "$SB" --listen "127.0.0.1:$port" --log warn \
        --message-rate 1000000 --message-burst 1000000 \
        --max-connections-per-ip 1000000 --max-connections 1000000 \
        --max-outbound-queue 16MiB --max-pending-connections 512 \
        --data-dir "$data" "$@" >>"$OUT/$name.server.log" 2>&1 &
}

# Debian's redis-server, no persistence, on a free port, pinned to the server CPU too.
start_redis() {
    local port
    port=$(free_port)
    mkdir -p "$OUT/redis"
    taskset -c "$SERVER_CPU" redis-server --port "$port" --bind 127.0.0.1 --dir "$OUT/redis" \
        --save "" --appendonly no --daemonize no --loglevel warning >>"$OUT/redis.log" 2>&1 &
    REDIS_PID=$!
    wait_port "$port" "$REDIS_PID" || { cat "$OUT/redis.log" >&2; die "redis-server did not start"; }
    REDIS_ADDR=127.0.0.1:$port
}

start_server() {
    local name=$1 log=$OUT/$1.server.log
    local port=""
    case $name in
    switchboard-redis2)
        start_redis
        local pids=() addrs=() p
        for i in 1 2; do
            p=$(free_port)
            start_node "$name" "$p" "$OUT/$name.data$i" --redis-url "redis://$REDIS_ADDR/"
            pids+=("$!")
            # Known at once, so that a failed start still stops what was started.
            SERVER_PID=$(IFS=,; echo "${pids[*]}")
            wait_port "$p" "$!" || { cat "$log" >&2; die "$name: node $i did not start"; }
            addrs+=("127.0.0.1:$p")
        done
        SERVER_ADDR=$(IFS=,; echo "${addrs[*]}")
        echo "    $name pids=$SERVER_PID addrs=$SERVER_ADDR redis pid=$REDIS_PID addr=$REDIS_ADDR" >&2
        return 0
        ;;
    switchboard | switchboard-deflate | switchboard-history | switchboard-nowindow | switchboard-count)
        # --log warn: the peers log nothing per connection either. The address is then not
        # logged, so pick a free port first.
        port=$(free_port)
        local data=$OUT/$name.data extra=()
        case $name in
        switchboard-history)
            # Every room the generator uses (fanout*, sat*, churn*, after*) is in `default`.
            printf '[namespaces.default]\nhistory_size = 1000\nhistory_ttl = "10m"\n' >"$OUT/history.toml"
            extra=(--config "$OUT/history.toml")
            ;;
        switchboard-nowindow) extra=(--recovery-window-size 0) ;;
        switchboard-count)
            # The storm's room (and every other) tells its members only how many there are.
            printf '[namespaces.default]\npresence = "count"\n' >"$OUT/count.toml"
            extra=(--config "$OUT/count.toml")
            ;;
        esac
        start_node "$name" "$port" "$data" "${extra[@]}"
        ;;
    node-ws | node-ws-deflate)
        PERMESSAGE_DEFLATE=$([ "$name" = node-ws-deflate ] && echo 1 || echo 0) \
            taskset -c "$SERVER_CPU" node bench/peers/node/ws-server.js 0 >"$log" 2>&1 &
        ;;
    bun | bun-deflate)
        PERMESSAGE_DEFLATE=$([ "$name" = bun-deflate ] && echo 1 || echo 0) \
            taskset -c "$SERVER_CPU" bench/peers/bun/node_modules/.bin/bun bench/peers/bun/server.js 0 >"$log" 2>&1 &
        ;;
    socketio) taskset -c "$SERVER_CPU" node bench/peers/node/socketio-server.js 0 >"$log" 2>&1 & ;;
    python-websockets) taskset -c "$SERVER_CPU" "$VENV/bin/python" bench/peers/python/server.py 0 >"$log" 2>&1 & ;;
    *) die "unknown server $name" ;;
    esac
    SERVER_PID=$!
    SERVER_ADDR=""
    for _ in $(seq 100); do
        if [ -n "$port" ]; then
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then SERVER_ADDR=127.0.0.1:$port; fi
        else
            SERVER_ADDR=$(grep -o 'listening addr=[0-9.:]*' "$log" 2>/dev/null | head -1 | cut -d= -f2 || true)
        fi
        [ -n "$SERVER_ADDR" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$SERVER_ADDR" ] || { cat "$log" >&2; die "$name did not start"; }
    echo "    $name pid=$SERVER_PID addr=$SERVER_ADDR" >&2
}

# The load generator, pinned, against the running server. Its exit status is recorded,
# not fatal: a peer failing a scenario is a result.
# The protocol a server speaks: its configurations speak Switchboard's.
kind() {
    case $1 in
    switchboard-*) echo switchboard ;;
    bun | bun-deflate | node-ws-deflate) echo node-ws ;;  # the same JSON protocol
    *) echo "$1" ;;
    esac
}

gen() {
    local name=$1 broker=()
    shift
    # Redis counts as the server's CPU too, and its INFO is read around every step.
    [ -z "$REDIS_PID" ] || broker=(--broker-pid "$REDIS_PID" --redis "$REDIS_ADDR")
    timeout --kill-after=10 900 taskset -c "$GEN_CPU" "$GEN" --server "$(kind "$name")" --name "$name" --addr "$SERVER_ADDR" \
        --server-pid "$SERVER_PID" "${broker[@]}" --json "$RESULTS" --max-other-cpu "$MAX_OTHER_CPU" \
        --retries "$RETRIES" --retry-budget "$RETRY_BUDGET" --quiet-wait "$QUIET_WAIT" "$@" >>"$OUT/generator.log" 2>&1 \
        || echo "    (generator exited with $? for $name: $*; see $OUT/generator.log)" >&2
}

shape=(--rooms "$ROOMS" --members "$MEMBERS" --publishers "$PUBLISHERS" --payload "$PAYLOAD")
[ "$TEXT" = 1 ] && shape+=(--text)
# The shape for one configuration: compressing ones' members offer permessage-deflate.
shape_of() {
    case $1 in
    *-deflate) echo "${shape[@]}" --compression ;;
    *) echo "${shape[@]}" ;;
    esac
}
limits=(--warmup "$WARMUP" --drain "$DRAIN" --max-p99-ms "$MAX_P99_MS")

uptime_before=$(uptime)
started=$(date +%s)
if [ "${SECTION:-}" = rooms ]; then
    # Large rooms: each measurement on a freshly started server, runs interleaved.
    for run in $(seq "$RUNS"); do
        for name in $SERVERS; do
            step "run $run/$RUNS, $name: join storm, $JOIN_MEMBERS members at $JOIN_RATE/s (fresh server)"
            start_server "$name"
            sleep 1
            gen "$name" --tag "run=$run" --sources "$IDLE_SOURCES" join-storm \
                --members "$JOIN_MEMBERS" --rate "$JOIN_RATE" --deaf "$DEAF_SECS"
            stop_server
            for n in $IDLE_ROOM_SIZES; do
                step "run $run/$RUNS, $name: $n idle connections, each in a room of its own (fresh server)"
                start_server "$name"
                sleep 1
                gen "$name" --tag "run=$run" --sources "$IDLE_SOURCES" idle --connections "$n" \
                    --concurrency 64 --room-per-connection
                stop_server
                if [ "$name" = switchboard ]; then
                    step "run $run/$RUNS, $name: $n idle connections, no room (fresh server)"
                    start_server "$name"
                    sleep 1
                    gen "$name" --tag "run=$run" --sources "$IDLE_SOURCES" idle --connections "$n" \
                        --concurrency 64
                    stop_server
                fi
            done
        done
    done
    SERVERS=""  # nothing more to measure below
fi
# Runs are interleaved (run 1 of every server, then run 2, ...) so that a noisy moment on
# the machine does not land on one server's runs only.
for run in $(seq "$RUNS"); do
    for name in $SERVERS; do
        step "run $run/$RUNS, $name: fan-out, saturation, churn"
        start_server "$name"
        read -r -a my_shape <<<"$(shape_of "$name")"
        # Warm-up (JIT, allocator, caches): a fan-out run that is not recorded.
        timeout 120 taskset -c "$GEN_CPU" "$GEN" --server "$(kind "$name")" --addr "$SERVER_ADDR" \
            --retries 0 --quiet-wait 0 fanout \
            "${my_shape[@]}" --rate "$FANOUT_RATE" --duration 3 --warmup 1 >>"$OUT/generator.log" 2>&1 || true
        if [ "${SECTION:-}" = bigroom ]; then
            # The fixed loads, each a fan-out step of its own (published/s = load / members).
            for load in $BIGROOM_LOADS; do
                gen "$name" --tag "run=$run" fanout "${my_shape[@]}" "${limits[@]}" \
                    --rate "$(python3 -c "print($load / $MEMBERS)")" --duration "$FANOUT_SECS"
            done
        else
            gen "$name" --tag "run=$run" fanout "${my_shape[@]}" "${limits[@]}" \
                --rate "$FANOUT_RATE" --duration "$FANOUT_SECS"
        fi
        # Node ws compressing every member's copy on its own sustains less than the ladder's
        # usual first step: its ladder starts ten times lower.
        start_rate=$START_RATE
        [ "$name" = node-ws-deflate ] && start_rate=$(python3 -c "print(max(1, $START_RATE / 10))")
        gen "$name" --tag "run=$run" saturation "${my_shape[@]}" "${limits[@]}" --duration "$STEP_SECS" \
            --start-rate "$start_rate" --factor "$FACTOR" --max-rate "$MAX_RATE"
        if [ "$name" = switchboard-redis2 ]; then
            # What Redis did over the whole run (the commands' totals and the slowest calls).
            redis-cli -h 127.0.0.1 -p "${REDIS_ADDR##*:}" INFO commandstats >"$OUT/$name.run$run.commandstats.txt" 2>&1 || true
            redis-cli -h 127.0.0.1 -p "${REDIS_ADDR##*:}" SLOWLOG GET 10 >"$OUT/$name.run$run.slowlog.txt" 2>&1 || true
        elif [ -z "${SECTION:-}" ]; then
            # Churn measures one server's connection handling; the Redis configuration is
            # about fan-out across nodes (and a section's run measures fan-out only).
            gen "$name" --tag "run=$run" --sources "$IDLE_SOURCES" churn --members "$CHURN_MEMBERS" \
                --rate "$CHURN_RATE" --workers "$CHURN_WORKERS" --duration "$CHURN_SECS" "${limits[@]}"
        fi
        stop_server
    done
done
for name in $SERVERS; do
    # A configuration of history changes nothing for an idle connection.
    case $name in switchboard-* | *-deflate) continue ;; esac
    # The Redis section alone (SECTION=redis) does not report idle connections.
    [ -z "${SECTION:-}" ] || continue
    for n in $IDLE_SIZES; do
        step "$name: $n idle connections (fresh server)"
        start_server "$name"
        sleep 1
        gen "$name" --tag "run=1" --sources "$IDLE_SOURCES" idle --connections "$n" --concurrency 64
        stop_server
    done
done
elapsed=$(($(date +%s) - started))
uptime_after=$(uptime)

step "machine"
python3 - "$OUT/machine.json" "$uptime_before" "$uptime_after" "$elapsed" "$COMMAND" \
    "$(rustc --version)" "$(node --version)" "$("$VENV/bin/python" --version 2>&1)" <<'EOF'
import json, os, platform, re, subprocess, sys
out, before, after, elapsed, command, rustc, node, python = sys.argv[1:9]
def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
cpuinfo = read("/proc/cpuinfo")
model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
mem = re.search(r"MemTotal:\s*(\d+)", read("/proc/meminfo"))
def pkg(path):
    try:
        with open(path) as f:
            return json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        return "?"
try:
    websockets = subprocess.run(["target/bench-venv/bin/python", "-c",
        "import websockets; print(websockets.__version__)"], capture_output=True, text=True).stdout.strip()
except OSError:
    websockets = "?"
json.dump({
    "cpu": model.group(1).strip() if model else platform.processor(),
    "cpus": os.cpu_count(),
    "mem_gib": round(int(mem.group(1)) / 1048576, 1) if mem else None,
    "kernel": platform.release(),
    "nofile": subprocess.run(["bash", "-c", "ulimit -n"], capture_output=True, text=True).stdout.strip(),
    "uptime_before": before.strip(), "uptime_after": after.strip(), "elapsed_s": int(elapsed),
    "command": command, "rustc": rustc, "node": node, "python": python,
    "ws": pkg("bench/peers/node/node_modules/ws/package.json"),
    "bun": pkg("bench/peers/bun/node_modules/bun/package.json"),
    "socketio": pkg("bench/peers/node/node_modules/socket.io/package.json"),
    "engineio_ws": pkg("bench/peers/node/node_modules/engine.io/node_modules/ws/package.json"),
    "websockets": websockets,
}, open(out, "w"), indent=1)
EOF

step "report: $DOC, $PLOTS/*.svg"
# SECTION=redis: rewrite only "Many nodes over Redis" of DOC (a run of switchboard and
# switchboard-redis2 alone), leaving the rest of the doc from the last full run;
# SECTION=compression likewise "Compression", SECTION=rooms "Large rooms and a room per
# connection".
section=()
[ -z "${SECTION:-}" ] || section=(--section "$SECTION")
python3 bench/report.py --results "$RESULTS" --machine "$OUT/machine.json" --doc "$DOC" --plots "$PLOTS" "${section[@]}"
echo "raw results: $RESULTS" >&2
