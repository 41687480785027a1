#!/usr/bin/env bash
# Brings up the whole mesh locally: what it needs and nothing else
# (scripts/install-deps.sh in mesh mode: no test, deploy or tracing tools),
# the servers it uses (Redis, and FerretDB when the read store is MongoDB), a
# debug build, then command-svc, query-svc and event-relay in the background
# (logs .run/logs/<name>.log, pids .run/<name>.pid), and waits until each one
# reports SERVING on gRPC health. One progress line per step; re-running
# restarts the services and takes seconds. Stop everything with scripts/down.sh.
#
# usage: scripts/up.sh [--mongo]
#   --mongo (or PM_READ_STORE=mongo): the read model in FerretDB, a
#           MongoDB-compatible server on PM_MONGO_PORT (27017)
#   PM_READ_STORE=sqlite: the read model in a SQLite file in .run/ (contract
#           C3, READ_STORE_URL; needs only Redis besides the services)
# Ports: PM_COMMAND_PORT (50051), PM_QUERY_PORT (50052), PM_RELAY_PORT (50053),
# PM_REDIS_PORT (6379); the event store is SQLite in .run/ unless
# COMMAND_DATABASE_URL is set.
set -euo pipefail

PM_SCRIPT=up
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The read store: SQLite by default (an embedded file; the mesh then needs
# only Redis), MongoDB (FerretDB here) with --mongo. See CONTRACTS.md C3.
PM_READ_STORE="${PM_READ_STORE:-sqlite}"
case "${1:-}" in
    "") ;;
    --mongo) PM_READ_STORE=mongo ;;
    -h | --help)
        sed -n '2,20p' "$0"
        exit 0
        ;;
    *)
        echo "usage: $0 [--mongo]" >&2
        exit 2
        ;;
esac
case "$PM_READ_STORE" in
    mongo) servers=(redis ferretdb) deps_mode=(--mongo) ;;
    sqlite) servers=(redis) deps_mode=() ;;
    *) die "PM_READ_STORE must be sqlite or mongo, not '$PM_READ_STORE'" ;;
esac

# step_begin TEXT / step_end: one numbered progress line per step, with its time.
STEPS=5
step_no=0
step_start=$SECONDS
up_start=$SECONDS
step_begin() {
    step_no=$((step_no + 1))
    step_start=$SECONDS
    log "[$step_no/$STEPS] $*"
}
step_end() { log "[$step_no/$STEPS] done in $((SECONDS - step_start))s"; }

PM_COMMAND_PORT="${PM_COMMAND_PORT:-50051}"
PM_QUERY_PORT="${PM_QUERY_PORT:-50052}"
PM_RELAY_PORT="${PM_RELAY_PORT:-50053}"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN_DIR="$TARGET_DIR/debug"

step_begin "dependencies (scripts/install-deps.sh ${deps_mode[*]})"
"$ROOT/scripts/install-deps.sh" "${deps_mode[@]}"
step_end

step_begin "servers: ${servers[*]} (scripts/servers.sh up)"
"$ROOT/scripts/servers.sh" up "${servers[@]}" >/dev/null
step_end

# The whole workspace's binaries, as scripts/test.sh builds them: building the
# three services alone resolves other features and would compile everything twice.
step_begin "build (cargo build --workspace --bins; minutes on a fresh machine, seconds after)"
(cd "$ROOT" && cargo build --workspace --bins)
step_end

# Re-running restarts: stop whatever a previous run left running.
"$ROOT/scripts/down.sh" --keep-servers

# Settings every service reads; each points at the local servers.
export REDIS_URL="$TEST_REDIS_URL"
if [[ $PM_READ_STORE == mongo ]]; then
    export READ_STORE_URL="${READ_STORE_URL:-$TEST_MONGODB_URL}"
    export READ_STORE_DATABASE="${READ_STORE_DATABASE:-posts}"
else
    export READ_STORE_URL="${READ_STORE_URL:-sqlite://$RUN_DIR/postmesh-read.db?mode=rwc}"
