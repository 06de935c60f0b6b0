#!/usr/bin/env bash
# Autobahn|Testsuite conformance run (fuzzingclient, cases 1.* - 10.*, and 12.* / 13.*:
# permessage-deflate) against the WebSocket echo endpoint of switchboard:
#
#   scripts/autobahn.sh
#
# 1. installs wstest if needed (tools/autobahn/setup-wstest.sh, cached in
#    ${WSTEST_PREFIX:-${SWITCHBOARD_TOOLS:-$HOME/.cache/switchboard-tools}/wstest}),
# 2. builds the server (cargo build --release -p switchboard) unless SWITCHBOARD_BIN is set,
# 3. starts `switchboard serve --listen 127.0.0.1:PORT --echo-endpoint --max-message-size 32MiB`
#    on a free port (log: target/autobahn/server.log) and waits for GET /healthz,
# 4. runs `wstest -m fuzzingclient` with tools/autobahn/fuzzingclient.json (port filled in),
# 5. stops that server (by its PID only), prints the summary (tools/autobahn/summarize.py)
#    and exits non-zero if any case failed.
#
# Reports: target/autobahn/index.html (browse) and target/autobahn/index.json.
# Environment:
#   SWITCHBOARD_BIN     server binary to test (skips the cargo build)
#   AUTOBAHN_CASES      comma-separated case patterns overriding the spec's "cases", for quick
#                       local iterations, e.g. AUTOBAHN_CASES='5.*,6.4.*'
#   AUTOBAHN_TIMEOUT    seconds allowed for the whole wstest run (default 1800)
#   AUTOBAHN_STRICT=1   also fail on NON-STRICT / WRONG CODE / FAILED BY CLIENT
#   AUTOBAHN_TLS=1      the same over wss://: the server gets a certificate made with the
#                       openssl CLI (--tls-cert/--tls-key), reports go to target/autobahn-tls
#   SWITCHBOARD_TOOLS, WSTEST_PREFIX   where wstest is installed (see above)
# The 9.* cases (messages of up to 16 MiB) and the compression cases dominate the runtime.
# 12.* and 13.* are 216 cases of 1000 round trips each through wstest's Python 2.7 client
# (~10 min in all), so tools/autobahn/fuzzingclient.json runs 24 of them: two per group (every
# test file of 12.*, every negotiation variant of 13.*), the 18 sizes and fragmentations
# spread over the groups so each is run twice. Against a release build the run took ~100 s
# on the development machine (2 cores; budget: AUTOBAHN_TIMEOUT). Every 12.* / 13.* case:
#   AUTOBAHN_CASES='12.*,13.*' scripts/autobahn.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TOOLS=$ROOT/tools/autobahn
OUT=$ROOT/target/autobahn
TLS=${AUTOBAHN_TLS:-0}
[ "$TLS" = 1 ] && OUT=$ROOT/target/autobahn-tls
export WSTEST_PREFIX=${WSTEST_PREFIX:-${SWITCHBOARD_TOOLS:-$HOME/.cache/switchboard-tools}/wstest}
WSTEST=$WSTEST_PREFIX/wstest
AUTOBAHN_TIMEOUT=${AUTOBAHN_TIMEOUT:-1800}
STARTUP_TIMEOUT=30

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'autobahn.sh: error: %s\n' "$*" >&2; exit 1; }

tools=(curl python3 timeout flock)
[ "$TLS" = 1 ] && tools+=(openssl)
for c in "${tools[@]}"; do
    command -v "$c" >/dev/null || die "'$c' not found"
done

