#!/usr/bin/env bash
# Local dev/test servers, bound to 127.0.0.1, state under .run/:
#   mariadb   port $PM_MYSQL_PORT (3306), datadir .run/mariadb, user postmesh/postmesh
#   redis     port $PM_REDIS_PORT (6379), no persistence
#   ferretdb  port $PM_MONGO_PORT (27017), SQLite backend in .run/ferretdb/
#   secantus  port $PM_SECANTUS_PORT (27019), SecantusDB (MongoDB-compatible,
#             WiredTiger) in .run/secantus/: the MongoDB store suite's second
#             server, whose answers take MongoDB's code paths (tests only)
#
# usage: scripts/servers.sh up [NAME...] | down [NAME...] | status
#   (no NAME: all four; scripts/up.sh starts only the ones the mesh uses)
#
# `up` leaves alone any server already answering on its port (a developer's
# own Redis on 6379 is fine) and waits, by polling, until each one answers.
# `down` stops only what this script started (the pidfiles in .run/).
set -euo pipefail

PM_SCRIPT=servers
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SERVERS=(mariadb redis ferretdb secantus)

MYSQL_DIR="$RUN_DIR/mariadb"
MYSQL_SOCK="$RUN_DIR/mysqld.sock"
MYSQL_CNF="$RUN_DIR/mariadb.cnf"
MYSQL_PID="$RUN_DIR/mariadb.pid"
MYSQL_LOG="$LOG_DIR/mariadb.log"

REDIS_DIR="$RUN_DIR/redis"
REDIS_PID="$RUN_DIR/redis.pid"
REDIS_LOG="$LOG_DIR/redis.log"

FERRET_DIR="$RUN_DIR/ferretdb"
FERRET_STATE="$RUN_DIR/ferretdb-state"
FERRET_PID="$RUN_DIR/ferretdb.pid"
FERRET_LOG="$LOG_DIR/ferretdb.log"

SECANTUS_DIR="$RUN_DIR/secantus"
SECANTUS_PID="$RUN_DIR/secantus.pid"
SECANTUS_LOG="$LOG_DIR/secantus.log"
SECANTUS_BIN="$PM_SECANTUS_VENV/bin/secantusd-py"

# MariaDB's client tools are called mariadb*/mysql* depending on the release.
mysql_client() { if command -v mariadb >/dev/null; then echo mariadb; else echo mysql; fi; }
mysql_admin() { if command -v mariadb-admin >/dev/null; then echo mariadb-admin; else echo mysqladmin; fi; }

