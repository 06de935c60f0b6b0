#!/usr/bin/env bash
# Prints an HAProxy configuration that balances HTTP and WebSocket traffic on LISTEN over
# Switchboard nodes (scripts/cluster.sh and the e2e cluster test use it):
#
#   scripts/haproxy-config.sh LISTEN NODE...      e.g. 127.0.0.1:8080 127.0.0.1:8081 127.0.0.1:8082
#
# - leastconn: a new connection goes to the node with the fewest open ones, so WebSocket
#   connections (long-lived) spread evenly; no sticky sessions: a client may reconnect to
#   any node and recover there (docs/scaling.md).
# - health checks on /healthz, which answers 503 while a node shuts down, so new
#   connections stop going to it at once.
# - `timeout tunnel` covers an open WebSocket: longer than the server's heartbeat, which
#   keeps idle connections alive.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 LISTEN NODE..." >&2
    exit 2
fi
listen=$1
shift
cat <<CFG
global
    # Two file descriptors per proxied connection, within the open-file limit.
    maxconn 9000

defaults
    mode http
    option http-server-close
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout client-fin 5s
    # A connection refused by a node that just died goes to another one.
    retries 3
    option redispatch

frontend switchboard
    bind $listen
    default_backend nodes

backend nodes
    balance leastconn
    option httpchk GET /healthz
    http-check expect status 200
    default-server check inter 1s fall 2 rise 1
CFG
n=0
for node in "$@"; do
    n=$((n + 1))
    echo "    server node$n $node"
done