# --- server lifecycle: only ever signal the PID this script started
server_pid=
# true while $1 is a still-running background job of this shell (so a PID that was
# reaped and reused by an unrelated process is never signalled)
is_running() { [ -n "$1" ] && jobs -pr | grep -qx "$1" && kill -0 "$1" 2>/dev/null; }
stop_server() {
    local pid=$server_pid status=0
    [ -n "$pid" ] || return 0
    server_pid=
    if is_running "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do          # up to 10 s for a graceful shutdown
            is_running "$pid" || break
            sleep 0.1
        done
        if is_running "$pid"; then
            log "server (pid $pid) did not exit within 10s of SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || status=$?
    log "server (pid $pid) stopped (exit status $status)"
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start the server on $port and wait until GET /healthz answers; returns 1 if it exits first
start_server() {
    local deadline status=0
    printf '\n==> %s serve --listen 127.0.0.1:%s --echo-endpoint --max-message-size 32MiB %s\n' \
        "$BIN" "$port" "${tls_args[*]}" >> "$OUT/server.log"
    "$BIN" serve --listen "127.0.0.1:$port" --echo-endpoint --max-message-size 32MiB "${tls_args[@]}" \
        >> "$OUT/server.log" 2>&1 < /dev/null 8>&- &
    server_pid=$!
    deadline=$((SECONDS + STARTUP_TIMEOUT))
    while :; do
        if ! is_running "$server_pid"; then
            wait "$server_pid" 2>/dev/null || status=$?
            server_pid=
            log "server exited during startup (status $status); last lines of $OUT/server.log:"
            tail -n 20 "$OUT/server.log" >&2
            return 1
        fi
        if curl -fsS -o /dev/null --max-time 2 "${curl_args[@]}" "$scheme://127.0.0.1:$port/healthz" 2>/dev/null; then
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "GET $scheme://127.0.0.1:$port/healthz did not answer within ${STARTUP_TIMEOUT}s; last lines of $OUT/server.log:"
            tail -n 20 "$OUT/server.log" >&2
            stop_server
            die "server did not become healthy"
        fi
        sleep 0.2
    done
}

# --- 0. one run at a time per checkout (they would share target/autobahn)
mkdir -p "$ROOT/target"
exec 8>"$ROOT/target/.autobahn.lock"
if ! flock -n 8; then
    log "another scripts/autobahn.sh run is using $OUT; waiting for it to finish"
    flock 8
fi

# --- 1. wstest
"$TOOLS/setup-wstest.sh"
"$WSTEST" --autobahnversion

# --- 2. server binary
if [ -n "${SWITCHBOARD_BIN:-}" ]; then
    BIN=$SWITCHBOARD_BIN
    case $BIN in */*) BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN") ;; *) BIN=$(command -v "$BIN" || true) ;; esac
else
    log "cargo build --release -p switchboard"
    cargo build --release -p switchboard
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/switchboard
    case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
fi
{ [ -n "$BIN" ] && [ -x "$BIN" ]; } || die "server binary not found or not executable: ${SWITCHBOARD_BIN:-$BIN}"

# --- 3. fresh output dir, server on a free port (retry: another process may grab the port)
rm -rf "$OUT"
mkdir -p "$OUT"
scheme=http
tls_args=()
curl_args=()
if [ "$TLS" = 1 ]; then
    log "openssl: a self-signed certificate for 127.0.0.1 in $OUT"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$OUT/key.pem" -out "$OUT/cert.pem" -days 2 -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1 2>/dev/null
    scheme=https
    tls_args=(--tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem")
    curl_args=(--cacert "$OUT/cert.pem")
fi
started=
for attempt in 1 2 3; do
    port=$(free_port)
    log "starting $BIN on 127.0.0.1:$port (attempt $attempt)"
    if start_server; then started=1; break; fi
done
[ -n "$started" ] || die "server failed to start (see $OUT/server.log)"
log "server is up (pid $server_pid), GET /healthz ok"

# --- 4. spec with the port (and optional case override) filled in
SPEC=$OUT/fuzzingclient.json
python3 - "$TOOLS/fuzzingclient.json" "$SPEC" "$port" "$OUT" "${AUTOBAHN_CASES:-}" "$TLS" <<'PY'
import json, sys
src, dst, port, outdir, cases, tls = sys.argv[1:]
spec = json.load(open(src))
for server in spec["servers"]:
    server["url"] = server["url"].replace(":PORT/", ":%s/" % port)
    if tls == "1":
        server["url"] = server["url"].replace("ws://", "wss://", 1)
spec["outdir"] = outdir
if cases:
    spec["cases"] = [c.strip() for c in cases.split(",") if c.strip()]
    spec["exclude-cases"] = []
json.dump(spec, open(dst, "w"), indent=3)
PY
log "wstest -m fuzzingclient -s $SPEC  (log: $OUT/wstest.log)"
start_time=$SECONDS
wstest_status=0
timeout "$AUTOBAHN_TIMEOUT" "$WSTEST" -m fuzzingclient -s "$SPEC" 2>&1 | tee "$OUT/wstest.log" || wstest_status=$?
log "wstest finished in $((SECONDS - start_time))s (exit status $wstest_status)"

# --- 5. stop the server, summarize
server_died=
if ! is_running "$server_pid"; then
    server_died=1
    log "the server exited DURING the run; last lines of $OUT/server.log:"
    tail -n 20 "$OUT/server.log" >&2
fi
stop_server

expect=$(sed -n 's/^Ok, will run \([0-9][0-9]*\) test cases.*/\1/p' "$OUT/wstest.log" | head -n 1)
summary_args=()
[ -n "$expect" ] && summary_args+=(--expect "$expect")
[ "${AUTOBAHN_STRICT:-0}" = 1 ] && summary_args+=(--strict)
echo
summary_status=0
python3 "$TOOLS/summarize.py" "${summary_args[@]}" "$OUT/index.json" || summary_status=$?
echo "report: $OUT/index.html"

[ "$wstest_status" = 0 ] || die "wstest failed (exit status $wstest_status; 124 = timed out after ${AUTOBAHN_TIMEOUT}s)"
[ -z "$server_died" ] || die "the server exited during the run"
[ -n "$expect" ] || die "could not read the number of cases from $OUT/wstest.log"
exit "$summary_status"
