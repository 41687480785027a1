#!/usr/bin/env bash
# Brings up the whole mesh locally: dependencies, servers (MariaDB, Redis,
# FerretDB), a debug build, then command-svc, query-svc and event-relay in the
# background (logs .run/logs/<name>.log, pids .run/<name>.pid), and waits
# until each one reports SERVING on gRPC health. Re-running restarts them.
# Stop everything with scripts/down.sh.
#
# Ports: PM_COMMAND_PORT (50051), PM_QUERY_PORT (50052), PM_RELAY_PORT (50053);
# the event store is SQLite in .run/ unless COMMAND_DATABASE_URL is set.
set -euo pipefail

PM_SCRIPT=up
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PM_COMMAND_PORT="${PM_COMMAND_PORT:-50051}"
PM_QUERY_PORT="${PM_QUERY_PORT:-50052}"
PM_RELAY_PORT="${PM_RELAY_PORT:-50053}"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN_DIR="$TARGET_DIR/debug"

"$ROOT/scripts/install-deps.sh"
"$ROOT/scripts/servers.sh" up

log "building (cargo build --workspace --bins)"
(cd "$ROOT" && cargo build --workspace --bins)

# Re-running restarts: stop whatever a previous run left running.
"$ROOT/scripts/down.sh" --keep-servers

# Settings every service reads; each points at the local servers.
export REDIS_URL="$TEST_REDIS_URL"
export MONGODB_URL="$TEST_MONGODB_URL"
export MONGODB_DATABASE="${MONGODB_DATABASE:-posts}"
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

# Wait for all of them together; a subshell keeps one failure from hiding the others.
for entry in "${started[@]}"; do
    read -r name port <<<"$entry"
    if (wait_ready "$name" "$LOG_DIR/$name.log" "$RUN_DIR/$name.pid" "$name" grpc_serving "$port"); then
        log "$name: SERVING on 127.0.0.1:$port"
    else
        failed+=("$name")
    fi
done

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
servers:
  mariadb $TEST_MYSQL_URL   redis $TEST_REDIS_URL   mongodb $TEST_MONGODB_URL
try:
  grpcurl -plaintext 127.0.0.1:$PM_COMMAND_PORT list
  grpcurl -plaintext -d '{"title":"Hello","content":"First post","author_name":"ada"}' \\
      127.0.0.1:$PM_COMMAND_PORT posts.v1.PostCommand/CreatePost
  grpcurl -plaintext -d '{"post_id":1}' 127.0.0.1:$PM_QUERY_PORT posts.v1.PostQuery/GetPost
stop with: scripts/down.sh
EOF

if ((${#failed[@]} > 0)); then
    die "not SERVING: ${failed[*]} (see their logs above)"
fi
