#!/usr/bin/env bash
# The interop suite: what a user of another language sees of postmesh.
#
#   1. generated clients    scripts/gen-clients.sh --check: the code in clients/
#                           is what proto/ generates (installs the toolchains first)
#   2. buf                  scripts/buf-check.sh: lint, format, breaking vs the previous commit
#   3. mesh up              scripts/up.sh: the whole mesh on the default ports
#   4. grpcurl examples     every example of docs/grpcurl-examples.md (and of
#                           README.md's grpcurl section), run verbatim, output checked
#   5-7. clients            the same scenario from Python, Go and TypeScript
#                           (clients/README.md); each exits non-zero on any deviation
#
# Then the services it started are stopped again (servers stay up, as after
# scripts/test.sh); a mesh that was already running is restarted by up.sh and
# left running. Prints one line per step and a final "N passed, N failed";
# exits non-zero when a step failed.
#
# usage: scripts/interop.sh
# Needs the default ports 50051-50053 free (or held by an earlier up.sh).
# Everything it installs is pinned and comes from the package registries
# (see scripts/gen-clients.sh); later runs take well under a minute.
set -euo pipefail

PM_SCRIPT=interop
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

VENV=${INTEROP_VENV:-$RUN_DIR/venv-interop}
export INTEROP_VENV=$VENV
export COMMAND_ADDR=localhost:50051 QUERY_ADDR=localhost:50052

results=()
passed=0
failed=0

# step NAME CMD...: runs CMD, records the outcome and time; never stops the script.
step() {
    local name=$1 start rc=0
    shift
    printf '\n[interop] ===== %s =====\n' "$name"
    start=$SECONDS
    "$@" || rc=$?
    if ((rc == 0)); then
        results+=("$(printf 'ok      %-26s %4ss' "$name" $((SECONDS - start)))")
        passed=$((passed + 1))
    else
        results+=("$(printf 'FAILED  %-26s %4ss  (exit %s)' "$name" $((SECONDS - start)) "$rc")")
        failed=$((failed + 1))
    fi
    return "$rc"
}

# Whether a mesh was running before: if not, the one this script starts is stopped at the end.
mesh_was_up=""
for name in command-svc query-svc event-relay; do
    if pid_running "$RUN_DIR/$name.pid" "$name" >/dev/null; then mesh_was_up=1; fi
done

finish() {
    local rc=$?
    if [[ -z "$mesh_was_up" ]]; then
        "$ROOT/scripts/down.sh" --keep-servers >/dev/null 2>&1 || true
        if [[ -n "${run_id:-}" ]]; then rm -f "$RUN_DIR/$run_id".db*; fi
    fi
    printf '\n[interop] ===== summary =====\n'
    if ((${#results[@]} > 0)); then printf '  %s\n' "${results[@]}"; fi
    printf '%d passed, %d failed\n' "$passed" "$failed"
    if ((rc == 0 && failed > 0)); then rc=1; fi
    exit "$rc"
}
trap finish EXIT

build_go_client() { (cd clients/go && go build -o "$RUN_DIR/bin/postmesh-client-go" .); }
go_client() { build_go_client && "$RUN_DIR/bin/postmesh-client-go"; }
ts_client() {
    (cd clients/typescript && node_modules/.bin/tsc -p tsconfig.json) && node clients/typescript/dist/main.js
}

# Without the tools or the mesh nothing else can run: stop at the first failure there.
step "generated clients" scripts/gen-clients.sh --check || exit 1
step "buf lint/format/breaking" scripts/buf-check.sh || true
# A mesh started here gets an event store, stream, channel and read model of
# its own: servers shared with other checkouts or earlier runs may hold posts
# whose ids a fresh event store would hand out again.
if [[ -z "$mesh_was_up" ]]; then
    run_id="interop_$(date +%s)_$$"
    export COMMAND_DATABASE_URL="sqlite://$RUN_DIR/$run_id.db?mode=rwc"
    export MONGODB_DATABASE="$run_id" STREAM_NAME="$run_id.events" NOTIFY_CHANNEL="$run_id.applied"
fi
step "mesh up" scripts/up.sh || exit 1

# The examples keep ids with jq (Debian's package; most machines have it).
need_jq() {
    command -v jq >/dev/null && return 0
    local sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then sudo=(sudo); fi
    log "apt: installing jq"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends jq </dev/null ||
        { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends jq </dev/null; }
}
grpcurl_examples() { need_jq && python3 clients/grpcurl/check_examples.py; }

step "grpcurl examples" grpcurl_examples || true
step "python client" "$VENV/bin/python" clients/python/postmesh_client.py || true
step "go client" go_client || true
step "typescript client" ts_client || true