fi
export COMMAND_ENDPOINT="http://127.0.0.1:$PM_COMMAND_PORT"

# Start order: the write side first.
services=("command-svc $PM_COMMAND_PORT" "query-svc $PM_QUERY_PORT" "event-relay $PM_RELAY_PORT")

# service_env NAME: the settings only NAME reads, into the array svc_env.
service_env() {
    case "$1" in
        command-svc)
            svc_env=(
                "COMMAND_LISTEN_ADDR=0.0.0.0:$PM_COMMAND_PORT"
                "COMMAND_DATABASE_URL=${COMMAND_DATABASE_URL:-sqlite://$RUN_DIR/postmesh-events.db?mode=rwc}"
            )
            ;;
        query-svc) svc_env=("QUERY_LISTEN_ADDR=0.0.0.0:$PM_QUERY_PORT") ;;
        event-relay) svc_env=("RELAY_HEALTH_ADDR=0.0.0.0:$PM_RELAY_PORT") ;;
    esac
}

grpc_serving() {
    local out
    out="$(grpcurl -plaintext -max-time 2 "127.0.0.1:$1" grpc.health.v1.Health/Check 2>/dev/null)" || return 1
    [[ "$out" == *'"status": "SERVING"'* ]]
}

step_begin "start command-svc, query-svc, event-relay"
mkdir -p "$LOG_DIR"
started=()
skipped=()
failed=()
for entry in "${services[@]}"; do
    read -r name port <<<"$entry"
    bin="$BIN_DIR/$name"
    if [[ ! -x "$bin" ]]; then
        skipped+=("$name")
        log "$name: no binary at $bin yet; skipping it"
        continue
    fi
    # Something we did not start already holds the port: starting would only fail.
    if port_open "$port"; then
        warn "$name: port $port is already in use by a process up.sh did not start"
        failed+=("$name")
        continue
    fi
    logfile="$LOG_DIR/$name.log"
    printf '===== %s: starting %s =====\n' "$(date -u +%FT%TZ)" "$name" >>"$logfile"
    log "$name: starting on 0.0.0.0:$port (log $logfile)"
    service_env "$name"
    spawn "$logfile" "$RUN_DIR/$name.pid" env "${svc_env[@]}" "$bin"
    started+=("$name $port")
done

step_end

# Wait for all of them together; a subshell keeps one failure from hiding the others.
step_begin "wait until each answers SERVING on gRPC health"
for entry in "${started[@]}"; do
    read -r name port <<<"$entry"
    if (wait_ready "$name" "$LOG_DIR/$name.log" "$RUN_DIR/$name.pid" grpc_serving "$port"); then
        log "$name: SERVING on 127.0.0.1:$port"
    else
        failed+=("$name")
    fi
done

step_end
if ((${#failed[@]} == 0)); then log "mesh SERVING $((SECONDS - up_start))s after start"; fi

echo
echo "postmesh services:"
for entry in "${started[@]}"; do
    read -r name port <<<"$entry"
    printf '  %-12s 127.0.0.1:%-6s log %s\n' "$name" "$port" "$LOG_DIR/$name.log"
done
for name in "${skipped[@]}"; do
    printf '  %-12s (not built yet, skipped)\n' "$name"
done
cat <<EOF
read store: $PM_READ_STORE ($READ_STORE_URL)   redis: $TEST_REDIS_URL
try (README.md, "Try it"):
  grpcurl -plaintext 127.0.0.1:$PM_COMMAND_PORT list
  grpcurl -plaintext -d '{"title":"Hello","content":"First post","author_name":"ada"}' \\
      127.0.0.1:$PM_COMMAND_PORT posts.v1.PostCommand/CreatePost
  grpcurl -plaintext -d '{"post_id":1,"min_version":1}' 127.0.0.1:$PM_QUERY_PORT posts.v1.PostQuery/GetPost
stop with: scripts/down.sh
EOF

if ((${#failed[@]} > 0)); then
    die "not SERVING: ${failed[*]} (see their logs above)"
fi