# --------------------------------------------------------------- readiness checks
# `ping` succeeds as soon as the server answers, even with "access denied".
mysql_answers() {
    "$(mysql_admin)" --no-defaults --protocol=tcp -h127.0.0.1 -P"$PM_MYSQL_PORT" \
        --connect-timeout=2 ping >/dev/null 2>&1
}
redis_answers() {
    [[ "$(redis-cli -h 127.0.0.1 -p "$PM_REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}
ferret_answers() { port_open "$PM_MONGO_PORT"; }
secantus_answers() { port_open "$PM_SECANTUS_PORT"; }

# The account the tests use (TEST_MYSQL_URL) can log in over TCP.
mysql_test_login() {
    "$(mysql_client)" --no-defaults --protocol=tcp -h127.0.0.1 -P"$PM_MYSQL_PORT" \
        -upostmesh -ppostmesh --connect-timeout=2 -e 'SELECT 1' >/dev/null 2>&1
}

# ours_on_port NAME PIDFILE PATTERN PORT: succeeds when this script's NAME
# process is running; dies if it was started for another port (PM_*_PORT
# changed since), since waiting for it on the new port would never succeed.
ours_on_port() {
    local name=$1 pidfile=$2 pattern=$3 port=$4 started_port=""
    pid_running "$pidfile" "$pattern" >/dev/null || return 1
    [[ -f "$RUN_DIR/$name.port" ]] && read -r started_port <"$RUN_DIR/$name.port"
    if [[ -n "$started_port" && "$started_port" != "$port" ]]; then
        die "$name was started by this script on port $started_port, not $port; run '$0 down $name' first"
    fi
}

# --------------------------------------------------------------- mariadb
mariadb_up() {
    if ours_on_port mariadb "$MYSQL_PID" mariadbd "$PM_MYSQL_PORT" || ! mysql_answers; then
        mariadb_start
    else
        log "mariadb: something already answers on 127.0.0.1:$PM_MYSQL_PORT; leaving it alone"
        mysql_test_login || warn "mariadb on port $PM_MYSQL_PORT does not accept postmesh/postmesh;" \
            "tests need: CREATE USER 'postmesh'@'%' IDENTIFIED BY 'postmesh';" \
            "GRANT ALL PRIVILEGES ON *.* TO 'postmesh'@'%'; (or set PM_MYSQL_PORT to a free port)"
    fi
}

mariadb_start() {
    local server user_line=""
    server="$(command -v mariadbd || command -v mysqld || true)"
    [[ -n "$server" ]] || die "mariadbd not found; run scripts/install-deps.sh"
    # mariadbd refuses to run as root unless told to; any other user runs as itself.
    if [[ "$(id -u)" -eq 0 ]]; then user_line="user=root"; fi

    # Our own config file, so /etc/mysql (socket in /run/mysqld, etc.) plays no part.
    cat >"$MYSQL_CNF" <<EOF
[mysqld]
$user_line
datadir=$MYSQL_DIR
socket=$MYSQL_SOCK
pid-file=$MYSQL_PID
log-error=$MYSQL_LOG
port=$PM_MYSQL_PORT
bind-address=127.0.0.1
skip-name-resolve
character-set-server=utf8mb4
collation-server=utf8mb4_unicode_ci
# Tests run many connection pools side by side.
max_connections=1000
# A test server: trade durability on power loss for speed.
innodb_flush_log_at_trx_commit=2
innodb_buffer_pool_size=256M
EOF

    if ours_on_port mariadb "$MYSQL_PID" mariadbd "$PM_MYSQL_PORT"; then
        log "mariadb: already started by this script (pid in .run/mariadb.pid)"
    else
        if [[ ! -d "$MYSQL_DIR/mysql" ]]; then
            log "mariadb: initialising $MYSQL_DIR"
            rm -rf "$MYSQL_DIR"
            # root@localhost without password: a throw-away server on 127.0.0.1 only.
            if ! "$(command -v mariadb-install-db || command -v mysql_install_db)" \
                --defaults-file="$MYSQL_CNF" --auth-root-authentication-method=normal \
                --skip-test-db >>"$MYSQL_LOG" 2>&1; then
                show_log_tail "$MYSQL_LOG"
                die "mariadb-install-db failed; see $MYSQL_LOG"
            fi
        fi
        log "mariadb: starting on 127.0.0.1:$PM_MYSQL_PORT"
        spawn "$MYSQL_LOG" "$MYSQL_PID" "$server" --defaults-file="$MYSQL_CNF"
        printf '%s\n' "$PM_MYSQL_PORT" >"$RUN_DIR/mariadb.port"
    fi
    wait_ready mariadb "$MYSQL_LOG" "$MYSQL_PID" mysql_answers

    # Idempotent; runs on every start so a wiped grant table heals itself.
    # ALL ON *.* because each test creates its own database.
    "$(mysql_client)" --no-defaults --protocol=socket -S "$MYSQL_SOCK" -uroot <<'SQL'
CREATE USER IF NOT EXISTS 'postmesh'@'%' IDENTIFIED BY 'postmesh';
CREATE USER IF NOT EXISTS 'postmesh'@'localhost' IDENTIFIED BY 'postmesh';
GRANT ALL PRIVILEGES ON *.* TO 'postmesh'@'%';
GRANT ALL PRIVILEGES ON *.* TO 'postmesh'@'localhost';
SQL
    mysql_test_login || die "mariadb: postmesh/postmesh cannot log in; see $MYSQL_LOG"
}

# --------------------------------------------------------------- redis
redis_up() {
    if redis_answers; then
        if ! ours_on_port redis "$REDIS_PID" redis-server "$PM_REDIS_PORT"; then
            log "redis: something already answers on 127.0.0.1:$PM_REDIS_PORT; leaving it alone"
        fi
        return 0
    fi
    if ! ours_on_port redis "$REDIS_PID" redis-server "$PM_REDIS_PORT"; then
        command -v redis-server >/dev/null || die "redis-server not found; run scripts/install-deps.sh"
        mkdir -p "$REDIS_DIR"
        log "redis: starting on 127.0.0.1:$PM_REDIS_PORT"
        # Daemonized: redis detaches itself and writes the pidfile. No RDB/AOF.
        redis-server --bind 127.0.0.1 --port "$PM_REDIS_PORT" --daemonize yes \
            --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" --dir "$REDIS_DIR" \
            --save '' --appendonly no ||
            { show_log_tail "$REDIS_LOG"; die "redis-server failed to start; see $REDIS_LOG"; }
        printf '%s\n' "$PM_REDIS_PORT" >"$RUN_DIR/redis.port"
    fi
    # The daemon writes its pidfile a moment after forking: poll for both.
    wait_ready redis "$REDIS_LOG" "" redis_answers
}

# --------------------------------------------------------------- ferretdb
ferret_up() {
    if ferret_answers; then
        if ! ours_on_port ferretdb "$FERRET_PID" ferretdb "$PM_MONGO_PORT"; then
            log "ferretdb: something already answers on 127.0.0.1:$PM_MONGO_PORT; leaving it alone"
        fi
        return 0
    fi
    if ! ours_on_port ferretdb "$FERRET_PID" ferretdb "$PM_MONGO_PORT"; then
        command -v ferretdb >/dev/null || die "ferretdb not found in PATH ($PM_GO_BIN); run scripts/install-deps.sh"
        mkdir -p "$FERRET_DIR" "$FERRET_STATE"
        log "ferretdb: starting on 127.0.0.1:$PM_MONGO_PORT"
        spawn "$FERRET_LOG" "$FERRET_PID" ferretdb \
            --handler=sqlite --sqlite-url="file:$FERRET_DIR/" \
            --listen-addr="127.0.0.1:$PM_MONGO_PORT" \
            --debug-addr="127.0.0.1:$PM_FERRET_DEBUG_PORT" \
            --state-dir="$FERRET_STATE" --telemetry=disable
        printf '%s\n' "$PM_MONGO_PORT" >"$RUN_DIR/ferretdb.port"
    fi
    wait_ready ferretdb "$FERRET_LOG" "$FERRET_PID" ferret_answers
}

# --------------------------------------------------------------- secantus
secantus_up() {
    if secantus_answers; then
        if ! ours_on_port secantus "$SECANTUS_PID" secantusd-py "$PM_SECANTUS_PORT"; then
            log "secantus: something already answers on 127.0.0.1:$PM_SECANTUS_PORT; leaving it alone"
        fi
        return 0
    fi
    if ! ours_on_port secantus "$SECANTUS_PID" secantusd-py "$PM_SECANTUS_PORT"; then
        [[ -x "$SECANTUS_BIN" ]] || die "secantusd-py not found at $SECANTUS_BIN; run scripts/install-deps.sh --tests"
        mkdir -p "$SECANTUS_DIR"
        log "secantus: starting on 127.0.0.1:$PM_SECANTUS_PORT"
        spawn "$SECANTUS_LOG" "$SECANTUS_PID" "$SECANTUS_BIN" --standalone \
            --host 127.0.0.1 --port "$PM_SECANTUS_PORT" --storage-path "$SECANTUS_DIR" --log-level WARNING
        printf '%s\n' "$PM_SECANTUS_PORT" >"$RUN_DIR/secantus.port"
    fi
    wait_ready secantus "$SECANTUS_LOG" "$SECANTUS_PID" secantus_answers
}

# --------------------------------------------------------------- commands
cmd_up() {
    local name
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    (($# > 0)) || set -- "${SERVERS[@]}"
    for name in "$@"; do
        case "$name" in
            mariadb) mariadb_up ;;
            redis) redis_up ;;
            ferretdb) ferret_up ;;
            secantus) secantus_up ;;
            *) die "unknown server '$name' (expected: ${SERVERS[*]})" ;;
        esac
    done
    log "servers up: $*; the tests use:"
    printf 'TEST_MYSQL_URL=%s\nTEST_REDIS_URL=%s\nTEST_MONGODB_URL=%s\nTEST_SECANTUS_URL=%s\n' \
        "$TEST_MYSQL_URL" "$TEST_REDIS_URL" "$TEST_MONGODB_URL" "$TEST_SECANTUS_URL"
    printf '(or: . scripts/env.sh)\n'
}

