# shellcheck shell=bash
# Helpers shared by the scripts in this directory; sourced, never run.
# Callers have already done `set -euo pipefail`.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$ROOT/.run"
LOG_DIR="$RUN_DIR/logs"
export ROOT RUN_DIR LOG_DIR

# shellcheck source=scripts/env.sh
. "$ROOT/scripts/env.sh"

# How long any server or service may take to become ready (seconds).
PM_READY_TIMEOUT="${PM_READY_TIMEOUT:-90}"

log() { printf '[%s] %s\n' "${PM_SCRIPT:-postmesh}" "$*"; }
warn() { printf '[%s] warning: %s\n' "${PM_SCRIPT:-postmesh}" "$*" >&2; }
die() {
    printf '[%s] error: %s\n' "${PM_SCRIPT:-postmesh}" "$*" >&2
    exit 1
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
# Uses bash's /dev/tcp so no netcat is needed; the subshell owns the socket.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid_running PIDFILE PATTERN: prints the pid and succeeds when the pidfile
# names a live, non-zombie process whose command line contains PATTERN
# (so a pid recycled by an unrelated process is never treated as ours).
pid_running() {
    local pidfile=$1 pattern=$2 pid state
    [[ -s "$pidfile" ]] || return 1
    read -r pid <"$pidfile" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null || true)"
    [[ "$state" != "Z" && -n "$state" ]] || return 1
    [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline")" == *"$pattern"* ]] || return 1
    printf '%s\n' "$pid"
}

# pid_alive PIDFILE: the process of PIDFILE exists and is not a zombie.
pid_alive() {
    local pid state
    [[ -s "$1" ]] || return 1
    read -r pid <"$1" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null || true)"
    [[ "$state" != "Z" && -n "$state" ]]
}

# stop_pidfile NAME PIDFILE PATTERN [TIMEOUT]: SIGTERM the process, wait for
# it to exit (polling), SIGKILL it after TIMEOUT seconds, remove the pidfile.
stop_pidfile() {
    local name=$1 pidfile=$2 pattern=$3 timeout=${4:-30} pid deadline
    if ! pid="$(pid_running "$pidfile" "$pattern")"; then
        rm -f "$pidfile"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + timeout))
    while pid_running "$pidfile" "$pattern" >/dev/null; do
        if ((SECONDS >= deadline)); then
            warn "$name (pid $pid) ignored SIGTERM for ${timeout}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$pidfile"
}

# spawn LOGFILE PIDFILE CMD...: start CMD in its own session (so a Ctrl-C or a
# closed terminal does not take it down), output appended to LOGFILE.
# setsid does not fork here (a background job is not a group leader), so $!
# is the server's own pid.
spawn() {
    local logfile=$1 pidfile=$2
    shift 2
    setsid "$@" >>"$logfile" 2>&1 </dev/null &
    printf '%s\n' "$!" >"$pidfile"
}

# wait_ready NAME LOGFILE PIDFILE CHECK...: poll CHECK until it
# succeeds; fail early if the process died, or after PM_READY_TIMEOUT seconds,
# pointing at the log. PIDFILE may be empty for a process we cannot track.
wait_ready() {
    local name=$1 logfile=$2 pidfile=$3 deadline
    shift 3
    deadline=$((SECONDS + PM_READY_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        # Alive, not "ours by name": just after spawn the child may not have
        # exec'd yet, and its command line is still this script's.
        if [[ -n "$pidfile" ]] && ! pid_alive "$pidfile"; then
            show_log_tail "$logfile"
            die "$name exited before it became ready; see $logfile"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail "$logfile"
            die "$name not ready after ${PM_READY_TIMEOUT}s; see $logfile"
        fi
        sleep 0.2
    done
}

show_log_tail() {
    [[ -f "$1" ]] || return 0
    printf -- '----- last lines of %s -----\n' "$1" >&2
    tail -n 20 "$1" >&2 || true
    printf -- '-----\n' >&2
}
