#!/usr/bin/env bash
# Builds and starts the server with every web app, the collaborative editor included:
#
#   scripts/start.sh [server options...]      e.g. scripts/start.sh --listen 0.0.0.0:8080
#
# The editor (web/editor) loads yjs, y-websocket, y-prosemirror and ProseMirror in the browser
# without a bundler; the binary embeds their files from web/editor/node_modules when it is
# built. So this first installs them (`npm ci`, exactly the versions of package-lock.json)
# when they are missing or older than the lock file, then builds and runs the release binary
# with scripts/demo.toml (the web apps' namespaces: the chat's rooms keep history), unless a
# config is given (--config FILE or SWITCHBOARD_CONFIG). Every argument goes to the server
# (`scripts/start.sh --help` lists them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

editor=web/editor
if command -v npm >/dev/null; then
    # npm writes node_modules/.package-lock.json on install: older than the lock file means
    # the lock file changed since (a git pull), so install again.
    if [ ! -f "$editor/node_modules/.package-lock.json" ] ||
        [ "$editor/package-lock.json" -nt "$editor/node_modules/.package-lock.json" ]; then
        echo "==> installing the editor's packages (npm ci in $editor)" >&2
        (cd "$editor" && npm ci --no-audit --no-fund)
    fi
else
    echo "warning: npm not found: the editor at /editor/ will say that its packages are not" >&2
    echo "         installed. Install Node.js 20+ with npm, then run this again." >&2
fi

# Through the environment, so that a --config argument still wins (flags beat SWITCHBOARD_*).
export SWITCHBOARD_CONFIG="${SWITCHBOARD_CONFIG:-scripts/demo.toml}"

exec cargo run --release -p switchboard -- "$@"