cmd_down() {
    local name
    (($# > 0)) || set -- "${SERVERS[@]}"
    for name in "$@"; do
        case "$name" in
            mariadb) stop_pidfile mariadb "$MYSQL_PID" mariadbd 60 ;;
            redis) stop_pidfile redis "$REDIS_PID" redis-server 30 ;;
            ferretdb) stop_pidfile ferretdb "$FERRET_PID" ferretdb 30 ;;
            secantus) stop_pidfile secantus "$SECANTUS_PID" secantusd-py 30 ;;
            *) die "unknown server '$name' (expected: ${SERVERS[*]})" ;;
        esac
        rm -f "$RUN_DIR/$name.port"
    done
}

# status_line NAME PORT ANSWERS PIDFILE PATTERN
status_line() {
    local name=$1 port=$2 answers=$3 pidfile=$4 pattern=$5 state owner pid
    if "$answers"; then state=answering; else state="not answering"; fi
    if pid="$(pid_running "$pidfile" "$pattern")"; then
        owner="started by servers.sh, pid $pid"
        if [[ -f "$RUN_DIR/$name.port" ]] && [[ "$(<"$RUN_DIR/$name.port")" != "$port" ]]; then
            owner="$owner, on port $(<"$RUN_DIR/$name.port")"
        fi
    elif [[ "$state" == answering ]]; then
        owner="not started by servers.sh"
    else
        owner="-"
    fi
    printf '%-9s 127.0.0.1:%-6s %-14s %s\n' "$name" "$port" "$state" "$owner"
}

cmd_status() {
    status_line mariadb "$PM_MYSQL_PORT" mysql_answers "$MYSQL_PID" mariadbd
    status_line redis "$PM_REDIS_PORT" redis_answers "$REDIS_PID" redis-server
    status_line ferretdb "$PM_MONGO_PORT" ferret_answers "$FERRET_PID" ferretdb
    status_line secantus "$PM_SECANTUS_PORT" secantus_answers "$SECANTUS_PID" secantusd-py
}

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    down) shift; cmd_down "$@" ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 up [mariadb|redis|ferretdb|secantus ...] | down [mariadb|redis|ferretdb|secantus ...] | status" >&2
        exit 2
        ;;
esac
