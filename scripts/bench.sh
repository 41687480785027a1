#!/usr/bin/env bash
# Benchmarks the mesh on this machine and prints one JSON line of figures,
# each beside its ceiling (see docs/performance.md):
#
#   1. builds release binaries (command-svc, query-svc, event-relay, postmesh-bench);
#   2. starts MariaDB, Redis and FerretDB (scripts/servers.sh up);
#   3. starts the three services (release) on free ports against a fresh
#      MariaDB database, stream, consumer group, notify channel and read
#      model of this run only (a SQLite file, or a MongoDB database),
#      plus a second command-svc on the embedded SQLite event store (a file in
#      .run/bench/<run>/) for the SQLite figures;
#   3b. when ../shared/peers/cqrs-es (or PM_PEER_CQRS_ES) holds the cqrs-es 0.5 +
#      mysql-es peer, builds it and runs it on the same MariaDB first (its own
#      database), for postmesh-bench to print beside MariaDB's figure;
#   4. runs postmesh-bench against them and prints its JSON line on stdout
#      (progress goes to stderr), also saved as .run/bench/<run>/result.json;
#   5. stops the services and drops this run's databases.
#
# usage: scripts/bench.sh [postmesh-bench flags, e.g. --phase-secs 5 --backlog 20000]
#   PM_READ_STORE=sqlite or mongo: one run on that read store. Unset: both,
#   one after the other, printed as one line {"sqlite": ..., "ferretdb_stand_in": ...}
#   (FerretDB standing in for MongoDB; see docs/performance.md for its limits).
#   PM_BENCH_PROFILE=debug: debug binaries, for checking the phases run.
#   PM_BENCH_MONGO_LIST_POSTS (2000): posts seeded for ListPosts on FerretDB,
#   which cannot list 100,000 (the SQLite run seeds --list-posts, 100000).
# A benchmark never fails on its figures: the exit status is non-zero only
# when something could not be built, started or measured. Never run in CI.
set -euo pipefail

if [[ -z "${PM_READ_STORE:-}" ]]; then
    sqlite_line="$(PM_READ_STORE=sqlite "$0" "$@")"
    mongo_line="$(PM_READ_STORE=mongo "$0" "$@")"
    python3 -c 'import json, sys
print(json.dumps({"sqlite": json.loads(sys.argv[1]), "ferretdb_stand_in": json.loads(sys.argv[2])}))' \
        "$sqlite_line" "$mongo_line"
    exit 0
fi

PM_SCRIPT=bench
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
# PM_BENCH_PROFILE=debug: a smoke run of the phases on debug binaries (its
# figures mean nothing; the real run is release).
case "${PM_BENCH_PROFILE:-release}" in
    release) BIN_DIR="$TARGET_DIR/release" profile=(--release) ;;
    debug) BIN_DIR="$TARGET_DIR/debug" profile=() ;;
    *) die "PM_BENCH_PROFILE must be release or debug" ;;
esac

log "building ${PM_BENCH_PROFILE:-release} binaries" >&2
cargo build "${profile[@]}" -p command-svc -p query-svc -p event-relay -p postmesh-bench --bins >&2
"$ROOT/scripts/servers.sh" up >&2

RUN="bench_$(date +%Y%m%d_%H%M%S)_$$"
RUN_OUT="$RUN_DIR/bench/$RUN"
mkdir -p "$RUN_OUT"
case "$PM_READ_STORE" in
    sqlite) READ_STORE_URL="sqlite://$RUN_OUT/read-model.db?mode=rwc" list_posts=() ;;
    mongo) READ_STORE_URL="$TEST_MONGODB_URL" list_posts=(--list-posts "${PM_BENCH_MONGO_LIST_POSTS:-2000}") ;;
    *) die "PM_READ_STORE must be sqlite or mongo, not '$PM_READ_STORE'" ;;
esac
log "read store: $PM_READ_STORE ($READ_STORE_URL)" >&2

# free_port: a port nothing listens on (tried at random in the ephemeral range).
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 30000))
        if ! port_open "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    die "no free port found"
}

mysql_run() {
    local client=mariadb
    command -v mariadb >/dev/null || client=mysql
    "$client" --no-defaults --protocol=tcp -h127.0.0.1 -P"$PM_MYSQL_PORT" -upostmesh -ppostmesh -e "$1"
}

