# shellcheck shell=bash
# Source this file (`. scripts/env.sh`) to get the environment the tests use:
# the TEST_* URLs of the servers scripts/servers.sh starts, and PATH with the
# Go bin directory (ferretdb, grpcurl and buf are installed there).
# No `set -euo pipefail` here on purpose: it would leak into the caller's shell.

# Ports can be moved with PM_*_PORT, e.g. when a developer's own server owns the default.
export PM_MYSQL_PORT="${PM_MYSQL_PORT:-3306}"
export PM_REDIS_PORT="${PM_REDIS_PORT:-6379}"
export PM_MONGO_PORT="${PM_MONGO_PORT:-27017}"
export PM_FERRET_DEBUG_PORT="${PM_FERRET_DEBUG_PORT:-27018}"
export PM_SECANTUS_PORT="${PM_SECANTUS_PORT:-27019}"
# SecantusDB (PyPI secantusdb, a MongoDB-compatible server on WiredTiger)
# lives in a virtualenv of its own; install-deps.sh --tests creates it.
export PM_SECANTUS_VENV="${PM_SECANTUS_VENV:-$HOME/.local/share/postmesh/secantus-venv}"

export TEST_MYSQL_URL="mysql://postmesh:postmesh@127.0.0.1:${PM_MYSQL_PORT}"
export TEST_REDIS_URL="redis://127.0.0.1:${PM_REDIS_PORT}"
export TEST_MONGODB_URL="mongodb://127.0.0.1:${PM_MONGO_PORT}"
export TEST_SECANTUS_URL="mongodb://127.0.0.1:${PM_SECANTUS_PORT}/?directConnection=true"

# Where `go install` puts binaries: GOBIN if set, else the first GOPATH entry's
# bin ($HOME/go/bin by default, also when go itself is missing).
if command -v go >/dev/null 2>&1; then
    PM_GO_BIN="$(go env GOBIN)"
    if [[ -z "$PM_GO_BIN" ]]; then
        PM_GO_BIN="$(go env GOPATH)"
        PM_GO_BIN="${PM_GO_BIN%%:*}/bin"
    fi
else
    PM_GO_BIN="${GOBIN:-${GOPATH:-$HOME/go}}"
    [[ -n "${GOBIN:-}" ]] || PM_GO_BIN="${PM_GO_BIN%%:*}/bin"
fi
export PM_GO_BIN
case ":$PATH:" in
    *":$PM_GO_BIN:"*) ;;
    *) export PATH="$PM_GO_BIN:$PATH" ;;
esac