DB="pm_${RUN}"
RAW_DB="pm_${RUN}_raw"
DIRECT_DB="pm_${RUN}_direct"
PEER_DB="pm_${RUN}_peer"
for db in "$DB" "$RAW_DB" "$DIRECT_DB" "$PEER_DB"; do
    mysql_run "CREATE DATABASE \`$db\` CHARACTER SET utf8mb4"
done
MYSQL_BASE="mysql://postmesh:postmesh@127.0.0.1:$PM_MYSQL_PORT"
STREAM="bench.$RUN.events"
MONGO_DB="$RUN"
CHANNEL="bench.$RUN.applied"
COMMAND_PORT="$(free_port)"
QUERY_PORT="$(free_port)"
RELAY_PORT="$(free_port)"

pids=()
cleaned=0
cleanup() {
    local pid
    ((cleaned == 0)) || return 0
    cleaned=1
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    for db in "$DB" "$RAW_DB" "$DIRECT_DB" "$PEER_DB"; do
        mysql_run "DROP DATABASE IF EXISTS \`$db\`" 2>/dev/null || true
    done
    redis-cli -h 127.0.0.1 -p "$PM_REDIS_PORT" DEL "$STREAM" "$STREAM.dlq" "$STREAM.sqlite" "bench_scratch_$RUN.stream" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# start NAME PORT ENV...: the release binary with ENV, logs in $RUN_OUT.
start() {
    local name=$1 port=$2
    shift 2
    env "$@" LOG_FORMAT=json METRICS_ADDR="127.0.0.1:$(free_port)" \
        REDIS_URL="$TEST_REDIS_URL" READ_STORE_URL="$READ_STORE_URL" READ_STORE_DATABASE="$MONGO_DB" \
        "$BIN_DIR/$name" >"$RUN_OUT/$name.log" 2>&1 </dev/null &
    pids+=("$!")
    eval "${name//-/_}_pid=$!"
    local deadline=$((SECONDS + PM_READY_TIMEOUT))
    until grpc_serving "$port"; do
        kill -0 "$!" 2>/dev/null || { show_log_tail "$RUN_OUT/$name.log"; die "$name exited"; }
        ((SECONDS < deadline)) || { show_log_tail "$RUN_OUT/$name.log"; die "$name not SERVING"; }
        sleep 0.2
    done
    log "$name serving on 127.0.0.1:$port (pid $!)" >&2
}

grpc_serving() {
    if command -v grpcurl >/dev/null; then
        grpcurl -plaintext -max-time 2 "127.0.0.1:$1" grpc.health.v1.Health/Check 2>/dev/null | grep -q '"SERVING"'
    else
        port_open "$1"
    fi
}

start command-svc "$COMMAND_PORT" \
    COMMAND_LISTEN_ADDR="127.0.0.1:$COMMAND_PORT" COMMAND_DATABASE_URL="$MYSQL_BASE/$DB" STREAM_NAME="$STREAM"
start query-svc "$QUERY_PORT" \
    QUERY_LISTEN_ADDR="127.0.0.1:$QUERY_PORT" NOTIFY_CHANNEL="$CHANNEL"
SQLITE_PORT="$(free_port)"
# shellcheck disable=SC2154 # set by start via eval
mariadb_command_pid=$command_svc_pid
start command-svc "$SQLITE_PORT" \
    COMMAND_LISTEN_ADDR="127.0.0.1:$SQLITE_PORT" COMMAND_DATABASE_URL="sqlite://$RUN_OUT/events.db?mode=rwc" \
    STREAM_NAME="$STREAM.sqlite"
sqlite_command_pid=$command_svc_pid
command_svc_pid=$mariadb_command_pid
start event-relay "$RELAY_PORT" \
    RELAY_HEALTH_ADDR="127.0.0.1:$RELAY_PORT" STREAM_NAME="$STREAM" \
    NOTIFY_CHANNEL="$CHANNEL" CONSUMER_NAME=bench-relay \
    COMMAND_ENDPOINT="http://127.0.0.1:$COMMAND_PORT"

# FerretDB 1.24 (SQLite) never uses an index for a read: it indexes
# `_ferretdb_sjson->"_id"` but queries `_ferretdb_sjson->'$._id'`. Unless
# PM_BENCH_FERRET_ID_INDEX=0, the bench adds the index the queries can use to
# this run's collections (see docs/performance.md); only possible when the
# FerretDB is the one scripts/servers.sh runs, with its files in .run/ferretdb.
extra=()
if [[ $PM_READ_STORE == mongo && "${PM_BENCH_FERRET_ID_INDEX:-1}" != 0 && -f "$RUN_DIR/ferretdb/$MONGO_DB.sqlite" ]]; then
    command -v sqlite3 >/dev/null || die "sqlite3 is needed for the FerretDB index workaround (or PM_BENCH_FERRET_ID_INDEX=0)"
    extra+=(--ferretdb-sqlite-dir "$RUN_DIR/ferretdb")
fi

# The servers' pids, for the CPU time each phase reports (best effort).
listener_pid() { ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2; }
for server in "mariadbd:$PM_MYSQL_PORT" "redis-server:$PM_REDIS_PORT" "ferretdb:$PM_MONGO_PORT"; do
    pid="$(listener_pid "${server#*:}" || true)"
    [[ -z "$pid" ]] || extra+=(--server-pid "${server%%:*}=$pid")
done

extra+=(--server-pid "command-svc-sqlite=$sqlite_command_pid")

# The peer: cqrs-es 0.5 + mysql-es, in process, on the same MariaDB, while the
# mesh is idle. Its phase is as long as ours (--phase-secs, default 10).
PEER_DIR="${PM_PEER_CQRS_ES:-$ROOT/../shared/peers/cqrs-es}"
if [[ -f "$PEER_DIR/Cargo.toml" ]]; then
    phase_secs=10
    args=("$@")
    for i in "${!args[@]}"; do
        [[ "${args[$i]}" != --phase-secs ]] || phase_secs="${args[$((i + 1))]:-10}"
    done
    log "peer: building cqrs-es + mysql-es ($PEER_DIR)" >&2
    if cargo build --release --manifest-path "$PEER_DIR/Cargo.toml" --target-dir "$TARGET_DIR/peer-cqrs-es" >&2; then
        log "peer: running for ${phase_secs%.*} s at 16 in flight" >&2
        if "$TARGET_DIR/peer-cqrs-es/release/peer-cqrs-es" --mode events --concurrency 16 \
            --duration-secs "${phase_secs%.*}" --updates-per-post 4 \
            --database-url "$MYSQL_BASE/$PEER_DB" --reset >"$RUN_OUT/peer-cqrs-es.json" 2>"$RUN_OUT/peer-cqrs-es.log"; then
            extra+=(--peer-json "$RUN_OUT/peer-cqrs-es.json")
            log "peer: $(tail -n 1 "$RUN_OUT/peer-cqrs-es.json")" >&2
        else
            log "peer: run failed (see $RUN_OUT/peer-cqrs-es.log)" >&2
        fi
    else
        log "peer: build failed; no peer figure this run" >&2
    fi
fi

# shellcheck disable=SC2154 # set by start via eval
"$BIN_DIR/postmesh-bench" \
    --command "http://127.0.0.1:$COMMAND_PORT" \
    --query "http://127.0.0.1:$QUERY_PORT" \
    --redis-url "$TEST_REDIS_URL" \
    --stream "$STREAM" \
    --raw-database-url "$MYSQL_BASE/$RAW_DB" \
    --direct-database-url "$MYSQL_BASE/$DIRECT_DB" \
    --sqlite-command "http://127.0.0.1:$SQLITE_PORT" \
    --sqlite-raw-database-url "sqlite://$RUN_OUT/raw-batched.db?mode=rwc" \
    --mongodb-url "$TEST_MONGODB_URL" \
    --read-store-url "$READ_STORE_URL" \
    --scratch "bench_scratch_$RUN" \
    --read-model-database "$MONGO_DB" --drop-read-model \
    --command-pid "$command_svc_pid" \
    --query-pid "$query_svc_pid" \
    --relay-pid "$event_relay_pid" \
    "${extra[@]}" "${list_posts[@]}" "$@" | tee "$RUN_OUT/result.json"
# The HTTP/JSON line: GetPost through the gateway against gRPC GetPost, same run.
if command -v jq >/dev/null; then
    jq -r '.get_post_http | "GetPost over HTTP/JSON: \(.per_s)/s (p50 \(.p50_ms) ms) vs gRPC \(.vs_grpc.ceiling_per_s)/s: ratio \(.vs_grpc.ratio)"' \
        "$RUN_OUT/result.json" | while read -r line; do log "$line" >&2; done
fi
log "service logs and result in $RUN_OUT" >&2
